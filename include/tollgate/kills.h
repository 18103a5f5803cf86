/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runtime kill switches: a kill names the calls it stops with globs on the
 * same attributes as a policy's match (the five tags, model, provider) and
 * stops them until it is deleted or its TTL runs out. Kills come from the
 * admin API (POST /v1/kills) or from a tripped breaker, and are written to
 * the ledger's kills table through the ledger's writer thread, so they
 * survive a restart and so does their deletion; kills_load reads them back
 * at start-up. Everything runs on the loop thread; nothing locks.
 *
 * A const struct kill * handed out by kills_match, kills_add or kills_each
 * stays valid until the next kills_add (which drops expired kills when
 * the list is full), kills_remove, kills_expire, kills_load or
 * kills_free_all: copy what must outlive the current loop turn. See
 * docs/internals/policy.md.
 *
 * With a fleet, kills are also shared through Redis (src/fleet/kills.c):
 * a kill another instance made arrives as JSON, is checked by
 * kills_decode and kept by kills_adopt under the id it has in the fleet.
 */
#ifndef TOLLGATE_KILLS_H
#define TOLLGATE_KILLS_H

#include <stdint.h>

#include <sqlite3.h>

#include "tollgate/policy.h"

struct breaker_trip;
struct cJSON;

#define KILLS_MAX 1024 /* live kills at once */
#define KILLS_API_ROOM 128 /* of which breakers never take the last */
#define KILL_REASON_MAX 512 /* bytes of a reason */
#define KILL_SOURCE_MAX 160 /* bytes of a source */
#define KILL_ID_LEN 18 /* "k_" and 16 hex */

/* One kill; owned by the kills list. */
struct kill {
	char k_id[24]; /* "k_" + 16 hex, random */
	char *k_match[POLICY_ATTR_MAX]; /* globs as in match:; NULL: any */
	char *k_reason;
	char *k_source; /* "api" or "breaker:<policy>:<kind>" */
	int64_t k_created_ms;
	int64_t k_expires_ms; /* POLICY_NEVER: until deleted */
	int k_learnt; /* learnt from the fleet, not made here */
	char *k_origin; /* the instance that made it, if the fleet says */
};

/* kills.c */
int kills_load(sqlite3 *, int64_t, char **);
const struct kill *kills_match(const char *const *, int64_t);
int kills_add(const char *const *, const char *, const char *, int64_t, int64_t,
    const struct kill **, char **);
int kills_trip(
    const struct breaker_trip *, int64_t, const struct kill **, char **);
int kills_remove(const char *, int64_t);
const struct kill *kills_find(const char *, int64_t);
void kills_each(void (*)(const struct kill *, void *), void *);
size_t kills_count(void);
void kills_set_hook(void (*)(const struct kill *, void *), void *);
void kills_expire(int64_t);
void kills_free_all(void);
struct cJSON *kills_json(const struct kill *);
struct kill *kills_decode(const char *, size_t, char **);
int kills_adopt(struct kill *, int64_t, const struct kill **, char **);
void kills_discard(struct kill *);
char *kills_match_json(char *const *);

#endif
