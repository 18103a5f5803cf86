/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A server-sent-events framer (WHATWG HTML §9.2 event stream parsing) for
 * reading usage out of a stream that is relayed unchanged. It accepts LF,
 * CRLF and CR line ends, comments, multi-line data, "data:" with or
 * without the space, and input split anywhere across feeds; each complete
 * event is reported once with its name and data. The reassembly buffer has
 * a hard cap: an event larger than it is reported as oversized and skipped,
 * never buffered without bound.
 */
#ifndef TOLLGATE_SSE_H
#define TOLLGATE_SSE_H

#include <stddef.h>

/* One complete event; the pointers are valid only during the callback. */
struct sse_event {
	const char *ev_name; /* "" when the event had no event: field */
	size_t ev_namelen;
	const char *ev_data; /* data lines joined with '\n' */
	size_t ev_datalen;
	int ev_oversized; /* data exceeded the cap; ev_data is empty */
	size_t ev_rawlen; /* bytes of the stream this event spanned */
};

typedef void (*sse_event_cb)(void *, const struct sse_event *);

struct sse; /* opaque */

/* sse.c */
struct sse *sse_new(size_t, sse_event_cb, void *);
void sse_feed(struct sse *, const char *, size_t);
void sse_finish(struct sse *);
int sse_at_boundary(const struct sse *);
void sse_free(struct sse *);

#endif
