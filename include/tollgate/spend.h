/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Spend and calls queries on the ledger: "who spent what" for the admin
 * API (GET /v1/spend, GET /v1/calls) and the tollgate spend / tollgate
 * calls commands, which share every line of it so they print the same
 * numbers. A query is parsed from key=value&... text (or set key by key by
 * the command line), run on a read-only connection with every value bound
 * (column names come only from a fixed table), and written as JSON, CSV or
 * an aligned table into a bounded buffer. Money stays integer nano-USD all
 * the way; cost_usd is printed from the integer with nine decimals.
 * See docs/spend.md.
 */
#ifndef TOLLGATE_SPEND_H
#define TOLLGATE_SPEND_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/buf.h"

struct sqlite3;

/* What a spend query can group by; the first seven also filter. */
enum spend_dim {
	SPEND_DIM_TEAM,
	SPEND_DIM_TENANT,
	SPEND_DIM_AGENT_CLASS,
	SPEND_DIM_ENVIRONMENT,
	SPEND_DIM_INTENT,
	SPEND_DIM_MODEL,
	SPEND_DIM_PROVIDER,
	SPEND_DIM_DAY, /* UTC date the call started: 2026-11-28 */
	SPEND_DIM_MONTH, /* 2026-11 */
	SPEND_DIM_HOUR, /* UTC hour the call started: 2026-11-28T14:00:00Z */
	SPEND_DIM_MAX,
};
#define SPEND_FILTER_MAX SPEND_DIM_DAY

enum spend_kind {
	SPEND_KIND_SPEND, /* GET /v1/spend */
	SPEND_KIND_CALLS, /* GET /v1/calls */
};

enum spend_format {
	SPEND_FORMAT_JSON,
	SPEND_FORMAT_CSV, /* spend only: the chargeback export */
	SPEND_FORMAT_TABLE, /* for a terminal */
};

/* Which table answers a spend query; AUTO picks (tests force the others). */
enum spend_path {
	SPEND_PATH_AUTO,
	SPEND_PATH_ROLLUP, /* calls_daily; only if the query allows it */
	SPEND_PATH_CALLS, /* calls, on its started_at index */
	SPEND_PATH_MIXED, /* calls_daily for whole days, calls for the rest */
};

/* Bounds: a bad request is refused rather than answered without end. */
#define SPEND_QUERY_MAX 8192 /* bytes of query string */
#define SPEND_VALUE_MAX 512 /* bytes of one decoded value */
#define SPEND_ROWS_MAX 100000 /* groups in one spend answer */
#define SPEND_OUT_MAX BUF_SPEND_OUT_MAX /* bytes of one answer */
#define SPEND_LIMIT_DEFAULT 100
#define SPEND_LIMIT_MAX 1000
#define SPEND_TIME_MAX 32 /* "2026-11-28T14:23:00.123Z" and its NUL */

/* A parsed query; owns its strings (spend_query_free). */
struct spend_query {
	enum spend_kind sq_kind;
	unsigned sq_seen; /* bit per parameter given, for "given twice" */
	int sq_has_from, sq_has_to;
	int64_t sq_from_ms; /* inclusive, Unix ms */
	int64_t sq_to_ms; /* exclusive */
	enum spend_dim sq_group[SPEND_DIM_MAX];
	size_t sq_ngroup;
	char *sq_filter[SPEND_FILTER_MAX]; /* NULL: no filter; "": unset */
	char *sq_status; /* calls: one status, or NULL */
	enum spend_format sq_format;
	int sq_limit; /* calls: rows per page */
	char *sq_cursor_at; /* calls: continue after (started_at, id) */
	char *sq_cursor_id;
	char *sq_cursor_inst; /* fleet cursors: the row's instance */
	enum spend_path sq_path;
	int sq_fleet; /* fleet=1: the fleet ledger answers (PostgreSQL) */
	const char *sq_calls_from; /* calls: the table, NULL for "calls" */
};

/* One group of a spend answer. */
struct spend_row {
	char *sr_keys[SPEND_DIM_MAX]; /* in sq_group order; NULL if unset */
	int64_t sr_calls;
	int64_t sr_input_tokens;
	int64_t sr_output_tokens;
	int64_t sr_cost_nusd;
	int64_t sr_fallback_calls; /* of sr_calls: priced at a family's */
	int64_t sr_fallback_nusd; /* rates for an unknown model */
	int64_t sr_routed_calls; /* of sr_calls: a routing rule applied */
	int64_t sr_saved_nusd; /* what those and the cache hits saved (may
				  be negative) */
	int64_t sr_cache_hits; /* of sr_calls: answered from the cache */
};

/* A spend answer; owns its rows (spend_result_free). */
struct spend_result {
	struct spend_row *sr_rows;
	size_t sr_nrows;
	struct spend_row sr_total; /* no keys */
	enum spend_path sr_path; /* which answered (never AUTO) */
	size_t sr_cap; /* rows allocated */
};

/* The SQL a statement is written in: the ledger's, or the fleet's. */
enum spend_dialect {
	SPEND_SQLITE,
	SPEND_PG, /* PostgreSQL: $n placeholders, byte-order collation */
};

#define SPEND_SQL_MAX 4096
#define SPEND_PARAMS_MAX 24

/*
 * One statement of a query, ready to run on either database: its text
 * (with '?' for each value; numbered $1.. for SPEND_PG) and its values in
 * order, each text or an integer. Built only from fixed fragments.
 */
struct spend_stmt {
	char st_sql[SPEND_SQL_MAX];
	size_t st_len;
	enum spend_dialect st_dialect;
	int st_nparams;
	char *st_params[SPEND_PARAMS_MAX]; /* owned */
	int st_isint[SPEND_PARAMS_MAX];
};

/* One column of a calls row, as either database gives it. */
struct spend_cell {
	const char *sc_name;
	const char *sc_text; /* NULL: SQL NULL */
	int sc_int; /* an integer column: printed bare */
};

/*
 * A page of a calls answer being written: rows go in one by one
 * (spend_page_row), the page ends with spend_page_end.
 */
struct spend_page {
	const struct spend_query *sp_q;
	struct spend_out *sp_o;
	int sp_count;
	char *sp_last_at, *sp_last_id, *sp_last_inst;
	char *sp_cursor; /* set once a row past the limit came */
	char **sp_cells; /* table cells */
	size_t sp_ncells;
};

/*
 * Where an answer comes from: the local ledger (spend_answer) or the
 * fleet's (src/ship/query.c). ss_fail is the status of a failure of the
 * database itself.
 */
struct spend_source {
	int (*ss_run)(
	    void *, const struct spend_query *, struct spend_result *, char **);
	int (*ss_calls)(
	    void *, const struct spend_query *, struct spend_out *, char **);
	void *ss_arg;
	int ss_fleet; /* answers fleet=1 queries (and only those) */
	const char *ss_calls_from; /* sq_calls_from for its calls queries */
	int ss_fail;
};

/*
 * A bounded output buffer (a struct buf) that stops at its cap: so_full is
 * set once a write would pass it, and every later write is dropped. so_buf
 * (NUL-terminated, NULL while nothing was written) and so_len are a view
 * of so_b that every write keeps current: read them, never set them.
 */
struct spend_out {
	char *so_buf;
	size_t so_len;
	int so_full;
	struct buf so_b;
};

/* intent.c */
#define SPEND_INTENT_LIMIT_DEFAULT 500
#define SPEND_INTENT_LIMIT_MAX 5000
int spend_intent(struct sqlite3 *, const char *, const char *, int, int,
    struct spend_out *, char **);

/* params.c */
void spend_query_init(struct spend_query *, enum spend_kind);
void spend_query_free(struct spend_query *);
int spend_query_set(struct spend_query *, const char *, const char *, char **);
int spend_query_finish(struct spend_query *, const char *, char **);
int spend_query_parse(
    struct spend_query *, enum spend_kind, const char *, char **);
const char *spend_dim_name(enum spend_dim);
int spend_format_time(int64_t, char *, size_t);
int spend_parse_time(const char *, int, int64_t *);
int spend_form_decode(char *);
char *spend_cursor_encode(const char *, const char *);
int spend_cursor_decode(const char *, char **, char **);

/* query.c */
struct sqlite3 *spend_open(const char *, char **);
int spend_run(struct sqlite3 *, const struct spend_query *,
    struct spend_result *, char **);
int spend_rollup_usable(const struct spend_query *);
void spend_result_free(struct spend_result *);
int spend_calls(
    struct sqlite3 *, const struct spend_query *, struct spend_out *, char **);
int spend_sql_number(const char *, char *, size_t);
void spend_stmt_spend(
    struct spend_stmt *, const struct spend_query *, enum spend_dialect);
void spend_stmt_fallback(
    struct spend_stmt *, const struct spend_query *, enum spend_dialect);
void spend_stmt_saved(
    struct spend_stmt *, const struct spend_query *, enum spend_dialect, int);
void spend_stmt_calls(
    struct spend_stmt *, const struct spend_query *, enum spend_dialect);
void spend_stmt_free(struct spend_stmt *);
int spend_result_add(struct spend_result *, const struct spend_query *,
    char *const *, const int64_t *, char **);
void spend_result_fallback(
    struct spend_result *, const struct spend_query *, struct spend_result *);
void spend_result_saved(
    struct spend_result *, const struct spend_query *, struct spend_result *);
void spend_page_begin(
    struct spend_page *, const struct spend_query *, struct spend_out *);
int spend_page_row(struct spend_page *, const struct spend_cell *, size_t);
void spend_page_end(struct spend_page *);

/* format.c */
void spend_out_init(struct spend_out *, size_t);
void spend_out_free(struct spend_out *);
void spend_out_add(struct spend_out *, const char *, size_t);
void spend_out_printf(struct spend_out *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
void spend_out_usd(struct spend_out *, int64_t);
void spend_out_json_str(struct spend_out *, const char *);
void spend_out_cell(struct spend_out *, const char *, int);
size_t spend_text_width(const char *);
void spend_write(const struct spend_query *, const struct spend_result *,
    struct spend_out *);
int spend_answer(struct sqlite3 *, const char *, enum spend_kind, const char *,
    struct spend_out *, const char **, char **);
int spend_answer_from(const struct spend_source *, enum spend_kind,
    const char *, struct spend_out *, const char **, char **);

#endif
