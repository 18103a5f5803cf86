/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The relay half of a session: once the call's ledger row is committed,
 * relay_forward sends the request upstream with the client's headers
 * filtered (hop-by-hop, X-Tollgate-*, Host, framing and encoding removed;
 * provider credentials passed untouched, or replaced by the upstream's own
 * key for calls made with a tollgate key and for calls a routing rule sent
 * to another upstream). Response headers and body bytes
 * are relayed to the client as they arrive, through the meter, which reads
 * usage from them and hands back what the client receives. When the
 * client's output buffer passes the configured high watermark the transfer
 * is paused, and it is resumed when the buffer drains, so a slow reader
 * costs a bounded amount of memory (every buffer has a cap: docs/internals/buf.md). Each
 * attempt goes with the URL and key src/upstream/pick.c chooses. A
 * failure before anything was relayed (no connection, no headers in
 * time, a 408, 429 or 5xx) first goes to session_retry (session_retry.c),
 * which may plan another attempt; every other end of the transfer goes to
 * session_close in session.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "tollgate/attribution.h"
#include "tollgate/config.h"
#include "tollgate/http.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/meter.h"
#include "tollgate/pick.h"
#include "tollgate/session.h"
#include "tollgate/upstream.h"
#include "tollgate/util.h"

#include "session_int.h"

/* Bodies up to this size are copied out of their chain (relay_forward). */
#define RELAY_BODY_COPY_MAX (16 * 1024)

static void relay_failed(struct session *, int, const char *);

/*
 * Headers the request's framing and tollgate's own handling replace: the
 * name's length picks the one it could be.
 */
static int
replaced_upstream(const char *name)
{
	switch (strlen(name)) {
	case 4:
		return (strcasecmp(name, "Host") == 0);
	case 6:
		return (strcasecmp(name, "Expect") == 0);
	case 14:
		return (strcasecmp(name, "Content-Length") == 0);
	case 15:
		return (strcasecmp(name, "Accept-Encoding") == 0);
	default:
		return (0);
	}
}

/*
 * Whether the upstream's own key (api_key_env) replaces the client's
 * credentials: for a call made with a tollgate key, which no provider
 * knows, and for one a routing rule sent to another upstream than the one
 * its path names, whose host must never see a key the client meant for
 * the first (a shared local server, another vendor, maybe plain http),
 * or failed over to another (session_retry.c).
 */
static int
own_key(const struct session *se)
{
	return (se->se_switched ||
	    (se->se_path_up != NULL &&
		se->se_route.rt_upstream != se->se_path_up) ||
	    (se->se_attr.at_binding != NULL &&
		se->se_attr.at_binding->kb_tollgate));
}

/* Build the header list sent upstream from the client's. */
static void
upstream_headers(struct session *se, struct hdrs *out)
{
	const struct http_request *req = se->se_req;
	const struct upstream_conf *uc = se->se_route.rt_upstream;
	const char *connhdr = hdrs_get(&req->hr_headers, "Connection");
	int swap_key = own_key(se);
	const char *key;
	char *v;
	size_t i;

	for (i = 0; i < req->hr_headers.hs_n; i++) {
		const struct hdr *h = &req->hr_headers.hs_v[i];

		if (http_is_hop_by_hop(h->h_name))
			continue;
		/* Headers the client named in Connection are hop-by-hop
		 * too; tollgate adds its own only after this. */
		if (connhdr != NULL && http_token_has(connhdr, h->h_name))
			continue;
		if (replaced_upstream(h->h_name) ||
		    strcaseprefix(h->h_name, "X-Tollgate-"))
			continue;
		/* A tollgate key never reaches the provider, nor a client's
		 * key an upstream a rule switched to. */
		if (swap_key && http_is_secret_header(h->h_name))
			continue;
		hdrs_add(out, h->h_name, strlen(h->h_name), h->h_value,
		    strlen(h->h_value));
	}
	/* The key the picker chose for this attempt (pick.c). */
	if (!swap_key || se->se_pick.pk_key < 0)
		return;
	key = uc->uc_keys[se->se_pick.pk_key];
	switch (uc->uc_type) {
	case UPSTREAM_ANTHROPIC:
		hdrs_add(out, "x-api-key", 9, key, strlen(key));
		break;
	case UPSTREAM_GEMINI:
		hdrs_add(out, "x-goog-api-key", 14, key, strlen(key));
		break;
	case UPSTREAM_AZURE_OPENAI:
		hdrs_add(out, "api-key", 7, key, strlen(key));
		break;
	default:
		xasprintf(&v, "Bearer %s", key);
		hdrs_add(out, "Authorization", 13, v, strlen(v));
		freezero(v, strlen(v));
		break;
	}
}

void
relay_emit(void *arg, const char *buf, size_t len)
{
	struct session *se = arg;

	if (se->se_conn == NULL || len == 0)
		return;
	conn_reply_data(se->se_conn, buf, len);
	se->se_bytes_out += len;
	session_cache_keep(se, buf, len);
}

static void
on_headers(void *arg, long code, const struct hdrs *resp)
{
	static char reqid_name[] = "x-tollgate-request-id";
	struct session *se = arg;
	struct hdr stackv[32], *v = stackv;
	struct hdrs hs = {0};
	char cnt[16];
	size_t i, n;

	/* 408, 429 and a 5xx other than 501 and 505 may go to another
	 * attempt, before anything of them reaches the client. */
	if (!se->se_replied &&
	    (code == 408 || code == 429 ||
		(code >= 500 && code != 501 && code != 505)) &&
	    session_retry(
		se, (int)code, "provider_error", upstream_retry_after(resp)))
		return; /* se_xfer is gone, the next attempt is planned */
	se->se_ttfb_us = monotime_us() - se->se_t0_us;
	se->se_status = (int)code;
	se->se_headers_seen = 1;
	meter_response(se->se_meter, (int)code, hdrs_get(resp, "Content-Type"));
	session_cache_type(se, hdrs_get(resp, "Content-Type"));
	session_arm_timer(se, se->se_route.rt_upstream->uc_idle_timeout_ms);
	if (se->se_conn == NULL)
		return;
	if (se->se_attempts > 1) {
		snprintf(cnt, sizeof(cnt), "%d", se->se_attempts);
		hdrs_add(
		    &se->se_hdrs, "x-tollgate-attempts", 19, cnt, strlen(cnt));
	}
	/*
	 * The reply's list borrows its strings from resp, se_hdrs and the
	 * session: conn_reply_start copies them into the output at once, so
	 * the list is never cleared, only its array freed.
	 */
	n = resp->hs_n + se->se_hdrs.hs_n + 1;
	if (n > nitems(stackv))
		v = xreallocarray(NULL, n, sizeof(*v));
	hs.hs_v = v;
	hs.hs_cap = n;
	for (i = 0; i < resp->hs_n; i++) {
		const struct hdr *h = &resp->hs_v[i];

		if (http_is_hop_by_hop(h->h_name) ||
		    strcasecmp(h->h_name, "Content-Length") == 0 ||
		    strcaseprefix(h->h_name, "X-Tollgate-"))
			continue;
		v[hs.hs_n++] = *h;
	}
	for (i = 0; i < se->se_hdrs.hs_n; i++)
		v[hs.hs_n++] = se->se_hdrs.hs_v[i];
	v[hs.hs_n].h_name = reqid_name;
	v[hs.hs_n++].h_value = se->se_reqid;
	se->se_replied = 1;
	conn_reply_start(se->se_conn, (int)code, &hs);
	if (v != stackv)
		free(v);
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
	meter_feed(se->se_meter, buf, len, relay_emit, se);
	if (se->se_ci.ci_stream)
		session_check_overrun(se);
	/* Its budget ran out: se is closed (inert until the next loop turn)
	 * and its transfer dead, which aborts it. */
	if (se->se_closed)
		return (0);
	session_arm_timer(se, se->se_route.rt_upstream->uc_idle_timeout_ms);
	return (len);
}

static void
relay_failed(struct session *se, int timeout, const char *detail)
{
	if (detail != NULL)
		session_note(se, "upstream %s: %s",
		    se->se_route.rt_upstream->uc_name, detail);
	if (!se->se_replied &&
	    session_retry(se, 0,
		timeout ? "upstream_timeout" : "upstream_unavailable", 0))
		return; /* another attempt follows */
	if (!se->se_replied) {
		if (timeout)
			session_reply_error(se, 504, "upstream_timeout",
			    "the upstream provider did not answer in time");
		else
			session_reply_error(se, 502, "upstream_unavailable",
			    "the upstream provider could not be reached");
	} else if (se->se_conn != NULL) {
		/* Mid-body: the client must see a truncated response. */
		conn_reply_abort(se->se_conn);
		se->se_conn = NULL;
	}
	session_close(se, CALL_UPSTREAM_ERROR,
	    timeout ? "upstream_timeout" : "upstream_error");
}

static void
on_done(void *arg, enum xfer_result res, const char *why)
{
	struct session *se = arg;
	const char *err;
	char detail[256];

	if (res == XFER_OK) {
		/* The provider answered whole; the log says whether it was
		 * an answer or its error. */
		if (se->se_status < 200 || se->se_status >= 300)
			session_close(se, CALL_ERROR, "provider_error");
		else if ((err = meter_stream_error(se->se_meter)) != NULL) {
			/* A 200 that ended in the provider's error frame: the
			 * final usage never came. */
			snprintf(se->se_error, sizeof(se->se_error),
			    "stream_error:%s", err);
			session_note(se,
			    "the provider ended the stream with "
			    "an error: %s",
			    err);
			session_close(se, CALL_ERROR, "stream_error");
		} else
			session_close(se, CALL_OK, "ok");
		return;
	}
	/* A connection that was never made carried no request. */
	if (res == XFER_CONNECT)
		se->se_nothing_sent = 1;
	/* curl's message names hosts, never the path or query. */
	log_escape(detail, sizeof(detail), why, strcspn(why, "?"));
	relay_failed(se, res == XFER_TIMEOUT, detail);
}

static const struct xfer_cbs session_xfer_cbs = {
    on_headers,
    on_data,
    on_done,
};

/* base, path and "?query" when there is one, in a new string. */
static char *
make_url(const char *base, const char *path, const char *query)
{
	size_t blen = strlen(base), plen = strlen(path);
	size_t qlen = query != NULL ? strlen(query) : 0, n;
	char *url;

	n = blen + plen + (query != NULL ? 1 + qlen : 0);
	url = xmalloc(n + 1);
	memcpy(url, base, blen);
	memcpy(url + blen, path, plen);
	if (query != NULL) {
		url[blen + plen] = '?';
		memcpy(url + blen + plen + 1, query, qlen);
	}
	url[n] = '\0';
	return (url);
}

/* The row is committed: send the request to the provider. */
void
relay_forward(struct session *se)
{
	struct http_request *req = se->se_req;
	size_t len;

	se->se_state = SE_FORWARDING;
	if (se->se_body == NULL && req->hr_body != NULL &&
	    (len = evbuffer_get_length(req->hr_body)) > 0) {
		/*
		 * libcurl borrows the body for the whole transfer, which for
		 * a stream is minutes. The listener reads it into one piece of
		 * its exact size, held by a chain of at least 1 KiB. A small
		 * body is copied out and the chain freed below; a large one
		 * keeps its chain (a single one, so the pullup copies
		 * nothing).
		 */
		se->se_bodylen = len;
		if (len <= RELAY_BODY_COPY_MAX) {
			se->se_body = xmalloc(len);
			if (evbuffer_copyout(req->hr_body, se->se_body, len) !=
			    (ev_ssize_t)len)
				fatalx("%s: evbuffer_copyout", __func__);
		} else {
			se->se_bodybuf = req->hr_body;
			req->hr_body = NULL;
			se->se_body =
			    (char *)evbuffer_pullup(se->se_bodybuf, -1);
		}
	}
	if (req->hr_body != NULL) {
		evbuffer_free(req->hr_body);
		req->hr_body = NULL;
	}
	relay_attempt(se);
}

/*
 * Choose the attempt's URL and key (src/upstream/pick.c). An upstream of
 * the chain whose every URL or key is out is passed over for the next
 * one, when there is a next; the last is tried anyway.
 */
static void
relay_pick(struct session *se)
{
	const struct upstream_conf *uc;
	int64_t back, now = pick_now();

	for (;;) {
		if (se->se_nchain > 0 &&
		    se->se_route.rt_upstream != se->se_chain[se->se_at]) {
			se->se_route.rt_upstream = se->se_chain[se->se_at];
			/* The tier of a call that named none is the
			 * upstream's: priced so if this one serves it. */
			meter_tier(&se->se_route, &se->se_ci);
		}
		uc = se->se_route.rt_upstream;
		if (pick_choose(uc, own_key(se), now, &se->se_pick, &back) ==
			0 ||
		    se->se_at + 1 >= se->se_nchain)
			return;
		session_note(se,
		    "upstream %s passed over: its URLs or keys are out for "
		    "%lld ms more",
		    uc->uc_name, (long long)(back - now));
		se->se_at++;
	}
}

/* Start an attempt: the first, or one session_retry.c planned. */
void
relay_attempt(struct session *se)
{
	const struct upstream_conf *uc;
	struct http_request *req = se->se_req;
	struct hdrs hs = {0};
	char *url, *query = NULL;
	const char *body;
	size_t bodylen;

	relay_pick(se);
	uc = se->se_route.rt_upstream;
	se->se_attempts++;
	se->se_attempt_us = monotime_us();
	se->se_nothing_sent = 0;
	se->se_status = 0;
	se->se_headers_seen = 0;
	se->se_ttfb_us = -1;
	body = se->se_body != NULL ? se->se_body : "";
	bodylen = se->se_body != NULL ? se->se_bodylen : 0;
	se->se_bytes_in = bodylen;
	upstream_headers(se, &hs);
	/* The headers are in hs now; the client's (keys among them) are
	 * not needed again unless another attempt may follow. */
	if (se->se_nchain == 0 ||
	    (se->se_conf->cf_retry_attempts <= 1 && se->se_nchain == 1))
		hdrs_clear(&req->hr_headers);
	/* A key in the query is the client's; with a tollgate key, or to
	 * an upstream a rule switched to, it must not be forwarded either. */
	if (own_key(se))
		query = attribution_strip_query_key(se->se_route.rt_query);
	else if (se->se_route.rt_query != NULL)
		query = xstrdup(se->se_route.rt_query);
	url = make_url(uc->uc_urls[se->se_pick.pk_url].uu_url,
	    se->se_route.rt_path, query);
	if (query != NULL)
		freezero(query, strlen(query));
	se->se_meter = meter_new(&se->se_route, &se->se_ci);
	se->se_xfer = xfer_start(uc, uc->uc_urls[se->se_pick.pk_url].uu_url,
	    req->hr_method, url, &hs, body, bodylen, se->se_ci.ci_stream,
	    &session_xfer_cbs, se);
	hdrs_clear(&hs);
	freezero(url, strlen(url)); /* the query may hold a key */
	if (se->se_xfer == NULL) {
		se->se_nothing_sent = 1;
		relay_failed(se, 0, "transfer refused by libcurl");
		return;
	}
	session_arm_timer(se, uc->uc_header_timeout_ms);
}

/* The client's output has drained: resume a paused transfer. */
void
session_drained(struct session *se)
{
	if (!se->se_paused || se->se_xfer == NULL)
		return;
	se->se_paused = 0;
	session_arm_timer(se, se->se_route.rt_upstream->uc_idle_timeout_ms);
	xfer_resume(se->se_xfer);
	/* se may be closed now if the transfer ended inside: still there,
	 * inert, until the next loop turn frees it. */
}

/* The header or idle timer fired: the provider is too slow. */
void
relay_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *se = arg;

	(void)fd;
	(void)ev;
	relay_failed(se, 1,
	    se->se_headers_seen ? "no data within idle_timeout"
				: "no response within header_timeout");
}
