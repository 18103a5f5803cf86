/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Running spend and calls queries on a read-only connection to the ledger.
 * The SQL is assembled only from fixed fragments (the column table below);
 * every value from the query is bound. A spend query is answered from the
 * calls_daily rollup when every dimension it groups or filters by is a
 * rollup column and its bounds are whole UTC days, else from calls on the
 * started_at index; both count final rows only (status <> 'in_flight') and
 * fold NULL and '' together as the rollup does, so the two paths give the
 * same numbers to the nano-dollar.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#define DAY_MS 86400000LL
#define SQL_MAX 4096
#define BUSY_MS 5000

/*
 * Per dimension: its expression over calls (group key, with NULL as ''),
 * its column (filters), and its expression over calls_daily, or NULL when
 * the rollup does not have it.
 */
static const struct {
	const char *calls_key;
	const char *column;
	const char *rollup_key;
} dims[SPEND_DIM_MAX] = {
    [SPEND_DIM_TEAM] = {"coalesce(team, '')", "team", "team"},
    [SPEND_DIM_TENANT] = {"coalesce(tenant, '')", "tenant", "tenant"},
    [SPEND_DIM_AGENT_CLASS] = {"coalesce(agent_class, '')", "agent_class",
	"agent_class"},
    [SPEND_DIM_ENVIRONMENT] = {"coalesce(environment, '')", "environment",
	"environment"},
    [SPEND_DIM_INTENT] = {"coalesce(intent, '')", "intent", NULL},
    [SPEND_DIM_MODEL] = {"coalesce(model, '')", "model", "model"},
    [SPEND_DIM_PROVIDER] = {"coalesce(provider, '')", "provider", "provider"},
    [SPEND_DIM_DAY] = {"substr(started_at, 1, 10)", NULL, "day"},
    [SPEND_DIM_MONTH] = {"substr(started_at, 1, 7)", NULL, "substr(day, 1, 7)"},
};

/* A fixed-size SQL text; fragments are ours, so overflowing is a bug. */
struct sql {
	char s_buf[SQL_MAX];
	size_t s_len;
};

static void
sql_add(struct sql *s, const char *frag)
{
	size_t n = strlen(frag);

	if (s->s_len + n >= sizeof(s->s_buf))
		abort(); /* cannot happen: at most 9 keys and 9 filters */
	memcpy(s->s_buf + s->s_len, frag, n + 1);
	s->s_len += n;
}

/*
 * Open the ledger at path read-only: no file is created, no lock taken, and
 * WAL lets it read while the daemon writes. query_only guards against a
 * statement that would write anyway. The daemon keeps one such connection
 * open for the admin API; its page cache is held to 256 KiB (SQLite's
 * default is 2 MiB), which costs a spend query little: it reads most of its
 * pages once.
 */
sqlite3 *
spend_open(const char *path, char **cause)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int rc, ok = 0;

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc != SQLITE_OK) {
		xasprintf(cause, "%s: %s", path,
		    db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_timeout(db, BUSY_MS);
	if (sqlite3_exec(db, "PRAGMA query_only = 1; PRAGMA cache_size = -256",
		NULL, NULL, NULL) != SQLITE_OK) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(db));
		goto fail;
	}
	rc = sqlite3_prepare_v2(db,
	    "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
	    " AND name IN ('calls', 'calls_daily')",
	    -1, &st, NULL);
	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		ok = sqlite3_column_int(st, 0) == 2;
	else {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(db));
		goto fail;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (!ok) {
		xasprintf(cause,
		    "%s: not a tollgate ledger (no calls and "
		    "calls_daily tables)",
		    path);
		goto fail;
	}
	return (db);
fail:
	sqlite3_finalize(st);
	sqlite3_close(db);
	return (NULL);
}

/* Whole UTC days, or no bound: what the rollup can answer. */
static int
whole_days(const struct spend_query *q)
{
	return ((!q->sq_has_from || q->sq_from_ms % DAY_MS == 0) &&
	    (!q->sq_has_to || q->sq_to_ms % DAY_MS == 0));
}

/* Every dimension q groups or filters by is a rollup column. */
static int
rollup_dims(const struct spend_query *q)
{
	size_t i;

	if (q->sq_kind != SPEND_KIND_SPEND)
		return (0);
	for (i = 0; i < q->sq_ngroup; i++)
		if (dims[q->sq_group[i]].rollup_key == NULL)
			return (0);
	for (i = 0; i < SPEND_FILTER_MAX; i++)
		if (q->sq_filter[i] != NULL && dims[i].rollup_key == NULL)
			return (0);
	return (1);
}

/* Can calls_daily answer q: every dimension a rollup column, whole days. */
int
spend_rollup_usable(const struct spend_query *q)
{
	return (rollup_dims(q) && whole_days(q));
}

/*
 * The whole days inside q's period, [*lo, *hi) in Unix ms (0 where q has
 * no bound): the rollup answers them and calls the partial days at either
 * end. 0 when there is no whole day inside, or a dimension is not in the
 * rollup.
 */
static int
mixed_days(const struct spend_query *q, int64_t *lo, int64_t *hi)
{
	*lo = *hi = 0;
	if (!rollup_dims(q))
		return (0);
	if (q->sq_has_from)
		*lo = (q->sq_from_ms + DAY_MS - 1) / DAY_MS * DAY_MS;
	if (q->sq_has_to)
		*hi = q->sq_to_ms / DAY_MS * DAY_MS;
	return (!q->sq_has_from || !q->sq_has_to || *lo < *hi);
}

/* Free the rows of a result; it can be used again. */
void
spend_result_free(struct spend_result *r)
{
	size_t i, k;

	for (i = 0; i < r->sr_nrows; i++)
		for (k = 0; k < SPEND_DIM_MAX; k++)
			free(r->sr_rows[i].sr_keys[k]);
	free(r->sr_rows);
	memset(r, 0, sizeof(*r));
}

/* "2026-11-28" of the day that starts at ms. */
static void
day_text(int64_t ms, char *buf, size_t len)
{
	char t[SPEND_TIME_MAX];

	if (spend_format_time(ms, t, sizeof(t)) != 0)
		snprintf(t, sizeof(t), "9999-12-31");
	snprintf(buf, len, "%.10s", t);
}

/*
 * Filters on calls. Empty values ask for unset tags (NULL or ''); the
 * others use the column as is, so its index can.
 */
static void
where_filters(struct sql *s, const struct spend_query *q)
{
	size_t i;

	for (i = 0; i < SPEND_FILTER_MAX; i++) {
		if (q->sq_filter[i] == NULL)
			continue;
		sql_add(s, " AND ");
		if (q->sq_filter[i][0] == '\0') {
			sql_add(s, dims[i].calls_key);
			sql_add(s, " = ''");
		} else {
			sql_add(s, dims[i].column);
			sql_add(s, " = ?");
		}
	}
}

/* The WHERE clause shared by spend on calls and by calls: time, filters. */
static void
where_calls(struct sql *s, const struct spend_query *q)
{
	if (q->sq_has_from)
		sql_add(s, " AND started_at >= ?");
	if (q->sq_has_to)
		sql_add(s, " AND started_at < ?");
	where_filters(s, q);
}

/* The rollup's WHERE for days [lo, hi) (has_*: bounded) and filters. */
static void
where_rollup(struct sql *s, const struct spend_query *q)
{
	size_t i;

	sql_add(s, " WHERE 1");
	if (q->sq_has_from)
		sql_add(s, " AND day >= ?");
	if (q->sq_has_to)
		sql_add(s, " AND day < ?");
	for (i = 0; i < SPEND_FILTER_MAX; i++)
		if (q->sq_filter[i] != NULL) {
			sql_add(s, " AND ");
			sql_add(s, dims[i].rollup_key);
			sql_add(s, " = ?");
		}
}

/* Bind a time, as a day for the rollup or as the ledger writes it. */
static int
bind_time(sqlite3_stmt *st, int *n, int64_t ms, int day)
{
	char t[SPEND_TIME_MAX];

	if (day)
		day_text(ms, t, sizeof(t));
	else if (spend_format_time(ms, t, sizeof(t)) != 0)
		return (SQLITE_RANGE);
	return (sqlite3_bind_text(st, ++*n, t, -1, SQLITE_TRANSIENT));
}

/* Bind the filters where_filters (rollup: where_rollup) asked for. */
static int
bind_filters(sqlite3_stmt *st, const struct spend_query *q, int rollup, int *n)
{
	size_t i;
	int rc = SQLITE_OK;

	for (i = 0; rc == SQLITE_OK && i < SPEND_FILTER_MAX; i++) {
		if (q->sq_filter[i] == NULL ||
		    (!rollup && q->sq_filter[i][0] == '\0'))
			continue;
		rc = sqlite3_bind_text(
		    st, ++*n, q->sq_filter[i], -1, SQLITE_STATIC);
	}
	return (rc);
}

/* Bind what where_calls or where_rollup asked for, with q's bounds. */
static int
bind_where(sqlite3_stmt *st, const struct spend_query *q, int rollup, int *n)
{
	int rc = SQLITE_OK;

	if (q->sq_has_from)
		rc = bind_time(st, n, q->sq_from_ms, rollup);
	if (rc == SQLITE_OK && q->sq_has_to)
		rc = bind_time(st, n, q->sq_to_ms, rollup);
	if (rc == SQLITE_OK)
		rc = bind_filters(st, q, rollup, n);
	return (rc);
}

static const char sums_rollup[] =
    "ifnull(sum(calls), 0), ifnull(sum(input_tokens), 0),"
    " ifnull(sum(output_tokens), 0), ifnull(sum(cost_nusd), 0)";
static const char sums_calls[] =
    "count(*), ifnull(sum(input_tokens), 0),"
    " ifnull(sum(output_tokens), 0), ifnull(sum(cost_nusd), 0)";

/* The group keys of a SELECT, each followed by ", " (AS kN if alias). */
static void
select_keys(struct sql *s, const struct spend_query *q, int rollup, int alias)
{
	char as[32];
	size_t i;

	for (i = 0; i < q->sq_ngroup; i++) {
		if (alias == 2) {
			snprintf(as, sizeof(as), "k%zu, ", i);
			sql_add(s, as);
			continue;
		}
		sql_add(s,
		    rollup ? dims[q->sq_group[i]].rollup_key
			   : dims[q->sq_group[i]].calls_key);
		if (alias) {
			snprintf(as, sizeof(as), " AS k%zu", i);
			sql_add(s, as);
		}
		sql_add(s, ", ");
	}
}

/*
 * The spend SQL for q on one path. MIXED sums the rollup's whole days and
 * the calls of the partial days at the ends ([from, lo) and [hi, to)) in
 * one UNION ALL, grouped again outside.
 */
static void
spend_sql(struct sql *s, const struct spend_query *q, enum spend_path path)
{
	char num[32];
	size_t i;

	sql_add(s, "SELECT ");
	if (path == SPEND_PATH_ROLLUP) {
		select_keys(s, q, 1, 0);
		sql_add(s, sums_rollup);
		sql_add(s, " FROM calls_daily");
		where_rollup(s, q);
	} else if (path == SPEND_PATH_CALLS) {
		select_keys(s, q, 0, 0);
		sql_add(s, sums_calls);
		sql_add(s, " FROM calls WHERE status <> 'in_flight'");
		where_calls(s, q);
	} else {
		select_keys(s, q, 0, 2);
		sql_add(s,
		    "ifnull(sum(c), 0), ifnull(sum(i), 0),"
		    " ifnull(sum(o), 0), ifnull(sum(n), 0) FROM (SELECT ");
		select_keys(s, q, 1, 1);
		sql_add(s,
		    "calls AS c, input_tokens AS i, output_tokens AS o,"
		    " cost_nusd AS n FROM calls_daily");
		where_rollup(s, q);
		sql_add(s, " UNION ALL SELECT ");
		select_keys(s, q, 0, 1);
		sql_add(s,
		    "1, input_tokens, output_tokens, cost_nusd FROM calls"
		    " WHERE status <> 'in_flight' AND (");
		/* No "0 OR": it would hide the ranges from the index. */
		if (q->sq_has_from)
			sql_add(s, "(started_at >= ? AND started_at < ?)");
		if (q->sq_has_from && q->sq_has_to)
			sql_add(s, " OR ");
		if (q->sq_has_to)
			sql_add(s, "(started_at >= ? AND started_at < ?)");
		if (!q->sq_has_from && !q->sq_has_to)
			sql_add(s, "0");
		sql_add(s, ")");
		where_filters(s, q);
		sql_add(s, ")");
	}
	if (q->sq_ngroup == 0)
		return;
	sql_add(s, " GROUP BY ");
	for (i = 0; i < q->sq_ngroup; i++) {
		snprintf(num, sizeof(num), "%s%zu", i > 0 ? ", " : "", i + 1);
		sql_add(s, num);
	}
	snprintf(num, sizeof(num), " ORDER BY %zu DESC", q->sq_ngroup + 4);
	sql_add(s, num);
	for (i = 0; i < q->sq_ngroup; i++) {
		snprintf(num, sizeof(num), ", %zu", i + 1);
		sql_add(s, num);
	}
}

/* Bind the MIXED query: the rollup's days, the partial days, filters. */
static int
bind_mixed(sqlite3_stmt *st, const struct spend_query *q, int64_t lo,
    int64_t hi, int *n)
{
	int rc = SQLITE_OK;

	if (q->sq_has_from)
		rc = bind_time(st, n, lo, 1);
	if (rc == SQLITE_OK && q->sq_has_to)
		rc = bind_time(st, n, hi, 1);
	if (rc == SQLITE_OK)
		rc = bind_filters(st, q, 1, n);
	/* mixed_days made from <= lo < hi <= to: both ends are in order. */
	if (rc == SQLITE_OK && q->sq_has_from &&
	    (rc = bind_time(st, n, q->sq_from_ms, 0)) == SQLITE_OK)
		rc = bind_time(st, n, lo, 0);
	if (rc == SQLITE_OK && q->sq_has_to &&
	    (rc = bind_time(st, n, hi, 0)) == SQLITE_OK)
		rc = bind_time(st, n, q->sq_to_ms, 0);
	if (rc == SQLITE_OK)
		rc = bind_filters(st, q, 0, n);
	return (rc);
}

static int
add_checked(int64_t *sum, int64_t v)
{
	return (__builtin_add_overflow(*sum, v, sum) ? -1 : 0);
}

/* Group keys as the answer holds them: NULL for unset, compared as "". */
static int
keys_cmp(char *const *a, char *const *b, size_t n)
{
	size_t i;
	int c;

	for (i = 0; i < n; i++)
		if ((c = strcmp(a[i] != NULL ? a[i] : "",
			 b[i] != NULL ? b[i] : "")) != 0)
			return (c);
	return (0);
}

static size_t fb_ngroup; /* for row_cmp: qsort passes no context */

static int
row_cmp(const void *a, const void *b)
{
	const struct spend_row *ra = *(const struct spend_row *const *)a;
	const struct spend_row *rb = *(const struct spend_row *const *)b;

	return (keys_cmp(ra->sr_keys, rb->sr_keys, fb_ngroup));
}

/*
 * How much of q's spend was priced at a family's rates for an unknown
 * model (unknown_models family_max), per group and in total, into r: an
 * estimate, which an analyst must be able to tell from priced spend. Read
 * from the calls table, grouped like the answer, whatever path answered
 * the rest (the rollup cannot tell those rows apart); the calls_fallback
 * index holds just them. Each group is found among r's rows by a binary
 * search over them sorted by their keys.
 */
static int
spend_fallback(sqlite3 *db, const struct spend_query *q, struct spend_result *r)
{
	struct sql s = {{0}, 0};
	struct spend_row **by_key = NULL, key, *kp, **hit;
	sqlite3_stmt *st = NULL;
	const unsigned char *t;
	char num[32];
	size_t i;
	int rc, n = 0;

	sql_add(&s, "SELECT ");
	select_keys(&s, q, 0, 0);
	sql_add(&s,
	    "count(*), ifnull(sum(cost_nusd), 0) FROM calls"
	    " WHERE status <> 'in_flight' AND " LEDGER_FALLBACK_WHERE);
	where_calls(&s, q);
	for (i = 0; i < q->sq_ngroup; i++) {
		snprintf(num, sizeof(num), "%s%zu", i > 0 ? ", " : " GROUP BY ",
		    i + 1);
		sql_add(&s, num);
	}
	if ((rc = sqlite3_prepare_v2(db, s.s_buf, -1, &st, NULL)) !=
		SQLITE_OK ||
	    (rc = bind_where(st, q, 0, &n)) != SQLITE_OK)
		goto out;
	by_key = xreallocarray(NULL, r->sr_nrows + 1, sizeof(*by_key));
	for (i = 0; i < r->sr_nrows; i++)
		by_key[i] = &r->sr_rows[i];
	fb_ngroup = q->sq_ngroup;
	qsort(by_key, r->sr_nrows, sizeof(*by_key), row_cmp);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&key, 0, sizeof(key));
		for (i = 0; i < q->sq_ngroup; i++) {
			t = sqlite3_column_text(st, (int)i);
			key.sr_keys[i] =
			    (char *)(uintptr_t)(t != NULL && *t != '\0'
				    ? (const char *)t
				    : NULL);
		}
		key.sr_calls = sqlite3_column_int64(st, (int)i);
		key.sr_cost_nusd = sqlite3_column_int64(st, (int)i + 1);
		if (key.sr_calls == 0)
			continue; /* no group_by and no such call */
		r->sr_total.sr_fallback_calls += key.sr_calls;
		r->sr_total.sr_fallback_nusd += key.sr_cost_nusd;
		kp = &key;
		/* A group missing from r is a call settled in between. */
		if ((hit = bsearch(&kp, by_key, r->sr_nrows, sizeof(*by_key),
			 row_cmp)) != NULL) {
			(*hit)->sr_fallback_calls = key.sr_calls;
			(*hit)->sr_fallback_nusd = key.sr_cost_nusd;
		}
	}
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
out:
	free(by_key);
	sqlite3_finalize(st);
	return (rc);
}

/*
 * Answer a spend query into r (rows ordered by cost descending, then by
 * their keys, and the total). -1 with a cause when the database fails or
 * the answer would pass SPEND_ROWS_MAX groups.
 */
int
spend_run(sqlite3 *db, const struct spend_query *q, struct spend_result *r,
    char **cause)
{
	struct sql s = {{0}, 0};
	struct spend_row *row;
	sqlite3_stmt *st = NULL;
	const unsigned char *t;
	enum spend_path path;
	int64_t lo = 0, hi = 0;
	size_t i, cap = 0;
	int rc, n = 0;

	memset(r, 0, sizeof(*r));
	if ((path = q->sq_path) == SPEND_PATH_AUTO) {
		if (spend_rollup_usable(q))
			path = SPEND_PATH_ROLLUP;
		else if (mixed_days(q, &lo, &hi))
			path = SPEND_PATH_MIXED;
		else
			path = SPEND_PATH_CALLS;
	}
	if ((path == SPEND_PATH_ROLLUP && !spend_rollup_usable(q)) ||
	    (path == SPEND_PATH_MIXED && !mixed_days(q, &lo, &hi))) {
		*cause = xstrdup("the rollup cannot answer this query (it has "
				 "no intent, and no part of a day)");
		return (-1);
	}
	r->sr_path = path;
	spend_sql(&s, q, path);
	if ((rc = sqlite3_prepare_v2(db, s.s_buf, -1, &st, NULL)) != SQLITE_OK)
		goto fail;
	if (path == SPEND_PATH_MIXED)
		rc = bind_mixed(st, q, lo, hi, &n);
	else
		rc = bind_where(st, q, path == SPEND_PATH_ROLLUP, &n);
	if (rc != SQLITE_OK)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (r->sr_nrows == SPEND_ROWS_MAX) {
			xasprintf(cause,
			    "group_by: more than %d groups; narrow "
			    "the query with filters or a shorter "
			    "period",
			    SPEND_ROWS_MAX);
			goto out;
		}
		if (r->sr_nrows == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			r->sr_rows =
			    xreallocarray(r->sr_rows, cap, sizeof(*row));
		}
		row = &r->sr_rows[r->sr_nrows++];
		memset(row, 0, sizeof(*row));
		for (i = 0; i < q->sq_ngroup; i++) {
			t = sqlite3_column_text(st, (int)i);
			if (t != NULL && *t != '\0')
				row->sr_keys[i] = xstrdup((const char *)t);
		}
		row->sr_calls = sqlite3_column_int64(st, (int)i);
		row->sr_input_tokens = sqlite3_column_int64(st, (int)i + 1);
		row->sr_output_tokens = sqlite3_column_int64(st, (int)i + 2);
		row->sr_cost_nusd = sqlite3_column_int64(st, (int)i + 3);
		if (add_checked(&r->sr_total.sr_calls, row->sr_calls) != 0 ||
		    add_checked(&r->sr_total.sr_input_tokens,
			row->sr_input_tokens) != 0 ||
		    add_checked(&r->sr_total.sr_output_tokens,
			row->sr_output_tokens) != 0 ||
		    add_checked(&r->sr_total.sr_cost_nusd, row->sr_cost_nusd) !=
			0) {
			*cause = xstrdup("total: integer overflow");
			goto out;
		}
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	st = NULL;
	if (spend_fallback(db, q, r) != SQLITE_OK)
		goto fail;
	return (0);
fail:
	xasprintf(cause, "ledger: %s", sqlite3_errmsg(db));
out:
	sqlite3_finalize(st);
	spend_result_free(r);
	return (-1);
}

/* One column of a calls row as a JSON value (cost_nusd adds cost_usd). */
static void
calls_column(struct spend_out *o, sqlite3_stmt *st, int i)
{
	const char *name = sqlite3_column_name(st, i);

	spend_out_json_str(o, name);
	spend_out_add(o, ":", 1);
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_NULL:
		spend_out_add(o, "null", 4);
		break;
	case SQLITE_INTEGER:
		spend_out_printf(
		    o, "%" PRId64, (int64_t)sqlite3_column_int64(st, i));
		if (strcmp(name, "cost_nusd") == 0) {
			spend_out_add(o, ",\"cost_usd\":", 12);
			spend_out_usd(o, sqlite3_column_int64(st, i));
		}
		break;
	default:
		spend_out_json_str(o, (const char *)sqlite3_column_text(st, i));
		break;
	}
}

/*
 * Table columns of tollgate calls: the ledger column, its heading, and
 * whether it is a number (right-aligned). Each column is as wide as its
 * widest cell on the page, so a 32-digit id or a long model never pushes
 * the columns after it out of line.
 */
static const struct {
	const char *name;
	const char *head;
	int number;
} call_cols[] = {
    {"started_at", "started_at", 0},
    {"id", "id", 0},
    {"status", "status", 0},
    {"refusal_reason", "reason", 0},
    {"provider", "provider", 0},
    {"model", "model", 0},
    {"team", "team", 0},
    {"tenant", "tenant", 0},
    {"input_tokens", "input_tokens", 1},
    {"output_tokens", "output_tokens", 1},
    {"cost_nusd", "cost_usd", 1},
};

/* The cells of one table row, allocated, appended to *cells. */
static void
calls_table_row(char ***cells, size_t *ncells, sqlite3_stmt *st, int *map)
{
	struct spend_out usd;
	const unsigned char *t;
	size_t i;

	*cells =
	    xreallocarray(*cells, *ncells + nitems(call_cols), sizeof(**cells));
	for (i = 0; i < nitems(call_cols); i++) {
		if (strcmp(call_cols[i].name, "cost_nusd") == 0) {
			spend_out_init(&usd, 64);
			spend_out_usd(&usd, sqlite3_column_int64(st, map[i]));
			(*cells)[(*ncells)++] =
			    xstrndup(usd.so_buf, usd.so_len);
			spend_out_free(&usd);
			continue;
		}
		t = map[i] >= 0 ? sqlite3_column_text(st, map[i]) : NULL;
		(*cells)[(*ncells)++] =
		    xstrdup(t != NULL && *t != '\0' ? (const char *)t : "-");
	}
}

static void
free_cells(char **cells, size_t ncells)
{
	size_t i;

	for (i = 0; i < ncells; i++)
		free(cells[i]);
	free(cells);
}

/* Print the table: headings, then the rows, each column fitted. */
static void
calls_table_write(struct spend_out *o, char **cells, size_t ncells)
{
	size_t width[nitems(call_cols)], i, k, w;

	for (k = 0; k < nitems(call_cols); k++)
		width[k] = strlen(call_cols[k].head);
	for (i = 0; i < ncells; i++) {
		k = i % nitems(call_cols);
		if ((w = spend_text_width(cells[i])) > width[k])
			width[k] = w;
	}
	for (k = 0; k < nitems(call_cols); k++) {
		if (k > 0)
			spend_out_add(o, "  ", 2);
		spend_out_cell(o, call_cols[k].head,
		    call_cols[k].number ? (int)width[k] : -(int)width[k]);
	}
	spend_out_add(o, "\n", 1);
	for (i = 0; i < ncells; i++) {
		k = i % nitems(call_cols);
		if (k > 0)
			spend_out_add(o, "  ", 2);
		spend_out_cell(o, cells[i],
		    call_cols[k].number ? (int)width[k] : -(int)width[k]);
		if (k + 1 == nitems(call_cols))
			spend_out_add(o, "\n", 1);
	}
}

/*
 * Answer a calls query into o: newest first (started_at, then id,
 * descending), at most sq_limit rows after the cursor, and next_cursor
 * when there are more. Keyset paging: a page starts strictly after the
 * last row of the one before, so rows that arrive meanwhile (newer, or
 * not) are never shown twice and never shift the pages.
 */
int
spend_calls(
    sqlite3 *db, const struct spend_query *q, struct spend_out *o, char **cause)
{
	struct sql s = {{0}, 0};
	sqlite3_stmt *st = NULL;
	char *cursor = NULL, *last_at = NULL, *last_id = NULL, **cells = NULL;
	int map[nitems(call_cols)];
	int rc, n = 0, i, ncol, count = 0;
	size_t k, ncells = 0;

	sql_add(&s, "SELECT * FROM calls WHERE 1");
	where_calls(&s, q);
	if (q->sq_status != NULL)
		sql_add(&s, " AND status = ?");
	if (q->sq_cursor_at != NULL)
		sql_add(&s,
		    " AND (started_at < ? OR (started_at = ? AND"
		    " id < ?))");
	sql_add(&s, " ORDER BY started_at DESC, id DESC LIMIT ?");
	if ((rc = sqlite3_prepare_v2(db, s.s_buf, -1, &st, NULL)) !=
		SQLITE_OK ||
	    (rc = bind_where(st, q, 0, &n)) != SQLITE_OK)
		goto fail;
	if (q->sq_status != NULL &&
	    (rc = sqlite3_bind_text(
		 st, ++n, q->sq_status, -1, SQLITE_STATIC)) != SQLITE_OK)
		goto fail;
	if (q->sq_cursor_at != NULL &&
	    ((rc = sqlite3_bind_text(
		  st, ++n, q->sq_cursor_at, -1, SQLITE_STATIC)) != SQLITE_OK ||
		(rc = sqlite3_bind_text(st, ++n, q->sq_cursor_at, -1,
		     SQLITE_STATIC)) != SQLITE_OK ||
		(rc = sqlite3_bind_text(st, ++n, q->sq_cursor_id, -1,
		     SQLITE_STATIC)) != SQLITE_OK))
		goto fail;
	if ((rc = sqlite3_bind_int(st, ++n, q->sq_limit + 1)) != SQLITE_OK)
		goto fail;

	ncol = sqlite3_column_count(st);
	for (k = 0; k < nitems(call_cols); k++) {
		map[k] = -1;
		for (i = 0; i < ncol; i++)
			if (strcmp(sqlite3_column_name(st, i),
				call_cols[k].name) == 0)
				map[k] = i;
	}
	if (q->sq_format != SPEND_FORMAT_TABLE)
		spend_out_add(o, "{\"calls\":[", 10);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (count == q->sq_limit) {
			cursor = spend_cursor_encode(last_at, last_id);
			break;
		}
		free(last_at);
		free(last_id);
		last_at =
		    xstrdup((const char *)sqlite3_column_text(st, map[0]));
		last_id =
		    xstrdup((const char *)sqlite3_column_text(st, map[1]));
		if (q->sq_format == SPEND_FORMAT_TABLE)
			calls_table_row(&cells, &ncells, st, map);
		else {
			spend_out_add(
			    o, count > 0 ? ",{" : "{", count > 0 ? 2 : 1);
			for (i = 0; i < ncol; i++) {
				if (i > 0)
					spend_out_add(o, ",", 1);
				calls_column(o, st, i);
			}
			spend_out_add(o, "}", 1);
		}
		count++;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		goto fail;
	if (q->sq_format == SPEND_FORMAT_TABLE) {
		calls_table_write(o, cells, ncells);
		if (cursor != NULL)
			spend_out_printf(o, "(more: --cursor %s)\n", cursor);
	} else {
		spend_out_add(o, "],\"next_cursor\":", 16);
		if (cursor != NULL)
			spend_out_json_str(o, cursor);
		else
			spend_out_add(o, "null", 4);
		spend_out_add(o, "}\n", 2);
	}
	free(cursor);
	free(last_at);
	free(last_id);
	free_cells(cells, ncells);
	sqlite3_finalize(st);
	return (0);
fail:
	xasprintf(cause, "ledger: %s", sqlite3_errmsg(db));
	free(cursor);
	free(last_at);
	free(last_id);
	free_cells(cells, ncells);
	sqlite3_finalize(st);
	return (-1);
}
