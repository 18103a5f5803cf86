/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runtime kills against a real ledger in a temp directory: matching with
 * globs (and unset tags), TTL and kills_expire, validation, removal, the
 * add hook, breaker trips deduplicated while their kill lives, the cap,
 * the JSON an admin sees, and the kills table read back by kills_load
 * after the ledger's writer has written it (live ones only: deleted and
 * expired kills stay out), and a kill shared by the fleet read back from
 * its JSON (kills_decode, kills_adopt).
 */

#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/breaker.h"
#include "tollgate/kills.h"
#include "tollgate/ledger.h"
#include "tollgate/policy.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "tmptree.h"

#define T0 1795875780123LL /* 2026-11-28T14:23:00.123Z */
#define SEC 1000LL

static struct {
	char dir[64];
	char path[128];
	struct event_base *base;
} fx;

static int
setup(void **state)
{
	char *cause = NULL;

	(void)state;
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/tg-kills-XXXXXX");
	if (mkdtemp(fx.dir) == NULL)
		return (-1);
	snprintf(fx.path, sizeof(fx.path), "%s/ledger.db", fx.dir);
	if ((fx.base = event_base_new()) == NULL)
		return (-1);
	if (ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause) != 0) {
		print_error("ledger_open: %s\n", cause);
		free(cause);
		return (-1);
	}
	return (0);
}

static int
teardown(void **state)
{
	(void)state;
	kills_set_hook(NULL, NULL);
	kills_free_all();
	ledger_close();
	event_base_free(fx.base);
	tmptree_remove(fx.dir);
	return (0);
}

static void
attrs(const char *attr[POLICY_ATTR_MAX], const char *team, const char *ac,
    const char *model)
{
	memset(attr, 0, sizeof(const char *) * POLICY_ATTR_MAX);
	attr[TAG_TEAM] = team;
	attr[TAG_AGENT_CLASS] = ac;
	attr[POLICY_ATTR_MODEL] = model;
	attr[POLICY_ATTR_PROVIDER] = "openai";
}

/* Add a kill that must be accepted. */
static const struct kill *
add_ok(const char *const *match, const char *reason, const char *source,
    int64_t ttl, int64_t now)
{
	const struct kill *k = NULL;
	char *why = NULL;
	int rc;

	rc = kills_add(match, reason, source, ttl, now, &k, &why);
	if (rc != 0)
		fail_msg("kills_add: %d %s", rc, why != NULL ? why : "");
	assert_non_null(k);
	return (k);
}

static void
test_match(void **state)
{
	const char *m1[POLICY_ATTR_MAX] = {NULL}, *m2[POLICY_ATTR_MAX] = {NULL};
	const char *attr[POLICY_ATTR_MAX];
	const struct kill *k1, *k2;
	size_t i;

	(void)state;
	attrs(attr, "xray", "researcher", "gpt-4o");
	assert_null(kills_match(attr, T0));
	m1[TAG_AGENT_CLASS] = "researcher";
	m1[TAG_TEAM] = "x*";
	k1 = add_ok(m1, "runaway", "api", -1, T0);
	assert_int_equal(strlen(k1->k_id), KILL_ID_LEN);
	assert_memory_equal(k1->k_id, "k_", 2);
	for (i = 2; i < KILL_ID_LEN; i++)
		assert_non_null(strchr("0123456789abcdef", k1->k_id[i]));
	assert_string_equal(k1->k_reason, "runaway");
	assert_string_equal(k1->k_source, "api");
	assert_int_equal(k1->k_created_ms, T0);
	assert_true(k1->k_expires_ms == POLICY_NEVER);
	assert_string_equal(k1->k_match[TAG_TEAM], "x*");
	assert_null(k1->k_match[TAG_INTENT]);

	assert_ptr_equal(kills_match(attr, T0), k1);
	attr[TAG_TEAM] = "yankee";
	assert_null(kills_match(attr, T0));
	attr[TAG_TEAM] = NULL; /* an unset tag is "": "x*" does not match */
	assert_null(kills_match(attr, T0));
	attr[TAG_TEAM] = "x";
	attr[TAG_AGENT_CLASS] = "researchers";
	assert_null(kills_match(attr, T0));

	/* A "*" on a tag matches calls without it too: kill everything. */
	m2[TAG_TEAM] = "*";
	k2 = add_ok(m2, NULL, "api", -1, T0 + 1);
	assert_string_equal(k2->k_reason, "killed");
	assert_string_not_equal(k1->k_id, k2->k_id);
	attr[TAG_TEAM] = NULL;
	assert_ptr_equal(kills_match(attr, T0 + 1), k2);
	/* The oldest matching kill comes first. */
	attrs(attr, "xray", "researcher", "gpt-4o");
	assert_ptr_equal(kills_match(attr, T0 + 1), k1);
	assert_int_equal(kills_count(), 2);
	assert_ptr_equal(kills_find(k2->k_id, T0 + 1), k2);
	assert_null(kills_find("k_0000000000000000", T0 + 1));
}

static void
test_ttl_expire(void **state)
{
	const char *m[POLICY_ATTR_MAX] = {NULL}, *attr[POLICY_ATTR_MAX];
	const struct kill *k, *forever;

	(void)state;
	attrs(attr, "core", "researcher", "gpt-4o");
	m[POLICY_ATTR_MODEL] = "gpt-4?";
	k = add_ok(m, "short", "api", 90 * SEC, T0);
	assert_int_equal(k->k_expires_ms, T0 + 90 * SEC);
	m[POLICY_ATTR_MODEL] = "gpt-*";
	forever = add_ok(m, "long", "api", -1, T0 + 1);
	assert_ptr_equal(kills_match(attr, T0 + 90 * SEC - 1), k);
	/* At its expiry it no longer matches, even before kills_expire. */
	assert_ptr_equal(kills_match(attr, T0 + 90 * SEC), forever);
	assert_null(kills_find(k->k_id, T0 + 90 * SEC));
	assert_int_equal(kills_count(), 2);
	kills_expire(T0 + 90 * SEC - 1);
	assert_int_equal(kills_count(), 2);
	kills_expire(T0 + 90 * SEC);
	assert_int_equal(kills_count(), 1);
	assert_ptr_equal(kills_match(attr, T0 + 100 * SEC), forever);
	/* An expired kill cannot be deleted: it is gone. */
	k = add_ok(m, "short", "api", SEC, T0);
	assert_int_equal(kills_remove(k->k_id, T0 + SEC), -1);
}

static void
test_add_refused(void **state)
{
	static const char long_glob[] =
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "x";
	const char *none[POLICY_ATTR_MAX] = {NULL},
		   *m[POLICY_ATTR_MAX] = {NULL};
	const struct kill *k;
	char *why = NULL, reason[KILL_REASON_MAX + 2];

	(void)state;
	assert_int_equal(kills_add(none, "r", "api", -1, T0, &k, &why), -1);
	assert_null(k);
	assert_non_null(strstr(why, "at least one attribute"));
	free(why);
	m[TAG_TEAM] = long_glob;
	assert_int_equal(kills_add(m, "r", "api", -1, T0, &k, &why), -1);
	assert_non_null(strstr(why, "match.team"));
	free(why);
	m[TAG_TEAM] = "a\tb";
	assert_int_equal(kills_add(m, "r", "api", -1, T0, &k, &why), -1);
	free(why);
	m[TAG_TEAM] = "a";
	assert_int_equal(kills_add(m, "x\ny", "api", -1, T0, &k, &why), -1);
	assert_non_null(strstr(why, "reason"));
	free(why);
	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	assert_int_equal(kills_add(m, reason, "api", -1, T0, &k, &why), -1);
	free(why);
	reason[KILL_REASON_MAX] = '\0'; /* exactly the maximum: fine */
	assert_non_null(add_ok(m, reason, "api", -1, T0));
	assert_int_equal(kills_add(m, "r", "", -1, T0, &k, &why), -1);
	free(why);
	assert_int_equal(kills_add(m, "r", "api", 0, T0, &k, &why), -1);
	assert_non_null(strstr(why, "ttl"));
	free(why);
	assert_int_equal(kills_add(m, "r", "api", INT64_MAX, T0, &k, &why), -1);
	free(why);
	assert_int_equal(kills_count(), 1);
}

static void
test_remove(void **state)
{
	const char *m[POLICY_ATTR_MAX] = {NULL}, *attr[POLICY_ATTR_MAX];
	const struct kill *a, *b, *c;
	char ida[24], idb[24];

	(void)state;
	attrs(attr, "core", "researcher", "gpt-4o");
	m[TAG_AGENT_CLASS] = "researcher";
	a = add_ok(m, "a", "api", -1, T0);
	b = add_ok(m, "b", "api", -1, T0 + 1);
	m[TAG_AGENT_CLASS] = "writer";
	c = add_ok(m, "c", "api", -1, T0 + 2);
	snprintf(ida, sizeof(ida), "%s", a->k_id);
	snprintf(idb, sizeof(idb), "%s", b->k_id);
	assert_int_equal(kills_remove("k_nope", T0), -1);
	assert_int_equal(kills_remove(ida, T0 + 3), 0);
	assert_int_equal(kills_remove(ida, T0 + 3), -1);
	/* The other kill of the same match still holds; c kept its place. */
	assert_ptr_equal(kills_match(attr, T0 + 3), b);
	assert_int_equal(kills_remove(idb, T0 + 4), 0);
	assert_null(kills_match(attr, T0 + 4));
	assert_int_equal(kills_count(), 1);
	assert_ptr_equal(kills_find(c->k_id, T0 + 4), c);
}

struct hooked {
	int calls;
	const struct kill *last;
};

static void
hook_cb(const struct kill *k, void *arg)
{
	struct hooked *h = arg;

	h->calls++;
	h->last = k;
}

static void
test_hook_and_trips(void **state)
{
	struct policy po;
	struct breaker_trip bt;
	const char *m[POLICY_ATTR_MAX] = {NULL};
	const struct kill *k1, *k2;
	struct hooked h = {0, NULL};
	char *why = NULL, name[] = "runaway", id1[24];

	(void)state;
	kills_set_hook(hook_cb, &h);
	m[TAG_INTENT] = "nightly";
	k1 = add_ok(m, "by hand", "api", -1, T0);
	assert_int_equal(h.calls, 1);
	assert_ptr_equal(h.last, k1);
	/* The API never merges: the same kill twice is two kills. */
	k2 = add_ok(m, "by hand", "api", -1, T0);
	assert_int_equal(h.calls, 2);
	assert_ptr_not_equal(k1, k2);

	memset(&po, 0, sizeof(po));
	po.po_name = name;
	memset(&bt, 0, sizeof(bt));
	bt.bt_policy = &po;
	bt.bt_kind = "loop";
	bt.bt_kill_ms = 10 * 60 * SEC;
	bt.bt_match[TAG_INTENT] = xstrdup("nightly");
	bt.bt_match[TAG_TENANT] = xstrdup("acme");
	snprintf(bt.bt_evidence, sizeof(bt.bt_evidence), "loop: 5 times");
	assert_int_equal(kills_trip(&bt, T0 + SEC, &k1, &why), 0);
	assert_int_equal(h.calls, 3);
	assert_string_equal(k1->k_source, "breaker:runaway:loop");
	assert_string_equal(k1->k_reason, "loop: 5 times");
	assert_string_equal(k1->k_match[TAG_TENANT], "acme");
	assert_int_equal(k1->k_expires_ms, T0 + SEC + 10 * 60 * SEC);
	snprintf(id1, sizeof(id1), "%s", k1->k_id);
	/* The same trip while its kill lives: that kill, no hook. */
	assert_int_equal(kills_trip(&bt, T0 + 2 * SEC, &k2, &why), 1);
	assert_ptr_equal(k2, k1);
	assert_int_equal(h.calls, 3);
	/* Another kind of the same policy is another kill. */
	bt.bt_kind = "velocity";
	assert_int_equal(kills_trip(&bt, T0 + 2 * SEC, &k2, &why), 0);
	assert_ptr_not_equal(k2, k1);
	assert_int_equal(h.calls, 4);
	/* Once the loop kill expired, the loop breaker makes a new one. */
	bt.bt_kind = "loop";
	assert_int_equal(
	    kills_trip(&bt, T0 + SEC + 10 * 60 * SEC, &k2, &why), 0);
	assert_string_not_equal(k2->k_id, id1);
	assert_null(kills_find(id1, T0 + SEC + 10 * 60 * SEC));
	assert_int_equal(h.calls, 5);
	breaker_trip_clear(&bt);
}

static void
test_cap(void **state)
{
	const char *m[POLICY_ATTR_MAX] = {NULL};
	const struct kill *k;
	char *why = NULL;
	int i;

	(void)state;
	m[TAG_TEAM] = "t";
	for (i = 0; i < KILLS_MAX; i++)
		add_ok(m, "r", "api", i == 0 ? SEC : -1, T0);
	assert_int_equal(kills_add(m, "r", "api", -1, T0, &k, &why), -1);
	assert_non_null(strstr(why, "too many"));
	free(why);
	/* The first one expires: room for one more. */
	add_ok(m, "r", "api", -1, T0 + SEC);
	assert_int_equal(kills_count(), KILLS_MAX);
}

/*
 * A kill shared by the fleet: kills_json's shape plus "instance" reads
 * back as the same kill under the same id; everything malformed is
 * refused, naming the field; kills_adopt keeps it once, runs the hook,
 * and leaves out an expired one.
 */
static void
test_decode_adopt(void **state)
{
	static const struct {
		const char *json, *why;
	} bad[] = {
	    {"{", "not JSON"},
	    {"[]", "not a JSON object"},
	    {"{\"id\":\"k_0000000000000001\"}", "match: match is required"},
	    {"{\"id\":\"k_000000000000000G\",\"match\":{\"team\":\"a\"}}",
		"id: id must be"},
	    {"{\"id\":\"k_0000000000000001\",\"match\":{\"colour\":\"r\"}}",
		"match.colour: match has an unknown attribute"},
	    {"{\"id\":\"k_0000000000000001\",\"match\":{}}",
		"match: match is empty"},
	    {"{\"id\":\"k_0000000000000001\",\"match\":{\"team\":\"\"}}",
		"match.team: a match pattern"},
	    {"{\"id\":\"k_0000000000000001\",\"match\":{\"team\":\"a\"},"
	     "\"ttl\":\"2h\"}",
		"ttl: unknown field"},
	    {"{\"id\":\"k_0000000000000001\",\"match\":{\"team\":\"a\"},"
	     "\"reason\":\"a\",\"reason\":\"b\"}",
		"reason: field given twice"},
	    {"{\"id\":\"k_0000000000000001\",\"match\":{\"team\":\"a\"},"
	     "\"expires_at\":\"soon\"}",
		"expires_at: expires_at must be"},
	    {"{\"id\":\"k_0000000000000001\",\"match\":{\"team\":\"a\"},"
	     "\"reason\":\"a\\u0001b\"}",
		"reason: reason must be"},
	    {"{\"id\":\"k_0000000000000001\",\"match\":{\"team\":\"a\"},"
	     "\"instance\":7}",
		"instance: instance must be"},
	};
	const char *m[POLICY_ATTR_MAX] = {NULL};
	const struct kill *k, *out;
	struct kill *d;
	struct hooked h = {0, NULL};
	const char *hand;
	char *js, *why = NULL, id[24];
	cJSON *o;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(bad); i++) {
		assert_null(
		    kills_decode(bad[i].json, strlen(bad[i].json), &why));
		assert_non_null(why);
		if (strstr(why, bad[i].why) != why)
			fail_msg("case %zu: \"%s\", expected \"%s...\"", i, why,
			    bad[i].why);
		free(why);
		why = NULL;
	}

	/* Round trip: made here, shared, read back elsewhere. */
	m[TAG_TEAM] = "x*";
	m[POLICY_ATTR_MODEL] = "gpt-4o";
	k = add_ok(m, "runaway loop", "api", 3600 * SEC, T0);
	snprintf(id, sizeof(id), "%s", k->k_id);
	o = kills_json(k);
	cJSON_AddStringToObject(o, "instance", "pod-7");
	js = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	kills_free_all();
	kills_set_hook(hook_cb, &h);
	d = kills_decode(js, strlen(js), &why);
	assert_non_null(d);
	assert_string_equal(d->k_id, id);
	assert_string_equal(d->k_match[TAG_TEAM], "x*");
	assert_string_equal(d->k_match[POLICY_ATTR_MODEL], "gpt-4o");
	assert_null(d->k_match[TAG_TENANT]);
	assert_string_equal(d->k_reason, "runaway loop");
	assert_string_equal(d->k_source, "api");
	assert_string_equal(d->k_origin, "pod-7");
	assert_int_equal(d->k_learnt, 1);
	assert_int_equal(d->k_created_ms, T0);
	assert_int_equal(d->k_expires_ms, T0 + 3600 * SEC);
	assert_int_equal(kills_adopt(d, T0 + SEC, &out, &why), 0);
	assert_int_equal(h.calls, 1);
	assert_ptr_equal(h.last, out);
	assert_ptr_equal(kills_find(id, T0 + SEC), out);
	o = kills_json(out);
	assert_string_equal(
	    cJSON_GetObjectItem(o, "instance")->valuestring, "pod-7");
	cJSON_Delete(o);
	/* The same id again: nothing added, no hook. */
	d = kills_decode(js, strlen(js), &why);
	assert_int_equal(kills_adopt(d, T0 + SEC, &out, &why), 1);
	assert_int_equal(kills_count(), 1);
	assert_int_equal(h.calls, 1);
	/* Expired by the time it is read: left out. */
	kills_free_all();
	d = kills_decode(js, strlen(js), &why);
	assert_int_equal(kills_adopt(d, T0 + 3600 * SEC, &out, &why), 2);
	assert_null(out);
	assert_int_equal(kills_count(), 0);
	assert_int_equal(h.calls, 1);
	cJSON_free(js);

	/* The least an operator writes by hand. */
	hand = "{\"id\":\"k_00000000000000a1\",\"match\":{\"team\":\"r\"},"
	       "\"expires_at\":null}";
	d = kills_decode(hand, strlen(hand), &why);
	assert_non_null(d);
	assert_string_equal(d->k_reason, "killed");
	assert_string_equal(d->k_source, "fleet");
	assert_null(d->k_origin);
	assert_int_equal(d->k_expires_ms, POLICY_NEVER);
	kills_discard(d);
}

static void
test_json(void **state)
{
	const char *m[POLICY_ATTR_MAX] = {NULL};
	const struct kill *k;
	cJSON *o;
	char *s, want[512];

	(void)state;
	m[POLICY_ATTR_PROVIDER] = "openai";
	m[TAG_AGENT_CLASS] = "research\"er";
	k = add_ok(m, "why \"not\"", "api", 2 * 3600 * SEC, T0);
	o = kills_json(k);
	s = cJSON_PrintUnformatted(o);
	snprintf(want, sizeof(want),
	    "{\"id\":\"%s\",\"match\":{\"agent_class\":\"research\\\"er\","
	    "\"provider\":\"openai\"},\"reason\":\"why \\\"not\\\"\","
	    "\"source\":\"api\",\"created_at\":\"2026-11-28T14:23:00.123Z\","
	    "\"expires_at\":\"2026-11-28T16:23:00.123Z\"}",
	    k->k_id);
	assert_string_equal(s, want);
	cJSON_free(s);
	cJSON_Delete(o);
	m[POLICY_ATTR_PROVIDER] = NULL;
	k = add_ok(m, "r", "api", -1, T0);
	o = kills_json(k);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "expires_at")));
	cJSON_Delete(o);
	s = kills_match_json(k->k_match);
	assert_string_equal(s, "{\"agent_class\":\"research\\\"er\"}");
	free(s);
}

/* Copies of what a kill said, to compare after the list is reloaded. */
struct saved {
	char id[24];
	char *match[POLICY_ATTR_MAX];
	char reason[64];
	char source[64];
	int64_t created, expires;
};

static void
save(struct saved *sv, const struct kill *k)
{
	int a;

	snprintf(sv->id, sizeof(sv->id), "%s", k->k_id);
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		sv->match[a] = k->k_match[a] ? xstrdup(k->k_match[a]) : NULL;
	snprintf(sv->reason, sizeof(sv->reason), "%s", k->k_reason);
	snprintf(sv->source, sizeof(sv->source), "%s", k->k_source);
	sv->created = k->k_created_ms;
	sv->expires = k->k_expires_ms;
}

static void
same(const struct saved *sv, const struct kill *k)
{
	int a;

	assert_non_null(k);
	assert_string_equal(k->k_id, sv->id);
	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if (sv->match[a] == NULL)
			assert_null(k->k_match[a]);
		else
			assert_string_equal(k->k_match[a], sv->match[a]);
	}
	assert_string_equal(k->k_reason, sv->reason);
	assert_string_equal(k->k_source, sv->source);
	assert_int_equal(k->k_created_ms, sv->created);
	assert_true(k->k_expires_ms == sv->expires);
}

static void
unsave(struct saved *sv)
{
	int a;

	for (a = 0; a < POLICY_ATTR_MAX; a++)
		free(sv->match[a]);
}

static void
collect_cb(const struct kill *k, void *arg)
{
	const struct kill **list = arg;

	while (*list != NULL)
		list++;
	*list = k;
}

static void
test_persist(void **state)
{
	const char *m[POLICY_ATTR_MAX] = {NULL};
	const struct kill *got[8] = {NULL};
	struct saved live1, live2;
	const struct kill *k;
	sqlite3 *ro;
	char *cause = NULL, gone[24];

	(void)state;
	m[TAG_AGENT_CLASS] = "researcher";
	m[TAG_TEAM] = "x*";
	save(&live1, add_ok(m, "live, with a ttl", "api", 3600 * SEC, T0));
	m[TAG_TEAM] = NULL;
	m[POLICY_ATTR_MODEL] = "gpt-4o";
	m[TAG_TENANT] = ""; /* a breaker's kill on an unset per tag */
	save(&live2,
	    add_ok(m, "live for ever", "breaker:p:velocity", -1, T0 + 1));
	m[TAG_TENANT] = NULL;
	add_ok(m, "expires", "api", 10 * SEC, T0 + 2);
	k = add_ok(m, "deleted", "api", -1, T0 + 3);
	snprintf(gone, sizeof(gone), "%s", k->k_id);
	assert_int_equal(kills_remove(gone, T0 + 4), 0);

	/* Everything is written once the ledger closes. */
	kills_free_all();
	ledger_close();
	if ((ro = spend_open(fx.path, &cause)) == NULL)
		fail_msg("spend_open: %s", cause);
	/* Before the third expired: it too. */
	assert_int_equal(kills_load(ro, T0 + 10 * SEC, &cause), 0);
	assert_int_equal(kills_count(), 3);
	assert_int_equal(kills_load(ro, T0 + 10 * SEC + 2, &cause), 0);
	assert_int_equal(kills_count(), 2);
	kills_each(collect_cb, got);
	same(&live1, got[0]);
	same(&live2, got[1]);
	assert_null(got[2]);
	assert_null(kills_find(gone, T0 + 10 * SEC));
	/* An hour later, only the one without a TTL. */
	assert_int_equal(kills_load(ro, T0 + 3600 * SEC, &cause), 0);
	assert_int_equal(kills_count(), 1);
	assert_non_null(kills_find(live2.id, T0 + 3600 * SEC));
	/* The ledger keeps the deleted row, with when. */
	{
		sqlite3_stmt *st;

		assert_int_equal(
		    sqlite3_prepare_v2(ro,
			"SELECT deleted_at FROM kills WHERE id = ?1", -1, &st,
			NULL),
		    SQLITE_OK);
		sqlite3_bind_text(st, 1, gone, -1, SQLITE_STATIC);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(st, 0),
		    "2026-11-28T14:23:00.127Z");
		sqlite3_finalize(st);
	}
	sqlite3_close(ro);
	unsave(&live1);
	unsave(&live2);

	/* With the ledger closed a kill cannot be kept: refused. */
	assert_int_equal(kills_add(m, "r", "api", -1, T0, &k, &cause), -1);
	assert_non_null(strstr(cause, "ledger"));
	free(cause);
}

/* A ledger made before the kills table existed gains it on open. */
static void
test_old_ledger(void **state)
{
	const char *m[POLICY_ATTR_MAX] = {NULL};
	sqlite3 *db, *ro;
	char *cause = NULL;

	(void)state;
	ledger_close();
	assert_int_equal(sqlite3_open(fx.path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db, "DROP INDEX kills_live; DROP TABLE kills", NULL,
		NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	if ((ro = spend_open(fx.path, &cause)) == NULL)
		fail_msg("spend_open: %s", cause);
	assert_int_equal(kills_load(ro, T0, &cause), -1);
	assert_non_null(strstr(cause, "no such table"));
	free(cause);
	sqlite3_close(ro);

	if (ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause) != 0)
		fail_msg("ledger_open: %s", cause);
	m[TAG_TEAM] = "a";
	add_ok(m, "after the upgrade", "api", -1, T0);
	ledger_close();
	kills_free_all();
	if ((ro = spend_open(fx.path, &cause)) == NULL)
		fail_msg("spend_open: %s", cause);
	assert_int_equal(kills_load(ro, T0, &cause), 0);
	assert_int_equal(kills_count(), 1);
	sqlite3_close(ro);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_match, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ttl_expire, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_add_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_hook_and_trips, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_json, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_decode_adopt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_persist, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_old_ledger, setup, teardown),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
