/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Alerts: a budget threshold crossed, a breaker tripped, a kill. Each
 * alert fired goes to the log (one warning line), to the ledger's alerts
 * table (through the writer thread, never SQLite on the loop), to
 * GET /v1/alerts, and to every configured webhook: libcurl on the event
 * loop with its own multi handle, signed with HMAC-SHA256 when a secret
 * is configured, retried with exponential backoff and jitter on
 * connection errors, timeouts, 408, 429 and 5xx. Delivery is at least
 * once; receivers dedupe by the alert's id, which for a threshold is
 * derived from its scope, window and threshold, so a firing repeated
 * after a crash carries the same id.
 *
 * alerts_restore puts the thresholds persisted for the current windows
 * back into the policy counters after a restart or reload, so an alert is
 * neither repeated nor forgotten. Everything runs on the loop thread
 * except alerts_answer (the admin reader thread, read-only connection).
 * See docs/operations.md.
 */
#ifndef TOLLGATE_ALERTS_H
#define TOLLGATE_ALERTS_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "tollgate/buf.h"
#include "tollgate/tags.h"

struct config;
struct event_base;
struct policy_alert;
struct policy_counters;
struct policyset;
struct price;
struct spend_out;

#define ALERTS_ID_MAX 48 /* "thr-" and 32 hex, or a kind, time and random */
#define ALERTS_BODY_MAX BUF_ALERT_BODY_MAX /* bytes of one webhook body */
#define ALERTS_PENDING_MAX 1024 /* deliveries queued or in flight */
#define ALERTS_MAX_CONNECTIONS 16 /* webhook connections open at once */
#define ALERTS_RESUME_MS (24 * 3600 * 1000LL) /* pending ones resent */
#define ALERTS_LIMIT_DEFAULT 100 /* GET /v1/alerts */
#define ALERTS_LIMIT_MAX 1000
#define ALERTS_UNKNOWN_MAX 256 /* unknown models alerted on in a day */

/* One alert as fired; everything borrowed. */
struct alert {
	const char *al_kind; /* "threshold", "breaker", "kill", "ledger",
				"unknown_model" */
	const char *al_policy; /* policy name, or NULL */
	const char *al_scope_key; /* policy_scope_key(), or NULL */
	const char
	    *al_tags[TAG_MAX]; /* the scope's per-tag values; NULL unset */
	const char *al_window; /* "day" "week" "month" "total" "1h" ...; NULL */
	int64_t al_window_start; /* Unix ms */
	int64_t al_reset_at; /* Unix ms; POLICY_NEVER for total */
	int64_t al_threshold_nusd; /* -1: none */
	int64_t al_spent_nusd;
	int64_t al_cap_nusd; /* -1: none */
	const char *al_message; /* free text, e.g. breaker evidence; NULL */
	int64_t al_at_ms;
};

/* What one delivery attempt's outcome calls for. */
enum alerts_outcome {
	ALERTS_DELIVERED, /* 2xx */
	ALERTS_RETRY, /* transport error, timeout, 408, 429, 5xx */
	ALERTS_FAILED, /* any other status: retrying cannot help */
};

/* alerts.c */
void alerts_setup(struct event_base *);
void alerts_configure(const struct config *);
void alerts_fire(const struct alert *);
void alerts_threshold(
    const struct policy_alert *, const char *const *, int64_t);
void alerts_unknown_model(
    const char *, const char *, const struct price *, int64_t);
void alerts_shutdown(void);
size_t alerts_pending(void);

/* format.c */
void alerts_make_id(const struct alert *, char *, size_t);
void alerts_body_json(
    const struct alert *, const char *, const char *, int, struct spend_out *);
void alerts_text(const struct alert *, const char *, int, struct spend_out *);
void alerts_body_slack(const struct alert *, const char *, struct spend_out *);
void alerts_sign(const char *, const void *, size_t, char[65]);
int64_t alerts_backoff_ms(int, int64_t, int64_t, uint32_t);
enum alerts_outcome alerts_classify(int, long);

/* query.c */
int alerts_restore(struct policy_counters *, const struct policyset *,
    sqlite3 *, int64_t, char **);
int alerts_resume(sqlite3 *, int64_t, char **);
int alerts_answer(
    sqlite3 *, const char *, struct spend_out *, const char **, char **);

#endif
