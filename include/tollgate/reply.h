/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Error bodies tollgate writes itself, in the provider's own shape so that
 * each SDK raises its usual typed error: OpenAI {"error":{...}}, Anthropic
 * {"type":"error","error":{...}}, Gemini {"error":{"code","message",
 * "status"}} (docs/internals/wire.md, Error shapes).
 */
#ifndef TOLLGATE_REPLY_H
#define TOLLGATE_REPLY_H

#include "tollgate/route.h"

struct cJSON;

/* reply.c */
struct cJSON *reply_error_json(enum api_family, int, const char *, const char *,
    const char *, const char *);
char *reply_json_take(struct cJSON *);
char *reply_error_body(
    enum api_family, int, const char *, const char *, const char *);
const char *http_reason(int);

#endif
