/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policies: list of the config, parsed with the YAML walker's key
 * tables (include/tollgate/yaml.h) so every mistake is reported as file:line:col
 * and none stops the walk. Each item is applied to a raw struct first,
 * then checked as a whole (alert thresholds against the cap, the default
 * output bound against the ceiling) and copied into its struct policy.
 * Money is parsed as exact decimals into nano-USD; no float touches it.
 * The breakers: section of a policy is parsed here too, one sub-table per
 * breaker (loop, velocity, error_spike).
 * config.c calls policy_parse for the policies: key of tollgate.yaml.
 */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/breaker.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"
#include "tollgate/yaml.h"

#include "policy_int.h"

#define NUSD_PER_USD 1000000000LL
#define USD_MAX 1000000000LL /* a cap above $1e9 is a typo */

/* A list of globs as p_globs fills it. */
struct globs {
	char **g_list;
	size_t g_n;
};

/* breakers: as its key tables fill it; have is set when present. */
struct rbrk {
	struct {
		int have;
		int count;
		int64_t within, kill_for;
	} loop;
	struct {
		int have;
		int64_t usd, kill_for;
	} vel;
	struct {
		int have;
		int min_calls;
		int64_t ppm, min_usd, window, kill_for;
	} err;
};

/* One item of the list as the key table fills it. */
struct praw {
	char *r_name;
	char *r_match[POLICY_ATTR_MAX];
	int r_per[TAG_MAX];
	struct policy_window r_window;
	int r_have_window;
	int64_t r_cap;
	int64_t r_usd[POLICY_THRESHOLDS_MAX];
	size_t r_nusd;
	int64_t r_ppm[POLICY_THRESHOLDS_MAX]; /* percent, in millionths */
	size_t r_nppm;
	struct {
		int rpm, tpm, concurrent;
	} r_rate;
	struct {
		struct globs allow, deny;
	} r_models;
	int r_max_output;
	int r_default_output;
	struct {
		int min;
	} r_clamp;
	int r_shadow;
	int r_killed;
	char *r_kill_reason;
	struct rbrk r_brk;
};

static void p_name(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_match(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_window(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_usd(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_alert_usd(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_alert_pct(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_globs(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_bool(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_duration(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_ratio(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void p_breaker(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);

#define OFF(f) offsetof(struct praw, f)

static const struct cfgkey rate_keys[] = {
    KEY_INT("requests_per_minute", 0, 1, INT_MAX),
    KEY_INT("tokens_per_minute", sizeof(int), 1, INT_MAX),
    KEY_INT("concurrent", 2 * sizeof(int), 1, 1000000),
    KEY_END,
};

static const struct cfgkey model_keys[] = {
    KEY_CALL("allow", p_globs, 0, 0),
    KEY_CALL("deny", p_globs, sizeof(struct globs), 0),
    KEY_END,
};

static const struct cfgkey clamp_keys[] = {
    {.k_name = "min_output_tokens",
	.k_parse = cfgp_int,
	.k_off = 0,
	.k_min = 1,
	.k_max = INT_MAX,
	.k_flags = CFGKEY_REQUIRED},
    KEY_END,
};

#define BOFF(f) offsetof(struct rbrk, f)
#define REQ(n, fn, off)                                                        \
	{                                                                      \
		.k_name = (n), .k_parse = (fn), .k_off = (off),                \
		.k_flags = CFGKEY_REQUIRED                                     \
	}

static const struct cfgkey loop_keys[] = {
    {.k_name = "count",
	.k_parse = cfgp_int,
	.k_off = BOFF(loop.count) - BOFF(loop),
	.k_min = 2,
	.k_max = BREAKER_LOOP_COUNT_MAX,
	.k_flags = CFGKEY_REQUIRED},
    REQ("within", p_duration, BOFF(loop.within) - BOFF(loop)),
    REQ("kill_for", p_duration, BOFF(loop.kill_for) - BOFF(loop)),
    KEY_END,
};

static const struct cfgkey velocity_keys[] = {
    REQ("usd_per_minute", p_usd, BOFF(vel.usd) - BOFF(vel)),
    REQ("kill_for", p_duration, BOFF(vel.kill_for) - BOFF(vel)),
    KEY_END,
};

static const struct cfgkey error_keys[] = {
    REQ("ratio", p_ratio, BOFF(err.ppm) - BOFF(err)),
    KEY_CALL("min_spend_usd", p_usd, BOFF(err.min_usd) - BOFF(err), 0),
    REQ("window", p_duration, BOFF(err.window) - BOFF(err)),
    KEY_INT("min_calls", BOFF(err.min_calls) - BOFF(err), 1, 1000000),
    REQ("kill_for", p_duration, BOFF(err.kill_for) - BOFF(err)),
    KEY_END,
};

static const struct cfgkey breaker_keys[] = {
    {.k_name = "loop",
	.k_parse = p_breaker,
	.k_off = BOFF(loop),
	.k_sub = loop_keys},
    {.k_name = "velocity",
	.k_parse = p_breaker,
	.k_off = BOFF(vel),
	.k_sub = velocity_keys},
    {.k_name = "error_spike",
	.k_parse = p_breaker,
	.k_off = BOFF(err),
	.k_sub = error_keys},
    KEY_END,
};

static const struct cfgkey policy_keys[] = {
    KEY_CALL("name", p_name, OFF(r_name), CFGKEY_REQUIRED),
    KEY_CALL("match", p_match, OFF(r_match), 0),
    KEY_CALL("per", cfgp_tag_list, OFF(r_per), 0),
    KEY_CALL("window", p_window, OFF(r_window), 0),
    KEY_CALL("hard_cap_usd", p_usd, OFF(r_cap), 0),
    KEY_CALL("alert_at_usd", p_alert_usd, OFF(r_usd), 0),
    KEY_CALL("alert_at_percent", p_alert_pct, OFF(r_ppm), 0),
    {.k_name = "rate_limit",
	.k_parse = cfgp_section,
	.k_off = OFF(r_rate),
	.k_sub = rate_keys},
    {.k_name = "models",
	.k_parse = cfgp_section,
	.k_off = OFF(r_models),
	.k_sub = model_keys},
    KEY_INT("max_output_tokens", OFF(r_max_output), 1, INT_MAX),
    KEY_INT("default_output_tokens", OFF(r_default_output), 1, INT_MAX),
    {.k_name = "clamp",
	.k_parse = cfgp_section,
	.k_off = OFF(r_clamp),
	.k_sub = clamp_keys},
    KEY_CALL("shadow", p_bool, OFF(r_shadow), 0),
    KEY_CALL("killed", p_bool, OFF(r_killed), 0),
    KEY_CALL("kill_reason", cfgp_strdup, OFF(r_kill_reason), 0),
    {.k_name = "breakers",
	.k_parse = cfgp_section,
	.k_off = OFF(r_brk),
	.k_sub = breaker_keys},
    KEY_END,
};

/*
 * An exact decimal amount of USD ("50", "0.30", "1.000000001") into
 * nano-USD: at most nine decimals, at most $1e9. 0 or -1.
 */
int
policy_parse_usd(const char *s, int64_t *out)
{
	int64_t whole = 0, frac = 0, scale = NUSD_PER_USD;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return (-1);
	for (; *p >= '0' && *p <= '9'; p++) {
		whole = whole * 10 + (*p - '0');
		if (whole > USD_MAX)
			return (-1);
	}
	if (*p == '.') {
		if (p[1] < '0' || p[1] > '9')
			return (-1);
		for (p++; *p >= '0' && *p <= '9'; p++) {
			scale /= 10;
			if (scale == 0) {
				if (*p != '0') /* below a nano-dollar */
					return (-1);
				scale = 0;
				continue;
			}
			frac += (*p - '0') * scale;
		}
	}
	if (*p != '\0')
		return (-1);
	*out = whole * NUSD_PER_USD + frac;
	return (*out > USD_MAX * NUSD_PER_USD ? -1 : 0);
}

/*
 * A window: day, week, month, total, or a rolling length of whole minutes
 * ("90m", "1h", "24h", "7d"), at most 366 days. 0 or -1.
 */
int
policy_parse_window(const char *s, struct policy_window *w)
{
	static const struct {
		const char *name;
		enum policy_window_kind kind;
	} names[] = {{"day", POLICY_WIN_DAY}, {"week", POLICY_WIN_WEEK},
	    {"month", POLICY_WIN_MONTH}, {"total", POLICY_WIN_TOTAL}};
	int64_t v = 0, unit;
	const char *p;
	size_t i;

	for (i = 0; i < nitems(names); i++) {
		if (strcmp(s, names[i].name) == 0) {
			w->pw_kind = names[i].kind;
			w->pw_len_ms = 0;
			return (0);
		}
	}
	for (p = s; *p >= '0' && *p <= '9' && v <= 1000000; p++)
		v = v * 10 + (*p - '0');
	if (p == s || p[0] == '\0' || p[1] != '\0')
		return (-1);
	if (*p == 'm')
		unit = MIN_MS;
	else if (*p == 'h')
		unit = 60 * MIN_MS;
	else if (*p == 'd')
		unit = DAY_MS;
	else
		return (-1);
	if (v < 1 || v * unit > 366 * DAY_MS)
		return (-1);
	w->pw_kind = POLICY_WIN_ROLLING;
	w->pw_len_ms = v * unit;
	return (0);
}

/*
 * A duration of whole seconds, minutes, hours or days: "90s", "10m",
 * "2h", "7d"; from 1s to 366d, into ms. 0 or -1.
 */
int
policy_parse_duration(const char *s, int64_t *ms)
{
	int64_t v = 0, unit;
	const char *p;

	for (p = s; *p >= '0' && *p <= '9' && v <= 100000000; p++)
		v = v * 10 + (*p - '0');
	if (p == s || p[0] == '\0' || p[1] != '\0')
		return (-1);
	if (*p == 's')
		unit = 1000;
	else if (*p == 'm')
		unit = MIN_MS;
	else if (*p == 'h')
		unit = 60 * MIN_MS;
	else if (*p == 'd')
		unit = DAY_MS;
	else
		return (-1);
	if (v < 1 || v > 366 * DAY_MS / unit)
		return (-1);
	*ms = v * unit;
	return (0);
}

/* Does the policy have any breaker? */
int
policy_has_breakers(const struct policy *po)
{
	const struct policy_breakers *b = &po->po_breakers;

	return (
	    b->pb_loop_count > 0 || b->pb_vel_nusd >= 0 || b->pb_err_ppm >= 0);
}

static void
p_duration(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	(void)k;
	if (n->yn_type != YN_SCALAR ||
	    policy_parse_duration(n->yn_str, dst) == -1)
		cfg_error(cx, n,
		    "%s: expected a duration such as 90s, 10m, 2h or 7d "
		    "(whole units, at most 366d)",
		    path);
}

/* A ratio above 0 and at most 1, up to six decimals, in millionths. */
static void
p_ratio(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	int64_t v;

	(void)k;
	if (n->yn_type != YN_SCALAR || !n->yn_plain ||
	    policy_parse_usd(n->yn_str, &v) == -1 || v % 1000 != 0 || v == 0 ||
	    v > NUSD_PER_USD) {
		cfg_error(cx, n,
		    "%s: expected a ratio above 0 and at most 1, such as 0.5 "
		    "(at most 6 decimals)",
		    path);
		return;
	}
	*(int64_t *)dst = v / 1000;
}

/* One breaker's mapping; marks it present, then its sub-table. */
static void
p_breaker(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	*(int *)dst = 1;
	cfg_apply(cx, k->k_sub, path, n, n, dst);
}

static void
p_name(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s, *p;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a policy name")) == NULL)
		return;
	for (p = s; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || strchr("._-", *p)))
			break;
	}
	if (*p != '\0' || p == s || (size_t)(p - s) > POLICY_NAME_MAX) {
		cfg_error(cx, n,
		    "%s: expected 1 to %d letters, digits, '.', '_' or '-'",
		    path, POLICY_NAME_MAX);
		return;
	}
	*(char **)dst = xstrdup(s);
}

/* A glob: 1 to POLICY_GLOB_MAX printable bytes, into *dst or NULL. */
static char *
glob_of(struct cfgctx *cx, const char *path, const struct ynode *n)
{
	const char *s;

	if ((s = cfg_string(cx, path, n, "a glob pattern")) == NULL)
		return (NULL);
	if (n->yn_len == 0 || n->yn_len > POLICY_GLOB_MAX ||
	    strlen(s) != n->yn_len) {
		cfg_error(cx, n, "%s: expected a pattern of 1 to %d bytes",
		    path, POLICY_GLOB_MAX);
		return (NULL);
	}
	return (xstrdup(s));
}

static void
match_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	static const char *names[POLICY_ATTR_MAX] = {"intent", "team", "tenant",
	    "agent_class", "environment", "model", "provider"};
	char **match = arg, *g;
	int a;

	for (a = 0; a < POLICY_ATTR_MAX; a++)
		if (strcmp(en->en_key->yn_str, names[a]) == 0)
			break;
	if (a == POLICY_ATTR_MAX) {
		cfg_error(cx, en->en_key,
		    "%s: unknown attribute '%s' (expected intent, team, "
		    "tenant, agent_class, environment, model or provider)",
		    en->en_path, en->en_name);
		return;
	}
	if ((g = glob_of(cx, en->en_where, en->en_val)) == NULL)
		return;
	if (strcmp(g, "*") == 0) { /* matches anything: the same scope */
		free(g);
		return;
	}
	match[a] = g;
}

static void
p_match(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	(void)k;
	cfg_map_each(cx, path, n, "attribute: pattern", match_cb, dst);
}

static void
p_window(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct praw *r = (struct praw *)((char *)dst - OFF(r_window));
	const char *s;

	(void)k;
	s = n->yn_type == YN_SCALAR ? n->yn_str : "";
	if (policy_parse_window(s, dst) == -1) {
		cfg_error(cx, n,
		    "%s: expected day, week, month, total or a rolling "
		    "length such as 1h, 24h or 7d (whole minutes, at most "
		    "366d)",
		    path);
		return;
	}
	r->r_have_window = 1;
}

static int
usd_of(struct cfgctx *cx, const char *path, const struct ynode *n, int64_t *out)
{
	if (n->yn_type != YN_SCALAR || !n->yn_plain ||
	    policy_parse_usd(n->yn_str, out) == -1) {
		cfg_error(cx, n,
		    "%s: expected an amount in USD such as 50 or 0.25 (at "
		    "most 9 decimals, at most 1000000000)",
		    path);
		return (-1);
	}
	return (0);
}

static void
p_usd(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	(void)k;
	usd_of(cx, path, n, dst);
}

/* A percentage in (0, 100], up to four decimals, in millionths. */
static int
pct_of(struct cfgctx *cx, const char *path, const struct ynode *n, int64_t *out)
{
	int64_t v;

	/* Read as USD: the same exact decimal, in units of 1e-9. */
	if (n->yn_type != YN_SCALAR || !n->yn_plain ||
	    policy_parse_usd(n->yn_str, &v) == -1 || v % 100000 != 0 ||
	    v == 0 || v > 100 * NUSD_PER_USD) {
		cfg_error(cx, n,
		    "%s: expected a percentage above 0 and at most 100, "
		    "with at most 4 decimals",
		    path);
		return (-1);
	}
	*out = v / 100000; /* 1e-9 of a percent -> 1e-6 of the whole */
	return (0);
}

/* One threshold or a list of them, strictly ascending once sorted. */
static size_t
thresholds(struct cfgctx *cx, const char *path, const struct ynode *n,
    int (*one)(struct cfgctx *, const char *, const struct ynode *, int64_t *),
    int64_t *out)
{
	char where[CFG_PATH_MAX];
	size_t i, j, cnt = 0;
	int64_t v;

	if (n->yn_type != YN_SEQ) {
		if (one(cx, path, n, &out[0]) == -1)
			return (0);
		return (1);
	}
	if (n->yn_nkids == 0 || n->yn_nkids > POLICY_THRESHOLDS_MAX) {
		cfg_error(cx, n, "%s: expected 1 to %d thresholds", path,
		    POLICY_THRESHOLDS_MAX);
		return (0);
	}
	for (i = 0; i < n->yn_nkids; i++) {
		snprintf(where, sizeof(where), "%s[%zu]", path, i);
		if (one(cx, where, n->yn_kids[i], &v) == -1)
			continue;
		for (j = cnt; j > 0 && out[j - 1] > v; j--)
			out[j] = out[j - 1];
		if (j > 0 && out[j - 1] == v) {
			cfg_error(
			    cx, n->yn_kids[i], "%s: repeated threshold", where);
			for (; j < cnt; j++)
				out[j] = out[j + 1];
			continue;
		}
		out[j] = v;
		cnt++;
	}
	return (cnt);
}

static void
p_alert_usd(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct praw *r = (struct praw *)((char *)dst - OFF(r_usd));

	(void)k;
	r->r_nusd = thresholds(cx, path, n, usd_of, r->r_usd);
}

static void
p_alert_pct(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct praw *r = (struct praw *)((char *)dst - OFF(r_ppm));

	(void)k;
	r->r_nppm = thresholds(cx, path, n, pct_of, r->r_ppm);
}

/* models.allow / models.deny: a list of globs; the count follows it. */
static void
p_globs(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct globs *gl = dst;
	char where[CFG_PATH_MAX], *g;
	size_t i;

	(void)k;
	if (n->yn_type != YN_SEQ) {
		cfg_error(cx, n, "%s: expected a list of model patterns", path);
		return;
	}
	for (i = 0; i < n->yn_nkids; i++) {
		snprintf(where, sizeof(where), "%s[%zu]", path, i);
		if ((g = glob_of(cx, where, n->yn_kids[i])) == NULL)
			continue;
		gl->g_list =
		    xreallocarray(gl->g_list, gl->g_n + 1, sizeof(*gl->g_list));
		gl->g_list[gl->g_n++] = g;
	}
}

static void
p_bool(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	(void)k;
	if (n->yn_type == YN_SCALAR && n->yn_plain &&
	    strcmp(n->yn_str, "true") == 0)
		*(int *)dst = 1;
	else if (n->yn_type == YN_SCALAR && n->yn_plain &&
	    strcmp(n->yn_str, "false") == 0)
		*(int *)dst = 0;
	else
		cfg_error(cx, n, "%s: expected true or false", path);
}

/* Checks across keys of one policy, reported at the policy's mapping. */
static void
check_raw(
    struct cfgctx *cx, const char *where, const struct ynode *n, struct praw *r)
{
	size_t i;

	if (r->r_nusd > 0 && r->r_nppm > 0)
		cfg_error(cx, n,
		    "%s: alert_at_usd and alert_at_percent are exclusive",
		    where);
	if (r->r_nppm > 0 && r->r_cap == -1)
		cfg_error(
		    cx, n, "%s: alert_at_percent needs hard_cap_usd", where);
	for (i = 0; i < r->r_nusd && r->r_cap != -1; i++) {
		if (r->r_usd[i] > r->r_cap) {
			cfg_error(cx, n,
			    "%s: alert_at_usd above hard_cap_usd would "
			    "never fire",
			    where);
			break;
		}
	}
	if (r->r_clamp.min != 0 && r->r_cap == -1)
		cfg_error(cx, n, "%s: clamp needs hard_cap_usd", where);
	if (r->r_max_output != 0 && r->r_default_output > r->r_max_output)
		cfg_error(cx, n,
		    "%s: default_output_tokens is above max_output_tokens",
		    where);
	if (r->r_kill_reason != NULL && !r->r_killed)
		cfg_error(cx, n, "%s: kill_reason without killed: true", where);
	if (r->r_brk.err.have && r->r_brk.err.window != 0 &&
	    r->r_brk.err.window < MIN_MS)
		cfg_error(cx, n,
		    "%s: breakers.error_spike.window must be at least 1m",
		    where);
}

/* Move a checked raw item into po; r keeps nothing. */
static void
adopt(struct policy *po, struct praw *r, const struct ynode *n)
{
	int64_t c;
	size_t i;
	int a;

	memset(po, 0, sizeof(*po));
	po->po_name = r->r_name;
	po->po_line = n->yn_line;
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		po->po_match[a] = r->r_match[a];
	memcpy(po->po_per, r->r_per, sizeof(po->po_per));
	po->po_window = r->r_window;
	po->po_cap_nusd = r->r_cap;
	if (r->r_nusd > 0) {
		memcpy(po->po_alerts, r->r_usd, sizeof(po->po_alerts));
		po->po_nalerts = r->r_nusd;
	}
	for (i = 0; i < r->r_nppm; i++) {
		/* cap * ppm / 1e6, rounded down, without overflow. */
		c = r->r_cap;
		po->po_alerts[i] = (c / 1000000) * r->r_ppm[i] +
		    (c % 1000000) * r->r_ppm[i] / 1000000;
		po->po_nalerts = r->r_nppm;
	}
	po->po_rpm = r->r_rate.rpm;
	po->po_tpm = r->r_rate.tpm;
	po->po_concurrent = r->r_rate.concurrent;
	po->po_allow = r->r_models.allow.g_list;
	po->po_nallow = r->r_models.allow.g_n;
	po->po_deny = r->r_models.deny.g_list;
	po->po_ndeny = r->r_models.deny.g_n;
	po->po_max_output = r->r_max_output != 0 ? r->r_max_output : -1;
	po->po_default_output =
	    r->r_default_output != 0 ? r->r_default_output : -1;
	po->po_clamp_min = r->r_clamp.min != 0 ? r->r_clamp.min : -1;
	po->po_shadow = r->r_shadow;
	po->po_killed = r->r_killed;
	po->po_kill_reason = r->r_kill_reason;
	po->po_breakers.pb_vel_nusd = -1;
	po->po_breakers.pb_err_ppm = -1;
	if (r->r_brk.loop.have) {
		po->po_breakers.pb_loop_count = r->r_brk.loop.count;
		po->po_breakers.pb_loop_within_ms = r->r_brk.loop.within;
		po->po_breakers.pb_loop_kill_ms = r->r_brk.loop.kill_for;
	}
	if (r->r_brk.vel.have) {
		po->po_breakers.pb_vel_nusd = r->r_brk.vel.usd;
		po->po_breakers.pb_vel_kill_ms = r->r_brk.vel.kill_for;
	}
	if (r->r_brk.err.have) {
		po->po_breakers.pb_err_ppm = r->r_brk.err.ppm;
		po->po_breakers.pb_err_min_nusd = r->r_brk.err.min_usd;
		po->po_breakers.pb_err_window_ms = r->r_brk.err.window;
		po->po_breakers.pb_err_min_calls =
		    r->r_brk.err.min_calls != 0 ? r->r_brk.err.min_calls : 10;
		po->po_breakers.pb_err_kill_ms = r->r_brk.err.kill_for;
	}
}

static void
policy_clear(struct policy *po)
{
	size_t i;
	int a;

	free(po->po_name);
	for (a = 0; a < POLICY_ATTR_MAX; a++)
		free(po->po_match[a]);
	for (i = 0; i < po->po_nallow; i++)
		free(po->po_allow[i]);
	free(po->po_allow);
	for (i = 0; i < po->po_ndeny; i++)
		free(po->po_deny[i]);
	free(po->po_deny);
	free(po->po_kill_reason);
}

/*
 * Parse the list n (the value of the policies: key at path) into *out.
 * Every error goes to cx as file:line:col. Returns 0 with a set (empty for
 * a null or absent node), or -1 with *out NULL when anything was wrong.
 */
int
policy_parse(struct cfgctx *cx, const char *path, const struct ynode *n,
    struct policyset **out)
{
	struct policyset *ps;
	struct policy *po;
	struct praw r;
	const struct ynode *item;
	char where[CFG_PATH_MAX];
	size_t i, j, nerr = cx->cx_nerr;

	*out = NULL;
	ps = xcalloc(1, sizeof(*ps));
	if (n != NULL && ynode_is_null(n))
		n = NULL; /* "policies:" with nothing under it */
	if (n != NULL && n->yn_type != YN_SEQ) {
		cfg_error(cx, n, "%s: expected a list of policies", path);
		goto fail;
	}
	if (n != NULL && n->yn_nkids > 0)
		ps->ps_pol = xcalloc(n->yn_nkids, sizeof(*ps->ps_pol));
	for (i = 0; n != NULL && i < n->yn_nkids; i++) {
		item = n->yn_kids[i];
		snprintf(where, sizeof(where), "%s[%zu]", path, i);
		memset(&r, 0, sizeof(r));
		r.r_cap = -1;
		r.r_window.pw_kind = POLICY_WIN_TOTAL;
		if (item->yn_type != YN_MAP) {
			cfg_error(cx, item, "%s: expected a mapping", where);
			continue;
		}
		cfg_apply(cx, policy_keys, where, item, item, &r);
		if (r.r_name != NULL) {
			snprintf(where, sizeof(where), "%s[%zu] (%s)", path, i,
			    r.r_name);
		}
		check_raw(cx, where, item, &r);
		if (r.r_have_window == 0 && (r.r_cap != -1 || r.r_nusd > 0))
			cfg_error(
			    cx, item, "%s: a budget needs a window", where);
		po = &ps->ps_pol[ps->ps_n++];
		adopt(po, &r, item);
		for (j = 0; po->po_name != NULL && j + 1 < ps->ps_n; j++) {
			if (ps->ps_pol[j].po_name != NULL &&
			    strcmp(ps->ps_pol[j].po_name, po->po_name) == 0) {
				cfg_error(cx, item,
				    "%s: duplicate policy name (first at line "
				    "%zu)",
				    where, ps->ps_pol[j].po_line);
				break;
			}
		}
	}
	if (cx->cx_nerr != nerr)
		goto fail;
	*out = ps;
	return (0);
fail:
	policy_free(ps);
	return (-1);
}

/* Free a set and every policy in it. */
void
policy_free(struct policyset *ps)
{
	size_t i;

	if (ps == NULL)
		return;
	for (i = 0; i < ps->ps_n; i++)
		policy_clear(&ps->ps_pol[i]);
	free(ps->ps_pol);
	free(ps);
}
