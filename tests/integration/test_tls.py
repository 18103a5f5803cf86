# SPDX-License-Identifier: Apache-2.0
"""TLS to upstreams: with the test CA as ca_file the call works (JSON and a
stream, byte-exact against a direct TLS call); with an unrelated CA the
handshake fails, the client gets 502 in the family's error shape, and
fakeprov receives no request."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker


class TLSTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.pki = tglib.test_pki()
        self.fp = self.fakeprov(tls=self.pki)
        self.assertEqual(self.fp.scheme, "https")

    def upstreams(self, ca):
        base = "https://127.0.0.1:%d" % self.fp.port
        opts = {"ca_file": ca, "connect_timeout": "2s",
                "header_timeout": "5s", "idle_timeout": "5s"}
        return {
            "tlsup": dict({"type": "openai", "base_url": base}, **opts),
            "anthropic": dict({"type": "anthropic", "base_url": base},
                              **opts),
        }

    def direct(self, path, body, hdrs):
        return tglib.http_call(self.fp.port, "POST", path, body, hdrs,
                               tls_ca=self.pki["ca"])

    def test_tls_upstream_with_test_ca(self):
        tg = self.tollgate(upstreams=self.upstreams(self.pki["ca"]))
        for path, up_path, body, knobs in (
                ("/tlsup/v1/chat/completions", "/v1/chat/completions",
                 tglib.openai_chat, []),
                ("/tlsup/v1/chat/completions", "/v1/chat/completions",
                 lambda m: tglib.openai_chat(m, stream=True),
                 [("x-fake-events", "20"), ("x-fake-event-bytes", "500")]),
                ("/v1/messages", "/v1/messages", tglib.anthropic_messages,
                 [])):
            with self.subTest(path=path, knobs=knobs):
                marker = new_marker()
                b = body(marker)
                hdrs = [JSON_CT] + knobs
                d = self.direct(up_path, b, hdrs)
                self.assertEqual(d.status, 200, d)
                r = self.call(tg.port, "POST", path, b, hdrs)
                self.assertEqual(r.status, 200, r)
                self.assertTrue(r.complete, r)
                dseq, pseq = self.direct_and_proxied_seqs(self.fp, marker)
                self.assertSameBody(r, d, dseq, pseq, "TLS relay")
                rec = [x for x in self.fp.find_requests(marker)
                       if x["seq"] == pseq]
                self.assertEqual(rec[0]["path"], up_path)

    def test_wrong_ca_502_nothing_sent(self):
        tg = self.tollgate(upstreams=self.upstreams(self.pki["other_ca"]))
        for path, body, family in (
                ("/tlsup/v1/chat/completions", tglib.openai_chat, "openai"),
                ("/v1/messages", tglib.anthropic_messages, "anthropic")):
            with self.subTest(path=path):
                r = self.call(tg.port, "POST", path,
                              body(new_marker("refused")),
                              [JSON_CT] + tglib.CANARY_AUTH)
                self.assertEqual(r.status, 502, r)
                self.assertErrorShape(r, family, 502)
        self.assertEqual(self.fp.requests(), [],
                         "fakeprov received a request over a connection "
                         "whose certificate did not verify")
        self.assertTrue(tg.wait_log(r"status=502", 5),
                        "no per-call log line with status=502")

    def test_plain_http_to_tls_port_fails(self):
        """An http:// base_url pointed at the TLS port gets a clean error,
        not a hang."""
        tg = self.tollgate(upstreams={"openai": {
            "type": "openai",
            "base_url": "http://127.0.0.1:%d" % self.fp.port,
            "connect_timeout": "2s", "header_timeout": "3s"}})
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker("refused")), [JSON_CT],
                      timeout=20)
        self.assertIn(r.status, (502, 504), r)
        self.assertErrorShape(r, "openai")
        self.assertEqual(self.fp.requests(), [])


if __name__ == "__main__":
    tglib.main()
