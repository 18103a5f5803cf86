# SPDX-License-Identifier: Apache-2.0
"""tollgate top (docs/dashboard.md) in a real terminal: a detached tmux
session of fixed size runs `tollgate top --admin URL` against a real
tollgate and fakeprov; the pane shows the budgets with the ledger's exact
spend, follows new calls, cycles the sort, filters, kills the selected
budget's scope after y (checked through the admin API and a refused call)
and lifts it, extends a capped budget with e (the raised cap on screen, a
call allowed again), redraws on a resize, says "admin API unreachable"
when tollgate goes away, and q exits 0 with the terminal given back
(stty)."""

import json
import os
import re
import shutil
import subprocess
import time
import unittest

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

TOKEN = "top-CANARY-4b1e7d2a9c3f8e60"
TOKEN_ENV = "TG_TEST_ADMIN_TOKEN"
ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
POLICIES = [{"name": "team-daily", "match": {"agent_class": "top-test"},
             "per": ["team"], "window": "day", "hard_cap_usd": 5},
            # One call of 200,000 tokens (about $0.03) spends it all.
            {"name": "ext-tiny", "match": {"agent_class": "top-test",
                                           "team": "ext-*"},
             "per": ["tenant"], "window": "day", "hard_cap_usd": "0.02"}]


def usd(nusd):
    """Nano-dollars as top writes them: two to nine decimals."""
    frac = ("%09d" % (nusd % 10**9)).rstrip("0").ljust(2, "0")
    return "$%d.%s" % (nusd // 10**9, frac)


@unittest.skipUnless(shutil.which("tmux"), "tmux is not installed")
class TopTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        extra = ledgerlib.metering_extra()
        extra["admin"] = {"listen": "127.0.0.1:0", "token_env": TOKEN_ENV}
        extra["policies"] = POLICIES
        self.tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=extra, env={TOKEN_ENV: TOKEN})
        m = tglib.wait_until(lambda: ADMIN_RE.search(self.tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        self.admin_port = int(m.group(1))
        self.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/ledger.db"), self.tg)
        self.sock = "tg-top-%d-%d" % (os.getpid(), id(self) % 100000)
        self.addCleanup(self.tmux_stop)

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null"]
                              + list(args), capture_output=True, text=True,
                              timeout=10, check=check)

    def tmux_stop(self):
        self.tmux("kill-server", check=False)

    def pane(self):
        return self.tmux("capture-pane", "-p", "-t", "top").stdout

    def wait_pane(self, pred, what, timeout=15):
        last = [""]

        def ok():
            last[0] = self.pane()
            return pred(last[0])
        if not tglib.wait_until(ok, timeout, interval=0.1):
            self.fail("%s; the pane:\n%s" % (what, last[0]))
        return last[0]

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "top", *keys)

    def api(self, method, path, body=b""):
        hdrs = [("Host", "127.0.0.1:%d" % self.admin_port),
                ("Authorization", "Bearer " + TOKEN)]
        if body:
            hdrs.append(JSON_CT)
        raw = tglib.build_request(method, path, body, hdrs, host=None)
        return self.call(self.admin_port, method, path, raw=raw)

    def chat(self, team, tokens="100000", tenant=None):
        hdrs = [JSON_CT, ("X-Tollgate-Agent-Class", "top-test"),
                ("X-Tollgate-Team", team), ("X-Fake-Input-Tokens", tokens)]
        if tenant is not None:
            hdrs.append(("X-Tollgate-Tenant", tenant))
        r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(ledgerlib.marker("top")), hdrs)
        if r.status == 200:
            self.settled_row(r)
        return r

    def spent(self, team):
        return self.ledger.scalar(
            "SELECT coalesce(sum(cost_nusd), 0) FROM calls WHERE team = ?",
            (team,))

    def row_of(self, pane, team):
        for line in pane.splitlines():
            if "team=%s " % team in line:
                return line
        return None

    def ext_row(self, pane):
        for line in pane.splitlines():
            if "ext-tiny" in line and "tenant=acme" in line:
                return line
        return None

    def test_top(self):
        self.assertEqual(self.chat("alpha").status, 200)
        self.assertEqual(self.chat("beta", "400000").status, 200)
        status = os.path.join(self.tmp, "top.status")
        cmd = ("%s top --admin http://127.0.0.1:%d; echo $? > %s; "
               "stty -a > %s.stty; sleep 60" % (
                   tglib.TOLLGATE_BIN, self.admin_port,
                   status, status))
        self.tmux("new-session", "-d", "-s", "top", "-x", "132", "-y", "30",
                  "-e", "TOLLGATE_ADMIN_TOKEN=" + TOKEN, cmd)

        # The budgets, with the ledger's spend, dearest burn first: the
        # header says the sort.
        pane = self.wait_pane(
            lambda p: self.row_of(p, "alpha") and self.row_of(p, "beta"),
            "both budgets on screen")
        self.assertIn("sort: burn", pane)
        self.assertIn(usd(self.spent("alpha")), self.row_of(pane, "alpha"))
        self.assertIn(usd(self.spent("beta")), self.row_of(pane, "beta"))
        self.assertIn("$5.00", self.row_of(pane, "alpha"))
        today = self.ledger.scalar("SELECT sum(cost_nusd) FROM calls")
        self.assertIn("spend today %s" % usd(today), pane)
        self.assertNotIn(TOKEN, pane)

        # New calls: the figures follow within a few refreshes.
        self.assertEqual(self.chat("alpha").status, 200)
        self.assertEqual(self.chat("alpha").status, 200)
        want = usd(self.spent("alpha"))
        pane = self.wait_pane(
            lambda p: want in (self.row_of(p, "alpha") or ""),
            "alpha's new spend %s" % want)
        # alpha burns now, beta does not: burn order puts alpha first.
        pane = self.wait_pane(
            lambda p: p.find("team=alpha") < p.find("team=beta"),
            "alpha above beta by burn")

        # s cycles the sort.
        self.keys("s")
        self.wait_pane(lambda p: "sort: % of cap" in p, "sort by % of cap")
        self.keys("s")
        self.wait_pane(lambda p: "sort: spent" in p, "sort by spent")

        # / filters by a tag value.
        self.keys("/", "beta", "Enter")
        pane = self.wait_pane(lambda p: "filter: beta" in p
                              and self.row_of(p, "alpha") is None,
                              "only beta under the filter")
        self.assertIsNotNone(self.row_of(pane, "beta"))
        self.keys("/", "BSpace", "BSpace", "BSpace", "BSpace", "Enter")
        self.wait_pane(lambda p: "filter: -" in p and self.row_of(p, "alpha"),
                       "the filter cleared")

        # Select alpha (arrow keys), k, then n cancels: no kill.
        for _ in range(4):
            pane = self.pane()
            sel = [ln for ln in pane.splitlines() if ln.startswith(">")]
            if sel and "team=alpha" in sel[0]:
                break
            self.keys("Down" if pane.find("team=alpha") >
                      pane.find("team=beta") else "Up")
            time.sleep(0.3)
        self.wait_pane(lambda p: any(ln.startswith(">") and "team=alpha" in ln
                                     for ln in p.splitlines()),
                       "alpha selected")
        self.keys("k")
        self.wait_pane(lambda p: "kill every call matching" in p
                       and "alpha" in p, "the kill question")
        self.keys("n")
        self.wait_pane(lambda p: "kill cancelled" in p, "kill cancelled")
        self.assertEqual(self.api("GET", "/v1/kills").json(), {"kills": []})

        # k, y: the kill is made, and stops alpha's next call.
        self.keys("k")
        self.wait_pane(lambda p: "[y/N]" in p, "the kill question")
        self.keys("y")
        self.wait_pane(lambda p: "kill: done" in p and "KILLS" in p,
                       "the kill made and listed")
        kills = self.api("GET", "/v1/kills").json()["kills"]
        self.assertEqual(len(kills), 1, kills)
        self.assertEqual(kills[0]["match"],
                         {"team": "alpha", "agent_class": "top-test"})
        r = self.chat("alpha")
        self.assertEqual(r.status, 403, r)
        self.assertEqual(self.chat("beta").status, 200)

        # l, y: lifted.
        self.keys("l")
        self.wait_pane(lambda p: "lift kill %s" % kills[0]["id"] in p,
                       "the lift question")
        self.keys("y")
        self.wait_pane(lambda p: "lift: done" in p, "the kill lifted")
        self.assertEqual(self.api("GET", "/v1/kills").json(), {"kills": []})
        self.assertEqual(self.chat("alpha").status, 200)

        # A resize redraws at the new width.
        self.tmux("resize-window", "-t", "top", "-x", "100", "-y", "24")
        self.wait_pane(lambda p: "tollgate top" in p and self.row_of(p, "beta")
                       and max(len(ln) for ln in p.splitlines()) <= 100,
                       "the redraw at 100 columns")

        # tollgate gone: the reason on screen, top keeps going.
        self.tg.stop()
        self.wait_pane(lambda p: "admin API unreachable:" in p,
                       "the unreachable line")

        # q: exit 0, the terminal back in cooked mode with echo.
        self.keys("q")
        self.assertTrue(tglib.wait_until(
            lambda: os.path.exists(status + ".stty"), 10), self.pane())
        with open(status) as f:
            self.assertEqual(f.read().strip(), "0")
        with open(status + ".stty") as f:
            stty = f.read()
        self.assertRegex(stty, r"(?<!-)\bicanon\b")
        self.assertRegex(stty, r"(?<!-)\becho\b")
        self.assertNotIn("admin API unreachable", self.pane())

    def test_extend(self):
        # ext-tiny's $0.02 is spent by one call: the next is refused.
        self.assertEqual(self.chat("ext-a", "200000", "acme").status, 200)
        r = self.chat("ext-a", "200000", "acme")
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["tollgate"]["reason"], "hard_cap")
        status = os.path.join(self.tmp, "top.status")
        cmd = "%s top --admin http://127.0.0.1:%d; echo $? > %s; sleep 60" % (
            tglib.TOLLGATE_BIN, self.admin_port, status)
        # USER is who grants an extension unless it is typed over.
        self.tmux("new-session", "-d", "-s", "top", "-x", "132", "-y", "30",
                  "-e", "TOLLGATE_ADMIN_TOKEN=" + TOKEN, "-e", "USER=tester",
                  cmd)
        self.wait_pane(lambda p: self.ext_row(p), "ext-tiny's budget")
        self.keys("/", "ext-tiny", "Enter")
        pane = self.wait_pane(
            lambda p: "filter: ext-tiny" in p
            and any(ln.startswith(">") and "ext-tiny" in ln
                          and "tenant=acme" in ln and "capped" in ln
                          for ln in p.splitlines()),
            "ext-tiny's budget selected, capped")
        self.assertIn("e extend", pane)

        # e, a few keys, Esc: nothing is asked of the API.
        self.keys("e")
        self.wait_pane(lambda p: "amount in USD" in p, "the amount prompt")
        self.keys("5", "Escape")
        self.wait_pane(lambda p: "extend cancelled" in p, "extend cancelled")

        # A bad amount: the API's 400, with the field it names, on screen.
        self.keys("e")
        self.wait_pane(lambda p: "amount in USD" in p, "the amount prompt")
        self.keys("0.1.2", "Enter")
        self.wait_pane(lambda p: "reason: _" in p, "the reason prompt")
        self.keys("quarter close", "Enter")
        self.wait_pane(lambda p: "granted by: tester_" in p,
                       "the granted-by prompt, $USER by default")
        self.keys("Enter")
        self.wait_pane(lambda p: "expires (empty" in p, "the expiry prompt")
        self.keys("Enter")
        pane = self.wait_pane(lambda p: "[y/N]" in p, "the question")
        self.assertIn("by $0.1.2", pane)
        self.assertIn("granted by tester?", pane)
        self.keys("y")
        self.wait_pane(lambda p: "extend refused (400, parameter usd): "
                       "usd " in p, "the 400 on screen")
        self.assertEqual(self.api("GET", "/v1/budgets/extensions").json(),
                         {"extensions": []})

        # $0.10 for 2h, granted by bob (typed over the default), after y.
        self.keys("e")
        self.wait_pane(lambda p: "amount in USD" in p, "the amount prompt")
        self.keys("0.10", "Enter")
        self.wait_pane(lambda p: "reason: _" in p, "the reason prompt")
        self.keys("quarter close", "Enter")
        self.wait_pane(lambda p: "granted by: tester_" in p, "granted by")
        self.keys(*(["BSpace"] * 6))
        self.keys("bob", "Enter")
        self.wait_pane(lambda p: "expires (empty" in p, "the expiry prompt")
        self.keys("2h", "Enter")
        self.wait_pane(lambda p: "[y/N]" in p, "the question")
        self.keys("y")
        pane = self.wait_pane(
            lambda p: "extend: done" in p and "EXTENSIONS" in p
            and "+$0.10" in (self.ext_row(p) or ""),
            "the extension made and shown")
        exts = self.api("GET", "/v1/budgets/extensions").json()["extensions"]
        self.assertEqual(len(exts), 1, exts)
        x = exts[0]
        self.assertEqual(x["policy"], "ext-tiny")
        self.assertEqual(x["nusd"], 100000000)
        self.assertEqual(x["by"], "bob")
        self.assertEqual(x["reason"], "quarter close")
        self.assertIsNotNone(x["expires_at"])
        budget = [b for b in self.api("GET", "/v1/budgets").json()["budgets"]
                  if b["policy"] == "ext-tiny"][0]
        self.assertEqual(x["scope"], budget["scope"])
        self.assertEqual(budget["cap_nusd"], 120000000)
        # The row: the raised cap and the raise; the list: who and why.
        row = self.ext_row(pane)
        self.assertIn("$0.12", row)
        self.assertIn("+$0.10", row)
        self.assertIn(x["id"], pane)
        line = [ln for ln in pane.splitlines() if x["id"] in ln
                and "by bob" in ln]
        self.assertTrue(line, pane)
        self.assertIn("quarter close", line[0])

        # The next call fits under the raised cap.
        r = self.chat("ext-a", "200000", "acme")
        self.assertEqual(r.status, 200, r)

        # Many extensions take a quarter of the screen (7 of 30 lines),
        # the last saying how many more there are; the budget stays.
        for i in range(8):
            r = self.api("POST", "/v1/budgets/extend", json.dumps({
                "policy": "ext-tiny", "scope": budget["scope"],
                "usd": "0.001", "reason": "more %d" % i, "by": "carol"}
            ).encode())
            self.assertEqual(r.status, 201, r)
        pane = self.wait_pane(lambda p: "... and 3 more" in p,
                              "the extensions cut to a quarter")
        self.assertIn("+$0.108", self.ext_row(pane))
        self.assertEqual(len([ln for ln in pane.splitlines()
                              if ln.startswith("  x_")]), 6, pane)
        self.keys("q")
        self.assertTrue(tglib.wait_until(
            lambda: os.path.exists(status), 10), self.pane())

    def test_config_and_sigint(self):
        # -c FILE: the admin address and token come from its admin:
        # (token_env, set in the session's environment; no
        # TOLLGATE_ADMIN_TOKEN). ^C is a SIGINT: exit 130, terminal back.
        self.assertEqual(self.chat("alpha").status, 200)
        with open(self.tg.config_path) as f:
            text = f.read()
        old = "admin:\n  listen: 127.0.0.1:0\n"
        self.assertIn(old, text)
        cfg = os.path.join(self.tmp, "top.yaml")
        with open(cfg, "w") as f:
            f.write(text.replace(old, "admin:\n  listen: 127.0.0.1:%d\n"
                                 % self.admin_port))
        status = os.path.join(self.tmp, "top.status")
        cmd = "%s top -c %s; echo $? > %s; stty -a > %s.stty; sleep 60" % (
            tglib.TOLLGATE_BIN, cfg, status, status)
        self.tmux("new-session", "-d", "-s", "top", "-x", "132", "-y", "30",
                  "-e", "%s=%s" % (TOKEN_ENV, TOKEN), cmd)
        pane = self.wait_pane(lambda p: self.row_of(p, "alpha"),
                              "alpha's budget, read with the config's token")
        self.assertIn("http://127.0.0.1:%d" % self.admin_port, pane)
        self.keys("C-c")
        self.assertTrue(tglib.wait_until(
            lambda: os.path.exists(status + ".stty"), 10), self.pane())
        with open(status) as f:
            self.assertEqual(f.read().strip(), "130")
        with open(status + ".stty") as f:
            stty = f.read()
        self.assertRegex(stty, r"(?<!-)\bicanon\b")
        self.assertRegex(stty, r"(?<!-)\becho\b")

    def test_needs_a_terminal_and_good_flags(self):
        binp = tglib.TOLLGATE_BIN
        r = subprocess.run([binp, "top", "--admin",
                            "http://127.0.0.1:%d" % self.admin_port],
                           capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("needs a terminal", r.stderr)
        for args, msg in ((["--admin", "127.0.0.1:1"], "--admin: expected"),
                          (["--interval", "0"], "--interval: expected"),
                          (["--bogus"], "usage: tollgate top")):
            r = subprocess.run([binp, "top"] + args, capture_output=True,
                               text=True, timeout=10)
            self.assertEqual(r.returncode, 2, r)
            self.assertIn(msg, r.stderr)


if __name__ == "__main__":
    unittest.main()
