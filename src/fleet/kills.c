/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kills across the fleet. Every kill lives in Redis as one field of the
 * hash <prefix>kills (id -> the kill's JSON: one GET /v1/kills item plus
 * "instance", who made it), and every change is announced on the channel
 * of the same name ("add <id>", "del <id>"). Each instance keeps its own
 * list (src/policy/kills.c) and its own ledger rows; this file keeps the
 * two in step:
 *
 *   made here    POST /v1/kills or a breaker: the kill is written and
 *                announced at once (FLEET_SCRIPT_KILL_ADD, atomic).
 *   lifted here  DELETE /v1/kills/{id}: HDEL, announced, and the id is
 *                remembered as lifted for KILLS_LIFTED_KEEP_MS in the zset
 *                <prefix>kills:lifted (FLEET_SCRIPT_KILL_LIFT).
 *   "add <id>"   HGET it, check it as strictly as POST /v1/kills checks a
 *                body (it comes from the network), keep it under the same
 *                id (kills_adopt): the kills hook stops the calls in flight
 *                it matches. Never announced again: no loops.
 *   "del <id>"   lifted here too.
 *   (re)connect  either connection: read the whole hash and reconcile.
 *                Kills missing here are added; expired ones are dropped
 *                from the hash; kills held here that the hash lacks are
 *                shared (made while Redis was down, or Redis lost its
 *                data) unless the fleet lifted them meanwhile, in which
 *                case they are lifted here; lifts made here while Redis
 *                was down are sent first.
 *
 * Why a lifted zset rather than "not in the hash means lifted": a Redis
 * that restarts empty would otherwise lift every kill at once (failing
 * open), and an instance could not tell a kill it made while Redis was
 * down from one lifted elsewhere while it was away.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/config.h"
#include "tollgate/fleet.h"
#include "tollgate/kills.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "fleet_int.h"

#define KILLS_LIFTED_KEEP_MS (30 * 24 * 3600 * 1000LL) /* lifts remembered */
#define KILLS_LIFTED_MAX 100000 /* ... at most this many */
#define KILLS_REREAD_MAX 3 /* reads redone because messages crossed them */
#define KILLS_ID_MAX 64 /* longer ids in messages are not looked up */
#define KILLS_DELS_KEPT 256 /* "del <id>" remembered against late HGETs */

/* The fleet's kills on this instance (zero without fleet:). */
static struct {
	char **kf_lifted; /* lifted here, Redis has not said it knows */
	size_t kf_nlifted;
	/* The last lifts announced, against late HGET answers. */
	char kf_dels[KILLS_DELS_KEPT][KILLS_ID_MAX + 1];
	size_t kf_ndels; /* announced since the start */
	int kf_reading; /* a reconcile's HGETALL is in flight */
	int kf_again; /* another reconcile was asked for meanwhile */
	int kf_rereads; /* reads redone in a row */
	uint64_t kf_msgs; /* messages received */
	uint64_t kf_msgs_at; /* ... when the read was sent */
	int kf_on; /* between fleet_kills_start and _stop */
} kf;

static char *
hash_key(void)
{
	char *key = NULL;

	xasprintf(&key, "%skills", fl.f_conf->fc_prefix);
	return (key);
}

static char *
lifted_key(void)
{
	char *key = NULL;

	xasprintf(&key, "%skills:lifted", fl.f_conf->fc_prefix);
	return (key);
}

/* An id from the network, escaped for a log line. */
static const char *
id_esc(const char *id, size_t len)
{
	static char buf[KILLS_ID_MAX * 4 + 1];

	log_escape(
	    buf, sizeof(buf), id, len < KILLS_ID_MAX ? len : KILLS_ID_MAX);
	return (buf);
}

static int
lifted_find(const char *id)
{
	size_t i;

	for (i = 0; i < kf.kf_nlifted; i++)
		if (strcmp(kf.kf_lifted[i], id) == 0)
			return ((int)i);
	return (-1);
}

/* Remember a lift Redis has not heard of, to send when it answers. */
static void
lifted_remember(const char *id)
{
	if (!kf.kf_on || lifted_find(id) != -1)
		return;
	if (kf.kf_nlifted >= KILLS_MAX) {
		log_warnx("fleet: more than %d lifts wait for Redis; kill %s "
			  "is lifted here only",
		    KILLS_MAX, id);
		return;
	}
	kf.kf_lifted = xreallocarray(
	    kf.kf_lifted, kf.kf_nlifted + 1, sizeof(*kf.kf_lifted));
	kf.kf_lifted[kf.kf_nlifted++] = xstrdup(id);
}

static void
lifted_forget(const char *id)
{
	int i;

	if ((i = lifted_find(id)) == -1)
		return;
	free(kf.kf_lifted[i]);
	kf.kf_lifted[i] = kf.kf_lifted[--kf.kf_nlifted];
}

/*
 * Was id lifted by an announcement lately? An HGET sent before a lift
 * may be answered after its announcement arrived (two connections), and
 * must not bring the kill back.
 */
static int
dels_find(const char *id)
{
	size_t i,
	    n = kf.kf_ndels < KILLS_DELS_KEPT ? kf.kf_ndels : KILLS_DELS_KEPT;

	for (i = 0; i < n; i++)
		if (strcmp(kf.kf_dels[i], id) == 0)
			return (1);
	return (0);
}

/* FLEET_SCRIPT_KILL_ADD answered (arg: the id, to free). */
static void
share_cb(const redisReply *r, const char *err, void *arg)
{
	char *id = arg;

	if (!kf.kf_on) {
		free(id);
		return;
	}
	if (r == NULL || err != NULL) {
		/* A lost connection reconciles when it is back. */
		log_warnx("fleet: kill %s not shared yet: %s", id,
		    err != NULL ? err : "no reply");
	} else if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
		/* Another instance lifted it while this one was away. */
		if (kills_remove(id, wallclock_ms()) == 0)
			log_info("fleet: kill %s was lifted in the fleet while "
				 "this instance was away; lifted here too",
			    id);
	} else
		log_debug("fleet: kill %s shared", id);
	free(id);
}

/* Write k to Redis and announce it (its maker: origin, or this instance). */
static void
kill_share(const struct kill *k)
{
	const char *argv[6];
	char *hkey, *tkey, *js, *id, now[32];
	cJSON *o;

	o = kills_json(k);
	if (!k->k_learnt &&
	    cJSON_AddStringToObject(o, "instance", fl.f_conf->fc_instance) ==
		NULL)
		fatalx("%s: cJSON", __func__);
	if ((js = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: cJSON", __func__);
	cJSON_Delete(o);
	hkey = hash_key();
	tkey = lifted_key();
	snprintf(now, sizeof(now), "%" PRId64, wallclock_ms());
	argv[0] = hkey;
	argv[1] = tkey;
	argv[2] = k->k_id;
	argv[3] = js;
	argv[4] = hkey; /* the channel has the hash's name */
	argv[5] = now;
	id = xstrdup(k->k_id);
	if (rconn_eval(fl.f_conn, FLEET_SCRIPT_KILL_ADD, share_cb, id, 2, 6,
		argv, NULL) == -1) {
		log_info("fleet: kill %s is kept here until Redis answers; it "
			 "is shared then",
		    id);
		free(id);
	}
	cJSON_free(js);
	free(hkey);
	free(tkey);
}

/* FLEET_SCRIPT_KILL_LIFT answered (arg: the id, to free). */
static void
lift_cb(const redisReply *r, const char *err, void *arg)
{
	char *id = arg;

	if (!kf.kf_on) {
		free(id);
		return;
	}
	if (r == NULL || err != NULL) {
		log_warnx("fleet: the lift of kill %s is not shared yet: %s",
		    id, err != NULL ? err : "no reply");
		lifted_remember(id);
	} else {
		lifted_forget(id);
		log_debug("fleet: lift of kill %s shared", id);
	}
	free(id);
}

/* HDEL the kill, remember the lift, announce it. */
static void
kill_lift_send(const char *id)
{
	const char *av[7];
	char *hkey, *tkey, now[32], until[32], max[32], *arg;
	int64_t t = wallclock_ms();

	hkey = hash_key();
	tkey = lifted_key();
	snprintf(now, sizeof(now), "%" PRId64, t);
	snprintf(until, sizeof(until), "%" PRId64,
	    (int64_t)(t + KILLS_LIFTED_KEEP_MS));
	snprintf(max, sizeof(max), "%d", KILLS_LIFTED_MAX);
	av[0] = hkey;
	av[1] = tkey;
	av[2] = id;
	av[3] = hkey; /* the channel */
	av[4] = now;
	av[5] = until;
	av[6] = max;
	arg = xstrdup(id);
	if (rconn_eval(fl.f_conn, FLEET_SCRIPT_KILL_LIFT, lift_cb, arg, 2, 7,
		av, NULL) == -1) {
		free(arg);
		lifted_remember(id);
	}
	free(hkey);
	free(tkey);
}

/*
 * A kill was made on this instance (the admin API, a breaker): share it
 * with the fleet. Without a fleet, nothing. A kill learnt from the fleet
 * is never shared back from here. With Redis down it is shared when
 * Redis answers again (the reconcile finds the hash lacks it).
 */
void
fleet_kill_added(const struct kill *k)
{
	if (fl.f_conf == NULL || k == NULL || k->k_learnt)
		return;
	if (!fl.f_up) {
		log_info("fleet: kill %s is kept here until Redis answers; it "
			 "is shared then",
		    k->k_id);
		return;
	}
	kill_share(k);
}

/*
 * A kill was lifted on this instance (DELETE /v1/kills/{id}): lift it
 * for the whole fleet, now or when Redis answers again.
 */
void
fleet_kill_lifted(const char *id)
{
	if (fl.f_conf == NULL || id == NULL)
		return;
	/* Until Redis has it, a read or an HGET answered meanwhile must
	 * not bring the kill back here. */
	lifted_remember(id);
	if (!fl.f_up) {
		log_info("fleet: the lift of kill %s is sent when Redis "
			 "answers again",
		    id);
		return;
	}
	kill_lift_send(id);
}

/* HDEL one field, answer unneeded (an expired kill, say). */
static void
hash_drop(const char *id, size_t len)
{
	const char *argv[3];
	size_t lens[3];
	char *key = hash_key();

	argv[0] = "HDEL";
	lens[0] = 4;
	argv[1] = key;
	lens[1] = strlen(key);
	argv[2] = id;
	lens[2] = len;
	(void)rconn_command(fl.f_conn, NULL, NULL, 3, argv, lens);
	free(key);
}

/*
 * One kill as the hash holds it, under field id: checked, then kept here.
 * Returns 1 when it is (or already was) live here, 0 when it has expired
 * (and is dropped from the hash), -1 when it is refused.
 */
static int
kill_learn(const char *id, size_t idlen, const char *js, size_t len)
{
	const struct kill *out;
	struct kill *k;
	char *why = NULL;

	if ((k = kills_decode(js, len, &why)) == NULL) {
		log_warnx("fleet: kill %s in Redis refused: %s",
		    id_esc(id, idlen), why);
		free(why);
		return (-1);
	}
	if (strlen(k->k_id) != idlen || memcmp(k->k_id, id, idlen) != 0) {
		log_warnx("fleet: kill %s in Redis refused: its id is %s, "
			  "not the field it is stored under",
		    id_esc(id, idlen), k->k_id);
		kills_discard(k);
		return (-1);
	}
	switch (kills_adopt(k, wallclock_ms(), &out, &why)) {
	case 0:
		fl.f_stats.fs_kills_in++;
		return (1);
	case 1:
		return (1);
	case 2:
		hash_drop(id, idlen);
		return (0);
	default:
		log_warnx("fleet: kill %s in Redis not applied: %s",
		    id_esc(id, idlen), why);
		free(why);
		return (-1);
	}
}

/* HGET answered for an "add <id>" (arg: the id, to free). */
static void
get_cb(const redisReply *r, const char *err, void *arg)
{
	char *id = arg;

	if (!kf.kf_on || r == NULL || err != NULL) {
		if (kf.kf_on)
			log_warnx("fleet: kill %s announced but not read: %s",
			    id, err != NULL ? err : "no reply");
		free(id);
		return;
	}
	/* nil: lifted or dropped since it was announced. */
	if (r->type == REDIS_REPLY_STRING &&
	    kills_find(id, wallclock_ms()) == NULL && lifted_find(id) == -1 &&
	    !dels_find(id))
		(void)kill_learn(id, strlen(id), r->str, r->len);
	free(id);
}

/* A message on <prefix>kills: "add <id>" or "del <id>". */
void
fleet_kills_message(const char *msg, size_t len, void *unused)
{
	const char *argv[3];
	char id[KILLS_ID_MAX + 1], *key, *arg;
	size_t n;

	(void)unused;
	kf.kf_msgs++;
	if (len < 5 || len - 4 > KILLS_ID_MAX ||
	    (memcmp(msg, "add ", 4) != 0 && memcmp(msg, "del ", 4) != 0)) {
		log_warnx("fleet: a message on the kills channel is neither "
			  "\"add <id>\" nor \"del <id>\"; ignored");
		return;
	}
	n = len - 4;
	memcpy(id, msg + 4, n);
	id[n] = '\0';
	if (strlen(id) != n) {
		log_warnx("fleet: a kill id with a NUL byte; ignored");
		return;
	}
	if (msg[0] == 'd') {
		snprintf(kf.kf_dels[kf.kf_ndels++ % KILLS_DELS_KEPT],
		    sizeof(kf.kf_dels[0]), "%s", id);
		if (kills_remove(id, wallclock_ms()) == 0)
			log_info("fleet: kill %s lifted in the fleet; lifted "
				 "here",
			    id_esc(id, n));
		return;
	}
	if (kills_find(id, wallclock_ms()) != NULL || lifted_find(id) != -1)
		return; /* ours coming back, or one already here */
	if (!fl.f_up)
		return; /* the reconcile when Redis answers reads it */
	key = hash_key();
	argv[0] = "HGET";
	argv[1] = key;
	argv[2] = id;
	arg = xstrdup(id);
	if (rconn_command(fl.f_conn, get_cb, arg, 3, argv, NULL) == -1)
		free(arg); /* down: the reconcile when it is back reads it */
	free(key);
}

/* The live kills here, for the reconcile (copied: it adds and lifts). */
struct held {
	char **h_ids;
	size_t h_n;
};

static void
held_cb(const struct kill *k, void *arg)
{
	struct held *h = arg;

	if (kills_find(k->k_id, wallclock_ms()) != k)
		return; /* expired */
	h->h_ids = xreallocarray(h->h_ids, h->h_n + 1, sizeof(*h->h_ids));
	h->h_ids[h->h_n++] = xstrdup(k->k_id);
}

static int
id_cmp(const void *a, const void *b)
{
	return (strcmp(*(const char *const *)a, *(const char *const *)b));
}

/* HGETALL <prefix>kills answered: reconcile (see the top of the file). */
static void
read_cb(const redisReply *r, const char *err, void *arg)
{
	struct held h = {NULL, 0};
	const struct kill *k;
	const char **seen = NULL;
	size_t i, nseen = 0, added = 0, shared = 0;
	uint64_t before = fl.f_stats.fs_kills_in;

	(void)arg;
	kf.kf_reading = 0;
	if (!kf.kf_on)
		return;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		/* A lost connection reconciles again when it is back. */
		log_warnx("fleet: cannot read the fleet's kills: %s",
		    err != NULL ? err : "not an array");
		return;
	}
	if ((kf.kf_again || kf.kf_msgs != kf.kf_msgs_at) &&
	    kf.kf_rereads < KILLS_REREAD_MAX) {
		/* A change announced meanwhile may predate this read's
		 * answer or not: read again rather than guess. */
		kf.kf_again = 0;
		kf.kf_rereads++;
		fleet_kills_resync();
		return;
	}
	kf.kf_again = 0;
	kf.kf_rereads = 0;
	seen = xcalloc(r->elements / 2 + 1, sizeof(*seen));
	for (i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *f = r->element[i], *v = r->element[i + 1];

		if (f->type != REDIS_REPLY_STRING ||
		    v->type != REDIS_REPLY_STRING)
			continue;
		if (strlen(f->str) != f->len || lifted_find(f->str) != -1)
			continue; /* being lifted: the lift was sent first */
		if (kill_learn(f->str, f->len, v->str, v->len) == 1)
			seen[nseen++] = f->str;
	}
	added = (size_t)(fl.f_stats.fs_kills_in - before);
	qsort(seen, nseen, sizeof(*seen), id_cmp);
	kills_each(held_cb, &h);
	for (i = 0; i < h.h_n; i++) {
		const char *key = h.h_ids[i];

		if (nseen > 0 &&
		    bsearch(&key, seen, nseen, sizeof(*seen), id_cmp) != NULL)
			continue;
		if ((k = kills_find(key, wallclock_ms())) != NULL) {
			kill_share(k);
			shared++;
		}
	}
	for (i = 0; i < h.h_n; i++)
		free(h.h_ids[i]);
	free(h.h_ids);
	free(seen);
	log_info("fleet: kills reconciled with Redis: %zu in the fleet, %zu "
		 "learnt, %zu shared from here",
	    nseen, added, shared);
}

/*
 * Reconcile this instance's kills with the fleet's (at every connect of
 * either connection): send the lifts made while Redis was down, then read
 * the whole hash. One read at a time; one asked for meanwhile follows.
 */
void
fleet_kills_resync(void)
{
	const char *argv[2];
	char **ids;
	size_t i, n;
	char *key;

	if (!kf.kf_on || !fl.f_up)
		return; /* the command connection's return calls this */
	if (kf.kf_reading) {
		kf.kf_again = 1;
		return;
	}
	/* Lifts first: the read then no longer holds them. */
	ids = kf.kf_lifted;
	n = kf.kf_nlifted;
	kf.kf_lifted = NULL;
	kf.kf_nlifted = 0;
	for (i = 0; i < n; i++) {
		kill_lift_send(ids[i]);
		/* Still skipped by the read until the lift is answered. */
		lifted_remember(ids[i]);
		free(ids[i]);
	}
	free(ids);
	key = hash_key();
	argv[0] = "HGETALL";
	argv[1] = key;
	kf.kf_msgs_at = kf.kf_msgs;
	if (rconn_command(fl.f_conn, read_cb, NULL, 2, argv, NULL) == 0)
		kf.kf_reading = 1;
	free(key);
}

/* The subscriber is (back) up: messages may have been missed. */
void
fleet_kills_sub_state(int up, void *arg)
{
	(void)arg;
	if (up)
		fleet_kills_resync();
}

/* The fleet started: kills are shared from now on. */
void
fleet_kills_start(void)
{
	memset(&kf, 0, sizeof(kf));
	kf.kf_on = 1;
}

/* The fleet stops: answers still due are dropped. */
void
fleet_kills_stop(void)
{
	size_t i;

	if (kf.kf_nlifted > 0)
		log_warnx("fleet: %zu lifts made here never reached Redis; "
			  "lift them again in the fleet",
		    kf.kf_nlifted);
	for (i = 0; i < kf.kf_nlifted; i++)
		free(kf.kf_lifted[i]);
	free(kf.kf_lifted);
	memset(&kf, 0, sizeof(kf));
}
