/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by test_json.c and fuzz_json.c: whether meter_json_parse_request
 * read a body the way cJSON reads the whole of it. The same top-level
 * names in the same order, the same values for the members metering
 * reads (keep); the others may read as null. And when it says every name
 * is plain, whether the spans it gives for the kept names are where those
 * members are written.
 */
#ifndef TOLLGATE_TEST_JSONCOMPARE_H
#define TOLLGATE_TEST_JSONCOMPARE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../../src/meter/providers/providers.h"

static const char *const keep[] = {
    "model", "max_tokens", "stream_options", "generationConfig", NULL};

enum path {
	SHORT, /* the short path: unkept members read as null */
	WHOLE, /* left to cJSON: the whole tree */
	REFUSED, /* cJSON refuses it: NULL */
	CJSON, /* left to cJSON, which may read or refuse it */
};

static int
is_kept(const char *name)
{
	const char *const *k;

	for (k = keep; *k != NULL; k++) {
		if (strcmp(*k, name) == 0)
			return (1);
	}
	return (0);
}

/*
 * Whether two values are the same, by their printed text: cJSON_Compare
 * finds no number equal to itself once it overflowed to infinity.
 */
static int
same(const cJSON *a, const cJSON *b)
{
	char *pa, *pb;
	int r;

	if (cJSON_IsNumber(a) != cJSON_IsNumber(b) ||
	    cJSON_IsNull(a) != cJSON_IsNull(b))
		return (0);
	pa = cJSON_PrintUnformatted(a);
	pb = cJSON_PrintUnformatted(b);
	r = pa != NULL && pb != NULL && strcmp(pa, pb) == 0;
	cJSON_free(pa);
	cJSON_free(pb);
	return (r);
}

/*
 * Compare got (meter_json_parse_request) with want (cJSON on the whole
 * body). Returns the path got took, or -1 when it differs from cJSON.
 */
static int
compare(const cJSON *got, const cJSON *want)
{
	const cJSON *g, *w;
	int elided = 0;

	if (got == NULL || want == NULL)
		return (got == NULL && want == NULL ? REFUSED : -1);
	if (!cJSON_IsObject(want))
		return (same(got, want) ? WHOLE : -1);
	if (!cJSON_IsObject(got))
		return (-1);
	for (g = got->child, w = want->child; g != NULL && w != NULL;
	     g = g->next, w = w->next) {
		if (g->string == NULL || w->string == NULL ||
		    strcmp(g->string, w->string) != 0)
			return (-1);
		if (same(g, w))
			continue;
		/* Only a member metering does not read may differ: as null. */
		if (is_kept(w->string) || !cJSON_IsNull(g))
			return (-1);
		elided = 1;
	}
	if (g != NULL || w != NULL)
		return (-1);
	return (elided ? SHORT : WHOLE);
}

/*
 * The text p with every lone surrogate escape (a \uD800-\uDBFF not
 * followed by a \uDC00-\uDFFF, or a \uDC00-\uDFFF on its own) written as
 * \ufffd, allocated; *found says whether there was one. Backslashes
 * outside strings are not JSON, so reading every one as an escape is
 * safe: cJSON refuses such a text either way.
 */
static char *
repair_lone(const char *p, size_t len, int *found)
{
	char *q = malloc(len + 1);
	size_t i = 0;
	unsigned long hi, lo;

	*found = 0;
	if (q == NULL)
		abort();
	memcpy(q, p, len);
	q[len] = '\0';
	while (i + 1 < len) {
		if (q[i] != '\\') {
			i++;
			continue;
		}
		if (q[i + 1] != 'u' || i + 6 > len ||
		    sscanf(q + i + 2, "%4lx", &hi) != 1 ||
		    strspn(q + i + 2, "0123456789abcdefABCDEF") < 4) {
			i += 2;
			continue;
		}
		if (hi >= 0xD800 && hi <= 0xDBFF && i + 12 <= len &&
		    q[i + 6] == '\\' && q[i + 7] == 'u' &&
		    strspn(q + i + 8, "0123456789abcdefABCDEF") >= 4 &&
		    sscanf(q + i + 8, "%4lx", &lo) == 1 && lo >= 0xDC00 &&
		    lo <= 0xDFFF) {
			i += 12;
			continue;
		}
		if (hi >= 0xD800 && hi <= 0xDFFF) {
			memcpy(q + i + 2, "fffd", 4);
			*found = 1;
		}
		i += 6;
	}
	return (q);
}

/*
 * Compare got (meter_json_parse_request of p) with cJSON's reading of the
 * whole of p, as compare does, except that a text cJSON refuses only for
 * its lone surrogates is read as cJSON reads it with them repaired: the
 * check may take it, with a value holding one left out (SHORT), never
 * one it keeps. *wantp is the tree compared against (to be freed).
 */
static int
compare_body(const char *p, size_t len, const cJSON *got, cJSON **wantp)
{
	cJSON *want = meter_json_parse(p, len, 1), *fixed;
	char *q;
	int found, r;

	*wantp = want;
	if (want != NULL || got == NULL)
		return (compare(got, want));
	q = repair_lone(p, len, &found);
	fixed = found ? meter_json_parse(q, len, 1) : NULL;
	free(q);
	if (fixed == NULL)
		return (compare(got, want));
	r = compare(got, fixed);
	*wantp = fixed;
	return (r == SHORT ? SHORT : -1);
}

/*
 * With every name plain, spans[i] must be the first member named keep[i]
 * of want (cJSON's tree of the whole text p), or SIZE_MAX when it has
 * none: its name written there, its value text read as cJSON read it.
 * Returns 0, or -1 when a span is wrong.
 */
static int
check_spans(const char *p, size_t len, const cJSON *want,
    const struct json_member *spans, int plain)
{
	const struct json_member *jm;
	const cJSON *w;
	cJSON *v;
	size_t i, n;
	int ok;

	if (!plain || want == NULL || !cJSON_IsObject(want))
		return (0);
	for (i = 0; keep[i] != NULL; i++) {
		jm = &spans[i];
		for (w = want->child; w != NULL; w = w->next) {
			if (strcmp(w->string, keep[i]) == 0)
				break;
		}
		if (w == NULL) {
			if (jm->jm_val != SIZE_MAX)
				return (-1);
			continue;
		}
		n = strlen(keep[i]);
		if (jm->jm_val == SIZE_MAX || jm->jm_keyend > len ||
		    jm->jm_valend > len || jm->jm_val >= jm->jm_valend ||
		    jm->jm_keyend - jm->jm_key != n + 2 ||
		    p[jm->jm_key] != '"' ||
		    memcmp(p + jm->jm_key + 1, keep[i], n) != 0)
			return (-1);
		v = cJSON_ParseWithLength(
		    p + jm->jm_val, jm->jm_valend - jm->jm_val);
		ok = v != NULL && same(v, w);
		cJSON_Delete(v);
		if (!ok)
			return (-1);
	}
	return (0);
}

#endif
