/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API's budget extensions: POST /v1/budgets/extend raises one
 * budget scope's cap for its current window, GET /v1/budgets/extensions
 * lists the live extensions, DELETE /v1/budgets/extensions/{id} revokes
 * one. The extensions themselves are src/policy/extensions.c's; this
 * file reads and answers the requests on the loop thread, behind
 * admin.c's Host, Origin and token checks, and tells the fleet (if any)
 * of each one made or revoked here, so every instance applies it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "tollgate/config.h"
#include "tollgate/extensions.h"
#include "tollgate/fleet.h"
#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "admin_int.h"

static void
list_cb(const struct extension *x, void *arg)
{
	cJSON_AddItemToArray(arg, extensions_json(x));
}

/* GET /v1/budgets/extensions: {"extensions":[...]}, live, oldest first. */
void
ep_extensions_list(struct admin_req *ar)
{
	cJSON *doc, *list;

	extensions_expire(wallclock_ms());
	if ((doc = cJSON_CreateObject()) == NULL ||
	    (list = cJSON_AddArrayToObject(doc, "extensions")) == NULL)
		fatalx("%s: cJSON", __func__);
	extensions_each(list_cb, list);
	admin_reply_json(ar, 200, doc);
}

/* The policy of the configuration in force named name, or NULL. */
static const struct policy *
policy_named(const char *name)
{
	const struct config *cf = config_current();
	size_t i;

	if (cf == NULL || cf->cf_policies == NULL)
		return (NULL);
	for (i = 0; i < cf->cf_policies->ps_n; i++)
		if (strcmp(cf->cf_policies->ps_pol[i].po_name, name) == 0)
			return (&cf->cf_policies->ps_pol[i]);
	return (NULL);
}

/*
 * expires: a duration from now ("2h") or an RFC 3339 time, into *ms
 * (POLICY_NEVER when absent or null). -1 if it is neither.
 */
static int
expires_field(const cJSON *it, int64_t now, int64_t *ms)
{
	int64_t d;

	*ms = POLICY_NEVER;
	if (it == NULL || cJSON_IsNull(it))
		return (0);
	if (!cJSON_IsString(it) || strlen(it->valuestring) > 64)
		return (-1);
	if (policy_parse_duration(it->valuestring, &d) == 0) {
		*ms = now + d;
		return (0);
	}
	return (spend_parse_time(it->valuestring, 0, ms) != 0 ? -1 : 0);
}

/* A required string field, or NULL. */
static const char *
str_field(const cJSON *body, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(body, name);

	return (cJSON_IsString(it) ? it->valuestring : NULL);
}

/*
 * POST /v1/budgets/extend {"policy","scope","usd","reason","by",
 * "expires"}: 201 with the extension once the ledger has it (202 when not
 * within ADMIN_RECORD_WAIT_MS); 400 naming the bad field.
 */
void
ep_extend(struct admin_req *ar)
{
	static const char *const fields[] = {
	    "policy", "scope", "usd", "reason", "by", "expires"};
	struct evbuffer *b = ar->ar_req->hr_body;
	const struct extension *x;
	const struct policy *po;
	const char *per[TAG_MAX], *v, *err = NULL;
	const cJSON *it;
	cJSON *body = NULL;
	char param[64], *why = NULL;
	size_t i, len = b != NULL ? evbuffer_get_length(b) : 0;
	int64_t nusd, expires, now = wallclock_ms();
	int status = 400;

	param[0] = '\0';
	if (len == 0 ||
	    (body = cJSON_ParseWithLength(
		 (const char *)evbuffer_pullup(b, -1), len)) == NULL) {
		admin_reply_error(
		    ar, 400, "the body is not JSON", NULL, NULL, NULL);
		return;
	}
	if (!cJSON_IsObject(body)) {
		err = "the body must be a JSON object";
		goto bad;
	}
	cJSON_ArrayForEach(it, body)
	{
		for (i = 0; i < nitems(fields); i++)
			if (strcmp(it->string, fields[i]) == 0)
				break;
		snprintf(param, sizeof(param), "%.60s", it->string);
		if (i == nitems(fields)) {
			err = "unknown field (expected policy, scope, usd, "
			      "reason, by, expires)";
			goto bad;
		}
		/* cJSON would read the first; the sender may mean the last. */
		if (cJSON_GetObjectItemCaseSensitive(body, it->string) != it) {
			err = "field given twice";
			goto bad;
		}
	}
	snprintf(param, sizeof(param), "policy");
	if ((v = str_field(body, "policy")) == NULL) {
		err = "policy is required: the name of a policy with a "
		      "hard_cap_usd";
		goto bad;
	}
	if ((po = policy_named(v)) == NULL) {
		err = "no policy in force has this name";
		goto bad;
	}
	if (po->po_cap_nusd == -1) {
		err = "this policy has no hard_cap_usd to extend";
		goto bad;
	}
	if (extensions_scope(po,
		cJSON_GetObjectItemCaseSensitive(body, "scope"), per, param,
		sizeof(param), &why) != 0)
		goto bad;
	snprintf(param, sizeof(param), "usd");
	if ((v = str_field(body, "usd")) == NULL ||
	    policy_parse_usd(v, &nusd) != 0 || nusd <= 0 ||
	    nusd > EXTENSION_MAX_NUSD) {
		err = "usd must be a decimal string of USD with at most nine "
		      "decimals, more than 0 and at most \"1000000\" (a JSON "
		      "number is refused: money is never a float)";
		goto bad;
	}
	snprintf(param, sizeof(param), "reason");
	if (str_field(body, "reason") == NULL) {
		err = "reason is required: why the budget is raised";
		goto bad;
	}
	snprintf(param, sizeof(param), "by");
	if (str_field(body, "by") == NULL) {
		err = "by is required: who grants the extension";
		goto bad;
	}
	snprintf(param, sizeof(param), "expires");
	if (expires_field(cJSON_GetObjectItemCaseSensitive(body, "expires"),
		now, &expires) != 0) {
		err = "expires must be a duration such as 90m, 2h or 7d, or "
		      "an RFC 3339 time";
		goto bad;
	}
	if (extensions_count() >= EXTENSIONS_MAX)
		extensions_expire(now);
	if (extensions_count() >= EXTENSIONS_MAX) {
		status = 409;
		err = "too many live extensions; revoke some";
		param[0] = '\0';
		goto bad;
	}
	if (extensions_add(po, per, nusd, str_field(body, "reason"),
		str_field(body, "by"), expires, now, &x, &why) != 0) {
		if (strncmp(why, "the ledger", 10) == 0) {
			status = 503;
			param[0] = '\0';
		} else if (strncmp(why, "reason", 6) == 0 ||
		    strncmp(why, "by", 2) == 0 ||
		    strncmp(why, "expires", 7) == 0)
			snprintf(param, sizeof(param), "%.*s",
			    (int)strcspn(why, ":"), why);
		goto bad;
	}
	cJSON_Delete(body);
	fleet_extension_added(x);
	/* In force now; the answer says whether the ledger has it too. */
	admin_reply_recorded(ar, 201, extensions_json(x));
	return;
bad:
	cJSON_Delete(body);
	if (why != NULL)
		log_info("admin: conn %llu: extension refused: %s",
		    ar->ar_conn_id, why);
	admin_reply_error(ar, status, why != NULL ? why : err,
	    param[0] != '\0' ? param : NULL, NULL, NULL);
	free(why);
}

/* DELETE /v1/budgets/extensions/{id}: 200 with the extension, or 404. */
void
ep_extension_revoke(struct admin_req *ar)
{
	const char *p;
	const struct extension *x = NULL;
	cJSON *doc;
	char id[32];
	size_t n;
	int64_t now = wallclock_ms();

	p = ar->ar_req->hr_target + strlen(ADMIN_EXTENSIONS_PREFIX);
	n = strcspn(p, "?");
	if (n < sizeof(id)) {
		memcpy(id, p, n);
		id[n] = '\0';
		x = extensions_find(id, now);
	}
	if (x == NULL) {
		admin_reply_error(ar, 404, "no live extension with this id",
		    NULL, NULL, NULL);
		return;
	}
	doc = extensions_json(x);
	if (extensions_revoke(id, now) != 0)
		fatalx("%s: an extension found cannot be revoked", __func__);
	fleet_extension_revoked(id);
	admin_reply_recorded(ar, 200, doc);
}
