/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fleet.c's pure parts, as GET /v1/fleet writes them: money as the rest of
 * the admin API writes it (fleet_json_money, a table of named amounts), a
 * heartbeat read back from Redis whose money is written again from its
 * exact nano-dollars (beat_money, a table of named heartbeats, hostile
 * ones included), and what an instance without fleet: answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The statics under test; the core library's fleet.o is not linked. */
#include "../../src/fleet/fleet.c"

/* The object o printed, compared with want. */
static void
assert_json(cJSON *o, const char *want)
{
	char *s = cJSON_PrintUnformatted(o);

	assert_non_null(s);
	if (strcmp(s, want) != 0) {
		print_error("got  %s\nwant %s\n", s, want);
		cJSON_free(s);
		fail();
	}
	cJSON_free(s);
}

static const struct money_case {
	const char *name;
	int64_t nusd;
	const char *want;
} money_cases[] = {
    {"zero", 0, "{\"x_usd\":0.000000000,\"x_nusd\":0}"},
    {"one nano", 1, "{\"x_usd\":0.000000001,\"x_nusd\":1}"},
    {"a lease", 1500000000, "{\"x_usd\":1.500000000,\"x_nusd\":1500000000}"},
    {"negative", -250000001, "{\"x_usd\":-0.250000001,\"x_nusd\":-250000001}"},
    {"2^53", 9007199254740992LL,
	"{\"x_usd\":9007199.254740992,\"x_nusd\":9007199254740992}"},
    {"int64 max", INT64_MAX,
	"{\"x_usd\":9223372036.854775807,\"x_nusd\":9223372036854775807}"},
};

static void
test_money(void **state)
{
	size_t i;
	cJSON *o;

	(void)state;
	for (i = 0; i < nitems(money_cases); i++) {
		o = cJSON_CreateObject();
		fleet_json_money(o, "x", money_cases[i].nusd);
		print_message("%s\n", money_cases[i].name);
		assert_json(o, money_cases[i].want);
		cJSON_Delete(o);
	}
}

static const struct beat_case {
	const char *name;
	const char *in; /* the heartbeat as Redis holds it */
	const char *want; /* after beat_money */
} beat_cases[] = {
    {"doubles made exact",
	"{\"leases\":1,\"leased_usd\":1.2,\"leased_nusd\":1200000000,"
	"\"unreported_usd\":0,\"unreported_nusd\":300000001}",
	"{\"leases\":1,\"leased_usd\":1.200000000,\"leased_nusd\":1200000000,"
	"\"unreported_usd\":0.300000001,\"unreported_nusd\":300000001}"},
    {"_usd missing is added", "{\"leased_nusd\":5}",
	"{\"leased_usd\":0.000000005,\"leased_nusd\":5}"},
    {"_usd alone is left", "{\"leased_usd\":\"1.2\"}",
	"{\"leased_usd\":\"1.2\"}"},
    {"not a number is left", "{\"leased_nusd\":\"12\",\"a\":null}",
	"{\"leased_nusd\":\"12\",\"a\":null}"},
    {"bare _nusd is left", "{\"_nusd\":3}", "{\"_nusd\":3}"},
    {"past 2^53 is left", "{\"x_nusd\":1e300}", "{\"x_nusd\":1e+300}"},
    {"negative", "{\"x_nusd\":-7}", "{\"x_usd\":-0.000000007,\"x_nusd\":-7}"},
    {"long name is left",
	"{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_nusd\":1}",
	"{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_nusd\":1}"},
    {"no money", "{\"version\":\"0.1.0\",\"heartbeat_ms\":1}",
	"{\"version\":\"0.1.0\",\"heartbeat_ms\":1}"},
    {"empty", "{}", "{}"},
};

static void
test_beat_money(void **state)
{
	size_t i;
	cJSON *o;

	(void)state;
	for (i = 0; i < nitems(beat_cases); i++) {
		print_message("%s\n", beat_cases[i].name);
		o = cJSON_Parse(beat_cases[i].in);
		assert_non_null(o);
		beat_money(o);
		assert_json(o, beat_cases[i].want);
		cJSON_Delete(o);
	}
}

/* Many money fields: the first BEAT_MONEY_MAX are made exact, none lost. */
static void
test_beat_money_bounded(void **state)
{
	char in[1024], name[16], want[32];
	size_t i, n = 0;
	cJSON *o, *it;

	(void)state;
	n += (size_t)snprintf(in + n, sizeof(in) - n, "{");
	for (i = 0; i < BEAT_MONEY_MAX + 4; i++)
		n += (size_t)snprintf(in + n, sizeof(in) - n,
		    "%s\"m%zu_nusd\":%zu", i > 0 ? "," : "", i, i + 1);
	snprintf(in + n, sizeof(in) - n, "}");
	o = cJSON_Parse(in);
	assert_non_null(o);
	beat_money(o);
	for (i = 0; i < BEAT_MONEY_MAX + 4; i++) {
		snprintf(name, sizeof(name), "m%zu_nusd", i);
		it = cJSON_GetObjectItemCaseSensitive(o, name);
		if (i < BEAT_MONEY_MAX) {
			/* Written again, as fleet_json_money writes it. */
			snprintf(want, sizeof(want), "%zu", i + 1);
			assert_true(cJSON_IsRaw(it));
			assert_string_equal(it->valuestring, want);
		} else {
			assert_true(cJSON_IsNumber(it));
			assert_int_equal(
			    (int64_t)it->valuedouble, (int64_t)(i + 1));
		}
		snprintf(name, sizeof(name), "m%zu_usd", i);
		it = cJSON_GetObjectItemCaseSensitive(o, name);
		if (i < BEAT_MONEY_MAX) {
			snprintf(want, sizeof(want), "0.%09zu", i + 1);
			assert_true(cJSON_IsRaw(it));
			assert_string_equal(it->valuestring, want);
		} else
			assert_null(it);
	}
	cJSON_Delete(o);
}

/* An instance without fleet: says so, and counts nothing. */
static void
test_off(void **state)
{
	struct fleet_stats fs;
	cJSON *o;

	(void)state;
	assert_int_equal(fleet_state(), FLEET_OFF);
	assert_null(fleet_instance());
	assert_false(fleet_refuses_capped());
	o = fleet_json();
	assert_json(o, "{\"enabled\":false}");
	cJSON_Delete(o);
	memset(&fs, 0xff, sizeof(fs));
	fleet_get_stats(&fs);
	assert_int_equal(fs.fs_state, FLEET_OFF);
	assert_int_equal(fs.fs_commands, 0);
	assert_int_equal(fs.fs_syncs, 0);
	assert_int_equal(fs.fs_leased_nusd, 0);
	assert_int_equal(fs.fs_unreported_nusd, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_money),
	    cmocka_unit_test(test_beat_money),
	    cmocka_unit_test(test_beat_money_bounded),
	    cmocka_unit_test(test_off),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
