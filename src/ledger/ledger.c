/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's public API and its queue, on the event loop's side. The
 * loop (one thread) copies each row into an item and never waits on
 * SQLite: a reservation goes to the journal with the turn's write
 * (turn.c), an outcome to the journal and to the writer thread's queue
 * (writer.c), which writes it and hands answers back through an eventfd
 * that a libevent event on the loop's base watches. ledger_open opens the
 * database (store.c), replays what a crash left (replay.c) and starts the
 * writer; ledger_close answers what is waiting, lets the writer finish and
 * frees everything. While the writer finds the ledger's file lost
 * (rebuild.c), reservations are answered LEDGER_UNAVAILABLE at once; the
 * writer's news of the ledger's health reaches ledger_event_cb through the
 * same eventfd. See docs/internals/ledger.md.
 */
#include <sys/eventfd.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
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

#define LEDGER_QUEUE_DEFAULT 4096 /* queue_max 0 */

static struct ledger *ledger;

static const char *const status_names[] = {
    [CALL_IN_FLIGHT] = "in_flight",
    [CALL_OK] = "ok",
    [CALL_ERROR] = "error",
    [CALL_REFUSED] = "refused",
    [CALL_CLIENT_CLOSED] = "client_closed",
    [CALL_UPSTREAM_ERROR] = "upstream_error",
    [CALL_INTERRUPTED] = "interrupted",
    [CALL_KILLED] = "killed",
};

static const char *const source_names[] = {
    [USAGE_NONE] = "none",
    [USAGE_REPORTED] = "reported",
    [USAGE_ESTIMATED] = "estimated",
};

static const char *const lost_names[] = {
    [LEDGER_LOST_NONE] = "none",
    [LEDGER_LOST_DELETED] = "deleted",
    [LEDGER_LOST_MOVED] = "moved",
    [LEDGER_LOST_REPLACED] = "replaced",
    [LEDGER_LOST_WAL] = "wal_gone",
    [LEDGER_LOST_SHM] = "shm_gone",
    [LEDGER_LOST_UNREACHABLE] = "unreachable",
    [LEDGER_LOST_SYNC] = "sync_failed",
    [LEDGER_LOST_RELINKED] = "relinked",
};

/* Why a ledger is lost, as /metrics and /healthz name it: "deleted", ... */
const char *
ledger_lost_name(enum ledger_lost why)
{
	if ((unsigned)why >= nitems(lost_names))
		return ("unknown");
	return (lost_names[why]);
}

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
const char *
ledger_safe_id(const struct ledger_row *r, char *buf, size_t len)
{
	if (r == NULL || r->lr_id == NULL)
		return ("(none)");
	log_escape(buf, len, r->lr_id, strlen(r->lr_id));
	return (buf);
}

/* "call <id>", "alert <id>" or "kill <id>", for a log line about an item. */
const char *
ledger_item_what(const struct ledger_item *it, char *buf, size_t len)
{
	char id[64];

	if (it->li_op == LEDGER_OP_KILL_ADD ||
	    it->li_op == LEDGER_OP_KILL_DELETE) {
		log_escape(id, sizeof(id), it->li_kill.lk_id,
		    strlen(it->li_kill.lk_id));
		snprintf(buf, len, "kill %s", id);
	} else if (it->li_op == LEDGER_OP_EXT_ADD ||
	    it->li_op == LEDGER_OP_EXT_REVOKE) {
		log_escape(
		    id, sizeof(id), it->li_ext.le_id, strlen(it->li_ext.le_id));
		snprintf(buf, len, "extension %s", id);
	} else if (it->li_op == LEDGER_OP_SHIP_DONE)
		snprintf(buf, len, "ship cursor of %s", it->li_stream);
	else if (it->li_op == LEDGER_OP_ALERT ||
	    it->li_op == LEDGER_OP_ALERT_DELIVERY)
		snprintf(buf, len, "alert %s",
		    ledger_safe_id(&it->li_row, id, sizeof(id)));
	else
		snprintf(buf, len, "call %s",
		    ledger_safe_id(&it->li_row, id, sizeof(id)));
	return (buf);
}

/* The string fields of a row, as pointers to them; how many. */
size_t
ledger_row_fields(struct ledger_row *r, const char **f[])
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
	f[n++] = &r->lr_served_model;
	/* Last: a version-1 journal record ends before them (journal.c). */
	f[n++] = &r->lr_routed_from;
	f[n++] = &r->lr_routed_rule;
	/* Last: a version-2 journal record ends before it. */
	f[n++] = &r->lr_attempt_log;
	return (n);
}

/*
 * Every TEXT value the ledger holds is valid UTF-8: the fleet ledger
 * (PostgreSQL, a UTF8 database) refuses a row with anything else, for
 * ever, and JSON answers would carry it. Values are checked or repaired
 * where they enter, so this is the last resort: each of the n strings
 * that is not UTF-8 is pointed at a copy with U+FFFD for its stray bytes,
 * kept in fixed[] for the caller to free, and logged. The row is still
 * recorded, as its cost must be. Returns how many were replaced.
 */
static size_t
text_repair(
    const char **f[], size_t n, char **fixed, const char *what, const char *id)
{
	size_t i, nfixed = 0;

	for (i = 0; i < n; i++) {
		if (*f[i] == NULL || utf8_valid(*f[i], strlen(*f[i])))
			continue;
		*f[i] = fixed[nfixed++] = utf8_dup(*f[i]);
		log_warnx("ledger: %s %s: a text value that is not UTF-8 was "
			  "recorded with U+FFFD",
		    what, id);
	}
	return (nfixed);
}

/*
 * A deep copy of row as an item of kind op, or NULL (logged) if the row
 * is not one the ledger can write: no id, a status or usage source out of
 * range, an in_flight status where the call must be over, too many bytes.
 */
struct ledger_item *
ledger_item_new(enum ledger_op op, const struct ledger_row *row)
{
	struct ledger_item *it;
	struct ledger_row copy;
	const char **f[LEDGER_ROW_FIELDS_MAX];
	char idbuf[64], *p, *fixed[LEDGER_ROW_FIELDS_MAX];
	size_t i, n, len, total = 0, nfixed;

	if (row == NULL || row->lr_id == NULL || row->lr_id[0] == '\0') {
		log_warnx("ledger: row without an id refused");
		return (NULL);
	}
	if ((unsigned)row->lr_status >= nitems(status_names) ||
	    (unsigned)row->lr_usage_source >= nitems(source_names)) {
		log_warnx("ledger: call %s: bad status %d or usage source %d",
		    ledger_safe_id(row, idbuf, sizeof(idbuf)),
		    (int)row->lr_status, (int)row->lr_usage_source);
		return (NULL);
	}
	if (op != LEDGER_OP_RESERVE && row->lr_status == CALL_IN_FLIGHT) {
		log_warnx(
		    "ledger: call %s: a finished call cannot be in flight",
		    ledger_safe_id(row, idbuf, sizeof(idbuf)));
		return (NULL);
	}
	copy = *row;
	n = ledger_row_fields(&copy, f);
	nfixed = text_repair(
	    f, n, fixed, "call", ledger_safe_id(row, idbuf, sizeof(idbuf)));
	for (i = 0; i < n; i++)
		if (*f[i] != NULL)
			total += strlen(*f[i]) + 1;
	if (total > LEDGER_ROW_STRINGS_MAX) {
		log_warnx("ledger: call %s: row of %zu bytes refused",
		    ledger_safe_id(row, idbuf, sizeof(idbuf)), total);
		it = NULL;
		goto done;
	}

	it = xmalloc(sizeof(*it) + total);
	memset(it, 0, sizeof(*it));
	it->li_op = op;
	it->li_row = copy;
	n = ledger_row_fields(&it->li_row, f);
	p = it->li_strings;
	for (i = 0; i < n; i++) {
		if (*f[i] == NULL)
			continue;
		len = strlen(*f[i]) + 1;
		memcpy(p, *f[i], len);
		*f[i] = p;
		p += len;
	}
done:
	while (nfixed > 0)
		free(fixed[--nfixed]);
	return (it);
}

/* Wake the loop: the done list or the events grew. Any thread. */
void
ledger_wake_loop(struct ledger *l)
{
	uint64_t one = 1;

	if (write(l->l_efd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_warn("ledger: eventfd write");
}

/*
 * Tell the loop's ledger_event_cb of a change in the ledger's health; the
 * caller holds l_lock and wakes the loop. Beyond LEDGER_EVENTS_MAX waiting
 * the event is dropped (it was logged where it happened).
 */
void
ledger_event_push(struct ledger *l, enum ledger_event_kind kind,
    enum ledger_lost why, const char *fmt, ...)
{
	struct ledger_ev *ev;
	va_list ap;

	if (l->l_nevents >= LEDGER_EVENTS_MAX)
		return;
	ev = xcalloc(1, sizeof(*ev));
	ev->ev_event.le_kind = kind;
	ev->ev_event.le_lost = why;
	va_start(ap, fmt);
	(void)vsnprintf(ev->ev_text, sizeof(ev->ev_text), fmt, ap);
	va_end(ap);
	ev->ev_event.le_message = ev->ev_text;
	TAILQ_INSERT_TAIL(&l->l_events, ev, ev_entry);
	l->l_nevents++;
}

/*
 * Queue an item for the writer. Records, alerts and probes are refused
 * when queue_max items wait (the writer is behind: the caller fails
 * closed); settlements, marks, kills and cursors are always taken. 0, or
 * -1.
 */
int
ledger_enqueue(struct ledger *l, struct ledger_item *it)
{
	char idbuf[80];
	int admitted = it->li_op == LEDGER_OP_RECORD ||
	    it->li_op == LEDGER_OP_ALERT || it->li_op == LEDGER_OP_PROBE;
	int wake;

	pthread_mutex_lock(&l->l_lock);
	if (l->l_stopping) {
		pthread_mutex_unlock(&l->l_lock);
		log_warnx("ledger: %s: ledger closed, write dropped",
		    ledger_item_what(it, idbuf, sizeof(idbuf)));
		return (-1);
	}
	if (admitted && l->l_depth >= l->l_queue_max) {
		l->l_stats.ls_refused_full++;
		pthread_mutex_unlock(&l->l_lock);
		return (-1);
	}
	l->l_depth++;
	l->l_queued++;
	if (it->li_op == LEDGER_OP_PROBE)
		l->l_probes_queued++;
	TAILQ_INSERT_TAIL(&l->l_queue, it, li_entry);
	/* A writer letting rows gather wakes by itself, unless hurried. */
	wake = !l->l_lingering || it->li_op == LEDGER_OP_PROBE ||
	    it->li_op == LEDGER_OP_BARRIER ||
	    l->l_queued >= LEDGER_LINGER_ITEMS;
	pthread_mutex_unlock(&l->l_lock);
	/*
	 * Signalled after the unlock: a writer woken while we still held
	 * l_lock would only block on it again, two context switches for
	 * nothing on a busy core. It checks the queue under the lock before
	 * it waits, so the signal cannot be lost.
	 */
	if (wake)
		pthread_cond_signal(&l->l_wake);
	return (0);
}

/* Free a ledger that ledger_open did not finish, or ledger_close ended. */
static void
ledger_free(struct ledger *l)
{
	struct ledger_ev *ev;

	syncer_stop(l->l_syncer);
	if (l->l_flush != NULL)
		event_free(l->l_flush);
	if (l->l_watch != NULL)
		event_free(l->l_watch);
	if (l->l_event != NULL)
		event_free(l->l_event);
	if (l->l_efd != -1)
		close(l->l_efd);
	ledger_ckpt_stop(l->l_ckpt, &l->l_db, NULL); /* the writer never ran */
	ledger_db_close(&l->l_db);
	while ((ev = TAILQ_FIRST(&l->l_events)) != NULL) {
		TAILQ_REMOVE(&l->l_events, ev, ev_entry);
		free(ev);
	}
	journal_free(&l->l_journal);
	inflight_free(&l->l_inflight);
	unwritten_trim(l, 1);
	free(l->l_dels);
	pthread_cond_destroy(&l->l_batch);
	pthread_cond_destroy(&l->l_wake);
	pthread_mutex_destroy(&l->l_lock);
	free(l->l_path);
	free(l);
}

/*
 * Open the ledger at path (its directory is made if missing), recover the
 * rows a crash left in flight and replay the journal it left, start a new
 * journal segment, and start the writer thread (and the syncer, under
 * durability: power). Answers reach callbacks through events on base.
 * queue_max bounds the items waiting to be written (0: a default of
 * 4096). 0, or -1 with *cause set.
 */
int
ledger_open(struct event_base *base, const char *path, enum durability dur,
    size_t queue_max, char **cause)
{
	struct ledger *l;
	pthread_condattr_t ca;
	struct timeval tv = {JOURNAL_WATCH_SEC, 0};
	uint64_t interrupted, next, settled, replayed;
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
	l->l_db.db_placed_fd = -1;
	l->l_base = base;
	l->l_path = xstrdup(path);
	l->l_durability = dur;
	l->l_queue_max = queue_max != 0 ? queue_max : LEDGER_QUEUE_DEFAULT;
	TAILQ_INIT(&l->l_queue);
	TAILQ_INIT(&l->l_done);
	TAILQ_INIT(&l->l_events);
	TAILQ_INIT(&l->l_pending);
	TAILQ_INIT(&l->l_syncwait);
	journal_init(&l->l_journal, path);
	inflight_init(&l->l_inflight);
	TAILQ_INIT(&l->l_unwritten);
	pthread_mutex_init(&l->l_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->l_wake, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&l->l_batch, NULL);

	if (ledger_db_open(&l->l_db, path, dur, &interrupted, cause) != 0)
		goto fail;
	/* Under the database's flock: one tollgate reads these segments. */
	if (ledger_replay(&l->l_db, path, &next, &settled, &replayed, cause) !=
	    0)
		goto fail;
	l->l_stats.ls_interrupted = interrupted + replayed;
	l->l_stats.ls_replayed = settled + replayed;
	if (journal_start(&l->l_journal, next, cause) != 0)
		goto fail;
	l->l_ckpt = ledger_ckpt_start(&l->l_db, l->l_db.db_file);
	if ((l->l_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		xasprintf(cause, "ledger: eventfd: %s", strerror(errno));
		goto fail;
	}
	l->l_event =
	    event_new(base, l->l_efd, EV_READ | EV_PERSIST, turn_done_cb, l);
	if (l->l_event == NULL || event_add(l->l_event, NULL) == -1) {
		*cause = xstrdup("ledger: cannot add the answer event");
		goto fail;
	}
	l->l_flush = event_new(base, -1, 0, turn_flush_cb, l);
	l->l_watch = event_new(base, -1, EV_PERSIST, turn_watch_cb, l);
	if (l->l_flush == NULL || l->l_watch == NULL ||
	    event_add(l->l_watch, &tv) == -1) {
		*cause = xstrdup("ledger: cannot add the journal's events");
		goto fail;
	}
	if (dur == DURABILITY_POWER) {
		if ((l->l_syncer = syncer_start(path, l->l_efd, cause)) == NULL)
			goto fail;
		syncer_segment(
		    l->l_syncer, l->l_journal.j_seg, l->l_journal.j_fd);
	}

	error = thread_start(&l->l_thread, "tg-ledger", ledger_writer, l);
	if (error != 0) {
		xasprintf(cause, "ledger: pthread_create: %s", strerror(error));
		goto fail;
	}
	log_info("ledger: %s open (wal, synchronous=%s, journal segment "
		 "%llu)",
	    path, l->l_db.db_synchronous == 2 ? "full" : "normal",
	    (unsigned long long)l->l_journal.j_seg);
	ledger = l;
	return (0);
fail:
	ledger_free(l);
	return (-1);
}

/*
 * Reserve a call about to be forwarded: its row goes to the journal with
 * the loop turn's single write, and the callback runs once that write
 * has returned (under durability: power, once the sync covering it has),
 * with LEDGER_OK: forward it. LEDGER_DUPLICATE: its id is in use (a call
 * in flight, or, for an id the client chose (LEDGER_ID_CLIENT), a row in
 * the ledger, which the writer is asked first). LEDGER_UNAVAILABLE: the
 * journal cannot be written or the ledger's file is lost. The ticket is
 * valid until then. NULL when the writer is behind by queue_max items or
 * the ledger is closed: refuse the call.
 */
struct ledger_ticket *
ledger_reserve(const struct ledger_row *row, int flags, ledger_cb cb, void *arg)
{
	struct ledger *l = ledger;
	struct ledger_ticket *t;
	struct ledger_item *it, *probe;
	enum ledger_lost lost;
	size_t depth, idlen;

	if (l == NULL || l->l_closing || cb == NULL)
		return (NULL);
	pthread_mutex_lock(&l->l_lock);
	lost = l->l_lost;
	depth = l->l_depth;
	if (depth >= l->l_queue_max)
		l->l_stats.ls_refused_full++;
	pthread_mutex_unlock(&l->l_lock);
	if (depth >= l->l_queue_max)
		return (NULL);
	if ((it = ledger_item_new(LEDGER_OP_RESERVE, row)) == NULL)
		return (NULL);
	t = xcalloc(1, sizeof(*t));
	t->lt_cb = cb;
	t->lt_arg = arg;
	if (lost != LEDGER_LOST_NONE ||
	    inflight_find(&l->l_inflight, it->li_row.lr_id) != NULL) {
		/* Answered with the turn's write, like any answer. */
		t->lt_result = lost != LEDGER_LOST_NONE ? LEDGER_UNAVAILABLE
							: LEDGER_DUPLICATE;
		free(it);
		TAILQ_INSERT_TAIL(&l->l_pending, t, lt_entry);
		turn_arm(l);
		return (t);
	}
	inflight_add(&l->l_inflight, it);
	t->lt_item = it;
	if (!(flags & LEDGER_ID_CLIENT)) {
		turn_reserve(l, t);
		return (t);
	}
	idlen = strlen(it->li_row.lr_id);
	probe = xcalloc(1, sizeof(*probe) + idlen + 1);
	probe->li_op = LEDGER_OP_PROBE;
	memcpy(probe->li_strings, it->li_row.lr_id, idlen + 1);
	probe->li_row.lr_id = probe->li_strings;
	probe->li_ticket = t;
	if (ledger_enqueue(l, probe) != 0) {
		free(probe);
		inflight_remove(&l->l_inflight, it);
		free(it);
		free(t);
		return (NULL);
	}
	l->l_probing++;
	return (t);
}

/*
 * The caller no longer wants the answer (its session went away): the
 * callback will not run, the call is withdrawn if its answer was OK (it
 * is never forwarded), and the ledger frees the ticket. Call only before
 * the callback has run.
 */
void
ledger_ticket_cancel(struct ledger_ticket *t)
{
	if (t != NULL)
		t->lt_cancelled = 1;
}

/*
 * Run cb with LEDGER_OK once everything queued to the writer before this
 * call is committed to the file, or with LEDGER_UNAVAILABLE when some of
 * it was given up (or the file was lost) meanwhile: what an answer that
 * promises a change is recorded waits for. Returns the ticket, which
 * ledger_ticket_cancel cancels, or NULL when the ledger is closed.
 */
struct ledger_ticket *
ledger_barrier(ledger_cb cb, void *arg)
{
	struct ledger *l = ledger;
	struct ledger_ticket *t;
	struct ledger_item *it;

	if (l == NULL || l->l_closing || cb == NULL)
		return (NULL);
	t = xcalloc(1, sizeof(*t));
	t->lt_cb = cb;
	t->lt_arg = arg;
	t->lt_barrier = 1;
	pthread_mutex_lock(&l->l_lock);
	t->lt_dropped = l->l_stats.ls_dropped;
	pthread_mutex_unlock(&l->l_lock);
	it = xcalloc(1, sizeof(*it));
	it->li_op = LEDGER_OP_BARRIER;
	it->li_ticket = t;
	if (ledger_enqueue(l, it) != 0) {
		free(it);
		free(t);
		return (NULL);
	}
	return (t);
}

/*
 * The outcome of a call whose reservation was answered LEDGER_OK: its
 * final row goes to the journal with the turn's write and to the writer,
 * which inserts it. Always accepted while the ledger is open; kept and
 * retried if the ledger cannot write, never dropped before ledger_close.
 */
void
ledger_settle(const struct ledger_row *row)
{
	struct ledger *l = ledger;
	struct ledger_item *it, *open;
	char idbuf[64];

	if (l == NULL) {
		log_warnx("ledger: call %s: ledger closed, settlement dropped",
		    ledger_safe_id(row, idbuf, sizeof(idbuf)));
		return;
	}
	if ((it = ledger_item_new(LEDGER_OP_SETTLE, row)) == NULL)
		return;
	if ((open = inflight_find(&l->l_inflight, it->li_row.lr_id)) != NULL) {
		inflight_remove(&l->l_inflight, open);
		free(open);
	} else
		log_warnx("ledger: call %s: settled, but not in flight",
		    ledger_safe_id(row, idbuf, sizeof(idbuf)));
	/* A crash before the writer commits it finds it here. */
	if (journal_append(&l->l_journal.j_buf, JOURNAL_SETTLE, &it->li_row) ==
	    0)
		turn_arm(l);
	/*
	 * Seen by /v1/calls and a reload until the writer is done with it:
	 * listed before the writer can see it, so it is never freed unlisted.
	 */
	TAILQ_INSERT_TAIL(&l->l_unwritten, it, li_open);
	l->l_nunwritten++;
	if (ledger_enqueue(l, it) != 0) {
		TAILQ_REMOVE(&l->l_unwritten, it, li_open);
		l->l_nunwritten--;
		free(it);
	}
	unwritten_trim(l, 0);
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
	if ((it = ledger_item_new(LEDGER_OP_RECORD, row)) == NULL)
		return (-1);
	if (ledger_enqueue(ledger, it) != 0) {
		free(it);
		return (-1);
	}
	return (0);
}

/* The string fields of an alert, as pointers to them. */
static size_t
alert_fields(struct ledger_alert *a, const char **f[])
{
	size_t n = 0;
	int i;

	f[n++] = &a->la_id;
	f[n++] = &a->la_kind;
	f[n++] = &a->la_policy;
	f[n++] = &a->la_scope_key;
	for (i = 0; i < TAG_MAX; i++)
		f[n++] = &a->la_tags[i];
	f[n++] = &a->la_window;
	f[n++] = &a->la_message;
	f[n++] = &a->la_delivery;
	return (n);
}

#define ALERT_FIELDS_MAX (7 + TAG_MAX)

/*
 * A deep copy of an alert as a queued item of kind op, or NULL (logged)
 * when it has no id or is too large. li_row carries only the id, for the
 * writer's messages.
 */
static struct ledger_item *
alert_item_new(enum ledger_op op, const struct ledger_alert *a)
{
	struct ledger_item *it;
	struct ledger_alert copy;
	const char **f[ALERT_FIELDS_MAX];
	char *p, *fixed[ALERT_FIELDS_MAX], idbuf[64];
	size_t i, n, len, total = 0, nfixed;

	if (a == NULL || a->la_id == NULL || a->la_id[0] == '\0') {
		log_warnx("ledger: alert without an id refused");
		return (NULL);
	}
	copy = *a;
	n = alert_fields(&copy, f);
	log_escape(idbuf, sizeof(idbuf), a->la_id, strlen(a->la_id));
	nfixed = text_repair(f, n, fixed, "alert", idbuf);
	for (i = 0; i < n; i++)
		if (*f[i] != NULL)
			total += strlen(*f[i]) + 1;
	if (total > LEDGER_ROW_STRINGS_MAX) {
		log_warnx("ledger: alert of %zu bytes refused", total);
		it = NULL;
		goto done;
	}
	it = xmalloc(sizeof(*it) + total);
	memset(it, 0, sizeof(*it));
	it->li_op = op;
	it->li_alert = copy;
	n = alert_fields(&it->li_alert, f);
	p = it->li_strings;
	for (i = 0; i < n; i++) {
		if (*f[i] == NULL)
			continue;
		len = strlen(*f[i]) + 1;
		memcpy(p, *f[i], len);
		*f[i] = p;
		p += len;
	}
	it->li_row.lr_id = it->li_alert.la_id;
done:
	while (nfixed > 0)
		free(fixed[--nfixed]);
	return (it);
}

/*
 * Queue an alert for the alerts table. 0, or -1 when the queue is full or
 * the ledger closed (the caller logs the alert all the same).
 */
int
ledger_alert(const struct ledger_alert *a)
{
	struct ledger_item *it;

	if (ledger == NULL || ledger->l_closing)
		return (-1);
	if ((it = alert_item_new(LEDGER_OP_ALERT, a)) == NULL)
		return (-1);
	if (ledger_enqueue(ledger, it) != 0) {
		free(it);
		return (-1);
	}
	return (0);
}

/*
 * Queue the delivery state of the alert id: status ("pending",
 * "delivered", "failed") and attempts so far. Taken like a settlement:
 * always, while the ledger is open.
 */
void
ledger_alert_delivery(const char *id, const char *status, int attempts)
{
	struct ledger_alert a;
	struct ledger_item *it;

	if (ledger == NULL)
		return;
	memset(&a, 0, sizeof(a));
	a.la_id = id;
	a.la_delivery = status;
	a.la_attempts = attempts;
	if ((it = alert_item_new(LEDGER_OP_ALERT_DELIVERY, &a)) == NULL)
		return;
	if (ledger_enqueue(ledger, it) != 0)
		free(it);
}

/* Copy s (if any) to *p, move *p past it, and return the copy. */
static const char *
item_string(char **p, const char *s)
{
	size_t len;
	char *r = *p;

	if (s == NULL)
		return (NULL);
	len = strlen(s) + 1;
	memcpy(r, s, len);
	*p += len;
	return (r);
}

/*
 * Queue it, a kill's or an extension's operation (NULL: it could not be
 * made), with deleted_ms the time of a deletion or revocation (0 for an
 * add). 0, or -1 when there is no item or the queue refused it.
 */
static int
record_enqueue(struct ledger_item *it, int64_t deleted_ms)
{
	if (it == NULL)
		return (-1);
	it->li_deleted_ms = deleted_ms;
	if (ledger_enqueue(ledger, it) != 0) {
		free(it);
		return (-1);
	}
	return (0);
}

/*
 * A queued kill operation: the item owns copies of k's strings. NULL when
 * k is not one the table can hold.
 */
static struct ledger_item *
kill_item_new(enum ledger_op op, const struct ledger_kill *k)
{
	struct ledger_item *it;
	const char *src[4] = {
	    k->lk_id, k->lk_match, k->lk_reason, k->lk_source};
	size_t i, total = 0;
	char *p;

	if (k->lk_id == NULL || k->lk_id[0] == '\0' ||
	    (op == LEDGER_OP_KILL_ADD &&
		(k->lk_match == NULL || k->lk_reason == NULL ||
		    k->lk_source == NULL))) {
		log_warnx("ledger: incomplete kill refused");
		return (NULL);
	}
	for (i = 0; i < nitems(src); i++)
		if (src[i] != NULL)
			total += strlen(src[i]) + 1;
	if (total > LEDGER_ROW_STRINGS_MAX) {
		log_warnx("ledger: kill of %zu bytes refused", total);
		return (NULL);
	}
	it = xmalloc(sizeof(*it) + total);
	memset(it, 0, sizeof(*it));
	it->li_op = op;
	it->li_kill = *k;
	p = it->li_strings;
	it->li_kill.lk_id = item_string(&p, k->lk_id);
	it->li_kill.lk_match = item_string(&p, k->lk_match);
	it->li_kill.lk_reason = item_string(&p, k->lk_reason);
	it->li_kill.lk_source = item_string(&p, k->lk_source);
	return (it);
}

/*
 * Queue a new runtime kill for the kills table. Like a settlement it is
 * always accepted while the ledger is open and retried until written.
 * 0, or -1 when the ledger is closed or the kill malformed.
 */
int
ledger_kill_add(const struct ledger_kill *k)
{
	if (ledger == NULL)
		return (-1);
	return (record_enqueue(kill_item_new(LEDGER_OP_KILL_ADD, k), 0));
}

/*
 * Queue the deletion of kill id at now (Unix ms): the row stays, with
 * deleted_at set, so the audit trail keeps it. 0, or -1 as above.
 */
int
ledger_kill_delete(const char *id, int64_t now)
{
	struct ledger_kill k = {.lk_id = id};

	if (ledger == NULL)
		return (-1);
	return (record_enqueue(kill_item_new(LEDGER_OP_KILL_DELETE, &k), now));
}

/*
 * A queued extension operation: the item owns copies of x's strings.
 * NULL when x is not one the table can hold.
 */
static struct ledger_item *
ext_item_new(enum ledger_op op, const struct ledger_extension *x)
{
	struct ledger_item *it;
	const char *src[] = {x->le_id, x->le_policy, x->le_scope, x->le_key,
	    x->le_intent, x->le_window, x->le_reason, x->le_by, x->le_instance};
	size_t i, total = 0;
	char *p;

	if (x->le_id == NULL || x->le_id[0] == '\0' ||
	    (op == LEDGER_OP_EXT_ADD &&
		(x->le_policy == NULL || x->le_scope == NULL ||
		    x->le_key == NULL || x->le_window == NULL ||
		    x->le_reason == NULL || x->le_by == NULL))) {
		log_warnx("ledger: incomplete extension refused");
		return (NULL);
	}
	for (i = 0; i < nitems(src); i++)
		if (src[i] != NULL)
			total += strlen(src[i]) + 1;
	if (total > LEDGER_ROW_STRINGS_MAX) {
		log_warnx("ledger: extension of %zu bytes refused", total);
		return (NULL);
	}
	it = xmalloc(sizeof(*it) + total);
	memset(it, 0, sizeof(*it));
	it->li_op = op;
	it->li_ext = *x;
	p = it->li_strings;
	it->li_ext.le_id = item_string(&p, x->le_id);
	it->li_ext.le_policy = item_string(&p, x->le_policy);
	it->li_ext.le_scope = item_string(&p, x->le_scope);
	it->li_ext.le_key = item_string(&p, x->le_key);
	it->li_ext.le_intent = item_string(&p, x->le_intent);
	it->li_ext.le_window = item_string(&p, x->le_window);
	it->li_ext.le_reason = item_string(&p, x->le_reason);
	it->li_ext.le_by = item_string(&p, x->le_by);
	it->li_ext.le_instance = item_string(&p, x->le_instance);
	return (it);
}

/*
 * Queue a budget extension for the extensions table, always accepted
 * while the ledger is open and retried until written, like a kill. 0, or
 * -1 when the ledger is closed or the extension malformed.
 */
int
ledger_extension_add(const struct ledger_extension *x)
{
	if (ledger == NULL)
		return (-1);
	return (record_enqueue(ext_item_new(LEDGER_OP_EXT_ADD, x), 0));
}

/*
 * Queue the revocation of extension id at now (Unix ms): the row stays,
 * with revoked_at set, as the audit trail. 0, or -1 as above.
 */
int
ledger_extension_revoke(const char *id, int64_t now)
{
	struct ledger_extension x = {.le_id = id};

	if (ledger == NULL)
		return (-1);
	return (record_enqueue(ext_item_new(LEDGER_OP_EXT_REVOKE, &x), now));
}

/*
 * The fleet ledger has stream's rows up to ship_seq seq, under the name
 * instance: record it in ship_cursor (the cursor never moves back, and
 * the instance first recorded stays), and when prune_before_ms > 0 delete
 * up to LEDGER_PRUNE_MAX rows of calls or alerts so shipped and older
 * than it; kills are never pruned. Queued for the writer, which does both
 * in one batch's transaction; never refused for a full queue. Callable
 * from any thread while the ledger is open (the shipper's): it reads only
 * what ledger_open set and takes l_lock, and its caller must be stopped
 * before ledger_close. 0, or -1 when the arguments are bad or the ledger
 * is not open.
 */
int
ledger_ship_done(const char *stream, const char *instance, int64_t seq,
    int64_t prune_before_ms)
{
	struct ledger *l = ledger;
	struct ledger_item *it;
	size_t slen, ilen;

	if (l == NULL)
		return (-1);
	if (stream == NULL ||
	    (strcmp(stream, "calls") != 0 && strcmp(stream, "alerts") != 0 &&
		strcmp(stream, "kills") != 0) ||
	    instance == NULL || instance[0] == '\0' || seq < 0 ||
	    (ilen = strlen(instance)) > LEDGER_ROW_STRINGS_MAX) {
		log_warnx("ledger: bad ship cursor refused");
		return (-1);
	}
	slen = strlen(stream);
	it = xmalloc(sizeof(*it) + slen + 1 + ilen + 1);
	memset(it, 0, sizeof(*it));
	it->li_op = LEDGER_OP_SHIP_DONE;
	memcpy(it->li_strings, stream, slen + 1);
	memcpy(it->li_strings + slen + 1, instance, ilen + 1);
	it->li_stream = it->li_strings;
	it->li_instance = it->li_strings + slen + 1;
	it->li_seq = seq;
	it->li_prune_before_ms = prune_before_ms;
	if (ledger_enqueue(l, it) != 0) {
		free(it);
		return (-1);
	}
	return (0);
}

/*
 * A copy of the rows SQLite may not have yet (unwritten_copy), for a
 * reader thread. Returns how many.
 */
size_t
ledger_unwritten(struct ledger_row **rows)
{
	*rows = NULL;
	return (ledger != NULL ? unwritten_copy(ledger, rows) : 0);
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
	s->ls_lost = l->l_lost;
	/* Under l_lock: the writer replaces l_ckpt when it rebuilds. */
	ledger_ckpt_stats(l->l_ckpt, s);
	pthread_mutex_unlock(&l->l_lock);
	/* The loop's own, read on the loop (ledger_stats' caller). */
	s->ls_in_flight = l->l_inflight.if_n;
	s->ls_journal_writes = l->l_journal_writes;
	s->ls_journal_rotations = l->l_journal_rotations;
	s->ls_journal_failures = l->l_journal_failures;
	s->ls_journal_segment = l->l_journal.j_seg;
	s->ls_failing |= l->l_journal_failing;
	s->ls_journal_bytes = l->l_journal.j_size;
	syncer_stats(l->l_syncer, s);
}

/*
 * How many times the ledger's file has been rebuilt since it was opened.
 * A connection of its own opened under an older generation reads a file
 * that is no longer at the ledger's path: open it again.
 */
uint64_t
ledger_generation(void)
{
	struct ledger *l = ledger;
	uint64_t gen;

	if (l == NULL)
		return (0);
	pthread_mutex_lock(&l->l_lock);
	gen = l->l_generation;
	pthread_mutex_unlock(&l->l_lock);
	return (gen);
}

/*
 * Be told of the ledger's health (writes failing, the file lost, the
 * ledger writing again): cb runs on the loop thread. NULL stops it.
 */
void
ledger_set_event_cb(ledger_event_cb cb, void *arg)
{
	if (ledger == NULL)
		return;
	ledger->l_event_cb = cb;
	ledger->l_event_arg = arg;
}

/*
 * Close the ledger: refuse new reservations and records, refuse those
 * still waiting for their answer (they are never forwarded), write the
 * journal, let the writer write every settlement, checkpoint, and free
 * everything. Safe when the ledger is not open, and from a callback
 * during a close.
 */
void
ledger_close(void)
{
	struct ledger *l = ledger;
	struct ledger_ticket *t;

	if (l == NULL || l->l_closing)
		return;
	l->l_closing = 1;
	/* Its alerts could no longer be written; the log has every event. */
	l->l_event_cb = NULL;

	pthread_mutex_lock(&l->l_lock);
#ifdef TG_UNITTEST
	l->l_test_paused = 0;
	pthread_cond_signal(&l->l_wake);
#endif
	/* Probes come back (refused now: l_closing) before the writer goes. */
	while (l->l_probing > 0 || !TAILQ_EMPTY(&l->l_done)) {
		if (TAILQ_EMPTY(&l->l_done)) {
			pthread_cond_wait(&l->l_batch, &l->l_lock);
			continue;
		}
		pthread_mutex_unlock(&l->l_lock);
		turn_dispatch(l);
		pthread_mutex_lock(&l->l_lock);
	}
	pthread_mutex_unlock(&l->l_lock);
	while ((t = TAILQ_FIRST(&l->l_pending)) != NULL ||
	    (t = TAILQ_FIRST(&l->l_syncwait)) != NULL) {
		if (t == TAILQ_FIRST(&l->l_pending))
			TAILQ_REMOVE(&l->l_pending, t, lt_entry);
		else
			TAILQ_REMOVE(&l->l_syncwait, t, lt_entry);
		/*
		 * A reservation still waiting for the turn's write has its
		 * record in the buffer, which is written below: a withdrawal
		 * must follow it, or a journal kept for calls still in flight
		 * would have the next start charge a call never forwarded.
		 */
		if (t->lt_item != NULL && t->lt_result == LEDGER_OK)
			t->lt_item->li_journaled = 1;
		t->lt_result = LEDGER_UNAVAILABLE;
		turn_answer(l, t);
	}
	/* Settlements and withdrawals of this turn. */
	turn_flush_cb(-1, 0, l);
	if (l->l_syncer != NULL)
		syncer_want(
		    l->l_syncer, l->l_journal.j_seg, l->l_journal.j_size);

	pthread_mutex_lock(&l->l_lock);
	l->l_stopping = 1;
	pthread_cond_signal(&l->l_wake);
	pthread_mutex_unlock(&l->l_lock);

	pthread_join(l->l_thread, NULL);
	turn_dispatch(l);
	turn_finish(l);
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

/* Test hook: start a new journal segment past n bytes (0: the default). */
void
ledger_test_segment_max(int64_t n)
{
	if (ledger != NULL)
		ledger->l_test_segment_max = n;
}

/* Test hook: PRAGMA synchronous as read back at open (1 or 2). */
int
ledger_test_synchronous(void)
{
	return (ledger != NULL ? ledger->l_db.db_synchronous : -1);
}
#endif
