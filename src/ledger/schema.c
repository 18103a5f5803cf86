/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's schema: the calls table and the calls_daily rollup its
 * triggers keep (the write connection's copies of them, which leave its
 * own inserts to the writer), the alerts and kills tables, the version
 * check, and the rewrite of the first ledgers' CHECK constraints. Run by store.c while it
 * opens the write connection, on the thread that opens it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

/*
 * Version 1 of the schema. Columns of calls are docs/operations.md's (The ledger), in its order.
 * The rollup's key folds NULL to '' because NULLs are distinct in a primary
 * key; a row counts in it while its status is final, so the triggers add a
 * row when it becomes final and take it out again if a final row is changed
 * or deleted by hand: the rollup always equals the sum over final rows.
 */
/* clang-format off */
#define ROLLUP_KEY(r)                                                          \
	"substr(" r ".started_at, 1, 10), coalesce(" r ".provider, ''), "      \
	"coalesce(" r ".model, ''), coalesce(" r ".team, ''), "                \
	"coalesce(" r ".tenant, ''), coalesce(" r ".agent_class, ''), "        \
	"coalesce(" r ".environment, '')"
#define ROLLUP_MATCH(r)                                                        \
	" WHERE day = substr(" r ".started_at, 1, 10)"                         \
	" AND provider = coalesce(" r ".provider, '')"                         \
	" AND model = coalesce(" r ".model, '')"                               \
	" AND team = coalesce(" r ".team, '')"                                 \
	" AND tenant = coalesce(" r ".tenant, '')"                             \
	" AND agent_class = coalesce(" r ".agent_class, '')"                   \
	" AND environment = coalesce(" r ".environment, '')"
#define ROLLUP_ADD(r)                                                          \
	"INSERT INTO calls_daily VALUES (" ROLLUP_KEY(r) ", 1, "               \
	r ".input_tokens, " r ".output_tokens, " r ".cached_input_tokens, "    \
	r ".cache_write_tokens, " r ".reasoning_tokens, " r ".cost_nusd)"      \
	" ON CONFLICT (day, provider, model, team, tenant, agent_class,"       \
	" environment) DO UPDATE SET calls = calls + 1,"                       \
	" input_tokens = input_tokens + excluded.input_tokens,"                \
	" output_tokens = output_tokens + excluded.output_tokens,"             \
	" cached_input_tokens = cached_input_tokens +"                         \
	" excluded.cached_input_tokens,"                                       \
	" cache_write_tokens = cache_write_tokens +"                           \
	" excluded.cache_write_tokens,"                                        \
	" reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,"    \
	" cost_nusd = cost_nusd + excluded.cost_nusd;"
#define ROLLUP_SUB(r)                                                          \
	"UPDATE calls_daily SET calls = calls - 1,"                            \
	" input_tokens = input_tokens - " r ".input_tokens,"                   \
	" output_tokens = output_tokens - " r ".output_tokens,"                \
	" cached_input_tokens = cached_input_tokens - "                        \
	r ".cached_input_tokens,"                                              \
	" cache_write_tokens = cache_write_tokens - " r ".cache_write_tokens," \
	" reasoning_tokens = reasoning_tokens - " r ".reasoning_tokens,"       \
	" cost_nusd = cost_nusd - " r ".cost_nusd" ROLLUP_MATCH(r) ";"         \
	" DELETE FROM calls_daily" ROLLUP_MATCH(r) " AND calls = 0;"
#define ROLLUP_UPDATE_TRIGGERS                                                 \
	"CREATE TRIGGER calls_daily_update_out AFTER UPDATE ON calls"          \
	" WHEN OLD.status <> 'in_flight'"                                      \
	" BEGIN " ROLLUP_SUB("OLD") " END;"                                    \
	"CREATE TRIGGER calls_daily_update_in AFTER UPDATE ON calls"           \
	" WHEN NEW.status <> 'in_flight'"                                      \
	" BEGIN " ROLLUP_ADD("NEW") " END;"
#define ROLLUP_TRIGGERS                                                        \
	"CREATE TRIGGER calls_daily_insert AFTER INSERT ON calls"              \
	" WHEN NEW.status <> 'in_flight'"                                      \
	" BEGIN " ROLLUP_ADD("NEW") " END;"                                    \
	ROLLUP_UPDATE_TRIGGERS                                                 \
	"CREATE TRIGGER calls_daily_delete AFTER DELETE ON calls"              \
	" WHEN OLD.status <> 'in_flight'"                                      \
	" BEGIN " ROLLUP_SUB("OLD") " END;"
/* clang-format on */

/*
 * The CHECKs on status and usage_source, as comparisons joined by OR: an
 * IN list of more than two values makes SQLite build a temporary index of
 * the list every time a statement that writes the column runs, four per
 * call. Ledgers made with the IN form are rewritten at open (ledger_schema_fix_checks).
 */
#define CHECK_STATUS                                                           \
	"CONSTRAINT status_known CHECK (status = 'in_flight' OR status = "     \
	"'ok' OR status = 'error'"                                             \
	" OR status = 'refused' OR status = 'client_closed'"                   \
	" OR status = 'upstream_error' OR status = 'interrupted'"              \
	" OR status = 'killed')"
/* The forms version 1 ledgers hold, OR and IN: widened at open. */
#define CHECK_STATUS_V1_OR                                                     \
	"CONSTRAINT status_known CHECK (status = 'in_flight' OR status = "     \
	"'ok' OR status = 'error'"                                             \
	" OR status = 'refused' OR status = 'client_closed'"                   \
	" OR status = 'upstream_error' OR status = 'interrupted')"
#define CHECK_STATUS_V1                                                        \
	"CHECK (status IN ('in_flight', 'ok', 'error', 'refused',"             \
	" 'client_closed', 'upstream_error', 'interrupted'))"
#define CHECK_SOURCE                                                           \
	"CONSTRAINT usage_source_known CHECK (usage_source = 'reported' OR "   \
	"usage_source = 'estimated'"                                           \
	" OR usage_source = 'none')"
#define CHECK_SOURCE_V1                                                        \
	"CHECK (usage_source IN ('reported', 'estimated', 'none'))"

static const char schema_v1[] =
    "CREATE TABLE calls ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " started_at TEXT NOT NULL,"
    " finished_at TEXT,"
    " provider TEXT,"
    " endpoint TEXT,"
    " upstream TEXT,"
    " model TEXT,"
    " intent TEXT,"
    " team TEXT,"
    " tenant TEXT,"
    " agent_class TEXT,"
    " environment TEXT,"
    " key_fingerprint TEXT,"
    " stream INTEGER NOT NULL DEFAULT 0 CHECK (stream IN (0, 1)),"
    " status TEXT NOT NULL " CHECK_STATUS ","
    " http_status INTEGER,"
    " input_tokens INTEGER NOT NULL DEFAULT 0,"
    " output_tokens INTEGER NOT NULL DEFAULT 0,"
    " cached_input_tokens INTEGER NOT NULL DEFAULT 0,"
    " cache_write_tokens INTEGER NOT NULL DEFAULT 0,"
    " reasoning_tokens INTEGER NOT NULL DEFAULT 0,"
    " usage_source TEXT NOT NULL DEFAULT 'none' " CHECK_SOURCE ","
    " cost_nusd INTEGER NOT NULL DEFAULT 0,"
    " reserved_nusd INTEGER NOT NULL DEFAULT 0,"
    " price_version TEXT,"
    " refusal_reason TEXT,"
    " latency_ms INTEGER,"
    " ttfb_ms INTEGER"
    ");"
    "CREATE INDEX calls_started ON calls (started_at);"
    "CREATE INDEX calls_team_started ON calls (team, started_at);"
    "CREATE INDEX calls_intent ON calls (intent, started_at);"
    "CREATE INDEX calls_in_flight ON calls (started_at)"
    " WHERE status = 'in_flight';"
    "CREATE TABLE calls_daily ("
    " day TEXT NOT NULL,"
    " provider TEXT NOT NULL,"
    " model TEXT NOT NULL,"
    " team TEXT NOT NULL,"
    " tenant TEXT NOT NULL,"
    " agent_class TEXT NOT NULL,"
    " environment TEXT NOT NULL,"
    " calls INTEGER NOT NULL,"
    " input_tokens INTEGER NOT NULL,"
    " output_tokens INTEGER NOT NULL,"
    " cached_input_tokens INTEGER NOT NULL,"
    " cache_write_tokens INTEGER NOT NULL,"
    " reasoning_tokens INTEGER NOT NULL,"
    " cost_nusd INTEGER NOT NULL,"
    " PRIMARY KEY (day, provider, model, team, tenant, agent_class,"
    " environment)"
    ") WITHOUT ROWID;" ROLLUP_TRIGGERS;

/*
 * Alerts as they fired, with their delivery state. Added beside schema
 * version 1 with IF NOT EXISTS at every open, so ledgers made before it
 * gain the table and nothing else changes; readers never need it to exist
 * before this tollgate has opened the file once. Times are RFC 3339 UTC
 * text like the calls table's (reset_at NULL: never), money nano-USD.
 */
static const char schema_alerts[] =
    "CREATE TABLE IF NOT EXISTS alerts ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " fired_at TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " policy TEXT,"
    " scope_key TEXT,"
    " intent TEXT,"
    " team TEXT,"
    " tenant TEXT,"
    " agent_class TEXT,"
    " environment TEXT,"
    " window TEXT,"
    " window_start TEXT,"
    " reset_at TEXT,"
    " threshold_nusd INTEGER,"
    " spent_nusd INTEGER NOT NULL DEFAULT 0,"
    " cap_nusd INTEGER,"
    " message TEXT,"
    " delivery TEXT NOT NULL DEFAULT 'none'"
    " CHECK (delivery IN ('none', 'pending', 'delivered', 'failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX IF NOT EXISTS alerts_fired ON alerts (fired_at);";

/*
 * Runtime kills (include/tollgate/kills.h), one row per kill ever made:
 * a deletion sets deleted_at and keeps the row, so the table is also the
 * audit trail. Times are RFC 3339 UTC with ms like the calls table, so
 * they compare as text; expires_at NULL means until deleted. match is a
 * JSON object of attribute to glob. Made by its own statement whatever
 * the schema version, so a ledger from before it gains it on open.
 */
static const char kills_schema[] =
    "CREATE TABLE IF NOT EXISTS kills ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " created_at TEXT NOT NULL,"
    " expires_at TEXT,"
    " match TEXT NOT NULL,"
    " reason TEXT NOT NULL,"
    " source TEXT NOT NULL,"
    " deleted_at TEXT"
    ");"
    "CREATE INDEX IF NOT EXISTS kills_live ON kills (created_at)"
    " WHERE deleted_at IS NULL;";

/*
 * Budget extensions (include/tollgate/extensions.h), one row per
 * extension ever made: a revocation sets revoked_at and keeps the row, as
 * the audit trail. scope is the JSON object GET /v1/budgets shows,
 * budget_key the counter it raises, intent the scope's per-intent value
 * (for an intent's timeline). ends_at NULL: until revoked; expires_at
 * NULL: no expiry was asked. Times as in the kills table. Made by its own
 * statement, so a ledger from before it gains it on open.
 */
static const char extensions_schema[] =
    "CREATE TABLE IF NOT EXISTS extensions ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " created_at TEXT NOT NULL,"
    " policy TEXT NOT NULL,"
    " scope TEXT NOT NULL,"
    " budget_key TEXT NOT NULL,"
    " intent TEXT,"
    " window TEXT NOT NULL,"
    " window_start TEXT NOT NULL,"
    " ends_at TEXT,"
    " expires_at TEXT,"
    " nusd INTEGER NOT NULL CHECK (nusd > 0),"
    " reason TEXT NOT NULL,"
    " granted_by TEXT NOT NULL,"
    " instance TEXT,"
    " revoked_at TEXT"
    ");"
    "CREATE INDEX IF NOT EXISTS extensions_live ON extensions (created_at)"
    " WHERE revoked_at IS NULL;"
    "CREATE INDEX IF NOT EXISTS extensions_intent ON extensions"
    " (intent, created_at) WHERE intent IS NOT NULL;";

/*
 * Refuse what this tollgate cannot write to: a newer schema, or a database
 * that has tables but was never a ledger.
 */
int
ledger_schema_check(struct ledger_db *d, int64_t *version, char **cause)
{
	int64_t ntables;

	if (ledger_db_query_int(d, "PRAGMA user_version", version) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "not readable as a ledger"));
	if (*version > LEDGER_SCHEMA_VERSION) {
		xasprintf(cause,
		    "ledger schema version %" PRId64 " is newer than this "
		    "tollgate understands (%d)",
		    *version, LEDGER_SCHEMA_VERSION);
		return (-1);
	}
	if (*version < 0) {
		xasprintf(
		    cause, "bad ledger schema version %" PRId64, *version);
		return (-1);
	}
	if (*version == 0) {
		if (ledger_db_query_int(d, "SELECT count(*) FROM sqlite_schema",
			&ntables) != SQLITE_OK)
			return (ledger_db_fail(
			    d, cause, "not readable as a ledger"));
		if (ntables != 0) {
			*cause = xstrdup("not a tollgate ledger (it has tables "
					 "but no schema version)");
			return (-1);
		}
	}
	return (0);
}

/*
 * Create the calls table and its rollup in one transaction, with version
 * 2's number: the tables added at every open, and ledger_schema_ship, take
 * it on from there in the same open.
 */
int
ledger_schema_create(struct ledger_db *d, const char *path, char **cause)
{
	int64_t version;

	if (sqlite3_exec(d->db_conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return (ledger_db_fail(d, cause, "creating the schema"));
	/* Another process may have made it while we waited for the lock. */
	if (ledger_db_query_int(d, "PRAGMA user_version", &version) !=
	    SQLITE_OK)
		goto fail;
	if (version == 0 &&
	    (sqlite3_exec(d->db_conn, schema_v1, NULL, NULL, NULL) !=
		    SQLITE_OK ||
		sqlite3_exec(d->db_conn,
		    "PRAGMA user_version = " LEDGER_SCHEMA_KILLED_STR, NULL,
		    NULL, NULL) != SQLITE_OK))
		goto fail;
	if (sqlite3_exec(d->db_conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (version == 0)
		log_info("ledger: %s: created schema version %d", path,
		    LEDGER_SCHEMA_VERSION);
	return (0);
fail:
	ledger_db_fail(d, cause, "creating the schema");
	ledger_db_rollback(d);
	return (-1);
}

/* Replace the first from in *sql with to; 1 if it was there. */
static int
replace_once(char **sql, const char *from, const char *to)
{
	char *at, *out;
	size_t flen = strlen(from);

	if ((at = strstr(*sql, from)) == NULL)
		return (0);
	xasprintf(&out, "%.*s%s%s", (int)(at - *sql), *sql, to, at + flen);
	free(*sql);
	*sql = out;
	return (1);
}

/*
 * Bring an older ledger's calls table to this version, in place: give the
 * IN-list CHECKs their equivalent OR form (CHECK_STATUS: the same rows
 * pass; only speed was at stake), and widen the status CHECK to take
 * 'killed' (version 2). No stored byte changes, only the table's text in
 * sqlite_schema: SQLite's documented way to change a constraint in place
 * (PRAGMA writable_schema, then a new schema_version so every connection
 * reloads it), in one transaction with the new user_version. When that is
 * refused (a defensive SQLite build, say) the ledger opens as it was, a
 * warning says so, and calls tollgate ends are recorded 'error' as before
 * (db_v1, which the table's text decides, whatever the version says);
 * -1 only when the table cannot even be read.
 */
int
ledger_schema_fix_checks(
    struct ledger_db *d, const char *path, int64_t version, char **cause)
{
	sqlite3_stmt *st = NULL;
	char *sql = NULL, *upd = NULL;
	int64_t sv;
	int changed = 0, widened, was_widened;

	d->db_v1 = 0;
	/* Until the table's text is read, the version says. */
	was_widened = version >= LEDGER_SCHEMA_KILLED;
	if (sqlite3_exec(d->db_conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return (ledger_db_fail(d, cause, "reading the calls table"));
	if (sqlite3_prepare_v2(d->db_conn,
		"SELECT sql FROM sqlite_schema WHERE type = 'table' AND"
		" name = 'calls'",
		-1, &st, NULL) != SQLITE_OK)
		goto fail;
	if (sqlite3_step(st) == SQLITE_ROW &&
	    sqlite3_column_text(st, 0) != NULL)
		sql = xstrdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	st = NULL;
	was_widened = sql != NULL && strstr(sql, CHECK_STATUS) != NULL;
	if (sql != NULL) {
		changed |= replace_once(&sql, CHECK_STATUS_V1, CHECK_STATUS);
		changed |= replace_once(&sql, CHECK_STATUS_V1_OR, CHECK_STATUS);
		changed |= replace_once(&sql, CHECK_SOURCE_V1, CHECK_SOURCE);
	}
	widened = sql != NULL && strstr(sql, CHECK_STATUS) != NULL;
	if (!changed) {
		free(sql);
		if (!widened) {
			/* A table text this tollgate does not know. */
			d->db_v1 = 1;
			log_warnx(
			    "ledger: %s: the status CHECK is not one this "
			    "tollgate can widen; calls it ends while they "
			    "run are recorded as 'error', not 'killed'",
			    path);
		}
		if (version < LEDGER_SCHEMA_KILLED && widened &&
		    sqlite3_exec(d->db_conn,
			"PRAGMA user_version = " LEDGER_SCHEMA_KILLED_STR, NULL,
			NULL, NULL) != SQLITE_OK)
			goto fail;
		return (sqlite3_exec(d->db_conn, "COMMIT", NULL, NULL, NULL) ==
			    SQLITE_OK
			? 0
			: ledger_db_fail(d, cause, "reading the calls table"));
	}
	if (ledger_db_query_int(d, "PRAGMA schema_version", &sv) != SQLITE_OK ||
	    sqlite3_exec(d->db_conn, "PRAGMA writable_schema = ON", NULL, NULL,
		NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(d->db_conn,
		"UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND"
		" name = 'calls'",
		-1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, sql, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	st = NULL;
	xasprintf(&upd, "PRAGMA schema_version = %" PRId64, sv + 1);
	if (sqlite3_exec(d->db_conn, upd, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(d->db_conn, "PRAGMA writable_schema = OFF", NULL, NULL,
		NULL) != SQLITE_OK ||
	    (widened && version < LEDGER_SCHEMA_KILLED &&
		sqlite3_exec(d->db_conn,
		    "PRAGMA user_version = " LEDGER_SCHEMA_KILLED_STR, NULL,
		    NULL, NULL) != SQLITE_OK) ||
	    sqlite3_exec(d->db_conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	free(upd);
	free(sql);
	d->db_v1 = !widened;
	log_info("ledger: %s: CHECK constraints rewritten to the faster form "
		 "that takes status 'killed' (schema version %d)",
	    path, LEDGER_SCHEMA_KILLED);
	return (0);
fail:
	/* The ledger stays as it was, and works as it did. */
	log_warnx("ledger: %s: the CHECK constraints keep their old form "
		  "(calls tollgate ends while they run are recorded as "
		  "'error'): %s",
	    path, sqlite3_errmsg(d->db_conn));
	sqlite3_finalize(st);
	sqlite3_exec(
	    d->db_conn, "PRAGMA writable_schema = OFF", NULL, NULL, NULL);
	ledger_db_rollback(d);
	free(upd);
	free(sql);
	d->db_v1 = !was_widened;
	return (0);
}

/* Drop every TEMP trigger of the write connection. */
static int
drop_temp_triggers(struct ledger_db *d)
{
	sqlite3_stmt *st = NULL;
	char *sql;
	int rc;

	for (;;) {
		if (sqlite3_prepare_v2(d->db_conn,
			"SELECT name FROM temp.sqlite_schema WHERE"
			" type = 'trigger' LIMIT 1",
			-1, &st, NULL) != SQLITE_OK)
			return (-1);
		if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
			sqlite3_finalize(st);
			return (rc == SQLITE_DONE ? 0 : -1);
		}
		sql = sqlite3_mprintf("DROP TRIGGER temp.\"%w\"",
		    (const char *)sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
		if (sql == NULL)
			return (-1);
		rc = sqlite3_exec(d->db_conn, sql, NULL, NULL, NULL);
		sqlite3_free(sql);
		if (rc != SQLITE_OK)
			return (-1);
	}
}

/*
 * The write connection's rollup, once the schema is in place and before
 * its statements are prepared (a statement's triggers are coded when it
 * is prepared). The calls_daily_insert trigger costs about 36,000
 * instructions a row (a sub-program run per insert, even when its WHEN is
 * false); the writer adds the rows it inserts itself instead, one upsert
 * per rollup key a transaction (store.c). SQLite turns a schema's
 * triggers off for one connection only all together
 * (SQLITE_DBCONFIG_ENABLE_TRIGGER; TEMP triggers still run), so every
 * other trigger, the rollup's for updates (recovery) and deletes
 * (pruning) and any an operator added, is made again as a TEMP trigger of
 * this connection from its text: this connection runs them as before,
 * and every other one, sqlite3 by hand for one, runs all of them. Sets
 * d->db_rollup_self; when a trigger cannot be copied the triggers stay
 * as they are, with a warning, and the insert trigger keeps the rollup.
 */
int
ledger_schema_rollup_writer(struct ledger_db *d, const char *path, char **cause)
{
	static const char create[] = "CREATE TRIGGER ";
	sqlite3_stmt *st = NULL;
	const char *name, *sql;
	char *temp = NULL;
	int on = 1, rc;

	d->db_rollup_self = 0;
	if (sqlite3_prepare_v2(d->db_conn,
		"SELECT name, sql FROM main.sqlite_schema WHERE"
		" type = 'trigger' AND name <> 'calls_daily_insert'",
		-1, &st, NULL) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "reading the triggers"));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		name = (const char *)sqlite3_column_text(st, 0);
		sql = (const char *)sqlite3_column_text(st, 1);
		/* SQLite keeps every trigger's text from this prefix. */
		if (name == NULL || sql == NULL ||
		    strncmp(sql, create, sizeof(create) - 1) != 0) {
			log_warnx("ledger: %s: trigger %s cannot be copied; "
				  "calls_daily is kept by its triggers",
			    path, name != NULL ? name : "?");
			goto keep;
		}
		xasprintf(
		    &temp, "CREATE TEMP TRIGGER %s", sql + sizeof(create) - 1);
		if (sqlite3_exec(d->db_conn, temp, NULL, NULL, NULL) !=
		    SQLITE_OK) {
			log_warnx("ledger: %s: trigger %s cannot be copied "
				  "(%s); calls_daily is kept by its triggers",
			    path, name, sqlite3_errmsg(d->db_conn));
			goto keep;
		}
		free(temp);
		temp = NULL;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (rc != SQLITE_DONE)
		return (ledger_db_fail(d, cause, "reading the triggers"));
	if (sqlite3_db_config(d->db_conn, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0,
		&on) != SQLITE_OK ||
	    on != 0) {
		log_warnx("ledger: %s: triggers cannot be turned off; "
			  "calls_daily is kept by its triggers",
		    path);
		goto keep;
	}
	d->db_rollup_self = 1;
	return (0);
keep:
	/* The copies made so far would run twice beside the originals. */
	free(temp);
	sqlite3_finalize(st);
	if (drop_temp_triggers(d) != 0)
		return (
		    ledger_db_fail(d, cause, "dropping the copied triggers"));
	return (0);
}

/* The alerts table, in ledgers old and new. */
int
ledger_schema_alerts(struct ledger_db *d, char **cause)
{
	if (sqlite3_exec(d->db_conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return (ledger_db_fail(d, cause, "creating the alerts table"));
	if (sqlite3_exec(d->db_conn, schema_alerts, NULL, NULL, NULL) !=
		SQLITE_OK ||
	    sqlite3_exec(d->db_conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		ledger_db_fail(d, cause, "creating the alerts table");
		ledger_db_rollback(d);
		return (-1);
	}
	return (0);
}

/* The kills table, in ledgers old and new. */
int
ledger_schema_kills(struct ledger_db *d, char **cause)
{
	if (sqlite3_exec(d->db_conn, kills_schema, NULL, NULL, NULL) !=
	    SQLITE_OK)
		return (ledger_db_fail(d, cause, "creating the kills table"));
	return (0);
}

/* The extensions table, in ledgers old and new. */
int
ledger_schema_extensions(struct ledger_db *d, char **cause)
{
	if (sqlite3_exec(d->db_conn, extensions_schema, NULL, NULL, NULL) !=
	    SQLITE_OK)
		return (
		    ledger_db_fail(d, cause, "creating the extensions table"));
	return (0);
}

/*
 * The calls table's served_model column and the index of rows priced by
 * a family's rates, in ledgers old and new. A nullable column added at
 * the end breaks no reader or writer that names its columns (every
 * statement here does), so a ledger this adds it to still opens in a
 * tollgate from before it; no schema version is spent on it.
 */
int
ledger_schema_served(struct ledger_db *d, char **cause)
{
	int64_t has;

	if (ledger_db_query_int(d,
		"SELECT count(*) FROM pragma_table_info('calls')"
		" WHERE name = 'served_model'",
		&has) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "reading the calls table"));
	if (has == 0 &&
	    sqlite3_exec(d->db_conn,
		"ALTER TABLE calls ADD COLUMN served_model TEXT", NULL, NULL,
		NULL) != SQLITE_OK)
		return (
		    ledger_db_fail(d, cause, "adding the served_model column"));
	/* /v1/spend reads the fallback-priced share from this alone. */
	if (sqlite3_exec(d->db_conn,
		"CREATE INDEX IF NOT EXISTS calls_fallback ON calls"
		" (started_at) WHERE " LEDGER_FALLBACK_WHERE,
		NULL, NULL, NULL) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "creating calls_fallback"));
	return (0);
}

/*
 * The columns of what was done to spend less on a call (ledger.h): what a
 * routing rule did, how many upstream attempts it took and which failed,
 * whether the response cache answered it; and the units of a cost that
 * was no call (POST /v1/usage). attempts is NULL on the rows written
 * before it was recorded.
 */
static const struct {
	const char *name;
	const char *ddl;
} routing_cols[] = {
    {"routed_from", "ALTER TABLE calls ADD COLUMN routed_from TEXT"},
    {"routed_rule", "ALTER TABLE calls ADD COLUMN routed_rule TEXT"},
    {"saved_nusd",
	"ALTER TABLE calls ADD COLUMN saved_nusd INTEGER NOT NULL DEFAULT 0"},
    {"attempts", "ALTER TABLE calls ADD COLUMN attempts INTEGER"},
    {"attempt_log", "ALTER TABLE calls ADD COLUMN attempt_log TEXT"},
    {"cache_hit",
	"ALTER TABLE calls ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0"},
    {"units", "ALTER TABLE calls ADD COLUMN units INTEGER NOT NULL DEFAULT 0"},
};

/*
 * The calls table's routing columns (routed_from, routed_rule,
 * saved_nusd, attempts, attempt_log, cache_hit, units) and the index of routed
 * rows, in ledgers old and new, as served_model was added: nullable or
 * defaulted columns at the end, which every statement that names its
 * columns reads and writes alike, so no schema version is spent on them.
 * The rows already there were not routed, failed over or cached: NULL,
 * NULL, 0, NULL (not recorded), NULL, 0, 0 is what they are.
 */
int
ledger_schema_routing(struct ledger_db *d, char **cause)
{
	char *sql;
	int64_t has;
	size_t i;
	int rc;

	for (i = 0; i < nitems(routing_cols); i++) {
		xasprintf(&sql,
		    "SELECT count(*) FROM pragma_table_info('calls')"
		    " WHERE name = '%s'",
		    routing_cols[i].name);
		rc = ledger_db_query_int(d, sql, &has);
		free(sql);
		if (rc != SQLITE_OK)
			return (ledger_db_fail(
			    d, cause, "reading the calls table"));
		if (has == 0 &&
		    sqlite3_exec(d->db_conn, routing_cols[i].ddl, NULL, NULL,
			NULL) != SQLITE_OK)
			return (ledger_db_fail(
			    d, cause, "adding the routing columns"));
	}
	/*
	 * /v1/spend reads the savings from this alone. Made before cache
	 * hits saved anything, it was partial on the routed rows only: a
	 * query on the wider condition would not use it, so it is made
	 * again on the condition of today.
	 */
	xasprintf(&sql,
	    "SELECT count(*) FROM sqlite_schema WHERE name = 'calls_routed'"
	    " AND sql NOT LIKE '%%cache_hit%%'");
	rc = ledger_db_query_int(d, sql, &has);
	free(sql);
	if (rc != SQLITE_OK)
		return (ledger_db_fail(d, cause, "reading calls_routed"));
	if (has != 0 &&
	    sqlite3_exec(d->db_conn, "DROP INDEX calls_routed", NULL, NULL,
		NULL) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "dropping calls_routed"));
	if (sqlite3_exec(d->db_conn,
		"CREATE INDEX IF NOT EXISTS calls_routed ON calls"
		" (started_at) WHERE " LEDGER_ROUTED_WHERE,
		NULL, NULL, NULL) != SQLITE_OK)
		return (ledger_db_fail(d, cause, "creating calls_routed"));
	return (0);
}

/*
 * The three tables whose rows ship to the fleet ledger, with the column
 * each is numbered in order of when it was written: a row's ship_seq is
 * given to it by the writer; the numbering below is for the rows a
 * version-2 ledger already holds (calls: the final ones only).
 */
static const struct {
	const char *table;
	const char *final; /* the rows that ship, as an SQL condition */
	const char *index;
} ship_tables[] = {
    {"calls", "status <> 'in_flight'",
	"CREATE INDEX IF NOT EXISTS calls_ship ON calls (ship_seq)"
	" WHERE ship_seq IS NOT NULL"},
    {"alerts", "1",
	"CREATE INDEX IF NOT EXISTS alerts_ship ON alerts (ship_seq)"
	" WHERE ship_seq IS NOT NULL"},
    {"kills", "1",
	"CREATE INDEX IF NOT EXISTS kills_ship ON kills (ship_seq)"
	" WHERE ship_seq IS NOT NULL"},
};

/* How far the fleet ledger (PostgreSQL) has each table's rows. */
static const char ship_cursor_schema[] =
    "CREATE TABLE IF NOT EXISTS ship_cursor ("
    " stream TEXT PRIMARY KEY NOT NULL,"
    " instance TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " shipped_at TEXT NOT NULL"
    ");";

/*
 * Give ship_seq, counting on from *seq, to the rows of table i that ship;
 * *seq ends at the last number given.
 */
static int
ship_number(struct ledger_db *d, size_t i, int64_t *seq)
{
	sqlite3_stmt *st = NULL;
	char *sql;
	int rc;

	xasprintf(&sql,
	    "UPDATE %s SET ship_seq = ?1 + n.rn FROM (SELECT rowid AS rid,"
	    " row_number() OVER (ORDER BY rowid) AS rn FROM %s WHERE %s)"
	    " AS n WHERE %s.rowid = n.rid",
	    ship_tables[i].table, ship_tables[i].table, ship_tables[i].final,
	    ship_tables[i].table);
	rc = sqlite3_prepare_v2(d->db_conn, sql, -1, &st, NULL);
	free(sql);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 1, *seq);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_DONE) {
		*seq += sqlite3_changes64(d->db_conn);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return (rc);
}

/*
 * Version 3, for the fleet ledger: ship_seq on calls, alerts and kills,
 * their partial indexes and the ship_cursor table, in one transaction
 * with the version number. A table without the column gains it and its
 * rows that ship are numbered, so a version-2 ledger ships what it
 * already holds. The rollup's update triggers are dropped while calls
 * are numbered (a new ship_seq changes no sum; they would take each row
 * out of calls_daily and put it back) and made again. Then the writer's
 * counter, d->db_ship_seq, is set to the highest number given or
 * shipped: a cursor can be ahead of every row left, once the rows it
 * passed are pruned.
 */
int
ledger_schema_ship(
    struct ledger_db *d, const char *path, int64_t version, char **cause)
{
	int64_t has, triggers = 0, top, numbered, v;
	int added[nitems(ship_tables)];
	size_t i;
	char *sql;
	int rc;

	if (sqlite3_exec(d->db_conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return (ledger_db_fail(d, cause, "adding ship_seq"));
	if (sqlite3_exec(d->db_conn, ship_cursor_schema, NULL, NULL, NULL) !=
	    SQLITE_OK)
		goto fail;
	for (i = 0; i < nitems(ship_tables); i++) {
		xasprintf(&sql,
		    "SELECT count(*) FROM pragma_table_info('%s')"
		    " WHERE name = 'ship_seq'",
		    ship_tables[i].table);
		rc = ledger_db_query_int(d, sql, &has);
		free(sql);
		if (rc != SQLITE_OK)
			goto fail;
		added[i] = has == 0;
		if (added[i]) {
			xasprintf(&sql,
			    "ALTER TABLE %s ADD COLUMN ship_seq INTEGER",
			    ship_tables[i].table);
			rc = sqlite3_exec(d->db_conn, sql, NULL, NULL, NULL);
			free(sql);
			if (rc != SQLITE_OK)
				goto fail;
		}
		if (sqlite3_exec(d->db_conn, ship_tables[i].index, NULL, NULL,
			NULL) != SQLITE_OK)
			goto fail;
	}
	/* Each through its partial index: a few pages, whatever the size. */
	if (ledger_db_query_int(d,
		"SELECT max(coalesce((SELECT ship_seq FROM calls WHERE"
		" ship_seq IS NOT NULL ORDER BY ship_seq DESC LIMIT 1), 0),"
		" coalesce((SELECT ship_seq FROM alerts WHERE ship_seq IS NOT"
		" NULL ORDER BY ship_seq DESC LIMIT 1), 0),"
		" coalesce((SELECT ship_seq FROM kills WHERE ship_seq IS NOT"
		" NULL ORDER BY ship_seq DESC LIMIT 1), 0),"
		" coalesce((SELECT max(seq) FROM ship_cursor), 0))",
		&top) != SQLITE_OK)
		goto fail;
	numbered = top;
	for (i = 0; i < nitems(ship_tables); i++) {
		if (!added[i])
			continue;
		if (i == 0 &&
		    (ledger_db_query_int(d,
			 "SELECT count(*) FROM sqlite_schema WHERE"
			 " type = 'trigger' AND name IN"
			 " ('calls_daily_update_out', 'calls_daily_update_in')",
			 &triggers) != SQLITE_OK ||
			(triggers == 2 &&
			    sqlite3_exec(d->db_conn,
				"DROP TRIGGER calls_daily_update_out;"
				" DROP TRIGGER calls_daily_update_in",
				NULL, NULL, NULL) != SQLITE_OK)))
			goto fail;
		if (ship_number(d, i, &top) != SQLITE_OK)
			goto fail;
		if (i == 0 && triggers == 2 &&
		    sqlite3_exec(d->db_conn, ROLLUP_UPDATE_TRIGGERS, NULL, NULL,
			NULL) != SQLITE_OK)
			goto fail;
	}
	numbered = top - numbered;
	if (ledger_db_query_int(d, "PRAGMA user_version", &v) != SQLITE_OK ||
	    (v < LEDGER_SCHEMA_VERSION &&
		sqlite3_exec(d->db_conn,
		    "PRAGMA user_version = " LEDGER_SCHEMA_VERSION_STR, NULL,
		    NULL, NULL) != SQLITE_OK) ||
	    sqlite3_exec(d->db_conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (top > d->db_ship_seq)
		d->db_ship_seq = top;
	if (version > 0 && version < LEDGER_SCHEMA_VERSION)
		log_info("ledger: %s: schema version %" PRId64
			 " brought to %d: "
			 "ship_seq added, %" PRId64 " existing rows numbered "
			 "to ship",
		    path, version, LEDGER_SCHEMA_VERSION, numbered);
	return (0);
fail:
	ledger_db_fail(d, cause, "adding ship_seq");
	ledger_db_rollback(d);
	return (-1);
}
