/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration: tollgate.yaml parsed with libyaml into an immutable,
 * validated struct config. A config is built on the side and only swapped
 * in when it is complete and valid; sessions hold a reference to the
 * generation they started with (config_ref/config_unref), so a reload never
 * changes a call that is already running.
 */
#ifndef TOLLGATE_CONFIG_H
#define TOLLGATE_CONFIG_H

#include <stddef.h>

enum upstream_type {
	UPSTREAM_OPENAI,
	UPSTREAM_ANTHROPIC,
	UPSTREAM_GEMINI,
	UPSTREAM_AZURE_OPENAI,
	UPSTREAM_OPENAI_COMPATIBLE,
};

/* One upstream provider endpoint; owned by its struct config. */
struct upstream_conf {
	char *uc_name; /* key under upstreams:, [a-z0-9_-]+ */
	enum upstream_type uc_type;
	char *uc_base_url; /* scheme://host[:port][/prefix], no trailing / */
	char *uc_host; /* host part of base_url, for logs */
	char *uc_ca_file; /* absolute path, or NULL for the system CAs */
	long uc_connect_timeout_ms; /* TCP + TLS handshake */
	long uc_header_timeout_ms; /* request sent -> response headers */
	long uc_idle_timeout_ms; /* longest silence between body bytes */
};

/* The whole configuration; immutable once config_load returns it. */
struct config {
	int cf_refs;
	unsigned long long cf_generation; /* set by the caller that swaps it */
	char *cf_path; /* the file it was loaded from */

	char *cf_listen_host; /* "127.0.0.1", "::1", "0.0.0.0" ... */
	int cf_listen_port; /* 0 picks an ephemeral port */

	/* limits: */
	size_t cf_max_body_bytes; /* 413 beyond */
	size_t cf_max_header_bytes; /* request line + headers; 431 beyond */
	int cf_max_headers; /* header count; 431 beyond */
	int cf_max_connections; /* accepted client connections */
	long cf_request_timeout_ms; /* whole request must arrive within */
	long cf_keepalive_timeout_ms; /* idle keep-alive connections */
	long cf_drain_timeout_ms; /* SIGTERM waits this long */
	size_t
	    cf_stream_high_watermark; /* client output that pauses upstream */

	struct upstream_conf *cf_upstreams;
	size_t cf_nupstreams;
};

/* Every error found while loading, each "file:line:col: message". */
struct cfgerrs {
	char **ce_msgs;
	size_t ce_n;
};

/* config.c */
struct config *config_load(const char *, struct cfgerrs *);
struct config *config_ref(struct config *);
void config_unref(struct config *);
const struct upstream_conf *config_find_upstream(
    const struct config *, const char *, size_t);
const char *config_upstream_type_name(enum upstream_type);
void cfgerrs_free(struct cfgerrs *);

#endif
