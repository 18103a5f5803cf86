/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util.c: the UTF-8 check every recorded value passes, as a table of named
 * byte strings (RFC 3629's edges: overlongs, surrogates, the top of the
 * range, truncated sequences, NUL), the same table for utf8_seqlen and
 * the U+FFFD copy every printed value gets, and strcopy's cut.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgate/util.h"

struct utf8_case {
	const char *name;
	const char *bytes;
	size_t len;
	int valid;
};

#define U(name, lit, valid)                                                    \
	{                                                                      \
		name, lit, sizeof(lit) - 1, valid                              \
	}

static const struct utf8_case utf8_cases[] = {
    U("empty", "", 1),
    U("ascii", "gpt-4o-mini", 1),
    U("two bytes", "caf\xc3\xa9", 1),
    U("three bytes", "\xe2\x82\xac", 1),
    U("four bytes", "\xf0\x9f\x98\x80", 1),
    U("top of the range", "\xf4\x8f\xbf\xbf", 1),
    U("last before surrogates", "\xed\x9f\xbf", 1),
    U("first after surrogates", "\xee\x80\x80", 1),
    U("0xff 0xfe", "gpt\xff\xfe", 0),
    U("lone continuation", "a\x80", 0),
    U("overlong slash", "\xc0\xaf", 0),
    U("overlong c1", "\xc1\xbf", 0),
    U("overlong three", "\xe0\x80\xaf", 0),
    U("overlong four", "\xf0\x80\x80\xaf", 0),
    U("surrogate", "\xed\xa0\x80", 0),
    U("above U+10FFFF", "\xf4\x90\x80\x80", 0),
    U("f5", "\xf5\x80\x80\x80", 0),
    U("truncated two", "ab\xc3", 0),
    U("truncated three", "\xe2\x82", 0),
    U("truncated four", "\xf0\x9f\x98", 0),
    U("bad continuation", "\xe2\x28\xa1", 0),
    U("NUL inside", "gpt-4o\0-mini", 0),
};

static void
test_utf8_valid(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < nitems(utf8_cases); i++) {
		const struct utf8_case *c = &utf8_cases[i];

		if (utf8_valid(c->bytes, c->len) != c->valid)
			fail_msg("%s: utf8_valid is %d, want %d", c->name,
			    !c->valid, c->valid);
	}
}

/* utf8_seqlen walks a string exactly as utf8_valid judges it. */
static void
test_utf8_seqlen(void **state)
{
	size_t i, k, n;
	int ok;

	(void)state;
	for (i = 0; i < nitems(utf8_cases); i++) {
		const struct utf8_case *c = &utf8_cases[i];

		ok = 1;
		for (k = 0; k < c->len; k += n) {
			if ((n = utf8_seqlen(c->bytes + k, c->len - k)) == 0 ||
			    c->bytes[k] == '\0') {
				ok = 0;
				break;
			}
		}
		if (ok != c->valid)
			fail_msg("%s: utf8_seqlen walk says %d, want %d",
			    c->name, ok, c->valid);
	}
	assert_int_equal(utf8_seqlen("\xe2\x82\xac", 2), 0);
	assert_int_equal(utf8_seqlen("\xe2\x82\xac", 3), 3);
	assert_int_equal(utf8_seqlen("a", 0), 0);
}

/* Each byte that is not UTF-8 becomes U+FFFD; valid text is kept. */
static void
test_utf8_dup(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"", ""},
	    {"gpt-4o-mini", "gpt-4o-mini"},
	    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
		"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
	    {"gpt\xff\xfe", "gpt" UTF8_REPLACEMENT UTF8_REPLACEMENT},
	    {"\xe2\x82", UTF8_REPLACEMENT UTF8_REPLACEMENT},
	    {"a\xc0\xaf"
	     "b",
		"a" UTF8_REPLACEMENT UTF8_REPLACEMENT "b"},
	    {"\xed\xa0\x80",
		UTF8_REPLACEMENT UTF8_REPLACEMENT UTF8_REPLACEMENT},
	    {"{\"r\":\"\x9b\"}", "{\"r\":\"" UTF8_REPLACEMENT "\"}"},
	};
	size_t i;
	char *s;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		s = utf8_dup(cases[i].in);
		if (strcmp(s, cases[i].out) != 0)
			fail_msg(
			    "case %zu: '%s', want '%s'", i, s, cases[i].out);
		assert_true(utf8_valid(s, strlen(s)));
		free(s);
	}
}

/*
 * utf8_copy repairs like utf8_dup and cuts between characters, never
 * inside one, and says whether the copy is the value as given.
 */
static void
test_utf8_copy(void **state)
{
	static const struct {
		const char *name, *in;
		size_t size;
		const char *out;
		int exact;
	} cases[] = {
	    {"fits", "gpt-4o", 16, "gpt-4o", 1},
	    {"empty", "", 4, "", 1},
	    {"exactly fits", "abc", 4, "abc", 1},
	    {"ascii cut", "abcdef", 4, "abc", 0},
	    {"two-byte cut before", "ab\xc3\xa9", 4, "ab", 0},
	    {"three-byte cut before", "a\xe2\x82\xac", 4, "a", 0},
	    {"four-byte cut before", "\xf0\x9f\x98\x80", 4, "", 0},
	    {"four-byte fits", "\xf0\x9f\x98\x80", 5, "\xf0\x9f\x98\x80", 1},
	    {"stray byte", "gpt\xff", 16, "gpt" UTF8_REPLACEMENT, 0},
	    {"replacement cut", "ab\xff", 5, "ab", 0},
	    {"sequence cut short", "x\xe2\x82", 16,
		"x" UTF8_REPLACEMENT UTF8_REPLACEMENT, 0},
	    {"size 1", "abc", 1, "", 0},
	};
	char buf[32];
	size_t i;
	int exact;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		memset(buf, 'Z', sizeof(buf));
		exact = utf8_copy(buf, cases[i].size, cases[i].in);
		if (strcmp(buf, cases[i].out) != 0 || exact != cases[i].exact)
			fail_msg("%s: '%s' (%d), want '%s' (%d)", cases[i].name,
			    buf, exact, cases[i].out, cases[i].exact);
		assert_true(utf8_valid(buf, strlen(buf)));
		assert_true(strlen(buf) < cases[i].size);
	}
}

static void
test_strcopy_cuts(void **state)
{
	char buf[5];

	(void)state;
	strcopy(buf, sizeof(buf), "abcdefgh");
	assert_string_equal(buf, "abcd");
	strcopy(buf, sizeof(buf), "ab");
	assert_string_equal(buf, "ab");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_utf8_valid),
	    cmocka_unit_test(test_utf8_seqlen),
	    cmocka_unit_test(test_utf8_dup),
	    cmocka_unit_test(test_utf8_copy),
	    cmocka_unit_test(test_strcopy_cuts),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
