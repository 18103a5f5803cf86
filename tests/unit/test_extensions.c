/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Budget extensions against a real ledger in a temp directory: a raise
 * re-opens a capped scope for its window only and for no other scope,
 * an expiry or a revocation closes it again, a scope is read strictly,
 * the fleet's JSON round-trips and is read as strictly as a POST, and
 * the ledger keeps them (live ones come back, revoked ones do not).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/config.h"
#include "tollgate/extensions.h"
#include "tollgate/ledger.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"
#include "tollgate/yaml.h"

#include "policytest.h"
#include "tmptree.h"

#define NEVER POLICY_NEVER
#define DAY 86400000LL

static struct {
	char dir[64];
	char path[128];
	struct event_base *base;
} fx;

static const char per_tenant[] = "- name: tenant-day\n"
				 "  match: { team: support }\n"
				 "  per: [tenant]\n"
				 "  window: day\n"
				 "  hard_cap_usd: 1.00\n";

static int
setup(void **state)
{
	char *cause = NULL;

	(void)state;
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/tg-ext-XXXXXX");
	if (mkdtemp(fx.dir) == NULL)
		return (-1);
	snprintf(fx.path, sizeof(fx.path), "%s/ledger.db", fx.dir);
	if ((fx.base = event_base_new()) == NULL)
		return (-1);
	if (ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause) != 0) {
		print_error("ledger_open: %s\n", cause);
		free(cause);
		return (-1);
	}
	return (0);
}

static int
teardown(void **state)
{
	(void)state;
	extensions_free_all();
	ledger_close();
	event_base_free(fx.base);
	tmptree_remove(fx.dir);
	return (0);
}

/* Raise policy po's scope of tenant by nusd; must be accepted. */
static const struct extension *
extend_ok(const struct policy *po, const char *tenant, int64_t nusd,
    int64_t expires, int64_t now)
{
	const char *per[TAG_MAX] = {NULL};
	const struct extension *x = NULL;
	char *why = NULL;

	per[TAG_TENANT] = tenant;
	if (extensions_add(po, per, nusd, "quarter close", "alice", expires,
		now, &x, &why) != 0)
		fail_msg("extensions_add: %s", why);
	assert_non_null(x);
	return (x);
}

/* Admit c at now: the verdict; an allowed call is settled at its worst. */
static enum policy_verdict
spend(const struct policyset *ps, struct policy_counters *pc,
    const struct policy_call *c, int64_t now, struct policy_decision *pd)
{
	policy_admit(ps, pc, c, now, pd);
	if (pd->pd_verdict != POLICY_REFUSE)
		policy_settle(pd->pd_res, c->pc_unpriced_nusd, 10, now);
	return (pd->pd_verdict);
}

static void
test_window_only(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_call acme = mkcall("support", "acme", "m", 60 * CENT);
	struct policy_call beta = mkcall("support", "beta", "m", 60 * CENT);
	const struct extension *x;

	(void)state;
	ps = load_ok(per_tenant);
	pc = policy_counters_new();
	assert_int_equal(spend(ps, pc, &acme, T0, &pd), POLICY_ALLOW);
	budget_is(ps, 0, pc, &acme, T0, 60 * CENT, 0);
	assert_int_equal(spend(ps, pc, &acme, T0, &pd), POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_HARD_CAP);
	assert_int_equal(pd.pd_scope.sc_limit, USD);

	x = extend_ok(&ps->ps_pol[0], "acme", 50 * CENT, NEVER, T0 + 1);
	assert_string_equal(x->x_window, "day");
	assert_int_equal(x->x_window_start, utc(2026, 11, 28, 0, 0, 0));
	assert_int_equal(x->x_ends_ms, utc(2026, 11, 29, 0, 0, 0));
	assert_string_equal(
	    x->x_scope, "{\"team\":\"support\",\"tenant\":\"acme\"}");
	/* $1.50 now: 0.60 + 0.60 fits, a third does not. */
	assert_int_equal(spend(ps, pc, &acme, T0 + 2, &pd), POLICY_ALLOW);
	assert_int_equal(pd.pd_scope.sc_limit, 150 * CENT);
	assert_int_equal(spend(ps, pc, &acme, T0 + 3, &pd), POLICY_REFUSE);
	assert_int_equal(pd.pd_scope.sc_limit, 150 * CENT);
	/* Another tenant's scope is not raised. */
	assert_int_equal(spend(ps, pc, &beta, T0 + 4, &pd), POLICY_ALLOW);
	assert_int_equal(spend(ps, pc, &beta, T0 + 5, &pd), POLICY_REFUSE);
	assert_int_equal(pd.pd_scope.sc_limit, USD);
	/* The next day starts at the configured cap again. */
	assert_int_equal(spend(ps, pc, &acme, T0 + DAY, &pd), POLICY_ALLOW);
	assert_int_equal(pd.pd_scope.sc_limit, USD);
	assert_int_equal(
	    spend(ps, pc, &acme, T0 + DAY + 1, &pd), POLICY_REFUSE);
	assert_null(extensions_find(x->x_id, T0 + DAY));
	policy_counters_free(pc);
	policy_free(ps);
}

static void
test_expire_and_revoke(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_call acme = mkcall("support", "acme", "m", 60 * CENT);
	const struct extension *x;
	char id[24];

	(void)state;
	ps = load_ok(per_tenant);
	pc = policy_counters_new();
	assert_int_equal(spend(ps, pc, &acme, T0, &pd), POLICY_ALLOW);
	x = extend_ok(&ps->ps_pol[0], "acme", 60 * CENT, T0 + 10000, T0);
	assert_int_equal(x->x_ends_ms, T0 + 10000);
	/* Admitted while it lasts ... */
	policy_admit(ps, pc, &acme, T0 + 5000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_release(pd.pd_res, T0 + 5000);
	/* ... refused once it has ended, without any change to the list. */
	policy_admit(ps, pc, &acme, T0 + 10000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);

	x = extend_ok(&ps->ps_pol[0], "acme", 60 * CENT, NEVER, T0 + 10001);
	snprintf(id, sizeof(id), "%s", x->x_id);
	policy_admit(ps, pc, &acme, T0 + 10002, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_release(pd.pd_res, T0 + 10002);
	assert_int_equal(extensions_revoke(id, T0 + 10003), 0);
	assert_int_equal(extensions_revoke(id, T0 + 10003), -1);
	policy_admit(ps, pc, &acme, T0 + 10004, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_scope.sc_limit, USD);
	policy_counters_free(pc);
	policy_free(ps);
}

/* extensions_scope on JSON text: 0, or -1 with param checked. */
static int
scope_of(const struct policy *po, const char *json, const char *param,
    const char **tenant)
{
	const char *per[TAG_MAX];
	char p[64], *why = NULL;
	cJSON *o = json != NULL ? cJSON_Parse(json) : NULL;
	int rc;

	rc = extensions_scope(po, o, per, p, sizeof(p), &why);
	if (rc != 0) {
		assert_non_null(why);
		if (param != NULL)
			assert_string_equal(p, param);
		free(why);
	} else if (tenant != NULL)
		*tenant = per[TAG_TENANT] != NULL ? "set" : NULL;
	cJSON_Delete(o);
	return (rc);
}

static void
test_scope(void **state)
{
	struct policyset *ps;
	const char *t = NULL;
	const char *per[TAG_MAX] = {NULL};
	const struct extension *x;
	char *why = NULL;

	(void)state;
	ps = load_ok(per_tenant);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0],
		"{\"team\":\"support\",\"tenant\":\"acme\"}", NULL, &t),
	    0);
	assert_non_null(t);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], "{\"tenant\":\"\"}", NULL, NULL), 0);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], "{}", "scope.tenant", NULL), -1);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], NULL, "scope.tenant", NULL), -1);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], "{\"tenant\":\"a\",\"team\":\"sales\"}",
		"scope.team", NULL),
	    -1);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], "{\"tenant\":\"a\",\"intent\":\"i\"}",
		"scope.intent", NULL),
	    -1);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], "{\"tenant\":\"a\",\"colour\":\"red\"}",
		"scope.colour", NULL),
	    -1);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], "{\"tenant\":7}", "scope.tenant", NULL),
	    -1);
	assert_int_equal(scope_of(&ps->ps_pol[0], "{\"tenant\":\"a*\"}",
			     "scope.tenant", NULL),
	    -1);
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], "[\"tenant\"]", "scope", NULL), -1);

	/* What extensions_add itself refuses. */
	per[TAG_TENANT] = "acme";
	assert_int_equal(extensions_add(&ps->ps_pol[0], per, 0, "r", "b", NEVER,
			     T0, &x, &why),
	    -1);
	free(why);
	assert_int_equal(
	    extensions_add(&ps->ps_pol[0], per, EXTENSION_MAX_NUSD + 1, "r",
		"b", NEVER, T0, &x, &why),
	    -1);
	free(why);
	assert_int_equal(extensions_add(&ps->ps_pol[0], per, CENT, "", "b",
			     NEVER, T0, &x, &why),
	    -1);
	assert_non_null(strstr(why, "reason"));
	free(why);
	assert_int_equal(extensions_add(&ps->ps_pol[0], per, CENT, "r",
			     "a\x1b[2Jb", NEVER, T0, &x, &why),
	    -1);
	assert_non_null(strstr(why, "by"));
	free(why);
	assert_int_equal(extensions_add(&ps->ps_pol[0], per, CENT, "r", "b", T0,
			     T0, &x, &why),
	    -1);
	assert_non_null(strstr(why, "expires"));
	free(why);
	assert_int_equal(extensions_count(), 0);
	policy_free(ps);
	ps = load_ok("- name: alerts-only\n  window: day\n"
		     "  alert_at_usd: [1]\n");
	assert_int_equal(extensions_add(&ps->ps_pol[0], per, CENT, "r", "b",
			     NEVER, T0, &x, &why),
	    -1);
	assert_non_null(strstr(why, "hard_cap_usd"));
	free(why);
	policy_free(ps);
}

/* A call running when its raise is revoked or ends may not grow into it. */
static void
test_grow_after_revoke(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_scope sc;
	struct policy_call acme = mkcall("support", "acme", "m", 60 * CENT);
	const struct extension *x;
	char id[24];
	int k;

	(void)state;
	ps = load_ok(per_tenant);
	pc = policy_counters_new();
	for (k = 0; k < 2; k++) {
		/* $0.60 spent on a $1 cap: room only with the raise. */
		x = extend_ok(&ps->ps_pol[0], "acme", 50 * CENT,
		    k == 0 ? NEVER : T0 + DAY * k + 1000, T0 + DAY * k);
		snprintf(id, sizeof(id), "%s", x->x_id);
		assert_int_equal(
		    spend(ps, pc, &acme, T0 + DAY * k, &pd), POLICY_ALLOW);
		policy_admit(ps, pc, &acme, T0 + DAY * k + 1, &pd);
		assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
		/* It may grow while the raise lasts ... */
		assert_int_equal(
		    policy_grow(pd.pd_res, 70 * CENT, T0 + DAY * k + 2, NULL),
		    0);
		if (k == 0)
			assert_int_equal(extensions_revoke(id, T0 + 3), 0);
		/* ... but not once it is revoked (k 0) or has ended (k 1). */
		assert_int_equal(
		    policy_grow(pd.pd_res, 90 * CENT, T0 + DAY * k + 1000, &sc),
		    -1);
		assert_int_equal(sc.sc_limit, USD);
		policy_settle(pd.pd_res, 70 * CENT, 10, T0 + DAY * k + 1000);
	}
	policy_counters_free(pc);
	policy_free(ps);
}

/* Two policies naming one scope share its counter: both are raised. */
static void
test_shared_scope(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_call acme = mkcall("support", "acme", "m", 60 * CENT);
	struct policy_scope sc;

	(void)state;
	ps = load_ok("- name: tight\n  match: { team: support }\n"
		     "  per: [tenant]\n  window: day\n  hard_cap_usd: 1.00\n"
		     "- name: loose\n  match: { team: support }\n"
		     "  per: [tenant]\n  window: day\n  hard_cap_usd: 2.00\n");
	pc = policy_counters_new();
	assert_int_equal(spend(ps, pc, &acme, T0, &pd), POLICY_ALLOW);
	assert_int_equal(spend(ps, pc, &acme, T0, &pd), POLICY_REFUSE);
	extend_ok(&ps->ps_pol[1], "acme", 50 * CENT, NEVER, T0);
	/* Raised through loose, tight is raised too: 1.50 and 2.50. */
	assert_int_equal(spend(ps, pc, &acme, T0 + 1, &pd), POLICY_ALLOW);
	assert_int_equal(pd.pd_scope.sc_limit, 150 * CENT);
	policy_budget(&ps->ps_pol[1], pc, acme.pc_attr, T0 + 1, &sc);
	assert_int_equal(sc.sc_limit, 250 * CENT);
	assert_int_equal(spend(ps, pc, &acme, T0 + 2, &pd), POLICY_REFUSE);
	policy_counters_free(pc);
	policy_free(ps);
}

/* A rolling window's raise lasts one window length; a total one's, until
 * revoked; a scope without a counter yet is shown raised. */
static void
test_rolling_and_total(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_scope sc;
	struct policy_call acme = mkcall("support", "acme", "m", 60 * CENT);
	const struct extension *x;

	(void)state;
	ps = load_ok("- name: roll\n  match: { team: support }\n"
		     "  per: [tenant]\n  window: 2h\n  hard_cap_usd: 1.00\n"
		     "- name: ever\n  match: { team: sales }\n"
		     "  window: total\n  hard_cap_usd: 1.00\n");
	pc = policy_counters_new();
	x = extend_ok(&ps->ps_pol[0], "acme", 50 * CENT, NEVER, T0);
	assert_int_equal(x->x_ends_ms, T0 + 2 * 3600 * 1000);
	assert_string_equal(x->x_window, "2h");
	assert_non_null(strstr(x->x_key, "@rolling"));
	/* Shown raised before any call made its counter. */
	assert_int_equal(
	    policy_budget(&ps->ps_pol[0], pc, acme.pc_attr, T0, &sc), -1);
	assert_int_equal(sc.sc_limit, 150 * CENT);
	assert_int_equal(spend(ps, pc, &acme, T0, &pd), POLICY_ALLOW);
	assert_int_equal(spend(ps, pc, &acme, T0 + 1, &pd), POLICY_ALLOW);
	assert_int_equal(spend(ps, pc, &acme, T0 + 2, &pd), POLICY_REFUSE);
	x = extend_ok(&ps->ps_pol[1], NULL, 50 * CENT, NEVER, T0);
	assert_int_equal(x->x_ends_ms, NEVER);
	assert_null(x->x_intent);
	policy_counters_free(pc);
	policy_free(ps);
}

/* A per value its own policy's match refuses names no scope. */
static void
test_scope_outside_match(void **state)
{
	struct policyset *ps;

	(void)state;
	ps = load_ok("- name: glob\n  match: { tenant: \"acme*\" }\n"
		     "  per: [tenant]\n  window: day\n  hard_cap_usd: 1\n");
	assert_int_equal(
	    scope_of(&ps->ps_pol[0], "{\"tenant\":\"acme-eu\"}", NULL, NULL),
	    0);
	assert_int_equal(scope_of(&ps->ps_pol[0], "{\"tenant\":\"globex\"}",
			     "scope.tenant", NULL),
	    -1);
	policy_free(ps);
}

/* x as the fleet shares it, printed. */
static char *
shared(const struct extension *x)
{
	cJSON *o = extensions_json(x);
	char *s = cJSON_PrintUnformatted(o), *out = xstrdup(s);

	cJSON_free(s);
	cJSON_Delete(o);
	return (out);
}

/* Decoding js must fail, naming what. */
static void
refused(const char *js, const char *what)
{
	char *why = NULL;

	assert_null(extensions_decode(js, strlen(js), &why));
	assert_non_null(why);
	if (strstr(why, what) == NULL)
		fail_msg("\"%s\" does not name %s", why, what);
	free(why);
}

static void
test_decode_adopt(void **state)
{
	struct policyset *ps;
	const struct extension *x, *out;
	struct extension *y;
	char *js, *why = NULL, *bad;
	char id[24];

	(void)state;
	ps = load_ok(per_tenant);
	x = extend_ok(&ps->ps_pol[0], "acme", 1234567891, NEVER, T0);
	snprintf(id, sizeof(id), "%s", x->x_id);
	js = shared(x);
	assert_non_null(strstr(js, "\"usd\":1.234567891,\"nusd\":1234567891"));
	/* Its own id comes back: already live here. */
	if ((y = extensions_decode(js, strlen(js), &why)) == NULL)
		fail_msg("extensions_decode: %s", why);
	assert_int_equal(y->x_learnt, 1);
	assert_int_equal(extensions_adopt(y, T0, &out, &why), 1);
	assert_ptr_equal(out, x);
	/* Learnt elsewhere: adopted under the same id, raising the same
	 * key. */
	assert_int_equal(extensions_revoke(id, T0), 0);
	y = extensions_decode(js, strlen(js), &why);
	assert_int_equal(extensions_adopt(y, T0, &out, &why), 0);
	assert_string_equal(out->x_id, id);
	assert_int_equal(out->x_nusd, 1234567891);
	{
		int64_t until;

		assert_int_equal(
		    extensions_sum(out->x_key, T0, &until), 1234567891);
		assert_int_equal(until, utc(2026, 11, 29, 0, 0, 0));
	}
	/* Ended: not adopted. */
	assert_int_equal(extensions_revoke(id, T0), 0);
	y = extensions_decode(js, strlen(js), &why);
	assert_int_equal(extensions_adopt(y, T0 + DAY, &out, &why), 2);
	assert_null(out);

	refused("[]", "object");
	refused("{\"id\":\"k_0123456789abcdef\"}", "id");
	xasprintf(&bad, "%.*s,\"colour\":1}", (int)strlen(js) - 1, js);
	refused(bad, "unknown field");
	free(bad);
	bad = xstrdup(js);
	memcpy(strstr(bad, "\"nusd\":") + 7, "1.5       ", 10);
	refused(bad, "nusd");
	free(bad);
	bad = xstrdup(js);
	memcpy(strstr(bad, "\"nusd\":") + 7, "-123456789", 10);
	refused(bad, "nusd");
	free(bad);
	/* A scope other than the one its key names, or made in the future:
	 * refused (the key says what is raised). */
	bad = xstrdup(js);
	memcpy(strstr(bad, "\"tenant\":\"acme\"") + 10, "acmf", 4);
	refused(bad, "scope: is not the scope the key names");
	free(bad);
	bad = xstrdup(js);
	memcpy(strstr(bad, "\"created_at\":\"") + 14, "2090", 4);
	refused(bad, "created_at is in the future");
	free(bad);
	/* A key of another window, or an end past the window's: refused. */
	bad = xstrdup(js);
	memcpy(strstr(bad, "window{day}@") + 7, "wee", 3);
	refused(bad, "key");
	free(bad);
	bad = xstrdup(js);
	memcpy(strstr(bad, "\"ends_at\":\"") + 11, "2027", 4);
	refused(bad, "ends_at is past");
	free(bad);
	bad = xstrdup(js);
	memcpy(strstr(bad, "\"window_start\":\"") + 16 + 11, "2", 1);
	refused(bad, "window_start");
	free(bad);
	free(js);
	policy_free(ps);
}

static void
test_persist(void **state)
{
	struct policyset *ps;
	const struct extension *a, *b;
	sqlite3 *ro;
	char *cause = NULL, ida[24], idb[24];

	(void)state;
	ps = load_ok(per_tenant);
	a = extend_ok(&ps->ps_pol[0], "acme", CENT, NEVER, T0);
	snprintf(ida, sizeof(ida), "%s", a->x_id);
	b = extend_ok(&ps->ps_pol[0], "", 2 * CENT, T0 + 60000, T0);
	snprintf(idb, sizeof(idb), "%s", b->x_id);
	assert_int_equal(extensions_revoke(ida, T0 + 1), 0);
	ledger_close(); /* everything queued is written */
	extensions_free_all();
	if ((ro = spend_open(fx.path, &cause)) == NULL)
		fail_msg("spend_open: %s", cause);
	assert_int_equal(extensions_load(ro, T0 + 2, &cause), 0);
	assert_int_equal(extensions_count(), 1);
	b = extensions_find(idb, T0 + 2);
	assert_non_null(b);
	assert_int_equal(b->x_nusd, 2 * CENT);
	assert_int_equal(b->x_ends_ms, T0 + 60000);
	assert_string_equal(b->x_by, "alice");
	assert_string_equal(
	    b->x_scope, "{\"team\":\"support\",\"tenant\":\"\"}");
	/* A row whose scope is not JSON (a hand edit) is skipped. */
	{
		sqlite3 *rw;

		assert_int_equal(sqlite3_open(fx.path, &rw), SQLITE_OK);
		assert_int_equal(
		    sqlite3_exec(rw, "UPDATE extensions SET scope = 'not json'",
			NULL, NULL, NULL),
		    SQLITE_OK);
		assert_int_equal(extensions_load(ro, T0 + 2, &cause), 0);
		assert_int_equal(extensions_count(), 0);
		assert_int_equal(sqlite3_exec(rw,
				     "UPDATE extensions SET scope = "
				     "'{\"team\":\"support\",\"tenant\":\"\"}'",
				     NULL, NULL, NULL),
		    SQLITE_OK);
		sqlite3_close(rw);
	}
	/* Ended by the time of the read: not loaded. */
	assert_int_equal(extensions_load(ro, T0 + 60000, &cause), 0);
	assert_int_equal(extensions_count(), 0);
	{
		sqlite3_stmt *st;

		assert_int_equal(sqlite3_prepare_v2(ro,
				     "SELECT revoked_at, granted_by, nusd FROM "
				     "extensions WHERE id = ?1",
				     -1, &st, NULL),
		    SQLITE_OK);
		sqlite3_bind_text(st, 1, ida, -1, SQLITE_STATIC);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(st, 0),
		    "2026-11-28T12:00:00.501Z");
		assert_string_equal(
		    (const char *)sqlite3_column_text(st, 1), "alice");
		assert_int_equal(sqlite3_column_int64(st, 2), CENT);
		sqlite3_finalize(st);
	}
	sqlite3_close(ro);
	/* With the ledger closed an extension cannot be kept: refused. */
	{
		const char *per[TAG_MAX] = {NULL};
		const struct extension *x;

		assert_int_equal(extensions_add(&ps->ps_pol[0], per, CENT, "r",
				     "b", NEVER, T0, &x, &cause),
		    -1);
		assert_non_null(strstr(cause, "ledger"));
		free(cause);
	}
	policy_free(ps);
	if (ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause) != 0)
		fail_msg("ledger_open: %s", cause);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_window_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_expire_and_revoke, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scope, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_decode_adopt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_persist, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_grow_after_revoke, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_shared_scope, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_rolling_and_total, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_scope_outside_match, setup, teardown),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
