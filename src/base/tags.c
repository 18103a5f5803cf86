/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The attribution tags themselves: their names (ledger columns and config
 * keys), the X-Tollgate-* headers that set them, and which values a tag may
 * hold. A leaf: attribution, the config loader, policies and breakers all
 * ask it, and it asks nothing of them.
 */
#include <stddef.h>
#include <string.h>

#include "tollgate/tags.h"

static const struct {
	const char *name;
	const char *header;
} tags[TAG_MAX] = {
    [TAG_INTENT] = {"intent", "X-Tollgate-Intent"},
    [TAG_TEAM] = {"team", "X-Tollgate-Team"},
    [TAG_TENANT] = {"tenant", "X-Tollgate-Tenant"},
    [TAG_AGENT_CLASS] = {"agent_class", "X-Tollgate-Agent-Class"},
    [TAG_ENVIRONMENT] = {"environment", "X-Tollgate-Environment"},
};

/* The tag's name: a ledger column and a config key. */
const char *
tag_name(enum tag t)
{
	return (t < TAG_MAX ? tags[t].name : "?");
}

/* The header that sets the tag. */
const char *
tag_header(enum tag t)
{
	return (t < TAG_MAX ? tags[t].header : "?");
}

/* A tag by name, or -1. */
int
tag_lookup(const char *name)
{
	int t;

	for (t = 0; t < TAG_MAX; t++) {
		if (strcmp(name, tags[t].name) == 0)
			return (t);
	}
	return (-1);
}

/* Is s acceptable as a tag value, from the config or from a header? */
int
tag_value_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > TAG_VALUE_MAX)
		return (0);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		/* '*' and '?' are the wildcards of policies and kills: a
		 * value that holds one would match more than itself when a
		 * breaker turns it into a kill. */
		if (c <= 0x20 || c >= 0x7f || c == '*' || c == '?')
			return (0);
	}
	return (1);
}
