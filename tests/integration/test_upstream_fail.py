# SPDX-License-Identifier: Apache-2.0
"""Upstream failures: connection refused -> 502 and a header timeout -> 504,
each with a JSON body in the route family's error shape; an upstream that
resets, closes or stalls mid-stream ends the client's stream visibly early
(no terminating chunk, connection closed), never as a clean end."""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker

GEMINI = "/v1beta/models/gemini-2.0-flash:generateContent"
FAMILIES = [
    ("openai", "/v1/chat/completions", tglib.openai_chat),
    ("anthropic", "/v1/messages", tglib.anthropic_messages),
    ("gemini", GEMINI, tglib.gemini_generate),
]


class UpstreamFailTest(tglib.TGTestCase):

    def test_connect_refused_502(self):
        port = tglib.free_port()
        ups = tglib.std_upstreams(port)
        for u in ups.values():
            u["connect_timeout"] = "2s"
        tg = self.tollgate(upstreams=ups)
        for family, path, body in FAMILIES + [
                ("openai", "/local/v1/chat/completions", tglib.openai_chat),
                ("openai", "/openai/deployments/d/chat/completions"
                 "?api-version=2024-10-21", tglib.openai_chat)]:
            with self.subTest(path=path):
                t0 = time.monotonic()
                r = self.call(tg.port, "POST", path, body(new_marker()),
                              [JSON_CT] + tglib.CANARY_AUTH, timeout=20)
                self.assertEqual(r.status, 502, r)
                self.assertErrorShape(r, family, 502)
                self.assertTrue(r.header("x-tollgate-request-id"), r.headers)
                self.assertLess(time.monotonic() - t0, 10)
        self.assertTrue(tg.wait_log(
            r"session \d+: POST /v1/messages upstream=anthropic status=502",
            5), "no per-call log line for the refused connection")

    def hang_config(self, fp):
        ups = tglib.std_upstreams(fp.port)
        for u in ups.values():
            u.update({"connect_timeout": "2s", "header_timeout": "1s",
                      "idle_timeout": "1s"})
        return ups

    def test_header_timeout_504(self):
        fp = self.fakeprov()
        tg = self.tollgate(upstreams=self.hang_config(fp))
        for family, path, body in FAMILIES:
            with self.subTest(family=family):
                marker = new_marker()
                t0 = time.monotonic()
                r = self.call(tg.port, "POST", path, body(marker),
                              [JSON_CT, ("x-fake-hang", "headers")] +
                              tglib.CANARY_AUTH, timeout=20)
                took = time.monotonic() - t0
                self.assertEqual(r.status, 504, r)
                self.assertErrorShape(r, family, 504)
                self.assertGreater(took, 0.5, "504 before header_timeout")
                self.assertLess(took, 10, "header_timeout 1s took %.1f s"
                                % took)
                rec = fp.wait_request(marker, 5)
                self.assertIsNotNone(rec, "request never reached fakeprov")
                self.assertEqual(len(fp.find_requests(marker)), 1,
                                 "the request was retried upstream")

    def test_header_timeout_closes_upstream(self):
        fp = self.fakeprov()
        tg = self.tollgate(upstreams=self.hang_config(fp))
        marker = new_marker()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(marker),
                      [JSON_CT, ("x-fake-hang", "headers")], timeout=20)
        self.assertEqual(r.status, 504, r)
        rec = fp.wait_request(marker, 5)
        self.assertIsNotNone(rec)
        ev = fp.wait_end(rec["seq"], 5)
        self.assertEqual(ev, "client_closed", "after the 504 tollgate must "
                         "drop the hung upstream connection; fakeprov "
                         "recorded %r" % ev)

    def read_stream(self, tg, knobs, path="/v1/chat/completions",
                    body=None, timeout=20):
        marker = new_marker()
        body = body or (lambda m: tglib.openai_chat(m, stream=True))
        c = self.raw(tg.port, timeout=timeout)
        c.send(tglib.build_request("POST", path, body(marker),
                                   [JSON_CT] + knobs + tglib.CANARY_AUTH))
        try:
            r = c.read_response(timeout)
        except tglib.HTTPTimeout as e:
            self.fail("the client's stream neither ended nor closed within "
                      "%d s: %r" % (timeout, e.partial))
        return c, r, marker

    def assertTruncated(self, r, what):
        self.assertEqual(r.status, 200, "%s: %r" % (what, r))
        self.assertFalse(r.complete, "%s: the client got a clean end of "
                         "stream (terminating chunk) for a stream the "
                         "upstream cut short: %r" % (what, r))
        self.assertTrue(r.closed, "%s: connection not closed: %r" %
                        (what, r))

    def test_reset_mid_stream(self):
        fp = self.fakeprov()
        tg = self.tollgate(upstreams=tglib.std_upstreams(fp.port))
        for family, path, body in (
                ("openai", "/v1/chat/completions",
                 lambda m: tglib.openai_chat(m, stream=True)),
                ("anthropic", "/v1/messages",
                 lambda m: tglib.anthropic_messages(m, stream=True)),
                ("gemini", "/v1beta/models/g:streamGenerateContent?alt=sse",
                 tglib.gemini_generate)):
            for knob in ("x-fake-reset-after", "x-fake-close-after"):
                with self.subTest(family=family, knob=knob):
                    c, r, marker = self.read_stream(
                        tg, [("x-fake-events", "10"), (knob, "3"),
                             ("x-fake-pace-ms", "20")], path, body)
                    self.assertTruncated(r, "%s %s" % (family, knob))
                    self.assertTrue(r.body, "no event was relayed before "
                                    "the upstream cut")
                    rec = fp.wait_request(marker, 5)
                    self.assertIsNotNone(rec)
                    self.assertEqual(fp.wait_end(rec["seq"], 5),
                                     "reset" if "reset" in knob else "closed")
        # Still serving.
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT])
        self.assertEqual(r.status, 200, r)

    def test_idle_timeout_mid_stream(self):
        fp = self.fakeprov()
        tg = self.tollgate(upstreams=self.hang_config(fp))
        t0 = time.monotonic()
        c, r, marker = self.read_stream(
            tg, [("x-fake-events", "5"), ("x-fake-hang", "body")])
        if r.status == 504:
            # Acceptable if tollgate had not yet sent the client a head.
            self.assertErrorShape(r, "openai", 504)
        else:
            self.assertTruncated(r, "x-fake-hang: body")
        self.assertLess(time.monotonic() - t0, 15)
        rec = fp.wait_request(marker, 5)
        self.assertIsNotNone(rec)
        self.assertEqual(fp.wait_end(rec["seq"], 5), "client_closed",
                         "tollgate kept the stalled upstream connection")


if __name__ == "__main__":
    tglib.main()
