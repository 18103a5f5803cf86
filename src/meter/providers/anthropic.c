/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Anthropic Messages adapter (docs/internals/wire.md). Anthropic's
 * input_tokens excludes cache reads and writes, so tollgate's input is the
 * sum of the three. In a stream, message_start carries input and cache
 * fields, and each message_delta carries the CUMULATIVE output so far (and
 * lately repeats the input fields): every field a later event reports
 * replaces the earlier value, nothing is ever added up. With compaction,
 * usage.iterations[] lists each sampling iteration and the call is billed
 * as their sum.
 */
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/util.h"

#include "providers.h"

/*
 * Read model, stream flag, max_tokens and service_tier from a Messages
 * body. service_tier "auto" (or none) runs at priority when the
 * organisation has Priority Tier capacity, which only the upstream's
 * configuration can tell: left "" for meter_request. "standard_only" is
 * the base tier ("default" to meter_request).
 */
void
anthropic_request(
    const struct route *rt, const cJSON *root, struct call_info *ci)
{
	const cJSON *mt, *st;

	(void)rt;
	ci->ci_stream =
	    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
	/* 0 is refused by Anthropic; as a bound it is not trusted. */
	mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
	if (cJSON_IsNumber(mt) && mt->valuedouble >= 1)
		ci->ci_max_output = meter_json_int(root, "max_tokens");
	ci->ci_n = 1;
	st = cJSON_GetObjectItemCaseSensitive(root, "service_tier");
	if (cJSON_IsString(st) && strcmp(st->valuestring, "standard_only") == 0)
		strcopy(ci->ci_service_tier, sizeof(ci->ci_service_tier),
		    "default");
	else if (cJSON_IsString(st) && strcmp(st->valuestring, "auto") != 0)
		meter_setstr(
		    ci->ci_service_tier, sizeof(ci->ci_service_tier), st);
}

static void
an_derive(struct meter_acc *a)
{
	struct usage *u = &a->ma_usage;

	u->u_input = a->ma_an.in + a->ma_an.cache_write + a->ma_an.cache_read;
	u->u_cached = a->ma_an.cache_read;
	u->u_cache_write = a->ma_an.cache_write;
	u->u_cache_write_1h = a->ma_an.cache_1h;
	u->u_output = a->ma_an.out;
	u->u_reasoning = a->ma_an.thinking;
}

static void
an_override(int64_t *dst, const cJSON *obj, const char *key)
{
	if (meter_json_has(obj, key))
		*dst = meter_json_int(obj, key);
}

/*
 * A usage object (message, message_start.message, message_delta): each
 * field present overrides the one kept. Returns 1 if it had token counts.
 */
int
anthropic_usage(struct meter_acc *a, const cJSON *usage)
{
	const cJSON *it, *iters, *cc;
	int64_t in = 0, cw = 0, cr = 0, c1h = 0, out = 0;
	int n = 0;

	if (!cJSON_IsObject(usage))
		return (0);
	if (!meter_json_has(usage, "input_tokens") &&
	    !meter_json_has(usage, "output_tokens") &&
	    !meter_json_has(usage, "cache_read_input_tokens") &&
	    !meter_json_has(usage, "cache_creation_input_tokens"))
		return (0);
	an_override(&a->ma_an.in, usage, "input_tokens");
	an_override(
	    &a->ma_an.cache_write, usage, "cache_creation_input_tokens");
	an_override(&a->ma_an.cache_read, usage, "cache_read_input_tokens");
	an_override(&a->ma_an.out, usage, "output_tokens");
	cc = cJSON_GetObjectItemCaseSensitive(usage, "cache_creation");
	an_override(&a->ma_an.cache_1h, cc, "ephemeral_1h_input_tokens");
	an_override(&a->ma_an.thinking,
	    cJSON_GetObjectItemCaseSensitive(usage, "output_tokens_details"),
	    "thinking_tokens");

	/*
	 * Compaction: the top-level numbers describe only the last
	 * iteration; bill the sum of all of them (docs/internals/wire.md, Usage fields).
	 */
	iters = cJSON_GetObjectItemCaseSensitive(usage, "iterations");
	cJSON_ArrayForEach(it, iters)
	{
		if (!cJSON_IsObject(it))
			continue;
		in += meter_json_int(it, "input_tokens");
		cw += meter_json_int(it, "cache_creation_input_tokens");
		cr += meter_json_int(it, "cache_read_input_tokens");
		out += meter_json_int(it, "output_tokens");
		cc = cJSON_GetObjectItemCaseSensitive(it, "cache_creation");
		c1h += meter_json_int(cc, "ephemeral_1h_input_tokens");
		n++;
	}
	if (n > 0) {
		a->ma_an.in = in;
		a->ma_an.cache_write = cw;
		a->ma_an.cache_read = cr;
		a->ma_an.cache_1h = c1h;
		a->ma_an.out = out;
	}
	meter_setstr(a->ma_usage.u_service_tier,
	    sizeof(a->ma_usage.u_service_tier),
	    cJSON_GetObjectItemCaseSensitive(usage, "service_tier"));
	an_derive(a);
	a->ma_have = 1;
	return (1);
}

/* Generated text of a content block or a content_block_delta's delta. */
static void
block_text(struct meter_acc *a, const cJSON *b)
{
	meter_json_text(a, cJSON_GetObjectItemCaseSensitive(b, "text"));
	meter_json_text(a, cJSON_GetObjectItemCaseSensitive(b, "thinking"));
	meter_json_text(a, cJSON_GetObjectItemCaseSensitive(b, "partial_json"));
}

static int
is(const char *type, const char *name)
{
	return (strcmp(type, name) == 0);
}

/* One stream event. */
void
anthropic_event(
    struct meter_acc *a, const struct sse_event *ev, const cJSON *root)
{
	const cJSON *msg;
	char type[64];

	meter_event_type(ev, root, type, sizeof(type));
	/* Overloaded and the like: the stream ends without message_stop. */
	if (is(type, "error") ||
	    (ev->ev_namelen == 5 && memcmp(ev->ev_name, "error", 5) == 0)) {
		meter_json_error(a,
		    cJSON_GetObjectItemCaseSensitive(
			cJSON_GetObjectItemCaseSensitive(root, "error"),
			"type"));
		return;
	}
	if (!cJSON_IsObject(root))
		return;
	if (is(type, "content_block_delta")) {
		block_text(a, cJSON_GetObjectItemCaseSensitive(root, "delta"));
	} else if (is(type, "content_block_start")) {
		block_text(
		    a, cJSON_GetObjectItemCaseSensitive(root, "content_block"));
	} else if (is(type, "message_start")) {
		msg = cJSON_GetObjectItemCaseSensitive(root, "message");
		meter_setmodel(&a->ma_usage,
		    cJSON_GetObjectItemCaseSensitive(msg, "model"));
		anthropic_usage(
		    a, cJSON_GetObjectItemCaseSensitive(msg, "usage"));
	} else if (is(type, "message_delta")) {
		if (anthropic_usage(
			a, cJSON_GetObjectItemCaseSensitive(root, "usage")))
			a->ma_final = 1;
	} else if (is(type, "message_stop"))
		a->ma_ended = 1;
}

/* A whole Messages response body. */
void
anthropic_body(struct meter_acc *a, const cJSON *root)
{
	const cJSON *t, *b;

	if (!cJSON_IsObject(root))
		return;
	t = cJSON_GetObjectItemCaseSensitive(root, "type");
	if (cJSON_IsString(t) && is(t->valuestring, "error"))
		a->ma_error = 1;
	meter_setmodel(
	    &a->ma_usage, cJSON_GetObjectItemCaseSensitive(root, "model"));
	cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(root, "content"))
	{
		block_text(a, b);
		/* A tool call's input is generated JSON. */
		meter_json_printed(
		    a, cJSON_GetObjectItemCaseSensitive(b, "input"));
	}
	if (anthropic_usage(a, cJSON_GetObjectItemCaseSensitive(root, "usage")))
		a->ma_final = 1;
}
