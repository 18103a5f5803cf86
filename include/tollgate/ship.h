/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet ledger on PostgreSQL (src/ship/): its schema, made and
 * migrated by tollgate ship init, and the fleet's spend and calls answers.
 * Blocking libpq calls: for the command line and threads of their own,
 * never for the event loop.
 */
#ifndef TOLLGATE_SHIP_H
#define TOLLGATE_SHIP_H

#include "tollgate/spend.h"

struct ship_conf;
struct ship_link;

/* The newest fleet ledger schema this tollgate knows. */
#define SHIP_SCHEMA_VERSION 1

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

#endif
