/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the SSE framer. The first byte picks the data cap (small,
 * so oversized events happen) and a split point; the rest is the stream.
 * Fed whole, split in two and byte by byte, it must give the same events,
 * and the events' raw lengths can never add up to more than the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/log.h"
#include "tollgate/sse.h"
#include "tollgate/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct digest {
	uint64_t h;
	size_t count;
	size_t raw;
};

static void
mix(struct digest *d, const void *p, size_t n)
{
	const unsigned char *c = p;
	size_t i;

	for (i = 0; i < n; i++) {
		d->h ^= c[i];
		d->h *= 0x100000001b3ULL;
	}
}

static void
digest_cb(void *arg, const struct sse_event *ev)
{
	struct digest *d = arg;

	if (ev->ev_oversized && ev->ev_datalen != 0)
		fatalx("oversized event with data");
	mix(d, ev->ev_name, ev->ev_namelen);
	mix(d, "\0", 1);
	mix(d, ev->ev_data, ev->ev_datalen);
	mix(d, &ev->ev_datalen, sizeof(ev->ev_datalen));
	mix(d, &ev->ev_rawlen, sizeof(ev->ev_rawlen));
	mix(d, &ev->ev_oversized, sizeof(ev->ev_oversized));
	d->count++;
	d->raw += ev->ev_rawlen;
}

static void
run(const char *p, size_t len, size_t cap, size_t step, size_t cut,
    struct digest *d)
{
	struct sse *s;
	size_t at;

	memset(d, 0, sizeof(*d));
	d->h = 0xcbf29ce484222325ULL;
	s = sse_new(cap, digest_cb, d);
	if (step > 0) {
		for (at = 0; at < len; at += step)
			sse_feed(s, p + at, len - at < step ? len - at : step);
	} else {
		sse_feed(s, p, cut);
		sse_feed(s, p + cut, len - cut);
	}
	sse_finish(s);
	sse_free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct digest a, b, c;
	const char *p = (const char *)data + 1;
	size_t cap, cut;

	if (len < 1)
		return (0);
	cap = (size_t)(data[0] & 0x3f) * 4;
	len--;
	cut = len > 0 ? (size_t)data[0] % (len + 1) : 0;
	run(p, len, cap, 0, len, &a);
	run(p, len, cap, 0, cut, &b);
	run(p, len, cap, 1, 0, &c);
	if (a.h != b.h || a.count != b.count)
		fatalx("sse events differ when split at %zu", cut);
	if (a.h != c.h || a.count != c.count)
		fatalx("sse events differ byte by byte");
	if (a.raw > len)
		fatalx("sse raw lengths exceed the input");
	return (0);
}
