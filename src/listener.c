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
 *  - a whole request must arrive within request_timeout (slowloris);
 *  - one request is served at a time per connection; pipelined bytes wait
 *    in the input buffer, which is capped.
 *
 * A body is read straight from the socket into one buffer, never larger
 * than its Content-Length (conn_read_body), not through the bufferevent:
 * libevent 2.1 reads 4 KiB per loop turn, which made a 2 MiB body cost 512
 * turns and a copy to make it contiguous for the session.
 *
 * Responses are written as they are produced: chunked to HTTP/1.1
 * clients, close-delimited to HTTP/1.0 ones. TCP_NODELAY is set on every
 * client socket so small SSE events are not held back by Nagle. The output
 * buffer's length is exposed so the session can pause the upstream when a
 * client reads slowly; the write callback fires when it has drained.
 *
 * A connection ends in one place, conn_free, which tells an attached
 * session that its client is gone. A connection that must close after a
 * response shuts down its write side and discards input for a moment
 * first (lingering close), so a client still sending a refused body reads
 * the refusal instead of a reset.
 */
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
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

#include "tollgate/config.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/reply.h"
#include "tollgate/route.h"
#include "tollgate/session.h"
#include "tollgate/util.h"

#define LINGER_MS 2000
#define PIPELINE_INPUT_MAX (64 * 1024)

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

/* Connection numbers are unique across listeners, for the logs. */
static unsigned long long ls_next_id;

static void conn_read_cb(struct bufferevent *, void *);
static void conn_write_cb(struct bufferevent *, void *);
static void conn_event_cb(struct bufferevent *, short, void *);
static void conn_process(struct conn *);
static void conn_free(struct conn *, const char *);

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

static void
accept_resume(struct listener *l)
{
	const struct config *cf = server_config();

	if (l->l_accept_paused && !l->l_draining && l->l_evl != NULL &&
	    l->l_nconns < (size_t)cf->cf_max_connections) {
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
	l->l_nconns--;
	free(co->co_body);
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
	co->co_state = CONN_LINGER;
	shutdown(co->co_fd, SHUT_WR);
	evbuffer_drain(bufferevent_get_input(co->co_bev),
	    evbuffer_get_length(bufferevent_get_input(co->co_bev)));
	bufferevent_enable(co->co_bev, EV_READ);
	set_timer(co, LINGER_MS);
}

/*
 * Send iov to the client now, not on the loop's next turn, which may come
 * only after the rest of this call's work (its settlement, its log line)
 * or other clients' events. When nothing is queued, one sendmsg(2) sends
 * it and only what the socket does not take is queued, so a stream's
 * events cost no output buffer and no write event. When something is
 * queued already, iov goes behind it and the bufferevent writes it (a
 * bufferevent's output cannot be written from outside its callback).
 * Errors are left to the bufferevent, which meets them when it writes
 * what is left.
 */
static void
conn_send(struct conn *co, struct iovec *iov, int n)
{
	struct evbuffer *out = bufferevent_get_output(co->co_bev);
	struct msghdr msg;
	ssize_t w = 0;
	size_t done = 0;
	int i;

	if (evbuffer_get_length(out) == 0) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)n;
		while ((w = sendmsg(co->co_fd, &msg, MSG_NOSIGNAL)) == -1 &&
		    errno == EINTR)
			;
		if (w > 0)
			done = (size_t)w;
	}
	for (i = 0; i < n; i++) {
		if (done >= iov[i].iov_len) {
			done -= iov[i].iov_len;
			continue;
		}
		evbuffer_add(out, (const char *)iov[i].iov_base + done,
		    iov[i].iov_len - done);
		done = 0;
	}
}

static char *
put(char *p, const char *s, size_t len)
{
	memcpy(p, s, len);
	return (p + len);
}

/*
 * Queue the status line and headers. The head is measured first and
 * copied into one reserved piece of the output: formatting it line by
 * line cost a printf per header on every call.
 */
static void
write_head(
    struct conn *co, int status, const struct hdrs *hs, const char *extra)
{
	struct evbuffer *out = bufferevent_get_output(co->co_bev);
	struct evbuffer_iovec vec;
	const char *reason = http_reason(status);
	char code[16], *p;
	size_t i, n, codelen, rlen, elen;

	if (status >= 100 && status <= 999) {
		code[0] = (char)('0' + status / 100);
		code[1] = (char)('0' + status / 10 % 10);
		code[2] = (char)('0' + status % 10);
		codelen = 3;
	} else
		codelen = (size_t)snprintf(code, sizeof(code), "%d", status);
	rlen = strlen(reason);
	elen = extra != NULL ? strlen(extra) : 0;
	n = 9 + codelen + 1 + rlen + 2 + elen + 2;
	if (co->co_close_after)
		n += 19;
	if (hs != NULL) {
		for (i = 0; i < hs->hs_n; i++)
			n += strlen(hs->hs_v[i].h_name) +
			    strlen(hs->hs_v[i].h_value) + 4;
	}
	if (evbuffer_reserve_space(out, (ev_ssize_t)n, &vec, 1) != 1 ||
	    vec.iov_len < n)
		fatalx("%s: evbuffer_reserve_space", __func__);
	p = vec.iov_base;
	p = put(p, "HTTP/1.1 ", 9);
	p = put(p, code, codelen);
	p = put(p, " ", 1);
	p = put(p, reason, rlen);
	p = put(p, "\r\n", 2);
	if (hs != NULL) {
		for (i = 0; i < hs->hs_n; i++) {
			const struct hdr *h = &hs->hs_v[i];

			p = put(p, h->h_name, strlen(h->h_name));
			p = put(p, ": ", 2);
			p = put(p, h->h_value, strlen(h->h_value));
			p = put(p, "\r\n", 2);
		}
	}
	if (extra != NULL)
		p = put(p, extra, elen);
	if (co->co_close_after)
		p = put(p, "Connection: close\r\n", 19);
	p = put(p, "\r\n", 2);
	vec.iov_len = n;
	if (evbuffer_commit_space(out, &vec, 1) == -1)
		fatalx("%s: evbuffer_commit_space", __func__);
}

/*
 * Answer with a complete response (refusals and tollgate's own errors).
 * The connection closes afterwards if the request asked for it, if its
 * body was not read, or if the server is draining.
 */
void
conn_reply_full(struct conn *co, int status, const struct hdrs *hs,
    const char *ctype, const char *body, size_t len)
{
	char extra[128];

	if (co->co_reply_started)
		fatalx("%s: conn %llu: reply already started", __func__,
		    co->co_id);
	co->co_reply_started = 1;
	if (!co->co_keepalive || co->co_ls->l_draining)
		co->co_close_after = 1;
	/* Answered before the body was read: the client may still be
	 * sending it, so close with a linger. */
	if (co->co_state == CONN_HEAD || co->co_state == CONN_BODY)
		co->co_close_after = co->co_must_linger = 1;
	snprintf(extra, sizeof(extra),
	    "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, len);
	write_head(co, status, hs, extra);
	evbuffer_add(bufferevent_get_output(co->co_bev), body, len);
	co->co_session = NULL;
	co->co_state = CONN_FLUSH;
	evtimer_del(co->co_timer);
}

/* Start a streamed response: status and headers, then chunks. */
void
conn_reply_start(struct conn *co, int status, const struct hdrs *hs)
{
	if (co->co_reply_started)
		fatalx("%s: conn %llu: reply already started", __func__,
		    co->co_id);
	co->co_reply_started = 1;
	if (!co->co_keepalive || co->co_ls->l_draining)
		co->co_close_after = 1;
	/* HTTP/1.0 has no chunked encoding: the body ends at close. */
	co->co_chunked = co->co_minor >= 1;
	if (!co->co_chunked)
		co->co_close_after = 1;
	/*
	 * Queued, not sent: the body usually arrives in the same turn and
	 * goes out with it in one write. Sending the head at once cost every
	 * plain reply two more sendmsg calls (233 against 168 µs of CPU per
	 * call under wrk).
	 */
	write_head(co, status, hs,
	    co->co_chunked ? "Transfer-Encoding: chunked\r\n" : NULL);
}

/* "%zx\r\n" of len into head (at least 19 bytes); returns its length. */
static int
chunk_size_line(char *head, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	char digits[16];
	int n = 0, i = 0;

	do {
		digits[n++] = hex[len & 0xf];
		len >>= 4;
	} while (len != 0);
	while (n > 0)
		head[i++] = digits[--n];
	head[i++] = '\r';
	head[i++] = '\n';
	return (i);
}

/* Relay body bytes to the client as they are. */
void
conn_reply_data(struct conn *co, const void *data, size_t len)
{
	struct iovec iov[3];
	char head[24];
	int n;

	if (len == 0)
		return;
	if (co->co_chunked) {
		n = chunk_size_line(head, len);
		iov[0].iov_base = head;
		iov[0].iov_len = (size_t)n;
		iov[1].iov_base = (void *)(uintptr_t)data;
		iov[1].iov_len = len;
		iov[2].iov_base = (void *)(uintptr_t) "\r\n";
		iov[2].iov_len = 2;
		conn_send(co, iov, 3);
	} else {
		iov[0].iov_base = (void *)(uintptr_t)data;
		iov[0].iov_len = len;
		conn_send(co, iov, 1);
	}
}

/* The response is complete; the session lets go of the connection. */
void
conn_reply_end(struct conn *co)
{
	struct evbuffer *out = bufferevent_get_output(co->co_bev);
	struct iovec iov;

	if (co->co_chunked) {
		iov.iov_base = (void *)(uintptr_t) "0\r\n\r\n";
		iov.iov_len = 5;
		conn_send(co, &iov, 1);
	}
	co->co_session = NULL;
	co->co_state = CONN_FLUSH;
	if (evbuffer_get_length(out) == 0)
		event_active(co->co_defer, EV_TIMEOUT, 0);
}

/*
 * The response cannot be completed (the provider failed mid-body): send
 * what is buffered, then close without the final chunk so the client sees
 * a truncated message rather than a complete one.
 */
void
conn_reply_abort(struct conn *co)
{
	co->co_session = NULL;
	co->co_close_after = 1;
	co->co_state = CONN_FLUSH;
	if (conn_output_pending(co) == 0)
		event_active(co->co_defer, EV_TIMEOUT, 0);
}

/* Refuse a request before a session exists, in the guessed shape. */
static void
conn_refuse(struct conn *co, int status, const char *code, const char *msg)
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
	conn_reply_full(
	    co, status, NULL, "application/json", body, strlen(body));
	free(body);
}

/* Hand a complete request to its session. */
static void
conn_dispatch(struct conn *co)
{
	void *h = co->co_session;

	evtimer_del(co->co_timer);
	co->co_state = CONN_BUSY;
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
 * grows with what has arrived, to at most twice that and never past
 * Content-Length.
 */
static void
conn_read_body(struct conn *co)
{
	struct evbuffer *in = bufferevent_get_input(co->co_bev);
	size_t n, want, cap;
	ssize_t r;
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
		want = co->co_body_len + n;
		if (want > co->co_body_cap) {
			/* Room for as much again: a 2 MiB body arriving in
			 * two halves is not copied when the second comes. */
			cap = want * 2;
			if (cap > co->co_body_len + co->co_body_need)
				cap = co->co_body_len + co->co_body_need;
			co->co_body = xreallocarray(co->co_body, cap, 1);
			co->co_body_cap = cap;
		}
		if (evbuffer_get_length(in) > 0)
			r = evbuffer_remove(
			    in, co->co_body + co->co_body_len, n);
		else
			r = recv(
			    co->co_fd, co->co_body + co->co_body_len, n, 0);
		if (r <= 0)
			break;
		co->co_body_len += (size_t)r;
		co->co_body_need -= (size_t)r;
	}
}

/* Drive the connection's state machine with what is in the input. */
static void
conn_process(struct conn *co)
{
	struct evbuffer *in = bufferevent_get_input(co->co_bev);
	const struct config *cf = server_config();
	struct head_limits hl;
	void *h;

	switch (co->co_state) {
	case CONN_IDLE:
		if (evbuffer_get_length(in) == 0)
			return;
		co->co_state = CONN_HEAD;
		co->co_req = xcalloc(1, sizeof(*co->co_req));
		memset(&co->co_hp, 0, sizeof(co->co_hp));
		co->co_reply_started = 0;
		co->co_close_after = 0;
		co->co_must_linger = 0;
		co->co_chunked = 0;
		co->co_keepalive = 0;
		co->co_minor = 0;
		set_timer(co, cf->cf_request_timeout_ms);
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
			    co->co_hp.hp_msg);
			return;
		case HEAD_DONE:
			break;
		}
		co->co_keepalive = co->co_req->hr_keepalive;
		co->co_minor = co->co_req->hr_minor;
		if ((h = co->co_ls->l_ops->lo_head(co, co->co_req)) == NULL)
			return; /* refused and answered */
		co->co_session = h;
		co->co_body_need = co->co_req->hr_content_length;
		co->co_req->hr_body = evbuffer_new();
		if (co->co_body_need == 0) {
			conn_dispatch(co);
			return;
		}
		co->co_state = CONN_BODY;
		if (co->co_req->hr_expect_continue)
			evbuffer_add(bufferevent_get_output(co->co_bev),
			    "HTTP/1.1 100 Continue\r\n\r\n", 25);
		/* FALLTHROUGH */
	case CONN_BODY:
		conn_read_body(co);
		if (co->co_body_need > 0)
			return;
		/* The session reads the body as one contiguous piece. */
		if (evbuffer_add_reference(co->co_req->hr_body, co->co_body,
			co->co_body_len, body_free_cb, NULL) == -1)
			fatalx("%s: evbuffer_add_reference", __func__);
		co->co_body = NULL;
		co->co_body_len = co->co_body_cap = 0;
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
	const struct config *cf = server_config();

	if (co->co_close_after || co->co_ls->l_draining) {
		/* Linger only when the client may still be sending a body
		 * tollgate refused to read; otherwise close now. */
		if (co->co_must_linger)
			conn_linger(co);
		else
			conn_free(co, "closed after response");
		return;
	}
	co->co_state = CONN_IDLE;
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

	(void)fd;
	(void)ev;
	switch (co->co_state) {
	case CONN_HEAD:
	case CONN_BODY:
		if (co->co_state == CONN_BODY) {
			/* The session exists but never started. */
			void *h = co->co_session;

			co->co_session = NULL;
			if (h != NULL)
				co->co_ls->l_ops->lo_client_gone(h);
		}
		conn_refuse(co, 408, "request_timeout",
		    "the request did not arrive in time");
		break;
	case CONN_IDLE:
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
	const struct config *cf = server_config();
	struct conn *co;
	struct timeval wtv;
	char host[INET6_ADDRSTRLEN] = "?";
	int one = 1, port = 0;

	(void)evl;
	(void)salen;
	if (l->l_draining) {
		close(fd);
		return;
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
	co->co_state = CONN_IDLE;
	set_timer(co, cf->cf_request_timeout_ms);

	co->co_next = l->l_conns;
	if (l->l_conns != NULL)
		l->l_conns->co_prev = co;
	l->l_conns = co;
	l->l_nconns++;
	if (l->l_nconns >= (size_t)cf->cf_max_connections) {
		evconnlistener_disable(l->l_evl);
		l->l_accept_paused = 1;
	}
}

static void
accept_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	accept_resume(arg);
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
	free(l);
}
