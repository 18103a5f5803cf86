/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate usage: record a cost that is not an LLM call from a shell
 * script, through the running daemon's POST /v1/usage (so it counts
 * against the budgets at once). The answer's JSON goes to stdout.
 *
 *   tollgate usage --id ID --source S (--cost-usd X | --units N --unit U)
 *       [--intent X] [--team X] [--tenant X] [--agent-class X]
 *       [--environment X] [-c FILE | --admin URL]
 *
 * Exit 0 when the cost is recorded (or was, under this id), 1 when it is
 * not (the reason on stderr; retry with the same id), 2 for a bad flag.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "tollgate/adminc.h"
#include "tollgate/cli.h"
#include "tollgate/util.h"

#define CLI_DEFAULT_CONFIG "/etc/tollgate/tollgate.yaml"

/* The flags that are the body's strings, and their JSON names. */
static const struct {
	const char *u_flag;
	const char *u_field;
} usage_strs[] = {
    {"id", "id"},
    {"source", "source"},
    {"unit", "unit"},
    {"cost-usd", "cost_usd"},
    {"intent", "intent"},
    {"team", "team"},
    {"tenant", "tenant"},
    {"agent-class", "agent_class"},
    {"environment", "environment"},
};

#define OPT_UNITS 1000
#define OPT_ADMIN 1001

static void
usage_usage(FILE *f)
{
	fprintf(f,
	    "usage: tollgate usage --id ID --source S (--cost-usd X | "
	    "--units N --unit U)\n"
	    "           [--intent X] [--team X] [--tenant X] "
	    "[--agent-class X]\n"
	    "           [--environment X] [-c FILE | --admin URL]\n"
	    "  records a cost that is not an LLM call (POST /v1/usage); "
	    "retry with the same id\n");
}

/* tollgate usage ...: argv[0] is "usage". */
int
cli_usage_post(int argc, char **argv)
{
	struct option longopts[nitems(usage_strs) + 5];
	const char *config = NULL, *admin = NULL;
	struct adminc ac;
	cJSON *body, *ans, *err;
	char *text = NULL, *out = NULL, *cause = NULL, *end;
	long status, units = 0;
	size_t i;
	int ch, rc = 1, setup;

	body = cJSON_CreateObject();
	for (i = 0; i < nitems(usage_strs); i++)
		longopts[i] = (struct option){
		    usage_strs[i].u_flag, required_argument, NULL, (int)i};
	longopts[i++] =
	    (struct option){"units", required_argument, NULL, OPT_UNITS};
	longopts[i++] =
	    (struct option){"admin", required_argument, NULL, OPT_ADMIN};
	longopts[i++] = (struct option){"config", required_argument, NULL, 'c'};
	longopts[i++] = (struct option){"help", no_argument, NULL, 'h'};
	longopts[i] = (struct option){NULL, 0, NULL, 0};
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		if (ch >= 0 && (size_t)ch < nitems(usage_strs)) {
			if (cJSON_GetObjectItemCaseSensitive(
				body, usage_strs[ch].u_field) != NULL) {
				fprintf(stderr,
				    "tollgate usage: --%s given twice\n",
				    usage_strs[ch].u_flag);
				goto usage;
			}
			cJSON_AddStringToObject(
			    body, usage_strs[ch].u_field, optarg);
			continue;
		}
		switch (ch) {
		case OPT_UNITS:
			units = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || units < 1 ||
			    units > 1000000000L) {
				fprintf(stderr,
				    "tollgate usage: --units: a "
				    "whole number from 1 to "
				    "1000000000\n");
				goto usage;
			}
			cJSON_AddNumberToObject(body, "units", (double)units);
			break;
		case OPT_ADMIN:
			admin = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case 'h':
			usage_usage(stdout);
			rc = 0;
			goto out;
		default:
			goto usage;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tollgate usage: unexpected argument '%s'\n",
		    argv[optind]);
		goto usage;
	}
	if (cJSON_GetObjectItemCaseSensitive(body, "id") == NULL ||
	    cJSON_GetObjectItemCaseSensitive(body, "source") == NULL) {
		fprintf(stderr,
		    "tollgate usage: --id and --source are "
		    "required\n");
		goto usage;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	setup = adminc_setup(&ac, admin, config, CLI_DEFAULT_CONFIG);
	if (setup == 0) {
		/* The server answers within 2 s; leave it room. */
		ac.ac_timeout_ms = 10000;
		text = cJSON_PrintUnformatted(body);
		if (adminc_request(&ac, "POST", "/v1/usage", text, &out,
			&status, &cause) != 0)
			fprintf(stderr,
			    "tollgate usage: admin API unreachable: %s\n",
			    cause);
		else {
			printf("%s", out);
			if (out[0] != '\0' && out[strlen(out) - 1] != '\n')
				printf("\n");
			if (status == 200 || status == 201 || status == 202)
				rc = 0;
			else {
				ans = cJSON_Parse(out);
				err = cJSON_GetObjectItemCaseSensitive(
				    ans, "error");
				fprintf(stderr, "tollgate usage: %ld: %s\n",
				    status,
				    cJSON_IsString(err) ? err->valuestring
							: "refused");
				cJSON_Delete(ans);
			}
		}
	}
	adminc_free(&ac);
	curl_global_cleanup();
	if (setup == 2)
		rc = 2;
	goto out;
usage:
	usage_usage(stderr);
	rc = 2;
out:
	cJSON_free(text);
	free(out);
	free(cause);
	cJSON_Delete(body);
	return (rc);
}
