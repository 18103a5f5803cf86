/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API's reader thread. Spend and calls queries can scan a large
 * ledger, so they never run on the event loop: the loop queues a job
 * (at most ADMIN_QUEUE_MAX waiting or running, so a client hammering
 * /v1/spend gets 503 instead of an ever longer queue), one thread runs the
 * jobs in order on its own read-only SQLite connection, and hands each
 * finished job back through a done list and an eventfd the loop watches.
 * The loop then answers the client, or drops the result if the client has
 * gone (admin.c clears aj_req; the job itself lives until it comes back).
 * A job is touched by one thread at a time: the loop until it is queued,
 * the reader until it is on the done list, the loop again after.
 *
 * When the ledger rebuilds a lost file (src/ledger/rebuild.c) the reader's
 * connection still reads the old one, which no longer gets rows: each job
 * carries the ledger's generation from when it was queued, and the reader
 * opens the ledger again before the first job of a newer one.
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
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "admin_int.h"

static pthread_t rd_thread;
static pthread_mutex_t rd_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rd_cond = PTHREAD_COND_INITIALIZER;
static struct admin_job *rd_todo, **rd_todo_tail = &rd_todo;
static struct admin_job *rd_done, **rd_done_tail = &rd_done;
static size_t rd_jobs; /* submitted and not yet collected by the loop */
static int rd_quit;
static int rd_running; /* the thread was started */
static int rd_efd = -1;
static struct event *rd_ev;
/* The reader thread's once it runs; replaced under rd_mtx, for reader_stop. */
static sqlite3 *rd_db;
static char *rd_path; /* the ledger's path, to open it again */
static uint64_t rd_gen; /* the ledger generation rd_db was opened under */

/*
 * The ledger was rebuilt since rd_db was opened: open the new file. On
 * failure the old connection stays, and the next job tries again.
 */
static void
reader_reopen(uint64_t gen)
{
	sqlite3 *db, *old;
	char *cause = NULL;
	int one = 1;

	if ((db = spend_open(rd_path, &cause)) == NULL) {
		log_warnx("admin: the ledger was rebuilt but cannot be opened "
			  "again: %s; queries read the file it was rebuilt "
			  "from",
		    cause);
		free(cause);
		return;
	}
	pthread_mutex_lock(&rd_mtx);
	old = rd_db;
	rd_db = db;
	rd_gen = gen;
	/*
	 * Never delete the -wal and -shm of the old file by name: the new
	 * file has taken those names.
	 */
	(void)sqlite3_file_control(old, "main", SQLITE_FCNTL_PERSIST_WAL, &one);
	sqlite3_close(old);
	pthread_mutex_unlock(&rd_mtx);
	log_info("admin: the ledger was rebuilt; queries read the new file");
}

/* Run one job on the reader thread. */
static void
reader_run(struct admin_job *job)
{
	long long t0 = monotime_us();

	if (job->aj_ledger_gen != rd_gen)
		reader_reopen(job->aj_ledger_gen);

	spend_out_init(&job->aj_out, SPEND_OUT_MAX);
	if (job->aj_run != NULL)
		job->aj_status = job->aj_run(rd_db, job->aj_query, &job->aj_out,
		    &job->aj_ctype, &job->aj_err);
	else
		job->aj_status = spend_answer(rd_db, job->aj_kind,
		    job->aj_query, &job->aj_out, &job->aj_ctype, &job->aj_err);
	job->aj_run_us = monotime_us() - t0;
}

static void *
reader_main(void *arg)
{
	struct admin_job *job;
	uint64_t one = 1;

	(void)arg;
	pthread_mutex_lock(&rd_mtx);
	for (;;) {
		while (!rd_quit && rd_todo == NULL)
			pthread_cond_wait(&rd_cond, &rd_mtx);
		if (rd_quit)
			break;
		job = rd_todo;
		if ((rd_todo = job->aj_next) == NULL)
			rd_todo_tail = &rd_todo;
		job->aj_next = NULL;
		pthread_mutex_unlock(&rd_mtx);

		reader_run(job);

		pthread_mutex_lock(&rd_mtx);
		*rd_done_tail = job;
		rd_done_tail = &job->aj_next;
		/* Wake the loop; a full counter still wakes it. */
		while (write(rd_efd, &one, sizeof(one)) == -1 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&rd_mtx);
	return (NULL);
}

/* The eventfd fired: answer every finished job on the loop thread. */
static void
reader_done_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct admin_job *list, *job;
	uint64_t v;

	(void)ev;
	(void)arg;
	while (read(fd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&rd_mtx);
	list = rd_done;
	rd_done = NULL;
	rd_done_tail = &rd_done;
	for (job = list; job != NULL; job = job->aj_next)
		rd_jobs--;
	pthread_mutex_unlock(&rd_mtx);
	while ((job = list) != NULL) {
		list = job->aj_next;
		job->aj_next = NULL;
		admin_job_done(job);
	}
}

/*
 * Open the ledger at path read-only and start the reader thread, whose
 * results come back on base. Returns 0, or -1 with *cause set.
 */
int
reader_start(struct event_base *base, const char *path, char **cause)
{
	int rc;

	if ((rd_db = spend_open(path, cause)) == NULL)
		return (-1);
	rd_path = xstrdup(path);
	rd_gen = ledger_generation();
	if ((rd_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		xasprintf(cause, "eventfd: %s", strerror(errno));
		goto fail;
	}
	rd_ev =
	    event_new(base, rd_efd, EV_READ | EV_PERSIST, reader_done_cb, NULL);
	if (rd_ev == NULL || event_add(rd_ev, NULL) == -1) {
		xasprintf(cause, "cannot watch the reader's eventfd");
		goto fail;
	}
	rd_quit = 0;
	if ((rc = thread_start(&rd_thread, "tg-reader", reader_main, NULL)) !=
	    0) {
		xasprintf(cause, "pthread_create: %s", strerror(rc));
		goto fail;
	}
	rd_running = 1;
	return (0);
fail:
	if (rd_ev != NULL)
		event_free(rd_ev);
	rd_ev = NULL;
	if (rd_efd != -1)
		close(rd_efd);
	rd_efd = -1;
	sqlite3_close(rd_db);
	rd_db = NULL;
	free(rd_path);
	rd_path = NULL;
	return (-1);
}

/* Queue job for the reader. Returns -1 when the queue is full. */
int
reader_submit(struct admin_job *job)
{
	job->aj_ledger_gen = ledger_generation();
	pthread_mutex_lock(&rd_mtx);
	if (!rd_running || rd_jobs >= ADMIN_QUEUE_MAX) {
		pthread_mutex_unlock(&rd_mtx);
		return (-1);
	}
	rd_jobs++;
	job->aj_next = NULL;
	*rd_todo_tail = job;
	rd_todo_tail = &job->aj_next;
	pthread_cond_signal(&rd_cond);
	pthread_mutex_unlock(&rd_mtx);
	return (0);
}

/*
 * Stop the reader: interrupt the query it runs, join it, and free every
 * job not collected (their clients are gone by now: admin_stop closes the
 * listener first).
 */
void
reader_stop(void)
{
	struct admin_job *job;

	if (!rd_running)
		return;
	pthread_mutex_lock(&rd_mtx);
	rd_quit = 1;
	pthread_cond_signal(&rd_cond);
	sqlite3_interrupt(rd_db); /* under rd_mtx: reader_reopen swaps it */
	pthread_mutex_unlock(&rd_mtx);
	pthread_join(rd_thread, NULL);
	rd_running = 0;

	while ((job = rd_todo) != NULL) {
		rd_todo = job->aj_next;
		admin_job_free(job);
	}
	rd_todo_tail = &rd_todo;
	while ((job = rd_done) != NULL) {
		rd_done = job->aj_next;
		admin_job_free(job);
	}
	rd_done_tail = &rd_done;
	rd_jobs = 0;
	event_free(rd_ev);
	rd_ev = NULL;
	close(rd_efd);
	rd_efd = -1;
	sqlite3_close(rd_db);
	rd_db = NULL;
	free(rd_path);
	rd_path = NULL;
}
