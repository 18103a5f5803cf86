# SPDX-License-Identifier: Apache-2.0
"""What refusals and breaker alerts say, through the real binary. A hard
cap refusal says which of two things happened: the call alone does not fit
in what is left (its worst case, the room, the cap, and what to change), or
the cap is used up (spent, and reserved by calls in flight). It never says
"budget exhausted ... spent $0" of a budget nobody has spent from. A
breaker's alert says which breaker tripped on what, and no "spent $0.00".

test-model costs $10 per million output tokens and nothing for input, so a
call asking for 30,000 output tokens has a worst case of exactly $0.30, and
fakeprov reports 30,000 output tokens when told to."""

import json
import os
import re
import threading

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "refusal-text-1"
models:
  test-model:
    input: 0
    output: 10.00
    max_output_tokens: 30000
  gemini-test:
    input: 0
    output: 10.00
    max_output_tokens: 30000
"""

FULL = ("x-fake-event-tokens", "10000")   # usage: 30,000 output tokens
RESETS = r"; it resets at \d{4}-\d\d-\d\dT00:00:00\.000Z$"


def chat_body(marker, max_tokens=30000):
    doc = {"model": "test-model", "user": marker,
           "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        doc["max_tokens"] = max_tokens
    return json.dumps(doc).encode()


class RefusalTextTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "text-prices.yaml"), "w") as f:
            f.write(PRICES)

    def start(self, policies, extra=None):
        doc = {"prices": "text-prices.yaml", "policies": policies}
        doc.update(extra or {})
        return self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                             extra=doc)

    def chat(self, tg, marker, team, max_tokens=30000, fake=(FULL,)):
        hdrs = [JSON_CT, ("X-Tollgate-Team", team)] + list(fake)
        return self.call(tg.port, "POST", "/v1/chat/completions",
                         chat_body(marker, max_tokens), hdrs, timeout=30)

    def refused(self, r):
        self.assertEqual(r.status, 429, r)
        doc = r.json()
        self.assertEqual(doc["tollgate"]["reason"], "hard_cap")
        return doc["error"]["message"]

    def test_cap_used_up_says_spent_and_held(self):
        tg = self.start([{"name": "daily", "window": "day", "per": ["team"],
                          "hard_cap_usd": "0.30"}])
        m = new_marker()
        # Team a spends its whole cap: the next call meets a spent cap.
        self.assertEqual(self.chat(tg, m, "a").status, 200)
        msg = self.refused(self.chat(tg, m, "a", max_tokens=10))
        self.assertRegex(msg, r"^tollgate: the \$0\.30 daily cap of policy "
                         r"'daily' \(team=a\) is spent \(\$0\.30 spent, "
                         r"\$0\.00 reserved by calls in flight\)" + RESETS)

        # Team b's cap is all held by a call still running: used up, and
        # nothing spent.
        hdrs = [JSON_CT, ("X-Tollgate-Team", "b"), ("x-fake-delay-ms", "3000")]
        held = {}

        def run():
            held["r"] = self.call(tg.port, "POST", "/v1/chat/completions",
                                  chat_body(m), hdrs, timeout=30)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        tglib.wait_until(lambda: len(self.fp.find_requests(m)) == 2, 10)
        msg = self.refused(self.chat(tg, m, "b", max_tokens=10))
        self.assertRegex(msg, r"^tollgate: the \$0\.30 daily cap of policy "
                         r"'daily' \(team=b\) is used up \(\$0\.00 spent, "
                         r"\$0\.30 reserved by calls in flight\)" + RESETS)
        self.assertNotIn("exhausted", msg)
        t.join(30)
        self.assertEqual(held["r"].status, 200)

    def test_a_call_too_big_for_what_is_left(self):
        tg = self.start([
            {"name": "small", "window": "month", "hard_cap_usd": "0.10",
             "match": {"team": "s"}},
            {"name": "clamped", "window": "total", "hard_cap_usd": "0.10",
             "match": {"team": "c"}, "clamp": {"min_output_tokens": 20000}}])
        m = new_marker()
        # Nothing spent: the call alone is over the cap; no "exhausted".
        msg = self.refused(self.chat(tg, m, "s"))
        self.assertRegex(msg, r"^tollgate: this call's worst case \$0\.30 "
                         r"exceeds the \$0\.10 left of the \$0\.10 monthly "
                         r"cap of policy 'small'; set a lower max_tokens or "
                         r"enable clamp; it resets at \d{4}-\d\d-01T")
        # No bound asked: the advice is to set one.
        msg = self.refused(self.chat(tg, m, "s", max_tokens=None))
        self.assertIn("; set max_tokens or enable clamp", msg)
        # With clamp on, the advice would be wrong: say clamp could not.
        msg = self.refused(self.chat(tg, m, "c"))
        self.assertEqual(msg, "tollgate: this call's worst case $0.30 "
                         "exceeds the $0.10 left of the $0.10 total cap of "
                         "policy 'clamped', even with max_tokens lowered to "
                         "the policy's clamp.min_output_tokens (20000)")
        # Gemini's error body stays Google's shape, with the same words.
        gem = json.dumps({"contents": [{"parts": [{"text": m}]}],
                          "generationConfig": {"maxOutputTokens": 30000}})
        r = self.call(tg.port, "POST",
                      "/v1beta/models/gemini-test:generateContent",
                      gem.encode(), [JSON_CT, ("X-Tollgate-Team", "s")])
        self.assertEqual(r.status, 429, r)
        err = r.json()["error"]
        self.assertEqual(err["status"], "RESOURCE_EXHAUSTED")
        self.assertIn("set a lower generationConfig.maxOutputTokens or "
                      "enable clamp", err["message"])
        self.assertEqual(err["details"][0]["violations"][0]["description"],
                         err["message"][len("tollgate: "):])
        self.assertEqual(len(self.fp.find_requests(m)), 0)

    def test_breaker_alert_says_what_tripped(self):
        hook = tglib.WebhookReceiver()
        self.addCleanup(hook.close)
        slack = tglib.WebhookReceiver()
        self.addCleanup(slack.close)
        tg = self.start(
            [{"name": "agents", "match": {"agent_class": "bot"},
              "breakers": {"loop": {"count": 3, "within": "60s",
                                    "kill_for": "10m"}}}],
            {"alerts": {"webhooks": [
                {"url": "http://127.0.0.1:%d/j" % hook.port},
                {"url": "http://127.0.0.1:%d/s" % slack.port,
                 "format": "slack"}]}})
        m = new_marker()
        hdrs = [JSON_CT, ("X-Tollgate-Agent-Class", "bot"),
                ("X-Tollgate-Intent", "ticket-1")]
        for _ in range(2):
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          chat_body(m), hdrs)
            self.assertEqual(r.status, 200, r)
        r = self.call(tg.port, "POST", "/v1/chat/completions", chat_body(m),
                      hdrs)
        self.assertEqual(r.status, 403, r)
        got = tglib.wait_until(lambda: hook.bodies(), 10)
        doc = got[0]
        self.assertEqual((doc["kind"], doc["policy"]), ("breaker", "agents"))
        self.assertIsNone(doc["spent_usd"])
        self.assertRegex(doc["message"],
                         r"^the loop breaker tripped: the same request body "
                         r"\(sha256 [0-9a-f]{12}\.\.\.\) 3 times in \d+ ms "
                         r"for intent=ticket-1 \(limit: 3 within 1m\); calls "
                         r"matching kill \S+ are stopped until \d{4}-")
        text = tglib.wait_until(lambda: slack.bodies(), 10)[0]["text"]
        self.assertRegex(text, r"^tollgate alert \(breaker\): policy agents, "
                         r"scope intent=ticket-1 agent_class=bot; the loop breaker "
                         r"tripped: ")
        self.assertNotIn("spent", text)
        self.assertIsNotNone(re.search(r"\[breaker-[^\]]+\]$", text), text)


if __name__ == "__main__":
    tglib.main()
