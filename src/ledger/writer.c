/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's writer thread, which owns the only write connection once
 * ledger_open has started it. It takes what is queued (the retry list
 * first, then up to LEDGER_BATCH_MAX new items), writes it as one
 * transaction through store.c, and answers each reservation by putting its
 * ticket on the done list and waking the loop through the eventfd, where
 * ledger.c runs the callbacks. So the commit, and its fsync under
 * durability: power, is paid per batch.
 *
 * When a transaction fails, its reservations are answered UNAVAILABLE (the
 * caller refuses the call with 503) and its settlements and records are
 * kept, in order, and retried with backoff until they land; a row SQLite
 * itself refuses is given up alone. Once the ledger is closing, retries
 * stop after LEDGER_STOP_RETRY_US. See docs/internals/ledger.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

#define LEDGER_BATCH_MAX 1024 /* new items taken per transaction */
#define LEDGER_BACKOFF_MIN_US 100000LL
#define LEDGER_BACKOFF_MAX_US 5000000LL
#define LEDGER_STOP_RETRY_US 2000000LL /* retries left once closing */

/*
 * An item is done with: answer a reservation, release its place in the
 * queue, free it. Called by the writer with l_lock held; returns whether
 * the loop must be woken.
 */
static int
finish(struct ledger *l, struct ledger_item *it, enum ledger_result r)
{
	int wake = 0;

	if (LEDGER_OP_ADMITTED(it->li_op))
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
	char idbuf[80];
	int wake = 0;

	while ((it = TAILQ_FIRST(batch)) != NULL) {
		TAILQ_REMOVE(batch, it, li_entry);
		if (it->li_changed)
			l->l_stats.ls_rows_written++;
		else if (it->li_op == LEDGER_OP_ALERT ||
		    it->li_op == LEDGER_OP_ALERT_DELIVERY)
			log_debug("ledger: alert %s: already written, or "
				  "unknown; skipped",
			    ledger_safe_id(&it->li_row, idbuf, sizeof(idbuf)));
		else if (it->li_op == LEDGER_OP_RECORD)
			log_warnx("ledger: call %s: a row with this id exists, "
				  "record skipped",
			    ledger_safe_id(&it->li_row, idbuf, sizeof(idbuf)));
		else if (it->li_op == LEDGER_OP_SETTLE)
			log_debug("ledger: call %s: not in flight, settlement "
				  "skipped",
			    ledger_safe_id(&it->li_row, idbuf, sizeof(idbuf)));
		else if (it->li_op == LEDGER_OP_KILL_ADD)
			log_warnx("ledger: %s: a kill with this id exists, "
				  "not written",
			    ledger_item_what(it, idbuf, sizeof(idbuf)));
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
	char idbuf[80];

	if (it->li_op != LEDGER_OP_RESERVE) {
		l->l_stats.ls_dropped++;
		log_warnx("ledger: %s: %s not written: %s",
		    ledger_item_what(it, idbuf, sizeof(idbuf)),
		    it->li_op == LEDGER_OP_SETTLE	? "settlement"
			: it->li_op == LEDGER_OP_RECORD ? "record"
			: it->li_op == LEDGER_OP_ALERT	? "alert"
			: it->li_op == LEDGER_OP_ALERT_DELIVERY
			? "delivery state"
			: "kill change",
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
void *
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
		if (wake) {
			/*
			 * Woken while l_lock is held, the loop would block on
			 * it in ledger_dispatch at once: wake it unlocked.
			 */
			pthread_mutex_unlock(&l->l_lock);
			wake_loop(l);
			pthread_mutex_lock(&l->l_lock);
		}
	}
	pthread_mutex_unlock(&l->l_lock);

	ledger_ckpt_stop(l->l_ckpt, &l->l_db);
	l->l_ckpt = NULL;
	ledger_db_close(&l->l_db);
	return (NULL);
}
