/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A call against the routing rules (src/routing/, docs/spend-less.md),
 * once its request has been read and before it is priced, so that the
 * price, the reservation and every policy check see the call as it will
 * be sent. A rule that reads a budget a fleet shares waits, at most
 * fleet.wait, for the fleet's spend on it when this instance's figure is
 * old. The first rule that matches applies: the model is rewritten
 * (in the body, or in the path for Gemini), the upstream switched, the
 * output bound lowered or set; the body is edited only when a rule
 * changed it, so an unrouted call is forwarded byte for byte. The
 * response says which rule applied (X-Tollgate-Route), and the row what
 * was asked (routed_from, routed_rule) and what the rule saved
 * (saved_nusd, session_saved).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "tollgate/attribution.h"
#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/fleet.h"
#include "tollgate/http.h"
#include "tollgate/meter.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/routing.h"
#include "tollgate/session.h"
#include "tollgate/util.h"

#include "session_int.h"

/*
 * How old the fleet's spend on a budget may be for when_budget_below_percent
 * to read it without asking Redis first: a busy instance reports, and so
 * learns it, about once a second (src/fleet/lease.c).
 */
#define ROUTE_FLEET_FRESH_MS 2000

/* May the call still wait for the fleet (up to fleet.wait in all)? */
static int
route_may_wait(const struct session *se)
{
	return (se->se_conf->cf_fleet != NULL && !se->se_wait_over &&
	    fleet_state() == FLEET_UP &&
	    (se->se_wait_until == 0 || wallclock_ms() < se->se_wait_until));
}

/*
 * For when_budget_below_percent: the share of its cap (in millionths)
 * the tightest enforcing hard cap over the call has left, spend and
 * reservations in flight both counted, or -1 when no hard cap covers it.
 * The policies see the call as it was asked. A budget a fleet shares
 * counts the fleet's spend, as GET /v1/budgets shows it; when this
 * instance knows it only from more than ROUTE_FLEET_FRESH_MS ago, or not
 * at all, se_route_stale says so and the fleet is asked for it.
 */
static int64_t
route_headroom(void *arg)
{
	struct session *se = arg;
	const struct policyset *ps = se->se_conf->cf_policies;
	const struct policy *po;
	const char *attr[POLICY_ATTR_MAX];
	struct policy_scope sc;
	int64_t left, ppm, spent, best = -1, now = wallclock_ms();
	size_t i;
	int t, peek = route_may_wait(se);

	if (ps == NULL)
		return (-1);
	for (t = 0; t < TAG_MAX; t++)
		attr[t] = attribution_tag(&se->se_attr, t);
	attr[POLICY_ATTR_MODEL] =
	    se->se_ci.ci_model[0] != '\0' ? se->se_ci.ci_model : NULL;
	attr[POLICY_ATTR_PROVIDER] =
	    config_upstream_type_name(se->se_route.rt_upstream->uc_type);
	for (i = 0; i < ps->ps_n; i++) {
		po = &ps->ps_pol[i];
		if (po->po_cap_nusd == -1 || po->po_shadow ||
		    !policy_matches(po, attr))
			continue;
		if (peek &&
		    policy_budget_stale(po, enforce_counters(), attr, now,
			now - ROUTE_FLEET_FRESH_MS))
			se->se_route_stale = 1;
		/* sc_limit: the cap with the scope's extensions. */
		if (policy_budget(po, enforce_counters(), attr, now, &sc) ==
			-1 &&
		    sc.sc_limit > 0)
			ppm = 1000000; /* nothing spent in it yet */
		else if (sc.sc_limit <= 0)
			ppm = 0; /* a cap of 0 has no room at all */
		else {
			/* A rolling budget's own count is this instance's;
			 * the fleet's includes it. */
			spent = policy_fleet_spent(&sc);
			if (spent < sc.sc_spent)
				spent = sc.sc_spent;
			left = sc.sc_limit - spent - sc.sc_reserved;
			if (left < 0)
				left = 0;
			ppm = (int64_t)((__int128)left * 1000000 / sc.sc_limit);
		}
		if (best < 0 || ppm < best)
			best = ppm;
	}
	return (best);
}

/*
 * Gemini names the model in the path (/v1beta/models/{model}:method):
 * put model there instead of the one routed. -1 when the path does not
 * hold it where route.c found it.
 */
static int
route_path_model(struct session *se, const char *model)
{
	struct route *rt = &se->se_route;
	char *at, *np;
	size_t mlen = strlen(rt->rt_model);
	char needle[ROUTE_MODEL_MAX + 16];

	snprintf(needle, sizeof(needle), "/models/%s:", rt->rt_model);
	if ((at = strstr(rt->rt_path, needle)) == NULL)
		return (-1);
	at += strlen("/models/");
	xasprintf(&np, "%.*s%s%s", (int)(at - rt->rt_path), rt->rt_path, model,
	    at + mlen);
	free(rt->rt_path);
	rt->rt_path = np;
	strcopy(rt->rt_model, sizeof(rt->rt_model), model);
	return (0);
}

/* Rewrite the model of the call to model: path or body. */
static int
route_model(struct session *se, const char *model)
{
	const char *body;
	char *nb;
	size_t len, nlen;

	if (se->se_route.rt_family == FAMILY_GEMINI)
		return (route_path_model(se, model));
	body = session_forward_body(se, &len);
	if (meter_set_model(&se->se_route, body, len, model, &nb, &nlen) == -1)
		return (-1);
	session_replace_body(se, nb, nlen);
	return (0);
}

/* The fleet answered (or fleet.wait is over): route the call again. */
static void
route_wake(void *arg, int timed_out)
{
	struct session *se = arg;

	se->se_wait = NULL;
	if (timed_out)
		se->se_wait_over = 1;
	session_start(se);
}

/*
 * Apply the first routing rule that matches the call. Returns 0 to go on
 * (routed or not), 1 while the call waits for the fleet's spend on a
 * budget a rule reads (session_start runs again when it comes, or at
 * fleet.wait), or -1 after refusing a body the rule's change cannot be
 * written into.
 */
int
session_route(struct session *se)
{
	const struct routingset *rs = se->se_conf->cf_routing;
	const struct upstream_conf *uc = se->se_route.rt_upstream, *to;
	const struct routing_rule *rr;
	const char *attr[ROUTING_ATTR_MAX];
	int flags = 0, t;

	if (rs == NULL || rs->rs_n == 0 || !se->se_route.rt_metered)
		return (0);
	for (t = 0; t < TAG_MAX; t++)
		attr[t] = attribution_tag(&se->se_attr, t);
	attr[ROUTING_ATTR_MODEL] =
	    se->se_ci.ci_model[0] != '\0' ? se->se_ci.ci_model : NULL;
	attr[ROUTING_ATTR_PROVIDER] = config_upstream_type_name(uc->uc_type);
	attr[ROUTING_ATTR_UPSTREAM] = uc->uc_name;
	attr[ROUTING_ATTR_ENDPOINT] =
	    route_endpoint_name(se->se_route.rt_endpoint);
	if (uc->uc_type == UPSTREAM_AZURE_OPENAI)
		flags |= ROUTING_FIXED;
	if (se->se_route.rt_endpoint == EP_EMBEDDINGS ||
	    se->se_route.rt_endpoint == EP_GEMINI_EMBED)
		flags |= ROUTING_NO_OUTPUT;
	se->se_route_stale = 0;
	rr = routing_select(rs, attr, flags, route_headroom, se);
	/*
	 * Another instance may have spent the budget since this one last
	 * heard: the rule decides on the fleet's figure, so wait for it
	 * (the first such call on an instance has none at all). Nothing has
	 * been changed yet; the routing runs again from the start.
	 */
	if (se->se_route_stale && route_may_wait(se)) {
		if (se->se_wait_until == 0)
			se->se_wait_until =
			    wallclock_ms() + se->se_conf->cf_fleet->fc_wait_ms;
		se->se_wait = fleet_wait(se->se_wait_until, route_wake, se);
		return (1);
	}
	if (rr == NULL)
		return (0);
	se->se_rule = rr;

	/* Checked at load: the same wire API, and never Azure. */
	if (rr->rr_upstream != NULL &&
	    (to = config_find_upstream(se->se_conf, rr->rr_upstream,
		 strlen(rr->rr_upstream))) != NULL &&
	    to != uc) {
		se->se_route.rt_upstream = to;
		/* A call that named no tier runs at the new upstream's
		 * service_tier_default (or its base tier), not the first's:
		 * priced and reserved so. One that named it keeps it. */
		meter_tier(&se->se_route, &se->se_ci);
		/* The client's key was meant for the first upstream's host,
		 * not this one: relay.c sends this upstream's own key. */
		se->se_switched = 1;
	}
	if (rr->rr_model != NULL && strcmp(rr->rr_model, se->se_ci.ci_model)) {
		if (route_model(se, rr->rr_model) == -1)
			goto bad;
		strcopy(se->se_routed_from, sizeof(se->se_routed_from),
		    se->se_ci.ci_model);
		se->se_asked_price = se->se_routed_from[0] != '\0' &&
			se->se_conf->cf_prices != NULL
		    ? pricing_lookup(se->se_conf->cf_prices, se->se_routed_from)
		    : NULL;
		strcopy(se->se_ci.ci_model, sizeof(se->se_ci.ci_model),
		    rr->rr_model);
	}
	/* Embeddings (a bound of 0) generate nothing to bound. */
	if (rr->rr_max_tokens >= 0 && se->se_ci.ci_max_output != 0 &&
	    (se->se_ci.ci_max_output < 0 ||
		se->se_ci.ci_max_output > rr->rr_max_tokens) &&
	    session_rewrite_bound(se, rr->rr_max_tokens) == -1)
		goto bad;
	hdrs_add(&se->se_hdrs, "x-tollgate-route", 16, rr->rr_name,
	    strlen(rr->rr_name));
	if (se->se_routed_from[0] != '\0')
		session_note(se, "routed by rule %s from model %s", rr->rr_name,
		    se->se_routed_from);
	else
		session_note(se, "routed by rule %s", rr->rr_name);
	return (0);
bad:
	session_refuse(se, 400, "bad_body", REFUSE_RECORD | REFUSE_OWN_ID, NULL,
	    "routing rule '%s' applies to this call, and the request body is "
	    "not a JSON object its change can be written into",
	    rr->rr_name);
	return (-1);
}

/*
 * What a routed call saved: the price of the model asked for, for the
 * tokens the call used, minus what it cost. Negative when the rule sent
 * it to a dearer model; 0 when no model was rewritten, the model asked
 * for has no price, or the provider reported no usage: an estimate
 * (a call cut short, one charged at its reservation) would price the
 * asked model at its worst case against a cost that is not, and a
 * client could inflate the figure by hanging up.
 */
int64_t
session_saved(const struct session *se, const struct usage *u, int64_t cost)
{
	if (se->se_asked_price == NULL || u->u_source != USAGE_REPORTED)
		return (0);
	return (pricing_cost(se->se_asked_price, u) - cost);
}
