#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The fleet on and off, through the real binary, side by side in one run.

  python3 bench/fleet_bench.py [--build DIR] [--out DIR] [--rounds N]
  make bench-fleet

Two tollgates with bench/run.py's T3 configuration (a day budget with a
large hard cap and rate limits that every call passes through): one alone
(T3), one with a `fleet:` section naming a redis-server on loopback (T3F).
Measured against the same nginx mock, interleaved round by round:

  - added latency at c=1 (p50 / p99 over direct), bench/loadgen;
  - req/s at c=32, wrk, the proxy pinned to CPU 1 as in run.py;
  - Redis commands per call at steady state: INFO commandstats before and
    after each measured run of T3F, divided by the calls it served: the
    lease syncs (EVALSHA), and every command Redis ran (the commands
    inside the lease script, the heartbeat and the peers' read included).
    At c=1, T3F stays up while direct and T3 take their turns, so its
    heartbeat over the whole section is counted against its calls.

It reuses run.py's processes, load clients and helpers rather than adding
a mode to run.py's fixed plan: the fleet needs a Redis and a second
configuration of one system, and run.py's report is a page of its own.
Redis shares CPU 0 with the mock and the load generator. Results go to
--out (default bench/results/<UTC date>-fleet/): fleet.json and the
markdown table on stdout, which docs/benchmarks.md's "Fleet" section
(bench/analysis.md) quotes. Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests",
                                "integration"))
import run  # noqa: E402
import redislib  # noqa: E402


class FleetBench(run.Bench):
    def __init__(self, args, redis_port):
        super().__init__(args)
        self.redis_port = redis_port

    def start_sut(self, name, up):
        if name == "T3F":
            return self.start_tollgate("T3", up, extra="""fleet:
  redis: redis://127.0.0.1:%d
  instance: bench-1
  lease_usd: 1.00
  lease_ttl: 30s
""" % self.redis_port)
        return super().start_sut(name, up)


def commandstats(c):
    out = {}
    for line in c.cmd("INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([\w|]+):calls=(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def delta(a, b):
    """Commands run between two commandstats, the probe's own aside."""
    d = {k: v - a.get(k, 0) for k, v in b.items()
         if k not in ("info",) and v - a.get(k, 0) > 0}
    return d


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
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    if args.out is None:
        args.out = os.path.join(HERE, "results", datetime.datetime.utcnow()
                                .strftime("%Y-%m-%d") + "-fleet")
    work = os.path.join(args.tmpdir or "/tmp", "tg-fleet-bench-%d" %
                        os.getpid())
    os.makedirs(work, exist_ok=True)
    rport = run.free_port()
    redis = run.Proc("redis", [redislib.REDIS_SERVER, "--port", str(rport),
                               "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", work],
                     work, cpu=0)
    try:
        run.wait_port(rport, redis)
        rc = redislib.RedisClient(rport, timeout=10)
        b = FleetBench(args, rport)
        R = {"machine": run.machine(), "rounds": args.rounds}
        mock, mport = b.start_nginx_mock()

        # c=1: direct, T3, T3F interleaved (run.py's own section).
        s0 = commandstats(rc)
        c1 = run.sec_added_latency(b, mport, rounds=args.rounds, n=args.n,
                                   systems=["direct", "T3", "T3F"])
        s1 = commandstats(rc)
        R["c1"] = c1
        d = delta(s0, s1)
        # Calls T3F served in the c=1 section: warm-up plus the rounds.
        n1 = 1000 + args.rounds * args.n
        R["c1_redis"] = {"commands": d, "calls": n1,
                         "per_call": sum(d.values()) / n1,
                         "lease_syncs_per_call": d.get("evalsha", 0) / n1}

        # c=32 throughput, interleaved rounds, both alive throughout.
        procs = {s: b.start_sut(s, mport) for s in ("T3", "T3F")}
        for s, (p, port) in procs.items():
            b.wrk_run(port, "warm32-" + s, 32, 2,
                      b.headers(mport, b.intent("w32-" + s)))
        rps = {s: [] for s in procs}
        cmds, calls = {}, 0
        for r in range(args.rounds):
            for s, (p, port) in procs.items():
                a = commandstats(rc) if s == "T3F" else None
                res = b.wrk_run(port, "c32-%s-r%d" % (s, r), 32, args.secs,
                                b.headers(mport, b.intent("c32-" + s)))
                rps[s].append(res["rps"])
                if s == "T3F":
                    for k, v in delta(a, commandstats(rc)).items():
                        cmds[k] = cmds.get(k, 0) + v
                    calls += res.get("requests", 0)
        m = run.metrics(procs["T3F"][0].admin)
        for s, (p, port) in procs.items():
            p.stop()
        mock.stop()
        R["c32"] = {s: {"rps": run.median(v), "rounds": v}
                    for s, v in rps.items()}
        R["c32_redis"] = {"commands": cmds, "calls": calls,
                          "per_call": sum(cmds.values()) / max(1, calls),
                          "lease_syncs_per_call": cmds.get("evalsha", 0) /
                          max(1, calls)}
        R["fleet_metrics"] = {k: v for k, v in m.items()
                              if k.startswith("tollgate_fleet")}
        R["machine"]["loadavg_end"] = os.getloadavg()
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "fleet.json"), "w") as f:
            json.dump(R, f, indent=1, sort_keys=True, default=str)
        report(R)
    finally:
        run.stop_all()
        redis.stop()
    return 0


def report(R):
    c1, c32 = R["c1"], R["c32"]
    M = R["machine"]
    print("Fleet on vs off, %s, tollgate %s, load %.2f → %.2f, %d rounds"
          % (M["date"], M["tollgate"], M["loadavg_start"][0],
             M["loadavg_end"][0], R["rounds"]))
    print()
    print("| | T3 (no fleet) | T3 + fleet | fleet / no fleet |")
    print("|---|---|---|---|")
    for k, lab in (("added_p50", "added p50 at c=1, µs"),
                   ("added_p99", "added p99 at c=1, µs")):
        a, f = c1["T3"][k], c1["T3F"][k]
        print("| %s | %.0f | %.0f | %+.0f µs |" % (lab, a, f, f - a))
    a, f = c32["T3"]["rps"], c32["T3F"]["rps"]
    print("| req/s at c=32 (median of rounds) | %.0f | %.0f | %.2f× |" %
          (a, f, f / a if a else float("nan")))
    for k, lab in (("c32_redis", "c=32"), ("c1_redis", "c=1")):
        print("| lease syncs (EVALSHA) per call at %s | – | %.5f | |" %
              (lab, R[k]["lease_syncs_per_call"]))
        print("| every command Redis ran, per call at %s | – | %.5f | |" %
              (lab, R[k]["per_call"]))
    print()
    print("c=32 rounds, req/s: T3 %s; T3F %s" % (
        ", ".join("%.0f" % x for x in c32["T3"]["rounds"]),
        ", ".join("%.0f" % x for x in c32["T3F"]["rounds"])))
    print("Redis commands during c=32 (%d calls): %s" % (
        R["c32_redis"]["calls"], json.dumps(R["c32_redis"]["commands"],
                                            sort_keys=True)))
    print("Redis commands during c=1 (%d calls): %s" % (
        R["c1_redis"]["calls"], json.dumps(R["c1_redis"]["commands"],
                                           sort_keys=True)))


if __name__ == "__main__":
    sys.exit(main())
