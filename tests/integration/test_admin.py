# SPDX-License-Identifier: Apache-2.0
"""The admin API end to end (docs/api.md, Security): its own port,
the Host allowlist, Origin and Sec-Fetch-Site refusals, the bearer token,
the JSON-only POST, no CORS headers anywhere; /v1/spend and /v1/calls
against sums and rows read from the ledger itself; bad parameters named;
the budgets and alerts shapes; POST /v1/reload accepted and refused; the
admin: config checks; /metrics as Prometheus text moving with traffic."""

import csv
import io
import json
import os
import re
import socket
import time
from decimal import Decimal

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

# Contains CANARY: tglib fails any test whose tollgate logs it.
TOKEN = "adm-CANARY-5e1f9c0b2d7a4e63"
TOKEN_ENV = "TG_TEST_ADMIN_TOKEN"
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")


def admin_cfg(listen="127.0.0.1:0", **kw):
    d = {"listen": listen, "token_env": TOKEN_ENV}
    d.update(kw)
    return d


def no_cors(resp):
    return [k for k, _ in resp.headers
            if k.lower().startswith("access-control-")]


def prom_parse(text):
    """Prometheus text format 0.0.4 -> {(name, labels tuple): value}.
    Raises ValueError on a line that does not parse."""
    series = {}
    types = {}
    line_re = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$')
    label_re = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"'
                          r'\s*(,|$)')
    for n, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                if parts[3] not in ("counter", "gauge", "histogram",
                                    "summary", "untyped"):
                    raise ValueError("line %d: bad TYPE %r" % (n, line))
                types[parts[2]] = parts[3]
            elif len(parts) >= 2 and parts[1] not in ("HELP", "TYPE"):
                pass  # a comment
            continue
        m = line_re.match(line)
        if not m:
            raise ValueError("line %d does not parse: %r" % (n, line))
        labels = []
        body = m.group(3) or ""
        pos = 0
        while pos < len(body):
            lm = label_re.match(body, pos)
            if not lm:
                raise ValueError("line %d: bad labels %r" % (n, body))
            labels.append((lm.group(1), lm.group(2)))
            pos = lm.end()
        v = m.group(4)
        if v not in ("+Inf", "-Inf", "NaN"):
            float(v)
        key = (m.group(1), tuple(sorted(labels)))
        if key in series:
            raise ValueError("line %d: series repeated: %r" % (n, line))
        series[key] = float(v)
    return series, types


class AdminTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def start_admin(self, admin=None, env=None, name="tollgate",
                    policies=None):
        extra = ledgerlib.metering_extra()
        extra["admin"] = admin if admin is not None else admin_cfg()
        if policies:
            extra["policies"] = policies
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=extra, name=name,
            env=env if env is not None else {TOKEN_ENV: TOKEN})
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.assertNotEqual(tg.admin_port, tg.port)
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        self.tg = tg
        return tg

    def admin(self, method, path, body=b"", headers=(), token=TOKEN,
              host=None, tg=None):
        tg = tg or self.tg
        hdrs = []
        if host is None:
            host = "127.0.0.1:%d" % tg.admin_port
        if host is not False:
            hdrs.append(("Host", host))
        if token is not None:
            hdrs.append(("Authorization", "Bearer " + token))
        hdrs += list(headers)
        raw = tglib.build_request(method, path, body, hdrs, host=None)
        r = self.call(tg.admin_port, method, path, raw=raw)
        self.assertEqual(no_cors(r), [], "CORS headers on %s %s: %r" %
                         (method, path, r.headers))
        return r

    def assertError(self, r, status, param=None):
        self.assertEqual(r.status, status, r)
        doc = r.json()
        self.assertIsInstance(doc.get("error"), str, doc)
        if param is not None:
            self.assertEqual(doc.get("parameter"), param, doc)
        return doc

    def make_calls(self):
        """Calls through the proxy with several teams, agent classes and
        models; returns their request ids once every row has settled."""
        plan = [("alpha", "researcher", "gpt-4o-mini"),
                ("alpha", "researcher", "gpt-4o"),
                ("alpha", "ticket-agent", "gpt-4o-mini"),
                ("beta", "researcher", "gpt-4o-mini"),
                ("beta", "ticket-agent", "gpt-4o"),
                ("beta", "ticket-agent", "gpt-4o"),
                (None, "ticket-agent", "gpt-4o-mini")]
        ids = []
        for i, (team, ac, model) in enumerate(plan):
            m = ledgerlib.marker("adm%d" % i)
            hdrs = [JSON_CT, ("X-Tollgate-Agent-Class", ac)]
            if team:
                hdrs.append(("X-Tollgate-Team", team))
            r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(m, model=model), hdrs)
            self.assertEqual(r.status, 200, r)
            ids.append(self.settled_row(r)["id"])
        return ids

    # -- the checks every request passes ------------------------------------

    def test_healthz_needs_no_token(self):
        self.start_admin()
        for tok in (None, "wrong"):
            r = self.admin("GET", "/healthz", token=tok)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"status": "ok"})
            self.assertEqual(r.header("cache-control"), "no-store")

    def test_no_token_is_a_warning(self):
        # An admin API without a token answers every local client
        # (kills and reloads included): say so at warn, not info.
        tg = self.start_admin(admin={"listen": "127.0.0.1:0"})
        self.assertRegex(tg.stderr(), r"(?m) warn: admin: no token "
                         r"configured; the admin API is open")
        self.assertEqual(self.admin("GET", "/v1/budgets", token=None).status,
                         200)
        self.assertEqual(tg.stop(), 0)
        tg2 = self.start_admin(name="t2")
        self.assertNotIn("no token", tg2.stderr())

    def test_token(self):
        self.start_admin()
        bad = [None, "wrong", TOKEN[:-1], TOKEN + "x", "x" + TOKEN, ""]
        for tok in bad:
            with self.subTest(token=tok and tok.replace("CANARY", "C")):
                r = self.admin("GET", "/v1/budgets", token=tok)
                self.assertError(r, 401)
                self.assertEqual(r.header("www-authenticate"), "Bearer", r)
        for hdr in (("Authorization", "Basic " + TOKEN),
                    ("Authorization", TOKEN)):
            r = self.admin("GET", "/v1/budgets", token=None, headers=[hdr])
            self.assertError(r, 401)
        # The token twice is not the token.
        r = self.admin("GET", "/v1/budgets", headers=[
            ("Authorization", "Bearer " + TOKEN)])
        self.assertError(r, 401)
        r = self.admin("GET", "/v1/budgets")
        self.assertEqual(r.status, 200, r)
        # An unknown path says nothing to a caller without the token.
        r = self.admin("GET", "/v1/secret-things", token=None)
        self.assertError(r, 401)

    def test_host_allowlist(self):
        tg = self.start_admin()
        p = tg.admin_port
        for host in ("evil.com", "127.0.0.1.evil.com:%d" % p, "localhost:1",
                     "evil.com:%d" % p, "127.0.0.1", "127.0.0.2:%d" % p,
                     "localhost", "%d" % p, "127.0.0.1:%d.evil.com" % p,
                     "[::1]", "127.0.0.1:%d:%d" % (p, p)):
            for path in ("/healthz", "/v1/budgets"):
                with self.subTest(host=host, path=path):
                    r = self.admin("GET", path, host=host)
                    self.assertError(r, 421)
                    self.assertEqual(r.json()["error"],
                                     "misdirected request")
        # No Host at all: the HTTP reader refuses it before the admin API.
        r = self.admin("GET", "/v1/budgets", host=False)
        self.assertIn(r.status, (400, 421), r)
        for host in ("127.0.0.1:%d" % p, "localhost:%d" % p,
                     "LOCALHOST:%d" % p, "[::1]:%d" % p):
            with self.subTest(host=host):
                r = self.admin("GET", "/v1/budgets", host=host)
                self.assertEqual(r.status, 200, r)

    def test_origin_refused(self):
        self.start_admin()
        # An Origin naming this listener is let through only when it is
        # the listener the Host names (the dashboard's own requests,
        # test_dashboard.py); another name for it is another origin.
        for hdr in (("Origin", "http://evil.com"), ("Origin", "null"),
                    ("Origin", "http://localhost:%d" % self.tg.admin_port),
                    ("Sec-Fetch-Site", "cross-site"),
                    ("Sec-Fetch-Site", "same-site")):
            for path in ("/healthz", "/v1/budgets"):
                with self.subTest(hdr=hdr, path=path):
                    r = self.admin("GET", path, headers=[hdr])
                    self.assertError(r, 403)
        r = self.admin("GET", "/v1/budgets",
                       headers=[("Sec-Fetch-Site", "same-origin")])
        self.assertEqual(r.status, 200, r)

    def test_post_must_be_json(self):
        tg = self.start_admin()
        for hdrs in ([("Content-Type", "text/plain")],
                     [("Content-Type", "application/x-www-form-urlencoded")],
                     [("Content-Type", "multipart/form-data; boundary=x")],
                     [("Content-Type", "application/jsonx")], []):
            with self.subTest(hdrs=hdrs):
                r = self.admin("POST", "/v1/reload", b"{}", headers=hdrs)
                self.assertError(r, 415)
        self.assertNotIn("reloading", tg.stderr())
        r = self.admin("POST", "/v1/reload", b"{}", headers=[
            ("Content-Type", "application/json; charset=utf-8")])
        self.assertEqual(r.status, 200, r)

    def test_methods_paths_and_no_cors(self):
        self.start_admin()
        # OPTIONS (a CORS preflight) gets no CORS answer: admin() checks
        # every response for Access-Control-* headers.
        r = self.admin("OPTIONS", "/v1/spend", headers=[
            ("Access-Control-Request-Method", "GET")])
        self.assertError(r, 405)
        self.assertEqual(r.header("allow"), "GET")
        r = self.admin("OPTIONS", "/v1/spend", headers=[
            ("Origin", "http://evil.com"),
            ("Access-Control-Request-Method", "GET")])
        self.assertError(r, 403)
        r = self.admin("POST", "/v1/spend", b"{}", headers=[JSON_CT])
        self.assertError(r, 405)
        self.assertEqual(r.header("allow"), "GET")
        r = self.admin("GET", "/v1/reload")
        self.assertError(r, 405)
        self.assertEqual(r.header("allow"), "POST")
        for path in ("/nope", "/v1/spend/", "//v1/spend", "/v1/%73pend",
                     "/V1/spend", "/v1/kill", "/v1/kills/a/b", "/healthz/"):
            with self.subTest(path=path):
                self.assertError(self.admin("GET", path), 404)

    def test_ports_are_separate(self):
        tg = self.start_admin()
        since = self.fp.mark()
        r = self.call(tg.port, "GET", "/healthz",
                      headers=[("Host", "127.0.0.1:%d" % tg.port)])
        self.assertEqual(r.status, 404, r)
        for path in ("/v1/spend", "/v1/budgets", "/metrics"):
            r = self.call(tg.port, "GET", path, headers=[
                ("Host", "127.0.0.1:%d" % tg.port),
                ("Authorization", "Bearer " + TOKEN)])
            self.assertNotEqual(r.status, 200, "%s served on the proxy "
                                "port: %r" % (path, r))
        m = ledgerlib.marker("admproxy")
        r = self.admin("POST", "/v1/chat/completions", tglib.openai_chat(m),
                       headers=[JSON_CT])
        self.assertError(r, 404)
        self.assertNothingForwardedSince(self.fp, tg, since)

    # -- spend and calls ------------------------------------------------------

    def spend(self, query):
        r = self.admin("GET", "/v1/spend?" + query)
        self.assertEqual(r.status, 200, r)
        return r

    def test_spend_matches_ledger(self):
        self.start_admin()
        self.make_calls()
        rows = self.ledger.rows("status <> 'in_flight'")
        self.assertEqual(len(rows), 7)
        for group in ("team", "model", "team,agent_class", "agent_class",
                      "provider,model", ""):
            with self.subTest(group_by=group):
                dims = [d for d in group.split(",") if d]
                want = {}
                for row in rows:
                    key = tuple(row[d] or None for d in dims)
                    w = want.setdefault(key, [0, 0, 0, 0])
                    w[0] += 1
                    w[1] += row["input_tokens"]
                    w[2] += row["output_tokens"]
                    w[3] += row["cost_nusd"]
                doc = self.spend("group_by=" + group).json()
                got = {}
                for g in doc["rows"]:
                    key = tuple(g[d] or None for d in dims)
                    self.assertNotIn(key, got, doc)
                    got[key] = [g["calls"], g["input_tokens"],
                                g["output_tokens"], g["cost_nusd"]]
                    self.assertEqual(Decimal(str(g["cost_usd"])),
                                     Decimal(g["cost_nusd"]) / 10 ** 9)
                self.assertEqual(got, want, doc)
                self.assertEqual(doc["total_cost_nusd"],
                                 sum(r["cost_nusd"] for r in rows))
                self.assertGreater(doc["total_cost_nusd"], 0)
        # A tag filter.
        doc = self.spend("group_by=agent_class&team=alpha").json()
        alpha = [r for r in rows if r["team"] == "alpha"]
        self.assertEqual(sum(g["calls"] for g in doc["rows"]), len(alpha))
        self.assertEqual(doc["total_cost_nusd"],
                         sum(r["cost_nusd"] for r in alpha))
        # CSV parses back to the same numbers.
        js = self.spend("group_by=team,model").json()
        r = self.spend("group_by=team,model&format=csv")
        self.assertTrue(r.header("content-type").startswith("text/csv"), r)
        recs = list(csv.DictReader(io.StringIO(r.body.decode())))
        self.assertEqual(len(recs), len(js["rows"]), r.body)
        by_key = {(g["team"] or "", g["model"] or ""): g for g in js["rows"]}
        for rec in recs:
            g = by_key[(rec["team"], rec["model"])]
            self.assertEqual(int(rec["calls"]), g["calls"])
            self.assertEqual(int(rec["input_tokens"]), g["input_tokens"])
            self.assertEqual(int(rec["output_tokens"]), g["output_tokens"])
            self.assertEqual(int(Decimal(rec["cost_usd"]) * 10 ** 9),
                             g["cost_nusd"])

    def test_calls_paging(self):
        self.start_admin()
        ids = self.make_calls()
        seen, cursor, pages = [], None, 0
        while True:
            q = "limit=2" + ("&cursor=" + cursor if cursor else "")
            r = self.admin("GET", "/v1/calls?" + q)
            self.assertEqual(r.status, 200, r)
            doc = r.json()
            self.assertLessEqual(len(doc["calls"]), 2)
            for c in doc["calls"]:
                self.assertIn("cost_usd", c)
                row = self.ledger.row(c["id"])
                self.assertEqual(c["cost_nusd"], row["cost_nusd"])
                self.assertEqual(c["team"], row["team"])
            seen += [c["id"] for c in doc["calls"]]
            pages += 1
            cursor = doc["next_cursor"]
            if not cursor:
                break
            self.assertLess(pages, 20, "paging does not end")
        self.assertEqual(len(seen), len(set(seen)), seen)
        self.assertEqual(set(seen), set(ids))
        want = [r["id"] for r in sorted(
            self.ledger.rows(), key=lambda r: (r["started_at"], r["id"]),
            reverse=True)]
        self.assertEqual(seen, want, "not newest first")
        doc = self.admin("GET", "/v1/calls?team=beta").json()
        self.assertEqual(sorted(c["id"] for c in doc["calls"]), sorted(
            r["id"] for r in self.ledger.rows("team = 'beta'")))

    def test_bad_parameters_named(self):
        self.start_admin()
        for path, param in (("/v1/spend?group_by=colour", "group_by"),
                            ("/v1/spend?teams=x", "teams"),
                            ("/v1/spend?from=yesterday", "from"),
                            ("/v1/spend?format=xml", "format"),
                            ("/v1/calls?limit=0", "limit"),
                            ("/v1/calls?limit=abc", "limit"),
                            ("/v1/calls?format=csv", "format"),
                            ("/v1/calls?cursor=%ZZ", "cursor"),
                            ("/v1/spend?team=a&team=b", "team")):
            with self.subTest(path=path):
                self.assertError(self.admin("GET", path), 400, param)
        # A quote in a value is data, never SQL.
        r = self.spend("group_by=team&team=" +
                       "x%27%20OR%201%3D1%20--")
        self.assertEqual(r.json()["rows"], [], r)

    def test_client_gone_mid_query(self):
        tg = self.start_admin()
        self.make_calls()
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", tg.admin_port))
            s.sendall(tglib.build_request(
                "GET", "/v1/spend?group_by=team,model,day", b"", [
                    ("Host", "127.0.0.1:%d" % tg.admin_port),
                    ("Authorization", "Bearer " + TOKEN)], host=None))
            s.close()
        self.assertTrue(tglib.wait_until(
            lambda: tg.stderr().count("GET /v1/spend") >= 20, 10),
            "every abandoned query is logged")
        self.assertTrue(tg.alive())
        self.assertEqual(self.spend("group_by=team").json()["total_calls"],
                         7)

    # -- budgets, alerts, reload ---------------------------------------------

    def test_budgets_and_alerts_shapes(self):
        self.start_admin()
        r = self.admin("GET", "/v1/budgets")
        self.assertEqual((r.status, r.json()), (200, {"budgets": []}))
        self.assertTrue(r.header("content-type").startswith(
            "application/json"))
        r = self.admin("GET", "/v1/alerts")
        self.assertEqual((r.status, r.json()), (200, {"alerts": []}))

    def test_reload(self):
        tg = self.start_admin()
        r = self.admin("POST", "/v1/reload", b"{}", headers=[JSON_CT])
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["status"], "reloaded")
        gen = doc["generation"]
        self.assertGreaterEqual(gen, 2)

        with open(tg.config_path) as f:
            good = f.read()
        lines = good.rstrip("\n").split("\n")
        tg.write_config(good.rstrip("\n") + "\nbogus_key: 1\n")
        r = self.admin("POST", "/v1/reload", b"", headers=[JSON_CT])
        self.assertEqual(r.status, 422, r)
        doc = r.json()
        self.assertEqual(doc["status"], "refused")
        want = "%s:%d:1: unknown key 'bogus_key'" % (tg.config_path,
                                                    len(lines) + 1)
        self.assertTrue(any(e.startswith(want) for e in doc["errors"]),
                        "want %r in %r" % (want, doc["errors"]))
        # The running config is kept: calls still work.
        m = ledgerlib.marker("afterrefusal")
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(m), [JSON_CT])
        self.assertEqual(r.status, 200, r)

        tg.write_config(good)
        r = self.admin("POST", "/v1/reload", b"{}", headers=[JSON_CT])
        self.assertEqual(r.json(), {"status": "reloaded",
                                    "generation": gen + 1})
        r = self.admin("POST", "/v1/reload", b"not json", headers=[JSON_CT])
        self.assertError(r, 400)

    def test_reload_warns_admin_changes(self):
        tg = self.start_admin()
        with open(tg.config_path) as f:
            good = f.read()
        tg.write_config(good.replace("listen: 127.0.0.1:0\n  token_env",
                                     "listen: 127.0.0.1:1\n  token_env"))
        r = self.admin("POST", "/v1/reload", b"{}", headers=[JSON_CT])
        self.assertEqual(r.status, 200, r)
        self.assertTrue(tg.wait_log(r"admin changes need a restart"))
        self.assertEqual(self.admin("GET", "/v1/budgets").status, 200)

    # -- metrics --------------------------------------------------------------

    def metrics(self):
        r = self.admin("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type").startswith(
            "text/plain; version=0.0.4"), r)
        try:
            return prom_parse(r.body.decode())
        except ValueError as e:
            self.fail("/metrics is not Prometheus text: %s\n%s" %
                      (e, r.body.decode()[:2000]))

    def test_metrics_move_with_traffic(self):
        self.start_admin()
        self.assertError(self.admin("GET", "/metrics", token=None), 401)

        def calls_total(series):
            return sum(v for (name, _), v in series.items()
                       if name == "tollgate_calls_total")
        before, types = self.metrics()
        self.assertEqual(types.get("tollgate_calls_total"), "counter")
        self.make_calls()
        after, _ = self.metrics()
        self.assertEqual(calls_total(after) - calls_total(before), 7,
                         sorted(k for k in after
                                if k[0] == "tollgate_calls_total"))
        for (name, labels), _ in after.items():
            self.assertNotIn("intent", dict(labels), name)

    def test_budget_and_process_metrics(self):
        """Each budget scope's spend, reservations, cap and state are
        gauges with the figures /v1/budgets has, for at most 256 scopes
        (those that spent most; the rest are counted, not shown), and
        the process_* metrics are there."""
        t0 = time.time()
        self.start_admin(policies=[
            {"name": "per-team", "match": {"team": "*"}, "per": ["team"],
             "window": "day", "hard_cap_usd": "10",
             "alert_at_usd": ["0.000001"]},
            # Intent is never a label: such scopes are counted, not shown.
            {"name": "per-intent", "per": ["intent"], "window": "day",
             "alert_at_usd": ["100"]}])
        conn = tglib.RawConn(self.tg.port, timeout=30)
        for i in range(300):
            # team-000 makes two calls: it spent most, and is shown.
            for _ in range(2 if i == 0 else 1):
                conn.send(tglib.build_request(
                    "POST", "/v1/chat/completions",
                    tglib.openai_chat(ledgerlib.marker("g")),
                    [JSON_CT, ("X-Tollgate-Team", "team-%03d" % i)]))
                self.assertEqual(conn.read_response().status, 200)
        conn.close()
        series, types = self.metrics()
        self.assertEqual(types.get("tollgate_budget_spent_nusd"), "gauge")
        spent = {dict(lb)["team"]: v for (n, lb), v in series.items()
                 if n == "tollgate_budget_spent_nusd"}
        self.assertEqual(len(spent), 256)
        for (n, lb), _ in series.items():
            self.assertNotIn("intent", dict(lb), n)
        # 44 teams past the 256, and every per-intent scope.
        r = self.admin("GET", "/v1/budgets")
        nintent = len([x for x in r.json()["budgets"]
                       if x["policy"] == "per-intent"])
        self.assertGreater(nintent, 0)
        self.assertEqual(series[("tollgate_budget_scopes_not_shown", ())],
                         300 - 256 + nintent)
        b = {x["scope"]["team"]: x for x in r.json()["budgets"]
             if x["policy"] == "per-team"}
        self.assertEqual(spent["team-000"], b["team-000"]["spent_nusd"])
        self.assertGreater(spent["team-000"], b["team-001"]["spent_nusd"])
        labels = (("policy", "per-team"), ("team", "team-000"))
        self.assertEqual(series[("tollgate_budget_cap_nusd", labels)],
                         10 * 10**9)
        self.assertEqual(series[("tollgate_budget_reserved_nusd", labels)],
                         0)
        self.assertEqual(series[("tollgate_budget_state", tuple(sorted(
            labels + (("state", "alerting"),))))], 1)
        self.assertGreater(series[("process_resident_memory_bytes", ())],
                           1 << 20)
        self.assertGreaterEqual(series[("process_open_fds", ())], 5)
        self.assertGreater(series[("process_max_fds", ())],
                           series[("process_open_fds", ())])
        self.assertGreater(series[("process_cpu_seconds_total", ())], 0)
        self.assertEqual(types.get("process_cpu_seconds_total"), "counter")
        self.assertLess(abs(series[("process_start_time_seconds", ())] -
                            t0), 60)

    def test_checkpoints_keep_the_wal_small(self):
        """The checkpointer thread copies the WAL into the database off the
        writer's commits: after a few thousand ledger pages the metrics
        count checkpoints, the WAL has started over instead of holding every
        page written, and a clean stop leaves it empty."""
        tg = self.start_admin()
        wal = self.ledger.path + "-wal"
        before, _ = self.metrics()
        self.assertEqual(
            before[("tollgate_ledger_checkpoint_seconds_count", ())], 0)
        conn = tglib.RawConn(tg.port, timeout=30)
        body = tglib.openai_chat(ledgerlib.marker("ckpt"))
        # Each call writes a few pages twice (reservation, settlement):
        # 2,000 calls are thousands of pages, several checkpoints' worth.
        # The WAL must start over (its header's salt changes) instead of
        # holding every page written. When depends on when the
        # checkpointer thread gets a CPU, so on a loaded machine the calls
        # go on (up to 30 s) until it has.
        n, restarts, salt = 0, 0, None
        deadline = time.monotonic() + 30
        while n < 2000 or (restarts == 0 and n < 6000 and
                           time.monotonic() < deadline):
            conn.send(tglib.build_request(
                "POST", "/v1/chat/completions", body,
                [JSON_CT, ("X-Tollgate-Team", "ckpt")]))
            r = conn.read_response(30)
            self.assertEqual(r.status, 200, "call %d: %r" % (n, r))
            n += 1
            if n % 50 == 0:
                now = self.ledger.wal_salt()
                if salt is not None and now is not None and now != salt:
                    restarts += 1
                salt = now
        conn.close()
        self.ledger.wait_count(n, "status = 'ok'", timeout=30)
        self.assertTrue(tglib.wait_until(lambda: self.metrics()[0][
            ("tollgate_ledger_checkpoint_seconds_count", ())] >= 1, 10),
            "no checkpoint after %d calls" % n)
        after, _ = self.metrics()
        self.assertGreaterEqual(
            after[("tollgate_ledger_checkpoint_seconds_max", ())], 0)
        self.assertGreaterEqual(restarts, 1, "the WAL never started over "
                                "in %d calls" % n)
        self.assertEqual(tg.stop(), 0)
        self.assertEqual(os.path.getsize(wal) if os.path.exists(wal) else 0,
                         0, "the WAL is not empty after a clean stop")
        self.assertEqual(self.ledger.count("status = 'ok'"), n)


class AdminConfigTest(tglib.TGTestCase):
    """tollgate check on admin: sections."""

    BASE = """\
listen: 127.0.0.1:8787
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com" }
"""

    def check(self, admin_text, env=None):
        text = self.BASE + admin_text
        old = {k: os.environ.get(k) for k in (env or {})}
        try:
            for k, v in (env or {}).items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            return tglib.run_check(text, self.tmp)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def assertCheckError(self, admin_text, line, col, words, env=None):
        rc, out, err, path = self.check(admin_text, env)
        self.assertEqual(rc, 1, (out, err))
        want = "%s:%d:%d: " % (path, line, col)
        hits = [l for l in err.splitlines() if l.startswith(want)]
        self.assertTrue(hits, "no error at %s in:\n%s" % (want, err))
        self.assertTrue(all(w in hits[0] for w in words), hits[0])
        self.assertNotIn("CANARY", out + err)

    def test_non_loopback_needs_token(self):
        self.assertCheckError("admin:\n  listen: 0.0.0.0:8788\n", 5, 11,
                              ["admin.listen", "token"])
        self.assertCheckError("admin: { listen: \"10.1.2.3:8788\" }\n", 4,
                              18, ["not a loopback", "token"])
        rc, out, err, _ = self.check(
            "admin:\n  listen: 0.0.0.0:8788\n  token_env: TG_ADM_T\n",
            env={"TG_ADM_T": TOKEN})
        self.assertEqual(rc, 0, err)

    def test_token_env_unset(self):
        # check warns (a CI job or an analyst need not hold the token)...
        text = "admin:\n  listen: 0.0.0.0:8788\n  token_env: TG_ADM_UNSET\n"
        rc, out, err, path = self.check(text, env={"TG_ADM_UNSET": None})
        self.assertEqual(rc, 0, (out, err))
        self.assertEqual(out, "configuration OK\n")
        self.assertIn("%s:6:14: warning: admin.token_env: the environment "
                      "variable TG_ADM_UNSET is not set here" % path, err)
        # ...the daemon, which would serve without it, refuses to start.
        os.environ.pop("TG_ADM_UNSET", None)
        tg = tglib.Tollgate(self.tmp, self.BASE.replace(
            "127.0.0.1:8787", "127.0.0.1:0") + text, wait=False)
        self._procs.append(tg)
        self.assertEqual(tg.wait(15), 1)
        tg.expected_exit = True
        self.assertIn("admin.token_env: the environment variable "
                      "TG_ADM_UNSET is not set", tg.stderr())
        self.assertNotRegex(tg.stderr(), tg.LISTEN_RE.pattern)

    def test_same_as_proxy(self):
        self.assertCheckError("admin:\n  listen: 127.0.0.1:8787\n", 5, 11,
                              ["proxy"])
        # The default admin port, taken by the proxy.
        rc, out, err, path = tglib.run_check(
            "listen: 127.0.0.1:8788\nupstreams: {}\n", self.tmp)
        self.assertEqual(rc, 1, out)
        self.assertIn("%s:1:9: admin.listen" % path, err)

    def test_token_file(self):
        p = os.path.join(self.tmp, "admin.token")
        with open(p, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(p, 0o640)
        self.assertCheckError(
            "admin:\n  listen: 0.0.0.0:8788\n  token_file: admin.token\n",
            6, 15, ["group or others", "chmod 600"])
        os.chmod(p, 0o600)
        rc, out, err, _ = self.check(
            "admin:\n  listen: 0.0.0.0:8788\n  token_file: admin.token\n")
        self.assertEqual(rc, 0, err)
        self.assertCheckError(
            "admin:\n  token_file: admin.token\n  token_env: X\n", 6, 14,
            ["already set"])

    def test_token_file_serves(self):
        p = os.path.join(self.tmp, "admin.token")
        with open(p, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(p, 0o600)
        fp = self.fakeprov()
        tg = self.tollgate(upstreams=tglib.std_upstreams(fp.port), extra={
            "admin": {"listen": "127.0.0.1:0", "token_file": p}})
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        port = int(m.group(1))
        host = ("Host", "127.0.0.1:%d" % port)
        r = self.call(port, "GET", "/v1/alerts", headers=[host])
        self.assertEqual(r.status, 401, r)
        r = self.call(port, "GET", "/v1/alerts", headers=[
            host, ("Authorization", "Bearer " + TOKEN)])
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    tglib.main()
