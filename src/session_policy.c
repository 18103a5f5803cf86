/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A call against the cost policies: admission before the ledger row is
 * reserved, the refusal in the provider's own shape, the output bound
 * written into the body when a policy lowers it, the budget headers of an
 * allowed call, and the settlement at close. The decisions themselves are
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
#include <event2/event.h>
#include <openssl/evp.h>

#include "tollgate/alerts.h"
#include "tollgate/breaker.h"
#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/http.h"
#include "tollgate/kills.h"
#include "tollgate/log.h"
#include "tollgate/meter.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/reply.h"
#include "tollgate/session.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "session_int.h"

#define RETRY_AFTER_MAX_S 60 /* both Stainless SDKs honour up to this */
#define FIRED_MAX 16

/* Unix ms as RFC 3339 UTC, or "" for a window that never resets. */
static void
fmt_reset(char *buf, size_t len, int64_t ms)
{
	if (ms == POLICY_NEVER || spend_format_time(ms, buf, len) == -1)
		buf[0] = '\0';
}

static void
add_hdr(struct hdrs *hs, const char *name, const char *value)
{
	hdrs_add(hs, name, strlen(name), value, strlen(value));
}

/* "policy" or "policy (tenant=acme, team=x)", for messages. */
static void
scope_label(char *buf, size_t len, const struct policy_scope *sc)
{
	size_t off;
	int t, first = 1;

	snprintf(buf, len, "'%s'",
	    sc->sc_policy != NULL ? sc->sc_policy->po_name : "-");
	for (t = 0; t < TAG_MAX; t++) {
		if (sc->sc_per[t][0] == '\0')
			continue;
		off = strlen(buf);
		snprintf(buf + off, len - off, "%s%s=%s", first ? " (" : ", ",
		    tag_name(t), sc->sc_per[t]);
		first = 0;
	}
	if (!first) {
		off = strlen(buf);
		snprintf(buf + off, len - off, ")");
	}
}

/*
 * The tollgate object of a refusal body (DESIGN.md, Refusals): reason,
 * policy, scope, limit, spent, reserved, reset_at. sc may be NULL when no
 * budget is involved; name then overrides the reason's name.
 */
static void
add_tollgate(cJSON *root, enum policy_reason reason,
    const struct policy_scope *sc, int64_t worst, const char *name,
    const char *policy)
{
	static const struct policy_scope none = {.sc_reset_at = POLICY_NEVER};
	cJSON *tg, *scope;
	char buf[64];
	int t, money;

	if (sc == NULL)
		sc = &none;
	money = reason == POLICY_HARD_CAP;
	tg = cJSON_AddObjectToObject(root, "tollgate");
	cJSON_AddStringToObject(
	    tg, "reason", name != NULL ? name : policy_reason_name(reason));
	if (sc->sc_policy != NULL)
		cJSON_AddStringToObject(tg, "policy", sc->sc_policy->po_name);
	else if (policy != NULL)
		cJSON_AddStringToObject(tg, "policy", policy);
	else
		cJSON_AddNullToObject(tg, "policy");
	scope = cJSON_AddObjectToObject(tg, "scope");
	for (t = 0; t < TAG_MAX; t++) {
		if (sc->sc_per[t][0] != '\0')
			cJSON_AddStringToObject(
			    scope, tag_name(t), sc->sc_per[t]);
	}
	if (money) {
		usd_format(buf, sizeof(buf), sc->sc_limit);
		cJSON_AddRawToObject(tg, "limit_usd", buf);
		usd_format(buf, sizeof(buf), sc->sc_spent);
		cJSON_AddRawToObject(tg, "spent_usd", buf);
		usd_format(buf, sizeof(buf), sc->sc_reserved);
		cJSON_AddRawToObject(tg, "reserved_usd", buf);
		usd_format(buf, sizeof(buf), worst);
		cJSON_AddRawToObject(tg, "call_worst_case_usd", buf);
	} else {
		cJSON_AddNullToObject(tg, "limit_usd");
		cJSON_AddNullToObject(tg, "spent_usd");
		cJSON_AddNullToObject(tg, "reserved_usd");
	}
	if (reason == POLICY_RATE_REQUESTS || reason == POLICY_RATE_TOKENS ||
	    reason == POLICY_CONCURRENCY) {
		cJSON_AddNumberToObject(tg, "limit", (double)sc->sc_limit);
		cJSON_AddNumberToObject(tg, "current",
		    (double)(reason == POLICY_CONCURRENCY ? sc->sc_reserved
							  : sc->sc_spent));
	}
	fmt_reset(buf, sizeof(buf), sc->sc_reset_at);
	if (buf[0] != '\0' && reason != POLICY_KILLED &&
	    reason != POLICY_MODEL_NOT_ALLOWED)
		cJSON_AddStringToObject(tg, "reset_at", buf);
	else
		cJSON_AddNullToObject(tg, "reset_at");
}

/* Gemini's google.rpc details: QuotaFailure for caps, RetryInfo for rates. */
static void
add_gemini_details(cJSON *root, enum policy_reason reason, const char *label,
    const char *msg, long retry_s)
{
	cJSON *err, *details, *d, *v, *vs;
	char buf[32];

	err = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (err == NULL)
		return;
	if (reason == POLICY_HARD_CAP)
		cJSON_ReplaceItemInObjectCaseSensitive(
		    err, "status", cJSON_CreateString("RESOURCE_EXHAUSTED"));
	details = cJSON_AddArrayToObject(err, "details");
	d = cJSON_CreateObject();
	cJSON_AddItemToArray(details, d);
	if (reason == POLICY_HARD_CAP) {
		cJSON_AddStringToObject(
		    d, "@type", "type.googleapis.com/google.rpc.QuotaFailure");
		vs = cJSON_AddArrayToObject(d, "violations");
		v = cJSON_CreateObject();
		cJSON_AddItemToArray(vs, v);
		cJSON_AddStringToObject(v, "subject", label);
		cJSON_AddStringToObject(v, "description", msg);
	} else {
		cJSON_AddStringToObject(
		    d, "@type", "type.googleapis.com/google.rpc.RetryInfo");
		snprintf(buf, sizeof(buf), "%lds", retry_s);
		cJSON_AddStringToObject(d, "retryDelay", buf);
	}
}

/* The rate-limit headers each family's SDK reads. */
static void
add_rate_headers(struct session *se, struct hdrs *hs, enum policy_reason r,
    const struct policy_scope *sc, long retry_s)
{
	char buf[32], reset[64];
	const char *what = r == POLICY_RATE_TOKENS ? "tokens" : "requests";
	char name[64];

	snprintf(buf, sizeof(buf), "%ld", retry_s);
	add_hdr(hs, "retry-after", buf);
	snprintf(buf, sizeof(buf), "%ld", retry_s * 1000);
	add_hdr(hs, "retry-after-ms", buf);
	if (se->se_route.rt_family == FAMILY_ANTHROPIC) {
		snprintf(
		    name, sizeof(name), "anthropic-ratelimit-%s-limit", what);
		snprintf(buf, sizeof(buf), "%" PRId64, sc->sc_limit);
		add_hdr(hs, name, buf);
		snprintf(name, sizeof(name), "anthropic-ratelimit-%s-remaining",
		    what);
		add_hdr(hs, name, "0");
		spend_format_time(
		    wallclock_ms() + retry_s * 1000, reset, sizeof(reset));
		snprintf(
		    name, sizeof(name), "anthropic-ratelimit-%s-reset", what);
		add_hdr(hs, name, reset);
	} else {
		snprintf(name, sizeof(name), "x-ratelimit-limit-%s", what);
		snprintf(buf, sizeof(buf), "%" PRId64, sc->sc_limit);
		add_hdr(hs, name, buf);
		snprintf(name, sizeof(name), "x-ratelimit-remaining-%s", what);
		add_hdr(hs, name, "0");
		snprintf(name, sizeof(name), "x-ratelimit-reset-%s", what);
		snprintf(buf, sizeof(buf), "%lds", retry_s);
		add_hdr(hs, name, buf);
	}
}

/*
 * Answer a refused call: status, headers and body as DESIGN.md's refusal
 * table says, in the family's error shape with the tollgate object; then
 * record the refused row.
 */
static void
policy_refuse(
    struct session *se, const struct policy_decision *pd, const char *model)
{
	const struct policy_scope *sc = &pd->pd_scope;
	enum api_family fam = se->se_route.rt_family;
	struct hdrs hs = {0};
	const char *code, *type = NULL, *reason;
	char label[512], msg[1024], spent[32], limit[32], resv[32], worst[32];
	char reset[64];
	long retry_s = 0;
	int status;
	cJSON *root;

	reason = policy_reason_name(pd->pd_reason);
	scope_label(label, sizeof(label), sc);
	fmt_reset(reset, sizeof(reset), sc->sc_reset_at);
	switch (pd->pd_reason) {
	case POLICY_KILLED:
		status = 403;
		code = "killed";
		snprintf(msg, sizeof(msg),
		    "calls matching policy %s are stopped%s%s", label,
		    sc->sc_policy != NULL && sc->sc_policy->po_kill_reason
			? ": "
			: "",
		    sc->sc_policy != NULL && sc->sc_policy->po_kill_reason
			? sc->sc_policy->po_kill_reason
			: "");
		add_hdr(&hs, "x-should-retry", "false");
		break;
	case POLICY_MODEL_NOT_ALLOWED:
		status = 400;
		code = "model_not_allowed";
		snprintf(msg, sizeof(msg),
		    "the model '%s' is not allowed by policy %s", model, label);
		break;
	case POLICY_HARD_CAP:
		status = se->se_conf->cf_hard_cap_status;
		code = "insufficient_quota";
		if (fam == FAMILY_OPENAI)
			type = "insufficient_quota";
		else if (fam == FAMILY_ANTHROPIC)
			type = status == 402 ? "billing_error"
					     : "rate_limit_error";
		usd_format(spent, sizeof(spent), sc->sc_spent);
		usd_format(limit, sizeof(limit), sc->sc_limit);
		usd_format(resv, sizeof(resv), sc->sc_reserved);
		usd_format(worst, sizeof(worst), pd->pd_worst_nusd);
		snprintf(msg, sizeof(msg),
		    "budget exhausted for policy %s: spent $%s and reserved "
		    "$%s of $%s; this call could cost up to $%s%s%s",
		    label, spent, resv, limit, worst,
		    reset[0] != '\0' ? "; the budget resets at " : "", reset);
		add_hdr(&hs, "x-should-retry", "false");
		break;
	case POLICY_RATE_REQUESTS:
	case POLICY_RATE_TOKENS:
	case POLICY_CONCURRENCY:
	default:
		status = 429;
		code = "rate_limit_exceeded";
		retry_s = (long)((sc->sc_retry_after_ms + 999) / 1000);
		if (retry_s < 1)
			retry_s = 1;
		if (retry_s > RETRY_AFTER_MAX_S)
			retry_s = RETRY_AFTER_MAX_S;
		snprintf(msg, sizeof(msg),
		    "%s of policy %s reached (limit %" PRId64
		    "); retry in %ld s",
		    pd->pd_reason == POLICY_RATE_TOKENS
			? "the tokens-per-minute limit"
			: pd->pd_reason == POLICY_CONCURRENCY
			? "the concurrent-call limit"
			: "the requests-per-minute limit",
		    label, sc->sc_limit, retry_s);
		add_rate_headers(se, &hs, pd->pd_reason, sc, retry_s);
		break;
	}
	root = reply_error_json(fam, status, code, type, msg, se->se_reqid);
	if (fam == FAMILY_GEMINI &&
	    (pd->pd_reason == POLICY_HARD_CAP || status == 429))
		add_gemini_details(root, pd->pd_reason, label, msg, retry_s);
	add_tollgate(root, pd->pd_reason, sc, pd->pd_worst_nusd, NULL, NULL);
	se->se_refusal = reason;
	session_refusal_id(se);
	session_reply(se, status, &hs, reply_json_take(root));
	session_record_refusal(se, status, reason);
	log_info(
	    "session %llu: refused by policy %s: %s", se->se_id, label, reason);
}

/*
 * 403 for a call a kill stops: the family's permission shape,
 * x-should-retry: false, the tollgate object with the kill's id if any.
 */
static void
refuse_kill(struct session *se, const char *why, const char *kill_id,
    const char *policy)
{
	struct hdrs hs = {0};
	cJSON *root, *tg;

	add_hdr(&hs, "x-should-retry", "false");
	root = reply_error_json(
	    se->se_route.rt_family, 403, "killed", NULL, why, se->se_reqid);
	add_tollgate(root, POLICY_KILLED, NULL, 0, NULL, policy);
	if (kill_id != NULL &&
	    (tg = cJSON_GetObjectItemCaseSensitive(root, "tollgate")) != NULL)
		cJSON_AddStringToObject(tg, "kill_id", kill_id);
	session_reply(se, 403, &hs, reply_json_take(root));
}

/*
 * Answer a call a kill stopped before it had a response: 403 in the
 * family's permission shape, x-should-retry: false, the tollgate object.
 */
void
session_refuse_killed(struct session *se, const char *why)
{
	refuse_kill(se, why, NULL, NULL);
}

/* The budget headers of an allowed call: its tightest capped scope. */
static void
budget_headers(struct session *se, const struct policy_decision *pd)
{
	const struct policy_scope *sc = &pd->pd_scope;
	char buf[64];

	if (sc->sc_policy == NULL)
		return;
	add_hdr(
	    &se->se_hdrs, "x-tollgate-budget-policy", sc->sc_policy->po_name);
	usd_format(buf, sizeof(buf), sc->sc_limit);
	add_hdr(&se->se_hdrs, "x-tollgate-budget-limit-usd", buf);
	usd_format(
	    buf, sizeof(buf), sc->sc_limit - sc->sc_spent - sc->sc_reserved);
	add_hdr(&se->se_hdrs, "x-tollgate-budget-remaining-usd", buf);
	fmt_reset(buf, sizeof(buf), sc->sc_reset_at);
	if (buf[0] != '\0')
		add_hdr(&se->se_hdrs, "x-tollgate-budget-reset", buf);
}

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

/* Does any policy that is enforced (not shadow) match this call? */
static int
enforced_by(const struct policyset *ps, const char *const *attr)
{
	size_t i;

	for (i = 0; i < ps->ps_n; i++)
		if (!ps->ps_pol[i].po_shadow &&
		    policy_matches(&ps->ps_pol[i], attr))
			return (1);
	return (0);
}

/* The body as it will be forwarded. */
static const char *
forward_body(struct session *se, size_t *len)
{
	if (se->se_body != NULL) {
		*len = se->se_bodylen;
		return (se->se_body);
	}
	*len = evbuffer_get_length(se->se_req->hr_body);
	return ((const char *)evbuffer_pullup(se->se_req->hr_body, -1));
}

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
	if (kills_trip(bt, now, &k, &why) == -1) {
		log_warnx("policies: policy '%s': %s breaker tripped (%s) but "
			  "its kill was not made: %s",
		    bt->bt_policy->po_name, bt->bt_kind, bt->bt_evidence, why);
		free(why);
		return (NULL);
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
	se->se_refusal = "killed";
	session_refusal_id(se);
	refuse_kill(se, why, id, policy);
	session_record_refusal(se, 403, "killed");
}

/*
 * A live kill that matches refuses the call, before anything else is
 * looked at. Returns 0, or -1 after refusing.
 */
static int
admit_kills(struct session *se)
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
static int
admit_loop(struct session *se, const struct policyset *ps)
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
	body = forward_body(se, &len);
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

/* Write bound into the body that will be forwarded. */
static int
rewrite_bound(struct session *se, int64_t bound)
{
	const char *body;
	size_t len;
	char *nb;
	size_t nlen;

	if (se->se_body != NULL) {
		body = se->se_body;
		len = se->se_bodylen;
	} else {
		len = evbuffer_get_length(se->se_req->hr_body);
		body = (const char *)evbuffer_pullup(se->se_req->hr_body, -1);
		if (body == NULL)
			return (-1);
	}
	if (meter_set_bound(&se->se_route, body, len, bound, &nb, &nlen) == -1)
		return (-1);
	free(se->se_body);
	se->se_body = nb;
	se->se_bodylen = nlen;
	se->se_ci.ci_max_output = bound;
	return (0);
}

/*
 * Check the call against the policies and reserve its worst case. Returns
 * 0 to go on (the reservation, if any, in se_res), or -1 after answering
 * and recording a refusal.
 */
int
session_admit(struct session *se)
{
	const struct policyset *ps = se->se_conf->cf_policies;
	const struct policy *po;
	struct policy_call pc;
	struct policy_decision pd;
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

	if (admit_kills(se) == -1)
		return (-1);
	if (se->se_price == NULL &&
	    (po = capped_by(ps, se->se_pattr)) != NULL) {
		char *msg;

		se->se_refusal = "unpriced_model";
		session_refusal_id(se);
		struct hdrs hs = {0};
		cJSON *root;

		xasprintf(&msg,
		    "the model '%s' has no price, so the hard cap of policy "
		    "'%s' cannot hold; add it to the price table or set "
		    "unknown_models.price_as",
		    model, po->po_name);
		root = reply_error_json(se->se_route.rt_family, 400,
		    "unpriced_model", NULL, msg, se->se_reqid);
		add_tollgate(
		    root, POLICY_OK, NULL, 0, "unpriced_model", po->po_name);
		session_reply(se, 400, &hs, reply_json_take(root));
		free(msg);
		session_record_refusal(se, 400, "unpriced_model");
		return (-1);
	}

	if (se->se_ci.ci_ambiguous && enforced_by(ps, se->se_pattr)) {
		se->se_refusal = "bad_body";
		session_refusal_id(se);
		session_reply_error(se, 400, "bad_body",
		    "the request body gives a key that decides its cost "
		    "(model, "
		    "stream, n, an output bound, generationConfig) twice or "
		    "with escapes, or uses generation_config; providers and "
		    "tollgate could read different values, so a policy cannot "
		    "bound it. Send each key once, plainly",
		    NULL);
		session_record_refusal(se, 400, "bad_body");
		return (-1);
	}

	memset(&pc, 0, sizeof(pc));
	memcpy(pc.pc_attr, se->se_pattr, sizeof(pc.pc_attr));
	pc.pc_price = se->se_price;
	pc.pc_info = se->se_ci;
	pc.pc_unpriced_nusd = 0;
	policy_admit(ps, enforce_counters(), &pc, se->se_started_ms, &pd);

	if (pd.pd_shadow_reason != POLICY_OK) {
		scope_label(label, sizeof(label), &pd.pd_shadow);
		log_info("session %llu: shadow policy %s would refuse: %s",
		    se->se_id, label, policy_reason_name(pd.pd_shadow_reason));
		metrics_shadow(policy_reason_name(pd.pd_shadow_reason));
	}
	if (pd.pd_verdict == POLICY_REFUSE) {
		policy_refuse(se, &pd, model);
		return (-1);
	}
	se->se_res = pd.pd_res;
	se->se_res_capped = policy_res_capped(se->se_res);
	if (admit_loop(se, ps) == -1) {
		policy_release(se->se_res, se->se_started_ms);
		se->se_res = NULL;
		return (-1);
	}
	if (pd.pd_out_bound >= 0 &&
	    pd.pd_out_bound != se->se_ci.ci_max_output) {
		if (rewrite_bound(se, pd.pd_out_bound) == -1) {
			policy_release(se->se_res, se->se_started_ms);
			se->se_res = NULL;
			se->se_refusal = "bad_body";
			session_refusal_id(se);
			session_reply_error(se, 400, "bad_body",
			    "a policy bounds this call's output, and the "
			    "request body is not a JSON object the bound can "
			    "be written into",
			    NULL);
			session_record_refusal(se, 400, "bad_body");
			return (-1);
		}
		if (pd.pd_verdict == POLICY_CLAMP) {
			snprintf(buf, sizeof(buf), "%" PRId64, pd.pd_out_bound);
			add_hdr(
			    &se->se_hdrs, "x-tollgate-clamped-max-tokens", buf);
			log_info(
			    "session %llu: output bound lowered to %" PRId64
			    " tokens to fit the budget",
			    se->se_id, pd.pd_out_bound);
		}
	}
	if (se->se_price != NULL)
		se->se_reserved_nusd = pd.pd_worst_nusd;
	budget_headers(se, &pd);
	return (0);
}

/*
 * The velocity and error_spike breakers see every call that went
 * upstream: what it cost and whether it failed (an error status from the
 * provider, or no answer).
 */
static void
settle_breakers(
    struct session *se, enum call_status status, int64_t cost, int64_t now)
{
	struct breaker_trip bt[8];
	int is_error;
	size_t i, n;

	if (!se->se_row_committed || se->se_state != SE_FORWARDING)
		return;
	/* The provider's failures, never the caller's own 4xx. */
	is_error = status == CALL_UPSTREAM_ERROR || se->se_status >= 500 ||
	    se->se_status == 429;
	memset(bt, 0, sizeof(bt));
	n = breaker_settle(se->se_conf->cf_policies, enforce_breakers(),
	    se->se_pattr, cost, is_error, now, bt, nitems(bt));
	for (i = 0; i < n; i++) {
		trip(&bt[i], now);
		breaker_trip_clear(&bt[i]);
	}
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
	settle_breakers(se, status, cost, now);
	if (cost <= 0)
		return;
	n = policy_fired(
	    ps, enforce_counters(), se->se_pattr, now, fired, nitems(fired));
	for (i = 0; i < n; i++)
		alerts_threshold(&fired[i], se->se_pattr, now);
}

/*
 * A capped stream is being relayed: has it already cost more than its
 * reservation? Then grow the reservation to what it has cost, so other
 * calls see it; if no budget has room for that, the cap is reached
 * mid-stream and the call is ended (DESIGN.md, Refusals). Output that is
 * only estimated from the text relayed counts two thirds (meter_so_far).
 * Returns 0 to go on, or -1 when the call was ended (se is gone).
 */
int
session_check_overrun(struct session *se)
{
	struct policy_scope sc;
	struct usage u;
	char label[512], spent[32], limit[32], msg[768];
	int64_t cost;

	if (se->se_res == NULL || !se->se_res_capped || se->se_meter == NULL)
		return (0);
	meter_so_far(se->se_meter, &u);
	cost = session_cost(se, &u);
	if (cost <= se->se_reserved_nusd)
		return (0);
	if (policy_grow(se->se_res, cost, wallclock_ms(), &sc) == 0) {
		se->se_reserved_nusd = cost;
		return (0);
	}
	scope_label(label, sizeof(label), &sc);
	usd_format(spent, sizeof(spent), sc.sc_spent + sc.sc_reserved);
	usd_format(limit, sizeof(limit), sc.sc_limit);
	snprintf(msg, sizeof(msg),
	    "budget exhausted for policy %s while this call was streaming: "
	    "$%s of $%s spent or held",
	    label, spent, limit);
	log_info("session %llu: %s", se->se_id, msg);
	session_stop_capped(se, msg);
	return (-1);
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

/*
 * Calls in flight a new kill must end. They are ended from the event loop
 * a moment later, never from inside the hook: the hook runs wherever a
 * kill is made, which may be a session's close (a breaker tripping at its
 * settle) or its admission, and ending other calls there would close
 * sessions under a walk of the session list (and their settles could trip
 * more breakers, and so on). The next loop turn is well within a second.
 */
struct pending_stop {
	char *ps_match[POLICY_ATTR_MAX];
	char *ps_why;
	struct pending_stop *ps_next;
};

static struct pending_stop *stops_head, **stops_tail = &stops_head;
static struct event *stops_ev;

static void
stops_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct pending_stop *p;
	int a;

	(void)fd;
	(void)ev;
	(void)arg;
	/* Stops made while these run queue behind them for another turn. */
	while ((p = stops_head) != NULL) {
		if ((stops_head = p->ps_next) == NULL)
			stops_tail = &stops_head;
		session_stop_matching(
		    (const char *const *)p->ps_match, p->ps_why);
		for (a = 0; a < POLICY_ATTR_MAX; a++)
			free(p->ps_match[a]);
		free(p->ps_why);
		free(p);
	}
}

/*
 * A kill was added (the admin API, a breaker): raise its alert, and end
 * the calls in flight it matches from the next loop turn.
 */
static void
kill_hook(const struct kill *k, void *arg)
{
	struct pending_stop *p;
	struct alert al;
	char why[KILL_REASON_MAX + 64], policy[POLICY_NAME_MAX + 1];
	const char *kind = "kill", *src, *q;
	size_t n;
	int t;

	(void)arg;
	snprintf(why, sizeof(why), "calls matching kill %s are stopped: %s",
	    k->k_id, k->k_reason);
	memset(&al, 0, sizeof(al));
	policy[0] = '\0';
	if (strncmp(k->k_source, "breaker:", 8) == 0) {
		/* breaker:<policy>:<kind> */
		kind = "breaker";
		src = k->k_source + 8;
		if ((q = strrchr(src, ':')) != NULL) {
			n = (size_t)(q - src) < sizeof(policy) - 1
			    ? (size_t)(q - src)
			    : sizeof(policy) - 1;
			memcpy(policy, src, n);
			policy[n] = '\0';
		}
	}
	al.al_kind = kind;
	al.al_policy = policy[0] != '\0' ? policy : NULL;
	for (t = 0; t < TAG_MAX; t++)
		al.al_tags[t] = k->k_match[t];
	al.al_window_start = -1;
	al.al_reset_at = k->k_expires_ms;
	al.al_threshold_nusd = -1;
	al.al_cap_nusd = -1;
	al.al_message = why;
	al.al_at_ms = k->k_created_ms;
	alerts_fire(&al);

	p = xcalloc(1, sizeof(*p));
	for (t = 0; t < POLICY_ATTR_MAX; t++)
		if (k->k_match[t] != NULL)
			p->ps_match[t] = xstrdup(k->k_match[t]);
	p->ps_why = xstrdup(why);
	*stops_tail = p;
	stops_tail = &p->ps_next;
	if (stops_ev != NULL)
		event_active(stops_ev, EV_TIMEOUT, 1);
}

/* Kills end the calls in flight they match (called once at start-up). */
void
session_policy_setup(struct event_base *base)
{
	stops_ev = event_new(base, -1, 0, stops_cb, NULL);
	kills_set_hook(kill_hook, NULL);
}

/* At exit: what is still queued is dropped (no call is left to stop). */
void
session_policy_shutdown(void)
{
	struct pending_stop *p;
	int a;

	while ((p = stops_head) != NULL) {
		stops_head = p->ps_next;
		for (a = 0; a < POLICY_ATTR_MAX; a++)
			free(p->ps_match[a]);
		free(p->ps_why);
		free(p);
	}
	stops_tail = &stops_head;
	if (stops_ev != NULL)
		event_free(stops_ev);
	stops_ev = NULL;
	kills_set_hook(NULL, NULL);
}
