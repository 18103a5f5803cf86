/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the ledger.ship: section (src/config/cfgship.c): a table
 * of named connection strings, each loading as written or failing with
 * the listed message at 3:15 and never repeating the password; then the
 * password taken from its variable, the summary tollgate check prints,
 * and config_ship_changed naming every key that differs. Freeing every
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

#define PW "s3cret-pw"
#define NO_PW                                                                  \
	"ledger.ship.postgres: a password in the connection string is not "    \
	"allowed; put it in an environment variable and name it in "           \
	"password_env"

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
    {"bad sslmode inside", "postgresql://h/t?sslmode=sometimes",
	"ledger.ship.postgres: sslmode must be one of disable, allow, prefer, "
	"require, verify-ca, verify-full"},
    {"empty", "",
	"ledger.ship.postgres: empty; expected postgresql://USER@HOST:PORT/DB"},
};

static void
write_file(const char *path, const char *text)
{
	FILE *f;

	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

/* Load text as a file in a fresh temporary directory. */
static struct config *
load(const char *text, struct cfgerrs *errs, char **pathp)
{
	char dir[] = "/tmp/tg-test-ship.XXXXXX";
	struct config *cf;

	assert_non_null(mkdtemp(dir));
	xasprintf(pathp, "%s/tollgate.yaml", dir);
	write_file(*pathp, text);
	cf = config_load(*pathp, errs);
	unlink(*pathp);
	rmdir(dir);
	return (cf);
}

static void
run_ship_case(void **state)
{
	const struct shipcase *tc = *state;
	struct cfgerrs errs = {0};
	struct config *cf;
	char *text, *path, *want;

	xasprintf(
	    &text, "ledger:\n  ship:\n    postgres: \"%s\"\n", tc->postgres);
	cf = load(text, &errs, &path);
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
	cf = load("ledger:\n  ship:\n"
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
	cf = load("ledger:\n  path: x.db\n", &errs, &path);
	free(path);
	assert_null(cf->cf_ship);
	config_unref(cf);
	cf = load("ledger:\n  ship:\n", &errs, &path);
	free(path);
	assert_null(cf->cf_ship);
	config_unref(cf);
	assert_int_equal(errs.ce_n, 0);

	/* An unknown sslmode, at its own place. */
	cf = load("ledger:\n  ship:\n    postgres: host=h\n"
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
	a = load("ledger:\n  ship:\n    postgres: host=h\n", &errs, &path);
	free(path);
	assert_non_null(a);
	for (i = 0; i < nitems(cases); i++) {
		xasprintf(&text, "ledger:\n  ship:\n%s", cases[i].text);
		b = load(text, &errs, &path);
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

int
main(void)
{
	static struct CMUnitTest tests[nitems(ship_cases) + 2];
	size_t i, n = 0;

	for (i = 0; i < nitems(ship_cases); i++) {
		tests[n].name = ship_cases[i].name;
		tests[n].test_func = run_ship_case;
		tests[n].initial_state = (void *)(uintptr_t)&ship_cases[i];
		n++;
	}
	tests[n++] =
	    (struct CMUnitTest)cmocka_unit_test(test_password_and_summary);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_changed);
	return (cmocka_run_group_tests_name("config_ship", tests, NULL, NULL));
}
