/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration in force. A reload swaps the pointer and bumps the
 * generation (memcached's proxy_config.c); sessions keep a reference to the
 * config they started with, so the old one lives until its last call ends.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/alerts.h"
#include "tollgate/config.h"
#include "tollgate/enforce.h"
#include "tollgate/fdlimit.h"
#include "tollgate/log.h"
#include "tollgate/session.h"

static struct config *server_cf;
static unsigned long long server_gen;

/* The current configuration (borrowed; take a reference to keep it). */
struct config *
server_config(void)
{
	return (server_cf);
}

/* Make cf current, taking over the caller's reference; NULL releases. */
void
server_set_config(struct config *cf)
{
	struct config *old = server_cf;

	server_cf = cf;
	if (cf != NULL)
		cf->cf_generation = ++server_gen;
	if (old != NULL)
		config_unref(old);
}

/* The generation of the current configuration. */
unsigned long long
server_generation(void)
{
	return (server_gen);
}

/*
 * Reload the configuration from path. On success the new config is in
 * force for new calls and 0 is returned; otherwise the running one is kept,
 * every error is appended to errs and logged, and -1 is returned. Parts
 * that are only read at start (listen, admin.listen, ledger) keep their
 * running values; a warning says so when they changed.
 */
int
server_reload(const char *path, struct cfgerrs *errs)
{
	struct config *cf, *old = server_cf;
	char *cause = NULL;
	size_t i, first = errs->ce_n;

	log_info("reloading %s", path);
	if ((cf = config_load(path, errs)) == NULL) {
		for (i = first; i < errs->ce_n; i++)
			log_warnx("reload: %s", errs->ce_msgs[i]);
		log_warnx("reload failed; keeping configuration generation "
			  "%llu",
		    server_gen);
		return (-1);
	}
	if (old != NULL) {
		if ((cf->cf_timezone == NULL) != (old->cf_timezone == NULL) ||
		    (cf->cf_timezone != NULL &&
			strcmp(cf->cf_timezone, old->cf_timezone) != 0))
			log_warnx("reload: a new timezone needs a restart; "
				  "budget windows keep %s",
			    old->cf_timezone != NULL ? old->cf_timezone
						     : "UTC");
		if (strcmp(cf->cf_listen_host, old->cf_listen_host) != 0 ||
		    cf->cf_listen_port != old->cf_listen_port)
			log_warnx("reload: a new listen address needs a "
				  "restart; still listening on %s:%d",
			    old->cf_listen_host, old->cf_listen_port);
		if (strcmp(cf->cf_admin_host, old->cf_admin_host) != 0 ||
		    cf->cf_admin_port != old->cf_admin_port ||
		    (cf->cf_admin_token == NULL) !=
			(old->cf_admin_token == NULL) ||
		    (cf->cf_admin_token != NULL &&
			strcmp(cf->cf_admin_token, old->cf_admin_token) != 0))
			log_warnx("reload: admin changes need a restart; the "
				  "admin API keeps %s:%d and its token",
			    old->cf_admin_host, old->cf_admin_port);
		if (strcmp(cf->cf_ledger_path, old->cf_ledger_path) != 0 ||
		    cf->cf_durability != old->cf_durability ||
		    cf->cf_ledger_queue_max != old->cf_ledger_queue_max)
			log_warnx("reload: ledger changes need a restart; "
				  "still writing %s",
			    old->cf_ledger_path);
	}
	server_set_config(cf);
	/* A larger max_connections may need a higher open files limit. */
	fdlimit_apply(cf);
	alerts_configure(cf);
	log_info("configuration reloaded: generation %llu", server_gen);
	session_apply_kills(cf);
	if (enforce_reload(cf, &cause) == -1) {
		log_warnx(
		    "reload: budgets of new policies start empty: %s", cause);
		free(cause);
	}
	return (0);
}
