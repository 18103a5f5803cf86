/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runtime kill switches: the list of live kills, the hot-path match, and
 * their persistence. The list is an array of pointers in creation order,
 * at most KILLS_MAX long, so a kill's address never moves while it lives;
 * kills_match costs one comparison when there are no kills and a glob
 * match per live kill otherwise. Every change is queued to the ledger's
 * writer thread (ledger_kill_add, ledger_kill_delete): SQLite never runs
 * on the loop thread except in kills_load at start-up. An expired kill
 * needs no write: kills_load skips what has expired by the time it reads.
 *
 * Kills made by a breaker are deduplicated: while a kill with the same
 * source and the same match is live, another trip returns it instead of
 * adding a second one (a restart forgets the breaker's own memory, the
 * kills table does not). Kills from the admin API are never merged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "tollgate/breaker.h"
#include "tollgate/kills.h"
#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "policy_int.h"

static const char *const attr_names[POLICY_ATTR_MAX] = {"intent", "team",
    "tenant", "agent_class", "environment", "model", "provider"};

static struct kill *kl_list[KILLS_MAX]; /* creation order */
static size_t kl_n;
static void (*kl_hook)(const struct kill *, void *);
static void *kl_hook_arg;

static void
kill_free(struct kill *k)
{
	int a;

	if (k == NULL)
		return;
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		free(k->k_match[a]);
	free(k->k_reason);
	free(k->k_source);
	free(k->k_origin);
	free(k);
}

static int
kill_live(const struct kill *k, int64_t now)
{
	return (k->k_expires_ms == POLICY_NEVER || k->k_expires_ms > now);
}

/* Does a call with attributes attr match every pattern of k? */
static int
kill_matches(const struct kill *k, const char *const *attr)
{
	const char *v;
	int a;

	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if (k->k_match[a] == NULL)
			continue;
		v = attr[a] != NULL ? attr[a] : "";
		if (!policy_glob(k->k_match[a], v))
			return (0);
	}
	return (1);
}

/* The first live kill that matches a call, or NULL: the hot path. */
const struct kill *
kills_match(const char *const *attr, int64_t now)
{
	size_t i;

	if (kl_n == 0)
		return (NULL);
	for (i = 0; i < kl_n; i++)
		if (kill_live(kl_list[i], now) &&
		    kill_matches(kl_list[i], attr))
			return (kl_list[i]);
	return (NULL);
}

/* The live kill with this id, or NULL. */
const struct kill *
kills_find(const char *id, int64_t now)
{
	size_t i;

	for (i = 0; id != NULL && i < kl_n; i++)
		if (strcmp(kl_list[i]->k_id, id) == 0 &&
		    kill_live(kl_list[i], now))
			return (kl_list[i]);
	return (NULL);
}

/* How many kills are in the list (expired ones until kills_expire). */
size_t
kills_count(void)
{
	return (kl_n);
}

/*
 * The match as a JSON object {"agent_class":"researcher",...}, in the
 * fixed attribute order; a string to free.
 */
char *
kills_match_json(char *const *match)
{
	cJSON *o;
	char *s, *out;
	int a;

	if ((o = cJSON_CreateObject()) == NULL)
		fatalx("%s: cJSON", __func__);
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		if (match[a] != NULL &&
		    cJSON_AddStringToObject(o, attr_names[a], match[a]) == NULL)
			fatalx("%s: cJSON", __func__);
	if ((s = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: cJSON", __func__);
	cJSON_Delete(o);
	out = xstrdup(s);
	cJSON_free(s);
	return (out);
}

static void
add_time(cJSON *o, const char *name, int64_t ms)
{
	char buf[SPEND_TIME_MAX];

	if (ms == POLICY_NEVER ||
	    spend_format_time(ms, buf, sizeof(buf)) != 0) {
		if (cJSON_AddNullToObject(o, name) == NULL)
			fatalx("%s: cJSON", __func__);
	} else if (cJSON_AddStringToObject(o, name, buf) == NULL)
		fatalx("%s: cJSON", __func__);
}

/*
 * A kill as the admin API shows it: id, match, reason, source, created_at
 * and expires_at (RFC 3339 UTC, or null when it lasts until deleted).
 */
cJSON *
kills_json(const struct kill *k)
{
	cJSON *o, *m;
	int a;

	if ((o = cJSON_CreateObject()) == NULL ||
	    cJSON_AddStringToObject(o, "id", k->k_id) == NULL ||
	    (m = cJSON_AddObjectToObject(o, "match")) == NULL)
		fatalx("%s: cJSON", __func__);
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		if (k->k_match[a] != NULL &&
		    cJSON_AddStringToObject(m, attr_names[a], k->k_match[a]) ==
			NULL)
			fatalx("%s: cJSON", __func__);
	if (cJSON_AddStringToObject(o, "reason", k->k_reason) == NULL ||
	    cJSON_AddStringToObject(o, "source", k->k_source) == NULL)
		fatalx("%s: cJSON", __func__);
	add_time(o, "created_at", k->k_created_ms);
	add_time(o, "expires_at", k->k_expires_ms);
	if (k->k_origin != NULL &&
	    cJSON_AddStringToObject(o, "instance", k->k_origin) == NULL)
		fatalx("%s: cJSON", __func__);
	return (o);
}

/* A random id "k_" + 16 hex that no kill in the list has. */
static void
kill_new_id(char *buf, size_t len)
{
	do
		random_id(buf, len, 'k');
	while (kills_find(buf, INT64_MIN) != NULL);
}

/* A breaker's kill while one with the same source and match is live. */
static struct kill *
kill_same(const char *const *match, const char *source, int64_t now)
{
	struct kill *k;
	size_t i;
	int a;

	for (i = 0; i < kl_n; i++) {
		k = kl_list[i];
		if (!kill_live(k, now) || strcmp(k->k_source, source) != 0)
			continue;
		for (a = 0; a < POLICY_ATTR_MAX; a++) {
			if ((k->k_match[a] == NULL) != (match[a] == NULL))
				break;
			if (match[a] != NULL &&
			    strcmp(k->k_match[a], match[a]) != 0)
				break;
		}
		if (a == POLICY_ATTR_MAX)
			return (k);
	}
	return (NULL);
}

/* Queue k to the ledger's kills table; -1 if the ledger is not open. */
static int
kill_keep(const struct kill *k)
{
	struct ledger_kill lk;
	char *json;
	int rv;

	json = kills_match_json(k->k_match);
	memset(&lk, 0, sizeof(lk));
	lk.lk_id = k->k_id;
	lk.lk_created_ms = k->k_created_ms;
	lk.lk_expires_ms =
	    k->k_expires_ms == POLICY_NEVER ? 0 : k->k_expires_ms;
	lk.lk_match = json;
	lk.lk_reason = k->k_reason;
	lk.lk_source = k->k_source;
	rv = ledger_kill_add(&lk) != 0 ? -1 : 0;
	free(json);
	return (rv);
}

/*
 * Add a kill matching match (POLICY_ATTR_MAX globs, NULL for any; at least
 * one set) for ttl_ms from now (-1: until deleted), queue it to the
 * ledger and run the hook. A NULL reason becomes "killed". Returns 0 with
 * *out the new kill; 1 with *out an identical live kill of the same
 * breaker source (nothing added, no hook); -1 with *why (to free).
 */
int
kills_add(const char *const *match, const char *reason, const char *source,
    int64_t ttl_ms, int64_t now, const struct kill **out, char **why)
{
	struct kill *k;
	char until[SPEND_TIME_MAX], esc[160];
	int a, any = 0;

	*out = NULL;
	if (reason == NULL)
		reason = "killed";
	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if (match[a] == NULL)
			continue;
		any = 1;
		if (!utf8_text_ok(match[a], POLICY_GLOB_MAX)) {
			xasprintf(why,
			    "match.%s: at most %d bytes of UTF-8, no control "
			    "characters",
			    attr_names[a], POLICY_GLOB_MAX);
			return (-1);
		}
	}
	if (!any) {
		*why =
		    xstrdup("a kill needs a match on at least one attribute");
		return (-1);
	}
	if (!utf8_text_ok(reason, KILL_REASON_MAX)) {
		xasprintf(why,
		    "reason: at most %d bytes of UTF-8, no control "
		    "characters",
		    KILL_REASON_MAX);
		return (-1);
	}
	if (source == NULL || *source == '\0' ||
	    !utf8_text_ok(source, KILL_SOURCE_MAX)) {
		*why = xstrdup("a kill needs a source");
		return (-1);
	}
	if (ttl_ms != -1 && (ttl_ms <= 0 || ttl_ms > INT64_MAX / 2 - now)) {
		*why = xstrdup("ttl out of range");
		return (-1);
	}
	if (strncmp(source, "breaker:", 8) == 0 &&
	    (*out = kill_same(match, source, now)) != NULL)
		return (1);
	if (kl_n >= KILLS_MAX)
		kills_expire(now);
	if (kl_n >= KILLS_MAX) {
		xasprintf(why, "too many live kills (at most %d)", KILLS_MAX);
		return (-1);
	}
	/* Breakers, which callers can set off, leave room for operators. */
	if (strncmp(source, "breaker:", 8) == 0 &&
	    kl_n >= KILLS_MAX - KILLS_API_ROOM) {
		xasprintf(why,
		    "too many live kills (breakers may make at most %d)",
		    KILLS_MAX - KILLS_API_ROOM);
		return (-1);
	}

	k = xcalloc(1, sizeof(*k));
	kill_new_id(k->k_id, sizeof(k->k_id));
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		if (match[a] != NULL)
			k->k_match[a] = xstrdup(match[a]);
	k->k_reason = xstrdup(reason);
	k->k_source = xstrdup(source);
	k->k_created_ms = now;
	k->k_expires_ms = ttl_ms == -1 ? POLICY_NEVER : now + ttl_ms;

	if (kill_keep(k) != 0) {
		kill_free(k);
		*why =
		    xstrdup("the ledger is not open: the kill cannot be kept");
		return (-1);
	}
	kl_list[kl_n++] = k;
	if (ttl_ms == -1 ||
	    spend_format_time(k->k_expires_ms, until, sizeof(until)) != 0)
		snprintf(until, sizeof(until), "deleted");
	log_escape(esc, sizeof(esc), k->k_reason, strlen(k->k_reason));
	log_info("kills: %s added by %s, until %s: %s", k->k_id, k->k_source,
	    until, esc);
	*out = k;
	if (kl_hook != NULL)
		kl_hook(k, kl_hook_arg);
	return (0);
}

/*
 * Turn a breaker's trip into its timed kill, source
 * "breaker:<policy>:<kind>", reason the evidence. Returns as kills_add:
 * 1 when the same breaker's kill for the same match is still live.
 */
int
kills_trip(const struct breaker_trip *bt, int64_t now, const struct kill **out,
    char **why)
{
	char source[KILL_SOURCE_MAX + 1];

	snprintf(source, sizeof(source), "breaker:%s:%s",
	    bt->bt_policy->po_name, bt->bt_kind);
	return (kills_add((const char *const *)bt->bt_match, bt->bt_evidence,
	    source, bt->bt_kill_ms, now, out, why));
}

/* Take entry i out of the list (freed by the caller). */
static struct kill *
kill_unlink(size_t i)
{
	struct kill *k = kl_list[i];

	memmove(
	    &kl_list[i], &kl_list[i + 1], (kl_n - i - 1) * sizeof(kl_list[0]));
	kl_list[--kl_n] = NULL;
	return (k);
}

/*
 * Lift the live kill id and queue its deletion to the ledger. 0, or -1
 * if no live kill has this id.
 */
int
kills_remove(const char *id, int64_t now)
{
	size_t i;

	for (i = 0; i < kl_n; i++)
		if (strcmp(kl_list[i]->k_id, id) == 0)
			break;
	if (i == kl_n || !kill_live(kl_list[i], now))
		return (-1);
	if (ledger_kill_delete(id, now) != 0)
		log_warnx("kills: %s: the ledger is not open; the deletion "
			  "will not survive a restart",
		    id);
	log_info("kills: %s deleted", id);
	kill_free(kill_unlink(i));
	return (0);
}

/*
 * The match object of a shared kill into k->k_match, as POST /v1/kills
 * reads its own: known attributes, each once, each a pattern of 1 to
 * POLICY_GLOB_MAX bytes, at least one. NULL, or what is wrong.
 */
static const char *
match_decode(struct kill *k, const cJSON *m, char *bad, size_t blen)
{
	const cJSON *it;
	const char *v;
	int a;

	if (!cJSON_IsObject(m))
		return ("match must be an object of attribute to pattern");
	cJSON_ArrayForEach(it, m)
	{
		for (a = 0; a < POLICY_ATTR_MAX; a++)
			if (strcmp(it->string, attr_names[a]) == 0)
				break;
		if (a == POLICY_ATTR_MAX) {
			log_escape(bad, blen, it->string, strlen(it->string));
			return ("match has an unknown attribute");
		}
		snprintf(bad, blen, "%s", attr_names[a]);
		if (k->k_match[a] != NULL)
			return ("match names an attribute twice");
		if ((v = pfield_text(it, POLICY_GLOB_MAX)) == NULL)
			return ("a match pattern must be a string of 1 to 128 "
				"bytes of UTF-8 without control characters");
		k->k_match[a] = xstrdup(v);
	}
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		if (k->k_match[a] != NULL)
			return (NULL);
	bad[0] = '\0';
	return ("match is empty: it must name at least one attribute");
}

/*
 * A kill from the JSON the fleet shares: one GET /v1/kills item
 * (kills_json) plus "instance", the instance that made it. It comes from
 * the network (another instance, or an operator's redis-cli), so it is
 * read as strictly as POST /v1/kills reads a body: an object of known
 * fields, each once; an id as this file makes them; a match as POST
 * takes it. reason, source, created_at, expires_at (null: until lifted)
 * and instance may be left out. Returns a kill in no list (for
 * kills_adopt or kills_discard), or NULL with *why (to free).
 */
struct kill *
kills_decode(const char *json, size_t len, char **why)
{
	static const char *const fields[] = {"id", "match", "reason", "source",
	    "created_at", "expires_at", "instance"};
	const cJSON *it;
	const char *v, *err = NULL;
	struct kill *k = NULL;
	cJSON *o;
	char bad[64];
	size_t i;

	bad[0] = '\0';
	if ((o = cJSON_ParseWithLength(json, len)) == NULL) {
		*why = xstrdup("not JSON");
		return (NULL);
	}
	if (!cJSON_IsObject(o)) {
		err = "not a JSON object";
		goto fail;
	}
	cJSON_ArrayForEach(it, o)
	{
		for (i = 0; i < nitems(fields); i++)
			if (strcmp(it->string, fields[i]) == 0)
				break;
		log_escape(bad, sizeof(bad), it->string, strlen(it->string));
		if (i == nitems(fields)) {
			err = "unknown field (expected id, match, reason, "
			      "source, created_at, expires_at, instance)";
			goto fail;
		}
		/* cJSON would read the first; the sender may mean the last. */
		if (cJSON_GetObjectItemCaseSensitive(o, it->string) != it) {
			err = "field given twice";
			goto fail;
		}
	}
	k = xcalloc(1, sizeof(*k));
	k->k_learnt = 1;
	snprintf(bad, sizeof(bad), "id");
	it = cJSON_GetObjectItemCaseSensitive(o, "id");
	if (!cJSON_IsString(it) || !random_id_ok(it->valuestring, 'k')) {
		err = "id must be \"k_\" and 16 lower-case hex digits";
		goto fail;
	}
	snprintf(k->k_id, sizeof(k->k_id), "%s", it->valuestring);
	snprintf(bad, sizeof(bad), "match");
	bad[6] = '\0'; /* the attribute at fault, if any */
	it = cJSON_GetObjectItemCaseSensitive(o, "match");
	if (it == NULL) {
		err = "match is required";
		goto fail;
	}
	if ((err = match_decode(k, it, bad + 6, sizeof(bad) - 6)) != NULL) {
		if (bad[6] != '\0')
			bad[5] = '.';
		goto fail;
	}
	snprintf(bad, sizeof(bad), "reason");
	it = cJSON_GetObjectItemCaseSensitive(o, "reason");
	v = it == NULL || cJSON_IsNull(it) ? "killed"
					   : pfield_text(it, KILL_REASON_MAX);
	if (v == NULL) {
		err = "reason must be a string of 1 to 512 bytes of UTF-8 "
		      "without control characters";
		goto fail;
	}
	k->k_reason = xstrdup(v);
	snprintf(bad, sizeof(bad), "source");
	it = cJSON_GetObjectItemCaseSensitive(o, "source");
	v = it == NULL || cJSON_IsNull(it) ? "fleet"
					   : pfield_text(it, KILL_SOURCE_MAX);
	if (v == NULL) {
		err = "source must be a string of 1 to 160 bytes of UTF-8 "
		      "without control characters";
		goto fail;
	}
	k->k_source = xstrdup(v);
	snprintf(bad, sizeof(bad), "instance");
	it = cJSON_GetObjectItemCaseSensitive(o, "instance");
	if (it != NULL && !cJSON_IsNull(it)) {
		if ((v = pfield_text(it, KILL_SOURCE_MAX)) == NULL) {
			err = "instance must be a string of 1 to 160 bytes";
			goto fail;
		}
		k->k_origin = xstrdup(v);
	}
	snprintf(bad, sizeof(bad), "created_at");
	it = cJSON_GetObjectItemCaseSensitive(o, "created_at");
	k->k_created_ms = wallclock_ms();
	if (it != NULL && pfield_time(it, 0, &k->k_created_ms) != 0) {
		err = "created_at must be an RFC 3339 time";
		goto fail;
	}
	snprintf(bad, sizeof(bad), "expires_at");
	it = cJSON_GetObjectItemCaseSensitive(o, "expires_at");
	k->k_expires_ms = POLICY_NEVER;
	if (it != NULL && pfield_time(it, 1, &k->k_expires_ms) != 0) {
		err = "expires_at must be an RFC 3339 time, or null for a "
		      "kill that lasts until it is lifted";
		goto fail;
	}
	cJSON_Delete(o);
	return (k);
fail:
	if (bad[0] != '\0')
		xasprintf(why, "%s: %s", bad, err);
	else
		*why = xstrdup(err);
	kill_free(k);
	cJSON_Delete(o);
	return (NULL);
}

/* Free a kill kills_decode made and nobody adopted. */
void
kills_discard(struct kill *k)
{
	kill_free(k);
}

/*
 * Keep k (from kills_decode; this takes it) under its own id, queue it to
 * the ledger and run the hook, as kills_add does for a kill made here.
 * Returns 0 with *out the kill; 1 with *out the live kill that has this
 * id already (nothing added); 2 if it has expired by now (nothing added,
 * *out NULL); -1 with *why. A ledger that cannot keep it does not stop
 * it: the fleet holds it, and a kill refused would let calls through.
 */
int
kills_adopt(struct kill *k, int64_t now, const struct kill **out, char **why)
{
	char until[SPEND_TIME_MAX], esc[160], from[KILL_SOURCE_MAX * 4 + 1];
	size_t i;

	*out = NULL;
	for (i = 0; i < kl_n; i++) {
		if (strcmp(kl_list[i]->k_id, k->k_id) != 0)
			continue;
		if (kill_live(kl_list[i], now)) {
			*out = kl_list[i];
			kill_free(k);
			return (1);
		}
		/* An expired one of the same id makes way. */
		kill_free(kill_unlink(i));
		break;
	}
	if (!kill_live(k, now)) {
		kill_free(k);
		return (2);
	}
	if (kl_n >= KILLS_MAX)
		kills_expire(now);
	if (kl_n >= KILLS_MAX) {
		kill_free(k);
		xasprintf(why, "too many live kills (at most %d)", KILLS_MAX);
		return (-1);
	}
	if (kill_keep(k) != 0)
		log_warnx("kills: %s: the ledger is not open; the kill is "
			  "applied but will not survive a restart here",
		    k->k_id);
	kl_list[kl_n++] = k;
	if (k->k_expires_ms == POLICY_NEVER ||
	    spend_format_time(k->k_expires_ms, until, sizeof(until)) != 0)
		snprintf(until, sizeof(until), "lifted");
	log_escape(esc, sizeof(esc), k->k_reason, strlen(k->k_reason));
	if (k->k_origin != NULL)
		log_escape(
		    from, sizeof(from), k->k_origin, strlen(k->k_origin));
	else
		snprintf(from, sizeof(from), "an unnamed instance");
	log_info("kills: %s added by %s on %s (from the fleet), until %s: %s",
	    k->k_id, k->k_source, from, until, esc);
	*out = k;
	if (kl_hook != NULL)
		kl_hook(k, kl_hook_arg);
	return (0);
}

/* Call fn for every kill in creation order; fn must not add or remove. */
void
kills_each(void (*fn)(const struct kill *, void *), void *arg)
{
	size_t i;

	for (i = 0; i < kl_n; i++)
		fn(kl_list[i], arg);
}

/*
 * Set the function called after every kill added (with the new kill), so
 * calls in flight that it matches can be ended. NULL to unset. The hook
 * must not add or remove kills.
 */
void
kills_set_hook(void (*fn)(const struct kill *, void *), void *arg)
{
	kl_hook = fn;
	kl_hook_arg = arg;
}

/* Drop the kills whose TTL ran out by now; the ledger needs no write. */
void
kills_expire(int64_t now)
{
	size_t i = 0;

	while (i < kl_n) {
		if (kill_live(kl_list[i], now)) {
			i++;
			continue;
		}
		log_info("kills: %s expired", kl_list[i]->k_id);
		kill_free(kill_unlink(i));
	}
}

/* Free every kill; the hook stays. */
void
kills_free_all(void)
{
	while (kl_n > 0)
		kill_free(kill_unlink(kl_n - 1));
}

/* A JSON match object into k->k_match; -1 if it is not one. */
static int
match_from_json(struct kill *k, const char *s)
{
	const cJSON *item;
	cJSON *o;
	int a, any = 0;

	if ((o = cJSON_Parse(s)) == NULL)
		return (-1);
	if (!cJSON_IsObject(o))
		goto fail;
	cJSON_ArrayForEach(item, o)
	{
		for (a = 0; a < POLICY_ATTR_MAX; a++)
			if (item->string != NULL &&
			    strcmp(item->string, attr_names[a]) == 0)
				break;
		if (a == POLICY_ATTR_MAX || !cJSON_IsString(item) ||
		    k->k_match[a] != NULL)
			goto fail;
		k->k_match[a] = xstrdup(item->valuestring);
		any = 1;
	}
	cJSON_Delete(o);
	return (any ? 0 : -1);
fail:
	cJSON_Delete(o);
	return (-1);
}

/*
 * Replace the list by the live kills of the ledger's kills table (not
 * deleted, not expired at now), read on ro, a read-only connection
 * (spend_open). For start-up, after ledger_open. A row that cannot be read
 * back is skipped with a warning. 0, or -1 with *cause.
 */
int
kills_load(sqlite3 *ro, int64_t now, char **cause)
{
	static const char sql[] =
	    "SELECT id, created_at, expires_at, match, reason, source"
	    " FROM kills WHERE deleted_at IS NULL"
	    " AND (expires_at IS NULL OR expires_at > ?1)"
	    " ORDER BY created_at, id";
	char nowbuf[SPEND_TIME_MAX];
	sqlite3_stmt *st = NULL;
	const char *id, *created, *expires, *match, *reason, *source;
	struct kill *k;
	int rc;

	kills_free_all();
	if (spend_format_time(now, nowbuf, sizeof(nowbuf)) != 0) {
		*cause = xstrdup("kills: bad time");
		return (-1);
	}
	if (sqlite3_prepare_v2(ro, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, nowbuf, -1, SQLITE_STATIC) != SQLITE_OK) {
		xasprintf(cause, "kills: %s", sqlite3_errmsg(ro));
		sqlite3_finalize(st);
		return (-1);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		id = pfield_col(st, 0);
		created = pfield_col(st, 1);
		expires = pfield_col(st, 2);
		match = pfield_col(st, 3);
		reason = pfield_col(st, 4);
		source = pfield_col(st, 5);
		k = xcalloc(1, sizeof(*k));
		k->k_expires_ms = POLICY_NEVER;
		if (id == NULL || strlen(id) != KILL_ID_LEN ||
		    created == NULL ||
		    spend_parse_time(created, 0, &k->k_created_ms) != 0 ||
		    (expires != NULL &&
			spend_parse_time(expires, 0, &k->k_expires_ms) != 0) ||
		    match == NULL || match_from_json(k, match) != 0 ||
		    reason == NULL || source == NULL) {
			log_warnx("kills: a row of the kills table cannot be "
				  "read back; skipped");
			kill_free(k);
			continue;
		}
		if (kl_n >= KILLS_MAX) {
			log_warnx("kills: more than %d live kills in the "
				  "ledger; the newest are ignored",
			    KILLS_MAX);
			kill_free(k);
			break;
		}
		snprintf(k->k_id, sizeof(k->k_id), "%s", id);
		k->k_reason = xstrdup(reason);
		k->k_source = xstrdup(source);
		kl_list[kl_n++] = k;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		xasprintf(cause, "kills: %s", sqlite3_errmsg(ro));
		sqlite3_finalize(st);
		kills_free_all();
		return (-1);
	}
	sqlite3_finalize(st);
	if (kl_n > 0)
		log_info(
		    "kills: %zu live kills restored from the ledger", kl_n);
	return (0);
}
