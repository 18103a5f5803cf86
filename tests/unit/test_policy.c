/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy core, its static half: the policies: parser on YAML text
 * (every error with its line and column), exact dollars, globs, scope
 * keys, calendar and rolling windows, and the rebuild of counters from a
 * real ledger written by ledger_record. The admission algebra is in
 * test_policy_admit.c.
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
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/config.h"
#include "tollgate/ledger.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "tollgate/yaml.h"

#include "policytest.h"
#include "tmptree.h"

static void
test_parse_full(void **state)
{
	struct policyset *ps;
	const struct policy *po;

	(void)state;
	ps = load_ok("- name: researcher-daily\n"
		     "  match: { agent_class: researcher, model: 'gpt-4o*',"
		     " team: '*' }\n"
		     "  per: [tenant, team]\n"
		     "  window: day\n"
		     "  hard_cap_usd: 50\n"
		     "  alert_at_percent: [80, 50.5]\n"
		     "  rate_limit: { requests_per_minute: 60,"
		     " tokens_per_minute: 200000, concurrent: 8 }\n"
		     "  models: { allow: ['gpt-*'], deny: [gpt-4o-mini] }\n"
		     "  max_output_tokens: 4096\n"
		     "  default_output_tokens: 1024\n"
		     "  clamp: { min_output_tokens: 64 }\n"
		     "  shadow: true\n"
		     "- name: frozen\n"
		     "  killed: true\n"
		     "  kill_reason: runaway loop\n"
		     "- name: soft\n"
		     "  window: 24h\n"
		     "  alert_at_usd: 0.000000001\n");
	assert_int_equal(ps->ps_n, 3);
	po = &ps->ps_pol[0];
	assert_string_equal(po->po_name, "researcher-daily");
	assert_string_equal(po->po_match[TAG_AGENT_CLASS], "researcher");
	assert_string_equal(po->po_match[POLICY_ATTR_MODEL], "gpt-4o*");
	assert_null(po->po_match[TAG_TEAM]); /* "*" is no restriction */
	assert_true(po->po_per[TAG_TENANT] && po->po_per[TAG_TEAM]);
	assert_false(po->po_per[TAG_INTENT]);
	assert_int_equal(po->po_window.pw_kind, POLICY_WIN_DAY);
	assert_int_equal(po->po_cap_nusd, 50 * USD);
	assert_int_equal(po->po_nalerts, 2);
	assert_int_equal(po->po_alerts[0], 25250000000LL); /* 50.5 % */
	assert_int_equal(po->po_alerts[1], 40 * USD);
	assert_int_equal(po->po_rpm, 60);
	assert_int_equal(po->po_tpm, 200000);
	assert_int_equal(po->po_concurrent, 8);
	assert_int_equal(po->po_nallow, 1);
	assert_string_equal(po->po_deny[0], "gpt-4o-mini");
	assert_int_equal(po->po_max_output, 4096);
	assert_int_equal(po->po_default_output, 1024);
	assert_int_equal(po->po_clamp_min, 64);
	assert_true(po->po_shadow);
	assert_false(po->po_killed);
	po = &ps->ps_pol[1];
	assert_true(po->po_killed);
	assert_string_equal(po->po_kill_reason, "runaway loop");
	assert_int_equal(po->po_cap_nusd, -1);
	assert_int_equal(po->po_clamp_min, -1);
	po = &ps->ps_pol[2];
	assert_int_equal(po->po_window.pw_kind, POLICY_WIN_ROLLING);
	assert_int_equal(po->po_window.pw_len_ms, 86400000);
	assert_int_equal(po->po_alerts[0], 1);
	policy_free(ps);
	ps = load_ok("");
	assert_int_equal(ps->ps_n, 0);
	policy_free(ps);
}

static const struct {
	const char *yaml, *error;
} bad[] = {
    {"name: a\n", "t.yaml:1:1: policies: expected a list of policies"},
    {"- 3\n", "t.yaml:1:3: policies[0]: expected a mapping"},
    {"- window: day\n", "t.yaml:1:3: policies[0]: missing required key 'name'"},
    {"- name: a\n  colour: red\n",
	"t.yaml:2:3: unknown key 'colour' in policies[0]"},
    {"- name: 'a b'\n", "t.yaml:1:9: policies[0].name: expected 1 to 64"},
    {"- name: a\n- name: a\n",
	"t.yaml:2:3: policies[1] (a): duplicate policy name (first at line "
	"1)"},
    {"- name: a\n  match: { colour: red }\n",
	"t.yaml:2:12: policies[0].match: unknown attribute 'colour'"},
    {"- name: a\n  match: { team: [a] }\n",
	"t.yaml:2:18: policies[0].match.team: expected a glob pattern"},
    {"- name: a\n  match: [team]\n",
	"t.yaml:2:10: policies[0].match: expected a mapping of"},
    {"- name: a\n  per: [colour]\n",
	"t.yaml:2:9: policies[0].per: unknown tag 'colour'"},
    {"- name: a\n  window: fortnight\n",
	"t.yaml:2:11: policies[0].window: expected day, week, month"},
    {"- name: a\n  window: 0h\n", "t.yaml:2:11: policies[0].window:"},
    {"- name: a\n  window: 367d\n", "t.yaml:2:11: policies[0].window:"},
    {"- name: a\n  window: 90s\n", "t.yaml:2:11: policies[0].window:"},
    {"- name: a\n  window: day\n  hard_cap_usd: 1.0000000001\n",
	"t.yaml:3:17: policies[0].hard_cap_usd: expected an amount in USD"},
    {"- name: a\n  window: day\n  hard_cap_usd: -5\n",
	"t.yaml:3:17: policies[0].hard_cap_usd: expected an amount"},
    {"- name: a\n  window: day\n  hard_cap_usd: '5'\n",
	"t.yaml:3:17: policies[0].hard_cap_usd: expected an amount"},
    {"- name: a\n  window: day\n  hard_cap_usd: 1e3\n",
	"t.yaml:3:17: policies[0].hard_cap_usd: expected an amount"},
    {"- name: a\n  hard_cap_usd: 5\n",
	"t.yaml:1:3: policies[0] (a): a budget needs a window"},
    {"- name: a\n  window: day\n  alert_at_percent: 80\n",
	"t.yaml:1:3: policies[0] (a): alert_at_percent needs hard_cap_usd"},
    {"- name: a\n  window: day\n  hard_cap_usd: 5\n  alert_at_percent: "
     "100.5\n",
	"t.yaml:4:21: policies[0].alert_at_percent: expected a percentage"},
    {"- name: a\n  window: day\n  hard_cap_usd: 5\n  alert_at_percent: "
     "[80, 80]\n",
	"t.yaml:4:26: policies[0].alert_at_percent[1]: repeated threshold"},
    {"- name: a\n  window: day\n  hard_cap_usd: 5\n  alert_at_usd: 4\n"
     "  alert_at_percent: 80\n",
	"t.yaml:1:3: policies[0] (a): alert_at_usd and alert_at_percent are "
	"exclusive"},
    {"- name: a\n  window: day\n  hard_cap_usd: 5\n  alert_at_usd: [4, "
     "6]\n",
	"t.yaml:1:3: policies[0] (a): alert_at_usd above hard_cap_usd"},
    {"- name: a\n  rate_limit: { requests_per_minute: many }\n",
	"t.yaml:2:38: policies[0].rate_limit.requests_per_minute: expected "
	"an integer"},
    {"- name: a\n  rate_limit: { concurrent: 0 }\n",
	"t.yaml:2:29: policies[0].rate_limit.concurrent: must be between 1"},
    {"- name: a\n  rate_limit: { burst: 3 }\n",
	"t.yaml:2:17: unknown key 'burst' in policies[0].rate_limit"},
    {"- name: a\n  models: { allow: gpt-4o }\n",
	"t.yaml:2:20: policies[0].models.allow: expected a list of model"},
    {"- name: a\n  max_output_tokens: 100\n  default_output_tokens: 200\n",
	"t.yaml:1:3: policies[0] (a): default_output_tokens is above "
	"max_output_tokens"},
    {"- name: a\n  clamp: { min_output_tokens: 10 }\n",
	"t.yaml:1:3: policies[0] (a): clamp needs hard_cap_usd"},
    {"- name: a\n  window: day\n  hard_cap_usd: 1\n  clamp: {}\n",
	"t.yaml:4:10: policies[0].clamp: missing required key "
	"'min_output_tokens'"},
    {"- name: a\n  shadow: yes\n",
	"t.yaml:2:11: policies[0].shadow: expected true or false"},
    {"- name: a\n  kill_reason: because\n",
	"t.yaml:1:3: policies[0] (a): kill_reason without killed: true"},
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
test_usd(void **state)
{
	static const struct {
		const char *s;
		int64_t want; /* -1: refused */
	} cases[] = {
	    {"50", 50 * USD},
	    {"0.30", 300000000},
	    {"1.000000001", 1000000001},
	    {"0.0000000010", 1},
	    {"0.00000000011", -1},
	    {"0", 0},
	    {"1000000000", 1000000000 * USD},
	    {"1000000000.000000001", -1},
	    {"1000000001", -1},
	    {".5", -1},
	    {"5.", -1},
	    {"", -1},
	    {"1e3", -1},
	    {"+1", -1},
	    {"1 ", -1},
	};
	int64_t v;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		v = -1;
		if (policy_parse_usd(cases[i].s, &v) == -1)
			v = -1;
		if (v != cases[i].want)
			fail_msg("%s: got %lld", cases[i].s, (long long)v);
	}
}

static void
test_glob(void **state)
{
	static const struct {
		const char *p, *s;
		int want;
	} cases[] = {
	    {"gpt-4o", "gpt-4o", 1},
	    {"gpt-4o", "gpt-4o-mini", 0},
	    {"gpt-4o*", "gpt-4o-mini", 1},
	    {"gpt-4o*", "gpt-4", 0},
	    {"*", "", 1},
	    {"?", "", 0},
	    {"claude-?-*", "claude-3-opus", 1},
	    {"*-mini", "gpt-4o-mini", 1},
	    {"*a*b*c", "xaxxbyyc", 1},
	    {"*a*b*c", "xaxxbyyca", 0},
	    {"a**", "a", 1},
	    {"", "", 1},
	    {"res*er", "researcher", 1},
	};
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++)
		if (policy_glob(cases[i].p, cases[i].s) != cases[i].want)
			fail_msg("%s ~ %s", cases[i].p, cases[i].s);
}

/* The scope key of the first policy of yaml for a support/acme call. */
static char *
key_of(const char *yaml, const char *tenant)
{
	const char *attr[POLICY_ATTR_MAX] = {NULL};
	struct policyset *ps = load_ok(yaml);
	char *key;

	attr[TAG_TEAM] = "support";
	attr[TAG_TENANT] = tenant;
	attr[POLICY_ATTR_MODEL] = "gpt-4o";
	key = policy_scope_key(&ps->ps_pol[0], attr);
	policy_free(ps);
	return (key);
}

static void
test_scope_keys(void **state)
{
	char *a, *b;

	(void)state;
	a = key_of("- name: one\n  match: {team: support}\n  per: [tenant]\n"
		   "  window: day\n  hard_cap_usd: 5\n",
	    "acme");
	assert_string_equal(
	    a, "match{team=support}per{tenant=acme}window{day}");
	/* Renamed, new cap, alerts added, shadow: the same budget. */
	b = key_of("- name: two\n  match: {team: support, tenant: '*'}\n"
		   "  per: [tenant]\n  window: day\n  hard_cap_usd: 9\n"
		   "  alert_at_usd: 1\n  shadow: true\n",
	    "acme");
	assert_string_equal(a, b);
	free(b);
	/* Another per, window or match: another budget. */
	b = key_of("- name: one\n  match: {team: support}\n  per: [team]\n"
		   "  window: day\n  hard_cap_usd: 5\n",
	    "acme");
	assert_string_not_equal(a, b);
	free(b);
	b = key_of("- name: one\n  match: {team: support}\n  per: [tenant]\n"
		   "  window: week\n  hard_cap_usd: 5\n",
	    "acme");
	assert_string_not_equal(a, b);
	free(b);
	b = key_of("- name: one\n  match: {team: supp*}\n  per: [tenant]\n"
		   "  window: day\n  hard_cap_usd: 5\n",
	    "acme");
	assert_string_not_equal(a, b);
	free(b);
	free(a);
	/* 24h, 1d and 1440m are one window; unset and odd values. */
	a = key_of("- name: r\n  window: 24h\n  per: [tenant]\n", NULL);
	b = key_of("- name: s\n  window: 1440m\n  per: [tenant]\n", NULL);
	assert_string_equal(a, b);
	assert_string_equal(a, "match{}per{tenant=}window{rolling:1440m}");
	free(b);
	b = key_of("- name: r\n  window: 1d\n  per: [tenant]\n", "a,b}");
	assert_string_equal(
	    b, "match{}per{tenant=a%2Cb%7D}window{rolling:1440m}");
	free(b);
	free(a);
}

/* A cJSON tree printed, freed; the text is the caller's. */
static char *
printed(cJSON *o)
{
	char *s;

	assert_non_null(o);
	assert_non_null(s = cJSON_PrintUnformatted(o));
	cJSON_Delete(o);
	return (s);
}

/*
 * A budget known only by its key shows the scope GET /v1/budgets shows:
 * policy_scope_key_json of a policy's key is policy_scope_json of the
 * policy, escaped bytes, empty per values and match-and-per tags
 * included; what is not such a key has none.
 */
static void
test_scope_from_key(void **state)
{
	static const struct {
		const char *yaml;
		const char *team, *tenant;
		const char *json;
	} cases[] = {
	    {"match: {team: support, model: 'gpt-4o*'}\n  per: [tenant]",
		"support", "acme",
		"{\"team\":\"support\",\"tenant\":\"acme\","
		"\"model\":\"gpt-4o*\"}"},
	    {"per: [intent, tenant]", "x", NULL,
		"{\"intent\":\"inv-1\",\"tenant\":\"\"}"},
	    {"match: {tenant: 'a*'}\n  per: [tenant]", "x", "a,b}=%@ c",
		"{\"tenant\":\"a,b}=%@ c\"}"},
	    {"match: {agent_class: 'r{e}s,e=a%r@ch'}", "x", "y",
		"{\"agent_class\":\"r{e}s,e=a%r@ch\"}"},
	    {"alert_at_usd: 1", "x", "y", "{}"},
	};
	static const char *notkeys[] = {"", "match{", "match{}per{}",
	    "match{}per{tenant=a}", "per{}match{}window{day}",
	    "match{bogus=1}per{}window{day}",
	    "match{team=a,team=b}per{}window{day}",
	    "match{}per{model=x}window{day}", "match{team=a%2}per{}window{day}",
	    "match{team=a%00}per{}window{day}", "match{team}per{}window{day}",
	    "match{tenant=%FF%FE}per{}window{day}",
	    "match{}per{tenant=a%1Bb}window{day}"};
	const char *attr[POLICY_ATTR_MAX] = {NULL};
	struct policyset *ps;
	char yaml[256], *key, *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		snprintf(yaml, sizeof(yaml),
		    "- name: p\n  %s\n  window: day\n  hard_cap_usd: 5\n",
		    cases[i].yaml);
		ps = load_ok(yaml);
		attr[TAG_INTENT] = "inv-1";
		attr[TAG_TEAM] = cases[i].team;
		attr[TAG_TENANT] = cases[i].tenant;
		attr[POLICY_ATTR_MODEL] = "gpt-4o-mini";
		key = policy_scope_key(&ps->ps_pol[0], attr);
		a = printed(policy_scope_key_json(key));
		b = printed(policy_scope_json(&ps->ps_pol[0], attr));
		assert_string_equal(a, b);
		assert_string_equal(a, cases[i].json);
		free(a);
		free(b);
		/* A budget key (a window's start after the '@') too. */
		xasprintf(&a, "%s@%lld", key, (long long)T0);
		free(key);
		key = a;
		a = printed(policy_scope_key_json(key));
		assert_string_equal(a, cases[i].json);
		free(a);
		free(key);
		policy_free(ps);
	}
	assert_null(policy_scope_key_json(NULL));
	for (i = 0; i < nitems(notkeys); i++)
		if (policy_scope_key_json(notkeys[i]) != NULL)
			fail_msg("a scope from '%s'", notkeys[i]);
}

static const struct {
	const char *window;
	int64_t now, start, reset;
} windows[] = {
    {"day", 1, 0, 86400000},
    {"day", -1, -86400000, 0},
    {"week", 0, -3 * 86400000LL, 4 * 86400000LL}, /* a Thursday */
    {"total", 12345, 0, POLICY_NEVER},
    {"1h", 3599999, -60000, 3600000},
    {"7d", 0, -7 * 86400000LL, 10080000},
};

/* Calendar windows in a configured zone, across a DST change. */
static void
test_windows_local_zone(void **state)
{
	struct policy_window w = {POLICY_WIN_DAY, 0};
	int64_t s, r;

	(void)state;
	setenv("TZ", "Europe/Berlin", 1);
	tzset();
	policy_set_local_zone(1);
	/* 2026-03-29 has 23 hours in Berlin: CET to CEST at 02:00. */
	policy_window_at(&w, utc(2026, 3, 29, 12, 0, 0), &s, &r);
	assert_int_equal(s, utc(2026, 3, 28, 23, 0, 0));
	assert_int_equal(r, utc(2026, 3, 29, 22, 0, 0));
	w.pw_kind = POLICY_WIN_WEEK; /* Monday 2026-03-23, CET */
	policy_window_at(&w, utc(2026, 3, 29, 12, 0, 0), &s, &r);
	assert_int_equal(s, utc(2026, 3, 22, 23, 0, 0));
	assert_int_equal(r, utc(2026, 3, 29, 22, 0, 0));
	w.pw_kind = POLICY_WIN_MONTH;
	policy_window_at(&w, utc(2026, 10, 31, 23, 30, 0), &s, &r);
	assert_int_equal(s, utc(2026, 10, 31, 23, 0, 0)); /* Nov 1, CET */
	assert_int_equal(r, utc(2026, 11, 30, 23, 0, 0));
	w.pw_kind = POLICY_WIN_TOTAL; /* unaffected */
	policy_window_at(&w, utc(2026, 3, 29, 12, 0, 0), &s, &r);
	assert_int_equal(s, 0);
	policy_set_local_zone(0);
	unsetenv("TZ");
	tzset();
}

static void
test_windows(void **state)
{
	struct policy_window w;
	int64_t s, r;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(windows); i++) {
		assert_int_equal(policy_parse_window(windows[i].window, &w), 0);
		policy_window_at(&w, windows[i].now, &s, &r);
		assert_int_equal(s, windows[i].start);
		assert_int_equal(r, windows[i].reset);
	}
	/* Year end, leap days, ISO weeks over a year boundary. */
	policy_parse_window("day", &w);
	policy_window_at(&w, utc(2026, 12, 31, 23, 59, 59) + 999, &s, &r);
	assert_int_equal(s, utc(2026, 12, 31, 0, 0, 0));
	assert_int_equal(r, utc(2027, 1, 1, 0, 0, 0));
	policy_window_at(&w, utc(2028, 2, 29, 12, 0, 0), &s, &r);
	assert_int_equal(s, utc(2028, 2, 29, 0, 0, 0));
	assert_int_equal(r, utc(2028, 3, 1, 0, 0, 0));
	policy_parse_window("month", &w);
	policy_window_at(&w, utc(2026, 12, 15, 0, 0, 0), &s, &r);
	assert_int_equal(s, utc(2026, 12, 1, 0, 0, 0));
	assert_int_equal(r, utc(2027, 1, 1, 0, 0, 0));
	policy_window_at(&w, utc(2028, 2, 29, 23, 0, 0), &s, &r);
	assert_int_equal(s, utc(2028, 2, 1, 0, 0, 0));
	assert_int_equal(r, utc(2028, 3, 1, 0, 0, 0));
	policy_window_at(&w, utc(2100, 2, 28, 23, 0, 0), &s, &r);
	assert_int_equal(r, utc(2100, 3, 1, 0, 0, 0)); /* 2100: no leap */
	policy_window_at(&w, utc(2000, 2, 29, 0, 0, 0), &s, &r);
	assert_int_equal(s, utc(2000, 2, 1, 0, 0, 0));
	policy_window_at(&w, utc(2026, 1, 31, 23, 59, 59) + 999, &s, &r);
	assert_int_equal(r, utc(2026, 2, 1, 0, 0, 0));
	policy_window_at(&w, utc(2026, 2, 1, 0, 0, 0), &s, &r);
	assert_int_equal(s, utc(2026, 2, 1, 0, 0, 0));
	policy_parse_window("week", &w);
	/* Saturday 2026-11-28: the week of Monday 23 November. */
	policy_window_at(&w, utc(2026, 11, 28, 16, 0, 0), &s, &r);
	assert_int_equal(s, utc(2026, 11, 23, 0, 0, 0));
	assert_int_equal(r, utc(2026, 11, 30, 0, 0, 0));
	/* Friday 2027-01-01 is in ISO week 2026-W53, from 28 December. */
	policy_window_at(&w, utc(2027, 1, 1, 0, 0, 0), &s, &r);
	assert_int_equal(s, utc(2026, 12, 28, 0, 0, 0));
	assert_int_equal(r, utc(2027, 1, 4, 0, 0, 0));
	/* Sunday's last ms, then Monday's first. */
	policy_window_at(&w, utc(2026, 11, 29, 23, 59, 59) + 999, &s, &r);
	assert_int_equal(s, utc(2026, 11, 23, 0, 0, 0));
	policy_window_at(&w, utc(2026, 11, 30, 0, 0, 0), &s, &r);
	assert_int_equal(s, utc(2026, 11, 30, 0, 0, 0));
	/* Leap day inside a week. */
	policy_window_at(&w, utc(2028, 2, 29, 0, 0, 0), &s, &r);
	assert_int_equal(s, utc(2028, 2, 28, 0, 0, 0));
	assert_int_equal(r, utc(2028, 3, 6, 0, 0, 0));
}

/* One row for the rebuild ledger. */
static void
row(const char *id, int64_t started, const char *team, const char *tenant,
    enum call_status st, int64_t cost)
{
	struct ledger_row r;

	memset(&r, 0, sizeof(r));
	r.lr_id = id;
	r.lr_started_ms = started;
	r.lr_finished_ms = started + 1000;
	r.lr_provider = "openai";
	r.lr_endpoint = "chat_completions";
	r.lr_upstream = "openai";
	r.lr_model = "gpt-4o";
	r.lr_tags[TAG_TEAM] = team;
	r.lr_tags[TAG_TENANT] = tenant;
	r.lr_status = st;
	r.lr_usage_source = USAGE_REPORTED;
	r.lr_cost_nusd = cost;
	r.lr_reserved_nusd = cost + 7;
	r.lr_price_version = "test";
	r.lr_latency_ms = 1000;
	r.lr_ttfb_ms = -1;
	assert_int_equal(ledger_record(&r), 0);
}

static void
test_rebuild(void **state)
{
	struct event_base *base;
	struct policyset *ps;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_call c = mkcall("support", "acme", "gpt-4o", 0);
	struct policy_call g = mkcall("support", "globex", "gpt-4o", 0);
	char dir[] = "/tmp/tg-policy-XXXXXX", path[64], *cause = NULL;
	int64_t day = utc(2026, 11, 28, 0, 0, 0);
	sqlite3 *db;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ledger.db", dir);
	assert_non_null(base = event_base_new());
	assert_int_equal(
	    ledger_open(base, path, DURABILITY_PROCESS, 1000, &cause), 0);
	row("a1", day + 3600000, "support", "acme", CALL_OK, USD);
	row("a2", day - 1, "support", "acme", CALL_OK, 5 * USD); /* Friday */
	row("a3", day + 7200000, "support", "acme", CALL_ERROR, 2 * CENT);
	row("a4", day + 7200000, "support", "acme", CALL_REFUSED, 0);
	row("a6", day + 9000000, "support", "acme", CALL_INTERRUPTED, 1);
	row("g1", day + 1, "support", "globex", CALL_OK, 2 * USD);
	row("r1", day + 1, "research", "acme", CALL_OK, 7 * USD);
	row("f1", T0 + 1000, "support", "acme", CALL_OK, 9 * USD); /* future */
	ledger_close();
	event_base_free(base);
	assert_non_null(db = spend_open(path, &cause));

	ps = load_ok("- name: day\n  match: {team: support}\n  per: [tenant]\n"
		     "  window: day\n  hard_cap_usd: 10\n"
		     "- name: roll\n  match: {team: supp*}\n  window: 24h\n"
		     "  hard_cap_usd: 100\n"
		     "- name: ever\n  window: total\n  alert_at_usd: 1\n"
		     "- name: rate\n  rate_limit: {concurrent: 1}\n");
	pc = policy_counters_new();
	assert_int_equal(policy_rebuild(pc, ps, db, NULL, T0, &cause), 0);
	budget_is(ps, 0, pc, &c, T0, USD + 2 * CENT + 1, 0);
	budget_is(ps, 0, pc, &g, T0, 2 * USD, 0);
	/* The rolling 24h reaches back into Friday. */
	budget_is(ps, 1, pc, &c, T0, 8 * USD + 2 * CENT + 1, 0);
	budget_is(ps, 2, pc, &c, T0, 15 * USD + 2 * CENT + 1, 0);
	/* A second rebuild (a reload) never counts a live scope twice. */
	assert_int_equal(policy_rebuild(pc, ps, db, NULL, T0, &cause), 0);
	budget_is(ps, 0, pc, &c, T0, USD + 2 * CENT + 1, 0);
	/* What is left of acme's $10 today: $8.98 less one nano. */
	c.pc_unpriced_nusd = 10 * USD - (USD + 2 * CENT + 1);
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_ALLOW);
	c.pc_unpriced_nusd = 1;
	policy_release(pd.pd_res, T0);
	c.pc_unpriced_nusd = 10 * USD;
	policy_admit(ps, pc, &c, T0, &pd);
	assert_int_equal(pd.pd_verdict, POLICY_REFUSE);
	assert_int_equal(pd.pd_reason, POLICY_HARD_CAP);
	policy_counters_free(pc);
	policy_free(ps);
	sqlite3_close(db);
	tmptree_remove(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_full),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_usd),
	    cmocka_unit_test(test_glob),
	    cmocka_unit_test(test_scope_keys),
	    cmocka_unit_test(test_scope_from_key),
	    cmocka_unit_test(test_windows),
	    cmocka_unit_test(test_windows_local_zone),
	    cmocka_unit_test(test_rebuild),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
