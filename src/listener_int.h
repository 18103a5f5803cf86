/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What listener.c (connections, request heads and bodies) and
 * conn_reply.c (the responses written to them) share: a client
 * connection and the listener that accepted it. Nothing outside these two
 * files sees inside them.
 */
#ifndef TOLLGATE_LISTENER_INT_H
#define TOLLGATE_LISTENER_INT_H

#include <stddef.h>

#include <event2/util.h>

#include "tollgate/http.h"
#include "tollgate/listener.h"

struct bufferevent;
struct event;
struct event_base;
struct evconnlistener;

enum conn_state {
	CONN_IDLE, /* between requests, keep-alive timer running */
	CONN_HEAD, /* reading the request line and headers */
	CONN_BODY, /* reading a Content-Length body */
	CONN_BUSY, /* the request belongs to a session */
	CONN_FLUSH, /* response complete, waiting for it to drain */
	CONN_LINGER, /* write side shut, discarding input before close */
};

/* One client connection; owned by the listener's list. */
struct conn {
	unsigned long long co_id;
	struct bufferevent *co_bev;
	evutil_socket_t co_fd;
	enum conn_state co_state;
	struct event *co_timer; /* request, keep-alive or linger timer */
	struct event *co_defer; /* runs conn_flushed without a write */
	char co_peer[64];

	struct http_request *co_req; /* being read; owned until handed over */
	struct head_parser co_hp;
	size_t co_body_need; /* body bytes still to read */
	char *co_body; /* the body being read; owned until dispatch */
	size_t co_body_len; /* bytes in co_body */
	size_t co_body_cap; /* co_body's size, at most Content-Length */

	struct listener *co_ls; /* the listener that accepted it */
	void *co_session; /* the handler's state; set while CONN_BUSY */
	int co_chunked; /* response body is chunked */
	int co_reply_started;
	int co_close_after; /* close once the response has drained */
	int co_keepalive; /* the current request allows reuse */
	int co_must_linger; /* refused before the body was read */
	int co_minor; /* the current request's HTTP/1.x */

	struct conn *co_prev, *co_next;
};

/* One listening socket and its connections; owned by whoever made it. */
struct listener {
	const struct listener_ops *l_ops;
	const char *l_name; /* "proxy", "admin": for log lines */
	struct event_base *l_base;
	struct evconnlistener *l_evl;
	struct event *l_accept_timer;
	struct conn *l_conns;
	size_t l_nconns;
	int l_draining;
	int l_accept_paused;
};

#endif
