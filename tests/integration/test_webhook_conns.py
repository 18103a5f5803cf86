# SPDX-License-Identifier: Apache-2.0
"""Webhook deliveries hold at most 16 connections at once. Up to 1,024
deliveries may be under way together (an alert storm, or the backlog of
pending alerts sent again at start), and each used to open a connection of
its own: descriptors the proxy's clients need. Forty pending alerts resent
at start to a slow receiver all arrive, never more than 16 at a time, and
no delivery waits for another's connection to be set up."""

import http.server
import os
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from test_alerts import insert_alert  # noqa: E402

PENDING = 40
HOLD = 0.5  # the receiver's time per delivery


class SlowReceiver:
    """Answers every POST 200 after HOLD seconds; counts how many it
    holds at once."""

    def __init__(self):
        self.got = []
        self.now = 0
        self.most = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                with outer.lock:
                    outer.now += 1
                    outer.most = max(outer.most, outer.now)
                time.sleep(HOLD)
                with outer.lock:
                    outer.now -= 1
                    outer.got.append(self.headers.get("X-Tollgate-Alert-Id"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, fmt, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WebhookConnsTest(tglib.TGTestCase):

    def start(self, fp, name, alerts=None):
        ex = ledgerlib.metering_extra()
        if alerts is not None:
            ex["alerts"] = alerts
        return self.tollgate(upstreams=ledgerlib.metering_upstreams(fp.port),
                             extra=ex, name=name)

    def test_resent_backlog_bounded(self):
        fp = self.fakeprov()
        tg = self.start(fp, "tollgate")
        # Signals are handled once it says it started.
        self.assertTrue(tg.wait_log(r"tollgate \S+ started"))
        self.assertEqual(tg.stop(), 0)
        db = os.path.join(self.tmp, "data/ledger.db")
        fired = time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                              time.gmtime(time.time() - 600))
        ids = ["thr-%02d" % i for i in range(PENDING)]
        for i in ids:
            insert_alert(db, id=i, fired_at=fired, delivery="pending",
                         attempts=0)
        rcv = SlowReceiver()
        self.addCleanup(rcv.close)
        t0 = time.monotonic()
        tg = self.start(fp, "tollgate2", alerts={"webhooks": [
            {"url": "http://127.0.0.1:%d/hook" % rcv.port,
             "format": "json", "timeout": "10s"}]})
        self.assertTrue(tglib.wait_until(lambda: len(rcv.got) >= PENDING,
                                         30),
                        "%d of %d alerts delivered" % (len(rcv.got), PENDING))
        took = time.monotonic() - t0
        self.assertEqual(sorted(rcv.got), ids)
        self.assertLessEqual(rcv.most, 16, "the receiver held %d deliveries "
                             "at once" % rcv.most)
        # Sixteen at a time, not one: 40 at 0.5 s each take about 1.5 s.
        self.assertGreater(rcv.most, 4)
        self.assertLess(took, 10)
        self.assertTrue(tg.wait_log(r"alert thr-39 delivered", 10))


if __name__ == "__main__":
    tglib.main()
