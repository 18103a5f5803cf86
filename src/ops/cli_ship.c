/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate ship init: create or migrate the fleet ledger's schema in the
 * PostgreSQL that ledger.ship: names (src/ship/schema.c), and say what
 * was done. Needs the password the daemon would use, so its variable must
 * be set here too.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/cli.h"
#include "tollgate/config.h"
#include "tollgate/ship.h"
#include "tollgate/util.h"

#define SHIP_DEFAULT_CONFIG "/etc/tollgate/tollgate.yaml"

static void
ship_usage(FILE *f)
{
	fprintf(f,
	    "usage: tollgate ship init [-c file]\n"
	    "  Create the fleet ledger's tables in the PostgreSQL that\n"
	    "  ledger.ship.postgres names, or bring them to this tollgate's\n"
	    "  schema version (%d); run again, it changes nothing.\n"
	    "  -c, --config file  configuration (default " SHIP_DEFAULT_CONFIG
	    ")\n",
	    SHIP_SCHEMA_VERSION);
}

/* tollgate ship ...: argv[0] is "ship". */
int
cli_ship(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct cfgerrs errs = {0};
	struct config *cf = NULL;
	const char *config = SHIP_DEFAULT_CONFIG;
	char *report = NULL, *cause = NULL;
	size_t i;
	int ch, rc = 1;

	if (argc < 2 || strcmp(argv[1], "init") != 0) {
		if (argc >= 2 &&
		    (strcmp(argv[1], "--help") == 0 ||
			strcmp(argv[1], "-h") == 0)) {
			ship_usage(stdout);
			return (0);
		}
		ship_usage(stderr);
		return (2);
	}
	argc--;
	argv++;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config = optarg;
			break;
		case 'h':
			ship_usage(stdout);
			return (0);
		default:
			ship_usage(stderr);
			return (2);
		}
	}
	if (optind != argc) {
		ship_usage(stderr);
		return (2);
	}
	/* The database's password is needed; the providers' keys are not. */
	cf = config_load_opts(config, CONFIG_SECRETS_OPTIONAL, &errs);
	for (i = 0; cf == NULL && i < errs.ce_n; i++)
		fprintf(stderr, "%s\n", errs.ce_msgs[i]);
	if (cf == NULL) {
		if (errs.ce_n == 0)
			fprintf(
			    stderr, "%s: cannot load configuration\n", config);
		goto done;
	}
	if (cf->cf_ship == NULL) {
		fprintf(stderr,
		    "%s: no ledger.ship: section; nothing to initialize\n",
		    config);
		goto done;
	}
	if (cf->cf_ship->sc_password_env != NULL &&
	    cf->cf_ship->sc_password == NULL) {
		fprintf(stderr,
		    "%s: ledger.ship.password_env: the environment variable "
		    "%s is not set\n",
		    config, cf->cf_ship->sc_password_env);
		goto done;
	}
	if (ship_schema_init(cf->cf_ship, &report, &cause) == -1) {
		fprintf(stderr, "tollgate ship init: %s\n", cause);
		goto done;
	}
	printf("%s\n", report);
	rc = 0;
done:
	free(report);
	free(cause);
	cfgerrs_free(&errs);
	if (cf != NULL)
		config_unref(cf);
	return (rc);
}
