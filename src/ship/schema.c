/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet ledger's schema in PostgreSQL: the connection made from
 * ledger.ship:, the tollgate_schema version table, and the ordered steps
 * that bring a database from any older version to SHIP_SCHEMA_VERSION in
 * one transaction. The calls, alerts and kills tables are the local
 * ledger's (src/ledger/schema.c) with an instance column in front and
 * (instance, id) as the key: the same column names, money as BIGINT
 * nano-USD, times as the same RFC 3339 UTC text; ship_cursors records how
 * far each instance's streams have shipped. Blocking libpq calls, made by
 * tollgate ship init and by the shipper's own thread (ship_migrate at
 * each connect), never by the event loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "tollgate/config.h"
#include "tollgate/ship.h"
#include "tollgate/util.h"

#include "ship_int.h"

/* Milliseconds unacknowledged data may wait before the connection is
 * dropped, unless the string says. */
#define SHIP_TCP_USER_TIMEOUT_MS "30000"

/* Seconds libpq waits for a connection unless the string says. */
#define SHIP_CONNECT_TIMEOUT "10"

/* Serializes two ship inits on one database: any constant will do. */
#define SHIP_LOCK_KEY "7311427"

/*
 * One step of the schema: what makes version ss_version from the one
 * before it.
 */
struct ship_step {
	int ss_version;
	const char *ss_sql;
};

/* clang-format off */
#define SHIP_CALLS_V1                                                          \
	"CREATE TABLE calls ("                                                 \
	" instance TEXT NOT NULL,"                                             \
	" id TEXT NOT NULL,"                                                   \
	" started_at TEXT NOT NULL,"                                           \
	" finished_at TEXT,"                                                   \
	" provider TEXT,"                                                      \
	" endpoint TEXT,"                                                      \
	" upstream TEXT,"                                                      \
	" model TEXT,"                                                         \
	" intent TEXT,"                                                        \
	" team TEXT,"                                                          \
	" tenant TEXT,"                                                        \
	" agent_class TEXT,"                                                   \
	" environment TEXT,"                                                   \
	" key_fingerprint TEXT,"                                               \
	" stream BIGINT NOT NULL DEFAULT 0 CHECK (stream IN (0, 1)),"          \
	" status TEXT NOT NULL CONSTRAINT status_known CHECK (status IN"       \
	" ('in_flight', 'ok', 'error', 'refused', 'client_closed',"            \
	" 'upstream_error', 'interrupted', 'killed')),"                        \
	" http_status BIGINT,"                                                 \
	" input_tokens BIGINT NOT NULL DEFAULT 0,"                             \
	" output_tokens BIGINT NOT NULL DEFAULT 0,"                            \
	" cached_input_tokens BIGINT NOT NULL DEFAULT 0,"                      \
	" cache_write_tokens BIGINT NOT NULL DEFAULT 0,"                       \
	" reasoning_tokens BIGINT NOT NULL DEFAULT 0,"                         \
	" usage_source TEXT NOT NULL DEFAULT 'none' CONSTRAINT"                \
	" usage_source_known CHECK (usage_source IN ('reported',"              \
	" 'estimated', 'none')),"                                              \
	" cost_nusd BIGINT NOT NULL DEFAULT 0,"                                \
	" reserved_nusd BIGINT NOT NULL DEFAULT 0,"                            \
	" price_version TEXT,"                                                 \
	" refusal_reason TEXT,"                                                \
	" latency_ms BIGINT,"                                                  \
	" ttfb_ms BIGINT,"                                                     \
	" served_model TEXT,"                                                  \
	" PRIMARY KEY (instance, id)"                                          \
	");"                                                                   \
	"CREATE INDEX calls_started ON calls (started_at);"                    \
	"CREATE INDEX calls_instance_started ON calls (instance, started_at);" \
	"CREATE INDEX calls_team_started ON calls (team, started_at);"         \
	"CREATE INDEX calls_tenant_started ON calls (tenant, started_at);"     \
	"CREATE INDEX calls_intent_started ON calls (intent, started_at);"     \
	"CREATE INDEX calls_agent_class_started ON calls"                      \
	" (agent_class, started_at);"
#define SHIP_ALERTS_V1                                                         \
	"CREATE TABLE alerts ("                                                \
	" instance TEXT NOT NULL,"                                             \
	" id TEXT NOT NULL,"                                                   \
	" fired_at TEXT NOT NULL,"                                             \
	" kind TEXT NOT NULL,"                                                 \
	" policy TEXT,"                                                        \
	" scope_key TEXT,"                                                     \
	" intent TEXT,"                                                        \
	" team TEXT,"                                                          \
	" tenant TEXT,"                                                        \
	" agent_class TEXT,"                                                   \
	" environment TEXT,"                                                   \
	" \"window\" TEXT,"                                                    \
	" window_start TEXT,"                                                  \
	" reset_at TEXT,"                                                      \
	" threshold_nusd BIGINT,"                                              \
	" spent_nusd BIGINT NOT NULL DEFAULT 0,"                               \
	" cap_nusd BIGINT,"                                                    \
	" message TEXT,"                                                       \
	" delivery TEXT NOT NULL DEFAULT 'none'"                               \
	" CHECK (delivery IN ('none', 'pending', 'delivered', 'failed')),"     \
	" attempts BIGINT NOT NULL DEFAULT 0,"                                 \
	" PRIMARY KEY (instance, id)"                                          \
	");"                                                                   \
	"CREATE INDEX alerts_fired ON alerts (fired_at);"
#define SHIP_KILLS_V1                                                          \
	"CREATE TABLE kills ("                                                 \
	" instance TEXT NOT NULL,"                                             \
	" id TEXT NOT NULL,"                                                   \
	" created_at TEXT NOT NULL,"                                           \
	" expires_at TEXT,"                                                    \
	" match TEXT NOT NULL,"                                                \
	" reason TEXT NOT NULL,"                                               \
	" source TEXT NOT NULL,"                                               \
	" deleted_at TEXT,"                                                    \
	" PRIMARY KEY (instance, id)"                                          \
	");"                                                                   \
	"CREATE INDEX kills_created ON kills (created_at);"
/*
 * How far each instance's streams ('calls', 'alerts', 'kills') have
 * shipped: the highest local ship_seq whose row is here, written in the
 * same statement as the rows it covers, so it never runs ahead of them.
 */
#define SHIP_CURSORS_V2                                                        \
	"CREATE TABLE ship_cursors ("                                          \
	" instance TEXT NOT NULL,"                                             \
	" stream TEXT NOT NULL,"                                               \
	" seq BIGINT NOT NULL,"                                                \
	" shipped_at TIMESTAMPTZ NOT NULL DEFAULT now(),"                      \
	" PRIMARY KEY (instance, stream)"                                      \
	");"
/*
 * What a routing rule did to a call (docs/spend-less.md): the model asked
 * for, the rule, and what it saved. Rows shipped before are unrouted.
 */
#define SHIP_ROUTING_V3                                                        \
	"ALTER TABLE calls ADD COLUMN routed_from TEXT,"                       \
	" ADD COLUMN routed_rule TEXT,"                                        \
	" ADD COLUMN saved_nusd BIGINT NOT NULL DEFAULT 0;"
/*
 * How many upstream attempts a call took (NULL on rows shipped by a
 * tollgate that did not record it), the ones that failed, and whether the
 * response cache answered it.
 */
#define SHIP_ATTEMPTS_V4                                                       \
	"ALTER TABLE calls ADD COLUMN attempts BIGINT,"                        \
	" ADD COLUMN attempt_log TEXT,"                                        \
	" ADD COLUMN cache_hit BIGINT NOT NULL DEFAULT 0"                      \
	" CHECK (cache_hit IN (0, 1));"
/* clang-format on */

/*
 * The steps in order. A new version is a new step at the end; a step is
 * never changed once released, since databases have run it.
 */
static const struct ship_step ship_steps[] = {
    {1, SHIP_CALLS_V1 SHIP_ALERTS_V1 SHIP_KILLS_V1},
    {2, SHIP_CURSORS_V2},
    {3, SHIP_ROUTING_V3},
    {4, SHIP_ATTEMPTS_V4},
};

/*
 * msg with each copy of the password replaced by "***", and its trailing
 * newline and the line breaks libpq puts inside folded to spaces; the
 * caller frees it. libpq is not known to repeat a password, but its
 * messages quote servers and options, so nothing is left to chance.
 */
char *
ship_scrub(const char *msg, const char *password)
{
	const char *p, *hit;
	char *out, *o;
	size_t plen, n;

	if (msg == NULL || *msg == '\0')
		msg = "no message from libpq";
	plen = password != NULL ? strlen(password) : 0;
	out = o = xmalloc(strlen(msg) * 3 + 4);
	for (p = msg; *p != '\0';) {
		if (plen > 0 && (hit = strstr(p, password)) != NULL)
			n = (size_t)(hit - p);
		else {
			hit = NULL;
			n = strlen(p);
		}
		memcpy(o, p, n);
		o += n;
		p += n;
		if (hit != NULL) {
			memcpy(o, "***", 3);
			o += 3;
			p += plen;
		}
	}
	*o = '\0';
	for (o = out; *o != '\0'; o++)
		if (*o == '\n' || *o == '\t' || *o == '\r')
			*o = ' ';
	while (o > out && o[-1] == ' ')
		*--o = '\0';
	return (out);
}

/*
 * What went wrong with r (NULL: no result) on conn, for a message that
 * may be shown: PostgreSQL's primary message only, never its DETAIL or
 * CONTEXT, which can quote a failing row's values; scrubbed of the
 * password. The caller frees it.
 */
char *
ship_error(const PGresult *r, const PGconn *conn, const char *password)
{
	const char *m = NULL;

	if (r != NULL)
		m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	if (m == NULL || *m == '\0')
		m = r != NULL && *PQresultErrorMessage(r) != '\0'
		    ? PQresultErrorMessage(r)
		    : PQerrorMessage(conn);
	return (ship_scrub(m, password));
}

/*
 * A connection to the database ledger.ship names, or NULL with *cause
 * set (its message scrubbed of the password). The password and sslmode
 * are given after the string, which libpq expands in place, so they apply
 * whatever it says; the string's own connect_timeout and keepalive
 * settings win over ours, given before it.
 */
PGconn *
ship_connect(const struct ship_conf *sc, char **cause)
{
	const char *keys[12], *vals[12];
	PGconn *conn;
	char *msg;
	int n = 0;

	keys[n] = "connect_timeout";
	vals[n++] = SHIP_CONNECT_TIMEOUT;
	/*
	 * statement_timeout is the server's: on a dead path (a partition, a
	 * failover to another address) nothing answers, and a blocking
	 * libpq call would wait for the kernel to give up, about 15 minutes.
	 * Keepalives and tcp_user_timeout end it in about 30 seconds.
	 */
	keys[n] = "keepalives";
	vals[n++] = "1";
	keys[n] = "keepalives_idle";
	vals[n++] = "10";
	keys[n] = "keepalives_interval";
	vals[n++] = "5";
	keys[n] = "keepalives_count";
	vals[n++] = "3";
	keys[n] = "tcp_user_timeout";
	vals[n++] = SHIP_TCP_USER_TIMEOUT_MS;
	keys[n] = "dbname";
	vals[n++] = sc->sc_conninfo;
	keys[n] = "fallback_application_name";
	vals[n++] = "tollgate";
	if (sc->sc_password != NULL) {
		keys[n] = "password";
		vals[n++] = sc->sc_password;
	}
	if (sc->sc_sslmode != NULL) {
		keys[n] = "sslmode";
		vals[n++] = sc->sc_sslmode;
	}
	keys[n] = NULL;
	vals[n] = NULL;
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL) {
		xasprintf(cause, "cannot connect to PostgreSQL: out of memory");
		return (NULL);
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		msg = ship_scrub(PQerrorMessage(conn), sc->sc_password);
		xasprintf(cause, "cannot connect to PostgreSQL: %s", msg);
		free(msg);
		PQfinish(conn);
		return (NULL);
	}
	return (conn);
}

/*
 * Run sql; 0 when it gave the status wanted, else -1 with *cause set
 * (what it was doing, then PostgreSQL's message, scrubbed). *res, when
 * given, gets the result to clear.
 */
int
ship_exec(PGconn *conn, const struct ship_conf *sc, const char *sql,
    ExecStatusType want, const char *doing, PGresult **res, char **cause)
{
	PGresult *r;
	char *msg;

	r = PQexec(conn, sql);
	if (r != NULL && PQresultStatus(r) == want) {
		if (res != NULL)
			*res = r;
		else
			PQclear(r);
		return (0);
	}
	msg = ship_error(r, conn, sc->sc_password);
	xasprintf(cause, "%s: %s", doing, msg);
	free(msg);
	PQclear(r);
	return (-1);
}

/* The schema version the database is at, 0 for none, or -1. */
static int
ship_schema_version(
    PGconn *conn, const struct ship_conf *sc, int *version, char **cause)
{
	PGresult *r = NULL;
	const char *v;
	char *end;
	long n;

	if (ship_exec(conn, sc,
		"SELECT coalesce(max(version), 0) FROM tollgate_schema",
		PGRES_TUPLES_OK, "reading tollgate_schema", &r, cause) == -1)
		return (-1);
	v = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";
	n = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || n < 0 || n > 1000000) {
		xasprintf(cause, "tollgate_schema holds a bad version");
		PQclear(r);
		return (-1);
	}
	*version = (int)n;
	PQclear(r);
	return (0);
}

/* Where conn is, as host:port/db, for the report; the caller frees it. */
static char *
ship_where(PGconn *conn)
{
	const char *host = PQhost(conn), *port = PQport(conn), *db = PQdb(conn);
	char *out;

	xasprintf(&out, "%s:%s/%s", host != NULL ? host : "?",
	    port != NULL && *port != '\0' ? port : "5432",
	    db != NULL ? db : "?");
	return (out);
}

/*
 * Bring the database conn is on to SHIP_SCHEMA_VERSION: every step after
 * the version it is at, in order, in one transaction with the version
 * rows, under a lock that makes a second migration wait. A database
 * already there is left as it is; a newer one is refused. Returns 0 with
 * *from and *to the versions before and after, or -1 with *cause set
 * and nothing changed.
 */
int
ship_migrate(
    PGconn *conn, const struct ship_conf *sc, int *from, int *to, char **cause)
{
	char *sql = NULL, *where = NULL;
	size_t i;
	int begun = 0;

	*to = 0;
	if (ship_exec(conn, sc, "SET client_min_messages = warning",
		PGRES_COMMAND_OK, "setting up the session", NULL,
		cause) == -1 ||
	    ship_exec(conn, sc, "BEGIN", PGRES_COMMAND_OK,
		"starting the transaction", NULL, cause) == -1)
		goto fail;
	begun = 1;
	if (ship_exec(conn, sc,
		"SELECT pg_advisory_xact_lock(" SHIP_LOCK_KEY ")",
		PGRES_TUPLES_OK, "waiting for another schema migration", NULL,
		cause) == -1 ||
	    ship_exec(conn, sc,
		"CREATE TABLE IF NOT EXISTS tollgate_schema ("
		" version INTEGER PRIMARY KEY,"
		" applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
		" tollgate TEXT NOT NULL)",
		PGRES_COMMAND_OK, "creating tollgate_schema", NULL,
		cause) == -1 ||
	    ship_schema_version(conn, sc, from, cause) == -1)
		goto fail;
	*to = *from;
	if (*from > SHIP_SCHEMA_VERSION) {
		where = ship_where(conn);
		xasprintf(cause,
		    "the fleet ledger at %s has schema version %d, newer "
		    "than this tollgate knows (%d); use a newer tollgate",
		    where, *from, SHIP_SCHEMA_VERSION);
		goto fail;
	}
	if (*from == SHIP_SCHEMA_VERSION) {
		/* Nothing changed: the version table, if just made, goes. */
		if (ship_exec(conn, sc, "ROLLBACK", PGRES_COMMAND_OK,
			"ending the transaction", NULL, cause) == -1)
			return (-1);
		return (0);
	}
	for (i = 0; i < nitems(ship_steps); i++) {
		if (ship_steps[i].ss_version <= *from)
			continue;
		*to = ship_steps[i].ss_version;
		xasprintf(&sql, "applying schema version %d", *to);
		if (ship_exec(conn, sc, ship_steps[i].ss_sql, PGRES_COMMAND_OK,
			sql, NULL, cause) == -1)
			goto fail;
		free(sql);
		xasprintf(&sql,
		    "INSERT INTO tollgate_schema (version, tollgate)"
		    " VALUES (%d, 'tollgate %s')",
		    *to, TOLLGATE_VERSION);
		if (ship_exec(conn, sc, sql, PGRES_COMMAND_OK,
			"recording the schema version", NULL, cause) == -1)
			goto fail;
		free(sql);
		sql = NULL;
	}
	if (ship_exec(conn, sc, "COMMIT", PGRES_COMMAND_OK,
		"committing the schema", NULL, cause) == -1) {
		begun = 0;
		goto fail;
	}
	return (0);
fail:
	/* Nothing of a failed migration stays: every step is in the
	 * transaction. */
	if (begun)
		PQclear(PQexec(conn, "ROLLBACK"));
	free(sql);
	free(where);
	return (-1);
}

/*
 * Bring the database ledger.ship names to SHIP_SCHEMA_VERSION
 * (ship_migrate), for tollgate ship init. Returns 0 with *report saying
 * what was done, or -1 with *cause set.
 */
int
ship_schema_init(const struct ship_conf *sc, char **report, char **cause)
{
	PGconn *conn;
	char *where;
	int from, to;

	*report = NULL;
	if ((conn = ship_connect(sc, cause)) == NULL)
		return (-1);
	where = ship_where(conn);
	if (ship_migrate(conn, sc, &from, &to, cause) == -1) {
		free(where);
		PQfinish(conn);
		return (-1);
	}
	if (from == to)
		xasprintf(report,
		    "ship init: the fleet ledger at %s is at schema version "
		    "%d already; nothing to do",
		    where, from);
	else if (from == 0)
		xasprintf(report,
		    "ship init: created the fleet ledger at %s, schema "
		    "version %d (tables tollgate_schema, calls, alerts, kills, "
		    "ship_cursors)",
		    where, to);
	else
		xasprintf(report,
		    "ship init: migrated the fleet ledger at %s from schema "
		    "version %d to %d",
		    where, from, to);
	free(where);
	PQfinish(conn);
	return (0);
}
