/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's SQLite side: opening the database with its durability
 * settings read back and checked, the schema (schema.c), crash recovery,
 * and applying one batch of queued writes as one transaction with prepared
 * statements. Everything here runs on the
 * thread that owns the write connection: ledger_open's caller until the
 * writer thread starts, then the writer thread alone.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

/*
 * Every statement that makes a row final, or changes a final row, gives
 * it the next ship_seq (bound by the writer, next_seq): the shipper sends
 * what is above its cursor, and so a changed row again.
 */
static const char alert_sql[] =
    "INSERT INTO alerts (id, fired_at, kind, policy, scope_key, intent, team,"
    " tenant, agent_class, environment, window, window_start, reset_at,"
    " threshold_nusd, spent_nusd, cap_nusd, message, delivery, attempts,"
    " ship_seq)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
    " ?15, ?16, ?17, ?18, ?19, ?20) ON CONFLICT (id) DO NOTHING";

/* A delivery state never goes back to pending once it is final. */
static const char alert_delivery_sql[] =
    "UPDATE alerts SET delivery = ?2, attempts = ?3, ship_seq = ?4"
    " WHERE id = ?1 AND delivery IN ('none', 'pending')";

static const char kill_add_sql[] =
    "INSERT INTO kills (id, created_at, expires_at, match, reason, source,"
    " ship_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    " ON CONFLICT (id) DO NOTHING";

static const char kill_delete_sql[] =
    "UPDATE kills SET deleted_at = ?2, ship_seq = ?3"
    " WHERE id = ?1 AND deleted_at IS NULL";

static const char ext_add_sql[] =
    "INSERT INTO extensions (id, created_at, policy, scope, budget_key,"
    " intent, window, window_start, ends_at, expires_at, nusd, reason,"
    " granted_by, instance) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
    " ?10, ?11, ?12, ?13, ?14) ON CONFLICT (id) DO NOTHING";

static const char ext_revoke_sql[] = "UPDATE extensions SET revoked_at = ?2"
				     " WHERE id = ?1 AND revoked_at IS NULL";

/*
 * A stream's ship cursor moves only forward; the instance first recorded
 * is kept (the fleet ledger's rows are keyed by it). RETURNING gives the
 * cursor as it now is; pruning goes up to the lower of it and the seq
 * reported.
 */
static const char cursor_sql[] =
    "INSERT INTO ship_cursor (stream, instance, seq, shipped_at)"
    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (stream) DO UPDATE SET"
    " seq = max(seq, excluded.seq), shipped_at = excluded.shipped_at"
    " RETURNING seq";

/*
 * Pruning: at most ?3 rows that started (fired) before ?1 and are shipped
 * (ship_seq at or below the cursor ?2; a row changed since has a higher
 * one). It walks the started_at (fired_at) index from its oldest end and
 * reads at most ?4 entries of it: old rows that cannot go yet (not
 * shipped: the shipper catching up) would otherwise be read again on
 * every batch the shipper reports, all of them, in the writer's
 * transaction. They ship oldest first, so pruning follows them. The
 * rollup's delete trigger takes each call out of calls_daily.
 */
static const char prune_calls_sql[] =
    "DELETE FROM calls WHERE rowid IN (SELECT rid FROM (SELECT rowid AS rid,"
    " status, ship_seq FROM calls INDEXED BY calls_started"
    " WHERE started_at < ?1 ORDER BY started_at LIMIT ?4)"
    " WHERE status <> 'in_flight' AND ship_seq IS NOT NULL"
    " AND ship_seq <= ?2 LIMIT ?3)";

static const char prune_alerts_sql[] =
    "DELETE FROM alerts WHERE rowid IN (SELECT rid FROM (SELECT rowid AS rid,"
    " ship_seq FROM alerts INDEXED BY alerts_fired WHERE fired_at < ?1"
    " ORDER BY fired_at LIMIT ?4) WHERE ship_seq IS NOT NULL"
    " AND ship_seq <= ?2 LIMIT ?3)";

/* db_insert: the row's columns (ledger_row_bind, ?1 to ?36), then ship_seq. */
static const char insert_sql[] =
    "INSERT INTO calls (" LEDGER_ROW_COLUMNS ", ship_seq)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
    " ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28,"
    " ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36, ?37)"
    " ON CONFLICT (id) DO NOTHING";

/*
 * One rollup key's sums, added to calls_daily once a transaction for all
 * the rows it inserted with that key (ledger_schema_rollup_writer says
 * why not by trigger). Columns in calls_daily's order.
 */
static const char rollup_sql[] =
    "INSERT INTO calls_daily VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
    " ?10, ?11, ?12, ?13, ?14)"
    " ON CONFLICT (day, provider, model, team, tenant, agent_class,"
    " environment) DO UPDATE SET calls = calls + excluded.calls,"
    " input_tokens = input_tokens + excluded.input_tokens,"
    " output_tokens = output_tokens + excluded.output_tokens,"
    " cached_input_tokens = cached_input_tokens +"
    " excluded.cached_input_tokens,"
    " cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,"
    " reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,"
    " cost_nusd = cost_nusd + excluded.cost_nusd";

/* Whether a request id a client chose is taken (LEDGER_OP_PROBE). */
static const char probe_sql[] = "SELECT 1 FROM calls WHERE id = ?1";

/*
 * Charged at the reservation: a crash never frees budget. Each row takes
 * the next ship_seq after ?2, as the writer would give them one by one;
 * ordered as the calls_in_flight index is, so only that index is read.
 */
static const char recover_sql[] =
    "UPDATE calls SET status = 'interrupted', finished_at = ?1,"
    " cost_nusd = reserved_nusd, usage_source = CASE usage_source"
    " WHEN 'none' THEN 'estimated' ELSE usage_source END,"
    " ship_seq = ?2 + n.rn FROM (SELECT rowid AS rid, row_number()"
    " OVER (ORDER BY started_at, rowid) AS rn FROM calls"
    " WHERE status = 'in_flight') AS n WHERE calls.rowid = n.rid";

/* Wall-clock time in Unix milliseconds. */
int64_t
ledger_now_ms(void)
{
	return (wallclock_ms());
}

/* Format Unix ms as RFC 3339 UTC with milliseconds: 2026-11-28T14:23:00.123Z */
void
ledger_format_time(int64_t ms, char *buf, size_t len)
{
	struct tm tm;
	time_t secs;
	int64_t frac;
	size_t n;

	secs = (time_t)(ms / 1000);
	frac = ms % 1000;
	if (frac < 0) {
		frac += 1000;
		secs--;
	}
	if (gmtime_r(&secs, &tm) == NULL ||
	    (n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm)) == 0) {
		snprintf(buf, len, "1970-01-01T00:00:00.000Z");
		return;
	}
	snprintf(buf + n, len - n, ".%03dZ", (int)frac);
}

/* Fill *cause with a message ending in SQLite's own; always -1. */
int
ledger_db_fail(struct ledger_db *d, char **cause, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (xvasprintf(&msg, fmt, ap) == -1)
		fatalx("%s: xvasprintf", __func__);
	va_end(ap);
	if (d->db_conn != NULL)
		xasprintf(cause, "%s: %s", msg, sqlite3_errmsg(d->db_conn));
	else
		*cause = xstrdup(msg);
	free(msg);
	return (-1);
}

/* mkdir -p for the directory holding path; new directories are 0700. */
static int
make_parent(const char *path, char **cause)
{
	struct stat sb;
	char *dir, *p, c;
	int ret = 0;

	dir = xstrdup(path);
	if ((p = strrchr(dir, '/')) == NULL || p == dir) {
		free(dir);
		return (0);
	}
	*p = '\0';
	for (p = dir + 1; ret == 0; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		c = *p;
		*p = '\0';
		if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
			xasprintf(cause, "mkdir %s: %s", dir, strerror(errno));
			ret = -1;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	if (ret == 0 && (stat(dir, &sb) == -1 || !S_ISDIR(sb.st_mode))) {
		xasprintf(cause, "%s: not a directory", dir);
		ret = -1;
	}
	free(dir);
	return (ret);
}

/* Run sql, which answers one row, and give its first column as text. */
static int
query_text(struct ledger_db *d, const char *sql, char *buf, size_t len)
{
	sqlite3_stmt *st;
	const unsigned char *t;
	int rc;

	buf[0] = '\0';
	if ((rc = sqlite3_prepare_v2(d->db_conn, sql, -1, &st, NULL)) !=
	    SQLITE_OK)
		return (rc);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((t = sqlite3_column_text(st, 0)) != NULL)
			snprintf(buf, len, "%s", (const char *)t);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
	(void)sqlite3_finalize(st);
	return (rc);
}

/* Run sql, which answers one row, and give its first column as a number. */
int
ledger_db_query_int(struct ledger_db *d, const char *sql, int64_t *v)
{
	sqlite3_stmt *st;
	int rc;

	*v = 0;
	if ((rc = sqlite3_prepare_v2(d->db_conn, sql, -1, &st, NULL)) !=
	    SQLITE_OK)
		return (rc);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		*v = sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
	(void)sqlite3_finalize(st);
	return (rc);
}

/* Roll back whatever transaction is open, keeping the error that caused it. */
void
ledger_db_rollback(struct ledger_db *d)
{
	int rc;

	if (sqlite3_get_autocommit(d->db_conn))
		return;
	if (d->db_rollback != NULL) {
		rc = sqlite3_step(d->db_rollback);
		sqlite3_reset(d->db_rollback);
	} else
		rc = sqlite3_exec(d->db_conn, "ROLLBACK", NULL, NULL, NULL);
	if (rc != SQLITE_DONE && rc != SQLITE_OK)
		log_warnx("ledger: rollback: %s", sqlite3_errmsg(d->db_conn));
}

/* Journal mode and synchronous, each set and then read back. */
static int
set_durability(struct ledger_db *d, enum durability dur, char **cause)
{
	char mode[32];
	int64_t sync;
	int want;

	if (query_text(d, "PRAGMA journal_mode = WAL", mode, sizeof(mode)) !=
	    SQLITE_OK)
		return (ledger_db_fail(d, cause, "journal_mode"));
	if (strcmp(mode, "wal") != 0) {
		xasprintf(cause, "journal_mode is \"%s\", not wal", mode);
		return (-1);
	}
	want = dur == DURABILITY_POWER ? 2 : 1;
	if (sqlite3_exec(d->db_conn,
		want == 2 ? "PRAGMA synchronous = FULL"
			  : "PRAGMA synchronous = NORMAL",
		NULL, NULL, NULL) != SQLITE_OK ||
	    ledger_db_query_int(d, "PRAGMA synchronous", &sync) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "synchronous"));
	if (sync != want) {
		xasprintf(
		    cause, "synchronous is %" PRId64 ", not %d", sync, want);
		return (-1);
	}
	d->db_synchronous = (int)sync;

	/*
	 * The schema uses built-in functions only; a WAL left large by a long
	 * reader is cut back after the next checkpoint. Writes touch the
	 * right edges of the indexes and the rows in flight, so a 256 KiB page
	 * cache holds them; SQLite's default (2 MiB) only grew the daemon's
	 * memory as the ledger grew.
	 */
	if (sqlite3_exec(d->db_conn,
		"PRAGMA foreign_keys = OFF; PRAGMA trusted_schema = OFF;"
		" PRAGMA journal_size_limit = 67108864;"
		" PRAGMA cache_size = -256",
		NULL, NULL, NULL) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "pragmas"));
	return (0);
}

/*
 * Rows a crash left in flight become interrupted, charged at their
 * reservation, all in one transaction.
 */
static int
recover(struct ledger_db *d, const char *path, uint64_t *count, char **cause)
{
	sqlite3_stmt *st = NULL;
	char now[LEDGER_TIME_MAX];

	ledger_format_time(ledger_now_ms(), now, sizeof(now));
	if (sqlite3_exec(d->db_conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return (ledger_db_fail(d, cause, "recovery"));
	if (sqlite3_prepare_v2(d->db_conn, recover_sql, -1, &st, NULL) !=
		SQLITE_OK ||
	    sqlite3_bind_text(st, 1, now, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 2, d->db_ship_seq) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	*count = (uint64_t)sqlite3_changes64(d->db_conn);
	/* Taken whether or not the commit lands: never given twice. */
	d->db_ship_seq += (int64_t)*count;
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_exec(d->db_conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (*count > 0)
		log_warnx("ledger: %s: %" PRIu64 " calls left in flight by the "
			  "last run are now interrupted, charged at their "
			  "reservation",
		    path, *count);
	return (0);
fail:
	ledger_db_fail(d, cause, "recovery");
	sqlite3_finalize(st);
	ledger_db_rollback(d);
	*count = 0;
	return (-1);
}

/*
 * One step of a busy handler: the n-th call of a wait that may last
 * limit_us in all, timed against *deadline (set on the first call). Sleeps
 * 100 µs at a time for the first 5 ms, then 1 ms; 0 when time is up.
 * SQLite's own handler (sqlite3_busy_timeout) sleeps 1 ms and then longer,
 * far more than the checkpointer's RESTART (checkpoint.c), the one thing
 * inside tollgate that holds the writer off.
 */
int
ledger_busy_step(long long *deadline, int n, long long limit_us)
{
	struct timespec ts = {0, 100000};
	long long now = monotime_us();

	if (n == 0)
		*deadline = now + limit_us;
	if (now >= *deadline)
		return (0);
	if (now + limit_us - *deadline > 5000)
		ts.tv_nsec = 1000000;
	nanosleep(&ts, NULL);
	return (1);
}

/* The write connection's busy handler: up to LEDGER_BUSY_MS. */
static int
busy_wait(void *arg, int n)
{
	struct ledger_db *d = arg;

	return (ledger_busy_step(
	    &d->db_busy_deadline, n, (long long)LEDGER_BUSY_MS * 1000));
}

/* Prepare the statements the writer runs for every batch. */
static int
prepare(struct ledger_db *d, char **cause)
{
	static const struct {
		const char *sql;
		size_t off;
	} stmts[] = {
	    {"BEGIN IMMEDIATE", offsetof(struct ledger_db, db_begin)},
	    {"COMMIT", offsetof(struct ledger_db, db_commit)},
	    {"ROLLBACK", offsetof(struct ledger_db, db_rollback)},
	    {insert_sql, offsetof(struct ledger_db, db_insert)},
	    {probe_sql, offsetof(struct ledger_db, db_probe)},
	    {alert_sql, offsetof(struct ledger_db, db_alert)},
	    {alert_delivery_sql, offsetof(struct ledger_db, db_alert_delivery)},
	    {kill_add_sql, offsetof(struct ledger_db, db_kill_add)},
	    {kill_delete_sql, offsetof(struct ledger_db, db_kill_delete)},
	    {ext_add_sql, offsetof(struct ledger_db, db_ext_add)},
	    {ext_revoke_sql, offsetof(struct ledger_db, db_ext_revoke)},
	    {cursor_sql, offsetof(struct ledger_db, db_cursor)},
	    {prune_calls_sql, offsetof(struct ledger_db, db_prune_calls)},
	    {prune_alerts_sql, offsetof(struct ledger_db, db_prune_alerts)},
	    {rollup_sql, offsetof(struct ledger_db, db_rollup)},
	};
	sqlite3_stmt **st;
	size_t i;

	for (i = 0; i < nitems(stmts); i++) {
		st = (sqlite3_stmt **)(void *)((char *)d + stmts[i].off);
		if (sqlite3_prepare_v3(d->db_conn, stmts[i].sql, -1,
			SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
			return (ledger_db_fail(d, cause, "prepare"));
	}
	return (0);
}

/*
 * Open SQLite on path, whose lock d->db_lockfd already holds: check
 * durability and schema (made if the file is new), prepare the writer's
 * statements and note which files the connection has open.
 */
static int
db_connect(
    struct ledger_db *d, const char *path, enum durability dur, char **cause)
{
	int64_t version;
	int flags;

	d->db_durability = dur;
	flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
	if (sqlite3_open_v2(path, &d->db_conn, flags, NULL) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "sqlite3_open"));
	sqlite3_busy_handler(d->db_conn, busy_wait, d);
	if (ledger_schema_check(d, &version, cause) != 0 ||
	    set_durability(d, dur, cause) != 0 ||
	    (version == 0 && ledger_schema_create(d, path, cause) != 0) ||
	    (version != 0 &&
		ledger_schema_fix_checks(d, path, version, cause) != 0) ||
	    ledger_schema_alerts(d, cause) != 0 ||
	    ledger_schema_kills(d, cause) != 0 ||
	    ledger_schema_extensions(d, cause) != 0 ||
	    ledger_schema_served(d, cause) != 0 ||
	    ledger_schema_ship(d, path, version, cause) != 0 ||
	    ledger_schema_routing(d, cause) != 0 ||
	    ledger_schema_rollup_writer(d, path, cause) != 0 ||
	    prepare(d, cause) != 0)
		return (-1);
	return (ledger_db_identify(d, cause));
}

/*
 * Open the ledger at path: make its directory, lock it, check durability
 * and schema, recover rows a crash left in flight (counted in
 * *interrupted), and prepare the writer's statements.
 */
int
ledger_db_open(struct ledger_db *d, const char *path, enum durability dur,
    uint64_t *interrupted, char **cause)
{
	memset(d, 0, sizeof(*d));
	d->db_lockfd = -1;
	d->db_placed_fd = -1;
	d->db_path = xstrdup(path);
	*interrupted = 0;
	/*
	 * SQLite counts every allocation under a global mutex for
	 * sqlite3_memory_used(), which tollgate never asks: about 11,000
	 * instructions a call. It can only be turned off before SQLite is
	 * first used; later it answers SQLITE_MISUSE and nothing changes.
	 */
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	if (make_parent(path, cause) != 0)
		return (-1);

	/*
	 * Create the file 0600 before SQLite does (its -wal and -shm take its
	 * mode), and hold an flock(2) on it while the ledger is open: a second
	 * tollgate on the same file would take this one's calls in flight for
	 * a crash's. flock locks are apart from SQLite's POSIX locks, and the
	 * descriptor is closed only after SQLite's, so it cannot drop them.
	 */
	d->db_lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->db_lockfd == -1) {
		xasprintf(cause, "open: %s", strerror(errno));
		return (-1);
	}
	if (flock(d->db_lockfd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			*cause = xstrdup("in use by another tollgate (flock)");
		else
			xasprintf(cause, "flock: %s", strerror(errno));
		goto fail;
	}

	if (db_connect(d, path, dur, cause) != 0 ||
	    recover(d, path, interrupted, cause) != 0)
		goto fail;
	return (0);
fail:
	d->db_synchronous = 0; /* no checkpoint on the way out */
	ledger_db_close(d);
	return (-1);
}

/*
 * Move the open ledger in from to to (a rebuilt file's, opened in a
 * ledger_db of the caller's): the busy handler is told where it lives
 * now, and from is left empty.
 */
void
ledger_db_adopt(struct ledger_db *to, struct ledger_db *from)
{
	*to = *from;
	if (to->db_conn != NULL)
		sqlite3_busy_handler(to->db_conn, busy_wait, to);
	memset(from, 0, sizeof(*from));
	from->db_lockfd = -1;
	from->db_placed_fd = -1;
}

/*
 * Open the ledger again at path, a file the writer has just rebuilt and
 * holds the flock of (lockfd, which d owns from now on when this
 * succeeds). No recovery: the rows in flight belong to calls still
 * running. 0, or -1 with *cause set and lockfd left to the caller.
 */
int
ledger_db_reopen(struct ledger_db *d, const char *path, enum durability dur,
    int lockfd, char **cause)
{
	memset(d, 0, sizeof(*d));
	d->db_lockfd = lockfd;
	d->db_placed_fd = -1;
	if (db_connect(d, path, dur, cause) == 0)
		return (0);
	d->db_lockfd = -1;
	d->db_synchronous = 0;
	ledger_db_close(d);
	return (-1);
}

/* Errors that are the row's fault, not the disk's: retrying cannot help. */
int
ledger_db_blames_row(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
	case SQLITE_TOOBIG:
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
		return (1);
	}
	return (0);
}

/* Step a statement that answers no rows; keep SQLite's message on error. */
static int
step_stmt(struct ledger_db *d, sqlite3_stmt *st)
{
	int rc;

	if ((rc = sqlite3_step(st)) != SQLITE_DONE)
		snprintf(d->db_errmsg, sizeof(d->db_errmsg), "%s",
		    sqlite3_errmsg(d->db_conn));
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return (rc);
}

/*
 * Run an item's statement once its parameters are bound (bound: the first
 * bind error, or SQLITE_OK) and note whether it changed a row.
 */
static int
run_item(
    struct ledger_db *d, struct ledger_item *it, sqlite3_stmt *st, int bound)
{
	int rc;

	if (bound != SQLITE_OK) {
		snprintf(d->db_errmsg, sizeof(d->db_errmsg), "bind: %s",
		    sqlite3_errstr(bound));
		sqlite3_clear_bindings(st);
		return (bound);
	}
	if ((rc = step_stmt(d, st)) == SQLITE_DONE)
		it->li_changed = sqlite3_changes(d->db_conn) > 0;
	return (rc);
}

static int
bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL)
		return (sqlite3_bind_null(st, i));
	return (sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC));
}

/* Bind v, or NULL when v is below min (-1 latency, 0 HTTP status). */
static int
bind_int_min(sqlite3_stmt *st, int i, int64_t v, int64_t min)
{
	if (v < min)
		return (sqlite3_bind_null(st, i));
	return (sqlite3_bind_int64(st, i, v));
}

/*
 * The next ship_seq, for a row a statement makes final or changes. Taken
 * even if the statement changes nothing or the batch rolls back: a gap
 * costs nothing, a number given twice would hide a row from the shipper.
 */
static int64_t
next_seq(struct ledger_db *d)
{
	return (++d->db_ship_seq);
}

/*
 * The status a row is written with: 'killed' only where the ledger's
 * CHECK takes it (a version-1 ledger that could not be widened records
 * such a call as 'error', as before).
 */
static enum call_status
row_status(const struct ledger_db *d, enum call_status s)
{
	return (s == CALL_KILLED && d->db_v1 ? CALL_ERROR : s);
}

/* '' and NULL are one key in calls_daily. */
static int
rollup_key_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return ((a == NULL || *a == '\0') && (b == NULL || *b == '\0'));
	return (strcmp(a, b) == 0);
}

/*
 * Add a final row the transaction inserted to its key's sums. Keys are
 * few in a batch (a day, a handful of models and teams), so a linear
 * search.
 */
static void
rollup_add(struct ledger_db *d, const struct ledger_row *r, const char *started)
{
	struct ledger_rollup *ru;
	const char *key[nitems(ru->ru_key)];
	size_t i, k;

	key[0] = r->lr_provider;
	key[1] = r->lr_model;
	key[2] = r->lr_tags[TAG_TEAM];
	key[3] = r->lr_tags[TAG_TENANT];
	key[4] = r->lr_tags[TAG_AGENT_CLASS];
	key[5] = r->lr_tags[TAG_ENVIRONMENT];
	for (i = 0; i < d->db_nrollups; i++) {
		ru = &d->db_rollups[i];
		if (strncmp(ru->ru_day, started, sizeof(ru->ru_day) - 1) != 0)
			continue;
		for (k = 0; k < nitems(key); k++)
			if (!rollup_key_eq(ru->ru_key[k], key[k]))
				break;
		if (k == nitems(key))
			break;
	}
	if (i == d->db_nrollups) {
		if (d->db_nrollups == d->db_rollups_cap) {
			d->db_rollups_cap = d->db_rollups_cap * 2 + 8;
			d->db_rollups = xreallocarray(d->db_rollups,
			    d->db_rollups_cap, sizeof(*d->db_rollups));
		}
		ru = &d->db_rollups[d->db_nrollups++];
		memset(ru, 0, sizeof(*ru));
		memcpy(ru->ru_day, started, sizeof(ru->ru_day) - 1);
		for (k = 0; k < nitems(key); k++)
			ru->ru_key[k] = key[k];
	}
	ru->ru_calls++;
	ru->ru_input_tokens += r->lr_input_tokens;
	ru->ru_output_tokens += r->lr_output_tokens;
	ru->ru_cached_input_tokens += r->lr_cached_input_tokens;
	ru->ru_cache_write_tokens += r->lr_cache_write_tokens;
	ru->ru_reasoning_tokens += r->lr_reasoning_tokens;
	ru->ru_cost_nusd += r->lr_cost_nusd;
}

/* Bind in turn, stopping at the first error. */
#define BIND(call)                                                             \
	do {                                                                   \
		if (rc == SQLITE_OK)                                           \
			rc = (call);                                           \
	} while (0)

/*
 * Add the transaction's sums to calls_daily, one upsert per key, in the
 * transaction that inserted the rows: a rollback takes both back.
 */
static int
rollup_flush(struct ledger_db *d)
{
	sqlite3_stmt *st = d->db_rollup;
	struct ledger_rollup *ru;
	size_t i, k;
	int rc = SQLITE_DONE;

	for (i = 0; i < d->db_nrollups && rc == SQLITE_DONE; i++) {
		ru = &d->db_rollups[i];
		rc = SQLITE_OK;
		BIND(sqlite3_bind_text(st, 1, ru->ru_day, -1, SQLITE_STATIC));
		for (k = 0; k < nitems(ru->ru_key); k++)
			BIND(sqlite3_bind_text(st, 2 + (int)k,
			    ru->ru_key[k] != NULL ? ru->ru_key[k] : "", -1,
			    SQLITE_STATIC));
		BIND(sqlite3_bind_int64(st, 8, ru->ru_calls));
		BIND(sqlite3_bind_int64(st, 9, ru->ru_input_tokens));
		BIND(sqlite3_bind_int64(st, 10, ru->ru_output_tokens));
		BIND(sqlite3_bind_int64(st, 11, ru->ru_cached_input_tokens));
		BIND(sqlite3_bind_int64(st, 12, ru->ru_cache_write_tokens));
		BIND(sqlite3_bind_int64(st, 13, ru->ru_reasoning_tokens));
		BIND(sqlite3_bind_int64(st, 14, ru->ru_cost_nusd));
		if (rc != SQLITE_OK) {
			snprintf(d->db_errmsg, sizeof(d->db_errmsg), "bind: %s",
			    sqlite3_errstr(rc));
			sqlite3_clear_bindings(st);
			break;
		}
		rc = step_stmt(d, st);
	}
	d->db_nrollups = 0;
	return (rc);
}

/*
 * Bind r to ?1 to ?36 of st, in the order of LEDGER_ROW_COLUMNS, with
 * status s; its two times are formatted into tb, which must outlive the
 * statement's step. A call in flight has no finished_at; a final row
 * without one finishes now. Returns SQLite's result code.
 */
int
ledger_row_bind(sqlite3_stmt *st, const struct ledger_row *r,
    enum call_status s, struct ledger_times *tb)
{
	char *started = tb->lt_started, *finished = tb->lt_finished;
	int i, rc = SQLITE_OK;

	ledger_format_time(r->lr_started_ms, started, LEDGER_TIME_MAX);
	ledger_format_time(
	    r->lr_finished_ms != 0 ? r->lr_finished_ms : ledger_now_ms(),
	    finished, LEDGER_TIME_MAX);
	BIND(bind_text(st, 1, r->lr_id));
	BIND(bind_text(st, 2, started));
	BIND(bind_text(st, 3, s == CALL_IN_FLIGHT ? NULL : finished));
	BIND(bind_text(st, 4, r->lr_provider));
	BIND(bind_text(st, 5, r->lr_endpoint));
	BIND(bind_text(st, 6, r->lr_upstream));
	BIND(bind_text(st, 7, r->lr_model));
	for (i = 0; i < TAG_MAX; i++)
		BIND(bind_text(st, 8 + i, r->lr_tags[i]));
	BIND(bind_text(st, 13, r->lr_key_fingerprint));
	BIND(sqlite3_bind_int(st, 14, r->lr_stream != 0));
	BIND(bind_text(st, 15, ledger_status_name(s)));
	BIND(bind_int_min(st, 16, r->lr_http_status, 1));
	BIND(sqlite3_bind_int64(st, 17, r->lr_input_tokens));
	BIND(sqlite3_bind_int64(st, 18, r->lr_output_tokens));
	BIND(sqlite3_bind_int64(st, 19, r->lr_cached_input_tokens));
	BIND(sqlite3_bind_int64(st, 20, r->lr_cache_write_tokens));
	BIND(sqlite3_bind_int64(st, 21, r->lr_reasoning_tokens));
	BIND(bind_text(st, 22, ledger_usage_source_name(r->lr_usage_source)));
	BIND(sqlite3_bind_int64(st, 23, r->lr_cost_nusd));
	BIND(sqlite3_bind_int64(st, 24, r->lr_reserved_nusd));
	BIND(bind_text(st, 25, r->lr_price_version));
	BIND(bind_text(st, 26, r->lr_refusal_reason));
	BIND(bind_int_min(st, 27, r->lr_latency_ms, 0));
	BIND(bind_int_min(st, 28, r->lr_ttfb_ms, 0));
	BIND(bind_text(st, 29, r->lr_served_model));
	BIND(bind_text(st, 30, r->lr_routed_from));
	BIND(bind_text(st, 31, r->lr_routed_rule));
	BIND(sqlite3_bind_int64(st, 32, r->lr_saved_nusd));
	BIND(sqlite3_bind_int(st, 33, r->lr_attempts));
	BIND(bind_text(st, 34, r->lr_attempt_log));
	BIND(sqlite3_bind_int(st, 35, r->lr_cache_hit != 0));
	BIND(sqlite3_bind_int64(st, 36, r->lr_units));
	return (rc);
}

/* Insert a final row; a known id is skipped. */
static int
apply_insert(struct ledger_db *d, struct ledger_item *it)
{
	const struct ledger_row *r = &it->li_row;
	sqlite3_stmt *st = d->db_insert;
	enum call_status status = row_status(d, r->lr_status);
	struct ledger_times tb;
	int rc;

	rc = ledger_row_bind(st, r, status, &tb);
	/* A reservation is in flight: it ships once settled. */
	BIND(status == CALL_IN_FLIGHT
		? sqlite3_bind_null(st, 37)
		: sqlite3_bind_int64(st, 37, next_seq(d)));
	if ((rc = run_item(d, it, st, rc)) == SQLITE_DONE && it->li_changed &&
	    status != CALL_IN_FLIGHT && d->db_rollup_self)
		rollup_add(d, r, tb.lt_started);
	return (rc);
}

/*
 * Whether the id is free: li_changed 1 when no row has it (the answer is
 * then LEDGER_OK), 0 when one has (LEDGER_DUPLICATE).
 */
static int
apply_probe(struct ledger_db *d, struct ledger_item *it)
{
	sqlite3_stmt *st = d->db_probe;
	int rc;

	if ((rc = bind_text(st, 1, it->li_row.lr_id)) != SQLITE_OK) {
		snprintf(d->db_errmsg, sizeof(d->db_errmsg), "bind: %s",
		    sqlite3_errstr(rc));
		sqlite3_clear_bindings(st);
		return (rc);
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
		it->li_changed = rc == SQLITE_DONE;
		rc = SQLITE_DONE;
	} else
		snprintf(d->db_errmsg, sizeof(d->db_errmsg), "%s",
		    sqlite3_errmsg(d->db_conn));
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return (rc);
}

/* Bind a time as RFC 3339 text, or NULL when it is below 0. */
static int
bind_time(sqlite3_stmt *st, int i, int64_t ms)
{
	char t[LEDGER_TIME_MAX];

	if (ms < 0)
		return (sqlite3_bind_null(st, i));
	ledger_format_time(ms, t, sizeof(t));
	return (sqlite3_bind_text(st, i, t, -1, SQLITE_TRANSIENT));
}

/* Insert an alert, or update its delivery state. */
static int
apply_alert(struct ledger_db *d, struct ledger_item *it)
{
	const struct ledger_alert *a = &it->li_alert;
	sqlite3_stmt *st;
	int i, rc = SQLITE_OK;

	if (it->li_op == LEDGER_OP_ALERT_DELIVERY) {
		st = d->db_alert_delivery;
		BIND(bind_text(st, 1, a->la_id));
		BIND(bind_text(st, 2, a->la_delivery));
		BIND(sqlite3_bind_int(st, 3, a->la_attempts));
		BIND(sqlite3_bind_int64(st, 4, next_seq(d)));
	} else {
		st = d->db_alert;
		BIND(bind_text(st, 1, a->la_id));
		BIND(bind_time(st, 2, a->la_fired_ms));
		BIND(bind_text(st, 3, a->la_kind));
		BIND(bind_text(st, 4, a->la_policy));
		BIND(bind_text(st, 5, a->la_scope_key));
		for (i = 0; i < TAG_MAX; i++)
			BIND(bind_text(st, 6 + i, a->la_tags[i]));
		BIND(bind_text(st, 11, a->la_window));
		BIND(bind_time(st, 12, a->la_window_start));
		BIND(bind_time(st, 13, a->la_reset_at));
		BIND(bind_int_min(st, 14, a->la_threshold_nusd, 0));
		BIND(sqlite3_bind_int64(st, 15, a->la_spent_nusd));
		BIND(bind_int_min(st, 16, a->la_cap_nusd, 0));
		BIND(bind_text(st, 17, a->la_message));
		BIND(bind_text(
		    st, 18, a->la_delivery != NULL ? a->la_delivery : "none"));
		BIND(sqlite3_bind_int(st, 19, a->la_attempts));
		BIND(sqlite3_bind_int64(st, 20, next_seq(d)));
	}
	return (run_item(d, it, st, rc));
}

/* Insert a runtime kill, or mark one deleted. */
static int
apply_kill(struct ledger_db *d, struct ledger_item *it)
{
	const struct ledger_kill *k = &it->li_kill;
	char created[LEDGER_TIME_MAX], expires[LEDGER_TIME_MAX];
	sqlite3_stmt *st;
	int rc = SQLITE_OK;

	if (it->li_op == LEDGER_OP_KILL_DELETE) {
		st = d->db_kill_delete;
		ledger_format_time(it->li_deleted_ms, created, sizeof(created));
		BIND(bind_text(st, 1, k->lk_id));
		BIND(bind_text(st, 2, created));
		BIND(sqlite3_bind_int64(st, 3, next_seq(d)));
	} else {
		st = d->db_kill_add;
		ledger_format_time(k->lk_created_ms, created, sizeof(created));
		ledger_format_time(k->lk_expires_ms, expires, sizeof(expires));
		BIND(bind_text(st, 1, k->lk_id));
		BIND(bind_text(st, 2, created));
		BIND(bind_text(st, 3, k->lk_expires_ms != 0 ? expires : NULL));
		BIND(bind_text(st, 4, k->lk_match));
		BIND(bind_text(st, 5, k->lk_reason));
		BIND(bind_text(st, 6, k->lk_source));
		BIND(sqlite3_bind_int64(st, 7, next_seq(d)));
	}
	return (run_item(d, it, st, rc));
}

/* A time, or NULL for 0 (none), into buf for binding. */
static const char *
opt_time(int64_t ms, char *buf, size_t len)
{
	if (ms == 0)
		return (NULL);
	ledger_format_time(ms, buf, len);
	return (buf);
}

/* Insert a budget extension, or mark one revoked. */
static int
apply_extension(struct ledger_db *d, struct ledger_item *it)
{
	const struct ledger_extension *x = &it->li_ext;
	char created[LEDGER_TIME_MAX], start[LEDGER_TIME_MAX],
	    ends[LEDGER_TIME_MAX], expires[LEDGER_TIME_MAX];
	sqlite3_stmt *st;
	int rc = SQLITE_OK;

	if (it->li_op == LEDGER_OP_EXT_REVOKE) {
		st = d->db_ext_revoke;
		ledger_format_time(it->li_deleted_ms, created, sizeof(created));
		BIND(bind_text(st, 1, x->le_id));
		BIND(bind_text(st, 2, created));
		return (run_item(d, it, st, rc));
	}
	st = d->db_ext_add;
	ledger_format_time(x->le_created_ms, created, sizeof(created));
	ledger_format_time(x->le_window_start_ms, start, sizeof(start));
	BIND(bind_text(st, 1, x->le_id));
	BIND(bind_text(st, 2, created));
	BIND(bind_text(st, 3, x->le_policy));
	BIND(bind_text(st, 4, x->le_scope));
	BIND(bind_text(st, 5, x->le_key));
	BIND(bind_text(st, 6, x->le_intent));
	BIND(bind_text(st, 7, x->le_window));
	BIND(bind_text(st, 8, start));
	BIND(bind_text(st, 9, opt_time(x->le_ends_ms, ends, sizeof(ends))));
	BIND(bind_text(
	    st, 10, opt_time(x->le_expires_ms, expires, sizeof(expires))));
	BIND(sqlite3_bind_int64(st, 11, x->le_nusd));
	BIND(bind_text(st, 12, x->le_reason));
	BIND(bind_text(st, 13, x->le_by));
	BIND(bind_text(st, 14, x->le_instance));
	return (run_item(d, it, st, rc));
}

/*
 * Move a stream's ship cursor (ledger_ship_done), then, when asked, delete
 * up to LEDGER_PRUNE_MAX rows of calls or alerts that it passed and that
 * are older than the cut; it->li_pruned says how many. In the batch's
 * transaction, like any write: a rollback undoes both.
 */
static int
apply_ship_done(struct ledger_db *d, struct ledger_item *it)
{
	sqlite3_stmt *st = d->db_cursor;
	char now[LEDGER_TIME_MAX], cut[LEDGER_TIME_MAX];
	int64_t cursor;
	int rc = SQLITE_OK;

	it->li_pruned = 0;
	ledger_format_time(ledger_now_ms(), now, sizeof(now));
	BIND(bind_text(st, 1, it->li_stream));
	BIND(bind_text(st, 2, it->li_instance));
	BIND(sqlite3_bind_int64(st, 3, it->li_seq));
	BIND(bind_text(st, 4, now));
	if (rc != SQLITE_OK)
		return (run_item(d, it, st, rc));
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		snprintf(d->db_errmsg, sizeof(d->db_errmsg), "%s",
		    sqlite3_errmsg(d->db_conn));
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		return (rc == SQLITE_DONE ? SQLITE_ERROR : rc);
	}
	cursor = sqlite3_column_int64(st, 0);
	if ((rc = step_stmt(d, st)) != SQLITE_DONE)
		return (rc);
	it->li_changed = 1;
	if (it->li_prune_before_ms <= 0)
		return (SQLITE_DONE);
	if (strcmp(it->li_stream, "calls") == 0)
		st = d->db_prune_calls;
	else if (strcmp(it->li_stream, "alerts") == 0)
		st = d->db_prune_alerts;
	else
		return (SQLITE_DONE); /* kills are the audit trail: kept */
	/*
	 * Up to what this report vouches for, not the cursor's maximum: the
	 * shipper resumes from the lower of its two cursors after a fleet
	 * ledger restored from an older backup, and the rows between are
	 * not in PostgreSQL again until it reports them.
	 */
	if (it->li_seq < cursor)
		cursor = it->li_seq;
	ledger_format_time(it->li_prune_before_ms, cut, sizeof(cut));
	rc = SQLITE_OK;
	BIND(bind_text(st, 1, cut));
	BIND(sqlite3_bind_int64(st, 2, cursor));
	BIND(sqlite3_bind_int(st, 3, LEDGER_PRUNE_MAX));
	BIND(sqlite3_bind_int(st, 4, LEDGER_PRUNE_SCAN));
	if ((rc = run_item(d, it, st, rc)) == SQLITE_DONE)
		it->li_pruned = (uint64_t)sqlite3_changes64(d->db_conn);
	it->li_changed = 1;
	return (rc);
}
#undef BIND

/*
 * Write a batch as one transaction. On failure nothing of it is written:
 * db_err, db_errmsg and db_failed_item (NULL if BEGIN or COMMIT failed)
 * say why, and any transaction SQLite left open is rolled back.
 */
int
ledger_db_apply(struct ledger_db *d, struct ledger_items *batch)
{
	struct ledger_item *it;
	int rc;

	d->db_err = SQLITE_OK;
	d->db_errmsg[0] = '\0';
	d->db_failed_item = NULL;
	ledger_db_rollback(
	    d); /* never inherit a transaction a failure left open */
	d->db_nrollups = 0;
	if ((rc = step_stmt(d, d->db_begin)) != SQLITE_DONE)
		goto fail;
	TAILQ_FOREACH(it, batch, li_entry)
	{
		it->li_changed = 0;
		if (it->li_op == LEDGER_OP_PROBE)
			rc = apply_probe(d, it);
		else if (it->li_op == LEDGER_OP_MARK ||
		    it->li_op == LEDGER_OP_BARRIER) {
			/* Committed with everything queued before it. */
			it->li_changed = 1;
			rc = SQLITE_DONE;
		} else if (it->li_op == LEDGER_OP_ALERT ||
		    it->li_op == LEDGER_OP_ALERT_DELIVERY)
			rc = apply_alert(d, it);
		else if (it->li_op == LEDGER_OP_KILL_ADD ||
		    it->li_op == LEDGER_OP_KILL_DELETE)
			rc = apply_kill(d, it);
		else if (it->li_op == LEDGER_OP_EXT_ADD ||
		    it->li_op == LEDGER_OP_EXT_REVOKE)
			rc = apply_extension(d, it);
		else if (it->li_op == LEDGER_OP_SHIP_DONE)
			rc = apply_ship_done(d, it);
		else
			rc = apply_insert(d, it);
		if (rc != SQLITE_DONE) {
			d->db_failed_item = it;
			goto fail;
		}
	}
	if ((rc = rollup_flush(d)) != SQLITE_DONE ||
	    (rc = step_stmt(d, d->db_commit)) != SQLITE_DONE)
		goto fail;
	return (0);
fail:
	/*
	 * After FULL, IOERR, BUSY or NOMEM SQLite may already have rolled the
	 * transaction back on its own (docs/operations.md, When the ledger cannot write); if not, we do.
	 */
	d->db_err = rc;
	d->db_nrollups = 0;
	ledger_db_rollback(d);
	return (-1);
}

/*
 * Checkpoint the WAL into the database (when the open had succeeded),
 * then close everything. Safe on a half-opened ledger_db.
 */
void
ledger_db_close(struct ledger_db *d)
{
	sqlite3_finalize(d->db_begin);
	sqlite3_finalize(d->db_commit);
	sqlite3_finalize(d->db_rollback);
	sqlite3_finalize(d->db_insert);
	sqlite3_finalize(d->db_probe);
	sqlite3_finalize(d->db_alert);
	sqlite3_finalize(d->db_alert_delivery);
	sqlite3_finalize(d->db_kill_add);
	sqlite3_finalize(d->db_kill_delete);
	sqlite3_finalize(d->db_ext_add);
	sqlite3_finalize(d->db_ext_revoke);
	sqlite3_finalize(d->db_cursor);
	sqlite3_finalize(d->db_prune_calls);
	sqlite3_finalize(d->db_prune_alerts);
	sqlite3_finalize(d->db_rollup);
	d->db_rollup = NULL;
	free(d->db_rollups);
	d->db_rollups = NULL;
	d->db_nrollups = d->db_rollups_cap = 0;
	d->db_cursor = d->db_prune_calls = d->db_prune_alerts = NULL;
	d->db_begin = d->db_commit = d->db_rollback = NULL;
	d->db_insert = d->db_probe = NULL;
	d->db_alert = d->db_alert_delivery = NULL;
	d->db_kill_add = d->db_kill_delete = NULL;
	d->db_ext_add = d->db_ext_revoke = NULL;
	if (d->db_conn != NULL) {
		ledger_db_rollback(d);
		if (d->db_synchronous != 0 &&
		    sqlite3_exec(d->db_conn, "PRAGMA wal_checkpoint(TRUNCATE)",
			NULL, NULL, NULL) != SQLITE_OK)
			log_warnx("ledger: checkpoint: %s",
			    sqlite3_errmsg(d->db_conn));
		if (sqlite3_close(d->db_conn) != SQLITE_OK)
			log_warnx(
			    "ledger: close: %s", sqlite3_errmsg(d->db_conn));
		d->db_conn = NULL;
	}
	if (d->db_lockfd != -1) {
		close(d->db_lockfd);
		d->db_lockfd = -1;
	}
	if (d->db_placed_fd != -1) {
		close(d->db_placed_fd);
		d->db_placed_fd = -1;
	}
	free(d->db_path);
	free(d->db_file);
	free(d->db_wal);
	free(d->db_shm);
	d->db_path = d->db_file = d->db_wal = d->db_shm = NULL;
}

#ifdef TG_UNITTEST
/* Test hook: PRAGMA max_page_count on the write connection (disk full). */
void
ledger_db_max_pages(struct ledger_db *d, int64_t n)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %" PRId64, n);
	if (sqlite3_exec(d->db_conn, sql, NULL, NULL, NULL) != SQLITE_OK)
		log_warnx("ledger: %s: %s", sql, sqlite3_errmsg(d->db_conn));
}
#endif
