/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which rule, if any, applies to a call: the rules in file order, the
 * first whose patterns all match the call's attributes (and, for a rule
 * with when_budget_below_percent, whose budget condition holds) wins and
 * the others are not looked at, as a firewall reads its rules. Patterns
 * are the policies' globs ('*' any run, '?' one byte). An attribute the
 * call does not have matches only a rule that does not name it.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tollgate/policy.h"
#include "tollgate/routing.h"
#include "tollgate/util.h"

static const char *const attr_names[ROUTING_ATTR_MAX] = {"intent", "team",
    "tenant", "agent_class", "environment", "model", "provider", "upstream",
    "endpoint"};

/* The YAML name of attribute a: "agent_class", "model", "upstream", ... */
const char *
routing_attr_name(int a)
{
	if (a < 0 || a >= ROUTING_ATTR_MAX)
		return ("?");
	return (attr_names[a]);
}

/* Do the attributes attr match every pattern of rr? */
int
routing_rule_matches(const struct routing_rule *rr, const char *const *attr)
{
	const char *v;
	int a;

	for (a = 0; a < ROUTING_ATTR_MAX; a++) {
		if (rr->rr_match[a] == NULL)
			continue;
		v = attr[a];
		if (v == NULL || *v == '\0' || !policy_glob(rr->rr_match[a], v))
			return (0);
	}
	return (1);
}

/*
 * The rule of rs that applies to a call with attributes attr, or NULL.
 * With ROUTING_FIXED in flags (an Azure call, whose path names its
 * deployment), rules that rewrite the model, switch the upstream or fail
 * over to others do not match; with ROUTING_NO_OUTPUT (embeddings), rules that rewrite the
 * model or the output bound do not. headroom (with arg) is asked, once at most, for the rules that depend
 * on a budget: such a rule applies only when a hard cap covers the call
 * and its tightest budget has less than the rule's percent of its cap
 * left.
 */
const struct routing_rule *
routing_select(const struct routingset *rs, const char *const *attr, int flags,
    routing_headroom_fn headroom, void *arg)
{
	const struct routing_rule *rr;
	int64_t left = -2; /* not asked yet */
	size_t i;

	if (rs == NULL)
		return (NULL);
	for (i = 0; i < rs->rs_n; i++) {
		rr = &rs->rs_rules[i];
		if ((flags & ROUTING_FIXED) &&
		    (rr->rr_model != NULL || rr->rr_upstream != NULL ||
			rr->rr_nfallback > 0))
			continue;
		if ((flags & ROUTING_NO_OUTPUT) &&
		    (rr->rr_model != NULL || rr->rr_max_tokens != -1))
			continue;
		if (!routing_rule_matches(rr, attr))
			continue;
		if (rr->rr_below_pct >= 0) {
			if (left == -2)
				left = headroom != NULL ? headroom(arg) : -1;
			if (left < 0 ||
			    left >= (int64_t)rr->rr_below_pct * 10000)
				continue;
		}
		return (rr);
	}
	return (NULL);
}
