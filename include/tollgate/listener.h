/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The proxy listener: a strict HTTP/1.1 server on libevent bufferevents,
 * in the manner of relayd's relay_http.c. It reads one request at a time
 * per connection with hard limits on every buffer, refuses anything it
 * cannot frame unambiguously, and writes responses as they are produced
 * (chunked), with the output buffer's size exposed for backpressure.
 */
#ifndef TOLLGATE_LISTENER_H
#define TOLLGATE_LISTENER_H

#include <stddef.h>

#include "tollgate/http.h"

struct event_base;
struct evbuffer;
struct config;
struct conn;
struct session;

/* listener.c */
int listener_init(struct event_base *, const struct config *);
void listener_drain(void);
size_t listener_nconns(void);
void listener_close_all(void);
void listener_free(void);
unsigned long long conn_id(const struct conn *);
const char *conn_peer(const struct conn *);
void conn_reply_start(struct conn *, int, const struct hdrs *);
void conn_reply_data(struct conn *, const void *, size_t);
void conn_reply_end(struct conn *);
void conn_reply_abort(struct conn *);
void conn_reply_full(struct conn *, int, const struct hdrs *, const char *,
    const char *, size_t);
size_t conn_output_pending(const struct conn *);

#endif
