/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to src/fleet/: the Redis connection (redis.c) and the scripts
 * it loads (scripts.c), which fleet.c, lease.c, the shared lists (kills,
 * extensions) and the alerts build on. The public contract is
 * include/tollgate/fleet.h.
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
#define FLEET_SCRIPT_SHARE_ADD 2
#define FLEET_SCRIPT_SHARE_LIFT 3
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
	struct rconn *f_sub; /* SUBSCRIBE <prefix>kills (SHARED_CHANNEL) */
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

/* The lists shared across the fleet (shared.c), by index. */
#define SHARED_KILLS 0
#define SHARED_EXTENSIONS 1
#define SHARED_NKINDS 2
#define SHARED_CHANNEL "kills" /* after the prefix: every list's changes */

/* What a list's learn made of an item from Redis (as kills_adopt says). */
#define SHARED_NEW 0 /* kept here now */
#define SHARED_HELD 1 /* live here already */
#define SHARED_ENDED 2 /* over by now: dropped from the hash */
#define SHARED_FAILED (-1) /* well formed, but not applied: *why */
#define SHARED_REFUSED (-2) /* malformed: *why */

/*
 * One list shared across the fleet: its names and how to reach the list
 * it mirrors (kills.c, extensions.c). Ids are the list's own: the
 * prefix (sk_prefix) tells the lists apart on the one channel.
 */
struct shared_kind {
	const char *sk_noun; /* "kill", in log lines */
	const char *sk_lift; /* "lift": the undoing of one, as a noun */
	const char *sk_lifted; /* "lifted" */
	const char *sk_verb; /* "lift" */
	const char *sk_prefix; /* "k_": every id of the list starts so */
	const char *sk_list; /* "kills": the hash <prefix>kills */
	uint64_t *sk_received; /* learnt from the fleet (fl.f_stats) */
	/* Is id held here and live at now? */
	int (*sk_live)(const char *, int64_t);
	/* Lift id here (the fleet did): 0, or -1 if not held. */
	int (*sk_remove)(const char *, int64_t);
	/* Check the JSON stored under field id, keep it: SHARED_*. */
	int (*sk_learn)(const char *, size_t, const char *, size_t, char **);
	/* The JSON to share for live id (instance: this one), or NULL. */
	struct cJSON *(*sk_json)(const char *, const char *);
	/* Call fn(id, arg) for every item live here at now. */
	void (*sk_each)(void (*)(const char *, void *), void *, int64_t);
};

/* kills.c, extensions.c */
extern const struct shared_kind shared_kills;
extern const struct shared_kind shared_extensions;

/* shared.c */
void shared_start(void);
void shared_stop(void);
void shared_resync(void);
void shared_message(const char *, size_t, void *);
void shared_sub_state(int, void *);
void shared_added(int, const char *);
void shared_lifted(int, const char *);
int shared_id_check(const char *, const char *, size_t, char **);

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
