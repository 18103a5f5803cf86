/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pricing/import.c: the conversion of LiteLLM's USD-per-token JSON numbers
 * into prices.yaml's USD per million, as a table of named JSON texts read
 * by cJSON (as the importer reads them) with the decimal each must give;
 * every whole pico-USD price written in exponent form comes back exactly;
 * values that are not prices are refused.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "tollgate/pricing.h"
#include "tollgate/util.h"

struct conv_case {
	const char *name;
	const char *json; /* USD per token, as the file writes it */
	const char *want; /* USD per million, as prices.yaml writes it */
	int rounded;
};

static const struct conv_case conv_cases[] = {
    {"gpt-4o input", "2.5e-06", "2.50", 0},
    {"tenth", "1e-07", "0.10", 0},
    {"float noise", "3.0000000000000004e-07", "0.30", 0},
    {"four places", "1.5625e-06", "1.5625", 0},
    {"three places", "6.25e-07", "0.625", 0},
    {"plain decimal", "0.0000025", "2.50", 0},
    {"1.1", "1.1e-06", "1.10", 0},
    {"0.275", "2.75e-07", "0.275", 0},
    {"7.8125", "7.8125e-06", "7.8125", 0},
    {"whole", "4e-05", "40.00", 0},
    {"one pico", "1e-12", "0.000001", 0},
    {"zero", "0", "0", 0},
    {"zero float", "0.0", "0", 0},
    {"ceiling", "1", "1000000.00", 0},
    {"six places", "1.234567e-06", "1.234567", 0},
    {"below a pico rounds up", "1.5e-12", "0.000002", 1},
    {"a third rounds up", "3.3333333333333335e-07", "0.333334", 1},
    {"far below a pico", "1e-30", "0.000001", 1},
};

static int64_t
conv(const char *json, int *rounded, const char **why)
{
	cJSON *n = cJSON_Parse(json);
	int64_t v;

	assert_non_null(n);
	assert_true(cJSON_IsNumber(n));
	v = pricing_import_usd(n->valuedouble, rounded, why);
	cJSON_Delete(n);
	return (v);
}

static void
test_import_table(void **state)
{
	const char *why = NULL;
	char buf[32];
	int64_t v;
	size_t i;
	int rounded;

	(void)state;
	for (i = 0; i < nitems(conv_cases); i++) {
		const struct conv_case *c = &conv_cases[i];

		v = conv(c->json, &rounded, &why);
		pricing_import_format(v, buf, sizeof(buf));
		if (strcmp(buf, c->want) != 0 || rounded != c->rounded)
			print_error("%s: %s gave %s (rounded %d), want %s "
				    "(rounded %d)\n",
			    c->name, c->json, buf, rounded, c->want,
			    c->rounded);
		assert_string_equal(buf, c->want);
		assert_int_equal(rounded, c->rounded);
	}
}

/* Every whole pico-USD price, written N e-12, comes back as N. */
static void
test_import_exact(void **state)
{
	const char *why = NULL;
	char json[48];
	int64_t n, v;
	uint64_t x = 88172645463325252ULL;
	int i, rounded;

	(void)state;
	for (i = 0; i < 200000; i++) {
		/* xorshift: prices from 1 pUSD to $1 per token. */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		n = (int64_t)(x % 1000000000000ULL) + 1;
		if (i % 4 == 0)
			n -= n % 1000; /* typical prices end in zeros */
		if (n <= 0)
			n = 1;
		snprintf(json, sizeof(json), "%llde-12", (long long)n);
		v = conv(json, &rounded, &why);
		if (v != n || rounded)
			print_error("%s gave %lld (rounded %d)\n", json,
			    (long long)v, rounded);
		assert_int_equal(v, n);
		assert_int_equal(rounded, 0);
	}
}

static void
test_import_refused(void **state)
{
	const char *why = NULL;
	int rounded;

	(void)state;
	assert_int_equal(pricing_import_usd(NAN, &rounded, &why), -1);
	assert_string_equal(why, "is not a finite number");
	assert_int_equal(pricing_import_usd(INFINITY, &rounded, &why), -1);
	assert_int_equal(pricing_import_usd(-2.5e-06, &rounded, &why), -1);
	assert_string_equal(why, "is negative");
	assert_int_equal(pricing_import_usd(1.000001, &rounded, &why), -1);
	assert_non_null(strstr(why, "above 1 USD"));
	assert_int_equal(conv("1e999", &rounded, &why), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_import_table),
	    cmocka_unit_test(test_import_exact),
	    cmocka_unit_test(test_import_refused),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
