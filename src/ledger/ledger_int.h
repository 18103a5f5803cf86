/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to the ledger (src/ledger/): the queued write, the write
 * connection with its prepared statements, and what store.c offers the
 * writer in ledger.c. Nothing here is seen outside src/ledger/.
 */
#ifndef TOLLGATE_LEDGER_INT_H
#define TOLLGATE_LEDGER_INT_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "tollgate/ledger.h"

#define LEDGER_SCHEMA_VERSION 1
#define LEDGER_BUSY_MS 5000 /* busy_timeout of the write connection */
#define LEDGER_TIME_MAX 32 /* "2026-11-28T14:23:00.123Z" and NUL */
#define LEDGER_ERRMSG_MAX 256

enum ledger_op {
	LEDGER_OP_RESERVE, /* insert the in_flight row, answer a ticket */
	LEDGER_OP_SETTLE, /* update the in_flight row with the outcome */
	LEDGER_OP_RECORD, /* insert a final row (refusals) */
};

/*
 * One queued write: a deep copy of the caller's row in a single allocation,
 * its strings in li_strings. Owned by the queue, then by the writer thread,
 * which frees it once it is committed (or answered, for a reservation that
 * failed). The ticket is shared with the loop thread (see ledger.c).
 */
struct ledger_item {
	TAILQ_ENTRY(ledger_item) li_entry;
	enum ledger_op li_op;
	struct ledger_ticket *li_ticket; /* reservations only */
	int li_changed; /* its statement changed a row */
	struct ledger_row li_row; /* strings point into li_strings */
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
	sqlite3_stmt *db_begin; /* BEGIN IMMEDIATE */
	sqlite3_stmt *db_commit;
	sqlite3_stmt *db_rollback;
	sqlite3_stmt *db_insert; /* reservations and records */
	sqlite3_stmt *db_settle;
	int db_synchronous; /* read back after it was set: 1 or 2 */

	/* The last failed transaction, filled by ledger_db_apply. */
	int db_err; /* extended SQLite result code */
	char db_errmsg[LEDGER_ERRMSG_MAX]; /* sqlite3_errmsg() */
	struct ledger_item *db_failed_item; /* the statement that failed */
};

/* store.c */
int ledger_db_open(
    struct ledger_db *, const char *, enum durability, uint64_t *, char **);
int ledger_db_apply(struct ledger_db *, struct ledger_items *);
int ledger_db_blames_row(int);
void ledger_db_close(struct ledger_db *);
void ledger_format_time(int64_t, char *, size_t);
int64_t ledger_now_ms(void);
#ifdef TG_UNITTEST
void ledger_db_max_pages(struct ledger_db *, int64_t);
#endif

#endif
