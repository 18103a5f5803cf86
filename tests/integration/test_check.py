# SPDX-License-Identifier: Apache-2.0
"""`tollgate check -c FILE`: every error in a broken config is printed as
file:line:col: message, in the order of the file, and the exit code is 1; a
good config prints `configuration OK` and exits 0. Each kind of error is
also checked alone, so one error cannot hide behind another, and the checks
made after the file is read (unknown_models.price_as, a prices: file that
is missing, deployments on an upstream that is not Azure) point at their
own line and column."""

import json
import os
import re

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402

GOOD = """\
# A complete, valid configuration.
listen: 127.0.0.1:0
limits:
  max_body_bytes: 32MiB
  max_header_bytes: 64KiB
  max_headers: 100
  max_connections: 1024
  request_timeout: 30s
  keepalive_timeout: 60s
  drain_timeout: 30s
  stream_high_watermark: 256KiB
upstreams:
  openai:    { type: openai,    base_url: "https://api.openai.com" }
  anthropic: { type: anthropic, base_url: "https://api.anthropic.com" }
  gemini:    { type: gemini,    base_url: "https://generativelanguage.googleapis.com" }
  azure:     { type: azure_openai, base_url: "https://x.openai.azure.com" }
  local:     { type: openai_compatible, base_url: "http://127.0.0.1:11434" }
  slow:
    type: openai
    base_url: https://api.openai.com
    connect_timeout: 2s
    header_timeout: 500ms
    idle_timeout: 1m
"""

# Four errors on known lines (1-based): unknown key (2), bad type (4),
# bad duration (5), http to a non-loopback host (8).
BROKEN = """\
listen: 127.0.0.1:0
bogus_key: 1
limits:
  max_headers: lots
  request_timeout: 10 parsecs
upstreams:
  anthropic: { type: anthropic, base_url: "https://api.anthropic.com" }
  openai: { type: openai, base_url: "http://api.openai.com" }
"""
BROKEN_LINES = {2: "unknown key", 4: "bad type", 5: "bad duration",
                8: "http to a non-loopback host"}

# Each alone: (config text, line of the error, words one of which the
# message should contain).
SINGLE = {
    # The SDKs write their base URL with /v1; tollgate appends the whole
    # client path, so it would send /v1/v1/... to the provider.
    "base_url ending in /v1": ("""\
listen: 127.0.0.1:0
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com/v1/" }
""", 3, ("'/v1'", "drop")),
    "base_url ending in /v1, type after it": ("""\
listen: 127.0.0.1:0
upstreams:
  local:
    base_url: http://127.0.0.1:11434/v1
    type: openai_compatible
""", 4, ("/v1/v1/",)),
    "gemini base_url ending in /v1beta": ("""\
listen: 127.0.0.1:0
upstreams:
  gemini:
    type: gemini
    base_url: https://generativelanguage.googleapis.com/v1beta
""", 5, ("'/v1beta'",)),
    "unknown top-level key": ("""\
listen: 127.0.0.1:0
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com" }
frobnicate: yes
""", 4, ("frobnicate", "unknown")),
    "unknown upstream key": ("""\
listen: 127.0.0.1:0
upstreams:
  openai:
    type: openai
    base_url: "https://api.openai.com"
    colour: blue
""", 6, ("colour", "unknown")),
    "bad type (int)": ("""\
listen: 127.0.0.1:0
limits:
  max_connections: [1, 2]
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com" }
""", 3, ("max_connections",)),
    "bad size": ("""\
listen: 127.0.0.1:0
limits:
  max_body_bytes: 12 parsecs
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com" }
""", 3, ("max_body_bytes", "size")),
    "bad duration": ("""\
listen: 127.0.0.1:0
limits:
  drain_timeout: soon
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com" }
""", 3, ("drain_timeout", "duration")),
    "bad upstream duration": ("""\
listen: 127.0.0.1:0
upstreams:
  openai:
    type: openai
    base_url: "https://api.openai.com"
    header_timeout: -5s
""", 6, ("header_timeout", "duration")),
    "http to non-loopback": ("""\
listen: 127.0.0.1:0
upstreams:
  openai:
    type: openai
    base_url: "http://api.openai.com"
""", 5, ("http", "loopback")),
    "unknown upstream type": ("""\
listen: 127.0.0.1:0
upstreams:
  openai: { type: openia, base_url: "https://api.openai.com" }
""", 3, ("openia", "type")),
    "file: scheme": ("""\
listen: 127.0.0.1:0
upstreams:
  openai: { type: openai, base_url: "file:///etc/passwd" }
""", 3, ("file", "scheme", "base_url")),
    "userinfo in url": ("""\
listen: 127.0.0.1:0
upstreams:
  openai: { type: openai, base_url: "https://user:pw@api.openai.com" }
""", 3, ("userinfo", "@", "user")),
    "bad listen": ("""\
listen: 127.0.0.1:99999
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com" }
""", 1, ("listen", "port")),
    "duplicate key": ("""\
listen: 127.0.0.1:0
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com" }
  openai: { type: openai, base_url: "https://api.openai.com" }
""", 4, ("duplicate", "openai")),
    "yaml syntax error": ("""\
listen: 127.0.0.1:0
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com"
limits: {}
""", None, ()),
}


class CheckTest(tglib.TGTestCase):

    def errors(self, out, path):
        """[(line, col, message)] from lines 'path:line:col: message'."""
        rx = re.compile(r"^(?:%s|%s):(\d+):(\d+): (.+)$" %
                        (re.escape(path), re.escape(os.path.basename(path))),
                        re.M)
        return [(int(a), int(b), c) for a, b, c in rx.findall(out)]

    def test_good_config_ok(self):
        rc, out, err, path = tglib.run_check(GOOD, self.tmp)
        self.assertEqual(rc, 0, "good config refused:\n" + out + err)
        self.assertIn("configuration OK", out + err)
        self.assertEqual(self.errors(out + err, path), [])

    def test_broken_config_reports_every_error(self):
        rc, out, err, path = tglib.run_check(BROKEN, self.tmp)
        self.assertEqual(rc, 1, "exit code %d\n%s%s" % (rc, out, err))
        self.assertNotIn("configuration OK", out + err)
        errs = self.errors(err, path)
        self.assertTrue(errs, "no file:line:col: lines on stderr:\n" + err)
        lines = {l for l, _, _ in errs}
        for line, what in BROKEN_LINES.items():
            self.assertIn(line, lines, "the %s on line %d was not reported "
                          "as %s:%d:col:\nstderr:\n%s" %
                          (what, line, path, line, err))
        for l, c, msg in errs:
            self.assertGreaterEqual(c, 1, "column must be 1-based")
            self.assertTrue(msg.strip())

    def test_each_error_alone(self):
        for what, (text, line, words) in SINGLE.items():
            with self.subTest(what):
                rc, out, err, path = tglib.run_check(text, self.tmp)
                self.assertEqual(rc, 1, "%s: exit %d\n%s%s" %
                                 (what, rc, out, err))
                errs = self.errors(err, path)
                self.assertTrue(errs, "%s: no file:line:col: line on "
                                "stderr:\n%s" % (what, err))
                if line is not None:
                    at = [e for e in errs if e[0] == line]
                    self.assertTrue(at, "%s: expected an error on line %d, "
                                    "got:\n%s" % (what, line, err))
                    if words:
                        msg = " ".join(m for _, _, m in at).lower()
                        self.assertTrue(any(w.lower() in msg for w in words),
                                        "%s: message %r names none of %r" %
                                        (what, msg, words))

    def test_checks_after_parsing_have_positions(self):
        prices = os.path.join(tglib.SOURCE_DIR, "config", "prices.yaml")
        ups = ('upstreams:\n'
               '  openai: { type: openai, base_url: '
               '"https://api.openai.com" }\n')
        cases = [
            ("price_as not in the table",
             "listen: 127.0.0.1:0\n%sprices: %s\nunknown_models:\n"
             "  action: price_as\n  price_as: no-such-model\n" %
             (ups, prices), (7, 13), "not in the price table"),
            ("price_as missing",
             "listen: 127.0.0.1:0\n%sunknown_models: { action: price_as }\n"
             % ups, (4, 27), "needs price_as"),
            ("prices: file missing",
             "listen: 127.0.0.1:0\n%sprices: nowhere/prices.yaml\n" % ups,
             (4, 9), "nowhere/prices.yaml"),
            ("prices: a directory",
             "listen: 127.0.0.1:0\n%sprices: .\n" % ups, (4, 9),
             "not a regular file"),
            ("deployments on openai",
             "listen: 127.0.0.1:0\nupstreams:\n  openai:\n"
             "    type: openai\n    base_url: https://api.openai.com\n"
             "    deployments: { a: gpt-4o }\n", (6, 5),
             "only for azure_openai"),
        ]
        for what, text, (line, col), words in cases:
            with self.subTest(what):
                rc, out, err, path = tglib.run_check(text, self.tmp)
                self.assertEqual(rc, 1, "%s: exit %d\n%s%s" %
                                 (what, rc, out, err))
                errs = self.errors(err, path)
                self.assertEqual([(l, c) for l, c, _ in errs], [(line, col)],
                                 "%s:\n%s" % (what, err))
                self.assertIn(words, errs[0][2])

    def test_errors_in_file_order(self):
        text = ("unknown_models: { action: price_as }\n"    # 1:27
                "listen: 127.0.0.1:0\n"
                "bogus: 1\n"                                # 3:1
                "upstreams:\n"
                "  openai:\n"
                "    type: openai\n"
                "    base_url: https://api.openai.com\n"
                "    deployments: { a: b }\n"               # 8:5
                "limits:\n"
                "  max_headers: lots\n"                     # 10:16
                "prices: nowhere.yaml\n"                    # 11:9
                "policies:\n"
                "  - { name: p, per: [colour] }\n")         # 13
        rc, out, err, path = tglib.run_check(text, self.tmp)
        self.assertEqual(rc, 1, err)
        errs = self.errors(err, path)
        got = [(l, c) for l, c, _ in errs]
        self.assertEqual(len(err.strip().splitlines()), len(errs),
                         "an error without a position:\n" + err)
        self.assertEqual(got, sorted(got), "not in file order:\n" + err)
        self.assertEqual({l for l, _ in got}, {1, 3, 8, 10, 11, 13}, err)

    def test_missing_file(self):
        path = os.path.join(self.tmp, "does-not-exist.yaml")
        import subprocess
        r = subprocess.run([tglib.TOLLGATE_BIN, "check", "-c", path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(b"does-not-exist.yaml", r.stderr)

    def test_daemon_refuses_broken_config(self):
        """The daemon itself does not start on a broken config and says
        why."""
        path = os.path.join(self.tmp, "broken.yaml")
        with open(path, "w") as f:
            f.write(BROKEN)
        import subprocess
        try:
            r = subprocess.run([tglib.TOLLGATE_BIN, "-d", "-c", path],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=20,
                               preexec_fn=tglib._child_setup)
        except subprocess.TimeoutExpired:
            self.fail("tollgate kept running on a broken config")
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr.decode(), r"broken\.yaml:2:\d+: ")


class SecretsTest(tglib.TGTestCase):
    """Checking a config in CI, or reading spend as an analyst, needs no
    production secret: an unset api_key_env, admin.token_env or webhook
    secret_env is a warning there, and an error only for the daemon."""

    TEXT = """\
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0, token_env: TG_TEST_UNSET_ADMIN }
upstreams:
  openai: { type: openai, base_url: "https://api.openai.com", api_key_env: TG_TEST_UNSET_KEY }
alerts:
  webhooks:
    - { url: "https://hooks.example.com/x", secret_env: TG_TEST_UNSET_HOOK }
ledger: { path: data/ledger.db }
"""
    WARNED = {2: "admin.token_env: the environment variable "
                 "TG_TEST_UNSET_ADMIN",
              4: "upstreams.openai.api_key_env: the environment variable "
                 "TG_TEST_UNSET_KEY",
              7: "alerts.webhooks[0].secret_env: the environment variable "
                 "TG_TEST_UNSET_HOOK"}

    def setUp(self):
        super().setUp()
        for k in ("TG_TEST_UNSET_ADMIN", "TG_TEST_UNSET_KEY",
                  "TG_TEST_UNSET_HOOK"):
            os.environ.pop(k, None)

    def run_bin(self, *args):
        import subprocess
        r = subprocess.run([tglib.TOLLGATE_BIN] + list(args), cwd=self.tmp,
                           capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def test_unset_secrets_warn_for_check_and_ledger_commands(self):
        rc, out, err, path = tglib.run_check(self.TEXT, self.tmp)
        self.assertEqual((rc, out), (0, "configuration OK\n"), err)
        lines = err.splitlines()
        for line, what in self.WARNED.items():
            hit = [l for l in lines
                   if l.startswith("%s:%d:" % (path, line))]
            self.assertEqual(len(hit), 1, err)
            self.assertIn("warning: " + what + " is not set here", hit[0])
        self.assertEqual(len(lines), 3, err)

        # The daemon refuses to start without them, naming each.
        tg = tglib.Tollgate(self.tmp, self.TEXT, wait=False)
        self._procs.append(tg)
        self.assertEqual(tg.wait(15), 1)
        tg.expected_exit = True
        log = tg.stderr()
        for what in self.WARNED.values():
            self.assertIn(what + " is not set", log)
        self.assertNotIn("warning:", log)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "data",
                                                     "ledger.db")))

        # With a ledger there, spend and calls read it without the secrets.
        os.makedirs(os.path.join(self.tmp, "data"))
        env = {"TG_TEST_UNSET_ADMIN": "x" * 32, "TG_TEST_UNSET_KEY": "sk-x",
               "TG_TEST_UNSET_HOOK": "hook-secret"}
        os.environ.update(env)
        try:
            tg = tglib.Tollgate(self.tmp, self.TEXT, name="serve")
            self.assertEqual(tg.stop(), 0)
        finally:
            for k in env:
                os.environ.pop(k, None)
        for cmd in ("spend", "calls"):
            rc, out, err = self.run_bin(cmd, "-c", path, "--format", "json")
            self.assertEqual(rc, 0, (cmd, out, err))
            self.assertEqual(err, "", cmd)
            json.loads(out)


if __name__ == "__main__":
    tglib.main()
