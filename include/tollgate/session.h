/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A session is one proxied call: routed when its head arrives, forwarded
 * when its body is complete, relayed until the provider finishes, and
 * closed through session_close, which writes the call's one log line and
 * releases everything.
 */
#ifndef TOLLGATE_SESSION_H
#define TOLLGATE_SESSION_H

#include <stddef.h>

struct config;
struct cfgerrs;
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
void session_drained(struct session *);
size_t session_count(void);
void session_abort_all(void);
size_t session_stop_matching(const char *const *, const char *);
void session_apply_kills(const struct config *);
void session_extend_reservations(const struct config *);
void session_policy_setup(struct event_base *);
void session_policy_shutdown(void);

/* server.c */
struct config *server_config(void);
void server_set_config(struct config *);
void server_started(int, int);
unsigned long long server_generation(void);
int server_reload(const char *, struct cfgerrs *);

#endif
