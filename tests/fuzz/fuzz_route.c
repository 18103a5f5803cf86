/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the path normaliser and route table: whatever the
 * target, a routed request's forwarded path must itself normalise to the
 * same path and contain no dot segment, encoded separator or query.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/route.h"
#include "tollgate/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static struct upstream_conf ups[] = {
    {.uc_name = (char[]){"openai"}, .uc_type = UPSTREAM_OPENAI},
    {.uc_name = (char[]){"anthropic"}, .uc_type = UPSTREAM_ANTHROPIC},
    {.uc_name = (char[]){"gemini"}, .uc_type = UPSTREAM_GEMINI},
    {.uc_name = (char[]){"azure"}, .uc_type = UPSTREAM_AZURE_OPENAI},
    {.uc_name = (char[]){"local"}, .uc_type = UPSTREAM_OPENAI_COMPATIBLE},
};
static struct config cf = {.cf_upstreams = ups, .cf_nupstreams = 5};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct route rt;
	char *target, *p2, *q2, *why;

	target = xmalloc(len + 1);
	memcpy(target, data, len);
	target[len] = '\0';
	if (route_match(&cf, len > 0 && data[0] & 1 ? "GET" : "POST", target,
		&rt, &why) == ROUTE_OK) {
		if (route_normalize(rt.rt_path, &p2, &q2) == -1 ||
		    strcmp(p2, rt.rt_path) != 0 || q2 != NULL)
			fatalx("forwarded path does not normalise to itself");
		if (strstr(rt.rt_path, "/.") != NULL ||
		    strchr(rt.rt_path, '%') != NULL ||
		    strstr(rt.rt_path, "//") != NULL)
			fatalx("forwarded path has a dot segment or escape");
		free(p2);
		route_clear(&rt);
	} else
		free(why);
	free(target);
	return (0);
}
