# SPDX-License-Identifier: Apache-2.0
"""The ledger's files taken away, and its disk failing, under a running
tollgate. SQLite goes on writing into a file that was deleted, moved or
replaced, or whose -wal went, and a restart would open whatever is at the
path: every row written meanwhile would be gone. tollgate must notice,
refuse calls (503, nothing forwarded), say so (log, /metrics, /healthz, an
alert), and rebuild the ledger at its path from the file it still has
open, by itself; a file that is not its own is never written.

The disk failures come from tests/faults/faultfs.c, LD_PRELOADed into
tollgate and switched on and off by a control file while calls run: fsync
failing under durability: power (and in a checkpoint under process),
writes failing under process.

After each test tollgate is stopped, started again on the same ledger, and
the ledger must be whole: integrity_check ok, no row in flight, exactly
one row for every call fakeprov saw, an ok row for every call answered
200, and nothing forwarded for a call answered 503."""

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
from ledgerlib import AGENT  # noqa: E402

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")


class Receiver(tglib.WebhookReceiver):
    """tglib's webhook receiver; the ledger's alerts among what it got."""

    def ledger_alerts(self):
        return [a for a in self.bodies() if a.get("kind") == "ledger"]


class Load(threading.Thread):
    """Calls one after the other on fresh connections until stopped."""

    def __init__(self, test, tg, tag):
        threading.Thread.__init__(self, daemon=True)
        self.test, self.tg, self.tag = test, tg, tag
        self.halt = threading.Event()
        self.start()

    def run(self):
        while not self.halt.is_set():
            try:
                self.test.one(self.tg, self.tag)
            except Exception as e:  # kept for the assertions
                self.test.errors.append(repr(e))
                time.sleep(0.05)

    def stop(self):
        self.halt.set()
        self.join(60)


class LedgerFilesTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.hook = Receiver()
        self.addCleanup(self.hook.close)
        self.calls = []      # (marker, request id, response)
        self.errors = []
        self.lock = threading.Lock()
        self.ctl = os.path.join(self.tmp, "faults.ctl")
        self.fault_log = os.path.join(self.tmp, "faults.log")

    # -- helpers ----------------------------------------------------------

    def start_tg(self, name="tollgate", durability="process", faults=False,
                 path="data/ledger.db"):
        extra = ledgerlib.metering_extra(ledger={
            "path": path, "durability": durability})
        extra["alerts"] = {"webhooks": [{
            "url": "http://127.0.0.1:%d/hook" % self.hook.port,
            "format": "json"}]}
        env = None
        if faults:
            env = tglib.faultfs_env(FAULTFS_CONTROL=self.ctl,
                                    FAULTFS_MATCH="ledger.db",
                                    FAULTFS_LOG=self.fault_log)
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=extra, name=name, env=env)
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.db = os.path.join(self.tmp, path)
        self.ledger = ledgerlib.Ledger(self.db, tg)
        return tg

    def one(self, tg, tag="c"):
        """One chat call with its own marker and request id."""
        m = ledgerlib.marker(tag)
        rid = "rid-" + m
        r = tglib.http_call(tg.port, "POST", "/v1/chat/completions",
                            tglib.openai_chat(m),
                            [JSON_CT, AGENT, ("X-Tollgate-Request-Id", rid)],
                            timeout=30)
        with self.lock:
            self.calls.append((m, rid, r))
        if r.status not in (200, 503):
            raise AssertionError("call %s: %r" % (rid, r))
        if r.status == 503:
            self.assertClean503(r)
            self.assertEqual(json.loads(r.body)["error"]["code"],
                             "ledger_unavailable", r)
        return r

    def admin(self, tg, path):
        raw = tglib.build_request(
            "GET", path, b"", [("Host", "127.0.0.1:%d" % tg.admin_port)],
            host=None)
        return tglib.http_call(tg.admin_port, "GET", path, raw=raw)

    def metric(self, tg, name, labels=""):
        text = self.admin(tg, "/metrics").body.decode()
        pat = r"^%s%s (\d+)$" % (re.escape(name), re.escape(labels))
        m = re.search(pat, text, re.M)
        self.assertTrue(m, "no %s%s in /metrics" % (name, labels))
        return int(m.group(1))

    def healthz(self, tg):
        r = self.admin(tg, "/healthz")
        self.assertEqual(r.status, 200, r)
        return json.loads(r.body)

    def wait_served(self, tg, timeout=20):
        """Calls until one is answered 200; that response."""
        def probe():
            r = self.one(tg, "probe")
            return r if r.status == 200 else None
        r = tglib.wait_until(probe, timeout, interval=0.1)
        self.assertTrue(r, "tollgate did not take calls again within "
                        "%d s" % timeout)
        return r

    def faults(self, text):
        """Switch faults on (text) or off (None), atomically."""
        if text is None:
            try:
                os.unlink(self.ctl)
            except FileNotFoundError:
                pass
            return
        with open(self.ctl + ".new", "w") as f:
            f.write(text + "\n")
        os.replace(self.ctl + ".new", self.ctl)

    def injected(self):
        try:
            with open(self.fault_log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def restart_and_check(self, tg, name, clean=True):
        """Stop tollgate (SIGTERM, or kill -9), start it again without
        faults, and check the ledger is whole."""
        if clean:
            self.assertEqual(tg.stop(timeout=40), 0, "tollgate did not "
                             "stop cleanly")
        else:
            # The rows of calls already answered are settled by the writer
            # thread a moment after the answer: let them reach the files
            # (that is what is checked), then kill.
            tglib.wait_until(lambda: self.ledger.count(
                "status = 'in_flight'") == 0, 10, interval=0.05)
            tg.kill()
            tg.expected_exit = True
        tg2 = self.start_tg(name=name)
        self.assertLedgerWhole()
        return tg2

    def assertLedgerWhole(self):
        self.assertEqual(self.errors, [])
        self.assertEqual(self.ledger.integrity(), "ok")
        left = self.ledger.rows("status = 'in_flight'")
        self.assertEqual(left, [], "rows left in flight: %s" % [
            ledgerlib.describe_row(r) for r in left[:5]])
        seen = self.fp.requests()
        ok = 0
        for m, rid, r in self.calls:
            got = [q for q in seen if m in (q.get("body") or "")]
            row = self.ledger.row(rid)
            if r.status == 200:
                ok += 1
                self.assertEqual(len(got), 1, "call %s answered 200: "
                                 "fakeprov saw it %d times" % (rid, len(got)))
                self.assertIsNotNone(row, "call %s was answered 200 but "
                                     "has no row after a restart" % rid)
                self.assertEqual(row["status"], "ok",
                                 ledgerlib.describe_row(row))
            else:
                self.assertEqual(got, [], "call %s answered 503 was "
                                 "forwarded" % rid)
                self.assertIsNone(row, "call %s answered 503 has a row: "
                                  "%s" % (rid, ledgerlib.describe_row(row)))
            if got:
                self.assertIsNotNone(row, "fakeprov saw call %s, the "
                                     "ledger has no row" % rid)
        self.assertEqual(self.ledger.count(), ok)
        self.assertEqual(len(seen), ok, "fakeprov saw calls that are not "
                         "in the ledger")

    # -- a link in the path ---------------------------------------------------

    def test_relinked_path_refuses_until_it_leads_back(self):
        # ledger.path goes through a symbolic link to a directory (a
        # volume mounted elsewhere, say). Pointed at another directory, a
        # restart would open another ledger: calls are refused until it
        # leads back, and the file tollgate has open keeps every row.
        real = os.path.join(self.tmp, "real")
        other = os.path.join(self.tmp, "other")
        os.mkdir(real, 0o700)
        os.mkdir(other, 0o700)
        link = os.path.join(self.tmp, "link")
        os.symlink(real, link)
        tg = self.start_tg(path="link/ledger.db")
        for i in range(3):
            self.assertEqual(self.one(tg).status, 200)
        tmp_link = link + ".new"
        os.symlink(other, tmp_link)
        os.replace(tmp_link, link)
        refused = tglib.wait_until(lambda: self.one(tg).status == 503, 10,
                                   interval=0.1)
        self.assertTrue(refused, "calls were still answered 200 with the "
                        "path leading to another directory")
        self.assertEqual(self.healthz(tg).get("reason"), "relinked")
        self.assertEqual(self.metric(tg, "tollgate_ledger_lost_total",
                                     '{reason="relinked"}'), 1)
        self.assertEqual(os.listdir(other), [], "tollgate wrote into "
                         "the directory the link now leads to")
        os.symlink(real, tmp_link)
        os.replace(tmp_link, link)
        self.wait_served(tg)
        self.assertRegex(tg.log(), r"relinked|leads to another file")
        self.assertEqual(tg.stop(timeout=40), 0)
        self.start_tg(name="t2", path="link/ledger.db")
        self.assertLedgerWhole()

    # -- the ledger deleted ---------------------------------------------------

    def test_deleted_files_are_rebuilt(self):
        tg = self.start_tg()
        for i in range(5):
            self.assertEqual(self.one(tg, "before").status, 200)
        before = os.stat(self.db).st_ino
        for suffix in ("", "-wal", "-shm"):
            os.unlink(self.db + suffix)
        # Each call is answered 200 (the ledger is back) or a clean 503
        # (not yet), never 200 into the deleted file.
        for i in range(10):
            self.one(tg, "after")
        self.wait_served(tg)
        last = self.one(tg, "last")
        self.assertEqual(last.status, 200)
        # What tollgate said, gathered now and checked after the ledger:
        # a restart must show every call answered 200, first of all.
        log = tg.log()
        inode = os.stat(self.db).st_ino if os.path.exists(self.db) else None
        metrics = self.admin(tg, "/metrics").body.decode()
        health = self.healthz(tg)
        rid = last.header("x-tollgate-request-id")
        listed = tglib.wait_until(lambda: rid in [
            c["id"] for c in json.loads(self.admin(
                tg, "/v1/calls?limit=5").body)["calls"]], 5)
        stored = tglib.wait_until(lambda: [
            a for a in json.loads(self.admin(tg, "/v1/alerts").body)
            ["alerts"] if a["kind"] == "ledger"], 5)
        hooked = tglib.wait_until(
            lambda: len(self.hook.ledger_alerts()) >= 2 and
            self.hook.ledger_alerts(), 5) or self.hook.ledger_alerts()

        self.restart_and_check(tg, "t2")
        self.assertEqual(
            sum(1 for m, rid, r in self.calls if r.status == 200 and
                rid.startswith("rid-before")), 5)
        self.assertRegex(log, r"ledger\.db: the database file was deleted "
                         r"while open")
        self.assertRegex(log, r"ledger\.db rebuilt at its path from the "
                         r"open database")
        self.assertNotEqual(inode, before)
        for name, value in (
                ('tollgate_ledger_lost_total{reason="deleted"}', 1),
                ("tollgate_ledger_rebuilds_total", 1),
                ("tollgate_ledger_lost", 0)):
            self.assertIn("\n%s %d\n" % (name, value), metrics)
        self.assertRegex(metrics, r'\ntollgate_alerts_fired_total\{kind='
                         r'"ledger"\} [2-9]\n')
        self.assertEqual(health, {"status": "ok"})
        self.assertTrue(listed, "/v1/calls does not show a call made after "
                        "the rebuild")
        self.assertTrue(stored, "no ledger alert in /v1/alerts")
        msgs = [a["message"] for a in hooked]
        self.assertTrue(any("deleted" in m for m in msgs), msgs)
        self.assertTrue(any("rebuilt" in m for m in msgs), msgs)

    def test_directory_gone_fails_closed_until_it_is_back(self):
        tg = self.start_tg()
        for i in range(3):
            self.assertEqual(self.one(tg, "before").status, 200)
        since = self.fp.mark()
        shutil.rmtree(os.path.dirname(self.db))
        for i in range(5):
            self.assertEqual(self.one(tg, "gone").status, 503)
        self.assertEqual(self.fp.requests()[since:], [],
                         "calls were forwarded with no ledger to record "
                         "them")
        self.assertEqual(self.healthz(tg), {
            "status": "degraded", "ledger": "lost", "reason": "deleted"})
        self.assertEqual(self.metric(tg, "tollgate_ledger_lost"), 1)
        self.assertTrue(tglib.wait_until(lambda: self.metric(
            tg, "tollgate_ledger_rebuild_failures_total") > 0, 10))
        # Found before any copy is made: the directory is not there.
        self.assertTrue(tg.wait_log(r"cannot be rebuilt: \S*/data: No such "
                                    r"file"), tg.log())
        # The alert is delivered while the ledger cannot write.
        self.assertTrue(tglib.wait_until(self.hook.ledger_alerts, 10),
                        "no ledger alert at the webhook")
        self.assertIn("deleted", self.hook.ledger_alerts()[0]["message"])
        os.mkdir(os.path.dirname(self.db), 0o700)
        self.wait_served(tg)
        self.assertEqual(self.healthz(tg), {"status": "ok"})
        for i in range(3):
            self.assertEqual(self.one(tg, "back").status, 200)
        self.restart_and_check(tg, "t2")
        # The rows of the first calls came back from the open file.
        for m, rid, r in self.calls[:3]:
            self.assertEqual(self.ledger.row(rid)["status"], "ok")

    def test_wal_or_shm_deleted(self):
        tg = self.start_tg()
        for i in range(3):
            self.assertEqual(self.one(tg, "before").status, 200)
        os.unlink(self.db + "-wal")
        for i in range(5):
            self.one(tg, "nowal")
        self.wait_served(tg)
        wal = tg.wait_log(r"write-ahead log \(-wal\) was deleted")
        # The -shm is checked once a second, not before every answer.
        os.unlink(self.db + "-shm")
        shm = tg.wait_log(r"shared-memory index \(-shm\) was deleted",
                          timeout=5)
        self.wait_served(tg)
        for i in range(3):
            self.assertEqual(self.one(tg, "after").status, 200)
        metrics = self.admin(tg, "/metrics").body.decode()
        # kill -9: whatever is not in the files at the path is lost.
        self.restart_and_check(tg, "t2", clean=False)
        self.assertTrue(wal, "the -wal's deletion was not noticed")
        self.assertTrue(shm, "the -shm's deletion was not noticed")
        for name, value in (
                ('tollgate_ledger_lost_total{reason="wal_gone"}', 1),
                ('tollgate_ledger_lost_total{reason="shm_gone"}', 1),
                ("tollgate_ledger_rebuilds_total", 2)):
            self.assertIn("\n%s %d\n" % (name, value), metrics)

    def test_replaced_file_is_never_written(self):
        tg = self.start_tg()
        for i in range(3):
            self.assertEqual(self.one(tg, "before").status, 200)
        foreign = os.path.join(self.tmp, "data", "other.db")
        c = sqlite3.connect(foreign)
        c.execute("CREATE TABLE notes (x TEXT)")
        c.execute("INSERT INTO notes VALUES ('not a ledger')")
        c.commit()
        c.close()
        with open(foreign, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        since = self.fp.mark()
        os.replace(foreign, self.db)
        for i in range(5):
            self.one(tg, "replaced")
        self.assertTrue(tg.wait_log(r"is not tollgate's ledger; the rows "
                                    r"tollgate holds are saved in "), tg.log())
        for i in range(3):
            self.assertEqual(self.one(tg, "still").status, 503)
        self.assertEqual(self.fp.requests()[since:], [])
        self.assertEqual(self.healthz(tg), {
            "status": "degraded", "ledger": "lost", "reason": "replaced"})
        self.assertGreaterEqual(self.metric(
            tg, "tollgate_ledger_lost_total", '{reason="replaced"}'), 1)
        with open(self.db, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest,
                             "tollgate wrote into a file that is not its "
                             "ledger")
        saved = [n for n in os.listdir(os.path.dirname(self.db))
                 if n.startswith("ledger.db.saved-")]
        self.assertEqual(len(saved), 1, saved)
        copy = ledgerlib.Ledger(os.path.join(os.path.dirname(self.db),
                                             saved[0]))
        self.assertEqual(copy.integrity(), "ok")
        for m, rid, r in self.calls[:3]:
            self.assertEqual(copy.row(rid)["status"], "ok")
        # The path freed, tollgate puts its own ledger back there.
        os.unlink(self.db)
        self.wait_served(tg)
        self.assertTrue(tg.wait_log(r"that copy is no longer needed"),
                        tg.log())
        self.restart_and_check(tg, "t2")

    # -- the disk failing (faultfs) -----------------------------------------

    def run_faults(self, tg, fault, load=3):
        """Calls from `load` threads; fault on until calls are refused
        and the shim has injected failures, then off. Returns when
        tollgate serves again."""
        for i in range(3):
            self.assertEqual(self.one(tg, "before").status, 200)
        loads = [Load(self, tg, "load%d" % i) for i in range(load)]
        try:
            time.sleep(0.3)
            self.faults(fault)
            refused = tglib.wait_until(lambda: any(
                r.status == 503 for m, rid, r in list(self.calls)), 20)
            self.assertTrue(refused, "no call was refused while %r" %
                            fault)
            self.assertTrue(self.injected(), "the shim injected nothing")
            time.sleep(1.0)
            during = self.healthz(tg)
            self.assertEqual(during["status"], "degraded", during)
            self.faults(None)
            self.wait_served(tg)
            time.sleep(0.3)
        finally:
            self.faults(None)
            for t in loads:
                t.stop()
        self.assertEqual(self.errors, [])
        return during

    def test_fsync_failures_power(self):
        tg = self.start_tg(durability="power", faults=True)
        during = self.run_faults(tg, "fsync EIO")
        self.assertEqual(during, {"status": "degraded", "ledger": "lost",
                                  "reason": "sync_failed"})
        self.assertGreaterEqual(self.metric(
            tg, "tollgate_ledger_lost_total", '{reason="sync_failed"}'), 1)
        self.assertGreaterEqual(
            self.metric(tg, "tollgate_ledger_rebuilds_total"), 1)
        self.assertTrue(tglib.wait_until(
            lambda: any("fsync failed" in a["message"]
                        for a in self.hook.ledger_alerts()), 10),
            "no ledger alert about the fsync at the webhook")
        self.assertTrue(any(l.startswith("fsync EIO ") for l in
                            self.injected()))
        self.assertEqual(self.healthz(tg), {"status": "ok"})
        self.restart_and_check(tg, "t2")

    def test_write_failures_process(self):
        tg = self.start_tg(durability="process", faults=True)
        during = self.run_faults(tg, "write ENOSPC")
        self.assertEqual(during, {"status": "degraded",
                                  "ledger": "failing"})
        self.assertGreater(self.metric(tg, "tollgate_ledger_failures_total"),
                           0)
        self.assertEqual(self.metric(tg, "tollgate_ledger_failing"), 0)
        self.assertTrue(tglib.wait_until(
            lambda: any("writes fail" in a["message"]
                        for a in self.hook.ledger_alerts()), 10),
            "no ledger alert about failing writes at the webhook")
        self.assertTrue(tglib.wait_until(
            lambda: any("writes recovered" in a["message"]
                        for a in self.hook.ledger_alerts()), 10),
            "no ledger alert saying writes recovered")
        self.assertTrue(any(l.startswith("write ENOSPC ") for l in
                            self.injected()))
        self.assertEqual(self.healthz(tg), {"status": "ok"})
        self.restart_and_check(tg, "t2")

    def test_fsync_failure_in_a_checkpoint_process(self):
        # Under durability: process commits are not synced; the first
        # fsync is a checkpoint's, after the rows were written and their
        # calls answered. The file's state on disk is then unknown.
        tg = self.start_tg(durability="process", faults=True)
        for i in range(3):
            self.assertEqual(self.one(tg, "before").status, 200)
        self.faults("fsync EIO")
        loads = [Load(self, tg, "load%d" % i) for i in range(3)]
        try:
            refused = tglib.wait_until(lambda: any(
                r.status == 503 for m, rid, r in list(self.calls)), 60)
            self.assertTrue(refused, "no call was refused after a "
                            "checkpoint's fsync failed")
            self.assertTrue(tg.wait_log(r"an fsync failed, so what is on "
                                        r"disk is unknown"), tg.log())
            self.faults(None)
            self.wait_served(tg)
        finally:
            self.faults(None)
            for t in loads:
                t.stop()
        self.assertGreaterEqual(self.metric(
            tg, "tollgate_ledger_lost_total", '{reason="sync_failed"}'), 1)
        self.assertGreaterEqual(
            self.metric(tg, "tollgate_ledger_rebuilds_total"), 1)
        self.restart_and_check(tg, "t2")


if __name__ == "__main__":
    tglib.main()
