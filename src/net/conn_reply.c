/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The proxy's responses to its clients, written as they are produced:
 * the status line and headers in one piece of the output, then the body,
 * chunked to HTTP/1.1 clients and close-delimited to HTTP/1.0 ones. Body
 * bytes are sent at once when nothing is queued (conn_send). The
 * connections themselves, and what happens once a response has drained,
 * are listener.c's.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "tollgate/http.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/reply.h"

#include "listener_int.h"

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
 * A reply begins, once per request: it closes the connection afterwards
 * unless the request allows reuse and the server is not draining.
 */
static void
reply_begin(struct conn *co, const char *caller)
{
	if (co->co_reply_started)
		fatalx(
		    "%s: conn %llu: reply already started", caller, co->co_id);
	co->co_reply_started = 1;
	if (!co->co_keepalive || co->co_ls->l_draining)
		co->co_close_after = 1;
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

	reply_begin(co, __func__);
	/* Answered before the body was read: the client may still be
	 * sending it, so close with a linger. */
	if (co->co_state == CONN_HEAD || co->co_state == CONN_BODY)
		co->co_close_after = co->co_must_linger = 1;
	snprintf(extra, sizeof(extra),
	    "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, len);
	write_head(co, status, hs, extra);
	evbuffer_add(bufferevent_get_output(co->co_bev), body, len);
	co->co_session = NULL;
	conn_set_state(co, CONN_FLUSH);
	evtimer_del(co->co_timer);
}

/* Start a streamed response: status and headers, then chunks. */
void
conn_reply_start(struct conn *co, int status, const struct hdrs *hs)
{
	reply_begin(co, __func__);
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
	conn_set_state(co, CONN_FLUSH);
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
	conn_set_state(co, CONN_FLUSH);
	if (conn_output_pending(co) == 0)
		event_active(co->co_defer, EV_TIMEOUT, 0);
}
