/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attribution: the tags of a call and the fingerprint of its key.
 *
 * The key a client presented is looked for where each SDK puts it
 * (Authorization: Bearer, x-api-key, api-key, x-goog-api-key, or Gemini's
 * ?key=), hashed with SHA-256, and matched against the config's bindings.
 * A binding's tags are fixed: a client cannot move its spend to another
 * team by sending a header (LiteLLM #11083 is the cautionary tale). Other
 * tags come from the X-Tollgate-* headers the config trusts, then from the
 * defaults. A required tag that is still missing refuses the call.
 *
 * Only a 16-hex-digit prefix of the SHA-256 is ever stored or logged:
 * enough to tell keys apart in a ledger, not a mask of the key itself
 * (LiteLLM #5433 shows prefix/suffix masks can be reversed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "tollgate/attribution.h"
#include "tollgate/config.h"
#include "tollgate/http.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

/* The value of a tag, or NULL when it is unset. */
const char *
attribution_tag(const struct attribution *at, enum tag t)
{
	return (at->at_tag[t][0] != '\0' ? at->at_tag[t] : NULL);
}

#define KEYS_MAX 8

/* The credentials a request carries, each distinct value once. */
struct keys {
	const char *k_val[KEYS_MAX];
	size_t k_len[KEYS_MAX];
	size_t k_n;
	int k_overflow;
	char *k_decoded[KEYS_MAX]; /* ?key= values decoded, owned */
	size_t k_decsize[KEYS_MAX];
	size_t k_ndecoded;
};

static void
note_key(struct keys *ks, const char *v, size_t len)
{
	size_t i;

	if (len == 0)
		return;
	for (i = 0; i < ks->k_n; i++) {
		if (ks->k_len[i] == len && memcmp(ks->k_val[i], v, len) == 0)
			return;
	}
	if (ks->k_n == KEYS_MAX) {
		ks->k_overflow = 1;
		return;
	}
	ks->k_val[ks->k_n] = v;
	ks->k_len[ks->k_n++] = len;
}

/*
 * Percent-decode p[0..n) into dst (room for n + 1 bytes, NUL-terminated).
 * Returns the decoded length, or SIZE_MAX when an escape is malformed.
 */
static size_t
query_decode(const char *p, size_t n, char *dst)
{
	size_t i, o = 0;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (p[i] != '%') {
			dst[o++] = p[i];
			continue;
		}
		if (n - i < 3 ||
		    (hi = hex_digit((unsigned char)p[i + 1])) < 0 ||
		    (lo = hex_digit((unsigned char)p[i + 2])) < 0)
			return (SIZE_MAX);
		dst[o++] = (char)(hi * 16 + lo);
		i += 2;
	}
	dst[o] = '\0';
	return (o);
}

/*
 * Whether the query parameter p[0..n) is named key, as the provider's
 * query parser reads the name: percent-escapes decoded, so ?k%65y= is a
 * key too. *val is set to its value's offset in p.
 */
static int
query_is_key(const char *p, size_t n, size_t *val)
{
	char name[16];
	size_t nlen = strcspn(p, "=&");

	if (nlen > n)
		nlen = n;
	*val = nlen < n ? nlen + 1 : n;
	if (nlen >= sizeof(name))
		return (0);
	return (
	    query_decode(p, nlen, name) == 3 && memcmp(name, "key", 4) == 0);
}

/* Note the ?key= value v[0..n), decoded as the provider decodes it. */
static void
note_query_key(struct keys *ks, const char *v, size_t n)
{
	char *dec = xmalloc(n + 1);
	size_t dlen;

	if ((dlen = query_decode(v, n, dec)) == SIZE_MAX) {
		memcpy(dec, v, n); /* not decodable: kept as written */
		dlen = n;
	}
	ks->k_decsize[ks->k_ndecoded] = n + 1;
	ks->k_decoded[ks->k_ndecoded++] = dec;
	note_key(ks, dec, dlen);
}

/*
 * Every credential the client presented, wherever an SDK puts one:
 * Authorization: Bearer, x-api-key, api-key, x-goog-api-key, ?key=.
 * A header name's length picks the one slot it could be. A ?key= value is
 * percent-decoded, as the provider reads it, before it is matched.
 */
static void
presented_keys(const struct hdrs *hs, const char *query, struct keys *ks)
{
	const struct hdr *h;
	const char *v, *p, *slot;
	size_t i, n, val;

	memset(ks, 0, sizeof(*ks));
	for (i = 0; i < hs->hs_n; i++) {
		h = &hs->hs_v[i];
		v = h->h_value;
		switch (strlen(h->h_name)) {
		case 7:
			slot = "api-key";
			break;
		case 9:
			slot = "x-api-key";
			break;
		case 13:
			slot = "Authorization";
			break;
		case 14:
			slot = "x-goog-api-key";
			break;
		default:
			continue;
		}
		if (strcasecmp(h->h_name, slot) != 0)
			continue;
		if (slot[0] == 'A') {
			if (strncasecmp(v, "Bearer ", 7) != 0)
				continue;
			v += 7;
			while (*v == ' ')
				v++;
		}
		note_key(ks, v, strlen(v));
	}
	for (p = query; p != NULL && *p != '\0';) {
		n = strcspn(p, "&");
		if (query_is_key(p, n, &val)) {
			if (ks->k_ndecoded == KEYS_MAX)
				ks->k_overflow = 1; /* too many to tell */
			else
				note_query_key(ks, p + val, n - val);
		}
		p = p[n] == '&' ? p + n + 1 : NULL;
	}
}

static void
keys_free(struct keys *ks)
{
	size_t i;

	for (i = 0; i < ks->k_ndecoded; i++)
		freezero(ks->k_decoded[i], ks->k_decsize[i]);
	ks->k_ndecoded = 0;
}

/*
 * The value of each X-Tollgate-* header attribution reads (the tag
 * headers, then X-Tollgate-Request-Id at TAG_MAX), from one pass over the
 * headers. Returns the index of one given more than once, or -1: a proxy
 * in front may have added one while the client sent another, and which
 * one counts would be a guess.
 */
static int
tollgate_headers(const struct hdrs *hs, const char *v[TAG_MAX + 1])
{
	const char *name;
	size_t i;
	int t;

	for (t = 0; t <= TAG_MAX; t++)
		v[t] = NULL;
	for (i = 0; i < hs->hs_n; i++) {
		name = hs->hs_v[i].h_name;
		if (strncasecmp(name, "X-Tollgate-", 11) != 0)
			continue;
		/* Every header compared below starts with that prefix. */
		for (t = 0; t < TAG_MAX; t++) {
			if (strcasecmp(name + 11, tag_header(t) + 11) == 0)
				break;
		}
		if (t == TAG_MAX && strcasecmp(name + 11, "Request-Id") != 0)
			continue;
		if (v[t] != NULL)
			return (t);
		v[t] = hs->hs_v[i].h_value;
	}
	return (-1);
}

/* A client's request id: 1 to REQUEST_ID_MAX of [A-Za-z0-9._:-]. */
int
attribution_request_id_ok(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > REQUEST_ID_MAX)
		return (0);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '-' || c == '_' ||
			c == '.' || c == ':'))
			return (0);
	}
	return (1);
}

/*
 * Attribute a call from its request headers and query. Returns 0, or -1
 * with *code set to a reason and *msg to an allocated sentence for a 400.
 */
int
attribution_resolve(const struct config *cf, const struct hdrs *hs,
    const char *query, struct attribution *at, const char **code, char **msg)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	const struct key_binding *kb = NULL;
	struct keys ks;
	const char *v, *hv[TAG_MAX + 1];
	size_t i, k;
	int t, matched;

	memset(at, 0, sizeof(*at));
	*code = NULL;
	*msg = NULL;

	/*
	 * Every presented key is matched. A bound key must be the only key
	 * on the request: otherwise a decoy in one slot could choose the
	 * binding (and its tags) while the provider authenticates with the
	 * key in another, or a tollgate key could ride along to the
	 * provider next to a junk one.
	 */
	presented_keys(hs, query, &ks);
	for (k = 0; k < ks.k_n; k++) {
		if (EVP_Digest(ks.k_val[k], ks.k_len[k], md, &mdlen,
			EVP_sha256(), NULL) != 1 ||
		    mdlen != 32)
			continue;
		matched = 0;
		for (i = 0; kb == NULL && i < cf->cf_nkeys; i++) {
			if (memcmp(cf->cf_keys[i].kb_sha256, md, 32) == 0) {
				kb = &cf->cf_keys[i];
				matched = 1;
			}
		}
		/* The fingerprint is the bound key's, else the first one's. */
		if (k == 0 || matched) {
			for (i = 0; i < 8; i++) {
				at->at_key_fp[2 * i] = hex[md[i] >> 4];
				at->at_key_fp[2 * i + 1] = hex[md[i] & 0xf];
			}
		}
		explicit_bzero(md, sizeof(md));
	}
	keys_free(&ks);
	if (kb != NULL && (ks.k_n > 1 || ks.k_overflow)) {
		*code = "conflicting_credentials";
		xasprintf(msg,
		    "a bound key was sent together with a different key "
		    "(Authorization, x-api-key, api-key, x-goog-api-key or "
		    "?key=); send one");
		return (-1);
	}
	at->at_binding = kb;

	if ((t = tollgate_headers(hs, hv)) != -1) {
		*code = t == TAG_MAX ? "bad_request_id" : "bad_tag";
		xasprintf(msg, "%s is given more than once; send it once",
		    t == TAG_MAX ? "X-Tollgate-Request-Id" : tag_header(t));
		return (-1);
	}
	for (t = 0; t < TAG_MAX; t++) {
		if (kb != NULL && kb->kb_tags[t] != NULL) {
			strcopy(at->at_tag[t], sizeof(at->at_tag[t]),
			    kb->kb_tags[t]);
			continue;
		}
		v = hv[t];
		if (v != NULL && cf->cf_tag_from_header[t]) {
			if (!tag_value_ok(v, strlen(v))) {
				*code = "bad_tag";
				xasprintf(msg,
				    "%s must be 1 to %d printable "
				    "characters without spaces, '*' or '?'",
				    tag_header(t), TAG_VALUE_MAX);
				return (-1);
			}
			strcopy(at->at_tag[t], sizeof(at->at_tag[t]), v);
			continue;
		}
		if (cf->cf_tag_default[t] != NULL)
			strcopy(at->at_tag[t], sizeof(at->at_tag[t]),
			    cf->cf_tag_default[t]);
	}
	for (t = 0; t < TAG_MAX; t++) {
		if (cf->cf_tag_required[t] && at->at_tag[t][0] == '\0') {
			*code = "missing_tag";
			xasprintf(msg, "the tag %s is required: send %s%s",
			    tag_name(t), tag_header(t),
			    cf->cf_tag_from_header[t]
				? ""
				: " (not trusted from headers: bind the key "
				  "instead)");
			return (-1);
		}
	}

	if ((v = hv[TAG_MAX]) != NULL) {
		if (!attribution_request_id_ok(v)) {
			*code = "bad_request_id";
			xasprintf(msg,
			    "X-Tollgate-Request-Id must be 1 to %d "
			    "characters of A-Z a-z 0-9 - _ . :",
			    REQUEST_ID_MAX);
			return (-1);
		}
		strcopy(at->at_request_id, sizeof(at->at_request_id), v);
	}
	return (0);
}

/*
 * A copy of query without its key parameters (NULL if none remain), named
 * as query_is_key reads them.
 */
char *
attribution_strip_query_key(const char *query)
{
	char *out;
	const char *p = query, *amp;
	size_t o = 0, n, val;

	if (query == NULL)
		return (NULL);
	out = xmalloc(strlen(query) + 1);
	while (*p != '\0') {
		amp = strchr(p, '&');
		n = amp != NULL ? (size_t)(amp - p) : strlen(p);
		if (!query_is_key(p, n, &val)) {
			if (o > 0)
				out[o++] = '&';
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
		if (*p == '&')
			p++;
	}
	out[o] = '\0';
	if (o == 0) {
		free(out);
		return (NULL);
	}
	return (out);
}
