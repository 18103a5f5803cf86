/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What schema.c and query.c share: the connection made from ledger.ship:
 * and libpq's messages scrubbed of the password. Blocking libpq: never on
 * the event loop.
 */
#ifndef TOLLGATE_SHIP_INT_H
#define TOLLGATE_SHIP_INT_H

#include <libpq-fe.h>

struct ship_conf;

/* schema.c */
char *ship_scrub(const char *, const char *);
PGconn *ship_connect(const struct ship_conf *, char **);

#endif
