#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Does a client hammering GET /v1/spend slow the proxy down?

Builds a large ledger (the schema made by tollgate itself, rows inserted
with Python's sqlite3 so the rollup triggers run), starts fakeprov and
tollgate on it, and times small non-streamed chat calls through the proxy
one at a time on a keep-alive connection: first alone, then while several
processes loop on /v1/spend queries that scan the calls table (a from=
that is not a whole day keeps them off the rollup), then alone again. The
spend queries run on the admin API's reader thread; the proxy's event loop
should not wait on them. Prints p50/p99/max per phase and the spend
queries answered. Not part of ctest.

  python3 bench/admin_spend_load.py [--rows N] [--seconds S] [--hammers N]

TOLLGATE_BIN and FAKEPROV_BIN (or build/, /tmp/admin-build/) are the
binaries.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)


def find_bin(env, name):
    for p in (os.environ.get(env), os.path.join(SOURCE, "build", name),
              os.path.join(SOURCE, "build", "tests", name),
              os.path.join("/tmp/admin-build", name),
              os.path.join("/tmp/admin-build/tests", name)):
        if p and os.access(p, os.X_OK):
            return p
    sys.exit("no %s binary: set %s" % (name, env))


def wait_line(path, rx, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            m = re.search(rx, f.read().decode("utf-8", "replace"))
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit("no %r in %s" % (rx, path))


def start(argv, d, name, rx, stream="stderr"):
    log = os.path.join(d, name + ".log")
    f = open(log, "wb")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                         stdout=f if stream == "stdout" else
                         subprocess.DEVNULL,
                         stderr=f if stream == "stderr" else
                         subprocess.DEVNULL, cwd=d)
    return p, wait_line(log, rx, p), log


def fill(path, n, seed=1):
    """n final rows over October and November 2026: 20 teams, 6 models."""
    rnd = random.Random(seed)
    models = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"),
              ("openai", "o3"), ("anthropic", "claude-sonnet-4"),
              ("anthropic", "claude-haiku-4"), ("gemini", "gemini-2.5-pro")]
    start_ms = 1790812800000  # 2026-10-01T00:00:00Z
    stamps = sorted(start_ms + rnd.randrange(61 * 86400000)
                    for _ in range(n))

    def rows():
        for i, ms in enumerate(stamps):
            t = rnd.randrange(20)
            prov, model = models[rnd.randrange(len(models))]
            inp, out = rnd.randrange(200, 20000), rnd.randrange(10, 2000)
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(
                ms // 1000)) + ".%03dZ" % (ms % 1000)
            yield ("b-%07d" % i, ts, ts, prov, "chat_completions", prov,
                   model, "team-%02d" % t, "class-%02d" % rnd.randrange(4),
                   "ok", 200, inp, out, inp * 2500 + out * 10000)
    c = sqlite3.connect(path)
    c.execute("PRAGMA synchronous = OFF")
    with c:
        c.executemany(
            "INSERT INTO calls (id, started_at, finished_at, provider,"
            " endpoint, upstream, model, team, agent_class, status,"
            " http_status, input_tokens, output_tokens, cost_nusd,"
            " reserved_nusd, price_version, usage_source) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'bench',"
            " 'reported')", rows())
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def hammer(port, stop, counts):
    """Loop on /v1/spend until stop is set; count answers by status."""
    q = "/v1/spend?group_by=team,model&from=2026-10-01T00:00:01Z"
    hdrs = {"Host": "127.0.0.1:%d" % port}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while not stop.is_set():
        try:
            conn.request("GET", q, headers=hdrs)
            r = conn.getresponse()
            r.read()
            with counts.get_lock():
                counts[0 if r.status == 200 else 1] += 1
            if r.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port,
                                                  timeout=120)
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port,
                                              timeout=120)


def proxy_phase(port, n, secs=None):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "hello"}]})
    hdrs = {"Host": "127.0.0.1:%d" % port,
            "Content-Type": "application/json",
            "X-Tollgate-Team": "bench"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat = []
    end = time.monotonic() + secs if secs else None
    while (len(lat) < n) if end is None else (time.monotonic() < end):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, hdrs)
        r = conn.getresponse()
        r.read()
        lat.append((time.perf_counter() - t0) * 1000)
        if r.status != 200:
            sys.exit("proxy call: status %d" % r.status)
    conn.close()
    return lat


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def report(name, lat):
    print("  %-26s p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms  (n=%d)" % (
        name, statistics.median(lat), pct(lat, 99), max(lat), len(lat)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=500000)
    ap.add_argument("--seconds", type=float, default=20,
                    help="length of each phase")
    ap.add_argument("--hammers", type=int, default=4)
    ap.add_argument("--keep", help="work in this directory")
    a = ap.parse_args()
    tg_bin = find_bin("TOLLGATE_BIN", "tollgate")
    fp_bin = find_bin("FAKEPROV_BIN", "fakeprov")
    d = a.keep or tempfile.mkdtemp(prefix="tg-adminbench-")
    os.makedirs(d, exist_ok=True)
    procs = []
    try:
        fp, m, _ = start([fp_bin, "--listen", "127.0.0.1:0"], d, "fakeprov",
                         r"fakeprov listening on 127\.0\.0\.1:(\d+)",
                         stream="stdout")
        procs.append(fp)
        cfg = os.path.join(d, "tollgate.yaml")
        with open(cfg, "w") as f:
            f.write("listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n"
                    "upstreams:\n  openai: { type: openai, base_url: "
                    "\"http://127.0.0.1:%s\" }\nledger:\n  path: ledger.db\n"
                    "prices: %s\n" % (m.group(1), os.path.join(
                        SOURCE, "config", "prices.yaml")))
        # The schema, made by tollgate; then the rows.
        tg, _, _ = start([tg_bin, "-d", "-c", cfg], d, "tollgate0",
                         r"admin listening on")
        tg.send_signal(signal.SIGTERM)
        tg.wait(30)
        t0 = time.monotonic()
        fill(os.path.join(d, "ledger.db"), a.rows)
        print("ledger: %d rows, %.0f MB, filled in %.1f s" % (
            a.rows, os.path.getsize(os.path.join(d, "ledger.db")) / 1e6,
            time.monotonic() - t0))

        tg, _, log = start([tg_bin, "-d", "-c", cfg], d, "tollgate",
                           r"admin listening on")
        procs.append(tg)
        with open(log) as f:
            text = f.read()
        pport = int(re.search(r"proxy listening on [^:]+:(\d+)",
                              text).group(1))
        aport = int(re.search(r"admin listening on [^:]+:(\d+)",
                              text).group(1))
        proxy_phase(pport, 200)  # warm-up
        print("proxy latency, sequential non-streamed calls, %.0f s per "
              "phase:" % a.seconds)
        report("alone", proxy_phase(pport, 0, a.seconds))

        stop = multiprocessing.Event()
        counts = multiprocessing.Array("l", 2)
        hs = [multiprocessing.Process(target=hammer,
                                      args=(aport, stop, counts))
              for _ in range(a.hammers)]
        for h in hs:
            h.start()
        time.sleep(1.0)
        before = counts[0], counts[1]
        t0 = time.monotonic()
        lat = proxy_phase(pport, 0, a.seconds)
        secs = time.monotonic() - t0
        during = counts[0] - before[0], counts[1] - before[1]
        stop.set()
        for h in hs:
            h.join(180)
        report("with %d /v1/spend loops" % a.hammers, lat)
        report("alone again", proxy_phase(pport, 0, a.seconds))
        print("spend queries during the loaded phase: %d answered 200, %d "
              "refused (503 queue full) in %.1f s" % (during[0], during[1],
                                                     secs))
        tg.send_signal(signal.SIGTERM)
        tg.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if not a.keep:
            shutil.rmtree(d, True)


if __name__ == "__main__":
    main()
