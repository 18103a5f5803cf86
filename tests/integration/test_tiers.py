# SPDX-License-Identifier: Apache-2.0
"""Reservations priced at the service tier a call can be billed at, through
the real binary. A model's price may list a dearer tier (gpt-4o's priority
output is $17/M against $10/M standard), but a call is billed at it only
when it asks for that tier, or when it leaves the tier to an account that
runs at it (an upstream's service_tier_default). Reserving the dearest tier
for every call refused ordinary calls under small caps: a gpt-4o "hi"
without max_tokens reserved $0.2786 instead of $0.1639.

The price table is the shipped gpt-4o entry (copied, so its numbers stay
those of this test) and claude-test, a Messages model with a priority tier;
one $0.20 daily cap per model. The fake provider reports the base tier."""

import json
import os
import subprocess

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "tier-test-1"
models:
  gpt-4o:
    input: 2.50
    cached_input: 1.25
    output: 10.00
    max_output_tokens: 16384
    tiers:
      priority: { input: 4.25, cached_input: 2.125, output: 17.00 }
  claude-test:
    input: 0
    output: 5.00
    max_output_tokens: 30000
    tiers:
      priority: { input: 0, output: 9.00 }
"""

CAP_NUSD = 200000000    # $0.20
ANTHROPIC_HDRS = [JSON_CT, ("anthropic-version", "2023-06-01")]


def chat_body(marker, tier=None):
    doc = {"model": "gpt-4o", "user": marker,
           "messages": [{"role": "user", "content": "hi"}]}
    if tier is not None:
        doc["service_tier"] = tier
    return json.dumps(doc).encode()


def worst_gpt4o(body, in_rate, out_rate):
    """The reservation by hand: bytes/4 prompt tokens at the input rate
    and the model's 16,384 output tokens at the output rate, in pico-USD
    per token, rounded up to nano-USD."""
    est = (len(body) + 3) // 4
    pusd = est * in_rate + 16384 * out_rate
    return (pusd + 999) // 1000


class TierTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "tier-prices.yaml"), "w") as f:
            f.write(PRICES)
        base = "http://127.0.0.1:%d" % self.fp.port
        ups = tglib.std_upstreams(self.fp.port, **{
            "openai-prio": {"type": "openai", "base_url": base,
                            "service_tier_default": "priority"},
            "anthropic-prio": {"type": "anthropic", "base_url": base,
                               "service_tier_default": "priority"}})
        self.tg = self.tollgate(upstreams=ups, extra={
            "prices": "tier-prices.yaml",
            "policies": [
                {"name": "gpt", "window": "day", "hard_cap_usd": "0.20",
                 "match": {"model": "gpt-4o"}},
                {"name": "claude", "window": "day", "hard_cap_usd": "0.20",
                 "match": {"model": "claude-test"}}]})
        self.tg.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/tollgate.db"))

    def chat(self, body, prefix=""):
        return self.call(self.tg.port, "POST",
                         prefix + "/v1/chat/completions", body, [JSON_CT],
                         timeout=30)

    def messages(self, marker, tier=None, prefix=""):
        doc = {"model": "claude-test", "max_tokens": 30000,
               "messages": [{"role": "user", "content": marker}]}
        if tier is not None:
            doc["service_tier"] = tier
        return self.call(self.tg.port, "POST", prefix + "/v1/messages",
                         json.dumps(doc).encode(), ANTHROPIC_HDRS,
                         timeout=30)

    def assert_refused(self, r, worst):
        self.assertEqual(r.status, 429, r)
        doc = r.json()
        self.assertEqual(doc["tollgate"]["reason"], "hard_cap")
        self.assertEqual(round(doc["tollgate"]["call_worst_case_usd"] * 1e9),
                         worst)
        return doc

    def test_gpt4o_reserves_the_tier_it_can_be_billed_at(self):
        m = new_marker()
        plain = chat_body(m)
        std = worst_gpt4o(plain, 2500000, 10000000)
        self.assertLess(std, CAP_NUSD)
        # No tier, "auto" and "default" run at the standard tier here.
        for tier in (None, "auto", "default"):
            body = chat_body(m, tier)
            r = self.chat(body)
            self.assertEqual(r.status, 200, r)
        self.tg.ledger.wait_count(3)
        self.assertEqual(
            sorted(x["reserved_nusd"] for x in self.tg.ledger.rows()),
            sorted(worst_gpt4o(chat_body(m, t), 2500000, 10000000)
                   for t in (None, "auto", "default")))

        # Asked for priority: the priority worst case, over the cap.
        body = chat_body(m, "priority")
        prio = worst_gpt4o(body, 4250000, 17000000)
        self.assertGreater(prio, CAP_NUSD)
        doc = self.assert_refused(self.chat(body), prio)
        self.assertRegex(doc["error"]["message"],
                         r"^tollgate: this call's worst case \$0\.2786\d* "
                         r"exceeds the \$0\.199\d* left of the \$0\.20 daily "
                         r"cap of policy 'gpt' \(\$0\.000\d+ spent, \$0\.00 "
                         r"reserved by calls in flight\); set max_tokens or "
                         r"enable clamp; it resets at \d{4}-")
        # gpt-4o lists no flex tier: flex is billed, and reserved, at base.
        self.assertEqual(self.chat(chat_body(m, "flex")).status, 200)

        # An upstream whose account runs at priority: a call that leaves
        # the tier to it, or says "auto", is reserved at priority ...
        for tier in (None, "auto"):
            body = chat_body(m, tier)
            self.assert_refused(self.chat(body, "/openai-prio"),
                                worst_gpt4o(body, 4250000, 17000000))
        # ... and one that asks for the standard tier is not.
        r = self.chat(chat_body(m, "default"), "/openai-prio")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.fp.find_requests(m)), 5)

    def test_anthropic_auto_is_priority_only_where_the_account_has_it(self):
        m = new_marker()
        std, prio = 30000 * 5000000 // 1000, 30000 * 9000000 // 1000
        for tier in (None, "auto", "standard_only"):
            self.assertEqual(self.messages(m, tier).status, 200)
        self.assert_refused(self.messages(m, None, "/anthropic-prio"), prio)
        self.assert_refused(self.messages(m, "auto", "/anthropic-prio"),
                            prio)
        r = self.messages(m, "standard_only", "/anthropic-prio")
        self.assertEqual(r.status, 200, r)
        self.tg.ledger.wait_count(4, "status = 'ok'")
        self.assertEqual(
            [x["reserved_nusd"] for x in self.tg.ledger.rows("status = 'ok'")],
            [std] * 4)
        self.assertEqual(len(self.fp.find_requests(m)), 4)

    def test_service_tier_read_two_ways_is_refused(self):
        # A duplicate key: tollgate and the provider could read different
        # tiers, so the reservation could be the cheaper one.
        m = new_marker()
        body = ('{"model":"gpt-4o","user":"%s","service_tier":"default",'
                '"service_tier":"priority","messages":[{"role":"user",'
                '"content":"hi"}]}' % m).encode()
        r = self.chat(body)
        self.assertEqual(r.status, 400, r)
        self.assertIn("service_tier", r.json()["error"]["message"])
        r = self.chat(('{"model":"gpt-4o","service_tier":7,"messages":[]}'
                       ).encode())
        self.assertEqual(r.status, 400, r)
        self.assertIn("\"service_tier\" must be a string",
                      r.json()["error"]["message"])
        self.assertEqual(len(self.fp.find_requests(m)), 0)


class TierConfigTest(tglib.TGTestCase):

    def check(self, value):
        path = os.path.join(self.tmp, "t.yaml")
        with open(path, "w") as f:
            f.write("listen: 127.0.0.1:0\nupstreams:\n  openai:\n"
                    "    type: openai\n    base_url: https://api.openai.com\n"
                    "    service_tier_default: %s\n" % value)
        r = subprocess.run([tglib.TOLLGATE_BIN, "check", "-c", path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20, stdin=subprocess.DEVNULL)
        return r.returncode, (r.stdout + r.stderr).decode()

    def test_service_tier_default_is_checked(self):
        self.assertEqual(self.check("priority")[0], 0)
        code, out = self.check('"prio rity"')
        self.assertEqual(code, 1, out)
        self.assertIn("t.yaml:6:27: upstreams.openai.service_tier_default: "
                      "bad service tier 'prio rity'", out)
        code, out = self.check("[priority]")
        self.assertEqual(code, 1, out)
        self.assertIn("service_tier_default", out)


if __name__ == "__main__":
    tglib.main()
