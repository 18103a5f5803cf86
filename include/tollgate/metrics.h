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
};

/* metrics.c */
void metrics_call(const struct metrics_call *);
void metrics_refusal(const char *);
void metrics_shadow(const char *);
void metrics_routed(const char *, int64_t);
void metrics_attempt_failed(const char *, const char *, const char *);
void metrics_alert_fired(const char *);
void metrics_alert_delivery(const char *);
void metrics_conn_closed(const char *);
void metrics_render(struct evbuffer *, const struct metrics_gauges *);
void metrics_reset(void);

#endif
