/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The price of a model the table does not know, from the models it does:
 * its family's dearest rates (unknown_models.action: family_max).
 *
 * A name is cut into tokens at '-' and '.' ("gpt-5.6-luna" is gpt, 5, 6,
 * luna). Its family is the priced models that share the most leading
 * whole tokens with it, at least one: gpt-5.6-luna shares "gpt-5" with
 * gpt-5, gpt-5-mini and gpt-5.4, gpt-9-preview only "gpt" with every gpt-
 * model, claude-opus-5 "claude-opus" with the Opus models. A name that
 * shares no first token with any priced model (o5, llama-4) belongs to
 * the whole table, family "*". The family's price takes, class by class
 * (input, cache reads, both cache writes, output, max_output_tokens), the
 * highest rate any member has at any tier or context length, so a call
 * priced by it is never cheaper than it would be as any member.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/pricing.h"

#include "pricing_int.h"

static int
is_sep(char c)
{
	return (c == '-' || c == '.');
}

/*
 * How many leading whole tokens a (alen bytes) and b share; *end is the
 * length of a's part that they make up.
 */
static size_t
common_tokens(const char *a, size_t alen, const char *b, size_t *end)
{
	size_t i = 0, j, n = 0, blen = strlen(b);

	*end = 0;
	while (i < alen && i < blen) {
		for (j = i; j < alen && !is_sep(a[j]); j++)
			;
		if (j == i || j > blen || memcmp(a + i, b + i, j - i) != 0 ||
		    (j < blen && !is_sep(b[j])))
			return (n); /* a's token [i, j) is not b's */
		n++;
		*end = j;
		if (j == alen || j == blen || a[j] != b[j])
			return (n);
		i = j + 1; /* past the same separator */
	}
	return (n);
}

static int64_t
max64(int64_t a, int64_t b)
{
	return (a > b ? a : b);
}

static void
rates_max(struct price_rates *m, const struct price_rates *r)
{
	m->pr_input = max64(m->pr_input, r->pr_input);
	m->pr_cached = max64(m->pr_cached, r->pr_cached);
	m->pr_cache_write = max64(m->pr_cache_write, r->pr_cache_write);
	m->pr_cache_write_1h =
	    max64(m->pr_cache_write_1h, r->pr_cache_write_1h);
	m->pr_output = max64(m->pr_output, r->pr_output);
}

/* Fold every rate of p into out. */
static void
price_max(struct price *out, const struct price *p)
{
	size_t t;

	rates_max(&out->p_base, &p->p_base);
	if (p->p_long_threshold > 0)
		rates_max(&out->p_base, &p->p_long);
	for (t = 0; t < p->p_ntiers; t++)
		rates_max(&out->p_base, &p->p_tiers[t]);
	out->p_max_output = max64(out->p_max_output, p->p_max_output);
}

/*
 * The price of name's family into out (base rates only, every one the
 * family's highest; p_model is left NULL) and the family's name into
 * family ("gpt-5", or "*" for the whole table). Returns how many priced
 * models the family has: 0 when the book is empty or missing.
 */
size_t
pricing_family_max(const struct pricebook *pb, const char *name,
    struct price *out, char *family, size_t familylen)
{
	size_t i, len, end, best = 0, best_end = 0, n = 0, c;

	memset(out, 0, sizeof(*out));
	if (familylen > 0)
		family[0] = '\0';
	if (pb == NULL || pb->pb_nmodels == 0)
		return (0);
	if (name == NULL)
		name = "";
	if (strncmp(name, "models/", 7) == 0)
		name += 7; /* Gemini's resource form */
	len = strlen(name);
	for (i = 0; i < pb->pb_nmodels; i++) {
		c = common_tokens(name, len, pb->pb_models[i].p_model, &end);
		if (c > best) {
			best = c;
			best_end = end;
		}
	}
	for (i = 0; i < pb->pb_nmodels; i++) {
		if (best > 0 &&
		    common_tokens(name, len, pb->pb_models[i].p_model, &end) <
			best)
			continue;
		price_max(out, &pb->pb_models[i]);
		n++;
	}
	if (best == 0)
		snprintf(family, familylen, "*");
	else
		snprintf(family, familylen, "%.*s", (int)best_end, name);
	return (n);
}
