/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The alerts module: the webhook body and Slack text byte for byte, the
 * HMAC against a vector computed with `openssl dgst -sha256 -hmac`, the
 * backoff schedule and what is retried, ids; then for real, on an event
 * loop: deliveries to a libevent HTTP receiver on loopback (a 503 retried
 * then delivered and signed, a 400 given up at once), their state in a
 * real ledger, GET /v1/alerts's answer and parameters, and the restore of
 * alert state into fresh policy counters after a "restart".
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>

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
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sqlite3.h>

#include "tollgate/alerts.h"
#include "tollgate/config.h"
#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "tollgate/yaml.h"

#include "policytest.h"
#include "tmptree.h"

#define SECRET "tollgate-test-secret"

/* 2026-11-28T14:23:00.123Z, and the day around it. */
#define AT 1795875780123LL
#define DAY0 utc(2026, 11, 28, 0, 0, 0)
#define DAY1 (DAY0 + 86400000LL)

static struct alert
sample(void)
{
	struct alert a;

	memset(&a, 0, sizeof(a));
	a.al_kind = "threshold";
	a.al_policy = "researcher-daily";
	a.al_scope_key = "match{agent_class=researcher}per{tenant=acme}"
			 "window{day}";
	a.al_tags[TAG_TENANT] = "acme";
	a.al_window = "day";
	a.al_window_start = DAY0;
	a.al_reset_at = DAY1;
	a.al_threshold_nusd = 40 * USD;
	a.al_spent_nusd = 40 * USD + 50 * CENT;
	a.al_cap_nusd = 50 * USD;
	a.al_at_ms = AT;
	return (a);
}

static char *
out_text(struct spend_out *o)
{
	char *s = xstrndup(o->so_buf != NULL ? o->so_buf : "", o->so_len);

	spend_out_free(o);
	return (s);
}

static void
test_body_json(void **state)
{
	struct alert a = sample();
	struct spend_out o;
	cJSON *doc;
	char *s;

	(void)state;
	spend_out_init(&o, ALERTS_BODY_MAX);
	alerts_body_json(&a, "thr-x", NULL, 0, &o);
	s = out_text(&o);
	assert_string_equal(s,
	    "{\"id\":\"thr-x\",\"kind\":\"threshold\","
	    "\"policy\":\"researcher-daily\",\"scope\":{\"tenant\":\"acme\"},"
	    "\"scope_key\":\"match{agent_class=researcher}per{tenant=acme}"
	    "window{day}\",\"window\":\"day\","
	    "\"window_start\":\"2026-11-28T00:00:00.000Z\","
	    "\"reset_at\":\"2026-11-29T00:00:00.000Z\","
	    "\"threshold_usd\":40.000000000,\"spent_usd\":40.500000000,"
	    "\"cap_usd\":50.000000000,\"percent_of_cap\":81.00,"
	    "\"message\":null,\"fired_at\":\"2026-11-28T14:23:00.123Z\","
	    "\"extend\":{\"method\":\"POST\",\"path\":\"/v1/budgets/extend\","
	    "\"body\":{\"policy\":\"researcher-daily\",\"scope\":{"
	    "\"tenant\":\"acme\",\"agent_class\":\"researcher\"},"
	    "\"usd\":\"5.000000000\",\"reason\":\"raised after alert thr-x\","
	    "\"by\":\"\"}}}");
	assert_non_null(doc = cJSON_Parse(s));
	cJSON_Delete(doc);
	free(s);

	/* A total window never resets; no cap, no threshold: nulls. */
	a.al_kind = "breaker";
	a.al_window = "total";
	a.al_window_start = 0;
	a.al_reset_at = POLICY_NEVER;
	a.al_threshold_nusd = -1;
	a.al_cap_nusd = -1;
	a.al_tags[TAG_TENANT] = NULL;
	a.al_tags[TAG_TEAM] = "a\"b";
	a.al_message = "loop: 5 identical\nbodies";
	spend_out_init(&o, ALERTS_BODY_MAX);
	alerts_body_json(&a, "breaker-1", "failed", 3, &o);
	s = out_text(&o);
	assert_non_null(strstr(s, "\"scope\":{\"team\":\"a\\\"b\"}"));
	assert_non_null(strstr(s,
	    "\"window_start\":\"1970-01-01T00:00:00.000Z"
	    "\",\"reset_at\":null,\"threshold_usd\":null,"
	    "\"spent_usd\":40.500000000,\"cap_usd\":null,"
	    "\"percent_of_cap\":null,"
	    "\"message\":\"loop: 5 identical\\nbodies\""));
	assert_non_null(strstr(s,
	    ",\"extend\":null,\"delivery\":{\"status\":\"failed\","
	    "\"attempts\":3}}"));
	assert_non_null(doc = cJSON_Parse(s));
	cJSON_Delete(doc);
	free(s);
}

/* The extend request of a with id, as its JSON body carries it. */
static cJSON *
extend_of(const struct alert *a, const char *id, cJSON **doc)
{
	struct spend_out o;
	char *s;

	spend_out_init(&o, ALERTS_BODY_MAX);
	alerts_body_json(a, id, NULL, 0, &o);
	s = out_text(&o);
	assert_non_null(*doc = cJSON_Parse(s));
	free(s);
	return (cJSON_GetObjectItemCaseSensitive(*doc, "extend"));
}

/* The "usd" an alert of a with a cap of cap asks for, or NULL. */
static char *
extend_usd(struct alert *a, int64_t cap)
{
	cJSON *doc, *x, *usd;
	char *s = NULL;

	a->al_cap_nusd = cap;
	x = extend_of(a, "thr-y", &doc);
	usd = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(x, "body"), "usd");
	if (cJSON_IsString(usd))
		s = xstrdup(usd->valuestring);
	cJSON_Delete(doc);
	return (s);
}

/*
 * Only a threshold of a capped budget carries the request that raises
 * it: the scope as GET /v1/budgets shows it (per values, "" for calls
 * without the tag, match patterns), a tenth of the configured cap
 * rounded up, at most what one extension may add; anything else, or a
 * scope key that is not one, carries null.
 */
static void
test_body_extend(void **state)
{
	struct alert a = sample();
	cJSON *doc, *x;
	char *s;

	(void)state;
	a.al_scope_key = "match{agent_class=r%2Cs,model=gpt-4o*}"
			 "per{intent=,tenant=a%7Db}window{rolling:60m}";
	x = extend_of(&a, "thr-z", &doc);
	assert_non_null(x);
	assert_non_null(s = cJSON_PrintUnformatted(x));
	assert_string_equal(s,
	    "{\"method\":\"POST\",\"path\":\"/v1/budgets/extend\","
	    "\"body\":{\"policy\":\"researcher-daily\",\"scope\":{"
	    "\"intent\":\"\",\"tenant\":\"a}b\",\"agent_class\":\"r,s\","
	    "\"model\":\"gpt-4o*\"},\"usd\":\"5.000000000\","
	    "\"reason\":\"raised after alert thr-z\",\"by\":\"\"}}");
	cJSON_free(s);
	cJSON_Delete(doc);

	s = extend_usd(&a, 5 * USD + 3);
	assert_string_equal(s, "0.500000001");
	free(s);
	s = extend_usd(&a, 0);
	assert_string_equal(s, "0.000000001");
	free(s);
	s = extend_usd(&a, 20000000 * USD);
	assert_string_equal(s, "1000000.000000000");
	free(s);

	/* Without a cap, of another kind, or with no key: null. */
	assert_null(extend_usd(&a, -1));
	a.al_cap_nusd = 50 * USD;
	a.al_kind = "kill";
	x = extend_of(&a, "kill-1", &doc);
	assert_true(cJSON_IsNull(x));
	cJSON_Delete(doc);
	a.al_kind = "threshold";
	a.al_scope_key = "match{}per{tenant=a}";
	x = extend_of(&a, "thr-z", &doc);
	assert_true(cJSON_IsNull(x));
	cJSON_Delete(doc);
	a.al_scope_key = NULL;
	x = extend_of(&a, "thr-z", &doc);
	assert_true(cJSON_IsNull(x));
	cJSON_Delete(doc);
}

static void
test_body_slack(void **state)
{
	struct alert a = sample();
	struct spend_out o;
	char *s;

	(void)state;
	spend_out_init(&o, ALERTS_BODY_MAX);
	alerts_body_slack(&a, "thr-x", &o);
	s = out_text(&o);
	assert_string_equal(s,
	    "{\"text\":\"tollgate alert (threshold): policy researcher-daily, "
	    "scope tenant=acme, window day: spent $40.50 of a $50.00 cap "
	    "(81.0%), alert at $40.00; resets 2026-11-29T00:00:00.000Z "
	    "[thr-x]\"}");
	free(s);

	/* Slack's mrkdwn specials are escaped; tiny amounts stay exact. */
	a.al_policy = "<b>&";
	a.al_spent_nusd = 123456789;
	spend_out_init(&o, ALERTS_BODY_MAX);
	alerts_body_slack(&a, "thr-x", &o);
	s = out_text(&o);
	assert_non_null(strstr(s, "policy &lt;b&gt;&amp;,"));
	assert_non_null(strstr(s, "spent $0.123456789 of"));
	free(s);
}

/*
 * A breaker's alert has no budget behind it: no "spent $0.00" in its text
 * and a null spent_usd, so only the evidence speaks of money.
 */
static void
test_breaker_says_what_tripped(void **state)
{
	struct alert a;
	struct spend_out o;
	char *s;

	(void)state;
	memset(&a, 0, sizeof(a));
	a.al_kind = "breaker";
	a.al_policy = "agents";
	a.al_tags[TAG_TEAM] = "x";
	a.al_window_start = -1;
	a.al_reset_at = 1764374400000;
	a.al_threshold_nusd = -1;
	a.al_cap_nusd = -1;
	a.al_message = "the loop breaker tripped: 3 times in 40 ms";
	spend_out_init(&o, ALERTS_BODY_MAX);
	alerts_text(&a, "b-1", 0, &o);
	s = out_text(&o);
	assert_string_equal(s,
	    "tollgate alert (breaker): policy agents, scope team=x; the loop "
	    "breaker tripped: 3 times in 40 ms [b-1]");
	free(s);
	spend_out_init(&o, ALERTS_BODY_MAX);
	alerts_body_json(&a, "b-1", NULL, 0, &o);
	s = out_text(&o);
	assert_non_null(strstr(s, "\"spent_usd\":null,\"cap_usd\":null"));
	free(s);

	/* No policy, no scope: the ledger's alert. */
	a.al_kind = "ledger";
	a.al_policy = NULL;
	a.al_tags[TAG_TEAM] = NULL;
	a.al_message = "writes fail";
	spend_out_init(&o, ALERTS_BODY_MAX);
	alerts_text(&a, "l-1", 0, &o);
	s = out_text(&o);
	assert_string_equal(s, "tollgate alert (ledger): writes fail [l-1]");
	free(s);
}

/*
 * printf '%s' '{"id":"thr-1","spent_usd":40.000000000}' |
 *     openssl dgst -sha256 -hmac 'tollgate-test-secret'
 */
static void
test_hmac_vector(void **state)
{
	static const char body[] = "{\"id\":\"thr-1\",\"spent_usd\":"
				   "40.000000000}";
	char hexsig[65];

	(void)state;
	alerts_sign(SECRET, body, sizeof(body) - 1, hexsig);
	assert_string_equal(hexsig,
	    "64a9b53b54043f84d892da4e659aa9f9e4b50b6067ef40d100c26693d842f42b");
	/* One byte more is another signature. */
	alerts_sign(SECRET, body, sizeof(body), hexsig);
	assert_string_not_equal(hexsig,
	    "64a9b53b54043f84d892da4e659aa9f9e4b50b6067ef40d100c26693d842f42b");
}

static void
test_backoff(void **state)
{
	static const struct {
		int failed;
		uint32_t rnd;
		int64_t want;
	} cases[] = {
	    {1, 0, 500}, /* [d/2, d] around 1 s */
	    {1, 0xffffffffu, 999}, {2, 0, 1000},
	    {3, 0x80000000u, 3000}, /* 4 s: 2 s + half of 2 s */
	    {6, 0, 16000}, /* 32 s */
	    {7, 0, 30000}, /* 64 s capped at 60 s */
	    {7, 0xffffffffu, 59999}, {1000, 0, 30000}, /* never overflows */
	};
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		print_message("failed %d rnd %u\n", cases[i].failed,
		    (unsigned)cases[i].rnd);
		assert_int_equal(alerts_backoff_ms(cases[i].failed, 1000, 60000,
				     cases[i].rnd),
		    cases[i].want);
	}
	/* Never more than the cap, whatever the inputs. */
	assert_true(alerts_backoff_ms(3, 5000, 6000, 0xffffffffu) <= 6000);
	assert_int_equal(alerts_backoff_ms(1, 0, 0, 0), 1);
}

static void
test_classify(void **state)
{
	(void)state;
	assert_int_equal(alerts_classify(7, 0), ALERTS_RETRY); /* no conn */
	assert_int_equal(alerts_classify(28, 0), ALERTS_RETRY); /* timeout */
	assert_int_equal(alerts_classify(0, 200), ALERTS_DELIVERED);
	assert_int_equal(alerts_classify(0, 204), ALERTS_DELIVERED);
	assert_int_equal(alerts_classify(0, 408), ALERTS_RETRY);
	assert_int_equal(alerts_classify(0, 429), ALERTS_RETRY);
	assert_int_equal(alerts_classify(0, 500), ALERTS_RETRY);
	assert_int_equal(alerts_classify(0, 503), ALERTS_RETRY);
	assert_int_equal(alerts_classify(0, 599), ALERTS_RETRY);
	assert_int_equal(alerts_classify(0, 301), ALERTS_FAILED);
	assert_int_equal(alerts_classify(0, 400), ALERTS_FAILED);
	assert_int_equal(alerts_classify(0, 401), ALERTS_FAILED);
	assert_int_equal(alerts_classify(0, 404), ALERTS_FAILED);
	assert_int_equal(alerts_classify(0, 600), ALERTS_FAILED);
}

static void
test_ids(void **state)
{
	struct alert a = sample(), b;
	char id1[ALERTS_ID_MAX], id2[ALERTS_ID_MAX];

	(void)state;
	alerts_make_id(&a, id1, sizeof(id1));
	b = a;
	b.al_at_ms += 5000; /* fired again later: same firing, same id */
	b.al_spent_nusd += USD;
	alerts_make_id(&b, id2, sizeof(id2));
	assert_string_equal(id1, id2);
	assert_int_equal(strlen(id1), 4 + 32);
	assert_memory_equal(id1, "thr-", 4);
	b.al_threshold_nusd = 45 * USD;
	alerts_make_id(&b, id2, sizeof(id2));
	assert_string_not_equal(id1, id2);
	b = a;
	b.al_window_start = DAY1;
	alerts_make_id(&b, id2, sizeof(id2));
	assert_string_not_equal(id1, id2);
	/* Other kinds: unique each time. */
	b = a;
	b.al_kind = "breaker";
	alerts_make_id(&b, id1, sizeof(id1));
	alerts_make_id(&b, id2, sizeof(id2));
	assert_string_not_equal(id1, id2);
	assert_memory_equal(id1, "breaker-", 8);
	/* An unknown model: the same model and day, the same id. */
	memset(&b, 0, sizeof(b));
	b.al_kind = "unknown_model";
	b.al_message = "model 'gpt-9' has no price";
	b.al_window_start = DAY1;
	b.al_at_ms = DAY1 + 1000;
	alerts_make_id(&b, id1, sizeof(id1));
	b.al_at_ms += 3600 * 1000;
	alerts_make_id(&b, id2, sizeof(id2));
	assert_string_equal(id1, id2);
	assert_int_equal(strlen(id1), 4 + 32);
	assert_memory_equal(id1, "unk-", 4);
	b.al_window_start += 24 * 3600 * 1000LL;
	alerts_make_id(&b, id2, sizeof(id2));
	assert_string_not_equal(id1, id2);
	b.al_window_start = DAY1;
	b.al_message = "model 'gpt-10' has no price";
	alerts_make_id(&b, id2, sizeof(id2));
	assert_string_not_equal(id1, id2);
}

static void
test_window_name(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"day", "day"},
	    {"week", "week"},
	    {"month", "month"},
	    {"total", "total"},
	    {"1h", "1h"},
	    {"24h", "1d"},
	    {"7d", "7d"},
	    {"90m", "90m"},
	    {"120m", "2h"},
	};
	struct policy_window w;
	char buf[32];
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		assert_int_equal(policy_parse_window(cases[i].in, &w), 0);
		assert_string_equal(
		    policy_window_name(&w, buf, sizeof(buf)), cases[i].out);
	}
}

/* An event loop, a ledger in a temp dir and a webhook receiver. */

#define RECV_MAX 16

struct received {
	char *body;
	char *sig;
	char *id;
	char *ctype;
};

static struct {
	char dir[64];
	char path[128];
	char yaml[128];
	struct event_base *base;
	struct evhttp *http;
	int port;
	int replies[RECV_MAX]; /* status of each request in turn */
	size_t nreplies;
	struct received got[RECV_MAX];
	long long t_got[RECV_MAX]; /* when each arrived, µs */
	const char *retry_after; /* sent with a 429 */
	size_t ngot;
} fx;

static void
recv_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct received *r;
	const char *v;
	size_t len;
	int status;

	(void)arg;
	status = fx.ngot < fx.nreplies ? fx.replies[fx.ngot] : 200;
	if (fx.ngot < RECV_MAX) {
		r = &fx.got[fx.ngot];
		len = evbuffer_get_length(in);
		r->body = xmalloc(len + 1);
		evbuffer_remove(in, r->body, len);
		r->body[len] = '\0';
		v = evhttp_find_header(h, "X-Tollgate-Signature");
		r->sig = v != NULL ? xstrdup(v) : NULL;
		v = evhttp_find_header(h, "X-Tollgate-Alert-Id");
		r->id = v != NULL ? xstrdup(v) : NULL;
		v = evhttp_find_header(h, "Content-Type");
		r->ctype = v != NULL ? xstrdup(v) : NULL;
	}
	fx.ngot++;
	if (status == 429 && fx.retry_after != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Retry-After", fx.retry_after);
	fx.t_got[fx.ngot - 1 < RECV_MAX ? fx.ngot - 1 : 0] = monotime_us();
	evhttp_send_reply(req, status, "test", NULL);
}

static int
setup(void **state)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	char *cause = NULL;

	(void)state;
	memset(&fx, 0, sizeof(fx));
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/tg-test-alerts.XXXXXX");
	assert_non_null(mkdtemp(fx.dir));
	snprintf(fx.path, sizeof(fx.path), "%s/ledger.db", fx.dir);
	snprintf(fx.yaml, sizeof(fx.yaml), "%s/tollgate.yaml", fx.dir);
	assert_non_null(fx.base = event_base_new());
	assert_non_null(fx.http = evhttp_new(fx.base));
	evhttp_set_gencb(fx.http, recv_cb, NULL);
	assert_non_null(
	    bs = evhttp_bind_socket_with_handle(fx.http, "127.0.0.1", 0));
	assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs),
			     (struct sockaddr *)&sin, &slen),
	    0);
	fx.port = ntohs(sin.sin_port);
	if (ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause) != 0)
		fail_msg("ledger_open: %s", cause);
	alerts_setup(fx.base);
	return (0);
}

static int
teardown(void **state)
{
	size_t i;

	(void)state;
	alerts_shutdown();
	ledger_close();
	evhttp_free(fx.http);
	event_base_free(fx.base);
	for (i = 0; i < RECV_MAX && i < fx.ngot; i++) {
		free(fx.got[i].body);
		free(fx.got[i].sig);
		free(fx.got[i].id);
		free(fx.got[i].ctype);
	}
	tmptree_remove(fx.dir);
	return (0);
}

/* Load a config with one webhook of format to the receiver. */
static void
configure(const char *format, int signed_, const char *retry)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	FILE *f;
	size_t i;

	setenv("TG_TEST_HOOK_SECRET", SECRET, 1);
	assert_non_null(f = fopen(fx.yaml, "w"));
	fprintf(f,
	    "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n"
	    "alerts:\n  webhooks:\n"
	    "    - { url: \"http://127.0.0.1:%d/hook?x=1\", format: %s%s }\n"
	    "  retry: %s\n",
	    fx.port, format, signed_ ? ", secret_env: TG_TEST_HOOK_SECRET" : "",
	    retry);
	fclose(f);
	cf = config_load(fx.yaml, &errs);
	for (i = 0; i < errs.ce_n; i++)
		print_error("config: %s\n", errs.ce_msgs[i]);
	assert_non_null(cf);
	cfgerrs_free(&errs);
	alerts_configure(cf);
	config_unref(cf);
}

/* Run the loop until every delivery is done, or fail after 10 s. */
static void
run_deliveries(void)
{
	long long deadline = monotime_us() + 10 * 1000000LL;

	while (alerts_pending() > 0) {
		if (monotime_us() > deadline)
			fail_msg("deliveries still pending after 10 s");
		event_base_loop(fx.base, EVLOOP_ONCE);
	}
}

/* Close the ledger (writing everything) and open it read-only. */
static sqlite3 *
reopen_ro(void)
{
	sqlite3 *db;
	char *cause = NULL;

	ledger_close();
	if ((db = spend_open(fx.path, &cause)) == NULL)
		fail_msg("spend_open: %s", cause);
	return (db);
}

/* GET /v1/alerts?qs, its status, and its body parsed. */
static cJSON *
answer(sqlite3 *db, const char *qs, int want_status, char **cause)
{
	struct spend_out o;
	const char *ctype = NULL;
	cJSON *doc = NULL;
	int status;

	*cause = NULL;
	spend_out_init(&o, SPEND_OUT_MAX);
	status = alerts_answer(db, qs, &o, &ctype, cause);
	assert_int_equal(status, want_status);
	if (status == 200) {
		assert_string_equal(ctype, "application/json");
		assert_non_null(
		    doc = cJSON_ParseWithLength(o.so_buf, o.so_len));
	}
	spend_out_free(&o);
	return (doc);
}

/* The independent HMAC: OpenSSL's HMAC(), not alerts_sign. */
static void
expect_signature(const char *body, const char *header)
{
	unsigned char md[32];
	unsigned int n = 0, i;
	char want[7 + 65];

	assert_non_null(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET),
	    (const unsigned char *)body, strlen(body), md, &n));
	assert_int_equal(n, 32);
	memcpy(want, "sha256=", 7);
	for (i = 0; i < 32; i++)
		snprintf(want + 7 + 2 * i, 3, "%02x", md[i]);
	assert_non_null(header);
	assert_string_equal(header, want);
}

static void
test_deliver_retry_then_ok(void **state)
{
	struct alert a = sample();
	sqlite3 *db;
	cJSON *doc, *al, *it;
	char id[ALERTS_ID_MAX], *cause;

	(void)state;
	configure("json", 1,
	    "{ max_attempts: 4, initial_backoff: 10ms, max_backoff: 40ms }");
	fx.replies[0] = 503;
	fx.replies[1] = 429;
	fx.replies[2] = 204;
	fx.nreplies = 3;
	alerts_fire(&a);
	assert_int_equal(alerts_pending(), 1);
	run_deliveries();
	assert_int_equal(fx.ngot, 3);
	alerts_make_id(&a, id, sizeof(id));
	/* Every attempt sends the same bytes, signed, with the id. */
	assert_string_equal(fx.got[0].body, fx.got[2].body);
	assert_string_equal(fx.got[2].id, id);
	assert_string_equal(fx.got[2].ctype, "application/json");
	expect_signature(fx.got[2].body, fx.got[2].sig);
	expect_signature(fx.got[0].body, fx.got[0].sig);
	assert_non_null(doc = cJSON_Parse(fx.got[2].body));
	assert_string_equal(cJSON_GetObjectItem(doc, "id")->valuestring, id);
	cJSON_Delete(doc);

	db = reopen_ro();
	doc = answer(db, "", 200, &cause);
	al = cJSON_GetObjectItem(doc, "alerts");
	assert_int_equal(cJSON_GetArraySize(al), 1);
	it = cJSON_GetArrayItem(al, 0);
	assert_string_equal(cJSON_GetObjectItem(it, "id")->valuestring, id);
	assert_string_equal(
	    cJSON_GetObjectItem(it, "scope_key")->valuestring, a.al_scope_key);
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(it, "scope"), "tenant")
		->valuestring,
	    "acme");
	assert_string_equal(cJSON_GetObjectItem(it, "reset_at")->valuestring,
	    "2026-11-29T00:00:00.000Z");
	it = cJSON_GetObjectItem(it, "delivery");
	assert_string_equal(
	    cJSON_GetObjectItem(it, "status")->valuestring, "delivered");
	assert_int_equal(cJSON_GetObjectItem(it, "attempts")->valueint, 3);
	cJSON_Delete(doc);
	sqlite3_close(db);
}

static void
test_deliver_4xx_fails_at_once(void **state)
{
	struct alert a = sample();
	sqlite3 *db;
	cJSON *doc, *it;
	char *cause;

	(void)state;
	configure("slack", 0,
	    "{ max_attempts: 5, initial_backoff: 10ms, max_backoff: 40ms }");
	fx.replies[0] = 400;
	fx.nreplies = 1;
	alerts_fire(&a);
	run_deliveries();
	assert_int_equal(fx.ngot, 1);
	assert_null(fx.got[0].sig); /* no secret: unsigned */
	assert_memory_equal(fx.got[0].body, "{\"text\":\"tollgate alert", 22);
	db = reopen_ro();
	doc = answer(db, "limit=1", 200, &cause);
	it = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "alerts"), 0);
	it = cJSON_GetObjectItem(it, "delivery");
	assert_string_equal(
	    cJSON_GetObjectItem(it, "status")->valuestring, "failed");
	assert_int_equal(cJSON_GetObjectItem(it, "attempts")->valueint, 1);
	cJSON_Delete(doc);
	sqlite3_close(db);
}

static void
test_deliver_gives_up(void **state)
{
	struct alert a = sample();

	(void)state;
	configure("json", 0,
	    "{ max_attempts: 2, initial_backoff: 5ms, max_backoff: 5ms }");
	fx.replies[0] = 500;
	fx.replies[1] = 500;
	fx.replies[2] = 200;
	fx.nreplies = 3;
	alerts_fire(&a);
	run_deliveries();
	assert_int_equal(fx.ngot, 2); /* the third is never tried */
}

/* A 429's Retry-After is honoured, but never beyond max_backoff. */
static void
test_retry_after(void **state)
{
	struct alert a = sample();
	long long gap;

	(void)state;
	configure("json", 0,
	    "{ max_attempts: 3, initial_backoff: 10ms, max_backoff: 1500ms }");
	fx.replies[0] = 429;
	fx.nreplies = 1;
	fx.retry_after = "1";
	alerts_fire(&a);
	run_deliveries();
	assert_int_equal(fx.ngot, 2);
	gap = fx.t_got[1] - fx.t_got[0];
	print_message("gap after Retry-After: 1 was %lld us\n", gap);
	assert_true(gap >= 950000 && gap < 5000000);

	/* Retry-After beyond max_backoff is cut to it. */
	configure("json", 0,
	    "{ max_attempts: 3, initial_backoff: 10ms, max_backoff: 200ms }");
	fx.replies[2] = 429;
	fx.nreplies = 3;
	fx.retry_after = "120";
	a.al_threshold_nusd = 45 * USD;
	alerts_fire(&a);
	run_deliveries();
	assert_int_equal(fx.ngot, 4);
	gap = fx.t_got[3] - fx.t_got[2];
	print_message("gap after Retry-After: 120 was %lld us\n", gap);
	assert_true(gap >= 190000 && gap < 5000000);
}

static void
test_answer_params(void **state)
{
	struct alert a = sample(), b = sample();
	sqlite3 *db;
	cJSON *doc, *al;
	char *cause;

	(void)state;
	b.al_kind = "kill";
	b.al_at_ms = AT + 3600000; /* an hour later */
	alerts_fire(&a); /* no webhooks configured: logged and persisted */
	alerts_fire(&b);
	assert_int_equal(alerts_pending(), 0);
	db = reopen_ro();
	doc = answer(db, "", 200, &cause);
	al = cJSON_GetObjectItem(doc, "alerts");
	assert_int_equal(cJSON_GetArraySize(al), 2);
	/* Newest first. */
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(al, 0), "kind")->valuestring,
	    "kill");
	assert_string_equal(
	    cJSON_GetObjectItem(
		cJSON_GetObjectItem(cJSON_GetArrayItem(al, 1), "delivery"),
		"status")
		->valuestring,
	    "none");
	cJSON_Delete(doc);
	doc = answer(db, "since=2026-11-28T15%3A00%3A00Z", 200, &cause);
	assert_int_equal(
	    cJSON_GetArraySize(cJSON_GetObjectItem(doc, "alerts")), 1);
	cJSON_Delete(doc);
	doc = answer(db, "since=2026-11-28&limit=1", 200, &cause);
	assert_int_equal(
	    cJSON_GetArraySize(cJSON_GetObjectItem(doc, "alerts")), 1);
	cJSON_Delete(doc);
	doc = answer(db, "since=2026-11-29", 200, &cause);
	assert_int_equal(
	    cJSON_GetArraySize(cJSON_GetObjectItem(doc, "alerts")), 0);
	cJSON_Delete(doc);

	answer(db, "limit=0", 400, &cause);
	assert_string_equal(cause, "limit: expected a number from 1 to 1000");
	free(cause);
	answer(db, "limit=1001", 400, &cause);
	free(cause);
	answer(db, "since=yesterday", 400, &cause);
	assert_memory_equal(cause, "since: ", 7);
	free(cause);
	answer(db, "colour=red", 400, &cause);
	assert_string_equal(cause, "unknown parameter 'colour'");
	free(cause);
	answer(db, "limit=5&limit=6", 400, &cause);
	assert_string_equal(cause, "limit: given twice");
	free(cause);
	sqlite3_close(db);
}

/*
 * An alert still pending in the ledger (tollgate stopped before it was
 * delivered) is sent again at start-up, once even if resumed twice; one
 * already delivered, or fired too long ago, is not.
 */
static void
test_resume_pending(void **state)
{
	struct ledger_alert la;
	struct alert a = sample();
	sqlite3 *db;
	cJSON *doc, *it;
	char *cause = NULL, id[ALERTS_ID_MAX];
	int64_t now = AT + 60000;

	(void)state;
	alerts_make_id(&a, id, sizeof(id));
	memset(&la, 0, sizeof(la));
	la.la_id = id;
	la.la_fired_ms = AT;
	la.la_kind = "threshold";
	la.la_policy = a.al_policy;
	la.la_scope_key = a.al_scope_key;
	la.la_tags[TAG_TENANT] = "acme";
	la.la_window = "day";
	la.la_window_start = DAY0;
	la.la_reset_at = DAY1;
	la.la_threshold_nusd = a.al_threshold_nusd;
	la.la_spent_nusd = a.al_spent_nusd;
	la.la_cap_nusd = a.al_cap_nusd;
	la.la_delivery = "pending";
	assert_int_equal(ledger_alert(&la), 0);
	la.la_id = "old-pending";
	la.la_fired_ms = AT - 2 * 86400000LL;
	assert_int_equal(ledger_alert(&la), 0);
	la.la_id = "done";
	la.la_fired_ms = AT;
	la.la_delivery = "delivered";
	assert_int_equal(ledger_alert(&la), 0);
	db = reopen_ro();
	if (ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause) != 0)
		fail_msg("ledger_open: %s", cause);

	configure("json", 1,
	    "{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 10ms }");
	assert_int_equal(alerts_resume(db, now, &cause), 0);
	assert_int_equal(alerts_resume(db, now, &cause), 0);
	assert_int_equal(alerts_pending(), 1);
	sqlite3_close(db);
	run_deliveries();
	assert_int_equal(fx.ngot, 1);
	assert_string_equal(fx.got[0].id, id);
	expect_signature(fx.got[0].body, fx.got[0].sig);
	/* The same body a live firing sends. */
	{
		struct spend_out o;
		char *want;

		spend_out_init(&o, ALERTS_BODY_MAX);
		alerts_body_json(&a, id, NULL, 0, &o);
		want = out_text(&o);
		assert_string_equal(fx.got[0].body, want);
		free(want);
	}
	db = reopen_ro();
	doc = answer(db, "limit=1000", 200, &cause);
	it = cJSON_GetObjectItem(doc, "alerts");
	assert_int_equal(cJSON_GetArraySize(it), 3);
	it = cJSON_GetArrayItem(it, 0); /* "done" and id share fired_at */
	if (strcmp(cJSON_GetObjectItem(it, "id")->valuestring, id) != 0)
		it = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "alerts"), 1);
	assert_string_equal(cJSON_GetObjectItem(it, "id")->valuestring, id);
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(it, "delivery"), "status")
		->valuestring,
	    "delivered");
	cJSON_Delete(doc);
	sqlite3_close(db);
}

/*
 * The whole cycle without the daemon: spend crosses 80 %, the threshold
 * fires and is persisted; a "restart" (new counters, restore from the
 * ledger) does not fire it again in the same day, and a new day re-arms
 * it. A policy whose scope changed (per tenant -> per team) does not
 * inherit the state.
 */
static void
test_restore(void **state)
{
	static const char yaml[] = "- name: researcher-daily\n"
				   "  match: { agent_class: researcher }\n"
				   "  per: [tenant]\n"
				   "  window: day\n"
				   "  hard_cap_usd: 50\n"
				   "  alert_at_percent: 80\n";
	struct policyset *ps, *other;
	struct policy_counters *pc;
	struct policy_decision pd;
	struct policy_alert al[4];
	struct policy_call c = mkcall("support", "acme", "gpt-4o", USD);
	int64_t now = AT;
	sqlite3 *db;
	cJSON *doc, *it;
	char *cause = NULL;
	size_t n;

	(void)state;
	c.pc_attr[TAG_AGENT_CLASS] = "researcher";
	ps = load_ok(yaml);
	pc = policy_counters_new();
	policy_admit(ps, pc, &c, now, &pd);
	assert_non_null(pd.pd_res);
	policy_settle(pd.pd_res, 41 * USD, 0, now);
	n = policy_fired(ps, pc, c.pc_attr, now, al, nitems(al));
	assert_int_equal(n, 1);
	alerts_threshold(&al[0], c.pc_attr, now);
	policy_counters_free(pc);

	db = reopen_ro();
	doc = answer(db, "", 200, &cause);
	it = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "alerts"), 0);
	assert_string_equal(
	    cJSON_GetObjectItem(it, "policy")->valuestring, "researcher-daily");
	assert_string_equal(
	    cJSON_GetObjectItem(it, "window")->valuestring, "day");
	assert_string_equal(cJSON_GetObjectItem(it, "scope_key")->valuestring,
	    "match{agent_class=researcher}per{tenant=acme}window{day}");
	assert_string_equal(
	    cJSON_GetObjectItem(it, "window_start")->valuestring,
	    "2026-11-28T00:00:00.000Z");
	assert_float_equal(
	    cJSON_GetObjectItem(it, "threshold_usd")->valuedouble, 40.0, 1e-9);
	assert_float_equal(
	    cJSON_GetObjectItem(it, "percent_of_cap")->valuedouble, 82.0, 1e-9);
	cJSON_Delete(doc);

	/*
	 * Restart, same day: the spend comes back (as policy_rebuild would
	 * bring it) and the firing is restored, so nothing fires again.
	 */
	pc = policy_counters_new();
	assert_int_equal(alerts_restore(pc, ps, db, now + 60000, &cause), 0);
	policy_admit(ps, pc, &c, now + 60000, &pd);
	policy_settle(pd.pd_res, 42 * USD, 0, now + 60000);
	assert_int_equal(
	    policy_fired(ps, pc, c.pc_attr, now + 60000, al, nitems(al)), 0);
	/* Another tenant's scope was never marked. */
	c.pc_attr[TAG_TENANT] = "globex";
	policy_admit(ps, pc, &c, now + 60000, &pd);
	policy_settle(pd.pd_res, 45 * USD, 0, now + 60000);
	assert_int_equal(
	    policy_fired(ps, pc, c.pc_attr, now + 60000, al, nitems(al)), 1);
	c.pc_attr[TAG_TENANT] = "acme";
	policy_counters_free(pc);

	/* Restart the next day: the old firing is not restored. */
	pc = policy_counters_new();
	assert_int_equal(alerts_restore(pc, ps, db, DAY1 + 1000, &cause), 0);
	policy_admit(ps, pc, &c, DAY1 + 1000, &pd);
	policy_settle(pd.pd_res, 41 * USD, 0, DAY1 + 1000);
	assert_int_equal(
	    policy_fired(ps, pc, c.pc_attr, DAY1 + 1000, al, nitems(al)), 1);
	policy_counters_free(pc);

	/* A policy whose scope changed inherits nothing. */
	other = load_ok("- name: researcher-daily\n"
			"  match: { agent_class: researcher }\n"
			"  per: [team]\n"
			"  window: day\n"
			"  hard_cap_usd: 50\n"
			"  alert_at_percent: 80\n");
	pc = policy_counters_new();
	assert_int_equal(alerts_restore(pc, other, db, now + 60000, &cause), 0);
	policy_admit(other, pc, &c, now + 60000, &pd);
	policy_settle(pd.pd_res, 41 * USD, 0, now + 60000);
	assert_int_equal(
	    policy_fired(other, pc, c.pc_attr, now + 60000, al, nitems(al)), 1);
	policy_counters_free(pc);
	policy_free(other);
	policy_free(ps);
	sqlite3_close(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_body_json),
	    cmocka_unit_test(test_body_extend),
	    cmocka_unit_test(test_body_slack),
	    cmocka_unit_test(test_breaker_says_what_tripped),
	    cmocka_unit_test(test_hmac_vector),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_classify),
	    cmocka_unit_test(test_ids),
	    cmocka_unit_test(test_window_name),
	    cmocka_unit_test_setup_teardown(
		test_deliver_retry_then_ok, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_deliver_4xx_fails_at_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_deliver_gives_up, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_after, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_answer_params, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restore, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_resume_pending, setup, teardown),
	};

	(void)budget_is; /* policytest.h's, unused here */
	log_init(1, 0);
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
