# SPDX-License-Identifier: Apache-2.0
"""HTTP/2 and connection reuse upstream: against an nginx that offers h2 over
TLS (ALPN), tollgate's calls arrive as HTTP/2.0 and share one connection;
against an HTTP/1.1-only TLS server they fall back to HTTP/1.1."""

import os
import shutil
import socket
import sys
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
      default_type application/json;
      return 200 '{{"id":"h2","object":"chat.completion"}}';
    }}
  }}
}}
"""


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

    def start_nginx(self, pki):
        d = os.path.join(self.tmp, "nginx")
        os.makedirs(d)
        port = tglib.free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(d=d, port=port, cert=pki["cert"],
                                      key=pki["key"]))
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
