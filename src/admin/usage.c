/* SPDX-License-Identifier: Apache-2.0 */
/*
 * POST /v1/usage: a cost that is not an LLM call (a search API, a tool,
 * compute minutes, a SaaS seat), reported against an intent and its tags.
 * This file reads and checks the request on the loop thread, behind
 * admin.c's Host, Origin and token checks; src/external/ records and
 * counts the cost. Money is never a float: cost_usd is a decimal string,
 * units a whole number priced from the price file's external: table.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "tollgate/attribution.h"
#include "tollgate/config.h"
#include "tollgate/external.h"
#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

#include "admin_int.h"

/* The most units one request may report. */
#define USAGE_UNITS_MAX 1000000000LL

static void
usage_done(void *arg, enum external_result res, int64_t nusd)
{
	struct admin_req *ar = arg;
	char usd[32], n[32];
	cJSON *doc;

	ar->ar_ext = NULL;
	admin_deadline_clear(ar);
	if (res == EXTERNAL_UNAVAILABLE) {
		admin_reply_error(ar, 503,
		    "the ledger could not record the cost; retry with the same "
		    "id",
		    NULL, NULL, NULL);
		return;
	}
	doc = cJSON_CreateObject();
	cJSON_AddStringToObject(doc, "id", ar->ar_usage_id);
	if (res == EXTERNAL_DUPLICATE) {
		/* Recorded before: counted once, whatever this one says. */
		cJSON_AddBoolToObject(doc, "duplicate", 1);
		admin_reply_json(ar, 200, doc);
		return;
	}
	/* An integer, never a double: exact above 2^53 too. */
	snprintf(n, sizeof(n), "%lld", (long long)nusd);
	cJSON_AddRawToObject(doc, "cost_nusd", n);
	usd_format(usd, sizeof(usd), nusd);
	cJSON_AddRawToObject(doc, "cost_usd", usd);
	cJSON_AddBoolToObject(doc, "duplicate", 0);
	admin_reply_recorded(ar, 201, doc);
}

/*
 * The ledger has not answered within ADMIN_RECORD_WAIT_MS (its file is
 * locked or failing): say so now. The cost goes on being recorded; a
 * retry with its id answers 409 until it is, then duplicate.
 */
static void
usage_timeout(int fd, short ev, void *arg)
{
	struct admin_req *ar = arg;

	(void)fd;
	(void)ev;
	external_cancel(ar->ar_ext);
	ar->ar_ext = NULL;
	admin_reply_error(ar, 503,
	    "the ledger has not answered in time; the cost may yet be "
	    "recorded: retry with the same id",
	    NULL, "Retry-After", "1");
}

/* A string field, or NULL when absent or null; err when not a string. */
static const char *
str_field(const cJSON *body, const char *name, const char **err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);

	if (v == NULL || cJSON_IsNull(v))
		return (NULL);
	if (!cJSON_IsString(v)) {
		*err = "must be a string";
		return (NULL);
	}
	return (v->valuestring);
}

static const char *const usage_fields[] = {"id", "source", "unit", "units",
    "cost_usd", "intent", "team", "tenant", "agent_class", "environment"};

/*
 * Read body into *ec (its strings borrowed from body). NULL, or what is
 * wrong, with the field in param.
 */
static const char *
usage_parse(const cJSON *body, const struct config *cf,
    struct external_cost *ec, char *param, size_t plen)
{
	const cJSON *it, *u;
	const char *err = NULL, *s;
	size_t i;
	int t, known;

	memset(ec, 0, sizeof(*ec));
	ec->ec_nusd = -1;
	if (!cJSON_IsObject(body))
		return ("the body must be a JSON object");
	cJSON_ArrayForEach(it, body)
	{
		for (i = 0, known = 0; i < nitems(usage_fields); i++)
			known |= strcmp(it->string, usage_fields[i]) == 0;
		snprintf(param, plen, "%.60s", it->string);
		if (!known)
			return ("unknown field (expected id, source, unit, "
				"units, cost_usd and the tags)");
		/* cJSON would read the first; the sender may mean the last. */
		if (cJSON_GetObjectItemCaseSensitive(body, it->string) != it)
			return ("field given twice");
	}
	snprintf(param, plen, "id");
	ec->ec_id = str_field(body, "id", &err);
	if (err != NULL || ec->ec_id == NULL ||
	    !attribution_request_id_ok(ec->ec_id))
		return ("id is required: 1 to 64 of A-Z a-z 0-9 . _ : -, "
			"unique to this cost (a retry sends the same one)");
	snprintf(param, plen, "source");
	ec->ec_source = str_field(body, "source", &err);
	if (err != NULL || ec->ec_source == NULL ||
	    !pricing_external_name_ok(ec->ec_source))
		return ("source is required: 1 to 64 of a-z 0-9 _ . - (the "
			"API, tool or service the cost is for)");
	snprintf(param, plen, "unit");
	ec->ec_unit = str_field(body, "unit", &err);
	if (err != NULL ||
	    (ec->ec_unit != NULL && !pricing_external_name_ok(ec->ec_unit)))
		return ("unit must be 1 to 64 of a-z 0-9 _ . -");
	snprintf(param, plen, "cost_usd");
	u = cJSON_GetObjectItemCaseSensitive(body, "cost_usd");
	if (u != NULL && !cJSON_IsNull(u)) {
		if (!cJSON_IsString(u) ||
		    policy_parse_usd(u->valuestring, &ec->ec_nusd) != 0)
			return ("cost_usd must be a decimal string of USD with "
				"at most 9 decimals, such as \"0.015\" (never "
				"a JSON number: money is not a float)");
	}
	snprintf(param, plen, "units");
	u = cJSON_GetObjectItemCaseSensitive(body, "units");
	if (u != NULL && !cJSON_IsNull(u)) {
		if (!cJSON_IsNumber(u) || u->valuedouble < 1 ||
		    u->valuedouble > (double)USAGE_UNITS_MAX ||
		    (double)(int64_t)u->valuedouble != u->valuedouble)
			return ("units must be a whole number from 1 to "
				"1000000000");
		ec->ec_units = (int64_t)u->valuedouble;
		if (ec->ec_unit == NULL) {
			snprintf(param, plen, "unit");
			return ("units need their unit");
		}
	}
	if ((ec->ec_nusd >= 0) == (ec->ec_units > 0)) {
		snprintf(param, plen, "cost_usd");
		return ("give either cost_usd, or units (with unit) priced "
			"from the price file's external: table");
	}
	for (t = 0; t < TAG_MAX; t++) {
		snprintf(param, plen, "%s", tag_name(t));
		s = str_field(body, tag_name(t), &err);
		if (err != NULL ||
		    (s != NULL &&
			(s[0] == '\0' || !tag_value_ok(s, strlen(s)))))
			return ("a tag must be 1 to 128 printable characters "
				"without spaces, '*' or '?'");
		if (s == NULL)
			s = cf->cf_tag_default[t];
		if (s == NULL && cf->cf_tag_required[t])
			return ("this tag is required (attribution)");
		ec->ec_tags[t] = s;
	}
	param[0] = '\0';
	return (NULL);
}

/*
 * POST /v1/usage {"id","source","unit","units"|"cost_usd", tags}: 201
 * with the cost once it is recorded, 200 with "duplicate": true when its
 * id was recorded before (counted once), 400 naming a bad field.
 */
void
ep_usage(struct admin_req *ar)
{
	struct evbuffer *b = ar->ar_req->hr_body;
	struct external_cost ec;
	enum external_refusal why;
	const char *err;
	cJSON *body = NULL;
	char param[64], *cause = NULL;
	size_t len = b != NULL ? evbuffer_get_length(b) : 0;

	if (len == 0 ||
	    (body = cJSON_ParseWithLength(
		 (const char *)evbuffer_pullup(b, -1), len)) == NULL) {
		admin_reply_error(
		    ar, 400, "the body is not JSON", NULL, NULL, NULL);
		return;
	}
	if ((err = usage_parse(
		 body, config_current(), &ec, param, sizeof(param))) != NULL) {
		admin_reply_error(
		    ar, 400, err, param[0] != '\0' ? param : NULL, NULL, NULL);
		cJSON_Delete(body);
		return;
	}
	snprintf(ar->ar_usage_id, sizeof(ar->ar_usage_id), "%s", ec.ec_id);
	ar->ar_ext = external_record(&ec, usage_done, ar, &why, &cause);
	cJSON_Delete(body);
	if (ar->ar_ext != NULL) {
		admin_deadline(ar, usage_timeout);
		return;
	}
	log_warnx("admin: conn %llu: usage refused: %s", ar->ar_conn_id, cause);
	switch (why) {
	case EXTERNAL_IN_PROGRESS:
		admin_reply_error(ar, 409, cause, "id", "Retry-After", "1");
		break;
	case EXTERNAL_BUSY:
		admin_reply_error(ar, 503, cause, NULL, "Retry-After", "1");
		break;
	case EXTERNAL_BAD_UNIT:
		admin_reply_error(ar, 400, cause, "unit", NULL, NULL);
		break;
	case EXTERNAL_BAD_AMOUNT:
		admin_reply_error(ar, 400, cause,
		    ec.ec_units > 0 ? "units" : "cost_usd", NULL, NULL);
		break;
	}
	free(cause);
}
