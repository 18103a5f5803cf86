/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a policy selects: glob matching of a call's attributes, the scope
 * key that names a budget, and the window a time falls in. The key is
 * built from what the scope means, never from the policy's name:
 *
 *	match{agent_class=researcher,model=gpt-4o*}per{tenant=acme}window{day}
 *
 * Match patterns come in a fixed attribute order (a "*" pattern is dropped
 * at parse time, as it matches everything), then the values of the per
 * tags ("tenant=" when the call has none), then the window, rolling ones
 * in minutes so 24h and 1d are one scope. Bytes that would make the key
 * ambiguous are %XX-escaped, so a key reads back into the scope object
 * it names. Calendar windows are UTC: a day, an ISO week from Monday, a
 * month; the date arithmetic is Howard Hinnant's days_from_civil, in
 * integers, valid for any Gregorian date.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "policy_int.h"

static const char *attr_names[POLICY_ATTR_MAX] = {"intent", "team", "tenant",
    "agent_class", "environment", "model", "provider"};

/* The name of attribute a ("intent" .. "provider"). */
const char *
policy_attr_name(int a)
{
	return (a >= 0 && a < POLICY_ATTR_MAX ? attr_names[a] : "?");
}

/*
 * A budget scope as the admin API shows it: the policy's per tags with
 * this scope's values (per[t], NULL or "" for calls without that tag),
 * then its other match patterns, in attribute order. A new object.
 */
cJSON *
policy_scope_json(const struct policy *po, const char *const *per)
{
	cJSON *o;
	int a;

	if ((o = cJSON_CreateObject()) == NULL)
		fatalx("%s: cJSON", __func__);
	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if (a < TAG_MAX && po->po_per[a]) {
			if (cJSON_AddStringToObject(o, attr_names[a],
				per[a] != NULL ? per[a] : "") == NULL)
				fatalx("%s: cJSON", __func__);
		} else if (po->po_match[a] != NULL &&
		    cJSON_AddStringToObject(
			o, attr_names[a], po->po_match[a]) == NULL)
			fatalx("%s: cJSON", __func__);
	}
	return (o);
}

/* Does s match pattern p, where * is any run and ? any one byte? */
int
policy_glob(const char *p, const char *s)
{
	const char *star = NULL, *resume = NULL;

	while (*s != '\0') {
		if (*p == '*') {
			star = p++;
			resume = s;
		} else if (*p == '?' || *p == *s) {
			p++;
			s++;
		} else if (star != NULL) {
			p = star + 1;
			s = ++resume;
		} else
			return (0);
	}
	while (*p == '*')
		p++;
	return (*p == '\0');
}

/* Does the call whose attributes are attr match every pattern of po? */
int
policy_matches(const struct policy *po, const char *const *attr)
{
	const char *v;
	int a;

	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if (po->po_match[a] == NULL)
			continue;
		v = attr[a] != NULL ? attr[a] : "";
		if (!policy_glob(po->po_match[a], v))
			return (0);
	}
	return (1);
}

/* Append s to the key in buf, escaping the bytes that delimit it. */
static void
key_put(char **buf, size_t *len, size_t *cap, const char *s, int esc)
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned char c;

	for (; *s != '\0'; s++) {
		if (*len + 4 > *cap) {
			*cap = *cap * 2 + 64;
			*buf = xreallocarray(*buf, *cap, 1);
		}
		c = (unsigned char)*s;
		if (esc && (c <= 0x20 || c >= 0x7f || strchr("%,={}@", c))) {
			(*buf)[(*len)++] = '%';
			(*buf)[(*len)++] = hex[c >> 4];
			(*buf)[(*len)++] = hex[c & 15];
		} else
			(*buf)[(*len)++] = (char)c;
	}
	(*buf)[*len] = '\0';
}

/* The key without its window part: "match{...}per{...}". */
static char *
key_base(const struct policy *po, const char *const *attr, size_t *lenp,
    size_t *capp)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int a, first = 1;

	key_put(&buf, &len, &cap, "match{", 0);
	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if (po->po_match[a] == NULL)
			continue;
		key_put(&buf, &len, &cap, first ? "" : ",", 0);
		key_put(&buf, &len, &cap, attr_names[a], 0);
		key_put(&buf, &len, &cap, "=", 0);
		key_put(&buf, &len, &cap, po->po_match[a], 1);
		first = 0;
	}
	key_put(&buf, &len, &cap, "}per{", 0);
	for (a = 0, first = 1; a < TAG_MAX; a++) {
		if (!po->po_per[a])
			continue;
		key_put(&buf, &len, &cap, first ? "" : ",", 0);
		key_put(&buf, &len, &cap, attr_names[a], 0);
		key_put(&buf, &len, &cap, "=", 0);
		key_put(&buf, &len, &cap, attr[a] != NULL ? attr[a] : "", 1);
		first = 0;
	}
	key_put(&buf, &len, &cap, "}", 0);
	*lenp = len;
	*capp = cap;
	return (buf);
}

/*
 * The scope key of po for a call with attributes attr: match patterns, per
 * values and window, never the policy's name. The caller frees it.
 */
char *
policy_scope_key(const struct policy *po, const char *const *attr)
{
	char *buf, win[48];
	size_t len, cap;

	buf = key_base(po, attr, &len, &cap);
	switch (po->po_window.pw_kind) {
	case POLICY_WIN_DAY:
		snprintf(win, sizeof(win), "window{day}");
		break;
	case POLICY_WIN_WEEK:
		snprintf(win, sizeof(win), "window{week}");
		break;
	case POLICY_WIN_MONTH:
		snprintf(win, sizeof(win), "window{month}");
		break;
	case POLICY_WIN_TOTAL:
		snprintf(win, sizeof(win), "window{total}");
		break;
	default:
		snprintf(win, sizeof(win), "window{rolling:%lldm}",
		    (long long)(po->po_window.pw_len_ms / MIN_MS));
		break;
	}
	key_put(&buf, &len, &cap, win, 0);
	return (buf);
}

/*
 * The key of one counter: a budget's scope key plus its window's start
 * ("@rolling" for a rolling window, whose one entry slides), or with start
 * -1 the scope's rate-limit entry, which is window-independent.
 */
char *
policy_budget_key(
    const struct policy *po, const char *const *attr, int64_t start)
{
	char *key, *full;
	size_t len, cap;

	if (start == -1) {
		key = key_base(po, attr, &len, &cap);
		key_put(&key, &len, &cap, "rate", 0);
		return (key);
	}
	key = policy_scope_key(po, attr);
	if (po->po_window.pw_kind == POLICY_WIN_ROLLING)
		xasprintf(&full, "%s@rolling", key);
	else
		xasprintf(&full, "%s@%lld", key, (long long)start);
	free(key);
	return (full);
}

static int64_t
floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return ((a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q);
}

/* Days since 1970-01-01 of a Gregorian date (Hinnant). */
int64_t
policy_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return (era * 146097 + doe - 719468);
}

/* The Gregorian date of a day number (Hinnant). */
void
policy_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	*m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

/*
 * The window of w that holds time now: [*start, *reset). A total window
 * starts at 0 and never resets (POLICY_NEVER). A rolling one reports the
 * first instant its bucketed sum still counts and the end of the current
 * bucket, when the oldest bucket next drops out.
 */
static int policy_local_zone; /* calendar windows follow TZ, not UTC */

/*
 * Calendar windows from now on follow the process's local time zone (TZ,
 * set once at start-up before any thread runs) instead of UTC.
 */
void
policy_set_local_zone(int on)
{
	policy_local_zone = on;
}

/* A day, week or month of the local zone, as Unix ms; DST included. */
static void
local_window(
    enum policy_window_kind kind, int64_t now, int64_t *start, int64_t *reset)
{
	struct tm tm, next;
	time_t t = (time_t)floor_div(now, 1000);

	localtime_r(&t, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1; /* mktime finds out */
	if (kind == POLICY_WIN_WEEK)
		tm.tm_mday -= (tm.tm_wday + 6) % 7; /* back to Monday */
	else if (kind == POLICY_WIN_MONTH)
		tm.tm_mday = 1;
	next = tm;
	if (kind == POLICY_WIN_DAY)
		next.tm_mday += 1;
	else if (kind == POLICY_WIN_WEEK)
		next.tm_mday += 7;
	else
		next.tm_mon += 1;
	*start = (int64_t)mktime(&tm) * 1000;
	*reset = (int64_t)mktime(&next) * 1000;
}

void
policy_window_at(
    const struct policy_window *w, int64_t now, int64_t *start, int64_t *reset)
{
	int64_t days, wd, y, width, b;
	unsigned m, d;

	if (policy_local_zone &&
	    (w->pw_kind == POLICY_WIN_DAY || w->pw_kind == POLICY_WIN_WEEK ||
		w->pw_kind == POLICY_WIN_MONTH)) {
		local_window(w->pw_kind, now, start, reset);
		return;
	}
	days = floor_div(now, DAY_MS);
	switch (w->pw_kind) {
	case POLICY_WIN_DAY:
		*start = days * DAY_MS;
		*reset = *start + DAY_MS;
		break;
	case POLICY_WIN_WEEK:
		/* 1970-01-01 was a Thursday: day 0 is weekday 3 from Monday. */
		wd = ((days % 7) + 7 + 3) % 7;
		*start = (days - wd) * DAY_MS;
		*reset = *start + 7 * DAY_MS;
		break;
	case POLICY_WIN_MONTH:
		policy_civil_from_days(days, &y, &m, &d);
		*start = policy_days_from_civil(y, m, 1) * DAY_MS;
		*reset = policy_days_from_civil(
			     m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) *
		    DAY_MS;
		break;
	case POLICY_WIN_TOTAL:
		*start = 0;
		*reset = POLICY_NEVER;
		break;
	default:
		width = w->pw_len_ms / ROLL_BUCKETS;
		b = floor_div(now, width);
		*start = (b - ROLL_BUCKETS) * width;
		*reset = (b + 1) * width;
		break;
	}
}

/*
 * The window as a person writes it, into buf: "day", "week", "month",
 * "total", or a rolling length in the largest whole unit ("7d", "24h" is
 * "1d", "90m"). Returns buf.
 */
char *
policy_window_name(const struct policy_window *w, char *buf, size_t len)
{
	int64_t ms = w->pw_len_ms;

	switch (w->pw_kind) {
	case POLICY_WIN_DAY:
		snprintf(buf, len, "day");
		break;
	case POLICY_WIN_WEEK:
		snprintf(buf, len, "week");
		break;
	case POLICY_WIN_MONTH:
		snprintf(buf, len, "month");
		break;
	case POLICY_WIN_TOTAL:
		snprintf(buf, len, "total");
		break;
	default:
		if (ms > 0 && ms % DAY_MS == 0)
			snprintf(buf, len, "%lldd", (long long)(ms / DAY_MS));
		else if (ms > 0 && ms % (60 * MIN_MS) == 0)
			snprintf(
			    buf, len, "%lldh", (long long)(ms / (60 * MIN_MS)));
		else
			snprintf(buf, len, "%lldm", (long long)(ms / MIN_MS));
		break;
	}
	return (buf);
}

/* The refusal reason as docs/operations.md and the ledger spell it. */
const char *
policy_reason_name(enum policy_reason r)
{
	switch (r) {
	case POLICY_OK:
		return ("ok");
	case POLICY_KILLED:
		return ("killed");
	case POLICY_MODEL_NOT_ALLOWED:
		return ("model_not_allowed");
	case POLICY_HARD_CAP:
		return ("hard_cap");
	case POLICY_RATE_REQUESTS:
		return ("rate_limit_requests");
	case POLICY_RATE_TOKENS:
		return ("rate_limit_tokens");
	case POLICY_CONCURRENCY:
		return ("concurrency");
	}
	return ("?");
}

/*
 * One "name=value" list of a scope key, from *p up to its closing '}':
 * each value, %XX-decoded, into values[] at its attribute's index (one of
 * the first nattr, each at most once), copies the caller frees; *p is
 * moved past the '}'. -1 when the list is not one key_base writes.
 */
static int
key_list(const char **p, int nattr, char **values)
{
	const char *s = *p;
	char *v;
	size_t n, len;
	int a, hi, lo;

	if (*s == '}') {
		*p = s + 1;
		return (0);
	}
	for (;;) {
		for (a = 0; a < nattr; a++) {
			n = strlen(attr_names[a]);
			if (strncmp(s, attr_names[a], n) == 0 && s[n] == '=')
				break;
		}
		if (a == nattr || values[a] != NULL)
			return (-1);
		s += strlen(attr_names[a]) + 1;
		len = strcspn(s, ",}");
		if (s[len] == '\0')
			return (-1);
		v = values[a] = xmalloc(len + 1);
		for (n = 0; len > 0; len--) {
			if (*s != '%') {
				v[n++] = *s++;
				continue;
			}
			if (len < 3 ||
			    (hi = hex_digit((unsigned char)s[1])) < 0 ||
			    (lo = hex_digit((unsigned char)s[2])) < 0 ||
			    (hi == 0 && lo == 0))
				return (-1);
			v[n++] = (char)(hi * 16 + lo);
			s += 3;
			len -= 2;
		}
		v[n] = '\0';
		/* What no key tollgate wrote holds: not text. */
		if (!utf8_text_ok(v, TAG_VALUE_MAX * 4))
			return (-1);
		if (*s++ == '}')
			break;
	}
	*p = s;
	return (0);
}

/*
 * The scope object of the budget whose scope key (or budget key) is key,
 * as policy_scope_json makes it from the match patterns and per values
 * the key was made of: what GET /v1/budgets shows for that budget, for
 * one known only by its key, such as an alert read back from the ledger.
 * The caller owns it. NULL when key is not a key policy_scope_key makes.
 */
cJSON *
policy_scope_key_json(const char *key)
{
	struct policy po;
	char *match[POLICY_ATTR_MAX], *per[POLICY_ATTR_MAX];
	const char *p = key;
	cJSON *o = NULL;
	int a;

	memset(match, 0, sizeof(match));
	memset(per, 0, sizeof(per));
	if (key == NULL || strncmp(p, "match{", 6) != 0)
		goto out;
	p += 6;
	if (key_list(&p, POLICY_ATTR_MAX, match) != 0 ||
	    strncmp(p, "per{", 4) != 0)
		goto out;
	p += 4;
	if (key_list(&p, TAG_MAX, per) != 0 || strncmp(p, "window{", 7) != 0)
		goto out;
	/* A scope is its match patterns and per tags: all the object needs. */
	memset(&po, 0, sizeof(po));
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		po.po_match[a] = match[a];
	for (a = 0; a < TAG_MAX; a++)
		po.po_per[a] = per[a] != NULL;
	o = policy_scope_json(&po, (const char *const *)per);
out:
	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		free(match[a]);
		free(per[a]);
	}
	return (o);
}
