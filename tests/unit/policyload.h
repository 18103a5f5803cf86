/* SPDX-License-Identifier: Apache-2.0 */
/*
 * policy_parse run on a YAML string, for the policy and breaker tests:
 * load() returns the set or NULL with the errors, load_ok() fails the test
 * on any error. Include after cmocka.h and tollgate/yaml.h.
 */
#ifndef TOLLGATE_POLICYLOAD_H
#define TOLLGATE_POLICYLOAD_H

/* Run policy_parse on a YAML document whose root is the list. */
static struct policyset *
load(const char *yaml, struct cfgerrs *errs)
{
	struct cfgctx cx;
	struct ynode *root = NULL;
	struct policyset *ps = NULL;
	char dir[] = ".";

	memset(&cx, 0, sizeof(cx));
	cx.cx_file = "t.yaml";
	cx.cx_dir = dir;
	cx.cx_errs = errs;
	cx.cx_buf = yaml;
	cx.cx_len = strlen(yaml);
	if (cfg_parse_yaml(&cx, &root) == 0)
		policy_parse(&cx, "policies", root, &ps);
	ynode_free(root);
	if (ps == NULL)
		assert_true(errs->ce_n > 0);
	return (ps);
}

static struct policyset *
load_ok(const char *yaml)
{
	struct cfgerrs errs = {0};
	struct policyset *ps = load(yaml, &errs);
	size_t i;

	for (i = 0; i < errs.ce_n; i++)
		print_error("unexpected: %s\n", errs.ce_msgs[i]);
	assert_non_null(ps);
	cfgerrs_free(&errs);
	return (ps);
}

#endif
