/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The counters behind the policies and the admission algebra. A counter
 * entry is keyed by text (policy_budget_key): a calendar or total budget
 * has one entry per scope and window start, a rolling budget one sliding
 * entry per scope, and the rate limits one entry per scope whatever the
 * window, so a calendar rollover never resets requests per minute. Two
 * policies that name the same scope share its entry and a call is counted
 * on it once, however many of them match.
 *
 * policy_admit checks every matching policy against spent + reserved +
 * this call's worst case, and only when all allow does it reserve, on
 * every entry at once: a refusal leaves every counter as it was. As the
 * loop thread is the only one here, check-then-reserve is atomic, and
 * with reservations covering the worst case no cap is ever overshot.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/extensions.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/util.h"

#include "policy_int.h"

static uint64_t
hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return (h);
}

int64_t
pcount_floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return ((a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q);
}

/*
 * a + b, held at INT64_MAX or INT64_MIN rather than wrapping: a spend
 * counter that wrapped would read as room under every cap.
 */
int64_t
pcount_add(int64_t a, int64_t b)
{
	if (b > 0 && a > INT64_MAX - b)
		return (INT64_MAX);
	if (b < 0 && a < INT64_MIN - b)
		return (INT64_MIN);
	return (a + b);
}

/* Add v to bucket id of a ring of n slots; older than the slot: dropped. */
void
pcount_ring_add(int64_t *ids, int64_t *vals, size_t n, int64_t id, int64_t v)
{
	size_t i = (size_t)(((id % (int64_t)n) + (int64_t)n) % (int64_t)n);

	if (ids[i] > id)
		return;
	if (ids[i] < id) {
		ids[i] = id;
		vals[i] = 0;
	}
	vals[i] = pcount_add(vals[i], v);
}

/* Sum of buckets lo..hi; *oldest gets the oldest non-empty id, or hi+1. */
int64_t
pcount_ring_sum(const int64_t *ids, const int64_t *vals, size_t n, int64_t lo,
    int64_t hi, int64_t *oldest)
{
	int64_t sum = 0, old = hi + 1;
	size_t i;

	for (i = 0; i < n; i++) {
		if (ids[i] < lo || ids[i] > hi || vals[i] == 0)
			continue;
		sum = pcount_add(sum, vals[i]);
		if (ids[i] < old)
			old = ids[i];
	}
	if (oldest != NULL)
		*oldest = old;
	return (sum);
}

/* A new, empty set of counters. */
struct policy_counters *
policy_counters_new(void)
{
	struct policy_counters *pc;

	pc = xcalloc(1, sizeof(*pc));
	pc->pc_size = 256;
	pc->pc_tab = xcalloc(pc->pc_size, sizeof(*pc->pc_tab));
	return (pc);
}

static void
entry_free(struct pentry *e)
{
	int a;

	for (a = 0; a < TAG_MAX; a++)
		free(e->e_per[a]);
	free(e->e_key);
	free(e->e_ring);
	free(e->e_lease);
	free(e->e_rlease);
	free(e);
}

/* Free the counters; every reservation must be settled or released. */
void
policy_counters_free(struct policy_counters *pc)
{
	struct pentry *e, *next;
	size_t i;

	if (pc == NULL)
		return;
	for (i = 0; i < pc->pc_size; i++) {
		for (e = pc->pc_tab[i]; e != NULL; e = next) {
			next = e->e_next;
			entry_free(e);
		}
	}
	free(pc->pc_tab);
	free(pc);
}

/* How many entries the counters hold. */
size_t
policy_counters_count(const struct policy_counters *pc)
{
	return (pc->pc_n);
}

static void
grow(struct policy_counters *pc)
{
	struct pentry **tab, *e, *next;
	size_t i, size = pc->pc_size * 2;

	tab = xcalloc(size, sizeof(*tab));
	for (i = 0; i < pc->pc_size; i++) {
		for (e = pc->pc_tab[i]; e != NULL; e = next) {
			next = e->e_next;
			e->e_next = tab[e->e_hash & (size - 1)];
			tab[e->e_hash & (size - 1)] = e;
		}
	}
	free(pc->pc_tab);
	pc->pc_tab = tab;
	pc->pc_size = size;
}

/* The entry called key (taken over), created if create is set. */
static struct pentry *
lookup(struct policy_counters *pc, char *key, int create)
{
	struct pentry *e;
	uint64_t h = hash_str(key);

	for (e = pc->pc_tab[h & (pc->pc_size - 1)]; e != NULL; e = e->e_next) {
		if (e->e_hash == h && strcmp(e->e_key, key) == 0) {
			free(key);
			return (e);
		}
	}
	if (!create) {
		free(key);
		return (NULL);
	}
	if (pc->pc_n >= pc->pc_size)
		grow(pc);
	e = xcalloc(1, sizeof(*e));
	e->e_key = key;
	e->e_hash = h;
	e->e_new = 1;
	e->e_next = pc->pc_tab[h & (pc->pc_size - 1)];
	pc->pc_tab[h & (pc->pc_size - 1)] = e;
	pc->pc_n++;
	return (e);
}

/* Does po keep a budget (a cap or alerts), and does it rate-limit? */
int
pcount_has_budget(const struct policy *po)
{
	return (po->po_cap_nusd != -1 || po->po_nalerts > 0);
}

int
pcount_has_rate(const struct policy *po)
{
	return (po->po_rpm != 0 || po->po_tpm != 0 || po->po_concurrent != 0);
}

/* The budget entry of po for the call attr in the window holding t. */
struct pentry *
pcount_budget_entry(struct policy_counters *pc, const struct policy *po,
    const char *const *attr, int64_t t, int create)
{
	struct pentry *e;
	int64_t start, reset;
	int a;

	policy_window_at(&po->po_window, t, &start, &reset);
	e = lookup(pc, policy_budget_key(po, attr, start), create);
	if (e != NULL)
		pcount_ext_refresh(e, t);
	if (e == NULL || e->e_ring != NULL || e->e_reset != 0)
		return (e);
	for (a = 0; a < TAG_MAX; a++) {
		if (po->po_per[a] && attr[a] != NULL && attr[a][0] != '\0')
			e->e_per[a] = xstrdup(attr[a]);
	}
	if (po->po_window.pw_kind == POLICY_WIN_ROLLING) {
		e->e_kind = PE_ROLLING;
		e->e_width = po->po_window.pw_len_ms / ROLL_BUCKETS;
		e->e_ring = xcalloc(1, sizeof(*e->e_ring));
		memset(e->e_ring->ri_id, 0xff, sizeof(e->e_ring->ri_id));
		lease_rate_attach(pc, e);
	} else {
		e->e_kind = PE_CALENDAR;
		e->e_start = start;
		e->e_reset = reset;
		lease_attach(pc, e);
	}
	return (e);
}

/*
 * Bring e's extension raise up to date at now: asked of the extensions
 * list only when it has changed or a raise counted has ended, so a budget
 * costs one comparison when nothing did.
 */
void
pcount_ext_refresh(struct pentry *e, int64_t now)
{
	uint64_t gen = extensions_generation();
	int64_t was = e->e_ext;

	if (e->e_ext_gen == gen && now < e->e_ext_until)
		return;
	e->e_ext = extensions_sum(e->e_key, now, &e->e_ext_until);
	e->e_ext_gen = gen;
	if (e->e_ext != was)
		lease_cap_moved(e, e->e_ext - was);
}

/*
 * po's cap on entry e: hard_cap_usd plus what live extensions add to e's
 * scope and window (as of e's last refresh), saturating; -1: no cap.
 */
int64_t
pcount_cap(const struct policy *po, const struct pentry *e)
{
	if (po->po_cap_nusd == -1)
		return (-1);
	return (e != NULL ? pcount_add(po->po_cap_nusd, e->e_ext)
			  : po->po_cap_nusd);
}

struct pentry *
pcount_rate_entry(struct policy_counters *pc, const struct policy *po,
    const char *const *attr)
{
	struct pentry *e;

	e = lookup(pc, policy_budget_key(po, attr, -1), 1);
	if (e->e_ring == NULL) {
		e->e_kind = PE_RATE;
		e->e_ring = xcalloc(1, sizeof(*e->e_ring));
		lease_rate_attach(pc, e);
	}
	return (e);
}

/* Settled spend of a budget entry at now; *reset when room next grows. */
int64_t
pcount_spent(const struct pentry *e, int64_t now, int64_t *reset)
{
	int64_t cur, oldest, sum;

	if (e->e_kind == PE_CALENDAR) {
		if (reset != NULL)
			*reset = e->e_reset;
		return (e->e_spent);
	}
	cur = pcount_floor_div(now, e->e_width);
	sum = pcount_ring_sum(e->e_ring->ri_id, e->e_ring->ri_v, ROLL_SLOTS,
	    cur - ROLL_BUCKETS, cur, &oldest);
	if (reset != NULL)
		*reset =
		    sum == 0 ? now : (oldest + ROLL_BUCKETS + 1) * e->e_width;
	return (sum);
}

/*
 * Requests (or settled tokens) of a rate entry in the last minute, and
 * how long until they drop below limit.
 */
int64_t
pcount_rate_count(const struct pentry *e, int tokens, int64_t now,
    int64_t limit, int64_t *retry_ms)
{
	const int64_t *ids = tokens ? e->e_ring->ri_tok_id : e->e_ring->ri_id;
	const int64_t *vals = tokens ? e->e_ring->ri_tok : e->e_ring->ri_v;
	int64_t cur = pcount_floor_div(now, 1000), sum, left, id;

	sum = pcount_ring_sum(
	    ids, vals, RATE_SLOTS, cur - RATE_SLOTS + 1, cur, NULL);
	*retry_ms = 0;
	/* Drop buckets oldest first until the count is under the limit. */
	for (left = sum, id = cur - RATE_SLOTS + 1; left >= limit && id <= cur;
	     id++) {
		left -= pcount_ring_sum(ids, vals, RATE_SLOTS, id, id, NULL);
		*retry_ms = (id + RATE_SLOTS) * 1000 - now;
	}
	return (sum);
}

/*
 * Tokens a rate entry has in use at now: those settled in the last minute
 * plus the worst cases of the calls in flight. Would a call that may use
 * want more go over limit, *retry_ms says how long until enough settled
 * buckets leave the minute, or 1 s when only a call ending can make room;
 * 0 when it fits. A call fits when the sum stays within limit, or when
 * nothing at all is in use: a call larger than the whole limit then runs
 * alone rather than never.
 */
int64_t
pcount_token_use(const struct pentry *e, int64_t now, int64_t limit,
    int64_t want, int64_t *retry_ms)
{
	const int64_t *ids = e->e_ring->ri_tok_id, *vals = e->e_ring->ri_tok;
	int64_t cur = pcount_floor_div(now, 1000), left, id;
	int64_t held = e->e_tok_reserved;

	left = pcount_ring_sum(
	    ids, vals, RATE_SLOTS, cur - RATE_SLOTS + 1, cur, NULL);
	*retry_ms = 0;
	if (left + held == 0 || left + held + want <= limit)
		return (left + held);
	*retry_ms = 1000;
	for (id = cur - RATE_SLOTS + 1; id <= cur; id++) {
		left -= pcount_ring_sum(ids, vals, RATE_SLOTS, id, id, NULL);
		if (left + held == 0 || left + held + want <= limit) {
			*retry_ms = (id + RATE_SLOTS) * 1000 - now;
			break;
		}
	}
	return (pcount_ring_sum(
		    ids, vals, RATE_SLOTS, cur - RATE_SLOTS + 1, cur, NULL) +
	    held);
}

void
pcount_scope_fill(
    struct policy_scope *sc, const struct policy *po, const char *const *attr)
{
	int t;

	memset(sc, 0, sizeof(*sc));
	sc->sc_policy = po;
	for (t = 0; t < TAG_MAX; t++) {
		if (po->po_per[t] && attr[t] != NULL)
			snprintf(sc->sc_per[t], sizeof(sc->sc_per[t]), "%s",
			    attr[t]);
	}
}

void
pcount_scope_budget(struct policy_scope *sc, const struct policy *po,
    const char *const *attr, const struct pentry *e, int64_t now)
{
	int64_t start, reset, cap = pcount_cap(po, e);

	pcount_scope_fill(sc, po, attr);
	policy_window_at(&po->po_window, now, &start, &reset);
	sc->sc_limit = cap;
	sc->sc_spent = pcount_spent(e, now, &reset);
	sc->sc_reserved = e->e_reserved;
	sc->sc_window_start = e->e_kind == PE_CALENDAR ? e->e_start : start;
	sc->sc_reset_at = reset;
	sc->sc_fired = e->e_nfired;
	sc->sc_lease = e->e_lease;
	sc->sc_rlease =
	    e->e_rlease != NULL && e->e_rlease->rl_rolling ? e->e_rlease : NULL;
	/* Capped: a call was refused for want of room that has not grown
	 * enough since, or nothing is left at all. */
	sc->sc_capped = cap != -1 &&
	    (cap - sc->sc_spent - sc->sc_reserved <= 0 ||
		(e->e_refused_worst > 0 &&
		    cap - sc->sc_spent - sc->sc_reserved < e->e_refused_worst));
}

/*
 * Replace the reservation r by what the call cost: actual nano-USD into
 * the window it was admitted in; on the rate entries, the worst-case
 * tokens held since admission are given back and the tokens used go into
 * the minute at now. The held tokens were never in a time bucket, so a
 * settle after the minute of admission has rolled takes nothing from the
 * wrong second. r is freed.
 */
void
policy_settle(
    struct policy_reservation *r, int64_t actual, int64_t tokens, int64_t now)
{
	struct pentry *e;
	size_t i;

	for (i = 0; i < r->r_n; i++) {
		e = r->r_e[i];
		e->e_refs--;
		if (e->e_kind == PE_RATE) {
			e->e_conc--;
			e->e_tok_reserved -= r->r_tokens;
			if (e->e_rlease != NULL && tokens > 0)
				e->e_rlease->rl_cum_tok += tokens;
			if (tokens > 0)
				pcount_ring_add(e->e_ring->ri_tok_id,
				    e->e_ring->ri_tok, RATE_SLOTS,
				    pcount_floor_div(now, 1000), tokens);
			continue;
		}
		e->e_reserved -= r->r_nusd;
		if (actual <= 0)
			continue;
		if (e->e_kind == PE_CALENDAR)
			e->e_spent = pcount_add(e->e_spent, actual);
		else
			pcount_ring_add(e->e_ring->ri_id, e->e_ring->ri_v,
			    ROLL_SLOTS,
			    pcount_floor_div(r->r_started, e->e_width), actual);
		lease_settle(e, actual);
	}
	free(r->r_cap);
	free(r->r_pol);
	free(r);
}

/*
 * A cost that was not a call tollgate admitted (POST /v1/usage) has been
 * incurred: count it at now on every budget of ps whose match attr
 * meets, as a call's settlement would, caps or not. It is a fact, not a
 * request: nothing refuses it, and the next call meets the spend. Rate
 * limits do not count it; they count calls.
 */
void
policy_charge(const struct policyset *ps, struct policy_counters *pc,
    const char *const *attr, int64_t nusd, int64_t now)
{
	const struct policy *po;
	struct pentry *e;
	size_t i;

	if (ps == NULL || nusd <= 0)
		return;
	for (i = 0; i < ps->ps_n; i++) {
		po = &ps->ps_pol[i];
		if (!pcount_has_budget(po) || !policy_matches(po, attr))
			continue;
		e = pcount_budget_entry(pc, po, attr, now, 1);
		if (e->e_kind == PE_CALENDAR)
			e->e_spent = pcount_add(e->e_spent, nusd);
		else
			pcount_ring_add(e->e_ring->ri_id, e->e_ring->ri_v,
			    ROLL_SLOTS, pcount_floor_div(now, e->e_width),
			    nusd);
		lease_settle(e, nusd);
	}
}

/*
 * A call in progress has already cost nusd, more than it reserved (its
 * provider is not keeping to the output bound, or the input estimate was
 * short): grow the reservation to nusd on every budget at once, or on
 * none. Returns 0, or -1 when a capped budget has no room for the growth;
 * sc (if not NULL) then describes it, without per-tag values. The caller
 * ends such a call: its cap is reached mid-stream.
 */
int
policy_grow(struct policy_reservation *r, int64_t nusd, int64_t now,
    struct policy_scope *sc)
{
	struct pentry *e;
	int64_t need = nusd - r->r_nusd, room, start, reset, cap;
	size_t i;

	if (need <= 0)
		return (0);
	for (i = 0; i < r->r_n; i++) {
		e = r->r_e[i];
		if (e->e_kind == PE_RATE || r->r_cap[i] == INT64_MAX)
			continue;
		/* The cap in force now: an extension revoked or ended since
		 * the admission no longer pays for growth. */
		pcount_ext_refresh(e, now);
		cap = r->r_pol[i] != NULL ? pcount_cap(r->r_pol[i], e)
					  : r->r_cap[i];
		room = cap - pcount_spent(e, now, &reset) - e->e_reserved;
		if (lease_room(e, now) < room)
			room = lease_room(e, now); /* a fleet's lease */
		if (need <= room)
			continue;
		if (e->e_lease != NULL &&
		    e->e_lease->pl_want < e->e_reserved + need)
			e->e_lease->pl_want = e->e_reserved + need;
		if (e->e_rlease != NULL && e->e_rlease->rl_rolling &&
		    e->e_rlease->rl_want_tok < e->e_reserved + need)
			e->e_rlease->rl_want_tok = e->e_reserved + need;
		if (sc != NULL) {
			memset(sc, 0, sizeof(*sc));
			sc->sc_policy = r->r_pol[i];
			sc->sc_limit = cap;
			sc->sc_spent = pcount_spent(e, now, &reset);
			sc->sc_reserved = e->e_reserved;
			policy_window_at(
			    &r->r_pol[i]->po_window, now, &start, &reset);
			sc->sc_window_start =
			    e->e_kind == PE_CALENDAR ? e->e_start : start;
			sc->sc_reset_at =
			    e->e_kind == PE_CALENDAR ? e->e_reset : reset;
		}
		return (-1);
	}
	for (i = 0; i < r->r_n; i++) {
		if (r->r_e[i]->e_kind != PE_RATE)
			r->r_e[i]->e_reserved += need;
	}
	r->r_nusd = nusd;
	return (0);
}

/* Does r already hold entry e? */
static int
res_holds(const struct policy_reservation *r, const struct pentry *e)
{
	size_t i;

	for (i = 0; i < r->r_n; i++)
		if (r->r_e[i] == e)
			return (1);
	return (0);
}

/*
 * A reload brought policies in while this call runs: hold its reservation
 * on every budget and rate entry of ps that matches the call and that it
 * does not hold yet, as if it had been admitted under them too (no limit
 * is checked: the call is already running), so its settle counts there.
 * Budgets are those of the window the call was admitted in. Returns r,
 * moved.
 */
struct policy_reservation *
policy_extend(struct policy_reservation *r, const struct policyset *ps,
    const char *const *attr)
{
	const struct policy *po;
	struct pentry *e;
	size_t i, j, n;
	int k;

	for (i = 0; i < ps->ps_n; i++) {
		po = &ps->ps_pol[i];
		if (!policy_matches(po, attr))
			continue;
		for (k = 0; k < 2; k++) {
			if (k == 0 && !pcount_has_budget(po))
				continue;
			if (k == 1 && !pcount_has_rate(po))
				continue;
			e = k == 0 ? pcount_budget_entry(
					 r->r_pc, po, attr, r->r_started, 1)
				   : pcount_rate_entry(r->r_pc, po, attr);
			if (res_holds(r, e))
				continue;
			n = r->r_n + 1;
			r = xreallocarray(
			    r, 1, sizeof(*r) + n * sizeof(r->r_e[0]));
			r->r_cap =
			    xreallocarray(r->r_cap, n, sizeof(*r->r_cap));
			r->r_pol =
			    xreallocarray(r->r_pol, n, sizeof(*r->r_pol));
			r->r_e[r->r_n] = e;
			r->r_cap[r->r_n] = INT64_MAX;
			r->r_pol[r->r_n] = NULL;
			r->r_n++;
			e->e_refs++;
			if (k == 1) {
				e->e_conc++;
				e->e_tok_reserved += r->r_tokens;
				continue;
			}
			e->e_reserved += r->r_nusd;
			/* The tightest enforcing cap over e, for growth. */
			for (j = 0; j < ps->ps_n; j++) {
				const struct policy *q = &ps->ps_pol[j];

				if (q->po_cap_nusd == -1 || q->po_shadow ||
				    pcount_cap(q, e) >= r->r_cap[r->r_n - 1] ||
				    !policy_matches(q, attr) ||
				    pcount_budget_entry(
					r->r_pc, q, attr, r->r_started, 0) != e)
					continue;
				r->r_cap[r->r_n - 1] = pcount_cap(q, e);
				r->r_pol[r->r_n - 1] = q;
			}
		}
	}
	return (r);
}

/* Does the reservation hold any budget under an enforcing cap? */
int
policy_res_capped(const struct policy_reservation *r)
{
	size_t i;

	for (i = 0; i < r->r_n; i++)
		if (r->r_e[i]->e_kind != PE_RATE && r->r_cap[i] != INT64_MAX)
			return (1);
	return (0);
}

/* Drop the reservation r of a call that cost nothing. r is freed. */
void
policy_release(struct policy_reservation *r, int64_t now)
{
	policy_settle(r, 0, 0, now);
}

/* Is e of no further use at now: past or empty, and not held? */
static int
entry_dead(const struct pentry *e, int64_t now)
{
	int64_t cur;

	if (e->e_refs > 0 || e->e_reserved != 0 || lease_keep(e))
		return (0);
	switch (e->e_kind) {
	case PE_CALENDAR:
		return (e->e_reset <= now);
	case PE_ROLLING:
		return (pcount_spent(e, now, NULL) == 0);
	default:
		cur = pcount_floor_div(now, 1000);
		return (e->e_conc == 0 &&
		    pcount_ring_sum(e->e_ring->ri_id, e->e_ring->ri_v,
			RATE_SLOTS, cur - RATE_SLOTS + 1, cur, NULL) == 0 &&
		    pcount_ring_sum(e->e_ring->ri_tok_id, e->e_ring->ri_tok,
			RATE_SLOTS, cur - RATE_SLOTS + 1, cur, NULL) == 0);
	}
}

/*
 * Free the entries no reservation holds whose window has ended (or, for
 * rolling and rate entries, that count nothing). Returns how many.
 */
size_t
policy_counters_gc(struct policy_counters *pc, int64_t now)
{
	struct pentry **ep, *e;
	size_t i, n = 0;

	for (i = 0; i < pc->pc_size; i++) {
		for (ep = &pc->pc_tab[i]; (e = *ep) != NULL;) {
			if (!entry_dead(e, now)) {
				ep = &e->e_next;
				continue;
			}
			*ep = e->e_next;
			entry_free(e);
			pc->pc_n--;
			n++;
		}
	}
	return (n);
}

/* Mark every entry as existing before a rebuild (pcount_is_new). */
void
pcount_mark_old(struct policy_counters *pc)
{
	struct pentry *e;
	size_t i;

	for (i = 0; i < pc->pc_size; i++)
		for (e = pc->pc_tab[i]; e != NULL; e = e->e_next)
			e->e_new = 0;
}

/*
 * The budget of po for a call with attributes attr at now, as
 * GET /v1/budgets and the response headers show it. Returns -1 (and an
 * empty scope) when the scope has no counter yet.
 */
int
policy_budget(const struct policy *po, struct policy_counters *pc,
    const char *const *attr, int64_t now, struct policy_scope *sc)
{
	struct pentry *e;
	char *key;
	int64_t until;

	if ((e = pcount_budget_entry(pc, po, attr, now, 0)) == NULL) {
		pcount_scope_fill(sc, po, attr);
		policy_window_at(&po->po_window, now, &sc->sc_window_start,
		    &sc->sc_reset_at);
		/* No counter yet, but an extension may have raised it. */
		sc->sc_limit = po->po_cap_nusd;
		if (po->po_cap_nusd != -1) {
			key = policy_budget_key(po, attr, sc->sc_window_start);
			sc->sc_limit = pcount_add(
			    po->po_cap_nusd, extensions_sum(key, now, &until));
			free(key);
		}
		return (-1);
	}
	pcount_scope_budget(sc, po, attr, e, now);
	return (0);
}

static int
fired_has(const struct pentry *e, int64_t t)
{
	size_t i;

	for (i = 0; i < e->e_nfired; i++)
		if (e->e_fired[i] == t)
			return (1);
	return (0);
}

/*
 * The thresholds of po that the settled spend of its entry e has reached
 * at now and that have not fired in this window, each marked as fired and
 * put in out (at most max); a rolling window first re-arms those that
 * fired a window length ago. Returns how many.
 */
static size_t
entry_fired(const struct policy *po, struct pentry *e, const char *const *attr,
    int64_t now, struct policy_alert *out, size_t max)
{
	int64_t spent, t;
	size_t j, k, n = 0;

	for (k = 0; e->e_kind == PE_ROLLING && k < e->e_nfired;) {
		if (e->e_fired_at[k] + e->e_width * ROLL_BUCKETS > now) {
			k++;
			continue;
		}
		e->e_nfired--;
		e->e_fired[k] = e->e_fired[e->e_nfired];
		e->e_fired_at[k] = e->e_fired_at[e->e_nfired];
	}
	spent = pcount_spent(e, now, NULL);
	for (j = 0; j < po->po_nalerts; j++) {
		t = po->po_alerts[j];
		if (spent < t || fired_has(e, t) || n == max ||
		    e->e_nfired == nitems(e->e_fired))
			continue;
		e->e_fired_at[e->e_nfired] = now;
		e->e_fired[e->e_nfired++] = t;
		pcount_scope_budget(&out[n].pa_scope, po, attr, e, now);
		out[n++].pa_threshold_nusd = t;
	}
	return (n);
}

/*
 * The alert thresholds that the settled spend of the call's scopes has
 * crossed and that have not fired in this window yet; each is marked as
 * fired, so it is reported once per scope, threshold and window. A new
 * calendar window is a new entry and so re-arms every threshold; in a
 * rolling window a threshold re-arms one window length after it fired.
 * At most max go to out; returns how many.
 */
size_t
policy_fired(const struct policyset *ps, struct policy_counters *pc,
    const char *const *attr, int64_t now, struct policy_alert *out, size_t max)
{
	const struct policy *po;
	struct pentry *e;
	size_t i, n = 0;

	for (i = 0; i < ps->ps_n; i++) {
		po = &ps->ps_pol[i];
		if (po->po_nalerts == 0 || !policy_matches(po, attr))
			continue;
		if ((e = pcount_budget_entry(pc, po, attr, now, 0)) == NULL)
			continue;
		n += entry_fired(po, e, attr, now, out + n, max - n);
	}
	return (n);
}

/*
 * policy_fired over every live budget scope rather than one call's: fn
 * gets each threshold of ps that a scope's settled spend has reached at
 * now and that has not fired in its window yet (with the scope's per-tag
 * values as attributes), and it is marked as fired. A reload calls it, so
 * that a threshold brought below the spend fires then, once, and not at
 * the next settled call. Returns how many.
 */
size_t
policy_fired_all(const struct policyset *ps, struct policy_counters *pc,
    int64_t now,
    void (*fn)(const struct policy_alert *, const char *const *, void *),
    void *arg)
{
	struct policy_alert out[POLICY_THRESHOLDS_MAX];
	const struct policy *po;
	const char *attr[POLICY_ATTR_MAX];
	struct pentry *e;
	char *key;
	size_t i, j, k, m, n = 0;
	int a;

	for (i = 0; i < pc->pc_size; i++) {
		for (e = pc->pc_tab[i]; e != NULL; e = e->e_next) {
			if (e->e_kind == PE_RATE ||
			    (e->e_kind == PE_CALENDAR &&
				(e->e_start > now || e->e_reset <= now)))
				continue;
			pcount_ext_refresh(e, now);
			memset(attr, 0, sizeof(attr));
			for (a = 0; a < TAG_MAX; a++)
				attr[a] = e->e_per[a];
			for (j = 0; j < ps->ps_n; j++) {
				po = &ps->ps_pol[j];
				if (po->po_nalerts == 0)
					continue;
				key = policy_budget_key(po, attr, e->e_start);
				m = strcmp(key, e->e_key) == 0
				    ? entry_fired(
					  po, e, attr, now, out, nitems(out))
				    : 0;
				free(key);
				for (k = 0; k < m; k++)
					fn(&out[k], attr, arg);
				n += m;
			}
		}
	}
	return (n);
}

/*
 * Mark threshold as already fired, at time t, in the scope of po for the
 * call attr, so that policy_fired does not report it again in that
 * window: how alert state persisted in the ledger is restored after a
 * restart. Call it after policy_rebuild, which fills only counters it
 * creates itself.
 */
void
policy_alert_mark(const struct policy *po, struct policy_counters *pc,
    const char *const *attr, int64_t t, int64_t threshold)
{
	struct pentry *e;

	e = pcount_budget_entry(pc, po, attr, t, 1);
	if (fired_has(e, threshold) || e->e_nfired == nitems(e->e_fired))
		return;
	e->e_fired_at[e->e_nfired] = t;
	e->e_fired[e->e_nfired++] = threshold;
}

/*
 * Call fn with every live budget scope of ps at now, once per policy that
 * names it: the rows of GET /v1/budgets. A scope is live while its
 * counter exists (policy_counters_gc drops it); calendar counters of past
 * windows that calls still hold are skipped. Returns how many.
 */
size_t
policy_each_budget(const struct policyset *ps, struct policy_counters *pc,
    int64_t now, void (*fn)(const struct policy_scope *, void *), void *arg)
{
	const struct policy *po;
	const char *attr[POLICY_ATTR_MAX];
	struct policy_scope sc;
	struct pentry *e;
	char *key;
	size_t i, j, n = 0;
	int a;

	for (i = 0; i < pc->pc_size; i++) {
		for (e = pc->pc_tab[i]; e != NULL; e = e->e_next) {
			if (e->e_kind == PE_RATE ||
			    (e->e_kind == PE_CALENDAR &&
				(e->e_start > now || e->e_reset <= now)))
				continue;
			pcount_ext_refresh(e, now);
			memset(attr, 0, sizeof(attr));
			for (a = 0; a < TAG_MAX; a++)
				attr[a] = e->e_per[a];
			for (j = 0; j < ps->ps_n; j++) {
				po = &ps->ps_pol[j];
				if (!pcount_has_budget(po))
					continue;
				key = policy_budget_key(po, attr, e->e_start);
				if (strcmp(key, e->e_key) == 0) {
					pcount_scope_budget(
					    &sc, po, attr, e, now);
					fn(&sc, arg);
					n++;
				}
				free(key);
			}
		}
	}
	return (n);
}
