/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's writer thread, which owns the only write connection once
 * ledger_open has started it. It takes what is queued (the retry list
 * first, then up to LEDGER_BATCH_MAX new items), writes it as one
 * transaction through store.c: final rows of settled calls and refusals,
 * alerts, kills, ship cursors. A probe (is a client's request id in the
 * ledger?) and a journal mark (everything before it is committed) are
 * answered by putting their ticket on the done list and waking the loop
 * through the eventfd, where ledger.c runs them. So the commit, and its
 * fsync under durability: power, is paid per batch, and no call waits
 * for it unless its client chose its request id.
 *
 * When a transaction fails, its probes are answered UNAVAILABLE (the
 * caller refuses the call with 503) and everything else is kept, in
 * order, and retried with backoff until it lands; a row SQLite itself
 * refuses is given up alone (and the journal segment it came from is
 * kept for the next start). Once the ledger is closing, retries stop
 * after LEDGER_STOP_RETRY_US.
 *
 * Before a batch's probes and marks are answered, and at least once every
 * LEDGER_CHECK_US, the writer makes sure the file it writes is still the
 * one at the ledger's path (rebuild.c). A file deleted, moved or replaced,
 * a -wal or -shm gone, or a failed fsync makes the ledger lost: that
 * batch's probes are answered UNAVAILABLE and its marks keep their
 * segments, every later reservation is refused at once (ledger.c), and
 * the writer rebuilds the ledger at its path from the open connection,
 * retrying with backoff, while settlements keep going into the open
 * connection and so into the rebuilt file. See docs/internals/ledger.md.
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
/*
 * A failed rebuild waits at least this many times as long as the attempt
 * took (a copy of a large ledger takes seconds), up to LEDGER_LOST_WAIT_MAX
 * _US, so a disk that keeps failing is not rewritten over and over.
 */
#define LEDGER_LOST_WAIT_FACTOR 10
#define LEDGER_LOST_WAIT_MAX_US (5 * 60 * 1000000LL)
#define LEDGER_STOP_RETRY_US 2000000LL /* retries left once closing */
#define LEDGER_CHECK_US 1000000LL /* the file checked at least this often */
#define LEDGER_FAILING_EVENT_US 60000000LL /* one FAILING event a minute */

/*
 * An item is done with: answer a probe or a mark, release its place in
 * the queue, free it (a settlement: mark it done for the loop to free). A mark is answered OK only if nothing was given up
 * since the one before. Called by the writer with l_lock held; returns
 * whether the loop must be woken.
 */
static int
finish(struct ledger *l, struct ledger_item *it, enum ledger_result r)
{
	int wake = 0;

	if (LEDGER_OP_TICKETED(it->li_op)) {
		if (it->li_op == LEDGER_OP_MARK) {
			if (l->l_mark_drops > 0)
				r = LEDGER_UNAVAILABLE;
			l->l_mark_drops = 0;
		}
		/* Something queued before it was given up: not all of it
		 * is in the file. */
		if (it->li_op == LEDGER_OP_BARRIER &&
		    l->l_stats.ls_dropped != it->li_ticket->lt_dropped)
			r = LEDGER_UNAVAILABLE;
		it->li_ticket->lt_result = r;
		TAILQ_INSERT_TAIL(&l->l_done, it->li_ticket, lt_entry);
		wake = 1;
	}
	l->l_depth--;
	/* The loop still shows it; it frees it (unwritten_trim). */
	if (it->li_op == LEDGER_OP_SETTLE)
		it->li_done = 1;
	else
		free(it);
	return (wake);
}

/*
 * Count a committed item: a row written, or for a ship cursor the rows
 * it pruned (the cursor's own row is bookkeeping, not a row written).
 * Lock held.
 */
static void
count_done(struct ledger *l, const struct ledger_item *it)
{
	if (it->li_op == LEDGER_OP_SHIP_DONE)
		l->l_stats.ls_pruned += it->li_pruned;
	else if (it->li_changed && !LEDGER_OP_TICKETED(it->li_op))
		l->l_stats.ls_rows_written++;
}

/* Say why a committed item changed nothing, where it matters. */
static void
log_skipped(struct ledger_item *it)
{
	char idbuf[80];

	if (it->li_op == LEDGER_OP_ALERT ||
	    it->li_op == LEDGER_OP_ALERT_DELIVERY)
		log_debug("ledger: alert %s: already written, or unknown; "
			  "skipped",
		    ledger_safe_id(&it->li_row, idbuf, sizeof(idbuf)));
	else if (it->li_op == LEDGER_OP_RECORD || it->li_op == LEDGER_OP_SETTLE)
		log_warnx("ledger: call %s: a row with this id exists, %s "
			  "skipped",
		    ledger_safe_id(&it->li_row, idbuf, sizeof(idbuf)),
		    it->li_op == LEDGER_OP_SETTLE ? "settlement" : "record");
	else if (it->li_op == LEDGER_OP_KILL_ADD)
		log_warnx("ledger: %s: a kill with this id exists, not written",
		    ledger_item_what(it, idbuf, sizeof(idbuf)));
	else if (it->li_op == LEDGER_OP_EXT_ADD)
		log_debug(
		    "ledger: %s: already in the ledger, not written again",
		    ledger_item_what(it, idbuf, sizeof(idbuf)));
}

/* The batch committed: answer and free every item. Lock held. */
static int
batch_done(struct ledger *l, struct ledger_items *batch)
{
	struct ledger_item *it;
	int wake = 0;

	while ((it = TAILQ_FIRST(batch)) != NULL) {
		TAILQ_REMOVE(batch, it, li_entry);
		count_done(l, it);
		if (!it->li_changed)
			log_skipped(it);
		wake |= finish(
		    l, it, it->li_changed ? LEDGER_OK : LEDGER_DUPLICATE);
	}
	return (wake);
}

/*
 * Give up on an item: a probe or a mark is answered UNAVAILABLE, anything
 * else is dropped and counted, and the next mark keeps its journal
 * segment (a settlement is in it: the next start writes the row). Lock
 * held.
 */
static int
drop(struct ledger *l, struct ledger_item *it, const char *why)
{
	char idbuf[80];

	if (!LEDGER_OP_TICKETED(it->li_op)) {
		l->l_stats.ls_dropped++;
		l->l_mark_drops++;
		log_warnx("ledger: %s: %s not written: %s",
		    ledger_item_what(it, idbuf, sizeof(idbuf)),
		    it->li_op == LEDGER_OP_SETTLE	? "settlement"
			: it->li_op == LEDGER_OP_RECORD ? "record"
			: it->li_op == LEDGER_OP_ALERT	? "alert"
			: it->li_op == LEDGER_OP_ALERT_DELIVERY
			? "delivery state"
			: it->li_op == LEDGER_OP_SHIP_DONE ? "cursor"
							   : "kill change",
		    why);
	}
	return (finish(l, it, LEDGER_UNAVAILABLE));
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
	long long w_last_commit; /* when the last transaction began */
	size_t w_last_batch; /* items in it */
	char w_why[LEDGER_ERRMSG_MAX + 128]; /* the last failure */

	/* The file lost: reservations refused until it is rebuilt. */
	enum ledger_lost w_lost;
	long long w_lost_start;
	long long w_lost_backoff; /* µs */
	long long w_lost_took; /* how long the last attempt took, µs */
	long long w_lost_next; /* the next attempt at getting it back */
	uint64_t w_lost_tries;
	char w_lost_cause[LEDGER_ERRMSG_MAX + 256]; /* logged when it changes */
	char *w_saved; /* a copy left beside another file at the path */
	long long w_next_check; /* the next full check of the file */

	/* Events for the loop. */
	int w_told; /* FAILING or LOST went out, RECOVERED not yet */
	long long w_failing_told; /* when the last FAILING went out */
};

/*
 * Tell the loop the ledger started failing, once per incident and at most
 * once per LEDGER_FAILING_EVENT_US (a disk on the edge of full succeeds
 * and fails by turns). While the file is lost, its event says it all.
 * Lock held; the caller wakes the loop.
 */
static int
tell_failing(struct ledger *l, struct writer *w, const char *why, long long now)
{
	if (w->w_lost != LEDGER_LOST_NONE || w->w_told ||
	    (w->w_failing_told != 0 &&
		now - w->w_failing_told < LEDGER_FAILING_EVENT_US))
		return (0);
	ledger_event_push(l, LEDGER_EVENT_FAILING, LEDGER_LOST_NONE,
	    "ledger %s: writes fail: %s; calls go on, kept in the journal, "
	    "until queue_max rows wait, then are refused (503) until a "
	    "write succeeds",
	    l->l_db.db_file, why);
	w->w_told = 1;
	w->w_failing_told = now;
	return (1);
}

/*
 * Tell the loop the ledger writes again, if it was told otherwise and
 * nothing is wrong any more. Lock held; the caller wakes the loop.
 */
static int
tell_recovered(struct ledger *l, struct writer *w, const char *how)
{
	if (!w->w_told || w->w_failing || w->w_lost != LEDGER_LOST_NONE)
		return (0);
	ledger_event_push(l, LEDGER_EVENT_RECOVERED, LEDGER_LOST_NONE,
	    "ledger %s: %s; calls are taken again", l->l_db.db_file, how);
	w->w_told = 0;
	return (1);
}

/*
 * The batch failed. Probes are answered UNAVAILABLE, the rest goes back
 * to the retry list, keeping its order. When SQLite
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
		else if (bad == NULL && it->li_op == LEDGER_OP_PROBE)
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
		log_warnx("ledger: write failed: %s; retrying, calls kept in "
			  "the journal meanwhile (refused once queue_max rows "
			  "wait)",
		    why);
		wake |= tell_failing(l, w, why, now);
	} else {
		w->w_backoff *= 2;
		if (w->w_backoff > LEDGER_BACKOFF_MAX_US)
			w->w_backoff = LEDGER_BACKOFF_MAX_US;
		log_debug("ledger: write failed again: %s", why);
	}
	w->w_next_try = now + w->w_backoff;
	return (wake);
}

/*
 * The batch committed: close a failure streak if there was one. Returns
 * whether the loop must be woken.
 */
static int
streak_over(struct ledger *l, struct writer *w, long long now)
{
	char how[128];

	if (!w->w_failing)
		return (0);
	/* The disk takes writes again: a lost file may be rebuilt now. */
	if (w->w_lost != LEDGER_LOST_NONE)
		w->w_lost_next = now;
	snprintf(how, sizeof(how),
	    "writes recovered after %" PRIu64 " failed attempts in %lld ms",
	    w->w_streak, (now - w->w_streak_start) / 1000);
	log_info("ledger: %s", how);
	w->w_failing = 0;
	w->w_streak = 0;
	l->l_stats.ls_failing = 0;
	return (tell_recovered(l, w, how));
}

/* What was found, for the log and the alert. */
static const char *
lost_text(enum ledger_lost why)
{
	switch (why) {
	case LEDGER_LOST_DELETED:
		return ("the database file was deleted while open");
	case LEDGER_LOST_MOVED:
		return ("the database file was moved away from its path");
	case LEDGER_LOST_REPLACED:
		return ("another file is at its path, and tollgate does not "
			"write into a file that is not its own");
	case LEDGER_LOST_WAL:
		return ("its write-ahead log (-wal) was deleted or replaced");
	case LEDGER_LOST_SHM:
		return ("its shared-memory index (-shm) was deleted or "
			"replaced");
	case LEDGER_LOST_UNREACHABLE:
		return ("its path cannot be looked up");
	case LEDGER_LOST_SYNC:
		return ("an fsync failed, so what is on disk is unknown");
	case LEDGER_LOST_RELINKED:
		return ("its configured path, through a symbolic link, now "
			"leads to another file");
	default:
		return ("it is not the file at its path");
	}
}

/*
 * The file is lost (or now lost for another reason): refuse reservations
 * from now on, log it, count it and tell the loop. Lock held; the caller
 * wakes the loop.
 */
static void
enter_lost(
    struct ledger *l, struct writer *w, enum ledger_lost why, long long now)
{
	const char *until;

	if (w->w_lost == why)
		return;
	if (w->w_lost == LEDGER_LOST_NONE) {
		w->w_lost_start = now;
		w->w_lost_backoff = LEDGER_BACKOFF_MIN_US;
		w->w_lost_next = now;
		w->w_lost_tries = 0;
		w->w_lost_cause[0] = '\0';
	}
	w->w_lost = why;
	l->l_lost = why;
	l->l_stats.ls_lost_total[why]++;
	until = why == LEDGER_LOST_REPLACED
	    ? "that file is taken away, and tollgate rebuilds its ledger "
	      "there from the open database"
	    : why == LEDGER_LOST_RELINKED
	    ? "the path leads to this file again (no row is lost meanwhile)"
	    : "the ledger is rebuilt at its path from the open database";
	log_warnx("ledger: %s: %s; refusing calls until %s", l->l_db.db_file,
	    lost_text(why), until);
	ledger_event_push(l, LEDGER_EVENT_LOST, why,
	    "ledger %s: %s; calls are refused (503) until %s", l->l_db.db_file,
	    lost_text(why), until);
	w->w_told = 1;
}

/*
 * The batch committed, but into a file a restart would not open (the
 * loss found by this commit's check, or earlier and not mended yet). Its
 * probes are answered UNAVAILABLE (those calls are not forwarded) and its
 * marks too (their segments stay: what they led to is only in the lost
 * file until it is rebuilt). The rest is done: it is in the open file,
 * and so in the rebuilt one. Lock held; returns whether the loop must be
 * woken.
 */
static int
lost_batch(struct ledger *l, struct ledger_items *batch)
{
	struct ledger_item *it;
	int wake = 0;

	while ((it = TAILQ_FIRST(batch)) != NULL) {
		TAILQ_REMOVE(batch, it, li_entry);
		count_done(l, it);
		if (LEDGER_OP_TICKETED(it->li_op))
			wake |= finish(l, it, LEDGER_UNAVAILABLE);
		else
			wake |= finish(l, it,
			    it->li_changed ? LEDGER_OK : LEDGER_DUPLICATE);
	}
	return (wake);
}

/*
 * Nothing new is admitted while the file is lost: a probe queued before
 * the loss was seen is answered UNAVAILABLE, unwritten. Lock held;
 * returns whether the loop must be woken.
 */
static int
refuse_probes(struct ledger *l, struct ledger_items *batch)
{
	struct ledger_item *it, *next;
	int wake = 0;

	for (it = TAILQ_FIRST(batch); it != NULL; it = next) {
		next = TAILQ_NEXT(it, li_entry);
		if (it->li_op != LEDGER_OP_PROBE)
			continue;
		TAILQ_REMOVE(batch, it, li_entry);
		wake |= finish(l, it, LEDGER_UNAVAILABLE);
	}
	return (wake);
}

/*
 * Is the file still the one at the ledger's path, and did no checkpoint's
 * fsync fail? full adds the -shm and restarts the once-a-second clock.
 * Lock not held: the writer alone uses l_db and replaces l_ckpt.
 */
static enum ledger_lost
file_check(struct ledger *l, struct writer *w, int full, long long now)
{
	if (ledger_ckpt_sync_failed(l->l_ckpt))
		return (LEDGER_LOST_SYNC);
	if (full)
		w->w_next_check = now + LEDGER_CHECK_US;
	return (ledger_db_check(&l->l_db, full));
}

/* Stop the checkpointer, its counters kept. Lock not held. */
static void
ckpt_retire(struct ledger *l)
{
	struct ledger_ckpt *ck;
	struct ledger_stats fold;

	pthread_mutex_lock(&l->l_lock);
	ck = l->l_ckpt;
	l->l_ckpt = NULL;
	pthread_mutex_unlock(&l->l_lock);
	if (ck == NULL)
		return;
	memset(&fold, 0, sizeof(fold));
	ledger_ckpt_stop(ck, &l->l_db, &fold);
	pthread_mutex_lock(&l->l_lock);
	l->l_stats.ls_checkpoints += fold.ls_checkpoints;
	l->l_stats.ls_checkpoint_us_total += fold.ls_checkpoint_us_total;
	if (fold.ls_checkpoint_us_max > l->l_stats.ls_checkpoint_us_max)
		l->l_stats.ls_checkpoint_us_max = fold.ls_checkpoint_us_max;
	pthread_mutex_unlock(&l->l_lock);
}

/* Start a checkpointer on the file l_db has open. Lock not held. */
static void
ckpt_begin(struct ledger *l)
{
	struct ledger_ckpt *ck;

	ck = ledger_ckpt_start(&l->l_db, l->l_db.db_file);
	pthread_mutex_lock(&l->l_lock);
	l->l_ckpt = ck;
	pthread_mutex_unlock(&l->l_lock);
}

enum lost_outcome {
	LOST_STILL, /* still lost; *cause says why, when it was tried */
	LOST_FOUND, /* the file is back at its path as it was */
	LOST_REBUILT, /* a fresh copy is at the path and open */
};

/*
 * One attempt at getting the lost ledger back, off the lock. The file
 * found as it was (moved back, a path that can be looked up again) needs
 * nothing; otherwise the open database is copied to the path and opened
 * there, unless another file is at the path: then a copy is saved beside
 * it, once, and the writer waits for the path to be freed. *why may
 * change (the path taken meanwhile).
 */
static enum lost_outcome
lost_try(
    struct ledger *l, struct writer *w, enum ledger_lost *why, char **cause)
{
	struct ledger_db fresh;
	enum ledger_lost now;
	char *failed = NULL;

	/* It would go on copying into the lost file, and hold it open. */
	ckpt_retire(l);
	if (*why != LEDGER_LOST_SYNC) {
		if ((now = ledger_db_check(&l->l_db, 1)) == LEDGER_LOST_NONE) {
			ckpt_begin(l);
			return (LOST_FOUND);
		}
		*why = now;
	}
	if (*why == LEDGER_LOST_RELINKED)
		return (LOST_STILL); /* whole at its own name: wait */
	if (*why == LEDGER_LOST_REPLACED) {
		if (w->w_saved != NULL)
			return (LOST_STILL);
		ledger_db_drop_names(&l->l_db);
		if (ledger_db_save(&l->l_db, &w->w_saved, &failed) == 0)
			log_warnx(
			    "ledger: %s is not tollgate's ledger; the rows "
			    "tollgate holds are saved in %s",
			    l->l_db.db_file, w->w_saved);
		else {
			xasprintf(cause,
			    "another file is at its path, and the rows "
			    "tollgate holds cannot be saved beside it: %s",
			    failed);
			free(failed);
		}
		return (LOST_STILL);
	}
	if (ledger_db_rebuild(&l->l_db, &fresh, why, cause) != 0)
		return (LOST_STILL);
	ledger_db_retire(&l->l_db);
	ledger_db_adopt(&l->l_db, &fresh);
	ckpt_begin(l);
	return (LOST_REBUILT);
}

/*
 * After an attempt: go on refusing with a longer backoff, or take calls
 * again. Lock held; returns whether the loop must be woken.
 */
static int
lost_tried(struct ledger *l, struct writer *w, enum lost_outcome r,
    enum ledger_lost why, const char *cause, long long now)
{
	char how[256];
	long long ms = (now - w->w_lost_start) / 1000;

	if (r == LOST_STILL) {
		if (why != w->w_lost) {
			enter_lost(l, w, why, now);
			ledger_wake_loop(l);
		}
		w->w_lost_tries++;
		if (why != LEDGER_LOST_REPLACED && why != LEDGER_LOST_RELINKED)
			l->l_stats.ls_rebuild_failures++;
		if (cause != NULL && strcmp(cause, w->w_lost_cause) != 0) {
			log_warnx("ledger: %s: cannot be rebuilt: %s; trying "
				  "again",
			    l->l_db.db_file, cause);
			snprintf(w->w_lost_cause, sizeof(w->w_lost_cause), "%s",
			    cause);
		} else if (cause != NULL)
			log_debug("ledger: cannot be rebuilt: %s", cause);
		w->w_lost_next = now + w->w_lost_backoff;
		if (w->w_lost_took * LEDGER_LOST_WAIT_FACTOR >
		    w->w_lost_backoff)
			w->w_lost_next = now +
			    (w->w_lost_took * LEDGER_LOST_WAIT_FACTOR <
					LEDGER_LOST_WAIT_MAX_US
				    ? w->w_lost_took * LEDGER_LOST_WAIT_FACTOR
				    : LEDGER_LOST_WAIT_MAX_US);
		w->w_lost_backoff *= 2;
		if (w->w_lost_backoff > LEDGER_BACKOFF_MAX_US)
			w->w_lost_backoff = LEDGER_BACKOFF_MAX_US;
		return (0);
	}
	if (r == LOST_REBUILT) {
		l->l_generation++;
		l->l_stats.ls_rebuilds++;
		/* Those failures were the old file's; the next write says. */
		w->w_failing = 0;
		w->w_streak = 0;
		l->l_stats.ls_failing = 0;
		snprintf(how, sizeof(how),
		    "rebuilt at its path from the open database %lld ms after "
		    "it was found %s",
		    ms, ledger_lost_name(w->w_lost));
	} else
		snprintf(how, sizeof(how),
		    "back at its path as it was, after %lld ms", ms);
	log_info("ledger: %s %s; taking calls again", l->l_db.db_file, how);
	if (w->w_saved != NULL) {
		log_info("ledger: %s holds everything %s did; that copy is "
			 "no longer needed",
		    l->l_db.db_file, w->w_saved);
		free(w->w_saved);
		w->w_saved = NULL;
	}
	w->w_lost = LEDGER_LOST_NONE;
	l->l_lost = LEDGER_LOST_NONE;
	w->w_next_check = now + LEDGER_CHECK_US;
	return (tell_recovered(l, w, how));
}

/*
 * The writer is leaving with the file still lost: one last attempt, and
 * failing that a copy beside the path, so what is only in the open file
 * is not lost with it. Lock not held.
 */
static void
lost_at_close(struct ledger *l, struct writer *w)
{
	enum ledger_lost why = w->w_lost;
	enum lost_outcome r;
	char *cause = NULL, *saved = NULL;

	r = lost_try(l, w, &why, &cause);
	free(cause);
	cause = NULL;
	if (r != LOST_STILL) {
		log_info("ledger: %s rebuilt at its path as tollgate stops",
		    l->l_db.db_file);
		w->w_lost = LEDGER_LOST_NONE;
		return;
	}
	if (why == LEDGER_LOST_RELINKED) {
		log_warnx("ledger: %s no longer leads to %s, which holds every "
			  "row; point it there again before the next start",
		    l->l_db.db_path, l->l_db.db_file);
		return;
	}
	if (why == LEDGER_LOST_SYNC) {
		/*
		 * The file at the path is the ledger's, as far as the disk
		 * kept it; its WAL stays (no checkpoint, no delete) for the
		 * next start to read.
		 */
		log_warnx("ledger: %s: an fsync failed and the ledger could "
			  "not be rebuilt before exit; the next start reads it "
			  "as the disk kept it",
		    l->l_db.db_file);
		return;
	}
	if (ledger_db_save(&l->l_db, &saved, &cause) == 0) {
		log_warnx("ledger: %s could not be rebuilt at its path; every "
			  "row tollgate holds is saved in %s: merge it into "
			  "the ledger (docs/operations.md)",
		    l->l_db.db_file, saved);
		if (w->w_saved != NULL)
			(void)unlink(w->w_saved); /* an older, shorter copy */
	} else
		log_warnx("ledger: %s could not be rebuilt at its path, nor "
			  "saved beside it (%s): rows written since it was "
			  "lost are gone when tollgate exits",
		    l->l_db.db_file, cause);
	free(saved);
	free(cause);
}

/*
 * The writer thread: take the retry list plus up to LEDGER_BATCH_MAX new
 * items, write them as one transaction, make sure the file is still the
 * one at its path, answer, repeat; while the file is lost, try to get it
 * back whenever the backoff says. It leaves when ledger_close has set
 * l_stopping and everything is written, or given up after
 * LEDGER_STOP_RETRY_US of failures; then it checkpoints and closes.
 */
void *
ledger_writer(void *arg)
{
	struct ledger *l = arg;
	struct ledger_items batch;
	struct ledger_item *it;
	struct writer w;
	enum ledger_lost why;
	enum lost_outcome r;
	long long now, t0, us, next;
	size_t nfresh, nbatch, nres;
	char *cause;
	int rc, wake, checked;

	memset(&w, 0, sizeof(w));
	TAILQ_INIT(&w.w_retry);
	w.w_next_check = monotime_us() + LEDGER_CHECK_US;
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

		/* The file is lost: an attempt at getting it back is due. */
		if (w.w_lost != LEDGER_LOST_NONE && now >= w.w_lost_next) {
			pthread_mutex_unlock(&l->l_lock);
			why = w.w_lost;
			cause = NULL;
			t0 = monotime_us();
			r = lost_try(l, &w, &why, &cause);
			now = monotime_us();
			w.w_lost_took = now - t0;
			pthread_mutex_lock(&l->l_lock);
			if (lost_tried(l, &w, r, why, cause, now))
				ledger_wake_loop(l);
			free(cause);
			continue;
		}
		/* Idle (or between batches) for a second: check the file. */
		if (w.w_lost == LEDGER_LOST_NONE && now >= w.w_next_check) {
			pthread_mutex_unlock(&l->l_lock);
			why = file_check(l, &w, 1, now);
			pthread_mutex_lock(&l->l_lock);
			l->l_stats.ls_file_checks++;
			if (why != LEDGER_LOST_NONE) {
				enter_lost(l, &w, why, now);
				ledger_wake_loop(l);
				continue;
			}
		}

		/*
		 * Failing: wait out the backoff. Only a probe (a call waits
		 * on its answer) or the ledger closing cuts it short; calls
		 * go on meanwhile, their settlements gathering, and each
		 * retry writes them all at once.
		 */
		if (w.w_failing && now < w.w_next_try && !l->l_stopping &&
		    l->l_probes_queued == 0) {
			next = w.w_next_try;
			if (w.w_lost != LEDGER_LOST_NONE &&
			    w.w_lost_next < next)
				next = w.w_lost_next;
			l->l_lingering = 1;
			wait_until(l, next);
			l->l_lingering = 0;
			continue;
		}
		/* Let rows gather (LEDGER_LINGER_US) unless one must not. */
		if (l->l_queued > 0 && !l->l_stopping && !w.w_failing &&
		    l->l_probes_queued == 0 &&
		    l->l_queued < LEDGER_LINGER_ITEMS &&
		    w.w_last_batch >= LEDGER_LINGER_LOAD &&
		    now < w.w_last_commit + LEDGER_LINGER_US &&
		    (w.w_lost == LEDGER_LOST_NONE || now < w.w_lost_next)) {
			l->l_lingering = 1;
			wait_until(l, w.w_last_commit + LEDGER_LINGER_US);
			l->l_lingering = 0;
			continue;
		}

		TAILQ_INIT(&batch);
		TAILQ_CONCAT(&batch, &w.w_retry, li_entry);
		for (nfresh = 0; nfresh < LEDGER_BATCH_MAX &&
		     (it = TAILQ_FIRST(&l->l_queue)) != NULL;
		     nfresh++) {
			TAILQ_REMOVE(&l->l_queue, it, li_entry);
			l->l_queued--;
			if (it->li_op == LEDGER_OP_PROBE)
				l->l_probes_queued--;
			TAILQ_INSERT_TAIL(&batch, it, li_entry);
		}
		if (w.w_lost != LEDGER_LOST_NONE && refuse_probes(l, &batch)) {
			pthread_cond_broadcast(&l->l_batch);
			ledger_wake_loop(l);
		}
		if (TAILQ_EMPTY(&batch)) {
			if (l->l_stopping)
				break;
			next = w.w_next_check;
			if (w.w_lost != LEDGER_LOST_NONE)
				next = w.w_lost_next;
			wait_until(l, next);
			continue;
		}

		/*
		 * Only retries: wait out the backoff, unless new items come
		 * (a probe deserves an answer now, not in 5 s). Once closing,
		 * give up when the deadline passes.
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
					ledger_wake_loop(l);
				continue;
			}
			if (now < w.w_next_try) {
				TAILQ_CONCAT(&w.w_retry, &batch, li_entry);
				next = l->l_stopping &&
					w.w_stop_deadline < w.w_next_try
				    ? w.w_stop_deadline
				    : w.w_next_try;
				if (w.w_lost != LEDGER_LOST_NONE &&
				    w.w_lost_next < next)
					next = w.w_lost_next;
				wait_until(l, next);
				continue;
			}
		}
		nbatch = nres = 0;
		TAILQ_FOREACH(it, &batch, li_entry)
		{
			nbatch++;
			if (LEDGER_OP_TICKETED(it->li_op))
				nres++;
		}
		pthread_mutex_unlock(&l->l_lock);

		t0 = monotime_us();
		w.w_last_commit = t0;
		w.w_last_batch = nbatch;
		rc = ledger_db_apply(&l->l_db, &batch);
		now = monotime_us();
		us = now - t0;

		/*
		 * Before a probe or a mark is answered, the file must be the
		 * one a restart would open; after a failure, the failure may
		 * be that the file went. A failed fsync leaves the file's
		 * state on disk unknown: it is lost all the same.
		 */
		why = LEDGER_LOST_NONE;
		checked = 0;
		if (w.w_lost == LEDGER_LOST_NONE) {
			if (rc == 0 && (nres > 0 || now >= w.w_next_check)) {
				why = file_check(
				    l, &w, now >= w.w_next_check, now);
				checked = 1;
			} else if (rc != 0 &&
			    ledger_db_sync_error(l->l_db.db_err))
				why = LEDGER_LOST_SYNC;
			else if (rc != 0 &&
			    !ledger_db_blames_row(l->l_db.db_err)) {
				why = file_check(l, &w, 1, now);
				checked = 1;
			}
		}

		pthread_mutex_lock(&l->l_lock);
		l->l_stats.ls_file_checks += (uint64_t)checked;
		if (rc == 0) {
			/* Lost first: no "recovered" just before the loss. */
			if (why != LEDGER_LOST_NONE)
				enter_lost(l, &w, why, now);
			wake = streak_over(l, &w, now);
			l->l_stats.ls_commits++;
			l->l_stats.ls_commit_us_total += (uint64_t)us;
			if ((uint64_t)us > l->l_stats.ls_commit_us_max)
				l->l_stats.ls_commit_us_max = (uint64_t)us;
			if (nbatch > l->l_stats.ls_batch_max)
				l->l_stats.ls_batch_max = nbatch;
			/*
			 * Into a file a restart would not open (found so now,
			 * or earlier and not rebuilt yet): no mark may free a
			 * journal segment on the strength of this commit.
			 */
			if (w.w_lost != LEDGER_LOST_NONE) {
				(void)lost_batch(l, &batch);
				wake = 1;
			} else
				wake |= batch_done(l, &batch);
		} else {
			/* Lost first: one incident, told once, as a loss. */
			if (why != LEDGER_LOST_NONE)
				enter_lost(l, &w, why, now);
			wake = batch_failed(l, &w, &batch, now);
			if (why != LEDGER_LOST_NONE)
				wake = 1;
		}
		pthread_cond_broadcast(&l->l_batch);
		if (wake) {
			/*
			 * Woken while l_lock is held, the loop would block on
			 * it in turn_dispatch at once: wake it unlocked.
			 */
			pthread_mutex_unlock(&l->l_lock);
			ledger_wake_loop(l);
			pthread_mutex_lock(&l->l_lock);
		}
	}
	pthread_mutex_unlock(&l->l_lock);

	if (w.w_lost != LEDGER_LOST_NONE)
		lost_at_close(l, &w);
	ckpt_retire(l);
	if (w.w_lost != LEDGER_LOST_NONE)
		ledger_db_retire(&l->l_db);
	else
		ledger_db_close(&l->l_db);
	free(w.w_saved);
	return (NULL);
}
