/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Header lists and the header classifications the proxy needs: which are
 * hop-by-hop (never forwarded, RFC 9110 §7.6.1) and which carry secrets
 * (never logged).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tollgate/http.h"
#include "tollgate/util.h"

/* Append a header; name and value need not be NUL-terminated. */
void
hdrs_add(struct hdrs *hs, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	struct hdr *h;

	if (hs->hs_n == hs->hs_cap) {
		hs->hs_cap = hs->hs_cap == 0 ? 16 : hs->hs_cap * 2;
		hs->hs_v =
		    xreallocarray(hs->hs_v, hs->hs_cap, sizeof(*hs->hs_v));
	}
	h = &hs->hs_v[hs->hs_n++];
	h->h_name = xstrndup(name, nlen);
	h->h_value = xstrndup(value, vlen);
	hs->hs_bytes += nlen + vlen;
}

/* The value of the first header called name, or NULL. */
const char *
hdrs_get(const struct hdrs *hs, const char *name)
{
	size_t i;

	for (i = 0; i < hs->hs_n; i++) {
		if (strcasecmp(hs->hs_v[i].h_name, name) == 0)
			return (hs->hs_v[i].h_value);
	}
	return (NULL);
}

/* How many headers are called name. */
size_t
hdrs_count(const struct hdrs *hs, const char *name)
{
	size_t i, n = 0;

	for (i = 0; i < hs->hs_n; i++) {
		if (strcasecmp(hs->hs_v[i].h_name, name) == 0)
			n++;
	}
	return (n);
}

/* Free every header; the list can be reused. Values are wiped first since
 * they may hold keys. */
void
hdrs_clear(struct hdrs *hs)
{
	size_t i;

	for (i = 0; i < hs->hs_n; i++) {
		free(hs->hs_v[i].h_name);
		freezero(hs->hs_v[i].h_value, strlen(hs->hs_v[i].h_value));
	}
	free(hs->hs_v);
	memset(hs, 0, sizeof(*hs));
}

/* Does a comma-separated header value contain token (any case)? */
int
http_token_has(const char *value, const char *token)
{
	size_t tlen = strlen(token);
	const char *p = value;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (strncasecmp(p, token, tlen) == 0) {
			const char *e = p + tlen;

			while (*e == ' ' || *e == '\t')
				e++;
			if (*e == ',' || *e == '\0')
				return (1);
		}
		while (*p != '\0' && *p != ',')
			p++;
	}
	return (0);
}

/* Headers that describe one connection and are never forwarded. */
int
http_is_hop_by_hop(const char *name)
{
	static const char *hop[] = {
	    "Connection",
	    "Keep-Alive",
	    "Proxy-Authenticate",
	    "Proxy-Authorization",
	    "Proxy-Connection",
	    "TE",
	    "Trailer",
	    "Transfer-Encoding",
	    "Upgrade",
	};
	size_t i;

	for (i = 0; i < nitems(hop); i++) {
		if (strcasecmp(name, hop[i]) == 0)
			return (1);
	}
	return (0);
}

/* Headers whose values are credentials. */
int
http_is_secret_header(const char *name)
{
	static const char *secret[] = {
	    "Authorization",
	    "Proxy-Authorization",
	    "x-api-key",
	    "api-key",
	    "x-goog-api-key",
	    "Cookie",
	};
	size_t i;

	for (i = 0; i < nitems(secret); i++) {
		if (strcasecmp(name, secret[i]) == 0)
			return (1);
	}
	return (0);
}
