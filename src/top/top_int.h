/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate top's private header: one snapshot of what the admin API said
 * (fetch.c fills it), the burn history that outlives snapshots, and the
 * screen state that the keys change and draw.c shows.
 */
#ifndef TOLLGATE_TOP_INT_H
#define TOLLGATE_TOP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/adminc.h"

/* Samples of a budget's spend kept for its burn rate: about a minute. */
#define TOP_HIST_MAX 61
/* Largest admin API answer top reads; past it, an error is shown. */

/* One budget scope of GET /v1/budgets; strings owned. */
struct top_budget {
	char *tb_key; /* policy and scope as JSON: the identity */
	char *tb_policy;
	char *tb_scope; /* "team=alpha agent_class=x", for the screen */
	char *tb_match; /* the kill match as JSON, or NULL: none usable */
	char *tb_scope_json; /* the scope as the API gave it, for extending */
	char *tb_state;
	char *tb_window;
	char *tb_reset; /* "2026-11-29T00:00:00Z" or "" */
	double tb_spent_nusd;
	double tb_reserved_nusd;
	double tb_cap_nusd; /* the effective cap; < 0: no cap */
	double tb_hard_cap_nusd; /* as configured; < 0: no cap */
	double tb_ext_nusd; /* what live extensions raise it by, or 0 */
	double tb_burn_nusd_h; /* settled spend per hour over the history */
};

/* One live kill of GET /v1/kills; strings owned. */
struct top_kill {
	char *tk_id;
	char *tk_match; /* as text */
	char *tk_match_json; /* canonical, to find a budget's kill */
	char *tk_reason;
	char *tk_expires; /* or "never" */
};

/* One live extension, as a budget of GET /v1/budgets lists it. */
struct top_ext {
	char *tx_id;
	char *tx_policy;
	char *tx_scope; /* as text */
	char *tx_by;
	char *tx_reason;
	char *tx_created; /* RFC 3339 */
	char *tx_ends; /* RFC 3339, or "" when it lasts until revoked */
	double tx_nusd;
	size_t tx_seq; /* order read: the API lists each scope's oldest first */
};

/* What one refresh read. */
struct top_snap {
	struct top_budget *ts_budgets;
	size_t ts_nbudgets;
	struct top_kill *ts_kills;
	size_t ts_nkills;
	struct top_ext *ts_exts; /* each live extension once, oldest first */
	size_t ts_nexts;
	long ts_inflight;
	int ts_inflight_more; /* more than one page */
	long ts_refused_60s; /* refusals recorded in the last minute */
	int ts_refused_more;
	double ts_today_nusd;
	int ts_ok; /* 0: ts_error says why nothing else is valid */
	char ts_error[256];
	int64_t ts_at_ms;
};

/* One budget's spend samples, oldest first in a ring. */
struct top_hist {
	char *th_key;
	int64_t th_t[TOP_HIST_MAX];
	double th_spent[TOP_HIST_MAX];
	int th_n;
	int th_head; /* index of the oldest */
	int th_seen; /* in the latest snapshot */
};

/* How the budgets are sorted; 's' cycles. */
enum top_sort {
	TOP_SORT_BURN,
	TOP_SORT_PCT,
	TOP_SORT_SPENT,
	TOP_SORT_NAME,
	TOP_SORT_MAX,
};

/* What the keys go to. */
enum top_mode {
	TOP_MODE_NORMAL,
	TOP_MODE_FILTER, /* typing a filter after '/' */
	TOP_MODE_KILL, /* y/n: kill the selected budget's scope */
	TOP_MODE_LIFT, /* y/n: lift a kill */
	TOP_MODE_EXTEND, /* typing one field of an extension */
	TOP_MODE_EXTEND_ASK, /* y/n: extend the selected budget */
};

/* The client: where the admin API is, and its token. */
/* fetch.c */
void top_snap_free(struct top_snap *);
void top_fetch(struct adminc *, struct top_snap *, int64_t);
void top_burn(struct top_snap *, struct top_hist **, size_t *, int64_t);
void top_hist_free(struct top_hist *, size_t);

/* draw.c */
struct top_view {
	const struct top_snap *tv_snap;
	const char *tv_base;
	size_t *tv_order; /* indexes of the budgets shown, in order */
	size_t tv_norder;
	size_t tv_sel; /* index into tv_order */
	size_t tv_top; /* first row of tv_order on screen */
	enum top_sort tv_sort;
	enum top_mode tv_mode;
	const char *tv_filter;
	const char *tv_input; /* the filter or extension field being typed */
	const char *tv_prompt; /* the y/n question, or the field's name */
	const char *tv_message; /* the last action's outcome */
	int tv_rows, tv_cols;
};

const char *top_sort_name(enum top_sort);
void top_usd(double, char *, size_t);
void top_draw(struct top_view *);

#endif
