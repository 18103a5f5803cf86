/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attribution: bindings beat headers, headers beat defaults, untrusted
 * headers are ignored, required tags refuse, keys are found wherever each
 * SDK puts them (a ?key= read as the provider decodes it) and only ever
 * kept as a fingerprint, a tag header given twice refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgate/attribution.h"
#include "tollgate/config.h"
#include "tollgate/http.h"
#include "tollgate/util.h"

/* sha256("sk-bound-key") and sha256("tg-agent-key"). */
static const char bound_hex[] =
    "c22675492e202502d472c7e80ae8284664f6d62ff43a1ce02bd7a899fc47d8c2";
static const char tgkey_hex[] =
    "ba74a29ce56d3f9f23882be15cd3ea728c1c65b6c062e87d30f1b41aff13baad";

static struct key_binding bindings[2];
static struct config cf;

static void
unhex(const char *hex, unsigned char *out)
{
	size_t i;
	unsigned int b;

	for (i = 0; i < 32; i++) {
		sscanf(hex + 2 * i, "%2x", &b);
		out[i] = (unsigned char)b;
	}
}

static int
setup(void **state)
{
	int t;

	(void)state;
	memset(&cf, 0, sizeof(cf));
	memset(bindings, 0, sizeof(bindings));
	unhex(bound_hex, bindings[0].kb_sha256);
	bindings[0].kb_tags[TAG_TEAM] = xstrdup("support");
	bindings[0].kb_tags[TAG_AGENT_CLASS] = xstrdup("ticket-agent");
	unhex(tgkey_hex, bindings[1].kb_sha256);
	bindings[1].kb_tollgate = 1;
	bindings[1].kb_tags[TAG_TEAM] = xstrdup("research");
	cf.cf_keys = bindings;
	cf.cf_nkeys = 2;
	cf.cf_tag_default[TAG_TEAM] = xstrdup("unassigned");
	cf.cf_tag_default[TAG_ENVIRONMENT] = xstrdup("prod");
	for (t = 0; t < TAG_MAX; t++)
		cf.cf_tag_from_header[t] = 1;
	return (0);
}

static int
teardown(void **state)
{
	int t;
	size_t i;

	(void)state;
	for (i = 0; i < 2; i++)
		for (t = 0; t < TAG_MAX; t++)
			free(bindings[i].kb_tags[t]);
	for (t = 0; t < TAG_MAX; t++)
		free(cf.cf_tag_default[t]);
	return (0);
}

static void
add(struct hdrs *hs, const char *n, const char *v)
{
	hdrs_add(hs, n, strlen(n), v, strlen(v));
}

static void
test_defaults_and_headers(void **state)
{
	struct hdrs hs = {0};
	struct attribution at;
	const char *code;
	char *msg;

	(void)state;
	add(&hs, "Authorization", "Bearer sk-unbound");
	add(&hs, "X-Tollgate-Intent", "ticket-4711");
	add(&hs, "X-Tollgate-Tenant", "acme");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), 0);
	assert_string_equal(attribution_tag(&at, TAG_INTENT), "ticket-4711");
	assert_string_equal(attribution_tag(&at, TAG_TENANT), "acme");
	assert_string_equal(attribution_tag(&at, TAG_TEAM), "unassigned");
	assert_string_equal(attribution_tag(&at, TAG_ENVIRONMENT), "prod");
	assert_null(attribution_tag(&at, TAG_AGENT_CLASS));
	assert_null(at.at_binding);
	assert_int_equal(strlen(at.at_key_fp), 16);
	hdrs_clear(&hs);
}

static void
test_binding_beats_headers(void **state)
{
	struct hdrs hs = {0};
	struct attribution at;
	const char *code;
	char *msg;

	(void)state;
	add(&hs, "x-api-key", "sk-bound-key");
	add(&hs, "X-Tollgate-Team", "finance");
	add(&hs, "X-Tollgate-Agent-Class", "researcher");
	add(&hs, "X-Tollgate-Tenant", "acme");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), 0);
	assert_ptr_equal(at.at_binding, &bindings[0]);
	assert_string_equal(attribution_tag(&at, TAG_TEAM), "support");
	assert_string_equal(
	    attribution_tag(&at, TAG_AGENT_CLASS), "ticket-agent");
	/* What the binding leaves open, headers may still set. */
	assert_string_equal(attribution_tag(&at, TAG_TENANT), "acme");
	/* The fingerprint is a prefix of the SHA-256, never the key. */
	assert_memory_equal(at.at_key_fp, bound_hex, 16);
	hdrs_clear(&hs);
}

static void
test_keys_found_everywhere(void **state)
{
	static const char *where[][2] = {
	    {"Authorization", "Bearer sk-bound-key"},
	    {"x-api-key", "sk-bound-key"},
	    {"api-key", "sk-bound-key"},
	    {"x-goog-api-key", "sk-bound-key"},
	};
	struct attribution at;
	const char *code;
	char *msg;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(where); i++) {
		struct hdrs hs = {0};

		add(&hs, where[i][0], where[i][1]);
		assert_int_equal(
		    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), 0);
		assert_ptr_equal(at.at_binding, &bindings[0]);
		hdrs_clear(&hs);
	}
	/* Gemini's ?key= */
	{
		struct hdrs hs = {0};

		assert_int_equal(
		    attribution_resolve(
			&cf, &hs, "alt=sse&key=tg-agent-key", &at, &code, &msg),
		    0);
		assert_ptr_equal(at.at_binding, &bindings[1]);
		assert_true(at.at_binding->kb_tollgate);
	}
	/* Read as Google reads it: escapes in the name and value decoded. */
	{
		static const char *const queries[] = {
		    "k%65y=sk-bound-key",
		    "%6b%65%79=sk-bound-key",
		    "alt=sse&key=sk-b%6Fund-key",
		    "key=%73%6b%2d%62%6f%75%6e%64%2d%6b%65%79&x=1",
		};
		struct hdrs hs = {0};

		for (i = 0; i < nitems(queries); i++) {
			assert_int_equal(attribution_resolve(&cf, &hs,
					     queries[i], &at, &code, &msg),
			    0);
			assert_ptr_equal(at.at_binding, &bindings[0]);
		}
		/* Not the name key, or an escape that is not one. */
		assert_int_equal(attribution_resolve(&cf, &hs,
				     "monkey=sk-bound-key&k%6=sk-bound-key",
				     &at, &code, &msg),
		    0);
		assert_null(at.at_binding);
	}
}

static void
test_conflicting_keys(void **state)
{
	struct attribution at;
	const char *code;
	char *msg;
	struct hdrs hs = {0};

	(void)state;
	/* A decoy in one slot must not pick the binding while the provider
	 * reads the real key from another. */
	add(&hs, "x-api-key", "decoy");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, "key=sk-bound-key", &at, &code, &msg),
	    -1);
	assert_string_equal(code, "conflicting_credentials");
	free(msg);
	hdrs_clear(&hs);
	add(&hs, "Authorization", "Bearer junk");
	add(&hs, "x-api-key", "tg-agent-key");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), -1);
	free(msg);
	hdrs_clear(&hs);
	/* The same key twice is fine. */
	add(&hs, "x-api-key", "sk-bound-key");
	add(&hs, "Authorization", "Bearer sk-bound-key");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, "key=sk-bound-key", &at, &code, &msg),
	    0);
	assert_ptr_equal(at.at_binding, &bindings[0]);
	hdrs_clear(&hs);
	/* A decoy written with escapes is a key all the same. */
	assert_int_equal(attribution_resolve(&cf, &hs,
			     "key=sk-bound-key&k%65y=decoy", &at, &code, &msg),
	    -1);
	assert_string_equal(code, "conflicting_credentials");
	free(msg);
	/* More query keys than can be told apart: refused with a bound one. */
	assert_int_equal(
	    attribution_resolve(&cf, &hs,
		"key=sk-bound-key&key=sk-bound-key&key=sk-bound-key&"
		"key=sk-bound-key&key=sk-bound-key&key=sk-bound-key&"
		"key=sk-bound-key&key=sk-bound-key&key=decoy",
		&at, &code, &msg),
	    -1);
	assert_string_equal(code, "conflicting_credentials");
	free(msg);
}

/* An X-Tollgate-* header given twice: which one counts is a guess. */
static void
test_header_twice(void **state)
{
	static const char *twice[][3] = {
	    {"X-Tollgate-Team", "x-tollgate-team", "bad_tag"},
	    {"X-Tollgate-Tenant", "X-Tollgate-Tenant", "bad_tag"},
	    {"X-Tollgate-Request-Id", "x-tollgate-request-id",
		"bad_request_id"},
	};
	struct attribution at;
	const char *code;
	char *msg;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(twice); i++) {
		struct hdrs hs = {0};

		add(&hs, twice[i][0], "a");
		add(&hs, "X-Tollgate-Intent", "i");
		add(&hs, twice[i][1], "a");
		assert_int_equal(
		    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), -1);
		assert_string_equal(code, twice[i][2]);
		assert_non_null(strstr(msg, "given more than once"));
		free(msg);
		hdrs_clear(&hs);
	}
}

static void
test_untrusted_header_ignored(void **state)
{
	struct hdrs hs = {0};
	struct attribution at;
	const char *code;
	char *msg;

	(void)state;
	cf.cf_tag_from_header[TAG_TEAM] = 0;
	add(&hs, "X-Tollgate-Team", "finance");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), 0);
	assert_string_equal(attribution_tag(&at, TAG_TEAM), "unassigned");
	cf.cf_tag_from_header[TAG_TEAM] = 1;
	hdrs_clear(&hs);
}

static void
test_required_tag(void **state)
{
	struct hdrs hs = {0};
	struct attribution at;
	const char *code;
	char *msg;

	(void)state;
	cf.cf_tag_required[TAG_AGENT_CLASS] = 1;
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), -1);
	assert_string_equal(code, "missing_tag");
	assert_non_null(strstr(msg, "agent_class"));
	assert_non_null(strstr(msg, "X-Tollgate-Agent-Class"));
	free(msg);
	/* A bound key satisfies it. */
	add(&hs, "x-api-key", "sk-bound-key");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), 0);
	cf.cf_tag_required[TAG_AGENT_CLASS] = 0;
	hdrs_clear(&hs);
}

static void
test_bad_values(void **state)
{
	static const char *bad[][2] = {
	    {"X-Tollgate-Team", "two words"},
	    {"X-Tollgate-Team", ""},
	    {"X-Tollgate-Request-Id", "no/slashes"},
	    {"X-Tollgate-Request-Id",
		"a123456789b123456789c123456789d123456789e123456789f1234567"
		"89g12345"},
	};
	struct attribution at;
	const char *code;
	char *msg;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(bad); i++) {
		struct hdrs hs = {0};

		add(&hs, bad[i][0], bad[i][1]);
		if (attribution_resolve(&cf, &hs, NULL, &at, &code, &msg) != -1)
			fail_msg("%s: '%s' accepted", bad[i][0], bad[i][1]);
		assert_non_null(code);
		free(msg);
		hdrs_clear(&hs);
	}
}

static void
test_request_id(void **state)
{
	struct hdrs hs = {0};
	struct attribution at;
	const char *code;
	char *msg;

	(void)state;
	add(&hs, "X-Tollgate-Request-Id", "job-42:attempt.1");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), 0);
	assert_string_equal(at.at_request_id, "job-42:attempt.1");
	hdrs_clear(&hs);
}

static void
test_header_names(void **state)
{
	struct hdrs hs = {0};
	struct attribution at;
	const char *code;
	char *msg;

	(void)state;
	/* Names in any case (a repeated one refuses: test_header_twice);
	 * names that only look like a tag's or a key slot's are not read. */
	add(&hs, "X-TOLLGATE-TEAM", "first");
	add(&hs, "X-Tollgate-Teams", "plural");
	add(&hs, "X-Tollgate-Tenan", "cut");
	add(&hs, "x-tollgate-request-id", "job-1");
	add(&hs, "X-Goog-Api-Keys", "sk-bound-key");
	add(&hs, "AUTHORIZATION", "bearer sk-unbound");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), 0);
	assert_string_equal(attribution_tag(&at, TAG_TEAM), "first");
	assert_null(attribution_tag(&at, TAG_TENANT));
	assert_string_equal(at.at_request_id, "job-1");
	/* Only the Authorization key was seen: it is not the bound one. */
	assert_null(at.at_binding);
	assert_int_equal(strlen(at.at_key_fp), 16);
	hdrs_clear(&hs);

	add(&hs, "X-GOOG-API-KEY", "sk-bound-key");
	assert_int_equal(
	    attribution_resolve(&cf, &hs, NULL, &at, &code, &msg), 0);
	assert_ptr_equal(at.at_binding, &bindings[0]);
	hdrs_clear(&hs);
}

static void
test_strip_query_key(void **state)
{
	char *q;

	(void)state;
	q = attribution_strip_query_key("alt=sse&key=secret");
	assert_string_equal(q, "alt=sse");
	free(q);
	q = attribution_strip_query_key("key=secret&alt=sse&x=1");
	assert_string_equal(q, "alt=sse&x=1");
	free(q);
	assert_null(attribution_strip_query_key("key=secret"));
	q = attribution_strip_query_key("monkey=1");
	assert_string_equal(q, "monkey=1");
	free(q);
	/* However the name is written, as the provider decodes it. */
	q = attribution_strip_query_key("k%65y=secret&alt=sse&%6B%65%79=s2");
	assert_string_equal(q, "alt=sse");
	free(q);
	q = attribution_strip_query_key("alt=sse&kez=1&key");
	assert_string_equal(q, "alt=sse&kez=1");
	free(q);
}

static void
test_tag_names(void **state)
{
	(void)state;
	assert_int_equal(tag_lookup("agent_class"), TAG_AGENT_CLASS);
	assert_int_equal(tag_lookup("nope"), -1);
	assert_string_equal(
	    tag_header(TAG_ENVIRONMENT), "X-Tollgate-Environment");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_and_headers),
	    cmocka_unit_test(test_binding_beats_headers),
	    cmocka_unit_test(test_keys_found_everywhere),
	    cmocka_unit_test(test_conflicting_keys),
	    cmocka_unit_test(test_header_twice),
	    cmocka_unit_test(test_untrusted_header_ignored),
	    cmocka_unit_test(test_required_tag),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_request_id),
	    cmocka_unit_test(test_header_names),
	    cmocka_unit_test(test_strip_query_key),
	    cmocka_unit_test(test_tag_names),
	};

	return (cmocka_run_group_tests(tests, setup, teardown));
}
