/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The response cache (the cache: section of the config): an exact-match
 * store of answers the provider gave, so an identical request of the same
 * tenant with the same key is answered again without reaching it. The key
 * is a SHA-256 over the tenant, the fingerprint of the client's key, the
 * upstream, the path, stream or not, and the request body canonicalised
 * (keys sorted recursively, whitespace gone). Entries live in an SQLite
 * file of their own, bounded by a TTL, a count and a size; lookups are
 * made on the loop, inserts and evictions on a thread of the store's own.
 * The cache knows nothing of calls: the call's life (src/call/
 * session_cache.c) decides what is looked up and what is stored.
 * docs/spend-less.md has the semantics.
 */
#ifndef TOLLGATE_CACHE_H
#define TOLLGATE_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct hdrs;

#include "tollgate/routing.h"
#include "tollgate/usage.h"

#define CACHE_KEY_LEN 32 /* a SHA-256 */
/* The largest answer cache.max_entry_bytes may let the store keep. */
#define CACHE_MAX_ENTRY_BYTES (64 * 1024 * 1024)

/* The cache: section, read-only once loaded; owned by its config. */
struct cache_conf {
	char *cc_path; /* the store's file, absolute */
	long cc_ttl_ms; /* an entry is served this long after it is stored */
	struct routing_rule cc_match; /* only its rr_match: the calls
					 cached, as a routing rule's match */
	int cc_max_entries; /* the oldest go past this many */
	size_t cc_max_bytes; /* ... or past this many bytes of answers */
	size_t cc_max_entry_bytes; /* a larger answer is not stored */
};

/* What a key is made of besides the body; every string may be NULL. */
struct cache_keyparts {
	const char *kp_tenant;
	const char *kp_key; /* the client's key fingerprint, or binding */
	const char *kp_binding; /* "tollgate", "provider" or NULL: none */
	const char *kp_upstream;
	const char *kp_path; /* with Gemini's model in it */
	int kp_stream;
	int kp_usage_injected; /* tollgate added include_usage */
	const struct hdrs *kp_hdrs; /* the request's (cache_key_hdrs) */
};

/* One stored answer; its strings and body owned by whoever holds it. */
struct cache_entry {
	int ce_status;
	char *ce_ctype; /* the provider's Content-Type, or NULL */
	char *ce_body;
	size_t ce_len;
	struct usage ce_usage; /* what the provider reported for it */
	int64_t ce_created_ms; /* Unix ms */
};

/* The store's figures, for /metrics. */
struct cache_stats {
	int64_t cs_entries;
	int64_t cs_bytes;
	uint64_t cs_dropped; /* answers not stored: the queue was full or
				the write failed */
};

/* entry.c */
int cache_entry_valid(const struct cache_entry *);
char *cache_entry_encode(const struct cache_entry *, size_t *);
int cache_entry_decode(const char *, size_t, struct cache_entry *);

/* key.c */
char *cache_canonical(const char *, size_t, size_t *, char **);
int cache_key(const struct cache_keyparts *, const char *, size_t,
    unsigned char *, char **);

/* store.c */
int cache_open(const char *, char **);
int cache_is_open(void);
const char *cache_path(void);
int cache_get(const unsigned char *, int64_t, int64_t, struct cache_entry *);
void cache_put(const unsigned char *, const char *, struct cache_entry *,
    int64_t, const struct cache_conf *);
void cache_entry_clear(struct cache_entry *);
void cache_sync(void);
void cache_get_stats(struct cache_stats *);
void cache_close(void);

#endif
