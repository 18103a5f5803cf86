#!/usr/bin/env python3
"""POST /v1/usage: costs that are not LLM calls (a search API, a tool,
compute minutes), recorded through the real binary: a row each, counted
once per id, against the budgets (a cap reached by them refuses the next
LLM call), in alerts, spend, the CSV export and the metrics, priced from
the price file's external: table or given as an exact amount; kept across
a restart; every bad field named."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

TOKEN = "adm-CANARY-5d1e0b7a93c24f16"
TOKEN_ENV = "TG_TEST_ADMIN_TOKEN"
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
EXTERNAL = ("\nexternal:\n"
            "  serpapi:\n"
            "    search: 0.005\n"
            "  e2b:\n"
            "    compute_minute: 0.000800001\n")
CAP = {"name": "t1-day", "match": {"team": "t1"}, "window": "day",
       "hard_cap_usd": "0.05", "alert_at_percent": [50]}


class UsageTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(ledgerlib.PRICES_PATH) as f:
            text = f.read()
        self.prices_path = os.path.join(self.tmp, "prices.yaml")
        with open(self.prices_path, "w") as f:
            f.write(text + EXTERNAL)

    def start_tg(self, name="tollgate"):
        ex = ledgerlib.metering_extra(prices=self.prices_path)
        ex["admin"] = {"listen": "127.0.0.1:0", "token_env": TOKEN_ENV}
        ex["policies"] = [CAP]
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex, name=name, env={TOKEN_ENV: TOKEN})
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        self.tg = tg
        return tg

    def admin(self, method, path, body=None, token=TOKEN):
        hdrs = [("Host", "127.0.0.1:%d" % self.tg.admin_port)]
        if token is not None:
            hdrs.append(("Authorization", "Bearer " + token))
        if body is not None:
            hdrs.append(JSON_CT)
        data = (body if isinstance(body, (bytes, str)) else
                json.dumps(body).encode()) if body is not None else b""
        raw = tglib.build_request(method, path, data, hdrs, host=None)
        return self.call(self.tg.admin_port, method, path, raw=raw)

    def usage(self, body, status=201):
        r = self.admin("POST", "/v1/usage", body)
        self.assertEqual(r.status, status, r)
        return r.json()

    def llm(self, team):
        return self.call(self.tg.port, "POST", "/v1/chat/completions",
                         tglib.openai_chat(new_marker()),
                         [JSON_CT, ("X-Tollgate-Team", team)])

    def row(self, rid):
        return self.ledger.row(rid)

    def test_external_cost_reaches_the_cap_and_refuses_the_next_call(self):
        self.start_tg()
        doc = self.usage({"id": "ext-1", "source": "serpapi",
                          "cost_usd": "0.06", "team": "t1",
                          "intent": "research-42"})
        self.assertEqual(doc, {"id": "ext-1", "cost_nusd": 60000000,
                               "cost_usd": 0.06, "duplicate": False,
                               "recorded": True})
        # 201 "recorded": the row is in the file already.
        row = self.row("ext-1")
        self.assertEqual((row["provider"], row["endpoint"], row["status"],
                          row["cost_nusd"], row["team"], row["intent"],
                          row["price_version"], row["units"]),
                         ("serpapi", "external", "ok", 60000000, "t1",
                          "research-42", "given", 0))
        since = self.fp.mark()
        r = self.llm("t1")
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["reason"], "hard_cap")
        self.assertEqual(self.fp.mark(), since, "a refused call was sent")
        # Another team is not touched.
        self.assertEqual(self.llm("t2").status, 200)
        # Spend, CSV, budgets, alerts and metrics have it.
        st, spend = self.tg.admin_get(
            "/v1/spend?group_by=provider&team=t1", token=TOKEN)
        self.assertEqual(st, 200, spend)
        got = {g["provider"]: g["cost_nusd"] for g in spend["rows"]}
        self.assertEqual(got.get("serpapi"), 60000000, spend)
        r = self.admin("GET", "/v1/spend?group_by=provider&format=csv")
        self.assertEqual(r.status, 200, r)
        self.assertIn("serpapi", r.body.decode())
        st, b = self.tg.admin_get("/v1/budgets", token=TOKEN)
        bud = [x for x in b["budgets"] if x["policy"] == "t1-day"][0]
        self.assertEqual(bud["spent_nusd"], 60000000, bud)
        self.assertTrue(tglib.wait_until(lambda: self.ledger.scalar(
            "SELECT count(*) FROM alerts WHERE policy = 't1-day'") >= 1,
            10), "the 50% alert did not fire")
        m = self.admin("GET", "/metrics").body.decode()
        self.assertIn('tollgate_external_costs_total{source="serpapi"} 1', m)
        self.assertIn('tollgate_external_cost_nusd_total{source="serpapi"} '
                      '60000000', m)
        # Kept across a restart: the budget is rebuilt with it.
        self.assertEqual(self.tg.stop(), 0)
        self.start_tg(name="tollgate2")
        self.assertEqual(self.llm("t1").status, 429)

    def test_same_id_counts_once(self):
        self.start_tg()
        self.usage({"id": "dup-1", "source": "serpapi", "cost_usd": "0.01",
                    "team": "t1"})
        doc = self.usage({"id": "dup-1", "source": "serpapi",
                          "cost_usd": "0.01", "team": "t1"}, status=200)
        self.assertEqual(doc, {"id": "dup-1", "duplicate": True})
        # Two at once with one id: one is recorded, the other a duplicate.
        res = []

        def post():
            r = self.admin("POST", "/v1/usage", {
                "id": "dup-2", "source": "serpapi", "cost_usd": "0.01",
                "team": "t1"})
            res.append(r.status)
        ts = [threading.Thread(target=post) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        # One records it; the others are duplicates, or told to retry
        # while it is being recorded (409), never counted again.
        self.assertEqual(res.count(201), 1, res)
        self.assertEqual(len([x for x in res if x in (200, 409)]), 3, res)
        st, b = self.tg.admin_get("/v1/budgets", token=TOKEN)
        bud = [x for x in b["budgets"] if x["policy"] == "t1-day"][0]
        self.assertEqual(bud["spent_nusd"], 20000000, bud)
        self.assertEqual(self.ledger.count("endpoint = 'external'"), 2)

    def test_a_locked_ledger_answers_in_time_and_counts_once(self):
        # The file is write-locked: the answer does not wait for it past
        # 2 s (503, retry), a retry while the first is still being
        # recorded is 409, and once the lock goes the cost is recorded
        # once; the next retry is a duplicate.
        self.start_tg()
        lockc = sqlite3.connect(self.ledger.path, timeout=10,
                                isolation_level=None)
        body = {"id": "lock-1", "source": "serpapi", "cost_usd": "0.01",
                "team": "t1"}
        try:
            lockc.execute("BEGIN IMMEDIATE")
            t0 = time.monotonic()
            r = self.admin("POST", "/v1/usage", body)
            self.assertEqual(r.status, 503, r)
            self.assertLess(time.monotonic() - t0, 5)
            r = self.admin("POST", "/v1/usage", body)
            self.assertEqual(r.status, 409, r)
            self.assertEqual(r.json()["parameter"], "id")
        finally:
            lockc.execute("ROLLBACK")
            lockc.close()
        self.assertTrue(tglib.wait_until(
            lambda: self.row("lock-1") is not None and
            self.row("lock-1")["status"] == "ok", 30))
        self.assertTrue(tglib.wait_until(lambda: self.admin(
            "POST", "/v1/usage", body).status == 200, 10))
        st, b = self.tg.admin_get("/v1/budgets", token=TOKEN)
        bud = [x for x in b["budgets"] if x["policy"] == "t1-day"][0]
        self.assertEqual(bud["spent_nusd"], 10000000, bud)

    def test_no_cost_can_wrap_a_budget(self):
        # At most $1,000,000 a cost, however it is given; ten of them
        # leave the cap holding (a counter that wrapped would read as room).
        self.start_tg()
        self.assertEqual(self.usage({
            "id": "big-x", "source": "serpapi", "cost_usd": "1000000.01",
            "team": "t1"}, status=400)["parameter"], "cost_usd")
        self.assertEqual(self.usage({
            "id": "big-u", "source": "serpapi", "unit": "search",
            "units": 1000000000, "team": "t1"}, status=400)["parameter"],
            "units")
        for i in range(10):
            doc = self.usage({"id": "big-%d" % i, "source": "serpapi",
                              "cost_usd": "1000000", "team": "t1"})
            self.assertEqual(doc["cost_nusd"], 10**15)
        self.assertEqual(self.llm("t1").status, 429)
        st, b = self.tg.admin_get("/v1/budgets", token=TOKEN)
        bud = [x for x in b["budgets"] if x["policy"] == "t1-day"][0]
        self.assertEqual(bud["spent_nusd"], 10 * 10**15, bud)

    def test_units_priced_from_the_price_file(self):
        self.start_tg()
        doc = self.usage({"id": "u-1", "source": "serpapi", "unit": "search",
                          "units": 3, "team": "t9"})
        self.assertEqual(doc["cost_nusd"], 15000000, doc)
        row = self.row("u-1")
        self.assertEqual((row["model"], row["units"], row["cost_nusd"]),
                         ("search", 3, 15000000))
        self.assertEqual(row["price_version"], self.prices.version)
        # Nine decimals, exactly.
        doc = self.usage({"id": "u-2", "source": "e2b",
                          "unit": "compute_minute", "units": 1000000})
        self.assertEqual(doc["cost_nusd"], 800001000000, doc)

    def test_tollgate_usage_from_a_shell(self):
        # tollgate usage posts one cost to the running daemon: recorded,
        # then a duplicate (both exit 0); refused ones exit 1 with the
        # reason; bad flags exit 2. The token comes from the environment
        # and never reaches the output.
        self.start_tg()
        env = dict(os.environ, TOLLGATE_ADMIN_TOKEN=TOKEN)
        url = "http://127.0.0.1:%d" % self.tg.admin_port

        def run(*args):
            p = subprocess.run(
                [tglib.TOLLGATE_BIN, "usage", "--admin", url] + list(args),
                capture_output=True, text=True, timeout=30, env=env)
            self.assertNotIn(TOKEN, p.stdout + p.stderr)
            return p.returncode, p.stdout, p.stderr
        rc, out, err = run("--id", "sh-1", "--source", "serpapi",
                           "--unit", "search", "--units", "4",
                           "--team", "t1", "--intent", "nightly")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["cost_nusd"], 20000000)
        row = self.row("sh-1")
        self.assertEqual((row["team"], row["intent"], row["units"]),
                         ("t1", "nightly", 4))
        rc, out, err = run("--id", "sh-1", "--source", "serpapi",
                           "--cost-usd", "9")
        self.assertEqual(rc, 0, err)
        self.assertTrue(json.loads(out)["duplicate"])
        rc, out, err = run("--id", "sh-2", "--source", "serpapi",
                           "--unit", "nothing", "--units", "1")
        self.assertEqual(rc, 1)
        self.assertIn("no price for unit 'nothing'", err)
        rc, out, err = run("--source", "serpapi", "--cost-usd", "1")
        self.assertEqual(rc, 2)
        rc, out, err = run("--id", "x", "--source", "s", "--units", "1.5")
        self.assertEqual(rc, 2)
        self.assertEqual(self.ledger.count("endpoint = 'external'"), 1)

    def test_bad_requests_are_named(self):
        self.start_tg()
        cases = [
            ({"id": "b", "source": "serpapi", "cost_usd": 0.015},
             "cost_usd"),
            ({"id": "b", "source": "serpapi", "cost_usd": "-1"}, "cost_usd"),
            ({"id": "b", "source": "serpapi", "cost_usd": "1e3"},
             "cost_usd"),
            ({"id": "b", "source": "serpapi", "cost_usd": "0.0000000001"},
             "cost_usd"),
            ({"id": "b", "source": "serpapi"}, "cost_usd"),
            ({"id": "b", "source": "serpapi", "cost_usd": "1",
              "unit": "search", "units": 2}, "cost_usd"),
            ({"id": "b", "source": "serpapi", "units": 2}, "unit"),
            ({"id": "b", "source": "serpapi", "unit": "search",
              "units": 1.5}, "units"),
            ({"id": "b", "source": "serpapi", "unit": "search",
              "units": -2}, "units"),
            ({"id": "b", "source": "serpapi", "unit": "page",
              "units": 2}, "unit"),
            ({"source": "serpapi", "cost_usd": "1"}, "id"),
            ({"id": "has space", "source": "serpapi", "cost_usd": "1"},
             "id"),
            ({"id": "b", "source": "SerpAPI", "cost_usd": "1"}, "source"),
            ({"id": "b", "source": "serpapi", "cost_usd": "1",
              "team": "a b"}, "team"),
            ({"id": "b", "source": "serpapi", "cost_usd": "1",
              "price": "1"}, "price"),
        ]
        for body, param in cases:
            with self.subTest(body=body):
                doc = self.usage(body, status=400)
                self.assertEqual(doc.get("parameter"), param, doc)
        self.assertEqual(self.usage(b"{not json", status=400)["error"],
                         "the body is not JSON")
        self.assertEqual(self.admin("POST", "/v1/usage", {
            "id": "x", "source": "s", "cost_usd": "1"}, token=None).status,
            401)
        self.assertEqual(self.ledger.count("endpoint = 'external'"), 0)


if __name__ == "__main__":
    tglib.main()
