/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The price file loader. pricing_load reads prices.yaml with the YAML
 * walker's reader and key tables (include/tollgate/yaml.h), so a price file
 * is checked like tollgate.yaml: unknown keys and wrong types are refused
 * and every error is collected as "file:line:col: message". Prices are
 * written as decimal USD per million tokens and parsed digit by digit into
 * integer pico-USD per token (1 USD/M = 1,000,000 pUSD/token, so six
 * decimals are exact); no float ever touches money.
 *
 * The book is built here, sorted, and checked as a whole (aliases name a
 * model and shadow none) before anyone sees it; pricing_free, here too,
 * takes it apart again. Searching it and pricing calls is pricing.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/pricing.h"
#include "tollgate/util.h"
#include "tollgate/yaml.h"

#include "pricing_int.h"

/* Highest price accepted, USD per million tokens; keeps the sums bounded. */
#define PRICE_MAX_USD 1000000
#define PRICE_DECIMALS 6
#define PUSD_PER_USD_PER_M 1000000LL /* pUSD/token for 1 USD/M */

/* Longest model, alias, tier and version names. */
#define PRICE_NAME_MAX (USAGE_MODEL_MAX - 1)
#define PRICE_TIER_MAX 31 /* u_service_tier is char[32] */
#define PRICE_VERSION_MAX 64
/* Largest token counts accepted for max_output_tokens, above_input_tokens. */
#define PRICE_TOKENS_MAX 1000000000LL

/* Unset rates while loading; filled with their defaults afterwards. */
#define RATE_UNSET (-1)

/* State of one pricing_load: the book being built, and the raw aliases. */
struct pbload {
	struct pricebook *pl_book;
	int pl_has_version;
	int pl_has_models;
	const struct ynode *pl_aliases; /* checked once all models are known */
};

static void cfgp_version(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_models(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_aliases(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_external(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_tiers(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_usd(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_tokens(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);

#define P_OFF(f) offsetof(struct price, f)
#define R_OFF(f) offsetof(struct price_rates, f)

/* The five rates of one price_rates that starts off bytes into the base. */
#define KEY_USD(n, off, flags)                                                 \
	{                                                                      \
		.k_name = (n), .k_parse = cfgp_usd, .k_off = (off),            \
		.k_flags = (flags)                                             \
	}
#define RATE_KEYS(off)                                                         \
	KEY_USD("input", (off) + R_OFF(pr_input), CFGKEY_REQUIRED),            \
	    KEY_USD("cached_input", (off) + R_OFF(pr_cached), 0),              \
	    KEY_USD("cache_write", (off) + R_OFF(pr_cache_write), 0),          \
	    KEY_USD("cache_write_1h", (off) + R_OFF(pr_cache_write_1h), 0),    \
	    KEY_USD("output", (off) + R_OFF(pr_output), CFGKEY_REQUIRED)
#define KEY_TOKENS(n, off, min, flags)                                         \
	{                                                                      \
		.k_name = (n), .k_parse = cfgp_tokens, .k_off = (off),         \
		.k_min = (min), .k_max = PRICE_TOKENS_MAX, .k_flags = (flags)  \
	}

/* long_context: stored straight into the struct price. */
static const struct cfgkey long_keys[] = {
    KEY_TOKENS(
	"above_input_tokens", P_OFF(p_long_threshold), 1, CFGKEY_REQUIRED),
    RATE_KEYS(P_OFF(p_long)),
    KEY_END,
};

/* One tier under tiers:, stored into a struct price_rates. */
static const struct cfgkey tier_keys[] = {
    RATE_KEYS(0),
    KEY_END,
};

/* One model under models:, stored into its struct price. */
static const struct cfgkey model_keys[] = {
    RATE_KEYS(P_OFF(p_base)),
    KEY_TOKENS("max_output_tokens", P_OFF(p_max_output), 0, CFGKEY_REQUIRED),
    KEY_SECTION("long_context", long_keys),
    KEY_CALL("tiers", cfgp_tiers, 0, 0),
    KEY_END,
};

/* The top level; version and models are checked after the walk. */
static const struct cfgkey top_keys[] = {
    KEY_CALL("version", cfgp_version, 0, 0),
    KEY_CALL("models", cfgp_models, 0, 0),
    KEY_CALL("aliases", cfgp_aliases, 0, 0),
    KEY_CALL("external", cfgp_external, 0, 0),
    KEY_END,
};

/* Parsing. */

/*
 * A price: unquoted decimal USD per million tokens, digits with at most six
 * decimals ("2.50", "0.0625", "10"), parsed exactly into pico-USD per
 * token. No sign, exponent or other YAML number spelling is accepted.
 */
static void
cfgp_usd(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;
	long long whole = 0, frac = 0;
	int nwhole = 0, nfrac = 0;

	(void)k;
	if (n->yn_type != YN_SCALAR || !n->yn_plain || ynode_is_null(n))
		goto bad;
	s = n->yn_str;
	if (*s == '-' && s[1] >= '0' && s[1] <= '9') {
		cfg_error(cx, n, "%s: must not be negative", path);
		return;
	}
	for (; *s >= '0' && *s <= '9'; s++, nwhole++) {
		if (whole <= PRICE_MAX_USD)
			whole = whole * 10 + (*s - '0');
	}
	if (nwhole == 0)
		goto bad;
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9'; s++, nfrac++) {
			if (nfrac < PRICE_DECIMALS)
				frac = frac * 10 + (*s - '0');
		}
		if (nfrac == 0)
			goto bad;
	}
	if (*s != '\0')
		goto bad;
	if (nfrac > PRICE_DECIMALS) {
		cfg_error(cx, n,
		    "%s: at most %d decimal places (USD per million tokens)",
		    path, PRICE_DECIMALS);
		return;
	}
	for (; nfrac < PRICE_DECIMALS; nfrac++)
		frac *= 10;
	if (whole > PRICE_MAX_USD || (whole == PRICE_MAX_USD && frac != 0)) {
		cfg_error(cx, n, "%s: must be at most %d", path, PRICE_MAX_USD);
		return;
	}
	*(int64_t *)dst = (int64_t)(whole * PUSD_PER_USD_PER_M + frac);
	return;
bad:
	cfg_error(cx, n,
	    "%s: expected a price in USD per million tokens, e.g. 2.50", path);
}

/* A token count: unquoted digits between k_min and k_max. */
static void
cfgp_tokens(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;
	long long v = 0;

	if (n->yn_type != YN_SCALAR || !n->yn_plain || n->yn_len == 0)
		goto bad;
	for (s = n->yn_str; *s >= '0' && *s <= '9'; s++) {
		if (v <= k->k_max)
			v = v * 10 + (*s - '0');
	}
	if (s == n->yn_str || *s != '\0')
		goto bad;
	if (v < k->k_min || v > k->k_max) {
		cfg_error(cx, n, "%s: must be between %lld and %lld", path,
		    k->k_min, k->k_max);
		return;
	}
	*(int64_t *)dst = (int64_t)v;
	return;
bad:
	cfg_error(cx, n, "%s: expected a number of tokens", path);
}

/* Printable ASCII without spaces, 1 to max bytes. */
static int
name_ok(const struct ynode *key, size_t max)
{
	size_t i;

	if (key->yn_len == 0 || key->yn_len > max)
		return (0);
	for (i = 0; i < key->yn_len; i++) {
		if (key->yn_str[i] <= ' ' || key->yn_str[i] > '~')
			return (0);
	}
	return (1);
}

/* The version string: stored in every ledger row as price_version. */
static void
cfgp_version(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct pbload *pl = dst;
	const char *s;

	(void)k;
	pl->pl_has_version = 1;
	if ((s = cfg_string(cx, path, n, "a version string")) == NULL)
		return;
	if (!name_ok(n, PRICE_VERSION_MAX)) {
		cfg_error(cx, n,
		    "%s: must be 1 to %d printable characters without spaces",
		    path, PRICE_VERSION_MAX);
		return;
	}
	free(pl->pl_book->pb_version);
	pl->pl_book->pb_version = xstrdup(s);
}

static void
rates_unset(struct price_rates *r)
{
	r->pr_input = RATE_UNSET;
	r->pr_cached = RATE_UNSET;
	r->pr_cache_write = RATE_UNSET;
	r->pr_cache_write_1h = RATE_UNSET;
	r->pr_output = RATE_UNSET;
}

/* Cache reads and writes default to the input rate, 1 h writes to 5 m. */
static void
rates_defaults(struct price_rates *r)
{
	if (r->pr_cached == RATE_UNSET)
		r->pr_cached = r->pr_input;
	if (r->pr_cache_write == RATE_UNSET)
		r->pr_cache_write = r->pr_input;
	if (r->pr_cache_write_1h == RATE_UNSET)
		r->pr_cache_write_1h = r->pr_cache_write;
}

/* One tier under tiers:, into the next of the model's p_tiers. */
static void
tier_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	struct price *p = arg;
	const struct ynode *key = en->en_key;
	size_t t;

	if (!name_ok(key, PRICE_TIER_MAX)) {
		cfg_error(cx, key,
		    "%s: bad tier name '%s' (printable, no spaces, at most %d "
		    "characters)",
		    en->en_path, en->en_name, PRICE_TIER_MAX);
		return;
	}
	if (strcmp(key->yn_str, "default") == 0 ||
	    strcmp(key->yn_str, "standard") == 0) {
		cfg_error(cx, key,
		    "%s: '%s' is the base price: put its rates at the model's "
		    "top level",
		    en->en_path, en->en_name);
		return;
	}
	t = p->p_ntiers++;
	p->p_tier_names[t] = xstrdup(key->yn_str);
	rates_unset(&p->p_tiers[t]);
	cfg_apply(cx, tier_keys, en->en_where, key, en->en_val, &p->p_tiers[t]);
	rates_defaults(&p->p_tiers[t]);
}

/* tiers: a mapping of service tier name -> its own rates. */
static void
cfgp_tiers(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct price *p = dst;
	size_t max;

	(void)k;
	if (n->yn_type == YN_MAP && n->yn_nkids >= 2) {
		max = n->yn_nkids / 2;
		p->p_tiers = xcalloc(max, sizeof(*p->p_tiers));
		p->p_tier_names = xcalloc(max, sizeof(*p->p_tier_names));
	}
	cfg_map_each(cx, path, n, "tier: prices", tier_cb, p);
}

/* One model under models:, into the next of the book's pb_models. */
static void
model_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	struct pricebook *pb = arg;
	struct price *p;

	if (!name_ok(en->en_key, PRICE_NAME_MAX)) {
		cfg_error(cx, en->en_key,
		    "%s: bad model name '%s' (printable, no spaces, at most "
		    "%d characters)",
		    en->en_path, en->en_name, PRICE_NAME_MAX);
		return;
	}
	if (en->en_val->yn_type != YN_MAP) {
		cfg_error(
		    cx, en->en_val, "%s: expected a mapping", en->en_where);
		return;
	}
	p = &pb->pb_models[pb->pb_nmodels++];
	p->p_model = xstrdup(en->en_key->yn_str);
	rates_unset(&p->p_base);
	rates_unset(&p->p_long);
	p->p_max_output = RATE_UNSET;
	cfg_apply(cx, model_keys, en->en_where, en->en_key, en->en_val, p);
	rates_defaults(&p->p_base);
	/* Without long_context, p_long is the base: never a stray 0. */
	if (p->p_long_threshold > 0)
		rates_defaults(&p->p_long);
	else
		p->p_long = p->p_base;
}

/* models: a mapping of model name -> prices, each checked by model_keys. */
static void
cfgp_models(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct pbload *pl = dst;
	struct pricebook *pb = pl->pl_book;

	(void)k;
	pl->pl_has_models = 1;
	if (ynode_is_null(n) || (n->yn_type == YN_MAP && n->yn_nkids < 2)) {
		cfg_error(cx, n, "%s: at least one model is required", path);
		return;
	}
	if (n->yn_type == YN_MAP)
		pb->pb_models =
		    xcalloc(n->yn_nkids / 2, sizeof(*pb->pb_models));
	cfg_map_each(cx, path, n, "model: prices", model_cb, pb);
}

/* aliases: kept as a node and checked once every model is known. */
static void
cfgp_aliases(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct pbload *pl = dst;

	(void)k;
	if (ynode_is_null(n))
		return;
	if (n->yn_type != YN_MAP) {
		cfg_error(
		    cx, n, "%s: expected a mapping of alias: model", path);
		return;
	}
	pl->pl_aliases = n;
}

/* external: the prices of costs that are not calls (external.c). */
static void
cfgp_external(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct pbload *pl = dst;

	(void)k;
	pricing_external_load(cx, path, n, pl->pl_book);
}

/* Sorting and the checks that need every model. */

static int
price_sort_cmp(const void *a, const void *b)
{
	const struct price *pa = a, *pb = b;

	return (strcmp(pa->p_model, pb->p_model));
}

static int
alias_sort_cmp(const void *a, const void *b)
{
	const struct pb_alias *aa = a, *ab = b;

	return (strcmp(aa->a_name, ab->a_name));
}

/*
 * One alias: it names a model (not another alias) and shadows none. Every
 * model is known by now; pl_aliases is the whole mapping, for the check
 * that tells a chained alias from a missing model.
 */
static void
alias_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	struct pbload *pl = arg;
	struct pricebook *pb = pl->pl_book;
	const struct ynode *n = pl->pl_aliases, *key = en->en_key;
	const struct ynode *val = en->en_val;
	const struct price *p;
	struct pb_alias *a;
	char tbuf[80];
	size_t j;
	int chained;

	if (!name_ok(key, PRICE_NAME_MAX)) {
		cfg_error(cx, key,
		    "%s: bad alias name '%s' (printable, no spaces, at most "
		    "%d characters)",
		    en->en_path, en->en_name, PRICE_NAME_MAX);
		return;
	}
	if (pricing_find_model(pb, key->yn_str, key->yn_len) != NULL) {
		cfg_error(cx, key,
		    "%s: '%s' is also a model under models: an alias may not "
		    "shadow a model",
		    en->en_path, en->en_name);
		return;
	}
	if (val->yn_type != YN_SCALAR || ynode_is_null(val)) {
		cfg_error(cx, val, "%s: expected a model name", en->en_where);
		return;
	}
	cfg_esc(tbuf, sizeof(tbuf), val->yn_str, val->yn_len);
	p = NULL;
	if (val->yn_len > 0 && memchr(val->yn_str, '\0', val->yn_len) == NULL)
		p = pricing_find_model(pb, val->yn_str, val->yn_len);
	if (p == NULL) {
		chained = 0;
		for (j = 0; j + 1 < n->yn_nkids; j += 2) {
			if (n->yn_kids[j]->yn_type == YN_SCALAR &&
			    strcmp(n->yn_kids[j]->yn_str, val->yn_str) == 0)
				chained = 1;
		}
		if (chained)
			cfg_error(cx, val,
			    "%s: '%s' is an alias; point at the model itself",
			    en->en_where, tbuf);
		else
			cfg_error(cx, val, "%s: no model '%s' under models",
			    en->en_where, tbuf);
		return;
	}
	a = &pb->pb_aliases[pb->pb_naliases++];
	a->a_name = xstrdup(key->yn_str);
	a->a_price = p;
}

/* Resolve and check the aliases, once every model is known. */
static void
load_aliases(struct cfgctx *cx, struct pbload *pl)
{
	struct pricebook *pb = pl->pl_book;
	const struct ynode *n = pl->pl_aliases;

	pb->pb_aliases = xcalloc(n->yn_nkids / 2 + 1, sizeof(*pb->pb_aliases));
	cfg_map_each(cx, "aliases", n, "alias: model", alias_cb, pl);
	if (pb->pb_naliases > 1)
		qsort(pb->pb_aliases, pb->pb_naliases, sizeof(*pb->pb_aliases),
		    alias_sort_cmp);
}

/* Public interface. */

/*
 * Load and check the price file at path. Returns a new book, or NULL with
 * every error found appended to errs (which may be NULL).
 */
struct pricebook *
pricing_load(const char *path, struct cfgerrs *errs)
{
	struct cfgctx cx;
	struct pbload pl;
	struct pricebook *pb;
	struct ynode *root = NULL;
	const struct ynode *at;
	char *buf = NULL;
	size_t len = 0;

	memset(&cx, 0, sizeof(cx));
	memset(&pl, 0, sizeof(pl));
	cx.cx_file = path;
	cx.cx_errs = errs;
	cx.cx_sort = 1;
	pb = pl.pl_book = xcalloc(1, sizeof(*pb));

	if ((buf = cfg_read_file(&cx, path, &len)) == NULL)
		goto fail;
	cx.cx_buf = buf;
	cx.cx_len = len;
	if (cfg_parse_yaml(&cx, &root) == -1)
		goto fail;
	if (root != NULL)
		cfg_apply(&cx, top_keys, NULL, root, root, &pl);
	/* Report missing keys at the top mapping, or unplaced in an empty file. */
	at = root != NULL && !ynode_is_null(root) ? root : NULL;
	if (at == NULL || at->yn_type == YN_MAP) {
		if (!pl.pl_has_version)
			cfg_error(&cx, at, "missing required key 'version'");
		if (!pl.pl_has_models)
			cfg_error(&cx, at, "missing required key 'models'");
	}
	if (pb->pb_nmodels > 1)
		qsort(pb->pb_models, pb->pb_nmodels, sizeof(*pb->pb_models),
		    price_sort_cmp);
	if (pl.pl_aliases != NULL)
		load_aliases(&cx, &pl);
	if (cx.cx_nerr != 0)
		goto fail;

	ynode_free(root);
	free(buf);
	return (pb);
fail:
	cfg_sort_errors(&cx);
	pricing_free(pb);
	ynode_free(root);
	free(buf);
	return (NULL);
}

/* Free a book and everything in it; NULL is allowed. */
void
pricing_free(struct pricebook *pb)
{
	struct price *p;
	size_t i, t;

	if (pb == NULL)
		return;
	pricing_external_free(pb);
	for (i = 0; i < pb->pb_nmodels; i++) {
		p = &pb->pb_models[i];
		for (t = 0; t < p->p_ntiers; t++)
			free(p->p_tier_names[t]);
		free(p->p_tier_names);
		free(p->p_tiers);
		free(p->p_model);
	}
	free(pb->pb_models);
	for (i = 0; i < pb->pb_naliases; i++)
		free(pb->pb_aliases[i].a_name);
	free(pb->pb_aliases);
	free(pb->pb_version);
	free(pb);
}
