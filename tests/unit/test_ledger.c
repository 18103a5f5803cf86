/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger, driven for real: a real event_base, a database in a temp
 * directory, the writer thread, and every row read back through a separate
 * read-only connection (the fixture of ledgertest.h, which
 * test_ledger_ship.c shares). The ledger's sources are compiled in here with
 * TG_UNITTEST, which adds the test hooks (a disk that fills up, a writer
 * that holds still) and nothing to the daemon. A reserved call is in the
 * journal and in memory until its settlement writes its one row; the
 * journal's own cases are in test_journal.c. TG_LEDGER_BENCH=1 also runs
 * the 10,000-row bursts of docs/internals/ledger.md.
 */
#define TG_UNITTEST 1

#include <sys/file.h>
#include <sys/stat.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "../../src/ledger/store.c"
#include "../../src/ledger/schema.c"
#include "../../src/ledger/ledger.c"
#include "../../src/ledger/writer.c"
#include "../../src/ledger/checkpoint.c"
#include "../../src/ledger/rebuild.c"
#include "../../src/ledger/inflight.c"
#include "../../src/ledger/journal.c"
#include "../../src/ledger/replay.c"
#include "../../src/ledger/syncer.c"
#include "../../src/ledger/turn.c"
#include "../../src/ledger/unwritten.c"

#include "ledgertest.h"

#define BIG 6000 /* bytes: a string that needs overflow pages */

struct answer {
	int fired;
	enum ledger_result result;
	int index;
	int settle; /* settle from the callback, as a session would */
	const char *id; /* for burst_cb, when not burst_ids[index] */
};

static int answers_fired;

static void
answer_cb(void *arg, enum ledger_result r)
{
	struct answer *a = arg;

	a->fired++;
	a->result = r;
	answers_fired++;
}

static int
setup(void **state)
{
	(void)state;
	answers_fired = 0;
	return (ledgertest_setup("/tmp/tg-ledger-XXXXXX"));
}

/* A streamed call with every tag, a key and a price version. */
static struct ledger_row
mkrow(const char *id)
{
	struct ledger_row r = mkrow_at(id, T0);

	r.lr_tags[TAG_INTENT] = "summarise";
	r.lr_tags[TAG_TENANT] = "acme";
	r.lr_tags[TAG_AGENT_CLASS] = "ticket-agent";
	r.lr_tags[TAG_ENVIRONMENT] = "prod";
	r.lr_key_fingerprint = "0123456789abcdef";
	r.lr_stream = 1;
	r.lr_price_version = "2026-11-01";
	return (r);
}

/* The outcome of the call reserved by mkrow(id). */
static struct ledger_row
mksettle(const char *id)
{
	struct ledger_row r = mkrow(id);

	set_ok(&r);
	r.lr_cached_input_tokens = 1000;
	r.lr_cache_write_tokens = 0;
	r.lr_reasoning_tokens = 100;
	r.lr_model = "gpt-4o-2024-08-06";
	r.lr_ttfb_ms = 230;
	return (r);
}

/* Settle id as mksettle does and wait until its row is committed. */
static void
settle_wait(const char *id)
{
	struct ledger_row s = mksettle(id);

	ledger_settle(&s);
	flush();
}

/* A file next to the ledger whose name starts with prefix, or NULL. */
static const char *
sibling(const char *prefix)
{
	static char found[sizeof(fx.dir) + 1 + 256];
	struct dirent *de;
	DIR *dir;

	found[0] = '\0';
	if ((dir = opendir(fx.dir)) == NULL)
		return (NULL);
	while ((de = readdir(dir)) != NULL)
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			snprintf(
			    found, sizeof(found), "%s/%s", fx.dir, de->d_name);
	closedir(dir);
	return (found[0] != '\0' ? found : NULL);
}

static void
test_names(void **state)
{
	(void)state;
	assert_string_equal(ledger_status_name(CALL_IN_FLIGHT), "in_flight");
	assert_string_equal(
	    ledger_status_name(CALL_CLIENT_CLOSED), "client_closed");
	assert_string_equal(
	    ledger_status_name(CALL_UPSTREAM_ERROR), "upstream_error");
	assert_string_equal(
	    ledger_status_name(CALL_INTERRUPTED), "interrupted");
	assert_string_equal(
	    ledger_status_name((enum call_status)99), "unknown");
	assert_string_equal(ledger_usage_source_name(USAGE_NONE), "none");
	assert_string_equal(
	    ledger_usage_source_name(USAGE_REPORTED), "reported");
	assert_string_equal(
	    ledger_usage_source_name(USAGE_ESTIMATED), "estimated");
}

static void
test_time_format(void **state)
{
	static const struct {
		int64_t ms;
		const char *want;
	} cases[] = {
	    {0, "1970-01-01T00:00:00.000Z"},
	    {T0, "2026-11-28T14:23:00.123Z"},
	    {T0 + 877, "2026-11-28T14:23:01.000Z"},
	    {-1, "1969-12-31T23:59:59.999Z"},
	    {951782400999LL, "2000-02-29T00:00:00.999Z"},
	};
	char buf[LEDGER_TIME_MAX];
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		ledger_format_time(cases[i].ms, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].want);
	}
}

static void
test_open_process(void **state)
{
	struct stat sb;
	char *cause = NULL;

	(void)state;
	/* The parent directory is made, 0700. */
	snprintf(fx.path, sizeof(fx.path), "%s/a/b/ledger.db", fx.dir);
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(ledger_test_synchronous(), 1);
	assert_int_equal(stat(fx.path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(fx.path, sizeof(fx.path), "%s/a/b", fx.dir);
	assert_int_equal(stat(fx.path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	snprintf(fx.path, sizeof(fx.path), "%s/a/b/ledger.db", fx.dir);
	assert_string_equal(q_text("PRAGMA journal_mode"), "wal");
	assert_int_equal(q_int("PRAGMA user_version"), 3);
	assert_int_equal(q_int("SELECT count(*) FROM sqlite_schema WHERE "
			       "type = 'trigger'"),
	    4);

	/* Once per process, and once per file. */
	assert_int_equal(
	    ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause), -1);
	assert_non_null(strstr(cause, "already open"));
	free(cause);
}

static void
test_open_power(void **state)
{
	(void)state;
	open_ok(DURABILITY_POWER, 0);
	assert_int_equal(ledger_test_synchronous(), 2);
	ledger_close();
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(ledger_test_synchronous(), 1);
}

static void
test_open_columns(void **state)
{
	static const char *const cols[] = {"id", "started_at", "finished_at",
	    "provider", "endpoint", "upstream", "model", "intent", "team",
	    "tenant", "agent_class", "environment", "key_fingerprint", "stream",
	    "status", "http_status", "input_tokens", "output_tokens",
	    "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
	    "usage_source", "cost_nusd", "reserved_nusd", "price_version",
	    "refusal_reason", "latency_ms", "ttfb_ms", "served_model",
	    "ship_seq", "routed_from", "routed_rule", "saved_nusd", "attempts",
	    "attempt_log", "cache_hit"};
	size_t i;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(
	    q_int("SELECT count(*) FROM pragma_table_info('calls')"),
	    (int64_t)nitems(cols));
	for (i = 0; i < nitems(cols); i++)
		assert_string_equal(q_text("SELECT name FROM "
					   "pragma_table_info('calls') WHERE "
					   "cid = %d",
					(int)i),
		    cols[i]);
	assert_int_equal(q_int("SELECT count(*) FROM sqlite_schema WHERE "
			       "type = 'index' AND tbl_name = 'calls' AND "
			       "sql IS NOT NULL"),
	    7);
	assert_int_equal(q_int("SELECT count(*) FROM sqlite_schema WHERE "
			       "name = 'calls_fallback'"),
	    1);
	assert_int_equal(q_int("SELECT count(*) FROM sqlite_schema WHERE "
			       "name = 'calls_routed'"),
	    1);
}

static void
test_open_refused(void **state)
{
	char *cause = NULL;
	int fd;

	(void)state;
	/* A newer schema. */
	rw_exec("PRAGMA user_version = 99");
	assert_int_equal(
	    ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause), -1);
	assert_non_null(strstr(cause, "newer"));
	free(cause);
	unlink(fx.path);

	/* Somebody else's database. */
	rw_exec("CREATE TABLE t (x)");
	assert_int_equal(
	    ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause), -1);
	assert_non_null(strstr(cause, "not a tollgate ledger"));
	free(cause);
	unlink(fx.path);

	/* Not a database at all. */
	fd = open(fx.path, O_WRONLY | O_CREAT, 0600);
	assert_true(
	    write(fd, "this is not sqlite, not at all, no\n", 35) == 35);
	close(fd);
	assert_int_equal(
	    ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause), -1);
	assert_non_null(strstr(cause, "file is not a database"));
	free(cause);
	unlink(fx.path);

	/* Another tollgate holds it. */
	fd = open(fx.path, O_RDWR | O_CREAT, 0600);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	assert_int_equal(
	    ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause), -1);
	assert_non_null(strstr(cause, "in use"));
	free(cause);
	close(fd);
	open_ok(DURABILITY_PROCESS, 0);
}

/* One number from db, a connection of the test's own (NULL: -1). */
static int64_t
db_int(sqlite3 *db, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	char *sql;
	int64_t v = -1;

	va_start(ap, fmt);
	sql = sqlite3_vmprintf(fmt, ap);
	va_end(ap);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	sqlite3_free(sql);
	if (sqlite3_step(st) == SQLITE_ROW &&
	    sqlite3_column_type(st, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return (v);
}

/*
 * A settled call's row is the ledger's to show until the writer is done
 * with it: ledger_unwritten has it, final, while the writer is held, and
 * LEDGER_CALLS_NOW over a reader's connection sees it once, before and
 * after the write.
 */
static void
test_unwritten_settled(void **state)
{
	struct ledger_row r = mkrow("u1"), s = mksettle("u1"), *rows;
	struct answer a = {0};
	sqlite3 *db;
	char *cause = NULL;
	size_t n;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	ledger_test_pause(1);
	ledger_settle(&s);
	n = ledger_unwritten(&rows);
	assert_int_equal(n, 1);
	assert_string_equal(rows[0].lr_id, "u1");
	assert_int_equal(rows[0].lr_status, CALL_OK);
	assert_int_equal(rows[0].lr_cost_nusd, s.lr_cost_nusd);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 0);

	assert_int_equal(
	    sqlite3_open_v2(fx.path, &db, SQLITE_OPEN_READONLY, NULL),
	    SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL),
	    SQLITE_OK);
	assert_int_equal(ledger_rows_load(db, rows, n, &cause), 0);
	free(rows);
	assert_int_equal(db_int(db,
			     "SELECT count(*) FROM " LEDGER_CALLS_NOW
			     " WHERE status = 'ok' AND cost_nusd = %lld",
			     (long long)s.lr_cost_nusd),
	    1);
	/* Still a read-only reader: the ledger itself cannot be written. */
	assert_int_not_equal(
	    sqlite3_exec(db, "DELETE FROM main.calls", NULL, NULL, NULL),
	    SQLITE_OK);

	ledger_test_pause(0);
	flush();
	/* Written: the copy is gone, and the union still shows it once. */
	assert_int_equal(ledger_unwritten(&rows), 0);
	assert_null(rows);
	assert_int_equal(
	    db_int(db,
		"SELECT count(*) FROM " LEDGER_CALLS_NOW " WHERE id = 'u1'"),
	    1);
	sqlite3_close(db);
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE id = 'u1'"), 1);
}

/* Conditions on the writer for wait_writer, read under its lock. */
static int
queued_none(void)
{
	return (ledger->l_queued == 0);
}

static int
dropped_one(void)
{
	return (ledger->l_stats.ls_dropped == 1);
}

/* Wait until cond holds of the writer, or fail after 20 s. */
static void
wait_writer(int (*cond)(void))
{
	long long deadline = monotime_us() + 20000000LL;
	int ok;

	for (;;) {
		pthread_mutex_lock(&ledger->l_lock);
		ok = cond();
		pthread_mutex_unlock(&ledger->l_lock);
		if (ok)
			return;
		if (monotime_us() > deadline)
			fail_msg("timed out waiting for the writer");
		usleep(1000);
	}
}

/*
 * A row SQLite refuses is given up alone while the rows before it in its
 * batch are retried: those must stay shown until they are written, not
 * be let go with it. The writer is held after the batch by a lock
 * another connection takes.
 */
static void
test_unwritten_drop_midbatch(void **state)
{
	struct answer a = {0};
	struct ledger_row r, s, *rows;
	struct ledger_item *it;
	sqlite3 *other;
	const char *ids[] = {"g1", "g2", "g3"};
	size_t i, n;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	for (i = 0; i < 3; i++) {
		r = mkrow(ids[i]);
		assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	}
	run_until(&a.fired, 3);
	flush();
	ledger_test_pause(1);
	for (i = 0; i < 3; i++) {
		s = mksettle(ids[i]);
		ledger_settle(&s);
	}
	/* g3 breaks the status CHECK: SQLite refuses that row alone. */
	pthread_mutex_lock(&ledger->l_lock);
	it = TAILQ_LAST(&ledger->l_queue, ledger_items);
	it->li_row.lr_status = (enum call_status)42;
	pthread_mutex_unlock(&ledger->l_lock);
	assert_int_equal(sqlite3_open(fx.path, &other), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
	    SQLITE_OK);
	ledger_test_pause(0);
	/* The writer has taken the batch: it waits in BEGIN's busy handler. */
	wait_writer(queued_none);
	ledger_test_pause(1); /* seen at its loop's top, after this batch */
	assert_int_equal(
	    sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
	wait_writer(dropped_one); /* g3 given up; g1 and g2 wait to retry */
	n = ledger_unwritten(&rows);
	assert_int_equal(n, 2);
	assert_string_equal(rows[0].lr_id, "g1");
	assert_string_equal(rows[1].lr_id, "g2");
	free(rows);
	ledger_test_pause(0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 2);
	assert_int_equal(ledger_unwritten(&rows), 0);
}

static void
test_reserve_ok(void **state)
{
	struct ledger_row r = mkrow("r1"), *rows;
	struct answer a = {0};
	struct ledger_stats st;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	/* Answered once the loop turn's write has returned, not before. */
	assert_int_equal(a.fired, 0);
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);

	/* In the journal and in memory; no row until it is settled. */
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 0);
	assert_int_equal(ledger_unwritten(&rows), 1);
	assert_string_equal(rows[0].lr_id, "r1");
	assert_int_equal(rows[0].lr_status, CALL_IN_FLIGHT);
	assert_int_equal(rows[0].lr_started_ms, T0);
	assert_int_equal(rows[0].lr_finished_ms, 0);
	assert_string_equal(rows[0].lr_tags[TAG_TEAM], "support");
	assert_string_equal(rows[0].lr_tags[TAG_TENANT], "acme");
	assert_string_equal(rows[0].lr_tags[TAG_AGENT_CLASS], "ticket-agent");
	assert_string_equal(rows[0].lr_tags[TAG_ENVIRONMENT], "prod");
	assert_string_equal(rows[0].lr_tags[TAG_INTENT], "summarise");
	assert_int_equal(rows[0].lr_stream, 1);
	assert_int_equal(rows[0].lr_reserved_nusd, 3000000);
	assert_int_equal(rows[0].lr_cost_nusd, 0);
	assert_string_equal(rows[0].lr_key_fingerprint, "0123456789abcdef");
	assert_string_equal(rows[0].lr_model, "gpt-4o");
	assert_null(rows[0].lr_served_model);
	free(rows);
	/* In flight: not in the rollup yet. */
	assert_int_equal(q_int("SELECT count(*) FROM calls_daily"), 0);

	ledger_stats(&st);
	assert_int_equal(st.ls_rows_written, 0);
	assert_int_equal(st.ls_commits, 0);
	assert_int_equal(st.ls_queue_depth, 0);
	assert_int_equal(st.ls_failures, 0);
	assert_int_equal(st.ls_in_flight, 1);
	assert_int_equal(st.ls_journal_writes, 1);
	assert_int_equal(st.ls_journal_segment, 1);
	assert_true(st.ls_journal_bytes > 8);
}

static void
test_settle_final(void **state)
{
	struct ledger_row r = mkrow("s1"), s;
	struct answer a = {0};
	struct ledger_stats st;
	char id[8];

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	/* The caller's strings are copied: scribble over them. */
	snprintf(id, sizeof(id), "s1");
	s = mksettle(id);
	ledger_settle(&s);
	memset(id, 'x', sizeof(id) - 1);
	flush();

	assert_string_equal(q_text("SELECT status FROM calls"), "ok");
	assert_string_equal(q_text("SELECT finished_at FROM calls"),
	    "2026-11-28T14:23:01.623Z");
	assert_int_equal(q_int("SELECT http_status FROM calls"), 200);
	assert_int_equal(q_int("SELECT input_tokens FROM calls"), 1200);
	assert_int_equal(q_int("SELECT output_tokens FROM calls"), 300);
	assert_int_equal(q_int("SELECT cached_input_tokens FROM calls"), 1000);
	assert_int_equal(q_int("SELECT reasoning_tokens FROM calls"), 100);
	assert_string_equal(
	    q_text("SELECT usage_source FROM calls"), "reported");
	assert_int_equal(q_int("SELECT cost_nusd FROM calls"), 1234567);
	assert_int_equal(q_int("SELECT reserved_nusd FROM calls"), 3000000);
	assert_string_equal(
	    q_text("SELECT model FROM calls"), "gpt-4o-2024-08-06");
	assert_int_equal(q_int("SELECT latency_ms FROM calls"), 1500);
	assert_int_equal(q_int("SELECT ttfb_ms FROM calls"), 230);
	assert_string_equal(
	    q_text("SELECT refusal_reason FROM calls"), "(null)");
	assert_int_equal(q_int("SELECT calls FROM calls_daily"), 1);
	assert_string_equal(
	    q_text("SELECT day FROM calls_daily"), "2026-11-28");
	assert_rollup_exact();

	/* A second settlement changes nothing: the first row stays. */
	s = mksettle("s1");
	s.lr_status = CALL_ERROR;
	s.lr_cost_nusd = 1;
	ledger_settle(&s);
	flush();
	assert_string_equal(q_text("SELECT status FROM calls"), "ok");
	assert_int_equal(q_int("SELECT cost_nusd FROM calls"), 1234567);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 1);
	assert_rollup_exact();

	/*
	 * A settlement of a call not in flight is still a cost: its row is
	 * written (and the mismatch logged), never dropped.
	 */
	s = mksettle("nobody");
	ledger_settle(&s);
	flush();
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'nobody'"), 1234567);
	assert_rollup_exact();

	/* No finish time: now. */
	r = mkrow("s2");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 2);
	s = mksettle("s2");
	s.lr_finished_ms = 0;
	ledger_settle(&s);
	flush();
	assert_true(q_int("SELECT finished_at > '2026-01-01' FROM calls WHERE "
			  "id = 's2'") == 1);
	ledger_stats(&st);
	assert_int_equal(st.ls_in_flight, 0);
}

static void
test_duplicate(void **state)
{
	struct ledger_row r = mkrow("d1"), s;
	struct answer a = {0}, b = {0}, c = {0}, d = {0}, e = {0};
	struct ledger_stats st;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);

	/* In flight: the same id again is a duplicate, nothing written. */
	r.lr_provider = "anthropic";
	r.lr_reserved_nusd = 99;
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &b));
	run_until(&b.fired, 1);
	assert_int_equal(b.result, LEDGER_DUPLICATE);

	/* Twice in one loop turn: the second is the duplicate. */
	r = mkrow("d2");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &c));
	r.lr_reserved_nusd = 7;
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &d));
	run_until(&d.fired, 1);
	assert_int_equal(c.result, LEDGER_OK);
	assert_int_equal(d.result, LEDGER_DUPLICATE);
	ledger_stats(&st);
	assert_int_equal(st.ls_in_flight, 2);

	s = mksettle("d1");
	ledger_settle(&s);
	s = mksettle("d2");
	ledger_settle(&s);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 2);
	assert_string_equal(q_text("SELECT provider FROM calls WHERE id = "
				   "'d1'"),
	    "openai");
	assert_int_equal(q_int("SELECT reserved_nusd FROM calls WHERE id = "
			       "'d1'"),
	    3000000);
	assert_int_equal(q_int("SELECT reserved_nusd FROM calls WHERE id = "
			       "'d2'"),
	    3000000);

	/* Settled, the id has a row: a client's id is asked and refused. */
	r = mkrow("d1");
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &e));
	run_until(&e.fired, 1);
	assert_int_equal(e.result, LEDGER_DUPLICATE);
	ledger_stats(&st);
	assert_int_equal(st.ls_in_flight, 0);
}

static void
test_record_refused(void **state)
{
	struct ledger_row r = mkrow("ref1");
	struct answer a = {0};

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	r.lr_status = CALL_REFUSED;
	r.lr_finished_ms = T0;
	r.lr_http_status = 429;
	r.lr_reserved_nusd = 0;
	r.lr_refusal_reason = "hard budget cap";
	r.lr_tags[TAG_TENANT] = NULL;
	assert_int_equal(ledger_record(&r), 0);
	flush();
	assert_string_equal(q_text("SELECT status FROM calls"), "refused");
	assert_string_equal(
	    q_text("SELECT refusal_reason FROM calls"), "hard budget cap");
	assert_int_equal(q_int("SELECT http_status FROM calls"), 429);
	assert_int_equal(q_int("SELECT cost_nusd FROM calls"), 0);
	assert_string_equal(q_text("SELECT finished_at FROM calls"),
	    "2026-11-28T14:23:00.123Z");
	assert_string_equal(q_text("SELECT tenant FROM calls"), "(null)");
	/* Counted once, under tenant '' . */
	assert_int_equal(q_int("SELECT calls FROM calls_daily WHERE tenant = "
			       "''"),
	    1);
	assert_rollup_exact();

	/*
	 * A record never replaces a row; a client's id that has one is
	 * refused.
	 */
	r.lr_refusal_reason = "other";
	assert_int_equal(ledger_record(&r), 0);
	r = mkrow("ref1");
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &a));
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_DUPLICATE);
	assert_string_equal(
	    q_text("SELECT refusal_reason FROM calls"), "hard budget cap");
	assert_int_equal(q_int("SELECT calls FROM calls_daily"), 1);
}

/*
 * Text that is not UTF-8 never reaches a TEXT column of calls or alerts:
 * the row is still recorded (its cost must be), with each stray byte as
 * U+FFFD, and the caller's strings are left as they were.
 */
static void
test_text_not_utf8(void **state)
{
	struct ledger_row r = mkrow("u1");
	struct ledger_alert al;
	char served[] = "gpt-4o\xff", reason[] = "stream_error:\xc3";
	char message[] = "spent \xe2\x82";

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	r.lr_status = CALL_ERROR;
	r.lr_finished_ms = T0;
	r.lr_cost_nusd = 1234;
	r.lr_served_model = served;
	r.lr_refusal_reason = reason;
	assert_int_equal(ledger_record(&r), 0);
	flush();
	assert_string_equal(q_text("SELECT served_model FROM calls"),
	    "gpt-4o" UTF8_REPLACEMENT);
	assert_string_equal(q_text("SELECT refusal_reason FROM calls"),
	    "stream_error:" UTF8_REPLACEMENT);
	assert_int_equal(q_int("SELECT cost_nusd FROM calls"), 1234);
	assert_string_equal(served, "gpt-4o\xff");
	assert_rollup_exact();

	/* An alert likewise. */
	memset(&al, 0, sizeof(al));
	al.la_id = "a1";
	al.la_fired_ms = T0;
	al.la_kind = "threshold";
	al.la_window_start = al.la_reset_at = al.la_threshold_nusd = -1;
	al.la_cap_nusd = -1;
	al.la_message = message;
	al.la_delivery = "none";
	assert_int_equal(ledger_alert(&al), 0);
	flush();
	assert_string_equal(q_text("SELECT message FROM alerts"),
	    "spent " UTF8_REPLACEMENT UTF8_REPLACEMENT);
}

static void
test_bad_rows(void **state)
{
	struct ledger_row r = mkrow(NULL);
	struct ledger_stats st;
	struct answer a = {0};

	(void)state;
	/* Not open. */
	r.lr_id = "x";
	assert_null(ledger_reserve(&r, 0, answer_cb, &a));
	assert_int_equal(ledger_record(&r), -1);
	ledger_settle(&r);
	ledger_close();

	open_ok(DURABILITY_PROCESS, 0);
	r.lr_id = NULL;
	assert_null(ledger_reserve(&r, 0, answer_cb, &a));
	r.lr_id = "";
	assert_null(ledger_reserve(&r, 0, answer_cb, &a));
	r.lr_id = "x";
	r.lr_status = (enum call_status)42;
	assert_null(ledger_reserve(&r, 0, answer_cb, &a));
	r.lr_status = CALL_OK;
	r.lr_usage_source = (enum usage_source)42;
	assert_int_equal(ledger_record(&r), -1);
	/* A final row cannot be in flight. */
	r.lr_usage_source = USAGE_NONE;
	r.lr_status = CALL_IN_FLIGHT;
	assert_int_equal(ledger_record(&r), -1);
	ledger_settle(&r);
	ledger_stats(&st);
	assert_int_equal(st.ls_queue_depth, 0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 0);
	assert_int_equal(a.fired, 0);
}

#define BURST 2000

static const char *const teams[] = {"support", "research", NULL};
static const char *const models[] = {
    "gpt-4o", "claude-sonnet-4", "gemini-2.5-pro", NULL};

static char burst_ids[BURST][16];

static struct ledger_row
burst_row(int i)
{
	struct ledger_row r = mkrow(burst_ids[i]);

	r.lr_started_ms = T0 + (i % 3) * DAY_MS;
	r.lr_model = models[i % 4];
	r.lr_tags[TAG_TEAM] = teams[i % 3];
	r.lr_tags[TAG_TENANT] = i % 5 == 0 ? NULL : "acme";
	r.lr_reserved_nusd = 5000000 + i;
	return (r);
}

static int64_t
burst_cost(int i)
{
	return ((int64_t)i * 1000003 + 17);
}

/* As a session: settle as soon as the reservation is committed. */
static void
burst_cb(void *arg, enum ledger_result r)
{
	struct answer *a = arg;
	struct ledger_row s;

	a->fired++;
	a->result = r;
	answers_fired++;
	if (r != LEDGER_OK || !a->settle)
		return;
	s = burst_row(a->index);
	if (a->id != NULL)
		s.lr_id = a->id;
	s.lr_status = a->index % 7 == 0 ? CALL_CLIENT_CLOSED : CALL_OK;
	s.lr_finished_ms = s.lr_started_ms + 100 + a->index;
	s.lr_http_status = 200;
	s.lr_input_tokens = 100 + a->index;
	s.lr_output_tokens = 10 + a->index % 50;
	s.lr_cached_input_tokens = a->index % 13;
	s.lr_cache_write_tokens = a->index % 11;
	s.lr_reasoning_tokens = a->index % 3;
	s.lr_usage_source = USAGE_REPORTED;
	s.lr_cost_nusd = burst_cost(a->index);
	s.lr_latency_ms = 100 + a->index;
	ledger_settle(&s);
}

static void
test_burst(void **state)
{
	static struct answer ans[BURST];
	struct ledger_row r;
	struct ledger_stats st;
	int64_t want = 0;
	int i;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	for (i = 0; i < BURST; i++) {
		snprintf(burst_ids[i], sizeof(burst_ids[i]), "b%05d", i);
		memset(&ans[i], 0, sizeof(ans[i]));
		ans[i].index = i;
		ans[i].settle = 1;
		r = burst_row(i);
		assert_non_null(ledger_reserve(&r, 0, burst_cb, &ans[i]));
		want += burst_cost(i);
	}
	run_until(&answers_fired, BURST);
	flush();
	for (i = 0; i < BURST; i++)
		assert_int_equal(ans[i].result, LEDGER_OK);

	assert_int_equal(q_int("SELECT count(*) FROM calls"), BURST);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status IN "
			       "('ok', 'client_closed')"),
	    BURST);
	assert_int_equal(q_int("SELECT sum(cost_nusd) FROM calls"), want);
	assert_int_equal(q_int("SELECT sum(cost_nusd) FROM calls_daily"), want);
	assert_int_equal(q_int("SELECT sum(calls) FROM calls_daily"), BURST);
	assert_true(q_int("SELECT count(*) FROM calls_daily") > 20);
	assert_rollup_exact();
	ledger_stats(&st);
	/* One row per call, written once. */
	assert_int_equal(st.ls_rows_written, BURST);
	assert_int_equal(st.ls_failures, 0);
	assert_int_equal(st.ls_in_flight, 0);
	assert_true(st.ls_commits <= BURST);
	assert_true(st.ls_batch_max >= 1);
	print_message("burst: %d calls, %" PRIu64 " commits, largest batch "
		      "%" PRIu64 "\n",
	    BURST, st.ls_commits, st.ls_batch_max);
}

static void
test_recovery(void **state)
{
	struct ledger_row r, s;
	struct answer a = {0};
	struct ledger_stats st;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	r = mkrow("c1");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	r = mkrow("c2");
	r.lr_reserved_nusd = 4000000;
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	r = mkrow("c3");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 3);
	s = mksettle("c3");
	ledger_settle(&s);
	/*
	 * Closed with c1 and c2 in flight, as a crash leaves them: they have
	 * no row, their reservations stay in the journal for the next start.
	 */
	ledger_close();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 1);
	assert_non_null(sibling("ledger.db.journal."));
	/*
	 * One more in flight, with usage already known, as plain SQL: a row
	 * an older tollgate left in flight.
	 */
	rw_exec("INSERT INTO calls (id, started_at, status, usage_source, "
		"reserved_nusd, cost_nusd) VALUES ('c4', "
		"'2026-11-28T14:23:00.123Z', 'in_flight', 'reported', 500, 0)");

	open_ok(DURABILITY_PROCESS, 0);
	ledger_stats(&st);
	assert_int_equal(st.ls_interrupted, 3);
	assert_int_equal(st.ls_replayed, 2);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status = "
			       "'in_flight'"),
	    0);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'c1'"), "interrupted");
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'c1'"), 3000000);
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'c2'"), 4000000);
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'c4'"), 500);
	assert_string_equal(q_text("SELECT usage_source FROM calls WHERE id = "
				   "'c1'"),
	    "estimated");
	assert_string_equal(q_text("SELECT usage_source FROM calls WHERE id = "
				   "'c4'"),
	    "reported");
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status = "
			       "'interrupted' AND finished_at IS NULL"),
	    0);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'c3'"), "ok");
	assert_int_equal(q_int("SELECT sum(cost_nusd) FROM calls_daily"),
	    3000000 + 4000000 + 500 + 1234567);
	assert_rollup_exact();

	/* A late settlement for an interrupted call changes nothing. */
	s = mksettle("c1");
	ledger_settle(&s);
	flush();
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'c1'"), "interrupted");

	/* Nothing left to recover the next time. */
	ledger_close();
	open_ok(DURABILITY_POWER, 0);
	ledger_stats(&st);
	assert_int_equal(st.ls_interrupted, 0);
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
}

static void
test_rollup_follows_edits(void **state)
{
	struct ledger_row r;
	int i;
	char id[8];

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	for (i = 0; i < 6; i++) {
		snprintf(id, sizeof(id), "e%d", i);
		r = mksettle(id);
		r.lr_tags[TAG_TEAM] = i % 2 ? "a" : "b";
		r.lr_cost_nusd = 1000 * (i + 1);
		assert_int_equal(ledger_record(&r), 0);
	}
	flush();
	assert_rollup_exact();
	ledger_close();
	/* An operator fixes rows by hand: the rollup follows. */
	rw_exec("UPDATE calls SET cost_nusd = cost_nusd + 5, team = 'c' "
		"WHERE id = 'e1'");
	rw_exec("DELETE FROM calls WHERE id = 'e2'");
	rw_exec("UPDATE calls SET status = 'in_flight' WHERE id = 'e3'");
	open_ok(DURABILITY_PROCESS, 0); /* e3 is recovered again */
	assert_rollup_exact();
	assert_int_equal(q_int("SELECT sum(calls) FROM calls_daily"), 5);
	assert_int_equal(q_int("SELECT count(*) FROM calls_daily WHERE calls "
			       "= 0"),
	    0);
}

/*
 * Reservations do not wait on the writer; what it has not written yet
 * does. Past queue_max items waiting, reservations (a client's id too)
 * and records are refused, settlements are still taken, and once the
 * writer catches up there is room again.
 */
static void
test_queue_full(void **state)
{
	struct answer a[5], b = {0};
	struct ledger_row r, s;
	struct ledger_stats st;
	char ids[5][8];
	int i;

	(void)state;
	memset(a, 0, sizeof(a));
	open_ok(DURABILITY_PROCESS, 4);
	ledger_test_pause(1);
	for (i = 0; i < 5; i++) {
		snprintf(ids[i], sizeof(ids[i]), "q%d", i);
		r = mkrow(ids[i]);
		assert_non_null(ledger_reserve(&r, 0, answer_cb, &a[i]));
	}
	run_until(&answers_fired, 5);
	for (i = 0; i < 5; i++) {
		assert_int_equal(a[i].result, LEDGER_OK);
		s = mksettle(ids[i]);
		ledger_settle(&s);
	}
	ledger_stats(&st);
	assert_int_equal(st.ls_queue_depth, 5);
	r = mkrow("q5");
	assert_null(ledger_reserve(&r, 0, answer_cb, &b));
	assert_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &b));
	r = mksettle("q9");
	r.lr_status = CALL_REFUSED;
	assert_int_equal(ledger_record(&r), -1);
	ledger_stats(&st);
	assert_int_equal(st.ls_refused_full, 3);
	assert_int_equal(st.ls_queue_depth, 5);
	assert_int_equal(st.ls_in_flight, 0);
	ledger_test_pause(0);
	flush();
	assert_int_equal(b.fired, 0);
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE status = 'ok'"), 5);
	/* Room again. */
	assert_int_equal(ledger_record(&r), 0);
	r = mkrow("q5");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &b));
	run_until(&b.fired, 1);
	assert_int_equal(b.result, LEDGER_OK);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 6);
}

static void
test_disk_full(void **state)
{
	static char big[BIG + 1];
	struct answer a = {0}, b = {0}, c = {0}, d = {0};
	struct ledger_row r, s;
	struct ledger_stats st;
	long long deadline;

	(void)state;
	memset(big, 'z', BIG);
	open_ok(DURABILITY_PROCESS, 3);
	r = mkrow("f1");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);

	/* The database may not grow by a page from now on. */
	ledger_test_max_pages(1);
	/* A reservation goes to the journal, not the database: taken. */
	r = mkrow("f2");
	r.lr_upstream = big;
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &b));
	run_until(&b.fired, 1);
	assert_int_equal(b.result, LEDGER_OK);

	/* The settlement and a record fail and are kept. */
	s = mksettle("f1");
	s.lr_status = CALL_ERROR;
	s.lr_refusal_reason = big;
	ledger_settle(&s);
	r = mksettle("f3");
	r.lr_status = CALL_REFUSED;
	r.lr_refusal_reason = big;
	assert_int_equal(ledger_record(&r), 0);
	deadline = monotime_us() + 10000000LL;
	do {
		usleep(1000);
		ledger_stats(&st);
		assert_true(monotime_us() < deadline);
	} while (st.ls_failures < 3);
	assert_int_equal(st.ls_failing, 1);
	assert_int_equal(st.ls_queue_depth, 2);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 0);
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");

	/* A client's id cannot be looked up while writes fail: refused. */
	r = mkrow("f5");
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &c));
	run_until(&c.fired, 1);
	assert_int_equal(c.result, LEDGER_UNAVAILABLE);

	/*
	 * Reservations go on until queue_max items wait unwritten; then
	 * they are refused (the writer is behind: fail closed).
	 */
	s = mksettle("f2");
	s.lr_upstream = big;
	ledger_settle(&s);
	ledger_stats(&st);
	assert_int_equal(st.ls_queue_depth, 3);
	r = mkrow("f4");
	assert_null(ledger_reserve(&r, 0, answer_cb, &d));
	ledger_stats(&st);
	assert_int_equal(st.ls_refused_full, 1);

	/* Space returns: all land, once, without a restart. */
	ledger_test_max_pages(1073741823);
	flush();
	ledger_stats(&st);
	assert_int_equal(st.ls_failing, 0);
	assert_int_equal(st.ls_dropped, 0);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'f1'"), "error");
	assert_int_equal(q_int("SELECT length(refusal_reason) FROM calls "
			       "WHERE id = 'f1'"),
	    BIG);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'f2'"), "ok");
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'f3'"), "refused");
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 3);
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &d));
	run_until(&d.fired, 1);
	assert_int_equal(d.result, LEDGER_OK);
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
	assert_rollup_exact();
}

static void
test_disk_full_at_close(void **state)
{
	static char big[BIG + 1];
	struct answer a = {0};
	struct ledger_row r, s;
	struct ledger_stats st;

	(void)state;
	memset(big, 'z', BIG);
	open_ok(DURABILITY_PROCESS, 0);
	r = mkrow("g1");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	ledger_test_max_pages(1);
	s = mksettle("g1");
	s.lr_refusal_reason = big;
	ledger_settle(&s);
	do {
		usleep(1000);
		ledger_stats(&st);
	} while (st.ls_failures < 1);
	/*
	 * Close gives up after its retries: no row, but the settlement is
	 * in the journal, which is kept (a write was given up).
	 */
	ledger_close();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 0);
	assert_non_null(sibling("ledger.db.journal."));
	/* The next start writes it, as settled. */
	open_ok(DURABILITY_PROCESS, 0);
	ledger_stats(&st);
	assert_int_equal(st.ls_interrupted, 0);
	assert_int_equal(st.ls_replayed, 1);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'g1'"), "ok");
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'g1'"), 1234567);
	assert_int_equal(q_int("SELECT length(refusal_reason) FROM calls "
			       "WHERE id = 'g1'"),
	    BIG);
}

/* Another process holds the write lock past busy_timeout (check 26b). */
static void
test_busy(void **state)
{
	struct answer a = {0}, b = {0}, c = {0};
	struct ledger_row r, s;
	struct ledger_stats st;
	sqlite3 *other;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	ledger_test_busy_timeout(50);
	flush();
	assert_int_equal(sqlite3_open(fx.path, &other), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
	    SQLITE_OK);
	/* Our own id needs only the journal. */
	r = mkrow("k1");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);
	/* A client's id needs the database: refused. */
	r = mkrow("k2");
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &b));
	run_until(&b.fired, 1);
	assert_int_equal(b.result, LEDGER_UNAVAILABLE);
	r = mksettle("k3");
	r.lr_status = CALL_REFUSED;
	assert_int_equal(ledger_record(&r), 0);
	s = mksettle("k1");
	ledger_settle(&s);
	ledger_stats(&st);
	assert_int_equal(st.ls_failing, 1);
	assert_true(st.ls_failures >= 1);

	/* The lock goes: both land, client ids are taken again. */
	assert_int_equal(
	    sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 2);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'k3'"), "refused");
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'k1'"), "ok");
	r = mkrow("k2");
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &c));
	run_until(&c.fired, 1);
	assert_int_equal(c.result, LEDGER_OK);
	ledger_stats(&st);
	assert_int_equal(st.ls_failing, 0);
}

/*
 * A row SQLite itself refuses (here a status no caller can pass, forced
 * past the checks at enqueue) is given up alone; the rest of its batch
 * is written at once.
 */
static void
test_poison_row(void **state)
{
	struct answer a = {0};
	struct ledger_row r, s;
	struct ledger_item *it;
	struct ledger_stats st;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	r = mkrow("p1");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	r = mkrow("p2");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 2);
	ledger_test_pause(1);
	s = mksettle("p1");
	ledger_settle(&s);
	/* A row SQLite refuses: a status its CHECK does not take. */
	pthread_mutex_lock(&ledger->l_lock);
	it = TAILQ_LAST(&ledger->l_queue, ledger_items);
	it->li_row.lr_status = (enum call_status)42;
	pthread_mutex_unlock(&ledger->l_lock);
	s = mksettle("p2");
	ledger_settle(&s);
	r = mksettle("p3");
	r.lr_status = CALL_REFUSED;
	assert_int_equal(ledger_record(&r), 0);
	ledger_test_pause(0);
	flush();
	assert_int_equal(a.result, LEDGER_OK);
	ledger_stats(&st);
	assert_int_equal(st.ls_dropped, 1);
	assert_int_equal(st.ls_failures, 1);
	assert_int_equal(st.ls_failing, 0);
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE id = 'p1'"), 0);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'p2'"), "ok");
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'p3'"), "refused");
}

static void
test_cancel(void **state)
{
	struct answer a = {0}, b = {0}, c = {0}, d = {0};
	struct ledger_ticket *t;
	struct ledger_row r;
	struct ledger_stats st;
	int i;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	/* Cancelled before the turn's write: never answered, withdrawn. */
	r = mkrow("t1");
	t = ledger_reserve(&r, 0, answer_cb, &a);
	assert_non_null(t);
	ledger_ticket_cancel(t);
	/* Cancelled while the writer looks up its client id. */
	ledger_test_pause(1);
	r = mkrow("t2");
	t = ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &b);
	assert_non_null(t);
	ledger_ticket_cancel(t);
	ledger_test_pause(0);
	flush();
	for (i = 0; i < 10; i++) {
		event_base_loop(fx.base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_int_equal(a.fired, 0);
	assert_int_equal(b.fired, 0);
	ledger_stats(&st);
	assert_int_equal(st.ls_in_flight, 0);
	/* Its id is free again. */
	r = mkrow("t1");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &d));
	run_until(&d.fired, 1);
	assert_int_equal(d.result, LEDGER_OK);
	{
		struct ledger_row s = mksettle("t1");

		ledger_settle(&s);
	}

	/* Cancelled, then the ledger closes with its lookup still queued. */
	ledger_test_pause(1);
	r = mkrow("t3");
	t = ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &c);
	ledger_ticket_cancel(t);
	ledger_close();
	assert_int_equal(c.fired, 0);
	/* None of the cancelled calls is charged, now or at the next start. */
	open_ok(DURABILITY_PROCESS, 0);
	ledger_stats(&st);
	assert_int_equal(st.ls_interrupted, 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 1);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 't1'"), "ok");
}

/*
 * Close with settlements queued behind a held writer: every one is
 * written. Reservations not yet answered are refused, never forwarded.
 */
static void
test_close_drains(void **state)
{
	static struct answer ans[BURST];
	struct ledger_row r;
	struct ledger_stats st;
	int i, ok = 0;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	ledger_test_pause(1);
	for (i = 0; i < 350; i++) {
		snprintf(burst_ids[i], sizeof(burst_ids[i]), "x%05d", i);
		memset(&ans[i], 0, sizeof(ans[i]));
		ans[i].index = i;
		ans[i].settle = 1;
		r = burst_row(i);
		assert_non_null(ledger_reserve(&r, 0, burst_cb, &ans[i]));
		/* 300 answered and settled, the writer held; 50 not yet. */
		if (i == 299)
			run_until(&answers_fired, 300);
	}
	ledger_stats(&st);
	assert_int_equal(st.ls_queue_depth, 300);
	ledger_close();
	assert_int_equal(answers_fired, 350);
	for (i = 0; i < 350; i++)
		ok += ans[i].result == LEDGER_OK;
	assert_int_equal(ok, 300);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status IN "
			       "('ok', 'client_closed')"),
	    300);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 300);
	/* Nothing in flight, nothing given up: no journal left. */
	assert_null(sibling("ledger.db.journal."));
	/* Closed: refused, and closing again is harmless. */
	assert_null(ledger_reserve(&r, 0, burst_cb, &ans[0]));
	assert_int_equal(ledger_record(&r), -1);
	ledger_close();
	ledger_close();
}

/* The ledger's health as the loop hears it. */
static enum ledger_event_kind events[16];
static int nevents;

static void
event_cb(const struct ledger_event *ev, void *arg)
{
	(void)arg;
	assert_non_null(ev->le_message);
	if (nevents < (int)nitems(events))
		events[nevents++] = ev->le_kind;
}

/*
 * Reserve id until it is answered LEDGER_OK (the ledger taking calls).
 * The id is the client's: the writer looks it up, and before it answers
 * makes sure its file is the one at the ledger's path.
 */
static void
reserve_until_ok(const char *id)
{
	static struct answer a;
	struct ledger_row r = mkrow(id);
	long long deadline = monotime_us() + 15000000LL;

	for (;;) {
		memset(&a, 0, sizeof(a));
		assert_non_null(
		    ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &a));
		run_until(&a.fired, 1);
		if (a.result == LEDGER_OK)
			return;
		assert_int_equal(a.result, LEDGER_UNAVAILABLE);
		if (monotime_us() > deadline)
			fail_msg("%s: the ledger never took calls again", id);
		usleep(20000);
	}
}

static void
unlink_files(const char *const *suffixes)
{
	char p[160];

	for (; *suffixes != NULL; suffixes++) {
		snprintf(p, sizeof(p), "%s%s", fx.path, *suffixes);
		assert_int_equal(unlink(p), 0);
	}
}

/*
 * The ledger, its -wal and -shm deleted while open: a client's id looked
 * up in the deleted file is refused, the ledger is rebuilt at its path
 * from the open file by itself, and every row written before is in it.
 */
static void
test_lost_deleted(void **state)
{
	static const char *const all[] = {"", "-wal", "-shm", NULL};
	struct answer b = {0};
	struct ledger_row r, s;
	struct ledger_stats st;
	struct stat sb;
	uint64_t checkpoints;
	long long deadline;
	char id[16];
	ino_t before;
	int i;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	nevents = 0;
	ledger_set_event_cb(event_cb, NULL);
	reserve_until_ok("d1");
	s = mksettle("d1");
	ledger_settle(&s);
	flush();
	assert_int_equal(stat(fx.path, &sb), 0);
	before = sb.st_ino;
	assert_int_equal(ledger_generation(), 0);

	unlink_files(all);
	r = mkrow("d2");
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &b));
	run_until(&b.fired, 1);
	assert_int_equal(b.result, LEDGER_UNAVAILABLE);
	reserve_until_ok("d3");
	s = mksettle("d3");
	ledger_settle(&s);
	flush();

	ledger_stats(&st);
	assert_int_equal(st.ls_lost, LEDGER_LOST_NONE);
	assert_int_equal(st.ls_lost_total[LEDGER_LOST_DELETED], 1);
	assert_int_equal(st.ls_rebuilds, 1);
	assert_true(st.ls_file_checks >= 3);
	assert_int_equal(ledger_generation(), 1);
	assert_int_equal(stat(fx.path, &sb), 0);
	assert_true(sb.st_ino != before);
	assert_true(nevents >= 2);
	assert_int_equal(events[0], LEDGER_EVENT_LOST);
	assert_int_equal(events[nevents - 1], LEDGER_EVENT_RECOVERED);

	/*
	 * A checkpointer works on the new file: 1,000 frames wake it (a
	 * commit per call, each settled before the next).
	 */
	checkpoints = st.ls_checkpoints;
	for (i = 0; i < 400; i++) {
		snprintf(id, sizeof(id), "k%03d", i);
		reserve_until_ok(id);
		settle_wait(id);
	}
	deadline = monotime_us() + 10000000LL;
	do {
		usleep(1000);
		ledger_stats(&st);
		assert_true(monotime_us() < deadline);
	} while (st.ls_checkpoints == checkpoints);
	ledger_close();

	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'd1'"), "ok");
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'd3'"), "ok");
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 402);
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
	assert_rollup_exact();
}

/* The -wal alone deleted: the same, though the database file stayed. */
static void
test_lost_wal(void **state)
{
	static const char *const wal[] = {"-wal", NULL};
	struct ledger_row s;
	struct ledger_stats st;

	(void)state;
	open_ok(DURABILITY_POWER, 0);
	reserve_until_ok("w1");
	unlink_files(wal);
	reserve_until_ok("w2");
	s = mksettle("w1");
	ledger_settle(&s);
	s = mksettle("w2");
	ledger_settle(&s);
	flush();
	ledger_stats(&st);
	assert_int_equal(st.ls_lost_total[LEDGER_LOST_WAL], 1);
	assert_int_equal(st.ls_rebuilds, 1);
	ledger_close();
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE status = 'ok'"), 2);
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
}

/*
 * Another database moved to the ledger's path: never written, never
 * given tollgate's WAL; tollgate's rows saved beside it; once the path
 * is free again, the ledger is rebuilt there.
 */
static void
test_lost_replaced(void **state)
{
	struct answer b = {0};
	struct ledger_row r, s;
	struct ledger_stats st;
	char other[160], wal[160];
	const char *saved;
	sqlite3 *db;
	long long deadline;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	reserve_until_ok("p1");
	s = mksettle("p1");
	ledger_settle(&s);
	flush();
	snprintf(other, sizeof(other), "%s/other.db", fx.dir);
	assert_int_equal(sqlite3_open(other, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
			     "CREATE TABLE notes (x); INSERT INTO notes "
			     "VALUES ('not a ledger')",
			     NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(rename(other, fx.path), 0);

	r = mkrow("p2");
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &b));
	run_until(&b.fired, 1);
	assert_int_equal(b.result, LEDGER_UNAVAILABLE);
	deadline = monotime_us() + 10000000LL;
	while ((saved = sibling("ledger.db.saved-")) == NULL) {
		assert_true(monotime_us() < deadline);
		usleep(10000);
	}
	ledger_stats(&st);
	assert_int_equal(st.ls_lost, LEDGER_LOST_REPLACED);
	assert_int_equal(st.ls_rebuilds, 0);
	/* The other database is as it was, and has no WAL of tollgate's. */
	snprintf(wal, sizeof(wal), "%s-wal", fx.path);
	assert_int_equal(access(wal, F_OK), -1);
	assert_int_equal(q_int("SELECT count(*) FROM sqlite_master"), 1);
	assert_string_equal(q_text("SELECT x FROM notes"), "not a ledger");

	assert_int_equal(unlink(fx.path), 0);
	reserve_until_ok("p3");
	s = mksettle("p3");
	ledger_settle(&s);
	flush();
	ledger_stats(&st);
	assert_int_equal(st.ls_lost, LEDGER_LOST_NONE);
	assert_int_equal(st.ls_rebuilds, 1);
	ledger_close();
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'p1'"), "ok");
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE id = 'p2'"), 0);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'p3'"), "ok");
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
	assert_int_equal(access(saved, F_OK), 0); /* the operator's to remove */
}

/*
 * Settlements racing close, many times over, across reopenings: every
 * call answered OK has its row, and no start finds one in flight.
 */
static void
test_close_race(void **state)
{
	static struct answer ans[BURST];
	struct ledger_row r;
	struct ledger_stats st;
	int i, iter, n, total = 0;

	(void)state;
	for (iter = 0; iter < 20; iter++) {
		int reserved = 0;

		open_ok(iter % 2 ? DURABILITY_POWER : DURABILITY_PROCESS,
		    iter % 3 == 0 ? 64 : 0);
		ledger_stats(&st);
		assert_int_equal(st.ls_interrupted, 0);
		answers_fired = 0;
		n = 50 + iter * 10;
		for (i = 0; i < n; i++) {
			snprintf(burst_ids[i], sizeof(burst_ids[i]),
			    "%02d-%04d", iter, i);
			memset(&ans[i], 0, sizeof(ans[i]));
			ans[i].index = i;
			ans[i].settle = 1;
			r = burst_row(i);
			/* Past queue_max the call would be refused. */
			if (ledger_reserve(&r, 0, burst_cb, &ans[i]) == NULL) {
				snprintf(
				    burst_ids[i], sizeof(burst_ids[i]), "skip");
				break;
			}
			reserved++;
			if (i % 16 == iter % 16)
				event_base_loop(fx.base, EVLOOP_NONBLOCK);
		}
		ledger_close();
		/* Answered OK and settled: a row; the rest refused at close. */
		assert_int_equal(answers_fired, reserved);
		for (i = 0; i < reserved; i++)
			total += ans[i].result == LEDGER_OK;
		assert_int_equal(
		    q_int("SELECT count(*) FROM calls WHERE status "
			  "IN ('ok', 'client_closed')"),
		    total);
	}
	assert_true(total > 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), total);
	assert_rollup_exact();
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
}

/* A fresh ledger for the next measurement: no file, no journal. */
static void
bench_fresh(void)
{
	const char *p;

	unlink(fx.path);
	while ((p = sibling("ledger.db.journal.")) != NULL)
		assert_int_equal(unlink(p), 0);
}

/* TG_LEDGER_BENCH=1: 10,000-row bursts, for docs/internals/ledger.md. */
static void
bench_one(enum durability dur, int settle)
{
	static struct answer ans[10000];
	static char ids[10000][16];
	struct ledger_row r;
	struct ledger_stats st;
	long long t0, us;
	int i, n = 10000;

	bench_fresh();
	open_ok(dur, n);
	answers_fired = 0;
	t0 = monotime_us();
	for (i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "n%05d", i);
		memset(&ans[i], 0, sizeof(ans[i]));
		ans[i].index = i % BURST;
		ans[i].id = ids[i];
		ans[i].settle = settle;
		r = burst_row(i % BURST);
		r.lr_id = ids[i];
		assert_non_null(ledger_reserve(
		    &r, 0, settle ? burst_cb : answer_cb, &ans[i]));
	}
	run_until(&answers_fired, n);
	flush();
	us = monotime_us() - t0;
	ledger_stats(&st);
	print_message("bench: %s, %s: %d calls in %lld ms = %.0f calls/s, "
		      "%" PRIu64 " rows written, %" PRIu64 " commits "
		      "(mean %.1f items, largest %" PRIu64 "), commit mean "
		      "%.0f us, max %" PRIu64 " us\n",
	    dur == DURABILITY_POWER ? "power" : "process",
	    settle ? "reserve+settle" : "reserve only", n, us / 1000,
	    n * 1e6 / (double)us, st.ls_rows_written, st.ls_commits,
	    st.ls_commits != 0
		? (double)st.ls_rows_written / (double)st.ls_commits
		: 0.0,
	    st.ls_batch_max,
	    st.ls_commits != 0
		? (double)st.ls_commit_us_total / (double)st.ls_commits
		: 0.0,
	    st.ls_commit_us_max);
	/* Reserved only: in the journal, no row until settled. */
	assert_int_equal(st.ls_in_flight, settle ? 0 : (size_t)n);
	ledger_close();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), settle ? n : 0);
}

/* One reservation at a time, each waited for: the latency a call sees. */
static void
bench_trickle(enum durability dur)
{
	static char ids[1000][16];
	static long long lat[1000];
	struct answer a = {0};
	struct ledger_row r;
	long long t0, sum = 0;
	int i, j, n = 1000;

	bench_fresh();
	open_ok(dur, 0);
	for (i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "t%05d", i);
		r = mkrow(ids[i]);
		t0 = monotime_us();
		assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
		while (a.fired <= i)
			event_base_loop(fx.base, EVLOOP_ONCE);
		lat[i] = monotime_us() - t0;
		sum += lat[i];
	}
	for (i = 1; i < n; i++) /* insertion sort, for the p99 */
		for (j = i; j > 0 && lat[j - 1] > lat[j]; j--) {
			t0 = lat[j];
			lat[j] = lat[j - 1];
			lat[j - 1] = t0;
		}
	print_message("bench: %s, one at a time: %d reservations, mean %lld "
		      "us, p50 %lld us, p99 %lld us\n",
	    dur == DURABILITY_POWER ? "power" : "process", n, sum / n,
	    lat[n / 2], lat[n * 99 / 100]);
	ledger_close();
}

/*
 * A reader that keeps an old snapshot open (a long spend query) stops the
 * WAL from starting over, but must not hold the writer off for long: the
 * checkpointer's RESTART gives up after a few ms and tries again later.
 */
static void
test_checkpoint_reader(void **state)
{
	static struct answer ans[3000];
	static char ids[3000][16];
	struct ledger_row r;
	struct ledger_stats st;
	sqlite3 *rd;
	sqlite3_stmt *q;
	int i, n = 3000;

	(void)state;
	open_ok(DURABILITY_PROCESS, n);
	answers_fired = 0;
	assert_int_equal(
	    sqlite3_open_v2(fx.path, &rd, SQLITE_OPEN_READONLY, NULL),
	    SQLITE_OK);
	for (i = 0; i < n; i++) {
		if (i == 10) {
			/* A read transaction on the snapshot of 10 calls. */
			assert_int_equal(
			    sqlite3_exec(rd, "BEGIN", NULL, NULL, NULL),
			    SQLITE_OK);
			assert_int_equal(
			    sqlite3_prepare_v2(
				rd, "SELECT count(*) FROM calls", -1, &q, NULL),
			    SQLITE_OK);
			assert_int_equal(sqlite3_step(q), SQLITE_ROW);
			sqlite3_finalize(q);
		}
		snprintf(ids[i], sizeof(ids[i]), "r%05d", i);
		memset(&ans[i], 0, sizeof(ans[i]));
		ans[i].index = i % BURST;
		ans[i].id = ids[i];
		ans[i].settle = 1;
		r = burst_row(i % BURST);
		r.lr_id = ids[i];
		assert_non_null(ledger_reserve(&r, 0, burst_cb, &ans[i]));
		run_until(&answers_fired, i + 1);
		flush(); /* its settlement committed: a commit per call */
	}
	flush();
	ledger_stats(&st);
	print_message("checkpoint with a reader: %" PRIu64
		      " checkpoints, longest commit %" PRIu64 " us\n",
	    st.ls_checkpoints, st.ls_commit_us_max);
	assert_true(st.ls_checkpoints >= 2);
	/* One try per 1,000 new frames, not one per commit. */
	assert_true(st.ls_checkpoints <= 200);
	/* Nowhere near the 5 s a RESTART could wait for the reader. */
	assert_true(st.ls_commit_us_max < 1000000);
	sqlite3_exec(rd, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(rd);
	ledger_close();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), n);
}

/* Replace every from in s with to, in place (to no longer than from). */
static void
shrink_replace(char *s, const char *from, const char *to)
{
	size_t flen = strlen(from), tlen = strlen(to);
	char *at;

	assert_true(tlen <= flen);
	while ((at = strstr(s, from)) != NULL) {
		memcpy(at, to, tlen);
		memmove(at + tlen, at + flen, strlen(at + flen) + 1);
	}
}

/* A ledger at fx.path as the first schema made it, IN-list CHECKs. */
static void
make_v1_ledger(void)
{
	static char old[sizeof(schema_v1) + 256];
	sqlite3 *db;
	char *err = NULL, *at;

	/* Build the first schema's text: the OR form back to IN lists. */
	snprintf(old, sizeof(old), "%s", schema_v1);
	at = strstr(old, CHECK_STATUS);
	assert_non_null(at);
	shrink_replace(at, CHECK_STATUS, CHECK_STATUS_V1);
	at = strstr(old, CHECK_SOURCE);
	assert_non_null(at);
	shrink_replace(at, CHECK_SOURCE, CHECK_SOURCE_V1);
	assert_null(strstr(old, CHECK_STATUS));
	assert_non_null(strstr(old, CHECK_STATUS_V1));
	assert_non_null(strstr(old, CHECK_SOURCE_V1));
	assert_int_equal(sqlite3_open(fx.path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, old, NULL, NULL, &err), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
			     "PRAGMA user_version = 1;"
			     "INSERT INTO calls (id, started_at, status,"
			     " usage_source) VALUES ('old1',"
			     " '2026-11-28T00:00:00.000Z', 'ok', 'reported')",
			     NULL, NULL, &err),
	    SQLITE_OK);
	sqlite3_close(db);
}

/*
 * A ledger made with the IN-list CHECKs (the first schema) gets the OR
 * form at open: same constraint, rows kept, and a bad status still fails.
 */
static void
test_fix_checks(void **state)
{
	sqlite3 *db;
	char *err = NULL;
	struct answer a = {0};
	struct ledger_row r;

	(void)state;
	make_v1_ledger();
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("SELECT instr(sql, 'status IN (') + "
			       "instr(sql, 'usage_source IN (') FROM "
			       "sqlite_schema WHERE name = 'calls'"),
	    0);
	assert_true(q_int("SELECT instr(sql, 'status = ''interrupted''') "
			  "FROM sqlite_schema WHERE name = 'calls'") > 0);
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
	assert_int_equal(q_int("PRAGMA user_version"), 3);
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE id = 'old1'"), 1);
	r = mkrow("new1");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);
	/* Version 2 takes 'killed'. */
	r = mksettle("new1");
	r.lr_status = CALL_KILLED;
	ledger_settle(&r);
	flush();
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'new1'"), "killed");
	ledger_close();

	/* The constraint still holds, and a second open changes nothing. */
	assert_int_equal(sqlite3_open(fx.path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
			     "INSERT INTO calls (id, started_at, status)"
			     " VALUES ('bad', 'x', 'weird')",
			     NULL, NULL, &err),
	    SQLITE_CONSTRAINT);
	sqlite3_free(err);
	assert_int_equal(sqlite3_exec(db,
			     "INSERT INTO calls (id, started_at, status,"
			     " usage_source) VALUES ('bad2', 'x', 'ok',"
			     " 'guessed')",
			     NULL, NULL, &err),
	    SQLITE_CONSTRAINT);
	sqlite3_free(err);
	sqlite3_close(db);
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 2);
}

/* Every new connection refuses to write sqlite_schema, as a defensive
 * build of SQLite does. */
static int
defensive_ext(sqlite3 *db, char **err, const void *api)
{
	(void)err;
	(void)api;
	sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
	return (SQLITE_OK);
}

/*
 * When SQLite will not let the CHECKs be rewritten, the ledger opens as it
 * was, after a warning, and takes rows; a call tollgate killed, which its
 * CHECK has no 'killed' for, is recorded 'error' as before.
 */
static void
test_fix_checks_refused(void **state)
{
	struct answer a = {0};
	struct ledger_row r, s;

	(void)state;
	make_v1_ledger();
	assert_int_equal(
	    sqlite3_auto_extension((void (*)(void))defensive_ext), SQLITE_OK);
	open_ok(DURABILITY_PROCESS, 0);
	sqlite3_reset_auto_extension();
	assert_true(q_int("SELECT instr(sql, 'status IN (') FROM "
			  "sqlite_schema WHERE name = 'calls'") > 0);
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
	r = mkrow("new1");
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);
	s = mksettle("new1");
	s.lr_status = CALL_KILLED;
	ledger_settle(&s);
	flush();
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'new1'"), "error");
	/*
	 * Version 3 all the same (ship_seq): the table's text, not the
	 * version, says 'killed' is not taken, at this open and the next.
	 */
	assert_int_equal(q_int("PRAGMA user_version"), 3);
	ledger_close();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 2);
	assert_int_equal(
	    sqlite3_auto_extension((void (*)(void))defensive_ext), SQLITE_OK);
	open_ok(DURABILITY_PROCESS, 0);
	sqlite3_reset_auto_extension();
	r = mkrow("new2");
	a.fired = 0;
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);
	s = mksettle("new2");
	s.lr_status = CALL_KILLED;
	ledger_settle(&s);
	flush();
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'new2'"), "error");
}

/* The WAL header's first salt: it changes each time the WAL starts over. */
static uint32_t
wal_salt(const char *wal)
{
	unsigned char b[4];
	uint32_t v = 0;
	FILE *f;

	if ((f = fopen(wal, "rb")) == NULL)
		return (0);
	if (fseek(f, 16, SEEK_SET) == 0 && fread(b, 1, 4, f) == 4)
		v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
		    (uint32_t)b[2] << 8 | b[3];
	fclose(f);
	return (v);
}

/*
 * Checkpoints run on their own thread, off the writer's commits, and keep
 * the WAL from growing without end under a writer that never pauses.
 */
static void
test_checkpointer(void **state)
{
	static struct answer ans[6000];
	static char ids[6000][16];
	struct ledger_row r;
	struct ledger_stats st;
	struct stat sb;
	char wal[256];
	uint32_t salt, first = 0;
	int i, n = 4000, restarts = 0;
	long long deadline;

	(void)state;
	open_ok(DURABILITY_PROCESS, 6000);
	snprintf(wal, sizeof(wal), "%s-wal", fx.path);
	answers_fired = 0;
	/*
	 * One call at a time, each settled and its row committed before the
	 * next (the settlement is the call's only write): thousands of
	 * frames. The
	 * checkpointer thread must make the WAL start over (its salt
	 * changes). How soon depends on when that thread gets a CPU, so the
	 * test waits for it (more calls, up to 30 s) rather than bounding the
	 * WAL's size at a moment: a loaded machine may starve the thread.
	 */
	deadline = monotime_us() + 30000000LL;
	for (i = 0; i < 6000; i++) {
		if (i >= n && (restarts > 0 || monotime_us() > deadline))
			break;
		snprintf(ids[i], sizeof(ids[i]), "c%05d", i);
		memset(&ans[i], 0, sizeof(ans[i]));
		ans[i].index = i % BURST;
		ans[i].id = ids[i];
		ans[i].settle = 1;
		r = burst_row(i % BURST);
		r.lr_id = ids[i];
		assert_non_null(ledger_reserve(&r, 0, burst_cb, &ans[i]));
		run_until(&answers_fired, i + 1);
		flush(); /* its settlement committed: a commit per call */
		if (i % 50 == 49 && (salt = wal_salt(wal)) != 0) {
			if (first != 0 && salt != first)
				restarts++;
			first = salt;
		}
	}
	n = i;
	run_until(&answers_fired, n);
	flush();
	ledger_stats(&st);
	print_message("checkpointer: %" PRIu64 " checkpoints, %" PRIu64
		      " us at most; %d calls, WAL started over %d times\n",
	    st.ls_checkpoints, st.ls_checkpoint_us_max, n, restarts);
	assert_true(st.ls_checkpoints >= 1);
	assert_true(restarts >= 1);
	ledger_close();
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status IN "
			       "('ok', 'client_closed')"),
	    n);
	assert_int_equal(stat(wal, &sb) == 0 ? sb.st_size : 0, 0);
}

/*
 * What the check before each answer costs (rebuild.c: an fstat and two
 * stats; the once-a-second one a third stat). The writer is idle, and
 * the check only reads the files' names and its descriptor.
 */
static void
bench_check(void)
{
	long long t0, part, full;
	int i, n = 100000;

	bench_fresh();
	open_ok(DURABILITY_PROCESS, 0);
	t0 = monotime_us();
	for (i = 0; i < n; i++)
		assert_int_equal(
		    ledger_db_check(&ledger->l_db, 0), LEDGER_LOST_NONE);
	part = monotime_us() - t0;
	t0 = monotime_us();
	for (i = 0; i < n; i++)
		assert_int_equal(
		    ledger_db_check(&ledger->l_db, 1), LEDGER_LOST_NONE);
	full = monotime_us() - t0;
	print_message("bench: file check before an answer %.2f us, once a "
		      "second %.2f us\n",
	    (double)part / n, (double)full / n);
	ledger_close();
}

/* How long calls are refused while a ledger of 50,000 rows is rebuilt. */
static void
bench_rebuild(void)
{
	static const char *const all[] = {"", "-wal", "-shm", NULL};
	static struct answer ans[50000];
	static char ids[50000][16];
	struct ledger_row r;
	struct stat sb;
	long long t0, us;
	int i, n = 50000;

	bench_fresh();
	open_ok(DURABILITY_PROCESS, n);
	answers_fired = 0;
	for (i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "r%05d", i);
		memset(&ans[i], 0, sizeof(ans[i]));
		ans[i].index = i % BURST;
		ans[i].id = ids[i];
		ans[i].settle = 1;
		r = burst_row(i % BURST);
		r.lr_id = ids[i];
		assert_non_null(ledger_reserve(&r, 0, burst_cb, &ans[i]));
	}
	run_until(&answers_fired, n);
	flush();
	assert_int_equal(stat(fx.path, &sb), 0);
	unlink_files(all);
	t0 = monotime_us();
	reserve_until_ok("after");
	us = monotime_us() - t0;
	print_message("bench: a ledger of %d rows (%lld KiB and its WAL) "
		      "rebuilt, calls taken again after %lld ms\n",
	    n, (long long)sb.st_size / 1024, us / 1000);
	ledger_close();
	/* "after" was in flight at the close: interrupted at the next start. */
	assert_int_equal(q_int("SELECT count(*) FROM calls"), n);
}

static void
test_bench(void **state)
{
	(void)state;
	if (getenv("TG_LEDGER_BENCH") == NULL)
		skip();
	bench_check();
	bench_rebuild();
	bench_one(DURABILITY_PROCESS, 0);
	bench_one(DURABILITY_POWER, 0);
	bench_one(DURABILITY_PROCESS, 1);
	bench_one(DURABILITY_POWER, 1);
	bench_trickle(DURABILITY_PROCESS);
	bench_trickle(DURABILITY_POWER);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_time_format),
	    cmocka_unit_test_setup_teardown(test_open_process, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_power, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpointer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fix_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_fix_checks_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_checkpoint_reader, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_columns, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reserve_ok, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_unwritten_settled, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_unwritten_drop_midbatch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_settle_final, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_duplicate, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_record_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_rows, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_text_not_utf8, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_burst, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_rollup_follows_edits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_disk_full_at_close, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_poison_row, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_drains, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_race, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lost_deleted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lost_wal, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_lost_replaced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bench, setup, teardown),
	};

	log_init(1, 0);
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
