# SPDX-License-Identifier: Apache-2.0
"""Seeing the fleet through the admin API, with a real redis-server and two
tollgate instances sharing one capped budget (fakeprov as the provider).

GET /v1/fleet lists both instances by their heartbeats and the lease held
here after a few calls; GET /v1/budgets shows the fleet's spend, which is
the sum of both instances' spend and of their ledgers' cost_nusd; with
Redis killed both say degraded, and once it is back (empty) they recover
and the fleet's spend is rebuilt from the instances' own totals (Redis
and /v1/budgets agree with the ledgers again); /metrics
counts Redis commands and lease syncs. Without fleet: /v1/fleet is
{"enabled": false} and nothing fleet-related shows anywhere.

The price table is the test's own: test-model costs $10 per million output
tokens and nothing for input, so a call of 30,000 output tokens costs
exactly $0.30 (fakeprov reports 30,000 when told x-fake-event-tokens:
10000 over its 3 events)."""

import json
import os
import re
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
import ledgerlib  # noqa: E402
import redislib  # noqa: E402
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "fleet-admin-test-1"
models:
  test-model:
    input: 0
    output: 10.00
    max_output_tokens: 30000
"""

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
COST = 300000000           # $0.30 a call
CAP = 10 * 1000000000      # $10 a day, for the whole fleet
FULL = ("x-fake-event-tokens", "10000")

POLICIES = [{"name": "fleet-daily", "match": {"team": "search"},
             "window": "day", "hard_cap_usd": 10}]


def metric(text, name):
    """The value of an unlabelled sample, or None."""
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


class FleetAdminTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "test-prices.yaml"), "w") as f:
            f.write(PRICES)

    def start(self, name, fleet=None):
        doc = {"prices": "test-prices.yaml", "policies": POLICIES}
        if fleet is not None:
            doc["fleet"] = fleet
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                           extra=doc, name=name)
        tg.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/%s.db" % name), tg)
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        return tg

    def fleet_conf(self, redis, instance):
        return {"redis": redis.url, "instance": instance,
                "lease_usd": "1.00", "lease_ttl": "30s", "wait": "1s",
                "connect_timeout": "500ms", "command_timeout": "500ms",
                "when_down": "local"}

    def admin_text(self, tg, path):
        raw = tglib.build_request(
            "GET", path, b"", [("Host", "127.0.0.1:%d" % tg.admin_port)],
            host=None)
        r = self.call(tg.admin_port, "GET", path, raw=raw)
        self.assertEqual(r.status, 200, r)
        return r.body.decode()

    def admin_get(self, tg, path):
        return json.loads(self.admin_text(tg, path))

    def chat(self, tg):
        body = json.dumps({"model": "test-model", "user": new_marker(),
                           "max_tokens": 30000,
                           "messages": [{"role": "user", "content": "hi"}]})
        r = self.call(tg.port, "POST", "/v1/chat/completions", body.encode(),
                      [JSON_CT, ("X-Tollgate-Team", "search"), FULL],
                      timeout=30)
        self.assertEqual(r.status, 200, r)

    def budget(self, tg):
        doc = self.admin_get(tg, "/v1/budgets")
        rows = [b for b in doc["budgets"] if b["policy"] == "fleet-daily"]
        self.assertEqual(len(rows), 1, doc)
        return rows[0]

    def ledger_sum(self, *tgs):
        for tg in tgs:
            tg.wait_written()
        return sum(tg.ledger.scalar(
            "SELECT coalesce(sum(cost_nusd), 0) FROM calls "
            "WHERE status = 'ok'") for tg in tgs)

    def wait_fleet_spent(self, tgs, want_calls, timeout=20):
        """Until every instance's budget shows a fleet spend equal to the
        sum of both ledgers, which hold want_calls settled calls."""
        def agreed():
            total = self.ledger_sum(*tgs)
            if total != want_calls * COST:
                return None
            rows = [self.budget(tg) for tg in tgs]
            if all(b["fleet"]["spent_nusd"] == total for b in rows):
                return rows
            return None
        rows = tglib.wait_until(agreed, timeout, interval=0.1,
                                what="fleet spend = sum of the ledgers")
        self.assertTrue(rows, "fleet spend never matched the ledgers: %s, "
                        "ledgers %d" % ([self.budget(tg) for tg in tgs],
                                        self.ledger_sum(*tgs)))
        return rows

    def test_fleet_seen_from_admin(self):
        r = redislib.start(self)
        a = self.start("a", self.fleet_conf(r, "pod-a"))
        b = self.start("b", self.fleet_conf(r, "pod-b"))

        # Both heartbeats are listed by each instance.
        def both_seen():
            doc = self.admin_get(a, "/v1/fleet")
            names = sorted(i["instance"] for i in doc["instances"])
            return doc if names == ["pod-a", "pod-b"] else None
        doc = tglib.wait_until(both_seen, 15, interval=0.2,
                               what="both instances in /v1/fleet")
        self.assertTrue(doc, self.admin_get(a, "/v1/fleet"))
        self.assertIs(doc["enabled"], True)
        self.assertEqual(doc["instance"], "pod-a")
        self.assertEqual(doc["state"], "up")
        self.assertIs(doc["redis"]["connected"], True)
        self.assertEqual(doc["redis"]["url"], r.url)
        for inst in doc["instances"]:
            self.assertIs(inst["alive"], True, inst)
            self.assertGreaterEqual(inst["heartbeat_age_ms"], 0, inst)
            self.assertLess(inst["heartbeat_age_ms"], 10000, inst)

        # Calls on both: the lease used here is listed by /v1/fleet.
        for _ in range(3):
            self.chat(a)
        for _ in range(2):
            self.chat(b)
        doc = self.admin_get(a, "/v1/fleet")
        self.assertEqual(len(doc["leases"]), 1, doc)
        lease = doc["leases"][0]
        self.assertIn("team=search", lease["scope"])
        self.assertEqual(lease["cap_nusd"], CAP)
        self.assertEqual(lease["cap_usd"], 10)
        self.assertGreater(lease["lease_nusd"] + lease["unreported_nusd"],
                           0, lease)
        # Money as the rest of the API writes it: nine exact decimals
        # beside the integer, in the leases and the heartbeats alike.
        text = self.admin_text(a, "/v1/fleet")
        self.assertRegex(text, r'"lease_usd":\d+\.\d{9},"lease_nusd":\d+')
        self.assertRegex(text, r'"leased_usd":\d+\.\d{9},"leased_nusd":\d+')

        # The fleet's spend: the sum of both instances', and of their
        # ledgers, on each instance's /v1/budgets.
        rows = self.wait_fleet_spent([a, b], 5)
        for row in rows:
            f = row["fleet"]
            self.assertEqual(f["state"], "up", row)
            self.assertEqual(row["state"], "ok", row)
            self.assertEqual(f["spent_usd"] * 1e9, f["spent_nusd"], row)
            self.assertLessEqual(f["lease_nusd"], f["leased_nusd"], row)
            self.assertIsNone(f["local_share_nusd"], row)
            self.assertIsNotNone(f["synced_at"], row)
            self.assertEqual(row["spent_nusd"], f["spent_nusd"], row)
            self.assertEqual(row["cap_nusd"], CAP, row)
        # The same figure in Redis, where the fleet keeps it.
        keys = r.cmd("KEYS", "tollgate:b:*")
        self.assertEqual(len(keys), 1, keys)
        h = r.hgetall(keys[0])
        self.assertEqual(int(h["spent"]), 5 * COST, h)

        # /metrics: Redis commands and lease syncs counted, Redis up.
        self.assertEqual(self.call(
            a.admin_port, "GET", "/healthz", b"",
            [("Host", "127.0.0.1:%d" % a.admin_port)]).json(),
            {"status": "ok"})
        text = self.admin_text(a, "/metrics")
        self.assertEqual(metric(text, "tollgate_fleet_up"), 1)
        self.assertGreater(
            metric(text, "tollgate_fleet_redis_commands_total"), 0)
        self.assertGreater(
            metric(text, "tollgate_fleet_lease_syncs_total"), 0)
        self.assertIn('tollgate_fleet_alert_claims_total{result="won"} ',
                      text)

        # Redis gone: both instances say degraded.
        r.kill()
        for tg in (a, b):
            doc = tglib.wait_until(
                lambda tg=tg: (lambda d: d if d["state"] == "degraded"
                               else None)(self.admin_get(tg, "/v1/fleet")),
                15, interval=0.1, what="degraded")
            self.assertTrue(doc, self.admin_get(tg, "/v1/fleet"))
            self.assertIs(doc["redis"]["connected"], False)
            self.assertTrue(doc["redis"]["error"], doc)
            row = self.budget(tg)
            self.assertEqual(row["state"], "degraded", row)
            self.assertEqual(row["fleet"]["state"], "degraded", row)
            # The local share: the room nobody held, split between the
            # instances alive, as Redis last answered.
            self.assertIsNotNone(row["fleet"]["local_share_nusd"], row)
            self.assertGreater(row["fleet"]["local_share_nusd"], 0, row)
            self.assertLessEqual(row["fleet"]["local_share_nusd"],
                                 (CAP - 5 * COST) // 2, row)
            text = self.admin_text(tg, "/metrics")
            self.assertEqual(metric(text, "tollgate_fleet_up"), 0)
            # One fleet alert says so, counted under its own kind.
            self.assertIsNotNone(tg.wait_log(
                r"fleet: Redis at \S+ does not answer", 10), tg.log())
            self.assertIn('tollgate_alerts_fired_total{kind="fleet"} 1\n',
                          self.admin_text(tg, "/metrics"))
        # Calls go on against the lease and the local share.
        self.chat(a)
        # /healthz says so too (no token needed), still 200.
        h = self.call(a.admin_port, "GET", "/healthz", b"",
                      [("Host", "127.0.0.1:%d" % a.admin_port)])
        self.assertEqual(h.status, 200)
        self.assertEqual(h.json(), {"status": "degraded",
                                    "fleet": "degraded"})

        # Redis back, empty: both recover, and the fleet's spend is
        # rebuilt from what each instance reports of its own.
        r.restart()
        for tg in (a, b):
            doc = tglib.wait_until(
                lambda tg=tg: (lambda d: d if d["state"] == "up"
                               else None)(self.admin_get(tg, "/v1/fleet")),
                20, interval=0.1, what="up again")
            self.assertTrue(doc, self.admin_get(tg, "/v1/fleet"))
            self.assertIs(doc["redis"]["connected"], True)
        # An instance syncs a budget only while it holds a lease or has
        # spend to report: a call on each, and both learn the total when
        # they give their leases back (idle, 5 s).
        self.chat(a)
        self.chat(b)
        rows = self.wait_fleet_spent([a, b], 8)
        for row in rows:
            self.assertEqual(row["state"], "ok", row)
            self.assertEqual(row["fleet"]["state"], "up", row)
            self.assertIsNone(row["fleet"]["local_share_nusd"], row)
        self.assertEqual(self.call(
            a.admin_port, "GET", "/healthz", b"",
            [("Host", "127.0.0.1:%d" % a.admin_port)]).json(),
            {"status": "ok"})
        text = self.admin_text(a, "/metrics")
        self.assertEqual(metric(text, "tollgate_fleet_up"), 1)
        # The outage is counted (errors and timeouts are not certain: a
        # killed Redis closes the connection with nothing in flight).
        self.assertGreater(
            metric(text, "tollgate_fleet_degraded_seconds_total"), 0)

    def test_without_fleet(self):
        tg = self.start("solo")
        self.assertEqual(self.admin_get(tg, "/v1/fleet"), {"enabled": False})
        self.chat(tg)
        row = self.budget(tg)
        self.assertNotIn("fleet", row)
        self.assertEqual(row["state"], "ok")
        self.assertEqual(row["spent_nusd"], COST)
        text = self.admin_text(tg, "/metrics")
        self.assertNotIn("tollgate_fleet_", text)
        # The same checks as every other GET: a POST is 405.
        raw = tglib.build_request(
            "POST", "/v1/fleet", b"{}",
            [("Host", "127.0.0.1:%d" % tg.admin_port), JSON_CT], host=None)
        r = self.call(tg.admin_port, "POST", "/v1/fleet", raw=raw)
        self.assertEqual(r.status, 405, r)


if __name__ == "__main__":
    tglib.main()
