/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the ledger.ship: section (src/config/cfgship.c): a table
 * of named connection strings, each loading as written or failing with
 * the listed message at 3:15 and never repeating the password or the
 * client key's passphrase (sslpassword, refused like it); then the
 * password taken from its variable, the summary tollgate check prints,
 * and config_ship_changed naming every key that differs; the shipper's
 * keys (instance, batch, interval) with their defaults and bounds, and
 * ledger.keep_local with the floor the policies' windows put under it.
 * Freeing every
 * loaded config lets ASan see a leak in any path of the section.
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

#define PW "s3cret-pw"
#define NO_PW                                                                  \
	"ledger.ship.postgres: a password in the connection string is not "    \
	"allowed; put it in an environment variable and name it in "           \
	"password_env"

#define NO_SSLPW                                                               \
	"ledger.ship.postgres: sslpassword in the connection string is not "   \
	"allowed: it is a secret, and the string is printed by tollgate "      \
	"check; use a client key (sslkey) without a passphrase, readable "     \
	"only by tollgate's user"

struct shipcase {
	const char *name;
	const char *postgres;
	const char *error; /* the message after "FILE:3:15: ", or NULL */
};

static const struct shipcase ship_cases[] = {
    {"uri", "postgresql://tollgate@10.0.0.6:5432/tollgate", NULL},
    {"short scheme", "postgres://db.internal/fleet", NULL},
    {"two hosts", "postgresql://h1:5432,h2:5433/fleet?sslmode=require", NULL},
    {"keywords", "host=10.0.0.6 port=5432 user=tollgate dbname=t", NULL},
    {"password in uri", "postgresql://tollgate:" PW "@10.0.0.6/t", NO_PW},
    {"empty password in uri", "postgresql://tollgate:@10.0.0.6/t", NO_PW},
    {"password in query", "postgresql://10.0.0.6/t?password=" PW, NO_PW},
    {"escaped password key", "postgresql://10.0.0.6/t?%70assword=" PW, NO_PW},
    {"password keyword", "host=h password=" PW, NO_PW},
    {"password quoted", "host=h password='" PW " x'", NO_PW},
    {"malformed with password", "postgresql://[::1/t?password=" PW,
	"ledger.ship.postgres: not a valid PostgreSQL connection string "
	"(expected postgresql://USER@HOST:PORT/DB or host=HOST port=PORT "
	"user=USER dbname=DB)"},
    {"unknown keyword", "host=h bogus=1",
	"ledger.ship.postgres: not a valid PostgreSQL connection string: "
	"invalid connection option \"bogus\""},
    {"bare word", "tollgate",
	"ledger.ship.postgres: not a valid PostgreSQL connection string: "
	"missing \"=\" after \"tollgate\" in connection info string"},
    {"passfile", "host=h passfile=/root/.pgpass",
	"ledger.ship.postgres: passfile is not allowed; name the variable "
	"holding the password in password_env"},
    {"sslpassword keyword", "host=h sslkey=/k sslpassword=" PW, NO_SSLPW},
    {"sslpassword in query",
	"postgresql://10.0.0.6/t?sslkey=/k&sslpassword=" PW, NO_SSLPW},
    {"escaped sslpassword key", "postgresql://10.0.0.6/t?%73slpassword=" PW,
	NO_SSLPW},
    {"sslpassword quoted", "host=h sslpassword='" PW " x'", NO_SSLPW},
    {"malformed with sslpassword", "host=h sslpassword='" PW,
	"ledger.ship.postgres: not a valid PostgreSQL connection string "
	"(expected postgresql://USER@HOST:PORT/DB or host=HOST port=PORT "
	"user=USER dbname=DB)"},
    {"client key without passphrase",
	"host=h sslmode=verify-full sslcert=/c.pem sslkey=/k.pem", NULL},
    {"bad sslmode inside", "postgresql://h/t?sslmode=sometimes",
	"ledger.ship.postgres: sslmode must be one of disable, allow, prefer, "
	"require, verify-ca, verify-full"},
    {"empty", "",
	"ledger.ship.postgres: empty; expected postgresql://USER@HOST:PORT/DB"},
};

static void
run_ship_case(void **state)
{
	const struct shipcase *tc = *state;
	struct cfgerrs errs = {0};
	struct config *cf;
	char *text, *path, *want;

	xasprintf(
	    &text, "ledger:\n  ship:\n    postgres: \"%s\"\n", tc->postgres);
	cf = cfgfile_load(text, &errs, &path);
	if (tc->error != NULL) {
		assert_null(cf);
		assert_int_equal(errs.ce_n, 1);
		xasprintf(&want, "%s:3:15: %s", path, tc->error);
		assert_string_equal(errs.ce_msgs[0], want);
		assert_null(strstr(errs.ce_msgs[0], PW));
		free(want);
	} else {
		assert_non_null(cf);
		assert_non_null(cf->cf_ship);
		assert_string_equal(cf->cf_ship->sc_conninfo, tc->postgres);
		assert_null(cf->cf_ship->sc_sslmode);
		assert_null(cf->cf_ship->sc_password);
	}
	config_unref(cf);
	cfgerrs_free(&errs);
	free(path);
	free(text);
}

static void
test_password_and_summary(void **state)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	char *path, *line;

	(void)state;
	setenv("TG_UNIT_PG_PW", PW, 1);
	cf = cfgfile_load("ledger:\n  ship:\n"
			  "    postgres: postgresql://tollgate@h/t\n"
			  "    password_env: TG_UNIT_PG_PW\n"
			  "    sslmode: verify-full\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_string_equal(cf->cf_ship->sc_password, PW);
	assert_string_equal(cf->cf_ship->sc_sslmode, "verify-full");
	line = config_ship_describe(cf->cf_ship);
	assert_string_equal(line,
	    "ledger.ship: postgres postgresql://tollgate@h/t, password from "
	    "TG_UNIT_PG_PW, sslmode verify-full");
	free(line);
	config_unref(cf);
	unsetenv("TG_UNIT_PG_PW");

	/* No ship:, or an empty one: off. */
	cf = cfgfile_load("ledger:\n  path: x.db\n", &errs, &path);
	free(path);
	assert_null(cf->cf_ship);
	config_unref(cf);
	cf = cfgfile_load("ledger:\n  ship:\n", &errs, &path);
	free(path);
	assert_null(cf->cf_ship);
	config_unref(cf);
	assert_int_equal(errs.ce_n, 0);

	/* An unknown sslmode, at its own place. */
	cf = cfgfile_load("ledger:\n  ship:\n    postgres: host=h\n"
			  "    sslmode: sometimes\n",
	    &errs, &path);
	assert_null(cf);
	assert_int_equal(errs.ce_n, 1);
	assert_non_null(strstr(errs.ce_msgs[0],
	    ":4:14: ledger.ship.sslmode: unknown sslmode 'sometimes'"));
	free(path);
	cfgerrs_free(&errs);
}

static void
test_changed(void **state)
{
	static const struct {
		const char *text;
		const char *changed;
	} cases[] = {
	    {"    postgres: host=h2\n", "postgres"},
	    {"    postgres: host=h\n    sslmode: require\n", "sslmode"},
	    {"    postgres: host=h\n    password_env: TG_UNIT_PG_PW\n",
		"password_env"},
	    {"    postgres: host=h\n", NULL},
	};
	struct cfgerrs errs = {0};
	struct config *a, *b;
	char *path, *text;
	size_t i;

	(void)state;
	setenv("TG_UNIT_PG_PW", PW, 1);
	a = cfgfile_load(
	    "ledger:\n  ship:\n    postgres: host=h\n", &errs, &path);
	free(path);
	assert_non_null(a);
	for (i = 0; i < nitems(cases); i++) {
		xasprintf(&text, "ledger:\n  ship:\n%s", cases[i].text);
		b = cfgfile_load(text, &errs, &path);
		free(path);
		free(text);
		assert_non_null(b);
		if (cases[i].changed == NULL)
			assert_null(
			    config_ship_changed(a->cf_ship, b->cf_ship));
		else
			assert_string_equal(
			    config_ship_changed(a->cf_ship, b->cf_ship),
			    cases[i].changed);
		config_unref(b);
	}
	assert_string_equal(config_ship_changed(a->cf_ship, NULL), "ship");
	assert_null(config_ship_changed(NULL, NULL));
	unsetenv("TG_UNIT_PG_PW");
	config_unref(a);
	assert_int_equal(errs.ce_n, 0);
	cfgerrs_free(&errs);
}

/* One ledger: section's keys that must fail, and the message at its place. */
struct keycase {
	const char *name;
	const char *keys; /* lines under ledger.ship: after postgres: */
	const char *error; /* after "FILE:" */
};

static const struct keycase key_cases[] = {
    {"batch zero", "    batch: 0\n", "4:12: ledger.ship.batch"},
    {"batch too big", "    batch: 5001\n", "4:12: ledger.ship.batch"},
    {"interval too short", "    interval: 5ms\n",
	"4:15: ledger.ship.interval: must be between 10ms and 60s"},
    {"interval too long", "    interval: 2m\n",
	"4:15: ledger.ship.interval: must be between 10ms and 60s"},
    {"instance bad byte", "    instance: \"pod a\"\n",
	"4:15: ledger.ship.instance: bad instance name 'pod a' (1-64 "
	"characters of A-Z a-z 0-9 . _ : -)"},
    {"instance too long",
	"    instance: "
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
	"4:15: ledger.ship.instance: bad instance name"},
};

static void
run_key_case(void **state)
{
	const struct keycase *tc = *state;
	struct cfgerrs errs = {0};
	struct config *cf;
	char *text, *path, *want;

	xasprintf(
	    &text, "ledger:\n  ship:\n    postgres: host=h\n%s", tc->keys);
	cf = cfgfile_load(text, &errs, &path);
	assert_null(cf);
	assert_int_equal(errs.ce_n, 1);
	xasprintf(&want, "%s:%s", path, tc->error);
	assert_non_null(strstr(errs.ce_msgs[0], want));
	free(want);
	cfgerrs_free(&errs);
	free(path);
	free(text);
}

static void
test_shipper_keys(void **state)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	char *path, host[256], *want;

	(void)state;
	/* Defaults: the host's name and the listen port. */
	cf = cfgfile_load("listen: 127.0.0.1:7001\nledger:\n  ship:\n"
			  "    postgres: host=h\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_int_equal(cf->cf_ship->sc_batch, 500);
	assert_int_equal(cf->cf_ship->sc_interval_ms, 1000);
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	host[sizeof(host) - 1] = '\0';
	xasprintf(&want, "%.58s:7001", host);
	if (strchr(host, ' ') == NULL)
		assert_string_equal(cf->cf_ship->sc_instance, want);
	free(want);
	assert_int_equal(config_keep_local_ms(cf, NULL), 0);
	config_unref(cf);

	/* fleet.instance when there is a fleet; the keys as written. */
	cf = cfgfile_load("fleet:\n  redis: redis://127.0.0.1:6379\n"
			  "  instance: pod-7\n"
			  "ledger:\n  ship:\n    postgres: host=h\n"
			  "    batch: 5000\n    interval: 10ms\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_string_equal(cf->cf_ship->sc_instance, "pod-7");
	assert_int_equal(cf->cf_ship->sc_batch, 5000);
	assert_int_equal(cf->cf_ship->sc_interval_ms, 10);
	config_unref(cf);
	cf = cfgfile_load("fleet:\n  redis: redis://127.0.0.1:6379\n"
			  "  instance: pod-7\n"
			  "ledger:\n  ship:\n    postgres: host=h\n"
			  "    instance: ledger-7\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_string_equal(cf->cf_ship->sc_instance, "ledger-7");
	config_unref(cf);
	assert_int_equal(errs.ce_n, 0);
	cfgerrs_free(&errs);
}

static void
test_keep_local(void **state)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	char *path, *why;

	(void)state;
	/* Without ship: refused at the key. */
	cf = cfgfile_load(
	    "ledger:\n  path: x.db\n  keep_local: 1h\n", &errs, &path);
	assert_null(cf);
	assert_int_equal(errs.ce_n, 1);
	assert_non_null(strstr(
	    errs.ce_msgs[0], ":3:15: ledger.keep_local: needs ledger.ship:"));
	free(path);
	cfgerrs_free(&errs);

	/* No budget policy: as written. */
	cf = cfgfile_load(
	    "ledger:\n  keep_local: 90s\n  ship:\n    postgres: host=h\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_int_equal(config_keep_local_ms(cf, &why), 90 * 1000);
	assert_null(why);
	config_unref(cf);

	/* A rate limit is rebuilt from the last 11 minutes: an hour. */
	cf = cfgfile_load(
	    "ledger:\n  keep_local: 90s\n  ship:\n    postgres: host=h\n"
	    "policies:\n  - name: rate\n    rate_limit:\n"
	    "      requests_per_minute: 10\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_int_equal(config_keep_local_ms(cf, &why), 3600 * 1000);
	assert_non_null(why);
	assert_string_equal(why,
	    "ledger.keep_local: raised to an hour: rate limits are rebuilt "
	    "from the last minutes' rows at start-up");
	free(why);
	config_unref(cf);

	/*
	 * A rolling window's counter reaches a bucket (len/60) past its
	 * length: 90 days reach 91.5, and a minute for rounding, and a day.
	 */
	cf = cfgfile_load(
	    "ledger:\n  keep_local: 1h\n  ship:\n    postgres: host=h\n"
	    "policies:\n  - name: quarter\n    window: 2160h\n"
	    "    hard_cap_usd: 5\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_int_equal(config_keep_local_ms(cf, &why),
	    (90 * 86400 + 90 * 86400 / 60 + 60 + 86400) * 1000LL);
	free(why);
	config_unref(cf);

	/* A weekly and a rolling budget: the week and a day. */
	cf = cfgfile_load(
	    "ledger:\n  keep_local: 1h\n  ship:\n    postgres: host=h\n"
	    "policies:\n  - name: weekly\n    window: week\n"
	    "    hard_cap_usd: 5\n"
	    "  - name: hourly\n    window: 60m\n    alert_at_usd: 1\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_int_equal(config_keep_local_ms(cf, &why), 8 * 86400 * 1000LL);
	assert_non_null(why);
	assert_string_equal(why,
	    "ledger.keep_local: raised to 192 hours, the window of policy "
	    "'weekly' and a day, whose budget is rebuilt from those rows at "
	    "start-up");
	free(why);
	config_unref(cf);

	/* Longer than every window: as written. */
	cf = cfgfile_load("ledger:\n  keep_local: 1000h\n  ship:\n"
			  "    postgres: host=h\n"
			  "policies:\n  - name: monthly\n    window: month\n"
			  "    hard_cap_usd: 5\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_int_equal(config_keep_local_ms(cf, &why), 1000 * 3600000LL);
	assert_null(why);
	config_unref(cf);

	/* A total window: nothing is pruned. */
	cf = cfgfile_load(
	    "ledger:\n  keep_local: 1h\n  ship:\n    postgres: host=h\n"
	    "policies:\n  - name: forever\n    window: total\n"
	    "    hard_cap_usd: 5\n",
	    &errs, &path);
	free(path);
	assert_non_null(cf);
	assert_int_equal(config_keep_local_ms(cf, &why), 0);
	assert_non_null(why);
	assert_non_null(strstr(why, "policy 'forever' has a total window"));
	free(why);
	config_unref(cf);
	assert_int_equal(errs.ce_n, 0);
	cfgerrs_free(&errs);
}

int
main(void)
{
	static struct CMUnitTest
	    tests[nitems(ship_cases) + nitems(key_cases) + 4];
	size_t i, n = 0;

	for (i = 0; i < nitems(ship_cases); i++) {
		tests[n].name = ship_cases[i].name;
		tests[n].test_func = run_ship_case;
		tests[n].initial_state = (void *)(uintptr_t)&ship_cases[i];
		n++;
	}
	for (i = 0; i < nitems(key_cases); i++) {
		tests[n].name = key_cases[i].name;
		tests[n].test_func = run_key_case;
		tests[n].initial_state = (void *)(uintptr_t)&key_cases[i];
		n++;
	}
	tests[n++] =
	    (struct CMUnitTest)cmocka_unit_test(test_password_and_summary);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_shipper_keys);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_keep_local);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_changed);
	return (cmocka_run_group_tests_name("config_ship", tests, NULL, NULL));
}
