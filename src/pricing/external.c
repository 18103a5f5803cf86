/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The price file's external: table, the prices of costs that are not LLM
 * calls (a search API, a tool, compute minutes): source -> unit -> USD
 * per unit, written as a plain decimal with at most nine places and read
 * digit by digit into integer nano-USD. POST /v1/usage prices the units
 * it is given here (pricing_external). Loaded with the rest of the book
 * (load.c), checked the same way: every mistake at its file:line:col.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/pricing.h"
#include "tollgate/util.h"
#include "tollgate/yaml.h"

#include "pricing_int.h"

/* Highest price of one unit, USD; keeps units * price bounded. */
#define EXTERNAL_PRICE_MAX_USD 1000000
#define EXTERNAL_DECIMALS 9
#define NUSD_PER_USD 1000000000LL
/* Longest source and unit names (the ledger's provider and model). */
#define EXTERNAL_NAME_MAX 64

/* A source or unit name: [a-z0-9_.-], 1 to EXTERNAL_NAME_MAX bytes. */
int
pricing_external_name_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > EXTERNAL_NAME_MAX)
		return (0);
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
			(s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
			s[i] == '.' || s[i] == '-'))
			return (0);
	return (1);
}

/* An unquoted decimal USD amount per unit into nano-USD; 0 or -1. */
static int
unit_usd(const struct ynode *n, int64_t *out, const char **why)
{
	const char *s;
	int64_t whole = 0, frac = 0;
	int nwhole = 0, nfrac = 0;

	*why = NULL;
	if (n->yn_type != YN_SCALAR || !n->yn_plain || ynode_is_null(n))
		return (-1);
	s = n->yn_str;
	if (*s == '-') {
		*why = "must not be negative";
		return (-1);
	}
	for (; *s >= '0' && *s <= '9'; s++, nwhole++)
		if (whole <= EXTERNAL_PRICE_MAX_USD)
			whole = whole * 10 + (*s - '0');
	if (nwhole == 0)
		return (-1);
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9'; s++, nfrac++)
			if (nfrac < EXTERNAL_DECIMALS)
				frac = frac * 10 + (*s - '0');
		if (nfrac == 0)
			return (-1);
	}
	if (*s != '\0')
		return (-1);
	if (nfrac > EXTERNAL_DECIMALS) {
		*why = "at most 9 decimal places (USD per unit)";
		return (-1);
	}
	for (; nfrac < EXTERNAL_DECIMALS; nfrac++)
		frac *= 10;
	if (whole > EXTERNAL_PRICE_MAX_USD ||
	    (whole == EXTERNAL_PRICE_MAX_USD && frac != 0)) {
		*why = "must be at most 1000000 (USD per unit)";
		return (-1);
	}
	*out = whole * NUSD_PER_USD + frac;
	return (0);
}

/* What a source's units are walked with. */
struct ext_walk {
	struct pricebook *xw_book;
	const char *xw_source;
};

/* One unit: price under external.SOURCE. */
static void
unit_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	struct ext_walk *xw = arg;
	struct pricebook *pb = xw->xw_book;
	struct pb_external *x;
	const char *why;
	int64_t nusd;

	if (!pricing_external_name_ok(en->en_key->yn_str)) {
		cfg_error(cx, en->en_key,
		    "%s: bad unit name '%s' (a-z, 0-9, '_', '.', '-'; at most "
		    "%d characters)",
		    en->en_path, en->en_name, EXTERNAL_NAME_MAX);
		return;
	}
	if (unit_usd(en->en_val, &nusd, &why) == -1) {
		cfg_error(cx, en->en_val, "%s: %s", en->en_where,
		    why != NULL
			? why
			: "expected a price in USD per unit, e.g. 0.005");
		return;
	}
	pb->pb_ext =
	    xreallocarray(pb->pb_ext, pb->pb_next + 1, sizeof(*pb->pb_ext));
	x = &pb->pb_ext[pb->pb_next++];
	x->x_source = xstrdup(xw->xw_source);
	x->x_unit = xstrdup(en->en_key->yn_str);
	x->x_nusd = nusd;
}

/* One source: a mapping of unit -> price. */
static void
source_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	struct ext_walk xw = {arg, en->en_key->yn_str};

	if (!pricing_external_name_ok(en->en_key->yn_str)) {
		cfg_error(cx, en->en_key,
		    "%s: bad source name '%s' (a-z, 0-9, '_', '.', '-'; at "
		    "most %d characters)",
		    en->en_path, en->en_name, EXTERNAL_NAME_MAX);
		return;
	}
	if (en->en_val->yn_type != YN_MAP || en->en_val->yn_nkids < 2) {
		cfg_error(cx, en->en_val,
		    "%s: expected a mapping of unit: USD per unit",
		    en->en_where);
		return;
	}
	cfg_map_each(
	    cx, en->en_where, en->en_val, "unit: USD per unit", unit_cb, &xw);
}

static int
ext_cmp(const void *a, const void *b)
{
	const struct pb_external *x = a, *y = b;
	int c;

	if ((c = strcmp(x->x_source, y->x_source)) != 0)
		return (c);
	return (strcmp(x->x_unit, y->x_unit));
}

/* What pricing_external looks for. */
struct ext_key {
	const char *k_source;
	const char *k_unit;
};

static int
key_cmp(const void *a, const void *b)
{
	const struct ext_key *k = a;
	const struct pb_external *x = b;
	int c;

	if ((c = strcmp(k->k_source, x->x_source)) != 0)
		return (c);
	return (strcmp(k->k_unit, x->x_unit));
}

/* external: read into pb, sorted for pricing_external. */
void
pricing_external_load(struct cfgctx *cx, const char *path,
    const struct ynode *n, struct pricebook *pb)
{
	if (ynode_is_null(n))
		return;
	if (n->yn_type != YN_MAP) {
		cfg_error(cx, n,
		    "%s: expected a mapping of source: {unit: USD per unit}",
		    path);
		return;
	}
	cfg_map_each(cx, path, n, "source: units", source_cb, pb);
	if (pb->pb_next > 1)
		qsort(pb->pb_ext, pb->pb_next, sizeof(*pb->pb_ext), ext_cmp);
}

/* Free what pricing_external_load kept. */
void
pricing_external_free(struct pricebook *pb)
{
	size_t i;

	for (i = 0; i < pb->pb_next; i++) {
		free(pb->pb_ext[i].x_source);
		free(pb->pb_ext[i].x_unit);
	}
	free(pb->pb_ext);
	pb->pb_ext = NULL;
	pb->pb_next = 0;
}

/*
 * The price of one unit of source in nano-USD, into *nusd: 0, or -1 when
 * the book's external: table does not list it.
 */
int
pricing_external(const struct pricebook *pb, const char *source,
    const char *unit, int64_t *nusd)
{
	const struct ext_key key = {source, unit};
	const struct pb_external *x;

	if (pb->pb_next == 0 ||
	    (x = bsearch(&key, pb->pb_ext, pb->pb_next, sizeof(*pb->pb_ext),
		 key_cmp)) == NULL)
		return (-1);
	*nusd = x->x_nusd;
	return (0);
}
