# SPDX-License-Identifier: Apache-2.0
"""One hard cap across a fleet of tollgates, through the real binaries and
a real redis-server.

Three instances share a $1.00 daily cap. Each call's worst case is known
and equals what it costs (max_tokens 1,000 output tokens at $10 per
million, and the provider uses all of them: $0.01), so the number of
calls the provider sees times $0.01 is what the fleet let through. Bursts
of concurrent calls spread over the three never let more through than the
cap pays for, and the spend Redis holds equals the sum of the three
ledgers to the nano-dollar once every instance has reported.

Then the failures: Redis killed in the middle of a burst (no crash, no
lost ledger row, `when_down: local` keeps within the shares, `refuse`
answers capped calls 503 and lets uncapped ones through, and Redis's
spend is right again once it is back); an instance frozen (SIGSTOP) past
its lease TTL has its lease charged as spent, and after SIGCONT it
reconciles and the unused part returns; a Redis that answers slowly never
holds up calls whose lease covers them; a call whose lease is short waits
for the top-up instead of being refused.
"""

import json
import os
import re
import signal
import threading
import time

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

CALL_NUSD = 10000000  # 1,000 output tokens at $10/M
CAP_NUSD = 1000000000  # $1.00
USES_ALL = (("x-fake-events", "1"), ("x-fake-event-tokens", "1000"))
PREFIX = "tollgate:"
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")


def policy(cap="1.00", team="fleet"):
    return [{"name": "fleet-cap", "match": {"team": team}, "window": "day",
             "hard_cap_usd": cap}]


class FleetCapsTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "test-prices.yaml"), "w") as f:
            f.write(PRICES)
        self.redis = redislib.RedisServer(
            self.tmp, procs=self._procs,
            args=("--enable-debug-command", "local"))

    def tearDown(self):
        try:
            self.redis.stop()
        except Exception:  # noqa: BLE001 - teardown goes on
            pass
        super().tearDown()

    def start(self, name, policies=None, fleet=None, when_down="local",
              ttl="30s", wait="5s", lease="1.00", extra_doc=None):
        # wait: a loaded machine (the suite runs tests side by side) can
        # take more than the default 1 s to answer a top-up.
        f = {"redis": self.redis.url, "instance": name,
             "lease_usd": lease, "lease_ttl": ttl, "wait": wait,
             "when_down": when_down, "connect_timeout": "300ms",
             "command_timeout": "300ms"}
        if fleet:
            f.update(fleet)
        extra = {"prices": "test-prices.yaml",
                 "policies": policies if policies is not None else policy(),
                 "fleet": f,
                 "ledger": {"path": "data/%s.db" % name}}
        if extra_doc:
            extra.update(extra_doc)
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                           extra=extra, name=name)
        tg.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/%s.db" % name), tg)
        self.assertTrue(tg.wait_log(r"fleet: command connection to .* ready",
                                    timeout=10), tg.log())
        return tg

    def body(self, marker, max_tokens=1000):
        return json.dumps({"model": "test-model", "user": marker,
                           "max_tokens": max_tokens,
                           "messages": [{"role": "user",
                                         "content": "hi"}]}).encode()

    def hdrs(self, team="fleet", fake=USES_ALL, extra=()):
        return [JSON_CT, ("X-Tollgate-Team", team)] + list(fake) + \
            list(extra)

    def chat(self, tg, marker, team="fleet", fake=USES_ALL, extra=(),
             max_tokens=1000, timeout=30):
        return self.call(tg.port, "POST", "/v1/chat/completions",
                         self.body(marker, max_tokens),
                         self.hdrs(team, fake, extra), timeout=timeout)

    def burst(self, tgs, n, marker, delay_ms=200):
        """n calls at once, spread round-robin over tgs: their statuses."""
        out = [None] * n
        fake = USES_ALL + (("x-fake-delay-ms", str(delay_ms)),)

        def one(i):
            try:
                r = self.chat(tgs[i % len(tgs)], marker, fake=fake,
                              timeout=60)
                out[i] = r.status
            except Exception as e:  # noqa: BLE001 - counted below
                out[i] = repr(e)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(90)
        return out

    def budget_hash(self):
        keys = [k for k in self.redis.cmd("KEYS", PREFIX + "b:*")
                if "per{}" in k]  # the team's scope, not per intent
        self.assertLessEqual(len(keys), 1, keys)
        return self.redis.hgetall(keys[0]) if keys else {}

    def ledgers_cost(self, tgs):
        for tg in tgs:
            tg.wait_written()
        return sum(tg.ledger.scalar(
            "SELECT COALESCE(SUM(cost_nusd), 0) FROM calls") for tg in tgs)

    def wait_reported(self, tgs, expect=None, timeout=30):
        """Until Redis's spend equals the sum of the ledgers (and expect,
        if given: a settlement may still be on its way to a ledger)."""
        def same():
            want = self.ledgers_cost(tgs)
            h = self.budget_hash()
            return (int(h.get("spent", 0)) == want and
                    (expect is None or want == expect) and all(
                        int(v) == 0 for k, v in h.items()
                        if k.startswith("c:")))
        tglib.wait_until(same, timeout, interval=0.1,
                         what="spend reported to Redis")
        return self.ledgers_cost(tgs)

    # ------------------------------------------------------------------

    def test_bursts_never_overshoot_and_redis_equals_the_ledgers(self):
        tgs = [self.start("a"), self.start("b"), self.start("c")]
        m = new_marker()
        first = self.burst(tgs, 50, m)
        self.assertEqual(sorted(set(first)), [200], first)
        second = self.burst(tgs, 200, m)
        ok = sum(1 for s in second if s == 200)
        refused = sum(1 for s in second if s == 429)
        self.assertEqual(ok + refused, 200, second)
        forwarded = len(self.fp.find_requests(m))
        self.assertEqual(forwarded, 50 + ok)
        # Every forwarded call cost its worst case: their sum is within
        # the cap, and the fleet used nearly all of it.
        self.assertLessEqual(forwarded * CALL_NUSD, CAP_NUSD)
        self.assertGreaterEqual(forwarded * CALL_NUSD, CAP_NUSD * 9 // 10,
                                "the fleet stranded the cap in leases")
        spent = self.wait_reported(tgs, forwarded * CALL_NUSD)
        self.assertEqual(spent, forwarded * CALL_NUSD)
        sys.stderr.write("\n  burst: %d of 250 forwarded ($%.2f of the $1.00 "
                         "cap), %d refused\n" % (forwarded,
                                                  forwarded * CALL_NUSD / 1e9,
                                                  refused))
        # Each refusal is a hard_cap row in its instance's ledger.
        for tg in tgs:
            tg.wait_written()
        rows = sum(tg.ledger.scalar(
            "SELECT COUNT(*) FROM calls WHERE refusal_reason = 'hard_cap'")
            for tg in tgs)
        self.assertEqual(rows, refused)

    def test_a_short_lease_waits_for_a_top_up(self):
        # A lease of $0.01 covers one call: the next two wait for
        # top-ups while the first is in flight, and all three pass.
        tg = self.start("a", lease="0.01")
        m = new_marker()
        st = self.burst([tg], 3, m, delay_ms=300)
        self.assertEqual(st, [200, 200, 200], st)
        self.assertEqual(len(self.fp.find_requests(m)), 3)

    def test_redis_killed_mid_burst_local_then_reconciled(self):
        # lease_usd $0.10: the bound docs/fleet.md states for the local
        # shares is the cap plus what the other instance was granted
        # after this one's last answer, at most one lease_usd.
        tgs = [self.start("a", lease="0.10"), self.start("b", lease="0.10")]
        m = new_marker()
        self.assertEqual(sorted(set(self.burst(tgs, 20, m))), [200])
        self.wait_reported(tgs, 20 * CALL_NUSD)
        stopper = threading.Timer(0.1, self.redis.kill)
        stopper.start()
        st = self.burst(tgs, 60, m, delay_ms=300)
        stopper.join()
        for tg in tgs:
            self.assertTrue(tg.alive(), tg.log())
            self.assertTrue(tg.wait_log(r"fleet: .*does not answer"))
        # Admitted while Redis is down: the leases held, then the local
        # shares of the room nobody had leased.
        st += self.burst(tgs, 100, m, delay_ms=50)
        # Every answered call has its row, none is lost.
        ok = sum(1 for s in st if s == 200)
        forwarded = len(self.fp.find_requests(m))
        self.assertEqual(forwarded, 20 + ok)
        for tg in tgs:
            tg.wait_written()
        self.assertEqual(sum(tg.ledger.scalar(
            "SELECT COUNT(*) FROM calls WHERE status = 'ok'")
            for tg in tgs), forwarded)
        # The shares come from room nobody had leased when each instance
        # last heard from Redis: within the cap and one lease_usd.
        self.assertLessEqual(forwarded * CALL_NUSD, CAP_NUSD + CAP_NUSD // 10)
        sys.stderr.write("\n  Redis down: %d calls forwarded ($%.2f of the "
                         "$1.00 cap)\n" % (forwarded,
                                           forwarded * CALL_NUSD / 1e9))
        # Redis back (empty, as a restart without persistence leaves
        # it): the instances report their totals again.
        self.redis.restart()
        for tg in tgs:
            self.assertTrue(tg.wait_log(r"fleet: Redis answers again"))
        self.chat(tgs[0], m)
        self.chat(tgs[1], m)
        self.wait_reported(tgs)

    def test_when_down_refuse_fails_capped_calls_closed(self):
        tg = self.start("a", when_down="refuse",
                        policies=policy() + [
                            {"name": "alerts-only",
                             "match": {"team": "free"},
                             "alert_at_usd": ["0.50"],
                             "window": "day"}])
        m = new_marker()
        self.assertEqual(self.chat(tg, m).status, 200)
        self.redis.kill()
        self.assertTrue(tg.wait_log(r"fleet: .*does not answer"))
        r = self.chat(tg, m)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.header("retry-after"), "1")
        self.assertIn("fleet.when_down: refuse",
                      r.json()["error"]["message"])
        # A call no cap covers goes on.
        self.assertEqual(self.chat(tg, m, team="other").status, 200)
        self.assertEqual(tg.ledger.wait_count(
            1, "refusal_reason = 'fleet_down'"), 1)

    def test_frozen_instance_is_charged_then_reconciles(self):
        tgs = [self.start("a", ttl="3s", wait="1s"),
               self.start("b", ttl="3s", wait="1s")]
        m = new_marker()
        self.assertEqual(self.chat(tgs[0], m).status, 200)
        self.wait_reported(tgs, CALL_NUSD)
        lease_a = int(self.budget_hash().get("l:a", 0))
        self.assertGreater(lease_a, 0)
        tgs[0].signal(signal.SIGSTOP)
        try:
            # b's syncs expire a's lease: counted as spent.
            def charged():
                self.chat(tgs[1], m)
                return int(self.budget_hash().get("c:a", 0)) > 0
            tglib.wait_until(charged, 15, interval=0.5,
                             what="a's lease charged")
            self.assertEqual(int(self.budget_hash().get("l:a", 0)), 0)
        finally:
            tgs[0].signal(signal.SIGCONT)
        # a reconciles: its charge is replaced by what its ledger spent.
        self.chat(tgs[0], m)
        self.wait_reported(tgs)

    def test_requests_per_minute_hold_across_the_fleet(self):
        # 20 requests a minute for the team, over three instances: a
        # burst of 60 gets 20 through, however it is spread.
        rl = [{"name": "rpm", "match": {"team": "fleet"},
               "rate_limit": {"requests_per_minute": 20}}]
        tgs = [self.start(n, policies=rl) for n in ("a", "b", "c")]
        m = new_marker()
        st = self.burst(tgs, 60, m, delay_ms=50)
        ok = sum(1 for s in st if s == 200)
        self.assertEqual(ok + sum(1 for s in st if s == 429), 60, st)
        self.assertLessEqual(ok, 20, st)
        self.assertGreaterEqual(ok, 10, "the fleet stranded the limit")
        self.assertEqual(len(self.fp.find_requests(m)), ok)
        sys.stderr.write("\n  requests/min 20 over 3 instances: %d of 60 "
                         "passed\n" % ok)

    def test_a_restarted_instance_does_not_spend_its_old_lease_again(self):
        # 10 requests a minute. a is killed right after its calls (their
        # counts unreported) and restarts at once, inside its lease's
        # TTL: the old process's lease counts as used, so the minute
        # still lets 10 through in all.
        rl = [{"name": "rpm", "match": {"team": "fleet"},
               "rate_limit": {"requests_per_minute": 10}}]
        a = self.start("a", policies=rl)
        m = new_marker()
        for _ in range(4):
            self.assertEqual(self.chat(a, m).status, 200)
        a.kill()
        self._procs.remove(a)
        a = self.start("a", policies=rl)
        b = self.start("b", policies=rl)
        st = self.burst([a, b], 20, m, delay_ms=20)
        self.assertLessEqual(4 + st.count(200), 10, st)
        self.assertEqual(len(self.fp.find_requests(m)), 4 + st.count(200))

    def test_tokens_per_minute_hold_across_the_fleet(self):
        # 20,000 tokens a minute; each call may use ~1,000 (its input
        # estimate and max_tokens): about 19 fit, never more than 20.
        rl = [{"name": "tpm", "match": {"team": "fleet"},
               "rate_limit": {"tokens_per_minute": 20000}}]
        tgs = [self.start(n, policies=rl) for n in ("a", "b")]
        m = new_marker()
        st = self.burst(tgs, 40, m, delay_ms=50)
        ok = sum(1 for s in st if s == 200)
        self.assertLessEqual(ok, 20, st)
        self.assertGreaterEqual(ok, 8, "the fleet stranded the limit")
        sys.stderr.write("\n  tokens/min 20000 over 2 instances: %d of 40 "
                         "passed\n" % ok)

    def test_a_threshold_is_sent_once_by_the_fleet(self):
        # A 40 % threshold of a capped budget ($0.80 of $2.00) and a
        # $0.30 one of a budget with no cap (its spend is reported with
        # no lease held): three instances cross each, one webhook
        # delivery each.
        hook = tglib.WebhookReceiver()
        self.addCleanup(hook.close)
        pols = [{"name": "fleet-cap", "match": {"team": "fleet"},
                 "window": "day", "hard_cap_usd": "2.00",
                 "alert_at_percent": 40},
                {"name": "watch", "match": {"team": "fleet"},
                 "per": ["intent"], "window": "day",
                 "alert_at_usd": ["0.30"]}]
        alerts = {"webhooks": [{"url": "http://127.0.0.1:%d/h" % hook.port}]}
        tgs = []
        for n in ("a", "b", "c"):
            tg = self.start(n, policies=pols)
            tgs.append(tg)
        # Alerts need the webhooks: restart-free, by config at start.
        for tg in tgs:
            tg.stop()
        self._procs[:] = [p for p in self._procs if p not in tgs]
        tgs = []
        for n in ("a", "b", "c"):
            tgs.append(self.start(n, policies=pols,
                                  extra_doc={"alerts": alerts}))
        m = new_marker()
        st = self.burst(tgs, 90, m, delay_ms=20)
        self.assertEqual(st.count(200), 90, st)
        self.wait_reported(tgs, 90 * CALL_NUSD)
        # Each threshold is crossed as the fleet's spend passes it; one
        # more call on each instance makes sure every one has seen the
        # fleet's figure.
        for tg in tgs:
            self.assertEqual(self.chat(tg, m).status, 200)
        tglib.wait_until(lambda: len(hook.bodies()) >= 2, 10,
                         what="the two alerts")
        time.sleep(2.5)  # a second sender would deliver within this
        kinds = sorted((b.get("policy"), b.get("threshold_usd"))
                       for b in hook.bodies())
        self.assertEqual(len(kinds), 2, hook.bodies())
        self.assertEqual([k[0] for k in kinds], ["fleet-cap", "watch"])

    def test_restart_and_reload_keep_the_fleet_budget(self):
        tgs = [self.start("a", policies=policy("0.10")),
               self.start("b", policies=policy("0.10"))]
        m = new_marker()
        for i in range(6):
            self.assertEqual(self.chat(tgs[i % 2], m).status, 200)
        self.wait_reported(tgs, 6 * CALL_NUSD)
        # kill -9: a's ledger has its spend; the restarted process
        # reports it again (counted once) and takes its lease back.
        tgs[0].kill()
        self._procs.remove(tgs[0])
        tgs[0] = self.start("a", policies=policy("0.10"))
        self.assertEqual(self.wait_reported(tgs, 6 * CALL_NUSD),
                         6 * CALL_NUSD)
        st = [self.chat(tgs[i % 2], m).status for i in range(6)]
        self.assertEqual(st.count(200), 4, st)  # $0.10 pays for 10
        # A reload that raises the cap: the next syncs ask with it.
        for tg in tgs:
            off = len(tg.log())
            tg.write_config(tglib.make_config(
                tglib.std_upstreams(self.fp.port),
                extra={"prices": "test-prices.yaml",
                       "policies": policy("0.15"),
                       "fleet": {"redis": self.redis.url,
                                 "instance": tg.name,
                                 "connect_timeout": "300ms",
                                 "command_timeout": "300ms"},
                       "ledger": {"path": "data/%s.db" % tg.name}}))
            tg.hup()
            self.assertTrue(tg.wait_log(r"configuration reloaded",
                                        start=off))
        st = [self.chat(tgs[i % 2], m).status for i in range(8)]
        self.assertEqual(st.count(200), 5, st)
        self.assertEqual(self.wait_reported(tgs, 15 * CALL_NUSD),
                         15 * CALL_NUSD)
        self.assertEqual(len(self.fp.find_requests(m)), 15)

    def test_a_flushed_script_cache_is_loaded_again(self):
        tg = self.start("a", lease="0.01")
        m = new_marker()
        self.assertEqual(self.chat(tg, m).status, 200)
        self.wait_reported([tg], CALL_NUSD)
        self.redis.cmd("SCRIPT", "FLUSH")
        # Each call needs a top-up (the lease covers one): EVALSHA is
        # answered NOSCRIPT and the script itself is sent.
        for _ in range(3):
            self.assertEqual(self.chat(tg, m).status, 200)
        self.assertEqual(self.wait_reported([tg], 4 * CALL_NUSD),
                         4 * CALL_NUSD)
        self.assertTrue(tg.alive())

    def test_a_rolling_budget_holds_across_the_fleet(self):
        # $0.30 an hour, sliding, over three instances: a burst of 60
        # calls of $0.01 gets 30 through, however it is spread.
        pol = [{"name": "hourly", "match": {"team": "fleet"},
                "window": "1h", "hard_cap_usd": "0.30"}]
        tgs = [self.start(n, policies=pol) for n in ("a", "b", "c")]
        m = new_marker()
        st = self.burst(tgs, 60, m, delay_ms=50)
        ok = st.count(200)
        self.assertEqual(ok + st.count(429), 60, st)
        self.assertEqual(ok, 30, st)
        self.assertEqual(len(self.fp.find_requests(m)), 30)
        sys.stderr.write("\n  rolling $0.30/h over 3 instances: %d of 60 "
                         "passed\n" % ok)
        # An instance's /v1/budgets shows the fleet's spend in the
        # window once it has synced after the others reported.
        for tg in tgs[1:2]:
            port = int(tglib.wait_until(
                lambda tg=tg: ADMIN_RE.search(tg.stderr()), 10).group(1))

            def fleet_spent(tg=tg, port=port):
                self.chat(tg, m)  # refused at the cap; makes it sync
                raw = tglib.build_request(
                    "GET", "/v1/budgets", b"",
                    [("Host", "127.0.0.1:%d" % port)], host=None)
                doc = json.loads(self.call(port, "GET", "/v1/budgets",
                                           raw=raw).body)
                rows = [b for b in doc["budgets"] if b["policy"] == "hourly"]
                return rows and rows[0].get("fleet", {}).get(
                    "spent_nusd") == 30 * CALL_NUSD and rows[0]
            row = tglib.wait_until(fleet_spent, 15, interval=0.5,
                                   what="the fleet's spend in /v1/budgets")
            self.assertTrue(row)
            self.assertEqual(row["fleet"]["state"], "up")

    def test_shutdown_gives_the_lease_back(self):
        tgs = [self.start("a"), self.start("b")]
        m = new_marker()
        for _ in range(5):
            self.assertEqual(self.chat(tgs[0], m).status, 200)
        self.assertGreater(int(self.budget_hash().get("l:a", 0)), 0)
        # SIGTERM: the calls are over, the spend is reported, the lease
        # goes back at once rather than expiring in lease_ttl.
        self.assertEqual(tgs[0].stop(), 0)
        h = self.budget_hash()
        self.assertEqual(int(h.get("l:a", 0)), 0, h)
        self.assertEqual(int(h.get("r:a", 0)), 5 * CALL_NUSD, h)
        self.assertEqual(int(h["spent"]), 5 * CALL_NUSD, h)
        self.assertEqual(int(h["leased"]), int(h.get("l:b", 0)), h)
        self.assertNotIn("a", self.redis.hgetall(PREFIX + "inst"))

    def test_slow_redis_does_not_hold_up_covered_calls(self):
        tg = self.start("a", fleet={"command_timeout": "5s"})
        m = new_marker()
        for _ in range(10):  # a demand: the lease grows to cover it
            self.assertEqual(self.chat(tg, m).status, 200)
        self.wait_reported([tg], 10 * CALL_NUSD)
        asleep = threading.Event()

        def sleep_redis():
            c = self.redis.client(timeout=10)
            try:
                c.cmd("PING")
                asleep.set()
                c.cmd("DEBUG", "SLEEP", "2")
            finally:
                c.close()
        t = threading.Thread(target=sleep_redis)
        t.start()
        self.assertTrue(asleep.wait(10))
        # Redis is busy once a PING on a fresh connection goes unanswered.
        tglib.wait_until(lambda: not self.redis_answers(), 5,
                         what="Redis asleep")
        t0 = time.monotonic()
        for _ in range(5):
            self.assertEqual(self.chat(tg, m).status, 200)
        took = time.monotonic() - t0
        # Still asleep after the calls: they ran while Redis did not answer.
        self.assertTrue(t.is_alive(), "Redis woke before the calls ended")
        t.join()
        self.assertLess(took, 1.5, "covered calls waited on a slow Redis")

    def redis_answers(self):
        try:
            c = self.redis.client(timeout=0.05)
        except Exception:  # noqa: BLE001 - busy is the answer
            return False
        try:
            c.cmd("PING")
            return True
        except Exception:  # noqa: BLE001
            return False
        finally:
            c.close()


if __name__ == "__main__":
    tglib.main()
