/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet ledger on PostgreSQL (src/ship/): for now, its schema, made
 * and migrated by tollgate ship init. Blocking libpq calls: for the
 * command line only, never for the event loop.
 */
#ifndef TOLLGATE_SHIP_H
#define TOLLGATE_SHIP_H

struct ship_conf;

/* The newest fleet ledger schema this tollgate knows. */
#define SHIP_SCHEMA_VERSION 1

/* schema.c */
int ship_schema_init(const struct ship_conf *, char **, char **);

#endif
