/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fleet leases on the policy counters: what an admission may spend of a
 * fleet-wide cap. Every instance of a fleet holds, per calendar budget
 * entry, a lease granted from the cap's remaining room by Redis (the
 * fleet's src/fleet/lease.c asks for it and fills struct policy_lease
 * from the answers); here the admission reads it. No I/O and no clock of
 * its own: the fleet passes what Redis said, the admission passes now.
 *
 * A call fits a fleet entry when its worst case fits both the cap as the
 * fleet last reported it (cap - spent - reserved, spent being the fleet's
 * plus what this instance settled since it last reported) and the lease:
 * lease + extra - unreported - reserved, where unreported is what this
 * instance settled that Redis has not counted yet (it is still inside the
 * lease), and extra is the local share the fleet grants itself while
 * Redis is down (when_down: local). A lease past pl_until is not used:
 * its holder may have been charged for it. Rolling windows and rate
 * limits are counted per instance (docs/fleet.md).
 */
#include <stdint.h>
#include <stdlib.h>

#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "policy_int.h"

/*
 * Turn fleet leases on (or off) for the calendar budget entries made from
 * now on. The fleet turns it on before the counters are rebuilt from the
 * ledger, so every entry carries its lease from the start.
 */
void
policy_counters_fleet(struct policy_counters *pc, int on)
{
	pc->pc_fleet = on;
}

/* Give a new calendar budget entry of a fleet its (empty) lease. */
void
lease_attach(struct policy_counters *pc, struct pentry *e)
{
	struct policy_lease *pl;

	if (!pc->pc_fleet || e->e_kind != PE_CALENDAR || e->e_lease != NULL)
		return;
	pl = xcalloc(1, sizeof(*pl));
	pl->pl_entry = e;
	pl->pl_key = e->e_key;
	pl->pl_window_end = e->e_reset;
	pl->pl_cap = -1;
	pl->pl_cum = e->e_spent;
	e->e_lease = pl;
}

/* Give a new rate entry of a fleet its (empty) count leases. */
void
lease_rate_attach(struct policy_counters *pc, struct pentry *e)
{
	struct policy_rate_lease *rl;

	if (!pc->pc_fleet ||
	    (e->e_kind != PE_RATE && e->e_kind != PE_ROLLING) ||
	    e->e_rlease != NULL)
		return;
	rl = xcalloc(1, sizeof(*rl));
	rl->rl_entry = e;
	rl->rl_key = e->e_key;
	if (e->e_kind == PE_ROLLING) {
		/* The window the local ring sums: ROLL_SLOTS buckets. */
		rl->rl_rolling = 1;
		rl->rl_width = e->e_width;
		rl->rl_slots = ROLL_SLOTS;
	} else {
		rl->rl_width = 1000;
		rl->rl_slots = RATE_SLOTS;
	}
	e->e_rlease = rl;
}

/*
 * Is the fleet's lease on rate entry e short for one more request
 * (tokens == 0) or for a call that may use want tokens, at now? 1: short,
 * the need is noted for the next sync; 2: Redis is down and this
 * instance's share of the limit (counted here alone) has no room; 0: it
 * fits.
 */
int
lease_rate_short(struct pentry *e, int tokens, int64_t want, int64_t now)
{
	struct policy_rate_lease *rl = e->e_rlease;
	int64_t held, room, need, retry, share;

	if (rl == NULL)
		return (0);
	if (rl->rl_degraded) {
		share = (tokens ? rl->rl_tpm : rl->rl_rpm) /
		    (rl->rl_share > 0 ? rl->rl_share : 1);
		if (share < 1)
			share = 1;
		if (!tokens)
			return (
			    pcount_rate_count(e, 0, now, share, &retry) + 1 >
				    share
				? 2
				: 0);
		pcount_token_use(e, now, share, want, &retry);
		return (retry != 0 ? 2 : 0);
	}
	rl->rl_used = now;
	if (!tokens) {
		held = rl->rl_until > now ? rl->rl_req : 0;
		room = held - (rl->rl_cum_req - rl->rl_ack_req);
		if (room >= 1)
			return (0);
		need = (rl->rl_cum_req - rl->rl_ack_req) + 1;
		if (need > rl->rl_want_req)
			rl->rl_want_req = need;
		return (1);
	}
	held = rl->rl_until > now ? rl->rl_tok : 0;
	room = held - (rl->rl_cum_tok - rl->rl_ack_tok) - e->e_tok_reserved;
	if (room >= want)
		return (0);
	need = (rl->rl_cum_tok - rl->rl_ack_tok) + e->e_tok_reserved + want;
	if (need > rl->rl_want_tok)
		rl->rl_want_tok = need;
	return (1);
}

/*
 * Call fn(lease, tokens in flight on its entry, arg) for every fleet rate
 * lease of the counters; the fleet's sync pass. A rolling budget's cap is
 * brought up to date with its extensions first. Returns how many.
 */
size_t
policy_rate_leases_each(struct policy_counters *pc,
    void (*fn)(struct policy_rate_lease *, int64_t, void *), void *arg)
{
	struct pentry *e;
	int64_t now = wallclock_ms();
	size_t i, n = 0;

	for (i = 0; i < pc->pc_size; i++) {
		for (e = pc->pc_tab[i]; e != NULL; e = e->e_next) {
			if (e->e_rlease == NULL)
				continue;
			if (e->e_rlease->rl_rolling)
				pcount_ext_refresh(e, now);
			fn(e->e_rlease, e->e_tok_reserved, arg);
			n++;
		}
	}
	return (n);
}

/* Room the lease leaves on e at now (INT64_MAX without a lease). */
int64_t
lease_room(const struct pentry *e, int64_t now)
{
	const struct policy_lease *pl = e->e_lease;
	const struct policy_rate_lease *rl = e->e_rlease;
	int64_t held, share;

	if (rl != NULL && rl->rl_rolling) {
		if (rl->rl_degraded) {
			/* Redis down: the cap divided by the instances, on
			 * this instance's own spend in the window. */
			share =
			    rl->rl_tpm / (rl->rl_share > 0 ? rl->rl_share : 1);
			return (
			    share - pcount_spent(e, now, NULL) - e->e_reserved);
		}
		held = rl->rl_until > now ? rl->rl_tok : 0;
		return (
		    held - (rl->rl_cum_tok - rl->rl_ack_tok) - e->e_reserved);
	}
	if (pl == NULL)
		return (INT64_MAX);
	held = pl->pl_until > now ? pl->pl_lease : 0;
	return (
	    held + pl->pl_extra - (pl->pl_cum - pl->pl_acked) - e->e_reserved);
}

/*
 * Must e be kept although its window is over and nothing holds it: a sync
 * is in flight, or Redis has not counted all it spent?
 */
int
lease_keep(const struct pentry *e)
{
	const struct policy_lease *pl = e->e_lease;
	const struct policy_rate_lease *rl = e->e_rlease;

	if (rl != NULL)
		return (rl->rl_busy || rl->rl_req > 0 || rl->rl_tok > 0 ||
		    rl->rl_cum_req != rl->rl_ack_req ||
		    rl->rl_cum_tok != rl->rl_ack_tok);
	return (pl != NULL && (pl->pl_busy || pl->pl_cum != pl->pl_acked));
}

/* A call settled actual on e: this instance's spend in the window. */
void
lease_settle(struct pentry *e, int64_t actual)
{
	if (actual <= 0)
		return;
	if (e->e_lease != NULL)
		e->e_lease->pl_cum = pcount_add(e->e_lease->pl_cum, actual);
	if (e->e_rlease != NULL && e->e_rlease->rl_rolling)
		e->e_rlease->rl_cum_tok =
		    pcount_add(e->e_rlease->rl_cum_tok, actual);
}

/*
 * An admission checked fleet entry e against a cap (the tightest, cap) at
 * now, the call's worst case worst: what the next sync asks with. short:
 * only the lease was short; note what the call needs.
 */
void
lease_note(
    struct pentry *e, int64_t cap, int64_t worst, int64_t now, int short_)
{
	struct policy_lease *pl = e->e_lease;
	struct policy_rate_lease *rl = e->e_rlease;
	int64_t need;

	if (pl != NULL) {
		pl->pl_cap = cap;
		pl->pl_used = now;
		pl->pl_worst = worst;
		need = e->e_reserved + (pl->pl_cum - pl->pl_acked) + worst;
		if (short_ && need > pl->pl_want)
			pl->pl_want = need;
	} else if (rl != NULL && rl->rl_rolling) {
		rl->rl_tpm = cap == -1 ? 0 : cap;
		rl->rl_used = now;
		rl->rl_worst = worst;
		need =
		    e->e_reserved + (rl->rl_cum_tok - rl->rl_ack_tok) + worst;
		if (short_ && need > rl->rl_want_tok)
			rl->rl_want_tok = need;
	}
}

/*
 * The live extensions on e's budget moved its caps by delta (an
 * extension made, learnt, revoked or ended): the cap the fleet's syncs
 * send moves with them at once, not at the next admission, since every
 * policy on the entry moves by the same raise. While Redis does not
 * answer, the local share shrinks by a cut in full (it was worked out
 * from the higher cap, and the other instances cannot be asked) and does
 * not grow with a raise: fail closed until Redis answers again.
 */
void
lease_cap_moved(struct pentry *e, int64_t delta)
{
	struct policy_lease *pl = e->e_lease;
	struct policy_rate_lease *rl = e->e_rlease;

	if (pl != NULL && pl->pl_cap != -1) {
		pl->pl_cap = pcount_add(pl->pl_cap, delta);
		if (pl->pl_cap < 0)
			pl->pl_cap = 0;
		if (pl->pl_degraded && delta < 0)
			pl->pl_extra =
			    pl->pl_extra + delta > 0 ? pl->pl_extra + delta : 0;
	}
	if (rl != NULL && rl->rl_rolling && rl->rl_tpm > 0) {
		rl->rl_tpm = pcount_add(rl->rl_tpm, delta);
		if (rl->rl_tpm < 1)
			rl->rl_tpm = 1; /* 0 would read as no limit */
	}
}

/*
 * Call fn(lease, worst cases in flight on its entry, arg) for every fleet
 * lease of the counters; the fleet's sync pass. Each cap is brought up to
 * date with its extensions first (one revoked or ended since the last
 * call). Returns how many.
 */
size_t
policy_leases_each(struct policy_counters *pc,
    void (*fn)(struct policy_lease *, int64_t, void *), void *arg)
{
	struct pentry *e;
	int64_t now = wallclock_ms();
	size_t i, n = 0;

	for (i = 0; i < pc->pc_size; i++) {
		for (e = pc->pc_tab[i]; e != NULL; e = e->e_next) {
			if (e->e_lease == NULL)
				continue;
			pcount_ext_refresh(e, now);
			fn(e->e_lease, e->e_reserved, arg);
			n++;
		}
	}
	return (n);
}

/*
 * Redis answered a sync of pl: the lease it holds, the fleet's spend and
 * leases, and how much of pl_cum it has counted. The entry's spend becomes
 * the fleet's plus what this instance settled since, so caps and alert
 * thresholds read the fleet's figure.
 */
void
policy_lease_answer(struct policy_lease *pl, int64_t lease, int64_t spent,
    int64_t leased, int64_t acked, int64_t now)
{
	struct pentry *e = pl->pl_entry;

	pl->pl_lease = lease;
	pl->pl_fleet_spent = spent;
	pl->pl_fleet_leased = leased;
	if (acked > pl->pl_acked && acked <= pl->pl_cum)
		pl->pl_acked = acked;
	pl->pl_synced = now;
	pl->pl_peek = 0;
	e->e_spent = spent + (pl->pl_cum - pl->pl_acked);
}

/*
 * The spend of a budget scope across the fleet, as GET /v1/budgets shows
 * it in the scope's "fleet" object: what Redis last counted for every
 * instance plus what this instance settled that Redis has not counted
 * yet. A scope no fleet shares has only its own spend.
 */
int64_t
policy_fleet_spent(const struct policy_scope *sc)
{
	const struct policy_lease *pl = sc->sc_lease;
	const struct policy_rate_lease *rl = sc->sc_rlease;

	if (pl != NULL)
		return (pl->pl_fleet_spent + (pl->pl_cum - pl->pl_acked));
	if (rl != NULL)
		return (rl->rl_used_tok + (rl->rl_cum_tok - rl->rl_ack_tok));
	return (sc->sc_spent);
}

/*
 * Does this instance know the fleet's spend on po's budget for a call
 * with attributes attr only from before since (Unix ms), or not at all?
 * Then the budget's entry is made if it has none and marked so that the
 * fleet's next pass asks Redis for it (pl_peek), and 1 is returned. 0
 * when the figure is as recent as since, when no fleet shares budgets,
 * or for a rolling budget whose cap (with its extensions) is 0.
 */
int
policy_budget_stale(const struct policy *po, struct policy_counters *pc,
    const char *const *attr, int64_t now, int64_t since)
{
	struct pentry *e;
	struct policy_rate_lease *rl;

	if (!pc->pc_fleet || !pcount_has_budget(po))
		return (0);
	e = pcount_budget_entry(pc, po, attr, now, 1);
	if (e->e_lease != NULL) {
		if (e->e_lease->pl_synced >= since)
			return (0);
		e->e_lease->pl_peek = 1;
		return (1);
	}
	if ((rl = e->e_rlease) != NULL && rl->rl_rolling) {
		if (rl->rl_synced >= since)
			return (0);
		/* A cap of 0 has no room whatever the fleet spent: nothing
		 * to wait for (the pass would never sync it). */
		if (pcount_cap(po, e) <= 0)
			return (0);
		/* The pass syncs only entries with a cap; an admission
		 * would set it to this one, the entry's policy's with the
		 * scope's extensions (a cap of 0 may be raised). */
		if (rl->rl_tpm == 0)
			rl->rl_tpm = pcount_cap(po, e);
		rl->rl_peek = 1;
		return (1);
	}
	return (0);
}
