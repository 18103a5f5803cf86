/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A call's attempts upstream: failover to the upstreams a routing rule
 * lists under fallback:, and retries under the retry: section
 * (docs/spend-less.md, Failover and retries). A call's chain is the
 * upstream it is sent to first and then its rule's fallbacks. An attempt
 * that fails before anything of its answer reached the client (it could
 * not connect, its response headers did not come within header_timeout,
 * or it answered 408, 429 or a 5xx other than 501 and 505) is followed by
 * the next upstream of the chain at once, or, past the chain's end, by
 * its head again after a backoff (doubling from retry.backoff up to
 * retry.max_backoff, or the retry-after the failed answer asked when
 * longer). A retry-after longer than max_backoff, or retry.attempts
 * attempts in all (one per upstream of the chain without a retry:
 * section), ends the attempts: the client gets the last failure as it
 * would without any (the provider's answer relayed, or tollgate's
 * 502/504). Each attempt is bounded by its upstream's timeouts and each
 * wait by max_backoff, so a call's attempts end within attempts x
 * (connect_timeout + header_timeout) + (attempts - 1) x max_backoff.
 * An attempt whose answer has begun to reach the client is never
 * followed by another. The wait is a timer on the loop.
 *
 * Money: the reservation is the dearest attempt of the chain
 * (session_chain_worst), and an attempt that failed with an answer or
 * without connecting costs nothing. One that was sent and never answered
 * (a header timeout) may still be billed by its provider, so it is
 * charged its worst case on top of what serves the call; a call a hard
 * cap covers is therefore never tried again after one (fail closed), nor
 * after a 502, 504 or 520-527, a gateway's answer that can come after
 * the model behind it ran.
 *
 * Health: a 429 to a key of the upstream's own leaves that key out for
 * the retry-after (or RETRY_429_OUT_MS, at most RETRY_429_OUT_MAX_MS),
 * and the retry goes at once when another key is in; a URL that would
 * not connect is left out for RETRY_DOWN_MS (src/upstream/pick.c).
 * relay.c asks the picker which URL and key each attempt goes with.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/meter.h"
#include "tollgate/metrics.h"
#include "tollgate/pick.h"
#include "tollgate/pricing.h"
#include "tollgate/routing.h"
#include "tollgate/session.h"
#include "tollgate/upstream.h"
#include "tollgate/util.h"

#include "session_int.h"

/* A key that got a 429 without a retry-after is left out this long. */
#define RETRY_429_OUT_MS 1000
/* A key is never left out longer than this, whatever the retry-after:
 * a provider's hour-long answer must not take a key away until then. */
#define RETRY_429_OUT_MAX_MS (60 * 1000)
/* A URL that would not connect is left out this long. */
#define RETRY_DOWN_MS 5000
/* The attempt log never grows past this (about 30 attempts). */
#define RETRY_LOG_MAX 4096

/*
 * Build the call's chain: the upstream it is sent to (routing done), then
 * the fallbacks of the rule that applied, each once. path_up is the
 * upstream its path named, before any rule.
 */
void
session_chain(struct session *se, const struct upstream_conf *path_up)
{
	const struct routing_rule *rr = se->se_rule;
	const struct upstream_conf *uc;
	size_t i;
	int j;

	se->se_path_up = path_up;
	se->se_chain[0] = se->se_route.rt_upstream;
	se->se_nchain = 1;
	se->se_at = 0;
	for (i = 0; rr != NULL && i < rr->rr_nfallback &&
	     se->se_nchain < (int)nitems(se->se_chain);
	     i++) {
		/* Checked at load: each exists and speaks the same API. */
		uc = config_find_upstream(se->se_conf, rr->rr_fallback[i],
		    strlen(rr->rr_fallback[i]));
		for (j = 0; uc != NULL && j < se->se_nchain; j++)
			if (se->se_chain[j] == uc)
				uc = NULL;
		/* Checked at load too: a call keeps its provider (what its
		 * policies matched at admission) whichever attempt serves
		 * it, so a fallback of another type is never in its chain. */
		if (uc != NULL && uc->uc_type != se->se_chain[0]->uc_type)
			uc = NULL;
		/* A call made with a tollgate key is never sent without an
		 * upstream key of the upstream's own (session_start refuses
		 * it for the first): such a fallback is not in its chain. */
		if (uc != NULL && uc->uc_nkeys == 0 &&
		    se->se_attr.at_binding != NULL &&
		    se->se_attr.at_binding->kb_tollgate)
			uc = NULL;
		if (uc != NULL)
			se->se_chain[se->se_nchain++] = uc;
	}
}

/*
 * The call as its dearest attempt would be billed, into *ci: the call's
 * own info, with the service tier of whichever upstream of its chain
 * prices its worst case highest (a service_tier_default of its own bills
 * the same call at another tier). What the policies reserve, so that a
 * cap holds whichever attempt serves the call.
 */
void
session_chain_info(const struct session *se, struct call_info *ci)
{
	struct route rt;
	struct call_info c;
	int64_t w, worst;
	int i;

	*ci = se->se_ci;
	if (se->se_price == NULL || se->se_nchain < 2)
		return;
	worst = pricing_worst_case(se->se_price, ci);
	for (i = 1; i < se->se_nchain; i++) {
		rt = se->se_route;
		rt.rt_upstream = se->se_chain[i];
		c = se->se_ci;
		meter_tier(&rt, &c);
		if ((w = pricing_worst_case(se->se_price, &c)) > worst) {
			worst = w;
			*ci = c;
		}
	}
}

/* The call's worst case over every attempt of its chain. */
int64_t
session_chain_worst(const struct session *se)
{
	struct call_info ci;

	session_chain_info(se, &ci);
	return (pricing_worst_case(se->se_price, &ci));
}

/* Add the attempt that just failed to the call's attempt log. */
static void
log_attempt(struct session *se, int status, const char *error)
{
	const struct upstream_conf *uc = se->se_route.rt_upstream;
	char key[24], st[16], *add, *all;
	long long ms = (monotime_us() - se->se_attempt_us) / 1000;

	if (se->se_pick.pk_key >= 0)
		snprintf(key, sizeof(key), "\"%s\"",
		    uc->uc_key_fps[se->se_pick.pk_key]);
	else
		snprintf(key, sizeof(key), "null");
	if (status != 0)
		snprintf(st, sizeof(st), "%d", status);
	else
		snprintf(st, sizeof(st), "null");
	/* Upstream names are [a-z0-9_-], errors tollgate's own words:
	 * nothing here needs escaping. */
	xasprintf(&add,
	    "{\"upstream\":\"%s\",\"key\":%s,\"status\":%s,\"error\":\"%s\","
	    "\"ms\":%lld}",
	    uc->uc_name, key, st, error, ms);
	if (se->se_attempt_log == NULL)
		xasprintf(&all, "[%s]", add);
	else if (strlen(se->se_attempt_log) + strlen(add) > RETRY_LOG_MAX)
		all = NULL;
	else {
		se->se_attempt_log[strlen(se->se_attempt_log) - 1] = '\0';
		xasprintf(&all, "%s,%s]", se->se_attempt_log, add);
	}
	free(add);
	if (all != NULL) {
		free(se->se_attempt_log);
		se->se_attempt_log = all;
	}
}

/* Does an attempt at uc carry uc's own key (relay.c's own_key)? */
static int
wants_key(const struct session *se, const struct upstream_conf *uc)
{
	return (uc != se->se_path_up ||
	    (se->se_attr.at_binding != NULL &&
		se->se_attr.at_binding->kb_tollgate));
}

/*
 * Does an answer with status say a gateway gave up on a request the
 * model behind it may have run, and its provider billed?
 */
static int
billed_maybe(int status)
{
	return (
	    status == 502 || status == 504 || (status >= 520 && status <= 527));
}

static void
retry_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *se = arg;

	(void)fd;
	(void)ev;
	if (se->se_closed)
		return;
	relay_attempt(se);
}

/*
 * The attempt running failed before any of its answer reached the
 * client: with status (0: no answer) and error, the row's word for it
 * (provider_error, upstream_unavailable, upstream_timeout), and ra_ms,
 * the retry-after it asked (0: none). Marks the health of its key or
 * URL, logs it, and plans the next attempt. Returns 1 when one is
 * planned (the transfer is gone, the next starts from a timer), 0 when
 * the failure is the call's, to be answered as without failover.
 */
int
session_retry(struct session *se, int status, const char *error, long ra_ms)
{
	const struct config *cf = se->se_conf;
	const struct upstream_conf *uc = se->se_route.rt_upstream;
	const char *reason;
	struct timeval tv;
	int64_t now = pick_now(), wait = 0, back, out;
	int max, next, round, sent, shift;

	if (se->se_nchain == 0 || se->se_closed || se->se_replied ||
	    se->se_conn == NULL || se->se_cut || se->se_stop != NULL)
		return (0);
	sent = status == 0 && se->se_xfer != NULL && xfer_sent(se->se_xfer);
	if (status != 0)
		reason = status == 429 ? "status_429"
		    : status >= 500    ? "status_5xx"
				       : "status_408";
	else if (!sent)
		reason = "connect";
	else
		reason = strcmp(error, "upstream_timeout") == 0 ? "timeout"
								: "reset";
	if (status == 429 && se->se_pick.pk_key >= 0) {
		out = ra_ms > 0 ? ra_ms : RETRY_429_OUT_MS;
		if (out > RETRY_429_OUT_MAX_MS)
			out = RETRY_429_OUT_MAX_MS;
		pick_out_key(uc, se->se_pick.pk_key, now + out);
	} else if (status == 0 && !sent)
		pick_out_url(uc, se->se_pick.pk_url, now + RETRY_DOWN_MS);

	max = cf->cf_retry_attempts > 0 ? cf->cf_retry_attempts : se->se_nchain;
	if (se->se_attempts >= max)
		goto none;
	/* Sent, maybe billed: a capped call must not pay for two. A
	 * gateway's 502, 504 or 52x may come after the model ran. */
	if ((sent || billed_maybe(status)) && se->se_res_capped)
		goto none;
	if (se->se_at + 1 < se->se_nchain)
		next = se->se_at + 1;
	else if (status == 429 && se->se_pick.pk_key >= 0 &&
	    pick_ready_at(uc, wants_key(se, uc), now) == 0)
		/* The 429 was this key's, and another key of the upstream
		 * is in: nothing to wait for. */
		next = se->se_at;
	else {
		next = 0;
		round = se->se_attempts / se->se_nchain;
		shift = round > 1 ? round - 1 : 0;
		/* backoff is at most 60 s (checked at load): no overflow. */
		wait = (int64_t)cf->cf_retry_backoff_ms
		    << (shift > 20 ? 20 : shift);
		if (wait > cf->cf_retry_max_backoff_ms)
			wait = cf->cf_retry_max_backoff_ms;
		/* A 429 to a key of the upstream's own left that key out
		 * (the picker waits for it only if no other is in);
		 * any other retry-after is the upstream's. */
		if (ra_ms > 0 && !(status == 429 && se->se_pick.pk_key >= 0)) {
			if (ra_ms > cf->cf_retry_max_backoff_ms)
				goto none;
			if (ra_ms > wait)
				wait = ra_ms;
		}
		back = pick_ready_at(
		    se->se_chain[0], wants_key(se, se->se_chain[0]), now);
		if (back > now + wait)
			wait = back - now;
		if (wait > cf->cf_retry_max_backoff_ms)
			goto none;
	}

	if (sent)
		se->se_lost_nusd += se->se_reserved_nusd;
	log_attempt(se, status, error);
	metrics_attempt_failed(
	    uc->uc_name, reason, next > se->se_at ? "failover" : "retry");
	session_note(se, "attempt %d to %s failed (%s), %s %s in %lld ms",
	    se->se_attempts, uc->uc_name, reason,
	    next > se->se_at ? "failing over to" : "retrying",
	    se->se_chain[next]->uc_name, (long long)wait);
	xfer_free(se->se_xfer);
	se->se_xfer = NULL;
	if (se->se_meter != NULL)
		meter_free(se->se_meter);
	se->se_meter = NULL;
	evtimer_del(se->se_timer);
	/* Nothing is outstanding while it waits: a client that leaves now
	 * leaves a call that costs what its failed attempts did. */
	se->se_nothing_sent = 1;
	se->se_at = next;
	if (se->se_retry_timer == NULL &&
	    (se->se_retry_timer = evtimer_new(
		 event_get_base(se->se_timer), retry_timer_cb, se)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)((wait % 1000) * 1000);
	evtimer_add(se->se_retry_timer, &tv);
	return (1);
none:
	/* The client gets this failure. An answer relayed as it came is the
	 * attempt that served the call; one tollgate answers for (502, 504)
	 * means none did, and the log then holds every attempt. */
	if (status == 0)
		log_attempt(se, status, error);
	metrics_attempt_failed(uc->uc_name, reason, "none");
	return (0);
}

/* At close: what the attempts held. */
void
session_retry_free(struct session *se)
{
	if (se->se_retry_timer != NULL)
		event_free(se->se_retry_timer);
	se->se_retry_timer = NULL;
	free(se->se_attempt_log);
	se->se_attempt_log = NULL;
}
