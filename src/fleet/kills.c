/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kills across the fleet: the kills list (src/policy/kills.c) as one of
 * the lists shared.c keeps in step with Redis. The hash <prefix>kills
 * holds id -> the kill's JSON (one GET /v1/kills item plus "instance",
 * who made it); a lift is remembered in <prefix>kills:lifted. A kill
 * learnt from the fleet is checked as strictly as POST /v1/kills checks a
 * body (kills_decode) and kept under the same id (kills_adopt), whose
 * hook stops the calls in flight it matches.
 */
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "tollgate/fleet.h"
#include "tollgate/kills.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "fleet_int.h"

static int
kill_live(const char *id, int64_t now)
{
	return (kills_find(id, now) != NULL);
}

static int
kill_learn(const char *id, size_t idlen, const char *js, size_t len, char **why)
{
	const struct kill *out;
	struct kill *k;

	if ((k = kills_decode(js, len, why)) == NULL)
		return (SHARED_REFUSED);
	if (shared_id_check(k->k_id, id, idlen, why) == -1) {
		kills_discard(k);
		return (SHARED_REFUSED);
	}
	/* 0, 1, 2 and -1 are SHARED_NEW, _HELD, _ENDED and _FAILED. */
	return (kills_adopt(k, wallclock_ms(), &out, why));
}

/* The kill's JSON, with its maker: the fleet's, or this instance. */
static cJSON *
kill_json(const char *id, const char *instance)
{
	const struct kill *k;
	cJSON *o;

	if ((k = kills_find(id, wallclock_ms())) == NULL)
		return (NULL);
	o = kills_json(k);
	if (!k->k_learnt &&
	    cJSON_AddStringToObject(o, "instance", instance) == NULL)
		fatalx("%s: cJSON", __func__);
	return (o);
}

struct each {
	void (*e_fn)(const char *, void *);
	void *e_arg;
	int64_t e_now;
};

static void
each_cb(const struct kill *k, void *arg)
{
	struct each *e = arg;

	if (kills_find(k->k_id, e->e_now) == k)
		e->e_fn(k->k_id, e->e_arg);
}

static void
kill_each(void (*fn)(const char *, void *), void *arg, int64_t now)
{
	struct each e = {fn, arg, now};

	kills_each(each_cb, &e);
}

const struct shared_kind shared_kills = {
    .sk_noun = "kill",
    .sk_lift = "lift",
    .sk_lifted = "lifted",
    .sk_verb = "lift",
    .sk_prefix = "k_",
    .sk_list = "kills",
    .sk_received = &fl.f_stats.fs_kills_in,
    .sk_live = kill_live,
    .sk_remove = kills_remove,
    .sk_learn = kill_learn,
    .sk_json = kill_json,
    .sk_each = kill_each,
};

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
	shared_added(SHARED_KILLS, k->k_id);
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
	shared_lifted(SHARED_KILLS, id);
}
