/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Routing: a request-target is normalised (percent-escapes decoded, a
 * leading `//` read as `/`, dot segments and encoded separators refused;
 * an empty segment elsewhere stays a segment) and matched
 * against the fixed table of provider endpoints. Only the normalised path is
 * ever forwarded, so the path that was checked is the path the provider
 * sees. Anything that is not in the table is refused; nothing is passed
 * through unmetered by accident.
 */
#ifndef TOLLGATE_ROUTE_H
#define TOLLGATE_ROUTE_H

#include <stddef.h>

struct config;
struct upstream_conf;

/* The wire format a route speaks: decides the error shape and adapter. */
enum api_family {
	FAMILY_OPENAI,
	FAMILY_ANTHROPIC,
	FAMILY_GEMINI,
};

enum endpoint {
	EP_CHAT,
	EP_COMPLETIONS,
	EP_EMBEDDINGS,
	EP_RESPONSES,
	EP_MODELS,
	EP_MESSAGES,
	EP_COUNT_TOKENS,
	EP_GEMINI_GENERATE,
	EP_GEMINI_STREAM,
	EP_GEMINI_COUNT_TOKENS,
	EP_GEMINI_EMBED,
};

#define ROUTE_MODEL_MAX 128

/* Where one request goes; filled by route_match, freed by route_clear. */
struct route {
	const struct upstream_conf *rt_upstream; /* borrowed from the config */
	enum api_family rt_family;
	enum endpoint rt_endpoint;
	int rt_metered; /* 0 for free endpoints */
	char rt_model[ROUTE_MODEL_MAX]; /* model from the URL, or "" */
	char *rt_path; /* path sent upstream, owned */
	char *rt_query; /* query without '?', or NULL */
};

enum route_result {
	ROUTE_OK,
	ROUTE_NOT_FOUND, /* 404: not a route, or a path that is refused */
	ROUTE_BAD_METHOD, /* 405: a route, but not with this method */
	ROUTE_NO_UPSTREAM, /* 404: the route's upstream is not configured */
	ROUTE_BAD_NAME, /* 400: a route, but its model or deployment name
			   is not a plain name (empty, ".", "..", bytes) */
};

/* route.c */
int route_normalize(const char *, char **, char **);
enum route_result route_match(
    const struct config *, const char *, const char *, struct route *, char **);
void route_clear(struct route *);
enum api_family route_guess_family(const char *);
const char *route_endpoint_name(enum endpoint);
const char *route_family_name(enum api_family);

#endif
