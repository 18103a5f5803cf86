# SPDX-License-Identifier: Apache-2.0
"""Budget extensions across the fleet, through real tollgate instances
sharing one real redis-server (redislib), each with its own ledger, ports
and fakeprov upstream.

Every call costs its worst case, $0.01 (1,000 output tokens at $10 per
million, all used), against a $0.05 daily cap shared by the fleet. An
extension of $0.03 posted to B lets A's refused calls through once A has
learnt it (it is announced exactly once: A never shares it back), and the
raise counts once across the fleet: A and B together forward eight calls,
not eleven. Revoked on A, it closes the scope on B. An extension made on
A while Redis does not answer is shared when it does; B restarted with
Redis flushed keeps its extension (ledger) and shares it again; an
extension planted in Redis by hand is refused with a warning naming it
when it is malformed, never applied, and dropped from the hash when it
has ended. A revocation lowers the cap an instance's lease syncs send
at once, while its call is still in flight, and with Redis down it
shrinks the instance's local share. A rolling window's fleet budget is
raised the same way, and a routing rule that reads it before the first
call there does not wait out fleet.wait.
"""

import json
import os
import re
import socket
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import ledgerlib  # noqa: E402
import redislib  # noqa: E402
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "fleet-extensions-test-1"
models:
  test-model:
    input: 0
    output: 10.00
    max_output_tokens: 30000
"""

CALL_NUSD = 10000000  # 1,000 output tokens at $10/M
CAP_NUSD = 50000000  # $0.05
USES_ALL = (("x-fake-events", "1"), ("x-fake-event-tokens", "1000"))
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
READY = (r"fleet: command connection to .* ready",
         r"fleet: subscriber connection to .* ready")
PREFIX = "tollgate:"  # the default key_prefix
HASH = PREFIX + "extensions"
CHANNEL = PREFIX + "kills"


def policy(window="day"):
    return [{"name": "fleet-cap", "match": {"team": "fleet"},
             "window": window, "hard_cap_usd": "0.05"}]


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%03dZ" % int((t % 1) * 1000)


class Subscriber:
    """A raw SUBSCRIBE on the channel, to count the announcements."""

    def __init__(self, port):
        self.c = redislib.RedisClient(port, timeout=5)
        self.c.sock.sendall(self.c.encode(["SUBSCRIBE", CHANNEL]))
        self.c.reply()  # ["subscribe", channel, 1]

    def messages(self, quiet=0.5):
        """Every message until none came for quiet seconds."""
        out = []
        self.c.sock.settimeout(quiet)
        while True:
            try:
                m = self.c.reply()
            except (socket.timeout, TimeoutError):
                return out
            if isinstance(m, list) and m and m[0] == "message":
                out.append(m[2])

    def close(self):
        self.c.close()


class Caller(threading.Thread):
    """One call on A in the background, slowed by the fake provider."""

    def __init__(self, test, tg, marker, delay_ms):
        threading.Thread.__init__(self, daemon=True)
        self.args = (test, tg, marker, delay_ms)
        self.status = self.error = self.ended = None

    def run(self):
        test, tg, marker, delay_ms = self.args
        try:
            self.status = test.chat(
                tg, marker,
                fake=(("x-fake-delay-ms", str(delay_ms)),)).status
            self.ended = time.monotonic()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


class FleetExtensionsTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.redis = redislib.start(self)
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "test-prices.yaml"), "w") as f:
            f.write(PRICES)

    # -- instances --------------------------------------------------------

    def instance(self, name, policies=None, wait=True, lease="1.00",
                 routing=None):
        # wait: a loaded machine (the suite runs tests side by side) can
        # take more than the default 1 s to answer a top-up.
        fleet = {"redis": self.redis.url, "instance": name,
                 "lease_usd": lease, "wait": "5s",
                 "connect_timeout": "300ms", "command_timeout": "300ms"}
        extra = {"prices": "test-prices.yaml",
                 "policies": policies if policies is not None else policy(),
                 "fleet": fleet}
        if routing:
            extra["routing"] = routing
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                           extra=extra, name=name)
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        tg.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/%s.db" % name), tg)
        if wait:
            for rx in READY:
                self.assertTrue(tg.wait_log(rx, 10),
                                "%s: no line %r" % (name, rx))
            # Both lists reconciled: what the fleet holds is held here.
            for what in ("kills", "extensions"):
                self.assertTrue(tg.wait_log(
                    r"fleet: %s reconciled with Redis" % what, 10),
                    "%s: %s not reconciled" % (name, what))
        return tg

    def admin(self, tg, method, path, doc=None):
        body = json.dumps(doc).encode() if doc is not None else b""
        hdrs = [("Host", "127.0.0.1:%d" % tg.admin_port)]
        if doc is not None:
            hdrs.append(JSON_CT)
        raw = tglib.build_request(method, path, body, hdrs, host=None)
        return self.call(tg.admin_port, method, path, raw=raw)

    def extend(self, tg, usd="0.03", reason="quarter close", by="alice",
               **more):
        doc = {"policy": "fleet-cap", "scope": {}, "usd": usd,
               "reason": reason, "by": by}
        doc.update(more)
        r = self.admin(tg, "POST", "/v1/budgets/extend", doc)
        self.assertIn(r.status, (201, 202), r)
        return r.json()

    def extensions(self, tg):
        r = self.admin(tg, "GET", "/v1/budgets/extensions")
        self.assertEqual(r.status, 200, r)
        return {x["id"]: x for x in r.json()["extensions"]}

    def wait_ext(self, tg, xid, present=True, timeout=5):
        ok = tglib.wait_until(
            lambda: (xid in self.extensions(tg)) == present, timeout,
            interval=0.005)
        self.assertTrue(ok, "%s: extension %s %s within %s s" % (
            tg.name, xid, "not applied" if present else "not revoked",
            timeout))

    def budget(self, tg):
        """The fleet-cap entry of GET /v1/budgets."""
        r = self.admin(tg, "GET", "/v1/budgets")
        self.assertEqual(r.status, 200, r)
        rows = [b for b in r.json()["budgets"]
                if b.get("policy") == "fleet-cap"]
        self.assertEqual(len(rows), 1, r.json())
        return rows[0]

    def chat(self, tg, marker, fake=()):
        body = json.dumps({"model": "test-model", "user": marker,
                           "max_tokens": 1000,
                           "messages": [{"role": "user",
                                         "content": "hi"}]}).encode()
        hdrs = [JSON_CT, ("X-Tollgate-Team", "fleet")] + \
            list(USES_ALL) + list(fake)
        return self.call(tg.port, "POST", "/v1/chat/completions", body,
                         hdrs, timeout=30)

    def spend_until_capped(self, tgs, marker, most=20):
        """Calls spread over tgs until each refuses twice in a row: the
        statuses, in order."""
        out, refused = [], {tg.name: 0 for tg in tgs}
        for i in range(most):
            tg = tgs[i % len(tgs)]
            if refused[tg.name] >= 2:
                if all(n >= 2 for n in refused.values()):
                    break
                continue
            st = self.chat(tg, marker).status
            self.assertIn(st, (200, 429))
            out.append(st)
            refused[tg.name] = refused[tg.name] + 1 if st == 429 else 0
        return out

    def fleet(self, tg):
        r = self.admin(tg, "GET", "/v1/fleet")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def fleet_lease_caps(self, tg):
        """The caps this instance's lease syncs send, per budget key."""
        return [x.get("cap_nusd") for x in self.fleet(tg).get("leases", [])]

    def local_shares(self, tg):
        """Its local shares of the caps while Redis is down."""
        return [x["local_share_nusd"] for x in self.fleet(tg)["leases"]
                if "local_share_nusd" in x]

    # -- the tests --------------------------------------------------------

    def test_extension_on_b_raises_the_fleet_cap_once(self):
        a = self.instance("pod-a")
        b = self.instance("pod-b")
        m = new_marker()
        st = [self.chat(a, m).status for _ in range(6)]
        self.assertEqual(st, [200] * 5 + [429], st)
        self.assertEqual(self.chat(b, m).status, 429)

        sub = Subscriber(self.redis.port)
        self.addCleanup(sub.close)
        x = self.extend(b)
        xid = x["id"]
        self.assertEqual(x["nusd"], 30000000)
        self.wait_ext(a, xid, timeout=2)
        got = self.extensions(a)[xid]
        self.assertEqual(got["instance"], "pod-b")
        for f in ("policy", "scope", "window", "window_start", "nusd",
                  "reason", "by", "created_at", "expires_at", "ends_at",
                  "key"):
            self.assertEqual(got[f], x[f], f)
        # Announced once, by its maker: A never shares it back.
        self.assertEqual(sub.messages(), ["add " + xid])
        self.assertEqual(
            json.loads(self.redis.cmd("HGET", HASH, xid))["instance"],
            "pod-b")
        # Kept in A's own ledger, under the same id, as made on pod-b.
        self.assertTrue(tglib.wait_until(lambda: a.ledger.query(
            "SELECT id FROM extensions WHERE id = ? AND instance = ?",
            (xid, "pod-b")), 10))

        # A lets calls through again, and its lease syncs send the
        # raised cap (the lease is held for a while after a call).
        self.assertEqual(self.chat(a, m).status, 200)
        self.assertEqual(set(self.fleet_lease_caps(a)),
                         {CAP_NUSD + 30000000})
        # The raise counts once: the fleet forwards $0.08 in all, not
        # $0.05 + 2 x $0.03.
        self.spend_until_capped([a, b], m)
        forwarded = len(self.fp.find_requests(m))
        self.assertEqual(forwarded * CALL_NUSD, CAP_NUSD + 30000000,
                         "the fleet forwarded %d calls" % forwarded)
        for tg in (a, b):
            bud = self.budget(tg)
            self.assertEqual(bud["cap_nusd"], CAP_NUSD + 30000000, bud)
            self.assertEqual(bud["hard_cap_nusd"], CAP_NUSD, bud)
            self.assertEqual(bud["extended_nusd"], 30000000, bud)
            self.assertEqual([e["id"] for e in bud["extensions"]], [xid])

        # A second raise on B; revoked on A, B's scope closes again:
        # without the revocation B would have $0.01 of room left.
        y = self.extend(b, usd="0.02", reason="one more")
        self.wait_ext(a, y["id"], timeout=2)
        self.assertEqual(self.chat(a, m).status, 200)
        r = self.admin(a, "DELETE", "/v1/budgets/extensions/" + y["id"])
        self.assertEqual(r.status, 200, r)
        self.wait_ext(b, y["id"], present=False, timeout=2)
        self.assertEqual(self.chat(b, m).status, 429)
        self.assertEqual(self.chat(a, m).status, 429)
        self.assertIsNone(self.redis.cmd("HGET", HASH, y["id"]))
        self.assertIsNotNone(self.redis.cmd("ZSCORE", HASH + ":lifted",
                                            y["id"]))
        self.assertTrue(tglib.wait_until(lambda: b.ledger.query(
            "SELECT id FROM extensions WHERE id = ? AND revoked_at IS NOT "
            "NULL", (y["id"],)), 10))
        self.assertIn(xid, self.extensions(b))
        self.assertEqual(len(self.fp.find_requests(m)), forwarded + 1)

        # Propagation time over 20 extensions: posted to B, listed by A.
        times = []
        for i in range(20):
            t0 = time.monotonic()
            zid = self.extend(b, usd="0.001", reason="prop-%d" % i)["id"]
            self.wait_ext(a, zid, timeout=2)
            times.append(time.monotonic() - t0)
        times.sort()
        sys.stderr.write("\nextension propagation B -> A over %d "
                         "extensions: p50 %.1f ms, max %.1f ms\n" % (
                             len(times), 1000 * times[len(times) // 2],
                             1000 * times[-1]))
        for t in times:
            self.assertLess(t, 1.0)
        for tg in (a, b):
            self.assertTrue(tg.alive())

    def test_extension_made_while_redis_down_is_shared_when_back(self):
        a = self.instance("pod-a")
        b = self.instance("pod-b")
        self.redis.pause()
        try:
            self.assertTrue(a.wait_log(r"command connection to .* lost", 5))
            x = self.extend(a, reason="made while Redis is away")
            self.assertTrue(a.wait_log(
                r"fleet: extension %s is kept here until Redis answers" %
                x["id"], 5))
            time.sleep(0.3)
            self.assertNotIn(x["id"], self.extensions(b))
        finally:
            self.redis.resume()
        self.wait_ext(b, x["id"], timeout=5)
        self.assertEqual(self.extensions(b)[x["id"]]["instance"], "pod-a")
        self.assertEqual(
            json.loads(self.redis.cmd("HGET", HASH, x["id"]))["instance"],
            "pod-a")
        # B uses it: its cap is raised.
        m = new_marker()
        st = [self.chat(b, m).status for _ in range(9)]
        self.assertEqual(st, [200] * 8 + [429], st)

    def test_restart_with_redis_flushed_keeps_and_shares_again(self):
        a = self.instance("pod-a")
        b = self.instance("pod-b")
        x = self.extend(b, expires="2h")
        self.wait_ext(a, x["id"], timeout=2)
        b.wait_written()
        self.assertEqual(b.stop(), 0)
        self.redis.cmd("FLUSHALL")
        b2 = self.instance("pod-b")
        # Its ledger kept it; the reconcile wrote it back to Redis.
        self.assertIn(x["id"], self.extensions(b2))
        self.assertNotIn("instance", self.extensions(b2)[x["id"]])
        self.assertTrue(tglib.wait_until(
            lambda: self.redis.cmd("HGET", HASH, x["id"]) is not None, 5))
        shared = json.loads(self.redis.cmd("HGET", HASH, x["id"]))
        self.assertEqual(shared["instance"], "pod-b")
        self.assertEqual(shared["expires_at"], x["expires_at"])
        # One started now learns it from Redis.
        c = self.instance("pod-c")
        self.wait_ext(c, x["id"], timeout=2)
        # Its budgets show the raise before any call there, as after.
        for _ in range(2):
            bud = self.budget(c)
            self.assertEqual(bud["cap_nusd"], CAP_NUSD + 30000000, bud)
            self.assertEqual(bud["extended_nusd"], 30000000, bud)
            self.assertEqual([e["id"] for e in bud["extensions"]],
                             [x["id"]])
            self.assertEqual(self.chat(c, new_marker()).status, 200)
        # Revoked on the restarted B: gone everywhere.
        r = self.admin(b2, "DELETE", "/v1/budgets/extensions/" + x["id"])
        self.assertEqual(r.status, 200, r)
        for tg in (a, c):
            self.wait_ext(tg, x["id"], present=False, timeout=2)

    def test_extension_planted_by_hand(self):
        a = self.instance("pod-a")
        good = self.extend(a)
        tmpl = json.loads(self.redis.cmd("HGET", HASH, good["id"]))
        r = self.admin(a, "DELETE", "/v1/budgets/extensions/" + good["id"])
        self.assertEqual(r.status, 200, r)
        del tmpl["instance"]

        def planted(xid, **change):
            doc = dict(tmpl, id=xid)
            doc.update(change)
            return doc

        bad = [
            ("x_00000000000000b1", "{not json", "not JSON"),
            ("x_00000000000000b2", '["a"]', "not a JSON object"),
            ("x_00000000000000b3", planted("x_00000000000000b3",
                                           colour="red"),
             "unknown field"),
            ("x_00000000000000b4", planted("x_00000000000000b4",
                                           nusd=-5), "nusd: must be"),
            ("x_00000000000000b5", planted("x_00000000000000b5",
                                           nusd=10 ** 16), "nusd: must be"),
            ("x_00000000000000b6", planted("X_NOT_AN_ID"), "id: must be"),
            ("x_00000000000000b7", planted("x_00000000000000b8"),
             "not the field it is stored under"),
            ("x_00000000000000b9", planted("x_00000000000000b9",
                                           ends_at="tomorrow"),
             "ends_at: must be an RFC 3339 time"),
            ("x_00000000000000ba", planted("x_00000000000000ba",
                                           by="\u0001"), "by: must be"),
            ("x_00000000000000bb", planted("x_00000000000000bb",
                                           reason=""), "reason: must be"),
            ("x_00000000000000bc", planted(
                "x_00000000000000bc",
                key=tmpl["key"].rsplit("@", 1)[0] + "@0"),
             "key: the key is not of this window and window start"),
        ]
        for xid, doc, why in bad:
            with self.subTest(extension=xid):
                off = len(a.log())
                text = doc if isinstance(doc, str) else json.dumps(doc)
                self.redis.cmd("HSET", HASH, xid, text)
                self.redis.cmd("PUBLISH", CHANNEL, "add " + xid)
                self.assertTrue(a.wait_log(
                    r"fleet: extension %s in Redis refused: .*%s" % (
                        xid, re.escape(why)), 5, start=off),
                    a.log()[off:])
        # An id no list claims is ignored with a warning.
        self.redis.cmd("PUBLISH", CHANNEL, "add q_0000000000000001")
        self.assertTrue(a.wait_log(
            r"q_0000000000000001 on the kills channel is of no list", 5))
        self.assertTrue(a.alive())
        self.assertEqual(self.extensions(a), {})
        bud = self.budget(a)
        self.assertEqual(bud["cap_nusd"], CAP_NUSD)
        self.assertEqual(bud["extensions"], [])
        m = new_marker()
        st = [self.chat(a, m).status for _ in range(6)]
        self.assertEqual(st, [200] * 5 + [429], st)
        self.assertEqual(a.ledger.scalar(
            "SELECT count(*) FROM extensions WHERE id LIKE 'x_0000%'"), 0)

        # A well-formed one planted by hand applies, as the docs show it.
        ok = "x_00000000000000a1"
        self.redis.cmd("HSET", HASH, ok, json.dumps(planted(ok)))
        self.redis.cmd("PUBLISH", CHANNEL, "add " + ok)
        self.wait_ext(a, ok, timeout=2)
        self.assertEqual(self.chat(a, m).status, 200)
        # One that has ended is dropped from the hash at a reconcile.
        old = "x_00000000000000c1"
        self.redis.cmd("HSET", HASH, old, json.dumps(planted(
            old, expires_at=rfc3339(time.time() - 60),
            ends_at=rfc3339(time.time() - 60))))
        # A second instance reads the hash at its start: the good one
        # applies, each bad one is refused again with its line.
        b = self.instance("pod-b")
        self.assertEqual(list(self.extensions(b)), [ok])
        for xid, _, why in bad:
            self.assertRegex(b.log(), r"fleet: extension %s in Redis "
                             r"refused: .*%s" % (xid, re.escape(why)))
        self.assertTrue(tglib.wait_until(
            lambda: self.redis.cmd("HGET", HASH, old) is None, 3))
        # "del x_..." by hand revokes it.
        self.redis.cmd("HDEL", HASH, ok)
        self.redis.cmd("PUBLISH", CHANNEL, "del " + ok)
        for tg in (a, b):
            self.wait_ext(tg, ok, present=False, timeout=2)

    def test_revocation_lowers_the_cap_the_syncs_send_at_once(self):
        # A's lease syncs send the cap its last admission saw. A call in
        # flight on A holds its lease while B revokes the extension: the
        # syncs meanwhile must ask Redis with the configured cap again,
        # or Redis would keep granting leases from a raise that is gone.
        for window in ("day", "24h"):
            with self.subTest(window=window):
                self.redis.cmd("FLUSHALL")
                a = self.instance("pod-a-" + window, policy(window))
                b = self.instance("pod-b-" + window, policy(window))
                x = self.extend(b, usd="0.05")
                self.wait_ext(a, x["id"], timeout=2)
                slow = Caller(self, a, new_marker(), delay_ms=4000)
                slow.start()
                self.assertTrue(tglib.wait_until(
                    lambda: self.fleet_lease_caps(a) ==
                    [CAP_NUSD + 50000000], 3),
                    self.fleet_lease_caps(a))
                r = self.admin(b, "DELETE",
                               "/v1/budgets/extensions/" + x["id"])
                self.assertEqual(r.status, 200, r)
                self.wait_ext(a, x["id"], present=False, timeout=2)
                self.assertTrue(tglib.wait_until(
                    lambda: self.fleet_lease_caps(a) == [CAP_NUSD], 1),
                    "A still syncs with cap %s after the revocation" %
                    self.fleet_lease_caps(a))
                self.assertIsNone(slow.ended, "the call ended too soon")
                slow.join(30)
                self.assertEqual(slow.status, 200, slow.error)
                for tg in (a, b):
                    self.assertEqual(tg.stop(), 0)

    def test_revocation_while_redis_is_down_shrinks_the_local_share(self):
        # With Redis down (when_down: local) an instance admits against a
        # share of the cap's room it worked out from the cap its syncs
        # sent. An extension revoked on it meanwhile must shrink that
        # share, or it would go on admitting its part of a raise that is
        # gone while the others admit theirs.
        a = self.instance("pod-a", lease="0.01")
        self.instance("pod-b", lease="0.01")
        x = self.extend(a, usd="0.05")
        m = new_marker()
        self.assertEqual(self.chat(a, m).status, 200)
        slow = Caller(self, a, m, delay_ms=6000)
        slow.start()
        self.assertTrue(tglib.wait_until(
            lambda: self.fleet_lease_caps(a) == [CAP_NUSD + 50000000], 3))
        self.redis.pause()
        try:
            self.assertTrue(a.wait_log(r"command connection to .* lost",
                                       5))
            self.assertTrue(tglib.wait_until(
                lambda: self.local_shares(a), 2), self.fleet(a))
            before = self.local_shares(a)[0]
            self.assertGreater(before, 0, self.fleet(a))
            r = self.admin(a, "DELETE", "/v1/budgets/extensions/" + x["id"])
            self.assertEqual(r.status, 200, r)
            self.assertTrue(tglib.wait_until(
                lambda: self.local_shares(a) and
                self.local_shares(a)[0] < before, 1),
                "the local share stayed %s after the revocation: %s" % (
                    before, self.fleet(a)))
            self.assertEqual(self.fleet_lease_caps(a), [CAP_NUSD])
            self.assertIsNone(slow.ended, "the call ended too soon")
        finally:
            self.redis.resume()
        slow.join(30)
        self.assertEqual(slow.status, 200, slow.error)

    def test_routing_reads_a_raised_rolling_budget_at_once(self):
        # A when_budget_below_percent rule asks the fleet for a rolling
        # budget's spend before the call's first admission there. The
        # entry's cap was taken from hard_cap_usd alone: with a cap of 0
        # raised by an extension it read as no cap, no sync was sent, and
        # the call waited out fleet.wait for an answer that never came.
        pol = [{"name": "fleet-cap", "match": {"team": "fleet"},
                "window": "24h", "hard_cap_usd": "0"}]
        route = [{"name": "low-budget", "when_budget_below_percent": 50,
                  "match": {"provider": "openai"}, "max_tokens": 1000}]
        a = self.instance("pod-a", pol, routing=route)
        b = self.instance("pod-b", pol, routing=route)
        # Not raised yet: refused at once (a cap of 0 has no room
        # whatever the fleet spent; there is nothing to wait for).
        t0 = time.monotonic()
        r = self.chat(a, new_marker())
        took = time.monotonic() - t0
        self.assertEqual(r.status, 429, r)
        self.assertLess(took, 2.0, "the refusal waited %.1f s" % took)
        x = self.extend(b, usd="0.05")
        self.wait_ext(a, x["id"], timeout=2)
        t0 = time.monotonic()
        r = self.chat(a, new_marker())
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertLess(took, 2.0, "the call waited %.1f s for the "
                        "fleet's spend (fleet.wait is 5 s)" % took)

    def test_rolling_window_budget_raised_across_the_fleet(self):
        pol = policy(window="24h")
        a = self.instance("pod-a", pol)
        b = self.instance("pod-b", pol)
        m = new_marker()
        st = [self.chat(a, m).status for _ in range(6)]
        self.assertEqual(st, [200] * 5 + [429], st)
        x = self.extend(b, usd="0.02")
        self.wait_ext(a, x["id"], timeout=2)
        self.spend_until_capped([a, b], m)
        forwarded = len(self.fp.find_requests(m))
        self.assertEqual(forwarded * CALL_NUSD, CAP_NUSD + 20000000,
                         "the fleet forwarded %d calls" % forwarded)


if __name__ == "__main__":
    tglib.main()
