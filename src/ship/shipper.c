/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shipper: a thread of its own that sends the local ledger's final
 * rows (calls, alerts, kills) to the fleet ledger in PostgreSQL. It reads
 * the ledger on a read-only SQLite connection of its own (outbox.c,
 * reopened when the ledger's file is rebuilt) and talks to PostgreSQL with blocking
 * libpq on this thread only, so the event loop never waits for either.
 *
 * Every row that becomes final or changes gets the next ship_seq from the
 * ledger's writer; what is still to ship is exactly "ship_seq > cursor".
 * A batch is one statement, atomic on its own: the rows upserted by
 * (instance, id) and the stream's cursor in ship_cursors raised to the
 * batch's last ship_seq. Only then is the local cursor written
 * (ledger_ship_done, which also prunes old shipped rows). After a crash
 * between the two, shipping resumes from the smaller of the two cursors
 * and sends a batch again, which the upsert makes harmless; a PostgreSQL
 * restored from an older backup is refilled the same way.
 *
 * On any PostgreSQL error the connection is closed and made again after a
 * back-off (0.5 s doubling to 30 s, jittered). ship_stats gives the loop
 * a snapshot for /metrics and /healthz under a mutex.
 */
#include <sys/socket.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "tollgate/config.h"
#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/ship.h"
#include "tollgate/util.h"

#include "ship_int.h"

#define SHIP_BACKOFF_MIN_MS 500
#define SHIP_BACKOFF_MAX_MS (30 * 1000)
/* A statement PostgreSQL has not answered by then is an error. */
#define SHIP_STATEMENT_TIMEOUT "SET statement_timeout = '60s'"
/* An idle shipper asks the ledger to prune at most this often. */
#define SHIP_PRUNE_EVERY_MS 1000
/* How long shipper_stop waits for its cancel request to be answered. */
#define SHIP_CANCEL_WAIT_MS 2000
/* How often the ledger is read for the instance name just recorded. */
#define SHIP_RECORD_POLL_MS 10
/* While backing off, the backlog and the lag are measured this often. */
#define SHIP_MEASURE_EVERY_MS 1000
/* With nothing to ship, PostgreSQL is asked whether it is there this often,
 * so that "up" in /healthz is never older than that. */
#define SHIP_PING_EVERY_MS 5000

/*
 * The shipper. sp_lock guards sp_stop, sp_keep_ms and sp_stats, which the
 * loop reads and writes; everything else is the thread's alone while it
 * runs.
 */
static struct {
	int sp_running;
	pthread_t sp_thread;
	pthread_mutex_t sp_lock;
	pthread_cond_t sp_cond; /* signalled by shipper_stop */
	int sp_stop;
	int64_t sp_keep_ms; /* config_keep_local_ms; 0: no pruning */
	struct ship_stats sp_stats;

	struct config *sp_cf; /* a reference, for its ship_conf */
	const struct ship_conf *sp_sc; /* borrowed from sp_cf */
	struct ship_outbox sp_box; /* the ledger, read-only; its path */
	char *sp_instance; /* the name the rows are keyed by */
	int64_t sp_cursor[SHIP_NSTREAMS]; /* shipped up to this ship_seq */
	char *sp_upsert[SHIP_NSTREAMS]; /* the batch's statement */
	PGconn *sp_conn;
	int sp_fd; /* sp_conn's socket, -1: none; under sp_lock */
	PGcancel *sp_cancel; /* sp_conn's; under sp_lock, for shipper_stop */
	int64_t sp_oldest_ms; /* finished time of the oldest unshipped row */
	unsigned sp_seed; /* for the back-off's jitter */
	int64_t sp_pruned_at_ms; /* last idle prune request */
	int64_t sp_measured_ms; /* last shipper_measure, monotonic */
	int64_t sp_heard_ms; /* PostgreSQL's last answer, monotonic */
} shipper = {
    .sp_lock = PTHREAD_MUTEX_INITIALIZER,
    .sp_fd = -1,
};

/* Set by the cancel thread once its request is answered (or failed). */
static atomic_int shipper_cancelled;

/* The name /healthz and the metrics give a state. */
const char *
ship_state_name(enum ship_state s)
{
	switch (s) {
	case SHIP_OFF:
		return ("off");
	case SHIP_CONNECTING:
		return ("connecting");
	case SHIP_UP:
		return ("up");
	case SHIP_DOWN:
		return ("down");
	}
	return ("?");
}

/* A snapshot of the shipper's state and counters; all zero (off) if none. */
void
ship_stats(struct ship_stats *out)
{
	int64_t now = wallclock_ms();

	pthread_mutex_lock(&shipper.sp_lock);
	*out = shipper.sp_stats;
	/*
	 * The lag is counted to now, not to the last measure: a shipper
	 * stuck in a statement shows a growing lag, as an alert expects.
	 */
	out->sh_lag_ms = shipper.sp_oldest_ms != 0 && now > shipper.sp_oldest_ms
	    ? now - shipper.sp_oldest_ms
	    : 0;
	pthread_mutex_unlock(&shipper.sp_lock);
}

/* Has shipper_stop asked the thread to end? */
static int
shipper_stopping(void)
{
	int stop;

	pthread_mutex_lock(&shipper.sp_lock);
	stop = shipper.sp_stop;
	pthread_mutex_unlock(&shipper.sp_lock);
	return (stop);
}

/* Sleep ms, or less when shipper_stop is called. */
static void
shipper_sleep(int64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&shipper.sp_lock);
	while (!shipper.sp_stop &&
	    pthread_cond_timedwait(&shipper.sp_cond, &shipper.sp_lock, &ts) ==
		0)
		;
	pthread_mutex_unlock(&shipper.sp_lock);
}

/*
 * Record a failure: the state goes down and the error is kept. It is
 * logged as a warning when the state changes or the error is new, so
 * that a long outage is not a line per retry.
 */
static void
shipper_failed(const char *cause)
{
	pthread_mutex_lock(&shipper.sp_lock);
	if (shipper.sp_stats.sh_state != SHIP_DOWN ||
	    strncmp(shipper.sp_stats.sh_last_error, cause,
		sizeof(shipper.sp_stats.sh_last_error) - 1) != 0)
		log_warnx("ship: %s", cause);
	else
		log_debug("ship: %s", cause);
	shipper.sp_stats.sh_state = SHIP_DOWN;
	shipper.sp_stats.sh_errors++;
	strcopy(shipper.sp_stats.sh_last_error,
	    sizeof(shipper.sp_stats.sh_last_error), cause);
	pthread_mutex_unlock(&shipper.sp_lock);
}

/*
 * Take conn as the connection, or drop the one there is (conn NULL).
 * Its socket is kept for shipper_stop under sp_lock, and the old
 * connection is closed under it too, so shipper_stop never shuts down a
 * descriptor that was closed and given to something else.
 */
static void
shipper_set_conn(PGconn *conn)
{
	PGcancel *c = conn != NULL ? PQgetCancel(conn) : NULL;

	pthread_mutex_lock(&shipper.sp_lock);
	if (shipper.sp_conn != NULL && shipper.sp_conn != conn)
		PQfinish(shipper.sp_conn);
	shipper.sp_conn = conn;
	shipper.sp_fd = conn != NULL ? PQsocket(conn) : -1;
	if (shipper.sp_cancel != NULL)
		PQfreeCancel(shipper.sp_cancel);
	shipper.sp_cancel = c;
	pthread_mutex_unlock(&shipper.sp_lock);
}

/*
 * Ask PostgreSQL to cancel the statement in progress, on a thread of its
 * own: the request is a connection of its own, which on a dead path
 * would wait as long as the statement.
 */
static void *
shipper_cancel_main(void *arg)
{
	PGcancel *c = arg;
	char err[256];

	if (PQcancel(c, err, sizeof(err)) == 0)
		log_debug("ship: cannot cancel the statement: %s", err);
	PQfreeCancel(c);
	atomic_store(&shipper_cancelled, 1);
	return (NULL);
}

/*
 * Count what is left to ship and the age of its oldest row, into the
 * stats (the lag is counted from it when read).
 */
static void
shipper_measure(void)
{
	uint64_t backlog;
	int64_t oldest;

	if (shipper.sp_box.ob_db == NULL)
		return;
	shipper.sp_measured_ms = monotime_us() / 1000;
	ship_outbox_measure(
	    &shipper.sp_box, shipper.sp_cursor, &backlog, &oldest);
	pthread_mutex_lock(&shipper.sp_lock);
	shipper.sp_stats.sh_backlog = backlog;
	shipper.sp_oldest_ms = oldest;
	pthread_mutex_unlock(&shipper.sp_lock);
}

/*
 * Connect, migrate the schema and find where to resume: for each stream
 * the smaller of the local cursor and PostgreSQL's for this instance.
 * Returns 0, or -1 with *cause set and no connection.
 */
static int
shipper_connect(char **cause)
{
	const struct ship_conf *sc = shipper.sp_sc;
	const char *params[1];
	PGresult *r = NULL;
	PGconn *conn;
	int64_t local[SHIP_NSTREAMS], pg[SHIP_NSTREAMS], v;
	char *inst = NULL, *msg;
	const char *stream;
	int from, to, k;
	size_t i;

	if ((conn = ship_connect(sc, cause)) == NULL)
		return (-1);
	shipper_set_conn(conn);
	/* First, so that the migration's lock wait is bounded too. */
	if (ship_exec(shipper.sp_conn, sc, SHIP_STATEMENT_TIMEOUT,
		PGRES_COMMAND_OK, "setting up the session", NULL, cause) == -1)
		goto fail;
	if (ship_migrate(shipper.sp_conn, sc, &from, &to, cause) == -1)
		goto fail;
	if (from != to)
		log_info("ship: migrated the fleet ledger from schema version "
			 "%d to %d",
		    from, to);
	params[0] = shipper.sp_instance;
	r = PQexecParams(shipper.sp_conn,
	    "SELECT stream, seq FROM ship_cursors WHERE instance = $1", 1, NULL,
	    params, NULL, NULL, 0);
	if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK) {
		msg = ship_error(r, shipper.sp_conn, sc->sc_password);
		xasprintf(cause, "reading ship_cursors: %s", msg);
		free(msg);
		goto fail;
	}
	for (i = 0; i < SHIP_NSTREAMS; i++)
		pg[i] = 0;
	for (k = 0; k < PQntuples(r); k++) {
		stream = PQgetvalue(r, k, 0);
		v = strtoll(PQgetvalue(r, k, 1), NULL, 10);
		for (i = 0; i < SHIP_NSTREAMS; i++)
			if (strcmp(stream,
				ship_stream_name((enum ship_stream)i)) == 0)
				pg[i] = v;
	}
	PQclear(r);
	r = NULL;
	if (ship_outbox_cursors(&shipper.sp_box, local, &inst, cause) == -1)
		goto fail;
	free(inst);
	for (i = 0; i < SHIP_NSTREAMS; i++)
		shipper.sp_cursor[i] = local[i] < pg[i] ? local[i] : pg[i];
	return (0);
fail:
	PQclear(r);
	shipper_set_conn(NULL);
	return (-1);
}

/*
 * Ship one batch of stream i: up to batch rows after its cursor, as one
 * statement with the cursor. *nrows gets how many were shipped. Returns
 * 0, or -1 with *cause set (PostgreSQL's error, scrubbed, or the local
 * ledger's).
 */
static int
shipper_batch(size_t i, int *nrows, char **cause)
{
	const struct ship_conf *sc = shipper.sp_sc;
	PGresult *r = NULL;
	const char *params[3];
	char *json = NULL, *msg, seq[24];
	int64_t last, before = 0, keep;
	int n;

	*nrows = 0;
	if (ship_outbox_rows(&shipper.sp_box, i, shipper.sp_cursor[i],
		sc->sc_batch, &json, &n, &last, cause) == -1)
		return (-1);
	if (n == 0)
		return (0);
	snprintf(seq, sizeof(seq), "%" PRId64, last);
	params[0] = shipper.sp_instance;
	params[1] = json;
	params[2] = seq;
	r = PQexecParams(shipper.sp_conn, shipper.sp_upsert[i], 3, NULL, params,
	    NULL, NULL, 0);
	if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) {
		msg = ship_error(r, shipper.sp_conn, sc->sc_password);
		xasprintf(cause, "shipping %s: %s",
		    ship_stream_name((enum ship_stream)i), msg);
		free(msg);
		goto fail;
	}
	shipper.sp_cursor[i] = last;
	shipper.sp_heard_ms = monotime_us() / 1000;
	pthread_mutex_lock(&shipper.sp_lock);
	keep = shipper.sp_keep_ms;
	shipper.sp_stats.sh_rows[i] += (uint64_t)n;
	shipper.sp_stats.sh_batches++;
	shipper.sp_stats.sh_last_ok_ms = wallclock_ms();
	pthread_mutex_unlock(&shipper.sp_lock);
	if (keep > 0 && i != SHIP_KILLS)
		before = wallclock_ms() - keep;
	/* PostgreSQL has the rows: the local cursor may follow. */
	(void)ledger_ship_done(ship_stream_name((enum ship_stream)i),
	    shipper.sp_instance, last, before);
	*nrows = n;
	PQclear(r);
	free(json);
	return (0);
fail:
	PQclear(r);
	free(json);
	return (-1);
}

/*
 * Pruning happens when a batch is recorded; with nothing new to ship,
 * the ledger is asked now and then to prune what has aged since.
 */
static void
shipper_prune_idle(void)
{
	int64_t keep, now = wallclock_ms();
	size_t i;

	pthread_mutex_lock(&shipper.sp_lock);
	keep = shipper.sp_keep_ms;
	pthread_mutex_unlock(&shipper.sp_lock);
	if (keep <= 0 || now - shipper.sp_pruned_at_ms < SHIP_PRUNE_EVERY_MS)
		return;
	shipper.sp_pruned_at_ms = now;
	for (i = 0; i < SHIP_NSTREAMS; i++)
		if (i != SHIP_KILLS && shipper.sp_cursor[i] > 0)
			(void)ledger_ship_done(
			    ship_stream_name((enum ship_stream)i),
			    shipper.sp_instance, shipper.sp_cursor[i],
			    now - keep);
}

/*
 * The name rows are keyed by: the one this ledger already shipped under
 * if it did (its rows in PostgreSQL carry it), else the configured one.
 * Also sets the cursors to the local ones until the first connect.
 */
static int
shipper_pick_instance(char **cause)
{
	char *recorded = NULL;

	if (ship_outbox_cursors(
		&shipper.sp_box, shipper.sp_cursor, &recorded, cause) == -1)
		return (-1);
	if (recorded != NULL &&
	    strcmp(recorded, shipper.sp_sc->sc_instance) != 0) {
		log_warnx("ship: this ledger shipped as instance '%s'; "
			  "ledger.ship.instance says '%s': keeping '%s', the "
			  "name its rows have in PostgreSQL",
		    recorded, shipper.sp_sc->sc_instance, recorded);
		shipper.sp_instance = recorded;
		return (0);
	}
	if (recorded != NULL) {
		free(recorded);
		shipper.sp_instance = xstrdup(shipper.sp_sc->sc_instance);
		return (0);
	}
	/*
	 * Never shipped: the name goes into the ledger before any row goes
	 * to PostgreSQL under it. Otherwise a crash after the first batch
	 * and a restart under another name (a pod's default host:port)
	 * would ship that batch again as other rows.
	 */
	if (ledger_ship_done(ship_stream_name(SHIP_CALLS),
		shipper.sp_sc->sc_instance, 0, 0) == -1) {
		xasprintf(cause, "cannot record the instance name in %s",
		    shipper.sp_box.ob_path);
		return (-1);
	}
	while (!shipper_stopping()) {
		if (ship_outbox_cursors(&shipper.sp_box, shipper.sp_cursor,
			&recorded, cause) == -1)
			return (-1);
		if (recorded != NULL) {
			/* What the ledger kept, whoever recorded it. */
			shipper.sp_instance = recorded;
			return (0);
		}
		shipper_sleep(SHIP_RECORD_POLL_MS);
	}
	xasprintf(cause, "stopped");
	return (-1);
}

/* The thread: connect, ship while there is something, back off on error. */
static void *
shipper_main(void *arg)
{
	int64_t backoff = SHIP_BACKOFF_MIN_MS, wait;
	char *cause = NULL, *why = NULL;
	size_t i;
	int n, full;

	(void)arg;
	while (!shipper_stopping()) {
		if (shipper.sp_box.ob_db == NULL ||
		    ledger_generation() != shipper.sp_box.ob_gen) {
			if (ship_outbox_open(&shipper.sp_box, &cause) == -1 ||
			    (shipper.sp_instance == NULL &&
				shipper_pick_instance(&cause) == -1)) {
				shipper_failed(cause);
				free(cause);
				cause = NULL;
				ship_outbox_close(&shipper.sp_box);
				shipper_sleep(SHIP_BACKOFF_MAX_MS);
				continue;
			}
			shipper_measure();
		}
		if (shipper.sp_conn == NULL && shipper_connect(&cause) == 0) {
			shipper.sp_heard_ms = monotime_us() / 1000;
			/* From the resume point, before anyone reads "up". */
			shipper_measure();
			log_info("ship: shipping to the fleet ledger as "
				 "instance '%s'",
			    shipper.sp_instance);
			pthread_mutex_lock(&shipper.sp_lock);
			shipper.sp_stats.sh_state = SHIP_UP;
			pthread_mutex_unlock(&shipper.sp_lock);
		}
		/*
		 * A stream whose batch PostgreSQL refuses (a row it will not
		 * take) does not hold the others back: they ship while the
		 * connection stands, and the first error is what is kept.
		 */
		full = 0;
		for (i = 0; i < SHIP_NSTREAMS && shipper.sp_conn != NULL; i++) {
			if (shipper_batch(i, &n, &why) == 0) {
				if (n == shipper.sp_sc->sc_batch)
					full = 1;
				continue;
			}
			if (cause == NULL)
				cause = why;
			else
				free(why);
			why = NULL;
			if (PQstatus(shipper.sp_conn) != CONNECTION_OK ||
			    shipper_stopping())
				break;
		}
		/* Nothing to ship for a while: is PostgreSQL still there? */
		if (cause == NULL && shipper.sp_conn != NULL &&
		    monotime_us() / 1000 - shipper.sp_heard_ms >=
			SHIP_PING_EVERY_MS) {
			if (ship_exec(shipper.sp_conn, shipper.sp_sc,
				"SELECT 1", PGRES_TUPLES_OK,
				"asking PostgreSQL", NULL, &cause) == 0)
				shipper.sp_heard_ms = monotime_us() / 1000;
		}
		if (cause != NULL && shipper_stopping()) {
			/* Cancelled by shipper_stop: not a failure. */
			log_debug("ship: stopped: %s", cause);
			free(cause);
			break;
		}
		if (cause != NULL) {
			shipper_failed(cause);
			free(cause);
			cause = NULL;
			shipper_set_conn(NULL);
			/* Between half and all of the back-off, the backlog
			 * kept fresh for /healthz meanwhile. */
			wait = backoff / 2 +
			    rand_r(&shipper.sp_seed) % (backoff / 2 + 1);
			for (; wait > 0 && !shipper_stopping();
			     wait -= SHIP_MEASURE_EVERY_MS) {
				shipper_measure();
				shipper_sleep(wait < SHIP_MEASURE_EVERY_MS
					? wait
					: SHIP_MEASURE_EVERY_MS);
			}
			backoff = backoff * 2 > SHIP_BACKOFF_MAX_MS
			    ? SHIP_BACKOFF_MAX_MS
			    : backoff * 2;
			continue;
		}
		backoff = SHIP_BACKOFF_MIN_MS;
		/*
		 * Counting a large backlog after every batch would cost the
		 * drain a good part of its time: while batches are full, once
		 * a second is enough; idle, the count is small and exact.
		 */
		if (full) {
			if (monotime_us() / 1000 - shipper.sp_measured_ms >=
			    SHIP_MEASURE_EVERY_MS)
				shipper_measure();
			continue;
		}
		shipper_measure();
		shipper_prune_idle();
		shipper_sleep(shipper.sp_sc->sc_interval_ms);
	}
	shipper_set_conn(NULL);
	ship_outbox_close(&shipper.sp_box);
	return (NULL);
}

/*
 * Start shipping the ledger at cf's path to cf's ledger.ship: (nothing
 * without one). Called after ledger_open. Returns 0, or -1 with *cause
 * set when the thread cannot start; PostgreSQL being unreachable is not
 * an error here: the thread keeps trying.
 */
int
shipper_start(const struct config *cf, char **cause)
{
	static int cond_made;
	pthread_condattr_t ca;
	size_t i;
	int error;

	if (cf->cf_ship == NULL || shipper.sp_running)
		return (0);
	shipper.sp_cf = config_ref((struct config *)(uintptr_t)cf);
	shipper.sp_sc = cf->cf_ship;
	shipper.sp_box.ob_path = xstrdup(cf->cf_ledger_path);
	shipper.sp_seed = (unsigned)monotime_us();
	for (i = 0; i < SHIP_NSTREAMS; i++)
		shipper.sp_upsert[i] = ship_outbox_upsert_sql(i);
	memset(&shipper.sp_stats, 0, sizeof(shipper.sp_stats));
	shipper.sp_stats.sh_state = SHIP_CONNECTING;
	shipper.sp_stop = 0;
	shipper_configure(cf);
	/* Timed waits on the monotonic clock: a clock step is no pause. */
	if (!cond_made) {
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&shipper.sp_cond, &ca);
		pthread_condattr_destroy(&ca);
		cond_made = 1;
	}
	if ((error = thread_start(
		 &shipper.sp_thread, "tg-shipper", shipper_main, NULL)) != 0) {
		xasprintf(cause, "cannot start the shipper's thread: %s",
		    strerror(error));
		shipper.sp_stats.sh_state = SHIP_OFF;
		return (-1);
	}
	shipper.sp_running = 1;
	return (0);
}

/*
 * Take what a reload may change: the age past which shipped rows are
 * pruned (config_keep_local_ms, which a new policy's window may raise).
 */
void
shipper_configure(const struct config *cf)
{
	int64_t keep = config_keep_local_ms(cf, NULL);

	pthread_mutex_lock(&shipper.sp_lock);
	shipper.sp_keep_ms = keep;
	pthread_mutex_unlock(&shipper.sp_lock);
}

/*
 * Stop the thread and wait for it, before ledger_close. A statement in
 * progress (one waiting on a lock, say) is cancelled, so that PostgreSQL
 * rolls it back and its batch goes again at the next start; the cancel
 * request is a connection of its own, made on a thread of its own and
 * waited for SHIP_CANCEL_WAIT_MS at most. Then the connection's socket is
 * shut down, which needs no answer from anyone: on a dead path the
 * statement ends there. A connection being made takes at most its
 * connect_timeout. The stats go back to off.
 */
void
shipper_stop(void)
{
	pthread_t t;
	PGcancel *c;
	size_t i;
	int waited;

	if (shipper.sp_running) {
		pthread_mutex_lock(&shipper.sp_lock);
		shipper.sp_stop = 1;
		pthread_cond_broadcast(&shipper.sp_cond);
		c = shipper.sp_cancel;
		shipper.sp_cancel = NULL;
		pthread_mutex_unlock(&shipper.sp_lock);
		atomic_store(&shipper_cancelled, 0);
		if (c != NULL &&
		    thread_start(
			&t, "tg-ship-cancel", shipper_cancel_main, c) != 0) {
			PQfreeCancel(c);
			c = NULL;
		}
		if (c != NULL) {
			pthread_detach(t);
			for (waited = 0; waited < SHIP_CANCEL_WAIT_MS &&
			     !atomic_load(&shipper_cancelled);
			     waited += 5)
				(void)usleep(5000);
		}
		pthread_mutex_lock(&shipper.sp_lock);
		if (shipper.sp_fd >= 0)
			(void)shutdown(shipper.sp_fd, SHUT_RDWR);
		pthread_mutex_unlock(&shipper.sp_lock);
		pthread_join(shipper.sp_thread, NULL);
		shipper.sp_running = 0;
	}
	for (i = 0; i < SHIP_NSTREAMS; i++) {
		free(shipper.sp_upsert[i]);
		shipper.sp_upsert[i] = NULL;
	}
	free(shipper.sp_box.ob_path);
	free(shipper.sp_instance);
	shipper.sp_box.ob_path = NULL;
	shipper.sp_instance = NULL;
	if (shipper.sp_cf != NULL)
		config_unref(shipper.sp_cf);
	shipper.sp_cf = NULL;
	shipper.sp_sc = NULL;
	pthread_mutex_lock(&shipper.sp_lock);
	memset(&shipper.sp_stats, 0, sizeof(shipper.sp_stats));
	pthread_mutex_unlock(&shipper.sp_lock);
}
