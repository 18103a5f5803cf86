/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate top's reads: the admin API over a blocking libcurl handle (a
 * command line tool has nothing else to do meanwhile), its JSON answers
 * turned into a struct top_snap, and each budget's burn rate from the
 * spend samples of the last minute. A failed read leaves a snapshot that
 * only says why, so the screen shows the reason and the next refresh
 * tries again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "tollgate/adminc.h"
#include "tollgate/buf.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "top_int.h"

/* Tags a budget's scope may carry that a kill can match. */
static const char *const kill_attrs[] = {"intent", "team", "tenant",
    "agent_class", "environment", "model", "provider"};

/* GET path as a JSON object into *doc, or -1 with a reason in s. */
static int
get_json(struct adminc *tc, struct top_snap *s, const char *path, cJSON **doc)
{
	char *body, *cause = NULL;
	const cJSON *err;
	long status;

	*doc = NULL;
	if (adminc_request(tc, "GET", path, NULL, &body, &status, &cause) !=
	    0) {
		snprintf(s->ts_error, sizeof(s->ts_error),
		    "admin API unreachable: %s", cause);
		free(cause);
		return (-1);
	}
	*doc = cJSON_Parse(body);
	free(body);
	if (status != 200) {
		err = cJSON_GetObjectItemCaseSensitive(*doc, "error");
		snprintf(s->ts_error, sizeof(s->ts_error),
		    "admin API: %s answered %ld%s%s", path, status,
		    cJSON_IsString(err) ? ": " : "",
		    cJSON_IsString(err) ? err->valuestring : "");
		cJSON_Delete(*doc);
		*doc = NULL;
		return (-1);
	}
	if (!cJSON_IsObject(*doc)) {
		snprintf(s->ts_error, sizeof(s->ts_error),
		    "admin API: %s answered something that is not JSON", path);
		cJSON_Delete(*doc);
		*doc = NULL;
		return (-1);
	}
	return (0);
}

static const char *
str_of(const cJSON *o, const char *name, const char *dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return (cJSON_IsString(v) ? v->valuestring : dflt);
}

static double
num_of(const cJSON *o, const char *name, double dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return (cJSON_IsNumber(v) ? v->valuedouble : dflt);
}

/* "k=v k=v" of an object of strings ("(none)" for ""); to free. */
static char *
pairs_text(const cJSON *o)
{
	const cJSON *v;
	struct buf b;
	char *s;

	buf_init(&b, 64 * 1024, 0, BUF_NUL);
	cJSON_ArrayForEach(v, o)
	{
		if (!cJSON_IsString(v))
			continue;
		buf_addf(&b, "%s%s=%s", buf_len(&b) > 0 ? " " : "", v->string,
		    v->valuestring[0] != '\0' ? v->valuestring : "(none)");
	}
	if (buf_len(&b) == 0)
		buf_addf(&b, "(all calls)");
	s = buf_take(&b, NULL);
	buf_free(&b);
	return (s != NULL ? s : xstrdup(""));
}

/*
 * A kill's match as canonical JSON: the attributes a kill takes, in the
 * API's order, with non-empty values. From a budget's scope that drops
 * its "" values (calls without the tag), which no kill pattern can say.
 * NULL when nothing is left.
 */
static char *
match_json(const cJSON *o)
{
	const cJSON *v;
	cJSON *m;
	size_t i;
	char *s;

	if ((m = cJSON_CreateObject()) == NULL)
		fatalx("%s: cJSON", __func__);
	for (i = 0; i < nitems(kill_attrs); i++) {
		v = cJSON_GetObjectItemCaseSensitive(o, kill_attrs[i]);
		if (cJSON_IsString(v) && v->valuestring[0] != '\0' &&
		    cJSON_AddStringToObject(m, kill_attrs[i], v->valuestring) ==
			NULL)
			fatalx("%s: cJSON", __func__);
	}
	s = cJSON_GetArraySize(m) > 0 ? cJSON_PrintUnformatted(m) : NULL;
	cJSON_Delete(m);
	return (s);
}

/* Free what a snapshot holds; it can be filled again. */
void
top_snap_free(struct top_snap *s)
{
	size_t i;

	for (i = 0; i < s->ts_nbudgets; i++) {
		free(s->ts_budgets[i].tb_key);
		free(s->ts_budgets[i].tb_policy);
		free(s->ts_budgets[i].tb_scope);
		free(s->ts_budgets[i].tb_match);
		free(s->ts_budgets[i].tb_scope_json);
		free(s->ts_budgets[i].tb_state);
		free(s->ts_budgets[i].tb_window);
		free(s->ts_budgets[i].tb_reset);
	}
	free(s->ts_budgets);
	for (i = 0; i < s->ts_nkills; i++) {
		free(s->ts_kills[i].tk_id);
		free(s->ts_kills[i].tk_match);
		free(s->ts_kills[i].tk_match_json);
		free(s->ts_kills[i].tk_reason);
		free(s->ts_kills[i].tk_expires);
	}
	free(s->ts_kills);
	for (i = 0; i < s->ts_nexts; i++) {
		free(s->ts_exts[i].tx_id);
		free(s->ts_exts[i].tx_policy);
		free(s->ts_exts[i].tx_scope);
		free(s->ts_exts[i].tx_by);
		free(s->ts_exts[i].tx_reason);
		free(s->ts_exts[i].tx_created);
		free(s->ts_exts[i].tx_ends);
	}
	free(s->ts_exts);
	memset(s, 0, sizeof(*s));
}

static int
ext_cmp(const void *a, const void *b)
{
	const struct top_ext *x = a, *y = b;
	int c;

	/*
	 * RFC 3339 UTC times of one format sort as text; two made in one
	 * millisecond keep the order the API gave them.
	 */
	if ((c = strcmp(x->tx_created, y->tx_created)) != 0)
		return (c);
	return (x->tx_seq < y->tx_seq ? -1 : x->tx_seq > y->tx_seq);
}

/*
 * The live extensions a budget lists, each kept once: every policy that
 * names the same scope lists the same extension.
 */
static void
read_exts(struct top_snap *s, const cJSON *b)
{
	const cJSON *arr, *x, *ends;
	struct top_ext *tx;
	const char *id;
	size_t i;

	arr = cJSON_GetObjectItemCaseSensitive(b, "extensions");
	cJSON_ArrayForEach(x, arr)
	{
		id = str_of(x, "id", NULL);
		if (id == NULL)
			continue;
		for (i = 0; i < s->ts_nexts; i++)
			if (strcmp(s->ts_exts[i].tx_id, id) == 0)
				break;
		if (i < s->ts_nexts)
			continue;
		s->ts_exts = xreallocarray(
		    s->ts_exts, s->ts_nexts + 1, sizeof(*s->ts_exts));
		tx = &s->ts_exts[s->ts_nexts++];
		tx->tx_id = xstrdup(id);
		tx->tx_policy = xstrdup(str_of(x, "policy", ""));
		tx->tx_scope =
		    pairs_text(cJSON_GetObjectItemCaseSensitive(x, "scope"));
		tx->tx_by = xstrdup(str_of(x, "by", ""));
		tx->tx_reason = xstrdup(str_of(x, "reason", ""));
		tx->tx_created = xstrdup(str_of(x, "created_at", ""));
		ends = cJSON_GetObjectItemCaseSensitive(x, "ends_at");
		tx->tx_ends =
		    xstrdup(cJSON_IsString(ends) ? ends->valuestring : "");
		tx->tx_nusd = num_of(x, "nusd", 0);
		tx->tx_seq = s->ts_nexts - 1;
	}
}

static void
read_budgets(struct top_snap *s, const cJSON *doc)
{
	const cJSON *arr, *b, *scope;
	struct top_budget *tb;
	cJSON *key;
	size_t n;

	arr = cJSON_GetObjectItemCaseSensitive(doc, "budgets");
	n = cJSON_IsArray(arr) ? (size_t)cJSON_GetArraySize(arr) : 0;
	s->ts_budgets = xcalloc(n > 0 ? n : 1, sizeof(*s->ts_budgets));
	cJSON_ArrayForEach(b, arr)
	{
		if (s->ts_nbudgets == n)
			break;
		tb = &s->ts_budgets[s->ts_nbudgets++];
		scope = cJSON_GetObjectItemCaseSensitive(b, "scope");
		if ((key = cJSON_CreateArray()) == NULL ||
		    !cJSON_AddItemToArray(
			key, cJSON_CreateString(str_of(b, "policy", ""))) ||
		    !cJSON_AddItemToArray(key,
			scope != NULL ? cJSON_Duplicate(scope, 1)
				      : cJSON_CreateNull()) ||
		    !cJSON_AddItemToArray(
			key, cJSON_CreateString(str_of(b, "window_start", ""))))
			fatalx("%s: cJSON", __func__);
		if ((tb->tb_key = cJSON_PrintUnformatted(key)) == NULL)
			fatalx("%s: cJSON", __func__);
		cJSON_Delete(key);
		tb->tb_policy = xstrdup(str_of(b, "policy", ""));
		tb->tb_scope = pairs_text(scope);
		tb->tb_match = match_json(scope);
		if ((tb->tb_scope_json = cJSON_PrintUnformatted(scope)) == NULL)
			tb->tb_scope_json = xstrdup("{}");
		tb->tb_state = xstrdup(str_of(b, "state", "?"));
		tb->tb_window = xstrdup(str_of(b, "window", ""));
		tb->tb_reset = xstrdup(str_of(b, "reset_at", ""));
		tb->tb_spent_nusd = num_of(b, "spent_nusd", 0);
		tb->tb_reserved_nusd = num_of(b, "reserved_nusd", 0);
		tb->tb_cap_nusd = num_of(b, "cap_nusd", -1);
		/* An older tollgate has no extensions: its cap is configured. */
		tb->tb_hard_cap_nusd =
		    num_of(b, "hard_cap_nusd", tb->tb_cap_nusd);
		tb->tb_ext_nusd = num_of(b, "extended_nusd", 0);
		read_exts(s, b);
	}
	if (s->ts_nexts > 1)
		qsort(s->ts_exts, s->ts_nexts, sizeof(*s->ts_exts), ext_cmp);
}

static void
read_kills(struct top_snap *s, const cJSON *doc)
{
	const cJSON *arr, *k, *m;
	struct top_kill *tk;
	size_t n;

	arr = cJSON_GetObjectItemCaseSensitive(doc, "kills");
	n = cJSON_IsArray(arr) ? (size_t)cJSON_GetArraySize(arr) : 0;
	s->ts_kills = xcalloc(n > 0 ? n : 1, sizeof(*s->ts_kills));
	cJSON_ArrayForEach(k, arr)
	{
		if (s->ts_nkills == n)
			break;
		tk = &s->ts_kills[s->ts_nkills++];
		m = cJSON_GetObjectItemCaseSensitive(k, "match");
		tk->tk_id = xstrdup(str_of(k, "id", ""));
		tk->tk_match = pairs_text(m);
		tk->tk_match_json = match_json(m);
		tk->tk_reason = xstrdup(str_of(k, "reason", ""));
		tk->tk_expires = xstrdup(str_of(k, "expires_at", "never"));
	}
}

/* How many rows a /v1/calls answer has, and whether there are more. */
static long
count_calls(const cJSON *doc, int *more)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(doc, "calls");
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(doc, "next_cursor");

	*more = cJSON_IsString(c);
	return (cJSON_IsArray(a) ? (long)cJSON_GetArraySize(a) : 0);
}

/* RFC 3339 UTC of Unix ms t, to the second, into buf. */
static void
utc_text(int64_t t, char *buf, size_t len, int day_only)
{
	time_t secs = (time_t)(t / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	strftime(buf, len, day_only ? "%Y-%m-%d" : "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Read everything the screen shows into s (emptied first), at now_ms. */
void
top_fetch(struct adminc *tc, struct top_snap *s, int64_t now_ms)
{
	cJSON *budgets = NULL, *kills = NULL, *inflight = NULL;
	cJSON *refused = NULL, *spend = NULL;
	char path[128], t[32];

	top_snap_free(s);
	s->ts_at_ms = now_ms;
	if (get_json(tc, s, "/v1/budgets", &budgets) != 0 ||
	    get_json(tc, s, "/v1/kills", &kills) != 0 ||
	    get_json(
		tc, s, "/v1/calls?status=in_flight&limit=1000", &inflight) != 0)
		goto out;
	utc_text(now_ms - 60000, t, sizeof(t), 0);
	snprintf(path, sizeof(path),
	    "/v1/calls?status=refused&limit=1000&from=%s", t);
	if (get_json(tc, s, path, &refused) != 0)
		goto out;
	utc_text(now_ms, t, sizeof(t), 1);
	snprintf(path, sizeof(path), "/v1/spend?from=%s", t);
	if (get_json(tc, s, path, &spend) != 0)
		goto out;
	read_budgets(s, budgets);
	read_kills(s, kills);
	s->ts_inflight = count_calls(inflight, &s->ts_inflight_more);
	s->ts_refused_60s = count_calls(refused, &s->ts_refused_more);
	s->ts_today_nusd = num_of(spend, "total_cost_nusd", 0);
	s->ts_ok = 1;
out:
	cJSON_Delete(budgets);
	cJSON_Delete(kills);
	cJSON_Delete(inflight);
	cJSON_Delete(refused);
	cJSON_Delete(spend);
}

/*
 * Each budget's burn: the settled spend it gained over its samples (up to
 * a minute), per hour. A budget seen for the first time burns 0 until the
 * next sample; a window that reset (spend went down) starts over.
 */
void
top_burn(struct top_snap *s, struct top_hist **hp, size_t *nh, int64_t now_ms)
{
	struct top_hist *h;
	struct top_budget *tb;
	size_t i, j, k;
	int last;

	for (j = 0; j < *nh; j++)
		(*hp)[j].th_seen = 0;
	for (i = 0; i < s->ts_nbudgets; i++) {
		tb = &s->ts_budgets[i];
		for (j = 0; j < *nh; j++)
			if (strcmp((*hp)[j].th_key, tb->tb_key) == 0)
				break;
		if (j == *nh) {
			*hp = xreallocarray(*hp, *nh + 1, sizeof(**hp));
			memset(&(*hp)[j], 0, sizeof(**hp));
			(*hp)[j].th_key = xstrdup(tb->tb_key);
			(*nh)++;
		}
		h = &(*hp)[j];
		h->th_seen = 1;
		last = (h->th_head + h->th_n - 1) % TOP_HIST_MAX;
		if (h->th_n > 0 && tb->tb_spent_nusd < h->th_spent[last])
			h->th_n = 0;
		if (h->th_n == TOP_HIST_MAX) {
			h->th_head = (h->th_head + 1) % TOP_HIST_MAX;
			h->th_n--;
		}
		k = (size_t)(h->th_head + h->th_n) % TOP_HIST_MAX;
		h->th_t[k] = now_ms;
		h->th_spent[k] = tb->tb_spent_nusd;
		h->th_n++;
		tb->tb_burn_nusd_h = 0;
		if (h->th_n > 1 && now_ms > h->th_t[h->th_head])
			tb->tb_burn_nusd_h =
			    (tb->tb_spent_nusd - h->th_spent[h->th_head]) *
			    3600000.0 / (double)(now_ms - h->th_t[h->th_head]);
	}
	/* Forget budgets that are gone (their window ended). */
	for (j = 0; j < *nh;) {
		if ((*hp)[j].th_seen) {
			j++;
			continue;
		}
		free((*hp)[j].th_key);
		(*hp)[j] = (*hp)[*nh - 1];
		(*nh)--;
	}
}

/* Free the burn history. */
void
top_hist_free(struct top_hist *h, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(h[i].th_key);
	free(h);
}
