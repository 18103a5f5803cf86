/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.1 request heads, header lists, and the header classifications the
 * proxy needs: which are hop-by-hop (never forwarded, RFC 9110 §7.6.1) and
 * which carry secrets (never logged).
 *
 * The head parser is strict on purpose; see http_head_parse. It is a pure
 * function of the bytes it is given, so unit tests feed it every split of
 * a request and check the result never changes.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

/*
 * Append a header; name and value need not be NUL-terminated (a NUL ends
 * either early, as strndup would). Both strings live in one allocation,
 * the name first: h_name owns it and h_value points into it.
 */
void
hdrs_add(struct hdrs *hs, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	struct hdr *h;
	size_t n = strnlen(name, nlen), v = strnlen(value, vlen);

	if (hs->hs_n == hs->hs_cap) {
		hs->hs_cap = hs->hs_cap == 0 ? 16 : hs->hs_cap * 2;
		hs->hs_v =
		    xreallocarray(hs->hs_v, hs->hs_cap, sizeof(*hs->hs_v));
	}
	h = &hs->hs_v[hs->hs_n++];
	h->h_name = xmalloc(n + 1 + v + 1);
	memcpy(h->h_name, name, n);
	h->h_name[n] = '\0';
	h->h_value = h->h_name + n + 1;
	memcpy(h->h_value, value, v);
	h->h_value[v] = '\0';
	hs->hs_bytes += nlen + vlen;
}

/* The value of the first header called name, or NULL. */
const char *
hdrs_get(const struct hdrs *hs, const char *name)
{
	size_t i;

	for (i = 0; i < hs->hs_n; i++) {
		if (strcasecmp(hs->hs_v[i].h_name, name) == 0)
			return (hs->hs_v[i].h_value);
	}
	return (NULL);
}

/* How many headers are called name. */
size_t
hdrs_count(const struct hdrs *hs, const char *name)
{
	size_t i, n = 0;

	for (i = 0; i < hs->hs_n; i++) {
		if (strcasecmp(hs->hs_v[i].h_name, name) == 0)
			n++;
	}
	return (n);
}

/* Free every header; the list can be reused. Values are wiped first since
 * they may hold keys. */
void
hdrs_clear(struct hdrs *hs)
{
	size_t i;

	for (i = 0; i < hs->hs_n; i++) {
		explicit_bzero(
		    hs->hs_v[i].h_value, strlen(hs->hs_v[i].h_value));
		free(hs->hs_v[i].h_name);
	}
	free(hs->hs_v);
	memset(hs, 0, sizeof(*hs));
}

/* Does a comma-separated header value contain token (any case)? */
int
http_token_has(const char *value, const char *token)
{
	size_t tlen = strlen(token);
	const char *p = value;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (strncasecmp(p, token, tlen) == 0) {
			const char *e = p + tlen;

			while (*e == ' ' || *e == '\t')
				e++;
			if (*e == ',' || *e == '\0')
				return (1);
		}
		while (*p != '\0' && *p != ',')
			p++;
	}
	return (0);
}

/*
 * Headers that describe one connection and are never forwarded. Every
 * header of every call is asked, so the name's length picks the one or two
 * candidates it could be before any comparison.
 */
int
http_is_hop_by_hop(const char *name)
{
	switch (strlen(name)) {
	case 2:
		return (strcasecmp(name, "TE") == 0);
	case 7:
		return (strcasecmp(name, "Trailer") == 0 ||
		    strcasecmp(name, "Upgrade") == 0);
	case 10:
		return (strcasecmp(name, "Connection") == 0 ||
		    strcasecmp(name, "Keep-Alive") == 0);
	case 16:
		return (strcasecmp(name, "Proxy-Connection") == 0);
	case 17:
		return (strcasecmp(name, "Transfer-Encoding") == 0);
	case 18:
		return (strcasecmp(name, "Proxy-Authenticate") == 0);
	case 19:
		return (strcasecmp(name, "Proxy-Authorization") == 0);
	default:
		return (0);
	}
}

/* Headers whose values are credentials. */
int
http_is_secret_header(const char *name)
{
	static const char *secret[] = {
	    "Authorization",
	    "Proxy-Authorization",
	    "x-api-key",
	    "api-key",
	    "x-goog-api-key",
	    "Cookie",
	};
	size_t i;

	for (i = 0; i < nitems(secret); i++) {
		if (strcasecmp(name, secret[i]) == 0)
			return (1);
	}
	return (0);
}

/* Free a request and everything it owns. */
void
http_request_free(struct http_request *req)
{
	if (req == NULL)
		return;
	free(req->hr_method);
	free(req->hr_target);
	hdrs_clear(&req->hr_headers);
	if (req->hr_body != NULL)
		evbuffer_free(req->hr_body);
	free(req);
}

static enum head_result
head_error(
    struct head_parser *hp, int status, const char *code, const char *msg)
{
	hp->hp_status = status;
	hp->hp_code = code;
	hp->hp_msg = msg;
	return (HEAD_ERROR);
}

/* A tchar of RFC 9110 §5.6.2: the bytes a method or header name may use. */
static int
tokenchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return (1);
	switch (c) {
	case '!':
	case '#':
	case '$':
	case '%':
	case '&':
	case '\'':
	case '*':
	case '+':
	case '-':
	case '.':
	case '^':
	case '_':
	case '`':
	case '|':
	case '~':
		return (1);
	default:
		return (0);
	}
}

/*
 * "METHOD SP request-target SP HTTP/1.x", len bytes without NUL: 0, -1
 * malformed, -2 version.
 */
static int
parse_request_line(struct http_request *req, const char *line, size_t len)
{
	const char *end = line + len, *sp1, *sp2, *ver, *p;
	size_t vlen;

	if ((sp1 = memchr(line, ' ', len)) == NULL ||
	    (sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1))) == NULL ||
	    memchr(sp2 + 1, ' ', (size_t)(end - sp2 - 1)) != NULL)
		return (-1);
	if (sp1 == line || sp2 == sp1 + 1)
		return (-1);
	for (p = line; p < sp1; p++) {
		if (!tokenchar((unsigned char)*p))
			return (-1);
	}
	for (p = sp1 + 1; p < sp2; p++) {
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return (-1);
	}
	ver = sp2 + 1;
	vlen = (size_t)(end - ver);
	if (vlen == 8 && memcmp(ver, "HTTP/1.1", 8) == 0)
		req->hr_minor = 1;
	else if (vlen == 8 && memcmp(ver, "HTTP/1.0", 8) == 0)
		req->hr_minor = 0;
	else if (vlen >= 5 && memcmp(ver, "HTTP/", 5) == 0)
		return (-2);
	else
		return (-1);
	req->hr_method = xstrndup(line, (size_t)(sp1 - line));
	req->hr_target = xstrndup(sp1 + 1, (size_t)(sp2 - sp1 - 1));
	return (0);
}

/* "name: value" with optional whitespace around the value. */
static int
parse_header_line(struct http_request *req, const char *line, size_t len)
{
	const char *colon, *v, *end, *p;
	unsigned char c;

	if (line[0] == ' ' || line[0] == '\t')
		return (-1); /* obs-fold */
	if ((colon = memchr(line, ':', len)) == NULL || colon == line)
		return (-1);
	for (p = line; p < colon; p++) {
		if (!tokenchar((unsigned char)*p))
			return (-1);
	}
	v = colon + 1;
	end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	for (p = v; p < end; p++) {
		c = (unsigned char)*p;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return (-1);
	}
	hdrs_add(&req->hr_headers, line, (size_t)(colon - line), v,
	    (size_t)(end - v));
	return (0);
}

/*
 * Decide the body's framing once the head is complete. The headers it
 * needs are picked out in one pass over the list.
 */
static enum head_result
check_framing(struct head_parser *hp, const struct head_limits *hl,
    struct http_request *req)
{
	const struct hdrs *hs = &req->hr_headers;
	const char *cl = NULL, *conn = NULL, *expect = NULL, *name, *p;
	unsigned long long n = 0;
	size_t i, ncl = 0, nhost = 0;
	int te = 0;

	for (i = 0; i < hs->hs_n; i++) {
		name = hs->hs_v[i].h_name;
		switch (strlen(name)) {
		case 4:
			if (strcasecmp(name, "Host") == 0)
				nhost++;
			break;
		case 6:
			if (expect == NULL && strcasecmp(name, "Expect") == 0)
				expect = hs->hs_v[i].h_value;
			break;
		case 10:
			if (conn == NULL && strcasecmp(name, "Connection") == 0)
				conn = hs->hs_v[i].h_value;
			break;
		case 14:
			if (strcasecmp(name, "Content-Length") == 0 &&
			    ncl++ == 0)
				cl = hs->hs_v[i].h_value;
			break;
		case 17:
			if (strcasecmp(name, "Transfer-Encoding") == 0)
				te = 1;
			break;
		}
	}
	if (te) {
		/* The Debian libevent's chunked handling is where the
		 * smuggling bugs live, and no LLM SDK needs chunked uploads:
		 * refuse every Transfer-Encoding. */
		return (head_error(hp, 411, "transfer_encoding_refused",
		    "Transfer-Encoding is not accepted; send Content-Length"));
	}
	if (ncl > 1)
		return (head_error(hp, 400, "bad_content_length",
		    "more than one Content-Length"));
	if (cl != NULL) {
		if (cl[0] == '\0' || strlen(cl) > 19)
			goto badcl;
		for (p = cl; *p != '\0'; p++) {
			if (*p < '0' || *p > '9')
				goto badcl;
			n = n * 10 + (unsigned long long)(*p - '0');
		}
	}
	if (req->hr_minor >= 1 && nhost != 1)
		return (head_error(hp, 400, "bad_host",
		    "exactly one Host header is required"));
	if (expect != NULL) {
		if (strcasecmp(expect, "100-continue") != 0)
			return (head_error(hp, 417, "bad_expect",
			    "only Expect: 100-continue is supported"));
		req->hr_expect_continue = req->hr_minor >= 1;
	}
	if (n > hl->hl_max_body_bytes)
		return (head_error(hp, 413, "request_too_large",
		    "request body is larger than the configured limit"));
	req->hr_content_length = (size_t)n;

	if (req->hr_minor == 0)
		req->hr_keepalive = 0;
	else
		req->hr_keepalive =
		    conn == NULL || !http_token_has(conn, "close");
	return (HEAD_DONE);
badcl:
	return (head_error(hp, 400, "bad_content_length",
	    "Content-Length is not a plain decimal number"));
}

/*
 * The first CRLF in [p, end), or NULL; *lf says whether there is any LF in
 * [p, end) at all.
 */
static const char *
find_crlf(const char *p, const char *end, int *lf)
{
	const char *start = p, *nl;

	*lf = 0;
	while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		*lf = 1;
		if (nl > start && nl[-1] == '\r')
			return (nl - 1);
		p = nl + 1;
	}
	return (NULL);
}

/*
 * Read a request head from in into req, consuming exactly the head's bytes.
 * Strict: lines end in CRLF only (a bare CR, LF or NUL is an error), no
 * obs-fold, token header names with no space before the colon. A line's
 * size is checked against the limit before it is parsed, so an over-long
 * head is refused as soon as it passes the limit. Lines are parsed where
 * they lie in the (made contiguous) input and drained once, when the
 * parser returns; a line that was looked at counts as consumed exactly
 * as if it had been read out. On HEAD_ERROR, hp says what to answer; the
 * connection must then be closed.
 */
enum head_result
http_head_parse(struct head_parser *hp, struct evbuffer *in,
    const struct head_limits *hl, struct http_request *req)
{
	const char *buf = "", *end, *line, *crlf;
	size_t off = 0, total, len;
	enum head_result r;
	int lf, rc;

	total = evbuffer_get_length(in);
	if (total > 0 && (buf = (const char *)evbuffer_pullup(in, -1)) == NULL)
		fatalx("%s: evbuffer_pullup", __func__);
	end = buf + total;
	for (;;) {
		line = buf + off;
		if ((crlf = find_crlf(line, end, &lf)) == NULL) {
			/* No CRLF yet: a lone LF is bare-LF framing. */
			if (lf)
				r = head_error(hp, 400, "bad_request",
				    "bare LF in the request head");
			else if (hp->hp_bytes + (total - off) >
			    hl->hl_max_header_bytes)
				r = head_error(hp, 431, "headers_too_large",
				    "request line and headers are too large");
			else
				r = HEAD_NEED_MORE;
			break;
		}
		len = (size_t)(crlf - line);
		if (hp->hp_bytes + len + 2 > hl->hl_max_header_bytes) {
			r = head_error(hp, 431, "headers_too_large",
			    "request line and headers are too large");
			break;
		}
		off += len + 2;
		hp->hp_bytes += len + 2;
		if (memchr(line, '\0', len) != NULL ||
		    memchr(line, '\r', len) != NULL ||
		    memchr(line, '\n', len) != NULL) {
			r = head_error(hp, 400, "bad_request",
			    "bare CR, LF or NUL in the request head");
			break;
		}
		if (req->hr_method == NULL) {
			if (len == 0 && hp->hp_crlf_skipped < 4) {
				hp->hp_crlf_skipped++;
				continue;
			}
			rc = parse_request_line(req, line, len);
			if (rc == -2) {
				r = head_error(hp, 505, "bad_version",
				    "only HTTP/1.0 and HTTP/1.1 are served");
				break;
			}
			if (rc == -1) {
				r = head_error(hp, 400, "bad_request",
				    "malformed request line");
				break;
			}
			continue;
		}
		if (len == 0) {
			r = check_framing(hp, hl, req);
			break;
		}
		if (req->hr_headers.hs_n >= hl->hl_max_headers) {
			r = head_error(hp, 431, "too_many_headers",
			    "too many request headers");
			break;
		}
		if (parse_header_line(req, line, len) == -1) {
			r = head_error(
			    hp, 400, "bad_request", "malformed header line");
			break;
		}
	}
	if (off > 0)
		evbuffer_drain(in, off);
	return (r);
}
