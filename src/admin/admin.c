/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API's requests: a listener_ops plugged into its own listener,
 * the checks every request passes, the endpoints, and the one log line per
 * request. The checks run in this order as soon as the head is read,
 * before any body is: Host allowlist (421), Origin or a cross-site
 * Sec-Fetch-Site (403; an Origin naming this very listener, as a browser
 * sends on the dashboard's own POST and DELETE, is let through), the
 * bearer token (401; GET /healthz and the dashboard's files are exempt:
 * they hold no data), then the route (404, 405), the POST content type
 * (415) and the body size (413). A loopback listener is still reachable
 * from a browser on this machine, through DNS rebinding or a form posting
 * text/plain, and these checks are what stops that (docs/api.md,
 * Security). No response ever carries an Access-Control-* header, so no
 * browser page can read one.
 * A route is an exact path, or a prefix ending in '/' that takes one more
 * path segment (DELETE /v1/kills/{id}).
 *
 * The token is never kept: only its SHA-256. A presented token is hashed
 * and the digests compared with CRYPTO_memcmp, so neither the content nor
 * the length of the expected token shows in the timing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "tollgate/admin.h"
#include "tollgate/config.h"
#include "tollgate/alerts.h"
#include "tollgate/cache.h"
#include "tollgate/external.h"
#include "tollgate/fleet.h"
#include "tollgate/http.h"
#include "tollgate/kills.h"
#include "tollgate/ledger.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/reply.h"
#include "tollgate/server.h"
#include "tollgate/session.h"
#include "tollgate/ship.h"
#include "tollgate/util.h"

#include "admin_int.h"

enum admin_ep_id {
	EP_HEALTHZ,
	EP_METRICS,
	EP_SPEND,
	EP_CALLS,
	EP_BUDGETS,
	EP_FLEET,
	EP_ALERTS,
	EP_RELOAD,
	EP_KILLS_LIST,
	EP_KILLS_ADD,
	EP_KILL_DELETE,
	EP_USAGE,
	EP_INTENT,
	EP_EXTEND,
	EP_EXTENSIONS_LIST,
	EP_EXTENSION_REVOKE,
	EP_DASHBOARD,
};

static void ep_healthz(struct admin_req *);
static void ep_metrics(struct admin_req *);
static void ep_query(struct admin_req *);
static void ep_budgets(struct admin_req *);
static void ep_fleet(struct admin_req *);
static void ep_reload(struct admin_req *);

/*
 * The routes: a path and the one method it answers. A path may appear
 * once per method. A prefix route's path ends in '/' and matches that
 * prefix followed by one non-empty segment without another '/'. An open
 * route needs no token: liveness, and the dashboard's page, script and
 * style, which hold no data (the page asks for the token, dashboard.c).
 */
static const struct admin_ep {
	enum admin_ep_id e_id;
	const char *e_path;
	const char *e_method;
	void (*e_run)(struct admin_req *);
	int e_prefix;
	int e_open;
} admin_eps[] = {
    {EP_HEALTHZ, "/healthz", "GET", ep_healthz, 0, 1},
    {EP_METRICS, "/metrics", "GET", ep_metrics, 0, 0},
    {EP_SPEND, "/v1/spend", "GET", ep_query, 0, 0},
    {EP_CALLS, "/v1/calls", "GET", ep_query, 0, 0},
    {EP_BUDGETS, "/v1/budgets", "GET", ep_budgets, 0, 0},
    {EP_FLEET, "/v1/fleet", "GET", ep_fleet, 0, 0},
    {EP_ALERTS, "/v1/alerts", "GET", ep_query, 0, 0},
    {EP_RELOAD, "/v1/reload", "POST", ep_reload, 0, 0},
    {EP_KILLS_LIST, "/v1/kills", "GET", ep_kills_list, 0, 0},
    {EP_KILLS_ADD, "/v1/kills", "POST", ep_kills_add, 0, 0},
    {EP_KILL_DELETE, ADMIN_KILLS_PREFIX, "DELETE", ep_kill_delete, 1, 0},
    {EP_DASHBOARD, "/", "GET", ep_dashboard, 0, 1},
    {EP_DASHBOARD, "/dashboard", "GET", ep_dashboard, 0, 1},
    {EP_DASHBOARD, "/dashboard.js", "GET", ep_dashboard, 0, 1},
    {EP_DASHBOARD, "/dashboard.css", "GET", ep_dashboard, 0, 1},
    {EP_USAGE, "/v1/usage", "POST", ep_usage, 0, 0},
    {EP_INTENT, ADMIN_INTENTS_PREFIX, "GET", ep_intent, 1, 0},
    {EP_EXTEND, "/v1/budgets/extend", "POST", ep_extend, 0, 0},
    {EP_EXTENSIONS_LIST, "/v1/budgets/extensions", "GET", ep_extensions_list, 0,
	0},
    {EP_EXTENSION_REVOKE, ADMIN_EXTENSIONS_PREFIX, "DELETE",
	ep_extension_revoke, 1, 0},
};

#define ADMIN_HOSTS 4

static struct listener *ad_listener;
static struct event_base *ad_base; /* admin_reply_recorded's timers */
static char *ad_config_path; /* what POST /v1/reload reloads */
static unsigned char ad_token_sha[32];
static int ad_has_token;
static char ad_hosts[ADMIN_HOSTS][80]; /* Host values accepted */
static size_t ad_nhosts;

static void
sha256(const void *data, size_t len, unsigned char out[32])
{
	unsigned int n = 32;

	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
		fatalx("%s: EVP_Digest", __func__);
}

static void
admin_log(unsigned long long id, const char *method, const char *path,
    int status, long long t0_us, const char *what)
{
	log_info("admin: conn %llu: %s %s status=%d ms=%lld%s%s", id, method,
	    path, status, (monotime_us() - t0_us) / 1000,
	    what != NULL ? " reason=" : "", what != NULL ? what : "");
}

static void
admin_req_free(struct admin_req *ar)
{
	/* Still waiting for the ledger: it answers no one now. */
	ledger_ticket_cancel(ar->ar_ticket);
	external_cancel(ar->ar_ext);
	if (ar->ar_timer != NULL)
		event_free(ar->ar_timer);
	cJSON_Delete(ar->ar_doc);
	if (ar->ar_started)
		http_request_free(ar->ar_req);
	free(ar);
}

/*
 * Answer on conn co: JSON unless ctype says otherwise, never cached, with
 * one optional extra header and the optional set extra.
 */
static void
admin_send_hdrs(struct conn *co, int status, const char *ctype,
    const char *body, size_t len, const char *hname, const char *hval,
    const struct hdrs *extra)
{
	struct hdrs hs = {0};
	size_t i;

	hdrs_add(&hs, "Cache-Control", 13, "no-store", 8);
	hdrs_add(&hs, "X-Content-Type-Options", 22, "nosniff", 7);
	if (hname != NULL)
		hdrs_add(&hs, hname, strlen(hname), hval, strlen(hval));
	for (i = 0; extra != NULL && i < extra->hs_n; i++)
		hdrs_add(&hs, extra->hs_v[i].h_name,
		    strlen(extra->hs_v[i].h_name), extra->hs_v[i].h_value,
		    strlen(extra->hs_v[i].h_value));
	conn_reply_full(co, status, &hs,
	    ctype != NULL ? ctype : "application/json", body, len);
	hdrs_clear(&hs);
}

static void
admin_send(struct conn *co, int status, const char *ctype, const char *body,
    size_t len, const char *hname, const char *hval)
{
	admin_send_hdrs(co, status, ctype, body, len, hname, hval, NULL);
}

/* Answer ar, log it and free it. */
static void
admin_reply(struct admin_req *ar, int status, const char *ctype,
    const char *body, size_t len, const char *hname, const char *hval)
{
	admin_send(ar->ar_conn, status, ctype, body, len, hname, hval);
	admin_log(ar->ar_conn_id, ar->ar_method, ar->ar_path, status,
	    ar->ar_t0_us, NULL);
	admin_req_free(ar);
}

/* Answer ar with body, of type ctype, and the headers in extra. */
void
admin_reply_page(struct admin_req *ar, const char *ctype, const void *body,
    size_t len, const struct hdrs *extra)
{
	admin_send_hdrs(ar->ar_conn, 200, ctype, body, len, NULL, NULL, extra);
	admin_log(ar->ar_conn_id, ar->ar_method, ar->ar_path, 200, ar->ar_t0_us,
	    NULL);
	admin_req_free(ar);
}

/* Answer ar with doc (which is freed). */
void
admin_reply_json(struct admin_req *ar, int status, cJSON *doc)
{
	char *s = reply_json_take(doc);

	admin_reply(ar, status, NULL, s, strlen(s), NULL, NULL);
	free(s);
}

/*
 * The change ar answers for is committed to the ledger (LEDGER_OK), or
 * was not in time or at all: the answer says which. 201 or 200 (the
 * status asked for) with "recorded": true; 202 with "recorded": false
 * when the change is in force but a restart before the ledger has it
 * would lose it (it goes on being retried).
 */
static void
recorded_answer(struct admin_req *ar, int recorded)
{
	cJSON *doc = ar->ar_doc;

	ar->ar_doc = NULL;
	ar->ar_ticket = NULL;
	cJSON_AddBoolToObject(doc, "recorded", recorded);
	admin_reply_json(ar, recorded ? ar->ar_status : 202, doc);
}

static void
recorded_cb(void *arg, enum ledger_result res)
{
	recorded_answer(arg, res == LEDGER_OK);
}

static void
recorded_timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct admin_req *ar = arg;

	(void)fd;
	(void)ev;
	ledger_ticket_cancel(ar->ar_ticket);
	recorded_answer(ar, 0);
}

/*
 * Answer ar with doc (which is taken) once everything queued to the
 * ledger so far, the change ar made among it, is committed: status with
 * "recorded": true, or 202 with "recorded": false after
 * ADMIN_RECORD_WAIT_MS, or at once when the ledger cannot take it.
 */
void
admin_reply_recorded(struct admin_req *ar, int status, cJSON *doc)
{
	ar->ar_doc = doc;
	ar->ar_status = status;
	if ((ar->ar_ticket = ledger_barrier(recorded_cb, ar)) == NULL) {
		recorded_answer(ar, 0);
		return;
	}
	admin_deadline(ar, recorded_timeout_cb);
}

/*
 * Run cb on ar after ADMIN_RECORD_WAIT_MS unless admin_deadline_clear
 * comes first: a bound on how long an answer waits for the ledger.
 */
void
admin_deadline(struct admin_req *ar, void (*cb)(evutil_socket_t, short, void *))
{
	struct timeval tv = {
	    ADMIN_RECORD_WAIT_MS / 1000, (ADMIN_RECORD_WAIT_MS % 1000) * 1000};

	if (ar->ar_timer != NULL)
		event_free(ar->ar_timer);
	if ((ar->ar_timer = evtimer_new(ad_base, cb, ar)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	evtimer_add(ar->ar_timer, &tv);
}

/* Stop what admin_deadline started. */
void
admin_deadline_clear(struct admin_req *ar)
{
	if (ar->ar_timer != NULL)
		event_free(ar->ar_timer);
	ar->ar_timer = NULL;
}

/* {"error":msg[,"parameter":param]} as a string to free. */
static char *
admin_error_body(const char *msg, const char *param)
{
	cJSON *doc;

	if ((doc = cJSON_CreateObject()) == NULL ||
	    cJSON_AddStringToObject(doc, "error", msg) == NULL ||
	    (param != NULL &&
		cJSON_AddStringToObject(doc, "parameter", param) == NULL))
		fatalx("%s: cJSON", __func__);
	return (reply_json_take(doc));
}

void
admin_reply_error(struct admin_req *ar, int status, const char *msg,
    const char *param, const char *hname, const char *hval)
{
	char *body = admin_error_body(msg, param);

	admin_reply(ar, status, NULL, body, strlen(body), hname, hval);
	free(body);
}

/* Refuse from lo_head: the request stays the connection's. */
static void
admin_refuse(struct conn *co, const struct http_request *req, const char *path,
    long long t0, int status, const char *msg, const char *hname,
    const char *hval)
{
	char *body = admin_error_body(msg, NULL);

	admin_send(co, status, NULL, body, strlen(body), hname, hval);
	admin_log(conn_id(co), req->hr_method, path, status, t0, NULL);
	free(body);
}

/* Does the request path (the target's first n bytes) take route ep? */
static int
admin_path_is(const struct admin_ep *ep, const char *target, size_t n)
{
	size_t len = strlen(ep->e_path);

	if (!ep->e_prefix)
		return (len == n && memcmp(ep->e_path, target, n) == 0);
	return (n > len && memcmp(ep->e_path, target, len) == 0 &&
	    memchr(target + len, '/', n - len) == NULL);
}

/* Is the Host header one of the allowed names for this listener? */
static int
admin_host_ok(const struct http_request *req)
{
	const char *h;
	size_t i;

	if (hdrs_count(&req->hr_headers, "host") != 1 ||
	    (h = hdrs_get(&req->hr_headers, "host")) == NULL)
		return (0);
	for (i = 0; i < ad_nhosts; i++)
		if (strcasecmp(h, ad_hosts[i]) == 0)
			return (1);
	return (0);
}

/*
 * Does a browser say this request comes from another site? An Origin is
 * let through only when it is exactly this listener as the request names
 * it ("http://" and the Host, which the allowlist has passed): a browser
 * sends that on a POST or DELETE from the dashboard that this listener
 * served, and no page of another origin can send it.
 */
static int
admin_cross_origin(const struct http_request *req)
{
	const char *s, *h;

	if ((s = hdrs_get(&req->hr_headers, "origin")) != NULL) {
		h = hdrs_get(&req->hr_headers, "host");
		if (hdrs_count(&req->hr_headers, "origin") != 1 || h == NULL ||
		    strncmp(s, "http://", 7) != 0 || strcasecmp(s + 7, h) != 0)
			return (1);
	}
	if ((s = hdrs_get(&req->hr_headers, "sec-fetch-site")) != NULL &&
	    (strcasecmp(s, "cross-site") == 0 ||
		strcasecmp(s, "same-site") == 0))
		return (1);
	return (0);
}

/* Authorization: Bearer <token>, compared by digest in constant time. */
static int
admin_token_ok(const struct http_request *req)
{
	unsigned char got[32];
	const char *s;

	if (!ad_has_token)
		return (1);
	if (hdrs_count(&req->hr_headers, "authorization") != 1 ||
	    (s = hdrs_get(&req->hr_headers, "authorization")) == NULL ||
	    strncasecmp(s, "Bearer ", 7) != 0)
		return (0);
	s += 7;
	while (*s == ' ')
		s++;
	sha256(s, strlen(s), got);
	return (CRYPTO_memcmp(got, ad_token_sha, sizeof(got)) == 0);
}

/* Is the request's Content-Type application/json (parameters allowed)? */
static int
admin_is_json(const struct http_request *req)
{
	const char *s = hdrs_get(&req->hr_headers, "content-type");
	size_t n;

	if (s == NULL || hdrs_count(&req->hr_headers, "content-type") != 1)
		return (0);
	n = strcspn(s, "; \t");
	return (n == 16 && strncasecmp(s, "application/json", 16) == 0);
}

static void *
admin_head_op(struct conn *co, struct http_request *req)
{
	const struct admin_ep *ep = NULL, *any = NULL;
	struct admin_req *ar;
	long long t0 = monotime_us();
	const char *target = req->hr_target;
	char path[96], allow[64];
	size_t i, n;

	n = strcspn(target, "?");
	log_escape(path, sizeof(path), target, n);
	allow[0] = '\0';
	for (i = 0; i < nitems(admin_eps); i++) {
		if (!admin_path_is(&admin_eps[i], target, n))
			continue;
		any = &admin_eps[i];
		if (strcmp(req->hr_method, admin_eps[i].e_method) == 0)
			ep = &admin_eps[i];
		snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow),
		    "%s%s", allow[0] != '\0' ? ", " : "",
		    admin_eps[i].e_method);
	}
	if (!admin_host_ok(req)) {
		admin_refuse(
		    co, req, path, t0, 421, "misdirected request", NULL, NULL);
		return (NULL);
	}
	if (admin_cross_origin(req)) {
		admin_refuse(co, req, path, t0, 403,
		    "cross-origin requests are refused", NULL, NULL);
		return (NULL);
	}
	if (!(ep != NULL && ep->e_open) && !admin_token_ok(req)) {
		admin_refuse(co, req, path, t0, 401,
		    "missing or wrong bearer token", "WWW-Authenticate",
		    "Bearer");
		return (NULL);
	}
	if (any == NULL) {
		admin_refuse(co, req, path, t0, 404, "not found", NULL, NULL);
		return (NULL);
	}
	if (ep == NULL) {
		admin_refuse(co, req, path, t0, 405, "method not allowed",
		    "Allow", allow);
		return (NULL);
	}
	if (strcmp(req->hr_method, "POST") == 0 && !admin_is_json(req)) {
		admin_refuse(co, req, path, t0, 415,
		    "Content-Type must be application/json", NULL, NULL);
		return (NULL);
	}
	if (req->hr_content_length > ADMIN_BODY_MAX) {
		admin_refuse(
		    co, req, path, t0, 413, "body too large", NULL, NULL);
		return (NULL);
	}
	ar = xcalloc(1, sizeof(*ar));
	ar->ar_conn = co;
	ar->ar_conn_id = conn_id(co);
	ar->ar_req = req;
	ar->ar_ep = (int)(ep - admin_eps);
	ar->ar_t0_us = t0;
	snprintf(ar->ar_method, sizeof(ar->ar_method), "%s", req->hr_method);
	snprintf(ar->ar_path, sizeof(ar->ar_path), "%s", path);
	return (ar);
}

static void
admin_start_op(void *arg)
{
	struct admin_req *ar = arg;

	ar->ar_started = 1;
	admin_eps[ar->ar_ep].e_run(ar);
}

static void
admin_gone_op(void *arg)
{
	struct admin_req *ar = arg;

	/* A query still on the reader is dropped when it comes back. */
	if (ar->ar_job != NULL)
		ar->ar_job->aj_req = NULL;
	admin_log(ar->ar_conn_id, ar->ar_method, ar->ar_path, 0, ar->ar_t0_us,
	    "connection_closed");
	admin_req_free(ar);
}

static void
admin_drained_op(void *arg)
{
	(void)arg; /* every answer is written whole */
}

static const struct listener_ops admin_ops = {
    admin_head_op,
    admin_start_op,
    admin_gone_op,
    admin_drained_op,
};

/* Endpoints. */

/*
 * Liveness: 200 while the process answers. The body says when the ledger
 * refuses calls (its writes fail, or its file is lost): tollgate gets
 * over either by itself, and a restart while the file is lost would drop
 * what only the open file holds, so neither is a reason to restart it.
 * With ledger.ship: it also says how shipping goes; shipping is not on
 * the call path, so PostgreSQL being away leaves the status "ok".
 */
static void
ep_healthz(struct admin_req *ar)
{
	struct ledger_stats ls;
	struct ship_stats ss;
	const char *ledger = NULL, *reason = NULL;
	cJSON *doc, *ship;
	int fleet_down;

	ledger_stats(&ls);
	if (ls.ls_lost != LEDGER_LOST_NONE) {
		ledger = "lost";
		reason = ledger_lost_name(ls.ls_lost);
	} else if (ls.ls_failing)
		ledger = "failing";
	fleet_down = fleet_state() == FLEET_DOWN;
	ship_stats(&ss);
	if ((doc = cJSON_CreateObject()) == NULL ||
	    cJSON_AddStringToObject(doc, "status",
		ledger != NULL || fleet_down ? "degraded" : "ok") == NULL ||
	    (ledger != NULL &&
		cJSON_AddStringToObject(doc, "ledger", ledger) == NULL) ||
	    (reason != NULL &&
		cJSON_AddStringToObject(doc, "reason", reason) == NULL) ||
	    (fleet_down &&
		cJSON_AddStringToObject(doc, "fleet", "degraded") == NULL))
		fatalx("%s: cJSON", __func__);
	if (ss.sh_state != SHIP_OFF) {
		if ((ship = cJSON_AddObjectToObject(doc, "ship")) == NULL ||
		    cJSON_AddStringToObject(
			ship, "state", ship_state_name(ss.sh_state)) == NULL ||
		    cJSON_AddNumberToObject(
			ship, "backlog", (double)ss.sh_backlog) == NULL ||
		    cJSON_AddNumberToObject(ship, "lag_seconds",
			(double)ss.sh_lag_ms / 1000.0) == NULL ||
		    (ss.sh_last_error[0] != '\0'
			    ? cJSON_AddStringToObject(
				  ship, "last_error", ss.sh_last_error)
			    : cJSON_AddNullToObject(ship, "last_error")) ==
			NULL)
			fatalx("%s: cJSON", __func__);
	}
	admin_reply_json(ar, 200, doc);
}

/*
 * Read what /metrics shows but the metrics module does not count: the
 * calls in flight, the kills in force, the ledger's counters (all zero
 * while the ledger is closed) and the fleet's (all zero without one). The
 * metrics module sits below sessions, kills, the ledger's owner and the
 * fleet, so it is told these rather than asking.
 */
void
admin_metrics_gauges(struct metrics_gauges *g)
{
	memset(g, 0, sizeof(*g));
	g->mg_calls_in_flight = (uint64_t)session_count();
	g->mg_kills_live = (uint64_t)kills_count();
	ledger_stats(&g->mg_ledger);
	fleet_get_stats(&g->mg_fleet);
	ship_stats(&g->mg_ship);
	cache_get_stats(&g->mg_cache);
	admin_process_stats(&g->mg_process);
}

static void
ep_metrics(struct admin_req *ar)
{
	struct metrics_gauges g;
	struct evbuffer *b;
	size_t len;

	if ((b = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	admin_metrics_gauges(&g);
	admin_budget_gauges(&g);
	metrics_render(b, &g);
	admin_budget_gauges_free(&g);
	len = evbuffer_get_length(b);
	admin_reply(ar, 200, "text/plain; version=0.0.4; charset=utf-8",
	    (const char *)evbuffer_pullup(b, -1), len, NULL, NULL);
	evbuffer_free(b);
}

/*
 * GET /v1/spend, /v1/calls and /v1/alerts: queue the query for a reader
 * thread (fleet=1: the fleet's, or a 400 without ledger.ship:).
 */
static void
ep_query(struct admin_req *ar)
{
	struct admin_job *job;
	struct spend_query sq;
	const char *q = strchr(ar->ar_req->hr_target, '?');
	char *cause = NULL;

	job = xcalloc(1, sizeof(*job));
	job->aj_kind = admin_eps[ar->ar_ep].e_id == EP_SPEND ? SPEND_KIND_SPEND
							     : SPEND_KIND_CALLS;
	if (admin_eps[ar->ar_ep].e_id == EP_ALERTS)
		job->aj_run = alerts_answer;
	job->aj_query = xstrdup(q != NULL ? q + 1 : "");
	job->aj_req = ar;
	if (job->aj_run == NULL) {
		/*
		 * Which reader: a look at the parameters (bounded, cheap). A
		 * bad query goes to the local reader, which names the fault.
		 */
		if (spend_query_parse(
			&sq, job->aj_kind, job->aj_query, &cause) == 0) {
			job->aj_fleet = sq.sq_fleet;
			spend_query_free(&sq);
		}
		free(cause);
	}
	/* Taken now: the reader must not touch the loop's table. */
	if (job->aj_run == NULL && !job->aj_fleet &&
	    job->aj_kind == SPEND_KIND_CALLS)
		job->aj_nopen = ledger_unwritten(&job->aj_open);
	if (job->aj_fleet && !reader_has_fleet()) {
		admin_job_free(job);
		admin_reply_error(ar, 400,
		    "fleet: this tollgate has no ledger.ship: section, so no "
		    "fleet ledger to ask",
		    "fleet", NULL, NULL);
		return;
	}
	if (reader_submit(job) == -1) {
		admin_job_free(job);
		admin_reply_error(ar, 503, "too many queries in progress", NULL,
		    "Retry-After", "1");
		return;
	}
	ar->ar_job = job;
}

/* Free a job and its output. */
void
admin_job_free(struct admin_job *job)
{
	spend_out_free(&job->aj_out);
	free(job->aj_query);
	free(job->aj_intent);
	free(job->aj_open);
	free(job->aj_err);
	free(job);
}

/*
 * The parameter a spend_answer 400 is about: its messages are "NAME: why"
 * or "unknown parameter 'NAME'". Returns it in buf, or NULL.
 */
static const char *
admin_bad_param(const char *cause, char *buf, size_t size)
{
	static const char *quoted[] = {
	    "unknown parameter '",
	    "bad percent-encoding in a parameter name '",
	};
	const char *s = NULL;
	size_t i, n;

	for (i = 0; i < nitems(quoted); i++) {
		if (strncmp(cause, quoted[i], strlen(quoted[i])) == 0) {
			s = cause + strlen(quoted[i]);
			n = strcspn(s, "'");
			break;
		}
	}
	if (s == NULL) {
		s = cause;
		n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_");
		if (n == 0 || s[n] != ':')
			return (NULL);
	}
	if (n >= size)
		n = size - 1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return (buf);
}

/* A job is back from the reader: answer its client, if still there. */
void
admin_job_done(struct admin_job *job)
{
	struct admin_req *ar = job->aj_req;
	const char *why = job->aj_err != NULL ? job->aj_err : "query failed";
	char param[80];

	if (ar == NULL) {
		log_debug("%s: the client left; result dropped", __func__);
		admin_job_free(job);
		return;
	}
	ar->ar_job = NULL;
	switch (job->aj_status) {
	case 200:
		admin_reply(ar, 200, job->aj_ctype, job->aj_out.so_buf,
		    job->aj_out.so_len, NULL, NULL);
		break;
	case 400:
		admin_reply_error(ar, 400, why,
		    admin_bad_param(why, param, sizeof(param)), NULL, NULL);
		break;
	case 413:
		admin_reply_error(ar, 413, why, NULL, NULL, NULL);
		break;
	case 503:
		/* The fleet ledger: why it failed is the operator's answer. */
		log_warnx("admin: conn %llu: %s: %s", ar->ar_conn_id,
		    ar->ar_path, why);
		admin_reply_error(ar, 503, why, NULL, "Retry-After", "1");
		break;
	default:
		log_warnx("admin: conn %llu: %s: %s", ar->ar_conn_id,
		    ar->ar_path, why);
		admin_reply_error(ar, 503, "the ledger query failed", NULL,
		    "Retry-After", "1");
		break;
	}
	admin_job_free(job);
}

/* Budgets fill in with the policy engine; the shape is final. */
static void
ep_budgets(struct admin_req *ar)
{
	admin_reply_json(ar, 200, admin_budgets());
}

/*
 * GET /v1/fleet: this instance, its Redis, every instance's heartbeat and
 * the leases held here; {"enabled": false} on an instance without fleet:.
 */
static void
ep_fleet(struct admin_req *ar)
{
	admin_reply_json(ar, 200, fleet_json());
}

/*
 * POST /v1/reload: what SIGHUP does, with the errors in the answer (or,
 * when it is done, the warnings). A refused reload keeps the running
 * configuration.
 */
static void
ep_reload(struct admin_req *ar)
{
	struct cfgerrs errs = {0};
	struct evbuffer *b = ar->ar_req->hr_body;
	cJSON *doc, *list;
	size_t i, len = b != NULL ? evbuffer_get_length(b) : 0;

	if (len > 0) {
		cJSON *body = cJSON_ParseWithLength(
		    (const char *)evbuffer_pullup(b, -1), len);

		if (body == NULL) {
			admin_reply_error(
			    ar, 400, "the body is not JSON", NULL, NULL, NULL);
			return;
		}
		cJSON_Delete(body);
	}
	if ((doc = cJSON_CreateObject()) == NULL)
		fatalx("%s: cJSON", __func__);
	if (server_reload(ad_config_path, &errs) == 0) {
		cJSON_AddStringToObject(doc, "status", "reloaded");
		cJSON_AddNumberToObject(
		    doc, "generation", (double)server_generation());
		if (errs.ce_n > 0 &&
		    (list = cJSON_AddArrayToObject(doc, "warnings")) == NULL)
			fatalx("%s: cJSON", __func__);
		for (i = 0; i < errs.ce_n; i++)
			cJSON_AddItemToArray(
			    list, cJSON_CreateString(errs.ce_msgs[i]));
		cfgerrs_free(&errs);
		admin_reply_json(ar, 200, doc);
		return;
	}
	cJSON_AddStringToObject(doc, "status", "refused");
	if ((list = cJSON_AddArrayToObject(doc, "errors")) == NULL)
		fatalx("%s: cJSON", __func__);
	for (i = 0; i < errs.ce_n; i++)
		cJSON_AddItemToArray(list, cJSON_CreateString(errs.ce_msgs[i]));
	if (errs.ce_n == 0)
		cJSON_AddItemToArray(list,
		    cJSON_CreateString("the configuration cannot be loaded"));
	cfgerrs_free(&errs);
	admin_reply_json(ar, 422, doc);
}

/* Start and stop. */

static void
admin_add_host(const char *host, int port)
{
	if (ad_nhosts >= ADMIN_HOSTS)
		return;
	if (strchr(host, ':') != NULL)
		snprintf(ad_hosts[ad_nhosts], sizeof(ad_hosts[0]), "[%s]:%d",
		    host, port);
	else
		snprintf(ad_hosts[ad_nhosts], sizeof(ad_hosts[0]), "%s:%d",
		    host, port);
	ad_nhosts++;
}

/*
 * Start the admin API as cf says: the reader thread on the ledger, then
 * the listener on cf's admin address. config_path is what POST
 * /v1/reload reloads. Returns 0, or -1 after logging why.
 */
int
admin_start(
    struct event_base *base, const struct config *cf, const char *config_path)
{
	char *cause = NULL;
	int port;

	if (reader_start(base, cf->cf_ledger_path, cf->cf_ship, &cause) == -1) {
		log_warnx("admin: ledger %s: %s", cf->cf_ledger_path,
		    cause != NULL ? cause : "cannot open");
		free(cause);
		return (-1);
	}
	ad_base = base;
	admin_process_started();
	ad_listener = listener_new(
	    base, cf->cf_admin_host, cf->cf_admin_port, &admin_ops, "admin");
	if (ad_listener == NULL) {
		reader_stop();
		return (-1);
	}
	/* No per-client limit: the few admin clients are usually all local,
	 * and the cap, the header timeout and shedding bound what a flood
	 * can hold. */
	listener_set_limits(ad_listener, ADMIN_MAX_CONNECTIONS, 0);
	port = listener_port(ad_listener);
	ad_nhosts = 0;
	admin_add_host("127.0.0.1", port);
	admin_add_host("localhost", port);
	admin_add_host("::1", port);
	if (strcmp(cf->cf_admin_host, "127.0.0.1") != 0 &&
	    strcmp(cf->cf_admin_host, "::1") != 0)
		admin_add_host(cf->cf_admin_host, port);
	ad_has_token = cf->cf_admin_token != NULL;
	if (ad_has_token)
		sha256(cf->cf_admin_token, strlen(cf->cf_admin_token),
		    ad_token_sha);
	ad_config_path = xstrdup(config_path);
	if (!ad_has_token)
		log_warnx("admin: no token configured; the admin API is open "
			  "to every local client (set admin.token_env)");
	return (0);
}

/* The port the admin API listens on, or -1 when it is not started. */
int
admin_port(void)
{
	return (ad_listener != NULL ? listener_port(ad_listener) : -1);
}

/*
 * Stop accepting admin connections (SIGTERM). The drain waits for proxied
 * calls only; admin queries still running are cut by admin_stop.
 */
void
admin_drain(void)
{
	listener_drain(ad_listener);
}

/*
 * Close the listener and its connections (queries in flight are dropped),
 * then stop the reader thread.
 */
void
admin_stop(void)
{
	listener_free(ad_listener);
	ad_listener = NULL;
	reader_stop();
	free(ad_config_path);
	ad_config_path = NULL;
	explicit_bzero(ad_token_sha, sizeof(ad_token_sha));
	ad_has_token = 0;
}
