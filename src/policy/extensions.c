/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Budget extensions (include/tollgate/extensions.h): the list of live
 * ones, what they add to a budget key's cap, and their persistence. The
 * list is an array of pointers in creation order, at most EXTENSIONS_MAX
 * long, so an extension's address never moves while it lives. Every
 * change is queued to the ledger's writer thread (ledger_extension_add,
 * ledger_extension_revoke) and moves the generation, which tells the
 * policy counters to ask extensions_sum again. An extension that has
 * ended needs no write: extensions_load skips what has ended by the time
 * it reads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "tollgate/extensions.h"
#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/spend.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

#include "policy_int.h"

static struct extension *xl_list[EXTENSIONS_MAX]; /* creation order */
static size_t xl_n;
/* Moved by every change; entries start at 0, so they ask once. */
static uint64_t xl_gen = 1;

static void
ext_free(struct extension *x)
{
	if (x == NULL)
		return;
	free(x->x_policy);
	free(x->x_scope);
	free(x->x_key);
	free(x->x_intent);
	free(x->x_window);
	free(x->x_reason);
	free(x->x_by);
	free(x->x_origin);
	free(x);
}

static int
ext_live(const struct extension *x, int64_t now)
{
	return (x->x_ends_ms == POLICY_NEVER || x->x_ends_ms > now);
}

/* Take entry i out of the list (freed by the caller). */
static struct extension *
ext_unlink(size_t i)
{
	struct extension *x = xl_list[i];

	memmove(
	    &xl_list[i], &xl_list[i + 1], (xl_n - i - 1) * sizeof(xl_list[0]));
	xl_list[--xl_n] = NULL;
	xl_gen++;
	return (x);
}

/* The live extension with this id, or NULL. */
const struct extension *
extensions_find(const char *id, int64_t now)
{
	size_t i;

	for (i = 0; id != NULL && i < xl_n; i++)
		if (strcmp(xl_list[i]->x_id, id) == 0 &&
		    ext_live(xl_list[i], now))
			return (xl_list[i]);
	return (NULL);
}

/* How many extensions are in the list (ended ones until expired). */
size_t
extensions_count(void)
{
	return (xl_n);
}

/* Moves whenever an extension is added, revoked or dropped. */
uint64_t
extensions_generation(void)
{
	return (xl_gen);
}

/*
 * What the live extensions on budget key add to its caps at now
 * (saturating), and in *until when the first of them ends (POLICY_NEVER
 * if none does): the sum holds until then unless the generation moves.
 */
int64_t
extensions_sum(const char *key, int64_t now, int64_t *until)
{
	const struct extension *x;
	int64_t sum = 0;
	size_t i;

	*until = POLICY_NEVER;
	for (i = 0; i < xl_n; i++) {
		x = xl_list[i];
		if (!ext_live(x, now) || strcmp(x->x_key, key) != 0)
			continue;
		sum = pcount_add(sum, x->x_nusd);
		if (x->x_ends_ms < *until)
			*until = x->x_ends_ms;
	}
	return (sum);
}

/* Call fn for every live extension in creation order; fn must not change
 * the list. */
void
extensions_each(void (*fn)(const struct extension *, void *), void *arg)
{
	int64_t now = wallclock_ms();
	size_t i;

	for (i = 0; i < xl_n; i++)
		if (ext_live(xl_list[i], now))
			fn(xl_list[i], arg);
}

/*
 * Call fn for every live extension on the scope of policy po with per-tag
 * values per (NULL or "": calls without the tag) in the window in force
 * at now, in creation order; fn must not change the list.
 */
void
extensions_on(const struct policy *po, const char *const *per, int64_t now,
    void (*fn)(const struct extension *, void *), void *arg)
{
	const char *attr[POLICY_ATTR_MAX] = {NULL};
	int64_t start, reset;
	char *key;
	size_t i;
	int a;

	if (xl_n == 0)
		return;
	for (a = 0; a < TAG_MAX; a++)
		if (po->po_per[a])
			attr[a] = per[a] != NULL ? per[a] : "";
	policy_window_at(&po->po_window, now, &start, &reset);
	key = policy_budget_key(po, attr, start);
	for (i = 0; i < xl_n; i++)
		if (ext_live(xl_list[i], now) &&
		    strcmp(xl_list[i]->x_key, key) == 0)
			fn(xl_list[i], arg);
	free(key);
}

/* Drop the extensions that have ended by now; the ledger needs no write. */
void
extensions_expire(int64_t now)
{
	size_t i = 0;

	while (i < xl_n) {
		if (ext_live(xl_list[i], now)) {
			i++;
			continue;
		}
		log_info("extensions: %s ended", xl_list[i]->x_id);
		ext_free(ext_unlink(i));
	}
}

/* Free every extension. */
void
extensions_free_all(void)
{
	while (xl_n > 0)
		ext_free(ext_unlink(xl_n - 1));
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
 * An extension as the admin API shows it and the fleet shares it: id,
 * policy, scope, window, window_start, usd and nusd, reason, by,
 * created_at, expires_at, ends_at (RFC 3339 UTC or null), key, and
 * instance when the fleet said who made it.
 */
cJSON *
extensions_json(const struct extension *x)
{
	cJSON *o, *scope;
	char usd[40], nusd[24];

	if ((o = cJSON_CreateObject()) == NULL)
		fatalx("%s: cJSON", __func__);
	/* Checked when it was made, learnt or loaded; never fatal here. */
	if ((scope = cJSON_Parse(x->x_scope)) == NULL &&
	    (scope = cJSON_CreateNull()) == NULL)
		fatalx("%s: cJSON", __func__);
	usd_format(usd, sizeof(usd), x->x_nusd);
	snprintf(nusd, sizeof(nusd), "%lld", (long long)x->x_nusd);
	if (cJSON_AddStringToObject(o, "id", x->x_id) == NULL ||
	    cJSON_AddStringToObject(o, "policy", x->x_policy) == NULL ||
	    !cJSON_AddItemToObject(o, "scope", scope) ||
	    cJSON_AddStringToObject(o, "window", x->x_window) == NULL)
		fatalx("%s: cJSON", __func__);
	add_time(o, "window_start", x->x_window_start);
	if (cJSON_AddRawToObject(o, "usd", usd) == NULL ||
	    cJSON_AddRawToObject(o, "nusd", nusd) == NULL ||
	    cJSON_AddStringToObject(o, "reason", x->x_reason) == NULL ||
	    cJSON_AddStringToObject(o, "by", x->x_by) == NULL)
		fatalx("%s: cJSON", __func__);
	add_time(o, "created_at", x->x_created_ms);
	add_time(o, "expires_at", x->x_expires_ms);
	add_time(o, "ends_at", x->x_ends_ms);
	if (cJSON_AddStringToObject(o, "key", x->x_key) == NULL)
		fatalx("%s: cJSON", __func__);
	if (x->x_origin != NULL &&
	    cJSON_AddStringToObject(o, "instance", x->x_origin) == NULL)
		fatalx("%s: cJSON", __func__);
	return (o);
}

/*
 * The per-tag values of a POST /v1/budgets/extend scope for policy po
 * into per[] (borrowed from scope): the scope as GET /v1/budgets shows it,
 * each per tag's value required ("" for calls without the tag), the
 * policy's own match patterns allowed when equal, nothing else. NULL or
 * an empty object is the scope of a policy without per tags. 0, or -1
 * with param (the field at fault) and *why (to free).
 */
int
extensions_scope(const struct policy *po, const cJSON *scope,
    const char *per[TAG_MAX], char *param, size_t plen, char **why)
{
	const cJSON *it;
	const char *v;
	int a;

	for (a = 0; a < TAG_MAX; a++)
		per[a] = NULL;
	snprintf(param, plen, "scope");
	if (scope != NULL && !cJSON_IsNull(scope) && !cJSON_IsObject(scope)) {
		*why = xstrdup("scope must be an object of tag to value, as "
			       "GET /v1/budgets shows it");
		return (-1);
	}
	cJSON_ArrayForEach(it, scope)
	{
		for (a = 0; a < POLICY_ATTR_MAX; a++)
			if (strcmp(it->string, policy_attr_name(a)) == 0)
				break;
		if (a == POLICY_ATTR_MAX) {
			snprintf(param, plen, "scope.%.40s", it->string);
			*why =
			    xstrdup("unknown attribute (expected intent, "
				    "team, tenant, agent_class, environment, "
				    "model or provider)");
			return (-1);
		}
		snprintf(param, plen, "scope.%s", policy_attr_name(a));
		if (cJSON_GetObjectItemCaseSensitive(scope, it->string) != it) {
			*why = xstrdup("attribute given twice");
			return (-1);
		}
		if (!cJSON_IsString(it)) {
			*why = xstrdup("a scope value must be a string");
			return (-1);
		}
		v = it->valuestring;
		if (a < TAG_MAX && po->po_per[a]) {
			if (v[0] != '\0' && !tag_value_ok(v, strlen(v))) {
				xasprintf(why,
				    "not a valid %s value (printable, at most "
				    "%d bytes, no wildcards)",
				    policy_attr_name(a), TAG_VALUE_MAX);
				return (-1);
			}
			per[a] = v;
		} else if (po->po_match[a] != NULL) {
			if (strcmp(v, po->po_match[a]) != 0) {
				xasprintf(why,
				    "policy %s matches %s on this attribute; "
				    "the scope cannot name another",
				    po->po_name, po->po_match[a]);
				return (-1);
			}
		} else {
			xasprintf(why,
			    "policy %s has no budget per %s, nor a match "
			    "on it",
			    po->po_name, policy_attr_name(a));
			return (-1);
		}
	}
	for (a = 0; a < TAG_MAX; a++) {
		if (po->po_per[a] && per[a] == NULL) {
			snprintf(param, plen, "scope.%s", policy_attr_name(a));
			xasprintf(why,
			    "required: policy %s has a budget per %s (\"\" "
			    "for calls without one)",
			    po->po_name, policy_attr_name(a));
			return (-1);
		}
	}
	/* A per value the policy's own match refuses names a scope no call
	 * can have: raising it would do nothing. */
	for (a = 0; a < TAG_MAX; a++) {
		if (!po->po_per[a] || po->po_match[a] == NULL ||
		    policy_glob(po->po_match[a], per[a]))
			continue;
		snprintf(param, plen, "scope.%s", policy_attr_name(a));
		xasprintf(why,
		    "policy %s only counts %s values matching %s: no call "
		    "has this scope",
		    po->po_name, policy_attr_name(a), po->po_match[a]);
		return (-1);
	}
	return (0);
}

/* Queue x to the ledger's extensions table; -1 if the ledger is not open. */
static int
ext_keep(const struct extension *x)
{
	struct ledger_extension le;

	memset(&le, 0, sizeof(le));
	le.le_id = x->x_id;
	le.le_created_ms = x->x_created_ms;
	le.le_policy = x->x_policy;
	le.le_scope = x->x_scope;
	le.le_key = x->x_key;
	le.le_intent = x->x_intent;
	le.le_window = x->x_window;
	le.le_window_start_ms = x->x_window_start;
	le.le_ends_ms = x->x_ends_ms == POLICY_NEVER ? 0 : x->x_ends_ms;
	le.le_expires_ms =
	    x->x_expires_ms == POLICY_NEVER ? 0 : x->x_expires_ms;
	le.le_nusd = x->x_nusd;
	le.le_reason = x->x_reason;
	le.le_by = x->x_by;
	le.le_instance = x->x_origin;
	return (ledger_extension_add(&le) != 0 ? -1 : 0);
}

/* Put x at the end of the list and say so in the log. */
static void
ext_append(struct extension *x, const char *how)
{
	char esc[160], by[EXTENSION_BY_MAX * 4 + 1], usd[40];

	xl_list[xl_n++] = x;
	xl_gen++;
	usd_format(usd, sizeof(usd), x->x_nusd);
	log_escape(esc, sizeof(esc), x->x_reason, strlen(x->x_reason));
	log_escape(by, sizeof(by), x->x_by, strlen(x->x_by));
	log_info("extensions: %s raises policy %s's cap by $%s%s, granted by "
		 "%s: %s",
	    x->x_id, x->x_policy, usd, how, by, esc);
}

/*
 * Raise policy po's cap on the scope of the per-tag values per (as
 * extensions_scope read them) by nusd for the window in force at now,
 * granted by by for reason, until expires_ms (POLICY_NEVER: none asked)
 * or the window's end, whichever is first (a rolling window: one window
 * length from now). Queued to the ledger. 0 with *out the extension, or
 * -1 with *why (to free).
 */
int
extensions_add(const struct policy *po, const char *const *per, int64_t nusd,
    const char *reason, const char *by, int64_t expires_ms, int64_t now,
    const struct extension **out, char **why)
{
	const char *attr[POLICY_ATTR_MAX] = {NULL};
	struct extension *x;
	cJSON *scope;
	char win[32], *s;
	int64_t start, reset;
	int a;

	*out = NULL;
	if (po->po_cap_nusd == -1) {
		xasprintf(why, "policy %s has no hard_cap_usd to extend",
		    po->po_name);
		return (-1);
	}
	if (nusd <= 0 || nusd > EXTENSION_MAX_NUSD) {
		*why = xstrdup("usd must be more than 0 and at most 1000000");
		return (-1);
	}
	if (reason == NULL || reason[0] == '\0' ||
	    !utf8_text_ok(reason, EXTENSION_REASON_MAX)) {
		xasprintf(why,
		    "reason: 1 to %d bytes of UTF-8, no control characters",
		    EXTENSION_REASON_MAX);
		return (-1);
	}
	if (by == NULL || by[0] == '\0' ||
	    !utf8_text_ok(by, EXTENSION_BY_MAX)) {
		xasprintf(why,
		    "by: 1 to %d bytes of UTF-8, no control characters",
		    EXTENSION_BY_MAX);
		return (-1);
	}
	if (expires_ms != POLICY_NEVER && expires_ms <= now) {
		*why = xstrdup("expires: must be in the future");
		return (-1);
	}
	if (xl_n >= EXTENSIONS_MAX)
		extensions_expire(now);
	if (xl_n >= EXTENSIONS_MAX) {
		xasprintf(why, "too many live extensions (at most %d)",
		    EXTENSIONS_MAX);
		return (-1);
	}

	x = xcalloc(1, sizeof(*x));
	do
		random_id(x->x_id, sizeof(x->x_id), 'x');
	while (extensions_find(x->x_id, INT64_MIN) != NULL);
	for (a = 0; a < TAG_MAX; a++)
		if (po->po_per[a])
			attr[a] = per[a] != NULL ? per[a] : "";
	policy_window_at(&po->po_window, now, &start, &reset);
	x->x_policy = xstrdup(po->po_name);
	scope = policy_scope_json(po, attr);
	if ((s = cJSON_PrintUnformatted(scope)) == NULL)
		fatalx("%s: cJSON", __func__);
	x->x_scope = xstrdup(s);
	cJSON_free(s);
	cJSON_Delete(scope);
	x->x_key = policy_budget_key(po, attr, start);
	if (po->po_per[TAG_INTENT] && attr[TAG_INTENT][0] != '\0')
		x->x_intent = xstrdup(attr[TAG_INTENT]);
	x->x_window =
	    xstrdup(policy_window_name(&po->po_window, win, sizeof(win)));
	x->x_window_start = start;
	x->x_nusd = nusd;
	x->x_reason = xstrdup(reason);
	x->x_by = xstrdup(by);
	x->x_created_ms = now;
	x->x_expires_ms = expires_ms;
	if (po->po_window.pw_kind == POLICY_WIN_ROLLING)
		reset = now + po->po_window.pw_len_ms;
	x->x_ends_ms = expires_ms < reset ? expires_ms : reset;
	if (ext_keep(x) != 0) {
		ext_free(x);
		*why = xstrdup(
		    "the ledger is not open: the extension cannot be kept");
		return (-1);
	}
	ext_append(x, "");
	*out = x;
	return (0);
}

/*
 * Revoke the live extension id and queue it to the ledger. 0, or -1 if no
 * live extension has this id.
 */
int
extensions_revoke(const char *id, int64_t now)
{
	size_t i;

	for (i = 0; i < xl_n; i++)
		if (strcmp(xl_list[i]->x_id, id) == 0)
			break;
	if (i == xl_n || !ext_live(xl_list[i], now))
		return (-1);
	if (ledger_extension_revoke(id, now) != 0)
		log_warnx("extensions: %s: the ledger is not open; the "
			  "revocation will not survive a restart",
		    id);
	log_info("extensions: %s revoked", id);
	ext_free(ext_unlink(i));
	return (0);
}

/*
 * Does x, from the fleet, raise only what one made here could: a key
 * whose window part is its window and window start, an end no later than
 * that window's (a rolling one's: one window length after it was made),
 * an intent only when the scope is per intent? NULL, or what is wrong.
 */
static const char *
ext_bounds(struct extension *x)
{
	struct policy_window w;
	int64_t start, reset;
	char tail[96];
	size_t kl, tl;

	if (policy_parse_window(x->x_window, &w) != 0)
		return ("the window is not one a policy can have");
	switch (w.pw_kind) {
	case POLICY_WIN_ROLLING:
		snprintf(tail, sizeof(tail), "window{rolling:%lldm}@rolling",
		    (long long)(w.pw_len_ms / MIN_MS));
		reset = pcount_add(x->x_created_ms, w.pw_len_ms);
		break;
	default:
		policy_window_at(&w, x->x_window_start, &start, &reset);
		if (start != x->x_window_start)
			return ("window_start is not the start of a window");
		snprintf(tail, sizeof(tail), "window{%s}@%lld", x->x_window,
		    (long long)x->x_window_start);
		break;
	}
	kl = strlen(x->x_key);
	tl = strlen(tail);
	if (kl <= tl || strcmp(x->x_key + kl - tl, tail) != 0)
		return ("the key is not of this window and window start");
	if (reset != POLICY_NEVER && x->x_ends_ms > reset)
		return ("ends_at is past the end of the window it raises");
	/* A rolling raise ends a window length after it was made: made in
	 * the future, it would last as long as it likes. */
	if (x->x_created_ms > wallclock_ms() + EXTENSION_SKEW_MS)
		return ("created_at is in the future");
	if (x->x_intent != NULL &&
	    (strstr(x->x_key, "per{intent=") == NULL ||
		!tag_value_ok(x->x_intent, strlen(x->x_intent)))) {
		free(x->x_intent); /* a match pattern, not a per value */
		x->x_intent = NULL;
	}
	return (NULL);
}

/*
 * An extension from the JSON the fleet shares (extensions_json). It comes
 * from the network, so it is read strictly: an object of known fields,
 * each once; an id as this file makes them; a positive amount no larger
 * than one POST may ask; texts as POST takes them; times in RFC 3339.
 * instance and expires_at may be left out. Returns an extension in no
 * list (for extensions_adopt or extensions_discard), or NULL with *why.
 */
struct extension *
extensions_decode(const char *json, size_t len, char **why)
{
	static const char *const fields[] = {"id", "policy", "scope", "window",
	    "window_start", "usd", "nusd", "reason", "by", "created_at",
	    "expires_at", "ends_at", "key", "instance"};
	const cJSON *it, *scope = NULL;
	const char *v, *err = NULL, *bad = NULL;
	struct extension *x = NULL;
	cJSON *o, *keyscope;
	char *s;
	size_t i;

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
		if (i == nitems(fields)) {
			err = "unknown field";
			goto fail;
		}
		bad = fields[i];
		if (cJSON_GetObjectItemCaseSensitive(o, it->string) != it) {
			err = "field given twice";
			goto fail;
		}
	}
	x = xcalloc(1, sizeof(*x));
	x->x_learnt = 1;
	bad = "id";
	it = cJSON_GetObjectItemCaseSensitive(o, "id");
	if (!cJSON_IsString(it) || !random_id_ok(it->valuestring, 'x')) {
		err = "must be \"x_\" and 16 lower-case hex digits";
		goto fail;
	}
	snprintf(x->x_id, sizeof(x->x_id), "%s", it->valuestring);
	bad = "policy";
	if ((v = pfield_text(cJSON_GetObjectItemCaseSensitive(o, "policy"),
		 POLICY_NAME_MAX)) == NULL) {
		err = "must be a policy name";
		goto fail;
	}
	x->x_policy = xstrdup(v);
	bad = "scope";
	it = cJSON_GetObjectItemCaseSensitive(o, "scope");
	if (!cJSON_IsObject(it) || (s = cJSON_PrintUnformatted(it)) == NULL) {
		err = "must be an object";
		goto fail;
	}
	x->x_scope = xstrdup(s);
	cJSON_free(s);
	if (!utf8_text_ok(x->x_scope, 4096)) {
		err = "too long";
		goto fail;
	}
	scope = it;
	it = cJSON_GetObjectItemCaseSensitive(it, "intent");
	if (cJSON_IsString(it) && it->valuestring[0] != '\0')
		x->x_intent = xstrdup(it->valuestring);
	bad = "window";
	if ((v = pfield_text(
		 cJSON_GetObjectItemCaseSensitive(o, "window"), 16)) == NULL) {
		err = "must be a window name";
		goto fail;
	}
	x->x_window = xstrdup(v);
	bad = "key";
	if ((v = pfield_text(
		 cJSON_GetObjectItemCaseSensitive(o, "key"), 4096)) == NULL) {
		err = "must be a budget key";
		goto fail;
	}
	x->x_key = xstrdup(v);
	bad = "nusd";
	it = cJSON_GetObjectItemCaseSensitive(o, "nusd");
	if (!cJSON_IsNumber(it) || it->valuedouble < 1 ||
	    it->valuedouble > (double)EXTENSION_MAX_NUSD ||
	    it->valuedouble != (double)(int64_t)it->valuedouble) {
		err = "must be a whole number of nano-USD from 1 to 1e15";
		goto fail;
	}
	x->x_nusd = (int64_t)it->valuedouble;
	bad = "reason";
	if ((v = pfield_text(cJSON_GetObjectItemCaseSensitive(o, "reason"),
		 EXTENSION_REASON_MAX)) == NULL) {
		err = "must be 1 to 512 bytes of UTF-8 without control "
		      "characters";
		goto fail;
	}
	x->x_reason = xstrdup(v);
	bad = "by";
	if ((v = pfield_text(cJSON_GetObjectItemCaseSensitive(o, "by"),
		 EXTENSION_BY_MAX)) == NULL) {
		err = "must be 1 to 128 bytes of UTF-8 without control "
		      "characters";
		goto fail;
	}
	x->x_by = xstrdup(v);
	bad = "instance";
	it = cJSON_GetObjectItemCaseSensitive(o, "instance");
	if (it != NULL && !cJSON_IsNull(it)) {
		if ((v = pfield_text(
			 cJSON_GetObjectItemCaseSensitive(o, "instance"),
			 160)) == NULL) {
			err = "must be 1 to 160 bytes";
			goto fail;
		}
		x->x_origin = xstrdup(v);
	}
	bad = "window_start";
	if (pfield_time(cJSON_GetObjectItemCaseSensitive(o, "window_start"), 0,
		&x->x_window_start) != 0)
		goto badtime;
	bad = "created_at";
	if (pfield_time(cJSON_GetObjectItemCaseSensitive(o, "created_at"), 0,
		&x->x_created_ms) != 0)
		goto badtime;
	bad = "expires_at";
	if (pfield_time(cJSON_GetObjectItemCaseSensitive(o, "expires_at"), 1,
		&x->x_expires_ms) != 0)
		goto badtime;
	bad = "ends_at";
	if (pfield_time(cJSON_GetObjectItemCaseSensitive(o, "ends_at"), 1,
		&x->x_ends_ms) != 0)
		goto badtime;
	if ((err = ext_bounds(x)) != NULL) {
		bad = "key";
		goto fail;
	}
	/* The budget raised is the key's: the scope shown and audited must
	 * be the one it names, whatever the sender says. */
	bad = "scope";
	if ((keyscope = policy_scope_key_json(x->x_key)) == NULL ||
	    !cJSON_Compare(keyscope, scope, 1)) {
		err = "is not the scope the key names";
		cJSON_Delete(keyscope);
		goto fail;
	}
	cJSON_Delete(keyscope);
	cJSON_Delete(o);
	return (x);
badtime:
	err = "must be an RFC 3339 time";
fail:
	if (bad != NULL)
		xasprintf(why, "%s: %s", bad, err);
	else
		*why = xstrdup(err);
	ext_free(x);
	cJSON_Delete(o);
	return (NULL);
}

/* Free an extension extensions_decode made and nobody adopted. */
void
extensions_discard(struct extension *x)
{
	ext_free(x);
}

/*
 * Keep x (from extensions_decode; this takes it) under its own id, queue
 * it to the ledger, as extensions_add does for one made here. 0 with
 * *out the extension; 1 with *out the live one that has this id already
 * (nothing added); 2 if it has ended by now (nothing added, *out NULL);
 * -1 with *why. A ledger that cannot keep it does not stop it: the fleet
 * holds it.
 */
int
extensions_adopt(
    struct extension *x, int64_t now, const struct extension **out, char **why)
{
	char from[160 * 4 + 1];
	size_t i;

	*out = NULL;
	for (i = 0; i < xl_n; i++) {
		if (strcmp(xl_list[i]->x_id, x->x_id) != 0)
			continue;
		if (ext_live(xl_list[i], now)) {
			*out = xl_list[i];
			ext_free(x);
			return (1);
		}
		ext_free(ext_unlink(i)); /* an ended one makes way */
		break;
	}
	if (!ext_live(x, now)) {
		ext_free(x);
		return (2);
	}
	if (xl_n >= EXTENSIONS_MAX)
		extensions_expire(now);
	if (xl_n >= EXTENSIONS_MAX) {
		ext_free(x);
		xasprintf(why, "too many live extensions (at most %d)",
		    EXTENSIONS_MAX);
		return (-1);
	}
	if (ext_keep(x) != 0)
		log_warnx("extensions: %s: the ledger is not open; it is "
			  "applied but will not survive a restart here",
		    x->x_id);
	if (x->x_origin != NULL)
		log_escape(
		    from, sizeof(from), x->x_origin, strlen(x->x_origin));
	else
		snprintf(from, sizeof(from), "an unnamed instance");
	ext_append(x, " (from the fleet)");
	log_info("extensions: %s was made on %s", x->x_id, from);
	*out = x;
	return (0);
}

/* Is s a JSON object (a scope as the table keeps it)? */
static int
json_object(const char *s)
{
	cJSON *o;
	int ok;

	if (s == NULL || (o = cJSON_Parse(s)) == NULL)
		return (0);
	ok = cJSON_IsObject(o);
	cJSON_Delete(o);
	return (ok);
}

/* A nullable time column into *ms (POLICY_NEVER for NULL); -1 if bad. */
static int
col_time(sqlite3_stmt *st, int i, int64_t *ms)
{
	const char *t = pfield_col(st, i);

	*ms = POLICY_NEVER;
	return (t != NULL ? spend_parse_time(t, 0, ms) : 0);
}

/*
 * Replace the list by the live extensions of the ledger's extensions
 * table (not revoked, not ended at now), read on ro, a read-only
 * connection (spend_open). For start-up, after ledger_open. A row that
 * cannot be read back is skipped with a warning. 0, or -1 with *cause.
 */
int
extensions_load(sqlite3 *ro, int64_t now, char **cause)
{
	static const char sql[] =
	    "SELECT id, created_at, policy, scope, budget_key, intent, window,"
	    " window_start, ends_at, expires_at, nusd, reason, granted_by,"
	    " instance FROM extensions WHERE revoked_at IS NULL"
	    " AND (ends_at IS NULL OR ends_at > ?1)"
	    " ORDER BY created_at, id";
	char nowbuf[SPEND_TIME_MAX];
	sqlite3_stmt *st = NULL;
	struct extension *x;
	const char *t[14];
	int rc, i;

	extensions_free_all();
	if (spend_format_time(now, nowbuf, sizeof(nowbuf)) != 0) {
		*cause = xstrdup("extensions: bad time");
		return (-1);
	}
	if (sqlite3_prepare_v2(ro, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, nowbuf, -1, SQLITE_STATIC) != SQLITE_OK) {
		xasprintf(cause, "extensions: %s", sqlite3_errmsg(ro));
		sqlite3_finalize(st);
		return (-1);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (i = 0; i < 14; i++)
			t[i] = pfield_col(st, i);
		x = xcalloc(1, sizeof(*x));
		if (t[0] == NULL || !random_id_ok(t[0], 'x') || t[1] == NULL ||
		    spend_parse_time(t[1], 0, &x->x_created_ms) != 0 ||
		    t[2] == NULL || t[3] == NULL || t[4] == NULL ||
		    t[6] == NULL || t[7] == NULL ||
		    spend_parse_time(t[7], 0, &x->x_window_start) != 0 ||
		    col_time(st, 8, &x->x_ends_ms) != 0 ||
		    col_time(st, 9, &x->x_expires_ms) != 0 ||
		    (x->x_nusd = sqlite3_column_int64(st, 10)) <= 0 ||
		    x->x_nusd > EXTENSION_MAX_NUSD || !json_object(t[3]) ||
		    t[11] == NULL ||
		    !utf8_text_ok(t[11], EXTENSION_REASON_MAX) ||
		    t[12] == NULL || !utf8_text_ok(t[12], EXTENSION_BY_MAX)) {
			log_warnx("extensions: a row of the extensions table "
				  "cannot be read back; skipped");
			ext_free(x);
			continue;
		}
		if (xl_n >= EXTENSIONS_MAX) {
			log_warnx("extensions: more than %d live extensions "
				  "in the ledger; the newest are ignored",
			    EXTENSIONS_MAX);
			ext_free(x);
			break;
		}
		snprintf(x->x_id, sizeof(x->x_id), "%s", t[0]);
		x->x_policy = xstrdup(t[2]);
		x->x_scope = xstrdup(t[3]);
		x->x_key = xstrdup(t[4]);
		x->x_intent = t[5] != NULL ? xstrdup(t[5]) : NULL;
		x->x_window = xstrdup(t[6]);
		x->x_reason = xstrdup(t[11]);
		x->x_by = xstrdup(t[12]);
		x->x_origin = t[13] != NULL ? xstrdup(t[13]) : NULL;
		x->x_learnt = x->x_origin != NULL;
		xl_list[xl_n++] = x;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		xasprintf(cause, "extensions: %s", sqlite3_errmsg(ro));
		sqlite3_finalize(st);
		extensions_free_all();
		return (-1);
	}
	sqlite3_finalize(st);
	xl_gen++;
	if (xl_n > 0)
		log_info("extensions: %zu live extensions restored from the "
			 "ledger",
		    xl_n);
	return (0);
}
