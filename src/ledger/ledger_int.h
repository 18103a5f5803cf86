/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to the ledger (src/ledger/): the open ledger and its tickets,
 * shared by the loop's side in ledger.c and the writer thread in writer.c;
 * the queued write; the write connection with its prepared statements, and
 * what store.c offers the writer. Nothing here is seen outside src/ledger/.
 */
#ifndef TOLLGATE_LEDGER_INT_H
#define TOLLGATE_LEDGER_INT_H

#include <sys/queue.h>
#include <sys/types.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>
#include <sqlite3.h>

#include "tollgate/buf.h"
#include "tollgate/ledger.h"

struct event;
struct event_base;

/*
 * 2: status may be 'killed' (a call tollgate ended while it ran). A
 * version-1 ledger is brought to 2 at open by widening that CHECK.
 * 3: calls, alerts and kills have ship_seq, and the ship_cursor table
 * says how far the fleet ledger has them (ledger_schema_ship).
 */
#define LEDGER_SCHEMA_VERSION 3
#define LEDGER_SCHEMA_VERSION_STR "3"
#define LEDGER_SCHEMA_KILLED 2 /* the version that takes 'killed' */
#define LEDGER_SCHEMA_KILLED_STR "2"
#define LEDGER_BUSY_MS 5000 /* busy_timeout of the write connection */
#define LEDGER_TIME_MAX 32 /* "2026-11-28T14:23:00.123Z" and NUL */
#define LEDGER_ERRMSG_MAX 256
#define LEDGER_EVENT_MSG_MAX 512
#define LEDGER_EVENTS_MAX 16 /* events waiting for the loop; more dropped */
#define LEDGER_PRUNE_SCAN (2 * LEDGER_PRUNE_MAX) /* index entries read */
/*
 * No call waits for a commit (but for a probe of its client's request
 * id), so under load the writer lets rows gather: a transaction at most
 * every LEDGER_LINGER_US, unless LEDGER_LINGER_ITEMS wait, a probe does,
 * or the ledger closes. Each commit's fixed cost (its WAL frames, their
 * checksums, the fsync under durability: power) is then shared by the
 * calls of that time instead of paid by each.
 */
#define LEDGER_LINGER_US 2000LL
#define LEDGER_LINGER_ITEMS 256
/*
 * Only under load: after a batch of fewer items than this, the next is
 * written at once, so a lone call's row is in the file as soon as it
 * would be without the wait.
 */
#define LEDGER_LINGER_LOAD 4
#define JOURNAL_WATCH_SEC 1 /* the open segment checked this often */
#define LEDGER_ROW_STRINGS_MAX 65536 /* bytes of strings in one row */
#define LEDGER_ROW_FIELDS_MAX (12 + TAG_MAX) /* ledger_row_fields */
/* The most one journal record holds: a row's strings and numbers. */
#define JOURNAL_RECORD_MAX (LEDGER_ROW_STRINGS_MAX + 4096)

/* The two times of a row being bound (ledger_row_bind). */
struct ledger_times {
	char lt_started[LEDGER_TIME_MAX];
	char lt_finished[LEDGER_TIME_MAX];
};

enum ledger_op {
	LEDGER_OP_RESERVE, /* a call in flight (never queued: inflight.c) */
	LEDGER_OP_SETTLE, /* insert a reserved call's final row */
	LEDGER_OP_RECORD, /* insert a final row (refusals) */
	LEDGER_OP_PROBE, /* is a client's request id in the ledger? */
	LEDGER_OP_MARK, /* a journal segment is written: li_seq */
	LEDGER_OP_BARRIER, /* everything queued before it is committed */
	LEDGER_OP_ALERT, /* insert an alert (li_alert) */
	LEDGER_OP_ALERT_DELIVERY, /* update an alert's delivery status */
	LEDGER_OP_KILL_ADD, /* insert a runtime kill */
	LEDGER_OP_KILL_DELETE, /* mark a runtime kill deleted */
	LEDGER_OP_EXT_ADD, /* insert a budget extension */
	LEDGER_OP_EXT_REVOKE, /* mark a budget extension revoked */
	LEDGER_OP_SHIP_DONE, /* move a ship cursor, prune what it passed */
};

/* A queued item that answers a ticket. */
#define LEDGER_OP_TICKETED(op)                                                 \
	((op) == LEDGER_OP_PROBE || (op) == LEDGER_OP_MARK ||                  \
	    (op) == LEDGER_OP_BARRIER)

/* What a journal record is (journal.c). */
enum journal_rec {
	JOURNAL_RESERVE = 1, /* a call forwarded: its row as reserved */
	JOURNAL_SETTLE = 2, /* its final row */
	JOURNAL_WITHDRAW = 3, /* reserved but never forwarded: no row */
};

/*
 * One queued write: a deep copy of the caller's row in a single allocation,
 * its strings in li_strings. Owned by the queue, then by the writer thread,
 * which frees it once it is committed (or answered, for a reservation that
 * failed). The ticket is shared with the loop thread (see below).
 */
struct ledger_item {
	TAILQ_ENTRY(ledger_item) li_entry;
	enum ledger_op li_op;
	struct ledger_ticket *li_ticket; /* LEDGER_OP_TICKETED, in flight */
	/* A call in flight (LEDGER_OP_RESERVE), in inflight.c's table. */
	TAILQ_ENTRY(ledger_item) li_open;
	struct ledger_item *li_hnext;
	int li_journaled; /* its reservation is in the journal */
	int li_changed; /* its statement changed a row */
	/*
	 * A settlement the writer is done with (l_lock): written, or given
	 * up and left to the journal. The loop, which keeps settlements on
	 * l_unwritten, frees it then; the writer never does.
	 */
	int li_done;
	struct ledger_row li_row; /* strings point into li_strings */
	struct ledger_kill li_kill; /* kill ops; strings in li_strings */
	int64_t li_deleted_ms; /* LEDGER_OP_KILL_DELETE, _EXT_REVOKE */
	struct ledger_extension li_ext; /* extension ops; likewise */
	struct ledger_alert li_alert; /* alert ops; li_row.lr_id = la_id */
	/* LEDGER_OP_SHIP_DONE: ledger_ship_done's arguments, the result. */
	const char *li_stream; /* in li_strings */
	const char *li_instance; /* in li_strings */
	int64_t li_seq; /* and LEDGER_OP_MARK's segment */
	int64_t li_prune_before_ms; /* 0: no pruning */
	uint64_t li_pruned; /* rows the op deleted */
	char li_strings[];
};
TAILQ_HEAD(ledger_items, ledger_item);

/*
 * One calls_daily key's sums over the final rows a transaction inserted
 * (store.c): the key's strings point into the batch's items, NULL for ''.
 */
struct ledger_rollup {
	char ru_day[11]; /* started_at's date, "2026-11-28" */
	const char *ru_key[6]; /* provider, model, team .. environment */
	int64_t ru_calls;
	int64_t ru_input_tokens;
	int64_t ru_output_tokens;
	int64_t ru_cached_input_tokens;
	int64_t ru_cache_write_tokens;
	int64_t ru_reasoning_tokens;
	int64_t ru_cost_nusd;
};

/*
 * The only write connection. Owned by ledger_open's caller until the writer
 * thread starts, then by the writer thread alone.
 */
struct ledger_db {
	sqlite3 *db_conn;
	int db_lockfd; /* flock(2) held: one tollgate per ledger */
	enum durability db_durability;

	/*
	 * The files as SQLite names them (symbolic links resolved) and the
	 * device and inode each had when the connection opened them: what
	 * ledger_db_check compares with the paths (rebuild.c).
	 */
	char *db_path; /* the path as configured, links and all */
	char *db_file;
	char *db_wal;
	char *db_shm;
	dev_t db_dev;
	ino_t db_ino;
	dev_t db_wal_dev;
	ino_t db_wal_ino;
	dev_t db_shm_dev;
	ino_t db_shm_ino;
	int db_placed_fd; /* a rebuilt copy put at db_file, not yet open */
	int db_v1; /* the status CHECK could not be widened: no 'killed' */
	/*
	 * The last ship_seq given: every row that becomes final or changes
	 * takes the next. Loaded at open, carried over a rebuild, never
	 * decremented (not on a rollback either): "ship_seq > a cursor" is
	 * what is still to ship.
	 */
	int64_t db_ship_seq;

	sqlite3_stmt *db_begin; /* BEGIN IMMEDIATE */
	sqlite3_stmt *db_commit;
	sqlite3_stmt *db_rollback;
	sqlite3_stmt *db_insert; /* final rows: settlements and records */
	sqlite3_stmt *db_probe; /* LEDGER_OP_PROBE */
	sqlite3_stmt *db_kill_add;
	sqlite3_stmt *db_kill_delete;
	sqlite3_stmt *db_ext_add;
	sqlite3_stmt *db_ext_revoke;
	sqlite3_stmt *db_alert; /* insert an alert */
	sqlite3_stmt *db_alert_delivery; /* update its delivery */
	sqlite3_stmt *db_cursor; /* upsert a ship_cursor row */
	sqlite3_stmt *db_prune_calls; /* shipped and older than the cut */
	sqlite3_stmt *db_prune_alerts;
	sqlite3_stmt *db_rollup; /* add a key's sums to calls_daily */
	int db_rollup_self; /* the writer keeps calls_daily for its inserts */
	struct ledger_rollup *db_rollups; /* this transaction's, by key */
	size_t db_nrollups;
	size_t db_rollups_cap;
	int db_synchronous; /* read back after it was set: 1 or 2 */
	long long db_busy_deadline; /* busy_wait's, monotonic µs */

	/* The last failed transaction, filled by ledger_db_apply. */
	int db_err; /* extended SQLite result code */
	char db_errmsg[LEDGER_ERRMSG_MAX]; /* sqlite3_errmsg() */
	struct ledger_item *db_failed_item; /* the statement that failed */
};

/*
 * A reservation's answer, or a journal mark's. Made by ledger_reserve on
 * the loop; a probe's goes to the writer, which fills lt_result and puts
 * it on the done list under the lock. On the loop it then waits on
 * l_pending for the turn's journal write, and under durability: power on
 * l_syncwait for the sync covering lt_seg and lt_off. Freed on the loop
 * thread once its callback has run or been skipped. The loop thread
 * alone reads and writes lt_cancelled, so a cancel needs no lock and the
 * ticket is never freed under the writer's feet.
 */
struct ledger_ticket {
	TAILQ_ENTRY(ledger_ticket) lt_entry; /* one list at a time */
	ledger_cb lt_cb;
	void *lt_arg;
	enum ledger_result lt_result; /* writer, under l_lock */
	int lt_cancelled; /* loop thread only */
	struct ledger_item *lt_item; /* the call, in l_inflight; or NULL */
	uint64_t lt_seg; /* where its reservation was written */
	int64_t lt_off;
	uint64_t lt_mark; /* a mark's segment; lt_item NULL */
	int lt_barrier; /* ledger_barrier's; lt_item NULL */
	uint64_t lt_dropped; /* ls_dropped when it was queued (barriers) */
};
TAILQ_HEAD(ledger_tickets, ledger_ticket);

/* The calls in flight (inflight.c); loop thread only. */
struct ledger_inflight {
	struct ledger_item **if_buckets;
	size_t if_nbuckets; /* a power of two */
	size_t if_n;
	struct ledger_items if_all; /* by li_open, in order of reservation */
};

/* The journal's open segment and the turn's records (journal.c). */
struct ledger_journal {
	char *j_path; /* the ledger's path: segments are <path>.journal.<n> */
	int j_fd; /* the open segment, O_APPEND; -1 when none */
	uint64_t j_seg; /* its number */
	int64_t j_size; /* bytes in it */
	int j_broken; /* a failed write could not be cut off */
	struct buf j_buf; /* the turn's records, one write(2) */
};

/* A segment to delete once the segment after it is on disk (power). */
struct journal_del {
	uint64_t jd_seg;
	uint64_t jd_after_seg;
	int64_t jd_after_off;
};

typedef void (*journal_read_cb)(
    enum journal_rec, const struct ledger_row *, void *);

/* A health event waiting for the loop (ledger_event_cb). */
struct ledger_ev {
	TAILQ_ENTRY(ledger_ev) ev_entry;
	struct ledger_event ev_event; /* ev_message points at ev_text */
	char ev_text[LEDGER_EVENT_MSG_MAX];
};
TAILQ_HEAD(ledger_evs, ledger_ev);

/* The open ledger: one per process, ledger.c's static ledger. */
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
	ledger_event_cb l_event_cb;
	void *l_event_arg;
	enum durability l_durability;
	struct ledger_journal l_journal;
	struct ledger_inflight l_inflight;
	/*
	 * Settlements in the writer's queue, oldest first (by li_open), the
	 * very items it writes: so /v1/calls and a reload's rebuild see them
	 * before SQLite does. Freed here once li_done (unwritten.c).
	 */
	struct ledger_items l_unwritten;
	size_t l_nunwritten;
	struct ledger_tickets l_pending; /* waiting for the turn's write */
	struct ledger_tickets l_syncwait; /* power: waiting for a sync */
	struct event *l_flush; /* active: the turn has records to write */
	int l_flush_armed;
	struct event *l_watch; /* once a second: is the segment still there */
	struct ledger_syncer *l_syncer; /* power only */
	struct journal_del *l_dels; /* power: segments to delete after */
	size_t l_ndels;
	size_t l_probing; /* probes at the writer, not yet answered */
	int l_journal_keep; /* a segment was kept: keep every later one */
	int l_journal_gone; /* the open segment went from under us */
	int l_journal_failing; /* the last journal write failed */
	int l_journal_told; /* its FAILING went out, RECOVERED not yet */
	long long l_journal_told_at; /* when the last FAILING went out */
	uint64_t l_journal_rotations;
	uint64_t l_journal_failures;
	uint64_t l_journal_writes;

	pthread_mutex_t l_lock; /* guards everything below */
	pthread_cond_t l_wake; /* the writer: items queued, stop */
	pthread_cond_t l_batch; /* ledger_close: a batch finished */
	struct ledger_items l_queue;
	struct ledger_tickets l_done;
	size_t l_depth; /* items not yet finished */
	size_t l_queued; /* items on l_queue */
	size_t l_probes_queued; /* probes on l_queue: a call waits on each */
	int l_lingering; /* the writer lets rows gather: no need to wake it */
	uint64_t l_mark_drops; /* items given up since the last mark */
	int l_stopping; /* the writer drains and exits */
	struct ledger_stats l_stats;
	/*
	 * The checkpointer (NULL: auto-checkpoint in commits). Set by the
	 * writer, which stops it while the file is lost and starts another
	 * on a rebuilt file; read by ledger_stats.
	 */
	struct ledger_ckpt *l_ckpt;
	enum ledger_lost l_lost; /* reservations refused at once while set */
	uint64_t l_generation; /* files rebuilt: readers reopen */
	struct ledger_evs l_events; /* for the loop's ledger_event_cb */
	size_t l_nevents;
#ifdef TG_UNITTEST
	int l_test_paused;
	int64_t l_test_pages;
	int l_test_busy_ms;
	int64_t l_test_segment_max; /* loop thread only; 0: the default */
#endif
};

/* ledger.c */
size_t ledger_row_fields(struct ledger_row *, const char **[]);
struct ledger_item *ledger_item_new(enum ledger_op, const struct ledger_row *);
const char *ledger_safe_id(const struct ledger_row *, char *, size_t);
const char *ledger_item_what(const struct ledger_item *, char *, size_t);
void ledger_wake_loop(struct ledger *);
void ledger_event_push(struct ledger *, enum ledger_event_kind,
    enum ledger_lost, const char *, ...) __attribute__((format(printf, 4, 5)));

/* ledger.c */
int ledger_enqueue(struct ledger *, struct ledger_item *);

/* turn.c */
void turn_arm(struct ledger *);
void turn_reserve(struct ledger *, struct ledger_ticket *);
void turn_answer(struct ledger *, struct ledger_ticket *);
void turn_flush_cb(evutil_socket_t, short, void *);
void turn_watch_cb(evutil_socket_t, short, void *);
void turn_done_cb(evutil_socket_t, short, void *);
void turn_dispatch(struct ledger *);
void turn_finish(struct ledger *);

/* unwritten.c */
void unwritten_trim(struct ledger *, int);
size_t unwritten_copy(struct ledger *, struct ledger_row **);

/* inflight.c */
void inflight_init(struct ledger_inflight *);
struct ledger_item *inflight_find(const struct ledger_inflight *, const char *);
void inflight_add(struct ledger_inflight *, struct ledger_item *);
void inflight_remove(struct ledger_inflight *, struct ledger_item *);
void inflight_free(struct ledger_inflight *);

/* journal.c */
char *journal_name(const char *, uint64_t);
int journal_append(struct buf *, enum journal_rec, const struct ledger_row *);
int64_t journal_read(const char *, journal_read_cb, void *, size_t *, char **);
int journal_segments(const char *, uint64_t **, size_t *, char **);
int journal_start(struct ledger_journal *, uint64_t, char **);
void journal_init(struct ledger_journal *, const char *);
int journal_write_bytes(struct ledger_journal *, const char *, size_t);
int journal_flush(struct ledger_journal *);
void journal_keep_outcomes(struct ledger_journal *);
int journal_is_ours(const char *);
void journal_unlink(const char *, uint64_t);
int journal_gone(struct ledger_journal *);
void journal_free(struct ledger_journal *);

/* replay.c */
int ledger_replay(struct ledger_db *, const char *, uint64_t *, uint64_t *,
    uint64_t *, char **);

/* syncer.c */
struct ledger_syncer *syncer_start(const char *, int, char **);
void syncer_segment(struct ledger_syncer *, uint64_t, int);
void syncer_want(struct ledger_syncer *, uint64_t, int64_t);
int syncer_covers(struct ledger_syncer *, uint64_t, int64_t);
int syncer_failed_take(struct ledger_syncer *);
void syncer_stats(struct ledger_syncer *, struct ledger_stats *);
void syncer_stop(struct ledger_syncer *);

/* writer.c */
void *ledger_writer(void *);

/* checkpoint.c */
struct ledger_ckpt *ledger_ckpt_start(struct ledger_db *, const char *);
void ledger_ckpt_stats(struct ledger_ckpt *, struct ledger_stats *);
int ledger_ckpt_sync_failed(struct ledger_ckpt *);
void ledger_ckpt_stop(
    struct ledger_ckpt *, struct ledger_db *, struct ledger_stats *);

/* rebuild.c */
int ledger_db_identify(struct ledger_db *, char **);
enum ledger_lost ledger_db_check(struct ledger_db *, int);
int ledger_db_sync_error(int);
int ledger_db_rebuild(
    struct ledger_db *, struct ledger_db *, enum ledger_lost *, char **);
int ledger_db_save(struct ledger_db *, char **, char **);
void ledger_db_drop_names(struct ledger_db *);
void ledger_db_retire(struct ledger_db *);

/* schema.c */
int ledger_schema_check(struct ledger_db *, int64_t *, char **);
int ledger_schema_create(struct ledger_db *, const char *, char **);
int ledger_schema_fix_checks(
    struct ledger_db *, const char *, int64_t, char **);
int ledger_schema_alerts(struct ledger_db *, char **);
int ledger_schema_kills(struct ledger_db *, char **);
int ledger_schema_extensions(struct ledger_db *, char **);
int ledger_schema_served(struct ledger_db *, char **);
int ledger_schema_routing(struct ledger_db *, char **);
int ledger_schema_ship(struct ledger_db *, const char *, int64_t, char **);
int ledger_schema_rollup_writer(struct ledger_db *, const char *, char **);

/* store.c */
int ledger_db_fail(struct ledger_db *, char **, const char *, ...)
    __attribute__((format(printf, 3, 4)));
int ledger_db_query_int(struct ledger_db *, const char *, int64_t *);
void ledger_db_rollback(struct ledger_db *);
int ledger_db_open(
    struct ledger_db *, const char *, enum durability, uint64_t *, char **);
int ledger_db_reopen(
    struct ledger_db *, const char *, enum durability, int, char **);
void ledger_db_adopt(struct ledger_db *, struct ledger_db *);
int ledger_db_apply(struct ledger_db *, struct ledger_items *);
int ledger_db_blames_row(int);
int ledger_busy_step(long long *, int, long long);
void ledger_db_close(struct ledger_db *);
void ledger_format_time(int64_t, char *, size_t);
int64_t ledger_now_ms(void);
int ledger_row_bind(sqlite3_stmt *, const struct ledger_row *, enum call_status,
    struct ledger_times *);
#ifdef TG_UNITTEST
void ledger_db_max_pages(struct ledger_db *, int64_t);
#endif

#endif
