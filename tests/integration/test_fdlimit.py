# SPDX-License-Identifier: Apache-2.0
"""The open files limit against limits.max_connections: every client
connection costs a descriptor and its upstream call another. At start (and
on a reload that raises max_connections) tollgate raises its soft limit up
to the hard one; when that is still short it logs both numbers and accepts
only as many clients as the descriptors allow, so a flood of connections
never leaves a call without a socket to its provider. tollgate check says
so too."""

import os
import re
import resource
import socket
import stat
import sys
import time
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

# Besides two per client connection: the admin API's 64, the webhooks' 16
# and 64 for the rest (fdlimit.h).
FIXED = 64 + 16 + 64


def need(max_connections):
    return 2 * max_connections + FIXED


def nofile(pid):
    """(soft, hard) open files limit of pid, from /proc/PID/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/%d/limits" % pid)


class FdLimitTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.real_bin = tglib.TOLLGATE_BIN
        self.addCleanup(setattr, tglib, "TOLLGATE_BIN", self.real_bin)

    def limited(self, soft, hard):
        """Run the next tollgate with RLIMIT_NOFILE (soft, hard): a
        wrapper sets it and execs the binary (ulimit -n in a shell)."""
        path = os.path.join(self.tmp, "nofile-%d-%d" % (soft, hard))
        with open(path, "w") as f:
            f.write("#!%s\nimport os, resource, sys\n"
                    "resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d))\n"
                    "os.execv(%r, [%r] + sys.argv[1:])\n" %
                    (sys.executable, soft, hard, self.real_bin,
                     self.real_bin))
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        tglib.TOLLGATE_BIN = path

    def our_hard_limit(self, at_least):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < at_least:
            self.skipTest("this process's hard open files limit is %d" %
                          hard)

    def test_short_limit_warns_and_caps(self):
        """ulimit -n 200 with max_connections 1024: a warning names both
        numbers; a flood of 150 idle connections then takes no descriptor
        a call needs."""
        self.limited(200, 200)
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port))
        allowed = (200 - FIXED) // 2
        m = tg.wait_log(r"the open files limit is 200 \(hard limit 200\), "
                        r"below the %d that limits\.max_connections 1024 "
                        r"needs .*at most %d client connections" %
                        (need(1024), allowed), 5)
        self.assertTrue(m, "no warning naming the limit and the need")
        self.assertEqual(nofile(tg.pid), (200, 200))
        conns = []
        for _ in range(150):
            conns.append(socket.create_connection(("127.0.0.1", tg.port),
                                                  timeout=10))
        self.addCleanup(lambda: [c.close() for c in conns])
        time.sleep(1.2)
        for _ in range(3):
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(new_marker()), [JSON_CT],
                          timeout=15)
            self.assertEqual(r.status, 200, r)
        self.assertLessEqual(len(os.listdir("/proc/%d/fd" % tg.pid)), 200)
        self.assertNotRegex(tg.log(), r"accept: Too many open files")
        self.assertTrue(tg.alive())

    def test_soft_limit_raised_to_hard(self):
        """Soft 200 under a higher hard limit: raised to what is needed,
        at start and again when a reload raises max_connections; past
        the hard limit, the warning."""
        self.our_hard_limit(1000)
        self.limited(200, 1000)
        tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port),
                           limits={"max_connections": 100})
        self.assertTrue(tg.wait_log(r"open files limit raised from 200 to "
                                    r"%d" % need(100), 5), "not raised")
        self.assertEqual(nofile(tg.pid), (need(100), 1000))
        self.assertNotIn("the open files limit is", tg.log())
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT])
        self.assertEqual(r.status, 200, r)

        for mc, soft in ((400, need(400)), (1000, 1000)):
            with open(tg.config_path) as f:
                text = f.read()
            tg.write_config(re.sub(r"max_connections: \d+",
                                   "max_connections: %d" % mc, text))
            start = len(tg.log())
            tg.hup()
            self.assertTrue(tg.wait_log(r"configuration reloaded", 10,
                                        start))
            self.assertEqual(nofile(tg.pid), (soft, 1000))
        self.assertTrue(tg.wait_log(
            r"the open files limit is 1000 \(hard limit 1000\), below the "
            r"%d that limits\.max_connections 1000 needs .*at most %d client "
            r"connections" % (need(1000), (1000 - FIXED) // 2), 5, start))

    def test_check_names_the_hard_limit(self):
        self.limited(200, 200)
        rc, out, err, _ = tglib.run_check(tglib.make_config(
            tglib.std_upstreams(self.fp.port)), self.tmp)
        self.assertEqual(rc, 0, err)
        self.assertIn("configuration OK", out)
        self.assertRegex(err, r"warning: here, the open files limit is 200 "
                         r"\(hard limit 200\), below the %d" % need(1024))
        self.our_hard_limit(need(1024))
        self.limited(need(1024), need(1024))
        rc, out, err, _ = tglib.run_check(tglib.make_config(
            tglib.std_upstreams(self.fp.port)), self.tmp, name="ok.yaml")
        self.assertEqual(rc, 0, err)
        self.assertNotIn("open files", err)


if __name__ == "__main__":
    tglib.main()
