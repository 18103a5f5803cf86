/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet: every instance that names the same Redis in fleet: acts as
 * one enforcement domain. Hard caps hold across the fleet by leases (each
 * instance admits against a slice of a cap's remaining room that Redis
 * granted it, and reports what it spent in batches), kills and budget
 * extensions reach every instance, and an alert threshold is sent by one
 * instance only. Without fleet: nothing here runs and every call is what
 * it was on one instance.
 * See docs/fleet.md (what is guaranteed) and docs/internals/fleet.md.
 *
 * Loop thread only. Sessions, the admin API and the daemon tell the fleet;
 * the fleet tells the policy counters and the alerts, never a session.
 */
#ifndef TOLLGATE_FLEET_H
#define TOLLGATE_FLEET_H

#include <stdint.h>

struct cJSON;
struct config;
struct event_base;
struct extension;
struct kill;
struct policy_alert;
struct policy_counters;

/* The fleet as a call sees it. */
enum fleet_state {
	FLEET_OFF, /* no fleet: section */
	FLEET_UP, /* Redis answers */
	FLEET_DOWN, /* Redis does not answer (degraded) */
};

struct fleet_wait; /* a call waiting for a lease top-up */

/* What GET /metrics shows of the fleet. */
struct fleet_stats {
	int fs_state; /* enum fleet_state */
	uint64_t fs_commands; /* Redis commands sent */
	uint64_t fs_errors; /* failed or answered with an error */
	uint64_t fs_timeouts; /* past connect_timeout or command_timeout */
	uint64_t fs_syncs; /* lease syncs answered */
	uint64_t fs_topups; /* syncs that asked for more lease */
	uint64_t fs_short; /* syncs granted less than they asked for */
	uint64_t fs_waits; /* calls that waited for a top-up */
	uint64_t fs_wait_timeouts; /* ... and were refused when time ran out */
	uint64_t fs_degraded_ms; /* time spent with Redis down */
	uint64_t fs_kills_in; /* kills learnt from other instances */
	uint64_t fs_extensions_in; /* budget extensions learnt so */
	uint64_t fs_alerts_won; /* thresholds this instance was first to */
	uint64_t fs_alerts_lost; /* thresholds another instance sent */
	int64_t fs_leased_nusd; /* leases this instance holds now */
	int64_t fs_unreported_nusd; /* spend Redis has not counted yet */
};

/* fleet.c */
int fleet_start(struct event_base *, struct config *, struct policy_counters *);
void fleet_stop(struct event_base *);
enum fleet_state fleet_state(void);
int fleet_refuses_capped(void);
const char *fleet_instance(void);
struct fleet_wait *fleet_wait(int64_t, void (*)(void *, int), void *);
void fleet_wait_cancel(struct fleet_wait *);
void fleet_threshold(
    struct config *, const struct policy_alert *, const char *const *, int64_t);
struct cJSON *fleet_json(void);
void fleet_get_stats(struct fleet_stats *);

/* cache.c: the response cache's entries in Redis */
struct cache_entry;
struct fleet_cache_req;
typedef void (*fleet_cache_cb)(void *, const struct cache_entry *);
struct fleet_cache_req *fleet_cache_get(
    const unsigned char *, fleet_cache_cb, void *);
void fleet_cache_cancel(struct fleet_cache_req *);
int fleet_cache_put(const unsigned char *, const struct cache_entry *, long);
int fleet_cache_on(void);

/* kills.c */
void fleet_kill_added(const struct kill *);
void fleet_kill_lifted(const char *);

/* extensions.c */
void fleet_extension_added(const struct extension *);
void fleet_extension_revoked(const char *);

#endif
