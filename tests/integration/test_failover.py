#!/usr/bin/env python3
"""Failover, retries and several keys or URLs per upstream
(docs/spend-less.md, Failover and retries), through the real binary and
fakeprov instances scripted to fail (--fail-status, --fail-hang, a port
nothing listens on): a call whose upstream fails before any of its answer
reached the client is sent to the rule's fallback, or again after a
backoff, and the client gets one clean answer; a failure after the first
relayed byte, or a 400, is never tried again; retry-after is waited; the
attempts are bounded; two keys take turns and one that got a 429 sits
out its retry-after; base URLs share calls by weight; a hard cap holds
over a dearer fallback; keys never reach the log or the ledger; tollgate
check names every bad option at its file:line."""

import json
import os
import re
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
from ledgerlib import marker as new_marker  # noqa: E402

KEY_CLIENT = "sk-CANARY-failover-client-0c3e"
KEY_BACKUP = "sk-CANARY-failover-backup-5a71"
KEY_A = "sk-CANARY-failover-key-a-91d2"
KEY_B = "sk-CANARY-failover-key-b-2b8f"
KEY_TOLLGATE = "tg-CANARY-failover-agent-44e0"
ENV_BACKUP = "TG_FAILOVER_BACKUP_KEY"
ENV_A = "TG_FAILOVER_KEY_A"
ENV_B = "TG_FAILOVER_KEY_B"
AUTH = ("Authorization", "Bearer " + KEY_CLIENT)
FAILOVER = {"name": "openai-failover", "match": {"upstream": "openai"},
            "fallback": ["backup"]}

os.environ[ENV_BACKUP] = KEY_BACKUP
os.environ[ENV_A] = KEY_A
os.environ[ENV_B] = KEY_B


def auth_of(rec):
    v = tglib.rec_header(rec, "authorization")
    return v[0] if v else None


class FailoverTest(ledgerlib.MeterTestCase):

    def start_tg(self, primary, backup=None, routing=None, retry=None,
                 policies=None, ups=None, name="tollgate"):
        """tollgate with 'openai' at primary (a Fakeprov or a base URL)
        and, when given, 'backup' (type openai too, as a fallback must
        be, its own key) at backup."""
        base = primary if isinstance(primary, str) else primary.base
        u = ledgerlib.metering_upstreams(
            self.fp_other.port, openai={"base_url": base})
        if backup is not None:
            u["backup"] = {"type": "openai",
                           "base_url": backup if isinstance(backup, str)
                           else backup.base,
                           "api_key_env": ENV_BACKUP}
        for k, v in (ups or {}).items():
            u.setdefault(k, {}).update(v)
        ex = ledgerlib.metering_extra()
        if routing is not None:
            ex["routing"] = routing
        if retry is not None:
            ex["retry"] = retry
        if policies:
            ex["policies"] = policies
        ex["attribution"] = {"keys": [
            {"tollgate_key_sha256": ledgerlib.key_sha256(KEY_TOLLGATE),
             "tags": {"agent_class": "keyed"}}]}
        # One ledger per test: the tollgate before this one leaves it.
        if getattr(self, "last_tg", None) is not None:
            self.last_tg.expected_exit = True
            self.assertEqual(self.last_tg.stop(), 0)
        tg = self.tollgate(upstreams=u, extra=ex, name=name)
        self.last_tg = tg
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        return tg

    def setUp(self):
        super().setUp()
        self.fp_other = self.fakeprov(name="other")

    def chat(self, tg, stream=False, hdrs=(), model="gpt-4o-mini",
             timeout=20, key=KEY_CLIENT, extra=None):
        m = new_marker()
        body = tglib.openai_chat(m, stream, model, extra)
        t0 = time.monotonic()
        r = self.call(tg.port, "POST", "/v1/chat/completions", body,
                      [JSON_CT, ("Authorization", "Bearer " + key)] +
                      list(hdrs), timeout=timeout)
        r.elapsed = time.monotonic() - t0
        r.marker = m
        return r

    def admin_text(self, tg, path):
        m = tglib.wait_until(lambda: tg.ADMIN_RE.search(tg.stderr()), 10)
        port = int(m.group(1))
        raw = tglib.build_request("GET", path, b"",
                                  [("Host", "127.0.0.1:%d" % port)],
                                  host=None)
        r = self.call(port, "GET", path, raw=raw)
        self.assertEqual(r.status, 200, r)
        return r.body.decode()

    def dead_url(self):
        return "http://127.0.0.1:%d" % tglib.free_port()

    def assertNoKeys(self, tg):
        """No key of any kind in the log or the ledger's files."""
        tg.wait_written()
        blobs = {"log": tg.stderr().encode()}
        d = os.path.join(self.tmp, "data")
        for f in os.listdir(d):
            with open(os.path.join(d, f), "rb") as fh:
                blobs[f] = fh.read()
        for k in (KEY_CLIENT, KEY_BACKUP, KEY_A, KEY_B, KEY_TOLLGATE):
            for where, data in blobs.items():
                self.assertNotIn(k.encode(), data,
                                 "key %s found in %s" % (k, where))

    # -- failover -------------------------------------------------------

    def test_503_fails_over_to_backup(self):
        p = self.fakeprov(name="primary", args=["--fail-status", "503"])
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, b, routing=[FAILOVER])
        r = self.chat(tg)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")
        self.assertEqual(r.header("x-tollgate-route"), "openai-failover")
        self.assertTrue(r.json()["choices"])
        self.assertEqual(len(p.find_requests(r.marker)), 1)
        got = b.find_requests(r.marker)
        self.assertEqual(len(got), 1)
        # The backup gets its own key, never the client's.
        self.assertEqual(auth_of(got[0]), "Bearer " + KEY_BACKUP)
        self.assertEqual(auth_of(p.find_requests(r.marker)[0]),
                         "Bearer " + KEY_CLIENT)
        row = self.settled_row(r)
        self.assertEqual(row["status"], "ok")
        self.assertEqual(row["upstream"], "backup")
        self.assertGreater(row["cost_nusd"], 0)
        self.check_attempts(row, 2, [("openai", 503, "provider_error")])
        self.assertNoKeys(tg)

    def check_attempts(self, row, n, log):
        """The row's attempts and attempt_log, once the ledger has them."""
        self.assertEqual(row["attempts"], n, ledgerlib.describe_row(row))
        if not log:
            self.assertIsNone(row["attempt_log"])
            return
        got = json.loads(row["attempt_log"])
        self.assertEqual([(a["upstream"], a["status"], a["error"])
                          for a in got], log)
        for a in got:
            self.assertIsInstance(a["ms"], int)

    def test_refused_connection_fails_over(self):
        b = self.fakeprov(name="backup")
        tg = self.start_tg(self.dead_url(), b, routing=[FAILOVER])
        r = self.chat(tg)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")
        row = self.settled_row(r)
        self.assertEqual(row["upstream"], "backup")
        self.check_attempts(row, 2, [("openai", None,
                                      "upstream_unavailable")])

    def test_header_timeout_fails_over(self):
        p = self.fakeprov(name="primary", args=["--fail-hang"])
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, b, routing=[FAILOVER],
                           ups={"openai": {"base_url": p.base,
                                           "header_timeout": "500ms"}})
        t0 = time.monotonic()
        r = self.chat(tg)
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(time.monotonic() - t0, 0.45)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")
        row = self.settled_row(r)
        self.assertEqual(row["upstream"], "backup")
        self.check_attempts(row, 2, [("openai", None, "upstream_timeout")])
        # The hung attempt was sent and may be billed: charged its worst
        # case on top of what the backup's answer cost.
        self.assertGreater(row["cost_nusd"], row["reserved_nusd"])

    def test_header_timeout_under_a_cap_not_failed_over(self):
        # Sent and unanswered, the call may be billed: under a hard cap
        # one reservation cannot cover two worst cases (fail closed).
        p = self.fakeprov(name="primary", args=["--fail-hang"])
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, b, routing=[FAILOVER],
                           ups={"openai": {"base_url": p.base,
                                           "header_timeout": "300ms"}},
                           policies=[{"name": "cap", "window": "day",
                                      "hard_cap_usd": "10"}])
        r = self.chat(tg)
        self.assertEqual(r.status, 504, r)
        self.assertIsNone(r.header("x-tollgate-attempts"))
        self.assertEqual(b.find_requests(r.marker), [])
        row = self.settled_row(r)
        self.assertEqual(row["upstream"], "openai")
        self.assertEqual(row["cost_nusd"], row["reserved_nusd"])
        self.check_attempts(row, 1, [("openai", None, "upstream_timeout")])

    def test_tollgate_key_never_fails_over_keyless(self):
        # A tollgate key is never sent on, and a call made with one never
        # goes without a key of the upstream's own: a keyless fallback
        # is left out of its chain.
        p = self.fakeprov(name="primary", args=["--fail-status", "503"])
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, routing=[FAILOVER], ups={
            "openai": {"api_key_env": ENV_A},
            "backup": {"type": "openai", "base_url": b.base}})
        r = self.chat(tg, key=KEY_TOLLGATE)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(b.find_requests(r.marker), [])
        self.assertEqual(auth_of(p.find_requests(r.marker)[0]),
                         "Bearer " + KEY_A)
        # A client's own key fails over to it, without the key.
        r = self.chat(tg)
        self.assertEqual(r.status, 200, r)
        got = b.find_requests(r.marker)
        self.assertEqual([auth_of(g) for g in got], [None])
        self.assertNoKeys(tg)

    def test_stream_fails_over_cleanly(self):
        p = self.fakeprov(name="primary", args=["--fail-status", "503"])
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, b, routing=[FAILOVER])
        r = self.chat(tg, stream=True)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")
        body = r.body.decode()
        self.assertEqual(body.count("data: [DONE]"), 1, body)
        self.assertNotIn("error", body)
        row = self.settled_row(r)
        self.assertEqual(row["status"], "ok")
        self.assertEqual(row["upstream"], "backup")

    def test_failure_after_first_byte_not_retried(self):
        p = self.fakeprov(name="primary")
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, b, routing=[FAILOVER])
        r = self.chat(tg, stream=True,
                      hdrs=[("x-fake-reset-after", "2")])
        self.assertEqual(r.status, 200)
        self.assertNotIn(b"[DONE]", r.body)
        self.assertIsNone(r.header("x-tollgate-attempts"))
        self.assertEqual(b.find_requests(r.marker), [])
        row = self.settled_row(r)
        self.assertEqual(row["upstream"], "openai")
        self.assertEqual(row["status"], "upstream_error")
        self.check_attempts(row, 1, None)

    def test_400_relayed_not_retried(self):
        p = self.fakeprov(name="primary", args=["--fail-status", "400"])
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, b, routing=[FAILOVER],
                           retry={"attempts": 3, "backoff": "10ms"})
        r = self.chat(tg)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(len(p.find_requests(r.marker)), 1)
        self.assertEqual(b.find_requests(r.marker), [])
        row = self.settled_row(r)
        self.assertEqual(row["upstream"], "openai")
        self.check_attempts(row, 1, None)

    def test_all_unreachable_502_names_every_attempt(self):
        tg = self.start_tg(self.dead_url(), self.dead_url(),
                           routing=[FAILOVER])
        r = self.chat(tg)
        self.assertEqual(r.status, 502, r)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")
        self.assertEqual(r.json()["error"]["code"], "upstream_unavailable")
        row = self.settled_row(r)
        self.assertEqual(row["status"], "upstream_error")
        self.assertEqual(row["cost_nusd"], 0)
        self.check_attempts(row, 2, [
            ("openai", None, "upstream_unavailable"),
            ("backup", None, "upstream_unavailable")])

    def test_last_failure_relayed_when_all_fail(self):
        p = self.fakeprov(name="primary", args=["--fail-status", "503"])
        b = self.fakeprov(name="backup", args=["--fail-status", "502"])
        tg = self.start_tg(p, b, routing=[FAILOVER])
        r = self.chat(tg)
        # The backup's own answer, relayed as it came.
        self.assertEqual(r.status, 502, r)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")
        row = self.settled_row(r)
        self.assertEqual(row["upstream"], "backup")
        self.assertEqual(row["cost_nusd"], 0)
        self.check_attempts(row, 2, [("openai", 503, "provider_error")])

    # -- retries --------------------------------------------------------

    def test_retry_after_honoured_and_bounded(self):
        p = self.fakeprov(name="primary",
                          args=["--fail-status", "429",
                                "--fail-retry-after", "1"])
        tg = self.start_tg(p, retry={"attempts": 2, "backoff": "50ms",
                                     "max_backoff": "2s"})
        r = self.chat(tg)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")
        got = p.find_requests(r.marker)
        self.assertEqual(len(got), 2)  # never more than attempts
        row = self.settled_row(r)
        self.assertEqual(row["status"], "error")
        self.assertGreaterEqual(r.elapsed, 1.0)
        self.check_attempts(row, 2, [("openai", 429, "provider_error")])

    def test_retry_after_past_max_backoff_not_waited(self):
        p = self.fakeprov(name="primary",
                          args=["--fail-status", "503",
                                "--fail-retry-after", "30"])
        tg = self.start_tg(p, retry={"attempts": 3, "backoff": "50ms",
                                     "max_backoff": "1s"})
        r = self.chat(tg)
        self.assertEqual(r.status, 503, r)
        self.assertLess(r.elapsed, 5)
        self.assertEqual(len(p.find_requests(r.marker)), 1)

    def test_retry_succeeds_second_time(self):
        p = self.fakeprov(name="primary",
                          args=["--fail-status", "500", "--fail-count", "1"])
        tg = self.start_tg(p, retry={"attempts": 3, "backoff": "100ms"})
        r = self.chat(tg)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")
        self.assertGreaterEqual(r.elapsed, 0.1)
        row = self.settled_row(r)
        self.assertEqual(row["upstream"], "openai")
        self.check_attempts(row, 2, [("openai", 500, "provider_error")])
        text = self.admin_text(tg, "/metrics")
        self.assertIn('\ntollgate_upstream_attempts_failed_total{'
                      'upstream="openai",reason="status_5xx",'
                      'next="retry"} 1\n', text)


    # -- several keys and URLs ------------------------------------------

    def test_keys_take_turns_and_429_sits_out(self):
        p = self.fakeprov(name="primary",
                          args=["--fail-status", "429", "--fail-count", "1",
                                "--fail-retry-after", "1",
                                "--fail-key", KEY_A])
        tg = self.start_tg(p, retry={"attempts": 2, "backoff": "10ms"},
                           ups={"openai": {"keys_env": [ENV_A, ENV_B]}})

        def key_of(r):
            got = p.find_requests(r.marker)
            return [auth_of(g)[len("Bearer "):] for g in got]

        # A's first call gets a 429 (retry-after: 1): B serves it at
        # once, without waiting out the retry-after, as another key is in.
        r1 = self.chat(tg, key=KEY_TOLLGATE)
        self.assertEqual(r1.status, 200, r1)
        self.assertEqual(key_of(r1), [KEY_A, KEY_B])
        self.assertEqual(r1.header("x-tollgate-attempts"), "2")
        self.assertLess(r1.elapsed, 0.9)
        row = self.settled_row(r1)
        log = json.loads(row["attempt_log"])
        self.assertEqual(log[0]["key"], ledgerlib.key_fp(KEY_A))
        self.assertEqual(log[0]["status"], 429)
        # While A sits out, every call goes with B.
        t_out = time.monotonic()
        for _ in range(3):
            r = self.chat(tg, key=KEY_TOLLGATE)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(key_of(r), [KEY_B])
        self.assertLess(time.monotonic() - t_out, 0.9,
                        "too slow to observe the sit-out")
        # After its retry-after, A is back in turn.
        time.sleep(1.2)
        seen = set()
        for _ in range(2):
            r = self.chat(tg, key=KEY_TOLLGATE)
            seen.update(key_of(r))
        self.assertEqual(seen, {KEY_A, KEY_B})
        self.assertNoKeys(tg)

    def test_429_on_a_key_retries_at_once_with_another(self):
        # Another key is in: the retry need not wait the backoff.
        p = self.fakeprov(name="primary",
                          args=["--fail-status", "429", "--fail-count", "1",
                                "--fail-key", KEY_A])
        tg = self.start_tg(p, retry={"attempts": 2, "backoff": "1500ms",
                                     "max_backoff": "2s"},
                           ups={"openai": {"keys_env": [ENV_A, ENV_B]}})
        r = self.chat(tg, key=KEY_TOLLGATE)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([auth_of(g) for g in p.find_requests(r.marker)],
                         ["Bearer " + KEY_A, "Bearer " + KEY_B])
        self.assertLess(r.elapsed, 1.0)

    def test_retry_after_ms_preferred(self):
        # retry-after-ms (1200) is read before retry-after (0).
        p = self.fakeprov(name="primary",
                          args=["--fail-status", "503", "--fail-count", "1",
                                "--fail-retry-after", "0",
                                "--fail-retry-after-ms", "1200"])
        tg = self.start_tg(p, retry={"attempts": 2, "backoff": "10ms",
                                     "max_backoff": "2s"})
        r = self.chat(tg)
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(r.elapsed, 1.15)
        # One longer than max_backoff ends the attempts.
        p2 = self.fakeprov(name="primary2",
                           args=["--fail-status", "503",
                                 "--fail-retry-after-ms", "5000"])
        tg = self.start_tg(p2, retry={"attempts": 2, "backoff": "10ms",
                                      "max_backoff": "2s"}, name="tg2")
        r = self.chat(tg)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(len(p2.find_requests(r.marker)), 1)

    def test_weighted_urls_and_a_dead_one(self):
        p1 = self.fakeprov(name="heavy")
        p2 = self.fakeprov(name="light")
        dead = self.dead_url()
        tg = self.start_tg(p1, ups={"openai": {"base_url": [
            {"url": p1.base, "weight": 3}, {"url": p2.base, "weight": 1},
            {"url": dead, "weight": 2}]}},
            retry={"attempts": 2, "backoff": "10ms"})
        for _ in range(40):
            r = self.chat(tg)
            self.assertEqual(r.status, 200, r)
        n1, n2 = len(p1.requests()), len(p2.requests())
        self.assertEqual(n1 + n2, 40)
        # 3 : 1 once the dead URL is out (the first call found it dead).
        self.assertTrue(27 <= n1 <= 33 and 7 <= n2 <= 13, (n1, n2))
        deadrows = self.ledger.rows("attempts = 2")
        self.assertLessEqual(len(deadrows), 2, [ledgerlib.describe_row(r)
                                                for r in deadrows])

    # -- money ----------------------------------------------------------

    def test_cap_covers_the_dearest_fallback(self):
        # The backup bills the priority tier (dearer), the primary the
        # standard one; the primary fails every call. gpt-4o, 1000
        # output tokens: worst case $0.0100 standard, $0.0170 priority.
        p = self.fakeprov(name="primary", args=["--fail-status", "503"])
        b = self.fakeprov(name="backup")
        cap = "0.05"
        tg = self.start_tg(p, b, routing=[FAILOVER],
                           ups={"backup": {"service_tier_default":
                                           "priority"}},
                           policies=[{"name": "cap", "window": "day",
                                      "hard_cap_usd": cap}])
        hdrs = [("x-fake-delay-ms", "1500"), ("x-fake-events", "10"),
                ("x-fake-event-tokens", "100"),
                ("x-fake-input-tokens", "5")]
        out = []

        def one():
            out.append(self.chat(tg, model="gpt-4o", hdrs=hdrs,
                                 extra={"max_tokens": 1000}))
        ts = [threading.Thread(target=one) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ok = [r for r in out if r.status == 200]
        refused = [r for r in out if r.status == 429]
        self.assertEqual(len(ok) + len(refused), 6, out)
        rows = [self.settled_row(r) for r in ok]
        prio = self.prices.cost_nusd("gpt-4o", {
            "input": 0, "output": 1000, "cached": 0, "cache_write": 0,
            "reasoning": 0}) * 17 // 10
        for row in rows:
            # Reserved at the backup's tier: the dearest of the chain.
            self.assertGreaterEqual(row["reserved_nusd"], prio,
                                    ledgerlib.describe_row(row))
        # Only what the dearest worst case lets fit at once.
        self.assertLessEqual(len(ok), 2, [r.status for r in out])
        self.assertGreaterEqual(len(ok), 1)
        self.assertLessEqual(sum(r["cost_nusd"] for r in rows),
                             50 * 10 ** 6)


    # -- a call keeps its provider -------------------------------------

    def admin_post(self, tg, path, doc):
        m = tglib.wait_until(lambda: tg.ADMIN_RE.search(tg.stderr()), 10)
        port = int(m.group(1))
        raw = tglib.build_request("POST", path, json.dumps(doc).encode(),
                                  [("Host", "127.0.0.1:%d" % port), JSON_CT],
                                  host=None)
        return self.call(port, "POST", path, raw=raw)

    def test_provider_cap_holds_over_failover(self):
        # A cap on the provider holds for a call that would fail over: the
        # fallback is of the same type, so the provider the policy matched
        # at admission is the one the row records.
        p = self.fakeprov(name="primary", args=["--fail-status", "503"])
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, b, routing=[FAILOVER], policies=[
            {"name": "openai-cap", "match": {"provider": "openai"},
             "window": "day", "hard_cap_usd": "0.000001"}])
        r = self.chat(tg)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(p.find_requests(r.marker), [])
        self.assertEqual(b.find_requests(r.marker), [])
        # With the cap off, the same call fails over and is recorded
        # under the provider the cap matched.
        tg2 = self.start_tg(p, b, routing=[FAILOVER], name="uncapped")
        r = self.chat(tg2)
        self.assertEqual(r.status, 200, r)
        row = self.settled_row(r)
        self.assertEqual((row["upstream"], row["provider"]),
                         ("backup", "openai"))

    def test_provider_kill_stops_failed_over_call(self):
        p = self.fakeprov(name="primary", args=["--fail-status", "503"])
        b = self.fakeprov(name="backup")
        tg = self.start_tg(p, b, routing=[FAILOVER])
        k = self.admin_post(tg, "/v1/kills",
                            {"match": {"provider": "openai"}})
        self.assertIn(k.status, (201, 202), k)
        r = self.chat(tg)
        self.assertEqual(r.status, 403, r)
        self.assertEqual(p.find_requests(r.marker), [])
        self.assertEqual(b.find_requests(r.marker), [])

    def test_default_output_bound_reaches_fallback(self):
        # The bound a policy adds is written once, with the field name of
        # the chain's type, and that is the name the fallback reads.
        for typ, field, other in (
                ("openai_compatible", "max_tokens", "max_completion_tokens"),
                ("openai", "max_completion_tokens", "max_tokens")):
            p = self.fakeprov(name="primary-" + typ,
                              args=["--fail-status", "503"])
            b = self.fakeprov(name="backup-" + typ)
            tg = self.start_tg(p, b, routing=[FAILOVER], name=typ, ups={
                "openai": {"type": typ},
                "backup": {"type": typ}}, policies=[
                {"name": "bound", "window": "day", "hard_cap_usd": "100",
                 "default_output_tokens": 321}])
            r = self.chat(tg)
            self.assertEqual(r.status, 200, r)
            got = b.find_requests(r.marker)
            self.assertEqual(len(got), 1)
            body = json.loads(got[0]["body"])
            self.assertEqual(body.get(field), 321, (typ, body))
            self.assertNotIn(other, body, (typ, body))

    def test_capped_gateway_answer_not_retried(self):
        # A 502, 504 or 52x may come from a gateway after the model ran
        # behind it and billed: under a hard cap no second attempt.
        for st in ("502", "504", "524"):
            p = self.fakeprov(name="primary" + st, args=["--fail-status", st])
            b = self.fakeprov(name="backup" + st)
            tg = self.start_tg(p, b, routing=[FAILOVER], name="tg" + st,
                               retry={"attempts": 3, "backoff": "10ms"},
                               policies=[{"name": "cap", "window": "day",
                                          "hard_cap_usd": "10"}])
            r = self.chat(tg)
            self.assertEqual(r.status, int(st), r)
            self.assertIsNone(r.header("x-tollgate-attempts"))
            self.assertEqual(len(p.find_requests(r.marker)), 1)
            self.assertEqual(b.find_requests(r.marker), [])
        # Without a cap, the gateway's 502 fails over as before.
        tg = self.start_tg(p, b, routing=[FAILOVER], name="uncapped")
        r = self.chat(tg)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-attempts"), "2")

    # -- tollgate check -------------------------------------------------

    def check_errors(self, ups_extra=None, routing=None, retry=None):
        u = ledgerlib.metering_upstreams(self.fp_other.port)
        u["backup"] = {"type": "openai", "base_url": self.fp_other.base}
        u["compat"] = {"type": "openai_compatible",
                       "base_url": self.fp_other.base}
        u["claude2"] = {"type": "anthropic", "base_url": self.fp_other.base}
        for k, v in (ups_extra or {}).items():
            u.setdefault(k, {}).update(v)
        ex = ledgerlib.metering_extra()
        if routing is not None:
            ex["routing"] = routing
        if retry is not None:
            ex["retry"] = retry
        text = tglib.make_config(u, extra=ex)
        rc, out, err, path = tglib.run_check(text, self.tmp)
        self.assertNotEqual(rc, 0, out + err)
        return text, err.replace(path, "FILE")

    def assertErrorAt(self, text, err, needle, msg_re):
        """An error at the line of needle's first occurrence whose message
        matches msg_re."""
        line = next(i for i, l in enumerate(text.split("\n"), 1)
                    if needle in l)
        self.assertRegex(err, r"FILE:%d:\d+: .*%s" % (line, msg_re), err)

    def test_check_refuses_bad_fallbacks(self):
        rule = dict(FAILOVER)
        for fb, msg in [
                (["nowhere"], r"no upstream named 'nowhere'"),
                (["openai"], r"cannot fail over to itself"),
                (["azure"], r"azure_openai upstream.*cannot be a fallback"),
                (["claude2"], r"does not speak the same API"),
                # The call's provider is what its policies matched at
                # admission: a fallback never changes it.
                (["compat"], r"'compat' is of type openai_compatible; a "
                 r"fallback must be of the same type")]:
            rule["fallback"] = fb
            text, err = self.check_errors(routing=[rule])
            self.assertErrorAt(text, err, "- " + fb[0], msg)
        rule["fallback"] = ["backup", "backup"]
        text, err = self.check_errors(routing=[rule])
        self.assertRegex(err, r"fallback\[1\]: 'backup' is listed twice")
        rule["fallback"] = []
        text, err = self.check_errors(routing=[rule])
        self.assertRegex(err, r"fallback: expected a list of 1 to 8")

    def test_check_refuses_bad_keys_urls_and_retry(self):
        text, err = self.check_errors({"openai": {"keys_env": []}})
        self.assertErrorAt(text, err, "keys_env", r"at least one")
        # An unset variable: check warns (it must not need production
        # secrets), the daemon refuses to start, as for api_key_env.
        u = ledgerlib.metering_upstreams(
            self.fp_other.port,
            openai={"keys_env": [ENV_A, "TG_FAILOVER_UNSET_VAR"]})
        text = tglib.make_config(u, extra=ledgerlib.metering_extra())
        rc, out, err, path = tglib.run_check(text, self.tmp)
        self.assertEqual(rc, 0, err)
        self.assertRegex(err, r"warning: upstreams\.openai\.keys_env\[1\]: "
                         r"the environment variable TG_FAILOVER_UNSET_VAR "
                         r"is not set here")
        tg = tglib.Tollgate(self.tmp, text, wait=False, name="unset")
        self._procs.append(tg)
        self.assertEqual(tg.wait(15), 1)
        tg.expected_exit = True
        self.assertIn("keys_env[1]: the environment variable "
                      "TG_FAILOVER_UNSET_VAR is not set", tg.stderr())
        text, err = self.check_errors(
            {"openai": {"keys_env": [ENV_A, ENV_A]}})
        self.assertRegex(err, r"keys_env\[1\]: %s is already listed" % ENV_A)
        text, err = self.check_errors(
            {"openai": {"keys_env": [ENV_A], "api_key_env": ENV_B}})
        self.assertErrorAt(text, err, "keys_env",
                           r"api_key_env or keys_env, not both")
        for w in ("0", "x", "1.5"):
            text, err = self.check_errors({"openai": {"base_url": [
                {"url": self.fp_other.base, "weight": w}]}})
            self.assertErrorAt(text, err, "weight: " + w,
                               r"base_url\[0\]\.weight: expected a whole "
                               r"number from 1 to 1000")
        text, err = self.check_errors({"openai": {"base_url": [
            self.fp_other.base, self.fp_other.base + "/"]}})
        self.assertRegex(err, r"base_url\[1\]: the same URL is listed twice")
        text, err = self.check_errors({"openai": {"base_url": [
            "http://example.com"]}})
        self.assertRegex(err, r"base_url\[0\]: http is only allowed")
        text, err = self.check_errors(retry={"backoff": "2s",
                                             "max_backoff": "1s"})
        self.assertErrorAt(text, err, "max_backoff",
                           r"shorter than retry.backoff")
        text, err = self.check_errors(retry={"backoff": "61s",
                                             "max_backoff": "90s"})
        self.assertErrorAt(text, err, "backoff: 61s",
                           r"retry.backoff: 61000 ms is more than the most "
                           r"allowed, 60s")
        text, err = self.check_errors(retry={"max_backoff": "10m"})
        self.assertErrorAt(text, err, "max_backoff",
                           r"retry.max_backoff: 600000 ms is more than")
        text, err = self.check_errors(retry={"attempts": 0})
        self.assertErrorAt(text, err, "attempts", r"retry.attempts")
        # No key ever echoed in a message.
        self.assertNotIn(KEY_A, err)


if __name__ == "__main__":
    tglib.main()
