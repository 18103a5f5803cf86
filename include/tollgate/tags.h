/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The attribution tags every call carries. Their names are the ledger's
 * columns and the X-Tollgate-* header suffixes.
 */
#ifndef TOLLGATE_TAGS_H
#define TOLLGATE_TAGS_H

#include <stddef.h>

enum tag {
	TAG_INTENT,
	TAG_TEAM,
	TAG_TENANT,
	TAG_AGENT_CLASS,
	TAG_ENVIRONMENT,
	TAG_MAX,
};

#define TAG_VALUE_MAX 128

/* tags.c */
const char *tag_name(enum tag); /* "agent_class" */
const char *tag_header(enum tag); /* "X-Tollgate-Agent-Class" */
int tag_lookup(const char *); /* by name; -1 if unknown */
int tag_value_ok(const char *, size_t); /* printable, no wildcards */

#endif
