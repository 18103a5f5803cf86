/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A call against the cost policies: admission before the ledger row is
 * reserved (its refusals worded and answered by session_refuse.c), the
 * output bound written into the body when a policy lowers it, and the
 * settlement at close. The decisions themselves are
 * the policy core's (src/policy/, docs/internals/policy.md); this file is
 * what a session does with them.
 *
 *   admit    session_admit: the call's tags, model and provider are
 *            matched against every policy of the config the call started
 *            with. All must allow; the worst case is then reserved on
 *            every matching budget scope at once. A refusal changes no
 *            counter, is answered without contacting the provider and is
 *            recorded as a refused row with its reason.
 *   settle   session_settle, from the single close path: the reservation
 *            becomes the call's actual cost (zero when it never went
 *            upstream), exactly once; thresholds it crossed are reported.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "tollgate/alerts.h"
#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/fleet.h"
#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/meter.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/reply.h"
#include "tollgate/session.h"
#include "tollgate/util.h"

#include "session_int.h"

#define FIRED_MAX 16

/*
 * Is there an enforcing hard cap over this call? An unpriced model cannot
 * be held to one: its cost is unknown until it is too late.
 */
static const struct policy *
capped_by(const struct policyset *ps, const char *const *attr)
{
	size_t i;

	for (i = 0; i < ps->ps_n; i++) {
		if (ps->ps_pol[i].po_cap_nusd != -1 &&
		    !ps->ps_pol[i].po_shadow &&
		    policy_matches(&ps->ps_pol[i], attr))
			return (&ps->ps_pol[i]);
	}
	return (NULL);
}

/* An unpriced model's refusal names the cap that cannot hold (arg). */
static void
unpriced_dress(struct session *se, cJSON *root, const void *arg)
{
	const struct policy *po = arg;

	(void)se;
	session_add_tollgate(
	    root, POLICY_OK, NULL, 0, "unpriced_model", po->po_name);
}

/* The body as it will be forwarded. */
const char *
session_forward_body(struct session *se, size_t *len)
{
	if (se->se_body != NULL) {
		*len = se->se_bodylen;
		return (se->se_body);
	}
	if (se->se_req->hr_body == NULL) { /* forwarded, and empty */
		*len = 0;
		return ("");
	}
	*len = evbuffer_get_length(se->se_req->hr_body);
	return ((const char *)evbuffer_pullup(se->se_req->hr_body, -1));
}

/* Put nb (nlen bytes, allocated) in place of the body to be forwarded. */
void
session_replace_body(struct session *se, char *nb, size_t nlen)
{
	if (se->se_bodybuf != NULL) {
		evbuffer_free(se->se_bodybuf);
		se->se_bodybuf = NULL;
	} else
		free(se->se_body);
	se->se_body = nb;
	se->se_bodylen = nlen;
}

/*
 * Write bound into the body that will be forwarded (a policy's bound, a
 * routing rule's max_tokens). 0, or -1 when the body cannot take it.
 */
int
session_rewrite_bound(struct session *se, int64_t bound)
{
	const char *body;
	char *nb;
	size_t len, nlen;

	if ((body = session_forward_body(se, &len)) == NULL)
		return (-1);
	if (meter_set_bound(&se->se_route, body, len, bound, &nb, &nlen) == -1)
		return (-1);
	session_replace_body(se, nb, nlen);
	se->se_ci.ci_max_output = bound;
	return (0);
}

/* The fleet answered (or the wait is over): admission runs again. */
static void
admit_wake(void *arg, int timed_out)
{
	struct session *se = arg;

	se->se_wait = NULL;
	if (timed_out)
		se->se_wait_over = 1;
	session_admitting(se);
}

/*
 * Only the fleet's lease is short: wait for a top-up, up to fleet.wait
 * from the first wait. Returns 1 when the call waits, 0 when its time is
 * up (it is refused as the cap would refuse it).
 */
static int
admit_wait(struct session *se)
{
	const struct fleet_conf *fc = se->se_conf->cf_fleet;
	int64_t now = wallclock_ms();

	if (fc == NULL || se->se_wait_over || fleet_state() == FLEET_OFF)
		return (0);
	if (se->se_wait_until == 0)
		se->se_wait_until = now + fc->fc_wait_ms;
	if (now >= se->se_wait_until)
		return (0);
	se->se_wait = fleet_wait(se->se_wait_until, admit_wake, se);
	return (1);
}

/*
 * Check the call against the policies and reserve its worst case. Returns
 * 0 to go on (the reservation, if any, in se_res), -1 after answering and
 * recording a refusal, or 1 while the call waits for a fleet lease
 * (session_admitting runs again when the fleet answers).
 */
int
session_admit(struct session *se)
{
	const struct policyset *ps = se->se_conf->cf_policies;
	const struct policy *po;
	struct policy_call pc;
	struct policy_decision pd;
	struct refusal rf;
	char model[160], label[512], buf[32];
	int t;

	for (t = 0; t < TAG_MAX; t++)
		se->se_pattr[t] = attribution_tag(&se->se_attr, t);
	se->se_pattr[POLICY_ATTR_MODEL] =
	    se->se_ci.ci_model[0] != '\0' ? se->se_ci.ci_model : NULL;
	se->se_pattr[POLICY_ATTR_PROVIDER] =
	    config_upstream_type_name(se->se_route.rt_upstream->uc_type);
	/* Every metered call holds a reservation, empty without policies:
	 * a reload may bring policies that must count it (policy_extend). */
	if (!se->se_route.rt_metered || ps == NULL)
		return (0);
	log_escape(model, sizeof(model), se->se_ci.ci_model,
	    strlen(se->se_ci.ci_model));

	if (session_admit_kills(se) == -1)
		return (-1);
	if (se->se_price == NULL &&
	    (po = capped_by(ps, se->se_pattr)) != NULL) {
		memset(&rf, 0, sizeof(rf));
		rf.rf_dress = unpriced_dress;
		rf.rf_arg = po;
		session_refuse(se, 400, "unpriced_model",
		    REFUSE_RECORD | REFUSE_OWN_ID, &rf,
		    "the model '%s' has no price, so the hard cap of policy "
		    "'%s' cannot hold; add it to the price table or set "
		    "unknown_models.price_as",
		    model, po->po_name);
		return (-1);
	}

	if (fleet_refuses_capped() && capped_by(ps, se->se_pattr) != NULL) {
		session_refuse(se, 503, "fleet_down",
		    REFUSE_RECORD | REFUSE_OWN_ID | REFUSE_RETRY_SOON, NULL,
		    "%s",
		    "the fleet's Redis does not answer, and a hard cap covers "
		    "this call: capped calls are refused until it answers "
		    "again (fleet.when_down: refuse)");
		return (-1);
	}

	memset(&pc, 0, sizeof(pc));
	memcpy(pc.pc_attr, se->se_pattr, sizeof(pc.pc_attr));
	pc.pc_price = se->se_price;
	/* Reserved at the dearest attempt its failover chain may make. */
	session_chain_info(se, &pc.pc_info);
	pc.pc_unpriced_nusd = 0;
	policy_admit(ps, enforce_counters(), &pc, se->se_started_ms, &pd);

	if (pd.pd_shadow_reason != POLICY_OK) {
		session_scope_label(label, sizeof(label), &pd.pd_shadow);
		session_note(se, "shadow policy %s would refuse: %s", label,
		    policy_reason_name(pd.pd_shadow_reason));
		metrics_shadow(policy_reason_name(pd.pd_shadow_reason));
	}
	if (pd.pd_verdict == POLICY_REFUSE && pd.pd_lease_wait &&
	    admit_wait(se))
		return (1);
	if (pd.pd_verdict == POLICY_REFUSE) {
		session_refuse_policy(se, &pd, model);
		return (-1);
	}
	se->se_res = pd.pd_res;
	se->se_res_capped = policy_res_capped(se->se_res);
	if (session_admit_loop(se, ps) == -1) {
		policy_release(se->se_res, se->se_started_ms);
		se->se_res = NULL;
		return (-1);
	}
	if (pd.pd_out_bound >= 0 &&
	    pd.pd_out_bound != se->se_ci.ci_max_output) {
		if (session_rewrite_bound(se, pd.pd_out_bound) == -1) {
			policy_release(se->se_res, se->se_started_ms);
			se->se_res = NULL;
			session_refuse(se, 400, "bad_body",
			    REFUSE_RECORD | REFUSE_OWN_ID, NULL, "%s",
			    "a policy bounds this call's output, and the "
			    "request body is not a JSON object the bound can "
			    "be written into");
			return (-1);
		}
		if (pd.pd_verdict == POLICY_CLAMP) {
			snprintf(buf, sizeof(buf), "%" PRId64, pd.pd_out_bound);
			hdrs_add(&se->se_hdrs, "x-tollgate-clamped-max-tokens",
			    29, buf, strlen(buf));
			session_note(se,
			    "output bound lowered to %" PRId64
			    " tokens to fit the budget",
			    pd.pd_out_bound);
		}
	}
	if (se->se_price != NULL)
		se->se_reserved_nusd = pd.pd_worst_nusd;
	session_budget_headers(se, &pd);
	return (0);
}

/*
 * The call is over: its reservation becomes what it cost (zero if it never
 * reached the provider), and the alert thresholds it crossed fire.
 */
void
session_settle(struct session *se, enum call_status status, int64_t cost,
    const struct usage *u)
{
	struct policy_alert fired[FIRED_MAX];
	const struct policyset *ps = se->se_conf->cf_policies;
	int64_t now = wallclock_ms();
	size_t i, n;

	if (se->se_res == NULL)
		return;
	policy_settle(se->se_res, cost, u->u_input + u->u_output, now);
	se->se_res = NULL;
	session_settle_breakers(se, status, cost, now);
	if (cost <= 0)
		return;
	n = policy_fired(
	    ps, enforce_counters(), se->se_pattr, now, fired, nitems(fired));
	for (i = 0; i < n; i++)
		fleet_threshold(se->se_conf, &fired[i], se->se_pattr, now);
}

/*
 * A capped stream is being relayed: has it already cost more than its
 * reservation? Then grow the reservation to what it has cost, so other
 * calls see it; if no budget has room for that, the cap is reached
 * mid-stream and the call is ended (docs/operations.md, Policy refusals). Output that is
 * only estimated from the text relayed counts two thirds (meter_so_far).
 * The caller reads se_closed to learn whether the call was ended.
 */
void
session_check_overrun(struct session *se)
{
	struct policy_scope sc;
	struct usage u;
	char cap[640], spent[32], resv[32], cost_s[32], held[32], msg[1024];
	int64_t cost;

	if (se->se_res == NULL || !se->se_res_capped || se->se_meter == NULL)
		return;
	meter_so_far(se->se_meter, &u);
	cost = session_cost(se, &u);
	if (cost <= se->se_reserved_nusd)
		return;
	if (policy_grow(se->se_res, cost, wallclock_ms(), &sc) == 0) {
		se->se_reserved_nusd = cost;
		return;
	}
	session_cap_label(cap, sizeof(cap), &sc);
	session_usd(spent, sizeof(spent), sc.sc_spent);
	session_usd(resv, sizeof(resv), sc.sc_reserved);
	session_usd(cost_s, sizeof(cost_s), cost);
	session_usd(held, sizeof(held), se->se_reserved_nusd);
	snprintf(msg, sizeof(msg),
	    "%s ran out while this call was streaming: the call has cost "
	    "$%s, more than the $%s it reserved, and the cap has no room "
	    "for the rest ($%s spent, $%s reserved by calls in flight, "
	    "this one included)",
	    cap, cost_s, held, spent, resv);
	session_note(se, "%s", msg);
	session_stop_capped(se, msg);
}

/*
 * A reload put cf in force: every call holding a reservation holds it on
 * the budgets and rate limits of cf's policies too (policy_extend), so
 * that scopes the reload introduced count the calls already running.
 */
void
session_extend_reservations(const struct config *cf)
{
	struct session *se;

	if (cf->cf_policies == NULL || cf->cf_policies->ps_n == 0)
		return;
	for (se = session_first(); se != NULL; se = se->se_next) {
		if (se->se_res == NULL)
			continue;
		se->se_res =
		    policy_extend(se->se_res, cf->cf_policies, se->se_pattr);
		se->se_res_capped = policy_res_capped(se->se_res);
	}
}
