/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for src/upstream/pick.c and the options it reads: an
 * upstream's keys_env and weighted base_url list, and the retry: section,
 * as a table of named config cases (each loads, with its upstream
 * checked, or fails with exactly the listed errors, "line:col: message");
 * then the picker: calls spread exactly by weight, keys in turn, a key or
 * URL left out until its time and back after, the soonest one given with
 * its time when all are out, and the turns kept across a reload.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tollgate/config.h"
#include "tollgate/pick.h"
#include "tollgate/util.h"

#include "cfgfile.h"

#define MAX_ERRORS 8

struct pcase {
	const char *name;
	const char *yaml; /* the whole file; upstream "up" is checked */
	void (*check)(const struct config *);
	const char *errors[MAX_ERRORS]; /* none: the file must load */
};

static const struct upstream_conf *
up(const struct config *cf)
{
	const struct upstream_conf *uc = config_find_upstream(cf, "up", 2);

	assert_non_null(uc);
	return (uc);
}

static void
check_plain(const struct config *cf)
{
	const struct upstream_conf *uc = up(cf);

	assert_int_equal(uc->uc_nurls, 1);
	assert_string_equal(uc->uc_base_url, "http://127.0.0.1:1");
	assert_string_equal(uc->uc_host, "127.0.0.1");
	assert_int_equal(uc->uc_urls[0].uu_weight, 1);
	assert_int_equal(uc->uc_nkeys, 1);
	assert_string_equal(uc->uc_api_key, "sk-pick-test-a");
	/* sha256("sk-pick-test-a"), first 8 bytes. */
	assert_int_equal(strlen(uc->uc_key_fps[0]), 16);
	assert_int_equal(cf->cf_retry_attempts, 0);
	assert_int_equal(cf->cf_retry_backoff_ms, 200);
	assert_int_equal(cf->cf_retry_max_backoff_ms, 2000);
}

static void
check_lists(const struct config *cf)
{
	const struct upstream_conf *uc = up(cf);

	assert_int_equal(uc->uc_nurls, 3);
	assert_string_equal(uc->uc_urls[0].uu_url, "http://127.0.0.1:1");
	assert_int_equal(uc->uc_urls[0].uu_weight, 3);
	assert_string_equal(uc->uc_urls[1].uu_url, "http://127.0.0.1:2/p");
	assert_int_equal(uc->uc_urls[1].uu_weight, 1);
	assert_string_equal(uc->uc_urls[2].uu_url, "http://localhost:3");
	assert_string_equal(uc->uc_urls[2].uu_host, "localhost");
	assert_string_equal(uc->uc_base_url, uc->uc_urls[0].uu_url);
	assert_int_equal(uc->uc_nkeys, 2);
	assert_string_equal(uc->uc_keys[0], "sk-pick-test-a");
	assert_string_equal(uc->uc_keys[1], "sk-pick-test-b");
	assert_string_not_equal(uc->uc_key_fps[0], uc->uc_key_fps[1]);
	assert_string_equal(uc->uc_api_key_env, "TG_PICK_A");
	assert_int_equal(cf->cf_retry_attempts, 4);
	assert_int_equal(cf->cf_retry_backoff_ms, 50);
	assert_int_equal(cf->cf_retry_max_backoff_ms, 1500);
}

static const struct pcase cases[] = {
    {"plain",
	"upstreams:\n"
	"  up: { type: openai, base_url: \"http://127.0.0.1:1/\", "
	"api_key_env: TG_PICK_A }\n",
	check_plain, {NULL}},
    {"lists",
	"upstreams:\n"
	"  up:\n"
	"    type: openai\n"
	"    keys_env: [TG_PICK_A, TG_PICK_B]\n"
	"    base_url:\n"
	"      - { url: \"http://127.0.0.1:1\", weight: 3 }\n"
	"      - \"http://127.0.0.1:2/p\"\n"
	"      - { url: \"http://localhost:3\" }\n"
	"retry: { attempts: 4, backoff: 50ms, max_backoff: 1500ms }\n",
	check_lists, {NULL}},
    {"bad keys",
	"upstreams:\n"
	"  up: { type: openai, base_url: \"http://127.0.0.1:1\", "
	"keys_env: [] }\n"
	"  u2: { type: openai, base_url: \"http://127.0.0.1:1\", "
	"keys_env: [TG_PICK_A, TG_PICK_A] }\n"
	"  u3: { type: openai, base_url: \"http://127.0.0.1:1\", "
	"keys_env: [TG_PICK_A, TG_PICK_SAME_AS_A] }\n"
	"  u4: { type: openai, base_url: \"http://127.0.0.1:1\", "
	"keys_env: [TG_PICK_UNSET] }\n"
	"  u5: { type: openai, base_url: \"http://127.0.0.1:1\", "
	"keys_env: TG_PICK_A }\n",
	NULL,
	{"2:65: upstreams.up.keys_env: expected a list of environment "
	 "variable names, at least one",
	    "3:77: upstreams.u2.keys_env[1]: TG_PICK_A is already listed at "
	    "upstreams.u2.keys_env[0]",
	    "4:65: upstreams.u3.keys_env: two of its variables hold the same "
	    "key (fingerprint 5d510f8a6d266452)",
	    "5:66: upstreams.u4.keys_env[0]: the environment variable "
	    "TG_PICK_UNSET is not set",
	    "6:65: upstreams.u5.keys_env: expected a list of environment "
	    "variable names, at least one"}},
    {"both key forms",
	"upstreams:\n"
	"  up: { type: openai, base_url: \"http://127.0.0.1:1\", "
	"api_key_env: TG_PICK_A, keys_env: [TG_PICK_B] }\n",
	NULL, {"2:79: upstreams.up: give api_key_env or keys_env, not both"}},
    {"bad urls",
	"upstreams:\n"
	"  up:\n"
	"    type: openai\n"
	"    base_url:\n"
	"      - { url: \"http://127.0.0.1:1\", weight: 0 }\n"
	"      - { url: \"http://127.0.0.1:2\", weight: 2.5 }\n"
	"      - { url: \"http://127.0.0.1:3\", wieght: 2 }\n"
	"      - \"http://127.0.0.1:4\"\n"
	"      - \"http://127.0.0.1:4/\"\n"
	"      - { weight: 2 }\n"
	"  u2: { type: openai, base_url: [] }\n",
	NULL,
	{"5:46: upstreams.up.base_url[0].weight: expected a whole number "
	 "from 1 to 1000",
	    "6:46: upstreams.up.base_url[1].weight: expected a whole number "
	    "from 1 to 1000",
	    "7:38: upstreams.up.base_url[2]: unknown key 'wieght' (expected "
	    "url and weight)",
	    "9:9: upstreams.up.base_url[4]: the same URL is listed twice",
	    "10:9: upstreams.up.base_url[5]: url is required",
	    "11:33: upstreams.u2.base_url: expected 1 to 16 URLs"}},
    {"bad retry",
	"upstreams:\n"
	"  up: { type: openai, base_url: \"http://127.0.0.1:1\" }\n"
	"retry: { attempts: 11, backoff: 3s, max_backoff: 1s, jitter: 1 }\n",
	NULL,
	{"3:20: retry.attempts: must be between 1 and 10",
	    "3:50: retry.max_backoff: 1000 ms is shorter than retry.backoff "
	    "(3000 ms)",
	    "3:54: unknown key 'jitter' in retry"}},
};

static int
run_case(const struct pcase *c)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	char *path, *want;
	size_t i, n;
	int bad = 0;

	cf = cfgfile_load(c->yaml, &errs, &path);
	for (n = 0; c->errors[n] != NULL; n++)
		;
	if (n == 0) {
		if (cf == NULL) {
			print_message("%s: did not load: %s\n", c->name,
			    errs.ce_n > 0 ? errs.ce_msgs[0] : "?");
			bad = 1;
			goto out;
		}
		c->check(cf);
		config_unref(cf);
		goto out;
	}
	assert_null(cf);
	for (i = 0; i < n && i < errs.ce_n; i++) {
		xasprintf(&want, "%s:%s", path, c->errors[i]);
		if (strcmp(errs.ce_msgs[i], want) != 0) {
			print_message("%s: error %zu:\n got  %s\n want %s\n",
			    c->name, i, errs.ce_msgs[i], want);
			bad = 1;
		}
		free(want);
	}
	if (errs.ce_n != n) {
		print_message("%s: %zu errors, want %zu (last: %s)\n", c->name,
		    errs.ce_n, n,
		    errs.ce_n > 0 ? errs.ce_msgs[errs.ce_n - 1] : "-");
		bad = 1;
	}
out:
	cfgerrs_free(&errs);
	free(path);
	return (bad);
}

static void
test_config_cases(void **state)
{
	size_t i;
	int bad = 0;

	(void)state;
	for (i = 0; i < nitems(cases); i++)
		bad |= run_case(&cases[i]);
	assert_false(bad);
}

/* An upstream built by hand: n URLs of the given weights, k keys. */
struct hand {
	struct upstream_conf h_uc;
	struct upstream_url h_urls[4];
	char *h_keys[3];
	char h_fps[3][17];
};

static void
hand_init(struct hand *h, const char *name, const int *weights, int n, int k)
{
	static char urls[4][20] = {"http://127.0.0.1:1", "http://127.0.0.1:2",
	    "http://127.0.0.1:3", "http://127.0.0.1:4"};
	static char keys[3][3] = {"ka", "kb", "kc"};
	static char names[3][8];
	static int nnames;
	int i;

	memset(h, 0, sizeof(*h));
	snprintf(names[nnames % 3], sizeof(names[0]), "%s", name);
	h->h_uc.uc_name = names[nnames++ % 3];
	for (i = 0; i < n; i++) {
		h->h_urls[i].uu_url = urls[i];
		h->h_urls[i].uu_weight = weights[i];
	}
	h->h_uc.uc_urls = h->h_urls;
	h->h_uc.uc_nurls = (size_t)n;
	for (i = 0; i < k; i++) {
		h->h_keys[i] = keys[i];
		snprintf(h->h_fps[i], sizeof(h->h_fps[i]), "%016x", i + 1);
	}
	h->h_uc.uc_keys = h->h_keys;
	h->h_uc.uc_key_fps = h->h_fps;
	h->h_uc.uc_nkeys = (size_t)k;
}

/* Smooth weighted round robin: exact shares over every whole cycle. */
static void
test_weights(void **state)
{
	static const int w[] = {3, 1, 2};
	struct hand h;
	struct pick pk;
	int64_t back;
	int count[3] = {0}, i, run = 0, last = -1, maxrun = 0;

	(void)state;
	pick_reset();
	hand_init(&h, "w", w, 3, 0);
	for (i = 0; i < 60; i++) {
		assert_int_equal(pick_choose(&h.h_uc, 1, 1000, &pk, &back), 0);
		assert_int_equal(back, 0);
		assert_int_equal(pk.pk_key, -1); /* no keys */
		count[pk.pk_url]++;
		run = pk.pk_url == last ? run + 1 : 1;
		last = pk.pk_url;
		if (run > maxrun)
			maxrun = run;
	}
	assert_int_equal(count[0], 30);
	assert_int_equal(count[1], 10);
	assert_int_equal(count[2], 20);
	/* Smooth: the heaviest never goes three times running. */
	assert_true(maxrun <= 2);
}

/* Keys take turns; one left out sits out until its time, then is back. */
static void
test_keys_out_and_back(void **state)
{
	static const int w[] = {1};
	struct hand h;
	struct pick pk;
	int64_t back, t = 10000;
	int i;

	(void)state;
	pick_reset();
	hand_init(&h, "k", w, 1, 2);
	assert_int_equal(pick_choose(&h.h_uc, 1, t, &pk, &back), 0);
	assert_int_equal(pk.pk_key, 0);
	assert_int_equal(pick_choose(&h.h_uc, 1, t, &pk, &back), 0);
	assert_int_equal(pk.pk_key, 1);
	/* Not wanted (the client's own key goes): none chosen. */
	assert_int_equal(pick_choose(&h.h_uc, 0, t, &pk, &back), 0);
	assert_int_equal(pk.pk_key, -1);

	pick_out_key(&h.h_uc, 0, t + 1000);
	for (i = 0; i < 4; i++) {
		assert_int_equal(
		    pick_choose(&h.h_uc, 1, t + 500, &pk, &back), 0);
		assert_int_equal(pk.pk_key, 1);
	}
	assert_int_equal(pick_ready_at(&h.h_uc, 1, t + 500), 0);
	/* Both out: the one back soonest, and when. */
	pick_out_key(&h.h_uc, 1, t + 3000);
	assert_int_equal(pick_choose(&h.h_uc, 1, t + 500, &pk, &back), 1);
	assert_int_equal(pk.pk_key, 0);
	assert_int_equal(back, t + 1000);
	assert_int_equal(pick_ready_at(&h.h_uc, 1, t + 500), t + 1000);
	assert_int_equal(pick_ready_at(&h.h_uc, 0, t + 500), 0);
	/* A shorter time out never shortens a longer one. */
	pick_out_key(&h.h_uc, 1, t + 2000);
	assert_int_equal(pick_ready_at(&h.h_uc, 1, t + 1500), 0);
	assert_int_equal(pick_choose(&h.h_uc, 1, t + 1500, &pk, &back), 0);
	assert_int_equal(pk.pk_key, 0);
	/* Past its time, key 1 takes its turns again. */
	assert_int_equal(pick_choose(&h.h_uc, 1, t + 3001, &pk, &back), 0);
	assert_int_equal(pick_choose(&h.h_uc, 1, t + 3001, &pk, &back), 0);
	assert_int_equal(pick_choose(&h.h_uc, 1, t + 3001, &pk, &back), 0);
	assert_int_equal(pick_ready_at(&h.h_uc, 1, t + 3001), 0);
	/* Out of range: ignored. */
	pick_out_key(&h.h_uc, 7, t + 9000);
	pick_out_url(&h.h_uc, -1, t + 9000);
	assert_int_equal(pick_ready_at(&h.h_uc, 1, t + 3001), 0);
}

/* A URL left out is skipped; when all are, the soonest back is given. */
static void
test_urls_out(void **state)
{
	static const int w[] = {1, 1};
	struct hand h;
	struct pick pk;
	int64_t back, t = 50000;
	int i;

	(void)state;
	pick_reset();
	hand_init(&h, "u", w, 2, 0);
	pick_out_url(&h.h_uc, 0, t + 5000);
	for (i = 0; i < 3; i++) {
		assert_int_equal(pick_choose(&h.h_uc, 0, t, &pk, &back), 0);
		assert_int_equal(pk.pk_url, 1);
	}
	pick_out_url(&h.h_uc, 1, t + 7000);
	assert_int_equal(pick_choose(&h.h_uc, 0, t, &pk, &back), 1);
	assert_int_equal(pk.pk_url, 0);
	assert_int_equal(back, t + 5000);
}

/*
 * The state is keyed by upstream name and URL or key fingerprint: a
 * config loaded again (a reload) with the same ones finds their health;
 * another upstream of the same URLs has its own.
 */
static void
test_survives_reload(void **state)
{
	static const int w[] = {1, 1};
	struct hand a, again, other;
	struct pick pk;
	int64_t back, t = 90000;

	(void)state;
	pick_reset();
	hand_init(&a, "same", w, 2, 2);
	pick_out_url(&a.h_uc, 0, t + 100);
	pick_out_key(&a.h_uc, 1, t + 100);
	hand_init(&again, "same", w, 2, 2);
	assert_int_equal(pick_choose(&again.h_uc, 1, t, &pk, &back), 0);
	assert_int_equal(pk.pk_url, 1);
	assert_int_equal(pk.pk_key, 0);
	hand_init(&other, "other", w, 2, 2);
	assert_int_equal(pick_ready_at(&other.h_uc, 1, t), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_cases),
	    cmocka_unit_test(test_weights),
	    cmocka_unit_test(test_keys_out_and_back),
	    cmocka_unit_test(test_urls_out),
	    cmocka_unit_test(test_survives_reload),
	};

	setenv("TG_PICK_A", "sk-pick-test-a", 1);
	setenv("TG_PICK_SAME_AS_A", "sk-pick-test-a", 1);
	setenv("TG_PICK_B", "sk-pick-test-b", 1);
	unsetenv("TG_PICK_UNSET");
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
