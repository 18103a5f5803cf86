/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The price table (config/prices.yaml) and cost arithmetic. Prices are USD
 * per million tokens in the file and are held as integer pico-USD per
 * token (1 USD/M = 1,000,000 pUSD/token), so no float touches money; a
 * call's cost is rounded up to whole nano-USD once, at the end.
 *
 * Model names are normalised before lookup: a "models/" prefix is dropped
 * (Gemini), aliases map to their model, and dated snapshots resolve to
 * their base model (gpt-4o-2024-08-06 -> gpt-4o, claude-sonnet-4-5-20250929
 * -> claude-sonnet-4-5) unless the snapshot has its own entry.
 */
#ifndef TOLLGATE_PRICING_H
#define TOLLGATE_PRICING_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/usage.h"

struct cfgerrs;

/* Prices of one model for one price tier; pico-USD per token. */
struct price_rates {
	int64_t pr_input;
	int64_t pr_cached; /* cache reads */
	int64_t pr_cache_write; /* cache writes, 5 min TTL (or only TTL) */
	int64_t pr_cache_write_1h;
	int64_t pr_output;
};

/* One model's entry. */
struct price {
	char *p_model; /* canonical name */
	struct price_rates p_base;
	int64_t p_long_threshold; /* input tokens above which p_long
				      * applies to the whole call; 0: none */
	struct price_rates p_long;
	struct price_rates *p_tiers; /* service tiers ("flex", "priority") */
	char **p_tier_names;
	size_t p_ntiers;
	int64_t p_max_output; /* the model's output ceiling, for
				      * worst-case reservations */
};

struct pricebook; /* opaque; immutable once loaded */

/* load.c */
struct pricebook *pricing_load(const char *, struct cfgerrs *);
void pricing_free(struct pricebook *);

/* external.c */
int pricing_external(
    const struct pricebook *, const char *, const char *, int64_t *);
int pricing_external_name_ok(const char *);

/* pricing.c */
const char *pricing_version(const struct pricebook *);
const struct price *pricing_lookup(const struct pricebook *, const char *);
int64_t pricing_cost(const struct price *, const struct usage *);
int64_t pricing_worst_case(const struct price *, const struct call_info *);
size_t pricing_count(const struct pricebook *);
const struct price *pricing_find_model(
    const struct pricebook *, const char *, size_t);
const struct price *pricing_model_at(const struct pricebook *, size_t);
size_t pricing_alias_count(const struct pricebook *);
const char *pricing_alias_at(
    const struct pricebook *, size_t, const struct price **);

/* import.c: the exact decimal conversions of tollgate prices import */
int64_t pricing_import_usd(double, int *, const char **);
void pricing_import_format(int64_t, char *, size_t);

/* family.c */
size_t pricing_family_max(
    const struct pricebook *, const char *, struct price *, char *, size_t);

#endif
