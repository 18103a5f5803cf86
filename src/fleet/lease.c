/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Budget leases, the instance's side of FLEET_SCRIPT_LEASE (scripts.c).
 * Each calendar budget entry of the policy counters carries a struct
 * policy_lease (src/policy/lease.c); a pass over them, every FLEET_TICK_MS
 * and at once when a call waits, sends a sync for each one that is due:
 *
 *   short    a call waits: ask for what it needs (pl_want) at once, and
 *            again no sooner than LEASE_RETRY_MS after a short grant.
 *   first    never synced: learn the fleet's spend, report this
 *            instance's (after a restart, from its ledger).
 *   peek     a call waits to read the fleet's spend (a routing rule's
 *            when_budget_below_percent): learn it at once.
 *   report   spend Redis has not counted, at most every LEASE_REPORT_MS:
 *            reports are batched, not sent per call.
 *   renew    a lease past half its TTL is renewed.
 *   idle     no call for LEASE_IDLE_MS: the lease shrinks to what the
 *            calls in flight hold, so idle instances strand no budget;
 *            likewise at once while Redis says another instance was
 *            granted less than it asked (pl_starve_until).
 *   ended    the window is over: report the rest, give the lease back.
 *
 * The lease asked for is what is in flight and unreported, plus headroom
 * for the demand: the spend settled in the last LEASE_DEMAND_MS, at most
 * lease_usd (and never less than a waiting call needs). So an instance
 * with no traffic holds nothing, and a busy one syncs about once a second
 * whatever its call rate. A lease may be used until the time its sync was
 * sent plus the TTL less LEASE_MARGIN_MS, so it is never used after Redis
 * may have charged it as spent.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "fleet_int.h"

#define LEASE_RETRY_MS 100
#define LEASE_REPORT_MS 1000
#define LEASE_IDLE_MS 5000
#define LEASE_DEMAND_MS 10000
#define LEASE_MARGIN_MS 1000
#define LEASE_KEEP_MS (24 * 3600 * 1000LL) /* keys outlive windows */

/* One sync in flight. */
struct lease_sync {
	struct policy_lease *ls_pl;
	int64_t ls_sent;
	int64_t ls_want;
};

/* Redis answered: {lease, spent, leased, acked, applied, holders, starve,
 * sequence}. */
static void
sync_cb(const redisReply *r, const char *err, void *arg)
{
	struct lease_sync *ls = arg;
	struct policy_lease *pl = ls->ls_pl;
	int64_t v[8], now = wallclock_ms(), ttl;
	size_t i;

	pl->pl_busy = 0;
	fl.f_busy--;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY ||
	    r->elements != 8) {
		log_debug("fleet: lease sync of %s failed: %s", pl->pl_key,
		    err != NULL ? err : "unexpected reply");
		goto done;
	}
	for (i = 0; i < 8; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			goto done;
		v[i] = r->element[i]->integer;
	}
	if (v[4] == 0) {
		/* Not applied: Redis has a later sequence number for this
		 * instance (the clock went back across a restart, or another
		 * process uses its name). Nothing here is renewed. */
		fleet_seq_behind(v[7]);
		goto done;
	}
	fl.f_stats.fs_syncs++;
	policy_lease_answer(pl, v[0], v[1], v[2], v[3], now);
	pl->pl_holders = v[5];
	pl->pl_starve_until = v[6];
	ttl = fl.f_conf->fc_lease_ttl_ms;
	pl->pl_until = ls->ls_sent + ttl -
	    (LEASE_MARGIN_MS < ttl / 4 ? LEASE_MARGIN_MS : ttl / 4);
	if (ls->ls_want > v[0]) {
		pl->pl_short_at = now;
		fl.f_stats.fs_short++;
	} else
		pl->pl_short_at = 0;
done:
	free(ls);
	fleet_synced();
}

/* Send one sync of pl asking to hold want, with reserved in flight. */
static void
sync_send(struct policy_lease *pl, int64_t reserved, int64_t want, int64_t now)
{
	struct lease_sync *ls;
	const char *argv[11];
	char *kb = NULL, *ke = NULL;
	char seq[24], nows[24], ttl[24], cap[24], cum[24], fl_s[24], want_s[24],
	    xat[24];

	if (pl->pl_cum < pl->pl_acked)
		pl->pl_acked = pl->pl_cum; /* never, but never negative */
	xasprintf(&kb, "%sb:%s", fl.f_conf->fc_prefix, pl->pl_key);
	xasprintf(&ke, "%se:%s", fl.f_conf->fc_prefix, pl->pl_key);
	snprintf(seq, sizeof(seq), "%" PRIu64, ++fl.f_seq);
	snprintf(nows, sizeof(nows), "%" PRId64, now);
	snprintf(ttl, sizeof(ttl), "%" PRId64, fl.f_conf->fc_lease_ttl_ms);
	snprintf(cap, sizeof(cap), "%" PRId64, pl->pl_cap);
	snprintf(cum, sizeof(cum), "%" PRId64, pl->pl_cum);
	snprintf(fl_s, sizeof(fl_s), "%" PRId64,
	    reserved < 0 ? (int64_t)0 : reserved);
	snprintf(want_s, sizeof(want_s), "%" PRId64, want);
	snprintf(xat, sizeof(xat), "%" PRId64,
	    pl->pl_window_end == POLICY_NEVER
		? (int64_t)0
		: (int64_t)(pl->pl_window_end + LEASE_KEEP_MS));
	argv[0] = kb;
	argv[1] = ke;
	argv[2] = fl.f_conf->fc_instance;
	argv[3] = seq;
	argv[4] = nows;
	argv[5] = ttl;
	argv[6] = cap;
	argv[7] = cum;
	argv[8] = fl_s;
	argv[9] = want_s;
	argv[10] = xat;
	ls = xcalloc(1, sizeof(*ls));
	ls->ls_pl = pl;
	ls->ls_sent = now;
	ls->ls_want = want;
	if (rconn_eval(fl.f_conn, FLEET_SCRIPT_LEASE, sync_cb, ls, 2, 11, argv,
		NULL) == 0) {
		pl->pl_busy = 1;
		fl.f_busy++;
		if (want > pl->pl_lease)
			fl.f_stats.fs_topups++;
		/* What this sync gives back is gone from now on: calls
		 * admitted before its answer must fit what stays. */
		if (want < pl->pl_lease)
			pl->pl_lease = want > reserved ? want : reserved;
		pl->pl_want = 0;
		pl->pl_peek = 0; /* its answer brings the fleet's spend */
	} else
		free(ls);
	free(kb);
	free(ke);
}

/* Redis is down (when_down: local): this instance's share of pl's cap. */
static void
degrade(struct policy_lease *pl)
{
	int64_t room, n;

	pl->pl_degraded = 1;
	pl->pl_until = INT64_MAX; /* the lease held stays usable */
	pl->pl_extra = 0;
	if (fl.f_conf->fc_when_down != FLEET_DOWN_LOCAL || pl->pl_cap == -1 ||
	    pl->pl_synced == 0)
		return; /* nothing known of the fleet's spend: none */
	/*
	 * Split among every instance that may want it: those alive by
	 * heartbeat, and at least those holding a lease on this scope. The
	 * others may have been granted more since this instance last heard
	 * from Redis: one lease_usd each is set aside for that first.
	 */
	n = (int64_t)(fl.f_alive > 0 ? fl.f_alive : 1);
	if (pl->pl_holders > n)
		n = pl->pl_holders;
	room = pl->pl_cap - pl->pl_fleet_spent - pl->pl_fleet_leased -
	    (n - 1) * fl.f_conf->fc_lease_nusd;
	if (room > 0)
		pl->pl_extra = room / n;
}

/*
 * The money lease asked for beyond what is in flight and unreported: the
 * spend of the last demand period (demand) or of this one so far
 * (period), whichever is more, and at least two more calls like the last
 * (worst); at most lease_usd. A busy entry thus doubles its lease each
 * sync up to lease_usd, like a slow start. Calendar budgets here, rolling
 * ones in rate.c.
 */
int64_t
lease_headroom(int64_t demand, int64_t period, int64_t worst)
{
	int64_t head = demand > period ? demand : period;

	if (worst > 0 && worst <= INT64_MAX / 2 && 2 * worst > head)
		head = 2 * worst;
	return (
	    head < fl.f_conf->fc_lease_nusd ? head : fl.f_conf->fc_lease_nusd);
}

/* One entry of a pass: send its sync if one is due. */
static void
pass_one(struct policy_lease *pl, int64_t reserved, void *arg)
{
	int64_t now = *(int64_t *)arg, unrep, want, head, ttl;
	int due, ended, idle, starving;

	if (!fl.f_up) {
		if (!pl->pl_degraded)
			degrade(pl);
		return;
	}
	if (pl->pl_busy)
		return;
	ttl = fl.f_conf->fc_lease_ttl_ms;
	unrep = pl->pl_cum - pl->pl_acked;
	ended = pl->pl_window_end != POLICY_NEVER && pl->pl_window_end <= now;
	if (now - pl->pl_demand_at >= LEASE_DEMAND_MS) {
		pl->pl_demand = pl->pl_cum - pl->pl_demand_cum;
		pl->pl_demand_cum = pl->pl_cum;
		pl->pl_demand_at = now;
	}
	if (ended || pl->pl_cap == -1) {
		/* Nothing to admit against: report, hold nothing. */
		want = 0;
		due = (pl->pl_synced == 0 && !ended) || pl->pl_lease > 0 ||
		    (unrep > 0 && now - pl->pl_synced >= LEASE_REPORT_MS) ||
		    (pl->pl_peek && !ended);
	} else {
		/* Another instance is short: hold no headroom. */
		starving = now < pl->pl_starve_until;
		idle = now - pl->pl_used >= LEASE_IDLE_MS || starving;
		head = idle ? 0
			    : lease_headroom(pl->pl_demand,
				  pl->pl_cum - pl->pl_demand_cum, pl->pl_worst);
		want = reserved + unrep + head;
		if (pl->pl_want > want)
			want = pl->pl_want;
		due = (pl->pl_want > 0 &&
			  (pl->pl_short_at == 0 ||
			      now - pl->pl_short_at >= LEASE_RETRY_MS)) ||
		    pl->pl_synced == 0 || pl->pl_peek ||
		    (unrep > 0 && now - pl->pl_synced >= LEASE_REPORT_MS) ||
		    (pl->pl_lease > 0 && pl->pl_until - now < ttl / 2) ||
		    (idle && pl->pl_lease > reserved + unrep &&
			now - pl->pl_synced >=
			    (starving ? LEASE_RETRY_MS : LEASE_REPORT_MS));
	}
	if (due)
		sync_send(pl, reserved, want, now);
}

/* Send every sync that is due at now. */
void
lease_pass(int64_t now)
{
	if (fl.f_pc != NULL)
		policy_leases_each(fl.f_pc, pass_one, &now);
	rate_pass(now);
}

/* Redis stopped answering: every lease gets its degraded rules. */
static void
down_one(struct policy_lease *pl, int64_t reserved, void *arg)
{
	(void)reserved;
	(void)arg;
	degrade(pl);
}

void
lease_down(void)
{
	if (fl.f_pc != NULL)
		policy_leases_each(fl.f_pc, down_one, NULL);
}

/* Redis answers again: no local shares; every lease synced before use. */
static void
back_one(struct policy_lease *pl, int64_t reserved, void *arg)
{
	(void)reserved;
	(void)arg;
	if (pl->pl_degraded) {
		pl->pl_degraded = 0;
		pl->pl_extra = 0;
		pl->pl_until = 0;
	}
	pl->pl_synced = 0; /* due at once: reconcile */
}

void
lease_back(void)
{
	if (fl.f_pc != NULL)
		policy_leases_each(fl.f_pc, back_one, NULL);
	lease_pass(wallclock_ms());
}

/* Leaving the fleet: report everything and ask to hold nothing. */
static void
leave_one(struct policy_lease *pl, int64_t reserved, void *arg)
{
	int64_t now = *(int64_t *)arg;

	if (pl->pl_busy || (pl->pl_lease == 0 && pl->pl_cum == pl->pl_acked))
		return;
	sync_send(pl, reserved, 0, now);
}

void
lease_leave(int64_t now)
{
	if (fl.f_pc != NULL)
		policy_leases_each(fl.f_pc, leave_one, &now);
	rate_leave(now);
}

/* The sums of lease_totals, and the oldest report not yet answered. */
struct totals {
	struct lease_totals *t_lt;
	int64_t t_oldest;
};

static void
total_one(struct policy_lease *pl, int64_t reserved, void *arg)
{
	struct totals *t = arg;
	int64_t unrep = pl->pl_cum - pl->pl_acked;

	(void)reserved;
	if (pl->pl_lease > 0) {
		t->t_lt->lt_leases++;
		t->t_lt->lt_leased += pl->pl_lease;
	}
	if (unrep > 0) {
		t->t_lt->lt_unreported += unrep;
		if (pl->pl_synced < t->t_oldest)
			t->t_oldest = pl->pl_synced;
	}
}

/*
 * The leases held here, summed; lt_lag_ms is how long the oldest spend
 * Redis has not counted has waited (since its entry's last answer).
 */
void
lease_totals(struct lease_totals *lt, int64_t now)
{
	struct totals t;

	memset(lt, 0, sizeof(*lt));
	t.t_lt = lt;
	t.t_oldest = now;
	if (fl.f_pc != NULL)
		policy_leases_each(fl.f_pc, total_one, &t);
	lt->lt_lag_ms = now - t.t_oldest;
}

static void
json_one(struct policy_lease *pl, int64_t reserved, void *arg)
{
	cJSON *arr = ((void **)arg)[0], *o;
	int64_t now = *(int64_t *)((void **)arg)[1];

	if (pl->pl_lease == 0 && pl->pl_cum == pl->pl_acked && reserved == 0)
		return;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "scope", pl->pl_key);
	if (pl->pl_cap != -1)
		fleet_json_money(o, "cap", pl->pl_cap);
	fleet_json_money(o, "lease", pl->pl_lease);
	fleet_json_money(o, "in_flight", reserved);
	fleet_json_money(o, "unreported", pl->pl_cum - pl->pl_acked);
	fleet_json_money(o, "fleet_spent", pl->pl_fleet_spent);
	fleet_json_money(o, "fleet_leased", pl->pl_fleet_leased);
	if (pl->pl_degraded)
		fleet_json_money(o, "local_share", pl->pl_extra);
	if (pl->pl_synced > 0)
		cJSON_AddNumberToObject(
		    o, "synced_ms_ago", (double)(now - pl->pl_synced));
	cJSON_AddItemToArray(arr, o);
}

/* GET /v1/fleet's "leases": the entries holding or owing something. */
cJSON *
lease_json(int64_t now)
{
	cJSON *arr = cJSON_CreateArray();
	void *args[2] = {arr, &now};

	if (fl.f_pc != NULL)
		policy_leases_each(fl.f_pc, json_one, args);
	return (arr);
}
