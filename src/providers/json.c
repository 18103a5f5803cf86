/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading JSON for meter.c and the provider adapters. cJSON parses what is
 * small and whole (a request body, one stream event, a response kept whole)
 * and the helpers here read numbers and strings out of it the way metering
 * wants them: token counts clamped, never negative, text counted by its
 * bytes. The rest works on raw text without building a tree: it finds
 * where a value ends (strings and their escapes skipped, nesting counted),
 * where a member sits inside an object, so meter.c can cut one out of the
 * bytes it relays, and the last usage object in the tail of a body too
 * large to keep whole. Nothing here knows a provider or holds state.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/util.h"

#include "providers.h"

/* Numbers above this are not token counts; they are clamped. */
#define METER_INT_MAX 1000000000000000LL

/*
 * Parse JSON text. strict refuses anything but whitespace after the value
 * (request bodies); responses may have trailing bytes (Anthropic pads).
 */
cJSON *
meter_json_parse(const char *p, size_t len, int strict)
{
	const char *end = NULL;
	cJSON *root;

	if (p == NULL || len == 0)
		return (NULL);
	root = cJSON_ParseWithLengthOpts(p, len, &end, 0);
	if (root == NULL || !strict)
		return (root);
	for (; end != NULL && end < p + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\r' &&
		    *end != '\n') {
			cJSON_Delete(root);
			return (NULL);
		}
	}
	return (root);
}

/* The index of the first byte at or after i that is not JSON whitespace. */
size_t
meter_json_ws(const char *p, size_t len, size_t i)
{
	while (i < len &&
	    (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
		i++;
	return (i);
}

/*
 * The length of the JSON value that starts at p (no leading whitespace),
 * found by scanning: strings with their escapes are skipped and nesting
 * is counted. Returns 0 when the value does not end within len bytes. The
 * text is not validated; callers scan text cJSON has already accepted, or
 * parse what this delimits.
 */
size_t
meter_json_skip(const char *p, size_t len)
{
	size_t i;
	int depth = 0;

	if (len == 0)
		return (0);
	if (p[0] != '{' && p[0] != '[' && p[0] != '"') {
		for (i = 0; i < len; i++) {
			if (p[i] == ',' || p[i] == '}' || p[i] == ']' ||
			    p[i] == ' ' || p[i] == '\t' || p[i] == '\r' ||
			    p[i] == '\n')
				break;
		}
		return (i);
	}
	for (i = 0; i < len; i++) {
		switch (p[i]) {
		case '"':
			for (i++; i < len && p[i] != '"'; i++) {
				if (p[i] == '\\')
					i++;
			}
			if (i >= len)
				return (0);
			if (depth == 0)
				return (i + 1);
			break;
		case '{':
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			if (--depth <= 0)
				return (i + 1);
			break;
		}
	}
	return (0);
}

/*
 * Find the member named key (compared as written, without unescaping) of
 * the JSON object whose '{' is p[0]. Returns 1 and fills js when found, 0
 * when the object has no such member, -1 when the text is not an object.
 */
int
meter_json_member(
    const char *p, size_t len, const char *key, struct json_span *js)
{
	size_t i = 1, n, ks, klen = strlen(key), comma = SIZE_MAX;
	int match;

	if (len == 0 || p[0] != '{')
		return (-1);
	for (;;) {
		i = meter_json_ws(p, len, i);
		if (i >= len)
			return (-1);
		if (p[i] == '}' && comma == SIZE_MAX)
			return (0);
		if (p[i] != '"')
			return (-1);
		ks = i;
		if ((n = meter_json_skip(p + i, len - i)) == 0)
			return (-1);
		match = n == klen + 2 && memcmp(p + i + 1, key, klen) == 0;
		i = meter_json_ws(p, len, i + n);
		if (i >= len || p[i] != ':')
			return (-1);
		i = meter_json_ws(p, len, i + 1);
		if (i >= len || (n = meter_json_skip(p + i, len - i)) == 0)
			return (-1);
		if (match) {
			js->js_key = ks;
			js->js_val = i;
			js->js_valend = i + n;
			js->js_comma = comma;
			js->js_next = i + n;
			i = meter_json_ws(p, len, i + n);
			if (i < len && p[i] == ',')
				js->js_next = meter_json_ws(p, len, i + 1);
			return (1);
		}
		i = meter_json_ws(p, len, i + n);
		if (i >= len)
			return (-1);
		if (p[i] == '}')
			return (0);
		if (p[i] != ',')
			return (-1);
		comma = i++;
	}
}

/* Replace body[from, to) by ins; the result is allocated. */
void
meter_json_splice(const char *body, size_t len, size_t from, size_t to,
    const char *ins, char **out, size_t *outlen)
{
	size_t ilen = strlen(ins), n = len - (to - from) + ilen;
	char *p;

	p = xmalloc(n + 1);
	memcpy(p, body, from);
	memcpy(p + from, ins, ilen);
	memcpy(p + from + ilen, body + to, len - to);
	p[n] = '\0';
	*out = p;
	*outlen = n;
}

/*
 * Insert a member before the closing brace of the object obj[0..len),
 * with a comma unless the object is empty. Returns the brace's offset.
 */
size_t
meter_json_close(const char *obj, size_t len, int *empty)
{
	size_t n = meter_json_skip(obj, len), i;

	if (n < 2 || obj[n - 1] != '}')
		return (SIZE_MAX);
	for (i = n - 1; i-- > 0;) {
		if (obj[i] != ' ' && obj[i] != '\t' && obj[i] != '\r' &&
		    obj[i] != '\n')
			break;
	}
	*empty = obj[i] == '{';
	return (n - 1);
}

/* A non-negative integer member, or 0 (missing, null, negative, junk). */
int64_t
meter_json_int(const cJSON *obj, const char *key)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
	double d;

	if (!cJSON_IsNumber(it))
		return (0);
	d = it->valuedouble;
	if (!isfinite(d) || d <= 0)
		return (0);
	if (d >= (double)METER_INT_MAX)
		return (METER_INT_MAX);
	return ((int64_t)d);
}

/* Whether obj has a number named key. */
int
meter_json_has(const cJSON *obj, const char *key)
{
	return (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(obj, key)));
}

/* Count a string's bytes as generated output. */
void
meter_json_text(struct meter_acc *a, const cJSON *it)
{
	if (cJSON_IsString(it) && it->valuestring != NULL)
		a->ma_outbytes += (int64_t)strlen(it->valuestring);
}

/*
 * Count generated output that is JSON rather than text (a tool's input
 * object, a Gemini functionCall's args) by its printed size.
 */
void
meter_json_printed(struct meter_acc *a, const cJSON *it)
{
	char *s;

	if (it == NULL || cJSON_IsNull(it))
		return;
	if (cJSON_IsString(it)) {
		meter_json_text(a, it);
		return;
	}
	if ((s = cJSON_PrintUnformatted(it)) == NULL)
		return;
	a->ma_outbytes += (int64_t)strlen(s);
	cJSON_free(s);
}

/* Copy a string member into a fixed buffer; other types leave it alone. */
void
meter_setstr(char *dst, size_t size, const cJSON *it)
{
	if (cJSON_IsString(it) && it->valuestring != NULL &&
	    it->valuestring[0] != '\0')
		snprintf(dst, size, "%s", it->valuestring);
}

/*
 * Find the last "key": {...} in text that may start anywhere inside a
 * JSON document (the tail of a large body) and parse that object.
 */
cJSON *
meter_json_tail(const char *p, size_t len, const char *key)
{
	size_t klen = strlen(key), i, j, n;
	cJSON *obj;

	if (len < klen + 2)
		return (NULL);
	for (i = len - klen - 2 + 1; i-- > 0;) {
		if (p[i] != '"' || memcmp(p + i + 1, key, klen) != 0 ||
		    p[i + 1 + klen] != '"')
			continue;
		if (i > 0 && p[i - 1] == '\\')
			continue; /* inside a string */
		j = meter_json_ws(p, len, i + klen + 2);
		if (j >= len || p[j] != ':')
			continue;
		j = meter_json_ws(p, len, j + 1);
		if (j >= len || p[j] != '{')
			continue;
		if ((n = meter_json_skip(p + j, len - j)) == 0)
			continue;
		obj = cJSON_ParseWithLength(p + j, n);
		if (cJSON_IsObject(obj))
			return (obj);
		cJSON_Delete(obj);
	}
	return (NULL);
}
