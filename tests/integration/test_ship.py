# SPDX-License-Identifier: Apache-2.0
"""The shipper through the real binary, against a real PostgreSQL
(pglib): every final row of the local ledger (calls, refusals included,
alerts, kills added and deleted) arrives once with the local row's values;
/healthz and /metrics show the state, the backlog and the lag; two
instances keep every call exactly once across an immediate stop of
PostgreSQL, with the cost sum equal to the local ledgers' to the
nano-dollar; a kill -9 in the middle of a large backlog leaves no
duplicate and no gap after the restart; ledger.keep_local prunes shipped
rows only, never one PostgreSQL has not got; a wrong password or an
unreachable server leaves the proxy answering, /healthz saying "down" with
a scrubbed error and the password in no log; an outage shows in /healthz
even with nothing to ship."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
import ledgerlib  # noqa: E402
import pglib  # noqa: E402
import tglib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
PWVAR = "TG_TEST_SHIP_PASSWORD"
SECRET = "CANARY-ship-pw-7c2a"

# The shipped columns of each table, as the shipper sends them.
COLUMNS = {
    "calls": (
        "id, started_at, finished_at, provider, endpoint, upstream, model,"
        " intent, team, tenant, agent_class, environment, key_fingerprint,"
        " stream, status, http_status, input_tokens, output_tokens,"
        " cached_input_tokens, cache_write_tokens, reasoning_tokens,"
        " usage_source, cost_nusd, reserved_nusd, price_version,"
        " refusal_reason, latency_ms, ttfb_ms, served_model, routed_from,"
        " routed_rule, saved_nusd, attempts, attempt_log, cache_hit"),
    "alerts": (
        "id, fired_at, kind, policy, scope_key, intent, team, tenant,"
        " agent_class, environment, \"window\", window_start, reset_at,"
        " threshold_nusd, spent_nusd, cap_nusd, message, delivery,"
        " attempts"),
    "kills": "id, created_at, expires_at, match, reason, source, deleted_at",
}


def local_rows(path, table):
    """{id: {column: value}} of a local ledger's table."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute("SELECT %s FROM %s" % (COLUMNS[table], table))
        return {r["id"]: dict(r) for r in rows}
    finally:
        db.close()


def local_count(path, where="1"):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return db.execute("SELECT count(*) FROM calls WHERE " +
                          where).fetchone()[0]
    finally:
        db.close()


def wait_local(path, n, timeout=20):
    """The local ledger's row count once it reaches n (a call's row is
    written a moment after its answer), or the last count seen."""
    last = [None]

    def probe():
        last[0] = local_count(path)
        return last[0] >= n
    tglib.wait_until(probe, timeout, 0.02)
    return last[0]


def local_sum(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return db.execute("SELECT coalesce(sum(cost_nusd), 0) FROM calls"
                          ).fetchone()[0]
    finally:
        db.close()


class ShipTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def pg(self, **kw):
        pg = pglib.start(self, **kw)
        pg.createdb("fleet")
        return pg

    def start_ship(self, pg, name, instance=None, batch=None,
                   interval="20ms", keep_local=None, extra=None,
                   postgres=None, env=None):
        ship = {"postgres": postgres or pg.url("fleet"),
                "interval": interval}
        if pg is not None and pg.password is not None:
            ship["password_env"] = PWVAR
        if instance:
            ship["instance"] = instance
        if batch:
            ship["batch"] = batch
        ledger = {"path": "data/%s.db" % name, "ship": ship}
        if keep_local:
            ledger["keep_local"] = keep_local
        ex = ledgerlib.metering_extra(ledger=ledger)
        ex.update(extra or {})
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex, name=name, env=env)
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        tg.ledger_path = os.path.join(self.tmp, "data", "%s.db" % name)
        return tg

    def admin(self, tg, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        hdrs = [("Host", "127.0.0.1:%d" % tg.admin_port)]
        if body is not None:
            hdrs.append(JSON_CT)
        return tglib.http_call(tg.admin_port, method, path, data, hdrs)

    def health(self, tg):
        r = self.admin(tg, "GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def metrics(self, tg):
        r = self.admin(tg, "GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        return r.body.decode()

    def chat(self, tg, model="gpt-4o-mini", team="search"):
        m = tglib.new_marker("ship")
        return tglib.http_call(tg.port, "POST", "/v1/chat/completions",
                               tglib.openai_chat(m, model=model),
                               [JSON_CT, ("X-Tollgate-Team", team)])

    def wait_shipped(self, tg, timeout=60):
        """Until /healthz says up with nothing left to ship, and the local
        ledger agrees: no call in flight and no row waiting for the writer
        (a call answered may not be settled or written yet, and then
        /healthz cannot know of it) and each stream's cursor at its
        table's last ship_seq."""
        last = {}

        def local_done():
            db = sqlite3.connect("file:%s?mode=ro" % tg.ledger_path,
                                 uri=True)
            try:
                if db.execute("SELECT count(*) FROM calls WHERE status = "
                              "'in_flight'").fetchone()[0]:
                    return False
                for t in ("calls", "alerts", "kills"):
                    top = db.execute("SELECT max(ship_seq) FROM %s" % t
                                     ).fetchone()[0]
                    cur = db.execute("SELECT seq FROM ship_cursor WHERE "
                                     "stream = ?", (t,)).fetchone()
                    if top is not None and (cur is None or cur[0] < top):
                        return False
                return True
            finally:
                db.close()

        def written():
            m = self.metrics(tg)
            return (re.search(r"^tollgate_ledger_in_flight 0$", m, re.M) and
                    re.search(r"^tollgate_ledger_queue_depth 0$", m, re.M))

        def done():
            last["h"] = self.health(tg)
            s = last["h"].get("ship", {})
            return (written() and s.get("state") == "up" and
                    s.get("backlog") == 0 and local_done())
        self.assertTrue(tglib.wait_until(done, timeout, 0.1),
                        "not shipped within %d s: %r" % (timeout,
                                                         last.get("h")))

    def pg_rows(self, pg, table, instance):
        out = pg.psql("SELECT row_to_json(t) FROM (SELECT %s FROM %s WHERE "
                      "instance = '%s') t" % (COLUMNS[table], table,
                                              instance), db="fleet")
        rows = [json.loads(line) for line in out.splitlines() if line]
        return {r["id"]: r for r in rows}

    def assertSameRows(self, pg, tg, instance, table):
        local = local_rows(tg.ledger_path, table)
        remote = self.pg_rows(pg, table, instance)
        self.assertEqual(sorted(remote), sorted(local), table)
        for rid, row in local.items():
            self.assertEqual(remote[rid], row, "%s %s" % (table, rid))
        return local

    # -- every kind of row, once, as written ------------------------------

    def test_rows_arrive_as_written(self):
        pg = self.pg()
        pol = [{"name": "watch", "window": "day",
                "alert_at_usd": "0.000000001",
                "models": {"allow": ["gpt-4o-mini"]}}]
        # One call routed: its routing columns ship too.
        rules = [{"name": "mini", "match": {"team": "routed",
                                            "provider": "openai"},
                  "model": "gpt-4o-mini"}]
        tg = self.start_ship(pg, "a", instance="pod-a",
                             extra={"policies": pol, "routing": rules})
        for _ in range(3):
            self.assertEqual(self.chat(tg).status, 200)
        routed = self.chat(tg, model="gpt-4o", team="routed")
        self.assertEqual(routed.status, 200, routed)
        refused = self.chat(tg, model="gpt-4o")
        self.assertEqual(refused.status, 400, refused)
        r = self.admin(tg, "POST", "/v1/kills",
                       {"match": {"team": "nobody"}, "reason": "test"})
        self.assertEqual(r.status, 201, r)
        kid = r.json()["id"]
        self.assertEqual(self.admin(tg, "DELETE", "/v1/kills/" + kid).status,
                         200)
        self.wait_shipped(tg)
        calls = self.assertSameRows(pg, tg, "pod-a", "calls")
        self.assertEqual(len(calls), 5)
        self.assertEqual(sorted(c["status"] for c in calls.values()),
                         ["ok", "ok", "ok", "ok", "refused"])
        r = calls[routed.header("x-tollgate-request-id")]
        self.assertEqual((r["routed_from"], r["routed_rule"]),
                         ("gpt-4o", "mini"))
        self.assertGreater(r["saved_nusd"], 0)
        alerts = self.assertSameRows(pg, tg, "pod-a", "alerts")
        self.assertGreaterEqual(len(alerts), 1)
        kills = self.assertSameRows(pg, tg, "pod-a", "kills")
        self.assertEqual(len(kills), 1)
        self.assertIsNotNone(kills[kid]["deleted_at"])
        # The cursors in PostgreSQL and in the local ledger agree.
        cur = pg.psql("SELECT stream, seq FROM ship_cursors WHERE "
                      "instance = 'pod-a' ORDER BY 1", db="fleet")
        self.assertEqual([c.split("|")[0] for c in cur.splitlines()],
                         ["alerts", "calls", "kills"])
        h = self.health(tg)
        self.assertEqual(h["status"], "ok")
        self.assertEqual(h["ship"], {"state": "up", "backlog": 0,
                                     "lag_seconds": 0, "last_error": None})
        m = self.metrics(tg)
        self.assertIn("tollgate_ship_up 1\n", m)
        self.assertIn("tollgate_ship_backlog_rows 0\n", m)
        self.assertIn("tollgate_ship_lag_seconds 0.000\n", m)
        self.assertRegex(m, r'tollgate_ship_rows_total\{stream="calls"\} '
                         r'[5-9]\n')
        self.assertIn("tollgate_ship_errors_total 0\n", m)
        self.assertIn("tollgate_ledger_pruned_rows_total 0\n", m)

    def test_no_ship_no_families(self):
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ledgerlib.metering_extra())
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        tg.admin_port = int(m.group(1))
        self.assertNotIn("ship", json.dumps(self.health(tg)))
        self.assertNotIn("tollgate_ship_", self.metrics(tg))

    # -- two instances, PostgreSQL stopped in the middle --------------------

    def test_two_instances_survive_an_immediate_stop(self):
        pg = self.pg()
        a = self.start_ship(pg, "a", instance="pod-a", batch=7)
        b = self.start_ship(pg, "b", instance="pod-b", batch=7)
        done = {"a": 0, "b": 0}
        failed = []
        gate = threading.Event()

        def load(tg, key):
            # 40 calls, a pause while PostgreSQL is stopped, 10 more: so
            # rows are surely made while it is away.
            for k in range(50):
                if k == 40:
                    gate.wait(60)
                r = self.chat(tg)
                if r.status != 200:
                    failed.append(r)
                done[key] += 1

        threads = []
        for tg, key in ((a, "a"), (b, "b")):
            for _ in range(2):
                t = threading.Thread(target=load, args=(tg, key))
                t.start()
                threads.append(t)
        self.assertTrue(tglib.wait_until(
            lambda: done["a"] + done["b"] >= 160, 60))
        pg.stop("immediate")
        gate.set()
        # Calls go on while PostgreSQL is away; the backlog shows it.
        self.assertTrue(tglib.wait_until(
            lambda: self.health(a)["ship"]["state"] == "down" and
            self.health(a)["ship"]["backlog"] > 0, 20),
            "the outage never showed in /healthz: %r" % self.health(a))
        self.assertEqual(self.health(a)["status"], "ok")
        time.sleep(1)
        pg.restart()
        for t in threads:
            t.join(120)
        self.assertEqual(failed, [])
        self.assertEqual((done["a"], done["b"]), (100, 100))
        for tg in (a, b):
            self.assertEqual(wait_local(tg.ledger_path, 100), 100)
        self.wait_shipped(a)
        self.wait_shipped(b)
        total_local = 0
        for tg, inst in ((a, "pod-a"), (b, "pod-b")):
            n = local_count(tg.ledger_path)
            self.assertEqual(n, 100)
            self.assertEqual(pg.psql(
                "SELECT count(*), count(DISTINCT id) FROM calls WHERE "
                "instance = '%s'" % inst, db="fleet"), "%d|%d" % (n, n))
            self.assertSameRows(pg, tg, inst, "calls")
            total_local += local_sum(tg.ledger_path)
        self.assertGreater(total_local, 0)
        self.assertEqual(int(pg.psql("SELECT sum(cost_nusd) FROM calls",
                                     db="fleet")), total_local)
        # The fleet's answer is that sum, from either instance.
        for tg in (a, b):
            r = self.admin(tg, "GET", "/v1/spend?fleet=1")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["total_cost_nusd"], total_local)
            self.assertEqual(r.json()["total_calls"], 200)
        self.assertRegex(self.metrics(a),
                         r"tollgate_ship_errors_total [1-9]")

    # -- kill -9 while a large backlog ships --------------------------------

    def test_kill9_mid_ship_no_duplicate_no_gap(self):
        pg = self.pg()
        tg = self.start_ship(pg, "a", instance="pod-a", batch=10,
                             interval="10ms")
        self.assertEqual(self.chat(tg).status, 200)
        self.wait_shipped(tg)
        pg.stop("immediate")
        n = 3000
        left = [n - 1]
        lock = threading.Lock()

        def load():
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                r = self.chat(tg)
                self.assertEqual(r.status, 200)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertEqual(wait_local(tg.ledger_path, n), n)
        self.assertTrue(tglib.wait_until(
            lambda: self.health(tg)["ship"]["backlog"] == n - 1, 10))
        pg.restart()

        def shipped():
            return int(pg.psql("SELECT count(*) FROM calls", db="fleet"))
        self.assertTrue(tglib.wait_until(lambda: shipped() > 200, 60, 0.01))
        tg.kill()
        tg.expected_exit = True
        at_kill = shipped()
        self.assertLess(at_kill, n, "the backlog shipped before the kill")
        tg2 = self.start_ship(pg, "a", instance="pod-a", batch=500)
        self.wait_shipped(tg2)
        self.assertEqual(pg.psql(
            "SELECT count(*), count(DISTINCT id) FROM calls WHERE "
            "instance = 'pod-a'", db="fleet"), "%d|%d" % (n, n))
        self.assertSameRows(pg, tg2, "pod-a", "calls")

    # -- keep_local ---------------------------------------------------------

    def test_keep_local_prunes_only_shipped_rows(self):
        pg = self.pg()
        tg = self.start_ship(pg, "a", instance="pod-a", keep_local="1s")
        self.wait_shipped(tg)
        pg.stop("immediate")
        for _ in range(5):
            self.assertEqual(self.chat(tg).status, 200)
        # Older than keep_local, but not in PostgreSQL: kept.
        time.sleep(3)
        self.assertEqual(local_count(tg.ledger_path), 5)
        h = self.health(tg)["ship"]
        self.assertEqual((h["state"], h["backlog"]), ("down", 5), h)
        self.assertGreaterEqual(h["lag_seconds"], 2)
        pg.restart()
        self.assertTrue(tglib.wait_until(lambda: pg.psql(
            "SELECT count(*) FROM calls", db="fleet") == "5", 30))
        # Shipped and old: pruned, locally only.
        if not tglib.wait_until(
                lambda: local_count(tg.ledger_path) == 0, 30):
            db = sqlite3.connect(tg.ledger_path)
            self.fail("not pruned: %r %r" % (
                db.execute("SELECT started_at, status, ship_seq FROM calls"
                           ).fetchall(),
                db.execute("SELECT * FROM ship_cursor").fetchall()))
        self.assertEqual(pg.psql("SELECT count(*) FROM calls", db="fleet"),
                         "5")
        self.assertIn("tollgate_ledger_pruned_rows_total 5\n",
                      self.metrics(tg))

    def test_keep_local_needs_ship_and_respects_windows(self):
        base = ("listen: 127.0.0.1:0\nupstreams:\n  openai: {type: openai, "
                "base_url: \"http://127.0.0.1:9\"}\n")
        rc, out, err, _ = tglib.run_check(
            base + "ledger:\n  path: x.db\n  keep_local: 1h\n", self.tmp)
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"check\.yaml:6:15: ledger\.keep_local: "
                         r"needs ledger\.ship:")
        ship = ("ledger:\n  path: x.db\n  keep_local: 1h\n  ship:\n"
                "    postgres: postgresql://t@127.0.0.1:9/f\n"
                "    instance: pod-a\n")
        rc, out, err, _ = tglib.run_check(
            base + ship + "policies:\n  - name: monthly\n    window: month"
            "\n    hard_cap_usd: 10\n", self.tmp)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("ledger.ship: rows shipped as instance pod-a, in "
                      "batches of 500, polled every 1000ms when idle\n", out)
        self.assertIn("ledger.keep_local: shipped rows older than 2764800 "
                      "seconds are pruned\n", out)
        self.assertIn("ledger.keep_local: raised to 768 hours, the window "
                      "of policy 'monthly' and a day", out)
        rc, out, err, _ = tglib.run_check(
            base + ship + "policies:\n  - name: forever\n"
            "    window: total\n    hard_cap_usd: 10\n", self.tmp)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("ledger.keep_local: no row is pruned: policy 'forever'"
                      " has a total window", out)

    # -- PostgreSQL refusing or away ----------------------------------------

    def test_wrong_password_and_unreachable(self):
        pg = self.pg(password=SECRET)
        wrong = SECRET + "-wrong"
        tg = self.start_ship(pg, "a", instance="pod-a",
                             env={PWVAR: wrong})
        self.assertEqual(self.chat(tg).status, 200)
        self.assertTrue(tglib.wait_until(
            lambda: self.health(tg)["ship"]["state"] == "down", 20))
        h = self.health(tg)
        self.assertEqual(h["status"], "ok", h)
        self.assertIn("password authentication failed", h["ship"]["last_error"])
        self.assertNotIn(wrong, json.dumps(h))
        # The backlog is measured while backing off too.
        self.assertTrue(tglib.wait_until(
            lambda: self.health(tg)["ship"]["backlog"] == 1, 10))
        self.assertEqual(self.chat(tg).status, 200)
        self.assertEqual(tg.stop(), 0)
        self.assertNotIn(SECRET, tg.stderr())
        self.assertIn("password authentication failed", tg.stderr())
        # Nothing listening: refused at once, the proxy unaffected.
        port = tglib.free_port()
        tg = self.start_ship(None, "b", instance="pod-b",
                             postgres="postgresql://tollgate@127.0.0.1:%d/f"
                             % port)
        t0 = time.monotonic()
        self.assertEqual(self.chat(tg).status, 200)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertTrue(tglib.wait_until(
            lambda: self.health(tg)["ship"]["state"] == "down", 20))
        self.assertIn("Connection refused",
                      self.health(tg)["ship"]["last_error"])
        self.assertEqual(tg.stop(), 0)

    def test_outage_shows_while_idle(self):
        # Nothing to ship: the shipper still notices PostgreSQL going away
        # (it asks every 5 s), so "up" is never a stale answer.
        pg = self.pg()
        tg = self.start_ship(pg, "a", instance="pod-a")
        self.assertEqual(self.chat(tg).status, 200)
        self.wait_shipped(tg)
        pg.stop("immediate")
        t0 = time.monotonic()
        self.assertTrue(tglib.wait_until(
            lambda: self.health(tg)["ship"]["state"] == "down", 15, 0.1),
            self.health(tg))
        self.assertLess(time.monotonic() - t0, 8)
        self.assertEqual(self.health(tg)["ship"]["backlog"], 0)
        pg.restart()
        self.wait_shipped(tg, 40)

    def test_stop_cancels_a_stuck_statement(self):
        # A batch waiting on a lock another session holds: SIGTERM cancels
        # it rather than waiting for the statement timeout (60 s), and the
        # rolled-back batch ships after the restart.
        pg = self.pg()
        tg = self.start_ship(pg, "a", instance="pod-a")
        self.assertEqual(self.chat(tg).status, 200)
        self.wait_shipped(tg)
        locker = subprocess.Popen(
            [os.path.join(pg.bin, "psql"), "-X", "-q", "-h", "127.0.0.1",
             "-p", str(pg.port), "-U", pglib.SUPERUSER, "-d", "fleet"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.addCleanup(locker.kill)
        locker.stdin.write(b"BEGIN; LOCK TABLE calls IN ACCESS EXCLUSIVE "
                           b"MODE;\n")
        locker.stdin.flush()
        self.assertTrue(tglib.wait_until(lambda: pg.psql(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = "
            "l.relation WHERE c.relname = 'calls' AND l.granted AND "
            "l.mode = 'AccessExclusiveLock'", db="fleet") == "1", 10))
        self.assertEqual(self.chat(tg).status, 200)
        self.assertTrue(tglib.wait_until(lambda: pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name"
            " = 'tollgate' AND wait_event_type = 'Lock'",
            db="fleet") == "1", 10), "the batch never waited on the lock")
        t0 = time.monotonic()
        self.assertEqual(tg.stop(), 0)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertNotIn("warn: ship:", tg.stderr())
        locker.stdin.write(b"ROLLBACK;\n")
        locker.stdin.close()
        locker.wait(10)
        self.assertEqual(pg.psql("SELECT count(*) FROM calls", db="fleet"),
                         "1")
        tg = self.start_ship(pg, "a", instance="pod-a")
        self.wait_shipped(tg)
        self.assertEqual(pg.psql("SELECT count(*) FROM calls", db="fleet"),
                         "2")

    def test_a_refused_row_holds_back_only_its_stream(self):
        # A call row PostgreSQL refuses (here: a CHECK added by hand) stops
        # the calls stream, not the others: a kill made meanwhile ships.
        # /healthz, which needs no token, gives the primary message only,
        # never the DETAIL that quotes the row's values.
        pg = self.pg()
        tg = self.start_ship(pg, "a", instance="pod-a")
        self.assertEqual(self.chat(tg).status, 200)
        self.wait_shipped(tg)
        pg.psql("ALTER TABLE calls ADD CONSTRAINT no_poison CHECK (team IS "
                "DISTINCT FROM 'poison-team')", db="fleet")
        self.assertEqual(self.chat(tg, team="poison-team").status, 200)
        r = self.admin(tg, "POST", "/v1/kills",
                       {"match": {"team": "elsewhere"}, "reason": "test"})
        self.assertEqual(r.status, 201, r)
        self.assertTrue(tglib.wait_until(lambda: pg.psql(
            "SELECT count(*) FROM kills", db="fleet") == "1", 20),
            self.health(tg))
        h = self.health(tg)["ship"]
        self.assertIn("violates check constraint", h["last_error"])
        self.assertNotIn("poison-team", h["last_error"])
        self.assertNotIn("Failing row", h["last_error"])
        self.assertEqual(pg.psql("SELECT count(*) FROM calls", db="fleet"),
                         "1")
        pg.psql("ALTER TABLE calls DROP CONSTRAINT no_poison", db="fleet")
        self.wait_shipped(tg, 60)
        self.assertEqual(pg.psql("SELECT count(*) FROM calls", db="fleet"),
                         "2")

    def test_instance_recorded_before_the_first_row_ships(self):
        # The name is in the local ledger before anything reaches
        # PostgreSQL under it, so a crash after the first batch and a
        # restart under another name cannot ship that batch twice.
        pg = self.pg()
        pg.stop("immediate")
        tg = self.start_ship(pg, "a", instance="pod-a")
        self.assertEqual(self.chat(tg).status, 200)

        def recorded():
            db = sqlite3.connect("file:%s?mode=ro" % tg.ledger_path,
                                 uri=True)
            try:
                return db.execute("SELECT DISTINCT instance FROM "
                                  "ship_cursor").fetchall()
            finally:
                db.close()
        self.assertTrue(tglib.wait_until(lambda: recorded() == [("pod-a",)],
                                         10), recorded())
        self.assertNotEqual(self.health(tg)["ship"]["state"], "up")
        self.assertEqual(tg.stop(), 0)
        pg.restart()
        tg = self.start_ship(pg, "a", instance="pod-z")
        self.assertTrue(tg.wait_log(r"keeping 'pod-a'"))
        self.wait_shipped(tg)
        self.assertEqual(pg.psql("SELECT instance, count(*) FROM calls "
                                 "GROUP BY 1", db="fleet"), "pod-a|1")

    def test_newer_schema_is_refused(self):
        pg = self.pg()
        tg = self.start_ship(pg, "a", instance="pod-a")
        self.wait_shipped(tg)
        self.assertEqual(tg.stop(), 0)
        pg.psql("INSERT INTO tollgate_schema (version, tollgate) VALUES "
                "(9, 'tollgate 99')", db="fleet")
        tg = self.start_ship(pg, "a", instance="pod-a")
        self.assertTrue(tglib.wait_until(
            lambda: self.health(tg)["ship"]["state"] == "down", 20))
        self.assertIn("has schema version 9, newer than this tollgate knows",
                      self.health(tg)["ship"]["last_error"])

    def test_renamed_instance_keeps_the_recorded_name(self):
        pg = self.pg()
        tg = self.start_ship(pg, "a", instance="pod-a")
        self.assertEqual(self.chat(tg).status, 200)
        self.wait_shipped(tg)
        self.assertEqual(tg.stop(), 0)
        tg = self.start_ship(pg, "a", instance="pod-z")
        self.assertTrue(tg.wait_log(r"ledger\.ship\.instance says 'pod-z': "
                                    r"keeping 'pod-a'"))
        self.assertEqual(self.chat(tg).status, 200)
        self.wait_shipped(tg)
        self.assertEqual(pg.psql("SELECT instance, count(*) FROM calls "
                                 "GROUP BY 1", db="fleet"), "pod-a|2")


if __name__ == "__main__":
    unittest.main()
