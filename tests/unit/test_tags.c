/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tags leaf: every tag's name and header round-trip through
 * tag_lookup, and tag_value_ok takes printable values of 1 to
 * TAG_VALUE_MAX bytes and nothing with a space, a control byte, a
 * non-ASCII byte or a policy wildcard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tollgate/tags.h"

static void
test_names_round_trip(void **state)
{
	int t;

	(void)state;
	for (t = 0; t < TAG_MAX; t++) {
		assert_int_equal(tag_lookup(tag_name(t)), t);
		assert_true(strncmp(tag_header(t), "X-Tollgate-", 11) == 0);
	}
	assert_string_equal(tag_name(TAG_AGENT_CLASS), "agent_class");
	assert_string_equal(tag_name(TAG_MAX), "?");
	assert_string_equal(tag_header(TAG_MAX), "?");
	assert_int_equal(tag_lookup("Team"), -1);
	assert_int_equal(tag_lookup(""), -1);
}

static void
test_value_ok(void **state)
{
	static const struct {
		const char *v;
		int ok;
	} cases[] = {
	    {"platform", 1},
	    {"a-b_c.d/e:f", 1},
	    {"", 0},
	    {"two words", 0},
	    {"tab\there", 0},
	    {"team*", 0},
	    {"te?m", 0},
	    {"caf\xc3\xa9", 0},
	    {"del\x7f", 0},
	};
	char big[TAG_VALUE_MAX + 2];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(
		    tag_value_ok(cases[i].v, strlen(cases[i].v)), cases[i].ok);
	memset(big, 'x', sizeof(big));
	assert_int_equal(tag_value_ok(big, TAG_VALUE_MAX), 1);
	assert_int_equal(tag_value_ok(big, TAG_VALUE_MAX + 1), 0);
	/* The length given is what counts, not a NUL further on. */
	assert_int_equal(tag_value_ok("ab\0c", 4), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names_round_trip),
	    cmocka_unit_test(test_value_ok),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
