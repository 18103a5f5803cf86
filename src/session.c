/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One proxied call, from the moment its head is read to its log line.
 *
 * session_new routes the request as soon as its head is complete, so an
 * unknown path is refused before its body is read. session_start forwards
 * it through the upstream module with the client's headers filtered
 * (hop-by-hop, X-Tollgate-*, Host, framing and encoding headers removed;
 * provider credentials passed untouched). Response headers and body bytes
 * are relayed to the client as they arrive. When the client's output
 * buffer passes the configured high watermark the transfer is paused, and
 * it is resumed when the buffer drains, so a slow reader costs a bounded
 * amount of memory (STYLE rule 8).
 *
 * Every path out goes through session_close(se, reason): it writes the
 * call's one log line, aborts the upstream transfer if it is still running
 * (so the provider sees the connection close) and frees the session.
 */
#include <sys/random.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "tollgate/config.h"
#include "tollgate/http.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/reply.h"
#include "tollgate/route.h"
#include "tollgate/session.h"
#include "tollgate/upstream.h"
#include "tollgate/util.h"

#define REQID_LEN 32

/* One call; owned by itself, freed by session_close. */
struct session {
	unsigned long long se_id;
	struct conn *se_conn; /* borrowed; NULL once the client left */
	struct config *se_conf; /* reference held for the call */
	struct http_request *se_req; /* borrowed until started, then owned */
	int se_started;
	struct route se_route;
	struct xfer *se_xfer;
	struct event *se_timer; /* header, then idle, timeout */
	char se_reqid[REQID_LEN + 4];

	long long se_t0_us;
	long long se_ttfb_us;
	int se_status;
	size_t se_bytes_in;
	size_t se_bytes_out;
	int se_replied; /* the client has a status line */
	int se_paused;
	int se_headers_seen;
};

static size_t session_n;
static uint64_t reqid_state;
static struct event_base *session_base;

static void session_close(struct session *, const char *);
static void session_timer_cb(evutil_socket_t, short, void *);

static uint64_t
splitmix64(void)
{
	uint64_t z;

	z = (reqid_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (z ^ (z >> 31));
}

/* A request id: 128 unpredictable-enough bits as hex, never reused. */
static void
make_reqid(char *buf, size_t len)
{
	if (reqid_state == 0) {
		if (getrandom(&reqid_state, sizeof(reqid_state), 0) !=
		    sizeof(reqid_state))
			reqid_state = (uint64_t)monotime_us();
	}
	snprintf(buf, len, "%016llx%016llx", (unsigned long long)splitmix64(),
	    (unsigned long long)splitmix64());
}

static void
arm_timer(struct session *se, long ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(se->se_timer, &tv);
}

/* Calls in progress. */
size_t
session_count(void)
{
	return (session_n);
}

static void
reply_error(struct session *se, int status, const char *code, const char *msg)
{
	struct hdrs hs = {0};
	char *body;

	se->se_status = status;
	if (se->se_conn == NULL)
		return;
	body = reply_error_body(
	    se->se_route.rt_family, status, code, msg, se->se_reqid);
	hdrs_add(&hs, "x-tollgate-request-id", 21, se->se_reqid,
	    strlen(se->se_reqid));
	if (status == 405) {
		const char *allow =
		    se->se_route.rt_endpoint == EP_MODELS ? "GET" : "POST";

		hdrs_add(&hs, "Allow", 5, allow, strlen(allow));
	}
	se->se_replied = 1;
	conn_reply_full(
	    se->se_conn, status, &hs, "application/json", body, strlen(body));
	se->se_conn = NULL;
	hdrs_clear(&hs);
	free(body);
}

/*
 * A request head is complete: route it. Returns the session, or NULL when
 * the request was refused and answered.
 */
struct session *
session_new(struct conn *co, struct http_request *req)
{
	struct session *se;
	enum route_result rr;
	char *why = NULL;

	if (session_base == NULL)
		fatalx("%s: session_setup not called", __func__);
	se = xcalloc(1, sizeof(*se));
	se->se_id = conn_id(co);
	se->se_conn = co;
	se->se_req = req;
	se->se_conf = config_ref(server_config());
	se->se_t0_us = monotime_us();
	se->se_timer = evtimer_new(session_base, session_timer_cb, se);
	make_reqid(se->se_reqid, sizeof(se->se_reqid));
	session_n++;

	rr = route_match(
	    se->se_conf, req->hr_method, req->hr_target, &se->se_route, &why);
	switch (rr) {
	case ROUTE_OK:
		free(why);
		return (se);
	case ROUTE_BAD_METHOD:
		reply_error(se, 405, "method_not_allowed", why);
		break;
	case ROUTE_NO_UPSTREAM:
		reply_error(se, 404, "no_upstream", why);
		break;
	case ROUTE_NOT_FOUND:
		reply_error(se, 404, "unknown_route", why);
		break;
	}
	free(why);
	session_close(se, "refused");
	return (NULL);
}

/* Build the header list sent upstream from the client's. */
static void
upstream_headers(const struct http_request *req, struct hdrs *out)
{
	const char *connhdr = hdrs_get(&req->hr_headers, "Connection");
	size_t i;

	for (i = 0; i < req->hr_headers.hs_n; i++) {
		const struct hdr *h = &req->hr_headers.hs_v[i];

		if (http_is_hop_by_hop(h->h_name))
			continue;
		/* Headers the client named in Connection are hop-by-hop
		 * too; tollgate adds its own only after this. */
		if (connhdr != NULL && http_token_has(connhdr, h->h_name))
			continue;
		if (strcasecmp(h->h_name, "Host") == 0 ||
		    strcasecmp(h->h_name, "Content-Length") == 0 ||
		    strcasecmp(h->h_name, "Expect") == 0 ||
		    strcasecmp(h->h_name, "Accept-Encoding") == 0 ||
		    strcaseprefix(h->h_name, "X-Tollgate-"))
			continue;
		hdrs_add(out, h->h_name, strlen(h->h_name), h->h_value,
		    strlen(h->h_value));
	}
}

static void
on_headers(void *arg, long code, const struct hdrs *resp)
{
	struct session *se = arg;
	struct hdrs hs = {0};
	size_t i;

	se->se_ttfb_us = monotime_us() - se->se_t0_us;
	se->se_status = (int)code;
	se->se_headers_seen = 1;
	arm_timer(se, se->se_route.rt_upstream->uc_idle_timeout_ms);
	if (se->se_conn == NULL)
		return;
	for (i = 0; i < resp->hs_n; i++) {
		const struct hdr *h = &resp->hs_v[i];

		if (http_is_hop_by_hop(h->h_name) ||
		    strcasecmp(h->h_name, "Content-Length") == 0 ||
		    strcaseprefix(h->h_name, "X-Tollgate-"))
			continue;
		hdrs_add(&hs, h->h_name, strlen(h->h_name), h->h_value,
		    strlen(h->h_value));
	}
	hdrs_add(&hs, "x-tollgate-request-id", 21, se->se_reqid,
	    strlen(se->se_reqid));
	se->se_replied = 1;
	conn_reply_start(se->se_conn, (int)code, &hs);
	hdrs_clear(&hs);
}

static size_t
on_data(void *arg, const char *buf, size_t len)
{
	struct session *se = arg;

	if (se->se_conn == NULL)
		return (0);
	if (conn_output_pending(se->se_conn) >
	    se->se_conf->cf_stream_high_watermark) {
		/* The client is slow: stop reading from the provider until
		 * its buffer drains. Silence while paused is not the
		 * provider's fault, so the idle timer stops too. */
		se->se_paused = 1;
		evtimer_del(se->se_timer);
		return (XFER_PAUSE);
	}
	conn_reply_data(se->se_conn, buf, len);
	se->se_bytes_out += len;
	arm_timer(se, se->se_route.rt_upstream->uc_idle_timeout_ms);
	return (len);
}

static void
upstream_failed(struct session *se, int timeout, const char *detail)
{
	const char *reason = timeout ? "upstream_timeout" : "upstream_error";

	if (!se->se_replied) {
		if (timeout)
			reply_error(se, 504, "upstream_timeout",
			    "the upstream provider did not answer in time");
		else
			reply_error(se, 502, "upstream_unavailable",
			    "the upstream provider could not be reached");
	} else if (se->se_conn != NULL) {
		/* Mid-body: the client must see a truncated response. */
		conn_reply_abort(se->se_conn);
		se->se_conn = NULL;
	}
	if (detail != NULL)
		log_info("session %llu: upstream %s: %s", se->se_id,
		    se->se_route.rt_upstream->uc_name, detail);
	session_close(se, reason);
}

static void
on_done(void *arg, enum xfer_result res, const char *why)
{
	struct session *se = arg;
	char detail[256];

	if (res == XFER_OK) {
		if (se->se_conn != NULL) {
			conn_reply_end(se->se_conn);
			se->se_conn = NULL;
		}
		session_close(se, "ok");
		return;
	}
	/* curl's message names hosts, never the path or query. */
	log_escape(detail, sizeof(detail), why, strcspn(why, "?"));
	upstream_failed(se, res == XFER_TIMEOUT, detail);
}

static const struct xfer_cbs session_xfer_cbs = {
    on_headers,
    on_data,
    on_done,
};

/* The request body is complete: forward it. */
void
session_start(struct session *se)
{
	const struct upstream_conf *uc = se->se_route.rt_upstream;
	struct http_request *req = se->se_req;
	struct hdrs hs = {0};
	char *url;
	const char *body;

	se->se_started = 1;
	se->se_bytes_in = evbuffer_get_length(req->hr_body);
	body = (const char *)evbuffer_pullup(req->hr_body, -1);
	xasprintf(&url, "%s%s%s%s", uc->uc_base_url, se->se_route.rt_path,
	    se->se_route.rt_query != NULL ? "?" : "",
	    se->se_route.rt_query != NULL ? se->se_route.rt_query : "");
	upstream_headers(req, &hs);
	se->se_xfer = xfer_start(uc, req->hr_method, url, &hs, body,
	    se->se_bytes_in, &session_xfer_cbs, se);
	hdrs_clear(&hs);
	freezero(url, strlen(url)); /* the query may hold a key */
	if (se->se_xfer == NULL) {
		upstream_failed(se, 0, "transfer refused by libcurl");
		return;
	}
	arm_timer(se, uc->uc_header_timeout_ms);
}

/* The client went away; the call ends and the provider is hung up on. */
void
session_client_gone(struct session *se)
{
	se->se_conn = NULL;
	session_close(se, se->se_started ? "client_closed" : "client_gone");
}

/* The client's output has drained: resume a paused transfer. */
void
session_drained(struct session *se)
{
	if (!se->se_paused || se->se_xfer == NULL)
		return;
	se->se_paused = 0;
	arm_timer(se, se->se_route.rt_upstream->uc_idle_timeout_ms);
	xfer_resume(se->se_xfer);
	/* se may be gone now if the transfer ended inside. */
}

static void
session_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *se = arg;

	(void)fd;
	(void)ev;
	upstream_failed(se, 1,
	    se->se_headers_seen ? "no data within idle_timeout"
				: "no response within header_timeout");
}

/*
 * The single close path: log the call, stop the transfer, free everything.
 * Nothing may touch se afterwards.
 */
static void
session_close(struct session *se, const char *reason)
{
	const struct http_request *req = se->se_req;
	char path[160];
	const char *up;

	if (se->se_route.rt_path != NULL)
		log_escape(path, sizeof(path), se->se_route.rt_path,
		    strlen(se->se_route.rt_path));
	else
		log_escape(path, sizeof(path), req->hr_target,
		    strcspn(req->hr_target, "?"));
	up = se->se_route.rt_upstream != NULL
	    ? se->se_route.rt_upstream->uc_name
	    : "-";
	log_info("session %llu: %s %s upstream=%s status=%d in=%zu out=%zu "
		 "ms=%lld ttfb_ms=%lld reason=%s",
	    se->se_id, req->hr_method, path, up, se->se_status, se->se_bytes_in,
	    se->se_bytes_out, (monotime_us() - se->se_t0_us) / 1000,
	    se->se_ttfb_us > 0 ? se->se_ttfb_us / 1000 : -1LL, reason);

	if (se->se_conn != NULL) {
		/* Ended without an answer (cannot happen; be safe). */
		conn_reply_abort(se->se_conn);
		se->se_conn = NULL;
	}
	xfer_free(se->se_xfer);
	event_free(se->se_timer);
	if (se->se_started)
		http_request_free(se->se_req);
	route_clear(&se->se_route);
	config_unref(se->se_conf);
	free(se);
	session_n--;
}

/* Give sessions their event base. */
void
session_setup(struct event_base *base)
{
	session_base = base;
}
