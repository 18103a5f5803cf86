/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading the ledger's alerts table, on read-only connections only:
 * GET /v1/alerts (alerts_answer, on the admin reader thread) and the
 * restore of alert state after policy_rebuild (alerts_restore, at start-up
 * and reload). A persisted threshold firing is matched to a policy by
 * recomputing that policy's scope key from the stored tag values and
 * comparing it with the stored key, so a renamed policy keeps its state
 * and a policy whose match, per or window changed does not inherit any.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/alerts.h"
#include "tollgate/policy.h"
#include "tollgate/spend.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

#include "alerts_int.h"

/* Append a string literal, its length counted by the compiler. */
#define ADD(o, lit) spend_out_add((o), (lit), sizeof(lit) - 1)

#define ALERTS_QUERY_MAX 4096 /* bytes of a /v1/alerts query string */

/* Columns of both queries, in this order. */
#define ALERT_COLUMNS                                                          \
	"id, fired_at, kind, policy, scope_key, intent, team, tenant,"         \
	" agent_class, environment, window, window_start, reset_at,"           \
	" threshold_nusd, spent_nusd, cap_nusd, message, delivery, attempts"

static const char *
col_text(sqlite3_stmt *st, int i)
{
	return ((const char *)sqlite3_column_text(st, i));
}

/* A stored time, or dflt when NULL or unreadable. */
static int64_t
col_time(sqlite3_stmt *st, int i, int64_t dflt)
{
	const char *s = col_text(st, i);
	int64_t ms;

	if (s == NULL || spend_parse_time(s, 0, &ms) != 0)
		return (dflt);
	return (ms);
}

static int64_t
col_nusd(sqlite3_stmt *st, int i)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return (-1);
	return (sqlite3_column_int64(st, i));
}

/* The alert of the current row; its strings live until the next step. */
static void
row_alert(sqlite3_stmt *st, struct alert *a)
{
	int t;

	memset(a, 0, sizeof(*a));
	a->al_at_ms = col_time(st, 1, -1);
	a->al_kind = col_text(st, 2);
	a->al_policy = col_text(st, 3);
	a->al_scope_key = col_text(st, 4);
	for (t = 0; t < TAG_MAX; t++)
		a->al_tags[t] = col_text(st, 5 + t);
	a->al_window = col_text(st, 10);
	a->al_window_start = col_time(st, 11, -1);
	a->al_reset_at = col_time(st, 12, POLICY_NEVER);
	a->al_threshold_nusd = col_nusd(st, 13);
	a->al_spent_nusd = sqlite3_column_int64(st, 14);
	a->al_cap_nusd = col_nusd(st, 15);
	a->al_message = col_text(st, 16);
}

/* One query parameter; 0, or -1 with *cause naming it. */
static int
set_param(const char *name, const char *v, int64_t *since, int *limit,
    unsigned *seen, char **cause)
{
	char *end;
	long n;

	if (strcmp(name, "since") == 0) {
		if (*seen & 1) {
			*cause = xstrdup("since: given twice");
			return (-1);
		}
		*seen |= 1;
		if (spend_parse_time(v, 0, since) != 0) {
			*cause = xstrdup("since: expected YYYY-MM-DD or RFC "
					 "3339 (2026-11-28T14:23:00Z)");
			return (-1);
		}
		return (0);
	}
	if (strcmp(name, "limit") == 0) {
		if (*seen & 2) {
			*cause = xstrdup("limit: given twice");
			return (-1);
		}
		*seen |= 2;
		n = 0;
		if (*v >= '0' && *v <= '9' && strlen(v) <= 5)
			n = strtol(v, &end, 10);
		else
			end = NULL;
		if (end == NULL || *end != '\0' || n < 1 ||
		    n > ALERTS_LIMIT_MAX) {
			xasprintf(cause,
			    "limit: expected a number from 1 to %d",
			    ALERTS_LIMIT_MAX);
			return (-1);
		}
		*limit = (int)n;
		return (0);
	}
	xasprintf(cause, "unknown parameter '%s'", name);
	return (-1);
}

/* A parameter name fit for a message: [a-z0-9_] kept, the rest '?'. */
static void
safe_name(char *buf, size_t len, const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < len; i++)
		buf[i] = (s[i] >= 'a' && s[i] <= 'z') ||
			(s[i] >= '0' && s[i] <= '9') || s[i] == '_'
		    ? s[i]
		    : '?';
	buf[i] = '\0';
}

/* Parse since= and limit=; -1 with *cause naming the bad parameter. */
static int
parse_query(const char *qs, int64_t *since, int *limit, char **cause)
{
	char *copy, *p, *next, *eq, safe[80];
	unsigned seen = 0;
	int rc = -1;

	*since = -1;
	*limit = ALERTS_LIMIT_DEFAULT;
	if (strlen(qs) > ALERTS_QUERY_MAX) {
		xasprintf(
		    cause, "query: longer than %d bytes", ALERTS_QUERY_MAX);
		return (-1);
	}
	copy = xstrdup(qs);
	for (p = copy; p != NULL; p = next) {
		if ((next = strchr(p, '&')) != NULL)
			*next++ = '\0';
		if (*p == '\0')
			continue;
		eq = strchr(p, '=');
		if (eq != NULL)
			*eq = '\0';
		if (spend_form_decode(p) != 0) {
			*cause = xstrdup("bad percent-encoding in a parameter "
					 "name");
			goto out;
		}
		safe_name(safe, sizeof(safe), p);
		if (eq == NULL) {
			xasprintf(cause, "%s: expected %s=VALUE", safe, safe);
			goto out;
		}
		if (spend_form_decode(eq + 1) != 0) {
			xasprintf(cause, "%s: bad percent-encoding", safe);
			goto out;
		}
		if (set_param(safe, eq + 1, since, limit, &seen, cause) != 0)
			goto out;
	}
	rc = 0;
out:
	free(copy);
	return (rc);
}

/*
 * GET /v1/alerts on the read-only connection db: {"alerts":[...]} newest
 * first, at most limit (default 100, at most 1000), fired at or after
 * since. Returns the HTTP status: 200 with *ctype, 400 with *cause naming
 * the parameter, 413 when the answer is too large, 500 when the query
 * fails.
 */
int
alerts_answer(sqlite3 *db, const char *qs, struct spend_out *o,
    const char **ctype, char **cause)
{
	static const char sql[] = "SELECT " ALERT_COLUMNS " FROM alerts"
				  " WHERE fired_at >= ?1"
				  " ORDER BY fired_at DESC, id DESC LIMIT ?2";
	sqlite3_stmt *st = NULL;
	struct alert a;
	char since_text[SPEND_TIME_MAX];
	const char *delivery;
	int64_t since;
	int limit, rc, n = 0;

	*ctype = "application/json";
	if (parse_query(qs != NULL ? qs : "", &since, &limit, cause) != 0)
		return (400);
	if (since < 0 ||
	    spend_format_time(since, since_text, sizeof(since_text)) != 0)
		since_text[0] = '\0';
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, since_text, -1, SQLITE_TRANSIENT) !=
		SQLITE_OK ||
	    sqlite3_bind_int(st, 2, limit) != SQLITE_OK)
		goto fail;
	ADD(o, "{\"alerts\":[");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row_alert(st, &a);
		if (n++ > 0)
			ADD(o, ",");
		delivery = col_text(st, 17);
		alerts_body_json(&a, col_text(st, 0),
		    delivery != NULL ? delivery : "none",
		    sqlite3_column_int(st, 18), o);
	}
	if (rc != SQLITE_DONE)
		goto fail;
	ADD(o, "]}\n");
	sqlite3_finalize(st);
	if (o->so_full) {
		*cause = xstrdup("the answer is too large; lower limit");
		return (413);
	}
	return (200);
fail:
	xasprintf(cause, "alerts query: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return (500);
}

/* Does the persisted firing at fired still belong to po's window at now? */
static int
same_window(const struct policy *po, int64_t fired, int64_t now)
{
	int64_t s1, r1, s2, r2, len;

	if (fired > now)
		return (0);
	switch (po->po_window.pw_kind) {
	case POLICY_WIN_TOTAL:
		return (1);
	case POLICY_WIN_ROLLING:
		/* policy_fired re-arms one window (61 buckets) after. */
		len = po->po_window.pw_len_ms;
		return (fired + len + len / 60 > now);
	default:
		policy_window_at(&po->po_window, fired, &s1, &r1);
		policy_window_at(&po->po_window, now, &s2, &r2);
		return (s1 == s2);
	}
}

/* Is t one of po's thresholds? */
static int
has_threshold(const struct policy *po, int64_t t)
{
	size_t i;

	for (i = 0; i < po->po_nalerts; i++)
		if (po->po_alerts[i] == t)
			return (1);
	return (0);
}

/*
 * After policy_rebuild: mark as fired every threshold firing persisted for
 * the current windows of set's policies at now, read from the alerts
 * table through the read-only connection ro, so a restart or reload
 * neither repeats an alert nor forgets one. 0, or -1 with *cause set.
 */
int
alerts_restore(struct policy_counters *pc, const struct policyset *set,
    sqlite3 *ro, int64_t now, char **cause)
{
	static const char sql[] =
	    "SELECT fired_at, scope_key, intent, team, tenant, agent_class,"
	    " environment, threshold_nusd FROM alerts"
	    " WHERE kind = 'threshold' AND fired_at >= ?1"
	    " AND scope_key IS NOT NULL AND threshold_nusd IS NOT NULL";
	const struct policy *po;
	const char *attr[POLICY_ATTR_MAX];
	const char *stored;
	sqlite3_stmt *st = NULL;
	char from_text[SPEND_TIME_MAX], *key;
	int64_t from = now, s, r, fired, thr, len;
	size_t i;
	int t, rc, any = 0;

	if (set == NULL || set->ps_n == 0)
		return (0);
	/* The earliest window start of any policy with thresholds. */
	for (i = 0; i < set->ps_n; i++) {
		po = &set->ps_pol[i];
		if (po->po_nalerts == 0)
			continue;
		any = 1;
		if (po->po_window.pw_kind == POLICY_WIN_ROLLING) {
			len = po->po_window.pw_len_ms;
			s = now - len - len / 60;
		} else
			policy_window_at(&po->po_window, now, &s, &r);
		if (s < from)
			from = s;
	}
	if (!any)
		return (0);
	if (from < 0 ||
	    spend_format_time(from, from_text, sizeof(from_text)) != 0)
		from_text[0] = '\0';
	if (sqlite3_prepare_v2(ro, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, from_text, -1, SQLITE_TRANSIENT) !=
		SQLITE_OK)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((fired = col_time(st, 0, -1)) < 0 ||
		    (stored = col_text(st, 1)) == NULL)
			continue;
		thr = sqlite3_column_int64(st, 7);
		memset(attr, 0, sizeof(attr));
		for (t = 0; t < TAG_MAX; t++)
			attr[t] = col_text(st, 2 + t);
		for (i = 0; i < set->ps_n; i++) {
			po = &set->ps_pol[i];
			if (!has_threshold(po, thr) ||
			    !same_window(po, fired, now))
				continue;
			key = policy_scope_key(po, attr);
			if (strcmp(key, stored) == 0)
				policy_alert_mark(po, pc, attr, fired, thr);
			free(key);
		}
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return (0);
fail:
	xasprintf(cause, "restoring alert state: %s", sqlite3_errmsg(ro));
	sqlite3_finalize(st);
	return (-1);
}

/*
 * Send again every alert the ledger still has as pending that fired in
 * the last ALERTS_RESUME_MS before now, read through the read-only
 * connection ro: at start-up, after alerts_setup and alerts_configure, so
 * a restart does not forget a delivery. 0, or -1 with *cause set.
 */
int
alerts_resume(sqlite3 *ro, int64_t now, char **cause)
{
	static const char sql[] = "SELECT " ALERT_COLUMNS " FROM alerts"
				  " WHERE delivery = 'pending'"
				  " AND fired_at >= ?1"
				  " ORDER BY fired_at, id LIMIT ?2";
	sqlite3_stmt *st = NULL;
	struct alert a;
	char from[SPEND_TIME_MAX];
	const char *id;
	int rc;

	if (spend_format_time(
		now - ALERTS_RESUME_MS > 0 ? now - ALERTS_RESUME_MS : 0, from,
		sizeof(from)) != 0)
		from[0] = '\0';
	if (sqlite3_prepare_v2(ro, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, from, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
	    sqlite3_bind_int(st, 2, ALERTS_PENDING_MAX) != SQLITE_OK)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((id = col_text(st, 0)) == NULL)
			continue;
		row_alert(st, &a);
		alerts_requeue(&a, id);
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return (0);
fail:
	xasprintf(cause, "resuming alert deliveries: %s", sqlite3_errmsg(ro));
	sqlite3_finalize(st);
	return (-1);
}
