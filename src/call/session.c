/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One proxied call, from the moment its head is read to its ledger row and
 * its log line.
 *
 *   head      session_new: route (404/405) and attribute (400 for a bad or
 *             missing tag) before the body is read.
 *   body      session_start: the provider adapter reads the request (model,
 *             stream, output bound, n, input estimate; OpenAI streams get
 *             include_usage), the model is priced (or refused, or recorded
 *             unpriced, as the config says) and its worst case computed.
 *   reserve   the call's row with its reservation goes to the ledger's
 *             journal with the loop turn's one write; nothing goes
 *             upstream until the ledger says the write has returned (and,
 *             under durability: power, is synced; a request id the client
 *             chose is first checked against the ledger). A journal that
 *             cannot be written or a writer far behind is a 503 (fail
 *             closed); a repeated request id is a 409.
 *   forward   relay.c sends the request upstream with the client's
 *             headers filtered (hop-by-hop, X-Tollgate-*, Host, framing
 *             and encoding removed; provider credentials passed untouched,
 *             or replaced by the upstream's own key for calls made with a
 *             tollgate key, calls a routing rule switched upstream and
 *             attempts failed over to a rule's fallback, session_retry.c).
 *   relay     relay.c passes response bytes through the meter, which reads
 *             usage from them and hands back what the client receives (the
 *             same bytes, or whole events without the injected usage), and
 *             pauses the transfer while the client's output is above the
 *             high watermark.
 *   settle    session_close: the meter's usage is priced in nano-USD and
 *             the row settled (ok, error, client_closed, upstream_error):
 *             the journal and then SQLite get its one row, final. One log
 *             line is written, and everything is released.
 *
 * A session whose client leaves while its reservation is being written
 * lives on until the ledger answers, so a reservation written is settled
 * and never left in flight.
 *
 * A closed session's struct outlives its close by one loop turn: callers up
 * the stack (libcurl's callbacks, the listener, timers, the stop code) may
 * still hold it, so session_close leaves it closed and inert on a dead
 * list, and session_reap_cb frees that list from the loop once they have
 * all returned (tmux's server_client_unref, Redis's freeClientAsync).
 */
#include <sys/random.h>

#if defined(TG_MIMALLOC)
#include <mimalloc.h>
#elif defined(__GLIBC__)
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "tollgate/alerts.h"
#include "tollgate/attribution.h"
#include "tollgate/config.h"
#include "tollgate/fleet.h"
#include "tollgate/http.h"
#include "tollgate/ledger.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/meter.h"
#include "tollgate/metrics.h"
#include "tollgate/pricing.h"
#include "tollgate/reply.h"
#include "tollgate/route.h"
#include "tollgate/routing.h"
#include "tollgate/session.h"
#include "tollgate/upstream.h"
#include "tollgate/util.h"

#include "session_int.h"

/*
 * After a burst (SESSION_TRIM_AFTER calls or more at once), the memory it
 * left free is handed back once no call has been in progress for
 * SESSION_TRIM_IDLE_MS.
 */
#define SESSION_TRIM_AFTER 16
#define SESSION_TRIM_IDLE_MS 1000

static size_t session_n;
static size_t session_peak; /* most calls at once since the last trim */
static int session_trim_armed;
static struct session *session_list;
static struct session *session_dead; /* closed, freed by session_reap_cb */
static struct event *session_reap_ev;
static uint64_t reqid_state;
static struct event_base *session_base;

static uint64_t
splitmix64(void)
{
	uint64_t z;

	z = (reqid_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (z ^ (z >> 31));
}

/* Write v as n lowercase hex digits, zero-padded, at p. */
static void
put_hex(char *p, uint64_t v, int n)
{
	static const char hex[] = "0123456789abcdef";

	while (n-- > 0) {
		p[n] = hex[v & 0xf];
		v >>= 4;
	}
}

/*
 * A request id: 128 bits as 32 hex digits, the call's start in ms (48 bits)
 * and then 80 random bits seeded from getrandom once. Ids made later sort
 * later, so the ledger's primary key grows at one edge of its index
 * instead of dirtying a random page of it for every call. Written by hand:
 * snprintf cost 2,000 instructions a call for it.
 */
static void
make_reqid(char *buf, size_t len, int64_t ms)
{
	char id[33];
	uint64_t lo, hi;
	size_t n;

	if (reqid_state == 0) {
		if (getrandom(&reqid_state, sizeof(reqid_state), 0) !=
		    sizeof(reqid_state))
			reqid_state = (uint64_t)monotime_us();
	}
	lo = splitmix64();
	hi = splitmix64();
	put_hex(id, (uint64_t)ms & 0xffffffffffffULL, 12);
	put_hex(id + 12, hi, 16);
	put_hex(id + 28, lo & 0xffff, 4);
	id[32] = '\0';
	if (len == 0)
		return;
	n = len - 1 < 32 ? len - 1 : 32;
	memcpy(buf, id, n);
	buf[n] = '\0';
}

void
session_arm_timer(struct session *se, long ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(se->se_timer, &tv);
}

/* The first call in progress; the rest follow se_next. */
struct session *
session_first(void)
{
	return (session_list);
}

/* Calls in progress. */
size_t
session_count(void)
{
	return (session_n);
}

/*
 * Answer the client with a complete response tollgate wrote itself: the
 * request id and the headers in hs (which are cleared), then body.
 */
void
session_reply(struct session *se, int status, struct hdrs *hs, char *body)
{
	se->se_status = status;
	if (se->se_conn == NULL) {
		hdrs_clear(hs);
		free(body);
		return;
	}
	hdrs_add(hs, "x-tollgate-request-id", 21, se->se_reqid,
	    strlen(se->se_reqid));
	/* The header the family's SDKs read an error's request id from
	 * (OpenAI's requestID, Anthropic's request-id): the answer is
	 * tollgate's own, so the id is tollgate's, the row's id. */
	switch (se->se_route.rt_family) {
	case FAMILY_OPENAI:
		hdrs_add(
		    hs, "x-request-id", 12, se->se_reqid, strlen(se->se_reqid));
		break;
	case FAMILY_ANTHROPIC:
		hdrs_add(
		    hs, "request-id", 10, se->se_reqid, strlen(se->se_reqid));
		break;
	default:
		break;
	}
	se->se_replied = 1;
	conn_reply_full(
	    se->se_conn, status, hs, "application/json", body, strlen(body));
	se->se_conn = NULL;
	hdrs_clear(hs);
	free(body);
}

/*
 * Answer a call that failed upstream before its response began: status
 * and code in the family's error shape (a refusal is session_refuse's).
 */
void
session_reply_error(
    struct session *se, int status, const char *code, const char *msg)
{
	struct hdrs hs = {0};
	char cnt[16];

	/* After a failover or retry, how many attempts it took. */
	if (se->se_attempts > 1) {
		snprintf(cnt, sizeof(cnt), "%d", se->se_attempts);
		hdrs_add(&hs, "x-tollgate-attempts", 19, cnt, strlen(cnt));
	}
	session_reply(se, status, &hs,
	    reply_error_body(
		se->se_route.rt_family, status, code, msg, se->se_reqid));
}

/* A call's note never grows past this; what is past it is cut. */
#define SESSION_NOTE_MAX 512

/*
 * Something the call's one log line should say (why it was refused, a
 * shadow verdict, a clamp, an upstream error): kept with the call and
 * written, escaped, as note="..." on the line session_close writes, so
 * a call costs one line at info however much happened to it.
 */
void
session_note(struct session *se, const char *fmt, ...)
{
	char *add, *all;
	va_list ap;

	va_start(ap, fmt);
	if (xvasprintf(&add, fmt, ap) == -1)
		fatalx("%s: xvasprintf", __func__);
	va_end(ap);
	if (se->se_note == NULL)
		all = add;
	else {
		xasprintf(&all, "%s; %s", se->se_note, add);
		free(add);
		free(se->se_note);
	}
	if (strlen(all) > SESSION_NOTE_MAX)
		all[SESSION_NOTE_MAX] = '\0';
	se->se_note = all;
}

/*
 * Models seen unpriced: each is warned about once per run (then noted on
 * its calls' lines), so a day of calls to a new model is one warning, not
 * one a call. A few hundred names are remembered; past that, no more
 * warnings.
 */
#define UNPRICED_SEEN_MAX 256
static char *unpriced_seen[UNPRICED_SEEN_MAX];
static size_t unpriced_nseen;

static int
unpriced_first_time(const char *model)
{
	size_t i;

	for (i = 0; i < unpriced_nseen; i++)
		if (strcmp(unpriced_seen[i], model) == 0)
			return (0);
	if (unpriced_nseen == UNPRICED_SEEN_MAX)
		return (0);
	unpriced_seen[unpriced_nseen++] = xstrdup(model);
	return (1);
}

/* The model a call is priced and recorded under. */
static const char *
session_model(const struct session *se)
{
	return (se->se_ci.ci_model[0] != '\0' ? se->se_ci.ci_model : NULL);
}

/*
 * The price of the model the provider says served the call, or NULL when
 * it said none, the table does not know it, or the name had to be
 * repaired to be recorded: a name cut short or with stray bytes replaced
 * is not the one the provider gave and could match another model's price.
 */
static const struct price *
session_served(const struct session *se, const struct usage *u)
{
	if (u == NULL || u->u_source == USAGE_NONE || u->u_model[0] == '\0' ||
	    u->u_model_repaired || se->se_conf->cf_prices == NULL)
		return (NULL);
	return (pricing_lookup(se->se_conf->cf_prices, u->u_model));
}

/*
 * Is the call priced by the model that served it rather than by what was
 * asked? When the asked model is unknown and the provider names a model
 * the table knows, that model is a fact and any stand-in (the family's
 * dearest rates, price_as, no price) only a guess.
 */
static int
session_by_served(const struct session *se, const struct usage *u)
{
	return (!se->se_asked_priced && session_served(se, u) != NULL);
}

/*
 * The row's price_version for usage u (NULL: none yet, the reservation):
 * the table's version when a model it knows priced the call, the version
 * marked "+fallback:<family>" when the family's dearest rates did,
 * "unpriced" when nothing did, so the column always says what the cost
 * is made of.
 */
static const char *
session_price_version(const struct session *se, const struct usage *u)
{
	if (!se->se_route.rt_metered)
		return (NULL);
	if (session_by_served(se, u))
		return (pricing_version(se->se_conf->cf_prices));
	if (se->se_fallback_pv != NULL)
		return (se->se_fallback_pv);
	if (se->se_price != NULL)
		return (pricing_version(se->se_conf->cf_prices));
	return ("unpriced");
}

/* Fill a ledger row from the session's state. */
static void
session_row(const struct session *se, struct ledger_row *row)
{
	const struct upstream_conf *uc = se->se_route.rt_upstream;
	int t;

	memset(row, 0, sizeof(*row));
	row->lr_id = se->se_reqid;
	row->lr_started_ms = se->se_started_ms;
	row->lr_provider = uc != NULL
	    ? config_upstream_type_name(uc->uc_type)
	    : route_family_name(se->se_route.rt_family);
	row->lr_endpoint = route_endpoint_name(se->se_route.rt_endpoint);
	row->lr_upstream = uc != NULL ? uc->uc_name : "-";
	row->lr_model = session_model(se);
	for (t = 0; t < TAG_MAX; t++)
		row->lr_tags[t] = attribution_tag(&se->se_attr, t);
	row->lr_key_fingerprint =
	    se->se_attr.at_key_fp[0] != '\0' ? se->se_attr.at_key_fp : NULL;
	row->lr_stream = se->se_ci.ci_stream;
	row->lr_status = CALL_IN_FLIGHT;
	row->lr_reserved_nusd = se->se_reserved_nusd;
	row->lr_price_version = session_price_version(se, NULL);
	row->lr_usage_source = USAGE_NONE;
	row->lr_latency_ms = -1;
	row->lr_ttfb_ms = -1;
	row->lr_routed_from =
	    se->se_routed_from[0] != '\0' ? se->se_routed_from : NULL;
	row->lr_routed_rule = se->se_rule != NULL ? se->se_rule->rr_name : NULL;
	row->lr_attempts = se->se_attempts;
	row->lr_cache_hit = se->se_cache == SE_CACHE_HIT;
	row->lr_attempt_log = se->se_attempt_log;
}

/* Record a call tollgate refused after routing: a final row, no cost. */
void
session_record_refusal(struct session *se, int status, const char *reason)
{
	struct ledger_row row;

	session_row(se, &row);
	row.lr_status = CALL_REFUSED;
	row.lr_http_status = status;
	row.lr_refusal_reason = reason;
	row.lr_reserved_nusd = 0;
	row.lr_finished_ms = wallclock_ms();
	row.lr_latency_ms = (monotime_us() - se->se_t0_us) / 1000;
	if (ledger_record(&row) == -1)
		log_warnx("session %llu: ledger queue full: refusal of %s not "
			  "recorded",
		    se->se_id, se->se_reqid);
}

/*
 * free keeps memory in the allocator, so a daemon that served a burst of
 * streams would hold its peak RSS while idle. mimalloc's forced collect
 * frees what its delayed-free lists and empty pages still hold and gives
 * their memory back; glibc's malloc_trim (the sanitizer builds) returns
 * every whole free page, in every arena. It runs only when no call is in
 * progress, off the hot path.
 */
static void
session_trim_timer(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	session_trim_armed = 0;
	if (session_n > 0)
		return; /* the next idle moment will do */
	session_peak = 0;
#if defined(TG_MIMALLOC)
	mi_collect(true);
#elif defined(__GLIBC__)
	malloc_trim(0);
#endif
}

static void
link_session(struct session *se)
{
	se->se_next = session_list;
	if (session_list != NULL)
		session_list->se_prev = se;
	session_list = se;
	if (++session_n > session_peak)
		session_peak = session_n;
}

static void
unlink_session(struct session *se)
{
	struct timeval tv;

	if (se->se_prev != NULL)
		se->se_prev->se_next = se->se_next;
	else
		session_list = se->se_next;
	if (se->se_next != NULL)
		se->se_next->se_prev = se->se_prev;
	session_n--;
	if (session_n == 0 && session_peak >= SESSION_TRIM_AFTER &&
	    !session_trim_armed) {
		tv.tv_sec = SESSION_TRIM_IDLE_MS / 1000;
		tv.tv_usec = (SESSION_TRIM_IDLE_MS % 1000) * 1000;
		if (event_base_once(session_base, -1, EV_TIMEOUT,
			session_trim_timer, NULL, &tv) == 0)
			session_trim_armed = 1;
	}
}

/*
 * A request head is complete: route and attribute it. Returns the session,
 * or NULL when the request was refused and answered.
 */
struct session *
session_new(struct conn *co, struct http_request *req)
{
	struct session *se;
	enum route_result rr;
	const char *code;
	char *why = NULL;

	if (session_base == NULL)
		fatalx("%s: session_setup not called", __func__);
	se = xcalloc(1, sizeof(*se));
	se->se_id = conn_id(co);
	se->se_conn = co;
	se->se_req = req;
	se->se_conf = config_ref(config_current());
	se->se_t0_us = monotime_us();
	se->se_started_ms = wallclock_ms();
	se->se_ttfb_us = -1;
	se->se_timer = evtimer_new(session_base, relay_timer_cb, se);
	make_reqid(se->se_reqid, sizeof(se->se_reqid), se->se_started_ms);
	link_session(se);

	rr = route_match(
	    se->se_conf, req->hr_method, req->hr_target, &se->se_route, &why);
	switch (rr) {
	case ROUTE_OK:
		break;
	/* Never recorded: a path that routes nowhere makes no row
	 * (operations.md's status table). */
	case ROUTE_BAD_METHOD:
		session_refuse(
		    se, 405, "method_not_allowed", 0, NULL, "%s", why);
		goto refused;
	case ROUTE_NO_UPSTREAM:
		session_refuse(se, 404, "no_upstream", 0, NULL, "%s", why);
		goto refused;
	case ROUTE_NOT_FOUND:
		session_refuse(se, 404, "unknown_route", 0, NULL, "%s", why);
		goto refused;
	case ROUTE_BAD_NAME:
		session_refuse(se, 400, "bad_path", 0, NULL, "%s", why);
		goto refused;
	}
	free(why);
	why = NULL;

	if (attribution_resolve(se->se_conf, &req->hr_headers,
		se->se_route.rt_query, &se->se_attr, &code, &why) == -1) {
		/* The row must not take a client-chosen id it could not
		 * validate: se_reqid is still tollgate's own. */
		session_refuse(se, 400, code, REFUSE_RECORD, NULL, "%s", why);
		goto refused;
	}
	if (se->se_attr.at_request_id[0] != '\0')
		snprintf(se->se_reqid, sizeof(se->se_reqid), "%s",
		    se->se_attr.at_request_id);
	return (se);
refused:
	free(why);
	session_close(se, CALL_REFUSED, "refused");
	return (NULL);
}

/*
 * The call's reservation is written (and, when the fleet's Redis was
 * asked for a cached answer, it has answered): on to the provider, unless
 * the client left, a kill came meanwhile, or the cache has the answer.
 */
void
session_reserved(struct session *se)
{
	if (se->se_client_gone) {
		session_close(se, CALL_CLIENT_CLOSED, "client_gone");
		return;
	}
	if (se->se_stop != NULL) {
		/* Killed while it was being reserved: never forwarded, so
		 * it costs nothing. Its reservation is in the journal:
		 * session_close settles it as refused. */
		session_refuse_kill(se, 0, se->se_stop, NULL, NULL);
		session_close(se, CALL_REFUSED, "killed");
		return;
	}
	/* Admitted and reserved: a cached answer costs nothing. */
	if (session_cache_serve(se))
		return;
	relay_forward(se);
}

static void
reserved_cb(void *arg, enum ledger_result res)
{
	struct session *se = arg;

	se->se_ticket = NULL;
	switch (res) {
	case LEDGER_OK:
		se->se_reserved = 1;
		session_reserved(se);
		return;
	case LEDGER_DUPLICATE:
		/* Retrying cannot help: tell the SDKs not to. Not
		 * recorded: the id's row is the call already made. */
		session_refuse(se, 409, "duplicate_request_id", REFUSE_NO_RETRY,
		    NULL, "%s",
		    "a call with this X-Tollgate-Request-Id was already "
		    "made; it is not billed twice");
		session_close(se, CALL_REFUSED, "refused");
		return;
	case LEDGER_UNAVAILABLE:
		/* Not recorded: the ledger cannot take a row. */
		session_refuse(se, 503, "ledger_unavailable", REFUSE_RETRY_SOON,
		    NULL, "%s",
		    "the spend ledger cannot record this call; it was not "
		    "forwarded");
		session_close(se, CALL_REFUSED, "ledger_unavailable");
		return;
	}
}

/*
 * A call refused after routing is recorded under an id of tollgate's own,
 * so the client can retry with its X-Tollgate-Request-Id once the cause is
 * fixed instead of being told the call was already made.
 */
void
session_refusal_id(struct session *se)
{
	if (se->se_attr.at_request_id[0] != '\0')
		make_reqid(
		    se->se_reqid, sizeof(se->se_reqid), se->se_started_ms);
}

/*
 * Whether the request declares a Content-Encoding other than identity:
 * tollgate would check the encoded bytes and the provider read the
 * decoded ones.
 */
static int
encoded_body(const struct hdrs *hs)
{
	const char *v;
	size_t i, n;

	for (i = 0; i < hs->hs_n; i++) {
		if (strcasecmp(hs->hs_v[i].h_name, "Content-Encoding") != 0)
			continue;
		v = hs->hs_v[i].h_value;
		v += strspn(v, " \t");
		n = strcspn(v, " \t");
		if (v[n + strspn(v + n, " \t")] != '\0')
			return (1); /* a list of codings */
		if (n != 0 && !(n == 8 && strncasecmp(v, "identity", 8) == 0))
			return (1);
	}
	return (0);
}

/*
 * Price a call to an unknown model at the dearest rates of its family
 * (pricing_family_max): se_price becomes the family's price, the row's
 * price_version says so, the call's line notes it, and the alerts module
 * is told (it fires once per model and day). Returns 0, or -1 when the
 * table has no model to take the rates from.
 */
static int
session_family_price(struct session *se)
{
	const struct pricebook *pb = se->se_conf->cf_prices;
	char family[USAGE_MODEL_MAX];

	if (pricing_family_max(pb, session_model(se), &se->se_family, family,
		sizeof(family)) == 0)
		return (-1);
	se->se_family.p_model = NULL;
	se->se_price = &se->se_family;
	xasprintf(
	    &se->se_fallback_pv, "%s+fallback:%s", pricing_version(pb), family);
	session_note(se,
	    "model has no price: priced at the highest rates of family '%s' "
	    "(unknown_models.action family_max)",
	    family);
	alerts_unknown_model(session_model(se) != NULL ? session_model(se) : "",
	    family, &se->se_family, wallclock_ms());
	return (0);
}

/*
 * Read the request: what it asks for, into se_ci. Returns 0 to go on, or
 * -1 after refusing it.
 */
static int
session_read(struct session *se)
{
	struct http_request *req = se->se_req;
	const char *body, *mapped;
	char *cause = NULL;

	body = (const char *)evbuffer_pullup(req->hr_body, -1);
	/* A body to refuse comes back with its cause. */
	meter_request(&se->se_route, body != NULL ? body : "",
	    evbuffer_get_length(req->hr_body), &se->se_ci, &se->se_body,
	    &se->se_bodylen, &cause);
	if (se->se_route.rt_upstream->uc_type == UPSTREAM_AZURE_OPENAI &&
	    se->se_route.rt_model[0] != '\0' &&
	    (mapped = config_deployment_model(
		 se->se_route.rt_upstream, se->se_route.rt_model)) != NULL)
		snprintf(se->se_ci.ci_model, sizeof(se->se_ci.ci_model), "%s",
		    mapped);
	/* Said first: the bytes are not the body the client means. */
	if (se->se_route.rt_endpoint != EP_MODELS &&
	    encoded_body(&req->hr_headers)) {
		free(cause);
		xasprintf(&cause,
		    "the request body has a Content-Encoding; tollgate reads "
		    "the body as it is sent while the provider would decode "
		    "it, so send it without one");
		if (se->se_route.rt_model[0] == '\0')
			se->se_ci.ci_model[0] = '\0';
	}
	if (cause != NULL) {
		/*
		 * Refused before anything is read from it: the row has no
		 * model but the URL's, and nothing is forwarded.
		 */
		free(se->se_body);
		se->se_body = NULL;
		se->se_bodylen = 0;
		session_note(se, "bad body: %s", cause);
		session_refuse(se, 400, "bad_body",
		    REFUSE_RECORD | REFUSE_OWN_ID, NULL, "%s", cause);
		free(cause);
		return (-1);
	}
	return (0);
}

/*
 * Route and price the request. Returns 0 to go on, 1 while a routing rule
 * waits for the fleet (session_start runs again), or -1 after refusing it.
 */
static int
session_price(struct session *se)
{
	const struct config *cf = se->se_conf;
	const struct upstream_conf *path_up;
	char model[160];
	int rc;

	if (!se->se_route.rt_metered)
		return (0);
	/* The one place a call meets the routing rules: before its price,
	 * so the call is priced, reserved and checked as it will be sent. */
	path_up = se->se_route.rt_upstream;
	if ((rc = session_route(se)) != 0)
		return (rc);
	session_chain(se, path_up);

	se->se_price = session_model(se) != NULL
	    ? pricing_lookup(cf->cf_prices, session_model(se))
	    : NULL;
	se->se_asked_priced = se->se_price != NULL;
	if (se->se_price == NULL) {
		switch (cf->cf_unknown_model) {
		case UNKNOWN_MODEL_REFUSE:
			session_refuse(se, 400, "unknown_model",
			    REFUSE_RECORD | REFUSE_OWN_ID, NULL,
			    "the model '%s' has no price; "
			    "add it to the price table or set unknown_models",
			    session_model(se) != NULL ? session_model(se) : "");
			return (-1);
		case UNKNOWN_MODEL_PRICE_AS:
			se->se_price = pricing_lookup(
			    cf->cf_prices, cf->cf_unknown_price_as);
			break;
		case UNKNOWN_MODEL_FAMILY_MAX:
			if (session_family_price(se) == 0)
				break;
			/* No table to take a family from: unpriced. */
			/* FALLTHROUGH */
		case UNKNOWN_MODEL_UNPRICED:
			log_escape(model, sizeof(model), se->se_ci.ci_model,
			    strlen(se->se_ci.ci_model));
			if (unpriced_first_time(se->se_ci.ci_model))
				log_warnx(
				    "session %llu: model '%s' has no price: "
				    "its calls are recorded unpriced "
				    "(unknown_models.action); add it to "
				    "the price table",
				    se->se_id, model);
			session_note(se, "model unpriced");
			break;
		}
	}
	/* Every attempt of its chain is covered: the dearest. */
	if (se->se_price != NULL)
		se->se_reserved_nusd = session_chain_worst(se);
	return (0);
}

/*
 * The request body is complete: read and price it, then reserve its row.
 * Runs again when a routing rule waited for the fleet (SE_WAITING), the
 * request already read.
 */
void
session_start(struct session *se)
{
	int rc;

	se->se_started = 1;
	if (!se->se_read) {
		se->se_read = 1;
		if (session_read(se) == -1) {
			session_close(se, CALL_REFUSED, "refused");
			return;
		}
	}
	if ((rc = session_price(se)) == 1) {
		se->se_state = SE_WAITING;
		return;
	}
	if (rc == -1) {
		session_close(se, CALL_REFUSED, "refused");
		return;
	}
	if (se->se_attr.at_binding != NULL &&
	    se->se_attr.at_binding->kb_tollgate &&
	    se->se_route.rt_upstream->uc_api_key == NULL) {
		session_refuse(se, 403, "no_upstream_key",
		    REFUSE_RECORD | REFUSE_OWN_ID, NULL, "%s",
		    "calls made with a tollgate key need the upstream's "
		    "api_key_env");
		session_close(se, CALL_REFUSED, "refused");
		return;
	}
	session_admitting(se);
}

/*
 * Admission, and again each time the fleet answers while the call waits
 * for a lease (session_admit returns 1): refused, waiting, or on to its
 * ledger row.
 */
void
session_admitting(struct session *se)
{
	struct ledger_row row;
	int rc;

	if ((rc = session_admit(se)) == -1) {
		session_close(se, CALL_REFUSED, "refused");
		return;
	}
	if (rc == 1) {
		se->se_state = SE_WAITING;
		return;
	}
	session_row(se, &row);
	se->se_state = SE_RESERVING;
	se->se_ticket = ledger_reserve(&row,
	    se->se_attr.at_request_id[0] != '\0' ? LEDGER_ID_CLIENT : 0,
	    reserved_cb, se);
	if (se->se_ticket == NULL) {
		/* Not recorded: the ledger's queue is full. */
		session_refuse(se, 503, "ledger_busy", REFUSE_RETRY_SOON, NULL,
		    "%s", "the spend ledger is behind; try again");
		session_close(se, CALL_REFUSED, "ledger_busy");
	}
}

/* The client went away; the call ends and the provider is hung up on. */
void
session_client_gone(struct session *se)
{
	/*
	 * A stream whose last event reached the client is complete, though
	 * the provider has not ended its body yet: the SDKs stop reading at
	 * [DONE] (or message_stop) and hang up. Reached means handed to the
	 * kernel: nothing of it still queued for the client.
	 */
	int ended = se->se_meter != NULL && se->se_conn != NULL &&
	    se->se_status >= 200 && se->se_status < 300 && !se->se_cut &&
	    meter_ended(se->se_meter) && conn_output_pending(se->se_conn) == 0;

	se->se_conn = NULL;
	se->se_client_gone = 1;
	if (se->se_state == SE_RESERVING)
		return; /* reserved_cb ends it once the ledger answers */
	if (ended) {
		session_note(se, "client hung up after the last event");
		session_close(se, CALL_OK, "ok");
		return;
	}
	session_close(se, se->se_started ? CALL_CLIENT_CLOSED : CALL_REFUSED,
	    se->se_started ? "client_closed" : "client_gone");
}

/*
 * Price the usage. A model the table knows was asked for: by it and by
 * the model that answered, whichever costs more (a cheap alias must not
 * hide a dear model). An unknown model was asked for: by the model that
 * answered when the table knows it (session_by_served), else by the
 * stand-in unknown_models chose (family_max, price_as), else nothing.
 */
int64_t
session_cost(const struct session *se, const struct usage *u)
{
	const struct price *served;
	int64_t cost = 0, c2;

	if (u->u_source == USAGE_NONE)
		return (0);
	served = session_served(se, u);
	if (session_by_served(se, u))
		return (pricing_cost(served, u));
	if (se->se_price != NULL)
		cost = pricing_cost(se->se_price, u);
	if (served != NULL && served != se->se_price) {
		c2 = pricing_cost(served, u);
		if (c2 > cost)
			cost = c2;
	}
	return (cost);
}

/*
 * Was the request sent to the provider without any response coming back
 * (client gone, header timeout, reset before headers)? Then the provider
 * may still process and bill it: a disconnect must never release more
 * budget than is proven unbilled (docs/internals/metering.md, What a failed call costs).
 */
static int
unanswered_but_sent(const struct session *se)
{
	return (se->se_state == SE_FORWARDING && !se->se_headers_seen &&
	    !se->se_nothing_sent && se->se_route.rt_metered &&
	    (se->se_xfer == NULL || xfer_sent(se->se_xfer)));
}

/* Usage for an unanswered call: the request's input and output bounds. */
static void
estimate_unanswered(const struct session *se, struct usage *u)
{
	const struct call_info *ci = &se->se_ci;
	int64_t bound = ci->ci_max_output;

	if (bound < 0 && se->se_price != NULL)
		bound = se->se_price->p_max_output;
	memset(u, 0, sizeof(*u));
	u->u_source = USAGE_ESTIMATED;
	u->u_incomplete = 1;
	u->u_input = ci->ci_input_estimate;
	u->u_output = bound > 0 ? bound * (ci->ci_n > 0 ? ci->ci_n : 1) : 0;
}

/*
 * The single close path: finish the response, settle the row, log the
 * call, stop the transfer, release everything it holds. The struct itself
 * stays, closed and inert, until the next loop turn: whoever still holds
 * se may read se_closed and must do nothing else with it.
 */
void
session_close(struct session *se, enum call_status status, const char *reason)
{
	const struct http_request *req = se->se_req;
	struct ledger_row row;
	struct metrics_call mc;
	struct usage u;
	char path[160];
	const char *up;
	int64_t cost;
	const char *pv;
	char model[160];
	char note[4 * SESSION_NOTE_MAX + 1];

	/* Closed already: an inert session has nothing left to end. */
	if (se->se_closed)
		return;
	se->se_closed = 1;
	fleet_wait_cancel(se->se_wait);
	se->se_wait = NULL;
	memset(&u, 0, sizeof(u));
	if (se->se_meter != NULL) {
		/* Only a finished call's held bytes reach the client. */
		meter_finish(se->se_meter,
		    !se->se_cut && (status == CALL_OK || status == CALL_ERROR),
		    relay_emit, se, &u);
	}
	if (unanswered_but_sent(se))
		estimate_unanswered(se, &u);
	session_cache_usage(se, &u);
	if (se->se_conn != NULL) {
		if (se->se_replied &&
		    (status == CALL_OK || status == CALL_ERROR ||
			status == CALL_KILLED))
			conn_reply_end(se->se_conn);
		else
			conn_reply_abort(se->se_conn);
		se->se_conn = NULL;
	}
	/* A cached answer is free: the provider never saw the call. */
	cost = se->se_reserved && se->se_cache != SE_CACHE_HIT
	    ? session_cost(se, &u)
	    : 0;
	/* An unanswered call is charged its worst case: the provider may
	 * well finish and bill it after tollgate has stopped listening. */
	if (se->se_reserved && unanswered_but_sent(se) &&
	    cost < se->se_reserved_nusd)
		cost = se->se_reserved_nusd;
	/* Attempts sent and never answered before another served it. */
	if (se->se_reserved)
		cost += se->se_lost_nusd;
	if (se->se_reserved) {
		session_row(se, &row);
		row.lr_status = status;
		row.lr_http_status = se->se_status;
		row.lr_finished_ms = wallclock_ms();
		row.lr_input_tokens = u.u_input;
		row.lr_output_tokens = u.u_output;
		row.lr_cached_input_tokens = u.u_cached;
		row.lr_cache_write_tokens = u.u_cache_write;
		row.lr_reasoning_tokens = u.u_reasoning;
		row.lr_usage_source = u.u_source;
		row.lr_cost_nusd = cost;
		row.lr_price_version = session_price_version(se, &u);
		row.lr_served_model = u.u_model[0] != '\0' ? u.u_model : NULL;
		row.lr_refusal_reason = se->se_refusal != NULL ? se->se_refusal
		    : se->se_error[0] != '\0'		       ? se->se_error
							       : NULL;
		row.lr_latency_ms = (monotime_us() - se->se_t0_us) / 1000;
		row.lr_ttfb_ms =
		    se->se_ttfb_us >= 0 ? se->se_ttfb_us / 1000 : -1;
		row.lr_saved_nusd = se->se_cache == SE_CACHE_HIT
		    ? session_cache_saved(se, &u)
		    : session_saved(se, &u, cost);
	}
	session_cache_close(
	    se, status, &u, se->se_reserved ? row.lr_saved_nusd : 0);
	session_settle(se, status, cost, &u);
	pv = se->se_reserved ? session_price_version(se, &u) : NULL;
	if (se->se_reserved && se->se_fallback_pv != NULL &&
	    session_by_served(se, &u)) {
		log_escape_word(
		    model, sizeof(model), u.u_model, strlen(u.u_model));
		session_note(
		    se, "priced as %s, the model that served it", model);
	}

	if (se->se_route.rt_path != NULL)
		log_escape_word(path, sizeof(path), se->se_route.rt_path,
		    strlen(se->se_route.rt_path));
	else
		log_escape_word(path, sizeof(path), req->hr_target,
		    strcspn(req->hr_target, "?"));
	if (session_model(se) != NULL)
		log_escape_word(model, sizeof(model), session_model(se),
		    strlen(session_model(se)));
	else
		snprintf(model, sizeof(model), "-");
	up = se->se_route.rt_upstream != NULL
	    ? se->se_route.rt_upstream->uc_name
	    : "-";
	if (se->se_note != NULL)
		log_escape(
		    note, sizeof(note), se->se_note, strlen(se->se_note));
	log_info("session %llu: %s %s upstream=%s status=%d in=%zu out=%zu "
		 "ms=%lld ttfb_ms=%lld model=%s tokens=%lld/%lld usage=%s "
		 "cost_nusd=%lld id=%s reason=%s%s%s%s",
	    se->se_id, req->hr_method, path, up, se->se_status, se->se_bytes_in,
	    se->se_bytes_out, (monotime_us() - se->se_t0_us) / 1000,
	    se->se_ttfb_us >= 0 ? se->se_ttfb_us / 1000 : -1LL, model,
	    (long long)u.u_input, (long long)u.u_output,
	    ledger_usage_source_name(u.u_source), (long long)cost, se->se_reqid,
	    se->se_refusal != NULL && strcmp(reason, "refused") == 0
		? se->se_refusal
		: reason,
	    se->se_note != NULL ? " note=\"" : "",
	    se->se_note != NULL ? note : "", se->se_note != NULL ? "\"" : "");
	/*
	 * Settled after the call's log line: the writer thread may commit at
	 * once, and whoever sees the row must find its line already logged.
	 */
	if (se->se_reserved)
		ledger_settle(&row);

	if (se->se_refusal != NULL)
		metrics_refusal(se->se_refusal);
	/* A hit's saving is the cache's (tollgate_cache_saved_nusd). */
	if (se->se_rule != NULL)
		metrics_routed(se->se_rule->rr_name,
		    se->se_reserved && se->se_cache != SE_CACHE_HIT
			? row.lr_saved_nusd
			: 0);
	if (se->se_route.rt_upstream != NULL) {
		memset(&mc, 0, sizeof(mc));
		mc.mc_provider = config_upstream_type_name(
		    se->se_route.rt_upstream->uc_type);
		mc.mc_model = session_model(se);
		mc.mc_team = attribution_tag(&se->se_attr, TAG_TEAM);
		mc.mc_tenant = attribution_tag(&se->se_attr, TAG_TENANT);
		mc.mc_agent_class =
		    attribution_tag(&se->se_attr, TAG_AGENT_CLASS);
		mc.mc_status = status;
		mc.mc_usage = se->se_reserved ? &u : NULL;
		mc.mc_cost_nusd = cost;
		mc.mc_unpriced = pv != NULL && strcmp(pv, "unpriced") == 0;
		mc.mc_fallback = pv != NULL && pv == se->se_fallback_pv;
		mc.mc_ttfb_us = se->se_ttfb_us;
		mc.mc_duration_us = monotime_us() - se->se_t0_us;
		metrics_call(&mc);
	}

	/*
	 * Everything it holds goes now, and its pointers with it, so a
	 * holder that looks past se_closed finds NULL, not freed memory.
	 */
	if (se->se_ticket != NULL)
		ledger_ticket_cancel(se->se_ticket);
	se->se_ticket = NULL;
	xfer_free(se->se_xfer);
	se->se_xfer = NULL;
	if (se->se_meter != NULL)
		meter_free(se->se_meter);
	se->se_meter = NULL;
	event_free(se->se_timer);
	se->se_timer = NULL;
	if (se->se_started)
		http_request_free(se->se_req);
	se->se_req = NULL;
	if (se->se_bodybuf != NULL)
		evbuffer_free(se->se_bodybuf); /* se_body points into it */
	else
		free(se->se_body);
	se->se_bodybuf = NULL;
	se->se_body = NULL;
	free(se->se_stop);
	se->se_stop = NULL;
	free(se->se_note);
	se->se_note = NULL;
	free(se->se_fallback_pv);
	se->se_fallback_pv = NULL;
	session_retry_free(se);
	hdrs_clear(&se->se_hdrs);
	route_clear(&se->se_route);
	config_unref(se->se_conf);
	se->se_conf = NULL;
	unlink_session(se);

	/* Freed from the loop, once every caller holding se has returned. */
	se->se_reap_next = session_dead;
	if (session_dead == NULL && session_reap_ev != NULL)
		event_active(session_reap_ev, EV_TIMEOUT, 0);
	session_dead = se;
}

static void *
session_head_op(struct conn *co, struct http_request *req)
{
	return (session_new(co, req));
}

static void
session_start_op(void *arg)
{
	session_start(arg);
}

static void
session_gone_op(void *arg)
{
	session_client_gone(arg);
}

static void
session_drained_op(void *arg)
{
	session_drained(arg);
}

/* How the proxy listener hands its requests to sessions. */
const struct listener_ops session_listener_ops = {
    session_head_op,
    session_start_op,
    session_gone_op,
    session_drained_op,
};

/* Free the sessions closed since the loop last ran this. */
static void
session_reap(void)
{
	struct session *se;

	while ((se = session_dead) != NULL) {
		session_dead = se->se_reap_next;
		free(se);
	}
}

static void
session_reap_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	session_reap();
}

/* Give sessions their event base. */
void
session_setup(struct event_base *base)
{
	session_base = base;
#if defined(TG_MIMALLOC)
	/*
	 * mimalloc keeps the pages it frees committed for 25 ms, and whole
	 * segments for 500 ms, in case they are wanted again: under load
	 * that held RSS about 7 % above glibc's malloc. Giving them back at
	 * once brings it within 2-4 % at no measured cost in instructions
	 * (bench/analysis.md). The environment's MIMALLOC_ settings win.
	 */
	if (getenv("MIMALLOC_DECOMMIT_DELAY") == NULL)
		mi_option_set(mi_option_decommit_delay, 0);
	if (getenv("MIMALLOC_SEGMENT_DECOMMIT_DELAY") == NULL)
		mi_option_set(mi_option_segment_decommit_delay, 0);
#endif
	/* Made once: a close costs one list insert and, for the first on
	 * a loop turn, one event_active; nothing is allocated for it. */
	if ((session_reap_ev = event_new(base, -1, 0, session_reap_cb, NULL)) ==
	    NULL)
		fatalx("%s: event_new", __func__);
}

/*
 * At exit, after the drain: end sessions still waiting on the ledger.
 * Their rows stay in flight and become interrupted at the next start.
 */
void
session_abort_all(void)
{
	while (session_list != NULL) {
		session_list->se_conn = NULL;
		session_close(session_list, CALL_INTERRUPTED, "shutdown");
	}
}

/*
 * At exit, once the loop has stopped: free the sessions closed since its
 * last turn, and the event that would have.
 */
void
session_shutdown(void)
{
	session_reap();
	if (session_reap_ev != NULL)
		event_free(session_reap_ev);
	session_reap_ev = NULL;
	session_base = NULL;
}
