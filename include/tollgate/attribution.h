/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Who a call belongs to. Tags come, in order of authority, from a key
 * binding in the config (matched by the SHA-256 of the key the client
 * presented; headers cannot override it), then the trusted X-Tollgate-*
 * headers, then the config's defaults. The presented key itself is only
 * ever kept as a fingerprint.
 */
#ifndef TOLLGATE_ATTRIBUTION_H
#define TOLLGATE_ATTRIBUTION_H

#include "tollgate/tags.h"

struct config;
struct hdrs;
struct key_binding;

#define REQUEST_ID_MAX 64

/* The attribution of one call. */
struct attribution {
	char at_tag[TAG_MAX][TAG_VALUE_MAX + 1]; /* "" where unset */
	char at_key_fp[17]; /* 16 hex of the key's SHA-256, or "" */
	const struct key_binding *at_binding; /* borrowed from the config */
	char at_request_id[REQUEST_ID_MAX + 1]; /* X-Tollgate-Request-Id */
};

/* attribution.c */
int attribution_resolve(const struct config *, const struct hdrs *,
    const char *, struct attribution *, const char **, char **);
const char *attribution_tag(const struct attribution *, enum tag);
char *attribution_strip_query_key(const char *);
int attribution_request_id_ok(const char *);

#endif
