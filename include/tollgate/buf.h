/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one growable byte buffer (struct buf, curl's dynbuf): every buffer
 * that grows with what arrives has a hard cap set when it is initialised,
 * grows by doubling and never past that cap, and an add that would cross
 * the cap fails and leaves the buffer as it was. The caps of every such
 * buffer are named here, in one block.
 */
#ifndef TOLLGATE_BUF_H
#define TOLLGATE_BUF_H

#include <stdarg.h>
#include <stddef.h>

/*
 * The caps. The body of a client's request is the one buffer without a
 * constant: it is capped at its Content-Length, which the head parser has
 * held to max_body_bytes (configuration.md).
 */
/* One spend, calls or alerts answer; past it a 413 asks to narrow it. */
#define BUF_SPEND_OUT_MAX (64 * 1024 * 1024)
/* One webhook body: an alert is short, a longer one is dropped, not cut. */
#define BUF_ALERT_BODY_MAX (64 * 1024)
/* A JSON response kept whole; past it only the tail, where usage sits. */
#define BUF_METER_BODY_MAX (4 * 1024 * 1024)
/* One SSE event's data: Responses events embed the whole response. */
#define BUF_SSE_EVENT_MAX (1024 * 1024)
/* An unfinished event held back while filtering: past it, relayed as is. */
#define BUF_METER_HELD_MAX (2 * BUF_SSE_EVENT_MAX)
/* The held bytes: BUF_METER_HELD_MAX, and as much again for a piece. */
#define BUF_METER_HOLD_MAX (2 * BUF_METER_HELD_MAX)
/* A request body's short text: max_body_bytes' default; past it, whole. */
#define BUF_JSON_SHORT_MAX (32 * 1024 * 1024)

/* Keep a NUL after the bytes (counted against the cap): buf_init flags. */
#define BUF_NUL 0x1

/*
 * A growable byte buffer. All-zero is a valid empty buffer with a cap of
 * 0 (it refuses every add) until buf_init; b_ptr is owned.
 */
struct buf {
	char *b_ptr; /* NULL until the first add */
	size_t b_len; /* bytes held */
	size_t b_size; /* bytes allocated */
	size_t b_max; /* most bytes it may allocate, the NUL included */
	size_t b_first; /* first allocation; 0: exactly what is asked */
	int b_flags; /* BUF_NUL */
};

/* buf.c */
void buf_init(struct buf *, size_t, size_t, int);
void buf_free(struct buf *);
void buf_reset(struct buf *);
int buf_add(struct buf *, const void *, size_t);
int buf_addf(struct buf *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
int buf_vaddf(struct buf *, const char *, va_list)
    __attribute__((format(printf, 2, 0)));
char *buf_reserve(struct buf *, size_t);
void buf_commit(struct buf *, size_t);
void buf_consume(struct buf *, size_t);
char *buf_take(struct buf *, size_t *);
char *buf_ptr(const struct buf *);
size_t buf_len(const struct buf *);
size_t buf_room(const struct buf *);

#endif
