/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API's kill switches: POST /v1/kills makes a runtime kill
 * (globs on the call attributes, a reason, an optional TTL), GET lists
 * the live ones, DELETE /v1/kills/{id} lifts one. The kills themselves
 * are src/policy/kills.c's; this file reads and answers the requests on the loop
 * thread, behind admin.c's Host, Origin and token checks, and tells the
 * fleet (if any) of each kill made or lifted here, so every instance
 * applies it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "tollgate/fleet.h"
#include "tollgate/http.h"
#include "tollgate/kills.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "admin_int.h"

static void
kills_list_cb(const struct kill *k, void *arg)
{
	cJSON_AddItemToArray(arg, kills_json(k));
}

/* GET /v1/kills: {"kills":[...]}, the live kills, oldest first. */
void
ep_kills_list(struct admin_req *ar)
{
	cJSON *doc, *list;

	kills_expire(wallclock_ms());
	if ((doc = cJSON_CreateObject()) == NULL ||
	    (list = cJSON_AddArrayToObject(doc, "kills")) == NULL)
		fatalx("%s: cJSON", __func__);
	kills_each(kills_list_cb, list);
	admin_reply_json(ar, 200, doc);
}

/*
 * The match object of a POST /v1/kills body into match[]: known
 * attributes only, each a non-empty string of at most POLICY_GLOB_MAX
 * bytes. NULL, or the message of a 400 with *param the field.
 */
static const char *
kills_body_match(const cJSON *m, const char *match[POLICY_ATTR_MAX],
    char *param, size_t plen)
{
	static const char *names[POLICY_ATTR_MAX] = {"intent", "team", "tenant",
	    "agent_class", "environment", "model", "provider"};
	const cJSON *it;
	size_t len;
	int a, any = 0;

	snprintf(param, plen, "match");
	if (m == NULL || cJSON_IsNull(m))
		return ("match is required: an object of attribute to pattern, "
			"such as {\"agent_class\":\"researcher\"}; "
			"{\"team\":\"*\"} stops every call");
	if (!cJSON_IsObject(m))
		return ("match must be an object of attribute to pattern");
	cJSON_ArrayForEach(it, m)
	{
		for (a = 0; a < POLICY_ATTR_MAX; a++)
			if (strcmp(it->string, names[a]) == 0)
				break;
		if (a == POLICY_ATTR_MAX) {
			snprintf(param, plen, "match.%.40s", it->string);
			return ("unknown attribute (expected intent, team, "
				"tenant, agent_class, environment, model or "
				"provider)");
		}
		snprintf(param, plen, "match.%s", names[a]);
		if (match[a] != NULL)
			return ("attribute given twice");
		if (!cJSON_IsString(it) ||
		    (len = strlen(it->valuestring)) == 0 ||
		    len > POLICY_GLOB_MAX)
			return ("a pattern must be a string of 1 to 128 bytes");
		match[a] = it->valuestring;
		any = 1;
	}
	if (!any) {
		snprintf(param, plen, "match");
		return ("match is empty: name at least one attribute; "
			"{\"team\":\"*\"} stops every call");
	}
	return (NULL);
}

/*
 * POST /v1/kills {"match":{...},"reason":"...","ttl":"2h"}: 201 with the
 * kill. reason is optional; ttl is optional (none: until deleted).
 */
void
ep_kills_add(struct admin_req *ar)
{
	struct evbuffer *b = ar->ar_req->hr_body;
	const char *match[POLICY_ATTR_MAX] = {NULL}, *reason, *err = NULL;
	const cJSON *it, *r, *t;
	const struct kill *k;
	cJSON *body = NULL;
	char param[64], *why = NULL;
	size_t len = b != NULL ? evbuffer_get_length(b) : 0;
	int64_t ttl = -1, now = wallclock_ms();

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
		if (strcmp(it->string, "match") != 0 &&
		    strcmp(it->string, "reason") != 0 &&
		    strcmp(it->string, "ttl") != 0) {
			snprintf(param, sizeof(param), "%.60s", it->string);
			err = "unknown field (expected match, reason, ttl)";
			goto bad;
		}
		/* cJSON would read the first; the sender may mean the last. */
		if (cJSON_GetObjectItemCaseSensitive(body, it->string) != it) {
			snprintf(param, sizeof(param), "%s", it->string);
			err = "field given twice";
			goto bad;
		}
	}
	if ((err = kills_body_match(
		 cJSON_GetObjectItemCaseSensitive(body, "match"), match, param,
		 sizeof(param))) != NULL)
		goto bad;
	reason = "killed through the admin API";
	r = cJSON_GetObjectItemCaseSensitive(body, "reason");
	if (r != NULL && !cJSON_IsNull(r)) {
		snprintf(param, sizeof(param), "reason");
		if (!cJSON_IsString(r) || r->valuestring[0] == '\0' ||
		    strlen(r->valuestring) > KILL_REASON_MAX) {
			err = "reason must be a string of 1 to 512 bytes";
			goto bad;
		}
		reason = r->valuestring;
	}
	t = cJSON_GetObjectItemCaseSensitive(body, "ttl");
	if (t != NULL && !cJSON_IsNull(t)) {
		snprintf(param, sizeof(param), "ttl");
		if (!cJSON_IsString(t) ||
		    policy_parse_duration(t->valuestring, &ttl) != 0) {
			err = "ttl must be a duration such as 90s, 10m, 2h or "
			      "7d (at most 366d)";
			goto bad;
		}
	}
	if (kills_count() >= KILLS_MAX)
		kills_expire(now);
	if (kills_count() >= KILLS_MAX) {
		cJSON_Delete(body);
		admin_reply_error(ar, 409, "too many live kills; delete some",
		    NULL, NULL, NULL);
		return;
	}
	if (kills_add(match, reason, "api", ttl, now, &k, &why) == -1) {
		cJSON_Delete(body);
		log_warnx(
		    "admin: conn %llu: kill refused: %s", ar->ar_conn_id, why);
		admin_reply_error(ar,
		    strncmp(why, "the ledger", 10) == 0 ? 503 : 400, why, NULL,
		    NULL, NULL);
		free(why);
		return;
	}
	cJSON_Delete(body);
	fleet_kill_added(k);
	/* In force now; the answer says whether the ledger has it too. */
	admin_reply_recorded(ar, 201, kills_json(k));
	return;
bad:
	cJSON_Delete(body);
	admin_reply_error(
	    ar, 400, err, param[0] != '\0' ? param : NULL, NULL, NULL);
}

/* DELETE /v1/kills/{id}: 200 with the kill lifted, or 404. */
void
ep_kill_delete(struct admin_req *ar)
{
	const char *target = ar->ar_req->hr_target, *p;
	const struct kill *k;
	cJSON *doc;
	char id[32];
	size_t n;
	int64_t now = wallclock_ms();

	p = target + strlen(ADMIN_KILLS_PREFIX);
	n = strcspn(p, "?");
	k = NULL;
	if (n < sizeof(id)) {
		memcpy(id, p, n);
		id[n] = '\0';
		k = kills_find(id, now);
	}
	if (k == NULL) {
		admin_reply_error(
		    ar, 404, "no live kill with this id", NULL, NULL, NULL);
		return;
	}
	doc = kills_json(k);
	if (kills_remove(id, now) != 0)
		fatalx("%s: a kill found cannot be removed", __func__);
	fleet_kill_lifted(id);
	admin_reply_recorded(ar, 200, doc);
}
