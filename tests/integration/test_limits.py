# SPDX-License-Identifier: Apache-2.0
"""Request limits and framing: large bodies are relayed whole; bodies over
max_body_bytes get 413 before the body is even sent; too many or too large
headers get 431; any Transfer-Encoding, CL+TE or a second Content-Length is
refused and the connection closed. Nothing refused ever reaches fakeprov."""

import json
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, KiB, MiB, new_marker


def padded_chat(marker, total):
    """An OpenAI chat body of exactly total bytes."""
    head = b'{"model":"gpt-4o-mini","user":"' + marker.encode() + \
        b'","messages":[{"role":"user","content":"'
    tail = b'"}]}'
    pad = total - len(head) - len(tail)
    assert pad >= 0
    body = head + b"a" * pad + tail
    assert len(body) == total
    return body


class LimitsTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def start(self, **limits):
        self.tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                                limits=limits or None)
        return self.tg

    def headers_only(self, tg, content_length, path="/v1/chat/completions",
                     extra=()):
        """Send only the head of a request that announces a body; the
        response must come back without the body being sent."""
        c = self.raw(tg.port)
        c.send(tglib.build_request(
            "POST", path, b"", [JSON_CT, ("Content-Length",
                                          str(content_length))] + list(extra)))
        return c, c.read_response(10)

    def test_body_in_pieces_then_pipelined(self):
        """A large body that arrives in pieces is forwarded byte for byte,
        and a request sent in the same write as the body's last bytes is
        read as the next request, not as part of the body."""
        tg = self.start()
        m1, m2 = new_marker(), new_marker()
        # Messages first, as SDKs send them, with escapes to skip.
        b1 = (b'{"messages":[{"role":"user","content":"' +
              b'x\\"y\\n\u00e9 ' * (300 * KiB // 16) +
              b'"}],"model":"gpt-4o-mini","user":"' + m1.encode() +
              b'","max_tokens":7}')
        json.loads(b1)
        r1 = tglib.build_request("POST", "/v1/chat/completions", b1,
                                 [JSON_CT])
        r2 = tglib.build_request("POST", "/v1/chat/completions",
                                 tglib.openai_chat(m2), [JSON_CT])
        c = self.raw(tg.port)
        cuts = [0, 100, len(r1) - len(b1) + 1, 64 * KiB, 64 * KiB + 3,
                len(r1) // 2, len(r1) - 1]
        for a, b in zip(cuts, cuts[1:]):
            c.send(r1[a:b])
            time.sleep(0.05)
        c.send(r1[cuts[-1]:] + r2)
        for marker, body in ((m1, b1), (m2, None)):
            r = c.read_response(15)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.complete, r)
            rec = tglib.wait_until(
                lambda: [x for x in self.fp.requests()
                         if marker in x.get("body", "")], 10, interval=0.1)
            self.assertTrue(rec, "request %s never reached fakeprov" % marker)
            if body is not None:
                self.assertEqual(rec[0]["body_len"], len(body))
                self.assertEqual(rec[0]["body"].encode("latin-1"), body)
        calls = tglib.wait_until(lambda: len(tg.calls()) >= 2 and
                                 tg.calls(), 10)
        self.assertEqual(len(calls), 2, calls)

    def test_20mib_body_relayed(self):
        tg = self.start()
        marker = new_marker()
        body = padded_chat(marker, 20 * MiB)
        r = self.call(tg.port, "POST", "/v1/chat/completions", body,
                      [JSON_CT], timeout=60)
        self.assertEqual(r.status, 200, r)
        rec = tglib.wait_until(lambda: [x for x in self.fp.requests()
                                        if marker in x.get("body", "")[:200]],
                               20, interval=0.2)
        self.assertTrue(rec, "the 20 MiB request never reached fakeprov")
        self.assertEqual(rec[0]["body_len"], 20 * MiB)
        if len(rec[0].get("body", "")) == 20 * MiB:
            self.assertTrue(rec[0]["body"].encode() == body,
                            "20 MiB body altered on the way")

    def test_over_small_limit_413_before_body(self):
        tg = self.start(max_body_bytes="1MiB")
        c, r = self.headers_only(tg, 1 * MiB + 1)
        self.assertEqual(r.status, 413, "1 MiB + 1 announced: %r" % r)
        self.assertErrorShape(r, "openai", 413)
        # Anthropic route: the 413 comes in Anthropic's shape.
        c2, r2 = self.headers_only(tg, 5 * MiB, path="/v1/messages")
        self.assertEqual(r2.status, 413, r2)
        self.assertErrorShape(r2, "anthropic", 413)
        self.assertNothingForwarded(self.fp, tg)

    def test_over_small_limit_413_body_sent(self):
        tg = self.start(max_body_bytes="1MiB")
        c = self.raw(tg.port, timeout=15)
        c.try_send(tglib.build_request("POST", "/v1/chat/completions",
                                       padded_chat(new_marker(), MiB + 1),
                                       [JSON_CT]))
        r = c.read_response(10)
        self.assertEqual(r.status, 413, r)
        self.assertNothingForwarded(self.fp, tg)

    def test_exactly_small_limit_relayed(self):
        tg = self.start(max_body_bytes="1MiB")
        marker = new_marker()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      padded_chat(marker, MiB), [JSON_CT], timeout=20)
        self.assertEqual(r.status, 200, "a body of exactly max_body_bytes "
                         "must be accepted: %r" % r)
        rec = self.fp.wait_request(marker)
        self.assertIsNotNone(rec)
        self.assertEqual(rec["body_len"], MiB)

    def test_over_default_limit_413(self):
        tg = self.start()
        t0 = time.monotonic()
        c, r = self.headers_only(tg, 32 * MiB + 1)
        self.assertEqual(r.status, 413, "32 MiB + 1 announced with default "
                         "limits: %r" % r)
        self.assertLess(time.monotonic() - t0, 8)
        c, r = self.headers_only(tg, 10737418240)  # 10 GiB
        self.assertEqual(r.status, 413, "10 GiB announced: %r" % r)
        self.assertNothingForwarded(self.fp, tg)

    def test_too_many_headers_431(self):
        tg = self.start(max_headers=100)
        marker = new_marker()
        # Control: 60 extra headers are fine.
        few = [("X-Filler-%d" % i, "v") for i in range(60)]
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(marker), [JSON_CT] + few)
        self.assertEqual(r.status, 200, "60 headers refused: %r" % r)
        self.assertIsNotNone(self.fp.wait_request(marker))
        mark = self.fp.mark()
        many = [("X-Filler-%d" % i, "v") for i in range(150)]
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker("refused")),
                      [JSON_CT] + many)
        self.assertEqual(r.status, 431, "150 headers: %r" % r)
        self.assertNothingForwarded(self.fp, tg, mark)

    def test_header_bytes_431(self):
        tg = self.start(max_header_bytes="64KiB")
        marker = new_marker()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(marker),
                      [JSON_CT, ("X-Big", "b" * (8 * KiB))])
        self.assertEqual(r.status, 200, "an 8 KiB header refused: %r" % r)
        self.assertIsNotNone(self.fp.wait_request(marker))
        mark = self.fp.mark()
        cases = {
            "one 70 KiB header": [("X-Big", "b" * (70 * KiB))],
            "40 headers of 2 KiB": [("X-Big-%d" % i, "b" * (2 * KiB))
                                    for i in range(40)],
        }
        for what, hdrs in cases.items():
            with self.subTest(what):
                c = self.raw(tg.port)
                c.try_send(tglib.build_request(
                    "POST", "/v1/chat/completions",
                    tglib.openai_chat(new_marker("refused")),
                    [JSON_CT] + hdrs))
                r = c.read_response(10)
                self.assertEqual(r.status, 431, "%s: %r" % (what, r))
        self.assertNothingForwarded(self.fp, tg, mark)

    def test_body_sent_in_pieces(self):
        """A body that arrives slowly, in pieces, is relayed whole."""
        tg = self.start()
        marker = new_marker()
        body = padded_chat(marker, 300 * KiB)
        c = self.raw(tg.port, timeout=20)
        c.send(tglib.build_request("POST", "/v1/chat/completions", b"",
                                   [JSON_CT, ("Content-Length",
                                              str(len(body)))]))
        for i in range(0, len(body), 100 * KiB):
            time.sleep(0.2)
            c.send(body[i:i + 100 * KiB])
        r = c.read_response(15)
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(marker)
        self.assertIsNotNone(rec)
        self.assertEqual(rec["body_len"], len(body))

    def test_request_timeout_closes_slow_clients(self):
        """A head or a body that does not arrive within request_timeout
        ends the connection (a 408 first is fine); nothing is forwarded."""
        tg = self.start(request_timeout="2s")
        cases = {
            "slow head": (b"POST /v1/chat/completions HTTP/1.1\r\n"
                          b"Host: 127.0.0.1\r\n", b"X-Slow: a\r\n"),
            "slow body": (tglib.build_request(
                "POST", "/v1/chat/completions", b"",
                [JSON_CT, ("Content-Length", "1000")]) + b'{"model":',
                b" "),
        }
        for what, (first, drip) in cases.items():
            with self.subTest(what):
                c = self.raw(tg.port, timeout=15)
                t0 = time.monotonic()
                c.send(first)
                closed = False
                # Keep dripping bytes (each well within any per-read
                # timeout) for up to 10 s: only a whole-request deadline
                # ends this.
                while time.monotonic() - t0 < 10:
                    if not c.try_send(drip):
                        closed = True
                        break
                    if c.wait_closed(0.5):
                        closed = True
                        break
                took = time.monotonic() - t0
                self.assertTrue(closed, "%s: connection still open after "
                                "%.1f s with request_timeout 2s" %
                                (what, took))
                self.assertLess(took, 8, "%s: closed only after %.1f s" %
                                (what, took))
                head = bytes(c.buf)
                if head:
                    self.assertRegex(head, rb"^HTTP/1\.1 (408|400) ",
                                     "%s: unexpected reply %r" %
                                     (what, head[:200]))
        self.assertNothingForwarded(self.fp, tg)

    def test_transfer_encoding_refused(self):
        tg = self.start()
        chunked = b"5\r\nhello\r\n0\r\n\r\n"
        cases = {
            "TE chunked": ["Transfer-Encoding: chunked"],
            "TE gzip, chunked": ["Transfer-Encoding: gzip, chunked"],
            "TE twice": ["Transfer-Encoding: chunked",
                         "Transfer-Encoding: chunked"],
            "TE tab": ["Transfer-Encoding:\tchunked"],
            "TE identity": ["Transfer-Encoding: identity"],
            "CL + TE": ["Content-Length: 15", "Transfer-Encoding: chunked"],
            "TE + CL": ["Transfer-Encoding: chunked", "Content-Length: 15"],
        }
        for what, lines in cases.items():
            with self.subTest(what):
                raw = ("POST /v1/chat/completions HTTP/1.1\r\n"
                       "Host: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\n" +
                       "".join(l + "\r\n" for l in lines) +
                       "\r\n").encode() + chunked
                c = self.raw(tg.port)
                c.try_send(raw)
                r = c.read_response(10)
                self.assertIn(r.status, (400, 411), "%s: %r" % (what, r))
                self.assertTrue(r.closed or c.wait_closed(5),
                                "%s: connection left open after refusing "
                                "a Transfer-Encoding request" % what)
                self.assertNotIn(b"HTTP/1.1", bytes(c.buf),
                                 "%s: a second response followed" % what)
        self.assertNothingForwarded(self.fp, tg)

    def test_malformed_heads_refused(self):
        tg = self.start()
        body = b'{"model":"gpt-4o-mini","messages":[]}'
        cl = b"Content-Length: %d" % len(body)
        cases = {
            "bare LF": b"POST /v1/chat/completions HTTP/1.1\nHost: x\n" +
                       cl + b"\n\n" + body,
            "obs-fold": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        b"X-A: 1\r\n  continued\r\n" + cl +
                        b"\r\n\r\n" + body,
            "space before colon": b"POST /v1/chat/completions HTTP/1.1\r\n"
                                  b"Host: x\r\nContent-Length : %d\r\n\r\n"
                                  % len(body) + body,
            "NUL in value": b"POST /v1/chat/completions HTTP/1.1\r\n"
                            b"Host: x\r\nX-A: a\x00b\r\n" + cl +
                            b"\r\n\r\n" + body,
            "no colon": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        b"garbage line\r\n" + cl + b"\r\n\r\n" + body,
            "bad version": b"POST /v1/chat/completions HTTP/9.9\r\nHost: x"
                           b"\r\n" + cl + b"\r\n\r\n" + body,
            # Over max_header_bytes (64 KiB, request line included).
            "70 KiB target": b"POST /v1/chat/completions?" + b"a" * 71680 +
                             b" HTTP/1.1\r\nHost: x\r\n" + cl +
                             b"\r\n\r\n" + body,
        }
        for what, raw in cases.items():
            with self.subTest(what):
                c = self.raw(tg.port)
                c.try_send(raw)
                r = c.read_response(10)
                self.assertIn(r.status, (400, 414, 431, 505),
                              "%s: %r" % (what, r))
                self.assertTrue(r.closed or c.wait_closed(5),
                                "%s: connection left open" % what)
        self.assertNothingForwarded(self.fp, tg)

    def test_http10_client(self):
        """An HTTP/1.0 client cannot read chunked framing: it gets a body
        framed by Content-Length or by close, or a clean refusal."""
        tg = self.start()
        marker = new_marker()
        body = tglib.openai_chat(marker)
        raw = (b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n"
               b"\r\n" % len(body)) + body
        c = self.raw(tg.port)
        c.send(raw)
        r = c.read_response(10)
        if r.status in (400, 505):
            return
        self.assertEqual(r.status, 200, r)
        self.assertFalse(r.chunked, "chunked response to an HTTP/1.0 "
                         "client: %r" % r.headers)
        self.assertTrue(r.complete, r)
        self.assertIn(b"choices", r.body)

    def test_bad_content_length_refused(self):
        tg = self.start()
        body = b'{"model":"x","messages":[]}' + b" " * 50
        cases = {
            "two different CLs": ["Content-Length: 5", "Content-Length: 50"],
            "two equal CLs": ["Content-Length: 50", "Content-Length: 50"],
            "CL list": ["Content-Length: 50, 50"],
            "CL plus sign": ["Content-Length: +50"],
            "CL negative": ["Content-Length: -1"],
            "CL hex": ["Content-Length: 0x32"],
        }
        for what, lines in cases.items():
            with self.subTest(what):
                raw = ("POST /v1/chat/completions HTTP/1.1\r\n"
                       "Host: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\n" +
                       "".join(l + "\r\n" for l in lines) +
                       "\r\n").encode() + body[:50]
                c = self.raw(tg.port)
                c.try_send(raw)
                r = c.read_response(10)
                self.assertIn(r.status, (400, 411, 413),
                              "%s: %r" % (what, r))
                self.assertTrue(r.closed or c.wait_closed(5),
                                "%s: connection left open" % what)
        self.assertNothingForwarded(self.fp, tg)


if __name__ == "__main__":
    tglib.main()
