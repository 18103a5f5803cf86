# SPDX-License-Identifier: Apache-2.0
"""A closed session is freed on the loop's next turn, never under a caller
that still holds it. Each case closes sessions where a caller up the stack
goes on holding them, and the ASan build checks that nothing touches freed
memory and that every session is freed by exit (the teardown requires exit
code 0, and ASan's leak check fails the exit otherwise):

- a stream stopped inside libcurl's write callback (its budget ran out
  mid-stream), after which the relay's data callback reads the closed
  session's flag;
- a paused stream whose rest arrives inside the resume that the client's
  drained output triggers (session_drained → xfer_resume);
- streams still running when drain_timeout cuts them: they are closed in
  the loop's last turn, their rows settled, and the process exits 0."""

import os
import signal

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "lifetime-test-1"
models:
  test-model:
    input: 0
    output: 10.00
    max_output_tokens: 30000
"""


def stream_body(marker, max_tokens=10000):
    return tglib.json_body(model="test-model", user=marker, stream=True,
                           max_tokens=max_tokens,
                           messages=[{"role": "user", "content": "hi"}])


class SessionLifetimeTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "test-prices.yaml"), "w") as f:
            f.write(PRICES)

    def start(self, extra=None, limits=None):
        doc = {"prices": "test-prices.yaml"}
        doc.update(extra or {})
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                           extra=doc, limits=limits)
        tg.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                  "data/tollgate.db"), tg)
        return tg

    def test_streams_stopped_inside_curl_callbacks(self):
        """Several streams in a row run out of their budget mid-stream:
        each is closed inside libcurl's write callback and its caller
        then reads the closed session. All are settled and logged once."""
        tg = self.start({"policies": [{"name": "tight", "window": "day",
                                       "hard_cap_usd": "2.00"}]})
        n = 3
        for i in range(n):
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          stream_body(new_marker()),
                          [JSON_CT, ("x-fake-events", "200"),
                           ("x-fake-event-bytes", "600"),
                           ("x-fake-event-tokens", "1500"),
                           ("x-fake-pace-ms", "2")], timeout=30)
            if r.status != 200:
                break  # the cap has no room left for another call
            self.assertTrue(r.complete, r)
        stopped = tg.ledger.wait_count(
            1, "status = 'killed' AND refusal_reason = 'hard_cap'")
        self.assertGreaterEqual(stopped, 1)
        self.assertEqual(tg.in_flight(), [])
        # One close line each: a closed session is never closed again.
        self.assertEqual(
            tg.log().count("ran out while this call was streaming"),
            stopped, tg.log())
        self.assertEqual(tg.stop(), 0)

    def test_paused_stream_ends_inside_resume(self):
        """A client that reads slowly pauses the transfer; the stream's
        end arrives inside the resume its drained output triggers, so the
        session closes under session_drained."""
        tg = self.start(limits={"stream_high_watermark": "16KiB"})
        m = new_marker()
        c = self.raw(tg.port, timeout=30, rcvbuf=4096)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions", stream_body(m),
            [JSON_CT, ("x-fake-events", "40"),
             ("x-fake-event-bytes", "4000")]))
        # Let the provider finish while tollgate holds the transfer
        # paused behind the client's full buffer.
        req = self.fp.wait_request(m)
        self.assertIsNotNone(req, "the call never reached the provider")
        self.assertEqual(self.fp.wait_end(req["seq"], 30), "done")
        resp = c.read_response(30, "POST")
        self.assertEqual(resp.status, 200, resp)
        self.assertTrue(resp.complete, resp)
        self.assertTrue(tg.wait_log(r"reason=ok"), tg.log())
        self.assertEqual(tg.stop(), 0)

    def test_drain_timeout_cuts_streams_and_frees_them(self):
        """SIGTERM while streams run past drain_timeout: they are cut in
        the loop's last turn, their rows settled, and tollgate exits 0
        with every session freed."""
        tg = self.start(limits={"drain_timeout": "1s"})
        conns = []
        for _ in range(3):
            m = new_marker()
            c = self.raw(tg.port, timeout=30)
            c.send(tglib.build_request(
                "POST", "/v1/chat/completions", stream_body(m),
                [JSON_CT, ("x-fake-events", "100"),
                 ("x-fake-pace-ms", "200")]))
            self.fp.wait_request(m)
            conns.append(c)
        self.assertEqual(tglib.wait_until(
            lambda: len(tg.in_flight()) == 3, 10), True)
        tg.signal(signal.SIGTERM)
        rc = tg.wait(20)
        self.assertEqual(rc, 0, "exit code after drain_timeout: %s" % rc)
        self.assertIn("drain_timeout reached", tg.log())
        self.assertEqual(tg.ledger.count("status = 'in_flight'"), 0)
        self.assertEqual(tg.ledger.count("status = 'client_closed'"), 3,
                         tg.ledger.rows())


if __name__ == "__main__":
    tglib.main()
