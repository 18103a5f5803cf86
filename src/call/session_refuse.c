/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How a session refuses a call, every refusal through session_refuse: the
 * request id it is answered and recorded under, the status, headers and
 * provider-shaped body, the refused row. Above it, the wording of the
 * refusals that say more than a sentence: the policies' (docs/operations.md's
 * refusal table, with the tollgate object of reason, policy, scope, limit,
 * spent, reserved and reset, the rate-limit headers each SDK reads and
 * Gemini's google.rpc details) and the kills'. Also the budget headers of
 * an allowed call. The decisions are session.c's, session_policy.c's and
 * session_breakers.c's; this file only words and answers them.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/config.h"
#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/reply.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "session_int.h"

#define RETRY_AFTER_MAX_S 60 /* both Stainless SDKs honour up to this */

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

/*
 * Refuse the call: the one way tollgate answers a call it will not
 * forward. reason is the refusal's code (se_refusal: the log line, the
 * metrics label, the row's refusal_reason, and the body's OpenAI code
 * unless rf says another); flags say what else the refusal does
 * (REFUSE_*); rf, which may be NULL, what its answer says beyond the
 * message fmt. The caller closes the session.
 */
void
session_refuse(struct session *se, int status, const char *reason, int flags,
    const struct refusal *rf, const char *fmt, ...)
{
	struct hdrs own = {0}, *hs;
	const char *allow;
	char *msg;
	cJSON *root;
	va_list ap;

	se->se_refusal = reason;
	/* Before the body is built: it names the request id. */
	if (flags & REFUSE_OWN_ID)
		session_refusal_id(se);
	va_start(ap, fmt);
	if (xvasprintf(&msg, fmt, ap) == -1)
		fatalx("%s: xvasprintf", __func__);
	va_end(ap);
	hs = rf != NULL && rf->rf_hdrs != NULL ? rf->rf_hdrs : &own;
	if (flags & REFUSE_NO_RETRY)
		add_hdr(hs, "x-should-retry", "false");
	if (status == 405) {
		allow = se->se_route.rt_endpoint == EP_MODELS ? "GET" : "POST";
		add_hdr(hs, "Allow", allow);
	}
	if (flags & REFUSE_RETRY_SOON)
		add_hdr(hs, "retry-after", "1");
	root = reply_error_json(se->se_route.rt_family, status,
	    rf != NULL && rf->rf_code != NULL ? rf->rf_code : reason,
	    rf != NULL ? rf->rf_type : NULL, msg, se->se_reqid);
	free(msg);
	if (rf != NULL && rf->rf_dress != NULL)
		rf->rf_dress(se, root, rf->rf_arg);
	session_reply(se, status, hs, reply_json_take(root));
	if (flags & REFUSE_RECORD)
		session_record_refusal(se, status, reason);
}

/* "policy" or "policy (tenant=acme, team=x)", for messages. */
void
session_scope_label(char *buf, size_t len, const struct policy_scope *sc)
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
 * Dollars for a person to read: exact, with trailing zeros cut down to
 * cents ("0.20", "0.163845").
 */
void
session_usd(char *buf, size_t len, int64_t nusd)
{
	char *dot;
	size_t n;

	usd_format(buf, len, nusd);
	if ((dot = strchr(buf, '.')) == NULL)
		return;
	n = strlen(buf);
	while (n > (size_t)(dot - buf) + 3 && buf[n - 1] == '0')
		buf[--n] = '\0';
}

/*
 * "the $1.00 daily cap of policy 'P' (team=x)", for messages: the cap,
 * its window and whose it is.
 */
void
session_cap_label(char *buf, size_t len, const struct policy_scope *sc)
{
	char label[512], limit[32], win[32];
	const char *adj;

	session_scope_label(label, sizeof(label), sc);
	session_usd(limit, sizeof(limit), sc->sc_limit);
	adj = "";
	win[0] = '\0';
	if (sc->sc_policy != NULL) {
		switch (sc->sc_policy->po_window.pw_kind) {
		case POLICY_WIN_DAY:
			adj = "daily ";
			break;
		case POLICY_WIN_WEEK:
			adj = "weekly ";
			break;
		case POLICY_WIN_MONTH:
			adj = "monthly ";
			break;
		case POLICY_WIN_TOTAL:
			adj = "total ";
			break;
		case POLICY_WIN_ROLLING:
			policy_window_name(
			    &sc->sc_policy->po_window, win, sizeof(win));
			break;
		}
	}
	snprintf(buf, len, "the $%s %scap%s%s of policy %s", limit, adj,
	    win[0] != '\0' ? " per rolling " : "", win, label);
}

/* The bound a client sets on this route's output, for advice. */
static const char *
bound_name(const struct session *se)
{
	switch (se->se_route.rt_endpoint) {
	case EP_RESPONSES:
		return ("max_output_tokens");
	case EP_GEMINI_GENERATE:
	case EP_GEMINI_STREAM:
		return ("generationConfig.maxOutputTokens");
	default:
		return ("max_tokens");
	}
}

/*
 * What a hard cap refusal says: either the call alone does not fit in
 * what is left, or nothing is left. Never "budget exhausted" when the
 * budget is not: a call with no output bound can be refused on a cap
 * nobody has spent from.
 */
static void
cap_message(
    struct session *se, const struct policy_decision *pd, char *msg, size_t len)
{
	const struct policy_scope *sc = &pd->pd_scope;
	const struct policy *po = sc->sc_policy;
	char cap[640], spent[32], resv[32], worst[32], left[32], held[160];
	int64_t room;

	session_cap_label(cap, sizeof(cap), sc);
	session_usd(spent, sizeof(spent), sc->sc_spent);
	session_usd(resv, sizeof(resv), sc->sc_reserved);
	session_usd(worst, sizeof(worst), pd->pd_worst_nusd);
	room = sc->sc_limit - sc->sc_spent - sc->sc_reserved;
	if (room <= 0) {
		snprintf(msg, len,
		    "%s is %s ($%s spent, $%s reserved by calls in flight)",
		    cap, sc->sc_reserved > 0 ? "used up" : "spent", spent,
		    resv);
		return;
	}
	session_usd(left, sizeof(left), room);
	held[0] = '\0';
	if (sc->sc_spent > 0 || sc->sc_reserved > 0)
		snprintf(held, sizeof(held),
		    " ($%s spent, $%s reserved by calls in flight)", spent,
		    resv);
	if (po != NULL && po->po_clamp_min != -1)
		snprintf(msg, len,
		    "this call's worst case $%s exceeds the $%s left of "
		    "%s%s, even with %s lowered to the policy's "
		    "clamp.min_output_tokens (%lld)",
		    worst, left, cap, held, bound_name(se),
		    (long long)po->po_clamp_min);
	else
		snprintf(msg, len,
		    "this call's worst case $%s exceeds the $%s left of "
		    "%s%s; set %s%s or enable clamp",
		    worst, left, cap, held,
		    se->se_ci.ci_max_output >= 0 ? "a lower " : "",
		    bound_name(se));
}

/*
 * The tollgate object of a refusal body (docs/internals/proxy.md, Refusals): reason,
 * policy, scope, limit, spent, reserved, reset_at. sc may be NULL when no
 * budget is involved; name then overrides the reason's name.
 */
void
session_add_tollgate(cJSON *root, enum policy_reason reason,
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

/* A call's token worst case as a refusal says it. */
static const char *
worst_tokens(char *buf, size_t len, const struct policy_decision *pd)
{
	if (pd->pd_worst_tokens >= POLICY_TOKENS_UNBOUNDED)
		snprintf(buf, len,
		    "this call has no output bound and its model no known "
		    "ceiling, so it only runs when no other tokens are in "
		    "use");
	else
		snprintf(buf, len, "this call may use up to %" PRId64 " tokens",
		    pd->pd_worst_tokens);
	return (buf);
}

/* What a policy refusal's body says beyond its message. */
struct policy_words {
	const struct policy_decision *pw_pd;
	int pw_status;
	const char *pw_label;
	const char *pw_msg;
	long pw_retry_s;
};

/* Gemini's details where they apply, then the tollgate object. */
static void
policy_dress(struct session *se, cJSON *root, const void *arg)
{
	const struct policy_words *pw = arg;
	const struct policy_decision *pd = pw->pw_pd;

	if (se->se_route.rt_family == FAMILY_GEMINI &&
	    (pd->pd_reason == POLICY_HARD_CAP || pw->pw_status == 429))
		add_gemini_details(root, pd->pd_reason, pw->pw_label,
		    pw->pw_msg, pw->pw_retry_s);
	session_add_tollgate(
	    root, pd->pd_reason, &pd->pd_scope, pd->pd_worst_nusd, NULL, NULL);
}

/*
 * Answer a refused call: status, headers and body as docs/operations.md's refusal
 * table says, in the family's error shape with the tollgate object; then
 * record the refused row.
 */
void
session_refuse_policy(
    struct session *se, const struct policy_decision *pd, const char *model)
{
	const struct policy_scope *sc = &pd->pd_scope;
	enum api_family fam = se->se_route.rt_family;
	struct hdrs hs = {0};
	struct policy_words pw;
	struct refusal rf;
	const char *code, *type = NULL, *reason;
	char label[512], msg[1024], reset[64], buf[160];
	long retry_s = 0;
	size_t n;
	int status, flags = REFUSE_RECORD | REFUSE_OWN_ID;

	reason = policy_reason_name(pd->pd_reason);
	session_scope_label(label, sizeof(label), sc);
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
		flags |= REFUSE_NO_RETRY;
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
		cap_message(se, pd, msg, sizeof(msg));
		if (reset[0] != '\0') {
			n = strlen(msg);
			snprintf(msg + n, sizeof(msg) - n, "; it resets at %s",
			    reset);
		}
		flags |= REFUSE_NO_RETRY;
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
		if (pd->pd_reason == POLICY_RATE_TOKENS)
			snprintf(msg, sizeof(msg),
			    "the tokens-per-minute limit of policy %s is "
			    "reached: %s; %" PRId64 " of the %" PRId64
			    " tokens/min are in use or "
			    "reserved; retry in %ld s",
			    label, worst_tokens(buf, sizeof(buf), pd),
			    sc->sc_spent, sc->sc_limit, retry_s);
		else
			snprintf(msg, sizeof(msg),
			    "%s of policy %s reached (limit %" PRId64
			    "); retry in %ld s",
			    pd->pd_reason == POLICY_CONCURRENCY
				? "the concurrent-call limit"
				: "the requests-per-minute limit",
			    label, sc->sc_limit, retry_s);
		add_rate_headers(se, &hs, pd->pd_reason, sc, retry_s);
		break;
	}
	pw.pw_pd = pd;
	pw.pw_status = status;
	pw.pw_label = label;
	pw.pw_msg = msg;
	pw.pw_retry_s = retry_s;
	rf.rf_code = code;
	rf.rf_type = type;
	rf.rf_hdrs = &hs;
	rf.rf_dress = policy_dress;
	rf.rf_arg = &pw;
	session_refuse(se, status, reason, flags, &rf, "%s", msg);
	session_note(se, "refused by policy %s: %s", label, reason);
}

/* What a kill's refusal adds to its body. */
struct kill_words {
	const char *kw_id;
	const char *kw_policy;
};

/* The tollgate object, with the kill's id if any. */
static void
kill_dress(struct session *se, cJSON *root, const void *arg)
{
	const struct kill_words *kw = arg;
	cJSON *tg;

	(void)se;
	session_add_tollgate(root, POLICY_KILLED, NULL, 0, NULL, kw->kw_policy);
	if (kw->kw_id != NULL &&
	    (tg = cJSON_GetObjectItemCaseSensitive(root, "tollgate")) != NULL)
		cJSON_AddStringToObject(tg, "kill_id", kw->kw_id);
}

/*
 * 403 for a call a kill stops before it has a response: the family's
 * permission shape, x-should-retry: false, the tollgate object with the
 * kill's id (kill_id, or NULL for a policy's kill or a stop that has
 * none) and the breaker's policy (or NULL). flags are session_refuse's:
 * a call refused at admission is recorded now under its own id; one
 * whose row is already in the ledger is not.
 */
void
session_refuse_kill(struct session *se, int flags, const char *why,
    const char *kill_id, const char *policy)
{
	struct kill_words kw = {kill_id, policy};
	struct refusal rf = {0};

	rf.rf_dress = kill_dress;
	rf.rf_arg = &kw;
	session_refuse(
	    se, 403, "killed", flags | REFUSE_NO_RETRY, &rf, "%s", why);
}

/* The budget headers of an allowed call: its tightest capped scope. */
void
session_budget_headers(struct session *se, const struct policy_decision *pd)
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
