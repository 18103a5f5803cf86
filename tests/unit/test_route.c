/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Route table and path normaliser: a table of named cases, each a method
 * and request-target with the expected outcome (memcached testapp style).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgate/config.h"
#include "tollgate/route.h"
#include "tollgate/util.h"

static struct upstream_conf test_upstreams[] = {
    {.uc_name = (char[]){"openai"}, .uc_type = UPSTREAM_OPENAI},
    {.uc_name = (char[]){"anthropic"}, .uc_type = UPSTREAM_ANTHROPIC},
    {.uc_name = (char[]){"gemini"}, .uc_type = UPSTREAM_GEMINI},
    {.uc_name = (char[]){"azure"}, .uc_type = UPSTREAM_AZURE_OPENAI},
    {.uc_name = (char[]){"local"}, .uc_type = UPSTREAM_OPENAI_COMPATIBLE},
    {.uc_name = (char[]){"claude2"}, .uc_type = UPSTREAM_ANTHROPIC},
    {.uc_name = (char[]){"gem2"}, .uc_type = UPSTREAM_GEMINI},
};

static struct config test_cf = {
    .cf_upstreams = test_upstreams,
    .cf_nupstreams = nitems(test_upstreams),
};

struct route_case {
	const char *name;
	const char *method;
	const char *target;
	enum route_result result;
	const char *upstream; /* expected upstream, on ROUTE_OK */
	enum endpoint ep;
	const char *path; /* forwarded path */
	const char *query;
	const char *model;
	int metered;
};

#define REFUSED(n, m, t, r)                                                    \
	{                                                                      \
		.name = n, .method = m, .target = t, .result = r               \
	}

static const struct route_case cases[] = {
    {"openai chat", "POST", "/v1/chat/completions", ROUTE_OK, "openai", EP_CHAT,
	"/v1/chat/completions", NULL, "", 1},
    {"openai completions", "POST", "/v1/completions", ROUTE_OK, "openai",
	EP_COMPLETIONS, "/v1/completions", NULL, "", 1},
    {"openai embeddings", "POST", "/v1/embeddings", ROUTE_OK, "openai",
	EP_EMBEDDINGS, "/v1/embeddings", NULL, "", 1},
    {"openai responses", "POST", "/v1/responses", ROUTE_OK, "openai",
	EP_RESPONSES, "/v1/responses", NULL, "", 1},
    {"models is free", "GET", "/v1/models", ROUTE_OK, "openai", EP_MODELS,
	"/v1/models", NULL, "", 0},
    {"anthropic messages", "POST", "/v1/messages?beta=true", ROUTE_OK,
	"anthropic", EP_MESSAGES, "/v1/messages", "beta=true", "", 1},
    {"count_tokens is free", "POST", "/v1/messages/count_tokens", ROUTE_OK,
	"anthropic", EP_COUNT_TOKENS, "/v1/messages/count_tokens", NULL, "", 0},
    {"gemini generate", "POST",
	"/v1beta/models/gemini-2.5-flash:generateContent", ROUTE_OK, "gemini",
	EP_GEMINI_GENERATE, "/v1beta/models/gemini-2.5-flash:generateContent",
	NULL, "gemini-2.5-flash", 1},
    {"gemini stream keeps alt=sse", "POST",
	"/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", ROUTE_OK,
	"gemini", EP_GEMINI_STREAM,
	"/v1beta/models/gemini-2.5-pro:streamGenerateContent", "alt=sse",
	"gemini-2.5-pro", 1},
    {"gemini countTokens is free", "POST",
	"/v1beta/models/gemini-2.5-flash:countTokens", ROUTE_OK, "gemini",
	EP_GEMINI_COUNT_TOKENS, "/v1beta/models/gemini-2.5-flash:countTokens",
	NULL, "gemini-2.5-flash", 0},
    {"gemini embed", "POST", "/v1beta/models/text-embedding-004:embedContent",
	ROUTE_OK, "gemini", EP_GEMINI_EMBED,
	"/v1beta/models/text-embedding-004:embedContent", NULL,
	"text-embedding-004", 1},
    {"azure deployment chat", "POST",
	"/openai/deployments/gpt4o-prod/chat/"
	"completions?api-version=2024-10-21",
	ROUTE_OK, "azure", EP_CHAT,
	"/openai/deployments/gpt4o-prod/chat/completions",
	"api-version=2024-10-21", "gpt4o-prod", 1},
    {"azure deployment embeddings", "POST",
	"/openai/deployments/emb/embeddings", ROUTE_OK, "azure", EP_EMBEDDINGS,
	"/openai/deployments/emb/embeddings", NULL, "emb", 1},
    {"named compatible upstream", "POST", "/local/v1/chat/completions",
	ROUTE_OK, "local", EP_CHAT, "/v1/chat/completions", NULL, "", 1},
    {"named openai upstream", "POST", "/openai/v1/embeddings", ROUTE_OK,
	"openai", EP_EMBEDDINGS, "/v1/embeddings", NULL, "", 1},
    {"named anthropic upstream", "POST", "/claude2/v1/messages", ROUTE_OK,
	"claude2", EP_MESSAGES, "/v1/messages", NULL, "", 1},
    {"anthropic models by name", "GET", "/claude2/v1/models", ROUTE_OK,
	"claude2", EP_MODELS, "/v1/models", NULL, "", 0},
    {"a leading double slash is one", "POST", "//v1/chat/completions", ROUTE_OK,
	"openai", EP_CHAT, "/v1/chat/completions", NULL, "", 1},
    {"a leading run of slashes is one", "POST", "///local/v1/chat/completions",
	ROUTE_OK, "local", EP_CHAT, "/v1/chat/completions", NULL, "", 1},
    {"gemini model with dots inside", "POST",
	"/v1beta/models/gemini-1.5-flash-8b:generateContent", ROUTE_OK,
	"gemini", EP_GEMINI_GENERATE,
	"/v1beta/models/gemini-1.5-flash-8b:generateContent", NULL,
	"gemini-1.5-flash-8b", 1},
    {"escaped letter decodes", "POST", "/v1/chat/%63ompletions", ROUTE_OK,
	"openai", EP_CHAT, "/v1/chat/completions", NULL, "", 1},

    REFUSED("unknown path", "POST", "/v1/files", ROUTE_NOT_FOUND),
    REFUSED("other version", "POST", "/v2/chat/completions", ROUTE_NOT_FOUND),
    REFUSED("case matters", "POST", "/V1/chat/completions", ROUTE_NOT_FOUND),
    REFUSED("root", "GET", "/", ROUTE_NOT_FOUND),
    REFUSED("trailing slash", "POST", "/v1/chat/completions/", ROUTE_NOT_FOUND),
    REFUSED(
	"dot-dot", "POST", "/v1/chat/completions/../../admin", ROUTE_NOT_FOUND),
    REFUSED("dot-dot resolving to a route", "POST", "/v1/x/../chat/completions",
	ROUTE_NOT_FOUND),
    REFUSED("dot segment", "POST", "/v1/./chat/completions", ROUTE_NOT_FOUND),
    REFUSED("encoded dots", "POST", "/v1/%2e%2e/messages", ROUTE_NOT_FOUND),
    REFUSED("encoded slash", "POST", "/v1/chat%2Fcompletions", ROUTE_NOT_FOUND),
    REFUSED(
	"encoded backslash", "POST", "/v1/chat%5ccompletions", ROUTE_NOT_FOUND),
    REFUSED("encoded NUL", "POST", "/v1/chat/completions%00", ROUTE_NOT_FOUND),
    REFUSED("bad escape", "POST", "/v1/chat/completions%2", ROUTE_NOT_FOUND),
    REFUSED("absolute form", "POST", "http://evil/v1/chat/completions",
	ROUTE_NOT_FOUND),
    REFUSED("asterisk form", "OPTIONS", "*", ROUTE_NOT_FOUND),
    REFUSED("fragment", "POST", "/v1/chat/completions#x", ROUTE_NOT_FOUND),
    REFUSED("backslash", "POST", "/v1\\chat/completions", ROUTE_NOT_FOUND),
    REFUSED(
	"unknown name", "POST", "/nope/v1/chat/completions", ROUTE_NOT_FOUND),
    REFUSED("name with wrong family", "POST", "/local/v1/messages",
	ROUTE_NOT_FOUND),
    REFUSED(
	"inner double slash", "POST", "/v1//chat/completions", ROUTE_NOT_FOUND),
    REFUSED("double slash after a name", "POST", "/local//v1/chat/completions",
	ROUTE_NOT_FOUND),
    REFUSED("gemini bad model", "POST", "/v1beta/models/a$b:generateContent",
	ROUTE_BAD_NAME),
    REFUSED("gemini dot-dot model", "POST", "/v1beta/models/..:generateContent",
	ROUTE_BAD_NAME),
    REFUSED("gemini dot model", "POST", "/v1beta/models/.:generateContent",
	ROUTE_BAD_NAME),
    REFUSED("gemini hidden model", "POST", "/v1beta/models/.x:generateContent",
	ROUTE_BAD_NAME),
    REFUSED("gemini model after //", "POST",
	"/v1beta/models//x:generateContent", ROUTE_NOT_FOUND),
    REFUSED("gemini model of bytes", "POST",
	"/v1beta/models/%FF%FE:generateContent", ROUTE_BAD_NAME),
    REFUSED("gemini model of UTF-8", "POST",
	"/v1beta/models/caf%C3%A9:generateContent", ROUTE_BAD_NAME),
    REFUSED("gemini model with a control byte", "POST",
	"/v1beta/models/a%0Ab:generateContent", ROUTE_BAD_NAME),
    REFUSED("gemini model with a space", "POST",
	"/v1beta/models/a%20b:generateContent", ROUTE_BAD_NAME),
    REFUSED("gemini encoded dots", "POST",
	"/v1beta/models/%2e%2e:generateContent", ROUTE_NOT_FOUND),
    REFUSED("named gemini dot-dot model", "POST",
	"/gem2/v1beta/models/..:generateContent", ROUTE_BAD_NAME),
    REFUSED("azure empty deployment", "POST",
	"/openai/deployments//chat/completions", ROUTE_BAD_NAME),
    REFUSED("azure empty deployment, completions", "POST",
	"/openai/deployments//completions", ROUTE_BAD_NAME),
    REFUSED("azure dot-dot deployment", "POST",
	"/openai/deployments/../chat/completions", ROUTE_NOT_FOUND),
    REFUSED("azure deployment of bytes", "POST",
	"/openai/deployments/%C0%AE/chat/completions", ROUTE_BAD_NAME),
    REFUSED("azure deployment ending in dots", "POST",
	"/openai/deployments/..x/chat/completions", ROUTE_BAD_NAME),
    REFUSED("gemini unknown op", "POST", "/v1beta/models/gemini:deleteAll",
	ROUTE_NOT_FOUND),
    REFUSED("gemini no model", "POST", "/v1beta/models/:generateContent",
	ROUTE_BAD_NAME),
    REFUSED(
	"azure bad op", "POST", "/openai/deployments/d/files", ROUTE_NOT_FOUND),
    REFUSED(
	"GET on a POST route", "GET", "/v1/chat/completions", ROUTE_BAD_METHOD),
    REFUSED("POST on a GET route", "POST", "/v1/models", ROUTE_BAD_METHOD),
    REFUSED("admin is not here", "GET", "/v1/spend", ROUTE_NOT_FOUND),
};

static void
test_route_table(void **state)
{
	const struct route_case *c;
	struct route rt;
	enum route_result rr;
	char *why;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		c = &cases[i];
		rr = route_match(&test_cf, c->method, c->target, &rt, &why);
		if (rr != c->result)
			fail_msg("%s: %s %s: result %d, want %d", c->name,
			    c->method, c->target, rr, c->result);
		if (rr != ROUTE_OK) {
			assert_non_null(why);
			free(why);
			continue;
		}
		assert_null(why);
		assert_string_equal(rt.rt_upstream->uc_name, c->upstream);
		if (rt.rt_endpoint != c->ep)
			fail_msg("%s: endpoint %d, want %d", c->name,
			    rt.rt_endpoint, c->ep);
		assert_string_equal(rt.rt_path, c->path);
		if (c->query == NULL)
			assert_null(rt.rt_query);
		else
			assert_string_equal(rt.rt_query, c->query);
		assert_string_equal(rt.rt_model, c->model);
		if (rt.rt_metered != c->metered)
			fail_msg("%s: metered %d", c->name, rt.rt_metered);
		route_clear(&rt);
	}
}

/* A refusal's sentence names what is wrong with the path. */
static void
test_refusal_reasons(void **state)
{
	static const struct {
		const char *target;
		const char *why;
	} reasons[] = {
	    {"/openai/deployments//chat/completions",
		"the deployment name in the path is empty"},
	    {"/v1beta/models/..:generateContent",
		"the model name in the path must be a plain name"},
	    {"/v1//chat/completions",
		"no such route (the path has an empty "
		"segment"},
	    {"/v1/files", "no such route"},
	};
	struct route rt;
	char *why;
	size_t i;

	(void)state;
	for (i = 0; i < nitems(reasons); i++) {
		(void)route_match(
		    &test_cf, "POST", reasons[i].target, &rt, &why);
		assert_non_null(why);
		if (strncmp(why, reasons[i].why, strlen(reasons[i].why)) != 0)
			fail_msg("%s: why '%s', want '%s...'",
			    reasons[i].target, why, reasons[i].why);
		free(why);
	}
}

static void
test_missing_default_upstream(void **state)
{
	struct upstream_conf only[] = {
	    {.uc_name = (char[]){"local"},
		.uc_type = UPSTREAM_OPENAI_COMPATIBLE},
	};
	struct config cf = {.cf_upstreams = only, .cf_nupstreams = 1};
	struct route rt;
	char *why;

	(void)state;
	assert_int_equal(route_match(&cf, "POST", "/v1/messages", &rt, &why),
	    ROUTE_NO_UPSTREAM);
	assert_non_null(strstr(why, "anthropic"));
	assert_int_equal(rt.rt_family, FAMILY_ANTHROPIC);
	free(why);
	assert_int_equal(
	    route_match(&cf, "POST", "/local/v1/chat/completions", &rt, NULL),
	    ROUTE_OK);
	route_clear(&rt);
}

static void
test_bare_path_wrong_type(void **state)
{
	/* An upstream called openai that is really Anthropic serves no
	 * OpenAI paths. */
	struct upstream_conf odd[] = {
	    {.uc_name = (char[]){"openai"}, .uc_type = UPSTREAM_ANTHROPIC},
	};
	struct config cf = {.cf_upstreams = odd, .cf_nupstreams = 1};
	struct route rt;
	char *why;

	(void)state;
	assert_int_equal(
	    route_match(&cf, "POST", "/v1/chat/completions", &rt, &why),
	    ROUTE_NO_UPSTREAM);
	free(why);
}

static void
test_guess_family(void **state)
{
	(void)state;
	assert_int_equal(route_guess_family("/v1/messages"), FAMILY_ANTHROPIC);
	assert_int_equal(route_guess_family("/v1beta/models/x:generateContent"),
	    FAMILY_GEMINI);
	assert_int_equal(
	    route_guess_family("/v1/chat/completions"), FAMILY_OPENAI);
	assert_int_equal(route_guess_family("/nonsense"), FAMILY_OPENAI);
}

static void
test_normalize_long_path(void **state)
{
	char *big, *p, *q;

	(void)state;
	big = xmalloc(8192);
	memset(big, 'a', 8191);
	big[0] = '/';
	big[8191] = '\0';
	assert_int_equal(route_normalize(big, &p, &q), -1);
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_route_table),
	    cmocka_unit_test(test_refusal_reasons),
	    cmocka_unit_test(test_missing_default_upstream),
	    cmocka_unit_test(test_bare_path_wrong_type),
	    cmocka_unit_test(test_guess_family),
	    cmocka_unit_test(test_normalize_long_path),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
