#!/usr/bin/env python3
"""One intent's timeline through the real binary: GET /v1/intents/{id}
and tollgate intent ID show its calls (forwarded, refused), its external
costs, the alerts of its scope, the kills that name it and the budget
extensions of its scope (then their revocation), in time order, with
totals over every row however many are shown; the same numbers from the
API and the command, a call not yet written among them, other intents
never; and a ledger made before the alerts, kills and extensions tables
answers too."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

TOKEN = "adm-CANARY-0c4f7e2a19b35d86"
TOKEN_ENV = "TG_TEST_ADMIN_TOKEN"
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
INTENT = "inv-7731"
PER_INTENT = {"name": "per-intent", "match": {"intent": "inv-*"},
              "per": ["intent"], "window": "day", "hard_cap_usd": "5",
              "alert_at_usd": ["0.01"]}


class IntentTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def start_tg(self):
        ex = ledgerlib.metering_extra()
        ex["admin"] = {"listen": "127.0.0.1:0", "token_env": TOKEN_ENV}
        ex["policies"] = [PER_INTENT]
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex, env={TOKEN_ENV: TOKEN})
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.db = os.path.join(self.tmp, "data/ledger.db")
        self.ledger = ledgerlib.Ledger(self.db, tg)
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

    def chat(self, intent, model="gpt-4o", extra=()):
        return self.call(self.tg.port, "POST", "/v1/chat/completions",
                         tglib.openai_chat(tglib.new_marker(), False, model),
                         [JSON_CT, ("X-Tollgate-Intent", intent)] +
                         list(extra))

    def cli(self, *args):
        p = subprocess.run([tglib.TOLLGATE_BIN, "intent"] + list(args) +
                           ["--ledger", self.db], capture_output=True,
                           text=True, timeout=30)
        return p.returncode, p.stdout, p.stderr

    def test_timeline(self):
        self.start_tg()
        ok = [self.settled_row(self.chat(INTENT)) for _ in range(2)]
        self.chat("inv-other")
        r = self.admin("POST", "/v1/usage", {
            "id": "ext-77", "source": "serpapi", "cost_usd": "0.02",
            "intent": INTENT})
        self.assertEqual(r.status, 201, r)
        r = self.admin("POST", "/v1/kills", {
            "match": {"intent": "inv-77*"}, "reason": "looping"})
        self.assertEqual(r.status, 201, r)
        kill = r.json()["id"]
        refused = self.chat(INTENT)
        self.assertEqual(refused.status, 403, refused)
        self.assertTrue(tglib.wait_until(lambda: self.ledger.scalar(
            "SELECT count(*) FROM alerts WHERE intent = ?", (INTENT,)) >= 1,
            10), "no alert for the intent's scope")
        self.tg.wait_written(token=TOKEN)

        r = self.admin("GET", "/v1/intents/" + INTENT)
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["intent"], INTENT)
        rows = self.ledger.rows("intent = ?", (INTENT,))
        t = doc["totals"]
        self.assertEqual(t["calls"], 2, t)
        self.assertEqual(t["external"], 1, t)
        self.assertEqual(t["refused"], 1, t)
        self.assertEqual(t["cost_nusd"], sum(x["cost_nusd"] for x in rows))
        self.assertEqual(t["input_tokens"],
                         sum(x["input_tokens"] for x in rows))
        types = [e["type"] for e in doc["events"]]
        self.assertEqual(sorted(types), ["alert", "call", "call",
                                         "external", "kill", "refusal"])
        ats = [e["at"] for e in doc["events"]]
        self.assertEqual(ats, sorted(ats))
        calls = [e for e in doc["events"] if e["type"] == "call"]
        self.assertEqual({e["id"] for e in calls}, {x["id"] for x in ok})
        self.assertEqual(calls[0]["cost_nusd"],
                         [x for x in ok if x["id"] == calls[0]["id"]][0]
                         ["cost_nusd"])
        ext = [e for e in doc["events"] if e["type"] == "external"][0]
        self.assertEqual((ext["provider"], ext["cost_nusd"]),
                         ("serpapi", 20000000))
        k = [e for e in doc["events"] if e["type"] == "kill"][0]
        self.assertEqual((k["id"], k["reason"], k["match"]),
                         (kill, "looping", {"intent": "inv-77*"}))
        self.assertFalse(doc["truncated"])
        self.assertNotIn("inv-other", r.body.decode())
        # A kill's '[' is itself, as the runtime reads it: this one
        # does not cover inv-7731, so the timeline does not list it.
        r = self.admin("POST", "/v1/kills", {
            "match": {"intent": "inv-[7]731"}, "reason": "literal"})
        self.assertEqual(r.status, 201, r)
        r = self.admin("GET", "/v1/intents/" + INTENT)
        self.assertEqual(r.json(), doc)

        # limit keeps the newest events, in time order, and says so.
        r = self.admin("GET", "/v1/intents/%s?limit=2" % INTENT)
        doc2 = r.json()
        self.assertEqual(doc2["events"], doc["events"][-2:])
        self.assertTrue(doc2["truncated"])
        self.assertEqual(doc2["totals"], doc["totals"])

        # The command reads the file: the same events, the same totals.
        rc, out, err = self.cli(INTENT, "--format", "json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), doc)
        rc, out, err = self.cli(INTENT)
        self.assertEqual(rc, 0, err)
        self.assertIn("intent inv-7731: 2 calls, 1 external costs, "
                      "1 refused", out)
        self.assertEqual(len([ln for ln in out.splitlines()
                              if re.match(r"\d{4}-\d\d-\d\dT", ln)]), 6)

        # Bad requests are named.
        for path, param in (("/v1/intents/a%20b", "intent"),
                            ("/v1/intents/x?limit=0", "limit"),
                            ("/v1/intents/x?since=1", "limit")):
            r = self.admin("GET", path)
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json()["parameter"], param)
        rc, out, err = self.cli("a b")
        self.assertEqual(rc, 2)
        # An intent with nothing: empty, not an error.
        r = self.admin("GET", "/v1/intents/nothing-here")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["events"], [])
        self.assertEqual(r.json()["totals"]["calls"], 0)

    def timeline(self, intent=INTENT):
        """The API's timeline and the command's, which must agree, and
        the command's table."""
        self.tg.wait_written(token=TOKEN)
        r = self.admin("GET", "/v1/intents/" + intent)
        self.assertEqual(r.status, 200, r)
        rc, out, err = self.cli(intent, "--format", "json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), r.json())
        rc, table, err = self.cli(intent)
        self.assertEqual(rc, 0, err)
        return r.json(), table

    def test_extension_and_its_revocation(self):
        self.start_tg()
        self.settled_row(self.chat(INTENT))
        ask = {"policy": "per-intent", "scope": {"intent": INTENT},
               "usd": "2.5", "reason": "invoice run needs more",
               "by": "alice"}
        r = self.admin("POST", "/v1/budgets/extend", ask)
        self.assertEqual(r.status, 201, r)
        x = r.json()
        # Another intent's scope, extended too, stays out of this one.
        r = self.admin("POST", "/v1/budgets/extend", dict(
            ask, scope={"intent": "inv-other"}, by="bob"))
        self.assertEqual(r.status, 201, r)

        doc, table = self.timeline()
        self.assertEqual(doc["totals"]["extensions"], 1, doc["totals"])
        evs = [e for e in doc["events"] if e["type"] == "extension"]
        self.assertEqual(len(evs), 1, doc["events"])
        e = evs[0]
        self.assertEqual(e["at"], x["created_at"])
        # The extension object as the API answered it, and revoked_at.
        self.assertEqual(list(e), ["at", "type"] + [
            k for k in x if k != "recorded"] + ["revoked_at"])
        self.assertEqual({k: v for k, v in e.items()
                          if k not in ("at", "type", "revoked_at")},
                         {k: v for k, v in x.items() if k != "recorded"})
        self.assertEqual((e["by"], e["reason"], e["nusd"], e["revoked_at"]),
                         ("alice", "invoice run needs more", 2500000000,
                          None))
        self.assertIn("0 refused, 1 budget extensions;", table)
        line = [ln for ln in table.splitlines() if " extension " in ln]
        self.assertEqual(len(line), 1, table)
        self.assertIn("per-intent raised by $2.500000000 by alice: invoice "
                      "run needs more  id=" + x["id"], line[0])
        self.assertNotIn("bob", table)

        r = self.admin("DELETE", "/v1/budgets/extensions/" + x["id"])
        self.assertEqual(r.status, 200, r)
        doc, table = self.timeline()
        e = [e for e in doc["events"] if e["type"] == "extension"][0]
        self.assertRegex(e["revoked_at"] or "",
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertGreaterEqual(e["revoked_at"], e["created_at"])
        self.assertEqual(doc["totals"]["extensions"], 1)
        self.assertIn("by alice: invoice run needs more; revoked " +
                      e["revoked_at"] + "  id=" + x["id"], table)
        # The reads go through the (intent, created_at) index.
        con = sqlite3.connect(self.db)
        plan = " ".join(str(r[-1]) for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT created_at FROM extensions"
            " WHERE intent = ? ORDER BY created_at DESC, id DESC LIMIT 9",
            (INTENT,)))
        con.close()
        self.assertIn("USING INDEX", plan)

    def test_ledger_from_before_the_newer_tables(self):
        """tollgate intent reads a ledger file as it is: one made before
        the alerts, kills and extensions tables has none of their events
        and still shows its calls."""
        self.start_tg()
        row = self.settled_row(self.chat(INTENT))
        self.tg.wait_written(token=TOKEN)
        self.assertEqual(self.tg.stop(), 0)
        con = sqlite3.connect(self.db)
        with con:
            for t in ("alerts", "kills", "extensions"):
                con.execute("DROP TABLE IF EXISTS " + t)
        con.close()
        rc, out, err = self.cli(INTENT, "--format", "json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual([e["id"] for e in doc["events"]], [row["id"]])
        self.assertEqual((doc["totals"]["calls"],
                          doc["totals"]["extensions"]), (1, 0))
        rc, out, err = self.cli(INTENT)
        self.assertEqual(rc, 0, err)
        self.assertIn("intent inv-7731: 1 calls", out)

    def test_a_call_in_flight_is_shown(self):
        self.start_tg()
        c = threading.Thread(target=self.chat, args=(
            INTENT, "gpt-4o", [("x-fake-delay-ms", "3000"),
                               ("X-Tollgate-Team", "slow")]))
        c.start()
        self.assertTrue(tglib.wait_until(
            lambda: self.fp.mark() >= 1, 10))
        r = self.admin("GET", "/v1/intents/" + INTENT)
        self.assertEqual(r.status, 200, r)
        ev = r.json()["events"]
        self.assertEqual([e["status"] for e in ev], ["in_flight"], ev)
        c.join(15)


if __name__ == "__main__":
    tglib.main()
