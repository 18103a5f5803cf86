/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Budget extensions across the fleet: the extensions list
 * (src/policy/extensions.c) as one of the lists shared.c keeps in step
 * with Redis, exactly as kills are. The hash <prefix>extensions holds
 * id -> the extension's JSON (one GET /v1/budgets/extensions item plus
 * "instance", who made it); a revocation is remembered in
 * <prefix>extensions:lifted; changes are announced on the kills channel
 * as "add x_..." and "del x_...". An extension learnt from the fleet is
 * checked as strictly as POST /v1/budgets/extend checks a body, and
 * against itself: its key must be of its window and name its scope, its
 * end within that window, its creation not in the future
 * (extensions_decode), kept under the same id and in this instance's
 * ledger (extensions_adopt), and never shared back from here: every
 * instance then raises the same budget key by the same amount, and each
 * sends the raised cap with its lease syncs, so the fleet's cap is the
 * configured one plus the extension, once.
 */
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "tollgate/extensions.h"
#include "tollgate/fleet.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "fleet_int.h"

static int
ext_live(const char *id, int64_t now)
{
	return (extensions_find(id, now) != NULL);
}

static int
ext_remove(const char *id, int64_t now)
{
	return (extensions_revoke(id, now));
}

static int
ext_learn(const char *id, size_t idlen, const char *js, size_t len, char **why)
{
	const struct extension *out;
	struct extension *x;

	if ((x = extensions_decode(js, len, why)) == NULL)
		return (SHARED_REFUSED);
	if (shared_id_check(x->x_id, id, idlen, why) == -1) {
		extensions_discard(x);
		return (SHARED_REFUSED);
	}
	/* 0, 1, 2 and -1 are SHARED_NEW, _HELD, _ENDED and _FAILED. */
	return (extensions_adopt(x, wallclock_ms(), &out, why));
}

/* The extension's JSON, with its maker: the fleet's, or this instance. */
static cJSON *
ext_json(const char *id, const char *instance)
{
	const struct extension *x;
	cJSON *o;

	if ((x = extensions_find(id, wallclock_ms())) == NULL)
		return (NULL);
	o = extensions_json(x);
	if (!x->x_learnt &&
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
each_cb(const struct extension *x, void *arg)
{
	struct each *e = arg;

	if (extensions_find(x->x_id, e->e_now) == x)
		e->e_fn(x->x_id, e->e_arg);
}

static void
ext_each(void (*fn)(const char *, void *), void *arg, int64_t now)
{
	struct each e = {fn, arg, now};

	extensions_each(each_cb, &e);
}

const struct shared_kind shared_extensions = {
    .sk_noun = "extension",
    .sk_lift = "revocation",
    .sk_lifted = "revoked",
    .sk_verb = "revoke",
    .sk_prefix = "x_",
    .sk_list = "extensions",
    .sk_received = &fl.f_stats.fs_extensions_in,
    .sk_live = ext_live,
    .sk_remove = ext_remove,
    .sk_learn = ext_learn,
    .sk_json = ext_json,
    .sk_each = ext_each,
};

/*
 * A budget extension was made on this instance (POST /v1/budgets/extend):
 * share it with the fleet, now or when Redis answers again. Without a
 * fleet, nothing; one learnt from the fleet is never shared back.
 */
void
fleet_extension_added(const struct extension *x)
{
	if (fl.f_conf == NULL || x == NULL || x->x_learnt)
		return;
	shared_added(SHARED_EXTENSIONS, x->x_id);
}

/*
 * A budget extension was revoked on this instance (DELETE
 * /v1/budgets/extensions/{id}): revoke it on the whole fleet, now or when
 * Redis answers again.
 */
void
fleet_extension_revoked(const char *id)
{
	if (fl.f_conf == NULL || id == NULL)
		return;
	shared_lifted(SHARED_EXTENSIONS, id);
}
