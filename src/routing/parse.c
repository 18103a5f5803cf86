/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The routing: list of the config, parsed with the YAML walker's key
 * tables (include/tollgate/yaml.h) so every mistake is reported as
 * file:line:col and none stops the walk. Each item is read into a raw
 * struct, checked as a whole (a rule must do something; names are
 * unique) and moved into its struct routing_rule. What needs the rest of
 * the config (the upstream a rule switches to, the price of the model it
 * rewrites to, the policies that would refuse it) is checked by config/
 * once everything is loaded (config_check_routing).
 */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/routing.h"
#include "tollgate/util.h"
#include "tollgate/yaml.h"

/* One item of the list as the key table fills it. */
struct rraw {
	char *r_name;
	char *r_match[ROUTING_ATTR_MAX];
	char *r_model;
	char *r_upstream;
	int r_max_tokens; /* 0: not given */
	int r_below_pct; /* 0: not given */
	char **r_fallback;
	size_t r_nfallback;
};

static void r_name(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void r_match(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void r_model(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void r_upstream(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void r_fallback(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);

#define OFF(f) offsetof(struct rraw, f)

static const struct cfgkey rule_keys[] = {
    KEY_CALL("name", r_name, OFF(r_name), CFGKEY_REQUIRED),
    KEY_CALL("match", r_match, OFF(r_match), 0),
    KEY_CALL("model", r_model, OFF(r_model), 0),
    KEY_CALL("upstream", r_upstream, OFF(r_upstream), 0),
    KEY_CALL("fallback", r_fallback, 0, 0),
    KEY_INT("max_tokens", OFF(r_max_tokens), 1, INT_MAX),
    KEY_INT("when_budget_below_percent", OFF(r_below_pct), 1, 100),
    KEY_END,
};

/* A name: 1 to max letters, digits, '.', '_' or '-'. */
static int
name_ok(const char *s, size_t max)
{
	const char *p;

	for (p = s; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || strchr("._-", *p)))
			return (0);
	}
	return (p != s && (size_t)(p - s) <= max);
}

/*
 * Can s be sent as a model name? It goes into a JSON string as it is and,
 * for Gemini, into the URL path, so it is held to the bytes model names
 * use: a letter or digit, then letters, digits and "._-:/@+", at most
 * ROUTING_MODEL_MAX. 1 if it can.
 */
int
routing_model_ok(const char *s)
{
	const char *p;

	if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		(*s >= '0' && *s <= '9')))
		return (0);
	for (p = s; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || strchr("._-:/@+", *p)))
			return (0);
	}
	return ((size_t)(p - s) <= ROUTING_MODEL_MAX);
}

static void
r_name(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a rule name")) == NULL)
		return;
	if (!name_ok(s, ROUTING_NAME_MAX) || strlen(s) != n->yn_len) {
		cfg_error(cx, n,
		    "%s: expected 1 to %d letters, digits, '.', '_' or '-'",
		    path, ROUTING_NAME_MAX);
		return;
	}
	*(char **)dst = xstrdup(s);
}

static void
match_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	char **match = arg;
	const char *s;
	int a;

	for (a = 0; a < ROUTING_ATTR_MAX; a++)
		if (strcmp(en->en_key->yn_str, routing_attr_name(a)) == 0)
			break;
	if (a == ROUTING_ATTR_MAX) {
		cfg_error(cx, en->en_key,
		    "%s: unknown attribute '%s' (expected intent, team, "
		    "tenant, agent_class, environment, model, provider, "
		    "upstream or endpoint)",
		    en->en_path, en->en_name);
		return;
	}
	if ((s = cfg_string(cx, en->en_where, en->en_val, "a glob pattern")) ==
	    NULL)
		return;
	if (en->en_val->yn_len == 0 || en->en_val->yn_len > ROUTING_GLOB_MAX ||
	    strlen(s) != en->en_val->yn_len) {
		cfg_error(cx, en->en_val,
		    "%s: expected a pattern of 1 to %d bytes", en->en_where,
		    ROUTING_GLOB_MAX);
		return;
	}
	if (strcmp(s, "*") == 0)
		return; /* matches anything: as if not given */
	match[a] = xstrdup(s);
}

static void
r_match(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	(void)k;
	cfg_map_each(cx, path, n, "attribute: pattern", match_cb, dst);
}

/*
 * A match: map alone, for another section that picks calls the way a
 * rule does (the cache's), into rr's patterns; errors go to cx.
 */
void
routing_parse_match(struct cfgctx *cx, const char *path, const struct ynode *n,
    struct routing_rule *rr)
{
	r_match(cx, NULL, path, n, rr->rr_match);
}

static void
r_model(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a model name")) == NULL)
		return;
	if (strlen(s) != n->yn_len || !routing_model_ok(s)) {
		cfg_error(cx, n,
		    "%s: expected a model name: a letter or digit, then "
		    "letters, digits and '._-:/@+' (at most %d)",
		    path, ROUTING_MODEL_MAX);
		return;
	}
	*(char **)dst = xstrdup(s);
}

static void
r_upstream(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an upstream name")) == NULL)
		return;
	if (strlen(s) != n->yn_len || !name_ok(s, 64)) {
		cfg_error(cx, n, "%s: expected the name of an upstream", path);
		return;
	}
	*(char **)dst = xstrdup(s);
}

/*
 * fallback: the upstreams a call the rule matches fails over to, in
 * order, when the one it is sent to fails before any of its answer is
 * relayed. Names only here; config/ checks them against the upstreams.
 */
static void
r_fallback(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct rraw *r = dst;
	const struct ynode *it;
	char where[CFG_PATH_MAX];
	size_t i, j;

	(void)k;
	if (n->yn_type != YN_SEQ || n->yn_nkids == 0 ||
	    n->yn_nkids > ROUTING_FALLBACK_MAX) {
		cfg_error(cx, n,
		    "%s: expected a list of 1 to %d upstream names", path,
		    ROUTING_FALLBACK_MAX);
		return;
	}
	r->r_fallback = xcalloc(n->yn_nkids, sizeof(*r->r_fallback));
	for (i = 0; i < n->yn_nkids; i++) {
		it = n->yn_kids[i];
		snprintf(where, sizeof(where), "%s[%zu]", path, i);
		if (it->yn_type != YN_SCALAR || ynode_is_null(it) ||
		    strlen(it->yn_str) != it->yn_len ||
		    !name_ok(it->yn_str, 64)) {
			cfg_error(cx, it,
			    "%s: expected the name of an upstream", where);
			continue;
		}
		for (j = 0; j < r->r_nfallback; j++)
			if (strcmp(r->r_fallback[j], it->yn_str) == 0)
				break;
		if (j < r->r_nfallback) {
			cfg_error(cx, it, "%s: '%s' is listed twice", where,
			    it->yn_str);
			continue;
		}
		r->r_fallback[r->r_nfallback++] = xstrdup(it->yn_str);
	}
}

static void
rule_clear(struct routing_rule *rr)
{
	size_t i;
	int a;

	for (i = 0; i < rr->rr_nfallback; i++)
		free(rr->rr_fallback[i]);
	free(rr->rr_fallback);
	free(rr->rr_name);
	for (a = 0; a < ROUTING_ATTR_MAX; a++)
		free(rr->rr_match[a]);
	free(rr->rr_model);
	free(rr->rr_upstream);
}

/*
 * Parse the list n (the value of the routing: key at path) into *out.
 * Every error goes to cx as file:line:col. Returns 0 with a set (empty for
 * a null or absent node), or -1 when anything was wrong, with *out the
 * rules that could be read (so that the checks against the rest of the
 * file report their errors too), or NULL when the list itself is bad.
 */
int
routing_parse(struct cfgctx *cx, const char *path, const struct ynode *n,
    struct routingset **out)
{
	struct routingset *rs;
	struct routing_rule *rr;
	struct rraw r;
	const struct ynode *item;
	char where[CFG_PATH_MAX];
	size_t i, j, nerr = cx->cx_nerr;
	int a;

	*out = NULL;
	rs = xcalloc(1, sizeof(*rs));
	if (n != NULL && ynode_is_null(n))
		n = NULL; /* "routing:" with nothing under it */
	if (n != NULL && n->yn_type != YN_SEQ) {
		cfg_error(cx, n, "%s: expected a list of rules", path);
		goto fail;
	}
	if (n != NULL && n->yn_nkids > 0)
		rs->rs_rules = xcalloc(n->yn_nkids, sizeof(*rs->rs_rules));
	for (i = 0; n != NULL && i < n->yn_nkids; i++) {
		item = n->yn_kids[i];
		snprintf(where, sizeof(where), "%s[%zu]", path, i);
		if (item->yn_type != YN_MAP) {
			cfg_error(cx, item, "%s: expected a mapping", where);
			continue;
		}
		memset(&r, 0, sizeof(r));
		cfg_apply(cx, rule_keys, where, item, item, &r);
		if (r.r_name != NULL)
			snprintf(where, sizeof(where), "%s[%zu] (%s)", path, i,
			    r.r_name);
		if (cfg_value(item, "model") == NULL &&
		    cfg_value(item, "upstream") == NULL &&
		    cfg_value(item, "max_tokens") == NULL &&
		    cfg_value(item, "fallback") == NULL)
			cfg_error(cx, item,
			    "%s: a rule does nothing without model, upstream, "
			    "max_tokens or fallback",
			    where);
		rr = &rs->rs_rules[rs->rs_n++];
		rr->rr_name = r.r_name;
		rr->rr_line = item->yn_line;
		for (a = 0; a < ROUTING_ATTR_MAX; a++)
			rr->rr_match[a] = r.r_match[a];
		rr->rr_model = r.r_model;
		rr->rr_upstream = r.r_upstream;
		rr->rr_max_tokens = r.r_max_tokens != 0 ? r.r_max_tokens : -1;
		rr->rr_below_pct = r.r_below_pct != 0 ? r.r_below_pct : -1;
		rr->rr_fallback = r.r_fallback;
		rr->rr_nfallback = r.r_nfallback;
		if (cfg_value(item, "fallback") != NULL)
			rr->rr_fallback_line =
			    cfg_value(item, "fallback")->yn_line;
		for (j = 0; rr->rr_name != NULL && j + 1 < rs->rs_n; j++) {
			if (rs->rs_rules[j].rr_name != NULL &&
			    strcmp(rs->rs_rules[j].rr_name, rr->rr_name) == 0) {
				cfg_error(cx, item,
				    "%s: duplicate rule name (first at line "
				    "%zu)",
				    where, rs->rs_rules[j].rr_line);
				break;
			}
		}
	}
	*out = rs;
	return (cx->cx_nerr != nerr ? -1 : 0);
fail:
	routing_free(rs);
	return (-1);
}

/* Free a set and every rule in it. */
void
routing_free(struct routingset *rs)
{
	size_t i;

	if (rs == NULL)
		return;
	for (i = 0; i < rs->rs_n; i++)
		rule_clear(&rs->rs_rules[i]);
	free(rs->rs_rules);
	free(rs);
}
