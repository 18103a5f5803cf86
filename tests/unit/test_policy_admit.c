/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy core's admission algebra: all or nothing across scopes, no
 * overshoot under a burst, settle above and below the reservation,
 * release, shadow policies, model rules and kills, the budget-aware
 * clamp (also over several capped policies), rate limits (requests,
 * tokens reserved at admission and settled at the end, concurrency),
 * alert thresholds firing once per window (after a call, or over every
 * scope at a reload), and rolling windows.
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

#include <cmocka.h>

#include "tollgate/config.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/util.h"

#include "tollgate/yaml.h"

#include "policytest.h"

static void
test_overshoot(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_reservation *res[250];
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 30 * CENT);
	size_t i, n = 0, refused = 0;

	(void)state;
	ps = load_ok("- name: cap\n  window: day\n  hard_cap_usd: 1.00\n");
	pc = policy_counters_new();
	for (i = 0; i < 250; i++) { /* a burst of 50, then 200 more */
		policy_admit(ps, pc, &c, T0, &pd);
		if (pd.pd_verdict == POLICY_REFUSE) {
			assert_int_equal(pd.pd_reason, POLICY_HARD_CAP);
			assert_null(pd.pd_res);
			refused++;
			continue;
		}
		res[n++] = pd.pd_res;
	}
	assert_int_equal(n, 3); /* floor(1.00 / 0.30) */
	assert_int_equal(refused, 247);
	assert_int_equal(pd.pd_scope.sc_limit, USD);
	assert_int_equal(pd.pd_scope.sc_reserved, 90 * CENT);
	assert_int_equal(pd.pd_scope.sc_reset_at, utc(2026, 11, 29, 0, 0, 0));
	budget_is(ps, 0, pc, &c, T0, 0, 90 * CENT);
	/* Settle lower, higher, and release. */
	policy_settle(res[0], 25 * CENT, 1000, T0);
	budget_is(ps, 0, pc, &c, T0, 25 * CENT, 60 * CENT);
	policy_settle(res[1], 40 * CENT, 1000, T0);
	budget_is(ps, 0, pc, &c, T0, 65 * CENT, 30 * CENT);
	policy_release(res[2], T0);
	budget_is(ps, 0, pc, &c, T0, 65 * CENT, 0);
	policy_admit(ps, pc, &c, T0, &pd); /* 0.65 + 0.30 fits */
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_scope.sc_limit, USD); /* for the headers */
	assert_int_equal(pd.pd_scope.sc_spent, 65 * CENT);
	policy_release(pd.pd_res, T0);
	c.pc_unpriced_nusd = 36 * CENT;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	/* The next day re-opens the budget; the old window is collected. */
	policy_admit(ps, pc, &c, T0 + 86400000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_settle(pd.pd_res, CENT, 10, T0 + 86400000);
	assert_int_equal(policy_counters_gc(pc, T0 + 86400000), 1);
	assert_int_equal(policy_counters_count(pc), 1);
	policy_counters_free(pc);
	policy_free(ps);
}

/* A call that costs more than its reservation grows it, all or none. */
static void
test_grow(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_reservation *a, *b;
	struct policy_scope sc;
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 30 * CENT);

	(void)state;
	ps = load_ok("- name: team\n  match: {team: support}\n  window: day\n"
		     "  hard_cap_usd: 1\n"
		     "- name: all\n  window: day\n  hard_cap_usd: 0.9\n"
		     "- name: watch\n  window: day\n  alert_at_usd: 0.5\n");
	pc = policy_counters_new();
	policy_admit(ps, pc, &c, T0, &pd);
	a = pd.pd_res;
	assert_true(policy_res_capped(a));
	policy_admit(ps, pc, &c, T0, &pd);
	b = pd.pd_res;
	/* 0.60 held of 0.90: a may grow to 0.60 (room 0.30), not more. */
	assert_int_equal(policy_grow(a, 20 * CENT, T0, &sc), 0); /* less */
	assert_int_equal(policy_grow(a, 60 * CENT, T0, &sc), 0);
	budget_is(ps, 0, pc, &c, T0, 0, 90 * CENT);
	budget_is(ps, 1, pc, &c, T0, 0, 90 * CENT);
	assert_int_equal(policy_grow(a, 61 * CENT, T0, &sc), -1);
	assert_string_equal(sc.sc_policy->po_name, "all");
	assert_int_equal(sc.sc_limit, 90 * CENT);
	assert_int_equal(sc.sc_reserved, 90 * CENT);
	assert_int_equal(sc.sc_reset_at, utc(2026, 11, 29, 0, 0, 0));
	budget_is(ps, 0, pc, &c, T0, 0, 90 * CENT); /* unchanged */
	/* Settling takes the grown reservation off. */
	policy_settle(a, 61 * CENT, 10, T0);
	budget_is(ps, 0, pc, &c, T0, 61 * CENT, 30 * CENT);
	policy_release(b, T0);
	budget_is(ps, 1, pc, &c, T0, 61 * CENT, 0);
	policy_counters_free(pc);
	policy_free(ps);

	/* Alerts only: nothing capped, nothing to grow against. */
	ps = load_ok("- name: watch\n  window: day\n  alert_at_usd: 0.5\n");
	pc = policy_counters_new();
	policy_admit(ps, pc, &c, T0, &pd);
	assert_false(policy_res_capped(pd.pd_res));
	assert_int_equal(policy_grow(pd.pd_res, 500 * CENT, T0, NULL), 0);
	policy_release(pd.pd_res, T0);
	policy_counters_free(pc);
	policy_free(ps);
}

struct seen {
	int64_t reserved; /* cents */
	int tenants;
};

static void
scope_cb(const struct policy_scope *sc, void *arg)
{
	struct seen *seen = arg;

	seen->reserved += sc->sc_reserved / CENT;
	seen->tenants += sc->sc_per[TAG_TENANT][0] != '\0';
	assert_int_equal(sc->sc_reset_at,
	    sc->sc_policy->po_window.pw_kind == POLICY_WIN_DAY
		? utc(2026, 11, 29, 0, 0, 0)
		: utc(2026, 12, 1, 0, 0, 0));
}

static void
test_all_or_nothing(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 40 * CENT);
	struct policy_call other = mkcall("support", "globex", "gpt-4o", 0);
	struct policy_reservation *first;
	struct seen seen;

	(void)state;
	ps = load_ok("- name: team\n  match: {team: support}\n  window: day\n"
		     "  hard_cap_usd: 1\n"
		     "- name: tenant\n  per: [tenant]\n  window: month\n"
		     "  hard_cap_usd: 0.5\n"
		     "- name: twin\n  match: {team: support}\n  window: day\n"
		     "  hard_cap_usd: 0.7\n");
	pc = policy_counters_new();
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	first = pd.pd_res;
	/* "team" and "twin" share one scope: reserved once, not twice. */
	budget_is(ps, 0, pc, &c, T0, 0, 40 * CENT);
	budget_is(ps, 2, pc, &c, T0, 0, 40 * CENT);
	budget_is(ps, 1, pc, &c, T0, 0, 40 * CENT);
	assert_string_equal(pd.pd_scope.sc_policy->po_name, "tenant");
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	/* Both tenant (room 0.10) and twin (0.30) refuse: the tighter. */
	assert_string_equal(pd.pd_scope.sc_policy->po_name, "tenant");
	assert_string_equal(pd.pd_scope.sc_per[TAG_TENANT], "acme");
	assert_int_equal(pd.pd_scope.sc_limit, 50 * CENT);
	assert_int_equal(pd.pd_scope.sc_reset_at, utc(2026, 12, 1, 0, 0, 0));
	/* Nothing was reserved on the scopes that allowed. */
	budget_is(ps, 0, pc, &c, T0, 0, 40 * CENT);
	/* Another tenant has its own per-tenant budget. */
	other.pc_unpriced_nusd = 30 * CENT;
	policy_admit(ps, pc, &other, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	budget_is(ps, 1, pc, &other, T0, 0, 30 * CENT);
	budget_is(ps, 0, pc, &other, T0, 0, 70 * CENT);
	/* GET /v1/budgets: team and twin share a scope, listed for each. */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(policy_each_budget(ps, pc, T0, scope_cb, &seen), 4);
	assert_int_equal(seen.reserved, 70 + 70 + 40 + 30);
	assert_int_equal(seen.tenants, 2);
	policy_release(pd.pd_res, T0);
	policy_release(first, T0);
	policy_counters_free(pc);
	policy_free(ps);
}

static void
test_shadow_models_kill(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 60 * CENT);

	(void)state;
	ps = load_ok("- name: dry\n  window: day\n  hard_cap_usd: 0.5\n"
		     "  shadow: true\n  models: {deny: ['gpt-*']}\n"
		     "- name: models\n  match: {provider: openai}\n"
		     "  models: {allow: ['gpt-4o*', o3], deny: [gpt-4o-mini]}\n"
		     "- name: stop\n  match: {team: research}\n  killed: true\n"
		     "  kill_reason: loop\n");
	pc = policy_counters_new();
	policy_admit(ps, pc, &c, T0, &pd);
	/* The shadow policy would refuse twice over, and never does. */
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_shadow_reason, POLICY_MODEL_NOT_ALLOWED);
	assert_string_equal(pd.pd_shadow.sc_policy->po_name, "dry");
	budget_is(ps, 0, pc, &c, T0, 0, 60 * CENT); /* but it counts */
	policy_settle(pd.pd_res, 60 * CENT, 0, T0);
	c.pc_attr[POLICY_ATTR_MODEL] = "gpt-4o-mini";
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_MODEL_NOT_ALLOWED);
	assert_string_equal(pd.pd_scope.sc_policy->po_name, "models");
	assert_string_equal(
	    policy_reason_name(pd.pd_reason), "model_not_allowed");
	c.pc_attr[POLICY_ATTR_MODEL] = "claude-sonnet-4";
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_reason, POLICY_MODEL_NOT_ALLOWED);
	c.pc_attr[POLICY_ATTR_MODEL] = "o3";
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_shadow_reason, POLICY_HARD_CAP);
	policy_release(pd.pd_res, T0);
	c.pc_attr[POLICY_ATTR_PROVIDER] = "anthropic"; /* models: no match */
	c.pc_attr[POLICY_ATTR_MODEL] = "claude-sonnet-4";
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_release(pd.pd_res, T0);
	/* A kill wins over everything else and has its reason. */
	c.pc_attr[TAG_TEAM] = "research";
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_KILLED);
	assert_string_equal(pd.pd_scope.sc_policy->po_kill_reason, "loop");
	budget_is(ps, 0, pc, &c, T0, 60 * CENT, 0);
	policy_counters_free(pc);
	policy_free(ps);
}

static void
test_clamp(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct price p;
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 0);
	struct policy_reservation *res;

	(void)state;
	/* $1 per million output tokens: 1000 nano-USD a token. */
	memset(&p, 0, sizeof(p));
	p.p_base.pr_output = 1000000;
	p.p_max_output = 16384;
	c.pc_price = &p;
	ps = load_ok("- name: cap\n  window: day\n  hard_cap_usd: 0.01\n"
		     "  clamp: {min_output_tokens: 100}\n"
		     "  max_output_tokens: 9500\n"
		     "  default_output_tokens: 2000\n");
	pc = policy_counters_new();
	/* No bound asked: the default is injected. */
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_out_bound, 2000);
	assert_int_equal(pd.pd_worst_nusd, 2000000);
	policy_release(pd.pd_res, T0);
	/* Above the ceiling: lowered to it. */
	c.pc_info.ci_max_output = 20000;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_out_bound, 9500);
	policy_settle(pd.pd_res, 9500000, 9500, T0);
	/* $0.0005 left: 4000 tokens do not fit, 500 do. */
	c.pc_info.ci_max_output = 4000;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_CLAMP);
	assert_int_equal(pd.pd_out_bound, 500);
	assert_int_equal(pd.pd_worst_nusd, 500000);
	budget_is(ps, 0, pc, &c, T0, 9500000, 500000);
	res = pd.pd_res;
	/* No room even for the minimum: refused. */
	c.pc_info.ci_max_output = 100;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_HARD_CAP);
	policy_release(res, T0);
	policy_counters_free(pc);
	policy_free(ps);
}

static void
test_rate_limits(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_reservation *held[2];
	struct policy_call c = mkcall("support", "acme", "gpt-4o", CENT);
	int i;

	(void)state;
	c.pc_info.ci_max_output = 100; /* a worst case of 100 tokens */
	ps =
	    load_ok("- name: rpm\n  per: [tenant]\n"
		    "  rate_limit: {requests_per_minute: 3}\n"
		    "- name: tpm\n  match: {team: support}\n"
		    "  rate_limit: {tokens_per_minute: 1000, concurrent: 2}\n");
	pc = policy_counters_new();
	for (i = 0; i < 3; i++) {
		policy_admit(ps, pc, &c, T0 + i * 10000, &pd);
		assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
		policy_settle(pd.pd_res, CENT, 0, T0 + i * 10000);
	}
	policy_admit(ps, pc, &c, T0 + 20000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_RATE_REQUESTS);
	assert_int_equal(pd.pd_scope.sc_limit, 3);
	/* The first request (at second T0) leaves the minute at T0+59.5s. */
	assert_int_equal(pd.pd_scope.sc_retry_after_ms, 39500);
	policy_admit(ps, pc, &c, T0 + 59000, &pd);
	assert_int_equal(pd.pd_reason, POLICY_RATE_REQUESTS);
	policy_admit(ps, pc, &c, T0 + 59500, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_settle(pd.pd_res, CENT, 600, T0 + 59500);
	/* Another tenant has its own requests per minute. */
	c.pc_attr[TAG_TENANT] = "globex";
	policy_admit(ps, pc, &c, T0 + 60000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_settle(pd.pd_res, CENT, 500, T0 + 60000);
	/* 1100 settled tokens in the minute: tokens per minute refuse. */
	policy_admit(ps, pc, &c, T0 + 61000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_RATE_TOKENS);
	assert_int_equal(pd.pd_scope.sc_spent, 1100);
	assert_int_equal(pd.pd_scope.sc_retry_after_ms, 58500);
	policy_admit(ps, pc, &c, T0 + 61000 + 58500, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	held[0] = pd.pd_res;
	policy_admit(ps, pc, &c, T0 + 120000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	held[1] = pd.pd_res;
	/* Two in flight: concurrency refuses until one ends. */
	policy_admit(ps, pc, &c, T0 + 121000, &pd);
	assert_int_equal(pd.pd_reason, POLICY_CONCURRENCY);
	assert_int_equal(pd.pd_scope.sc_reserved, 2);
	assert_true(pd.pd_scope.sc_retry_after_ms > 0);
	policy_release(held[0], T0 + 121000);
	policy_admit(ps, pc, &c, T0 + 121000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_release(pd.pd_res, T0 + 121000);
	policy_release(held[1], T0 + 121000);
	/* A day later nothing is counted and everything can go. */
	assert_int_equal(policy_counters_gc(pc, T0 + 86400000), 3);
	assert_int_equal(policy_counters_count(pc), 0);
	policy_counters_free(pc);
	policy_free(ps);
}

static void
test_token_reservations(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_reservation *first, *held[2];
	struct policy_call c = mkcall("support", "acme", "gpt-4o", CENT);
	struct price p;
	int64_t now = T0;

	(void)state;
	ps = load_ok("- name: tpm\n  rate_limit: {tokens_per_minute: 2000}\n");
	pc = policy_counters_new();
	c.pc_info.ci_input_estimate = 30;
	c.pc_info.ci_max_output = 1500;
	/* Two calls of up to 1530 tokens: the first holds them. */
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_worst_tokens, 1530);
	first = pd.pd_res;
	policy_admit(ps, pc, &c, now + 10, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_RATE_TOKENS);
	assert_int_equal(pd.pd_scope.sc_limit, 2000);
	assert_int_equal(pd.pd_scope.sc_spent, 1530);
	assert_int_equal(pd.pd_worst_tokens, 1530);
	/* Only the first call's end can make room. */
	assert_int_equal(pd.pd_scope.sc_retry_after_ms, 1000);
	/* n choices multiply the output bound. */
	c.pc_info.ci_n = 2;
	policy_admit(ps, pc, &c, now + 10, &pd);
	assert_int_equal(pd.pd_worst_tokens, 3030);
	c.pc_info.ci_n = 1;
	/* It settles 70 s later, in a later minute, having used 40. */
	now += 70000;
	policy_settle(first, CENT, 40, now);
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	held[0] = pd.pd_res;
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_reason, POLICY_RATE_TOKENS);
	assert_int_equal(pd.pd_scope.sc_spent, 1570);
	policy_release(held[0], now);
	/* 40 settled: 1960 is left, a call of 1990 waits for them to go. */
	c.pc_info.ci_max_output = 1960;
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_reason, POLICY_RATE_TOKENS);
	assert_int_equal(pd.pd_scope.sc_retry_after_ms, 59500);
	policy_admit(ps, pc, &c, now + 59500, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_release(pd.pd_res, now + 59500);
	/* No bound and no ceiling: only alone, and then alone. */
	now += 120000;
	c.pc_info.ci_max_output = -1;
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_worst_tokens, POLICY_TOKENS_UNBOUNDED);
	held[0] = pd.pd_res;
	c.pc_info.ci_max_output = 10;
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_reason, POLICY_RATE_TOKENS);
	policy_settle(held[0], CENT, 5, now);
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	held[0] = pd.pd_res;
	c.pc_info.ci_max_output = -1;
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_reason, POLICY_RATE_TOKENS);
	/* The model's ceiling bounds a call that asks for none. */
	memset(&p, 0, sizeof(p));
	p.p_base.pr_output = 1000;
	p.p_max_output = 1000;
	c.pc_price = &p;
	policy_admit(ps, pc, &c, now, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_worst_tokens, 1030);
	held[1] = pd.pd_res;
	policy_release(held[0], now);
	policy_release(held[1], now);
	/* Everything given back: the entry counts nothing once idle. */
	assert_int_equal(policy_counters_gc(pc, now + 61000), 1);
	policy_counters_free(pc);
	policy_free(ps);
}

static void
test_clamp_across_policies(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct price p;
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 0);
	struct policy_reservation *held[2];

	(void)state;
	memset(&p, 0, sizeof(p));
	p.p_base.pr_output = 1000000; /* 1000 nano-USD a token */
	p.p_max_output = 16384;
	c.pc_price = &p;
	c.pc_info.ci_max_output = 4000;
	ps = load_ok("- name: team\n  match: {team: support}\n  window: day\n"
		     "  hard_cap_usd: 0.003\n"
		     "  clamp: {min_output_tokens: 100}\n"
		     "- name: tenant\n  match: {tenant: acme}\n  window: day\n"
		     "  hard_cap_usd: 0.002\n"
		     "  clamp: {min_output_tokens: 100}\n"
		     "- name: org\n  window: day\n  hard_cap_usd: 0.0025\n");
	pc = policy_counters_new();
	/* Both clamps: the lowest, 2000 tokens, fits all three. */
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_CLAMP);
	assert_int_equal(pd.pd_out_bound, 2000);
	assert_int_equal(pd.pd_worst_nusd, 2000000);
	held[0] = pd.pd_res;
	budget_is(ps, 0, pc, &c, T0, 0, 2000000);
	budget_is(ps, 1, pc, &c, T0, 0, 2000000);
	budget_is(ps, 2, pc, &c, T0, 0, 2000000);
	policy_release(held[0], T0);
	policy_counters_free(pc);
	policy_free(ps);
	/* org (no clamp) cannot pay even what the clamps allow: refused. */
	ps = load_ok("- name: team\n  match: {team: support}\n  window: day\n"
		     "  hard_cap_usd: 0.003\n"
		     "  clamp: {min_output_tokens: 100}\n"
		     "- name: tenant\n  match: {tenant: acme}\n  window: day\n"
		     "  hard_cap_usd: 0.002\n"
		     "  clamp: {min_output_tokens: 100}\n"
		     "- name: org\n  window: day\n  hard_cap_usd: 0.0015\n");
	pc = policy_counters_new();
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_HARD_CAP);
	assert_string_equal(pd.pd_scope.sc_policy->po_name, "org");
	assert_int_equal(pd.pd_worst_nusd, 2000000);
	budget_is(ps, 2, pc, &c, T0, 0, 0);
	policy_counters_free(pc);
	pc = policy_counters_new();
	policy_free(ps);
	/* A clamp below a needy policy's floor refuses: tenant pays 150,
	 * team (floor 1000 here) would have to go below its floor. */
	ps = load_ok("- name: team\n  match: {team: support}\n  window: day\n"
		     "  hard_cap_usd: 0.003\n"
		     "  clamp: {min_output_tokens: 1000}\n"
		     "- name: tenant\n  match: {tenant: acme}\n  window: day\n"
		     "  hard_cap_usd: 0.002\n"
		     "  clamp: {min_output_tokens: 100}\n");
	c.pc_info.ci_max_output = 1850;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	held[0] = pd.pd_res; /* team 0.00115 left, tenant 0.00015 */
	c.pc_info.ci_max_output = 4000;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_string_equal(pd.pd_scope.sc_policy->po_name, "team");
	/* team pays for the call as asked: its floor does not apply. */
	c.pc_info.ci_max_output = 1000;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_CLAMP);
	assert_int_equal(pd.pd_out_bound, 150);
	held[1] = pd.pd_res;
	policy_release(held[1], T0);
	policy_release(held[0], T0);
	policy_counters_free(pc);
	policy_free(ps);
}

static void
count_alert(const struct policy_alert *pa, const char *const *attr, void *arg)
{
	size_t *n = arg;

	assert_non_null(pa->pa_scope.sc_policy);
	assert_string_equal(attr[TAG_TENANT], "acme");
	(*n)++;
}

static void
test_fired_all(void **state)
{
	struct policyset *ps, *low;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_alert al[4];
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 10 * CENT);
	size_t n = 0;

	(void)state;
	ps = load_ok("- name: a\n  per: [tenant]\n  window: day\n"
		     "  alert_at_usd: [0.5, 0.9]\n");
	low = load_ok("- name: a\n  per: [tenant]\n  window: day\n"
		      "  alert_at_usd: [0.2, 0.5, 0.9]\n");
	pc = policy_counters_new();
	policy_admit(ps, pc, &c, T0, &pd);
	policy_settle(pd.pd_res, 60 * CENT, 0, T0);
	assert_int_equal(policy_fired(ps, pc, c.pc_attr, T0, al, 4), 1);
	/* A reload adds 0.2 below the spend: it fires, 0.5 not again. */
	assert_int_equal(policy_fired_all(low, pc, T0 + 1, count_alert, &n), 1);
	assert_int_equal(n, 1);
	assert_int_equal(policy_fired_all(low, pc, T0 + 2, count_alert, &n), 0);
	assert_int_equal(policy_fired(low, pc, c.pc_attr, T0 + 3, al, 4), 0);
	/* The next day is a new window with nothing spent. */
	assert_int_equal(
	    policy_fired_all(low, pc, T0 + 86400000, count_alert, &n), 0);
	policy_counters_free(pc);
	policy_free(ps);
	policy_free(low);
}

static void
test_thresholds(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_alert al[8];
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 10 * CENT);
	static const int64_t spend[] = {40, 20, 1, 29, 20};
	static const size_t fires[] = {0, 1, 0, 1, 0};
	int64_t now = T0;
	size_t i, n;

	(void)state;
	ps = load_ok("- name: a\n  window: day\n  hard_cap_usd: 2\n"
		     "  alert_at_usd: [0.5, 0.9]\n"
		     "- name: b\n  window: day\n  alert_at_usd: 0.5\n"
		     "  shadow: true\n");
	pc = policy_counters_new();
	for (i = 0; i < nitems(spend); i++) {
		policy_admit(ps, pc, &c, now, &pd);
		policy_settle(pd.pd_res, spend[i] * CENT, 0, now);
		n = policy_fired(ps, pc, c.pc_attr, now, al, nitems(al));
		assert_int_equal(n, fires[i]);
	}
	/* Asked again, nothing fires twice. */
	assert_int_equal(policy_fired(ps, pc, c.pc_attr, now, al, 8), 0);
	/* A new day re-arms: 0.5 fires once for a and b's shared scope. */
	now += 86400000;
	policy_admit(ps, pc, &c, now, &pd);
	policy_settle(pd.pd_res, 60 * CENT, 0, now);
	n = policy_fired(ps, pc, c.pc_attr, now, al, nitems(al));
	assert_int_equal(n, 1);
	assert_int_equal(al[0].pa_threshold_nusd, 50 * CENT);
	assert_int_equal(al[0].pa_scope.sc_spent, 60 * CENT);
	assert_int_equal(al[0].pa_scope.sc_limit, 2 * USD);
	assert_int_equal(
	    al[0].pa_scope.sc_window_start, utc(2026, 11, 29, 0, 0, 0));
	policy_counters_free(pc);
	/* After a restart, state restored from the ledger: no repeat. */
	pc = policy_counters_new();
	policy_alert_mark(&ps->ps_pol[0], pc, c.pc_attr, now - 5, 50 * CENT);
	policy_admit(ps, pc, &c, now, &pd);
	policy_settle(pd.pd_res, 95 * CENT, 0, now);
	n = policy_fired(ps, pc, c.pc_attr, now, al, nitems(al));
	assert_int_equal(n, 1);
	assert_int_equal(al[0].pa_threshold_nusd, 90 * CENT);
	policy_counters_free(pc);
	policy_free(ps);
}

static void
test_rolling(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_alert al[2];
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 50 * CENT);
	int64_t b0 = T0 / 60000; /* 1h: buckets of one minute */

	(void)state;
	ps = load_ok("- name: r\n  window: 1h\n  hard_cap_usd: 1\n"
		     "  alert_at_percent: 50\n");
	pc = policy_counters_new();
	policy_admit(ps, pc, &c, T0, &pd);
	policy_settle(pd.pd_res, 60 * CENT, 0, T0 + 1000);
	assert_int_equal(policy_fired(ps, pc, c.pc_attr, T0, al, 2), 1);
	policy_admit(ps, pc, &c, T0 + 30 * 60000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	/* The minute T0 is in counts until 61 buckets later. */
	assert_int_equal(pd.pd_scope.sc_reset_at, (b0 + 61) * 60000);
	assert_int_equal(pd.pd_scope.sc_spent, 60 * CENT);
	policy_admit(ps, pc, &c, (b0 + 61) * 60000 - 1, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	policy_admit(ps, pc, &c, (b0 + 61) * 60000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	assert_int_equal(pd.pd_scope.sc_spent, 0);
	/* A window length after it fired, the threshold fires anew. */
	policy_settle(pd.pd_res, 55 * CENT, 0, (b0 + 61) * 60000);
	assert_int_equal(
	    policy_fired(ps, pc, c.pc_attr, (b0 + 61) * 60000, al, 2), 1);
	policy_counters_free(pc);
	policy_free(ps);
}

/* The fleet leases of one entry, found through the leases' pass. */
struct found {
	const char *f_day; /* a substring of the wanted entry's key */
	struct policy_lease *f_pl;
	int64_t f_reserved;
	size_t f_n;
};

static void
find_lease(struct policy_lease *pl, int64_t reserved, void *arg)
{
	struct found *f = arg;

	f->f_n++;
	if (strstr(pl->pl_key, f->f_day) != NULL) {
		f->f_pl = pl;
		f->f_reserved = reserved;
	}
}

static struct policy_lease *
lease_of(
    struct policy_counters *pc, int64_t start, int64_t *reserved, size_t *n)
{
	struct found f;
	char day[32];

	snprintf(day, sizeof(day), "@%lld", (long long)start);
	memset(&f, 0, sizeof(f));
	f.f_day = day;
	policy_leases_each(pc, find_lease, &f);
	if (reserved != NULL)
		*reserved = f.f_reserved;
	if (n != NULL)
		*n = f.f_n;
	return (f.f_pl);
}

/*
 * A fleet's leases on the budget counters: a call is admitted against the
 * lease (not only the cap), a short lease asks to wait with what the call
 * needs, settling counts this instance's spend, an answer from Redis makes
 * the entry's spend the fleet's, and at a window's rollover the next day's
 * entry starts with its own empty lease while the old one is kept until
 * Redis has counted everything it spent.
 */
static void
test_fleet_leases(void **state)
{
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 30 * CENT);
	struct policy_lease *pl, *pl2;
	int64_t day = utc(2026, 11, 28, 0, 0, 0), resv;
	size_t n;

	(void)state;
	ps = load_ok("- name: cap\n  window: day\n  hard_cap_usd: 1.00\n");
	pc = policy_counters_new();
	policy_counters_fleet(pc, 1);
	/* No lease yet: refused, but only for want of lease: wait. */
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_HARD_CAP);
	assert_int_equal(pd.pd_lease_wait, 1);
	pl = lease_of(pc, day, NULL, &n);
	assert_non_null(pl);
	assert_int_equal(n, 1);
	assert_int_equal(pl->pl_cap, USD);
	assert_int_equal(pl->pl_want, 30 * CENT);
	/* Redis grants $0.40: one call fits, a second waits again. */
	policy_lease_answer(pl, 40 * CENT, 0, 40 * CENT, 0, T0);
	pl->pl_until = T0 + 30000;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_settle(pd.pd_res, 25 * CENT, 100, T0);
	assert_int_equal(pl->pl_cum, 25 * CENT);
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_lease_wait, 1);
	assert_int_equal(pl->pl_want, 25 * CENT + 30 * CENT);
	/* The fleet has spent $0.80 with ours: the cap itself has no room
	 * for $0.30 (the lease would not help): refused, no wait. */
	policy_lease_answer(pl, 90 * CENT, 80 * CENT, 90 * CENT, 25 * CENT, T0);
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_lease_wait, 0);
	budget_is(ps, 0, pc, &c, T0, 80 * CENT, 0);
	/* An expired lease is not used. */
	policy_lease_answer(pl, 40 * CENT, 10 * CENT, 40 * CENT, 25 * CENT, T0);
	c.pc_unpriced_nusd = 10 * CENT;
	c.pc_price = NULL;
	policy_admit(ps, pc, &c, T0 + 30000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_lease_wait, 1);
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	policy_settle(pd.pd_res, 10 * CENT, 100, T0);
	/* The next day: a new entry with an empty lease of its own. */
	policy_admit(ps, pc, &c, day + 86400000 + 1000, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_lease_wait, 1);
	pl2 = lease_of(pc, day + 86400000, &resv, &n);
	assert_non_null(pl2);
	assert_ptr_not_equal(pl2, pl);
	assert_int_equal(n, 2);
	assert_int_equal(pl2->pl_cum, 0);
	assert_int_equal(resv, 0);
	/* The old day owes Redis $0.10: it outlives its window until then. */
	assert_int_equal(pl->pl_cum - pl->pl_acked, 10 * CENT);
	policy_counters_gc(pc, day + 2 * 86400000);
	assert_ptr_equal(lease_of(pc, day, NULL, NULL), pl);
	policy_lease_answer(pl, 0, 20 * CENT, 0, 35 * CENT, day + 86400000);
	policy_counters_gc(pc, day + 2 * 86400000);
	assert_null(lease_of(pc, day, NULL, NULL));
	policy_counters_free(pc);
	policy_free(ps);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_overshoot),
	    cmocka_unit_test(test_all_or_nothing),
	    cmocka_unit_test(test_grow),
	    cmocka_unit_test(test_shadow_models_kill),
	    cmocka_unit_test(test_clamp),
	    cmocka_unit_test(test_rate_limits),
	    cmocka_unit_test(test_token_reservations),
	    cmocka_unit_test(test_clamp_across_policies),
	    cmocka_unit_test(test_fired_all),
	    cmocka_unit_test(test_thresholds),
	    cmocka_unit_test(test_rolling),
	    cmocka_unit_test(test_fleet_leases),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
