/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lists shared across the fleet, each described by a small table of
 * operations (struct shared_kind): kills (kills.c) and budget extensions
 * (extensions.c). Every item lives in Redis as one field of a hash
 * <prefix><list> (id -> the item's JSON, plus "instance", who made it),
 * and every change is announced on the one channel <prefix>kills ("add
 * <id>", "del <id>"; the id's prefix, "k_" for kills and "x_" for
 * extensions, names the list). Each instance keeps its own list
 * (src/policy/) and its own ledger rows; this file keeps the two in
 * step, the same way for every list:
 *
 *   made here    the item is written and announced at once
 *                (FLEET_SCRIPT_SHARE_ADD, atomic).
 *   lifted here  (a kill lifted, an extension revoked) HDEL, announced,
 *                and the id is remembered as lifted for
 *                SHARED_LIFTED_KEEP_MS in the zset <prefix><list>:lifted
 *                (FLEET_SCRIPT_SHARE_LIFT).
 *   "add <id>"   HGET it, check it as strictly as the admin API checks a
 *                body (it comes from the network), keep it under the same
 *                id (the list's learn). Never announced again: no loops.
 *   "del <id>"   lifted here too.
 *   (re)connect  either connection: read each whole hash and reconcile.
 *                Items missing here are added; expired ones are dropped
 *                from the hash; items held here that the hash lacks are
 *                shared (made while Redis was down, or Redis lost its
 *                data) unless the fleet lifted them meanwhile, in which
 *                case they are lifted here; lifts made here while Redis
 *                was down are sent first.
 *
 * Why a lifted zset rather than "not in the hash means lifted": a Redis
 * that restarts empty would otherwise lift every item at once (failing
 * open for kills, closing every raised budget for extensions), and an
 * instance could not tell an item it made while Redis was down from one
 * lifted elsewhere while it was away.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/config.h"
#include "tollgate/fleet.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "fleet_int.h"

#define SHARED_LIFTED_KEEP_MS (30 * 24 * 3600 * 1000LL) /* lifts remembered */
#define SHARED_LIFTED_MAX 100000 /* ... at most this many per list */
#define SHARED_LIFTS_WAITING 1024 /* lifts held here for Redis, per list */
#define SHARED_REREAD_MAX 3 /* reads redone because messages crossed them */
#define SHARED_ID_MAX 64 /* longer ids in messages are not looked up */
#define SHARED_DELS_KEPT 256 /* "del <id>" remembered against late HGETs */

/* The lists, by SHARED_KILLS and SHARED_EXTENSIONS. */
static const struct shared_kind *const kinds[SHARED_NKINDS] = {
    [SHARED_KILLS] = &shared_kills,
    [SHARED_EXTENSIONS] = &shared_extensions,
};

/* One list's state on this instance (zero without fleet:). */
struct shared_list {
	const struct shared_kind *sl_kind;
	char **sl_lifted; /* lifted here, Redis has not said it knows */
	size_t sl_nlifted;
	/* The last lifts announced, against late HGET answers. */
	char sl_dels[SHARED_DELS_KEPT][SHARED_ID_MAX + 1];
	size_t sl_ndels; /* announced since the start */
	int sl_reading; /* a reconcile's HGETALL is in flight */
	int sl_again; /* another reconcile was asked for meanwhile */
	int sl_rereads; /* reads redone in a row */
	uint64_t sl_msgs; /* messages received for this list */
	uint64_t sl_msgs_at; /* ... when the read was sent */
};

static struct {
	struct shared_list sh_list[SHARED_NKINDS];
	int sh_on; /* between shared_start and shared_stop */
} sh;

/* An answer still due names the list and the id (both freed with it). */
struct shared_arg {
	struct shared_list *sa_list;
	char *sa_id;
};

static void shared_read(struct shared_list *);

static struct shared_arg *
arg_new(struct shared_list *sl, const char *id)
{
	struct shared_arg *sa = xcalloc(1, sizeof(*sa));

	sa->sa_list = sl;
	sa->sa_id = xstrdup(id);
	return (sa);
}

static void
arg_free(struct shared_arg *sa)
{
	free(sa->sa_id);
	free(sa);
}

static char *
hash_key(const struct shared_list *sl)
{
	char *key = NULL;

	xasprintf(&key, "%s%s", fl.f_conf->fc_prefix, sl->sl_kind->sk_list);
	return (key);
}

static char *
lifted_key(const struct shared_list *sl)
{
	char *key = NULL;

	xasprintf(
	    &key, "%s%s:lifted", fl.f_conf->fc_prefix, sl->sl_kind->sk_list);
	return (key);
}

/* The one channel every list announces on. */
static char *
chan_key(void)
{
	char *key = NULL;

	xasprintf(&key, "%s%s", fl.f_conf->fc_prefix, SHARED_CHANNEL);
	return (key);
}

/* An id from the network, escaped for a log line. */
static const char *
id_esc(const char *id, size_t len)
{
	static char buf[SHARED_ID_MAX * 4 + 1];

	log_escape(
	    buf, sizeof(buf), id, len < SHARED_ID_MAX ? len : SHARED_ID_MAX);
	return (buf);
}

static int
lifted_find(const struct shared_list *sl, const char *id)
{
	size_t i;

	for (i = 0; i < sl->sl_nlifted; i++)
		if (strcmp(sl->sl_lifted[i], id) == 0)
			return ((int)i);
	return (-1);
}

/* Remember a lift Redis has not heard of, to send when it answers. */
static void
lifted_remember(struct shared_list *sl, const char *id)
{
	const struct shared_kind *sk = sl->sl_kind;

	if (!sh.sh_on || lifted_find(sl, id) != -1)
		return;
	if (sl->sl_nlifted >= SHARED_LIFTS_WAITING) {
		log_warnx("fleet: more than %d %ss wait for Redis; %s %s is "
			  "%s here only",
		    SHARED_LIFTS_WAITING, sk->sk_lift, sk->sk_noun, id,
		    sk->sk_lifted);
		return;
	}
	sl->sl_lifted = xreallocarray(
	    sl->sl_lifted, sl->sl_nlifted + 1, sizeof(*sl->sl_lifted));
	sl->sl_lifted[sl->sl_nlifted++] = xstrdup(id);
}

static void
lifted_forget(struct shared_list *sl, const char *id)
{
	int i;

	if ((i = lifted_find(sl, id)) == -1)
		return;
	free(sl->sl_lifted[i]);
	sl->sl_lifted[i] = sl->sl_lifted[--sl->sl_nlifted];
}

/*
 * Was id lifted by an announcement lately? An HGET sent before a lift
 * may be answered after its announcement arrived (two connections), and
 * must not bring the item back.
 */
static int
dels_find(const struct shared_list *sl, const char *id)
{
	size_t i,
	    n = sl->sl_ndels < SHARED_DELS_KEPT ? sl->sl_ndels
						: SHARED_DELS_KEPT;

	for (i = 0; i < n; i++)
		if (strcmp(sl->sl_dels[i], id) == 0)
			return (1);
	return (0);
}

/* FLEET_SCRIPT_SHARE_ADD answered. */
static void
share_cb(const redisReply *r, const char *err, void *arg)
{
	struct shared_arg *sa = arg;
	const struct shared_kind *sk = sa->sa_list->sl_kind;

	if (!sh.sh_on) {
		arg_free(sa);
		return;
	}
	if (r == NULL || err != NULL) {
		/* A lost connection reconciles when it is back. */
		log_warnx("fleet: %s %s not shared yet: %s", sk->sk_noun,
		    sa->sa_id, err != NULL ? err : "no reply");
	} else if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
		/* Another instance lifted it while this one was away. */
		if (sk->sk_remove(sa->sa_id, wallclock_ms()) == 0)
			log_info("fleet: %s %s was %s in the fleet while this "
				 "instance was away; %s here too",
			    sk->sk_noun, sa->sa_id, sk->sk_lifted,
			    sk->sk_lifted);
	} else
		log_debug("fleet: %s %s shared", sk->sk_noun, sa->sa_id);
	arg_free(sa);
}

/* Write item id to Redis and announce it; nothing if it is not live. */
static void
item_share(struct shared_list *sl, const char *id)
{
	const struct shared_kind *sk = sl->sl_kind;
	const char *argv[6];
	char *hkey, *tkey, *ckey, *js, now[32];
	struct shared_arg *sa;
	cJSON *o;

	if ((o = sk->sk_json(id, fl.f_conf->fc_instance)) == NULL)
		return;
	if ((js = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: cJSON", __func__);
	cJSON_Delete(o);
	hkey = hash_key(sl);
	tkey = lifted_key(sl);
	ckey = chan_key();
	snprintf(now, sizeof(now), "%" PRId64, wallclock_ms());
	argv[0] = hkey;
	argv[1] = tkey;
	argv[2] = id;
	argv[3] = js;
	argv[4] = ckey;
	argv[5] = now;
	sa = arg_new(sl, id);
	if (rconn_eval(fl.f_conn, FLEET_SCRIPT_SHARE_ADD, share_cb, sa, 2, 6,
		argv, NULL) == -1) {
		log_info("fleet: %s %s is kept here until Redis answers; it "
			 "is shared then",
		    sk->sk_noun, id);
		arg_free(sa);
	}
	cJSON_free(js);
	free(hkey);
	free(tkey);
	free(ckey);
}

/* FLEET_SCRIPT_SHARE_LIFT answered. */
static void
lift_cb(const redisReply *r, const char *err, void *arg)
{
	struct shared_arg *sa = arg;
	const struct shared_kind *sk = sa->sa_list->sl_kind;

	if (!sh.sh_on) {
		arg_free(sa);
		return;
	}
	if (r == NULL || err != NULL) {
		log_warnx("fleet: the %s of %s %s is not shared yet: %s",
		    sk->sk_lift, sk->sk_noun, sa->sa_id,
		    err != NULL ? err : "no reply");
		lifted_remember(sa->sa_list, sa->sa_id);
	} else {
		lifted_forget(sa->sa_list, sa->sa_id);
		log_debug("fleet: %s of %s %s shared", sk->sk_lift, sk->sk_noun,
		    sa->sa_id);
	}
	arg_free(sa);
}

/* HDEL the item, remember the lift, announce it. */
static void
lift_send(struct shared_list *sl, const char *id)
{
	const char *av[7];
	char *hkey, *tkey, *ckey, now[32], until[32], max[32];
	struct shared_arg *sa;
	int64_t t = wallclock_ms();

	hkey = hash_key(sl);
	tkey = lifted_key(sl);
	ckey = chan_key();
	snprintf(now, sizeof(now), "%" PRId64, t);
	snprintf(until, sizeof(until), "%" PRId64,
	    (int64_t)(t + SHARED_LIFTED_KEEP_MS));
	snprintf(max, sizeof(max), "%d", SHARED_LIFTED_MAX);
	av[0] = hkey;
	av[1] = tkey;
	av[2] = id;
	av[3] = ckey;
	av[4] = now;
	av[5] = until;
	av[6] = max;
	sa = arg_new(sl, id);
	if (rconn_eval(fl.f_conn, FLEET_SCRIPT_SHARE_LIFT, lift_cb, sa, 2, 7,
		av, NULL) == -1) {
		lifted_remember(sl, id);
		arg_free(sa);
	}
	free(hkey);
	free(tkey);
	free(ckey);
}

/*
 * An item of list kind was made on this instance: share it with the
 * fleet, now or, with Redis down, when Redis answers again (the reconcile
 * finds the hash lacks it). The caller has checked the fleet is on and
 * that the item was not learnt from the fleet.
 */
void
shared_added(int kind, const char *id)
{
	struct shared_list *sl = &sh.sh_list[kind];

	if (!sh.sh_on)
		return;
	if (!fl.f_up) {
		log_info("fleet: %s %s is kept here until Redis answers; it "
			 "is shared then",
		    sl->sl_kind->sk_noun, id);
		return;
	}
	item_share(sl, id);
}

/*
 * An item of list kind was lifted on this instance: lift it for the
 * whole fleet, now or when Redis answers again.
 */
void
shared_lifted(int kind, const char *id)
{
	struct shared_list *sl = &sh.sh_list[kind];

	if (!sh.sh_on)
		return;
	/* Until Redis has it, a read or an HGET answered meanwhile must
	 * not bring the item back. */
	lifted_remember(sl, id);
	if (!fl.f_up) {
		log_info("fleet: the %s of %s %s is sent when Redis answers "
			 "again",
		    sl->sl_kind->sk_lift, sl->sl_kind->sk_noun, id);
		return;
	}
	lift_send(sl, id);
}

/* HDEL one field, answer unneeded (an expired item, say). */
static void
hash_drop(struct shared_list *sl, const char *id, size_t len)
{
	const char *argv[3];
	size_t lens[3];
	char *key = hash_key(sl);

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
 * Refuse an item stored under one field whose JSON names another id: the
 * list's learn calls this after decoding. 0 when have is the field id.
 */
int
shared_id_check(const char *have, const char *id, size_t idlen, char **why)
{
	if (strlen(have) == idlen && memcmp(have, id, idlen) == 0)
		return (0);
	xasprintf(why, "its id is %s, not the field it is stored under", have);
	return (-1);
}

/*
 * One item as the hash holds it, under field id: checked, then kept here.
 * Returns 1 when it is (or already was) live here, 0 when it has expired
 * (and is dropped from the hash), -1 when it is refused.
 */
static int
item_learn(struct shared_list *sl, const char *id, size_t idlen, const char *js,
    size_t len)
{
	const struct shared_kind *sk = sl->sl_kind;
	char *why = NULL;

	switch (sk->sk_learn(id, idlen, js, len, &why)) {
	case SHARED_NEW:
		(*sk->sk_received)++;
		return (1);
	case SHARED_HELD:
		return (1);
	case SHARED_ENDED:
		hash_drop(sl, id, idlen);
		return (0);
	case SHARED_REFUSED:
		log_warnx("fleet: %s %s in Redis refused: %s", sk->sk_noun,
		    id_esc(id, idlen), why);
		break;
	default:
		log_warnx("fleet: %s %s in Redis not applied: %s", sk->sk_noun,
		    id_esc(id, idlen), why);
		break;
	}
	free(why);
	return (-1);
}

/* HGET answered for an "add <id>". */
static void
get_cb(const redisReply *r, const char *err, void *arg)
{
	struct shared_arg *sa = arg;
	struct shared_list *sl = sa->sa_list;
	const char *id = sa->sa_id;

	if (!sh.sh_on || r == NULL || err != NULL) {
		if (sh.sh_on)
			log_warnx("fleet: %s %s announced but not read: %s",
			    sl->sl_kind->sk_noun, id,
			    err != NULL ? err : "no reply");
		arg_free(sa);
		return;
	}
	/* nil: lifted or dropped since it was announced. */
	if (r->type == REDIS_REPLY_STRING &&
	    !sl->sl_kind->sk_live(id, wallclock_ms()) &&
	    lifted_find(sl, id) == -1 && !dels_find(sl, id))
		(void)item_learn(sl, id, strlen(id), r->str, r->len);
	arg_free(sa);
}

/* The list an id belongs to, by its prefix; NULL: none. */
static struct shared_list *
list_of(const char *id)
{
	size_t i, n;

	for (i = 0; i < SHARED_NKINDS; i++) {
		n = strlen(kinds[i]->sk_prefix);
		if (strncmp(id, kinds[i]->sk_prefix, n) == 0)
			return (&sh.sh_list[i]);
	}
	return (NULL);
}

/*
 * A message on <prefix>kills: "add <id>" or "del <id>", for the list the
 * id's prefix names.
 */
void
shared_message(const char *msg, size_t len, void *unused)
{
	struct shared_list *sl;
	const struct shared_kind *sk;
	const char *argv[3];
	char id[SHARED_ID_MAX + 1], *key;
	struct shared_arg *sa;
	size_t n;

	(void)unused;
	if (len < 5 || len - 4 > SHARED_ID_MAX ||
	    (memcmp(msg, "add ", 4) != 0 && memcmp(msg, "del ", 4) != 0)) {
		log_warnx("fleet: a message on the kills channel is neither "
			  "\"add <id>\" nor \"del <id>\"; ignored");
		return;
	}
	n = len - 4;
	memcpy(id, msg + 4, n);
	id[n] = '\0';
	if (strlen(id) != n) {
		log_warnx("fleet: an id with a NUL byte on the kills channel; "
			  "ignored");
		return;
	}
	if ((sl = list_of(id)) == NULL) {
		/* A newer instance's list, or a typing error. */
		log_warnx("fleet: %s on the kills channel is of no list "
			  "this instance shares; ignored",
		    id_esc(id, n));
		return;
	}
	sk = sl->sl_kind;
	sl->sl_msgs++;
	if (msg[0] == 'd') {
		snprintf(sl->sl_dels[sl->sl_ndels++ % SHARED_DELS_KEPT],
		    sizeof(sl->sl_dels[0]), "%s", id);
		if (sk->sk_remove(id, wallclock_ms()) == 0)
			log_info("fleet: %s %s %s in the fleet; %s here",
			    sk->sk_noun, id_esc(id, n), sk->sk_lifted,
			    sk->sk_lifted);
		return;
	}
	if (sk->sk_live(id, wallclock_ms()) || lifted_find(sl, id) != -1)
		return; /* ours coming back, or one already here */
	if (!fl.f_up)
		return; /* the reconcile when Redis answers reads it */
	key = hash_key(sl);
	argv[0] = "HGET";
	argv[1] = key;
	argv[2] = id;
	sa = arg_new(sl, id);
	if (rconn_command(fl.f_conn, get_cb, sa, 3, argv, NULL) == -1)
		arg_free(sa); /* down: the reconcile when it is back reads it */
	free(key);
}

/* The live items here, for the reconcile (copied: it adds and lifts). */
struct held {
	char **h_ids;
	size_t h_n;
};

static void
held_cb(const char *id, void *arg)
{
	struct held *h = arg;

	h->h_ids = xreallocarray(h->h_ids, h->h_n + 1, sizeof(*h->h_ids));
	h->h_ids[h->h_n++] = xstrdup(id);
}

static int
id_cmp(const void *a, const void *b)
{
	return (strcmp(*(const char *const *)a, *(const char *const *)b));
}

/* HGETALL <prefix><list> answered: reconcile (see the top of the file). */
static void
read_cb(const redisReply *r, const char *err, void *arg)
{
	struct shared_list *sl = arg;
	const struct shared_kind *sk;
	struct held h = {NULL, 0};
	const char **seen = NULL;
	size_t i, nseen = 0, added = 0, shared = 0;
	uint64_t before;

	sl->sl_reading = 0;
	/* Stopped: freeing the connection answers what was pending, after
	 * shared_stop cleared the lists and their kinds. */
	if (!sh.sh_on)
		return;
	sk = sl->sl_kind;
	before = *sk->sk_received;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		/* A lost connection reconciles again when it is back. */
		log_warnx("fleet: cannot read the fleet's %ss: %s", sk->sk_noun,
		    err != NULL ? err : "not an array");
		return;
	}
	if ((sl->sl_again || sl->sl_msgs != sl->sl_msgs_at) &&
	    sl->sl_rereads < SHARED_REREAD_MAX) {
		/* A change announced meanwhile may predate this read's
		 * answer or not: read again rather than guess. */
		sl->sl_again = 0;
		sl->sl_rereads++;
		shared_read(sl);
		return;
	}
	sl->sl_again = 0;
	sl->sl_rereads = 0;
	seen = xcalloc(r->elements / 2 + 1, sizeof(*seen));
	for (i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *f = r->element[i], *v = r->element[i + 1];

		if (f->type != REDIS_REPLY_STRING ||
		    v->type != REDIS_REPLY_STRING)
			continue;
		if (strlen(f->str) != f->len || lifted_find(sl, f->str) != -1)
			continue; /* being lifted: the lift was sent first */
		if (item_learn(sl, f->str, f->len, v->str, v->len) == 1)
			seen[nseen++] = f->str;
	}
	added = (size_t)(*sk->sk_received - before);
	qsort(seen, nseen, sizeof(*seen), id_cmp);
	sk->sk_each(held_cb, &h, wallclock_ms());
	for (i = 0; i < h.h_n; i++) {
		const char *key = h.h_ids[i];

		if (nseen > 0 &&
		    bsearch(&key, seen, nseen, sizeof(*seen), id_cmp) != NULL)
			continue;
		if (sk->sk_live(key, wallclock_ms())) {
			item_share(sl, key);
			shared++;
		}
	}
	for (i = 0; i < h.h_n; i++)
		free(h.h_ids[i]);
	free(h.h_ids);
	free(seen);
	log_info("fleet: %ss reconciled with Redis: %zu in the fleet, %zu "
		 "learnt, %zu shared from here",
	    sk->sk_noun, nseen, added, shared);
}

/*
 * Reconcile one list with the fleet's: send the lifts made while Redis
 * was down, then read the whole hash. One read at a time per list; one
 * asked for meanwhile follows.
 */
static void
shared_read(struct shared_list *sl)
{
	const char *argv[2];
	char **ids;
	size_t i, n;
	char *key;

	if (sl->sl_reading) {
		sl->sl_again = 1;
		return;
	}
	/* Lifts first: the read then no longer holds them. */
	ids = sl->sl_lifted;
	n = sl->sl_nlifted;
	sl->sl_lifted = NULL;
	sl->sl_nlifted = 0;
	for (i = 0; i < n; i++) {
		lift_send(sl, ids[i]);
		/* Still skipped by the read until the lift is answered. */
		lifted_remember(sl, ids[i]);
		free(ids[i]);
	}
	free(ids);
	key = hash_key(sl);
	argv[0] = "HGETALL";
	argv[1] = key;
	sl->sl_msgs_at = sl->sl_msgs;
	if (rconn_command(fl.f_conn, read_cb, sl, 2, argv, NULL) == 0)
		sl->sl_reading = 1;
	free(key);
}

/*
 * Reconcile every shared list with the fleet's (at every connect of
 * either connection).
 */
void
shared_resync(void)
{
	size_t i;

	if (!sh.sh_on || !fl.f_up)
		return; /* the command connection's return calls this */
	for (i = 0; i < SHARED_NKINDS; i++)
		shared_read(&sh.sh_list[i]);
}

/* The subscriber is (back) up: messages may have been missed. */
void
shared_sub_state(int up, void *arg)
{
	(void)arg;
	if (up)
		shared_resync();
}

/* The fleet started: the lists are shared from now on. */
void
shared_start(void)
{
	size_t i;

	memset(&sh, 0, sizeof(sh));
	for (i = 0; i < SHARED_NKINDS; i++)
		sh.sh_list[i].sl_kind = kinds[i];
	sh.sh_on = 1;
}

/* The fleet stops: answers still due are dropped. */
void
shared_stop(void)
{
	struct shared_list *sl;
	size_t i, j;

	for (i = 0; i < SHARED_NKINDS; i++) {
		sl = &sh.sh_list[i];
		if (sl->sl_nlifted > 0)
			log_warnx("fleet: %zu %ss made here never reached "
				  "Redis; %s them again in the fleet",
			    sl->sl_nlifted, sl->sl_kind->sk_lift,
			    sl->sl_kind->sk_verb);
		for (j = 0; j < sl->sl_nlifted; j++)
			free(sl->sl_lifted[j]);
		free(sl->sl_lifted);
	}
	memset(&sh, 0, sizeof(sh));
}
