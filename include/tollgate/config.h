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

#include "tollgate/ledger.h"
#include "tollgate/tags.h"
#include "tollgate/yaml.h" /* struct cfgerrs, what a load reports */

struct pricebook;
struct policyset;
struct routingset;
struct cache_conf;

enum upstream_type {
	UPSTREAM_OPENAI,
	UPSTREAM_ANTHROPIC,
	UPSTREAM_GEMINI,
	UPSTREAM_AZURE_OPENAI,
	UPSTREAM_OPENAI_COMPATIBLE,
};

/* One of an upstream's base URLs and its share of the calls. */
struct upstream_url {
	char *uu_url; /* scheme://host[:port][/prefix], no trailing / */
	char *uu_host; /* its host, for logs */
	int uu_weight; /* 1 for the plain string form */
};

/* Most base URLs and keys one upstream may list. */
#define UPSTREAM_URLS_MAX 16
#define UPSTREAM_KEYS_MAX 16
/* The most retry.backoff and retry.max_backoff can be. */
#define RETRY_BACKOFF_MAX_MS (60 * 1000)

/* One upstream provider endpoint; owned by its struct config. */
struct upstream_conf {
	char *uc_name; /* key under upstreams:, [a-z0-9_-]+ */
	enum upstream_type uc_type;
	char *uc_base_url; /* the first of uc_urls, borrowed from it */
	char *uc_host; /* host part of base_url, for logs; borrowed */
	struct upstream_url *uc_urls; /* base_url: one, or its list */
	size_t uc_nurls;
	char *uc_ca_file; /* absolute path, or NULL for the system CAs */
	long uc_connect_timeout_ms; /* TCP + TLS handshake */
	long uc_header_timeout_ms; /* request sent -> response headers */
	long uc_idle_timeout_ms; /* longest silence between body bytes */
	char *uc_api_key; /* the first of uc_keys (borrowed), or NULL */
	char *uc_api_key_env; /* the variable's name, for messages */
	char **uc_keys; /* api_key_env's key, or keys_env's: sent upstream
			   for calls made with a tollgate key and calls sent
			   to another upstream than their path's; secrets,
			   wiped at free */
	char (*uc_key_fps)[17]; /* their fingerprints: 16 hex digits of the
				   SHA-256, all that is ever shown */
	size_t uc_nkeys;
	struct deployment *uc_deployments; /* azure_openai: name -> model */
	size_t uc_ndeployments;
	char *uc_service_tier; /* service_tier_default: the tier of calls
				* that name none; NULL: the base tier */
};

/* An Azure deployment and the model it serves. */
struct deployment {
	char *dp_name;
	char *dp_model;
};

/* What to do with a call to a model the price table does not know. */
enum unknown_model {
	UNKNOWN_MODEL_REFUSE, /* 400, never forwarded */
	UNKNOWN_MODEL_PRICE_AS, /* priced as cf_unknown_price_as */
	UNKNOWN_MODEL_UNPRICED, /* forwarded, recorded as unpriced */
	UNKNOWN_MODEL_FAMILY_MAX, /* priced at its family's dearest rates */
};

/*
 * A key binding: calls made with this key carry these tags, and headers
 * cannot override them. A provider key is matched by its SHA-256; a
 * tollgate key (kb_tollgate) is one tollgate issues to an agent, which
 * tollgate replaces with the upstream's own key before forwarding.
 */
struct key_binding {
	unsigned char kb_sha256[32];
	int kb_tollgate;
	char *kb_tags[TAG_MAX]; /* NULL where the binding sets nothing */
};

/* How an alert is written for a webhook. */
enum webhook_format {
	WEBHOOK_JSON, /* tollgate's own body, optionally signed */
	WEBHOOK_SLACK, /* {"text": "..."} for Slack-compatible hooks */
};

/* One alerts.webhooks entry; owned by its struct config. */
struct webhook_conf {
	char *wh_url; /* http or https; may carry a token: never logged */
	char *wh_host; /* its host, for logs */
	enum webhook_format wh_format;
	char *wh_secret; /* HMAC key from secret_env, wiped at free; or NULL */
	char *wh_secret_env; /* the variable's name, for messages */
	long wh_timeout_ms; /* whole request */
};

/* The whole configuration; immutable once config_load returns it. */
/* What an instance does with capped calls while Redis does not answer. */
enum fleet_when_down {
	FLEET_DOWN_LOCAL, /* held leases, then a local share of each cap */
	FLEET_DOWN_REFUSE, /* capped calls get 503; uncapped calls go on */
};

/*
 * fleet: the Redis every instance of a fleet shares caps, rate limits,
 * kills and alerts through (docs/fleet.md). Times in ms, money in nano-USD.
 */
struct fleet_conf {
	char *fc_url; /* as written: redis://host:port/db or unix:///path */
	char *fc_host; /* NULL for a unix socket */
	int fc_port; /* 6379 by default */
	char *fc_path; /* unix socket path; NULL for TCP */
	int fc_db; /* SELECT; 0 by default (redis://host/2, unix://...?db=2) */
	char *fc_password; /* from password_env, a secret; NULL: no AUTH */
	char *fc_password_env;
	char *fc_instance; /* instance:, or host:port of listen by default */
	char *fc_prefix; /* key_prefix: every key starts with it */
	int64_t fc_lease_nusd; /* lease_usd: most held per budget scope */
	int64_t fc_lease_ttl_ms; /* lease_ttl: an unrenewed lease's life */
	int64_t fc_wait_ms; /* wait: how long a call waits for a top-up */
	int64_t fc_connect_timeout_ms; /* connect_timeout */
	int64_t fc_command_timeout_ms; /* command_timeout */
	enum fleet_when_down fc_when_down;
};

/*
 * ledger.ship: the PostgreSQL the fleet's ledger rows go to
 * (docs/fleet.md). The connection string never holds a password: that
 * comes from password_env, is a secret no message repeats, and is wiped
 * when the config is freed.
 */
struct ship_conf {
	char *sc_conninfo; /* postgres: a URI or libpq keyword=value string */
	char *sc_sslmode; /* sslmode:, as libpq spells it; NULL: libpq's */
	char *sc_password; /* from password_env, a secret; NULL: none */
	char *sc_password_env;
	char *sc_instance; /* instance:; fleet.instance or host:port */
	int sc_batch; /* batch: rows per batch */
	long sc_interval_ms; /* interval: the idle poll */
};

/* ledger.ship.batch and interval when left out. */
#define SHIP_BATCH_DEFAULT 500
#define SHIP_INTERVAL_DEFAULT_MS 1000

struct config {
	int cf_refs;
	unsigned long long cf_generation; /* set by the caller that swaps it */
	char *cf_path; /* the file it was loaded from */
	unsigned cf_top_keys; /* bit per top-level key with a value set */

	char *cf_listen_host; /* "127.0.0.1", "::1", "0.0.0.0" ... */
	int cf_listen_port; /* 0 picks an ephemeral port */

	/* admin: (read at start only; a reload warns when they change) */
	char *cf_admin_host; /* as cf_listen_host; 127.0.0.1 by default */
	int cf_admin_port; /* 8788 by default; 0 picks an ephemeral port */
	char *cf_admin_token; /* bearer token, a secret; NULL: none */
	const char *cf_admin_token_src; /* the key that set it, for messages */
	int cf_admin_token_unset; /* named, but not set here (check only) */

	/* limits: */
	size_t cf_max_body_bytes; /* 413 beyond */
	size_t cf_max_header_bytes; /* request line + headers; 431 beyond */
	int cf_max_headers; /* header count; 431 beyond */
	int cf_max_connections; /* accepted client connections */
	int cf_max_connections_per_client; /* per peer address; 0: none */
	long cf_header_timeout_ms; /* request line and headers within */
	long cf_request_timeout_ms; /* whole request must arrive within */
	long cf_keepalive_timeout_ms; /* idle keep-alive connections */
	long cf_client_write_timeout_ms; /* a client taking no bytes */
	long cf_drain_timeout_ms; /* SIGTERM waits this long */
	size_t
	    cf_stream_high_watermark; /* client output that pauses upstream */

	struct upstream_conf *cf_upstreams;
	size_t cf_nupstreams;

	/* ledger: (path and durability take effect at start only) */
	char *cf_ledger_path; /* absolute */
	enum durability cf_durability;
	size_t cf_ledger_queue_max;
	int cf_ledger_queue_max_int; /* as parsed */
	struct ship_conf *cf_ship; /* NULL: no ledger.ship:; start only */
	long cf_keep_local_ms; /* keep_local:; 0: keep every row */

	/* prices: and unknown_models: */
	char *cf_prices_path; /* absolute */
	struct pricebook *cf_prices; /* loaded with the config, owned */
	enum unknown_model cf_unknown_model;
	char *cf_unknown_price_as;

	/* attribution: */
	char *cf_tag_default[TAG_MAX]; /* NULL: no default */
	int cf_tag_required[TAG_MAX];
	int cf_tag_from_header[TAG_MAX]; /* X-Tollgate-<tag> is trusted */
	struct key_binding *cf_keys;
	size_t cf_nkeys;

	/* policies */
	struct policyset *cf_policies; /* never NULL once loaded; owned */
	int cf_hard_cap_status; /* 429 or 402 */
	char *cf_timezone; /* calendar windows' zone; NULL: UTC */

	/* routing: (src/routing/), first match wins */
	struct routingset *cf_routing; /* never NULL once loaded; owned */

	/* cache: (src/cache/); its path is read at start only */
	struct cache_conf *cf_cache; /* NULL: no cache: section */
	/* retry: (docs/spend-less.md, Failover and retries) */
	int cf_retry_attempts; /* most upstream attempts a call makes; 0:
				  one per upstream of its chain */
	long cf_retry_backoff_ms; /* the wait before a second round */
	long cf_retry_max_backoff_ms; /* the longest wait, retry-after too */

	/* fleet: (read at start only; a reload warns when it changes) */
	struct fleet_conf *cf_fleet; /* NULL: no fleet: section, one instance */

	/* alerts: */
	struct webhook_conf *cf_webhooks;
	size_t cf_nwebhooks;
	int cf_alert_max_attempts; /* per webhook, the first included */
	long cf_alert_initial_backoff_ms;
	long cf_alert_max_backoff_ms;
};

/*
 * config_load_opts flags. CONFIG_SECRETS_OPTIONAL: a secret read from the
 * environment (api_key_env, admin.token_env, secret_env) that is not set is
 * a warning, not an error, and the secret is left out; for tollgate check
 * and the ledger commands, which must not need production secrets. Only
 * serve and reload need them.
 */
#define CONFIG_SECRETS_OPTIONAL 0x1

/* config.c */
struct config *config_load(const char *, struct cfgerrs *);
struct config *config_load_opts(const char *, int, struct cfgerrs *);
struct config *config_load_cli(const char *);
struct config *config_ref(struct config *);
void config_unref(struct config *);
const struct upstream_conf *config_find_upstream(
    const struct config *, const char *, size_t);
const char *config_upstream_type_name(enum upstream_type);
const char *config_deployment_model(const struct upstream_conf *, const char *);
int config_check_reload(
    const struct config *, const struct config *, struct cfgerrs *);

/* cfgfleet.c */
const char *config_fleet_changed(
    const struct fleet_conf *, const struct fleet_conf *);
char *config_fleet_describe(const struct fleet_conf *);

/* cfgrouting.c */
int config_routing_endpoint_known(const char *);

/* cfgship.c */
const char *config_ship_changed(
    const struct ship_conf *, const struct ship_conf *);
char *config_ship_describe(const struct ship_conf *);
int64_t config_keep_local_ms(const struct config *, char **);

/* current.c */
struct config *config_current(void);
void config_set_current(struct config *);

#endif
