/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to src/fleet/: the Redis connection (redis.c) and the scripts
 * it loads (scripts.c), which fleet.c, lease.c and the fleet's kills and
 * alerts build on. The public contract is include/tollgate/fleet.h.
 */
#ifndef TOLLGATE_FLEET_INT_H
#define TOLLGATE_FLEET_INT_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "tollgate/fleet.h"

struct cJSON;
struct config;
struct event_base;
struct fleet_peer;
struct policy_counters;
struct fleet_conf;
struct rconn;

/* The scripts, by index; RCONN_SCRIPTS_MAX bounds the table. */
#define FLEET_SCRIPT_LEASE 0
#define FLEET_SCRIPT_RATE 1
#define FLEET_SCRIPT_KILL_ADD 2
#define FLEET_SCRIPT_KILL_LIFT 3
#define RCONN_SCRIPTS_MAX 4

/* A connection's state. */
#define RCONN_DOWN 0
#define RCONN_CONNECTING 1
#define RCONN_READY 2

/* A reply (NULL when the command failed) and, if it failed, why. */
typedef void (*rconn_cb)(const redisReply *, const char *, void *);

/* What a connection has done since it was made. */
struct rconn_stats {
	uint64_t rs_commands; /* sent */
	uint64_t rs_replies; /* answered, errors included */
	uint64_t rs_errors; /* failed or answered with an error */
	uint64_t rs_timeouts; /* connects and commands past their deadline */
	uint64_t rs_connects; /* handshakes completed */
	uint64_t rs_downs; /* ready connections lost */
	uint64_t rs_noscript; /* scripts sent again after NOSCRIPT */
	uint64_t rs_messages; /* pub/sub messages received */
	long long rs_last_rtt_us;
};

/* The fleet of this process (fleet.c's fl); zero without fleet:. */
struct fleet {
	struct event_base *f_base;
	const struct fleet_conf *f_conf; /* f_cf's */
	struct config *f_cf; /* the configuration it started with */
	struct policy_counters *f_pc;
	struct rconn *f_conn; /* commands and scripts */
	struct rconn *f_sub; /* SUBSCRIBE <prefix>kills */
	struct event *f_tick;
	int f_up; /* f_conn is ready */
	int64_t f_started;
	int64_t f_down_since; /* Unix ms; 0 while up */
	int f_down_alerted;
	uint64_t f_seq; /* the last sequence number sent */
	int f_seq_warned; /* fleet_seq_behind has said why */
	struct fleet_wait *f_waits, *f_waits_tail;
	struct event *f_pass; /* a sync pass on the next loop turn */
	uint64_t f_wake_gen; /* fleet_wake's passes */
	int64_t f_beat_at, f_peers_at;
	struct fleet_peer *f_peers; /* from the last HGETALL */
	size_t f_npeers;
	size_t f_alive; /* instances with a recent heartbeat, at least 1 */
	size_t f_busy; /* lease syncs in flight */
	struct fleet_stats f_stats;
};

extern struct fleet fl;

/* lease.c's sums over the leases held here. */
struct lease_totals {
	size_t lt_leases; /* entries holding a lease */
	int64_t lt_leased; /* nano-USD held */
	int64_t lt_unreported; /* settled, not yet counted by Redis */
	int64_t lt_lag_ms; /* the oldest unreported spend's wait */
};

/* fleet.c */
void fleet_synced(void);
void fleet_seq_behind(int64_t);
const char *fleet_usd(int64_t);
void fleet_json_money(struct cJSON *, const char *, int64_t);
void fleet_beat(void);
void fleet_beat_remove(void);
void fleet_peers_read(void);

/* lease.c */
int64_t lease_headroom(int64_t, int64_t, int64_t);
void lease_pass(int64_t);
void lease_down(void);
void lease_back(void);
void lease_leave(int64_t);
void lease_totals(struct lease_totals *, int64_t);
struct cJSON *lease_json(int64_t);

/* rate.c */
void rate_pass(int64_t);
void rate_leave(int64_t);
struct cJSON *rate_json(int64_t, struct cJSON *);

/* kills.c */
void fleet_kills_start(void);
void fleet_kills_stop(void);
void fleet_kills_resync(void);
void fleet_kills_message(const char *, size_t, void *);
void fleet_kills_sub_state(int, void *);

/* redis.c */
struct rconn *rconn_new(struct event_base *, const struct fleet_conf *,
    const char *, const char *, void (*)(const char *, size_t, void *),
    void (*)(int, void *), void *);
int rconn_ready_p(const struct rconn *);
int rconn_pending(const struct rconn *);
const char *rconn_error(const struct rconn *);
const struct rconn_stats *rconn_stats(const struct rconn *);
int rconn_command(
    struct rconn *, rconn_cb, void *, int, const char **, const size_t *);
int rconn_eval(struct rconn *, int, rconn_cb, void *, int, int, const char **,
    const size_t *);
void rconn_free(struct rconn *);

/* scripts.c */
const char *fleet_script_text(int);

#endif
