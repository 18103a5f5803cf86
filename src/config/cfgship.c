/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger.ship: section: the PostgreSQL that the fleet's ledger rows
 * go to. The connection string is a postgresql:// URI or a libpq
 * keyword=value string, read with libpq's own parser so that what is
 * accepted here is what libpq will connect with; it never carries a
 * password, which comes from an environment variable (password_env), is a
 * secret that no message repeats, and is wiped when the config is freed.
 * The shipper's own keys (instance, batch, interval) and ledger.keep_local,
 * which only a shipping ledger may set, are checked here too, with the
 * floor that keeps pruning out of the budget windows. src/ship/ reads
 * all of this at start only; a reload that changes it is warned about by
 * server_reload.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "tollgate/config.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "cfg.h"

#define SC_OFF(f) offsetof(struct ship_conf, f)

#define SHIP_INSTANCE_MAX 64 /* as fleet.instance */
#define SHIP_BATCH_MAX 5000
#define SHIP_INTERVAL_MIN_MS 10
#define SHIP_INTERVAL_MAX_MS (60 * 1000)
#define SHIP_DAY_MS (24LL * 3600 * 1000)

static void cfgp_ship_postgres(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_ship_password_env(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_ship_sslmode(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_ship_instance(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_ship_interval(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);

static const struct cfgkey ship_keys[] = {
    KEY_CALL("postgres", cfgp_ship_postgres, 0, CFGKEY_REQUIRED),
    KEY_CALL("password_env", cfgp_ship_password_env, 0, 0),
    KEY_CALL("sslmode", cfgp_ship_sslmode, SC_OFF(sc_sslmode), 0),
    KEY_CALL("instance", cfgp_ship_instance, SC_OFF(sc_instance), 0),
    KEY_INT("batch", SC_OFF(sc_batch), 1, SHIP_BATCH_MAX),
    KEY_CALL("interval", cfgp_ship_interval, SC_OFF(sc_interval_ms), 0),
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
	free(sc->sc_instance);
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
	cf->cf_ship->sc_batch = SHIP_BATCH_DEFAULT;
	cf->cf_ship->sc_interval_ms = SHIP_INTERVAL_DEFAULT_MS;
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
 * The connection string s checked with libpq's parser: no password or
 * other secret (sslpassword) in it, no passfile, a known sslmode if it
 * has one. Returns 0, or -1 with *cause set; the
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
		    strcasestr(s, "secret") == NULL && strchr(s, '%') == NULL) {
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
		/*
		 * libpq marks its secrets "*" (password, sslpassword, and
		 * any it adds later): tollgate check prints the string, and
		 * a config file is no place for a secret.
		 */
		if (o->dispchar != NULL && strchr(o->dispchar, '*') != NULL) {
			xasprintf(cause,
			    "%s in the connection string is not allowed: it "
			    "is a secret, and the string is printed by "
			    "tollgate check; use a client key (sslkey) "
			    "without a passphrase, readable only by "
			    "tollgate's user",
			    o->keyword);
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

/* A byte of an instance name: [A-Za-z0-9._:-], as fleet.instance. */
static int
ship_instance_char(int c)
{
	return ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	    c == '-');
}

/*
 * ledger.ship.instance: the name this ledger's rows carry in PostgreSQL,
 * the first half of their key there; two instances with one name would
 * overwrite each other's rows.
 */
static void
cfgp_ship_instance(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	char **out = dst, buf[80];
	const char *s;
	size_t i;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an instance name")) == NULL)
		return;
	for (i = 0; i < n->yn_len && ship_instance_char((unsigned char)s[i]);
	     i++)
		;
	if (n->yn_len == 0 || n->yn_len > SHIP_INSTANCE_MAX || i != n->yn_len) {
		cfg_error(cx, n,
		    "%s: bad instance name '%s' (1-%d characters of "
		    "A-Z a-z 0-9 . _ : -)",
		    path, cfg_esc(buf, sizeof(buf), s, n->yn_len),
		    SHIP_INSTANCE_MAX);
		return;
	}
	free(*out);
	*out = xstrdup(s);
}

/* ledger.ship.interval: the idle poll, 10ms to 60s. */
static void
cfgp_ship_interval(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	size_t nerr = cx->cx_nerr;
	long v = -1;

	cfgp_duration(cx, k, path, n, &v);
	if (cx->cx_nerr != nerr)
		return;
	if (v < SHIP_INTERVAL_MIN_MS || v > SHIP_INTERVAL_MAX_MS) {
		cfg_error(cx, n, "%s: must be between 10ms and 60s", path);
		return;
	}
	*(long *)dst = v;
}

/*
 * Whole-file part of ledger.ship: and ledger.keep_local: keep_local
 * without ship: is refused (pruning is of shipped rows only), and the
 * instance name defaults to fleet.instance (config_check_fleet has set
 * it) or this host's name and the listen port.
 */
void
config_check_ship(
    struct cfgctx *cx, const struct ynode *root, struct config *cf)
{
	struct ship_conf *sc = cf->cf_ship;
	const struct ynode *ledger, *at;
	char host[256], port[16];
	size_t i, room;

	if (sc == NULL && cf->cf_keep_local_ms > 0) {
		ledger = cfg_value(root, "ledger");
		at = ledger != NULL ? cfg_value(ledger, "keep_local") : NULL;
		cfg_error(cx, at != NULL ? at : root,
		    "ledger.keep_local: needs ledger.ship: (only rows already "
		    "shipped to PostgreSQL are pruned)");
		return;
	}
	if (sc == NULL || sc->sc_instance != NULL)
		return;
	if (cf->cf_fleet != NULL && cf->cf_fleet->fc_instance != NULL) {
		sc->sc_instance = xstrdup(cf->cf_fleet->fc_instance);
		return;
	}
	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(port, sizeof(port), ":%d", cf->cf_listen_port);
	room = SHIP_INSTANCE_MAX - strlen(port);
	if (strlen(host) > room)
		host[room] = '\0';
	for (i = 0; host[i] != '\0'; i++)
		if (!ship_instance_char((unsigned char)host[i]))
			host[i] = '_';
	xasprintf(&sc->sc_instance, "%s%s", host, port);
}

/*
 * How long a policy's budget window reaches back, in ms, at most: what
 * the budgets are rebuilt from at start-up (src/policy/rebuild.c), or -1
 * for a total window, rebuilt from every row.
 */
/* What keep_local is raised to for a rate limit's rebuild (11 min). */
#define SHIP_RATE_REACH_MS (3600 * 1000LL)

static int64_t
ship_window_reach_ms(const struct policy_window *w)
{
	switch (w->pw_kind) {
	case POLICY_WIN_DAY:
		return (SHIP_DAY_MS);
	case POLICY_WIN_WEEK:
		return (7 * SHIP_DAY_MS);
	case POLICY_WIN_MONTH:
		return (31 * SHIP_DAY_MS);
	case POLICY_WIN_ROLLING:
		/*
		 * Its counter is 60 buckets of len/60 and the oldest still
		 * counts (policy_window_at): a bucket beyond the length, and
		 * a minute for the rounding of its width.
		 */
		return (w->pw_len_ms + w->pw_len_ms / 60 + 60000);
	case POLICY_WIN_TOTAL:
		break;
	}
	return (-1);
}

/*
 * The age past which shipped rows may be pruned from the local ledger,
 * in ms, or 0 when none are (no keep_local, or a policy with a total
 * window). Never less than an hour when a policy has a rate limit, nor
 * than the longest budget window of any policy plus a day (the calendar windows may follow a time zone), since the budgets
 * are rebuilt from those rows at start-up. *why, when not NULL, gets a
 * sentence (the caller frees it) when that raises or stops keep_local.
 */
int64_t
config_keep_local_ms(const struct config *cf, char **why)
{
	const struct policy *po, *longest = NULL;
	int64_t reach, floor = 0;
	size_t i;

	if (why != NULL)
		*why = NULL;
	if (cf->cf_keep_local_ms <= 0 || cf->cf_ship == NULL)
		return (0);
	for (i = 0; cf->cf_policies != NULL && i < cf->cf_policies->ps_n; i++) {
		po = &cf->cf_policies->ps_pol[i];
		/* Rate limits are rebuilt from the last 11 minutes' rows. */
		if ((po->po_rpm > 0 || po->po_tpm > 0) &&
		    SHIP_RATE_REACH_MS > floor) {
			floor = SHIP_RATE_REACH_MS;
			longest = NULL;
		}
		if (po->po_cap_nusd == -1 && po->po_nalerts == 0)
			continue; /* no budget: nothing rebuilt */
		if ((reach = ship_window_reach_ms(&po->po_window)) == -1) {
			if (why != NULL)
				xasprintf(why,
				    "ledger.keep_local: no row is pruned: "
				    "policy '%s' has a total window, whose "
				    "budget is rebuilt from every row",
				    po->po_name != NULL ? po->po_name : "?");
			return (0);
		}
		if (reach + SHIP_DAY_MS > floor) {
			floor = reach + SHIP_DAY_MS;
			longest = po;
		}
	}
	if (floor <= cf->cf_keep_local_ms)
		return (cf->cf_keep_local_ms);
	if (why != NULL && longest == NULL)
		xasprintf(why,
		    "ledger.keep_local: raised to an hour: rate limits are "
		    "rebuilt from the last minutes' rows at start-up");
	else if (why != NULL)
		xasprintf(why,
		    "ledger.keep_local: raised to %lld hours, the window of "
		    "policy '%s' and a day, whose budget is rebuilt from "
		    "those rows at start-up",
		    (long long)((floor + 3599999) / 3600000),
		    longest->po_name != NULL ? longest->po_name : "?");
	return (floor);
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
	if (ship_str_differs(a->sc_instance, b->sc_instance))
		return ("instance");
	if (a->sc_batch != b->sc_batch)
		return ("batch");
	if (a->sc_interval_ms != b->sc_interval_ms)
		return ("interval");
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
