/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Gemini adapter: generateContent, streamGenerateContent (SSE with
 * alt=sse, else one JSON array of chunks), embedContent; Developer API and
 * Vertex (docs/internals/wire.md). The model is in the URL, not the body.
 * candidatesTokenCount excludes thoughts, so billed output is candidates +
 * thoughts; every streamed chunk carries the cumulative usageMetadata so
 * far, so the last one seen is the call's usage and nothing is summed.
 */
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "providers.h"

/* Read generationConfig's bounds from a Gemini body. */
void
gemini_request(const struct route *rt, const cJSON *root, struct call_info *ci)
{
	const cJSON *gc, *it;
	int64_t n;

	/* embedContent generates nothing, whatever its body says. */
	if (rt->rt_endpoint != EP_GEMINI_GENERATE &&
	    rt->rt_endpoint != EP_GEMINI_STREAM)
		return;
	gc = cJSON_GetObjectItemCaseSensitive(root, "generationConfig");
	it = cJSON_GetObjectItemCaseSensitive(gc, "maxOutputTokens");
	/* 0 is the protobuf default, "unset": not a bound to trust. */
	if (cJSON_IsNumber(it) && it->valuedouble >= 1)
		ci->ci_max_output = meter_json_int(gc, "maxOutputTokens");
	n = meter_json_int(gc, "candidateCount");
	/* meter_request let no count past INT32_MAX through. */
	ci->ci_n = n < 1 ? 1 : n > INT32_MAX ? INT32_MAX : (int)n;
}

/* A usageMetadata object; returns 1 if it had token counts. */
int
gemini_usage(struct meter_acc *a, const cJSON *um)
{
	struct usage *u = &a->ma_usage;

	if (!cJSON_IsObject(um))
		return (0);
	if (!meter_json_has(um, "promptTokenCount") &&
	    !meter_json_has(um, "candidatesTokenCount") &&
	    !meter_json_has(um, "thoughtsTokenCount") &&
	    !meter_json_has(um, "totalTokenCount"))
		return (0);
	/* Cumulative: replace every field, never add. */
	u->u_input = meter_json_int(um, "promptTokenCount") +
	    meter_json_int(um, "toolUsePromptTokenCount");
	u->u_cached = meter_json_int(um, "cachedContentTokenCount");
	u->u_cache_write = 0;
	u->u_cache_write_1h = 0;
	u->u_reasoning = meter_json_int(um, "thoughtsTokenCount");
	u->u_output =
	    meter_json_int(um, "candidatesTokenCount") + u->u_reasoning;
	meter_setstr(u->u_service_tier, sizeof(u->u_service_tier),
	    cJSON_GetObjectItemCaseSensitive(um, "serviceTier"));
	a->ma_have = 1;
	return (1);
}

/* One GenerateContentResponse: a streamed chunk, or a whole body. */
static void
gemini_chunk(struct meter_acc *a, const cJSON *root)
{
	const cJSON *err, *cand, *parts, *part;
	struct usage *u = &a->ma_usage;

	if (!cJSON_IsObject(root))
		return;
	err = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (err != NULL && !cJSON_IsNull(err))
		meter_json_error(
		    a, cJSON_GetObjectItemCaseSensitive(err, "status"));
	meter_setmodel(
	    u, cJSON_GetObjectItemCaseSensitive(root, "modelVersion"));
	meter_setstr(u->u_service_tier, sizeof(u->u_service_tier),
	    cJSON_GetObjectItemCaseSensitive(root, "serviceTier"));
	cJSON_ArrayForEach(
	    cand, cJSON_GetObjectItemCaseSensitive(root, "candidates"))
	{
		parts = cJSON_GetObjectItemCaseSensitive(
		    cJSON_GetObjectItemCaseSensitive(cand, "content"), "parts");
		cJSON_ArrayForEach(part, parts)
		{
			/* Thought parts are text too, and billed as output. */
			meter_json_text(
			    a, cJSON_GetObjectItemCaseSensitive(part, "text"));
			meter_json_printed(a,
			    cJSON_GetObjectItemCaseSensitive(
				cJSON_GetObjectItemCaseSensitive(
				    part, "functionCall"),
				"args"));
		}
		if (cJSON_IsString(
			cJSON_GetObjectItemCaseSensitive(cand, "finishReason")))
			a->ma_finished = 1;
	}
	/* Keep the last usageMetadata; a chunk without one changes nothing. */
	gemini_usage(
	    a, cJSON_GetObjectItemCaseSensitive(root, "usageMetadata"));
}

/* One stream event (data: {GenerateContentResponse}). */
void
gemini_event(struct meter_acc *a, const struct sse_event *ev, const cJSON *root)
{
	(void)ev;
	gemini_chunk(a, root);
}

/* A whole body: one response, or a JSON array of chunks (alt=json). */
void
gemini_body(struct meter_acc *a, const cJSON *root)
{
	const cJSON *it;

	if (cJSON_IsArray(root)) {
		cJSON_ArrayForEach(it, root) gemini_chunk(a, it);
	} else
		gemini_chunk(a, root);
	if (a->ma_have)
		a->ma_final = 1;
}
