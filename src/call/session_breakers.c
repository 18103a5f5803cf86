/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kill switches and breakers as a call meets them, at admission and at
 * settlement.
 *
 *   admit    a live kill that matches refuses the call (admit_kills);
 *            once the call is admitted, the loop breaker sees its body's
 *            SHA-256 and may trip on it (admit_loop).
 *   settle   the velocity and error_spike breakers see what each call
 *            that reached the provider cost and whether it failed.
 *   trip     a breaker's trip becomes a timed kill (kills_trip), which
 *            session_stop.c's kills hook turns into stops of the calls in
 *            flight it matches, and which the fleet (if any) shares with
 *            every instance.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "tollgate/breaker.h"
#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/fleet.h"
#include "tollgate/kills.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "session_int.h"

/* Does a policy of ps with a loop breaker match this call? */
static int
loop_watched(const struct policyset *ps, const char *const *attr)
{
	size_t i;

	for (i = 0; i < ps->ps_n; i++)
		if (ps->ps_pol[i].po_breakers.pb_loop_count > 0 &&
		    policy_matches(&ps->ps_pol[i], attr))
			return (1);
	return (0);
}

/*
 * A tripped breaker: a timed kill (which ends the calls in flight it
 * matches, through the kills hook, and raises the alert), or for a shadow
 * policy only the log line. Returns the kill, or NULL.
 */
static const struct kill *
trip(const struct breaker_trip *bt, int64_t now)
{
	const struct kill *k = NULL;
	char *why = NULL;

	if (bt->bt_shadow) {
		log_info("policies: shadow policy '%s' would trip its %s "
			 "breaker: %s",
		    bt->bt_policy->po_name, bt->bt_kind, bt->bt_evidence);
		metrics_shadow("breaker");
		return (NULL);
	}
	switch (kills_trip(bt, now, &k, &why)) {
	case -1:
		log_warnx("policies: policy '%s': %s breaker tripped (%s) but "
			  "its kill was not made: %s",
		    bt->bt_policy->po_name, bt->bt_kind, bt->bt_evidence, why);
		free(why);
		return (NULL);
	case 0:
		/* A new kill stops the runaway on every instance. */
		fleet_kill_added(k);
		break;
	}
	return (k);
}

/* Refuse a call a kill stops, with the kill's id and reason. */
static void
refuse_by_kill(struct session *se, const struct kill *k, const char *policy)
{
	char why[KILL_REASON_MAX + 64], id[sizeof(k->k_id)];

	/* The kill may go before the loop turns: copy what we need. */
	snprintf(why, sizeof(why), "calls matching kill %s are stopped: %s",
	    k->k_id, k->k_reason);
	snprintf(id, sizeof(id), "%s", k->k_id);
	session_refuse_kill(se, REFUSE_RECORD | REFUSE_OWN_ID, why, id, policy);
}

/*
 * A live kill that matches refuses the call, before anything else is
 * looked at. Returns 0, or -1 after refusing.
 */
int
session_admit_kills(struct session *se)
{
	const struct kill *k;

	if ((k = kills_match(se->se_pattr, wallclock_ms())) == NULL)
		return (0);
	refuse_by_kill(se, k, NULL);
	return (-1);
}

/*
 * The loop breaker, once the call is admitted (so refused calls never
 * count towards a loop): when a policy watches this call for loops, the
 * SHA-256 of its body goes to breaker_request, and a trip on this very
 * request becomes a kill that refuses it too (and, from the next loop
 * turn, the calls in flight it matches). Returns 0, or -1 after refusing;
 * the caller releases the reservation.
 */
int
session_admit_loop(struct session *se, const struct policyset *ps)
{
	struct breaker_trip bt;
	const struct kill *k = NULL;
	unsigned char digest[32];
	unsigned int dlen = sizeof(digest);
	const char *body;
	char policy[POLICY_NAME_MAX + 1];
	int64_t now = wallclock_ms();
	size_t len;

	if (!loop_watched(ps, se->se_pattr))
		return (0);
	body = session_forward_body(se, &len);
	if (EVP_Digest(body != NULL ? body : "", body != NULL ? len : 0, digest,
		&dlen, EVP_sha256(), NULL) != 1)
		fatalx("%s: EVP_Digest", __func__);
	memset(&bt, 0, sizeof(bt));
	if (breaker_request(
		ps, enforce_breakers(), se->se_pattr, digest, now, &bt) == 1) {
		snprintf(policy, sizeof(policy), "%s", bt.bt_policy->po_name);
		k = trip(&bt, now);
	}
	breaker_trip_clear(&bt);
	if (k == NULL)
		return (0);
	refuse_by_kill(se, k, policy);
	return (-1);
}

/*
 * The velocity and error_spike breakers see every call that went
 * upstream: what it cost and whether it failed (an error status from the
 * provider, or no answer).
 */
void
session_settle_breakers(
    struct session *se, enum call_status status, int64_t cost, int64_t now)
{
	struct breaker_trip bt[8];
	int is_error;
	size_t i, n;

	if (!se->se_reserved || se->se_state != SE_FORWARDING)
		return;
	/* The provider's failures, never the caller's own 4xx. */
	is_error = status == CALL_UPSTREAM_ERROR || se->se_status >= 500 ||
	    se->se_status == 429 || se->se_error[0] != '\0';
	memset(bt, 0, sizeof(bt));
	n = breaker_settle(se->se_conf->cf_policies, enforce_breakers(),
	    se->se_pattr, cost, is_error, now, bt, nitems(bt));
	for (i = 0; i < n; i++) {
		trip(&bt[i], now);
		breaker_trip_clear(&bt[i]);
	}
}
