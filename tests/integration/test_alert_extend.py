# SPDX-License-Identifier: Apache-2.0
"""A threshold alert of a capped budget carries the request that raises
it, through the real binary: the webhook body's "extend" is a POST
/v1/budgets/extend whose scope is the one GET /v1/budgets shows for that
budget (per values and match patterns), asking for a tenth of the
configured cap, with "by" left empty; GET /v1/alerts shows the same body.
Sent with "by" empty it is refused; sent with "by" filled in it raises
the budget's cap. A kill's and a breaker's alert, even of the same
policy, carry "extend": null."""

import json
import os
import re
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

TOKEN = "adm-CANARY-5b0e93d1c7a24f68"
TOKEN_ENV = "TG_TEST_ADMIN_TOKEN"
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
POLICY = {"name": "researcher-daily",
          "match": {"agent_class": "researcher", "model": "gpt-4o*"},
          "per": ["tenant"], "window": "day", "hard_cap_usd": "5",
          "alert_at_usd": ["0.000000001"],
          "breakers": {"loop": {"count": 2, "within": "60s",
                                "kill_for": "10m"}}}


class AlertExtendTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.rcv = tglib.WebhookReceiver()

    def tearDown(self):
        self.rcv.close()
        super().tearDown()

    def start_tg(self):
        ex = ledgerlib.metering_extra()
        ex["admin"] = {"listen": "127.0.0.1:0", "token_env": TOKEN_ENV}
        ex["policies"] = [POLICY]
        ex["alerts"] = {"webhooks": [{
            "url": "http://127.0.0.1:%d/hook" % self.rcv.port,
            "format": "json"}]}
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex, env={TOKEN_ENV: TOKEN})
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/ledger.db"), tg)
        self.tg = tg
        return tg

    def admin(self, method, path, body=None):
        hdrs = [("Host", "127.0.0.1:%d" % self.tg.admin_port),
                ("Authorization", "Bearer " + TOKEN)]
        data = b""
        if body is not None:
            hdrs.append(JSON_CT)
            data = json.dumps(body).encode()
        raw = tglib.build_request(method, path, data, hdrs, host=None)
        return self.call(self.tg.admin_port, method, path, raw=raw)

    def chat(self, tenant, marker=None):
        r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(marker or tglib.new_marker(),
                                        False, "gpt-4o"),
                      [JSON_CT, ("X-Tollgate-Agent-Class", "researcher"),
                       ("X-Tollgate-Tenant", tenant)])
        return r

    def hook(self, kind):
        """The body of the first alert of kind the receiver got."""
        def find():
            for b in self.rcv.bodies():
                if isinstance(b, dict) and b.get("kind") == kind:
                    return b
            return None
        got = tglib.wait_until(find, 15)
        self.assertTrue(got, "no %s alert reached the webhook: %r" %
                        (kind, self.rcv.bodies()))
        return got

    def budget(self, tenant):
        r = self.admin("GET", "/v1/budgets")
        self.assertEqual(r.status, 200, r)
        got = [b for b in r.json()["budgets"]
               if b["policy"] == POLICY["name"] and
               b["scope"].get("tenant") == tenant]
        self.assertEqual(len(got), 1, r.json())
        return got[0]

    def test_threshold_alert_carries_its_extend_request(self):
        self.start_tg()
        r = self.chat("acme")
        self.assertEqual(r.status, 200, r)
        self.assertGreater(self.settled_row(r)["cost_nusd"], 0)
        doc = self.hook("threshold")
        want_scope = {"tenant": "acme", "agent_class": "researcher",
                      "model": "gpt-4o*"}
        self.assertEqual(doc["extend"], {
            "method": "POST", "path": "/v1/budgets/extend",
            "body": {"policy": "researcher-daily", "scope": want_scope,
                     "usd": "0.500000000",
                     "reason": "raised after alert " + doc["id"],
                     "by": ""}})
        # The scope exactly as GET /v1/budgets shows this budget's.
        self.assertEqual(doc["extend"]["body"]["scope"],
                         self.budget("acme")["scope"])

        # GET /v1/alerts shows the body the webhook got.
        self.assertTrue(self.tg.wait_log(r"alerts: alert \S+ delivered"))
        r = self.admin("GET", "/v1/alerts")
        self.assertEqual(r.status, 200, r)
        listed = [a for a in r.json()["alerts"] if a["id"] == doc["id"]]
        self.assertEqual(len(listed), 1, r.json())
        listed[0].pop("delivery")
        self.assertEqual(listed[0], doc)

        # A kill's alert and a breaker's, of this very policy: null.
        r = self.admin("POST", "/v1/kills", {"match": {"tenant": "other"},
                                             "reason": "runaway"})
        self.assertEqual(r.status, 201, r)
        self.assertIsNone(self.hook("kill")["extend"])
        m = tglib.new_marker()
        self.assertEqual(self.chat("loopy", m).status, 200)
        self.assertEqual(self.chat("loopy", m).status, 403)
        b = self.hook("breaker")
        self.assertEqual(b["policy"], "researcher-daily")
        self.assertIsNone(b["extend"])

        # As sent, with nobody named, it is refused; named, it raises
        # the budget's cap by a tenth.
        ext = doc["extend"]
        r = self.admin(ext["method"], ext["path"], ext["body"])
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["parameter"], "by")
        self.assertEqual(self.budget("acme")["cap_usd"], 5)
        body = dict(ext["body"], by="alice")
        r = self.admin(ext["method"], ext["path"], body)
        self.assertEqual(r.status, 201, r)
        x = r.json()
        self.assertEqual((x["by"], x["reason"], x["scope"]),
                         ("alice", "raised after alert " + doc["id"],
                          want_scope))
        b = self.budget("acme")
        self.assertEqual((b["cap_usd"], b["hard_cap_usd"],
                          b["extended_usd"]), (5.5, 5, 0.5))
        self.assertEqual([e["id"] for e in b["extensions"]], [x["id"]])
        # Other tenants' budgets are not raised.
        self.assertEqual(self.budget("loopy")["cap_usd"], 5)


if __name__ == "__main__":
    tglib.main()
