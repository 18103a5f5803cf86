#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tollgate's crash loop: kill -9 under open-loop load, round after round.

  python3 bench/crashloop.py [--rounds 50] [--rate 1000] [--seconds 3]
                             [--durability process|power] [--keep]
  make crashloop                                  # 50 rounds, about 5 minutes

The durability contract under test: every call the client got a whole
answer for (any status the provider gave, 2xx or not) has its row in the
ledger after tollgate is killed with SIGKILL and started again: a settled
row (`ok`, `error`, ...) or an `interrupted` one charged at its
reservation. A call whose answer was cut or never came may or may not
have a row; it is only counted.

Each round, in a fresh temp dir:
  - fakeprov and tollgate on 127.0.0.1 (ports the kernel picks), a fresh
    ledger, a `total` policy with a cap no call reaches, so every call
    reserves its worst case before it is forwarded;
  - an open-loop client in this process (asyncio, raw HTTP/1.1 over
    --conns keep-alive connections): request i is due at t0 + i / rate,
    whatever the answers before it did. A quarter are OpenAI chat streams
    (3 to 8 events paced 2 to 8 ms, include_usage), the rest plain chat
    calls answered after 0 to 40 ms, and 3 % of all of them are answered
    500 or 429 by the provider, so some calls are always in flight.
    Every request carries a marker of its own in its body, where
    fakeprov's record shows which calls went upstream. By default the
    ledger's id of a call is the one tollgate makes and answers with
    (x-tollgate-request-id), the path almost every call takes; with
    --ids client each request sends the marker as its own
    X-Tollgate-Request-Id, which tollgate checks against the ledger before
    the call is reserved;
  - at 70 % of --seconds, tollgate is killed with SIGKILL; the client keeps
    its schedule to the end (the rest is refused at connect);
  - tollgate is started again on the same config and ledger, waited for
    until GET /healthz on its admin port answers 200, and stopped with
    SIGTERM (it must exit 0); the ledger is then opened read-only.
A round fails when an answered id has no row, or only an `in_flight` one;
when any row is left `in_flight`; when the `interrupted` rows' cost differs
from their reservations (in sum, and row by row, each with a reservation);
when a call fakeprov received has no row (each call's marker is also its
X-Tollgate-Intent, so its row names it whoever made the id); when a row
names a marker this client never sent, or is for a call fakeprov never
received and is not `interrupted` (only a reservation the kill cut off
before it went out may be); or when PRAGMA integrity_check is not ok. Answers
that are complete are "answered"; those cut or never given are "unknown"
(of which "open at the kill": sent before the kill, so the kill cut them
off; the others went out after it). One line per round, then a summary;
exit 1 if any round failed.

The client measures itself: the achieved rate over the part of the run
before the kill, and how late requests went out behind their schedule
(lag p99). A client that cannot keep up prints a warning.

Binaries: $BENCH_BUILD/tollgate and $BENCH_BUILD/tests/fakeprov
(BENCH_BUILD defaults to build-bench, as `make bench-build` makes them).
Python 3 standard library only.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))

import tglib  # noqa: E402  (the integration harness: processes, config)

KILL_AT = 0.7
READ_TIMEOUT = 10.0
STREAM_SHARE = 0.25
ERROR_SHARE = 0.03


def log(*a):
    print("crashloop:", *a, file=sys.stderr, flush=True)


def config_text(up_port, durability):
    doc = {
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0"},
        "upstreams": tglib.std_upstreams(up_port),
        "ledger": {"path": "data/ledger.db", "durability": durability},
        "prices": os.path.join(SOURCE, "config", "prices.yaml"),
        # A cap no round reaches: every call reserves its worst case, so an
        # interrupted row has a reservation to be charged.
        "policies": [{"name": "everything", "window": "total",
                      "hard_cap_usd": "1000000"}],
    }
    return tglib.to_yaml(doc)


# --------------------------------------------------------------------------
# The open-loop client.

class Req:
    __slots__ = ("rid", "stream", "data", "due", "sent", "status",
                 "outcome", "tid")

    def __init__(self, rid, stream, data, due):
        self.rid = rid
        self.stream = stream
        self.data = data
        self.due = due
        self.sent = None
        self.status = None
        self.tid = None  # the x-tollgate-request-id answered
        # answered | cut (sent, answer missing or incomplete) | unsent
        self.outcome = None


def make_request(rnd, rid, due, client_ids):
    stream = rnd.random() < STREAM_SHARE
    body = {"model": "gpt-4o-mini", "user": rid, "max_tokens": 64,
            "messages": [{"role": "user", "content": "hello " + rid}]}
    hdrs = ["POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1",
            "Content-Type: application/json",
            "Authorization: Bearer sk-crashloop-not-a-key",
            # The marker as the call's intent: its row names it.
            "X-Tollgate-Intent: " + rid]
    if client_ids:
        hdrs.append("X-Tollgate-Request-Id: " + rid)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        hdrs.append("x-fake-events: %d" % rnd.randint(3, 8))
        hdrs.append("x-fake-pace-ms: %d" % rnd.randint(2, 8))
    else:
        hdrs.append("x-fake-delay-ms: %d" % rnd.randint(0, 40))
    if rnd.random() < ERROR_SHARE:
        hdrs.append("x-fake-status: %d" % rnd.choice((500, 429)))
    raw = json.dumps(body, separators=(",", ":")).encode()
    hdrs.append("Content-Length: %d" % len(raw))
    data = ("\r\n".join(hdrs) + "\r\n\r\n").encode() + raw
    return Req(rid, stream, data, due)


async def read_answer(reader, req):
    """Read one whole response; return (complete, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    req.status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            close = value == b"close"
        elif name == b"x-tollgate-request-id":
            req.tid = line.partition(b":")[2].strip().decode()
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                # Trailers, if any, up to the empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            chunk = await reader.readexactly(size + 2)
            parts.append(chunk[:-2])
        body = b"".join(parts)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        # A body ended by the close alone cannot be told from a cut one.
        await reader.read()
        return False, False
    if req.stream and req.status == 200 and b"data: [DONE]" not in body:
        return False, False
    return True, not close


class Client:
    def __init__(self, port, rate, seconds, conns, seed, prefix,
                 client_ids):
        self.port = port
        self.rate = rate
        self.seconds = seconds
        self.conns = conns
        self.rnd = random.Random(seed)
        self.prefix = prefix
        self.client_ids = client_ids
        self.reqs = []
        self.queue = None
        self.killed_at = None
        self.done_scheduling = False

    async def worker(self):
        reader = writer = None
        while True:
            req = await self.queue.get()
            if req is None:
                break
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", self.port)
                except OSError:
                    req.outcome = "unsent"
                    continue
            req.sent = time.monotonic()
            ok = keep = False
            try:
                writer.write(req.data)
                ok, keep = await asyncio.wait_for(read_answer(reader, req),
                                                  READ_TIMEOUT)
            except (OSError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, asyncio.TimeoutError,
                    ValueError, IndexError):
                ok = keep = False
            req.outcome = "answered" if ok else "cut"
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    async def schedule(self, t0):
        n = int(self.rate * self.seconds)
        i = 0
        while i < n:
            now = time.monotonic()
            # Every request due by now goes out at once: the schedule, not
            # the answers, decides when a request is sent.
            while i < n and t0 + i / self.rate <= now:
                req = make_request(self.rnd, "%s-%06d" % (self.prefix, i),
                                   t0 + i / self.rate, self.client_ids)
                self.reqs.append(req)
                self.queue.put_nowait(req)
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, t0 + i / self.rate -
                                        time.monotonic()))
        for _ in range(self.conns):
            self.queue.put_nowait(None)

    async def run(self, kill):
        self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        t0 = time.monotonic() + 0.05
        workers = [asyncio.ensure_future(self.worker())
                   for _ in range(self.conns)]

        def do_kill():
            self.killed_at = time.monotonic()
            kill()

        loop.call_at(loop.time() + (t0 - time.monotonic()) +
                     KILL_AT * self.seconds, do_kill)
        await self.schedule(t0)
        await asyncio.wait(workers, timeout=READ_TIMEOUT + 5)
        for w in workers:
            w.cancel()
        self.t0 = t0


def pct(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


# --------------------------------------------------------------------------
# One round.

def healthz(port, timeout=15):
    def ok():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port,
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    return tglib.wait_until(ok, timeout, interval=0.02)


def admin_port(tg, timeout=10):
    m = tg.wait_log(r"admin listening on 127\.0\.0\.1:(\d+)", timeout)
    return int(m.group(1)) if m else None


def provider_ids(fp, prefix):
    """Request ids (the body's "user") of every call fakeprov received."""
    ids = set()
    for r in fp.requests():
        try:
            u = json.loads(r.get("body") or "{}").get("user")
        except ValueError:
            continue
        if isinstance(u, str) and u.startswith(prefix):
            ids.add(u)
    return ids


def check_ledger(path, answered, sent_markers, forwarded):
    """The round's verdict from the ledger: (facts, problems)."""
    problems = []
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = dict(db.execute("SELECT id, status FROM calls"))
        by_marker = dict(db.execute("SELECT intent, status FROM calls"))
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        inter_n, inter_cost, inter_res = db.execute(
            "SELECT count(*), coalesce(sum(cost_nusd), 0), "
            "coalesce(sum(reserved_nusd), 0) FROM calls "
            "WHERE status = 'interrupted'").fetchone()
        # Each interrupted row on its own, so two wrong rows cannot
        # cancel out in the sums.
        uncharged = db.execute(
            "SELECT count(*) FROM calls WHERE status = 'interrupted' AND "
            "(reserved_nusd <= 0 OR cost_nusd != reserved_nusd)"
        ).fetchone()[0]
        by_status = dict(db.execute(
            "SELECT status, count(*) FROM calls GROUP BY status"))
    finally:
        db.close()
    missing = sorted(i for i in answered if i not in rows)
    open_answered = sorted(i for i in answered
                           if rows.get(i) == "in_flight")
    # Each row names its call's marker as its intent (and, with client
    # ids, as its id): a row for every call the provider received, and a
    # row for no call the provider did not receive unless the kill cut it
    # off after its reservation, when it is interrupted (charged, not
    # lost).
    unforwarded = sorted(i for i in forwarded if i not in by_marker)
    strangers = sorted(i for i in by_marker if i not in sent_markers)
    strangers += sorted("%s (%s, never forwarded)" % (i, s)
                        for i, s in by_marker.items()
                        if i in sent_markers and i not in forwarded and
                        s != "interrupted")
    inflight = by_status.get("in_flight", 0)
    if missing:
        problems.append("%d answered id(s) without a row: %s" % (
            len(missing), " ".join(missing[:10])))
    if open_answered:
        problems.append("%d answered id(s) whose row is in_flight: %s" % (
            len(open_answered), " ".join(open_answered[:10])))
    if inflight:
        problems.append("%d row(s) left in_flight after the restart" %
                        inflight)
    if inter_cost != inter_res:
        problems.append("interrupted rows cost %d nUSD but reserved %d" %
                        (inter_cost, inter_res))
    if uncharged:
        problems.append("%d interrupted row(s) with no reservation or not "
                        "charged exactly their reservation" % uncharged)
    if unforwarded:
        problems.append("%d call(s) the provider received without a row: "
                        "%s" % (len(unforwarded), " ".join(unforwarded[:10])))
    if strangers:
        problems.append("%d row(s) for no call the provider received: %s" % (
            len(strangers), " ".join(strangers[:10])))
    if integrity != "ok":
        problems.append("integrity_check: %s" % integrity)
    facts = {"rows": len(rows), "interrupted": inter_n,
             "interrupted_nusd": inter_cost, "missing": len(missing),
             "by_status": by_status}
    return facts, problems


def run_round(args, k, base):
    work = tempfile.mkdtemp(prefix="crashloop-%02d-" % k, dir=base)
    t_start = time.monotonic()
    procs = []
    res = {"round": k, "work": work}
    problems = []
    try:
        fp = tglib.Fakeprov(work)
        procs.append(fp)
        cfg = config_text(fp.port, args.durability)
        tg = tglib.Tollgate(work, cfg, name="tollgate")
        procs.append(tg)
        prefix = "cl%02d" % k
        client_ids = args.ids == "client"
        client = Client(tg.port, args.rate, args.seconds, args.conns,
                        args.seed * 1000 + k, prefix, client_ids)
        cpu0 = time.process_time()
        t_run = time.monotonic()
        asyncio.run(client.run(lambda: os.kill(tg.pid, signal.SIGKILL)))
        cpu = time.process_time() - cpu0
        tg.wait(10)
        if tg.returncode != -signal.SIGKILL:
            problems.append("tollgate was not killed by SIGKILL (exit %s)" %
                            tg.returncode)
        tg.kill()

        reqs = client.reqs
        # The ledger's id of each call answered: the client's own, or the
        # one tollgate made and answered with.
        answered = {(r.rid if client_ids else r.tid) for r in reqs
                    if r.outcome == "answered"}
        unknown = sum(1 for r in reqs if r.outcome != "answered")
        # Sent before the kill and not answered whole: the calls the kill
        # cut off. The rest of the unknown went out afterwards, on a
        # connection the kill had closed or to a port no longer listening.
        open_at_kill = sum(1 for r in reqs if r.outcome != "answered" and
                           r.sent is not None and
                           r.sent < client.killed_at)
        before = [r for r in reqs if r.due < client.killed_at]
        late = [r.sent - r.due for r in before if r.sent is not None]
        span = client.killed_at - client.t0
        achieved = len([r for r in before if r.sent is not None and
                        r.sent < client.killed_at]) / span if span else 0
        res.update({
            "sent": len(reqs), "answered": len(answered),
            "answered_streams": sum(1 for r in reqs if r.stream and
                                    r.outcome == "answered"),
            "answered_non2xx": sum(1 for r in reqs if r.outcome ==
                                   "answered" and not
                                   200 <= r.status < 300),
            "unknown": unknown, "open_at_kill": open_at_kill,
            "achieved_rate": achieved, "lag_p99_ms": pct(late, 99) * 1e3,
            "client_cpu": cpu / (time.monotonic() - t_run)})
        with open(os.path.join(work, "answered.txt"), "w") as f:
            f.write("".join(i + "\n" for i in sorted(answered)))

        # The restart: recovery turns in_flight rows into interrupted ones.
        tg2 = tglib.Tollgate(work, cfg, name="restart", wait=False)
        procs.append(tg2)
        tg2.wait_listening()
        aport = admin_port(tg2)
        if aport is None or not healthz(aport):
            problems.append("tollgate did not serve /healthz after the "
                            "restart")
        rc = tg2.stop(timeout=30)
        if rc != 0:
            problems.append("tollgate exited %s on SIGTERM after the restart"
                            % rc)
        forwarded = provider_ids(fp, prefix + "-")
        fp.signal(signal.SIGTERM)
        fp.wait(5)
        fp.kill()
        res["forwarded"] = len(forwarded)
        facts, more = check_ledger(
            os.path.join(work, "data", "ledger.db"), answered,
            {r.rid for r in reqs}, forwarded)
        res.update(facts)
        problems += more
    except AssertionError as e:
        problems.append(str(e).splitlines()[0])
    finally:
        for p in procs:
            p.kill()
    res["problems"] = problems
    res["wall_s"] = time.monotonic() - t_start
    if problems and args.keep:
        log("round %d: kept %s" % (k, work))
    else:
        shutil.rmtree(work, True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="requests per second (open loop)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="load per round; the kill comes at 70 %%")
    ap.add_argument("--durability", choices=("process", "power"),
                    default="process")
    ap.add_argument("--conns", type=int, default=64,
                    help="keep-alive connections of the client")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ids", choices=("tollgate", "client"),
                    default="tollgate",
                    help="whose request ids: tollgate's own (the calls' fast "
                    "path) or the client's X-Tollgate-Request-Id (each "
                    "checked against the ledger before it is reserved)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work dir of a failed round")
    ap.add_argument("--build", default=os.environ.get(
        "BENCH_BUILD", os.path.join(SOURCE, "build-bench")))
    args = ap.parse_args()
    if args.rounds < 1 or args.rate <= 0 or args.seconds <= 0 or \
            args.conns < 1:
        ap.error("--rounds, --rate, --seconds and --conns must be positive")
    build = os.path.abspath(args.build)
    tglib.TOLLGATE_BIN = os.path.join(build, "tollgate")
    tglib.FAKEPROV_BIN = os.path.join(build, "tests", "fakeprov")
    for b in (tglib.TOLLGATE_BIN, tglib.FAKEPROV_BIN):
        if not os.access(b, os.X_OK):
            sys.exit("crashloop: %s is missing (run make bench-build)" % b)
    base = tempfile.mkdtemp(prefix="crashloop-")
    log("%d rounds, %g req/s for %g s, kill -9 at %d %%, durability %s, "
        "%d connections, %s request ids" % (
            args.rounds, args.rate, args.seconds, KILL_AT * 100,
            args.durability, args.conns, args.ids))
    t0 = time.monotonic()
    results = []
    try:
        for k in range(1, args.rounds + 1):
            r = run_round(args, k, base)
            results.append(r)
            print("round %2d: %s answered %d (%d streams, %d non-2xx), "
                  "unknown %d (%d open at the kill), forwarded %d, rows %d, "
                  "interrupted %d, missing %d; client %.0f req/s, lag p99 "
                  "%.1f ms, cpu %.0f %%; %.1f s%s" % (
                      k, "FAIL" if r["problems"] else "ok",
                      r.get("answered", 0), r.get("answered_streams", 0),
                      r.get("answered_non2xx", 0), r.get("unknown", 0),
                      r.get("open_at_kill", 0), r.get("forwarded", 0),
                      r.get("rows", 0), r.get("interrupted", 0),
                      r.get("missing", 0), r.get("achieved_rate", 0),
                      r.get("lag_p99_ms", 0), r.get("client_cpu", 0) * 100,
                      r["wall_s"],
                      "".join("\n    " + p for p in r["problems"])),
                  flush=True)
            if r.get("achieved_rate", args.rate) < 0.9 * args.rate:
                log("round %d: the client sent only %.0f of %g req/s "
                    "before the kill" % (k, r["achieved_rate"], args.rate))
            if r.get("open_at_kill", 1) == 0:
                # Nothing was running at the kill: the round proved only
                # that settled calls survive.
                log("round %d: no call was in flight at the kill" % k)
    finally:
        shutil.rmtree(base, True) if not any(
            r["problems"] for r in results) or not args.keep else None
    failed = [r["round"] for r in results if r["problems"]]
    total = time.monotonic() - t0
    print("crashloop: %d of %d rounds passed (durability %s, %s ids), %d "
          "answered, %d interrupted, %d missing, %d unknown; %.0f s" % (
              len(results) - len(failed), len(results), args.durability,
              args.ids,
              sum(r.get("answered", 0) for r in results),
              sum(r.get("interrupted", 0) for r in results),
              sum(r.get("missing", 0) for r in results),
              sum(r.get("unknown", 0) for r in results), total))
    if failed:
        print("crashloop: failed rounds: %s" %
              " ".join(str(k) for k in failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
