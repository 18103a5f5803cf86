/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private interface between meter.c and the three provider adapters
 * (openai.c, anthropic.c, gemini.c). meter.c owns framing, relaying and
 * the settlement of usage; an adapter only reads JSON: request bodies,
 * stream events and response bodies, each parsed once by meter.c, and
 * records what it finds in a struct meter_acc. src/meter/json.c has the JSON
 * reading both sides share.
 */
#ifndef TOLLGATE_PROVIDERS_H
#define TOLLGATE_PROVIDERS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "tollgate/route.h"
#include "tollgate/sse.h"
#include "tollgate/usage.h"

/* What the response has told us so far; owned by the struct meter. */
struct meter_acc {
	struct usage ma_usage; /* numbers as last reported (partial or final) */
	int ma_have; /* some usage numbers arrived */
	int ma_final; /* the call's final usage arrived */
	int ma_error; /* an error frame or a failed response */
	char ma_errtype[48]; /* the provider's name for the error, or "" */
	int ma_finished; /* Gemini: a candidate's finishReason was seen */
	int ma_ended; /* the stream's last event ([DONE], message_stop,
			 response.completed/incomplete/failed) was seen */
	int64_t ma_outbytes; /* generated text seen (for estimation) */
	int64_t ma_seq; /* Responses: the next sequence_number */

	/*
	 * Anthropic reports usage as separate fields that later events may
	 * override one by one; keep them raw and derive ma_usage.
	 */
	struct {
		int64_t in, cache_write, cache_read, cache_1h, out, thinking;
	} ma_an;
};

/* openai_event flags for meter.c's filter of injected streams. */
#define OPENAI_EV_USAGE_CHUNK 0x1 /* only there because of include_usage */
#define OPENAI_EV_USAGE_NULL 0x2 /* has a top-level "usage": null */

/* Where a member of a JSON object sits in its text (meter_json_member). */
struct json_span {
	size_t js_key; /* the key's opening quote */
	size_t js_val; /* first byte of the value */
	size_t js_valend; /* one past the value */
	size_t js_comma; /* the comma before the key, or SIZE_MAX */
	size_t js_next; /* the next key after a comma, or js_valend */
};

/* One member of a JSON object as written (meter_json_next). */
struct json_member {
	size_t jm_key; /* the name's opening quote */
	size_t jm_keyend; /* one past its closing quote */
	size_t jm_val; /* first byte of the value, SIZE_MAX if none */
	size_t jm_valend; /* one past the value */
};

/* meter/json.c: reading JSON, for meter.c and the adapters */
cJSON *meter_json_parse(const char *, size_t, int);
cJSON *meter_json_parse_request(
    const char *, size_t, const char *const *, struct json_member *, int *);
size_t meter_json_ws(const char *, size_t, size_t);
size_t meter_json_skip(const char *, size_t);
int meter_json_member(const char *, size_t, const char *, struct json_span *);
int meter_json_next(const char *, size_t, size_t *, struct json_member *);
int meter_json_plain(const char *, size_t);
void meter_json_splice(
    const char *, size_t, size_t, size_t, const char *, char **, size_t *);
size_t meter_json_close(const char *, size_t, int *);
int64_t meter_json_int(const cJSON *, const char *);
int meter_json_has(const cJSON *, const char *);
void meter_json_text(struct meter_acc *, const cJSON *);
void meter_json_printed(struct meter_acc *, const cJSON *);
void meter_setstr(char *, size_t, const cJSON *);
void meter_setmodel(struct usage *, const cJSON *);
void meter_json_error(struct meter_acc *, const cJSON *);
void meter_event_type(const struct sse_event *, const cJSON *, char *, size_t);
cJSON *meter_json_tail(const char *, size_t, const char *);

/* openai.c: chat, legacy completions, embeddings, Responses */
void openai_request(const struct route *, const cJSON *, struct call_info *);
int openai_inject(const char *, size_t, const cJSON *, char **, size_t *);
int openai_event(
    struct meter_acc *, enum endpoint, const struct sse_event *, const cJSON *);
void openai_body(struct meter_acc *, enum endpoint, const cJSON *);
int openai_usage(struct meter_acc *, enum endpoint, const cJSON *);

/* anthropic.c: Messages */
void anthropic_request(const struct route *, const cJSON *, struct call_info *);
void anthropic_event(
    struct meter_acc *, const struct sse_event *, const cJSON *);
void anthropic_body(struct meter_acc *, const cJSON *);
int anthropic_usage(struct meter_acc *, const cJSON *);

/* gemini.c: generateContent, streamGenerateContent, embedContent */
void gemini_request(const struct route *, const cJSON *, struct call_info *);
void gemini_event(struct meter_acc *, const struct sse_event *, const cJSON *);
void gemini_body(struct meter_acc *, const cJSON *);
int gemini_usage(struct meter_acc *, const cJSON *);

#endif
