/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The parameters of a spend or calls query: application/x-www-form-urlencoded
 * text (or one key and value at a time, from the command line) checked into
 * a struct spend_query. Every error names the parameter it is about. Times
 * are dates (a whole UTC day) or RFC 3339 with Z or an offset, normalised
 * to Unix ms: from inclusive, to exclusive. Also the opaque cursor of
 * /v1/calls, base64url of "started_at|id".
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tollgate/spend.h"
#include "tollgate/util.h"

#define DAY_MS 86400000LL
/*
 * 10000-01-01T00:00:00Z. Times compare as text, which holds for four-digit
 * years only: later ones are refused, and this one, the end of the date
 * 9999-12-31, means no upper bound.
 */
#define END_MS 253402300800000LL

static const char *dim_names[SPEND_DIM_MAX] = {
    "team",
    "tenant",
    "agent_class",
    "environment",
    "intent",
    "model",
    "provider",
    "day",
    "month",
    "hour",
};

static const char *status_names[] = {
    "in_flight",
    "ok",
    "error",
    "refused",
    "client_closed",
    "upstream_error",
    "interrupted",
    "killed",
};

/* Parameters that are not filters; bits in sq_seen after the filters'. */
enum param {
	P_FROM = SPEND_FILTER_MAX,
	P_TO,
	P_MONTH,
	P_GROUP_BY,
	P_FORMAT,
	P_STATUS,
	P_LIMIT,
	P_CURSOR,
	P_FLEET,
	P_MAX,
};

static const char *param_names[P_MAX] = {
    [P_FROM] = "from",
    [P_TO] = "to",
    [P_MONTH] = "month",
    [P_GROUP_BY] = "group_by",
    [P_FORMAT] = "format",
    [P_STATUS] = "status",
    [P_LIMIT] = "limit",
    [P_CURSOR] = "cursor",
    [P_FLEET] = "fleet",
};

/* The name of a dimension: its ledger column, or day and month. */
const char *
spend_dim_name(enum spend_dim d)
{
	if ((unsigned)d >= SPEND_DIM_MAX)
		return ("?");
	return (dim_names[d]);
}

/* A query that asks for nothing yet: all time, no groups, JSON. */
void
spend_query_init(struct spend_query *q, enum spend_kind kind)
{
	memset(q, 0, sizeof(*q));
	q->sq_kind = kind;
	q->sq_format = SPEND_FORMAT_JSON;
	q->sq_limit = SPEND_LIMIT_DEFAULT;
	q->sq_path = SPEND_PATH_AUTO;
}

/* Free what the query owns; it can be initialised again. */
void
spend_query_free(struct spend_query *q)
{
	size_t i;

	for (i = 0; i < SPEND_FILTER_MAX; i++)
		free(q->sq_filter[i]);
	free(q->sq_status);
	free(q->sq_cursor_at);
	free(q->sq_cursor_id);
	free(q->sq_cursor_inst);
	memset(q, 0, sizeof(*q));
}

/*
 * Untrusted text for an error message: printable ASCII only, at most 64
 * bytes, so a message never carries control bytes or a whole body back.
 */
static void
safe_copy(char *dst, size_t len, const char *s)
{
	size_t i, n = 0;

	for (i = 0; s[i] != '\0' && n + 4 < len && i < 64; i++)
		dst[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (s[i] != '\0' && n + 4 < len) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return (era * 146097 + doe - 719468);
}

static int
days_in_month(int y, int m)
{
	static const int mdays[] = {
	    31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return (29);
	return (mdays[m - 1]);
}

/* Exactly n digits at s, as a number; -1 if any is not a digit. */
static int
digits(const char *s, int n)
{
	int i, v = 0;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		v = v * 10 + (s[i] - '0');
	}
	return (v);
}

/* YYYY-MM-DD at s (no more, no less when whole); 0 or -1. */
static int
parse_date(const char *s, int *y, int *m, int *d)
{
	if ((*y = digits(s, 4)) < 0 || s[4] != '-' ||
	    (*m = digits(s + 5, 2)) < 0 || s[7] != '-' ||
	    (*d = digits(s + 8, 2)) < 0)
		return (-1);
	if (*y < 1970 || *m < 1 || *m > 12 || *d < 1 ||
	    *d > days_in_month(*y, *m))
		return (-1);
	return (0);
}

/*
 * A time bound: YYYY-MM-DD, or RFC 3339 (2026-11-28T14:23:00Z,
 * ...T14:23:00.5+01:00). A date as an upper bound (is_to) means the end of
 * that day. Fractions below a millisecond round up: the ledger stores ms,
 * so "from 00:00:00.0005" must not include a call at 00:00:00.000 and "to
 * 00:00:00.0005" must include it. A space where the offset's sign belongs
 * is taken for '+': an unencoded '+' in a query string decodes to one.
 */
int
spend_parse_time(const char *s, int is_to, int64_t *ms)
{
	int y, mo, d, h, mi, sec, oh, om, sign, n, up = 0;
	int64_t frac = 0, t;
	const char *p;

	if (parse_date(s, &y, &mo, &d) != 0)
		return (-1);
	t = days_from_civil(y, mo, d) * DAY_MS;
	if (s[10] == '\0') {
		*ms = is_to ? t + DAY_MS : t;
		return (*ms < END_MS || (is_to && *ms == END_MS) ? 0 : -1);
	}
	if (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
		return (-1);
	p = s + 11;
	if ((h = digits(p, 2)) < 0 || p[2] != ':' ||
	    (mi = digits(p + 3, 2)) < 0 || p[5] != ':' ||
	    (sec = digits(p + 6, 2)) < 0)
		return (-1);
	if (h > 23 || mi > 59 || sec > 59)
		return (-1);
	p += 8;
	if (*p == '.') {
		/* Milliseconds, rounded up by any further non-zero digit. */
		for (n = 0, p++; *p >= '0' && *p <= '9'; n++, p++) {
			if (n < 3)
				frac = frac * 10 + (*p - '0');
			else if (*p != '0')
				up = 1;
		}
		if (n == 0)
			return (-1);
		for (; n < 3; n++)
			frac *= 10;
		frac += up;
	}
	if (*p == 'Z' || *p == 'z') {
		sign = 0;
		oh = om = 0;
		p++;
	} else if (*p == '+' || *p == '-' || *p == ' ') {
		sign = *p == '-' ? -1 : 1;
		if ((oh = digits(p + 1, 2)) < 0 || p[3] != ':' ||
		    (om = digits(p + 4, 2)) < 0 || oh > 23 || om > 59)
			return (-1);
		p += 6;
	} else
		return (-1);
	if (*p != '\0')
		return (-1);
	t += ((int64_t)h * 3600 + mi * 60 + sec) * 1000 + frac;
	t -= (int64_t)sign * (oh * 3600 + om * 60) * 1000;
	if (t < 0 || t > END_MS || (t == END_MS && !is_to))
		return (-1);
	*ms = t;
	return (0);
}

/* Unix ms as the ledger writes it: 2026-11-28T14:23:00.123Z. */
int
spend_format_time(int64_t ms, char *buf, size_t len)
{
	struct tm tm;
	time_t secs;
	size_t n;

	if (ms < 0)
		return (-1);
	secs = (time_t)(ms / 1000);
	if (gmtime_r(&secs, &tm) == NULL ||
	    (n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm)) == 0)
		return (-1);
	if ((size_t)snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000)) >=
	    len - n)
		return (-1);
	return (0);
}

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The cursor after the row (started_at, id): base64url, no padding. */
char *
spend_cursor_encode(const char *at, const char *id)
{
	char *plain, *out;
	size_t len, i, o = 0;
	uint32_t v;

	xasprintf(&plain, "%s|%s", at, id);
	len = strlen(plain);
	out = xmalloc((len + 2) / 3 * 4 + 1);
	for (i = 0; i < len; i += 3) {
		v = (uint32_t)(unsigned char)plain[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)(unsigned char)plain[i + 1] << 8;
		if (i + 2 < len)
			v |= (unsigned char)plain[i + 2];
		out[o++] = b64url[(v >> 18) & 63];
		out[o++] = b64url[(v >> 12) & 63];
		if (i + 1 < len)
			out[o++] = b64url[(v >> 6) & 63];
		if (i + 2 < len)
			out[o++] = b64url[v & 63];
	}
	out[o] = '\0';
	free(plain);
	return (out);
}

static int
b64url_value(char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64url, c)) == NULL)
		return (-1);
	return ((int)(p - b64url));
}

/* Split a cursor back into (started_at, id); -1 if it is not one. */
int
spend_cursor_decode(const char *s, char **at, char **id)
{
	size_t len = strlen(s), i, o = 0;
	char *plain, *bar;
	uint32_t v;
	int k, n;
	int64_t ms;

	*at = *id = NULL;
	if (len == 0 || len % 4 == 1 || len > 2 * SPEND_VALUE_MAX)
		return (-1);
	plain = xmalloc(len + 1);
	for (i = 0; i < len; i += 4) {
		v = 0;
		for (n = 0; n < 4 && i + n < len; n++) {
			if ((k = b64url_value(s[i + n])) < 0)
				goto fail;
			v |= (uint32_t)k << (18 - 6 * n);
		}
		plain[o++] = (char)(v >> 16);
		if (n > 2)
			plain[o++] = (char)(v >> 8);
		if (n > 3)
			plain[o++] = (char)v;
	}
	plain[o] = '\0';
	if (strlen(plain) != o || (bar = strchr(plain, '|')) == NULL ||
	    bar[1] == '\0')
		goto fail;
	*bar = '\0';
	if (strlen(plain) != SPEND_TIME_MAX - 8 ||
	    spend_parse_time(plain, 0, &ms) != 0)
		goto fail;
	*at = xstrdup(plain);
	*id = xstrdup(bar + 1);
	free(plain);
	return (0);
fail:
	free(plain);
	return (-1);
}

static int
set_dims(struct spend_query *q, const char *v, char **cause)
{
	char name[64], safe[80];
	const char *p, *e;
	size_t len, i, j;

	q->sq_ngroup = 0;
	if (*v == '\0')
		return (0);
	for (p = v;; p = e + 1) {
		e = strchr(p, ',');
		len = e != NULL ? (size_t)(e - p) : strlen(p);
		snprintf(name, sizeof(name), "%.*s", (int)len, p);
		for (i = 0; i < SPEND_DIM_MAX; i++)
			if (len == strlen(dim_names[i]) &&
			    strncmp(p, dim_names[i], len) == 0)
				break;
		if (i == SPEND_DIM_MAX || len >= sizeof(name)) {
			safe_copy(safe, sizeof(safe), name);
			xasprintf(cause,
			    "unknown dimension '%s' (one of team, "
			    "tenant, agent_class, environment, "
			    "intent, model, provider, day, month, hour)",
			    safe);
			return (-1);
		}
		for (j = 0; j < q->sq_ngroup; j++)
			if (q->sq_group[j] == (enum spend_dim)i) {
				xasprintf(cause, "'%s' given twice", name);
				return (-1);
			}
		q->sq_group[q->sq_ngroup++] = (enum spend_dim)i;
		if (e == NULL)
			break;
	}
	return (0);
}

static int
set_month(struct spend_query *q, const char *v)
{
	int y, m;

	if ((y = digits(v, 4)) < 1970 || v[4] != '-' ||
	    (m = digits(v + 5, 2)) < 1 || m > 12 || v[7] != '\0')
		return (-1);
	q->sq_from_ms = days_from_civil(y, m, 1) * DAY_MS;
	q->sq_to_ms =
	    days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) *
	    DAY_MS;
	q->sq_has_from = 1;
	q->sq_has_to = q->sq_to_ms < END_MS;
	return (0);
}

static int
set_limit(struct spend_query *q, const char *v)
{
	long n;
	char *end;

	if (!isdigit((unsigned char)*v) || strlen(v) > 5)
		return (-1);
	n = strtol(v, &end, 10);
	if (*end != '\0' || n < 1 || n > SPEND_LIMIT_MAX)
		return (-1);
	q->sq_limit = (int)n;
	return (0);
}

/* Set one parameter; a bad one gives a cause without the parameter's name. */
static int
set_one(struct spend_query *q, int p, const char *v, char **cause)
{
	char *nl;
	size_t i;

	if (p < SPEND_FILTER_MAX) {
		q->sq_filter[p] = xstrdup(v);
		return (0);
	}
	switch (p) {
	case P_FROM:
	case P_TO:
		if (spend_parse_time(v, p == P_TO,
			p == P_TO ? &q->sq_to_ms : &q->sq_from_ms) != 0) {
			*cause = xstrdup("expected YYYY-MM-DD or RFC 3339 "
					 "(2026-11-28T14:23:00Z)");
			return (-1);
		}
		if (p == P_TO)
			q->sq_has_to = q->sq_to_ms < END_MS;
		else
			q->sq_has_from = 1;
		return (0);
	case P_MONTH:
		if (set_month(q, v) != 0) {
			*cause = xstrdup("expected YYYY-MM");
			return (-1);
		}
		return (0);
	case P_GROUP_BY:
		return (set_dims(q, v, cause));
	case P_FORMAT:
		if (strcmp(v, "json") == 0)
			q->sq_format = SPEND_FORMAT_JSON;
		else if (strcmp(v, "table") == 0)
			q->sq_format = SPEND_FORMAT_TABLE;
		else if (strcmp(v, "csv") == 0 &&
		    q->sq_kind == SPEND_KIND_SPEND)
			q->sq_format = SPEND_FORMAT_CSV;
		else {
			*cause = xstrdup(q->sq_kind == SPEND_KIND_SPEND
				? "expected json, csv or table"
				: "expected json or table");
			return (-1);
		}
		return (0);
	case P_STATUS:
		for (i = 0; i < nitems(status_names); i++)
			if (strcmp(v, status_names[i]) == 0) {
				q->sq_status = xstrdup(v);
				return (0);
			}
		*cause =
		    xstrdup("expected in_flight, ok, error, refused, "
			    "client_closed, upstream_error, interrupted or "
			    "killed");
		return (-1);
	case P_LIMIT:
		if (set_limit(q, v) != 0) {
			xasprintf(cause, "expected a number from 1 to %d",
			    SPEND_LIMIT_MAX);
			return (-1);
		}
		return (0);
	case P_CURSOR:
		if (spend_cursor_decode(
			v, &q->sq_cursor_at, &q->sq_cursor_id) != 0) {
			*cause = xstrdup("not a cursor from a previous answer");
			return (-1);
		}
		/*
		 * A fleet answer's cursor also names the row's instance, after
		 * a newline (which no request id holds): two instances may
		 * have written calls with one id at one time.
		 */
		if ((nl = strchr(q->sq_cursor_id, '\n')) != NULL) {
			q->sq_cursor_inst = xstrdup(nl + 1);
			*nl = '\0';
		}
		return (0);
	case P_FLEET:
		if (strcmp(v, "1") == 0)
			q->sq_fleet = 1;
		else if (strcmp(v, "0") != 0) {
			*cause = xstrdup("expected 1 (the fleet ledger) or 0");
			return (-1);
		}
		return (0);
	}
	*cause = xstrdup("unknown parameter");
	return (-1);
}

/*
 * Set parameter key to value. -1 with a cause (without the parameter's
 * name, which the caller adds as it knows it: "from" or "--from") for an
 * unknown parameter, one given twice, or a bad value.
 */
int
spend_query_set(
    struct spend_query *q, const char *key, const char *value, char **cause)
{
	int p;

	for (p = 0; p < P_MAX; p++) {
		if (p < SPEND_FILTER_MAX ? strcmp(key, dim_names[p]) == 0
					 : strcmp(key, param_names[p]) == 0)
			break;
	}
	if (p == P_MAX ||
	    (q->sq_kind == SPEND_KIND_SPEND &&
		(p == P_STATUS || p == P_LIMIT || p == P_CURSOR)) ||
	    (q->sq_kind == SPEND_KIND_CALLS && p == P_GROUP_BY)) {
		*cause = xstrdup("unknown parameter");
		return (-1);
	}
	if (q->sq_seen & (1u << p)) {
		*cause = xstrdup("given more than once");
		return (-1);
	}
	q->sq_seen |= 1u << p;
	if (strlen(value) > SPEND_VALUE_MAX) {
		xasprintf(cause, "longer than %d bytes", SPEND_VALUE_MAX);
		return (-1);
	}
	return (set_one(q, p, value, cause));
}

/*
 * Checks across parameters, once all are set. Parameter names in the
 * cause get prefix ("" for the API, "--" for the command line).
 */
int
spend_query_finish(struct spend_query *q, const char *prefix, char **cause)
{
	if ((q->sq_seen & (1u << P_MONTH)) &&
	    (q->sq_seen & ((1u << P_FROM) | (1u << P_TO)))) {
		xasprintf(cause,
		    "%smonth: cannot be combined with %sfrom or %sto", prefix,
		    prefix, prefix);
		return (-1);
	}
	if (q->sq_has_from && q->sq_has_to && q->sq_to_ms <= q->sq_from_ms) {
		xasprintf(cause, "%sto: must be after %sfrom", prefix, prefix);
		return (-1);
	}
	/* The fleet ledger is the calls table alone: no rollup there. */
	if (q->sq_fleet && q->sq_path != SPEND_PATH_AUTO &&
	    q->sq_path != SPEND_PATH_CALLS) {
		xasprintf(cause,
		    "%sfleet: the fleet ledger has no rollup; it answers from "
		    "its calls table only",
		    prefix);
		return (-1);
	}
	return (0);
}

/* Decode %XX and '+' in place; -1 on a bad escape or an encoded NUL. */
int
spend_form_decode(char *s)
{
	char *o = s;
	int hi, lo;

	for (; *s != '\0'; s++) {
		if (*s == '+')
			*o++ = ' ';
		else if (*s == '%') {
			if (!isxdigit((unsigned char)s[1]) ||
			    !isxdigit((unsigned char)s[2]))
				return (-1);
			hi = isdigit((unsigned char)s[1])
			    ? s[1] - '0'
			    : (tolower((unsigned char)s[1]) - 'a' + 10);
			lo = isdigit((unsigned char)s[2])
			    ? s[2] - '0'
			    : (tolower((unsigned char)s[2]) - 'a' + 10);
			if (hi == 0 && lo == 0)
				return (-1);
			*o++ = (char)(hi * 16 + lo);
			s += 2;
		} else
			*o++ = *s;
	}
	*o = '\0';
	return (0);
}

/*
 * Parse a query string (without the '?') into q, initialised here for
 * kind. On error q is freed and cause names the parameter:
 * "group_by: unknown dimension 'colour' ...", "unknown parameter 'teams'".
 */
int
spend_query_parse(
    struct spend_query *q, enum spend_kind kind, const char *qs, char **cause)
{
	char *copy = NULL, *p, *next, *eq, *val, *msg = NULL;
	char safe[80];

	spend_query_init(q, kind);
	if (qs == NULL)
		qs = "";
	if (strlen(qs) > SPEND_QUERY_MAX) {
		xasprintf(
		    cause, "query: longer than %d bytes", SPEND_QUERY_MAX);
		goto fail;
	}
	copy = xstrdup(qs);
	for (p = copy; p != NULL; p = next) {
		if ((next = strchr(p, '&')) != NULL)
			*next++ = '\0';
		if (*p == '\0')
			continue;
		if ((eq = strchr(p, '=')) == NULL) {
			safe_copy(safe, sizeof(safe), p);
			xasprintf(cause, "%s: expected %s=VALUE", safe, safe);
			goto fail;
		}
		*eq = '\0';
		val = eq + 1;
		if (spend_form_decode(p) != 0) {
			safe_copy(safe, sizeof(safe), p);
			xasprintf(cause,
			    "bad percent-encoding in a parameter "
			    "name '%s'",
			    safe);
			goto fail;
		}
		if (spend_form_decode(val) != 0) {
			safe_copy(safe, sizeof(safe), p);
			xasprintf(cause, "%s: bad percent-encoding", safe);
			goto fail;
		}
		if (spend_query_set(q, p, val, &msg) != 0) {
			safe_copy(safe, sizeof(safe), p);
			if (strcmp(msg, "unknown parameter") == 0)
				xasprintf(
				    cause, "unknown parameter '%s'", safe);
			else
				xasprintf(cause, "%s: %s", safe, msg);
			free(msg);
			goto fail;
		}
	}
	if (spend_query_finish(q, "", cause) != 0)
		goto fail;
	free(copy);
	return (0);
fail:
	free(copy);
	spend_query_free(q);
	return (-1);
}
