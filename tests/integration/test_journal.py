# SPDX-License-Identifier: Apache-2.0
"""The reservation journal through the real binary: a call goes upstream
once its reservation is in the journal (<ledger>.journal.<n>), and its one
row reaches SQLite final, off the call's path. Checked here: a power cut
under durability: power (the journal cut back to what fdatasync had put
on disk, after kill -9) loses no answered call; a torn last record is
ignored; a segment deleted under a running tollgate is started again with
the calls in flight; calls in flight are shown by /v1/calls from memory
while the SQLite file has no row for them; a request id in use, in
flight or in the ledger, is a 409."""

import glob
import http.client
import json
import os
import sqlite3
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
from ledgerlib import AGENT, describe_row  # noqa: E402
from ledgerlib import marker as new_marker  # noqa: E402


class Load(threading.Thread):
    """Calls back to back on one keep-alive connection until stopped or
    the connection dies; keeps the request id of every call answered
    in full."""

    def __init__(self, port, tag):
        threading.Thread.__init__(self, daemon=True)
        self.port, self.tag = port, tag
        self.halt = threading.Event()
        self.answered = []
        self.start()

    def run(self):
        c = None
        i = 0
        while not self.halt.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.port,
                                                   timeout=10)
                i += 1
                stream = i % 3 == 0
                body = tglib.openai_chat(new_marker(self.tag),
                                         stream=stream)
                c.request("POST", "/v1/chat/completions", body,
                          {"Content-Type": "application/json",
                           "X-Tollgate-Agent-Class": "journal",
                           "x-fake-delay-ms": "5"})
                r = c.getresponse()
                data = r.read()
                if r.status != 200 or (stream and b"[DONE]" not in data):
                    continue
                self.answered.append(r.getheader("x-tollgate-request-id"))
            except (OSError, http.client.HTTPException):
                c = None
                return  # tollgate is gone

    def stop(self):
        self.halt.set()
        self.join(30)


class JournalTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def segments(self):
        return sorted(glob.glob(self.ledger.path + ".journal.*"))

    def hold(self, tg, m, hdrs=(), events=200, pace_ms=50):
        """A stream marked m, on its own connection, once the provider
        has it: a call in flight for events x pace_ms."""
        c = self.raw(tg.port, timeout=30)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions", tglib.openai_chat(m, stream=True),
            [JSON_CT, AGENT, ("x-fake-events", str(events)),
             ("x-fake-pace-ms", str(pace_ms))] + list(hdrs)))
        self.fp.wait_request(m)
        return c

    def start_power(self, name, synclog=None):
        env = None
        if synclog is not None:
            # A slow disk: what is written while a sync runs is not on
            # disk yet when the power is cut.
            env = tglib.faultfs_env(FAULTFS_SYNCLOG=synclog,
                                    FAULTFS_SYNC_DELAY_MS="5")
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ledgerlib.metering_extra(ledger={
                "path": "data/ledger.db", "durability": "power"}),
            name=name, env=env)
        self.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/ledger.db"), tg)
        return tg

    def last_synced(self, synclog):
        """{path: size} of the last sync of each file the shim saw."""
        out = {}
        if not os.path.exists(synclog):
            return out
        with open(synclog) as f:
            for line in f:
                size, _, path = line.rstrip("\n").partition(" ")
                out[path] = int(size)
        return out

    def power_cut(self, synclog):
        """What a power cut would leave of the journal: every segment cut
        back to its size at its last sync (to nothing if never synced).
        Returns the bytes cut."""
        synced = self.last_synced(synclog)
        cut = 0
        for seg in self.segments():
            keep = synced.get(os.path.realpath(seg), 0)
            size = os.path.getsize(seg)
            self.assertLessEqual(keep, size, "a segment shrank: %s" % seg)
            if keep < size:
                with open(seg, "r+b") as f:
                    f.truncate(keep)
                cut += size - keep
        return cut

    def test_power_cut_loses_no_answered_call(self):
        cut_total = 0
        interrupted = 0
        answered_total = 0
        # At least three cuts, and on until one has taken bytes a sync had
        # not covered yet (a kill can land when every byte is synced).
        for cycle in range(8):
            if cycle >= 3 and cut_total > 0:
                break
            with self.subTest(cycle=cycle):
                synclog = os.path.join(self.tmp, "sync%d.log" % cycle)
                tg = self.start_power("power%d" % cycle, synclog)
                loads = [Load(tg.port, "pc%d" % cycle) for _ in range(6)]
                time.sleep(1.0 + 0.3 * cycle)
                tg.kill()
                tg.expected_exit = True
                for ld in loads:
                    ld.stop()
                answered = [rid for ld in loads for rid in ld.answered]
                self.assertGreater(len(answered), 20, "too little load to "
                                   "prove anything")
                answered_total += len(answered)
                cut_total += self.power_cut(synclog)

                tg = self.start_power("power%d-after" % cycle)
                self.assertEqual(tg.in_flight(), [])
                self.assertEqual(tg.stop(), 0)
                self.assertEqual(self.ledger.integrity(), "ok")
                missing = [rid for rid in answered
                           if self.ledger.row(rid) is None]
                self.assertEqual(missing, [], "answered calls without a row "
                                 "after a power cut: %d of %d" %
                                 (len(missing), len(answered)))
                for r in self.ledger.rows("status = 'interrupted'"):
                    self.assertEqual(r["cost_nusd"], r["reserved_nusd"],
                                     describe_row(r))
                    interrupted += 1
                self.assertEqual(self.ledger.count("status = 'in_flight'"),
                                 0)
        # The cut must have taken something, or nothing was proven.
        self.assertGreater(cut_total, 0, "no journal bytes were unsynced "
                           "at any kill (answered %d)" % answered_total)

    def test_torn_last_record_is_ignored(self):
        tg = self.start(self.fp, name="torn0")
        held = []
        for i in range(3):
            m = new_marker("torn")
            held.append(self.hold(tg, m))
        ids = [r["id"] for r in tg.in_flight()]
        self.assertEqual(len(ids), 3)
        tg.kill()
        tg.expected_exit = True
        segs = self.segments()
        self.assertEqual(len(segs), 1, segs)
        # A crash in the middle of the next record: its length says more
        # than is there.
        with open(segs[-1], "ab") as f:
            f.write(b"\x40\x01\x00\x00\x12\x34\x56\x78\x01garbage")
        tg = self.start(self.fp, name="torn1")
        self.assertTrue(tg.wait_log(r"record cut short"), tg.log())
        for rid in ids:
            r = self.ledger.row(rid)
            self.assertIsNotNone(r, rid)
            self.assertEqual(r["status"], "interrupted", describe_row(r))
            self.assertEqual(r["cost_nusd"], r["reserved_nusd"])
        # The old segments are gone once written; the new one is fresh.
        self.assertEqual(len(self.segments()), 1)
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT, AGENT])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.settled_row(r)["status"], "ok")
        self.assertEqual(tg.stop(), 0)
        self.assertEqual(self.segments(), [],
                         "a clean stop leaves no journal")

    def test_segment_deleted_under_tollgate_starts_another(self):
        tg = self.start(self.fp, name="del0")
        m = new_marker("del")
        self.hold(tg, m)
        rid = tg.in_flight()[0]["id"]
        first = self.segments()
        self.assertEqual(len(first), 1)
        # The next name is taken by a file that is not tollgate's: it is
        # passed over, never written or deleted.
        n = int(first[0].rsplit(".", 1)[1])
        squat = "%s.journal.%d" % (self.ledger.path, n + 1)
        with open(squat, "wb") as f:
            f.write(b"not ours")
        os.unlink(first[0])
        self.assertTrue(tg.wait_log(r"was deleted or replaced", 5),
                        tg.log())
        nxt = "%s.journal.%d" % (self.ledger.path, n + 2)
        self.assertTrue(tglib.wait_until(lambda: os.path.exists(nxt), 5),
                        self.segments())
        with open(squat, "rb") as f:
            self.assertEqual(f.read(), b"not ours")
        os.unlink(squat)  # or the next start refuses it: not a journal
        # The call in flight is in the new segment: a crash now still
        # leaves its row.
        tg.kill()
        tg.expected_exit = True
        tg = self.start(self.fp, name="del1")
        r = self.ledger.row(rid)
        self.assertIsNotNone(r, "the call in flight was lost with its "
                             "segment")
        self.assertEqual(r["status"], "interrupted", describe_row(r))
        self.assertEqual(tg.stop(), 0)

    def test_in_flight_is_served_from_memory(self):
        tg = self.start(self.fp, name="mem")
        m = new_marker("mem")
        c = self.hold(tg, m, [("X-Tollgate-Team", "mem-team")], 20, 100)
        rows = tg.in_flight()
        self.assertEqual(len(rows), 1, rows)
        r = rows[0]
        self.assertEqual(r["status"], "in_flight")
        self.assertEqual(r["team"], "mem-team")
        self.assertGreater(r["reserved_nusd"], 0)
        self.assertIsNone(r["finished_at"])
        # Not in the SQLite file: its one row is written when it ends.
        self.assertIsNone(self.ledger.row(r["id"]))
        # The same row in an unfiltered page, newest first.
        status, page = tg.admin_get("/v1/calls?team=mem-team")
        self.assertEqual(status, 200)
        self.assertEqual([x["id"] for x in page["calls"]], [r["id"]])
        resp = c.read_response(30, "POST")
        self.assertEqual(resp.status, 200, resp)
        row = self.settled_row(r["id"])
        self.assertEqual(row["status"], "ok", describe_row(row))
        self.assertEqual(row["reserved_nusd"], r["reserved_nusd"])
        self.assertTrue(tglib.wait_until(lambda: tg.in_flight() == [], 5))

    def test_settled_not_written_is_served_from_memory(self):
        """A call's row reaches the file a moment after its answer, and
        much later while SQLite cannot be written. Meanwhile /v1/calls
        shows its final row from memory, once, and then the file's."""
        tg = self.start(self.fp, name="unw")
        lockc = sqlite3.connect(self.ledger.path, timeout=10,
                                isolation_level=None)
        try:
            lockc.execute("BEGIN IMMEDIATE")
            m = new_marker("unw")
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(m),
                          [JSON_CT, AGENT, ("X-Tollgate-Team", "unw-team")])
            self.assertEqual(r.status, 200, r)
            rid = r.header("x-tollgate-request-id")
            status, page = tg.admin_get("/v1/calls?team=unw-team")
            self.assertEqual(status, 200)
            self.assertEqual([(x["id"], x["status"]) for x in page["calls"]],
                             [(rid, "ok")])
            self.assertGreater(page["calls"][0]["cost_nusd"], 0)
            self.assertIsNotNone(page["calls"][0]["finished_at"])
        finally:
            lockc.execute("ROLLBACK")
            lockc.close()
        row = self.settled_row(rid)
        self.assertEqual(row["status"], "ok", describe_row(row))
        status, page = tg.admin_get("/v1/calls?team=unw-team")
        self.assertEqual([(x["id"], x["cost_nusd"]) for x in page["calls"]],
                         [(rid, row["cost_nusd"])])

    def test_request_id_in_use_is_refused(self):
        tg = self.start(self.fp, name="dup")
        rid = "client-chosen-" + new_marker()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()),
                      [JSON_CT, AGENT, ("X-Tollgate-Request-Id", rid)])
        self.assertEqual(r.status, 200, r)
        self.settled_row(rid)
        # In the ledger: the writer says so before anything is forwarded.
        since = self.fp.mark()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()),
                      [JSON_CT, AGENT, ("X-Tollgate-Request-Id", rid)])
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.fp.requests()[since:], [])
        # In flight: found in memory.
        held = "held-" + new_marker()
        m = new_marker("held")
        c = self.hold(tg, m, [("X-Tollgate-Request-Id", held)], 20, 100)
        since = self.fp.mark()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()),
                      [JSON_CT, AGENT, ("X-Tollgate-Request-Id", held)])
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.fp.requests()[since:], [])
        resp = c.read_response(30, "POST")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.settled_row(held)["status"], "ok")
        self.assertEqual(self.ledger.count("id = ?", (held,)), 1)


if __name__ == "__main__":
    tglib.main()
