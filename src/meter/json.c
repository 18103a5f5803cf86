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
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/buf.h"
#include "tollgate/util.h"

#include "providers/providers.h"

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

/*
 * The offset of the first '"' or '\' at or after p[i], or len, found
 * with memchr (*q keeps the next '"' for the next call on the same
 * string), so a long string costs little and each escape two calls.
 */
static size_t
string_special(const char *p, size_t len, size_t i, const char **q)
{
	const char *b;

	if (i >= len)
		return (len);
	if (*q == NULL || p + i > *q) {
		if ((*q = memchr(p + i, '"', len - i)) == NULL)
			*q = p + len;
	}
	if ((b = memchr(p + i, '\\', (size_t)(*q - (p + i)))) != NULL)
		return ((size_t)(b - p));
	return ((size_t)(*q - p));
}

/*
 * The offset of the closing quote of the string whose contents start at
 * p[i], or len when it does not end: the first '"' not taken by a '\'
 * before it.
 */
static size_t
string_end(const char *p, size_t len, size_t i)
{
	const char *q = NULL;

	while ((i = string_special(p, len, i, &q)) < len && p[i] == '\\')
		i += 2; /* the backslash and what it escapes */
	return (i < len ? i : len);
}

/*
 * Request bodies are checked here the way cJSON reads them, without
 * building a tree, for meter_json_parse_request. The check is sure of a
 * subset of what cJSON accepts: JSON whitespace only, strict numbers
 * short enough for cJSON's number buffer (63 bytes), escapes cJSON
 * decodes, nesting well under its limit. Anything outside that, valid or
 * not, is "not sure" (0) and left to cJSON itself. Inside strings cJSON
 * takes any byte but '"' and '\', and so does the check.
 *
 * One thing the check takes that cJSON does not: a lone surrogate escape
 * ("\ud83d" without its low half). cJSON refuses the whole text for one,
 * while the providers' servers (Python's json, JavaScript's JSON.parse)
 * read it, and JavaScript's JSON.stringify writes one for a string cut
 * inside an emoji, as agents truncating tool output do. In a member
 * metering skips it changes nothing (the value is never built); in a
 * member it reads, the short text handed to cJSON still has it, cJSON
 * refuses that, and so does meter_json_parse_request.
 */
#define SCAN_DEPTH_MAX 64
#define SCAN_NUMBER_MAX 48
/* First allocation of a request body's short text. */
#define SCAN_SHORT_FIRST 256

static size_t scan_value(const char *, size_t, size_t, int);

static int
scan_ws(int c)
{
	return (c == ' ' || c == '\t' || c == '\r' || c == '\n');
}

static size_t
scan_skip_ws(const char *p, size_t len, size_t i)
{
	while (i < len && scan_ws((unsigned char)p[i]))
		i++;
	return (i);
}

/* Four hex digits at p[i], as cJSON's parse_hex4 reads them; -1 if not. */
static long
scan_hex4(const char *p, size_t len, size_t i)
{
	long v = 0;
	size_t k;
	int c;

	if (len - i < 4)
		return (-1);
	for (k = 0; k < 4; k++) {
		c = (unsigned char)p[i + k];
		if (c >= '0' && c <= '9')
			v = v * 16 + (c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v = v * 16 + (c - 'A' + 10);
		else
			return (-1);
	}
	return (v);
}

/* The length of the escape whose '\' is p[i], or 0 when not sure. */
static size_t
scan_escape(const char *p, size_t len, size_t i)
{
	long hi, lo;

	if (len - i < 2)
		return (0);
	switch (p[i + 1]) {
	case '"':
	case '\\':
	case '/':
	case 'b':
	case 'f':
	case 'n':
	case 'r':
	case 't':
		return (2);
	case 'u':
		if ((hi = scan_hex4(p, len, i + 2)) < 0)
			return (0);
		if (hi < 0xD800 || hi > 0xDFFF)
			return (6);
		/* A lone surrogate: see meter_json_parse_request. */
		if (hi > 0xDBFF || len - i < 12 || p[i + 6] != '\\' ||
		    p[i + 7] != 'u')
			return (6);
		if ((lo = scan_hex4(p, len, i + 8)) < 0xDC00 || lo > 0xDFFF)
			return (6);
		return (12);
	}
	return (0);
}

/* The end of the string whose '"' is p[i], or 0 when not sure. */
static size_t
scan_string(const char *p, size_t len, size_t i)
{
	const char *q = NULL;
	size_t n;

	for (i++; (i = string_special(p, len, i, &q)) < len; i += n) {
		if (p[i] == '"')
			return (i + 1);
		if ((n = scan_escape(p, len, i)) == 0)
			return (0);
	}
	return (0);
}

static size_t
scan_digits(const char *p, size_t len, size_t i)
{
	while (i < len && p[i] >= '0' && p[i] <= '9')
		i++;
	return (i);
}

/* The end of the number at p[i] (RFC 8259's grammar), or 0. */
static size_t
scan_number(const char *p, size_t len, size_t i)
{
	size_t start = i, j;

	if (p[i] == '-')
		i++;
	if (i >= len || p[i] < '0' || p[i] > '9')
		return (0);
	i = p[i] == '0' ? i + 1 : scan_digits(p, len, i);
	if (i < len && p[i] == '.') {
		if ((j = scan_digits(p, len, i + 1)) == i + 1)
			return (0);
		i = j;
	}
	if (i < len && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < len && (p[i] == '+' || p[i] == '-'))
			i++;
		if ((j = scan_digits(p, len, i)) == i)
			return (0);
		i = j;
	}
	if (i - start > SCAN_NUMBER_MAX)
		return (0);
	/* cJSON reads on while it sees these; the next byte must end it. */
	if (i < len && memchr("0123456789+-eE.", p[i], 15) != NULL)
		return (0);
	return (i);
}

static size_t
scan_literal(const char *p, size_t len, size_t i, const char *word)
{
	size_t n = strlen(word);

	if (len - i < n || memcmp(p + i, word, n) != 0)
		return (0);
	return (i + n);
}

/* The members of the object or the elements of the array at p[i]. */
static size_t
scan_container(const char *p, size_t len, size_t i, int depth)
{
	int object = p[i] == '{';
	char close = object ? '}' : ']';

	if (depth >= SCAN_DEPTH_MAX)
		return (0);
	if ((i = scan_skip_ws(p, len, i + 1)) < len && p[i] == close)
		return (i + 1);
	for (;;) {
		if (object) {
			if (i >= len || p[i] != '"' ||
			    (i = scan_string(p, len, i)) == 0)
				return (0);
			if ((i = scan_skip_ws(p, len, i)) >= len || p[i] != ':')
				return (0);
			i = scan_skip_ws(p, len, i + 1);
		}
		if ((i = scan_value(p, len, i, depth + 1)) == 0)
			return (0);
		if ((i = scan_skip_ws(p, len, i)) >= len)
			return (0);
		if (p[i] == close)
			return (i + 1);
		if (p[i] != ',')
			return (0);
		i = scan_skip_ws(p, len, i + 1);
	}
}

/* The end of the value at p[i], or 0 when not sure cJSON reads it so. */
static size_t
scan_value(const char *p, size_t len, size_t i, int depth)
{
	if (i >= len)
		return (0);
	switch (p[i]) {
	case '"':
		return (scan_string(p, len, i));
	case '{':
	case '[':
		return (scan_container(p, len, i, depth));
	case 't':
		return (scan_literal(p, len, i, "true"));
	case 'f':
		return (scan_literal(p, len, i, "false"));
	case 'n':
		return (scan_literal(p, len, i, "null"));
	default:
		return (scan_number(p, len, i));
	}
}

/*
 * Whether the key text p[0..n) (quotes included) is the name cJSON reads:
 * no escape, and no control byte (a NUL would end cJSON's name).
 */
int
meter_json_plain(const char *p, size_t n)
{
	size_t i;

	for (i = 1; i + 1 < n; i++) {
		if (p[i] == '\\' || (unsigned char)p[i] < 0x20)
			return (0);
	}
	return (1);
}

/* The index in keep of the plain key text p[0..n) (quotes included), or -1. */
static int
scan_kept(const char *p, size_t n, const char *const *keep)
{
	int i;

	for (i = 0; keep[i] != NULL; i++) {
		if (strlen(keep[i]) == n - 2 &&
		    memcmp(p + 1, keep[i], n - 2) == 0)
			return (i);
	}
	return (-1);
}

static void
spans_clear(const char *const *keep, struct json_member *spans)
{
	size_t i;

	for (i = 0; spans != NULL && keep[i] != NULL; i++) {
		memset(&spans[i], 0, sizeof(spans[i]));
		spans[i].jm_val = SIZE_MAX;
	}
}

/* Note where the first member named keep[k] sits. */
static void
spans_note(struct json_member *spans, int k, const struct json_member *jm)
{
	if (spans != NULL && k >= 0 && spans[k].jm_val == SIZE_MAX)
		spans[k] = *jm;
}

/*
 * The tree root is cJSON's reading of the whole text p: walk the text of
 * its top-level object to tell whether every name is plain, and where the
 * kept members are. A text this walk cannot follow (cJSON takes bytes
 * other than JSON whitespace between tokens) is not plain, and its spans
 * stay unknown.
 */
static void
scan_walk(const char *p, size_t len, const cJSON *root, const char *const *keep,
    struct json_member *spans, int *plain)
{
	struct json_member jm;
	const cJSON *it = root->child;
	size_t start = meter_json_ws(p, len, 0), pos = 0;
	int r, allplain = 1;

	while ((r = meter_json_next(p + start, len - start, &pos, &jm)) == 1) {
		if (it == NULL)
			break;
		jm.jm_key += start;
		jm.jm_keyend += start;
		jm.jm_val += start;
		jm.jm_valend += start;
		if (!meter_json_plain(p + jm.jm_key, jm.jm_keyend - jm.jm_key))
			allplain = 0;
		else
			spans_note(spans,
			    scan_kept(
				p + jm.jm_key, jm.jm_keyend - jm.jm_key, keep),
			    &jm);
		it = it->next;
	}
	if (r != 0 || it != NULL) {
		spans_clear(keep, spans);
		return;
	}
	*plain = allplain;
}

/*
 * Parse a request body the way meter_json_parse(p, len, 1) does, except
 * that the value of every top-level member whose name is not in keep
 * (NULL-terminated) reads as null. Those values are checked but never
 * built: in a large request nearly every byte is in the messages, and
 * cJSON building them cost about 3 ms a MiB. The members keep their names
 * and order, so duplicates are still seen. Text the check is not sure
 * about is parsed whole by cJSON, so the answer (a tree or NULL) is the
 * one cJSON gives for the whole body. *plain is set when every top-level
 * name is written as cJSON reads it (no escape, no control byte) and the
 * text between the members is JSON's, so a member of the tree is found
 * in the text by its name (meter_json_member); 0 means it may not be.
 * spans, when not NULL, has one entry per name in keep: where the first
 * member of that name, written plainly, sits in p (jm_val is SIZE_MAX
 * when there is none, or when *plain is 0 and the text could not be
 * followed).
 */
cJSON *
meter_json_parse_request(const char *p, size_t len, const char *const *keep,
    struct json_member *spans, int *plain)
{
	struct json_member jm;
	struct buf out;
	size_t i, k, kend, v;
	cJSON *root;
	int allplain = 1, kept, r;

	*plain = 0;
	spans_clear(keep, spans);
	if (p == NULL || len == 0)
		return (NULL);
	if ((i = scan_skip_ws(p, len, 0)) >= len || p[i] != '{')
		goto whole;
	/*
	 * The short text is the body's but for its whitespace and for a
	 * value shorter than "null" written as null: at most 3 bytes more a
	 * member. A body that makes it longer than the cap has millions of
	 * tiny members; it is parsed whole, as text the walk is unsure of.
	 */
	buf_init(&out, BUF_JSON_SHORT_MAX, SCAN_SHORT_FIRST, 0);
	if (buf_add(&out, "{", 1) == -1)
		goto whole_free;
	if ((i = scan_skip_ws(p, len, i + 1)) < len && p[i] == '}')
		i++;
	else {
		for (;;) {
			k = i;
			if (i >= len || p[i] != '"' ||
			    (kend = scan_string(p, len, i)) == 0)
				goto whole_free;
			i = scan_skip_ws(p, len, kend);
			if (i >= len || p[i] != ':')
				goto whole_free;
			v = scan_skip_ws(p, len, i + 1);
			if ((i = scan_value(p, len, v, 1)) == 0)
				goto whole_free;
			if (buf_add(&out, p + k, kend - k) == -1 ||
			    buf_add(&out, ":", 1) == -1)
				goto whole_free;
			/* A name cJSON may read otherwise is always kept. */
			if (!meter_json_plain(p + k, kend - k)) {
				allplain = 0;
				kept = 1;
			} else {
				jm.jm_key = k;
				jm.jm_keyend = kend;
				jm.jm_val = v;
				jm.jm_valend = i;
				kept = scan_kept(p + k, kend - k, keep);
				spans_note(spans, kept, &jm);
				kept = kept >= 0;
			}
			if (kept)
				r = buf_add(&out, p + v, i - v);
			else
				r = buf_add(&out, "null", 4);
			if (r == -1)
				goto whole_free;
			if ((i = scan_skip_ws(p, len, i)) >= len)
				goto whole_free;
			if (p[i] == '}') {
				i++;
				break;
			}
			if (p[i] != ',')
				goto whole_free;
			if (buf_add(&out, ",", 1) == -1)
				goto whole_free;
			i = scan_skip_ws(p, len, i + 1);
		}
	}
	if (scan_skip_ws(p, len, i) != len)
		goto whole_free;
	if (buf_add(&out, "}", 1) == -1)
		goto whole_free;
	root = meter_json_parse(buf_ptr(&out), buf_len(&out), 1);
	buf_free(&out);
	/* Never expected: the check passed, so cJSON reads the short text. */
	if (root == NULL) {
		spans_clear(keep, spans);
		goto whole;
	}
	*plain = allplain;
	return (root);
whole_free:
	buf_free(&out);
	spans_clear(keep, spans);
whole:
	if ((root = meter_json_parse(p, len, 1)) != NULL &&
	    cJSON_IsObject(root))
		scan_walk(p, len, root, keep, spans, plain);
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
			if ((i = string_end(p, len, i + 1)) >= len)
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

/* How many of the n bytes at p may be in a number or a literal. */
static size_t
strspn_len(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\0' ||
		    strchr("+-.0123456789abcdefghijklmnopqrstuvwxyzE", p[i]) ==
			NULL)
			break;
	}
	return (i);
}

/*
 * The next member of the JSON object whose '{' is obj[0], found by
 * scanning as meter_json_member does. *pos is 0 before the first call and
 * is moved past each member. Returns 1 and fills jm (offsets into obj),
 * 0 after the last member, -1 when the text is not an object this scan
 * can follow: only JSON whitespace between tokens, numbers and literals
 * written with their own bytes. The text is not validated further;
 * callers walk text cJSON has accepted.
 */
int
meter_json_next(
    const char *obj, size_t len, size_t *pos, struct json_member *jm)
{
	size_t i = *pos, n;

	if (i == 0) {
		if (len == 0 || obj[0] != '{')
			return (-1);
		i = meter_json_ws(obj, len, 1);
		if (i < len && obj[i] == '}') {
			*pos = len;
			return (0);
		}
	} else {
		if (i >= len)
			return (0);
		i = meter_json_ws(obj, len, i);
		if (i >= len)
			return (-1);
		if (obj[i] == '}') {
			*pos = len;
			return (0);
		}
		if (obj[i] != ',')
			return (-1);
		i = meter_json_ws(obj, len, i + 1);
	}
	if (i >= len || obj[i] != '"' ||
	    (n = meter_json_skip(obj + i, len - i)) == 0)
		return (-1);
	jm->jm_key = i;
	jm->jm_keyend = i + n;
	i = meter_json_ws(obj, len, i + n);
	if (i >= len || obj[i] != ':')
		return (-1);
	i = meter_json_ws(obj, len, i + 1);
	if (i >= len || (n = meter_json_skip(obj + i, len - i)) == 0)
		return (-1);
	/* A number or a literal: only the bytes they are written with. */
	if (obj[i] != '{' && obj[i] != '[' && obj[i] != '"' &&
	    (strchr("-0123456789tfn", obj[i]) == NULL ||
		strspn_len(obj + i, n) != n))
		return (-1);
	jm->jm_val = i;
	jm->jm_valend = i + n;
	*pos = i + n;
	return (1);
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

/*
 * A stream event's type into buf: the JSON's "type", else the SSE event
 * name (an error event may carry no JSON type), else "".
 */
void
meter_event_type(
    const struct sse_event *ev, const cJSON *root, char *buf, size_t len)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "type");

	buf[0] = '\0';
	if (cJSON_IsString(t))
		strcopy(buf, len, t->valuestring);
	else if (ev->ev_namelen < len) {
		memcpy(buf, ev->ev_name, ev->ev_namelen);
		buf[ev->ev_namelen] = '\0';
	}
}

/*
 * An error the provider reported: remember it, and the first name it gave
 * the error (a type, code or status string), kept to letters, digits and
 * "_.-" so it can go into a ledger row and a log line as it is.
 */
void
meter_json_error(struct meter_acc *a, const cJSON *name)
{
	const char *s;
	size_t i, n = 0;

	a->ma_error = 1;
	if (a->ma_errtype[0] != '\0' || !cJSON_IsString(name) ||
	    name->valuestring == NULL)
		return;
	for (s = name->valuestring, i = 0;
	     s[i] != '\0' && n + 1 < sizeof(a->ma_errtype); i++) {
		if ((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
		    s[i] == '.' || s[i] == '-')
			a->ma_errtype[n++] = s[i];
	}
	a->ma_errtype[n] = '\0';
}

/*
 * Copy a string member into a fixed buffer when it is well-formed UTF-8
 * and fits; anything else leaves dst alone. The names copied this way
 * (service tiers) only select prices, and a name cut short or with stray
 * bytes is one the provider never gave: it could select the wrong tier's
 * rates, so it counts as none.
 */
void
meter_setstr(char *dst, size_t size, const cJSON *it)
{
	size_t len;

	if (!cJSON_IsString(it) || it->valuestring == NULL ||
	    it->valuestring[0] == '\0')
		return;
	len = strlen(it->valuestring);
	if (len < size && utf8_valid(it->valuestring, len))
		memcpy(dst, it->valuestring, len + 1);
}

/*
 * The model the provider says served the call, from a string member. It
 * is recorded in the ledger's served_model, which must hold valid UTF-8
 * (PostgreSQL refuses anything else when the row is shipped), so stray
 * bytes become U+FFFD and a name too long is cut between characters: the
 * row still shows what the provider answered. Such a repaired name is
 * flagged so that it never prices the call (see session_served).
 */
void
meter_setmodel(struct usage *u, const cJSON *it)
{
	if (!cJSON_IsString(it) || it->valuestring == NULL ||
	    it->valuestring[0] == '\0')
		return;
	u->u_model_repaired =
	    !utf8_copy(u->u_model, sizeof(u->u_model), it->valuestring);
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
