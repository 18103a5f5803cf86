/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The response cache in the fleet's Redis: with a fleet: section every
 * instance keeps its answers there, so an answer one instance stored is
 * served by all of them. An entry is one string value, the encoded answer
 * (src/cache/entry.c), at <prefix>cache:<the key in hex>, written with
 * SET ... PX <ttl> NX: Redis expires it, and the first answer stored
 * under a key stays. Lookups are GETs on the fleet's command connection,
 * answered on the loop; a call waits for the answer at most the
 * connection's command_timeout, and Redis down, slow or answering what is
 * not an entry is a miss. Redis' own maxmemory policy bounds the store.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "tollgate/cache.h"
#include "tollgate/config.h"
#include "tollgate/fleet.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "fleet_int.h"

/* A lookup in flight; freed by its reply. */
struct fleet_cache_req {
	fleet_cache_cb fc_cb; /* NULL once cancelled */
	void *fc_arg;
};

/* <prefix>cache:<hex of key>, in a new string. */
static char *
entry_key(const unsigned char *key)
{
	static const char hex[] = "0123456789abcdef";
	char h[2 * CACHE_KEY_LEN + 1], *k;
	size_t i;

	for (i = 0; i < CACHE_KEY_LEN; i++) {
		h[2 * i] = hex[key[i] >> 4];
		h[2 * i + 1] = hex[key[i] & 0xf];
	}
	h[2 * CACHE_KEY_LEN] = '\0';
	xasprintf(&k, "%scache:%s", fl.f_conf->fc_prefix, h);
	return (k);
}

static void
get_cb(const redisReply *r, const char *err, void *arg)
{
	struct fleet_cache_req *q = arg;
	struct cache_entry e;
	int hit = 0;

	if (q->fc_cb == NULL) {
		free(q); /* its call ended meanwhile */
		return;
	}
	memset(&e, 0, sizeof(e));
	if (r == NULL)
		log_debug("fleet: cache lookup: %s", err != NULL ? err : "?");
	else if (r->type == REDIS_REPLY_STRING) {
		if (cache_entry_decode(r->str, r->len, &e) == 0)
			hit = 1;
		else
			log_warnx("fleet: a cache entry this tollgate cannot "
				  "read; served as a miss");
	}
	q->fc_cb(q->fc_arg, hit ? &e : NULL);
	cache_entry_clear(&e);
	free(q);
}

/*
 * Look key up in the fleet's Redis: cb(arg, entry or NULL for a miss) is
 * called once, from the loop, unless cancelled first. Returns the lookup,
 * or NULL (and cb is not called) when Redis cannot be asked now: a miss.
 */
struct fleet_cache_req *
fleet_cache_get(const unsigned char *key, fleet_cache_cb cb, void *arg)
{
	struct fleet_cache_req *q;
	const char *argv[2];
	char *k;

	if (fl.f_conn == NULL || !fl.f_up)
		return (NULL);
	q = xcalloc(1, sizeof(*q));
	q->fc_cb = cb;
	q->fc_arg = arg;
	k = entry_key(key);
	argv[0] = "GET";
	argv[1] = k;
	if (rconn_command(fl.f_conn, get_cb, q, 2, argv, NULL) == -1) {
		free(q);
		q = NULL;
	}
	free(k);
	return (q);
}

/* Its call no longer wants the answer: it is dropped when it comes. */
void
fleet_cache_cancel(struct fleet_cache_req *q)
{
	if (q != NULL)
		q->fc_cb = NULL;
}

/*
 * Store e under key for ttl_ms, unless an entry is there already (NX).
 * Not waited for; Redis down drops it (counted by the caller as it
 * likes). Returns 0 when sent, -1 when not.
 */
int
fleet_cache_put(
    const unsigned char *key, const struct cache_entry *e, long ttl_ms)
{
	const char *argv[6];
	size_t lens[6];
	char *k, *v, px[32];
	size_t vlen;
	int rc;

	if (fl.f_conn == NULL || !fl.f_up)
		return (-1);
	k = entry_key(key);
	v = cache_entry_encode(e, &vlen);
	snprintf(px, sizeof(px), "%ld", ttl_ms);
	argv[0] = "SET";
	argv[1] = k;
	argv[2] = v;
	argv[3] = "PX";
	argv[4] = px;
	argv[5] = "NX";
	lens[0] = 3;
	lens[1] = strlen(k);
	lens[2] = vlen;
	lens[3] = 2;
	lens[4] = strlen(px);
	lens[5] = 2;
	rc = rconn_command(fl.f_conn, NULL, NULL, 6, argv, lens);
	free(k);
	free(v);
	return (rc);
}

/* Is the fleet (and so its Redis) where the cache lives? */
int
fleet_cache_on(void)
{
	return (fl.f_conn != NULL);
}
