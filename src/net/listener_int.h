/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What listener.c (connections, request heads and bodies) and
 * conn_reply.c (the responses written to them) share: a client
 * connection and the listener that accepted it. Nothing outside these two
 * files sees inside them.
 */
#ifndef TOLLGATE_LISTENER_INT_H
#define TOLLGATE_LISTENER_INT_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

#include "tollgate/buf.h"
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

/*
 * The queues of connections that may be closed to admit a new one when
 * every slot is taken, in the order they are taken from; within a queue,
 * the connection that entered it first goes first. A connection doing
 * work (CONN_BUSY, CONN_FLUSH) is in none.
 */
enum shed_queue {
	SHEDQ_DONE, /* lingering, or over the per-client limit */
	SHEDQ_HEAD, /* no complete request head yet */
	SHEDQ_IDLE, /* keep-alive, between requests */
	SHEDQ_BODY, /* a request body still arriving */
	SHEDQ_N,
	SHEDQ_NONE = -1,
};

/* The connections open from one client address; owned by the listener. */
struct peer {
	struct peer *pe_next; /* hash chain */
	uint64_t pe_hash;
	int pe_family; /* AF_INET (IPv4-mapped IPv6 too) or AF_INET6 */
	unsigned char pe_addr[16];
	size_t pe_nconns;
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
	struct buf co_body; /* the body being read, capped at Content-Length;
			       owned until dispatch */

	struct listener *co_ls; /* the listener that accepted it */
	struct peer *co_peer_ent; /* its address's count; borrowed */
	int co_over_limit; /* over max_connections_per_client: 429 */
	unsigned long co_nreq; /* requests begun on this connection */
	long long co_req_t0_us; /* accept, or the request's first byte */
	int co_shedq; /* enum shed_queue, or SHEDQ_NONE */
	TAILQ_ENTRY(conn) co_shed_entry;
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
	int l_accept_backoff; /* accept failed: waiting out the second */
	long long l_shed_warned_us; /* last "slots are taken" warning */
	int l_max_conns; /* 0: limits.max_connections (and the fd cap) */
	int l_per_client; /* -1: limits.max_connections_per_client */
	TAILQ_HEAD(, conn) l_shed[SHEDQ_N];
	struct peer **l_peers; /* hash buckets, a power of two */
	size_t l_npeer_buckets;
	size_t l_npeers;
	uint64_t l_peer_seed;
};

/* listener.c */
void conn_set_state(struct conn *, enum conn_state);

#endif
