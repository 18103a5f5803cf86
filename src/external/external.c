/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One external cost's way into the ledger and the budgets. Its row is
 * reserved under the caller's id (LEDGER_ID_CLIENT), so a cost posted
 * twice, or twice at once, is found a duplicate and counted once; once
 * the reservation is in the journal the row is settled at its cost, the
 * budgets it meets are charged with it (policy_charge: a fact, never
 * refused, which the next call meets), and the alert thresholds it
 * crossed fire. The caller hears the outcome through its callback.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/external.h"
#include "tollgate/fleet.h"
#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/util.h"

/* The most alert thresholds one cost can fire at once. */
#define EXTERNAL_FIRED_MAX 64
/* The price_version of a cost given as an amount. */
#define EXTERNAL_GIVEN "given"

/* One cost between its reservation and its answer. */
struct external_req {
	struct external_req *xr_next; /* xr_open: the ids being recorded */
	struct ledger_ticket *xr_ticket;
	external_cb xr_cb;
	void *xr_arg;
	struct ledger_row xr_row; /* strings point into xr_strs below */
	char *xr_strs[4 + TAG_MAX]; /* owned copies */
	char *xr_pv; /* the price version, owned */
};

/* An owned copy of s (NULL stays NULL), kept in xr. */
static const char *
keep(struct external_req *xr, size_t i, const char *s)
{
	xr->xr_strs[i] = s != NULL ? xstrdup(s) : NULL;
	return (xr->xr_strs[i]);
}

/*
 * The costs being recorded, few and short-lived: a second request for an
 * id still among them is told to retry rather than "duplicate", which
 * would be a lie if the first then failed.
 */
static struct external_req *xr_open;

static int
external_open(const char *id)
{
	struct external_req *xr;

	for (xr = xr_open; xr != NULL; xr = xr->xr_next)
		if (strcmp(xr->xr_row.lr_id, id) == 0)
			return (1);
	return (0);
}

static void
external_free(struct external_req *xr)
{
	struct external_req **pp;
	size_t i;

	for (pp = &xr_open; *pp != NULL; pp = &(*pp)->xr_next)
		if (*pp == xr) {
			*pp = xr->xr_next;
			break;
		}
	for (i = 0; i < nitems(xr->xr_strs); i++)
		free(xr->xr_strs[i]);
	free(xr->xr_pv);
	free(xr);
}

/* The attributes a policy matches a row on, as policy_rebuild reads them. */
static void
row_attr(const struct ledger_row *r, const char *attr[POLICY_ATTR_MAX])
{
	int t;

	for (t = 0; t < TAG_MAX; t++)
		attr[t] = r->lr_tags[t];
	attr[POLICY_ATTR_MODEL] = r->lr_model;
	attr[POLICY_ATTR_PROVIDER] = r->lr_provider;
}

/* The reservation's answer: settle, count and alert, then tell. */
static void
reserved_cb(void *arg, enum ledger_result res)
{
	struct external_req *xr = arg;
	struct config *cf = config_current();
	struct policy_alert fired[EXTERNAL_FIRED_MAX];
	const char *attr[POLICY_ATTR_MAX];
	int64_t now = wallclock_ms(), nusd = xr->xr_row.lr_cost_nusd;
	size_t i, n;

	xr->xr_ticket = NULL;
	if (res != LEDGER_OK) {
		if (xr->xr_cb != NULL)
			xr->xr_cb(xr->xr_arg,
			    res == LEDGER_DUPLICATE ? EXTERNAL_DUPLICATE
						    : EXTERNAL_UNAVAILABLE,
			    nusd);
		external_free(xr);
		return;
	}
	xr->xr_row.lr_status = CALL_OK;
	xr->xr_row.lr_finished_ms = now;
	ledger_settle(&xr->xr_row);
	row_attr(&xr->xr_row, attr);
	if (cf != NULL && cf->cf_policies != NULL) {
		/* At the time its row says, as a restart's rebuild counts it. */
		policy_charge(cf->cf_policies, enforce_counters(), attr, nusd,
		    xr->xr_row.lr_started_ms);
		n = policy_fired(cf->cf_policies, enforce_counters(), attr, now,
		    fired, nitems(fired));
		for (i = 0; i < n; i++)
			fleet_threshold(cf, &fired[i], attr, now);
	}
	metrics_external(xr->xr_row.lr_provider, nusd);
	if (xr->xr_cb != NULL)
		xr->xr_cb(xr->xr_arg, EXTERNAL_RECORDED, nusd);
	external_free(xr);
}

/*
 * Record the cost ec: priced (its amount, or its units at the price
 * file's external: rate), then written and counted as above. Returns the
 * request, whose callback runs once with the outcome, or NULL with *why
 * and *cause (a unit the price file does not list, a cost above
 * EXTERNAL_COST_MAX_NUSD, its id being recorded now, or the ledger
 * refusing more writes; the caller answers at once).
 */
struct external_req *
external_record(const struct external_cost *ec, external_cb cb, void *arg,
    enum external_refusal *why, char **cause)
{
	const struct config *cf = config_current();
	struct external_req *xr;
	struct ledger_row *r;
	int64_t nusd = ec->ec_nusd, per;
	int t;

	*cause = NULL;
	*why = EXTERNAL_BAD_AMOUNT;
	if (external_open(ec->ec_id)) {
		*why = EXTERNAL_IN_PROGRESS;
		xasprintf(cause,
		    "a cost with this id is being recorded now; retry in a "
		    "moment (it will answer duplicate once recorded)");
		return (NULL);
	}
	if (nusd < 0) {
		if (cf == NULL || ec->ec_unit == NULL ||
		    pricing_external(cf->cf_prices, ec->ec_source, ec->ec_unit,
			&per) == -1) {
			*why = EXTERNAL_BAD_UNIT;
			xasprintf(cause,
			    "the price file's external: table has no price "
			    "for unit '%s' of source '%s'; give cost_usd, or "
			    "add it",
			    ec->ec_unit != NULL ? ec->ec_unit : "",
			    ec->ec_source);
			return (NULL);
		}
		if (per != 0 && ec->ec_units > EXTERNAL_COST_MAX_NUSD / per) {
			xasprintf(cause,
			    "units at the unit's price come to more than "
			    "$1000000, the most one cost may be");
			return (NULL);
		}
		nusd = ec->ec_units * per;
	}
	if (nusd > EXTERNAL_COST_MAX_NUSD) {
		xasprintf(cause, "a cost may be at most $1000000");
		return (NULL);
	}
	xr = xcalloc(1, sizeof(*xr));
	xr->xr_cb = cb;
	xr->xr_arg = arg;
	r = &xr->xr_row;
	r->lr_id = keep(xr, 0, ec->ec_id);
	r->lr_provider = keep(xr, 1, ec->ec_source);
	r->lr_model = keep(xr, 2, ec->ec_unit);
	r->lr_endpoint = LEDGER_ENDPOINT_EXTERNAL;
	r->lr_upstream = "-";
	for (t = 0; t < TAG_MAX; t++)
		r->lr_tags[t] = keep(xr, 4 + (size_t)t, ec->ec_tags[t]);
	r->lr_started_ms = wallclock_ms();
	r->lr_status = CALL_IN_FLIGHT;
	r->lr_usage_source = USAGE_REPORTED;
	r->lr_cost_nusd = nusd;
	r->lr_reserved_nusd = nusd;
	r->lr_units = ec->ec_units;
	if (ec->ec_nusd >= 0)
		r->lr_price_version = EXTERNAL_GIVEN;
	else
		r->lr_price_version = xr->xr_pv =
		    xstrdup(pricing_version(cf->cf_prices));
	r->lr_latency_ms = -1;
	r->lr_ttfb_ms = -1;
	if ((xr->xr_ticket = ledger_reserve(
		 r, LEDGER_ID_CLIENT, reserved_cb, xr)) == NULL) {
		external_free(xr);
		*why = EXTERNAL_BUSY;
		xasprintf(cause, "the ledger cannot take the cost now");
		return (NULL);
	}
	xr->xr_next = xr_open;
	xr_open = xr;
	return (xr);
}

/*
 * The caller no longer wants the answer (its client left). What was
 * asked goes on: a cost reported is recorded and counted all the same.
 */
void
external_cancel(struct external_req *xr)
{
	if (xr != NULL)
		xr->xr_cb = NULL;
}
