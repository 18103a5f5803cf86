/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The server-sent-events framer (WHATWG HTML "event stream interpretation").
 * It is a byte-at-a-time state machine over whatever pieces the stream
 * arrives in, so a split anywhere (inside a field name, between the CR and
 * LF of one line end, inside a UTF-8 sequence) gives the same events as the
 * whole stream: nothing is rescanned, data bytes are copied once into the
 * reassembly buffer, and that buffer never grows past the cap given to
 * sse_new. Besides name and data, every event reports how many stream
 * bytes it spanned, so a caller that holds the raw bytes (meter.c, when it
 * must hide an injected usage chunk) can relay events whole.
 */
#include <stdlib.h>
#include <string.h>

#include "tollgate/buf.h"
#include "tollgate/sse.h"
#include "tollgate/util.h"

/* Longest event name kept; longer names are truncated (none come close). */
#define SSE_NAME_MAX 128
/* First allocation of the data buffer; it doubles up to the cap. */
#define SSE_DATA_INIT 256

enum sse_state {
	SSE_LINE_START, /* at the first byte of a line */
	SSE_FIELD, /* reading a field name */
	SSE_SPACE, /* just after the colon: one space may follow */
	SSE_VALUE, /* reading a data or event value */
	SSE_SKIP, /* comment, or a field that is ignored */
};

enum sse_field {
	SSE_F_OTHER, /* id, retry, or unknown: ignored */
	SSE_F_DATA,
	SSE_F_EVENT,
};

struct sse {
	sse_event_cb s_cb;
	void *s_arg;

	enum sse_state s_state;
	enum sse_field s_field;
	char s_fname[8]; /* field name so far; longer names are unknown */
	size_t s_fnamelen;
	int s_cr; /* the last byte was a CR ending a line */
	int s_pending; /* that CR ended an event: dispatch after the LF */
	int s_bom; /* bytes of a leading BOM matched; -1 when past */

	struct buf s_data; /* data lines joined with '\n'; capped */
	int s_hasdata; /* a data field was seen in this event */
	int s_oversized; /* the data went over s_data's cap */
	char s_name[SSE_NAME_MAX];
	size_t s_namelen;
	size_t s_raw; /* bytes since the last dispatched event */
};

static const char sse_bom[] = "\xef\xbb\xbf";

/* Start a framer that keeps at most cap bytes of one event's data. */
struct sse *
sse_new(size_t cap, sse_event_cb cb, void *arg)
{
	struct sse *s;

	s = xcalloc(1, sizeof(*s));
	buf_init(&s->s_data, cap, SSE_DATA_INIT, 0);
	s->s_cb = cb;
	s->s_arg = arg;
	s->s_state = SSE_LINE_START;
	return (s);
}

static void
sse_reset_event(struct sse *s)
{
	buf_reset(&s->s_data);
	s->s_hasdata = 0;
	s->s_oversized = 0;
	s->s_namelen = 0;
}

/* A blank line: report the event if it had data, then start over. */
static void
sse_dispatch(struct sse *s)
{
	struct sse_event ev;
	size_t n;

	s->s_pending = 0;
	if (!s->s_hasdata) {
		/*
		 * Per the spec an event without data is dropped, and its
		 * name with it; its bytes (comments, keep-alives) count
		 * towards the next event's raw length.
		 */
		sse_reset_event(s);
		return;
	}
	/* Tolerate "event: message_stop   ". */
	n = s->s_namelen;
	while (n > 0 && (s->s_name[n - 1] == ' ' || s->s_name[n - 1] == '\t'))
		n--;
	memset(&ev, 0, sizeof(ev));
	ev.ev_name = s->s_name;
	ev.ev_namelen = n;
	ev.ev_oversized = s->s_oversized;
	ev.ev_data = s->s_oversized || buf_ptr(&s->s_data) == NULL
	    ? ""
	    : buf_ptr(&s->s_data);
	ev.ev_datalen = s->s_oversized ? 0 : buf_len(&s->s_data);
	ev.ev_rawlen = s->s_raw;
	s->s_raw = 0;
	sse_reset_event(s);
	s->s_cb(s->s_arg, &ev);
	/*
	 * A stream spends most of its life waiting for its next event: it
	 * holds no data buffer meanwhile.
	 */
	buf_free(&s->s_data);
}

/* Append to the data buffer, or mark the event oversized. */
static void
sse_data_append(struct sse *s, const char *p, size_t n)
{
	if (s->s_oversized || n == 0)
		return;
	if (buf_add(&s->s_data, p, n) == -1) {
		s->s_oversized = 1;
		buf_reset(&s->s_data);
	}
}

static void
sse_value_append(struct sse *s, const char *p, size_t n)
{
	size_t room;

	if (s->s_field == SSE_F_DATA) {
		sse_data_append(s, p, n);
		return;
	}
	room = sizeof(s->s_name) - s->s_namelen;
	if (n > room)
		n = room;
	memcpy(s->s_name + s->s_namelen, p, n);
	s->s_namelen += n;
}

/* The field name is complete (at a colon or the line end). */
static void
sse_field_begin(struct sse *s)
{
	if (s->s_fnamelen == 4 && memcmp(s->s_fname, "data", 4) == 0) {
		s->s_field = SSE_F_DATA;
		/* Data lines are joined with a line feed. */
		if (s->s_hasdata)
			sse_data_append(s, "\n", 1);
		s->s_hasdata = 1;
	} else if (s->s_fnamelen == 5 && memcmp(s->s_fname, "event", 5) == 0) {
		s->s_field = SSE_F_EVENT;
		s->s_namelen = 0;
	} else
		s->s_field = SSE_F_OTHER;
	s->s_fnamelen = 0;
}

/* A line ended with c (CR or LF), which has not been counted yet. */
static void
sse_line_end(struct sse *s, char c)
{
	int blank = s->s_state == SSE_LINE_START;

	s->s_raw++;
	if (s->s_state == SSE_FIELD)
		sse_field_begin(s); /* "data" alone: an empty data line */
	s->s_state = SSE_LINE_START;
	if (c == '\r') {
		s->s_cr = 1;
		/*
		 * Wait for the next byte before dispatching, so that the LF
		 * of a CRLF split across feeds still belongs to this event.
		 */
		if (blank)
			s->s_pending = 1;
	} else if (blank)
		sse_dispatch(s);
}

static void
sse_bytes(struct sse *s, const char *p, size_t len)
{
	const char *end = p + len, *q;
	char c;

	while (p < end) {
		if (s->s_cr) {
			s->s_cr = 0;
			if (*p == '\n') {
				s->s_raw++;
				p++;
				if (s->s_pending)
					sse_dispatch(s);
				continue;
			}
			if (s->s_pending)
				sse_dispatch(s);
		}
		c = *p;
		switch (s->s_state) {
		case SSE_VALUE:
		case SSE_SKIP:
			/* The bulk of a stream: scan to the line end. */
			for (q = p; q < end && *q != '\n' && *q != '\r'; q++)
				;
			if (s->s_state == SSE_VALUE)
				sse_value_append(s, p, (size_t)(q - p));
			s->s_raw += (size_t)(q - p);
			p = q;
			if (p < end)
				sse_line_end(s, *p++);
			break;
		case SSE_LINE_START:
			if (c == '\n' || c == '\r') {
				p++;
				sse_line_end(s, c);
			} else if (c == ':') {
				p++;
				s->s_raw++;
				s->s_state = SSE_SKIP;
			} else
				s->s_state = SSE_FIELD;
			break;
		case SSE_FIELD:
			p++;
			if (c == '\n' || c == '\r') {
				sse_line_end(s, c);
				break;
			}
			s->s_raw++;
			if (c == ':') {
				sse_field_begin(s);
				s->s_state = SSE_SPACE;
			} else if (s->s_fnamelen < sizeof(s->s_fname)) {
				/* A name that fills s_fname is unknown. */
				s->s_fname[s->s_fnamelen++] = c;
			}
			break;
		case SSE_SPACE:
			/* Strip one space after the colon, and only one. */
			if (c == ' ') {
				p++;
				s->s_raw++;
			}
			s->s_state =
			    s->s_field == SSE_F_OTHER ? SSE_SKIP : SSE_VALUE;
			break;
		}
	}
}

/* Feed the next piece of the stream; events are reported as they end. */
void
sse_feed(struct sse *s, const char *p, size_t len)
{
	size_t matched;

	/* A UTF-8 byte-order mark at the very start is not part of a line. */
	while (s->s_bom >= 0 && len > 0) {
		if ((unsigned char)*p == (unsigned char)sse_bom[s->s_bom]) {
			p++;
			len--;
			if (++s->s_bom == 3) {
				s->s_raw += 3;
				s->s_bom = -1;
			}
			continue;
		}
		matched = (size_t)s->s_bom;
		s->s_bom = -1;
		sse_bytes(s, sse_bom, matched);
	}
	sse_bytes(s, p, len);
}

/*
 * The stream ended. An event whose blank line was a final CR is reported;
 * an event left without its blank line is discarded, as the spec says.
 */
void
sse_finish(struct sse *s)
{
	if (s->s_bom > 0) {
		size_t matched = (size_t)s->s_bom;

		s->s_bom = -1;
		sse_bytes(s, sse_bom, matched);
	}
	if (s->s_pending)
		sse_dispatch(s);
	s->s_cr = 0;
	s->s_state = SSE_LINE_START;
	s->s_fnamelen = 0;
	s->s_raw = 0;
	sse_reset_event(s);
}

/*
 * Is the framer between events: at the start of a line, with no field of
 * a next event read yet? Then an event appended to the bytes it has read
 * stands on its own.
 */
int
sse_at_boundary(const struct sse *s)
{
	return (s->s_state == SSE_LINE_START && !s->s_cr && !s->s_pending &&
	    !s->s_hasdata && s->s_namelen == 0 && s->s_bom <= 0);
}

/* Free a framer; NULL is allowed. */
void
sse_free(struct sse *s)
{
	if (s == NULL)
		return;
	buf_free(&s->s_data);
	free(s);
}
