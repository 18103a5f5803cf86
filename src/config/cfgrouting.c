/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The routing: section: parsed by the routing module (src/routing/), and
 * checked here against the rest of the file once everything is loaded,
 * each error at the line of the rule's key: an upstream a rule switches
 * to must exist and speak the same wire API as every upstream the rule
 * can take calls from; a model a rule rewrites to must have a price (or
 * no cap could hold its calls); and a policy whose allow or deny list
 * would refuse the rewritten model for every call the rule matches makes
 * the rule a way to refuse calls, which is a mistake said here, not at
 * the first call.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/config.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/routing.h"
#include "tollgate/util.h"

#include "cfg.h"

/* routing: the list, parsed by the routing module. */
void
cfgp_routing(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;

	(void)k;
	routing_free(cf->cf_routing);
	cf->cf_routing = NULL;
	routing_parse(cx, path, n, &cf->cf_routing);
}

/*
 * The wire API an upstream type speaks: OpenAI and OpenAI-compatible
 * servers take the same requests; Azure's path names a deployment, so it
 * is a world of its own.
 */
static int
wire_api(enum upstream_type t)
{
	switch (t) {
	case UPSTREAM_OPENAI:
	case UPSTREAM_OPENAI_COMPATIBLE:
		return (0);
	case UPSTREAM_ANTHROPIC:
		return (1);
	case UPSTREAM_GEMINI:
		return (2);
	case UPSTREAM_AZURE_OPENAI:
		break;
	}
	return (3);
}

/* A name Gemini takes in its URL path: what route.c routes. */
static int
path_model_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if (strchr(":/@+", *s) != NULL)
			return (0);
	return (1);
}

/* Can rule rr take calls bound for upstream uc? */
static int
rule_takes(const struct routing_rule *rr, const struct upstream_conf *uc)
{
	const char *m;

	if ((m = rr->rr_match[ROUTING_ATTR_UPSTREAM]) != NULL &&
	    !policy_glob(m, uc->uc_name))
		return (0);
	if ((m = rr->rr_match[ROUTING_ATTR_PROVIDER]) != NULL &&
	    !policy_glob(m, config_upstream_type_name(uc->uc_type)))
		return (0);
	/* Rules that change the model or the upstream, or fail over to
	 * others, skip Azure calls. */
	return (uc->uc_type != UPSTREAM_AZURE_OPENAI ||
	    (rr->rr_model == NULL && rr->rr_upstream == NULL &&
		rr->rr_nfallback == 0));
}

/* A pattern that matches one value only: no '*' or '?'. */
static int
literal(const char *g)
{
	return (g != NULL && strpbrk(g, "*?") == NULL);
}

/*
 * Does policy po cover every call rr matches, once rr has rewritten it
 * (model, and provider when provider is known)? Only when that can be
 * decided from the patterns: each attribute po names must be one rr pins
 * to a single value po's pattern takes.
 */
static int
policy_covers(const struct policy *po, const struct routing_rule *rr,
    const char *provider)
{
	int a;

	for (a = 0; a < TAG_MAX; a++) {
		if (po->po_match[a] == NULL)
			continue;
		if (!literal(rr->rr_match[a]) ||
		    !policy_glob(po->po_match[a], rr->rr_match[a]))
			return (0);
	}
	if (po->po_match[POLICY_ATTR_MODEL] != NULL &&
	    !policy_glob(po->po_match[POLICY_ATTR_MODEL], rr->rr_model))
		return (0);
	if (po->po_match[POLICY_ATTR_PROVIDER] != NULL &&
	    (provider == NULL ||
		!policy_glob(po->po_match[POLICY_ATTR_PROVIDER], provider)))
		return (0);
	return (1);
}

/* Would po's models lists refuse model? */
static int
policy_refuses(const struct policy *po, const char *model)
{
	size_t i;

	for (i = 0; i < po->po_ndeny; i++)
		if (policy_glob(po->po_deny[i], model))
			return (1);
	for (i = 0; i < po->po_nallow; i++)
		if (policy_glob(po->po_allow[i], model))
			return (0);
	return (po->po_nallow != 0);
}

/*
 * The endpoints a metered call can have, by the names route.c gives them
 * (route_endpoint_name; the unit test test_routing checks the two agree):
 * what match.endpoint is matched against.
 */
static const char *const routable_endpoints[] = {"chat.completions",
    "completions", "embeddings", "responses", "messages", "generateContent",
    "streamGenerateContent", "embedContent"};

/* Is name an endpoint a rule's match.endpoint can meet? */
int
config_routing_endpoint_known(const char *name)
{
	size_t i;

	for (i = 0; i < nitems(routable_endpoints); i++)
		if (strcmp(routable_endpoints[i], name) == 0)
			return (1);
	return (0);
}

/*
 * A match pattern that takes none of the values its key can have never
 * lets its rule apply: 'chat' for 'chat.completions', a misspelled
 * upstream. Said at its line, with the values it could take.
 */
static void
check_match(struct cfgctx *cx, const struct ynode *item, const char *where,
    const struct routing_rule *rr, const struct config *cf)
{
	static const enum upstream_type types[] = {UPSTREAM_OPENAI,
	    UPSTREAM_ANTHROPIC, UPSTREAM_GEMINI, UPSTREAM_AZURE_OPENAI,
	    UPSTREAM_OPENAI_COMPATIBLE};
	const struct ynode *m = cfg_value(item, "match"), *at;
	const char *g;
	char known[512];
	size_t i, len = 0;
	int hit = 0;

	known[0] = '\0';
	if ((g = rr->rr_match[ROUTING_ATTR_ENDPOINT]) != NULL) {
		for (i = 0; i < nitems(routable_endpoints); i++) {
			hit |= policy_glob(g, routable_endpoints[i]);
			len += (size_t)snprintf(known + len,
			    sizeof(known) - len, "%s%s", i > 0 ? ", " : "",
			    routable_endpoints[i]);
		}
		at = m != NULL ? cfg_value(m, "endpoint") : item;
		if (!hit)
			cfg_error(cx, at,
			    "%s.match.endpoint: '%s' matches no endpoint a "
			    "metered call has (%s)",
			    where, g, known);
	}
	if ((g = rr->rr_match[ROUTING_ATTR_PROVIDER]) != NULL) {
		hit = 0;
		for (i = 0, len = 0; i < nitems(types); i++) {
			hit |=
			    policy_glob(g, config_upstream_type_name(types[i]));
			len += (size_t)snprintf(known + len,
			    sizeof(known) - len, "%s%s", i > 0 ? ", " : "",
			    config_upstream_type_name(types[i]));
		}
		at = m != NULL ? cfg_value(m, "provider") : item;
		if (!hit)
			cfg_error(cx, at,
			    "%s.match.provider: '%s' matches no upstream type "
			    "(%s)",
			    where, g, known);
	}
	if ((g = rr->rr_match[ROUTING_ATTR_UPSTREAM]) != NULL) {
		hit = 0;
		for (i = 0; i < cf->cf_nupstreams; i++)
			hit |= policy_glob(g, cf->cf_upstreams[i].uc_name);
		at = m != NULL ? cfg_value(m, "upstream") : item;
		if (!hit)
			cfg_error(cx, at,
			    "%s.match.upstream: '%s' matches no configured "
			    "upstream",
			    where, g);
	}
}

/*
 * A model name belongs to one API: a rule that rewrites the model must
 * take calls of one wire API only, or it sends a model of one provider
 * to another (gpt-4o-mini to Anthropic). 0, or -1 after saying so.
 */
static int
check_model_api(struct cfgctx *cx, const struct ynode *item, const char *where,
    const struct routing_rule *rr, const struct config *cf)
{
	const struct upstream_conf *first = NULL, *uc;
	size_t u;

	for (u = 0; u < cf->cf_nupstreams; u++) {
		uc = &cf->cf_upstreams[u];
		if (uc->uc_type == UPSTREAM_AZURE_OPENAI || !rule_takes(rr, uc))
			continue;
		if (first == NULL) {
			first = uc;
			continue;
		}
		if (wire_api(uc->uc_type) == wire_api(first->uc_type))
			continue;
		cfg_error(cx, cfg_value(item, "model"),
		    "%s.model: the rule can take calls for upstream '%s' (%s) "
		    "and for '%s' (%s), and a model name belongs to one API; "
		    "narrow match.provider or match.upstream",
		    where, first->uc_name,
		    config_upstream_type_name(first->uc_type), uc->uc_name,
		    config_upstream_type_name(uc->uc_type));
		return (-1);
	}
	return (0);
}

/*
 * The rule's fallback: list: each name an upstream that exists, is not
 * the one the rule sends calls to, and is of the type of every upstream
 * the rule's calls can be sent to (to, when the rule switches them; else
 * each upstream it takes). The same type, not only the same wire API:
 * policies, kills and rate limits match the call's provider at
 * admission, and the output bound is written with that type's field
 * name, so a call must keep its provider whichever attempt serves it.
 * Azure is refused as a target: its path names a deployment, and a call
 * is never translated into it.
 */
static void
check_fallback(struct cfgctx *cx, const struct ynode *item, const char *where,
    const struct routing_rule *rr, const struct config *cf,
    const struct upstream_conf *to)
{
	const struct ynode *list = cfg_value(item, "fallback"), *at;
	const struct upstream_conf *fb, *uc;
	const char *self = NULL;
	size_t i, u;

	if (list == NULL || list->yn_type != YN_SEQ)
		return;
	if (to != NULL)
		self = to->uc_name;
	else if (literal(rr->rr_match[ROUTING_ATTR_UPSTREAM]))
		self = rr->rr_match[ROUTING_ATTR_UPSTREAM];
	for (i = 0; i < rr->rr_nfallback && i < list->yn_nkids; i++) {
		at = list->yn_kids[i];
		fb = config_find_upstream(
		    cf, rr->rr_fallback[i], strlen(rr->rr_fallback[i]));
		if (fb == NULL) {
			cfg_error(cx, at,
			    "%s.fallback[%zu]: no upstream named '%s' is "
			    "configured",
			    where, i, rr->rr_fallback[i]);
			continue;
		}
		if (self != NULL && strcmp(self, fb->uc_name) == 0) {
			cfg_error(cx, at,
			    "%s.fallback[%zu]: '%s' is the upstream the rule's "
			    "calls go to first: a call cannot fail over to "
			    "itself (retry: tries it again)",
			    where, i, fb->uc_name);
			continue;
		}
		if (fb->uc_type == UPSTREAM_AZURE_OPENAI) {
			cfg_error(cx, at,
			    "%s.fallback[%zu]: '%s' is an azure_openai "
			    "upstream, whose path names a deployment and an "
			    "api-version; calls are not translated to it, so "
			    "it cannot be a fallback",
			    where, i, fb->uc_name);
			continue;
		}
		for (u = 0; u < cf->cf_nupstreams; u++) {
			uc = to != NULL ? to : &cf->cf_upstreams[u];
			if ((to != NULL || rule_takes(rr, uc)) &&
			    wire_api(uc->uc_type) != wire_api(fb->uc_type)) {
				cfg_error(cx, at,
				    "%s.fallback[%zu]: the rule's calls can go "
				    "to upstream '%s' (%s), and '%s' (%s) does "
				    "not speak the same API; calls are never "
				    "translated between APIs",
				    where, i, uc->uc_name,
				    config_upstream_type_name(uc->uc_type),
				    fb->uc_name,
				    config_upstream_type_name(fb->uc_type));
				break;
			}
			if ((to != NULL || rule_takes(rr, uc)) &&
			    uc->uc_type != fb->uc_type) {
				cfg_error(cx, at,
				    "%s.fallback[%zu]: the rule's calls can go "
				    "to upstream '%s' (type %s), and '%s' is "
				    "of "
				    "type %s; a fallback must be of the same "
				    "type, so that a call's provider, which "
				    "policies, kills and rate limits match, "
				    "never changes when it fails over",
				    where, i, uc->uc_name,
				    config_upstream_type_name(uc->uc_type),
				    fb->uc_name,
				    config_upstream_type_name(fb->uc_type));
				break;
			}
			if (to != NULL)
				break;
		}
	}
}

/* The checks of one rule, rr, whose mapping is item. */
static void
check_rule(struct cfgctx *cx, const struct ynode *item, size_t i,
    const struct routing_rule *rr, const struct config *cf)
{
	const struct upstream_conf *to = NULL, *uc;
	const struct ynode *at;
	const struct policy *po;
	const char *provider = NULL;
	char where[CFG_PATH_MAX];
	size_t u, p;

	snprintf(where, sizeof(where), "routing[%zu] (%s)", i, rr->rr_name);
	check_match(cx, item, where, rr, cf);
	if (rr->rr_upstream != NULL)
		to = config_find_upstream(
		    cf, rr->rr_upstream, strlen(rr->rr_upstream));
	check_fallback(cx, item, where, rr, cf,
	    to != NULL && to->uc_type != UPSTREAM_AZURE_OPENAI ? to : NULL);
	if (rr->rr_upstream != NULL) {
		at = cfg_value(item, "upstream");
		if (to == NULL) {
			cfg_error(cx, at,
			    "%s.upstream: no upstream named '%s' is "
			    "configured",
			    where, rr->rr_upstream);
			return;
		}
		if (to->uc_type == UPSTREAM_AZURE_OPENAI) {
			cfg_error(cx, at,
			    "%s.upstream: '%s' is an azure_openai upstream, "
			    "whose path names a deployment: calls cannot be "
			    "switched to it",
			    where, to->uc_name);
			return;
		}
		provider = config_upstream_type_name(to->uc_type);
		for (u = 0; u < cf->cf_nupstreams; u++) {
			uc = &cf->cf_upstreams[u];
			if (!rule_takes(rr, uc) ||
			    wire_api(uc->uc_type) == wire_api(to->uc_type))
				continue;
			cfg_error(cx, at,
			    "%s.upstream: the rule can take calls for upstream "
			    "'%s' (%s) and send them to '%s' (%s), which does "
			    "not speak the same API; narrow match.upstream",
			    where, uc->uc_name,
			    config_upstream_type_name(uc->uc_type), to->uc_name,
			    provider);
			break;
		}
	} else if (literal(rr->rr_match[ROUTING_ATTR_PROVIDER]))
		provider = rr->rr_match[ROUTING_ATTR_PROVIDER];
	else if (literal(rr->rr_match[ROUTING_ATTR_UPSTREAM]) &&
	    (uc = config_find_upstream(cf, rr->rr_match[ROUTING_ATTR_UPSTREAM],
		 strlen(rr->rr_match[ROUTING_ATTR_UPSTREAM]))) != NULL)
		provider = config_upstream_type_name(uc->uc_type);
	if (rr->rr_model == NULL)
		return;
	if (to == NULL && check_model_api(cx, item, where, rr, cf) != 0)
		return;

	at = cfg_value(item, "model");
	if (cf->cf_prices != NULL &&
	    pricing_lookup(cf->cf_prices, rr->rr_model) == NULL)
		cfg_error(cx, at,
		    "%s.model: '%s' has no price in the price table, so the "
		    "calls routed to it could not be priced or held to a cap",
		    where, rr->rr_model);
	if (!path_model_ok(rr->rr_model)) {
		for (u = 0; u < cf->cf_nupstreams; u++) {
			uc = to != NULL ? to : &cf->cf_upstreams[u];
			if (uc->uc_type == UPSTREAM_GEMINI &&
			    (to != NULL || rule_takes(rr, uc))) {
				cfg_error(cx, at,
				    "%s.model: '%s' cannot go in a Gemini "
				    "path (upstream '%s'): no ':', '/', '@' "
				    "or '+'",
				    where, rr->rr_model, uc->uc_name);
				break;
			}
			if (to != NULL)
				break;
		}
	}
	for (p = 0; cf->cf_policies != NULL && p < cf->cf_policies->ps_n; p++) {
		po = &cf->cf_policies->ps_pol[p];
		if (po->po_shadow || !policy_covers(po, rr, provider) ||
		    !policy_refuses(po, rr->rr_model))
			continue;
		cfg_error(cx, at,
		    "%s.model: policy '%s' (line %zu) does not allow '%s' "
		    "for the calls this rule matches: every call it routes "
		    "would be refused",
		    where, po->po_name, po->po_line, rr->rr_model);
	}
}

/*
 * Another section's match: (the cache's, parsed as a rule's match into
 * rr): a provider, upstream or endpoint pattern that takes no value is
 * said at its line, as for a rule.
 */
void
config_check_match(struct cfgctx *cx, const struct ynode *item,
    const char *where, const struct routing_rule *rr, const struct config *cf)
{
	check_match(cx, item, where, rr, cf);
}

/* The rules against the upstreams, the prices and the policies. */
void
config_check_routing(
    struct cfgctx *cx, const struct ynode *root, struct config *cf)
{
	const struct ynode *list, *rt = NULL;
	size_t i;

	/* Bounded so that a wait never holds a client for minutes, and
	 * the doubling of the backoff cannot overflow. */
	if (root != NULL)
		rt = cfg_value(root, "retry");
	if (rt != NULL && cf->cf_retry_backoff_ms > RETRY_BACKOFF_MAX_MS)
		cfg_error(cx,
		    cfg_value(rt, "backoff") != NULL ? cfg_value(rt, "backoff")
						     : rt,
		    "retry.backoff: %ld ms is more than the most allowed, "
		    "60s",
		    cf->cf_retry_backoff_ms);
	else if (rt != NULL &&
	    cf->cf_retry_max_backoff_ms > RETRY_BACKOFF_MAX_MS)
		cfg_error(cx,
		    cfg_value(rt, "max_backoff") != NULL
			? cfg_value(rt, "max_backoff")
			: rt,
		    "retry.max_backoff: %ld ms is more than the most "
		    "allowed, 60s",
		    cf->cf_retry_max_backoff_ms);
	else if (rt != NULL &&
	    cf->cf_retry_max_backoff_ms < cf->cf_retry_backoff_ms)
		cfg_error(cx,
		    cfg_value(rt, "max_backoff") != NULL
			? cfg_value(rt, "max_backoff")
			: rt,
		    "retry.max_backoff: %ld ms is shorter than retry.backoff "
		    "(%ld ms)",
		    cf->cf_retry_max_backoff_ms, cf->cf_retry_backoff_ms);
	if (cf->cf_routing == NULL || root == NULL ||
	    (list = cfg_value(root, "routing")) == NULL ||
	    list->yn_type != YN_SEQ)
		return;
	/* Rules are made only from mappings: the i-th rule is not always
	 * the i-th item when the file is wrong. */
	for (i = 0; i < cf->cf_routing->rs_n && i < list->yn_nkids; i++)
		if (cf->cf_routing->rs_rules[i].rr_name != NULL &&
		    list->yn_kids[i]->yn_type == YN_MAP &&
		    list->yn_kids[i]->yn_line ==
			cf->cf_routing->rs_rules[i].rr_line)
			check_rule(cx, list->yn_kids[i], i,
			    &cf->cf_routing->rs_rules[i], cf);
}

/* What the routing: section holds. */
void
config_free_routing(struct config *cf)
{
	routing_free(cf->cf_routing);
	cf->cf_routing = NULL;
}
