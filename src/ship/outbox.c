/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local ledger's side of shipping: what is shipped (each stream's
 * table and columns, the same names in the local ledger and in
 * PostgreSQL), and the reading of it on a read-only SQLite connection of
 * the shipper's own: the rows after a cursor as one JSON array, the
 * cursors and instance name in ship_cursor, the backlog and the age of
 * its oldest row, and the statement that upserts a batch. Used by the
 * shipper's thread alone.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/ship.h"
#include "tollgate/spend.h"
#include "tollgate/util.h"

#include "ship_int.h"

/*
 * One stream: its columns, the same names in the local ledger and in
 * PostgreSQL (after PostgreSQL's instance column), the first being id,
 * and what its rows' "finished" time is, for the lag.
 */
struct ship_table {
	const char *st_name; /* the table, and the stream's name */
	const char *st_cols; /* local and PostgreSQL columns but instance */
	const char *st_time; /* SQL for the row's finished time */
};

/* clang-format off */
static const struct ship_table ship_tables[SHIP_NSTREAMS] = {
    {"calls", LEDGER_ROW_COLUMNS, "coalesce(finished_at, started_at)"},
    {"alerts",
	"id, fired_at, kind, policy, scope_key, intent, team, tenant,"
	" agent_class, environment, \"window\", window_start, reset_at,"
	" threshold_nusd, spent_nusd, cap_nusd, message, delivery, attempts",
	"fired_at"},
    {"kills",
	"id, created_at, expires_at, match, reason, source, deleted_at",
	"coalesce(deleted_at, created_at)"},
};
/* clang-format on */

/* A stream's name, as in ship_cursor and ship_cursors. */
const char *
ship_stream_name(enum ship_stream s)
{
	return (s < SHIP_NSTREAMS ? ship_tables[s].st_name : "?");
}

/* Close the local connection and its statements; ob can be opened again. */
void
ship_outbox_close(struct ship_outbox *ob)
{
	size_t i;

	for (i = 0; i < SHIP_NSTREAMS; i++) {
		sqlite3_finalize(ob->ob_rows[i]);
		sqlite3_finalize(ob->ob_count[i]);
		sqlite3_finalize(ob->ob_oldest[i]);
		ob->ob_rows[i] = NULL;
		ob->ob_count[i] = NULL;
		ob->ob_oldest[i] = NULL;
	}
	sqlite3_close(ob->ob_db);
	ob->ob_db = NULL;
}

/*
 * Open the ledger at ob_path read-only (again, when its file was rebuilt:
 * ob_gen is the ledger's generation it was opened under) and prepare the
 * statements. Returns 0, or -1 with *cause set.
 */
int
ship_outbox_open(struct ship_outbox *ob, char **cause)
{
	char *sql = NULL;
	size_t i;

	ship_outbox_close(ob);
	ob->ob_gen = ledger_generation();
	if ((ob->ob_db = spend_open(ob->ob_path, cause)) == NULL)
		return (-1);
	for (i = 0; i < SHIP_NSTREAMS; i++) {
		xasprintf(&sql,
		    "SELECT %s, ship_seq FROM %s WHERE ship_seq > ?1"
		    " ORDER BY ship_seq LIMIT ?2",
		    ship_tables[i].st_cols, ship_tables[i].st_name);
		if (sqlite3_prepare_v2(
			ob->ob_db, sql, -1, &ob->ob_rows[i], NULL) != SQLITE_OK)
			goto fail;
		free(sql);
		xasprintf(&sql, "SELECT count(*) FROM %s WHERE ship_seq > ?1",
		    ship_tables[i].st_name);
		if (sqlite3_prepare_v2(ob->ob_db, sql, -1, &ob->ob_count[i],
			NULL) != SQLITE_OK)
			goto fail;
		free(sql);
		xasprintf(&sql,
		    "SELECT %s FROM %s WHERE ship_seq > ?1"
		    " ORDER BY ship_seq LIMIT 1",
		    ship_tables[i].st_time, ship_tables[i].st_name);
		if (sqlite3_prepare_v2(ob->ob_db, sql, -1, &ob->ob_oldest[i],
			NULL) != SQLITE_OK)
			goto fail;
		free(sql);
		sql = NULL;
	}
	return (0);
fail:
	xasprintf(cause, "%s: %s", ob->ob_path, sqlite3_errmsg(ob->ob_db));
	free(sql);
	ship_outbox_close(ob);
	return (-1);
}

/*
 * Read ship_cursor: into cursor[] each stream's seq (0 when it has none),
 * and the instance name the ledger shipped under into *instance (NULL
 * when it never shipped). Returns 0, or -1 with *cause set.
 */
int
ship_outbox_cursors(
    struct ship_outbox *ob, int64_t *cursor, char **instance, char **cause)
{
	sqlite3_stmt *st = NULL;
	const char *stream, *inst;
	size_t i;
	int rc;

	*instance = NULL;
	for (i = 0; i < SHIP_NSTREAMS; i++)
		cursor[i] = 0;
	if (sqlite3_prepare_v2(ob->ob_db,
		"SELECT stream, instance, seq FROM ship_cursor", -1, &st,
		NULL) != SQLITE_OK)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		stream = (const char *)sqlite3_column_text(st, 0);
		inst = (const char *)sqlite3_column_text(st, 1);
		for (i = 0; stream != NULL && i < SHIP_NSTREAMS; i++)
			if (strcmp(stream, ship_tables[i].st_name) == 0)
				cursor[i] = sqlite3_column_int64(st, 2);
		if (*instance == NULL && inst != NULL)
			*instance = xstrdup(inst);
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return (0);
fail:
	xasprintf(cause, "reading ship_cursor in %s: %s", ob->ob_path,
	    sqlite3_errmsg(ob->ob_db));
	sqlite3_finalize(st);
	free(*instance);
	*instance = NULL;
	return (-1);
}

/*
 * Count what is left to ship after the cursors into *backlog, and the
 * finished time (Unix ms) of the oldest of it into *oldest (0: none).
 * Each statement is reset at once, so that no read transaction stays
 * open to hold the ledger's checkpoints back.
 */
void
ship_outbox_measure(struct ship_outbox *ob, const int64_t *cursor,
    uint64_t *backlog, int64_t *oldest)
{
	sqlite3_stmt *st;
	const char *t;
	int64_t ms;
	size_t i;

	*backlog = 0;
	*oldest = 0;
	for (i = 0; ob->ob_db != NULL && i < SHIP_NSTREAMS; i++) {
		st = ob->ob_count[i];
		sqlite3_bind_int64(st, 1, cursor[i]);
		if (sqlite3_step(st) == SQLITE_ROW)
			*backlog += (uint64_t)sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
		st = ob->ob_oldest[i];
		sqlite3_bind_int64(st, 1, cursor[i]);
		if (sqlite3_step(st) == SQLITE_ROW &&
		    (t = (const char *)sqlite3_column_text(st, 0)) != NULL &&
		    spend_parse_time(t, 0, &ms) == 0 &&
		    (*oldest == 0 || ms < *oldest))
			*oldest = ms;
		sqlite3_reset(st);
	}
}

/*
 * Stream i's rows after ship_seq after, at most limit, as one JSON array
 * of objects into *json (NULL when there are none; the caller frees it),
 * their number into *n and the last one's ship_seq into *last. Every
 * value is a JSON string, which PostgreSQL reads with the column's own
 * type: no number goes through a double. Returns 0, or -1 with *cause.
 */
int
ship_outbox_rows(struct ship_outbox *ob, size_t i, int64_t after, int limit,
    char **json, int *n, int64_t *last, char **cause)
{
	sqlite3_stmt *st = ob->ob_rows[i];
	cJSON *rows, *row;
	const char *v;
	int rc, c, ncols;

	*json = NULL;
	*n = 0;
	*last = 0;
	rows = cJSON_CreateArray();
	sqlite3_bind_int64(st, 1, after);
	sqlite3_bind_int(st, 2, limit);
	ncols = sqlite3_column_count(st) - 1; /* the last is ship_seq */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row = cJSON_CreateObject();
		for (c = 0; c < ncols; c++) {
			v = (const char *)sqlite3_column_text(st, c);
			if (v == NULL)
				cJSON_AddNullToObject(
				    row, sqlite3_column_name(st, c));
			else
				cJSON_AddStringToObject(
				    row, sqlite3_column_name(st, c), v);
		}
		cJSON_AddItemToArray(rows, row);
		*last = sqlite3_column_int64(st, ncols);
		(*n)++;
	}
	if (rc != SQLITE_DONE) {
		xasprintf(cause, "reading %s from %s: %s",
		    ship_tables[i].st_name, ob->ob_path,
		    sqlite3_errmsg(ob->ob_db));
		sqlite3_reset(st);
		cJSON_Delete(rows);
		return (-1);
	}
	sqlite3_reset(st);
	if (*n > 0 && (*json = cJSON_PrintUnformatted(rows)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(rows);
	return (0);
}

/*
 * The batch's statement for stream i, one statement atomic on its own:
 * the rows of $2 (ship_outbox_rows' array) upserted by ($1 the instance,
 * id), every column but id updated, and the stream's cursor in
 * ship_cursors raised to $3. The caller frees it.
 */
char *
ship_outbox_upsert_sql(size_t i)
{
	const struct ship_table *t = &ship_tables[i];
	const char *p, *end;
	char *set = NULL, *tmp, *sql;
	size_t n;

	for (p = strchr(t->st_cols, ',') + 1; *p != '\0'; p = end) {
		while (*p == ' ')
			p++;
		end = p + strcspn(p, ",");
		n = (size_t)(end - p);
		if (set == NULL)
			xasprintf(
			    &set, "%.*s = EXCLUDED.%.*s", (int)n, p, (int)n, p);
		else {
			xasprintf(&tmp, "%s, %.*s = EXCLUDED.%.*s", set, (int)n,
			    p, (int)n, p);
			free(set);
			set = tmp;
		}
		if (*end == ',')
			end++;
	}
	xasprintf(&sql,
	    "WITH c AS (INSERT INTO %s (instance, %s)"
	    " SELECT $1::text, %s FROM json_populate_recordset(NULL::%s,"
	    " $2::json)"
	    " ON CONFLICT (instance, id) DO UPDATE SET %s)"
	    " INSERT INTO ship_cursors (instance, stream, seq)"
	    " VALUES ($1::text, '%s', $3::bigint)"
	    " ON CONFLICT (instance, stream) DO UPDATE SET"
	    " seq = GREATEST(ship_cursors.seq, EXCLUDED.seq),"
	    " shipped_at = now()",
	    t->st_name, t->st_cols, t->st_cols, t->st_name, set, t->st_name);
	free(set);
	return (sql);
}
