/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy core: budgets, reservations, rate limits, model rules, kills
 * and alert thresholds, as a pure library. A policy set is parsed from the
 * config's policies: list (policy_parse); a call's attributes select the
 * policies that match it, and each of those names one scope (the match
 * patterns, the per-tag values and the window, never the policy's name),
 * so editing or renaming a policy neither refills nor empties a budget.
 * Counters live in memory, keyed by scope and window, and are rebuilt from
 * the ledger at start-up (policy_rebuild).
 *
 * policy_admit reserves a call's worst case on every matching scope at
 * once, or on none; policy_settle replaces a reservation by the actual
 * cost and policy_release drops it. Nothing here is thread-safe: every
 * call runs on the loop thread that owns the counters. Times are Unix ms,
 * money is integer nano-USD. See docs/internals/policy.md.
 */
#ifndef TOLLGATE_POLICY_H
#define TOLLGATE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "tollgate/tags.h"
#include "tollgate/usage.h"

struct cJSON;
struct cfgctx;
struct ynode;
struct price;

/* What a policy can match on: the five tags, then model and provider. */
#define POLICY_ATTR_MODEL TAG_MAX
#define POLICY_ATTR_PROVIDER (TAG_MAX + 1)
#define POLICY_ATTR_MAX (TAG_MAX + 2)

#define POLICY_NAME_MAX 64
#define POLICY_GLOB_MAX 128
#define POLICY_THRESHOLDS_MAX 8
#define POLICY_NEVER INT64_MAX /* reset_at of a total window */
/* A call's token worst case when nothing bounds its output: more than any
 * tokens_per_minute limit (an int), so it only runs in an empty minute. */
#define POLICY_TOKENS_UNBOUNDED ((int64_t)INT32_MAX + 1)

enum policy_window_kind {
	POLICY_WIN_DAY, /* calendar day, UTC */
	POLICY_WIN_WEEK, /* ISO week, Monday 00:00 UTC */
	POLICY_WIN_MONTH, /* calendar month, UTC */
	POLICY_WIN_TOTAL, /* never resets */
	POLICY_WIN_ROLLING, /* the last pw_len_ms, sliding */
};

struct policy_window {
	enum policy_window_kind pw_kind;
	int64_t pw_len_ms; /* rolling only: a whole number of minutes */
};

/*
 * A policy's breakers (breakers: in YAML); a count or ratio of -1 (or 0
 * for loop) means that breaker is off. Times in ms, money in nano-USD.
 */
struct policy_breakers {
	int pb_loop_count; /* loop.count; 0: no loop breaker */
	int64_t pb_loop_within_ms;
	int64_t pb_loop_kill_ms;
	int64_t pb_vel_nusd; /* velocity.usd_per_minute; -1: none */
	int64_t pb_vel_kill_ms;
	int64_t pb_err_ppm; /* error_spike.ratio in millionths; -1: none */
	int64_t pb_err_min_nusd; /* min_spend_usd */
	int64_t pb_err_window_ms;
	int pb_err_min_calls;
	int64_t pb_err_kill_ms;
};

/* One policy; owned by its set, read-only once parsed. */
struct policy {
	char *po_name;
	size_t po_line; /* where it starts, for messages */
	char *po_match[POLICY_ATTR_MAX]; /* globs; NULL matches anything */
	int po_per[TAG_MAX]; /* 1: one budget per value of this tag */
	struct policy_window po_window;
	int64_t po_cap_nusd; /* hard_cap_usd; -1: none */
	int64_t po_alerts[POLICY_THRESHOLDS_MAX]; /* nano-USD, ascending */
	size_t po_nalerts;
	int po_rpm; /* rate_limit; 0: none */
	int po_tpm;
	int po_concurrent;
	char **po_allow; /* models.allow globs; none: any */
	size_t po_nallow;
	char **po_deny; /* models.deny globs */
	size_t po_ndeny;
	int64_t po_max_output; /* ceiling on the output bound; -1: none */
	int64_t po_default_output; /* bound when none is asked; -1: none */
	int64_t po_clamp_min; /* clamp.min_output_tokens; -1: no clamp */
	int po_shadow;
	int po_killed;
	char *po_kill_reason; /* NULL if none given */
	struct policy_breakers po_breakers;
};

/* An immutable set of policies, in file order. */
struct policyset {
	struct policy *ps_pol;
	size_t ps_n;
};

/* A call as the policies see it; everything borrowed. */
struct policy_call {
	const char *pc_attr[POLICY_ATTR_MAX]; /* NULL or "": unset */
	const struct price *pc_price; /* NULL: unpriced */
	struct call_info pc_info; /* input estimate, output bound, n */
	int64_t pc_unpriced_nusd; /* worst case when pc_price is NULL */
};

enum policy_verdict {
	POLICY_ALLOW,
	POLICY_CLAMP, /* allowed with a lower output bound (pd_out_bound) */
	POLICY_REFUSE,
};

/* Why a call is refused, in the order they are checked. */
enum policy_reason {
	POLICY_OK,
	POLICY_KILLED,
	POLICY_MODEL_NOT_ALLOWED,
	POLICY_HARD_CAP,
	POLICY_RATE_REQUESTS,
	POLICY_RATE_TOKENS,
	POLICY_CONCURRENCY,
};

/* One scope as a refusal or a response header reports it. */
struct policy_scope {
	const struct policy *sc_policy; /* borrowed from the set; NULL: none */
	char sc_per[TAG_MAX][TAG_VALUE_MAX + 1]; /* per-tag values, "" unset */
	int64_t sc_limit; /* cap in nano-USD, or the rate limit */
	int64_t sc_spent; /* nano-USD, requests in the minute, or tokens
			   * settled in the minute plus those reserved */
	int64_t sc_reserved; /* nano-USD, or calls in flight */
	int64_t sc_window_start;
	int64_t sc_reset_at; /* POLICY_NEVER for total windows */
	int64_t sc_retry_after_ms; /* rate limits only; else 0 */
	size_t sc_fired; /* budgets: alert thresholds fired this window */
	const struct policy_lease *sc_lease; /* budgets in a fleet; or NULL */
	const struct policy_rate_lease *sc_rlease; /* rolling ones; or NULL */
	int sc_capped; /* budgets: calls are refused for want of room */
};

struct policy_reservation; /* owned by the caller until settle/release */

struct policy_decision {
	enum policy_verdict pd_verdict;
	enum policy_reason pd_reason;
	/*
	 * Refused: the refusing scope (for caps, the one with the least
	 * room). Allowed: the capped scope with the least room left, for
	 * the response headers; sc_policy NULL when no cap applies.
	 */
	struct policy_scope pd_scope;
	int64_t pd_out_bound; /* output bound to forward; -1: as asked */
	int64_t pd_worst_nusd; /* what was (or would be) reserved */
	int64_t pd_worst_tokens; /* tokens reserved for tokens_per_minute */
	enum policy_reason pd_shadow_reason; /* a shadow policy would... */
	struct policy_scope pd_shadow;
	struct policy_reservation *pd_res; /* allowed: settle or release */
	/*
	 * Refused only for want of fleet lease, on scopes whose caps have
	 * room: the call may wait for a top-up (pl_want says how much).
	 */
	int pd_lease_wait;
};

/* One alert threshold crossed, reported once per scope and window. */
struct policy_alert {
	struct policy_scope pa_scope; /* sc_spent is the settled spend */
	int64_t pa_threshold_nusd;
};

struct policy_counters; /* opaque; one per daemon, kept across reloads */
struct pentry; /* one counter entry, private to src/policy/ */

/*
 * A budget scope's share of a fleet-wide cap (docs/fleet.md): the lease
 * this instance holds in Redis and what it has told Redis. Allocated on
 * every calendar budget entry once policy_counters_fleet is on; the fleet
 * fills it from Redis's answers and the admission reads it, so the policy
 * core stays free of I/O. Money in nano-USD, times in Unix ms.
 */
struct policy_lease {
	struct pentry *pl_entry; /* the counter entry it belongs to */
	const char *pl_key; /* the entry's budget key: scope and window */
	int64_t pl_window_end; /* the entry's reset; POLICY_NEVER: total */
	int64_t pl_cap; /* the tightest enforcing cap on it; -1: none */
	int64_t pl_lease; /* the lease held, as Redis last answered */
	int64_t pl_cum; /* spend settled here in the window */
	int64_t pl_acked; /* of pl_cum, what Redis has counted */
	int64_t pl_until; /* the lease may be used until then */
	int64_t pl_extra; /* Redis down (when_down: local): a local share */
	int64_t pl_want; /* a waiting call needs the lease to reach this */
	int64_t pl_fleet_spent; /* the fleet's spend, as Redis last answered */
	int64_t pl_fleet_leased; /* all instances' leases, likewise */
	int64_t pl_holders; /* instances holding a lease on it, likewise */
	int64_t pl_starve_until; /* another instance is short until then */
	int64_t pl_synced; /* when Redis last answered; 0: never */
	int64_t pl_used; /* the last admission against it */
	int64_t pl_worst; /* that admission's worst case */
	int64_t pl_short_at; /* a sync granted less than it asked for */
	int64_t pl_demand; /* spend settled in the last demand period */
	int64_t pl_demand_cum; /* pl_cum when that period began */
	int64_t pl_demand_at;
	int pl_busy; /* a sync is in flight: the entry is kept */
	int pl_peek; /* a call waits for the fleet's spend: sync at once */
	int pl_degraded; /* Redis down: pl_extra is this instance's share */
};

/* parse.c */
int policy_parse(
    struct cfgctx *, const char *, const struct ynode *, struct policyset **);
void policy_free(struct policyset *);
int policy_parse_usd(const char *, int64_t *);
int policy_parse_window(const char *, struct policy_window *);
int policy_parse_duration(const char *, int64_t *);
int policy_has_breakers(const struct policy *);

/* scope.c */
const char *policy_attr_name(int);
struct cJSON *policy_scope_json(const struct policy *, const char *const *);
int policy_glob(const char *, const char *);
int policy_matches(const struct policy *, const char *const *);
char *policy_scope_key(const struct policy *, const char *const *);
struct cJSON *policy_scope_key_json(const char *);
void policy_window_at(
    const struct policy_window *, int64_t, int64_t *, int64_t *);
void policy_set_local_zone(int);
char *policy_window_name(const struct policy_window *, char *, size_t);
const char *policy_reason_name(enum policy_reason);

/* counters.c */
struct policy_counters *policy_counters_new(void);
void policy_counters_free(struct policy_counters *);
size_t policy_counters_gc(struct policy_counters *, int64_t);
size_t policy_counters_count(const struct policy_counters *);

/* admit.c */
int policy_admit(const struct policyset *, struct policy_counters *,
    const struct policy_call *, int64_t, struct policy_decision *);

/* counters.c */
void policy_settle(struct policy_reservation *, int64_t, int64_t, int64_t);
void policy_charge(const struct policyset *, struct policy_counters *,
    const char *const *, int64_t, int64_t);
void policy_release(struct policy_reservation *, int64_t);
int policy_grow(
    struct policy_reservation *, int64_t, int64_t, struct policy_scope *);
int policy_res_capped(const struct policy_reservation *);
struct policy_reservation *policy_extend(
    struct policy_reservation *, const struct policyset *, const char *const *);
int policy_budget(const struct policy *, struct policy_counters *,
    const char *const *, int64_t, struct policy_scope *);
size_t policy_fired(const struct policyset *, struct policy_counters *,
    const char *const *, int64_t, struct policy_alert *, size_t);
size_t policy_fired_all(const struct policyset *, struct policy_counters *,
    int64_t, void (*)(const struct policy_alert *, const char *const *, void *),
    void *);
size_t policy_each_budget(const struct policyset *, struct policy_counters *,
    int64_t, void (*)(const struct policy_scope *, void *), void *);
void policy_alert_mark(const struct policy *, struct policy_counters *,
    const char *const *, int64_t, int64_t);

/*
 * A rate-limit scope's share of a fleet-wide requests_per_minute and
 * tokens_per_minute (docs/fleet.md): leases on counts, as struct
 * policy_lease is on money. Requests count at admission, tokens when the
 * call settles (its worst case held meanwhile). Cumulative counts are per
 * process: Redis resets an instance's when its start time changes. A
 * rolling budget (window: 1h) uses the same sliding count with its money
 * in the token channel and its own bucket width.
 */
struct policy_rate_lease {
	struct pentry *rl_entry;
	const char *rl_key; /* the entry's rate key (scope, no window) */
	int64_t rl_rpm, rl_tpm; /* the tightest limits in force; 0: none */
	int64_t rl_req, rl_tok; /* leases held, as Redis last answered */
	int64_t rl_cum_req, rl_cum_tok; /* admitted / settled here */
	int64_t rl_ack_req, rl_ack_tok; /* of those, what Redis counted */
	int64_t rl_used_req, rl_used_tok; /* the fleet's last minute */
	int64_t rl_leased_req, rl_leased_tok; /* all instances' leases */
	int64_t rl_until; /* the leases may be used until then */
	int64_t rl_want_req, rl_want_tok; /* a waiting call needs these */
	int64_t rl_synced, rl_used, rl_short_at;
	int64_t rl_demand_req, rl_demand_tok; /* the last demand period's */
	int64_t rl_dcum_req, rl_dcum_tok, rl_demand_at;
	int rl_busy;
	int rl_rolling; /* a rolling budget: the token channel is its
			 * money (rl_tpm its cap, in nano-USD) */
	int64_t rl_width; /* Redis's bucket width in ms */
	int64_t rl_slots; /* buckets summed for the window */
	int64_t rl_worst; /* the last admission's worst case (rolling) */
	int rl_degraded; /* Redis down: local counts against a share */
	int64_t rl_share; /* ... the limits divided by this */
	int rl_peek; /* a call waits for the fleet's spend: sync at once */
};

/* lease.c */
void policy_counters_fleet(struct policy_counters *, int);
size_t policy_rate_leases_each(struct policy_counters *,
    void (*)(struct policy_rate_lease *, int64_t, void *), void *);
size_t policy_leases_each(struct policy_counters *,
    void (*)(struct policy_lease *, int64_t, void *), void *);
void policy_lease_answer(
    struct policy_lease *, int64_t, int64_t, int64_t, int64_t, int64_t);
int64_t policy_fleet_spent(const struct policy_scope *);
int policy_budget_stale(const struct policy *, struct policy_counters *,
    const char *const *, int64_t, int64_t);

/* rebuild.c */
int policy_rebuild(struct policy_counters *, const struct policyset *,
    sqlite3 *, const char *, int64_t, char **);

#endif
