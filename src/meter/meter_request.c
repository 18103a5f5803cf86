/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metering of one call, the request side: meter_request checks the body
 * and asks the adapter for the call's bounds (model, stream, the most
 * output it may produce) and, for OpenAI streams, injects include_usage;
 * meter_set_bound writes a policy's output bound into the body that is
 * forwarded.
 *
 * The body tollgate checks is the body the provider reads, so it must not
 * be readable two ways. Wherever tollgate reads (the top-level object,
 * stream_options, generationConfig) a body is refused when a name is
 * given twice, or in two spellings a provider takes for one key (Go's
 * encoding/json ignores case, protobuf's JSON takes snake_case too), or
 * with escapes or control bytes; and each value tollgate reads must be
 * one every JSON reader reads alike: bounds and counts plain whole
 * numbers, the model a string without control characters that is valid
 * UTF-8. docs/internals/metering.md has the rules; meter.c is the
 * response side.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "tollgate/config.h"
#include "tollgate/meter.h"
#include "tollgate/util.h"

#include "providers/providers.h"

/* The largest bound or count a request may give: INT32_MAX, the type
 * Gemini's protos give them; no model writes anywhere near as much. */
#define REQUEST_COUNT_MAX 2147483647LL

/* The most members an object tollgate reads may have; APIs take dozens. */
#define REQUEST_MEMBERS_MAX 1024

/*
 * The top-level members metering reads, for every family: their values
 * are built (the others read as null, meter_json_parse_request), and no
 * other name may be a spelling of one of them (check_names).
 */
static const char *const request_members[] = {"model", "stream", "n", "best_of",
    "max_tokens", "max_completion_tokens", "max_output_tokens",
    "stream_options", "generationConfig", "service_tier", NULL};

/* What a member tollgate reads must hold. */
enum rule_kind {
	RULE_ANY, /* anything: tollgate overwrites it (include_usage) */
	RULE_MODEL, /* a string naming a model or a tier, or null */
	RULE_BOOL, /* true, false or null */
	RULE_COUNT, /* a whole number from 0 to REQUEST_COUNT_MAX, or null */
	RULE_OBJECT, /* an object read as a level of its own, or null */
};

struct rule {
	const char *ru_name;
	enum rule_kind ru_kind;
	const struct rule *ru_members; /* RULE_OBJECT: what is read inside */
};

static const struct rule stream_options_rules[] = {
    {"include_usage", RULE_ANY, NULL},
    {NULL, RULE_ANY, NULL},
};
static const struct rule generation_rules[] = {
    {"maxOutputTokens", RULE_COUNT, NULL},
    {"candidateCount", RULE_COUNT, NULL},
    {NULL, RULE_ANY, NULL},
};
static const struct rule chat_rules[] = {
    {"model", RULE_MODEL, NULL},
    {"stream", RULE_BOOL, NULL},
    {"stream_options", RULE_OBJECT, stream_options_rules},
    {"n", RULE_COUNT, NULL},
    {"max_tokens", RULE_COUNT, NULL},
    {"max_completion_tokens", RULE_COUNT, NULL},
    {"service_tier", RULE_MODEL, NULL},
    {NULL, RULE_ANY, NULL},
};
static const struct rule completions_rules[] = {
    {"model", RULE_MODEL, NULL},
    {"stream", RULE_BOOL, NULL},
    {"stream_options", RULE_OBJECT, stream_options_rules},
    {"n", RULE_COUNT, NULL},
    {"best_of", RULE_COUNT, NULL},
    {"max_tokens", RULE_COUNT, NULL},
    {NULL, RULE_ANY, NULL},
};
static const struct rule responses_rules[] = {
    {"model", RULE_MODEL, NULL},
    {"stream", RULE_BOOL, NULL},
    {"max_output_tokens", RULE_COUNT, NULL},
    {"service_tier", RULE_MODEL, NULL},
    {NULL, RULE_ANY, NULL},
};
static const struct rule messages_rules[] = {
    {"model", RULE_MODEL, NULL},
    {"stream", RULE_BOOL, NULL},
    {"max_tokens", RULE_COUNT, NULL},
    {"service_tier", RULE_MODEL, NULL},
    {NULL, RULE_ANY, NULL},
};
static const struct rule model_rules[] = {
    {"model", RULE_MODEL, NULL},
    {NULL, RULE_ANY, NULL},
};
static const struct rule gemini_rules[] = {
    {"generationConfig", RULE_OBJECT, generation_rules},
    {NULL, RULE_ANY, NULL},
};
static const struct rule no_rules[] = {
    {NULL, RULE_ANY, NULL},
};

/* The members a route's adapter reads at the top level. */
static const struct rule *
route_rules(const struct route *rt)
{
	switch (rt->rt_endpoint) {
	case EP_CHAT:
		return (chat_rules);
	case EP_COMPLETIONS:
		return (completions_rules);
	case EP_RESPONSES:
		return (responses_rules);
	case EP_EMBEDDINGS:
	case EP_COUNT_TOKENS:
		return (model_rules);
	case EP_MESSAGES:
		return (messages_rules);
	case EP_GEMINI_GENERATE:
	case EP_GEMINI_STREAM:
		return (gemini_rules);
	default:
		return (no_rules);
	}
}

/*
 * Untrusted bytes for a message: printable ASCII as it is, anything else
 * as \xHH, cut short with "..." past about 48 bytes.
 */
static void
show(char *dst, size_t size, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0;
	unsigned char c;

	for (i = 0; i < n && o + 8 < size && i < 48; i++) {
		c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f)
			dst[o++] = (char)c;
		else {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 0xf];
		}
	}
	if (i < n && o + 4 <= size) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
}

/*
 * A name as the most lenient readers match it: ASCII case ignored, and
 * the two non-ASCII letters that fold to ASCII ones (U+017F long s, U+212A
 * Kelvin sign) as Go's encoding/json folds them; '_' and '-' dropped, as
 * protobuf's JSON reads max_output_tokens as maxOutputTokens (and Go's
 * json v2 matches names without them). Written to out, which has room for
 * strlen(s) + 1 bytes; returns the folded length.
 */
static size_t
fold_name(const char *s, char *out)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i, o = 0, n = strlen(s);

	for (i = 0; i < n; i++) {
		if (p[i] == '_' || p[i] == '-')
			continue;
		if (p[i] >= 'A' && p[i] <= 'Z')
			out[o++] = (char)(p[i] - 'A' + 'a');
		else if (p[i] == 0xc5 && i + 1 < n && p[i + 1] == 0xbf) {
			out[o++] = 's';
			i++;
		} else if (p[i] == 0xe2 && i + 2 < n && p[i + 1] == 0x84 &&
		    p[i + 2] == 0xaa) {
			out[o++] = 'k';
			i += 2;
		} else
			out[o++] = (char)p[i];
	}
	out[o] = '\0';
	return (o);
}

/* FNV-1a, for the table of folded names. */
static uint64_t
name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return (h);
}

/*
 * The names of an object tollgate reads (already known plain: the tree's
 * names are the text's), in the order written: each valid UTF-8, none a
 * spelling of a key in spellings other than that key itself, and no two
 * that a provider could take for one key (a table of folded names, so a
 * body of a million names costs no more than reading it). where prefixes
 * the names in messages.
 */
static int
check_names(const cJSON *obj, const char *const *spellings, const char *where,
    char **cause)
{
	const cJSON *it, **names = NULL;
	char a[64], b[64], sf[16][32], *arena = NULL, **fold = NULL;
	size_t n = 0, total = 0, i, k, h, cap, nsf, *tab = NULL;
	int r = -1;

	for (it = obj->child; it != NULL; it = it->next) {
		n++;
		total += strlen(it->string != NULL ? it->string : "") + 1;
	}
	if (n == 0)
		return (0);
	if (n > REQUEST_MEMBERS_MAX) {
		xasprintf(cause,
		    "the request body has %zu members in %s%.*s%s, more "
		    "than the %d any API takes",
		    n, where[0] != '\0' ? "\"" : "its top-level object",
		    where[0] != '\0' ? (int)strlen(where) - 1 : 0, where,
		    where[0] != '\0' ? "\"" : "", REQUEST_MEMBERS_MAX);
		return (-1);
	}
	for (nsf = 0; spellings[nsf] != NULL && nsf < nitems(sf); nsf++)
		fold_name(spellings[nsf], sf[nsf]);
	for (cap = 16; cap < 2 * n; cap *= 2)
		;
	names = xreallocarray(NULL, n, sizeof(*names));
	fold = xreallocarray(NULL, n, sizeof(*fold));
	tab = xreallocarray(NULL, cap, sizeof(*tab));
	memset(tab, 0xff, cap * sizeof(*tab)); /* SIZE_MAX: free */
	arena = xmalloc(total);
	for (i = 0, total = 0, it = obj->child; it != NULL;
	     it = it->next, i++) {
		names[i] = it;
		fold[i] = arena + total;
		total +=
		    fold_name(it->string != NULL ? it->string : "", fold[i]) +
		    1;
	}
	for (i = 0; i < n; i++) {
		const char *name =
		    names[i]->string != NULL ? names[i]->string : "";

		if (!utf8_valid(name, strlen(name))) {
			show(a, sizeof(a), name, strlen(name));
			xasprintf(cause,
			    "the request body has a member name that is not "
			    "valid UTF-8 (\"%s%s\")",
			    where, a);
			goto done;
		}
		for (h = name_hash(fold[i]) & (cap - 1); tab[h] != SIZE_MAX;
		     h = (h + 1) & (cap - 1)) {
			if (strcmp(fold[tab[h]], fold[i]) != 0)
				continue;
			k = tab[h];
			show(a, sizeof(a), name, strlen(name));
			show(b, sizeof(b), names[k]->string,
			    strlen(names[k]->string));
			if (strcmp(names[k]->string, name) == 0)
				xasprintf(cause,
				    "the request body gives \"%s%s\" twice; "
				    "JSON readers disagree on which one "
				    "counts, so tollgate could check one "
				    "value while the provider uses the "
				    "other. Send each key once",
				    where, a);
			else
				xasprintf(cause,
				    "the request body gives \"%s%s\" and "
				    "\"%s%s\", which providers may read as "
				    "one key (names are matched ignoring "
				    "case, '_' and '-'); send it once, "
				    "spelled as the API documents it",
				    where, b, where, a);
			goto done;
		}
		tab[h] = i;
		for (k = 0; k < nsf; k++) {
			if (strcmp(sf[k], fold[i]) != 0 ||
			    strcmp(name, spellings[k]) == 0)
				continue;
			show(a, sizeof(a), name, strlen(name));
			xasprintf(cause,
			    "the request body has \"%s%s\", which providers "
			    "may read as \"%s%s\" while tollgate reads that "
			    "key only as written; spell it \"%s\"",
			    where, a, where, spellings[k], spellings[k]);
			goto done;
		}
	}
	r = 0;
done:
	free(arena);
	free(tab);
	free(fold);
	free(names);
	return (r);
}

/*
 * The string value text p[0..n) (quotes included) of a model: no control
 * character (nor DEL), raw (RFC 8259 forbids them) or escaped (a \u0000
 * ends the string for cJSON but not for the provider).
 */
static int
model_text_clean(const char *p, size_t n)
{
	size_t i, k;
	unsigned int v;

	for (i = 1; i + 1 < n; i++) {
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return (0);
		if (p[i] != '\\')
			continue;
		switch (p[++i]) {
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			return (0);
		case 'u':
			/* cJSON took it, so four hex digits follow. */
			if (i + 4 >= n)
				return (0);
			for (v = 0, k = 1; k <= 4; k++)
				v = v * 16 +
				    (unsigned int)(p[i + k] <= '9'
					    ? p[i + k] - '0'
					    : (p[i + k] | 0x20) - 'a' + 10);
			if (v < 0x20 || v == 0x7f)
				return (0);
			i += 4;
			break;
		}
	}
	return (1);
}

/* Whether the number text p[0..n) is a whole number in range. */
static int
count_text_ok(const char *p, size_t n)
{
	long long v = 0;
	size_t i;

	if (n == 0 || n > 10 || (p[0] == '0' && n > 1))
		return (0);
	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return (0);
		v = v * 10 + (p[i] - '0');
	}
	return (v <= REQUEST_COUNT_MAX);
}

static int check_object(const char *, const cJSON *, const char *const *,
    const struct rule *, const struct json_member *, const char *, char **);

/*
 * The members of the object text obj[0..len) (obj[0] == '{'), found by
 * their names for rules: every name must be plain, and the text must be
 * the one cJSON read into tree. Then check_object on it.
 */
static int
check_nested(const char *obj, size_t len, const cJSON *tree,
    const struct rule *rules, const char *where, char **cause)
{
	struct json_member jm, spans[8];
	const cJSON *it = tree->child;
	const char *names[nitems(spans) + 1];
	char a[64];
	size_t pos = 0, i;
	int r;

	for (i = 0; rules[i].ru_name != NULL && i < nitems(spans); i++) {
		names[i] = rules[i].ru_name;
		spans[i].jm_val = SIZE_MAX;
	}
	names[i] = NULL;
	while ((r = meter_json_next(obj, len, &pos, &jm)) == 1 && it != NULL) {
		if (!meter_json_plain(
			obj + jm.jm_key, jm.jm_keyend - jm.jm_key)) {
			show(a, sizeof(a), obj + jm.jm_key + 1,
			    jm.jm_keyend - jm.jm_key - 2);
			xasprintf(cause,
			    "the request body writes the name \"%s%s\" with "
			    "an escape or a control byte; readers could take "
			    "it for another key. Write names plainly",
			    where, a);
			return (-1);
		}
		for (i = 0; names[i] != NULL; i++) {
			if (strlen(names[i]) == jm.jm_keyend - jm.jm_key - 2 &&
			    memcmp(obj + jm.jm_key + 1, names[i],
				strlen(names[i])) == 0 &&
			    spans[i].jm_val == SIZE_MAX)
				spans[i] = jm;
		}
		it = it->next;
	}
	if (r != 0 || it != NULL) {
		/* where ends with the '.' of the names inside. */
		xasprintf(cause,
		    "the request body's \"%.*s\" is not an object tollgate "
		    "can read as written (only JSON whitespace between "
		    "tokens)",
		    (int)strlen(where) - 1, where);
		return (-1);
	}
	return (check_object(obj, tree, names, rules, spans, where, cause));
}

/*
 * Check one object tollgate reads: its names (check_names against
 * spellings), then each value rules names, whose text is at spans[i] in
 * text. where is the object's path for messages ("" at the top).
 */
static int
check_object(const char *text, const cJSON *obj, const char *const *spellings,
    const struct rule *rules, const struct json_member *spans,
    const char *where, char **cause)
{
	const struct rule *ru;
	const struct json_member *jm;
	const cJSON *it;
	char a[64], *sub;
	size_t i, n;
	int r;

	if (check_names(obj, spellings, where, cause) == -1)
		return (-1);
	for (i = 0; rules[i].ru_name != NULL; i++) {
		ru = &rules[i];
		it = cJSON_GetObjectItemCaseSensitive(obj, ru->ru_name);
		if (it == NULL || cJSON_IsNull(it) || ru->ru_kind == RULE_ANY)
			continue;
		jm = &spans[i];
		if (jm->jm_val == SIZE_MAX) {
			/* Never expected: every name was found plainly. */
			xasprintf(cause,
			    "the request body's \"%s%s\" could not be found "
			    "as written",
			    where, ru->ru_name);
			return (-1);
		}
		n = jm->jm_valend - jm->jm_val;
		switch (ru->ru_kind) {
		case RULE_MODEL:
			if (!cJSON_IsString(it) || it->valuestring == NULL) {
				xasprintf(cause,
				    "the request body's \"%s%s\" must be a "
				    "string",
				    where, ru->ru_name);
				return (-1);
			}
			if (!model_text_clean(text + jm->jm_val, n)) {
				xasprintf(cause,
				    "the request body's \"%s%s\" has a "
				    "control character (a NUL ends the name "
				    "for some readers and not for others)",
				    where, ru->ru_name);
				return (-1);
			}
			if (!utf8_valid(
				it->valuestring, strlen(it->valuestring))) {
				xasprintf(cause,
				    "the request body's \"%s%s\" is not "
				    "valid UTF-8",
				    where, ru->ru_name);
				return (-1);
			}
			if (strlen(it->valuestring) >= USAGE_MODEL_MAX) {
				xasprintf(cause,
				    "the request body's \"%s%s\" is longer "
				    "than %d bytes",
				    where, ru->ru_name, USAGE_MODEL_MAX - 1);
				return (-1);
			}
			break;
		case RULE_BOOL:
			if (!cJSON_IsBool(it)) {
				show(a, sizeof(a), text + jm->jm_val, n);
				xasprintf(cause,
				    "the request body's \"%s%s\" must be true "
				    "or false, not %s",
				    where, ru->ru_name, a);
				return (-1);
			}
			break;
		case RULE_COUNT:
			if (!cJSON_IsNumber(it) ||
			    !count_text_ok(text + jm->jm_val, n)) {
				show(a, sizeof(a), text + jm->jm_val, n);
				xasprintf(cause,
				    "the request body's \"%s%s\" must be a "
				    "whole number from 0 to %lld, written "
				    "without sign, fraction or exponent (it "
				    "is %s): JSON readers disagree on other "
				    "forms",
				    where, ru->ru_name, REQUEST_COUNT_MAX, a);
				return (-1);
			}
			break;
		case RULE_OBJECT:
			if (!cJSON_IsObject(it)) {
				xasprintf(cause,
				    "the request body's \"%s%s\" must be an "
				    "object",
				    where, ru->ru_name);
				return (-1);
			}
			xasprintf(&sub, "%s%s.", where, ru->ru_name);
			r = check_nested(text + jm->jm_val, n, it,
			    ru->ru_members, sub, cause);
			free(sub);
			if (r == -1)
				return (-1);
			break;
		case RULE_ANY:
			break;
		}
	}
	return (0);
}

/*
 * Why meter_json_parse_request did not find every top-level name plain:
 * the first name written with an escape or a control byte, or text it
 * could not follow.
 */
static void
unplain_cause(const char *body, size_t len, char **cause)
{
	struct json_member jm;
	size_t start = meter_json_ws(body, len, 0), pos = 0;
	char a[64];

	while (meter_json_next(body + start, len - start, &pos, &jm) == 1) {
		if (meter_json_plain(
			body + start + jm.jm_key, jm.jm_keyend - jm.jm_key))
			continue;
		show(a, sizeof(a), body + start + jm.jm_key + 1,
		    jm.jm_keyend - jm.jm_key - 2);
		xasprintf(cause,
		    "the request body writes the name \"%s\" with an escape "
		    "or a control byte; readers could take it for another "
		    "key. Write names plainly",
		    a);
		return;
	}
	xasprintf(cause,
	    "the request body is not JSON tollgate can read as written: "
	    "only JSON whitespace may separate its tokens, and no byte "
	    "order mark may start it");
}

/*
 * Check a request body before anything is read from it. Returns 0, or -1
 * with an allocated *cause that names the problem.
 */
static int
request_check(const struct route *rt, const char *body, size_t len,
    const cJSON *root, const struct json_member *spans, int plain, char **cause)
{
	const struct rule *rules = route_rules(rt);
	struct json_member mspans[nitems(request_members)];
	size_t i, k;

	if (!plain) {
		unplain_cause(body, len, cause);
		return (-1);
	}
	/* The rules' spans, from the ones kept for request_members. */
	for (i = 0; rules[i].ru_name != NULL; i++) {
		mspans[i].jm_val = SIZE_MAX;
		for (k = 0; request_members[k] != NULL; k++) {
			if (strcmp(request_members[k], rules[i].ru_name) == 0)
				mspans[i] = spans[k];
		}
	}
	return (check_object(
	    body, root, request_members, rules, mspans, "", cause));
}

/*
 * The tier the call may be billed at, from what the adapter read: none
 * asked ("") is the upstream's service_tier_default, "default" the base
 * tier, anything else as asked. A tier the model's price lists no rates
 * for is billed, and reserved, at the base rates.
 */
static void
request_tier(const struct route *rt, struct call_info *ci)
{
	ci->ci_tier_asked = ci->ci_service_tier[0] != '\0';
	if (strcmp(ci->ci_service_tier, "default") == 0)
		ci->ci_service_tier[0] = '\0';
	else
		meter_tier(rt, ci);
}

/*
 * Give a call that named no tier its upstream's service_tier_default, or
 * the base tier when that has none; a tier the request named is kept. Run
 * again when a routing rule changes the upstream, since the default is
 * the upstream's, not the request's.
 */
void
meter_tier(const struct route *rt, struct call_info *ci)
{
	const struct upstream_conf *uc = rt->rt_upstream;

	if (ci->ci_tier_asked)
		return;
	if (uc != NULL && uc->uc_service_tier != NULL)
		strcopy(ci->ci_service_tier, sizeof(ci->ci_service_tier),
		    uc->uc_service_tier);
	else
		ci->ci_service_tier[0] = '\0';
}

/*
 * Fill ci from a request before it is forwarded. Returns 0, or -1 with an
 * allocated *cause when the body must be refused: it is not a JSON object
 * tollgate can read (on a metered route), or could be read two ways.
 */
int
meter_request(const struct route *rt, const char *body, size_t len,
    struct call_info *ci, char **newbody, size_t *newlen, char **cause)
{
	struct json_member spans[nitems(request_members)];
	cJSON *root;
	int plain;

	memset(ci, 0, sizeof(*ci));
	ci->ci_max_output = -1;
	ci->ci_n = 1;
	*newbody = NULL;
	*newlen = 0;
	*cause = NULL;

	switch (rt->rt_endpoint) {
	case EP_COMPLETIONS:
		ci->ci_max_output = 16; /* the API's default max_tokens */
		break;
	case EP_EMBEDDINGS:
	case EP_GEMINI_EMBED:
		ci->ci_max_output = 0; /* embeddings generate no tokens */
		break;
	case EP_GEMINI_STREAM:
		ci->ci_stream = 1;
		break;
	default:
		break;
	}
	/* Gemini's model and Azure's deployment are in the URL. */
	if (rt->rt_model[0] != '\0')
		snprintf(
		    ci->ci_model, sizeof(ci->ci_model), "%s", rt->rt_model);
	/* A rough count that needs no tokenizer: about 4 bytes a token. */
	if (rt->rt_metered)
		ci->ci_input_estimate = (int64_t)((len + 3) / 4);
	if (rt->rt_endpoint == EP_MODELS)
		return (0); /* a GET: no body is read */

	root =
	    meter_json_parse_request(body, len, request_members, spans, &plain);
	if (root == NULL || !cJSON_IsObject(root)) {
		/* Free endpoints are forwarded: the provider answers. */
		if (rt->rt_metered) {
			if (meter_json_ws(body, len, 0) == len)
				xasprintf(cause,
				    "the request body is empty; this "
				    "endpoint takes a JSON object");
			else
				xasprintf(cause,
				    "the request body is not %s, so "
				    "tollgate cannot check what the call "
				    "may cost",
				    root == NULL ? "valid JSON"
						 : "a JSON object");
		}
		cJSON_Delete(root);
		return (*cause != NULL ? -1 : 0);
	}
	if (request_check(rt, body, len, root, spans, plain, cause) == -1) {
		cJSON_Delete(root);
		return (-1);
	}
	if (ci->ci_model[0] == '\0')
		meter_setstr(ci->ci_model, sizeof(ci->ci_model),
		    cJSON_GetObjectItemCaseSensitive(root, "model"));
	if (rt->rt_metered) {
		switch (rt->rt_family) {
		case FAMILY_OPENAI:
			openai_request(rt, root, ci);
			/*
			 * Only chat and legacy completions need asking;
			 * Responses streams always end with their usage.
			 */
			if (ci->ci_stream &&
			    (rt->rt_endpoint == EP_CHAT ||
				rt->rt_endpoint == EP_COMPLETIONS) &&
			    openai_inject(body, len, root, newbody, newlen) ==
				0)
				ci->ci_usage_injected = 1;
			break;
		case FAMILY_ANTHROPIC:
			anthropic_request(rt, root, ci);
			break;
		case FAMILY_GEMINI:
			gemini_request(rt, root, ci);
			break;
		}
	}
	if (ci->ci_n < 1)
		ci->ci_n = 1;
	request_tier(rt, ci);
	cJSON_Delete(root);
	return (0);
}

/*
 * Set member key of the object text obj[0..len) to the number v: replace
 * its value where it is, or add it at the end. Returns 0 with an allocated
 * *out, or -1 when the text is not a plain object (an escaped key, a
 * duplicate) and is left alone.
 */
static int
set_member(const char *obj, size_t len, const char *key, int64_t v, char **out,
    size_t *outlen)
{
	struct json_span js;
	char ins[160];
	size_t close;
	int empty;

	switch (meter_json_member(obj, len, key, &js)) {
	case 1:
		snprintf(ins, sizeof(ins), "%lld", (long long)v);
		meter_json_splice(
		    obj, len, js.js_val, js.js_valend, ins, out, outlen);
		return (0);
	case 0:
		if ((close = meter_json_close(obj, len, &empty)) == SIZE_MAX)
			return (-1);
		snprintf(ins, sizeof(ins), "%s\"%s\":%lld", empty ? "" : ",",
		    key, (long long)v);
		meter_json_splice(obj, len, close, close, ins, out, outlen);
		return (0);
	}
	return (-1);
}

/*
 * Write the output bound v into a request body of route rt: the member
 * the provider reads (max_completion_tokens and max_tokens, whichever the
 * request has, max_output_tokens, generationConfig.maxOutputTokens), added
 * when the request has none. The text is edited, never re-serialised, so
 * every other byte stays as the client sent it. Returns 0 with an
 * allocated *out, or -1 when the body cannot be edited safely.
 */
int
meter_set_bound(const struct route *rt, const char *body, size_t len, int64_t v,
    char **out, size_t *outlen)
{
	struct json_span js;
	char *tmp, *sub;
	const char *key;
	size_t start, tmplen, sublen;
	int r, n = 0;

	*out = NULL;
	*outlen = 0;
	start = meter_json_ws(body, len, 0);
	if (start >= len || body[start] != '{' ||
	    meter_json_skip(body + start, len - start) == 0)
		return (-1);
	body += start;
	len -= start;
	switch (rt->rt_endpoint) {
	case EP_CHAT:
		/* Both, when both are there: a server may read either. */
		tmp = NULL;
		tmplen = 0;
		if (meter_json_member(body, len, "max_tokens", &js) == 1) {
			if (set_member(body, len, "max_tokens", v, &tmp,
				&tmplen) == -1)
				return (-1);
			n++;
		}
		if (meter_json_member(tmp != NULL ? tmp : body,
			tmp != NULL ? tmplen : len, "max_completion_tokens",
			&js) == 1 ||
		    n == 0) {
			key = n == 0 && rt->rt_upstream != NULL &&
				rt->rt_upstream->uc_type ==
				    UPSTREAM_OPENAI_COMPATIBLE
			    ? "max_tokens"
			    : "max_completion_tokens";
			r = set_member(tmp != NULL ? tmp : body,
			    tmp != NULL ? tmplen : len, key, v, out, outlen);
			free(tmp);
			return (r);
		}
		*out = tmp;
		*outlen = tmplen;
		return (0);
	case EP_COMPLETIONS:
	case EP_MESSAGES:
		return (set_member(body, len, "max_tokens", v, out, outlen));
	case EP_RESPONSES:
		return (
		    set_member(body, len, "max_output_tokens", v, out, outlen));
	case EP_GEMINI_GENERATE:
	case EP_GEMINI_STREAM:
		r = meter_json_member(body, len, "generationConfig", &js);
		if (r == -1)
			return (-1);
		if (r == 0) {
			char ins[96];

			snprintf(ins, sizeof(ins), "{\"maxOutputTokens\":%lld}",
			    (long long)v);
			if ((start = meter_json_close(body, len, &n)) ==
			    SIZE_MAX)
				return (-1);
			xasprintf(&sub, "%s\"generationConfig\":%s",
			    n ? "" : ",", ins);
			meter_json_splice(
			    body, len, start, start, sub, out, outlen);
			free(sub);
			return (0);
		}
		if (body[js.js_val] != '{')
			return (-1);
		if (set_member(body + js.js_val, js.js_valend - js.js_val,
			"maxOutputTokens", v, &sub, &sublen) == -1)
			return (-1);
		meter_json_splice(
		    body, len, js.js_val, js.js_valend, sub, out, outlen);
		free(sub);
		return (0);
	default:
		return (-1);
	}
}

/*
 * Write model into a request body of route rt as its top-level "model"
 * member, replaced where it is or added at the end; model is a name
 * routing_model_ok accepts, so it needs no escaping. The text is edited,
 * never re-serialised, so every other byte stays as the client sent it.
 * Returns 0 with an allocated *out, or -1 when the body cannot be edited
 * safely (not one plain object).
 */
int
meter_set_model(const struct route *rt, const char *body, size_t len,
    const char *model, char **out, size_t *outlen)
{
	struct json_span js;
	char *ins;
	size_t start, close;
	int empty;

	(void)rt;
	*out = NULL;
	*outlen = 0;
	start = meter_json_ws(body, len, 0);
	if (start >= len || body[start] != '{' ||
	    meter_json_skip(body + start, len - start) == 0)
		return (-1);
	switch (meter_json_member(body + start, len - start, "model", &js)) {
	case 1:
		xasprintf(&ins, "\"%s\"", model);
		meter_json_splice(body, len, start + js.js_val,
		    start + js.js_valend, ins, out, outlen);
		free(ins);
		return (0);
	case 0:
		if ((close = meter_json_close(
			 body + start, len - start, &empty)) == SIZE_MAX)
			return (-1);
		xasprintf(&ins, "%s\"model\":\"%s\"", empty ? "" : ",", model);
		meter_json_splice(
		    body, len, start + close, start + close, ins, out, outlen);
		free(ins);
		return (0);
	}
	return (-1);
}
