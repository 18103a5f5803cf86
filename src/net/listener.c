/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The proxy's HTTP/1.1 front end. tollgate reads requests itself on top of
 * libevent bufferevents instead of using evhttp: evhttp 2.1.12 (Debian 12)
 * has no header-count limit, merges chunked trailers into the request
 * headers and accepts ambiguous Transfer-Encoding framing, and it answers
 * limit violations with HTML pages no SDK can parse. The head parser
 * (http_head_parse in http.c) is strict and small:
 *
 *  - lines end in CRLF only; a bare CR or LF, NUL, obs-fold, whitespace
 *    before a colon or a non-token header name is a 400;
 *  - the request line and headers together are capped (431), and so is the
 *    header count (431);
 *  - a request with Transfer-Encoding is refused (411 without a body
 *    length, and the connection is closed), so chunked smuggling and
 *    trailer injection cannot happen; Content-Length must be a single
 *    plain decimal number, and a body over the limit is refused (413)
 *    before any of it is read;
 *  - a request's head must arrive within header_timeout, and the whole
 *    request within request_timeout, of the connection opening (its
 *    first request) or of the request's first byte (slowloris);
 *  - one request is served at a time per connection; pipelined bytes wait
 *    in the input buffer, which is capped.
 *
 * Slots. At most max_connections are open at once (fewer when the open
 * files limit cannot hold that many: listener_set_fd_cap). When every slot
 * is taken, a new connection is admitted by closing one that is doing
 * nothing, from the shed queues (listener_int.h): a lingering or
 * over-the-limit one first, then the oldest one still without a complete
 * head (once it has had a second), then the longest idle keep-alive one,
 * then the oldest one still sending a body. Only when every connection is
 * working on a call does a new one wait in the kernel's accept queue. One
 * client address may hold at most max_connections_per_client; a
 * connection beyond that is answered 429 once its head is read.
 *
 * A body is read straight from the socket into one buffer, never larger
 * than its Content-Length (conn_read_body), not through the bufferevent:
 * libevent 2.1 reads 4 KiB per loop turn, which made a 2 MiB body cost 512
 * turns and a copy to make it contiguous for the session.
 *
 * Responses are written by conn_reply.c as they are produced. TCP_NODELAY
 * is set on every client socket so small SSE events are not held back by
 * Nagle. The output buffer's length is exposed so the session can pause
 * the upstream when a client reads slowly; the write callback fires when
 * it has drained.
 *
 * A connection ends in one place, conn_free, which tells an attached
 * session that its client is gone. A connection that must close after a
 * response shuts down its write side and discards input for a moment
 * first (lingering close), so a client still sending a refused body reads
 * the refusal instead of a reset.
 */
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "tollgate/buf.h"
#include "tollgate/config.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/reply.h"
#include "tollgate/route.h"
#include "tollgate/util.h"

#include "listener_int.h"

#define LINGER_MS 2000
#define PIPELINE_INPUT_MAX (64 * 1024)
/*
 * An SDK's request head follows its connection within milliseconds: a
 * connection still without one after this long is shed before an idle
 * keep-alive connection is.
 */
#define SHED_HEAD_GRACE_US (1000 * 1000LL)
#define SHED_WARN_US (60 * 1000 * 1000LL) /* one warning a minute */
#define PEER_BUCKETS_MIN 64

/* Connection numbers are unique across listeners, for the logs. */
static unsigned long long ls_next_id;
/* Client connections the open files limit leaves room for. */
static int ls_fd_cap = INT_MAX;

static void conn_read_cb(struct bufferevent *, void *);
static void conn_write_cb(struct bufferevent *, void *);
static void conn_event_cb(struct bufferevent *, short, void *);
static void conn_process(struct conn *);
static void conn_free(struct conn *, const char *);
static void accept_pause(struct listener *);
static void accept_resume(struct listener *);

static void
set_timer(struct conn *co, long ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(co->co_timer, &tv);
}

/* The connection's id, for log lines. */
unsigned long long
conn_id(const struct conn *co)
{
	return (co->co_id);
}

/* Bytes written to the client but not yet sent. */
size_t
conn_output_pending(const struct conn *co)
{
	return (evbuffer_get_length(bufferevent_get_output(co->co_bev)));
}

static void
conn_unlink(struct conn *co)
{
	if (co->co_prev != NULL)
		co->co_prev->co_next = co->co_next;
	else
		co->co_ls->l_conns = co->co_next;
	if (co->co_next != NULL)
		co->co_next->co_prev = co->co_prev;
	co->co_prev = co->co_next = NULL;
}

/* The most connections l keeps open at once. */
static size_t
listener_max(const struct listener *l)
{
	int n;

	if (l->l_max_conns > 0)
		return ((size_t)l->l_max_conns);
	n = config_current()->cf_max_connections;
	if (n > ls_fd_cap)
		n = ls_fd_cap;
	return ((size_t)(n > 0 ? n : 1));
}

/* The most connections one client address may hold on l; 0: no limit. */
static int
listener_per_client(const struct listener *l)
{
	if (l->l_per_client >= 0)
		return (l->l_per_client);
	return (config_current()->cf_max_connections_per_client);
}

/* Time for a request's head: header_timeout, or less if the whole
 * request has less. */
static long
head_timeout_ms(const struct config *cf)
{
	return (cf->cf_header_timeout_ms < cf->cf_request_timeout_ms
		? cf->cf_header_timeout_ms
		: cf->cf_request_timeout_ms);
}

/* The shed queue a connection in its current state belongs in. */
static int
shed_queue_of(const struct conn *co)
{
	switch (co->co_state) {
	case CONN_IDLE:
		if (co->co_over_limit)
			return (SHEDQ_DONE);
		return (co->co_nreq == 0 ? SHEDQ_HEAD : SHEDQ_IDLE);
	case CONN_HEAD:
		return (co->co_over_limit ? SHEDQ_DONE : SHEDQ_HEAD);
	case CONN_BODY:
		return (SHEDQ_BODY);
	case CONN_LINGER:
		return (SHEDQ_DONE);
	default:
		return (SHEDQ_NONE);
	}
}

/*
 * Put co in the queue its state belongs in. A connection that stays in
 * its queue keeps its place, so each queue stays ordered by how long its
 * connections have been there.
 */
static void
shed_update(struct conn *co)
{
	struct listener *l = co->co_ls;
	int q = shed_queue_of(co);

	if (q == co->co_shedq)
		return;
	if (co->co_shedq != SHEDQ_NONE)
		TAILQ_REMOVE(&l->l_shed[co->co_shedq], co, co_shed_entry);
	co->co_shedq = q;
	if (q == SHEDQ_NONE) {
		/* Maybe the last one doing nothing: new ones must wait. */
		accept_pause(l);
		return;
	}
	TAILQ_INSERT_TAIL(&l->l_shed[q], co, co_shed_entry);
	/* Full, but there is one to shed now: a new one can come in. */
	accept_resume(l);
}

/* Is any connection of l doing nothing? */
static int
shed_any(const struct listener *l)
{
	int q;

	for (q = 0; q < SHEDQ_N; q++)
		if (!TAILQ_EMPTY(&l->l_shed[q]))
			return (1);
	return (0);
}

/* The connection to close to admit a new one, or NULL if all work. */
static struct conn *
shed_pick(struct listener *l)
{
	struct conn *head, *co;

	if ((co = TAILQ_FIRST(&l->l_shed[SHEDQ_DONE])) != NULL)
		return (co);
	head = TAILQ_FIRST(&l->l_shed[SHEDQ_HEAD]);
	if (head != NULL &&
	    monotime_us() - head->co_req_t0_us >= SHED_HEAD_GRACE_US)
		return (head);
	if ((co = TAILQ_FIRST(&l->l_shed[SHEDQ_IDLE])) != NULL)
		return (co);
	if (head != NULL)
		return (head);
	return (TAILQ_FIRST(&l->l_shed[SHEDQ_BODY]));
}

/* Move co to state st, and to the shed queue that state belongs in. */
void
conn_set_state(struct conn *co, enum conn_state st)
{
	co->co_state = st;
	shed_update(co);
}

/* sa's address as a key: IPv4-mapped IPv6 addresses count as IPv4. */
static void
peer_key(const struct sockaddr *sa, int *family, unsigned char addr[16])
{
	const struct in6_addr *a6;

	memset(addr, 0, 16);
	*family = 0;
	if (sa->sa_family == AF_INET) {
		*family = AF_INET;
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			*family = AF_INET;
			memcpy(addr, &a6->s6_addr[12], 4);
		} else {
			*family = AF_INET6;
			memcpy(addr, a6, 16);
		}
	}
}

/* Seeded: clients choose their addresses (an IPv6 /64 holds many). */
static uint64_t
peer_hash(const struct listener *l, int family, const unsigned char *addr)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ l->l_peer_seed;
	size_t i;

	h ^= (uint64_t)family;
	h *= 0x100000001b3ULL;
	for (i = 0; i < 16; i++) {
		h ^= addr[i];
		h *= 0x100000001b3ULL;
	}
	return (h);
}

/* Double the buckets once there are as many addresses as buckets. */
static void
peer_grow(struct listener *l)
{
	struct peer **nb, *pe, *next;
	size_t n, i;

	if (l->l_peers != NULL && l->l_npeers < l->l_npeer_buckets)
		return;
	n = l->l_peers == NULL ? PEER_BUCKETS_MIN : l->l_npeer_buckets * 2;
	nb = xcalloc(n, sizeof(*nb));
	for (i = 0; i < l->l_npeer_buckets; i++) {
		for (pe = l->l_peers[i]; pe != NULL; pe = next) {
			next = pe->pe_next;
			pe->pe_next = nb[pe->pe_hash & (n - 1)];
			nb[pe->pe_hash & (n - 1)] = pe;
		}
	}
	free(l->l_peers);
	l->l_peers = nb;
	l->l_npeer_buckets = n;
}

/* Count one more connection from sa's address; its entry. */
static struct peer *
peer_ref(struct listener *l, const struct sockaddr *sa)
{
	struct peer *pe;
	unsigned char addr[16];
	uint64_t h;
	int family;

	peer_key(sa, &family, addr);
	peer_grow(l);
	h = peer_hash(l, family, addr);
	for (pe = l->l_peers[h & (l->l_npeer_buckets - 1)]; pe != NULL;
	     pe = pe->pe_next) {
		if (pe->pe_hash == h && pe->pe_family == family &&
		    memcmp(pe->pe_addr, addr, 16) == 0) {
			pe->pe_nconns++;
			return (pe);
		}
	}
	pe = xcalloc(1, sizeof(*pe));
	pe->pe_hash = h;
	pe->pe_family = family;
	memcpy(pe->pe_addr, addr, 16);
	pe->pe_nconns = 1;
	pe->pe_next = l->l_peers[h & (l->l_npeer_buckets - 1)];
	l->l_peers[h & (l->l_npeer_buckets - 1)] = pe;
	l->l_npeers++;
	return (pe);
}

/* How many connections sa's address holds now. */
static size_t
peer_count(struct listener *l, const struct sockaddr *sa)
{
	struct peer *pe;
	unsigned char addr[16];
	uint64_t h;
	int family;

	if (l->l_npeer_buckets == 0)
		return (0);
	peer_key(sa, &family, addr);
	h = peer_hash(l, family, addr);
	for (pe = l->l_peers[h & (l->l_npeer_buckets - 1)]; pe != NULL;
	     pe = pe->pe_next) {
		if (pe->pe_hash == h && pe->pe_family == family &&
		    memcmp(pe->pe_addr, addr, 16) == 0)
			return (pe->pe_nconns);
	}
	return (0);
}

/* One connection fewer from pe's address; the last one frees it. */
static void
peer_unref(struct listener *l, struct peer *pe)
{
	struct peer **pp;

	if (--pe->pe_nconns > 0)
		return;
	pp = &l->l_peers[pe->pe_hash & (l->l_npeer_buckets - 1)];
	while (*pp != pe)
		pp = &(*pp)->pe_next;
	*pp = pe->pe_next;
	l->l_npeers--;
	free(pe);
}

/*
 * Stop accepting while every slot is taken by a connection at work: a
 * new one would have nothing to displace, so it waits in the kernel's
 * accept queue instead. Accepting is on exactly while a new connection
 * would find a free slot or one to shed.
 */
static void
accept_pause(struct listener *l)
{
	if (!l->l_accept_paused && l->l_evl != NULL &&
	    l->l_nconns >= listener_max(l) && !shed_any(l)) {
		evconnlistener_disable(l->l_evl);
		l->l_accept_paused = 1;
	}
}

static void
accept_resume(struct listener *l)
{
	if (l->l_accept_paused && !l->l_accept_backoff && !l->l_draining &&
	    l->l_evl != NULL &&
	    (l->l_nconns < listener_max(l) || shed_any(l))) {
		evconnlistener_enable(l->l_evl);
		l->l_accept_paused = 0;
	}
}

/*
 * The single end of a connection. An attached session is told first, so it
 * can abort its upstream transfer and log the call.
 */
static void
conn_free(struct conn *co, const char *reason)
{
	struct listener *l = co->co_ls;
	void *h;

	if ((h = co->co_session) != NULL) {
		co->co_session = NULL;
		l->l_ops->lo_client_gone(h);
	}
	log_debug(
	    "%s: %s conn %llu: %s", __func__, l->l_name, co->co_id, reason);
	conn_unlink(co);
	if (co->co_shedq != SHEDQ_NONE)
		TAILQ_REMOVE(&l->l_shed[co->co_shedq], co, co_shed_entry);
	peer_unref(l, co->co_peer_ent);
	l->l_nconns--;
	buf_free(&co->co_body);
	http_request_free(co->co_req);
	event_free(co->co_timer);
	event_free(co->co_defer);
	bufferevent_free(co->co_bev);
	free(co);
	accept_resume(l);
}

/* Shut the write side and discard input for a while, then close. */
static void
conn_linger(struct conn *co)
{
	conn_set_state(co, CONN_LINGER);
	shutdown(co->co_fd, SHUT_WR);
	evbuffer_drain(bufferevent_get_input(co->co_bev),
	    evbuffer_get_length(bufferevent_get_input(co->co_bev)));
	bufferevent_enable(co->co_bev, EV_READ);
	set_timer(co, LINGER_MS);
}

/*
 * Refuse a request before a session exists, in the guessed shape, with
 * hs (may be NULL) among the response headers.
 */
static void
conn_refuse(struct conn *co, int status, const char *code, const char *msg,
    const struct hdrs *hs)
{
	enum api_family fam = FAMILY_OPENAI;
	char *body, path[128];

	if (co->co_req != NULL && co->co_req->hr_target != NULL)
		fam = route_guess_family(co->co_req->hr_target);
	body = reply_error_body(fam, status, code, msg, NULL);
	if (co->co_req != NULL && co->co_req->hr_target != NULL) {
		/* Never log a query string: it may hold ?key=. */
		size_t n = strcspn(co->co_req->hr_target, "?");

		log_escape(path, sizeof(path), co->co_req->hr_target, n);
	} else
		snprintf(path, sizeof(path), "-");
	log_info("conn %llu: %s %s refused status=%d reason=%s peer=%s",
	    co->co_id,
	    co->co_req != NULL && co->co_req->hr_method != NULL
		? co->co_req->hr_method
		: "-",
	    path, status, code, co->co_peer);
	metrics_refusal(code);
	co->co_close_after = 1;
	co->co_must_linger = 1;
	conn_reply_full(co, status, hs, "application/json", body, strlen(body));
	free(body);
}

/* The client already holds max_connections_per_client connections. */
static void
conn_refuse_over_limit(struct conn *co)
{
	struct hdrs hs;
	char msg[160];

	memset(&hs, 0, sizeof(hs));
	hdrs_add(&hs, "retry-after", 11, "1", 1);
	snprintf(msg, sizeof(msg),
	    "too many connections from this client (at most %d)",
	    listener_per_client(co->co_ls));
	metrics_conn_closed("client_limit");
	conn_refuse(co, 429, "too_many_connections", msg, &hs);
	hdrs_clear(&hs);
}

/* Hand a complete request to its session. */
static void
conn_dispatch(struct conn *co)
{
	void *h = co->co_session;

	evtimer_del(co->co_timer);
	conn_set_state(co, CONN_BUSY);
	co->co_req = NULL; /* the handler owns it now */
	co->co_ls->l_ops->lo_start(h);
	/* co may have changed state; it is still alive. */
}

static void
body_free_cb(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)(uintptr_t)data);
}

/*
 * Move body bytes into co_body: first what the bufferevent has already
 * read, then straight from the socket, as much as the kernel holds, in as
 * few calls as it allows. Only what FIONREAD reports is read, so the end
 * of the stream and errors are left for the bufferevent to report, and
 * bytes after the body (a pipelined request) stay in the socket. co_body
 * grows with what has arrived, to at least twice that and never past
 * Content-Length, its cap.
 */
static void
conn_read_body(struct conn *co)
{
	struct evbuffer *in = bufferevent_get_input(co->co_bev);
	size_t n, want, ask;
	ssize_t r;
	char *dst;
	int avail;

	while (co->co_body_need > 0) {
		if ((n = evbuffer_get_length(in)) == 0) {
			if (ioctl(co->co_fd, FIONREAD, &avail) == -1 ||
			    avail <= 0)
				break;
			n = (size_t)avail;
		}
		if (n > co->co_body_need)
			n = co->co_body_need;
		ask = n;
		if (n > buf_room(&co->co_body)) {
			/* Room for as much again: a 2 MiB body arriving in
			 * two halves is not copied when the second comes. */
			want = buf_len(&co->co_body) + n;
			ask = want * 2;
			if (ask > want + co->co_body_need - n)
				ask = want + co->co_body_need - n;
			ask -= buf_len(&co->co_body);
		}
		/* Cannot fail: the cap is what has come plus what is due. */
		if ((dst = buf_reserve(&co->co_body, ask)) == NULL)
			fatalx("%s: body over its Content-Length", __func__);
		if (evbuffer_get_length(in) > 0)
			r = evbuffer_remove(in, dst, n);
		else
			r = recv(co->co_fd, dst, n, 0);
		if (r <= 0)
			break;
		buf_commit(&co->co_body, (size_t)r);
		co->co_body_need -= (size_t)r;
	}
}

/* Drive the connection's state machine with what is in the input. */
static void
conn_process(struct conn *co)
{
	struct evbuffer *in = bufferevent_get_input(co->co_bev);
	const struct config *cf = config_current();
	struct head_limits hl;
	long left;
	size_t len;
	char *body;
	void *h;

	switch (co->co_state) {
	case CONN_IDLE:
		if (evbuffer_get_length(in) == 0)
			return;
		/* A connection's first request has had its time since the
		 * accept; a later one's starts with its first byte. */
		if (co->co_nreq++ > 0) {
			co->co_req_t0_us = monotime_us();
			set_timer(co, head_timeout_ms(cf));
		}
		conn_set_state(co, CONN_HEAD);
		co->co_req = xcalloc(1, sizeof(*co->co_req));
		memset(&co->co_hp, 0, sizeof(co->co_hp));
		co->co_reply_started = 0;
		co->co_close_after = 0;
		co->co_must_linger = 0;
		co->co_chunked = 0;
		co->co_keepalive = 0;
		co->co_minor = 0;
		/* FALLTHROUGH */
	case CONN_HEAD:
		hl.hl_max_header_bytes = cf->cf_max_header_bytes;
		hl.hl_max_headers = (size_t)cf->cf_max_headers;
		hl.hl_max_body_bytes = cf->cf_max_body_bytes;
		switch (http_head_parse(&co->co_hp, in, &hl, co->co_req)) {
		case HEAD_NEED_MORE:
			return;
		case HEAD_ERROR:
			conn_refuse(co, co->co_hp.hp_status, co->co_hp.hp_code,
			    co->co_hp.hp_msg, NULL);
			return;
		case HEAD_DONE:
			break;
		}
		if (co->co_over_limit) {
			conn_refuse_over_limit(co);
			return;
		}
		co->co_keepalive = co->co_req->hr_keepalive;
		co->co_minor = co->co_req->hr_minor;
		if ((h = co->co_ls->l_ops->lo_head(co, co->co_req)) == NULL)
			return; /* refused and answered */
		co->co_session = h;
		co->co_body_need = co->co_req->hr_content_length;
		buf_init(&co->co_body, co->co_body_need, 0, 0);
		co->co_req->hr_body = evbuffer_new();
		if (co->co_body_need == 0) {
			conn_dispatch(co);
			return;
		}
		conn_set_state(co, CONN_BODY);
		/* The rest of request_timeout, counted from the start. */
		left = cf->cf_request_timeout_ms -
		    (long)((monotime_us() - co->co_req_t0_us) / 1000);
		set_timer(co, left > 0 ? left : 1);
		if (co->co_req->hr_expect_continue)
			evbuffer_add(bufferevent_get_output(co->co_bev),
			    "HTTP/1.1 100 Continue\r\n\r\n", 25);
		/* FALLTHROUGH */
	case CONN_BODY:
		conn_read_body(co);
		if (co->co_body_need > 0)
			return;
		/* The session reads the body as one contiguous piece. */
		body = buf_take(&co->co_body, &len);
		if (evbuffer_add_reference(co->co_req->hr_body, body, len,
			body_free_cb, NULL) == -1)
			fatalx("%s: evbuffer_add_reference", __func__);
		conn_dispatch(co);
		return;
	case CONN_BUSY:
	case CONN_FLUSH:
		/* Pipelined bytes wait; stop reading if they pile up. */
		if (evbuffer_get_length(in) > PIPELINE_INPUT_MAX)
			bufferevent_disable(co->co_bev, EV_READ);
		return;
	case CONN_LINGER:
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
}

/* The response has drained: next request, or close. */
static void
conn_flushed(struct conn *co)
{
	const struct config *cf = config_current();

	if (co->co_close_after || co->co_ls->l_draining) {
		/* Linger only when the client may still be sending a body
		 * tollgate refused to read; otherwise close now. */
		if (co->co_must_linger)
			conn_linger(co);
		else
			conn_free(co, "closed after response");
		return;
	}
	conn_set_state(co, CONN_IDLE);
	http_request_free(co->co_req);
	co->co_req = NULL;
	bufferevent_enable(co->co_bev, EV_READ);
	set_timer(co, cf->cf_keepalive_timeout_ms);
	conn_process(co);
}

static void
conn_defer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *co = arg;

	(void)fd;
	(void)ev;
	if (co->co_state == CONN_FLUSH && conn_output_pending(co) == 0)
		conn_flushed(co);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_process(arg);
}

/* The output buffer has drained (the write low watermark is 0). */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *co = arg;

	(void)bev;
	switch (co->co_state) {
	case CONN_BUSY:
		if (co->co_session != NULL)
			co->co_ls->l_ops->lo_drained(co->co_session);
		break;
	case CONN_FLUSH:
		conn_flushed(co);
		break;
	default:
		break;
	}
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *co = arg;

	(void)bev;
	if (what & BEV_EVENT_EOF)
		conn_free(co, "client closed");
	else if (what & BEV_EVENT_ERROR)
		conn_free(co, "client error");
	else if (what & BEV_EVENT_TIMEOUT)
		conn_free(co, "client stopped reading");
}

static void
conn_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *co = arg;
	const struct config *cf = config_current();
	void *h;

	(void)fd;
	(void)ev;
	switch (co->co_state) {
	case CONN_HEAD:
		metrics_conn_closed("header_timeout");
		if (cf->cf_header_timeout_ms <= cf->cf_request_timeout_ms)
			conn_refuse(co, 408, "header_timeout",
			    "the request head did not arrive in time", NULL);
		else
			conn_refuse(co, 408, "request_timeout",
			    "the request did not arrive in time", NULL);
		break;
	case CONN_BODY:
		/* The session exists but never started. */
		h = co->co_session;
		co->co_session = NULL;
		if (h != NULL)
			co->co_ls->l_ops->lo_client_gone(h);
		conn_refuse(co, 408, "request_timeout",
		    "the request did not arrive in time", NULL);
		break;
	case CONN_IDLE:
		if (co->co_nreq == 0) {
			/* Connected, then sent nothing: nobody to answer. */
			metrics_conn_closed("header_timeout");
			conn_free(co, "no request within header_timeout");
		} else
			conn_free(co, "keep-alive timeout");
		break;
	case CONN_LINGER:
		conn_free(co, "linger done");
		break;
	default:
		break;
	}
}

static void
accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct listener *l = arg;
	const struct config *cf = config_current();
	struct conn *co, *victim;
	struct timeval wtv;
	char host[INET6_ADDRSTRLEN] = "?";
	int one = 1, port = 0, limit;
	long long now;

	(void)evl;
	(void)salen;
	if (l->l_draining) {
		close(fd);
		return;
	}
	/*
	 * Every slot is taken: close one doing nothing to make room, unless
	 * the newcomer is over its address's limit and would only be
	 * answered 429; it never displaces a connection in good standing.
	 */
	now = monotime_us();
	limit = listener_per_client(l);
	if (l->l_nconns >= listener_max(l) && limit > 0 &&
	    peer_count(l, sa) >= (size_t)limit &&
	    TAILQ_FIRST(&l->l_shed[SHEDQ_DONE]) == NULL) {
		metrics_conn_closed("client_limit");
		close(fd);
		return;
	}
	if (l->l_nconns >= listener_max(l) && (victim = shed_pick(l)) != NULL) {
		if (now - l->l_shed_warned_us >= SHED_WARN_US ||
		    l->l_shed_warned_us == 0) {
			log_warnx("%s: all %zu connection slots are taken; "
				  "closing idle ones to admit new ones",
			    l->l_name, l->l_nconns);
			l->l_shed_warned_us = now;
		}
		metrics_conn_closed("shed");
		conn_free(victim, "shed to admit a new connection");
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	co = xcalloc(1, sizeof(*co));
	co->co_id = ++ls_next_id;
	co->co_fd = fd;
	co->co_ls = l;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
	}
	snprintf(co->co_peer, sizeof(co->co_peer), "%s:%d", host, port);
	co->co_shedq = SHEDQ_NONE;
	co->co_req_t0_us = now;
	co->co_peer_ent = peer_ref(l, sa);
	if (limit > 0 && co->co_peer_ent->pe_nconns > (size_t)limit)
		co->co_over_limit = 1;
	co->co_bev =
	    bufferevent_socket_new(l->l_base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (co->co_bev == NULL)
		fatalx("%s: bufferevent_socket_new", __func__);
	co->co_timer = evtimer_new(l->l_base, conn_timer_cb, co);
	co->co_defer = event_new(l->l_base, -1, 0, conn_defer_cb, co);
	bufferevent_setcb(
	    co->co_bev, conn_read_cb, conn_write_cb, conn_event_cb, co);
	bufferevent_setwatermark(co->co_bev, EV_WRITE, 0, 0);
	/*
	 * A client that takes none of the bytes waiting for it for this long
	 * is gone: otherwise a paused stream would hold its session, its
	 * upstream connection and its reservation for ever.
	 */
	wtv.tv_sec = cf->cf_client_write_timeout_ms / 1000;
	wtv.tv_usec = (cf->cf_client_write_timeout_ms % 1000) * 1000;
	bufferevent_set_timeouts(co->co_bev, NULL, &wtv);
	bufferevent_enable(co->co_bev, EV_READ | EV_WRITE);
	/* Waiting for its first request is the header phase already. */
	set_timer(co, head_timeout_ms(cf));

	co->co_next = l->l_conns;
	if (l->l_conns != NULL)
		l->l_conns->co_prev = co;
	l->l_conns = co;
	l->l_nconns++;
	conn_set_state(co, CONN_IDLE);
	accept_pause(l);
}

static void
accept_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)ev;
	l->l_accept_backoff = 0;
	accept_resume(l);
}

/* accept() failed (EMFILE, ENFILE...): back off for a second (tmux). */
static void
accept_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *l = arg;
	struct timeval tv = {1, 0};

	log_warn("%s: %s: accept", __func__, l->l_name);
	evconnlistener_disable(evl);
	l->l_accept_paused = 1;
	l->l_accept_backoff = 1;
	evtimer_add(l->l_accept_timer, &tv);
}

/*
 * Bind a listener on host:port whose requests go to ops, and log the
 * address it got as "NAME listening on ADDR". Returns NULL on failure.
 */
struct listener *
listener_new(struct event_base *base, const char *host, int port,
    const struct listener_ops *ops, const char *name)
{
	struct listener *l;
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t sslen;
	char addr[INET6_ADDRSTRLEN];
	const char *h = host;
	int q;

	memset(&ss, 0, sizeof(ss));
	if (strcmp(h, "localhost") == 0)
		h = "127.0.0.1";
	if (inet_pton(AF_INET, h, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		sslen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, h, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		sslen = sizeof(*sin6);
	} else {
		log_warnx("%s: bad listen address %s", name, h);
		return (NULL);
	}
	l = xcalloc(1, sizeof(*l));
	l->l_ops = ops;
	l->l_name = name;
	l->l_base = base;
	l->l_per_client = -1;
	for (q = 0; q < SHEDQ_N; q++)
		TAILQ_INIT(&l->l_shed[q]);
	if (getrandom(&l->l_peer_seed, sizeof(l->l_peer_seed), GRND_NONBLOCK) !=
	    sizeof(l->l_peer_seed))
		l->l_peer_seed = (uint64_t)monotime_us();
	l->l_evl = evconnlistener_new_bind(base, accept_cb, l,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    1024, (struct sockaddr *)&ss, (int)sslen);
	if (l->l_evl == NULL) {
		log_warn("%s: cannot listen on %s:%d", name, host, port);
		free(l);
		return (NULL);
	}
	evconnlistener_set_error_cb(l->l_evl, accept_error_cb);
	l->l_accept_timer = evtimer_new(base, accept_timer_cb, l);

	sslen = sizeof(ss);
	getsockname(
	    evconnlistener_get_fd(l->l_evl), (struct sockaddr *)&ss, &sslen);
	if (ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
		log_info("%s listening on [%s]:%d", name, addr,
		    ntohs(sin6->sin6_port));
	} else {
		inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
		log_info(
		    "%s listening on %s:%d", name, addr, ntohs(sin->sin_port));
	}
	return (l);
}

/*
 * Stop accepting and let connections finish: idle ones close now, busy
 * ones close after their current response.
 */
void
listener_drain(struct listener *l)
{
	struct conn *co, *next;

	if (l == NULL)
		return;
	l->l_draining = 1;
	evconnlistener_disable(l->l_evl);
	for (co = l->l_conns; co != NULL; co = next) {
		next = co->co_next;
		if (co->co_state == CONN_IDLE)
			conn_free(co, "draining");
	}
}

/* Open client connections. */
size_t
listener_nconns(const struct listener *l)
{
	return (l != NULL ? l->l_nconns : 0);
}

/* The port the listener is bound to (the one picked when 0 was asked). */
int
listener_port(const struct listener *l)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (getsockname(evconnlistener_get_fd(l->l_evl), (struct sockaddr *)&ss,
		&sslen) == -1)
		return (-1);
	if (ss.ss_family == AF_INET6)
		return (ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	return (ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

/* Close every connection now (end of a drain that ran out of time). */
void
listener_close_all(struct listener *l)
{
	if (l == NULL)
		return;
	while (l->l_conns != NULL)
		conn_free(l->l_conns, "shutting down");
}

/* Close every connection and the listening socket, and free l. */
void
listener_free(struct listener *l)
{
	if (l == NULL)
		return;
	listener_close_all(l);
	evconnlistener_free(l->l_evl);
	event_free(l->l_accept_timer);
	free(l->l_peers); /* every entry went with its connections */
	free(l);
}

/*
 * Give l limits of its own instead of limits:'s (the admin listener):
 * at most max connections (0: max_connections), and per_client from one
 * address (0: no limit; -1: max_connections_per_client).
 */
void
listener_set_limits(struct listener *l, int max, int per_client)
{
	l->l_max_conns = max;
	l->l_per_client = per_client;
}

/*
 * Hold listeners that follow limits.max_connections to at most n client
 * connections, what the open files limit leaves room for (fdlimit.c).
 */
void
listener_set_fd_cap(int n)
{
	ls_fd_cap = n > 0 ? n : INT_MAX;
}
