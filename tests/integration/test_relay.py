# SPDX-License-Identifier: Apache-2.0
"""Non-streamed relay: every route family, byte-exact against a direct call
to fakeprov with identical knobs; error statuses; header hygiene (auth kept,
hop-by-hop and X-Tollgate-* stripped, Accept-Encoding: identity upstream);
x-tollgate-request-id; no secret in tollgate's log."""

import json
import re

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker, rec_header

CANARY_BEARER = "sk-CANARY-relay-7f3a9c1e5b"
CANARY_XAPI = "sk-ant-CANARY-relay-2d8e4f"
CANARY_GOOG = "AIzaCANARYrelay9x8w7v"
CANARY_AZURE = "CANARY-azure-relay-5e6f"
CANARY_QKEY = "CANARYqueryKey31337"
CANARIES = (CANARY_BEARER, CANARY_XAPI, CANARY_GOOG, CANARY_AZURE,
            CANARY_QKEY, "CANARY")


class RelayTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        # -v: the debug log must not leak secrets either.
        self.tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                                verbose=True)

    def tearDown(self):
        log = self.tg.log()
        for c in CANARIES:
            self.assertNotIn(c, log, "a secret reached tollgate's log")

    # -- helpers ------------------------------------------------------------

    def both(self, method, proxy_path, direct_path, body, headers=()):
        """Send the same request direct to fakeprov, then through tollgate.
        Returns (direct, proxied, direct_record, proxied_record)."""
        marker = new_marker()
        body = body(marker) if callable(body) else body
        if isinstance(body, bytes) and b"MARKER" in body:
            body = body.replace(b"MARKER", marker.encode())
        hdrs = list(headers)
        if body:
            hdrs.append(JSON_CT)
        d = self.call(self.fp.port, method, direct_path, body, hdrs)
        p = self.call(self.tg.port, method, proxy_path, body, hdrs)
        recs = []
        if body and marker.encode() in body:
            recs = tglib.wait_until(
                lambda: len(self.fp.find_requests(marker)) >= 2 and
                self.fp.find_requests(marker), 10) or \
                self.fp.find_requests(marker)
            self.assertEqual(len(recs), 2, "expected the direct and the "
                             "proxied request in fakeprov's record, got %d"
                             % len(recs))
            recs.sort(key=lambda r: r["seq"])
        return d, p, (recs[0] if recs else None), (recs[1] if recs else None)

    def assertRelayed(self, d, p, drec=None, prec=None):
        self.assertIsNotNone(d.status, "direct call got no response: %r" % d)
        self.assertEqual(p.status, d.status,
                         "status differs: direct %r proxied %r" % (d, p))
        self.assertTrue(p.complete, "proxied response incomplete: %r" % p)
        if drec is not None:
            self.assertSameBody(p, d, drec["seq"], prec["seq"])
        else:
            self.assertSameBody(p, d, -1, -1)
        self.assertTrue(p.header("x-tollgate-request-id"),
                        "no x-tollgate-request-id header: %r" % p.headers)
        if drec is not None:
            self.assertEqual(prec["method"], drec["method"])
            self.assertEqual(prec["path"], drec["path"],
                             "upstream path differs from a direct call")
            self.assertEqual(prec.get("body"), drec.get("body"),
                             "request body was not relayed unchanged")
            self.assertEqual(prec.get("body_len"), drec.get("body_len"))

    # -- OpenAI -------------------------------------------------------------

    def test_openai_chat(self):
        d, p, dr, pr = self.both("POST", "/v1/chat/completions",
                                 "/v1/chat/completions", tglib.openai_chat)
        self.assertEqual(d.status, 200, d)
        self.assertRelayed(d, p, dr, pr)
        self.assertIn("choices", p.json())
        self.assertTrue(self.tg.wait_log(
            r"session \d+: POST /v1/chat/completions upstream=openai "
            r"status=200", 5), "no per-call log line for the chat call")

    def test_openai_other_endpoints(self):
        cases = [
            ("/v1/completions", b'{"model":"gpt-3.5-turbo-instruct",'
             b'"prompt":"hi MARKER","max_tokens":5}'),
            ("/v1/embeddings", b'{"model":"text-embedding-3-small",'
             b'"input":"hi MARKER"}'),
            ("/v1/responses", b'{"model":"gpt-4o-mini","input":"hi MARKER"}'),
        ]
        for path, body in cases:
            with self.subTest(path=path):
                d, p, dr, pr = self.both("POST", path, path, body)
                self.assertEqual(d.status, 200, d)
                self.assertRelayed(d, p, dr, pr)

    def test_openai_models_get(self):
        d = self.call(self.fp.port, "GET", "/v1/models")
        n = len(self.fp.requests())
        p = self.call(self.tg.port, "GET", "/v1/models")
        self.assertEqual(d.status, 200, d)
        self.assertRelayed(d, p)
        got = tglib.wait_until(lambda: len(self.fp.requests()) > n and
                               self.fp.requests()[n:], 10)
        self.assertTrue(got, "GET /v1/models never reached fakeprov")
        self.assertEqual((got[0]["method"], got[0]["path"]),
                         ("GET", "/v1/models"))

    # -- Anthropic ----------------------------------------------------------

    def test_anthropic_messages_and_count_tokens(self):
        hdr = [("anthropic-version", "2023-06-01")]
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            with self.subTest(path=path):
                d, p, dr, pr = self.both("POST", path, path,
                                         tglib.anthropic_messages, hdr)
                self.assertEqual(d.status, 200, d)
                self.assertRelayed(d, p, dr, pr)
                self.assertEqual(rec_header(pr, "anthropic-version"),
                                 ["2023-06-01"])

    # -- Gemini -------------------------------------------------------------

    def test_gemini_endpoints(self):
        m = "gemini-2.0-flash"
        cases = [
            ("/v1beta/models/%s:generateContent" % m, tglib.gemini_generate),
            ("/v1beta/models/%s:countTokens" % m, tglib.gemini_generate),
            ("/v1beta/models/text-embedding-004:embedContent",
             b'{"content":{"parts":[{"text":"hi MARKER"}]}}'),
        ]
        for path, body in cases:
            with self.subTest(path=path):
                d, p, dr, pr = self.both("POST", path, path, body)
                self.assertEqual(d.status, 200, d)
                self.assertRelayed(d, p, dr, pr)

    # -- Azure and named upstreams -------------------------------------------

    def test_azure_deployment(self):
        path = "/openai/deployments/my-gpt4o/chat/completions" \
            "?api-version=2024-10-21"
        d, p, dr, pr = self.both("POST", path, path, tglib.openai_chat,
                                 [("api-key", CANARY_AZURE)])
        self.assertEqual(d.status, 200, d)
        self.assertRelayed(d, p, dr, pr)
        self.assertEqual(pr["path"], path, "query string lost or changed")
        self.assertEqual(rec_header(pr, "api-key"), [CANARY_AZURE])
        self.assertTrue(self.tg.wait_log(r"upstream=azure status=200", 5),
                        "no per-call log line naming upstream azure")

    def test_named_local_upstream(self):
        d, p, dr, pr = self.both("POST", "/local/v1/chat/completions",
                                 "/v1/chat/completions", tglib.openai_chat)
        self.assertEqual(d.status, 200, d)
        self.assertRelayed(d, p, dr, pr)
        self.assertEqual(pr["path"], "/v1/chat/completions",
                         "the /local prefix must be removed upstream")
        self.assertTrue(self.tg.wait_log(r"upstream=local status=200", 5),
                        "no per-call log line naming upstream local")

    # -- error statuses -------------------------------------------------------

    def test_error_statuses_relayed(self):
        cases = [
            ("/v1/chat/completions", tglib.openai_chat),
            ("/v1/messages", tglib.anthropic_messages),
            ("/v1beta/models/gemini-2.0-flash:generateContent",
             tglib.gemini_generate),
        ]
        for code in (429, 500, 400):
            for path, body in cases:
                with self.subTest(path=path, status=code):
                    d, p, dr, pr = self.both(
                        "POST", path, path, body,
                        [("x-fake-status", str(code))])
                    self.assertEqual(d.status, code,
                                     "fakeprov ignored x-fake-status: %r" % d)
                    self.assertRelayed(d, p, dr, pr)
                    self.assertTrue(p.body, "error body was dropped")

    def test_response_headers_relayed(self):
        """Provider response headers that SDKs act on reach the client, and
        the client's framing is consistent (never Content-Length together
        with chunked)."""
        for path, body in (("/v1/chat/completions", tglib.openai_chat),
                           ("/v1/messages", tglib.anthropic_messages)):
            with self.subTest(path=path):
                d, p, dr, pr = self.both(
                    "POST", path, path, body,
                    [("x-fake-status", "429"), ("x-fake-retry-after", "7")])
                self.assertEqual(d.status, 429, d)
                self.assertEqual(d.header("retry-after"), "7",
                                 "fakeprov ignored x-fake-retry-after")
                self.assertRelayed(d, p, dr, pr)
                self.assertEqual(p.header("retry-after"), "7",
                                 "retry-after not relayed: %r" % p.headers)
                self.assertEqual(p.header("content-type"),
                                 d.header("content-type"))
                if p.chunked:
                    self.assertIsNone(p.header("content-length"),
                                      "both Content-Length and chunked: %r"
                                      % p.headers)
                self.assertLessEqual(len(p.header_all("content-type")), 1)

    # -- headers --------------------------------------------------------------

    def test_auth_headers_pass_through(self):
        marker = new_marker()
        hdrs = [JSON_CT, ("Authorization", "Bearer " + CANARY_BEARER),
                ("x-api-key", CANARY_XAPI), ("x-goog-api-key", CANARY_GOOG),
                ("api-key", CANARY_AZURE)]
        r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(marker), hdrs)
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(marker)
        self.assertIsNotNone(rec, "request never reached fakeprov")
        self.assertEqual(rec_header(rec, "authorization"),
                         ["Bearer " + CANARY_BEARER])
        self.assertEqual(rec_header(rec, "x-api-key"), [CANARY_XAPI])
        self.assertEqual(rec_header(rec, "x-goog-api-key"), [CANARY_GOOG])
        self.assertEqual(rec_header(rec, "api-key"), [CANARY_AZURE])
        self.assertNotIn(CANARY_BEARER.encode(), r.head_raw,
                         "a key was echoed back to the client")

    def test_gemini_query_key_passes_not_logged(self):
        marker = new_marker()
        path = "/v1beta/models/gemini-2.0-flash:generateContent?key=" + \
            CANARY_QKEY
        r = self.call(self.tg.port, "POST", path,
                      tglib.gemini_generate(marker), [JSON_CT])
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(marker)
        self.assertIsNotNone(rec, "request never reached fakeprov")
        self.assertEqual(rec["path"], path, "query string not relayed")
        # tearDown asserts the key never reached the log.

    def test_hop_by_hop_and_tollgate_headers_stripped(self):
        marker = new_marker()
        hdrs = [
            JSON_CT,
            ("Host", "evil.example.com"),
            ("Connection", "keep-alive, X-Drop-Me"),
            ("X-Drop-Me", "dropped"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic " + "CANARYproxyauth"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Foo"),
            ("Upgrade", "websocket"),
            ("Accept-Encoding", "gzip, br"),
            ("X-Tollgate-Intent", "summarise"),
            ("X-Tollgate-Team", "search"),
            ("X-Tollgate-Tenant", "acme"),
            ("X-Tollgate-Agent-Class", "researcher"),
            ("X-Tollgate-Environment", "prod"),
            ("X-Tollgate-Request-Id", "client-chosen-id"),
            ("x-tollgate-whatever", "1"),
            ("X-Keep-Me", "kept"),
            ("OpenAI-Organization", "org-test"),
        ]
        r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(marker), hdrs)
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(marker)
        self.assertIsNotNone(rec, "request never reached fakeprov")
        names = [k.lower() for k, _ in rec["headers"]]
        for h in ("x-drop-me", "keep-alive", "proxy-authorization",
                  "proxy-connection", "te", "trailer", "upgrade",
                  "transfer-encoding"):
            self.assertNotIn(h, names, "hop-by-hop header %r reached the "
                             "provider: %r" % (h, rec["headers"]))
        leaked = [k for k in names if k.startswith("x-tollgate-")]
        self.assertEqual(leaked, [], "X-Tollgate-* headers reached the "
                         "provider")
        conn = [v.lower() for v in rec_header(rec, "connection")]
        self.assertFalse(any("x-drop-me" in v for v in conn), conn)
        self.assertEqual(rec_header(rec, "accept-encoding"), ["identity"],
                         "upstream must be asked for identity encoding")
        self.assertEqual(rec_header(rec, "x-keep-me"), ["kept"],
                         "an end-to-end header was dropped")
        self.assertEqual(rec_header(rec, "openai-organization"),
                         ["org-test"])
        self.assertEqual(rec_header(rec, "host"),
                         ["127.0.0.1:%d" % self.fp.port],
                         "the client's Host header was forwarded")
        self.assertEqual(rec_header(rec, "content-length"),
                         [str(rec["body_len"])])
        # X-Tollgate-Request-Id names the call (its ledger row) but is
        # itself never forwarded.
        rid = r.header("x-tollgate-request-id")
        self.assertEqual(rid, "client-chosen-id", r.headers)

    def test_accept_encoding_identity_without_client_header(self):
        marker = new_marker()
        r = self.call(self.tg.port, "POST", "/v1/messages",
                      tglib.anthropic_messages(marker), [JSON_CT])
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(marker)
        self.assertIsNotNone(rec)
        self.assertEqual(rec_header(rec, "accept-encoding"), ["identity"])

    def test_response_framing_and_request_ids(self):
        ids = set()
        c = self.raw(self.tg.port)
        # Two requests on one keep-alive connection: the chunked framing
        # must let the client find the end of each response.
        for i in range(2):
            marker = new_marker()
            c.send(tglib.build_request("POST", "/v1/chat/completions",
                                       tglib.openai_chat(marker), [JSON_CT]))
            r = c.read_response(15)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.complete, r)
            self.assertFalse(r.closed, "connection closed after response "
                             "%d: %r" % (i, r))
            self.assertTrue(r.chunked, "response %d not chunked to the "
                            "client: %r" % (i, r.headers))
            json.loads(r.body)
            rid = r.header("x-tollgate-request-id")
            self.assertTrue(rid and re.match(r"^[\x21-\x7e]{8,128}$", rid),
                            "bad x-tollgate-request-id %r" % rid)
            ids.add(rid)
        self.assertEqual(len(ids), 2, "request ids are not unique")


if __name__ == "__main__":
    tglib.main()
