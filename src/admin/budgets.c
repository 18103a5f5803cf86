/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GET /v1/budgets: every live budget scope of the policies in force, read
 * from the policy counters on the loop thread (they are never touched by
 * another). One entry per policy and scope: two policies naming the same
 * scope (an alerts-only policy over a capped one) share its counter and
 * are listed each under its own name. A scope whose budget is shared by a
 * fleet also shows the fleet's figures and this instance's lease.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/extensions.h"
#include "tollgate/fleet.h"
#include "tollgate/kills.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "admin_int.h"

static void
add_money(cJSON *o, const char *name, int64_t nusd)
{
	char key[64], buf[40];

	snprintf(key, sizeof(key), "%s_usd", name);
	usd_format(buf, sizeof(buf), nusd);
	cJSON_AddRawToObject(o, key, buf);
	snprintf(key, sizeof(key), "%s_nusd", name);
	snprintf(buf, sizeof(buf), "%lld", (long long)nusd);
	cJSON_AddRawToObject(o, key, buf);
}

static void
add_time(cJSON *o, const char *name, int64_t ms)
{
	char buf[64];

	if (ms == POLICY_NEVER || spend_format_time(ms, buf, sizeof(buf)) == -1)
		cJSON_AddNullToObject(o, name);
	else
		cJSON_AddStringToObject(o, name, buf);
}

/*
 * The "fleet" object of a scope whose budget a fleet shares: the fleet's
 * spend (what Redis last counted plus what this instance settled since),
 * the lease held here, the spend Redis has not counted yet, all leases of
 * the fleet, and while Redis does not answer the local share this
 * instance admits against (docs/fleet.md, When Redis does not answer).
 */
static void
add_fleet(cJSON *o, const struct policy_scope *sc, int degraded)
{
	const struct policy_lease *pl = sc->sc_lease;
	cJSON *f;
	int64_t unrep = pl->pl_cum - pl->pl_acked;

	f = cJSON_AddObjectToObject(o, "fleet");
	cJSON_AddStringToObject(f, "state", degraded ? "degraded" : "up");
	add_money(f, "spent", policy_fleet_spent(sc));
	add_money(f, "lease", pl->pl_lease);
	add_money(f, "unreported", unrep);
	add_money(f, "leased", pl->pl_fleet_leased);
	if (degraded && pl->pl_degraded)
		add_money(f, "local_share", pl->pl_extra);
	else {
		cJSON_AddNullToObject(f, "local_share_usd");
		cJSON_AddNullToObject(f, "local_share_nusd");
	}
	add_time(
	    f, "synced_at", pl->pl_synced > 0 ? pl->pl_synced : POLICY_NEVER);
}

/*
 * The same for a rolling budget: the fleet's spend is what Redis last
 * counted in the window's buckets, plus what this instance settled since.
 */
static void
add_fleet_rolling(
    cJSON *o, const struct policy_scope *sc, int64_t cap, int degraded)
{
	const struct policy_rate_lease *rl = sc->sc_rlease;
	cJSON *f;
	int64_t unrep = rl->rl_cum_tok - rl->rl_ack_tok, share;

	f = cJSON_AddObjectToObject(o, "fleet");
	cJSON_AddStringToObject(f, "state", degraded ? "degraded" : "up");
	add_money(f, "spent", policy_fleet_spent(sc));
	add_money(f, "lease", rl->rl_tok);
	add_money(f, "unreported", unrep);
	add_money(f, "leased", rl->rl_leased_tok);
	if (degraded && rl->rl_degraded) {
		share = cap / (rl->rl_share > 0 ? rl->rl_share : 1);
		add_money(f, "local_share", share);
	} else {
		cJSON_AddNullToObject(f, "local_share_usd");
		cJSON_AddNullToObject(f, "local_share_nusd");
	}
	add_time(
	    f, "synced_at", rl->rl_synced > 0 ? rl->rl_synced : POLICY_NEVER);
}

/*
 * Would a live kill stop the calls of this scope? Its calls carry the
 * scope's per values and match the policy's patterns; a pattern without
 * wildcards is the value itself. With wildcards left, it is a guess that
 * errs towards ok.
 */
static int
scope_killed(const struct policy *po, const struct policy_scope *sc)
{
	const char *attr[POLICY_ATTR_MAX];
	int a;

	if (kills_count() == 0)
		return (0);
	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if (a < TAG_MAX && po->po_per[a])
			attr[a] = sc->sc_per[a];
		else if (po->po_match[a] != NULL &&
		    strpbrk(po->po_match[a], "*?") == NULL)
			attr[a] = po->po_match[a];
		else
			attr[a] = NULL;
	}
	return (kills_match(attr, wallclock_ms()) != NULL);
}

/* The entries as they are collected, to be put in policy order. */
struct blist {
	const struct policyset *bl_ps;
	struct bent {
		size_t be_pol; /* index in the set */
		char *be_key; /* the scope, printed, for a stable order */
		cJSON *be_obj;
	} * bl_v;
	size_t bl_n, bl_cap;
};

static int
bent_cmp(const void *a, const void *b)
{
	const struct bent *x = a, *y = b;

	if (x->be_pol != y->be_pol)
		return (x->be_pol < y->be_pol ? -1 : 1);
	return (strcmp(x->be_key, y->be_key));
}

static void
ext_cb(const struct extension *x, void *arg)
{
	cJSON_AddItemToArray(arg, extensions_json(x));
}

static void
budget_cb(const struct policy_scope *sc, void *arg)
{
	const struct policy *po = sc->sc_policy;
	struct blist *bl = arg;
	struct bent *be;
	cJSON *o, *scope, *th;
	const char *per[TAG_MAX];
	char buf[40];
	size_t i;
	int a, degraded;

	o = cJSON_CreateObject();
	if (bl->bl_n == bl->bl_cap) {
		bl->bl_cap = bl->bl_cap == 0 ? 16 : bl->bl_cap * 2;
		bl->bl_v =
		    xreallocarray(bl->bl_v, bl->bl_cap, sizeof(*bl->bl_v));
	}
	be = &bl->bl_v[bl->bl_n++];
	be->be_pol = (size_t)(po - bl->bl_ps->ps_pol);
	be->be_obj = o;
	cJSON_AddStringToObject(o, "policy", po->po_name);
	for (a = 0; a < TAG_MAX; a++)
		per[a] = sc->sc_per[a];
	scope = policy_scope_json(po, per);
	cJSON_AddItemToObject(o, "scope", scope);
	policy_window_name(&po->po_window, buf, sizeof(buf));
	cJSON_AddStringToObject(o, "window", buf);
	add_time(o, "window_start", sc->sc_window_start);
	add_time(o, "reset_at", sc->sc_reset_at);
	add_money(o, "spent", sc->sc_spent);
	add_money(o, "reserved", sc->sc_reserved);
	if (po->po_cap_nusd != -1) {
		/* sc_limit: the cap with the scope's live extensions. */
		add_money(o, "cap", sc->sc_limit);
		add_money(o, "remaining",
		    sc->sc_limit - sc->sc_spent - sc->sc_reserved);
		add_money(o, "hard_cap", po->po_cap_nusd);
		add_money(o, "extended", sc->sc_limit - po->po_cap_nusd);
	} else {
		cJSON_AddNullToObject(o, "cap_usd");
		cJSON_AddNullToObject(o, "cap_nusd");
		cJSON_AddNullToObject(o, "remaining_usd");
		cJSON_AddNullToObject(o, "remaining_nusd");
		cJSON_AddNullToObject(o, "hard_cap_usd");
		cJSON_AddNullToObject(o, "hard_cap_nusd");
		cJSON_AddNullToObject(o, "extended_usd");
		cJSON_AddNullToObject(o, "extended_nusd");
	}
	extensions_on(po, per, wallclock_ms(), ext_cb,
	    cJSON_AddArrayToObject(o, "extensions"));
	if (po->po_nalerts > 0)
		add_money(o, "alert_at", po->po_alerts[0]);
	else {
		cJSON_AddNullToObject(o, "alert_at_usd");
		cJSON_AddNullToObject(o, "alert_at_nusd");
	}
	th = cJSON_AddArrayToObject(o, "alert_thresholds_usd");
	for (i = 0; i < po->po_nalerts; i++) {
		usd_format(buf, sizeof(buf), po->po_alerts[i]);
		cJSON_AddItemToArray(th, cJSON_CreateRaw(buf));
	}
	degraded = (sc->sc_lease != NULL || sc->sc_rlease != NULL) &&
	    fleet_state() == FLEET_DOWN;
	if (po->po_killed || scope_killed(po, sc))
		cJSON_AddStringToObject(o, "state", "killed");
	else if (sc->sc_capped)
		cJSON_AddStringToObject(o, "state", "capped");
	else if (degraded)
		cJSON_AddStringToObject(o, "state", "degraded");
	else if (po->po_nalerts > 0 && sc->sc_spent >= po->po_alerts[0])
		cJSON_AddStringToObject(o, "state", "alerting");
	else
		cJSON_AddStringToObject(o, "state", "ok");
	cJSON_AddBoolToObject(o, "shadow", po->po_shadow);
	if (sc->sc_lease != NULL)
		add_fleet(o, sc, degraded);
	else if (sc->sc_rlease != NULL)
		add_fleet_rolling(o, sc, sc->sc_limit, degraded);
	if ((be->be_key = cJSON_PrintUnformatted(scope)) == NULL)
		fatalx("%s: cJSON_PrintUnformatted", __func__);
}

/*
 * The GET /v1/budgets document for the configuration in force: the
 * scopes in policy order, then by their tags. The caller owns the tree.
 */
cJSON *
admin_budgets(void)
{
	const struct config *cf = config_current();
	const struct policy *po;
	struct policy_scope sc;
	struct blist bl;
	const char *none[POLICY_ATTR_MAX] = {NULL};
	cJSON *doc, *list;
	int64_t now = wallclock_ms();
	size_t i, j;
	int t;

	doc = cJSON_CreateObject();
	list = cJSON_AddArrayToObject(doc, "budgets");
	if (cf == NULL || cf->cf_policies == NULL || enforce_counters() == NULL)
		return (doc);
	memset(&bl, 0, sizeof(bl));
	bl.bl_ps = cf->cf_policies;
	policy_each_budget(
	    cf->cf_policies, enforce_counters(), now, budget_cb, &bl);
	/* A budget without per: tags is one scope; list it before its first
	 * call too, at zero. */
	for (i = 0; i < cf->cf_policies->ps_n; i++) {
		po = &cf->cf_policies->ps_pol[i];
		if (po->po_cap_nusd == -1 && po->po_nalerts == 0)
			continue;
		for (t = 0; t < TAG_MAX && !po->po_per[t]; t++)
			;
		for (j = 0; j < bl.bl_n && bl.bl_v[j].be_pol != i; j++)
			;
		if (t < TAG_MAX || j < bl.bl_n)
			continue;
		/* No counter: zero, and the cap with any extension. */
		policy_budget(po, enforce_counters(), none, now, &sc);
		budget_cb(&sc, &bl);
	}
	if (bl.bl_n > 0)
		qsort(bl.bl_v, bl.bl_n, sizeof(*bl.bl_v), bent_cmp);
	for (i = 0; i < bl.bl_n; i++) {
		cJSON_AddItemToArray(list, bl.bl_v[i].be_obj);
		cJSON_free(bl.bl_v[i].be_key);
	}
	free(bl.bl_v);
	return (doc);
}

/*
 * A budget's scope object into mb's labels, one per tag or pattern, and
 * its ordering key; -1 when the scope names intent, which is never a
 * label (its values grow without bound).
 */
static int
scope_labels(const cJSON *scope, struct metrics_budget *mb)
{
	const cJSON *it;
	char *k, *n;
	size_t i;

	if (cJSON_GetObjectItemCaseSensitive(scope, "intent") != NULL)
		return (-1);
	k = xstrdup("");
	for (i = 0; i < METRICS_BUDGET_NLABELS; i++) {
		it = cJSON_GetObjectItemCaseSensitive(
		    scope, metrics_budget_labels[i]);
		mb->mb_labels[i] =
		    cJSON_IsString(it) ? xstrdup(it->valuestring) : NULL;
		/* A separator no tag value may hold (tags are printable). */
		xasprintf(&n, "%s%s\001", k,
		    mb->mb_labels[i] != NULL ? mb->mb_labels[i] : "");
		free(k);
		k = n;
	}
	mb->mb_key = k;
	return (0);
}

static int64_t
num(const cJSON *o, const char *name, int64_t none)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	/* add_money writes them as raw integers: exact, never a double. */
	if (v == NULL || !cJSON_IsRaw(v) || v->valuestring == NULL)
		return (none);
	return ((int64_t)strtoll(v->valuestring, NULL, 10));
}

static int
gauge_cmp(const void *a, const void *b)
{
	const struct metrics_budget *x = a, *y = b;
	int c;

	if (x->mb_spent_nusd != y->mb_spent_nusd)
		return (x->mb_spent_nusd > y->mb_spent_nusd ? -1 : 1);
	if ((c = strcmp(x->mb_policy, y->mb_policy)) != 0)
		return (c);
	return (strcmp(x->mb_key, y->mb_key));
}

/*
 * The budget scopes of /v1/budgets for /metrics: the METRICS_BUDGETS_MAX
 * that spent most (ties by policy and scope, so the set is stable), into
 * g, with how many were left out (those, and every scope that names an
 * intent). Free with admin_budget_gauges_free.
 */
void
admin_budget_gauges(struct metrics_gauges *g)
{
	cJSON *doc = admin_budgets(), *it, *list;
	struct metrics_budget *v = NULL, *mb;
	const cJSON *st, *po;
	size_t n = 0, cap = 0, intents = 0;

	list = cJSON_GetObjectItemCaseSensitive(doc, "budgets");
	cJSON_ArrayForEach(it, list)
	{
		if (n == cap) {
			cap = cap == 0 ? 16 : cap * 2;
			v = xreallocarray(v, cap, sizeof(*v));
		}
		mb = &v[n];
		memset(mb, 0, sizeof(*mb));
		if (scope_labels(cJSON_GetObjectItemCaseSensitive(it, "scope"),
			mb) == -1) {
			intents++;
			continue;
		}
		n++;
		po = cJSON_GetObjectItemCaseSensitive(it, "policy");
		st = cJSON_GetObjectItemCaseSensitive(it, "state");
		mb->mb_policy =
		    xstrdup(cJSON_IsString(po) ? po->valuestring : "");
		mb->mb_state =
		    xstrdup(cJSON_IsString(st) ? st->valuestring : "ok");
		mb->mb_spent_nusd = num(it, "spent_nusd", 0);
		mb->mb_reserved_nusd = num(it, "reserved_nusd", 0);
		mb->mb_cap_nusd = num(it, "cap_nusd", -1);
	}
	cJSON_Delete(doc);
	if (n > 1)
		qsort(v, n, sizeof(*v), gauge_cmp);
	g->mg_budgets = v;
	g->mg_nbudgets = n < METRICS_BUDGETS_MAX ? n : METRICS_BUDGETS_MAX;
	g->mg_budgets_dropped = n - g->mg_nbudgets + intents;
	g->mg_budgets_all = n;
}

/* Free what admin_budget_gauges put in g. */
void
admin_budget_gauges_free(struct metrics_gauges *g)
{
	struct metrics_budget *v = g->mg_budgets;
	size_t i, j;

	for (i = 0; i < g->mg_budgets_all; i++) {
		free(v[i].mb_policy);
		for (j = 0; j < METRICS_BUDGET_NLABELS; j++)
			free(v[i].mb_labels[j]);
		free(v[i].mb_key);
		free(v[i].mb_state);
	}
	free(v);
	g->mg_budgets = NULL;
	g->mg_nbudgets = g->mg_budgets_all = 0;
}
