/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cache's key: what makes two requests "the same". The request body
 * is canonicalised with cJSON (members of every object sorted by name,
 * recursively; whitespace gone; strings and numbers printed the one way
 * cJSON prints them), so a client that orders its members differently or
 * indents them still hits, while every value (model, messages, tools,
 * temperature, n, seed) counts. The key is a SHA-256 over the partition
 * (tenant, the client's key fingerprint), where the call goes (upstream,
 * path, stream or not) and that canonical body, each part length-prefixed
 * so that no two different lists of parts hash the same bytes.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "tollgate/cache.h"
#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

/*
 * Integers at or past 2^53 do not survive a double: two seeds that differ
 * in their last digits would print (and hash) the same. Such a body is
 * not cached rather than risk serving one request another's answer.
 */
#define CACHE_EXACT_MAX 9007199254740992.0

/*
 * Request headers that select what the provider answers (an API version,
 * beta features, the organisation or project billed and its models):
 * two requests that differ in one of them are not the same request.
 */
static const char *const cache_key_hdrs[] = {
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "x-goog-user-project",
};

/* A member and where it came in its object. */
struct member {
	cJSON *m_item;
	size_t m_pos;
};

static int
member_cmp(const void *a, const void *b)
{
	const struct member *x = a, *y = b;
	int c;

	c = strcmp(x->m_item->string, y->m_item->string);
	if (c != 0)
		return (c);
	/* Duplicate names keep the order they came in: a provider reads
	 * one of them, and which one depends on that order. */
	return (x->m_pos < y->m_pos ? -1 : x->m_pos > y->m_pos);
}

/*
 * Sort the members of every object under j by name, in place. Returns 0,
 * or -1 when a number cannot be told apart from its neighbours.
 */
static int
canon_sort(cJSON *j)
{
	struct member *v;
	cJSON *c;
	char num[32];
	size_t n, i;

	if (cJSON_IsNumber(j)) {
		if (fabs(j->valuedouble) >= CACHE_EXACT_MAX ||
		    !isfinite(j->valuedouble))
			return (-1);
		/*
		 * cJSON prints a number with 15 digits when that reads back
		 * within an epsilon of it, so 0.1234567890123456 and
		 * ...457 would print (and hash) the same: 17 digits tell
		 * every two doubles apart. Printed as a raw member.
		 */
		snprintf(num, sizeof(num), "%.17g", j->valuedouble);
		if ((j->valuestring = cJSON_malloc(strlen(num) + 1)) == NULL)
			fatalx("%s: cJSON_malloc", __func__);
		memcpy(j->valuestring, num, strlen(num) + 1);
		j->type = cJSON_Raw;
		return (0);
	}
	if (!cJSON_IsObject(j) && !cJSON_IsArray(j))
		return (0);
	for (n = 0, c = j->child; c != NULL; c = c->next)
		if (canon_sort(c) == -1)
			return (-1);
		else
			n++;
	if (!cJSON_IsObject(j) || n < 2)
		return (0);
	v = xreallocarray(NULL, n, sizeof(*v));
	for (i = 0, c = j->child; c != NULL; c = c->next, i++) {
		v[i].m_item = c;
		v[i].m_pos = i;
	}
	qsort(v, n, sizeof(*v), member_cmp);
	/* cJSON's lists: head's prev is the tail, the tail's next NULL. */
	for (i = 0; i < n; i++) {
		v[i].m_item->prev = i > 0 ? v[i - 1].m_item : v[n - 1].m_item;
		v[i].m_item->next = i + 1 < n ? v[i + 1].m_item : NULL;
	}
	j->child = v[0].m_item;
	free(v);
	return (0);
}

/*
 * Does the JSON text of len bytes hold a NUL inside its value: a raw one
 * or a \u0000 escape (in a string or a member name)? cJSON keeps strings
 * as C strings, so whatever follows a NUL would be dropped from the
 * canonical form while the provider still reads it: two different
 * requests would share a key.
 */
static int
canon_has_nul(const char *s, size_t len)
{
	size_t i;

	if (memchr(s, '\0', len) != NULL)
		return (1);
	for (i = 0; i + 1 < len; i++) {
		if (s[i] != '\\')
			continue;
		/* An escaped backslash is not the start of an escape. */
		if (s[i + 1] == 'u' && i + 5 < len && s[i + 2] == '0' &&
		    s[i + 3] == '0' && s[i + 4] == '0' && s[i + 5] == '0')
			return (1);
		i++;
	}
	return (0);
}

/*
 * The canonical form of a JSON body of len bytes: a new string of *outlen
 * bytes, or NULL with *cause when the body is not one JSON value (or holds
 * a number too large to compare exactly), which makes the request
 * uncacheable.
 */
char *
cache_canonical(const char *body, size_t len, size_t *outlen, char **cause)
{
	cJSON *j;
	const char *end = NULL, *vend;
	char *out;

	*cause = NULL;
	j = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (j == NULL) {
		xasprintf(cause, "the body is not JSON");
		return (NULL);
	}
	vend = end != NULL ? end : body + len;
	while (end != NULL && end < body + len &&
	    (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n' ||
		*end == '\0'))
		end++;
	if (end != body + len) {
		cJSON_Delete(j);
		xasprintf(cause, "the body has bytes after its JSON value");
		return (NULL);
	}
	/* Only the value: NULs after it were skipped above. */
	if (canon_has_nul(body, (size_t)(vend - body))) {
		cJSON_Delete(j);
		xasprintf(cause, "the body has a NUL character in a string");
		return (NULL);
	}
	if (canon_sort(j) == -1) {
		cJSON_Delete(j);
		xasprintf(cause,
		    "the body has a number too large to compare exactly");
		return (NULL);
	}
	out = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	if (out == NULL)
		fatalx("%s: cJSON_PrintUnformatted", __func__);
	*outlen = strlen(out);
	return (out);
}

/* Hash one part as its length (8 bytes, big-endian) then its bytes. */
static void
key_part(EVP_MD_CTX *md, const char *s, size_t len)
{
	unsigned char n[8];
	uint64_t v = s != NULL ? len : UINT64_MAX; /* NULL is not "" */
	int i;

	for (i = 7; i >= 0; i--) {
		n[i] = v & 0xff;
		v >>= 8;
	}
	if (EVP_DigestUpdate(md, n, sizeof(n)) != 1 ||
	    (s != NULL && len > 0 && EVP_DigestUpdate(md, s, len) != 1))
		fatalx("%s: EVP_DigestUpdate", __func__);
}

static void
key_str(EVP_MD_CTX *md, const char *s)
{
	key_part(md, s, s != NULL ? strlen(s) : 0);
}

/*
 * Hash the values of the headers in cache_key_hdrs, in that order: for
 * each name, how many times it came then each value as sent, so that an
 * absent header is not an empty one.
 */
static void
key_hdrs(EVP_MD_CTX *md, const struct hdrs *hs)
{
	char count[24];
	size_t h, i, n;

	for (h = 0; h < sizeof(cache_key_hdrs) / sizeof(*cache_key_hdrs); h++) {
		key_str(md, cache_key_hdrs[h]);
		for (n = 0, i = 0; hs != NULL && i < hs->hs_n; i++)
			if (strcasecmp(hs->hs_v[i].h_name, cache_key_hdrs[h]) ==
			    0)
				n++;
		snprintf(count, sizeof(count), "%zu", n);
		key_str(md, count);
		for (i = 0; hs != NULL && i < hs->hs_n; i++)
			if (strcasecmp(hs->hs_v[i].h_name, cache_key_hdrs[h]) ==
			    0)
				key_str(md, hs->hs_v[i].h_value);
	}
}

/*
 * The key (CACHE_KEY_LEN bytes into out) of a request: kp and the
 * canonical form of its body. Returns 0, or -1 with *cause when the body
 * cannot be canonicalised (the request is not cached).
 */
int
cache_key(const struct cache_keyparts *kp, const char *body, size_t len,
    unsigned char *out, char **cause)
{
	EVP_MD_CTX *md;
	char *canon;
	size_t clen;
	unsigned int n;

	if ((canon = cache_canonical(body, len, &clen, cause)) == NULL)
		return (-1);
	if ((md = EVP_MD_CTX_new()) == NULL)
		fatalx("%s: EVP_MD_CTX_new", __func__);
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		fatalx("%s: EVP_DigestInit_ex", __func__);
	key_str(md, "tollgate-cache-2"); /* a new layout gets a new tag */
	key_str(md, kp->kp_tenant);
	key_str(md, kp->kp_key);
	key_str(md, kp->kp_binding);
	key_str(md, kp->kp_upstream);
	key_str(md, kp->kp_path);
	key_str(md, kp->kp_stream ? "stream" : "whole");
	/* The stored bytes are what the client got: without the usage
	 * chunk when tollgate asked for it, with it when the client did. */
	key_str(md, kp->kp_usage_injected ? "usage-injected" : "as-sent");
	key_hdrs(md, kp->kp_hdrs);
	key_part(md, canon, clen);
	if (EVP_DigestFinal_ex(md, out, &n) != 1 || n != CACHE_KEY_LEN)
		fatalx("%s: EVP_DigestFinal_ex", __func__);
	EVP_MD_CTX_free(md);
	free(canon);
	return (0);
}
