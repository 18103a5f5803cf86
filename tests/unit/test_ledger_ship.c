/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's side of the fleet ledger, driven for real like
 * test_ledger.c and on its fixture (ledgertest.h): ship_seq given to
 * every row as it becomes final or changes and never to a row in flight,
 * the counter across a restart and a rebuilt file, the migration of a
 * version-2 ledger, and ledger_ship_done from another thread with its
 * cursor and bounded pruning, the rollup kept equal to the rows left.
 */
#define TG_UNITTEST 1

#include <inttypes.h>
#include <pthread.h>
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

struct answer {
	int fired;
	enum ledger_result result;
};

static void
answer_cb(void *arg, enum ledger_result r)
{
	struct answer *a = arg;

	a->fired++;
	a->result = r;
}

static int
setup(void **state)
{
	(void)state;
	return (ledgertest_setup("/tmp/tg-ship-XXXXXX"));
}

/* The outcome of the call reserved by mkrow_at(id, started). */
static struct ledger_row
mksettle(const char *id, int64_t started)
{
	struct ledger_row r = mkrow_at(id, started);

	set_ok(&r);
	return (r);
}

/* A refusal, final from the start. */
static void
record(const char *id, int64_t started)
{
	struct ledger_row r = mkrow_at(id, started);

	r.lr_status = CALL_REFUSED;
	r.lr_finished_ms = started;
	r.lr_http_status = 429;
	r.lr_reserved_nusd = 0;
	r.lr_cost_nusd = 7;
	r.lr_refusal_reason = "hard budget cap";
	assert_int_equal(ledger_record(&r), 0);
}

static void
reserve_ok(const char *id, int64_t started)
{
	struct ledger_row r = mkrow_at(id, started);
	struct answer a = {0};

	assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);
}

static void
alert(const char *id, int64_t fired)
{
	struct ledger_alert a;

	memset(&a, 0, sizeof(a));
	a.la_id = id;
	a.la_fired_ms = fired;
	a.la_kind = "threshold";
	a.la_window_start = -1;
	a.la_reset_at = -1;
	a.la_threshold_nusd = -1;
	a.la_cap_nusd = -1;
	a.la_delivery = "pending";
	assert_int_equal(ledger_alert(&a), 0);
}

static int64_t
seq_of(const char *table, const char *id)
{
	return (q_int("SELECT ship_seq FROM %s WHERE id = '%q'", table, id));
}

/* Every ship_seq given is given once, across the three tables. */
static void
assert_seqs_unique(void)
{
	assert_int_equal(
	    q_int("SELECT count(*) - count(DISTINCT s) FROM (SELECT ship_seq"
		  " AS s FROM calls WHERE ship_seq IS NOT NULL UNION ALL"
		  " SELECT ship_seq FROM alerts WHERE ship_seq IS NOT NULL"
		  " UNION ALL SELECT ship_seq FROM kills WHERE ship_seq IS"
		  " NOT NULL)"),
	    0);
}

/*
 * Each kind of final write and each change takes the next number; a row
 * in flight has none, and a write that changes nothing gives none.
 */
static void
test_seq_each_write(void **state)
{
	struct ledger_row s;
	struct ledger_kill k;
	int64_t prev;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("PRAGMA user_version"), 3);
	reserve_ok("c1", T0);
	assert_int_equal(seq_of("calls", "c1"), INT64_MIN);
	s = mksettle("c1", T0);
	ledger_settle(&s);
	flush();
	assert_int_equal(seq_of("calls", "c1"), 1);
	record("r1", T0);
	flush();
	assert_int_equal(seq_of("calls", "r1"), 2);
	alert("a1", T0);
	flush();
	assert_int_equal(seq_of("alerts", "a1"), 3);
	ledger_alert_delivery("a1", "delivered", 1);
	flush();
	assert_int_equal(seq_of("alerts", "a1"), 4);
	memset(&k, 0, sizeof(k));
	k.lk_id = "k1";
	k.lk_created_ms = T0;
	k.lk_match = "{\"team\":\"support\"}";
	k.lk_reason = "runaway";
	k.lk_source = "admin";
	assert_int_equal(ledger_kill_add(&k), 0);
	flush();
	assert_int_equal(seq_of("kills", "k1"), 5);
	assert_int_equal(ledger_kill_delete("k1", T0 + 10), 0);
	flush();
	assert_int_equal(seq_of("kills", "k1"), 6);

	/* Changing nothing moves no row: a late settlement, a kept state. */
	prev = seq_of("calls", "c1");
	ledger_settle(&s);
	ledger_alert_delivery("a1", "pending", 2);
	assert_int_equal(ledger_kill_delete("k1", T0 + 20), 0);
	flush();
	assert_int_equal(seq_of("calls", "c1"), prev);
	assert_int_equal(seq_of("alerts", "a1"), 4);
	assert_int_equal(seq_of("kills", "k1"), 6);

	/* A reservation, in one batch with a refusal: only the refusal. */
	ledger_test_pause(1);
	{
		struct ledger_row r = mkrow_at("c2", T0);
		struct answer a = {0};

		assert_non_null(ledger_reserve(&r, 0, answer_cb, &a));
		record("r2", T0);
		ledger_test_pause(0);
		run_until(&a.fired, 1);
		assert_int_equal(a.result, LEDGER_OK);
	}
	flush();
	assert_int_equal(seq_of("calls", "c2"), INT64_MIN);
	assert_true(seq_of("calls", "r2") > 6);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status ="
			       " 'in_flight' AND ship_seq IS NOT NULL"),
	    0);
	assert_seqs_unique();
}

/*
 * The counter never goes back: across a restart (the rows in flight a
 * crash left take the next numbers as they become interrupted), and
 * when every numbered row was pruned, the cursor still counts.
 */
static void
test_seq_reopen(void **state)
{
	struct ledger_row s;
	int64_t top;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	reserve_ok("c1", T0);
	reserve_ok("c2", T0);
	reserve_ok("c3", T0);
	s = mksettle("c3", T0);
	ledger_settle(&s);
	flush();
	top = seq_of("calls", "c3");
	assert_true(top >= 1);
	ledger_close(); /* c1, c2 left in flight, as by a crash */

	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status ="
			       " 'interrupted' AND ship_seq > %lld",
			     (long long)top),
	    2);
	assert_true(seq_of("calls", "c1") != seq_of("calls", "c2"));
	top = q_int("SELECT max(ship_seq) FROM calls");
	record("r1", T0);
	flush();
	assert_int_equal(seq_of("calls", "r1"), top + 1);

	/* Shipped to r1, everything pruned: the next row is above r1. */
	assert_int_equal(
	    ledger_ship_done("calls", "i1", top + 1, T0 + DAY_MS), 0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 0);
	ledger_close();
	open_ok(DURABILITY_PROCESS, 0);
	record("r2", T0);
	flush();
	assert_int_equal(seq_of("calls", "r2"), top + 2);
	assert_seqs_unique();
}

/*
 * A rebuilt file (the ledger deleted under tollgate) is read for its
 * highest number, which may be below the last given (a settlement that
 * changed nothing took one): the writer goes on from its own.
 */
static void
test_seq_rebuild(void **state)
{
	struct ledger_row s;
	struct answer a;
	struct ledger_row r;
	long long deadline = monotime_us() + 15000000LL;
	int64_t given;
	char p[200];

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	reserve_ok("c1", T0);
	s = mksettle("c1", T0);
	ledger_settle(&s);
	ledger_settle(&s); /* takes a number, writes nothing */
	flush();
	given = ledger->l_db.db_ship_seq;
	assert_int_equal(given, seq_of("calls", "c1") + 1);

	assert_int_equal(unlink(fx.path), 0);
	snprintf(p, sizeof(p), "%s-wal", fx.path);
	assert_int_equal(unlink(p), 0);
	snprintf(p, sizeof(p), "%s-shm", fx.path);
	assert_int_equal(unlink(p), 0);
	for (;;) {
		memset(&a, 0, sizeof(a));
		r = mkrow_at("c2", T0);
		/* Probed: the writer checks the file before it answers. */
		assert_non_null(
		    ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &a));
		run_until(&a.fired, 1);
		if (a.result == LEDGER_OK)
			break;
		if (monotime_us() > deadline)
			fail_msg("the ledger was never rebuilt");
		usleep(20000);
	}
	assert_int_equal(ledger_generation(), 1);
	record("r1", T0);
	flush();
	assert_int_equal(seq_of("calls", "r1"), given + 1);
}

struct ship_arg {
	const char *stream;
	const char *instance;
	int64_t seq;
	int64_t prune_before;
	int rc;
};

static void *
ship_thread(void *arg)
{
	struct ship_arg *a = arg;

	a->rc =
	    ledger_ship_done(a->stream, a->instance, a->seq, a->prune_before);
	return (NULL);
}

/* ledger_ship_done from a thread of its own, as the shipper calls it. */
static int
ship_from_thread(
    const char *stream, const char *instance, int64_t seq, int64_t cut)
{
	struct ship_arg a = {stream, instance, seq, cut, -2};
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, ship_thread, &a), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	return (a.rc);
}

/*
 * The cursor: upserted from another thread, never moved back, its
 * instance the first recorded; bad arguments refused; not counted
 * against queue_max.
 */
static void
test_ship_done_cursor(void **state)
{
	struct ledger_stats st;

	(void)state;
	assert_int_equal(ship_from_thread("calls", "i1", 1, 0), -1);
	open_ok(DURABILITY_PROCESS, 1);
	ledger_test_pause(1);
	record("r1", T0); /* fills queue_max */
	assert_int_equal(ship_from_thread("calls", "host:8080", 5, 0), 0);
	ledger_test_pause(0);
	flush();
	assert_string_equal(q_text("SELECT instance || ' ' || seq FROM"
				   " ship_cursor WHERE stream = 'calls'"),
	    "host:8080 5");
	assert_int_equal(ship_from_thread("calls", "other:1", 3, 0), 0);
	assert_int_equal(ship_from_thread("alerts", "host:8080", 2, 0), 0);
	assert_int_equal(ship_from_thread("kills", "host:8080", 0, 0), 0);
	flush();
	assert_string_equal(q_text("SELECT instance || ' ' || seq FROM"
				   " ship_cursor WHERE stream = 'calls'"),
	    "host:8080 5");
	assert_int_equal(q_int("SELECT count(*) FROM ship_cursor"), 3);
	assert_int_equal(
	    q_int("SELECT count(*) FROM ship_cursor WHERE shipped_at LIKE"
		  " '____-__-__T__:__:__.___Z'"),
	    3);

	assert_int_equal(ship_from_thread("spend", "host:8080", 1, 0), -1);
	assert_int_equal(ship_from_thread(NULL, "host:8080", 1, 0), -1);
	assert_int_equal(ship_from_thread("calls", "", 1, 0), -1);
	assert_int_equal(ship_from_thread("calls", NULL, 1, 0), -1);
	assert_int_equal(ship_from_thread("calls", "host:8080", -1, 0), -1);
	ledger_stats(&st);
	assert_int_equal(st.ls_rows_written, 1);
	assert_int_equal(st.ls_pruned, 0);
	assert_int_equal(st.ls_dropped, 0);
}

/*
 * Pruning deletes only rows shipped (at or below the cursor) and older
 * than the cut; rows in flight, rows not yet shipped, rows changed since
 * they shipped, and kills stay. The rollup equals the rows left.
 */
static void
test_prune(void **state)
{
	struct ledger_stats st;
	struct ledger_row s;
	struct ledger_kill k;
	int64_t old = T0 - 10 * DAY_MS, cursor;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	record("old1", old);
	record("old2", old + 1);
	reserve_ok("old_fl", old); /* in flight: no row, nothing to prune */
	reserve_ok("old3", old + 2);
	s = mksettle("old3", old + 2);
	ledger_settle(&s);
	record("new1", T0);
	alert("a_old", old);
	alert("a_new", T0);
	memset(&k, 0, sizeof(k));
	k.lk_id = "k_old";
	k.lk_created_ms = old;
	k.lk_match = "{}";
	k.lk_reason = "r";
	k.lk_source = "admin";
	assert_int_equal(ledger_kill_add(&k), 0);
	flush();
	record("old4", old + 3); /* after the cursor below: unshipped */
	flush();
	cursor = seq_of("calls", "new1");
	assert_true(seq_of("calls", "old4") > cursor);
	assert_rollup_exact();

	/* Shipped to new1, cut a day before T0. */
	assert_int_equal(
	    ship_from_thread("calls", "i1", cursor, T0 - DAY_MS), 0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE id IN"
			       " ('old1', 'old2', 'old3')"),
	    0);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE id IN"
			       " ('old4', 'new1')"),
	    2);
	assert_rollup_exact();
	ledger_stats(&st);
	assert_int_equal(st.ls_pruned, 3);
	/*
	 * The call in flight during the pruning is settled after it: its
	 * row takes a number above the cursor, so the same cursor and cut
	 * leave it.
	 */
	s = mksettle("old_fl", old);
	ledger_settle(&s);
	flush();
	assert_true(seq_of("calls", "old_fl") > cursor);
	assert_int_equal(
	    ship_from_thread("calls", "i1", cursor, T0 - DAY_MS), 0);
	flush();
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE id = 'old_fl'"), 1);
	ledger_stats(&st);
	assert_int_equal(st.ls_pruned, 3);

	/* Alerts by fired_at; a delivery change re-ships the row first. */
	ledger_alert_delivery("a_old", "delivered", 1);
	flush();
	assert_int_equal(ship_from_thread("alerts", "i1",
			     seq_of("alerts", "a_old") - 1, T0 - DAY_MS),
	    0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM alerts"), 2);
	assert_int_equal(ship_from_thread("alerts", "i1",
			     seq_of("alerts", "a_old"), T0 - DAY_MS),
	    0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM alerts"), 1);
	assert_string_equal(q_text("SELECT id FROM alerts"), "a_new");

	/* Kills are the audit trail; without a cut nothing goes. */
	assert_int_equal(ship_from_thread("kills", "i1", 1000, T0), 0);
	assert_int_equal(ship_from_thread("calls", "i1", 1000, 0), 0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM kills"), 1);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 3);
	ledger_stats(&st);
	assert_int_equal(st.ls_pruned, 4);
	assert_int_equal(q_int("SELECT seq FROM ship_cursor WHERE stream ="
			       " 'calls'"),
	    1000);

	/*
	 * A report below the stored cursor (the fleet ledger restored from
	 * an older backup, shipping again from there) prunes only up to
	 * what it reports: old4 is past it, so not in PostgreSQL yet.
	 */
	assert_int_equal(
	    ship_from_thread("calls", "i1", cursor, T0 + DAY_MS), 0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE id IN"
			       " ('old_fl', 'old4')"),
	    2);
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE id = 'new1'"), 0);
	assert_int_equal(q_int("SELECT seq FROM ship_cursor WHERE stream ="
			       " 'calls'"),
	    1000);
	assert_rollup_exact();
}

/* One op deletes at most LEDGER_PRUNE_MAX rows, oldest first. */
static void
test_prune_max(void **state)
{
	struct ledger_stats st;
	char id[32];
	int i, n = LEDGER_PRUNE_MAX * 2 + 300;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	for (i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "p%05d", i);
		record(id, T0 - 30 * DAY_MS + i * 1000LL);
		if (i % 500 == 499)
			flush();
	}
	flush();
	assert_rollup_exact();
	assert_int_equal(ship_from_thread("calls", "i1",
			     q_int("SELECT max(ship_seq) FROM calls"), T0),
	    0);
	flush();
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls"), n - LEDGER_PRUNE_MAX);
	/* The oldest went. */
	assert_string_equal(q_text("SELECT min(id) FROM calls"), "p01000");
	assert_rollup_exact();
	/* An idle shipper reports its cursor again to prune the rest. */
	for (i = 0; i < 2; i++)
		assert_int_equal(
		    ship_from_thread("calls", "i1",
			q_int("SELECT max(ship_seq) FROM calls"), T0),
		    0);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls_daily"), 0);
	ledger_stats(&st);
	assert_int_equal(st.ls_pruned, (uint64_t)n);
}

/* The VM steps the writer's pruning statement took since the last call. */
static int
prune_steps(void)
{
	return (sqlite3_stmt_status(
	    ledger->l_db.db_prune_calls, SQLITE_STMTSTATUS_VM_STEP, 1));
}

/* n refusals that started at old + i ms, i < n, flushed as they go. */
static void
record_old(const char *prefix, int n, int64_t old)
{
	char id[32];
	int i;

	for (i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "%s%06d", prefix, i);
		record(id, old + i);
		if (i % 1000 == 999)
			flush();
	}
	flush();
}

/*
 * Old rows not shipped yet (the shipper catching up after PostgreSQL was
 * away) cannot go, and the walk from the oldest end would meet every one
 * of them on every batch the shipper reports, in the writer's
 * transaction, ahead of the calls waiting for their reservation. So it
 * reads at most LEDGER_PRUNE_SCAN entries of the index: its cost does
 * not grow with the backlog. TG_SHIP_BACKLOG=n times one op over n rows.
 */
static void
test_prune_backlog(void **state)
{
	int64_t old = T0 - 20 * DAY_MS;
	long long t0;
	int n = 5000, s1, s2;
	const char *env = getenv("TG_SHIP_BACKLOG");
	long big;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	record_old("b", n, old);
	prune_steps();
	/* Shipped to 0: nothing may go. */
	assert_int_equal(ship_from_thread("calls", "i1", 0, T0), 0);
	flush();
	s1 = prune_steps();
	record_old("c", n, old);
	assert_int_equal(ship_from_thread("calls", "i1", 0, T0), 0);
	flush();
	s2 = prune_steps();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 2 * n);
	assert_true(s1 > 0);
	assert_true(s2 <= s1 + s1 / 10);

	/* Shipped, they go, oldest first, backlog or not. */
	assert_int_equal(ship_from_thread("calls", "i1",
			     q_int("SELECT max(ship_seq) FROM calls"), T0),
	    0);
	flush();
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls"), 2 * n - LEDGER_PRUNE_MAX);
	assert_rollup_exact();

	if (env != NULL && (big = strtol(env, NULL, 10)) > 0 &&
	    big <= 10000000) {
		record_old("d", (int)big, old - DAY_MS);
		prune_steps();
		t0 = monotime_us();
		assert_int_equal(ship_from_thread("calls", "i1", 0, T0), 0);
		flush();
		log_info("prune over a backlog of %ld rows: %d VM steps, "
			 "%lld us",
		    big, prune_steps(), monotime_us() - t0);
	}
}

/*
 * A version-2 ledger (as the previous schema made it: no ship_seq, no
 * ship_cursor) is brought to 3 at open: its final calls, alerts and
 * kills numbered once each, the call the close left in flight (in the
 * journal) numbered as replay makes it interrupted, the rollup untouched.
 */
static void
test_migrate_v2(void **state)
{
	int64_t daily_before;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	reserve_ok("c_fl", T0);
	{
		struct ledger_row s = mksettle("c1", T0);

		reserve_ok("c1", T0);
		ledger_settle(&s);
	}
	record("r1", T0);
	alert("a1", T0);
	flush();
	ledger_close();
	/* Back to version 2, as the previous schema left it. */
	rw_exec("DROP INDEX calls_ship; DROP INDEX alerts_ship;"
		" DROP INDEX kills_ship; DROP TABLE ship_cursor;"
		" ALTER TABLE calls DROP COLUMN ship_seq;"
		" ALTER TABLE alerts DROP COLUMN ship_seq;"
		" ALTER TABLE kills DROP COLUMN ship_seq;"
		" INSERT INTO kills (id, created_at, match, reason, source)"
		" VALUES ('k1', '2026-11-28T00:00:00.000Z', '{}', 'r', 'a');"
		" PRAGMA user_version = 2");
	daily_before = q_int("SELECT sum(cost_nusd) * 1000 + sum(calls) FROM"
			     " calls_daily");

	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("PRAGMA user_version"), 3);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE ship_seq IS"
			       " NULL"),
	    0);
	assert_int_equal(q_int("SELECT count(*) FROM alerts WHERE ship_seq IS"
			       " NULL"),
	    0);
	assert_int_equal(q_int("SELECT count(*) FROM kills WHERE ship_seq IS"
			       " NULL"),
	    0);
	assert_seqs_unique();
	/*
	 * Numbered 1..4, then the journal's replay: c1's settlement again
	 * (it takes a number and changes nothing), and c_fl, in flight at
	 * the close, interrupted.
	 */
	assert_int_equal(q_int("SELECT max(ship_seq) FROM calls WHERE id <>"
			       " 'c_fl'"),
	    2);
	assert_int_equal(seq_of("calls", "c_fl"), 6);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'c_fl'"),
	    "interrupted");
	assert_int_equal(q_int("SELECT count(*) FROM sqlite_schema WHERE"
			       " type = 'trigger'"),
	    4);
	assert_int_equal(q_int("SELECT count(*) FROM sqlite_schema WHERE"
			       " name IN ('calls_ship', 'alerts_ship',"
			       " 'kills_ship', 'ship_cursor')"),
	    4);
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
	assert_rollup_exact();
	/* c_fl's interruption is the only change to the sums. */
	assert_int_equal(q_int("SELECT sum(cost_nusd) * 1000 + sum(calls) FROM"
			       " calls_daily"),
	    daily_before + 3000000LL * 1000 + 1);
	record("r2", T0);
	flush();
	assert_int_equal(seq_of("calls", "r2"), 7);

	/* A second open numbers nothing again. */
	ledger_close();
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(seq_of("calls", "r2"), 7);
	assert_int_equal(seq_of("kills", "k1"), 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
		test_seq_each_write, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seq_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seq_rebuild, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_ship_done_cursor, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prune_max, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_prune_backlog, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_v2, setup, teardown),
	};

	log_init(1, 0);
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
