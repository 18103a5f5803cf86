# SPDX-License-Identifier: Apache-2.0
"""No call waits behind another on the way upstream. Right after tollgate
starts, and again after the provider restarts (every pooled connection
dropped), four slow calls sent side by side all finish after about one
provider delay, and a fast call sent while they are in flight comes back at
once: over plain http (a local vLLM or Ollama), over https to a server that
speaks only HTTP/1.1 (ALPN says so after the handshake), and over https with
HTTP/2 (the calls share one multiplexed connection)."""

import os
import signal
import socket
import sys
import threading
import time
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402
import test_http2  # noqa: E402

DELAY_MS = 4000
SLOW = 4
HOLD = 2.0  # SlowNet's hold on each new connection, in seconds


class SlowNet:
    """A TCP relay in front of fakeprov that holds each new connection for
    a moment before it joins the two ends, as a distant provider's round
    trips would: a TLS handshake through it takes that long."""

    def __init__(self, target, hold):
        self.target = target
        self.hold = hold
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.socks.append(c)
            threading.Thread(target=self.join, args=(c,),
                             daemon=True).start()

    def join(self, c):
        time.sleep(self.hold)
        try:
            u = socket.create_connection(("127.0.0.1", self.target), 5)
        except OSError:
            c.close()
            return
        self.socks.append(u)
        for a, b in ((c, u), (u, c)):
            threading.Thread(target=self.pump, args=(a, b),
                             daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.ls.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


class ParallelUpstreamTest(tglib.TGTestCase):

    def burst(self, tg, what, hold=0.0):
        """SLOW slow calls and one fast call, side by side; returns the
        time each took. hold: the time each new connection's handshake
        takes (SlowNet)."""
        # A slow call is answered after one delay and one handshake,
        # never two of either; the fast one waits for no other call. The
        # bounds sit half way, with room for a loaded machine and ASan.
        slow_max = DELAY_MS / 1000 * 1.6 + hold / 2
        fast_max = DELAY_MS / 1000 * 0.5 + hold / 2
        took = {}
        results = {}

        def call(key, hdrs):
            t0 = time.monotonic()
            r = tglib.http_call(tg.port, "POST", "/v1/chat/completions",
                                tglib.openai_chat(new_marker()),
                                [JSON_CT] + hdrs, timeout=60)
            took[key] = time.monotonic() - t0
            results[key] = r

        threads = [threading.Thread(target=call, args=(
            i, [("x-fake-delay-ms", str(DELAY_MS))])) for i in range(SLOW)]
        for t in threads:
            t.start()
        # The fast call goes out once the slow ones are on their way.
        time.sleep(0.5)
        fast = threading.Thread(target=call, args=("fast", []))
        fast.start()
        threads.append(fast)
        for t in threads:
            t.join()
        for key, r in results.items():
            self.assertEqual(r.status, 200, "%s: call %s: %r" %
                             (what, key, r))
        slow = sorted(took[i] for i in range(SLOW))
        self.assertLess(slow[-1], slow_max,
                        "%s: slow calls took %s s with a %d ms delay: calls "
                        "waited for each other" %
                        (what, ["%.1f" % t for t in slow], DELAY_MS))
        self.assertLess(took["fast"], fast_max,
                        "%s: a fast call took %.1f s behind %d slow ones" %
                        (what, took["fast"], SLOW))
        return took

    def restart(self, fp, tls=None):
        """Stop fp and start a new fakeprov on the same port."""
        port = fp.port
        fp.signal(signal.SIGTERM)
        self.assertIsNotNone(fp.wait(10), "fakeprov did not stop")
        fp2 = self.fakeprov(name="fakeprov2", tls=tls,
                            args=["--listen", "127.0.0.1:%d" % port])
        self.assertEqual(fp2.port, port)
        return fp2

    def test_http_upstream(self):
        fp = self.fakeprov()
        tg = self.tollgate(upstreams=tglib.std_upstreams(fp.port))
        self.burst(tg, "http, right after start")
        self.restart(fp)
        self.burst(tg, "http, after the provider restarted")

    def test_https_http11_upstream(self):
        """A provider that speaks only HTTP/1.1 over TLS, HOLD seconds of
        round trips away: each call's handshake runs beside the others',
        not after the first one's."""
        pki = tglib.test_pki()
        fp = self.fakeprov(tls=pki)  # offers HTTP/1.1 only
        net = SlowNet(fp.port, HOLD)
        self.addCleanup(net.close)
        tg = self.tollgate(upstreams={"openai": {
            "type": "openai", "base_url": "https://127.0.0.1:%d" % net.port,
            "ca_file": pki["ca"]}})
        self.burst(tg, "https HTTP/1.1, right after start", HOLD)
        net.target = self.restart(fp, tls=pki).port
        self.burst(tg, "https HTTP/1.1, after the provider restarted", HOLD)

    def start_nginx(self, pki, fp_port, port=None, n=0):
        """nginx offering h2 over TLS in front of fakeprov, on port (a
        free one if None); its access log."""
        d = os.path.join(self.tmp, "nginx%d" % n)
        os.makedirs(d)
        port = port or tglib.free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(test_http2.NGINX_CONF.format(
                d=d, port=port, cert=pki["cert"], key=pki["key"],
                location=test_http2.PROXY_TO.format(fp=fp_port)))
        p = tglib.Proc("nginx%d" % n, [test_http2.find_nginx(), "-e",
                                        os.path.join(d, "stderr.log"), "-c",
                                        conf], self.tmp)
        self._procs.append(p)
        self.assertTrue(tglib.wait_until(
            lambda: test_http2.port_open(port), 10), "nginx did not start")
        return p, port, os.path.join(d, "access.log")

    def h2_conns(self, log, n):
        """The connections nginx served its first n calls on (all h2)."""
        lines = test_http2.HTTP2Test.access_lines(self, log, n)
        self.assertEqual({l.split()[0] for l in lines}, {"HTTP/2.0"}, lines)
        return {l.split()[1] for l in lines}

    def test_h2_upstream_multiplexed(self):
        """Where the provider speaks h2, waiting for the first connection's
        handshake is what lets side-by-side calls share it: also right
        after the provider restarted and every connection was dropped."""
        pki = tglib.test_pki()
        fp = self.fakeprov()
        ngx, port, log = self.start_nginx(pki, fp.port)
        tg = self.tollgate(upstreams={"openai": {
            "type": "openai", "base_url": "https://127.0.0.1:%d" % port,
            "ca_file": pki["ca"]}})
        r = tglib.http_call(tg.port, "POST", "/v1/chat/completions",
                            tglib.openai_chat(new_marker()), [JSON_CT])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.h2_conns(log, 1)), 1)
        self.burst(tg, "https HTTP/2")
        self.assertEqual(len(self.h2_conns(log, SLOW + 2)), 1,
                         "the calls did not share one HTTP/2 connection")
        ngx.signal(signal.SIGTERM)
        self.assertIsNotNone(ngx.wait(10), "nginx did not stop")
        ngx, port2, log = self.start_nginx(pki, fp.port, port, 1)
        self.burst(tg, "https HTTP/2, after the provider restarted")
        self.assertEqual(len(self.h2_conns(log, SLOW + 1)), 1,
                         "after a restart the calls did not share one "
                         "HTTP/2 connection")
        self.assertTrue(tg.alive())

if __name__ == "__main__":
    tglib.main()
