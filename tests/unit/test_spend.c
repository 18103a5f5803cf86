/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The spend and calls engine against a real ledger: the schema is made by
 * ledger_open, rows go in through ledger_record and ledger_reserve (so the
 * rollup is kept by the real triggers), and every query runs on a
 * read-only connection. Numbers are checked against plain SQL over calls
 * to the nano-dollar, the rollup path against the calls path, and the
 * parameter errors against a table of bad inputs.
 */
#include <sys/stat.h>

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "tmptree.h"

#define DAY_MS 86400000LL
/* 2026-10-25T00:00:00.000Z */
#define T_OCT25 1792886400000LL
/* 2026-12-01T00:00:00.000Z */
#define T_DEC1 1796083200000LL
#define NROWS 3000
#define NROWS_STR "3000"
#define NINFLIGHT 40

static struct {
	char dir[64];
	char path[128];
	sqlite3 *db; /* read-only, spend_open */
} fx;

static const char *teams[] = {
    "support", "research", "sales", NULL, "x' OR '1'='1", "comma,team"};
static const char *tenants[] = {"acme", "globex", "initech", NULL};
static const char *classes[] = {"ticket-agent", "researcher", "triage"};
static const char *envs[] = {"prod", "staging", NULL};
static const char *intents[] = {"i-1", "i-2", "i-3", "i-4", "i-5", NULL};
static const struct {
	const char *provider, *model;
} models[] = {
    {"openai", "gpt-4o"},
    {"openai", "gpt-4o-mini"},
    {"anthropic", "claude-sonnet-4"},
    {"gemini", "gemini-2.5-pro"},
    {NULL, NULL},
};
static const enum call_status statuses[] = {CALL_OK, CALL_OK, CALL_OK, CALL_OK,
    CALL_ERROR, CALL_REFUSED, CALL_CLIENT_CLOSED, CALL_UPSTREAM_ERROR,
    CALL_INTERRUPTED};

static uint64_t rng = 88172645463325252ULL;

static uint32_t
rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return ((uint32_t)(rng % n));
}

static void
fill_row(struct ledger_row *r, char *id, size_t idlen, int i)
{
	int m;

	memset(r, 0, sizeof(*r));
	snprintf(id, idlen, "req-%05d", i);
	r->lr_id = id;
	/* 45 days from Oct 25, at any ms; some on exact midnights. */
	r->lr_started_ms = T_OCT25 + (int64_t)rnd(45) * DAY_MS +
	    (i % 50 == 0 ? 0 : (int64_t)rnd((uint32_t)DAY_MS));
	if (i % 97 == 0)
		r->lr_started_ms = T_DEC1 - 1; /* the last ms of November */
	r->lr_finished_ms = r->lr_started_ms + 1000;
	m = (int)rnd(nitems(models));
	r->lr_provider = models[m].provider;
	r->lr_model = models[m].model;
	r->lr_endpoint = "chat_completions";
	r->lr_upstream = models[m].provider;
	r->lr_tags[TAG_TEAM] = teams[rnd(nitems(teams))];
	r->lr_tags[TAG_TENANT] = tenants[rnd(nitems(tenants))];
	r->lr_tags[TAG_AGENT_CLASS] = classes[rnd(nitems(classes))];
	r->lr_tags[TAG_ENVIRONMENT] = envs[rnd(nitems(envs))];
	r->lr_tags[TAG_INTENT] = intents[rnd(nitems(intents))];
	r->lr_status = statuses[rnd(nitems(statuses))];
	r->lr_http_status = 200;
	r->lr_input_tokens = rnd(100000);
	r->lr_output_tokens = rnd(20000);
	r->lr_usage_source = USAGE_REPORTED;
	/* Up to ~$4.29 a call, odd nano-dollars so rounding would show. */
	r->lr_cost_nusd =
	    r->lr_status == CALL_REFUSED ? 0 : (int64_t)rnd(4294967291u) + 1;
	r->lr_reserved_nusd = r->lr_cost_nusd + 5;
	r->lr_price_version = "test";
	r->lr_latency_ms = 1000;
	r->lr_ttfb_ms = -1;
}

/* One ledger for every case: made by the real writer, then read-only. */
static int
group_setup(void **state)
{
	struct event_base *base;
	struct ledger_row r;
	sqlite3 *rw = NULL;
	char id[32], *cause = NULL;
	int i;

	(void)state;
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/tg-spend-XXXXXX");
	if (mkdtemp(fx.dir) == NULL)
		return (-1);
	snprintf(fx.path, sizeof(fx.path), "%s/ledger.db", fx.dir);
	if ((base = event_base_new()) == NULL)
		return (-1);
	if (ledger_open(base, fx.path, DURABILITY_PROCESS, 100000, &cause) !=
	    0) {
		fprintf(stderr, "ledger_open: %s\n", cause);
		return (-1);
	}
	for (i = 0; i < NROWS; i++) {
		fill_row(&r, id, sizeof(id), i);
		if (ledger_record(&r) != 0)
			return (-1);
	}
	/*
	 * Rows in flight: the ledger writes a call's row once, final, so
	 * these are written final and then put back in flight, as a crash
	 * of an older version left them (and as /v1/calls shows the calls
	 * in flight beside the table).
	 */
	for (i = NROWS; i < NROWS + NINFLIGHT; i++) {
		fill_row(&r, id, sizeof(id), i);
		if (ledger_record(&r) != 0)
			return (-1);
	}
	ledger_close(); /* waits for every row */
	event_base_free(base);
	if (sqlite3_open(fx.path, &rw) != SQLITE_OK ||
	    sqlite3_exec(rw,
		"UPDATE calls SET status = 'in_flight', finished_at = NULL,"
		" ship_seq = NULL WHERE rowid > " NROWS_STR,
		NULL, NULL, NULL) != SQLITE_OK) {
		fprintf(stderr, "in flight: %s\n", sqlite3_errmsg(rw));
		return (-1);
	}
	sqlite3_close(rw);
	if ((fx.db = spend_open(fx.path, &cause)) == NULL) {
		fprintf(stderr, "spend_open: %s\n", cause);
		return (-1);
	}
	return (0);
}

static int
group_teardown(void **state)
{
	(void)state;
	sqlite3_close(fx.db);
	tmptree_remove(fx.dir);
	return (0);
}

/* One integer from SQL on the read-only connection, with text binds. */
static int64_t
sql_int(const char *sql, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	const char *v;
	int64_t n = -1;
	int i = 0;

	if (sqlite3_prepare_v2(fx.db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(fx.db));
	va_start(ap, sql);
	while ((v = va_arg(ap, const char *)) != NULL)
		sqlite3_bind_text(st, ++i, v, -1, SQLITE_TRANSIENT);
	va_end(ap);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return (n);
}

static void
parse_ok(struct spend_query *q, enum spend_kind kind, const char *qs)
{
	char *cause = NULL;

	if (spend_query_parse(q, kind, qs, &cause) != 0)
		fail_msg("%s: %s", qs, cause);
}

static void
run_ok(const struct spend_query *q, struct spend_result *r)
{
	char *cause = NULL;

	if (spend_run(fx.db, q, r, &cause) != 0)
		fail_msg("spend_run: %s", cause);
}

/* Time parsing: dates, RFC 3339 with offsets and fractions. */
static void
test_times(void **state)
{
	static const struct {
		const char *in;
		int is_to;
		int64_t ms; /* -1: refused */
	} cases[] = {
	    {"2026-12-01", 0, T_DEC1},
	    {"2026-11-30", 1, T_DEC1},
	    {"2026-12-01T00:00:00Z", 0, T_DEC1},
	    {"2026-12-01T00:00:00z", 1, T_DEC1},
	    {"2026-12-01t00:00:00.000Z", 0, T_DEC1},
	    {"2026-12-01T01:00:00+01:00", 0, T_DEC1},
	    {"2026-12-01T01:00:00 01:00", 0, T_DEC1}, /* '+' decoded to ' ' */
	    {"2026-11-30T19:00:00-05:00", 0, T_DEC1},
	    {"2026-12-01T00:00:00.5Z", 0, T_DEC1 + 500},
	    {"2026-12-01T00:00:00.0001Z", 0, T_DEC1 + 1},
	    {"2026-12-01T00:00:00.0010Z", 0, T_DEC1 + 1},
	    {"2026-12-01T00:00:00.999999Z", 0, T_DEC1 + 1000},
	    {"2024-02-29", 0, 1709164800000LL},
	    {"2026-02-29", 0, -1},
	    {"2026-13-01", 0, -1},
	    {"2026-1-01", 0, -1},
	    {"2026-12-01T00:00:00", 0, -1},
	    {"2026-12-01T24:00:00Z", 0, -1},
	    {"2026-12-01T00:00:60Z", 0, -1},
	    {"2026-12-01T00:00:00.Z", 0, -1},
	    {"2026-12-01T00:00:00+0100", 0, -1},
	    {"2026-12-01T00:00:00Zjunk", 0, -1},
	    {"1969-12-31", 0, -1},
	    {"9999-12-31", 1, 253402300800000LL},
	    {"9999-12-31", 0, 253402214400000LL},
	    {"9999-12-31T23:00:00-05:00", 0, -1},
	    {"9999-12-31T23:00:00-05:00", 1, -1},
	    {"9999-12-31T19:00:00-05:00", 1, 253402300800000LL},
	    {"", 0, -1},
	    {"yesterday", 0, -1},
	};
	int64_t ms;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		ms = -1;
		if (spend_parse_time(cases[i].in, cases[i].is_to, &ms) != 0)
			ms = -1;
		if (ms != cases[i].ms)
			fail_msg("'%s': got %" PRId64 ", want %" PRId64,
			    cases[i].in, ms, cases[i].ms);
	}
}

/* Bad parameters: each error names the parameter. */
static void
test_param_errors(void **state)
{
	static const struct {
		enum spend_kind kind;
		const char *qs;
		const char *want; /* prefix of the cause */
	} cases[] = {
	    {SPEND_KIND_SPEND, "group_by=colour",
		"group_by: unknown dimension 'colour'"},
	    {SPEND_KIND_SPEND, "group_by=team,team", "group_by: 'team' given"},
	    {SPEND_KIND_SPEND, "group_by=team,", "group_by: unknown dimension"},
	    {SPEND_KIND_SPEND, "from=2026-11",
		"from: expected YYYY-MM-DD or "
		"RFC 3339"},
	    {SPEND_KIND_SPEND, "to=soon", "to: expected YYYY-MM-DD"},
	    {SPEND_KIND_SPEND, "teams=x", "unknown parameter 'teams'"},
	    {SPEND_KIND_SPEND, "team=a&team=b", "team: given more than once"},
	    {SPEND_KIND_SPEND, "month=2026-13", "month: expected YYYY-MM"},
	    {SPEND_KIND_SPEND, "month=2026-11&from=2026-11-02",
		"month: cannot be combined"},
	    {SPEND_KIND_SPEND, "from=2026-11-02&to=2026-11-01",
		"to: must be after from"},
	    {SPEND_KIND_SPEND, "from=2026-11-02T00:00:00Z&to=2026-11-01",
		"to: must be after from"},
	    {SPEND_KIND_SPEND, "format=xml", "format: expected json, csv"},
	    {SPEND_KIND_SPEND, "limit=5", "unknown parameter 'limit'"},
	    {SPEND_KIND_SPEND, "status=ok", "unknown parameter 'status'"},
	    {SPEND_KIND_SPEND, "team=%zz", "team: bad percent-encoding"},
	    {SPEND_KIND_SPEND, "team=a%00b", "team: bad percent-encoding"},
	    {SPEND_KIND_SPEND, "group_by=team;DROP TABLE calls",
		"group_by: unknown dimension 'team;DROP TABLE calls'"},
	    {SPEND_KIND_SPEND, "te%01am=x", "unknown parameter 'te?am'"},
	    {SPEND_KIND_SPEND, "team", "team: expected team=VALUE"},
	    {SPEND_KIND_CALLS, "group_by=team", "unknown parameter 'group_by'"},
	    {SPEND_KIND_CALLS, "format=csv", "format: expected json or table"},
	    {SPEND_KIND_CALLS, "limit=0", "limit: expected a number from 1"},
	    {SPEND_KIND_CALLS, "limit=1001", "limit: expected a number from 1"},
	    {SPEND_KIND_CALLS, "limit=-1", "limit: expected a number from 1"},
	    {SPEND_KIND_CALLS, "limit=10x", "limit: expected a number from 1"},
	    {SPEND_KIND_CALLS, "status=done", "status: expected in_flight"},
	    {SPEND_KIND_CALLS, "cursor=abc", "cursor: not a cursor"},
	    {SPEND_KIND_CALLS, "cursor=!!!!", "cursor: not a cursor"},
	    {SPEND_KIND_SPEND, "fleet=yes", "fleet: expected 1"},
	    {SPEND_KIND_SPEND, "fleet=", "fleet: expected 1"},
	    {SPEND_KIND_CALLS, "fleet=1&fleet=1",
		"fleet: given more than once"},
	};
	struct spend_query q;
	char *cause;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		cause = NULL;
		if (spend_query_parse(&q, cases[i].kind, cases[i].qs, &cause) ==
		    0)
			fail_msg("'%s' was accepted", cases[i].qs);
		if (strncmp(cause, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("'%s': got '%s', want '%s...'", cases[i].qs,
			    cause, cases[i].want);
		free(cause);
	}
}

/* Good parameters: decoding, month, defaults, cursors both ways. */
static void
test_params_ok(void **state)
{
	struct spend_query q;
	char *at, *id, *c;

	(void)state;
	parse_ok(&q, SPEND_KIND_SPEND,
	    "team=a+b%2Cc&group_by=month,team&&month=2026-11&format=csv");
	assert_string_equal(q.sq_filter[SPEND_DIM_TEAM], "a b,c");
	assert_int_equal(q.sq_ngroup, 2);
	assert_int_equal(q.sq_group[0], SPEND_DIM_MONTH);
	assert_int_equal(q.sq_from_ms, 1793491200000LL); /* 2026-11-01 */
	assert_int_equal(q.sq_to_ms, T_DEC1);
	assert_int_equal(q.sq_format, SPEND_FORMAT_CSV);
	assert_true(spend_rollup_usable(&q));
	spend_query_free(&q);

	parse_ok(&q, SPEND_KIND_SPEND, "month=2026-12");
	assert_int_equal(q.sq_to_ms - q.sq_from_ms, 31 * DAY_MS);
	spend_query_free(&q);

	/* The end of 9999 is no upper bound (10000 would not sort as text). */
	parse_ok(&q, SPEND_KIND_SPEND, "from=2026-11-01&to=9999-12-31");
	assert_true(q.sq_has_from);
	assert_false(q.sq_has_to);
	spend_query_free(&q);
	parse_ok(&q, SPEND_KIND_SPEND, "month=9999-12");
	assert_false(q.sq_has_to);
	spend_query_free(&q);

	parse_ok(&q, SPEND_KIND_SPEND, "group_by=intent");
	assert_false(spend_rollup_usable(&q));
	spend_query_free(&q);
	parse_ok(&q, SPEND_KIND_SPEND, "from=2026-11-01T12:00:00Z");
	assert_false(spend_rollup_usable(&q));
	spend_query_free(&q);

	parse_ok(&q, SPEND_KIND_CALLS, "");
	assert_int_equal(q.sq_limit, SPEND_LIMIT_DEFAULT);
	spend_query_free(&q);

	c = spend_cursor_encode("2026-11-28T14:23:00.123Z", "req|with|bars");
	assert_null(strpbrk(c, "+/=&"));
	assert_int_equal(spend_cursor_decode(c, &at, &id), 0);
	assert_string_equal(at, "2026-11-28T14:23:00.123Z");
	assert_string_equal(id, "req|with|bars");
	free(at);
	free(id);
	free(c);
}

/* The plain-SQL truth for the final rows in [from, to). */
static int64_t
truth(const char *what, const char *from, const char *to)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
	    "SELECT ifnull(sum(%s), 0) FROM calls WHERE status <> 'in_flight'"
	    " AND started_at >= ?1 AND started_at < ?2",
	    what);
	return (sql_int(sql, from, to, NULL));
}

static void
assert_same_result(const struct spend_query *q, const struct spend_result *a,
    const struct spend_result *b, const char *what)
{
	size_t i, k;

	if (a->sr_nrows != b->sr_nrows)
		fail_msg("%s: %zu rows vs %zu", what, a->sr_nrows, b->sr_nrows);
	for (i = 0; i < a->sr_nrows; i++) {
		for (k = 0; k < q->sq_ngroup; k++) {
			const char *x = a->sr_rows[i].sr_keys[k];
			const char *y = b->sr_rows[i].sr_keys[k];

			if ((x == NULL) != (y == NULL) ||
			    (x != NULL && strcmp(x, y) != 0))
				fail_msg("%s: row %zu key %zu: %s vs %s", what,
				    i, k, x ? x : "null", y ? y : "null");
		}
		if (a->sr_rows[i].sr_calls != b->sr_rows[i].sr_calls ||
		    a->sr_rows[i].sr_cost_nusd != b->sr_rows[i].sr_cost_nusd ||
		    a->sr_rows[i].sr_input_tokens !=
			b->sr_rows[i].sr_input_tokens ||
		    a->sr_rows[i].sr_output_tokens !=
			b->sr_rows[i].sr_output_tokens)
			fail_msg("%s: row %zu differs", what, i);
	}
	assert_int_equal(a->sr_total.sr_cost_nusd, b->sr_total.sr_cost_nusd);
}

/*
 * Every single dimension and a few combinations: the total equals SQL over
 * calls to the nano-dollar, and rows are in cost order.
 */
static void
test_totals(void **state)
{
	static const char *groups[] = {"", "team", "tenant", "agent_class",
	    "environment", "intent", "model", "provider", "day", "month",
	    "team,agent_class", "month,team", "provider,model,day",
	    ("team,tenant,agent_class,environment,intent,model,provider,day,"
	     "month")};
	static const struct {
		const char *qs, *from, *to;
	} ranges[] = {
	    {"", "0", "9"},
	    {"&month=2026-11", "2026-11-01T00:00:00.000Z",
		"2026-12-01T00:00:00.000Z"},
	    {"&from=2026-11-03&to=2026-11-09", "2026-11-03T00:00:00.000Z",
		"2026-11-10T00:00:00.000Z"},
	    {"&from=2026-11-03T10:30:00%2B02:00&to=2026-11-20T00:00:00.0005Z",
		"2026-11-03T08:30:00.000Z", "2026-11-20T00:00:00.001Z"},
	};
	struct spend_query q;
	struct spend_result r;
	char qs[512];
	size_t g, t, i;

	(void)state;
	for (g = 0; g < nitems(groups); g++)
		for (t = 0; t < nitems(ranges); t++) {
			snprintf(qs, sizeof(qs), "group_by=%s%s", groups[g],
			    ranges[t].qs);
			parse_ok(&q, SPEND_KIND_SPEND, qs);
			run_ok(&q, &r);
			if (r.sr_total.sr_cost_nusd !=
			    truth("cost_nusd", ranges[t].from, ranges[t].to))
				fail_msg("%s: total %" PRId64 " != SQL", qs,
				    r.sr_total.sr_cost_nusd);
			assert_int_equal(r.sr_total.sr_calls,
			    truth("1", ranges[t].from, ranges[t].to));
			assert_int_equal(r.sr_total.sr_input_tokens,
			    truth(
				"input_tokens", ranges[t].from, ranges[t].to));
			assert_int_equal(r.sr_total.sr_output_tokens,
			    truth(
				"output_tokens", ranges[t].from, ranges[t].to));
			for (i = 1; i < r.sr_nrows; i++)
				assert_true(r.sr_rows[i - 1].sr_cost_nusd >=
				    r.sr_rows[i].sr_cost_nusd);
			spend_result_free(&r);
			spend_query_free(&q);
		}
}

/* Per group: team rows equal SQL per team, NULL and '' as one null. */
static void
test_group_rows(void **state)
{
	struct spend_query q;
	struct spend_result r;
	size_t i;
	int64_t want;
	int saw_null = 0;

	(void)state;
	parse_ok(&q, SPEND_KIND_SPEND, "group_by=team");
	run_ok(&q, &r);
	assert_int_equal(r.sr_nrows, nitems(teams));
	for (i = 0; i < r.sr_nrows; i++) {
		if (r.sr_rows[i].sr_keys[0] == NULL) {
			saw_null = 1;
			want =
			    sql_int("SELECT sum(cost_nusd) FROM calls WHERE"
				    " status <> 'in_flight' AND team IS NULL",
				NULL);
		} else
			want = sql_int("SELECT sum(cost_nusd) FROM calls WHERE"
				       " status <> 'in_flight' AND team = ?",
			    r.sr_rows[i].sr_keys[0], NULL);
		assert_int_equal(r.sr_rows[i].sr_cost_nusd, want);
	}
	assert_true(saw_null);
	spend_result_free(&r);
	spend_query_free(&q);
}

/*
 * group_by=hour: the UTC hour as "YYYY-MM-DDTHH:00:00Z", the sums of
 * plain SQL over calls, and never the daily rollup.
 */
static void
test_group_hour(void **state)
{
	struct spend_query q;
	struct spend_result r;
	int64_t want, total = 0;
	char prefix[16];
	size_t i;

	(void)state;
	parse_ok(&q, SPEND_KIND_SPEND, "group_by=hour");
	assert_false(spend_rollup_usable(&q));
	run_ok(&q, &r);
	assert_true(r.sr_nrows > 1);
	for (i = 0; i < r.sr_nrows; i++) {
		assert_int_equal(strlen(r.sr_rows[i].sr_keys[0]), 20);
		assert_string_equal(r.sr_rows[i].sr_keys[0] + 13, ":00:00Z");
		snprintf(
		    prefix, sizeof(prefix), "%.13s", r.sr_rows[i].sr_keys[0]);
		want = sql_int("SELECT sum(cost_nusd) FROM calls WHERE"
			       " status <> 'in_flight' AND"
			       " substr(started_at, 1, 13) = ?",
		    prefix, NULL);
		assert_int_equal(r.sr_rows[i].sr_cost_nusd, want);
		total += r.sr_rows[i].sr_cost_nusd;
	}
	assert_int_equal(total,
	    sql_int("SELECT sum(cost_nusd) FROM calls WHERE"
		    " status <> 'in_flight'",
		NULL));
	spend_result_free(&r);
	spend_query_free(&q);
}

/* The rollup and calls answer every rollup-able query identically. */
static void
test_rollup_equals_calls(void **state)
{
	static const enum spend_dim rdims[] = {SPEND_DIM_TEAM, SPEND_DIM_TENANT,
	    SPEND_DIM_AGENT_CLASS, SPEND_DIM_ENVIRONMENT, SPEND_DIM_MODEL,
	    SPEND_DIM_PROVIDER, SPEND_DIM_DAY, SPEND_DIM_MONTH};
	static const char *extra[] = {"", "&month=2026-11",
	    "&from=2026-10-30&to=2026-11-02&team=support",
	    "&team=&environment=prod", "&provider=openai&model=gpt-4o"};
	struct spend_query q;
	struct spend_result a, b;
	char qs[512];
	unsigned mask;
	size_t i, e, len;

	(void)state;
	for (e = 0; e < nitems(extra); e++)
		for (mask = 0; mask < (1u << nitems(rdims)); mask++) {
			len = (size_t)snprintf(qs, sizeof(qs), "group_by=");
			for (i = 0; i < nitems(rdims); i++)
				if (mask & (1u << i))
					len += (size_t)snprintf(qs + len,
					    sizeof(qs) - len, "%s%s",
					    qs[len - 1] == '=' ? "" : ",",
					    spend_dim_name(rdims[i]));
			snprintf(qs + len, sizeof(qs) - len, "%s", extra[e]);
			parse_ok(&q, SPEND_KIND_SPEND, qs);
			assert_true(spend_rollup_usable(&q));
			q.sq_path = SPEND_PATH_ROLLUP;
			run_ok(&q, &a);
			assert_int_equal(a.sr_path, SPEND_PATH_ROLLUP);
			q.sq_path = SPEND_PATH_CALLS;
			run_ok(&q, &b);
			assert_int_equal(b.sr_path, SPEND_PATH_CALLS);
			assert_same_result(&q, &a, &b, qs);
			spend_result_free(&a);
			spend_result_free(&b);
			spend_query_free(&q);
		}
}

/*
 * Bounds inside a day: the rollup's whole days plus calls for the partial
 * days at the ends answer exactly as calls alone.
 */
static void
test_mixed_equals_calls(void **state)
{
	static const char *extra[] = {
	    "&from=2026-11-03T10:30:00Z&to=2026-11-20T05:00:00.001Z",
	    "&from=2026-11-30T23:59:59.999Z",
	    "&to=2026-11-01T00:00:00.001Z&team=support",
	    "&from=2026-10-31T12:00:00Z&to=2026-11-02T12:00:00Z&team=",
	    "&from=2026-11-05&to=2026-11-09T00:00:00.5Z&provider=openai",
	};
	static const char *groups[] = {"", "team", "day", "month",
	    "team,tenant,agent_class,environment,model,provider,day,month",
	    "provider,model", "environment,agent_class"};
	struct spend_query q;
	struct spend_result a, b;
	char qs[512], *cause = NULL;
	size_t e, g;

	(void)state;
	for (e = 0; e < nitems(extra); e++)
		for (g = 0; g < nitems(groups); g++) {
			snprintf(qs, sizeof(qs), "group_by=%s%s", groups[g],
			    extra[e]);
			parse_ok(&q, SPEND_KIND_SPEND, qs);
			run_ok(&q, &a);
			assert_int_equal(a.sr_path, SPEND_PATH_MIXED);
			q.sq_path = SPEND_PATH_CALLS;
			run_ok(&q, &b);
			assert_same_result(&q, &a, &b, qs);
			spend_result_free(&a);
			spend_result_free(&b);
			spend_query_free(&q);
		}

	/* No whole day inside: calls alone; the rollup is refused. */
	parse_ok(&q, SPEND_KIND_SPEND,
	    "from=2026-11-03T10:00:00Z&to=2026-11-04T01:00:00Z");
	run_ok(&q, &a);
	assert_int_equal(a.sr_path, SPEND_PATH_CALLS);
	spend_result_free(&a);
	q.sq_path = SPEND_PATH_MIXED;
	assert_int_equal(spend_run(fx.db, &q, &a, &cause), -1);
	free(cause);
	cause = NULL;
	q.sq_path = SPEND_PATH_ROLLUP;
	assert_int_equal(spend_run(fx.db, &q, &a, &cause), -1);
	free(cause);
	spend_query_free(&q);
}

/* Filters: exact match, empty means unset, injection is just a value. */
static void
test_filters(void **state)
{
	struct spend_query q;
	struct spend_result r;

	(void)state;
	parse_ok(&q, SPEND_KIND_SPEND, "team=support&intent=i-2");
	run_ok(&q, &r);
	assert_int_equal(r.sr_path, SPEND_PATH_CALLS);
	assert_int_equal(r.sr_total.sr_cost_nusd,
	    sql_int("SELECT sum(cost_nusd) FROM calls WHERE status <>"
		    " 'in_flight' AND team = 'support' AND intent = 'i-2'",
		NULL));
	spend_result_free(&r);
	spend_query_free(&q);

	parse_ok(&q, SPEND_KIND_SPEND, "team=&group_by=team");
	run_ok(&q, &r);
	assert_int_equal(r.sr_nrows, 1);
	assert_null(r.sr_rows[0].sr_keys[0]);
	assert_int_equal(r.sr_total.sr_calls,
	    sql_int("SELECT count(*) FROM calls WHERE status <> 'in_flight'"
		    " AND team IS NULL",
		NULL));
	spend_result_free(&r);
	spend_query_free(&q);

	/* The row whose team is an injection attempt, and only it. */
	parse_ok(&q, SPEND_KIND_SPEND, "team=x'+OR+'1'%3D'1&group_by=team");
	run_ok(&q, &r);
	assert_int_equal(r.sr_nrows, 1);
	assert_string_equal(r.sr_rows[0].sr_keys[0], "x' OR '1'='1");
	assert_int_equal(r.sr_total.sr_calls,
	    sql_int("SELECT count(*) FROM calls WHERE status <> 'in_flight'"
		    " AND team = ?",
		"x' OR '1'='1", NULL));
	spend_result_free(&r);
	spend_query_free(&q);

	parse_ok(&q, SPEND_KIND_SPEND, "team=support'--");
	run_ok(&q, &r);
	assert_int_equal(r.sr_total.sr_calls, 0);
	spend_result_free(&r);
	spend_query_free(&q);
	assert_int_equal(
	    sql_int("SELECT count(*) FROM calls", NULL), NROWS + NINFLIGHT);
}

/* Day boundaries: the last ms of November is in November, not December. */
static void
test_bounds(void **state)
{
	static const struct {
		const char *qs;
		const char *from, *to;
	} cases[] = {
	    {"month=2026-11", "2026-11-01T00:00:00.000Z",
		"2026-12-01T00:00:00.000Z"},
	    {"to=2026-11-30", "0", "2026-12-01T00:00:00.000Z"},
	    {"from=2026-12-01", "2026-12-01T00:00:00.000Z", "9"},
	    {"from=2026-12-01T00:59:59.999%2B01:00", "2026-11-30T23:59:59.999Z",
		"9"},
	    {"to=2026-11-30T23:59:59.999Z", "0", "2026-11-30T23:59:59.999Z"},
	    {"from=2026-11-30T23:59:59.999Z&to=2026-11-30T23:59:59.9991Z",
		"2026-11-30T23:59:59.999Z", "2026-12-01T00:00:00.000Z"},
	    {"from=2026-11-30T18:59:59.999-05:00&to=2026-11-30T19:00:00-05:00",
		"2026-11-30T23:59:59.999Z", "2026-12-01T00:00:00.000Z"},
	};
	struct spend_query q;
	struct spend_result r;
	size_t i;

	(void)state;
	/* The fixture has rows on the last ms of November. */
	assert_true(sql_int("SELECT count(*) FROM calls WHERE started_at ="
			    " '2026-11-30T23:59:59.999Z'",
			NULL) > 0);
	for (i = 0; i < nitems(cases); i++) {
		parse_ok(&q, SPEND_KIND_SPEND, cases[i].qs);
		run_ok(&q, &r);
		if (r.sr_total.sr_cost_nusd !=
		    truth("cost_nusd", cases[i].from, cases[i].to))
			fail_msg("%s: %" PRId64 " != %" PRId64, cases[i].qs,
			    r.sr_total.sr_cost_nusd,
			    truth("cost_nusd", cases[i].from, cases[i].to));
		spend_result_free(&r);
		spend_query_free(&q);
	}
}

/* Sum "12.345678901" strings as integer nano-USD, never a float. */
static int64_t
usd_to_nusd(const char *s)
{
	const char *dot = strchr(s, '.');
	int64_t whole, frac;

	if (dot == NULL || strlen(dot + 1) != 9)
		fail_msg("not nine decimals: %s", s);
	whole = strtoll(s, NULL, 10);
	frac = strtoll(dot + 1, NULL, 10);
	return (whole * 1000000000LL + frac);
}

/* CSV parses back to the same numbers, quoting where needed. */
static void
test_csv(void **state)
{
	struct spend_query q;
	struct spend_result r;
	struct spend_out o;
	char *line, *save = NULL, *last;
	int64_t sum = 0;
	int lines = 0, quoted = 0;

	(void)state;
	parse_ok(
	    &q, SPEND_KIND_SPEND, "group_by=team&month=2026-11&format=csv");
	run_ok(&q, &r);
	spend_out_init(&o, SPEND_OUT_MAX);
	spend_write(&q, &r, &o);
	assert_false(o.so_full);
	for (line = strtok_r(o.so_buf, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		assert_true(line[strlen(line) - 1] == '\r');
		line[strlen(line) - 1] = '\0';
		if (lines++ == 0) {
			assert_string_equal(line,
			    "team,calls,input_tokens,"
			    "output_tokens,cost_usd,fallback_calls,"
			    "fallback_cost_usd,saved_usd,routed_calls,"
			    "cache_hits");
			continue;
		}
		if (strncmp(line, "\"comma,team\",", 13) == 0)
			quoted = 1;
		/* cost_usd is the sixth field from the end. */
		last = strrchr(line, ',');
		assert_string_equal(last + 1, "0"); /* cache_hits */
		*last = '\0';
		last = strrchr(line, ',');
		assert_string_equal(last + 1, "0"); /* routed_calls */
		*last = '\0';
		last = strrchr(line, ',');
		assert_string_equal(last + 1, "0.000000000"); /* saved_usd */
		*last = '\0';
		last = strrchr(line, ',');
		assert_string_equal(last + 1, "0.000000000");
		*last = '\0';
		last = strrchr(line, ',');
		assert_string_equal(last + 1, "0"); /* fallback_calls */
		*last = '\0';
		last = strrchr(line, ',');
		sum += usd_to_nusd(last + 1);
	}
	assert_int_equal(lines, (int)r.sr_nrows + 1);
	assert_true(quoted);
	assert_int_equal(sum, r.sr_total.sr_cost_nusd);
	assert_int_equal(sum,
	    truth("cost_nusd", "2026-11-01T00:00:00.000Z",
		"2026-12-01T00:00:00.000Z"));
	spend_out_free(&o);
	spend_result_free(&r);
	spend_query_free(&q);
}

/*
 * CSV cells a client chose: formula starts neutralised as OWASP says (a
 * quote before, the cell quoted), bytes that are not UTF-8 as U+FFFD, and
 * the numbers tollgate writes left alone.
 */
static void
test_csv_cells(void **state)
{
	static const struct {
		const char *key, *cell;
	} cases[] = {
	    {"plain", "plain"},
	    {"=SUM(1+1)", "\"'=SUM(1+1)\""},
	    {"=cmd|' /C calc'!A0", "\"'=cmd|' /C calc'!A0\""},
	    {"+1", "\"'+1\""},
	    {"-2", "\"'-2\""},
	    {"@SUM(1)", "\"'@SUM(1)\""},
	    {"\t=1", "\"'\t=1\""},
	    {"\r=1", "\"'\r=1\""},
	    {"  =1", "\"'  =1\""},
	    {"=\"x\",y", "\"'=\"\"x\"\",y\""},
	    {"a=1", "a=1"},
	    {"a-b", "a-b"},
	    {"a,b", "\"a,b\""},
	    {" lead", "\" lead\""},
	    {"t\xff\xfe", "t" UTF8_REPLACEMENT UTF8_REPLACEMENT},
	    {"caf\xc3\xa9", "caf\xc3\xa9"},
	};
	struct spend_query q;
	struct spend_result r;
	struct spend_row row;
	struct spend_out o;
	char want[256];
	size_t i;

	(void)state;
	spend_query_init(&q, SPEND_KIND_SPEND);
	q.sq_format = SPEND_FORMAT_CSV;
	q.sq_group[0] = SPEND_DIM_TEAM;
	q.sq_ngroup = 1;
	for (i = 0; i < nitems(cases); i++) {
		memset(&row, 0, sizeof(row));
		memset(&r, 0, sizeof(r));
		row.sr_keys[0] = (char *)(uintptr_t)cases[i].key;
		row.sr_calls = 2;
		row.sr_input_tokens = 30;
		row.sr_output_tokens = 4;
		row.sr_cost_nusd = 1500;
		r.sr_rows = &row;
		r.sr_nrows = 1;
		spend_out_init(&o, 1024);
		spend_write(&q, &r, &o);
		snprintf(want, sizeof(want),
		    "team,calls,input_tokens,output_tokens,cost_usd,"
		    "fallback_calls,fallback_cost_usd,saved_usd,"
		    "routed_calls,cache_hits\r\n"
		    "%s,2,30,4,0.000001500,0,0.000000000,0.000000000,0,0\r\n",
		    cases[i].cell);
		if (strcmp(o.so_buf, want) != 0)
			fail_msg("%s: '%s', want '%s'", cases[i].key, o.so_buf,
			    want);
		spend_out_free(&o);
	}
	spend_query_free(&q);
}

/* JSON: docs/api.md's shape, exact cost_usd text, null keys, the echo. */
static void
test_json(void **state)
{
	struct spend_out o;
	const char *ctype;
	char *cause = NULL, want[128];
	cJSON *doc, *rows, *row;
	int64_t sum = 0, n;
	int status;

	(void)state;
	spend_out_init(&o, SPEND_OUT_MAX);
	status = spend_answer(fx.db, NULL, SPEND_KIND_SPEND,
	    "group_by=team,agent_class&month=2026-11", &o, &ctype, &cause);
	assert_int_equal(status, 200);
	assert_string_equal(ctype, "application/json");
	doc = cJSON_Parse(o.so_buf);
	assert_non_null(doc);
	rows = cJSON_GetObjectItem(doc, "rows");
	assert_true(cJSON_IsArray(rows));
	cJSON_ArrayForEach(row, rows)
	{
		assert_non_null(cJSON_GetObjectItem(row, "team"));
		assert_non_null(cJSON_GetObjectItem(row, "agent_class"));
		assert_non_null(cJSON_GetObjectItem(row, "calls"));
		assert_non_null(cJSON_GetObjectItem(row, "input_tokens"));
		assert_non_null(cJSON_GetObjectItem(row, "output_tokens"));
		assert_non_null(cJSON_GetObjectItem(row, "cost_usd"));
		n = (int64_t)cJSON_GetObjectItem(row, "cost_nusd")->valuedouble;
		sum += n;
		/* cost_usd printed from the integer: its exact text. */
		snprintf(want, sizeof(want),
		    "\"cost_nusd\":%" PRId64 ",\"cost_usd\":%" PRId64
		    ".%09" PRId64 ",\"saved_nusd\":0,\"saved_usd\":0.000000000,"
		    "\"fallback_calls\":0,",
		    n, n / 1000000000, n % 1000000000);
		assert_non_null(strstr(o.so_buf, want));
	}
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(
			cJSON_GetArrayItem(rows, 0), "team")) ||
	    strstr(o.so_buf, "\"team\":null") != NULL);
	n = truth("cost_nusd", "2026-11-01T00:00:00.000Z",
	    "2026-12-01T00:00:00.000Z");
	assert_int_equal(sum, n);
	snprintf(want, sizeof(want),
	    "\"total_cost_usd\":%" PRId64 ".%09" PRId64
	    ",\"total_cost_nusd\":%" PRId64 ",",
	    n / 1000000000, n % 1000000000, n);
	assert_non_null(strstr(o.so_buf, want));
	assert_string_equal(cJSON_GetObjectItem(doc, "from")->valuestring,
	    "2026-11-01T00:00:00.000Z");
	assert_string_equal(cJSON_GetObjectItem(doc, "to")->valuestring,
	    "2026-12-01T00:00:00.000Z");
	assert_int_equal(
	    cJSON_GetArraySize(cJSON_GetObjectItem(doc, "group_by")), 2);
	cJSON_Delete(doc);
	spend_out_free(&o);

	spend_out_init(&o, SPEND_OUT_MAX);
	assert_int_equal(spend_answer(fx.db, NULL, SPEND_KIND_SPEND,
			     "group_by=colour", &o, &ctype, &cause),
	    400);
	assert_string_equal(cause,
	    "group_by: unknown dimension 'colour' (one "
	    "of team, tenant, agent_class, environment, "
	    "intent, model, provider, day, month, hour)");
	free(cause);
	cause = NULL;
	assert_int_equal(o.so_len, 0);
	assert_int_equal(spend_answer(fx.db, NULL, SPEND_KIND_SPEND,
			     "group_by=day&format=csv", &o, &ctype, &cause),
	    200);
	assert_string_equal(ctype, "text/csv; charset=utf-8");
	spend_out_free(&o);

	/* A buffer too small for the answer: 413, nothing half-written. */
	spend_out_init(&o, 256);
	assert_int_equal(spend_answer(fx.db, NULL, SPEND_KIND_SPEND,
			     "group_by=day", &o, &ctype, &cause),
	    413);
	assert_int_equal(o.so_len, 0);
	free(cause);
	spend_out_free(&o);
}

/* Exact USD text for awkward values. */
static void
test_usd(void **state)
{
	static const struct {
		int64_t nusd;
		const char *text;
	} cases[] = {
	    {0, "0.000000000"},
	    {1, "0.000000001"},
	    {12345678901LL, "12.345678901"},
	    {-1500000000LL, "-1.500000000"},
	    {INT64_MAX, "9223372036.854775807"},
	    {INT64_MIN, "-9223372036.854775808"},
	};
	struct spend_out o;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		spend_out_init(&o, 64);
		spend_out_usd(&o, cases[i].nusd);
		assert_string_equal(o.so_buf, cases[i].text);
		spend_out_free(&o);
	}
}

/* Table cells: padded either way, control bytes never reach a terminal. */
static void
test_cells(void **state)
{
	struct spend_out o;

	(void)state;
	spend_out_init(&o, 256);
	spend_out_cell(&o, "ab", 4);
	spend_out_cell(&o, "|", 1);
	spend_out_cell(&o, "ab", -4);
	spend_out_cell(&o, "\x1b[2Jx\x7f", -3);
	spend_out_cell(&o, "toolong", 3);
	assert_string_equal(o.so_buf, "  ab|ab  ?[2Jx?toolong");
	spend_out_free(&o);

	/* Padding counts characters, not bytes; C1 controls are '?' too,
	 * and a byte that is not UTF-8 is U+FFFD. */
	spend_out_init(&o, 256);
	spend_out_cell(&o, "\xc3\xa9", 3);
	spend_out_cell(&o, "|", 1);
	spend_out_cell(&o, "a\xff", -3);
	spend_out_cell(&o, "|", 1);
	spend_out_cell(&o,
	    "\xc2\x9b"
	    "2J\xc2\xa0",
	    5);
	assert_string_equal(
	    o.so_buf, "  \xc3\xa9|a" UTF8_REPLACEMENT " | ?2J\xc2\xa0");
	spend_out_free(&o);
}

/* JSON strings: escapes, and U+FFFD for every byte that is not UTF-8. */
static void
test_json_strings(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"plain", "\"plain\""},
	    {"q\"b\\n\n\x01\x1f\x7f", "\"q\\\"b\\\\n\\n\\u0001\\u001f\x7f\""},
	    {"caf\xc3\xa9\xf0\x9f\x98\x80", "\"caf\xc3\xa9\xf0\x9f\x98\x80\""},
	    {"gpt\xff\xfe", "\"gpt" UTF8_REPLACEMENT UTF8_REPLACEMENT "\""},
	    {"\xe2\x82\"", "\"" UTF8_REPLACEMENT UTF8_REPLACEMENT "\\\"\""},
	    {"\xed\xa0\x80x",
		"\"" UTF8_REPLACEMENT UTF8_REPLACEMENT UTF8_REPLACEMENT "x\""},
	};
	struct spend_out o;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		spend_out_init(&o, 256);
		spend_out_json_str(&o, cases[i].in);
		if (strcmp(o.so_buf, cases[i].out) != 0)
			fail_msg(
			    "case %zu: %s, want %s", i, o.so_buf, cases[i].out);
		spend_out_free(&o);
	}
}

/* Page through calls with the cursor; collect the ids seen. */
static size_t
page_all(const char *filter, int limit, char ***ids, int insert_between)
{
	struct spend_query q;
	struct spend_out o;
	char qs[1024], *cursor = NULL, *cause = NULL;
	cJSON *doc, *calls, *c, *next;
	size_t n = 0, cap = 0;
	int page = 0;
	sqlite3 *rw;

	*ids = NULL;
	for (;;) {
		snprintf(qs, sizeof(qs), "limit=%d%s%s%s", limit, filter,
		    cursor != NULL ? "&cursor=" : "",
		    cursor != NULL ? cursor : "");
		parse_ok(&q, SPEND_KIND_CALLS, qs);
		spend_out_init(&o, SPEND_OUT_MAX);
		if (spend_calls(fx.db, &q, &o, &cause) != 0)
			fail_msg("spend_calls: %s", cause);
		doc = cJSON_Parse(o.so_buf);
		assert_non_null(doc);
		calls = cJSON_GetObjectItem(doc, "calls");
		assert_true(cJSON_GetArraySize(calls) <= limit);
		cJSON_ArrayForEach(c, calls)
		{
			if (n == cap) {
				cap = cap ? cap * 2 : 256;
				*ids = xreallocarray(*ids, cap, sizeof(char *));
			}
			(*ids)[n++] =
			    xstrdup(cJSON_GetObjectItem(c, "id")->valuestring);
			assert_non_null(cJSON_GetObjectItem(c, "cost_usd"));
			assert_non_null(cJSON_GetObjectItem(c, "ttfb_ms"));
		}
		free(cursor);
		cursor = NULL;
		next = cJSON_GetObjectItem(doc, "next_cursor");
		if (cJSON_IsString(next))
			cursor = xstrdup(next->valuestring);
		else
			assert_true(cJSON_IsNull(next));
		cJSON_Delete(doc);
		spend_out_free(&o);
		spend_query_free(&q);
		if (insert_between && page++ == 1) {
			/* Rows arrive meanwhile: newer, older, same time. */
			assert_int_equal(sqlite3_open(fx.path, &rw), SQLITE_OK);
			sqlite3_busy_timeout(rw, 5000);
			assert_int_equal(
			    sqlite3_exec(rw,
				"INSERT INTO calls (id, started_at,"
				" status, intent) VALUES"
				" ('new-1', '2026-12-31T00:00:00.000Z',"
				" 'ok', 'i-1'),"
				" ('new-2', '2026-10-01T00:00:00.000Z',"
				" 'ok', 'i-1')",
				NULL, NULL, NULL),
			    SQLITE_OK);
			sqlite3_close(rw);
		}
		if (cursor == NULL)
			break;
	}
	return (n);
}

static int
cmp_str(const void *a, const void *b)
{
	return (strcmp(*(char *const *)a, *(char *const *)b));
}

/* No id twice; frees ids. */
static void
check_once(char **ids, size_t n)
{
	size_t i;

	qsort(ids, n, sizeof(*ids), cmp_str);
	for (i = 1; i < n; i++)
		if (strcmp(ids[i - 1], ids[i]) == 0)
			fail_msg("%s seen twice", ids[i]);
	for (i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

/* Every row exactly once, newest first, even while rows arrive. */
static void
test_calls_paging(void **state)
{
	char **ids;
	size_t n, i;
	int64_t want;

	(void)state;
	want = sql_int("SELECT count(*) FROM calls WHERE intent = 'i-3'", NULL);
	n = page_all("&intent=i-3", 7, &ids, 0);
	assert_int_equal(n, want);
	check_once(ids, n);

	want = sql_int("SELECT count(*) FROM calls WHERE intent = 'i-1'", NULL);
	n = page_all("&intent=i-1", 50, &ids, 1);
	/* Everything there at the start, plus the older row that came. */
	assert_int_equal(n, want + 1);
	for (i = 0; i < n; i++)
		assert_string_not_equal(ids[i], "new-1");
	check_once(ids, n);

	/* All statuses including in_flight; a status filter narrows. */
	n = page_all("&status=in_flight", 1000, &ids, 0);
	assert_int_equal(n, NINFLIGHT);
	for (i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

/* Calls come newest first, and a first page holds the newest rows. */
static void
test_calls_order(void **state)
{
	struct spend_query q;
	struct spend_out o;
	char *cause = NULL;
	cJSON *doc, *calls, *c;
	const char *prev_at = NULL, *prev_id = NULL, *at, *id;

	(void)state;
	parse_ok(&q, SPEND_KIND_CALLS, "limit=1000&team=support");
	spend_out_init(&o, SPEND_OUT_MAX);
	assert_int_equal(spend_calls(fx.db, &q, &o, &cause), 0);
	doc = cJSON_Parse(o.so_buf);
	calls = cJSON_GetObjectItem(doc, "calls");
	assert_true(cJSON_GetArraySize(calls) > 10);
	cJSON_ArrayForEach(c, calls)
	{
		at = cJSON_GetObjectItem(c, "started_at")->valuestring;
		id = cJSON_GetObjectItem(c, "id")->valuestring;
		assert_string_equal(
		    cJSON_GetObjectItem(c, "team")->valuestring, "support");
		if (prev_at != NULL)
			assert_true(strcmp(prev_at, at) > 0 ||
			    (strcmp(prev_at, at) == 0 &&
				strcmp(prev_id, id) > 0));
		prev_at = at;
		prev_id = id;
	}
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(doc, "next_cursor")));
	cJSON_Delete(doc);
	spend_out_free(&o);
	spend_query_free(&q);
}

/* The table format: aligned, with a total line. */
static void
test_table(void **state)
{
	struct spend_query q;
	struct spend_result r;
	struct spend_out o;
	char *p, total[64];

	(void)state;
	parse_ok(&q, SPEND_KIND_SPEND, "group_by=provider&format=table");
	run_ok(&q, &r);
	spend_out_init(&o, SPEND_OUT_MAX);
	spend_write(&q, &r, &o);
	assert_true(strncmp(o.so_buf, "provider ", 9) == 0);
	assert_non_null(strstr(o.so_buf, "(none)"));
	p = strstr(o.so_buf, "\ntotal ");
	assert_non_null(p);
	snprintf(total, sizeof(total), "%" PRId64 ".%09" PRId64 "\n",
	    r.sr_total.sr_cost_nusd / 1000000000,
	    r.sr_total.sr_cost_nusd % 1000000000);
	assert_non_null(strstr(p, total));
	spend_out_free(&o);
	spend_result_free(&r);
	spend_query_free(&q);
}

/* '?' placeholders become $1, $2, ... outside quoted text only. */
static void
test_sql_number(void **state)
{
	static const struct {
		const char *in;
		const char *want; /* NULL: the output is too small */
		int n;
	} cases[] = {
	    {"SELECT 1", "SELECT 1", 0},
	    {"a = ? AND b < ?", "a = $1 AND b < $2", 2},
	    {"x = '?' AND y = ?", "x = '?' AND y = $1", 1},
	    {"x = 'it''s ?' OR y = ?", "x = 'it''s ?' OR y = $1", 1},
	    {"\"odd?\" = ? COLLATE \"C\"", "\"odd?\" = $1 COLLATE \"C\"", 1},
	    {"?????????? ?", "$1$2$3$4$5$6$7$8$9$10 $11", 11},
	    {"", "", 0},
	};
	char out[64], small[8];
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		assert_int_equal(
		    spend_sql_number(cases[i].in, out, sizeof(out)),
		    cases[i].n);
		assert_string_equal(out, cases[i].want);
	}
	/* Too small, by the placeholder or by the text: refused, no overrun. */
	assert_int_equal(
	    spend_sql_number("a = ? ? ?", small, sizeof(small)), -1);
	assert_int_equal(
	    spend_sql_number("abcdefgh", small, sizeof(small)), -1);
	assert_int_equal(spend_sql_number("abcdefg", small, sizeof(small)), 0);
	assert_string_equal(small, "abcdefg");
}

/*
 * fleet=1: parsed for both kinds, refused with a rollup source, and the
 * local ledger refuses to answer it; fleet=0 is the local answer.
 */
static void
test_fleet_param(void **state)
{
	struct spend_query q;
	struct spend_out o;
	const char *ctype;
	char *cause = NULL;

	(void)state;
	parse_ok(&q, SPEND_KIND_SPEND, "fleet=1&group_by=team");
	assert_true(q.sq_fleet);
	spend_query_free(&q);
	parse_ok(&q, SPEND_KIND_CALLS, "fleet=0");
	assert_false(q.sq_fleet);
	spend_query_free(&q);

	spend_query_init(&q, SPEND_KIND_SPEND);
	assert_int_equal(spend_query_set(&q, "fleet", "1", &cause), 0);
	q.sq_path = SPEND_PATH_ROLLUP;
	assert_int_equal(spend_query_finish(&q, "--", &cause), -1);
	assert_string_equal(cause,
	    "--fleet: the fleet ledger has no rollup; it answers from its "
	    "calls table only");
	free(cause);
	cause = NULL;
	q.sq_path = SPEND_PATH_CALLS;
	assert_int_equal(spend_query_finish(&q, "--", &cause), 0);
	spend_query_free(&q);

	spend_out_init(&o, SPEND_OUT_MAX);
	assert_int_equal(spend_answer(fx.db, NULL, SPEND_KIND_SPEND, "fleet=1",
			     &o, &ctype, &cause),
	    400);
	assert_non_null(strstr(cause, "ledger.ship"));
	assert_int_equal(o.so_len, 0);
	free(cause);
	cause = NULL;
	assert_int_equal(spend_answer(fx.db, NULL, SPEND_KIND_SPEND,
			     "fleet=0&group_by=team", &o, &ctype, &cause),
	    200);
	spend_out_free(&o);
}

/*
 * The statements for PostgreSQL: the same text as SQLite's but for
 * byte-order collation, no SQLite-only syntax, a bound on the groups,
 * and (calls) the instance as the last key of the order and the cursor.
 */
static void
test_pg_statements(void **state)
{
	struct spend_query q;
	struct spend_stmt lite, pg;
	char num[SPEND_SQL_MAX + 64];
	char *at = NULL, *id = NULL, *cur;
	int i;

	(void)state;
	parse_ok(&q, SPEND_KIND_SPEND,
	    "group_by=team,day&team=&model=gpt-4o&from=2026-11-01T12:00:00Z"
	    "&to=2026-11-03");
	spend_stmt_spend(&lite, &q, SPEND_SQLITE);
	spend_stmt_spend(&pg, &q, SPEND_PG);
	assert_null(strstr(lite.st_sql, "COLLATE"));
	assert_non_null(strstr(pg.st_sql, "coalesce(team, '') COLLATE \"C\""));
	assert_null(strstr(pg.st_sql, "ifnull"));
	assert_null(strstr(pg.st_sql, "WHERE 1 "));
	assert_int_equal(lite.st_nparams, 3); /* from, to, model */
	assert_int_equal(pg.st_nparams, 4); /* and the bound on groups */
	for (i = 0; i < lite.st_nparams; i++)
		assert_string_equal(lite.st_params[i], pg.st_params[i]);
	assert_string_equal(pg.st_params[0], "2026-11-01T12:00:00.000Z");
	assert_string_equal(pg.st_params[1], "2026-11-04T00:00:00.000Z");
	assert_string_equal(pg.st_params[2], "gpt-4o");
	assert_true(pg.st_isint[3]);
	assert_int_equal(spend_sql_number(pg.st_sql, num, sizeof(num)), 4);
	assert_non_null(strstr(num, "started_at >= $1 AND started_at < $2"));
	assert_non_null(strstr(num, "model = $3"));
	assert_non_null(strstr(num, "LIMIT $4"));
	assert_null(strchr(num, '?'));
	spend_stmt_free(&lite);
	spend_stmt_free(&pg);
	spend_query_free(&q);

	/* A fleet cursor carries the instance: the order ends with it. */
	cur = spend_cursor_encode("2026-11-28T14:23:00.123Z", "req-1\ni-2");
	assert_int_equal(spend_cursor_decode(cur, &at, &id), 0);
	free(at);
	free(id);
	xasprintf(&at, "status=ok&limit=5&cursor=%s", cur);
	parse_ok(&q, SPEND_KIND_CALLS, at);
	free(at);
	free(cur);
	assert_string_equal(q.sq_cursor_id, "req-1");
	assert_string_equal(q.sq_cursor_inst, "i-2");
	spend_stmt_calls(&pg, &q, SPEND_PG);
	assert_int_equal(spend_sql_number(pg.st_sql, num, sizeof(num)), 7);
	assert_non_null(strstr(num,
	    "AND status = $1 AND (started_at < $2 OR (started_at = $3 AND "
	    "(id COLLATE \"C\" < $4 OR (id COLLATE \"C\" = $5 AND instance "
	    "COLLATE \"C\" < $6)))) ORDER BY started_at DESC, id COLLATE "
	    "\"C\" DESC, instance COLLATE \"C\" DESC LIMIT $7"));
	assert_string_equal(pg.st_params[6], "6");
	spend_stmt_free(&pg);
	/* The local ledger has no instance: its cursor ignores one. */
	spend_stmt_calls(&lite, &q, SPEND_SQLITE);
	assert_non_null(strstr(lite.st_sql,
	    "AND (started_at < ? OR (started_at = ? AND (id < ?))) ORDER BY "
	    "started_at DESC, id DESC LIMIT ?"));
	assert_int_equal(lite.st_nparams, 5);
	spend_stmt_free(&lite);
	spend_query_free(&q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_times),
	    cmocka_unit_test(test_param_errors),
	    cmocka_unit_test(test_params_ok),
	    cmocka_unit_test(test_usd),
	    cmocka_unit_test(test_cells),
	    cmocka_unit_test(test_json_strings),
	    cmocka_unit_test(test_totals),
	    cmocka_unit_test(test_group_rows),
	    cmocka_unit_test(test_group_hour),
	    cmocka_unit_test(test_rollup_equals_calls),
	    cmocka_unit_test(test_mixed_equals_calls),
	    cmocka_unit_test(test_filters),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_csv),
	    cmocka_unit_test(test_csv_cells),
	    cmocka_unit_test(test_json),
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_calls_order),
	    cmocka_unit_test(test_calls_paging),
	    cmocka_unit_test(test_sql_number),
	    cmocka_unit_test(test_fleet_param),
	    cmocka_unit_test(test_pg_statements),
	};

	return (cmocka_run_group_tests(tests, group_setup, group_teardown));
}
