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
#include <stddef.h>
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
    /* The rollup is by day: an hour is always read from calls. */
    [SPEND_DIM_HOUR] = {"(substr(started_at, 1, 13) || ':00:00Z')", NULL, NULL},
};

/* Add a fragment; fragments are ours, so overflowing is a bug. */
static void
sql_add(struct spend_stmt *s, const char *frag)
{
	size_t n = strlen(frag);

	if (s->st_len + n >= sizeof(s->st_sql))
		abort(); /* cannot happen: at most 9 keys and 9 filters */
	memcpy(s->st_sql + s->st_len, frag, n + 1);
	s->st_len += n;
}

/* Add frag, which holds one '?', and the text value it stands for. */
static void
sql_value(struct spend_stmt *s, const char *frag, const char *v)
{
	if (s->st_nparams == SPEND_PARAMS_MAX)
		abort(); /* cannot happen: at most 16 values */
	sql_add(s, frag);
	s->st_isint[s->st_nparams] = 0;
	s->st_params[s->st_nparams++] = xstrdup(v);
}

/* A time as the ledger writes it, or as a day ("2026-11-28"). */
static void
sql_time(struct spend_stmt *s, const char *frag, int64_t ms, int day)
{
	char t[SPEND_TIME_MAX];

	/* The parser bounds times to four-digit years: this cannot fail. */
	if (spend_format_time(ms, t, sizeof(t)) != 0)
		snprintf(t, sizeof(t), "9999-12-31T23:59:59.999Z");
	if (day)
		t[10] = '\0';
	sql_value(s, frag, t);
}

/*
 * A text expression compared or ordered byte by byte on both databases:
 * SQLite's default; PostgreSQL's default follows the database's locale,
 * which would sort the fleet's answer otherwise than the instance's.
 */
static void
sql_bytes(struct spend_stmt *s, const char *expr)
{
	sql_add(s, expr);
	if (s->st_dialect == SPEND_PG)
		sql_add(s, " COLLATE \"C\"");
}

/* An empty statement in dialect d. */
static void
stmt_init(struct spend_stmt *s, enum spend_dialect d)
{
	memset(s, 0, sizeof(*s));
	s->st_dialect = d;
}

/* Free a statement's values; it can be built again. */
void
spend_stmt_free(struct spend_stmt *s)
{
	int i;

	for (i = 0; i < s->st_nparams; i++)
		free(s->st_params[i]);
	s->st_nparams = 0;
	s->st_len = 0;
}

/*
 * Number the placeholders of SQLite text for PostgreSQL: each '?' outside
 * a quoted literal or identifier becomes $1, $2, ... in order, into out
 * (len bytes). Returns how many there were, or -1 when out is too small.
 */
int
spend_sql_number(const char *in, char *out, size_t len)
{
	size_t o = 0;
	int n = 0, w;
	char quote = 0;

	for (; *in != '\0'; in++) {
		if (quote != 0) {
			/* A doubled quote is one quote: leaving and coming back. */
			if (*in == quote)
				quote = 0;
		} else if (*in == '\'' || *in == '"')
			quote = *in;
		else if (*in == '?') {
			w = snprintf(out + o, len - o, "$%d", ++n);
			if (w < 0 || (size_t)w >= len - o)
				return (-1);
			o += (size_t)w;
			continue;
		}
		if (o + 1 >= len)
			return (-1);
		out[o++] = *in;
	}
	if (o >= len)
		return (-1);
	out[o] = '\0';
	return (n);
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

/*
 * Filters on calls. Empty values ask for unset tags (NULL or ''); the
 * others use the column as is, so its index can.
 */
static void
where_filters(struct spend_stmt *s, const struct spend_query *q)
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
			sql_value(s, " = ?", q->sq_filter[i]);
		}
	}
}

/* The WHERE clause shared by spend on calls and by calls: time, filters. */
static void
where_calls(struct spend_stmt *s, const struct spend_query *q)
{
	if (q->sq_has_from)
		sql_time(s, " AND started_at >= ?", q->sq_from_ms, 0);
	if (q->sq_has_to)
		sql_time(s, " AND started_at < ?", q->sq_to_ms, 0);
	where_filters(s, q);
}

/* The rollup's WHERE for days [lo, hi) (bounded as q is) and filters. */
static void
where_rollup(
    struct spend_stmt *s, const struct spend_query *q, int64_t lo, int64_t hi)
{
	size_t i;

	sql_add(s, " WHERE 1 = 1");
	if (q->sq_has_from)
		sql_time(s, " AND day >= ?", lo, 1);
	if (q->sq_has_to)
		sql_time(s, " AND day < ?", hi, 1);
	for (i = 0; i < SPEND_FILTER_MAX; i++)
		if (q->sq_filter[i] != NULL) {
			sql_add(s, " AND ");
			sql_add(s, dims[i].rollup_key);
			sql_value(s, " = ?", q->sq_filter[i]);
		}
}

static const char sums_rollup[] =
    "coalesce(sum(calls), 0), coalesce(sum(input_tokens), 0),"
    " coalesce(sum(output_tokens), 0), coalesce(sum(cost_nusd), 0)";
static const char sums_calls[] =
    "count(*), coalesce(sum(input_tokens), 0),"
    " coalesce(sum(output_tokens), 0), coalesce(sum(cost_nusd), 0)";

/* The group keys of a SELECT, each followed by ", " (AS kN if alias). */
static void
select_keys(
    struct spend_stmt *s, const struct spend_query *q, int rollup, int alias)
{
	char as[32];
	size_t i;

	for (i = 0; i < q->sq_ngroup; i++) {
		if (alias == 2) {
			snprintf(as, sizeof(as), "k%zu, ", i);
			sql_add(s, as);
			continue;
		}
		sql_bytes(s,
		    rollup ? dims[q->sq_group[i]].rollup_key
			   : dims[q->sq_group[i]].calls_key);
		if (alias) {
			snprintf(as, sizeof(as), " AS k%zu", i);
			sql_add(s, as);
		}
		sql_add(s, ", ");
	}
}

/* GROUP BY the keys; with order, by cost descending, then the keys. */
static void
group_keys(struct spend_stmt *s, const struct spend_query *q, int order)
{
	char num[32];
	size_t i;

	if (q->sq_ngroup == 0)
		return;
	sql_add(s, " GROUP BY ");
	for (i = 0; i < q->sq_ngroup; i++) {
		snprintf(num, sizeof(num), "%s%zu", i > 0 ? ", " : "", i + 1);
		sql_add(s, num);
	}
	if (!order)
		return;
	snprintf(num, sizeof(num), " ORDER BY %zu DESC", q->sq_ngroup + 4);
	sql_add(s, num);
	for (i = 0; i < q->sq_ngroup; i++) {
		snprintf(num, sizeof(num), ", %zu", i + 1);
		sql_add(s, num);
	}
}

/*
 * The spend SQL for q on one path. MIXED sums the rollup's whole days
 * [lo, hi) and the calls of the partial days at the ends ([from, lo) and
 * [hi, to)) in one UNION ALL, grouped again outside. Values are added in
 * the order of their '?'.
 */
static void
spend_sql(struct spend_stmt *s, const struct spend_query *q,
    enum spend_path path, int64_t lo, int64_t hi)
{
	sql_add(s, "SELECT ");
	if (path == SPEND_PATH_ROLLUP) {
		select_keys(s, q, 1, 0);
		sql_add(s, sums_rollup);
		sql_add(s, " FROM calls_daily");
		where_rollup(s, q, q->sq_from_ms, q->sq_to_ms);
	} else if (path == SPEND_PATH_CALLS) {
		select_keys(s, q, 0, 0);
		sql_add(s, sums_calls);
		sql_add(s, " FROM calls WHERE status <> 'in_flight'");
		where_calls(s, q);
	} else {
		select_keys(s, q, 0, 2);
		sql_add(s,
		    "coalesce(sum(c), 0), coalesce(sum(i), 0),"
		    " coalesce(sum(o), 0), coalesce(sum(n), 0) FROM (SELECT ");
		select_keys(s, q, 1, 1);
		sql_add(s,
		    "calls AS c, input_tokens AS i, output_tokens AS o,"
		    " cost_nusd AS n FROM calls_daily");
		where_rollup(s, q, lo, hi);
		sql_add(s, " UNION ALL SELECT ");
		select_keys(s, q, 0, 1);
		sql_add(s,
		    "1, input_tokens, output_tokens, cost_nusd FROM calls"
		    " WHERE status <> 'in_flight' AND (");
		/*
		 * No "0 OR": it would hide the ranges from the index.
		 * mixed_days made from <= lo < hi <= to: both ends in order.
		 */
		if (q->sq_has_from) {
			sql_time(s, "(started_at >= ?", q->sq_from_ms, 0);
			sql_time(s, " AND started_at < ?)", lo, 0);
		}
		if (q->sq_has_from && q->sq_has_to)
			sql_add(s, " OR ");
		if (q->sq_has_to) {
			sql_time(s, "(started_at >= ?", hi, 0);
			sql_time(s, " AND started_at < ?)", q->sq_to_ms, 0);
		}
		if (!q->sq_has_from && !q->sq_has_to)
			sql_add(s, "0");
		sql_add(s, ")");
		where_filters(s, q);
		sql_add(s, ")");
	}
	group_keys(s, q, 1);
}

/*
 * The spend statement on the calls table, the one both databases run:
 * the fleet ledger has no rollup.
 */
void
spend_stmt_spend(
    struct spend_stmt *s, const struct spend_query *q, enum spend_dialect d)
{
	char lim[32];

	stmt_init(s, d);
	spend_sql(s, q, SPEND_PATH_CALLS, 0, 0);
	/*
	 * PostgreSQL hands over the whole answer at once: no more than the
	 * one group past SPEND_ROWS_MAX that makes it an error.
	 */
	if (d == SPEND_PG) {
		snprintf(lim, sizeof(lim), "%d", SPEND_ROWS_MAX + 1);
		sql_value(s, " LIMIT ?", lim);
		s->st_isint[s->st_nparams - 1] = 1;
	}
}

/*
 * The statement of how much of q's spend was priced at a family's rates
 * for an unknown model, grouped like the answer, with the group's calls
 * and cost: read from the calls table whatever path answered the rest
 * (the rollup cannot tell those rows apart).
 */
void
spend_stmt_fallback(
    struct spend_stmt *s, const struct spend_query *q, enum spend_dialect d)
{
	stmt_init(s, d);
	sql_add(s, "SELECT ");
	select_keys(s, q, 0, 0);
	sql_add(s,
	    "count(*), 0, 0, coalesce(sum(cost_nusd), 0) FROM calls"
	    " WHERE status <> 'in_flight' AND " LEDGER_FALLBACK_WHERE);
	where_calls(s, q);
	group_keys(s, q, 0);
}

/*
 * The statement of what the calls of q saved (saved_nusd: for a routed
 * call the asked model's price minus the cost, for a cache hit what the
 * provider would have charged), grouped like the answer, with the group's
 * routed calls and cache hits: read from the calls table through its
 * calls_routed index whatever path answered the rest. Without cached
 * (a ledger from before the cache_hit column) only the routed calls.
 */
void
spend_stmt_saved(struct spend_stmt *s, const struct spend_query *q,
    enum spend_dialect d, int cached)
{
	stmt_init(s, d);
	sql_add(s, "SELECT ");
	select_keys(s, q, 0, 0);
	if (cached)
		sql_add(s,
		    "count(routed_rule), coalesce(sum(cache_hit), 0), 0,"
		    " coalesce(sum(saved_nusd), 0) FROM calls"
		    " WHERE status <> 'in_flight' AND " LEDGER_ROUTED_WHERE);
	else
		sql_add(s,
		    "count(*), 0, 0, coalesce(sum(saved_nusd), 0) FROM calls"
		    " WHERE status <> 'in_flight' AND routed_rule IS NOT NULL");
	where_calls(s, q);
	group_keys(s, q, 0);
}

/*
 * The calls statement: newest first (started_at, then id, descending; on
 * the fleet ledger then instance), at most sq_limit + 1 rows (the one
 * more says there is a next page) after the cursor.
 */
void
spend_stmt_calls(
    struct spend_stmt *s, const struct spend_query *q, enum spend_dialect d)
{
	char lim[32];
	int pg = d == SPEND_PG;

	stmt_init(s, d);
	sql_add(s, "SELECT * FROM ");
	sql_add(s, q->sq_calls_from != NULL ? q->sq_calls_from : "calls");
	sql_add(s, " WHERE 1 = 1");
	where_calls(s, q);
	if (q->sq_status != NULL)
		sql_value(s, " AND status = ?", q->sq_status);
	if (q->sq_cursor_at != NULL) {
		sql_value(s, " AND (started_at < ?", q->sq_cursor_at);
		sql_value(s, " OR (started_at = ? AND (", q->sq_cursor_at);
		sql_bytes(s, "id");
		sql_value(s, " < ?", q->sq_cursor_id);
		if (pg && q->sq_cursor_inst != NULL) {
			sql_add(s, " OR (");
			sql_bytes(s, "id");
			sql_value(s, " = ? AND ", q->sq_cursor_id);
			sql_bytes(s, "instance");
			sql_value(s, " < ?)", q->sq_cursor_inst);
		}
		sql_add(s, ")))");
	}
	sql_add(s, " ORDER BY started_at DESC, ");
	sql_bytes(s, "id");
	sql_add(s, " DESC");
	if (pg) {
		sql_add(s, ", ");
		sql_bytes(s, "instance");
		sql_add(s, " DESC");
	}
	snprintf(lim, sizeof(lim), "%d", q->sq_limit + 1);
	sql_value(s, " LIMIT ?", lim);
	s->st_isint[s->st_nparams - 1] = 1;
}

/* Prepare s on db with its values bound; an SQLite code. */
static int
stmt_prepare(sqlite3 *db, const struct spend_stmt *s, sqlite3_stmt **st)
{
	int i, rc;

	if ((rc = sqlite3_prepare_v2(db, s->st_sql, -1, st, NULL)) != SQLITE_OK)
		return (rc);
	for (i = 0; rc == SQLITE_OK && i < s->st_nparams; i++)
		rc = s->st_isint[i] ? sqlite3_bind_int64(*st, i + 1,
					  strtoll(s->st_params[i], NULL, 10))
				    : sqlite3_bind_text(*st, i + 1,
					  s->st_params[i], -1, SQLITE_STATIC);
	return (rc);
}

static int
add_checked(int64_t *sum, int64_t v)
{
	return (__builtin_add_overflow(*sum, v, sum) ? -1 : 0);
}

/*
 * Append a group to r: its keys (q's sq_ngroup of them; NULL or "" for
 * unset) and its calls, input and output tokens and cost (v[0..3]), added
 * to the total. -1 with a cause past SPEND_ROWS_MAX groups or when a total
 * overflows.
 */
int
spend_result_add(struct spend_result *r, const struct spend_query *q,
    char *const *keys, const int64_t *v, char **cause)
{
	struct spend_row *row;
	size_t i;

	if (r->sr_nrows == SPEND_ROWS_MAX) {
		xasprintf(cause,
		    "group_by: more than %d groups; narrow the query with "
		    "filters or a shorter period",
		    SPEND_ROWS_MAX);
		return (-1);
	}
	if (r->sr_nrows == r->sr_cap) {
		r->sr_cap = r->sr_cap == 0 ? 64 : r->sr_cap * 2;
		r->sr_rows = xreallocarray(r->sr_rows, r->sr_cap, sizeof(*row));
	}
	row = &r->sr_rows[r->sr_nrows++];
	memset(row, 0, sizeof(*row));
	for (i = 0; i < q->sq_ngroup; i++)
		if (keys[i] != NULL && *keys[i] != '\0')
			row->sr_keys[i] = xstrdup(keys[i]);
	row->sr_calls = v[0];
	row->sr_input_tokens = v[1];
	row->sr_output_tokens = v[2];
	row->sr_cost_nusd = v[3];
	if (add_checked(&r->sr_total.sr_calls, v[0]) != 0 ||
	    add_checked(&r->sr_total.sr_input_tokens, v[1]) != 0 ||
	    add_checked(&r->sr_total.sr_output_tokens, v[2]) != 0 ||
	    add_checked(&r->sr_total.sr_cost_nusd, v[3]) != 0) {
		*cause = xstrdup("total: integer overflow");
		return (-1);
	}
	return (0);
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

/*
 * For row_cmp: qsort passes no context. Per thread, as the local and the
 * fleet readers of the admin API answer queries at the same time.
 */
static _Thread_local size_t fb_ngroup;

static int
row_cmp(const void *a, const void *b)
{
	const struct spend_row *ra = *(const struct spend_row *const *)a;
	const struct spend_row *rb = *(const struct spend_row *const *)b;

	return (keys_cmp(ra->sr_keys, rb->sr_keys, fb_ngroup));
}

/*
 * Fold the answer of an extra statement (fb: groups with their calls and
 * a sum, and maybe a second count) into r's members at calls_off,
 * nusd_off and second_off (SIZE_MAX: none), each group's and the
 * total's. Each group is found among r's rows by a binary search over
 * them sorted by their keys. fb is freed.
 */
static void
result_fold(struct spend_result *r, const struct spend_query *q,
    struct spend_result *fb, size_t calls_off, size_t nusd_off,
    size_t second_off)
{
	struct spend_row **by_key, *kp, **hit;
	size_t i;

#define AT(row, off) (*(int64_t *)(void *)((char *)(row) + (off)))
	by_key = xreallocarray(NULL, r->sr_nrows + 1, sizeof(*by_key));
	for (i = 0; i < r->sr_nrows; i++)
		by_key[i] = &r->sr_rows[i];
	fb_ngroup = q->sq_ngroup;
	qsort(by_key, r->sr_nrows, sizeof(*by_key), row_cmp);
	for (i = 0; i < fb->sr_nrows; i++) {
		kp = &fb->sr_rows[i];
		/* No group_by and no such call (nor, for the saved
		 * statement, cache hit: its count is the second one). */
		if (kp->sr_calls == 0 &&
		    (second_off == SIZE_MAX || kp->sr_input_tokens == 0))
			continue;
		AT(&r->sr_total, calls_off) += kp->sr_calls;
		AT(&r->sr_total, nusd_off) += kp->sr_cost_nusd;
		if (second_off != SIZE_MAX)
			AT(&r->sr_total, second_off) += kp->sr_input_tokens;
		/* A group missing from r is a call settled in between. */
		if ((hit = bsearch(&kp, by_key, r->sr_nrows, sizeof(*by_key),
			 row_cmp)) != NULL) {
			AT(*hit, calls_off) = kp->sr_calls;
			AT(*hit, nusd_off) = kp->sr_cost_nusd;
			if (second_off != SIZE_MAX)
				AT(*hit, second_off) = kp->sr_input_tokens;
		}
	}
#undef AT
	free(by_key);
	spend_result_free(fb);
}

/*
 * Fold the answer of the fallback statement (fb: groups with their calls
 * and cost) into r: each group's fallback calls and cost, and the total's,
 * so an analyst can tell an estimate from priced spend. fb is freed.
 */
void
spend_result_fallback(struct spend_result *r, const struct spend_query *q,
    struct spend_result *fb)
{
	result_fold(r, q, fb, offsetof(struct spend_row, sr_fallback_calls),
	    offsetof(struct spend_row, sr_fallback_nusd), SIZE_MAX);
}

/*
 * Fold the answer of the saved statement (fb: groups with their routed
 * calls, cache hits and what they saved) into r, each group's and the
 * total's. fb is freed.
 */
void
spend_result_saved(struct spend_result *r, const struct spend_query *q,
    struct spend_result *fb)
{
	result_fold(r, q, fb, offsetof(struct spend_row, sr_routed_calls),
	    offsetof(struct spend_row, sr_saved_nusd),
	    offsetof(struct spend_row, sr_cache_hits));
}

/* Run a grouping statement (keys, then four sums) on db into r. */
static int
stmt_groups(sqlite3 *db, const struct spend_stmt *s,
    const struct spend_query *q, struct spend_result *r, char **cause)
{
	sqlite3_stmt *st = NULL;
	char *keys[SPEND_DIM_MAX];
	int64_t v[4];
	size_t i;
	int rc;

	if ((rc = stmt_prepare(db, s, &st)) != SQLITE_OK)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (i = 0; i < q->sq_ngroup; i++)
			keys[i] =
			    (char *)(uintptr_t)sqlite3_column_text(st, (int)i);
		for (i = 0; i < 4; i++)
			v[i] =
			    sqlite3_column_int64(st, (int)(q->sq_ngroup + i));
		if (spend_result_add(r, q, keys, v, cause) != 0)
			goto out;
	}
	if (rc == SQLITE_DONE) {
		sqlite3_finalize(st);
		return (0);
	}
fail:
	xasprintf(cause, "ledger: %s", sqlite3_errmsg(db));
out:
	sqlite3_finalize(st);
	return (-1);
}

/* Has the ledger's calls table the column name (ledger.c adds them)? */
static int
has_column(sqlite3 *db, const char *name)
{
	sqlite3_stmt *st = NULL;
	int has = 0;

	if (sqlite3_prepare_v2(db,
		"SELECT count(*) FROM pragma_table_info('calls')"
		" WHERE name = ?1",
		-1, &st, NULL) == SQLITE_OK &&
	    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		has = sqlite3_column_int(st, 0) > 0;
	sqlite3_finalize(st);
	return (has);
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
	struct spend_stmt s;
	struct spend_result fb;
	enum spend_path path;
	int64_t lo = 0, hi = 0;

	memset(r, 0, sizeof(*r));
	memset(&fb, 0, sizeof(fb));
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
	stmt_init(&s, SPEND_SQLITE);
	spend_sql(&s, q, path, lo, hi);
	if (stmt_groups(db, &s, q, r, cause) != 0)
		goto fail;
	spend_stmt_free(&s);
	spend_stmt_fallback(&s, q, SPEND_SQLITE);
	if (stmt_groups(db, &s, q, &fb, cause) != 0)
		goto fail;
	spend_stmt_free(&s);
	spend_result_fallback(r, q, &fb);
	/* A ledger no tollgate with routing has opened has no saving. */
	if (!has_column(db, "routed_rule"))
		return (0);
	spend_stmt_saved(&s, q, SPEND_SQLITE, has_column(db, "cache_hit"));
	if (stmt_groups(db, &s, q, &fb, cause) != 0)
		goto fail;
	spend_stmt_free(&s);
	spend_result_saved(r, q, &fb);
	return (0);
fail:
	spend_stmt_free(&s);
	spend_result_free(&fb);
	spend_result_free(r);
	return (-1);
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

/* The cell named name in a row, or NULL. */
static const struct spend_cell *
cell_find(const struct spend_cell *row, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(row[i].sc_name, name) == 0)
			return (&row[i]);
	return (NULL);
}

/* The cells of one table row, allocated, appended to the page's. */
static void
calls_table_row(struct spend_page *p, const struct spend_cell *row, size_t n)
{
	const struct spend_cell *c;
	struct spend_out usd;
	size_t i;

	p->sp_cells = xreallocarray(
	    p->sp_cells, p->sp_ncells + nitems(call_cols), sizeof(char *));
	for (i = 0; i < nitems(call_cols); i++) {
		c = cell_find(row, n, call_cols[i].name);
		if (strcmp(call_cols[i].name, "cost_nusd") == 0) {
			spend_out_init(&usd, 64);
			spend_out_usd(&usd,
			    c != NULL && c->sc_text != NULL
				? strtoll(c->sc_text, NULL, 10)
				: 0);
			p->sp_cells[p->sp_ncells++] =
			    xstrndup(usd.so_buf, usd.so_len);
			spend_out_free(&usd);
			continue;
		}
		p->sp_cells[p->sp_ncells++] = xstrdup(
		    c != NULL && c->sc_text != NULL && *c->sc_text != '\0'
			? c->sc_text
			: "-");
	}
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

/* Start a page of q's calls answer in o. */
void
spend_page_begin(
    struct spend_page *p, const struct spend_query *q, struct spend_out *o)
{
	memset(p, 0, sizeof(*p));
	p->sp_q = q;
	p->sp_o = o;
	if (q->sq_format != SPEND_FORMAT_TABLE)
		spend_out_add(o, "{\"calls\":[", 10);
}

/* Replace *dst with a copy of the cell's text ("" for none). */
static void
page_keep(char **dst, const struct spend_cell *c)
{
	free(*dst);
	*dst = c != NULL && c->sc_text != NULL ? xstrdup(c->sc_text) : NULL;
}

/*
 * One row of the page, as the statement of spend_stmt_calls gave it.
 * Returns 1 when it is the row past sq_limit: it is not written, the
 * page has a next cursor, and no more rows are wanted; else 0.
 */
int
spend_page_row(struct spend_page *p, const struct spend_cell *row, size_t n)
{
	const struct spend_query *q = p->sp_q;
	struct spend_out *o = p->sp_o;
	char *id;
	size_t i;
	int first = 1;

	if (p->sp_count == q->sq_limit) {
		if (p->sp_last_inst != NULL) {
			xasprintf(&id, "%s\n%s",
			    p->sp_last_id != NULL ? p->sp_last_id : "",
			    p->sp_last_inst);
			p->sp_cursor = spend_cursor_encode(
			    p->sp_last_at != NULL ? p->sp_last_at : "", id);
			free(id);
		} else
			p->sp_cursor = spend_cursor_encode(
			    p->sp_last_at != NULL ? p->sp_last_at : "",
			    p->sp_last_id != NULL ? p->sp_last_id : "");
		return (1);
	}
	page_keep(&p->sp_last_at, cell_find(row, n, "started_at"));
	page_keep(&p->sp_last_id, cell_find(row, n, "id"));
	page_keep(&p->sp_last_inst, cell_find(row, n, "instance"));
	p->sp_count++;
	if (q->sq_format == SPEND_FORMAT_TABLE) {
		calls_table_row(p, row, n);
		return (0);
	}
	spend_out_add(o, p->sp_count > 1 ? ",{" : "{", p->sp_count > 1 ? 2 : 1);
	for (i = 0; i < n; i++) {
		/* The shipping sequence is the ledger's bookkeeping. */
		if (strcmp(row[i].sc_name, "ship_seq") == 0)
			continue;
		if (!first)
			spend_out_add(o, ",", 1);
		first = 0;
		spend_out_json_str(o, row[i].sc_name);
		spend_out_add(o, ":", 1);
		if (row[i].sc_text == NULL)
			spend_out_add(o, "null", 4);
		else if (row[i].sc_int) {
			spend_out_add(
			    o, row[i].sc_text, strlen(row[i].sc_text));
			if (strcmp(row[i].sc_name, "cost_nusd") == 0) {
				spend_out_add(o, ",\"cost_usd\":", 12);
				spend_out_usd(
				    o, strtoll(row[i].sc_text, NULL, 10));
			}
		} else
			spend_out_json_str(o, row[i].sc_text);
	}
	spend_out_add(o, "}", 1);
	return (0);
}

/* End the page: the table, or the JSON's next_cursor; free its state. */
void
spend_page_end(struct spend_page *p)
{
	struct spend_out *o = p->sp_o;
	size_t i;

	if (p->sp_q->sq_format == SPEND_FORMAT_TABLE) {
		calls_table_write(o, p->sp_cells, p->sp_ncells);
		if (p->sp_cursor != NULL)
			spend_out_printf(
			    o, "(more: --cursor %s)\n", p->sp_cursor);
	} else {
		spend_out_add(o, "],\"next_cursor\":", 16);
		if (p->sp_cursor != NULL)
			spend_out_json_str(o, p->sp_cursor);
		else
			spend_out_add(o, "null", 4);
		spend_out_add(o, "}\n", 2);
	}
	for (i = 0; i < p->sp_ncells; i++)
		free(p->sp_cells[i]);
	free(p->sp_cells);
	free(p->sp_cursor);
	free(p->sp_last_at);
	free(p->sp_last_id);
	free(p->sp_last_inst);
	memset(p, 0, sizeof(*p));
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
	struct spend_cell row[64];
	struct spend_stmt s;
	struct spend_page p;
	sqlite3_stmt *st = NULL;
	int rc, i, ncol;

	spend_stmt_calls(&s, q, SPEND_SQLITE);
	if ((rc = stmt_prepare(db, &s, &st)) != SQLITE_OK)
		goto fail;
	if ((ncol = sqlite3_column_count(st)) > (int)nitems(row))
		ncol = (int)nitems(row);
	spend_page_begin(&p, q, o);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (i = 0; i < ncol; i++) {
			/* The type first: reading the text may convert it. */
			row[i].sc_int =
			    sqlite3_column_type(st, i) == SQLITE_INTEGER;
			row[i].sc_name = sqlite3_column_name(st, i);
			row[i].sc_text =
			    (const char *)sqlite3_column_text(st, i);
		}
		if (spend_page_row(&p, row, (size_t)ncol) == 1)
			break;
	}
	spend_page_end(&p);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	spend_stmt_free(&s);
	return (0);
fail:
	xasprintf(cause, "ledger: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	spend_stmt_free(&s);
	return (-1);
}
