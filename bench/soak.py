#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tollgate's soak: a long, bounded, mixed load, with everything sampled.

  python3 bench/soak.py [--minutes 30] [--build DIR] [--out DIR] [--doc FILE]
  make soak                       # 30 minutes, the plain tree
  make soak SOAK_MINUTES=5 SOAK_BUILD=build-asan   # the instrumented variant

One tollgate and one fakeprov on 127.0.0.1, and an asyncio client in this
process that keeps up, for the whole run:
  - about 40 short calls a second over keep-alive connections, across
    OpenAI chat, embeddings and Responses, Anthropic messages and Gemini
    generateContent, 3 % of them answered 500 or 429 by the provider;
  - 16 concurrent streams (OpenAI chat without include_usage, so tollgate
    injects it; Anthropic; Gemini; Responses), 10 to 80 events paced 5 to
    25 ms apart; 5 % of them dropped by the client mid-stream, 2 % stalled
    by the provider (cut by the upstream's idle_timeout), 1 % reset and
    1 % ended by the provider's in-stream error event;
  - calls of an agent class with a tiny daily cap and of one with a
    requests-per-minute limit, so refusals are part of the mix;
  - a kill on one team posted every 20 s and lifted 5 s later (its streams
    in flight are ended), and a reload every 15 s that alternates two
    policy sets (SIGHUP and POST /v1/reload in turn).
Every 10 s it samples tollgate's RSS, descriptors, threads, the ledger's
size (database and WAL), its row count and the calls in flight.

Verdict (exit 1 if any fails):
  - after the warm-up (the first fifth; at least 2 minutes, or a third of
    a short run) RSS and the descriptor count do not grow: the median of
    the last third of the samples is within 4 MiB (RSS) and 16
    (descriptors) of the median of the first third after warm-up (under
    ASan, whose quarantine holds freed memory, RSS is only reported);
  - the WAL stays under 32 MiB (the checkpointer keeps it near 24 MiB);
  - nothing lost: every call fakeprov received has exactly one ledger row
    (matched by the request id the client set and fakeprov recorded), no
    row is left in flight after the stop, PRAGMA integrity_check is ok;
  - the counters equal the ledger: a `total` budget covering every call
    reports, live and again after a restart, exactly SUM(cost_nusd);
  - tollgate exits 0 on SIGTERM and logged no crash or sanitizer report.

Output: --out (default bench/results/soak-<UTC date>/) gets samples.csv,
summary.json and the process logs; --doc replaces the block between
`<!-- soak:begin -->` and `<!-- soak:end -->` in that file with the table.
Python 3 standard library only.
"""

import argparse
import asyncio
import datetime
import json
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
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))

import tglib  # noqa: E402  (the integration harness: processes, config)

TOKEN = "soak-admin-token-0123456789abcdef"
SAMPLE_EVERY = 10.0


def asan_build(binary):
    """Whether binary is built with AddressSanitizer (links libasan)."""
    try:
        out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"libasan" in out


def log(*a):
    print("soak:", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The configuration: two policy sets the reloads alternate between.

def config_text(up_port, variant):
    cap_team = "500" if variant == 0 else "400"
    rpm = 30 if variant == 0 else 20
    policies = [
        # Every call: its spent must equal the ledger's sum at the end.
        {"name": "everything", "window": "total", "hard_cap_usd": "100000"},
        {"name": "team-daily", "match": {"team": "*"}, "per": ["team"],
         "window": "day", "hard_cap_usd": cap_team,
         "alert_at_percent": 90},
        # Refused after its first few calls.
        {"name": "capped", "match": {"agent_class": "capped"},
         "window": "day", "hard_cap_usd": "0.0005"},
        {"name": "limited", "match": {"agent_class": "limited"},
         "rate_limit": {"requests_per_minute": rpm}},
    ]
    base = "http://127.0.0.1:%d" % up_port
    ups = {}
    for name, typ in (("openai", "openai"), ("anthropic", "anthropic"),
                      ("gemini", "gemini")):
        ups[name] = {"type": typ, "base_url": base, "idle_timeout": "3s",
                     "header_timeout": "10s"}
    doc = {
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0",
                  "token_env": "TOLLGATE_ADMIN_TOKEN"},
        "upstreams": ups,
        "ledger": {"path": "data/soak.db"},
        "prices": os.path.join(SOURCE, "config", "prices.yaml"),
        "policies": policies,
    }
    return tglib.to_yaml(doc)


# --------------------------------------------------------------------------
# A small HTTP/1.1 client on asyncio streams.

class HTTPError(Exception):
    pass


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


async def read_body(reader, hdrs, drop_after=None):
    """Read the body; with drop_after, stop after that many bytes (the
    caller then drops the connection). Returns (bytes read, complete)."""
    n = 0
    if "content-length" in hdrs:
        left = int(hdrs["content-length"])
        while left > 0:
            b = await reader.read(min(left, 65536))
            if not b:
                return n, False
            n += len(b)
            left -= len(b)
            if drop_after is not None and n >= drop_after:
                return n, False
        return n, True
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return n, True
            await reader.readexactly(size + 2)
            n += size
            if drop_after is not None and n >= drop_after:
                return n, False
    while True:
        b = await reader.read(65536)
        if not b:
            return n, True
        n += len(b)
        if drop_after is not None and n >= drop_after:
            return n, False


def request_bytes(port, method, path, body, headers):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % port]
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class KeepAlive:
    """One persistent connection, reopened when the server closes it."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def call(self, method, path, body, headers, timeout=30):
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(
                    "127.0.0.1", self.port)
                fresh = True
            else:
                fresh = False
            try:
                self.writer.write(request_bytes(self.port, method, path,
                                                body, headers))
                await self.writer.drain()
                status, hdrs = await asyncio.wait_for(
                    read_head(self.reader), timeout)
                n, ok = await asyncio.wait_for(
                    read_body(self.reader, hdrs), timeout)
                if hdrs.get("connection", "").lower() == "close" or not ok:
                    self.close()
                return status, hdrs, n
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                self.close()
                # A keep-alive connection the server closed while idle:
                # the request was not read, so sending it again is safe.
                if fresh or attempt:
                    raise HTTPError(str(e))
        raise HTTPError("unreachable")

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --------------------------------------------------------------------------
# What the client sends.

TEAMS = ["alpha", "beta", "gamma", "delta"]
CLASSES = ["planner", "researcher", "coder"]


class Load:
    def __init__(self, port, rng):
        self.port = port
        self.rng = rng
        self.seq = 0
        self.stats = {"sent": 0, "status": {}, "errors": 0, "dropped": 0,
                      "streams": 0, "short": 0}
        self.short_lat = []  # (t, seconds) of 200 short calls
        self.stop = False

    def next_id(self):
        self.seq += 1
        return "soak-%08d" % self.seq

    def tags(self, agent_class=None):
        r = self.rng
        return [("X-Tollgate-Team", r.choice(TEAMS)),
                ("X-Tollgate-Tenant", "t%d" % r.randrange(8)),
                ("X-Tollgate-Agent-Class", agent_class or r.choice(CLASSES)),
                ("X-Tollgate-Intent", "i%d" % r.randrange(200))]

    def shape(self, stream):
        """(method, path, body, headers) for one call."""
        r = self.rng
        rid = self.next_id()
        hdrs = [("X-Tollgate-Request-Id", rid)]
        text = "%s %s" % (rid, "lorem ipsum " * r.randrange(1, 40))
        fam = r.choice(["chat", "chat", "anthropic", "gemini", "responses"] +
                       ([] if stream else ["embeddings"]))
        if fam == "chat":
            path = "/v1/chat/completions"
            body = {"model": "gpt-4o-mini", "max_tokens": 200,
                    "messages": [{"role": "user", "content": text}]}
            if stream:
                body["stream"] = True  # no include_usage: injected
            hdrs.append(("Authorization", "Bearer sk-soak"))
        elif fam == "responses":
            path = "/v1/responses"
            body = {"model": "gpt-4o-mini", "input": text,
                    "max_output_tokens": 200}
            if stream:
                body["stream"] = True
            hdrs.append(("Authorization", "Bearer sk-soak"))
        elif fam == "embeddings":
            path = "/v1/embeddings"
            body = {"model": "text-embedding-3-small", "input": text}
            hdrs.append(("Authorization", "Bearer sk-soak"))
        elif fam == "anthropic":
            path = "/v1/messages"
            body = {"model": "claude-3-5-haiku-latest", "max_tokens": 200,
                    "messages": [{"role": "user", "content": text}]}
            if stream:
                body["stream"] = True
            hdrs += [("x-api-key", "sk-ant-soak"),
                     ("anthropic-version", "2023-06-01")]
        else:
            path = "/v1beta/models/gemini-2.5-flash:" + (
                "streamGenerateContent?alt=sse" if stream
                else "generateContent")
            body = {"contents": [{"parts": [{"text": text}]}],
                    "generationConfig": {"maxOutputTokens": 200}}
            hdrs.append(("x-goog-api-key", "soak-gemini-key"))
        return "POST", path, json.dumps(body).encode(), hdrs, rid

    def count(self, status):
        s = self.stats["status"]
        s[status] = s.get(status, 0) + 1

    async def short_worker(self, rate_per_worker):
        ka = KeepAlive(self.port)
        r = self.rng
        next_t = time.monotonic()
        while not self.stop:
            next_t += r.expovariate(rate_per_worker)
            delay = next_t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_t = time.monotonic()
            cls = None
            x = r.random()
            if x < 0.04:
                cls = "capped"
            elif x < 0.10:
                cls = "limited"
            method, path, body, hdrs, _ = self.shape(False)
            hdrs += self.tags(cls)
            hdrs.append(("x-fake-events", str(r.randrange(1, 20))))
            x = r.random()
            if x < 0.02:
                hdrs.append(("x-fake-status", "500"))
            elif x < 0.03:
                hdrs.append(("x-fake-status", "429"))
            t0 = time.monotonic()
            try:
                status, _, _ = await ka.call(method, path, body, hdrs)
            except (HTTPError, asyncio.TimeoutError, OSError):
                self.stats["errors"] += 1
                ka.close()
                continue
            self.stats["sent"] += 1
            self.stats["short"] += 1
            self.count(status)
            if status == 200:
                self.short_lat.append((time.monotonic(),
                                       time.monotonic() - t0))

    async def stream_worker(self):
        r = self.rng
        while not self.stop:
            method, path, body, hdrs, _ = self.shape(True)
            hdrs += self.tags()
            hdrs += [("x-fake-events", str(r.randrange(10, 80))),
                     ("x-fake-pace-ms", str(r.randrange(5, 25)))]
            drop_after = None
            x = r.random()
            if x < 0.05:
                drop_after = r.randrange(50, 800)
            elif x < 0.07:
                hdrs.append(("x-fake-hang", "body"))
            elif x < 0.08:
                hdrs.append(("x-fake-reset-after", str(r.randrange(1, 8))))
            elif x < 0.09:
                hdrs.append(("x-fake-error-after", str(r.randrange(1, 8))))
            writer = None
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port)
                hdrs.append(("Connection", "close"))
                writer.write(request_bytes(self.port, method, path, body,
                                           hdrs))
                await writer.drain()
                status, rh = await asyncio.wait_for(read_head(reader), 30)
                await asyncio.wait_for(
                    read_body(reader, rh, drop_after), 60)
                self.stats["sent"] += 1
                self.stats["streams"] += 1
                self.count(status)
                if drop_after is not None:
                    self.stats["dropped"] += 1
            except (asyncio.IncompleteReadError, asyncio.TimeoutError,
                    ConnectionError, OSError, ValueError):
                self.stats["errors"] += 1
            finally:
                if writer is not None:
                    writer.close()


# --------------------------------------------------------------------------
# The admin side: kills, reloads, budgets, metrics.

def admin(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (port, path), data=data, method=method,
        headers={"Authorization": "Bearer " + TOKEN,
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metric(text, name):
    m = re.search(r"(?m)^%s(?:\{\})? ([0-9.e+-]+)$" % re.escape(name), text)
    return float(m.group(1)) if m else None


def everything_spent(admin_port):
    st, body = admin(admin_port, "GET", "/v1/budgets")
    if st != 200:
        raise AssertionError("GET /v1/budgets: %d" % st)
    for b in json.loads(body)["budgets"]:
        if b["policy"] == "everything":
            return b["spent_nusd"], b["reserved_nusd"]
    raise AssertionError("no 'everything' budget in /v1/budgets")


async def admin_loop(load, tg, admin_port, up_port, events):
    """Kills every 20 s (lifted after 5 s), reloads every 15 s."""
    t0 = time.monotonic()
    next_kill = t0 + 20
    next_reload = t0 + 15
    variant = 0
    live_kill = None
    lift_at = None
    loop = asyncio.get_running_loop()
    while not load.stop:
        await asyncio.sleep(0.5)
        now = time.monotonic()
        if live_kill is None and now >= next_kill:
            st, body = await loop.run_in_executor(
                None, admin, admin_port, "POST", "/v1/kills",
                {"match": {"team": "gamma"}, "reason": "soak"})
            if st == 201:
                live_kill = json.loads(body)["id"]
                lift_at = now + 5
                events["kills"] += 1
            else:
                events["admin_errors"] += 1
            next_kill = now + 20
        if live_kill is not None and now >= lift_at:
            st, _ = await loop.run_in_executor(
                None, admin, admin_port, "DELETE", "/v1/kills/" + live_kill)
            if st != 200:
                events["admin_errors"] += 1
            live_kill = None
        if now >= next_reload:
            variant ^= 1
            tg.write_config(config_text(up_port, variant))
            if events["reloads"] % 2 == 0:
                tg.hup()
            else:
                st, _ = await loop.run_in_executor(
                    None, admin, admin_port, "POST", "/v1/reload")
                if st != 200:
                    events["admin_errors"] += 1
            events["reloads"] += 1
            next_reload = now + 15
    if live_kill is not None:
        await loop.run_in_executor(None, admin, admin_port, "DELETE",
                                   "/v1/kills/" + live_kill)


# --------------------------------------------------------------------------
# Sampling.

def proc_sample(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
            elif k == "Threads":
                out[k] = int(v)
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def file_size(p):
    try:
        return os.path.getsize(p)
    except OSError:
        return 0


def ledger_rows(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        return db.execute("SELECT count(*) FROM calls").fetchone()[0]
    finally:
        db.close()


async def sampler(load, tg, admin_port, ledger, samples, t0):
    loop = asyncio.get_running_loop()
    while not load.stop:
        try:
            ps = proc_sample(tg.pid)
            st, body = await loop.run_in_executor(None, admin, admin_port,
                                                  "GET", "/metrics")
            text = body.decode() if st == 200 else ""
            rows = await loop.run_in_executor(None, ledger_rows, ledger)
        except (OSError, sqlite3.Error) as e:
            log("sample failed:", e)
            await asyncio.sleep(SAMPLE_EVERY)
            continue
        s = {"t": round(time.monotonic() - t0, 1),
             "rss_kb": ps.get("VmRSS"), "hwm_kb": ps.get("VmHWM"),
             "fds": ps["fds"], "threads": ps.get("Threads"),
             "db_bytes": file_size(ledger),
             "wal_bytes": file_size(ledger + "-wal"),
             "rows": rows,
             "in_flight": metric(text, "tollgate_calls_in_flight"),
             "queue": metric(text, "tollgate_ledger_queue_depth"),
             "sent": load.stats["sent"]}
        samples.append(s)
        if len(samples) % 6 == 1:
            log("t=%ds rss=%.1fMB fds=%d rows=%d wal=%.1fMB in_flight=%s" %
                (s["t"], s["rss_kb"] / 1024, s["fds"], rows,
                 s["wal_bytes"] / 1048576.0, s["in_flight"]))
        await asyncio.sleep(SAMPLE_EVERY)


# --------------------------------------------------------------------------
# The verdict.

def growth(samples, key, warm):
    after = [s[key] for s in samples if s["t"] >= warm and s[key] is not None]
    if len(after) < 6:
        return None, None, None
    k = len(after) // 3
    first = statistics.median(after[:k])
    last = statistics.median(after[-k:])
    return first, last, last - first


def check_ledger(ledger, fake):
    """Every forwarded call has exactly one row; nothing in flight."""
    ids = {}
    pat = re.compile(r"soak-\d{8}")
    dup_upstream = 0
    for rec in fake.requests():
        m = pat.search(rec.get("body") or "")
        if not m:
            continue
        if m.group(0) in ids:
            dup_upstream += 1
        ids[m.group(0)] = rec
    db = sqlite3.connect("file:%s?mode=ro" % ledger, uri=True)
    rows = dict(db.execute("SELECT id, status FROM calls"))
    by_status = dict(db.execute(
        "SELECT status, count(*) FROM calls GROUP BY status"))
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    cost = db.execute("SELECT coalesce(sum(cost_nusd),0) FROM calls").\
        fetchone()[0]
    db.close()
    lost = [i for i in ids if i not in rows]
    # Rows of forwarded calls that fakeprov never saw (refusals and calls
    # ended before forwarding are not forwarded).
    unseen = [i for i, st in rows.items()
              if st not in ("refused",) and i.startswith("soak-")
              and i not in ids]
    return {"upstream_requests": len(ids), "upstream_duplicates":
            dup_upstream, "rows": len(rows), "lost": len(lost),
            "lost_ids": lost[:10], "rows_not_upstream": len(unseen),
            "rows_not_upstream_ids": unseen[:10],
            "by_status": by_status, "in_flight": by_status.get("in_flight",
                                                                0),
            "integrity": integrity, "sum_cost_nusd": cost}


def keep_log(src, dst, head=40, tail=100):
    """A log of a hundred thousand calls is mostly their lines: keep its
    head, its tail and every line that is not info or debug."""
    with open(src, errors="replace") as f:
        lines = f.readlines()
    if len(lines) <= head + tail:
        kept = lines
    else:
        middle = [ln for ln in lines[head:-tail]
                  if " info: " not in ln and " debug: " not in ln]
        kept = lines[:head] + ["... %d info lines left out ...\n" %
                               (len(lines) - head - tail - len(middle))]
        kept += middle + lines[-tail:]
    with open(dst, "w") as f:
        f.writelines(kept)


def fmt_mb(kb):
    return "%.1f" % (kb / 1024.0) if kb is not None else "-"


def render(summary):
    v = summary
    L = v["ledger"]
    lines = [
        "Run of %s UTC at %s, %d minutes on this machine (%s build): "
        "%d calls sent (%d short, %d streams, %d dropped by the client), "
        "%d reloads, %d kills." % (
            v["started"], v["commit"], v["minutes"], v["build"], v["sent"],
            v["short"], v["streams"], v["dropped"], v["reloads"], v["kills"]),
        "",
        "| measure | after warm-up | at the end | bound | verdict |",
        "|---|---|---|---|---|",
    ]
    for key, label, unit in (("rss", "RSS (MB, median of a third)", "MB"),
                             ("fds", "descriptors (median of a third)", "")):
        g = v["growth"][key]
        lines.append("| %s | %s | %s | growth ≤ %s | %s |" % (
            label, g["first"], g["last"], g["bound"],
            "pass" if g["ok"] else "FAIL"))
    lines += [
        "| peak RSS (MB) | | %s | | |" % fmt_mb(v["hwm_kb"]),
        "| WAL, largest (MB) | | %.1f | ≤ 32 | %s |" % (
            v["wal_max_mb"], "pass" if v["wal_ok"] else "FAIL"),
        "| ledger size (MB) / rows | | %.1f / %d (%d B a row) | | |" % (
            v["db_mb"], L["rows"], v["bytes_per_row"]),
        "| calls the provider saw / with no row | | %d / %d | 0 lost | %s |"
        % (L["upstream_requests"], L["lost"],
           "pass" if L["lost"] == 0 and L["upstream_duplicates"] == 0
           else "FAIL"),
        "| rows of forwarded calls the provider never saw | | %d | | |" %
        L["rows_not_upstream"],
        "| rows left in flight / integrity | | %d / %s | 0 / ok | %s |" % (
            L["in_flight"], L["integrity"],
            "pass" if L["in_flight"] == 0 and L["integrity"] == "ok"
            else "FAIL"),
        "| `total` budget = SUM(cost), live / after restart | | %s / %s | "
        "equal | %s |" % (
            "yes" if v["budget_live_ok"] else "no",
            "yes" if v["budget_restart_ok"] else "no",
            "pass" if v["budget_live_ok"] and v["budget_restart_ok"]
            else "FAIL"),
        "| short calls p50 / p99 (ms), first and last third | | %s | | |" %
        v["short_latency"],
        "| exit on SIGTERM / crash or sanitizer report | | %s / %s | 0 / "
        "none | %s |" % (v["exit_code"], v["crash"] or "none",
                        "pass" if v["exit_code"] == 0 and not v["crash"]
                        else "FAIL"),
        "",
        "Rows by status: %s." % ", ".join(
            "%s %d" % kv for kv in sorted(L["by_status"].items())),
    ]
    return "\n".join(lines) + "\n"


def write_doc(path, text):
    with open(path) as f:
        doc = f.read()
    begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
    i, j = doc.find(begin), doc.find(end)
    if i < 0 or j < i:
        raise SystemExit("%s has no %s ... %s block" % (path, begin, end))
    doc = doc[:i + len(begin)] + "\n" + text + doc[j:]
    with open(path, "w") as f:
        f.write(doc)


def quantile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def run_load(load, tg, admin_port, up_port, ledger, minutes, samples,
                   events):
    t0 = time.monotonic()
    tasks = [asyncio.create_task(load.short_worker(40.0 / 8))
             for _ in range(8)]
    tasks += [asyncio.create_task(load.stream_worker()) for _ in range(16)]
    tasks.append(asyncio.create_task(
        admin_loop(load, tg, admin_port, up_port, events)))
    tasks.append(asyncio.create_task(
        sampler(load, tg, admin_port, ledger, samples, t0)))
    deadline = t0 + minutes * 60
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        if not tg.alive():
            log("tollgate died")
            break
    load.stop = True
    # Streams end within their 60 s bound; give everything that long.
    done, pending = await asyncio.wait(tasks, timeout=90)
    for t in pending:
        t.cancel()
    return t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--build", default=os.environ.get("SOAK_BUILD", "build"))
    ap.add_argument("--out")
    ap.add_argument("--doc")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    build = os.path.join(SOURCE, args.build) \
        if not os.path.isabs(args.build) else args.build
    tglib.TOLLGATE_BIN = os.path.join(build, "tollgate")
    tglib.FAKEPROV_BIN = os.path.join(build, "tests", "fakeprov")
    for b in (tglib.TOLLGATE_BIN, tglib.FAKEPROV_BIN):
        if not os.access(b, os.X_OK):
            raise SystemExit("soak: %s is not built" % b)
    started = datetime.datetime.utcnow()
    # The code under test is the build's, made from the tree as it is now.
    commit = os.popen("git -C %s rev-parse --short HEAD 2>/dev/null" %
                      SOURCE).read().strip() or "?"
    out = args.out or os.path.join(
        HERE, "results", "soak-" + started.strftime("%Y-%m-%d") +
        ("" if os.path.basename(build) == "build" else
         "-" + os.path.basename(build)))
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tg-soak-")
    os.environ["TOLLGATE_ADMIN_TOKEN"] = TOKEN
    os.environ.setdefault("ASAN_OPTIONS",
                          "detect_leaks=1:abort_on_error=1")
    os.environ.setdefault("UBSAN_OPTIONS",
                          "print_stacktrace=1:halt_on_error=1")
    fake = tglib.Fakeprov(tmp)
    tg = tglib.Tollgate(tmp, config_text(fake.port, 0))
    m = tg.wait_log(r"admin listening on 127\.0\.0\.1:(\d+)")
    admin_port = int(m.group(1))
    ledger = os.path.join(tmp, "data", "soak.db")
    log("tollgate %d, admin %d, fakeprov %d, %g minutes, in %s" %
        (tg.port, admin_port, fake.port, args.minutes, tmp))

    load = Load(tg.port, random.Random(args.seed))
    samples = []
    events = {"kills": 0, "reloads": 0, "admin_errors": 0}
    asyncio.run(run_load(load, tg, admin_port, fake.port, ledger,
                         args.minutes, samples, events))

    # Quiet now: the live counter must equal the ledger's sum.
    tglib.wait_until(lambda: everything_spent(admin_port)[1] == 0, 30)
    live_spent, live_reserved = everything_spent(admin_port)
    rc = tg.stop(timeout=60)
    log_text = tg.stderr()
    crash = None
    for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                "fatal", "Segmentation"):
        if pat in log_text:
            crash = pat
            break
    L = check_ledger(ledger, fake)
    # Restart: the counters are rebuilt from the ledger.
    tg3 = tglib.Tollgate(tmp, config_text(fake.port, 0), name="restart")
    m = tg3.wait_log(r"admin listening on 127\.0\.0\.1:(\d+)")
    restart_spent, _ = everything_spent(int(m.group(1)))
    tg3.stop()
    fake.signal(signal.SIGTERM)
    fake.wait(10)

    total = args.minutes * 60
    warm = max(total / 5, min(120.0, total / 3))
    g = {}
    # Under ASan freed memory waits in the allocator's quarantine (256 MB
    # by default) before it is reused: RSS grows until that is full, so
    # there it is reported, not judged; the sanitizer judges memory.
    asan = asan_build(tglib.TOLLGATE_BIN)
    for key, field, bound, scale in (("rss", "rss_kb", 4 * 1024, 1024.0),
                                     ("fds", "fds", 16, 1)):
        first, last, d = growth(samples, field, warm)
        ok = d is not None and (d <= bound or (key == "rss" and asan))
        g[key] = {"first": "%.1f" % (first / scale) if first is not None
                  else "-",
                  "last": "%.1f" % (last / scale) if last is not None
                  else "-",
                  "bound": "%g" % (bound / scale) if not (
                      key == "rss" and asan) else "- (ASan)",
                  "ok": ok}
    wal_max = max((s["wal_bytes"] for s in samples), default=0)
    db_bytes = file_size(ledger)
    third = len(load.short_lat) // 3
    lat = load.short_lat
    short_latency = "%s / %s; %s / %s" % tuple(
        "%.1f" % (x * 1000) if x is not None else "-" for x in (
            quantile([d for _, d in lat[:third]], 0.5),
            quantile([d for _, d in lat[:third]], 0.99),
            quantile([d for _, d in lat[-third:]], 0.5),
            quantile([d for _, d in lat[-third:]], 0.99)))
    summary = {
        "started": started.strftime("%Y-%m-%d %H:%M"), "commit": commit,
        "minutes": int(args.minutes), "build": os.path.basename(build),
        "sent": load.stats["sent"], "short": load.stats["short"],
        "streams": load.stats["streams"], "dropped": load.stats["dropped"],
        "client_errors": load.stats["errors"],
        "status": load.stats["status"], "reloads": events["reloads"],
        "kills": events["kills"], "admin_errors": events["admin_errors"],
        "growth": g, "hwm_kb": max((s["hwm_kb"] or 0 for s in samples),
                                   default=None),
        "wal_max_mb": wal_max / 1048576.0, "wal_ok": wal_max <= 32 << 20,
        "db_mb": db_bytes / 1048576.0,
        "bytes_per_row": db_bytes // max(1, L["rows"]),
        "ledger": L, "live_spent_nusd": live_spent,
        "restart_spent_nusd": restart_spent,
        "budget_live_ok": live_spent == L["sum_cost_nusd"],
        "budget_restart_ok": restart_spent == L["sum_cost_nusd"],
        "short_latency": short_latency, "exit_code": rc, "crash": crash,
    }
    ok = (g["rss"]["ok"] and g["fds"]["ok"] and summary["wal_ok"] and
          L["lost"] == 0 and L["upstream_duplicates"] == 0 and
          L["in_flight"] == 0 and L["integrity"] == "ok" and
          summary["budget_live_ok"] and summary["budget_restart_ok"] and
          rc == 0 and not crash and events["admin_errors"] == 0)
    summary["verdict"] = "pass" if ok else "FAIL"

    with open(os.path.join(out, "samples.csv"), "w") as f:
        keys = list(samples[0]) if samples else []
        f.write(",".join(keys) + "\n")
        for s in samples:
            f.write(",".join("" if s[k] is None else str(s[k])
                             for k in keys) + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    for name in ("tollgate.stderr", "restart.stderr"):
        src = os.path.join(tmp, name)
        if os.path.exists(src):
            keep_log(src, os.path.join(out, name))
    text = render(summary)
    print(text)
    if args.doc:
        write_doc(args.doc, text)
    log("verdict: %s; results in %s" % (summary["verdict"], out))
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log("kept %s" % tmp)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
