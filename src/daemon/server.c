/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Putting a configuration in force. A reload swaps the current one
 * (config_set_current, src/config/current.c) and bumps the generation
 * (memcached's proxy_config.c); sessions keep a reference to the config
 * they started with, so the old one lives until its last call ends.
 * A reload refuses a file that looks half-written, says loudly what it
 * removes, and compares the parts read only at start with the values the
 * daemon really started with (the ports its listeners got included).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/alerts.h"
#include "tollgate/cache.h"
#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/fdlimit.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/server.h"
#include "tollgate/session.h"
#include "tollgate/ship.h"

static unsigned long long server_gen;

/*
 * What was read at start only, and is in force until a restart whatever
 * later reloads say: the configuration the daemon started with, and the
 * ports its listeners were given (the ones picked when 0 was asked).
 */
static struct config *server_boot;
static int server_proxy_port = -1;
static int server_admin_port = -1;

/*
 * Make cf current (config_current), with the next generation, taking over
 * the caller's reference; NULL releases it and what server_started kept.
 */
void
server_set_config(struct config *cf)
{
	if (cf != NULL)
		cf->cf_generation = ++server_gen;
	config_set_current(cf);
	if (cf == NULL) {
		config_unref(server_boot);
		server_boot = NULL;
		server_proxy_port = server_admin_port = -1;
	}
}

/*
 * The listeners are up: keep the current configuration as the one whose
 * start-only parts are in force, and the ports the listeners got, so a
 * reload's messages name what is really in use.
 */
void
server_started(int proxy_port, int admin_port)
{
	config_unref(server_boot);
	server_boot =
	    config_current() != NULL ? config_ref(config_current()) : NULL;
	server_proxy_port = proxy_port;
	server_admin_port = admin_port;
}

/* The generation of the current configuration. */
unsigned long long
server_generation(void)
{
	return (server_gen);
}

/* HOST:PORT, with an IPv6 host in brackets. */
static const char *
hostport(char *buf, size_t len, const char *host, int port)
{
	snprintf(buf, len, strchr(host, ':') != NULL ? "[%s]:%d" : "%s:%d",
	    host, port);
	return (buf);
}

/* Say it in the log and in errs, where POST /v1/reload shows it. */
static void reload_warn(struct cfgerrs *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
reload_warn(struct cfgerrs *errs, const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warnx("reload: %s", msg);
	cfgerrs_add(errs, "%s", msg);
}

/*
 * Parts read at start only (listen, admin, ledger, timezone, fleet) keep the
 * values the daemon started with: compare the new file with those, not
 * with the last reload, and name the address actually listened on.
 */
static void
reload_start_only(const struct config *cf, struct cfgerrs *errs)
{
	const struct config *b = server_boot;
	const char *what;
	char want[96], have[96], asked[96];

	if (b == NULL)
		return;
	if ((cf->cf_timezone == NULL) != (b->cf_timezone == NULL) ||
	    (cf->cf_timezone != NULL &&
		strcmp(cf->cf_timezone, b->cf_timezone) != 0))
		reload_warn(errs,
		    "a new timezone needs a restart; budget windows keep %s",
		    b->cf_timezone != NULL ? b->cf_timezone : "UTC");
	/* Unchanged, or naming the port that 0 picked at start, is fine. */
	if ((strcmp(cf->cf_listen_host, b->cf_listen_host) != 0 ||
		(cf->cf_listen_port != b->cf_listen_port &&
		    cf->cf_listen_port != server_proxy_port)) &&
	    server_proxy_port >= 0) {
		hostport(
		    want, sizeof(want), cf->cf_listen_host, cf->cf_listen_port);
		hostport(
		    have, sizeof(have), b->cf_listen_host, server_proxy_port);
		hostport(
		    asked, sizeof(asked), b->cf_listen_host, b->cf_listen_port);
		reload_warn(errs,
		    "listen %s needs a restart; still listening on %s%s%s%s",
		    want, have,
		    b->cf_listen_port != server_proxy_port ? " (asked for "
							   : "",
		    b->cf_listen_port != server_proxy_port ? asked : "",
		    b->cf_listen_port != server_proxy_port ? " at start)" : "");
	}
	if ((strcmp(cf->cf_admin_host, b->cf_admin_host) != 0 ||
		(cf->cf_admin_port != b->cf_admin_port &&
		    cf->cf_admin_port != server_admin_port) ||
		(cf->cf_admin_token == NULL) != (b->cf_admin_token == NULL) ||
		(cf->cf_admin_token != NULL &&
		    strcmp(cf->cf_admin_token, b->cf_admin_token) != 0)) &&
	    server_admin_port >= 0) {
		hostport(
		    want, sizeof(want), cf->cf_admin_host, cf->cf_admin_port);
		hostport(
		    have, sizeof(have), b->cf_admin_host, server_admin_port);
		reload_warn(errs,
		    "admin changes need a restart; the admin API keeps %s and "
		    "its token (the file asks for %s)",
		    have, want);
	}
	if (strcmp(cf->cf_ledger_path, b->cf_ledger_path) != 0 ||
	    cf->cf_durability != b->cf_durability ||
	    cf->cf_ledger_queue_max != b->cf_ledger_queue_max)
		reload_warn(errs,
		    "ledger changes need a restart; still writing %s",
		    b->cf_ledger_path);
	/* The store is opened at start: a new file is not opened mid-run
	 * (a cache: added by a reload caches nothing until a restart). */
	if (cf->cf_cache != NULL && b->cf_fleet == NULL &&
	    (cache_path() == NULL ||
		strcmp(cf->cf_cache->cc_path, cache_path()) != 0))
		reload_warn(errs, "cache.path needs a restart; %s%s",
		    cache_path() != NULL ? "the cache stays in "
					 : "no answer is cached until then",
		    cache_path() != NULL ? cache_path() : "");
	if ((what = config_ship_changed(b->cf_ship, cf->cf_ship)) != NULL)
		reload_warn(errs,
		    "ledger.%s changed: ledger.ship changes need a restart; "
		    "the running settings stay",
		    what);
	if ((what = config_fleet_changed(b->cf_fleet, cf->cf_fleet)) == NULL)
		return;
	if (b->cf_fleet == NULL)
		reload_warn(errs,
		    "a fleet: section needs a restart; this "
		    "instance stays on its own until then");
	else if (cf->cf_fleet == NULL)
		reload_warn(errs,
		    "removing fleet: needs a restart; this instance stays "
		    "in the fleet until then");
	else
		reload_warn(errs,
		    "fleet.%s changed: fleet changes need a restart; the "
		    "fleet keeps the settings it started with",
		    what);
}

/*
 * A reload that removes upstreams or policies changes what is refused and
 * what is capped at once: say which, loudly, since a file cut short looks
 * just like that.
 */
static void
reload_removals(
    const struct config *old, const struct config *cf, struct cfgerrs *errs)
{
	const struct policyset *op = old->cf_policies, *np = cf->cf_policies;
	size_t i, j;

	for (i = 0; i < old->cf_nupstreams; i++)
		if (config_find_upstream(cf, old->cf_upstreams[i].uc_name,
			strlen(old->cf_upstreams[i].uc_name)) == NULL)
			reload_warn(errs,
			    "upstream '%s' is removed: its routes now answer "
			    "404",
			    old->cf_upstreams[i].uc_name);
	if (op == NULL || op->ps_n == 0)
		return;
	if (np == NULL || np->ps_n == 0) {
		reload_warn(errs,
		    "the new configuration has no policies: all %zu policies "
		    "are removed and every cap, limit and kill they set is "
		    "lifted",
		    op->ps_n);
		return;
	}
	for (i = 0; i < op->ps_n; i++) {
		for (j = 0; j < np->ps_n; j++)
			if (strcmp(op->ps_pol[i].po_name,
				np->ps_pol[j].po_name) == 0)
				break;
		if (j == np->ps_n)
			reload_warn(errs,
			    "policy '%s' is removed: its caps and limits no "
			    "longer apply",
			    op->ps_pol[i].po_name);
	}
}

/*
 * Reload the configuration from path. On success the new config is in
 * force for new calls, 0 is returned and errs holds the warnings (each
 * also logged); otherwise the running one is kept, every error is
 * appended to errs and logged, and -1 is returned. A valid file is still
 * refused when config_check_reload says it looks half-written. Parts that
 * are only read at start (listen, admin.listen, ledger) keep their
 * running values; a warning says so when the file changes them.
 */
int
server_reload(const char *path, struct cfgerrs *errs)
{
	struct config *cf, *old = config_current();
	char *cause = NULL;
	size_t i, first = errs->ce_n;
	int rc;

	log_info("reloading %s", path);
	if ((cf = config_load(path, errs)) == NULL ||
	    (old != NULL && config_check_reload(old, cf, errs) == -1)) {
		config_unref(cf);
		for (i = first; i < errs->ce_n; i++)
			log_warnx("reload: %s", errs->ce_msgs[i]);
		log_warnx("reload failed; keeping configuration generation "
			  "%llu",
		    server_gen);
		return (-1);
	}
	reload_start_only(cf, errs);
	if (old != NULL)
		reload_removals(old, cf, errs);
	server_set_config(cf);
	/* A larger max_connections may need a higher open files limit. */
	listener_set_fd_cap(fdlimit_apply(cf));
	alerts_configure(cf);
	/* A new policy's window may raise how long rows are kept. */
	shipper_configure(cf);
	log_info("configuration reloaded: generation %llu", server_gen);
	session_apply_kills(cf);
	rc = enforce_reload(cf, &cause);
	/* Calls running now count under the new policies too. */
	session_extend_reservations(cf);
	/*
	 * Thresholds the spend already stands at (a threshold lowered, or a
	 * policy added over a scope that has spent) fire now, each once.
	 */
	enforce_alerts(cf);
	if (rc == -1) {
		log_warnx(
		    "reload: budgets of new policies start empty: %s", cause);
		free(cause);
	}
	return (0);
}
