# SPDX-License-Identifier: Apache-2.0
"""tollgate spend and tollgate calls, the real binary against a ledger that a
real tollgate wrote while metering calls to fakeprov: every total equals
plain SQL over the ledger to the nano-dollar, the rollup and the scan of
calls agree, the commands read while the daemon runs and after it stopped,
never write, and bad flags exit 2 naming the flag. When the admin API
answers /v1/spend, the command prints the same JSON."""

import csv
import io
import json
import os
import re
import subprocess
import urllib.request

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
from ledgerlib import ANTHROPIC_VERSION  # noqa: E402

CALLS = [
    # (team, tenant, agent_class, intent, family, model)
    ("search", "acme", "researcher", "int-a", "openai", "gpt-4o-mini"),
    ("search", "acme", "researcher", "int-a", "openai", "gpt-4o"),
    ("search", "globex", "researcher", "int-a", "anthropic",
     "claude-3-5-haiku-latest"),
    ("support", "acme", "ticket-agent", "int-b", "openai", "gpt-4o-mini"),
    ("support", "acme", "ticket-agent", "int-b", "openai", "gpt-4o-mini"),
    ("support", "initech", "triage", "int-c", "anthropic",
     "claude-3-5-haiku-latest"),
    (None, None, "triage", "int-c", "openai", "gpt-4o"),
    ("sales,EMEA", "acme", "triage", None, "openai", "gpt-4o-mini"),
]

DIMS = ("team", "tenant", "agent_class", "environment", "intent", "model",
        "provider", "day", "month", "hour")
SQL_KEY = {"day": "substr(started_at, 1, 10)",
           "month": "substr(started_at, 1, 7)",
           "hour": "substr(started_at, 1, 13) || ':00:00Z'"}


def usd(nusd):
    return "%s%d.%09d" % ("-" if nusd < 0 else "", abs(nusd) // 10**9,
                          abs(nusd) % 10**9)


class CliTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.tg = self.start(self.fp, attribution={
            "headers": ["intent", "team", "tenant", "agent_class"]})
        ids = []
        for team, tenant, cls, intent, family, model in CALLS:
            hdrs = [JSON_CT, ("X-Tollgate-Agent-Class", cls)]
            for name, v in (("Team", team), ("Tenant", tenant),
                            ("Intent", intent)):
                if v is not None:
                    hdrs.append(("X-Tollgate-" + name, v))
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
            self.assertEqual(r.status, 200, r)
            ids.append(self.settled_row(r)["id"])
        self.ids = ids
        self.path = self.ledger.path

    # -- helpers ----------------------------------------------------------

    def run_cli(self, *args, rc=0):
        p = subprocess.run([tglib.TOLLGATE_BIN] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        out, err = p.stdout.decode(), p.stderr.decode()
        self.assertEqual(p.returncode, rc, "tollgate %s: exit %d\nstdout:"
                         "\n%s\nstderr:\n%s" % (" ".join(args), p.returncode,
                                                out, err))
        return out, err

    def spend_json(self, *args):
        out, _ = self.run_cli("spend", "--format", "json", "--ledger",
                              self.path, *args)
        return json.loads(out)

    def sql_groups(self, dims, where="1", params=()):
        keys = [SQL_KEY.get(d, "nullif(coalesce(%s, ''), '')" % d)
                for d in dims]
        sel = ", ".join("%s AS k%d" % (k, i) for i, k in enumerate(keys))
        sql = ("SELECT %s%scount(*) AS calls, sum(input_tokens) AS inp,"
               " sum(output_tokens) AS outp, sum(cost_nusd) AS cost"
               " FROM calls WHERE status <> 'in_flight' AND %s%s" %
               (sel, ", " if sel else "", where,
                " GROUP BY " + ", ".join(str(i + 1) for i in
                                         range(len(dims))) if dims else ""))
        got = {}
        for r in self.ledger.query(sql, params):
            got[tuple(r["k%d" % i] for i in range(len(dims)))] = (
                r["calls"], r["inp"] or 0, r["outp"] or 0, r["cost"] or 0)
        return got

    def check_against_sql(self, doc, dims, where="1", params=()):
        want = self.sql_groups(dims, where, params)
        got = {}
        for row in doc["rows"]:
            key = tuple(row[d] for d in dims)
            got[key] = (row["calls"], row["input_tokens"],
                        row["output_tokens"], row["cost_nusd"])
            self.assertEqual(row["cost_usd"],
                             float(usd(row["cost_nusd"])))
        self.assertEqual(got, want, "by %s" % (dims,))
        total = sum(v[3] for v in want.values())
        self.assertEqual(doc["total_cost_nusd"], total)
        costs = [r["cost_nusd"] for r in doc["rows"]]
        self.assertEqual(costs, sorted(costs, reverse=True))

    # -- cases ------------------------------------------------------------

    def test_spend_equals_sql(self):
        """Every dimension alone, and combinations, while the daemon runs."""
        self.assertGreater(self.ledger.scalar(
            "SELECT sum(cost_nusd) FROM calls"), 0)
        for dims in [()] + [(d,) for d in DIMS] + [
                ("team", "agent_class"), ("month", "team"), ("hour", "team"),
                ("provider", "model", "day"), DIMS]:
            with self.subTest(by=dims):
                args = ["--by", ",".join(dims)] if dims else []
                doc = self.spend_json(*args)
                self.check_against_sql(doc, dims)
                # Exact text: total_cost_usd printed from the integer.
                out, _ = self.run_cli("spend", "--format", "json",
                                      "--ledger", self.path, *args)
                self.assertIn('"total_cost_usd":%s,' %
                              usd(doc["total_cost_nusd"]), out)
        doc = self.spend_json("--by", "team", "--team", "search",
                              "--agent-class", "researcher")
        self.check_against_sql(doc, ("team",),
                               "team = 'search' AND agent_class = ?",
                               ("researcher",))
        doc = self.spend_json("--by", "team", "--team", "")
        self.assertEqual([r["team"] for r in doc["rows"]], [None])

    def test_rollup_equals_calls(self):
        for dims in ("team", "team,tenant,agent_class,environment,model,"
                     "provider,day,month", "month"):
            a = self.spend_json("--by", dims, "--source", "rollup")
            b = self.spend_json("--by", dims, "--source", "calls")
            self.assertEqual(a, b)
        _, err = self.run_cli("spend", "--ledger", self.path, "--by",
                              "intent", "--source", "rollup", rc=1)
        self.assertIn("rollup", err)

    def test_periods(self):
        day = self.ledger.scalar("SELECT substr(min(started_at), 1, 10)"
                                 " FROM calls")
        month = day[:7]
        for args, where in (
                (["--month", month], "substr(started_at, 1, 7) = ?"),
                (["--from", day, "--to", day],
                 "substr(started_at, 1, 10) = ?"),
                (["--from", day + "T00:00:00+00:00"], "started_at >= ?")):
            with self.subTest(args=args):
                doc = self.spend_json("--by", "team", *args)
                self.check_against_sql(doc, ("team",), where,
                                       (month if "--month" in args
                                        else day,))
        doc = self.spend_json("--from", "2000-01-01", "--to", "2000-01-31")
        self.assertEqual(doc["total_cost_nusd"], 0)
        self.assertEqual(doc["rows"][0]["calls"], 0)

    def test_csv_and_table(self):
        out, _ = self.run_cli("spend", "--by", "team", "--format", "csv",
                              "--ledger", self.path)
        self.assertTrue(out.startswith(
            "team,calls,input_tokens,output_tokens,cost_usd,"
            "fallback_calls,fallback_cost_usd,saved_usd,routed_calls,"
            "cache_hits\r\n"),
            out)
        rows = list(csv.DictReader(io.StringIO(out, newline="")))
        want = self.sql_groups(("team",))
        got = {}
        for r in rows:
            whole, frac = r["cost_usd"].split(".")
            self.assertEqual(len(frac), 9)
            got[(r["team"] or None,)] = (
                int(r["calls"]), int(r["input_tokens"]),
                int(r["output_tokens"]), int(whole) * 10**9 + int(frac))
        self.assertEqual(got, want)
        self.assertIn('"sales,EMEA",', out)

        out, _ = self.run_cli("spend", "--by", "team", "--ledger", self.path)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("team "), out)
        self.assertTrue(lines[-1].startswith("total "), out)
        total = sum(v[3] for v in want.values())
        self.assertTrue(lines[-1].endswith(" " + usd(total)), out)
        self.assertIn("(none)", out)

    def test_calls_by_intent(self):
        want = [r["id"] for r in self.ledger.query(
            "SELECT id FROM calls WHERE intent = 'int-a'"
            " ORDER BY started_at DESC, id DESC")]
        self.assertEqual(len(want), 3)
        out, _ = self.run_cli("calls", "--intent", "int-a", "--format",
                              "json", "--ledger", self.path)
        doc = json.loads(out)
        self.assertEqual([c["id"] for c in doc["calls"]], want)
        self.assertIsNone(doc["next_cursor"])
        for c in doc["calls"]:
            row = self.ledger.row(c["id"])
            for k in ledgerlib.COLUMNS:
                self.assertEqual(c[k], row[k], k)
            self.assertEqual(c["cost_usd"], float(usd(row["cost_nusd"])))

        # Paging through with --limit 2 and the cursor: each row once.
        seen, cursor = [], None
        for _ in range(10):
            args = ["calls", "--limit", "2", "--format", "json",
                    "--ledger", self.path]
            if cursor:
                args += ["--cursor", cursor]
            doc = json.loads(self.run_cli(*args)[0])
            seen += [c["id"] for c in doc["calls"]]
            cursor = doc["next_cursor"]
            if not cursor:
                break
        self.assertEqual(sorted(seen), sorted(self.ids))
        self.assertEqual(len(seen), len(set(seen)))

        out, _ = self.run_cli("calls", "--intent", "int-a", "--ledger",
                              self.path)
        self.assertEqual(len(out.splitlines()), 4, out)
        self.assertTrue(out.startswith("started_at"), out)

    def test_calls_table_columns_line_up(self):
        # Every page of the table: the columns (the 32-digit ids among
        # them) start where their headings do, and a refusal's reason and
        # the tenant have columns of their own.
        out, _ = self.run_cli("calls", "--ledger", self.path)
        lines = out.splitlines()
        head = lines[0].split()
        self.assertEqual(head, ["started_at", "id", "status", "reason",
                                "provider", "model", "team", "tenant",
                                "input_tokens", "output_tokens", "cost_usd"])
        starts = [lines[0].index(h) for h in head[:8]]
        rows = {r["id"]: r for r in self.ledger.query("SELECT * FROM calls")}
        self.assertEqual(len(lines) - 1, len(rows), out)
        for line in lines[1:]:
            self.assertEqual(len(line), len(lines[0]), out)
            cells = line.split()
            row = rows[cells[1]]
            for k, col in enumerate(("started_at", "id", "status",
                                     "refusal_reason", "provider", "model",
                                     "team", "tenant")):
                self.assertEqual(line[starts[k]:].split(" ")[0],
                                 row[col] or "-", (col, line))
            self.assertEqual(cells[-1], usd(row["cost_nusd"]))

    def test_config_and_daemon_down(self):
        """-c finds the ledger; after tollgate stops, the same answer, and
        the file is not written."""
        running = self.spend_json("--by", "team,model")
        out, _ = self.run_cli("spend", "--by", "team,model", "--format",
                              "json", "-c", self.tg.config_path)
        self.assertEqual(json.loads(out), running)
        self.assertEqual(self.tg.stop(), 0)
        before = {s: os.stat(self.path + s).st_mtime_ns
                  for s in ("",) if os.path.exists(self.path + s)}
        self.assertEqual(self.spend_json("--by", "team,model"), running)
        out, _ = self.run_cli("calls", "--ledger", self.path, "--format",
                              "json")
        self.assertEqual(len(json.loads(out)["calls"]), len(CALLS))
        after = {s: os.stat(self.path + s).st_mtime_ns for s in before}
        self.assertEqual(before, after)

    def test_bad_flags(self):
        cases = [
            (["spend", "--by", "colour"], "--by: unknown dimension 'colour'"),
            (["spend", "--from", "yesterday"], "--from: expected"),
            (["spend", "--month", "2026-11", "--from", "2026-11-02"],
             "--month: cannot be combined"),
            (["spend", "--format", "xml"], "--format: expected"),
            (["spend", "--team", "a", "--team", "b"],
             "--team: given more than once"),
            (["spend", "--bogus"], "bogus"),
            (["spend", "extra"], "unexpected argument 'extra'"),
            (["calls", "--limit", "0"], "--limit: expected"),
            (["calls", "--format", "csv"], "--format: expected json or"),
            (["calls", "--by", "team"], "by"),
            (["calls", "--cursor", "nope"], "--cursor: not a cursor"),
        ]
        for args, msg in cases:
            with self.subTest(args=args):
                _, err = self.run_cli(*(args + ["--ledger", self.path]),
                                      rc=2)
                self.assertIn(msg, err)
        _, err = self.run_cli("spend", "--ledger",
                              os.path.join(self.tmp, "nope.db"), rc=1)
        self.assertIn("nope.db", err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "nope.db")))

    def test_same_as_api(self):
        """The admin API's /v1/spend and /v1/calls print what the CLI
        prints (skipped while the admin API does not answer them)."""
        m = self.tg.wait_log(r"admin listening on 127\.0\.0\.1:(\d+)", 2)
        if not m:
            self.skipTest("no admin listener in this build")
        port = int(m.group(1))
        for qs, args in (
                ("group_by=team,agent_class",
                 ["spend", "--by", "team,agent_class", "--format", "json"]),
                ("group_by=team&format=csv",
                 ["spend", "--by", "team", "--format", "csv"]),
                ("intent=int-a", ["calls", "--intent", "int-a",
                                  "--format", "json"])):
            kind = "calls" if args[0] == "calls" else "spend"
            try:
                with urllib.request.urlopen(
                        "http://127.0.0.1:%d/v1/%s?%s" % (port, kind, qs),
                        timeout=10) as resp:
                    body = resp.read().decode()
            except Exception as e:  # noqa: BLE001
                self.skipTest("admin /v1/%s: %s" % (kind, e))
            out, _ = self.run_cli(*(args + ["--ledger", self.path]))
            self.assertEqual(body, out, qs)


class HelpTest(tglib.TGTestCase):
    """--help, -h and --version answer on stdout and exit 0, for tollgate
    and its sub-commands; a wrong flag still exits 2 with the usage on
    stderr."""

    def run_bin(self, *args):
        r = subprocess.run([tglib.TOLLGATE_BIN] + list(args),
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=20, cwd=self.tmp)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def test_help_and_version(self):
        for args in (["--help"], ["-h"], ["check", "--help"],
                     ["-d", "--help"]):
            rc, out, err = self.run_bin(*args)
            self.assertEqual((rc, err), (0, ""), args)
            self.assertIn("usage: tollgate", out, args)
            self.assertIn("--version", out, args)
        for args in (["--version"], ["-V"]):
            rc, out, err = self.run_bin(*args)
            self.assertEqual((rc, err), (0, ""), args)
            self.assertRegex(out, r"^tollgate \S+\n$", args)
        for cmd in ("spend", "calls"):
            for flag in ("--help", "-h"):
                rc, out, err = self.run_bin(cmd, flag)
                self.assertEqual((rc, err), (0, ""), (cmd, flag))
                self.assertIn("usage: tollgate " + cmd, out)
        rc, out, err = self.run_bin("--bogus")
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertIn("usage: tollgate", err)
        rc, out, err = self.run_bin("frobnicate")
        self.assertEqual(rc, 2)
        self.assertIn("usage: tollgate", err)


if __name__ == "__main__":
    tglib.main()
