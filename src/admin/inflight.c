/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The calls in flight in GET /v1/calls. Their rows are in the ledger's
 * journal and in memory (ledger_in_flight), not yet in SQLite, which gets
 * each call's row once, final. So the loop copies them into the job when
 * it queues a calls query, and the local reader puts the copy into a
 * temporary table of its connection (temp.calls_open, the calls table's
 * columns) just before it runs the query against both tables at once
 * (ADMIN_CALLS_NOW): a page shows a call in flight as in_flight, with its
 * reservation, and then, once settled, its final row.
 */
#include <stdint.h>
#include <stdlib.h>

#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/spend.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

#include "admin_int.h"

static const char create_sql[] = "CREATE TEMP TABLE IF NOT EXISTS calls_open AS"
				 " SELECT * FROM main.calls WHERE 0";

static const char insert_sql[] =
    "INSERT INTO temp.calls_open (id, started_at, provider, endpoint,"
    " upstream, model, intent, team, tenant, agent_class, environment,"
    " key_fingerprint, stream, status, input_tokens, output_tokens,"
    " cached_input_tokens, cache_write_tokens, reasoning_tokens,"
    " usage_source, cost_nusd, reserved_nusd, price_version)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
    " 'in_flight', 0, 0, 0, 0, 0, ?14, 0, ?15, ?16)";

static int
bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL)
		return (sqlite3_bind_null(st, i));
	return (sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC));
}

/*
 * Put the n rows in flight into temp.calls_open on db (the local
 * reader's connection), replacing what an earlier query left. 0, or -1
 * with *cause.
 */
int
admin_in_flight_load(
    sqlite3 *db, const struct ledger_row *rows, size_t n, char **cause)
{
	const struct ledger_row *r;
	sqlite3_stmt *st = NULL;
	char started[40];
	size_t i;
	int k, rc;

	/*
	 * The connection is query_only, which bars temporary tables too;
	 * it is opened read-only as well, so the ledger stays out of reach.
	 */
	if (sqlite3_exec(db, "PRAGMA query_only = 0", NULL, NULL, NULL) !=
		SQLITE_OK ||
	    sqlite3_exec(db, create_sql, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, "DELETE FROM temp.calls_open", NULL, NULL, NULL) !=
		SQLITE_OK)
		goto fail;
	if (n == 0)
		goto done;
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, insert_sql, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	for (i = 0; i < n; i++) {
		r = &rows[i];
		if (spend_format_time(
			r->lr_started_ms, started, sizeof(started)) != 0)
			started[0] = '\0';
		rc = bind_text(st, 1, r->lr_id);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 2, started);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 3, r->lr_provider);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 4, r->lr_endpoint);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 5, r->lr_upstream);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 6, r->lr_model);
		for (k = 0; k < TAG_MAX && rc == SQLITE_OK; k++)
			rc = bind_text(st, 7 + k, r->lr_tags[k]);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 12, r->lr_key_fingerprint);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int(st, 13, r->lr_stream != 0);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 14,
			    ledger_usage_source_name(r->lr_usage_source));
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(st, 15, r->lr_reserved_nusd);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 16, r->lr_price_version);
		if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE)
			goto fail;
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	sqlite3_finalize(st);
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		st = NULL;
		goto fail;
	}
done:
	(void)sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL);
	return (0);
fail:
	xasprintf(cause, "ledger: calls in flight: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	if (!sqlite3_get_autocommit(db))
		(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	(void)sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL);
	return (-1);
}
