# SPDX-License-Identifier: Apache-2.0
"""Runtime kill switches through the admin API of the real binary:
POST /v1/kills (201 with the kill, validation errors named, the admin
checks), GET /v1/kills, DELETE /v1/kills/{id} (200, then 404); the kills
table of the ledger; a restart keeps a live kill, keeps a deletion, and
drops a kill whose TTL has run out."""

import json
import os
import re
import sqlite3
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

TOKEN = "adm-CANARY-7a0c3e91b5d24f68"
TOKEN_ENV = "TG_TEST_ADMIN_TOKEN"
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ID_RE = re.compile(r"^k_[0-9a-f]{16}$")


def parse_time(s):
    return time.mktime(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) - \
        time.timezone + int(s[20:23]) / 1000.0


class KillsTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def start_admin(self, name="tollgate"):
        extra = ledgerlib.metering_extra()
        extra["admin"] = {"listen": "127.0.0.1:0", "token_env": TOKEN_ENV}
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=extra, name=name, env={TOKEN_ENV: TOKEN})
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        self.tg = tg
        return tg

    def restart(self):
        self.assertEqual(self.tg.stop(), 0)
        return self.start_admin(name="tollgate2")

    def admin(self, method, path, body=None, token=TOKEN, headers=None):
        hdrs = [("Host", "127.0.0.1:%d" % self.tg.admin_port)]
        if token is not None:
            hdrs.append(("Authorization", "Bearer " + token))
        if body is not None and headers is None:
            hdrs.append(JSON_CT)
        hdrs += list(headers or [])
        if body is None:
            data = b""
        elif isinstance(body, (bytes, str)):
            data = body
        else:
            data = json.dumps(body).encode()
        raw = tglib.build_request(method, path, data, hdrs, host=None)
        return self.call(self.tg.admin_port, method, path, raw=raw)

    def post_kill(self, body, status=201):
        r = self.admin("POST", "/v1/kills", body)
        self.assertEqual(r.status, status, r)
        doc = r.json()
        if status in (201, 202):
            # 201: in force and in the ledger; 202: in force only.
            self.assertIs(doc.pop("recorded"), status == 201, doc)
        return doc

    def list_kills(self):
        r = self.admin("GET", "/v1/kills")
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(list(doc), ["kills"], doc)
        return doc["kills"]

    def assertError(self, r, status, param=None, text=None):
        self.assertEqual(r.status, status, r)
        doc = r.json()
        self.assertIsInstance(doc.get("error"), str, doc)
        if param is not None:
            self.assertEqual(doc.get("parameter"), param, doc)
        if text is not None:
            self.assertIn(text, doc["error"])
        return doc

    def table(self):
        return {r["id"]: r for r in self.ledger.query("SELECT * FROM kills")}

    # -- POST, GET, DELETE ---------------------------------------------------

    def test_answer_says_whether_the_ledger_has_it(self):
        # A 201 means the kill is in the ledger's file when the answer
        # comes: a restart right after it keeps it. While the file cannot
        # be written the kill is in force at once all the same, and the
        # answer says it is not recorded yet (202), never 201.
        self.start_admin()
        k = self.post_kill({"match": {"team": "now"}})
        self.assertIn(k["id"], self.table())
        r = self.admin("DELETE", "/v1/kills/" + k["id"])
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["recorded"])
        self.assertIsNotNone(self.table()[k["id"]]["deleted_at"])

        lockc = sqlite3.connect(self.ledger.path, timeout=10,
                                isolation_level=None)
        try:
            lockc.execute("BEGIN IMMEDIATE")
            t0 = time.monotonic()
            k2 = self.post_kill({"match": {"team": "locked"}}, status=202)
            self.assertGreaterEqual(time.monotonic() - t0, 1.9)
            # In force while unrecorded: the call is refused.
            r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(new_marker()),
                          [JSON_CT, ("X-Tollgate-Team", "locked")])
            self.assertEqual(r.status, 403, r)
            self.assertEqual([x["id"] for x in self.list_kills()],
                             [k2["id"]])
        finally:
            lockc.execute("ROLLBACK")
            lockc.close()
        # Retried until written.
        tglib.wait_until(lambda: k2["id"] in self.table(), 30,
                         what="the kill written once the lock went")

    def test_post_get_delete(self):
        self.start_admin()
        self.assertEqual(self.list_kills(), [])
        t0 = time.time()
        k = self.post_kill({"match": {"agent_class": "researcher",
                                      "team": "x*"},
                            "reason": "runaway loop", "ttl": "2h"})
        self.assertRegex(k["id"], ID_RE)
        self.assertEqual(k["match"], {"team": "x*",
                                      "agent_class": "researcher"})
        self.assertEqual(k["reason"], "runaway loop")
        self.assertEqual(k["source"], "api")
        self.assertRegex(k["created_at"], RFC3339)
        self.assertRegex(k["expires_at"], RFC3339)
        created = parse_time(k["created_at"])
        self.assertLess(abs(created - t0), 5)
        self.assertAlmostEqual(parse_time(k["expires_at"]) - created,
                               7200, delta=0.01)

        # No ttl: until deleted; no reason: a default one.
        k2 = self.post_kill({"match": {"intent": "nightly-report"}})
        self.assertIsNone(k2["expires_at"])
        self.assertTrue(k2["reason"])
        self.assertNotEqual(k["id"], k2["id"])

        self.assertEqual(self.list_kills(), [k, k2])
        r = self.admin("GET", "/metrics")
        self.assertRegex(r.body.decode(), r"(?m)^tollgate_kills_live 2$")
        # Both are in the ledger's kills table (written by the writer).
        tglib.wait_until(lambda: len(self.table()) == 2, 10)
        row = self.table()[k["id"]]
        self.assertEqual(json.loads(row["match"]), k["match"])
        self.assertEqual(row["reason"], "runaway loop")
        self.assertEqual(row["source"], "api")
        self.assertEqual(row["created_at"], k["created_at"])
        self.assertEqual(row["expires_at"], k["expires_at"])
        self.assertIsNone(row["deleted_at"])
        self.assertIsNone(self.table()[k2["id"]]["expires_at"])

        r = self.admin("DELETE", "/v1/kills/" + k["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), dict(k, recorded=True))
        self.assertEqual(self.list_kills(), [k2])
        r = self.admin("DELETE", "/v1/kills/" + k["id"])
        self.assertError(r, 404)
        tglib.wait_until(
            lambda: self.table()[k["id"]]["deleted_at"] is not None, 10)
        self.assertRegex(self.table()[k["id"]]["deleted_at"], RFC3339)
        self.assertIsNone(self.table()[k2["id"]]["deleted_at"])
        self.assertIn("kills: %s deleted" % k["id"], self.tg.log())

    def test_kill_everything_explicitly(self):
        self.start_admin()
        k = self.post_kill({"match": {"team": "*"}, "reason": "freeze"})
        self.assertEqual(k["match"], {"team": "*"})

    def test_routes(self):
        self.start_admin()
        r = self.admin("PUT", "/v1/kills", {"match": {"team": "a"}})
        self.assertError(r, 405)
        self.assertEqual(r.header("allow"), "GET, POST")
        r = self.admin("GET", "/v1/kills/k_0123456789abcdef")
        self.assertError(r, 405)
        self.assertEqual(r.header("allow"), "DELETE")
        for path in ("/v1/kills/", "/v1/kills/a/b", "/v1/killsx",
                     "/v1/kills/k_0123456789abcdef/"):
            with self.subTest(path=path):
                self.assertError(self.admin("DELETE", path), 404)
        r = self.admin("DELETE", "/v1/kills/k_0123456789abcdef")
        self.assertError(r, 404)
        r = self.admin("DELETE", "/v1/kills/" + "k" * 200)
        self.assertError(r, 404)

    def test_auth(self):
        self.start_admin()
        body = {"match": {"team": "a"}}
        for tok in (None, "wrong"):
            with self.subTest(token=tok):
                self.assertError(self.admin("POST", "/v1/kills", body,
                                            token=tok), 401)
                self.assertError(self.admin("GET", "/v1/kills",
                                            token=tok), 401)
                self.assertError(self.admin(
                    "DELETE", "/v1/kills/k_0123456789abcdef", token=tok), 401)
        r = self.admin("POST", "/v1/kills", body,
                       headers=[("Content-Type", "text/plain")])
        self.assertError(r, 415)
        r = self.admin("POST", "/v1/kills", body,
                       headers=[JSON_CT, ("Origin", "http://evil.example")])
        self.assertError(r, 403)
        self.assertEqual(self.list_kills(), [])

    def test_validation(self):
        self.start_admin()
        long = "x" * 129
        cases = [
            (b"", None, "not JSON"),
            (b"{", None, "not JSON"),
            (b"[1]", None, "object"),
            ({}, "match", "required"),
            ({"match": None}, "match", "required"),
            ({"match": {}}, "match", "empty"),
            ({"match": "team"}, "match", "object"),
            ({"match": {"colour": "red"}}, "match.colour", "unknown"),
            ({"match": {"team": ""}}, "match.team", "1 to 128"),
            ({"match": {"team": long}}, "match.team", "1 to 128"),
            ({"match": {"team": 5}}, "match.team", "string"),
            ({"match": {"team": "a"}, "reason": ""}, "reason", None),
            ({"match": {"team": "a"}, "reason": 7}, "reason", None),
            ({"match": {"team": "a"}, "reason": "r" * 513}, "reason", None),
            ({"match": {"team": "a"}, "ttl": "2 hours"}, "ttl", "duration"),
            ({"match": {"team": "a"}, "ttl": "0s"}, "ttl", "duration"),
            ({"match": {"team": "a"}, "ttl": "400d"}, "ttl", "duration"),
            ({"match": {"team": "a"}, "ttl": 7200}, "ttl", "duration"),
            ({"match": {"team": "a"}, "ttl": "2h", "until": "x"}, "until",
             "unknown field"),
        ]
        for body, param, text in cases:
            with self.subTest(body=body):
                r = self.admin("POST", "/v1/kills", body)
                self.assertError(r, 400, param, text)
        # A duplicated attribute key is refused, not silently merged.
        r = self.admin("POST", "/v1/kills",
                       b'{"match":{"team":"a","team":"b"}}')
        self.assertError(r, 400, "match.team", "twice")
        # So is a field given twice: the second match would be dropped.
        r = self.admin("POST", "/v1/kills",
                       b'{"match":{"team":"a"},"match":{"team":"*"}}')
        self.assertError(r, 400, "match", "twice")
        # A control byte cannot reach the log or the table.
        r = self.admin("POST", "/v1/kills",
                       {"match": {"team": "a"}, "reason": "x\ny"})
        self.assertError(r, 400)
        # Nor a C1 control (U+009B is a CSI to some terminals: tollgate
        # top shows the reason).
        r = self.admin("POST", "/v1/kills",
                       {"match": {"team": "a"}, "reason": "x\u009b2J"})
        self.assertError(r, 400)
        self.assertEqual(self.list_kills(), [])
        # Every accepted ttl unit.
        for ttl, secs in (("90s", 90), ("10m", 600), ("2h", 7200),
                          ("7d", 604800)):
            k = self.post_kill({"match": {"team": "t" + ttl}, "ttl": ttl})
            self.assertAlmostEqual(parse_time(k["expires_at"]) -
                                   parse_time(k["created_at"]), secs,
                                   delta=0.01)

    # -- persistence ---------------------------------------------------------

    def test_restart_keeps_kills_and_deletions(self):
        self.start_admin()
        keep = self.post_kill({"match": {"agent_class": "researcher"},
                               "reason": "keep me", "ttl": "7d"})
        forever = self.post_kill({"match": {"model": "gpt-4o*",
                                            "provider": "openai"}})
        gone = self.post_kill({"match": {"team": "beta"}})
        short = self.post_kill({"match": {"tenant": "acme"}, "ttl": "2s"})
        self.assertEqual(self.admin("DELETE", "/v1/kills/" +
                                    gone["id"]).status, 200)
        self.assertEqual(len(self.list_kills()), 3)
        # Past the short one's TTL: it stops being listed while running.
        time.sleep(2.2)
        self.assertEqual(self.list_kills(), [keep, forever])

        tg = self.restart()
        self.assertIn("kills: 2 live kills restored", tg.log())
        self.assertEqual(self.list_kills(), [keep, forever])
        rows = self.table()
        self.assertEqual(set(rows), {keep["id"], forever["id"], gone["id"],
                                     short["id"]})
        self.assertIsNotNone(rows[gone["id"]]["deleted_at"])

        # A deletion made after the restart survives the next one too.
        self.assertEqual(self.admin("DELETE", "/v1/kills/" +
                                    keep["id"]).status, 200)
        self.assertEqual(self.tg.stop(), 0)
        self.start_admin(name="tollgate3")
        self.assertEqual(self.list_kills(), [forever])


if __name__ == "__main__":
    tglib.main()
