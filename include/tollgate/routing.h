/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Routing rules (the routing: list of the config): what a call may be
 * sent as instead of what it asked for. A rule matches a call by its tags,
 * model, provider, upstream and endpoint (globs), and optionally only
 * while the tightest hard-capped budget over the call has less than a
 * given share of its cap left; the first rule that matches applies, like a
 * firewall's. A rule rewrites the model, switches to another upstream of
 * the same wire API, and lowers (or sets) the output bound. The rules
 * decide; the call's life (src/call/session_route.c) applies them.
 * docs/spend-less.md has the semantics.
 */
#ifndef TOLLGATE_ROUTING_H
#define TOLLGATE_ROUTING_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/tags.h"

struct cfgctx;
struct ynode;

/* What a rule can match on: the five tags, then these. */
#define ROUTING_ATTR_MODEL TAG_MAX
#define ROUTING_ATTR_PROVIDER (TAG_MAX + 1)
#define ROUTING_ATTR_UPSTREAM (TAG_MAX + 2)
#define ROUTING_ATTR_ENDPOINT (TAG_MAX + 3)
#define ROUTING_ATTR_MAX (TAG_MAX + 4)

#define ROUTING_NAME_MAX 64
#define ROUTING_GLOB_MAX 128
#define ROUTING_MODEL_MAX 127

/* One rule; owned by its set, read-only once parsed. */
struct routing_rule {
	char *rr_name; /* unique in its set */
	size_t rr_line; /* where it starts, for messages */
	char *rr_match[ROUTING_ATTR_MAX]; /* globs; NULL matches anything */
	char *rr_model; /* the model to send instead; NULL: as asked */
	char *rr_upstream; /* the upstream to send to; NULL: as routed */
	int64_t rr_max_tokens; /* output bound at most this; -1: as asked */
	int rr_below_pct; /* only while the tightest capped budget has less
			     than this % of its cap left; -1: always */
	char **rr_fallback; /* upstreams to fail over to, in order */
	size_t rr_nfallback;
	size_t rr_fallback_line; /* where fallback: is, for messages */
};

/* Most upstreams one rule's fallback: may list. */
#define ROUTING_FALLBACK_MAX 8

/* An immutable list of rules, in file order. */
struct routingset {
	struct routing_rule *rs_rules;
	size_t rs_n;
};

/*
 * The share of its cap the tightest hard-capped budget over the call has
 * left, in millionths (0 to 1000000), or -1 when no hard cap covers the
 * call; asked only of rules with when_budget_below_percent, at most once
 * a call.
 */
typedef int64_t (*routing_headroom_fn)(void *);

/* routing_select's flags: the call's model and upstream cannot change. */
#define ROUTING_FIXED 0x1
/*
 * The call generates no text (embeddings): its model is not one a
 * generation model could stand for and it has no output bound, so rules
 * that rewrite the model or set max_tokens do not match.
 */
#define ROUTING_NO_OUTPUT 0x2

/* parse.c */
int routing_parse(
    struct cfgctx *, const char *, const struct ynode *, struct routingset **);
void routing_free(struct routingset *);
void routing_parse_match(
    struct cfgctx *, const char *, const struct ynode *, struct routing_rule *);
int routing_model_ok(const char *);

/* match.c */
int routing_rule_matches(const struct routing_rule *, const char *const *);
const struct routing_rule *routing_select(const struct routingset *,
    const char *const *, int, routing_headroom_fn, void *);
const char *routing_attr_name(int);

#endif
