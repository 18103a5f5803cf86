# SPDX-License-Identifier: Apache-2.0
"""What a failed call costs (docs/internals/metering.md, "Failed calls").

An error reply (4xx/5xx with the provider's error JSON) is not billed by
any of the three providers, so it costs nothing and gives its reservation
back at once: under a cap that fits one worst case, error after error is
still admitted. A 2xx whose body is cut after some output is charged its
input estimate plus the output relayed, marked estimated, far below the
worst case. Only a call whose fate is unknown (sent, no response headers)
keeps its whole reservation (test_unanswered.py holds that)."""

import math
import os
import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

GEM = "/v1beta/models/%s:generateContent"
ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")
GEM_BODY = (b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}],'
            b'"generationConfig":{"maxOutputTokens":4000}}')

# (family, path, body, injected status)
ERRORS = [
    ("openai", "/v1/chat/completions",
     b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}',
     500),
    ("openai", "/v1/chat/completions",
     b'{"model":"gpt-4o","stream":true,"messages":[]}', 429),
    ("openai", "/v1/responses", b'{"model":"gpt-4o","input":"hi"}', 503),
    ("anthropic", "/v1/messages",
     b'{"model":"claude-sonnet-4-5","max_tokens":4000,"messages":[]}',
     529),
    ("anthropic", "/v1/messages",
     b'{"model":"claude-sonnet-4-5","max_tokens":4000,"messages":[]}',
     400),
    ("gemini", GEM % "gemini-2.5-pro",
     GEM_BODY, 500),
    ("gemini", GEM % "gemini-2.5-pro",
     GEM_BODY, 429),
]


class FailedCallsTest(ledgerlib.MeterTestCase):

    def start_capped(self, fp, cap_usd):
        extra = ledgerlib.metering_extra()
        extra["policies"] = [{"name": "all", "window": "day",
                              "hard_cap_usd": cap_usd}]
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(fp.port),
                           extra=extra)
        self.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/ledger.db"), tg)
        return tg

    def test_error_replies_cost_nothing(self):
        """Every error reply is settled at $0, status error, usage none,
        so a cap that fits one worst case ($0.30: a gpt-4o call without a
        bound reserves $0.28) admits error after error."""
        fp = self.fakeprov()
        tg = self.start_capped(fp, "0.30")
        for round_ in range(2):
            for family, path, body, status in ERRORS:
                with self.subTest(round=round_, family=family, path=path,
                                  status=status):
                    r = self.call(tg.port, "POST", path, body,
                                  [JSON_CT, ANTHROPIC_VERSION,
                                   ("x-fake-status", str(status))])
                    self.assertEqual(
                        r.status, status, "the call was not forwarded (a "
                        "failed call kept its reservation?): %r" % r)
                    row = self.settled_row(r)
                    d = ledgerlib.describe_row(row)
                    self.assertEqual(row["status"], "error", d)
                    self.assertEqual(row["http_status"], status, d)
                    self.assertEqual(row["usage_source"], "none", d)
                    self.assertEqual(row["cost_nusd"], 0, d)
                    self.assertEqual(row["input_tokens"], 0, d)
                    self.assertEqual(row["output_tokens"], 0, d)
                    self.assertGreater(row["reserved_nusd"], 0, d)
        # The cap's whole room is still there for a real call.
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(tglib.new_marker(), model="gpt-4o"),
                      [JSON_CT])
        self.assertEqual(r.status, 200, r)

    def test_cut_stream_charges_input_and_relayed_output(self):
        """A stream reset after some output: the input estimate (body
        bytes / 4) plus the output relayed (text bytes / 4), estimated,
        status upstream_error; a fraction of the worst case."""
        fp = self.fakeprov()
        tg = self.start(fp)
        body = tglib.openai_chat(tglib.new_marker(), stream=True,
                                 model="gpt-4o")
        r = self.call(tg.port, "POST", "/v1/chat/completions", body,
                      [JSON_CT, ("x-fake-events", "20"),
                       ("x-fake-event-bytes", "40"),
                       ("x-fake-reset-after", "4")])
        self.assertEqual(r.status, 200, r)
        row = self.settled_row(r)
        d = ledgerlib.describe_row(row)
        self.assertEqual(row["status"], "upstream_error", d)
        self.assertEqual(row["usage_source"], "estimated", d)
        self.assertEqual(row["input_tokens"], math.ceil(len(body) / 4), d)
        text = b"".join(
            (ev.get("choices") or [{}])[0].get("delta", {}).get(
                "content", "").encode()
            for _, ev in ledgerlib.sse_events(r.body))
        self.assertGreater(len(text), 0, "nothing was relayed: %r" % r.body)
        self.assertEqual(row["output_tokens"], math.ceil(len(text) / 4), d)
        u = {"input": row["input_tokens"], "output": row["output_tokens"]}
        self.assertEqual(row["cost_nusd"],
                         self.prices.cost_nusd("gpt-4o", u), d)
        self.assertLess(row["cost_nusd"] * 100, row["reserved_nusd"], d)

    def test_cut_json_body_charges_input_and_relayed_output(self):
        """A JSON reply that stops halfway (headers sent, then silence
        past idle_timeout): the input estimate plus the bytes relayed."""
        fp = self.fakeprov()
        ups = ledgerlib.metering_upstreams(
            fp.port, openai={"idle_timeout": "1s"})
        tg = self.start(fp, upstreams=ups)
        body = tglib.openai_chat(tglib.new_marker(), model="gpt-4o")
        c = self.raw(tg.port, timeout=10)
        c.send(tglib.build_request("POST", "/v1/chat/completions", body,
                                   [JSON_CT, ("x-fake-hang", "body")]))
        resp = tglib.Response()
        c.read_head(resp, __import__("time").monotonic() + 10)
        rid = resp.header("x-tollgate-request-id")
        row = self.settled_row(rid)
        d = ledgerlib.describe_row(row)
        self.assertEqual(row["status"], "upstream_error", d)
        self.assertEqual(row["usage_source"], "estimated", d)
        self.assertEqual(row["input_tokens"], math.ceil(len(body) / 4), d)
        self.assertGreater(row["output_tokens"], 0, d)
        self.assertLess(row["cost_nusd"] * 100, row["reserved_nusd"], d)


if __name__ == "__main__":
    tglib.main()
