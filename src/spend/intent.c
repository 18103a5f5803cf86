/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One intent's timeline, for GET /v1/intents/{id} and tollgate intent ID:
 * every call of the intent (refusals and external costs among them: they
 * are rows of the calls table), the alerts of scopes that name it, the
 * kills whose match covers it and the budget extensions of its scopes,
 * newest limit of them in time order, with totals over every row of the
 * intent however many. Read through the calls table's (intent,
 * started_at) and the extensions table's (intent, created_at) indexes, so
 * it is quick on a ledger of millions of rows; the columns of a call are
 * read by name, and a table an older tollgate did not make (alerts,
 * kills, extensions) has nothing to show, so a ledger an older tollgate
 * wrote answers too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/spend.h"
#include "tollgate/util.h"

/* One event of the timeline: its time and its JSON or table line. */
struct event {
	char ev_at[SPEND_TIME_MAX];
	char ev_id[72];
	char *ev_text; /* owned */
};

struct events {
	struct event *e_v;
	size_t e_n;
	size_t e_cap;
};

/* Columns a call event shows, by name: text or integer. */
static const struct {
	const char *c_name;
	int c_int;
} call_cols[] = {
    {"id", 0},
    {"endpoint", 0},
    {"provider", 0},
    {"upstream", 0},
    {"model", 0},
    {"served_model", 0},
    {"status", 0},
    {"http_status", 1},
    {"refusal_reason", 0},
    {"team", 0},
    {"tenant", 0},
    {"agent_class", 0},
    {"environment", 0},
    {"stream", 1},
    {"input_tokens", 1},
    {"output_tokens", 1},
    {"cached_input_tokens", 1},
    {"cache_write_tokens", 1},
    {"reasoning_tokens", 1},
    {"usage_source", 0},
    {"cost_nusd", 1},
    {"latency_ms", 1},
    {"ttfb_ms", 1},
    {"routed_from", 0},
    {"routed_rule", 0},
    {"saved_nusd", 1},
    {"attempts", 1},
    {"attempt_log", 0},
    {"cache_hit", 1},
    {"units", 1},
};

static void
events_free(struct events *ev)
{
	size_t i;

	for (i = 0; i < ev->e_n; i++)
		free(ev->e_v[i].ev_text);
	free(ev->e_v);
}

static struct event *
events_add(struct events *ev, const char *at, const char *id)
{
	struct event *e;

	if (ev->e_n == ev->e_cap) {
		ev->e_cap = ev->e_cap == 0 ? 64 : ev->e_cap * 2;
		ev->e_v = xreallocarray(ev->e_v, ev->e_cap, sizeof(*ev->e_v));
	}
	e = &ev->e_v[ev->e_n++];
	memset(e, 0, sizeof(*e));
	snprintf(e->ev_at, sizeof(e->ev_at), "%s", at != NULL ? at : "");
	snprintf(e->ev_id, sizeof(e->ev_id), "%s", id != NULL ? id : "");
	return (e);
}

/* Oldest first; equal times by id, so the order is stable. */
static int
event_cmp(const void *a, const void *b)
{
	const struct event *x = a, *y = b;
	int c;

	if ((c = strcmp(x->ev_at, y->ev_at)) != 0)
		return (c);
	return (strcmp(x->ev_id, y->ev_id));
}

/*
 * sql prepared on db with the intent bound to ?1 and, when limit >= 0,
 * limit to ?2; NULL when either fails.
 */
static sqlite3_stmt *
intent_stmt(sqlite3 *db, const char *sql, const char *intent, int limit)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, intent, -1, SQLITE_TRANSIENT) !=
		SQLITE_OK ||
	    (limit >= 0 && sqlite3_bind_int(st, 2, limit) != SQLITE_OK)) {
		sqlite3_finalize(st);
		return (NULL);
	}
	return (st);
}

/*
 * Has db a table called name? 1 or 0, -1 when it cannot tell. A ledger
 * that no tollgate of this version has opened lacks the tables added
 * since (they are made at the daemon's open), and tollgate intent reads
 * such a file as it is.
 */
static int
has_table(sqlite3 *db, const char *name)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(db,
		"SELECT 1 FROM sqlite_master WHERE type = 'table'"
		" AND name = ?1",
		-1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC) != SQLITE_OK) {
		sqlite3_finalize(st);
		return (-1);
	}
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return (rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1);
}

/* An event's JSON object begun in o: {"at":...,"type":"type". */
static void
event_open(struct spend_out *o, const struct event *e, const char *type)
{
	spend_out_init(o, 65536);
	spend_out_printf(o, "{\"at\":");
	spend_out_json_str(o, e->ev_at);
	spend_out_printf(o, ",\"type\":\"%s\"", type);
}

/* The text of column i of st, or NULL. */
static const char *
col(sqlite3_stmt *st, int i)
{
	return ((const char *)sqlite3_column_text(st, i));
}

/* The index of the column named name in st's result, or -1. */
static int
col_index(sqlite3_stmt *st, const char *name)
{
	int i, n = sqlite3_column_count(st);

	for (i = 0; i < n; i++)
		if (strcmp(sqlite3_column_name(st, i), name) == 0)
			return (i);
	return (-1);
}

/* "name":value for one column of a row into o (after a comma). */
static void
json_col(
    struct spend_out *o, sqlite3_stmt *st, int i, const char *name, int isint)
{
	spend_out_printf(o, ",\"%s\":", name);
	if (i < 0 || sqlite3_column_type(st, i) == SQLITE_NULL)
		spend_out_add(o, "null", 4);
	else if (isint)
		spend_out_printf(
		    o, "%lld", (long long)sqlite3_column_int64(st, i));
	else
		spend_out_json_str(o, col(st, i));
}

/* A text of the table form: one line of an event. */
static char *
line_text(const char *at, const char *type, const char *what, int64_t nusd,
    int has_cost)
{
	struct spend_out o;
	char *s;

	spend_out_init(&o, 4096);
	spend_out_cell(&o, at, -25);
	spend_out_add(&o, " ", 1);
	spend_out_cell(&o, type, -9);
	spend_out_add(&o, " ", 1);
	if (has_cost)
		spend_out_usd(&o, nusd);
	else
		spend_out_cell(&o, "-", -11);
	spend_out_add(&o, "  ", 2);
	spend_out_cell(&o, what, -1);
	spend_out_add(&o, "\n", 1);
	s = xstrndup(o.so_buf != NULL ? o.so_buf : "", o.so_len);
	spend_out_free(&o);
	return (s);
}

/* A text column of st by index, or "" / "-". */
static const char *
tcol(sqlite3_stmt *st, int i, const char *none)
{
	const char *s = i >= 0 ? col(st, i) : NULL;

	return (s != NULL ? s : none);
}

/* The intent's calls, newest limit of them, into ev. */
static int
read_calls(sqlite3 *db, const char *from, const char *intent, int limit,
    int table, struct events *ev)
{
	sqlite3_stmt *st = NULL;
	struct spend_out o;
	char *sql, what[512];
	int idx[nitems(call_cols)], at, rc;
	size_t i;
	const char *status, *ep, *type;

	xasprintf(&sql,
	    "SELECT * FROM %s WHERE intent = ?1"
	    " ORDER BY started_at DESC, id DESC LIMIT ?2",
	    from);
	st = intent_stmt(db, sql, intent, limit);
	free(sql);
	if (st == NULL)
		goto fail;
	for (i = 0; i < nitems(call_cols); i++)
		idx[i] = col_index(st, call_cols[i].c_name);
	at = col_index(st, "started_at");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct event *e = events_add(ev, col(st, at), col(st, idx[0]));

		status = tcol(st, idx[6], "");
		ep = tcol(st, idx[1], "");
		type = strcmp(ep, "external") == 0   ? "external"
		    : strcmp(status, "refused") == 0 ? "refusal"
						     : "call";
		if (table) {
			if (strcmp(type, "external") == 0)
				snprintf(what, sizeof(what),
				    "%s %s x%lld  id=%s", tcol(st, idx[2], "-"),
				    tcol(st, idx[4], "-"),
				    idx[29] >= 0
					? (long long)sqlite3_column_int64(
					      st, idx[29])
					: 0LL,
				    tcol(st, idx[0], ""));
			else
				snprintf(what, sizeof(what),
				    "%s %s %s %s in=%lld out=%lld%s%s  id=%s",
				    tcol(st, idx[2], "-"),
				    tcol(st, idx[4], "-"), status,
				    tcol(st, idx[7], "-"),
				    (long long)sqlite3_column_int64(
					st, idx[14]),
				    (long long)sqlite3_column_int64(
					st, idx[15]),
				    idx[8] >= 0 && col(st, idx[8]) != NULL
					? " reason="
					: "",
				    tcol(st, idx[8], ""), tcol(st, idx[0], ""));
			e->ev_text = line_text(e->ev_at, type, what,
			    sqlite3_column_int64(st, idx[20]), 1);
			continue;
		}
		event_open(&o, e, type);
		for (i = 0; i < nitems(call_cols); i++)
			json_col(&o, st, idx[i], call_cols[i].c_name,
			    call_cols[i].c_int);
		spend_out_add(&o, ",\"cost_usd\":", 12);
		spend_out_usd(&o, sqlite3_column_int64(st, idx[20]));
		spend_out_add(&o, "}", 1);
		e->ev_text = xstrndup(o.so_buf, o.so_len);
		spend_out_free(&o);
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return (0);
fail:
	sqlite3_finalize(st);
	return (-1);
}

/* The alerts of scopes that name the intent, newest limit, into ev. */
static int
read_alerts(
    sqlite3 *db, const char *intent, int limit, int table, struct events *ev)
{
	static const char sql[] =
	    "SELECT fired_at, id, kind, policy, scope_key, message,"
	    " spent_nusd, cap_nusd, threshold_nusd FROM alerts"
	    " WHERE intent = ?1 ORDER BY fired_at DESC, id DESC LIMIT ?2";
	sqlite3_stmt *st = NULL;
	struct spend_out o;
	struct event *e;
	char what[1024];
	int rc, i;

	if ((rc = has_table(db, "alerts")) <= 0)
		return (rc);
	if ((st = intent_stmt(db, sql, intent, limit)) == NULL)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		e = events_add(ev, col(st, 0), col(st, 1));
		if (table) {
			snprintf(what, sizeof(what), "%s %s: %s  id=%s",
			    tcol(st, 2, "-"), tcol(st, 3, "-"), tcol(st, 5, ""),
			    tcol(st, 1, ""));
			e->ev_text = line_text(e->ev_at, "alert", what,
			    sqlite3_column_int64(st, 6), 1);
			continue;
		}
		event_open(&o, e, "alert");
		json_col(&o, st, 1, "id", 0);
		json_col(&o, st, 2, "kind", 0);
		json_col(&o, st, 3, "policy", 0);
		json_col(&o, st, 4, "scope_key", 0);
		json_col(&o, st, 5, "message", 0);
		for (i = 6; i <= 8; i++)
			json_col(&o, st, i,
			    i == 6	 ? "spent_nusd"
				: i == 7 ? "cap_nusd"
					 : "threshold_nusd",
			    1);
		spend_out_add(&o, "}", 1);
		e->ev_text = xstrndup(o.so_buf, o.so_len);
		spend_out_free(&o);
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return (0);
fail:
	sqlite3_finalize(st);
	return (-1);
}

/*
 * The kills whose match names the intent (its pattern covers it; a kill
 * by another tag shows through the calls it refused), newest limit.
 */
static int
read_kills(
    sqlite3 *db, const char *intent, int limit, int table, struct events *ev)
{
	static const char sql[] =
	    "SELECT created_at, id, reason, source, match, expires_at,"
	    " deleted_at FROM kills"
	    " WHERE json_valid(match)"
	    " AND json_extract(match, '$.intent') IS NOT NULL"
	    /* A kill's pattern knows '*' and '?' only: a '[' in it is
	     * itself, which GLOB reads as a class unless written "[[]". */
	    " AND ?1 GLOB replace(json_extract(match, '$.intent'), '[',"
	    " '[[]')"
	    " ORDER BY created_at DESC, id DESC LIMIT ?2";
	sqlite3_stmt *st = NULL;
	struct spend_out o;
	struct event *e;
	char what[1024];
	int rc;

	if ((rc = has_table(db, "kills")) <= 0)
		return (rc);
	if ((st = intent_stmt(db, sql, intent, limit)) == NULL)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		e = events_add(ev, col(st, 0), col(st, 1));
		if (table) {
			snprintf(what, sizeof(what), "%s (%s)%s%s  id=%s",
			    tcol(st, 2, ""), tcol(st, 3, ""),
			    col(st, 6) != NULL ? " lifted " : "",
			    tcol(st, 6, ""), tcol(st, 1, ""));
			e->ev_text = line_text(e->ev_at, "kill", what, 0, 0);
			continue;
		}
		event_open(&o, e, "kill");
		json_col(&o, st, 1, "id", 0);
		json_col(&o, st, 2, "reason", 0);
		json_col(&o, st, 3, "source", 0);
		/* json_valid above: the match is JSON as stored. */
		spend_out_add(&o, ",\"match\":", 9);
		spend_out_add(&o, tcol(st, 4, "{}"), strlen(tcol(st, 4, "{}")));
		json_col(&o, st, 5, "expires_at", 0);
		json_col(&o, st, 6, "deleted_at", 0);
		spend_out_add(&o, "}", 1);
		e->ev_text = xstrndup(o.so_buf, o.so_len);
		spend_out_free(&o);
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return (0);
fail:
	sqlite3_finalize(st);
	return (-1);
}

/*
 * The budget extensions of the intent's scopes (a policy with per:
 * [intent]), newest limit, into ev: each as GET /v1/budgets/extensions
 * shows it, with revoked_at, at the time it was made. Through the
 * extensions table's (intent, created_at) index.
 */
static int
read_extensions(
    sqlite3 *db, const char *intent, int limit, int table, struct events *ev)
{
	static const char sql[] =
	    "SELECT created_at, id, policy, json_valid(scope), scope, window,"
	    " window_start, nusd, reason, granted_by, expires_at, ends_at,"
	    " budget_key, instance, revoked_at FROM extensions"
	    " WHERE intent = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2";
	sqlite3_stmt *st = NULL;
	struct spend_out o;
	struct event *e;
	char what[2048], usd[40];
	const char *scope;
	int rc;

	if ((rc = has_table(db, "extensions")) <= 0)
		return (rc);
	if ((st = intent_stmt(db, sql, intent, limit)) == NULL)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		e = events_add(ev, col(st, 0), col(st, 1));
		if (table) {
			usd_format(
			    usd, sizeof(usd), sqlite3_column_int64(st, 7));
			snprintf(what, sizeof(what),
			    "%s raised by $%s by %s: %s%s%s  id=%s",
			    tcol(st, 2, "-"), usd, tcol(st, 9, "-"),
			    tcol(st, 8, ""),
			    col(st, 14) != NULL ? "; revoked " : "",
			    tcol(st, 14, ""), tcol(st, 1, ""));
			e->ev_text =
			    line_text(e->ev_at, "extension", what, 0, 0);
			continue;
		}
		event_open(&o, e, "extension");
		json_col(&o, st, 1, "id", 0);
		json_col(&o, st, 2, "policy", 0);
		/* The scope as made, a JSON object; null if it is not JSON. */
		scope = sqlite3_column_int(st, 3) == 1 ? col(st, 4) : NULL;
		spend_out_add(&o, ",\"scope\":", 9);
		if (scope != NULL)
			spend_out_add(&o, scope, strlen(scope));
		else
			spend_out_add(&o, "null", 4);
		json_col(&o, st, 5, "window", 0);
		json_col(&o, st, 6, "window_start", 0);
		spend_out_add(&o, ",\"usd\":", 7);
		spend_out_usd(&o, sqlite3_column_int64(st, 7));
		json_col(&o, st, 7, "nusd", 1);
		json_col(&o, st, 8, "reason", 0);
		json_col(&o, st, 9, "by", 0);
		json_col(&o, st, 0, "created_at", 0);
		json_col(&o, st, 10, "expires_at", 0);
		json_col(&o, st, 11, "ends_at", 0);
		json_col(&o, st, 12, "key", 0);
		/* As the extension object: an instance only when learnt. */
		if (col(st, 13) != NULL)
			json_col(&o, st, 13, "instance", 0);
		json_col(&o, st, 14, "revoked_at", 0);
		spend_out_add(&o, "}", 1);
		e->ev_text = xstrndup(o.so_buf, o.so_len);
		spend_out_free(&o);
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return (0);
fail:
	sqlite3_finalize(st);
	return (-1);
}

/* The totals over every row of the intent. */
struct totals {
	int64_t t_calls, t_external, t_refused, t_nusd, t_in, t_out, t_saved;
	int64_t t_extensions;
	char t_first[SPEND_TIME_MAX], t_last[SPEND_TIME_MAX];
};

static int
read_totals(sqlite3 *db, const char *from, const char *intent, struct totals *t)
{
	sqlite3_stmt *st = NULL;
	char *sql;
	int rc;

	memset(t, 0, sizeof(*t));
	xasprintf(&sql,
	    "SELECT count(*) FILTER (WHERE endpoint <> 'external' AND"
	    " status <> 'refused'), count(*) FILTER (WHERE endpoint ="
	    " 'external'), count(*) FILTER (WHERE status = 'refused'),"
	    " coalesce(sum(cost_nusd), 0), coalesce(sum(input_tokens), 0),"
	    " coalesce(sum(output_tokens), 0), min(started_at),"
	    " max(started_at) FROM %s WHERE intent = ?1",
	    from);
	st = intent_stmt(db, sql, intent, -1);
	free(sql);
	if (st == NULL || sqlite3_step(st) != SQLITE_ROW)
		goto fail;
	t->t_calls = sqlite3_column_int64(st, 0);
	t->t_external = sqlite3_column_int64(st, 1);
	t->t_refused = sqlite3_column_int64(st, 2);
	t->t_nusd = sqlite3_column_int64(st, 3);
	t->t_in = sqlite3_column_int64(st, 4);
	t->t_out = sqlite3_column_int64(st, 5);
	snprintf(t->t_first, sizeof(t->t_first), "%s", tcol(st, 6, ""));
	snprintf(t->t_last, sizeof(t->t_last), "%s", tcol(st, 7, ""));
	sqlite3_finalize(st);
	st = NULL;
	if ((rc = has_table(db, "extensions")) < 0)
		goto fail;
	if (rc == 1) {
		st = intent_stmt(db,
		    "SELECT count(*) FROM extensions WHERE intent = ?1", intent,
		    -1);
		if (st == NULL || sqlite3_step(st) != SQLITE_ROW)
			goto fail;
		t->t_extensions = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	return (0);
fail:
	sqlite3_finalize(st);
	return (-1);
}

/*
 * The timeline of intent on the read-only connection db, its calls read
 * from calls_from (NULL: the calls table), its newest limit events in
 * time order, as JSON (table 0) or lines for a terminal (table 1), into
 * o. 0, or -1 with *cause when a query fails.
 */
int
spend_intent(sqlite3 *db, const char *calls_from, const char *intent, int limit,
    int table, struct spend_out *o, char **cause)
{
	struct events ev = {0};
	struct totals t;
	const char *from = calls_from != NULL ? calls_from : "calls";
	size_t i, skip;
	int rv = -1;

	if (read_totals(db, from, intent, &t) != 0 ||
	    read_calls(db, from, intent, limit + 1, table, &ev) != 0 ||
	    read_alerts(db, intent, limit + 1, table, &ev) != 0 ||
	    read_kills(db, intent, limit + 1, table, &ev) != 0 ||
	    read_extensions(db, intent, limit + 1, table, &ev) != 0) {
		xasprintf(cause, "intent query: %s", sqlite3_errmsg(db));
		goto out;
	}
	if (ev.e_n > 1)
		qsort(ev.e_v, ev.e_n, sizeof(*ev.e_v), event_cmp);
	skip = ev.e_n > (size_t)limit ? ev.e_n - (size_t)limit : 0;
	if (table) {
		spend_out_add(o, "intent ", 7);
		spend_out_cell(o, intent, -1);
		spend_out_printf(o,
		    ": %lld calls, %lld external costs, %lld refused, %lld "
		    "budget extensions; $",
		    (long long)t.t_calls, (long long)t.t_external,
		    (long long)t.t_refused, (long long)t.t_extensions);
		spend_out_usd(o, t.t_nusd);
		spend_out_printf(o, " (tokens in %lld, out %lld)\n",
		    (long long)t.t_in, (long long)t.t_out);
		if (t.t_first[0] != '\0')
			spend_out_printf(
			    o, "from %s to %s\n", t.t_first, t.t_last);
		if (skip > 0)
			spend_out_printf(o,
			    "(the %zu oldest events are not shown; raise "
			    "--limit)\n",
			    skip);
		for (i = skip; i < ev.e_n; i++)
			spend_out_add(
			    o, ev.e_v[i].ev_text, strlen(ev.e_v[i].ev_text));
		rv = 0;
		goto out;
	}
	spend_out_add(o, "{\"intent\":", 10);
	spend_out_json_str(o, intent);
	spend_out_printf(o,
	    ",\"totals\":{\"calls\":%lld,\"external\":%lld,\"refused\":%lld,"
	    "\"cost_nusd\":%lld,\"cost_usd\":",
	    (long long)t.t_calls, (long long)t.t_external,
	    (long long)t.t_refused, (long long)t.t_nusd);
	spend_out_usd(o, t.t_nusd);
	spend_out_printf(o,
	    ",\"input_tokens\":%lld,\"output_tokens\":%lld,"
	    "\"extensions\":%lld",
	    (long long)t.t_in, (long long)t.t_out, (long long)t.t_extensions);
	spend_out_add(o, ",\"first_at\":", 12);
	if (t.t_first[0] != '\0')
		spend_out_json_str(o, t.t_first);
	else
		spend_out_add(o, "null", 4);
	spend_out_add(o, ",\"last_at\":", 11);
	if (t.t_last[0] != '\0')
		spend_out_json_str(o, t.t_last);
	else
		spend_out_add(o, "null", 4);
	spend_out_add(o, "},\"events\":[", 12);
	for (i = skip; i < ev.e_n; i++) {
		if (i > skip)
			spend_out_add(o, ",", 1);
		spend_out_add(o, ev.e_v[i].ev_text, strlen(ev.e_v[i].ev_text));
	}
	spend_out_printf(
	    o, "],\"truncated\":%s}\n", skip > 0 ? "true" : "false");
	rv = 0;
out:
	events_free(&ev);
	return (rv);
}
