/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's turn, on the loop: what the loop does with the records
 * the ledger's API puts in the turn's buffer and with what the writer
 * hands back. One write(2) per loop turn (turn_flush_cb) answers every
 * reservation admitted in it, or, under durability: power, the sync that
 * covers it does (sync_dispatch); a segment past its size is followed by
 * a new one that repeats the calls in flight, and a mark in the writer's
 * queue deletes the old one once SQLite holds all it led to (mark_done);
 * once a second the open segment is checked to be still there
 * (turn_watch_cb); a journal that cannot be written makes the ledger
 * failing (journal_health). turn_dispatch runs what the writer answered
 * (probes, marks, health events); turn_finish deletes the segments at
 * close when nothing is left in them. See docs/internals/ledger.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

/* A segment past this size is followed by a new one at the next write. */
#define JOURNAL_SEGMENT_MAX (8 * 1024 * 1024)

/*
 * The turn has records to write: the write runs once the callbacks
 * already due in this loop turn have run, so every call they admit
 * shares it.
 */
void
turn_arm(struct ledger *l)
{
	if (l->l_flush_armed || l->l_flush == NULL)
		return;
	l->l_flush_armed = 1;
	event_active(l->l_flush, EV_TIMEOUT, 1);
}

/*
 * A call leaves the table without a row: refused, a duplicate, or its
 * session gone before it was forwarded. If its reservation reached the
 * journal, a withdrawal follows it there, so a restart does not charge a
 * call that never went upstream.
 */
static void
withdraw(struct ledger *l, struct ledger_item *it)
{
	if (it == NULL)
		return;
	if (it->li_journaled) {
		if (journal_append(&l->l_journal.j_buf, JOURNAL_WITHDRAW,
			&it->li_row) == 0)
			turn_arm(l);
	}
	inflight_remove(&l->l_inflight, it);
	free(it);
}

/*
 * Run a reservation's callback with its answer and free the ticket. A
 * call that is not going ahead leaves the table; one whose session went
 * away meanwhile is withdrawn, never forwarded.
 */
void
turn_answer(struct ledger *l, struct ledger_ticket *t)
{
	if (t->lt_result != LEDGER_OK || t->lt_cancelled) {
		withdraw(l, t->lt_item);
		t->lt_item = NULL;
	}
	if (!t->lt_cancelled)
		t->lt_cb(t->lt_arg, t->lt_result);
	free(t);
}

/* Put a reservation's record in the turn's buffer; its answer follows
 * the write. */
void
turn_reserve(struct ledger *l, struct ledger_ticket *t)
{
	if (journal_append(
		&l->l_journal.j_buf, JOURNAL_RESERVE, &t->lt_item->li_row) != 0)
		t->lt_result = LEDGER_UNAVAILABLE;
	else
		t->lt_result = LEDGER_OK;
	TAILQ_INSERT_TAIL(&l->l_pending, t, lt_entry);
	turn_arm(l);
}

/* Ask the writer to say when everything queued so far is committed. */
static void
mark_segment(struct ledger *l, uint64_t seg)
{
	struct ledger_ticket *t;
	struct ledger_item *it;

	t = xcalloc(1, sizeof(*t));
	t->lt_mark = seg;
	it = xcalloc(1, sizeof(*it));
	it->li_op = LEDGER_OP_MARK;
	it->li_seq = (int64_t)seg;
	it->li_ticket = t;
	if (ledger_enqueue(l, it) != 0) {
		free(it);
		free(t);
	}
}

/*
 * Start the next journal segment and write at its head the reservation
 * of every call in flight, so the segments before it hold nothing a
 * restart needs once the writer has committed what they led to (a mark
 * says when). A segment that was deleted or replaced under us is not
 * marked: there is nothing of ours to delete. 0, or -1 (logged).
 */
static int
journal_rotate(struct ledger *l, int gone)
{
	struct ledger_journal *j = &l->l_journal;
	struct ledger_item *it;
	struct buf head;
	uint64_t old = j->j_seg, next = old + 1;
	int had = j->j_fd != -1;
	char *cause = NULL;
	int rc = 0;

	/* A name already taken (a file put there) is passed over. */
	while (journal_start(j, next, &cause) != 0 && errno == EEXIST &&
	    next < old + 100) {
		free(cause);
		cause = NULL;
		next++;
	}
	if (j->j_seg != next) {
		log_warnx("ledger: journal: cannot start a segment: %s", cause);
		free(cause);
		l->l_journal_failures++;
		return (-1);
	}
	l->l_journal_rotations++;
	buf_init(
	    &head, JOURNAL_RECORD_MAX * 2 + 64 * 1024 * 1024, 64 * 1024, 0);
	TAILQ_FOREACH(it, &l->l_inflight.if_all, li_open)
	{
		if (it->li_journaled &&
		    journal_append(&head, JOURNAL_RESERVE, &it->li_row) != 0) {
			log_warnx("ledger: journal segment %llu: the %zu calls "
				  "in flight do not fit in its head",
			    (unsigned long long)j->j_seg, l->l_inflight.if_n);
			rc = -1;
			break;
		}
	}
	if (rc == 0 &&
	    journal_write_bytes(j, buf_ptr(&head), buf_len(&head)) != 0) {
		log_warn("ledger: journal segment %llu: writing the calls in "
			 "flight",
		    (unsigned long long)j->j_seg);
		rc = -1;
	}
	buf_free(&head);
	if (rc != 0) {
		/* The old segment stays, with every reservation in it. */
		j->j_broken = 1;
		l->l_journal_failures++;
		return (-1);
	}
	/* The head first: a sync of the new segment covers it. */
	if (l->l_syncer != NULL)
		syncer_segment(l->l_syncer, j->j_seg, j->j_fd);
	if (had && !gone)
		mark_segment(l, old);
	return (0);
}

/* The size past which the open segment is followed by a new one. */
static int64_t
segment_max(const struct ledger *l)
{
#ifdef TG_UNITTEST
	if (l->l_test_segment_max > 0)
		return (l->l_test_segment_max);
#else
	(void)l;
#endif
	return (JOURNAL_SEGMENT_MAX);
}

/*
 * The journal's health, told as the writer tells SQLite's: its first
 * failure (at most one a minute) and its recovery reach ledger_event_cb,
 * and while it fails the ledger counts as failing (/healthz, /metrics).
 */
static void
journal_health(struct ledger *l, int failed, int err)
{
	struct ledger_event ev;
	char msg[LEDGER_EVENT_MSG_MAX];
	long long now = monotime_us();

	if (failed == l->l_journal_failing)
		return;
	l->l_journal_failing = failed;
	memset(&ev, 0, sizeof(ev));
	if (failed) {
		/* A disk on the edge fails and works by turns. */
		if (l->l_journal_told_at != 0 &&
		    now - l->l_journal_told_at < 60 * 1000000LL)
			return;
		l->l_journal_told = 1;
		l->l_journal_told_at = now;
		snprintf(msg, sizeof(msg),
		    "ledger %s: the journal cannot be written: %s; calls are "
		    "refused (503) until it can",
		    l->l_path, strerror(err));
		ev.le_kind = LEDGER_EVENT_FAILING;
	} else {
		if (!l->l_journal_told)
			return;
		snprintf(msg, sizeof(msg),
		    "ledger %s: the journal is written again; calls are taken "
		    "again",
		    l->l_path);
		ev.le_kind = LEDGER_EVENT_RECOVERED;
		l->l_journal_told = 0;
	}
	ev.le_message = msg;
	log_info("ledger: %s", msg);
	if (l->l_event_cb != NULL)
		l->l_event_cb(&ev, l->l_event_arg);
}

/*
 * The turn's write: one write(2) of every record appended since the last
 * one, then each reservation waiting on it is answered, or under
 * durability: power waits for the sync that covers it.
 */
void
turn_flush_cb(evutil_socket_t fd, short events, void *arg)
{
	struct ledger *l = arg;
	struct ledger_journal *j = &l->l_journal;
	struct ledger_tickets done;
	struct ledger_ticket *t;
	struct ledger_item *it;
	int failed = 0, saved = 0, wrote = 0;

	(void)fd;
	(void)events;
	l->l_flush_armed = 0;
	if (j->j_fd == -1 || j->j_broken || j->j_size >= segment_max(l)) {
		/* One that is broken, not gone, is kept (mark_done). */
		if (j->j_broken && !l->l_journal_gone && j->j_fd != -1)
			l->l_journal_keep = 1;
		failed = journal_rotate(l, j->j_broken) != 0;
		if (failed)
			saved = errno;
		else
			l->l_journal_gone = 0;
	}
	if (!failed && buf_len(&j->j_buf) > 0) {
		if (journal_flush(j) != 0) {
			saved = errno;
			failed = 1;
			l->l_journal_failures++;
			errno = saved;
			log_warn("ledger: journal segment %llu: write",
			    (unsigned long long)j->j_seg);
		} else {
			l->l_journal_writes++;
			wrote = 1;
		}
	}
	if (failed)
		journal_health(l, 1, saved != 0 ? saved : EIO);
	else if (wrote)
		journal_health(l, 0, 0);
	/* Not written: the outcomes wait for the next write. */
	if (failed)
		journal_keep_outcomes(j);

	TAILQ_INIT(&done);
	TAILQ_CONCAT(&done, &l->l_pending, lt_entry);
	while ((t = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, t, lt_entry);
		it = t->lt_item;
		if (t->lt_result == LEDGER_OK && failed)
			t->lt_result = LEDGER_UNAVAILABLE;
		/* Cut off, or maybe half there: withdrawn in the next. */
		if (it != NULL && (t->lt_result == LEDGER_OK || j->j_broken))
			it->li_journaled = 1;
		if (t->lt_result == LEDGER_OK && l->l_syncer != NULL) {
			t->lt_seg = j->j_seg;
			t->lt_off = j->j_size;
			TAILQ_INSERT_TAIL(&l->l_syncwait, t, lt_entry);
			continue;
		}
		turn_answer(l, t);
	}
	if (l->l_syncer != NULL && !TAILQ_EMPTY(&l->l_syncwait))
		syncer_want(l->l_syncer, j->j_seg, j->j_size);
}

/*
 * Once a second: the settlements written since are freed, and a segment
 * deleted or replaced under us is left.
 */
void
turn_watch_cb(evutil_socket_t fd, short events, void *arg)
{
	struct ledger *l = arg;
	struct ledger_journal *j = &l->l_journal;

	(void)fd;
	(void)events;
	/* Rows written since the last settlement, when calls have stopped. */
	unwritten_trim(l, 0);
	if (j->j_fd == -1 || j->j_broken || !journal_gone(j))
		return;
	log_warnx("ledger: journal segment %llu was deleted or replaced; "
		  "starting another with the calls in flight",
	    (unsigned long long)j->j_seg);
	j->j_broken = 1;
	l->l_journal_gone = 1;
	turn_arm(l);
}

/*
 * Power: answer the reservations whose records the syncer has put on
 * disk, and delete the segments whose successors are there. A failed
 * sync refuses everything waiting and starts a new segment.
 */
static void
sync_dispatch(struct ledger *l)
{
	struct ledger_ticket *t;
	struct journal_del *d;
	size_t i = 0, k = 0;

	/* First: a bad segment's calls must not be answered OK. */
	if (syncer_failed_take(l->l_syncer)) {
		log_warnx("ledger: journal: a sync failed; the calls waiting "
			  "on it are refused, and a new segment starts");
		l->l_journal_failures++;
		journal_health(l, 1, EIO);
		while ((t = TAILQ_FIRST(&l->l_syncwait)) != NULL) {
			TAILQ_REMOVE(&l->l_syncwait, t, lt_entry);
			t->lt_result = LEDGER_UNAVAILABLE;
			turn_answer(l, t);
		}
		l->l_journal.j_broken = 1;
		turn_arm(l);
	}
	while ((t = TAILQ_FIRST(&l->l_syncwait)) != NULL) {
		if (!syncer_covers(l->l_syncer, t->lt_seg, t->lt_off))
			break;
		TAILQ_REMOVE(&l->l_syncwait, t, lt_entry);
		turn_answer(l, t);
	}
	for (i = 0; i < l->l_ndels; i++) {
		d = &l->l_dels[i];
		if (l->l_journal_keep)
			continue; /* dropped: kept to the next start or close */
		if (syncer_covers(
			l->l_syncer, d->jd_after_seg, d->jd_after_off))
			journal_unlink(l->l_path, d->jd_seg);
		else
			l->l_dels[k++] = *d;
	}
	l->l_ndels = k;
}

/*
 * The writer has committed everything queued before segment seg's mark:
 * the segment is needed no more, unless something was given up since, or
 * an earlier segment was kept (they all stay, for the close or the next
 * start to settle). Under power it goes once the segment after it, which
 * repeats its calls in flight, is on disk.
 */
static void
mark_done(struct ledger *l, uint64_t seg, enum ledger_result r)
{
	struct ledger_journal *j = &l->l_journal;
	struct journal_del *d;

	if (r != LEDGER_OK) {
		log_warnx("ledger: journal segment %llu is kept, and every "
			  "segment after it, until tollgate stops: not "
			  "everything it leads to was written",
		    (unsigned long long)seg);
		l->l_journal_keep = 1;
		return;
	}
	/*
	 * Segments go in order: a later one may hold what cancels a call
	 * in one that is kept (its withdrawal, its settlement).
	 */
	if (l->l_journal_keep)
		return;
	if (l->l_syncer == NULL) {
		journal_unlink(l->l_path, seg);
		return;
	}
	l->l_dels = xreallocarray(l->l_dels, l->l_ndels + 1, sizeof(*d));
	d = &l->l_dels[l->l_ndels++];
	d->jd_seg = seg;
	d->jd_after_seg = j->j_seg;
	d->jd_after_off = j->j_size;
	syncer_want(l->l_syncer, j->j_seg, j->j_size);
}

/*
 * Run the answers the writer has put on the done list (probes of client
 * request ids, marks), the answers the syncer has made possible, and the
 * event callback for each change in the ledger's health; on the loop
 * thread.
 */
void
turn_dispatch(struct ledger *l)
{
	struct ledger_tickets done;
	struct ledger_ticket *t;
	struct ledger_evs evs;
	struct ledger_ev *ev;

	TAILQ_INIT(&done);
	TAILQ_INIT(&evs);
	pthread_mutex_lock(&l->l_lock);
	TAILQ_CONCAT(&done, &l->l_done, lt_entry);
	TAILQ_CONCAT(&evs, &l->l_events, ev_entry);
	l->l_nevents = 0;
	pthread_mutex_unlock(&l->l_lock);

	while ((ev = TAILQ_FIRST(&evs)) != NULL) {
		TAILQ_REMOVE(&evs, ev, ev_entry);
		if (l->l_event_cb != NULL)
			l->l_event_cb(&ev->ev_event, l->l_event_arg);
		free(ev);
	}

	while ((t = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, t, lt_entry);
		if (t->lt_barrier) {
			if (!t->lt_cancelled)
				t->lt_cb(t->lt_arg, t->lt_result);
			free(t);
			continue;
		}
		if (t->lt_item == NULL) {
			mark_done(l, t->lt_mark, t->lt_result);
			free(t);
			continue;
		}
		l->l_probing--;
		/* The id is free: now the reservation goes to the journal. */
		if (t->lt_result == LEDGER_OK && !t->lt_cancelled &&
		    !l->l_closing)
			turn_reserve(l, t);
		else {
			if (t->lt_result == LEDGER_OK)
				t->lt_result = LEDGER_UNAVAILABLE;
			turn_answer(l, t);
		}
	}
	if (l->l_syncer != NULL)
		sync_dispatch(l);
}

void
turn_done_cb(evutil_socket_t fd, short events, void *arg)
{
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) == -1 && errno != EAGAIN)
		log_warn("ledger: eventfd read");
	turn_dispatch(arg);
}

/*
 * After the writer has left: the journal's segments are deleted when
 * everything they lead to is in the ledger (no call in flight, nothing
 * given up); otherwise they stay, and the next start reads them.
 */
void
turn_finish(struct ledger *l)
{
	uint64_t *segs = NULL;
	size_t i, n;
	char *cause = NULL, *name;

	if (l->l_inflight.if_n > 0 || l->l_stats.ls_dropped > 0 ||
	    l->l_lost != LEDGER_LOST_NONE) {
		log_warnx("ledger: journal kept (%zu calls in flight, %llu "
			  "writes given up): the next start writes what it "
			  "holds",
		    l->l_inflight.if_n,
		    (unsigned long long)l->l_stats.ls_dropped);
		return;
	}
	if (journal_segments(l->l_path, &segs, &n, &cause) != 0) {
		log_warnx("ledger: journal: %s", cause);
		free(cause);
		return;
	}
	for (i = 0; i < n; i++) {
		if (segs[i] > l->l_journal.j_seg)
			continue;
		/* A file another put at a segment's name stays. */
		name = journal_name(l->l_path, segs[i]);
		if (journal_is_ours(name))
			journal_unlink(l->l_path, segs[i]);
		free(name);
	}
	free(segs);
}
