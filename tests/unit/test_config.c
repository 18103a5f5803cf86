/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for config.c: a table of named cases (memcached testapp.c,
 * Redis redisTests[]). Each case is a YAML text written to tollgate.yaml in
 * a fresh temporary directory and either loads, and then has its fields
 * checked, or fails with exactly the listed errors, in order. Expected
 * errors are written "line:col: message"; the test puts the file name in
 * front and replaces @DIR@ with the temporary directory. A few API tests
 * and the shipped config/tollgate.yaml follow the table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tollgate/config.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "cfgfile.h"

#define MAX_ERRORS 16

struct cfgcase {
	const char *name;
	const char *yaml;
	const char *file; /* created empty next to the config, or NULL */
	void (*check)(const struct config *, const char *);
	const char *errors[MAX_ERRORS]; /* none: the file must load */
};

static void
check_defaults(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_int_equal(cf->cf_refs, 1);
	assert_int_equal(cf->cf_generation, 0);
	assert_string_equal(cf->cf_listen_host, "127.0.0.1");
	assert_int_equal(cf->cf_listen_port, 8787);
	assert_int_equal(cf->cf_max_body_bytes, 32 * 1024 * 1024);
	assert_int_equal(cf->cf_max_header_bytes, 64 * 1024);
	assert_int_equal(cf->cf_max_headers, 100);
	assert_int_equal(cf->cf_max_connections, 1024);
	/* A loopback listener: every client is 127.0.0.1, no limit. */
	assert_int_equal(cf->cf_max_connections_per_client, 0);
	assert_int_equal(cf->cf_header_timeout_ms, 10000);
	assert_int_equal(cf->cf_request_timeout_ms, 30000);
	assert_int_equal(cf->cf_keepalive_timeout_ms, 60000);
	assert_int_equal(cf->cf_drain_timeout_ms, 30000);
	assert_int_equal(cf->cf_stream_high_watermark, 256 * 1024);
	assert_int_equal(cf->cf_nupstreams, 0);
	assert_null(cf->cf_upstreams);
	assert_string_equal(cf->cf_admin_host, "127.0.0.1");
	assert_int_equal(cf->cf_admin_port, 8788);
	assert_null(cf->cf_admin_token);
}

static void
check_alerts_defaults(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_int_equal(cf->cf_nwebhooks, 0);
	assert_int_equal(cf->cf_alert_max_attempts, 10);
	assert_int_equal(cf->cf_alert_initial_backoff_ms, 1000);
	assert_int_equal(cf->cf_alert_max_backoff_ms, 60000);
}

static void
check_alerts_webhooks(const struct config *cf, const char *dir)
{
	const struct webhook_conf *wh = cf->cf_webhooks;

	(void)dir;
	assert_int_equal(cf->cf_nwebhooks, 2);
	assert_string_equal(wh[0].wh_url, "https://hooks.example.com/tollgate");
	assert_string_equal(wh[0].wh_host, "hooks.example.com");
	assert_int_equal(wh[0].wh_format, WEBHOOK_JSON);
	assert_non_null(wh[0].wh_secret);
	assert_string_equal(wh[0].wh_secret, getenv("PATH"));
	assert_int_equal(wh[0].wh_timeout_ms, 2000);
	assert_string_equal(
	    wh[1].wh_url, "http://10.0.0.1:9000/services/T0/B0/xyz");
	assert_int_equal(wh[1].wh_format, WEBHOOK_SLACK);
	assert_null(wh[1].wh_secret);
	assert_int_equal(wh[1].wh_timeout_ms, 5000);
	assert_int_equal(cf->cf_alert_max_attempts, 3);
	assert_int_equal(cf->cf_alert_initial_backoff_ms, 250);
	assert_int_equal(cf->cf_alert_max_backoff_ms, 4000);
}

static void
check_admin_v6(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_string_equal(cf->cf_admin_host, "::1");
	assert_int_equal(cf->cf_admin_port, 9000);
	assert_null(cf->cf_admin_token);
}

static void
check_meter_defaults(const struct config *cf, const char *dir)
{
	char want[512];
	int t;

	snprintf(want, sizeof(want), "%s/data/ledger.db", dir);
	assert_string_equal(cf->cf_ledger_path, want);
	assert_int_equal(cf->cf_durability, DURABILITY_PROCESS);
	assert_int_equal(cf->cf_ledger_queue_max, 10000);
	assert_null(cf->cf_prices); /* no prices.yaml beside the file */
	assert_int_equal(cf->cf_unknown_model, UNKNOWN_MODEL_FAMILY_MAX);
	for (t = 0; t < TAG_MAX; t++) {
		assert_null(cf->cf_tag_default[t]);
		assert_int_equal(cf->cf_tag_required[t], 0);
		assert_int_equal(cf->cf_tag_from_header[t], 1);
	}
	assert_int_equal(cf->cf_nkeys, 0);
}

static void
check_meter_full(const struct config *cf, const char *dir)
{
	const struct upstream_conf *uc;

	(void)dir;
	assert_string_equal(cf->cf_ledger_path, "/var/lib/tg/l.db");
	assert_int_equal(cf->cf_durability, DURABILITY_POWER);
	assert_int_equal(cf->cf_ledger_queue_max, 64);
	assert_string_equal(cf->cf_tag_default[TAG_TEAM], "platform");
	assert_string_equal(cf->cf_tag_default[TAG_ENVIRONMENT], "staging");
	assert_true(cf->cf_tag_required[TAG_AGENT_CLASS]);
	assert_true(cf->cf_tag_required[TAG_TEAM]);
	assert_false(cf->cf_tag_required[TAG_INTENT]);
	assert_true(cf->cf_tag_from_header[TAG_INTENT]);
	assert_true(cf->cf_tag_from_header[TAG_TENANT]);
	assert_false(cf->cf_tag_from_header[TAG_TEAM]);
	assert_int_equal(cf->cf_nkeys, 2);
	assert_int_equal(cf->cf_keys[0].kb_sha256[0], 0x9f);
	assert_int_equal(cf->cf_keys[0].kb_sha256[31], 0x08);
	assert_false(cf->cf_keys[0].kb_tollgate);
	assert_string_equal(cf->cf_keys[0].kb_tags[TAG_TEAM], "support");
	assert_string_equal(
	    cf->cf_keys[0].kb_tags[TAG_AGENT_CLASS], "ticket-agent");
	assert_true(cf->cf_keys[1].kb_tollgate);
	uc = config_find_upstream(cf, "azure", 5);
	assert_non_null(uc);
	assert_int_equal(uc->uc_ndeployments, 2);
	assert_string_equal(config_deployment_model(uc, "prod4o"), "gpt-4o");
	assert_string_equal(config_deployment_model(uc, "mini"), "gpt-4o-mini");
	assert_null(config_deployment_model(uc, "other"));
}

static void
check_full(const struct config *cf, const char *dir)
{
	const struct upstream_conf *uc;

	(void)dir;
	assert_string_equal(cf->cf_listen_host, "0.0.0.0");
	assert_int_equal(cf->cf_listen_port, 9000);
	assert_int_equal(cf->cf_max_body_bytes, 1024 * 1024 * 1024);
	assert_int_equal(cf->cf_max_header_bytes, 1024);
	assert_int_equal(cf->cf_max_headers, 10000);
	assert_int_equal(cf->cf_max_connections, 1000000);
	/* Any other listener: a quarter of max_connections. */
	assert_int_equal(cf->cf_max_connections_per_client, 250000);
	assert_int_equal(cf->cf_header_timeout_ms, 2000);
	assert_int_equal(cf->cf_request_timeout_ms, 500);
	assert_int_equal(cf->cf_keepalive_timeout_ms, 5 * 60 * 1000);
	assert_int_equal(cf->cf_drain_timeout_ms, 3600 * 1000);
	assert_int_equal(cf->cf_stream_high_watermark, 4096);
	assert_int_equal(cf->cf_nupstreams, 2);

	uc = &cf->cf_upstreams[0];
	assert_string_equal(uc->uc_name, "openai");
	assert_int_equal(uc->uc_type, UPSTREAM_OPENAI);
	assert_string_equal(uc->uc_base_url, "https://api.openai.com");
	assert_string_equal(uc->uc_host, "api.openai.com");
	assert_null(uc->uc_ca_file);
	assert_int_equal(uc->uc_connect_timeout_ms, 10000);
	assert_int_equal(uc->uc_header_timeout_ms, 600000);
	assert_int_equal(uc->uc_idle_timeout_ms, 300000);

	uc = &cf->cf_upstreams[1];
	assert_string_equal(uc->uc_name, "my-azure_2");
	assert_int_equal(uc->uc_type, UPSTREAM_AZURE_OPENAI);
	assert_string_equal(
	    uc->uc_base_url, "https://example.openai.azure.com:8443/prefix");
	assert_string_equal(uc->uc_host, "example.openai.azure.com");
	assert_int_equal(uc->uc_connect_timeout_ms, 250);
	assert_int_equal(uc->uc_header_timeout_ms, 7000);
	assert_int_equal(uc->uc_idle_timeout_ms, 2 * 60 * 1000);
}

static void
check_plain_numbers(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_int_equal(cf->cf_max_body_bytes, 1);
	assert_int_equal(cf->cf_max_header_bytes, 2048);
	assert_int_equal(cf->cf_request_timeout_ms, 7000);
	assert_int_equal(cf->cf_keepalive_timeout_ms, 1);
	assert_int_equal(cf->cf_stream_high_watermark, 3 * 1024 * 1024);
}

static void
check_per_client_set(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_int_equal(cf->cf_max_connections_per_client, 5);
}

static void
check_per_client_off(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_int_equal(cf->cf_max_connections_per_client, 0);
}

static void
check_per_client_quarter(const struct config *cf, const char *dir)
{
	(void)dir;
	/* Rounded up: a listener of 2 still lets one client hold 1. */
	assert_int_equal(cf->cf_max_connections_per_client, 1);
}

static void
check_listen_v6(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_string_equal(cf->cf_listen_host, "::1");
	assert_int_equal(cf->cf_listen_port, 0);
}

static void
check_listen_localhost(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_string_equal(cf->cf_listen_host, "127.0.0.1");
	assert_int_equal(cf->cf_listen_port, 65535);
}

static void
check_loopback(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_int_equal(cf->cf_nupstreams, 4);
	assert_string_equal(
	    cf->cf_upstreams[0].uc_base_url, "http://127.0.0.1:8000/proxy");
	assert_string_equal(cf->cf_upstreams[0].uc_host, "127.0.0.1");
	assert_int_equal(
	    cf->cf_upstreams[0].uc_type, UPSTREAM_OPENAI_COMPATIBLE);
	assert_string_equal(
	    cf->cf_upstreams[1].uc_base_url, "http://[::1]:11434");
	assert_string_equal(cf->cf_upstreams[1].uc_host, "::1");
	assert_string_equal(
	    cf->cf_upstreams[2].uc_base_url, "http://localhost:8080");
	assert_string_equal(
	    cf->cf_upstreams[3].uc_base_url, "http://127.5.6.7");
}

static void
check_hard_cap_402(const struct config *cf, const char *dir)
{
	(void)dir;
	assert_int_equal(cf->cf_hard_cap_status, 402);
	assert_non_null(cf->cf_policies);
	assert_int_equal(cf->cf_policies->ps_n, 0);
}

static void
check_ca_file(const struct config *cf, const char *dir)
{
	char *want, *real;

	assert_int_equal(cf->cf_nupstreams, 1);
	assert_non_null(cf->cf_upstreams[0].uc_ca_file);
	real = realpath(dir, NULL);
	assert_non_null(real);
	xasprintf(&want, "%s/ca.pem", real);
	assert_string_equal(cf->cf_upstreams[0].uc_ca_file, want);
	free(want);
	free(real);
}

static void
check_empty_sections(const struct config *cf, const char *dir)
{
	check_defaults(cf, dir);
}

#define TEN_BRACKETS "[[[[[[[[[["

static const struct cfgcase cases[] = {
    /* Files that load. */
    {.name = "empty_file", .yaml = "", .check = check_defaults},
    {.name = "comments_only",
	.yaml = "# nothing here\n\n# at all\n",
	.check = check_defaults},
    {.name = "empty_document", .yaml = "---\n", .check = check_defaults},
    {.name = "empty_sections",
	.yaml = "limits:\nupstreams: {}\n",
	.check = check_empty_sections},
    {.name = "full",
	.yaml =
	    "listen: 0.0.0.0:9000\n"
	    "limits:\n"
	    "  max_body_bytes: 1GiB\n"
	    "  max_header_bytes: 1KiB\n"
	    "  max_headers: 10000\n"
	    "  max_connections: 1000000\n"
	    "  header_timeout: 2s\n"
	    "  request_timeout: 500ms\n"
	    "  keepalive_timeout: 5m\n"
	    "  drain_timeout: 1h\n"
	    "  stream_high_watermark: 4KiB\n"
	    "upstreams:\n"
	    "  openai:\n"
	    "    type: openai\n"
	    "    base_url: https://api.openai.com/\n"
	    "  my-azure_2:\n"
	    "    type: azure_openai\n"
	    "    base_url: \"https://example.openai.azure.com:8443/prefix//\"\n"
	    "    connect_timeout: 250ms\n"
	    "    header_timeout: 7\n"
	    "    idle_timeout: 2m\n",
	.check = check_full},
    {.name = "plain_numbers",
	.yaml = "limits:\n"
		"  max_body_bytes: 1\n"
		"  max_header_bytes: 2048\n"
		"  request_timeout: 7\n"
		"  keepalive_timeout: 1ms\n"
		"  stream_high_watermark: \"3MiB\"\n",
	.check = check_plain_numbers},
    {.name = "listen_ipv6",
	.yaml = "listen: \"[::1]:0\"\n",
	.check = check_listen_v6},
    {.name = "per_client_set_on_loopback",
	.yaml = "limits:\n  max_connections_per_client: 5\n",
	.check = check_per_client_set},
    {.name = "per_client_off_on_any",
	.yaml = "listen: 0.0.0.0:1\n"
		"limits:\n  max_connections_per_client: 0\n",
	.check = check_per_client_off},
    {.name = "per_client_default_on_any",
	.yaml = "listen: 0.0.0.0:1\nlimits:\n  max_connections: 2\n",
	.check = check_per_client_quarter},
    {.name = "per_client_default_on_v6_loopback",
	.yaml = "listen: \"[::1]:0\"\n",
	.check = check_per_client_off},
    {.name = "listen_localhost",
	.yaml = "listen: localhost:65535\n",
	.check = check_listen_localhost},
    {.name = "http_loopback_allowed",
	.yaml = "upstreams:\n"
		"  local:\n"
		"    type: openai_compatible\n"
		"    base_url: http://127.0.0.1:8000/proxy/\n"
		"  ollama: { type: openai_compatible, "
		"base_url: \"http://[::1]:11434\" }\n"
		"  lh: { type: openai, base_url: \"http://localhost:8080\" }\n"
		"  net8: { type: openai, base_url: \"http://127.5.6.7\" }\n",
	.check = check_loopback},
    {.name = "ca_file_relative",
	.yaml = "upstreams:\n"
		"  corp:\n"
		"    type: openai_compatible\n"
		"    base_url: https://llm.corp.example\n"
		"    ca_file: ca.pem\n",
	.file = "ca.pem",
	.check = check_ca_file},

    /* Unknown keys, and the sections that are not implemented yet. */
    {.name = "unknown_key_top",
	.yaml = "listen: 127.0.0.1:1\nfoo: 1\n",
	.errors = {"2:1: unknown key 'foo' at top level"}},
    {.name = "unknown_key_nested",
	.yaml = "limits:\n  max_headers: 5\n  max_header: 5\n",
	.errors = {"3:3: unknown key 'max_header' in limits"}},
    {.name = "unknown_key_upstream",
	.yaml = "upstreams:\n"
		"  openai:\n"
		"    type: openai\n"
		"    base_url: https://api.openai.com\n"
		"    api_key: sk-nope\n",
	.errors = {"5:5: unknown key 'api_key' in upstreams.openai"}},

    /* policies: (the list itself is tested in test_policy.c) */
    {.name = "policies_errors_reach_the_config",
	.yaml = "policies:\n"
		"  - name: p\n"
		"    window: day\n"
		"    hard_cap_usd: ten\n",
	.errors = {"4:19: policies[0].hard_cap_usd: expected an amount in "
		   "USD such as 50 or 0.25 (at most 9 decimals, at most "
		   "1000000000)"}},
    {.name = "policies_per_tag_never_set",
	.yaml = "attribution: { headers: [team] }\n"
		"policies:\n"
		"  - name: t\n"
		"    per: [tenant]\n"
		"    window: day\n"
		"    hard_cap_usd: 1\n",
	.errors = {"3:5: policies[0] (t).per: no call can have a tenant tag "
		   "(attribution.headers leaves it out and no default or key "
		   "binding sets it)"}},
    {.name = "hard_cap_status_402",
	.yaml = "refusals: { hard_cap_status: 402 }\n",
	.check = check_hard_cap_402},
    {.name = "hard_cap_status_bad",
	.yaml = "refusals: { hard_cap_status: 403 }\n",
	.errors = {"1:30: refusals.hard_cap_status: expected 429 or 402"}},

    /* alerts: */
    {.name = "alerts_defaults",
	.yaml = "listen: 127.0.0.1:0\n",
	.check = check_alerts_defaults},
    {.name = "alerts_webhooks",
	.yaml = "alerts:\n"
		"  webhooks:\n"
		"    - { url: \"https://hooks.example.com/tollgate\", "
		"format: json, secret_env: PATH, timeout: 2s }\n"
		"    - url: http://10.0.0.1:9000/services/T0/B0/xyz\n"
		"      format: slack\n"
		"  retry: { max_attempts: 3, initial_backoff: 250ms, "
		"max_backoff: 4s }\n",
	.check = check_alerts_webhooks},
    {.name = "alerts_bad",
	.yaml = "alerts:\n"
		"  webhooks:\n"
		"    - { url: \"ftp://hooks.example.com/x\" }\n"
		"    - { url: \"https://u:p@hooks.example.com/x\" }\n"
		"    - { url: \"https://hooks.example.com/\", format: xml }\n"
		"    - { url: \"https://hooks.example.com/\", "
		"secret_env: TG_TEST_SURELY_UNSET }\n"
		"    - { format: json, colour: red }\n"
		"    - just-a-string\n"
		"  retry: { max_attempts: 0, initial_backoff: 2m, "
		"max_backoff: 1m }\n"
		"  other: 1\n",
	.errors = {"3:14: alerts.webhooks[0].url: only http and https URLs "
		   "are allowed",
	    "4:14: alerts.webhooks[1].url: userinfo (user@) is not allowed",
	    "5:52: alerts.webhooks[2].format: expected json or slack",
	    "6:56: alerts.webhooks[3].secret_env: the environment variable "
	    "TG_TEST_SURELY_UNSET is not set",
	    "7:7: alerts.webhooks[4]: missing required key 'url'",
	    "7:23: unknown key 'colour' in alerts.webhooks[4]",
	    "8:7: alerts.webhooks[5]: expected a mapping with url, and "
	    "format, secret_env or timeout",
	    "9:26: alerts.retry.max_attempts: must be between 1 and 100",
	    "9:46: alerts.retry.initial_backoff: 120000 ms is more than "
	    "max_backoff (60000 ms)",
	    "10:3: unknown key 'other' in alerts"}},
    {.name = "alerts_backoff_cap",
	.yaml = "alerts:\n  retry:\n    max_backoff: 25h\n",
	.errors = {"3:18: alerts.retry.max_backoff: at most 24h"}},

    /* admin: */
    {.name = "admin_v6",
	.yaml = "admin: {listen: \"[::1]:9000\"}\n",
	.check = check_admin_v6},
    {.name = "admin_bad",
	.yaml = "admin:\n  listen: nowhere\n  colour: red\n",
	.errors = {"2:11: admin.listen: expected HOST:PORT, e.g. "
		   "127.0.0.1:8787",
	    "3:3: unknown key 'colour' in admin"}},
    {.name = "admin_off_loopback_without_token",
	.yaml = "admin:\n  listen: 0.0.0.0:8788\n",
	.errors = {"2:11: admin.listen: 0.0.0.0 is not a loopback address, "
		   "so the admin API needs a token (admin.token_env or "
		   "admin.token_file)"}},
    {.name = "admin_same_as_proxy",
	.yaml = "listen: 127.0.0.1:8788\n",
	.errors = {"1:9: admin.listen: 127.0.0.1:8788 is the proxy's listen "
		   "address; the admin API needs its own"}},
    {.name = "admin_token_env_unset",
	.yaml = "admin: {token_env: TG_TEST_UNSET_ADMIN_TOKEN_VAR}\n",
	.errors = {"1:20: admin.token_env: the environment variable "
		   "TG_TEST_UNSET_ADMIN_TOKEN_VAR is not set"}},

    /* Metering: ledger, prices, unknown models, attribution. */
    {.name = "meter_sections_defaults",
	.yaml = "",
	.check = check_meter_defaults},
    {.name = "meter_sections_full",
	.yaml =
	    "ledger: {path: /var/lib/tg/l.db, durability: power, "
	    "queue_max: 64}\n"
	    "unknown_models: {action: unpriced}\n"
	    "attribution:\n"
	    "  defaults: {team: platform, environment: staging}\n"
	    "  require: [agent_class, team]\n"
	    "  headers: [intent, tenant]\n"
	    "  keys:\n"
	    "    - key_sha256: \"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B"
	    "0B822CD15D6C15B0F00A08\"\n"
	    "      tags: {team: support, agent_class: ticket-agent}\n"
	    "    - tollgate_key_sha256: \"6b86b273ff34fce19d6b804eff5a3f5747"
	    "ada4eaa22f1d49c01e52ddb7875b4b\"\n"
	    "upstreams:\n"
	    "  azure:\n"
	    "    type: azure_openai\n"
	    "    base_url: https://r.openai.azure.com\n"
	    "    deployments: {prod4o: gpt-4o, mini: gpt-4o-mini}\n",
	.check = check_meter_full},
    {.name = "meter_bad_values",
	.yaml =
	    "ledger: {durability: sometimes, queue_max: 2}\n"
	    "unknown_models: {action: ignore}\n"
	    "attribution:\n"
	    "  defaults: {squad: a, team: \"two words\"}\n"
	    "  require: [agent_class, owner]\n"
	    "  keys:\n"
	    "    - key_sha256: abc\n"
	    "    - tags: {team: x}\n"
	    "    - key_sha256: \"6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f"
	    "1d49c01e52ddb7875b4b\"\n"
	    "      tollgate_key_sha256: \"6b86b273ff34fce19d6b804eff5a3f5747"
	    "ada4eaa22f1d49c01e52ddb7875b4b\"\n",
	.errors = {"1:22: ledger.durability: unknown durability 'sometimes' "
		   "(expected process or power)",
	    "1:44: ledger.queue_max: must be between 16 and 10000000",
	    "2:26: unknown_models.action: unknown action 'ignore' (expected "
	    "family_max, refuse, price_as or unpriced)",
	    "4:14: attribution.defaults: unknown tag 'squad' (expected intent, "
	    "team, tenant, agent_class or environment)",
	    "4:30: attribution.defaults.team: expected a value of 1 to 128 "
	    "printable characters without spaces, '*' or '?'",
	    "5:26: attribution.require: unknown tag 'owner' (expected intent, "
	    "team, tenant, agent_class or environment)",
	    "7:19: attribution.keys[0].key_sha256: expected 64 hex digits "
	    "(sha256sum of the key)",
	    "8:7: attribution.keys[1]: give exactly one of key_sha256 and "
	    "tollgate_key_sha256",
	    "9:7: attribution.keys[2]: give exactly one of key_sha256 and "
	    "tollgate_key_sha256"}},
    {.name = "meter_duplicate_binding",
	.yaml =
	    "attribution:\n  keys:\n"
	    "    - key_sha256: \"6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f"
	    "1d49c01e52ddb7875b4b\"\n"
	    "    - tollgate_key_sha256: \"6B86B273FF34FCE19D6B804EFF5A3F5747"
	    "ADA4EAA22F1D49C01E52DDB7875B4B\"\n",
	.errors = {"4:7: attribution.keys[1]: the same key is already bound at "
		   "attribution.keys[0]"}},
    {.name = "meter_binding_key_not_a_string",
	.yaml = "attribution:\n  keys:\n    - {? [a]: b, \"x\\ty\": 1}\n",
	.errors = {"3:7: attribution.keys[0]: give exactly one of key_sha256 "
		   "and tollgate_key_sha256",
	    "3:10: attribution.keys[0]: keys must be strings",
	    "3:18: unknown key 'x\\x09y' in attribution.keys[0]"}},
    {.name = "meter_price_as_needs_model",
	.yaml = "unknown_models: {action: price_as}\n",
	.errors = {"1:26: unknown_models: action price_as needs price_as: "
		   "<model>"}},
    {.name = "meter_price_as_without_table",
	.yaml = "unknown_models: {action: price_as, price_as: gpt-4o}\n",
	.errors = {"1:46: unknown_models.price_as: 'gpt-4o' is not in the "
		   "price table"}},
    {.name = "meter_api_key_env_unset",
	.yaml = "upstreams:\n  openai:\n    type: openai\n"
		"    base_url: https://api.openai.com\n"
		"    api_key_env: TG_TEST_SURELY_UNSET\n",
	.errors = {"5:18: upstreams.openai.api_key_env: the environment "
		   "variable TG_TEST_SURELY_UNSET is not set"}},
    {.name = "meter_deployments_not_azure",
	.yaml = "upstreams:\n  openai:\n    type: openai\n"
		"    base_url: https://api.openai.com\n"
		"    deployments: {a: gpt-4o}\n",
	.errors = {"5:5: upstreams.openai: deployments are only for "
		   "azure_openai upstreams"}},
    {.name = "meter_deployments_key_not_string",
	.yaml = "upstreams:\n  az:\n    type: azure_openai\n"
		"    base_url: https://x.openai.azure.com\n"
		"    deployments:\n      ? [a]\n      : gpt-4o\n",
	.errors = {"6:9: upstreams.az.deployments: keys must be strings"}},
    {.name = "meter_tag_key_not_string",
	.yaml = "attribution:\n  defaults:\n    ? [team]\n    : a\n",
	.errors = {"3:7: attribution.defaults: keys must be strings"}},
    {.name = "unknown_key_escaped",
	.yaml = "\"a\\tb\": 1\n",
	.errors = {"1:1: unknown key 'a\\x09b' at top level"}},

    /* Wrong types. */
    {.name = "wrong_type_int",
	.yaml = "limits:\n  max_headers: lots\n",
	.errors = {"2:16: limits.max_headers: expected an integer"}},
    {.name = "wrong_type_quoted_int",
	.yaml = "limits:\n  max_headers: \"100\"\n",
	.errors = {"2:16: limits.max_headers: expected an integer"}},
    {.name = "wrong_type_list_for_int",
	.yaml = "limits:\n  max_connections: [1, 2]\n",
	.errors = {"2:20: limits.max_connections: expected an integer"}},
    {.name = "wrong_type_section",
	.yaml = "limits: 5\nupstreams: [a, b]\n",
	.errors = {"1:9: limits: expected a mapping",
	    "2:12: upstreams: expected a mapping of name: upstream"}},
    {.name = "wrong_type_listen",
	.yaml = "listen: {host: x}\n",
	.errors = {"1:9: listen: expected HOST:PORT"}},
    {.name = "int_range",
	.yaml = "limits:\n  max_headers: 0\n  max_connections: 1000001\n",
	.errors = {"2:16: limits.max_headers: must be between 1 and 10000",
	    "3:20: limits.max_connections: must be between 1 and "
	    "1000000"}},
    {.name = "per_client_range",
	.yaml = "limits:\n  max_connections_per_client: -1\n"
		"  header_timeout: 0s\n",
	.errors = {"2:31: limits.max_connections_per_client: must be "
		   "between 0 and 1000000",
	    "3:19: limits.header_timeout: must be greater than 0"}},
    {.name = "int_overflow",
	.yaml = "limits:\n  max_headers: 99999999999999999999999\n",
	.errors = {"2:16: limits.max_headers: must be between 1 and "
		   "10000"}},

    /* Durations and sizes. */
    {.name = "bad_duration",
	.yaml = "limits:\n"
		"  request_timeout: 1.5s\n"
		"  keepalive_timeout: 5x\n"
		"  drain_timeout: -1\n",
	.errors = {"2:20: limits.request_timeout: expected a duration "
		   "(seconds, or a number with ms, s, m or h)",
	    "3:22: limits.keepalive_timeout: expected a duration "
	    "(seconds, or a number with ms, s, m or h)",
	    "4:18: limits.drain_timeout: expected a duration (seconds, "
	    "or a number with ms, s, m or h)"}},
    {.name = "zero_duration",
	.yaml = "limits:\n  request_timeout: 0ms\nupstreams:\n"
		"  o: {type: openai, base_url: \"https://a.b\", "
		"idle_timeout: 0}\n",
	.errors = {"2:20: limits.request_timeout: must be greater than 0",
	    "4:60: upstreams.o.idle_timeout: must be greater than 0"}},
    {.name = "duration_overflow",
	.yaml = "limits:\n  drain_timeout: 99999999999999999h\n",
	.errors = {"2:18: limits.drain_timeout: duration out of "
		   "range"}},
    {.name = "bad_size",
	.yaml = "limits:\n"
		"  max_body_bytes: 32MB\n"
		"  max_header_bytes: 64 KiB\n"
		"  stream_high_watermark: 256k\n",
	.errors = {"2:19: limits.max_body_bytes: expected a size "
		   "(bytes, or a number with KiB, MiB or GiB)",
	    "3:21: limits.max_header_bytes: expected a size (bytes, or a "
	    "number with KiB, MiB or GiB)",
	    "4:26: limits.stream_high_watermark: expected a size (bytes, "
	    "or a number with KiB, MiB or GiB)"}},
    {.name = "size_minimum",
	.yaml = "limits:\n"
		"  max_body_bytes: 0\n"
		"  max_header_bytes: 1023\n"
		"  stream_high_watermark: 4095\n",
	.errors = {"2:19: limits.max_body_bytes: must be greater than 0",
	    "3:21: limits.max_header_bytes: must be at least 1KiB",
	    "4:26: limits.stream_high_watermark: must be at least 4KiB"}},
    {.name = "size_overflow",
	.yaml = "limits:\n  max_body_bytes: 99999999999999999999GiB\n",
	.errors = {"2:19: limits.max_body_bytes: size out of range"}},

    /* listen. */
    {.name = "bad_port",
	.yaml = "listen: 127.0.0.1:65536\n",
	.errors = {"1:9: listen: bad port '65536' (expected 0-65535)"}},
    {.name = "bad_port_name",
	.yaml = "listen: \"127.0.0.1:http\"\n",
	.errors = {"1:9: listen: bad port 'http' (expected 0-65535)"}},
    {.name = "empty_port",
	.yaml = "listen: \"127.0.0.1:\"\n",
	.errors = {"1:9: listen: bad port '' (expected 0-65535)"}},
    {.name = "listen_no_port",
	.yaml = "listen: 8787\n",
	.errors = {"1:9: listen: expected HOST:PORT, e.g. "
		   "127.0.0.1:8787"}},
    {.name = "listen_hostname",
	.yaml = "listen: example.com:80\n",
	.errors = {"1:9: listen: host 'example.com' is not an IP "
		   "address or localhost"}},
    {.name = "listen_ipv6_unbracketed",
	.yaml = "listen: \"::1:80\"\n",
	.errors = {"1:9: listen: an IPv6 address goes in brackets, e.g. "
		   "\"[::1]:8787\""}},
    {.name = "listen_ipv6_unquoted",
	.yaml = "listen: [::1]:8787\n",
	.errors = {"1:10: did not find expected node content (while "
		   "parsing a flow node at 1:10)"}},

    /* base_url. */
    {.name = "https_only",
	.yaml = "upstreams:\n"
		"  openai:\n"
		"    type: openai\n"
		"    base_url: http://api.openai.com\n",
	.errors = {"4:15: upstreams.openai.base_url: http is only "
		   "allowed for loopback hosts (127.0.0.0/8, ::1, "
		   "localhost); use https"}},
    {.name = "https_only_private_net",
	.yaml = "upstreams:\n"
		"  vllm: {type: openai_compatible, "
		"base_url: \"http://10.0.0.1:8000\"}\n",
	.errors = {"2:45: upstreams.vllm.base_url: http is only allowed "
		   "for loopback hosts (127.0.0.0/8, ::1, localhost); "
		   "use https"}},
    {.name = "userinfo",
	.yaml = "upstreams:\n"
		"  a: {type: openai, base_url: \"https://u:p@x.example\"}\n"
		"  b: {type: openai, base_url: \"https://@x.example\"}\n",
	.errors = {"2:31: upstreams.a.base_url: userinfo (user@) is not "
		   "allowed",
	    "3:31: upstreams.b.base_url: userinfo (user@) is not "
	    "allowed"}},
    {.name = "query_and_fragment",
	.yaml = "upstreams:\n"
		"  a: {type: openai, base_url: \"https://x.example/?k=1\"}\n"
		"  b: {type: openai, base_url: \"https://x.example#top\"}\n"
		"  c: {type: openai, base_url: \"https://x.example?\"}\n",
	.errors = {"2:31: upstreams.a.base_url: a query (?...) is not "
		   "allowed",
	    "3:31: upstreams.b.base_url: a fragment (#...) is not "
	    "allowed",
	    "4:31: upstreams.c.base_url: a query (?...) is not "
	    "allowed"}},
    {.name = "bad_scheme",
	.yaml = "upstreams:\n"
		"  a: {type: openai, base_url: \"ftp://x.example\"}\n"
		"  b: {type: openai, base_url: \"file:///etc/passwd\"}\n"
		"  c: {type: openai, base_url: \"x.example\"}\n",
	.errors = {"2:31: upstreams.a.base_url: scheme 'ftp' is not "
		   "allowed (use https)",
	    "3:31: upstreams.b.base_url: scheme 'file' is not allowed "
	    "(use https)",
	    "4:31: upstreams.c.base_url: bad URL: Bad "
	    "scheme"}},
    {.name = "missing_host",
	.yaml = "upstreams:\n  a: {type: openai, base_url: \"https://\"}\n",
	.errors = {"2:31: upstreams.a.base_url: bad URL: No "
		   "host part in the URL"}},

    /* Upstream entries. */
    {.name = "missing_type",
	.yaml = "upstreams:\n  openai:\n    base_url: https://a.example\n",
	.errors = {"2:3: upstreams.openai: missing required key "
		   "'type'"}},
    {.name = "missing_base_url",
	.yaml = "upstreams:\n  openai:\n    type: openai\n",
	.errors = {"2:3: upstreams.openai: missing required key "
		   "'base_url'"}},
    {.name = "bad_type",
	.yaml = "upstreams:\n"
		"  openai:\n"
		"    type: mistral\n"
		"    base_url: https://a.example\n",
	.errors = {"3:11: upstreams.openai.type: unknown type 'mistral' "
		   "(expected openai, anthropic, gemini, azure_openai or "
		   "openai_compatible)"}},
    {.name = "reserved_name",
	.yaml = "upstreams:\n"
		"  v1: {type: openai, base_url: \"https://a.example\"}\n"
		"  v1beta: {type: gemini, base_url: \"https://b.example\"}\n",
	.errors = {"2:3: upstreams: the name 'v1' is reserved (it would "
		   "collide with the /v1/ routes)",
	    "3:3: upstreams: the name 'v1beta' is reserved (it would "
	    "collide with the /v1beta/ routes)"}},
    {.name = "bad_name",
	.yaml = "upstreams:\n"
		"  OpenAI: {type: openai, base_url: \"https://a.example\"}\n"
		"  -x: {type: openai, base_url: \"https://a.example\"}\n"
		"  "
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaa: {type: openai, base_url: \"https://a.example\"}\n"
		"  "
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaa: {type: openai, base_url: \"https://a.example\"}\n",
	.errors = {"2:3: upstreams: bad upstream name 'OpenAI' (use "
		   "[a-z0-9][a-z0-9_-]*, at most 64 characters)",
	    "3:3: upstreams: bad upstream name '-x' (use "
	    "[a-z0-9][a-z0-9_-]*, at most 64 characters)",
	    "4:3: upstreams: bad upstream name "
	    "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaa' (use [a-z0-9][a-z0-9_-]*, at most 64 characters)"}},
    {.name = "upstream_not_mapping",
	.yaml = "upstreams:\n  openai: https://api.openai.com\n  gemini:\n",
	.errors = {"2:11: upstreams.openai: expected a mapping",
	    "3:10: upstreams.gemini: expected a mapping"}},
    {.name = "missing_ca_file",
	.yaml = "upstreams:\n"
		"  a:\n"
		"    type: openai\n"
		"    base_url: https://a.example\n"
		"    ca_file: certs/ca.pem\n"
		"  b:\n"
		"    type: openai\n"
		"    base_url: https://b.example\n"
		"    ca_file: /nonexistent/tollgate/ca.pem\n",
	.errors = {"5:14: upstreams.a.ca_file: cannot read "
		   "'@DIR@/certs/ca.pem': No such file or directory",
	    "9:14: upstreams.b.ca_file: cannot read "
	    "'/nonexistent/tollgate/ca.pem': No such file or "
	    "directory"}},
    {.name = "ca_file_directory",
	.yaml = "upstreams:\n"
		"  a: {type: openai, base_url: \"https://a.example\", "
		"ca_file: .}\n",
	.errors = {"2:61: upstreams.a.ca_file: '@DIR@/.' is not a "
		   "regular file"}},

    /* Pure data: no anchors, aliases, tags or second documents. */
    {.name = "alias_rejected",
	.yaml = "upstreams:\n"
		"  openai: &o\n"
		"    type: openai\n"
		"    base_url: https://api.openai.com\n"
		"  second: *o\n",
	.errors = {"2:11: YAML anchors are not allowed (the config is "
		   "plain data)",
	    "5:11: YAML aliases are not allowed (the config is plain "
	    "data)"}},
    {.name = "merge_key_rejected",
	.yaml = "limits: &l {max_headers: 5}\n"
		"upstreams:\n  a:\n    <<: *l\n",
	.errors = {"1:9: YAML anchors are not allowed (the config is "
		   "plain data)",
	    "3:3: upstreams.a: missing required key 'type'",
	    "3:3: upstreams.a: missing required key 'base_url'",
	    "4:5: unknown key '<<' in upstreams.a",
	    "4:9: YAML aliases are not allowed (the config is plain "
	    "data)"}},
    {.name = "tag_rejected",
	.yaml = "limits:\n  max_headers: !!int 5\n",
	.errors = {"2:16: YAML tags are not allowed (the config is plain "
		   "data)"}},
    {.name = "multiple_documents",
	.yaml = "listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n",
	.errors = {"2:1: more than one YAML document"}},
    {.name = "top_level_list",
	.yaml = "- listen\n- limits\n",
	.errors = {"1:1: the top level must be a mapping"}},
    {.name = "top_level_scalar",
	.yaml = "hello\n",
	.errors = {"1:1: the top level must be a mapping"}},

    /* YAML syntax. */
    {.name = "syntax_indent",
	.yaml = "limits:\n  max_headers: 1\n max_connections: 2\n",
	.errors = {"3:2: did not find expected key (while parsing a "
		   "block mapping at 1:1)"}},
    {.name = "syntax_tab",
	.yaml = "listen: 127.0.0.1:1\nlimits:\n\tmax_headers: 1\n",
	.errors = {"3:1: found character that cannot start any token "
		   "(while scanning for the next token at 3:1)"}},
    {.name = "syntax_unclosed_quote",
	.yaml = "listen: \"127.0.0.1:1\nlimits: {}\n",
	.errors = {"3:1: found unexpected end of stream (while scanning "
		   "a quoted scalar at 1:9)"}},
    {.name = "too_deep",
	.yaml = "x: " TEN_BRACKETS TEN_BRACKETS TEN_BRACKETS TEN_BRACKETS
	    TEN_BRACKETS TEN_BRACKETS TEN_BRACKETS "\n",
	.errors = {"1:67: nesting deeper than 64 levels"}},
    {.name = "syntax_bad_utf8",
	.yaml = "listen: \"\xff\"\n",
	.errors = {"1:10: invalid leading UTF-8 octet (byte 0xff)"}},

    /* Duplicates. */
    {.name = "duplicate_key_top",
	.yaml = "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n",
	.errors = {"2:1: duplicate key 'listen' at top level (first at "
		   "line 1)"}},
    {.name = "duplicate_key_nested",
	.yaml = "limits:\n  max_headers: 1\n  max_headers: 2\n",
	.errors = {"3:3: duplicate key 'max_headers' in limits (first "
		   "at line 2)"}},
    {.name = "duplicate_upstream",
	.yaml = "upstreams:\n"
		"  a: {type: openai, base_url: \"https://a.example\"}\n"
		"  a: {type: openai, base_url: \"https://b.example\"}\n",
	.errors = {"3:3: duplicate key 'a' in upstreams (first at line "
		   "2)"}},
    {.name = "duplicate_upstream_field",
	.yaml = "upstreams:\n"
		"  a: {type: openai, type: gemini, "
		"base_url: \"https://a.example\"}\n",
	.errors = {"2:21: duplicate key 'type' in upstreams.a (first at "
		   "line 2)"}},

    /* Every error is reported, not just the first. */
    {.name = "several_errors",
	.yaml = "listen: 127.0.0.1:99999\n"
		"limits:\n"
		"  max_headers: many\n"
		"  request_timeout: 10y\n"
		"  colour: blue\n"
		"upstreams:\n"
		"  openai:\n"
		"    type: openai\n"
		"    base_url: http://api.openai.com\n"
		"  anthropic:\n"
		"    base_url: https://api.anthropic.com\n"
		"  v1:\n"
		"    type: gemini\n"
		"    base_url: ftp://x.example\n"
		"alerts: {colour: x}\n",
	.errors = {"1:9: listen: bad port '99999' (expected 0-65535)",
	    "3:16: limits.max_headers: expected an integer",
	    "4:20: limits.request_timeout: expected a duration (seconds, "
	    "or a number with ms, s, m or h)",
	    "5:3: unknown key 'colour' in limits",
	    "9:15: upstreams.openai.base_url: http is only allowed for "
	    "loopback hosts (127.0.0.0/8, ::1, localhost); use https",
	    "10:3: upstreams.anthropic: missing required key 'type'",
	    "12:3: upstreams: the name 'v1' is reserved (it would collide "
	    "with the /v1/ routes)",
	    "14:15: upstreams.v1.base_url: scheme 'ftp' is not allowed "
	    "(use https)",
	    "15:10: unknown key 'colour' in alerts"}},
};

/* Replace every @DIR@ in s with dir. */
static char *
expand(const char *s, const char *dir)
{
	const char *at;
	char *out, *tmp;

	out = xstrdup("");
	while ((at = strstr(s, "@DIR@")) != NULL) {
		xasprintf(&tmp, "%s%.*s%s", out, (int)(at - s), s, dir);
		free(out);
		out = tmp;
		s = at + 5;
	}
	xasprintf(&tmp, "%s%s", out, s);
	free(out);
	return (tmp);
}

static void
run_case(void **state)
{
	const struct cfgcase *tc = *state;
	struct cfgerrs errs = {0};
	struct config *cf;
	char dir[] = "/tmp/tg-test-config.XXXXXX";
	char *path, *extra = NULL, *want;
	size_t i, nwant = 0;
	int same;

	assert_non_null(mkdtemp(dir));
	xasprintf(&path, "%s/tollgate.yaml", dir);
	write_file(path, tc->yaml);
	if (tc->file != NULL) {
		xasprintf(&extra, "%s/%s", dir, tc->file);
		write_file(extra, "");
	}

	cf = config_load(path, &errs);

	while (nwant < MAX_ERRORS && tc->errors[nwant] != NULL)
		nwant++;
	same = errs.ce_n == nwant;
	for (i = 0; same && i < nwant; i++) {
		want = expand(tc->errors[i], dir);
		same = strncmp(errs.ce_msgs[i], path, strlen(path)) == 0 &&
		    errs.ce_msgs[i][strlen(path)] == ':' &&
		    strcmp(errs.ce_msgs[i] + strlen(path) + 1, want) == 0;
		free(want);
	}
	if (!same) {
		for (i = 0; i < nwant; i++)
			print_error("want: %s:%s\n", path, tc->errors[i]);
		for (i = 0; i < errs.ce_n; i++)
			print_error("got:  %s\n", errs.ce_msgs[i]);
	}
	cfgerrs_free(&errs);

	if (nwant == 0) {
		assert_non_null(cf);
		assert_string_equal(cf->cf_path, path);
		if (tc->check != NULL)
			tc->check(cf, dir);
	} else
		assert_null(cf);
	assert_true(same);

	config_unref(cf);
	if (extra != NULL) {
		unlink(extra);
		free(extra);
	}
	unlink(path);
	free(path);
	rmdir(dir);
}

/*
 * A prices: file that cannot be read fails the load, naming that file, at
 * the prices: line.
 */
static void
test_missing_prices_file(void **state)
{
	struct cfgerrs errs = {0};
	char dir[] = "/tmp/tg-test-config.XXXXXX";
	char *path, *want;

	(void)state;
	assert_non_null(mkdtemp(dir));
	xasprintf(&path, "%s/tollgate.yaml", dir);
	xasprintf(&want,
	    "%s/tollgate.yaml:2:9: prices: cannot read '%s/nowhere.yaml': No "
	    "such file or directory",
	    dir, dir);
	write_file(path, "# the price table\nprices: nowhere.yaml\n");
	assert_null(config_load(path, &errs));
	assert_int_equal(errs.ce_n, 1);
	assert_string_equal(errs.ce_msgs[0], want);
	cfgerrs_free(&errs);
	unlink(path);
	rmdir(dir);
	free(path);
	free(want);
}

/* The shipped, annotated config must load as it is. */
static void
test_shipped_config(void **state)
{
	struct cfgerrs errs = {0};
	const struct upstream_conf *uc;
	struct config *cf;
	size_t i;

	(void)state;
	cf = config_load(TG_SOURCE_DIR "/config/tollgate.yaml", &errs);
	for (i = 0; i < errs.ce_n; i++)
		print_error("%s\n", errs.ce_msgs[i]);
	assert_int_equal(errs.ce_n, 0);
	assert_non_null(cf);
	assert_string_equal(cf->cf_listen_host, "127.0.0.1");
	assert_int_equal(cf->cf_listen_port, 8787);

	uc = config_find_upstream(cf, "openai", 6);
	assert_non_null(uc);
	assert_int_equal(uc->uc_type, UPSTREAM_OPENAI);
	assert_string_equal(uc->uc_base_url, "https://api.openai.com");
	uc = config_find_upstream(cf, "anthropic", 9);
	assert_non_null(uc);
	assert_int_equal(uc->uc_type, UPSTREAM_ANTHROPIC);
	assert_string_equal(uc->uc_base_url, "https://api.anthropic.com");
	uc = config_find_upstream(cf, "gemini", 6);
	assert_non_null(uc);
	assert_int_equal(uc->uc_type, UPSTREAM_GEMINI);
	assert_string_equal(
	    uc->uc_base_url, "https://generativelanguage.googleapis.com");
	config_unref(cf);
}

static void
test_missing_file(void **state)
{
	struct cfgerrs errs = {0};

	(void)state;
	assert_null(config_load("/nonexistent/tollgate.yaml", &errs));
	assert_int_equal(errs.ce_n, 1);
	assert_string_equal(errs.ce_msgs[0],
	    "/nonexistent/tollgate.yaml: No such file or directory");
	cfgerrs_free(&errs);
	assert_null(errs.ce_msgs);
	assert_int_equal(errs.ce_n, 0);
	/* No errs to fill in is allowed too. */
	assert_null(config_load("/nonexistent/tollgate.yaml", NULL));
}

/* Errors are appended, so two loads can share one list. */
static void
test_errors_append(void **state)
{
	struct cfgerrs errs = {0};

	(void)state;
	assert_null(config_load("/nonexistent/a.yaml", &errs));
	assert_null(config_load("/nonexistent/b.yaml", &errs));
	assert_int_equal(errs.ce_n, 2);
	assert_string_equal(
	    errs.ce_msgs[1], "/nonexistent/b.yaml: No such file or directory");
	cfgerrs_free(&errs);
	cfgerrs_free(&errs);
}

static struct config *
load_text(const char *text, char *dir, char **pathp)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	size_t i;

	assert_non_null(mkdtemp(dir));
	xasprintf(pathp, "%s/tollgate.yaml", dir);
	write_file(*pathp, text);
	cf = config_load(*pathp, &errs);
	for (i = 0; i < errs.ce_n; i++)
		print_error("%s\n", errs.ce_msgs[i]);
	cfgerrs_free(&errs);
	assert_non_null(cf);
	return (cf);
}

static void
unload_text(char *dir, char *path)
{
	unlink(path);
	free(path);
	rmdir(dir);
}

static void
test_find_upstream(void **state)
{
	char dir[] = "/tmp/tg-test-config.XXXXXX", *path;
	const char *route = "/local/v1/chat/completions";
	struct config *cf;

	(void)state;
	cf = load_text("upstreams:\n"
		       "  openai: {type: openai, base_url: "
		       "\"https://api.openai.com\"}\n"
		       "  local: {type: openai_compatible, base_url: "
		       "\"http://127.0.0.1:11434\"}\n"
		       "  loc: {type: openai_compatible, base_url: "
		       "\"http://127.0.0.1:11435\"}\n",
	    dir, &path);
	/* The name is not NUL-terminated: it is a slice of the path. */
	assert_ptr_equal(
	    config_find_upstream(cf, route + 1, 5), &cf->cf_upstreams[1]);
	assert_ptr_equal(
	    config_find_upstream(cf, route + 1, 3), &cf->cf_upstreams[2]);
	assert_null(config_find_upstream(cf, route + 1, 4));
	assert_null(config_find_upstream(cf, route + 1, 0));
	assert_null(config_find_upstream(cf, "OPENAI", 6));
	assert_ptr_equal(
	    config_find_upstream(cf, "openai", 6), &cf->cf_upstreams[0]);
	config_unref(cf);
	unload_text(dir, path);
}

/*
 * A reload refuses what a half-written file looks like: no upstreams, or
 * a top-level key the running file has gone missing or left empty.
 */
static void
test_check_reload(void **state)
{
	static const struct {
		const char *next;
		const char *want[3]; /* substrings of the errors, in order */
	} reloads[] = {
	    {"listen: 127.0.0.1:1\n"
	     "upstreams: {o: {type: openai, base_url: \"https://x.example\"}}\n"
	     "policies: []\n",
		{NULL}},
	    {"",
		{"no upstreams", "listen: is missing", "policies: is missing"}},
	    {"listen: 127.0.0.1:1\nupstreams: {}\npolicies: []\n",
		{"no upstreams"}},
	    {"upstreams: {o: {type: openai, base_url: \"https://x.example\"}}\n"
	     "policies: []\n",
		{"listen: is missing"}},
	    {"listen: 127.0.0.1:1\n"
	     "upstreams: {o: {type: openai, base_url: \"https://x.example\"}}\n"
	     "policies:\n",
		{"policies: is missing or empty"}},
	};
	char dir[] = "/tmp/tg-test-config.XXXXXX", *path;
	char dir2[sizeof(dir)], *path2;
	struct cfgerrs errs = {0};
	struct config *run, *cf;
	size_t i, k;

	(void)state;
	run =
	    load_text("listen: 127.0.0.1:1\n"
		      "upstreams: {o: {type: openai, base_url: "
		      "\"https://x.example\"}}\n"
		      "policies: [{name: p, match: {team: t}, killed: true}]\n",
		dir, &path);
	for (i = 0; i < nitems(reloads); i++) {
		memcpy(dir2, dir, sizeof(dir2));
		memcpy(dir2 + sizeof(dir2) - 7, "XXXXXX", 6);
		cf = load_text(reloads[i].next, dir2, &path2);
		assert_int_equal(config_check_reload(run, cf, &errs),
		    reloads[i].want[0] == NULL ? 0 : -1);
		for (k = 0; k < nitems(reloads[i].want) && reloads[i].want[k];
		     k++)
			if (k >= errs.ce_n ||
			    strstr(errs.ce_msgs[k], reloads[i].want[k]) == NULL)
				fail_msg(
				    "case %zu: error %zu is '%s', want '%s'", i,
				    k, k < errs.ce_n ? errs.ce_msgs[k] : "",
				    reloads[i].want[k]);
		assert_int_equal(errs.ce_n, k);
		cfgerrs_free(&errs);
		config_unref(cf);
		unload_text(dir2, path2);
	}
	config_unref(run);
	unload_text(dir, path);
}

static void
test_type_names(void **state)
{
	(void)state;
	assert_string_equal(
	    config_upstream_type_name(UPSTREAM_OPENAI), "openai");
	assert_string_equal(
	    config_upstream_type_name(UPSTREAM_ANTHROPIC), "anthropic");
	assert_string_equal(
	    config_upstream_type_name(UPSTREAM_GEMINI), "gemini");
	assert_string_equal(
	    config_upstream_type_name(UPSTREAM_AZURE_OPENAI), "azure_openai");
	assert_string_equal(
	    config_upstream_type_name(UPSTREAM_OPENAI_COMPATIBLE),
	    "openai_compatible");
}

/* The config lives until its last reference is dropped (ASan checks). */
static void
test_refcount(void **state)
{
	char dir[] = "/tmp/tg-test-config.XXXXXX", *path;
	struct config *cf;

	(void)state;
	cf = load_text("upstreams:\n  gemini: {type: gemini, base_url: "
		       "\"https://generativelanguage.googleapis.com\"}\n",
	    dir, &path);
	assert_int_equal(cf->cf_refs, 1);
	assert_ptr_equal(config_ref(cf), cf);
	assert_int_equal(cf->cf_refs, 2);
	config_unref(cf);
	assert_int_equal(cf->cf_refs, 1);
	assert_string_equal(cf->cf_upstreams[0].uc_name, "gemini");
	config_unref(cf);
	config_unref(NULL);
	unload_text(dir, path);
}

int
main(void)
{
	static struct CMUnitTest tests[nitems(cases) + 8];
	size_t i, n = 0;

	for (i = 0; i < nitems(cases); i++) {
		tests[n].name = cases[i].name;
		tests[n].test_func = run_case;
		tests[n].initial_state = (void *)(uintptr_t)&cases[i];
		n++;
	}
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_shipped_config);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_missing_file);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_errors_append);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_find_upstream);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_type_names);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_check_reload);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_refcount);
	tests[n++] =
	    (struct CMUnitTest)cmocka_unit_test(test_missing_prices_file);
	return (cmocka_run_group_tests_name("config", tests, NULL, NULL));
}
