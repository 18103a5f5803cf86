/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet's spend and calls answers: the statements src/spend/ builds
 * for the local ledger's calls table, in PostgreSQL's dialect, run on the
 * fleet ledger's calls table (every instance's rows), read into the same
 * struct spend_result and written by the same code as JSON, CSV or a
 * table; calls rows carry their instance. Values are passed as text and
 * read back as text: money stays integer nano-USD, never a float.
 *
 * A ship_link is one lazily made connection with the ledger.ship: it was
 * given; a failed statement drops the connection, so the next query
 * connects again. Blocking libpq calls: the command line, or a thread of
 * its own (the admin API's fleet reader), never the event loop.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "tollgate/config.h"
#include "tollgate/ship.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "ship_int.h"

/* The longest a fleet answer's statement may run on the server. */
#define SHIP_QUERY_TIMEOUT "SET statement_timeout = '30s'"

/* PostgreSQL's type oids of the integers (pg_type.h, stable since 7.x). */
#define SHIP_INT8OID 20
#define SHIP_INT2OID 21
#define SHIP_INT4OID 23

/* A connection to the fleet ledger for queries; see the file comment. */
struct ship_link {
	struct ship_conf sl_conf; /* owned copy of ledger.ship: */
	PGconn *sl_conn; /* NULL until a query connects */
	PGcancel *sl_cancel; /* for ship_link_cancel; under sl_mtx */
	pthread_mutex_t sl_mtx;
};

static char *
dup_or_null(const char *s)
{
	return (s != NULL ? xstrdup(s) : NULL);
}

/* A link for sc's database; nothing is connected yet. */
struct ship_link *
ship_link_new(const struct ship_conf *sc)
{
	struct ship_link *sl = xcalloc(1, sizeof(*sl));

	sl->sl_conf.sc_conninfo = dup_or_null(sc->sc_conninfo);
	sl->sl_conf.sc_sslmode = dup_or_null(sc->sc_sslmode);
	sl->sl_conf.sc_password = dup_or_null(sc->sc_password);
	sl->sl_conf.sc_password_env = dup_or_null(sc->sc_password_env);
	pthread_mutex_init(&sl->sl_mtx, NULL);
	return (sl);
}

/* Drop the connection (the next query makes a new one). */
static void
link_close(struct ship_link *sl)
{
	pthread_mutex_lock(&sl->sl_mtx);
	if (sl->sl_cancel != NULL)
		PQfreeCancel(sl->sl_cancel);
	sl->sl_cancel = NULL;
	pthread_mutex_unlock(&sl->sl_mtx);
	if (sl->sl_conn != NULL)
		PQfinish(sl->sl_conn);
	sl->sl_conn = NULL;
}

/* Close the link's connection and free it, its password wiped. */
void
ship_link_free(struct ship_link *sl)
{
	if (sl == NULL)
		return;
	link_close(sl);
	free(sl->sl_conf.sc_conninfo);
	free(sl->sl_conf.sc_sslmode);
	if (sl->sl_conf.sc_password != NULL)
		freezero(
		    sl->sl_conf.sc_password, strlen(sl->sl_conf.sc_password));
	free(sl->sl_conf.sc_password_env);
	pthread_mutex_destroy(&sl->sl_mtx);
	free(sl);
}

/*
 * Ask the server to stop the statement the link runs now, if any: from
 * another thread, so that stopping does not wait for a long query.
 */
void
ship_link_cancel(struct ship_link *sl)
{
	char err[256];

	pthread_mutex_lock(&sl->sl_mtx);
	if (sl->sl_cancel != NULL)
		(void)PQcancel(sl->sl_cancel, err, sizeof(err));
	pthread_mutex_unlock(&sl->sl_mtx);
}

/* Connect if not connected (or the connection broke); 0 or -1. */
static int
link_open(struct ship_link *sl, char **cause)
{
	const struct ship_conf *sc = &sl->sl_conf;
	char *why = NULL;

	if (sl->sl_conn != NULL && PQstatus(sl->sl_conn) == CONNECTION_OK)
		return (0);
	link_close(sl);
	if (sc->sc_password_env != NULL && sc->sc_password == NULL) {
		xasprintf(cause,
		    "fleet ledger: ledger.ship.password_env: the environment "
		    "variable %s is not set",
		    sc->sc_password_env);
		return (-1);
	}
	if ((sl->sl_conn = ship_connect(sc, &why)) == NULL) {
		xasprintf(cause, "fleet ledger: %s", why);
		free(why);
		return (-1);
	}
	/*
	 * One query at a time runs on the fleet's reader thread: a query
	 * that scans for longer ends in an error rather than holding every
	 * fleet answer behind it.
	 */
	if (ship_exec(sl->sl_conn, sc, SHIP_QUERY_TIMEOUT, PGRES_COMMAND_OK,
		"setting up the session", NULL, &why) == -1) {
		xasprintf(cause, "fleet ledger: %s", why);
		free(why);
		PQfinish(sl->sl_conn);
		sl->sl_conn = NULL;
		return (-1);
	}
	pthread_mutex_lock(&sl->sl_mtx);
	sl->sl_cancel = PQgetCancel(sl->sl_conn);
	pthread_mutex_unlock(&sl->sl_mtx);
	return (0);
}

/*
 * Run s on the link (connecting first if need be): the tuples, or NULL
 * with *cause set (scrubbed) and the connection dropped.
 */
static PGresult *
link_exec(struct ship_link *sl, const struct spend_stmt *s, char **cause)
{
	char sql[SPEND_SQL_MAX + 3 * SPEND_PARAMS_MAX];
	const char *vals[SPEND_PARAMS_MAX];
	PGresult *r;
	char *msg;
	int n, i, retry;

	if ((n = spend_sql_number(s->st_sql, sql, sizeof(sql))) !=
	    s->st_nparams)
		abort(); /* cannot happen: the statement is ours */
	for (i = 0; i < n; i++)
		vals[i] = s->st_params[i];
	for (retry = sl->sl_conn != NULL;; retry = 0) {
		if (link_open(sl, cause) != 0)
			return (NULL);
		r = PQexecParams(
		    sl->sl_conn, sql, n, NULL, vals, NULL, NULL, 0);
		if (r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK)
			return (r);
		/*
		 * A connection kept from an earlier query may have been
		 * closed meanwhile (a restart, a failover, an idle timeout):
		 * one more try on a new one, so that costs no failed query.
		 */
		if (!retry || PQstatus(sl->sl_conn) != CONNECTION_BAD)
			break;
		PQclear(r);
		link_close(sl);
	}
	msg = ship_error(r, sl->sl_conn, sl->sl_conf.sc_password);
	xasprintf(cause, "fleet ledger: PostgreSQL: %s", msg);
	free(msg);
	PQclear(r);
	link_close(sl);
	return (NULL);
}

/* A whole int64 from PostgreSQL's text; -1 if it is not one. */
static int
text_int64(const char *s, int64_t *v)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0)
		return (-1);
	*v = n;
	return (0);
}

/* Read a grouping statement's tuples (keys, four sums) into r. */
static int
link_groups(struct ship_link *sl, const struct spend_stmt *s,
    const struct spend_query *q, struct spend_result *r, char **cause)
{
	char *keys[SPEND_DIM_MAX];
	int64_t v[4];
	PGresult *res;
	int row, i, rc = -1;

	if ((res = link_exec(sl, s, cause)) == NULL)
		return (-1);
	if (PQnfields(res) != (int)q->sq_ngroup + 4) {
		xasprintf(cause, "fleet ledger: %d columns, expected %zu",
		    PQnfields(res), q->sq_ngroup + 4);
		goto out;
	}
	for (row = 0; row < PQntuples(res); row++) {
		for (i = 0; i < (int)q->sq_ngroup; i++)
			keys[i] = PQgetisnull(res, row, i)
			    ? NULL
			    : PQgetvalue(res, row, i);
		for (i = 0; i < 4; i++)
			if (text_int64(
				PQgetvalue(res, row, (int)q->sq_ngroup + i),
				&v[i]) != 0) {
				*cause = xstrdup("total: integer overflow");
				goto out;
			}
		if (spend_result_add(r, q, keys, v, cause) != 0)
			goto out;
	}
	rc = 0;
out:
	PQclear(res);
	return (rc);
}

/*
 * Answer a spend query from the fleet ledger into r, as spend_run does
 * from the local one (on its calls table: the fleet has no rollup). -1
 * with a cause (scrubbed of the password) when PostgreSQL cannot be
 * reached or fails, or the answer would pass SPEND_ROWS_MAX groups.
 */
int
ship_query_run(struct ship_link *sl, const struct spend_query *q,
    struct spend_result *r, char **cause)
{
	struct spend_stmt s;
	struct spend_result fb;

	memset(r, 0, sizeof(*r));
	memset(&fb, 0, sizeof(fb));
	r->sr_path = SPEND_PATH_CALLS;
	spend_stmt_spend(&s, q, SPEND_PG);
	if (link_groups(sl, &s, q, r, cause) != 0)
		goto fail;
	spend_stmt_free(&s);
	spend_stmt_fallback(&s, q, SPEND_PG);
	if (link_groups(sl, &s, q, &fb, cause) != 0)
		goto fail;
	spend_stmt_free(&s);
	spend_result_fallback(r, q, &fb);
	spend_stmt_saved(&s, q, SPEND_PG, 1);
	if (link_groups(sl, &s, q, &fb, cause) != 0)
		goto fail;
	spend_stmt_free(&s);
	spend_result_saved(r, q, &fb);
	return (0);
fail:
	spend_stmt_free(&s);
	spend_result_free(&fb);
	spend_result_free(r);
	return (-1);
}

/*
 * Answer a calls query from the fleet ledger into o, as spend_calls does
 * from the local one; each row also names its instance, and so does the
 * next cursor.
 */
int
ship_query_calls(struct ship_link *sl, const struct spend_query *q,
    struct spend_out *o, char **cause)
{
	struct spend_cell row[64];
	struct spend_stmt s;
	struct spend_page p;
	PGresult *res;
	Oid type;
	int t, i, ncol;

	spend_stmt_calls(&s, q, SPEND_PG);
	res = link_exec(sl, &s, cause);
	spend_stmt_free(&s);
	if (res == NULL)
		return (-1);
	if ((ncol = PQnfields(res)) > (int)nitems(row))
		ncol = (int)nitems(row);
	spend_page_begin(&p, q, o);
	for (t = 0; t < PQntuples(res); t++) {
		for (i = 0; i < ncol; i++) {
			type = PQftype(res, i);
			row[i].sc_name = PQfname(res, i);
			row[i].sc_text = PQgetisnull(res, t, i)
			    ? NULL
			    : PQgetvalue(res, t, i);
			row[i].sc_int = type == SHIP_INT8OID ||
			    type == SHIP_INT4OID || type == SHIP_INT2OID;
		}
		if (spend_page_row(&p, row, (size_t)ncol) == 1)
			break;
	}
	spend_page_end(&p);
	PQclear(res);
	return (0);
}

static int
fleet_run(
    void *sl, const struct spend_query *q, struct spend_result *r, char **cause)
{
	return (ship_query_run(sl, q, r, cause));
}

static int
fleet_calls(
    void *sl, const struct spend_query *q, struct spend_out *o, char **cause)
{
	return (ship_query_calls(sl, q, o, cause));
}

/*
 * GET /v1/spend?fleet=1 or /v1/calls?fleet=1 on the link: as
 * spend_answer, but a fleet ledger that cannot be reached or fails is a
 * 503, with a cause that says why (scrubbed).
 */
int
ship_answer(struct ship_link *sl, enum spend_kind kind, const char *qs,
    struct spend_out *o, const char **ctype, char **cause)
{
	struct spend_source src = {fleet_run, fleet_calls, sl, 1, NULL, 503};

	return (spend_answer_from(&src, kind, qs, o, ctype, cause));
}
