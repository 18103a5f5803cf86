/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for meter_json_parse_request: for any text it must give the
 * answer cJSON gives for the whole text (NULL for the same texts, the same
 * top-level names in the same order, the same values for the members
 * metering reads, the others the same or null), and *plain only when every
 * member of the tree is found in the text by its name, and then the spans
 * of the kept names where those members are written.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/log.h"
#include "tollgate/util.h"

#include "../../src/meter/providers/providers.h"
#include "../unit/jsoncompare.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct json_member spans[nitems(keep)];
	const char *p = (const char *)data;
	const cJSON *w;
	struct json_span js;
	cJSON *got, *want;
	size_t start;
	int plain;

	got = meter_json_parse_request(p, len, keep, spans, &plain);
	if (compare_body(p, len, got, &want) == -1)
		fatalx("the check and cJSON read the text differently");
	if (check_spans(p, len, want, spans, plain) == -1)
		fatalx("plain, but a kept member is not where its span says");
	if (got == NULL || !cJSON_IsObject(want))
		goto done;
	start = meter_json_ws(p, len, 0);
	for (w = want->child; plain && w != NULL; w = w->next) {
		if (meter_json_member(p + start, len - start, w->string, &js) !=
		    1)
			fatalx("plain, but %s is not found by its name",
			    w->string);
	}
done:
	cJSON_Delete(got);
	cJSON_Delete(want);
	return (0);
}
