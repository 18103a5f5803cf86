/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lookups in a loaded price book and the cost arithmetic; the book itself
 * is built by load.c. It is immutable: models and aliases sit in two
 * arrays sorted by name, searched with a binary search per lookup, and
 * pricing_lookup normalises provider spellings (models/ prefix, dated
 * snapshots) before giving up. An unknown model is NULL, never a $0 price:
 * what to do with it is the caller's policy.
 *
 * pricing_cost and pricing_worst_case do all their arithmetic in 128 bits,
 * saturating, and round up to whole nano-USD once at the end, so a cost is
 * never understated by rounding and never wraps.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tollgate/pricing.h"

#include "pricing_int.h"

/* Pico-USD in a nano-USD, the unit a cost is rounded up to. */
#define PUSD_PER_NUSD 1000

/* Lookup. */

/* strcmp of name (len bytes, no NUL among them) against s. */
static int
namecmp(const char *name, size_t len, const char *s)
{
	int c;

	if ((c = strncmp(name, s, len)) != 0)
		return (c);
	return (s[len] == '\0' ? 0 : -1);
}

/* The model called name (len bytes), by its exact name; NULL if none. */
const struct price *
pricing_find_model(const struct pricebook *pb, const char *name, size_t len)
{
	size_t lo = 0, hi = pb->pb_nmodels, mid;
	int c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = namecmp(name, len, pb->pb_models[mid].p_model);
		if (c == 0)
			return (&pb->pb_models[mid]);
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return (NULL);
}

static const struct pb_alias *
find_alias(const struct pricebook *pb, const char *name, size_t len)
{
	size_t lo = 0, hi = pb->pb_naliases, mid;
	int c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = namecmp(name, len, pb->pb_aliases[mid].a_name);
		if (c == 0)
			return (&pb->pb_aliases[mid]);
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return (NULL);
}

/* A model by its exact name or an alias. */
static const struct price *
find_name(const struct pricebook *pb, const char *name, size_t len)
{
	const struct price *p;
	const struct pb_alias *a;

	if (len == 0)
		return (NULL);
	if ((p = pricing_find_model(pb, name, len)) != NULL)
		return (p);
	if ((a = find_alias(pb, name, len)) != NULL)
		return (a->a_price);
	return (NULL);
}

static int
digits(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (0);
	}
	return (1);
}

/* Month mm and day dd, two digits each, form a plausible date. */
static int
date_ok(const char *mm, const char *dd)
{
	int m = (mm[0] - '0') * 10 + (mm[1] - '0');
	int d = (dd[0] - '0') * 10 + (dd[1] - '0');

	return (m >= 1 && m <= 12 && d >= 1 && d <= 31);
}

/*
 * Length of name without a dated snapshot suffix: "-YYYY-MM-DD" (OpenAI)
 * or "-YYYYMMDD" (Anthropic); len itself when there is none.
 */
static size_t
strip_date(const char *name, size_t len)
{
	const char *s;

	if (len > 11) {
		s = name + len - 11;
		if (s[0] == '-' && digits(s + 1, 4) && s[5] == '-' &&
		    digits(s + 6, 2) && s[8] == '-' && digits(s + 9, 2) &&
		    date_ok(s + 6, s + 9))
			return (len - 11);
	}
	if (len > 9) {
		s = name + len - 9;
		if (s[0] == '-' && digits(s + 1, 8) && date_ok(s + 5, s + 7))
			return (len - 9);
	}
	return (len);
}

/* Public interface. */

/* The file's version string, recorded with every priced call. */
const char *
pricing_version(const struct pricebook *pb)
{
	return (pb->pb_version);
}

/* How many models the book prices (aliases not counted). */
size_t
pricing_count(const struct pricebook *pb)
{
	return (pb->pb_nmodels);
}

/* The i-th model of the table, in name order; NULL past the end. */
const struct price *
pricing_model_at(const struct pricebook *pb, size_t i)
{
	return (i < pb->pb_nmodels ? &pb->pb_models[i] : NULL);
}

/* How many aliases the table has. */
size_t
pricing_alias_count(const struct pricebook *pb)
{
	return (pb->pb_naliases);
}

/*
 * The i-th alias of the table, in name order, and in *to the model it
 * names; NULL past the end.
 */
const char *
pricing_alias_at(const struct pricebook *pb, size_t i, const struct price **to)
{
	if (i >= pb->pb_naliases)
		return (NULL);
	*to = pb->pb_aliases[i].a_price;
	return (pb->pb_aliases[i].a_name);
}

/*
 * The price of a model as a provider or client spelled it, or NULL when
 * the book does not know it. Tried in order: the exact name (model or
 * alias), then without a leading "models/" (Gemini), then without a dated
 * snapshot suffix. Case-sensitive.
 */
const struct price *
pricing_lookup(const struct pricebook *pb, const char *name)
{
	const struct price *p;
	size_t len, base;

	if (pb == NULL || name == NULL)
		return (NULL);
	len = strlen(name);
	if ((p = find_name(pb, name, len)) != NULL)
		return (p);
	if (len > 7 && strncmp(name, "models/", 7) == 0) {
		name += 7;
		len -= 7;
		if ((p = find_name(pb, name, len)) != NULL)
			return (p);
	}
	if ((base = strip_date(name, len)) != len)
		return (find_name(pb, name, base));
	return (NULL);
}

/* Arithmetic. */

typedef __int128 i128; /* GCC and Clang; money sums need > 64 bits */

/* Sums saturate here: anything above is INT64_MAX nano-USD anyway. */
#define PUSD_LIMIT ((i128)INT64_MAX * PUSD_PER_NUSD)

static i128
nonneg(i128 v)
{
	return (v < 0 ? 0 : v);
}

/* a * b for a, b >= 0, saturating at PUSD_LIMIT. */
static i128
mul_sat(i128 a, i128 b)
{
	a = nonneg(a);
	b = nonneg(b);
	if (a == 0 || b == 0)
		return (0);
	if (a > PUSD_LIMIT / b)
		return (PUSD_LIMIT);
	return (a * b);
}

static i128
add_sat(i128 a, i128 b)
{
	return (a > PUSD_LIMIT - b ? PUSD_LIMIT : a + b);
}

/* Round pico-USD up to whole nano-USD. */
static int64_t
pusd_to_nusd(i128 pusd)
{
	i128 n;

	n = (nonneg(pusd) + PUSD_PER_NUSD - 1) / PUSD_PER_NUSD;
	return (n > INT64_MAX ? INT64_MAX : (int64_t)n);
}

/* The rates of the tier named name (len bytes), or NULL if p lists none. */
static const struct price_rates *
tier_rates(const struct price *p, const char *name, size_t len)
{
	size_t t;

	for (t = 0; len > 0 && t < p->p_ntiers; t++) {
		if (namecmp(name, len, p->p_tier_names[t]) == 0)
			return (&p->p_tiers[t]);
	}
	return (NULL);
}

/*
 * The rates a call pays: its service tier's when the model has that tier,
 * else the long-context rates when the input is above the threshold, else
 * the base rates. "default", "standard" and "" are the base tier.
 */
static const struct price_rates *
pricing_rates(const struct price *p, const struct usage *u)
{
	const struct price_rates *r;

	if ((r = tier_rates(p, u->u_service_tier,
		 strnlen(u->u_service_tier, sizeof(u->u_service_tier)))) !=
	    NULL)
		return (r);
	if (p->p_long_threshold > 0 && u->u_input > p->p_long_threshold)
		return (&p->p_long);
	return (&p->p_base);
}

/*
 * The cost of a call in nano-USD, rounded up; -1 without a price. Input
 * counts every prompt token, cached and cache-written ones included, and
 * output counts every generated token, reasoning included (docs/internals/wire.md
 * §1), so reasoning is never priced on its own. Counts a provider reports
 * inconsistently (cached > input, negatives) are clamped at 0 per class.
 */
int64_t
pricing_cost(const struct price *p, const struct usage *u)
{
	const struct price_rates *r;
	i128 cached, write, write1h, write5m, plain, out, sum = 0;

	if (p == NULL || u == NULL)
		return (-1);
	r = pricing_rates(p, u);
	cached = nonneg(u->u_cached);
	write = nonneg(u->u_cache_write);
	write1h = nonneg(u->u_cache_write_1h);
	write5m = nonneg(write - write1h);
	plain = nonneg((i128)u->u_input - cached - write);
	out = nonneg(u->u_output);

	sum = add_sat(sum, mul_sat(plain, r->pr_input));
	sum = add_sat(sum, mul_sat(cached, r->pr_cached));
	sum = add_sat(sum, mul_sat(write5m, r->pr_cache_write));
	sum = add_sat(sum, mul_sat(write1h, r->pr_cache_write_1h));
	sum = add_sat(sum, mul_sat(out, r->pr_output));
	return (pusd_to_nusd(sum));
}

static int64_t
max64(int64_t a, int64_t b)
{
	return (a > b ? a : b);
}

/* The dearest way a prompt token can be billed under r. */
static int64_t
rates_max_input(const struct price_rates *r)
{
	return (max64(max64(r->pr_input, r->pr_cached),
	    max64(r->pr_cache_write, r->pr_cache_write_1h)));
}

/*
 * The most a call can cost before it runs, in nano-USD rounded up; -1
 * without a price. Only the tiers the call can be billed at count: the
 * base rates (a provider may serve any tier request at its standard tier)
 * and the tier in ci_service_tier when the model has one so named, never
 * every tier the model lists: a priority rate must not block ordinary
 * calls on an account that is never billed at priority. Every estimated
 * prompt token is priced at the dearest input rate of those (a cache
 * write included, and the long-context rates once the estimate is above
 * their threshold), and the output bound (the request's, at most the
 * model's max_output_tokens) times n at the dearest output rate of those
 * or of the long-context rates.
 */
int64_t
pricing_worst_case(const struct price *p, const struct call_info *ci)
{
	const struct price_rates *tier;
	int64_t in_rate, out_rate, bound;
	i128 sum;

	if (p == NULL || ci == NULL)
		return (-1);
	in_rate = rates_max_input(&p->p_base);
	out_rate = p->p_base.pr_output;
	tier = tier_rates(p, ci->ci_service_tier,
	    strnlen(ci->ci_service_tier, sizeof(ci->ci_service_tier)));
	if (tier != NULL) {
		in_rate = max64(in_rate, rates_max_input(tier));
		out_rate = max64(out_rate, tier->pr_output);
	}
	if (p->p_long_threshold > 0) {
		out_rate = max64(out_rate, p->p_long.pr_output);
		if (ci->ci_input_estimate > p->p_long_threshold)
			in_rate = max64(in_rate, rates_max_input(&p->p_long));
	}
	bound = ci->ci_max_output >= 0 ? ci->ci_max_output : p->p_max_output;
	/* The model cannot write more than its ceiling, whatever is asked. */
	if (p->p_max_output > 0 && bound > p->p_max_output)
		bound = p->p_max_output;

	sum = mul_sat(ci->ci_input_estimate, in_rate);
	sum = add_sat(sum,
	    mul_sat(mul_sat(bound, ci->ci_n < 1 ? 1 : ci->ci_n), out_rate));
	return (pusd_to_nusd(sum));
}
