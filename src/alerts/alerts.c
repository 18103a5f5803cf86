/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Firing alerts and delivering them. alerts_fire logs one warning line,
 * counts the alert, queues its row for the ledger's writer thread and
 * queues one delivery per configured webhook; it never blocks. Deliveries
 * run on a libcurl multi handle of their own, which a curlev driver
 * (curlev.c) runs on the event loop, so a slow receiver never holds up a
 * call. A failed attempt that may succeed later (transport error,
 * timeout, 408, 429, 5xx) is retried after alerts_backoff_ms; other
 * statuses fail at once. When every webhook of an alert is done, its
 * delivery state (delivered, or failed if any webhook gave up) and the
 * attempts it took are written to the ledger.
 *
 * A delivery owns copies of its webhook's URL, secret and retry settings,
 * so a reload (alerts_configure) changes where new alerts go and leaves
 * queued ones alone. Transfers: TLS verified, redirects not followed,
 * environment proxies ignored; URLs and secrets are never logged (only
 * the host). At most ALERTS_PENDING_MAX deliveries wait at once; beyond
 * that an alert's deliveries are dropped, logged and counted. At most
 * ALERTS_MAX_CONNECTIONS of them hold a connection at a time.
 * alerts_shutdown logs every undelivered alert and frees everything.
 */
#include <sys/queue.h>
#include <sys/random.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "tollgate/alerts.h"
#include "tollgate/config.h"
#include "tollgate/curlev.h"
#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "alerts_int.h"

/* An alert whose deliveries are not all done; freed with the last one. */
struct arec {
	char ar_id[ALERTS_ID_MAX];
	int ar_pending; /* deliveries not done */
	int ar_failed; /* deliveries that gave up */
	int ar_attempts; /* over all its deliveries */
};

/* One alert to one webhook; owned by the deliveries list. */
struct delivery {
	TAILQ_ENTRY(delivery) d_entry;
	struct arec *d_rec; /* shared by the alert's deliveries */
	char *d_url; /* a secret of sorts: never logged */
	char *d_host; /* for logs */
	char *d_secret; /* wiped at free; NULL: unsigned */
	long d_timeout_ms;
	int d_max_attempts;
	int64_t d_initial_ms;
	int64_t d_max_ms;
	char *d_body;
	size_t d_len;
	int d_attempts; /* started so far */
	CURL *d_easy; /* while an attempt runs */
	struct curl_slist *d_headers;
	struct event *d_timer; /* the next attempt */
	char d_err[CURL_ERROR_SIZE];
};
TAILQ_HEAD(deliveries, delivery);

static struct event_base *al_base;
static struct curlev *al_cv; /* the deliveries' driver */
static const struct config *al_cf; /* a reference, alerts_configure's */
static struct deliveries al_list = TAILQ_HEAD_INITIALIZER(al_list);
static size_t al_n;

static void delivery_start(struct delivery *);

/* How many deliveries are queued or running. */
size_t
alerts_pending(void)
{
	return (al_n);
}

/* Response bodies are read and dropped. */
static size_t
discard_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	(void)buf;
	(void)arg;
	return (size * nitems);
}

/* End the running attempt's transfer, if any. */
static void
delivery_end_transfer(struct delivery *d)
{
	if (d->d_easy != NULL) {
		curlev_remove(al_cv, d->d_easy);
		curl_easy_cleanup(d->d_easy);
		d->d_easy = NULL;
	}
	curl_slist_free_all(d->d_headers);
	d->d_headers = NULL;
}

static void
delivery_free(struct delivery *d)
{
	delivery_end_transfer(d);
	if (d->d_timer != NULL)
		event_free(d->d_timer);
	TAILQ_REMOVE(&al_list, d, d_entry);
	al_n--;
	if (d->d_secret != NULL)
		freezero(d->d_secret, strlen(d->d_secret));
	if (d->d_url != NULL)
		freezero(d->d_url, strlen(d->d_url));
	free(d->d_host);
	free(d->d_body);
	free(d);
}

/*
 * A delivery is over (delivered or given up). When it was its alert's
 * last, the alert's delivery state goes to the ledger.
 */
static void
delivery_done(struct delivery *d, int ok)
{
	struct arec *r = d->d_rec;

	r->ar_attempts += d->d_attempts;
	if (!ok)
		r->ar_failed++;
	if (--r->ar_pending == 0) {
		ledger_alert_delivery(r->ar_id,
		    r->ar_failed > 0 ? "failed" : "delivered", r->ar_attempts);
		free(r);
	}
	delivery_free(d);
}

static void
retry_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	delivery_start(arg);
}

/* An attempt ended: delivered, retried later, or given up. */
static void
delivery_outcome(
    struct delivery *d, CURLcode cc, long status, int64_t retry_after_ms)
{
	enum alerts_outcome out;
	struct timeval tv;
	uint32_t rnd;
	int64_t wait;
	char why[CURL_ERROR_SIZE + 64];

	out = alerts_classify(cc != CURLE_OK, status);
	if (cc != CURLE_OK)
		snprintf(why, sizeof(why), "%s",
		    d->d_err[0] != '\0' ? d->d_err : curl_easy_strerror(cc));
	else
		snprintf(why, sizeof(why), "HTTP %ld", status);
	delivery_end_transfer(d);

	if (out == ALERTS_DELIVERED) {
		log_info("alerts: alert %s delivered to %s (attempt %d)",
		    d->d_rec->ar_id, d->d_host, d->d_attempts);
		metrics_alert_delivery("delivered");
		delivery_done(d, 1);
		return;
	}
	if (out == ALERTS_FAILED || d->d_attempts >= d->d_max_attempts) {
		log_warnx("alerts: alert %s not delivered to %s: %s; giving "
			  "up after %d attempt%s",
		    d->d_rec->ar_id, d->d_host, why, d->d_attempts,
		    d->d_attempts == 1 ? "" : "s");
		metrics_alert_delivery("failed");
		delivery_done(d, 0);
		return;
	}
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint32_t)monotime_us();
	wait =
	    alerts_backoff_ms(d->d_attempts, d->d_initial_ms, d->d_max_ms, rnd);
	/* A receiver's Retry-After is honoured, up to max_backoff. */
	if (retry_after_ms > wait)
		wait =
		    retry_after_ms < d->d_max_ms ? retry_after_ms : d->d_max_ms;
	log_info("alerts: alert %s to %s: %s; retrying in %" PRId64 " ms",
	    d->d_rec->ar_id, d->d_host, why, wait);
	metrics_alert_delivery("retried");
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)((wait % 1000) * 1000);
	evtimer_add(d->d_timer, &tv);
}

/* An attempt's transfer finished; delivery_outcome removes it. */
static void
done_cb(void *arg, CURL *e, CURLcode cc)
{
	struct delivery *d;
	curl_off_t ra = 0;
	char *priv;
	long status = 0;

	(void)arg;
	curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
	d = (struct delivery *)priv;
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	if (curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &ra) != CURLE_OK ||
	    ra < 0 || ra > 86400)
		ra = 0;
	delivery_outcome(d, cc, status, (int64_t)ra * 1000);
}

/* No callback of a delivery's transfer ends it: nothing to reap. */
static const struct curlev_cbs al_cbs = {
    .cc_done = done_cb,
    .cc_after = NULL,
};

static void
add_header(struct delivery *d, const char *line)
{
	struct curl_slist *l;

	if ((l = curl_slist_append(d->d_headers, line)) == NULL)
		fatalx("%s: curl_slist_append", __func__);
	d->d_headers = l;
}

/* Start one attempt; a transfer curl refuses counts as failed at once. */
static void
delivery_start(struct delivery *d)
{
	char sig[65], *line;
	CURL *e;

	d->d_attempts++;
	d->d_err[0] = '\0';
	if ((e = d->d_easy = curl_easy_init()) == NULL)
		fatalx("%s: curl_easy_init", __func__);
	add_header(d, "Content-Type: application/json");
	add_header(d, "Expect:");
	add_header(d, "User-Agent: tollgate/" TOLLGATE_VERSION);
	xasprintf(&line, "X-Tollgate-Alert-Id: %s", d->d_rec->ar_id);
	add_header(d, line);
	free(line);
	if (d->d_secret != NULL) {
		alerts_sign(d->d_secret, d->d_body, d->d_len, sig);
		xasprintf(&line, "X-Tollgate-Signature: sha256=%s", sig);
		add_header(d, line);
		free(line);
	}
	curl_easy_setopt(e, CURLOPT_URL, d->d_url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, d);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->d_err);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, d->d_headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR,
	    strncmp(d->d_url, "https:", 6) == 0 ? "https" : "http");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, d->d_timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, d->d_timeout_ms);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)d->d_len);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, d->d_body);
	if (curlev_add(al_cv, e) != 0) {
		delivery_end_transfer(d);
		log_warnx("alerts: alert %s to %s: curl refused the transfer",
		    d->d_rec->ar_id, d->d_host);
		metrics_alert_delivery("failed");
		delivery_done(d, 0);
	}
}

/* Set up the deliveries' multi handle on base. */
void
alerts_setup(struct event_base *base)
{
	al_base = base;
	if ((al_cv = curlev_new(base, "alerts", &al_cbs, NULL)) == NULL)
		fatalx("%s: curlev_new", __func__);
	/*
	 * Up to ALERTS_PENDING_MAX deliveries may be under way at once (an
	 * alert storm, or the backlog resent at start), each on a
	 * connection of its own: descriptors the proxy's clients need. The
	 * rest wait in curl for a connection to come free, and their
	 * timeout runs from when they start.
	 */
	curl_multi_setopt(curlev_multi(al_cv), CURLMOPT_MAX_TOTAL_CONNECTIONS,
	    (long)ALERTS_MAX_CONNECTIONS);
}

/*
 * Use cf's webhooks and retry settings for alerts fired from now on (at
 * start and on every reload). Deliveries already queued keep theirs.
 */
void
alerts_configure(const struct config *cf)
{
	struct config *old = (struct config *)(uintptr_t)al_cf;

	al_cf = cf != NULL ? config_ref((struct config *)(uintptr_t)cf) : NULL;
	config_unref(old);
}

/*
 * Queue a to every webhook of the current configuration, onto fresh.
 * Returns how many webhooks it could not be queued for; those count as
 * failed deliveries of the alert.
 */
static int
alerts_queue(const struct alert *a, const char *id, struct arec **recp,
    struct deliveries *fresh)
{
	const struct webhook_conf *wh;
	struct spend_out json, slack, *body;
	struct delivery *d;
	size_t i;
	int dropped = 0;

	spend_out_init(&json, ALERTS_BODY_MAX);
	spend_out_init(&slack, ALERTS_BODY_MAX);
	for (i = 0; al_cf != NULL && i < al_cf->cf_nwebhooks; i++) {
		wh = &al_cf->cf_webhooks[i];
		if (al_n >= ALERTS_PENDING_MAX) {
			log_warnx("alerts: alert %s not sent to %s: %d "
				  "deliveries already waiting",
			    id, wh->wh_host, ALERTS_PENDING_MAX);
			metrics_alert_delivery("dropped");
			dropped++;
			continue;
		}
		body = wh->wh_format == WEBHOOK_SLACK ? &slack : &json;
		if (body->so_len == 0) {
			if (wh->wh_format == WEBHOOK_SLACK)
				alerts_body_slack(a, id, body);
			else
				alerts_body_json(a, id, NULL, 0, body);
		}
		if (body->so_full || body->so_buf == NULL) {
			log_warnx("alerts: alert %s: body over %d bytes, not "
				  "sent to %s",
			    id, ALERTS_BODY_MAX, wh->wh_host);
			metrics_alert_delivery("dropped");
			dropped++;
			continue;
		}
		if (*recp == NULL) {
			*recp = xcalloc(1, sizeof(**recp));
			snprintf(
			    (*recp)->ar_id, sizeof((*recp)->ar_id), "%s", id);
		}
		d = xcalloc(1, sizeof(*d));
		d->d_rec = *recp;
		d->d_rec->ar_pending++;
		d->d_url = xstrdup(wh->wh_url);
		d->d_host = xstrdup(wh->wh_host);
		d->d_secret =
		    wh->wh_secret != NULL ? xstrdup(wh->wh_secret) : NULL;
		d->d_timeout_ms = wh->wh_timeout_ms;
		d->d_max_attempts = al_cf->cf_alert_max_attempts;
		d->d_initial_ms = al_cf->cf_alert_initial_backoff_ms;
		d->d_max_ms = al_cf->cf_alert_max_backoff_ms;
		d->d_body = xstrndup(body->so_buf, body->so_len);
		d->d_len = body->so_len;
		if ((d->d_timer = evtimer_new(al_base, retry_timer, d)) == NULL)
			fatalx("%s: evtimer_new", __func__);
		TAILQ_INSERT_TAIL(fresh, d, d_entry);
		al_n++;
	}
	spend_out_free(&json);
	spend_out_free(&slack);
	if (*recp != NULL)
		(*recp)->ar_failed += dropped;
	return (dropped);
}

/*
 * Fire alert a: one warning line, a row in the ledger, and a delivery to
 * every webhook. On the loop thread; never blocks.
 */
void
alerts_fire(const struct alert *a)
{
	struct ledger_alert la;
	struct spend_out text;
	struct deliveries fresh = TAILQ_HEAD_INITIALIZER(fresh);
	struct arec *rec = NULL;
	struct delivery *d;
	char id[ALERTS_ID_MAX], *line;
	size_t n;
	int t, dropped = 0;

	alerts_make_id(a, id, sizeof(id));
	spend_out_init(&text, ALERTS_BODY_MAX);
	alerts_text(a, id, 0, &text);
	n = text.so_buf != NULL ? text.so_len * 4 + 1 : 1;
	line = xmalloc(n);
	log_escape(line, n, text.so_buf != NULL ? text.so_buf : "",
	    text.so_buf != NULL ? text.so_len : 0);
	log_warnx("alerts: %s", line);
	free(line);
	spend_out_free(&text);
	metrics_alert_fired(a->al_kind);

	if (al_cv != NULL)
		dropped = alerts_queue(a, id, &rec, &fresh);

	memset(&la, 0, sizeof(la));
	la.la_id = id;
	la.la_fired_ms = a->al_at_ms;
	la.la_kind = a->al_kind;
	la.la_policy = a->al_policy;
	la.la_scope_key = a->al_scope_key;
	for (t = 0; t < TAG_MAX; t++)
		la.la_tags[t] = a->al_tags[t];
	la.la_window = a->al_window;
	la.la_window_start = a->al_window != NULL ? a->al_window_start : -1;
	la.la_reset_at = a->al_window != NULL && a->al_reset_at != POLICY_NEVER
	    ? a->al_reset_at
	    : -1;
	la.la_threshold_nusd = a->al_threshold_nusd;
	la.la_spent_nusd = a->al_spent_nusd;
	la.la_cap_nusd = a->al_cap_nusd;
	la.la_message = a->al_message;
	/* Webhooks it could not even be queued for make it failed. */
	la.la_delivery = rec != NULL ? "pending"
	    : dropped > 0	     ? "failed"
				     : "none";
	if (ledger_alert(&la) != 0)
		log_warnx("alerts: alert %s could not be queued for the "
			  "ledger; it is in this log only",
		    id);

	/* Start only now, so the row is queued before any status update. */
	while ((d = TAILQ_FIRST(&fresh)) != NULL) {
		TAILQ_REMOVE(&fresh, d, d_entry);
		TAILQ_INSERT_TAIL(&al_list, d, d_entry);
		delivery_start(d);
	}
}

/*
 * Deliver again an alert read back from the ledger with delivery still
 * pending (tollgate stopped or crashed before it was delivered), to the
 * current webhooks; nothing is logged as fired or written as new. An
 * alert whose deliveries are already queued is left alone. Receivers
 * dedupe by id.
 */
void
alerts_requeue(const struct alert *a, const char *id)
{
	struct deliveries fresh = TAILQ_HEAD_INITIALIZER(fresh);
	struct arec *rec = NULL;
	struct delivery *d;

	if (al_cv == NULL || al_cf == NULL || al_cf->cf_nwebhooks == 0)
		return;
	TAILQ_FOREACH(d, &al_list, d_entry)
	{
		if (strcmp(d->d_rec->ar_id, id) == 0)
			return;
	}
	log_info("alerts: alert %s was not delivered before tollgate "
		 "stopped; sending it again",
	    id);
	(void)alerts_queue(a, id, &rec, &fresh);
	while ((d = TAILQ_FIRST(&fresh)) != NULL) {
		TAILQ_REMOVE(&fresh, d, d_entry);
		TAILQ_INSERT_TAIL(&al_list, d, d_entry);
		delivery_start(d);
	}
}

/*
 * Fire the alert policy_fired reported for a call with attributes attr
 * (the attributes policy_fired was given) at now.
 */
void
alerts_threshold(
    const struct policy_alert *pa, const char *const *attr, int64_t now)
{
	const struct policy_scope *sc = &pa->pa_scope;
	const struct policy *po = sc->sc_policy;
	struct alert a;
	char win[32], *key = NULL;
	int t;

	memset(&a, 0, sizeof(a));
	a.al_kind = "threshold";
	if (po != NULL) {
		a.al_policy = po->po_name;
		key = policy_scope_key(po, attr);
		a.al_scope_key = key;
		a.al_window =
		    policy_window_name(&po->po_window, win, sizeof(win));
		for (t = 0; t < TAG_MAX; t++)
			if (po->po_per[t] && sc->sc_per[t][0] != '\0')
				a.al_tags[t] = sc->sc_per[t];
	}
	a.al_window_start = sc->sc_window_start;
	a.al_reset_at = sc->sc_reset_at;
	a.al_threshold_nusd = pa->pa_threshold_nusd;
	a.al_spent_nusd = sc->sc_spent;
	/* The cap in force: the hard cap plus the scope's extensions. */
	a.al_cap_nusd = po != NULL && po->po_cap_nusd != -1 ? sc->sc_limit : -1;
	a.al_at_ms = now;
	alerts_fire(&a);
	free(key);
}

/*
 * Unknown models alerted on today (UTC), so each fires once a day however
 * many calls it gets. Names come from clients: at most ALERTS_UNKNOWN_MAX
 * a day are remembered and alerted on; past that the day's further
 * unknown models go unalerted (their calls are still priced, logged and
 * counted in /metrics).
 */
static char *al_unknown[ALERTS_UNKNOWN_MAX];
static size_t al_nunknown;
static int64_t al_unknown_day = -1;

#define DAY_MS (24 * 3600 * 1000LL)

/* A rate of pUSD per token as USD per million tokens, "2.50", "0.075". */
static void
rate_usd(char *buf, size_t len, int64_t pusd_per_token)
{
	size_t n;
	char *dot;

	/* pUSD per token is USD per million tokens times 10^6: nUSD/M. */
	usd_format(buf, len, pusd_per_token * 1000);
	if ((dot = strchr(buf, '.')) == NULL)
		return;
	n = strlen(buf);
	while (n > (size_t)(dot - buf) + 3 && buf[n - 1] == '0')
		buf[--n] = '\0';
}

/*
 * A call asked for model, which the price table does not know, and was
 * priced at fam, the highest rates of family: fire an "unknown_model"
 * alert, unless one was fired for model earlier on the same UTC day.
 */
void
alerts_unknown_model(
    const char *model, const char *family, const struct price *fam, int64_t now)
{
	struct alert a;
	char in[32], out[32], *msg;
	int64_t day = now >= 0 ? now / DAY_MS : 0;
	size_t i;

	if (day != al_unknown_day) {
		for (i = 0; i < al_nunknown; i++)
			free(al_unknown[i]);
		al_nunknown = 0;
		al_unknown_day = day;
	}
	for (i = 0; i < al_nunknown; i++)
		if (strcmp(al_unknown[i], model) == 0)
			return;
	if (al_nunknown == ALERTS_UNKNOWN_MAX)
		return;
	al_unknown[al_nunknown++] = xstrdup(model);

	rate_usd(in, sizeof(in), fam->p_base.pr_input);
	rate_usd(out, sizeof(out), fam->p_base.pr_output);
	xasprintf(&msg,
	    "model '%s' has no price: its calls are priced at the highest "
	    "rates of family '%s' ($%s/M input, $%s/M output) until it is "
	    "added to the price table",
	    model, family, in, out);
	memset(&a, 0, sizeof(a));
	a.al_kind = "unknown_model";
	a.al_window_start = day * DAY_MS;
	a.al_reset_at = -1;
	a.al_threshold_nusd = -1;
	a.al_cap_nusd = -1;
	a.al_message = msg;
	a.al_at_ms = now;
	alerts_fire(&a);
	free(msg);
}

/*
 * Stop: every delivery not yet done is logged (its alert stays pending in
 * the ledger) and freed, then the multi handle.
 */
void
alerts_shutdown(void)
{
	struct delivery *d;

	while ((d = TAILQ_FIRST(&al_list)) != NULL) {
		log_warnx("alerts: alert %s not delivered to %s before exit "
			  "(%d attempt%s)",
		    d->d_rec->ar_id, d->d_host, d->d_attempts,
		    d->d_attempts == 1 ? "" : "s");
		metrics_alert_delivery("dropped");
		if (--d->d_rec->ar_pending == 0)
			free(d->d_rec);
		delivery_free(d);
	}
	alerts_configure(NULL);
	while (al_nunknown > 0)
		free(al_unknown[--al_nunknown]);
	al_unknown_day = -1;
	curlev_free(al_cv);
	al_cv = NULL;
	al_base = NULL;
}
