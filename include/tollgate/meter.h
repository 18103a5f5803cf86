/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Provider adapters. One per API family (src/meter/providers/openai.c,
 * anthropic.c, gemini.c), behind one interface:
 *
 *  - meter_request reads the request body before it is forwarded: model,
 *    stream flag, output bound, n, an input estimate. It refuses a body
 *    that a provider could read otherwise than tollgate does. For OpenAI
 *    chat and legacy-completions streams without
 *    stream_options.include_usage it returns a rewritten body that asks
 *    for usage, and remembers to hide the extra usage chunk (and the
 *    "usage":null fields) from the client.
 *  - a struct meter reads the response as it is relayed: meter_feed gets
 *    every body byte from the provider and calls emit with the bytes the
 *    client must receive (the same bytes, unless usage was injected, in
 *    which case whole SSE events are emitted with the injected parts
 *    removed). meter_finish returns the normalised usage.
 *
 * Past the request check, adapters never fail a call: malformed usage
 * just means usage is estimated.
 */
#ifndef TOLLGATE_METER_H
#define TOLLGATE_METER_H

#include <stddef.h>

#include "tollgate/route.h"
#include "tollgate/usage.h"

/*
 * Largest response body kept whole for parsing usage; beyond it only the
 * tail is kept (usage sits at the end of every provider's JSON). The cap
 * is BUF_METER_BODY_MAX (buf.h, where every cap is); this is its value
 * for code that does not include buf.h, and meter.c checks they agree.
 */
#define METER_BODY_MAX (4 * 1024 * 1024)
#define METER_TAIL_MAX (64 * 1024)

typedef void (*meter_emit_cb)(void *, const char *, size_t);

struct meter; /* opaque */

/*
 * meter.c (dispatch to the adapters):
 *
 * meter_request(route, body, len, ci, &newbody, &newlen, &cause) fills ci
 *   from the request and returns 0; *newbody is NULL when the body is to
 *   be forwarded as it is, else an allocated replacement of *newlen bytes.
 *   It returns -1 with an allocated *cause (a sentence naming the key or
 *   the problem) for a body to refuse: on a metered route one that is not
 *   a JSON object, on any route one with a key given twice or in two
 *   spellings, a name with escapes, a value tollgate reads that readers
 *   could read differently (a bound that is not a plain whole number, a
 *   model with a control character or invalid UTF-8).
 * meter_tier(route, ci) gives a call that named no service tier its
 *   upstream's service_tier_default (or the base tier); meter_request
 *   does, and a routing rule that changes the upstream does again.
 * meter_new(route, ci) starts metering a response.
 * meter_response(m, status, content_type) gives the response head
 *   (content_type may be NULL); SSE is metered as a stream, anything else
 *   as one JSON body. Non-2xx responses are relayed and never billed.
 * meter_feed(m, buf, len, emit, arg) takes body bytes as they arrive and
 *   calls emit(arg, bytes, n) zero or more times with what to relay.
 * meter_finish(m, complete, emit, arg, usage) ends the response: complete
 *   is 1 when the provider finished it, 0 when it was cut (reset, timeout,
 *   client gone). It emits anything still held (only when complete) and
 *   fills usage: reported, or estimated from ci and the output seen, or
 *   none. A call that produced output is never left at zero tokens.
 * meter_ended(m) says whether a stream's last event (the one after which
 *   only the end of the body can come) has been relayed.
 * meter_stream_error(m) is the provider's name for the error a 2xx stream
 *   ended with (an error frame), or NULL.
 */
/* meter_request.c */
int meter_request(const struct route *, const char *, size_t,
    struct call_info *, char **, size_t *, char **);
int meter_set_bound(
    const struct route *, const char *, size_t, int64_t, char **, size_t *);
int meter_set_model(const struct route *, const char *, size_t, const char *,
    char **, size_t *);
void meter_tier(const struct route *, struct call_info *);

/* meter.c */
struct meter *meter_new(const struct route *, const struct call_info *);
void meter_response(struct meter *, int, const char *);
void meter_feed(struct meter *, const char *, size_t, meter_emit_cb, void *);
void meter_finish(struct meter *, int, meter_emit_cb, void *, struct usage *);
void meter_so_far(const struct meter *, struct usage *);
int meter_at_event_boundary(const struct meter *);
int meter_ended(const struct meter *);
const char *meter_stream_error(const struct meter *);
int64_t meter_next_sequence(const struct meter *);
void meter_free(struct meter *);

#endif
