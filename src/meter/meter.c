/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metering of one call's response (struct meter), which relays the
 * provider's bytes and reads usage from a copy. The request side is
 * meter_request.c.
 *
 * A response is metered in one of three modes. Non-2xx responses and free
 * endpoints pass through untouched and are never billed. A JSON body is
 * relayed as it arrives and kept (whole up to BUF_METER_BODY_MAX, else only
 * its tail, where every provider puts usage) to be parsed once at the end.
 * An event stream is relayed as it arrives and framed by sse.c; each event
 * is parsed once and handed to the adapter. Only when tollgate injected
 * include_usage are bytes held back: then whole events are relayed, the
 * usage chunk the client did not ask for is dropped and the "usage":null
 * members are cut out of the others, so the client sees the stream it
 * would have seen without the injection.
 *
 * At the end the numbers are settled: reported by the provider, or
 * estimated from the request and the text seen when they never came.
 * docs/internals/metering.md has the rules.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "tollgate/buf.h"
#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/meter.h"
#include "tollgate/sse.h"
#include "tollgate/util.h"

#include "providers/providers.h"

_Static_assert(METER_BODY_MAX == BUF_METER_BODY_MAX,
    "meter.h and buf.h disagree on the body kept whole");

/* First allocation for a JSON body kept whole. */
#define METER_BODY_INIT 4096
/* First allocation for the held bytes of a filtered stream: one event. */
#define METER_HELD_INIT 512

enum meter_mode {
	METER_PASS, /* relayed untouched, never billed */
	METER_JSON, /* one JSON body, parsed at the end */
	METER_STREAM, /* an event stream, parsed event by event */
};

struct meter {
	enum api_family m_family;
	enum endpoint m_endpoint;
	int m_metered;
	struct call_info m_ci;
	int m_status;
	enum meter_mode m_mode;
	int m_filter; /* include_usage was injected: filter events */
	int m_finished;
	struct meter_acc m_acc;

	struct sse *m_sse; /* owned, stream mode only */

	/* JSON mode: the whole body, then only its tail (a ring). */
	struct buf m_body;
	char *m_tail;
	size_t m_tailpos;
	size_t m_taillen;
	size_t m_total;

	/* Filtered stream: bytes not yet relayed, from m_heldoff on. */
	struct buf m_held;
	size_t m_heldoff;
	size_t m_gone; /* bytes of the held event already relayed */
	meter_emit_cb m_emit;
	void *m_emitarg;
};

static void meter_event_cb(void *, const struct sse_event *);

/* Start metering the response of a call routed by rt. */
struct meter *
meter_new(const struct route *rt, const struct call_info *ci)
{
	struct meter *m;

	m = xcalloc(1, sizeof(*m));
	m->m_family = rt->rt_family;
	m->m_endpoint = rt->rt_endpoint;
	m->m_metered = rt->rt_metered;
	if (ci != NULL)
		m->m_ci = *ci;
	else {
		m->m_ci.ci_max_output = -1;
		m->m_ci.ci_n = 1;
	}
	m->m_mode = METER_PASS;
	buf_init(&m->m_body, BUF_METER_BODY_MAX, METER_BODY_INIT, 0);
	buf_init(&m->m_held, BUF_METER_HOLD_MAX, METER_HELD_INIT, 0);
	return (m);
}

static int
is_event_stream(const char *ct)
{
	static const char es[] = "text/event-stream";

	if (ct == NULL)
		return (0);
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, es, sizeof(es) - 1) != 0)
		return (0);
	ct += sizeof(es) - 1;
	return (*ct == '\0' || *ct == ';' || *ct == ' ' || *ct == '\t');
}

/* The response head arrived: choose how the body is metered. */
void
meter_response(struct meter *m, int status, const char *content_type)
{
	m->m_status = status;
	if (status < 200 || status > 299 || !m->m_metered) {
		m->m_mode = METER_PASS;
		return;
	}
	if (is_event_stream(content_type)) {
		m->m_mode = METER_STREAM;
		m->m_sse = sse_new(BUF_SSE_EVENT_MAX, meter_event_cb, m);
		m->m_filter = m->m_ci.ci_usage_injected &&
		    m->m_family == FAMILY_OPENAI &&
		    (m->m_endpoint == EP_CHAT ||
			m->m_endpoint == EP_COMPLETIONS);
	} else
		m->m_mode = METER_JSON;
}

static void
ring_put(struct meter *m, const char *p, size_t n)
{
	size_t first;

	if (n >= METER_TAIL_MAX) {
		memcpy(m->m_tail, p + n - METER_TAIL_MAX, METER_TAIL_MAX);
		m->m_tailpos = 0;
		m->m_taillen = METER_TAIL_MAX;
		return;
	}
	first = METER_TAIL_MAX - m->m_tailpos;
	if (first > n)
		first = n;
	memcpy(m->m_tail + m->m_tailpos, p, first);
	memcpy(m->m_tail, p + first, n - first);
	m->m_tailpos = (m->m_tailpos + n) % METER_TAIL_MAX;
	m->m_taillen += n;
	if (m->m_taillen > METER_TAIL_MAX)
		m->m_taillen = METER_TAIL_MAX;
}

/* Keep a JSON body: whole up to its cap, then only its tail. */
static void
meter_keep(struct meter *m, const char *p, size_t n)
{
	m->m_total += n;
	if (m->m_tail == NULL) {
		if (buf_add(&m->m_body, p, n) == 0)
			return;
		/* Past the cap the body is as it was: its tail goes on. */
		m->m_tail = xmalloc(METER_TAIL_MAX);
		ring_put(m, buf_ptr(&m->m_body), buf_len(&m->m_body));
		buf_free(&m->m_body);
	}
	ring_put(m, p, n);
}

/*
 * Hold as much of p[0..n) as fits under the cap and say how much that
 * was. Between pieces at most BUF_METER_HELD_MAX bytes are held
 * (meter_feed relays more at once), so the cap always leaves room for
 * that much again: a piece from curl (16 KiB) is always held whole.
 */
static size_t
meter_hold(struct meter *m, const char *p, size_t n)
{
	size_t room;

	if (m->m_heldoff > 0) {
		/* Each byte moves at most once: what is left is one event. */
		buf_consume(&m->m_held, m->m_heldoff);
		m->m_heldoff = 0;
	}
	room = BUF_METER_HOLD_MAX - buf_len(&m->m_held);
	if (n > room)
		n = room;
	if (buf_add(&m->m_held, p, n) == -1)
		fatalx("%s: %zu bytes do not fit", __func__, n);
	return (n);
}

static void
meter_out(struct meter *m, const char *p, size_t n)
{
	if (m->m_emit != NULL && n > 0)
		m->m_emit(m->m_emitarg, p, n);
}

/*
 * Cut the top-level "usage": null member out of an event's raw bytes:
 * sets [*from, *to) and returns 1, or returns 0 when it cannot be done
 * textually (then the event is relayed as it is).
 */
static int
usage_null_span(const char *raw, size_t len, size_t *from, size_t *to)
{
	struct json_span js;
	size_t i = 0, eol, start = SIZE_MAX, end = 0, n;

	/* The JSON must sit on a single data: line. */
	while (i < len) {
		for (eol = i; eol < len && raw[eol] != '\n' && raw[eol] != '\r';
		     eol++)
			;
		if (eol - i >= 5 && memcmp(raw + i, "data:", 5) == 0) {
			if (start != SIZE_MAX)
				return (0);
			start = i + 5;
			if (start < eol && raw[start] == ' ')
				start++;
			end = eol;
		}
		i = eol + 1;
	}
	if (start == SIZE_MAX)
		return (0);
	start = meter_json_ws(raw, end, start);
	if (meter_json_member(raw + start, end - start, "usage", &js) != 1)
		return (0);
	n = js.js_valend - js.js_val;
	if (n != 4 || memcmp(raw + start + js.js_val, "null", 4) != 0)
		return (0);
	if (js.js_comma != SIZE_MAX) {
		/* ...,"usage":null  → ... */
		*from = start + js.js_comma;
		*to = start + js.js_valend;
	} else {
		/* {"usage":null,"id":...  → {"id":... */
		*from = start + js.js_key;
		*to = start + js.js_next;
	}
	return (1);
}

/* Relay one event of a filtered stream: whole, trimmed, or not at all. */
static void
meter_filter(struct meter *m, const struct sse_event *ev, int flags)
{
	const char *raw;
	size_t n, from, to;
	int partial = m->m_gone > 0;

	if (ev->ev_rawlen <= m->m_gone) {
		m->m_gone -= ev->ev_rawlen;
		return;
	}
	n = ev->ev_rawlen - m->m_gone;
	m->m_gone = 0;
	if (n > buf_len(&m->m_held) - m->m_heldoff)
		n = buf_len(&m->m_held) - m->m_heldoff; /* cannot happen */
	raw = buf_ptr(&m->m_held) + m->m_heldoff;
	m->m_heldoff += n;
	if (partial) {
		meter_out(m, raw, n); /* the start is already gone */
		return;
	}
	if (flags & OPENAI_EV_USAGE_CHUNK)
		return;
	if ((flags & OPENAI_EV_USAGE_NULL) &&
	    usage_null_span(raw, n, &from, &to)) {
		meter_out(m, raw, from);
		meter_out(m, raw + to, n - to);
		return;
	}
	meter_out(m, raw, n);
}

static int
is_done(const struct sse_event *ev)
{
	const char *p = ev->ev_data;
	size_t n = ev->ev_datalen;

	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	return (n == 6 && memcmp(p, "[DONE]", 6) == 0);
}

static void
meter_event_cb(void *arg, const struct sse_event *ev)
{
	struct meter *m = arg;
	cJSON *root = NULL;
	int flags = 0;

	/* Each event is parsed once, and only here. */
	if (!ev->ev_oversized && !is_done(ev))
		root = meter_json_parse(ev->ev_data, ev->ev_datalen, 0);
	switch (m->m_family) {
	case FAMILY_OPENAI:
		flags = openai_event(&m->m_acc, m->m_endpoint, ev, root);
		break;
	case FAMILY_ANTHROPIC:
		anthropic_event(&m->m_acc, ev, root);
		break;
	case FAMILY_GEMINI:
		gemini_event(&m->m_acc, ev, root);
		break;
	}
	if (is_done(ev))
		m->m_acc.ma_ended = 1;
	if (m->m_filter)
		meter_filter(m, ev, flags);
	cJSON_Delete(root);
}

/* Relay and meter the next piece of the response body. */
void
meter_feed(
    struct meter *m, const char *p, size_t n, meter_emit_cb emit, void *arg)
{
	size_t left, k;

	if (n == 0 || m->m_finished)
		return;
	switch (m->m_mode) {
	case METER_PASS:
		emit(arg, p, n);
		break;
	case METER_JSON:
		emit(arg, p, n);
		meter_keep(m, p, n);
		break;
	case METER_STREAM:
		if (!m->m_filter) {
			/* Never hold bytes back: relay, then parse a copy. */
			emit(arg, p, n);
			sse_feed(m->m_sse, p, n);
			break;
		}
		m->m_emit = emit;
		m->m_emitarg = arg;
		/* One pass, unless the piece is too large to hold at once. */
		while (n > 0) {
			k = meter_hold(m, p, n);
			sse_feed(m->m_sse, p, k);
			left = buf_len(&m->m_held) - m->m_heldoff;
			if (left > BUF_METER_HELD_MAX) {
				/* A huge event: relay it unfiltered as it
				 * comes. */
				meter_out(m, buf_ptr(&m->m_held) + m->m_heldoff,
				    left);
				m->m_gone += left;
				m->m_heldoff = 0;
				buf_reset(&m->m_held);
			}
			p += k;
			n -= k;
		}
		if (m->m_heldoff == buf_len(&m->m_held)) {
			/* Nothing held: the stream waits for its next
			 * event without a buffer. */
			buf_free(&m->m_held);
			m->m_heldoff = 0;
		}
		m->m_emit = NULL;
		m->m_emitarg = NULL;
		break;
	}
}

static int
family_usage(struct meter *m, const cJSON *usage)
{
	switch (m->m_family) {
	case FAMILY_OPENAI:
		return (openai_usage(&m->m_acc, m->m_endpoint, usage));
	case FAMILY_ANTHROPIC:
		return (anthropic_usage(&m->m_acc, usage));
	case FAMILY_GEMINI:
		return (gemini_usage(&m->m_acc, usage));
	}
	return (0);
}

/* Read usage out of a kept JSON body (whole) or its tail. */
static void
meter_json_body(struct meter *m)
{
	const char *text, *key;
	char *lin = NULL;
	size_t len, start;
	cJSON *root = NULL, *usage;

	if (m->m_tail == NULL) {
		text = buf_ptr(&m->m_body);
		len = buf_len(&m->m_body);
		root = meter_json_parse(text, len, 0);
	} else {
		lin = xmalloc(METER_TAIL_MAX);
		start = (m->m_tailpos + METER_TAIL_MAX - m->m_taillen) %
		    METER_TAIL_MAX;
		for (len = 0; len < m->m_taillen; len++)
			lin[len] = m->m_tail[(start + len) % METER_TAIL_MAX];
		text = lin;
	}
	if (root != NULL) {
		switch (m->m_family) {
		case FAMILY_OPENAI:
			openai_body(&m->m_acc, m->m_endpoint, root);
			break;
		case FAMILY_ANTHROPIC:
			anthropic_body(&m->m_acc, root);
			break;
		case FAMILY_GEMINI:
			gemini_body(&m->m_acc, root);
			break;
		}
		cJSON_Delete(root);
	} else {
		/* Too big, cut, or not JSON: look for usage in the text. */
		key = m->m_family == FAMILY_GEMINI ? "usageMetadata" : "usage";
		if ((usage = meter_json_tail(text, len, key)) != NULL) {
			if (family_usage(m, usage))
				m->m_acc.ma_final = 1;
			cJSON_Delete(usage);
		}
		/* The text was not read, so count all of it as output. */
		m->m_acc.ma_outbytes = (int64_t)m->m_total;
	}
	free(lin);
}

static int64_t
max64(int64_t a, int64_t b)
{
	return (a > b ? a : b);
}

/* Turn what was seen into the call's usage (meter.h, metering.md). */
static void
meter_settle(const struct meter *m, int complete, struct usage *u)
{
	const struct meter_acc *a = &m->m_acc;
	int64_t est;
	int final;

	est = (a->ma_outbytes + 3) / 4;
	if (m->m_endpoint == EP_EMBEDDINGS || m->m_endpoint == EP_GEMINI_EMBED)
		est = 0;
	/*
	 * Gemini never says "final": every chunk is cumulative. After an
	 * error frame, what was reported so far is not the final usage (its
	 * output is a guess), so the call is estimated from it.
	 */
	final = a->ma_final ||
	    (m->m_family == FAMILY_GEMINI && a->ma_have && !a->ma_error &&
		(complete || a->ma_finished));

	*u = a->ma_usage;
	if (final) {
		/* The provider's numbers. */
		u->u_source = USAGE_REPORTED;
		u->u_incomplete = a->ma_error || !complete;
		if (!final || u->u_output == 0)
			u->u_output = max64(u->u_output, est);
	} else {
		u->u_source = USAGE_ESTIMATED;
		u->u_incomplete = a->ma_error || !complete;
		if (!a->ma_have) {
			u->u_input = m->m_ci.ci_input_estimate;
			u->u_cached = u->u_cache_write = 0;
			u->u_cache_write_1h = u->u_reasoning = 0;
		}
		u->u_output = max64(u->u_output, est);
	}
	/* Keep the breakdowns inside the totals they break down. */
	if (u->u_cached > u->u_input)
		u->u_cached = u->u_input;
	if (u->u_cache_write > u->u_input - u->u_cached)
		u->u_cache_write = u->u_input - u->u_cached;
	if (u->u_cache_write_1h > u->u_cache_write)
		u->u_cache_write_1h = u->u_cache_write;
	if (u->u_reasoning > u->u_output)
		u->u_reasoning = u->u_output;
}

/*
 * The usage of a response still arriving, for a running check against a
 * budget: as it would be settled if it were cut now, except that output
 * estimated from the text relayed (4 bytes a token) counts only two
 * thirds, so text of long tokens is not taken for an overrun. Output the
 * provider has reported counts in full. Nothing changes.
 */
void
meter_so_far(const struct meter *m, struct usage *u)
{
	int64_t est = (m->m_acc.ma_outbytes + 3) / 4 * 2 / 3;

	meter_settle(m, 0, u);
	if (m->m_endpoint == EP_EMBEDDINGS || m->m_endpoint == EP_GEMINI_EMBED)
		est = 0;
	u->u_output =
	    max64(m->m_acc.ma_have ? m->m_acc.ma_usage.u_output : 0, est);
	if (u->u_reasoning > u->u_output)
		u->u_reasoning = u->u_output;
}

/*
 * The error a provider ended a successful (2xx) stream with: its name for
 * it ("overloaded_error", "server_error", "UNAVAILABLE"), "error" when it
 * gave none, or NULL when there was no error frame.
 */
const char *
meter_stream_error(const struct meter *m)
{
	if (m->m_mode != METER_STREAM || !m->m_acc.ma_error ||
	    m->m_status < 200 || m->m_status >= 300)
		return (NULL);
	return (m->m_acc.ma_errtype[0] != '\0' ? m->m_acc.ma_errtype : "error");
}

/*
 * Has the stream's last event passed through, with nothing of the answer
 * left to come but the end of the body: OpenAI's [DONE], Responses'
 * terminal event, Anthropic's message_stop, or Gemini's chunk with a
 * finishReason and usage (Gemini has no terminator)? The official SDKs
 * stop reading there and hang up before the provider ends its body.
 */
int
meter_ended(const struct meter *m)
{
	const struct meter_acc *a = &m->m_acc;

	if (m->m_mode != METER_STREAM || a->ma_error)
		return (0);
	if (m->m_family == FAMILY_GEMINI)
		return (a->ma_finished && a->ma_have);
	return (a->ma_ended);
}

/*
 * Could an error event be appended to what the client has received of
 * this stream, without landing inside an event? In a filtered stream
 * only whole events are relayed (unless one too large was let through);
 * otherwise the framer has read exactly what was relayed, so it must be
 * at the start of a line with no event pending.
 */
int
meter_at_event_boundary(const struct meter *m)
{
	if (m->m_mode != METER_STREAM)
		return (0);
	if (m->m_filter)
		return (m->m_gone == 0);
	return (sse_at_boundary(m->m_sse));
}

/* Responses streams: the sequence_number an appended event should carry. */
int64_t
meter_next_sequence(const struct meter *m)
{
	return (m->m_acc.ma_seq);
}

/* The response ended (complete) or was cut: relay the rest, settle. */
void
meter_finish(struct meter *m, int complete, meter_emit_cb emit, void *arg,
    struct usage *u)
{
	memset(u, 0, sizeof(*u));
	u->u_source = USAGE_NONE;
	if (m->m_finished)
		return;
	m->m_finished = 1;

	switch (m->m_mode) {
	case METER_PASS:
		return; /* errors and free endpoints are never billed */
	case METER_JSON:
		meter_json_body(m);
		break;
	case METER_STREAM:
		if (m->m_filter && complete) {
			m->m_emit = emit;
			m->m_emitarg = arg;
		}
		sse_finish(m->m_sse);
		/* An unterminated last event still goes to the client. */
		if (m->m_filter && complete &&
		    buf_len(&m->m_held) > m->m_heldoff)
			meter_out(m, buf_ptr(&m->m_held) + m->m_heldoff,
			    buf_len(&m->m_held) - m->m_heldoff);
		m->m_heldoff = 0;
		buf_reset(&m->m_held);
		m->m_emit = NULL;
		m->m_emitarg = NULL;
		break;
	}
	meter_settle(m, complete, u);
}

/* Free a meter; NULL is allowed. */
void
meter_free(struct meter *m)
{
	if (m == NULL)
		return;
	sse_free(m->m_sse);
	buf_free(&m->m_body);
	free(m->m_tail);
	buf_free(&m->m_held);
	free(m);
}
