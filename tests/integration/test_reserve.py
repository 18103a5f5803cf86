# SPDX-License-Identifier: Apache-2.0
"""Limits that hold while calls overlap, across policies and reloads,
through the real binary: tokens_per_minute reserves each call's worst-case
tokens at admission and settles them to what it used, so two calls held
open together cannot both take a minute's tokens; the clamp of one capped
policy is what every other capped policy over the call is checked
against; a threshold a reload brings below the spend alerts at the
reload; a cap a reload lowers below the spend refuses the next call while
calls already running finish; concurrency and requests per minute count
at admission, so a burst of overlapping calls gets exactly the limit.

The price table is the test's own: test-model costs $10 per million output
tokens and nothing for input, so 30,000 output tokens cost $0.30."""

import json
import os
import re
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "reserve-test-1"
models:
  test-model:
    input: 0
    output: 10.00
    max_output_tokens: 30000
"""

FULL = ("x-fake-event-tokens", "10000")   # usage: 30,000 output tokens
HOLD = ("x-fake-delay-ms", "2500")        # keeps a call in flight


def chat_body(marker, max_tokens=30000):
    doc = {"model": "test-model", "user": marker,
           "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        doc["max_tokens"] = max_tokens
    return json.dumps(doc).encode()


class Caller(tglib.threading.Thread):
    """One call on its own connection, in the background."""

    def __init__(self, port, body, hdrs, timeout=60):
        tglib.threading.Thread.__init__(self, daemon=True)
        self.args = (port, body, hdrs, timeout)
        self.resp = self.error = None

    def run(self):
        port, body, hdrs, timeout = self.args
        try:
            c = tglib.RawConn(port, timeout=timeout)
            try:
                c.send(tglib.build_request(
                    "POST", "/v1/chat/completions", body, hdrs))
                self.resp = c.read_response(timeout, "POST")
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


class ReserveTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "test-prices.yaml"), "w") as f:
            f.write(PRICES)

    def doc(self, policies, extra=None):
        doc = {"prices": "test-prices.yaml", "policies": policies}
        if extra:
            doc.update(extra)
        return doc

    def start(self, policies, extra=None):
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                           extra=self.doc(policies, extra))
        tg.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/tollgate.db"), tg)
        return tg

    def reload_with(self, tg, policies, extra=None):
        off = len(tg.log())
        tg.write_config(tglib.make_config(
            tglib.std_upstreams(self.fp.port),
            extra=self.doc(policies, extra)))
        tg.hup()
        self.assertTrue(tg.wait_log(r"configuration reloaded", start=off))

    def hdrs(self, tags=(), fake=()):
        return [JSON_CT] + [("X-Tollgate-" + k, v) for k, v in tags] + \
            list(fake)

    def chat(self, tg, marker, tags=(), max_tokens=30000, fake=()):
        return self.call(tg.port, "POST", "/v1/chat/completions",
                         chat_body(marker, max_tokens),
                         self.hdrs(tags, fake), timeout=30)

    def hold(self, tg, marker, tags=(), max_tokens=30000, fake=()):
        """A call the provider holds open; returns once it is there."""
        c = Caller(tg.port, chat_body(marker, max_tokens),
                   self.hdrs(tags, (HOLD,) + tuple(fake)))
        before = len(self.fp.find_requests(marker))
        c.start()
        self.assertTrue(tglib.wait_until(
            lambda: len(self.fp.find_requests(marker)) > before, 10))
        return c

    def finish(self, c):
        c.join(30)
        self.assertIsNone(c.error)
        self.assertEqual(c.resp.status, 200, c.resp)

    # ------------------------------------------------------------------
    # Tokens per minute.

    def test_tokens_per_minute_reserves_calls_in_flight(self):
        tg = self.start([{"name": "tpm", "match": {"team": "t"},
                          "rate_limit": {"tokens_per_minute": 2000}}])
        m = new_marker()
        first = self.hold(tg, m, [("Team", "t")], max_tokens=1500)
        # The first holds its 1,500 output tokens and its input: the
        # second, which may use as many, does not fit in 2,000.
        r = self.chat(tg, m, [("Team", "t")], max_tokens=1500)
        self.assertEqual(r.status, 429, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], "rate_limit_exceeded")
        got = re.search(r"this call may use up to (\d+) tokens; (\d+) of "
                        r"the 2000 tokens/min are in use or reserved",
                        err["message"])
        self.assertIsNotNone(got, err["message"])
        # Its input estimate and 1,500 output tokens, as the first's.
        worst = int(got.group(1))
        self.assertTrue(1500 < worst < 1600, worst)
        self.assertEqual(int(got.group(2)), worst)
        tgo = r.json()["tollgate"]
        self.assertEqual(tgo["reason"], "rate_limit_tokens")
        self.assertEqual((tgo["limit"], tgo["current"]), (2000, worst))
        self.assertEqual(r.header("x-ratelimit-limit-tokens"), "2000")
        self.assertTrue(1 <= int(r.header("retry-after")) <= 60)
        self.assertEqual(len(self.fp.find_requests(m)), 1)
        # Other teams are not limited.
        self.assertEqual(self.chat(tg, m, [("Team", "u")],
                                   max_tokens=1500).status, 200)
        # The first settles at what it used (its input and 3 tokens): the
        # rest of its reservation is given back and the next call fits.
        self.finish(first)
        r = self.chat(tg, m, [("Team", "t")], max_tokens=1500)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(tg.ledger.wait_count(
            1, "refusal_reason = 'rate_limit_tokens'"), 1)

    def test_call_without_a_bound_reserves_the_model_ceiling(self):
        tg = self.start([{"name": "tpm",
                          "rate_limit": {"tokens_per_minute": 40000}}])
        m = new_marker()
        # No max_tokens: the model's 30,000 from the price table.
        first = self.hold(tg, m, max_tokens=None)
        r = self.chat(tg, m, max_tokens=10000)
        self.assertEqual(r.status, 429, r)
        self.assertIn("this call may use up to", r.json()["error"]["message"])
        self.assertTrue(30000 < r.json()["tollgate"]["current"] < 30100,
                        r.json())
        self.assertEqual(self.chat(tg, m, max_tokens=5000).status, 200)
        self.finish(first)

    # ------------------------------------------------------------------
    # The clamp over several capped policies.

    def test_clamp_is_what_every_capped_policy_pays_for(self):
        # The team's budget clamps; the tenant's has no clamp but room
        # for the clamped call (though not for the call as asked).
        tg = self.start([
            {"name": "team", "match": {"team": "x"}, "window": "day",
             "hard_cap_usd": "0.40", "clamp": {"min_output_tokens": 1000}},
            {"name": "tenant", "match": {"tenant": "acme"}, "window": "day",
             "hard_cap_usd": "0.45"}])
        m = new_marker()
        tags = [("Team", "x"), ("Tenant", "acme")]
        self.assertEqual(self.chat(tg, m, tags, fake=(FULL,)).status, 200)
        # $0.10 left in the team, $0.15 in the tenant: clamped to the
        # 10,000 tokens the team pays for, which the tenant pays for too.
        r = self.chat(tg, m, tags)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-clamped-max-tokens"), "10000")
        bodies = [json.loads(x["body"]) for x in self.fp.find_requests(m)]
        self.assertEqual(bodies[1]["max_tokens"], 10000)
        # Two clamping budgets: the lower offer wins.
        self.reload_with(tg, [
            {"name": "team", "match": {"team": "x"}, "window": "day",
             "hard_cap_usd": "0.40", "clamp": {"min_output_tokens": 1000}},
            {"name": "tenant", "match": {"tenant": "acme"}, "window": "day",
             "hard_cap_usd": "0.36", "clamp": {"min_output_tokens": 1000}}])
        tg.ledger.wait_count(2, "status = 'ok'")
        spent = tg.ledger.scalar("SELECT sum(cost_nusd) FROM calls "
                                 "WHERE status = 'ok'")
        room = 360000000 - spent
        r = self.chat(tg, m, tags)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-clamped-max-tokens"),
                         str(room // 10000))
        # A budget without clamp that cannot pay even the clamped call
        # still refuses it.
        self.reload_with(tg, [
            {"name": "team", "match": {"team": "x"}, "window": "day",
             "hard_cap_usd": "0.60", "clamp": {"min_output_tokens": 1000}},
            {"name": "tenant", "match": {"tenant": "acme"}, "window": "day",
             "hard_cap_usd": "0.40"}])
        # (Spent: $0.30006. The team clamps to 29,994 tokens, $0.29994,
        # which the tenant's $0.09994 does not cover.)
        r = self.chat(tg, m, tags, max_tokens=30000)
        self.assertEqual(r.status, 429, r)
        tgo = r.json()["tollgate"]
        self.assertEqual(tgo["policy"], "tenant")
        self.assertEqual(tgo["call_worst_case_usd"], 0.29994)
        self.assertEqual(len(self.fp.find_requests(m)), 3)

    # ------------------------------------------------------------------
    # Reloads.

    def test_threshold_lowered_by_reload_alerts_at_once(self):
        rcv = tglib.WebhookReceiver()
        self.addCleanup(rcv.close)
        alerts = {"webhooks": [{"url": "http://127.0.0.1:%d/hook" %
                                rcv.port, "format": "json"}]}
        pol = {"name": "daily", "match": {"team": "x"}, "window": "day",
               "hard_cap_usd": "5", "alert_at_usd": [4]}
        tg = self.start([pol], extra={"alerts": alerts})
        m = new_marker()
        self.assertEqual(self.chat(tg, m, [("Team", "x")],
                                   fake=(FULL,)).status, 200)
        tg.ledger.wait_count(1, "status = 'ok'")
        # $0.30 spent; a reload puts a threshold at $0.25 (and a policy of
        # its own over the same scope at $0.20): both fire with no call.
        lowered = dict(pol, alert_at_usd=[0.25, 4])
        other = dict(pol, name="watch", alert_at_usd=[0.20])
        del other["hard_cap_usd"]
        self.reload_with(tg, [lowered, other], extra={"alerts": alerts})
        self.assertTrue(tglib.wait_until(lambda: len(rcv.got) >= 2, 10),
                        rcv.got)
        got = sorted((d["policy"], d["threshold_usd"], d["spent_usd"])
                     for d in rcv.bodies())
        self.assertEqual(got, [("daily", 0.25, 0.3), ("watch", 0.2, 0.3)])
        # Once: another reload and another call do not fire them again.
        self.reload_with(tg, [lowered, other], extra={"alerts": alerts})
        self.assertEqual(self.chat(tg, m, [("Team", "x")],
                                   max_tokens=100).status, 200)
        tg.ledger.wait_count(2, "status = 'ok'")
        time.sleep(0.5)
        self.assertEqual(len(rcv.got), 2, rcv.bodies())

    def test_cap_lowered_below_the_spend_by_reload(self):
        pol = {"name": "daily", "match": {"team": "x"}, "window": "day",
               "hard_cap_usd": "1.00"}
        tg = self.start([pol])
        m = new_marker()
        tags = [("Team", "x")]
        self.assertEqual(self.chat(tg, m, tags, fake=(FULL,)).status, 200)
        running = self.hold(tg, m, tags, fake=(FULL,))
        self.reload_with(tg, [dict(pol, hard_cap_usd="0.50")])
        # $0.30 spent and $0.30 held: the next call is refused...
        r = self.chat(tg, m, tags, max_tokens=100)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["limit_usd"], 0.5)
        # ...and the call admitted under the old cap runs to its end and
        # is charged in full.
        self.finish(running)
        self.assertEqual(tg.ledger.wait_count(2, "status = 'ok'"), 2)
        self.assertEqual(tg.ledger.scalar(
            "SELECT sum(cost_nusd) FROM calls WHERE status = 'ok'"),
            600000000)
        r = self.chat(tg, m, tags, max_tokens=100)
        self.assertEqual(r.status, 429, r)

    # ------------------------------------------------------------------
    # Requests and concurrency are counted at admission.

    def test_overlapping_burst_gets_exactly_the_limits(self):
        tg = self.start([
            {"name": "conc", "match": {"team": "c"},
             "rate_limit": {"concurrent": 3}},
            {"name": "rpm", "match": {"team": "r"},
             "rate_limit": {"requests_per_minute": 4}}])
        for team, want in (("c", 3), ("r", 4)):
            m = new_marker()
            callers = [Caller(tg.port, chat_body(m, 100),
                              self.hdrs([("Team", team)], (HOLD,)))
                       for _ in range(12)]
            for c in callers:
                c.start()
            for c in callers:
                c.join(30)
                self.assertIsNone(c.error)
            ok = [c.resp.status for c in callers].count(200)
            self.assertEqual(ok, want, [c.resp.status for c in callers])
            self.assertEqual(len(self.fp.find_requests(m)), want)


if __name__ == "__main__":
    tglib.main()
