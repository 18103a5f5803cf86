/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bounded growable buffer (struct buf, after curl's dynbuf): one place
 * that knows how a buffer grows. The cap is set at init and every add
 * checks it before touching anything, so an add past it fails and the
 * buffer keeps what it had. Growth doubles from the first allocation (or
 * from exactly what was first asked for) and is clamped at the cap, so
 * bytes are copied O(1) times each. Running out of memory is fatal, as in
 * xmalloc: the caps bound what can be asked.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/buf.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

/* Bytes the NUL takes: 1 for a BUF_NUL buffer, else 0. */
static size_t
buf_extra(const struct buf *b)
{
	return ((b->b_flags & BUF_NUL) ? 1 : 0);
}

/* Whether n more bytes (and the NUL) fit under the cap. */
static int
buf_fits(const struct buf *b, size_t n)
{
	size_t extra = buf_extra(b);

	return (b->b_max >= extra && n <= b->b_max - extra - b->b_len);
}

/* Make the allocation at least need bytes; need is within the cap. */
static void
buf_grow(struct buf *b, size_t need)
{
	size_t size;

	if (need <= b->b_size)
		return;
	if (b->b_size > 0)
		size = b->b_size;
	else
		size = b->b_first > 0 ? b->b_first : need;
	while (size < need)
		size = size > b->b_max / 2 ? b->b_max : size * 2;
	if (size > b->b_max)
		size = b->b_max;
	b->b_ptr = xreallocarray(b->b_ptr, 1, size);
	b->b_size = size;
}

/* Write the NUL of a BUF_NUL buffer after its bytes. */
static void
buf_terminate(struct buf *b)
{
	if ((b->b_flags & BUF_NUL) && b->b_ptr != NULL)
		b->b_ptr[b->b_len] = '\0';
}

/*
 * Start an empty buffer that never allocates more than max bytes (the NUL
 * of a BUF_NUL buffer included). Its first allocation is first bytes, or
 * exactly what the first add needs when first is 0.
 */
void
buf_init(struct buf *b, size_t max, size_t first, int flags)
{
	memset(b, 0, sizeof(*b));
	b->b_max = max;
	b->b_first = first;
	b->b_flags = flags;
}

/* Free the bytes; the buffer is empty and keeps its cap, ready for reuse. */
void
buf_free(struct buf *b)
{
	free(b->b_ptr);
	b->b_ptr = NULL;
	b->b_len = b->b_size = 0;
}

/* Empty the buffer but keep its allocation. */
void
buf_reset(struct buf *b)
{
	b->b_len = 0;
	buf_terminate(b);
}

/* Append n bytes: 0, or -1 past the cap, leaving the buffer as it was. */
int
buf_add(struct buf *b, const void *p, size_t n)
{
	if (!buf_fits(b, n))
		return (-1);
	buf_grow(b, b->b_len + n + buf_extra(b));
	if (n > 0)
		memcpy(b->b_ptr + b->b_len, p, n);
	b->b_len += n;
	buf_terminate(b);
	return (0);
}

/* Append formatted text: 0, or -1 past the cap or on a format error. */
int
buf_addf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = buf_vaddf(b, fmt, ap);
	va_end(ap);
	return (r);
}

/*
 * buf_addf with a va_list. The text is formatted straight into the room
 * the buffer has, and formatted again after growing only when it did not
 * fit, so no temporary copy is made.
 */
int
buf_vaddf(struct buf *b, const char *fmt, va_list ap)
{
	size_t room = b->b_size - b->b_len;
	char *tmp;
	va_list aq;
	int n;

	va_copy(aq, ap);
	n = vsnprintf(room > 0 ? b->b_ptr + b->b_len : NULL, room, fmt, aq);
	va_end(aq);
	if (n >= 0 && (size_t)n < room && buf_fits(b, (size_t)n)) {
		b->b_len += (size_t)n; /* vsnprintf wrote the NUL */
		return (0);
	}
	/* What vsnprintf wrote past the bytes is not theirs. */
	buf_terminate(b);
	if (n < 0 || !buf_fits(b, (size_t)n))
		return (-1);
	if (b->b_len + (size_t)n + 1 <= b->b_max) {
		buf_grow(b, b->b_len + (size_t)n + 1);
		va_copy(aq, ap);
		vsnprintf(b->b_ptr + b->b_len, b->b_size - b->b_len, fmt, aq);
		va_end(aq);
		b->b_len += (size_t)n;
		return (0);
	}
	/* No room for vsnprintf's NUL: only a buffer without BUF_NUL filled
	 * to its cap exactly. */
	va_copy(aq, ap);
	xvasprintf(&tmp, fmt, aq);
	va_end(aq);
	buf_add(b, tmp, (size_t)n);
	free(tmp);
	return (0);
}

/*
 * Room for n more bytes: where they go, to be counted with buf_commit, or
 * NULL past the cap (the buffer is as it was).
 */
char *
buf_reserve(struct buf *b, size_t n)
{
	if (!buf_fits(b, n))
		return (NULL);
	buf_grow(b, b->b_len + n + buf_extra(b));
	if (b->b_ptr == NULL)
		return (NULL); /* n is 0 and nothing was ever allocated */
	return (b->b_ptr + b->b_len);
}

/* Count n bytes written into the room buf_reserve gave. */
void
buf_commit(struct buf *b, size_t n)
{
	if (n > b->b_size - b->b_len - buf_extra(b))
		fatalx("%s: %zu bytes past the room reserved", __func__, n);
	b->b_len += n;
	buf_terminate(b);
}

/* Drop the first n bytes (at most all of them), moving the rest down. */
void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->b_len) {
		buf_reset(b);
		return;
	}
	memmove(b->b_ptr, b->b_ptr + n, b->b_len - n);
	b->b_len -= n;
	buf_terminate(b);
}

/*
 * Hand the bytes over (NULL if none were ever allocated; *len, when not
 * NULL, gets their length): the caller frees them, and the buffer is
 * empty, keeping its cap.
 */
char *
buf_take(struct buf *b, size_t *len)
{
	char *p = b->b_ptr;

	if (len != NULL)
		*len = b->b_len;
	b->b_ptr = NULL;
	b->b_len = b->b_size = 0;
	return (p);
}

/* The bytes (NUL-terminated for BUF_NUL), or NULL before any were added. */
char *
buf_ptr(const struct buf *b)
{
	return (b->b_ptr);
}

/* How many bytes the buffer holds. */
size_t
buf_len(const struct buf *b)
{
	return (b->b_len);
}

/* How many more bytes fit without allocating. */
size_t
buf_room(const struct buf *b)
{
	if (b->b_size == 0)
		return (0);
	return (b->b_size - b->b_len - buf_extra(b));
}
