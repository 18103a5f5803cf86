/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runaway breakers, evaluated per policy as a pure library: loop (the same
 * request body N times within T for one intent or agent class), velocity
 * (settled spend above $X in the last minute) and error_spike (the error
 * ratio of the calls that ended in a window reaching R while the window's
 * spend reaches S). A breaker that trips hands back a struct breaker_trip:
 * what the timed kill must match, for how long, and the evidence; the
 * caller turns it into a kill (kills_trip) and an alert. The state is one
 * object for the daemon's life, kept across reloads like the budget
 * counters and keyed the same way (match patterns and per values, never
 * the policy's name). Loop thread only; see docs/internals/policy.md.
 */
#ifndef TOLLGATE_BREAKER_H
#define TOLLGATE_BREAKER_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/policy.h"

#define BREAKER_LOOP_COUNT_MAX 50 /* loop.count */
#define BREAKER_LOOP_DIGESTS 64 /* bodies remembered per loop scope */
#define BREAKER_SCOPES_MAX 2048 /* scopes remembered in all */

/* A breaker that tripped; owned by the caller, cleared with _clear. */
struct breaker_trip {
	const struct policy *bt_policy; /* borrowed from the set */
	const char *bt_kind; /* "loop", "velocity" or "error_spike" */
	int bt_shadow; /* the policy is shadow: report, do not kill */
	char *bt_match[POLICY_ATTR_MAX]; /* what the kill matches */
	int64_t bt_kill_ms; /* the kill's TTL */
	char bt_evidence[256];
};

struct breaker_state; /* opaque; one per daemon, kept across reloads */

/* breaker.c */
struct breaker_state *breaker_state_new(void);
void breaker_state_free(struct breaker_state *);
int breaker_request(const struct policyset *, struct breaker_state *,
    const char *const *, const unsigned char[32], int64_t,
    struct breaker_trip *);
size_t breaker_settle(const struct policyset *, struct breaker_state *,
    const char *const *, int64_t, int, int64_t, struct breaker_trip *, size_t);
void breaker_trip_clear(struct breaker_trip *);
size_t breaker_gc(struct breaker_state *, int64_t);
size_t breaker_count(const struct breaker_state *);

#endif
