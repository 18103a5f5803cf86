/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger: one row per call in a SQLite database (WAL), written by one
 * writer thread that group-commits whatever is queued, so the cost of a
 * commit (and of the fsync under durability: power) is paid per batch, not
 * per row. The event loop never waits on SQLite.
 *
 * A call is reserved by ledger_reserve: its row goes to the reservation
 * journal (<path>.journal.<n>) with one write(2) per loop turn for every
 * call admitted in it, and the call is forwarded once the callback says
 * the write returned (under durability: power, once a sync covers it).
 * ledger_settle writes its outcome to the journal too, and the writer
 * inserts the call's one row, final, off the call's path. Until then the
 * call is in memory (its id in use, its row in /v1/calls). At start-up
 * the journal's tail is replayed: a reservation never settled becomes an
 * interrupted row charged at its reservation, a settlement the ledger
 * lacks becomes its row; rows a crash of an older version left in_flight
 * become interrupted too. When the journal cannot be written, or the
 * ledger's file is lost, reservations fail (the caller answers 503);
 * settlements are kept and retried, never dropped.
 *
 * The writer also makes sure the file it writes is the one a restart
 * would open: after every batch that answers a probe or a journal mark,
 * and once a second, it compares the open file with what is at its path.
 * A ledger deleted, moved, replaced, or whose -wal or -shm went, and one
 * whose fsync failed, is "lost": reservations are refused at once while
 * the writer copies the open database into a fresh file at the path and
 * reopens it there; a file that is not tollgate's is never written.
 * ledger_set_event_cb hears of it (and of failing writes) on the loop.
 *
 * For the fleet ledger every row that becomes final, and every change to
 * one, takes the next ship_seq (calls, alerts, kills), so a shipper sends
 * what is above its cursor, and reports it with ledger_ship_done, which
 * may also prune what was shipped.
 *
 * Every function runs on the loop thread that owns the event base given
 * to ledger_open, but ledger_ship_done, which any thread may call.
 * ledger_close refuses new reservations and those not yet answered,
 * writes every settlement, and checkpoints. See
 * docs/internals/ledger.md.
 */
#ifndef TOLLGATE_LEDGER_H
#define TOLLGATE_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/tags.h"
#include "tollgate/usage.h"

struct event_base;

/*
 * The rows priced at a family's rates for an unknown model (price_version
 * "<version>+fallback:<family>"), as an SQL condition on calls; the
 * calls_fallback index is partial on exactly this.
 */
#define LEDGER_FALLBACK_WHERE "price_version LIKE '%+fallback:%'"
/*
 * The rows that saved something, a routing rule applied to or the
 * response cache answered: what saved_usd sums; the calls_routed index
 * is partial on exactly this.
 */
#define LEDGER_ROUTED_WHERE "(routed_rule IS NOT NULL OR cache_hit = 1)"

/* The endpoint of a row that is no call: a cost POST /v1/usage recorded. */
#define LEDGER_ENDPOINT_EXTERNAL "external"

/* ledger_reserve's flags: the request id is the client's, not ours. */
#define LEDGER_ID_CLIENT 0x1

/* The most rows one ledger_ship_done deletes (its pruning). */
#define LEDGER_PRUNE_MAX 1000

enum durability {
	DURABILITY_PROCESS, /* WAL, synchronous=NORMAL */
	DURABILITY_POWER, /* WAL, synchronous=FULL: fsync per commit */
};

enum call_status {
	CALL_IN_FLIGHT,
	CALL_OK,
	CALL_ERROR, /* the provider answered with an error status */
	CALL_REFUSED, /* tollgate refused it; never forwarded */
	CALL_CLIENT_CLOSED, /* the client left before the end */
	CALL_UPSTREAM_ERROR, /* the provider failed or timed out */
	CALL_INTERRUPTED, /* tollgate stopped (crash) mid-call */
	CALL_KILLED, /* ended while it ran by a kill or a cap (tollgate) */
};

/* One row; strings are borrowed by the ledger_* calls, which copy them. */
struct ledger_row {
	const char *lr_id; /* request id, the primary key */
	int64_t lr_started_ms; /* Unix ms (stored as RFC 3339 UTC, ms) */
	int64_t lr_finished_ms; /* 0 while in flight */
	const char *lr_provider; /* openai | anthropic | gemini */
	const char *lr_endpoint; /* route_endpoint_name() */
	const char *lr_upstream; /* the upstream's name */
	const char *lr_model; /* priced model name, or NULL */
	const char *lr_tags[TAG_MAX]; /* NULL when unset */
	const char *lr_key_fingerprint; /* 16 hex of SHA-256, or NULL */
	int lr_stream;
	enum call_status lr_status;
	int lr_http_status; /* 0 if none yet */
	int64_t lr_input_tokens;
	int64_t lr_output_tokens;
	int64_t lr_cached_input_tokens;
	int64_t lr_cache_write_tokens;
	int64_t lr_reasoning_tokens;
	enum usage_source lr_usage_source;
	int64_t lr_cost_nusd;
	int64_t lr_reserved_nusd;
	const char *lr_price_version; /* "unpriced", "<v>+fallback:<family>"
					 for unknown models */
	const char *lr_served_model; /* the model the provider said served
					the call, or NULL */
	const char *lr_refusal_reason;
	int64_t lr_latency_ms; /* -1 if unknown */
	int64_t lr_ttfb_ms; /* -1 if none */
	const char *lr_routed_from; /* the model asked for, when a routing
				       rule sent another; else NULL */
	const char *lr_routed_rule; /* the routing rule that applied, or
				       NULL */
	int64_t lr_saved_nusd; /* the asked model's price for the same
				  tokens minus the cost; 0 when not routed */
	int lr_attempts; /* upstream attempts made: 0 for a refused call or
			    a cache hit, 1 for a call sent once */
	const char *lr_attempt_log; /* the attempts that failed, as a JSON
				       array, or NULL when none did */
	int lr_cache_hit; /* answered from the response cache */
	int64_t lr_units; /* an external cost's units (POST /v1/usage);
			     0 for calls */
};

/*
 * One alert as the ledger keeps it (table alerts): what fired and how its
 * delivery went. Strings are borrowed by ledger_alert, which copies them;
 * times are Unix ms, money nano-USD.
 */
struct ledger_alert {
	const char *la_id; /* unique; the webhook's X-Tollgate-Alert-Id */
	int64_t la_fired_ms;
	const char *la_kind; /* "threshold", "breaker", "kill" */
	const char *la_policy; /* or NULL */
	const char *la_scope_key; /* or NULL */
	const char *la_tags[TAG_MAX]; /* the scope's tag values; NULL unset */
	const char *la_window; /* "day", "1h", ...; or NULL */
	int64_t la_window_start; /* -1: none */
	int64_t la_reset_at; /* -1: none (never resets) */
	int64_t la_threshold_nusd; /* -1: none */
	int64_t la_spent_nusd;
	int64_t la_cap_nusd; /* -1: none */
	const char *la_message; /* or NULL */
	const char *la_delivery; /* "none", "pending", "delivered", "failed" */
	int la_attempts;
};

/*
 * A runtime kill as the kills table keeps it (include/tollgate/kills.h);
 * the strings are borrowed by ledger_kill_add, which copies them.
 */
struct ledger_kill {
	const char *lk_id;
	int64_t lk_created_ms;
	int64_t lk_expires_ms; /* 0: until deleted */
	const char *lk_match; /* a JSON object: attribute -> glob */
	const char *lk_reason;
	const char *lk_source;
};

/*
 * A budget extension as the extensions table keeps it
 * (include/tollgate/extensions.h); the strings are borrowed by
 * ledger_extension_add, which copies them. Times are Unix ms; 0: none.
 */
struct ledger_extension {
	const char *le_id;
	int64_t le_created_ms;
	const char *le_policy;
	const char *le_scope; /* a JSON object, as GET /v1/budgets shows */
	const char *le_key; /* the budget key it raises */
	const char *le_intent; /* the scope's per-intent value, or NULL */
	const char *le_window;
	int64_t le_window_start_ms;
	int64_t le_ends_ms; /* 0: until revoked */
	int64_t le_expires_ms; /* 0: none asked */
	int64_t le_nusd;
	const char *le_reason;
	const char *le_by;
	const char *le_instance; /* the instance that made it, or NULL */
};

enum ledger_result {
	LEDGER_OK, /* the reservation is in the journal: forward */
	LEDGER_DUPLICATE, /* a row with this id exists: nothing written */
	LEDGER_UNAVAILABLE, /* the write failed (disk full, busy, I/O) */
};

/*
 * Runs on the loop thread with the reservation's answer. The ticket is
 * freed once it has run: after LEDGER_DUPLICATE or LEDGER_UNAVAILABLE the
 * call must not be forwarded, nor settled.
 */
typedef void (*ledger_cb)(void *, enum ledger_result);

struct ledger_ticket;

/*
 * Why the open ledger is not, or may not be, the file a restart would
 * open. While it is lost, reservations are answered LEDGER_UNAVAILABLE.
 */
enum ledger_lost {
	LEDGER_LOST_NONE,
	LEDGER_LOST_DELETED, /* the database file was unlinked */
	LEDGER_LOST_MOVED, /* renamed away: nothing, or a stale copy, there */
	LEDGER_LOST_REPLACED, /* another file is at the path: never written */
	LEDGER_LOST_WAL, /* its -wal was deleted or replaced */
	LEDGER_LOST_SHM, /* its -shm was deleted or replaced */
	LEDGER_LOST_UNREACHABLE, /* the path cannot be looked up (stat) */
	LEDGER_LOST_SYNC, /* an fsync failed: what is on disk is unknown */
	LEDGER_LOST_RELINKED, /* the path (a link) now leads to another file */
};
#define LEDGER_LOST_MAX (LEDGER_LOST_RELINKED + 1)

/* A change in the ledger's health, told to the loop (ledger_event_cb). */
enum ledger_event_kind {
	LEDGER_EVENT_FAILING, /* transactions fail (disk full, I/O, busy) */
	LEDGER_EVENT_LOST, /* the file is lost (le_lost says why) */
	LEDGER_EVENT_RECOVERED, /* the ledger writes again */
};

struct ledger_event {
	enum ledger_event_kind le_kind;
	enum ledger_lost le_lost; /* LEDGER_EVENT_LOST */
	const char *le_message; /* one line; borrowed for the call */
};

/* Runs on the loop thread, for each event in the order they happened. */
typedef void (*ledger_event_cb)(const struct ledger_event *, void *);

/* Counters for logs and /metrics. */
struct ledger_stats {
	uint64_t ls_rows_written;
	uint64_t ls_commits;
	uint64_t ls_failures; /* failed transactions */
	uint64_t ls_refused_full; /* reservations refused: queue full */
	uint64_t ls_interrupted; /* rows recovered at start-up */
	size_t ls_queue_depth;
	uint64_t ls_commit_us_total; /* time spent committing */
	uint64_t ls_commit_us_max;
	uint64_t ls_batch_max; /* most items in one transaction */
	uint64_t ls_dropped; /* settlements, records given up (close) */
	int ls_failing; /* the last transaction failed */
	uint64_t ls_checkpoints; /* WAL checkpoints by the checkpointer */
	uint64_t ls_checkpoint_us_total;
	uint64_t ls_checkpoint_us_max;
	enum ledger_lost ls_lost; /* why calls are refused now, or NONE */
	uint64_t ls_lost_total[LEDGER_LOST_MAX]; /* times found lost, by why */
	uint64_t ls_rebuilds; /* lost ledgers rebuilt at their path */
	uint64_t ls_rebuild_failures; /* attempts that failed (retried) */
	uint64_t ls_file_checks; /* open file compared with its path */
	uint64_t ls_pruned; /* shipped rows deleted (ledger_ship_done) */
	uint64_t ls_replayed; /* rows written from the journal at start-up */
	size_t ls_in_flight; /* calls reserved, not yet settled */
	uint64_t ls_journal_writes; /* write(2)s of the loop's turns */
	uint64_t ls_journal_rotations; /* segments started */
	uint64_t ls_journal_failures; /* writes or syncs that failed */
	uint64_t ls_journal_segment; /* the open segment's number */
	int64_t ls_journal_bytes; /* its size */
	uint64_t ls_journal_syncs; /* power: fdatasyncs */
	uint64_t ls_journal_sync_us_total;
};

/*
 * The calls table's columns a ledger_row fills, in order: the insert's
 * and temp.calls_open's (unwritten.c).
 */
#define LEDGER_ROW_COLUMNS                                                     \
	"id, started_at, finished_at, provider, endpoint, upstream, model,"    \
	" intent, team, tenant, agent_class, environment, key_fingerprint,"    \
	" stream, status, http_status, input_tokens, output_tokens,"           \
	" cached_input_tokens, cache_write_tokens, reasoning_tokens,"          \
	" usage_source, cost_nusd, reserved_nusd, price_version,"              \
	" refusal_reason, latency_ms, ttfb_ms, served_model, routed_from,"     \
	" routed_rule, saved_nusd, attempts, attempt_log, cache_hit, units"

/*
 * The calls table and the rows it does not have yet (ledger_rows_load)
 * read as one, for a query's FROM: a row the writer committed after the
 * copy was taken shows once, as SQLite has it.
 */
#define LEDGER_CALLS_NOW                                                       \
	"(SELECT * FROM main.calls UNION ALL SELECT * FROM temp.calls_open o"  \
	" WHERE NOT EXISTS (SELECT 1 FROM main.calls c WHERE c.id = o.id))"

struct sqlite3;

/* ledger.c */
int ledger_open(
    struct event_base *, const char *, enum durability, size_t, char **);
struct ledger_ticket *ledger_reserve(
    const struct ledger_row *, int, ledger_cb, void *);
void ledger_ticket_cancel(struct ledger_ticket *);
struct ledger_ticket *ledger_barrier(ledger_cb, void *);
void ledger_settle(const struct ledger_row *);
int ledger_record(const struct ledger_row *);
int ledger_kill_add(const struct ledger_kill *);
int ledger_kill_delete(const char *, int64_t);
int ledger_extension_add(const struct ledger_extension *);
int ledger_extension_revoke(const char *, int64_t);
int ledger_alert(const struct ledger_alert *);
void ledger_alert_delivery(const char *, const char *, int);
int ledger_ship_done(const char *, const char *, int64_t, int64_t);
void ledger_stats(struct ledger_stats *);
uint64_t ledger_generation(void);
void ledger_set_event_cb(ledger_event_cb, void *);
void ledger_close(void);
const char *ledger_status_name(enum call_status);
const char *ledger_usage_source_name(enum usage_source);
const char *ledger_lost_name(enum ledger_lost);

size_t ledger_unwritten(struct ledger_row **);

/* unwritten.c */
int ledger_rows_load(
    struct sqlite3 *, const struct ledger_row *, size_t, char **);

#ifdef TG_UNITTEST
/* Test hooks, compiled only into the ledger's unit tests. */
void ledger_test_max_pages(int64_t);
void ledger_test_pause(int);
void ledger_test_busy_timeout(int);
int ledger_test_synchronous(void);
void ledger_test_segment_max(int64_t);
#endif

#endif
