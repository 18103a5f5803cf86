/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The exact decimal conversions of tollgate prices import: a price list's
 * USD per token (a JSON number, as cJSON holds it) into whole pico-USD per
 * token, and pico-USD per token back into prices.yaml's decimal USD per
 * million tokens. Pure arithmetic on prices, no I/O and no config; the
 * command itself is src/ops/cli_prices.c.
 */
#include <errno.h>
#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tollgate/pricing.h"

#define PUSD_PER_USD_PER_M 1000000LL /* pUSD/token for 1 USD/M */

/*
 * A price in USD per token, as cJSON read it, in whole pico-USD per
 * token, rounded up. cJSON keeps only the double, so its decimal digits
 * are recovered by printing 15 significant digits (DBL_DIG): every JSON
 * number of up to 15 significant digits comes back exactly as written,
 * 2.5e-06 as 2.50000000000000e-06, never 2.4999999999999998e-06. The
 * decimal point is then moved in integers. Digits below a pico-USD (a
 * price that prices.yaml cannot hold) round up and set *rounded: a bill
 * may be over by less than a millionth of a dollar per million tokens,
 * never under. Returns -1 with *why set for a value that is not a price.
 */
int64_t
pricing_import_usd(double v, int *rounded, const char **why)
{
	char buf[64], *p, *end;
	uint64_t digits = 0, div = 1, q, r;
	long e;
	int i, shift;

	*rounded = 0;
	/* No libm: NaN is the one value unequal to itself. */
	if (v != v || v > DBL_MAX || v < -DBL_MAX) {
		*why = "is not a finite number";
		return (-1);
	}
	if (v < 0) {
		*why = "is negative";
		return (-1);
	}
	if (v == 0)
		return (0);
	if (v > 1.0) {
		*why = "is above 1 USD per token (1,000,000 per million)";
		return (-1);
	}
	snprintf(buf, sizeof(buf), "%.14e", v);
	/* d.dddddddddddddde[+-]XX: 15 digits, then the exponent. */
	for (p = buf; *p != 'e' && *p != '\0'; p++) {
		if (*p >= '0' && *p <= '9')
			digits = digits * 10 + (uint64_t)(*p - '0');
	}
	if (*p != 'e') {
		*why = "cannot be read as a decimal";
		return (-1);
	}
	errno = 0;
	e = strtol(p + 1, &end, 10);
	if (errno != 0 || *end != '\0') {
		*why = "cannot be read as a decimal";
		return (-1);
	}
	/*
	 * digits * 10^(e - 14) USD is digits * 10^(e - 2) pUSD; with v <= 1,
	 * e <= 0, so it is always a division by 10^(2 - e).
	 */
	shift = (int)(2 - e);
	if (shift > 19) {
		*rounded = 1;
		return (1); /* below a pico-USD: the smallest price there is */
	}
	for (i = 0; i < shift; i++)
		div *= 10;
	q = digits / div;
	r = digits % div;
	if (r != 0) {
		*rounded = 1;
		q++;
	}
	return ((int64_t)q);
}

/* pUSD per token as prices.yaml writes USD per million: 2.50, 0.0625. */
void
pricing_import_format(int64_t pusd, char *buf, size_t len)
{
	int64_t whole = pusd / PUSD_PER_USD_PER_M;
	int64_t frac = pusd % PUSD_PER_USD_PER_M;
	char f[8];
	size_t n;

	if (pusd == 0) {
		snprintf(buf, len, "0");
		return;
	}
	snprintf(f, sizeof(f), "%06lld", (long long)frac);
	/* Two places at least, as the shipped table writes them. */
	for (n = 6; n > 2 && f[n - 1] == '0'; n--)
		;
	f[n] = '\0';
	snprintf(buf, len, "%lld.%s", (long long)whole, f);
}
