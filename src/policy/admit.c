/* SPDX-License-Identifier: Apache-2.0 */
/*
 * policy_admit: one call against every policy that matches it. The checks
 * run in the order of enum policy_reason (kill, model rules, hard caps
 * with the budget-aware clamp, requests per minute, tokens per minute,
 * concurrency); a shadow policy goes through the same checks but only
 * notes what it would have done. The first refusal of an enforcing policy
 * wins, and for caps the scope with the least room is reported. Only when
 * everything allows is the worst case reserved, on each distinct budget
 * entry once, and the call counted on each distinct rate entry once.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/util.h"

#include "policy_int.h"

/* The state of one admission while it is being decided. */
struct admit {
	const struct policy_call *a_call;
	const char *const *a_attr;
	int64_t a_now;
	struct policy_decision *a_pd;
	struct policy_counters *a_pc;
	size_t a_n; /* matching policies */
	const struct policy **a_pol;
	struct pentry **a_budget; /* per matching policy, or NULL */
	struct pentry **a_rate;
	int64_t a_room; /* of the refusing cap so far */
	size_t a_lease_short; /* enforcing caps short of fleet lease only */
	size_t a_cap_short; /* enforcing caps short of room */
};

static void tightest(const struct admit *, const struct pentry *, int64_t *,
    const struct policy **);

/* The worst case of the call with output bound `bound`. */
static int64_t
worst_at(const struct policy_call *c, int64_t bound)
{
	struct call_info ci = c->pc_info;

	if (c->pc_price == NULL)
		return (c->pc_unpriced_nusd);
	ci.ci_max_output = bound;
	return (pricing_worst_case(c->pc_price, &ci));
}

/* Note a refusal by po: enforced, or as the shadow verdict. */
static int
refuse(struct admit *a, const struct policy *po, enum policy_reason why,
    struct policy_scope *sc)
{
	struct policy_decision *pd = a->a_pd;

	if (po->po_shadow) {
		if (pd->pd_shadow_reason == POLICY_OK) {
			pd->pd_shadow_reason = why;
			pd->pd_shadow = *sc;
		}
		return (0);
	}
	if (pd->pd_verdict == POLICY_REFUSE)
		return (1);
	pd->pd_verdict = POLICY_REFUSE;
	pd->pd_reason = why;
	pd->pd_scope = *sc;
	return (1);
}

static int
model_allowed(const struct policy *po, const char *model)
{
	size_t i;

	for (i = 0; i < po->po_ndeny; i++)
		if (policy_glob(po->po_deny[i], model))
			return (0);
	for (i = 0; i < po->po_nallow; i++)
		if (policy_glob(po->po_allow[i], model))
			return (1);
	return (po->po_nallow == 0);
}

/* The bound after defaults and ceilings of the enforcing policies. */
static int64_t
output_bound(struct admit *a)
{
	const struct policy *po;
	int64_t bound = a->a_call->pc_info.ci_max_output, def = -1;
	size_t i;

	for (i = 0; i < a->a_n; i++) {
		po = a->a_pol[i];
		if (!po->po_shadow && po->po_default_output != -1 &&
		    (def == -1 || po->po_default_output < def))
			def = po->po_default_output;
	}
	if (bound < 0)
		bound = def;
	for (i = 0; i < a->a_n; i++) {
		po = a->a_pol[i];
		if (!po->po_shadow && po->po_max_output != -1 &&
		    (bound < 0 || bound > po->po_max_output))
			bound = po->po_max_output;
	}
	return (bound);
}

/* The largest bound in [lo, hi] whose worst case fits room; -1 if none. */
static int64_t
affordable(const struct policy_call *c, int64_t lo, int64_t hi, int64_t room)
{
	int64_t mid;

	if (c->pc_price == NULL || hi < lo || worst_at(c, lo) > room)
		return (-1);
	while (lo < hi) {
		mid = lo + (hi - lo + 1) / 2;
		if (worst_at(c, mid) <= room)
			lo = mid;
		else
			hi = mid - 1;
	}
	return (lo);
}

/* Room left under po's cap on entry e at now, the fleet's lease aside. */
static int64_t
cap_room(const struct admit *a, const struct policy *po, const struct pentry *e)
{
	return (pcount_cap(po, e) - pcount_spent(e, a->a_now, NULL) -
	    e->e_reserved);
}

/* Room left on e for po: the cap's, and in a fleet the lease's too. */
static int64_t
room_of(const struct admit *a, const struct policy *po, const struct pentry *e)
{
	int64_t room = cap_room(a, po, e), lr = lease_room(e, a->a_now);

	return (lr < room ? lr : room);
}

/*
 * The clamp, over every policy that has one and cannot pay for the call
 * as asked: each offers the largest bound in [min_output_tokens, bound]
 * its room pays for, and the call gets the lowest offer, the bound all of
 * them can pay for. -1: no clamp applies.
 */
static int64_t
clamp_bound(struct admit *a, int64_t bound, int64_t worst)
{
	const struct policy *po;
	struct pentry *e;
	int64_t room, hi, b, clamp = -1;
	size_t i;

	hi = bound >= 0
	    ? bound
	    : (a->a_call->pc_price != NULL ? a->a_call->pc_price->p_max_output
					   : -1);
	for (i = 0; i < a->a_n; i++) {
		po = a->a_pol[i];
		if ((e = a->a_budget[i]) == NULL || po->po_cap_nusd == -1 ||
		    po->po_shadow || po->po_clamp_min == -1)
			continue;
		/* The cap's room: a short fleet lease is topped up, not
		 * clamped to. */
		room = cap_room(a, po, e);
		if (worst <= room)
			continue;
		b = affordable(a->a_call, po->po_clamp_min, hi, room);
		if (b != -1 && (clamp == -1 || b < clamp))
			clamp = b;
	}
	return (clamp);
}

/*
 * Hard caps: each capped policy's spent + reserved + worst against its
 * cap, where worst is the call as it will be forwarded (after the clamp).
 * A clamping policy that could not pay for the call as asked (worst_asked)
 * also refuses when the bound ended below its min_output_tokens.
 */
static void
check_caps(struct admit *a, int64_t bound, int64_t worst, int64_t worst_asked)
{
	const struct policy *po;
	const struct policy *tp;
	struct policy_scope sc;
	struct pentry *e;
	int64_t room, cap = INT64_MAX;
	size_t i;
	int fleet;

	for (i = 0; i < a->a_n; i++) {
		po = a->a_pol[i];
		if ((e = a->a_budget[i]) == NULL || po->po_cap_nusd == -1)
			continue;
		fleet = e->e_lease != NULL ||
		    (e->e_rlease != NULL && e->e_rlease->rl_rolling);
		if (fleet && !po->po_shadow) {
			/* What the fleet's sync asks for and returns: the
			 * caps in force now (a reload may raise one). */
			tightest(a, e, &cap, &tp);
			lease_note(
			    e, cap == INT64_MAX ? -1 : cap, worst, a->a_now, 0);
		}
		room = room_of(a, po, e);
		if (worst <= room &&
		    (po->po_shadow || po->po_clamp_min == -1 ||
			worst_asked <= room || bound >= po->po_clamp_min))
			continue;
		if (!po->po_shadow && fleet && room < cap_room(a, po, e) &&
		    worst <= cap_room(a, po, e) &&
		    (po->po_clamp_min == -1 || bound >= po->po_clamp_min)) {
			/* Only the lease is short: the call may wait for
			 * the fleet to top it up. */
			lease_note(
			    e, cap == INT64_MAX ? -1 : cap, worst, a->a_now, 1);
			a->a_lease_short++;
		} else if (!po->po_shadow) {
			a->a_cap_short++;
			e->e_refused_worst = worst; /* GET /v1/budgets */
		}
		pcount_scope_budget(&sc, po, a->a_attr, e, a->a_now);
		if (!po->po_shadow && a->a_pd->pd_verdict == POLICY_REFUSE &&
		    a->a_pd->pd_reason == POLICY_HARD_CAP && room < a->a_room)
			a->a_pd->pd_scope = sc; /* a tighter one */
		if (refuse(a, po, POLICY_HARD_CAP, &sc) && room < a->a_room)
			a->a_room = room;
	}
}

/*
 * The tokens the call may use at most with output bound `bound`: its input
 * estimate plus the bound (at most the model's ceiling) times n, as
 * pricing_worst_case counts them. With no bound and no ceiling known:
 * POLICY_TOKENS_UNBOUNDED.
 */
static int64_t
tokens_at(const struct policy_call *c, int64_t bound)
{
	const struct price *p = c->pc_price;
	int64_t n = c->pc_info.ci_n < 1 ? 1 : c->pc_info.ci_n;
	int64_t in =
	    c->pc_info.ci_input_estimate < 0 ? 0 : c->pc_info.ci_input_estimate;

	if (p != NULL && p->p_max_output > 0 &&
	    (bound < 0 || bound > p->p_max_output))
		bound = p->p_max_output;
	if (bound < 0 || in >= POLICY_TOKENS_UNBOUNDED ||
	    bound > (POLICY_TOKENS_UNBOUNDED - in) / n)
		return (POLICY_TOKENS_UNBOUNDED);
	return (in + bound * n);
}

/*
 * A fleet's rate leases ask Redis with the limits in force now: the
 * tightest enforcing one of each kind over every rate entry of the call.
 */
static void
rate_limits_in_force(struct admit *a)
{
	const struct policy *po;
	struct policy_rate_lease *rl;
	size_t i, k;

	for (i = 0; i < a->a_n; i++)
		if (a->a_rate[i] != NULL && a->a_rate[i]->e_rlease != NULL)
			a->a_rate[i]->e_rlease->rl_rpm =
			    a->a_rate[i]->e_rlease->rl_tpm = 0;
	for (i = 0; i < a->a_n; i++) {
		for (k = 0; k < a->a_n; k++) {
			po = a->a_pol[k];
			if (a->a_rate[k] != a->a_rate[i] ||
			    a->a_rate[i] == NULL ||
			    (rl = a->a_rate[i]->e_rlease) == NULL ||
			    po->po_shadow)
				continue;
			if (po->po_rpm != 0 &&
			    (rl->rl_rpm == 0 || po->po_rpm < rl->rl_rpm))
				rl->rl_rpm = po->po_rpm;
			if (po->po_tpm != 0 &&
			    (rl->rl_tpm == 0 || po->po_tpm < rl->rl_tpm))
				rl->rl_tpm = po->po_tpm;
		}
	}
}

/*
 * Requests and calls in flight counted at admission, and tokens settled
 * in the minute plus the worst cases of the calls in flight (tokens is
 * this call's), per minute.
 */
static void
check_rates(struct admit *a, enum policy_reason which, int64_t tokens)
{
	const struct policy *po;
	struct policy_scope sc;
	struct pentry *e;
	int64_t limit, n, retry;
	size_t i;
	int over, lshort;

	for (i = 0; i < a->a_n; i++) {
		po = a->a_pol[i];
		if ((e = a->a_rate[i]) == NULL)
			continue;
		if (which == POLICY_RATE_REQUESTS && po->po_rpm != 0) {
			limit = po->po_rpm;
			n = pcount_rate_count(e, 0, a->a_now, limit, &retry);
			over = n >= limit;
		} else if (which == POLICY_RATE_TOKENS && po->po_tpm != 0) {
			limit = po->po_tpm;
			n = pcount_token_use(
			    e, a->a_now, limit, tokens, &retry);
			over = retry != 0;
		} else if (which == POLICY_CONCURRENCY && po->po_concurrent) {
			limit = po->po_concurrent;
			n = e->e_conc;
			retry = 1000; /* unknowable: when a call ends */
			over = n >= limit;
		} else
			continue;
		lshort = 0;
		if (!over && !po->po_shadow && e->e_rlease != NULL &&
		    which != POLICY_CONCURRENCY)
			lshort = lease_rate_short(e,
			    which == POLICY_RATE_TOKENS,
			    which == POLICY_RATE_TOKENS ? tokens : 1, a->a_now);
		if (lshort != 0) {
			/* Within the limit here, but the fleet's lease on it
			 * is short (1: the call may wait for a top-up), or
			 * Redis is down and this instance's share is used
			 * (2). */
			over = 1;
			retry = 1000;
			if (lshort == 1)
				a->a_lease_short++;
			else
				a->a_cap_short++;
		} else if (over && !po->po_shadow)
			a->a_cap_short++;
		if (!over)
			continue;
		pcount_scope_fill(&sc, po, a->a_attr);
		sc.sc_limit = limit;
		sc.sc_spent = n;
		sc.sc_reserved = e->e_conc;
		sc.sc_retry_after_ms = retry;
		sc.sc_reset_at = a->a_now + retry;
		sc.sc_window_start = a->a_now - 60000;
		refuse(a, po, which, &sc);
	}
}

static int
seen(struct pentry **list, size_t n, const struct pentry *e)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (list[i] == e)
			return (1);
	return (0);
}

/* The smallest enforcing cap over entry e, and its policy. */
static void
tightest(const struct admit *a, const struct pentry *e, int64_t *cap,
    const struct policy **pol)
{
	const struct policy *po;
	size_t i;

	*cap = INT64_MAX;
	*pol = NULL;
	for (i = 0; i < a->a_n; i++) {
		po = a->a_pol[i];
		if (a->a_budget[i] != e || po->po_cap_nusd == -1 ||
		    po->po_shadow || pcount_cap(po, e) >= *cap)
			continue;
		*cap = pcount_cap(po, e);
		*pol = po;
	}
}

/* Everything allows: reserve on each distinct entry once. */
static void
reserve(struct admit *a, int64_t worst, int64_t tokens)
{
	struct policy_reservation *r;
	struct policy_decision *pd = a->a_pd;
	const struct policy *po;
	struct pentry *e;
	int64_t room, best = INT64_MAX;
	size_t i, k;

	r = xcalloc(1, sizeof(*r) + 2 * a->a_n * sizeof(r->r_e[0]));
	r->r_cap = xcalloc(2 * a->a_n + 1, sizeof(*r->r_cap));
	r->r_pol = xcalloc(2 * a->a_n + 1, sizeof(*r->r_pol));
	r->r_pc = a->a_pc;
	r->r_nusd = worst;
	r->r_tokens = tokens;
	r->r_started = a->a_now;
	for (k = 0; k < 2; k++) {
		for (i = 0; i < a->a_n; i++) {
			e = k == 0 ? a->a_budget[i] : a->a_rate[i];
			if (e == NULL || seen(r->r_e, r->r_n, e))
				continue;
			r->r_e[r->r_n++] = e;
			e->e_refs++;
			if (k == 0) {
				e->e_reserved += worst;
				e->e_refused_worst = 0; /* not capped now */
				tightest(a, e, &r->r_cap[r->r_n - 1],
				    &r->r_pol[r->r_n - 1]);
				continue;
			}
			e->e_conc++;
			e->e_tok_reserved += tokens;
			if (e->e_rlease != NULL)
				e->e_rlease->rl_cum_req++;
			r->r_cap[r->r_n - 1] = INT64_MAX;
			pcount_ring_add(e->e_ring->ri_id, e->e_ring->ri_v,
			    RATE_SLOTS, pcount_floor_div(a->a_now, 1000), 1);
		}
	}
	pd->pd_res = r;
	/* The tightest cap left, for the response headers. */
	for (i = 0; i < a->a_n; i++) {
		po = a->a_pol[i];
		if ((e = a->a_budget[i]) == NULL || po->po_cap_nusd == -1 ||
		    po->po_shadow)
			continue;
		room = pcount_cap(po, e) - pcount_spent(e, a->a_now, NULL) -
		    e->e_reserved;
		if (room < best) {
			best = room;
			pcount_scope_budget(
			    &pd->pd_scope, po, a->a_attr, e, a->a_now);
		}
	}
}

/*
 * Decide on the call c at now against every policy of ps that matches
 * it. Allowed (POLICY_ALLOW, or POLICY_CLAMP with a lower pd_out_bound),
 * its worst case is reserved on every matching scope and pd_res must be
 * settled or released; refused, nothing is reserved anywhere.
 */
int
policy_admit(const struct policyset *ps, struct policy_counters *pc,
    const struct policy_call *c, int64_t now, struct policy_decision *pd)
{
	struct admit a;
	const struct policy *po;
	const char *model;
	struct policy_scope sc;
	int64_t bound, worst, worst_asked, clamp, tokens;
	size_t i;

	memset(pd, 0, sizeof(*pd));
	pd->pd_verdict = POLICY_ALLOW;
	pd->pd_out_bound = -1;
	memset(&a, 0, sizeof(a));
	a.a_call = c;
	a.a_attr = c->pc_attr;
	a.a_now = now;
	a.a_pd = pd;
	a.a_pc = pc;
	a.a_room = INT64_MAX;
	a.a_pol = xcalloc(ps->ps_n + 1, sizeof(*a.a_pol));
	a.a_budget = xcalloc(ps->ps_n + 1, sizeof(*a.a_budget));
	a.a_rate = xcalloc(ps->ps_n + 1, sizeof(*a.a_rate));
	for (i = 0; i < ps->ps_n; i++) {
		po = &ps->ps_pol[i];
		if (!policy_matches(po, c->pc_attr))
			continue;
		a.a_pol[a.a_n] = po;
		if (pcount_has_budget(po))
			a.a_budget[a.a_n] =
			    pcount_budget_entry(pc, po, c->pc_attr, now, 1);
		if (pcount_has_rate(po))
			a.a_rate[a.a_n] = pcount_rate_entry(pc, po, c->pc_attr);
		a.a_n++;
	}

	model = c->pc_attr[POLICY_ATTR_MODEL] != NULL
	    ? c->pc_attr[POLICY_ATTR_MODEL]
	    : "";
	for (i = 0; i < a.a_n; i++) {
		po = a.a_pol[i];
		pcount_scope_fill(&sc, po, c->pc_attr);
		if (po->po_killed)
			refuse(&a, po, POLICY_KILLED, &sc);
	}
	for (i = 0; i < a.a_n; i++) {
		po = a.a_pol[i];
		pcount_scope_fill(&sc, po, c->pc_attr);
		if (!model_allowed(po, model))
			refuse(&a, po, POLICY_MODEL_NOT_ALLOWED, &sc);
	}

	bound = output_bound(&a);
	worst = worst_asked = worst_at(c, bound);
	if ((clamp = clamp_bound(&a, bound, worst)) != -1) {
		bound = clamp;
		worst = worst_at(c, bound);
	}
	check_caps(&a, bound, worst, worst_asked);
	if (pd->pd_verdict == POLICY_REFUSE &&
	    pd->pd_reason == POLICY_HARD_CAP && a.a_cap_short == 0 &&
	    a.a_lease_short > 0)
		pd->pd_lease_wait = 1;
	if (clamp != -1 && pd->pd_verdict != POLICY_REFUSE)
		pd->pd_verdict = POLICY_CLAMP;
	tokens = tokens_at(c, bound);
	rate_limits_in_force(&a);
	check_rates(&a, POLICY_RATE_REQUESTS, tokens);
	check_rates(&a, POLICY_RATE_TOKENS, tokens);
	check_rates(&a, POLICY_CONCURRENCY, tokens);
	if (pd->pd_verdict == POLICY_REFUSE && a.a_cap_short == 0 &&
	    a.a_lease_short > 0 &&
	    (pd->pd_reason == POLICY_RATE_REQUESTS ||
		pd->pd_reason == POLICY_RATE_TOKENS))
		pd->pd_lease_wait = 1;

	if (bound != c->pc_info.ci_max_output)
		pd->pd_out_bound = bound;
	pd->pd_worst_nusd = worst;
	pd->pd_worst_tokens = tokens;
	if (pd->pd_verdict != POLICY_REFUSE)
		reserve(&a, worst, tokens);
	free(a.a_pol);
	free(a.a_budget);
	free(a.a_rate);
	return (0);
}
