/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fixture the ledger tests share (test_ledger.c, test_ledger_ship.c,
 * test_journal.c): a database in a temp directory and a real event_base,
 * the ledger opened on them, the loop run until answers arrive or the
 * writer is idle, a call row and the outcome that settles it, and
 * read-only queries through a connection of their own. Each test keeps its own rows, answers and
 * checks. Include after cmocka.h, sqlite3.h and the ledger's sources.
 */
#ifndef TOLLGATE_LEDGERTEST_H
#define TOLLGATE_LEDGERTEST_H

#include "tmptree.h"

/* 2026-11-28T14:23:00.123Z */
#define T0 1795875780123LL
#define DAY_MS 86400000LL

static struct {
	char dir[64];
	char path[128];
	struct event_base *base;
} fx;

/* A temp directory made from tmpl ("...XXXXXX"), fx.path in it, a loop. */
static int
ledgertest_setup(const char *tmpl)
{
	snprintf(fx.dir, sizeof(fx.dir), "%s", tmpl);
	if (mkdtemp(fx.dir) == NULL)
		return (-1);
	snprintf(fx.path, sizeof(fx.path), "%s/ledger.db", fx.dir);
	fx.base = event_base_new();
	return (fx.base == NULL ? -1 : 0);
}

static int
teardown(void **state)
{
	(void)state;
	ledger_close();
	event_base_free(fx.base);
	tmptree_remove(fx.dir);
	return (0);
}

static void
open_ok(enum durability dur, size_t queue_max)
{
	char *cause = NULL;

	if (ledger_open(fx.base, fx.path, dur, queue_max, &cause) != 0)
		fail_msg("ledger_open: %s", cause);
}

/* Run the loop until *count reaches want; fail after 20 s. */
static void
run_until(const int *count, int want)
{
	long long deadline = monotime_us() + 20000000LL;

	while (*count < want) {
		if (monotime_us() > deadline)
			fail_msg("timed out: %d of %d", *count, want);
		event_base_loop(fx.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		if (*count < want)
			usleep(500);
	}
}

/* Wait until the writer has finished every item, then run the callbacks. */
static void
flush(void)
{
	struct ledger_stats st;
	long long deadline = monotime_us() + 20000000LL;

	for (;;) {
		ledger_stats(&st);
		if (st.ls_queue_depth == 0)
			break;
		if (monotime_us() > deadline)
			fail_msg(
			    "flush timed out, %zu queued", st.ls_queue_depth);
		usleep(500);
	}
	event_base_loop(fx.base, EVLOOP_NONBLOCK);
}

/* A call of team support to gpt-4o reserved at started, still in flight. */
static struct ledger_row
mkrow_at(const char *id, int64_t started)
{
	struct ledger_row r;

	memset(&r, 0, sizeof(r));
	r.lr_id = id;
	r.lr_started_ms = started;
	r.lr_provider = "openai";
	r.lr_endpoint = "chat_completions";
	r.lr_upstream = "openai";
	r.lr_model = "gpt-4o";
	r.lr_tags[TAG_TEAM] = "support";
	r.lr_status = CALL_IN_FLIGHT;
	r.lr_usage_source = USAGE_NONE;
	r.lr_reserved_nusd = 3000000;
	r.lr_latency_ms = -1;
	r.lr_ttfb_ms = -1;
	return (r);
}

/* Make r the outcome of its call: ok 1.5 s later, usage reported, priced. */
static void
set_ok(struct ledger_row *r)
{
	r->lr_status = CALL_OK;
	r->lr_finished_ms = r->lr_started_ms + 1500;
	r->lr_http_status = 200;
	r->lr_input_tokens = 1200;
	r->lr_output_tokens = 300;
	r->lr_usage_source = USAGE_REPORTED;
	r->lr_cost_nusd = 1234567;
	r->lr_latency_ms = 1500;
}

/*
 * fmt's query prepared on a read-only connection of its own, which the
 * caller closes after the statement; an error fails the test.
 */
static sqlite3_stmt *
q_prepare(sqlite3 **db, const char *fmt, va_list ap)
{
	sqlite3_stmt *st;
	char *sql;

	sql = sqlite3_vmprintf(fmt, ap);
	assert_int_equal(
	    sqlite3_open_v2(fx.path, db, SQLITE_OPEN_READONLY, NULL),
	    SQLITE_OK);
	if (sqlite3_prepare_v2(*db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(*db));
	sqlite3_free(sql);
	return (st);
}

/* A read-only query answering one number (NULL: INT64_MIN). */
static int64_t
q_int(const char *fmt, ...)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	va_list ap;
	int64_t v = INT64_MIN;

	va_start(ap, fmt);
	st = q_prepare(&db, fmt, ap);
	va_end(ap);
	if (sqlite3_step(st) == SQLITE_ROW &&
	    sqlite3_column_type(st, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return (v);
}

/* A read-only query answering one string, or "(null)"; static buffer. */
static const char *
q_text(const char *fmt, ...)
{
	static char buf[256];
	sqlite3 *db;
	sqlite3_stmt *st;
	const unsigned char *t;
	va_list ap;

	va_start(ap, fmt);
	st = q_prepare(&db, fmt, ap);
	va_end(ap);
	snprintf(buf, sizeof(buf), "(none)");
	if (sqlite3_step(st) == SQLITE_ROW) {
		t = sqlite3_column_text(st, 0);
		snprintf(buf, sizeof(buf), "%s",
		    t != NULL ? (const char *)t : "(null)");
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return (buf);
}

/*
 * Plain SQL on the closed ledger, as an operator, a crash or an older
 * tollgate would leave it.
 */
static void
rw_exec(const char *sql)
{
	sqlite3 *db;
	char *err = NULL;

	assert_int_equal(sqlite3_open(fx.path, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
	sqlite3_close(db);
}

#define GROUP_SUMS                                                             \
	"SELECT substr(started_at, 1, 10), coalesce(provider, ''),"            \
	" coalesce(model, ''), coalesce(team, ''), coalesce(tenant, ''),"      \
	" coalesce(agent_class, ''), coalesce(environment, ''), count(*),"     \
	" sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),"    \
	" sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_nusd)"      \
	" FROM calls WHERE status <> 'in_flight' GROUP BY 1, 2, 3, 4, 5, 6, 7"

/* The rollup equals the sums over calls, group by group, to the nano-USD. */
static void
assert_rollup_exact(void)
{
	assert_int_equal(q_int("SELECT count(*) FROM (SELECT * FROM "
			       "calls_daily EXCEPT " GROUP_SUMS ")"),
	    0);
	assert_int_equal(q_int("SELECT count(*) FROM (" GROUP_SUMS
			       " EXCEPT SELECT * FROM calls_daily)"),
	    0);
	assert_int_equal(q_int("SELECT coalesce(sum(cost_nusd), 0) FROM "
			       "calls_daily"),
	    q_int("SELECT coalesce(sum(cost_nusd), 0) FROM calls WHERE "
		  "status <> 'in_flight'"));
}

#endif /* TOLLGATE_LEDGERTEST_H */
