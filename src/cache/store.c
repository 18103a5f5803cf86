/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cache's SQLite file (cache.path): one row per stored answer, keyed
 * by its SHA-256 (key.c), with its expiry and its size. Two connections:
 * the loop reads with a prepared statement on the primary key's index (a
 * lookup costs microseconds at 100,000 entries, measured in
 * docs/operations.md), and a thread of the store's own does every write,
 * so an answer of megabytes, an eviction or an fsync never holds up the
 * loop (the ledger's writer does the same, src/ledger/writer.c). Answers
 * to store are queued to that thread, which writes what is queued in one
 * transaction, deletes what has expired, and then the oldest entries
 * until the count and the size are within their bounds. The first answer
 * stored under a key stays until it expires (as Redis' SET NX): a second
 * answer to the same request is not written over it. The WAL mode lets
 * the loop read while the thread writes. Losing this file loses nothing
 * but future savings, so it is written with synchronous=NORMAL and a
 * store that cannot write only counts what it dropped.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "tollgate/cache.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

/* Answers queued for the thread beyond this many bytes are dropped. */
#define CACHE_QUEUE_MAX_BYTES (64 * 1024 * 1024)
/* How often the thread deletes expired entries when nothing is queued. */
#define CACHE_EXPIRE_EVERY_S 30

/* One answer to store; owned by the queue, then by the thread. */
struct cache_job {
	struct cache_job *cj_next;
	unsigned char cj_key[CACHE_KEY_LEN];
	char *cj_tenant;
	struct cache_entry cj_entry;
	int64_t cj_expires_ms;
	int64_t cj_max_entries;
	int64_t cj_max_bytes;
};

static const char cache_schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS entries ("
    " seq INTEGER PRIMARY KEY," /* insertion order: the oldest go first */
    " key BLOB NOT NULL UNIQUE,"
    " tenant TEXT,"
    " created_ms INTEGER NOT NULL,"
    " expires_ms INTEGER NOT NULL,"
    " status INTEGER NOT NULL,"
    " content_type TEXT,"
    " body BLOB NOT NULL,"
    " bytes INTEGER NOT NULL,"
    " input_tokens INTEGER NOT NULL,"
    " output_tokens INTEGER NOT NULL,"
    " cached_input_tokens INTEGER NOT NULL,"
    " cache_write_tokens INTEGER NOT NULL,"
    " cache_write_1h_tokens INTEGER NOT NULL,"
    " reasoning_tokens INTEGER NOT NULL,"
    " served_model TEXT,"
    " service_tier TEXT);"
    "CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires_ms);";

static const char cache_get_sql[] =
    "SELECT status, content_type, body, created_ms, input_tokens,"
    " output_tokens, cached_input_tokens, cache_write_tokens,"
    " cache_write_1h_tokens, reasoning_tokens, served_model, service_tier"
    " FROM entries WHERE key = ?1 AND expires_ms > ?2"
    " AND created_ms > ?2 - ?3";

static const char cache_put_sql[] =
    "INSERT INTO entries (key, tenant, created_ms, expires_ms, status,"
    " content_type, body, bytes, input_tokens, output_tokens,"
    " cached_input_tokens, cache_write_tokens, cache_write_1h_tokens,"
    " reasoning_tokens, served_model, service_tier)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
    " ?15, ?16) ON CONFLICT(key) DO NOTHING";

static struct {
	char *cs_path; /* NULL: not open */
	/* the loop's */
	sqlite3 *cs_rd;
	sqlite3_stmt *cs_get;
	/* the thread's */
	sqlite3 *cs_wr;
	pthread_t cs_thread;
	/* shared, under cs_mu */
	pthread_mutex_t cs_mu;
	pthread_cond_t cs_cv; /* work queued, or stop */
	pthread_cond_t cs_idle; /* the queue is empty and nothing written */
	struct cache_job *cs_head, *cs_tail;
	size_t cs_qbytes;
	int cs_busy;
	int cs_stop;
	/* figures, written by the thread */
	_Atomic int64_t cs_entries;
	_Atomic int64_t cs_bytes;
	_Atomic uint64_t cs_dropped;
} cs = {
    .cs_mu = PTHREAD_MUTEX_INITIALIZER,
    .cs_cv = PTHREAD_COND_INITIALIZER,
    .cs_idle = PTHREAD_COND_INITIALIZER,
};

/* Free what an entry holds and zero it. */
void
cache_entry_clear(struct cache_entry *e)
{
	free(e->ce_ctype);
	free(e->ce_body);
	memset(e, 0, sizeof(*e));
}

static void
job_free(struct cache_job *cj)
{
	free(cj->cj_tenant);
	cache_entry_clear(&cj->cj_entry);
	free(cj);
}

static int
exec_sql(sqlite3 *db, const char *sql, char **cause)
{
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		xasprintf(cause, "%s", err != NULL ? err : sqlite3_errmsg(db));
		sqlite3_free(err);
		return (-1);
	}
	return (0);
}

/* Read the figures from the file: after a start or a failed batch. */
static int
cache_count(sqlite3 *db)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db,
		"SELECT count(*), coalesce(sum(bytes), 0) FROM entries", -1,
		&st, NULL) != SQLITE_OK)
		return (-1);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		atomic_store(&cs.cs_entries, sqlite3_column_int64(st, 0));
		atomic_store(&cs.cs_bytes, sqlite3_column_int64(st, 1));
	}
	sqlite3_finalize(st);
	return (rc == SQLITE_ROW ? 0 : -1);
}

/* Delete the row seq, taking its bytes off the figures. */
static int
delete_seq(sqlite3 *db, int64_t seq, int64_t bytes)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "DELETE FROM entries WHERE seq = ?1", -1,
		&st, NULL) != SQLITE_OK)
		return (-1);
	sqlite3_bind_int64(st, 1, seq);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return (-1);
	if (sqlite3_changes(db) == 1) {
		atomic_fetch_sub(&cs.cs_entries, 1);
		atomic_fetch_sub(&cs.cs_bytes, bytes);
	}
	return (0);
}

/*
 * Delete the rows the query sql (seq, bytes; ?1 bound to arg) names, one
 * at a time, while more() says so (NULL: every one).
 */
static int
delete_where(sqlite3 *db, const char *sql, int64_t arg,
    int (*more)(const struct cache_job *), const struct cache_job *cj)
{
	sqlite3_stmt *st;
	int64_t seq, bytes;
	int rc;

	for (;;) {
		if (more != NULL && !more(cj))
			return (0);
		if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
			return (-1);
		sqlite3_bind_int64(st, 1, arg);
		rc = sqlite3_step(st);
		if (rc == SQLITE_DONE) {
			sqlite3_finalize(st);
			return (0);
		}
		if (rc != SQLITE_ROW) {
			sqlite3_finalize(st);
			return (-1);
		}
		seq = sqlite3_column_int64(st, 0);
		bytes = sqlite3_column_int64(st, 1);
		sqlite3_finalize(st);
		if (delete_seq(db, seq, bytes) == -1)
			return (-1);
	}
}

/* Are there more entries, or more bytes, than the last answer allows? */
static int
over_bounds(const struct cache_job *cj)
{
	return (atomic_load(&cs.cs_entries) > cj->cj_max_entries ||
	    atomic_load(&cs.cs_bytes) > cj->cj_max_bytes);
}

static int
bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL || *s == '\0')
		return (sqlite3_bind_null(st, i));
	return (sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC));
}

/* Insert one answer; a key already there keeps its first answer. */
static int
insert_job(sqlite3 *db, struct cache_job *cj)
{
	const struct cache_entry *e = &cj->cj_entry;
	const struct usage *u = &e->ce_usage;
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, cache_put_sql, -1, &st, NULL) != SQLITE_OK)
		return (-1);
	sqlite3_bind_blob(st, 1, cj->cj_key, CACHE_KEY_LEN, SQLITE_STATIC);
	bind_text(st, 2, cj->cj_tenant);
	sqlite3_bind_int64(st, 3, e->ce_created_ms);
	sqlite3_bind_int64(st, 4, cj->cj_expires_ms);
	sqlite3_bind_int(st, 5, e->ce_status);
	bind_text(st, 6, e->ce_ctype);
	sqlite3_bind_blob64(st, 7, e->ce_body != NULL ? e->ce_body : "",
	    e->ce_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 8, (int64_t)e->ce_len);
	sqlite3_bind_int64(st, 9, u->u_input);
	sqlite3_bind_int64(st, 10, u->u_output);
	sqlite3_bind_int64(st, 11, u->u_cached);
	sqlite3_bind_int64(st, 12, u->u_cache_write);
	sqlite3_bind_int64(st, 13, u->u_cache_write_1h);
	sqlite3_bind_int64(st, 14, u->u_reasoning);
	bind_text(st, 15, u->u_model);
	bind_text(st, 16, u->u_service_tier);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return (-1);
	if (sqlite3_changes(db) == 1) {
		atomic_fetch_add(&cs.cs_entries, 1);
		atomic_fetch_add(&cs.cs_bytes, (int64_t)e->ce_len);
	}
	return (0);
}

/*
 * One transaction: the expired entries go, the queued answers are
 * inserted, then the oldest entries go until the bounds of the last
 * answer's config hold. A failed batch is rolled back and its answers
 * counted as dropped; the figures are read again from the file.
 */
static void
write_batch(struct cache_job *list)
{
	sqlite3 *db = cs.cs_wr;
	struct cache_job *cj, *last = NULL;
	char *cause = NULL;
	size_t n = 0;
	int64_t now = wallclock_ms();

	if (exec_sql(db, "BEGIN IMMEDIATE", &cause) == -1)
		goto fail;
	if (delete_where(db,
		"SELECT seq, bytes FROM entries WHERE expires_ms <= ?1 "
		"LIMIT 1",
		now, NULL, NULL) == -1)
		goto fail;
	for (cj = list; cj != NULL; cj = cj->cj_next) {
		n++;
		last = cj;
		if (insert_job(db, cj) == -1)
			goto fail;
	}
	if (last != NULL &&
	    delete_where(db,
		"SELECT seq, bytes FROM entries ORDER BY seq LIMIT 1", 0,
		over_bounds, last) == -1)
		goto fail;
	if (exec_sql(db, "COMMIT", &cause) == -1)
		goto fail;
	return;
fail:
	if (cause == NULL)
		xasprintf(&cause, "%s", sqlite3_errmsg(db));
	log_warnx("cache %s: %zu answers not stored: %s", cs.cs_path, n, cause);
	free(cause);
	(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	atomic_fetch_add(&cs.cs_dropped, n);
	(void)cache_count(db);
}

static void *
cache_thread(void *arg)
{
	struct cache_job *list, *next;
	struct timespec ts;

	(void)arg;
	pthread_mutex_lock(&cs.cs_mu);
	for (;;) {
		if (cs.cs_head == NULL && !cs.cs_stop) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += CACHE_EXPIRE_EVERY_S;
			(void)pthread_cond_timedwait(&cs.cs_cv, &cs.cs_mu, &ts);
		}
		if (cs.cs_head == NULL && cs.cs_stop)
			break;
		list = cs.cs_head;
		cs.cs_head = cs.cs_tail = NULL;
		cs.cs_qbytes = 0;
		cs.cs_busy = 1;
		pthread_mutex_unlock(&cs.cs_mu);
		/* Nothing queued: the timer's turn deletes what expired. */
		write_batch(list);
		for (; list != NULL; list = next) {
			next = list->cj_next;
			job_free(list);
		}
		pthread_mutex_lock(&cs.cs_mu);
		cs.cs_busy = 0;
		if (cs.cs_head == NULL)
			pthread_cond_broadcast(&cs.cs_idle);
	}
	pthread_cond_broadcast(&cs.cs_idle);
	pthread_mutex_unlock(&cs.cs_mu);
	return (NULL);
}

static int
open_db(const char *path, int flags, sqlite3 **dbp, char **cause)
{
	if (sqlite3_open_v2(path, dbp, flags | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		xasprintf(cause, "%s",
		    *dbp != NULL ? sqlite3_errmsg(*dbp) : "out of memory");
		sqlite3_close(*dbp);
		*dbp = NULL;
		return (-1);
	}
	/* The thread's commits are short: the loop waits this long at
	 * most, then counts a miss. */
	sqlite3_busy_timeout(*dbp, 5);
	return (0);
}

/*
 * Create the file 0600 before SQLite does: it holds every tenant's
 * answers, and its -wal and -shm take its mode. A file an older version
 * left readable by others is narrowed the same way.
 */
static int
cache_create(const char *path, char **cause)
{
	struct stat sb;
	int fd;

	if ((fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600)) == -1) {
		xasprintf(cause, "open: %s", strerror(errno));
		return (-1);
	}
	if (fstat(fd, &sb) == -1 ||
	    ((sb.st_mode & 077) != 0 && fchmod(fd, sb.st_mode & 0700) == -1)) {
		xasprintf(cause, "chmod: %s", strerror(errno));
		close(fd);
		return (-1);
	}
	close(fd);
	return (0);
}

/*
 * Open (creating it if need be) the store at path and start its thread.
 * Returns 0, or -1 with *cause.
 */
int
cache_open(const char *path, char **cause)
{
	int error;

	*cause = NULL;
	if (cs.cs_path != NULL)
		return (0);
	if (cache_create(path, cause) == -1)
		return (-1);
	if (open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &cs.cs_wr,
		cause) == -1)
		return (-1);
	if (exec_sql(cs.cs_wr, cache_schema, cause) == -1 ||
	    cache_count(cs.cs_wr) == -1)
		goto fail;
	/* The writer may take longer when the loop reads a big answer. */
	sqlite3_busy_timeout(cs.cs_wr, 1000);
	if (open_db(path, SQLITE_OPEN_READONLY, &cs.cs_rd, cause) == -1)
		goto fail;
	if (sqlite3_prepare_v3(cs.cs_rd, cache_get_sql, -1,
		SQLITE_PREPARE_PERSISTENT, &cs.cs_get, NULL) != SQLITE_OK) {
		xasprintf(cause, "%s", sqlite3_errmsg(cs.cs_rd));
		goto fail;
	}
	cs.cs_stop = 0;
	if ((error = pthread_create(&cs.cs_thread, NULL, cache_thread, NULL)) !=
	    0) {
		xasprintf(cause, "pthread_create: %s", strerror(error));
		goto fail;
	}
	cs.cs_path = xstrdup(path);
	return (0);
fail:
	if (*cause == NULL)
		xasprintf(cause, "%s", sqlite3_errmsg(cs.cs_wr));
	sqlite3_finalize(cs.cs_get);
	cs.cs_get = NULL;
	sqlite3_close(cs.cs_rd);
	cs.cs_rd = NULL;
	sqlite3_close(cs.cs_wr);
	cs.cs_wr = NULL;
	return (-1);
}

/* Is a store open? */
int
cache_is_open(void)
{
	return (cs.cs_path != NULL);
}

/* The open store's file, or NULL. */
const char *
cache_path(void)
{
	return (cs.cs_path);
}

static char *
column_dup(sqlite3_stmt *st, int i)
{
	const unsigned char *s = sqlite3_column_text(st, i);

	return (s != NULL ? xstrdup((const char *)s) : NULL);
}

static void
column_copy(sqlite3_stmt *st, int i, char *dst, size_t len)
{
	const unsigned char *s = sqlite3_column_text(st, i);

	strcopy(dst, len, s != NULL ? (const char *)s : "");
}

/*
 * Look key up, on the loop: 1 with *e filled (the caller clears it) when
 * an entry that has not expired at now (Unix ms) and was stored less than
 * ttl_ms ago (the TTL now: a reload that lowers it shortens the entries
 * stored already) is there, 0 when none is (or the row is not an answer
 * this version stores), -1 when the store could not be read (counted as
 * a miss by the caller: the call goes to the provider).
 */
int
cache_get(const unsigned char *key, int64_t now, int64_t ttl_ms,
    struct cache_entry *e)
{
	sqlite3_stmt *st = cs.cs_get;
	const void *body;
	int rc, n;

	memset(e, 0, sizeof(*e));
	if (st == NULL)
		return (-1);
	sqlite3_reset(st);
	sqlite3_bind_blob(st, 1, key, CACHE_KEY_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now);
	sqlite3_bind_int64(st, 3, ttl_ms);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(st);
		return (0);
	}
	if (rc != SQLITE_ROW) {
		log_warnx("cache %s: lookup: %s", cs.cs_path,
		    sqlite3_errmsg(cs.cs_rd));
		sqlite3_reset(st);
		return (-1);
	}
	e->ce_status = sqlite3_column_int(st, 0);
	e->ce_ctype = column_dup(st, 1);
	body = sqlite3_column_blob(st, 2);
	n = sqlite3_column_bytes(st, 2);
	e->ce_len = (size_t)n;
	e->ce_body = xmalloc(e->ce_len + 1);
	if (n > 0)
		memcpy(e->ce_body, body, e->ce_len);
	e->ce_body[e->ce_len] = '\0';
	e->ce_created_ms = sqlite3_column_int64(st, 3);
	e->ce_usage.u_input = sqlite3_column_int64(st, 4);
	e->ce_usage.u_output = sqlite3_column_int64(st, 5);
	e->ce_usage.u_cached = sqlite3_column_int64(st, 6);
	e->ce_usage.u_cache_write = sqlite3_column_int64(st, 7);
	e->ce_usage.u_cache_write_1h = sqlite3_column_int64(st, 8);
	e->ce_usage.u_reasoning = sqlite3_column_int64(st, 9);
	column_copy(st, 10, e->ce_usage.u_model, sizeof(e->ce_usage.u_model));
	column_copy(st, 11, e->ce_usage.u_service_tier,
	    sizeof(e->ce_usage.u_service_tier));
	e->ce_usage.u_source = USAGE_REPORTED; /* only such are stored */
	sqlite3_reset(st);
	/* Only whole 2xx answers with their usage are stored: a row that
	 * is not one was not written by this version, and is a miss. */
	if (!cache_entry_valid(e)) {
		cache_entry_clear(e);
		return (0);
	}
	return (1);
}

/*
 * Store e (whose contents the store takes; e is left empty) under key
 * for tenant, for cc's TTL from now, within cc's bounds: queued for the
 * store's thread, so the loop never waits on the write. Dropped (and
 * counted) when the queue is full or no store is open.
 */
void
cache_put(const unsigned char *key, const char *tenant, struct cache_entry *e,
    int64_t now, const struct cache_conf *cc)
{
	struct cache_job *cj;

	pthread_mutex_lock(&cs.cs_mu);
	if (cs.cs_path == NULL || cs.cs_stop ||
	    cs.cs_qbytes + e->ce_len > CACHE_QUEUE_MAX_BYTES) {
		pthread_mutex_unlock(&cs.cs_mu);
		atomic_fetch_add(&cs.cs_dropped, 1);
		cache_entry_clear(e);
		return;
	}
	cj = xcalloc(1, sizeof(*cj));
	memcpy(cj->cj_key, key, CACHE_KEY_LEN);
	cj->cj_tenant = tenant != NULL ? xstrdup(tenant) : NULL;
	cj->cj_entry = *e;
	memset(e, 0, sizeof(*e));
	cj->cj_entry.ce_created_ms = now;
	cj->cj_expires_ms = now + cc->cc_ttl_ms;
	cj->cj_max_entries = cc->cc_max_entries;
	cj->cj_max_bytes = (int64_t)cc->cc_max_bytes;
	if (cs.cs_tail != NULL)
		cs.cs_tail->cj_next = cj;
	else
		cs.cs_head = cj;
	cs.cs_tail = cj;
	cs.cs_qbytes += cj->cj_entry.ce_len;
	pthread_cond_signal(&cs.cs_cv);
	pthread_mutex_unlock(&cs.cs_mu);
}

/*
 * Wait until every answer queued so far is written (for the unit tests;
 * never on a call's path).
 */
void
cache_sync(void)
{
	pthread_mutex_lock(&cs.cs_mu);
	while (cs.cs_path != NULL && (cs.cs_head != NULL || cs.cs_busy))
		pthread_cond_wait(&cs.cs_idle, &cs.cs_mu);
	pthread_mutex_unlock(&cs.cs_mu);
}

/* The store's figures (zero when none is open). */
void
cache_get_stats(struct cache_stats *st)
{
	st->cs_entries = atomic_load(&cs.cs_entries);
	st->cs_bytes = atomic_load(&cs.cs_bytes);
	st->cs_dropped = atomic_load(&cs.cs_dropped);
}

/* Write what is queued, stop the thread and close the store. */
void
cache_close(void)
{
	if (cs.cs_path == NULL)
		return;
	pthread_mutex_lock(&cs.cs_mu);
	cs.cs_stop = 1;
	pthread_cond_signal(&cs.cs_cv);
	pthread_mutex_unlock(&cs.cs_mu);
	pthread_join(cs.cs_thread, NULL);
	sqlite3_finalize(cs.cs_get);
	cs.cs_get = NULL;
	sqlite3_close(cs.cs_rd);
	cs.cs_rd = NULL;
	sqlite3_close(cs.cs_wr);
	cs.cs_wr = NULL;
	free(cs.cs_path);
	cs.cs_path = NULL;
	atomic_store(&cs.cs_entries, 0);
	atomic_store(&cs.cs_bytes, 0);
}
