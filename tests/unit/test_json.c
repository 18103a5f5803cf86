/* SPDX-License-Identifier: Apache-2.0 */
/*
 * meter_json_parse_request against cJSON. The answer must be the one
 * cJSON gives for the whole body: NULL for the same texts, the same
 * top-level names in the same order, and the same values for the members
 * metering reads; the others may read as null. A table of named bodies
 * says which must take the short path (their other members null) and
 * which must be left to cJSON; then every body of the table, truncated at
 * every offset and with every byte replaced by each of a set of bytes
 * that matter to a JSON reader, must give cJSON's answer.
 *
 * Then meter_json_skip, which finds the end of a value by scanning, on
 * strings with escapes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "tollgate/util.h"

#include "../../src/meter/providers/providers.h"
#include "jsoncompare.h"

struct json_case {
	const char *name;
	const char *body;
	size_t len; /* 0: strlen(body) */
	enum path path;
	int plain; /* the *plain meter_json_parse_request must give */
};

static const struct json_case cases[] = {
    {"sdk order",
	"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
	"\"model\":\"gpt-4o\",\"max_tokens\":16}",
	0, SHORT, 1},
    {"whitespace everywhere",
	" \r\n\t{ \"model\" : \"m\" ,\n\"messages\" : [ 1 , { } , [ ] ] ,"
	" \"n\" : 2 } \n",
	0, SHORT, 1},
    {"empty object", "{}", 0, SHORT, 1},
    {"empty object with spaces", " { } ", 0, SHORT, 1},
    {"escapes in values",
	"{\"model\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\",\"messages\":"
	"[\"\\\"\\\\\",\"\\u00e9\\u20AC\\ud83d\\ude00\"]}",
	0, SHORT, 1},
    {"numbers",
	"{\"model\":\"m\",\"x\":[0,-0,1.5,-2e10,3E+2,4e-1,123456789012345]}", 0,
	SHORT, 1},
    {"literals", "{\"a\":true,\"b\":false,\"c\":null,\"max_tokens\":null}", 0,
	SHORT, 1},
    {"kept object", "{\"stream_options\":{\"include_usage\":true},\"x\":1}", 0,
	SHORT, 1},
    {"duplicate names", "{\"model\":\"a\",\"x\":1,\"model\":\"b\",\"x\":2}", 0,
	SHORT, 1},
    {"raw bytes in strings", "{\"x\":\"\x01\x7f\xff\xc3\xa9\",\"model\":\"m\"}",
	0, SHORT, 1},
    {"nul in a string", "{\"x\":\"a\0b\",\"model\":\"m\"}", 23, SHORT, 1},
    {"kept names twice, the second after the messages",
	"{\"model\":\"a\",\"messages\":[{}],\"max_tokens\":1,\"model\":\"b\","
	"\"max_tokens\":1e999}",
	0, SHORT, 1},
    {"kept names in other cases",
	"{\"Model\":\"a\",\"model\":\"b\",\"MAX_TOKENS\":2,\"\xc5\xbftream\":"
	"true}",
	0, SHORT, 1},
    {"kept values readers read differently",
	"{\"model\":\"gpt\\u0000x\",\"max_tokens\":-0,\"stream_options\":"
	"{\"include_usage\":true,\"include_usage\":false},"
	"\"generationConfig\":{\"maxOutputTokens\":1.5e3}}",
	0, SHORT, 1},
    {"raw nul in a kept value", "{\"model\":\"gpt\0x\",\"n\":[1]}", 25, SHORT,
	1},
    {"escaped kept name", "{\"max\\u005ftokens\":5,\"model\":\"m\"}", 0, SHORT,
	0},
    {"escaped name", "{\"m\\u006fdel\":\"a\",\"x\":[1]}", 0, SHORT, 0},
    {"control byte in a name", "{\"mo\x01\":\"a\",\"x\":[1]}", 0, SHORT, 0},
    {"nul in a name", "{\"model\0x\":\"a\",\"x\":[1]}", 23, SHORT, 0},
    {"not an object", "[1,2]", 0, WHOLE, 0},
    {"a string", "\"model\"", 0, WHOLE, 0},
    {"bom", "\xef\xbb\xbf{\"model\":\"m\"}", 0, WHOLE, 0},
    {"control byte as whitespace", "{\x01\"model\":\"m\"}", 0, WHOLE, 0},
    {"nul as whitespace", "{\"model\":\0\"m\"}", 14, WHOLE, 0},
    {"leading zero", "{\"x\":01,\"model\":\"m\"}", 0, WHOLE, 1},
    {"trailing dot", "{\"x\":1.,\"model\":\"m\"}", 0, WHOLE, 1},
    {"long number",
	"{\"x\":1234567890123456789012345678901234567890123456789012345678901"
	"234567890}",
	0, CJSON, 1},
    {"number cJSON reads",
	"{\"x\":12345678901234567890123456789012345678901"
	"234567890}",
	0, WHOLE, 1},
    /* Skipped values may hold lone surrogates; kept ones may not. */
    {"lone high surrogate", "{\"x\":\"\\ud800\",\"model\":\"m\"}", 0, SHORT, 1},
    {"lone low surrogate", "{\"x\":\"\\udc00x\"}", 0, SHORT, 1},
    {"high then not low", "{\"x\":[\"\\ud83d\\u0041\"]}", 0, SHORT, 1},
    {"lone surrogate in a kept value", "{\"model\":\"m\\ud800\"}", 0, REFUSED,
	0},
    {"lone surrogate in a name", "{\"x\\udc00\":1}", 0, REFUSED, 0},
    {"bad escape", "{\"x\":\"\\x\"}", 0, REFUSED, 0},
    {"short unicode escape", "{\"x\":\"\\u12\"}", 0, REFUSED, 0},
    {"trailing comma", "{\"x\":1,}", 0, REFUSED, 0},
    {"trailing comma in array", "{\"x\":[1,]}", 0, REFUSED, 0},
    {"trailing junk", "{\"x\":1} x", 0, REFUSED, 0},
    {"two values", "{\"x\":1}{}", 0, REFUSED, 0},
    {"unterminated string", "{\"x\":\"abc}", 0, REFUSED, 0},
    {"unterminated object", "{\"x\":[1]", 0, REFUSED, 0},
    {"bare word", "{\"x\":nul}", 0, REFUSED, 0},
    {"plus sign", "{\"x\":+1}", 0, REFUSED, 0},
    {"empty", "", 0, REFUSED, 0},
    {"only spaces", "   ", 0, REFUSED, 0},
};

static int
check(const char *p, size_t len, int *plain)
{
	struct json_member spans[nitems(keep)];
	cJSON *got, *want;
	int r;

	got = meter_json_parse_request(p, len, keep, spans, plain);
	r = compare_body(p, len, got, &want);
	if (r != -1 && check_spans(p, len, want, spans, *plain) == -1)
		r = -1;
	cJSON_Delete(got);
	cJSON_Delete(want);
	return (r);
}

static void
test_cases(void **state)
{
	const struct json_case *c;
	size_t i, len;
	int r, plain, fails = 0;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		c = &cases[i];
		len = c->len != 0 ? c->len : strlen(c->body);
		r = check(c->body, len, &plain);
		/* A body with nothing to leave out looks whole either way. */
		if (r == WHOLE && c->path == SHORT)
			r = SHORT;
		if ((r == WHOLE || r == REFUSED) && c->path == CJSON)
			r = CJSON;
		if (r != (int)c->path || plain != c->plain) {
			print_error("%s: path %d plain %d, want %d %d\n",
			    c->name, r, plain, c->path, c->plain);
			fails++;
		}
	}
	assert_int_equal(fails, 0);
}

/* The short path must really leave the large members out. */
static void
test_short_path_taken(void **state)
{
	static const char body[] =
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\nb\"}],"
	    "\"model\":\"m\",\"tools\":[{\"x\":1}]}";
	struct json_member spans[nitems(keep)];
	cJSON *got;
	int plain;

	(void)state;
	got = meter_json_parse_request(
	    body, sizeof(body) - 1, keep, spans, &plain);
	assert_non_null(got);
	assert_true(
	    cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(got, "messages")));
	assert_true(
	    cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(got, "tools")));
	assert_string_equal(
	    cJSON_GetObjectItemCaseSensitive(got, "model")->valuestring, "m");
	assert_int_equal(plain, 1);
	/* model is kept: its value is where the text has it. */
	assert_int_equal(spans[0].jm_val, strstr(body, "\"m\",") - body);
	assert_int_equal(spans[0].jm_valend, spans[0].jm_val + 3);
	assert_int_equal(spans[1].jm_val, SIZE_MAX);
	cJSON_Delete(got);
}

/*
 * Every table body cut short at every offset, and with every byte
 * replaced by each byte that matters to a JSON reader: cJSON's answer
 * every time.
 */
static void
test_mutations(void **state)
{
	static const char subst[] = "\"\\{}[],:0-+.eEu nt\x01\x7f";
	const struct json_case *c;
	char *buf;
	size_t i, j, k, len, runs = 0;
	int plain, fails = 0;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		c = &cases[i];
		len = c->len != 0 ? c->len : strlen(c->body);
		buf = xmalloc(len + 1);
		for (j = 0; j <= len; j++) {
			memcpy(buf, c->body, j);
			if (check(buf, j, &plain) == -1) {
				print_error(
				    "%s: cut at %zu differs\n", c->name, j);
				fails++;
			}
			runs++;
		}
		for (j = 0; j < len; j++) {
			for (k = 0; k < sizeof(subst); k++) {
				memcpy(buf, c->body, len);
				buf[j] = subst[k]; /* the last is a NUL */
				if (check(buf, len, &plain) == -1) {
					print_error("%s: byte %zu as 0x%02x "
						    "differs\n",
					    c->name, j,
					    (unsigned char)subst[k]);
					fails++;
				}
				runs++;
			}
		}
		free(buf);
	}
	print_message("%zu bodies\n", runs);
	assert_int_equal(fails, 0);
}

/* meter_json_skip: where a value ends, escapes and all. */
static void
test_skip(void **state)
{
	static const struct {
		const char *text;
		size_t len;
	} skips[] = {
	    {"\"abc\"", 5},
	    {"\"a\\\"b\"", 6},
	    {"\"a\\\\\"", 5},
	    {"\"\\\\\\\"\"", 6},
	    {"\"abc", 0},
	    {"\"abc\\\"", 0},
	    {"\"abc\\", 0},
	    {"{\"a\":\"}\",\"b\":[\"]\"]}", 19},
	    {"[\"\\\"]\",1]", 9},
	    {"12,", 2},
	};
	char *big;
	size_t i, n = 1 << 20;

	(void)state;
	for (i = 0; i < nitems(skips); i++)
		assert_int_equal(
		    meter_json_skip(skips[i].text, strlen(skips[i].text)),
		    skips[i].len);
	/* A long string dense with escaped quotes. */
	big = xmalloc(n);
	big[0] = '"';
	for (i = 1; i + 1 < n; i += 2) {
		big[i] = '\\';
		big[i + 1] = '"';
	}
	big[n - 1] = '"';
	assert_int_equal(meter_json_skip(big, n), n);
	assert_int_equal(meter_json_skip(big, n - 1), 0);
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cases),
	    cmocka_unit_test(test_short_path_taken),
	    cmocka_unit_test(test_mutations),
	    cmocka_unit_test(test_skip),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
