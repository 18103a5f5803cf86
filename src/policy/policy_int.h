/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy module's private header, shared by the files under
 * src/policy/ and nothing else: the counter entries behind struct
 * policy_counters, which counters.c owns and rebuild.c fills, and the
 * calendar arithmetic that scope.c and rebuild.c share.
 */
#ifndef TOLLGATE_POLICY_INT_H
#define TOLLGATE_POLICY_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/policy.h"

#define MIN_MS 60000LL
#define DAY_MS 86400000LL

/*
 * A rolling window of length D is ROLL_BUCKETS buckets of D/ROLL_BUCKETS
 * each; the sum keeps one bucket more than the window, so it never counts
 * less than the last D (docs/internals/policy.md).
 */
#define ROLL_BUCKETS 60
#define ROLL_SLOTS (ROLL_BUCKETS + 1)

/* Rate limits count per second over the last RATE_SLOTS seconds. */
#define RATE_SLOTS 60

enum pentry_kind {
	PE_CALENDAR, /* day, week, month, total */
	PE_ROLLING,
	PE_RATE,
};

/* A ring of time buckets: slot i holds bucket id ri_id[i]. */
struct ring {
	int64_t ri_id[ROLL_SLOTS];
	int64_t ri_v[ROLL_SLOTS];
	int64_t ri_tok_id[RATE_SLOTS]; /* rate entries: settled tokens */
	int64_t ri_tok[RATE_SLOTS];
};

/* One counter; owned by the table, pinned while e_refs > 0. */
struct pentry {
	char *e_key;
	uint64_t e_hash;
	struct pentry *e_next;
	enum pentry_kind e_kind;
	int e_new; /* created since the last pcount_mark_old */
	unsigned e_refs; /* reservations holding it */
	int64_t e_start, e_reset; /* calendar */
	int64_t e_width; /* rolling: bucket width in ms */
	int64_t e_spent; /* calendar */
	int64_t e_reserved;
	int e_conc; /* rate: calls in flight */
	int64_t e_tok_reserved; /* rate: worst-case tokens of those calls */
	struct ring *e_ring; /* rolling and rate */
	int64_t e_fired[POLICY_THRESHOLDS_MAX * 4]; /* thresholds */
	int64_t e_fired_at[POLICY_THRESHOLDS_MAX * 4]; /* when */
	size_t e_nfired;
	int64_t e_refused_worst; /* the last cap refusal's worst case */
	/* Budgets: what live extensions add to the caps on this key, as of
	 * extensions generation e_ext_gen, until e_ext_until at the latest
	 * (pcount_ext_refresh). */
	int64_t e_ext;
	uint64_t e_ext_gen;
	int64_t e_ext_until;
	char *e_per[TAG_MAX]; /* budgets: the per-tag values, or NULL */
	struct policy_lease *e_lease; /* calendar budgets in a fleet */
	struct policy_rate_lease *e_rlease; /* rate entries in a fleet */
};

struct policy_counters {
	struct pentry **pc_tab;
	size_t pc_size; /* a power of two */
	size_t pc_n;
	int pc_fleet; /* calendar budgets hold fleet leases */
};

/* What one admission holds until it is settled or released. */
struct policy_reservation {
	struct policy_counters *r_pc;
	int64_t r_nusd;
	int64_t r_tokens; /* worst-case tokens, held on the rate entries */
	int64_t r_started;
	size_t r_n;
	/* Budget entries: the tightest enforcing cap on each and its
	 * policy (borrowed from the config the call holds), for growth. */
	int64_t *r_cap;
	const struct policy **r_pol;
	struct pentry *r_e[];
};

/* scope.c */
int64_t policy_days_from_civil(int64_t, unsigned, unsigned);
void policy_civil_from_days(int64_t, int64_t *, unsigned *, unsigned *);
char *policy_budget_key(const struct policy *, const char *const *, int64_t);

/* counters.c */
int64_t pcount_floor_div(int64_t, int64_t);
int64_t pcount_add(int64_t, int64_t);
void pcount_ring_add(int64_t *, int64_t *, size_t, int64_t, int64_t);
int64_t pcount_ring_sum(
    const int64_t *, const int64_t *, size_t, int64_t, int64_t, int64_t *);
int pcount_has_budget(const struct policy *);
int pcount_has_rate(const struct policy *);
struct pentry *pcount_budget_entry(struct policy_counters *,
    const struct policy *, const char *const *, int64_t, int);
struct pentry *pcount_rate_entry(
    struct policy_counters *, const struct policy *, const char *const *);
int64_t pcount_spent(const struct pentry *, int64_t, int64_t *);
void pcount_ext_refresh(struct pentry *, int64_t);
int64_t pcount_cap(const struct policy *, const struct pentry *);
int64_t pcount_rate_count(
    const struct pentry *, int, int64_t, int64_t, int64_t *);
int64_t pcount_token_use(
    const struct pentry *, int64_t, int64_t, int64_t, int64_t *);
void pcount_scope_fill(
    struct policy_scope *, const struct policy *, const char *const *);
void pcount_scope_budget(struct policy_scope *, const struct policy *,
    const char *const *, const struct pentry *, int64_t);
void pcount_mark_old(struct policy_counters *);

/* fields.c */
struct cJSON;
struct sqlite3_stmt;
int pfield_time(const struct cJSON *, int, int64_t *);
const char *pfield_text(const struct cJSON *, size_t);
const char *pfield_col(struct sqlite3_stmt *, int);

/* lease.c */
void lease_attach(struct policy_counters *, struct pentry *);
int64_t lease_room(const struct pentry *, int64_t);
int lease_keep(const struct pentry *);
void lease_settle(struct pentry *, int64_t);
void lease_cap_moved(struct pentry *, int64_t);
void lease_note(struct pentry *, int64_t, int64_t, int64_t, int);
void lease_rate_attach(struct policy_counters *, struct pentry *);
int lease_rate_short(struct pentry *, int, int64_t, int64_t);

#endif
