/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The rows SQLite does not have yet, for the readers that must not miss
 * them. A call's row reaches SQLite a moment after its answer: in flight
 * it is in the journal and in memory (inflight.c); once settled, the
 * loop keeps its final row, the writer's own queued item, on l_unwritten
 * until the writer is done with it. ledger_unwritten copies both on the loop, for a reader
 * thread; ledger_rows_load puts such a copy into temp.calls_open on the
 * reader's own connection, where LEDGER_CALLS_NOW reads it and the calls
 * table as one: /v1/calls, and a reload's rebuild of budget counters.
 */
#include <sys/queue.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/util.h"

#include "ledger_int.h"

static const char open_create_sql[] =
    "CREATE TEMP TABLE IF NOT EXISTS calls_open AS"
    " SELECT * FROM main.calls WHERE 0";

static const char open_insert_sql[] =
    "INSERT INTO temp.calls_open (" LEDGER_ROW_COLUMNS ") VALUES (?1, ?2,"
    " ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"
    " ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31,"
    " ?32, ?33, ?34, ?35)";

/*
 * Free the settlements at the head of l_unwritten the writer is done
 * with (written, or given up and left to the journal), or, with all set
 * once the writer has stopped, every one. One lock; the frees after it.
 * A settlement done out of order waits for those before it, shown once
 * by LEDGER_CALLS_NOW meanwhile. Loop thread only.
 */
void
unwritten_trim(struct ledger *l, int all)
{
	struct ledger_items gone = TAILQ_HEAD_INITIALIZER(gone);
	struct ledger_item *it;

	if (TAILQ_EMPTY(&l->l_unwritten))
		return;
	if (!all)
		pthread_mutex_lock(&l->l_lock);
	while ((it = TAILQ_FIRST(&l->l_unwritten)) != NULL &&
	    (all || it->li_done)) {
		TAILQ_REMOVE(&l->l_unwritten, it, li_open);
		TAILQ_INSERT_TAIL(&gone, it, li_open);
		l->l_nunwritten--;
	}
	if (!all)
		pthread_mutex_unlock(&l->l_lock);
	while ((it = TAILQ_FIRST(&gone)) != NULL) {
		TAILQ_REMOVE(&gone, it, li_open);
		free(it);
	}
}

/* Copy its row and its strings to *out and *p; advance both. */
static void
row_copy(const struct ledger_item *it, struct ledger_row **out, char **p)
{
	const char **f[LEDGER_ROW_FIELDS_MAX];
	size_t k, nf, len;

	**out = it->li_row;
	nf = ledger_row_fields(*out, f);
	for (k = 0; k < nf; k++) {
		if (*f[k] == NULL)
			continue;
		len = strlen(*f[k]) + 1;
		memcpy(*p, *f[k], len);
		*f[k] = *p;
		*p += len;
	}
	(*out)++;
}

/* Bytes of its strings, NULs included. */
static size_t
row_strings(struct ledger_item *it)
{
	const char **f[LEDGER_ROW_FIELDS_MAX];
	size_t k, nf, n = 0;

	nf = ledger_row_fields(&it->li_row, f);
	for (k = 0; k < nf; k++)
		if (*f[k] != NULL)
			n += strlen(*f[k]) + 1;
	return (n);
}

/*
 * A copy of the rows SQLite may not have yet, in *rows: l's calls in
 * flight in order of reservation (status in_flight, at their
 * reservation), then the settlements the writer is not done with, final
 * (under l_lock, which says which those are). One allocation (the rows
 * and their strings) that the caller frees, NULL when there are none;
 * any thread may read and free it. A row the writer commits after this
 * may be in SQLite too: readers take SQLite's. Returns how many.
 */
size_t
unwritten_copy(struct ledger *l, struct ledger_row **rows)
{
	struct ledger_item *it;
	struct ledger_row *out, *o;
	size_t n = 0, strs = 0;
	char *p;

	*rows = NULL;
	unwritten_trim(l, 0);
	if (l->l_inflight.if_n == 0 && l->l_nunwritten == 0)
		return (0);
	pthread_mutex_lock(&l->l_lock);
	TAILQ_FOREACH(it, &l->l_inflight.if_all, li_open)
	{
		strs += row_strings(it);
		n++;
	}
	TAILQ_FOREACH(it, &l->l_unwritten, li_open)
	{
		if (it->li_done)
			continue;
		strs += row_strings(it);
		n++;
	}
	if (n == 0) {
		pthread_mutex_unlock(&l->l_lock);
		return (0);
	}
	out = o = xmalloc(n * sizeof(*out) + strs);
	p = (char *)(out + n);
	TAILQ_FOREACH(it, &l->l_inflight.if_all, li_open)
	{
		row_copy(it, &o, &p);
		o[-1].lr_status = CALL_IN_FLIGHT;
	}
	TAILQ_FOREACH(it, &l->l_unwritten, li_open)
	{
		if (!it->li_done)
			row_copy(it, &o, &p);
	}
	pthread_mutex_unlock(&l->l_lock);
	*rows = out;
	return (n);
}

/*
 * Put the n rows of a ledger_unwritten copy into temp.calls_open on db (a
 * reader's connection, query_only), replacing what an earlier call left.
 * 0, or -1 with *cause.
 */
int
ledger_rows_load(
    sqlite3 *db, const struct ledger_row *rows, size_t n, char **cause)
{
	struct ledger_times tb;
	sqlite3_stmt *st = NULL;
	size_t i;

	/*
	 * A query_only connection may not write temporary tables either;
	 * opened read-only, the ledger itself stays out of reach. In memory:
	 * these rows pile up while the disk is full, which a temporary file
	 * would then fail on too.
	 */
	if (sqlite3_exec(db, "PRAGMA query_only = 0", NULL, NULL, NULL) !=
		SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA temp_store = MEMORY", NULL, NULL, NULL) !=
		SQLITE_OK ||
	    sqlite3_exec(db, open_create_sql, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, "DELETE FROM temp.calls_open", NULL, NULL, NULL) !=
		SQLITE_OK)
		goto fail;
	if (n == 0)
		goto done;
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, open_insert_sql, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	for (i = 0; i < n; i++) {
		if (ledger_row_bind(st, &rows[i], rows[i].lr_status, &tb) !=
			SQLITE_OK ||
		    sqlite3_step(st) != SQLITE_DONE)
			goto fail;
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
done:
	(void)sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL);
	return (0);
fail:
	xasprintf(
	    cause, "ledger: rows not yet written: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	if (!sqlite3_get_autocommit(db))
		(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	(void)sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL);
	return (-1);
}
