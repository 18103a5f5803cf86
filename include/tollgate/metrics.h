/* SPDX-License-Identifier: Apache-2.0 */
/*
 * In-memory counters for GET /metrics: every finished or refused call adds
 * to series keyed by its provider, model and attribution tags, and
 * metrics_render writes them, with the gauges it is given (the ledger's
 * counters, the calls in flight, the kills live, the fleet's figures), as
 * Prometheus text (format 0.0.4). The intent tag is never a label: its
 * values are unbounded. Every family holds at most
 * METRICS_SERIES_MAX label sets; calls beyond that fold into one series
 * whose labels are all "_other" and are counted in
 * tollgate_metrics_series_dropped_total. Runs on the loop thread only.
 * See docs/metrics.md.
 */
#ifndef TOLLGATE_METRICS_H
#define TOLLGATE_METRICS_H

#include <stdint.h>

#include "tollgate/cache.h"
#include "tollgate/fleet.h"
#include "tollgate/ledger.h"
#include "tollgate/ship.h"
#include "tollgate/usage.h"

struct evbuffer;

#define METRICS_SERIES_MAX 10000 /* label sets per family */
#define METRICS_LABEL_MAX 256 /* bytes kept of a label value */
#define METRICS_OTHER "_other" /* the label values of the fold series */

/* One finished (or refused) call. Strings are borrowed for the call only. */
struct metrics_call {
	const char *mc_provider; /* upstream type, e.g. "openai" */
	const char *mc_model; /* may be NULL */
	const char *mc_team, *mc_tenant, *mc_agent_class; /* may be NULL */
	enum call_status mc_status;
	const struct usage *mc_usage; /* may be NULL (refused) */
	int64_t mc_cost_nusd;
	int mc_unpriced; /* the model had no price */
	int mc_fallback; /* priced at its family's rates (unknown model) */
	int64_t mc_ttfb_us; /* upstream time to response headers, -1 if none */
	int64_t mc_duration_us;
};

/* The most budget scopes /metrics shows: the ones that spent most. */
#define METRICS_BUDGETS_MAX 256

/*
 * The labels a budget scope is shown with: its tags and patterns, one
 * label each (never intent: a budget split or matched by intent is not
 * shown, as intent is never a label).
 */
#define METRICS_BUDGET_NLABELS 6
extern const char *const metrics_budget_labels[METRICS_BUDGET_NLABELS];

/* One budget scope's figures, as /v1/budgets has them (the admin's). */
struct metrics_budget {
	char *mb_policy;
	char *mb_labels[METRICS_BUDGET_NLABELS]; /* NULL: not in the scope */
	char *mb_key; /* the labels in one string, to order by */
	char *mb_state; /* ok, alerting, capped, degraded, killed */
	int64_t mb_spent_nusd;
	int64_t mb_reserved_nusd;
	int64_t mb_cap_nusd; /* -1: none */
};

/* The process itself, read from the kernel at each scrape. */
struct metrics_process {
	uint64_t mp_cpu_us; /* user and system CPU time */
	uint64_t mp_rss_bytes;
	uint64_t mp_vsz_bytes;
	uint64_t mp_open_fds;
	uint64_t mp_max_fds;
	int64_t mp_start_ms; /* Unix ms; 0: unknown */
};

/*
 * What /metrics shows but metrics.c does not count: the admin layer reads
 * these at each scrape (admin_metrics_gauges) and passes them in, so that
 * metrics never reaches up into sessions, kills or the ledger.
 */
struct metrics_gauges {
	uint64_t mg_calls_in_flight; /* session_count() */
	uint64_t mg_kills_live; /* kills_count() */
	struct ledger_stats mg_ledger; /* all zero while the ledger is closed */
	struct fleet_stats mg_fleet; /* fleet_get_stats(); FLEET_OFF: none */
	struct ship_stats mg_ship; /* ship_stats(); SHIP_OFF: none */
	struct cache_stats mg_cache; /* cache_get_stats(); zero: no cache */
	struct metrics_budget *mg_budgets; /* sorted; the first mg_nbudgets
					      are shown */
	size_t mg_nbudgets; /* at most METRICS_BUDGETS_MAX */
	size_t mg_budgets_all; /* in mg_budgets */
	size_t mg_budgets_dropped; /* scopes past the cap, not shown */
	struct metrics_process mg_process;
};

/* metrics.c */
void metrics_call(const struct metrics_call *);
void metrics_refusal(const char *);
void metrics_shadow(const char *);
void metrics_routed(const char *, int64_t);
void metrics_external(const char *, int64_t);
void metrics_cache_hit(int64_t);
void metrics_cache_miss(void);
void metrics_attempt_failed(const char *, const char *, const char *);
void metrics_alert_fired(const char *);
void metrics_alert_delivery(const char *);
void metrics_conn_closed(const char *);
void metrics_render(struct evbuffer *, const struct metrics_gauges *);
void metrics_reset(void);

#endif
