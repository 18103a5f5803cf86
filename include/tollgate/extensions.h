/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Budget extensions, the human in the loop: an extension raises the hard
 * cap of one budget scope (a policy's match, its per-tag values) by an
 * amount, for the window it was made in only, with who and why, until it
 * ends (the window's end, an expiry asked for, or for a rolling window
 * one window length) or is revoked. It applies to the scope's counter
 * (its budget key: scope key and window start), so every policy naming
 * the same scope is raised by as much, and the next window starts at the
 * configured cap again.
 *
 * Extensions come from the admin API (POST /v1/budgets/extend) and are
 * written to the ledger's extensions table through the writer thread, so
 * they survive a restart and so does their revocation; extensions_load
 * reads the live ones back at start-up. With a fleet they are shared
 * through Redis like kills (src/fleet/): one made elsewhere arrives as
 * JSON, is checked by extensions_decode and kept by extensions_adopt
 * under the id it has in the fleet. Everything runs on the loop thread.
 *
 * The policy counters ask extensions_sum for a budget key's raise, and
 * re-ask only when extensions_generation has moved or the earliest end
 * they were told of has passed, so admission pays one comparison per
 * budget when nothing changed. A const struct extension * stays valid
 * until the next change to the list: copy what must outlive the turn.
 */
#ifndef TOLLGATE_EXTENSIONS_H
#define TOLLGATE_EXTENSIONS_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "tollgate/policy.h"

struct cJSON;

#define EXTENSIONS_MAX 1024 /* live extensions at once */
#define EXTENSION_ID_LEN 18 /* "x_" and 16 hex */
#define EXTENSION_REASON_MAX 512 /* bytes of a reason */
#define EXTENSION_BY_MAX 128 /* bytes of who granted it */
#define EXTENSION_MAX_NUSD 1000000000000000LL /* $1,000,000 each */
/* How far in the future a shared extension's created_at may be (clocks). */
#define EXTENSION_SKEW_MS (5 * 60 * 1000LL)

/* One extension; owned by the list. Times are Unix ms. */
struct extension {
	char x_id[24]; /* "x_" + 16 hex, random */
	char *x_policy; /* the policy named when it was made */
	char *x_scope; /* the scope as GET /v1/budgets shows it (JSON) */
	char *x_key; /* the counter's budget key it raises */
	char *x_intent; /* the scope's per-intent value, or NULL */
	char *x_window; /* "day", "week", "month", "total", "24h", ... */
	int64_t x_window_start;
	int64_t x_nusd; /* the raise, 1 .. EXTENSION_MAX_NUSD */
	char *x_reason;
	char *x_by; /* who granted it */
	int64_t x_created_ms;
	int64_t x_expires_ms; /* as asked; POLICY_NEVER: none asked */
	int64_t x_ends_ms; /* when it stops; POLICY_NEVER: when revoked */
	int x_learnt; /* learnt from the fleet, not made here */
	char *x_origin; /* the instance that made it, if the fleet says */
};

/* extensions.c */
int extensions_scope(const struct policy *, const struct cJSON *,
    const char *[TAG_MAX], char *, size_t, char **);
int extensions_add(const struct policy *, const char *const *, int64_t,
    const char *, const char *, int64_t, int64_t, const struct extension **,
    char **);
int extensions_revoke(const char *, int64_t);
const struct extension *extensions_find(const char *, int64_t);
void extensions_each(void (*)(const struct extension *, void *), void *);
void extensions_on(const struct policy *, const char *const *, int64_t,
    void (*)(const struct extension *, void *), void *);
size_t extensions_count(void);
void extensions_expire(int64_t);
void extensions_free_all(void);
int64_t extensions_sum(const char *, int64_t, int64_t *);
uint64_t extensions_generation(void);
struct cJSON *extensions_json(const struct extension *);
struct extension *extensions_decode(const char *, size_t, char **);
int extensions_adopt(
    struct extension *, int64_t, const struct extension **, char **);
void extensions_discard(struct extension *);
int extensions_load(sqlite3 *, int64_t, char **);

#endif
