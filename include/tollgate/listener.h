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

/*
 * What a listener does with requests. lo_head gets each request once its
 * head is read and returns the handler's state, or NULL after answering
 * (refusing) it itself; lo_start is called when the body is complete;
 * lo_client_gone when the connection ends first; lo_drained when output
 * written with conn_reply_* has been sent.
 */
struct listener_ops {
	void *(*lo_head)(struct conn *, struct http_request *);
	void (*lo_start)(void *);
	void (*lo_client_gone)(void *);
	void (*lo_drained)(void *);
};

struct listener;

/* listener.c */
struct listener *listener_new(struct event_base *, const char *, int,
    const struct listener_ops *, const char *);
void listener_set_limits(struct listener *, int, int);
void listener_set_fd_cap(int);
void listener_drain(struct listener *);
size_t listener_nconns(const struct listener *);
int listener_port(const struct listener *);
void listener_close_all(struct listener *);
void listener_free(struct listener *);
unsigned long long conn_id(const struct conn *);
size_t conn_output_pending(const struct conn *);

/* conn_reply.c */
void conn_reply_start(struct conn *, int, const struct hdrs *);
void conn_reply_data(struct conn *, const void *, size_t);
void conn_reply_end(struct conn *);
void conn_reply_abort(struct conn *);
void conn_reply_full(struct conn *, int, const struct hdrs *, const char *,
    const char *, size_t);

#endif
