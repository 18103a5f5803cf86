/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's queue and writer thread. The event loop (one thread) copies
 * each row into a queued item and never waits on SQLite; one writer thread
 * owns the only write connection, takes everything queued, writes it as one
 * transaction (store.c) and hands each reservation's answer back to the
 * loop through an eventfd that a libevent event on the loop's base watches.
 * So the commit, and its fsync under durability: power, is paid per batch.
 *
 * When a transaction fails, its reservations are answered UNAVAILABLE (the
 * caller refuses the call with 503) and its settlements and records are
 * kept and retried with backoff until they land or the ledger is closed.
 * See docs/internals/ledger.md.
 */
#include <sys/eventfd.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

#define LEDGER_BATCH_MAX 1024 /* new items taken per transaction */
#define LEDGER_QUEUE_DEFAULT 4096 /* queue_max 0 */
#define LEDGER_ROW_STRINGS_MAX 65536 /* bytes of strings in one row */
#define LEDGER_BACKOFF_MIN_US 100000LL
#define LEDGER_BACKOFF_MAX_US 5000000LL
#define LEDGER_STOP_RETRY_US 2000000LL /* retries left once closing */

/*
 * A reservation's answer. Made by ledger_reserve, filled by the writer and
 * put on the done list under the lock, freed on the loop thread once its
 * callback has run or been skipped (ledger_dispatch, or ledger_close). The
 * loop thread alone reads and writes lt_cancelled, so a cancel needs no
 * lock and the ticket is never freed under the writer's feet.
 */
struct ledger_ticket {
	TAILQ_ENTRY(ledger_ticket) lt_entry; /* done list */
	ledger_cb lt_cb;
	void *lt_arg;
	enum ledger_result lt_result; /* writer, under l_lock */
	int lt_cancelled; /* loop thread only */
};
TAILQ_HEAD(ledger_tickets, ledger_ticket);

/* The open ledger; there is one per process. */
struct ledger {
	/* Set by ledger_open, then read-only. */
	struct event_base *l_base; /* borrowed */
	struct event *l_event; /* reads l_efd on the loop */
	int l_efd; /* eventfd: "the done list grew" */
	size_t l_queue_max;
	char *l_path;
	pthread_t l_thread;
	struct ledger_db l_db; /* the writer thread's once it runs */

	/* Loop thread only. */
	int l_closing; /* ledger_close running: no reservations, records */

	pthread_mutex_t l_lock; /* guards everything below */
	pthread_cond_t l_wake; /* the writer: items queued, stop */
	pthread_cond_t l_batch; /* ledger_close: a batch finished */
	struct ledger_items l_queue;
	struct ledger_tickets l_done;
	size_t l_admitted; /* reservations and records not yet finished */
	size_t l_reserving; /* reservations not yet answered */
	size_t l_depth; /* items not yet finished, settlements too */
	int l_stopping; /* the writer drains and exits */
	struct ledger_stats l_stats;
#ifdef TG_UNITTEST
	int l_test_paused;
	int64_t l_test_pages;
	int l_test_busy_ms;
#endif
};

static struct ledger *ledger;

static const char *const status_names[] = {
    [CALL_IN_FLIGHT] = "in_flight",
    [CALL_OK] = "ok",
    [CALL_ERROR] = "error",
    [CALL_REFUSED] = "refused",
    [CALL_CLIENT_CLOSED] = "client_closed",
    [CALL_UPSTREAM_ERROR] = "upstream_error",
    [CALL_INTERRUPTED] = "interrupted",
};

static const char *const source_names[] = {
    [USAGE_NONE] = "none",
    [USAGE_REPORTED] = "reported",
    [USAGE_ESTIMATED] = "estimated",
};

/* The ledger's name for a status: "in_flight", "client_closed", ... */
const char *
ledger_status_name(enum call_status s)
{
	if ((unsigned)s >= nitems(status_names))
		return ("unknown");
	return (status_names[s]);
}

/* The ledger's name for a usage source: "reported", "estimated", "none". */
const char *
ledger_usage_source_name(enum usage_source u)
{
	if ((unsigned)u >= nitems(source_names))
		return ("unknown");
	return (source_names[u]);
}

/* An id fit for a log line: it may come from a client header. */
static const char *
safe_id(const struct ledger_row *r, char *buf, size_t len)
{
	if (r == NULL || r->lr_id == NULL)
		return ("(none)");
	log_escape(buf, len, r->lr_id, strlen(r->lr_id));
	return (buf);
}

/* The string fields of a row, as pointers to them. */
static size_t
row_fields(struct ledger_row *r, const char **f[])
{
	size_t n = 0;
	int i;

	f[n++] = &r->lr_id;
	f[n++] = &r->lr_provider;
	f[n++] = &r->lr_endpoint;
	f[n++] = &r->lr_upstream;
	f[n++] = &r->lr_model;
	for (i = 0; i < TAG_MAX; i++)
		f[n++] = &r->lr_tags[i];
	f[n++] = &r->lr_key_fingerprint;
	f[n++] = &r->lr_price_version;
	f[n++] = &r->lr_refusal_reason;
	return (n);
}

#define ROW_FIELDS_MAX (8 + TAG_MAX)

/*
 * A deep copy of row as a queued item, or NULL (logged) if the row is not
 * one the ledger can write: no id, a status or usage source out of range,
 * an in_flight status where the call must be over, too many bytes.
 */
static struct ledger_item *
item_new(enum ledger_op op, const struct ledger_row *row)
{
	struct ledger_item *it;
	struct ledger_row copy;
	const char **f[ROW_FIELDS_MAX];
	char idbuf[64], *p;
	size_t i, n, len, total = 0;

	if (row == NULL || row->lr_id == NULL || row->lr_id[0] == '\0') {
		log_warnx("ledger: row without an id refused");
		return (NULL);
	}
	if ((unsigned)row->lr_status >= nitems(status_names) ||
	    (unsigned)row->lr_usage_source >= nitems(source_names)) {
		log_warnx("ledger: call %s: bad status %d or usage source %d",
		    safe_id(row, idbuf, sizeof(idbuf)), (int)row->lr_status,
		    (int)row->lr_usage_source);
		return (NULL);
	}
	if (op != LEDGER_OP_RESERVE && row->lr_status == CALL_IN_FLIGHT) {
		log_warnx(
		    "ledger: call %s: a finished call cannot be in flight",
		    safe_id(row, idbuf, sizeof(idbuf)));
		return (NULL);
	}
	copy = *row;
	n = row_fields(&copy, f);
	for (i = 0; i < n; i++)
		if (*f[i] != NULL)
			total += strlen(*f[i]) + 1;
	if (total > LEDGER_ROW_STRINGS_MAX) {
		log_warnx("ledger: call %s: row of %zu bytes refused",
		    safe_id(row, idbuf, sizeof(idbuf)), total);
		return (NULL);
	}

	it = xmalloc(sizeof(*it) + total);
	memset(it, 0, sizeof(*it));
	it->li_op = op;
	it->li_row = *row;
	n = row_fields(&it->li_row, f);
	p = it->li_strings;
	for (i = 0; i < n; i++) {
		if (*f[i] == NULL)
			continue;
		len = strlen(*f[i]) + 1;
		memcpy(p, *f[i], len);
		*f[i] = p;
		p += len;
	}
	return (it);
}

/*
 * Queue an item. Reservations and records count against queue_max and are
 * refused when it is reached; settlements are always taken (each follows a
 * reservation that was admitted). 0 or -1.
 */
static int
enqueue(struct ledger *l, struct ledger_item *it)
{
	char idbuf[64];

	pthread_mutex_lock(&l->l_lock);
	if (l->l_stopping) {
		pthread_mutex_unlock(&l->l_lock);
		log_warnx("ledger: call %s: ledger closed, write dropped",
		    safe_id(&it->li_row, idbuf, sizeof(idbuf)));
		return (-1);
	}
	if (it->li_op != LEDGER_OP_SETTLE) {
		if (l->l_admitted >= l->l_queue_max) {
			l->l_stats.ls_refused_full++;
			pthread_mutex_unlock(&l->l_lock);
			return (-1);
		}
		l->l_admitted++;
		if (it->li_op == LEDGER_OP_RESERVE)
			l->l_reserving++;
	}
	l->l_depth++;
	TAILQ_INSERT_TAIL(&l->l_queue, it, li_entry);
	pthread_cond_signal(&l->l_wake);
	pthread_mutex_unlock(&l->l_lock);
	return (0);
}

/* Run the callbacks of answered reservations; on the loop thread. */
static void
ledger_dispatch(struct ledger *l)
{
	struct ledger_tickets done;
	struct ledger_ticket *t;

	TAILQ_INIT(&done);
	pthread_mutex_lock(&l->l_lock);
	TAILQ_CONCAT(&done, &l->l_done, lt_entry);
	pthread_mutex_unlock(&l->l_lock);

	/*
	 * A callback may cancel a ticket further down this list (its session
	 * closing another), so the flag is read just before each call.
	 */
	while ((t = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, t, lt_entry);
		if (!t->lt_cancelled)
			t->lt_cb(t->lt_arg, t->lt_result);
		free(t);
	}
}

static void
ledger_done_cb(evutil_socket_t fd, short events, void *arg)
{
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) == -1 && errno != EAGAIN)
		log_warn("ledger: eventfd read");
	ledger_dispatch(arg);
}

/*
 * An item is done with: answer a reservation, release its place in the
 * queue, free it. Called by the writer with l_lock held; returns whether
 * the loop must be woken.
 */
static int
finish(struct ledger *l, struct ledger_item *it, enum ledger_result r)
{
	int wake = 0;

	if (it->li_op != LEDGER_OP_SETTLE)
		l->l_admitted--;
	if (it->li_op == LEDGER_OP_RESERVE) {
		it->li_ticket->lt_result = r;
		TAILQ_INSERT_TAIL(&l->l_done, it->li_ticket, lt_entry);
		l->l_reserving--;
		wake = 1;
	}
	l->l_depth--;
	free(it);
	return (wake);
}

/* The batch committed: answer and free every item. Lock held. */
static int
batch_done(struct ledger *l, struct ledger_items *batch)
{
	struct ledger_item *it;
	char idbuf[64];
	int wake = 0;

	while ((it = TAILQ_FIRST(batch)) != NULL) {
		TAILQ_REMOVE(batch, it, li_entry);
		if (it->li_changed)
			l->l_stats.ls_rows_written++;
		else if (it->li_op == LEDGER_OP_RECORD)
			log_warnx("ledger: call %s: a row with this id exists, "
				  "record skipped",
			    safe_id(&it->li_row, idbuf, sizeof(idbuf)));
		else if (it->li_op == LEDGER_OP_SETTLE)
			log_debug("ledger: call %s: not in flight, settlement "
				  "skipped",
			    safe_id(&it->li_row, idbuf, sizeof(idbuf)));
		wake |= finish(
		    l, it, it->li_changed ? LEDGER_OK : LEDGER_DUPLICATE);
	}
	return (wake);
}

/*
 * Give up on an item: a reservation is answered UNAVAILABLE, a settlement
 * or record is dropped and counted (its row stays in flight and is charged
 * at the reservation by the next start's recovery). Lock held.
 */
static int
drop(struct ledger *l, struct ledger_item *it, const char *why)
{
	char idbuf[64];

	if (it->li_op != LEDGER_OP_RESERVE) {
		l->l_stats.ls_dropped++;
		log_warnx("ledger: call %s: %s not written: %s",
		    safe_id(&it->li_row, idbuf, sizeof(idbuf)),
		    it->li_op == LEDGER_OP_SETTLE ? "settlement" : "record",
		    why);
	}
	return (finish(l, it, LEDGER_UNAVAILABLE));
}

static void
wake_loop(struct ledger *l)
{
	uint64_t one = 1;

	if (write(l->l_efd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_warn("ledger: eventfd write");
}

/* Wait on l_wake until the monotonic deadline (µs). Lock held. */
static void
wait_until(struct ledger *l, long long deadline_us)
{
	struct timespec ts;

	ts.tv_sec = deadline_us / 1000000;
	ts.tv_nsec = (deadline_us % 1000000) * 1000;
	pthread_cond_timedwait(&l->l_wake, &l->l_lock, &ts);
}

/* The writer's state across batches. */
struct writer {
	struct ledger_items w_retry; /* kept after a failure, in order */
	int w_failing; /* in a failure streak */
	uint64_t w_streak; /* failed attempts in the streak */
	long long w_streak_start;
	long long w_backoff; /* µs */
	long long w_next_try;
	long long w_stop_deadline; /* 0 until the writer sees l_stopping */
	char w_why[LEDGER_ERRMSG_MAX + 128]; /* the last failure */
};

/*
 * The batch failed. Reservations are answered UNAVAILABLE, settlements
 * and records go back to the retry list, keeping their order. When SQLite
 * blames one row (a constraint: retrying cannot help) that row alone is
 * given up and the others are retried at once. Lock held.
 */
static int
batch_failed(struct ledger *l, struct writer *w, struct ledger_items *batch,
    long long now)
{
	struct ledger_db *d = &l->l_db;
	struct ledger_item *it, *bad = NULL;
	char why[LEDGER_ERRMSG_MAX + 64];
	int wake = 0;

	l->l_stats.ls_failures++;
	snprintf(
	    why, sizeof(why), "%s (SQLite error %d)", d->db_errmsg, d->db_err);
	snprintf(w->w_why, sizeof(w->w_why), "closing; last error: %s", why);
	if (d->db_failed_item != NULL && ledger_db_blames_row(d->db_err))
		bad = d->db_failed_item;
	while ((it = TAILQ_FIRST(batch)) != NULL) {
		TAILQ_REMOVE(batch, it, li_entry);
		if (it == bad)
			wake |= drop(l, it, why);
		else if (bad == NULL && it->li_op == LEDGER_OP_RESERVE)
			wake |= finish(l, it, LEDGER_UNAVAILABLE);
		else
			TAILQ_INSERT_TAIL(&w->w_retry, it, li_entry);
	}
	if (bad != NULL) {
		w->w_next_try = now;
		return (wake);
	}

	w->w_streak++;
	if (!w->w_failing) {
		w->w_failing = 1;
		w->w_streak_start = now;
		w->w_backoff = LEDGER_BACKOFF_MIN_US;
		l->l_stats.ls_failing = 1;
		log_warnx("ledger: write failed: %s; refusing reservations, "
			  "retrying settlements",
		    why);
	} else {
		w->w_backoff *= 2;
		if (w->w_backoff > LEDGER_BACKOFF_MAX_US)
			w->w_backoff = LEDGER_BACKOFF_MAX_US;
		log_debug("ledger: write failed again: %s", why);
	}
	w->w_next_try = now + w->w_backoff;
	return (wake);
}

/* The batch committed: close a failure streak if there was one. */
static void
streak_over(struct ledger *l, struct writer *w, long long now)
{
	if (!w->w_failing)
		return;
	log_info("ledger: writes recovered after %" PRIu64 " failed attempts "
		 "in %lld ms",
	    w->w_streak, (now - w->w_streak_start) / 1000);
	w->w_failing = 0;
	w->w_streak = 0;
	l->l_stats.ls_failing = 0;
}

/*
 * The writer thread: take the retry list plus up to LEDGER_BATCH_MAX new
 * items, write them as one transaction, answer, repeat. It leaves when
 * ledger_close has set l_stopping and everything is written, or given up
 * after LEDGER_STOP_RETRY_US of failures; then it checkpoints and closes.
 */
static void *
ledger_writer(void *arg)
{
	struct ledger *l = arg;
	struct ledger_items batch;
	struct ledger_item *it;
	struct writer w;
	long long now, t0, us;
	size_t nfresh, nbatch;
	int rc, wake;

	memset(&w, 0, sizeof(w));
	TAILQ_INIT(&w.w_retry);
	pthread_mutex_lock(&l->l_lock);
	for (;;) {
#ifdef TG_UNITTEST
		if (l->l_test_pages != 0) {
			ledger_db_max_pages(&l->l_db, l->l_test_pages);
			l->l_test_pages = 0;
		}
		if (l->l_test_busy_ms != 0) {
			sqlite3_busy_timeout(
			    l->l_db.db_conn, l->l_test_busy_ms);
			l->l_test_busy_ms = 0;
		}
		if (l->l_test_paused && !l->l_stopping) {
			pthread_cond_wait(&l->l_wake, &l->l_lock);
			continue;
		}
#endif
		now = monotime_us();
		if (l->l_stopping && w.w_stop_deadline == 0)
			w.w_stop_deadline = now + LEDGER_STOP_RETRY_US;

		TAILQ_INIT(&batch);
		TAILQ_CONCAT(&batch, &w.w_retry, li_entry);
		for (nfresh = 0; nfresh < LEDGER_BATCH_MAX &&
		     (it = TAILQ_FIRST(&l->l_queue)) != NULL;
		     nfresh++) {
			TAILQ_REMOVE(&l->l_queue, it, li_entry);
			TAILQ_INSERT_TAIL(&batch, it, li_entry);
		}
		if (TAILQ_EMPTY(&batch)) {
			if (l->l_stopping)
				break;
			pthread_cond_wait(&l->l_wake, &l->l_lock);
			continue;
		}

		/*
		 * Only retries: wait out the backoff, unless new items come
		 * (a reservation deserves an answer now, not in 5 s). Once
		 * closing, give up when the deadline passes.
		 */
		if (nfresh == 0 && w.w_failing) {
			if (l->l_stopping && now >= w.w_stop_deadline) {
				wake = 0;
				while ((it = TAILQ_FIRST(&batch)) != NULL) {
					TAILQ_REMOVE(&batch, it, li_entry);
					wake |= drop(l, it, w.w_why);
				}
				pthread_cond_broadcast(&l->l_batch);
				if (wake)
					wake_loop(l);
				continue;
			}
			if (now < w.w_next_try) {
				TAILQ_CONCAT(&w.w_retry, &batch, li_entry);
				wait_until(l,
				    l->l_stopping &&
					    w.w_stop_deadline < w.w_next_try
					? w.w_stop_deadline
					: w.w_next_try);
				continue;
			}
		}
		nbatch = 0;
		TAILQ_FOREACH(it, &batch, li_entry)
		nbatch++;
		pthread_mutex_unlock(&l->l_lock);

		t0 = monotime_us();
		rc = ledger_db_apply(&l->l_db, &batch);
		now = monotime_us();
		us = now - t0;

		pthread_mutex_lock(&l->l_lock);
		if (rc == 0) {
			streak_over(l, &w, now);
			l->l_stats.ls_commits++;
			l->l_stats.ls_commit_us_total += (uint64_t)us;
			if ((uint64_t)us > l->l_stats.ls_commit_us_max)
				l->l_stats.ls_commit_us_max = (uint64_t)us;
			if (nbatch > l->l_stats.ls_batch_max)
				l->l_stats.ls_batch_max = nbatch;
			wake = batch_done(l, &batch);
		} else
			wake = batch_failed(l, &w, &batch, now);
		pthread_cond_broadcast(&l->l_batch);
		if (wake)
			wake_loop(l);
	}
	pthread_mutex_unlock(&l->l_lock);

	ledger_db_close(&l->l_db);
	return (NULL);
}

/* Free a ledger that ledger_open did not finish, or ledger_close ended. */
static void
ledger_free(struct ledger *l)
{
	if (l->l_event != NULL)
		event_free(l->l_event);
	if (l->l_efd != -1)
		close(l->l_efd);
	ledger_db_close(&l->l_db);
	pthread_cond_destroy(&l->l_batch);
	pthread_cond_destroy(&l->l_wake);
	pthread_mutex_destroy(&l->l_lock);
	free(l->l_path);
	free(l);
}

/*
 * Open the ledger at path (its directory is made if missing), recover the
 * rows a crash left in flight, and start the writer thread. Answers reach
 * callbacks through an event on base. queue_max bounds the reservations and
 * records waiting to be written (0: a default of 4096). 0, or -1 with
 * *cause set.
 */
int
ledger_open(struct event_base *base, const char *path, enum durability dur,
    size_t queue_max, char **cause)
{
	struct ledger *l;
	pthread_condattr_t ca;
	sigset_t all, old;
	uint64_t interrupted;
	int error;

	if (ledger != NULL) {
		*cause = xstrdup("the ledger is already open");
		return (-1);
	}
	if (base == NULL || path == NULL || *path == '\0') {
		*cause = xstrdup("ledger: no event base or path");
		return (-1);
	}
	l = xcalloc(1, sizeof(*l));
	l->l_efd = -1;
	l->l_db.db_lockfd = -1;
	l->l_base = base;
	l->l_path = xstrdup(path);
	l->l_queue_max = queue_max != 0 ? queue_max : LEDGER_QUEUE_DEFAULT;
	TAILQ_INIT(&l->l_queue);
	TAILQ_INIT(&l->l_done);
	pthread_mutex_init(&l->l_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->l_wake, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&l->l_batch, NULL);

	if (ledger_db_open(&l->l_db, path, dur, &interrupted, cause) != 0)
		goto fail;
	l->l_stats.ls_interrupted = interrupted;
	if ((l->l_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		xasprintf(cause, "ledger: eventfd: %s", strerror(errno));
		goto fail;
	}
	l->l_event =
	    event_new(base, l->l_efd, EV_READ | EV_PERSIST, ledger_done_cb, l);
	if (l->l_event == NULL || event_add(l->l_event, NULL) == -1) {
		*cause = xstrdup("ledger: cannot add the answer event");
		goto fail;
	}

	/* Signals are the loop's business, never the writer's. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	error = pthread_create(&l->l_thread, NULL, ledger_writer, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (error != 0) {
		xasprintf(cause, "ledger: pthread_create: %s", strerror(error));
		goto fail;
	}
	log_info("ledger: %s open (wal, synchronous=%s)", path,
	    l->l_db.db_synchronous == 2 ? "full" : "normal");
	ledger = l;
	return (0);
fail:
	ledger_free(l);
	return (-1);
}

/*
 * Queue the in_flight row of a call about to be forwarded. The callback
 * runs on the loop once the row is committed (LEDGER_OK), or with
 * LEDGER_DUPLICATE or LEDGER_UNAVAILABLE; the ticket is valid until then.
 * NULL when the queue is full or the ledger closed: refuse the call.
 */
struct ledger_ticket *
ledger_reserve(const struct ledger_row *row, ledger_cb cb, void *arg)
{
	struct ledger *l = ledger;
	struct ledger_ticket *t;
	struct ledger_item *it;

	if (l == NULL || l->l_closing || cb == NULL)
		return (NULL);
	if ((it = item_new(LEDGER_OP_RESERVE, row)) == NULL)
		return (NULL);
	t = xcalloc(1, sizeof(*t));
	t->lt_cb = cb;
	t->lt_arg = arg;
	it->li_ticket = t;
	if (enqueue(l, it) != 0) {
		free(t);
		free(it);
		return (NULL);
	}
	return (t);
}

/*
 * The caller no longer wants the answer (its session went away): the
 * callback will not run, the row is still written, and the ledger frees
 * the ticket. Call only before the callback has run.
 */
void
ledger_ticket_cancel(struct ledger_ticket *t)
{
	if (t != NULL)
		t->lt_cancelled = 1;
}

/*
 * Queue the outcome of a call whose reservation was answered LEDGER_OK.
 * Always accepted while the ledger is open; kept and retried if the
 * ledger cannot write, never dropped before ledger_close.
 */
void
ledger_settle(const struct ledger_row *row)
{
	struct ledger_item *it;
	char idbuf[64];

	if (ledger == NULL) {
		log_warnx("ledger: call %s: ledger closed, settlement dropped",
		    safe_id(row, idbuf, sizeof(idbuf)));
		return;
	}
	if ((it = item_new(LEDGER_OP_SETTLE, row)) == NULL)
		return;
	if (enqueue(ledger, it) != 0)
		free(it);
}

/*
 * Queue a final row for a call that was never forwarded (a refusal). 0,
 * or -1 when the queue is full or the ledger closed.
 */
int
ledger_record(const struct ledger_row *row)
{
	struct ledger_item *it;

	if (ledger == NULL || ledger->l_closing)
		return (-1);
	if ((it = item_new(LEDGER_OP_RECORD, row)) == NULL)
		return (-1);
	if (enqueue(ledger, it) != 0) {
		free(it);
		return (-1);
	}
	return (0);
}

/* A snapshot of the counters; all zero when the ledger is not open. */
void
ledger_stats(struct ledger_stats *s)
{
	struct ledger *l = ledger;

	memset(s, 0, sizeof(*s));
	if (l == NULL)
		return;
	pthread_mutex_lock(&l->l_lock);
	*s = l->l_stats;
	s->ls_queue_depth = l->l_depth;
	pthread_mutex_unlock(&l->l_lock);
}

/*
 * Close the ledger: refuse new reservations and records, answer those
 * queued (running their callbacks here, which may still settle), let the
 * writer write every settlement, checkpoint, and free everything. Safe
 * when the ledger is not open, and from a callback during a close.
 */
void
ledger_close(void)
{
	struct ledger *l = ledger;

	if (l == NULL || l->l_closing)
		return;
	l->l_closing = 1;

	pthread_mutex_lock(&l->l_lock);
#ifdef TG_UNITTEST
	l->l_test_paused = 0;
	pthread_cond_signal(&l->l_wake);
#endif
	while (l->l_reserving > 0 || !TAILQ_EMPTY(&l->l_done)) {
		if (TAILQ_EMPTY(&l->l_done)) {
			pthread_cond_wait(&l->l_batch, &l->l_lock);
			continue;
		}
		pthread_mutex_unlock(&l->l_lock);
		ledger_dispatch(l);
		pthread_mutex_lock(&l->l_lock);
	}
	l->l_stopping = 1;
	pthread_cond_signal(&l->l_wake);
	pthread_mutex_unlock(&l->l_lock);

	pthread_join(l->l_thread, NULL);
	ledger_dispatch(l);
	log_info("ledger: %s closed (%" PRIu64 " rows written, %" PRIu64
		 " commits, %" PRIu64 " failures)",
	    l->l_path, l->l_stats.ls_rows_written, l->l_stats.ls_commits,
	    l->l_stats.ls_failures);
	ledger = NULL;
	ledger_free(l);
}

#ifdef TG_UNITTEST
/* Test hook: PRAGMA max_page_count on the writer's connection, next batch. */
void
ledger_test_max_pages(int64_t n)
{
	if (ledger == NULL)
		return;
	pthread_mutex_lock(&ledger->l_lock);
	ledger->l_test_pages = n;
	pthread_cond_signal(&ledger->l_wake);
	pthread_mutex_unlock(&ledger->l_lock);
}

/* Test hook: busy_timeout of the writer's connection, from its next batch. */
void
ledger_test_busy_timeout(int ms)
{
	if (ledger == NULL)
		return;
	pthread_mutex_lock(&ledger->l_lock);
	ledger->l_test_busy_ms = ms;
	pthread_cond_signal(&ledger->l_wake);
	pthread_mutex_unlock(&ledger->l_lock);
}

/* Test hook: hold the writer before its next batch (1), or let it go (0). */
void
ledger_test_pause(int paused)
{
	if (ledger == NULL)
		return;
	pthread_mutex_lock(&ledger->l_lock);
	ledger->l_test_paused = paused;
	pthread_cond_signal(&ledger->l_wake);
	pthread_mutex_unlock(&ledger->l_lock);
}

/* Test hook: PRAGMA synchronous as read back at open (1 or 2). */
int
ledger_test_synchronous(void)
{
	return (ledger != NULL ? ledger->l_db.db_synchronous : -1);
}
#endif
