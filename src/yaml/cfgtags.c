/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cfgkey parsers for attribution tags, shared by the config's tag
 * defaults, required and header-settable tags, key bindings and the
 * policies' group_by: a tag name must be one of tags.c's, a tag value
 * must pass tag_value_ok, and anything else is reported at its
 * file:line:col like every other key.
 */
#include <stddef.h>
#include <stdlib.h>

#include "tollgate/tags.h"
#include "tollgate/util.h"
#include "tollgate/yaml.h"

static int
tag_of(struct cfgctx *cx, const char *path, const struct ynode *n)
{
	char buf[80];
	int t;

	if (n->yn_type != YN_SCALAR) {
		cfg_error(cx, n, "%s: expected a tag name", path);
		return (-1);
	}
	if ((t = tag_lookup(n->yn_str)) == -1)
		cfg_error(cx, n,
		    "%s: unknown tag '%s' (expected intent, team, "
		    "tenant, agent_class or environment)",
		    path, cfg_esc(buf, sizeof(buf), n->yn_str, n->yn_len));
	return (t);
}

/* One tag under a mapping of tag: value, into its slot of char *[TAG_MAX]. */
static void
tag_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	char **tags = arg;
	const struct ynode *val = en->en_val;
	int t;

	if ((t = tag_of(cx, en->en_path, en->en_key)) == -1)
		return;
	if (val->yn_type != YN_SCALAR || ynode_is_null(val) ||
	    !tag_value_ok(val->yn_str, val->yn_len)) {
		cfg_error(cx, val,
		    "%s.%s: expected a value of 1 to %d printable characters "
		    "without spaces, '*' or '?'",
		    en->en_path, tag_name(t), TAG_VALUE_MAX);
		return;
	}
	free(tags[t]);
	tags[t] = xstrdup(val->yn_str);
}

/* A mapping of tag name -> value, into char *[TAG_MAX]. */
void
cfgp_tag_map(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	(void)k;
	cfg_map_each(cx, path, n, "tag: value", tag_cb, dst);
}

/* A sequence of tag names, into int[TAG_MAX] flags. */
void
cfgp_tag_list(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	int *flags = dst;
	size_t i;
	int t;

	(void)k;
	if (ynode_is_null(n))
		return;
	if (n->yn_type != YN_SEQ) {
		cfg_error(cx, n, "%s: expected a list of tag names", path);
		return;
	}
	for (t = 0; t < TAG_MAX; t++)
		flags[t] = 0;
	for (i = 0; i < n->yn_nkids; i++) {
		if ((t = tag_of(cx, path, n->yn_kids[i])) != -1)
			flags[t] = 1;
	}
}
