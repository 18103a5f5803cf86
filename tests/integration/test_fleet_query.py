# SPDX-License-Identifier: Apache-2.0
"""The fleet's spend and calls answers (GET /v1/spend?fleet=1, GET
/v1/calls?fleet=1, tollgate spend --fleet, tollgate calls --fleet) against
a real PostgreSQL (pglib), through the real binary.

A tollgate meters calls of several teams, tenants, agent classes, models
and outcomes (ok, an upstream error, a refusal, a model priced at its
family's rates); its ledger's rows then reach the fleet ledger (made by
`tollgate ship init`), sent by its shipper. The same checks
(spendchecks.py: every group_by, filters with values and empty, periods,
CSV and table, calls pages with cursors, the status filter) run on the
local answer and on the fleet answer, from the API and from the command
line, and must hold to the nano-dollar; the local and fleet bodies must
be the same bytes (calls rows aside from their instance). With the rows
also copied under a second instance name the fleet answer sums both and pages
through rows that share a time and an id. Without ledger.ship: a fleet
query is a 400 naming it. A PostgreSQL restart between two queries
costs no failed query; with PostgreSQL stopped, a prompt 503 naming the
cause (never the password) while local queries still answer, and answers
again once it is back."""

import os
import re
import subprocess
import sys
import time
import unittest
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean
import ledgerlib  # noqa: E402
import pglib  # noqa: E402
import spendchecks  # noqa: E402
import tglib  # noqa: E402
from ledgerlib import ANTHROPIC_VERSION  # noqa: E402
from spendchecks import Answer, Source  # noqa: E402
from tglib import JSON_CT  # noqa: E402

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
SECRET = "CANARY-fleetq-pw-77a1"
PWVAR = "TG_TEST_FLEET_PG_PASSWORD"
DB = "fleet"

CALLS = [
    # (team, tenant, agent_class, intent, family, model, fake status)
    ("search", "acme", "researcher", "int-a", "openai", "gpt-4o-mini", None),
    ("search", "acme", "researcher", "int-a", "openai", "gpt-4o", None),
    ("search", "globex", "researcher", "int-a", "anthropic",
     "claude-3-5-haiku-latest", None),
    ("support", "acme", "ticket-agent", "int-b", "openai", "gpt-4o-mini",
     None),
    ("support", "acme", "ticket-agent", "int-b", "openai", "gpt-4o-mini",
     "500"),
    ("support", "initech", "triage", "int-c", "anthropic",
     "claude-3-5-haiku-latest", None),
    (None, None, "triage", "int-c", "openai", "gpt-4o", None),
    ("sales,EMEA", "acme", "triage", None, "openai", "gpt-4o-mini", None),
    ("search", "o'hare", "researcher", "int-d", "openai", "gpt-9-mini",
     None),
]

# The flags of the command line for the API's parameters.
FLAGS = {"group_by": "--by", "agent_class": "--agent-class"}


def pg_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


class FleetQueryTest(ledgerlib.MeterTestCase):

    # -- set-up -----------------------------------------------------------

    def start_tg(self, ship=True, pg_password=None):
        """A tollgate with the admin API, ledger.ship when ship, its calls
        made and settled."""
        self.fp = self.fakeprov()
        ledger = {"path": "data/ledger.db"}
        if ship:
            ledger["ship"] = {"postgres": self.pg.url(DB)}
            if pg_password:
                ledger["ship"]["password_env"] = PWVAR
        self.env = {PWVAR: pg_password} if pg_password else {}
        extra = ledgerlib.metering_extra(ledger=ledger, attribution={
            "headers": ["intent", "team", "tenant", "agent_class"]})
        extra["admin"] = {"listen": "127.0.0.1:0"}
        # Savings both ways: a triage call sent cheaper, ticket-agent
        # calls sent dearer (saved_nusd negative).
        extra["routing"] = [
            {"name": "triage-mini", "model": "gpt-4o-mini",
             "match": {"agent_class": "triage", "model": "gpt-4o",
                       "provider": "openai"}},
            {"name": "dearer", "model": "gpt-4o",
             "match": {"agent_class": "ticket-agent", "provider": "openai"}}]
        self.tg = self.tollgate(
            upstreams=ledgerlib.metering_upstreams(self.fp.port),
            extra=extra, env=self.env)
        m = tglib.wait_until(lambda: ADMIN_RE.search(self.tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        self.admin_port = int(m.group(1))
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), self.tg)
        self.make_calls()

    def make_calls(self):
        for team, tenant, cls, intent, family, model, fail in CALLS:
            hdrs = [JSON_CT, ("X-Tollgate-Agent-Class", cls)]
            for name, v in (("Team", team), ("Tenant", tenant),
                            ("Intent", intent)):
                if v is not None:
                    hdrs.append(("X-Tollgate-" + name, v))
            if fail:
                hdrs.append(("x-fake-status", fail))
            m = ledgerlib.marker()
            if family == "openai":
                r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                              tglib.openai_chat(m, model=model),
                              hdrs + [("Authorization", "Bearer sk-x")])
            else:
                r = self.call(self.tg.port, "POST", "/v1/messages",
                              tglib.anthropic_messages(m, model=model),
                              hdrs + [("x-api-key", "sk-ant-x"),
                                      ANTHROPIC_VERSION])
            self.assertEqual(r.status, int(fail or 200), r)
            self.settled_row(r)
        # A refusal: a body that is not JSON is never forwarded.
        r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                      b"{not json", [JSON_CT, ("X-Tollgate-Team", "search"),
                                     ("X-Tollgate-Agent-Class", "triage")])
        self.assertEqual(r.status, 400, r)
        self.settled_row(r)
        saved = [r["saved_nusd"] for r in self.ledger.query(
            "SELECT saved_nusd FROM calls WHERE routed_rule IS NOT NULL")]
        self.assertTrue(min(saved) < 0 < max(saved), saved)

    def local_rows(self):
        rows = self.ledger.query("SELECT * FROM calls")
        for r in rows:
            r.pop("ship_seq", None)
        statuses = {r["status"] for r in rows}
        self.assertTrue({"ok", "error", "refused"} <= statuses, statuses)
        self.assertTrue(any("+fallback:" in (r["price_version"] or "")
                            for r in rows))
        return rows

    def ship_init(self):
        p = self.run_bin("ship", "init", "-c", self.tg.config_path)
        self.assertEqual(p[0], 0, p)

    def fill_fleet(self):
        """The fleet ledger with this tollgate's calls, shipped by its own
        shipper (waited for); the rows, each with its instance."""
        want = len(self.local_rows())
        got = tglib.wait_until(lambda: self.pg.psql(
            "SELECT count(*) FROM calls", db=DB) == str(want) or None, 30)
        self.assertTrue(got, "the shipper did not ship %d rows" % want)
        instance = self.pg.psql("SELECT DISTINCT instance FROM calls",
                                db=DB)
        out = []
        for r in self.local_rows():
            r["instance"] = instance
            out.append(r)
        return out

    def seed(self, instance):
        """Copy the local ledger's calls into the fleet ledger as
        instance's; the rows, each with its instance."""
        pgcols = self.pg.psql(
            "SELECT column_name FROM information_schema.columns WHERE "
            "table_name = 'calls'", db=DB).split("\n")
        rows = self.local_rows()
        cols = [c for c in rows[0] if c in pgcols]
        values = ",".join(
            "(%s, %s)" % (pg_literal(instance),
                          ", ".join(pg_literal(r[c]) for c in cols))
            for r in rows)
        self.pg.psql("INSERT INTO calls (instance, %s) VALUES %s" %
                     (", ".join(cols), values), db=DB)
        out = []
        for r in rows:
            r = dict(r)
            r["instance"] = instance
            out.append(r)
        return out

    # -- asking -----------------------------------------------------------

    def run_bin(self, *args, env=None):
        child = dict(os.environ)
        child.update(self.env)
        child.update(env or {})
        p = subprocess.run([tglib.TOLLGATE_BIN] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=child, timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def api_get(self, kind, params):
        path = "/v1/%s?%s" % (kind, urllib.parse.urlencode(params))
        raw = tglib.build_request("GET", path, b"", [
            ("Host", "127.0.0.1:%d" % self.admin_port)], host=None)
        r = self.call(self.admin_port, "GET", path, raw=raw, timeout=30)
        return Answer(r.status, r.header("content-type"),
                      r.body.decode("utf-8"))

    def cli(self, kind, params, fleet):
        args = [kind]
        if not any(k == "format" for k, _ in params):
            params = params + [("format", "json")]
        for k, v in params:
            if k == "fleet":
                continue
            args += [FLAGS.get(k, "--" + k), v]
        if fleet:
            args += ["--fleet", "-c", self.tg.config_path]
        else:
            args += ["--ledger", self.ledger.path]
        rc, out, err = self.run_bin(*args)
        self.assertNotIn(SECRET, out + err)
        return Answer(200 if rc == 0 else 500 + rc, None,
                      out if rc == 0 else err)

    def sources(self):
        return [
            Source("local API", lambda k, p: self.api_get(k, p)),
            Source("fleet API",
                   lambda k, p: self.api_get(k, p + [("fleet", "1")])),
            Source("local CLI", lambda k, p: self.cli(k, p, False)),
            Source("fleet CLI", lambda k, p: self.cli(k, p, True)),
        ]

    # -- cases ------------------------------------------------------------

    def test_fleet_answers_equal_local(self):
        self.pg = pglib.start(self)
        self.pg.createdb(DB)
        self.start_tg()
        self.ship_init()
        rows = self.fill_fleet()
        instance = rows[0]["instance"]
        local = [dict(r) for r in rows]
        for r in local:
            r.pop("instance")
        for src in self.sources():
            spendchecks.check_all(self, src, rows if "fleet" in src.name
                                  else local)
        # The same bytes from both ledgers: spend in every format, calls
        # once each row's instance is set aside.
        for kind, params in (
                ("spend", [("group_by", "team,agent_class,model")]),
                ("spend", [("group_by", "day,provider"), ("format", "csv")]),
                ("spend", [("group_by", "tenant"), ("format", "table")]),
                ("spend", [("team", ""), ("to", "2999-01-01")]),
                ("calls", [("format", "table")]),
                ("calls", [("limit", "4"), ("status", "ok")])):
            with self.subTest(kind=kind, params=params):
                a = self.api_get(kind, params)
                b = self.api_get(kind, params + [("fleet", "1")])
                self.assertEqual((a.status, a.ctype), (b.status, b.ctype))
                if kind == "calls" and "format" not in dict(params):
                    da, db = a.json(), b.json()
                    for c in db["calls"]:
                        self.assertEqual(c.pop("instance"), instance)
                    # The fleet's cursor names the instance too.
                    self.assertIsNotNone(db.pop("next_cursor"))
                    da.pop("next_cursor")
                    self.assertEqual(da, db)
                else:
                    self.assertEqual(a.body, b.body)

    def test_two_instances_sum(self):
        self.pg = pglib.start(self)
        self.pg.createdb(DB)
        self.start_tg()
        self.ship_init()
        # The same calls under two names: every (time, id) twice.
        rows = self.fill_fleet() + self.seed("i-b")
        one = self.api_get("spend", []).json()
        both = self.api_get("spend", [("fleet", "1")]).json()
        self.assertEqual(both["total_cost_nusd"], 2 * one["total_cost_nusd"])
        self.assertEqual(both["total_calls"], 2 * one["total_calls"])
        doc = self.api_get("spend", [("group_by", "team"),
                                     ("fleet", "1")]).json()
        spendchecks.check_spend_doc(self, Source("fleet API", None), doc,
                                    rows, ("team",), "two instances")
        for src in self.sources()[1::2]:
            spendchecks.check_all(self, src, rows)

    def test_without_ship(self):
        self.start_tg(ship=False)
        for kind in ("spend", "calls"):
            a = self.api_get(kind, [("fleet", "1")])
            self.assertEqual(a.status, 400, a)
            doc = a.json()
            self.assertIn("ledger.ship", doc["error"])
            self.assertEqual(doc.get("parameter"), "fleet", doc)
            self.assertEqual(self.api_get(kind, [("fleet", "0")]).status,
                             200)
            self.assertEqual(self.api_get(kind, [("fleet", "2")]).status,
                             400)
            rc, out, err = self.run_bin(kind, "--fleet", "-c",
                                        self.tg.config_path)
            self.assertEqual(rc, 1, out + err)
            self.assertIn("no ledger.ship: section", err)
            rc, out, err = self.run_bin(kind, "--fleet", "--ledger",
                                        self.ledger.path)
            self.assertEqual(rc, 2, out + err)
            self.assertIn("--fleet: cannot be combined with --ledger", err)
        rc, out, err = self.run_bin("spend", "--fleet", "--source", "rollup",
                                    "-c", self.tg.config_path)
        self.assertEqual(rc, 2, out + err)
        self.assertIn("--fleet: the fleet ledger has no rollup", err)

    def test_postgres_down(self):
        self.pg = pglib.start(self, password=SECRET)
        self.pg.createdb(DB)
        self.start_tg(pg_password=SECRET)
        self.ship_init()
        self.fill_fleet()
        want = self.api_get("spend", [("group_by", "team")]).body
        self.assertEqual(self.api_get("spend", [("group_by", "team"),
                                                ("fleet", "1")]).body, want)
        # A restart in between closes the reader's connection: the next
        # query finds out, connects again and answers.
        self.pg.restart()
        a = self.api_get("spend", [("group_by", "team"), ("fleet", "1")])
        self.assertEqual((a.status, a.body), (200, want))
        self.pg.stop("fast")
        for kind in ("spend", "calls"):
            t0 = time.monotonic()
            a = self.api_get(kind, [("fleet", "1")])
            took = time.monotonic() - t0
            self.assertEqual(a.status, 503, a)
            self.assertLess(took, 5, "a fleet query hung %.1f s" % took)
            self.assertTrue(a.ctype.startswith("application/json"), a)
            err = a.json()["error"]
            self.assertIn("PostgreSQL", err)
            self.assertIn("127.0.0.1", err)
            self.assertNotIn(SECRET, a.body)
            # The local ledger still answers, at once.
            self.assertEqual(self.api_get(kind, []).status, 200)
            rc, out, err = self.run_bin(kind, "--fleet", "-c",
                                        self.tg.config_path)
            self.assertEqual(rc, 1, out + err)
            self.assertIn("cannot connect to PostgreSQL", err)
            self.assertNotIn(SECRET, out + err)
        self.assertIsNotNone(self.tg.wait_log(r"fleet ledger: cannot "
                                              r"connect to PostgreSQL", 5))
        # Back up: the next query connects again.
        self.pg.restart()
        self.assertEqual(self.api_get("spend", [("group_by", "team"),
                                                ("fleet", "1")]).body, want)


if __name__ == "__main__":
    unittest.main()
