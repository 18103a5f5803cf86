# SPDX-License-Identifier: Apache-2.0
"""`cmake --install` (make install) gives a set that runs as shipped: the
installed config checks, keeps its ledger in the systemd unit's
StateDirectory (the only place the hardened unit lets tollgate write), and
the unit starts the installed binary on the config directory it declares.
The daemon is then started on the installed config, with only the paths
moved into the test's directory, and writes its ledger."""

import os
import re
import subprocess

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402


def unit_values(text, key):
    return [m.group(1).strip() for m in
            re.finditer(r"(?m)^%s=(.*)$" % re.escape(key), text)]


class InstallTest(tglib.TGTestCase):

    def install(self):
        build = os.path.dirname(os.path.abspath(tglib.TOLLGATE_BIN))
        prefix = os.path.join(self.tmp, "usr")
        r = subprocess.run(["cmake", "--install", build, "--prefix", prefix],
                           capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return prefix

    def test_installed_set_agrees(self):
        prefix = self.install()
        share = os.path.join(prefix, "share", "tollgate")
        for name in ("tollgate.yaml", "prices.yaml", "tollgate.service"):
            self.assertTrue(os.path.isfile(os.path.join(share, name)), name)
        binary = os.path.join(prefix, "bin", "tollgate")
        self.assertTrue(os.access(binary, os.X_OK))

        with open(os.path.join(share, "tollgate.service")) as f:
            unit = f.read()
        with open(os.path.join(share, "tollgate.yaml")) as f:
            cfg = f.read()
        # The unit runs tollgate in the foreground on a config in its
        # ConfigurationDirectory, and may write only its StateDirectory.
        (start,) = unit_values(unit, "ExecStart")
        m = re.match(r"(\S+/tollgate) -d -c (\S+)$", start)
        self.assertTrue(m, start)
        (confdir,) = unit_values(unit, "ConfigurationDirectory")
        (statedir,) = unit_values(unit, "StateDirectory")
        self.assertEqual(os.path.dirname(m.group(2)), "/etc/" + confdir)
        self.assertIn("ProtectSystem=strict", unit)
        ledger = re.search(r"(?m)^  path: (\S+)$", cfg).group(1)
        self.assertEqual(os.path.dirname(ledger), "/var/lib/" + statedir,
                         "the installed config keeps its ledger where the "
                         "unit cannot write")
        # Only the ledger path differs from the config `make run` uses.
        with open(os.path.join(tglib.SOURCE_DIR, "config",
                               "tollgate.yaml")) as f:
            src = f.read()
        self.assertEqual(cfg.replace(ledger, "data/ledger.db"), src)

        # The installed config checks, as the installed binary reads it.
        r = subprocess.run([binary, "check", "-c",
                            os.path.join(share, "tollgate.yaml")],
                           capture_output=True, timeout=30, cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        # And runs: the same file with the ledger moved from /var/lib into
        # this test's directory and an upstream that is fakeprov.
        fp = self.fakeprov()
        state = os.path.join(self.tmp, "state")
        text = cfg.replace(ledger, os.path.join(state, "ledger.db"))
        text = text.replace("listen: 127.0.0.1:8787", "listen: 127.0.0.1:0")
        text = text.replace("listen: 127.0.0.1:8788", "listen: 127.0.0.1:0")
        text = text.replace("base_url: https://api.openai.com",
                            "base_url: http://127.0.0.1:%d" % fp.port)
        text = text.replace("prices: prices.yaml", "prices: %s" %
                            os.path.join(share, "prices.yaml"))
        tg = self.tollgate(config_text=text)
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(tglib.new_marker()),
                      [JSON_CT, ("Authorization", "Bearer sk-test")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(tg.stop(), 0)
        rows = ledgerlib.Ledger(os.path.join(state, "ledger.db")).query(
            "SELECT status FROM calls")
        self.assertEqual([x["status"] for x in rows], ["ok"])


if __name__ == "__main__":
    tglib.main()
