#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The fleet's budget leases at scale: up to thousands of simulated
instances against one real redis-server, on a virtual clock.

  python3 bench/fleet_sim.py                 # the full matrix (~1.5 minutes)
  python3 bench/fleet_sim.py --quick         # ~15 s, exit 1 on an overshoot
  python3 bench/fleet_sim.py --instances 1000 --lease-usd 0.10 --scenario drain

Each simulated instance is one budget entry of one tollgate, following the
rules of src/fleet/lease.c (when a sync is due and what it asks for: first
sync, short lease, report every second, renew past half the TTL, give the
lease back after 5 s idle, headroom from the last 10 s of spend) and the
admission of src/policy/admit.c and lease.c (a call fits when its worst
case fits the lease less what is unreported and in flight, and the cap
less the fleet's spend; a short lease makes it wait up to fleet.wait for a
top-up). The lease script is the one tollgate runs: its text is read from
src/fleet/scripts.c at start, loaded once, and run with EVALSHA. Time is
virtual (the `now` every script run gets is the simulated clock, ticking
every 100 ms like tollgate's fleet timer), so an hour runs in seconds; the
Redis round trips are real (the syncs due in one tick go in one pipeline).

Demand is skewed (Zipf over the instances: a few busy, most nearly idle);
every call costs exactly its worst case. Instances crash at random holding
their leases; some come back, rebuild their window's spend from their
ledger (here: what they had settled, plus the calls in flight when they
died, which the provider may have billed) and reconcile as tollgate does.

Scenarios:
  steady  a cap far above the spend: Redis commands per call and per
          second, Redis CPU per sync.
  drain   a $50 cap (--cap) spent by demand well above it: how much of the
          cap the fleet manages to spend, how long it takes, and where the
          rest sits (leases held by idle, busy or dead instances).

Invariants checked on every run (exit 1 if any fails): no call is admitted
beyond its instance's lease (as Redis last granted it, before its local
expiry), the worst cases admitted fleet-wide never exceed the cap, and at
the end Redis's `spent` is at least what was really spent.

Python 3 standard library only; redis-server from PATH or $REDIS_SERVER_BIN.
"""

import argparse
import heapq
import json
import os
import random
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
import redislib  # noqa: E402  (the suite's redis-server fixture)

NUSD = 1_000_000_000  # nano-USD per USD, as tollgate counts money

# src/fleet/lease.c and fleet.c
TICK_MS = 100         # FLEET_TICK_MS: the pass over every entry
RETRY_MS = 100        # LEASE_RETRY_MS
REPORT_MS = 1000      # LEASE_REPORT_MS
IDLE_MS = 5000        # LEASE_IDLE_MS
DEMAND_MS = 10000     # LEASE_DEMAND_MS
MARGIN_MS = 1000      # LEASE_MARGIN_MS
KEEP_MS = 24 * 3600 * 1000


def log(*a):
    print("fleet_sim:", *a, file=sys.stderr, flush=True)


def lease_script(path=None):
    """The text of lease_lua[] in src/fleet/scripts.c: its C string
    literals, concatenated and unescaped, comments between them skipped."""
    path = path or os.path.join(SOURCE, "src", "fleet", "scripts.c")
    with open(path) as f:
        src = f.read()
    m = re.search(r"static const char lease_lua\[\]\s*=", src)
    if m is None:
        raise SystemExit("fleet_sim: no lease_lua[] in %s" % path)
    i, out = m.end(), []
    esc = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "'": "'"}
    while True:
        while src[i].isspace():
            i += 1
        if src.startswith("/*", i):
            i = src.index("*/", i) + 2
            continue
        if src[i] == ";":
            break
        if src[i] != '"':
            raise SystemExit("fleet_sim: cannot read lease_lua[] at %r" %
                             src[i:i + 40])
        i += 1
        while src[i] != '"':
            if src[i] == "\\":
                if src[i + 1] not in esc:
                    raise SystemExit("fleet_sim: escape \\%s in lease_lua[]"
                                     % src[i + 1])
                out.append(esc[src[i + 1]])
                i += 2
            else:
                out.append(src[i])
                i += 1
        i += 1
    return "".join(out)


class Overshoot(Exception):
    pass


class Inst:
    """One instance's budget entry: struct policy_lease and the entry's
    reservations, plus the simulation's own bookkeeping."""

    __slots__ = ("idx", "name", "rate", "alive", "has_entry", "seq",
                 "lease", "acked", "cum", "fspent", "fleased", "until",
                 "want", "used", "worst", "short_at", "demand", "demand_cum",
                 "demand_at", "synced", "holders", "starve", "reserved",
                 "waiting",
                 "gen", "ledger", "calls", "syncs", "last_call")

    def __init__(self, idx, rate, now):
        self.idx = idx
        self.name = "pod-%d" % idx
        self.rate = rate
        self.alive = True
        self.gen = 0
        self.ledger = 0   # what its ledger says it spent in the window
        self.calls = 0
        self.syncs = 0
        self.start(now)

    def start(self, now):
        """A (re)start: the entry rebuilt from the ledger (lease_attach),
        sequence numbers from the start time (fleet.c)."""
        self.gen += 1
        self.seq = (now + 1) * 1000 + self.gen  # above every earlier one
        self.has_entry = self.ledger > 0
        self.lease = self.acked = self.fspent = self.fleased = 0
        self.cum = self.ledger
        self.until = self.want = self.used = self.worst = 0
        self.short_at = self.demand = self.demand_cum = self.demand_at = 0
        self.synced = self.holders = self.starve = 0
        self.reserved = 0
        self.waiting = []
        self.last_call = -10 ** 12


class Sim:
    def __init__(self, redis, sha, a, inst_n, lease_usd, scenario, seed):
        self.r = redis
        self.sha = sha
        self.a = a
        self.scenario = scenario
        self.rng = random.Random(seed)
        self.n = inst_n
        self.lease_nusd = int(round(lease_usd * NUSD))
        self.lease_usd = lease_usd
        self.cap = int(round((a.cap if scenario == "drain" else 1e6) * NUSD))
        self.ttl = a.ttl * 1000
        self.wait_ms = int(a.wait * 1000)
        self.t0 = (int(time.time() * 1000) // 1000) * 1000
        self.now = self.t0
        self.window_end = self.t0 + 24 * 3600 * 1000
        key = "sim:%s:n%d:l%s:%d" % (scenario, inst_n, lease_usd, seed)
        self.kb = "tollgate:b:" + key
        self.ke = "tollgate:e:" + key
        rate = a.rate if scenario == "steady" else a.drain_rate
        w = [1.0 / (k + 1) ** a.zipf for k in range(inst_n)]
        tot = sum(w)
        self.insts = [Inst(i, rate * w[i] / tot, self.t0)
                      for i in range(inst_n)]
        self.arrivals = []
        for x in self.insts:
            if x.rate > 0:
                heapq.heappush(self.arrivals, (
                    self.t0 + int(self.rng.expovariate(x.rate) * 1000),
                    x.idx))
        self.settles = []   # (end ms, idx, gen, cost)
        self.restarts = []  # (at ms, idx)
        self.active = set()
        # Figures.
        self.admitted_total = 0  # Σ worst cases admitted (== actual)
        self.spent_total = 0     # Σ really spent (settled, or billed
        # when the instance died with the call in flight)
        self.st = {"calls": 0, "admitted": 0, "waited": 0,
                   "admitted_after_wait": 0, "refused_cap": 0,
                   "refused_lease": 0, "lost_in_crash": 0, "syncs": 0,
                   "short_grants": 0, "crashes": 0, "returns": 0,
                   "wait_ms_sum": 0, "wait_ms_max": 0, "sync_errors": 0}
        self.first_error = None
        self.progress = []  # (ms, admitted, calls) per tick
        self.sync_t = []        # virtual ms of each tick's syncs, counts
        self.timeline = []
        self.first_refusal = None
        self.marks = {}

    # -- the instance's side ----------------------------------------------

    def admit(self, x, worst, now):
        """src/policy/admit.c check_caps for one capped fleet entry:
        'ok' (reserved), 'wait' (only the lease is short) or 'cap'."""
        x.used = now
        x.worst = worst
        x.has_entry = True
        unrep = x.cum - x.acked
        cap_room = self.cap - (x.fspent + unrep) - x.reserved
        held = x.lease if x.until > now else 0
        lease_room = held - unrep - x.reserved
        room = min(cap_room, lease_room)
        if worst <= room:
            x.reserved += worst
            return "ok"
        if lease_room < cap_room and worst <= cap_room:
            need = x.reserved + unrep + worst
            if need > x.want:
                x.want = need
            return "wait"
        return "cap"

    def headroom(self, x):
        head = x.demand
        now_period = x.cum - x.demand_cum
        if now_period > head:
            head = now_period
        if x.worst > 0 and 2 * x.worst > head:
            head = 2 * x.worst
        return min(head, self.lease_nusd)

    def pass_one(self, x, now):
        """lease.c pass_one: the sync due, as (want, reserved), or None."""
        ttl = self.ttl
        unrep = x.cum - x.acked
        ended = self.window_end <= now
        if now - x.demand_at >= DEMAND_MS:
            x.demand = x.cum - x.demand_cum
            x.demand_cum = x.cum
            x.demand_at = now
        starving = now < x.starve  # another instance is short
        idle = now - x.used >= IDLE_MS or starving
        head = 0 if idle else self.headroom(x)
        want = x.reserved + unrep + head
        if x.want > want:
            want = x.want
        due = ((x.want > 0 and (x.short_at == 0 or
                                now - x.short_at >= RETRY_MS)) or
               x.synced == 0 or
               (unrep > 0 and now - x.synced >= REPORT_MS) or
               (x.lease > 0 and x.until - now < ttl // 2) or
               (idle and x.lease > x.reserved + unrep and
                now - x.synced >= (RETRY_MS if starving else REPORT_MS)))
        assert not ended
        return (want, x.reserved) if due else None

    def quiet(self, x):
        """Nothing can be due until a call comes: the pass may skip it
        (the demand period is caught up when it comes back)."""
        return (x.synced > 0 and x.lease == 0 and x.cum == x.acked and
                x.want == 0 and x.reserved == 0 and not x.waiting)

    def catch_up(self, x, now):
        """The demand periods the pass skipped while x was quiet: its
        spend did not move, so the last one ended with what it had."""
        if now - x.demand_at >= 2 * DEMAND_MS:
            x.demand = 0
            x.demand_cum = x.cum
            x.demand_at = now - (now - x.demand_at) % DEMAND_MS

    def sync_cmd(self, x, reserved, want, now):
        if x.cum < x.acked:
            x.acked = x.cum
        x.seq += 1
        x.want = 0
        x.syncs += 1
        # lease.c sync_send: what the sync gives back is gone at once.
        if want < x.lease:
            x.lease = max(want, reserved)
        return ["EVALSHA", self.sha, "2", self.kb, self.ke, x.name, x.seq,
                now, self.ttl, self.cap, x.cum, max(reserved, 0), want,
                self.window_end + KEEP_MS]

    def answer(self, x, rep, sent, want):
        """lease.c sync_cb and policy/lease.c policy_lease_answer."""
        if isinstance(rep, list) and len(rep) != 8:
            # The script's answer changed: the rules mirrored here (from
            # src/fleet/lease.c) no longer match it.
            raise SystemExit("fleet_sim: the lease script answers %d "
                             "values, this simulation reads 8: update it "
                             "with src/fleet/lease.c" % len(rep))
        if isinstance(rep, Exception):
            # tollgate logs it and leaves the entry as it was: the sync is
            # due again (a script error is not a lost connection).
            self.st["sync_errors"] += 1
            if self.first_error is None:
                self.first_error = "%s at t=%.1f s: %s" % (
                    x.name, (self.now - self.t0) / 1e3, rep)
            return
        lease, spent, leased, acked, _, holders, starve, _seq = rep
        x.lease = lease
        x.fspent = spent
        x.fleased = leased
        if x.acked < acked <= x.cum:
            x.acked = acked
        x.synced = self.now
        x.holders = holders
        x.starve = starve
        x.until = sent + self.ttl - min(MARGIN_MS, self.ttl // 4)
        if want > lease:
            x.short_at = self.now
            self.st["short_grants"] += 1
        else:
            x.short_at = 0

    # -- the simulation -----------------------------------------------------

    def cost(self):
        return self.rng.randint(int(self.a.cost_min * NUSD),
                                int(self.a.cost_max * NUSD))

    def start_call(self, x, worst, dur, now):
        x.calls += 1
        self.st["admitted"] += 1
        self.admitted_total += worst
        if self.admitted_total > self.cap:
            raise Overshoot("admitted %d nUSD of worst cases against a cap "
                            "of %d at t=%.1f s" % (
                                self.admitted_total, self.cap,
                                (now - self.t0) / 1e3))
        # The admission's own check, against the lease as Redis granted it.
        unrep = x.cum - x.acked
        if x.until <= now or x.reserved + unrep > x.lease:
            raise Overshoot("%s admitted beyond its lease: lease %d until "
                            "%d, in flight %d, unreported %d, now %d" % (
                                x.name, x.lease, x.until, x.reserved,
                                unrep, now))
        heapq.heappush(self.settles, (now + dur, x.idx, x.gen, worst))

    def refuse(self, kind, now):
        self.st[kind] += 1
        if self.first_refusal is None:
            self.first_refusal = now

    def arrive(self, x, now):
        self.st["calls"] += 1
        x.last_call = now
        if x.idx not in self.active:
            self.catch_up(x, now)
            self.active.add(x.idx)
        worst = self.cost()
        dur = self.rng.randint(int(self.a.dur_min * 1000),
                               int(self.a.dur_max * 1000))
        v = self.admit(x, worst, now)
        if v == "ok":
            self.start_call(x, worst, dur, now)
        elif v == "wait":
            self.st["waited"] += 1
            x.waiting.append([worst, dur, now, now + self.wait_ms])
        else:
            self.refuse("refused_cap", now)

    def wake(self, x, now, timed_out):
        """fleet_wake: each waiting call runs its admission again; past
        its deadline, a call that still does not fit is refused."""
        still = []
        for c in x.waiting:
            worst, dur, since, deadline = c
            if timed_out and deadline > now:
                still.append(c)
                continue
            v = self.admit(x, worst, now)
            if v == "ok":
                self.st["admitted_after_wait"] += 1
                self.st["wait_ms_sum"] += now - since
                self.st["wait_ms_max"] = max(self.st["wait_ms_max"],
                                             now - since)
                self.start_call(x, worst, dur, now)
            elif v == "wait" and now < deadline:
                still.append(c)
            else:
                self.refuse("refused_lease" if v == "wait" else
                            "refused_cap", now)
        x.waiting = still

    def crash(self, x, now):
        """x dies holding its lease: the calls in flight may have been
        billed (its ledger has them as spent at their worst case); the
        calls waiting are lost; Redis hears nothing more."""
        self.st["crashes"] += 1
        x.alive = False
        self.st["lost_in_crash"] += len(x.waiting)
        x.waiting = []
        billed = 0
        keep = []
        for s in self.settles:
            if s[1] == x.idx and s[2] == x.gen:
                billed += s[3]
            else:
                keep.append(s)
        heapq.heapify(keep)
        self.settles = keep
        self.spent_total += billed
        x.ledger = x.cum + billed
        self.active.discard(x.idx)
        if self.rng.random() < self.a.come_back:
            heapq.heappush(self.restarts, (
                now + self.rng.randint(5000, 120000), x.idx))

    def restart(self, x, now):
        self.st["returns"] += 1
        x.alive = True
        x.start(now)
        if x.has_entry:
            self.active.add(x.idx)
        x.last_call = now

    def tick(self):
        now = self.now = self.now + TICK_MS
        # Calls that ended settle (lease_settle).
        while self.settles and self.settles[0][0] <= now:
            _, i, gen, c = heapq.heappop(self.settles)
            x = self.insts[i]
            x.reserved -= c
            x.cum += c
            x.ledger = x.cum
            self.spent_total += c
        while self.restarts and self.restarts[0][0] <= now:
            _, i = heapq.heappop(self.restarts)
            self.restart(self.insts[i], now)
        # Crashes: a Poisson process over the instances alive.
        lam = self.a.crash_per_hour * self.n * TICK_MS / 3.6e6
        if lam > 0 and self.rng.random() < lam:
            x = self.insts[self.rng.randrange(self.n)]
            if x.alive:
                self.crash(x, now)
        # New calls; the fleet_wait of a short one asks at once (the
        # pass below runs in the same instant).
        while self.arrivals and self.arrivals[0][0] <= now:
            t, i = heapq.heappop(self.arrivals)
            x = self.insts[i]
            if x.alive:
                self.arrive(x, now)
            heapq.heappush(self.arrivals, (
                t + max(1, int(self.rng.expovariate(x.rate) * 1000)), i))
        # Calls past their deadline (fleet_wake(1) at the tick).
        for i in list(self.active):
            x = self.insts[i]
            if x.waiting:
                self.wake(x, now, True)
        # The pass: every sync due, in one pipeline.
        cmds, who = [], []
        for i in list(self.active):
            x = self.insts[i]
            if not x.has_entry:
                continue
            due = self.pass_one(x, now)
            if due is not None:
                want, res = due
                cmds.append(self.sync_cmd(x, res, want, now))
                who.append((x, want))
            elif self.quiet(x):
                self.active.discard(i)
        self.progress.append((now, self.st["admitted"], self.st["calls"]))
        if cmds:
            reps = self.r.pipeline(*cmds)
            self.st["syncs"] += len(cmds)
            self.sync_t.append((now, len(cmds)))
            for (x, want), rep in zip(who, reps):
                self.answer(x, rep, now, want)
            for x, _ in who:
                if x.waiting:
                    self.wake(x, now, False)

    def adm_at(self, t):
        """Calls admitted by virtual time t."""
        last = 0
        for ms, adm, _ in self.progress:
            if ms > t:
                break
            last = adm
        return last

    def calls_after(self, t):
        before = 0
        for ms, _, calls in self.progress:
            if ms > t:
                break
            before = calls
        return self.st["calls"] - before

    def sample(self):
        """Where the cap sits now, from Redis's own hash."""
        h = self.r.cmd("HGETALL", self.kb) or []
        h = dict(zip(h[0::2], h[1::2]))
        idle = busy = dead = 0
        for x in self.insts:
            lv = int(h.get("l:" + x.name, 0))
            if lv <= 0:
                continue
            if not x.alive:
                dead += lv
            elif self.now - x.used >= IDLE_MS:
                idle += lv
            else:
                busy += lv
        charged = sum(int(v) for k, v in h.items() if k.startswith("c:"))
        return {"t_s": (self.now - self.t0) / 1e3,
                "admitted_usd": self.admitted_total / NUSD,
                "spent_usd": int(h.get("spent", 0)) / NUSD,
                "leased_usd": int(h.get("leased", 0)) / NUSD,
                "idle_leases_usd": idle / NUSD,
                "busy_leases_usd": busy / NUSD,
                "dead_leases_usd": dead / NUSD,
                "charged_usd": charged / NUSD,
                "holders": sum(1 for k, v in h.items()
                               if k.startswith("l:") and int(v) > 0)}

    def leave(self):
        """Shutdown of the instances alive (lease_leave: report, hold
        nothing), then one more sync a TTL later so the leases of the dead
        have expired and are charged."""
        cmds, who = [], []
        # The calls in flight end first (tollgate drains them).
        while self.settles:
            _, i, gen, c = heapq.heappop(self.settles)
            x = self.insts[i]
            x.reserved -= c
            x.cum += c
            x.ledger = x.cum
            self.spent_total += c
        for x in self.insts:
            if x.alive and x.has_entry:
                x.waiting = []
                cmds.append(self.sync_cmd(x, 0, 0, self.now))
                who.append((x, 0))
        if cmds:
            for (x, w), rep in zip(who, self.r.pipeline(*cmds)):
                self.answer(x, rep, self.now, w)
        self.now += self.ttl + 1
        probe = Inst(-1, 0, self.now)
        probe.name = "sim-probe"
        rep = self.r.cmd(*self.sync_cmd(probe, 0, 0, self.now))
        return rep

    def run(self, secs):
        cs0 = commandstats(self.r)
        cpu0 = redis_cpu(self.r)
        w0 = time.monotonic()
        end = self.t0 + int(secs * 1000)
        next_sample = self.t0
        steady_from = self.t0 + int(self.a.warmup * 1000)
        calls_at_steady = None
        while self.now < end:
            self.tick()
            if calls_at_steady is None and self.now >= steady_from:
                calls_at_steady = (self.st["admitted"], self.st["syncs"])
            if self.now >= next_sample:
                s = self.sample()
                self.timeline.append(s)
                next_sample += self.a.sample * 1000
                f = s["admitted_usd"] * NUSD / self.cap
                for m in (0.5, 0.9, 0.99, 0.999):
                    if f >= m and m not in self.marks:
                        self.marks[m] = s["t_s"]
        n_steady = self.st["syncs"] - calls_at_steady[1]
        calls_steady = self.st["admitted"] - calls_at_steady[0]
        wall = time.monotonic() - w0
        cs1 = commandstats(self.r)
        cpu1 = redis_cpu(self.r)
        final = self.sample()
        steady_secs = (self.now - steady_from) / 1e3
        end_rep = self.leave()
        spent_end = end_rep[1]
        if spent_end < self.spent_total:
            raise Overshoot("Redis counts %d nUSD spent, the instances "
                            "spent %d" % (spent_end, self.spent_total))
        ev = cs1.get("evalsha", (0, 0))[0] - cs0.get("evalsha", (0, 0))[0]
        inner = sum(v[0] - cs0.get(k, (0, 0))[0] for k, v in cs1.items()
                    if k not in ("evalsha", "info", "hgetall", "script",
                                 "ping"))
        st = self.st
        out = {
            "scenario": self.scenario, "instances": self.n,
            "lease_usd": self.lease_usd, "cap_usd": self.cap / NUSD,
            "virtual_s": secs, "wall_s": round(wall, 2),
            "calls": st["calls"], "admitted": st["admitted"],
            "waited": st["waited"],
            "admitted_after_wait": st["admitted_after_wait"],
            "wait_ms_mean": (st["wait_ms_sum"] /
                             max(1, st["admitted_after_wait"])),
            "wait_ms_max": st["wait_ms_max"],
            "refused_cap": st["refused_cap"],
            "refused_lease": st["refused_lease"],
            "crashes": st["crashes"], "returns": st["returns"],
            "syncs": st["syncs"], "short_grants": st["short_grants"],
            "sync_errors": st["sync_errors"], "first_error": self.first_error,
            "syncs_per_s": n_steady / max(1e-9, steady_secs),
            "syncs_per_call": n_steady / max(1, calls_steady),
            "calls_per_s": calls_steady / max(1e-9, steady_secs),
            "redis_cmds_per_sync": (ev + inner) / max(1, ev),
            "redis_us_per_sync": ((cpu1 - cpu0) * 1e6 / max(1, ev)),
            "evalsha_us": (cs1.get("evalsha", (0, 0))[1] -
                           cs0.get("evalsha", (0, 0))[1]) / max(1, ev),
            "admitted_usd": self.admitted_total / NUSD,
            "spent_usd": self.spent_total / NUSD,
            "redis_spent_usd_end": spent_end / NUSD,
            "overshoot_usd": max(0, self.admitted_total - self.cap) / NUSD,
            "final": final,
        }
        if self.scenario == "drain":
            out["t_to_pct"] = {str(int(m * 1000) / 10): t
                               for m, t in sorted(self.marks.items())}
            out["first_refusal_s"] = (None if self.first_refusal is None
                                      else (self.first_refusal - self.t0)
                                      / 1e3)
            out["spent_fraction"] = self.admitted_total / self.cap
            # Redis's load while the cap is spent, and once it is (the
            # last third of the run: calls keep coming and are refused).
            t99 = self.marks.get(0.99)
            if t99 is not None:
                upto = self.t0 + int(t99 * 1000)
                n = sum(k for t, k in self.sync_t if t <= upto)
                out["syncs_per_call_spending"] = n / max(1, self.adm_at(upto))
            tail = self.t0 + int(secs * 1000 * 2 / 3)
            n = sum(k for t, k in self.sync_t if t > tail)
            out["drained_syncs_per_s"] = n / (secs / 3)
            out["drained_calls_per_s"] = self.calls_after(tail) / (secs / 3)
            out["timeline"] = self.timeline
        return out


def commandstats(r):
    """{command: (calls, usec)} from INFO commandstats."""
    out = {}
    for line in r.cmd("INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([\w|]+):calls=(\d+),usec=(\d+)", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def redis_cpu(r):
    cpu = 0.0
    for line in r.cmd("INFO", "cpu").splitlines():
        k, _, v = line.partition(":")
        if k in ("used_cpu_sys", "used_cpu_user"):
            cpu += float(v)
    return cpu


def row_text(o):
    if o["scenario"] == "steady":
        return ("steady n=%-5d lease=$%.2f  %7.1f calls/s  %7.1f syncs/s  "
                "%.3f syncs/call  %.0f µs Redis CPU/sync  refused %d  "
                "crashes %d (%d back)  overshoot $%.2f" % (
                    o["instances"], o["lease_usd"], o["calls_per_s"],
                    o["syncs_per_s"], o["syncs_per_call"],
                    o["redis_us_per_sync"],
                    o["refused_cap"] + o["refused_lease"], o["crashes"],
                    o["returns"], o["overshoot_usd"]))
    t = o["t_to_pct"]
    f = o["final"]
    return ("drain  n=%-5d lease=$%.2f  spent %.1f%% of $%.0f  t50 %s t90 %s "
            "t99 %s s  first refusal %s s  at end: idle leases $%.2f, busy "
            "$%.2f, dead $%.2f, charged $%.2f  %.3f syncs/call while "
            "spending, %.0f syncs/s for %.0f calls/s once drained  "
            "overshoot $%.2f" % (
                o["instances"], o["lease_usd"], 100 * o["spent_fraction"],
                o["cap_usd"], t.get("50.0", "–"), t.get("90.0", "–"),
                t.get("99.0", "–"), o["first_refusal_s"],
                f["idle_leases_usd"], f["busy_leases_usd"],
                f["dead_leases_usd"], f["charged_usd"],
                o.get("syncs_per_call_spending", float("nan")),
                o["drained_syncs_per_s"], o["drained_calls_per_s"],
                o["overshoot_usd"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="about 15 s: 100 instances, both scenarios, "
                    "lease_usd 0.10 and 1.00; exit 1 on an overshoot")
    ap.add_argument("--instances", type=int, action="append",
                    help="fleet sizes (default 10, 100, 1000)")
    ap.add_argument("--lease-usd", type=float, action="append",
                    help="lease_usd values (default 0.10, 1.00)")
    ap.add_argument("--scenario", action="append",
                    choices=["steady", "drain"])
    ap.add_argument("--secs", type=float, default=600,
                    help="virtual seconds per run (default 600)")
    ap.add_argument("--warmup", type=float, default=60,
                    help="virtual seconds before the steady-state figures")
    ap.add_argument("--rate", type=float, default=100.0,
                    help="fleet-wide calls/s in the steady scenario")
    ap.add_argument("--drain-rate", type=float, default=50.0,
                    help="fleet-wide calls/s in the drain scenario")
    ap.add_argument("--cap", type=float, default=50.0,
                    help="the drain scenario's cap in USD (default 50)")
    ap.add_argument("--zipf", type=float, default=1.1,
                    help="skew of the demand over the instances")
    ap.add_argument("--cost-min", type=float, default=0.002)
    ap.add_argument("--cost-max", type=float, default=0.02)
    ap.add_argument("--dur-min", type=float, default=0.5)
    ap.add_argument("--dur-max", type=float, default=5.0)
    ap.add_argument("--ttl", type=int, default=30, help="lease_ttl, s")
    ap.add_argument("--wait", type=float, default=1.0, help="fleet.wait, s")
    ap.add_argument("--crash-per-hour", type=float, default=0.5,
                    help="crashes per instance per hour")
    ap.add_argument("--come-back", type=float, default=0.5,
                    help="the share of crashed instances that restart")
    ap.add_argument("--sample", type=float, default=5.0,
                    help="virtual seconds between samples of Redis")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write every run's JSON here too")
    a = ap.parse_args()
    if a.quick:
        a.instances = a.instances or [100]
        a.secs = 150
        a.warmup = 30
    sizes = a.instances or [10, 100, 1000]
    leases = a.lease_usd or [0.10, 1.00]
    scen = a.scenario or ["steady", "drain"]

    script = lease_script()
    tmp = tempfile.mkdtemp(prefix="tg-fleet-sim-")
    server = redislib.RedisServer(tmp)
    results, failed = [], []
    try:
        r = server.client(timeout=30)
        sha = r.cmd("SCRIPT", "LOAD", script)
        for sc in scen:
            for n in sizes:
                for lu in leases:
                    sim = Sim(r, sha, a, n, lu, sc, a.seed)
                    try:
                        o = sim.run(a.secs)
                    except Overshoot as e:
                        log("OVERSHOOT %s n=%d lease=%s: %s" % (sc, n, lu, e))
                        failed.append(str(e))
                        continue
                    results.append(o)
                    log(row_text(o) + "  (%.1f s wall)" % o["wall_s"])
                    print(json.dumps({k: v for k, v in o.items()
                                      if k != "timeline"}, sort_keys=True),
                          flush=True)
        r.close()
    finally:
        server.kill()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "results": results,
                       "failures": failed}, f, indent=1, sort_keys=True)
    print()
    for o in results:
        print(row_text(o))
    if failed:
        print("FAILED: %d run(s) overshot" % len(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
