# SPDX-License-Identifier: Apache-2.0
"""Client-chosen text in everything tollgate prints, through the real binary.

Tags and models are chosen by clients, and a ledger may already hold bytes
that are not UTF-8 (written by an older version, or by hand). Every answer
must still be readable by a strict reader: /v1/spend (JSON and the CSV
chargeback export), /v1/calls, /v1/alerts, /v1/kills, /v1/budgets,
/metrics, the webhook bodies, a refusal that quotes a kill's reason, and
`tollgate spend` / `tollgate calls` in every format. Each is decoded here
as strict UTF-8 and parsed strictly; a stray byte is shown as U+FFFD.

CSV cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`,
TAB, CR first) are neutralised as OWASP recommends: a single quote before
the value, and the cell quoted. The numbers tollgate writes are never
touched. Values a client sends (headers, a kill's reason) that are not
UTF-8 are refused with a 400 before anything is stored."""

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
FFFD = "\ufffd"

# Team values a spreadsheet would read as formulas, and harmless ones.
FORMULA_TEAMS = ["=SUM(1+1)", "=cmd|x!A1", "+1+2", "-3+4", "@SUM(5)"]
PLAIN_TEAMS = ["support", "x=1", "a-b"]

# Rows written straight into the ledger: (id, team, model, intent, tenant).
# Stray bytes, a cut sequence, valid UTF-8 (U+00E8, and U+009B, a C1
# control some terminals obey), an ANSI escape, and formula starts.
SEEDED = [
    ("seed-ff", b"t\xff\xfeam", b"gpt\xff\xfe", b"int\xc3", b"acme"),
    ("seed-c1", b"te\xc2\x9bam", b"mod\xc3\xa8le", b"\x1b[31mred",
     b"\xe2\x82"),
    ("seed-tab", b"\t=1+1", b"\r=2+2", b" =3+3", b"\x9b"),
]


def strict_text(data, what):
    """data decoded as strict UTF-8, or a test failure naming what."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError("%s is not UTF-8 (%s): %r" %
                             (what, e, data[max(0, e.start - 40):e.end + 40]))


def strict_json(data, what):
    text = strict_text(data, what)
    try:
        return json.loads(text)
    except ValueError as e:
        raise AssertionError("%s is not JSON (%s): %r" % (what, e,
                                                          text[:400]))


class ReportTextTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.receivers = []

    def tearDown(self):
        for r in self.receivers:
            r.close()

    def start_tg(self, name="tollgate", extra=None):
        ex = ledgerlib.metering_extra(attribution={
            "headers": ["intent", "team", "tenant", "agent_class"]})
        ex.update(extra or {})
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex, name=name)
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        # Signals are handled from the 'started' line on.
        self.assertTrue(tg.wait_log(r"tollgate \S+ started", 10))
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        return tg

    def chat(self, tg, team=None, model="gpt-4o-mini", hdrs=()):
        h = [JSON_CT, ("Authorization", "Bearer sk-x")] + list(hdrs)
        if team is not None:
            h.append(("X-Tollgate-Team", team))
        return self.call(tg.port, "POST", "/v1/chat/completions",
                         tglib.openai_chat(ledgerlib.marker(), model=model),
                         h)

    def admin(self, tg, method, path, body=b""):
        raw = tglib.build_request(
            method, path, body,
            [("Host", "127.0.0.1:%d" % tg.admin_port)] +
            ([JSON_CT] if body else []), host=None)
        return self.call(tg.admin_port, method, path, raw=raw)

    def run_cli(self, *args):
        p = subprocess.run([tglib.TOLLGATE_BIN] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        self.assertEqual(p.returncode, 0, "tollgate %s: exit %d: %r" %
                         (" ".join(args), p.returncode, p.stderr[-400:]))
        return p.stdout

    def csv_rows(self, data, what):
        text = strict_text(data, what)
        return list(csv.reader(io.StringIO(text, newline="")))

    # -- CSV formula cells ----------------------------------------------

    def check_formula_csv(self, data, what):
        rows = self.csv_rows(data, what)
        self.assertEqual(rows[0], ["team", "calls", "input_tokens",
                                   "output_tokens", "cost_usd",
                                   "fallback_calls", "fallback_cost_usd",
                                   "saved_usd", "routed_calls",
                                   "cache_hits"],
                         what)
        cells = {r[0]: r for r in rows[1:]}
        for team in FORMULA_TEAMS:
            self.assertIn("'" + team, cells,
                          "%s: %r is not neutralised: %r" %
                          (what, team, sorted(cells)))
            self.assertIn(b"\"'" + team.encode() + b"\"", data,
                          "%s: the neutralised cell is not quoted" % what)
        for team in PLAIN_TEAMS:
            self.assertIn(team, cells, "%s: %r was changed" % (what, team))
        for r in rows[1:]:
            # The numbers tollgate writes stay numbers.
            self.assertTrue(re.fullmatch(r"\d+", r[1]), r)
            self.assertTrue(re.fullmatch(r"\d+", r[2]), r)
            self.assertTrue(re.fullmatch(r"\d+\.\d{9}", r[4]), r)
            self.assertFalse(any(c[:1] in "=+-@\t\r" for c in r), r)

    def test_csv_formula_cells_neutralised(self):
        tg = self.start_tg()
        for team in FORMULA_TEAMS + PLAIN_TEAMS:
            r = self.chat(tg, team)
            self.assertEqual(r.status, 200, "%s: %r" % (team, r))
            self.settled_row(r)
        r = self.admin(tg, "GET", "/v1/spend?group_by=team&format=csv")
        self.assertEqual(r.status, 200, r)
        self.check_formula_csv(r.body, "/v1/spend CSV")
        out = self.run_cli("spend", "--by", "team", "--format", "csv",
                           "--ledger", self.ledger.path)
        self.check_formula_csv(out, "tollgate spend --format csv")
        # JSON is not a spreadsheet: the values stay exactly as sent.
        doc = strict_json(self.admin(tg, "GET", "/v1/spend?group_by=team")
                          .body, "/v1/spend")
        self.assertEqual(sorted(row["team"] for row in doc["rows"]),
                         sorted(FORMULA_TEAMS + PLAIN_TEAMS))

    # -- a ledger that already holds bytes that are not UTF-8 ------------

    def seed(self):
        """Write SEEDED rows, an alert pending delivery and a live kill,
        each with stray bytes, into the ledger of a stopped tollgate."""
        con = sqlite3.connect(self.ledger.path)
        t = "2026-11-28T10:00:0%d.000Z"
        with con:
            for i, (rid, team, model, intent, tenant) in enumerate(SEEDED):
                con.execute(
                    "INSERT INTO calls (id, started_at, finished_at,"
                    " provider, endpoint, upstream, model, intent, team,"
                    " tenant, agent_class, status, http_status,"
                    " input_tokens, output_tokens, usage_source,"
                    " cost_nusd) VALUES (?, ?, ?, 'openai',"
                    " 'chat.completions', 'openai', CAST(? AS TEXT),"
                    " CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT),"
                    " 'seeded', 'ok', 200, 10, 5, 'reported', 1500)",
                    (rid, t % i, t % i, model, intent, team, tenant))
            # Pending and recent: sent again when tollgate starts.
            con.execute(
                "INSERT INTO alerts (id, fired_at, kind, policy, team,"
                " spent_nusd, message, delivery, attempts) VALUES"
                " ('a-seeded', ?, 'kill', CAST(? AS TEXT), CAST(? AS TEXT),"
                " 0, CAST(? AS TEXT), 'pending', 0)",
                (time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                 b"pol\xff", b"t\xfeam", b"stopped: \xff\xfe\x9b"))
            con.execute(
                "INSERT INTO kills (id, created_at, match, reason, source)"
                " VALUES ('k_00000000000000aa', '2026-11-28T11:00:00.000Z',"
                " '{\"team\":\"killme\"}', CAST(? AS TEXT), 'api')",
                (b"runaway \xff\xfe loop",))
        con.close()

    def test_stored_bytes_are_printed_as_utf8(self):
        tg = self.start_tg()
        self.settled_row(self.chat(tg, "support"))
        self.assertEqual(tg.stop(), 0)
        self.seed()

        hook = tglib.WebhookReceiver()
        self.receivers.append(hook)
        # A budget per team, rebuilt from the ledger at start: its scopes
        # carry the stored team values.
        tg = self.start_tg(name="tollgate2", extra={"alerts": {"webhooks": [
            {"url": "http://127.0.0.1:%d/json" % hook.port,
             "format": "json"},
            {"url": "http://127.0.0.1:%d/slack" % hook.port,
             "format": "slack"}]},
            "policies": [{"name": "per-team", "match":
                          {"agent_class": "seeded"}, "per": ["team"],
                          "window": "total", "hard_cap_usd": 100}]})

        # /v1/spend JSON and CSV.
        r = self.admin(tg, "GET",
                       "/v1/spend?group_by=team,model,intent,tenant")
        self.assertEqual(r.status, 200, r)
        doc = strict_json(r.body, "/v1/spend")
        rows = {row["team"]: row for row in doc["rows"]}
        self.assertIn("t" + FFFD + FFFD + "am", rows, sorted(rows))
        self.assertEqual(rows["t" + FFFD + FFFD + "am"]["model"],
                         "gpt" + FFFD + FFFD)
        self.assertEqual(rows["te\u009bam"]["model"], "mod\u00e8le",
                         "valid UTF-8 must pass unchanged")
        self.assertEqual(rows["te\u009bam"]["intent"], "\x1b[31mred")
        self.assertEqual(rows["\t=1+1"]["tenant"], FFFD)
        r = self.admin(tg, "GET",
                       "/v1/spend?group_by=team,model,intent&format=csv")
        self.assertEqual(r.status, 200, r)
        rows = self.csv_rows(r.body, "/v1/spend CSV")
        flat = [c for row in rows for c in row]
        self.assertIn("t" + FFFD + FFFD + "am", flat)
        self.assertIn("'\t=1+1", flat)
        self.assertIn("'\r=2+2", flat)
        self.assertIn("' =3+3", flat)

        # /v1/calls.
        r = self.admin(tg, "GET", "/v1/calls?limit=100")
        self.assertEqual(r.status, 200, r)
        calls = {c["id"]: c for c in strict_json(r.body,
                                                   "/v1/calls")["calls"]}
        self.assertEqual(calls["seed-ff"]["intent"], "int" + FFFD)
        self.assertEqual(calls["seed-c1"]["tenant"], FFFD + FFFD)

        # /v1/alerts, and the pending alert sent again at start.
        r = self.admin(tg, "GET", "/v1/alerts")
        self.assertEqual(r.status, 200, r)
        alerts = {a["id"]: a for a in strict_json(r.body,
                                                  "/v1/alerts")["alerts"]}
        self.assertEqual(alerts["a-seeded"]["message"],
                         "stopped: " + FFFD * 3, alerts)
        got = tglib.wait_until(lambda: len(hook.got) >= 2 and hook.got, 15)
        self.assertTrue(got, "the pending alert was not delivered: %r" %
                        hook.got)
        for path, _, body in got:
            doc = strict_json(body, "webhook body %s" % path)
            if path == "/json":
                self.assertEqual(doc["policy"], "pol" + FFFD)
                self.assertEqual(doc["scope"]["team"], "t" + FFFD + "am")
            else:
                self.assertIn("stopped: " + FFFD * 3, doc["text"])

        # /v1/kills, and the refusal that quotes the kill's reason.
        r = self.admin(tg, "GET", "/v1/kills")
        self.assertEqual(r.status, 200, r)
        kills = strict_json(r.body, "/v1/kills")["kills"]
        self.assertEqual(kills[0]["reason"], "runaway " + FFFD * 2 + " loop")
        r = self.chat(tg, "killme")
        self.assertEqual(r.status, 403, r)
        doc = strict_json(r.body, "the kill's refusal")
        self.assertIn("runaway " + FFFD * 2 + " loop",
                      doc["error"]["message"])

        # /v1/budgets and /metrics.
        r = self.admin(tg, "GET", "/v1/budgets")
        self.assertEqual(r.status, 200, r)
        budgets = strict_json(r.body, "/v1/budgets")
        self.assertIn("t" + FFFD + FFFD + "am", json.dumps(
            budgets, ensure_ascii=False), budgets)
        r = self.admin(tg, "GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        strict_text(r.body, "/metrics")

        # The commands, in every format, daemon running or not.
        path = self.ledger.path
        for args in (("spend", "--by", "team,model,intent,tenant",
                      "--format", "json"),
                     ("calls", "--format", "json", "--limit", "100")):
            doc = strict_json(self.run_cli(*args, "--ledger", path),
                              "tollgate " + " ".join(args))
        self.assertIn("seed-ff", [c["id"] for c in doc["calls"]])
        out = self.run_cli("spend", "--by", "team,model,intent",
                           "--format", "csv", "--ledger", path)
        self.assertIn("t" + FFFD + FFFD + "am",
                      [c for row in self.csv_rows(out, "tollgate spend csv")
                       for c in row])
        for args in (("spend", "--by", "team,model,intent,tenant"),
                     ("calls", "--limit", "100")):
            out = self.run_cli(*args, "--ledger", path)
            text = strict_text(out, "tollgate " + " ".join(args))
            self.assertNotIn("\x1b", text, "an escape reached the terminal")
            self.assertFalse(re.search("[\x80-\x9f]", text),
                             "a C1 control reached the terminal")
            self.assertIn(FFFD, text)
        # The table lines up: every line of the spend table is as wide.
        out = strict_text(self.run_cli("spend", "--by", "team,model",
                                       "--ledger", path), "table")
        widths = {len(line.rstrip("\n")) for line in out.splitlines()
                  if not line.startswith("-")}
        self.assertEqual(len(widths), 1, out)

    # -- log lines ---------------------------------------------------------

    def test_kill_reason_cannot_forge_log_lines(self):
        """A kill_reason holding a newline (from the file, or a kill an
        older version kept) is escaped in the line that says which calls
        it stopped."""
        tg = self.start_tg()
        c = self.raw(tg.port, timeout=30)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions",
            tglib.openai_chat(ledgerlib.marker(), stream=True),
            [JSON_CT, ("X-Tollgate-Team", "victim"),
             ("x-fake-events", "40"), ("x-fake-pace-ms", "100")]))
        resp = tglib.Response()
        self.assertTrue(c.read_head(resp, time.monotonic() + 10), resp)
        self.assertEqual(resp.status, 200, resp)
        ex = ledgerlib.metering_extra(attribution={
            "headers": ["intent", "team", "tenant", "agent_class"]})
        ex["policies"] = [{
            "name": "stop-victim", "match": {"team": "victim"},
            "killed": True,
            "kill_reason": "runaway\n2026-01-01T00:00:00.000Z info: forged"}]
        text = tglib.make_config(ledgerlib.metering_upstreams(self.fp.port),
                                 extra=ex)
        # make_config writes plain scalars: quote the reason, with \n.
        text = text.replace(
            "kill_reason: runaway\n2026-01-01T00:00:00.000Z info: forged",
            'kill_reason: "runaway\\n2026-01-01T00:00:00.000Z info: '
            'forged"')
        self.assertIn('\\n2026', text)
        tg.write_config(text)
        tg.hup()
        self.assertTrue(tg.wait_log(r"session \d+: .* note=\"stopped: ", 10),
                        "the stream was not stopped:\n" + tg.log()[-2000:])
        self.assertNotRegex(tg.log(), r"(?m)^2026-01-01T00:00:00\.000Z",
                            "a kill_reason started a log line of its own")
        self.assertRegex(tg.log(), r"stopped: .*runaway\\x0a2026")

    # -- values a client sends ------------------------------------------

    def test_values_that_are_not_utf8_are_refused(self):
        tg = self.start_tg()
        since = self.fp.mark()
        for name, value in (("X-Tollgate-Team", b"t\xff\xfe"),
                            ("X-Tollgate-Intent", b"i\xc3"),
                            ("X-Tollgate-Request-Id", b"r\xff\xfe")):
            with self.subTest(header=name):
                raw = tglib.build_request(
                    "POST", "/v1/chat/completions",
                    tglib.openai_chat(ledgerlib.marker()),
                    [JSON_CT]).replace(
                        b"\r\n\r\n", b"\r\n" + name.encode() + b": " +
                        value + b"\r\n\r\n", 1)
                r = self.call(tg.port, "POST", "/v1/chat/completions",
                              raw=raw)
                self.assertEqual(r.status, 400, r)
                doc = strict_json(r.body, "the 400")
                self.assertIn(name, doc["error"]["message"])
        # A kill's reason and patterns are shown in JSON and to callers.
        for body, param in (
                (b'{"match":{"team":"x"},"reason":"stop \xff\xfe"}',
                 "reason"),
                (b'{"match":{"team":"x\xc3"}}', "team")):
            with self.subTest(kill=body):
                r = self.admin(tg, "POST", "/v1/kills", body)
                self.assertEqual(r.status, 400, r)
                doc = strict_json(r.body, "the kill's 400")
                self.assertIn(param, doc["error"])
                self.assertIn("UTF-8", doc["error"])
        r = self.admin(tg, "GET", "/v1/kills")
        self.assertEqual(strict_json(r.body, "/v1/kills")["kills"], [])
        self.assertNothingForwardedSince(self.fp, tg, since)
        # What the rows say, not the file's bytes: its pages and -shm hold
        # integers and checksums that may contain any two bytes by chance.
        for v in self.ledger.text_values():
            self.assertNotIn(b"\xff\xfe", v)
            v.decode("utf-8")  # raises on any byte that is not UTF-8


if __name__ == "__main__":
    tglib.main()
