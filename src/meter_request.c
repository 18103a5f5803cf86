/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metering of one call, the request side: meter_request asks the adapter
 * for the call's bounds (model, stream, the most output it may produce)
 * and, for OpenAI streams, injects include_usage; meter_set_bound writes a
 * policy's output bound into the body that is forwarded. A body a
 * provider could read other bounds from (a member given twice, or with
 * escapes in its name) is flagged ci_ambiguous for the policy check. The
 * response side is meter.c; docs/internals/metering.md has the rules.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "tollgate/config.h"
#include "tollgate/meter.h"
#include "tollgate/util.h"

#include "providers/providers.h"

/* How many members of obj are named key (cJSON keeps repeats). */
static int
member_count(const cJSON *obj, const char *key)
{
	const cJSON *it;
	int n = 0;

	cJSON_ArrayForEach(it, obj)
	{
		if (it->string != NULL && strcmp(it->string, key) == 0)
			n++;
	}
	return (n);
}

/*
 * Would a provider read a different bound than tollgate does? A key that
 * decides the cost (model, stream, n, the output bounds) given twice (JSON
 * readers disagree on which one wins) or written with escapes (the text
 * edit of meter_set_bound cannot see it), or Gemini's snake_case
 * generation_config, which its API also accepts.
 */
static int
ambiguous_bounds(const struct route *rt, const char *body, size_t len,
    const cJSON *root, int plain)
{
	static const char *const openai[] = {"model", "stream", "n", "best_of",
	    "max_tokens", "max_completion_tokens", "max_output_tokens", NULL};
	static const char *const anthropic[] = {
	    "model", "stream", "max_tokens", NULL};
	static const char *const gemini[] = {"generationConfig", NULL};
	static const char *const gemini_gc[] = {
	    "maxOutputTokens", "candidateCount", NULL};
	const char *const *keys;
	const cJSON *gc;
	struct json_span js;
	size_t start = meter_json_ws(body, len, 0);
	int i, n;

	switch (rt->rt_family) {
	case FAMILY_ANTHROPIC:
		keys = anthropic;
		break;
	case FAMILY_GEMINI:
		keys = gemini;
		break;
	default:
		keys = openai;
		break;
	}
	for (i = 0; keys[i] != NULL; i++) {
		n = member_count(root, keys[i]);
		/* With plain names the member is where its name is written. */
		if (n > 1 ||
		    (n == 1 && !plain &&
			meter_json_member(
			    body + start, len - start, keys[i], &js) != 1))
			return (1);
	}
	if (rt->rt_family != FAMILY_GEMINI)
		return (0);
	if (cJSON_GetObjectItemCaseSensitive(root, "generation_config") != NULL)
		return (1);
	gc = cJSON_GetObjectItemCaseSensitive(root, "generationConfig");
	if (gc == NULL)
		return (0);
	if (!cJSON_IsObject(gc) ||
	    cJSON_GetObjectItemCaseSensitive(gc, "max_output_tokens") != NULL ||
	    cJSON_GetObjectItemCaseSensitive(gc, "candidate_count") != NULL)
		return (1);
	for (i = 0; gemini_gc[i] != NULL; i++)
		if (member_count(gc, gemini_gc[i]) > 1)
			return (1);
	return (0);
}

/*
 * The top-level members of a request body that metering reads: the ones
 * ambiguous_bounds, openai_request, openai_inject, anthropic_request and
 * gemini_request look at. The others (messages, tools, input, contents:
 * nearly all of a large body) are checked but read as null, so reading a
 * new member there means naming it here.
 */
static const char *const request_members[] = {"model", "stream", "n", "best_of",
    "max_tokens", "max_completion_tokens", "max_output_tokens",
    "stream_options", "generationConfig", "generation_config", NULL};

/* Fill ci from a request before it is forwarded; never fails. */
int
meter_request(const struct route *rt, const char *body, size_t len,
    struct call_info *ci, char **newbody, size_t *newlen)
{
	cJSON *root;
	int plain;

	memset(ci, 0, sizeof(*ci));
	ci->ci_max_output = -1;
	ci->ci_n = 1;
	*newbody = NULL;
	*newlen = 0;

	switch (rt->rt_endpoint) {
	case EP_COMPLETIONS:
		ci->ci_max_output = 16; /* the API's default max_tokens */
		break;
	case EP_EMBEDDINGS:
	case EP_GEMINI_EMBED:
		ci->ci_max_output = 0; /* embeddings generate no tokens */
		break;
	case EP_GEMINI_STREAM:
		ci->ci_stream = 1;
		break;
	default:
		break;
	}
	/* Gemini's model and Azure's deployment are in the URL. */
	if (rt->rt_model[0] != '\0')
		snprintf(
		    ci->ci_model, sizeof(ci->ci_model), "%s", rt->rt_model);
	/* A rough count that needs no tokenizer: about 4 bytes a token. */
	if (rt->rt_metered)
		ci->ci_input_estimate = (int64_t)((len + 3) / 4);

	if ((root = meter_json_parse_request(
		 body, len, request_members, &plain)) == NULL)
		return (0);
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return (0);
	}
	if (ci->ci_model[0] == '\0')
		meter_setstr(ci->ci_model, sizeof(ci->ci_model),
		    cJSON_GetObjectItemCaseSensitive(root, "model"));
	if (rt->rt_metered)
		ci->ci_ambiguous = ambiguous_bounds(rt, body, len, root, plain);
	if (rt->rt_metered) {
		switch (rt->rt_family) {
		case FAMILY_OPENAI:
			openai_request(rt, root, ci);
			/*
			 * Only chat and legacy completions need asking;
			 * Responses streams always end with their usage.
			 */
			if (ci->ci_stream &&
			    (rt->rt_endpoint == EP_CHAT ||
				rt->rt_endpoint == EP_COMPLETIONS) &&
			    openai_inject(body, len, root, newbody, newlen) ==
				0)
				ci->ci_usage_injected = 1;
			break;
		case FAMILY_ANTHROPIC:
			anthropic_request(rt, root, ci);
			break;
		case FAMILY_GEMINI:
			gemini_request(rt, root, ci);
			break;
		}
	}
	if (ci->ci_n < 1)
		ci->ci_n = 1;
	cJSON_Delete(root);
	return (0);
}

/*
 * Set member key of the object text obj[0..len) to the number v: replace
 * its value where it is, or add it at the end. Returns 0 with an allocated
 * *out, or -1 when the text is not a plain object (an escaped key, a
 * duplicate) and is left alone.
 */
static int
set_member(const char *obj, size_t len, const char *key, int64_t v, char **out,
    size_t *outlen)
{
	struct json_span js;
	char ins[160];
	size_t close;
	int empty;

	switch (meter_json_member(obj, len, key, &js)) {
	case 1:
		snprintf(ins, sizeof(ins), "%lld", (long long)v);
		meter_json_splice(
		    obj, len, js.js_val, js.js_valend, ins, out, outlen);
		return (0);
	case 0:
		if ((close = meter_json_close(obj, len, &empty)) == SIZE_MAX)
			return (-1);
		snprintf(ins, sizeof(ins), "%s\"%s\":%lld", empty ? "" : ",",
		    key, (long long)v);
		meter_json_splice(obj, len, close, close, ins, out, outlen);
		return (0);
	}
	return (-1);
}

/*
 * Write the output bound v into a request body of route rt: the member
 * the provider reads (max_completion_tokens and max_tokens, whichever the
 * request has, max_output_tokens, generationConfig.maxOutputTokens), added
 * when the request has none. The text is edited, never re-serialised, so
 * every other byte stays as the client sent it. Returns 0 with an
 * allocated *out, or -1 when the body cannot be edited safely.
 */
int
meter_set_bound(const struct route *rt, const char *body, size_t len, int64_t v,
    char **out, size_t *outlen)
{
	struct json_span js;
	char *tmp, *sub;
	const char *key;
	size_t start, tmplen, sublen;
	int r, n = 0;

	*out = NULL;
	*outlen = 0;
	start = meter_json_ws(body, len, 0);
	if (start >= len || body[start] != '{' ||
	    meter_json_skip(body + start, len - start) == 0)
		return (-1);
	body += start;
	len -= start;
	switch (rt->rt_endpoint) {
	case EP_CHAT:
		/* Both, when both are there: a server may read either. */
		tmp = NULL;
		tmplen = 0;
		if (meter_json_member(body, len, "max_tokens", &js) == 1) {
			if (set_member(body, len, "max_tokens", v, &tmp,
				&tmplen) == -1)
				return (-1);
			n++;
		}
		if (meter_json_member(tmp != NULL ? tmp : body,
			tmp != NULL ? tmplen : len, "max_completion_tokens",
			&js) == 1 ||
		    n == 0) {
			key = n == 0 && rt->rt_upstream != NULL &&
				rt->rt_upstream->uc_type ==
				    UPSTREAM_OPENAI_COMPATIBLE
			    ? "max_tokens"
			    : "max_completion_tokens";
			r = set_member(tmp != NULL ? tmp : body,
			    tmp != NULL ? tmplen : len, key, v, out, outlen);
			free(tmp);
			return (r);
		}
		*out = tmp;
		*outlen = tmplen;
		return (0);
	case EP_COMPLETIONS:
	case EP_MESSAGES:
		return (set_member(body, len, "max_tokens", v, out, outlen));
	case EP_RESPONSES:
		return (
		    set_member(body, len, "max_output_tokens", v, out, outlen));
	case EP_GEMINI_GENERATE:
	case EP_GEMINI_STREAM:
		r = meter_json_member(body, len, "generationConfig", &js);
		if (r == -1)
			return (-1);
		if (r == 0) {
			char ins[96];

			snprintf(ins, sizeof(ins), "{\"maxOutputTokens\":%lld}",
			    (long long)v);
			if ((start = meter_json_close(body, len, &n)) ==
			    SIZE_MAX)
				return (-1);
			xasprintf(&sub, "%s\"generationConfig\":%s",
			    n ? "" : ",", ins);
			meter_json_splice(
			    body, len, start, start, sub, out, outlen);
			free(sub);
			return (0);
		}
		if (body[js.js_val] != '{')
			return (-1);
		if (set_member(body + js.js_val, js.js_valend - js.js_val,
			"maxOutputTokens", v, &sub, &sublen) == -1)
			return (-1);
		meter_json_splice(
		    body, len, js.js_val, js.js_valend, sub, out, outlen);
		free(sub);
		return (0);
	default:
		return (-1);
	}
}
