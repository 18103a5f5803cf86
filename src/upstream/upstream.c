/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The proxy's upstream transfers, on one libcurl multi handle that a
 * curlev driver (curlev.c) runs on the loop. Connections are reused
 * across calls and HTTP/2 is negotiated when the provider offers it; a
 * call waits for another's connection only where that connection is
 * known to multiplex (see "Waiting for multiplexing" below).
 *
 * Every transfer is locked down the same way: the URL comes from the
 * config, redirects are never followed, only the configured scheme is
 * allowed, TLS peers and host names are verified, and environment proxies
 * are ignored. Transfers must not be removed from the multi handle inside
 * one of curl's own callbacks, so xfer_free called inside curl
 * (curlev_inside) only queues the transfer, and the queue is freed when
 * curl has returned (reap_cb). The wait a response asks for
 * (retry-after-ms, Retry-After) is read here too, with curl's date
 * parser (upstream_retry_after).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/ssl.h>

#include "tollgate/config.h"
#include "tollgate/curlev.h"
#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/upstream.h"
#include "tollgate/util.h"

/*
 * libcurl's receive buffer, allocated for each transfer when it connects
 * and held until the transfer is freed. A stream holds it for as long as
 * the stream is open (minutes) while its events are a few hundred bytes
 * each, so a stream gets a small one: a burst is read in more pieces, never
 * held back. Other responses keep libcurl's default (16 KiB), which reads
 * large bodies in fewer calls. A handle that ran a stream must not serve a
 * later transfer after curl_easy_reset: libcurl 7.88 then writes an
 * HTTP/2 DATA frame past the small buffer (seen under ASan), so stream
 * handles are always made fresh and cleaned up.
 */
#define XFER_STREAM_BUFSIZE 1024L
/* The longest retry-after read: a day. */
#define RETRY_AFTER_MAX_MS (86400 * 1000L)

/* One upstream transfer; owned by the session that started it. */
struct xfer {
	CURL *xf_easy;
	struct curl_slist *xf_headers;
	const struct xfer_cbs *xf_cbs;
	void *xf_arg;
	struct hdrs xf_resp; /* response headers being collected */
	int xf_headers_done; /* xc_headers has been called */
	int xf_finished; /* xc_done has been called */
	int xf_dead; /* freed while inside curl; reap later */
	int xf_paused;
	int xf_stream; /* small receive buffer: never pooled */
	int xf_tls; /* https: ALPN tells whether h2 was chosen */
	int xf_sent; /* connected: the request has begun to go out */
	const char *xf_base_url; /* borrowed from the session's config */
	struct xfer *xf_reap_next;
	char xf_errbuf[CURL_ERROR_SIZE];
};

static struct curlev *up_cv; /* the upstream transfers' driver */
static struct xfer *up_reap; /* xfers freed while inside curl */

/*
 * Easy handles kept for the next transfers: making one and tearing it down
 * costs the handle's allocation and setup, and its free, for every call.
 * A handle is reset when it is put back, so nothing of one call's options
 * reaches the next. Stream handles are never kept (XFER_STREAM_BUFSIZE).
 */
#define UP_POOL_MAX 16
static CURL *up_pool[UP_POOL_MAX];
static int up_npool;

/*
 * Waiting for multiplexing. With CURLOPT_PIPEWAIT a transfer to a host
 * whose only connection is still being set up (or whose protocol curl
 * does not know yet) waits until curl learns whether that connection can
 * carry several transfers at once, instead of opening one of its own.
 * Over TLS curl learns it from ALPN at the end of the handshake. Over
 * plain http it learns it only from the first response's status line, and
 * libcurl 7.88 does not release the waiting transfers then, only when a
 * transfer ends, one at a time: parallel calls to a local http server
 * (vLLM, Ollama) finished one delay after another. Over TLS to a host
 * that speaks only HTTP/1.1 every transfer of a burst waited for the
 * first connection's handshake before it started its own.
 *
 * So plain http is HTTP/1.1 and never waits. https offers h2 by ALPN and
 * waits only for a host whose last handshake chose h2, where waiting one
 * handshake lets the calls share a connection; a host not seen yet, seen
 * to speak HTTP/1.1, or whose last connection attempt failed, gets a
 * connection of its own at once. What each host chose is read from the
 * TLS session right before each request is sent (prereq_cb) and kept here,
 * by scheme://host[:port] of the base_url, so it outlives reloads. The
 * table only steers that choice: when it is full the oldest entry goes.
 */
#define UP_ORIGINS_MAX 64

struct origin {
	char *or_name; /* "https://host[:port]" */
	int or_h2; /* the last handshake chose h2 */
};

static struct origin up_origins[UP_ORIGINS_MAX];
static size_t up_norigins;
static size_t up_origin_evict; /* next one to go when full */

/* The length of url's scheme://host[:port], without the path. */
static size_t
origin_len(const char *url)
{
	const char *p;

	if ((p = strstr(url, "://")) == NULL)
		return (strlen(url));
	p += 3;
	return ((size_t)(p - url) + strcspn(p, "/"));
}

/* The entry of url's origin; a new one when create is set. */
static struct origin *
origin_find(const char *url, int create)
{
	struct origin *o;
	size_t i, n = origin_len(url);

	for (i = 0; i < up_norigins; i++) {
		o = &up_origins[i];
		if (strlen(o->or_name) == n && memcmp(o->or_name, url, n) == 0)
			return (o);
	}
	if (!create)
		return (NULL);
	if (up_norigins < UP_ORIGINS_MAX)
		o = &up_origins[up_norigins++];
	else {
		o = &up_origins[up_origin_evict];
		up_origin_evict = (up_origin_evict + 1) % UP_ORIGINS_MAX;
		free(o->or_name);
	}
	o->or_name = xstrndup(url, n);
	o->or_h2 = 0;
	return (o);
}

/*
 * Right before a request goes out on a new or reused connection: note
 * that it goes out, and whether its TLS handshake chose h2.
 */
static int
prereq_cb(void *arg, char *primary_ip, char *local_ip, int primary_port,
    int local_port)
{
	struct xfer *x = arg;
	struct curl_tlssessioninfo *ti = NULL;
	const unsigned char *alpn = NULL;
	unsigned int alen = 0;

	(void)primary_ip;
	(void)local_ip;
	(void)primary_port;
	(void)local_port;
	if (x->xf_dead)
		return (CURL_PREREQFUNC_ABORT);
	x->xf_sent = 1;
	if (!x->xf_tls)
		return (CURL_PREREQFUNC_OK);
	if (curl_easy_getinfo(x->xf_easy, CURLINFO_TLS_SSL_PTR, &ti) !=
		CURLE_OK ||
	    ti == NULL || ti->backend != CURLSSLBACKEND_OPENSSL ||
	    ti->internals == NULL)
		return (CURL_PREREQFUNC_OK);
	SSL_get0_alpn_selected(ti->internals, &alpn, &alen);
	origin_find(x->xf_base_url, 1)->or_h2 =
	    alen == 2 && memcmp(alpn, "h2", 2) == 0;
	return (CURL_PREREQFUNC_OK);
}

static CURL *
easy_get(void)
{
	if (up_npool > 0)
		return (up_pool[--up_npool]);
	return (curl_easy_init());
}

/* Keep e (removed from the multi handle) for another transfer. */
static void
easy_put(CURL *e)
{
	if (up_npool < UP_POOL_MAX && up_cv != NULL) {
		/* Nothing of this call stays behind, not even its pointers. */
		curl_easy_reset(e);
		up_pool[up_npool++] = e;
	} else
		curl_easy_cleanup(e);
}

/* Free the transfers xfer_free queued while the loop was inside curl. */
static void
reap_cb(void *arg)
{
	struct xfer *x;

	(void)arg;
	while ((x = up_reap) != NULL) {
		up_reap = x->xf_reap_next;
		xfer_free(x);
	}
}

static enum xfer_result
classify(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return (XFER_OK);
	case CURLE_OPERATION_TIMEDOUT:
		return (XFER_TIMEOUT);
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return (XFER_CONNECT);
	default:
		return (XFER_FAILED);
	}
}

/* A transfer finished: tell its session, unless it is already gone. */
static void
done_cb(void *arg, CURL *e, CURLcode cc)
{
	struct xfer *x;
	struct origin *o;
	char *priv;
	enum xfer_result res;
	const char *why;

	(void)arg;
	curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
	x = (struct xfer *)priv;
	if (x->xf_dead || x->xf_finished)
		return;
	x->xf_finished = 1;
	res = classify(cc);
	/* The next calls must not wait for a connection that may never
	 * come. */
	if (x->xf_tls && (res == XFER_CONNECT || res == XFER_TIMEOUT) &&
	    (o = origin_find(x->xf_base_url, 0)) != NULL)
		o->or_h2 = 0;
	why = x->xf_errbuf[0] != '\0' ? x->xf_errbuf : curl_easy_strerror(cc);
	x->xf_cbs->xc_done(x->xf_arg, res, why);
	/* x may be gone now (queued for reap_cb). */
}

static const struct curlev_cbs up_cbs = {
    .cc_done = done_cb,
    .cc_after = reap_cb,
};

static size_t
header_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nitems, n = len, nlen;
	const char *colon, *v, *end;
	long code = 0;

	if (x->xf_dead)
		return (0);
	if (x->xf_headers_done)
		return (len); /* trailers: ignored */
	while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n'))
		n--;
	if (n == 0) {
		/* End of one header block. */
		curl_easy_getinfo(x->xf_easy, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 100 && code < 200) {
			hdrs_clear(&x->xf_resp);
			return (len);
		}
		x->xf_headers_done = 1;
		x->xf_cbs->xc_headers(x->xf_arg, code, &x->xf_resp);
		/* The owner has copied what it needs. */
		hdrs_clear(&x->xf_resp);
		return (x->xf_dead ? 0 : len);
	}
	if (strncmp(buf, "HTTP/", 5) == 0) {
		hdrs_clear(&x->xf_resp); /* a new status line */
		return (len);
	}
	if ((colon = memchr(buf, ':', n)) == NULL)
		return (len);
	nlen = (size_t)(colon - buf);
	v = colon + 1;
	end = buf + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (x->xf_resp.hs_n < 256 && x->xf_resp.hs_bytes < 256 * 1024)
		hdrs_add(&x->xf_resp, buf, nlen, v, (size_t)(end - v));
	return (len);
}

static size_t
write_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nitems, rc;

	if (x->xf_dead)
		return (0);
	if (!x->xf_headers_done)
		return (0); /* cannot happen with HTTP; refuse */
	rc = x->xf_cbs->xc_data(x->xf_arg, buf, len);
	if (rc == XFER_PAUSE) {
		x->xf_paused = 1;
		return (CURL_WRITEFUNC_PAUSE);
	}
	return (rc);
}

/*
 * Idle connections curl keeps for reuse. Its default is four per transfer
 * in progress, so after a burst it closes connections it will need again
 * a moment later; one per client connection tollgate may hold open never
 * closes a connection a waiting call could reuse.
 */
void
upstream_set_max_connections(int n)
{
	if (up_cv != NULL && n > 0)
		curl_multi_setopt(
		    curlev_multi(up_cv), CURLMOPT_MAXCONNECTS, (long)n);
}

/* Set up the multi handle on base, keeping up to max_conns connections. */
int
upstream_init(struct event_base *base, int max_conns)
{
	if ((up_cv = curlev_new(base, "upstream", &up_cbs, NULL)) == NULL)
		return (-1);
	curl_multi_setopt(
	    curlev_multi(up_cv), CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	upstream_set_max_connections(max_conns);
	return (0);
}

/* Free the multi handle; every transfer must be gone. */
void
upstream_shutdown(void)
{
	if (up_cv == NULL)
		return;
	while (up_npool > 0)
		curl_easy_cleanup(up_pool[--up_npool]);
	while (up_norigins > 0)
		free(up_origins[--up_norigins].or_name);
	up_origin_evict = 0;
	curlev_free(up_cv);
	up_cv = NULL;
}

static void
add_header(struct xfer *x, const char *line)
{
	struct curl_slist *l;

	if ((l = curl_slist_append(x->xf_headers, line)) == NULL)
		fatalx("%s: curl_slist_append", __func__);
	x->xf_headers = l;
}

/*
 * Add "name: value", or "name;" for an empty value (curl's way to send a
 * header with no value). The line is built in place, not with printf,
 * and wiped after curl has copied it: the value may be a key.
 */
static void
add_header_line(struct xfer *x, const char *name, const char *value)
{
	char buf[512], *line = buf;
	size_t nlen = strlen(name), vlen = strlen(value), len;

	len = vlen == 0 ? nlen + 1 : nlen + 2 + vlen;
	if (len + 1 > sizeof(buf))
		line = xmalloc(len + 1);
	memcpy(line, name, nlen);
	if (vlen == 0)
		line[nlen] = ';';
	else {
		line[nlen] = ':';
		line[nlen + 1] = ' ';
		memcpy(line + nlen + 2, value, vlen);
	}
	line[len] = '\0';
	add_header(x, line);
	explicit_bzero(line, len);
	if (line != buf)
		free(line);
}

/*
 * Start a transfer to uc: method GET or POST, url already built from base
 * (one of uc's base URLs, borrowed for the transfer) and the routed path, headers already filtered by the
 * caller, body borrowed (it must outlive the transfer). stream is set when
 * the response is expected to be an event stream. Returns NULL if curl
 * refuses the transfer.
 */
struct xfer *
xfer_start(const struct upstream_conf *uc, const char *base, const char *method,
    const char *url, const struct hdrs *hs, const char *body, size_t bodylen,
    int stream, const struct xfer_cbs *cbs, void *arg)
{
	struct xfer *x;
	struct origin *o;
	CURL *e;
	size_t i;
	int is_post = strcmp(method, "POST") == 0;
	int have_ct = 0, have_accept = 0;

	x = xcalloc(1, sizeof(*x));
	x->xf_cbs = cbs;
	x->xf_arg = arg;
	/* A stream's handle is never a reused one: see XFER_STREAM_BUFSIZE. */
	x->xf_stream = stream;
	x->xf_tls = strncmp(base, "https:", 6) == 0;
	x->xf_base_url = base;
	if ((e = x->xf_easy = stream ? curl_easy_init() : easy_get()) == NULL)
		fatalx("%s: curl_easy_init", __func__);

	for (i = 0; i < hs->hs_n; i++) {
		const struct hdr *h = &hs->hs_v[i];

		if (strcasecmp(h->h_name, "Content-Type") == 0)
			have_ct = 1;
		if (strcasecmp(h->h_name, "Accept") == 0)
			have_accept = 1;
		add_header_line(x, h->h_name, h->h_value);
	}
	/* Headers curl would add on its own are removed unless the client
	 * sent them, so the provider sees what the client sent. */
	if (!have_ct)
		add_header(x, "Content-Type:");
	if (!have_accept)
		add_header(x, "Accept:");
	add_header(x, "Expect:");
	/* Bodies must stay readable for metering. */
	add_header(x, "Accept-Encoding: identity");

	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->xf_errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->xf_headers);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(
	    e, CURLOPT_PROTOCOLS_STR, x->xf_tls ? "https" : "http");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(
	    e, CURLOPT_CONNECTTIMEOUT_MS, uc->uc_connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (uc->uc_ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, uc->uc_ca_file);
	/* Waiting for multiplexing: see up_origins. */
	if (x->xf_tls) {
		curl_easy_setopt(
		    e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		o = origin_find(base, 0);
		curl_easy_setopt(
		    e, CURLOPT_PIPEWAIT, o != NULL && o->or_h2 ? 1L : 0L);
	} else {
		curl_easy_setopt(
		    e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(e, CURLOPT_PIPEWAIT, 0L);
	}
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
	if (stream)
		curl_easy_setopt(e, CURLOPT_BUFFERSIZE, XFER_STREAM_BUFSIZE);
	if (is_post) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(
		    e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bodylen);
		curl_easy_setopt(
		    e, CURLOPT_POSTFIELDS, bodylen > 0 ? body : "");
	} else
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);

	if (curlev_add(up_cv, e) != 0) {
		if (stream)
			curl_easy_cleanup(e);
		else
			easy_put(e);
		curl_slist_free_all(x->xf_headers);
		free(x);
		return (NULL);
	}
	return (x);
}

/*
 * Has the request begun to go out? Until a connection is made (and its TLS
 * handshake done) nothing of it has reached the provider.
 */
int
xfer_sent(const struct xfer *x)
{
	return (x->xf_sent);
}

/* Continue a paused transfer; curl may deliver data from inside this. */
void
xfer_resume(struct xfer *x)
{
	if (x->xf_dead || !x->xf_paused)
		return;
	x->xf_paused = 0;
	/* curl may run x's callbacks from inside; one may free x. */
	curlev_enter(up_cv);
	curl_easy_pause(x->xf_easy, CURLPAUSE_CONT);
	curlev_leave(up_cv);
}

/*
 * End a transfer and free it. An unfinished transfer is aborted, which
 * closes its connection so the provider sees the call end. No callback
 * fires after this.
 */
void
xfer_free(struct xfer *x)
{
	if (x == NULL)
		return;
	if (up_cv != NULL && curlev_inside(up_cv)) {
		if (!x->xf_dead) {
			x->xf_dead = 1;
			x->xf_reap_next = up_reap;
			up_reap = x;
		}
		return;
	}
	if (up_cv != NULL)
		curlev_remove(up_cv, x->xf_easy);
	/* A stream's handle is not kept for reuse: see XFER_STREAM_BUFSIZE. */
	if (x->xf_stream)
		curl_easy_cleanup(x->xf_easy);
	else
		easy_put(x->xf_easy);
	curl_slist_free_all(x->xf_headers);
	hdrs_clear(&x->xf_resp);
	free(x);
}

/*
 * The wait a response asked for, in ms: retry-after-ms when it holds a
 * number (finer, and what several providers send), else Retry-After,
 * delay-seconds or an HTTP date (RFC 9110 10.2.3); 0 when absent,
 * unreadable or past. At most a day: the callers bound it further.
 */
long
upstream_retry_after(const struct hdrs *resp)
{
	const char *v;
	char *end;
	long long n;
	time_t t, now;

	if ((v = hdrs_get(resp, "retry-after-ms")) != NULL) {
		v += strspn(v, " \t");
		if (*v >= '0' && *v <= '9') {
			n = strtoll(v, &end, 10);
			if (*end == '\0' || *end == ' ' || *end == '\t' ||
			    *end == '.')
				return (n > RETRY_AFTER_MAX_MS
					? RETRY_AFTER_MAX_MS
					: (long)n);
		}
	}
	if ((v = hdrs_get(resp, "Retry-After")) == NULL)
		return (0);
	v += strspn(v, " \t");
	if (*v >= '0' && *v <= '9') {
		n = strtoll(v, &end, 10);
		if (*end != '\0' && *end != ' ' && *end != '\t')
			return (0);
		return (n > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS
						      : (long)n * 1000);
	}
	if ((t = curl_getdate(v, NULL)) == -1)
		return (0);
	now = time(NULL);
	if (t <= now)
		return (0);
	return (t - now > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS
						    : (long)(t - now) * 1000);
}
