#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Shipping to the fleet ledger on and off, through the real binary.

  python3 bench/ship_bench.py [--build DIR] [--out DIR] [--rounds N]
                              [--backlog ROWS]
  make bench-ship

Two measures, against a real PostgreSQL started here (tests/integration/
pglib.py: initdb and postgres on a free loopback port, fsync off, commits
still through the WAL):

  - the proxy with shipping off (T1, bench/run.py's tollgate), on (T1S:
    T1 plus ledger.ship: to that PostgreSQL, batch 500, interval 1s), and
    on with pruning (T1P: T1S with keep_local: 1s, so every report deletes
    the rows just shipped, up to 1,000, in the writer's transactions),
    interleaved round by round against the same nginx mock: added latency
    at c=1 over direct (bench/loadgen) and req/s at c=32 (wrk). T1S ships
    while it serves, so its PostgreSQL statements run beside the calls;
  - the drain rate: with PostgreSQL stopped, --backlog calls (default
    50,000) are made through a tollgate with ledger.ship:, so that many
    rows wait in its ledger; PostgreSQL is started, and the time from the
    shipper's reconnect (tollgate_ship_up 1, so its back-off is not
    counted) until /metrics shows tollgate_ship_backlog_rows 0 gives the
    rows per second one shipper sustains. PostgreSQL then
    holds exactly the ledger's rows and cost sum, or the run fails.

PostgreSQL shares CPU 0 with the mock and the load generator; tollgate,
its shipper thread included, has CPU 1. Results go to --out (default
bench/results/<UTC date>-ship/): ship.json and the markdown table on
stdout, which docs/benchmarks.md's "Fleet ledger" section quotes. Python 3
standard library only.
"""

import argparse
import datetime
import json
import os
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests",
                                "integration"))
import run  # noqa: E402
import pglib  # noqa: E402


class ShipBench(run.Bench):
    def __init__(self, args, pg):
        super().__init__(args)
        self.pg = pg

    def ship_section(self, db):
        return ("  ship:\n    postgres: \"%s\"\n    instance: bench-%s\n"
                % (self.pg.url(db), db))

    def start_sut(self, name, up):
        if name == "T1S":
            return self.start_tollgate("T1", up,
                                       ledger_extra=self.ship_section("on"))
        if name == "T1P":
            # Pruning all the time: rows a second old are deleted as soon
            # as they are shipped, up to 1,000 per report, in the writer's
            # transactions that calls wait on.
            return self.start_tollgate(
                "T1", up, ledger_extra="  keep_local: 1s\n" +
                self.ship_section("prune"))
        return super().start_sut(name, up)


def scalar(m, name):
    v = m.get(name)
    return float(v) if v is not None else None


def ledger_totals(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return db.execute("SELECT count(*), coalesce(sum(cost_nusd), 0) "
                          "FROM calls").fetchone()
    finally:
        db.close()


def drain(b, mport, rows):
    """Make rows calls while PostgreSQL is down, then time the drain."""
    b.pg.stop("immediate")
    p, port = b.start_tollgate("T1", mport,
                               ledger_extra=b.ship_section("drain"))
    made = 0
    while made < rows:
        n = min(20000, rows - made)
        res = b.loadgen_run(port, "backlog-%d" % made,
                            ["-c", "16", "-r", "0", "-n", str(n), "-b",
                             run.REQUEST],
                            b.headers(mport, b.intent("backlog")))
        if res["errors"] or res["non2xx"]:
            raise RuntimeError("backlog calls failed: %d errors, %d non-2xx"
                               % (res["errors"], res["non2xx"]))
        made += n
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        backlog = scalar(run.metrics(p.admin), "tollgate_ship_backlog_rows")
        if backlog is not None and backlog >= rows:
            break
        time.sleep(0.2)
    local_rows, local_sum = ledger_totals(p.ledger)
    t0 = time.monotonic()
    b.pg.restart()
    t_up = time.monotonic()
    samples = []
    t_conn = None
    while True:
        m = run.metrics(p.admin)
        backlog = scalar(m, "tollgate_ship_backlog_rows")
        if t_conn is None and scalar(m, "tollgate_ship_up") == 1:
            t_conn = time.monotonic()
        samples.append((time.monotonic() - t_up, backlog))
        if backlog == 0:
            break
        if time.monotonic() - t_up > 600:
            raise RuntimeError("the backlog did not drain in 10 minutes")
        time.sleep(0.05)
    t_end = time.monotonic()
    got = b.pg.psql("SELECT count(*), count(DISTINCT id), sum(cost_nusd) "
                    "FROM calls WHERE instance = 'bench-drain'", db="drain")
    m = run.metrics(p.admin)
    p.stop()
    n, distinct, total = (int(x) for x in got.split("|"))
    if (n, distinct, total) != (local_rows, local_rows, local_sum):
        raise RuntimeError("PostgreSQL holds %d rows (%d distinct), sum %d;"
                           " the ledger %d rows, sum %d" %
                           (n, distinct, total, local_rows, local_sum))
    secs = t_end - (t_conn or t_up)
    return {"rows": local_rows, "pg_start_s": t_up - t0,
            "reconnect_s": (t_conn or t_up) - t_up, "drain_s": secs,
            "rows_per_s": local_rows / secs if secs > 0 else None,
            "samples": samples[::10],
            "ship_metrics": {k: v for k, v in m.items()
                             if k.startswith("tollgate_ship")}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get(
        "BENCH_BUILD", os.path.join(run.SOURCE, "build-bench")))
    ap.add_argument("--out")
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds of each measure (default 5)")
    ap.add_argument("--n", type=int, default=2000,
                    help="calls per c=1 round (default 2000)")
    ap.add_argument("--secs", type=int, default=8,
                    help="seconds per c=32 round (default 8)")
    ap.add_argument("--backlog", type=int, default=50000,
                    help="rows shipped in the drain measure (default "
                    "50000)")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    if args.out is None:
        args.out = os.path.join(HERE, "results", datetime.datetime.utcnow()
                                .strftime("%Y-%m-%d") + "-ship")
    work = os.path.join(args.tmpdir or "/tmp", "tg-ship-bench-%d" %
                        os.getpid())
    os.makedirs(work, exist_ok=True)
    pg = pglib.PgServer(work, name="postgres")
    try:
        pg.createdb("on")
        pg.createdb("prune")
        pg.createdb("drain")
        b = ShipBench(args, pg)
        R = {"machine": run.machine(), "rounds": args.rounds}
        mock, mport = b.start_nginx_mock()

        # c=1: direct, T1, T1S interleaved (run.py's own section).
        R["c1"] = run.sec_added_latency(b, mport, rounds=args.rounds,
                                        n=args.n,
                                        systems=["direct", "T1", "T1S",
                                                 "T1P"])

        # c=32 throughput, interleaved rounds, both alive throughout.
        procs = {s: b.start_sut(s, mport) for s in ("T1", "T1S", "T1P")}
        for s, (p, port) in procs.items():
            b.wrk_run(port, "warm32-" + s, 32, 2,
                      b.headers(mport, b.intent("w32-" + s)))
        rps = {s: [] for s in procs}
        for r in range(args.rounds):
            for s, (p, port) in procs.items():
                res = b.wrk_run(port, "c32-%s-r%d" % (s, r), 32, args.secs,
                                b.headers(mport, b.intent("c32-" + s)))
                rps[s].append(res["rps"])
        m = run.metrics(procs["T1S"][0].admin)
        mp = run.metrics(procs["T1P"][0].admin)
        for s, (p, port) in procs.items():
            p.stop()
        R["c32_prune_metrics"] = {k: v for k, v in mp.items()
                                  if k.startswith(("tollgate_ship",
                                                   "tollgate_ledger_pruned"))}
        R["c32"] = {s: {"rps": run.median(v), "rounds": v}
                    for s, v in rps.items()}
        R["c32_ship_metrics"] = {k: v for k, v in m.items()
                                 if k.startswith("tollgate_ship")}

        R["drain"] = drain(b, mport, args.backlog)
        mock.stop()
        R["machine"]["loadavg_end"] = os.getloadavg()
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "ship.json"), "w") as f:
            json.dump(R, f, indent=1, sort_keys=True, default=str)
        report(R)
    finally:
        run.stop_all()
        pg.cleanup()
    return 0


def report(R):
    c1, c32, d = R["c1"], R["c32"], R["drain"]
    M = R["machine"]
    print("Shipping on vs off, %s, tollgate %s, load %.2f → %.2f, %d rounds"
          % (M["date"], M["tollgate"], M["loadavg_start"][0],
             M["loadavg_end"][0], R["rounds"]))
    print()
    print("| | T1 (no ship) | T1 + ledger.ship | + keep_local 1s | "
          "ship / T1 | prune / T1 |")
    print("|---|---|---|---|---|---|")
    for k, lab in (("added_p50", "added p50 at c=1, µs"),
                   ("added_p99", "added p99 at c=1, µs")):
        a, f, g = c1["T1"][k], c1["T1S"][k], c1["T1P"][k]
        print("| %s | %.0f | %.0f | %.0f | %+.0f µs | %+.0f µs |" %
              (lab, a, f, g, f - a, g - a))
    a, f, g = c32["T1"]["rps"], c32["T1S"]["rps"], c32["T1P"]["rps"]
    print("| req/s at c=32 (median of rounds) | %.0f | %.0f | %.0f | "
          "%.2f× | %.2f× |" % (a, f, g, f / a if a else float("nan"),
                                g / a if a else float("nan")))
    print()
    print("c=32 rounds, req/s: T1 %s; T1S %s; T1P %s" % (
        ", ".join("%.0f" % x for x in c32["T1"]["rounds"]),
        ", ".join("%.0f" % x for x in c32["T1S"]["rounds"]),
        ", ".join("%.0f" % x for x in c32["T1P"]["rounds"])))
    print("T1P after c=32: %s" % json.dumps(R["c32_prune_metrics"],
                                            sort_keys=True))
    print("T1S after c=32: %s" % json.dumps(R["c32_ship_metrics"],
                                            sort_keys=True))
    print()
    print("Drain: %d rows in %.2f s from the shipper's reconnect: %.0f "
          "rows/s (PostgreSQL took %.2f s to start, the shipper %.2f s more "
          "to retry); PostgreSQL holds every row once, cost sum equal" %
          (d["rows"], d["drain_s"], d["rows_per_s"], d["pg_start_s"],
           d["reconnect_s"]))


if __name__ == "__main__":
    sys.exit(main())
