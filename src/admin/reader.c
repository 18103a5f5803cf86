/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API's reader threads. Spend and calls queries can scan a large
 * ledger, so they never run on the event loop: the loop queues a job on a
 * reader (at most ADMIN_QUEUE_MAX waiting or running on each, so a client
 * hammering /v1/spend gets 503 instead of an ever longer queue), the
 * reader's thread runs its jobs in order, and hands each finished job back
 * through a done list and an eventfd the loop watches. The loop then
 * answers the client, or drops the result if the client has gone
 * (admin.c clears aj_req; the job itself lives until it comes back). A
 * job is touched by one thread at a time: the loop until it is queued,
 * the reader until it is on the done list, the loop again after.
 *
 * There are two readers, each with its own thread, queue and database
 * connection. The local one reads the ledger through a read-only SQLite
 * connection. The fleet one (only with ledger.ship:) answers fleet=1
 * queries from PostgreSQL through a connection made at its first job and
 * made again after a failure; a slow or unreachable PostgreSQL holds up
 * fleet queries only, never the local ones and never the loop.
 *
 * When the ledger rebuilds a lost file (src/ledger/rebuild.c) the local
 * reader's connection still reads the old one, which no longer gets rows:
 * each job carries the ledger's generation from when it was queued, and
 * the reader opens the ledger again before the first job of a newer one.
 */
#include <sys/eventfd.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/ship.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "admin_int.h"

/* One reader: a thread, its queues, and the database it reads. */
struct reader {
	const char *rd_name; /* the thread's name */
	pthread_t rd_thread;
	pthread_mutex_t rd_mtx;
	pthread_cond_t rd_cond;
	struct admin_job *rd_todo, **rd_todo_tail;
	struct admin_job *rd_done, **rd_done_tail;
	size_t rd_jobs; /* submitted and not yet collected by the loop */
	int rd_quit;
	int rd_running; /* the thread was started */
	int rd_efd;
	struct event *rd_ev;
	/* The local reader: replaced under rd_mtx, for reader_stop. */
	sqlite3 *rd_db;
	char *rd_path; /* the ledger's path, to open it again */
	uint64_t rd_gen; /* the ledger generation rd_db was opened under */
	/* The fleet reader: its connection to PostgreSQL. */
	struct ship_link *rd_link;
};

static struct reader rd_local = {.rd_name = "tg-reader",
    .rd_mtx = PTHREAD_MUTEX_INITIALIZER,
    .rd_cond = PTHREAD_COND_INITIALIZER,
    .rd_efd = -1};
static struct reader rd_fleet = {.rd_name = "tg-fleet",
    .rd_mtx = PTHREAD_MUTEX_INITIALIZER,
    .rd_cond = PTHREAD_COND_INITIALIZER,
    .rd_efd = -1};

/*
 * The ledger was rebuilt since rd_db was opened: open the new file. On
 * failure the old connection stays, and the next job tries again.
 */
static void
reader_reopen(struct reader *rd, uint64_t gen)
{
	sqlite3 *db, *old;
	char *cause = NULL;
	int one = 1;

	if ((db = spend_open(rd->rd_path, &cause)) == NULL) {
		log_warnx("admin: the ledger was rebuilt but cannot be opened "
			  "again: %s; queries read the file it was rebuilt "
			  "from",
		    cause);
		free(cause);
		return;
	}
	pthread_mutex_lock(&rd->rd_mtx);
	old = rd->rd_db;
	rd->rd_db = db;
	rd->rd_gen = gen;
	/*
	 * Never delete the -wal and -shm of the old file by name: the new
	 * file has taken those names.
	 */
	(void)sqlite3_file_control(old, "main", SQLITE_FCNTL_PERSIST_WAL, &one);
	sqlite3_close(old);
	pthread_mutex_unlock(&rd->rd_mtx);
	log_info("admin: the ledger was rebuilt; queries read the new file");
}

/* Run one job on a reader's thread. */
static void
reader_run(struct reader *rd, struct admin_job *job)
{
	long long t0 = monotime_us();

	spend_out_init(&job->aj_out, SPEND_OUT_MAX);
	if (rd->rd_link != NULL) {
		job->aj_status = ship_answer(rd->rd_link, job->aj_kind,
		    job->aj_query, &job->aj_out, &job->aj_ctype, &job->aj_err);
		job->aj_run_us = monotime_us() - t0;
		return;
	}
	if (job->aj_ledger_gen != rd->rd_gen)
		reader_reopen(rd, job->aj_ledger_gen);
	if (job->aj_run != NULL)
		job->aj_status = job->aj_run(rd->rd_db, job->aj_query,
		    &job->aj_out, &job->aj_ctype, &job->aj_err);
	else if (job->aj_intent != NULL) {
		job->aj_ctype = "application/json";
		job->aj_status = ledger_rows_load(rd->rd_db, job->aj_open,
				     job->aj_nopen, &job->aj_err) != 0 ||
			spend_intent(rd->rd_db, LEDGER_CALLS_NOW,
			    job->aj_intent, job->aj_limit, 0, &job->aj_out,
			    &job->aj_err) != 0
		    ? 500
		    : 200;
		if (job->aj_status == 200 && job->aj_out.so_full) {
			job->aj_status = 413;
			job->aj_err =
			    xstrdup("the answer is too large; lower limit");
		}
	} else if (job->aj_kind == SPEND_KIND_CALLS &&
	    ledger_rows_load(
		rd->rd_db, job->aj_open, job->aj_nopen, &job->aj_err) != 0) {
		job->aj_status = 500;
		job->aj_ctype = "application/json";
	} else
		job->aj_status = spend_answer(rd->rd_db,
		    job->aj_kind == SPEND_KIND_CALLS ? LEDGER_CALLS_NOW : NULL,
		    job->aj_kind, job->aj_query, &job->aj_out, &job->aj_ctype,
		    &job->aj_err);
	job->aj_run_us = monotime_us() - t0;
}

static void *
reader_main(void *arg)
{
	struct reader *rd = arg;
	struct admin_job *job;
	uint64_t one = 1;

	pthread_mutex_lock(&rd->rd_mtx);
	for (;;) {
		while (!rd->rd_quit && rd->rd_todo == NULL)
			pthread_cond_wait(&rd->rd_cond, &rd->rd_mtx);
		if (rd->rd_quit)
			break;
		job = rd->rd_todo;
		if ((rd->rd_todo = job->aj_next) == NULL)
			rd->rd_todo_tail = &rd->rd_todo;
		job->aj_next = NULL;
		pthread_mutex_unlock(&rd->rd_mtx);

		reader_run(rd, job);

		pthread_mutex_lock(&rd->rd_mtx);
		*rd->rd_done_tail = job;
		rd->rd_done_tail = &job->aj_next;
		/* Wake the loop; a full counter still wakes it. */
		while (write(rd->rd_efd, &one, sizeof(one)) == -1 &&
		    errno == EINTR)
			;
	}
	pthread_mutex_unlock(&rd->rd_mtx);
	return (NULL);
}

/* A reader's eventfd fired: answer its finished jobs on the loop thread. */
static void
reader_done_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct reader *rd = arg;
	struct admin_job *list, *job;
	uint64_t v;

	(void)ev;
	while (read(fd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&rd->rd_mtx);
	list = rd->rd_done;
	rd->rd_done = NULL;
	rd->rd_done_tail = &rd->rd_done;
	for (job = list; job != NULL; job = job->aj_next)
		rd->rd_jobs--;
	pthread_mutex_unlock(&rd->rd_mtx);
	while ((job = list) != NULL) {
		list = job->aj_next;
		job->aj_next = NULL;
		admin_job_done(job);
	}
}

/* Free what a reader holds once its thread is gone (or never ran). */
static void
reader_free(struct reader *rd)
{
	struct admin_job *job;

	while ((job = rd->rd_todo) != NULL) {
		rd->rd_todo = job->aj_next;
		admin_job_free(job);
	}
	rd->rd_todo_tail = &rd->rd_todo;
	while ((job = rd->rd_done) != NULL) {
		rd->rd_done = job->aj_next;
		admin_job_free(job);
	}
	rd->rd_done_tail = &rd->rd_done;
	rd->rd_jobs = 0;
	if (rd->rd_ev != NULL)
		event_free(rd->rd_ev);
	rd->rd_ev = NULL;
	if (rd->rd_efd != -1)
		close(rd->rd_efd);
	rd->rd_efd = -1;
	sqlite3_close(rd->rd_db);
	rd->rd_db = NULL;
	free(rd->rd_path);
	rd->rd_path = NULL;
	ship_link_free(rd->rd_link);
	rd->rd_link = NULL;
}

/* Start rd's thread, its results coming back on base; 0 or -1. */
static int
reader_launch(struct reader *rd, struct event_base *base, char **cause)
{
	int rc;

	rd->rd_todo_tail = &rd->rd_todo;
	rd->rd_done_tail = &rd->rd_done;
	if ((rd->rd_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		xasprintf(cause, "eventfd: %s", strerror(errno));
		return (-1);
	}
	rd->rd_ev = event_new(
	    base, rd->rd_efd, EV_READ | EV_PERSIST, reader_done_cb, rd);
	if (rd->rd_ev == NULL || event_add(rd->rd_ev, NULL) == -1) {
		xasprintf(cause, "cannot watch the reader's eventfd");
		return (-1);
	}
	rd->rd_quit = 0;
	if ((rc = thread_start(&rd->rd_thread, rd->rd_name, reader_main, rd)) !=
	    0) {
		xasprintf(cause, "pthread_create: %s", strerror(rc));
		return (-1);
	}
	rd->rd_running = 1;
	return (0);
}

/*
 * Stop a reader: interrupt the query it runs, join it, and free every
 * job not collected (their clients are gone by now: admin_stop closes the
 * listener first).
 */
static void
reader_halt(struct reader *rd)
{
	if (rd->rd_running) {
		pthread_mutex_lock(&rd->rd_mtx);
		rd->rd_quit = 1;
		pthread_cond_signal(&rd->rd_cond);
		/* Under rd_mtx: reader_reopen swaps rd_db. */
		if (rd->rd_db != NULL)
			sqlite3_interrupt(rd->rd_db);
		if (rd->rd_link != NULL)
			ship_link_cancel(rd->rd_link);
		pthread_mutex_unlock(&rd->rd_mtx);
		pthread_join(rd->rd_thread, NULL);
		rd->rd_running = 0;
	}
	reader_free(rd);
}

/*
 * Open the ledger at path read-only and start the local reader, and with
 * ship (ledger.ship:, or NULL) the fleet reader, whose connection is made
 * by its first query. Results come back on base. Returns 0, or -1 with
 * *cause set.
 */
int
reader_start(struct event_base *base, const char *path,
    const struct ship_conf *ship, char **cause)
{
	if ((rd_local.rd_db = spend_open(path, cause)) == NULL)
		return (-1);
	rd_local.rd_path = xstrdup(path);
	rd_local.rd_gen = ledger_generation();
	if (reader_launch(&rd_local, base, cause) == -1)
		goto fail;
	if (ship != NULL) {
		rd_fleet.rd_link = ship_link_new(ship);
		if (reader_launch(&rd_fleet, base, cause) == -1)
			goto fail;
	}
	return (0);
fail:
	reader_halt(&rd_fleet);
	reader_halt(&rd_local);
	return (-1);
}

/* Whether fleet queries have a reader: ledger.ship: is configured. */
int
reader_has_fleet(void)
{
	return (rd_fleet.rd_running);
}

/*
 * Queue job for its reader (the fleet's for aj_fleet). Returns -1 when
 * that reader's queue is full or it does not run.
 */
int
reader_submit(struct admin_job *job)
{
	struct reader *rd = job->aj_fleet ? &rd_fleet : &rd_local;

	job->aj_ledger_gen = ledger_generation();
	pthread_mutex_lock(&rd->rd_mtx);
	if (!rd->rd_running || rd->rd_jobs >= ADMIN_QUEUE_MAX) {
		pthread_mutex_unlock(&rd->rd_mtx);
		return (-1);
	}
	rd->rd_jobs++;
	job->aj_next = NULL;
	*rd->rd_todo_tail = job;
	rd->rd_todo_tail = &job->aj_next;
	pthread_cond_signal(&rd->rd_cond);
	pthread_mutex_unlock(&rd->rd_mtx);
	return (0);
}

/* Stop both readers (see reader_halt). */
void
reader_stop(void)
{
	reader_halt(&rd_fleet);
	reader_halt(&rd_local);
}
