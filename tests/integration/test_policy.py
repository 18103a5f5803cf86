# SPDX-License-Identifier: Apache-2.0
"""Cost policies through the real binary: hard caps that hold exactly under
concurrency (reserve the worst case before forwarding, settle the actual
after), per-tenant budgets, calendar windows that roll over (with the
injectable clock), rate limits whose retry-after works when honoured, the
budget-aware clamp and the default output bound written into the body,
refusals in each provider's shape with the tollgate object, refused ledger
rows, budgets rebuilt from the ledger at restart and kept across a reload
that edits the cap.

The price table is the test's own: test-model costs $10 per million output
tokens and nothing for input, so a call asking for 30,000 output tokens has
a worst case of exactly $0.30, and fakeprov reports 30,000 output tokens
when told to (x-fake-event-tokens: 10000 over its 3 events)."""

import calendar
import json
import os
import re
import socket
import sqlite3
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "policy-test-1"
models:
  test-model:
    input: 0
    output: 10.00
    max_output_tokens: 30000
  claude-test:
    input: 0
    output: 10.00
    max_output_tokens: 30000
  gemini-test:
    input: 0
    output: 10.00
    max_output_tokens: 30000
"""

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
NUSD = 1000000000
WORST = 300000000          # $0.30: 30,000 tokens at $10/M
FULL = ("x-fake-event-tokens", "10000")   # usage: 30,000 output tokens


def chat_body(marker, max_tokens=30000, model="test-model", extra=None):
    doc = {"model": model, "user": marker,
           "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        doc["max_tokens"] = max_tokens
    if extra:
        doc.update(extra)
    return json.dumps(doc).encode()


class Caller(threading.Thread):
    """One call on its own connection, in the background."""

    def __init__(self, test, port, path, body, hdrs, timeout=60):
        threading.Thread.__init__(self, daemon=True)
        self.test, self.args = test, (port, path, body, hdrs, timeout)
        self.resp = self.error = None

    def run(self):
        port, path, body, hdrs, timeout = self.args
        try:
            c = tglib.RawConn(port, timeout=timeout)
            try:
                c.send(tglib.build_request("POST", path, body, hdrs))
                self.resp = c.read_response(timeout, "POST")
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


class PolicyTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "test-prices.yaml"), "w") as f:
            f.write(PRICES)
        self.clock = os.path.join(self.tmp, "clock")
        self.set_clock(0)

    def set_clock(self, offset_ms):
        """Move tollgate's wall clock: it adds the number in this file."""
        tmp = self.clock + ".new"
        with open(tmp, "w") as f:
            f.write("%d\n" % offset_ms)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.clock)
        # The file is read again when its mtime changes; make sure it does.
        st = os.stat(self.clock)
        os.utime(self.clock, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))

    def start(self, policies, name="tollgate", extra=None, upstreams=None):
        doc = {"prices": "test-prices.yaml", "policies": policies}
        if extra:
            doc.update(extra)
        tg = self.tollgate(
            upstreams=upstreams or tglib.std_upstreams(self.fp.port),
            extra=doc, name=name, env={"TOLLGATE_TEST_CLOCK": self.clock})
        tg.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/%s.db" % name), tg)
        return tg

    def chat(self, tg, marker, tags=(), max_tokens=30000, fake=(FULL,),
             model="test-model", extra=None):
        hdrs = [JSON_CT] + [("X-Tollgate-" + k, v) for k, v in tags] + \
            list(fake)
        return self.call(tg.port, "POST", "/v1/chat/completions",
                         chat_body(marker, max_tokens, model, extra), hdrs,
                         timeout=30)

    def admin_get(self, tg, path):
        if not getattr(tg, "admin_port", None):
            m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
            tg.admin_port = int(m.group(1))
        raw = tglib.build_request(
            "GET", path, b"", [("Host", "127.0.0.1:%d" % tg.admin_port)],
            host=None)
        r = self.call(tg.admin_port, "GET", path, raw=raw)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def admin(self, tg, method, path, doc=None):
        self.admin_get(tg, "/healthz") if not getattr(
            tg, "admin_port", None) else None
        body = json.dumps(doc).encode() if doc is not None else b""
        hdrs = [("Host", "127.0.0.1:%d" % tg.admin_port)]
        if doc is not None:
            hdrs.append(JSON_CT)
        raw = tglib.build_request(method, path, body, hdrs, host=None)
        return self.call(tg.admin_port, method, path, raw=raw)

    def reached(self, marker):
        return len(self.fp.find_requests(marker))

    def settled_cost(self, tg, where="1"):
        tg.wait_written()
        return tg.ledger.scalar(
            "SELECT coalesce(sum(cost_nusd), 0) FROM calls WHERE %s" % where)

    # ------------------------------------------------------------------
    # Hard caps under concurrency.

    def test_concurrent_bursts_never_overshoot(self):
        """$1.00 cap, $0.30 worst case, each call held 2 s upstream: a
        burst of 50 and then one of 200 let exactly 3 calls reach the
        provider; every other call is refused before any upstream
        contact and the ledger stays at or below $1.00."""
        tg = self.start([{"name": "researchers", "window": "day",
                          "match": {"agent_class": "researcher"},
                          "hard_cap_usd": "1.00"}])
        marker = new_marker()
        hdrs = [JSON_CT, ("X-Tollgate-Agent-Class", "researcher"), FULL,
                ("x-fake-delay-ms", "2000")]
        body = chat_body(marker)
        results = []
        for n in (50, 200):
            callers = [Caller(self, tg.port, "/v1/chat/completions", body,
                              hdrs) for _ in range(n)]
            for c in callers:
                c.start()
            for c in callers:
                c.join(90)
            for c in callers:
                self.assertIsNone(c.error, c.error)
                self.assertIsNotNone(c.resp, "a caller hung")
            results += [c.resp for c in callers]
        ok = [r for r in results if r.status == 200]
        refused = [r for r in results if r.status == 429]
        self.assertEqual(len(ok), 3, [r.status for r in results])
        self.assertEqual(len(refused), 247)
        for r in refused:
            self.assertEqual(r.header("x-should-retry"), "false")
            doc = r.json()
            self.assertEqual(doc["error"]["code"], "insufficient_quota")
            self.assertEqual(doc["tollgate"]["reason"], "hard_cap")
            self.assertEqual(doc["tollgate"]["policy"], "researchers")
            self.assertLessEqual(
                doc["tollgate"]["spent_usd"] + doc["tollgate"]["reserved_usd"],
                1.0)
        self.assertEqual(self.reached(marker), 3)
        self.assertEqual(tg.ledger.wait_count(250, "status <> 'in_flight'"),
                         250)
        self.assertLessEqual(self.settled_cost(tg), NUSD)
        self.assertEqual(self.settled_cost(tg), 3 * WORST)
        self.assertEqual(tg.ledger.count(
            "status = 'refused' AND refusal_reason = 'hard_cap' AND "
            "http_status = 429 AND cost_nusd = 0"), 247)
        # The live budget equals the ledger's sum, and nothing is held.
        b = self.admin_get(tg, "/v1/budgets")["budgets"]
        self.assertEqual(len(b), 1)
        self.assertEqual(b[0]["spent_nusd"], self.settled_cost(tg))
        self.assertEqual(b[0]["reserved_nusd"], 0)
        self.assertEqual(b[0]["state"], "capped")

    def test_per_tenant_budgets_are_apart(self):
        tg = self.start([{"name": "per-tenant", "window": "day",
                          "per": ["tenant"], "hard_cap_usd": "0.50"}])
        m = new_marker()
        a1 = self.chat(tg, m, [("Tenant", "acme")])
        a2 = self.chat(tg, m, [("Tenant", "acme")])
        b1 = self.chat(tg, m, [("Tenant", "globex")])
        self.assertEqual((a1.status, a2.status, b1.status), (200, 429, 200))
        doc = a2.json()
        self.assertEqual(doc["tollgate"]["scope"], {"tenant": "acme"})
        self.assertEqual(doc["tollgate"]["spent_usd"], 0.3)
        self.assertEqual(a1.header("x-tollgate-budget-remaining-usd"),
                         "0.200000000")
        self.assertEqual(b1.header("x-tollgate-budget-policy"), "per-tenant")
        self.assertEqual(self.reached(m), 2)

    def test_window_rollover_reopens_budget(self):
        """Five seconds before midnight UTC the day's budget is spent;
        ten seconds later a new day has a new budget."""
        now = int(time.time() * 1000)
        midnight = (now // 86400000 + 1) * 86400000
        self.set_clock(midnight - 5000 - now)
        tg = self.start([{"name": "daily", "window": "day",
                          "match": {"team": "ops"}, "hard_cap_usd": "0.50",
                          "alert_at_percent": 50}])
        m = new_marker()
        r1 = self.chat(tg, m, [("Team", "ops")])
        self.assertEqual(r1.status, 200, r1)
        self.assertTrue(tg.wait_log(r"tollgate alert \(threshold\): policy daily"),
                        "the 50% threshold did not fire")
        r2 = self.chat(tg, m, [("Team", "ops")])
        self.assertEqual(r2.status, 429, r2)
        reset = r2.json()["tollgate"]["reset_at"]
        self.assertEqual(reset, time.strftime(
            "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(midnight / 1000)))
        self.set_clock(midnight + 5000 - now)
        r3 = self.chat(tg, m, [("Team", "ops")])
        self.assertEqual(r3.status, 200, r3)
        # The new window re-armed the threshold: it fires again.
        self.assertTrue(tglib.wait_until(
            lambda: tg.log().count("tollgate alert (threshold): policy daily") == 2, 10),
            tg.log())
        self.assertEqual(tg.ledger.wait_count(2, "status = 'ok'"), 2)
        rows = tg.ledger.rows("status = 'ok'")
        self.assertLess(rows[0]["started_at"], rows[1]["started_at"])
        self.assertEqual(rows[1]["started_at"][11:19], "00:00:0%s" %
                         rows[1]["started_at"][18])

    def test_budgets_endpoint(self):
        tg = self.start([
            {"name": "tenants", "window": "month", "per": ["tenant"],
             "match": {"team": "a*"}, "hard_cap_usd": "0.50",
             "alert_at_usd": ["0.20", "0.40"]},
            {"name": "all", "window": "day", "hard_cap_usd": "100"},
            {"name": "frozen", "window": "week", "match": {"team": "z"},
             "hard_cap_usd": "1", "killed": True},
            {"name": "no-budget", "rate_limit": {"concurrent": 5}},
        ])
        doc = self.admin_get(tg, "/v1/budgets")
        self.assertEqual([b["policy"] for b in doc["budgets"]],
                         ["all", "frozen"])
        self.assertEqual(doc["budgets"][0]["spent_usd"], 0)
        self.assertEqual(doc["budgets"][1]["state"], "killed")
        m = new_marker()
        self.assertEqual(self.chat(
            tg, m, [("Team", "ab"), ("Tenant", "t1")]).status, 200)
        self.assertEqual(self.chat(
            tg, m, [("Team", "ab"), ("Tenant", "t1")]).status, 429)
        self.assertEqual(self.chat(
            tg, m, [("Team", "ab"), ("Tenant", "t2")], max_tokens=1000,
            fake=()).status, 200)
        doc = self.admin_get(tg, "/v1/budgets")
        got = [(b["policy"], b["scope"], b["state"], b["spent_nusd"])
               for b in doc["budgets"]]
        self.assertEqual(got, [
            ("tenants", {"team": "a*", "tenant": "t1"}, "capped", WORST),
            ("tenants", {"team": "a*", "tenant": "t2"}, "ok", 30000),
            ("all", {}, "ok", WORST + 30000),
            ("frozen", {"team": "z"}, "killed", 0)])
        t1 = doc["budgets"][0]
        self.assertEqual(t1["window"], "month")
        self.assertEqual(t1["cap_usd"], 0.5)
        self.assertEqual(t1["remaining_nusd"], 200000000)
        self.assertEqual(t1["alert_at_usd"], 0.2)
        self.assertEqual(t1["alert_thresholds_usd"], [0.2, 0.4])
        self.assertTrue(t1["reset_at"].endswith("-01T00:00:00.000Z"))
        self.assertEqual(t1["reserved_usd"], 0)
        # A smaller call that fits ends the capped state.
        self.assertEqual(self.chat(
            tg, m, [("Team", "ab"), ("Tenant", "t1")], max_tokens=5000,
            fake=()).status, 200)
        doc = self.admin_get(tg, "/v1/budgets")
        self.assertEqual(doc["budgets"][0]["state"], "alerting")

    def test_alert_at_80_percent_fires_once_across_a_restart(self):
        pol = [{"name": "researchers", "window": "day",
                "match": {"agent_class": "researcher"},
                "hard_cap_usd": "1.00", "alert_at_percent": 80}]
        tg = self.start(pol)
        m = new_marker()
        tags = [("Agent-Class", "researcher")]
        for _ in range(2):
            self.assertEqual(self.chat(tg, m, tags).status, 200)
        self.assertEqual(self.admin_get(tg, "/v1/alerts")["alerts"], [])
        self.assertEqual(self.chat(tg, m, tags).status, 200)  # $0.90
        self.assertTrue(tg.wait_log(r"tollgate alert \(threshold\)"))
        got = tglib.wait_until(
            lambda: self.admin_get(tg, "/v1/alerts")["alerts"], 10)
        self.assertEqual(len(got), 1, got)
        self.assertEqual((got[0]["policy"], got[0]["threshold_usd"],
                          got[0]["spent_usd"], got[0]["cap_usd"]),
                         ("researchers", 0.8, 0.9, 1.0))
        self.assertEqual(self.chat(tg, m, tags, max_tokens=5000,
                                   fake=()).status, 200)
        self.assertEqual(tg.stop(), 0)
        tg = self.start(pol)
        self.assertEqual(self.chat(tg, m, tags, max_tokens=5000,
                                   fake=()).status, 200)
        self.assertEqual(len(self.admin_get(tg, "/v1/alerts")["alerts"]), 1)
        self.assertEqual(tg.log().count("tollgate alert"), 0, tg.log())

    def test_windows_follow_a_configured_time_zone(self):
        """timezone: Asia/Tokyo (UTC+9): the day ends at 15:00 UTC."""
        now = int(time.time() * 1000)
        day = now // 86400000 * 86400000
        jst_midnight = day + 15 * 3600000
        if jst_midnight <= now:
            jst_midnight += 86400000
        self.set_clock(jst_midnight - 5000 - now)
        tg = self.start([{"name": "daily", "window": "day",
                          "hard_cap_usd": "0.50"}],
                        extra={"timezone": "Asia/Tokyo"})
        m = new_marker()
        self.assertEqual(self.chat(tg, m).status, 200)
        r = self.chat(tg, m)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["reset_at"], time.strftime(
            "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(jst_midnight / 1000)))
        self.set_clock(jst_midnight + 5000 - now)
        self.assertEqual(self.chat(tg, m).status, 200)
        rc, out, err, _ = tglib.run_check(tglib.make_config(
            tglib.std_upstreams(1), extra={"timezone": "Mars/Olympus"}),
            self.tmp)
        self.assertNotEqual(rc, 0)
        self.assertIn("unknown time zone 'Mars/Olympus'", out + err)

    # ------------------------------------------------------------------
    # Rate limits.

    def test_concurrency_limit_retry_after_honoured(self):
        tg = self.start([{"name": "one-at-a-time",
                          "rate_limit": {"concurrent": 1}}])
        m = new_marker()
        first = Caller(self, tg.port, "/v1/chat/completions", chat_body(m),
                       [JSON_CT, ("x-fake-delay-ms", "600")])
        first.start()
        tglib.wait_until(lambda: self.reached(m) == 1, 10)
        r = self.chat(tg, m, fake=())
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.header("retry-after"), "1")
        self.assertEqual(r.header("retry-after-ms"), "1000")
        self.assertIsNone(r.header("x-should-retry"))
        self.assertEqual(r.json()["tollgate"]["reason"], "concurrency")
        time.sleep(int(r.header("retry-after")))
        first.join(10)
        self.assertEqual(first.resp.status, 200)
        r = self.chat(tg, m, fake=())
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.reached(m), 2)

    def test_requests_per_minute_retry_after(self):
        """Two requests a minute: the third is refused with the seconds
        until the first leaves the window; after them it succeeds."""
        tg = self.start([{"name": "rpm", "match": {"team": "t"},
                          "rate_limit": {"requests_per_minute": 2}}])
        m = new_marker()
        for _ in range(2):
            self.assertEqual(self.chat(tg, m, [("Team", "t")]).status, 200)
        r = self.chat(tg, m, [("Team", "t")])
        self.assertEqual(r.status, 429)
        wait = int(r.header("retry-after"))
        self.assertTrue(1 <= wait <= 60, wait)
        self.assertEqual(r.header("x-ratelimit-limit-requests"), "2")
        self.assertEqual(r.header("x-ratelimit-remaining-requests"), "0")
        self.assertEqual(r.json()["error"]["code"], "rate_limit_exceeded")
        # Other teams are not limited.
        self.assertEqual(self.chat(tg, m, [("Team", "u")]).status, 200)
        # Honour retry-after on tollgate's clock.
        self.set_clock(wait * 1000)
        self.assertEqual(self.chat(tg, m, [("Team", "t")]).status, 200)
        self.assertEqual(tg.ledger.wait_count(
            1, "refusal_reason = 'rate_limit_requests'"), 1)

    # ------------------------------------------------------------------
    # Output bounds.

    def test_clamp_lowers_the_bound_to_what_the_budget_pays(self):
        tg = self.start([{"name": "clamped", "window": "day",
                          "hard_cap_usd": "0.40",
                          "clamp": {"min_output_tokens": 1000}}])
        m = new_marker()
        self.assertEqual(self.chat(tg, m).status, 200)     # $0.30 spent
        r = self.chat(tg, m, fake=())
        self.assertEqual(r.status, 200, r)
        # $0.10 left buys 10,000 tokens at $10/M.
        self.assertEqual(r.header("x-tollgate-clamped-max-tokens"), "10000")
        bodies = [json.loads(x["body"]) for x in self.fp.find_requests(m)]
        self.assertEqual(bodies[1]["max_tokens"], 10000)
        self.assertEqual(bodies[0]["max_tokens"], 30000)
        # Less than the minimum is left: refused, not clamped.
        r = self.chat(tg, m, fake=(("x-fake-event-tokens", "3000"),))
        self.assertEqual(r.status, 200)      # used $0.09 of the $0.10
        r = self.chat(tg, m)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(self.reached(m), 3)

    def test_default_and_ceiling_output_bound_written(self):
        tg = self.start([{"name": "bounds", "default_output_tokens": 500,
                          "max_output_tokens": 2000}])
        m = new_marker()
        self.assertEqual(self.chat(tg, m, max_tokens=None, fake=()).status,
                         200)
        self.assertEqual(self.chat(tg, m, max_tokens=9000, fake=()).status,
                         200)
        self.assertEqual(self.chat(
            tg, m, max_tokens=None, fake=(),
            extra={"max_completion_tokens": 7000}).status, 200)
        bodies = [json.loads(x["body"]) for x in self.fp.find_requests(m)]
        self.assertEqual(bodies[0]["max_completion_tokens"], 500)
        self.assertNotIn("max_tokens", bodies[0])
        self.assertEqual(bodies[1]["max_tokens"], 2000)
        self.assertEqual(bodies[2]["max_completion_tokens"], 2000)
        self.assertEqual(tg.ledger.wait_count(3, "status = 'ok'"), 3)
        rows = tg.ledger.rows("status = 'ok'")
        self.assertEqual([r["reserved_nusd"] for r in rows],
                         [500 * 10000, 2000 * 10000, 2000 * 10000])

    # ------------------------------------------------------------------
    # Refusal shapes.

    def test_refusal_shapes_by_family(self):
        tg = self.start([
            {"name": "capped", "window": "month", "match": {"team": "c"},
             "hard_cap_usd": "0.10"},
            {"name": "stopped", "match": {"team": "k"}, "killed": True,
             "kill_reason": "runaway loop"},
            {"name": "cheap-only", "match": {"team": "m"},
             "models": {"deny": ["test-*"]}},
        ])
        m = new_marker()
        anth = json.dumps({"model": "claude-test", "max_tokens": 30000,
                           "messages": [{"role": "user", "content": m}]})
        r = self.call(tg.port, "POST", "/v1/messages", anth.encode(),
                      [JSON_CT, ("anthropic-version", "2023-06-01"),
                       ("X-Tollgate-Team", "c")])
        self.assertEqual(r.status, 429)
        doc = r.json()
        self.assertEqual(doc["type"], "error")
        self.assertEqual(doc["error"]["type"], "rate_limit_error")
        self.assertIn("this call's worst case $0.30 exceeds the $0.10 left "
                      "of the $0.10 monthly cap of policy 'capped'",
                      doc["error"]["message"])
        self.assertEqual(doc["tollgate"]["limit_usd"], 0.1)
        self.assertEqual(r.header("x-should-retry"), "false")

        gem = json.dumps({"contents": [{"parts": [{"text": m}]}],
                          "generationConfig": {"maxOutputTokens": 30000}})
        r = self.call(tg.port, "POST",
                      "/v1beta/models/gemini-test:generateContent",
                      gem.encode(), [JSON_CT, ("X-Tollgate-Team", "c")])
        self.assertEqual(r.status, 429)
        err = r.json()["error"]
        self.assertEqual(err["status"], "RESOURCE_EXHAUSTED")
        self.assertEqual(err["details"][0]["@type"],
                         "type.googleapis.com/google.rpc.QuotaFailure")
        self.assertNotIn("RetryInfo", json.dumps(err))

        r = self.chat(tg, m, [("Team", "k")])
        self.assertEqual(r.status, 403)
        self.assertEqual(r.header("x-should-retry"), "false")
        self.assertEqual(r.json()["error"]["type"], "permission_error")
        self.assertIn("runaway loop", r.json()["error"]["message"])
        self.assertEqual(r.json()["tollgate"]["reason"], "killed")

        r = self.chat(tg, m, [("Team", "m")])
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["code"], "model_not_allowed")

        self.assertEqual(self.reached(m), 0)
        tg.ledger.wait_count(4)
        reasons = sorted(x["refusal_reason"] for x in tg.ledger.rows())
        self.assertEqual(reasons, ["hard_cap", "hard_cap", "killed",
                                   "model_not_allowed"])

    def test_refusal_body_names_the_id_it_is_recorded_under(self):
        # A refused call with the client's X-Tollgate-Request-Id is
        # recorded under an id of tollgate's own; the Anthropic body's
        # request_id must name that id, as the request-id header does,
        # for every refusal (policy, kill, unpriced model).
        tg = self.start([
            {"name": "capped", "window": "month", "match": {"team": "c"},
             "hard_cap_usd": "0.10"},
            {"name": "stopped", "match": {"team": "k"}, "killed": True},
        ])
        m = new_marker()
        anth = json.dumps({"model": "claude-test", "max_tokens": 30000,
                           "messages": [{"role": "user", "content": m}]})
        ids = []
        for team, status in (("c", 429), ("k", 403)):
            r = self.call(tg.port, "POST", "/v1/messages", anth.encode(),
                          [JSON_CT, ("anthropic-version", "2023-06-01"),
                           ("X-Tollgate-Team", team),
                           ("X-Tollgate-Request-Id", "client-" + team)])
            self.assertEqual(r.status, status, r)
            rid = r.header("request-id")
            self.assertNotEqual(rid, "client-" + team)
            self.assertEqual(r.header("x-tollgate-request-id"), rid)
            self.assertEqual(r.json()["request_id"], rid)
            ids.append(rid)
        tg.ledger.wait_count(2)
        self.assertEqual(sorted(x["id"] for x in tg.ledger.rows()),
                         sorted(ids))

    def test_hard_cap_status_402(self):
        tg = self.start([{"name": "c", "window": "total",
                          "hard_cap_usd": "0.01"}],
                        extra={"refusals": {"hard_cap_status": 402}})
        r = self.chat(tg, new_marker())
        self.assertEqual(r.status, 402)
        self.assertEqual(r.json()["error"]["type"], "insufficient_quota")
        self.assertIsNone(r.json()["tollgate"]["reset_at"])

    def test_unpriced_model_under_a_cap_is_refused(self):
        tg = self.start([{"name": "c", "window": "day",
                          "hard_cap_usd": "5"}],
                        extra={"unknown_models": {"action": "unpriced"}})
        m = new_marker()
        r = self.chat(tg, m, model="no-such-model")
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["code"], "unpriced_model")
        self.assertEqual(self.reached(m), 0)

    def test_shadow_policy_only_reports(self):
        tg = self.start([{"name": "watch", "window": "day",
                          "hard_cap_usd": "0.10", "shadow": True}])
        m = new_marker()
        self.assertEqual(self.chat(tg, m).status, 200)
        self.assertTrue(tg.wait_log(r"shadow policy 'watch' would refuse: "
                                    r"hard_cap"))

    # ------------------------------------------------------------------
    # Restarts and reloads keep the spend.

    def test_restart_rebuilds_budgets_from_the_ledger(self):
        pol = [{"name": "daily", "window": "day", "hard_cap_usd": "0.70"}]
        tg = self.start(pol)
        m = new_marker()
        for _ in range(2):
            self.assertEqual(self.chat(tg, m).status, 200)
        tg.ledger.wait_count(2, "status = 'ok'")
        self.assertEqual(tg.stop(), 0)
        tg = self.start(pol)
        self.assertTrue(tg.wait_log(r"1 budget scope rebuilt"))
        r = self.chat(tg, m)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["spent_usd"], 0.6)
        self.assertEqual(self.chat(tg, m, max_tokens=10000).status, 200)

    def test_restart_keeps_the_last_minute_of_requests(self):
        pol = [{"name": "rpm", "rate_limit": {"requests_per_minute": 2,
                                              "tokens_per_minute": 100000}}]
        tg = self.start(pol)
        m = new_marker()
        for _ in range(2):
            self.assertEqual(self.chat(tg, m, fake=()).status, 200)
        tg.ledger.wait_count(2, "status = 'ok'")
        self.assertEqual(tg.stop(), 0)
        tg = self.start(pol)
        r = self.chat(tg, m, fake=())
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["reason"],
                         "rate_limit_requests")
        # Tokens settled before the restart count too.
        pol = [{"name": "tpm", "rate_limit": {"tokens_per_minute": 50000}}]
        self.assertEqual(tg.stop(), 0)
        tg = self.start(pol)
        self.assertEqual(self.chat(tg, m).status, 200)   # 30,000 + input
        # Asks for 19,000 (which fits beside the 30,000), uses 30,000.
        self.assertEqual(self.chat(tg, m, max_tokens=19000).status, 200)
        self.assertEqual(tg.ledger.wait_count(4, "status = 'ok'"), 4)
        self.assertEqual(tg.stop(), 0)
        tg = self.start(pol)
        r = self.chat(tg, m)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["reason"], "rate_limit_tokens")

    def test_reload_that_edits_the_cap_keeps_the_spend(self):
        pol = [{"name": "team-budget", "window": "day",
                "match": {"team": "x"}, "hard_cap_usd": "1.00"}]
        tg = self.start(pol)
        m = new_marker()
        for _ in range(2):
            self.assertEqual(self.chat(tg, m, [("Team", "x")]).status, 200)
        # Lower the cap and rename the policy: the $0.60 stays spent.
        pol = [{"name": "renamed", "window": "day",
                "match": {"team": "x"}, "hard_cap_usd": "0.80"}]
        off = len(tg.log())
        tg.write_config(tglib.make_config(
            tglib.std_upstreams(self.fp.port),
            extra={"prices": "test-prices.yaml", "policies": pol}))
        tg.hup()
        self.assertTrue(tg.wait_log(r"configuration reloaded", start=off))
        r = self.chat(tg, m, [("Team", "x")])
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["policy"], "renamed")
        self.assertEqual(r.json()["tollgate"]["spent_usd"], 0.6)
        r = self.chat(tg, m, [("Team", "x")], max_tokens=20000)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-budget-remaining-usd"),
                         "0.000000000")

    def test_reload_counts_calls_not_yet_written(self):
        """A budget a reload brings is rebuilt from the ledger, and a call
        settled a moment ago may not be in the file yet (the writer lets
        rows gather, and while SQLite fails they wait in memory). Held
        out of the file by a write lock, two calls' $0.60 must still count
        against the new cap."""
        tg = self.start([])
        m = new_marker()
        self.assertEqual(self.chat(tg, m, [("Team", "x")]).status, 200)
        tg.ledger.wait_count(1, "status = 'ok'")
        lockc = sqlite3.connect(tg.ledger.path, timeout=10,
                                isolation_level=None)
        try:
            lockc.execute("BEGIN IMMEDIATE")
            for _ in range(2):
                self.assertEqual(
                    self.chat(tg, m, [("Team", "x")]).status, 200)
            pol = [{"name": "team-budget", "window": "day",
                    "match": {"team": "x"}, "hard_cap_usd": "1.10"}]
            self.reload_with(tg, pol)
            r = self.chat(tg, m, [("Team", "x")])
            self.assertEqual(r.status, 429, r)
            self.assertEqual(r.json()["tollgate"]["spent_usd"], 0.9)
        finally:
            lockc.execute("ROLLBACK")
            lockc.close()
        tg.ledger.wait_count(3, "status = 'ok'")
        self.assertEqual(self.chat(tg, m, [("Team", "x")],
                                   max_tokens=10000).status, 200)

    def test_cap_reached_mid_stream_ends_it(self):
        """A provider that ignores max_tokens: the stream costs more than
        its reservation; once the budget has no room left for what it has
        cost, it is ended with OpenAI's in-stream quota error."""
        tg = self.start([{"name": "tight", "window": "day",
                          "hard_cap_usd": "0.40"}])
        m = new_marker()
        body = chat_body(m, max_tokens=10000, extra={"stream": True})
        r = self.call(tg.port, "POST", "/v1/chat/completions", body,
                      [JSON_CT, ("x-fake-events", "200"),
                       ("x-fake-event-bytes", "6000"),
                       ("x-fake-event-tokens", "1500"),
                       ("x-fake-pace-ms", "5")], timeout=30)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.complete)
        events = ledgerlib.sse_events(r.body)
        last = events[-1][1]
        self.assertEqual(last["error"]["code"], "insufficient_quota")
        self.assertIn("while this call was streaming", last["error"]["message"])
        # 200 events would cost $3.00; it was cut near the $0.40 cap.
        self.assertLess(len(events), 80, len(events))
        self.assertEqual(tg.ledger.wait_count(
            1, "status = 'killed' AND refusal_reason = 'hard_cap'"), 1)
        row = tg.ledger.rows()[0]
        self.assertGreater(row["cost_nusd"], 300000000)
        self.assertLess(row["cost_nusd"], 700000000)
        # Nothing is left for another call.
        r = self.chat(tg, m, max_tokens=100, fake=())
        self.assertEqual(r.status, 429, r)

    # ------------------------------------------------------------------
    # Kill switches in the config stop calls in flight at a reload.

    def reload_with(self, tg, policies):
        off = len(tg.log())
        tg.write_config(tglib.make_config(
            tglib.std_upstreams(self.fp.port),
            extra={"prices": "test-prices.yaml", "policies": policies}))
        tg.hup()
        self.assertTrue(tg.wait_log(r"configuration reloaded", start=off))
        return time.monotonic()

    def stream_then_kill(self, path, body, hdrs):
        """Start a 10 s stream, kill its policy by a reload once it has
        started, and return (response, seconds from reload to its end)."""
        pol = [{"name": "streams", "match": {"team": "s"},
                "window": "day", "hard_cap_usd": "5"}]
        tg = self.start(pol)
        m = new_marker()
        body = body.replace(b"MARK", m.encode())
        c = Caller(self, tg.port, path, body,
                   [JSON_CT, ("X-Tollgate-Team", "s"),
                    ("x-fake-events", "50"), ("x-fake-pace-ms", "200")]
                   + hdrs)
        c.start()
        self.assertTrue(tglib.wait_until(lambda: self.reached(m), 10))
        time.sleep(0.5)
        pol[0]["killed"] = True
        pol[0]["kill_reason"] = "runaway loop"
        t0 = self.reload_with(tg, pol)
        c.join(15)
        took = time.monotonic() - t0
        self.assertIsNotNone(c.resp, c.error)
        # New calls are refused at once.
        r = self.chat(tg, m, [("Team", "s")])
        self.assertEqual(r.status, 403, r)
        self.assertEqual(self.reached(m), 1)
        self.assertEqual(tg.ledger.wait_count(
            1, "status = 'killed' AND refusal_reason = 'killed'"), 1)
        row = tg.ledger.rows("status = 'killed'")[0]
        self.assertGreater(row["cost_nusd"], 0)
        self.assertEqual(row["usage_source"], "estimated")
        return c.resp, took

    def test_kill_ends_openai_stream_with_error_frame(self):
        body = chat_body("MARK", extra={"stream": True})
        r, took = self.stream_then_kill("/v1/chat/completions", body, [])
        self.assertLess(took, 3, "the stream was not stopped promptly")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.complete, "the stream did not end cleanly")
        events = ledgerlib.sse_events(r.body)
        self.assertGreater(len(events), 2)
        last = events[-1][1]
        self.assertEqual(last["error"]["code"], "killed")
        self.assertIn("runaway loop", last["error"]["message"])
        self.assertNotIn(b"[DONE]", r.body)

    def test_kill_ends_anthropic_stream_with_error_event(self):
        body = json.dumps({"model": "claude-test", "max_tokens": 1000,
                           "stream": True, "metadata": {"user_id": "MARK"},
                           "messages": [{"role": "user", "content": "x"}]})
        r, took = self.stream_then_kill(
            "/v1/messages", body.encode(),
            [("anthropic-version", "2023-06-01")])
        self.assertLess(took, 3)
        self.assertTrue(r.complete)
        events = ledgerlib.sse_events(r.body)
        self.assertEqual(events[-1][0], "error")
        err = events[-1][1]
        self.assertEqual(err["type"], "error")
        self.assertIn("runaway loop", err["error"]["message"])

    def test_kill_cuts_gemini_stream(self):
        body = json.dumps({"contents": [{"parts": [{"text": "MARK"}]}],
                           "generationConfig": {"maxOutputTokens": 1000}})
        r, took = self.stream_then_kill(
            "/v1beta/models/gemini-test:streamGenerateContent?alt=sse",
            body.encode(), [])
        self.assertLess(took, 3)
        self.assertFalse(r.complete, "a cut Gemini stream must not look "
                         "complete")

    # ------------------------------------------------------------------
    # Edge cases: kills while the row is written, reloads while calls
    # run, streams cut mid-event, ambiguous bodies, huge bounds.

    def test_kill_while_reserving_keeps_its_message(self):
        pol = [{"name": "streams", "match": {"team": "s"},
                "window": "day", "hard_cap_usd": "5"}]
        tg = self.start(pol)
        self.assertEqual(
            self.chat(tg, new_marker(), [("Team", "s")]).status, 200)
        con = sqlite3.connect(tg.ledger.path, isolation_level=None,
                              timeout=10)
        con.execute("BEGIN EXCLUSIVE")  # the writer waits
        m = new_marker()
        # A request id of the client's own: the writer must say it is
        # unused before the call is reserved, so the call waits on it.
        c = Caller(self, tg.port, "/v1/chat/completions", chat_body(m),
                   [JSON_CT, ("X-Tollgate-Team", "s"),
                    ("X-Tollgate-Request-Id", "held-" + m)])
        c.start()
        time.sleep(0.5)
        pol[0]["killed"] = True
        pol[0]["kill_reason"] = "runaway loop"
        self.reload_with(tg, pol)
        for _ in range(3):
            self.admin_get(tg, "/v1/budgets")
        con.execute("COMMIT")
        con.close()
        c.join(20)
        self.assertIsNotNone(c.resp, c.error)
        self.assertEqual(c.resp.status, 403, c.resp)
        self.assertEqual(c.resp.json()["error"]["message"],
                         "tollgate: calls matching policy 'streams' are "
                         "stopped: runaway loop")
        self.assertEqual(c.resp.json()["tollgate"]["reason"], "killed")
        self.assertEqual(self.reached(m), 0)

    def test_reload_adding_a_budget_counts_calls_in_flight(self):
        tg = self.start([])
        m = new_marker()
        c = Caller(self, tg.port, "/v1/chat/completions", chat_body(m),
                   [JSON_CT, ("X-Tollgate-Team", "x"), FULL,
                    ("x-fake-delay-ms", "1500")])
        c.start()
        self.assertTrue(tglib.wait_until(lambda: self.reached(m), 10))
        self.reload_with(tg, [{"name": "all-time", "window": "total",
                               "match": {"team": "x"},
                               "hard_cap_usd": "0.50",
                               "rate_limit": {"concurrent": 1}}])
        # The running call holds the new budget and the concurrency slot.
        b = self.admin_get(tg, "/v1/budgets")["budgets"]
        self.assertEqual(b[0]["reserved_nusd"], WORST, b)
        r = self.chat(tg, m, [("Team", "x")], max_tokens=1000, fake=())
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["reason"], "concurrency")
        c.join(20)
        self.assertEqual(c.resp.status, 200, c.resp)
        b = self.admin_get(tg, "/v1/budgets")["budgets"]
        self.assertEqual((b[0]["spent_nusd"], b[0]["reserved_nusd"]),
                         (WORST, 0), b)

    def assert_whole_events(self, r):
        """Every event the client got is whole JSON; a stream that was
        cut mid-event is not complete (the SDK sees a broken stream, not
        a half event)."""
        text = r.body.decode("utf-8", "replace")
        blocks = text.split("\n\n")
        if not r.complete:
            blocks = blocks[:-1]  # the cut-off tail
        for block in blocks:
            data = [ln[5:].lstrip() for ln in block.split("\n")
                    if ln.startswith("data:")]
            if data:
                json.loads("\n".join(data))
        if r.complete:
            self.assertIn("event: error", blocks[-2] if blocks[-1] == ""
                          else blocks[-1])

    def test_cap_mid_stream_never_follows_half_an_event(self):
        """A provider that sends its events coalesced (as TLS and HTTP/2
        often deliver them) and ignores max_tokens."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        self.addCleanup(srv.close)
        port = srv.getsockname()[1]
        ev = ['event: message_start\ndata: {"type":"message_start",'
              '"message":{"id":"m","type":"message","role":"assistant",'
              '"model":"claude-test","content":[],"usage":'
              '{"input_tokens":1,"output_tokens":1}}}\n\n',
              'event: content_block_start\ndata: {"type":'
              '"content_block_start","index":0,"content_block":'
              '{"type":"text","text":""}}\n\n']
        for _ in range(300):
            ev.append('event: content_block_delta\ndata: {"type":'
                      '"content_block_delta","index":0,"delta":{"type":'
                      '"text_delta","text":"%s"}}\n\n' % ("tok " * 1500))
        payload = "".join(ev).encode()

        def serve():
            c, _ = srv.accept()
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += c.recv(65536)
            head, _, rest = buf.partition(b"\r\n\r\n")
            n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                     if ln.lower().startswith(b"content-length")][0])
            while len(rest) < n:
                rest += c.recv(65536)
            try:
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: "
                          b"text/event-stream\r\nconnection: close\r\n\r\n"
                          + payload)
            except OSError:
                pass
            time.sleep(1)
            c.close()
        threading.Thread(target=serve, daemon=True).start()
        ups = tglib.std_upstreams(self.fp.port)
        ups["anthropic"]["base_url"] = "http://127.0.0.1:%d" % port
        tg = self.start([{"name": "tight", "window": "day",
                          "hard_cap_usd": "0.40"}], upstreams=ups)
        body = json.dumps({"model": "claude-test", "max_tokens": 10000,
                           "stream": True,
                           "messages": [{"role": "user", "content": "x"}]})
        r = self.call(tg.port, "POST", "/v1/messages", body.encode(),
                      [JSON_CT, ("anthropic-version", "2023-06-01")],
                      timeout=30)
        self.assertEqual(r.status, 200)
        self.assert_whole_events(r)
        self.assertEqual(tg.ledger.wait_count(
            1, "status = 'killed' AND refusal_reason = 'hard_cap'"), 1)

    def test_ambiguous_bounds_are_refused_with_or_without_a_policy(self):
        tg = self.start([{"name": "bounds", "match": {"team": "b"},
                          "max_output_tokens": 2000}])
        m = new_marker()
        cases = [
            ("/v1/messages", '{"model":"claude-test","max_tokens":100,'
             '"metadata":{"user_id":"%s"},"messages":[],"max_tokens":50000}'),
            ("/v1/messages", '{"model":"claude-test","max\\u005ftokens":'
             '50000,"metadata":{"user_id":"%s"},"messages":[]}'),
            ("/v1/chat/completions", '{"model":"test-model","user":"%s",'
             '"n":1,"messages":[],"n":8}'),
            ("/v1beta/models/gemini-test:generateContent",
             '{"contents":[{"parts":[{"text":"%s"}]}],"generation_config":'
             '{"max_output_tokens":50000}}'),
        ]
        for path, body in cases:
            r = self.call(tg.port, "POST", path, (body % m).encode(),
                          [JSON_CT, ("anthropic-version", "2023-06-01"),
                           ("X-Tollgate-Team", "b")])
            self.assertEqual(r.status, 400, (body, r))
            self.assertIn("the request body", r.body.decode())
        self.assertEqual(self.reached(m), 0)
        self.assertEqual(tg.ledger.wait_count(
            4, "refusal_reason = 'bad_body'"), 4)
        # Without a policy over the call, the body is refused all the same:
        # the provider would read it otherwise than tollgate.
        r = self.call(tg.port, "POST", "/v1/messages",
                      (cases[0][1] % m).encode(),
                      [JSON_CT, ("anthropic-version", "2023-06-01")])
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.reached(m), 0)

    def test_huge_bounds_reserve_at_most_the_model_ceiling(self):
        tg = self.start([{"name": "watch", "window": "day",
                          "alert_at_usd": "40"}])
        m = new_marker()
        c = Caller(self, tg.port, "/v1/chat/completions",
                   chat_body(m, max_tokens=2 ** 31 - 1),
                   [JSON_CT, ("x-fake-delay-ms", "1000")])
        c.start()
        self.assertTrue(tglib.wait_until(lambda: self.reached(m), 10))
        self.assertEqual(self.chat(tg, m, max_tokens=2 ** 31 - 1,
                                   fake=()).status, 200)
        c.join(20)
        self.assertEqual(c.resp.status, 200, c.resp)
        rows = tg.ledger.rows()
        self.assertEqual([x["reserved_nusd"] for x in rows],
                         [WORST, WORST])

    # ------------------------------------------------------------------
    # Runtime kills and breakers.

    def test_api_kill_stops_a_live_stream_and_new_calls(self):
        tg = self.start([])
        m = new_marker()
        c = Caller(self, tg.port, "/v1/chat/completions",
                   chat_body(m, extra={"stream": True}),
                   [JSON_CT, ("X-Tollgate-Agent-Class", "looper"),
                    ("x-fake-events", "100"), ("x-fake-pace-ms", "100")])
        c.start()
        self.assertTrue(tglib.wait_until(lambda: self.reached(m), 10))
        time.sleep(0.3)
        t0 = time.monotonic()
        r = self.admin(tg, "POST", "/v1/kills",
                       {"match": {"agent_class": "looper"},
                        "reason": "retry storm", "ttl": "2h"})
        self.assertEqual(r.status, 201, r)
        kid = r.json()["id"]
        c.join(15)
        took = time.monotonic() - t0
        self.assertIsNotNone(c.resp, c.error)
        self.assertLess(took, 1.5, "the stream was not stopped within 1 s")
        last = ledgerlib.sse_events(c.resp.body)[-1][1]
        self.assertEqual(last["error"]["code"], "killed")
        self.assertIn("retry storm", last["error"]["message"])
        # New calls at once; other agent classes are not touched.
        r = self.chat(tg, m, [("Agent-Class", "looper")])
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.header("x-should-retry"), "false")
        self.assertEqual(r.json()["tollgate"]["kill_id"], kid)
        self.assertEqual(self.chat(tg, m, [("Agent-Class", "other")]).status,
                         200)
        self.assertEqual(self.reached(m), 2)
        # An alert says so; DELETE lifts the kill.
        got = tglib.wait_until(
            lambda: self.admin_get(tg, "/v1/alerts")["alerts"], 10)
        self.assertEqual(got[0]["kind"], "kill")
        self.assertEqual(self.admin(tg, "DELETE", "/v1/kills/" + kid).status,
                         200)
        self.assertEqual(self.chat(tg, m, [("Agent-Class", "looper")]).status,
                         200)
        rows = tg.ledger.rows("refusal_reason = 'killed'")
        self.assertEqual(sorted(x["status"] for x in rows),
                         ["killed", "refused"])

    def test_loop_breaker_trips_on_the_nth_identical_request(self):
        tg = self.start([{"name": "agents", "match": {"agent_class": "bot"},
                          "breakers": {"loop": {"count": 3, "within": "60s",
                                                "kill_for": "10m"}}}])
        m = new_marker()
        tags = [("Agent-Class", "bot"), ("Intent", "ticket-1")]
        for _ in range(2):
            self.assertEqual(self.chat(tg, m, tags, fake=()).status, 200)
        # A different body does not count towards the loop.
        self.assertEqual(self.chat(tg, m, tags, max_tokens=99,
                                   fake=()).status, 200)
        r = self.chat(tg, m, tags, fake=())
        self.assertEqual(r.status, 403, r)
        self.assertIn("loop", r.json()["error"]["message"])
        self.assertEqual(self.reached(m), 3)
        # The kill covers the intent, whatever the body; not other intents.
        r = self.chat(tg, m, tags, max_tokens=5, fake=())
        self.assertEqual(r.status, 403, r)
        self.assertEqual(self.chat(tg, m, [("Agent-Class", "bot"),
                                           ("Intent", "ticket-2")],
                                   fake=()).status, 200)
        kills = self.admin_get(tg, "/v1/kills")["kills"]
        self.assertEqual(len(kills), 1, kills)
        self.assertEqual(kills[0]["source"], "breaker:agents:loop")
        alerts = tglib.wait_until(
            lambda: self.admin_get(tg, "/v1/alerts")["alerts"], 10)
        self.assertEqual((alerts[0]["kind"], alerts[0]["policy"]),
                         ("breaker", "agents"))

    def test_velocity_breaker(self):
        tg = self.start([{"name": "fast", "match": {"team": "v"},
                          "breakers": {"velocity": {"usd_per_minute": "0.50",
                                                    "kill_for": "5m"}}}])
        m = new_marker()
        for _ in range(2):
            self.assertEqual(self.chat(tg, m, [("Team", "v")]).status, 200)
        r = self.chat(tg, m, [("Team", "v")])
        self.assertEqual(r.status, 403, r)
        self.assertIn("velocity", r.json()["error"]["message"])

    def test_error_spike_breaker(self):
        tg = self.start([{"name": "flaky", "match": {"team": "e"},
                          "breakers": {"error_spike": {
                              "ratio": "0.5", "min_spend_usd": "0.000001",
                              "window": "5m", "min_calls": 4,
                              "kill_for": "5m"}}}])
        m = new_marker()
        for fake in ((), (), (("x-fake-status", "500"),),
                     (("x-fake-status", "500"),)):
            self.chat(tg, m, [("Team", "e")], fake=fake)
        r = self.chat(tg, m, [("Team", "e")], fake=())
        self.assertEqual(r.status, 403, r)
        self.assertIn("error", r.json()["error"]["message"])
        self.assertEqual(self.reached(m), 4)

    def hold(self, tg, m, tags, max_tokens=30000):
        hdrs = [JSON_CT] + [("X-Tollgate-" + k, v) for k, v in tags] + \
            [("x-fake-delay-ms", "8000")]
        c = Caller(self, tg.port, "/v1/chat/completions",
                   chat_body(m, max_tokens=max_tokens), hdrs)
        c.start()
        return c

    def test_kills_that_set_off_more_kills(self):
        """Stopping calls charges them, which trips a velocity breaker,
        whose kill stops more calls: each wave runs from its own loop
        turn, never inside the stop that caused it."""
        tg = self.start([{"name": "vel", "match": {"team": "v"},
                          "per": ["tenant"],
                          "breakers": {"velocity": {"usd_per_minute": "0.01",
                                                    "kill_for": "10m"}}}])
        m = new_marker()
        tags = [("Team", "v"), ("Tenant", "t1"), ("Agent-Class", "looper")]
        cs = [self.hold(tg, m, tags) for _ in range(3)]
        cs.append(self.hold(tg, m, [("Team", "v"), ("Tenant", "t1"),
                                    ("Agent-Class", "bystander")]))
        self.assertTrue(tglib.wait_until(
            lambda: len(tg.in_flight()) == 4, 10), tg.in_flight())
        time.sleep(0.2)  # forwarded, waiting for the provider
        r = self.admin(tg, "POST", "/v1/kills",
                       {"match": {"agent_class": "looper"}, "ttl": "1h"})
        self.assertEqual(r.status, 201, r)
        for c in cs:
            c.join(15)
            self.assertIsNotNone(c.resp, c.error)
            self.assertEqual(c.resp.status, 403, c.resp)
        self.assertTrue(tg.alive(), tg.stderr()[-4000:])
        kills = self.admin_get(tg, "/v1/kills")["kills"]
        self.assertEqual(sorted(k["source"] for k in kills),
                         ["api", "breaker:vel:velocity"])

    def test_loop_trip_from_the_proxy_alone_stops_held_calls(self):
        tg = self.start([{"name": "p", "match": {"team": "v"},
                          "per": ["tenant"],
                          "breakers": {
                              "loop": {"count": 2, "within": "60s",
                                       "kill_for": "10m"},
                              "velocity": {"usd_per_minute": "0.01",
                                           "kill_for": "10m"}}}])
        m = new_marker()
        tags = [("Team", "v"), ("Tenant", "t1"), ("Intent", "x")]
        cs = [self.hold(tg, m, tags, max_tokens=1000 + i) for i in range(3)]
        self.assertTrue(tglib.wait_until(
            lambda: len(tg.in_flight()) == 3, 10), tg.in_flight())
        time.sleep(0.2)
        self.assertEqual(self.chat(tg, m, tags, max_tokens=5,
                                   fake=()).status, 200)
        self.assertEqual(self.chat(tg, m, tags, max_tokens=5,
                                   fake=()).status, 403)
        # (fakeprov may answer some held calls first; what matters is
        # that stopping the rest, and the trips that sets off, is safe.)
        for c in cs:
            c.join(15)
            self.assertIn(c.resp.status, (200, 403), c.resp)
        self.assertTrue(tg.alive(), tg.stderr()[-4000:])
        kills = self.admin_get(tg, "/v1/kills")["kills"]
        self.assertIn("breaker:p:loop", [k["source"] for k in kills])

    def test_tag_values_cannot_be_globs(self):
        tg = self.start([{"name": "agents", "match": {"agent_class": "bot"},
                          "breakers": {"loop": {"count": 3, "within": "60s",
                                                "kill_for": "10m"}}}])
        m = new_marker()
        r = self.chat(tg, m, [("Agent-Class", "bot"), ("Intent", "*")],
                      fake=())
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["code"], "bad_tag")
        self.assertEqual(self.reached(m), 0)

    def test_refused_calls_do_not_feed_the_loop_breaker(self):
        tg = self.start([{"name": "agents", "match": {"agent_class": "bot"},
                          "per": ["tenant"], "window": "day",
                          "hard_cap_usd": "0.000001",
                          "breakers": {"loop": {"count": 2, "within": "60s",
                                                "kill_for": "10m"}}}])
        m = new_marker()
        for i in range(10):
            tags = [("Agent-Class", "bot"), ("Tenant", "poor"),
                    ("Intent", "i-%d" % i)]
            for _ in range(2):
                self.assertEqual(self.chat(tg, m, tags, fake=()).status,
                                 429)
        self.assertEqual(self.reached(m), 0)
        self.assertEqual(self.admin_get(tg, "/v1/kills")["kills"], [])

    def test_breakers_of_policies_over_one_scope_are_apart(self):
        tg = self.start([
            {"name": "try", "match": {"team": "v"}, "shadow": True,
             "breakers": {"velocity": {"usd_per_minute": "0.01",
                                       "kill_for": "10m"}}},
            {"name": "real", "match": {"team": "v"},
             "breakers": {"velocity": {"usd_per_minute": "0.50",
                                       "kill_for": "5m"}}},
            {"name": "a", "match": {"team": "l"},
             "breakers": {"loop": {"count": 3, "within": "60s",
                                   "kill_for": "10m"}}},
            {"name": "b", "match": {"team": "l"},
             "breakers": {"loop": {"count": 4, "within": "60s",
                                   "kill_for": "10m"}}}])
        m = new_marker()
        for _ in range(2):
            self.assertEqual(self.chat(tg, m, [("Team", "v")]).status, 200)
        self.assertTrue(tg.wait_log(r"shadow policy 'try' would trip"))
        r = self.chat(tg, m, [("Team", "v")])
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["tollgate"]["reason"], "killed")
        st = [self.chat(tg, m, [("Team", "l"), ("Intent", "x")],
                        fake=()).status for _ in range(3)]
        self.assertEqual(st, [200, 200, 403])

    def test_caller_errors_do_not_trip_error_spike(self):
        tg = self.start([{"name": "flaky", "match": {"team": "e"},
                          "breakers": {"error_spike": {
                              "ratio": "0.5", "min_spend_usd": "0.000001",
                              "window": "5m", "min_calls": 4,
                              "kill_for": "5m"}}}])
        m = new_marker()
        for fake in ((), (), (("x-fake-status", "400"),),
                     (("x-fake-status", "400"),)):
            self.chat(tg, m, [("Team", "e")], fake=fake)
        self.assertEqual(self.chat(tg, m, [("Team", "e")], fake=()).status,
                         200)

    def test_config_errors_name_the_line(self):
        text = tglib.make_config(tglib.std_upstreams(1), extra={
            "policies": [{"name": "p", "hard_cap_usd": "ten",
                          "window": "day"}]})
        rc, out, err, path = tglib.run_check(text, self.tmp)
        self.assertNotEqual(rc, 0)
        self.assertRegex(out + err, r"check\.yaml:\d+:\d+: .*hard_cap_usd")


if __name__ == "__main__":
    tglib.main()
