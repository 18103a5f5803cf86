/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fields kills and budget extensions are read back from: the JSON a
 * fleet shares (it comes from the network, so each field is read as
 * strictly as an admin request reads it) and the rows of their ledger
 * tables. One reading for both lists, so a kill and an extension from
 * Redis or from the file are held to the same rules.
 */
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "tollgate/policy.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "policy_int.h"

/*
 * A time field into *ms: RFC 3339 text, or, if may_null, absent or null
 * for POLICY_NEVER (lasts until lifted). 0, or -1 when it is neither.
 */
int
pfield_time(const cJSON *it, int may_null, int64_t *ms)
{
	if (may_null && (it == NULL || cJSON_IsNull(it))) {
		*ms = POLICY_NEVER;
		return (0);
	}
	if (!cJSON_IsString(it) || strlen(it->valuestring) > 64 ||
	    spend_parse_time(it->valuestring, 0, ms) != 0)
		return (-1);
	return (0);
}

/* The string of a text field of 1 to max bytes (utf8_text_ok), or NULL. */
const char *
pfield_text(const cJSON *it, size_t max)
{
	if (!cJSON_IsString(it) || it->valuestring[0] == '\0' ||
	    !utf8_text_ok(it->valuestring, max))
		return (NULL);
	return (it->valuestring);
}

/* Column i of a row as text, or NULL. */
const char *
pfield_col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return (t != NULL ? (const char *)t : NULL);
}
