/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet's life on one instance (include/tollgate/fleet.h): the Redis
 * connection and what follows its state, the calls waiting for a lease,
 * the heartbeat every instance writes and GET /v1/fleet reads, one sender
 * per alert threshold, and the figures /metrics shows. The leases
 * themselves are lease.c's.
 *
 *   up       Redis answers: leases are synced (lease.c), the heartbeat
 *            is written every FLEET_BEAT_MS.
 *   down     Redis does not answer. when_down: local keeps admitting
 *            against the leases held, then against a local share of
 *            each cap's unleased room; refuse answers capped calls 503.
 *            Either way one alert says so, and the ledger records every
 *            call as always.
 *   back     every lease is synced at once: Redis counts what was spent
 *            meanwhile, the local shares end.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "tollgate/alerts.h"
#include "tollgate/config.h"
#include "tollgate/fleet.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "fleet_int.h"

#define FLEET_TICK_MS 100 /* waits, syncs due, the heartbeat */
#define FLEET_BEAT_MS 1000 /* heartbeat written */
#define FLEET_SEEN_MS 2000 /* the instances read */
#define FLEET_ALIVE_MS 10000 /* a heartbeat younger than this: alive */
#define FLEET_FORGET_MS (24 * 3600 * 1000LL) /* heartbeats removed */
#define FLEET_INSTANCES_MAX 4096 /* listed in GET /v1/fleet */

/* A call waiting for a lease top-up. */
struct fleet_wait {
	struct fleet_wait *fw_next, *fw_prev;
	int64_t fw_deadline; /* Unix ms */
	uint64_t fw_gen; /* the wake it was made in */
	void (*fw_cb)(void *, int);
	void *fw_arg;
};

/* An instance as its heartbeat describes it. */
struct fleet_peer {
	char *fp_name;
	cJSON *fp_beat; /* as written */
	int64_t fp_beat_ms;
};

struct fleet fl; /* the one fleet of this process */

static void fleet_wake(int);

/* The connection is ready (up) or a ready one was lost. */
static void
state_cb(int up, void *arg)
{
	struct alert a;
	char msg[512];

	(void)arg;
	if (up) {
		if (fl.f_down_since != 0) {
			fl.f_stats.fs_degraded_ms +=
			    (uint64_t)(wallclock_ms() - fl.f_down_since);
			log_info("fleet: Redis answers again after %" PRId64
				 " ms; syncing every lease",
			    wallclock_ms() - fl.f_down_since);
		}
		fl.f_down_since = 0;
		fl.f_up = 1;
		lease_back();
		fleet_beat();
		fleet_peers_read();
		shared_resync();
		fleet_wake(0);
		return;
	}
	fl.f_up = 0;
	fl.f_down_since = wallclock_ms();
	lease_down();
	snprintf(msg, sizeof(msg), "Redis at %s does not answer (%s): %s",
	    fl.f_conf->fc_url, rconn_error(fl.f_conn),
	    fl.f_conf->fc_when_down == FLEET_DOWN_LOCAL
		? "calls are admitted against the leases held, then against "
		  "a local share of each cap (docs/fleet.md, Redis down)"
		: "capped calls are refused with 503 until it is back");
	log_warnx("fleet: %s", msg);
	if (!fl.f_down_alerted) {
		/* Once per process: a flapping Redis is one story. */
		fl.f_down_alerted = 1;
		memset(&a, 0, sizeof(a));
		a.al_kind = "fleet";
		a.al_threshold_nusd = -1;
		a.al_cap_nusd = -1;
		a.al_message = msg;
		a.al_at_ms = wallclock_ms();
		alerts_fire(&a);
	}
	fleet_wake(0);
}

/* Take w off the list of waiting calls. */
static void
wait_unlink(struct fleet_wait *w)
{
	if (w->fw_prev != NULL)
		w->fw_prev->fw_next = w->fw_next;
	else
		fl.f_waits = w->fw_next;
	if (w->fw_next != NULL)
		w->fw_next->fw_prev = w->fw_prev;
	else
		fl.f_waits_tail = w->fw_prev;
	w->fw_next = w->fw_prev = NULL;
}

/*
 * Wake every waiting call (timed_out: only those past their deadline).
 * A woken call may wait again, or end other calls that wait: each pass
 * looks from the head for one not yet woken by this wake. Waits are added
 * at the tail, so the ones already woken and waiting again are behind
 * the rest, and the look finds the next one at once.
 */
static void
fleet_wake(int timed_out)
{
	struct fleet_wait *w;
	uint64_t gen = ++fl.f_wake_gen;
	int64_t now = wallclock_ms();

	for (;;) {
		for (w = fl.f_waits; w != NULL; w = w->fw_next)
			if (w->fw_gen < gen &&
			    (!timed_out || w->fw_deadline <= now))
				break;
		if (w == NULL)
			return;
		wait_unlink(w);
		if (timed_out)
			fl.f_stats.fs_wait_timeouts++;
		w->fw_cb(w->fw_arg, timed_out);
		free(w);
	}
}

/* A sync was answered: the calls waiting try again. */
void
fleet_synced(void)
{
	fleet_wake(0);
}

/* Calls started waiting: the syncs they need go out now. */
static void
pass_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	lease_pass(wallclock_ms());
}

static void
tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	int64_t now = wallclock_ms();

	(void)fd;
	(void)ev;
	(void)arg;
	fleet_wake(1);
	lease_pass(now);
	if (fl.f_up && now - fl.f_beat_at >= FLEET_BEAT_MS)
		fleet_beat();
	if (fl.f_up && now - fl.f_peers_at >= FLEET_SEEN_MS)
		fleet_peers_read();
	if (!fl.f_up && fl.f_waits != NULL)
		fleet_wake(0); /* down: the local shares decide at once */
}

/*
 * Join the fleet cf names (if any): connect to Redis, hold the counters'
 * leases, start the heartbeat. Returns 0; a Redis that does not answer is
 * not an error (the fleet starts down and connects when it can).
 */
int
fleet_start(
    struct event_base *base, struct config *cf, struct policy_counters *pc)
{
	struct timeval tv = {0, FLEET_TICK_MS * 1000};
	char chan[256];

	if (cf->cf_fleet == NULL)
		return (0);
	memset(&fl, 0, sizeof(fl));
	fl.f_base = base;
	fl.f_conf = cf->cf_fleet;
	fl.f_cf = config_ref(cf);
	fl.f_pc = pc;
	fl.f_started = wallclock_ms();
	/* Above every sequence number an earlier process of this instance
	 * can have used: it started earlier, and counts one per sync. */
	fl.f_seq = (uint64_t)fl.f_started * 1000;
	fl.f_down_since = fl.f_started; /* until the first connect */
	fl.f_conn =
	    rconn_new(base, fl.f_conf, "command", NULL, NULL, state_cb, NULL);
	snprintf(
	    chan, sizeof(chan), "%s%s", fl.f_conf->fc_prefix, SHARED_CHANNEL);
	fl.f_sub = rconn_new(base, fl.f_conf, "subscriber", chan,
	    shared_message, shared_sub_state, NULL);
	fl.f_tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	fl.f_pass = event_new(base, -1, 0, pass_cb, NULL);
	event_add(fl.f_tick, &tv);
	shared_start();
	log_info("fleet: instance %s, Redis %s, lease up to $%s per budget "
		 "scope for %" PRId64 " ms, when down: %s",
	    fl.f_conf->fc_instance, fl.f_conf->fc_url,
	    fleet_usd(fl.f_conf->fc_lease_nusd), fl.f_conf->fc_lease_ttl_ms,
	    fl.f_conf->fc_when_down == FLEET_DOWN_LOCAL ? "local" : "refuse");
	return (0);
}

/*
 * Leave the fleet: report what was spent and give back every lease, for
 * at most command_timeout while the loop runs (the calls have ended), then
 * close the connections. A lease not given back expires in Redis.
 */
void
fleet_stop(struct event_base *base)
{
	int64_t until;
	size_t i;

	if (fl.f_conf == NULL)
		return;
	fleet_wake(1);
	while (fl.f_waits != NULL) {
		struct fleet_wait *w = fl.f_waits;

		wait_unlink(w);
		w->fw_cb(w->fw_arg, 1);
		free(w);
	}
	if (fl.f_up) {
		lease_leave(wallclock_ms());
		fleet_beat_remove();
		until = wallclock_ms() + fl.f_conf->fc_command_timeout_ms;
		while (rconn_pending(fl.f_conn) && fl.f_up &&
		    wallclock_ms() < until)
			event_base_loop(base, EVLOOP_ONCE);
	}
	shared_stop();
	event_free(fl.f_tick);
	event_free(fl.f_pass);
	rconn_free(fl.f_sub);
	rconn_free(fl.f_conn);
	for (i = 0; i < fl.f_npeers; i++) {
		free(fl.f_peers[i].fp_name);
		cJSON_Delete(fl.f_peers[i].fp_beat);
	}
	free(fl.f_peers);
	config_unref(fl.f_cf);
	memset(&fl, 0, sizeof(fl));
}

/* The fleet's state as a call sees it. */
enum fleet_state
fleet_state(void)
{
	if (fl.f_conf == NULL)
		return (FLEET_OFF);
	return (fl.f_up ? FLEET_UP : FLEET_DOWN);
}

/* Are capped calls refused now (Redis down, when_down: refuse)? */
int
fleet_refuses_capped(void)
{
	return (fl.f_conf != NULL && !fl.f_up &&
	    fl.f_conf->fc_when_down == FLEET_DOWN_REFUSE);
}

/* This instance's name in the fleet; NULL without one. */
const char *
fleet_instance(void)
{
	return (fl.f_conf != NULL ? fl.f_conf->fc_instance : NULL);
}

/*
 * Wait for a lease top-up: cb(arg, 0) once a sync has been answered (the
 * call tries its admission again), or cb(arg, 1) at deadline (Unix ms).
 * Never calls cb before returning. The returned wait is freed once cb has
 * run; fleet_wait_cancel drops it before that.
 */
struct fleet_wait *
fleet_wait(int64_t deadline, void (*cb)(void *, int), void *arg)
{
	struct fleet_wait *w;

	w = xcalloc(1, sizeof(*w));
	w->fw_deadline = deadline;
	w->fw_cb = cb;
	w->fw_arg = arg;
	w->fw_gen = fl.f_wake_gen;
	w->fw_prev = fl.f_waits_tail;
	if (fl.f_waits_tail != NULL)
		fl.f_waits_tail->fw_next = w;
	else
		fl.f_waits = w;
	fl.f_waits_tail = w;
	fl.f_stats.fs_waits++;
	/* Ask now, not at the next tick: one pass for all the calls that
	 * start waiting in this loop turn. */
	event_active(fl.f_pass, 0, 0);
	return (w);
}

/* The call gave up waiting (it ended): cb will not run. */
void
fleet_wait_cancel(struct fleet_wait *w)
{
	if (w == NULL)
		return;
	wait_unlink(w);
	free(w);
}

/*
 * Redis did not apply a sync: it has applied stored, a later sequence
 * number, for this instance. Go past it, and say once why this happens.
 */
void
fleet_seq_behind(int64_t stored)
{
	if (stored > 0 && (uint64_t)stored >= fl.f_seq)
		fl.f_seq = (uint64_t)stored;
	if (!fl.f_seq_warned) {
		fl.f_seq_warned = 1;
		log_warnx("fleet: Redis has a later sync from instance %s than "
			  "this process sent: the clock went back across a "
			  "restart, or another process uses the same "
			  "fleet.instance (each must have its own)",
		    fl.f_conf->fc_instance);
	}
}

/* A $ amount with as many decimals as it needs, for log lines. */
const char *
fleet_usd(int64_t nusd)
{
	static char buf[32];
	size_t n;

	usd_format(buf, sizeof(buf), nusd);
	if (strchr(buf, '.') != NULL) {
		n = strlen(buf);
		while (n > 0 && buf[n - 1] == '0')
			buf[--n] = '\0';
		if (n > 0 && buf[n - 1] == '.')
			buf[--n] = '\0';
	}
	return (buf);
}

/*
 * Add name_usd (an exact decimal with nine places) and name_nusd (the
 * integer) to o: money in GET /v1/fleet as the rest of the admin API
 * writes it, never rounded.
 */
void
fleet_json_money(cJSON *o, const char *name, int64_t nusd)
{
	char key[64], buf[40];

	snprintf(key, sizeof(key), "%s_usd", name);
	usd_format(buf, sizeof(buf), nusd);
	cJSON_AddRawToObject(o, key, buf);
	snprintf(key, sizeof(key), "%s_nusd", name);
	snprintf(buf, sizeof(buf), "%" PRId64, nusd);
	cJSON_AddRawToObject(o, key, buf);
}

/* SET NX answered: this instance sends the threshold, or another does. */
struct threshold {
	struct policy_alert t_pa;
	const struct policy *t_po;
	char *t_attr[POLICY_ATTR_MAX];
	int64_t t_now;
	struct config *t_cf; /* owns t_po: kept until the answer */
};

static void
threshold_free(struct threshold *t)
{
	int i;

	for (i = 0; i < POLICY_ATTR_MAX; i++)
		free(t->t_attr[i]);
	config_unref(t->t_cf);
	free(t);
}

static void
threshold_cb(const redisReply *r, const char *err, void *arg)
{
	struct threshold *t = arg;

	if (r != NULL && r->type == REDIS_REPLY_NIL) {
		fl.f_stats.fs_alerts_lost++;
		log_debug("fleet: threshold of %s sent by another instance",
		    t->t_po->po_name);
	} else {
		/* Ours, or Redis failed: better twice than never. */
		if (r == NULL || err != NULL)
			log_warnx("fleet: cannot claim an alert in Redis (%s); "
				  "sending it from here",
			    err != NULL ? err : "no reply");
		else
			fl.f_stats.fs_alerts_won++;
		alerts_threshold(
		    &t->t_pa, (const char *const *)t->t_attr, t->t_now);
	}
	threshold_free(t);
}

/*
 * A threshold of one of cf's policies was crossed (policy_fired): with a
 * fleet, the instance that sets its key in Redis first sends it (SET NX,
 * kept until the window's end), so the fleet sends it once; without, it
 * is sent at once.
 */
void
fleet_threshold(struct config *cf, const struct policy_alert *pa,
    const char *const *attr, int64_t now)
{
	const struct policy_scope *sc = &pa->pa_scope;
	struct threshold *t;
	const char *argv[6];
	char *key = NULL, *scope, px[32];
	int64_t ttl;
	int i;

	if (fl.f_conf == NULL || !fl.f_up || sc->sc_policy == NULL) {
		alerts_threshold(pa, attr, now);
		return;
	}
	t = xcalloc(1, sizeof(*t));
	t->t_pa = *pa;
	t->t_po = sc->sc_policy;
	t->t_now = now;
	/* The policy is cf's: keep cf until Redis answers. */
	t->t_cf = config_ref(cf);
	for (i = 0; i < POLICY_ATTR_MAX; i++)
		if (attr[i] != NULL)
			t->t_attr[i] = xstrdup(attr[i]);
	scope = policy_scope_key(sc->sc_policy, attr);
	xasprintf(&key, "%sa:%s@%" PRId64 ":%" PRId64, fl.f_conf->fc_prefix,
	    scope, sc->sc_window_start, pa->pa_threshold_nusd);
	free(scope);
	ttl = sc->sc_reset_at == POLICY_NEVER || sc->sc_reset_at <= now
	    ? 366 * 24 * 3600 * 1000LL
	    : sc->sc_reset_at - now + 24 * 3600 * 1000LL;
	snprintf(px, sizeof(px), "%" PRId64, ttl);
	argv[0] = "SET";
	argv[1] = key;
	argv[2] = fl.f_conf->fc_instance;
	argv[3] = "NX";
	argv[4] = "PX";
	argv[5] = px;
	if (rconn_command(fl.f_conn, threshold_cb, t, 6, argv, NULL) == -1)
		threshold_cb(NULL, "the connection is down", t);
	free(key);
}

/* Written: the heartbeat's answer needs nothing. */
static void
ignore_cb(const redisReply *r, const char *err, void *arg)
{
	(void)r;
	(void)arg;
	if (err != NULL)
		log_debug("fleet: %s", err);
}

/* This instance's heartbeat, as GET /v1/fleet shows every instance's. */
static cJSON *
beat_json(int64_t now)
{
	struct lease_totals lt;
	cJSON *o;

	lease_totals(&lt, now);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "instance", fl.f_conf->fc_instance);
	cJSON_AddStringToObject(o, "version", TOLLGATE_VERSION);
	cJSON_AddNumberToObject(o, "pid", (double)getpid());
	cJSON_AddNumberToObject(o, "started_ms", (double)fl.f_started);
	cJSON_AddNumberToObject(o, "heartbeat_ms", (double)now);
	cJSON_AddNumberToObject(o, "leases", (double)lt.lt_leases);
	fleet_json_money(o, "leased", lt.lt_leased);
	fleet_json_money(o, "unreported", lt.lt_unreported);
	cJSON_AddNumberToObject(o, "report_lag_ms", (double)lt.lt_lag_ms);
	return (o);
}

/* Write the heartbeat: HSET <prefix>inst <instance> <json>. */
void
fleet_beat(void)
{
	const char *argv[4];
	char *key = NULL, *js;
	cJSON *o;

	fl.f_beat_at = wallclock_ms();
	o = beat_json(fl.f_beat_at);
	js = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	xasprintf(&key, "%sinst", fl.f_conf->fc_prefix);
	argv[0] = "HSET";
	argv[1] = key;
	argv[2] = fl.f_conf->fc_instance;
	argv[3] = js;
	(void)rconn_command(fl.f_conn, ignore_cb, NULL, 4, argv, NULL);
	free(key);
	free(js);
}

/* Leaving: this instance's heartbeat goes. */
void
fleet_beat_remove(void)
{
	const char *argv[3];
	char *key = NULL;

	xasprintf(&key, "%sinst", fl.f_conf->fc_prefix);
	argv[0] = "HDEL";
	argv[1] = key;
	argv[2] = fl.f_conf->fc_instance;
	(void)rconn_command(fl.f_conn, ignore_cb, NULL, 3, argv, NULL);
	free(key);
}

/* HGETALL <prefix>inst answered: the instances and their heartbeats. */
static void
peers_cb(const redisReply *r, const char *err, void *arg)
{
	const char *argv[3];
	char *key = NULL;
	int64_t now = wallclock_ms(), beat;
	size_t i, n = 0, alive = 0;
	cJSON *o, *hb;

	(void)arg;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY)
		return;
	for (i = 0; i < fl.f_npeers; i++) {
		free(fl.f_peers[i].fp_name);
		cJSON_Delete(fl.f_peers[i].fp_beat);
	}
	free(fl.f_peers);
	fl.f_peers = xcalloc(r->elements / 2 + 1, sizeof(*fl.f_peers));
	for (i = 0; i + 1 < r->elements && n < FLEET_INSTANCES_MAX; i += 2) {
		if (r->element[i]->type != REDIS_REPLY_STRING ||
		    r->element[i + 1]->type != REDIS_REPLY_STRING)
			continue;
		o = cJSON_ParseWithLength(
		    r->element[i + 1]->str, r->element[i + 1]->len);
		hb = o != NULL
		    ? cJSON_GetObjectItemCaseSensitive(o, "heartbeat_ms")
		    : NULL;
		beat = cJSON_IsNumber(hb) ? (int64_t)hb->valuedouble : 0;
		if (now - beat > FLEET_FORGET_MS) {
			/* Gone a day: nobody needs its line any more. */
			xasprintf(&key, "%sinst", fl.f_conf->fc_prefix);
			argv[0] = "HDEL";
			argv[1] = key;
			argv[2] = r->element[i]->str;
			(void)rconn_command(
			    fl.f_conn, ignore_cb, NULL, 3, argv, NULL);
			free(key);
			key = NULL;
			cJSON_Delete(o);
			continue;
		}
		fl.f_peers[n].fp_name = xstrdup(r->element[i]->str);
		fl.f_peers[n].fp_beat = o;
		fl.f_peers[n].fp_beat_ms = beat;
		if (now - beat <= FLEET_ALIVE_MS)
			alive++;
		n++;
	}
	fl.f_npeers = n;
	fl.f_alive = alive > 0 ? alive : 1;
}

/* Read every instance's heartbeat (GET /v1/fleet, the local shares). */
void
fleet_peers_read(void)
{
	const char *argv[2];
	char *key = NULL;

	fl.f_peers_at = wallclock_ms();
	xasprintf(&key, "%sinst", fl.f_conf->fc_prefix);
	argv[0] = "HGETALL";
	argv[1] = key;
	(void)rconn_command(fl.f_conn, peers_cb, NULL, 2, argv, NULL);
	free(key);
}

#define BEAT_MONEY_MAX 8 /* money fields of a heartbeat rewritten */

/*
 * A heartbeat read back from Redis has its money parsed as doubles: write
 * every <name>_usd again from its exact <name>_nusd (integers up to 2^53
 * survive a double; anything else is left as it came).
 */
static void
beat_money(cJSON *p)
{
	const cJSON *it;
	char name[BEAT_MONEY_MAX][48], usd[sizeof(name) + 8];
	int64_t v[BEAT_MONEY_MAX];
	size_t i, k = 0, n;

	for (it = p->child; it != NULL && k < BEAT_MONEY_MAX; it = it->next) {
		if (it->string == NULL || !cJSON_IsNumber(it) ||
		    (n = strlen(it->string)) <= 5 || n - 5 >= sizeof(name[0]) ||
		    strcmp(it->string + n - 5, "_nusd") != 0 ||
		    it->valuedouble < -9007199254740992.0 ||
		    it->valuedouble > 9007199254740992.0)
			continue;
		snprintf(
		    name[k], sizeof(name[k]), "%.*s", (int)(n - 5), it->string);
		v[k++] = (int64_t)it->valuedouble;
	}
	for (i = 0; i < k; i++) {
		snprintf(usd, sizeof(usd), "%s_usd", name[i]);
		cJSON_DeleteItemFromObjectCaseSensitive(p, usd);
		snprintf(usd, sizeof(usd), "%s_nusd", name[i]);
		cJSON_DeleteItemFromObjectCaseSensitive(p, usd);
		fleet_json_money(p, name[i], v[i]);
	}
}

/*
 * GET /v1/fleet: this instance, its Redis, every instance's last
 * heartbeat, and the leases held here. {"enabled": false} without fleet.
 */
cJSON *
fleet_json(void)
{
	const struct rconn_stats *rs;
	cJSON *o, *redis, *arr, *p, *leases;
	int64_t now = wallclock_ms();
	size_t i;

	o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "enabled", fl.f_conf != NULL);
	if (fl.f_conf == NULL)
		return (o);
	cJSON_AddStringToObject(o, "instance", fl.f_conf->fc_instance);
	cJSON_AddStringToObject(o, "state", fl.f_up ? "up" : "degraded");
	cJSON_AddStringToObject(o, "when_down",
	    fl.f_conf->fc_when_down == FLEET_DOWN_LOCAL ? "local" : "refuse");
	redis = cJSON_AddObjectToObject(o, "redis");
	cJSON_AddStringToObject(redis, "url", fl.f_conf->fc_url);
	cJSON_AddBoolToObject(redis, "connected", fl.f_up);
	if (!fl.f_up)
		cJSON_AddStringToObject(redis, "error", rconn_error(fl.f_conn));
	if (fl.f_down_since != 0)
		cJSON_AddNumberToObject(
		    redis, "down_for_ms", (double)(now - fl.f_down_since));
	rs = rconn_stats(fl.f_conn);
	cJSON_AddNumberToObject(redis, "commands", (double)rs->rs_commands);
	cJSON_AddNumberToObject(redis, "errors", (double)rs->rs_errors);
	cJSON_AddNumberToObject(
	    redis, "last_rtt_us", (double)rs->rs_last_rtt_us);
	arr = cJSON_AddArrayToObject(o, "instances");
	for (i = 0; i < fl.f_npeers; i++) {
		/* Anyone who can write to Redis writes these: only an object
		 * is shown, and its money as this API writes it. */
		p = cJSON_IsObject(fl.f_peers[i].fp_beat)
		    ? cJSON_Duplicate(fl.f_peers[i].fp_beat, 1)
		    : NULL;
		if (p == NULL)
			p = cJSON_CreateObject();
		beat_money(p);
		cJSON_DeleteItemFromObjectCaseSensitive(p, "instance");
		cJSON_AddStringToObject(p, "instance", fl.f_peers[i].fp_name);
		cJSON_AddNumberToObject(p, "heartbeat_age_ms",
		    (double)(now - fl.f_peers[i].fp_beat_ms));
		cJSON_AddBoolToObject(p, "alive",
		    now - fl.f_peers[i].fp_beat_ms <= FLEET_ALIVE_MS);
		cJSON_AddItemToArray(arr, p);
	}
	leases = lease_json(now);
	cJSON_AddItemToObject(o, "rate_leases", rate_json(now, leases));
	cJSON_AddItemToObject(o, "leases", leases);
	return (o);
}

/* The fleet's figures for GET /metrics; all zero without a fleet. */
void
fleet_get_stats(struct fleet_stats *fs)
{
	const struct rconn_stats *rs;
	struct lease_totals lt;

	memset(fs, 0, sizeof(*fs));
	if (fl.f_conf == NULL)
		return;
	*fs = fl.f_stats;
	fs->fs_state = fl.f_up ? FLEET_UP : FLEET_DOWN;
	rs = rconn_stats(fl.f_conn);
	fs->fs_commands = rs->rs_commands;
	fs->fs_errors = rs->rs_errors;
	fs->fs_timeouts = rs->rs_timeouts;
	rs = rconn_stats(fl.f_sub);
	fs->fs_commands += rs->rs_commands;
	fs->fs_errors += rs->rs_errors;
	fs->fs_timeouts += rs->rs_timeouts;
	if (fl.f_down_since != 0)
		fs->fs_degraded_ms +=
		    (uint64_t)(wallclock_ms() - fl.f_down_since);
	lease_totals(&lt, wallclock_ms());
	fs->fs_leased_nusd = lt.lt_leased;
	fs->fs_unreported_nusd = lt.lt_unreported;
}
