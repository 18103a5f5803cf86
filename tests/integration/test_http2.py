# SPDX-License-Identifier: Apache-2.0
"""HTTP/2 and connection reuse upstream: against an nginx that offers h2 over
TLS (ALPN), tollgate's calls arrive as HTTP/2.0 and share one connection;
against an HTTP/1.1-only TLS server they fall back to HTTP/1.1. Streams
relayed from an HTTP/2 upstream (nginx in front of fakeprov) arrive whole,
side by side and to a client that reads slowly (the transfer is paused)."""

import os
import re
import shutil
import socket
import sys
import threading
import time
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402

NGINX_CONF = """daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{}}
http {{
  log_format tg '$server_protocol $connection $request_uri $status';
  access_log {d}/access.log tg;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      {location}
    }}
  }}
}}
"""
RETURN_H2 = """default_type application/json;
      return 200 '{"id":"h2","object":"chat.completion"}';"""
PROXY_TO = """proxy_pass http://127.0.0.1:{fp};
      proxy_http_version 1.1;
      proxy_buffering off;"""


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def find_nginx():
    for p in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if p and os.access(p, os.X_OK):
            return p
    raise AssertionError("nginx is not installed (make deps installs it)")


class HTTP2Test(tglib.TGTestCase):

    def start_nginx(self, pki, location=RETURN_H2):
        d = os.path.join(self.tmp, "nginx")
        os.makedirs(d)
        port = tglib.free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(d=d, port=port, cert=pki["cert"],
                                      key=pki["key"], location=location))
        p = tglib.Proc("nginx", [find_nginx(), "-e", os.path.join(
            d, "stderr.log"), "-c", conf], self.tmp)
        self._procs.append(p)
        self.assertTrue(tglib.wait_until(lambda: port_open(port), 10),
                        "nginx did not start")
        return port, os.path.join(d, "access.log")

    def access_lines(self, path, n):
        def ready():
            try:
                with open(path) as f:
                    lines = f.read().splitlines()
            except OSError:
                return None
            return lines if len(lines) >= n else None
        lines = tglib.wait_until(ready, 10)
        self.assertIsNotNone(lines, "nginx logged fewer than %d calls" % n)
        return lines

    def test_h2_offered_and_reused(self):
        pki = tglib.test_pki()
        port, log = self.start_nginx(pki)
        tg = self.tollgate(upstreams={"openai": {
            "type": "openai", "base_url": "https://127.0.0.1:%d" % port,
            "ca_file": pki["ca"]}})
        for _ in range(3):
            r = tglib.http_call(tg.port, "POST", "/v1/chat/completions",
                                tglib.openai_chat("h2"), [tglib.JSON_CT])
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b'{"id":"h2","object":"chat.completion"}')
        lines = self.access_lines(log, 3)
        protos = {l.split()[0] for l in lines}
        conns = {l.split()[1] for l in lines}
        self.assertEqual(protos, {"HTTP/2.0"}, lines)
        self.assertEqual(len(conns), 1, "calls did not share a connection: "
                         "%r" % lines)

    def test_streams_from_h2_upstream(self):
        pki = tglib.test_pki()
        fp = self.fakeprov()
        port, log = self.start_nginx(pki, PROXY_TO.format(fp=fp.port))
        tg = self.tollgate(upstreams={"openai": {
            "type": "openai", "base_url": "https://127.0.0.1:%d" % port,
            "ca_file": pki["ca"]}}, limits={"stream_high_watermark": "64KiB"})
        hdrs = [tglib.JSON_CT, ("x-fake-events", "200"),
                ("x-fake-event-bytes", "700")]
        results = {}

        def stream(i):
            results[i] = tglib.http_call(
                tg.port, "POST", "/v1/chat/completions",
                tglib.openai_chat("h2s-%d" % i, stream=True), hdrs,
                timeout=60)
        threads = [threading.Thread(target=stream, args=(i,))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The same stream eight times over: equal but for the marker and
        # fakeprov's ids and timestamps.

        def norm(i, body):
            body = body.replace(b"h2s-%d" % i, b"h2s-N")
            body = re.sub(rb'"created":\d+', b'"created":0', body)
            return re.sub(rb"chatcmpl-[A-Za-z0-9]+", b"chatcmpl-X", body)
        for i, r in sorted(results.items()):
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.complete, r)
            self.assertIn(b"data: [DONE]", r.body)
            self.assertEqual(norm(i, r.body), norm(0, results[0].body))
        # A client reading 256 bytes every 50 ms holds the transfer
        # paused again and again; then it reads the rest at once.
        c = self.raw(tg.port, timeout=30, rcvbuf=4096)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions",
            tglib.openai_chat("h2slow", stream=True),
            [tglib.JSON_CT, ("x-fake-events", "5000"),
             ("x-fake-event-bytes", "300")]))
        got = b""
        t_end = time.monotonic() + 2
        while time.monotonic() < t_end:
            got += c.sock.recv(256)
            time.sleep(0.05)
        while not got.endswith(b"\r\n0\r\n\r\n"):
            data = c.sock.recv(65536)
            self.assertTrue(data, "the slow stream was cut after %d bytes"
                            % len(got))
            got += data
        # The chunks joined: the line may span two of them.
        self.assertIn(b"data: [DONE]", tglib.dechunk(got))
        self.assertTrue(tg.alive())
        protos = {l.split()[0] for l in self.access_lines(log, 9)}
        self.assertEqual(protos, {"HTTP/2.0"})

    def test_http11_fallback(self):
        pki = tglib.test_pki()
        fp = self.fakeprov(tls=pki)  # offers HTTP/1.1 only
        tg = self.tollgate(upstreams={"openai": {
            "type": "openai", "base_url": "https://127.0.0.1:%d" % fp.port,
            "ca_file": pki["ca"]}})
        r = tglib.http_call(tg.port, "POST", "/v1/chat/completions",
                            tglib.openai_chat("h1"), [tglib.JSON_CT])
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["object"], "chat.completion")


if __name__ == "__main__":
    tglib.main()
