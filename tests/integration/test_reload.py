# SPDX-License-Identifier: Apache-2.0
"""Reloads that tell the truth, through the real binary, by SIGHUP and by
POST /v1/reload.

A file caught half-written must not go live: an empty file, one without
upstreams, one that lost its listen: or its policies: (a valid prefix of
the real file) is refused and the running configuration keeps serving and
capping. Removing every policy on purpose (`policies: []`) is done, with a
loud warning naming what was lifted. The messages about settings that need
a restart name the address actually listened on, and the one asked for,
on every reload, not only the first."""

import json
import re
import signal
import socket
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")

# A policy that refuses every call of team `stopped` (403), so a test can
# see whether the running configuration still has its policies.
POLICIES = [
    {"name": "stop-team", "match": {"team": "stopped"}, "killed": True,
     "kill_reason": "stopped by policy"},
    {"name": "stop-other", "match": {"team": "other"}, "killed": True},
]


class ReloadTest(tglib.TGTestCase):

    def config(self, ups=None, policies=POLICIES):
        return tglib.make_config(
            self.ups if ups is None else ups, extra={
                "admin": {"listen": "127.0.0.1:0"},
                "ledger": {"path": "data/reload.db"},
                "policies": policies})

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.ups = tglib.std_upstreams(self.fp.port)
        self.good = self.config()
        self.tg = self.tollgate(config_text=self.good)
        m = tglib.wait_until(lambda: ADMIN_RE.search(self.tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        self.tg.admin_port = int(m.group(1))
        # Signals are handled from the 'started' line on; a SIGHUP before
        # it would end the process.
        self.assertTrue(self.tg.wait_log(r"tollgate \S+ started", 10))

    # -- helpers ----------------------------------------------------------

    def chat(self, team=None):
        h = [JSON_CT]
        if team:
            h.append(("X-Tollgate-Team", team))
        return self.call(self.tg.port, "POST", "/v1/chat/completions",
                         tglib.openai_chat(new_marker()), h)

    def write_raw(self, text):
        """The file exactly as given: write_config would add sections."""
        with open(self.tg.config_path, "w") as f:
            f.write(text)

    def reload_api(self):
        raw = tglib.build_request(
            "POST", "/v1/reload", b"{}",
            [("Host", "127.0.0.1:%d" % self.tg.admin_port), JSON_CT],
            host=None)
        r = self.call(self.tg.admin_port, "POST", "/v1/reload", raw=raw)
        try:
            return r.status, json.loads(r.body)
        except ValueError:
            self.fail("POST /v1/reload answered no JSON: %r" % r)

    def hup_and_wait(self, what):
        """SIGHUP, then the log after it once the reload has ended."""
        mark = len(self.tg.log())
        self.tg.hup()
        m = self.tg.wait_log(r"(reload failed|configuration reloaded)",
                             10, start=mark)
        self.assertTrue(m, "%s: no reload outcome logged" % what)
        return self.tg.log()[mark:]

    def assertStillRunningOld(self, what):
        r = self.chat()
        self.assertEqual(r.status, 200, "%s: calls stopped working: %r" %
                         (what, r))
        r = self.chat("stopped")
        self.assertEqual(r.status, 403, "%s: the running policies were "
                         "lost: %r" % (what, r))

    def assertRefused(self, text, what, words):
        """text, reloaded by SIGHUP and by the API, is refused with words
        in the errors, and the running configuration stays."""
        self.write_raw(text)
        log = self.hup_and_wait(what)
        self.assertIn("reload failed", log, "%s was taken: %s" % (what, log))
        for w in words:
            self.assertIn(w, log, "%s: SIGHUP log lacks %r:\n%s" %
                          (what, w, log))
        self.assertStillRunningOld(what + " (SIGHUP)")
        status, doc = self.reload_api()
        self.assertEqual(status, 422, "%s: %r" % (what, doc))
        self.assertEqual(doc["status"], "refused", doc)
        errors = "\n".join(doc["errors"])
        for w in words:
            self.assertIn(w, errors, "%s: API errors lack %r: %r" %
                          (what, w, doc))
        self.assertStillRunningOld(what + " (POST /v1/reload)")

    # -- a file caught half-written ---------------------------------------

    def test_empty_file_refused(self):
        self.assertStillRunningOld("before")
        self.assertRefused("", "an empty file",
                           ["no upstreams", "listen: is missing",
                            "policies: is missing"])

    def test_no_upstreams_refused(self):
        text = self.config(ups={})
        self.assertIn("upstreams: {}", text)
        self.assertRefused(text, "a file without upstreams",
                           ["no upstreams"])

    def test_no_listen_refused(self):
        text = re.sub(r"(?m)^listen:.*\n", "", self.good)
        self.assertRefused(text, "a file without listen:",
                           ["listen: is missing"])

    def test_prefix_without_policies_refused(self):
        # The file as a writer leaves it halfway: everything up to the
        # policies, then the end of the file.
        cut = self.good.index("policies:")
        for text, what in ((self.good[:cut], "a prefix without policies:"),
                           (self.good[:cut] + "policies:\n",
                            "a prefix that ends at 'policies:'")):
            with self.subTest(what=what):
                self.assertRefused(text, what, ["policies: is missing",
                                                "policies: []"])

    def test_truncated_mid_key_refused(self):
        cut = self.good.index("policies:") + len("polic")
        self.assertRefused(self.good[:cut], "a file cut in a key", [":"])

    def test_removing_policies_warns(self):
        # One policy fewer: done, and said.
        text = self.config(policies=POLICIES[:1])
        self.write_raw(text)
        status, doc = self.reload_api()
        self.assertEqual(status, 200, doc)
        self.assertIn("policy 'stop-other' is removed",
                      "\n".join(doc.get("warnings", [])), doc)
        self.assertEqual(self.chat("other").status, 200)
        self.assertEqual(self.chat("stopped").status, 403)
        # Every policy, on purpose: done, loudly.
        self.write_raw(text.replace(text[text.index("policies:"):],
                                    "policies: []\n"))
        log = self.hup_and_wait("policies: []")
        self.assertIn("configuration reloaded", log)
        self.assertRegex(log, r"warn: reload: the new configuration has no "
                         r"policies: all 1 policies are removed")
        self.assertEqual(self.chat("stopped").status, 200)

    # -- a signal on the first line -------------------------------------

    def started_and_signalled(self, name, sig):
        """A tollgate sent sig the moment it says where it listens, as a
        deploy tool that starts it and reloads or stops it at once."""
        tg = tglib.Tollgate(self.tmp, tglib.make_config(self.ups),
                            name=name, wait=False)
        self._procs.append(tg)
        deadline = time.monotonic() + 15
        while "proxy listening on" not in tg.stderr():
            self.assertLess(time.monotonic(), deadline,
                            "%s never listened:\n%s" % (name, tg.stderr()))
            self.assertTrue(tg.alive(), tg.stderr())
            time.sleep(0.0005)
        tg.signal(sig)
        return tg

    def test_signal_right_after_start(self):
        """Signals are handled from before the first listener is
        announced: a SIGHUP on that line is a reload (it used to end the
        process most of the time), a SIGTERM a clean drain and exit 0."""
        for i in range(5):
            tg = self.started_and_signalled("hup%d" % i, signal.SIGHUP)
            self.assertTrue(tg.wait_log(r"configuration reloaded", 10),
                            "attempt %d: no reload; exit %r:\n%s" %
                            (i, tg.returncode, tg.stderr()))
            self.assertTrue(tg.alive(), "attempt %d: tollgate ended" % i)
            tg.wait_listening()
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(new_marker()), [JSON_CT])
            self.assertEqual(r.status, 200, r)
            self.assertEqual(tg.stop(), 0)
        for i in range(3):
            tg = self.started_and_signalled("term%d" % i, signal.SIGTERM)
            self.assertEqual(tg.wait(15), 0, "attempt %d: exit code:\n%s" %
                             (i, tg.stderr()))

    # -- what the messages say --------------------------------------------

    def test_listen_change_names_the_address_in_use(self):
        port = self.tg.port
        new_port = tglib.free_port()
        new_admin = tglib.free_port()
        text = self.good.replace("listen: 127.0.0.1:0",
                                 "listen: 127.0.0.1:%d" % new_port, 1)
        text = text.replace("listen: 127.0.0.1:0",
                            "listen: 127.0.0.1:%d" % new_admin, 1)
        self.write_raw(text)
        want = ("listen 127.0.0.1:%d needs a restart; still listening on "
                "127.0.0.1:%d (asked for 127.0.0.1:0 at start)" %
                (new_port, port))
        want_admin = ("the admin API keeps 127.0.0.1:%d and its token (the "
                      "file asks for 127.0.0.1:%d)" %
                      (self.tg.admin_port, new_admin))
        # Every reload says it, not only the first one.
        for i in range(2):
            log = self.hup_and_wait("reload %d" % i)
            self.assertIn("configuration reloaded", log)
            self.assertIn(want, log, "reload %d:\n%s" % (i, log))
            self.assertIn(want_admin, log, "reload %d:\n%s" % (i, log))
        status, doc = self.reload_api()
        self.assertEqual(status, 200, doc)
        self.assertIn(want, doc.get("warnings", []), doc)
        # And it is true: the old port answers, the new one does not.
        self.assertEqual(self.chat().status, 200)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", new_port), 2).close()
        # A file naming the port that 0 picked changes nothing.
        self.write_raw(self.good.replace(
            "listen: 127.0.0.1:0", "listen: 127.0.0.1:%d" % port, 1))
        log = self.hup_and_wait("the port in use")
        self.assertIn("configuration reloaded", log)
        self.assertNotIn("needs a restart", log)


if __name__ == "__main__":
    tglib.main()
