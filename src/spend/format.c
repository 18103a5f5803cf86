/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing answers: a bounded output buffer, exact USD from integer
 * nano-USD (never a float), JSON strings, and a spend answer as JSON
 * (docs/api.md's shape plus the integer costs and an echo of the query), as
 * CSV (RFC 4180: the monthly chargeback export) or as an aligned table with
 * a total line. spend_answer is the whole of GET /v1/spend and /v1/calls
 * for the admin API: query string in, status, content type and body out.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/buf.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

/* First allocation of an answer: most fit in it. */
#define SPEND_OUT_FIRST 4096

/* The read-only view of the bytes callers use: so_buf and so_len. */
static void
spend_out_sync(struct spend_out *o)
{
	o->so_buf = buf_ptr(&o->so_b);
	o->so_len = buf_len(&o->so_b);
}

/* An empty buffer that refuses to grow past max bytes, its NUL included. */
void
spend_out_init(struct spend_out *o, size_t max)
{
	memset(o, 0, sizeof(*o));
	buf_init(&o->so_b, max, SPEND_OUT_FIRST, BUF_NUL);
}

/* Free the buffer's bytes; it can be initialised again. */
void
spend_out_free(struct spend_out *o)
{
	buf_free(&o->so_b);
	memset(o, 0, sizeof(*o));
}

/*
 * Append len bytes, NUL-terminated. Once a write would pass the cap,
 * so_full is set and it and every later write are dropped, so an answer
 * is whole or known to be cut.
 */
void
spend_out_add(struct spend_out *o, const char *p, size_t len)
{
	if (o->so_full)
		return;
	if (buf_add(&o->so_b, p, len) == -1)
		o->so_full = 1;
	spend_out_sync(o);
}

/* Append formatted text; like spend_out_add past the cap. */
void
spend_out_printf(struct spend_out *o, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (o->so_full)
		return;
	va_start(ap, fmt);
	r = buf_vaddf(&o->so_b, fmt, ap);
	va_end(ap);
	if (r == -1)
		o->so_full = 1;
	spend_out_sync(o);
}

/* Integer nano-USD as dollars with exactly nine decimals: 12.345678901. */
void
spend_out_usd(struct spend_out *o, int64_t nusd)
{
	uint64_t mag;

	mag = nusd < 0 ? (uint64_t)0 - (uint64_t)nusd : (uint64_t)nusd;
	spend_out_printf(o, "%s%" PRIu64 ".%09" PRIu64, nusd < 0 ? "-" : "",
	    mag / 1000000000u, mag % 1000000000u);
}

/*
 * A JSON string: quotes, backslashes and control bytes escaped, and every
 * byte that is not part of well-formed UTF-8 written as U+FFFD (RFC 8259
 * wants UTF-8; one stray byte in a stored model or tag must not make the
 * whole answer unreadable to a strict parser). Every JSON answer tollgate
 * writes by hand (spend, calls, alerts, webhooks) comes through here.
 */
void
spend_out_json_str(struct spend_out *o, const char *s)
{
	size_t len = strlen(s), i = 0, run = 0, n;
	unsigned char c;
	char esc[8];

	spend_out_add(o, "\"", 1);
	while (i < len) {
		c = (unsigned char)s[i];
		/* Plain ASCII, by far the most common, without a call. */
		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			i++;
			continue;
		}
		if (c >= 0x80 && (n = utf8_seqlen(s + i, len - i)) > 0) {
			i += n;
			continue;
		}
		spend_out_add(o, s + run, i - run);
		switch (c) {
		case '"':
			spend_out_add(o, "\\\"", 2);
			break;
		case '\\':
			spend_out_add(o, "\\\\", 2);
			break;
		case '\n':
			spend_out_add(o, "\\n", 2);
			break;
		default:
			if (c >= 0x80) {
				spend_out_add(o, UTF8_REPLACEMENT, 3);
				break;
			}
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			spend_out_add(o, esc, 6);
			break;
		}
		run = ++i;
	}
	spend_out_add(o, s + run, i - run);
	spend_out_add(o, "\"", 1);
}

/*
 * How many characters s shows as: one per UTF-8 sequence, and one per
 * byte that is not part of one (it is shown as U+FFFD).
 */
static size_t
text_width(const char *s)
{
	size_t len = strlen(s), i = 0, w = 0, n;

	while (i < len) {
		if ((unsigned char)s[i] < 0x80)
			i++;
		else {
			n = utf8_seqlen(s + i, len - i);
			i += n > 0 ? n : 1;
		}
		w++;
	}
	return (w);
}

/* The columns s takes in a table (spend_out_cell): one a character. */
size_t
spend_text_width(const char *s)
{
	return (text_width(s));
}

/*
 * A table cell padded to width (negative: left-aligned). A table goes to
 * a terminal and values such as a model name came from a client, so
 * control characters (C0, DEL, and C1, which some terminals obey as
 * escape sequences) become '?', and bytes that are not UTF-8 become
 * U+FFFD.
 */
void
spend_out_cell(struct spend_out *o, const char *s, int width)
{
	size_t len = strlen(s), w, i, n, run, shown = text_width(s);
	unsigned char c;

	w = (size_t)(width < 0 ? -width : width);
	for (i = shown; width > 0 && i < w; i++)
		spend_out_add(o, " ", 1);
	for (i = run = 0; i < len; i += n) {
		c = (unsigned char)s[i];
		n = c >= 0x20 && c < 0x7f ? 1 : utf8_seqlen(s + i, len - i);
		if (c >= 0x20 && c != 0x7f && n > 0 &&
		    !(n == 2 && c == 0xc2 && (unsigned char)s[i + 1] < 0xa0))
			continue; /* shown as it is */
		spend_out_add(o, s + run, i - run);
		if (n == 0) {
			spend_out_add(o, UTF8_REPLACEMENT, 3);
			n = 1;
		} else
			spend_out_add(o, "?", 1);
		run = i + n;
	}
	spend_out_add(o, s + run, len - run);
	for (i = shown; width < 0 && i < w; i++)
		spend_out_add(o, " ", 1);
}

/*
 * Could a spreadsheet read the CSV cell s as a formula? OWASP's list of
 * first characters: '=', '+', '-', '@', TAB and CR; looked for past any
 * leading spaces too, since some importers trim them.
 */
static int
csv_formula(const char *s)
{
	while (*s == ' ')
		s++;
	return (*s == '=' || *s == '+' || *s == '-' || *s == '@' ||
	    *s == '\t' || *s == '\r');
}

/*
 * A CSV text field (RFC 4180): quoted when it holds , " CR LF or edge
 * spaces, bytes that are not UTF-8 written as U+FFFD, and, since these
 * values (tags, models) are chosen by clients and the file is opened in
 * spreadsheets, a field that starts like a formula is neutralised as
 * OWASP recommends: a single quote before it, and the whole field
 * quoted. Only text goes through here; the numbers tollgate writes
 * (counts, tokens, cost_usd) are written as numbers.
 */
static void
csv_field(struct spend_out *o, const char *s)
{
	size_t len = strlen(s), i, n, run;
	int formula = csv_formula(s), quote;

	quote = formula || strpbrk(s, ",\"\r\n") != NULL ||
	    (len > 0 && (s[0] == ' ' || s[len - 1] == ' '));
	if (quote)
		spend_out_add(o, formula ? "\"'" : "\"", formula ? 2 : 1);
	for (i = run = 0; i < len; i += n) {
		n = (unsigned char)s[i] < 0x80 ? 1
					       : utf8_seqlen(s + i, len - i);
		if (n > 0 && s[i] != '"')
			continue;
		spend_out_add(o, s + run, i - run);
		if (n == 0) {
			spend_out_add(o, UTF8_REPLACEMENT, 3);
			n = 1;
		} else
			spend_out_add(o, "\"\"", 2);
		run = i + n;
	}
	spend_out_add(o, s + run, len - run);
	if (quote)
		spend_out_add(o, "\"", 1);
}

static void
write_json(const struct spend_query *q, const struct spend_result *r,
    struct spend_out *o)
{
	char t[SPEND_TIME_MAX];
	const struct spend_row *row;
	size_t i, k;

	spend_out_add(o, "{\"rows\":[", 9);
	for (i = 0; i < r->sr_nrows; i++) {
		row = &r->sr_rows[i];
		spend_out_add(o, i > 0 ? ",{" : "{", i > 0 ? 2 : 1);
		for (k = 0; k < q->sq_ngroup; k++) {
			spend_out_json_str(o, spend_dim_name(q->sq_group[k]));
			spend_out_add(o, ":", 1);
			if (row->sr_keys[k] == NULL)
				spend_out_add(o, "null", 4);
			else
				spend_out_json_str(o, row->sr_keys[k]);
			spend_out_add(o, ",", 1);
		}
		spend_out_printf(o,
		    "\"calls\":%" PRId64 ",\"input_tokens\":%" PRId64
		    ",\"output_tokens\":%" PRId64 ",\"cost_nusd\":%" PRId64
		    ",\"cost_usd\":",
		    row->sr_calls, row->sr_input_tokens, row->sr_output_tokens,
		    row->sr_cost_nusd);
		spend_out_usd(o, row->sr_cost_nusd);
		spend_out_printf(o,
		    ",\"saved_nusd\":%" PRId64 ",\"saved_usd\":",
		    row->sr_saved_nusd);
		spend_out_usd(o, row->sr_saved_nusd);
		spend_out_printf(o,
		    ",\"fallback_calls\":%" PRId64
		    ",\"fallback_cost_nusd\":%" PRId64
		    ",\"fallback_cost_usd\":",
		    row->sr_fallback_calls, row->sr_fallback_nusd);
		spend_out_usd(o, row->sr_fallback_nusd);
		spend_out_printf(o,
		    ",\"routed_calls\":%" PRId64 ",\"cache_hits\":%" PRId64 "}",
		    row->sr_routed_calls, row->sr_cache_hits);
	}
	spend_out_add(o, "],\"total_cost_usd\":", 19);
	spend_out_usd(o, r->sr_total.sr_cost_nusd);
	spend_out_printf(o,
	    ",\"total_cost_nusd\":%" PRId64 ",\"total_calls\":%" PRId64
	    ",\"total_input_tokens\":%" PRId64
	    ",\"total_output_tokens\":%" PRId64 ",\"fallback_calls\":%" PRId64
	    ",\"fallback_cost_nusd\":%" PRId64 ",\"fallback_cost_usd\":",
	    r->sr_total.sr_cost_nusd, r->sr_total.sr_calls,
	    r->sr_total.sr_input_tokens, r->sr_total.sr_output_tokens,
	    r->sr_total.sr_fallback_calls, r->sr_total.sr_fallback_nusd);
	spend_out_usd(o, r->sr_total.sr_fallback_nusd);
	spend_out_printf(o,
	    ",\"routed_calls\":%" PRId64 ",\"cache_hits\":%" PRId64
	    ",\"total_saved_nusd\":%" PRId64 ",\"total_saved_usd\":",
	    r->sr_total.sr_routed_calls, r->sr_total.sr_cache_hits,
	    r->sr_total.sr_saved_nusd);
	spend_out_usd(o, r->sr_total.sr_saved_nusd);
	spend_out_add(o, ",\"from\":", 8);
	if (q->sq_has_from &&
	    spend_format_time(q->sq_from_ms, t, sizeof(t)) == 0)
		spend_out_json_str(o, t);
	else
		spend_out_add(o, "null", 4);
	spend_out_add(o, ",\"to\":", 6);
	if (q->sq_has_to && spend_format_time(q->sq_to_ms, t, sizeof(t)) == 0)
		spend_out_json_str(o, t);
	else
		spend_out_add(o, "null", 4);
	spend_out_add(o, ",\"group_by\":[", 13);
	for (k = 0; k < q->sq_ngroup; k++) {
		if (k > 0)
			spend_out_add(o, ",", 1);
		spend_out_json_str(o, spend_dim_name(q->sq_group[k]));
	}
	spend_out_add(o, "]}\n", 3);
}

static void
write_csv(const struct spend_query *q, const struct spend_result *r,
    struct spend_out *o)
{
	const struct spend_row *row;
	size_t i, k;

	for (k = 0; k < q->sq_ngroup; k++)
		spend_out_printf(o, "%s,", spend_dim_name(q->sq_group[k]));
	/* Columns only ever added at the end: scripts read them by place. */
	spend_out_add(o,
	    "calls,input_tokens,output_tokens,cost_usd,fallback_calls,"
	    "fallback_cost_usd,saved_usd,routed_calls,cache_hits\r\n",
	    110);
	for (i = 0; i < r->sr_nrows; i++) {
		row = &r->sr_rows[i];
		for (k = 0; k < q->sq_ngroup; k++) {
			if (row->sr_keys[k] != NULL)
				csv_field(o, row->sr_keys[k]);
			spend_out_add(o, ",", 1);
		}
		spend_out_printf(o, "%" PRId64 ",%" PRId64 ",%" PRId64 ",",
		    row->sr_calls, row->sr_input_tokens, row->sr_output_tokens);
		spend_out_usd(o, row->sr_cost_nusd);
		spend_out_printf(o, ",%" PRId64 ",", row->sr_fallback_calls);
		spend_out_usd(o, row->sr_fallback_nusd);
		spend_out_add(o, ",", 1);
		spend_out_usd(o, row->sr_saved_nusd);
		spend_out_printf(o, ",%" PRId64 ",%" PRId64 "\r\n",
		    row->sr_routed_calls, row->sr_cache_hits);
	}
}

/* The cells of one table line: keys, then the four numbers. */
static size_t
table_cells(const struct spend_query *q, const struct spend_row *row, int total,
    char cells[][48], const char **keys)
{
	struct spend_out usd;
	size_t k, n = 0;

	for (k = 0; k < q->sq_ngroup; k++) {
		if (total)
			keys[n++] = k == 0 ? "total" : "";
		else
			keys[n++] = row->sr_keys[k] != NULL ? row->sr_keys[k]
							    : "(none)";
	}
	snprintf(cells[0], 48, "%" PRId64, row->sr_calls);
	snprintf(cells[1], 48, "%" PRId64, row->sr_input_tokens);
	snprintf(cells[2], 48, "%" PRId64, row->sr_output_tokens);
	spend_out_init(&usd, 48);
	spend_out_usd(&usd, row->sr_cost_nusd);
	snprintf(cells[3], 48, "%s", usd.so_buf != NULL ? usd.so_buf : "?");
	spend_out_free(&usd);
	for (k = 0; k < 4; k++)
		keys[n++] = cells[k];
	return (n);
}

static void
write_table(const struct spend_query *q, const struct spend_result *r,
    struct spend_out *o)
{
	static const char *nums[] = {
	    "calls", "input_tokens", "output_tokens", "cost_usd"};
	const char *keys[SPEND_DIM_MAX + 4];
	char cells[4][48];
	size_t width[SPEND_DIM_MAX + 4], i, k, n, len;

	n = q->sq_ngroup + 4;
	for (k = 0; k < n; k++)
		width[k] =
		    strlen(k < q->sq_ngroup ? spend_dim_name(q->sq_group[k])
					    : nums[k - q->sq_ngroup]);
	for (i = 0; i <= r->sr_nrows; i++) {
		table_cells(q, i < r->sr_nrows ? &r->sr_rows[i] : &r->sr_total,
		    i == r->sr_nrows, cells, keys);
		for (k = 0; k < n; k++)
			if ((len = text_width(keys[k])) > width[k])
				width[k] = len;
	}
	for (k = 0; k < n; k++)
		spend_out_printf(o, "%s%*s", k > 0 ? "  " : "",
		    k < q->sq_ngroup ? -(int)width[k] : (int)width[k],
		    k < q->sq_ngroup ? spend_dim_name(q->sq_group[k])
				     : nums[k - q->sq_ngroup]);
	spend_out_add(o, "\n", 1);
	for (i = 0; i <= r->sr_nrows; i++) {
		table_cells(q, i < r->sr_nrows ? &r->sr_rows[i] : &r->sr_total,
		    i == r->sr_nrows, cells, keys);
		if (i == r->sr_nrows && q->sq_ngroup > 0) {
			/* A rule above the total line. */
			for (k = 0; k < n; k++)
				for (len = 0; len < width[k] + (k > 0 ? 2 : 0);
				     len++)
					spend_out_add(o, "-", 1);
			spend_out_add(o, "\n", 1);
		}
		if (i == r->sr_nrows && q->sq_ngroup == 0 && r->sr_nrows > 0)
			break; /* the one row is the total */
		for (k = 0; k < n; k++) {
			if (k > 0)
				spend_out_add(o, "  ", 2);
			spend_out_cell(o, keys[k],
			    k < q->sq_ngroup ? -(int)width[k] : (int)width[k]);
		}
		spend_out_add(o, "\n", 1);
	}
	/* An estimate must not pass for a price. */
	if (r->sr_total.sr_fallback_calls > 0) {
		spend_out_printf(o,
		    "of which %" PRId64 " call%s to models without a price, "
		    "priced at their family's highest rates: $",
		    r->sr_total.sr_fallback_calls,
		    r->sr_total.sr_fallback_calls == 1 ? "" : "s");
		spend_out_usd(o, r->sr_total.sr_fallback_nusd);
		spend_out_add(o, "\n", 1);
	}
	/* Negative when rules sent calls to dearer models. */
	if (r->sr_total.sr_routed_calls > 0 || r->sr_total.sr_cache_hits > 0) {
		spend_out_printf(o, "of which ");
		if (r->sr_total.sr_routed_calls > 0)
			spend_out_printf(o,
			    "%" PRId64 " call%s sent elsewhere by routing "
			    "rules%s",
			    r->sr_total.sr_routed_calls,
			    r->sr_total.sr_routed_calls == 1 ? "" : "s",
			    r->sr_total.sr_cache_hits > 0 ? " and " : "");
		if (r->sr_total.sr_cache_hits > 0)
			spend_out_printf(o,
			    "%" PRId64 " call%s answered from the cache",
			    r->sr_total.sr_cache_hits,
			    r->sr_total.sr_cache_hits == 1 ? "" : "s");
		spend_out_printf(o, ", saving $");
		spend_out_usd(o, r->sr_total.sr_saved_nusd);
		spend_out_add(o, "\n", 1);
	}
}

/* Write a spend answer in the query's format. */
void
spend_write(const struct spend_query *q, const struct spend_result *r,
    struct spend_out *o)
{
	switch (q->sq_format) {
	case SPEND_FORMAT_CSV:
		write_csv(q, r, o);
		break;
	case SPEND_FORMAT_TABLE:
		write_table(q, r, o);
		break;
	default:
		write_json(q, r, o);
		break;
	}
}

static int
local_run(
    void *db, const struct spend_query *q, struct spend_result *r, char **cause)
{
	return (spend_run(db, q, r, cause));
}

static int
local_calls(
    void *db, const struct spend_query *q, struct spend_out *o, char **cause)
{
	return (spend_calls(db, q, o, cause));
}

/*
 * The admin API's GET /v1/spend or /v1/calls on the local ledger: parse
 * the raw query string, run it (a calls query reads calls_from, when not
 * NULL, instead of the calls table), and write the body into o (bounded by o's
 * max). Returns the HTTP status: 200 (with *ctype), 400 (a bad parameter,
 * named in cause), 413 (the answer is too big), 500 (the ledger failed).
 * On any status but 200 o holds nothing and cause says why.
 */
int
spend_answer(sqlite3 *db, const char *calls_from, enum spend_kind kind,
    const char *qs, struct spend_out *o, const char **ctype, char **cause)
{
	struct spend_source src = {
	    local_run, local_calls, db, 0, calls_from, 500};

	return (spend_answer_from(&src, kind, qs, o, ctype, cause));
}

/*
 * spend_answer on any source: the local ledger, or the fleet's. A query
 * for the other one (fleet=1 or not) is a 400 naming fleet. A failure of
 * the source's database is its ss_fail status.
 */
int
spend_answer_from(const struct spend_source *src, enum spend_kind kind,
    const char *qs, struct spend_out *o, const char **ctype, char **cause)
{
	struct spend_query q;
	struct spend_result r;
	int status = 200;

	*ctype = "application/json";
	if (spend_query_parse(&q, kind, qs, cause) != 0)
		return (400);
	q.sq_calls_from = src->ss_calls_from;
	if (q.sq_fleet != src->ss_fleet) {
		*cause = xstrdup(q.sq_fleet
			? "fleet: this tollgate has no ledger.ship: section, "
			  "so no fleet ledger to ask"
			: "fleet: expected 1 here");
		status = 400;
	} else if (kind == SPEND_KIND_CALLS) {
		if (src->ss_calls(src->ss_arg, &q, o, cause) != 0)
			status = src->ss_fail;
	} else if (src->ss_run(src->ss_arg, &q, &r, cause) != 0)
		status =
		    strncmp(*cause, "group_by:", 9) == 0 ? 413 : src->ss_fail;
	else {
		spend_write(&q, &r, o);
		spend_result_free(&r);
	}
	if (status == 200 && o->so_full) {
		xasprintf(cause,
		    "answer larger than %zu bytes; narrow the query",
		    o->so_b.b_max);
		status = 413;
	}
	if (status != 200) {
		buf_reset(&o->so_b);
		spend_out_sync(o);
		o->so_full = 0;
	} else if (q.sq_format == SPEND_FORMAT_CSV)
		*ctype = "text/csv; charset=utf-8";
	else if (q.sq_format == SPEND_FORMAT_TABLE)
		*ctype = "text/plain; charset=utf-8";
	spend_query_free(&q);
	return (status);
}
