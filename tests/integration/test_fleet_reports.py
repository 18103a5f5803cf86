# SPDX-License-Identifier: Apache-2.0
"""Spend reported to the fleet's Redis by an instance that holds no lease
on the scope, through the real binary and a real redis-server.

The lease script shrinks the reporter's lease by what it reports, at most
the lease. With no lease held (a budget with no hard cap never has one,
nor has an instance whose lease expired and was charged while it was
down), the cut is zero, and Lua's `-0` reaches HINCRBY as the text "-0",
which Redis refuses as "not an integer": the script failed half-way, every
such report had to be sent again, and a busy uncapped budget never saw
its spend acknowledged. Each case here checks that Redis counted the
ledger's spend and that no EVALSHA failed.
"""

import os
import re
import signal

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import ledgerlib  # noqa: E402
import redislib  # noqa: E402
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "fleet-test-1"
models:
  test-model:
    input: 0
    output: 10.00
    max_output_tokens: 30000
"""

USES_ALL = (("x-fake-events", "1"), ("x-fake-event-tokens", "1000"))
PREFIX = "tollgate:"


class FleetReportsTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "test-prices.yaml"), "w") as f:
            f.write(PRICES)
        self.redis = redislib.RedisServer(self.tmp, procs=self._procs)

    def tearDown(self):
        try:
            self.redis.stop()
        except Exception:  # noqa: BLE001 - teardown goes on
            pass
        super().tearDown()

    def start(self, name, policies, ttl="30s"):
        extra = {"prices": "test-prices.yaml", "policies": policies,
                 "fleet": {"redis": self.redis.url, "instance": name,
                           "lease_usd": "1.00", "lease_ttl": ttl,
                           "wait": "1s", "connect_timeout": "300ms",
                           "command_timeout": "300ms"},
                 "ledger": {"path": "data/%s.db" % name}}
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                           extra=extra, name=name)
        tg.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/%s.db" % name), tg)
        self.assertTrue(tg.wait_log(r"fleet: command connection to .* ready",
                                    timeout=10), tg.log())
        return tg

    def chat(self, tg, marker, delay_ms=0):
        body = ('{"model":"test-model","user":"%s","max_tokens":1000,'
                '"messages":[{"role":"user","content":"hi"}]}' % marker)
        hdrs = [JSON_CT, ("X-Tollgate-Team", "fleet")] + list(USES_ALL)
        if delay_ms:
            hdrs.append(("x-fake-delay-ms", str(delay_ms)))
        return self.call(tg.port, "POST", "/v1/chat/completions",
                         body.encode(), hdrs, timeout=30)

    def budget_hash(self):
        keys = self.redis.cmd("KEYS", PREFIX + "b:*")
        self.assertLessEqual(len(keys), 1, keys)
        return self.redis.hgetall(keys[0]) if keys else {}

    def failed_scripts(self):
        """EVALSHA runs that ended in an error, as Redis counts them."""
        stats = self.redis.cmd("INFO", "commandstats")
        m = re.search(r"cmdstat_evalsha:.*failed_calls=(\d+)", stats)
        return int(m.group(1)) if m else 0

    def ledger_cost(self, tg):
        tg.wait_written()
        return tg.ledger.scalar(
            "SELECT COALESCE(SUM(cost_nusd), 0) FROM calls")

    def test_uncapped_budget_reports_in_one_sync(self):
        # An alert threshold and no cap: the entry is shared, holds no
        # lease, and reports what it spends.
        tg = self.start("a", [{"name": "fleet-alerts",
                               "match": {"team": "fleet"}, "window": "day",
                               "alert_at_usd": [100]}])
        m = new_marker()
        for _ in range(3):
            self.assertEqual(self.chat(tg, m).status, 200)
        want = self.ledger_cost(tg)
        self.assertGreater(want, 0)
        tglib.wait_until(
            lambda: int(self.budget_hash().get("r:a", 0)) == want, 10,
            what="a's spend counted by Redis")
        self.assertEqual(int(self.budget_hash().get("spent", 0)), want)
        self.assertEqual(self.failed_scripts(), 0,
                         "a lease script run failed in Redis")

    def test_restart_after_charged_lease_reports_in_one_sync(self):
        cap = [{"name": "fleet-cap", "match": {"team": "fleet"},
                "window": "day", "hard_cap_usd": "1.00"}]
        a = self.start("a", cap, ttl="3s")
        b = self.start("b", cap, ttl="3s")
        m = new_marker()
        self.assertEqual(self.chat(b, m).status, 200)
        # a spends, and dies before its report (due a second after its
        # lease was granted): its ledger has the call, Redis only a's
        # lease, which expires and is charged as spent.
        self.assertEqual(self.chat(a, m).status, 200)
        a.signal(signal.SIGSTOP)
        self.assertEqual(int(self.budget_hash().get("r:a", 0)), 0,
                         "a reported before it was stopped")
        a.expected_exit = True
        a.kill()

        def charged():
            self.chat(b, m)
            return int(self.budget_hash().get("c:a", 0)) > 0
        tglib.wait_until(charged, 15, interval=0.5, what="a's lease charged")
        a2 = self.start("a", cap, ttl="3s")
        want = self.ledger_cost(a2) + self.ledger_cost(b)

        def reported():
            h = self.budget_hash()
            return int(h.get("spent", 0)) == want and \
                int(h.get("c:a", 0)) == 0
        tglib.wait_until(reported, 10, what="a's restart reconciled")
        self.assertEqual(self.failed_scripts(), 0,
                         "a lease script run failed in Redis")


if __name__ == "__main__":
    tglib.main()
