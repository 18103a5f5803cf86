#!/usr/bin/env python3
"""Budget extensions through the real binary: POST /v1/budgets/extend
re-opens a capped scope (and no other) for its window, the answer waits
for the ledger, GET /v1/budgets and GET /v1/budgets/extensions show it,
a restart keeps it, DELETE /v1/budgets/extensions/{id} closes the scope
again (and a restart keeps that too), an expiry ends it by itself, and
every bad field is named."""

import json
import os
import re
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

TOKEN = "adm-CANARY-3e8a1c5b7d9f2046"
TOKEN_ENV = "TG_TEST_ADMIN_TOKEN"
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
ID_RE = re.compile(r"^x_[0-9a-f]{16}$")
CAP = {"name": "tenant-day", "match": {"team": "t1"}, "per": ["tenant"],
       "window": "day", "hard_cap_usd": "0.05"}
ALERTS_ONLY = {"name": "watch", "match": {"team": "t2"}, "window": "day",
               "alert_at_usd": ["1"]}
FLAT = {"name": "flat", "match": {"team": "t3"}, "window": "day",
        "hard_cap_usd": "0.05"}


class ExtensionsTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def start_tg(self, name="tollgate"):
        ex = ledgerlib.metering_extra()
        ex["admin"] = {"listen": "127.0.0.1:0", "token_env": TOKEN_ENV}
        ex["policies"] = [CAP, ALERTS_ONLY, FLAT]
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex, name=name, env={TOKEN_ENV: TOKEN})
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        self.tg = tg
        return tg

    def restart(self, name):
        self.assertEqual(self.tg.stop(), 0)
        return self.start_tg(name=name)

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

    def usage(self, rid, usd, tenant):
        r = self.admin("POST", "/v1/usage", {
            "id": rid, "source": "tool", "cost_usd": usd, "team": "t1",
            "tenant": tenant})
        self.assertEqual(r.status, 201, r)

    def llm(self, tenant, team="t1"):
        return self.call(self.tg.port, "POST", "/v1/chat/completions",
                         tglib.openai_chat(new_marker()),
                         [JSON_CT, ("X-Tollgate-Team", team),
                          ("X-Tollgate-Tenant", tenant)])

    def assertRefused(self, tenant):
        r = self.llm(tenant)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["reason"], "hard_cap")

    def extend(self, body, status=201):
        r = self.admin("POST", "/v1/budgets/extend", body)
        self.assertEqual(r.status, status, r)
        return r.json()

    def budget(self, tenant):
        st, doc = self.tg.admin_get("/v1/budgets", token=TOKEN)
        self.assertEqual(st, 200, doc)
        for b in doc["budgets"]:
            if b["policy"] == "tenant-day" and \
                    b["scope"].get("tenant") == tenant:
                return b
        self.fail("no budget for tenant %s in %s" % (tenant, doc))

    def live(self):
        r = self.admin("GET", "/v1/budgets/extensions")
        self.assertEqual(r.status, 200, r)
        return r.json()["extensions"]

    def test_extension_reopens_the_scope_until_revoked(self):
        self.start_tg()
        self.usage("u-acme", "0.06", "acme")
        self.usage("u-beta", "0.06", "beta")
        self.assertRefused("acme")
        self.assertEqual(self.budget("acme")["state"], "capped")

        x = self.extend({"policy": "tenant-day",
                         "scope": {"team": "t1", "tenant": "acme"},
                         "usd": "0.10", "reason": "quarter close",
                         "by": "alice"})
        self.assertIs(x.pop("recorded"), True, x)
        self.assertRegex(x["id"], ID_RE)
        self.assertEqual((x["policy"], x["scope"], x["usd"], x["nusd"],
                          x["reason"], x["by"], x["window"],
                          x["expires_at"]),
                         ("tenant-day", {"team": "t1", "tenant": "acme"},
                          0.1, 100000000, "quarter close", "alice", "day",
                          None))
        b = self.budget("acme")
        # The raise lasts until the window's end, no further.
        self.assertEqual(x["ends_at"], b["reset_at"])
        self.assertEqual(x["window_start"], b["window_start"])
        self.assertEqual((b["cap_nusd"], b["hard_cap_nusd"],
                          b["extended_nusd"], b["remaining_nusd"]),
                         (150000000, 50000000, 100000000, 90000000), b)
        self.assertEqual([e["id"] for e in b["extensions"]], [x["id"]])
        self.assertNotEqual(b["state"], "capped")
        self.assertEqual([e["id"] for e in self.live()], [x["id"]])
        # 201 "recorded": the row is in the file already, with who and why.
        row = self.ledger.query("SELECT * FROM extensions")[0]
        self.assertEqual((row["id"], row["policy"], row["nusd"],
                          row["granted_by"], row["reason"],
                          row["revoked_at"], json.loads(row["scope"])),
                         (x["id"], "tenant-day", 100000000, "alice",
                          "quarter close", None,
                          {"team": "t1", "tenant": "acme"}))

        since = self.fp.mark()
        self.assertEqual(self.llm("acme").status, 200)
        self.assertGreater(self.fp.mark(), since)
        # Another tenant's scope is not raised.
        self.assertRefused("beta")
        self.assertEqual(self.budget("beta")["extensions"], [])
        self.assertEqual(self.budget("beta")["cap_nusd"], 50000000)

        # A restart keeps it.
        self.restart("tollgate2")
        self.assertEqual([e["id"] for e in self.live()], [x["id"]])
        self.assertEqual(self.budget("acme")["cap_nusd"], 150000000)
        self.assertEqual(self.llm("acme").status, 200)

        # Revoked: the scope is closed again, and stays so after a restart.
        r = self.admin("DELETE", "/v1/budgets/extensions/" + x["id"])
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertIs(doc.pop("recorded"), True)
        self.assertEqual(doc["id"], x["id"])
        self.assertIsNotNone(self.ledger.scalar(
            "SELECT revoked_at FROM extensions WHERE id = ?", (x["id"],)))
        self.assertRefused("acme")
        self.assertEqual(self.budget("acme")["cap_nusd"], 50000000)
        r = self.admin("DELETE", "/v1/budgets/extensions/" + x["id"])
        self.assertEqual(r.status, 404, r)
        self.restart("tollgate3")
        self.assertEqual(self.live(), [])
        self.assertRefused("acme")

    def test_expiry_ends_it(self):
        self.start_tg()
        self.usage("u-acme", "0.06", "acme")
        x = self.extend({"policy": "tenant-day", "scope": {"tenant": "acme"},
                         "usd": "1", "reason": "demo", "by": "bob",
                         "expires": "2s"})
        self.assertIsNotNone(x["expires_at"])
        self.assertEqual(x["ends_at"], x["expires_at"])
        self.assertEqual(self.llm("acme").status, 200)
        self.assertTrue(tglib.wait_until(lambda: self.live() == [], 10),
                        "the extension did not end")
        self.assertRefused("acme")
        # An RFC 3339 time works too, and one in the past is refused.
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                           time.gmtime(time.time() + 3600))
        y = self.extend({"policy": "tenant-day", "scope": {"tenant": "acme"},
                         "usd": "1", "reason": "demo", "by": "bob",
                         "expires": at})
        self.assertEqual(y["expires_at"], at[:19] + ".000Z")
        r = self.admin("POST", "/v1/budgets/extend", {
            "policy": "tenant-day", "scope": {"tenant": "acme"},
            "usd": "1", "reason": "demo", "by": "bob",
            "expires": "2020-01-01T00:00:00Z"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["parameter"], "expires")

    def test_scope_without_calls_yet(self):
        # A policy without per: is listed before its first call; raised
        # then, the listing shows the raise at once.
        self.start_tg()
        x = self.extend({"policy": "flat", "usd": "1", "reason": "r",
                         "by": "b"})
        st, doc = self.tg.admin_get("/v1/budgets", token=TOKEN)
        b = [b for b in doc["budgets"] if b["policy"] == "flat"][0]
        self.assertEqual((b["cap_nusd"], b["extended_nusd"],
                          b["remaining_nusd"], b["spent_nusd"]),
                         (1050000000, 1000000000, 1050000000, 0), b)
        self.assertEqual([e["id"] for e in b["extensions"]], [x["id"]])
        self.assertEqual(x["scope"], {"team": "t3"})

    def test_bad_requests_are_named(self):
        self.start_tg()
        good = {"policy": "tenant-day", "scope": {"tenant": "acme"},
                "usd": "0.10", "reason": "r", "by": "b"}

        def bad(change, param, drop=()):
            body = dict(good)
            body.update(change)
            for k in drop:
                body.pop(k)
            r = self.admin("POST", "/v1/budgets/extend", body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.json().get("parameter"), param,
                             (body, r.json()))

        bad({"policy": "nope"}, "policy")
        bad({"policy": "watch"}, "policy")  # no hard cap
        bad({}, "policy", drop=("policy",))
        bad({"scope": {}}, "scope.tenant")
        bad({"scope": {"tenant": "acme", "team": "t9"}}, "scope.team")
        bad({"scope": {"tenant": "acme", "agent_class": "x"}},
            "scope.agent_class")
        bad({"scope": {"tenant": "ac*"}}, "scope.tenant")
        bad({"scope": "acme"}, "scope")
        bad({"usd": 0.1}, "usd")
        bad({"usd": "-1"}, "usd")
        bad({"usd": "0"}, "usd")
        bad({"usd": "0.0000000001"}, "usd")
        bad({"usd": "1000000.000000001"}, "usd")
        bad({}, "reason", drop=("reason",))
        bad({"reason": ""}, "reason")
        bad({"by": ""}, "by")
        bad({"by": "a\u009b2J"}, "by")
        bad({}, "by", drop=("by",))
        bad({"expires": "soon"}, "expires")
        bad({"colour": "red"}, "colour")
        r = self.admin("POST", "/v1/budgets/extend",
                       b'{"policy":"tenant-day","policy":"x"}')
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["parameter"], "policy")
        r = self.admin("POST", "/v1/budgets/extend", b"not json")
        self.assertEqual(r.status, 400, r)
        # The token is checked, as on every admin route.
        r = self.admin("POST", "/v1/budgets/extend", good, token="wrong")
        self.assertEqual(r.status, 401, r)
        r = self.admin("GET", "/v1/budgets/extensions", token=None)
        self.assertEqual(r.status, 401, r)
        r = self.admin("DELETE", "/v1/budgets/extensions/x_0123456789abcdef")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.live(), [])
        self.assertEqual(self.ledger.scalar(
            "SELECT count(*) FROM extensions"), 0)

    def test_answer_waits_for_the_ledger(self):
        # While the file cannot be written the raise is in force at once,
        # and the answer says it is not recorded yet (202), never 201.
        self.start_tg()
        self.usage("u-acme", "0.06", "acme")
        lockc = sqlite3.connect(self.ledger.path, timeout=10,
                                isolation_level=None)
        try:
            lockc.execute("BEGIN IMMEDIATE")
            x = self.extend({"policy": "tenant-day",
                             "scope": {"tenant": "acme"}, "usd": "0.10",
                             "reason": "r", "by": "b"}, status=202)
            self.assertIs(x["recorded"], False)
            self.assertEqual(self.llm("acme").status, 200)
        finally:
            lockc.execute("ROLLBACK")
            lockc.close()
        self.assertTrue(tglib.wait_until(lambda: self.ledger.scalar(
            "SELECT count(*) FROM extensions") == 1, 10))


if __name__ == "__main__":
    tglib.main()
