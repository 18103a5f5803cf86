/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for meter_json_parse_request: for any text it must give the
 * answer cJSON gives for the whole text (NULL for the same texts, the same
 * top-level names in the same order, the same values for the members
 * metering reads, the others the same or null), and *plain only when every
 * member of the tree is found in the text by its name.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/log.h"
#include "tollgate/util.h"

#include "../../src/providers/providers.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char *const keep[] = {
    "model", "max_tokens", "stream_options", "generationConfig", NULL};

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

/* By printed text: cJSON_Compare finds no infinity equal to itself. */
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	const char *p = (const char *)data;
	const cJSON *g, *w;
	struct json_span js;
	cJSON *got, *want;
	size_t start;
	int plain;

	got = meter_json_parse_request(p, len, keep, &plain);
	want = meter_json_parse(p, len, 1);
	if ((got == NULL) != (want == NULL))
		fatalx("cJSON %s the text, the check %s it",
		    want == NULL ? "refuses" : "reads",
		    got == NULL ? "refuses" : "reads");
	if (got == NULL)
		return (0);
	if (!cJSON_IsObject(want)) {
		if (!same(got, want))
			fatalx("a text that is not an object reads otherwise");
		goto done;
	}
	start = meter_json_ws(p, len, 0);
	for (g = got->child, w = want->child; g != NULL && w != NULL;
	     g = g->next, w = w->next) {
		if (g->string == NULL || w->string == NULL ||
		    strcmp(g->string, w->string) != 0)
			fatalx("the names differ");
		if (!same(g, w) && (is_kept(w->string) || !cJSON_IsNull(g)))
			fatalx("member %s differs", w->string);
		if (plain &&
		    meter_json_member(p + start, len - start, w->string, &js) !=
			1)
			fatalx("plain, but %s is not found by its name",
			    w->string);
	}
	if (g != NULL || w != NULL)
		fatalx("the member counts differ");
done:
	cJSON_Delete(got);
	cJSON_Delete(want);
	return (0);
}
