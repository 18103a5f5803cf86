# SPDX-License-Identifier: Apache-2.0
"""Calls that were sent upstream but never answered are charged their
worst case, never $0 (a client that hangs up early must not get free
calls); a call that never left (connect refused, or a connection still
not made when the header timeout or the client's patience ran out) costs
nothing; and a call
tollgate refused does not use up the client's X-Tollgate-Request-Id."""

import socket
import sys
import time
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

BODY = b'{"model":"gpt-4o","max_tokens":4000,"messages":[]}'


class UnansweredTest(ledgerlib.MeterTestCase):

    def test_client_gone_before_headers_is_charged(self):
        fp = self.fakeprov()
        tg = self.start(fp)
        rid = "gone-before-headers"
        c = self.raw(tg.port, timeout=5)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions", BODY,
            [JSON_CT, ("x-fake-delay-ms", "1500"),
             ("X-Tollgate-Request-Id", rid)]))
        self.assertIsNotNone(fp.wait_request("gpt-4o", 5),
                             "the call never reached the provider")
        time.sleep(0.2)
        c.close()
        r = self.settled_row(rid)
        self.assertEqual(r["status"], "client_closed", r)
        self.assertEqual(r["usage_source"], "estimated", r)
        self.assertGreater(r["reserved_nusd"], 0, r)
        self.assertEqual(r["cost_nusd"], r["reserved_nusd"],
                         "an unanswered call must be charged its worst "
                         "case: %s" % ledgerlib.describe_row(r))
        self.assertEqual(r["output_tokens"], 4000, r)

    def test_header_timeout_is_charged(self):
        fp = self.fakeprov()
        ups = ledgerlib.metering_upstreams(
            fp.port, openai={"header_timeout": "1s"})
        tg = self.start(fp, upstreams=ups)
        resp = self.call(tg.port, "POST", "/v1/chat/completions", BODY,
                         [JSON_CT, ("x-fake-hang", "headers")], timeout=10)
        self.assertEqual(resp.status, 504, resp)
        r = self.settled_row(resp)
        self.assertEqual(r["status"], "upstream_error", r)
        self.assertEqual(r["cost_nusd"], r["reserved_nusd"], r)
        self.assertGreater(r["cost_nusd"], 0, r)

    def test_connect_refused_costs_nothing(self):
        fp = self.fakeprov()
        ups = ledgerlib.metering_upstreams(
            fp.port, openai={"base_url": "http://127.0.0.1:%d" %
                             tglib.free_port()})
        tg = self.start(fp, upstreams=ups)
        resp = self.call(tg.port, "POST", "/v1/chat/completions", BODY,
                         [JSON_CT], timeout=10)
        self.assertEqual(resp.status, 502, resp)
        r = self.settled_row(resp)
        self.assertEqual(r["status"], "upstream_error", r)
        self.assertEqual(r["cost_nusd"], 0, r)

    def hung_listener(self):
        """A loopback port whose connects never complete: listen(0) with
        its one accept slot taken, so the kernel drops every later SYN."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(0)
        filler = socket.create_connection(ls.getsockname(), timeout=5)
        self.addCleanup(ls.close)
        self.addCleanup(filler.close)
        return ls.getsockname()[1]

    def test_connect_never_made_costs_nothing(self):
        fp = self.fakeprov()
        port = self.hung_listener()
        ups = ledgerlib.metering_upstreams(
            fp.port, openai={"base_url": "http://127.0.0.1:%d" % port,
                             "header_timeout": "1s"})
        tg = self.start(fp, upstreams=ups)
        # The header timeout fires while the connect is still pending.
        resp = self.call(tg.port, "POST", "/v1/chat/completions", BODY,
                         [JSON_CT], timeout=10)
        self.assertEqual(resp.status, 504, resp)
        r = self.settled_row(resp)
        self.assertEqual(r["status"], "upstream_error", r)
        self.assertGreater(r["reserved_nusd"], 0, r)
        self.assertEqual(r["cost_nusd"], 0, "nothing reached the provider: "
                         "%s" % ledgerlib.describe_row(r))
        # The client gives up while the connect is still pending.
        rid = "gone-while-connecting"
        c = self.raw(tg.port, timeout=5)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions", BODY,
            [JSON_CT, ("X-Tollgate-Request-Id", rid)]))
        # It is reserved (in flight) before the connect starts.
        self.assertTrue(tglib.wait_until(lambda: [
            r for r in tg.in_flight() if r["id"] == rid], 10),
            "never in flight")
        c.close()
        r = self.settled_row(rid)
        self.assertEqual(r["status"], "client_closed", r)
        self.assertEqual(r["cost_nusd"], 0, ledgerlib.describe_row(r))

    def test_refusal_keeps_request_id_free(self):
        fp = self.fakeprov()
        tg = self.start(fp, unknown_models={"action": "refuse"})
        hdrs = [JSON_CT, ("X-Tollgate-Request-Id", "retry-7")]
        bad = self.call(tg.port, "POST", "/v1/chat/completions",
                        b'{"model":"gpt-4o-typo","messages":[]}', hdrs)
        self.assertEqual(bad.status, 400, bad)
        self.assertNotEqual(bad.header("x-tollgate-request-id"), "retry-7")
        good = self.call(tg.port, "POST", "/v1/chat/completions",
                         b'{"model":"gpt-4o","messages":[]}', hdrs)
        self.assertEqual(good.status, 200, good)
        self.assertEqual(self.settled_row("retry-7")["status"], "ok")
        again = self.call(tg.port, "POST", "/v1/chat/completions",
                          b'{"model":"gpt-4o","messages":[]}', hdrs)
        self.assertEqual(again.status, 409, again)


if __name__ == "__main__":
    tglib.main()
