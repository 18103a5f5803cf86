# SPDX-License-Identifier: Apache-2.0
"""The ledger's durability contract end to end: rows committed before a
call goes upstream survive kill -9 and become 'interrupted' at their
reservation on restart; a burst of 2,000 calls gives exactly 2,000 rows
whose costs add up; SIGTERM drains and settles; a ledger that cannot be
opened stops tollgate at start-up; a ledger that cannot be written (its
write lock held by another connection, or its queue full) fails closed
with a clean 503 and nothing forwarded; a ledger made with the old
IN-list CHECKs gets the equivalent OR form at open, its rows intact."""

import json
import glob
import os
import sqlite3
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
from ledgerlib import AGENT, ANTHROPIC_VERSION, describe_row  # noqa: E402
from ledgerlib import marker as new_marker  # noqa: E402

GEM_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def rid_header(rid):
    return ("X-Tollgate-Request-Id", rid)


class Client(threading.Thread):
    """One call on its own connection, in the background; never raises."""

    def __init__(self, port, path, body, hdrs, timeout=60):
        threading.Thread.__init__(self, daemon=True)
        self.args = (port, path, body, hdrs, timeout)
        self.resp = None
        self.error = None
        self.start()

    def run(self):
        port, path, body, hdrs, timeout = self.args
        try:
            self.resp = tglib.http_call(port, "POST", path, body, hdrs,
                                        timeout=timeout)
        except Exception as e:  # kept for the assertions
            self.error = e


class LedgerTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def assertNoInFlight(self, msg=""):
        left = self.ledger.rows("status = 'in_flight'")
        self.assertEqual(left, [], "%s: rows left in_flight: %s" % (
            msg, [describe_row(r) for r in left[:5]]))

    # -- 8. kill -9 mid-call ------------------------------------------------

    def test_kill9_rows_never_lost(self):
        tg = self.start(self.fp, name="tollgate0")
        settled_before = {}
        for cycle in range(3):
            with self.subTest(cycle=cycle):
                since = self.fp.mark()
                ids = {}      # marker -> request id
                clients = []

                def call(path, body, knobs, tag):
                    m = new_marker("k%d%s" % (cycle, tag))
                    rid = "kill-%d-%s-%s" % (cycle, tag, m)
                    ids[m] = rid
                    hdrs = [JSON_CT, AGENT, ANTHROPIC_VERSION,
                            rid_header(rid)] + knobs
                    clients.append(Client(tg.port, path, body(m), hdrs))
                    return m

                # Calls that finish before the kill.
                done = []
                for i in range(3):
                    m = new_marker("k%ddone" % cycle)
                    rid = "kill-%d-done-%s" % (cycle, m)
                    r = self.call(tg.port, "POST", "/v1/chat/completions",
                                  tglib.openai_chat(m), [JSON_CT, AGENT,
                                                         rid_header(rid)])
                    self.assertEqual(r.status, 200, r)
                    ids[m] = rid
                    done.append(rid)
                # Calls in flight at the kill: long paced streams, hangs.
                paced = [("x-fake-events", "400"), ("x-fake-pace-ms", "25")]
                inflight = [
                    call("/v1/chat/completions",
                         lambda m: tglib.openai_chat(m, stream=True),
                         paced, "chat"),
                    call("/v1/chat/completions",
                         lambda m: tglib.openai_chat(m, stream=True,
                                                     model="o4-mini"),
                         paced, "chat2"),
                    call("/v1/messages",
                         lambda m: tglib.anthropic_messages(
                             m, stream=True, model="claude-sonnet-4-5"),
                         paced, "anth"),
                    call(GEM_STREAM, tglib.gemini_generate, paced, "gem"),
                    call("/v1/chat/completions", tglib.openai_chat,
                         [("x-fake-hang", "headers")], "hangh"),
                    call("/v1/messages",
                         lambda m: tglib.anthropic_messages(m, stream=True),
                         [("x-fake-hang", "body")], "hangb"),
                    call("/v1/responses",
                         lambda m: ('{"model":"gpt-4.1","input":"hi %s",'
                                    '"stream":true}' % m).encode(),
                         paced, "resp"),
                ]
                for m in inflight:
                    self.assertIsNotNone(
                        self.fp.wait_request(m, 10),
                        "call %s never reached fakeprov" % ids[m])
                # Calls racing the kill: forwarded or not, never lost.
                for i in range(4):
                    call("/v1/chat/completions", tglib.openai_chat,
                         [("x-fake-delay-ms", "2000")], "race%d" % i)
                time.sleep(0.05)
                tg.kill()
                tg.expected_exit = True
                for c in clients:
                    c.join(30)
                before = {rid: self.ledger.row(rid) for rid in done}

                tg = self.start(self.fp, name="tollgate%d" % (cycle + 1))
                # Recovery happens at start-up, before calls are taken.
                self.assertNoInFlight("after restart %d" % cycle)
                self.assertEqual(self.ledger.integrity(), "ok")
                got = self.fp.requests()[since:]
                seen = set()
                for q in got:
                    body = q.get("body") or ""
                    m = [k for k in ids if k in body]
                    self.assertEqual(len(m), 1, "unknown request %r" %
                                     body[:200])
                    rid = ids[m[0]]
                    seen.add(rid)
                    row = self.ledger.row(rid)
                    self.assertIsNotNone(
                        row, "fakeprov received call %s but the ledger has "
                        "no row for it" % rid)
                    d = describe_row(row)
                    self.assertIn(row["status"], ledgerlib.FINAL, d)
                    if row["status"] == "interrupted":
                        self.assertGreater(row["reserved_nusd"], 0, d)
                        self.assertEqual(row["cost_nusd"],
                                         row["reserved_nusd"],
                                         "interrupted row not charged at "
                                         "its reservation: %s" % d)
                for m in inflight:
                    row = self.ledger.row(ids[m])
                    self.assertEqual(row["status"], "interrupted",
                                     "a call in flight at kill -9: %s" %
                                     describe_row(row))
                for rid in done:
                    self.assertEqual(self.ledger.row(rid), before[rid],
                                     "a settled row changed on restart")
                    self.assertEqual(self.ledger.row(rid)["status"], "ok")
                # Rows of racing calls fakeprov never saw are final too.
                for m, rid in ids.items():
                    row = self.ledger.row(rid)
                    if row is not None:
                        self.assertIn(row["status"], ledgerlib.FINAL,
                                      describe_row(row))
                settled_before.update(before)
                # Earlier cycles' rows are untouched.
                for rid, row in settled_before.items():
                    self.assertEqual(self.ledger.row(rid), row)
        # The restarted tollgate still meters.
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT, AGENT])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.settled_row(r)["status"], "ok")

    # -- 9. a burst of 2,000 calls ------------------------------------------

    def test_burst_2000_calls(self):
        tg = self.start(self.fp)
        total, workers = 2000, 32
        models = ["gpt-4o-mini", "gpt-4.1-nano", "gpt-5-nano"]
        expected = {}        # request id -> expected cost
        failures = []
        lock = threading.Lock()
        since = self.fp.mark()

        def work(w):
            conn = None
            for i in range(w, total, workers):
                model = models[i % len(models)]
                p, n = 5 + i % 13, 1 + i % 4
                hdrs = [JSON_CT, AGENT, ("x-fake-input-tokens", str(p)),
                        ("x-fake-events", str(n))]
                body = json.dumps({"model": model, "messages": [
                    {"role": "user", "content": "b%d" % i}]}).encode()
                try:
                    if conn is None:
                        conn = tglib.RawConn(tg.port, timeout=30)
                    conn.send(tglib.build_request(
                        "POST", "/v1/chat/completions", body, hdrs))
                    r = conn.read_response(30)
                except Exception as e:
                    with lock:
                        failures.append("call %d: %r" % (i, e))
                    if conn:
                        conn.close()
                    conn = None
                    continue
                if r.status != 200 or not r.complete:
                    with lock:
                        failures.append("call %d: %r" % (i, r))
                else:
                    u = {"input": p, "output": n, "cached": 0,
                         "cache_write": 0}
                    with lock:
                        expected[r.header("x-tollgate-request-id")] = \
                            self.prices.cost_nusd(model, u)
                if r.closed or (r.header("connection") or "").lower() == \
                        "close":
                    conn.close()
                    conn = None
            if conn:
                conn.close()

        threads = [threading.Thread(target=work, args=(w,), daemon=True)
                   for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(failures, [], "%d calls failed" % len(failures))
        self.assertEqual(len(expected), total, "request ids not unique")
        self.ledger.wait_count(total, "status = 'ok'", timeout=30)
        self.assertEqual(self.ledger.count(), total)
        self.assertEqual(self.ledger.count("status = 'ok'"), total)
        self.assertNoInFlight()
        rows = self.ledger.query("SELECT id, cost_nusd FROM calls")
        self.assertEqual({r["id"] for r in rows}, set(expected))
        bad = [(r["id"], r["cost_nusd"], expected[r["id"]]) for r in rows
               if r["cost_nusd"] != expected[r["id"]]]
        self.assertEqual(bad, [], "rows with a wrong cost")
        self.assertEqual(self.ledger.scalar("SELECT sum(cost_nusd) FROM "
                                            "calls"), sum(expected.values()))
        self.assertEqual(len(self.fp.requests()) - since, total)
        self.assertEqual(self.ledger.integrity(), "ok")

    # -- 10. SIGTERM drains -------------------------------------------------

    def test_sigterm_settles_calls_in_flight(self):
        tg = self.start(self.fp)
        paced = [("x-fake-events", "12"), ("x-fake-pace-ms", "80")]
        calls = []
        for path, body, knobs in (
                ("/v1/chat/completions",
                 lambda m: tglib.openai_chat(m, stream=True), paced),
                ("/v1/messages",
                 lambda m: tglib.anthropic_messages(m, stream=True), paced),
                (GEM_STREAM, tglib.gemini_generate, paced),
                ("/v1/chat/completions", tglib.openai_chat,
                 [("x-fake-delay-ms", "600")])):
            m = new_marker("term")
            c = Client(tg.port, path, body(m),
                       [JSON_CT, AGENT, ANTHROPIC_VERSION] + knobs)
            calls.append((m, c))
        for m, c in calls:
            self.assertIsNotNone(self.fp.wait_request(m, 10))
        rc = tg.stop(timeout=30)
        self.assertEqual(rc, 0, "SIGTERM with calls in flight: exit %s" % rc)
        for m, c in calls:
            c.join(30)
            self.assertIsNone(c.error, "%s: %r" % (m, c.error))
            self.assertEqual(c.resp.status, 200, c.resp)
            self.assertTrue(c.resp.complete, "a call in flight at SIGTERM "
                            "was cut: %r" % c.resp)
            row = self.ledger.row(c.resp.header("x-tollgate-request-id"))
            self.assertIsNotNone(row)
            self.assertEqual(row["status"], "ok", describe_row(row))
            self.assertEqual(row["usage_source"], "reported",
                             describe_row(row))
        self.assertNoInFlight("after SIGTERM")
        self.assertEqual(self.ledger.integrity(), "ok")

    # -- 11. a ledger that cannot be opened or written ----------------------

    def start_failing(self, ledger, name="tollgate"):
        text = tglib.make_config(ledgerlib.metering_upstreams(self.fp.port),
                                 extra=ledgerlib.metering_extra(ledger=ledger))
        tg = tglib.Tollgate(self.tmp, text, name=name, wait=False)
        self._procs.append(tg)
        rc = tg.wait(15)
        tg.expected_exit = True
        self.assertIsNotNone(rc, "tollgate kept running with a ledger it "
                             "cannot open")
        self.assertNotEqual(rc, 0)
        log = tg.stderr()
        self.assertNotRegex(log, tg.LISTEN_RE.pattern)
        return log

    def test_ledger_cannot_be_opened(self):
        blocker = os.path.join(self.tmp, "not-a-dir")
        with open(blocker, "w") as f:
            f.write("a file where the ledger's directory should be\n")
        log = self.start_failing({"path": "not-a-dir/ledger.db"}, "t1")
        self.assertIn("ledger", log.lower())
        self.assertIn("not-a-dir/ledger.db", log,
                      "the message does not name the ledger path")
        os.mkdir(os.path.join(self.tmp, "is-a-dir.db"))
        log = self.start_failing({"path": "is-a-dir.db"}, "t2")
        self.assertIn("is-a-dir.db", log)
        if os.geteuid() != 0:
            ro = os.path.join(self.tmp, "ro")
            os.mkdir(ro, 0o500)
            log = self.start_failing({"path": "ro/ledger.db"}, "t3")
            self.assertIn("ro/ledger.db", log)

    def test_ledger_in_use_is_an_error(self):
        # A second tollgate on the same ledger cannot start: that is an
        # error (level "error", LOG_ERR), not a warning an operator's
        # filter passes over.
        tg = self.start(self.fp, ledger={"path": "shared.db"}, name="t1")
        log = self.start_failing({"path": "shared.db"}, "t2")
        self.assertRegex(log, r"(?m) error: ledger \S*shared\.db: .*in use")
        self.assertNotRegex(log, r"(?m) warn: ledger ")
        self.assertTrue(tg.alive())

    def test_default_ledger_path_and_power_durability(self):
        # A ledger section without a path: <config dir>/data/ledger.db.
        tg = self.start(self.fp, ledger={"durability": "process"}, name="t1")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "ledger.db")))
        r1 = self.call(tg.port, "POST", "/v1/chat/completions",
                       tglib.openai_chat(new_marker()), [JSON_CT, AGENT])
        self.assertEqual(r1.status, 200, r1)
        self.assertEqual(self.ledger.path,
                         os.path.join(self.tmp, "data", "ledger.db"))
        first = self.settled_row(r1)
        self.assertEqual(tg.stop(), 0)
        # Reopened after a clean stop, with durability: power.
        tg = self.start(self.fp, ledger={"durability": "power"}, name="t2")
        r2 = self.call(tg.port, "POST", "/v1/chat/completions",
                       tglib.openai_chat(new_marker()), [JSON_CT, AGENT])
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(self.settled_row(r2)["status"], "ok")
        self.assertEqual(self.ledger.row(first["id"]), first)
        self.assertEqual(self.ledger.count(), 2)

    # The CHECKs of ledgers made before they took the OR form (an IN list
    # of more than two values made SQLite build a temporary index of it on
    # every write), and before status could be 'killed' (schema version
    # 1), word for word as those versions wrote them.
    STATUS_V1_OR = ("CONSTRAINT status_known CHECK (status = 'in_flight' OR "
                    "status = 'ok' OR status = 'error' OR status = "
                    "'refused' OR status = 'client_closed' OR status = "
                    "'upstream_error' OR status = 'interrupted')")
    CHECKS = [
        ("CONSTRAINT status_known CHECK (status = 'in_flight' OR status = "
         "'ok' OR status = 'error' OR status = 'refused' OR status = "
         "'client_closed' OR status = 'upstream_error' OR status = "
         "'interrupted' OR status = 'killed')",
         "CHECK (status IN ('in_flight', 'ok', 'error', 'refused', "
         "'client_closed', 'upstream_error', 'interrupted'))"),
        ("CONSTRAINT usage_source_known CHECK (usage_source = 'reported' OR "
         "usage_source = 'estimated' OR usage_source = 'none')",
         "CHECK (usage_source IN ('reported', 'estimated', 'none'))"),
    ]

    def calls_sql(self):
        c = sqlite3.connect(self.ledger.path)
        try:
            return c.execute("SELECT sql FROM sqlite_schema WHERE type = "
                             "'table' AND name = 'calls'").fetchone()[0]
        finally:
            c.close()

    def test_old_checks_rewritten_at_open(self):
        for old_status in (self.CHECKS[0][1], self.STATUS_V1_OR):
            with self.subTest(old=old_status[:40]):
                self.old_checks_rewritten(old_status)

    def old_checks_rewritten(self, old_status):
        for p in glob.glob(os.path.join(self.tmp, "data", "ledger.db*")):
            os.unlink(p)
        tg = self.start(self.fp, name="t1")
        r1 = self.call(tg.port, "POST", "/v1/chat/completions",
                       tglib.openai_chat(new_marker()), [JSON_CT, AGENT])
        self.assertEqual(r1.status, 200, r1)
        first = self.settled_row(r1)
        self.assertEqual(tg.stop(), 0)
        # Give the ledger the old CHECKs, as SQLite documents for changing
        # a table's text in place.
        sql = self.calls_sql()
        olds = [old_status, self.CHECKS[1][1]]
        for (new, _), old in zip(self.CHECKS, olds):
            self.assertIn(new, sql)
            sql = sql.replace(new, old)
        c = sqlite3.connect(self.ledger.path, isolation_level=None)
        c.execute("BEGIN")
        sv = c.execute("PRAGMA schema_version").fetchone()[0]
        c.execute("PRAGMA writable_schema = ON")
        c.execute("UPDATE sqlite_schema SET sql = ? WHERE type = 'table' "
                  "AND name = 'calls'", (sql,))
        c.execute("PRAGMA schema_version = %d" % (sv + 1))
        c.execute("PRAGMA writable_schema = OFF")
        c.execute("PRAGMA user_version = 1")
        c.execute("COMMIT")
        c.close()
        self.assertIn(old_status, self.calls_sql())
        tg = self.start(self.fp, name="t2")
        self.assertTrue(tg.wait_log(r"CHECK constraints rewritten to the "
                                    r"faster form that takes status "
                                    r"'killed' \(schema version 2\)"),
                        tg.log())
        sql = self.calls_sql()
        for (new, _), old in zip(self.CHECKS, olds):
            self.assertIn(new, sql)
            self.assertNotIn(old, sql)
        c = sqlite3.connect(self.ledger.path, timeout=10)
        self.assertEqual(c.execute("PRAGMA user_version").fetchone()[0], 3)
        c.close()
        r2 = self.call(tg.port, "POST", "/v1/chat/completions",
                       tglib.openai_chat(new_marker()), [JSON_CT, AGENT])
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(self.settled_row(r2)["status"], "ok")
        self.assertEqual(self.ledger.row(first["id"]), first)
        self.assertEqual(self.ledger.integrity(), "ok")
        # The constraints still hold: a status outside the list is refused.
        c = sqlite3.connect(self.ledger.path, timeout=10)
        with self.assertRaises(sqlite3.IntegrityError):
            c.execute("UPDATE calls SET status = 'bogus' WHERE id = ?",
                      (first["id"],))
        c.close()
        self.assertEqual(tg.stop(), 0)
        # Opened again, nothing more to rewrite.
        tg = self.start(self.fp, name="t3")
        self.assertNotIn("CHECK constraints rewritten", tg.log())
        self.assertEqual(tg.stop(), 0)

    # What version 3 added, taken away again: the ledger as the previous
    # schema (version 2) made it, columns in the same order.
    TO_V2 = ("DROP INDEX calls_ship; DROP INDEX alerts_ship;"
             " DROP INDEX kills_ship; DROP TABLE ship_cursor;"
             " ALTER TABLE calls DROP COLUMN ship_seq;"
             " ALTER TABLE alerts DROP COLUMN ship_seq;"
             " ALTER TABLE kills DROP COLUMN ship_seq;"
             " PRAGMA user_version = 2")

    def test_v2_ledger_migrated_at_open(self):
        tg = self.start(self.fp, name="t1")
        firsts = []
        for _ in range(3):
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(new_marker()), [JSON_CT, AGENT])
            self.assertEqual(r.status, 200, r)
            firsts.append(self.settled_row(r))
        self.assertEqual(tg.stop(), 0)
        c = sqlite3.connect(self.ledger.path, isolation_level=None)
        c.executescript(self.TO_V2)
        # Rows the previous tollgate wrote: an alert, a kill, and a call
        # a crash left in flight.
        c.executescript(
            "INSERT INTO alerts (id, fired_at, kind) VALUES"
            " ('al1', '2026-11-28T00:00:00.000Z', 'threshold');"
            "INSERT INTO kills (id, created_at, match, reason, source)"
            " VALUES ('k1', '2026-11-28T00:00:00.000Z', '{}', 'r', 'a');"
            "INSERT INTO calls (id, started_at, status, reserved_nusd)"
            " VALUES ('crashed', '2026-11-28T00:00:00.000Z', 'in_flight',"
            " 777)")
        daily = c.execute("SELECT sum(calls), sum(cost_nusd) FROM"
                          " calls_daily").fetchone()
        self.assertEqual(c.execute("PRAGMA user_version").fetchone()[0], 2)
        self.assertNotIn("ship_seq", [r[1] for r in c.execute(
            "PRAGMA table_info(calls)")])
        c.close()

        tg = self.start(self.fp, name="t2")
        self.assertTrue(tg.wait_log(r"schema version 2 brought to 3: "
                                    r"ship_seq added, 5 existing rows "
                                    r"numbered to ship"), tg.log())
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT, AGENT])
        self.assertEqual(r.status, 200, r)
        last = self.settled_row(r)
        self.assertEqual(self.ledger.scalar("PRAGMA user_version"), 3)
        seqs = [self.ledger.row(f["id"])["ship_seq"] for f in firsts]
        self.assertEqual(sorted(seqs), [1, 2, 3])
        self.assertEqual(self.ledger.scalar(
            "SELECT ship_seq FROM alerts WHERE id = 'al1'"), 4)
        self.assertEqual(self.ledger.scalar(
            "SELECT ship_seq FROM kills WHERE id = 'k1'"), 5)
        crashed = self.ledger.row("crashed")
        self.assertEqual((crashed["status"], crashed["ship_seq"]),
                         ("interrupted", 6))
        self.assertEqual(last["ship_seq"], 7)
        # Nothing else changed, and the rollup still equals the rows.
        for f in firsts:
            got = dict(self.ledger.row(f["id"]))
            del got["ship_seq"]
            want = dict(f)
            del want["ship_seq"]
            self.assertEqual(got, want)
        self.assertEqual(
            self.ledger.query("SELECT sum(calls) AS n, sum(cost_nusd) AS c"
                              " FROM calls_daily")[0],
            {"n": daily[0] + 2,
             "c": daily[1] + 777 + last["cost_nusd"]})
        self.assertEqual(self.ledger.integrity(), "ok")
        self.assertEqual(tg.stop(), 0)
        # Opened again, nothing more to number.
        tg = self.start(self.fp, name="t3")
        self.assertNotIn("brought to 3", tg.log())
        self.assertEqual(self.ledger.row(last["id"])["ship_seq"], 7)
        self.assertEqual(tg.stop(), 0)

    def burst(self, tg, n, tag):
        """n calls at once, each on its own connection: [(marker, client)]."""
        out = []
        for i in range(n):
            m = new_marker(tag)
            out.append((m, Client(tg.port, "/v1/chat/completions",
                                  tglib.openai_chat(m),
                                  [JSON_CT, AGENT,
                                   ("x-fake-delay-ms", "50")], timeout=60)))
        for m, c in out:
            c.join(90)
        return out

    def test_queue_max_and_locked_ledger_fail_closed(self):
        tg = self.start(self.fp, ledger={"path": "data/ledger.db",
                                         "queue_max": 16})
        # 64 calls at once against a queue of 16: each succeeds or gets a
        # clean 503; nothing is forwarded for a 503.
        res = self.burst(tg, 64, "q")
        ok = 0
        for m, c in res:
            self.assertIsNone(c.error, repr(c.error))
            if c.resp.status == 200:
                ok += 1
                self.assertEqual(len(self.fp.find_requests(m)), 1)
            else:
                self.assertClean503(c.resp)
                self.assertEqual(self.fp.find_requests(m), [],
                                 "a call answered 503 was forwarded")
        self.assertGreater(ok, 0)
        self.ledger.wait_count(ok, "status = 'ok'")
        self.assertEqual(self.ledger.count("status = 'ok'"), ok)

        # Now hold the ledger's write lock from another connection: no row
        # can be committed. Calls are still safe in the journal, so they go
        # on, but only while the writer is behind by fewer than queue_max
        # rows: then every call is a clean 503, never forwarded.
        self.assertNoInFlight()
        lockc = sqlite3.connect(self.ledger.path, timeout=10,
                                isolation_level=None)
        forwarded = []
        try:
            lockc.execute("BEGIN IMMEDIATE")
            refused = 0
            for i in range(40):
                m = new_marker("locked")
                r = self.call(tg.port, "POST", "/v1/chat/completions",
                              tglib.openai_chat(m), [JSON_CT, AGENT])
                if r.status == 200:
                    self.assertEqual(refused, 0, "a call went through "
                                     "after the writer was found behind")
                    forwarded.append(r)
                    continue
                self.assertClean503(r)
                self.assertEqual(self.fp.find_requests(m), [],
                                 "a call answered 503 was forwarded")
                refused += 1
            self.assertLessEqual(len(forwarded), 16,
                                 "more calls went through than queue_max "
                                 "rows may wait for the writer")
            self.assertGreater(refused, 0, "the writer's backlog is not "
                               "bounded: no call was refused")
        finally:
            lockc.execute("ROLLBACK")
            lockc.close()
        # Every call that went through while the ledger was locked has its
        # row once the lock is gone.
        for r in forwarded:
            self.assertEqual(self.settled_row(r, 30)["status"], "ok")
        # The ledger recovers: calls go through and are recorded.
        r = tglib.wait_until(lambda: (lambda r: r.status == 200 and r)(
            self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT, AGENT])),
            30, interval=0.5)
        self.assertTrue(r, "tollgate did not recover after the ledger "
                        "lock was released")
        self.assertEqual(self.settled_row(r, 20)["status"], "ok")
        tglib.wait_until(lambda: self.ledger.count(
            "status = 'in_flight'") == 0, 20)
        self.assertNoInFlight("after the lock was released")
        self.assertEqual(self.ledger.integrity(), "ok")


if __name__ == "__main__":
    tglib.main()
