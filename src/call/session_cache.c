/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A call against the response cache (src/cache/, docs/spend-less.md).
 * Once the call is admitted and its reservation written, a call the
 * cache's match takes is looked up by its key: the tenant, the client's
 * key fingerprint and its kind of binding, the upstream, the path, stream
 * or not, whether tollgate asked for the stream's usage, the headers that
 * change the answer (src/cache/key.c) and the body it would be sent with,
 * canonicalised. A hit is answered from the store
 * (the stored status, Content-Type and body bytes, streams included) and
 * closed at once: its row is ok, costs nothing, carries the stored
 * answer's usage and saves what the provider would have charged for it.
 * A miss goes upstream while the bytes the client receives are kept (up
 * to cache.max_entry_bytes), and at close a complete 2xx answer whose
 * usage the provider reported is handed to the store, unless another
 * upstream than the one its key names served it (a failover). A request that
 * says Cache-Control: no-store or no-cache neither reads nor fills it.
 * The response says which it was in X-Tollgate-Cache.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "tollgate/attribution.h"
#include "tollgate/cache.h"
#include "tollgate/config.h"
#include "tollgate/fleet.h"
#include "tollgate/http.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/pricing.h"
#include "tollgate/routing.h"
#include "tollgate/util.h"

#include "session_int.h"

/* Does the client ask that its answer be neither read nor kept? */
static int
cache_refused_by_client(const struct session *se)
{
	const struct hdrs *hs = &se->se_req->hr_headers;
	const char *v;
	size_t i;

	for (i = 0; i < hs->hs_n; i++) {
		if (strcasecmp(hs->hs_v[i].h_name, "Cache-Control") != 0)
			continue;
		v = hs->hs_v[i].h_value;
		if (http_token_has(v, "no-store") ||
		    http_token_has(v, "no-cache"))
			return (1);
	}
	return (0);
}

/* Does cache.match take the call (as it will be sent)? */
static int
cache_takes(const struct session *se, const struct cache_conf *cc)
{
	const struct upstream_conf *uc = se->se_route.rt_upstream;
	const char *attr[ROUTING_ATTR_MAX];
	int t;

	for (t = 0; t < TAG_MAX; t++)
		attr[t] = attribution_tag(&se->se_attr, t);
	attr[ROUTING_ATTR_MODEL] =
	    se->se_ci.ci_model[0] != '\0' ? se->se_ci.ci_model : NULL;
	attr[ROUTING_ATTR_PROVIDER] = config_upstream_type_name(uc->uc_type);
	attr[ROUTING_ATTR_UPSTREAM] = uc->uc_name;
	attr[ROUTING_ATTR_ENDPOINT] =
	    route_endpoint_name(se->se_route.rt_endpoint);
	return (routing_rule_matches(&cc->cc_match, attr));
}

/* The call's key, into se_cache_key. 0, or -1: the call is not cached. */
static int
cache_make_key(struct session *se)
{
	struct cache_keyparts kp;
	const char *body;
	char *path, *query = NULL, *cause = NULL;
	size_t len;
	int rc;

	/* A key in the query is a secret: hashed without it (the key's
	 * fingerprint partitions the store already). */
	if (se->se_route.rt_query != NULL)
		query = attribution_strip_query_key(se->se_route.rt_query);
	xasprintf(&path, "%s%s%s", se->se_route.rt_path,
	    query != NULL && *query != '\0' ? "?" : "",
	    query != NULL ? query : "");
	memset(&kp, 0, sizeof(kp));
	kp.kp_tenant = attribution_tag(&se->se_attr, TAG_TENANT);
	kp.kp_key = se->se_attr.at_key_fp;
	/* A binding the config no longer has must not keep its hits. */
	if (se->se_attr.at_binding != NULL)
		kp.kp_binding = se->se_attr.at_binding->kb_tollgate
		    ? "tollgate"
		    : "provider";
	kp.kp_upstream = se->se_route.rt_upstream->uc_name;
	kp.kp_path = path;
	kp.kp_stream = se->se_ci.ci_stream;
	kp.kp_usage_injected = se->se_ci.ci_usage_injected;
	kp.kp_hdrs = &se->se_req->hr_headers;
	se->se_cache_up = se->se_route.rt_upstream;
	body = session_forward_body(se, &len);
	rc = cache_key(&kp, body != NULL ? body : "", body != NULL ? len : 0,
	    se->se_cache_key, &cause);
	if (rc == -1) {
		session_note(se, "not cached: %s", cause);
		free(cause);
	}
	free(path);
	free(query);
	return (rc);
}

/* Answer the call with entry e: its status, type and bytes. */
static void
cache_reply(struct session *se, const struct cache_entry *e)
{
	struct hdrs hs = {0};
	size_t i;

	se->se_status = e->ce_status;
	se->se_headers_seen = 1;
	se->se_ttfb_us = monotime_us() - se->se_t0_us;
	if (se->se_conn == NULL)
		return;
	if (e->ce_ctype != NULL)
		hdrs_add(
		    &hs, "content-type", 12, e->ce_ctype, strlen(e->ce_ctype));
	for (i = 0; i < se->se_hdrs.hs_n; i++)
		hdrs_add(&hs, se->se_hdrs.hs_v[i].h_name,
		    strlen(se->se_hdrs.hs_v[i].h_name),
		    se->se_hdrs.hs_v[i].h_value,
		    strlen(se->se_hdrs.hs_v[i].h_value));
	hdrs_add(&hs, "x-tollgate-cache", 16, "hit", 3);
	hdrs_add(&hs, "x-tollgate-request-id", 21, se->se_reqid,
	    strlen(se->se_reqid));
	se->se_replied = 1;
	conn_reply_start(se->se_conn, e->ce_status, &hs);
	hdrs_clear(&hs);
	if (e->ce_len > 0)
		conn_reply_data(se->se_conn, e->ce_body, e->ce_len);
	se->se_bytes_out = e->ce_len;
}

/* No answer for the call: it goes upstream, and its answer is kept. */
static void
cache_miss(struct session *se)
{
	hdrs_add(&se->se_hdrs, "x-tollgate-cache", 16, "miss", 4);
	se->se_cache = SE_CACHE_MISS;
	se->se_cache_buf = evbuffer_new();
	metrics_cache_miss();
}

/* Answer the call with e and close it: a hit. */
static void
cache_hit(struct session *se, const struct cache_entry *e)
{
	se->se_cache = SE_CACHE_HIT;
	se->se_cache_usage = e->ce_usage;
	cache_reply(se, e);
	session_note(se, "answered from the cache");
	session_close(se, CALL_OK, "cache_hit");
}

/* The fleet's Redis answered the lookup (e NULL: a miss). */
static void
cache_fleet_cb(void *arg, const struct cache_entry *e)
{
	struct session *se = arg;

	se->se_cache_req = NULL;
	/* Gone or killed while it waited: session_reserved ends it. */
	if (se->se_client_gone || se->se_stop != NULL) {
		se->se_cache = SE_CACHE_SKIP;
		session_reserved(se);
		return;
	}
	/* Redis expires an entry by the TTL it was stored with: one a
	 * reload has shortened since is a miss. */
	if (e != NULL &&
	    e->ce_created_ms >
		wallclock_ms() - se->se_conf->cf_cache->cc_ttl_ms) {
		cache_hit(se, e);
		return;
	}
	cache_miss(se);
	session_reserved(se); /* on to the provider */
}

/*
 * The call is admitted and reserved: answer it from the cache when it
 * can be. Returns 1 when the call was answered (and closed) or waits for
 * the fleet's Redis (which goes on with session_reserved), 0 when it goes
 * upstream now (a miss whose answer may be kept, or a call the cache does
 * not take).
 */
int
session_cache_serve(struct session *se)
{
	const struct cache_conf *cc = se->se_conf->cf_cache;
	struct cache_entry e;

	if (se->se_cache != SE_CACHE_NONE)
		return (0); /* looked up already */
	se->se_cache = SE_CACHE_SKIP;
	if (cc == NULL || (!cache_is_open() && !fleet_cache_on()) ||
	    !se->se_route.rt_metered || !cache_takes(se, cc))
		return (0);
	if (cache_refused_by_client(se)) {
		hdrs_add(&se->se_hdrs, "x-tollgate-cache", 16, "bypass", 6);
		return (0);
	}
	if (cache_make_key(se) == -1)
		return (0);
	if (fleet_cache_on()) {
		/* Redis down: a miss, and nothing waits. */
		se->se_cache = SE_CACHE_ASKING;
		se->se_cache_req =
		    fleet_cache_get(se->se_cache_key, cache_fleet_cb, se);
		if (se->se_cache_req != NULL)
			return (1);
		cache_miss(se);
		return (0);
	}
	/* Unreadable counts as a miss: the provider answers. */
	if (cache_get(se->se_cache_key, wallclock_ms(), cc->cc_ttl_ms, &e) !=
	    1) {
		cache_miss(se);
		return (0);
	}
	cache_hit(se, &e);
	cache_entry_clear(&e);
	return (1);
}

/* A content type of the answer, kept for a miss's entry. */
void
session_cache_type(struct session *se, const char *ctype)
{
	if (se->se_cache != SE_CACHE_MISS || ctype == NULL)
		return;
	free(se->se_cache_ctype);
	se->se_cache_ctype = xstrdup(ctype);
}

/*
 * Bytes the client received, kept for a miss's entry up to
 * cache.max_entry_bytes; past it the answer is not kept at all.
 */
void
session_cache_keep(struct session *se, const char *buf, size_t len)
{
	/* Only a miss has a buffer, and only with a cache: section. */
	if (se->se_cache_buf == NULL)
		return;
	if (evbuffer_get_length(se->se_cache_buf) + len >
	    se->se_conf->cf_cache->cc_max_entry_bytes) {
		evbuffer_free(se->se_cache_buf);
		se->se_cache_buf = NULL;
		session_note(se,
		    "not cached: the answer is larger than "
		    "cache.max_entry_bytes");
		return;
	}
	if (evbuffer_add(se->se_cache_buf, buf, len) == -1)
		fatalx("%s: evbuffer_add", __func__);
}

/* A hit's usage: the stored answer's, as the provider reported it. */
void
session_cache_usage(const struct session *se, struct usage *u)
{
	if (se->se_cache == SE_CACHE_HIT)
		*u = se->se_cache_usage;
}

/*
 * What a hit saved: what the provider would charge for the stored
 * answer's tokens now, at the price of the model the client asked for
 * (before any routing rule).
 */
int64_t
session_cache_saved(const struct session *se, const struct usage *u)
{
	if (se->se_asked_price != NULL)
		return (pricing_cost(se->se_asked_price, u));
	return (session_cost(se, u));
}

/*
 * At close: count a hit and its saving, or hand a miss's answer to the
 * store when it is whole (ok, 2xx, not cut short, usage reported, the
 * client there to the end, every byte kept).
 */
void
session_cache_close(struct session *se, enum call_status status,
    const struct usage *u, int64_t saved)
{
	const struct cache_conf *cc = se->se_conf->cf_cache;
	struct cache_entry e;
	size_t len;

	/* Closed while Redis was asked: its answer is dropped. */
	fleet_cache_cancel(se->se_cache_req);
	se->se_cache_req = NULL;
	if (se->se_cache == SE_CACHE_HIT) {
		metrics_cache_hit(saved);
		return;
	}
	if (se->se_cache != SE_CACHE_MISS || se->se_cache_buf == NULL)
		goto done;
	if (status != CALL_OK || se->se_status < 200 || se->se_status > 299 ||
	    se->se_cut || se->se_client_gone || se->se_refusal != NULL ||
	    se->se_error[0] != '\0' || u->u_source != USAGE_REPORTED ||
	    u->u_incomplete || cc == NULL)
		goto done;
	/* Served by a fallback: the key names the first upstream, whose
	 * answer this is not. */
	if (se->se_route.rt_upstream != se->se_cache_up) {
		session_note(se,
		    "not cached: answered by another upstream than the "
		    "one its key names");
		goto done;
	}
	memset(&e, 0, sizeof(e));
	e.ce_status = se->se_status;
	e.ce_ctype = se->se_cache_ctype;
	se->se_cache_ctype = NULL;
	len = evbuffer_get_length(se->se_cache_buf);
	e.ce_body = xmalloc(len + 1);
	if (len > 0 &&
	    evbuffer_copyout(se->se_cache_buf, e.ce_body, len) !=
		(ev_ssize_t)len)
		fatalx("%s: evbuffer_copyout", __func__);
	e.ce_len = len;
	e.ce_usage = *u;
	e.ce_created_ms = wallclock_ms();
	if (fleet_cache_on()) {
		(void)fleet_cache_put(se->se_cache_key, &e, cc->cc_ttl_ms);
		cache_entry_clear(&e);
	} else
		cache_put(se->se_cache_key,
		    attribution_tag(&se->se_attr, TAG_TENANT), &e,
		    e.ce_created_ms, cc);
done:
	if (se->se_cache_buf != NULL)
		evbuffer_free(se->se_cache_buf);
	se->se_cache_buf = NULL;
	free(se->se_cache_ctype);
	se->se_cache_ctype = NULL;
}
