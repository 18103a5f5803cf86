# SPDX-License-Identifier: Apache-2.0
"""Backpressure and client disconnects: a client reading ~1 KiB/s from a
stream of tens of MiB keeps tollgate's memory bounded (the upstream is
paused, not buffered), and a client that goes away mid-stream makes tollgate
close its upstream connection (fakeprov records client_closed)."""

import os
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, MiB, new_marker

# 200000 events of 200 bytes: ~40 MiB of text, well over any bound below and
# over what loopback socket buffers can hold, so an unbounded relay shows.
BIG_EVENTS = 200000
BIG_EVENT_BYTES = 200
RSS_BOUND = 16 * MiB
SLOW_SECONDS = 10


class BackpressureTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        # Under ASan, freed memory sits in a quarantine that counts as RSS
        # (about 15 MiB here once the first buffers have churned); these
        # bounds are about buffering, so the sanitized run measures without
        # it. Use-after-free detection stays on in every other test.
        asan = os.environ.get("ASAN_OPTIONS", "")
        if "quarantine_size_mb" not in asan:
            os.environ["ASAN_OPTIONS"] = (asan + ":" if asan else "") + \
                "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
        self.fp = self.fakeprov()
        self.tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                                limits={"stream_high_watermark": "256KiB"})

    def warm_up(self):
        """One complete stream first, so one-time allocations (libcurl,
        connection pools) are in the baseline."""
        for path, body in (("/v1/chat/completions",
                            tglib.openai_chat(new_marker(), stream=True)),):
            r = self.call(self.tg.port, "POST", path, body,
                          [JSON_CT, ("x-fake-events", "200"),
                           ("x-fake-event-bytes", "2000")], timeout=30)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.complete, r)
        time.sleep(0.3)

    def test_slow_reader_keeps_rss_bounded(self):
        self.warm_up()
        base = self.tg.rss()
        marker = new_marker()
        c = self.raw(self.tg.port, timeout=20, rcvbuf=4096)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions",
            tglib.openai_chat(marker, stream=True),
            [JSON_CT, ("x-fake-events", str(BIG_EVENTS)),
             ("x-fake-event-bytes", str(BIG_EVENT_BYTES))]))
        rec = self.fp.wait_request(marker, 10)
        self.assertIsNotNone(rec, "stream request never reached fakeprov")
        got = 0
        peak = base
        samples = []
        t_end = time.monotonic() + SLOW_SECONDS
        while time.monotonic() < t_end:
            # ~1 KiB/s: 256 bytes every 250 ms.
            c.sock.settimeout(5)
            data = c.sock.recv(256)
            self.assertTrue(data, "tollgate closed the slow client's "
                            "connection after %d bytes" % got)
            got += len(data)
            rss = self.tg.rss()
            peak = max(peak, rss)
            samples.append(rss)
            time.sleep(0.25)
        growth = peak - base
        self.assertLess(
            growth, RSS_BOUND,
            "tollgate RSS grew by %.1f MiB (baseline %.1f MiB, peak %.1f "
            "MiB) while a client read %d bytes at ~1 KiB/s: the stream is "
            "being buffered instead of paused" %
            (growth / MiB, base / MiB, peak / MiB, got))
        # The stream is far from finished: fakeprov is held back too.
        self.assertIsNone(self.fp.end_event(rec["seq"]),
                          "fakeprov already finished a ~40 MiB stream that "
                          "the client has read %d bytes of: the relay does "
                          "not apply backpressure upstream" % got)
        self.assertTrue(self.tg.alive())
        # Going away now must release the upstream too.
        c.close()
        ev = self.fp.wait_end(rec["seq"], 10)
        self.assertEqual(ev, "client_closed",
                         "after the slow client left, fakeprov's stream "
                         "ended with %r" % ev)
        # And tollgate gives the memory back to a reasonable level and keeps
        # serving.
        r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT])
        self.assertEqual(r.status, 200, r)

    def test_client_that_stops_reading_is_let_go(self):
        """A client that takes none of its bytes for client_write_timeout is
        dropped, so its paused stream does not hold the session, the upstream
        connection and the reservation for ever."""
        self.tg.stop()  # this test's own limits; one tollgate per ledger
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                           limits={"stream_high_watermark": "256KiB",
                                   "client_write_timeout": "1s"})
        marker = new_marker()
        c = self.raw(tg.port, timeout=20, rcvbuf=4096)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions",
            tglib.openai_chat(marker, stream=True),
            [JSON_CT, ("x-fake-events", str(BIG_EVENTS)),
             ("x-fake-event-bytes", str(BIG_EVENT_BYTES))]))
        rec = self.fp.wait_request(marker, 10)
        self.assertIsNotNone(rec, "stream request never reached fakeprov")
        # The client never reads: the socket fills, the stream pauses, and
        # one second later tollgate lets the client go.
        ev = self.fp.wait_end(rec["seq"], 15)
        self.assertEqual(ev, "client_closed",
                         "the stream to a client that stopped reading ended "
                         "with %r" % ev)
        self.assertTrue(tg.wait_log(r"reason=client_closed", 5),
                        "no call line settled as client_closed")
        c.close()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT])
        self.assertEqual(r.status, 200, r)

    def test_slow_reader_of_large_json_reply(self):
        """The same bound holds for a non-streamed reply of ~40 MiB."""
        self.warm_up()
        base = self.tg.rss()
        marker = new_marker()
        c = self.raw(self.tg.port, timeout=20, rcvbuf=4096)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions", tglib.openai_chat(marker),
            [JSON_CT, ("x-fake-events", str(BIG_EVENTS)),
             ("x-fake-event-bytes", str(BIG_EVENT_BYTES))]))
        self.assertIsNotNone(self.fp.wait_request(marker, 10))
        got, peak = 0, base
        t_end = time.monotonic() + 6
        while time.monotonic() < t_end:
            c.sock.settimeout(5)
            data = c.sock.recv(256)
            self.assertTrue(data, "connection closed after %d bytes" % got)
            got += len(data)
            peak = max(peak, self.tg.rss())
            time.sleep(0.25)
        self.assertLess(peak - base, RSS_BOUND,
                        "tollgate RSS grew by %.1f MiB relaying a ~40 MiB "
                        "JSON reply to a client that read %d bytes" %
                        ((peak - base) / MiB, got))
        c.close()
        r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT])
        self.assertEqual(r.status, 200, r)

    def disconnect_mid_stream(self, rst):
        marker = new_marker()
        c = self.raw(self.tg.port, timeout=15)
        # 400 events, 50 ms apart: 20 s if nobody stops it.
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions",
            tglib.openai_chat(marker, stream=True),
            [JSON_CT, ("x-fake-events", "400"), ("x-fake-pace-ms", "50")]))
        resp = tglib.Response()
        deadline = time.monotonic() + 10
        self.assertTrue(c.read_head(resp, deadline), resp)
        self.assertEqual(resp.status, 200, resp)
        for data in c.iter_body(resp, deadline):
            if b"\n\n" in resp.body and len(resp.body) > 100:
                break
        self.assertTrue(resp.body.startswith(b"data:"), resp)
        rec = self.fp.wait_request(marker, 5)
        self.assertIsNotNone(rec)
        t0 = time.monotonic()
        c.close(rst=rst)
        ev = self.fp.wait_end(rec["seq"], 5)
        self.assertEqual(ev, "client_closed",
                         "5 s after the client %s, fakeprov's stream ended "
                         "with %r (None = still streaming)" %
                         ("reset" if rst else "closed", ev))
        self.assertLess(time.monotonic() - t0, 5)
        self.assertTrue(self.tg.alive())
        # Still serving.
        r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT])
        self.assertEqual(r.status, 200, r)

    def test_client_close_mid_stream_closes_upstream(self):
        self.disconnect_mid_stream(rst=False)

    def test_client_reset_mid_stream_closes_upstream(self):
        self.disconnect_mid_stream(rst=True)

    def test_many_disconnects_no_fd_leak(self):
        """Twenty clients that drop their streams leave no descriptors
        behind in tollgate."""
        def nfds():
            return len(os.listdir("/proc/%d/fd" % self.tg.pid))
        self.warm_up()
        before = nfds()
        seqs = []
        for i in range(20):
            marker = new_marker()
            c = self.raw(self.tg.port, timeout=10)
            c.send(tglib.build_request(
                "POST", "/v1/chat/completions",
                tglib.openai_chat(marker, stream=True),
                [JSON_CT, ("x-fake-events", "200"),
                 ("x-fake-pace-ms", "50")]))
            resp = tglib.Response()
            self.assertTrue(c.read_head(resp, time.monotonic() + 10), resp)
            rec = self.fp.wait_request(marker, 5)
            self.assertIsNotNone(rec)
            seqs.append(rec["seq"])
            c.close(rst=bool(i % 2))
        ends = {s: self.fp.wait_end(s, 10) for s in seqs}
        self.assertEqual([s for s, e in ends.items() if e != "client_closed"],
                         [], "streams not closed upstream: %r" % ends)
        ok = tglib.wait_until(lambda: nfds() <= before + 2, 5)
        self.assertTrue(ok, "tollgate fds: %d before, %d after 20 "
                        "dropped streams" % (before, nfds()))


if __name__ == "__main__":
    tglib.main()
