/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What schema.c, shipper.c and query.c share: the connection made from
 * ledger.ship:, one statement run with its error scrubbed of the
 * password, and the schema migration both tollgate ship init and the
 * shipper run. Blocking libpq: never on the event loop.
 */
#ifndef TOLLGATE_SHIP_INT_H
#define TOLLGATE_SHIP_INT_H

#include <libpq-fe.h>

struct ship_conf;

/* schema.c */
char *ship_scrub(const char *, const char *);
char *ship_error(const PGresult *, const PGconn *, const char *);
PGconn *ship_connect(const struct ship_conf *, char **);
int ship_exec(PGconn *, const struct ship_conf *, const char *, ExecStatusType,
    const char *, PGresult **, char **);
int ship_migrate(PGconn *, const struct ship_conf *, int *, int *, char **);

#endif
