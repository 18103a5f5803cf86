# SPDX-License-Identifier: Apache-2.0
"""Kills across the fleet, through three real tollgate instances sharing one
real redis-server (redislib), each with its own ledger, ports and fakeprov
upstream.

A kill posted to A refuses new calls on B and C and stops a live stream on
B within a second (the propagation time of 20 kills is measured and its
p50/p99 printed); lifted on C, calls pass on A again. A kill written into
Redis by hand (HSET + PUBLISH, as docs/fleet.md shows) applies; a malformed
one is refused with a log line and no crash. An instance started after the
kills, and instances whose Redis restarted empty, end up with the full set.
A breaker that trips on A kills on B. A lift made while Redis did not
answer reaches the others once it answers again."""

import json
import os
import re
import statistics
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import ledgerlib  # noqa: E402
import redislib  # noqa: E402
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES = """version: "fleet-kills-test-1"
models:
  test-model:
    input: 0
    output: 10.00
    max_output_tokens: 30000
"""

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
READY = (r"fleet: command connection to .* ready",
         r"fleet: subscriber connection to .* ready")
PREFIX = "tollgate:"  # the default key_prefix
HASH = PREFIX + "kills"


def chat_body(marker, max_tokens=1000, stream=False):
    doc = {"model": "test-model", "user": marker, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        doc["stream"] = True
    return json.dumps(doc).encode()


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%03dZ" % int((t % 1) * 1000)


class Caller(threading.Thread):
    """One call on its own connection, in the background; .ended is the
    monotonic time its response was complete."""

    def __init__(self, port, path, body, hdrs, timeout=60):
        threading.Thread.__init__(self, daemon=True)
        self.args = (port, path, body, hdrs, timeout)
        self.resp = self.error = self.ended = None

    def run(self):
        port, path, body, hdrs, timeout = self.args
        try:
            c = tglib.RawConn(port, timeout=timeout)
            try:
                c.send(tglib.build_request("POST", path, body, hdrs))
                self.resp = c.read_response(timeout, "POST")
                self.ended = time.monotonic()
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


class FleetKillsTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.redis = redislib.start(self)
        self.fp = self.fakeprov()
        with open(os.path.join(self.tmp, "test-prices.yaml"), "w") as f:
            f.write(PRICES)

    # -- instances --------------------------------------------------------

    def instance(self, name, policies=None, wait=True):
        fleet = {"redis": self.redis.url, "instance": name,
                 "connect_timeout": "300ms",
                 "command_timeout": "300ms"}
        extra = {"prices": "test-prices.yaml", "policies": policies or [],
                 "fleet": fleet}
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
        return tg

    def admin(self, tg, method, path, doc=None):
        body = json.dumps(doc).encode() if doc is not None else b""
        hdrs = [("Host", "127.0.0.1:%d" % tg.admin_port)]
        if doc is not None:
            hdrs.append(JSON_CT)
        raw = tglib.build_request(method, path, body, hdrs, host=None)
        return self.call(tg.admin_port, method, path, raw=raw)

    def kills(self, tg):
        r = self.admin(tg, "GET", "/v1/kills")
        self.assertEqual(r.status, 200, r)
        return {k["id"]: k for k in r.json()["kills"]}

    def post_kill(self, tg, match, reason="stop", ttl=None):
        doc = {"match": match, "reason": reason}
        if ttl:
            doc["ttl"] = ttl
        r = self.admin(tg, "POST", "/v1/kills", doc)
        self.assertEqual(r.status, 201, r)
        return r.json()

    def chat(self, tg, marker, tags=(), stream=False, fake=()):
        hdrs = [JSON_CT] + [("X-Tollgate-" + k, v) for k, v in tags] + \
            list(fake)
        return self.call(tg.port, "POST", "/v1/chat/completions",
                         chat_body(marker, stream=stream), hdrs, timeout=30)

    def wait_kill(self, tg, kid, present=True, timeout=5):
        ok = tglib.wait_until(
            lambda: (kid in self.kills(tg)) == present, timeout,
            interval=0.005)
        self.assertTrue(ok, "%s: kill %s %s within %s s" % (
            tg.name, kid, "not applied" if present else "not lifted",
            timeout))

    def wait_set(self, tg, ids, timeout=3):
        """Wait until tg's live kills are exactly ids."""
        want = sorted(ids)
        self.assertTrue(tglib.wait_until(
            lambda: sorted(self.kills(tg)) == want, timeout),
            "%s holds %s, not %s" % (tg.name, sorted(self.kills(tg)),
                                     want))

    def raw_kill(self, kid, doc):
        text = doc if isinstance(doc, str) else json.dumps(doc)
        self.redis.cmd("HSET", HASH, kid, text)
        self.redis.cmd("PUBLISH", HASH, "add " + kid)

    # -- the tests --------------------------------------------------------

    def test_kill_on_one_reaches_all_and_lifts_anywhere(self):
        a, b, c = (self.instance(n) for n in ("pod-a", "pod-b", "pod-c"))
        m = new_marker()
        looper = [("Agent-Class", "looper")]
        for tg in (a, b, c):
            self.assertEqual(self.chat(tg, m, looper).status, 200)

        # A live stream on B, stopped by a kill posted to A.
        s = Caller(b.port, "/v1/chat/completions",
                   chat_body(m, stream=True),
                   [JSON_CT, ("X-Tollgate-Agent-Class", "looper"),
                    ("x-fake-events", "100"), ("x-fake-pace-ms", "100")])
        s.start()
        self.assertTrue(tglib.wait_until(
            lambda: len(self.fp.find_requests(m)) == 4, 10))
        time.sleep(0.3)
        t0 = time.monotonic()
        k = self.post_kill(a, {"agent_class": "looper"}, "retry storm",
                           ttl="2h")
        s.join(15)
        self.assertIsNotNone(s.resp, s.error)
        took = s.ended - t0
        self.assertLess(took, 1.0, "the stream on B was not stopped "
                        "within 1 s of the kill on A (%.3f s)" % took)
        last = ledgerlib.sse_events(s.resp.body)[-1][1]
        self.assertEqual(last["error"]["code"], "killed")
        self.assertIn("retry storm", last["error"]["message"])

        # New calls are refused on B and C with the same kill.
        for tg in (b, c):
            self.wait_kill(tg, k["id"], timeout=1)
            r = self.chat(tg, m, looper)
            self.assertEqual(r.status, 403, r)
            self.assertEqual(r.json()["tollgate"]["kill_id"], k["id"])
            self.assertEqual(self.chat(tg, m, [("Agent-Class", "other")])
                             .status, 200)
            got = self.kills(tg)[k["id"]]
            self.assertEqual(got["instance"], "pod-a")
            for f in ("match", "reason", "source", "created_at",
                      "expires_at"):
                self.assertEqual(got[f], k[f], f)
            # Kept in its own ledger, under the same id.
            self.assertTrue(tglib.wait_until(lambda: tg.ledger.query(
                "SELECT id FROM kills WHERE id = ?", (k["id"],)), 10))
        self.assertEqual(json.loads(self.redis.cmd("HGET", HASH, k["id"]))
                         ["instance"], "pod-a")
        self.assertIn("added by api on pod-a (from the fleet)", b.log())

        # Propagation time over 20 kills: posted to A, listed by B and C.
        times = []
        for i in range(20):
            t0 = time.monotonic()
            kid = self.post_kill(a, {"intent": "prop-%d" % i})["id"]
            for tg in (b, c):
                self.wait_kill(tg, kid, timeout=2)
            times.append(time.monotonic() - t0)
        times.sort()
        p50 = statistics.median(times)
        p99 = times[min(len(times) - 1, int(round(0.99 * len(times))) - 1)]
        sys.stderr.write("\nkill propagation A -> B and C over %d kills: "
                         "p50 %.1f ms, p99 %.1f ms, max %.1f ms\n" % (
                             len(times), p50 * 1000, p99 * 1000,
                             times[-1] * 1000))
        for t in times:
            self.assertLess(t, 1.0)

        # Lifted on C: A (and B) let the calls through again.
        r = self.admin(c, "DELETE", "/v1/kills/" + k["id"])
        self.assertEqual(r.status, 200, r)
        for tg in (a, b):
            self.wait_kill(tg, k["id"], present=False, timeout=1)
        self.assertEqual(self.chat(a, m, looper).status, 200)
        self.assertIsNone(self.redis.cmd("HGET", HASH, k["id"]))
        self.assertIsNotNone(self.redis.cmd("ZSCORE", HASH + ":lifted",
                                            k["id"]))
        self.assertTrue(tglib.wait_until(lambda: a.ledger.query(
            "SELECT id FROM kills WHERE id = ? AND deleted_at IS NOT NULL",
            (k["id"],)), 10))
        # One alert for the kill, from the instance that made it.
        def kill_alerts(tg):
            r = self.admin(tg, "GET", "/v1/alerts")
            self.assertEqual(r.status, 200, r)
            return [x for x in r.json()["alerts"]
                    if x["kind"] == "kill" and k["id"] in x["message"]]
        self.assertTrue(tglib.wait_until(lambda: kill_alerts(a), 5))
        self.assertEqual(len(kill_alerts(a)), 1)
        for tg in (b, c):
            self.assertEqual(kill_alerts(tg), [])
        for tg in (a, b, c):
            self.assertTrue(tg.alive())

    def test_kill_written_by_hand_and_malformed_ones(self):
        a = self.instance("pod-a")
        m = new_marker()
        kid = "k_00000000000000a1"
        # The documented example (docs/fleet.md, Kills).
        self.raw_kill(kid, {"id": kid, "match": {"team": "research"},
                            "reason": "over budget, stopped by hand",
                            "expires_at": rfc3339(time.time() + 3600)})
        self.wait_kill(a, kid, timeout=1)
        r = self.chat(a, m, [("Team", "research")])
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["tollgate"]["kill_id"], kid)
        got = self.kills(a)[kid]
        self.assertEqual(got["source"], "fleet")
        self.assertNotIn("instance", got)

        bad = [
            ("k_00000000000000b1", "{not json", "not JSON"),
            ("k_00000000000000b2", '["a"]', "not a JSON object"),
            ("k_00000000000000b3", {"id": "k_00000000000000b3",
                                    "match": {"colour": "red"}},
             "match.colour: match has an unknown attribute"),
            ("k_00000000000000b4", {"id": "k_00000000000000b4",
                                    "match": {}}, "match: match is empty"),
            ("k_00000000000000b5", {"id": "k_00000000000000b5",
                                    "match": {"team": "x"}, "ttl": "2h"},
             "ttl: unknown field"),
            ("k_00000000000000b6", {"id": "K_NOT_AN_ID", "match":
                                    {"team": "x"}}, "id: id must be"),
            ("k_00000000000000b7", {"id": "k_00000000000000b8",
                                    "match": {"team": "x"}},
             "not the field it is stored under"),
            ("k_00000000000000b9", {"id": "k_00000000000000b9",
                                    "match": {"team": "x"},
                                    "expires_at": "tomorrow"},
             "expires_at: expires_at must be an RFC 3339 time"),
            ("k_00000000000000ba", {"id": "k_00000000000000ba",
                                    "match": {"team": "x\u0001y"}},
             "match.team: a match pattern must be"),
            ("k_00000000000000bb", '{"id":"k_00000000000000bb","match":'
             '{"team":"x"},"match":{"team":"y"}}', "match: field given "
             "twice"),
        ]
        for kid_bad, doc, why in bad:
            with self.subTest(kill=kid_bad):
                off = len(a.log())
                self.raw_kill(kid_bad, doc)
                self.assertTrue(a.wait_log(
                    r"fleet: kill %s in Redis refused: .*%s" % (
                        kid_bad, re.escape(why)), 5, start=off),
                    a.log()[off:])
        self.redis.cmd("PUBLISH", HASH, "bogus message")
        self.assertTrue(a.wait_log(r"neither \"add <id>\"", 5))
        self.assertTrue(a.alive())
        self.assertEqual(list(self.kills(a)), [kid])
        self.assertEqual(self.chat(a, m, [("Team", "x")]).status, 200)
        # A second instance reads the same hash at its start: the good
        # kill applies, each bad one is refused again with its line.
        b = self.instance("pod-b")
        self.wait_set(b, [kid])
        for kid_bad, _, why in bad:
            self.assertRegex(b.log(), r"fleet: kill %s in Redis refused: "
                             r".*%s" % (kid_bad, re.escape(why)))
        # An expired kill in the hash is dropped from it.
        old = "k_00000000000000c1"
        self.redis.cmd("HSET", HASH, old, json.dumps(
            {"id": old, "match": {"team": "y"},
             "expires_at": rfc3339(time.time() - 60)}))
        self.instance("pod-c")
        self.assertTrue(tglib.wait_until(
            lambda: self.redis.cmd("HGET", HASH, old) is None, 3))

    def test_late_joiner_and_redis_restarted_empty(self):
        a = self.instance("pod-a")
        k1 = self.post_kill(a, {"team": "t1"})["id"]
        k2 = self.post_kill(a, {"team": "t2"}, ttl="1h")["id"]
        # Started after the kills: it has them once it has reconciled.
        b = self.instance("pod-b")
        self.wait_set(b, [k1, k2])
        self.assertTrue(tglib.wait_until(lambda: b.ledger.scalar(
            "SELECT count(*) FROM kills WHERE deleted_at IS NULL") == 2, 10))

        # Redis dies; a kill is made on B meanwhile (kept there only).
        self.redis.kill()
        self.assertTrue(a.wait_log(r"connection to .* lost", 5))
        self.assertTrue(b.wait_log(r"connection to .* lost", 5))
        k3 = self.post_kill(b, {"team": "t3"})["id"]
        self.assertTrue(b.wait_log(r"fleet: kill %s is kept here until "
                                   r"Redis answers" % k3, 5))
        self.assertNotIn(k3, self.kills(a))
        # Redis comes back empty: the instances share what they hold, so
        # nothing is lifted by the loss and each gets the full set.
        self.redis.restart()
        want = sorted([k1, k2, k3])
        for tg in (a, b):
            self.wait_set(tg, want, 10)
        self.assertTrue(tglib.wait_until(
            lambda: sorted(self.redis.hgetall(HASH)) == want, 5))
        r = self.chat(a, new_marker(), [("Team", "t3")])
        self.assertEqual(r.status, 403, r)
        # One more, started now, reads all three.
        c = self.instance("pod-c")
        self.wait_set(c, want)

    def test_breaker_trip_on_one_kills_on_another(self):
        pol = [{"name": "agents", "match": {"agent_class": "bot"},
                "breakers": {"loop": {"count": 2, "within": "60s",
                                      "kill_for": "10m"}}}]
        a = self.instance("pod-a", pol)
        b = self.instance("pod-b", pol)
        m = new_marker()
        tags = [("Agent-Class", "bot"), ("Intent", "ticket-9")]
        self.assertEqual(self.chat(a, m, tags).status, 200)
        r = self.chat(a, m, tags)
        self.assertEqual(r.status, 403, r)
        kid = r.json()["tollgate"]["kill_id"]
        self.wait_kill(b, kid, timeout=1)
        got = self.kills(b)[kid]
        self.assertEqual(got["source"], "breaker:agents:loop")
        self.assertEqual(got["instance"], "pod-a")
        # B refuses the looping intent with a different body too, and a
        # trip of B's own breaker would not add a second kill.
        r = self.chat(b, new_marker(), tags)
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["tollgate"]["kill_id"], kid)
        self.assertEqual(self.chat(b, m, [("Agent-Class", "bot"),
                                          ("Intent", "ticket-10")]).status,
                         200)
        self.assertEqual(list(self.kills(b)), [kid])
        self.assertEqual(list(self.redis.hgetall(HASH)), [kid])

    def test_lift_while_redis_down_is_applied_when_it_returns(self):
        a = self.instance("pod-a")
        b = self.instance("pod-b")
        k = self.post_kill(a, {"team": "frozen"})["id"]
        self.wait_kill(b, k, timeout=1)
        # Redis stops answering (connections stay open).
        self.redis.pause()
        try:
            self.assertTrue(b.wait_log(r"command connection to .* lost",
                                       5))
            r = self.admin(b, "DELETE", "/v1/kills/" + k)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(b.wait_log(r"the lift of kill %s is sent when "
                                       r"Redis answers again" % k, 5))
            time.sleep(0.5)
            self.assertIn(k, self.kills(a))
        finally:
            self.redis.resume()
        # Back: B sends its lift, A applies it.
        self.wait_kill(a, k, present=False, timeout=5)
        self.assertIsNone(self.redis.cmd("HGET", HASH, k))
        self.assertEqual(self.chat(a, new_marker(), [("Team", "frozen")])
                         .status, 200)
        # A restart of A does not bring it back from A's ledger.
        self.assertEqual(a.stop(), 0)
        a2 = self.instance("pod-a")
        time.sleep(0.5)
        self.assertNotIn(k, self.kills(a2))
        self.assertNotIn(k, self.kills(b))


if __name__ == "__main__":
    tglib.main()
