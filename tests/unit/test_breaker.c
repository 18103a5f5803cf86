/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The runaway breakers: the breakers: section of a policy (every error
 * with its line and column), and breaker_request / breaker_settle driven
 * with explicit times: loop trips on exactly the Nth identical body
 * within T and not for other bodies, other intents or outside T; velocity
 * over the last minute; error_spike's ratio, min_calls and min_spend;
 * what a trip's kill matches; quiet while the kill lives; bounded memory.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tollgate/breaker.h"
#include "tollgate/config.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "tollgate/yaml.h"

#define USD 1000000000LL
#define CENT 10000000LL
#define T0 1795875780500LL /* 2026-11-28T12:23:00.500Z */
#define SEC 1000LL
#define MIN (60 * SEC)

#include "policyload.h"

static void
sha_of(unsigned char sha[32], int n)
{
	memset(sha, 0, 32);
	sha[0] = (unsigned char)n;
	sha[31] = (unsigned char)(n >> 8);
}

static void
attrs(const char *attr[POLICY_ATTR_MAX], const char *intent, const char *ac,
    const char *tenant)
{
	memset(attr, 0, sizeof(const char *) * POLICY_ATTR_MAX);
	attr[TAG_INTENT] = intent;
	attr[TAG_AGENT_CLASS] = ac;
	attr[TAG_TENANT] = tenant;
	attr[TAG_TEAM] = "core";
	attr[POLICY_ATTR_MODEL] = "gpt-4o";
	attr[POLICY_ATTR_PROVIDER] = "openai";
}

static void
test_parse(void **state)
{
	struct policyset *ps;
	const struct policy_breakers *b;

	(void)state;
	ps =
	    load_ok("- name: runaway\n"
		    "  match: { agent_class: researcher }\n"
		    "  breakers:\n"
		    "    loop: { count: 5, within: 60s, kill_for: 10m }\n"
		    "    velocity: { usd_per_minute: 2.50, kill_for: 2h }\n"
		    "    error_spike: { ratio: 0.5, min_spend_usd: 1, "
		    "window: 5m, min_calls: 12, kill_for: 1d }\n"
		    "- name: defaults\n"
		    "  breakers:\n"
		    "    error_spike: { ratio: 1, window: 1m, kill_for: 90s }\n"
		    "- name: none\n");
	assert_int_equal(ps->ps_n, 3);
	b = &ps->ps_pol[0].po_breakers;
	assert_int_equal(b->pb_loop_count, 5);
	assert_int_equal(b->pb_loop_within_ms, 60 * SEC);
	assert_int_equal(b->pb_loop_kill_ms, 10 * MIN);
	assert_int_equal(b->pb_vel_nusd, 2500000000LL);
	assert_int_equal(b->pb_vel_kill_ms, 120 * MIN);
	assert_int_equal(b->pb_err_ppm, 500000);
	assert_int_equal(b->pb_err_min_nusd, USD);
	assert_int_equal(b->pb_err_window_ms, 5 * MIN);
	assert_int_equal(b->pb_err_min_calls, 12);
	assert_int_equal(b->pb_err_kill_ms, 1440 * MIN);
	assert_true(policy_has_breakers(&ps->ps_pol[0]));
	b = &ps->ps_pol[1].po_breakers;
	assert_int_equal(b->pb_loop_count, 0);
	assert_int_equal(b->pb_vel_nusd, -1);
	assert_int_equal(b->pb_err_ppm, 1000000);
	assert_int_equal(b->pb_err_min_nusd, 0);
	assert_int_equal(b->pb_err_min_calls, 10);
	assert_int_equal(b->pb_err_kill_ms, 90 * SEC);
	assert_false(policy_has_breakers(&ps->ps_pol[2]));
	policy_free(ps);
}

static const struct {
	const char *yaml;
	const char *error;
} bad[] = {
    {"- name: a\n  breakers: { loop: { count: 5, within: 60s } }\n",
	"t.yaml:2:21: policies[0].breakers.loop: missing required key "
	"'kill_for'"},
    {"- name: a\n  breakers:\n    loop: { count: 1, within: 1m, "
     "kill_for: 1m }\n",
	"t.yaml:3:20: policies[0].breakers.loop.count: must be between 2 "
	"and 50"},
    {"- name: a\n  breakers:\n    loop: { count: 5, within: 60 , "
     "kill_for: 1m }\n",
	"t.yaml:3:31: policies[0].breakers.loop.within: expected a duration"},
    {"- name: a\n  breakers:\n    loop: { count: 5, within: 1m, "
     "kill_for: 367d }\n",
	"t.yaml:3:45: policies[0].breakers.loop.kill_for: expected a "
	"duration"},
    {"- name: a\n  breakers:\n    velocity: { usd_per_minute: -1, "
     "kill_for: 1m }\n",
	"t.yaml:3:33: policies[0].breakers.velocity.usd_per_minute: expected "
	"an amount in USD"},
    {"- name: a\n  breakers:\n    velocity: { kill_for: 1m }\n",
	"t.yaml:3:15: policies[0].breakers.velocity: missing required key "
	"'usd_per_minute'"},
    {"- name: a\n  breakers:\n    error_spike: { ratio: 1.5, window: 5m, "
     "kill_for: 1m }\n",
	"t.yaml:3:27: policies[0].breakers.error_spike.ratio: expected a "
	"ratio"},
    {"- name: a\n  breakers:\n    error_spike: { ratio: 0, window: 5m, "
     "kill_for: 1m }\n",
	"t.yaml:3:27: policies[0].breakers.error_spike.ratio: expected a "
	"ratio"},
    {"- name: a\n  breakers:\n    error_spike: { ratio: 0.5, window: 30s, "
     "kill_for: 1m }\n",
	"t.yaml:1:3: policies[0] (a): breakers.error_spike.window must be "
	"at least 1m"},
    {"- name: a\n  breakers:\n    error_spike: { ratio: 0.5, window: 5m, "
     "min_calls: 0, kill_for: 1m }\n",
	"t.yaml:3:55: policies[0].breakers.error_spike.min_calls: must be "
	"between 1"},
    {"- name: a\n  breakers:\n    panic: { count: 3 }\n",
	"t.yaml:3:5: unknown key 'panic' in policies[0].breakers"},
    {"- name: a\n  breakers:\n    loop: { count: 3, within: 1m, kill_for: "
     "1m, by: team }\n",
	"t.yaml:3:49: unknown key 'by' in policies[0].breakers.loop"},
    {"- name: a\n  breakers: [loop]\n",
	"t.yaml:2:13: policies[0].breakers: expected a mapping"},
};

static void
test_parse_errors(void **state)
{
	struct cfgerrs errs;
	size_t i, j;
	int found;

	(void)state;
	for (i = 0; i < nitems(bad); i++) {
		memset(&errs, 0, sizeof(errs));
		assert_null(load(bad[i].yaml, &errs));
		for (j = 0, found = 0; j < errs.ce_n; j++)
			if (strncmp(errs.ce_msgs[j], bad[i].error,
				strlen(bad[i].error)) == 0)
				found = 1;
		if (!found) {
			for (j = 0; j < errs.ce_n; j++)
				print_error("got: %s\n", errs.ce_msgs[j]);
			fail_msg("case %zu: want %s", i, bad[i].error);
		}
		cfgerrs_free(&errs);
	}
}

static void
test_duration(void **state)
{
	static const struct {
		const char *s;
		int64_t want; /* -1: refused */
	} cases[] = {
	    {"90s", 90 * SEC},
	    {"10m", 10 * MIN},
	    {"2h", 120 * MIN},
	    {"7d", 7 * 1440 * MIN},
	    {"366d", 366 * 1440 * MIN},
	    {"8784h", 366 * 1440 * MIN},
	    {"367d", -1},
	    {"31622401s", -1},
	    {"0s", -1},
	    {"1", -1},
	    {"s", -1},
	    {"1.5h", -1},
	    {"-1m", -1},
	    {"1ms", -1},
	    {"1w", -1},
	    {"", -1},
	    {"99999999999999999999d", -1},
	};
	int64_t v;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		v = -1;
		if (policy_parse_duration(cases[i].s, &v) == -1)
			v = -1;
		if (v != cases[i].want)
			fail_msg("%s: got %lld", cases[i].s, (long long)v);
	}
}

#define LOOP_YAML                                                              \
	"- name: loops\n"                                                      \
	"  match: { model: \"gpt-4*\" }\n"                                     \
	"  per: [tenant]\n"                                                    \
	"  breakers: { loop: { count: 3, within: 10s, kill_for: 10m } }\n"

static void
test_loop_trips_on_nth(void **state)
{
	struct policyset *ps = load_ok(LOOP_YAML);
	struct breaker_state *st = breaker_state_new();
	struct breaker_trip bt;
	const char *attr[POLICY_ATTR_MAX];
	unsigned char sha[32], other[32];
	int a;

	(void)state;
	attrs(attr, "triage", "researcher", "acme");
	sha_of(sha, 1);
	sha_of(other, 2);
	/* Two identical bodies and others in between: no trip. */
	assert_int_equal(breaker_request(ps, st, attr, sha, T0, &bt), 0);
	assert_int_equal(breaker_request(ps, st, attr, other, T0, &bt), 0);
	assert_int_equal(
	    breaker_request(ps, st, attr, sha, T0 + 4 * SEC, &bt), 0);
	assert_int_equal(
	    breaker_request(ps, st, attr, other, T0 + 5 * SEC, &bt), 0);
	/* The third identical one, 9.999 s after the first: trips. */
	assert_int_equal(breaker_request(ps, st, attr, sha, T0 + 9999, &bt), 1);
	assert_ptr_equal(bt.bt_policy, &ps->ps_pol[0]);
	assert_string_equal(bt.bt_kind, "loop");
	assert_int_equal(bt.bt_kill_ms, 10 * MIN);
	assert_false(bt.bt_shadow);
	/* The kill: the policy's model glob, this tenant, this intent. */
	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if (a == TAG_INTENT)
			assert_string_equal(bt.bt_match[a], "triage");
		else if (a == TAG_TENANT)
			assert_string_equal(bt.bt_match[a], "acme");
		else if (a == POLICY_ATTR_MODEL)
			assert_string_equal(bt.bt_match[a], "gpt-4*");
		else
			assert_null(bt.bt_match[a]);
	}
	assert_non_null(strstr(bt.bt_evidence, "3 times in 9999 ms"));
	assert_non_null(strstr(bt.bt_evidence, "for intent=triage"));
	assert_non_null(strstr(bt.bt_evidence, "sha256 010000000000"));
	breaker_trip_clear(&bt);
	breaker_trip_clear(&bt); /* twice is harmless */

	/* Quiet while its kill lives, even with many more repeats. */
	for (a = 0; a < 10; a++)
		assert_int_equal(breaker_request(ps, st, attr, sha,
				     T0 + 10 * SEC + a * 100, &bt),
		    0);
	/* After kill_for, three fresh repeats trip again (not one). */
	assert_int_equal(
	    breaker_request(ps, st, attr, sha, T0 + 11 * MIN, &bt), 0);
	assert_int_equal(
	    breaker_request(ps, st, attr, sha, T0 + 11 * MIN + 1, &bt), 0);
	assert_int_equal(
	    breaker_request(ps, st, attr, sha, T0 + 11 * MIN + 2, &bt), 1);
	breaker_trip_clear(&bt);

	breaker_state_free(st);
	policy_free(ps);
}

static void
test_loop_outside_window(void **state)
{
	struct policyset *ps = load_ok(LOOP_YAML);
	struct breaker_state *st = breaker_state_new();
	struct breaker_trip bt;
	const char *attr[POLICY_ATTR_MAX];
	unsigned char sha[32];
	int i;

	(void)state;
	attrs(attr, "triage", NULL, "acme");
	sha_of(sha, 7);
	/* Exactly T between the first and the third: not "within T". */
	assert_int_equal(breaker_request(ps, st, attr, sha, T0, &bt), 0);
	assert_int_equal(
	    breaker_request(ps, st, attr, sha, T0 + 5 * SEC, &bt), 0);
	assert_int_equal(
	    breaker_request(ps, st, attr, sha, T0 + 10 * SEC, &bt), 0);
	/* A steady repeat every 5 s never trips: 3 take 10 s each time. */
	for (i = 3; i < 40; i++)
		assert_int_equal(
		    breaker_request(ps, st, attr, sha, T0 + i * 5 * SEC, &bt),
		    0);
	/* But one sooner does: 5 s and then 4.999 s. */
	assert_int_equal(
	    breaker_request(ps, st, attr, sha, T0 + 39 * 5 * SEC + 4999, &bt),
	    1);
	breaker_trip_clear(&bt);
	breaker_state_free(st);
	policy_free(ps);
}

static void
test_loop_scopes(void **state)
{
	struct policyset *ps = load_ok(LOOP_YAML);
	struct breaker_state *st = breaker_state_new();
	struct breaker_trip bt;
	const char *a1[POLICY_ATTR_MAX], *a2[POLICY_ATTR_MAX];
	const char *a3[POLICY_ATTR_MAX], *a4[POLICY_ATTR_MAX];
	unsigned char sha[32];
	int i;

	(void)state;
	sha_of(sha, 9);
	attrs(a1, "triage", "researcher", "acme");
	attrs(a2, "summarise", "researcher", "acme"); /* another intent */
	attrs(a3, "triage", "researcher", "globex"); /* another tenant */
	attrs(a4, "triage", "researcher", "acme");
	a4[POLICY_ATTR_MODEL] = "claude-3"; /* the policy does not match */
	for (i = 0; i < 2; i++) {
		assert_int_equal(
		    breaker_request(ps, st, a1, sha, T0 + i, &bt), 0);
		assert_int_equal(
		    breaker_request(ps, st, a2, sha, T0 + i, &bt), 0);
		assert_int_equal(
		    breaker_request(ps, st, a3, sha, T0 + i, &bt), 0);
		assert_int_equal(
		    breaker_request(ps, st, a4, sha, T0 + i, &bt), 0);
	}
	assert_int_equal(breaker_request(ps, st, a4, sha, T0 + 2, &bt), 0);
	assert_int_equal(breaker_request(ps, st, a2, sha, T0 + 2, &bt), 1);
	assert_string_equal(bt.bt_match[TAG_INTENT], "summarise");
	breaker_trip_clear(&bt);
	assert_int_equal(breaker_request(ps, st, a3, sha, T0 + 2, &bt), 1);
	assert_string_equal(bt.bt_match[TAG_TENANT], "globex");
	breaker_trip_clear(&bt);
	assert_int_equal(breaker_request(ps, st, a1, sha, T0 + 2, &bt), 1);
	breaker_trip_clear(&bt);

	/* No intent: the agent class is the scope, and what the kill names. */
	attrs(a1, NULL, "researcher", "acme");
	for (i = 0; i < 2; i++)
		assert_int_equal(
		    breaker_request(ps, st, a1, sha, T0 + i, &bt), 0);
	assert_int_equal(breaker_request(ps, st, a1, sha, T0 + 2, &bt), 1);
	assert_null(bt.bt_match[TAG_INTENT]);
	assert_string_equal(bt.bt_match[TAG_AGENT_CLASS], "researcher");
	breaker_trip_clear(&bt);
	breaker_state_free(st);
	policy_free(ps);
}

static void
test_loop_bounded(void **state)
{
	struct policyset *ps = load_ok(LOOP_YAML);
	struct breaker_state *st = breaker_state_new();
	struct breaker_trip bt;
	const char *attr[POLICY_ATTR_MAX];
	unsigned char sha[32];
	char tenant[32];
	int i;

	(void)state;
	attrs(attr, "triage", NULL, "acme");
	/* A body seen twice, then BREAKER_LOOP_DIGESTS other bodies... */
	sha_of(sha, 1000);
	assert_int_equal(breaker_request(ps, st, attr, sha, T0, &bt), 0);
	assert_int_equal(breaker_request(ps, st, attr, sha, T0 + 1, &bt), 0);
	for (i = 0; i < BREAKER_LOOP_DIGESTS; i++) {
		sha_of(sha, i);
		assert_int_equal(
		    breaker_request(ps, st, attr, sha, T0 + 2 + i, &bt), 0);
	}
	/* ...evict it: its third sighting counts as its first. */
	sha_of(sha, 1000);
	assert_int_equal(breaker_request(ps, st, attr, sha, T0 + 100, &bt), 0);
	assert_int_equal(breaker_request(ps, st, attr, sha, T0 + 101, &bt), 0);
	assert_int_equal(breaker_request(ps, st, attr, sha, T0 + 102, &bt), 1);
	breaker_trip_clear(&bt);

	/* Loop scopes are capped at half the scopes, the least recently
	 * touched dropped first. */
	for (i = 0; i < BREAKER_SCOPES_MAX + 50; i++) {
		snprintf(tenant, sizeof(tenant), "t%d", i);
		attr[TAG_TENANT] = tenant;
		assert_int_equal(
		    breaker_request(ps, st, attr, sha, T0 + 200, &bt), 0);
	}
	assert_int_equal(breaker_count(st), BREAKER_SCOPES_MAX / 2);
	/* Nothing counts 10 s later: gc drops them all. */
	assert_int_equal(breaker_gc(st, T0 + 199 + 10 * SEC), 0);
	assert_int_equal(
	    breaker_gc(st, T0 + 200 + 10 * SEC), BREAKER_SCOPES_MAX / 2);
	assert_int_equal(breaker_count(st), 0);
	breaker_state_free(st);
	policy_free(ps);
}

static void
test_velocity(void **state)
{
	struct policyset *ps =
	    load_ok("- name: burn\n"
		    "  match: { agent_class: researcher }\n"
		    "  breakers: { velocity: { usd_per_minute: 2.50, kill_for: "
		    "10m } }\n");
	struct breaker_state *st = breaker_state_new();
	struct breaker_trip bt[4];
	const char *attr[POLICY_ATTR_MAX], *other[POLICY_ATTR_MAX];
	int i;

	(void)state;
	attrs(attr, "triage", "researcher", "acme");
	attrs(other, "triage", "writer", "acme");
	/* $0.50 every 12 s: $2.50 in any minute is not above $2.50. */
	for (i = 0; i < 25; i++)
		assert_int_equal(breaker_settle(ps, st, attr, 50 * CENT, 0,
				     T0 + i * 12 * SEC, bt, 4),
		    0);
	/* The other class spends too, but is not this policy's. */
	assert_int_equal(
	    breaker_settle(ps, st, other, 100 * USD, 0, T0 + 295 * SEC, bt, 4),
	    0);
	/* One nano-dollar more within the minute: above it. */
	assert_int_equal(
	    breaker_settle(ps, st, attr, 1, 0, T0 + 295 * SEC, bt, 4), 1);
	assert_string_equal(bt[0].bt_kind, "velocity");
	assert_string_equal(bt[0].bt_match[TAG_AGENT_CLASS], "researcher");
	assert_null(bt[0].bt_match[TAG_INTENT]);
	assert_int_equal(bt[0].bt_kill_ms, 10 * MIN);
	assert_non_null(strstr(bt[0].bt_evidence, "$2.500000001 settled"));
	assert_non_null(strstr(bt[0].bt_evidence, "limit: $2.50 per minute"));
	breaker_trip_clear(&bt[0]);
	/* Quiet for kill_for, then trips again on a new burst. */
	assert_int_equal(
	    breaker_settle(ps, st, attr, 10 * USD, 0, T0 + 300 * SEC, bt, 4),
	    0);
	assert_int_equal(breaker_settle(ps, st, attr, 3 * USD, 0,
			     T0 + 295 * SEC + 10 * MIN, bt, 4),
	    1);
	breaker_trip_clear(&bt[0]);
	/* max 0: counted, never reported. */
	assert_int_equal(breaker_settle(ps, st, attr, 3 * USD, 0,
			     T0 + 295 * SEC + 30 * MIN, bt, 0),
	    0);
	breaker_state_free(st);
	policy_free(ps);
}

static void
test_error_spike(void **state)
{
	struct policyset *ps = load_ok(
	    "- name: errs\n"
	    "  match: { team: core }\n"
	    "  per: [tenant]\n"
	    "  breakers:\n"
	    "    error_spike: { ratio: 0.5, min_spend_usd: 1, window: 5m,\n"
	    "                   min_calls: 10, kill_for: 10m }\n");
	struct breaker_state *st = breaker_state_new();
	struct breaker_trip bt[2];
	const char *attr[POLICY_ATTR_MAX];
	int64_t t = T0;
	int i;

	(void)state;
	attrs(attr, NULL, NULL, "acme");
	/* Nine errors, $0.20 each: the ratio is 1 but min_calls is 10. */
	for (i = 0; i < 9; i++)
		assert_int_equal(
		    breaker_settle(ps, st, attr, 20 * CENT, 1, t += SEC, bt, 2),
		    0);
	/* A tenth call, a success: 9 of 10 and $1.80 spent: trips. */
	assert_int_equal(
	    breaker_settle(ps, st, attr, 0, 0, t += SEC, bt, 2), 1);
	assert_string_equal(bt[0].bt_kind, "error_spike");
	assert_string_equal(bt[0].bt_match[TAG_TEAM], "core");
	assert_string_equal(bt[0].bt_match[TAG_TENANT], "acme");
	assert_non_null(strstr(bt[0].bt_evidence, "9 of 10 calls failed"));
	assert_non_null(strstr(bt[0].bt_evidence, "$1.80 spent"));
	breaker_trip_clear(&bt[0]);

	/* Another tenant: 10 calls, 5 errors (ratio reached) but $0.90. */
	attr[TAG_TENANT] = "globex";
	for (i = 0; i < 10; i++)
		assert_int_equal(
		    breaker_settle(ps, st, attr, 9 * CENT, i % 2, t + i, bt, 2),
		    0);
	/* $0.10 more, a success: $1.00 spent, but 5 of 11 is below 0.5. */
	assert_int_equal(
	    breaker_settle(ps, st, attr, 10 * CENT, 0, t + 10, bt, 2), 0);
	/* One more error: 6 of 12 reaches it. */
	assert_int_equal(breaker_settle(ps, st, attr, 0, 1, t + 11, bt, 2), 1);
	breaker_trip_clear(&bt[0]);

	/* A third tenant whose errors spread out beyond the window. */
	attr[TAG_TENANT] = "initech";
	for (i = 0; i < 20; i++)
		assert_int_equal(breaker_settle(ps, st, attr, 50 * CENT, 1,
				     t + i * 35 * SEC, bt, 2),
		    0);
	breaker_state_free(st);
	policy_free(ps);
}

static void
test_everything_and_shadow(void **state)
{
	struct policyset *ps = load_ok(
	    "- name: all\n"
	    "  shadow: true\n"
	    "  breakers: { velocity: { usd_per_minute: 0, kill_for: 1m } }\n");
	struct breaker_state *st = breaker_state_new();
	struct breaker_trip bt;
	const char *attr[POLICY_ATTR_MAX];
	int a;

	(void)state;
	attrs(attr, NULL, NULL, NULL);
	assert_int_equal(breaker_settle(ps, st, attr, 0, 0, T0, &bt, 1), 0);
	assert_int_equal(breaker_settle(ps, st, attr, 1, 0, T0, &bt, 1), 1);
	assert_true(bt.bt_shadow);
	/* A policy matching everything kills on team "*", never on {}. */
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		if (a != TAG_TEAM)
			assert_null(bt.bt_match[a]);
	assert_string_equal(bt.bt_match[TAG_TEAM], "*");
	breaker_trip_clear(&bt);
	breaker_state_free(st);
	policy_free(ps);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_duration),
	    cmocka_unit_test(test_loop_trips_on_nth),
	    cmocka_unit_test(test_loop_outside_window),
	    cmocka_unit_test(test_loop_scopes),
	    cmocka_unit_test(test_loop_bounded),
	    cmocka_unit_test(test_velocity),
	    cmocka_unit_test(test_error_spike),
	    cmocka_unit_test(test_everything_and_shadow),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
