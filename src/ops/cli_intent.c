/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate intent ID: one intent's timeline (src/spend/intent.c) read
 * from the ledger file itself, like tollgate calls, so it answers whether
 * the daemon runs or not, with the numbers of GET /v1/intents/{id}.
 *
 *   tollgate intent ID [--limit N] [--format table|json]
 *       [--ledger PATH | -c FILE]
 *
 * Exit 0 on success, 1 when the ledger cannot be read, 2 for a bad flag.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/cli.h"
#include "tollgate/spend.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

#include "cli_int.h"

#define CLI_DEFAULT_CONFIG "/etc/tollgate/tollgate.yaml"
#define OPT_LEDGER 1000
#define OPT_LIMIT 1001
#define OPT_FORMAT 1002

static void
intent_usage(FILE *f)
{
	fprintf(f,
	    "usage: tollgate intent ID [--limit N] [--format "
	    "table|json]\n"
	    "           [--ledger PATH | -c FILE]\n");
}

/* tollgate intent ...: argv[0] is "intent". */
int
cli_intent(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"ledger", required_argument, NULL, OPT_LEDGER},
	    {"config", required_argument, NULL, 'c'},
	    {"limit", required_argument, NULL, OPT_LIMIT},
	    {"format", required_argument, NULL, OPT_FORMAT},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *ledger = NULL, *config = CLI_DEFAULT_CONFIG, *id;
	struct spend_out o;
	char *cause = NULL, *path = NULL, *end;
	sqlite3 *db = NULL;
	long limit = SPEND_INTENT_LIMIT_DEFAULT;
	int ch, table = 1, rc = 1;

	spend_out_init(&o, SPEND_OUT_MAX);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case OPT_LEDGER:
			ledger = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case OPT_LIMIT:
			limit = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || limit < 1 ||
			    limit > SPEND_INTENT_LIMIT_MAX) {
				fprintf(stderr,
				    "tollgate intent: --limit: a whole number "
				    "from 1 to %d\n",
				    SPEND_INTENT_LIMIT_MAX);
				goto usage;
			}
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "table") == 0)
				table = 1;
			else if (strcmp(optarg, "json") == 0)
				table = 0;
			else {
				fprintf(stderr,
				    "tollgate intent: --format: "
				    "expected table or json\n");
				goto usage;
			}
			break;
		case 'h':
			intent_usage(stdout);
			rc = 0;
			goto out;
		default:
			goto usage;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "tollgate intent: expected one intent\n");
		goto usage;
	}
	id = argv[optind];
	if (!tag_value_ok(id, strlen(id))) {
		fprintf(stderr,
		    "tollgate intent: the intent must be 1 to %d printable "
		    "characters without spaces, '*' or '?'\n",
		    TAG_VALUE_MAX);
		goto usage;
	}
	if ((path = cli_ledger_path(ledger, config)) == NULL)
		goto out;
	if ((db = spend_open(path, &cause)) == NULL) {
		fprintf(stderr, "tollgate intent: %s\n", cause);
		goto out;
	}
	if (spend_intent(db, NULL, id, (int)limit, table, &o, &cause) != 0) {
		fprintf(stderr, "tollgate intent: %s\n", cause);
		goto out;
	}
	if (o.so_full) {
		fprintf(stderr,
		    "tollgate intent: answer larger than %d bytes; lower "
		    "--limit\n",
		    SPEND_OUT_MAX);
		goto out;
	}
	if (o.so_len > 0 && fwrite(o.so_buf, 1, o.so_len, stdout) != o.so_len)
		goto out;
	rc = fflush(stdout) == 0 ? 0 : 1;
	goto out;
usage:
	intent_usage(stderr);
	rc = 2;
out:
	sqlite3_close(db);
	free(path);
	free(cause);
	spend_out_free(&o);
	return (rc);
}
