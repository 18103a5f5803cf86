/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy runtime (include/tollgate/enforce.h). Counters are keyed by
 * scope and window, never by policy, so they outlive every configuration
 * generation: a reload that edits a cap or renames a policy keeps the
 * spend, and one that adds a policy starts its scopes from the ledger.
 * The rebuild reads the ledger through a read-only connection of its own,
 * opened for the rebuild and closed after it, on the loop thread: at
 * start-up before any call is accepted, at a reload while calls wait
 * (a scan of the current windows' rows; see docs/internals/policy.md).
 */
#include <stdint.h>
#include <stdlib.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/alerts.h"
#include "tollgate/breaker.h"
#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/fleet.h"
#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#define ENFORCE_GC_MS 60000

static struct policy_counters *en_counters;
static struct breaker_state *en_breakers;
static struct event *en_gc;

/*
 * Fill the scopes of cf's policies that have no counter yet, from the
 * ledger's file and the rows the writer has not written yet (calls settled
 * a moment ago; many more while SQLite fails): a scope a reload adds
 * counts them too.
 */
static int
enforce_rebuild(const struct config *cf, char **cause)
{
	sqlite3 *db;
	struct ledger_row *rows;
	char *why = NULL;
	long long t0 = monotime_us();
	int64_t now;
	size_t before = policy_counters_count(en_counters), n;
	int rc;

	if (cf->cf_policies == NULL || cf->cf_policies->ps_n == 0)
		return (0);
	if ((db = spend_open(cf->cf_ledger_path, cause)) == NULL)
		return (-1);
	now = wallclock_ms();
	n = ledger_unwritten(&rows);
	rc = ledger_rows_load(db, rows, n, &why);
	free(rows);
	if (rc != 0) {
		/* The file's rows are still far better than none. */
		log_warnx(
		    "policies: %s; budgets rebuilt from the ledger's file "
		    "alone, without %zu call%s not yet written",
		    why, n, n == 1 ? "" : "s");
		free(why);
	}
	rc = policy_rebuild(en_counters, cf->cf_policies, db,
	    rc == 0 ? LEDGER_CALLS_NOW : NULL, now, cause);
	/* Thresholds that fired in these windows before stay fired. */
	if (rc == 0)
		rc = alerts_restore(
		    en_counters, cf->cf_policies, db, now, cause);
	sqlite3_close(db);
	if (rc == 0)
		log_info("policies: %zu polic%s, %zu budget scope%s rebuilt "
			 "from the ledger in %lld ms",
		    cf->cf_policies->ps_n,
		    cf->cf_policies->ps_n == 1 ? "y" : "ies",
		    policy_counters_count(en_counters) - before,
		    policy_counters_count(en_counters) - before == 1 ? "" : "s",
		    (monotime_us() - t0) / 1000);
	return (rc);
}

static void
enforce_gc_cb(evutil_socket_t fd, short ev, void *arg)
{
	size_t n;

	(void)fd;
	(void)ev;
	(void)arg;
	if ((n = policy_counters_gc(en_counters, wallclock_ms())) > 0)
		log_debug("policies: %zu idle counter%s dropped", n,
		    n == 1 ? "" : "s");
	breaker_gc(en_breakers, wallclock_ms());
}

/*
 * Create the counters and fill them from the ledger, which ledger_open
 * has recovered. Returns 0, or -1 with *cause allocated.
 */
int
enforce_start(struct event_base *base, const struct config *cf, char **cause)
{
	struct timeval tv = {ENFORCE_GC_MS / 1000, 0};

	en_counters = policy_counters_new();
	/* Before the rebuild: a fleet's budgets carry leases from the start. */
	if (cf->cf_fleet != NULL)
		policy_counters_fleet(en_counters, 1);
	en_breakers = breaker_state_new();
	if (enforce_rebuild(cf, cause) == -1) {
		policy_counters_free(en_counters);
		en_counters = NULL;
		breaker_state_free(en_breakers);
		en_breakers = NULL;
		return (-1);
	}
	en_gc = event_new(base, -1, EV_PERSIST, enforce_gc_cb, NULL);
	event_add(en_gc, &tv);
	return (0);
}

/* What enforce_alerts hands each threshold: its config and the time. */
struct alert_arg {
	struct config *aa_cf;
	int64_t aa_now;
};

static void
enforce_alert_cb(
    const struct policy_alert *pa, const char *const *attr, void *arg)
{
	const struct alert_arg *aa = arg;

	fleet_threshold(aa->aa_cf, pa, attr, aa->aa_now);
}

/*
 * A new configuration is in force: start the scopes it introduces from
 * the ledger. Existing scopes keep their counters. On failure the new
 * scopes start empty until their window turns; -1 and *cause say so.
 * The caller (server_reload) then extends the running calls'
 * reservations to the new policies and fires the thresholds the spend
 * already stands at (enforce_alerts): sessions sit above this file.
 */
int
enforce_reload(const struct config *cf, char **cause)
{
	if (en_counters == NULL)
		return (0);
	return (enforce_rebuild(cf, cause));
}

/*
 * Fire every threshold of cf's policies that a scope's spend already
 * stands at and that has not fired in its window: at start-up, once the
 * alerts are set up (a threshold lowered while tollgate was stopped), and
 * at each reload. The alerts are told; sessions are not involved.
 */
void
enforce_alerts(struct config *cf)
{
	struct alert_arg aa;
	int64_t now;
	size_t n;

	if (en_counters == NULL || cf->cf_policies == NULL)
		return;
	now = wallclock_ms();
	aa.aa_cf = cf;
	aa.aa_now = now;
	n = policy_fired_all(
	    cf->cf_policies, en_counters, now, enforce_alert_cb, &aa);
	if (n > 0)
		log_info("policies: %zu threshold%s already reached fired", n,
		    n == 1 ? "" : "s");
}

/* The runaway breakers' state, kept like the counters. */
struct breaker_state *
enforce_breakers(void)
{
	return (en_breakers);
}

/* The counters every session admits against. */
struct policy_counters *
enforce_counters(void)
{
	return (en_counters);
}

void
enforce_stop(void)
{
	if (en_gc != NULL)
		event_free(en_gc);
	en_gc = NULL;
	policy_counters_free(en_counters);
	en_counters = NULL;
	breaker_state_free(en_breakers);
	en_breakers = NULL;
}
