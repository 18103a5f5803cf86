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
#include <string.h>

#include <cjson/cJSON.h>

#include "../../src/providers/providers.h"

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
