/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a call says about its cost: the request's bounds (struct call_info,
 * filled by a provider adapter before forwarding) and the usage the
 * provider reported, normalised to tollgate's token conventions (struct
 * usage): input counts every prompt token including cached and cache-write
 * ones, output counts every generated token including reasoning ones, and
 * the other fields break those down (docs/internals/wire.md).
 */
#ifndef TOLLGATE_USAGE_H
#define TOLLGATE_USAGE_H

#include <stdint.h>

#define USAGE_MODEL_MAX 128
#define USAGE_TIER_MAX 32 /* a service tier name and its NUL */

/* What the request asks for; filled by meter_request. */
struct call_info {
	char ci_model[USAGE_MODEL_MAX]; /* body model, or the URL's */
	int ci_stream; /* the response will be SSE */
	int64_t ci_max_output; /* the request's output bound, -1 if none */
	int ci_n; /* choices / candidates, >= 1 */
	int64_t ci_input_estimate; /* prompt tokens, estimated (bytes/4) */
	int ci_usage_injected; /* tollgate added include_usage */
	/*
	 * The service tier the call may be billed at besides the base one:
	 * the request's, else its upstream's service_tier_default; "" when
	 * only the base tier can apply. Reservations price it, settlement
	 * the tier the provider reports.
	 */
	char ci_service_tier[USAGE_TIER_MAX];
	int ci_tier_asked; /* the request named its tier ("default" too):
			      no upstream's default replaces it */
};

enum usage_source {
	USAGE_NONE, /* nothing to bill (errors, free endpoints) */
	USAGE_REPORTED, /* the provider's own numbers */
	USAGE_ESTIMATED, /* usage never arrived; estimated */
};

/* Normalised usage of one call. */
struct usage {
	int64_t u_input; /* all prompt tokens */
	int64_t u_output; /* all generated tokens */
	int64_t u_cached; /* prompt tokens read from a cache */
	int64_t u_cache_write; /* prompt tokens written to a cache */
	int64_t u_cache_write_1h; /* of which with a 1 h TTL (Anthropic) */
	int64_t u_reasoning; /* output tokens spent thinking */
	enum usage_source u_source;
	int u_incomplete; /* the stream ended early or with an error */
	char u_model[USAGE_MODEL_MAX]; /* model the provider reported, or "" */
	int u_model_repaired; /* u_model is not byte for byte what the
				 provider said (not UTF-8, or too long) */
	char
	    u_service_tier[USAGE_TIER_MAX]; /* e.g. "flex", "priority", or "" */
};

#endif
