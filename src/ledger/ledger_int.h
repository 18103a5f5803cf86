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

#include <sqlite3.h>

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

enum ledger_op {
	LEDGER_OP_RESERVE, /* insert the in_flight row, answer a ticket */
	LEDGER_OP_SETTLE, /* update the in_flight row with the outcome */
	LEDGER_OP_RECORD, /* insert a final row (refusals) */
	LEDGER_OP_ALERT, /* insert an alert (li_alert) */
	LEDGER_OP_ALERT_DELIVERY, /* update an alert's delivery status */
	LEDGER_OP_KILL_ADD, /* insert a runtime kill */
	LEDGER_OP_KILL_DELETE, /* mark a runtime kill deleted */
	LEDGER_OP_UNRESERVE, /* delete an in_flight row never forwarded */
	LEDGER_OP_SHIP_DONE, /* move a ship cursor, prune what it passed */
};

/* Reservations, records and alerts count against queue_max; the rest
 * never. */
#define LEDGER_OP_ADMITTED(op)                                                 \
	((op) == LEDGER_OP_RESERVE || (op) == LEDGER_OP_RECORD ||              \
	    (op) == LEDGER_OP_ALERT)

/*
 * One queued write: a deep copy of the caller's row in a single allocation,
 * its strings in li_strings. Owned by the queue, then by the writer thread,
 * which frees it once it is committed (or answered, for a reservation that
 * failed). The ticket is shared with the loop thread (see below).
 */
struct ledger_item {
	TAILQ_ENTRY(ledger_item) li_entry;
	enum ledger_op li_op;
	struct ledger_ticket *li_ticket; /* reservations only */
	int li_changed; /* its statement changed a row */
	struct ledger_row li_row; /* strings point into li_strings */
	struct ledger_kill li_kill; /* kill ops; strings in li_strings */
	int64_t li_deleted_ms; /* LEDGER_OP_KILL_DELETE */
	struct ledger_alert li_alert; /* alert ops; li_row.lr_id = la_id */
	/* LEDGER_OP_SHIP_DONE: ledger_ship_done's arguments, the result. */
	const char *li_stream; /* in li_strings */
	const char *li_instance; /* in li_strings */
	int64_t li_seq;
	int64_t li_prune_before_ms; /* 0: no pruning */
	uint64_t li_pruned; /* rows the op deleted */
	char li_strings[];
};
TAILQ_HEAD(ledger_items, ledger_item);

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
	sqlite3_stmt *db_insert; /* reservations and records */
	sqlite3_stmt *db_kill_add;
	sqlite3_stmt *db_kill_delete;
	sqlite3_stmt *db_settle;
	sqlite3_stmt *db_unreserve; /* LEDGER_OP_UNRESERVE */
	sqlite3_stmt *db_alert; /* insert an alert */
	sqlite3_stmt *db_alert_delivery; /* update its delivery */
	sqlite3_stmt *db_cursor; /* upsert a ship_cursor row */
	sqlite3_stmt *db_prune_calls; /* shipped and older than the cut */
	sqlite3_stmt *db_prune_alerts;
	int db_synchronous; /* read back after it was set: 1 or 2 */
	long long db_busy_deadline; /* busy_wait's, monotonic µs */

	/* The last failed transaction, filled by ledger_db_apply. */
	int db_err; /* extended SQLite result code */
	char db_errmsg[LEDGER_ERRMSG_MAX]; /* sqlite3_errmsg() */
	struct ledger_item *db_failed_item; /* the statement that failed */
};

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
#endif
};

/* ledger.c */
const char *ledger_safe_id(const struct ledger_row *, char *, size_t);
const char *ledger_item_what(const struct ledger_item *, char *, size_t);
void ledger_wake_loop(struct ledger *);
void ledger_event_push(struct ledger *, enum ledger_event_kind,
    enum ledger_lost, const char *, ...) __attribute__((format(printf, 4, 5)));

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
int ledger_schema_served(struct ledger_db *, char **);
int ledger_schema_ship(struct ledger_db *, const char *, int64_t, char **);

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
#ifdef TG_UNITTEST
void ledger_db_max_pages(struct ledger_db *, int64_t);
#endif

#endif
