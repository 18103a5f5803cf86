/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the request-head parser: any bytes, fed in two pieces
 * split at a point taken from the first byte, must give the same answer as
 * the whole input, and never crash, leak or read out of bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static enum head_result
parse(const uint8_t *data, size_t len, size_t cut, int *status)
{
	static const struct head_limits hl = {4096, 32, 1 << 20};
	struct http_request *req = xcalloc(1, sizeof(*req));
	struct evbuffer *in = evbuffer_new();
	struct head_parser hp = {0};
	enum head_result r;

	evbuffer_add(in, data, cut);
	r = http_head_parse(&hp, in, &hl, req);
	if (r == HEAD_NEED_MORE) {
		evbuffer_add(in, data + cut, len - cut);
		r = http_head_parse(&hp, in, &hl, req);
	}
	*status = r == HEAD_ERROR ? hp.hp_status : 0;
	evbuffer_free(in);
	http_request_free(req);
	return (r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	enum head_result a, b;
	int sa, sb;
	size_t cut;

	if (len == 0)
		return (0);
	cut = len > 1 ? 1 + data[0] % (len - 1) : 0;
	a = parse(data, len, len, &sa);
	b = parse(data, len, cut, &sb);
	if (a != b || sa != sb)
		fatalx("head parse differs when split at %zu", cut);
	return (0);
}
