/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A session is one proxied call: routed when its head arrives, forwarded
 * when its body is complete, relayed until the provider finishes, and
 * closed through session_close, which writes the call's one log line and
 * releases everything; the closed struct itself is freed on the next loop
 * turn, once nothing up the stack still holds it.
 */
#ifndef TOLLGATE_SESSION_H
#define TOLLGATE_SESSION_H

#include <stddef.h>

struct config;
struct event_base;
struct conn;
struct http_request;
struct session;
struct listener_ops;

/* session.c */
extern const struct listener_ops session_listener_ops;
void session_setup(struct event_base *);
struct session *session_new(struct conn *, struct http_request *);
void session_start(struct session *);
void session_client_gone(struct session *);
size_t session_count(void);
void session_abort_all(void);
void session_shutdown(void);

/* relay.c */
void session_drained(struct session *);

/* session_policy.c */
void session_extend_reservations(const struct config *);

/* session_stop.c */
void session_stop_setup(struct event_base *);
void session_stop_shutdown(void);
size_t session_stop_matching(const char *const *, const char *);
void session_apply_kills(const struct config *);

#endif
