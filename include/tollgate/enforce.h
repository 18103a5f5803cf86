/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy runtime: the daemon's one set of policy counters, filled from
 * the ledger at start-up, kept across reloads (a reload only fills the
 * scopes its new policies introduce) and swept of idle entries once a
 * minute. Sessions admit and settle against enforce_counters(); the admin
 * API reads it for GET /v1/budgets. Loop thread only.
 */
#ifndef TOLLGATE_ENFORCE_H
#define TOLLGATE_ENFORCE_H

struct config;
struct event_base;
struct policy_counters;
struct breaker_state;

/* enforce.c */
int enforce_start(struct event_base *, const struct config *, char **);
int enforce_reload(const struct config *, char **);
void enforce_alerts(struct config *);
struct policy_counters *enforce_counters(void);
struct breaker_state *enforce_breakers(void);
void enforce_stop(void);

#endif
