/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for src/cache/: a table of named bodies and their canonical
 * forms (or why they have none), the key's parts each changing it, and
 * an entry's encoding for the fleet's Redis (and its refusal of anything
 * cut or foreign, or not a 2xx with its usage), the store: a round trip
 * of every field, expiry (and a TTL shortened since), the first answer
 * kept,
 * eviction of the oldest by count and by bytes, a reopened file. With
 * TG_CACHE_BENCH=N in the environment, the lookup is also timed on a
 * store of N entries (docs/operations.md quotes it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "tollgate/cache.h"
#include "tollgate/http.h"
#include "tollgate/util.h"

#include "tmptree.h"

struct ccase {
	const char *name;
	const char *body;
	const char *canon; /* NULL: none, with a cause naming why */
	const char *cause;
};

static const struct ccase canon_cases[] = {
    {"sorted", "{\"b\":1,\"a\":2}", "{\"a\":2,\"b\":1}", NULL},
    {"nested and spaced",
	"{ \"model\" : \"m\",\n \"messages\": [ {\"role\":\"user\", "
	"\"content\":\"hi\"} ], \"temperature\": 0.5 }",
	"{\"messages\":[{\"content\":\"hi\",\"role\":\"user\"}],\"model\":"
	"\"m\",\"temperature\":0.5}",
	NULL},
    {"arrays keep their order", "[3,1,{\"z\":[2,1],\"y\":null}]",
	"[3,1,{\"y\":null,\"z\":[2,1]}]", NULL},
    {"escapes are one string", "{\"a\":\"\\u0041\"}", "{\"a\":\"A\"}", NULL},
    {"duplicates keep their order", "{\"a\":2,\"b\":0,\"a\":1}",
	"{\"a\":2,\"a\":1,\"b\":0}", NULL},
    {"trailing whitespace", "{\"a\":1}\n\t ", "{\"a\":1}", NULL},
    /* cJSON's strings end at a NUL: what follows would not count. */
    {"NUL escape", "{\"a\":\"hello M\\u0000 say PWNED\"}", NULL, "NUL"},
    {"NUL escape in a name", "{\"a\\u0000b\":1}", NULL, "NUL"},
    {"NUL escape in an array", "[\"x\",\"\\u0000\"]", NULL, "NUL"},
    {"escaped backslash then u0000", "{\"a\":\"\\\\u0000\"}",
	"{\"a\":\"\\\\u0000\"}", NULL},
    {"other escapes", "{\"a\":\"\\u0001\\u00e9\"}",
	"{\"a\":\"\\u0001\xc3\xa9\"}", NULL},
    {"not json", "{\"a\":", NULL, "not JSON"},
    {"bytes after", "{\"a\":1} {}", NULL, "after its JSON value"},
    {"seed past 2^53", "{\"seed\":9007199254740993}", NULL, "too large"},
    {"seed below 2^53", "{\"seed\":9007199254740991}",
	"{\"seed\":9007199254740991}", NULL},
    {"neighbours below 2^53", "[9007199254740990,1234567890123457]",
	"[9007199254740990,1234567890123457]", NULL},
    {"17 digits", "[0.1234567890123456,0.1234567890123457,0.5,3.0,-0]",
	"[0.12345678901234559,0.12345678901234571,0.5,3,-0]", NULL},
};

static void
test_canonical(void **state)
{
	const struct ccase *c;
	char *out, *cause;
	size_t i, len;

	(void)state;
	for (i = 0; i < nitems(canon_cases); i++) {
		c = &canon_cases[i];
		out = cache_canonical(c->body, strlen(c->body), &len, &cause);
		if (c->canon == NULL) {
			if (out != NULL)
				fail_msg("%s: canonical '%s'", c->name, out);
			assert_non_null(cause);
			if (strstr(cause, c->cause) == NULL)
				fail_msg("%s: cause '%s'", c->name, cause);
			free(cause);
			continue;
		}
		if (out == NULL)
			fail_msg("%s: %s", c->name, cause);
		if (strcmp(out, c->canon) != 0 || len != strlen(c->canon))
			fail_msg("%s: '%s', want '%s'", c->name, out, c->canon);
		free(out);
	}
}

static void
key_of(const struct cache_keyparts *kp, const char *body, unsigned char *k)
{
	char *cause = NULL;

	if (cache_key(kp, body, strlen(body), k, &cause) == -1)
		fail_msg("cache_key: %s", cause);
}

static void
test_key_parts(void **state)
{
	struct cache_keyparts base = {.kp_tenant = "acme",
	    .kp_key = "0123456789abcdef",
	    .kp_upstream = "openai",
	    .kp_path = "/v1/chat/completions"};
	struct cache_keyparts kp;
	struct hdrs h1 = {0}, h2 = {0}, h3 = {0}, h4 = {0}, h5 = {0};
	unsigned char k0[CACHE_KEY_LEN], k1[CACHE_KEY_LEN];
	const char *body = "{\"model\":\"m\",\"temperature\":0.2}";
	char *cause = NULL;
	int i;

	/* Headers that change the answer; others do not count. */
	hdrs_add(&h1, "Anthropic-Version", 17, "2023-06-01", 10);
	hdrs_add(&h2, "anthropic-version", 17, "2023-01-01", 10);
	hdrs_add(&h3, "anthropic-version", 17, "", 0);
	hdrs_add(&h4, "OpenAI-Project", 14, "proj_a", 6);
	hdrs_add(&h5, "User-Agent", 10, "x", 1);

	(void)state;
	key_of(&base, body, k0);
	key_of(&base, "{ \"temperature\": 0.2, \"model\": \"m\" }", k1);
	assert_memory_equal(k0, k1, CACHE_KEY_LEN);
	key_of(&base, "{\"model\":\"m\",\"temperature\":0.3}", k1);
	assert_memory_not_equal(k0, k1, CACHE_KEY_LEN);
	/* Each part alone changes the key; NULL is not "". */
	for (i = 0; i < 12; i++) {
		kp = base;
		switch (i) {
		case 0:
			kp.kp_tenant = "other";
			break;
		case 1:
			kp.kp_key = "fedcba9876543210";
			break;
		case 2:
			kp.kp_upstream = "local";
			break;
		case 3:
			kp.kp_path = "/v1/completions";
			break;
		case 4:
			kp.kp_stream = 1;
			break;
		case 5:
			kp.kp_tenant = NULL;
			break;
		case 6:
			/* A part's bytes cannot slide into the next one. */
			kp.kp_tenant = "acme0123456789abcdef";
			kp.kp_key = "";
			break;
		case 7:
			kp.kp_binding = "tollgate";
			break;
		case 8:
			kp.kp_usage_injected = 1;
			break;
		case 9:
			kp.kp_hdrs = &h1;
			break;
		case 10:
			kp.kp_hdrs = &h3; /* present but empty: not absent */
			break;
		case 11:
			kp.kp_hdrs = &h4;
			break;
		}
		key_of(&kp, body, k1);
		if (memcmp(k0, k1, CACHE_KEY_LEN) == 0)
			fail_msg("part %d does not change the key", i);
	}
	/* A binding's kind, a header's value: each tells keys apart. */
	kp = base;
	kp.kp_binding = "tollgate";
	key_of(&kp, body, k0);
	kp.kp_binding = "provider";
	key_of(&kp, body, k1);
	assert_memory_not_equal(k0, k1, CACHE_KEY_LEN);
	kp = base;
	kp.kp_hdrs = &h1;
	key_of(&kp, body, k0);
	kp.kp_hdrs = &h2;
	key_of(&kp, body, k1);
	assert_memory_not_equal(k0, k1, CACHE_KEY_LEN);
	/* Names are matched whatever their case; other headers are not
	 * part of the key. */
	hdrs_clear(&h2);
	hdrs_add(&h2, "anthropic-VERSION", 17, "2023-06-01", 10);
	hdrs_add(&h2, "User-Agent", 10, "y", 1);
	key_of(&kp, body, k1);
	assert_memory_equal(k0, k1, CACHE_KEY_LEN);
	kp.kp_hdrs = &h5;
	key_of(&kp, body, k0);
	key_of(&base, body, k1);
	assert_memory_equal(k0, k1, CACHE_KEY_LEN);
	hdrs_clear(&h1);
	hdrs_clear(&h2);
	hdrs_clear(&h3);
	hdrs_clear(&h4);
	hdrs_clear(&h5);
	/* A raw NUL in the value has no canonical form either. */
	assert_int_equal(
	    cache_key(&base, "{\"a\":\"x\0y\"}", 11, k1, &cause), -1);
	assert_non_null(strstr(cause, "NUL"));
	free(cause);
	cause = NULL;
	/* ... while NULs after it are skipped as before. */
	key_of(&base, body, k0);
	assert_int_equal(
	    cache_key(&base, "{\"model\":\"m\",\"temperature\":0.2}\0",
		strlen(body) + 1, k1, &cause),
	    0);
	assert_memory_equal(k0, k1, CACHE_KEY_LEN);
	kp = base;
	kp.kp_tenant = "";
	key_of(&kp, body, k0);
	kp.kp_tenant = NULL;
	key_of(&kp, body, k1);
	assert_memory_not_equal(k0, k1, CACHE_KEY_LEN);
	assert_int_equal(cache_key(&base, "nope", 4, k1, &cause), -1);
	assert_non_null(cause);
	free(cause);
}

static void
test_entry_encoding(void **state)
{
	struct cache_entry e, d;
	char *v;
	size_t len, cut;

	(void)state;
	memset(&e, 0, sizeof(e));
	e.ce_status = 200;
	e.ce_ctype = xstrdup("text/event-stream");
	e.ce_body = xmalloc(5);
	memcpy(e.ce_body, "a\0b\nc", 5);
	e.ce_len = 5;
	e.ce_created_ms = 1765000000123LL;
	e.ce_usage.u_input = 1000;
	e.ce_usage.u_output = 20;
	e.ce_usage.u_cached = 3;
	e.ce_usage.u_cache_write = 4;
	e.ce_usage.u_cache_write_1h = 2;
	e.ce_usage.u_reasoning = 5;
	strcopy(e.ce_usage.u_model, sizeof(e.ce_usage.u_model), "gpt-4o-mini");
	strcopy(e.ce_usage.u_service_tier, sizeof(e.ce_usage.u_service_tier),
	    "flex");
	v = cache_entry_encode(&e, &len);
	assert_int_equal(cache_entry_decode(v, len, &d), 0);
	assert_int_equal(d.ce_status, 200);
	assert_string_equal(d.ce_ctype, "text/event-stream");
	assert_int_equal(d.ce_len, 5);
	assert_memory_equal(d.ce_body, "a\0b\nc", 5);
	assert_int_equal(d.ce_created_ms, 1765000000123LL);
	assert_int_equal(d.ce_usage.u_input, 1000);
	assert_int_equal(d.ce_usage.u_output, 20);
	assert_int_equal(d.ce_usage.u_cached, 3);
	assert_int_equal(d.ce_usage.u_cache_write, 4);
	assert_int_equal(d.ce_usage.u_cache_write_1h, 2);
	assert_int_equal(d.ce_usage.u_reasoning, 5);
	assert_string_equal(d.ce_usage.u_model, "gpt-4o-mini");
	assert_string_equal(d.ce_usage.u_service_tier, "flex");
	assert_int_equal(d.ce_usage.u_source, USAGE_REPORTED);
	cache_entry_clear(&d);
	/* Cut anywhere, or one byte more, or not ours: not an entry. */
	for (cut = 0; cut < len; cut++)
		assert_int_equal(cache_entry_decode(v, cut, &d), -1);
	v = xreallocarray(v, len + 1, 1);
	v[len] = 'x';
	assert_int_equal(cache_entry_decode(v, len + 1, &d), -1);
	v[0] = 'X';
	assert_int_equal(cache_entry_decode(v, len, &d), -1);
	free(v);
	/* Only what the cache stores is served: a 2xx, no negative count. */
	e.ce_status = 404;
	v = cache_entry_encode(&e, &len);
	assert_int_equal(cache_entry_decode(v, len, &d), -1);
	free(v);
	e.ce_status = 100;
	v = cache_entry_encode(&e, &len);
	assert_int_equal(cache_entry_decode(v, len, &d), -1);
	free(v);
	e.ce_status = 299;
	v = cache_entry_encode(&e, &len);
	assert_int_equal(cache_entry_decode(v, len, &d), 0);
	cache_entry_clear(&d);
	free(v);
	e.ce_status = 200;
	e.ce_usage.u_output = -1;
	v = cache_entry_encode(&e, &len);
	assert_int_equal(cache_entry_decode(v, len, &d), -1);
	free(v);
	e.ce_usage.u_output = 20;
	e.ce_usage.u_reasoning = INT64_MIN;
	v = cache_entry_encode(&e, &len);
	assert_int_equal(cache_entry_decode(v, len, &d), -1);
	free(v);
	cache_entry_clear(&e);
}

static char tmpdir[64];
static char dbpath[128];

static int
setup_store(void **state)
{
	char *cause = NULL;

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/tg-cache-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return (-1);
	snprintf(dbpath, sizeof(dbpath), "%s/cache.db", tmpdir);
	if (cache_open(dbpath, &cause) == -1) {
		fprintf(stderr, "cache_open: %s\n", cause);
		free(cause);
		return (-1);
	}
	return (0);
}

static int
teardown_store(void **state)
{
	(void)state;
	cache_close();
	tmptree_remove(tmpdir);
	return (0);
}

static void
make_key(unsigned char *k, int n)
{
	memset(k, 0, CACHE_KEY_LEN);
	memcpy(k, &n, sizeof(n));
}

/* Put an answer of len bytes under key n. */
static void
put(int n, size_t len, int64_t now, const struct cache_conf *cc)
{
	struct cache_entry e;
	unsigned char k[CACHE_KEY_LEN];

	memset(&e, 0, sizeof(e));
	make_key(k, n);
	e.ce_status = 200;
	e.ce_ctype = xstrdup("application/json");
	e.ce_body = xmalloc(len + 1);
	memset(e.ce_body, 'a' + n % 26, len);
	e.ce_len = len;
	e.ce_usage.u_input = 100 + n;
	e.ce_usage.u_output = 7;
	e.ce_usage.u_source = USAGE_REPORTED;
	cache_put(k, "acme", &e, now, cc);
	assert_null(e.ce_body); /* the store took it */
}

static int
get(int n, int64_t now, struct cache_entry *e)
{
	unsigned char k[CACHE_KEY_LEN];

	make_key(k, n);
	return (cache_get(k, now, 60000, e));
}

static struct cache_conf
conf(int max_entries, size_t max_bytes)
{
	struct cache_conf cc;

	memset(&cc, 0, sizeof(cc));
	cc.cc_ttl_ms = 60000;
	cc.cc_max_entries = max_entries;
	cc.cc_max_bytes = max_bytes;
	cc.cc_max_entry_bytes = max_bytes;
	return (cc);
}

static void
test_store_round_trip(void **state)
{
	struct cache_conf cc = conf(100, 1 << 20);
	struct cache_entry e;
	struct cache_stats st;
	struct usage *u = &e.ce_usage;
	unsigned char k[CACHE_KEY_LEN];
	int64_t now = 1000000;
	char *cause = NULL;

	(void)state;
	memset(&e, 0, sizeof(e));
	e.ce_status = 201;
	e.ce_ctype = xstrdup("text/event-stream; charset=utf-8");
	e.ce_body = xmalloc(19); /* binary-safe */
	memcpy(e.ce_body, "data: {\"x\":1}\n\n\0tail", 19);
	e.ce_len = 19;
	u->u_input = 1;
	u->u_output = 2;
	u->u_cached = 3;
	u->u_cache_write = 4;
	u->u_cache_write_1h = 5;
	u->u_reasoning = 6;
	strcopy(u->u_model, sizeof(u->u_model), "gpt-4o-2024-11-20");
	strcopy(u->u_service_tier, sizeof(u->u_service_tier), "flex");
	make_key(k, 1);
	cache_put(k, "acme", &e, now, &cc);
	/* The first answer under a key stays. */
	put(1, 10, now, &cc);
	cache_sync();
	cache_get_stats(&st);
	assert_int_equal(st.cs_entries, 1);
	assert_int_equal(st.cs_bytes, 19);
	assert_int_equal(get(1, now + 59999, &e), 1);
	assert_int_equal(e.ce_status, 201);
	assert_string_equal(e.ce_ctype, "text/event-stream; charset=utf-8");
	assert_int_equal(e.ce_len, 19);
	assert_memory_equal(e.ce_body, "data: {\"x\":1}\n\n\0tail", 19);
	assert_int_equal(e.ce_created_ms, now);
	assert_int_equal(u->u_input, 1);
	assert_int_equal(u->u_output, 2);
	assert_int_equal(u->u_cached, 3);
	assert_int_equal(u->u_cache_write, 4);
	assert_int_equal(u->u_cache_write_1h, 5);
	assert_int_equal(u->u_reasoning, 6);
	assert_string_equal(u->u_model, "gpt-4o-2024-11-20");
	assert_string_equal(u->u_service_tier, "flex");
	assert_int_equal(u->u_source, USAGE_REPORTED);
	cache_entry_clear(&e);
	/* Expired at its TTL; another key is a miss. */
	assert_int_equal(get(1, now + 60000, &e), 0);
	assert_int_equal(get(2, now, &e), 0);

	/* Reopened, the entry is still there. */
	cache_close();
	assert_int_equal(cache_open(dbpath, &cause), 0);
	cache_get_stats(&st);
	assert_int_equal(st.cs_entries, 1);
	assert_int_equal(get(1, now, &e), 1);
	cache_entry_clear(&e);
}

static void
test_store_expiry_and_eviction(void **state)
{
	struct cache_conf cc = conf(3, 1 << 20);
	struct cache_entry e;
	struct cache_stats st;
	unsigned char k[CACHE_KEY_LEN];
	sqlite3 *db;
	int64_t now = wallclock_ms();
	int i;

	(void)state;
	/* By count: the oldest go first. */
	for (i = 1; i <= 5; i++) {
		put(i, 10, now, &cc);
		cache_sync();
	}
	cache_get_stats(&st);
	assert_int_equal(st.cs_entries, 3);
	assert_int_equal(st.cs_bytes, 30);
	assert_int_equal(get(1, now, &e), 0);
	assert_int_equal(get(2, now, &e), 0);
	for (i = 3; i <= 5; i++) {
		assert_int_equal(get(i, now, &e), 1);
		cache_entry_clear(&e);
	}
	/* By bytes: a 25-byte bound keeps two answers of 10. */
	cc = conf(100, 25);
	put(6, 10, now, &cc);
	cache_sync();
	cache_get_stats(&st);
	assert_int_equal(st.cs_entries, 2);
	assert_int_equal(st.cs_bytes, 20);
	assert_int_equal(get(5, now, &e), 1);
	cache_entry_clear(&e);
	assert_int_equal(get(4, now, &e), 0);
	/* What expired is deleted by the next batch. */
	cc = conf(100, 1 << 20);
	cc.cc_ttl_ms = 1;
	put(7, 10, now - 10, &cc);
	cache_sync();
	assert_int_equal(get(7, now, &e), 0);
	/* A TTL lowered since (a reload) shortens what is stored. */
	cc = conf(100, 1 << 20);
	put(9, 10, now - 5000, &cc);
	cache_sync();
	make_key(k, 9);
	assert_int_equal(cache_get(k, now, 60000, &e), 1);
	cache_entry_clear(&e);
	assert_int_equal(cache_get(k, now, 1000, &e), 0);
	cc.cc_ttl_ms = 1;
	put(8, 10, now, &cc);
	cache_sync();
	cache_get_stats(&st);
	assert_int_equal(st.cs_entries, 4); /* 5, 6, 9 and 8: 7 is gone */
	/* A row that is not an answer the cache stores is a miss. */
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db, "UPDATE entries SET status = 404 WHERE bytes = 10",
		NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(get(5, now, &e), 0);
}

/*
 * The lookup on the loop, timed on a store of TG_CACHE_BENCH entries
 * (answers of 2 KiB): the median and the 99th percentile of 10,000
 * lookups of random keys, hits and misses.
 */
static int
cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x < y ? -1 : x > y);
}

static void
test_store_bench(void **state)
{
	const char *env = getenv("TG_CACHE_BENCH");
	struct cache_conf cc;
	struct cache_entry e;
	struct timespec a, b;
	long long t[10000];
	int64_t now = wallclock_ms();
	int i, n = 0, hits = 0;

	(void)state;
	if (env == NULL || (n = (int)strtol(env, NULL, 10)) <= 0)
		skip();
	cc = conf(n, (size_t)n * 4096);
	/* In steps: the store's queue holds 64 MiB at most. */
	for (i = 0; i < n; i++) {
		put(i, 2048, now, &cc);
		if (i % 10000 == 9999)
			cache_sync();
	}
	cache_sync();
	srandom(1);
	for (i = 0; i < (int)nitems(t); i++) {
		int k = (int)(random() % (2 * n)); /* half miss */

		clock_gettime(CLOCK_MONOTONIC, &a);
		if (get(k, now, &e) == 1) {
			hits++;
			cache_entry_clear(&e);
		}
		clock_gettime(CLOCK_MONOTONIC, &b);
		t[i] = (b.tv_sec - a.tv_sec) * 1000000000LL +
		    (b.tv_nsec - a.tv_nsec);
	}
	qsort(t, nitems(t), sizeof(t[0]), cmp_ll);
	fprintf(stderr,
	    "cache lookup, %d entries of 2 KiB: p50 %.1f us, p99 %.1f us, "
	    "max %.1f us (%d hits of %zu)\n",
	    n, t[nitems(t) / 2] / 1000.0, t[nitems(t) * 99 / 100] / 1000.0,
	    t[nitems(t) - 1] / 1000.0, hits, nitems(t));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_canonical),
	    cmocka_unit_test(test_key_parts),
	    cmocka_unit_test(test_entry_encoding),
	    cmocka_unit_test_setup_teardown(
		test_store_round_trip, setup_store, teardown_store),
	    cmocka_unit_test_setup_teardown(
		test_store_expiry_and_eviction, setup_store, teardown_store),
	    cmocka_unit_test_setup_teardown(
		test_store_bench, setup_store, teardown_store),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
