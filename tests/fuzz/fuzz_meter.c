/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the meter and the provider adapters. The first byte
 * picks a family, endpoint and mode (plain or injected stream, JSON body,
 * complete or cut) and a split point; the rest is the response body. Fed
 * whole and split in two it must relay the same bytes and settle the same
 * usage; un-injected responses must be relayed byte for byte, and usage is
 * never negative.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/log.h"
#include "tollgate/meter.h"
#include "tollgate/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const struct {
	enum api_family family;
	enum endpoint ep;
	int sse;
	int injected;
} kinds[] = {
    {FAMILY_OPENAI, EP_CHAT, 1, 1},
    {FAMILY_OPENAI, EP_CHAT, 1, 0},
    {FAMILY_OPENAI, EP_COMPLETIONS, 1, 1},
    {FAMILY_OPENAI, EP_RESPONSES, 1, 0},
    {FAMILY_ANTHROPIC, EP_MESSAGES, 1, 0},
    {FAMILY_GEMINI, EP_GEMINI_STREAM, 1, 0},
    {FAMILY_OPENAI, EP_CHAT, 0, 0},
    {FAMILY_GEMINI, EP_GEMINI_GENERATE, 0, 0},
};

struct out {
	char *b;
	size_t len;
};

static void
emit_cb(void *arg, const char *p, size_t n)
{
	struct out *o = arg;

	if (n == 0)
		fatalx("empty emit");
	o->b = xreallocarray(o->b, 1, o->len + n);
	memcpy(o->b + o->len, p, n);
	o->len += n;
}

static void
run(int k, int complete, const char *p, size_t len, size_t cut, struct out *o,
    struct usage *u)
{
	struct route rt;
	struct call_info ci;
	struct meter *m;

	memset(&rt, 0, sizeof(rt));
	memset(&ci, 0, sizeof(ci));
	rt.rt_family = kinds[k].family;
	rt.rt_endpoint = kinds[k].ep;
	rt.rt_metered = 1;
	ci.ci_n = 1;
	ci.ci_max_output = -1;
	ci.ci_input_estimate = 7;
	ci.ci_usage_injected = kinds[k].injected;
	m = meter_new(&rt, &ci);
	meter_response(
	    m, 200, kinds[k].sse ? "text/event-stream" : "application/json");
	meter_feed(m, p, cut, emit_cb, o);
	meter_feed(m, p + cut, len - cut, emit_cb, o);
	meter_finish(m, complete, emit_cb, o, u);
	meter_free(m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct out a = {0}, b = {0};
	struct usage ua, ub;
	const char *p = (const char *)data + 1;
	size_t cut;
	int k, complete;

	if (len < 1)
		return (0);
	k = data[0] % (int)nitems(kinds);
	complete = (data[0] >> 3) & 1;
	len--;
	cut = len > 0 ? (size_t)(data[0] >> 4) * len / 15 : 0;
	run(k, complete, p, len, len, &a, &ua);
	run(k, complete, p, len, cut, &b, &ub);
	if (a.len != b.len || (a.len > 0 && memcmp(a.b, b.b, a.len) != 0))
		fatalx("relayed bytes differ when split at %zu", cut);
	if (ua.u_input != ub.u_input || ua.u_output != ub.u_output ||
	    ua.u_cached != ub.u_cached || ua.u_source != ub.u_source ||
	    ua.u_incomplete != ub.u_incomplete)
		fatalx("usage differs when split at %zu", cut);
	if (ua.u_input < 0 || ua.u_output < 0 || ua.u_cached < 0 ||
	    ua.u_cache_write < 0 || ua.u_reasoning < 0 ||
	    ua.u_cached + ua.u_cache_write > ua.u_input ||
	    ua.u_reasoning > ua.u_output)
		fatalx("usage out of range");
	if (!kinds[k].injected &&
	    (a.len != len || (len > 0 && memcmp(a.b, p, len) != 0)))
		fatalx("un-injected response not relayed byte for byte");
	if (a.len > len)
		fatalx("relayed more than was received");
	free(a.b);
	free(b.b);
	return (0);
}
