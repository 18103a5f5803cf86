/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the spend and calls query-string parser, which reads
 * whatever an admin client sends: any input must parse or fail with a
 * cause, never crash, leak or read out of bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/log.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct spend_query q;
	enum spend_kind kind;
	char *qs, *cause = NULL;

	if (len == 0)
		return (0);
	kind = (data[0] & 1) ? SPEND_KIND_CALLS : SPEND_KIND_SPEND;
	qs = xmalloc(len);
	memcpy(qs, data + 1, len - 1);
	qs[len - 1] = '\0';
	if (spend_query_parse(&q, kind, qs, &cause) == 0)
		spend_query_free(&q);
	else if (cause == NULL)
		fatalx("spend_query_parse failed without a cause");
	free(cause);
	free(qs);
	return (0);
}
