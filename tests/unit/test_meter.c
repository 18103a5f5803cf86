/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Provider adapters and the meter, data-driven (curl tests/data style):
 * every tests/fixtures/<provider>/<case>.expect.json names a response body
 * (<case>.sse or <case>.json), how it was asked for and answered, and the
 * normalised usage it must give; <case>.client.sse, when present, is the
 * exact byte stream the client must receive (injected OpenAI streams),
 * otherwise the client must receive the body unchanged. Each body is fed
 * whole, split at every byte offset, in random pieces and byte by byte,
 * and must give identical usage and identical relayed bytes every time.
 *
 * Then meter_request: a table of request bodies and the bounds, model and
 * include_usage injection each must give, and a table of the bodies it
 * refuses (any that a provider could read otherwise than tollgate) with
 * the key each refusal must name.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "tollgate/config.h"
#include "tollgate/meter.h"
#include "tollgate/route.h"
#include "tollgate/usage.h"
#include "tollgate/util.h"

#include "../../src/meter/providers/providers.h"

#ifndef TG_SOURCE_DIR
#define TG_SOURCE_DIR "."
#endif

struct buf {
	char *b;
	size_t len;
	size_t cap;
};

static void
buf_add(struct buf *b, const char *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->b = xreallocarray(b->b, 1, b->cap);
	}
	memcpy(b->b + b->len, p, n);
	b->len += n;
}

static void
emit_cb(void *arg, const char *p, size_t n)
{
	assert_true(n > 0);
	buf_add(arg, p, n);
}

static char *
read_file(const char *path, size_t *len)
{
	FILE *f;
	struct buf b = {0};
	char chunk[8192];
	size_t n;

	if ((f = fopen(path, "rb")) == NULL)
		return (NULL);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_add(&b, chunk, n);
	fclose(f);
	buf_add(&b, "", 1);
	*len = b.len - 1;
	return (b.b);
}

/* One fixture, loaded. */
struct fixture {
	char name[1024];
	struct route rt;
	struct call_info ci;
	int status;
	char ctype[128];
	int complete;
	char *body;
	size_t bodylen;
	char *client; /* expected client bytes */
	size_t clientlen;
	struct usage want;
};

static const struct {
	const char *name;
	enum endpoint ep;
} endpoints[] = {
    {"chat", EP_CHAT},
    {"completions", EP_COMPLETIONS},
    {"embeddings", EP_EMBEDDINGS},
    {"responses", EP_RESPONSES},
    {"models", EP_MODELS},
    {"messages", EP_MESSAGES},
    {"count_tokens", EP_COUNT_TOKENS},
    {"generate", EP_GEMINI_GENERATE},
    {"stream", EP_GEMINI_STREAM},
    {"embed", EP_GEMINI_EMBED},
};

static const char *
jstr(const cJSON *o, const char *k, const char *def)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);

	return (cJSON_IsString(it) ? it->valuestring : def);
}

static int64_t
jint(const cJSON *o, const char *k, int64_t def)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);

	if (cJSON_IsBool(it))
		return (cJSON_IsTrue(it));
	return (cJSON_IsNumber(it) ? (int64_t)it->valuedouble : def);
}

static void
fixture_load(struct fixture *fx, const char *dir, const char *base)
{
	char path[2048];
	const cJSON *call, *u;
	cJSON *ex;
	char *text;
	const char *fam, *ep, *src;
	size_t len, i;

	memset(fx, 0, sizeof(*fx));
	snprintf(fx->name, sizeof(fx->name), "%s/%s", dir, base);
	snprintf(path, sizeof(path), "%s/%s.expect.json", dir, base);
	if ((text = read_file(path, &len)) == NULL)
		fail_msg("%s: cannot read", path);
	if ((ex = cJSON_ParseWithLength(text, len)) == NULL)
		fail_msg("%s: not JSON", path);
	free(text);

	fam = jstr(ex, "family", "");
	if (strcmp(fam, "openai") == 0)
		fx->rt.rt_family = FAMILY_OPENAI;
	else if (strcmp(fam, "anthropic") == 0)
		fx->rt.rt_family = FAMILY_ANTHROPIC;
	else if (strcmp(fam, "gemini") == 0)
		fx->rt.rt_family = FAMILY_GEMINI;
	else
		fail_msg("%s: family %s", path, fam);
	ep = jstr(ex, "endpoint", "");
	if (strcmp(ep, "count_tokens") == 0 &&
	    fx->rt.rt_family == FAMILY_GEMINI)
		fx->rt.rt_endpoint = EP_GEMINI_COUNT_TOKENS;
	else {
		for (i = 0; i < nitems(endpoints); i++) {
			if (strcmp(ep, endpoints[i].name) == 0)
				break;
		}
		if (i == nitems(endpoints))
			fail_msg("%s: endpoint %s", path, ep);
		fx->rt.rt_endpoint = endpoints[i].ep;
	}
	fx->rt.rt_metered = !(fx->rt.rt_endpoint == EP_MODELS ||
	    fx->rt.rt_endpoint == EP_COUNT_TOKENS ||
	    fx->rt.rt_endpoint == EP_GEMINI_COUNT_TOKENS);
	snprintf(fx->rt.rt_model, sizeof(fx->rt.rt_model), "%s",
	    jstr(ex, "route_model", ""));
	fx->status = (int)jint(ex, "status", 200);
	snprintf(fx->ctype, sizeof(fx->ctype), "%s",
	    jstr(ex, "content_type", "application/json"));
	fx->complete = (int)jint(ex, "complete", 1);

	call = cJSON_GetObjectItemCaseSensitive(ex, "call");
	snprintf(fx->ci.ci_model, sizeof(fx->ci.ci_model), "%s",
	    jstr(call, "model", fx->rt.rt_model));
	fx->ci.ci_max_output = jint(call, "max_output", -1);
	fx->ci.ci_n = (int)jint(call, "n", 1);
	fx->ci.ci_input_estimate = jint(call, "input_estimate", 0);
	fx->ci.ci_usage_injected = (int)jint(call, "usage_injected", 0);
	fx->ci.ci_stream = strstr(fx->ctype, "event-stream") != NULL;

	u = cJSON_GetObjectItemCaseSensitive(ex, "usage");
	if (u == NULL)
		fail_msg("%s: no usage", path);
	src = jstr(u, "source", "");
	fx->want.u_source = strcmp(src, "reported") == 0 ? USAGE_REPORTED
	    : strcmp(src, "estimated") == 0		 ? USAGE_ESTIMATED
							 : USAGE_NONE;
	fx->want.u_input = jint(u, "input", 0);
	fx->want.u_output = jint(u, "output", 0);
	fx->want.u_cached = jint(u, "cached", 0);
	fx->want.u_cache_write = jint(u, "cache_write", 0);
	fx->want.u_cache_write_1h = jint(u, "cache_write_1h", 0);
	fx->want.u_reasoning = jint(u, "reasoning", 0);
	fx->want.u_incomplete = (int)jint(u, "incomplete", 0);
	snprintf(fx->want.u_model, sizeof(fx->want.u_model), "%s",
	    jstr(u, "model", ""));
	snprintf(fx->want.u_service_tier, sizeof(fx->want.u_service_tier), "%s",
	    jstr(u, "service_tier", ""));
	cJSON_Delete(ex);

	snprintf(path, sizeof(path), "%s/%s.sse", dir, base);
	if ((fx->body = read_file(path, &fx->bodylen)) == NULL) {
		snprintf(path, sizeof(path), "%s/%s.json", dir, base);
		if ((fx->body = read_file(path, &fx->bodylen)) == NULL)
			fail_msg("%s: no .sse or .json body", fx->name);
	}
	snprintf(path, sizeof(path), "%s/%s.client.sse", dir, base);
	if ((fx->client = read_file(path, &fx->clientlen)) == NULL) {
		fx->client = xstrndup(fx->body, fx->bodylen);
		fx->clientlen = fx->bodylen;
	}
}

static void
fixture_free(struct fixture *fx)
{
	free(fx->body);
	free(fx->client);
}

/* Run a fixture's body through a meter in the pieces ending at cuts[]. */
static void
fixture_run(const struct fixture *fx, const size_t *cuts, size_t ncuts,
    struct buf *out, struct usage *u)
{
	struct meter *m;
	size_t at = 0, i;

	out->len = 0;
	m = meter_new(&fx->rt, &fx->ci);
	meter_response(m, fx->status, fx->ctype);
	for (i = 0; i < ncuts; i++) {
		meter_feed(m, fx->body + at, cuts[i] - at, emit_cb, out);
		at = cuts[i];
	}
	meter_feed(m, fx->body + at, fx->bodylen - at, emit_cb, out);
	meter_finish(m, fx->complete, emit_cb, out, u);
	meter_free(m);
}

static const char *
source_name(enum usage_source s)
{
	return (s == USAGE_REPORTED    ? "reported"
		: s == USAGE_ESTIMATED ? "estimated"
				       : "none");
}

static int
usage_equal(const struct usage *a, const struct usage *b)
{
	return (a->u_input == b->u_input && a->u_output == b->u_output &&
	    a->u_cached == b->u_cached &&
	    a->u_cache_write == b->u_cache_write &&
	    a->u_cache_write_1h == b->u_cache_write_1h &&
	    a->u_reasoning == b->u_reasoning && a->u_source == b->u_source &&
	    a->u_incomplete == b->u_incomplete &&
	    strcmp(a->u_model, b->u_model) == 0 &&
	    strcmp(a->u_service_tier, b->u_service_tier) == 0);
}

static void
usage_print(const char *what, const struct usage *u)
{
	print_error("  %s: %s in %lld out %lld cached %lld cw %lld cw1h %lld "
		    "reasoning %lld incomplete %d model [%s] tier [%s]\n",
	    what, source_name(u->u_source), (long long)u->u_input,
	    (long long)u->u_output, (long long)u->u_cached,
	    (long long)u->u_cache_write, (long long)u->u_cache_write_1h,
	    (long long)u->u_reasoning, u->u_incomplete, u->u_model,
	    u->u_service_tier);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (rng_state);
}

static int
cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return (x < y ? -1 : x > y);
}

/* Run one fixture every way; returns the number of failures. */
static int
fixture_check(const struct fixture *fx)
{
	struct buf out = {0};
	struct usage u, u2;
	size_t cut, *cuts, n, i, r;
	int fails = 0;

	fixture_run(fx, NULL, 0, &out, &u);
	if (!usage_equal(&u, &fx->want)) {
		print_error("%s: usage differs\n", fx->name);
		usage_print("got ", &u);
		usage_print("want", &fx->want);
		fails++;
	}
	if (out.len != fx->clientlen || memcmp(out.b, fx->client, out.len)) {
		print_error("%s: client bytes differ (%zu bytes, want %zu)\n",
		    fx->name, out.len, fx->clientlen);
		for (i = 0; i < out.len && i < fx->clientlen; i++) {
			if (out.b[i] != fx->client[i])
				break;
		}
		print_error("  first difference at byte %zu\n", i);
		fails++;
	}
	/* A split anywhere must change nothing. */
	for (cut = 0; cut <= fx->bodylen && fails == 0; cut++) {
		fixture_run(fx, &cut, 1, &out, &u2);
		if (!usage_equal(&u, &u2) || out.len != fx->clientlen ||
		    memcmp(out.b, fx->client, out.len) != 0) {
			print_error(
			    "%s: differs when split at %zu\n", fx->name, cut);
			usage_print("split", &u2);
			fails++;
		}
	}
	cuts = xcalloc(fx->bodylen + 64, sizeof(*cuts));
	for (r = 0; r < 32 && fails == 0; r++) {
		n = 2 + rng() % 40;
		for (i = 0; i < n; i++)
			cuts[i] = rng() % (fx->bodylen + 1);
		qsort(cuts, n, sizeof(*cuts), cmp_size);
		fixture_run(fx, cuts, n, &out, &u2);
		if (!usage_equal(&u, &u2) || out.len != fx->clientlen ||
		    memcmp(out.b, fx->client, out.len) != 0) {
			print_error("%s: differs in %zu random pieces\n",
			    fx->name, n + 1);
			fails++;
		}
	}
	for (i = 0; i < fx->bodylen; i++)
		cuts[i] = i;
	if (fails == 0) {
		fixture_run(fx, cuts, fx->bodylen, &out, &u2);
		if (!usage_equal(&u, &u2) || out.len != fx->clientlen ||
		    memcmp(out.b, fx->client, out.len) != 0) {
			print_error("%s: differs byte by byte\n", fx->name);
			fails++;
		}
	}
	free(cuts);
	free(out.b);
	return (fails);
}

static void
test_fixtures(void **state)
{
	static const char *const providers[] = {
	    "openai", "anthropic", "gemini"};
	static const char suffix[] = ".expect.json";
	char dir[512], base[256];
	struct fixture fx;
	struct dirent *de;
	DIR *d;
	size_t i, n, count = 0;
	int fails = 0;

	(void)state;
	for (i = 0; i < nitems(providers); i++) {
		snprintf(dir, sizeof(dir), "%s/tests/fixtures/%s",
		    TG_SOURCE_DIR, providers[i]);
		if ((d = opendir(dir)) == NULL)
			fail_msg("cannot open %s", dir);
		while ((de = readdir(d)) != NULL) {
			n = strlen(de->d_name);
			if (n <= sizeof(suffix) - 1 ||
			    strcmp(de->d_name + n - (sizeof(suffix) - 1),
				suffix) != 0)
				continue;
			snprintf(base, sizeof(base), "%.*s",
			    (int)(n - (sizeof(suffix) - 1)), de->d_name);
			fixture_load(&fx, dir, base);
			fails += fixture_check(&fx);
			fixture_free(&fx);
			count++;
		}
		closedir(d);
	}
	print_message("%zu fixtures\n", count);
	assert_true(count >= 30);
	assert_int_equal(fails, 0);
}

/*
 * meter_request. body_out is the exact rewritten body, or NULL when the
 * body must be forwarded as it is.
 */
struct req_case {
	const char *name;
	enum api_family family;
	enum endpoint ep;
	const char *rt_model;
	const char *body;
	const char *model;
	int stream;
	int64_t max_output;
	int n;
	const char *body_out;
};

#define SEED "\"seed\": 12345678901234567890"

static const struct req_case req_cases[] = {
    {"chat stream: include_usage added at the end", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"gpt-4o\",\"stream\":true," SEED ",\"temperature\":0.70,"
	"\"messages\":[{\"role\":\"user\",\"content\":\"a } \\\" {\"}]}",
	"gpt-4o", 1, -1, 1,
	"{\"model\":\"gpt-4o\",\"stream\":true," SEED ",\"temperature\":0.70,"
	"\"messages\":[{\"role\":\"user\",\"content\":\"a } \\\" {\"}],"
	"\"stream_options\":{\"include_usage\":true}}"},
    {"pretty body with trailing newline", FAMILY_OPENAI, EP_CHAT, "",
	"{\n  \"model\": \"gpt-5-nano\",\n  \"stream\": true,\n"
	"  \"max_completion_tokens\": 500,\n  \"max_tokens\": 100\n}\n",
	"gpt-5-nano", 1, 500, 1,
	"{\n  \"model\": \"gpt-5-nano\",\n  \"stream\": true,\n"
	"  \"max_completion_tokens\": 500,\n  \"max_tokens\": 100\n,"
	"\"stream_options\":{\"include_usage\":true}}\n"},
    /* JavaScript writes a string cut inside an emoji with a lone
     * surrogate; the providers read it, and so does tollgate. */
    {"lone surrogate in a message", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\","
	"\"content\":\"cut \\ud83d\"}]}",
	"m", 1, -1, 1,
	"{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\","
	"\"content\":\"cut \\ud83d\"}],\"stream_options\":{\"include_usage\":"
	"true}}"},
    {"already asked for usage", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":"
	"{\"include_usage\":true},\"n\":3}",
	"gpt-4o", 1, -1, 3, NULL},
    {"include_usage false is flipped in place", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"m\",\"stream\":true,\"stream_options\":"
	"{\"include_usage\": false, \"include_obfuscation\":false}," SEED "}",
	"m", 1, -1, 1,
	"{\"model\":\"m\",\"stream\":true,\"stream_options\":"
	"{\"include_usage\": true, \"include_obfuscation\":false}," SEED "}"},
    {"empty stream_options", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"m\",\"stream\":true,\"stream_options\":{ }}", "m", 1, -1,
	1,
	"{\"model\":\"m\",\"stream\":true,\"stream_options\":"
	"{ \"include_usage\":true}}"},
    {"vllm continuous_usage_stats kept", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"m\",\"stream\":true,\"stream_options\":"
	"{\"continuous_usage_stats\":true}}",
	"m", 1, -1, 1,
	"{\"model\":\"m\",\"stream\":true,\"stream_options\":"
	"{\"continuous_usage_stats\":true,\"include_usage\":true}}"},
    {"stream_options null", FAMILY_OPENAI, EP_CHAT, "",
	"{\"stream_options\":null,\"model\":\"m\",\"stream\":true}", "m", 1, -1,
	1,
	"{\"stream_options\":{\"include_usage\":true},\"model\":\"m\","
	"\"stream\":true}"},
    {"not streamed: untouched", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"gpt-4o\",\"stream\":false,\"max_tokens\":64}", "gpt-4o",
	0, 64, 1, NULL},
    {"legacy completions stream, best_of", FAMILY_OPENAI, EP_COMPLETIONS, "",
	"{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"Say this\","
	"\"stream\":true,\"n\":2,\"best_of\":5}",
	"gpt-3.5-turbo-instruct", 1, 16, 5,
	"{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"Say this\","
	"\"stream\":true,\"n\":2,\"best_of\":5,"
	"\"stream_options\":{\"include_usage\":true}}"},
    {"legacy completions max_tokens", FAMILY_OPENAI, EP_COMPLETIONS, "",
	"{\"model\":\"davinci-002\",\"prompt\":\"x\",\"max_tokens\":200}",
	"davinci-002", 0, 200, 1, NULL},
    {"responses stream: never rewritten", FAMILY_OPENAI, EP_RESPONSES, "",
	"{\"model\":\"gpt-5\",\"input\":\"hi\",\"stream\":true,"
	"\"max_output_tokens\":1024}",
	"gpt-5", 1, 1024, 1, NULL},
    {"embeddings have no output", FAMILY_OPENAI, EP_EMBEDDINGS, "",
	"{\"model\":\"text-embedding-3-small\",\"input\":[\"a\",\"b\"]}",
	"text-embedding-3-small", 0, 0, 1, NULL},
    {"azure deployment is the model", FAMILY_OPENAI, EP_CHAT, "prod-gpt4o",
	"{\"model\":\"gpt-4o\",\"max_completion_tokens\":10}", "prod-gpt4o", 0,
	10, 1, NULL},
    {"anthropic stream: never rewritten", FAMILY_ANTHROPIC, EP_MESSAGES, "",
	"{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024,\"stream\":true,"
	"\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}",
	"claude-sonnet-4-5", 1, 1024, 1, NULL},
    {"anthropic count_tokens is free", FAMILY_ANTHROPIC, EP_COUNT_TOKENS, "",
	"{\"model\":\"claude-sonnet-4-5\",\"messages\":[{\"role\":\"user\","
	"\"content\":\"Hello\"}]}",
	"claude-sonnet-4-5", 0, -1, 1, NULL},
    {"gemini generate", FAMILY_GEMINI, EP_GEMINI_GENERATE, "gemini-2.5-flash",
	"{\"contents\":[{\"parts\":[{\"text\":\"hi\"}]}],\"generationConfig\":"
	"{\"maxOutputTokens\":256,\"candidateCount\":2}}",
	"gemini-2.5-flash", 0, 256, 2, NULL},
    {"gemini stream from the URL", FAMILY_GEMINI, EP_GEMINI_STREAM,
	"gemini-2.5-pro",
	"{\"contents\":[{\"parts\":[{\"text\":\"hi\"}]}],\"stream\":false}",
	"gemini-2.5-pro", 1, -1, 1, NULL},
    {"gemini countTokens is free", FAMILY_GEMINI, EP_GEMINI_COUNT_TOKENS,
	"gemini-2.5-flash", "{\"contents\":[]}", "gemini-2.5-flash", 0, -1, 1,
	NULL},
    {"models: no body", FAMILY_OPENAI, EP_MODELS, "", "", "", 0, -1, 1, NULL},
    {"zero bound and count: no trusted bound, one choice", FAMILY_OPENAI,
	EP_CHAT, "", "{\"model\":\"m\",\"max_tokens\":0,\"n\":0}", "m", 0, -1,
	1, NULL},
    {"both chat bounds: the larger", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"m\",\"max_completion_tokens\":10,"
	"\"max_tokens\":100000}",
	"m", 0, 100000, 1, NULL},
    {"nulls read as absent", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"m\",\"stream\":null,\"stream_options\":null,"
	"\"n\":null,\"max_tokens\":null,\"max_completion_tokens\":9}",
	"m", 0, 9, 1, NULL},
    {"legacy completions max_tokens 0: no trusted bound", FAMILY_OPENAI,
	EP_COMPLETIONS, "", "{\"model\":\"m\",\"max_tokens\":0}", "m", 0, -1, 1,
	NULL},
    {"legacy completions max_tokens null: the default", FAMILY_OPENAI,
	EP_COMPLETIONS, "", "{\"model\":\"m\",\"max_tokens\":null}", "m", 0, 16,
	1, NULL},
    {"largest bound and count", FAMILY_OPENAI, EP_COMPLETIONS, "",
	"{\"model\":\"m\",\"max_tokens\":2147483647,\"best_of\":2147483647}",
	"m", 0, 2147483647, 2147483647, NULL},
    {"gemini embed reads no bound", FAMILY_GEMINI, EP_GEMINI_EMBED,
	"text-embedding-004",
	"{\"content\":{\"parts\":[]},\"generationConfig\":"
	"{\"maxOutputTokens\":9}}",
	"text-embedding-004", 0, 0, 1, NULL},
    {"escaped and repeated names below the levels read", FAMILY_OPENAI, EP_CHAT,
	"",
	"{\"messages\":[{\"role\":\"user\",\"r\\u006fle\":\"x\","
	"\"content\":\"\\\"model\\\":1\"}],\"metadata\":{\"a\":1,\"a\":2},"
	"\"model\":\"gpt-4o\",\"max_tokens\":5}",
	"gpt-4o", 0, 5, 1, NULL},
    {"escapes in the model that decode plainly", FAMILY_OPENAI, EP_CHAT, "",
	"{\"model\":\"gpt\\u002d4o\\/x\"}", "gpt-4o/x", 0, -1, 1, NULL},
    {"anthropic count_tokens with an odd body is forwarded", FAMILY_ANTHROPIC,
	EP_COUNT_TOKENS, "", "not json", "", 0, -1, 1, NULL},
};

static int
req_metered(enum endpoint ep)
{
	return (!(ep == EP_MODELS || ep == EP_COUNT_TOKENS ||
	    ep == EP_GEMINI_COUNT_TOKENS));
}

static void
test_request_table(void **state)
{
	const struct req_case *c;
	struct route rt;
	struct call_info ci;
	char *nb, *cause;
	size_t nlen, len, i;
	cJSON *j;

	(void)state;
	for (i = 0; i < nitems(req_cases); i++) {
		c = &req_cases[i];
		memset(&rt, 0, sizeof(rt));
		rt.rt_family = c->family;
		rt.rt_endpoint = c->ep;
		rt.rt_metered = req_metered(c->ep);
		snprintf(rt.rt_model, sizeof(rt.rt_model), "%s", c->rt_model);
		len = strlen(c->body);
		if (meter_request(&rt, c->body, len, &ci, &nb, &nlen, &cause) !=
		    0)
			fail_msg("%s: refused: %s", c->name, cause);
		assert_null(cause);
		if (strcmp(ci.ci_model, c->model) != 0 ||
		    ci.ci_stream != c->stream ||
		    ci.ci_max_output != c->max_output || ci.ci_n != c->n ||
		    ci.ci_input_estimate !=
			(rt.rt_metered ? (int64_t)(len + 3) / 4 : 0) ||
		    ci.ci_usage_injected != (c->body_out != NULL))
			fail_msg("%s: model [%s] stream %d max %lld n %d est "
				 "%lld injected %d",
			    c->name, ci.ci_model, ci.ci_stream,
			    (long long)ci.ci_max_output, ci.ci_n,
			    (long long)ci.ci_input_estimate,
			    ci.ci_usage_injected);
		if (c->body_out == NULL) {
			if (nb != NULL)
				fail_msg("%s: rewrote to %.*s", c->name,
				    (int)nlen, nb);
			continue;
		}
		if (nb == NULL)
			fail_msg("%s: not rewritten", c->name);
		if (nlen != strlen(c->body_out) ||
		    memcmp(nb, c->body_out, nlen) != 0)
			fail_msg("%s: rewrote to\n%.*s\nwant\n%s", c->name,
			    (int)nlen, nb, c->body_out);
		/* Valid JSON that now asks for usage (read by cJSON, which
		 * refuses a lone surrogate: that case is read mended). */
		{
			char *mended = xstrndup(nb, nlen), *ls;

			if ((ls = strstr(mended, "\\ud83d\"")) != NULL)
				memcpy(ls + 2, "fffd", 4);
			j = cJSON_ParseWithLength(mended, nlen);
			free(mended);
		}
		assert_non_null(j);
		assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
		    cJSON_GetObjectItemCaseSensitive(j, "stream_options"),
		    "include_usage")));
		cJSON_Delete(j);
		if (strstr(c->body, "12345678901234567890") != NULL)
			assert_non_null(strstr(nb, SEED));
		free(nb);
	}
}

/*
 * openai_inject on a body whose stream_options cannot be edited as text
 * (meter_request refuses such bodies, so this fallback is a guard): it is
 * rebuilt with cJSON, every member kept, messages included.
 */
static void
test_inject_rebuild(void **state)
{
	static const char *const bodies[] = {
	    "{\"model\":\"m\",\"stream\":true,\"stream\\u005foptions\":"
	    "{\"include_usage\":false}}",
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\nb\"}],"
	    "\"model\":\"m\",\"stream\":true,\"stream\\u005foptions\":null}",
	};
	const cJSON *msgs;
	cJSON *root, *j;
	char *nb;
	size_t i, nlen;

	(void)state;
	for (i = 0; i < nitems(bodies); i++) {
		root = meter_json_parse(bodies[i], strlen(bodies[i]), 1);
		assert_non_null(root);
		assert_int_equal(openai_inject(bodies[i], strlen(bodies[i]),
				     root, &nb, &nlen),
		    0);
		cJSON_Delete(root);
		j = cJSON_ParseWithLength(nb, nlen);
		assert_non_null(j);
		assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
		    cJSON_GetObjectItemCaseSensitive(j, "stream_options"),
		    "include_usage")));
		msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
		if (i == 1) {
			assert_int_equal(cJSON_GetArraySize(msgs), 1);
			assert_string_equal(
			    cJSON_GetObjectItemCaseSensitive(
				cJSON_GetArrayItem(msgs, 0), "content")
				->valuestring,
			    "a\nb");
		}
		cJSON_Delete(j);
		free(nb);
	}
}

/*
 * Bodies meter_request refuses, and the words the refusal must have (the
 * key it names). Every way two JSON readers could read one of the values
 * tollgate reads differently, at every level it reads, on the routes that
 * read it; and bodies a metered route cannot read at all.
 */
static void
test_request_refused(void **state)
{
	static const struct {
		const char *name;
		enum api_family fam;
		enum endpoint ep;
		const char *body;
		size_t len; /* 0: strlen */
		const char *cause; /* a part of the message */
	} cases[] = {
	    {"model twice, after the messages", FAMILY_OPENAI, EP_CHAT,
		"{\"messages\":[],\"model\":\"gpt-4o-mini\",\"max_tokens\":5,"
		"\"model\":\"o3\"}",
		0, "\"model\" twice"},
	    {"max_tokens twice", FAMILY_ANTHROPIC, EP_MESSAGES,
		"{\"messages\":[],\"max_tokens\":1,\"model\":\"c\","
		"\"max_tokens\":9}",
		0, "\"max_tokens\" twice"},
	    {"stream twice", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"stream\":false,\"stream\":true}", 0,
		"\"stream\" twice"},
	    {"any top-level name twice", FAMILY_OPENAI, EP_CHAT,
		"{\"user\":\"a\",\"messages\":[],\"user\":\"b\",\"model\":"
		"\"m\"}",
		0, "\"user\" twice"},
	    {"include_usage twice", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"stream\":true,\"stream_options\":"
		"{\"include_usage\":false,\"include_usage\":true}}",
		0, "\"stream_options.include_usage\" twice"},
	    {"candidateCount twice", FAMILY_GEMINI, EP_GEMINI_GENERATE,
		"{\"contents\":[],\"generationConfig\":{\"candidateCount\":1,"
		"\"candidateCount\":2}}",
		0, "\"generationConfig.candidateCount\" twice"},
	    {"model in another case, alone", FAMILY_OPENAI, EP_CHAT,
		"{\"Model\":\"o3\",\"messages\":[]}", 0,
		"\"Model\", which providers may read as \"model\""},
	    {"stream in another case, next to it", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"stream\":false,\"STREAM\":true}", 0,
		"\"stream\" and \"STREAM\""},
	    {"long s folds to s", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"\xc5\xbftream\":true}", 0,
		"\"\\xc5\\xbftream\", which providers may read as \"stream\""},
	    {"kelvin sign folds to k", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"max_to\xe2\x84\xaa"
		"ens\":9}",
		0, "read as \"max_tokens\""},
	    {"include_usage in another case", FAMILY_OPENAI, EP_COMPLETIONS,
		"{\"model\":\"m\",\"stream\":true,\"stream_options\":"
		"{\"Include_Usage\":false}}",
		0, "\"stream_options.Include_Usage\""},
	    {"gemini snake_case config", FAMILY_GEMINI, EP_GEMINI_GENERATE,
		"{\"contents\":[],\"generation_config\":{}}", 0,
		"\"generation_config\", which providers may read as "
		"\"generationConfig\""},
	    {"gemini snake_case bound", FAMILY_GEMINI, EP_GEMINI_STREAM,
		"{\"contents\":[],\"generationConfig\":{\"max_output_tokens\":"
		"50000}}",
		0, "\"generationConfig.max_output_tokens\""},
	    {"escaped model name", FAMILY_OPENAI, EP_CHAT,
		"{\"messages\":[],\"mod\\u0065l\":\"o3\"}", 0,
		"\"mod\\u0065l\" with an escape"},
	    {"escaped name that decides nothing", FAMILY_OPENAI, EP_CHAT,
		"{\"messages\":[],\"model\":\"a\",\"us\\u0065r\":\"u\"}", 0,
		"\"us\\u0065r\" with an escape"},
	    {"escaped name in stream_options", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"stream\":true,\"stream_options\":"
		"{\"include\\u005fusage\":false}}",
		0, "\"stream_options.include\\u005fusage\" with an escape"},
	    {"nul in a name", FAMILY_OPENAI, EP_CHAT,
		"{\"messages\":[],\"model\":\"a\",\"n\0x\":2}", 35,
		"\"n\\x00x\" with an escape or a control byte"},
	    {"name not UTF-8", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"x\xff\":1}", 0, "not valid UTF-8"},
	    {"max_tokens 1e999", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"max_tokens\":1e999}", 0,
		"\"max_tokens\" must be a whole number from 0 to 2147483647"},
	    {"max_tokens 1.5", FAMILY_ANTHROPIC, EP_MESSAGES,
		"{\"model\":\"m\",\"max_tokens\":1.5}", 0, "(it is 1.5)"},
	    {"max_tokens 1e2", FAMILY_OPENAI, EP_COMPLETIONS,
		"{\"model\":\"m\",\"max_tokens\":1e2}", 0, "(it is 1e2)"},
	    {"max_tokens -1", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"max_tokens\":-1}", 0, "(it is -1)"},
	    {"max_tokens -0", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"max_tokens\":-0}", 0, "(it is -0)"},
	    {"max_tokens as a string", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"max_tokens\":\"10\"}", 0, "(it is \"10\")"},
	    {"max_tokens past INT32_MAX", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"max_tokens\":2147483648}", 0,
		"(it is 2147483648)"},
	    {"max_tokens past 2^53", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"max_tokens\":9007199254740993}", 0,
		"\"max_tokens\" must be"},
	    {"max_completion_tokens a float", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"max_completion_tokens\":10.0}", 0,
		"\"max_completion_tokens\" must be"},
	    {"max_output_tokens negative", FAMILY_OPENAI, EP_RESPONSES,
		"{\"model\":\"m\",\"max_output_tokens\":-5}", 0,
		"\"max_output_tokens\" must be"},
	    {"n a float", FAMILY_OPENAI, EP_CHAT, "{\"model\":\"m\",\"n\":2.0}",
		0, "\"n\" must be"},
	    {"best_of an exponent", FAMILY_OPENAI, EP_COMPLETIONS,
		"{\"model\":\"m\",\"best_of\":1e1}", 0, "\"best_of\" must be"},
	    {"maxOutputTokens a float", FAMILY_GEMINI, EP_GEMINI_GENERATE,
		"{\"generationConfig\":{\"maxOutputTokens\":8.5e3}}", 0,
		"\"generationConfig.maxOutputTokens\" must be"},
	    {"candidateCount huge", FAMILY_GEMINI, EP_GEMINI_GENERATE,
		"{\"generationConfig\":{\"candidateCount\":99999999999}}", 0,
		"\"generationConfig.candidateCount\" must be"},
	    {"stream as a string", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"gpt-4o\",\"stream\":\"true\"}", 0,
		"\"stream\" must be true or false"},
	    {"stream as a number", FAMILY_ANTHROPIC, EP_MESSAGES,
		"{\"model\":\"c\",\"stream\":1}", 0,
		"\"stream\" must be true or false"},
	    {"stream_options not an object", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\"stream_options\":true}", 0,
		"\"stream_options\" must be an object"},
	    {"generationConfig not an object", FAMILY_GEMINI,
		EP_GEMINI_GENERATE, "{\"generationConfig\":[1]}", 0,
		"\"generationConfig\" must be an object"},
	    {"raw NUL in the model", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"gpt-4o\0-mini\"}", 24, "control character"},
	    {"escaped NUL in the model", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"gpt-4o\\u0000-mini\"}", 0, "control character"},
	    {"newline in the model", FAMILY_ANTHROPIC, EP_MESSAGES,
		"{\"model\":\"claude\\nx\"}", 0, "control character"},
	    {"model not UTF-8", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"gpt-4o\xff\xfe\"}", 0,
		"\"model\" is not valid UTF-8"},
	    {"model a number", FAMILY_OPENAI, EP_EMBEDDINGS,
		"{\"model\":5,\"input\":\"x\"}", 0,
		"\"model\" must be a string"},
	    {"model too long", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":"
		"\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaa\"}",
		0, "longer than 127 bytes"},
	    {"duplicate model on a free endpoint", FAMILY_ANTHROPIC,
		EP_COUNT_TOKENS, "{\"model\":\"a\",\"model\":\"b\"}", 0,
		"\"model\" twice"},
	    {"malformed JSON", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"gpt-4o\",\"stream\":true", 0, "not valid JSON"},
	    {"trailing garbage", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"gpt-4o\",\"stream\":true} x", 0,
		"not valid JSON"},
	    {"array body", FAMILY_OPENAI, EP_CHAT, "[1,2,3]", 0,
		"not a JSON object"},
	    {"binary junk", FAMILY_ANTHROPIC, EP_MESSAGES, "\x01\xff{\"\\", 0,
		"not valid JSON"},
	    {"empty", FAMILY_GEMINI, EP_GEMINI_GENERATE, " \n", 0,
		"the request body is empty"},
	    {"lone surrogate in the model", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\\ud800\",\"messages\":[]}", 0,
		"not valid JSON"},
	    {"byte order mark", FAMILY_OPENAI, EP_CHAT,
		"\xef\xbb\xbf{\"model\":\"m\"}", 0, "byte order mark"},
	    {"control byte as whitespace", FAMILY_OPENAI, EP_CHAT,
		"{\"model\":\"m\",\x01\"n\":1}", 0,
		"only JSON whitespace may separate"},
	};
	struct route rt;
	struct call_info ci;
	char *nb, *cause;
	size_t i, nlen;
	int fails = 0, r;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		memset(&rt, 0, sizeof(rt));
		rt.rt_family = cases[i].fam;
		rt.rt_endpoint = cases[i].ep;
		rt.rt_metered = req_metered(cases[i].ep);
		r = meter_request(&rt, cases[i].body,
		    cases[i].len != 0 ? cases[i].len : strlen(cases[i].body),
		    &ci, &nb, &nlen, &cause);
		if (r != -1 || cause == NULL || nb != NULL ||
		    strstr(cause, cases[i].cause) == NULL ||
		    ci.ci_model[0] != '\0') {
			print_error("%s: r %d model [%s] cause: %s\n",
			    cases[i].name, r, ci.ci_model,
			    cause != NULL ? cause : "(none)");
			fails++;
		}
		free(cause);
		free(nb);
	}
	assert_int_equal(fails, 0);
}

/* meter_set_bound: the member each API reads, edited in the text. */
static void
test_set_bound(void **state)
{
	static const struct {
		enum api_family fam;
		enum endpoint ep;
		enum upstream_type type;
		const char *in;
		const char *out; /* NULL: refused */
	} cases[] = {
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI,
		"{\"model\":\"m\",\"max_tokens\":9000}",
		"{\"model\":\"m\",\"max_tokens\":77}"},
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI,
		"{\"max_completion_tokens\": 5 ,\"model\":\"m\"}",
		"{\"max_completion_tokens\": 77 ,\"model\":\"m\"}"},
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI,
		"{\"max_tokens\":1,\"max_completion_tokens\":2}",
		"{\"max_tokens\":77,\"max_completion_tokens\":77}"},
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI, "{\"model\":\"m\"}\n",
		"{\"model\":\"m\",\"max_completion_tokens\":77}\n"},
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI_COMPATIBLE,
		" {\"model\":\"m\"}", "{\"model\":\"m\",\"max_tokens\":77}"},
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI, "{}",
		"{\"max_completion_tokens\":77}"},
	    {FAMILY_OPENAI, EP_COMPLETIONS, UPSTREAM_OPENAI,
		"{\"prompt\":\"x\"}", "{\"prompt\":\"x\",\"max_tokens\":77}"},
	    {FAMILY_OPENAI, EP_RESPONSES, UPSTREAM_OPENAI,
		"{\"max_output_tokens\":null}", "{\"max_output_tokens\":77}"},
	    {FAMILY_ANTHROPIC, EP_MESSAGES, UPSTREAM_ANTHROPIC,
		"{\"max_tokens\":4096,\"system\":\"{\\\"max_tokens\\\":1}\"}",
		"{\"max_tokens\":77,\"system\":\"{\\\"max_tokens\\\":1}\"}"},
	    {FAMILY_GEMINI, EP_GEMINI_GENERATE, UPSTREAM_GEMINI,
		"{\"contents\":[]}",
		"{\"contents\":[],\"generationConfig\":{\"maxOutputTokens\":"
		"77}}"},
	    {FAMILY_GEMINI, EP_GEMINI_STREAM, UPSTREAM_GEMINI,
		"{\"generationConfig\":{\"temperature\":0.5}}",
		"{\"generationConfig\":{\"temperature\":0.5,"
		"\"maxOutputTokens\":77}}"},
	    {FAMILY_GEMINI, EP_GEMINI_GENERATE, UPSTREAM_GEMINI,
		"{\"generationConfig\":{\"maxOutputTokens\":8192}}",
		"{\"generationConfig\":{\"maxOutputTokens\":77}}"},
	    {FAMILY_GEMINI, EP_GEMINI_GENERATE, UPSTREAM_GEMINI,
		"{\"generationConfig\":null}", NULL},
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI, "[1,2]", NULL},
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI, "{\"a\":", NULL},
	    {FAMILY_OPENAI, EP_CHAT, UPSTREAM_OPENAI, "", NULL},
	    {FAMILY_OPENAI, EP_EMBEDDINGS, UPSTREAM_OPENAI, "{}", NULL},
	};
	struct upstream_conf uc;
	struct route rt;
	char *out;
	size_t i, outlen;
	int r;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		memset(&uc, 0, sizeof(uc));
		memset(&rt, 0, sizeof(rt));
		uc.uc_type = cases[i].type;
		rt.rt_family = cases[i].fam;
		rt.rt_endpoint = cases[i].ep;
		rt.rt_metered = 1;
		rt.rt_upstream = &uc;
		r = meter_set_bound(
		    &rt, cases[i].in, strlen(cases[i].in), 77, &out, &outlen);
		if (cases[i].out == NULL) {
			if (r != -1)
				print_error("case %zu: edited: %s\n", i, out);
			assert_int_equal(r, -1);
			assert_null(out);
			continue;
		}
		if (r != 0 || strcmp(out, cases[i].out) != 0)
			print_error("case %zu: got %s\n", i,
			    r == 0 ? out : "(refused)");
		assert_int_equal(r, 0);
		assert_string_equal(out, cases[i].out);
		assert_int_equal(outlen, strlen(out));
		free(out);
	}
}

/*
 * A level tollgate reads may have at most 1024 members, so the check of
 * its names stays cheap: 1024 are read, 1025 refused, at the top and in
 * stream_options.
 */
static void
test_request_wide(void **state)
{
	static const struct {
		const char *head, *tail;
		int members, refused;
	} cases[] = {
	    {"{", "\"model\":\"m\"}", 1023, 0},
	    {"{", "\"model\":\"m\"}", 1024, 1},
	    {"{\"model\":\"m\",\"stream\":true,\"stream_options\":{", "}}",
		1024, 0},
	    {"{\"model\":\"m\",\"stream\":true,\"stream_options\":{", "}}",
		1025, 1},
	};
	struct route rt = {.rt_family = FAMILY_OPENAI,
	    .rt_endpoint = EP_CHAT,
	    .rt_metered = 1};
	struct call_info ci;
	struct buf b;
	char *nb, *cause, member[32];
	size_t i, nlen;
	int k, r;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		memset(&b, 0, sizeof(b));
		buf_add(&b, cases[i].head, strlen(cases[i].head));
		for (k = 0; k < cases[i].members; k++) {
			snprintf(member, sizeof(member), "%s\"k%d\":0",
			    k > 0 ? "," : "", k);
			buf_add(&b, member, strlen(member));
		}
		if (cases[i].tail[0] == '"')
			buf_add(&b, ",", 1);
		buf_add(&b, cases[i].tail, strlen(cases[i].tail));
		r = meter_request(&rt, b.b, b.len, &ci, &nb, &nlen, &cause);
		if (cases[i].refused) {
			assert_int_equal(r, -1);
			assert_non_null(strstr(cause, "more than the 1024"));
			free(cause);
		} else {
			if (r != 0)
				fail_msg("case %zu: %s", i, cause);
			free(nb);
		}
		free(b.b);
	}
}

/*
 * Every prefix of a request body: never a crash; refused with a cause
 * until it is whole, then read and injected.
 */
static void
test_request_prefixes(void **state)
{
	static const char body[] =
	    "{\"model\":\"gpt-4o\",\"stream\":true,\"n\":2,"
	    "\"stream_options\":{\"include_usage\":false},"
	    "\"messages\":[{\"role\":\"user\",\"content\":\"\\u00e9 \\\"}\"}]}";
	struct route rt = {.rt_family = FAMILY_OPENAI,
	    .rt_endpoint = EP_CHAT,
	    .rt_metered = 1};
	struct call_info ci;
	char *nb, *cause;
	size_t nlen, i;
	int r;

	(void)state;
	for (i = 0; i <= sizeof(body) - 1; i++) {
		r = meter_request(&rt, body, i, &ci, &nb, &nlen, &cause);
		assert_true(ci.ci_n >= 1);
		if (i < sizeof(body) - 1) {
			assert_int_equal(r, -1);
			assert_non_null(cause);
			assert_null(nb);
			assert_int_equal(ci.ci_usage_injected, 0);
			free(cause);
		} else {
			assert_int_equal(r, 0);
			assert_non_null(nb);
			assert_int_equal(ci.ci_n, 2);
			free(nb);
		}
	}
}

/* Plain streams relay every byte at once; filtered ones hold events. */
static void
test_stream_relay_timing(void **state)
{
	static const char ev[] =
	    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":"
	    "{\"content\":\"hi\"}}],\"usage\":null}\n\n";
	struct route rt = {.rt_family = FAMILY_OPENAI,
	    .rt_endpoint = EP_CHAT,
	    .rt_metered = 1};
	struct call_info ci = {.ci_n = 1, .ci_max_output = -1};
	struct buf out = {0};
	struct usage u;
	struct meter *m;

	(void)state;
	m = meter_new(&rt, &ci);
	meter_response(m, 200, "text/event-stream");
	meter_feed(m, ev, 10, emit_cb, &out);
	assert_int_equal(out.len, 10);
	meter_finish(m, 0, emit_cb, &out, &u);
	meter_free(m);
	assert_int_equal(u.u_source, USAGE_ESTIMATED);

	out.len = 0;
	ci.ci_usage_injected = 1;
	m = meter_new(&rt, &ci);
	meter_response(m, 200, "text/event-stream");
	meter_feed(m, ev, sizeof(ev) - 2, emit_cb, &out);
	assert_int_equal(out.len, 0); /* the event is not complete yet */
	meter_feed(m, ev + sizeof(ev) - 2, 1, emit_cb, &out);
	assert_int_equal(out.len, sizeof(ev) - 1 - strlen(",\"usage\":null"));
	meter_finish(m, 1, emit_cb, &out, &u);
	/* Finishing twice and feeding after the end change nothing. */
	meter_feed(m, ev, sizeof(ev) - 1, emit_cb, &out);
	meter_finish(m, 1, emit_cb, &out, &u);
	assert_int_equal(u.u_source, USAGE_NONE);
	meter_free(m);
	meter_free(NULL);
	assert_int_equal(out.len, sizeof(ev) - 1 - strlen(",\"usage\":null"));
	free(out.b);
}

/* A body over METER_BODY_MAX: relayed whole, usage read from its tail. */
static void
test_json_tail(void **state)
{
	static const char head[] =
	    "{\"id\":\"msg_1\",\"type\":\"message\","
	    "\"model\":\"claude-sonnet-4-5\","
	    "\"content\":[{\"type\":\"text\",\"text\":\"";
	static const char tail[] =
	    "\"}],\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":10,"
	    "\"cache_read_input_tokens\":5,\"output_tokens\":1500000,"
	    "\"cache_creation_input_tokens\":0}}";
	struct route rt = {.rt_family = FAMILY_ANTHROPIC,
	    .rt_endpoint = EP_MESSAGES,
	    .rt_metered = 1};
	struct call_info ci = {.ci_n = 1, .ci_max_output = -1};
	struct buf out = {0};
	struct usage u;
	struct meter *m;
	char *filler;
	size_t flen = METER_BODY_MAX + 12345, i;

	(void)state;
	filler = xmalloc(flen);
	for (i = 0; i < flen; i++) /* text that mentions "usage" */
		filler[i] = "ab \\\"usage\\\": {x} "[i % 18];
	m = meter_new(&rt, &ci);
	meter_response(m, 200, "application/json");
	meter_feed(m, head, sizeof(head) - 1, emit_cb, &out);
	for (i = 0; i < flen; i += 65536)
		meter_feed(m, filler + i, flen - i < 65536 ? flen - i : 65536,
		    emit_cb, &out);
	meter_feed(m, tail, sizeof(tail) - 1, emit_cb, &out);
	meter_finish(m, 1, emit_cb, &out, &u);
	meter_free(m);
	assert_int_equal(out.len, sizeof(head) - 1 + flen + sizeof(tail) - 1);
	assert_int_equal(u.u_source, USAGE_REPORTED);
	assert_int_equal(u.u_input, 15);
	assert_int_equal(u.u_cached, 5);
	assert_int_equal(u.u_output, 1500000);
	free(filler);
	free(out.b);
}

/*
 * An injected stream with one event larger than the hold limit: the
 * event is relayed unfiltered as it comes, memory stays bounded, and the
 * usage chunk after it is still hidden and read.
 */
static void
test_injected_huge_event(void **state)
{
	static const char pre[] =
	    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,"
	    "\"delta\":{\"content\":\"";
	static const char post[] = "\"}}],\"usage\":null}\n\n";
	static const char usage[] =
	    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
	    "\"completion_tokens\":900000,\"total_tokens\":900003}}\n\n"
	    "data: [DONE]\n\n";
	struct route rt = {.rt_family = FAMILY_OPENAI,
	    .rt_endpoint = EP_CHAT,
	    .rt_metered = 1};
	struct call_info ci = {
	    .ci_n = 1, .ci_max_output = -1, .ci_usage_injected = 1};
	struct buf out = {0};
	struct usage u;
	struct meter *m;
	char chunk[65536];
	size_t i, total = 5 * 1024 * 1024;

	(void)state;
	memset(chunk, 'x', sizeof(chunk));
	m = meter_new(&rt, &ci);
	meter_response(m, 200, "text/event-stream");
	meter_feed(m, pre, sizeof(pre) - 1, emit_cb, &out);
	for (i = 0; i < total; i += sizeof(chunk))
		meter_feed(m, chunk, sizeof(chunk), emit_cb, &out);
	meter_feed(m, post, sizeof(post) - 1, emit_cb, &out);
	meter_feed(m, usage, sizeof(usage) - 1, emit_cb, &out);
	meter_finish(m, 1, emit_cb, &out, &u);
	meter_free(m);
	assert_int_equal(
	    out.len, sizeof(pre) - 1 + total + sizeof(post) - 1 + 14);
	assert_memory_equal(out.b + out.len - 14, "data: [DONE]\n\n", 14);
	assert_int_equal(u.u_source, USAGE_REPORTED);
	assert_int_equal(u.u_output, 900000);
	free(out.b);
}

/* Non-2xx and free endpoints: relayed, never billed, whatever they say. */
static void
test_never_billed(void **state)
{
	static const char body[] = "{\"usage\":{\"prompt_tokens\":5,"
				   "\"completion_tokens\":5}}";
	struct route rt = {.rt_family = FAMILY_OPENAI,
	    .rt_endpoint = EP_CHAT,
	    .rt_metered = 1};
	struct call_info ci = {.ci_n = 1, .ci_input_estimate = 100};
	struct buf out = {0};
	struct usage u;
	struct meter *m;
	static const int statuses[] = {400, 401, 429, 500, 503, 529, 302};
	size_t i;

	(void)state;
	for (i = 0; i < nitems(statuses); i++) {
		out.len = 0;
		m = meter_new(&rt, &ci);
		meter_response(m, statuses[i], "text/event-stream");
		meter_feed(m, body, sizeof(body) - 1, emit_cb, &out);
		meter_finish(m, 1, emit_cb, &out, &u);
		meter_free(m);
		assert_int_equal(u.u_source, USAGE_NONE);
		assert_int_equal(u.u_input + u.u_output, 0);
		assert_int_equal(out.len, sizeof(body) - 1);
	}
	free(out.b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fixtures),
	    cmocka_unit_test(test_request_table),
	    cmocka_unit_test(test_inject_rebuild),
	    cmocka_unit_test(test_request_refused),
	    cmocka_unit_test(test_request_wide),
	    cmocka_unit_test(test_set_bound),
	    cmocka_unit_test(test_request_prefixes),
	    cmocka_unit_test(test_stream_relay_timing),
	    cmocka_unit_test(test_json_tail),
	    cmocka_unit_test(test_injected_huge_event),
	    cmocka_unit_test(test_never_billed),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
