/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tollgate spend and tollgate calls commands: flags into the same
 * struct spend_query the admin API parses from its query string, run on a
 * read-only connection to the ledger file itself, so they work whether the
 * daemon is running (WAL readers never block its writer) or not, and print
 * the same numbers as GET /v1/spend and /v1/calls.
 *
 *   tollgate spend [--by DIMS] [--from D --to D | --month YYYY-MM]
 *       [--team X ...] [--format table|csv|json] [--ledger PATH | -c FILE]
 *       [--source auto|rollup|calls] [--fleet]
 *   tollgate calls [--intent ID] [--team X ...] [--status S] [--limit N]
 *       [--cursor C] [--format table|json] [--ledger PATH | -c FILE]
 *       [--fleet]
 *
 * With --fleet the same query is answered from the fleet ledger, the
 * PostgreSQL that the configuration's ledger.ship: names (src/ship/).
 *
 * Exit 0 on success, 1 when the ledger cannot be read, 2 for a bad flag.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/cli.h"
#include "tollgate/config.h"
#include "tollgate/ship.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "cli_int.h"

#define CLI_DEFAULT_CONFIG "/etc/tollgate/tollgate.yaml"

/* Long options that are query parameters: flag name -> parameter name. */
static const struct {
	const char *flag;
	const char *key;
} cli_params[] = {
    {"by", "group_by"},
    {"from", "from"},
    {"to", "to"},
    {"month", "month"},
    {"team", "team"},
    {"tenant", "tenant"},
    {"agent-class", "agent_class"},
    {"agent_class", "agent_class"},
    {"environment", "environment"},
    {"intent", "intent"},
    {"model", "model"},
    {"provider", "provider"},
    {"format", "format"},
    {"status", "status"},
    {"limit", "limit"},
    {"cursor", "cursor"},
};

#define OPT_LEDGER 1000
#define OPT_HELP 1001
#define OPT_SOURCE 1002
#define OPT_FLEET 1003

/* The usage of spend or calls: on stdout when asked for, else stderr. */
static void
cli_usage(enum spend_kind kind, FILE *f)
{
	if (kind == SPEND_KIND_SPEND)
		fprintf(f,
		    "usage: tollgate spend [--by DIMS] [--from D --to D | "
		    "--month YYYY-MM]\n"
		    "           [--team X] [--tenant X] [--agent-class X] "
		    "[--environment X]\n"
		    "           [--intent X] [--model X] [--provider X]\n"
		    "           [--format table|csv|json] [--ledger PATH | -c "
		    "FILE]\n"
		    "           [--source auto|rollup|calls] [--fleet]\n"
		    "  DIMS: comma list of team, tenant, agent_class, "
		    "environment, intent,\n"
		    "        model, provider, day, month, hour\n"
		    "  D: YYYY-MM-DD (whole UTC day) or RFC 3339 "
		    "(2026-11-28T14:00:00Z)\n");
	else
		fprintf(f,
		    "usage: tollgate calls [--intent ID] [--team X] [--tenant "
		    "X] [--agent-class X]\n"
		    "           [--environment X] [--model X] [--provider X] "
		    "[--status S]\n"
		    "           [--from D --to D | --month YYYY-MM] [--limit "
		    "N] [--cursor C]\n"
		    "           [--format table|json] [--ledger PATH | -c "
		    "FILE] [--fleet]\n");
	fprintf(f,
	    "  --fleet: the whole fleet's answer, from the PostgreSQL that "
	    "ledger.ship:\n"
	    "           names in the configuration (-c)\n");
}

/* The ledger's path: --ledger, else the configuration's ledger: path. */
char *
cli_ledger_path(const char *ledger, const char *config)
{
	struct config *cf;
	char *path;

	if (ledger != NULL)
		return (xstrdup(ledger));
	if ((cf = config_load_cli(config)) == NULL)
		return (NULL);
	path = xstrdup(cf->cf_ledger_path);
	config_unref(cf);
	return (path);
}

/*
 * q answered from the fleet ledger that config's ledger.ship: names,
 * into o. 0, or -1 after saying why on stderr.
 */
static int
cli_fleet(const char *cmd, const char *config, const struct spend_query *q,
    struct spend_out *o)
{
	struct config *cf;
	struct ship_link *sl = NULL;
	struct spend_result r;
	char *cause = NULL;
	int rc = -1;

	if ((cf = config_load_cli(config)) == NULL)
		return (-1);
	if (cf->cf_ship == NULL) {
		fprintf(stderr,
		    "tollgate %s: --fleet: %s has no ledger.ship: section, so "
		    "no fleet ledger to ask\n",
		    cmd, config);
		goto out;
	}
	sl = ship_link_new(cf->cf_ship);
	if (q->sq_kind == SPEND_KIND_CALLS) {
		if (ship_query_calls(sl, q, o, &cause) != 0)
			goto fail;
	} else {
		if (ship_query_run(sl, q, &r, &cause) != 0)
			goto fail;
		spend_write(q, &r, o);
		spend_result_free(&r);
	}
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "tollgate %s: %s\n", cmd, cause);
out:
	free(cause);
	ship_link_free(sl);
	config_unref(cf);
	return (rc);
}

/* Both commands: flags, then the engine, then stdout. */
static int
cli_run(enum spend_kind kind, int argc, char **argv)
{
	struct option longopts[nitems(cli_params) + 6];
	const char *cmd = kind == SPEND_KIND_SPEND ? "spend" : "calls";
	const char *ledger = NULL, *config = CLI_DEFAULT_CONFIG;
	struct spend_query q;
	struct spend_result r;
	struct spend_out o;
	char *cause = NULL, *path = NULL;
	sqlite3 *db = NULL;
	size_t i;
	int ch, rc = 1;

	for (i = 0; i < nitems(cli_params); i++) {
		longopts[i].name = cli_params[i].flag;
		longopts[i].has_arg = required_argument;
		longopts[i].flag = NULL;
		longopts[i].val = (int)i;
	}
	longopts[i++] =
	    (struct option){"ledger", required_argument, NULL, OPT_LEDGER};
	longopts[i++] = (struct option){"config", required_argument, NULL, 'c'};
	longopts[i++] = (struct option){"help", no_argument, NULL, OPT_HELP};
	longopts[i++] =
	    (struct option){"source", required_argument, NULL, OPT_SOURCE};
	longopts[i++] = (struct option){"fleet", no_argument, NULL, OPT_FLEET};
	longopts[i] = (struct option){NULL, 0, NULL, 0};

	spend_query_init(&q, kind);
	q.sq_format = SPEND_FORMAT_TABLE;
	spend_out_init(&o, SPEND_OUT_MAX);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		if (ch >= 0 && (size_t)ch < nitems(cli_params)) {
			if (spend_query_set(
				&q, cli_params[ch].key, optarg, &cause) != 0) {
				fprintf(stderr, "tollgate %s: --%s: %s\n", cmd,
				    cli_params[ch].flag, cause);
				goto usage;
			}
			continue;
		}
		switch (ch) {
		case OPT_LEDGER:
			ledger = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case OPT_FLEET:
			if (spend_query_set(&q, "fleet", "1", &cause) != 0) {
				fprintf(stderr, "tollgate %s: --fleet: %s\n",
				    cmd, cause);
				goto usage;
			}
			break;
		case OPT_SOURCE:
			/* A cross-check for operators: either table, same sums. */
			if (strcmp(optarg, "auto") == 0)
				q.sq_path = SPEND_PATH_AUTO;
			else if (strcmp(optarg, "rollup") == 0)
				q.sq_path = SPEND_PATH_ROLLUP;
			else if (strcmp(optarg, "calls") == 0)
				q.sq_path = SPEND_PATH_CALLS;
			else {
				fprintf(stderr,
				    "tollgate %s: --source: expected "
				    "auto, rollup or calls\n",
				    cmd);
				goto usage;
			}
			break;
		case 'h':
		case OPT_HELP:
			cli_usage(kind, stdout);
			rc = 0;
			goto out;
		default:
			goto usage; /* getopt_long named the flag */
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tollgate %s: unexpected argument '%s'\n", cmd,
		    argv[optind]);
		goto usage;
	}
	if (spend_query_finish(&q, "--", &cause) != 0) {
		fprintf(stderr, "tollgate %s: %s\n", cmd, cause);
		goto usage;
	}
	if (q.sq_fleet) {
		/* The fleet ledger is named by the configuration, not a file. */
		if (ledger != NULL) {
			fprintf(stderr,
			    "tollgate %s: --fleet: cannot be combined with "
			    "--ledger (the fleet ledger is ledger.ship: in the "
			    "configuration, -c)\n",
			    cmd);
			goto usage;
		}
		if (cli_fleet(cmd, config, &q, &o) != 0)
			goto out;
		goto print;
	}
	if ((path = cli_ledger_path(ledger, config)) == NULL)
		goto out;
	if ((db = spend_open(path, &cause)) == NULL) {
		fprintf(stderr, "tollgate %s: %s\n", cmd, cause);
		goto out;
	}
	if (kind == SPEND_KIND_CALLS) {
		if (spend_calls(db, &q, &o, &cause) != 0) {
			fprintf(stderr, "tollgate %s: %s\n", cmd, cause);
			goto out;
		}
	} else {
		if (spend_run(db, &q, &r, &cause) != 0) {
			fprintf(stderr, "tollgate %s: %s\n", cmd, cause);
			goto out;
		}
		spend_write(&q, &r, &o);
		spend_result_free(&r);
	}
print:
	if (o.so_full) {
		fprintf(stderr,
		    "tollgate %s: answer larger than %d bytes; "
		    "narrow the query\n",
		    cmd, SPEND_OUT_MAX);
		goto out;
	}
	if (o.so_len > 0 && fwrite(o.so_buf, 1, o.so_len, stdout) != o.so_len)
		goto out;
	rc = fflush(stdout) == 0 ? 0 : 1;
	goto out;
usage:
	cli_usage(kind, stderr);
	rc = 2;
out:
	sqlite3_close(db);
	free(path);
	free(cause);
	spend_out_free(&o);
	spend_query_free(&q);
	return (rc);
}

/* tollgate spend ...: argv[0] is "spend". */
int
cli_spend(int argc, char **argv)
{
	return (cli_run(SPEND_KIND_SPEND, argc, argv));
}

/* tollgate calls ...: argv[0] is "calls". */
int
cli_calls(int argc, char **argv)
{
	return (cli_run(SPEND_KIND_CALLS, argc, argv));
}
