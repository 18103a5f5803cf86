/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's checkpointer: a thread with its own connection that copies
 * the WAL back into ledger.db, so that no commit the writer makes ever
 * waits for a checkpoint. SQLite's own auto-checkpoint runs inside the
 * commit that crosses its threshold, and with it a read of up to 1,000
 * pages, their writes and an fsync or two: the call whose reservation is
 * in that batch waits milliseconds for work that is not its own.
 *
 * The writer's connection has no auto-checkpoint; its WAL hook
 * (ledger_ckpt_hook, run after each commit) wakes this thread once the WAL
 * holds LEDGER_CKPT_PAGES frames. A PASSIVE checkpoint copies what it can
 * without blocking the writer. A writer that never pauses could keep the
 * WAL from starting over, so past LEDGER_CKPT_RESTART_PAGES a RESTART
 * checkpoint holds the writer off for the few frames left and the WAL is
 * reused from its start (journal_size_limit then trims the file).
 *
 * Owned by the writer thread: started before it runs, stopped by it before
 * its final TRUNCATE checkpoint, and stopped and started again on a new
 * file when the writer rebuilds a lost ledger. A checkpoint whose fsync
 * fails is reported to the writer (ledger_ckpt_sync_failed), which then
 * treats the file as lost: see docs/internals/ledger.md. If the thread
 * cannot start, the writer's connection keeps SQLite's auto-checkpoint.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

#define LEDGER_CKPT_PAGES 1000 /* SQLite's own auto-checkpoint size */
#define LEDGER_CKPT_RESTART_PAGES 4000 /* ~16 MB: make the WAL start over */
#define LEDGER_CKPT_BUSY_US 5000 /* the most a RESTART waits for readers */

struct ledger_ckpt {
	pthread_t ck_thread;
	pthread_mutex_t ck_lock;
	pthread_cond_t ck_wake;
	sqlite3 *ck_conn; /* the checkpointer thread's alone */
	int ck_done; /* WAL frames when the last checkpoint ran; lock */
	int ck_seen; /* WAL frames after the last commit; lock */
	int ck_failing; /* the last checkpoint failed (warned once) */
	int ck_sync_failed; /* an fsync failed; the writer asks; lock */
	long long ck_busy_deadline; /* ckpt_busy's, monotonic µs */
	int ck_busy; /* a checkpoint is running or wanted; lock */
	int ck_stop; /* lock */
	uint64_t ck_runs; /* lock */
	uint64_t ck_us_total; /* lock */
	uint64_t ck_us_max; /* lock */
};

/*
 * The writer connection's WAL hook: after each commit, with the frames now
 * in the WAL. Wakes the checkpointer once LEDGER_CKPT_PAGES frames came
 * since the last checkpoint, and at most once per checkpoint; a commit
 * into a WAL that has started over costs nothing more.
 */
static int
ckpt_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	struct ledger_ckpt *ck = arg;

	(void)db;
	(void)name;
	if (frames < LEDGER_CKPT_PAGES)
		return (SQLITE_OK);
	pthread_mutex_lock(&ck->ck_lock);
	if (frames < ck->ck_done)
		ck->ck_done = 0; /* the WAL started over */
	ck->ck_seen = frames;
	if (!ck->ck_busy && frames - ck->ck_done >= LEDGER_CKPT_PAGES) {
		ck->ck_busy = 1;
		pthread_cond_signal(&ck->ck_wake);
	}
	pthread_mutex_unlock(&ck->ck_lock);
	return (SQLITE_OK);
}

/*
 * The checkpointer's busy handler, for RESTART only (PASSIVE never waits):
 * it first waits for the writer's transaction to end, then, holding the
 * writer off, for readers still on old frames. A reader may be a spend
 * query that runs for seconds, so give up after LEDGER_CKPT_BUSY_US; the
 * WAL then grows until the next try.
 */
static int
ckpt_busy(void *arg, int n)
{
	struct ledger_ckpt *ck = arg;

	return (
	    ledger_busy_step(&ck->ck_busy_deadline, n, LEDGER_CKPT_BUSY_US));
}

/* One checkpoint in mode: the WAL's frames in *log, those copied in *done. */
static int
ckpt_run(struct ledger_ckpt *ck, int mode, int *log, int *done)
{
	int rc;

	*log = *done = -1;
	rc = sqlite3_wal_checkpoint_v2(ck->ck_conn, NULL, mode, log, done);
	if (rc == SQLITE_OK) {
		if (ck->ck_failing)
			log_info("ledger: checkpoints work again");
		ck->ck_failing = 0;
		return (0);
	}
	if (ledger_db_sync_error(rc)) {
		pthread_mutex_lock(&ck->ck_lock);
		ck->ck_sync_failed = 1;
		pthread_mutex_unlock(&ck->ck_lock);
	}
	if ((rc & 0xff) != SQLITE_BUSY && !ck->ck_failing) {
		/* Once per streak: the next try is 1,000 frames away. */
		log_warnx("ledger: checkpoint: %s (SQLite error %d); the WAL "
			  "grows until one succeeds",
		    sqlite3_errmsg(ck->ck_conn), rc);
		ck->ck_failing = 1;
	}
	return (-1);
}

/*
 * Copy the WAL into the database without holding the writer off; return
 * the WAL's frames as this checkpoint saw them, the mark the next one
 * counts from (-1 on an error).
 *
 * The WAL starts over only when a commit finds every frame copied, and the
 * writer appends while a PASSIVE checkpoint copies, so under steady load
 * that never happens by itself. Once the WAL holds
 * LEDGER_CKPT_RESTART_PAGES, a second PASSIVE round copies what came
 * during the first and, if it copied everything it saw, a RESTART
 * checkpoint holds the writer off while it copies the last few frames: the
 * next commit starts the WAL over. If a reader still needs old frames (a
 * long spend query), PASSIVE cannot copy past them and RESTART would only
 * wait for the reader with the writer held off, so it is not tried; the
 * WAL grows until the reader is done.
 */
static int
ckpt_catch_up(struct ledger_ckpt *ck)
{
	int log, done, seen;

	if (ckpt_run(ck, SQLITE_CHECKPOINT_PASSIVE, &log, &done) == -1)
		return (-1);
	if (log < LEDGER_CKPT_RESTART_PAGES || done < log)
		return (log);
	if (ckpt_run(ck, SQLITE_CHECKPOINT_PASSIVE, &log, &done) == -1)
		return (-1);
	if (done < log)
		return (log);
	seen = log;
	if (ckpt_run(ck, SQLITE_CHECKPOINT_RESTART, &log, &done) == -1 ||
	    log < seen)
		return (seen);
	return (log);
}

static void *
ckpt_thread(void *arg)
{
	struct ledger_ckpt *ck = arg;
	long long t0, us;
	int mark;

	pthread_mutex_lock(&ck->ck_lock);
	for (;;) {
		while (!ck->ck_busy && !ck->ck_stop)
			pthread_cond_wait(&ck->ck_wake, &ck->ck_lock);
		if (ck->ck_stop)
			break;
		pthread_mutex_unlock(&ck->ck_lock);

		t0 = monotime_us();
		mark = ckpt_catch_up(ck);
		us = monotime_us() - t0;

		pthread_mutex_lock(&ck->ck_lock);
		if (mark < 0)
			mark = ck->ck_seen; /* failed: wait for 1,000 more */
		ck->ck_runs++;
		ck->ck_us_total += (uint64_t)us;
		if ((uint64_t)us > ck->ck_us_max)
			ck->ck_us_max = (uint64_t)us;
		if (mark > 0)
			ck->ck_done = mark;
		ck->ck_busy = 0;
	}
	pthread_mutex_unlock(&ck->ck_lock);
	return (NULL);
}

/*
 * Start the checkpointer for the ledger open on d at path. On failure the
 * writer's connection keeps SQLite's auto-checkpoint; NULL is returned and
 * a warning says why.
 */
struct ledger_ckpt *
ledger_ckpt_start(struct ledger_db *d, const char *path)
{
	struct ledger_ckpt *ck;
	char sql[64];
	int error, flags;

	ck = xcalloc(1, sizeof(*ck));
	pthread_mutex_init(&ck->ck_lock, NULL);
	pthread_cond_init(&ck->ck_wake, NULL);
	flags =
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
	if (sqlite3_open_v2(path, &ck->ck_conn, flags, NULL) != SQLITE_OK) {
		log_warnx("ledger: checkpointer: %s; checkpoints stay in "
			  "the writer's commits",
		    ck->ck_conn != NULL ? sqlite3_errmsg(ck->ck_conn)
					: "out of memory");
		goto fail;
	}
	sqlite3_busy_handler(ck->ck_conn, ckpt_busy, ck);
	/* A checkpoint syncs as its connection's synchronous says. */
	snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s",
	    d->db_synchronous == 2 ? "FULL" : "NORMAL");
	if (sqlite3_exec(ck->ck_conn, sql, NULL, NULL, NULL) != SQLITE_OK) {
		log_warnx("ledger: checkpointer: %s; checkpoints stay in "
			  "the writer's commits",
		    sqlite3_errmsg(ck->ck_conn));
		goto fail;
	}

	error = thread_start(&ck->ck_thread, "tg-checkpoint", ckpt_thread, ck);
	if (error != 0) {
		log_warnx("ledger: checkpointer: pthread_create: %s; "
			  "checkpoints stay in the writer's commits",
		    strerror(error));
		goto fail;
	}
	/* Replaces SQLite's auto-checkpoint hook on the writer connection. */
	sqlite3_wal_hook(d->db_conn, ckpt_hook, ck);
	return (ck);
fail:
	sqlite3_close(ck->ck_conn);
	pthread_cond_destroy(&ck->ck_wake);
	pthread_mutex_destroy(&ck->ck_lock);
	free(ck);
	return (NULL);
}

/*
 * Add this checkpointer's counters to s (a ledger may have had several,
 * one per file it rebuilt); safe from any thread.
 */
void
ledger_ckpt_stats(struct ledger_ckpt *ck, struct ledger_stats *s)
{
	if (ck == NULL)
		return;
	pthread_mutex_lock(&ck->ck_lock);
	s->ls_checkpoints += ck->ck_runs;
	s->ls_checkpoint_us_total += ck->ck_us_total;
	if (ck->ck_us_max > s->ls_checkpoint_us_max)
		s->ls_checkpoint_us_max = ck->ck_us_max;
	pthread_mutex_unlock(&ck->ck_lock);
}

/*
 * Whether a checkpoint's fsync failed since the last call: the database
 * file on disk may then differ from what SQLite believes it wrote.
 */
int
ledger_ckpt_sync_failed(struct ledger_ckpt *ck)
{
	int failed;

	if (ck == NULL)
		return (0);
	pthread_mutex_lock(&ck->ck_lock);
	failed = ck->ck_sync_failed;
	ck->ck_sync_failed = 0;
	pthread_mutex_unlock(&ck->ck_lock);
	return (failed);
}

/*
 * Stop the checkpointer (a checkpoint running finishes first), add its
 * counters to fold (when not NULL), close its connection and give the
 * writer's connection back its auto-checkpoint. Called by the thread
 * that owns d.
 */
void
ledger_ckpt_stop(
    struct ledger_ckpt *ck, struct ledger_db *d, struct ledger_stats *fold)
{
	int one = 1;

	if (ck == NULL)
		return;
	pthread_mutex_lock(&ck->ck_lock);
	ck->ck_stop = 1;
	pthread_cond_signal(&ck->ck_wake);
	pthread_mutex_unlock(&ck->ck_lock);
	pthread_join(ck->ck_thread, NULL);
	if (fold != NULL)
		ledger_ckpt_stats(ck, fold);
	if (d->db_conn != NULL)
		sqlite3_wal_autocheckpoint(d->db_conn, LEDGER_CKPT_PAGES);
	/*
	 * Never the ledger's last connection (the writer's is open), but if
	 * it were, SQLite would delete the -wal and -shm by name: files that
	 * may belong to another database by now.
	 */
	(void)sqlite3_file_control(
	    ck->ck_conn, "main", SQLITE_FCNTL_PERSIST_WAL, &one);
	if (sqlite3_close(ck->ck_conn) != SQLITE_OK)
		log_warnx("ledger: checkpointer close: %s",
		    sqlite3_errmsg(ck->ck_conn));
	pthread_cond_destroy(&ck->ck_wake);
	pthread_mutex_destroy(&ck->ck_lock);
	free(ck);
}
