/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How calls in flight are stopped: by a kill (made through the admin API,
 * by a tripped breaker, or by a reload that marks a policy killed) or by a
 * budget that runs out while a stream is relayed.
 *
 *   hook     every kill added raises an alert (unless it was learnt
 *            from the fleet: its maker raised it) and, from the next
 *            loop turn, stops the calls in flight it matches (kill_hook,
 *            session_stop_setup sets it).
 *   stop     an unanswered call gets 403, a running stream its provider's
 *            in-stream error event (at an event boundary) and a clean end,
 *            anything else is cut (session_stop, session_stop_capped).
 *
 * Stops never run inside the hook: a kill can be made inside a session's
 * close or admission, and stopping other sessions there would close them
 * (and settle them, which may trip more breakers) under a walk of the
 * session list.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "tollgate/alerts.h"
#include "tollgate/config.h"
#include "tollgate/http.h"
#include "tollgate/kills.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/meter.h"
#include "tollgate/policy.h"
#include "tollgate/reply.h"
#include "tollgate/session.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "session_int.h"

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
	char said[KILL_REASON_MAX + 192], until[SPEND_TIME_MAX + 8];
	const char *kind = "kill", *src, *q, *ev;
	size_t n;
	int t;

	(void)arg;
	snprintf(why, sizeof(why), "calls matching kill %s are stopped: %s",
	    k->k_id, k->k_reason);
	memset(&al, 0, sizeof(al));
	policy[0] = '\0';
	al.al_message = why;
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
			/*
			 * The alert says which breaker tripped on what
			 * (the evidence: counts, window, spend if any),
			 * then what it stopped and for how long.
			 */
			ev = k->k_reason;
			n = strlen(q + 1);
			if (strncmp(ev, q + 1, n) == 0 && ev[n] == ':' &&
			    ev[n + 1] == ' ')
				ev += n + 2;
			until[0] = '\0';
			if (k->k_expires_ms != POLICY_NEVER &&
			    spend_format_time(k->k_expires_ms, until + 7,
				sizeof(until) - 7) == 0)
				memcpy(until, " until ", 7);
			snprintf(said, sizeof(said),
			    "the %s breaker tripped: %s; calls matching kill "
			    "%s are stopped%s",
			    q + 1, ev, k->k_id, until);
			al.al_message = said;
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
	al.al_at_ms = k->k_created_ms;
	/* One alert per kill: a kill learnt from the fleet was alerted by
	 * the instance that made it. */
	if (!k->k_learnt)
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
session_stop_setup(struct event_base *base)
{
	stops_ev = event_new(base, -1, 0, stops_cb, NULL);
	kills_set_hook(kill_hook, NULL);
}

/* At exit: what is still queued is dropped (no call is left to stop). */
void
session_stop_shutdown(void)
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

/*
 * The in-stream error event that ends a stream the client has already
 * started reading (docs/internals/wire.md, Error shapes), or NULL where there is none: the
 * API has no such event (Gemini), or the client has half an event and
 * anything appended would land inside it. Allocated.
 */
static char *
stop_frame(const struct session *se, int cap, const char *msg)
{
	const char *code = cap ? "insufficient_quota" : "killed";
	cJSON *root, *err;
	char *json, *frame, *text;

	if (se->se_meter == NULL || !meter_at_event_boundary(se->se_meter))
		return (NULL);
	if (se->se_route.rt_family != FAMILY_ANTHROPIC &&
	    se->se_route.rt_family != FAMILY_OPENAI)
		return (NULL);
	xasprintf(&text, "tollgate: %s", msg);
	root = cJSON_CreateObject();
	if (se->se_route.rt_family == FAMILY_ANTHROPIC) {
		cJSON_AddStringToObject(root, "type", "error");
		err = cJSON_AddObjectToObject(root, "error");
		cJSON_AddStringToObject(
		    err, "type", cap ? "rate_limit_error" : "permission_error");
		cJSON_AddStringToObject(err, "message", text);
	} else if (se->se_route.rt_endpoint == EP_RESPONSES) {
		cJSON_AddStringToObject(root, "type", "error");
		cJSON_AddStringToObject(root, "code", code);
		cJSON_AddStringToObject(root, "message", text);
		cJSON_AddNullToObject(root, "param");
		cJSON_AddNumberToObject(root, "sequence_number",
		    (double)meter_next_sequence(se->se_meter));
	} else {
		err = cJSON_AddObjectToObject(root, "error");
		cJSON_AddStringToObject(err, "message", text);
		cJSON_AddStringToObject(err, "type",
		    cap ? "insufficient_quota" : "permission_error");
		cJSON_AddStringToObject(err, "code", code);
		cJSON_AddNullToObject(err, "param");
	}
	free(text);
	json = reply_json_take(root);
	if (se->se_route.rt_family == FAMILY_ANTHROPIC ||
	    se->se_route.rt_endpoint == EP_RESPONSES)
		xasprintf(&frame, "event: error\ndata: %s\n\n", json);
	else
		xasprintf(&frame, "data: %s\n\n", json);
	free(json);
	return (frame);
}

/*
 * End the response of a call being stopped: its error event and a clean
 * end where the stream allows one, else a cut the client cannot take for
 * a complete response.
 */
static void
stop_response(struct session *se, int cap, const char *why)
{
	char *frame;

	if (se->se_conn == NULL)
		return;
	frame = se->se_ci.ci_stream ? stop_frame(se, cap, why) : NULL;
	if (frame != NULL) {
		conn_reply_data(se->se_conn, frame, strlen(frame));
		conn_reply_end(se->se_conn);
		free(frame);
	} else
		conn_reply_abort(se->se_conn);
	se->se_conn = NULL;
}

/*
 * A stream whose budget ran out while it was relayed (it cost more than
 * its reservation and no budget had room for more): end it with the
 * provider's in-stream quota error. Settled as killed (tollgate ended
 * it) with refusal_reason hard_cap, charged for what it used.
 */
void
session_stop_capped(struct session *se, const char *why)
{
	se->se_refusal = "hard_cap";
	se->se_cut = 1;
	stop_response(se, 1, why);
	session_close(se, CALL_KILLED, "hard_cap");
}

/*
 * End a call tollgate has decided to stop (a kill): a call not yet
 * answered gets a 403 in its provider's shape; a stream already running
 * gets its provider's in-stream error event and then its end; anything
 * else is cut. The row is settled as killed with refusal_reason
 * "killed", charged for what the call used (its reservation if it was
 * sent and nothing came back). se is closed after: inert until it is
 * freed on the next loop turn.
 */
void
session_stop(struct session *se, const char *why)
{
	if (se->se_state == SE_RESERVING) {
		/* reserved_cb ends it, after the caller's frame is gone. */
		if (se->se_stop == NULL)
			se->se_stop = xstrdup(why);
		return;
	}
	/* Its row is in the ledger already: session_close settles it. */
	if (se->se_state != SE_FORWARDING) {
		session_refuse_kill(se, 0, why, NULL, NULL);
		session_close(se, CALL_REFUSED, "killed");
		return;
	}
	se->se_cut = 1;
	if (se->se_conn != NULL && !se->se_replied)
		session_refuse_kill(se, 0, why, NULL, NULL);
	else {
		se->se_refusal = "killed";
		stop_response(se, 0, why);
	}
	session_close(se, CALL_KILLED, "killed");
}

/*
 * Stop every call in progress whose attributes match the globs (NULL:
 * any; an unset attribute matches as ""), as a kill switch does. Returns
 * how many were stopped.
 */
size_t
session_stop_matching(const char *const *match, const char *why)
{
	struct session *se, *next;
	size_t n = 0;
	int a;

	/* The reason goes into the call's note, which its close line
	 * escapes: a kill_reason holding a newline cannot start a log line
	 * of its own. */
	for (se = session_first(); se != NULL; se = next) {
		next = se->se_next;
		/* A call being admitted is checked against the kills
		 * there; one being closed is past stopping. */
		if (!se->se_started || !se->se_route.rt_metered ||
		    se->se_stop != NULL || se->se_closed ||
		    se->se_state == SE_ROUTED)
			continue;
		for (a = 0; a < POLICY_ATTR_MAX; a++) {
			if (match[a] != NULL &&
			    !policy_glob(match[a],
				se->se_pattr[a] != NULL ? se->se_pattr[a] : ""))
				break;
		}
		if (a < POLICY_ATTR_MAX)
			continue;
		session_note(se, "stopped: %s", why);
		session_stop(se, why);
		n++;
	}
	return (n);
}

/*
 * A new configuration is in force: stop the calls in progress that a
 * policy it marks killed matches.
 */
void
session_apply_kills(const struct config *cf)
{
	const struct policy *po;
	char why[256];
	size_t i;

	for (i = 0; cf->cf_policies != NULL && i < cf->cf_policies->ps_n; i++) {
		po = &cf->cf_policies->ps_pol[i];
		if (!po->po_killed || po->po_shadow)
			continue;
		snprintf(why, sizeof(why),
		    "calls matching policy '%s' are "
		    "stopped%s%s",
		    po->po_name, po->po_kill_reason != NULL ? ": " : "",
		    po->po_kill_reason != NULL ? po->po_kill_reason : "");
		session_stop_matching((const char *const *)po->po_match, why);
	}
}
