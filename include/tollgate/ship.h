/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet ledger on PostgreSQL (src/ship/): its schema, made and
 * migrated by tollgate ship init and by the shipper at connect; the
 * shipper, a thread of its own that sends the local ledger's final rows
 * there; and the fleet's spend and calls answers. Blocking libpq calls:
 * for the command line and threads of their own, never for the event
 * loop.
 */
#ifndef TOLLGATE_SHIP_H
#define TOLLGATE_SHIP_H

#include <stdint.h>

#include "tollgate/spend.h"

struct config;
struct ship_conf;
struct ship_link;

/* The newest fleet ledger schema this tollgate knows. */
#define SHIP_SCHEMA_VERSION 4

/* The shipper's connection to PostgreSQL. */
enum ship_state {
	SHIP_OFF, /* no ledger.ship: */
	SHIP_CONNECTING, /* started, not connected yet */
	SHIP_UP, /* connected: the last statement succeeded */
	SHIP_DOWN, /* the last attempt failed; backing off */
};

/* The streams shipped, in the order of sh_rows. */
enum ship_stream {
	SHIP_CALLS,
	SHIP_ALERTS,
	SHIP_KILLS,
	SHIP_NSTREAMS,
};

/* The last error kept for /healthz, scrubbed; longer ones are cut. */
#define SHIP_ERROR_MAX 256

/* A snapshot of the shipper (ship_stats). */
struct ship_stats {
	enum ship_state sh_state;
	uint64_t sh_backlog; /* final rows not shipped yet */
	int64_t sh_lag_ms; /* age of the oldest of them; 0 when none */
	uint64_t sh_rows[SHIP_NSTREAMS]; /* rows shipped, by stream */
	uint64_t sh_batches; /* statements committed */
	uint64_t sh_errors; /* failed connects and statements */
	int64_t sh_last_ok_ms; /* last success, Unix ms; 0: none yet */
	char sh_last_error[SHIP_ERROR_MAX]; /* "": none */
};

/* schema.c */
int ship_schema_init(const struct ship_conf *, char **, char **);

/* query.c */
struct ship_link *ship_link_new(const struct ship_conf *);
void ship_link_free(struct ship_link *);
void ship_link_cancel(struct ship_link *);
int ship_query_run(struct ship_link *, const struct spend_query *,
    struct spend_result *, char **);
int ship_query_calls(struct ship_link *, const struct spend_query *,
    struct spend_out *, char **);
int ship_answer(struct ship_link *, enum spend_kind, const char *,
    struct spend_out *, const char **, char **);

/* shipper.c */
int shipper_start(const struct config *, char **);
void shipper_configure(const struct config *);
void shipper_stop(void);
void ship_stats(struct ship_stats *);
const char *ship_state_name(enum ship_state);

/* outbox.c */
const char *ship_stream_name(enum ship_stream);

#endif
