/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fakeprov: the fake LLM provider that every integration test and benchmark
 * runs as tollgate's upstream.  It is a small libevent evhttp server that
 * speaks the real wire formats of OpenAI (chat, legacy completions,
 * embeddings, Responses, Azure deployment paths), Anthropic (messages,
 * count_tokens) and Gemini (generateContent, streamGenerateContent,
 * countTokens, embedContent), non-streamed JSON and SSE, byte for byte as
 * described in docs/internals/wire.md.  Request headers named x-fake-* script
 * the reply (status, delays, pacing, hangs, resets, clean closes), and
 * --record appends one JSON line per request and per response end, so a
 * test can compare what the provider saw and sent with what tollgate
 * metered.  It is a test tool: one process, one event loop, no config.
 *
 * Command line:
 *   fakeprov [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE]
 *            [--record FILE]
 *            [--fail-status CODE | --fail-hang] [--fail-retry-after S]
 *            [--fail-retry-after-ms MS] [--fail-count N]
 *            [--fail-key SUBSTR]
 * The --fail options script this instance, whatever the request says, so
 * that two instances behind one tollgate can answer differently (a
 * failing primary, a healthy backup): the requests they match (all, or
 * those whose Authorization, api-key or x-api-key holds SUBSTR; only the
 * first N of them with --fail-count) are answered as if they carried
 * x-fake-status: CODE (and x-fake-retry-after: S, and a retry-after-ms:
 * MS header), or x-fake-hang:
 * headers with --fail-hang.
 * After binding it prints exactly one line to stdout,
 * "fakeprov listening on 127.0.0.1:PORT http" (or https), and flushes it.
 * SIGTERM and SIGINT make it free everything and exit 0.
 *
 * Deterministic usage, so tests can predict every number:
 *   P  prompt tokens = max(1, request body bytes / 4), or x-fake-input-tokens
 *   N  content events = x-fake-events (default 3); each carries
 *      x-fake-event-bytes (default 8) bytes of "tok tok " filler
 *   T  tokens per content event = x-fake-event-tokens (default 1)
 *   C  cached prompt tokens = x-fake-cached-tokens (default 0, <= P)
 *   W  cache-write prompt tokens = x-fake-cache-write-tokens (default 0)
 *   R  reasoning tokens = x-fake-reasoning-tokens (default 0)
 *   n  OpenAI chat/completions choices = body "n" (default 1, max 128)
 *   output tokens O = N * T * n + R (reasoning is inside the output total)
 * Per family:
 *   OpenAI chat: prompt_tokens P, cached_tokens C, completion_tokens O,
 *     reasoning_tokens R, total P + O (cache_write_tokens W only if W > 0).
 *   OpenAI legacy completions: prompt_tokens P, completion_tokens O, total.
 *   Responses: input_tokens P, cached_tokens C, output_tokens O,
 *     reasoning_tokens R, total P + O.
 *   Embeddings: prompt_tokens = total_tokens = P.
 *   Anthropic: input_tokens P - C - W, cache_read_input_tokens C,
 *     cache_creation_input_tokens W (so the three add up to P),
 *     output_tokens O; in a stream message_start has output_tokens 1 and
 *     message_delta the cumulative O (plus the input and cache fields again).
 *   Gemini: promptTokenCount P, cachedContentTokenCount C (if C > 0),
 *     candidatesTokenCount N * T, thoughtsTokenCount R, totalTokenCount
 *     P + N * T + R; every stream chunk carries the cumulative counts.
 *   count_tokens: {"input_tokens":P}; countTokens: {"totalTokens":P}.
 * The response "model" echoes the request model (body "model", the Azure
 * deployment, or the Gemini path segment) unless x-fake-model overrides it.
 *
 * Scenario knobs (request headers, all optional):
 *   x-fake-status: CODE      answer CODE with the family's error body
 *   x-fake-retry-after: S    add "retry-after: S" to the response
 *   x-fake-delay-ms: N       wait N ms before sending response headers
 *   x-fake-events: N         content events (default 3)
 *   x-fake-event-bytes: B    text bytes per content event (default 8)
 *   x-fake-event-tokens: T   tokens per content event (default 1)
 *   x-fake-pace-ms: N        wait N ms between SSE events (default 0)
 *   x-fake-end-delay-ms: N   wait N ms after the last stream event before
 *                            ending the body (a provider whose end of body
 *                            trails its [DONE])
 *   x-fake-hang: headers     never answer, keep the connection open
 *   x-fake-hang: body        send headers and the first event (non-stream:
 *                            the first half of the body), then nothing
 *   x-fake-reset-after: K    after K stream events, reset (RST)
 *   x-fake-close-after: K    after K stream events, close cleanly (FIN)
 *   x-fake-error-after: K    after K stream events, send the family's
 *                            mid-stream error event and end the response
 *                            (Gemini over SSE: a chunk {"error":{...}};
 *                            its JSON-array stream closes instead)
 *   x-fake-sse-timestamps: 1 prefix each SSE event with ": t=<CLOCK_MONOTONIC
 *                            microseconds>" (CRLF-terminated for Gemini)
 *   x-fake-input-tokens, x-fake-cached-tokens, x-fake-cache-write-tokens,
 *   x-fake-reasoning-tokens, x-fake-model: see "Deterministic usage".
 *   x-fake-model-hex: HEX    the response "model" is the bytes HEX spells,
 *                            written between the quotes as they are (not
 *                            escaped): a provider that answers with a name
 *                            that is not UTF-8
 *   x-fake-error-name-hex: HEX  the mid-stream error event's name (its
 *                            type, code or status) is the bytes HEX spells,
 *                            written as they are
 *   x-fake-tool: NAME        OpenAI chat and Anthropic messages answer with a
 *                            call of tool NAME whose arguments are the JSON
 *                            object {"q":"<the reply text>"}; streamed, each
 *                            content event carries one fragment of it
 * Anthropic messages whose body enables thinking ("thinking":{"type":
 * "enabled"|"adaptive"}) start with a thinking block ("fake thinking",
 * signature "sig_fake<seq>").
 * "Events" for the K knobs are SSE events on the wire, every kind counted:
 * an OpenAI chat stream is n role chunks, N*n content chunks, n finish
 * chunks, the usage chunk (include_usage only) and [DONE]; legacy
 * completions has no role chunks; Responses is 4 + N + 4 events; Anthropic
 * is message_start, content_block_start, ping, N deltas, content_block_stop,
 * message_delta, message_stop, with 4 more (start, thinking_delta,
 * signature_delta, stop) before the text block when thinking, and N + 2 more
 * (start, N input_json_delta, stop) after it with x-fake-tool; Gemini is
 * max(N, 1) chunks.  With x-fake-tool an OpenAI chat stream has the same
 * events as without: the role chunk opens the tool call and the content
 * chunks carry argument fragments.  K = 0 acts right
 * after the response headers were flushed.  A non-stream reply with a reset
 * or close knob is reset or closed instead of being answered.
 *
 * Every stream event is written only after the previous one was flushed to
 * the socket, so a slow reader makes fakeprov wait instead of buffering.
 *
 * --record FILE appends, and flushes, one JSON object per line:
 *   {"seq":N,"event":"request","method":"POST","path":"/v1/...?q",
 *    "headers":[["Name","value"],...],"body":"...","body_len":N}
 *     (headers in received order and case; "body_b64" instead of "body"
 *     when the body is not valid UTF-8)
 *   {"seq":N,"event":"done"}            response fully sent
 *   {"seq":N,"event":"client_closed"}   peer closed or a write failed first
 *   {"seq":N,"event":"reset"}           reset on purpose (x-fake-reset-after)
 *   {"seq":N,"event":"closed"}          closed on purpose (x-fake-close-after)
 *   {"seq":N,"event":"closed","reason":"shutdown"}  fakeprov was stopped
 */

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <cjson/cJSON.h>

#define FILLER_LEN 4096
#define MAX_EVENTS 10000000L
#define MAX_EBYTES (1L << 20)
#define MAX_TEXT (256L << 20)
#define MAX_BODY (256L << 20)
#define MAX_HEADERS (1L << 20)
#define MAX_CHOICES 128
#define MAX_TOKENS 1000000000000LL
#define CONN_TIMEOUT 3600
#define RESET_WAIT_MS 2000
#define CREATED 1735689600L
#define EMBED_DIMS 8

enum family { FAM_OPENAI, FAM_ANTHROPIC, FAM_GEMINI };

enum endpoint {
	EP_NOTFOUND,
	EP_MODELS,
	EP_CHAT,
	EP_COMPLETIONS,
	EP_EMBEDDINGS,
	EP_RESPONSES,
	EP_MESSAGES,
	EP_COUNT_TOKENS,
	EP_GENERATE,
	EP_STREAM_GENERATE,
	EP_GEMINI_COUNT,
	EP_EMBED_CONTENT
};

enum hang { HANG_NONE, HANG_HEADERS, HANG_BODY };

enum action {
	ACT_NONE,
	ACT_RESPOND,
	ACT_NEXT,
	ACT_POLL,
	ACT_RESET,
	ACT_CLOSE,
	ACT_END
};

/*
 * One request and its response.  Created when evhttp hands us a complete
 * request, freed by exactly one of xchg_complete_cb (fully sent) or
 * xchg_closed_cb (the connection went away first, on purpose or not).
 */
struct xchg {
	TAILQ_ENTRY(xchg) x_entry;
	unsigned long long x_seq;
	struct evhttp_request *x_req; /* borrowed from evhttp */
	struct evhttp_connection *x_evcon; /* borrowed from evhttp */
	struct event *x_timer; /* owned: delay, pace, aborts */
	struct event *x_watch; /* owned: peer-close watcher */
	struct evbuffer *x_buf; /* owned: scratch for one event */
	char *x_model; /* owned: JSON string literal */
	char *x_tool; /* owned: JSON string literal of x-fake-tool, or NULL */
	char *x_errname; /* owned: JSON string literal, or NULL: the default */
	enum endpoint x_ep;
	enum family x_fam;
	enum hang x_hang;
	enum action x_act;
	int x_stream; /* answer as a stream */
	int x_sse; /* SSE framing (else Gemini's JSON array) */
	int x_usage; /* stream_options.include_usage */
	int x_timestamps; /* x-fake-sse-timestamps */
	int x_status; /* x-fake-status, or 0 */
	int x_bad_json; /* body present but not JSON */
	int x_inflight; /* a stream event awaits its flush */
	int x_erred; /* the mid-stream error event was sent */
	int x_userdone; /* evhttp_send_reply*() ended the response */
	int x_waited; /* ms spent waiting for the peer's ACKs */
	int x_thinking; /* Anthropic: the body enables thinking */
	long x_n; /* choices */
	long x_inputs; /* embeddings inputs */
	long x_events;
	long x_ebytes;
	long x_delay_ms;
	long x_pace_ms;
	long x_end_delay_ms; /* between the last event and the body's end */
	long x_reset_after; /* -1 when unset, likewise below */
	long x_close_after;
	long x_error_after;
	long x_retry_after;
	long x_retry_after_ms; /* -1: no retry-after-ms header */
	long x_nframes; /* events in the stream */
	long x_sent; /* events flushed so far */
	long long x_etokens;
	long long x_prompt;
	long long x_cached;
	long long x_cwrite;
	long long x_reason;
	const char *x_end; /* end event chosen on purpose, or NULL */
};

static TAILQ_HEAD(, xchg) g_xchgs = TAILQ_HEAD_INITIALIZER(g_xchgs);
static struct event_base *g_base;
static struct evhttp *g_http;
static SSL_CTX *g_ssl_ctx;
static FILE *g_record;
/* --fail-*: how this instance fails the requests it matches. */
static int g_fail_status;
static int g_fail_hang;
static long g_fail_retry_after = -1;
static long g_fail_retry_after_ms = -1;
static long g_fail_count = -1; /* -1: every match */
static const char *g_fail_key;
static unsigned long long g_seq;
static int g_stopping;
static char g_filler[FILLER_LEN];

static void respond(struct xchg *);
static void stream_next(struct xchg *);

static void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void
fatalx(const char *fmt, ...)
{
	va_list ap;

	fputs("fakeprov: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void *
xcalloc(size_t n, size_t size)
{
	void *p;

	if ((p = calloc(n, size)) == NULL)
		fatalx("out of memory");
	return (p);
}

static unsigned long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL);
}

/* Length of the valid UTF-8 sequence at p, or 0 if it is not one. */
static size_t
utf8_seq(const unsigned char *p, size_t left)
{
	size_t len, i;
	unsigned int cp;

	if (p[0] < 0x80)
		return (1);
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07;
	} else
		return (0);
	if (left < len)
		return (0);
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return (0);
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	/* Overlong forms, surrogates and code points past U+10FFFF. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return (0);
	return (len);
}

static int
utf8_valid(const unsigned char *p, size_t len)
{
	size_t i, n;

	for (i = 0; i < len; i += n) {
		if ((n = utf8_seq(p + i, len - i)) == 0)
			return (0);
	}
	return (1);
}

/*
 * Append s as a quoted JSON string.  Valid UTF-8 passes through; a byte
 * that is not part of a valid sequence is written as \u00XX.
 */
static void
json_str(struct evbuffer *o, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, start, n;
	char esc[8];

	evbuffer_add(o, "\"", 1);
	while (i < len) {
		start = i;
		while (i < len && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' &&
		    p[i] != '\\')
			i++;
		while (i < len && p[i] >= 0x80 &&
		    (n = utf8_seq(p + i, len - i)) != 0)
			i += n;
		if (i > start) {
			evbuffer_add(o, p + start, i - start);
			continue;
		}
		switch (p[i]) {
		case '"':
			evbuffer_add(o, "\\\"", 2);
			break;
		case '\\':
			evbuffer_add(o, "\\\\", 2);
			break;
		case '\n':
			evbuffer_add(o, "\\n", 2);
			break;
		case '\r':
			evbuffer_add(o, "\\r", 2);
			break;
		case '\t':
			evbuffer_add(o, "\\t", 2);
			break;
		default:
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[p[i] >> 4];
			esc[5] = hex[p[i] & 0xf];
			evbuffer_add(o, esc, 6);
			break;
		}
		i++;
	}
	evbuffer_add(o, "\"", 1);
}

static void
json_cstr(struct evbuffer *o, const char *s)
{
	json_str(o, s, strlen(s));
}

/* Return s as a malloc'd JSON string literal, quotes included. */
static char *
json_literal(const char *s)
{
	struct evbuffer *b;
	size_t len;
	char *r;

	if ((b = evbuffer_new()) == NULL)
		fatalx("out of memory");
	json_cstr(b, s);
	len = evbuffer_get_length(b);
	r = xcalloc(1, len + 1);
	evbuffer_remove(b, r, len);
	evbuffer_free(b);
	return (r);
}

/* The value of the hex digit c, or -1. */
static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (c - 'A' + 10);
	return (-1);
}

/*
 * The bytes the hex digits hex spell, between quotes and not escaped, as
 * a malloc'd JSON string literal; NULL if hex is not pairs of hex digits.
 */
static char *
raw_literal(const char *hex)
{
	size_t n = strlen(hex), i;
	char *r;
	int hi, lo;

	if (n == 0 || n % 2 != 0)
		return (NULL);
	r = xcalloc(1, n / 2 + 3);
	r[0] = '"';
	for (i = 0; i < n; i += 2) {
		if ((hi = hexval(hex[i])) < 0 ||
		    (lo = hexval(hex[i + 1])) < 0) {
			free(r);
			return (NULL);
		}
		r[1 + i / 2] = (char)(hi << 4 | lo);
	}
	r[1 + n / 2] = '"';
	return (r);
}

/* Append n bytes of "tok tok " filler. */
static void
add_filler(struct evbuffer *o, size_t n)
{
	size_t k;

	while (n > 0) {
		k = n < sizeof(g_filler) ? n : sizeof(g_filler);
		evbuffer_add(o, g_filler, k);
		n -= k;
	}
}

/* Append the whole reply text: every content event's filler in turn. */
static void
add_text(struct xchg *x, struct evbuffer *o)
{
	long i;
	size_t total = 0;

	for (i = 0; i < x->x_events && total < (size_t)MAX_TEXT; i++) {
		add_filler(o, (size_t)x->x_ebytes);
		total += (size_t)x->x_ebytes;
	}
}

static void
add_text_str(struct xchg *x, struct evbuffer *o)
{
	evbuffer_add(o, "\"", 1);
	add_text(x, o);
	evbuffer_add(o, "\"", 1);
}

static void
add_event_str(struct xchg *x, struct evbuffer *o)
{
	evbuffer_add(o, "\"", 1);
	add_filler(o, (size_t)x->x_ebytes);
	evbuffer_add(o, "\"", 1);
}

/*
 * Tool call arguments: the JSON object {"q":"<reply text>"} as the text of a
 * JSON string, whole or as the fragment of content event i (the first opens
 * the object, the last closes it).
 */
static void
add_args_frag(struct xchg *x, struct evbuffer *o, long i)
{
	evbuffer_add(o, "\"", 1);
	if (i == 0)
		evbuffer_add_printf(o, "{\\\"q\\\":\\\"");
	add_filler(o, (size_t)x->x_ebytes);
	if (i == x->x_events - 1)
		evbuffer_add_printf(o, "\\\"}");
	evbuffer_add(o, "\"", 1);
}

static void
add_args_str(struct xchg *x, struct evbuffer *o)
{
	evbuffer_add_printf(o, "\"{\\\"q\\\":\\\"");
	add_text(x, o);
	evbuffer_add_printf(o, "\\\"}\"");
}

/*
 * Recording.
 */

static void
record_flush(struct evbuffer *b)
{
	size_t len;

	evbuffer_add(b, "\n", 1);
	len = evbuffer_get_length(b);
	if (fwrite(evbuffer_pullup(b, -1), 1, len, g_record) != len ||
	    fflush(g_record) != 0)
		fprintf(stderr, "fakeprov: record: %s\n", strerror(errno));
}

static const char *
method_name(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET:
		return ("GET");
	case EVHTTP_REQ_POST:
		return ("POST");
	case EVHTTP_REQ_HEAD:
		return ("HEAD");
	case EVHTTP_REQ_PUT:
		return ("PUT");
	case EVHTTP_REQ_DELETE:
		return ("DELETE");
	case EVHTTP_REQ_OPTIONS:
		return ("OPTIONS");
	case EVHTTP_REQ_TRACE:
		return ("TRACE");
	case EVHTTP_REQ_CONNECT:
		return ("CONNECT");
	case EVHTTP_REQ_PATCH:
		return ("PATCH");
	}
	return ("UNKNOWN");
}

static void
record_request(unsigned long long seq, struct evhttp_request *req,
    const unsigned char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	struct evbuffer *b;
	unsigned char *b64;
	int first = 1;

	if (g_record == NULL)
		return;
	if ((b = evbuffer_new()) == NULL)
		fatalx("out of memory");
	evbuffer_add_printf(
	    b, "{\"seq\":%llu,\"event\":\"request\",\"method\":", seq);
	json_cstr(b, method_name(evhttp_request_get_command(req)));
	evbuffer_add_printf(b, ",\"path\":");
	json_cstr(b, evhttp_request_get_uri(req));
	evbuffer_add_printf(b, ",\"headers\":[");
	TAILQ_FOREACH(kv, h, next)
	{
		evbuffer_add(b, first ? "[" : ",[", first ? 1 : 2);
		json_cstr(b, kv->key);
		evbuffer_add(b, ",", 1);
		json_cstr(b, kv->value);
		evbuffer_add(b, "]", 1);
		first = 0;
	}
	evbuffer_add(b, "]", 1);
	if (utf8_valid(body, len)) {
		evbuffer_add_printf(b, ",\"body\":");
		json_str(b, (const char *)body, len);
	} else {
		b64 = xcalloc(1, 4 * ((len + 2) / 3) + 1);
		EVP_EncodeBlock(b64, body, (int)len);
		evbuffer_add_printf(b, ",\"body_b64\":\"%s\"", (char *)b64);
		free(b64);
	}
	evbuffer_add_printf(b, ",\"body_len\":%zu}", len);
	record_flush(b);
	evbuffer_free(b);
}

static void
record_end(struct xchg *x, const char *event, const char *reason)
{
	struct evbuffer *b;

	if (g_record == NULL)
		return;
	if ((b = evbuffer_new()) == NULL)
		fatalx("out of memory");
	evbuffer_add_printf(
	    b, "{\"seq\":%llu,\"event\":\"%s\"", x->x_seq, event);
	if (reason != NULL)
		evbuffer_add_printf(b, ",\"reason\":\"%s\"", reason);
	evbuffer_add(b, "}", 1);
	record_flush(b);
	evbuffer_free(b);
}

/*
 * Error bodies, in each family's own shape.
 */

static void
error_openai(struct evbuffer *o, int code, const char *msg)
{
	const char *type, *ecode;

	switch (code) {
	case 400:
		type = "invalid_request_error";
		ecode = "invalid_request";
		break;
	case 401:
		type = "invalid_request_error";
		ecode = "invalid_api_key";
		break;
	case 403:
		type = "invalid_request_error";
		ecode = "permission_denied";
		break;
	case 404:
		type = "invalid_request_error";
		ecode = "unknown_url";
		break;
	case 429:
		type = "requests";
		ecode = "rate_limit_exceeded";
		break;
	case 503:
		type = "server_error";
		ecode = "service_unavailable";
		break;
	default:
		type = code >= 500 ? "server_error" : "invalid_request_error";
		ecode = code >= 500 ? "server_error" : "fake_error";
		break;
	}
	evbuffer_add_printf(o, "{\"error\":{\"message\":");
	json_cstr(o, msg);
	evbuffer_add_printf(o,
	    ",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}", type, ecode);
}

static void
error_anthropic(struct evbuffer *o, int code, const char *msg)
{
	const char *type;

	switch (code) {
	case 401:
		type = "authentication_error";
		break;
	case 402:
		type = "billing_error";
		break;
	case 403:
		type = "permission_error";
		break;
	case 404:
		type = "not_found_error";
		break;
	case 413:
		type = "request_too_large";
		break;
	case 429:
		type = "rate_limit_error";
		break;
	case 504:
		type = "timeout_error";
		break;
	case 529:
		type = "overloaded_error";
		break;
	default:
		type = code >= 500 ? "api_error" : "invalid_request_error";
		break;
	}
	evbuffer_add_printf(o,
	    "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
	    "\"message\":",
	    type);
	json_cstr(o, msg);
	evbuffer_add_printf(o, "},\"request_id\":\"req_fake\"}");
}

static void
error_gemini(struct evbuffer *o, int code, const char *msg)
{
	const char *status;

	switch (code) {
	case 400:
		status = "INVALID_ARGUMENT";
		break;
	case 401:
		status = "UNAUTHENTICATED";
		break;
	case 403:
		status = "PERMISSION_DENIED";
		break;
	case 404:
		status = "NOT_FOUND";
		break;
	case 429:
		status = "RESOURCE_EXHAUSTED";
		break;
	case 500:
		status = "INTERNAL";
		break;
	case 503:
		status = "UNAVAILABLE";
		break;
	case 504:
		status = "DEADLINE_EXCEEDED";
		break;
	default:
		status = "UNKNOWN";
		break;
	}
	evbuffer_add_printf(o, "{\"error\":{\"code\":%d,\"message\":", code);
	json_cstr(o, msg);
	evbuffer_add_printf(o, ",\"status\":\"%s\"}}", status);
}

/* Reason phrases libevent's table lacks; NULL lets libevent choose. */
static const char *
reason_phrase(int code)
{
	switch (code) {
	case 408:
		return ("Request Timeout");
	case 413:
		return ("Payload Too Large");
	case 422:
		return ("Unprocessable Entity");
	case 429:
		return ("Too Many Requests");
	case 529:
		return ("Overloaded");
	default:
		return (NULL);
	}
}

static void
error_body(struct xchg *x, struct evbuffer *o, int code, const char *msg)
{
	switch (x->x_fam) {
	case FAM_ANTHROPIC:
		error_anthropic(o, code, msg);
		break;
	case FAM_GEMINI:
		error_gemini(o, code, msg);
		break;
	case FAM_OPENAI:
		error_openai(o, code, msg);
		break;
	}
}

/*
 * Usage objects.
 */

static long long
out_tokens(struct xchg *x)
{
	return ((long long)x->x_events * x->x_etokens * x->x_n + x->x_reason);
}

static void
usage_chat(struct xchg *x, struct evbuffer *o)
{
	long long out = out_tokens(x);

	evbuffer_add_printf(o,
	    "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
	    "\"total_tokens\":%lld",
	    x->x_prompt, out, x->x_prompt + out);
	if (x->x_ep == EP_COMPLETIONS) {
		evbuffer_add(o, "}", 1);
		return;
	}
	evbuffer_add_printf(o,
	    ",\"prompt_tokens_details\":{\"cached_tokens\":%lld,"
	    "\"audio_tokens\":0",
	    x->x_cached);
	if (x->x_cwrite > 0)
		evbuffer_add_printf(
		    o, ",\"cache_write_tokens\":%lld", x->x_cwrite);
	evbuffer_add_printf(o,
	    "},\"completion_tokens_details\":{\"reasoning_tokens\":%lld,"
	    "\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
	    "\"rejected_prediction_tokens\":0}}",
	    x->x_reason);
}

static void
usage_responses(struct xchg *x, struct evbuffer *o)
{
	long long out = out_tokens(x);

	evbuffer_add_printf(o,
	    "{\"input_tokens\":%lld,\"input_tokens_details\":"
	    "{\"cached_tokens\":%lld},\"output_tokens\":%lld,"
	    "\"output_tokens_details\":{\"reasoning_tokens\":%lld},"
	    "\"total_tokens\":%lld}",
	    x->x_prompt, x->x_cached, out, x->x_reason, x->x_prompt + out);
}

/* The input and cache part of an Anthropic usage object, no braces. */
static void
usage_anthropic_input(struct xchg *x, struct evbuffer *o)
{
	evbuffer_add_printf(o,
	    "\"input_tokens\":%lld,\"cache_creation_input_tokens\":%lld,"
	    "\"cache_read_input_tokens\":%lld",
	    x->x_prompt - x->x_cached - x->x_cwrite, x->x_cwrite, x->x_cached);
}

static void
usage_anthropic(struct xchg *x, struct evbuffer *o, long long out)
{
	evbuffer_add(o, "{", 1);
	usage_anthropic_input(x, o);
	evbuffer_add_printf(o,
	    ",\"cache_creation\":{\"ephemeral_5m_input_tokens\":%lld,"
	    "\"ephemeral_1h_input_tokens\":0},\"output_tokens\":%lld,"
	    "\"service_tier\":\"standard\"",
	    x->x_cwrite, out);
	if (x->x_reason > 0 && out > 1)
		evbuffer_add_printf(o,
		    ",\"output_tokens_details\":{\"thinking_tokens\":%lld}",
		    x->x_reason);
	evbuffer_add(o, "}", 1);
}

static void
usage_gemini(struct xchg *x, struct evbuffer *o, long long cand)
{
	evbuffer_add_printf(o,
	    "{\"promptTokenCount\":%lld,\"candidatesTokenCount\":%lld,"
	    "\"totalTokenCount\":%lld,",
	    x->x_prompt, cand, x->x_prompt + cand + x->x_reason);
	if (x->x_cached > 0)
		evbuffer_add_printf(
		    o, "\"cachedContentTokenCount\":%lld,", x->x_cached);
	evbuffer_add_printf(o,
	    "\"promptTokensDetails\":[{\"modality\":\"TEXT\","
	    "\"tokenCount\":%lld}],\"thoughtsTokenCount\":%lld}",
	    x->x_prompt, x->x_reason);
}

/*
 * Non-stream bodies.
 */

static void
embedding_values(struct evbuffer *o, long which)
{
	int i;

	evbuffer_add(o, "[", 1);
	for (i = 0; i < EMBED_DIMS; i++)
		evbuffer_add_printf(o, "%s%s0.%03ld%d", i ? "," : "",
		    (i & 1) ? "-" : "", which % 1000, i + 1);
	evbuffer_add(o, "]", 1);
}

/* Responses API: the response object, in progress or completed. */
static void
resp_item(struct xchg *x, struct evbuffer *o, int done)
{
	evbuffer_add_printf(o,
	    "{\"id\":\"msg_fake%llu\",\"type\":\"message\",\"status\":\"%s\","
	    "\"content\":[",
	    x->x_seq, done ? "completed" : "in_progress");
	if (done) {
		evbuffer_add_printf(o,
		    "{\"type\":\"output_text\","
		    "\"annotations\":[],\"logprobs\":[],\"text\":");
		add_text_str(x, o);
		evbuffer_add(o, "}", 1);
	}
	evbuffer_add_printf(o, "],\"role\":\"assistant\"}");
}

static void
resp_part(struct xchg *x, struct evbuffer *o, int done)
{
	evbuffer_add_printf(o,
	    "{\"type\":\"output_text\",\"annotations\":[],"
	    "\"logprobs\":[],\"text\":");
	if (done)
		add_text_str(x, o);
	else
		evbuffer_add(o, "\"\"", 2);
	evbuffer_add(o, "}", 1);
}

static void
resp_object(struct xchg *x, struct evbuffer *o, int done)
{
	evbuffer_add_printf(o,
	    "{\"id\":\"resp_fake%llu\",\"object\":\"response\","
	    "\"created_at\":%ld,\"status\":\"%s\",\"background\":false,"
	    "\"error\":null,\"incomplete_details\":null,\"instructions\":null,"
	    "\"max_output_tokens\":null,\"model\":%s,\"output\":[",
	    x->x_seq, CREATED, done ? "completed" : "in_progress", x->x_model);
	if (done)
		resp_item(x, o, 1);
	evbuffer_add_printf(o,
	    "],\"parallel_tool_calls\":true,\"previous_response_id\":null,"
	    "\"reasoning\":{\"effort\":null,\"summary\":null},"
	    "\"service_tier\":\"default\",\"store\":true,\"temperature\":1.0,"
	    "\"text\":{\"format\":{\"type\":\"text\"}},"
	    "\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,"
	    "\"truncation\":\"disabled\",\"usage\":");
	if (done)
		usage_responses(x, o);
	else
		evbuffer_add(o, "null", 4);
	evbuffer_add_printf(o, ",\"user\":null,\"metadata\":{}}");
}

static void
body_chat(struct xchg *x, struct evbuffer *o)
{
	long i;

	if (x->x_ep == EP_COMPLETIONS)
		evbuffer_add_printf(o,
		    "{\"id\":\"cmpl-fake%llu\",\"object\":\"text_completion\","
		    "\"created\":%ld,\"model\":%s,\"choices\":[",
		    x->x_seq, CREATED, x->x_model);
	else
		evbuffer_add_printf(o,
		    "{\"id\":\"chatcmpl-fake%llu\",\"object\":"
		    "\"chat.completion\",\"created\":%ld,\"model\":%s,"
		    "\"choices\":[",
		    x->x_seq, CREATED, x->x_model);
	for (i = 0; i < x->x_n; i++) {
		if (i > 0)
			evbuffer_add(o, ",", 1);
		if (x->x_ep == EP_COMPLETIONS) {
			evbuffer_add_printf(o, "{\"text\":");
			add_text_str(x, o);
			evbuffer_add_printf(o,
			    ",\"index\":%ld,\"logprobs\":null,"
			    "\"finish_reason\":\"stop\"}",
			    i);
			continue;
		}
		evbuffer_add_printf(o,
		    "{\"index\":%ld,\"message\":{\"role\":\"assistant\","
		    "\"content\":",
		    i);
		if (x->x_tool != NULL) {
			evbuffer_add_printf(o,
			    "null,\"tool_calls\":[{\"id\":\"call_fake%llu_%"
			    "ld\","
			    "\"type\":\"function\",\"function\":{\"name\":%s,"
			    "\"arguments\":",
			    x->x_seq, i, x->x_tool);
			add_args_str(x, o);
			evbuffer_add(o, "}}]", 3);
		} else
			add_text_str(x, o);
		evbuffer_add_printf(o,
		    ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,"
		    "\"finish_reason\":\"%s\"}",
		    x->x_tool != NULL ? "tool_calls" : "stop");
	}
	evbuffer_add_printf(o, "],\"usage\":");
	usage_chat(x, o);
	if (x->x_ep == EP_CHAT)
		evbuffer_add_printf(o,
		    ",\"service_tier\":\"default\","
		    "\"system_fingerprint\":\"fp_fake\"");
	evbuffer_add(o, "}", 1);
}

static void
body_nonstream(struct xchg *x, struct evbuffer *o)
{
	long i;

	switch (x->x_ep) {
	case EP_CHAT:
	case EP_COMPLETIONS:
		body_chat(x, o);
		break;
	case EP_EMBEDDINGS:
		evbuffer_add_printf(o, "{\"object\":\"list\",\"data\":[");
		for (i = 0; i < x->x_inputs; i++) {
			evbuffer_add_printf(o,
			    "%s{\"object\":\"embedding\",\"index\":%ld,"
			    "\"embedding\":",
			    i ? "," : "", i);
			embedding_values(o, i + 1);
			evbuffer_add(o, "}", 1);
		}
		evbuffer_add_printf(o,
		    "],\"model\":%s,\"usage\":{\"prompt_tokens\":%lld,"
		    "\"total_tokens\":%lld}}",
		    x->x_model, x->x_prompt, x->x_prompt);
		break;
	case EP_RESPONSES:
		resp_object(x, o, 1);
		break;
	case EP_MESSAGES:
		evbuffer_add_printf(o,
		    "{\"id\":\"msg_fake%llu\",\"type\":\"message\","
		    "\"role\":\"assistant\",\"model\":%s,\"content\":[",
		    x->x_seq, x->x_model);
		if (x->x_thinking)
			evbuffer_add_printf(o,
			    "{\"type\":\"thinking\",\"thinking\":"
			    "\"fake thinking\",\"signature\":"
			    "\"sig_fake%llu\"},",
			    x->x_seq);
		evbuffer_add_printf(o, "{\"type\":\"text\",\"text\":");
		add_text_str(x, o);
		evbuffer_add(o, "}", 1);
		if (x->x_tool != NULL) {
			evbuffer_add_printf(o,
			    ",{\"type\":\"tool_use\",\"id\":"
			    "\"toolu_fake%llu\",\"name\":%s,"
			    "\"input\":{\"q\":\"",
			    x->x_seq, x->x_tool);
			add_text(x, o);
			evbuffer_add(o, "\"}}", 3);
		}
		evbuffer_add_printf(o,
		    "],\"stop_reason\":\"%s\","
		    "\"stop_sequence\":null,\"usage\":",
		    x->x_tool != NULL ? "tool_use" : "end_turn");
		usage_anthropic(x, o, out_tokens(x));
		evbuffer_add(o, "}", 1);
		break;
	case EP_COUNT_TOKENS:
		evbuffer_add_printf(o, "{\"input_tokens\":%lld}", x->x_prompt);
		break;
	case EP_GENERATE:
	case EP_STREAM_GENERATE:
		evbuffer_add_printf(o,
		    "{\"candidates\":[{\"content\":"
		    "{\"parts\":[{\"text\":");
		add_text_str(x, o);
		evbuffer_add_printf(o,
		    "}],\"role\":\"model\"},"
		    "\"finishReason\":\"STOP\",\"index\":0}],"
		    "\"usageMetadata\":");
		usage_gemini(x, o, (long long)x->x_events * x->x_etokens);
		evbuffer_add_printf(o,
		    ",\"modelVersion\":%s,"
		    "\"responseId\":\"fake%llu\"}",
		    x->x_model, x->x_seq);
		break;
	case EP_GEMINI_COUNT:
		evbuffer_add_printf(o, "{\"totalTokens\":%lld}", x->x_prompt);
		break;
	case EP_EMBED_CONTENT:
		evbuffer_add_printf(o, "{\"embedding\":{\"values\":");
		embedding_values(o, 1);
		evbuffer_add_printf(o, "}}");
		break;
	case EP_MODELS:
		evbuffer_add_printf(o,
		    "{\"object\":\"list\",\"data\":["
		    "{\"id\":\"gpt-4o\",\"object\":\"model\","
		    "\"created\":0,\"owned_by\":\"fakeprov\"}]}");
		break;
	case EP_NOTFOUND:
		break;
	}
}

/*
 * Stream events.  Event k of a stream is generated on demand, just before
 * it is written, so a stream of any length costs one event of memory.
 */

static void
sse_begin(struct xchg *x, struct evbuffer *o, const char *event, long k)
{
	const char *eol = x->x_fam == FAM_GEMINI ? "\r\n" : "\n";

	if (!x->x_sse) {
		/* Gemini without alt=sse streams one JSON array. */
		if (k == 0)
			evbuffer_add(o, "[", 1);
		else
			evbuffer_add(o, ",\r\n", 3);
		return;
	}
	if (x->x_timestamps)
		evbuffer_add_printf(o, ": t=%llu%s", now_us(), eol);
	if (event != NULL)
		evbuffer_add_printf(o, "event: %s%s", event, eol);
	evbuffer_add(o, "data: ", 6);
}

static void
sse_end(struct xchg *x, struct evbuffer *o, long k)
{
	if (!x->x_sse) {
		if (k == x->x_nframes - 1)
			evbuffer_add(o, "]", 1);
		return;
	}
	switch (x->x_fam) {
	case FAM_ANTHROPIC:
		/* Real recordings pad the data line after the JSON. */
		evbuffer_add(o, "     \n\n", 7);
		break;
	case FAM_GEMINI:
		evbuffer_add(o, "\r\n\r\n", 4);
		break;
	case FAM_OPENAI:
		evbuffer_add(o, "\n\n", 2);
		break;
	}
}

static long
stream_nframes(struct xchg *x)
{
	long n = x->x_n, N = x->x_events;

	switch (x->x_ep) {
	case EP_CHAT:
		return (n + N * n + n + (x->x_usage ? 1 : 0) + 1);
	case EP_COMPLETIONS:
		return (N * n + n + (x->x_usage ? 1 : 0) + 1);
	case EP_RESPONSES:
		return (N + 8);
	case EP_MESSAGES:
		return (N + 6 + (x->x_thinking ? 4 : 0) +
		    (x->x_tool != NULL ? N + 2 : 0));
	case EP_STREAM_GENERATE:
		return (N > 0 ? N : 1);
	default:
		return (1);
	}
}

static void
frame_chat(struct xchg *x, long k, struct evbuffer *o)
{
	int legacy = x->x_ep == EP_COMPLETIONS;
	long n = x->x_n, nrole = legacy ? 0 : n, ncont = x->x_events * n, i;

	sse_begin(x, o, NULL, k);
	if (k == x->x_nframes - 1) {
		evbuffer_add(o, "[DONE]", 6);
		sse_end(x, o, k);
		return;
	}
	if (legacy)
		evbuffer_add_printf(o,
		    "{\"id\":\"cmpl-fake%llu\",\"object\":\"text_completion\","
		    "\"created\":%ld,\"model\":%s,\"choices\":[",
		    x->x_seq, CREATED, x->x_model);
	else
		evbuffer_add_printf(o,
		    "{\"id\":\"chatcmpl-fake%llu\",\"object\":"
		    "\"chat.completion.chunk\",\"created\":%ld,\"model\":%s,"
		    "\"system_fingerprint\":\"fp_fake\",\"choices\":[",
		    x->x_seq, CREATED, x->x_model);
	if (x->x_usage && k == x->x_nframes - 2) {
		evbuffer_add_printf(o, "],\"usage\":");
		usage_chat(x, o);
		evbuffer_add(o, "}", 1);
		sse_end(x, o, k);
		return;
	}
	if (k < nrole && x->x_tool != NULL) {
		evbuffer_add_printf(o,
		    "{\"index\":%ld,\"delta\":{\"role\":\"assistant\","
		    "\"content\":null,\"tool_calls\":[{\"index\":0,"
		    "\"id\":\"call_fake%llu_%ld\",\"type\":\"function\","
		    "\"function\":{\"name\":%s,\"arguments\":\"\"}}],"
		    "\"refusal\":null},\"logprobs\":null,"
		    "\"finish_reason\":null}",
		    k, x->x_seq, k, x->x_tool);
	} else if (k < nrole) {
		evbuffer_add_printf(o,
		    "{\"index\":%ld,\"delta\":{\"role\":\"assistant\","
		    "\"content\":\"\",\"refusal\":null},\"logprobs\":null,"
		    "\"finish_reason\":null}",
		    k);
	} else if (k < nrole + ncont) {
		i = (k - nrole) % n;
		if (legacy) {
			evbuffer_add_printf(o, "{\"text\":");
			add_event_str(x, o);
			evbuffer_add_printf(o,
			    ",\"index\":%ld,\"logprobs\":null,"
			    "\"finish_reason\":null}",
			    i);
		} else if (x->x_tool != NULL) {
			evbuffer_add_printf(o,
			    "{\"index\":%ld,\"delta\":{\"tool_calls\":"
			    "[{\"index\":0,\"function\":{\"arguments\":",
			    i);
			add_args_frag(x, o, (k - nrole) / n);
			evbuffer_add_printf(o,
			    "}}]},\"logprobs\":null,"
			    "\"finish_reason\":null}");
		} else {
			evbuffer_add_printf(
			    o, "{\"index\":%ld,\"delta\":{\"content\":", i);
			add_event_str(x, o);
			evbuffer_add_printf(o,
			    "},\"logprobs\":null,"
			    "\"finish_reason\":null}");
		}
	} else {
		i = k - nrole - ncont;
		if (legacy)
			evbuffer_add_printf(o,
			    "{\"text\":\"\",\"index\":%ld,\"logprobs\":null,"
			    "\"finish_reason\":\"stop\"}",
			    i);
		else
			evbuffer_add_printf(o,
			    "{\"index\":%ld,\"delta\":{},\"logprobs\":null,"
			    "\"finish_reason\":\"%s\"}",
			    i, x->x_tool != NULL ? "tool_calls" : "stop");
	}
	evbuffer_add(o, "]", 1);
	if (x->x_usage)
		evbuffer_add_printf(o, ",\"usage\":null");
	evbuffer_add(o, "}", 1);
	sse_end(x, o, k);
}

static void
frame_responses(struct xchg *x, long k, struct evbuffer *o)
{
	static const char *types[] = {"response.created",
	    "response.in_progress", "response.output_item.added",
	    "response.content_part.added", "response.output_text.delta",
	    "response.output_text.done", "response.content_part.done",
	    "response.output_item.done", "response.completed"};
	long N = x->x_events, j;

	j = k < 4 ? k : (k < 4 + N ? 4 : k - N + 1);
	sse_begin(x, o, types[j], k);
	evbuffer_add_printf(
	    o, "{\"type\":\"%s\",\"sequence_number\":%ld", types[j], k);
	if (j >= 3 && j <= 6)
		evbuffer_add_printf(o,
		    ",\"item_id\":\"msg_fake%llu\",\"output_index\":0,"
		    "\"content_index\":0",
		    x->x_seq);
	switch (j) {
	case 0:
	case 1:
	case 8:
		evbuffer_add_printf(o, ",\"response\":");
		resp_object(x, o, j == 8);
		break;
	case 2:
	case 7:
		evbuffer_add_printf(o, ",\"output_index\":0,\"item\":");
		resp_item(x, o, j == 7);
		break;
	case 3:
	case 6:
		evbuffer_add_printf(o, ",\"part\":");
		resp_part(x, o, j == 6);
		break;
	case 4:
		evbuffer_add_printf(o, ",\"delta\":");
		add_event_str(x, o);
		evbuffer_add_printf(o, ",\"logprobs\":[]");
		break;
	case 5:
		evbuffer_add_printf(o, ",\"text\":");
		add_text_str(x, o);
		evbuffer_add_printf(o, ",\"logprobs\":[]");
		break;
	}
	evbuffer_add(o, "}", 1);
	sse_end(x, o, k);
}

/* Anthropic: open content block idx of type, as content_block_start. */
static void
msg_block_start(struct xchg *x, struct evbuffer *o, long idx, int type)
{
	evbuffer_add_printf(o, ",\"index\":%ld,\"content_block\":", idx);
	if (type == 't')
		evbuffer_add_printf(o,
		    "{\"type\":\"thinking\",\"thinking\":\"\","
		    "\"signature\":\"\"}");
	else if (type == 'u')
		evbuffer_add_printf(o,
		    "{\"type\":\"tool_use\",\"id\":\"toolu_fake%llu\","
		    "\"name\":%s,\"input\":{}}",
		    x->x_seq, x->x_tool);
	else
		evbuffer_add_printf(o, "{\"type\":\"text\",\"text\":\"\"}");
}

/*
 * Event k of an Anthropic stream: message_start, the thinking block (4
 * events, when thinking), the text block (start, ping, N deltas, stop), the
 * tool_use block (start, N fragments, stop, with x-fake-tool), then
 * message_delta and message_stop.
 */
static void
frame_messages(struct xchg *x, long k, struct evbuffer *o)
{
	long N = x->x_events, tb = x->x_thinking ? 1 : 0, j;
	long t0 = 1 + 4 * tb, u0 = t0 + N + 3;
	long d0 = u0 + (x->x_tool != NULL ? N + 2 : 0);
	const char *type;

	if (k == 0)
		type = "message_start";
	else if (k < t0)
		type = (const char *[]){"content_block_start",
		    "content_block_delta", "content_block_delta",
		    "content_block_stop"}[k - 1];
	else if (k < u0)
		type = k == t0	  ? "content_block_start"
		    : k == t0 + 1 ? "ping"
		    : k == u0 - 1 ? "content_block_stop"
				  : "content_block_delta";
	else if (k < d0)
		type = k == u0	  ? "content_block_start"
		    : k == d0 - 1 ? "content_block_stop"
				  : "content_block_delta";
	else
		type = k == d0 ? "message_delta" : "message_stop";
	sse_begin(x, o, type, k);
	evbuffer_add_printf(o, "{\"type\":\"%s\"", type);
	if (k == 0) {
		evbuffer_add_printf(o,
		    ",\"message\":{\"id\":\"msg_fake%llu\","
		    "\"type\":\"message\",\"role\":\"assistant\","
		    "\"model\":%s,\"content\":[],\"stop_reason\":null,"
		    "\"stop_sequence\":null,\"usage\":",
		    x->x_seq, x->x_model);
		usage_anthropic(x, o, 1);
		evbuffer_add(o, "}", 1);
	} else if (k < t0) {
		j = k - 1;
		if (j == 0)
			msg_block_start(x, o, 0, 't');
		else if (j == 1)
			evbuffer_add_printf(o,
			    ",\"index\":0,\"delta\":{\"type\":"
			    "\"thinking_delta\",\"thinking\":"
			    "\"fake thinking\"}");
		else if (j == 2)
			evbuffer_add_printf(o,
			    ",\"index\":0,\"delta\":{\"type\":"
			    "\"signature_delta\",\"signature\":"
			    "\"sig_fake%llu\"}",
			    x->x_seq);
		else
			evbuffer_add_printf(o, ",\"index\":0");
	} else if (k < u0) {
		if (k == t0)
			msg_block_start(x, o, tb, 'x');
		else if (k == u0 - 1)
			evbuffer_add_printf(o, ",\"index\":%ld", tb);
		else if (k > t0 + 1) {
			evbuffer_add_printf(o,
			    ",\"index\":%ld,\"delta\":"
			    "{\"type\":\"text_delta\",\"text\":",
			    tb);
			add_event_str(x, o);
			evbuffer_add(o, "}", 1);
		}
	} else if (k < d0) {
		if (k == u0)
			msg_block_start(x, o, tb + 1, 'u');
		else if (k == d0 - 1)
			evbuffer_add_printf(o, ",\"index\":%ld", tb + 1);
		else {
			evbuffer_add_printf(o,
			    ",\"index\":%ld,\"delta\":{\"type\":"
			    "\"input_json_delta\",\"partial_json\":",
			    tb + 1);
			add_args_frag(x, o, k - u0 - 1);
			evbuffer_add(o, "}", 1);
		}
	} else if (k == d0) {
		evbuffer_add_printf(o,
		    ",\"delta\":{\"stop_reason\":"
		    "\"%s\",\"stop_sequence\":null},"
		    "\"usage\":{",
		    x->x_tool != NULL ? "tool_use" : "end_turn");
		usage_anthropic_input(x, o);
		evbuffer_add_printf(
		    o, ",\"output_tokens\":%lld}", out_tokens(x));
	}
	evbuffer_add(o, "}", 1);
	sse_end(x, o, k);
}

static void
frame_gemini(struct xchg *x, long k, struct evbuffer *o)
{
	int last = k == x->x_nframes - 1;

	sse_begin(x, o, NULL, k);
	evbuffer_add_printf(o,
	    "{\"candidates\":[{\"content\":{\"parts\":"
	    "[{\"text\":");
	if (x->x_events > 0)
		add_event_str(x, o);
	else
		evbuffer_add(o, "\"\"", 2);
	evbuffer_add_printf(o,
	    "}],\"role\":\"model\"}%s,\"index\":0}],"
	    "\"usageMetadata\":",
	    last ? ",\"finishReason\":\"STOP\"" : "");
	usage_gemini(
	    x, o, x->x_events > 0 ? (long long)(k + 1) * x->x_etokens : 0);
	evbuffer_add_printf(o,
	    ",\"modelVersion\":%s,\"responseId\":"
	    "\"fake%llu\"}",
	    x->x_model, x->x_seq);
	sse_end(x, o, k);
}

static void
stream_frame(struct xchg *x, long k, struct evbuffer *o)
{
	switch (x->x_ep) {
	case EP_CHAT:
	case EP_COMPLETIONS:
		frame_chat(x, k, o);
		break;
	case EP_RESPONSES:
		frame_responses(x, k, o);
		break;
	case EP_MESSAGES:
		frame_messages(x, k, o);
		break;
	default:
		frame_gemini(x, k, o);
		break;
	}
}

/* The family's mid-stream error event (docs/internals/wire.md, Error shapes). */
static void
stream_error_frame(struct xchg *x, long k, struct evbuffer *o)
{
	static const char msg[] = "fakeprov: injected mid-stream error";
	const char *name = x->x_errname;

	switch (x->x_ep) {
	case EP_RESPONSES:
		sse_begin(x, o, "error", k);
		evbuffer_add_printf(o,
		    "{\"type\":\"error\",\"code\":%s,"
		    "\"message\":\"%s\",\"param\":null,"
		    "\"sequence_number\":%ld}",
		    name != NULL ? name : "\"fake_error\"", msg, k);
		break;
	case EP_MESSAGES:
		sse_begin(x, o, "error", k);
		evbuffer_add_printf(o,
		    "{\"type\":\"error\",\"error\":"
		    "{\"type\":%s,"
		    "\"message\":\"Overloaded\"}}",
		    name != NULL ? name : "\"overloaded_error\"");
		break;
	default:
		sse_begin(x, o, NULL, k);
		if (x->x_fam == FAM_GEMINI)
			evbuffer_add_printf(o,
			    "{\"error\":{\"code\":503,\"message\":\"%s\","
			    "\"status\":%s}}",
			    msg, name != NULL ? name : "\"UNAVAILABLE\"");
		else
			evbuffer_add_printf(o,
			    "{\"error\":{\"message\":\"%s\",\"type\":"
			    "%s,\"param\":null,\"code\":"
			    "%s}}",
			    msg, name != NULL ? name : "\"server_error\"",
			    name != NULL ? name : "\"fake_error\"");
		break;
	}
	sse_end(x, o, k);
}

/*
 * Exchange lifecycle.
 */

static void
xchg_free(struct xchg *x)
{
	TAILQ_REMOVE(&g_xchgs, x, x_entry);
	if (x->x_watch != NULL)
		event_free(x->x_watch);
	event_free(x->x_timer);
	evbuffer_free(x->x_buf);
	free(x->x_model);
	free(x->x_tool);
	free(x->x_errname);
	free(x);
}

/*
 * The response was fully flushed: evhttp frees the request after this
 * and keeps the connection for the next one.
 */
static void
xchg_complete_cb(struct evhttp_request *req, void *arg)
{
	struct xchg *x = arg;

	(void)req;
	evhttp_connection_set_closecb(x->x_evcon, NULL, NULL);
	record_end(x, "done", NULL);
	xchg_free(x);
}

/*
 * The connection is going away before the response was complete: the peer
 * closed it, a write failed, we aborted it on purpose, or we are stopping.
 * When evhttp itself failed the connection it detached the unfinished
 * request from it, and the request is ours to free.
 */
static void
xchg_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	struct xchg *x = arg;
	const char *event = x->x_end, *reason = NULL;

	(void)evcon;
	if (event == NULL && g_stopping) {
		event = "closed";
		reason = "shutdown";
	} else if (event == NULL)
		event = "client_closed";
	if (!x->x_userdone && evhttp_request_get_connection(x->x_req) == NULL)
		evhttp_request_free(x->x_req);
	record_end(x, event, reason);
	xchg_free(x);
}

/*
 * Abort the connection on purpose.  A reset must reach the peer as a RST
 * and not after a FIN, but evhttp_connection_free() shuts the socket down
 * for writing before the deferred close.  connect(AF_UNSPEC) disconnects
 * a TCP socket with a RST right away (Linux) and leaves the descriptor to
 * its owner; SO_LINGER 0 covers systems where it does not.
 */
static void
xchg_abort(struct xchg *x, int rst)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(x->x_evcon);
	evutil_socket_t fd = bufferevent_getfd(bev);
	struct linger lg = {1, 0};
	struct sockaddr sa;
	SSL *ssl;
	char drain[4096];

	x->x_end = rst ? "reset" : "closed";
	if (fd >= 0 && rst) {
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		memset(&sa, 0, sizeof(sa));
		sa.sa_family = AF_UNSPEC;
		connect(fd, &sa, sizeof(sa));
	} else if (fd >= 0) {
		if ((ssl = bufferevent_openssl_get_ssl(bev)) != NULL)
			SSL_shutdown(ssl);
		/* Unread input would turn the close into a RST. */
		while (recv(fd, drain, sizeof(drain), MSG_DONTWAIT) > 0)
			;
		shutdown(fd, SHUT_WR);
	}
	evhttp_connection_free(x->x_evcon); /* runs xchg_closed_cb */
}

/*
 * evhttp stops reading a connection once it holds a full request, so it
 * would only notice a departed client when a write fails.  Watch the socket
 * ourselves: EOF or an error means the client is gone.  Readable data (a
 * pipelined request, a TLS record) cannot be told apart from a live peer
 * without consuming it, so then we stop watching.
 */
static void
xchg_watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct xchg *x = arg;
	ssize_t n;
	char c;

	(void)what;
	n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0) {
		event_del(x->x_watch);
		return;
	}
	if (n < 0 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	evhttp_connection_free(x->x_evcon); /* runs xchg_closed_cb */
}

/*
 * Whether bytes we wrote still wait in our buffers or for the peer's ACK.
 * A RST discards them, so "reset after K events" waits for this to clear.
 */
static int
unacked(struct xchg *x)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(x->x_evcon);
	int n = 0;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return (1);
#ifdef SIOCOUTQ
	if (ioctl(bufferevent_getfd(bev), SIOCOUTQ, &n) == 0 && n > 0)
		return (1);
#endif
	return (n > 0);
}

static void
xchg_arm(struct xchg *x, enum action act, long ms)
{
	struct timeval tv;

	x->x_act = act;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(x->x_timer, &tv);
}

static void
stream_written_cb(struct evhttp_connection *evcon, void *arg)
{
	struct xchg *x = arg;

	(void)evcon;
	if (!x->x_inflight)
		return;
	x->x_inflight = 0;
	x->x_sent++;
	stream_next(x);
}

static void
stream_send(struct xchg *x)
{
	stream_frame(x, x->x_sent, x->x_buf);
	x->x_inflight = 1;
	evhttp_send_reply_chunk_with_cb(
	    x->x_req, x->x_buf, stream_written_cb, x);
}

/* Decide what follows once x_sent events have been flushed. */
static void
stream_next(struct xchg *x)
{
	if (x->x_reset_after == x->x_sent) {
		xchg_arm(x, ACT_RESET, 0);
		return;
	}
	if (x->x_close_after == x->x_sent) {
		xchg_arm(x, ACT_CLOSE, 0);
		return;
	}
	if (x->x_erred || x->x_sent >= x->x_nframes) {
		if (x->x_end_delay_ms > 0 && x->x_act != ACT_END) {
			xchg_arm(x, ACT_END, x->x_end_delay_ms);
			return;
		}
		x->x_userdone = 1;
		evhttp_send_reply_end(x->x_req); /* may free x */
		return;
	}
	if (x->x_error_after == x->x_sent) {
		stream_error_frame(x, x->x_sent, x->x_buf);
		x->x_erred = 1;
		x->x_inflight = 1;
		evhttp_send_reply_chunk_with_cb(
		    x->x_req, x->x_buf, stream_written_cb, x);
		return;
	}
	if (x->x_pace_ms > 0)
		xchg_arm(x, ACT_NEXT, x->x_pace_ms);
	else
		stream_send(x);
}

static void
xchg_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct xchg *x = arg;
	struct bufferevent *bev;

	(void)fd;
	(void)what;
	switch (x->x_act) {
	case ACT_RESPOND:
		respond(x);
		break;
	case ACT_NEXT:
		stream_send(x);
		break;
	case ACT_POLL:
		/* K = 0: wait until the response headers left. */
		bev = evhttp_connection_get_bufferevent(x->x_evcon);
		if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
			xchg_arm(x, ACT_POLL, 1);
		else
			stream_next(x);
		break;
	case ACT_RESET:
		/* Let the peer have the events first: a RST drops them. */
		if (unacked(x) && x->x_waited++ < RESET_WAIT_MS)
			xchg_arm(x, ACT_RESET, 1);
		else
			xchg_abort(x, 1);
		break;
	case ACT_CLOSE:
		xchg_abort(x, 0);
		break;
	case ACT_END:
		stream_next(x);
		break;
	case ACT_NONE:
		break;
	}
}

static void
set_headers(struct xchg *x, const char *ctype)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(x->x_req);
	char v[64];

	evhttp_add_header(h, "content-type", ctype);
	if (strcmp(ctype, "text/event-stream") == 0)
		evhttp_add_header(h, "cache-control", "no-cache");
	if (x->x_fam == FAM_OPENAI) {
		snprintf(v, sizeof(v), "fake-%llu", x->x_seq);
		evhttp_add_header(h, "x-request-id", v);
	} else if (x->x_fam == FAM_ANTHROPIC) {
		snprintf(v, sizeof(v), "req_fake%llu", x->x_seq);
		evhttp_add_header(h, "request-id", v);
	}
	if (x->x_retry_after >= 0) {
		snprintf(v, sizeof(v), "%ld", x->x_retry_after);
		evhttp_add_header(h, "retry-after", v);
	}
	if (x->x_retry_after_ms >= 0) {
		snprintf(v, sizeof(v), "%ld", x->x_retry_after_ms);
		evhttp_add_header(h, "retry-after-ms", v);
	}
}

static void
stream_start(struct xchg *x)
{
	set_headers(x, x->x_sse ? "text/event-stream" : "application/json");
	evhttp_send_reply_start(x->x_req, 200, "OK");
	if (x->x_hang == HANG_BODY) {
		stream_frame(x, 0, x->x_buf);
		evhttp_send_reply_chunk(x->x_req, x->x_buf);
		return;
	}
	if (x->x_reset_after == 0 || x->x_close_after == 0 ||
	    x->x_error_after == 0) {
		xchg_arm(x, ACT_POLL, 1);
		return;
	}
	stream_send(x);
}

/* Send the response, or start the stream, after the optional delay. */
static void
respond(struct xchg *x)
{
	struct evbuffer *b = x->x_buf, *half;
	char msg[256], len[32];
	int code = 200;

	if (x->x_status >= 300) {
		code = x->x_status;
		snprintf(
		    msg, sizeof(msg), "fakeprov: injected status %d", code);
		error_body(x, b, code, msg);
	} else if (x->x_ep == EP_NOTFOUND) {
		code = 404;
		error_body(x, b, code,
		    "Unknown request URL. Please check the URL for typos, or "
		    "see the docs at https://platform.openai.com/docs/api-"
		    "reference/.");
	} else if (x->x_bad_json) {
		code = 400;
		error_body(x, b, code,
		    "We could not parse the JSON body of your request.");
	} else if (x->x_stream) {
		stream_start(x);
		return;
	} else
		body_nonstream(x, b);

	if (x->x_reset_after >= 0 || x->x_close_after >= 0) {
		evbuffer_drain(b, evbuffer_get_length(b));
		xchg_arm(x, x->x_reset_after >= 0 ? ACT_RESET : ACT_CLOSE, 0);
		return;
	}
	set_headers(x, "application/json");
	if (x->x_hang == HANG_BODY) {
		snprintf(len, sizeof(len), "%zu", evbuffer_get_length(b));
		evhttp_add_header(evhttp_request_get_output_headers(x->x_req),
		    "Content-Length", len);
		evhttp_send_reply_start(x->x_req, code, reason_phrase(code));
		if ((half = evbuffer_new()) == NULL)
			fatalx("out of memory");
		evbuffer_remove_buffer(b, half, evbuffer_get_length(b) / 2);
		evbuffer_drain(b, evbuffer_get_length(b));
		evhttp_send_reply_chunk(x->x_req, half);
		evbuffer_free(half);
		return;
	}
	x->x_userdone = 1;
	evhttp_send_reply(x->x_req, code, reason_phrase(code), b);
}

/*
 * Request parsing.
 */

static long long
hdr_num(struct evkeyvalq *h, const char *name, long long def, long long max)
{
	const char *v = evhttp_find_header(h, name);
	char *end;
	long long l;

	if (v == NULL || *v == '\0')
		return (def);
	errno = 0;
	l = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || l < 0)
		return (def);
	return (l > max ? max : l);
}

static int
has_suffix(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return (ls >= lx && strcmp(s + ls - lx, suffix) == 0);
}

/*
 * Map the path to an endpoint by its suffix, so any base_url prefix works.
 * *model gets the model named by the path (Gemini, Azure deployment).
 */
static enum endpoint
route(const char *path, enum evhttp_cmd_type cmd, char **model)
{
	static const struct {
		const char *suffix;
		enum endpoint ep;
	} routes[] = {
	    {"/v1/messages/count_tokens", EP_COUNT_TOKENS},
	    {"/v1/messages", EP_MESSAGES},
	    {"/v1/chat/completions", EP_CHAT},
	    {"/v1/completions", EP_COMPLETIONS},
	    {"/v1/embeddings", EP_EMBEDDINGS},
	    {"/v1/responses", EP_RESPONSES},
	    {"/openai/responses", EP_RESPONSES},
	    {"/v1/models", EP_MODELS},
	};
	static const struct {
		const char *verb;
		enum endpoint ep;
	} verbs[] = {
	    {":generateContent", EP_GENERATE},
	    {":streamGenerateContent", EP_STREAM_GENERATE},
	    {":countTokens", EP_GEMINI_COUNT},
	    {":embedContent", EP_EMBED_CONTENT},
	};
	const char *seg, *p, *op;
	enum endpoint ep = EP_NOTFOUND;
	size_t i;

	*model = NULL;
	if ((p = strstr(path, "/openai/deployments/")) != NULL) {
		seg = p + strlen("/openai/deployments/");
		if ((op = strchr(seg, '/')) != NULL && op > seg) {
			if (strcmp(op, "/chat/completions") == 0)
				ep = EP_CHAT;
			else if (strcmp(op, "/completions") == 0)
				ep = EP_COMPLETIONS;
			else if (strcmp(op, "/embeddings") == 0)
				ep = EP_EMBEDDINGS;
			if (ep != EP_NOTFOUND)
				*model = strndup(seg, (size_t)(op - seg));
		}
	}
	for (i = 0; ep == EP_NOTFOUND && i < sizeof(routes) / sizeof(*routes);
	     i++) {
		if (has_suffix(path, routes[i].suffix))
			ep = routes[i].ep;
	}
	seg = (p = strrchr(path, '/')) != NULL ? p + 1 : path;
	for (i = 0; ep == EP_NOTFOUND && i < sizeof(verbs) / sizeof(*verbs);
	     i++) {
		if (has_suffix(seg, verbs[i].verb) &&
		    strlen(seg) > strlen(verbs[i].verb)) {
			ep = verbs[i].ep;
			*model =
			    strndup(seg, strlen(seg) - strlen(verbs[i].verb));
		}
	}
	if (ep == EP_MODELS ? cmd != EVHTTP_REQ_GET : cmd != EVHTTP_REQ_POST)
		ep = EP_NOTFOUND;
	if (ep == EP_NOTFOUND) {
		free(*model);
		*model = NULL;
	}
	return (ep);
}

static int
query_has(const char *query, const char *param)
{
	size_t len = strlen(param);
	const char *p = query;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, param, len) == 0 &&
		    (p[len] == '&' || p[len] == '\0'))
			return (1);
		if ((p = strchr(p, '&')) != NULL)
			p++;
	}
	return (0);
}

/*
 * Whether the four characters at p are hex digits; their value in *v.
 */
static int
hex4(const char *p, unsigned *v)
{
	int i;

	*v = 0;
	for (i = 0; i < 4; i++) {
		if (!isxdigit((unsigned char)p[i]))
			return (0);
		*v = *v * 16 +
		    (unsigned)(isdigit((unsigned char)p[i])
			    ? p[i] - '0'
			    : (tolower((unsigned char)p[i]) - 'a' + 10));
	}
	return (1);
}

/*
 * A copy of the body with every lone surrogate escape written as \ufffd:
 * the providers' parsers (Python's json) read a lone surrogate, which
 * JavaScript's JSON.stringify writes for a string cut inside an emoji,
 * and cJSON refuses the whole body for one.
 */
static char *
mend_surrogates(const char *body, size_t len)
{
	char *q = malloc(len + 1);
	unsigned hi, lo;
	size_t i = 0;

	if (q == NULL)
		abort();
	memcpy(q, body, len);
	q[len] = '\0';
	while (i + 1 < len) {
		if (q[i] != '\\') {
			i++;
			continue;
		}
		if (q[i + 1] != 'u' || i + 6 > len || !hex4(q + i + 2, &hi)) {
			i += 2;
			continue;
		}
		if (hi >= 0xd800 && hi <= 0xdbff && i + 12 <= len &&
		    q[i + 6] == '\\' && q[i + 7] == 'u' &&
		    hex4(q + i + 8, &lo) && lo >= 0xdc00 && lo <= 0xdfff) {
			i += 12;
			continue;
		}
		if (hi >= 0xd800 && hi <= 0xdfff)
			memcpy(q + i + 2, "fffd", 4);
		i += 6;
	}
	return (q);
}

/* Read what the reply depends on from the JSON body. */
static void
parse_body(struct xchg *x, const char *body, size_t len, char **model)
{
	cJSON *root, *v, *so;
	char *mended;

	if (len == 0)
		return;
	mended = mend_surrogates(body, len);
	root = cJSON_ParseWithLength(mended, len);
	free(mended);
	if (root == NULL) {
		x->x_bad_json = 1;
		return;
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "model");
	if (cJSON_IsString(v) && *model == NULL)
		*model = strdup(v->valuestring);
	if (x->x_fam != FAM_GEMINI)
		x->x_stream = cJSON_IsTrue(
		    cJSON_GetObjectItemCaseSensitive(root, "stream"));
	so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
	x->x_usage =
	    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
	v = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(root, "thinking"), "type");
	x->x_thinking = x->x_ep == EP_MESSAGES && cJSON_IsString(v) &&
	    (strcmp(v->valuestring, "enabled") == 0 ||
		strcmp(v->valuestring, "adaptive") == 0);
	v = cJSON_GetObjectItemCaseSensitive(root, "n");
	if ((x->x_ep == EP_CHAT || x->x_ep == EP_COMPLETIONS) &&
	    cJSON_IsNumber(v) && v->valuedouble >= 1)
		x->x_n = v->valuedouble > MAX_CHOICES ? MAX_CHOICES
						      : (long)v->valuedouble;
	v = cJSON_GetObjectItemCaseSensitive(root, "input");
	if (x->x_ep == EP_EMBEDDINGS && cJSON_IsArray(v) &&
	    cJSON_GetArraySize(v) > 0 &&
	    !cJSON_IsNumber(cJSON_GetArrayItem(v, 0)))
		x->x_inputs = cJSON_GetArraySize(v) > MAX_CHOICES
		    ? MAX_CHOICES
		    : cJSON_GetArraySize(v);
	cJSON_Delete(root);
}

/* Does this request carry a credential holding g_fail_key? */
static int
fail_key_matches(struct evkeyvalq *h)
{
	static const char *const names[] = {
	    "authorization", "api-key", "x-api-key", "x-goog-api-key"};
	const char *v;
	size_t i;

	if (g_fail_key == NULL)
		return (1);
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if ((v = evhttp_find_header(h, names[i])) != NULL &&
		    strstr(v, g_fail_key) != NULL)
			return (1);
	return (0);
}

/* The --fail options, for a request they match. */
static void
fail_knobs(struct xchg *x, struct evkeyvalq *h)
{
	if ((g_fail_status == 0 && !g_fail_hang) || g_fail_count == 0 ||
	    !fail_key_matches(h))
		return;
	if (g_fail_count > 0)
		g_fail_count--;
	if (g_fail_hang)
		x->x_hang = HANG_HEADERS;
	else
		x->x_status = g_fail_status;
	if (g_fail_retry_after >= 0)
		x->x_retry_after = g_fail_retry_after;
	if (g_fail_retry_after_ms >= 0)
		x->x_retry_after_ms = g_fail_retry_after_ms;
}

static void
parse_knobs(struct xchg *x, struct evkeyvalq *h, size_t body_len)
{
	const char *v;
	long long p;

	x->x_status = (int)hdr_num(h, "x-fake-status", 0, 999);
	x->x_retry_after = (long)hdr_num(h, "x-fake-retry-after", -1, 86400);
	x->x_retry_after_ms = -1;
	x->x_delay_ms = (long)hdr_num(h, "x-fake-delay-ms", 0, 86400000);
	x->x_pace_ms = (long)hdr_num(h, "x-fake-pace-ms", 0, 86400000);
	x->x_end_delay_ms =
	    (long)hdr_num(h, "x-fake-end-delay-ms", 0, 86400000);
	x->x_events = (long)hdr_num(h, "x-fake-events", 3, MAX_EVENTS);
	x->x_ebytes = (long)hdr_num(h, "x-fake-event-bytes", 8, MAX_EBYTES);
	x->x_etokens = hdr_num(h, "x-fake-event-tokens", 1, 1000000);
	x->x_reset_after =
	    (long)hdr_num(h, "x-fake-reset-after", -1, MAX_EVENTS * 2);
	x->x_close_after =
	    (long)hdr_num(h, "x-fake-close-after", -1, MAX_EVENTS * 2);
	x->x_error_after =
	    (long)hdr_num(h, "x-fake-error-after", -1, MAX_EVENTS * 2);
	p = (long long)(body_len / 4);
	x->x_prompt =
	    hdr_num(h, "x-fake-input-tokens", p < 1 ? 1 : p, MAX_TOKENS);
	x->x_cached = hdr_num(h, "x-fake-cached-tokens", 0, x->x_prompt);
	x->x_cwrite = hdr_num(
	    h, "x-fake-cache-write-tokens", 0, x->x_prompt - x->x_cached);
	x->x_reason = hdr_num(h, "x-fake-reasoning-tokens", 0, MAX_TOKENS);
	if ((v = evhttp_find_header(h, "x-fake-hang")) != NULL) {
		if (strcmp(v, "headers") == 0)
			x->x_hang = HANG_HEADERS;
		else if (strcmp(v, "body") == 0)
			x->x_hang = HANG_BODY;
	}
	v = evhttp_find_header(h, "x-fake-sse-timestamps");
	x->x_timestamps = v != NULL && strcmp(v, "0") != 0 && *v != '\0';
	fail_knobs(x, h);
}

static const char *
default_model(enum endpoint ep)
{
	switch (ep) {
	case EP_EMBEDDINGS:
		return ("text-embedding-3-small");
	case EP_MESSAGES:
	case EP_COUNT_TOKENS:
		return ("claude-sonnet-4-5");
	case EP_GENERATE:
	case EP_STREAM_GENERATE:
	case EP_GEMINI_COUNT:
	case EP_EMBED_CONTENT:
		return ("gemini-2.5-flash");
	default:
		return ("gpt-4o");
	}
}

static void
request_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	size_t len = evbuffer_get_length(in);
	const unsigned char *body;
	const char *rawpath, *query, *v;
	char *path, *model = NULL;
	struct bufferevent *bev;
	struct xchg *x;
	evutil_socket_t fd;
	int one = 1;

	(void)arg;
	body = len > 0 ? evbuffer_pullup(in, -1) : (const unsigned char *)"";
	x = xcalloc(1, sizeof(*x));
	x->x_seq = ++g_seq;
	x->x_req = req;
	x->x_evcon = evhttp_request_get_connection(req);
	if ((x->x_timer = evtimer_new(g_base, xchg_timer_cb, x)) == NULL ||
	    (x->x_buf = evbuffer_new()) == NULL)
		fatalx("out of memory");
	TAILQ_INSERT_TAIL(&g_xchgs, x, x_entry);
	record_request(x->x_seq, req, body, len);

	if (uri == NULL || (rawpath = evhttp_uri_get_path(uri)) == NULL)
		rawpath = "";
	if ((path = evhttp_uridecode(rawpath, 0, NULL)) == NULL)
		fatalx("out of memory");
	x->x_ep = route(path, evhttp_request_get_command(req), &model);
	free(path);
	switch (x->x_ep) {
	case EP_MESSAGES:
	case EP_COUNT_TOKENS:
		x->x_fam = FAM_ANTHROPIC;
		break;
	case EP_GENERATE:
	case EP_STREAM_GENERATE:
	case EP_GEMINI_COUNT:
	case EP_EMBED_CONTENT:
		x->x_fam = FAM_GEMINI;
		break;
	default:
		x->x_fam = FAM_OPENAI;
		break;
	}
	x->x_n = 1;
	x->x_inputs = 1;
	x->x_sse = 1;
	parse_knobs(x, h, len);
	if (x->x_ep != EP_NOTFOUND && x->x_ep != EP_MODELS)
		parse_body(x, (const char *)body, len, &model);
	if (x->x_ep == EP_STREAM_GENERATE) {
		x->x_stream = 1;
		query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
		x->x_sse = query != NULL && query_has(query, "alt=sse");
		if (!x->x_sse)
			x->x_timestamps = 0;
	} else if (x->x_ep != EP_CHAT && x->x_ep != EP_COMPLETIONS &&
	    x->x_ep != EP_RESPONSES && x->x_ep != EP_MESSAGES)
		x->x_stream = 0;
	if (x->x_fam == FAM_GEMINI && x->x_error_after >= 0 && !x->x_sse) {
		/* A JSON-array stream has no error chunk: close instead. */
		if (x->x_close_after < 0 || x->x_error_after < x->x_close_after)
			x->x_close_after = x->x_error_after;
		x->x_error_after = -1;
	}
	if ((x->x_ep == EP_CHAT || x->x_ep == EP_MESSAGES) &&
	    (v = evhttp_find_header(h, "x-fake-tool")) != NULL && *v != '\0')
		x->x_tool = json_literal(v);
	if ((v = evhttp_find_header(h, "x-fake-model-hex")) != NULL)
		x->x_model = raw_literal(v);
	if ((v = evhttp_find_header(h, "x-fake-error-name-hex")) != NULL)
		x->x_errname = raw_literal(v);
	if (x->x_model == NULL &&
	    (v = evhttp_find_header(h, "x-fake-model")) != NULL)
		x->x_model = json_literal(v);
	if (x->x_model == NULL)
		x->x_model = json_literal(
		    model != NULL ? model : default_model(x->x_ep));
	free(model);
	x->x_nframes = stream_nframes(x);

	evhttp_connection_set_closecb(x->x_evcon, xchg_closed_cb, x);
	evhttp_request_set_on_complete_cb(req, xchg_complete_cb, x);
	bev = evhttp_connection_get_bufferevent(x->x_evcon);
	if ((fd = bufferevent_getfd(bev)) >= 0)
		/* Each event goes out when written, as providers flush them. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* An instant non-stream reply needs no watcher: a write will tell. */
	if (fd >= 0 &&
	    (x->x_stream || x->x_hang != HANG_NONE || x->x_delay_ms > 0)) {
		x->x_watch = event_new(
		    g_base, fd, EV_READ | EV_PERSIST, xchg_watch_cb, x);
		if (x->x_watch == NULL)
			fatalx("out of memory");
		event_add(x->x_watch, NULL);
	}

	if (x->x_hang == HANG_HEADERS)
		return;
	if (x->x_delay_ms > 0)
		xchg_arm(x, ACT_RESPOND, x->x_delay_ms);
	else
		respond(x);
}

/*
 * Setup and teardown.
 */

/* Offer only HTTP/1.1 over ALPN: evhttp does not speak h2. */
static int
tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned int i;

	(void)ssl;
	(void)arg;
	for (i = 0; i < inlen; i += 1 + in[i]) {
		if (in[i] == 8 && i + 9 <= inlen &&
		    memcmp(in + i + 1, "http/1.1", 8) == 0) {
			*out = in + i + 1;
			*outlen = 8;
			return (SSL_TLSEXT_ERR_OK);
		}
	}
	return (SSL_TLSEXT_ERR_NOACK);
}

static struct bufferevent *
tls_bev_cb(struct event_base *base, void *arg)
{
	SSL_CTX *ctx = arg;
	struct bufferevent *bev;
	SSL *ssl;

	if ((ssl = SSL_new(ctx)) == NULL)
		fatalx("SSL_new failed");
	bev = bufferevent_openssl_socket_new(
	    base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		fatalx("bufferevent_openssl_socket_new failed");
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return (bev);
}

static SSL_CTX *
tls_setup(const char *cert, const char *key)
{
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		fatalx("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ERR_print_errors_fp(stderr);
		fatalx("cannot load %s / %s", cert, key);
	}
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);
	return (ctx);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	event_base_loopbreak(g_base);
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: fakeprov [--listen HOST:PORT] "
	    "[--tls-cert FILE --tls-key FILE] [--record FILE]\n"
	    "       [--fail-status CODE | --fail-hang] [--fail-retry-after S]"
	    " [--fail-retry-after-ms MS]"
	    " [--fail-count N] [--fail-key SUBSTR]\n");
	exit(2);
}

/* Split HOST:PORT, [V6]:PORT or a bare PORT; arg is ours to modify. */
static void
parse_listen(char *arg, const char **host, unsigned short *port)
{
	char *p, *end;
	long l;

	if ((p = strrchr(arg, ':')) == NULL) {
		p = arg;
	} else {
		*p++ = '\0';
		if (arg[0] == '[' && p - arg >= 3 && p[-2] == ']') {
			p[-2] = '\0';
			arg++;
		}
		if (*arg != '\0')
			*host = arg;
	}
	errno = 0;
	l = strtol(p, &end, 10);
	if (errno != 0 || end == p || *end != '\0' || l < 0 || l > 65535)
		fatalx("bad --listen port \"%s\"", p);
	*port = (unsigned short)l;
}

static void
print_listening(struct evhttp_bound_socket *bound)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char addr[INET6_ADDRSTRLEN];
	unsigned int port;

	if (getsockname(evhttp_bound_socket_get_fd(bound),
		(struct sockaddr *)&ss, &sslen) == -1)
		fatalx("getsockname: %s", strerror(errno));
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof(addr));
		port = ntohs(s6->sin6_port);
		printf("fakeprov listening on [%s]:%u %s\n", addr, port,
		    g_ssl_ctx != NULL ? "https" : "http");
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof(addr));
		port = ntohs(s4->sin_port);
		printf("fakeprov listening on %s:%u %s\n", addr, port,
		    g_ssl_ctx != NULL ? "https" : "http");
	}
	fflush(stdout);
}

int
main(int argc, char *argv[])
{
	const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
	const char *record = NULL;
	char *listen_arg = NULL;
	unsigned short port = 0;
	struct evhttp_bound_socket *bound;
	struct event *ev_term, *ev_int;
	struct xchg *x;
	size_t i;
	int c;

	for (c = 1; c < argc; c++) {
		if (strcmp(argv[c], "--listen") == 0 && c + 1 < argc) {
			free(listen_arg);
			if ((listen_arg = strdup(argv[++c])) == NULL)
				fatalx("out of memory");
			parse_listen(listen_arg, &host, &port);
		} else if (strcmp(argv[c], "--tls-cert") == 0 && c + 1 < argc)
			cert = argv[++c];
		else if (strcmp(argv[c], "--tls-key") == 0 && c + 1 < argc)
			key = argv[++c];
		else if (strcmp(argv[c], "--record") == 0 && c + 1 < argc)
			record = argv[++c];
		else if (strcmp(argv[c], "--fail-status") == 0 && c + 1 < argc)
			g_fail_status = (int)strtol(argv[++c], NULL, 10);
		else if (strcmp(argv[c], "--fail-hang") == 0)
			g_fail_hang = 1;
		else if (strcmp(argv[c], "--fail-retry-after") == 0 &&
		    c + 1 < argc)
			g_fail_retry_after = strtol(argv[++c], NULL, 10);
		else if (strcmp(argv[c], "--fail-retry-after-ms") == 0 &&
		    c + 1 < argc)
			g_fail_retry_after_ms = strtol(argv[++c], NULL, 10);
		else if (strcmp(argv[c], "--fail-count") == 0 && c + 1 < argc)
			g_fail_count = strtol(argv[++c], NULL, 10);
		else if (strcmp(argv[c], "--fail-key") == 0 && c + 1 < argc)
			g_fail_key = argv[++c];
		else
			usage();
	}
	if ((cert == NULL) != (key == NULL))
		usage();
	for (i = 0; i < sizeof(g_filler); i++)
		g_filler[i] = "tok "[i % 4];
	signal(SIGPIPE, SIG_IGN);

	if (record != NULL && (g_record = fopen(record, "a")) == NULL)
		fatalx("%s: %s", record, strerror(errno));
	if ((g_base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	if (cert != NULL)
		g_ssl_ctx = tls_setup(cert, key);
	if ((g_http = evhttp_new(g_base)) == NULL)
		fatalx("evhttp_new failed");
	evhttp_set_allowed_methods(g_http,
	    EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
		EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
		EVHTTP_REQ_PATCH);
	evhttp_set_max_headers_size(g_http, MAX_HEADERS);
	evhttp_set_max_body_size(g_http, MAX_BODY);
	evhttp_set_timeout(g_http, CONN_TIMEOUT);
	evhttp_set_gencb(g_http, request_cb, NULL);
	if (g_ssl_ctx != NULL)
		evhttp_set_bevcb(g_http, tls_bev_cb, g_ssl_ctx);
	if ((bound = evhttp_bind_socket_with_handle(g_http, host, port)) ==
	    NULL)
		fatalx("cannot listen on %s:%u", host, port);
	ev_term = evsignal_new(g_base, SIGTERM, signal_cb, NULL);
	ev_int = evsignal_new(g_base, SIGINT, signal_cb, NULL);
	if (ev_term == NULL || ev_int == NULL || event_add(ev_term, NULL) ||
	    event_add(ev_int, NULL))
		fatalx("cannot install signal handlers");
	print_listening(bound);

	event_base_dispatch(g_base);

	/* Freeing the server closes every connection through closecb. */
	g_stopping = 1;
	evhttp_free(g_http);
	while ((x = TAILQ_FIRST(&g_xchgs)) != NULL) {
		record_end(x, "closed", "shutdown");
		xchg_free(x);
	}
	event_free(ev_term);
	event_free(ev_int);
	event_base_free(g_base);
	SSL_CTX_free(g_ssl_ctx);
	if (g_record != NULL)
		fclose(g_record);
	libevent_global_shutdown();
	free(listen_arg);
	return (0);
}
