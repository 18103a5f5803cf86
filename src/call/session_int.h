/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The session's private parts, shared by the files of a call's life:
 * session.c (routing, attribution, pricing, the ledger row, the close
 * path), session_policy.c (admission and settlement against the policies),
 * session_breakers.c (kills and breakers at admission and settlement),
 * session_refuse.c (every refusal's answer), session_stop.c (stopping
 * calls in flight), session_retry.c (failover and retries) and relay.c
 * (the upstream transfer and the relay of its response). Nothing else includes this; the public interface is
 * include/tollgate/session.h.
 */
#ifndef TOLLGATE_SESSION_INT_H
#define TOLLGATE_SESSION_INT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

#include "tollgate/attribution.h"
#include "tollgate/cache.h"
#include "tollgate/http.h"
#include "tollgate/ledger.h"
#include "tollgate/pick.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/route.h"
#include "tollgate/routing.h"
#include "tollgate/usage.h"

struct cJSON;
struct evbuffer;
struct config;
struct conn;
struct event;
struct fleet_cache_req;
struct fleet_wait;
struct http_request;
struct ledger_ticket;
struct meter;
struct price;
struct routing_rule;
struct xfer;

enum se_state {
	SE_ROUTED, /* head accepted, body being read */
	SE_WAITING, /* waiting for the fleet to top up a lease, or for its
		       spend on a budget a routing rule reads */
	SE_RESERVING, /* its reservation going to the journal (ledger.h) */
	SE_FORWARDING, /* the upstream transfer is running */
};

/*
 * One call; owned by itself. session_close ends it and leaves it closed
 * (se_closed) on the dead list; the next loop turn frees it.
 */
struct session {
	unsigned long long se_id;
	enum se_state se_state;
	struct conn *se_conn; /* borrowed; NULL once the client left */
	struct config *se_conf; /* reference held for the call */
	struct http_request *se_req; /* borrowed until started, then owned */
	int se_started;
	struct route se_route;
	struct attribution se_attr;
	struct call_info se_ci;
	const struct price *se_price; /* borrowed from se_conf's prices, or
					 se_family */
	int se_asked_priced; /* the table knows the model asked for */
	struct price se_family; /* unknown model: its family's dearest
				   rates (unknown_models family_max) */
	char *se_fallback_pv; /* "<version>+fallback:<family>" while
				 se_price is se_family; owned */
	/* routing (session_route.c) */
	const struct routing_rule *se_rule; /* the rule that applied, or
					       NULL; borrowed from se_conf */
	char se_routed_from[USAGE_MODEL_MAX]; /* the model asked for, when
						 the rule sent another */
	const struct price *se_asked_price; /* its price, or NULL */
	int se_attempts; /* upstream transfers started (lr_attempts), the
			    running one included (session_retry.c) */
	int se_switched; /* the rule changed the upstream: the client's
			    credentials are not forwarded (relay.c) */
	int se_route_stale; /* a budget a rule reads has only an old
			       figure of the fleet's spend */
	int se_read; /* the request has been read (session_start) */
	char *se_body; /* rewritten request body, or NULL; once forwarded,
			  the body libcurl sends (NULL when empty) */
	size_t se_bodylen;
	struct evbuffer *se_bodybuf; /* owns se_body when it is the client's
					body itself (relay_forward) */
	struct meter *se_meter;
	struct ledger_ticket *se_ticket;
	int se_reserved; /* the journal has our reservation: settle it */
	int se_client_gone;
	int64_t se_reserved_nusd;
	struct xfer *se_xfer;
	struct event *se_timer; /* header, then idle, timeout */
	char se_reqid[REQUEST_ID_MAX + 1];

	int64_t se_started_ms;
	long long se_t0_us;
	long long se_ttfb_us;
	int se_status;
	size_t se_bytes_in;
	size_t se_bytes_out;
	int se_replied; /* the client has a status line */
	int se_paused;
	int se_headers_seen;
	int se_nothing_sent; /* the request never left (connect failed) */
	const char *se_refusal; /* reason code when tollgate refused */
	char *se_note; /* what the close line adds (session_note); owned */
	char se_error[64]; /* the row's reason for an error, or "" */

	/* policies (session_policy.c, session_breakers.c, session_stop.c) */
	const char *se_pattr[POLICY_ATTR_MAX]; /* what policies match on */
	struct policy_reservation *se_res; /* settled once, at close */
	struct fleet_wait *se_wait; /* waiting for a fleet lease (or, for
				      a routing rule, the fleet's spend) */
	int64_t se_wait_until; /* Unix ms; 0: has not waited */
	int se_wait_over; /* waited its time: a short lease now refuses */
	int se_res_capped; /* se_res holds a capped budget */
	struct hdrs se_hdrs; /* budget headers for the response */
	char *se_stop; /* a kill's reason, set while reserving; owned */
	int se_cut; /* stopped by tollgate: the response is incomplete */

	/* attempts: failover and retries (session_retry.c) */
	const struct upstream_conf *se_chain[1 + ROUTING_FALLBACK_MAX];
	/* borrowed from se_conf: where the call goes first, then its
	   rule's fallbacks; se_nchain 0: one attempt, never retried */
	int se_nchain;
	int se_at; /* se_chain's index of the attempt running */
	const struct upstream_conf *se_path_up; /* the upstream its path
						   named, before any rule */
	struct pick se_pick; /* the URL and key of the attempt running */
	int64_t se_lost_nusd; /* worst cases of attempts that were sent and
				 never answered, charged on top */
	struct event *se_retry_timer; /* the wait before the next attempt */
	char *se_attempt_log; /* JSON array of the failed attempts; owned */
	long long se_attempt_us; /* when the attempt running began */
	int se_closed; /* session_close has run or is running: inert, not
			  to be stopped, answered or closed again */

	/* the response cache (session_cache.c) */
	enum {
		SE_CACHE_NONE, /* not looked up (yet) */
		SE_CACHE_ASKING, /* waiting for the fleet's Redis */
		SE_CACHE_MISS,
		SE_CACHE_HIT,
		SE_CACHE_SKIP, /* not cached: no-store, not taken, no key */
	} se_cache;
	struct fleet_cache_req *se_cache_req; /* the Redis lookup, or NULL */
	unsigned char se_cache_key[CACHE_KEY_LEN];
	const struct upstream_conf *se_cache_up; /* the upstream the key
						    names; borrowed */
	struct evbuffer *se_cache_buf; /* a miss's answer as relayed, to be
					  stored; NULL once too large */
	char *se_cache_ctype; /* its Content-Type; owned */
	struct usage se_cache_usage; /* a hit's: the stored answer's */

	struct session *se_prev, *se_next; /* the live list */
	struct session *se_reap_next; /* the dead list, once closed */
};

/* What a refusal does besides answering (session_refuse's flags). */
#define REFUSE_RECORD 0x01 /* write its refused row: the call has none */
#define REFUSE_OWN_ID                                                          \
	0x02 /* under an id of tollgate's own, not the
			      client's X-Tollgate-Request-Id */
#define REFUSE_NO_RETRY 0x04 /* x-should-retry: false */
#define REFUSE_RETRY_SOON 0x08 /* retry-after: 1 */

/* What a refusal's answer says beyond its message; every member optional. */
struct refusal {
	const char *rf_code; /* the OpenAI error code, when not the reason */
	const char *rf_type; /* the error type, when not the status's */
	struct hdrs *rf_hdrs; /* more headers; cleared */
	/* Adds to the body (the tollgate object, Gemini's details). */
	void (*rf_dress)(struct session *, struct cJSON *, const void *);
	const void *rf_arg;
};

/* session.c */
void session_admitting(struct session *);
void session_reserved(struct session *);
void session_close(struct session *, enum call_status, const char *);
void session_note(struct session *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
void session_reply(struct session *, int, struct hdrs *, char *);
void session_record_refusal(struct session *, int, const char *);
void session_refusal_id(struct session *);
struct session *session_first(void);
int64_t session_cost(const struct session *, const struct usage *);
void session_reply_error(struct session *, int, const char *, const char *);
void session_arm_timer(struct session *, long);

/* session_refuse.c */
void session_refuse(struct session *, int, const char *, int,
    const struct refusal *, const char *, ...)
    __attribute__((format(printf, 6, 7)));
void session_scope_label(char *, size_t, const struct policy_scope *);
void session_cap_label(char *, size_t, const struct policy_scope *);
void session_usd(char *, size_t, int64_t);
void session_add_tollgate(struct cJSON *, enum policy_reason,
    const struct policy_scope *, int64_t, const char *, const char *);
void session_refuse_policy(
    struct session *, const struct policy_decision *, const char *);
void session_refuse_kill(
    struct session *, int, const char *, const char *, const char *);
void session_budget_headers(struct session *, const struct policy_decision *);

/* session_breakers.c */
int session_admit_kills(struct session *);
int session_admit_loop(struct session *, const struct policyset *);
void session_settle_breakers(
    struct session *, enum call_status, int64_t, int64_t);

/* session_stop.c */
void session_stop(struct session *, const char *);
void session_stop_capped(struct session *, const char *);

/* session_policy.c */
const char *session_forward_body(struct session *, size_t *);
void session_replace_body(struct session *, char *, size_t);
int session_rewrite_bound(struct session *, int64_t);
int session_admit(struct session *);
void session_settle(
    struct session *, enum call_status, int64_t, const struct usage *);
void session_check_overrun(struct session *);

/* session_route.c */
int session_route(struct session *);
int64_t session_saved(const struct session *, const struct usage *, int64_t);

/* session_cache.c */
int session_cache_serve(struct session *);
void session_cache_type(struct session *, const char *);
void session_cache_keep(struct session *, const char *, size_t);
void session_cache_usage(const struct session *, struct usage *);
int64_t session_cache_saved(const struct session *, const struct usage *);
void session_cache_close(
    struct session *, enum call_status, const struct usage *, int64_t);
/* session_retry.c */
void session_chain(struct session *, const struct upstream_conf *);
void session_chain_info(const struct session *, struct call_info *);
int64_t session_chain_worst(const struct session *);
int session_retry(struct session *, int, const char *, long);
void session_retry_free(struct session *);

/* relay.c */
void relay_forward(struct session *);
void relay_attempt(struct session *);
void relay_emit(void *, const char *, size_t);
void relay_timer_cb(evutil_socket_t, short, void *);

#endif
