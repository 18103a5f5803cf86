/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for src/routing/ and the routing: section of the config: a
 * table of named config cases (each a YAML text that either loads, with
 * its rules checked, or fails with exactly the listed errors, "line:col:
 * message"), then the matcher: globs, absent attributes, first match
 * wins, the budget condition asked at most once, Azure calls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tollgate/config.h"
#include "tollgate/route.h"
#include "tollgate/routing.h"
#include "tollgate/util.h"

#include "cfgfile.h"

#define MAX_ERRORS 8

#define UPSTREAMS                                                              \
	"upstreams:\n"                                                         \
	"  openai: { type: openai, base_url: \"http://127.0.0.1:1\" }\n"       \
	"  local: { type: openai_compatible, base_url: "                       \
	"\"http://127.0.0.1:2\" "                                              \
	"}\n"                                                                  \
	"  anthropic: { type: anthropic, base_url: \"http://127.0.0.1:3\" }\n" \
	"  gemini: { type: gemini, base_url: \"http://127.0.0.1:4\" }\n"       \
	"  azure: { type: azure_openai, base_url: \"http://127.0.0.1:5\" }\n"

struct rcase {
	const char *name;
	const char *yaml; /* after UPSTREAMS (lines 1 to 6) */
	void (*check)(const struct routingset *);
	const char *errors[MAX_ERRORS]; /* none: the file must load */
};

static void
check_two(const struct routingset *rs)
{
	const struct routing_rule *rr = &rs->rs_rules[0];

	assert_int_equal(rs->rs_n, 2);
	assert_string_equal(rr->rr_name, "small");
	assert_int_equal(rr->rr_line, 8);
	assert_string_equal(rr->rr_match[TAG_AGENT_CLASS], "classifier");
	assert_string_equal(rr->rr_match[ROUTING_ATTR_MODEL], "gpt-4o*");
	assert_null(rr->rr_match[ROUTING_ATTR_UPSTREAM]); /* "*" */
	assert_string_equal(rr->rr_model, "gpt-4o-mini");
	assert_null(rr->rr_upstream);
	assert_int_equal(rr->rr_max_tokens, -1);
	assert_int_equal(rr->rr_below_pct, -1);
	rr = &rs->rs_rules[1];
	assert_string_equal(rr->rr_name, "low");
	assert_string_equal(rr->rr_upstream, "local");
	assert_int_equal(rr->rr_max_tokens, 512);
	assert_int_equal(rr->rr_below_pct, 20);
}

static void
check_none(const struct routingset *rs)
{
	assert_non_null(rs);
	assert_int_equal(rs->rs_n, 0);
}

static void
check_fallback(const struct routingset *rs)
{
	const struct routing_rule *rr = &rs->rs_rules[0];

	assert_int_equal(rs->rs_n, 1);
	assert_int_equal(rr->rr_nfallback, 2);
	assert_string_equal(rr->rr_fallback[0], "openai2");
	assert_string_equal(rr->rr_fallback[1], "openai3");
	assert_null(rr->rr_upstream);
	assert_null(rr->rr_model);
}

static const struct rcase cases[] = {
    {"fallback",
	"  openai2: { type: openai, base_url: \"http://127.0.0.1:6\" }\n"
	"  openai3: { type: openai, base_url: \"http://127.0.0.1:7\" }\n"
	"routing:\n"
	"  - { name: f, match: { upstream: openai }, fallback: [openai2, "
	"openai3] }\n",
	check_fallback, {NULL}},
    {"fallback errors",
	"routing:\n"
	"  - { name: a, match: { upstream: openai }, fallback: [nowhere] }\n"
	"  - { name: b, match: { upstream: openai }, fallback: [openai] }\n"
	"  - { name: c, match: { upstream: openai }, fallback: [azure] }\n"
	"  - { name: d, match: { upstream: openai }, fallback: [anthropic] }\n"
	"  - { name: e, match: { upstream: openai }, fallback: [local, "
	"local] }\n"
	"  - { name: f, fallback: [] }\n",
	NULL,
	{"8:56: routing[0] (a).fallback[0]: no upstream named 'nowhere' is "
	 "configured",
	    "9:56: routing[1] (b).fallback[0]: 'openai' is the upstream the "
	    "rule's calls go to first: a call cannot fail over to itself "
	    "(retry: tries it again)",
	    "10:56: routing[2] (c).fallback[0]: 'azure' is an azure_openai "
	    "upstream, whose path names a deployment and an api-version; "
	    "calls are not translated to it, so it cannot be a fallback",
	    "11:56: routing[3] (d).fallback[0]: the rule's calls can go to "
	    "upstream 'openai' (openai), and 'anthropic' (anthropic) does not "
	    "speak the same API; calls are never translated between APIs",
	    "12:56: routing[4] (e).fallback[0]: the rule's calls can go to "
	    "upstream 'openai' (type openai), and 'local' is of type "
	    "openai_compatible; a fallback must be of the same type, so that "
	    "a call's provider, which policies, kills and rate limits match, "
	    "never changes when it fails over",
	    "12:63: routing[4].fallback[1]: 'local' is listed twice",
	    "13:26: routing[5].fallback: expected a list of 1 to 8 upstream "
	    "names"}},
    {"two rules",
	"routing:\n"
	"  - name: small\n"
	"    match: { agent_class: classifier, model: \"gpt-4o*\", "
	"upstream: \"*\", provider: openai }\n"
	"    model: gpt-4o-mini\n"
	"  - name: low\n"
	"    match: { provider: \"open*\" }\n"
	"    when_budget_below_percent: 20\n"
	"    upstream: local\n"
	"    max_tokens: 512\n",
	check_two, {NULL}},
    {"absent", "", check_none, {NULL}},
    {"empty", "routing: []\n", check_none, {NULL}},
    {"not a list", "routing: { name: x }\n", NULL,
	{"7:10: routing: expected a list of rules"}},
    {"item not a mapping", "routing:\n  - small\n", NULL,
	{"8:5: routing[0]: expected a mapping"}},
    {"no name, no action", "routing:\n  - match: { team: a }\n", NULL,
	{"8:5: routing[0]: missing required key 'name'",
	    "8:5: routing[0]: a rule does nothing without model, upstream, "
	    "max_tokens or fallback"}},
    {"duplicate name",
	"routing:\n"
	"  - { name: a, max_tokens: 7 }\n"
	"  - { name: a, max_tokens: 5 }\n",
	NULL, {"9:5: routing[1] (a): duplicate rule name (first at line 8)"}},
    {"bad percent and bound",
	"routing:\n"
	"  - { name: a, max_tokens: 7, when_budget_below_percent: 0 }\n"
	"  - { name: b, max_tokens: -3 }\n"
	"  - { name: c, max_tokens: 7, when_budget_below_percent: ten }\n",
	NULL,
	{"8:58: routing[0].when_budget_below_percent: must be between 1 "
	 "and 100",
	    "9:28: routing[1].max_tokens: must be between 1 and 2147483647",
	    "10:58: routing[2].when_budget_below_percent: expected an "
	    "integer"}},
    {"bad names",
	"routing:\n"
	"  - { name: \"a b\", model: \"gpt 4o\" }\n"
	"  - { name: c, upstream: \"x/y\", match: { colour: red } }\n",
	NULL,
	{"8:13: routing[0].name: expected 1 to 64 letters, digits, '.', '_' "
	 "or '-'",
	    "8:27: routing[0].model: expected a model name: a letter or "
	    "digit, then letters, digits and '._-:/@+' (at most 127)",
	    "9:26: routing[1].upstream: expected the name of an upstream",
	    "9:42: routing[1].match: unknown attribute 'colour' (expected "
	    "intent, team, tenant, agent_class, environment, model, "
	    "provider, upstream or endpoint)"}},
    {"unknown upstream", "routing:\n  - { name: a, upstream: nowhere }\n", NULL,
	{"8:26: routing[0] (a).upstream: no upstream named 'nowhere' is "
	 "configured"}},
    {"incompatible upstream",
	"routing:\n"
	"  - { name: a, match: { provider: \"open*\" }, upstream: local }\n"
	"  - { name: b, upstream: anthropic }\n"
	"  - { name: c, upstream: azure }\n",
	NULL,
	{"9:26: routing[1] (b).upstream: the rule can take calls for "
	 "upstream 'openai' (openai) and send them to 'anthropic' "
	 "(anthropic), which does not speak the same API; narrow "
	 "match.upstream",
	    "10:26: routing[2] (c).upstream: 'azure' is an azure_openai "
	    "upstream, whose path names a deployment: calls cannot be "
	    "switched to it"}},
    {"gemini path",
	"routing:\n"
	"  - { name: a, match: { upstream: gemini }, model: \"m/x\" }\n"
	"  - { name: b, match: { upstream: openai }, model: \"m/x\" }\n",
	NULL,
	{"8:52: routing[0] (a).model: 'm/x' cannot go in a Gemini path "
	 "(upstream 'gemini'): no ':', '/', '@' or '+'"}},
    {"policy refuses the rewrite",
	"policies:\n"
	"  - name: only-4o\n"
	"    match: { agent_class: bot, provider: openai }\n"
	"    models: { deny: [\"*-mini\"] }\n"
	"routing:\n"
	"  - { name: a, match: { agent_class: bot, provider: openai }, "
	"model: gpt-4o-mini }\n"
	"  - { name: b, match: { agent_class: \"b*\", provider: openai }, "
	"model: gpt-4o-mini }\n"
	"  - { name: c, match: { agent_class: bot, provider: \"open*\" }, "
	"upstream: local, model: gpt-4o-mini }\n"
	"  - { name: d, match: { agent_class: bot, provider: \"open*\" }, "
	"upstream: openai, model: gpt-4o-mini }\n",
	NULL,
	{"12:70: routing[0] (a).model: policy 'only-4o' (line 8) does not "
	 "allow 'gpt-4o-mini' for the calls this rule matches: every call it "
	 "routes would be refused",
	    "15:89: routing[3] (d).model: policy 'only-4o' (line 8) does not "
	    "allow 'gpt-4o-mini' for the calls this rule matches: every call "
	    "it routes would be refused"}},
    {"match values that take nothing",
	"routing:\n"
	"  - { name: a, match: { endpoint: chat }, max_tokens: 5 }\n"
	"  - { name: b, match: { provider: opnai }, max_tokens: 5 }\n"
	"  - { name: c, match: { upstream: \"nowhere*\" }, max_tokens: 5 }\n"
	"  - { name: d, match: { endpoint: \"chat.*\", provider: \"open*\", "
	"upstream: \"o*\" }, max_tokens: 5 }\n",
	NULL,
	{"8:35: routing[0] (a).match.endpoint: 'chat' matches no endpoint a "
	 "metered call has (chat.completions, completions, embeddings, "
	 "responses, messages, generateContent, streamGenerateContent, "
	 "embedContent)",
	    "9:35: routing[1] (b).match.provider: 'opnai' matches no upstream "
	    "type (openai, anthropic, gemini, azure_openai, "
	    "openai_compatible)",
	    "10:35: routing[2] (c).match.upstream: 'nowhere*' matches no "
	    "configured upstream"}},
    {"a model for several APIs",
	"routing:\n"
	"  - { name: a, model: gpt-4o-mini }\n"
	"  - { name: b, match: { upstream: \"*\" }, model: gpt-4o-mini }\n"
	"  - { name: c, match: { provider: \"open*\" }, model: gpt-4o-mini }\n"
	"  - { name: d, match: { upstream: anthropic }, "
	"model: claude-3-5-haiku-20241022 }\n",
	NULL,
	{"8:23: routing[0] (a).model: the rule can take calls for upstream "
	 "'openai' (openai) and for 'anthropic' (anthropic), and a model "
	 "name belongs to one API; narrow match.provider or match.upstream",
	    "9:49: routing[1] (b).model: the rule can take calls for upstream "
	    "'openai' (openai) and for 'anthropic' (anthropic), and a model "
	    "name belongs to one API; narrow match.provider or "
	    "match.upstream"}},
};

/* Every endpoint a metered call can have is one match.endpoint knows. */
static void
test_endpoint_names(void **state)
{
	enum endpoint ep;
	const char *name;

	(void)state;
	for (ep = EP_CHAT; ep <= EP_GEMINI_EMBED; ep++) {
		name = route_endpoint_name(ep);
		if (ep == EP_MODELS || ep == EP_COUNT_TOKENS ||
		    ep == EP_GEMINI_COUNT_TOKENS) {
			assert_false(config_routing_endpoint_known(name));
			continue;
		}
		if (!config_routing_endpoint_known(name))
			fail_msg("endpoint %s is not known to routing", name);
	}
}

static int
run_case(const struct rcase *c)
{
	int bad = 0;

	struct cfgerrs errs = {0};
	struct config *cf;
	char *path, *text, *want;
	size_t i, n;

	xasprintf(&text, "%s%s", UPSTREAMS, c->yaml);
	cf = cfgfile_load(text, &errs, &path);
	for (n = 0; c->errors[n] != NULL; n++)
		;
	if (n == 0) {
		if (cf == NULL) {
			print_message("%s: did not load: %s\n", c->name,
			    errs.ce_n > 0 ? errs.ce_msgs[0] : "?");
			bad = 1;
			goto out;
		}
		if (c->check != NULL)
			c->check(cf->cf_routing);
		config_unref(cf);
	} else {
		assert_null(cf);
		for (i = 0; i < n && i < errs.ce_n; i++) {
			xasprintf(&want, "%s:%s", path, c->errors[i]);
			if (strcmp(errs.ce_msgs[i], want) != 0) {
				print_message("%s: error %zu:\n got  %s\n want "
					      "%s\n",
				    c->name, i, errs.ce_msgs[i], want);
				bad = 1;
			}
			free(want);
		}
		if (errs.ce_n != n) {
			print_message("%s: %zu errors, want %zu (last: %s)\n",
			    c->name, errs.ce_n, n,
			    errs.ce_n > 0 ? errs.ce_msgs[errs.ce_n - 1] : "-");
			bad = 1;
		}
	}
out:
	cfgerrs_free(&errs);
	free(path);
	free(text);
	return (bad);
}

static void
test_config_cases(void **state)
{
	size_t i;
	int bad = 0;

	(void)state;
	for (i = 0; i < nitems(cases); i++)
		bad |= run_case(&cases[i]);
	assert_false(bad);
}

/* A rule set built by hand for the matcher. */
static struct routing_rule rules[3];
static struct routingset set = {rules, 3};
static int headroom_asked;
static int64_t headroom_ppm;

static int64_t
headroom(void *arg)
{
	(void)arg;
	headroom_asked++;
	return (headroom_ppm);
}

static void
rules_reset(void)
{
	memset(rules, 0, sizeof(rules));
	rules[0].rr_name = (char *)(uintptr_t) "narrow";
	rules[0].rr_match[TAG_AGENT_CLASS] = (char *)(uintptr_t) "classifier";
	rules[0].rr_match[ROUTING_ATTR_MODEL] = (char *)(uintptr_t) "gpt-4o*";
	rules[0].rr_model = (char *)(uintptr_t) "gpt-4o-mini";
	rules[0].rr_max_tokens = -1;
	rules[0].rr_below_pct = -1;
	rules[1].rr_name = (char *)(uintptr_t) "low";
	rules[1].rr_below_pct = 20;
	rules[1].rr_max_tokens = 100;
	rules[2].rr_name = (char *)(uintptr_t) "rest";
	rules[2].rr_match[ROUTING_ATTR_ENDPOINT] = (char *)(uintptr_t) "chat";
	rules[2].rr_model = (char *)(uintptr_t) "gpt-4o";
	rules[2].rr_below_pct = -1;
	headroom_asked = 0;
}

static const char *
pick(const char *agent, const char *model, const char *endpoint, int flags)
{
	const char *attr[ROUTING_ATTR_MAX] = {NULL};
	const struct routing_rule *rr;

	attr[TAG_AGENT_CLASS] = agent;
	attr[ROUTING_ATTR_MODEL] = model;
	attr[ROUTING_ATTR_ENDPOINT] = endpoint;
	rr = routing_select(&set, attr, flags, headroom, NULL);
	return (rr != NULL ? rr->rr_name : "-");
}

static void
test_first_match_wins(void **state)
{
	(void)state;
	rules_reset();
	headroom_ppm = 1000000;
	/* Matches narrow and rest: the first wins, the budget not asked. */
	assert_string_equal(pick("classifier", "gpt-4o", "chat", 0), "narrow");
	assert_int_equal(headroom_asked, 0);
	/* Another class: low is looked at (budget full), then rest. */
	assert_string_equal(pick("researcher", "gpt-4o", "chat", 0), "rest");
	assert_int_equal(headroom_asked, 1);
	/* A glob that does not match; no endpoint: nothing. */
	rules_reset();
	assert_string_equal(pick("classifier", "o3", NULL, 0), "-");
	/* An attribute the call lacks matches no rule naming it. */
	assert_string_equal(pick(NULL, "gpt-4o", NULL, 0), "-");
	assert_string_equal(pick("", "gpt-4o", NULL, 0), "-");
}

static void
test_budget_condition(void **state)
{
	(void)state;
	rules_reset();
	/* 19.9999 % left, under 20: low applies. */
	headroom_ppm = 199999;
	assert_string_equal(pick("x", "gpt-4o", "chat", 0), "low");
	/* Exactly 20 % left: not below. */
	headroom_ppm = 200000;
	assert_string_equal(pick("x", "gpt-4o", "chat", 0), "rest");
	/* Spent out: below anything. */
	headroom_ppm = 0;
	assert_string_equal(pick("x", "gpt-4o", "chat", 0), "low");
	/* No hard cap covers the call: never applies. */
	headroom_ppm = -1;
	assert_string_equal(pick("x", "gpt-4o", "chat", 0), "rest");
	/* Asked once a call, however many such rules. */
	rules[2].rr_below_pct = 50;
	headroom_asked = 0;
	headroom_ppm = 300000;
	assert_string_equal(pick("x", "gpt-4o", "chat", 0), "rest");
	assert_int_equal(headroom_asked, 1);
	/* Without a function: as if no cap. */
	assert_null(routing_select(
	    &set, (const char *[ROUTING_ATTR_MAX]){0}, 0, NULL, NULL));
}

static void
test_fixed_calls(void **state)
{
	(void)state;
	rules_reset();
	headroom_ppm = 0;
	/* An Azure call: rules that change the model or upstream are
	 * skipped; one that only bounds the output still applies. */
	assert_string_equal(
	    pick("classifier", "gpt-4o", "chat", ROUTING_FIXED), "low");
	headroom_ppm = 1000000;
	assert_string_equal(
	    pick("classifier", "gpt-4o", "chat", ROUTING_FIXED), "-");
}

static void
test_model_names(void **state)
{
	(void)state;
	assert_true(routing_model_ok("gpt-4o-mini"));
	assert_true(routing_model_ok("accounts/fireworks/models/llama-v3p1"));
	assert_true(routing_model_ok("claude-3-5-sonnet@20240620"));
	assert_false(routing_model_ok(""));
	assert_false(routing_model_ok("-x"));
	assert_false(routing_model_ok("gpt 4o"));
	assert_false(routing_model_ok("a\"b"));
	assert_false(routing_model_ok("a\\b"));
	assert_string_equal(
	    routing_attr_name(ROUTING_ATTR_UPSTREAM), "upstream");
	assert_string_equal(routing_attr_name(99), "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_cases),
	    cmocka_unit_test(test_endpoint_names),
	    cmocka_unit_test(test_first_match_wins),
	    cmocka_unit_test(test_budget_condition),
	    cmocka_unit_test(test_fixed_calls),
	    cmocka_unit_test(test_model_names),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
