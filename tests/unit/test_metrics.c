/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics module: counters move with calls, tokens and cost sum
 * exactly, histograms are cumulative, label values are escaped, the
 * per-family cap folds into "_other", and every rendering passes a small
 * Prometheus text-format (0.0.4) checker, which has cases of its own to
 * show that it rejects what it should. The ledger is never opened:
 * ledger_stats() on a closed ledger reports zeros.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "tollgate/admin.h"
#include "tollgate/metrics.h"
#include "tollgate/util.h"

/* The labels of a call with team "t" and everything else fixed. */
#define CALL_LABELS(status)                                                    \
	"provider=\"openai\",model=\"gpt-4o\",team=\"search\","                \
	"tenant=\"acme\",agent_class=\"researcher\",status=\"" status "\""
#define ATTR_LABELS                                                            \
	"provider=\"openai\",model=\"gpt-4o\",team=\"search\","                \
	"tenant=\"acme\",agent_class=\"researcher\""

/* Every family metrics_render writes, in order. */
static const char *const families[] = {
    "tollgate_build_info",
    "tollgate_calls_total",
    "tollgate_tokens_total",
    "tollgate_cost_nusd_total",
    "tollgate_cost_usd_total",
    "tollgate_unpriced_calls_total",
    "tollgate_refusals_total",
    "tollgate_upstream_ttfb_seconds",
    "tollgate_call_duration_seconds",
    "tollgate_calls_in_flight",
    "tollgate_kills_live",
    "tollgate_connections_closed_total",
    "tollgate_ledger_queue_depth",
    "tollgate_ledger_rows_written_total",
    "tollgate_ledger_commits_total",
    "tollgate_ledger_failures_total",
    "tollgate_ledger_refused_full_total",
    "tollgate_ledger_dropped_total",
    "tollgate_ledger_interrupted_rows",
    "tollgate_ledger_commit_seconds",
    "tollgate_ledger_commit_seconds_max",
    "tollgate_ledger_batch_max",
    "tollgate_ledger_failing",
    "tollgate_metrics_series_dropped_total",
};

/* --- A Prometheus text format 0.0.4 checker ----------------------------- */

#define CHECK_FAMILIES_MAX 96

struct check_family {
	char cf_name[128];
	char cf_type[16];
	int cf_help, cf_samples;
};

struct checker {
	struct check_family c_fam[CHECK_FAMILIES_MAX];
	size_t c_nfam;
	struct check_family *c_cur; /* the family whose lines these are */
	char **c_series; /* "name{labels}" of every sample */
	size_t c_nseries, c_capseries;
	char c_err[256];
};

static int
check_fail(struct checker *c, int line, const char *msg)
{
	snprintf(c->c_err, sizeof(c->c_err), "line %d: %s", line, msg);
	return (-1);
}

static size_t
name_len(const char *p, int metric)
{
	size_t n = 0;

	while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') ||
	    p[n] == '_' || (metric && p[n] == ':') ||
	    (n > 0 && p[n] >= '0' && p[n] <= '9'))
		n++;
	return (n);
}

static struct check_family *
check_find(struct checker *c, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < c->c_nfam; i++) {
		if (strlen(c->c_fam[i].cf_name) == len &&
		    memcmp(c->c_fam[i].cf_name, name, len) == 0)
			return (&c->c_fam[i]);
	}
	return (NULL);
}

/* The family a sample name belongs to, given the suffixes of its type. */
static struct check_family *
check_sample_family(
    struct checker *c, const char *name, size_t len, int *is_bucket)
{
	static const char *const sfx[] = {"_bucket", "_sum", "_count"};
	struct check_family *f;
	size_t i, sl;

	*is_bucket = 0;
	f = check_find(c, name, len);
	if (f != NULL)
		return (f);
	for (i = 0; i < nitems(sfx); i++) {
		sl = strlen(sfx[i]);
		if (len <= sl || memcmp(name + len - sl, sfx[i], sl) != 0)
			continue;
		f = check_find(c, name, len - sl);
		if (f == NULL)
			continue;
		if (strcmp(f->cf_type, "histogram") == 0 ||
		    (i > 0 && strcmp(f->cf_type, "summary") == 0)) {
			*is_bucket = i == 0;
			return (f);
		}
	}
	return (NULL);
}

static int
check_value(const char *v)
{
	char *end;

	if (strcmp(v, "+Inf") == 0 || strcmp(v, "-Inf") == 0 ||
	    strcmp(v, "NaN") == 0)
		return (0);
	if (*v == '\0')
		return (-1);
	(void)strtod(v, &end);
	return (*end == '\0' ? 0 : -1);
}

static int
check_comment(struct checker *c, int ln, const char *line)
{
	struct check_family *f;
	const char *name;
	size_t n;
	int help;

	if (strncmp(line, "# HELP ", 7) == 0)
		help = 1;
	else if (strncmp(line, "# TYPE ", 7) == 0)
		help = 0;
	else
		return (0); /* a plain comment */
	name = line + 7;
	n = name_len(name, 1);
	if (n == 0 || n >= sizeof(f->cf_name) ||
	    (name[n] != ' ' && name[n] != '\0'))
		return (check_fail(c, ln, "bad metric name in HELP/TYPE"));
	f = check_find(c, name, n);
	if (f != NULL && f != c->c_cur)
		return (check_fail(c, ln, "family declared twice"));
	if (f != NULL && f->cf_samples)
		return (check_fail(c, ln, "HELP/TYPE after samples"));
	if (f == NULL) {
		if (c->c_nfam == CHECK_FAMILIES_MAX)
			return (check_fail(c, ln, "too many families"));
		f = &c->c_fam[c->c_nfam++];
		memcpy(f->cf_name, name, n);
		f->cf_name[n] = '\0';
	}
	c->c_cur = f;
	if (help) {
		if (f->cf_help)
			return (check_fail(c, ln, "second HELP"));
		f->cf_help = 1;
		return (0);
	}
	if (f->cf_type[0] != '\0')
		return (check_fail(c, ln, "second TYPE"));
	if (name[n] != ' ')
		return (check_fail(c, ln, "TYPE without a type"));
	name += n + 1;
	if (strcmp(name, "counter") != 0 && strcmp(name, "gauge") != 0 &&
	    strcmp(name, "histogram") != 0 && strcmp(name, "summary") != 0 &&
	    strcmp(name, "untyped") != 0)
		return (check_fail(c, ln, "unknown TYPE"));
	snprintf(f->cf_type, sizeof(f->cf_type), "%s", name);
	return (0);
}

/* Labels from just after '{'; sets *end just after '}'. */
static int
check_labels(
    struct checker *c, int ln, const char *p, const char **end, int *has_le)
{
	char seen[16][64];
	size_t nseen = 0, n, i;

	*has_le = 0;
	if (*p == '}') {
		*end = p + 1;
		return (0);
	}
	for (;;) {
		n = name_len(p, 0);
		if (n == 0 || n >= sizeof(seen[0]) || nseen == nitems(seen))
			return (check_fail(c, ln, "bad label name"));
		for (i = 0; i < nseen; i++) {
			if (strlen(seen[i]) == n && memcmp(seen[i], p, n) == 0)
				return (check_fail(c, ln, "label twice"));
		}
		memcpy(seen[nseen], p, n);
		seen[nseen++][n] = '\0';
		if (n == 2 && memcmp(p, "le", 2) == 0)
			*has_le = 1;
		p += n;
		if (p[0] != '=' || p[1] != '"')
			return (check_fail(c, ln, "label without =\""));
		for (p += 2; *p != '"'; p++) {
			if (*p == '\0')
				return (
				    check_fail(c, ln, "unterminated value"));
			if (*p != '\\')
				continue;
			p++;
			if (*p != '\\' && *p != '"' && *p != 'n')
				return (check_fail(c, ln, "bad escape"));
		}
		p++;
		if (*p == '}') {
			*end = p + 1;
			return (0);
		}
		if (*p != ',')
			return (check_fail(c, ln, "junk after a label"));
		p++;
	}
}

static int
check_sample(struct checker *c, int ln, const char *line)
{
	struct check_family *f;
	const char *p, *sp;
	size_t n;
	int is_bucket, has_le = 0;

	n = name_len(line, 1);
	if (n == 0)
		return (check_fail(c, ln, "bad sample name"));
	f = check_sample_family(c, line, n, &is_bucket);
	if (f == NULL)
		return (check_fail(c, ln, "sample of an undeclared family"));
	if (f != c->c_cur)
		return (check_fail(c, ln, "family's samples not together"));
	if (!f->cf_help || f->cf_type[0] == '\0')
		return (check_fail(c, ln, "sample before HELP and TYPE"));
	f->cf_samples++;
	p = line + n;
	if (*p == '{') {
		if (check_labels(c, ln, p + 1, &p, &has_le) == -1)
			return (-1);
	}
	if (is_bucket && !has_le)
		return (check_fail(c, ln, "bucket without le"));
	if (*p != ' ')
		return (check_fail(c, ln, "no space before the value"));
	sp = p;
	if (check_value(p + 1) == -1)
		return (check_fail(c, ln, "bad value"));
	if (c->c_nseries == c->c_capseries) {
		c->c_capseries = c->c_capseries ? c->c_capseries * 2 : 256;
		c->c_series = xreallocarray(
		    c->c_series, c->c_capseries, sizeof(*c->c_series));
	}
	c->c_series[c->c_nseries++] = xstrndup(line, (size_t)(sp - line));
	return (0);
}

static int
strp_cmp(const void *a, const void *b)
{
	return (strcmp(*(char *const *)a, *(char *const *)b));
}

/* 0 if text is valid Prometheus text; else -1 with the reason in err. */
static int
prom_check(const char *text, char *err, size_t errlen)
{
	struct checker *c;
	const char *p = text, *nl;
	char *line;
	size_t i;
	int ln = 0, rc = 0;

	c = xcalloc(1, sizeof(*c));
	while (*p != '\0' && rc == 0) {
		ln++;
		nl = strchr(p, '\n');
		if (nl == NULL) {
			rc = check_fail(c, ln, "last line without newline");
			break;
		}
		line = xstrndup(p, (size_t)(nl - p));
		if (line[0] == '\0')
			rc = check_fail(c, ln, "empty line");
		else if (line[0] == '#')
			rc = check_comment(c, ln, line);
		else
			rc = check_sample(c, ln, line);
		free(line);
		p = nl + 1;
	}
	if (rc == 0 && c->c_nseries > 1) {
		qsort(
		    c->c_series, c->c_nseries, sizeof(*c->c_series), strp_cmp);
		for (i = 1; i < c->c_nseries && rc == 0; i++) {
			if (strcmp(c->c_series[i - 1], c->c_series[i]) == 0)
				rc = check_fail(c, 0, "duplicate series");
		}
	}
	snprintf(err, errlen, "%s", c->c_err);
	for (i = 0; i < c->c_nseries; i++)
		free(c->c_series[i]);
	free(c->c_series);
	free(c);
	return (rc);
}

/* --- Helpers -------------------------------------------------------------- */

/* The rendering with the gauges g, checked; the caller frees it. */
static char *
render_gauges(const struct metrics_gauges *g)
{
	struct evbuffer *b = evbuffer_new();
	char err[256], *s;
	size_t len;

	assert_non_null(b);
	metrics_render(b, g);
	len = evbuffer_get_length(b);
	s = xmalloc(len + 1);
	assert_int_equal(evbuffer_remove(b, s, len), (int)len);
	s[len] = '\0';
	evbuffer_free(b);
	if (prom_check(s, err, sizeof(err)) != 0) {
		print_error("invalid exposition: %s\n", err);
		fail();
	}
	return (s);
}

/* The rendering with the gauges the admin API passes at each scrape. */
static char *
render(void)
{
	struct metrics_gauges g;

	admin_metrics_gauges(&g);
	/* The process's own figures move between two renders (CPU time). */
	memset(&g.mg_process, 0, sizeof(g.mg_process));
	return (render_gauges(&g));
}

/* The same with the fleet's figures fs. */
static char *
render_fleet_stats(const struct fleet_stats *fs)
{
	struct metrics_gauges g;

	admin_metrics_gauges(&g);
	g.mg_fleet = *fs;
	return (render_gauges(&g));
}

/* The value of the sample named exactly series, or NULL if none. */
static const char *
sample(const char *text, const char *series)
{
	static char value[64];
	const char *p = text, *e;
	size_t n = strlen(series);

	while (p != NULL && *p != '\0') {
		if (strncmp(p, series, n) == 0 && p[n] == ' ') {
			e = strchr(p + n + 1, '\n');
			snprintf(value, sizeof(value), "%.*s",
			    (int)(e - (p + n + 1)), p + n + 1);
			return (value);
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return (NULL);
}

static void
assert_sample(const char *text, const char *series, const char *want)
{
	const char *v = sample(text, series);

	if (v == NULL) {
		print_error("no sample %s\n", series);
		fail();
	}
	if (strcmp(v, want) != 0) {
		print_error("%s = %s, want %s\n", series, v, want);
		fail();
	}
}

static size_t
count_prefix(const char *text, const char *prefix)
{
	const char *p = text;
	size_t n = 0, len = strlen(prefix);

	while (p != NULL && *p != '\0') {
		if (strncmp(p, prefix, len) == 0)
			n++;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return (n);
}

static struct usage
mkusage(int64_t in, int64_t out, int64_t cached, int64_t cw, int64_t reas)
{
	struct usage u;

	memset(&u, 0, sizeof(u));
	u.u_input = in;
	u.u_output = out;
	u.u_cached = cached;
	u.u_cache_write = cw;
	u.u_reasoning = reas;
	u.u_source = USAGE_REPORTED;
	return (u);
}

static struct metrics_call
mkcall(enum call_status st, const struct usage *u, int64_t cost)
{
	struct metrics_call mc = {
	    .mc_provider = "openai",
	    .mc_model = "gpt-4o",
	    .mc_team = "search",
	    .mc_tenant = "acme",
	    .mc_agent_class = "researcher",
	    .mc_status = st,
	    .mc_usage = u,
	    .mc_cost_nusd = cost,
	    .mc_ttfb_us = -1,
	    .mc_duration_us = -1,
	};

	return (mc);
}

static int
teardown(void **state)
{
	(void)state;
	metrics_reset();
	return (0);
}

/* --- Cases ---------------------------------------------------------------- */

static void
test_empty(void **state)
{
	char *s, want[64];
	size_t i;

	(void)state;
	s = render();
	for (i = 0; i < nitems(families); i++) {
		snprintf(want, sizeof(want), "# HELP %s ", families[i]);
		assert_non_null(strstr(s, want));
		snprintf(want, sizeof(want), "# TYPE %s ", families[i]);
		assert_non_null(strstr(s, want));
	}
	assert_sample(
	    s, "tollgate_build_info{version=\"" TOLLGATE_VERSION "\"}", "1");
	assert_sample(s, "tollgate_calls_in_flight", "0");
	assert_sample(s, "tollgate_kills_live", "0");
	/* The ledger is closed: its counters are zero, not garbage. */
	assert_sample(s, "tollgate_ledger_queue_depth", "0");
	assert_sample(s, "tollgate_ledger_rows_written_total", "0");
	assert_sample(s, "tollgate_ledger_commit_seconds_sum", "0.000000");
	assert_sample(s, "tollgate_ledger_commit_seconds_count", "0");
	assert_sample(s, "tollgate_ledger_commit_seconds_max", "0.000000");
	assert_sample(s, "tollgate_metrics_series_dropped_total", "0");
	assert_int_equal(count_prefix(s, "tollgate_calls_total{"), 0);
	assert_null(strstr(s, "intent"));
	free(s);
}

static void
test_calls_counted(void **state)
{
	struct metrics_call mc;
	char *s;

	(void)state;
	mc = mkcall(CALL_OK, NULL, 0);
	metrics_call(&mc);
	metrics_call(&mc);
	mc = mkcall(CALL_UPSTREAM_ERROR, NULL, 0);
	metrics_call(&mc);
	mc = mkcall(CALL_REFUSED, NULL, 0);
	mc.mc_model = NULL;
	mc.mc_team = NULL;
	mc.mc_tenant = NULL;
	mc.mc_agent_class = NULL;
	metrics_call(&mc);

	s = render();
	assert_sample(s, "tollgate_calls_total{" CALL_LABELS("ok") "}", "2");
	assert_sample(
	    s, "tollgate_calls_total{" CALL_LABELS("upstream_error") "}", "1");
	assert_sample(s,
	    "tollgate_calls_total{provider=\"openai\",model=\"\",team=\"\","
	    "tenant=\"\",agent_class=\"\",status=\"refused\"}",
	    "1");
	assert_int_equal(count_prefix(s, "tollgate_calls_total{"), 3);
	/* No usage and no cost: no token or cost series. */
	assert_int_equal(count_prefix(s, "tollgate_tokens_total{"), 0);
	assert_int_equal(count_prefix(s, "tollgate_cost_nusd_total{"), 0);
	free(s);
}

static void
test_tokens_and_cost(void **state)
{
	struct usage u1 = mkusage(1000, 200, 300, 50, 40);
	struct usage u2 = mkusage(7, 3, 0, 0, 1);
	struct metrics_call mc;
	char *s;

	(void)state;
	mc = mkcall(CALL_OK, &u1, 1234567891);
	metrics_call(&mc);
	mc = mkcall(CALL_OK, &u2, 2000000000);
	metrics_call(&mc);
	/* A cost without usage (estimated elsewhere) still adds. */
	mc = mkcall(CALL_CLIENT_CLOSED, NULL, 9);
	metrics_call(&mc);
	/* Negative amounts never make a counter go down. */
	u2 = mkusage(-5, -5, -5, -5, -5);
	mc = mkcall(CALL_OK, &u2, -100);
	metrics_call(&mc);

	s = render();
	assert_sample(s,
	    "tollgate_tokens_total{" ATTR_LABELS ",class=\"input\"}", "1007");
	assert_sample(s,
	    "tollgate_tokens_total{" ATTR_LABELS ",class=\"output\"}", "203");
	assert_sample(s,
	    "tollgate_tokens_total{" ATTR_LABELS ",class=\"cached_input\"}",
	    "300");
	assert_sample(s,
	    "tollgate_tokens_total{" ATTR_LABELS ",class=\"cache_write\"}",
	    "50");
	assert_sample(s,
	    "tollgate_tokens_total{" ATTR_LABELS ",class=\"reasoning\"}", "41");
	assert_sample(
	    s, "tollgate_cost_nusd_total{" ATTR_LABELS "}", "3234567900");
	assert_sample(
	    s, "tollgate_cost_usd_total{" ATTR_LABELS "}", "3.234567900");
	assert_sample(s, "tollgate_calls_total{" CALL_LABELS("ok") "}", "3");
	assert_int_equal(count_prefix(s, "tollgate_tokens_total{"), 5);
	free(s);
}

static void
test_unpriced(void **state)
{
	struct usage u = mkusage(10, 10, 0, 0, 0);
	struct metrics_call mc;
	char *s;

	(void)state;
	mc = mkcall(CALL_OK, &u, 0);
	mc.mc_model = "mystery-1";
	mc.mc_unpriced = 1;
	metrics_call(&mc);
	metrics_call(&mc);
	mc.mc_team = "other-team";
	metrics_call(&mc);
	mc = mkcall(CALL_OK, &u, 5);
	metrics_call(&mc);

	s = render();
	assert_sample(s,
	    "tollgate_unpriced_calls_total{provider=\"openai\","
	    "model=\"mystery-1\"}",
	    "3");
	assert_int_equal(count_prefix(s, "tollgate_unpriced_calls_total{"), 1);
	free(s);
}

static void
test_histograms(void **state)
{
	/* ttfb in microseconds; -1 is "none" and is not observed. */
	static const int64_t ttfb[] = {
	    1, 5000, 5001, 999999, 1000000, 600000000, 600000001, -1};
	struct metrics_call mc;
	char *s;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(ttfb); i++) {
		mc = mkcall(CALL_OK, NULL, 0);
		mc.mc_ttfb_us = ttfb[i];
		mc.mc_duration_us = 2500000;
		metrics_call(&mc);
	}
	mc = mkcall(CALL_OK, NULL, 0);
	mc.mc_provider = "anthropic";
	mc.mc_ttfb_us = 20000;
	metrics_call(&mc);

	s = render();
#define TTFB(le)                                                               \
	"tollgate_upstream_ttfb_seconds_bucket{provider=\"openai\",le=\"" le   \
	"\"}"
	assert_sample(s, TTFB("0.005"), "2"); /* 1 us and exactly 5 ms */
	assert_sample(s, TTFB("0.01"), "3");
	assert_sample(s, TTFB("0.5"), "3");
	assert_sample(s, TTFB("1"), "5");
	assert_sample(s, TTFB("300"), "5");
	assert_sample(s, TTFB("600"), "6");
	assert_sample(s, TTFB("+Inf"), "7");
#undef TTFB
	assert_sample(s,
	    "tollgate_upstream_ttfb_seconds_count{provider=\"openai\"}", "7");
	/* 1 + 5000 + 5001 + 999999 + 1000000 + 600000000 + 600000001 us */
	assert_sample(s,
	    "tollgate_upstream_ttfb_seconds_sum{provider=\"openai\"}",
	    "1202.010002");
	assert_sample(s,
	    "tollgate_upstream_ttfb_seconds_bucket{provider=\"anthropic\","
	    "le=\"0.025\"}",
	    "1");
	assert_sample(s,
	    "tollgate_upstream_ttfb_seconds_bucket{provider=\"anthropic\","
	    "le=\"0.01\"}",
	    "0");
	/* Duration: 8 calls at 2.5 s exactly, none for anthropic (-1). */
	assert_sample(s,
	    "tollgate_call_duration_seconds_bucket{provider=\"openai\","
	    "le=\"1\"}",
	    "0");
	assert_sample(s,
	    "tollgate_call_duration_seconds_bucket{provider=\"openai\","
	    "le=\"2.5\"}",
	    "8");
	assert_sample(s,
	    "tollgate_call_duration_seconds_sum{provider=\"openai\"}",
	    "20.000000");
	assert_sample(s,
	    "tollgate_call_duration_seconds_count{provider=\"openai\"}", "8");
	assert_null(sample(
	    s, "tollgate_call_duration_seconds_count{provider=\"anthropic\"}"));
	/* 16 bounds plus +Inf per provider. */
	assert_int_equal(
	    count_prefix(s, "tollgate_upstream_ttfb_seconds_bucket{"), 34);
	free(s);
}

/* Buckets never decrease along le, and +Inf equals _count. */
static void
test_histogram_cumulative(void **state)
{
	const char *prefix = "tollgate_call_duration_seconds_bucket{";
	struct metrics_call mc;
	unsigned long long prev = 0, v;
	const char *p;
	char *s;
	size_t i;

	(void)state;
	for (i = 0; i < 1000; i++) {
		mc = mkcall(CALL_OK, NULL, 0);
		mc.mc_duration_us = (int64_t)(i * i * 701); /* 0 .. ~700 s */
		metrics_call(&mc);
	}
	s = render();
	for (p = strstr(s, prefix); p != NULL; p = strstr(p + 1, prefix)) {
		v = strtoull(strchr(p, ' ') + 1, NULL, 10);
		assert_true(v >= prev);
		prev = v;
	}
	assert_int_equal(prev, 1000);
	assert_sample(s,
	    "tollgate_call_duration_seconds_count{provider=\"openai\"}",
	    "1000");
	free(s);
}

static void
test_refusals(void **state)
{
	char *s;

	(void)state;
	metrics_refusal("missing_tag");
	metrics_refusal("missing_tag");
	metrics_refusal("unknown_model");
	metrics_refusal("ledger_unavailable");
	metrics_refusal("duplicate_request_id");
	metrics_refusal("payload_too_large");
	metrics_refusal(NULL);

	s = render();
	assert_sample(
	    s, "tollgate_refusals_total{reason=\"missing_tag\"}", "2");
	assert_sample(
	    s, "tollgate_refusals_total{reason=\"unknown_model\"}", "1");
	assert_sample(
	    s, "tollgate_refusals_total{reason=\"ledger_unavailable\"}", "1");
	assert_sample(
	    s, "tollgate_refusals_total{reason=\"duplicate_request_id\"}", "1");
	assert_sample(
	    s, "tollgate_refusals_total{reason=\"payload_too_large\"}", "1");
	assert_sample(s, "tollgate_refusals_total{reason=\"\"}", "1");
	free(s);
}

static void
test_escaping(void **state)
{
	struct metrics_call mc;
	char *s, longteam[METRICS_LABEL_MAX + 50], want[METRICS_LABEL_MAX + 64];

	(void)state;
	mc = mkcall(CALL_OK, NULL, 0);
	mc.mc_team = "a\"b\\c\nd";
	mc.mc_tenant = "caf\xc3\xa9";
	mc.mc_agent_class = "bad\xff\xc3";
	metrics_call(&mc);
	metrics_refusal("x\"y");

	s = render();
	assert_sample(s,
	    "tollgate_calls_total{provider=\"openai\",model=\"gpt-4o\","
	    "team=\"a\\\"b\\\\c\\nd\",tenant=\"caf\xc3\xa9\","
	    "agent_class=\"bad\xef\xbf\xbd\xef\xbf\xbd\",status=\"ok\"}",
	    "1");
	assert_sample(s, "tollgate_refusals_total{reason=\"x\\\"y\"}", "1");
	free(s);
	metrics_reset();

	/* Values are kept to METRICS_LABEL_MAX bytes. */
	memset(longteam, 'x', sizeof(longteam) - 1);
	longteam[sizeof(longteam) - 1] = '\0';
	mc.mc_team = longteam;
	mc.mc_tenant = "acme";
	mc.mc_agent_class = "researcher";
	metrics_call(&mc);
	longteam[METRICS_LABEL_MAX + 10] = 'y'; /* past the kept bytes */
	metrics_call(&mc);
	s = render();
	snprintf(want, sizeof(want), "%.*s", METRICS_LABEL_MAX, longteam);
	assert_int_equal(count_prefix(s, "tollgate_calls_total{"), 1);
	assert_non_null(strstr(s, want));
	assert_null(strstr(s, "xy"));
	free(s);
}

static void
test_folding_cap(void **state)
{
	struct usage u = mkusage(1, 1, 0, 0, 0);
	struct metrics_call mc;
	char team[32], *s;
	size_t i;

	(void)state;
	mc = mkcall(CALL_OK, &u, 10);
	mc.mc_team = team;
	for (i = 0; i < METRICS_SERIES_MAX; i++) {
		snprintf(team, sizeof(team), "team-%05zu", i);
		metrics_call(&mc);
	}
	s = render();
	assert_int_equal(
	    count_prefix(s, "tollgate_calls_total{"), METRICS_SERIES_MAX);
	assert_sample(s, "tollgate_metrics_series_dropped_total", "0");
	assert_null(strstr(s, "=\"" METRICS_OTHER "\""));
	free(s);

	/* Three new label sets fold; a known one keeps counting. */
	for (i = 0; i < 3; i++) {
		snprintf(team, sizeof(team), "late-%zu", i);
		metrics_call(&mc);
	}
	snprintf(team, sizeof(team), "team-00042");
	metrics_call(&mc);
	metrics_call(&mc);

	s = render();
	assert_int_equal(
	    count_prefix(s, "tollgate_calls_total{"), METRICS_SERIES_MAX + 1);
	assert_sample(s,
	    "tollgate_calls_total{provider=\"_other\",model=\"_other\","
	    "team=\"_other\",tenant=\"_other\",agent_class=\"_other\","
	    "status=\"_other\"}",
	    "3");
	assert_sample(s,
	    "tollgate_tokens_total{provider=\"_other\",model=\"_other\","
	    "team=\"_other\",tenant=\"_other\",agent_class=\"_other\","
	    "class=\"input\"}",
	    "3");
	assert_sample(s,
	    "tollgate_cost_nusd_total{provider=\"_other\",model=\"_other\","
	    "team=\"_other\",tenant=\"_other\",agent_class=\"_other\"}",
	    "30");
	assert_sample(s,
	    "tollgate_calls_total{provider=\"openai\",model=\"gpt-4o\","
	    "team=\"team-00042\",tenant=\"acme\",agent_class=\"researcher\","
	    "status=\"ok\"}",
	    "3");
	/* Each fold counts: calls and tokens/cost, three calls each. */
	assert_sample(s, "tollgate_metrics_series_dropped_total", "6");
	free(s);
}

static void
test_sorted_and_stable(void **state)
{
	struct metrics_call mc;
	char *s1, *s2, *a, *b;

	(void)state;
	mc = mkcall(CALL_OK, NULL, 0);
	mc.mc_team = "zeta";
	metrics_call(&mc);
	mc.mc_team = "alpha";
	metrics_call(&mc);
	mc.mc_team = "alph";
	metrics_call(&mc);
	metrics_refusal("b");
	metrics_refusal("a");

	s1 = render();
	s2 = render();
	assert_string_equal(s1, s2);
	a = strstr(s1, "team=\"alph\"");
	b = strstr(s1, "team=\"alpha\"");
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a < b);
	assert_true(b < strstr(s1, "team=\"zeta\""));
	assert_true(strstr(s1, "reason=\"a\"") < strstr(s1, "reason=\"b\""));
	free(s1);
	free(s2);
}

static void
test_reset(void **state)
{
	struct metrics_call mc;
	char *s;

	(void)state;
	mc = mkcall(CALL_OK, NULL, 0);
	metrics_call(&mc);
	metrics_refusal("missing_tag");
	metrics_reset();
	metrics_reset(); /* twice is harmless */
	s = render();
	assert_int_equal(count_prefix(s, "tollgate_calls_total{"), 0);
	assert_int_equal(count_prefix(s, "tollgate_refusals_total{"), 0);
	free(s);
	metrics_call(&mc);
	s = render();
	assert_sample(s, "tollgate_calls_total{" CALL_LABELS("ok") "}", "1");
	free(s);
}

/* The checker itself: each of these must be rejected. */
static const struct {
	const char *name;
	const char *text;
} bad_texts[] = {
    {"no HELP", "# TYPE a counter\na 1\n"},
    {"no TYPE", "# HELP a x\na 1\n"},
    {"sample first", "a 1\n# HELP a x\n# TYPE a counter\n"},
    {"undeclared", "# HELP a x\n# TYPE a counter\nb 1\n"},
    {"duplicate series",
	"# HELP a x\n# TYPE a counter\na{x=\"1\"} 1\n"
	"a{x=\"1\"} 2\n"},
    {"split family",
	"# HELP a x\n# TYPE a counter\na 1\n# HELP b x\n"
	"# TYPE b counter\nb 1\na{x=\"2\"} 1\n"},
    {"bad escape", "# HELP a x\n# TYPE a counter\na{x=\"\\t\"} 1\n"},
    {"unterminated", "# HELP a x\n# TYPE a counter\na{x=\"1} 1\n"},
    {"bad value", "# HELP a x\n# TYPE a counter\na 1x\n"},
    {"no value", "# HELP a x\n# TYPE a counter\na\n"},
    {"label twice", "# HELP a x\n# TYPE a counter\na{x=\"1\",x=\"2\"} 1\n"},
    {"bucket without le", "# HELP h x\n# TYPE h histogram\nh_bucket 1\n"},
    {"_sum of a counter", "# HELP a x\n# TYPE a counter\na_sum 1\n"},
    {"unknown type", "# HELP a x\n# TYPE a meter\na 1\n"},
    {"no final newline", "# HELP a x\n# TYPE a counter\na 1"},
    {"TYPE twice", "# HELP a x\n# TYPE a counter\n# TYPE a counter\na 1\n"},
};

static void
test_checker_rejects(void **state)
{
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < nitems(bad_texts); i++) {
		if (prom_check(bad_texts[i].text, err, sizeof(err)) == 0) {
			print_error(
			    "checker accepted: %s\n", bad_texts[i].name);
			fail();
		}
	}
	assert_int_equal(prom_check("# HELP a x\n# TYPE a counter\na 1\n"
				    "a{x=\"\\\\\\\"\\n\"} 2.5\n# HELP h x\n"
				    "# TYPE h histogram\nh_bucket{le=\"+Inf\"}"
				    " 1\nh_sum 0.5\nh_count 1\n",
			     err, sizeof(err)),
	    0);
}

/* The fleet's families: told by the admin API, shown only in a fleet. */
static void
test_fleet(void **state)
{
	struct fleet_stats fs;
	char *s;

	(void)state;
	/* No fleet (what the admin passes on a single instance): none. */
	s = render();
	assert_null(strstr(s, "tollgate_fleet_"));
	free(s);
	memset(&fs, 0, sizeof(fs));
	fs.fs_state = FLEET_OFF;
	fs.fs_commands = 9;
	s = render_fleet_stats(&fs);
	assert_null(strstr(s, "tollgate_fleet_"));
	free(s);

	fs.fs_state = FLEET_UP;
	fs.fs_commands = 1234;
	fs.fs_errors = 3;
	fs.fs_timeouts = 2;
	fs.fs_syncs = 77;
	fs.fs_topups = 12;
	fs.fs_short = 4;
	fs.fs_waits = 6;
	fs.fs_wait_timeouts = 1;
	fs.fs_degraded_ms = 61005;
	fs.fs_kills_in = 5;
	fs.fs_extensions_in = 2;
	fs.fs_alerts_won = 8;
	fs.fs_alerts_lost = 13;
	fs.fs_leased_nusd = 1500000000;
	fs.fs_unreported_nusd = 250000001;
	s = render_fleet_stats(&fs);
	assert_sample(s, "tollgate_fleet_up", "1");
	assert_sample(s, "tollgate_fleet_redis_commands_total", "1234");
	assert_sample(s, "tollgate_fleet_redis_errors_total", "3");
	assert_sample(s, "tollgate_fleet_redis_timeouts_total", "2");
	assert_sample(s, "tollgate_fleet_lease_syncs_total", "77");
	assert_sample(s, "tollgate_fleet_lease_topups_total", "12");
	assert_sample(s, "tollgate_fleet_lease_short_grants_total", "4");
	assert_sample(s, "tollgate_fleet_lease_waits_total", "6");
	assert_sample(s, "tollgate_fleet_lease_wait_timeouts_total", "1");
	assert_sample(s, "tollgate_fleet_degraded_seconds_total", "61.005");
	assert_sample(s, "tollgate_fleet_leased_nusd", "1500000000");
	assert_sample(s, "tollgate_fleet_unreported_nusd", "250000001");
	assert_sample(s, "tollgate_fleet_kills_received_total", "5");
	assert_sample(s, "tollgate_fleet_extensions_received_total", "2");
	assert_sample(
	    s, "tollgate_fleet_alert_claims_total{result=\"won\"}", "8");
	assert_sample(
	    s, "tollgate_fleet_alert_claims_total{result=\"lost\"}", "13");
	assert_non_null(strstr(s, "# TYPE tollgate_fleet_up gauge\n"));
	assert_non_null(
	    strstr(s, "# TYPE tollgate_fleet_redis_commands_total counter\n"));
	free(s);

	/* Degraded: up is 0; a negative gauge (never) is not printed so.
	 * The fleet's alert (Redis does not answer) is a kind of its own. */
	fs.fs_state = FLEET_DOWN;
	fs.fs_unreported_nusd = -5;
	metrics_alert_fired("fleet");
	s = render_fleet_stats(&fs);
	assert_sample(s, "tollgate_fleet_up", "0");
	assert_sample(s, "tollgate_fleet_unreported_nusd", "0");
	assert_sample(s, "tollgate_alerts_fired_total{kind=\"fleet\"}", "1");
	assert_sample(s, "tollgate_alerts_fired_total{kind=\"other\"}", "0");
	free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_empty, teardown),
	    cmocka_unit_test_teardown(test_calls_counted, teardown),
	    cmocka_unit_test_teardown(test_tokens_and_cost, teardown),
	    cmocka_unit_test_teardown(test_unpriced, teardown),
	    cmocka_unit_test_teardown(test_histograms, teardown),
	    cmocka_unit_test_teardown(test_histogram_cumulative, teardown),
	    cmocka_unit_test_teardown(test_refusals, teardown),
	    cmocka_unit_test_teardown(test_escaping, teardown),
	    cmocka_unit_test_teardown(test_folding_cap, teardown),
	    cmocka_unit_test_teardown(test_sorted_and_stable, teardown),
	    cmocka_unit_test_teardown(test_reset, teardown),
	    cmocka_unit_test_teardown(test_fleet, teardown),
	    cmocka_unit_test(test_checker_rejects),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
