# SPDX-License-Identifier: Apache-2.0
"""Alerts through the real binary: the alerts: config checked with
file:line:col errors (secrets and webhook URLs never echoed); GET /v1/alerts
on an empty ledger, on a ledger filled by hand (newest first, since=,
limit=, bad parameters named) and on a ledger made before the alerts table
existed; the alert families in /metrics; a reload that changes webhooks.

The last test is the end to end one: a policy's threshold fires once,
a Python receiver on loopback verifies the HMAC, and a restart does not
fire it again. It needs policies: wired into the daemon, and is skipped
only while the config still rejects policies:."""

import hashlib
import hmac
import json
import os
import re
import sqlite3
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
# Contain CANARY: tglib fails any test whose tollgate logs them.
SECRET = "hook-CANARY-secret-7d41"
SECRET_ENV = "TG_TEST_HOOK_SECRET"
URL_PATH = "/services/T000/B000/CANARYpath"


class Receiver(tglib.WebhookReceiver):
    """tglib's webhook receiver, with the URL these tests configure."""

    def url(self, path=URL_PATH):
        return "http://127.0.0.1:%d%s" % (self.port, path)


def insert_alert(db_path, **kw):
    row = {"id": "a1", "fired_at": "2026-11-28T10:00:00.000Z",
           "kind": "threshold", "policy": "researcher-daily",
           "scope_key": "match{agent_class=researcher}per{tenant=acme}"
                        "window{day}",
           "tenant": "acme", "window": "day",
           "window_start": "2026-11-28T00:00:00.000Z",
           "reset_at": "2026-11-29T00:00:00.000Z",
           "threshold_nusd": 40000000000, "spent_nusd": 41250000000,
           "cap_nusd": 50000000000, "message": None,
           "delivery": "delivered", "attempts": 2}
    row.update(kw)
    con = sqlite3.connect(db_path)
    with con:
        con.execute("INSERT INTO alerts (%s) VALUES (%s)" % (
            ", ".join(row), ", ".join("?" * len(row))), list(row.values()))
    con.close()


class AlertsTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.receivers = []

    def tearDown(self):
        for r in self.receivers:
            r.close()

    def receiver(self, replies=()):
        r = Receiver(replies)
        self.receivers.append(r)
        return r

    def start_tg(self, alerts=None, name="tollgate", extra=None):
        ex = ledgerlib.metering_extra()
        if alerts is not None:
            ex["alerts"] = alerts
        ex.update(extra or {})
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex, name=name, env={SECRET_ENV: SECRET})
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.db_path = os.path.join(self.tmp, "data/ledger.db")
        self.ledger = ledgerlib.Ledger(self.db_path, tg)
        return tg

    def get(self, tg, path):
        raw = tglib.build_request(
            "GET", path, b"", [("Host", "127.0.0.1:%d" % tg.admin_port)],
            host=None)
        return self.call(tg.admin_port, "GET", path, raw=raw)

    # -- config ------------------------------------------------------------

    def check(self, alerts_text, env=None):
        text = ("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n" +
                alerts_text)
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

    def test_config_errors(self):
        text = ("alerts:\n"
                "  webhooks:\n"
                "    - { url: \"ftp://h.example" + URL_PATH + "\" }\n"
                "    - url: \"https://h.example" + URL_PATH + "\"\n"
                "      secret_env: TG_TEST_SURELY_UNSET_HOOK\n"
                "      colour: red\n"
                "    - { url: \"https://h.example/x\", format: teams }\n"
                "  retry: { max_attempts: 0 }\n")
        rc, out, err, path = self.check(text)
        self.assertEqual(rc, 1, (out, err))
        for line, col, words in (
                (5, 14, "only http and https"),
                (7, 19, "TG_TEST_SURELY_UNSET_HOOK is not set"),
                (8, 7, "unknown key 'colour' in alerts.webhooks[1]"),
                (9, 45, "expected json or slack"),
                (10, 26, "max_attempts: must be between 1 and 100")):
            want = "%s:%d:%d: " % (path, line, col)
            hits = [l for l in err.splitlines() if l.startswith(want)]
            self.assertTrue(hits, "no error at %s in:\n%s" % (want, err))
            self.assertIn(words, hits[0])
        self.assertNotIn("CANARY", out + err)

        ok = ("alerts:\n  webhooks:\n"
              "    - { url: \"https://h.example" + URL_PATH + "\", "
              "format: json, secret_env: " + SECRET_ENV + ", timeout: 2s }\n"
              "    - { url: \"https://hooks.slack.com/services/x\", "
              "format: slack }\n"
              "  retry: { max_attempts: 6, initial_backoff: 1s, "
              "max_backoff: 60s }\n")
        rc, out, err, path = self.check(ok, env={SECRET_ENV: SECRET})
        self.assertEqual(rc, 0, (out, err))
        self.assertNotIn("CANARY", out + err)
        # An unset secret is a warning for check, an error for serve.
        rc, out, err, path = self.check(ok, env={SECRET_ENV: None})
        self.assertEqual(rc, 0, (out, err))
        self.assertIn("%s:5:" % path, err)
        self.assertIn("warning: alerts.webhooks[0].secret_env: the "
                      "environment variable " + SECRET_ENV + " is not set",
                      err)

    # -- GET /v1/alerts ---------------------------------------------------

    def test_empty_ledger_and_bad_parameters(self):
        tg = self.start_tg()
        r = self.get(tg, "/v1/alerts")
        self.assertEqual((r.status, r.json()), (200, {"alerts": []}), r)
        for path, param in (("/v1/alerts?limit=0", "limit"),
                            ("/v1/alerts?limit=1001", "limit"),
                            ("/v1/alerts?limit=x", "limit"),
                            ("/v1/alerts?since=yesterday", "since"),
                            ("/v1/alerts?colour=red", "colour"),
                            ("/v1/alerts?since=2026-11-28&since=2026-11-29",
                             "since")):
            with self.subTest(path=path):
                r = self.get(tg, path)
                self.assertEqual(r.status, 400, r)
                doc = r.json()
                self.assertIsInstance(doc.get("error"), str, doc)
                self.assertEqual(doc.get("parameter"), param, doc)

    def test_prepopulated_ledger(self):
        tg = self.start_tg()
        self.assertEqual(tg.stop(), 0)
        insert_alert(self.db_path)
        insert_alert(self.db_path, id="b2", kind="breaker",
                     fired_at="2026-11-28T12:00:00.000Z", policy=None,
                     scope_key=None, tenant=None, window=None,
                     window_start=None, reset_at=None, threshold_nusd=None,
                     cap_nusd=None, spent_nusd=7, message="loop: 5 x\nsame",
                     delivery="failed", attempts=10)
        insert_alert(self.db_path, id="c3", window="total",
                     fired_at="2026-11-27T09:00:00.000Z",
                     window_start="1970-01-01T00:00:00.000Z", reset_at=None,
                     delivery="none", attempts=0)
        tg = self.start_tg(name="tollgate2")
        r = self.get(tg, "/v1/alerts")
        self.assertEqual(r.status, 200, r)
        got = r.json()["alerts"]
        self.assertEqual([a["id"] for a in got], ["b2", "a1", "c3"])
        a1 = got[1]
        self.assertEqual(a1, {
            "id": "a1", "kind": "threshold", "policy": "researcher-daily",
            "scope": {"tenant": "acme"},
            "scope_key": "match{agent_class=researcher}per{tenant=acme}"
                         "window{day}",
            "window": "day", "window_start": "2026-11-28T00:00:00.000Z",
            "reset_at": "2026-11-29T00:00:00.000Z",
            "threshold_usd": 40.0, "spent_usd": 41.25, "cap_usd": 50.0,
            "percent_of_cap": 82.5, "message": None,
            "fired_at": "2026-11-28T10:00:00.000Z",
            # Made from the row: a row written before "extend" has it.
            "extend": {"method": "POST", "path": "/v1/budgets/extend",
                       "body": {"policy": "researcher-daily",
                                "scope": {"tenant": "acme",
                                          "agent_class": "researcher"},
                                "usd": "5.000000000",
                                "reason": "raised after alert a1",
                                "by": ""}},
            "delivery": {"status": "delivered", "attempts": 2}})
        # Dollars are exact decimals in the text, like cost_usd.
        self.assertIn('"spent_usd":41.250000000', r.body.decode())
        # A breaker has no budget: no spent_usd, whatever the row holds.
        b2 = got[0]
        self.assertEqual((b2["policy"], b2["scope"], b2["window"],
                          b2["reset_at"], b2["cap_usd"],
                          b2["percent_of_cap"], b2["spent_usd"],
                          b2["message"], b2["delivery"], b2["extend"]),
                         (None, {}, None, None, None, None, None,
                          "loop: 5 x\nsame",
                          {"status": "failed", "attempts": 10}, None))
        self.assertIsNone(got[2]["reset_at"])  # total: never resets
        r = self.get(tg, "/v1/alerts?limit=1")
        self.assertEqual([a["id"] for a in r.json()["alerts"]], ["b2"])
        r = self.get(tg, "/v1/alerts?since=2026-11-28T10%3A00%3A00Z")
        self.assertEqual([a["id"] for a in r.json()["alerts"]],
                         ["b2", "a1"])
        r = self.get(tg, "/v1/alerts?since=2026-11-28T12:00:00.001Z")
        self.assertEqual(r.json()["alerts"], [])

    def test_ledger_without_alerts_table(self):
        """A ledger made before the alerts table gains it at open, and
        keeps its calls."""
        tg = self.start_tg()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(tglib.new_marker()), [JSON_CT])
        self.assertEqual(r.status, 200, r)
        row = self.settled_row(r)
        self.assertEqual(tg.stop(), 0)
        con = sqlite3.connect(self.db_path)
        with con:
            con.execute("DROP TABLE alerts")
        con.close()
        tg = self.start_tg(name="tollgate2")
        r = self.get(tg, "/v1/alerts")
        self.assertEqual((r.status, r.json()), (200, {"alerts": []}), r)
        con = sqlite3.connect(self.db_path)
        n = con.execute("SELECT count(*) FROM calls WHERE id = ?",
                        (row["id"],)).fetchone()[0]
        cols = [c[1] for c in con.execute("PRAGMA table_info(alerts)")]
        con.close()
        self.assertEqual(n, 1)
        for c in ("id", "fired_at", "kind", "policy", "scope_key", "intent",
                  "team", "tenant", "agent_class", "environment", "window",
                  "window_start", "reset_at", "threshold_nusd", "spent_nusd",
                  "cap_nusd", "message", "delivery", "attempts"):
            self.assertIn(c, cols)

    def test_metrics_and_reload(self):
        rcv = self.receiver()
        tg = self.start_tg(alerts={"webhooks": [
            {"url": rcv.url(), "format": "json", "secret_env": SECRET_ENV}]})
        r = self.get(tg, "/metrics")
        self.assertEqual(r.status, 200, r)
        text = r.body.decode()
        for kind in ("threshold", "breaker", "kill", "other"):
            self.assertIn('tollgate_alerts_fired_total{kind="%s"} 0' % kind,
                          text)
        for res in ("delivered", "retried", "failed", "dropped"):
            self.assertIn(
                'tollgate_alert_deliveries_total{result="%s"} 0' % res, text)
        # A reload that breaks alerts: keeps the running configuration
        # and says where; a good one is taken.
        with open(tg.config_path) as f:
            cfg = f.read()
        tg.write_config(cfg.replace("format: json", "format: teams"))
        start = len(tg.stderr())
        tg.hup()
        self.assertTrue(tg.wait_log(r"reload: .*:\d+:\d+: alerts\.webhooks"
                                    r"\[0\]\.format: expected json or "
                                    r"slack", start=start), tg.stderr())
        self.assertTrue(tg.wait_log(r"reload failed", start=start))
        tg.write_config(cfg.replace("format: json", "format: slack"))
        start = len(tg.stderr())
        tg.hup()
        self.assertTrue(tg.wait_log(r"configuration reloaded", start=start))
        self.assertEqual(rcv.got, [])

    def test_pending_alert_resent_at_start(self):
        """An alert the last run fired but did not deliver is sent at
        start-up through the binary's own delivery path: retried after a
        503, signed, its id in the header, its state then delivered; the
        next start sends nothing."""
        tg = self.start_tg()
        self.assertEqual(tg.stop(), 0)
        now = time.time()
        fired = time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                              time.gmtime(now - 600))
        insert_alert(self.db_path, id="thr-pending", fired_at=fired,
                     delivery="pending", attempts=0)
        insert_alert(self.db_path, id="thr-old", delivery="pending",
                     fired_at=time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                            time.gmtime(now - 3 * 86400)))
        insert_alert(self.db_path, id="thr-done", fired_at=fired)
        rcv = self.receiver(replies=[503])
        alerts = {"webhooks": [{"url": rcv.url(), "format": "json",
                                "secret_env": SECRET_ENV}],
                  "retry": {"initial_backoff": "50ms",
                            "max_backoff": "100ms"}}
        tg = self.start_tg(alerts=alerts, name="tollgate2")
        self.assertTrue(tglib.wait_until(lambda: len(rcv.got) >= 2, 15),
                        "the pending alert was not resent: %r" % rcv.got)
        self.assertTrue(tg.wait_log(r"alert thr-pending delivered to "
                                    r"127\.0\.0\.1 \(attempt 2\)"))
        self.assertEqual(len(rcv.got), 2)
        self.assertIn("alert thr-pending was not delivered before tollgate "
                      "stopped; sending it again", tg.log())
        self.assertNotIn("thr-old", tg.log())
        self.assertNotIn("thr-done", tg.log())
        for path, headers, body in rcv.got:
            self.assertEqual(path, URL_PATH)
            self.assertEqual(headers.get("X-Tollgate-Alert-Id"),
                             "thr-pending")
            self.assertEqual(headers.get("Content-Type"), "application/json")
            want = "sha256=" + hmac.new(SECRET.encode(), body,
                                        hashlib.sha256).hexdigest()
            self.assertEqual(headers.get("X-Tollgate-Signature"), want)
        doc = json.loads(rcv.got[1][2])
        self.assertEqual(doc["id"], "thr-pending")
        self.assertEqual(doc["spent_usd"], 41.25)
        self.assertEqual(doc["fired_at"], fired)
        self.assertNotIn("delivery", doc)
        self.assertIn('"threshold_usd":40.000000000', rcv.got[1][2].decode())

        def state():
            r = self.get(tg, "/v1/alerts")
            return {a["id"]: a["delivery"] for a in r.json()["alerts"]}
        self.assertTrue(tglib.wait_until(
            lambda: state()["thr-pending"]["status"] == "delivered", 10),
            state())
        st = state()
        self.assertEqual(st["thr-pending"],
                         {"status": "delivered", "attempts": 2})
        self.assertEqual(st["thr-old"]["status"], "pending")
        r = self.get(tg, "/metrics")
        self.assertIn('tollgate_alert_deliveries_total{result="delivered"} 1',
                      r.body.decode())
        self.assertIn('tollgate_alert_deliveries_total{result="retried"} 1',
                      r.body.decode())
        self.assertEqual(tg.stop(), 0)

        # Pending alerts are queued before the proxy listens.
        tg = self.start_tg(alerts=alerts, name="tollgate3")
        self.assertNotIn("sending it again", tg.log())
        time.sleep(0.5)
        self.assertEqual(len(rcv.got), 2, "a delivered alert was resent")

    # -- end to end -------------------------------------------------------

    def test_threshold_fires_once_signed_and_not_after_restart(self):
        """END TO END. A $0.000000001 threshold on researcher calls fires
        at the first priced call, once; the receiver checks the HMAC of the
        exact body; a second call and a restart fire nothing more."""
        policies = ("policies:\n"
                    "  - name: researcher-daily\n"
                    "    match: { agent_class: researcher }\n"
                    "    window: day\n"
                    "    hard_cap_usd: 1000\n"
                    "    alert_at_usd: 0.000000001\n")
        rc, out, err, _ = self.check(policies)
        self.assertEqual(rc, 0, (out, err))

        rcv = self.receiver(replies=[503])  # the first attempt is retried
        alerts = {"webhooks": [{"url": rcv.url(), "format": "json",
                                "secret_env": SECRET_ENV}],
                  "retry": {"initial_backoff": "50ms",
                            "max_backoff": "200ms"}}
        pol = [{"name": "researcher-daily",
                "match": {"agent_class": "researcher"}, "window": "day",
                "hard_cap_usd": 1000, "alert_at_usd": "0.000000001"}]
        hdrs = [JSON_CT, ("X-Tollgate-Agent-Class", "researcher")]

        def one_call(tg):
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(tglib.new_marker()), hdrs)
            self.assertEqual(r.status, 200, r)
            self.assertGreater(self.settled_row(r)["cost_nusd"], 0)

        tg = self.start_tg(alerts=alerts, extra={"policies": pol})
        one_call(tg)
        self.assertTrue(tglib.wait_until(lambda: len(rcv.got) >= 2, 15),
                        "the alert was not retried and delivered")
        for path, headers, body in rcv.got:
            self.assertEqual(path, URL_PATH)
            want = "sha256=" + hmac.new(SECRET.encode(), body,
                                        hashlib.sha256).hexdigest()
            self.assertEqual(headers.get("X-Tollgate-Signature"), want)
        doc = json.loads(rcv.got[-1][2])
        self.assertEqual(rcv.got[-1][1].get("X-Tollgate-Alert-Id"),
                         doc["id"])
        self.assertEqual((doc["kind"], doc["policy"], doc["window"]),
                         ("threshold", "researcher-daily", "day"))
        self.assertEqual(doc["threshold_usd"], 1e-9)
        one_call(tg)
        self.assertTrue(tg.wait_log(r"alerts: alert \S+ delivered"))
        self.assertEqual(tg.stop(), 0)
        self.assertEqual(len(rcv.got), 2)

        tg = self.start_tg(alerts=alerts, extra={"policies": pol},
                           name="tollgate2")
        one_call(tg)
        r = self.get(tg, "/v1/alerts")
        got = r.json()["alerts"]
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["delivery"],
                         {"status": "delivered", "attempts": 2})
        self.assertEqual(len(rcv.got), 2, "the alert fired again after a "
                                          "restart")
        self.assertEqual(tg.log().count("tollgate alert (threshold)"), 0)


if __name__ == "__main__":
    tglib.main()
