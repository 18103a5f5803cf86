/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to the pricing module (src/pricing/): the loaded book, which
 * load.c builds from prices.yaml and frees, and pricing.c searches and
 * prices calls with. Nothing here is seen outside src/pricing/; the public
 * contract is include/tollgate/pricing.h.
 */
#ifndef TOLLGATE_PRICING_INT_H
#define TOLLGATE_PRICING_INT_H

#include <stddef.h>

#include "tollgate/pricing.h"

/* Another name for a model. */
struct pb_alias {
	char *a_name;
	const struct price *a_price; /* borrowed from pb_models */
};

/* One unit of an external source and its price (external:). */
struct pb_external {
	char *x_source;
	char *x_unit;
	int64_t x_nusd; /* nano-USD per unit */
};

/* The loaded table; owns every string and array below. */
struct pricebook {
	char *pb_version;
	struct pb_external *pb_ext; /* sorted by source, then unit */
	size_t pb_next;
	struct price *pb_models; /* sorted by p_model */
	size_t pb_nmodels;
	struct pb_alias *pb_aliases; /* sorted by a_name */
	size_t pb_naliases;
};

struct cfgctx;
struct ynode;

/* external.c */
void pricing_external_load(
    struct cfgctx *, const char *, const struct ynode *, struct pricebook *);
void pricing_external_free(struct pricebook *);

#endif
