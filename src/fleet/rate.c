/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rate limits across the fleet: requests and tokens per minute by leases
 * on counts, the instance's side of FLEET_SCRIPT_RATE (scripts.c); and
 * rolling budgets, whose sliding window is the same count on money. Each
 * rate entry of the policy counters carries a struct policy_rate_lease
 * (src/policy/lease.c); the same pass as the budget leases (lease.c)
 * syncs it when it is due, by the same rules: at once when a call waits,
 * at most every RATE_REPORT_MS while counts are unreported, at half its
 * TTL, and after RATE_IDLE_MS without a call to give the lease back.
 *
 * A request lease is spent at admission, one per call; a token lease holds
 * the calls' worst cases in flight and is spent by what they used. The
 * lease asked for is what is unreported and in flight, plus headroom: the
 * last demand period's count or this one's so far, at least two, at most
 * a tenth of the limit (so ten busy instances can share a limit without
 * one holding it all; more wait for idle leases to come back). While
 * Redis does not answer, each instance keeps to the limit divided by the
 * instances alive, counted alone (policy/lease.c).
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

#define RATE_RETRY_MS 100
#define RATE_REPORT_MS 1000
#define RATE_IDLE_MS 5000
#define RATE_DEMAND_MS 10000
#define RATE_MARGIN_MS 1000

/* One sync in flight. */
struct rate_sync {
	struct policy_rate_lease *rs_rl;
	int64_t rs_sent;
	int64_t rs_want_req, rs_want_tok;
};

static void
rate_cb(const redisReply *r, const char *err, void *arg)
{
	struct rate_sync *rs = arg;
	struct policy_rate_lease *rl = rs->rs_rl;
	int64_t v[10], now = wallclock_ms(), ttl;
	size_t i;

	rl->rl_busy = 0;
	fl.f_busy--;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY ||
	    r->elements != 10) {
		log_debug("fleet: rate sync of %s failed: %s", rl->rl_key,
		    err != NULL ? err : "unexpected reply");
		goto done;
	}
	for (i = 0; i < 10; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			goto done;
		v[i] = r->element[i]->integer;
	}
	if (v[8] == 0) {
		fleet_seq_behind(v[9]); /* as lease.c's sync_cb */
		goto done;
	}
	fl.f_stats.fs_syncs++;
	rl->rl_req = v[0];
	rl->rl_tok = v[1];
	rl->rl_used_req = v[2];
	rl->rl_used_tok = v[3];
	rl->rl_leased_req = v[4];
	rl->rl_leased_tok = v[5];
	if (v[6] > rl->rl_ack_req && v[6] <= rl->rl_cum_req)
		rl->rl_ack_req = v[6];
	if (v[7] > rl->rl_ack_tok && v[7] <= rl->rl_cum_tok)
		rl->rl_ack_tok = v[7];
	rl->rl_synced = now;
	ttl = fl.f_conf->fc_lease_ttl_ms;
	rl->rl_until = rs->rs_sent + ttl -
	    (RATE_MARGIN_MS < ttl / 4 ? RATE_MARGIN_MS : ttl / 4);
	if (rs->rs_want_req > v[0] || rs->rs_want_tok > v[1]) {
		rl->rl_short_at = now;
		fl.f_stats.fs_short++;
	} else
		rl->rl_short_at = 0;
done:
	free(rs);
	fleet_synced();
}

static void
rate_send(struct policy_rate_lease *rl, int64_t inflight, int64_t want_req,
    int64_t want_tok, int64_t now)
{
	struct rate_sync *rs;
	const char *argv[17];
	char *kh = NULL, *ke = NULL, *kb = NULL;
	char n[13][24];
	int i;

	xasprintf(&kh, "%sr:%s", fl.f_conf->fc_prefix, rl->rl_key);
	xasprintf(&ke, "%sre:%s", fl.f_conf->fc_prefix, rl->rl_key);
	xasprintf(&kb, "%srb:%s", fl.f_conf->fc_prefix, rl->rl_key);
	snprintf(n[0], sizeof(n[0]), "%" PRIu64, ++fl.f_seq);
	snprintf(n[1], sizeof(n[1]), "%" PRId64, now);
	snprintf(n[2], sizeof(n[2]), "%" PRId64, fl.f_conf->fc_lease_ttl_ms);
	snprintf(n[3], sizeof(n[3]), "%" PRId64, fl.f_started);
	snprintf(n[4], sizeof(n[4]), "%" PRId64, rl->rl_rpm);
	snprintf(n[5], sizeof(n[5]), "%" PRId64, rl->rl_tpm);
	snprintf(n[6], sizeof(n[6]), "%" PRId64, rl->rl_cum_req);
	snprintf(n[7], sizeof(n[7]), "%" PRId64, rl->rl_cum_tok);
	snprintf(n[8], sizeof(n[8]), "%" PRId64,
	    inflight < 0 ? (int64_t)0 : inflight);
	snprintf(n[9], sizeof(n[9]), "%" PRId64, want_req);
	snprintf(n[10], sizeof(n[10]), "%" PRId64, want_tok);
	snprintf(n[11], sizeof(n[11]), "%" PRId64, rl->rl_width);
	snprintf(n[12], sizeof(n[12]), "%" PRId64, rl->rl_slots);
	argv[0] = kh;
	argv[1] = ke;
	argv[2] = kb;
	argv[3] = fl.f_conf->fc_instance;
	for (i = 0; i < 13; i++)
		argv[4 + i] = n[i];
	rs = xcalloc(1, sizeof(*rs));
	rs->rs_rl = rl;
	rs->rs_sent = now;
	rs->rs_want_req = want_req;
	rs->rs_want_tok = want_tok;
	if (rconn_eval(fl.f_conn, FLEET_SCRIPT_RATE, rate_cb, rs, 3, 17, argv,
		NULL) == 0) {
		rl->rl_busy = 1;
		fl.f_busy++;
		if (want_req > rl->rl_req || want_tok > rl->rl_tok)
			fl.f_stats.fs_topups++;
		/* What this sync gives back is gone from now on: calls
		 * admitted before its answer must fit what stays. */
		if (want_req < rl->rl_req)
			rl->rl_req = want_req;
		if (want_tok < rl->rl_tok)
			rl->rl_tok = want_tok > inflight ? want_tok : inflight;
		rl->rl_want_req = rl->rl_want_tok = 0;
		rl->rl_peek = 0; /* its answer brings the fleet's spend */
	} else
		free(rs);
	free(kh);
	free(ke);
	free(kb);
}

/* Headroom of one count: demand, at least two, at most limit / 10. */
static int64_t
rate_headroom(int64_t demand, int64_t period, int64_t limit)
{
	int64_t head = demand > period ? demand : period, most;

	if (head < 2)
		head = 2;
	most = limit / 10 > 1 ? limit / 10 : 1;
	return (head < most ? head : most);
}

/* One rate entry of a pass: send its sync if one is due. */
static void
rate_one(struct policy_rate_lease *rl, int64_t inflight, void *arg)
{
	int64_t now = *(int64_t *)arg, ur, ut, wr, wt, ttl;
	int idle, due;

	if (!fl.f_up) {
		/* Each instance keeps to its share of the limits alone. */
		rl->rl_degraded = 1;
		rl->rl_share = (int64_t)(fl.f_alive > 0 ? fl.f_alive : 1);
		return;
	}
	if (rl->rl_degraded) {
		/* Back: sync before the leases are used again. */
		rl->rl_degraded = 0;
		rl->rl_until = 0;
		rl->rl_synced = 0;
	}
	if (rl->rl_busy || (rl->rl_rpm == 0 && rl->rl_tpm == 0))
		return;
	ttl = fl.f_conf->fc_lease_ttl_ms;
	ur = rl->rl_cum_req - rl->rl_ack_req;
	ut = rl->rl_cum_tok - rl->rl_ack_tok;
	if (now - rl->rl_demand_at >= RATE_DEMAND_MS) {
		rl->rl_demand_req = rl->rl_cum_req - rl->rl_dcum_req;
		rl->rl_demand_tok = rl->rl_cum_tok - rl->rl_dcum_tok;
		rl->rl_dcum_req = rl->rl_cum_req;
		rl->rl_dcum_tok = rl->rl_cum_tok;
		rl->rl_demand_at = now;
	}
	idle = now - rl->rl_used >= RATE_IDLE_MS;
	wr = wt = 0;
	if (rl->rl_rpm > 0) {
		wr = ur +
		    (idle ? 0
			  : rate_headroom(rl->rl_demand_req,
				rl->rl_cum_req - rl->rl_dcum_req, rl->rl_rpm));
		if (rl->rl_want_req > wr)
			wr = rl->rl_want_req;
	}
	if (rl->rl_tpm > 0) {
		wt = inflight + ut +
		    (idle ? 0
			    : rl->rl_rolling
			    ? lease_headroom(rl->rl_demand_tok,
				  rl->rl_cum_tok - rl->rl_dcum_tok,
				  rl->rl_worst)
			    : rate_headroom(rl->rl_demand_tok,
				  rl->rl_cum_tok - rl->rl_dcum_tok,
				  rl->rl_tpm));
		if (rl->rl_want_tok > wt)
			wt = rl->rl_want_tok;
	}
	due = rl->rl_peek ||
	    ((rl->rl_want_req > 0 || rl->rl_want_tok > 0) &&
		(rl->rl_short_at == 0 ||
		    now - rl->rl_short_at >= RATE_RETRY_MS)) ||
	    ((ur > 0 || ut > 0) && now - rl->rl_synced >= RATE_REPORT_MS) ||
	    ((rl->rl_req > 0 || rl->rl_tok > 0) &&
		rl->rl_until - now < ttl / 2) ||
	    (idle && (rl->rl_req > ur || rl->rl_tok > inflight + ut) &&
		now - rl->rl_synced >= RATE_REPORT_MS);
	if (due)
		rate_send(rl, inflight, wr, wt, now);
}

/* Send every rate sync that is due at now. */
void
rate_pass(int64_t now)
{
	if (fl.f_pc != NULL)
		policy_rate_leases_each(fl.f_pc, rate_one, &now);
}

/* Leaving the fleet: report every count and hold no lease. */
static void
rate_leave_one(struct policy_rate_lease *rl, int64_t inflight, void *arg)
{
	int64_t now = *(int64_t *)arg;

	if (rl->rl_busy ||
	    (rl->rl_req == 0 && rl->rl_tok == 0 &&
		rl->rl_cum_req == rl->rl_ack_req &&
		rl->rl_cum_tok == rl->rl_ack_tok))
		return;
	rate_send(rl, inflight, 0, 0, now);
}

void
rate_leave(int64_t now)
{
	if (fl.f_pc != NULL)
		policy_rate_leases_each(fl.f_pc, rate_leave_one, &now);
}

static void
rate_json_one(struct policy_rate_lease *rl, int64_t inflight, void *arg)
{
	cJSON *arr = ((void **)arg)[0], *o;
	int64_t now = *(int64_t *)((void **)arg)[1];

	if (rl->rl_req == 0 && rl->rl_tok == 0 &&
	    rl->rl_cum_req == rl->rl_ack_req &&
	    rl->rl_cum_tok == rl->rl_ack_tok && inflight == 0)
		return;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "scope", rl->rl_key);
	if (rl->rl_rolling) {
		/* A rolling budget: money, as "leases" writes it. */
		if (rl->rl_tpm > 0)
			fleet_json_money(o, "cap", rl->rl_tpm);
		fleet_json_money(o, "lease", rl->rl_tok);
		fleet_json_money(o, "in_flight", inflight);
		fleet_json_money(
		    o, "unreported", rl->rl_cum_tok - rl->rl_ack_tok);
		fleet_json_money(o, "fleet_spent", rl->rl_used_tok);
		fleet_json_money(o, "fleet_leased", rl->rl_leased_tok);
		if (rl->rl_synced > 0)
			cJSON_AddNumberToObject(
			    o, "synced_ms_ago", (double)(now - rl->rl_synced));
		cJSON_AddItemToArray(((void **)arg)[2], o);
		return;
	}
	if (rl->rl_rpm > 0) {
		cJSON_AddNumberToObject(
		    o, "requests_per_minute", (double)rl->rl_rpm);
		cJSON_AddNumberToObject(o, "request_lease", (double)rl->rl_req);
		cJSON_AddNumberToObject(o, "requests_unreported",
		    (double)(rl->rl_cum_req - rl->rl_ack_req));
		cJSON_AddNumberToObject(
		    o, "fleet_requests", (double)rl->rl_used_req);
		cJSON_AddNumberToObject(
		    o, "fleet_requests_leased", (double)rl->rl_leased_req);
	}
	if (rl->rl_tpm > 0) {
		cJSON_AddNumberToObject(
		    o, "tokens_per_minute", (double)rl->rl_tpm);
		cJSON_AddNumberToObject(o, "token_lease", (double)rl->rl_tok);
		cJSON_AddNumberToObject(
		    o, "tokens_in_flight", (double)inflight);
		cJSON_AddNumberToObject(o, "tokens_unreported",
		    (double)(rl->rl_cum_tok - rl->rl_ack_tok));
		cJSON_AddNumberToObject(
		    o, "fleet_tokens", (double)rl->rl_used_tok);
		cJSON_AddNumberToObject(
		    o, "fleet_tokens_leased", (double)rl->rl_leased_tok);
	}
	if (rl->rl_synced > 0)
		cJSON_AddNumberToObject(
		    o, "synced_ms_ago", (double)(now - rl->rl_synced));
	cJSON_AddItemToArray(arr, o);
}

/*
 * GET /v1/fleet's "rate_leases": the rate-limit scopes holding or owing
 * something; fleet figures are the last minute as Redis last answered.
 * Rolling budgets go into budgets, GET /v1/fleet's "leases".
 */
cJSON *
rate_json(int64_t now, cJSON *budgets)
{
	cJSON *arr = cJSON_CreateArray();
	void *args[3] = {arr, &now, budgets};

	if (fl.f_pc != NULL)
		policy_rate_leases_each(fl.f_pc, rate_json_one, args);
	return (arr);
}
