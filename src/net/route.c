/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The route table and the path normaliser. Bare paths go to the upstream
 * named after their API family (`openai`, `anthropic`, `gemini`, `azure`);
 * `/{name}/...` selects any configured upstream, whose type decides which
 * paths it serves. The table is closed: a path that is not listed is a 404
 * and never reaches a provider (peers leaked spend through pass-through
 * routes: Bifrost #2873, LiteLLM #10750).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/config.h"
#include "tollgate/route.h"
#include "tollgate/util.h"

#define ROUTE_MAX_SEGMENTS 16

struct segs {
	const char *s[ROUTE_MAX_SEGMENTS];
	size_t len[ROUTE_MAX_SEGMENTS];
	size_t n;
};

/* Characters allowed in a decoded path: RFC 3986 pchar without '%'. */
static int
pathchar(int c)
{
	if (isalnum(c))
		return (1);
	return (strchr("-._~!$&'()*+,;=:@/", c) != NULL && c != '\0');
}

/*
 * Split a request-target into a normalised path and a query. The path is
 * percent-decoded and a leading run of slashes is read as one (a base URL
 * given with a trailing slash); it is refused (-1) when it is not
 * origin-form, has a fragment, a bad escape, a raw byte outside RFC
 * 3986's pchar, an escape that decodes to a separator, a dot or NUL, or a
 * `.` or `..` segment. Every other slash is kept, so an empty segment
 * stays a segment: collapsing it would move the segments after it, and a
 * name would be read from the wrong one. Other decoded bytes (a space, a
 * byte of UTF-8) are kept too: no route has them, and a name that holds
 * one is refused by route_match with a message that says so.
 * The query is kept as received (it may hold `alt=sse` or `api-version`).
 */
int
route_normalize(const char *target, char **pathp, char **queryp)
{
	const char *q, *end;
	char *path, *seg;
	size_t o = 0, i, plen;
	int c, hi, lo;

	*pathp = *queryp = NULL;
	if (target[0] != '/')
		return (-1);
	if (strchr(target, '#') != NULL)
		return (-1);
	q = strchr(target, '?');
	end = q != NULL ? q : target + strlen(target);
	plen = (size_t)(end - target);
	if (plen > 4096)
		return (-1);

	path = xmalloc(plen + 1);
	for (i = 0; i < plen; i++) {
		c = (unsigned char)target[i];
		if (c == '%') {
			if (i + 2 >= plen)
				goto bad;
			hi = hex_digit((unsigned char)target[i + 1]);
			lo = hex_digit((unsigned char)target[i + 2]);
			if (hi < 0 || lo < 0)
				goto bad;
			c = hi * 16 + lo;
			i += 2;
			/* An encoded separator or dot is never legitimate. */
			if (c == '/' || c == '.' || c == '\\' || c == '\0')
				goto bad;
		} else if (!pathchar(c))
			goto bad;
		else if (c == '/' && o == 1)
			continue; /* "//v1/..." is "/v1/..." */
		path[o++] = (char)c;
	}
	path[o] = '\0';

	/* Refuse dot segments rather than resolve them. */
	for (seg = path; seg != NULL; seg = strchr(seg + 1, '/')) {
		if (strncmp(seg, "/.", 2) == 0 &&
		    (seg[2] == '/' || seg[2] == '\0' ||
			(seg[2] == '.' && (seg[3] == '/' || seg[3] == '\0'))))
			goto bad;
	}

	*pathp = path;
	if (q != NULL && q[1] != '\0')
		*queryp = xstrdup(q + 1);
	return (0);
bad:
	free(path);
	return (-1);
}

/*
 * The segments of a normalised path, empty ones included: "/v1//x" is
 * "v1", "" and "x"; a trailing slash is an empty last segment; "/" has
 * none. A path deeper than ROUTE_MAX_SEGMENTS matches nothing.
 */
static void
split(const char *path, struct segs *sg)
{
	const char *p = path + 1, *slash;

	sg->n = 0;
	if (*p == '\0')
		return;
	for (;;) {
		if (sg->n == ROUTE_MAX_SEGMENTS) {
			sg->n = ROUTE_MAX_SEGMENTS + 1;
			return;
		}
		slash = strchr(p, '/');
		sg->s[sg->n] = p;
		sg->len[sg->n] =
		    slash != NULL ? (size_t)(slash - p) : strlen(p);
		sg->n++;
		if (slash == NULL)
			return;
		p = slash + 1;
	}
}

static int
has_empty_segment(const struct segs *sg)
{
	size_t i;

	for (i = 0; i < sg->n && i < ROUTE_MAX_SEGMENTS; i++)
		if (sg->len[i] == 0)
			return (1);
	return (0);
}

static int
segeq(const struct segs *sg, size_t i, const char *lit)
{
	return (i < sg->n && sg->len[i] == strlen(lit) &&
	    memcmp(sg->s[i], lit, sg->len[i]) == 0);
}

/* isalnum in the C locale, whatever the locale is. */
static int
asciialnum(char c)
{
	return ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'));
}

/*
 * A model or deployment name taken from the path is recorded, priced and
 * forwarded, so it must be a plain name: a letter or digit, then letters,
 * digits, '-', '_' or '.'. That leaves out the empty name of "//", "."
 * and "..", and any byte an escape decoded to that is not one of those
 * (control bytes, spaces, anything that is not ASCII).
 */
static int
modelname_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len >= ROUTE_MODEL_MAX || !asciialnum(s[0]))
		return (0);
	for (i = 0; i < len; i++) {
		if (!asciialnum(s[i]) && s[i] != '-' && s[i] != '_' &&
		    s[i] != '.')
			return (0);
	}
	return (1);
}

/* Which kind of upstream serves a path. */
enum route_kind {
	KIND_OPENAI, /* openai, openai_compatible */
	KIND_AZURE,
	KIND_ANTHROPIC,
	KIND_GEMINI,
};

struct match {
	enum route_kind kind;
	enum endpoint ep;
	int get; /* the route takes GET, not POST */
	char model[ROUTE_MODEL_MAX];
	const char *bad; /* "model" or "deployment" when that name is bad */
	size_t badlen; /* and its length */
};

/*
 * Match segments [first, n) against the table. Returns 1 and fills m on a
 * match, 0 otherwise, and -1 when the path has a route's shape but the
 * name it carries is not a plain name (m->kind and m->bad say which).
 */
static int
table_match(const struct segs *sg, size_t first, struct match *m)
{
	size_t n = sg->n - first;
	const char *last, *colon;
	size_t lastlen, mlen;

	memset(m, 0, sizeof(*m));
	if (first >= sg->n)
		return (0);

	if (segeq(sg, first, "v1")) {
		if (n == 3 && segeq(sg, first + 1, "chat") &&
		    segeq(sg, first + 2, "completions")) {
			m->kind = KIND_OPENAI;
			m->ep = EP_CHAT;
			return (1);
		}
		if (n == 2 && segeq(sg, first + 1, "completions")) {
			m->kind = KIND_OPENAI;
			m->ep = EP_COMPLETIONS;
			return (1);
		}
		if (n == 2 && segeq(sg, first + 1, "embeddings")) {
			m->kind = KIND_OPENAI;
			m->ep = EP_EMBEDDINGS;
			return (1);
		}
		if (n == 2 && segeq(sg, first + 1, "responses")) {
			m->kind = KIND_OPENAI;
			m->ep = EP_RESPONSES;
			return (1);
		}
		if (n == 2 && segeq(sg, first + 1, "models")) {
			m->kind = KIND_OPENAI;
			m->ep = EP_MODELS;
			m->get = 1;
			return (1);
		}
		if (n == 2 && segeq(sg, first + 1, "messages")) {
			m->kind = KIND_ANTHROPIC;
			m->ep = EP_MESSAGES;
			return (1);
		}
		if (n == 3 && segeq(sg, first + 1, "messages") &&
		    segeq(sg, first + 2, "count_tokens")) {
			m->kind = KIND_ANTHROPIC;
			m->ep = EP_COUNT_TOKENS;
			return (1);
		}
		return (0);
	}

	if (segeq(sg, first, "v1beta") && n == 3 &&
	    segeq(sg, first + 1, "models")) {
		last = sg->s[first + 2];
		lastlen = sg->len[first + 2];
		colon = memrchr(last, ':', lastlen);
		if (colon == NULL)
			return (0);
		mlen = (size_t)(colon - last);
		colon++;
		lastlen -= mlen + 1;
		m->kind = KIND_GEMINI;
		if (lastlen == 15 && memcmp(colon, "generateContent", 15) == 0)
			m->ep = EP_GEMINI_GENERATE;
		else if (lastlen == 21 &&
		    memcmp(colon, "streamGenerateContent", 21) == 0)
			m->ep = EP_GEMINI_STREAM;
		else if (lastlen == 11 && memcmp(colon, "countTokens", 11) == 0)
			m->ep = EP_GEMINI_COUNT_TOKENS;
		else if (lastlen == 12 &&
		    memcmp(colon, "embedContent", 12) == 0)
			m->ep = EP_GEMINI_EMBED;
		else
			return (0);
		if (!modelname_ok(last, mlen)) {
			m->bad = "model";
			m->badlen = mlen;
			return (-1);
		}
		memcpy(m->model, last, mlen);
		m->model[mlen] = '\0';
		return (1);
	}

	if (segeq(sg, first, "openai") && n >= 4 &&
	    segeq(sg, first + 1, "deployments")) {
		m->kind = KIND_AZURE;
		if (n == 5 && segeq(sg, first + 3, "chat") &&
		    segeq(sg, first + 4, "completions"))
			m->ep = EP_CHAT;
		else if (n == 4 && segeq(sg, first + 3, "completions"))
			m->ep = EP_COMPLETIONS;
		else if (n == 4 && segeq(sg, first + 3, "embeddings"))
			m->ep = EP_EMBEDDINGS;
		else
			return (0);
		if (!modelname_ok(sg->s[first + 2], sg->len[first + 2])) {
			m->bad = "deployment";
			m->badlen = sg->len[first + 2];
			return (-1);
		}
		memcpy(m->model, sg->s[first + 2], sg->len[first + 2]);
		m->model[sg->len[first + 2]] = '\0';
		return (1);
	}
	return (0);
}

static int
kind_serves(enum route_kind kind, enum upstream_type type)
{
	switch (kind) {
	case KIND_OPENAI:
		return (type == UPSTREAM_OPENAI ||
		    type == UPSTREAM_OPENAI_COMPATIBLE);
	case KIND_AZURE:
		return (type == UPSTREAM_AZURE_OPENAI);
	case KIND_ANTHROPIC:
		return (type == UPSTREAM_ANTHROPIC);
	case KIND_GEMINI:
		return (type == UPSTREAM_GEMINI);
	}
	return (0);
}

static const char *
kind_default_upstream(enum route_kind kind)
{
	switch (kind) {
	case KIND_OPENAI:
		return ("openai");
	case KIND_AZURE:
		return ("azure");
	case KIND_ANTHROPIC:
		return ("anthropic");
	case KIND_GEMINI:
		return ("gemini");
	}
	return ("");
}

static enum api_family
kind_family(enum route_kind kind)
{
	switch (kind) {
	case KIND_ANTHROPIC:
		return (FAMILY_ANTHROPIC);
	case KIND_GEMINI:
		return (FAMILY_GEMINI);
	default:
		return (FAMILY_OPENAI);
	}
}

/* Is an upstream's own listing of the path allowed for an upstream type? */
static int
anthropic_models(const struct match *m, enum upstream_type type)
{
	/* Anthropic serves GET /v1/models too, under its own name. */
	return (m->ep == EP_MODELS && type == UPSTREAM_ANTHROPIC);
}

/*
 * Route one request. On ROUTE_OK, rt is filled (free with route_clear). On
 * anything else, *why (if not NULL) is set to an allocated sentence for the
 * error body, and rt->rt_family holds the best guess for the error shape.
 */
enum route_result
route_match(const struct config *cf, const char *method, const char *target,
    struct route *rt, char **why)
{
	const struct upstream_conf *uc = NULL;
	struct segs sg;
	struct match m;
	char *path = NULL, *query = NULL;
	const char *name, *fwd;
	size_t first = 0;
	int found;

	memset(rt, 0, sizeof(*rt));
	if (why != NULL)
		*why = NULL;
	rt->rt_family = route_guess_family(target);

	if (route_normalize(target, &path, &query) == -1) {
		if (why != NULL)
			xasprintf(why, "no such route");
		return (ROUTE_NOT_FOUND);
	}
	split(path, &sg);

	found = table_match(&sg, 0, &m);
	if (found == 1) {
		name = kind_default_upstream(m.kind);
		uc = config_find_upstream(cf, name, strlen(name));
		if (uc == NULL || !kind_serves(m.kind, uc->uc_type)) {
			if (why != NULL) {
				xasprintf(why,
				    uc == NULL ? "no upstream named '%s' is "
						 "configured "
						 "for this path"
					       : "upstream '%s' does not serve "
						 "this path",
				    name);
			}
			rt->rt_family = kind_family(m.kind);
			free(path);
			free(query);
			return (ROUTE_NO_UPSTREAM);
		}
	} else if (found == 0 && sg.n >= 2 && sg.n <= ROUTE_MAX_SEGMENTS &&
	    (uc = config_find_upstream(cf, sg.s[0], sg.len[0])) != NULL) {
		first = 1;
		found = table_match(&sg, 1, &m);
		if (found != 0 && !kind_serves(m.kind, uc->uc_type) &&
		    !anthropic_models(&m, uc->uc_type))
			found = 0;
		if (found == 1 && m.ep == EP_MODELS &&
		    uc->uc_type == UPSTREAM_ANTHROPIC)
			m.kind = KIND_ANTHROPIC;
	}
	if (found == -1) {
		/* Refused, not routed elsewhere: the name is never
		 * forwarded, priced or recorded. */
		if (why != NULL && m.badlen == 0)
			xasprintf(why,
			    "the %s name in the path is empty (a '//' where "
			    "the name goes)",
			    m.bad);
		else if (why != NULL)
			xasprintf(why,
			    "the %s name in the path must be a plain name: a "
			    "letter or digit, then letters, digits, '-', '_' "
			    "or '.' (at most %d)",
			    m.bad, ROUTE_MODEL_MAX - 1);
		rt->rt_family = kind_family(m.kind);
		free(path);
		free(query);
		return (ROUTE_BAD_NAME);
	}
	if (found == 0) {
		if (why != NULL)
			xasprintf(why, "%s",
			    has_empty_segment(&sg)
				? "no such route (the path has an empty "
				  "segment: a '//' inside it or a '/' at its "
				  "end)"
				: "no such route");
		free(path);
		free(query);
		return (ROUTE_NOT_FOUND);
	}

	rt->rt_family = kind_family(m.kind);
	rt->rt_endpoint = m.ep;
	if ((m.get && strcmp(method, "GET") != 0) ||
	    (!m.get && strcmp(method, "POST") != 0)) {
		if (why != NULL)
			xasprintf(
			    why, "this route takes %s", m.get ? "GET" : "POST");
		free(path);
		free(query);
		return (ROUTE_BAD_METHOD);
	}

	rt->rt_upstream = uc;
	rt->rt_endpoint = m.ep;
	rt->rt_metered = !(m.ep == EP_MODELS || m.ep == EP_COUNT_TOKENS ||
	    m.ep == EP_GEMINI_COUNT_TOKENS);
	memcpy(rt->rt_model, m.model, sizeof(rt->rt_model));
	/* Forward the normalised path, less the upstream-name prefix. */
	fwd = first == 0 ? path : sg.s[1] - 1;
	rt->rt_path = xstrdup(fwd);
	rt->rt_query = query;
	free(path);
	return (ROUTE_OK);
}

/* Free what route_match allocated. */
void
route_clear(struct route *rt)
{
	free(rt->rt_path);
	free(rt->rt_query);
	rt->rt_path = rt->rt_query = NULL;
}

/* Guess the wire family from a raw target, for refusals before routing. */
enum api_family
route_guess_family(const char *target)
{
	if (strstr(target, "/v1beta/") != NULL)
		return (FAMILY_GEMINI);
	if (strstr(target, "/v1/messages") != NULL)
		return (FAMILY_ANTHROPIC);
	return (FAMILY_OPENAI);
}

/* The endpoint's name for logs and the ledger. */
const char *
route_endpoint_name(enum endpoint ep)
{
	static const char *names[] = {
	    [EP_CHAT] = "chat.completions",
	    [EP_COMPLETIONS] = "completions",
	    [EP_EMBEDDINGS] = "embeddings",
	    [EP_RESPONSES] = "responses",
	    [EP_MODELS] = "models",
	    [EP_MESSAGES] = "messages",
	    [EP_COUNT_TOKENS] = "messages.count_tokens",
	    [EP_GEMINI_GENERATE] = "generateContent",
	    [EP_GEMINI_STREAM] = "streamGenerateContent",
	    [EP_GEMINI_COUNT_TOKENS] = "countTokens",
	    [EP_GEMINI_EMBED] = "embedContent",
	};

	if ((size_t)ep >= nitems(names) || names[ep] == NULL)
		return ("unknown");
	return (names[ep]);
}

/* The family's name for logs. */
const char *
route_family_name(enum api_family f)
{
	switch (f) {
	case FAMILY_ANTHROPIC:
		return ("anthropic");
	case FAMILY_GEMINI:
		return ("gemini");
	default:
		return ("openai");
	}
}
