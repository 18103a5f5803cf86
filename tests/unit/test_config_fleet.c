/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the fleet: section (src/config/cfgfleet.c): a table of
 * named URL cases, each a fleet.redis value that loads into the listed
 * host, port, socket path and database or fails with the listed message
 * at 2:10; then the defaults, exact lease_usd, the password taken from its
 * variable, the default instance name, and config_fleet_changed naming
 * every key that differs. Freeing every loaded config lets ASan see a leak
 * in any path of the section.
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
#include "tollgate/util.h"

#include "cfgfile.h"

struct urlcase {
	const char *name;
	const char *url;
	const char *host; /* NULL: a unix socket */
	int port;
	const char *path; /* NULL: TCP */
	int db;
	const char *error; /* the message after "FILE:2:10: ", or NULL */
};

static const struct urlcase url_cases[] = {
    {"host only", "redis://cache", "cache", 6379, NULL, 0, NULL},
    {"host and port", "redis://10.0.0.5:6380", "10.0.0.5", 6380, NULL, 0, NULL},
    {"host port db", "redis://10.0.0.5:6379/15", "10.0.0.5", 6379, NULL, 15,
	NULL},
    {"trailing slash", "redis://cache:1/", "cache", 1, NULL, 0, NULL},
    {"db 9999", "redis://cache/9999", "cache", 6379, NULL, 9999, NULL},
    {"IPv6", "redis://[::1]:7000/3", "::1", 7000, NULL, 3, NULL},
    {"IPv6 no port", "redis://[fe80::1]", "fe80::1", 6379, NULL, 0, NULL},
    {"scheme in capitals", "Redis://cache", "cache", 6379, NULL, 0, NULL},
    {"unix", "unix:///run/redis.sock", NULL, 6379, "/run/redis.sock", 0, NULL},
    {"unix db", "unix:///run/redis.sock?db=4", NULL, 6379, "/run/redis.sock", 4,
	NULL},
    {"rediss", "rediss://cache", NULL, 0, NULL, 0,
	"fleet.redis: rediss:// (Redis over TLS) is not supported by this "
	"build; use redis:// or unix://"},
    {"https", "https://cache", NULL, 0, NULL, 0,
	"fleet.redis: scheme 'https' is not supported (use redis:// or "
	"unix://)"},
    {"password", "redis://:s3cret@cache", NULL, 0, NULL, 0,
	"fleet.redis: a user or password in the URL is not allowed; put the "
	"password in an environment variable and name it in password_env"},
    {"user", "redis://bob@cache", NULL, 0, NULL, 0,
	"fleet.redis: a user or password in the URL is not allowed; put the "
	"password in an environment variable and name it in password_env"},
    {"port 0", "redis://cache:0", NULL, 0, NULL, 0,
	"fleet.redis: bad port '0' (expected 1-65535)"},
    {"port 65536", "redis://cache:65536", NULL, 0, NULL, 0,
	"fleet.redis: bad port '65536' (expected 1-65535)"},
    {"port sign", "redis://cache:+1", NULL, 0, NULL, 0,
	"fleet.redis: bad port '+1' (expected 1-65535)"},
    {"db 10000", "redis://cache/10000", NULL, 0, NULL, 0,
	"fleet.redis: bad database '10000' (expected a number, 0-9999)"},
    {"db negative", "redis://cache/-1", NULL, 0, NULL, 0,
	"fleet.redis: bad database '-1' (expected a number, 0-9999)"},
    {"no host", "redis://:6379", NULL, 0, NULL, 0,
	"fleet.redis: the host is missing: redis://HOST:PORT/DB"},
    {"IPv6 unclosed", "redis://[::1:6379", NULL, 0, NULL, 0,
	"fleet.redis: an IPv6 address needs its closing ']': "
	"redis://[::1]:6379"},
    {"IPv6 junk after", "redis://[::1]x", NULL, 0, NULL, 0,
	"fleet.redis: expected ':PORT' after the IPv6 address"},
    {"relative unix", "unix://redis.sock", NULL, 0, NULL, 0,
	"fleet.redis: the socket path must be absolute, after three slashes: "
	"unix:///run/redis.sock"},
    {"unix percent", "unix:///run/a%20b.sock", NULL, 0, NULL, 0,
	"fleet.redis: %-escapes are not supported in the socket path; write "
	"it as it is"},
    {"unix empty db", "unix:///r.sock?db=", NULL, 0, NULL, 0,
	"fleet.redis: bad database '' (expected a number, 0-9999)"},
    {"unix two params", "unix:///r.sock?db=1&x=2", NULL, 0, NULL, 0,
	"fleet.redis: the only query parameter allowed is db=N"},
};

static void
run_url_case(void **state)
{
	const struct urlcase *tc = *state;
	struct cfgerrs errs = {0};
	struct config *cf;
	char *text, *path, *want;

	xasprintf(&text, "fleet:\n  redis: \"%s\"\n", tc->url);
	cf = cfgfile_load(text, &errs, &path);
	if (tc->error != NULL) {
		assert_null(cf);
		assert_int_equal(errs.ce_n, 1);
		xasprintf(&want, "%s:2:10: %s", path, tc->error);
		assert_string_equal(errs.ce_msgs[0], want);
		/* The password is never repeated. */
		assert_null(strstr(errs.ce_msgs[0], "s3cret"));
		free(want);
	} else {
		assert_non_null(cf);
		assert_non_null(cf->cf_fleet);
		assert_string_equal(cf->cf_fleet->fc_url, tc->url);
		if (tc->host == NULL)
			assert_null(cf->cf_fleet->fc_host);
		else
			assert_string_equal(cf->cf_fleet->fc_host, tc->host);
		assert_int_equal(cf->cf_fleet->fc_port, tc->port);
		if (tc->path == NULL)
			assert_null(cf->cf_fleet->fc_path);
		else
			assert_string_equal(cf->cf_fleet->fc_path, tc->path);
		assert_int_equal(cf->cf_fleet->fc_db, tc->db);
	}
	config_unref(cf);
	cfgerrs_free(&errs);
	free(path);
	free(text);
}

static void
test_defaults(void **state)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	const struct fleet_conf *fc;
	char *path, host[256], *want;

	(void)state;
	cf = cfgfile_load("listen: 127.0.0.1:9001\n"
			  "fleet: { redis: redis://127.0.0.1:6379 }\n",
	    &errs, &path);
	assert_non_null(cf);
	fc = cf->cf_fleet;
	assert_non_null(fc);
	assert_null(fc->fc_password);
	assert_null(fc->fc_password_env);
	assert_string_equal(fc->fc_prefix, "tollgate:");
	assert_int_equal(fc->fc_lease_nusd, 1000000000LL);
	assert_int_equal(fc->fc_lease_ttl_ms, 30000);
	assert_int_equal(fc->fc_wait_ms, 1000);
	assert_int_equal(fc->fc_connect_timeout_ms, 1000);
	assert_int_equal(fc->fc_command_timeout_ms, 500);
	assert_int_equal(fc->fc_when_down, FLEET_DOWN_LOCAL);
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	xasprintf(&want, "%s:9001", host);
	assert_string_equal(fc->fc_instance, want);
	free(want);
	config_unref(cf);
	free(path);

	/* No fleet:, or an empty one: off. */
	cf = cfgfile_load("listen: 127.0.0.1:0\n", &errs, &path);
	assert_null(cf->cf_fleet);
	config_unref(cf);
	free(path);
	cf = cfgfile_load("fleet:\n", &errs, &path);
	assert_null(cf->cf_fleet);
	config_unref(cf);
	free(path);
	assert_int_equal(errs.ce_n, 0);
	cfgerrs_free(&errs);
}

static void
test_values(void **state)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	const struct fleet_conf *fc;
	char *path;

	(void)state;
	setenv("TG_UNIT_REDIS_PW", "pw-value", 1);
	cf = cfgfile_load("fleet:\n"
			  "  redis: unix:///run/redis.sock?db=2\n"
			  "  password_env: TG_UNIT_REDIS_PW\n"
			  "  instance: pod-7.eu:1\n"
			  "  key_prefix: \"tg{a}:\"\n"
			  "  lease_usd: 0.25\n"
			  "  lease_ttl: 10m\n"
			  "  wait: 0\n"
			  "  connect_timeout: 10ms\n"
			  "  command_timeout: 60s\n"
			  "  when_down: refuse\n",
	    &errs, &path);
	unsetenv("TG_UNIT_REDIS_PW");
	assert_int_equal(errs.ce_n, 0);
	assert_non_null(cf);
	fc = cf->cf_fleet;
	assert_string_equal(fc->fc_password, "pw-value");
	assert_string_equal(fc->fc_password_env, "TG_UNIT_REDIS_PW");
	assert_string_equal(fc->fc_instance, "pod-7.eu:1");
	assert_string_equal(fc->fc_prefix, "tg{a}:");
	assert_int_equal(fc->fc_lease_nusd, 250000000LL);
	assert_int_equal(fc->fc_lease_ttl_ms, 600000);
	assert_int_equal(fc->fc_wait_ms, 0);
	assert_int_equal(fc->fc_connect_timeout_ms, 10);
	assert_int_equal(fc->fc_command_timeout_ms, 60000);
	assert_int_equal(fc->fc_when_down, FLEET_DOWN_REFUSE);
	assert_int_equal(fc->fc_db, 2);
	config_unref(cf);
	free(path);
	cfgerrs_free(&errs);
}

/* A second load of the same text, so every field differs in one place. */
static void
test_changed(void **state)
{
	static const struct {
		const char *line;
		const char *key;
	} changes[] = {
	    {"  redis: redis://cache:6380\n", "redis"},
	    {"  password_env: TG_UNIT_REDIS_PW2\n", "password_env"},
	    {"  instance: other\n", "instance"},
	    {"  key_prefix: \"x:\"\n", "key_prefix"},
	    {"  lease_usd: 1.000000001\n", "lease_usd"},
	    {"  lease_ttl: 31s\n", "lease_ttl"},
	    {"  wait: 2s\n", "wait"},
	    {"  connect_timeout: 2s\n", "connect_timeout"},
	    {"  command_timeout: 1s\n", "command_timeout"},
	    {"  when_down: refuse\n", "when_down"},
	};
	const char *base = "fleet:\n  redis: redis://cache\n",
		   *head = "fleet:\n";
	struct cfgerrs errs = {0};
	struct config *a, *b;
	char *path, *text;
	size_t i;

	(void)state;
	setenv("TG_UNIT_REDIS_PW2", "pw2", 1);
	a = cfgfile_load(base, &errs, &path);
	free(path);
	assert_non_null(a);
	b = cfgfile_load(base, &errs, &path);
	free(path);
	assert_null(config_fleet_changed(a->cf_fleet, b->cf_fleet));
	assert_null(config_fleet_changed(NULL, NULL));
	assert_string_equal(config_fleet_changed(NULL, b->cf_fleet), "fleet");
	assert_string_equal(config_fleet_changed(a->cf_fleet, NULL), "fleet");
	config_unref(b);
	for (i = 0; i < nitems(changes); i++) {
		/* redis: is required, so it is replaced, not added. */
		xasprintf(&text, "%s%s",
		    strcmp(changes[i].key, "redis") == 0 ? head : base,
		    changes[i].line);
		b = cfgfile_load(text, &errs, &path);
		assert_non_null(b);
		assert_string_equal(
		    config_fleet_changed(a->cf_fleet, b->cf_fleet),
		    changes[i].key);
		config_unref(b);
		free(path);
		free(text);
	}
	/* The same variable with another value: the password changed. */
	setenv("TG_UNIT_REDIS_PW2", "pw2", 1);
	xasprintf(&text, "%s  password_env: TG_UNIT_REDIS_PW2\n", base);
	config_unref(a);
	a = cfgfile_load(text, &errs, &path);
	free(path);
	setenv("TG_UNIT_REDIS_PW2", "pw3", 1);
	b = cfgfile_load(text, &errs, &path);
	free(path);
	assert_string_equal(
	    config_fleet_changed(a->cf_fleet, b->cf_fleet), "password_env");
	unsetenv("TG_UNIT_REDIS_PW2");
	config_unref(a);
	config_unref(b);
	free(text);
	assert_int_equal(errs.ce_n, 0);
	cfgerrs_free(&errs);
}

int
main(void)
{
	static struct CMUnitTest tests[nitems(url_cases) + 3];
	size_t i, n = 0;

	for (i = 0; i < nitems(url_cases); i++) {
		tests[n].name = url_cases[i].name;
		tests[n].test_func = run_url_case;
		tests[n].initial_state = (void *)(uintptr_t)&url_cases[i];
		n++;
	}
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_defaults);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_values);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_changed);
	return (cmocka_run_group_tests_name("config_fleet", tests, NULL, NULL));
}
