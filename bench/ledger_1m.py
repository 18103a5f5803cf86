#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Build a 1-million-row ledger and time "a month's spend by team".

The schema is made by tollgate itself (it is started once on the new file
and stopped), then rows go in with Python's sqlite3 in one transaction, so
the rollup is kept by the real triggers. The query is then timed through
the real binary, `tollgate spend --by team --month 2026-11`, answered from
the calls_daily rollup (the default) and, for comparison, from calls with
--source calls. Not part of ctest: it takes a minute or two.

  python3 bench/ledger_1m.py [--rows N] [--keep DIR] [--runs N]
  python3 bench/ledger_1m.py --ledger DIR/ledger.db    # time a kept one

The baseline line is the same command over an empty period: starting the
process and opening the ledger, which the two timings include.

TOLLGATE_BIN (or build/tollgate, /tmp/spend-build/tollgate) is the binary.
"""

import argparse
import json
import os
import random
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


def find_bin():
    for p in (os.environ.get("TOLLGATE_BIN"),
              os.path.join(SOURCE, "build", "tollgate"),
              "/tmp/spend-build/tollgate"):
        if p and os.access(p, os.X_OK):
            return p
    sys.exit("no tollgate binary: set TOLLGATE_BIN")


def make_schema(tg, d):
    """Start tollgate on d/ledger.db until it listens, then SIGTERM it."""
    cfg = os.path.join(d, "tollgate.yaml")
    with open(cfg, "w") as f:
        f.write("listen: 127.0.0.1:0\n"
                "admin:\n  listen: 127.0.0.1:0\n"
                "upstreams:\n"
                "  openai: { type: openai, base_url: http://127.0.0.1:9 }\n"
                "ledger:\n  path: ledger.db\n")
    p = subprocess.Popen([tg, "-d", "-c", cfg], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, cwd=d)
    deadline = time.monotonic() + 20
    err = b""
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        err += line
        if b"listening on" in line or not line:
            break
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    path = os.path.join(d, "ledger.db")
    if not os.path.exists(path):
        sys.exit("tollgate made no ledger:\n" + err.decode())
    return cfg, path


def fill(path, n, seed=1):
    """n rows over October and November 2026, shaped like a real fleet:
    20 teams of 5 tenants, 2 agent classes a team, mostly prod, 6 models,
    an intent per ~5 calls."""
    rnd = random.Random(seed)
    models = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"),
              ("openai", "o3"), ("anthropic", "claude-sonnet-4"),
              ("anthropic", "claude-haiku-4"), ("gemini", "gemini-2.5-pro")]
    start = 1790812800000  # 2026-10-01T00:00:00Z
    span = 61 * 86400000
    c = sqlite3.connect(path)
    c.execute("PRAGMA synchronous = OFF")
    stamps = sorted(start + rnd.randrange(span) for _ in range(n))

    def rows():
        for i, ms in enumerate(stamps):
            yield row(i, ms)

    def row(i, ms):
        t = rnd.randrange(20)
        prov, model = models[rnd.randrange(len(models))]
        status = "ok" if rnd.random() < 0.95 else rnd.choice(
            ("error", "refused", "client_closed", "upstream_error"))
        inp, out = rnd.randrange(200, 20000), rnd.randrange(10, 2000)
        cost = 0 if status == "refused" else inp * 2500 + out * 10000
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + \
            ".%03dZ" % (ms % 1000)
        return ("b-%07d" % i, ts, ts, prov, "chat_completions", prov,
                model, "intent-%d" % (i // 5), "team-%02d" % t,
                "tenant-%02d-%d" % (t, rnd.randrange(5)),
                "class-%02d-%d" % (t, rnd.randrange(2)),
                "prod" if rnd.random() < 0.9 else "staging", status,
                200, inp, out, cost, cost, "bench")
    t0 = time.monotonic()
    with c:
        c.executemany(
            "INSERT INTO calls (id, started_at, finished_at, provider,"
            " endpoint, upstream, model, intent, team, tenant, agent_class,"
            " environment, status, http_status, input_tokens, output_tokens,"
            " cost_nusd, reserved_nusd, price_version, usage_source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, 'reported')", rows())
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    return time.monotonic() - t0


def timed(argv, runs):
    out, times = None, []
    for _ in range(runs):
        t0 = time.monotonic()
        r = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, check=False)
        times.append(time.monotonic() - t0)
        if r.returncode != 0:
            sys.exit("%s: %s" % (" ".join(argv), r.stderr.decode()))
        out = r.stdout
    return out, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", help="build the ledger in this directory")
    ap.add_argument("--ledger", help="time this ledger, do not build one")
    a = ap.parse_args()
    tg = find_bin()
    d = None
    if not a.ledger:
        d = a.keep or tempfile.mkdtemp(prefix="tg-bench-")
        os.makedirs(d, exist_ok=True)
    try:
        if a.ledger:
            path, secs = a.ledger, 0.0
        else:
            _, path = make_schema(tg, d)
            secs = fill(path, a.rows)
        c = sqlite3.connect(path)
        nroll = c.execute("SELECT count(*) FROM calls_daily").fetchone()[0]
        want = c.execute(
            "SELECT sum(cost_nusd) FROM calls WHERE status <> 'in_flight'"
            " AND started_at >= '2026-11-01' AND started_at < '2026-12-01'"
        ).fetchone()[0]
        ncalls = c.execute("SELECT count(*) FROM calls").fetchone()[0]
        c.close()
        print("ledger: %d calls, %d rollup rows, %.1f MB, filled in %.1f s"
              % (ncalls, nroll, os.path.getsize(path) / 1e6, secs))
        _, times = timed([tg, "spend", "--by", "team", "--month", "2000-01",
                          "--format", "json", "--ledger", path], a.runs)
        print("baseline (exec, open, empty month): median %.3f s"
              % statistics.median(times))
        base = [tg, "spend", "--by", "team", "--month", "2026-11",
                "--format", "json", "--ledger", path]
        for source in ("rollup", "calls"):
            out, times = timed(base + ["--source", source], a.runs)
            got = json.loads(out)["total_cost_nusd"]
            print("tollgate spend --by team --month 2026-11 (%s): "
                  "median %.3f s, min %.3f s, max %.3f s over %d runs; "
                  "total %s nusd %s" % (
                      source, statistics.median(times), min(times),
                      max(times), a.runs, got,
                      "== SQL" if got == want else "!= SQL %s" % want))
            if got != want:
                sys.exit(1)
    finally:
        if d and not a.keep:
            shutil.rmtree(d, True)


if __name__ == "__main__":
    main()
