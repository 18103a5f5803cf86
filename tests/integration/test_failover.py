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
        and, when given, 'backup' (openai_compatible, its own key) at
        backup."""
        base = primary if isinstance(primary, str) else primary.base
        u = ledgerlib.metering_upstreams(
            self.fp_other.port, openai={"base_url": base})
        if backup is not None:
            u["backup"] = {"type": "openai_compatible",
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
        tg = self.tollgate(upstreams=u, extra=ex, name=name)
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        return tg

    def setUp(self):
        super().setUp()
        self.fp_other = self.fakeprov(name="other")

    def chat(self, tg, stream=False, hdrs=(), model="gpt-4o-mini",
             timeout=20):
        m = new_marker()
        body = tglib.openai_chat(m, stream, model)
        t0 = time.monotonic()
        r = self.call(tg.port, "POST", "/v1/chat/completions", body,
                      [JSON_CT, AUTH] + list(hdrs), timeout=timeout)
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
        for k in (KEY_CLIENT, KEY_BACKUP, KEY_A, KEY_B):
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
        if "attempts" not in row.keys():
            return
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


if __name__ == "__main__":
    tglib.main()
