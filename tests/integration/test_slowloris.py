# SPDX-License-Identifier: Apache-2.0
"""Slowloris (docs/reliability.md): hundreds of connections that drip a
request head one byte at a time must not stop normal clients being served,
and each is closed when limits.request_timeout runs out, so tollgate's file
descriptors come back to where they were."""

import os
import socket
import sys
import time
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

SLOW = 300


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class SlowlorisTest(tglib.TGTestCase):

    def test_dripping_heads_are_cut_off(self):
        fp = self.fakeprov()
        tg = self.tollgate(upstreams=tglib.std_upstreams(fp.port),
                           limits={"request_timeout": "2s",
                                   "max_connections": 1024})
        # Warm up first, so the upstream connection pool is in the
        # baseline; the slack below covers what libcurl keeps open.
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()), [JSON_CT], timeout=5)
        self.assertEqual(r.status, 200, r)
        # tollgate closes its end of the warm-up connection when it reads
        # our FIN, which on a busy machine can come after we first look: a
        # baseline with that fd in it is never reached again. Take it once
        # the count has dropped, or after a second.
        before = nfds(tg.pid)
        tglib.wait_until(lambda: nfds(tg.pid) < before, 1)
        base = nfds(tg.pid)
        slow = []
        for _ in range(SLOW):
            s = socket.create_connection(("127.0.0.1", tg.port), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        self.addCleanup(lambda: [s.close() for s in slow])
        # The warm-up call's own connection may still have been open in
        # tollgate when base was counted (its close is read later, on a
        # loaded machine), so a few fds of slack.
        self.assertTrue(tglib.wait_until(
            lambda: nfds(tg.pid) >= base + SLOW - 4, 15),
            "tollgate did not accept %d connections (%d fds, %d before)" %
            (SLOW, nfds(tg.pid), base))

        # Drip a byte now and then, while normal calls keep being served.
        served = 0
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            for s in slow:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(new_marker()), [JSON_CT],
                          timeout=5)
            self.assertEqual(r.status, 200, r)
            served += 1
            time.sleep(0.2)
        self.assertGreater(served, 0)

        # The whole head never arrives: every slow connection is cut at
        # request_timeout, however often it sends a byte.
        self.assertTrue(tglib.wait_until(
            lambda: nfds(tg.pid) <= base + 8, 30),
            "slow connections still open: %d fds, %d before" %
            (nfds(tg.pid), base))
        closed = 0
        for s in slow:
            s.settimeout(2)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                closed += 1
        self.assertEqual(closed, SLOW)


if __name__ == "__main__":
    tglib.main()
