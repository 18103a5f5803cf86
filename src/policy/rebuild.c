/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Counters from the ledger, at start-up (and, for scopes a reload adds, at
 * reload): every call row of the current windows is summed into the
 * budgets of the policies it matches, exactly as policy_admit and
 * policy_settle would have: final rows as spent at cost_nusd in the
 * window they started in. The table holds no call in flight: those are
 * in the journal and in memory until they settle (a reload's running
 * calls are added by policy_extend), and start-up writes what a crash
 * left in flight as interrupted before this runs. A settled call reaches
 * the table a moment after its answer, so a reload reads the rows not
 * yet written beside it (calls_from).
 * Only entries this rebuild creates are filled, so a scope that is
 * already live is never counted twice. The query is parameterised and
 * read-only; the connection is the caller's (spend_open).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "policy_int.h"

/* Read from calls, or from the FROM the caller names (%s). */
static const char rebuild_sql[] =
    "SELECT started_at, status, cost_nusd, reserved_nusd, intent, team,"
    " tenant, agent_class, environment, model, provider, finished_at,"
    " input_tokens + output_tokens, endpoint FROM %s"
    " WHERE started_at >= ?1 AND status <> 'refused'"
    " AND status <> 'in_flight'";

/* Rate limits look back a minute; a call may have started this long
 * before the tokens it settled within that minute. */
#define RATE_LOOKBACK_MS (60000 + 10 * 60000)

/* The ledger's "YYYY-MM-DDTHH:MM:SS.mmmZ" for Unix ms t. */
static void
fmt_time(char *buf, size_t len, int64_t t)
{
	int64_t days = pcount_floor_div(t, DAY_MS), ms = t - days * DAY_MS;
	int64_t y;
	unsigned m, d;

	policy_civil_from_days(days, &y, &m, &d);
	snprintf(buf, len, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
	    (long long)y, m, d, (long long)(ms / 3600000),
	    (long long)(ms / 60000 % 60), (long long)(ms / 1000 % 60),
	    (long long)(ms % 1000));
}

static int
digits(const char *s, int n, int64_t *out)
{
	int64_t v = 0;
	int i;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return (0);
}

/* Unix ms of a ledger time; -1 if it is not one. */
static int64_t
parse_time(const char *s)
{
	int64_t y, mo, d, h, mi, sec, ms;

	if (s == NULL || strlen(s) != 24 || s[4] != '-' || s[7] != '-' ||
	    s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' ||
	    s[23] != 'Z')
		return (-1);
	if (digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) ||
	    digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) ||
	    digits(s + 17, 2, &sec) || digits(s + 20, 3, &ms) || mo < 1 ||
	    mo > 12 || d < 1 || d > 31)
		return (-1);
	return (policy_days_from_civil(y, (unsigned)mo, (unsigned)d) * DAY_MS +
	    h * 3600000 + mi * 60000 + sec * 1000 + ms);
}

/*
 * A call's request (at its start) and its settled tokens (at its finish)
 * into a rate entry, when they fall in the minute before now. Calls in
 * flight before a restart are not: none survive it.
 */
static void
rate_row(struct pentry *e, int64_t t, int64_t fin, int64_t tokens, int64_t now)
{
	int64_t cur = pcount_floor_div(now, 1000);

	if (pcount_floor_div(t, 1000) > cur - RATE_SLOTS)
		pcount_ring_add(e->e_ring->ri_id, e->e_ring->ri_v, RATE_SLOTS,
		    pcount_floor_div(t, 1000), 1);
	if (fin != -1 && tokens > 0 && fin <= now &&
	    pcount_floor_div(fin, 1000) > cur - RATE_SLOTS)
		pcount_ring_add(e->e_ring->ri_tok_id, e->e_ring->ri_tok,
		    RATE_SLOTS, pcount_floor_div(fin, 1000), tokens);
}

/*
 * Fill the counters for the policies of ps from the ledger's calls table
 * on the read-only connection db, as of now, or from calls_from when not
 * NULL (a reload reads LEDGER_CALLS_NOW: the rows the writer has not
 * written yet count too). Returns 0, or -1 with *cause (the caller frees
 * it) when the query fails.
 */
int
policy_rebuild(struct policy_counters *pc, const struct policyset *ps,
    sqlite3 *db, const char *calls_from, int64_t now, char **cause)
{
	const struct policy *po;
	const char *attr[POLICY_ATTR_MAX];
	struct pentry **done = NULL, *e;
	sqlite3_stmt *st = NULL;
	int64_t lo = INT64_MAX, start, reset, t, cost, fin, tokens;
	char from[64];
	char *sql = NULL;
	size_t i, k, ndone;
	int a, rc, rv = -1, external;

	pcount_mark_old(pc);
	for (i = 0; i < ps->ps_n; i++) {
		po = &ps->ps_pol[i];
		if (pcount_has_rate(po) && now - RATE_LOOKBACK_MS < lo)
			lo = now - RATE_LOOKBACK_MS;
		if (!pcount_has_budget(po))
			continue;
		policy_window_at(&po->po_window, now, &start, &reset);
		if (start < lo)
			lo = start;
	}
	if (lo == INT64_MAX)
		return (0);
	fmt_time(from, sizeof(from), lo < 0 ? 0 : lo);
	xasprintf(&sql, rebuild_sql, calls_from != NULL ? calls_from : "calls");
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, from, -1, SQLITE_STATIC) != SQLITE_OK)
		goto fail;
	done = xcalloc(2 * ps->ps_n, sizeof(*done));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		t = parse_time((const char *)sqlite3_column_text(st, 0));
		if (t == -1)
			continue;
		cost = sqlite3_column_int64(st, 2);
		for (a = 0; a < POLICY_ATTR_MAX; a++)
			attr[a] = (const char *)sqlite3_column_text(st, 4 + a);
		fin = parse_time((const char *)sqlite3_column_text(st, 11));
		tokens = sqlite3_column_int64(st, 12);
		external = sqlite3_column_text(st, 13) != NULL &&
		    strcmp((const char *)sqlite3_column_text(st, 13),
			LEDGER_ENDPOINT_EXTERNAL) == 0;
		for (i = 0, ndone = 0; i < ps->ps_n; i++) {
			po = &ps->ps_pol[i];
			/* Rate limits count calls: an external cost
			 * (POST /v1/usage) is none. */
			if (pcount_has_rate(po) && policy_matches(po, attr) &&
			    t < now && !external) {
				e = pcount_rate_entry(pc, po, attr);
				for (k = 0; k < ndone && done[k] != e; k++)
					;
				if (e->e_new && k == ndone) {
					done[ndone++] = e;
					rate_row(e, t, fin, tokens, now);
				}
			}
			if (!pcount_has_budget(po) || !policy_matches(po, attr))
				continue;
			policy_window_at(&po->po_window, now, &start, &reset);
			if (t < start || t >= now)
				continue;
			e = pcount_budget_entry(pc, po, attr, t, 1);
			if (!e->e_new)
				continue;
			for (k = 0; k < ndone && done[k] != e; k++)
				;
			if (k < ndone)
				continue;
			done[ndone++] = e;
			if (e->e_kind == PE_CALENDAR) {
				e->e_spent = pcount_add(e->e_spent, cost);
				lease_settle(e, cost);
			} else
				pcount_ring_add(e->e_ring->ri_id,
				    e->e_ring->ri_v, ROLL_SLOTS,
				    pcount_floor_div(t, e->e_width), cost);
		}
	}
	if (rc != SQLITE_DONE)
		goto fail;
	rv = 0;
	goto out;
fail:
	xasprintf(cause, "policy rebuild: %s", sqlite3_errmsg(db));
out:
	sqlite3_finalize(st);
	free(sql);
	free(done);
	return (rv);
}
