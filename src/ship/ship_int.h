/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the files of src/ship/ share: the connection made from
 * ledger.ship:, one statement run with its error scrubbed of the
 * password, the schema migration both tollgate ship init and the shipper
 * run, and the local ledger as the shipper reads it. Blocking libpq and
 * SQLite: never on the event loop.
 */
#ifndef TOLLGATE_SHIP_INT_H
#define TOLLGATE_SHIP_INT_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "tollgate/ship.h"

struct ship_conf;
struct sqlite3;
struct sqlite3_stmt;

/*
 * The local ledger as the shipper reads it (outbox.c): set ob_path, then
 * ship_outbox_open; all else is outbox.c's.
 */
struct ship_outbox {
	char *ob_path; /* the ledger's path; the caller's */
	struct sqlite3 *ob_db; /* read-only, on the ledger */
	uint64_t ob_gen; /* ledger_generation when ob_db was opened */
	struct sqlite3_stmt *ob_rows[SHIP_NSTREAMS]; /* a batch's rows */
	struct sqlite3_stmt *ob_count[SHIP_NSTREAMS]; /* rows left to ship */
	struct sqlite3_stmt *ob_oldest[SHIP_NSTREAMS]; /* the first's time */
};

/* schema.c */
char *ship_scrub(const char *, const char *);
char *ship_error(const PGresult *, const PGconn *, const char *);
PGconn *ship_connect(const struct ship_conf *, char **);
int ship_exec(PGconn *, const struct ship_conf *, const char *, ExecStatusType,
    const char *, PGresult **, char **);
int ship_migrate(PGconn *, const struct ship_conf *, int *, int *, char **);

/* outbox.c */
void ship_outbox_close(struct ship_outbox *);
int ship_outbox_open(struct ship_outbox *, char **);
int ship_outbox_cursors(struct ship_outbox *, int64_t *, char **, char **);
void ship_outbox_measure(
    struct ship_outbox *, const int64_t *, uint64_t *, int64_t *);
int ship_outbox_rows(struct ship_outbox *, size_t, int64_t, int, char **, int *,
    int64_t *, char **);
char *ship_outbox_upsert_sql(size_t);

#endif
