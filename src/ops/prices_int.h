/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to tollgate prices import (src/ops/): the models read from a
 * LiteLLM price list, which prices_read.c builds and cli_prices.c compares
 * with the current table and writes as prices.yaml.
 */
#ifndef TOLLGATE_OPS_PRICES_INT_H
#define TOLLGATE_OPS_PRICES_INT_H

#include <stddef.h>

#include "tollgate/pricing.h"

/* One model read from the file, or kept from the current table. */
struct imp_model {
	char *im_name;
	const char *im_group; /* "openai", "anthropic", "gemini", "kept" */
	const char *im_mode; /* "chat", "responses", ... */
	struct price im_p; /* owns p_tiers and p_tier_names */
	int im_rounded; /* a price had digits below a pico-USD */
	int im_reasoning; /* reasoning priced above output: output raised */
	int im_prefixed; /* read as gemini/NAME */
};

struct imp_set {
	struct imp_model *is_v;
	size_t is_n;
	size_t is_cap;
	size_t is_skipped; /* other providers and modes */
	size_t is_snapshots; /* dated twins of a model with equal prices */
	size_t is_errors;
	const char *is_file;
};

/* prices_read.c */
int imp_load(struct imp_set *, const char *);
void imp_model_free(struct imp_model *);
struct imp_model *imp_find(struct imp_set *, const char *);
struct imp_model *imp_find_n(struct imp_set *, const char *, size_t);
const struct price_rates *imp_tier_of(const struct price *, const char *);
int imp_price_equal(const struct price *, const struct price *);
int imp_cmp_name(const void *, const void *);
int imp_cmp_group(const void *, const void *);

#endif
