/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The request-head parser: a table of raw heads with the expected outcome,
 * each also fed in every two-piece split and one byte at a time, which must
 * never change the result (docs/reliability.md, applied to heads).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "tollgate/http.h"
#include "tollgate/util.h"

static const struct head_limits limits = {
    .hl_max_header_bytes = 1024,
    .hl_max_headers = 8,
    .hl_max_body_bytes = 1000,
};

struct head_case {
	const char *name;
	const char *raw;
	size_t rawlen; /* 0: strlen(raw) */
	enum head_result result;
	int status; /* on HEAD_ERROR */
	const char *method; /* on HEAD_DONE */
	const char *target;
	size_t clen;
	int keepalive;
	size_t nheaders;
	const char *rest; /* bytes left in the buffer after the head */
};

#define OK(n_, r_, m_, t_, cl_, ka_, nh_, rest_)                               \
	{                                                                      \
		.name = n_, .raw = r_, .result = HEAD_DONE, .method = m_,      \
		.target = t_, .clen = cl_, .keepalive = ka_, .nheaders = nh_,  \
		.rest = rest_                                                  \
	}
#define BAD(n_, r_, st_)                                                       \
	{                                                                      \
		.name = n_, .raw = r_, .result = HEAD_ERROR, .status = st_     \
	}
#define MORE(n_, r_)                                                           \
	{                                                                      \
		.name = n_, .raw = r_, .result = HEAD_NEED_MORE                \
	}

static const struct head_case cases[] = {
    OK("simple post",
	"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
	"Content-Length: 5\r\n\r\nhello",
	"POST", "/v1/chat/completions", 5, 1, 2, "hello"),
    OK("get, no body", "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", "GET",
	"/v1/models", 0, 1, 1, ""),
    OK("connection close",
	"POST /v1/x HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close"
	"\r\n\r\n",
	"POST", "/v1/x", 0, 0, 2, ""),
    OK("http/1.0 has no keep-alive", "POST /v1/x HTTP/1.0\r\n\r\n", "POST",
	"/v1/x", 0, 0, 0, ""),
    OK("leading empty lines skipped",
	"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/", 0, 1, 1, ""),
    OK("whitespace around values",
	"GET / HTTP/1.1\r\nHost:   x  \t\r\nX-A:\r\n\r\n", "GET", "/", 0, 1, 2,
	""),
    OK("pipelined request stays in the buffer",
	"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n", "GET", "/", 0,
	1, 1, "GET /2 HTTP/1.1\r\n"),
    OK("body exactly at the limit",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", "POST",
	"/", 1000, 1, 2, ""),
    OK("names in any case",
	"POST / HTTP/1.1\r\nhOST: x\r\ncontent-LENGTH: 2\r\n"
	"CONNECTION: Close\r\n\r\nhi",
	"POST", "/", 2, 0, 3, "hi"),
    OK("the first Connection header decides",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n"
	"Connection: close\r\n\r\n",
	"GET", "/", 0, 1, 3, ""),
    OK("obs-text in a value",
	"GET / HTTP/1.1\r\nHost: x\r\nX-L: caf\xe9\r\n\r\n", "GET", "/", 0, 1,
	2, ""),

    BAD("chunked",
	"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
	"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	411),
    BAD("gzip, chunked",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Transfer-Encoding: gzip, chunked\r\n\r\n",
	411),
    BAD("CL and TE",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
	"Transfer-Encoding: chunked\r\n\r\n",
	411),
    BAD("TE with odd case",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"transfer-encoding: identity\r\n\r\n",
	411),
    BAD("two content lengths",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Content-Length: 5\r\nContent-Length: 50\r\n\r\n",
	400),
    BAD("plus sign length",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Content-Length: +5\r\n\r\n",
	400),
    BAD("hex length",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Content-Length: 0x5\r\n\r\n",
	400),
    BAD("list length",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Content-Length: 5, 5\r\n\r\n",
	400),
    BAD("empty length",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Content-Length:\r\n\r\n",
	400),
    BAD("huge length",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Content-Length: 99999999999999999999\r\n\r\n",
	400),
    BAD("body over the limit",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Content-Length: 1001\r\n\r\n",
	413),
    BAD("no host", "GET / HTTP/1.1\r\n\r\n", 400),
    BAD("two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    BAD("bare LF lines", "GET / HTTP/1.1\nHost: x\n\n", 400),
    BAD("bare LF inside", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),
    BAD("bare CR inside", "GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
    BAD("bare LF before a CRLF", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    BAD("bare CR before a CRLF", "GET / HTTP/1.1\r\r\nHost: x\r\n\r\n", 400),
    BAD("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    BAD("space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    BAD("no colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
    BAD("empty name", "GET / HTTP/1.1\r\n: x\r\n\r\n", 400),
    BAD("control char in value", "GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n", 400),
    BAD("too many headers",
	"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\n"
	"C: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n\r\n",
	431),
    BAD("unknown version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    BAD("no version", "GET /\r\nHost: x\r\n\r\n", 400),
    BAD("version with a suffix", "GET / HTTP/1.1x\r\nHost: x\r\n\r\n", 505),
    BAD("version without digits", "GET / HTTP/\r\nHost: x\r\n\r\n", 505),
    BAD("not HTTP", "GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
    BAD("space after the version", "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
    BAD("two hosts in any case", "GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n",
	400),
    BAD("two lengths in any case",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Content-Length: 5\r\ncontent-length: 5\r\n\r\n",
	400),
    BAD("double space", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    BAD("space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    BAD("bad method char", "GE(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    BAD("expect other",
	"POST / HTTP/1.1\r\nHost: x\r\n"
	"Expect: 200-ok\r\n\r\n",
	417),

    MORE("partial head", "POST / HTTP/1.1\r\nHost: x\r\n"),
    MORE("partial line", "POST / HTTP/1.1\r\nHo"),
    MORE("CR at the end", "POST / HTTP/1.1\r"),
};

static enum head_result
feed(const struct head_case *c, const size_t *cuts, size_t ncuts,
    struct http_request *req, struct head_parser *hp, struct evbuffer *in)
{
	size_t len = c->rawlen != 0 ? c->rawlen : strlen(c->raw), off = 0, i;
	enum head_result r = HEAD_NEED_MORE;

	memset(hp, 0, sizeof(*hp));
	for (i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : len;

		evbuffer_add(in, c->raw + off, end - off);
		off = end;
		r = http_head_parse(hp, in, &limits, req);
		if (r != HEAD_NEED_MORE)
			break;
	}
	if (r == HEAD_DONE && off < len)
		evbuffer_add(in, c->raw + off, len - off);
	return (r);
}

static void
check(const struct head_case *c, const size_t *cuts, size_t ncuts,
    const char *how)
{
	struct http_request *req = xcalloc(1, sizeof(*req));
	struct evbuffer *in = evbuffer_new();
	struct head_parser hp;
	enum head_result r;
	size_t restlen;

	r = feed(c, cuts, ncuts, req, &hp, in);
	if (r != c->result)
		fail_msg(
		    "%s (%s): result %d, want %d", c->name, how, r, c->result);
	if (r == HEAD_ERROR && hp.hp_status != c->status)
		fail_msg("%s (%s): status %d, want %d", c->name, how,
		    hp.hp_status, c->status);
	if (r == HEAD_ERROR) {
		assert_non_null(hp.hp_code);
		assert_non_null(hp.hp_msg);
	}
	if (r == HEAD_DONE) {
		assert_string_equal(req->hr_method, c->method);
		assert_string_equal(req->hr_target, c->target);
		if (req->hr_content_length != c->clen ||
		    req->hr_keepalive != c->keepalive ||
		    req->hr_headers.hs_n != c->nheaders)
			fail_msg("%s (%s): clen %zu keepalive %d headers %zu",
			    c->name, how, req->hr_content_length,
			    req->hr_keepalive, req->hr_headers.hs_n);
		restlen = evbuffer_get_length(in);
		if (restlen != strlen(c->rest) ||
		    (restlen > 0 &&
			memcmp(evbuffer_pullup(in, -1), c->rest, restlen) != 0))
			fail_msg("%s (%s): wrong bytes left", c->name, how);
	}
	evbuffer_free(in);
	http_request_free(req);
}

static void
test_heads_whole(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++)
		check(&cases[i], NULL, 0, "whole");
}

static void
test_heads_every_split(void **state)
{
	char how[32];
	size_t i, cut, len;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		len = strlen(cases[i].raw);
		for (cut = 1; cut < len; cut++) {
			snprintf(how, sizeof(how), "split at %zu", cut);
			check(&cases[i], &cut, 1, how);
		}
	}
}

static void
test_heads_byte_by_byte(void **state)
{
	size_t i, j, len, *cuts;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		len = strlen(cases[i].raw);
		if (len < 2)
			continue;
		cuts = xcalloc(len, sizeof(*cuts));
		for (j = 0; j + 1 < len; j++)
			cuts[j] = j + 1;
		check(&cases[i], cuts, len - 1, "byte by byte");
		free(cuts);
	}
}

static void
test_head_too_large_unterminated(void **state)
{
	struct http_request *req = xcalloc(1, sizeof(*req));
	struct evbuffer *in = evbuffer_new();
	struct head_parser hp = {0};
	char big[2048];

	(void)state;
	/* A head that never ends is refused as soon as it passes the
	 * limit, without waiting for a line end. */
	memset(big, 'a', sizeof(big));
	evbuffer_add(in, "GET / HTTP/1.1\r\nX: ", 19);
	evbuffer_add(in, big, sizeof(big));
	assert_int_equal(http_head_parse(&hp, in, &limits, req), HEAD_ERROR);
	assert_int_equal(hp.hp_status, 431);
	evbuffer_free(in);
	http_request_free(req);
}

static void
test_head_error_messages(void **state)
{
	static const struct {
		const char *raw;
		int status;
		const char *msg;
	} msgs[] = {
	    {"GET / HTTP/1.1\nHost: x\n", 400, "bare LF in the request head"},
	    {"GET / HTTP/1.1\nHost: x\r\n", 400,
		"bare CR, LF or NUL in the request head"},
	    {"GET / HTTP/1.1\r\nX: aaaaaaaa\naaaaaaaa", 400,
		"bare LF in the request head"},
	};
	struct http_request *req;
	struct evbuffer *in;
	struct head_parser hp;
	char big[1100];
	size_t i;

	(void)state;
	for (i = 0; i < nitems(msgs); i++) {
		req = xcalloc(1, sizeof(*req));
		in = evbuffer_new();
		memset(&hp, 0, sizeof(hp));
		evbuffer_add(in, msgs[i].raw, strlen(msgs[i].raw));
		assert_int_equal(
		    http_head_parse(&hp, in, &limits, req), HEAD_ERROR);
		assert_int_equal(hp.hp_status, msgs[i].status);
		assert_string_equal(hp.hp_msg, msgs[i].msg);
		evbuffer_free(in);
		http_request_free(req);
	}

	/* A line that ends past the limit is refused for its size even when
	 * it holds a bare LF, and before any of it is parsed. */
	req = xcalloc(1, sizeof(*req));
	in = evbuffer_new();
	memset(&hp, 0, sizeof(hp));
	memset(big, 'a', sizeof(big));
	big[10] = '\n';
	evbuffer_add(in, "GET / HTTP/1.1\r\nX: ", 19);
	evbuffer_add(in, big, sizeof(big));
	evbuffer_add(in, "\r\n\r\n", 4);
	assert_int_equal(http_head_parse(&hp, in, &limits, req), HEAD_ERROR);
	assert_int_equal(hp.hp_status, 431);
	assert_int_equal(req->hr_headers.hs_n, 0);
	evbuffer_free(in);
	http_request_free(req);
}

static void
test_token_lists(void **state)
{
	(void)state;
	assert_true(http_token_has("keep-alive, Close", "close"));
	assert_true(http_token_has("close", "close"));
	assert_false(http_token_has("closed", "close"));
	assert_false(http_token_has("x-close", "close"));
	assert_true(http_token_has(" a ,b , c", "b"));
	assert_true(http_is_hop_by_hop("transfer-encoding"));
	assert_false(http_is_hop_by_hop("Authorization"));
	assert_true(http_is_secret_header("X-Goog-Api-Key"));
}

static void
test_hop_by_hop(void **state)
{
	static const char *hop[] = {
	    "Connection",
	    "connection",
	    "Keep-Alive",
	    "KEEP-ALIVE",
	    "Proxy-Authenticate",
	    "Proxy-Authorization",
	    "proxy-authorization",
	    "Proxy-Connection",
	    "TE",
	    "te",
	    "Trailer",
	    "trailer",
	    "Transfer-Encoding",
	    "Upgrade",
	    "uPGRADE",
	};
	static const char *end_to_end[] = {
	    "",
	    "T",
	    "TEE",
	    "Connections",
	    "Connectio",
	    "User-Agent",
	    "Set-Cookie",
	    "Keep_Alive",
	    "Trailers",
	    "Upgrade-Insecure-Requests",
	    "Proxy-Authorizatio",
	    "Proxy-Authorization2",
	    "Proxy-Authenticat",
	    "Transfer-Encodings",
	    "Content-Encoding",
	    "Content-Length",
	    "Host",
	    "Authorization",
	    "X-Tollgate-Team",
	};
	size_t i;

	(void)state;
	for (i = 0; i < nitems(hop); i++) {
		if (!http_is_hop_by_hop(hop[i]))
			fail_msg("%s: not hop-by-hop", hop[i]);
	}
	for (i = 0; i < nitems(end_to_end); i++) {
		if (http_is_hop_by_hop(end_to_end[i]))
			fail_msg("%s: hop-by-hop", end_to_end[i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_heads_whole),
	    cmocka_unit_test(test_heads_every_split),
	    cmocka_unit_test(test_heads_byte_by_byte),
	    cmocka_unit_test(test_head_too_large_unterminated),
	    cmocka_unit_test(test_head_error_messages),
	    cmocka_unit_test(test_token_lists),
	    cmocka_unit_test(test_hop_by_hop),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
