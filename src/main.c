/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate: command line, signals and wiring.
 *
 *   tollgate [-dv] [-c file] [serve]   run the proxy
 *   tollgate check [-c file]            validate a config and exit
 *   tollgate -n [-c file]               the same, relayd-style
 *   tollgate spend|calls ...            read the ledger (cli.c)
 *   tollgate intent ID                  one intent's timeline (cli_intent.c)
 *   tollgate usage ...                  record a cost that is no call
 *   tollgate prices import FILE ...     a new price table (cli_prices.c)
 *   tollgate ship init [-c file]        the fleet ledger's schema (cli_ship.c)
 *   tollgate top [-c file] [--admin URL] the live terminal view (top/)
 *
 * src/ has one folder per room, in the order a call meets them (each
 * calls only folders below it; tools/depgraph.py checks that no two call
 * each other, docs/internals/map.md draws the map):
 *
 *   net/       connections, request heads and bodies, replies, routes
 *   call/      a call's life: session.c opens and closes it; admission
 *              (session_policy.c, enforce.c), refusals, stops, the relay
 *   meter/     usage read out of the response (SSE too), per provider
 *   upstream/  the transfer to the provider (libcurl on libevent)
 *   fleet/     many instances as one: leases on caps, kills, alerts (Redis)
 *   policy/    caps, limits, breakers, kills: the decisions, no I/O
 *   pricing/   the price table and the cost of a usage
 *   ledger/    the SQLite ledger: rows reserved, settled, recovered
 *   ship/      the fleet ledger on PostgreSQL: its schema
 *   alerts/    thresholds and webhooks, told by call/ and policy state
 *   metrics/   the Prometheus counters, told by everyone
 *   admin/     the admin API; spend/ its queries and formats
 *   ops/       the command line: spend, calls, prices import
 *   top/       tollgate top: the live view, over the admin API
 *   daemon/    the configuration in force, reload
 *   config/    the YAML configuration; yaml/ the walker it is read with
 *   base/      log, util, buf, tags, http heads: used by all, using none
 *
 * SIGHUP reloads the configuration (a bad file keeps the old one and logs
 * every error); SIGTERM and SIGINT stop accepting, let calls in flight
 * finish for up to drain_timeout, then exit 0.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/admin.h"
#include "tollgate/alerts.h"
#include "tollgate/cache.h"
#include "tollgate/cli.h"
#include "tollgate/top.h"
#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/extensions.h"
#include "tollgate/fleet.h"
#include "tollgate/fdlimit.h"
#include "tollgate/kills.h"
#include "tollgate/ledger.h"
#include "tollgate/listener.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/server.h"
#include "tollgate/session.h"
#include "tollgate/ship.h"
#include "tollgate/spend.h"
#include "tollgate/upstream.h"
#include "tollgate/util.h"

#define DEFAULT_CONFIG "/etc/tollgate/tollgate.yaml"

static struct event_base *base;
static struct listener *proxy;
static char *config_path;
static struct event *drain_timer;
static long long drain_deadline_us;
static struct event *kills_timer;

/* Print the usage: to stdout and exit 0 when asked for (-h, --help),
 * else to stderr and exit 2. */
static void __attribute__((noreturn)) usage(int status)
{
	fprintf(status == 0 ? stdout : stderr,
	    "usage: tollgate [-dnv] [-c file] [serve]\n"
	    "       tollgate check [-c file]\n"
	    "       tollgate spend [options]   (tollgate spend --help)\n"
	    "       tollgate calls [options]   (tollgate calls --help)\n"
	    "       tollgate intent ID [options] (tollgate intent --help)\n"
	    "       tollgate usage [options]   (tollgate usage --help)\n"
	    "       tollgate prices import FILE [-o OUT] [-c file]\n"
	    "                                  (tollgate prices --help)\n"
	    "       tollgate ship init [-c file]\n"
	    "       tollgate top [-c file] [--admin URL] [--interval S]\n"
	    "  -c, --config file  configuration (default " DEFAULT_CONFIG ")\n"
	    "  -d                 stay in the foreground and log to stderr\n"
	    "  -n                 check the configuration and exit\n"
	    "  -v                 verbose (debug) logging\n"
	    "  -V, --version      print the version and exit\n"
	    "  -h, --help         print this help and exit\n");
	exit(status);
}

/*
 * Load the file for serve (flags 0: every secret must be set) or check
 * (CONFIG_SECRETS_OPTIONAL), printing its errors, then its warnings, to
 * stderr.
 */
static struct config *
load_or_report(const char *path, int flags)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	size_t i;

	cf = config_load_opts(path, flags, &errs);
	for (i = 0; cf == NULL && i < errs.ce_n; i++)
		fprintf(stderr, "%s\n", errs.ce_msgs[i]);
	if (cf == NULL && errs.ce_n == 0)
		fprintf(stderr, "%s: cannot load configuration\n", path);
	for (i = 0; i < errs.ce_nwarn; i++)
		fprintf(stderr, "%s\n", errs.ce_warns[i]);
	cfgerrs_free(&errs);
	return (cf);
}

static int
cmd_check(const char *path)
{
	struct config *cf;
	char *cause = NULL, *fleet, *ship, *why = NULL;
	int64_t keep;

	if ((cf = load_or_report(path, CONFIG_SECRETS_OPTIONAL)) == NULL)
		return (1);
	/* Only the hard limit matters: the soft one is raised at start. */
	if (fdlimit_check(cf, &cause) == -1) {
		fprintf(stderr, "%s: warning: here, %s\n", path, cause);
		free(cause);
	}
	if (cf->cf_fleet != NULL) {
		fleet = config_fleet_describe(cf->cf_fleet);
		printf("%s\n", fleet);
		free(fleet);
	}
	if (cf->cf_ship != NULL) {
		ship = config_ship_describe(cf->cf_ship);
		printf("%s\n", ship);
		free(ship);
		printf("ledger.ship: rows shipped as instance %s, in batches "
		       "of %d, polled every %ldms when idle\n",
		    cf->cf_ship->sc_instance, cf->cf_ship->sc_batch,
		    cf->cf_ship->sc_interval_ms);
	}
	if ((keep = config_keep_local_ms(cf, &why)) > 0)
		printf("ledger.keep_local: shipped rows older than %lld "
		       "seconds are pruned\n",
		    (long long)(keep / 1000));
	if (why != NULL) {
		printf("%s\n", why);
		free(why);
	}
	config_unref(cf);
	printf("configuration OK\n");
	return (0);
}

static void
reload(void)
{
	struct cfgerrs errs = {0};

	(void)server_reload(config_path, &errs);
	cfgerrs_free(&errs);
}

static void
drain_check_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct timeval tv = {0, 100 * 1000};

	(void)fd;
	(void)ev;
	(void)arg;
	if (listener_nconns(proxy) == 0) {
		log_info("drained; exiting");
		event_base_loopexit(base, NULL);
		return;
	}
	if (monotime_us() >= drain_deadline_us) {
		log_warnx("drain_timeout reached: closing %zu connections "
			  "(%zu calls in flight)",
		    listener_nconns(proxy), session_count());
		listener_close_all(proxy);
		event_base_loopexit(base, NULL);
		return;
	}
	evtimer_add(drain_timer, &tv);
}

/* Once a second: kills and extensions that ran out stop being listed. */
static void
kills_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	kills_expire(wallclock_ms());
	extensions_expire(wallclock_ms());
}

/*
 * The kills and budget extensions live at the last stop, from the
 * ledger's tables (which ledger_open has made if they were missing).
 */
static int
kills_start(const char *path)
{
	struct timeval tv = {1, 0};
	sqlite3 *ro;
	char *cause = NULL;

	if ((ro = spend_open(path, &cause)) == NULL ||
	    kills_load(ro, wallclock_ms(), &cause) == -1 ||
	    extensions_load(ro, wallclock_ms(), &cause) == -1) {
		log_errorx("ledger %s: %s", path, cause);
		free(cause);
		sqlite3_close(ro);
		return (-1);
	}
	sqlite3_close(ro);
	kills_timer = event_new(base, -1, EV_PERSIST, kills_timer_cb, NULL);
	if (kills_timer == NULL || evtimer_add(kills_timer, &tv) == -1)
		fatalx("cannot add the kills timer");
	return (0);
}

static void
signal_cb(evutil_socket_t sig, short ev, void *arg)
{
	(void)ev;
	(void)arg;
	switch (sig) {
	case SIGHUP:
		reload();
		break;
	case SIGTERM:
	case SIGINT:
		if (drain_timer != NULL)
			return; /* already draining */
		log_info("received %s: draining %zu calls in flight",
		    sig == SIGTERM ? "SIGTERM" : "SIGINT", session_count());
		drain_deadline_us = monotime_us() +
		    config_current()->cf_drain_timeout_ms * 1000LL;
		listener_drain(proxy);
		admin_drain(); /* admin queries are cut at exit, not waited for */
		drain_timer = evtimer_new(base, drain_check_cb, NULL);
		drain_check_cb(-1, 0, NULL);
		break;
	}
}

/*
 * The ledger's health changed (writes failing, its file lost, writing
 * again): an alert of kind "ledger" says so. The ledger only reports; it
 * knows nothing of alerts.
 */
static void
ledger_health_cb(const struct ledger_event *ev, void *arg)
{
	struct alert a;

	(void)arg;
	memset(&a, 0, sizeof(a));
	a.al_kind = "ledger";
	a.al_window_start = -1;
	a.al_reset_at = -1;
	a.al_threshold_nusd = -1;
	a.al_cap_nusd = -1;
	a.al_message = ev->le_message;
	a.al_at_ms = wallclock_ms();
	alerts_fire(&a);
}

/*
 * Alerts the last run fired but did not deliver are sent again; the
 * ledger is read on a read-only connection of its own, before any call.
 */
static void
resume_alerts(const struct config *cf)
{
	sqlite3 *ro;
	char *cause = NULL;

	if ((ro = spend_open(cf->cf_ledger_path, &cause)) == NULL ||
	    alerts_resume(ro, wallclock_ms(), &cause) != 0)
		log_warnx("alerts: %s", cause != NULL ? cause : "?");
	free(cause);
	if (ro != NULL)
		sqlite3_close(ro);
}

static int
cmd_serve(int foreground)
{
	struct event *sigs[4];
	int signos[] = {SIGHUP, SIGTERM, SIGINT};
	struct config *cf;
	char *cause = NULL;
	size_t i;

	if ((cf = load_or_report(config_path, 0)) == NULL)
		return (1);
	if (!foreground && daemon(0, 0) == -1)
		fatal("daemon");
	signal(SIGPIPE, SIG_IGN);

	/* Before any thread runs: the calendar windows' zone. */
	if (cf->cf_timezone != NULL) {
		if (setenv("TZ", cf->cf_timezone, 1) == -1)
			fatal("setenv");
		tzset();
		policy_set_local_zone(1);
		log_info(
		    "budget windows follow the time zone %s", cf->cf_timezone);
	}
	if ((base = event_base_new()) == NULL)
		fatalx("event_base_new");
	if (ledger_open(base, cf->cf_ledger_path, cf->cf_durability,
		cf->cf_ledger_queue_max, &cause) == -1) {
		log_errorx("ledger %s: %s", cf->cf_ledger_path, cause);
		free(cause);
		config_unref(cf);
		event_base_free(base);
		return (1);
	}
	wallclock_check();
	/* In a fleet the cache lives in its Redis (src/fleet/cache.c). */
	if (cf->cf_cache != NULL && cf->cf_fleet == NULL &&
	    cache_open(cf->cf_cache->cc_path, &cause) == -1) {
		log_errorx("cache %s: %s", cf->cf_cache->cc_path, cause);
		free(cause);
		ledger_close();
		config_unref(cf);
		event_base_free(base);
		return (1);
	}
	if (enforce_start(base, cf, &cause) == -1) {
		log_errorx("policies: cannot rebuild budgets from %s: %s",
		    cf->cf_ledger_path, cause);
		free(cause);
		ledger_close();
		cache_close();
		config_unref(cf);
		event_base_free(base);
		return (1);
	}
	if (kills_start(cf->cf_ledger_path) == -1) {
		ledger_close();
		cache_close();
		config_unref(cf);
		event_base_free(base);
		return (1);
	}
	if (upstream_init(base, cf->cf_max_connections) == -1)
		fatalx("cannot initialise libcurl");
	listener_set_fd_cap(fdlimit_apply(cf));
	alerts_setup(base);
	alerts_configure(cf);
	resume_alerts(cf);
	fleet_start(base, cf, enforce_counters());
	if (shipper_start(cf, &cause) == -1)
		fatalx("ship: %s", cause);
	enforce_alerts(cf);
	ledger_set_event_cb(ledger_health_cb, NULL);
	session_setup(base);
	session_stop_setup(base);
	/*
	 * Before the first listener says where it listens: a SIGHUP or
	 * SIGTERM sent on that line (a deploy tool that starts tollgate and
	 * reloads it at once) must be a reload or a drain, not the default
	 * action that ends the process. It is handled when the loop runs.
	 */
	for (i = 0; i < nitems(signos); i++) {
		sigs[i] = evsignal_new(base, signos[i], signal_cb, NULL);
		evsignal_add(sigs[i], NULL);
	}
	server_set_config(cf);
	if ((proxy = listener_new(base, cf->cf_listen_host, cf->cf_listen_port,
		 &session_listener_ops, "proxy")) == NULL ||
	    admin_start(base, cf, config_path) == -1) {
		for (i = 0; i < nitems(signos); i++)
			event_free(sigs[i]);
		listener_free(proxy);
		fleet_stop(base);
		session_shutdown();
		session_stop_shutdown();
		enforce_stop();
		alerts_shutdown();
		shipper_stop();
		ledger_close();
		cache_close();
		kills_free_all();
		extensions_free_all();
		event_free(kills_timer);
		upstream_shutdown();
		server_set_config(NULL);
		event_base_free(base);
		return (1);
	}
	server_started(listener_port(proxy), admin_port());
	log_info("tollgate %s started (configuration %s, generation %llu, "
		 "prices %s, ledger %s)",
	    TOLLGATE_VERSION, config_path, server_generation(),
	    cf->cf_prices != NULL ? pricing_version(cf->cf_prices) : "none",
	    cf->cf_ledger_path);
	if (cf->cf_nupstreams == 0)
		log_warnx("no upstreams in %s: every call is answered 404",
		    config_path);
	if (cf->cf_prices == NULL)
		log_warnx("no price table (prices.yaml): every call is %s",
		    cf->cf_unknown_model == UNKNOWN_MODEL_REFUSE
			? "refused"
			: "recorded unpriced");

	event_base_dispatch(base);

	listener_free(proxy);
	admin_stop();
	session_abort_all();
	fleet_stop(base);
	session_shutdown();
	session_stop_shutdown();
	enforce_stop();
	alerts_shutdown();
	shipper_stop();
	ledger_close();
	cache_close();
	kills_free_all();
	extensions_free_all();
	event_free(kills_timer);
	upstream_shutdown();
	for (i = 0; i < nitems(signos); i++)
		event_free(sigs[i]);
	if (drain_timer != NULL)
		event_free(drain_timer);
	server_set_config(NULL);
	metrics_reset();
	event_base_free(base);
	log_info("exited");
	return (0);
}

/* Options, which may come before and after the sub-command. */
struct opts {
	const char *o_path;
	int o_foreground;
	int o_verbose;
	int o_check;
};

static void
parse_opts(int argc, char *argv[], struct opts *o)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	int ch;

	while (
	    (ch = getopt_long(argc, argv, "c:dnvVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->o_path = optarg;
			break;
		case 'd':
			o->o_foreground = 1;
			break;
		case 'n':
			o->o_check = 1;
			break;
		case 'v':
			o->o_verbose++;
			break;
		case 'V':
			printf("tollgate %s\n", TOLLGATE_VERSION);
			exit(0);
		case 'h':
			usage(0);
		default:
			usage(2);
		}
	}
}

int
main(int argc, char *argv[])
{
	struct opts o = {DEFAULT_CONFIG, 0, 0, 0};
	char resolved[PATH_MAX];
	int rc;

	/* Read-only ledger queries: their own flags, no daemon (cli.c). */
	if (argc > 1 && strcmp(argv[1], "spend") == 0)
		return (cli_spend(argc - 1, argv + 1));
	if (argc > 1 && strcmp(argv[1], "calls") == 0)
		return (cli_calls(argc - 1, argv + 1));
	if (argc > 1 && strcmp(argv[1], "intent") == 0)
		return (cli_intent(argc - 1, argv + 1));
	/* A cost that is not a call, through the daemon (cli_usage.c). */
	if (argc > 1 && strcmp(argv[1], "usage") == 0)
		return (cli_usage_post(argc - 1, argv + 1));
	/* A new price table from a community price list (cli_prices.c). */
	if (argc > 1 && strcmp(argv[1], "prices") == 0)
		return (cli_prices(argc - 1, argv + 1));
	/* The fleet ledger's schema in PostgreSQL (cli_ship.c). */
	if (argc > 1 && strcmp(argv[1], "ship") == 0)
		return (cli_ship(argc - 1, argv + 1));
	/* The live view of a running tollgate, over its admin API (top/). */
	if (argc > 1 && strcmp(argv[1], "top") == 0)
		return (top_main(argc - 1, argv + 1));
	parse_opts(argc, argv, &o);
	argc -= optind;
	argv += optind;
	if (argc > 0) {
		if (strcmp(argv[0], "check") == 0)
			o.o_check = 1;
		else if (strcmp(argv[0], "serve") != 0)
			usage(2);
		optind = 1;
		parse_opts(argc, argv, &o);
		if (optind < argc)
			usage(2);
	}

	log_init(o.o_check || o.o_foreground, o.o_verbose);
	if (o.o_check)
		return (cmd_check(o.o_path));

	/* Resolve now: daemon() changes the working directory. */
	if (realpath(o.o_path, resolved) == NULL) {
		fprintf(stderr, "%s: %s\n", o.o_path, strerror(errno));
		return (1);
	}
	config_path = xstrdup(resolved);
	rc = cmd_serve(o.o_foreground);
	free(config_path);
	return (rc);
}
