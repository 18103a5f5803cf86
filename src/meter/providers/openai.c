/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OpenAI adapter: Chat Completions, legacy Completions, Embeddings and
 * the Responses API, as served by OpenAI, Azure OpenAI and compatible
 * servers (vLLM, Ollama). It reads the request's bounds, asks chat and
 * completions streams for their usage chunk (stream_options.include_usage)
 * by editing the body as text so every other byte reaches the provider as
 * the client wrote it, and reads usage from bodies and stream events
 * (docs/internals/wire.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/util.h"

#include "providers.h"

static const char include_usage_member[] =
    "\"stream_options\":{\"include_usage\":true}";

/*
 * A bound or count of a request body that meter_request checked: a whole
 * number, or absent (-1). 0 reads as absent: servers disagree on what it
 * means (Ollama and llama.cpp generate without limit, OpenAI refuses it,
 * legacy completions generate nothing), so it cannot be trusted as a
 * bound.
 */
static int64_t
req_int(const cJSON *root, const char *key)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);

	if (!cJSON_IsNumber(it) || !(it->valuedouble >= 1))
		return (-1);
	return (meter_json_int(root, key));
}

/*
 * The service_tier of a chat or Responses body into ci. "auto" (and no
 * tier at all) is the project's tier, which only the upstream's
 * configuration can tell: left "" for meter_request. "default" is the
 * base tier whatever the project's; "flex", "priority" and the rest are
 * kept as asked.
 */
static void
openai_tier(const cJSON *root, struct call_info *ci)
{
	const cJSON *it =
	    cJSON_GetObjectItemCaseSensitive(root, "service_tier");

	if (cJSON_IsString(it) && strcmp(it->valuestring, "auto") != 0)
		meter_setstr(
		    ci->ci_service_tier, sizeof(ci->ci_service_tier), it);
}

/* Read model bounds from a chat, completions, embeddings or Responses body. */
void
openai_request(const struct route *rt, const cJSON *root, struct call_info *ci)
{
	int64_t v, n;

	ci->ci_stream =
	    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
	switch (rt->rt_endpoint) {
	case EP_CHAT:
		openai_tier(root, ci);
		/*
		 * Both, when both are given: OpenAI reads
		 * max_completion_tokens, compatible servers such as Ollama
		 * only max_tokens. The larger one bounds the call.
		 */
		v = req_int(root, "max_completion_tokens");
		if ((n = req_int(root, "max_tokens")) > v)
			v = n;
		ci->ci_max_output = v;
		n = req_int(root, "n");
		break;
	case EP_COMPLETIONS:
		v = req_int(root, "max_tokens");
		/* Absent: the API's 16. Given as 0: no trusted bound. */
		if (v >= 0 ||
		    cJSON_IsNumber(
			cJSON_GetObjectItemCaseSensitive(root, "max_tokens")))
			ci->ci_max_output = v;
		n = req_int(root, "n");
		v = req_int(root, "best_of");
		if (v > n)
			n = v; /* best_of completions are generated and billed */
		break;
	case EP_RESPONSES:
		openai_tier(root, ci);
		ci->ci_max_output = req_int(root, "max_output_tokens");
		n = 1;
		break;
	case EP_EMBEDDINGS:
		ci->ci_stream = 0;
		n = 1;
		break;
	default:
		n = 1;
		break;
	}
	/* meter_request let no count past INT32_MAX through. */
	ci->ci_n = n < 1 ? 1 : n > INT32_MAX ? INT32_MAX : (int)n;
}

/*
 * The rare case the text cannot be edited safely: rebuild with cJSON,
 * from a tree of the whole body (meter_request's has only its bounds).
 */
static int
inject_rebuild(const char *body, size_t len, char **out, size_t *outlen)
{
	cJSON *root, *so, *nso;
	char *s;
	int r = -1;

	if ((root = meter_json_parse(body, len, 1)) == NULL)
		return (-1);

	so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
	if (!cJSON_IsObject(so)) {
		nso = cJSON_CreateObject();
		if (nso == NULL)
			goto done;
		if (so != NULL)
			cJSON_ReplaceItemInObjectCaseSensitive(
			    root, "stream_options", nso);
		else
			cJSON_AddItemToObject(root, "stream_options", nso);
		so = nso;
	}
	if (cJSON_GetObjectItemCaseSensitive(so, "include_usage") != NULL)
		cJSON_ReplaceItemInObjectCaseSensitive(
		    so, "include_usage", cJSON_CreateTrue());
	else
		cJSON_AddTrueToObject(so, "include_usage");
	if ((s = cJSON_PrintUnformatted(root)) == NULL)
		goto done;
	*outlen = strlen(s);
	*out = xstrndup(s, *outlen);
	cJSON_free(s);
	r = 0;
done:
	cJSON_Delete(root);
	return (r);
}

/*
 * Ask a chat or completions stream for its usage chunk. root is the
 * parsed body (its top-level stream_options at least), which is a stream
 * request. Returns 0 with a new body in
 * *out, or -1 when the client already asked for usage (or the body is
 * odd enough that it is left alone).
 */
int
openai_inject(
    const char *body, size_t len, const cJSON *root, char **out, size_t *outlen)
{
	const cJSON *so, *iu;
	struct json_span js, iujs;
	size_t start, close, vstart;
	char ins[sizeof(include_usage_member) + 1];
	int empty, r;

	so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
	iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
	if (cJSON_IsObject(so) && cJSON_IsTrue(iu))
		return (-1); /* the client asked; its chunk is its own */

	start = 0;
	while (start < len &&
	    (body[start] == ' ' || body[start] == '\t' || body[start] == '\r' ||
		body[start] == '\n'))
		start++;
	if (so == NULL) {
		/* The common case: add the member at the very end. */
		close = meter_json_close(body + start, len - start, &empty);
		if (close == SIZE_MAX)
			return (inject_rebuild(body, len, out, outlen));
		snprintf(ins, sizeof(ins), "%s%s", empty ? "" : ",",
		    include_usage_member);
		close += start;
		meter_json_splice(body, len, close, close, ins, out, outlen);
		return (0);
	}
	r = meter_json_member(body + start, len - start, "stream_options", &js);
	if (r != 1)
		return (
		    inject_rebuild(body, len, out, outlen)); /* escaped key */
	vstart = start + js.js_val;
	if (!cJSON_IsObject(so)) {
		/* "stream_options": null → an object that asks for usage. */
		meter_json_splice(body, len, vstart, start + js.js_valend,
		    "{\"include_usage\":true}", out, outlen);
		return (0);
	}
	r = meter_json_member(
	    body + vstart, js.js_valend - js.js_val, "include_usage", &iujs);
	if (r == 1) {
		/* "include_usage": false → true, in place. */
		meter_json_splice(body, len, vstart + iujs.js_val,
		    vstart + iujs.js_valend, "true", out, outlen);
		return (0);
	}
	if (r < 0 || iu != NULL)
		return (inject_rebuild(body, len, out, outlen));
	close =
	    meter_json_close(body + vstart, js.js_valend - js.js_val, &empty);
	if (close == SIZE_MAX)
		return (inject_rebuild(body, len, out, outlen));
	close += vstart;
	meter_json_splice(body, len, close, close,
	    empty ? "\"include_usage\":true" : ",\"include_usage\":true", out,
	    outlen);
	return (0);
}

/* Usage of chat, completions or embeddings; or of a Responses response. */
int
openai_usage(struct meter_acc *a, enum endpoint ep, const cJSON *usage)
{
	struct usage *u = &a->ma_usage;
	const cJSON *in, *out;

	if (!cJSON_IsObject(usage))
		return (0);
	if (ep == EP_RESPONSES) {
		if (!meter_json_has(usage, "input_tokens") &&
		    !meter_json_has(usage, "output_tokens"))
			return (0);
		in = cJSON_GetObjectItemCaseSensitive(
		    usage, "input_tokens_details");
		out = cJSON_GetObjectItemCaseSensitive(
		    usage, "output_tokens_details");
		u->u_input = meter_json_int(usage, "input_tokens");
		u->u_output = meter_json_int(usage, "output_tokens");
		u->u_cached = meter_json_int(in, "cached_tokens");
		u->u_cache_write = meter_json_int(in, "cache_write_tokens");
		u->u_reasoning = meter_json_int(out, "reasoning_tokens");
	} else {
		if (!meter_json_has(usage, "prompt_tokens") &&
		    !meter_json_has(usage, "completion_tokens") &&
		    !meter_json_has(usage, "total_tokens"))
			return (0);
		in = cJSON_GetObjectItemCaseSensitive(
		    usage, "prompt_tokens_details");
		out = cJSON_GetObjectItemCaseSensitive(
		    usage, "completion_tokens_details");
		u->u_input = meter_json_int(usage, "prompt_tokens");
		u->u_output = meter_json_int(usage, "completion_tokens");
		if (ep == EP_EMBEDDINGS) {
			/* Embeddings have input only. */
			if (!meter_json_has(usage, "prompt_tokens"))
				u->u_input =
				    meter_json_int(usage, "total_tokens");
			u->u_output = 0;
		}
		u->u_cached = meter_json_int(in, "cached_tokens");
		u->u_cache_write = meter_json_int(in, "cache_write_tokens");
		u->u_reasoning = meter_json_int(out, "reasoning_tokens");
	}
	u->u_cache_write_1h = 0;
	a->ma_have = 1;
	return (1);
}

static void
top_fields(struct meter_acc *a, const cJSON *obj)
{
	meter_setmodel(
	    &a->ma_usage, cJSON_GetObjectItemCaseSensitive(obj, "model"));
	meter_setstr(a->ma_usage.u_service_tier,
	    sizeof(a->ma_usage.u_service_tier),
	    cJSON_GetObjectItemCaseSensitive(obj, "service_tier"));
}

/* Generated text of a chat message or delta. */
static void
message_text(struct meter_acc *a, const cJSON *msg)
{
	const cJSON *c, *part, *tc;

	if (!cJSON_IsObject(msg))
		return;
	c = cJSON_GetObjectItemCaseSensitive(msg, "content");
	if (cJSON_IsArray(c)) {
		cJSON_ArrayForEach(part, c)
		{
			meter_json_text(
			    a, cJSON_GetObjectItemCaseSensitive(part, "text"));
		}
	} else
		meter_json_text(a, c);
	meter_json_text(a, cJSON_GetObjectItemCaseSensitive(msg, "refusal"));
	/* Compatible servers put reasoning text here (vLLM, Ollama...). */
	meter_json_text(
	    a, cJSON_GetObjectItemCaseSensitive(msg, "reasoning_content"));
	meter_json_text(a, cJSON_GetObjectItemCaseSensitive(msg, "reasoning"));
	tc = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
	cJSON_ArrayForEach(c, tc)
	{
		const cJSON *fn =
		    cJSON_GetObjectItemCaseSensitive(c, "function");

		meter_json_text(
		    a, cJSON_GetObjectItemCaseSensitive(fn, "name"));
		meter_json_text(
		    a, cJSON_GetObjectItemCaseSensitive(fn, "arguments"));
	}
}

static void
choices_text(struct meter_acc *a, const cJSON *choices, const char *which)
{
	const cJSON *ch;

	cJSON_ArrayForEach(ch, choices)
	{
		/* Legacy completions carry text; chat a message or delta. */
		meter_json_text(
		    a, cJSON_GetObjectItemCaseSensitive(ch, "text"));
		message_text(a, cJSON_GetObjectItemCaseSensitive(ch, which));
	}
}

/* Generated text in a Responses output item. */
static void
output_item_text(struct meter_acc *a, const cJSON *item)
{
	const cJSON *c, *part;
	static const char *const lists[] = {"content", "summary"};
	size_t i;

	for (i = 0; i < nitems(lists); i++) {
		c = cJSON_GetObjectItemCaseSensitive(item, lists[i]);
		cJSON_ArrayForEach(part, c)
		{
			meter_json_text(
			    a, cJSON_GetObjectItemCaseSensitive(part, "text"));
			meter_json_text(a,
			    cJSON_GetObjectItemCaseSensitive(part, "refusal"));
		}
	}
	meter_json_text(a, cJSON_GetObjectItemCaseSensitive(item, "arguments"));
	meter_json_text(a, cJSON_GetObjectItemCaseSensitive(item, "input"));
}

static void
response_object(struct meter_acc *a, const cJSON *resp, int terminal)
{
	const cJSON *st;

	if (!cJSON_IsObject(resp))
		return;
	top_fields(a, resp);
	if (!terminal)
		return;
	if (openai_usage(a, EP_RESPONSES,
		cJSON_GetObjectItemCaseSensitive(resp, "usage")))
		a->ma_final = 1;
	st = cJSON_GetObjectItemCaseSensitive(resp, "status");
	if (cJSON_IsString(st) && strcmp(st->valuestring, "failed") == 0)
		meter_json_error(a,
		    cJSON_GetObjectItemCaseSensitive(
			cJSON_GetObjectItemCaseSensitive(resp, "error"),
			"code"));
}

static int
has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return (n >= k && memcmp(s + n - k, suffix, k) == 0);
}

static void
responses_event(
    struct meter_acc *a, const struct sse_event *ev, const cJSON *root)
{
	const cJSON *t;
	char type[96];

	meter_event_type(ev, root, type, sizeof(type));
	if (strcmp(type, "error") == 0) {
		meter_json_error(
		    a, cJSON_GetObjectItemCaseSensitive(root, "code"));
		return;
	}
	if (root == NULL)
		return;
	t = cJSON_GetObjectItemCaseSensitive(root, "sequence_number");
	if (cJSON_IsNumber(t) && t->valuedouble >= 0 && t->valuedouble < 1e15 &&
	    (int64_t)t->valuedouble >= a->ma_seq)
		a->ma_seq = (int64_t)t->valuedouble + 1;
	if (strcmp(type, "response.completed") == 0 ||
	    strcmp(type, "response.incomplete") == 0 ||
	    strcmp(type, "response.failed") == 0) {
		response_object(
		    a, cJSON_GetObjectItemCaseSensitive(root, "response"), 1);
		if (strcmp(type, "response.failed") == 0)
			a->ma_error = 1;
		a->ma_ended = 1;
		return;
	}
	if (strcmp(type, "response.created") == 0 ||
	    strcmp(type, "response.in_progress") == 0) {
		response_object(
		    a, cJSON_GetObjectItemCaseSensitive(root, "response"), 0);
		return;
	}
	/* Text, refusal, reasoning and tool-argument deltas; not audio. */
	if (has_suffix(type, ".delta") &&
	    strcmp(type, "response.audio.delta") != 0)
		meter_json_text(
		    a, cJSON_GetObjectItemCaseSensitive(root, "delta"));
}

/*
 * One stream event. Returns OPENAI_EV_* flags for meter.c, which hides
 * the usage chunk from a client that did not ask for it.
 */
int
openai_event(struct meter_acc *a, enum endpoint ep, const struct sse_event *ev,
    const cJSON *root)
{
	const cJSON *usage, *choices, *err;
	int flags = 0;

	if (ep == EP_RESPONSES) {
		responses_event(a, ev, root);
		return (0);
	}
	if (ev->ev_namelen == 5 && memcmp(ev->ev_name, "error", 5) == 0)
		a->ma_error = 1;
	if (!cJSON_IsObject(root))
		return (0);
	/* A mid-stream error: {"error": {...}} with HTTP 200. */
	err = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (err != NULL && !cJSON_IsNull(err))
		meter_json_error(
		    a, cJSON_GetObjectItemCaseSensitive(err, "type"));
	top_fields(a, root);
	choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
	choices_text(a, choices, "delta");
	usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
	if (cJSON_IsNull(usage))
		flags |= OPENAI_EV_USAGE_NULL;
	else if (openai_usage(a, ep, usage)) {
		/*
		 * The last usage seen wins: one usage chunk, or vLLM's
		 * continuous_usage_stats (cumulative in every chunk).
		 */
		a->ma_final = 1;
		if (choices == NULL || cJSON_GetArraySize(choices) == 0)
			flags |= OPENAI_EV_USAGE_CHUNK;
	}
	return (flags);
}

/* A whole JSON response body. */
void
openai_body(struct meter_acc *a, enum endpoint ep, const cJSON *root)
{
	const cJSON *err, *out, *item;

	if (!cJSON_IsObject(root))
		return;
	err = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (err != NULL && !cJSON_IsNull(err))
		a->ma_error = 1;
	if (ep == EP_RESPONSES) {
		out = cJSON_GetObjectItemCaseSensitive(root, "output");
		cJSON_ArrayForEach(item, out) output_item_text(a, item);
		response_object(a, root, 1);
		return;
	}
	top_fields(a, root);
	if (ep != EP_EMBEDDINGS)
		choices_text(a,
		    cJSON_GetObjectItemCaseSensitive(root, "choices"),
		    "message");
	if (openai_usage(
		a, ep, cJSON_GetObjectItemCaseSensitive(root, "usage")))
		a->ma_final = 1;
}
