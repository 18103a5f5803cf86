/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics module owns tollgate's in-memory counters and their
 * Prometheus text rendering (format 0.0.4) for GET /metrics.
 *
 * Each labelled family keeps its series in a table: a chained hash table
 * keyed by the label values (seeded FNV-1a over the bounded values), so
 * metrics_call costs O(1) amortised and allocates only when a label set is
 * seen for the first time. A series is one allocation: its counters, then
 * copies of its label values. Tables are capped at METRICS_SERIES_MAX label
 * sets because the labels come from clients (tags, models); a new label set
 * beyond the cap is added to the table's fold series, whose labels are all
 * "_other", and counted as dropped. Tokens and cost share one table, as do
 * the five token classes, because one call always moves them together.
 *
 * metrics_render sorts each table's series by their label values, so the
 * same counters always give the same text. The gauges it does not count
 * itself (calls in flight, kills live, the ledger's counters) are passed
 * in by the admin layer, which reads them at each scrape.
 * Everything runs on the loop thread: there is no locking. See
 * docs/metrics.md.
 */
#include <sys/random.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "tollgate/fleet.h"
#include "tollgate/ledger.h"
#include "tollgate/metrics.h"
#include "tollgate/util.h"

#ifndef TOLLGATE_VERSION
#define TOLLGATE_VERSION "unknown"
#endif

#define LABELS_MAX 6 /* the most labels a table keys on */
#define TABLE_BUCKETS_MIN 64 /* initial hash buckets of a table */

/*
 * Histogram bounds: roughly 1-2.5-5 steps up to 10 s, then the minutes an
 * LLM call can take. Kept as integer microseconds so that an observation
 * exactly on a bound lands in that bucket, as "le" promises.
 */
static const struct {
	int64_t hb_us;
	const char *hb_le;
} hist_bounds[] = {
    {5000, "0.005"},
    {10000, "0.01"},
    {25000, "0.025"},
    {50000, "0.05"},
    {100000, "0.1"},
    {250000, "0.25"},
    {500000, "0.5"},
    {1000000, "1"},
    {2500000, "2.5"},
    {5000000, "5"},
    {10000000, "10"},
    {30000000, "30"},
    {60000000, "60"},
    {120000000, "120"},
    {300000000, "300"},
    {600000000, "600"},
};
#define HIST_NBOUNDS nitems(hist_bounds)
#define HIST_INF HIST_NBOUNDS /* the bucket above every bound */
#define HIST_SUM (HIST_NBOUNDS + 1) /* microseconds observed */
#define HIST_NVALUES (HIST_NBOUNDS + 2)

/* Token classes, in the order the attribution series stores them. */
enum token_class {
	TOK_INPUT,
	TOK_OUTPUT,
	TOK_CACHED_INPUT,
	TOK_CACHE_WRITE,
	TOK_REASONING,
	TOK_MAX,
};
#define ATTR_COST TOK_MAX /* nano-USD, after the token classes */
#define ATTR_NVALUES (TOK_MAX + 1)

static const char *const token_class_names[TOK_MAX] = {
    [TOK_INPUT] = "input",
    [TOK_OUTPUT] = "output",
    [TOK_CACHED_INPUT] = "cached_input",
    [TOK_CACHE_WRITE] = "cache_write",
    [TOK_REASONING] = "reasoning",
};

/* The label values of one observation; borrowed, bounded lengths. */
struct mkey {
	const char *k_value[LABELS_MAX];
	size_t k_len[LABELS_MAX];
};

/* One label set of a table and its counters; owned by its table. */
struct mseries {
	struct mseries *ms_next; /* hash chain */
	uint64_t ms_hash;
	const char *ms_label[LABELS_MAX]; /* into this allocation */
	size_t ms_len[LABELS_MAX];
	uint64_t ms_value[]; /* the table's mt_nvalues, then labels */
};

/* The series of one family (or of families that move together). */
struct mtable {
	const char *const *mt_labels; /* label names */
	size_t mt_nlabels;
	size_t mt_nvalues; /* counters per series */
	struct mseries **mt_buckets; /* owned; NULL until the first series */
	size_t mt_nbuckets; /* a power of two */
	size_t mt_n; /* series, the fold series included */
};

static const char *const attr_labels[] = {
    "provider", "model", "team", "tenant", "agent_class", "status"};
static const char *const unpriced_labels[] = {"provider", "model"};
static const char *const reason_labels[] = {"reason"};
static const char *const rule_labels[] = {"rule"};
static const char *const attempt_labels[] = {"upstream", "reason", "next"};
static const char *const provider_labels[] = {"provider"};
static const char *const source_labels[] = {"source"};
const char *const metrics_budget_labels[METRICS_BUDGET_NLABELS] = {
    "team", "tenant", "agent_class", "environment", "model", "provider"};

/* Alert kinds and delivery results: fixed label values, always shown. */
static const char *const alert_kinds[] = {"threshold", "breaker", "kill",
    "ledger", "unknown_model", "fleet", "other"};
static const char *const alert_results[] = {
    "delivered", "retried", "failed", "dropped"};
/* Why a listener closed a client connection before serving it. */
static const char *const conn_reasons[] = {
    "header_timeout", "shed", "client_limit", "other"};

/* The module's state; metrics_reset returns it to all zero. */
static struct {
	int m_init;
	uint64_t m_seed;
	uint64_t m_dropped; /* folds into an "_other" series */
	struct mtable m_calls; /* provider..agent_class, status */
	struct mtable m_attr; /* provider..agent_class: tokens, cost */
	struct mtable m_unpriced;
	struct mtable m_fallback; /* calls, cost */
	struct mtable m_refusals;
	struct mtable m_shadow;
	struct mtable m_routed; /* calls, saved (an int64_t's bits) */
	struct mtable m_attempts; /* failed upstream attempts */
	struct mtable m_ttfb;
	struct mtable m_duration;
	struct mtable m_external; /* costs, nano-USD */
	uint64_t m_alerts[nitems(alert_kinds)];
	uint64_t m_deliveries[nitems(alert_results)];
	uint64_t m_conns_closed[nitems(conn_reasons)];
	uint64_t m_cache_hits;
	uint64_t m_cache_misses;
	int64_t m_cache_saved; /* nano-USD the hits saved */
} metrics;

static void
table_init(
    struct mtable *t, const char *const *labels, size_t nlabels, size_t nvalues)
{
	memset(t, 0, sizeof(*t));
	t->mt_labels = labels;
	t->mt_nlabels = nlabels;
	t->mt_nvalues = nvalues;
}

static void
metrics_init(void)
{
	uint64_t seed;

	if (metrics.m_init)
		return;
	/*
	 * Label values come from clients, so the hash is seeded: nobody can
	 * aim a whole table into one chain. The cap bounds the worst case
	 * anyway; a missing seed only costs that protection.
	 */
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = (uint64_t)monotime_us();
	metrics.m_seed = seed;
	table_init(&metrics.m_calls, attr_labels, 6, 1);
	table_init(&metrics.m_attr, attr_labels, 5, ATTR_NVALUES);
	table_init(&metrics.m_unpriced, unpriced_labels, 2, 1);
	table_init(&metrics.m_fallback, unpriced_labels, 2, 2);
	table_init(&metrics.m_refusals, reason_labels, 1, 1);
	table_init(&metrics.m_shadow, reason_labels, 1, 1);
	table_init(&metrics.m_routed, rule_labels, 1, 2);
	table_init(&metrics.m_attempts, attempt_labels, 3, 1);
	table_init(&metrics.m_ttfb, provider_labels, 1, HIST_NVALUES);
	table_init(&metrics.m_duration, provider_labels, 1, HIST_NVALUES);
	table_init(&metrics.m_external, source_labels, 1, 2);
	metrics.m_init = 1;
}

static void
key_set(struct mkey *k, size_t i, const char *v)
{
	if (v == NULL)
		v = "";
	k->k_value[i] = v;
	k->k_len[i] = strnlen(v, METRICS_LABEL_MAX);
}

static uint64_t
key_hash(const struct mtable *t, const struct mkey *k)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ metrics.m_seed;
	size_t i, j;

	for (i = 0; i < t->mt_nlabels; i++) {
		for (j = 0; j < k->k_len[i]; j++) {
			h ^= (unsigned char)k->k_value[i][j];
			h *= 0x100000001b3ULL;
		}
		/* A separator that no value contains: ("ab","") != ("a","b"). */
		h ^= 0x100;
		h *= 0x100000001b3ULL;
	}
	return (h);
}

static int
key_equal(const struct mtable *t, const struct mseries *s, const struct mkey *k)
{
	size_t i;

	for (i = 0; i < t->mt_nlabels; i++) {
		if (s->ms_len[i] != k->k_len[i] ||
		    memcmp(s->ms_label[i], k->k_value[i], k->k_len[i]) != 0)
			return (0);
	}
	return (1);
}

/* Double the buckets once the table holds as many series as buckets. */
static void
table_grow(struct mtable *t)
{
	struct mseries **nb, *s, *next;
	size_t n, i;

	if (t->mt_buckets != NULL && t->mt_n < t->mt_nbuckets)
		return;
	n = t->mt_buckets == NULL ? TABLE_BUCKETS_MIN : t->mt_nbuckets * 2;
	nb = xcalloc(n, sizeof(*nb));
	for (i = 0; i < t->mt_nbuckets; i++) {
		for (s = t->mt_buckets[i]; s != NULL; s = next) {
			next = s->ms_next;
			s->ms_next = nb[s->ms_hash & (n - 1)];
			nb[s->ms_hash & (n - 1)] = s;
		}
	}
	free(t->mt_buckets);
	t->mt_buckets = nb;
	t->mt_nbuckets = n;
}

static struct mseries *
table_find(struct mtable *t, const struct mkey *k, uint64_t h)
{
	struct mseries *s;

	if (t->mt_buckets == NULL)
		return (NULL);
	for (s = t->mt_buckets[h & (t->mt_nbuckets - 1)]; s != NULL;
	     s = s->ms_next) {
		if (s->ms_hash == h && key_equal(t, s, k))
			return (s);
	}
	return (NULL);
}

static struct mseries *
table_insert(struct mtable *t, const struct mkey *k, uint64_t h)
{
	struct mseries *s;
	size_t i, size, values;
	char *p;

	table_grow(t);
	values = t->mt_nvalues * sizeof(uint64_t);
	size = sizeof(*s) + values;
	for (i = 0; i < t->mt_nlabels; i++)
		size += k->k_len[i] + 1;
	s = xcalloc(1, size);
	p = (char *)s->ms_value + values;
	for (i = 0; i < t->mt_nlabels; i++) {
		memcpy(p, k->k_value[i], k->k_len[i]);
		p[k->k_len[i]] = '\0';
		s->ms_label[i] = p;
		s->ms_len[i] = k->k_len[i];
		p += k->k_len[i] + 1;
	}
	s->ms_hash = h;
	s->ms_next = t->mt_buckets[h & (t->mt_nbuckets - 1)];
	t->mt_buckets[h & (t->mt_nbuckets - 1)] = s;
	t->mt_n++;
	return (s);
}

/*
 * The series for a label set: found, created while the table is under its
 * cap, or else the fold series (created past the cap if need be, so a
 * table holds at most METRICS_SERIES_MAX + 1 series).
 */
static struct mseries *
table_get(struct mtable *t, const struct mkey *k)
{
	struct mseries *s;
	struct mkey other;
	uint64_t h;
	size_t i;

	h = key_hash(t, k);
	s = table_find(t, k, h);
	if (s != NULL)
		return (s);
	if (t->mt_n < METRICS_SERIES_MAX)
		return (table_insert(t, k, h));

	metrics.m_dropped++;
	for (i = 0; i < t->mt_nlabels; i++)
		key_set(&other, i, METRICS_OTHER);
	h = key_hash(t, &other);
	s = table_find(t, &other, h);
	if (s == NULL)
		s = table_insert(t, &other, h);
	return (s);
}

static void
table_free(struct mtable *t)
{
	struct mseries *s, *next;
	size_t i;

	for (i = 0; i < t->mt_nbuckets; i++) {
		for (s = t->mt_buckets[i]; s != NULL; s = next) {
			next = s->ms_next;
			free(s);
		}
	}
	free(t->mt_buckets);
	t->mt_buckets = NULL;
	t->mt_nbuckets = 0;
	t->mt_n = 0;
}

/* Counters never go down: a negative amount adds nothing. */
static void
counter_add(uint64_t *c, int64_t v)
{
	if (v > 0)
		*c += (uint64_t)v;
}

static void
hist_observe(struct mtable *t, const char *provider, int64_t us)
{
	struct mseries *s;
	struct mkey k;
	size_t i;

	if (us < 0)
		return;
	key_set(&k, 0, provider);
	s = table_get(t, &k);
	for (i = 0; i < HIST_NBOUNDS; i++) {
		if (us <= hist_bounds[i].hb_us)
			break;
	}
	s->ms_value[i]++; /* HIST_INF when above every bound */
	s->ms_value[HIST_SUM] += (uint64_t)us;
}

/* Count one finished or refused call. */
void
metrics_call(const struct metrics_call *mc)
{
	const struct usage *u = mc->mc_usage;
	struct mseries *s;
	struct mkey k;

	metrics_init();
	key_set(&k, 0, mc->mc_provider);
	key_set(&k, 1, mc->mc_model);
	key_set(&k, 2, mc->mc_team);
	key_set(&k, 3, mc->mc_tenant);
	key_set(&k, 4, mc->mc_agent_class);
	key_set(&k, 5, ledger_status_name(mc->mc_status));
	s = table_get(&metrics.m_calls, &k);
	s->ms_value[0]++;

	/* A refused call has nothing to add to tokens or cost. */
	if (u != NULL || mc->mc_cost_nusd > 0) {
		s = table_get(&metrics.m_attr, &k);
		if (u != NULL) {
			counter_add(&s->ms_value[TOK_INPUT], u->u_input);
			counter_add(&s->ms_value[TOK_OUTPUT], u->u_output);
			counter_add(
			    &s->ms_value[TOK_CACHED_INPUT], u->u_cached);
			counter_add(
			    &s->ms_value[TOK_CACHE_WRITE], u->u_cache_write);
			counter_add(
			    &s->ms_value[TOK_REASONING], u->u_reasoning);
		}
		counter_add(&s->ms_value[ATTR_COST], mc->mc_cost_nusd);
	}

	if (mc->mc_unpriced) {
		s = table_get(&metrics.m_unpriced, &k);
		s->ms_value[0]++;
	}
	if (mc->mc_fallback) {
		s = table_get(&metrics.m_fallback, &k);
		s->ms_value[0]++;
		counter_add(&s->ms_value[1], mc->mc_cost_nusd);
	}

	hist_observe(&metrics.m_ttfb, mc->mc_provider, mc->mc_ttfb_us);
	hist_observe(&metrics.m_duration, mc->mc_provider, mc->mc_duration_us);
}

/* Count one refusal by its reason ("missing_tag", a listener code, ...). */
void
metrics_refusal(const char *reason)
{
	struct mseries *s;
	struct mkey k;

	metrics_init();
	key_set(&k, 0, reason);
	s = table_get(&metrics.m_refusals, &k);
	s->ms_value[0]++;
}

/* Count one call a shadow policy would have refused, by its reason. */
void
metrics_shadow(const char *reason)
{
	struct mseries *s;
	struct mkey k;

	metrics_init();
	key_set(&k, 0, reason);
	s = table_get(&metrics.m_shadow, &k);
	s->ms_value[0]++;
}

/*
 * Count one call a routing rule applied to, and what it saved against the
 * model asked for (negative when it cost more). Rule names come from the
 * config, so the family is bounded by it.
 */
void
metrics_routed(const char *rule, int64_t saved_nusd)
{
	struct mseries *s;
	struct mkey k;

	metrics_init();
	key_set(&k, 0, rule);
	s = table_get(&metrics.m_routed, &k);
	s->ms_value[0]++;
	s->ms_value[1] = (uint64_t)((int64_t)s->ms_value[1] + saved_nusd);
}

/* Count one external cost (POST /v1/usage) of nusd from source. */
void
metrics_external(const char *source, int64_t nusd)
{
	struct mseries *s;
	struct mkey k;

	metrics_init();
	key_set(&k, 0, source);
	s = table_get(&metrics.m_external, &k);
	s->ms_value[0]++;
	if (nusd > 0)
		s->ms_value[1] += (uint64_t)nusd;
}

/* Count a call answered from the response cache and what it saved. */
void
metrics_cache_hit(int64_t saved_nusd)
{
	metrics.m_cache_hits++;
	metrics.m_cache_saved += saved_nusd;
}

/* Count a call the response cache took but had no answer for. */
void
metrics_cache_miss(void)
{
	metrics.m_cache_misses++;
}

/*
 * Count one upstream attempt that failed before any of its answer was
 * relayed: the upstream, why (status_429, status_5xx, connect, timeout),
 * and what followed (failover to the next upstream of the chain, retry
 * of the chain from its start, none). Upstream names come from the
 * config, so the family is bounded by it.
 */
void
metrics_attempt_failed(
    const char *upstream, const char *reason, const char *next)
{
	struct mseries *s;
	struct mkey k;

	metrics_init();
	key_set(&k, 0, upstream);
	key_set(&k, 1, reason);
	key_set(&k, 2, next);
	s = table_get(&metrics.m_attempts, &k);
	s->ms_value[0]++;
}

/* The index of name in a fixed list of n, or n - 1 ("other") if absent. */
static size_t
fixed_index(const char *const *list, size_t n, const char *name)
{
	size_t i;

	for (i = 0; name != NULL && i < n; i++)
		if (strcmp(list[i], name) == 0)
			return (i);
	return (n - 1);
}

/* Count one alert fired, by kind ("threshold", "breaker", "kill"). */
void
metrics_alert_fired(const char *kind)
{
	metrics_init();
	metrics.m_alerts[fixed_index(alert_kinds, nitems(alert_kinds), kind)]++;
}

/*
 * Count one webhook delivery outcome: "delivered", "retried" (an attempt
 * failed and another is scheduled), "failed" (given up) or "dropped"
 * (never sent: queue full, or tollgate stopped first).
 */
void
metrics_alert_delivery(const char *result)
{
	metrics_init();
	metrics.m_deliveries[fixed_index(
	    alert_results, nitems(alert_results), result)]++;
}

/*
 * Count one client connection a listener closed before serving it:
 * "header_timeout" (no complete request head in time), "shed" (closed
 * while doing nothing to admit a new one when every slot was taken) or
 * "client_limit" (over max_connections_per_client, answered 429).
 */
void
metrics_conn_closed(const char *reason)
{
	metrics_init();
	metrics.m_conns_closed[fixed_index(
	    conn_reasons, nitems(conn_reasons), reason)]++;
}

/*
 * A label value as the text format wants it: backslash, double quote and
 * newline escaped, and valid UTF-8, so a stray byte from a client header
 * cannot make the whole scrape unparseable (it becomes U+FFFD).
 */
static void
render_value(struct evbuffer *b, const char *v, size_t len)
{
	const unsigned char *p = (const unsigned char *)v;
	char out[METRICS_LABEL_MAX * 3];
	size_t i = 0, o = 0, n;

	while (i < len && o + 3 <= sizeof(out)) {
		if (p[i] == '\\' || p[i] == '"' || p[i] == '\n') {
			out[o++] = '\\';
			out[o++] = p[i] == '\n' ? 'n' : (char)p[i];
			i++;
			continue;
		}
		n = utf8_seqlen((const char *)p + i, len - i);
		if (n == 0) {
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		if (o + n > sizeof(out))
			break;
		memcpy(out + o, p + i, n);
		o += n;
		i += n;
	}
	evbuffer_add(b, out, o);
}

/* A series' name and labels, with one more label if extra is set. */
static void
render_series(struct evbuffer *b, const char *name, const struct mtable *t,
    const struct mseries *s, size_t nlabels, const char *extra,
    const char *extra_value)
{
	size_t i;

	evbuffer_add_printf(b, "%s{", name);
	for (i = 0; i < nlabels; i++) {
		evbuffer_add_printf(
		    b, "%s%s=\"", i > 0 ? "," : "", t->mt_labels[i]);
		render_value(b, s->ms_label[i], s->ms_len[i]);
		evbuffer_add(b, "\"", 1);
	}
	if (extra != NULL) {
		evbuffer_add_printf(
		    b, "%s%s=\"", nlabels > 0 ? "," : "", extra);
		render_value(b, extra_value, strlen(extra_value));
		evbuffer_add(b, "\"", 1);
	}
	evbuffer_add(b, "} ", 2);
}

static void
render_family(
    struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(
	    b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static size_t sort_nlabels; /* qsort has no context argument in C11 */

static int
series_cmp(const void *a, const void *b)
{
	const struct mseries *x = *(const struct mseries *const *)a;
	const struct mseries *y = *(const struct mseries *const *)b;
	size_t i, n;
	int c;

	for (i = 0; i < sort_nlabels; i++) {
		n = x->ms_len[i] < y->ms_len[i] ? x->ms_len[i] : y->ms_len[i];
		c = memcmp(x->ms_label[i], y->ms_label[i], n);
		if (c != 0)
			return (c);
		if (x->ms_len[i] != y->ms_len[i])
			return (x->ms_len[i] < y->ms_len[i] ? -1 : 1);
	}
	return (0);
}

/* A table's series sorted by label values; the caller frees the array. */
static struct mseries **
table_sorted(const struct mtable *t)
{
	struct mseries **v, *s;
	size_t i, n = 0;

	if (t->mt_n == 0)
		return (NULL);
	v = xreallocarray(NULL, t->mt_n, sizeof(*v));
	for (i = 0; i < t->mt_nbuckets; i++) {
		for (s = t->mt_buckets[i]; s != NULL; s = s->ms_next)
			v[n++] = s;
	}
	sort_nlabels = t->mt_nlabels;
	qsort(v, n, sizeof(*v), series_cmp);
	return (v);
}

/* One counter per series: value i of each. */
static void
render_counter(struct evbuffer *b, const char *name, const char *help,
    const struct mtable *t, size_t value)
{
	struct mseries **v;
	size_t i;

	render_family(b, name, "counter", help);
	v = table_sorted(t);
	for (i = 0; i < t->mt_n; i++) {
		render_series(b, name, t, v[i], t->mt_nlabels, NULL, NULL);
		evbuffer_add_printf(b, "%" PRIu64 "\n", v[i]->ms_value[value]);
	}
	free(v);
}

/* The routed calls' savings: a gauge, as a saving can be negative. */
static void
render_routed(struct evbuffer *b, const struct mtable *t)
{
	struct mseries **v;
	size_t i;

	render_family(b, "tollgate_routed_saved_nusd", "gauge",
	    "What the calls a routing rule applied to saved against the "
	    "model asked for, in nano-US dollars, since start (negative: "
	    "they cost more).");
	v = table_sorted(t);
	for (i = 0; i < t->mt_n; i++) {
		render_series(b, "tollgate_routed_saved_nusd", t, v[i],
		    t->mt_nlabels, NULL, NULL);
		evbuffer_add_printf(
		    b, "%" PRId64 "\n", (int64_t)v[i]->ms_value[1]);
	}
	free(v);
}

static void
render_tokens(struct evbuffer *b, const struct mtable *t)
{
	struct mseries **v;
	size_t i, c;

	render_family(b, "tollgate_tokens_total", "counter",
	    "Tokens by class; input includes cached_input and cache_write, "
	    "output includes reasoning.");
	v = table_sorted(t);
	for (i = 0; i < t->mt_n; i++) {
		for (c = 0; c < TOK_MAX; c++) {
			render_series(b, "tollgate_tokens_total", t, v[i],
			    t->mt_nlabels, "class", token_class_names[c]);
			evbuffer_add_printf(
			    b, "%" PRIu64 "\n", v[i]->ms_value[c]);
		}
	}
	free(v);
}

static void
render_cost_usd(struct evbuffer *b, const struct mtable *t)
{
	struct mseries **v;
	uint64_t nusd;
	size_t i;

	render_family(b, "tollgate_cost_usd_total", "counter",
	    "Cost of calls in US dollars (tollgate_cost_nusd_total / 1e9).");
	v = table_sorted(t);
	for (i = 0; i < t->mt_n; i++) {
		/* Printed from the integer, so no float rounding creeps in. */
		nusd = v[i]->ms_value[ATTR_COST];
		render_series(b, "tollgate_cost_usd_total", t, v[i],
		    t->mt_nlabels, NULL, NULL);
		evbuffer_add_printf(b, "%" PRIu64 ".%09" PRIu64 "\n",
		    nusd / 1000000000, nusd % 1000000000);
	}
	free(v);
}

static void
render_histogram(struct evbuffer *b, const char *name, const char *help,
    const struct mtable *t)
{
	struct mseries **v;
	uint64_t cum, sum;
	size_t i, j, len = strlen(name);
	char sample[128];

	render_family(b, name, "histogram", help);
	v = table_sorted(t);
	for (i = 0; i < t->mt_n; i++) {
		cum = 0;
		snprintf(sample, sizeof(sample), "%.*s_bucket", (int)len, name);
		for (j = 0; j <= HIST_NBOUNDS; j++) {
			cum += v[i]->ms_value[j];
			render_series(b, sample, t, v[i], t->mt_nlabels, "le",
			    j < HIST_NBOUNDS ? hist_bounds[j].hb_le : "+Inf");
			evbuffer_add_printf(b, "%" PRIu64 "\n", cum);
		}
		sum = v[i]->ms_value[HIST_SUM];
		snprintf(sample, sizeof(sample), "%.*s_sum", (int)len, name);
		render_series(b, sample, t, v[i], t->mt_nlabels, NULL, NULL);
		evbuffer_add_printf(b, "%" PRIu64 ".%06" PRIu64 "\n",
		    sum / 1000000, sum % 1000000);
		snprintf(sample, sizeof(sample), "%.*s_count", (int)len, name);
		render_series(b, sample, t, v[i], t->mt_nlabels, NULL, NULL);
		evbuffer_add_printf(b, "%" PRIu64 "\n", cum);
	}
	free(v);
}

/* A family with one unlabelled sample. */
static void
render_scalar(struct evbuffer *b, const char *name, const char *type,
    const char *help, uint64_t value)
{
	render_family(b, name, type, help);
	evbuffer_add_printf(b, "%s %" PRIu64 "\n", name, value);
}

/* The response cache's counters and its store's figures. */
static void
render_cache(struct evbuffer *b, const struct cache_stats *cs)
{
	render_scalar(b, "tollgate_cache_hits_total", "counter",
	    "Calls answered from the response cache.", metrics.m_cache_hits);
	render_scalar(b, "tollgate_cache_misses_total", "counter",
	    "Calls the response cache took but had no answer for.",
	    metrics.m_cache_misses);
	render_family(b, "tollgate_cache_saved_nusd", "counter",
	    "What the calls answered from the response cache would have cost "
	    "at the provider, in nano-US dollars, since start.");
	evbuffer_add_printf(b, "tollgate_cache_saved_nusd %" PRId64 "\n",
	    metrics.m_cache_saved);
	render_scalar(b, "tollgate_cache_entries", "gauge",
	    "Answers in the response cache's store.",
	    (uint64_t)(cs->cs_entries > 0 ? cs->cs_entries : 0));
	render_scalar(b, "tollgate_cache_bytes", "gauge",
	    "Bytes of answers in the response cache's store.",
	    (uint64_t)(cs->cs_bytes > 0 ? cs->cs_bytes : 0));
	render_scalar(b, "tollgate_cache_dropped_total", "counter",
	    "Answers the response cache's store could not keep (its queue "
	    "full, or a failed write).",
	    cs->cs_dropped);
}

static void
render_ledger(struct evbuffer *b, const struct ledger_stats *ls)
{
	int i;

	render_scalar(b, "tollgate_ledger_queue_depth", "gauge",
	    "Ledger items queued for the writer.", ls->ls_queue_depth);
	render_scalar(b, "tollgate_ledger_rows_written_total", "counter",
	    "Ledger rows written.", ls->ls_rows_written);
	render_scalar(b, "tollgate_ledger_commits_total", "counter",
	    "Ledger transactions committed.", ls->ls_commits);
	render_scalar(b, "tollgate_ledger_failures_total", "counter",
	    "Ledger transactions that failed.", ls->ls_failures);
	render_scalar(b, "tollgate_ledger_refused_full_total", "counter",
	    "Reservations refused because the ledger queue was full.",
	    ls->ls_refused_full);
	render_scalar(b, "tollgate_ledger_dropped_total", "counter",
	    "Settlements and records the ledger gave up on at close.",
	    ls->ls_dropped);
	render_scalar(b, "tollgate_ledger_interrupted_rows", "gauge",
	    "Rows left in flight by a crash, recovered at start-up.",
	    ls->ls_interrupted);
	render_family(b, "tollgate_ledger_commit_seconds", "summary",
	    "Time spent committing ledger transactions.");
	evbuffer_add_printf(b,
	    "tollgate_ledger_commit_seconds_sum %" PRIu64 ".%06" PRIu64 "\n"
	    "tollgate_ledger_commit_seconds_count %" PRIu64 "\n",
	    ls->ls_commit_us_total / 1000000, ls->ls_commit_us_total % 1000000,
	    ls->ls_commits);
	render_family(b, "tollgate_ledger_commit_seconds_max", "gauge",
	    "Longest ledger commit since the ledger opened.");
	evbuffer_add_printf(b,
	    "tollgate_ledger_commit_seconds_max %" PRIu64 ".%06" PRIu64 "\n",
	    ls->ls_commit_us_max / 1000000, ls->ls_commit_us_max % 1000000);
	render_family(b, "tollgate_ledger_checkpoint_seconds", "summary",
	    "Time spent checkpointing the ledger's WAL, off the commit path.");
	evbuffer_add_printf(b,
	    "tollgate_ledger_checkpoint_seconds_sum %" PRIu64 ".%06" PRIu64 "\n"
	    "tollgate_ledger_checkpoint_seconds_count %" PRIu64 "\n",
	    ls->ls_checkpoint_us_total / 1000000,
	    ls->ls_checkpoint_us_total % 1000000, ls->ls_checkpoints);
	render_family(b, "tollgate_ledger_checkpoint_seconds_max", "gauge",
	    "Longest WAL checkpoint since the ledger opened.");
	evbuffer_add_printf(b,
	    "tollgate_ledger_checkpoint_seconds_max %" PRIu64 ".%06" PRIu64
	    "\n",
	    ls->ls_checkpoint_us_max / 1000000,
	    ls->ls_checkpoint_us_max % 1000000);
	render_scalar(b, "tollgate_ledger_batch_max", "gauge",
	    "Most items written in one ledger transaction.", ls->ls_batch_max);
	render_scalar(b, "tollgate_ledger_failing", "gauge",
	    "1 while the ledger's last transaction failed, else 0.",
	    ls->ls_failing ? 1 : 0);
	render_scalar(b, "tollgate_ledger_lost", "gauge",
	    "1 while the ledger's file is lost (deleted, moved, replaced, "
	    "its -wal or -shm gone, an fsync failed) and calls are refused "
	    "until it is rebuilt, else 0.",
	    ls->ls_lost != LEDGER_LOST_NONE ? 1 : 0);
	render_family(b, "tollgate_ledger_lost_total", "counter",
	    "Times the ledger's file was found lost, by why.");
	for (i = LEDGER_LOST_NONE + 1; i < LEDGER_LOST_MAX; i++)
		evbuffer_add_printf(b,
		    "tollgate_ledger_lost_total{reason=\"%s\"} %" PRIu64 "\n",
		    ledger_lost_name((enum ledger_lost)i),
		    ls->ls_lost_total[i]);
	render_scalar(b, "tollgate_ledger_rebuilds_total", "counter",
	    "Lost ledgers rebuilt at their path from the open database.",
	    ls->ls_rebuilds);
	render_scalar(b, "tollgate_ledger_rebuild_failures_total", "counter",
	    "Attempts at rebuilding a lost ledger that failed (retried with "
	    "backoff).",
	    ls->ls_rebuild_failures);
	render_scalar(b, "tollgate_ledger_file_checks_total", "counter",
	    "Times the ledger's open file was compared with the one at its "
	    "path.",
	    ls->ls_file_checks);
	render_scalar(b, "tollgate_ledger_replayed_rows", "gauge",
	    "Rows written from the journal a stopped run left, at start-up.",
	    ls->ls_replayed);
	render_scalar(b, "tollgate_ledger_in_flight", "gauge",
	    "Calls reserved in the journal and not yet settled.",
	    ls->ls_in_flight);
	render_scalar(b, "tollgate_journal_writes_total", "counter",
	    "Writes to the reservation journal (one per loop turn with "
	    "records).",
	    ls->ls_journal_writes);
	render_scalar(b, "tollgate_journal_segments_total", "counter",
	    "Journal segments started since the ledger opened.",
	    ls->ls_journal_rotations);
	render_scalar(b, "tollgate_journal_failures_total", "counter",
	    "Journal writes or syncs that failed (the calls waiting on them "
	    "were refused).",
	    ls->ls_journal_failures);
	render_scalar(b, "tollgate_journal_segment_bytes", "gauge",
	    "Size of the open journal segment.",
	    (uint64_t)(ls->ls_journal_bytes > 0 ? ls->ls_journal_bytes : 0));
	render_family(b, "tollgate_journal_sync_seconds", "summary",
	    "Time spent in the journal's fdatasync (durability: power).");
	evbuffer_add_printf(b,
	    "tollgate_journal_sync_seconds_sum %" PRIu64 ".%06" PRIu64 "\n"
	    "tollgate_journal_sync_seconds_count %" PRIu64 "\n",
	    ls->ls_journal_sync_us_total / 1000000,
	    ls->ls_journal_sync_us_total % 1000000, ls->ls_journal_syncs);
}

/*
 * The fleet's families, only on an instance in a fleet: a single instance
 * has no Redis, and a tollgate_fleet_up of 0 there would read as "Redis
 * down" to every alert rule written for the fleet.
 */
static void
render_fleet(struct evbuffer *b, const struct fleet_stats *fs)
{
	if (fs->fs_state == FLEET_OFF)
		return;
	render_scalar(b, "tollgate_fleet_up", "gauge",
	    "1 while Redis answers, 0 while the fleet is degraded.",
	    fs->fs_state == FLEET_UP ? 1 : 0);
	render_scalar(b, "tollgate_fleet_redis_commands_total", "counter",
	    "Redis commands sent.", fs->fs_commands);
	render_scalar(b, "tollgate_fleet_redis_errors_total", "counter",
	    "Redis commands that failed or were answered with an error.",
	    fs->fs_errors);
	render_scalar(b, "tollgate_fleet_redis_timeouts_total", "counter",
	    "Redis connects and commands past their timeout.", fs->fs_timeouts);
	render_scalar(b, "tollgate_fleet_lease_syncs_total", "counter",
	    "Lease syncs Redis answered.", fs->fs_syncs);
	render_scalar(b, "tollgate_fleet_lease_topups_total", "counter",
	    "Lease syncs that asked for more lease than was held.",
	    fs->fs_topups);
	render_scalar(b, "tollgate_fleet_lease_short_grants_total", "counter",
	    "Lease syncs granted less than they asked for.", fs->fs_short);
	render_scalar(b, "tollgate_fleet_lease_waits_total", "counter",
	    "Waits for a lease top-up (a call may wait more than once).",
	    fs->fs_waits);
	render_scalar(b, "tollgate_fleet_lease_wait_timeouts_total", "counter",
	    "Waits for a lease top-up that ran out of time.",
	    fs->fs_wait_timeouts);
	render_family(b, "tollgate_fleet_degraded_seconds_total", "counter",
	    "Time spent with Redis not answering.");
	evbuffer_add_printf(b,
	    "tollgate_fleet_degraded_seconds_total %" PRIu64 ".%03" PRIu64 "\n",
	    fs->fs_degraded_ms / 1000, fs->fs_degraded_ms % 1000);
	render_scalar(b, "tollgate_fleet_leased_nusd", "gauge",
	    "Budget leases this instance holds now, in nano-US dollars.",
	    fs->fs_leased_nusd > 0 ? (uint64_t)fs->fs_leased_nusd : 0);
	render_scalar(b, "tollgate_fleet_unreported_nusd", "gauge",
	    "Spend settled here that Redis has not counted yet, in nano-US "
	    "dollars.",
	    fs->fs_unreported_nusd > 0 ? (uint64_t)fs->fs_unreported_nusd : 0);
	render_scalar(b, "tollgate_fleet_kills_received_total", "counter",
	    "Kills learnt from other instances of the fleet.", fs->fs_kills_in);
	render_scalar(b, "tollgate_fleet_extensions_received_total", "counter",
	    "Budget extensions learnt from other instances of the fleet.",
	    fs->fs_extensions_in);
	render_family(b, "tollgate_fleet_alert_claims_total", "counter",
	    "Alert thresholds claimed in Redis: won (sent from here) or lost "
	    "(another instance sent it).");
	evbuffer_add_printf(b,
	    "tollgate_fleet_alert_claims_total{result=\"lost\"} %" PRIu64 "\n"
	    "tollgate_fleet_alert_claims_total{result=\"won\"} %" PRIu64 "\n",
	    fs->fs_alerts_lost, fs->fs_alerts_won);
}

/*
 * The shipper's families, only with ledger.ship: configured, for the
 * reason render_fleet gives. The backlog and the lag are what an alert
 * rule watches: both grow while PostgreSQL is away.
 */
static void
render_ship(struct evbuffer *b, const struct ship_stats *ss,
    const struct ledger_stats *ls)
{
	size_t i;

	if (ss->sh_state == SHIP_OFF)
		return;
	render_scalar(b, "tollgate_ship_up", "gauge",
	    "1 while the fleet ledger's PostgreSQL takes rows, else 0.",
	    ss->sh_state == SHIP_UP ? 1 : 0);
	render_scalar(b, "tollgate_ship_backlog_rows", "gauge",
	    "Final ledger rows not shipped to PostgreSQL yet.", ss->sh_backlog);
	render_family(b, "tollgate_ship_lag_seconds", "gauge",
	    "Age of the oldest row not shipped yet; 0 when none.");
	evbuffer_add_printf(b,
	    "tollgate_ship_lag_seconds %" PRId64 ".%03" PRId64 "\n",
	    ss->sh_lag_ms / 1000, ss->sh_lag_ms % 1000);
	render_family(b, "tollgate_ship_rows_total", "counter",
	    "Rows shipped to PostgreSQL, by stream (a changed row again).");
	for (i = 0; i < SHIP_NSTREAMS; i++)
		evbuffer_add_printf(b,
		    "tollgate_ship_rows_total{stream=\"%s\"} %" PRIu64 "\n",
		    ship_stream_name((enum ship_stream)i), ss->sh_rows[i]);
	render_scalar(b, "tollgate_ship_errors_total", "counter",
	    "Failed connections and statements to PostgreSQL.", ss->sh_errors);
	render_scalar(b, "tollgate_ledger_pruned_rows_total", "counter",
	    "Shipped rows older than ledger.keep_local deleted from the "
	    "local ledger.",
	    ls->ls_pruned);
}

static void
render_alerts(struct evbuffer *b)
{
	size_t i;

	render_family(b, "tollgate_alerts_fired_total", "counter",
	    "Alerts fired, by kind.");
	for (i = 0; i < nitems(alert_kinds); i++)
		evbuffer_add_printf(b,
		    "tollgate_alerts_fired_total{kind=\"%s\"} %" PRIu64 "\n",
		    alert_kinds[i], metrics.m_alerts[i]);
	render_family(b, "tollgate_alert_deliveries_total", "counter",
	    "Webhook delivery outcomes: delivered, retried (an attempt "
	    "failed and another is scheduled), failed (given up), dropped "
	    "(never sent).");
	for (i = 0; i < nitems(alert_results); i++)
		evbuffer_add_printf(b,
		    "tollgate_alert_deliveries_total{result=\"%s\"} %" PRIu64
		    "\n",
		    alert_results[i], metrics.m_deliveries[i]);
}

/* One gauge line of a budget scope: name{policy,its tags[,state]} v. */
static void
budget_line(struct evbuffer *b, const char *name,
    const struct metrics_budget *mb, const char *state, int64_t v)
{
	size_t i;

	evbuffer_add_printf(b, "%s{policy=\"", name);
	render_value(
	    b, mb->mb_policy, strnlen(mb->mb_policy, METRICS_LABEL_MAX));
	for (i = 0; i < METRICS_BUDGET_NLABELS; i++) {
		if (mb->mb_labels[i] == NULL)
			continue;
		evbuffer_add_printf(b, "\",%s=\"", metrics_budget_labels[i]);
		render_value(b, mb->mb_labels[i],
		    strnlen(mb->mb_labels[i], METRICS_LABEL_MAX));
	}
	if (state != NULL) {
		evbuffer_add_printf(b, "\",state=\"");
		render_value(b, state, strlen(state));
	}
	evbuffer_add_printf(b, "\"} %lld\n", (long long)v);
}

/*
 * Each budget scope's spend, reservations, cap and state, for the scopes
 * the admin layer chose (the ones that spent most, at most
 * METRICS_BUDGETS_MAX: the cardinality is bounded whatever the tags).
 */
static void
render_budgets(struct evbuffer *b, const struct metrics_gauges *g)
{
	size_t i;

	render_family(b, "tollgate_budget_spent_nusd", "gauge",
	    "A budget scope's spend in its window, nano-US dollars (this "
	    "instance's count; /v1/budgets has the fleet's).");
	for (i = 0; i < g->mg_nbudgets; i++)
		budget_line(b, "tollgate_budget_spent_nusd", &g->mg_budgets[i],
		    NULL, g->mg_budgets[i].mb_spent_nusd);
	render_family(b, "tollgate_budget_reserved_nusd", "gauge",
	    "Held by its calls in flight, nano-US dollars.");
	for (i = 0; i < g->mg_nbudgets; i++)
		budget_line(b, "tollgate_budget_reserved_nusd",
		    &g->mg_budgets[i], NULL, g->mg_budgets[i].mb_reserved_nusd);
	render_family(b, "tollgate_budget_cap_nusd", "gauge",
	    "The cap in force: its hard cap plus live extensions, nano-US "
	    "dollars (scopes with one).");
	for (i = 0; i < g->mg_nbudgets; i++)
		if (g->mg_budgets[i].mb_cap_nusd >= 0)
			budget_line(b, "tollgate_budget_cap_nusd",
			    &g->mg_budgets[i], NULL,
			    g->mg_budgets[i].mb_cap_nusd);
	render_family(b, "tollgate_budget_state", "gauge",
	    "1 for the scope's state (ok, alerting, capped, degraded, "
	    "killed).");
	for (i = 0; i < g->mg_nbudgets; i++)
		budget_line(b, "tollgate_budget_state", &g->mg_budgets[i],
		    g->mg_budgets[i].mb_state, 1);
	render_scalar(b, "tollgate_budget_scopes_not_shown", "gauge",
	    "Budget scopes left out of these gauges: only the "
	    "METRICS_BUDGETS_MAX that spent most are shown.",
	    g->mg_budgets_dropped);
}

/* The process_* metrics every Prometheus client library exports. */
static void
render_process(struct evbuffer *b, const struct metrics_process *p)
{
	render_family(b, "process_cpu_seconds_total", "counter",
	    "Total user and system CPU time spent in seconds.");
	evbuffer_add_printf(b, "process_cpu_seconds_total %llu.%06llu\n",
	    (unsigned long long)(p->mp_cpu_us / 1000000),
	    (unsigned long long)(p->mp_cpu_us % 1000000));
	render_scalar(b, "process_resident_memory_bytes", "gauge",
	    "Resident memory size in bytes.", p->mp_rss_bytes);
	render_scalar(b, "process_virtual_memory_bytes", "gauge",
	    "Virtual memory size in bytes.", p->mp_vsz_bytes);
	render_scalar(b, "process_open_fds", "gauge",
	    "Number of open file descriptors.", p->mp_open_fds);
	render_scalar(b, "process_max_fds", "gauge",
	    "Maximum number of open file descriptors.", p->mp_max_fds);
	if (p->mp_start_ms > 0) {
		render_family(b, "process_start_time_seconds", "gauge",
		    "Start time of the process since unix epoch in seconds.");
		evbuffer_add_printf(b,
		    "process_start_time_seconds %lld.%03lld\n",
		    (long long)(p->mp_start_ms / 1000),
		    (long long)(p->mp_start_ms % 1000));
	}
}

/*
 * Write every metric as Prometheus text, format 0.0.4, with g's gauges
 * for what the counters here do not hold.
 */
void
metrics_render(struct evbuffer *b, const struct metrics_gauges *g)
{
	size_t i;

	metrics_init();
	render_family(b, "tollgate_build_info", "gauge",
	    "The running tollgate's version; always 1.");
	evbuffer_add_printf(b, "tollgate_build_info{version=\"");
	render_value(b, TOLLGATE_VERSION, strlen(TOLLGATE_VERSION));
	evbuffer_add_printf(b, "\"} 1\n");

	render_counter(b, "tollgate_calls_total",
	    "Calls finished or refused, by status.", &metrics.m_calls, 0);
	render_tokens(b, &metrics.m_attr);
	render_counter(b, "tollgate_cost_nusd_total",
	    "Cost of calls in nano-US dollars.", &metrics.m_attr, ATTR_COST);
	render_cost_usd(b, &metrics.m_attr);
	render_counter(b, "tollgate_unpriced_calls_total",
	    "Calls whose model had no price.", &metrics.m_unpriced, 0);
	render_counter(b, "tollgate_fallback_priced_calls_total",
	    "Calls to a model without a price, priced at the highest rates "
	    "of its family.",
	    &metrics.m_fallback, 0);
	render_counter(b, "tollgate_fallback_priced_cost_nusd_total",
	    "Cost in nano-US dollars of the calls priced at the highest "
	    "rates of their model's family.",
	    &metrics.m_fallback, 1);
	render_counter(b, "tollgate_refusals_total",
	    "Requests tollgate refused, by reason.", &metrics.m_refusals, 0);
	render_counter(b, "tollgate_shadow_refusals_total",
	    "Calls a shadow policy would have refused, by reason.",
	    &metrics.m_shadow, 0);
	render_counter(b, "tollgate_routed_total",
	    "Calls a routing rule applied to, by rule.", &metrics.m_routed, 0);
	render_routed(b, &metrics.m_routed);
	render_counter(b, "tollgate_upstream_attempts_failed_total",
	    "Upstream attempts that failed before any of their answer was "
	    "relayed, by upstream, reason and what followed (failover, "
	    "retry, none).",
	    &metrics.m_attempts, 0);
	render_counter(b, "tollgate_external_costs_total",
	    "Costs that were not calls, recorded through POST /v1/usage, by "
	    "source.",
	    &metrics.m_external, 0);
	render_counter(b, "tollgate_external_cost_nusd_total",
	    "Their cost in nano-US dollars, by source.", &metrics.m_external,
	    1);
	render_cache(b, &g->mg_cache);
	render_histogram(b, "tollgate_upstream_ttfb_seconds",
	    "Time from forwarding a call to the provider's response headers.",
	    &metrics.m_ttfb);
	render_histogram(b, "tollgate_call_duration_seconds",
	    "Duration of calls, from request to the end of the response.",
	    &metrics.m_duration);
	render_scalar(b, "tollgate_calls_in_flight", "gauge",
	    "Calls in progress.", g->mg_calls_in_flight);
	render_scalar(b, "tollgate_kills_live", "gauge",
	    "Kill switches in force (admin API and breakers).",
	    g->mg_kills_live);
	render_family(b, "tollgate_connections_closed_total", "counter",
	    "Client connections closed before they were served, by reason.");
	for (i = 0; i < nitems(conn_reasons); i++)
		evbuffer_add_printf(b,
		    "tollgate_connections_closed_total{reason=\"%s\"} %" PRIu64
		    "\n",
		    conn_reasons[i], metrics.m_conns_closed[i]);
	render_ledger(b, &g->mg_ledger);
	render_alerts(b);
	render_scalar(b, "tollgate_metrics_series_dropped_total", "counter",
	    "Observations folded into an \"_other\" series because a family "
	    "reached its cap of label sets.",
	    metrics.m_dropped);
	render_fleet(b, &g->mg_fleet);
	render_ship(b, &g->mg_ship, &g->mg_ledger);
	render_budgets(b, g);
	render_process(b, &g->mg_process);
}

/* Free every series and zero every counter (at exit, and in tests). */
void
metrics_reset(void)
{
	if (!metrics.m_init)
		return;
	table_free(&metrics.m_calls);
	table_free(&metrics.m_attr);
	table_free(&metrics.m_unpriced);
	table_free(&metrics.m_fallback);
	table_free(&metrics.m_refusals);
	table_free(&metrics.m_shadow);
	table_free(&metrics.m_routed);
	table_free(&metrics.m_attempts);
	table_free(&metrics.m_ttfb);
	table_free(&metrics.m_duration);
	table_free(&metrics.m_external);
	memset(&metrics, 0, sizeof(metrics));
}
