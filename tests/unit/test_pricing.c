/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for pricing.c, as tables of named cases (memcached testapp.c,
 * Redis redisTests[]):
 *
 *   cost_cases    calls priced against the shipped config/prices.yaml,
 *                 each total worked out by hand in the comment above it,
 *                 in pico-USD (pUSD) per token: 1 USD/M = 1,000,000 pUSD;
 *                 the result is nano-USD (nUSD), rounded up.
 *   lookup_cases  names as providers spell them, and what they resolve to.
 *   worst_cases   pre-flight reservations, worked out by hand likewise.
 *   usd_cases     the decimal price parser, through a one-model file.
 *   load_cases    price files that load (then checked field by field) or
 *                 fail with exactly the listed "line:col: message" errors,
 *                 in order; the test puts the file name in front.
 *
 * A few API tests follow the tables: the shipped file loads with at least
 * 25 models, a missing file, NULL arguments, and saturation on overflow.
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
#include "tollgate/pricing.h"
#include "tollgate/usage.h"
#include "tollgate/util.h"

#include "cfgfile.h"

#define SHIPPED TG_SOURCE_DIR "/config/prices.yaml"
#define MAX_ERRORS 8

/* The shipped price book, loaded once by the group setup. */
static struct pricebook *shipped;

/* Costs. */

struct costcase {
	const char *name;
	const char *model; /* looked up in the shipped book */
	int64_t in, cached, write, write1h, out, reasoning;
	const char *tier;
	int64_t want; /* nano-USD */
};

static const struct costcase cost_cases[] = {
    /*
     * docs/internals/wire.md: gpt-4o, prompt_tokens 4020 of which 4012 cached,
     * completion_tokens 4. Rates 2.50 / 1.25 / 10.00 USD/M.
     *   (4020 - 4012) * 2,500,000 =        20,000,000
     *            4012 * 1,250,000 =     5,015,000,000
     *               4 * 10,000,000 =       40,000,000
     *                        total =    5,075,000,000 pUSD = 5,075,000 nUSD
     */
    {"cost.openai_cached", "gpt-4o", 4020, 4012, 0, 0, 4, 0, "", 5075000},
    /*
     * gpt-5-nano, 12 in, 377 out of which 320 reasoning: reasoning is
     * inside output and billed once. Rates 0.05 / 0.40.
     *    12 * 50,000  =     600,000
     *   377 * 400,000 = 150,800,000
     *   total 151,400,000 pUSD = 151,400 nUSD
     * (billing reasoning again would add 128,000 nUSD.)
     */
    {"cost.reasoning_inside_output", "gpt-5-nano", 12, 0, 0, 0, 377, 320, "",
	151400},
    /*
     * docs/internals/wire.md on claude-sonnet-4-5: input_tokens 3,
     * cache_creation 418 (all 5m), cache_read 1111, output 33; input
     * total 3 + 418 + 1111 = 1532. Rates 3.00 / 0.30 / 3.75 / 6.00 / 15.
     *      3 * 3,000,000  =     9,000,000
     *   1111 * 300,000    =   333,300,000
     *    418 * 3,750,000  = 1,567,500,000
     *     33 * 15,000,000 =   495,000,000
     *   total 2,404,800,000 pUSD = 2,404,800 nUSD
     */
    {"cost.anthropic_5m_write", "claude-sonnet-4-5", 1532, 1111, 418, 0, 33, 33,
	"standard", 2404800},
    /*
     * The same call with 200 of the 418 written tokens on a 1 h TTL:
     *      3 * 3,000,000  =     9,000,000
     *   1111 * 300,000    =   333,300,000
     *    218 * 3,750,000  =   817,500,000
     *    200 * 6,000,000  = 1,200,000,000
     *     33 * 15,000,000 =   495,000,000
     *   total 2,854,800,000 pUSD = 2,854,800 nUSD
     */
    {"cost.anthropic_1h_write", "claude-sonnet-4-5", 1532, 1111, 418, 200, 33,
	0, "", 2854800},
    /*
     * claude-sonnet-4-5 above 200k: 250,000 in (50,000 read, 10,000
     * written 5m), 1000 out, the whole call at 6.00 / 0.60 / 7.50 / 22.50.
     *   190,000 * 6,000,000  = 1,140,000,000,000
     *    50,000 * 600,000    =    30,000,000,000
     *    10,000 * 7,500,000  =    75,000,000,000
     *     1,000 * 22,500,000 =    22,500,000,000
     *   total 1,267,500,000,000 pUSD = 1,267,500,000 nUSD
     */
    {"cost.long_context", "claude-sonnet-4-5", 250000, 50000, 10000, 0, 1000, 0,
	"", 1267500000},
    /*
     * As above with 4,000 of the writes at 1 h (long rate 12.00):
     *   190,000 * 6,000,000 + 50,000 * 600,000 + 6,000 * 7,500,000
     *   + 4,000 * 12,000,000 + 1,000 * 22,500,000
     *   = 1,140e9 + 30e9 + 45e9 + 48e9 + 22.5e9 = 1,285.5e9 pUSD
     */
    {"cost.long_context_1h", "claude-sonnet-4-5", 250000, 50000, 10000, 4000,
	1000, 0, "", 1285500000},
    /* Exactly 200,000 is not above the threshold: 200,000 * 3,000,000. */
    {"cost.long_context_at_threshold", "claude-sonnet-4-5", 200000, 0, 0, 0, 0,
	0, "", 600000000},
    /* One more token and all of them cost 6.00: 200,001 * 6,000,000. */
    {"cost.long_context_above_threshold", "claude-sonnet-4-5", 200001, 0, 0, 0,
	0, 0, "", 1200006000},
    /*
     * gemini-2.5-flash: promptTokenCount 1000, candidates 50 + thoughts
     * 200 = 250 output. Rates 0.30 / 2.50.
     *   1000 * 300,000   = 300,000,000
     *    250 * 2,500,000 = 625,000,000
     *   total 925,000,000 pUSD = 925,000 nUSD
     */
    {"cost.gemini_thoughts", "gemini-2.5-flash", 1000, 0, 0, 0, 250, 200, "",
	925000},
    /*
     * gemini-2.5-pro above 200k: 300,000 in (100,000 cached), 1000 out,
     * at 2.50 / 0.25 / 15.00.
     *   200,000 * 2,500,000  = 500,000,000,000
     *   100,000 * 250,000    =  25,000,000,000
     *     1,000 * 15,000,000 =  15,000,000,000
     *   total 540,000,000,000 pUSD = 540,000,000 nUSD
     */
    {"cost.gemini_long_context", "gemini-2.5-pro", 300000, 100000, 0, 0, 1000,
	0, "", 540000000},
    /*
     * gpt-5, 1000 in (500 cached), 100 out, by service tier:
     *   flex 0.625 / 0.0625 / 5.00:
     *     500 * 625,000 + 500 * 62,500 + 100 * 5,000,000
     *     = 312,500,000 + 31,250,000 + 500,000,000 = 843,750,000 pUSD
     *   priority 2.50 / 0.25 / 20.00:
     *     500 * 2,500,000 + 500 * 250,000 + 100 * 20,000,000
     *     = 1,250,000,000 + 125,000,000 + 2,000,000,000 = 3,375,000,000
     *   base 1.25 / 0.125 / 10.00 ("default", "", or a tier gpt-5 lacks):
     *     500 * 1,250,000 + 500 * 125,000 + 100 * 10,000,000
     *     = 625,000,000 + 62,500,000 + 1,000,000,000 = 1,687,500,000
     */
    {"cost.tier_flex", "gpt-5", 1000, 500, 0, 0, 100, 0, "flex", 843750},
    {"cost.tier_priority", "gpt-5", 1000, 500, 0, 0, 100, 0, "priority",
	3375000},
    {"cost.tier_default", "gpt-5", 1000, 500, 0, 0, 100, 0, "default", 1687500},
    {"cost.tier_none", "gpt-5", 1000, 500, 0, 0, 100, 0, "", 1687500},
    {"cost.tier_unlisted", "gpt-5", 1000, 500, 0, 0, 100, 0, "scale", 1687500},
    {"cost.tier_case_sensitive", "gpt-5", 1000, 500, 0, 0, 100, 0, "Flex",
	1687500},
    /*
     * gpt-4o priority, 1000 in, 100 out at 4.25 / 17.00:
     *   1000 * 4,250,000 + 100 * 17,000,000 = 5,950,000,000 pUSD
     */
    {"cost.gpt4o_priority", "gpt-4o", 1000, 0, 0, 0, 100, 0, "priority",
	5950000},
    /*
     * The 2024-05-13 snapshot has its own, older price (5.00 / 15.00):
     *   1000 * 5,000,000 + 100 * 15,000,000 = 6,500,000,000 pUSD
     */
    {"cost.snapshot_own_price", "gpt-4o-2024-05-13", 1000, 0, 0, 0, 100, 0, "",
	6500000},
    /* The 2024-08-06 snapshot is gpt-4o: 1000 * 2.5M + 100 * 10M. */
    {"cost.snapshot_base_price", "gpt-4o-2024-08-06", 1000, 0, 0, 0, 100, 0, "",
	3500000},
    /* text-embedding-3-small, 5 tokens at 0.02: 5 * 20,000 = 100,000. */
    {"cost.embedding_small", "text-embedding-3-small", 5, 0, 0, 0, 0, 0, "",
	100},
    /* text-embedding-3-large, 1000 at 0.13: 1000 * 130,000. */
    {"cost.embedding_large", "text-embedding-3-large", 1000, 0, 0, 0, 0, 0, "",
	130000},
    /* One gpt-5 flex cached token: 62,500 pUSD = 62.5 nUSD, rounded up. */
    {"cost.rounds_up", "gpt-5", 1, 1, 0, 0, 0, 0, "flex", 63},
    /* Three of them: 187,500 pUSD = 187.5 -> 188, rounded once. */
    {"cost.rounds_once", "gpt-5", 3, 3, 0, 0, 0, 0, "flex", 188},
    {"cost.nothing", "gpt-4o", 0, 0, 0, 0, 0, 0, "", 0},
    /*
     * Inconsistent counts are clamped per class: cached 20 > input 10
     * leaves no plain input, the 20 cached cost 20 * 1,250,000.
     */
    {"cost.clamp_cached_above_input", "gpt-4o", 10, 20, 0, 0, 0, 0, "", 25000},
    {"cost.clamp_negative", "gpt-4o", -5, -3, -2, -1, -7, 0, "", 0},
    /*
     * 1 h writes above all writes: 100 in, 10 written, 20 "of which" 1 h.
     *   plain 90 * 3,000,000 = 270,000,000; 5m max(0, 10 - 20) = 0;
     *   1h 20 * 6,000,000 = 120,000,000; total 390,000,000 pUSD
     */
    {"cost.clamp_1h_above_writes", "claude-sonnet-4-5", 100, 0, 10, 20, 0, 0,
	"", 390000},
    /*
     * claude-opus-4-1 (15 / 1.50 / 18.75 / 30 / 75), through its dated id:
     *   100 * 15,000,000 + 1000 * 1,500,000 + 400 * 18,750,000
     *   + 500 * 30,000,000 + 10 * 75,000,000
     *   = 1.5e9 + 1.5e9 + 7.5e9 + 15e9 + 0.75e9 = 26.25e9 pUSD
     */
    {"cost.opus_dated", "claude-opus-4-1-20250805", 2000, 1000, 900, 500, 10, 0,
	"", 26250000},
    /* Saturates instead of wrapping. */
    {"cost.saturates", "claude-opus-4-1", INT64_MAX, 0, 0, 0, INT64_MAX, 0, "",
	INT64_MAX},
};

static void
run_cost(void **state)
{
	const struct costcase *tc = *state;
	const struct price *p;
	struct usage u;

	p = pricing_lookup(shipped, tc->model);
	assert_non_null(p);
	memset(&u, 0, sizeof(u));
	u.u_input = tc->in;
	u.u_cached = tc->cached;
	u.u_cache_write = tc->write;
	u.u_cache_write_1h = tc->write1h;
	u.u_output = tc->out;
	u.u_reasoning = tc->reasoning;
	u.u_source = USAGE_REPORTED;
	snprintf(u.u_service_tier, sizeof(u.u_service_tier), "%s", tc->tier);
	assert_int_equal(pricing_cost(p, &u), tc->want);
}

/* Lookups. */

struct lookupcase {
	const char *name;
	const char *model; /* as asked */
	const char *want; /* canonical name, or NULL */
};

static const struct lookupcase lookup_cases[] = {
    {"lookup.exact", "gpt-4o", "gpt-4o"},
    {"lookup.exact_dated_model", "claude-3-5-haiku-20241022",
	"claude-3-5-haiku-20241022"},
    {"lookup.alias", "claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"},
    {"lookup.alias_sdk", "claude-sonnet-4-0", "claude-sonnet-4"},
    {"lookup.gemini_prefix", "models/gemini-2.5-flash", "gemini-2.5-flash"},
    {"lookup.gemini_prefix_alias", "models/gemini-2.5-flash-preview-09-2025",
	"gemini-2.5-flash"},
    {"lookup.openai_snapshot", "gpt-4o-2024-08-06", "gpt-4o"},
    {"lookup.openai_snapshot_own_entry", "gpt-4o-2024-05-13",
	"gpt-4o-2024-05-13"},
    {"lookup.openai_snapshot_nano", "gpt-5-nano-2025-08-07", "gpt-5-nano"},
    {"lookup.anthropic_snapshot", "claude-sonnet-4-5-20250929",
	"claude-sonnet-4-5"},
    {"lookup.anthropic_snapshot_opus4", "claude-opus-4-20250514",
	"claude-opus-4"},
    {"lookup.prefix_and_snapshot", "models/gpt-4o-2024-08-06", "gpt-4o"},
    {"lookup.unknown", "gpt-4o-turbo-ultra", NULL},
    {"lookup.unknown_dated", "gpt-7-2025-01-01", NULL},
    {"lookup.unknown_dated_compact", "claude-nonesuch-20250929", NULL},
    {"lookup.case_sensitive", "GPT-4o", NULL},
    {"lookup.empty", "", NULL},
    {"lookup.prefix_only", "models/", NULL},
    {"lookup.date_only", "-2024-08-06", NULL},
    {"lookup.bad_month", "gpt-4o-2024-13-06", NULL},
    {"lookup.bad_day_compact", "claude-sonnet-4-5-20250900", NULL},
    {"lookup.not_a_date", "gpt-4o-mini-x", NULL},
    {"lookup.prefix_of_model", "gpt-4", NULL},
    {"lookup.model_plus_junk", "gpt-4oo", NULL},
    {"lookup.azure_deployment", "my-gpt4o-deployment", NULL},
    {"lookup.vertex_at_snapshot", "claude-sonnet-4-5@20250929", NULL},
    {"lookup.other_prefix", "tunedModels/gemini-2.5-flash", NULL},
};

static void
run_lookup(void **state)
{
	const struct lookupcase *tc = *state;
	const struct price *p;

	p = pricing_lookup(shipped, tc->model);
	if (tc->want == NULL) {
		assert_null(p);
		return;
	}
	assert_non_null(p);
	assert_string_equal(p->p_model, tc->want);
}

/* Worst cases. */

struct worstcase {
	const char *name;
	const char *model;
	int64_t estimate, max_output;
	int n;
	int64_t want; /* nano-USD */
	const char *tier; /* ci_service_tier; NULL: "" */
};

static const struct worstcase worst_cases[] = {
    /*
     * gpt-4o, no bound, no tier: the model's 16,384 at the base output
     * rate (10.00), input at the base rate (2.50): the priority tier the
     * model lists does not count for a call that cannot be billed at it.
     *   1000 * 2,500,000 + 16,384 * 10,000,000
     *   = 2,500,000,000 + 163,840,000,000 = 166,340,000,000 pUSD
     */
    {"worst.no_bound", "gpt-4o", 1000, -1, 1, 166340000, NULL},
    /*
     * The same at priority (asked for, or the upstream's default):
     *   1000 * 4,250,000 + 16,384 * 17,000,000
     *   = 4,250,000,000 + 278,528,000,000 = 282,778,000,000 pUSD
     */
    {"worst.priority", "gpt-4o", 1000, -1, 1, 282778000, "priority"},
    /* A tier the model does not list is billed at the base rates. */
    {"worst.unlisted_tier", "gpt-4o", 1000, -1, 1, 166340000, "flex"},
    /* Bound 100, n 3: 2,500,000,000 + 300 * 10,000,000 = 5.5e9. */
    {"worst.bound_and_n", "gpt-4o", 1000, 100, 3, 5500000, NULL},
    /* At priority: 4,250,000,000 + 300 * 17,000,000 = 9.35e9. */
    {"worst.bound_and_n_priority", "gpt-4o", 1000, 100, 3, 9350000, "priority"},
    /* gpt-5-nano: 100 * 50,000 + 128,000 * 400,000 = 51,205,000,000. */
    {"worst.model_max", "gpt-5-nano", 100, -1, 1, 51205000, NULL},
    /* n below 1 counts as 1: 100 * 50,000 + 10 * 400,000 = 9,000,000. */
    {"worst.n_zero", "gpt-5-nano", 100, 10, 0, 9000, NULL},
    /* max_tokens 0 (Anthropic cache pre-warm): input only. */
    {"worst.bound_zero", "gpt-5-nano", 100, 0, 4, 5000, NULL},
    /*
     * claude-sonnet-4-5: a prompt token can cost up to a 1 h cache write
     * (6.00); output up to the long-context 22.50.
     *   1000 * 6,000,000 + 1000 * 22,500,000 = 28,500,000,000 pUSD
     */
    {"worst.cache_write_rate", "claude-sonnet-4-5", 1000, 1000, 1, 28500000,
	NULL},
    /*
     * Estimate above 200k: long-context 1 h writes, 12.00.
     *   300,000 * 12,000,000 + 1000 * 22,500,000 = 3,622,500,000,000
     */
    {"worst.long_context", "claude-sonnet-4-5", 300000, 1000, 1, 3622500000,
	NULL},
    /* At the threshold: 200,000 * 6,000,000 = 1.2e12 pUSD. */
    {"worst.at_threshold", "claude-sonnet-4-5", 200000, 0, 1, 1200000000, NULL},
    /* Above it: 200,001 * 12,000,000 = 2,400,012,000,000 pUSD. */
    {"worst.above_threshold", "claude-sonnet-4-5", 200001, 0, 1, 2400012000,
	NULL},
    /*
     * gemini-2.5-pro, no bound: output may be long-context (15.00).
     *   1000 * 1,250,000 + 65,536 * 15,000,000
     *   = 1,250,000,000 + 983,040,000,000 = 984,290,000,000 pUSD
     */
    {"worst.gemini", "gemini-2.5-pro", 1000, -1, 1, 984290000, NULL},
    /* gpt-5, n 128, bound 1000, base 10.00: 128,000 * 10,000,000. */
    {"worst.many_choices", "gpt-5", 0, 1000, 128, 1280000000, NULL},
    /* At priority, 20.00: 128,000 * 20,000,000. */
    {"worst.many_choices_priority", "gpt-5", 0, 1000, 128, 2560000000,
	"priority"},
    /* Flex is cheaper, but a flex call may be served at the base tier. */
    {"worst.flex_at_base", "gpt-5", 0, 1000, 128, 1280000000, "flex"},
    /* Embeddings: input only, 100 * 20,000 = 2,000,000 pUSD. */
    {"worst.embedding", "text-embedding-3-small", 100, -1, 1, 2000, NULL},
    {"worst.negative_estimate", "gpt-4o", -5, 0, 1, 0, NULL},
    {"worst.saturates", "gpt-4o", INT64_MAX, INT64_MAX, 1000, INT64_MAX, NULL},
};

static void
run_worst(void **state)
{
	const struct worstcase *tc = *state;
	const struct price *p;
	struct call_info ci;

	p = pricing_lookup(shipped, tc->model);
	assert_non_null(p);
	memset(&ci, 0, sizeof(ci));
	snprintf(ci.ci_model, sizeof(ci.ci_model), "%s", tc->model);
	ci.ci_input_estimate = tc->estimate;
	ci.ci_max_output = tc->max_output;
	ci.ci_n = tc->n;
	if (tc->tier != NULL)
		snprintf(ci.ci_service_tier, sizeof(ci.ci_service_tier), "%s",
		    tc->tier);
	assert_int_equal(pricing_worst_case(p, &ci), tc->want);
}

/* Helpers for the file-based tables. */

/*
 * Load text as a price file in a fresh directory. The errors must be
 * exactly want[] ("line:col: message", or " message" without a position),
 * in order; none means the file must load.
 */
static struct pricebook *
load_expect(const char *text, const char *const *want, size_t nwant)
{
	char dir[] = "/tmp/tg-test-pricing.XXXXXX", *path;
	struct cfgerrs errs = {0};
	struct pricebook *pb;
	size_t i, plen;
	int same;

	assert_non_null(mkdtemp(dir));
	xasprintf(&path, "%s/prices.yaml", dir);
	write_file(path, text);
	pb = pricing_load(path, &errs);

	plen = strlen(path);
	same = errs.ce_n == nwant;
	for (i = 0; same && i < nwant; i++) {
		same = strncmp(errs.ce_msgs[i], path, plen) == 0 &&
		    errs.ce_msgs[i][plen] == ':' &&
		    strcmp(errs.ce_msgs[i] + plen + 1, want[i]) == 0;
	}
	if (!same) {
		for (i = 0; i < nwant; i++)
			print_error("want: %s:%s\n", path, want[i]);
		for (i = 0; i < errs.ce_n; i++)
			print_error("got:  %s\n", errs.ce_msgs[i]);
	}
	cfgerrs_free(&errs);
	unlink(path);
	free(path);
	rmdir(dir);
	if (nwant == 0)
		assert_non_null(pb);
	else
		assert_null(pb);
	assert_true(same);
	return (pb);
}

/* Decimal prices. */

struct usdcase {
	const char *name;
	const char *text; /* the value of input: */
	int64_t want; /* pico-USD per token */
	const char *error; /* after "4:12: models.m.input: ", or NULL */
};

static const struct usdcase usd_cases[] = {
    {"usd.half_cent", "0.005", 5000, NULL},
    {"usd.four_decimals", "0.0625", 62500, NULL},
    {"usd.three_decimals", "2.125", 2125000, NULL},
    {"usd.two_decimals", "2.50", 2500000, NULL},
    {"usd.integer", "10", 10000000, NULL},
    {"usd.zero", "0", 0, NULL},
    {"usd.smallest", "0.000001", 1, NULL},
    {"usd.six_decimals", "123.456789", 123456789, NULL},
    {"usd.leading_zeros", "007.50", 7500000, NULL},
    {"usd.largest", "1000000", 1000000000000LL, NULL},
    {"usd.largest_decimal", "1000000.000000", 1000000000000LL, NULL},
    {"usd.too_large", "1000000.000001", 0, "must be at most 1000000"},
    {"usd.far_too_large", "99999999999999999999999", 0,
	"must be at most 1000000"},
    {"usd.seven_decimals", "0.0000001", 0,
	"at most 6 decimal places (USD per million tokens)"},
    {"usd.exponent", "1e-3", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.exponent_upper", "2.5E1", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.negative", "-1", 0, "must not be negative"},
    {"usd.negative_decimal", "-0.5", 0, "must not be negative"},
    {"usd.plus", "+1", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.quoted", "\"2.50\"", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.no_whole", ".5", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.no_fraction", "5.", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.comma", "2,50", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.hex", "0x10", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.underscore", "1_000", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.infinity", ".inf", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.dollar", "$2.50", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.null", "~", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
    {"usd.list", "[1]", 0,
	"expected a price in USD per million tokens, e.g. 2.50"},
};

static void
run_usd(void **state)
{
	const struct usdcase *tc = *state;
	struct pricebook *pb;
	const struct price *p;
	char *text, *want = NULL;

	xasprintf(&text,
	    "version: v1\n"
	    "models:\n"
	    "  m:\n"
	    "    input: %s\n"
	    "    output: 1\n"
	    "    max_output_tokens: 1\n",
	    tc->text);
	if (tc->error != NULL)
		xasprintf(&want, "4:12: models.m.input: %s", tc->error);
	pb = load_expect(text, (const char *const *)&want, want != NULL);
	free(text);
	free(want);
	if (pb == NULL)
		return;
	p = pricing_lookup(pb, "m");
	assert_non_null(p);
	assert_int_equal(p->p_base.pr_input, tc->want);
	/* Unset cache rates follow the input rate. */
	assert_int_equal(p->p_base.pr_cached, tc->want);
	assert_int_equal(p->p_base.pr_output, 1000000);
	pricing_free(pb);
}

/* Whole files. */

struct loadcase {
	const char *name;
	const char *yaml;
	void (*check)(const struct pricebook *);
	const char *errors[MAX_ERRORS]; /* none: the file must load */
};

static void
assert_rates(const struct price_rates *r, int64_t in, int64_t cached,
    int64_t write, int64_t write1h, int64_t out)
{
	assert_int_equal(r->pr_input, in);
	assert_int_equal(r->pr_cached, cached);
	assert_int_equal(r->pr_cache_write, write);
	assert_int_equal(r->pr_cache_write_1h, write1h);
	assert_int_equal(r->pr_output, out);
}

static void
check_defaults(const struct pricebook *pb)
{
	const struct price *p;

	assert_string_equal(pricing_version(pb), "2026-08-01");
	assert_int_equal(pricing_count(pb), 2);
	p = pricing_lookup(pb, "plain");
	assert_non_null(p);
	assert_string_equal(p->p_model, "plain");
	assert_rates(&p->p_base, 2000000, 2000000, 2000000, 2000000, 8000000);
	assert_int_equal(p->p_max_output, 100);
	assert_int_equal(p->p_long_threshold, 0);
	/* Without long_context, p_long is the base: never a stray $0. */
	assert_rates(&p->p_long, 2000000, 2000000, 2000000, 2000000, 8000000);
	assert_int_equal(p->p_ntiers, 0);
	assert_null(p->p_tiers);

	/* cache_write_1h follows cache_write, not input. */
	p = pricing_lookup(pb, "writes");
	assert_non_null(p);
	assert_rates(&p->p_base, 1000000, 100000, 1250000, 1250000, 5000000);
	assert_int_equal(p->p_max_output, 0);
}

static void
check_full(const struct pricebook *pb)
{
	const struct price *p;

	assert_string_equal(pricing_version(pb), "v7");
	assert_int_equal(pricing_count(pb), 2);
	p = pricing_lookup(pb, "big");
	assert_non_null(p);
	assert_rates(&p->p_base, 3000000, 300000, 3750000, 6000000, 15000000);
	assert_int_equal(p->p_long_threshold, 200000);
	/* Within long_context the defaults follow its own input rate. */
	assert_rates(&p->p_long, 6000000, 6000000, 6000000, 6000000, 22500000);
	assert_int_equal(p->p_ntiers, 2);
	assert_string_equal(p->p_tier_names[0], "flex");
	assert_rates(
	    &p->p_tiers[0], 1500000, 150000, 1500000, 1500000, 7500000);
	assert_string_equal(p->p_tier_names[1], "priority");
	assert_rates(
	    &p->p_tiers[1], 6000000, 6000000, 7000000, 7000000, 30000000);
	assert_int_equal(p->p_max_output, 64000);

	assert_ptr_equal(pricing_lookup(pb, "big-latest"), p);
	assert_ptr_equal(
	    pricing_lookup(pb, "small-alias"), pricing_lookup(pb, "small"));
	assert_null(pricing_lookup(pb, "nothing"));
}

static void
check_empty_aliases(const struct pricebook *pb)
{
	assert_int_equal(pricing_count(pb), 1);
	assert_non_null(pricing_lookup(pb, "m"));
}

#define ONE_MODEL "  m: {input: 1, output: 1, max_output_tokens: 1}\n"

static void
check_external(const struct pricebook *pb)
{
	int64_t v = -1;

	assert_int_equal(pricing_external(pb, "serpapi", "search", &v), 0);
	assert_int_equal(v, 5000000);
	assert_int_equal(pricing_external(pb, "serpapi", "page", &v), 0);
	assert_int_equal(v, 1000000000);
	assert_int_equal(pricing_external(pb, "e2b", "compute_minute", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(pricing_external(pb, "serpapi", "minute", &v), -1);
	assert_int_equal(pricing_external(pb, "nobody", "search", &v), -1);
}

static const struct loadcase load_cases[] = {
    /* Files that load. */
    {.name = "load.defaults",
	.yaml = "version: \"2026-08-01\"\n"
		"models:\n"
		"  plain:\n"
		"    input: 2.00\n"
		"    output: 8.00\n"
		"    max_output_tokens: 100\n"
		"  writes: {input: 1, cached_input: 0.10, cache_write: 1.25,\n"
		"    output: 5, max_output_tokens: 0}\n",
	.check = check_defaults},
    {.name = "load.full",
	.yaml = "# a comment\n"
		"version: v7\n"
		"models:\n"
		"  small: {input: 0.1, output: 0.2, max_output_tokens: 10}\n"
		"  big:\n"
		"    input: 3.00\n"
		"    cached_input: 0.30\n"
		"    cache_write: 3.75\n"
		"    cache_write_1h: 6.00\n"
		"    output: 15.00\n"
		"    max_output_tokens: 64000\n"
		"    long_context:\n"
		"      above_input_tokens: 200000\n"
		"      input: 6\n"
		"      output: 22.5\n"
		"    tiers:\n"
		"      flex: {input: 1.5, cached_input: 0.15, output: 7.5}\n"
		"      priority:\n"
		"        input: 6\n"
		"        cache_write: 7\n"
		"        output: 30\n"
		"aliases:\n"
		"  big-latest: big\n"
		"  small-alias: small\n",
	.check = check_full},
    {.name = "load.empty_aliases",
	.yaml = "version: v1\nmodels:\n" ONE_MODEL "aliases:\n",
	.check = check_empty_aliases},

    /* Files that fail, with exactly these errors. */
    {.name = "err.unknown_key",
	.yaml = "version: v1\n"
		"models:\n"
		"  gpt-4o:\n"
		"    input: 2.50\n"
		"    cahced_input: 1.25\n"
		"    output: 10\n"
		"    max_output_tokens: 16384\n",
	.errors = {"5:5: unknown key 'cahced_input' in models.gpt-4o"}},
    {.name = "load.external",
	.yaml = "version: v1\nmodels:\n" ONE_MODEL "external:\n"
		"  serpapi: {search: 0.005, page: 1}\n"
		"  e2b:\n"
		"    compute_minute: 0.000000001\n",
	.check = check_external},
    {.name = "err.external",
	.yaml = "version: v1\nmodels:\n" ONE_MODEL "external:\n"
		"  SerpAPI: {search: 0.005}\n"
		"  e2b:\n"
		"    minute: 0.0000000001\n"
		"    second: -1\n"
		"    cpu: 1e3\n"
		"    gpu: 1000001\n"
		"  empty: {}\n",
	.errors = {"5:3: external: bad source name 'SerpAPI' (a-z, 0-9, '_', "
		   "'.', '-'; at most 64 characters)",
	    "7:13: external.e2b.minute: at most 9 decimal places (USD per "
	    "unit)",
	    "8:13: external.e2b.second: must not be negative",
	    "9:10: external.e2b.cpu: expected a price in USD per unit, e.g. "
	    "0.005",
	    "10:10: external.e2b.gpu: must be at most 1000000 (USD per unit)",
	    "11:10: external.empty: expected a mapping of unit: USD per unit"}},
    {.name = "err.unknown_top_key",
	.yaml = "version: v1\nmodels:\n" ONE_MODEL "prices: {}\n",
	.errors = {"4:1: unknown key 'prices' at top level"}},
    {.name = "err.bad_number",
	.yaml = "version: v1\n"
		"models:\n"
		"  gpt-4o:\n"
		"    input: 2,50\n"
		"    output: 10\n"
		"    max_output_tokens: 16384\n",
	.errors = {"4:12: models.gpt-4o.input: expected a price in USD per "
		   "million tokens, e.g. 2.50"}},
    {.name = "err.missing_output",
	.yaml = "version: v1\n"
		"models:\n"
		"  gpt-4o:\n"
		"    input: 2.50\n"
		"    max_output_tokens: 16384\n",
	.errors = {"3:3: models.gpt-4o: missing required key 'output'"}},
    {.name = "err.missing_everything",
	.yaml = "version: v1\nmodels:\n  m: {}\n",
	.errors = {"3:3: models.m: missing required key 'input'",
	    "3:3: models.m: missing required key 'output'",
	    "3:3: models.m: missing required key 'max_output_tokens'"}},
    {.name = "err.alias_to_nowhere",
	.yaml = "version: v1\n"
		"models:\n" ONE_MODEL "aliases:\n"
		"  b: c\n",
	.errors = {"5:6: aliases.b: no model 'c' under models"}},
    {.name = "err.alias_chain",
	.yaml = "version: v1\n"
		"models:\n" ONE_MODEL "aliases:\n"
		"  b: m\n"
		"  c: b\n",
	.errors = {"6:6: aliases.c: 'b' is an alias; point at the model "
		   "itself"}},
    {.name = "err.alias_shadows_model",
	.yaml = "version: v1\n"
		"models:\n" ONE_MODEL "aliases:\n"
		"  m: m\n",
	.errors = {"5:3: aliases: 'm' is also a model under models: an alias "
		   "may not shadow a model"}},
    {.name = "err.alias_not_a_string",
	.yaml = "version: v1\nmodels:\n" ONE_MODEL "aliases:\n  b: [m]\n",
	.errors = {"5:6: aliases.b: expected a model name"}},
    {.name = "err.aliases_not_a_map",
	.yaml = "version: v1\nmodels:\n" ONE_MODEL "aliases: [m]\n",
	.errors = {"4:10: aliases: expected a mapping of alias: model"}},
    {.name = "err.duplicate_alias",
	.yaml = "version: v1\nmodels:\n" ONE_MODEL "aliases:\n"
		"  b: m\n"
		"  b: m\n",
	.errors = {"6:3: duplicate key 'b' in aliases (first at line 5)"}},
    {.name = "err.duplicate_model",
	.yaml = "version: v1\nmodels:\n" ONE_MODEL ONE_MODEL,
	.errors = {"4:3: duplicate key 'm' in models (first at line 3)"}},
    {.name = "err.missing_version",
	.yaml = "models:\n" ONE_MODEL,
	.errors = {"1:1: missing required key 'version'"}},
    {.name = "err.empty_version",
	.yaml = "version: \"\"\nmodels:\n" ONE_MODEL,
	.errors = {"1:10: version: must be 1 to 64 printable characters "
		   "without spaces"}},
    {.name = "err.null_version",
	.yaml = "version:\nmodels:\n" ONE_MODEL,
	.errors = {"1:9: version: expected a version string"}},
    {.name = "err.empty_file",
	.yaml = "",
	.errors = {" missing required key 'version'",
	    " missing required key 'models'"}},
    {.name = "err.top_not_a_map",
	.yaml = "- a\n",
	.errors = {"1:1: the top level must be a mapping"}},
    {.name = "err.no_models",
	.yaml = "version: v1\nmodels: {}\n",
	.errors = {"2:9: models: at least one model is required"}},
    {.name = "err.models_not_a_map",
	.yaml = "version: v1\nmodels: [a, b]\n",
	.errors = {"2:9: models: expected a mapping of model: prices"}},
    {.name = "err.model_not_a_map",
	.yaml = "version: v1\nmodels:\n  m: 2.50\n",
	.errors = {"3:6: models.m: expected a mapping"}},
    {.name = "err.bad_model_name",
	.yaml = "version: v1\nmodels:\n"
		"  \"gpt 4o\": {input: 1, output: 1, max_output_tokens: 1}\n",
	.errors = {"3:3: models: bad model name 'gpt 4o' (printable, no "
		   "spaces, at most 127 characters)"}},
    {.name = "err.negative_rate",
	.yaml = "version: v1\nmodels:\n"
		"  m: {input: 1, cached_input: -0.5, output: 1, "
		"max_output_tokens: 1}\n",
	.errors = {"3:31: models.m.cached_input: must not be negative"}},
    {.name = "err.bad_max_output",
	.yaml = "version: v1\nmodels:\n"
		"  a: {input: 1, output: 1, max_output_tokens: -1}\n"
		"  b: {input: 1, output: 1, max_output_tokens: 1.5}\n"
		"  c: {input: 1, output: 1, max_output_tokens: 1000000001}\n",
	.errors = {"3:47: models.a.max_output_tokens: expected a number of "
		   "tokens",
	    "4:47: models.b.max_output_tokens: expected a number of tokens",
	    "5:47: models.c.max_output_tokens: must be between 0 and "
	    "1000000000"}},
    {.name = "err.long_context_threshold",
	.yaml =
	    "version: v1\nmodels:\n"
	    "  m:\n"
	    "    input: 1\n"
	    "    output: 1\n"
	    "    max_output_tokens: 1\n"
	    "    long_context: {input: 2, output: 3}\n"
	    "  n:\n"
	    "    input: 1\n"
	    "    output: 1\n"
	    "    max_output_tokens: 1\n"
	    "    long_context: {above_input_tokens: 0, input: 2, output: 3}\n",
	.errors = {"7:19: models.m.long_context: missing required key "
		   "'above_input_tokens'",
	    "12:40: models.n.long_context.above_input_tokens: must be "
	    "between 1 and 1000000000"}},
    {.name = "err.long_context_unknown_key",
	.yaml = "version: v1\nmodels:\n"
		"  m:\n"
		"    input: 1\n"
		"    output: 1\n"
		"    max_output_tokens: 1\n"
		"    long_context:\n"
		"      above_input_tokens: 10\n"
		"      input: 2\n"
		"      output: 3\n"
		"      max_output_tokens: 5\n",
	.errors = {"11:7: unknown key 'max_output_tokens' in "
		   "models.m.long_context"}},
    {.name = "err.tiers",
	.yaml = "version: v1\nmodels:\n"
		"  m:\n"
		"    input: 1\n"
		"    output: 1\n"
		"    max_output_tokens: 1\n"
		"    tiers:\n"
		"      default: {input: 1, output: 1}\n"
		"      flex: {input: 1}\n"
		"      \"a b\": {input: 1, output: 1}\n"
		"      batch: 0.5\n"
		"  n:\n"
		"    input: 1\n"
		"    output: 1\n"
		"    max_output_tokens: 1\n"
		"    tiers: [flex]\n",
	.errors = {"8:7: models.m.tiers: 'default' is the base price: put its "
		   "rates at the model's top level",
	    "9:7: models.m.tiers.flex: missing required key 'output'",
	    "10:7: models.m.tiers: bad tier name 'a b' (printable, no "
	    "spaces, at most 31 characters)",
	    "11:14: models.m.tiers.batch: expected a mapping",
	    "16:12: models.n.tiers: expected a mapping of tier: prices"}},
    {.name = "err.yaml_anchor",
	.yaml = "version: v1\nmodels:\n"
		"  m: &base {input: 1, output: 1, max_output_tokens: 1}\n",
	.errors = {"3:6: YAML anchors are not allowed (the config is plain "
		   "data)"}},
    /* Every mistake in one pass, in file order, then the aliases. */
    {.name = "err.all_collected",
	.yaml = "version: v1\n"
		"aliases:\n"
		"  x: nowhere\n"
		"models:\n"
		"  a:\n"
		"    input: 1e-3\n"
		"    ouput: 1\n"
		"    max_output_tokens: 1\n"
		"  b: {input: 0.0000001, output: 1, max_output_tokens: 1}\n",
	.errors = {"3:6: aliases.x: no model 'nowhere' under models",
	    "5:3: models.a: missing required key 'output'",
	    "6:12: models.a.input: expected a price in USD per million "
	    "tokens, e.g. 2.50",
	    "7:5: unknown key 'ouput' in models.a",
	    "9:14: models.b.input: at most 6 decimal places (USD per "
	    "million tokens)"}},
};

static void
run_load(void **state)
{
	const struct loadcase *tc = *state;
	struct pricebook *pb;
	size_t nwant = 0;

	while (nwant < MAX_ERRORS && tc->errors[nwant] != NULL)
		nwant++;
	pb = load_expect(tc->yaml, tc->errors, nwant);
	if (pb == NULL)
		return;
	assert_non_null(tc->check);
	tc->check(pb);
	pricing_free(pb);
}

/* API tests. */

/* The shipped table loads, prices every model it names, and is complete. */
static void
test_shipped(void **state)
{
	static const char *const required[] = {"gpt-4o", "gpt-4o-mini",
	    "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "gpt-5",
	    "gpt-5-mini", "gpt-5-nano", "gpt-5.4", "gpt-5.5", "claude-opus-4-5",
	    "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-1",
	    "claude-opus-4", "claude-sonnet-4-5", "claude-sonnet-4",
	    "claude-sonnet-4-6", "claude-haiku-4-5",
	    "claude-3-5-haiku-20241022", "claude-3-5-sonnet-20241022",
	    "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite",
	    "text-embedding-3-small", "text-embedding-3-large"};
	const struct price *p;
	size_t i, t;

	(void)state;
	assert_non_null(shipped);
	assert_true(pricing_count(shipped) >= 25);
	assert_string_equal(pricing_version(shipped), "2026-08-22");
	for (i = 0; i < nitems(required); i++) {
		p = pricing_lookup(shipped, required[i]);
		if (p == NULL)
			print_error("missing model %s\n", required[i]);
		assert_non_null(p);
		assert_string_equal(p->p_model, required[i]);
		/* Every rate is set and no model is accidentally free. */
		assert_true(p->p_base.pr_input > 0);
		assert_true(p->p_base.pr_cached > 0);
		assert_true(p->p_base.pr_cache_write >= p->p_base.pr_input);
		assert_true(
		    p->p_base.pr_cache_write_1h >= p->p_base.pr_cache_write);
		assert_true(p->p_base.pr_cached <= p->p_base.pr_input);
		assert_true(p->p_max_output >= 0);
		for (t = 0; t < p->p_ntiers; t++)
			assert_true(p->p_tiers[t].pr_output > 0);
		if (p->p_long_threshold > 0) {
			assert_true(p->p_long.pr_input >= p->p_base.pr_input);
			assert_true(p->p_long.pr_output >= p->p_base.pr_output);
		}
	}
	/* The long-context entries config/prices.yaml cites its sources for. */
	assert_int_equal(
	    pricing_lookup(shipped, "claude-sonnet-4")->p_long_threshold,
	    200000);
	assert_int_equal(
	    pricing_lookup(shipped, "gemini-2.5-pro")->p_long_threshold,
	    200000);
	assert_int_equal(
	    pricing_lookup(shipped, "claude-sonnet-4-6")->p_long_threshold, 0);
	/* Tiers: o3 flex, gpt-5 flex and priority, gpt-4o priority. */
	assert_int_equal(pricing_lookup(shipped, "o3")->p_ntiers, 1);
	assert_int_equal(pricing_lookup(shipped, "gpt-5")->p_ntiers, 2);
	assert_int_equal(pricing_lookup(shipped, "gpt-4o")->p_ntiers, 1);
	/* Embeddings bill output at an explicit 0 and reserve none. */
	p = pricing_lookup(shipped, "text-embedding-3-large");
	assert_int_equal(p->p_base.pr_output, 0);
	assert_int_equal(p->p_max_output, 0);
}

static void
test_missing_file(void **state)
{
	struct cfgerrs errs = {0};

	(void)state;
	assert_null(pricing_load("/nonexistent/prices.yaml", &errs));
	assert_int_equal(errs.ce_n, 1);
	assert_string_equal(errs.ce_msgs[0],
	    "/nonexistent/prices.yaml: No such file or directory");
	cfgerrs_free(&errs);
	/* No errs to fill in is allowed too. */
	assert_null(pricing_load("/nonexistent/prices.yaml", NULL));
	pricing_free(NULL);
}

/* NULL prices are refused with -1, never priced as $0. */
static void
test_null_arguments(void **state)
{
	const struct price *p;
	struct usage u;
	struct call_info ci;

	(void)state;
	memset(&u, 0, sizeof(u));
	memset(&ci, 0, sizeof(ci));
	ci.ci_n = 1;
	ci.ci_max_output = -1;
	assert_int_equal(pricing_cost(NULL, &u), -1);
	assert_int_equal(pricing_worst_case(NULL, &ci), -1);
	p = pricing_lookup(shipped, "gpt-4o");
	assert_int_equal(pricing_cost(p, NULL), -1);
	assert_int_equal(pricing_worst_case(p, NULL), -1);
	assert_null(pricing_lookup(NULL, "gpt-4o"));
	assert_null(pricing_lookup(shipped, NULL));
}

/*
 * A hand-built price with absurd rates: the 128-bit sums saturate at
 * INT64_MAX nano-USD rather than wrap, and a negative rate is 0.
 */
static void
test_saturation(void **state)
{
	struct price p;
	struct usage u;
	struct call_info ci;

	(void)state;
	memset(&p, 0, sizeof(p));
	p.p_model = (char *)(uintptr_t) "absurd";
	p.p_base.pr_input = INT64_MAX;
	p.p_base.pr_cached = INT64_MAX;
	p.p_base.pr_cache_write = INT64_MAX;
	p.p_base.pr_cache_write_1h = INT64_MAX;
	p.p_base.pr_output = INT64_MAX;
	p.p_long = p.p_base;
	p.p_max_output = INT64_MAX;
	memset(&u, 0, sizeof(u));
	u.u_input = INT64_MAX;
	u.u_cached = 1;
	u.u_cache_write = INT64_MAX - 1;
	u.u_cache_write_1h = 1;
	u.u_output = INT64_MAX;
	assert_int_equal(pricing_cost(&p, &u), INT64_MAX);
	memset(&ci, 0, sizeof(ci));
	ci.ci_input_estimate = INT64_MAX;
	ci.ci_max_output = -1;
	ci.ci_n = 128;
	assert_int_equal(pricing_worst_case(&p, &ci), INT64_MAX);

	/* 1000 pUSD is exactly 1 nUSD; 1001 rounds up to 2. */
	p.p_base.pr_input = 1000;
	p.p_base.pr_output = -5;
	memset(&u, 0, sizeof(u));
	u.u_input = 1;
	u.u_output = 100;
	assert_int_equal(pricing_cost(&p, &u), 1);
	p.p_base.pr_input = 1001;
	assert_int_equal(pricing_cost(&p, &u), 2);
}

/* Families of unknown models (family.c). */

static const char family_book[] =
    "version: fam-1\n"
    "models:\n"
    "  gpt-5:\n"
    "    input: 1.25\n"
    "    output: 10\n"
    "    max_output_tokens: 128000\n"
    "    tiers:\n"
    "      priority: { input: 2.50, output: 20 }\n"
    "  gpt-5-mini: { input: 0.25, output: 2, "
    "max_output_tokens: 64000 }\n"
    "  gpt-5.4:\n"
    "    input: 2.50\n"
    "    cached_input: 0.25\n"
    "    output: 15\n"
    "    max_output_tokens: 100000\n"
    "  gpt-4o: { input: 5, output: 15, "
    "max_output_tokens: 16384 }\n"
    "  claude-opus-4-1:\n"
    "    input: 15\n"
    "    cache_write_1h: 30\n"
    "    output: 75\n"
    "    max_output_tokens: 32000\n"
    "  o3: { input: 2, output: 8, "
    "max_output_tokens: 100000 }\n";

struct familycase {
	const char *name;
	const char *model; /* NULL: no model in the request */
	const char *family;
	size_t members;
	const char *input, *cached, *write1h, *output; /* USD per M */
	int64_t max_output;
};

static const struct familycase family_cases[] = {
    /* Dotted versions are tokens: gpt-5, gpt-5-mini and gpt-5.4; the
     * dearest input is gpt-5's priority tier and gpt-5.4's (2.50), the
     * dearest output gpt-5's priority tier (20). */
    {"family_dotted_version", "gpt-5.6-luna", "gpt-5", 3, "2.50", "2.50",
	"2.50", "20", 128000},
    {"family_first_token", "gpt-9-preview", "gpt", 4, "5", "5", "5", "20",
	128000},
    {"family_two_tokens", "claude-opus-5", "claude-opus", 1, "15", "15", "30",
	"75", 32000},
    {"family_none_shared", "o9-mini", "*", 6, "15", "15", "30", "75", 128000},
    {"family_gemini_prefix", "models/gpt-5-nano", "gpt-5", 3, "2.50", "2.50",
	"2.50", "20", 128000},
    {"family_partial_token", "gpt-5x", "gpt", 4, "5", "5", "5", "20", 128000},
    {"family_empty_token", "gpt--5", "gpt", 4, "5", "5", "5", "20", 128000},
    {"family_no_model", NULL, "*", 6, "15", "15", "30", "75", 128000},
    {"family_empty_model", "", "*", 6, "15", "15", "30", "75", 128000},
};

/* USD per million tokens as pUSD per token. */
static int64_t
usd_per_m(const char *s)
{
	int64_t whole = 0, frac = 0, scale = 1000000;

	for (; *s != '\0' && *s != '.'; s++)
		whole = whole * 10 + (*s - '0');
	if (*s == '.')
		for (s++; *s != '\0'; s++) {
			scale /= 10;
			frac += (*s - '0') * scale;
		}
	return (whole * 1000000 + frac);
}

static void
run_family(void **state)
{
	const struct familycase *c = *state;
	struct pricebook *pb;
	struct price p;
	char fam[64];

	pb = load_expect(family_book, NULL, 0);
	assert_int_equal(
	    pricing_family_max(pb, c->model, &p, fam, sizeof(fam)), c->members);
	assert_string_equal(fam, c->family);
	assert_null(p.p_model);
	assert_int_equal(p.p_ntiers, 0);
	assert_int_equal(p.p_long_threshold, 0);
	assert_int_equal(p.p_base.pr_input, usd_per_m(c->input));
	assert_int_equal(p.p_base.pr_cached, usd_per_m(c->cached));
	assert_int_equal(p.p_base.pr_cache_write_1h, usd_per_m(c->write1h));
	assert_int_equal(p.p_base.pr_output, usd_per_m(c->output));
	assert_int_equal(p.p_max_output, c->max_output);
	pricing_free(pb);
}

/* No book, no family: the caller records the call unpriced. */
static void
test_family_no_book(void **state)
{
	struct price p;
	char fam[8];

	(void)state;
	assert_int_equal(
	    pricing_family_max(NULL, "gpt-5", &p, fam, sizeof(fam)), 0);
	assert_string_equal(fam, "");
}

/*
 * The book walked from outside pricing/ (tollgate prices import): models
 * and aliases in name order, the alias's model, NULL past either end.
 */
static void
test_walk(void **state)
{
	struct pricebook *pb;
	const struct price *to = NULL;

	(void)state;
	pb = load_expect(
	    "version: walk-1\n"
	    "models:\n"
	    "  zeta: { input: 1, output: 2, max_output_tokens: 10 }\n"
	    "  alpha: { input: 3, output: 4, max_output_tokens: 10 }\n"
	    "aliases:\n"
	    "  zz: alpha\n"
	    "  aa: zeta\n",
	    NULL, 0);
	assert_non_null(pb);
	assert_int_equal(pricing_count(pb), 2);
	assert_string_equal(pricing_model_at(pb, 0)->p_model, "alpha");
	assert_string_equal(pricing_model_at(pb, 1)->p_model, "zeta");
	assert_null(pricing_model_at(pb, 2));
	assert_ptr_equal(
	    pricing_find_model(pb, "zeta", 4), pricing_model_at(pb, 1));
	assert_null(pricing_find_model(pb, "zz", 2));
	assert_int_equal(pricing_alias_count(pb), 2);
	assert_string_equal(pricing_alias_at(pb, 0, &to), "aa");
	assert_ptr_equal(to, pricing_model_at(pb, 1));
	assert_string_equal(pricing_alias_at(pb, 1, &to), "zz");
	assert_ptr_equal(to, pricing_model_at(pb, 0));
	assert_null(pricing_alias_at(pb, 2, &to));
	pricing_free(pb);
}

static int
setup(void **state)
{
	struct cfgerrs errs = {0};
	size_t i;

	(void)state;
	shipped = pricing_load(SHIPPED, &errs);
	for (i = 0; i < errs.ce_n; i++)
		print_error("%s\n", errs.ce_msgs[i]);
	cfgerrs_free(&errs);
	return (shipped == NULL ? -1 : 0);
}

static int
teardown(void **state)
{
	(void)state;
	pricing_free(shipped);
	shipped = NULL;
	return (0);
}

#define ADD_CASES(tbl, fn)                                                     \
	do {                                                                   \
		for (i = 0; i < nitems(tbl); i++) {                            \
			tests[n].name = (tbl)[i].name;                         \
			tests[n].test_func = (fn);                             \
			tests[n].initial_state =                               \
			    (void *)(uintptr_t) & (tbl)[i];                    \
			n++;                                                   \
		}                                                              \
	} while (0)

int
main(void)
{
	static struct CMUnitTest tests[nitems(cost_cases) +
	    nitems(lookup_cases) + nitems(worst_cases) + nitems(usd_cases) +
	    nitems(load_cases) + nitems(family_cases) + 6];
	size_t i, n = 0;

	ADD_CASES(cost_cases, run_cost);
	ADD_CASES(lookup_cases, run_lookup);
	ADD_CASES(worst_cases, run_worst);
	ADD_CASES(usd_cases, run_usd);
	ADD_CASES(load_cases, run_load);
	ADD_CASES(family_cases, run_family);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_shipped);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_missing_file);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_null_arguments);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_saturation);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_family_no_book);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_walk);
	return (cmocka_run_group_tests_name("pricing", tests, setup, teardown));
}
