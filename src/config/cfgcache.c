/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cache: section: which calls the response cache answers (match:,
 * the shape of a routing rule's match, parsed by the routing module),
 * how long an answer is served (ttl), the store's file (path, by default
 * beside the ledger) and its bounds (max_entries, max_bytes,
 * max_entry_bytes), with their defaults and ranges. Every error is said
 * at file:line:col. src/cache/ opens the file at start; a reload that
 * changes the path is warned about by server_reload, while the TTL, the
 * match and the bounds apply to the calls the new config serves.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/cache.h"
#include "tollgate/config.h"
#include "tollgate/routing.h"
#include "tollgate/util.h"

#include "cfg.h"

#define CC_OFF(f) offsetof(struct cache_conf, f)

/* The defaults: an hour, and a store of at most 10,000 answers, 256 MiB. */
#define CACHE_DEFAULT_TTL_MS (3600L * 1000)
#define CACHE_DEFAULT_ENTRIES 10000
#define CACHE_DEFAULT_BYTES ((size_t)256 * 1024 * 1024)
#define CACHE_DEFAULT_ENTRY_BYTES ((size_t)1024 * 1024)

static void cfgp_cache_match(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);

static const struct cfgkey cache_keys[] = {
    KEY_CALL("path", cfgp_path, CC_OFF(cc_path), 0),
    KEY_DURATION("ttl", CC_OFF(cc_ttl_ms)),
    KEY_CALL("match", cfgp_cache_match, 0, 0),
    KEY_INT("max_entries", CC_OFF(cc_max_entries), 1, 100000000),
    KEY_SIZE("max_bytes", CC_OFF(cc_max_bytes), 1024),
    KEY_SIZE("max_entry_bytes", CC_OFF(cc_max_entry_bytes), 64),
    KEY_END,
};

static void
cache_conf_free(struct cache_conf *cc)
{
	int a;

	if (cc == NULL)
		return;
	free(cc->cc_path);
	for (a = 0; a < ROUTING_ATTR_MAX; a++)
		free(cc->cc_match.rr_match[a]);
	free(cc);
}

static void
cfgp_cache_match(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct cache_conf *cc = dst;

	(void)k;
	routing_parse_match(cx, path, n, &cc->cc_match);
}

/* cache: the section, into cf_cache with its defaults. */
void
cfgp_cache(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	struct cache_conf *cc;

	(void)k;
	cache_conf_free(cf->cf_cache);
	cf->cf_cache = NULL;
	if (ynode_is_null(n))
		return;
	cc = cf->cf_cache = xcalloc(1, sizeof(*cc));
	cc->cc_ttl_ms = CACHE_DEFAULT_TTL_MS;
	cc->cc_max_entries = CACHE_DEFAULT_ENTRIES;
	cc->cc_max_bytes = CACHE_DEFAULT_BYTES;
	cc->cc_max_entry_bytes = CACHE_DEFAULT_ENTRY_BYTES;
	cc->cc_match.rr_name = NULL;
	cc->cc_match.rr_max_tokens = -1;
	cc->cc_match.rr_below_pct = -1;
	cfg_apply(cx, cache_keys, path, n, n, cc);
}

/*
 * The section against the rest of the file: the default path beside the
 * ledger (data/ledger.db: data/ledger-cache.db), an answer bound that
 * fits the store's, a match pattern that can take a value.
 */
void
config_check_cache(
    struct cfgctx *cx, const struct ynode *root, struct config *cf)
{
	struct cache_conf *cc = cf->cf_cache;
	const struct ynode *n, *at;
	size_t len;

	if (cc == NULL || root == NULL ||
	    (n = cfg_value(root, "cache")) == NULL)
		return;
	if (cc->cc_path == NULL && cf->cf_ledger_path != NULL) {
		len = strlen(cf->cf_ledger_path);
		if (len > 3 && strcmp(cf->cf_ledger_path + len - 3, ".db") == 0)
			len -= 3;
		xasprintf(&cc->cc_path, "%.*s-cache.db", (int)len,
		    cf->cf_ledger_path);
	}
	if (cc->cc_path != NULL && cf->cf_ledger_path != NULL &&
	    strcmp(cc->cc_path, cf->cf_ledger_path) == 0) {
		at = cfg_value(n, "path") != NULL ? cfg_value(n, "path") : n;
		cfg_error(cx, at,
		    "cache.path: the cache needs a file of its own, not the "
		    "ledger's");
	}
	/* Each miss in flight buffers up to this much, the store's queue
	 * takes no answer past 64 MiB, and Redis' encoding has 4 bytes of
	 * length: a larger bound would never keep what it promises. */
	if (cc->cc_max_entry_bytes > CACHE_MAX_ENTRY_BYTES) {
		at = cfg_value(n, "max_entry_bytes") != NULL
		    ? cfg_value(n, "max_entry_bytes")
		    : n;
		cfg_error(cx, at,
		    "cache.max_entry_bytes: %zu is more than the most an "
		    "answer can be (%d, 64MiB)",
		    cc->cc_max_entry_bytes, CACHE_MAX_ENTRY_BYTES);
	} else if (cc->cc_max_entry_bytes > cc->cc_max_bytes) {
		at = cfg_value(n, "max_entry_bytes") != NULL
		    ? cfg_value(n, "max_entry_bytes")
		    : n;
		cfg_error(cx, at,
		    "cache.max_entry_bytes: %zu is more than max_bytes (%zu): "
		    "no answer that large could be kept",
		    cc->cc_max_entry_bytes, cc->cc_max_bytes);
	}
	config_check_match(cx, n, "cache", &cc->cc_match, cf);
}

/* What the cache: section holds. */
void
config_free_cache(struct config *cf)
{
	cache_conf_free(cf->cf_cache);
	cf->cf_cache = NULL;
}
