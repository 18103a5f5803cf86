/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GET /v1/intents/{id}: one intent's timeline (src/spend/intent.c), read
 * on the local reader thread like /v1/calls, with the calls not yet in
 * SQLite among its rows. The id is the path's last segment,
 * percent-decoded, and must be a valid tag value; the only parameter is
 * limit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/http.h"
#include "tollgate/ledger.h"
#include "tollgate/spend.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

#include "admin_int.h"

/* Decode %XX escapes of s (len bytes) into out; -1 on a bad one or NUL. */
static int
pct_decode(const char *s, size_t len, char *out, size_t outlen)
{
	size_t i, o = 0;
	int hi, lo;

	for (i = 0; i < len; i++) {
		if (o + 1 >= outlen)
			return (-1);
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		if (i + 2 >= len)
			return (-1);
		if ((hi = hex_digit((unsigned char)s[i + 1])) < 0 ||
		    (lo = hex_digit((unsigned char)s[i + 2])) < 0 ||
		    (hi == 0 && lo == 0))
			return (-1);
		out[o++] = (char)(hi * 16 + lo);
		i += 2;
	}
	out[o] = '\0';
	return (0);
}

/* limit=N, the only parameter: 0, or the error for a 400. */
static const char *
parse_limit(const char *q, int *limit)
{
	const char *p;
	long v = 0;

	*limit = SPEND_INTENT_LIMIT_DEFAULT;
	if (q == NULL || *q == '\0')
		return (NULL);
	if (strncmp(q, "limit=", 6) != 0)
		return ("unknown parameter (expected limit)");
	for (p = q + 6; *p >= '0' && *p <= '9' && v <= SPEND_INTENT_LIMIT_MAX;
	     p++)
		v = v * 10 + (*p - '0');
	if (p == q + 6 || *p != '\0' || v < 1 || v > SPEND_INTENT_LIMIT_MAX)
		return ("limit must be a whole number from 1 to 5000");
	*limit = (int)v;
	return (NULL);
}

/* GET /v1/intents/{id}: the timeline, or 400 naming what is wrong. */
void
ep_intent(struct admin_req *ar)
{
	const char *target = ar->ar_req->hr_target, *p, *q, *err;
	struct admin_job *job;
	char id[TAG_VALUE_MAX + 1];
	size_t n;
	int limit;

	p = target + strlen(ADMIN_INTENTS_PREFIX);
	n = strcspn(p, "?");
	q = p[n] == '?' ? p + n + 1 : NULL;
	if (pct_decode(p, n, id, sizeof(id)) != 0 ||
	    !tag_value_ok(id, strlen(id))) {
		admin_reply_error(ar, 400,
		    "the intent must be 1 to 128 printable characters without "
		    "spaces, '*' or '?' (percent-encoded in the path)",
		    "intent", NULL, NULL);
		return;
	}
	if ((err = parse_limit(q, &limit)) != NULL) {
		admin_reply_error(ar, 400, err, "limit", NULL, NULL);
		return;
	}
	job = xcalloc(1, sizeof(*job));
	job->aj_kind = SPEND_KIND_CALLS;
	job->aj_query = xstrdup("");
	job->aj_intent = xstrdup(id);
	job->aj_limit = limit;
	job->aj_req = ar;
	/* Taken now: the reader must not touch the loop's table. */
	job->aj_nopen = ledger_unwritten(&job->aj_open);
	if (reader_submit(job) == -1) {
		admin_job_free(job);
		admin_reply_error(ar, 503, "too many queries in progress", NULL,
		    "Retry-After", "1");
		return;
	}
	ar->ar_job = job;
}
