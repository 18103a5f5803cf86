/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger.ship: section: the PostgreSQL that the fleet's ledger rows
 * go to. The connection string is a postgresql:// URI or a libpq
 * keyword=value string, read with libpq's own parser so that what is
 * accepted here is what libpq will connect with; it never carries a
 * password, which comes from an environment variable (password_env), is a
 * secret that no message repeats, and is wiped when the config is freed.
 * src/ship/ reads all of this at start only; a reload that changes it is
 * warned about by server_reload.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "tollgate/config.h"
#include "tollgate/util.h"

#include "cfg.h"

#define SC_OFF(f) offsetof(struct ship_conf, f)

static void cfgp_ship_postgres(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_ship_password_env(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_ship_sslmode(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);

static const struct cfgkey ship_keys[] = {
    KEY_CALL("postgres", cfgp_ship_postgres, 0, CFGKEY_REQUIRED),
    KEY_CALL("password_env", cfgp_ship_password_env, 0, 0),
    KEY_CALL("sslmode", cfgp_ship_sslmode, SC_OFF(sc_sslmode), 0),
    KEY_END,
};

/* libpq's sslmode values (PostgreSQL's "SSL Mode Descriptions"). */
static const char *const ship_sslmodes[] = {
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
};

#define SHIP_SSLMODES "disable, allow, prefer, require, verify-ca, verify-full"

/* Release what sc holds, wiping the password, and sc itself. */
static void
ship_conf_free(struct ship_conf *sc)
{
	if (sc == NULL)
		return;
	free(sc->sc_conninfo);
	free(sc->sc_sslmode);
	if (sc->sc_password != NULL)
		freezero(sc->sc_password, strlen(sc->sc_password));
	free(sc->sc_password_env);
	free(sc);
}

/*
 * ledger.ship: a section of ship_keys. Left empty ("ship:" with nothing
 * under it) it is off, as if it were not there.
 */
void
cfgp_ship(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;

	(void)k;
	if (ynode_is_null(n))
		return;
	ship_conf_free(cf->cf_ship);
	cf->cf_ship = xcalloc(1, sizeof(*cf->cf_ship));
	cfg_apply(cx, ship_keys, path, n, n, cf->cf_ship);
}

/* Is s one of libpq's sslmode values? */
static int
ship_sslmode_ok(const char *s)
{
	size_t i;

	for (i = 0; i < nitems(ship_sslmodes); i++)
		if (strcmp(s, ship_sslmodes[i]) == 0)
			return (1);
	return (0);
}

/*
 * Does the URI s hold a password in its user part (scheme://user:pw@)?
 * Looked at before libpq parses it, because libpq's messages about a
 * malformed URI repeat the whole URI.
 */
static int
ship_uri_has_password(const char *s)
{
	const char *auth, *at, *end;

	if ((auth = strstr(s, "://")) == NULL)
		return (0);
	auth += 3;
	end = auth + strcspn(auth, "/?");
	if ((at = memchr(auth, '@', (size_t)(end - auth))) == NULL)
		return (0);
	return (memchr(auth, ':', (size_t)(at - auth)) != NULL);
}

/*
 * The connection string s checked with libpq's parser: no password in it,
 * a known sslmode if it has one. Returns 0, or -1 with *cause set; the
 * string is never repeated when it might hold a password.
 */
static int
ship_check_conninfo(const char *s, struct ship_conf *sc, char **cause)
{
	PQconninfoOption *opts = NULL, *o;
	char *err = NULL;
	int rc = -1;

	(void)sc;
	if (ship_uri_has_password(s)) {
		xasprintf(cause,
		    "a password in the connection string is not allowed; "
		    "put it in an environment variable and name it in "
		    "password_env");
		return (-1);
	}
	if ((opts = PQconninfoParse(s, &err)) == NULL) {
		/* libpq's message can quote the string or a piece of it. */
		if (err != NULL && strcasestr(s, "password") == NULL &&
		    strchr(s, '%') == NULL) {
			err[strcspn(err, "\n")] = '\0';
			xasprintf(cause,
			    "not a valid PostgreSQL connection string: %s",
			    err);
		} else
			xasprintf(cause,
			    "not a valid PostgreSQL connection string "
			    "(expected postgresql://USER@HOST:PORT/DB or "
			    "host=HOST port=PORT user=USER dbname=DB)");
		goto fail;
	}
	for (o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "password") == 0) {
			xasprintf(cause,
			    "a password in the connection string is not "
			    "allowed; put it in an environment variable and "
			    "name it in password_env");
			goto fail;
		}
		if (strcmp(o->keyword, "sslmode") == 0 &&
		    !ship_sslmode_ok(o->val)) {
			xasprintf(
			    cause, "sslmode must be one of %s", SHIP_SSLMODES);
			goto fail;
		}
		if (strcmp(o->keyword, "passfile") == 0) {
			xasprintf(cause,
			    "passfile is not allowed; name the variable "
			    "holding the password in password_env");
			goto fail;
		}
	}
	rc = 0;
fail:
	if (err != NULL)
		PQfreemem(err);
	if (opts != NULL)
		PQconninfoFree(opts);
	return (rc);
}

/* ledger.ship.postgres: where the fleet ledger is (ship_check_conninfo). */
static void
cfgp_ship_postgres(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct ship_conf *sc = dst;
	const char *s;
	char *cause = NULL;

	(void)k;
	if ((s = cfg_string(cx, path, n,
		 "a postgresql:// URI or a libpq connection string")) == NULL)
		return;
	if (*s == '\0') {
		cfg_error(cx, n,
		    "%s: empty; expected postgresql://USER@HOST:PORT/DB", path);
		return;
	}
	if (ship_check_conninfo(s, sc, &cause) == -1) {
		cfg_error(cx, n, "%s: %s", path, cause);
		free(cause);
		return;
	}
	free(sc->sc_conninfo);
	sc->sc_conninfo = xstrdup(s);
}

/* ledger.ship.password_env: the name of a variable holding the password. */
static void
cfgp_ship_password_env(struct cfgctx *cx, const struct cfgkey *k,
    const char *path, const struct ynode *n, void *dst)
{
	struct ship_conf *sc = dst;
	const char *s, *v;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an environment variable name")) ==
	    NULL)
		return;
	free(sc->sc_password_env);
	sc->sc_password_env = xstrdup(s);
	if ((v = getenv(s)) == NULL || v[0] == '\0') {
		(void)cfg_secret_env(cx, n, path, s);
		return;
	}
	if (sc->sc_password != NULL)
		freezero(sc->sc_password, strlen(sc->sc_password));
	sc->sc_password = xstrdup(v);
}

/* ledger.ship.sslmode: one of libpq's sslmode values. */
static void
cfgp_ship_sslmode(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	char **out = dst, buf[80];
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an sslmode")) == NULL)
		return;
	if (!ship_sslmode_ok(s)) {
		cfg_error(cx, n,
		    "%s: unknown sslmode '%s' (expected one of %s)", path,
		    cfg_esc(buf, sizeof(buf), s, n->yn_len), SHIP_SSLMODES);
		return;
	}
	free(*out);
	*out = xstrdup(s);
}

/* Release ledger.ship:'s fields, wiping the password. */
void
config_free_ship(struct config *cf)
{
	ship_conf_free(cf->cf_ship);
	cf->cf_ship = NULL;
}

/* Do two optional strings differ? */
static int
ship_str_differs(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return (a != b);
	return (strcmp(a, b) != 0);
}

/*
 * The first ledger.ship: key whose value differs between a and b (either
 * may be NULL: no shipping), as its name, "ship" when one has the section
 * and the other not, or NULL when they are the same. A changed password
 * is "password_env": only the key is ever named, never the value.
 */
const char *
config_ship_changed(const struct ship_conf *a, const struct ship_conf *b)
{
	if (a == NULL || b == NULL)
		return (a != b ? "ship" : NULL);
	if (ship_str_differs(a->sc_conninfo, b->sc_conninfo))
		return ("postgres");
	if (ship_str_differs(a->sc_password_env, b->sc_password_env) ||
	    ship_str_differs(a->sc_password, b->sc_password))
		return ("password_env");
	if (ship_str_differs(a->sc_sslmode, b->sc_sslmode))
		return ("sslmode");
	return (NULL);
}

/*
 * ledger.ship: as one line of text for tollgate check; the caller frees
 * it. The connection string holds no password (ship_check_conninfo); the
 * password is named by its variable only.
 */
char *
config_ship_describe(const struct ship_conf *sc)
{
	char *out, pw[160];

	if (sc->sc_password_env == NULL)
		snprintf(pw, sizeof(pw), "no password");
	else
		snprintf(pw, sizeof(pw), "password from %s%s",
		    sc->sc_password_env,
		    sc->sc_password == NULL ? " (not set here)" : "");
	xasprintf(&out, "ledger.ship: postgres %s, %s, sslmode %s",
	    sc->sc_conninfo, pw,
	    sc->sc_sslmode != NULL ? sc->sc_sslmode : "libpq's default");
	return (out);
}
