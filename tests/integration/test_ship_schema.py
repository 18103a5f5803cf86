# SPDX-License-Identifier: Apache-2.0
"""The fleet ledger's first piece, through the real binary: the
ledger.ship: section and `tollgate ship init` against a real PostgreSQL
(pglib).

`tollgate check` accepts the URI and keyword forms and prints a one-line
summary; each bad input (a password in the string, a key libpq does not
know, an unknown sslmode, a missing postgres:) is refused at its
file:line:col and the password is never echoed. An unset password_env
stops serve and is a warning for check; a reload that changes ship: warns.
`tollgate ship init` creates tollgate_schema, calls, alerts and kills,
whose columns are the local ledger's one for one (read from a fresh SQLite
ledger) after an instance column; it is a no-op the second time, refuses
a newer schema, and says plainly when PostgreSQL is unreachable or refuses
the password, without repeating it."""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
import pglib  # noqa: E402
import tglib  # noqa: E402

SECRET = "CANARY-pg-pw-5e1d"
PWVAR = "TG_TEST_PG_PASSWORD"

UPSTREAMS = """\
upstreams:
  openai: { type: openai, base_url: "http://127.0.0.1:9" }
"""


def ship_config(postgres, extra="", ledger="data/ledger.db"):
    """A whole config with ledger.ship.postgres and extra ship: lines."""
    return ("listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n" +
            UPSTREAMS + "ledger:\n  path: %s\n  ship:\n    postgres: \"%s\"\n"
            % (ledger, postgres) + extra)


def run(argv, tmp, env=None, timeout=30):
    """tollgate argv with env added to (None: dropped from) ours."""
    child = dict(os.environ)
    child.pop(PWVAR, None)
    for k, v in (env or {}).items():
        if v is None:
            child.pop(k, None)
        else:
            child[k] = v
    r = subprocess.run([tglib.TOLLGATE_BIN] + argv, cwd=tmp, env=child,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout,
                       preexec_fn=tglib._child_setup)
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"))


class ShipConfigTest(tglib.TGTestCase):

    def check(self, text, env=None):
        path = os.path.join(self.tmp, "check.yaml")
        with open(path, "w") as f:
            f.write(text)
        return run(["check", "-c", path], self.tmp, env)

    def test_accepts_the_forms(self):
        for postgres, extra, want in (
                ("postgresql://tollgate@10.0.0.6:5432/tollgate",
                 "    password_env: %s\n    sslmode: require\n" % PWVAR,
                 "ledger.ship: postgres postgresql://tollgate@10.0.0.6:5432/"
                 "tollgate, password from %s, sslmode require" % PWVAR),
                ("host=10.0.0.6 port=5432 user=tollgate dbname=tollgate", "",
                 "ledger.ship: postgres host=10.0.0.6 port=5432 "
                 "user=tollgate dbname=tollgate, no password, sslmode "
                 "libpq's default"),
                ("postgres://db.internal/fleet?sslmode=verify-full",
                 "    sslmode: verify-full\n",
                 "ledger.ship: postgres postgres://db.internal/fleet?"
                 "sslmode=verify-full, no password, sslmode verify-full")):
            rc, out, err = self.check(ship_config(postgres, extra),
                                      {PWVAR: SECRET})
            self.assertEqual(rc, 0, out + err)
            self.assertIn(want + "\n", out)
            self.assertIn("configuration OK", out)
            self.assertNotIn(SECRET, out + err)

    def test_no_ship_prints_nothing_of_it(self):
        text = "listen: 127.0.0.1:0\n" + UPSTREAMS + "ledger:\n  path: x.db\n"
        rc, out, err = self.check(text)
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("ship", out + err)
        # An empty ship: is off, as if it were not there.
        rc, out, err = self.check(text + "  ship:\n")
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("ship", out + err)

    def test_refusals_at_their_place(self):
        # (postgres value, extra lines, line, col, words in the message)
        cases = (
            ("postgresql://tollgate:%s@10.0.0.6/tollgate" % SECRET, "",
             9, 15, "a password in the connection string is not allowed"),
            ("host=10.0.0.6 password=%s" % SECRET, "",
             9, 15, "a password in the connection string is not allowed"),
            ("postgresql://10.0.0.6/t?password=%s" % SECRET, "",
             9, 15, "a password in the connection string is not allowed"),
            ("postgresql://10.0.0.6/t?%%70assword=%s" % SECRET, "",
             9, 15, "a password in the connection string is not allowed"),
            # Malformed, with a password in it: libpq's message (which
            # quotes the string) is not shown.
            ("postgresql://[::1/t?password=%s" % SECRET, "",
             9, 15, "not a valid PostgreSQL connection string"),
            ("host=10.0.0.6 bogus=1", "",
             9, 15, 'invalid connection option "bogus"'),
            ("postgresql://10.0.0.6/t?sslmode=sometimes", "",
             9, 15, "sslmode must be one of disable, allow, prefer"),
            ("postgresql://10.0.0.6/t", "    sslmode: sometimes\n",
             10, 14, "unknown sslmode 'sometimes' (expected one of "
             "disable, allow, prefer, require, verify-ca, verify-full)"),
            ("postgresql://10.0.0.6/t", "    colour: blue\n",
             10, 5, "unknown key"),
            ("", "", 9, 15, "empty"),
        )
        for postgres, extra, line, col, words in cases:
            rc, out, err = self.check(ship_config(postgres, extra),
                                      {PWVAR: SECRET})
            self.assertEqual(rc, 1, "accepted %r:\n%s%s" % (postgres,
                                                            out, err))
            self.assertRegex(err, r"check\.yaml:%d:%d: .*%s" %
                             (line, col, re.escape(words)))
            self.assertNotIn(SECRET, out + err)
        # ship: without postgres:
        text = ("listen: 127.0.0.1:0\n" + UPSTREAMS +
                "ledger:\n  ship:\n    sslmode: require\n")
        rc, out, err = self.check(text)
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"check\.yaml:\d+:\d+: .*postgres")

    def test_password_env_unset(self):
        text = ship_config("postgresql://tollgate@127.0.0.1:9/t",
                           "    password_env: %s\n" % PWVAR)
        rc, out, err = self.check(text)
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(err, r"check\.yaml:10:19: warning: "
                         r"ledger\.ship\.password_env: the environment "
                         r"variable %s is not set here" % PWVAR)
        self.assertIn("password from %s (not set here)" % PWVAR, out)
        # serve refuses to start without it.
        path = os.path.join(self.tmp, "check.yaml")
        rc, out, err = run(["-d", "-c", path], self.tmp)
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"check\.yaml:10:19: ledger\.ship\."
                         r"password_env: the environment variable %s is "
                         r"not set" % PWVAR)

    def test_reload_that_changes_ship_warns(self):
        text = ship_config("postgresql://tollgate@127.0.0.1:9/t",
                           "    sslmode: disable\n")
        tg = tglib.Tollgate(self.tmp, text, wait=False)
        self._procs.append(tg)
        tg.wait_listening()
        tg.write_config(text.replace("sslmode: disable", "sslmode: require"))
        tg.hup()
        self.assertTrue(tg.wait_log(
            r"ledger\.sslmode changed: ledger\.ship changes need a "
            r"restart"), tg.log())


def local_columns(path, table):
    """[(name, type, notnull)] of a table of a SQLite ledger, in order."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = db.execute("PRAGMA table_info(%s)" % table).fetchall()
    finally:
        db.close()
    types = {"INTEGER": "bigint", "TEXT": "text"}
    # A primary key column is NOT NULL in both. ship_seq is the local
    # ledger's order of shipping, not a fact of the row: not shipped.
    return [(r[1], types[r[2]], bool(r[3] or r[5])) for r in rows
            if r[1] != "ship_seq"]


class ShipInitTest(tglib.TGTestCase):
    """One PostgreSQL for the class (initdb takes a second or two); a
    database of its own for each test."""

    @classmethod
    def setUpClass(cls):
        cls.pgtmp = tempfile.mkdtemp(prefix="tg-ship-pg-")
        try:
            cls.pg = pglib.PgServer(cls.pgtmp, password=SECRET)
        except Exception:
            shutil.rmtree(cls.pgtmp, True)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()
        shutil.rmtree(cls.pgtmp, True)

    def setUp(self):
        tglib.TGTestCase.setUp(self)
        self.db = re.sub(r"[^a-z0-9_]", "_", self.id().split(".")[-1])
        self.pg.createdb(self.db)
        self.config = os.path.join(self.tmp, "tollgate.yaml")
        self.write(self.pg.url(self.db))

    def write(self, postgres, extra="    password_env: %s\n" % PWVAR):
        with open(self.config, "w") as f:
            f.write(ship_config(postgres, extra))

    def init(self, env=None):
        e = {PWVAR: SECRET}
        e.update(env or {})
        rc, out, err = run(["ship", "init", "-c", self.config], self.tmp, e)
        self.assertNotIn(SECRET, out + err)
        return rc, out, err

    def psql(self, sql):
        return self.pg.psql(sql, db=self.db)

    def pg_columns(self, table):
        rows = self.psql(
            "SELECT column_name, data_type, is_nullable FROM "
            "information_schema.columns WHERE table_schema = 'public' AND "
            "table_name = '%s' ORDER BY ordinal_position" % table)
        return [(n, t, nullable == "NO") for n, t, nullable in
                (r.split("|") for r in rows.splitlines())]

    def test_init_creates_the_local_ledgers_columns(self):
        t0 = time.monotonic()
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"^ship init: created the fleet ledger at "
                         r"127\.0\.0\.1:%d/%s, schema version 4 \(tables "
                         r"tollgate_schema, calls, alerts, kills, "
                         r"ship_cursors\)\n$" %
                         (self.pg.port, self.db))
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(self.psql("SELECT version FROM tollgate_schema "
                                   "ORDER BY 1"), "1\n2\n3\n4")
        # A fresh local ledger, made by the daemon itself.
        tg = tglib.Tollgate(self.tmp, ship_config(
            self.pg.url(self.db), ledger="data/local.db"), wait=False)
        self._procs.append(tg)
        tg.wait_listening()
        self.assertEqual(tg.stop(), 0)
        local = os.path.join(self.tmp, "data", "local.db")
        for table in ("calls", "alerts", "kills"):
            want = [("instance", "text", True)] + local_columns(local, table)
            self.assertEqual(self.pg_columns(table), want, table)
        # Money and times: never a float.
        self.assertEqual(self.psql(
            "SELECT count(*) FROM information_schema.columns WHERE "
            "table_schema = 'public' AND data_type IN ('real', "
            "'double precision')"), "0")
        keys = self.psql(
            "SELECT tc.table_name, string_agg(kcu.column_name, ',' ORDER BY "
            "kcu.ordinal_position) FROM information_schema.table_constraints"
            " tc JOIN information_schema.key_column_usage kcu USING "
            "(constraint_name, table_schema) WHERE tc.constraint_type = "
            "'PRIMARY KEY' AND tc.table_schema = 'public' GROUP BY "
            "tc.table_name ORDER BY 1")
        self.assertEqual(keys.splitlines(), [
            "alerts|instance,id", "calls|instance,id", "kills|instance,id",
            "ship_cursors|instance,stream", "tollgate_schema|version"])
        self.assertEqual(self.pg_columns("ship_cursors"), [
            ("instance", "text", True), ("stream", "text", True),
            ("seq", "bigint", True),
            ("shipped_at", "timestamp with time zone", True)])
        idx = self.psql("SELECT indexdef FROM pg_indexes WHERE tablename = "
                        "'calls'")
        for cols in ("(started_at)", "(instance, started_at)",
                     "(team, started_at)", "(tenant, started_at)",
                     "(intent, started_at)", "(agent_class, started_at)"):
            self.assertIn(cols, idx)
        # The CHECKs took what the local ledger writes.
        self.psql("INSERT INTO calls (instance, id, started_at, status, "
                  "usage_source, cost_nusd) VALUES ('pod-1', 'c1', "
                  "'2026-12-01T00:00:00.000Z', 'killed', 'reported', "
                  "9223372036854775807)")
        with self.assertRaises(pglib.PgError):
            self.psql("INSERT INTO calls (instance, id, started_at, status)"
                      " VALUES ('pod-1', 'c2', 'x', 'maybe')")

    def test_init_twice_is_a_no_op(self):
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.psql("INSERT INTO calls (instance, id, started_at, status) "
                  "VALUES ('pod-1', 'c1', '2026-12-01T00:00:00.000Z', 'ok')")
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out, "ship init: the fleet ledger at 127.0.0.1:%d/%s"
                         " is at schema version 4 already; nothing to do\n"
                         % (self.pg.port, self.db))
        self.assertEqual(self.psql("SELECT count(*) FROM tollgate_schema"),
                         "4")
        self.assertEqual(self.psql("SELECT id FROM calls"), "c1")

    def test_version_1_is_migrated_to_4(self):
        # A database as the first release left it: version 1, no
        # ship_cursors, no routing columns; its rows stay.
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.psql("DROP TABLE ship_cursors; DELETE FROM tollgate_schema "
                  "WHERE version >= 2; ALTER TABLE calls DROP COLUMN "
                  "routed_from, DROP COLUMN routed_rule, DROP COLUMN "
                  "saved_nusd, DROP COLUMN attempts, DROP COLUMN "
                  "attempt_log, DROP COLUMN cache_hit; INSERT INTO calls "
                  "(instance, id, "
                  "started_at, status) VALUES ('pod-1', 'c1', "
                  "'2026-12-01T00:00:00.000Z', 'ok')")
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out, "ship init: migrated the fleet ledger at "
                         "127.0.0.1:%d/%s from schema version 1 to 4\n"
                         % (self.pg.port, self.db))
        self.assertEqual(self.psql("SELECT version FROM tollgate_schema "
                                   "ORDER BY 1"), "1\n2\n3\n4")
        self.assertEqual(self.psql("SELECT count(*) FROM ship_cursors"),
                         "0")
        self.assertEqual(self.psql("SELECT id FROM calls"), "c1")

    def test_version_2_is_migrated_to_4(self):
        # A database from before routing: its calls gain routed_from,
        # routed_rule and saved_nusd, and its rows read as unrouted.
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.psql("DELETE FROM tollgate_schema WHERE version >= 3; ALTER "
                  "TABLE calls DROP COLUMN routed_from, DROP COLUMN "
                  "routed_rule, DROP COLUMN saved_nusd, DROP COLUMN "
                  "attempts, DROP COLUMN attempt_log, DROP COLUMN "
                  "cache_hit; INSERT INTO calls "
                  "(instance, id, started_at, status) VALUES ('pod-1', "
                  "'c1', '2026-12-01T00:00:00.000Z', 'ok')")
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out, "ship init: migrated the fleet ledger at "
                         "127.0.0.1:%d/%s from schema version 2 to 4\n"
                         % (self.pg.port, self.db))
        self.assertEqual(self.pg_columns("calls")[-6:], [
            ("routed_from", "text", False), ("routed_rule", "text", False),
            ("saved_nusd", "bigint", True), ("attempts", "bigint", False),
            ("attempt_log", "text", False), ("cache_hit", "bigint", True)])
        self.assertEqual(self.psql("SELECT id, routed_from IS NULL, "
                                   "saved_nusd, attempts IS NULL, cache_hit "
                                   "FROM calls"), "c1|t|0|t|0")

    def test_version_3_is_migrated_to_4(self):
        # A database from before attempts and the response cache: its
        # calls gain attempts (NULL: not recorded), attempt_log and
        # cache_hit (0), and an instance that ships to it sends them.
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.psql("DELETE FROM tollgate_schema WHERE version = 4; ALTER "
                  "TABLE calls DROP COLUMN attempts, DROP COLUMN "
                  "attempt_log, DROP COLUMN cache_hit; INSERT INTO calls "
                  "(instance, id, started_at, status) VALUES ('pod-1', "
                  "'c1', '2026-12-01T00:00:00.000Z', 'ok')")
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out, "ship init: migrated the fleet ledger at "
                         "127.0.0.1:%d/%s from schema version 3 to 4\n"
                         % (self.pg.port, self.db))
        self.assertEqual(self.psql("SELECT id, attempts IS NULL, "
                                   "attempt_log IS NULL, cache_hit FROM "
                                   "calls"), "c1|t|t|0")
        with self.assertRaises(pglib.PgError):
            self.psql("UPDATE calls SET cache_hit = 2")

    def test_newer_schema_is_refused(self):
        rc, out, err = self.init()
        self.assertEqual(rc, 0, out + err)
        self.psql("INSERT INTO tollgate_schema (version, tollgate) VALUES "
                  "(7, 'tollgate 99')")
        rc, out, err = self.init()
        self.assertEqual(rc, 1, out + err)
        self.assertEqual(out, "")
        self.assertIn("has schema version 7, newer than this tollgate knows "
                      "(4); use a newer tollgate", err)

    def test_a_failed_step_leaves_nothing(self):
        # A table in the way: the whole init is rolled back.
        self.psql("CREATE TABLE kills (x int)")
        rc, out, err = self.init()
        self.assertEqual(rc, 1, out + err)
        self.assertIn("applying schema version 1", err)
        self.assertIn('relation "kills" already exists', err)
        self.assertEqual(self.psql(
            "SELECT string_agg(table_name, ',') FROM "
            "information_schema.tables WHERE table_schema = 'public'"),
            "kills")

    def test_unreachable_and_refused(self):
        port = tglib.free_port()
        self.write("postgresql://tollgate@127.0.0.1:%d/%s" % (port, self.db))
        t0 = time.monotonic()
        rc, out, err = self.init()
        self.assertEqual(rc, 1, out + err)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertRegex(err, r"^tollgate ship init: cannot connect to "
                         r"PostgreSQL: connection to server at "
                         r"\"127\.0\.0\.1\", port %d failed: Connection "
                         r"refused" % port)
        self.assertEqual(err.count("\n"), 1, err)
        # A wrong password: PostgreSQL's answer, the password not repeated.
        self.write(self.pg.url(self.db))
        rc, out, err = self.init({PWVAR: SECRET + "-wrong"})
        self.assertEqual(rc, 1, out + err)
        self.assertIn("password authentication failed for user "
                      "\"tollgate\"", err)
        self.assertNotIn("-wrong", err)
        # No password at all, with password_env unset.
        rc, out, err = self.init({PWVAR: None})
        self.assertEqual(rc, 1, out + err)
        self.assertIn("ledger.ship.password_env: the environment variable "
                      "%s is not set" % PWVAR, err)

    def test_without_ship(self):
        with open(self.config, "w") as f:
            f.write("listen: 127.0.0.1:0\n" + UPSTREAMS)
        rc, out, err = self.init()
        self.assertEqual(rc, 1, out + err)
        self.assertIn("no ledger.ship: section; nothing to initialize", err)
        rc, out, err = run(["ship", "frobnicate"], self.tmp)
        self.assertEqual(rc, 2)
        self.assertIn("usage: tollgate ship init [-c file]", err)


class PgFixtureTest(tglib.TGTestCase):
    """pglib itself: a crash (kill -9) and an immediate stop keep what was
    committed, and the server comes back on the same port."""

    def test_kill_and_restart(self):
        pg = pglib.start(self)
        pg.createdb("f")
        pg.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (42)", db="f")
        port = pg.port
        pg.kill()
        self.assertFalse(pg.ready())
        pg.restart()
        self.assertEqual(pg.port, port)
        self.assertEqual(pg.psql("SELECT v FROM t", db="f"), "42")
        self.assertIsNotNone(pg.stop("immediate"))
        pg.restart()
        self.assertEqual(pg.psql("SELECT v FROM t", db="f"), "42")
        self.assertEqual(pg.stop("fast"), 0)


if __name__ == "__main__":
    unittest.main()
