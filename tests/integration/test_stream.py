# SPDX-License-Identifier: Apache-2.0
"""Streamed relay: SSE reaches the client event by event (not buffered until
the end), and the streamed bytes are identical to a direct call, for the
OpenAI, Anthropic and Gemini (CRLF) wire formats."""

import re

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker

GEMINI_STREAM = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"

FAMILIES = [
    ("openai", "/v1/chat/completions",
     lambda m: tglib.openai_chat(m, stream=True)),
    ("anthropic", "/v1/messages",
     lambda m: tglib.anthropic_messages(m, stream=True)),
    ("gemini", GEMINI_STREAM, tglib.gemini_generate),
]

# More stream shapes, checked byte-exact only.
MORE_STREAMS = [
    ("openai-responses", "/v1/responses",
     lambda m: ('{"model":"gpt-4o-mini","input":"hi %s","stream":true}'
                % m).encode()),
    ("openai-completions", "/v1/completions",
     lambda m: ('{"model":"gpt-3.5-turbo-instruct","prompt":"hi %s",'
                '"stream":true,"stream_options":{"include_usage":true}}'
                % m).encode()),
    ("azure", "/openai/deployments/dep1/chat/completions"
     "?api-version=2024-10-21", lambda m: tglib.openai_chat(m, stream=True)),
    ("local", "/local/v1/chat/completions",
     lambda m: tglib.openai_chat(m, stream=True)),
]

TS_RE = re.compile(rb"(?m)^: t=(\d+)\r?\n")


def byte_arrivals(resp):
    """[(end offset, arrival time)] of the decoded body pieces."""
    out, off = [], 0
    for t, data in resp.pieces:
        off += len(data)
        out.append((off, t))
    return out


def arrival_of(arrivals, offset):
    """Time at which decoded byte offset-1 (i.e. the first offset bytes)
    had arrived."""
    for end, t in arrivals:
        if end >= offset:
            return t
    return None


class StreamTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port))

    def stream_both(self, path, body, knobs):
        marker = new_marker()
        body = body(marker)
        hdrs = [JSON_CT] + list(knobs)
        d = self.call(self.fp.port, "POST", path, body, hdrs, timeout=30)
        p = self.call(self.tg.port, "POST", path, body, hdrs, timeout=30)
        d.seq, p.seq = self.direct_and_proxied_seqs(self.fp, marker)
        return d, p

    def check_event_by_event(self, family, resp, min_gaps):
        """Each event must reach the client before fakeprov even stamps the
        next one (fakeprov's ': t=' comments use CLOCK_MONOTONIC, the same
        clock as time.monotonic() on Linux)."""
        body = resp.body
        stamps = [(m.start(), int(m.group(1)) / 1e6)
                  for m in TS_RE.finditer(body)]
        self.assertGreaterEqual(len(stamps), min_gaps + 1,
                                "%s: too few ': t=' stamps in %r" %
                                (family, body[:400]))
        arrivals = byte_arrivals(resp)
        checked = 0
        for i in range(len(stamps) - 1):
            (start_i, t_i), (start_n, t_n) = stamps[i], stamps[i + 1]
            if t_n - t_i < 0.2:
                continue  # not a paced gap
            # Segment i is body[start_i:start_n]; when did its last byte
            # reach the client?
            got = arrival_of(arrivals, start_n)
            self.assertIsNotNone(got)
            self.assertLess(
                got, t_n,
                "%s: event %d reached the client %.3f s after fakeprov "
                "started writing event %d: the stream is buffered, not "
                "relayed event by event" % (family, i, got - t_n, i + 1))
            checked += 1
        self.assertGreaterEqual(checked, min_gaps,
                                "%s: fakeprov did not pace the events "
                                "(x-fake-pace-ms ignored?)" % family)

    def test_paced_streams_arrive_event_by_event(self):
        knobs = [("x-fake-events", "5"), ("x-fake-pace-ms", "300"),
                 ("x-fake-sse-timestamps", "1")]
        for family, path, body in FAMILIES:
            with self.subTest(family=family):
                d, p = self.stream_both(path, body, knobs)
                self.assertEqual(d.status, 200, d)
                self.assertEqual(p.status, 200, p)
                self.assertTrue(p.complete, "stream incomplete: %r" % p)
                self.assertIn("text/event-stream",
                              p.header("content-type", ""),
                              "content-type not relayed: %r" % p.headers)
                self.check_event_by_event(family, p, 3)
                # Simple form of the same property: the first event
                # arrives well before the end of the stream (5 events paced
                # 300 ms apart take at least 1.2 s).
                starts = [m.start() for m in TS_RE.finditer(p.body)]
                first = arrival_of(byte_arrivals(p), starts[1])
                self.assertLess(first - p.t_sent, 0.6,
                                "%s: first event took %.3f s" %
                                (family, first - p.t_sent))
                self.assertGreater(p.pieces[-1][0] - first, 0.6,
                                   "%s: whole stream arrived at once" %
                                   family)
                self.assertSameBody(p, d, d.seq, p.seq, family,
                                    strip_timestamps=True)

    def test_streams_byte_exact(self):
        for events, size in ((3, 8), (40, 3000)):
            knobs = [("x-fake-events", str(events)),
                     ("x-fake-event-bytes", str(size))]
            for family, path, body in FAMILIES:
                with self.subTest(family=family, events=events, size=size):
                    d, p = self.stream_both(path, body, knobs)
                    self.assertEqual(d.status, 200, d)
                    self.assertEqual(p.status, 200, p)
                    self.assertTrue(d.complete, d)
                    self.assertTrue(p.complete, "stream incomplete: %r" % p)
                    self.assertGreater(len(d.body), events * size)
                    self.assertSameBody(p, d, d.seq, p.seq, family)
                    self.assertTrue(p.header("x-tollgate-request-id"))
                    if family == "gemini":
                        self.assertIn(b"\r\n\r\n", p.body,
                                      "Gemini stream lost its CRLF framing")
                    if family == "openai":
                        self.assertTrue(p.body.rstrip().endswith(
                            b"data: [DONE]"), p.body[-200:])

    def test_more_stream_shapes_byte_exact(self):
        knobs = [("x-fake-events", "7"), ("x-fake-event-bytes", "50")]
        for name, path, body in MORE_STREAMS:
            with self.subTest(name=name):
                marker = new_marker()
                b = body(marker)
                hdrs = [JSON_CT] + knobs
                up_path = path[len("/local"):] if name == "local" else path
                d = self.call(self.fp.port, "POST", up_path, b, hdrs)
                p = self.call(self.tg.port, "POST", path, b, hdrs)
                dseq, pseq = self.direct_and_proxied_seqs(self.fp, marker)
                self.assertEqual(d.status, 200, d)
                self.assertEqual(p.status, 200, p)
                self.assertTrue(p.complete, "stream incomplete: %r" % p)
                self.assertIn(b"data:", d.body)
                self.assertSameBody(p, d, dseq, pseq, name)

    def test_concurrent_streams_not_mixed(self):
        """Eight paced streams at once, through one tollgate: each client
        gets exactly its own bytes."""
        import threading
        knobs = [("x-fake-events", "10"), ("x-fake-pace-ms", "40"),
                 ("x-fake-event-bytes", "64")]
        results = {}

        def one(i):
            family, path, body = FAMILIES[i % len(FAMILIES)]
            marker = new_marker("conc%d" % i)
            b = body(marker)
            try:
                p = tglib.http_call(self.tg.port, "POST", path, b,
                                    [JSON_CT] + knobs, timeout=30)
                d = tglib.http_call(self.fp.port, "POST", path, b,
                                    [JSON_CT] + knobs, timeout=30)
                results[i] = (family, marker, p, d, None)
            except Exception as e:  # reported below
                results[i] = (family, marker, None, None, e)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(results), 8, "some clients never finished")
        for i, (family, marker, p, d, err) in sorted(results.items()):
            with self.subTest(client=i, family=family):
                self.assertIsNone(err, "client %d: %r" % (i, err))
                self.assertEqual(p.status, 200, p)
                self.assertTrue(p.complete, p)
                pseq, dseq = self.direct_and_proxied_seqs(self.fp, marker)
                self.assertSameBody(p, d, dseq, pseq,
                                    "concurrent %s stream %d" % (family, i))

    def test_stream_upstream_request(self):
        """The streaming request reaches fakeprov with its query intact."""
        marker = new_marker()
        r = self.call(self.tg.port, "POST", GEMINI_STREAM,
                      tglib.gemini_generate(marker), [JSON_CT], timeout=20)
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(marker)
        self.assertIsNotNone(rec)
        self.assertEqual(rec["path"], GEMINI_STREAM)
        self.assertEqual(self.fp.wait_end(rec["seq"], 5), "done")
        self.assertTrue(self.tg.wait_log(
            r"session \d+: POST /v1beta/models/gemini-2\.0-flash:"
            r"streamGenerateContent\S* upstream=gemini status=200", 5),
            "no per-call log line for the Gemini stream")


if __name__ == "__main__":
    tglib.main()
