/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API: a second listener (127.0.0.1:8788 by default, never the
 * proxy's port) with the same strict HTTP/1.1 reader as the proxy, that
 * answers GET /healthz, /metrics, /v1/spend, /v1/calls, /v1/budgets and
 * /v1/alerts, POST /v1/reload, the kills, and the dashboard page at /. Every request passes a Host allowlist
 * (DNS rebinding), is refused if a browser marks it cross-origin (CSRF),
 * and needs the bearer token when one is configured, compared in constant
 * time. Spend queries run on a reader thread with its own read-only ledger
 * connection, so a slow query never holds up the event loop that proxies
 * calls. Everything but the reader thread runs on the loop thread. See
 * docs/api.md.
 */
#ifndef TOLLGATE_ADMIN_H
#define TOLLGATE_ADMIN_H

#include <stddef.h>

struct event_base;
struct config;
struct metrics_gauges;

/*
 * Admin connections open at once. Operators and scrapers need a few; the
 * cap keeps a flood of admin connections from using the descriptors the
 * proxy needs (fdlimit.c counts them apart). When all are taken, idle ones
 * are closed to admit new ones, as on the proxy listener.
 */
#define ADMIN_MAX_CONNECTIONS 64

/* admin.c */
int admin_start(struct event_base *, const struct config *, const char *);
int admin_port(void);
void admin_drain(void);
void admin_stop(void);
void admin_metrics_gauges(struct metrics_gauges *);

#endif
