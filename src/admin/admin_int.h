/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API's private header, shared by admin.c (requests, checks,
 * replies, on the loop thread) and reader.c (the query thread and its
 * queue). The public contract is include/tollgate/admin.h.
 */
#ifndef TOLLGATE_ADMIN_INT_H
#define TOLLGATE_ADMIN_INT_H

#include <stddef.h>

#include "tollgate/ledger.h"
#include "tollgate/spend.h"

struct conn;
struct event;
struct event_base;
struct hdrs;
struct http_request;
struct admin_job;
struct external_req;
struct metrics_gauges;
struct metrics_process;
struct ship_conf;

/* Largest request body the admin API reads (POST /v1/reload). */
#define ADMIN_BODY_MAX (64 * 1024)
/*
 * How long an answer that changes the ledger (a kill made or lifted)
 * waits for the change to be committed before it says it is not yet.
 */
#define ADMIN_RECORD_WAIT_MS 2000
/* Queries waiting for or running on one reader thread; 503 beyond. */
#define ADMIN_QUEUE_MAX 32

/* One admin request; owned by admin.c until it is answered. */
struct admin_req {
	struct conn *ar_conn; /* borrowed; NULL once the client has gone */
	unsigned long long ar_conn_id;
	struct http_request *ar_req; /* owned once ar_started */
	int ar_started; /* the body is read; the request is ours */
	int ar_ep; /* index into the endpoint table */
	long long ar_t0_us;
	char ar_method[16];
	char ar_path[96]; /* escaped, without the query, for the log */
	struct admin_job *ar_job; /* on the reader, or NULL */
	/* admin_reply_recorded: the answer waits for the ledger's write */
	struct ledger_ticket *ar_ticket; /* until the ledger answers */
	struct event *ar_timer; /* ADMIN_RECORD_WAIT_MS */
	struct cJSON *ar_doc; /* the answer, owned */
	int ar_status; /* its status once recorded */
	struct external_req *ar_ext; /* POST /v1/usage, until it is */
	char ar_usage_id[72]; /* its id, for the answer */
};

/*
 * A query for the reader thread. The loop fills the input, the thread the
 * output; the job moves between them through reader.c's queues, so only
 * one side touches it at a time. aj_req is the loop's alone: it is cleared
 * when the client leaves, and the finished job is then dropped.
 */
struct admin_job {
	/* input, set before reader_submit */
	enum spend_kind aj_kind;
	int aj_fleet; /* fleet=1: for the fleet reader (PostgreSQL) */
	/* NULL: spend_answer for aj_kind; else this (alerts_answer) */
	int (*aj_run)(struct sqlite3 *, const char *, struct spend_out *,
	    const char **, char **);
	char *aj_query; /* the raw query string, "" if none */
	char *aj_intent; /* GET /v1/intents/{id}: the intent, or NULL */
	int aj_limit; /* and its events' limit */
	uint64_t aj_ledger_gen; /* ledger_generation(), set by reader_submit */
	struct ledger_row *aj_open; /* calls: rows not in SQLite yet, or NULL */
	size_t aj_nopen;
	/* output, set by the thread */
	struct spend_out aj_out;
	int aj_status; /* spend_answer's (ship_answer's) HTTP status */
	const char *aj_ctype; /* its content type (a literal) */
	char *aj_err; /* why, when not 200 */
	long long aj_run_us;
	/* loop thread only */
	struct admin_req *aj_req;
	struct admin_job *aj_next;
};

/* The prefix of DELETE /v1/kills/{id}. */
#define ADMIN_KILLS_PREFIX "/v1/kills/"
/* The prefix of DELETE /v1/budgets/extensions/{id}. */
#define ADMIN_EXTENSIONS_PREFIX "/v1/budgets/extensions/"
/* The prefix of GET /v1/intents/{id}. */
#define ADMIN_INTENTS_PREFIX "/v1/intents/"

/* kills.c */
void ep_kills_list(struct admin_req *);
void ep_kills_add(struct admin_req *);
void ep_kill_delete(struct admin_req *);

/* extend.c */
void ep_extend(struct admin_req *);
void ep_extensions_list(struct admin_req *);
void ep_extension_revoke(struct admin_req *);

/* usage.c */
void ep_usage(struct admin_req *);

/* intents.c */
void ep_intent(struct admin_req *);

/* budgets.c */
struct cJSON *admin_budgets(void);
void admin_budget_gauges(struct metrics_gauges *);
void admin_budget_gauges_free(struct metrics_gauges *);

/* process.c */
void admin_process_stats(struct metrics_process *);
void admin_process_started(void);

/* dashboard.c */
void ep_dashboard(struct admin_req *);

/* admin.c */
void admin_reply_page(struct admin_req *, const char *, const void *, size_t,
    const struct hdrs *);
void admin_reply_json(struct admin_req *, int, struct cJSON *);
void admin_reply_recorded(struct admin_req *, int, struct cJSON *);
void admin_deadline(struct admin_req *, void (*)(int, short, void *));
void admin_deadline_clear(struct admin_req *);
void admin_reply_error(struct admin_req *, int, const char *, const char *,
    const char *, const char *);
void admin_job_done(struct admin_job *);
void admin_job_free(struct admin_job *);

/* reader.c */
int reader_start(
    struct event_base *, const char *, const struct ship_conf *, char **);
int reader_has_fleet(void);
int reader_submit(struct admin_job *);
void reader_stop(void);

#endif
