#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tollgate's benchmark: tollgate against direct, nginx, HAProxy and Portkey.

Everything runs on 127.0.0.1, side by side in one session, and every figure
is reported as a delta or a ratio against the systems measured in the same
run; the targets are listed in docs/benchmarks.md with each run's verdict.

  python3 bench/run.py [--build DIR] [--out DIR] [--doc FILE]
  python3 bench/run.py --smoke        # ~30 s, generous bounds, exit 1 on failure (CI runs it)
  python3 bench/run.py --instructions # instructions per call under callgrind

Topology: the load generator (bench/loadgen, or wrk for saturation) and the
upstream mock share CPU 0; the system under test gets CPU 1 alone (taskset),
each system the same. The upstream is nginx `return 200` (the cheapest
possible) for non-streamed calls and fakeprov for streams and ledger checks.

Systems: direct (no proxy), nginx and HAProxy as plain reverse proxies, the
Portkey gateway (bench/node_modules, `make bench` installs it), and tollgate
with the ledger at `durability: process` (T1), `durability: power` (T2), and
T1 plus a budget and rate limits that every call passes through (T3).
tollgate has no switch that turns metering or the ledger off: every call's
reservation is written to the ledger's journal before it is forwarded, so
there is no T0. "u" systems (nginxu, T1u) run unpinned, free on both cores
as a sidecar does.

Raw output (every loadgen JSON line, wrk's text, /metrics scrapes, process
logs, results.json) goes to --out (default bench/results/<UTC date>/), the
table to --doc (default docs/benchmarks.md). Python 3 standard library only.
"""

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)

# §4.2 of the method: the same request and response for every system.
REQUEST = ('{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],'
           '"max_tokens":16}')
STREAM_REQUEST = ('{"model":"gpt-4o-mini","stream":true,'
                  '"stream_options":{"include_usage":true},'
                  '"messages":[{"role":"user","content":"hi"}],"max_tokens":16}')
RESPONSE = ('{"id":"chatcmpl-bench","object":"chat.completion",'
            '"created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,'
            '"message":{"role":"assistant","content":"ok"},'
            '"finish_reason":"stop"}],"usage":{"prompt_tokens":12,'
            '"completion_tokens":16,"total_tokens":28}}')
PROMPT_TOKENS = 12
COMPLETION_TOKENS = 16
# fakeprov gives the same usage when told so.
FAKE_USAGE = ["x-fake-input-tokens: 12", "x-fake-events: 16"]
PATH = "/v1/chat/completions"

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None

LOG = print


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Processes.

_live = []


def _child_setup():
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgid(0, 0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError("%s exited (%s); see %s" %
                               (proc.name, proc.popen.returncode, proc.log))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on %d" % (proc.name, port))


def memory_cgroup(name, mb):
    """A memory cgroup (v2 unified, else v1) limited to mb MiB; its path."""
    for root, limit in (("/sys/fs/cgroup", "memory.max"),
                        ("/sys/fs/cgroup/unified", "memory.max"),
                        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")):
        if not os.path.exists(os.path.join(root, "cgroup.procs")):
            continue
        if limit == "memory.max" and "memory" not in open(os.path.join(
                root, "cgroup.controllers")).read().split():
            continue
        path = os.path.join(root, name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, limit), "w") as f:
            f.write(str(mb * 1024 * 1024))
        return path
    raise RuntimeError("no memory cgroup controller to limit tollgate with")


def cgroup_memory(path):
    """What a memory cgroup holds: its page cache and peak, in MiB."""
    out = {}
    try:
        with open(os.path.join(path, "memory.stat")) as f:
            st = dict(line.split() for line in f)
        out["cache_mb"] = int(st.get("file", st.get("cache", 0))) / 2**20
        for peak in ("memory.peak", "memory.max_usage_in_bytes"):
            if os.path.exists(os.path.join(path, peak)):
                with open(os.path.join(path, peak)) as f:
                    out["peak_mb"] = int(f.read()) / 2**20
    except (OSError, ValueError):
        pass
    return out


def note_memory(p, row):
    """A memory-limited tollgate's cgroup figures and storage reads."""
    if getattr(p, "cgroup", None):
        row.update(cgroup_memory(p.cgroup))
        row["read_from_storage_mb"] = proc_read_mb(p.pid)
        for limit in ("memory.max", "memory.limit_in_bytes"):
            path = os.path.join(p.cgroup, limit)
            if os.path.exists(path):
                with open(path) as f:
                    row["memory_limit_mb"] = int(f.read()) / 2**20


def drop_cgroup(p):
    """Remove a stopped tollgate's memory cgroup."""
    if getattr(p, "cgroup", None):
        try:
            os.rmdir(p.cgroup)
        except OSError:
            pass


def proc_read_mb(pid):
    """Bytes pid has read from storage (not the page cache), in MiB."""
    try:
        with open("/proc/%d/io" % pid) as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
        return int(io["read_bytes"]) / 2**20
    except (OSError, KeyError, ValueError):
        return None


class Proc:
    def __init__(self, name, argv, workdir, cpu=None, env=None):
        self.name = name
        self.log = os.path.join(workdir, name + ".log")
        if cpu is not None and CPUS > 1:
            argv = ["taskset", "-c", str(cpu)] + argv
        f = open(self.log, "ab")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=f, stderr=f, cwd=workdir,
                                      preexec_fn=_child_setup, env=env)
        f.close()
        self.pid = self.popen.pid
        _live.append(self)

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        if self in _live:
            _live.remove(self)
        return self.popen.returncode

    def rss_kb(self):
        return read_status(self.pid).get("VmRSS", 0)

    def hwm_kb(self):
        return read_status(self.pid).get("VmHWM", 0)

    def cpu_ticks(self):
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            return 0


def stop_all():
    for p in list(_live):
        try:
            p.stop(signal.SIGKILL, 5)
        except Exception:
            pass


def read_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


class Sampler:
    """RSS of one process at 10 Hz, in kB, with the peak."""

    def __init__(self, proc):
        self.proc = proc
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            rss = self.proc.rss_kb()
            if rss:
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(0.1)

    def peak(self, since=0.0):
        vals = [r for t, r in self.samples if t >= since]
        return max(vals) if vals else 0

    def mean(self, since, until):
        vals = [r for t, r in self.samples if since <= t <= until]
        return statistics.mean(vals) if vals else 0

    def stop(self):
        self._stop.set()
        self._t.join()


# --------------------------------------------------------------------------
# The systems.

class Bench:
    def __init__(self, args):
        self.args = args
        self.build = args.build
        self.loadgen = os.path.join(self.build, "bench", "loadgen")
        self.tollgate = os.path.join(self.build, "tollgate")
        self.fakeprov = os.path.join(self.build, "tests", "fakeprov")
        for b in (self.loadgen, self.tollgate, self.fakeprov):
            if not os.access(b, os.X_OK):
                sys.exit("bench: no %s (make bench builds it)" % b)
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="tg-bench-", dir=args.tmpdir)
        self.raw = open(os.path.join(self.out, "raw.jsonl"), "a")
        self.results = {}
        self.failures = []
        self.run_id = "bench-%d" % int(time.time())
        self.cell = 0

    def record(self, kind, data):
        data = dict(data)
        data["kind"] = kind
        self.raw.write(json.dumps(data, sort_keys=True) + "\n")
        self.raw.flush()

    def intent(self, what):
        self.cell += 1
        return "%s-%d-%s" % (self.run_id, self.cell, what)

    # -- upstreams -------------------------------------------------------

    def nginx_conf(self, name, port, body):
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""worker_processes 1;
daemon off;
master_process off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path %(d)s/cbt;
  proxy_temp_path %(d)s/pt;
  fastcgi_temp_path %(d)s/ft;
  uwsgi_temp_path %(d)s/ut;
  scgi_temp_path %(d)s/st;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_max_body_size 64m;
  client_body_buffer_size 4m;
  %(body)s
}
""" % {"d": d, "body": body})
        return conf

    def start_nginx_mock(self):
        port = free_port()
        body = RESPONSE.replace("'", "\\'")
        conf = self.nginx_conf("nginx-mock", port, """
  server {
    listen 127.0.0.1:%d backlog=4096;
    location / { default_type application/json; return 200 '%s'; }
  }""" % (port, body))
        p = Proc("nginx-mock", ["nginx", "-c", conf], self.work, cpu=0)
        wait_port(port, p)
        return p, port

    def start_fakeprov(self):
        port = free_port()
        p = Proc("fakeprov", [self.fakeprov, "--listen",
                              "127.0.0.1:%d" % port], self.work, cpu=0)
        wait_port(port, p)
        return p, port

    # -- systems under test ------------------------------------------------

    def start_nginx_proxy(self, up, cpu=1):
        port = free_port()
        conf = self.nginx_conf("nginx-proxy-%d" % up, port, """
  upstream up { server 127.0.0.1:%d; keepalive 512; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:%d backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }""" % (up, port))
        p = Proc("nginx-proxy", ["nginx", "-c", conf], self.work, cpu=cpu)
        wait_port(port, p)
        return p, port

    def start_haproxy(self, up):
        port = free_port()
        conf = os.path.join(self.work, "haproxy-%d.cfg" % up)
        with open(conf, "w") as f:
            f.write("""global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  http-reuse always
  # Streams: send each event at once, no Nagle/MSG_MORE coalescing.
  option http-no-delay
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server up 127.0.0.1:%d maxconn 8000
""" % (port, up))
        p = Proc("haproxy", ["haproxy", "-db", "-f", conf], self.work, cpu=1)
        wait_port(port, p)
        return p, port

    def portkey_js(self):
        return os.path.join(HERE, "node_modules", "@portkey-ai", "gateway",
                            "build", "start-server.js")

    def start_portkey(self, up):
        port = free_port()
        env = dict(os.environ, NODE_ENV="production")
        p = Proc("portkey", ["node", self.portkey_js(), "--port=%d" % port,
                             "--headless"], self.work, cpu=1, env=env)
        wait_port(port, p, 60)
        return p, port

    def start_tollgate(self, mode, up, cpu=1, wrap=(), extra="",
                       ledger_extra="", memory_mb=None):
        port = free_port()
        admin = free_port()
        d = os.path.join(self.work, "tollgate-%s-%d" % (mode, port))
        os.makedirs(d, exist_ok=True)
        durability = "power" if mode == "T2" else "process"
        policies = "policies: []\n"
        if mode == "T3":
            policies = """policies:
  - name: bench-budget
    match: { team: bench }
    per: [tenant]
    window: day
    hard_cap_usd: 1000000
    alert_at_percent: 80
    rate_limit: { requests_per_minute: 1000000000, tokens_per_minute: 2000000000, concurrent: 100000 }
"""
        if getattr(self.args, "seed_ledger", None):
            # A large ledger to start from (bench/ledger_1m.py --keep):
            # copied whole, so each system writes into its own.
            src = sqlite3.connect("file:%s?mode=ro" % self.args.seed_ledger,
                                  uri=True)
            dst = sqlite3.connect(os.path.join(d, "ledger.db"))
            src.backup(dst)
            dst.close()
            src.close()
        conf = os.path.join(d, "tollgate.yaml")
        with open(conf, "w") as f:
            f.write("""listen: 127.0.0.1:%d
admin:
  listen: 127.0.0.1:%d
limits:
  max_connections: 20000
upstreams:
  openai:
    type: openai
    base_url: http://127.0.0.1:%d
ledger:
  path: %s/ledger.db
  durability: %s
%sprices: %s
%s%s""" % (port, admin, up, d, durability, ledger_extra,
                os.path.join(SOURCE, "config", "prices.yaml"), policies,
                extra))
        cg = None
        if memory_mb:
            # Its own memory cgroup, with the page cache dropped first, so
            # the ledger's pages it reads or writes are charged to it and
            # a ledger larger than memory_mb cannot stay cached.
            cg = memory_cgroup("tg-bench-%d" % port, memory_mb)
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")
            wrap = ("sh", "-c", 'echo $$ > "$0" && exec "$@"',
                    os.path.join(cg, "cgroup.procs")) + tuple(wrap)
        p = Proc("tollgate-" + mode + ("m" if memory_mb else ""),
                 list(wrap) + [self.tollgate, "-d", "-c", conf],
                 self.work, cpu=cpu)
        wait_port(port, p, 120 if wrap else 20)
        p.admin = admin
        p.ledger = os.path.join(d, "ledger.db")
        p.cgroup = cg
        return p, port

    def start_sut(self, name, up):
        if name == "direct":
            return None, up
        if name == "nginx":
            return self.start_nginx_proxy(up)
        if name == "haproxy":
            return self.start_haproxy(up)
        if name == "portkey":
            return self.start_portkey(up)
        if name == "nginxu":  # nginx on both cores
            return self.start_nginx_proxy(up, cpu=None)
        if name.endswith("u"):  # T1u: tollgate T1 on both cores
            return self.start_tollgate(name[:-1], up, cpu=None)
        if name.endswith("m"):  # T1m: T1 in a memory cgroup
            return self.start_tollgate(name[:-1], up,
                                       memory_mb=self.args.memory_limit)
        return self.start_tollgate(name, up)

    def headers(self, up, intent="bench"):
        return ["Authorization: Bearer tg-bench-key",
                "X-Tollgate-Team: bench", "X-Tollgate-Intent: " + intent,
                "x-portkey-provider: openai",
                "x-portkey-custom-host: http://127.0.0.1:%d/v1" % up]

    # -- clients -----------------------------------------------------------

    def loadgen_run(self, port, label, args, headers, timeout=600):
        argv = [self.loadgen, "-l", label] + args
        for h in headers:
            argv += ["-H", h]
        argv.append("http://127.0.0.1:%d%s" % (port, PATH))
        if CPUS > 1:
            argv = ["taskset", "-c", "0"] + argv
        r = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        line = r.stdout.decode().strip().splitlines()
        if not line:
            raise RuntimeError("loadgen %s: %s" %
                               (label, r.stderr.decode().strip()))
        res = json.loads(line[-1])
        self.record("loadgen", res)
        return res

    def wrk_run(self, port, label, conns, secs, headers, pin=True):
        script = os.path.join(self.work, "wrk-%s.lua" % label)
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = %s\n' %
                    json.dumps(REQUEST))
            f.write('wrk.headers["Content-Type"] = "application/json"\n')
            for h in headers:
                k, _, v = h.partition(": ")
                f.write("wrk.headers[%s] = %s\n" % (json.dumps(k),
                                                    json.dumps(v)))
        argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency",
                "-s", script, "http://127.0.0.1:%d%s" % (port, PATH)]
        if CPUS > 1 and pin:
            argv = ["taskset", "-c", "0"] + argv
        r = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=secs + 60)
        text = r.stdout.decode()
        with open(os.path.join(self.out, "wrk.txt"), "a") as f:
            f.write("### %s c=%d %ds\n%s\n" % (label, conns, secs, text))
        res = {"label": label, "conns": conns, "secs": secs}
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
        if m:
            res["requests"] = int(m.group(1))
            res["elapsed_s"] = float(m.group(2)) * (
                1e-3 if m.group(3) == "ms" else 1.0)
        m = re.search(r"Requests/sec:\s+([\d.]+)", text)
        res["rps"] = float(m.group(1)) if m else 0.0
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        res["non2xx"] = int(m.group(1)) if m else 0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), "
                      r"write (\d+), timeout (\d+)", text)
        res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
        self.record("wrk", res)
        return res


def metrics(admin):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin,
                                    timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, val = line.rpartition(" ")
        if "{" not in name:
            try:
                out[name] = float(val)
            except ValueError:
                pass
    return out


def ledger_counts(path, intent_prefix):
    """{intent: (ok_rows, all_rows, input_tokens, output_tokens)}"""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = db.execute(
            "SELECT intent, sum(status = 'ok'), count(*), "
            "sum(input_tokens), sum(output_tokens) FROM calls "
            "WHERE intent LIKE ? GROUP BY intent",
            (intent_prefix + "%",)).fetchall()
    finally:
        db.close()
    return {r[0]: r[1:] for r in rows}


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def iqr(xs):
    if len(xs) < 4:
        return (min(xs), max(xs)) if xs else (float("nan"),) * 2
    q = statistics.quantiles(xs, n=4)
    return (q[0], q[2])


def fsync_probe(directory, n=1000):
    """n x (4 KiB write + fdatasync) on directory's filesystem, in us."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"x" * 4096
    lat = []
    try:
        for _ in range(n):
            t = time.perf_counter_ns()
            os.write(fd, buf)
            os.fdatasync(fd)
            lat.append((time.perf_counter_ns() - t) / 1e3)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return {"n": n, "p50_us": lat[n // 2], "p99_us": lat[int(n * 0.99)],
            "max_us": lat[-1], "mean_us": statistics.mean(lat)}


def keep_log(src, dst, head=30, tail=100):
    """A process log, its first and last lines only: tollgate writes a line
    per call, and a run makes hundreds of thousands."""
    with open(src, "rb") as f:
        lines = f.readlines()
    if len(lines) > head + tail:
        lines = lines[:head] + [b"[... %d lines ...]\n" % (
            len(lines) - head - tail)] + lines[-tail:]
    with open(dst, "wb") as f:
        f.writelines(lines)


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def ver(argv, rx=r"([\d][\w.\-+~]*)"):
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=10)
            m = re.search(rx, r.stdout.decode())
            return m.group(1) if m else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"

    portkey = "n/a"
    try:
        with open(os.path.join(HERE, "node_modules", "@portkey-ai",
                               "gateway", "package.json")) as f:
            portkey = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        rev = subprocess.run(["git", "-C", SOURCE, "rev-parse", "--short",
                              "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode().strip()
    except OSError:
        rev = "?"
    return {
        "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
        "tollgate": rev, "nginx": ver(["nginx", "-v"], r"nginx/([\d.]+)"),
        "haproxy": ver(["haproxy", "-v"], r"version ([\d.]+)"),
        "wrk": ver(["wrk", "-v"], r"wrk (?:debian/)?([\d.]+)"),
        "node": ver(["node", "-v"], r"v([\d.]+)"), "portkey": portkey,
        "sqlite": sqlite3.sqlite_version,
        "libcurl": ver(["curl", "--version"], r"libcurl/([\d.]+)"),
        "libevent": ver(["pkg-config", "--modversion", "libevent"]),
    }


CPUS = os.cpu_count() or 1

# --------------------------------------------------------------------------
# The sections of the full run.

SYSTEMS = ["direct", "nginx", "haproxy", "portkey", "T1", "T2", "T3"]
PROXIES = SYSTEMS[1:]


def sec_added_latency(b, up, body_args=None, rounds=7, n=2000, warm=1000,
                      systems=SYSTEMS, key="c1", label="c=1"):
    """c=1 closed loop, interleaved rounds; median of the rounds."""
    log("%s: %d rounds x %d requests, systems %s" %
        (label, rounds, n, ",".join(systems)))
    procs = {}
    for s in systems:
        if s == "portkey" and not os.path.exists(b.portkey_js()):
            continue
        procs[s] = b.start_sut(s, up)
    per = {s: {"p50": [], "p99": [], "p999": [], "errors": 0}
           for s in procs}
    body = body_args or ["-b", REQUEST]
    for s, (p, port) in procs.items():
        b.loadgen_run(port, "%s-warm-%s" % (key, s),
                      ["-c", "1", "-r", "0", "-n", str(warm)] + body,
                      b.headers(up, b.intent(key + "-warm")))
    for r in range(rounds):
        for s, (p, port) in procs.items():
            res = b.loadgen_run(port, "%s-%s-r%d" % (key, s, r),
                                ["-c", "1", "-r", "0", "-n", str(n), "-w",
                                 "10"] + body,
                                b.headers(up, b.intent(key)))
            per[s]["p50"].append(res["lat_us"]["p50"])
            per[s]["p99"].append(res["lat_us"]["p99"])
            per[s]["p999"].append(res["lat_us"]["p999"])
            per[s]["errors"] += res["errors"] + res["non2xx"]
    cg = {}
    for s, (p, port) in procs.items():
        if p is not None:
            note_memory(p, cg.setdefault(s, {}))
            p.stop()
            drop_cgroup(p)
    out = {}
    d50 = median(per.get("direct", {}).get("p50", [0]))
    d99 = median(per.get("direct", {}).get("p99", [0]))
    for s, v in per.items():
        out[s] = {"p50": median(v["p50"]), "p99": median(v["p99"]),
                  "p999": median(v["p999"]), "p50_iqr": iqr(v["p50"]),
                  "p99_iqr": iqr(v["p99"]), "errors": v["errors"],
                  "added_p50": median(v["p50"]) - d50,
                  "added_p99": median(v["p99"]) - d99}
        out[s].update(cg.get(s, {}))
    b.results[key] = out
    return out


def sec_throughput(b, up, secs, conns=64, unpinned=False):
    """wrk at c=conns, pinned; RSS, CPU per call, ledger rows per system."""
    log("throughput: wrk -t1 -c%d -d%ds per system" % (conns, secs))
    out = {}
    extra = ["T1m"] if getattr(b.args, "memory_limit", None) else []
    for s in SYSTEMS + extra:
        if s == "portkey" and not os.path.exists(b.portkey_js()):
            continue
        p, port = b.start_sut(s, up)
        samp = Sampler(p) if p is not None else None
        time.sleep(1.0)
        idle = p.rss_kb() if p is not None else 0
        intent = b.intent("wrk-" + s)
        # A short warm-up, so connection pools are built before we count.
        b.wrk_run(port, "warm-" + s, conns, 2, b.headers(up, intent + "w"))
        m0 = metrics(p.admin) if hasattr(p, "admin") else {}
        t0 = p.cpu_ticks() if p is not None else 0
        tstart = time.monotonic()
        res = b.wrk_run(port, "wrk-" + s, conns, secs, b.headers(up, intent))
        tend = time.monotonic()
        t1 = p.cpu_ticks() if p is not None else 0
        m1 = metrics(p.admin) if hasattr(p, "admin") else {}
        row = {"rps": res["rps"], "requests": res.get("requests", 0),
               "errors": res["non2xx"] + res["socket_errors"]}
        if p is not None:
            tck = os.sysconf("SC_CLK_TCK")
            row["cpu_us_per_call"] = ((t1 - t0) / tck * 1e6 /
                                      max(1, res.get("requests", 1)))
            time.sleep(3.0)
            row["rss_idle_mb"] = idle / 1024
            row["rss_load_mb"] = samp.mean(tstart, tend) / 1024
            row["rss_peak_mb"] = samp.peak(tstart) / 1024
            row["rss_after_mb"] = p.rss_kb() / 1024
            samp.stop()
            note_memory(p, row)
        if m1:
            rows = m1.get("tollgate_ledger_rows_written_total", 0) - \
                m0.get("tollgate_ledger_rows_written_total", 0)
            commits = m1.get("tollgate_ledger_commits_total", 0) - \
                m0.get("tollgate_ledger_commits_total", 0)
            csec = m1.get("tollgate_ledger_commit_seconds_sum", 0) - \
                m0.get("tollgate_ledger_commit_seconds_sum", 0)
            row["ledger_rows_per_s"] = rows / max(1e-9, tend - tstart)
            row["ledger_rows_per_commit"] = rows / max(1, commits)
            row["ledger_writer_busy"] = csec / max(1e-9, tend - tstart)
            row["ledger_capacity_rows_per_s"] = rows / csec if csec else 0
            row["ledger_commit_max_ms"] = 1e3 * m1.get(
                "tollgate_ledger_commit_seconds_max", 0)
            row["ledger_commit_mean_us"] = 1e6 * csec / max(1, commits)
            # Checkpoints run on their own thread, off the commit path.
            ck = m1.get("tollgate_ledger_checkpoint_seconds_count", 0) - \
                m0.get("tollgate_ledger_checkpoint_seconds_count", 0)
            cks = m1.get("tollgate_ledger_checkpoint_seconds_sum", 0) - \
                m0.get("tollgate_ledger_checkpoint_seconds_sum", 0)
            row["ledger_checkpoints"] = ck
            row["ledger_checkpoint_mean_ms"] = 1e3 * cks / max(1, ck)
            row["ledger_checkpoint_max_ms"] = 1e3 * m1.get(
                "tollgate_ledger_checkpoint_seconds_max", 0)
            b.record("metrics", {"system": s, "before": m0, "after": m1})
        if p is not None:
            p.stop()
            drop_cgroup(p)
        if hasattr(p, "ledger"):
            c = ledger_counts(p.ledger, intent).get(intent, (0, 0, 0, 0))
            ok2xx = res.get("requests", 0) - res["non2xx"]
            # wrk stops with calls in flight: those are client_closed rows.
            row["ledger_ok_rows"] = c[0]
            row["ledger_lost_rows"] = max(0, ok2xx - c[0])
        out[s] = row
        log("  %s: %.0f req/s" % (s, res["rps"]))
    nginx = out.get("nginx", {}).get("rps", 0)
    for s, row in out.items():
        row["ratio_nginx"] = row["rps"] / nginx if nginx else 0
    b.results["throughput"] = out
    if unpinned:
        # The realistic sidecar: the proxy and wrk free to use both cores
        # (only the mock stays on CPU 0).
        un = {}
        for s in ("nginx", "T1"):
            if s == "nginx":
                p, port = b.start_nginx_proxy(up, cpu=None)
            else:
                p, port = b.start_tollgate(s, up, cpu=None)
            intent = b.intent("unpinned-" + s)
            b.wrk_run(port, "unpinned-warm-" + s, conns, 2,
                      b.headers(up, intent + "w"), pin=False)
            res = b.wrk_run(port, "unpinned-" + s, conns, secs,
                            b.headers(up, intent), pin=False)
            p.stop()
            un[s] = res["rps"]
            log("  %s unpinned: %.0f req/s" % (s, res["rps"]))
        b.results["throughput_unpinned"] = un
    return out


def sec_fixed_rate(b, up, secs, rates, conns=64):
    """Open-loop constant rates; stop a sweep at >0.1 % errors or p99 > 1 s.
    The tollgate cells also check the ledger: every 2xx has its row."""
    log("fixed rates %s, %d s each" % (rates, secs))
    out = {}
    for s in SYSTEMS:
        if s == "portkey" and not os.path.exists(b.portkey_js()):
            continue
        p, port = b.start_sut(s, up)
        out[s] = {}
        intents = {}
        for rate in rates:
            intent = b.intent("rate%d-%s" % (rate, s))
            res = b.loadgen_run(port, "rate%d-%s" % (rate, s),
                                ["-c", str(conns), "-r", str(rate), "-d",
                                 str(secs), "-w", str(rate // 2),
                                 "--grace-ms", "5000", "-b", REQUEST],
                                b.headers(up, intent))
            bad = res["errors"] + res["non2xx"] + res["unsent"]
            cell = {"p50": res["lat_us"]["p50"], "p99": res["lat_us"]["p99"],
                    "p999": res["lat_us"]["p999"],
                    "achieved": res["achieved_rps"], "errors": bad,
                    "ok": res["ok"]}
            out[s][rate] = cell
            intents[intent] = (rate, res["ok"] + res["warm_ok"])
            if bad > 0.001 * max(1, res["requests"]) or \
                    res["lat_us"]["p99"] > 1e6:
                break
        if p is not None:
            p.stop()
        if hasattr(p, "ledger"):
            counts = ledger_counts(p.ledger, b.run_id)
            for intent, (rate, okn) in intents.items():
                c = counts.get(intent, (0, 0, 0, 0))
                # The warm-up requests carry the same intent.
                cell = out[s][rate]
                cell["ledger_ok_rows"] = c[0]
                cell["ledger_lost_rows"] = max(0, okn - c[0])
                cell["tokens_exact"] = (c[2] == PROMPT_TOKENS * c[0] and
                                        c[3] == COMPLETION_TOKENS * c[0])
    b.results["fixed_rate"] = out
    return out


def sse_args(events, pace, conns, secs, stall_factor=10, stagger=None):
    # OpenAI chat with include_usage: role + N content + finish + usage
    # + [DONE].
    return (["--sse", "-c", str(conns), "-d", str(secs), "-b", STREAM_REQUEST,
             "--expect-events", str(events + 4),
             "--stall-us", str(max(10000, pace * 1000 * stall_factor)),
             "--stagger-ms", str(stagger if stagger is not None else pace)],
            ["x-fake-sse-timestamps: 1", "x-fake-events: %d" % events,
             "x-fake-pace-ms: %d" % pace, "x-fake-input-tokens: 12"])


def sec_sse_c1(b, up, rounds, secs, systems):
    log("sse c=1: %d rounds x %d s" % (rounds, secs))
    procs = {s: b.start_sut(s, up) for s in systems}
    per = {s: {"ttfe50": [], "ttfe99": [], "gap99": [], "dly50": [],
               "dly99": [], "short": 0, "err": ""} for s in systems}
    args, hdrs = sse_args(16, 2, 1, secs)
    for r in range(rounds):
        for s, (p, port) in procs.items():
            try:
                res = b.loadgen_run(port, "sse1-%s-r%d" % (s, r), args + [
                    "-w", "5"], b.headers(up, b.intent("sse1")) + hdrs)
            except RuntimeError as e:
                per[s]["err"] = str(e)[:200]
                continue
            if res["streams_ok"] == 0:
                per[s]["err"] = "no complete stream"
                continue
            per[s]["ttfe50"].append(res["ttfe_us"]["p50"])
            per[s]["ttfe99"].append(res["ttfe_us"]["p99"])
            per[s]["gap99"].append(res["gap_us"]["p99"])
            per[s]["dly50"].append(res["delay_us"]["p50"])
            per[s]["dly99"].append(res["delay_us"]["p99"])
            per[s]["short"] += res["streams_short"]
    for s, (p, port) in procs.items():
        if p is not None:
            p.stop()
    out = {}
    d = per.get("direct")
    for s, v in per.items():
        if not v["ttfe99"]:
            out[s] = {"error": v["err"] or "failed"}
            continue
        out[s] = {"ttfe_p50": median(v["ttfe50"]),
                  "ttfe_p99": median(v["ttfe99"]),
                  "gap_p99": median(v["gap99"]),
                  "delay_p50": median(v["dly50"]),
                  "delay_p99": median(v["dly99"]),
                  "streams_short": v["short"]}
        if d and d["ttfe99"]:
            out[s]["added_ttfe_p50"] = out[s]["ttfe_p50"] - median(
                d["ttfe50"])
            out[s]["added_ttfe_p99"] = out[s]["ttfe_p99"] - median(
                d["ttfe99"])
            out[s]["added_gap_p99"] = out[s]["gap_p99"] - median(d["gap99"])
            out[s]["added_delay_p99"] = out[s]["delay_p99"] - median(
                d["dly99"])
    b.results["sse_c1"] = out
    return out


def sec_sse_streams(b, up, levels, systems, secs):
    """Busbar's shape: 64 deltas paced 20 ms; raise concurrency until a
    frame is lost or a gap exceeds 10x the pace."""
    log("sse streams: %s x (64 events, 20 ms), systems %s" %
        (levels, ",".join(systems)))
    out = {}
    for s in systems:
        out[s] = {"levels": {}, "sustained": 0}
        for k in levels:
            p, port = b.start_sut(s, up)
            samp = Sampler(p) if p is not None else None
            idle = p.rss_kb() if p is not None else 0
            args, hdrs = sse_args(64, 20, k, secs, stagger=1000)
            res = b.loadgen_run(port, "streams%d-%s" % (k, s), args,
                                b.headers(up, b.intent("sse%d" % k)) + hdrs)
            cell = {"streams_ok": res["streams_ok"],
                    "short": res["streams_short"],
                    "lost": res["events_lost"], "stalls": res["stalls"],
                    "events_per_s": res["events_per_s"],
                    "ttfe_p99": res["ttfe_us"]["p99"],
                    "gap_p99": res["gap_us"]["p99"],
                    "delay_p99": res["delay_us"]["p99"],
                    "errors": res["errors"] + res["non2xx"]}
            if samp is not None:
                cell["rss_peak_mb"] = samp.peak() / 1024
                cell["rss_idle_mb"] = idle / 1024
                cell["rss_mb_per_1000"] = (samp.peak() - idle) / 1024 / k * 1e3
                samp.stop()
            if p is not None:
                p.stop()
            out[s]["levels"][k] = cell
            good = (cell["lost"] == 0 and cell["short"] == 0 and
                    cell["stalls"] == 0 and cell["errors"] == 0 and
                    cell["streams_ok"] >= k)
            cell["good"] = good
            if not good:
                break
            out[s]["sustained"] = k
            out[s]["fps"] = cell["events_per_s"]
        log("  %s: %d streams sustained" % (s, out[s]["sustained"]))
    b.results["sse_streams"] = out
    return out


# --------------------------------------------------------------------------
# The report.

def fmt(x, nd=0):
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return ("%%.%df" % nd) % x


def write_doc(b, path):
    R = b.results
    M = R["machine"]
    cols = ["direct", "nginx", "haproxy", "portkey", "T1", "T2", "T3"]
    names = {"direct": "direct", "nginx": "nginx proxy",
             "haproxy": "HAProxy", "portkey": "Portkey",
             "T1": "tollgate T1", "T2": "tollgate T2", "T3": "tollgate T3"}

    def row(label, f):
        cells = []
        for c in cols:
            try:
                v = f(c)
            except (KeyError, TypeError, ZeroDivisionError):
                v = "–"
            cells.append(v if v not in (None, "") else "–")
        return "| %s | %s |" % (label, " | ".join(cells))

    c1 = R.get("c1", {})
    tp = R.get("throughput", {})
    fr = R.get("fixed_rate", {})
    s1 = R.get("sse_c1", {})
    ss = R.get("sse_streams", {})
    big = R.get("body2m", {})
    rates = sorted({r for v in fr.values() for r in v})
    lines = []
    A = lines.append
    A("# Benchmarks")
    A("")
    A("Generated by `make bench` (bench/run.py); the raw output of this run is "
      "in `%s`. Every figure below was measured side by side in one run "
      "on one machine (the method is in bench/run.py), and only the deltas "
      "and ratios mean anything on another day."
      % os.path.relpath(b.out, SOURCE))
    A("")
    A("- **Date:** %s" % M["date"])
    A("- **Machine:** %s CPUs, %s, kernel %s; load average at start %s, "
      "at end %s" % (M["nproc"], M["cpu"], M["kernel"],
                     " / ".join("%.2f" % x for x in M["loadavg_start"]),
                     " / ".join("%.2f" % x for x in M.get("loadavg_end",
                                                         (0, 0, 0)))))
    A("- **Versions:** tollgate %s, nginx %s, HAProxy %s, Portkey gateway %s "
      "(Node %s), wrk %s, SQLite %s, libcurl %s, libevent %s" % (
          M["tollgate"], M["nginx"], M["haproxy"], M["portkey"], M["node"],
          M["wrk"], M["sqlite"], M["libcurl"], M["libevent"]))
    A("- **Pinning:** load generator and upstream mock on CPU 0, the system "
      "under test alone on CPU 1 (nginx and HAProxy one worker/thread, "
      "Portkey one Node process, tollgate with its writer thread).")
    A("- **Systems:** T1 = tollgate, ledger `durability: process`; T2 = "
      "`durability: power` (fsync per group commit); T3 = T1 plus a daily "
      "budget and rate limits every call is checked and settled against. "
      "tollgate has no mode without the ledger (each call's reservation "
      "is written to the ledger's journal before it is forwarded; under "
      "`power` also synced), so there is no T0.")
    fs = R.get("fsync", {})
    A("- **Disk:** 4 KiB write + fdatasync on the ledger's filesystem: "
      "p50 %s µs, p99 %s µs." % (fmt(fs.get("p50_us")),
                                 fmt(fs.get("p99_us"))))
    A("")
    A("| Metric | %s |" % " | ".join(names[c] for c in cols))
    A("|---|%s" % ("---|" * len(cols)))
    A(row("c=1 latency p50 / p99 (µs)", lambda c: "%s / %s" % (
        fmt(c1[c]["p50"]), fmt(c1[c]["p99"]))))
    A(row("c=1 **added** p50 / p99 (µs)", lambda c: "%s / %s" % (
        fmt(c1[c]["added_p50"]), fmt(c1[c]["added_p99"]))))
    A(row("Max req/s (wrk c=64)", lambda c: fmt(tp[c]["rps"])))
    A(row("req/s ratio vs nginx", lambda c: fmt(tp[c]["ratio_nginx"], 2)))
    for r in rates:
        A(row("p99 @ %d req/s open loop (µs)" % r, lambda c, r=r: (
            (fmt(fr[c][r]["p99"]) if fr[c][r]["ok"] else "–") +
            ("" if fr[c][r]["errors"] == 0 else
                                    " (%d err)" % fr[c][r]["errors"]))))
    inf = R.get("inflight", {})
    A(row("Sustained req/s, upstream 20 ms (p99 there, µs)",
          lambda c: "%d (%s)" % (inf[c]["sustained"], fmt(
              inf[c]["levels"][inf[c]["sustained"]]["p99"])
              if inf[c]["sustained"] else "–")))
    A(row("2 MiB body c=1 added p50 / p99 (µs)", lambda c: "%s / %s" % (
        fmt(big[c]["added_p50"]), fmt(big[c]["added_p99"]))))
    A(row("SSE c=1 added first event p50 / p99 (µs)", lambda c: (
        s1[c]["error"][:40] if "error" in s1[c] else "%s / %s" % (
            fmt(s1[c].get("added_ttfe_p50")),
            fmt(s1[c].get("added_ttfe_p99"))))))
    A(row("SSE c=1 added event delivery p99 (µs)", lambda c: (
        "–" if "error" in s1[c] else fmt(s1[c].get("added_delay_p99")))))
    A(row("SSE c=1 added inter-event gap p99 (µs)", lambda c: (
        "–" if "error" in s1[c] else fmt(s1[c].get("added_gap_p99")))))
    A(row("Streams sustained, 64 × 20 ms (events/s)", lambda c: "%d (%s)" % (
        ss[c]["sustained"], fmt(ss[c].get("fps")))))
    A(row("RSS idle / under load / peak / 3 s after (MB)",
          lambda c: "%s / %s / %s / %s" % (
              fmt(tp[c]["rss_idle_mb"], 1), fmt(tp[c]["rss_load_mb"], 1),
              fmt(tp[c]["rss_peak_mb"], 1), fmt(tp[c]["rss_after_mb"], 1))))
    A(row("Peak RSS at the most streams (MB)", lambda c: fmt(max(
        v["rss_peak_mb"] for v in ss[c]["levels"].values()), 1)))
    A(row("RSS per 1,000 open streams (MB)", lambda c: fmt(
        ss[c]["levels"][ss[c]["sustained"]]["rss_mb_per_1000"], 1)))
    A(row("CPU µs per call (wrk run)", lambda c: fmt(
        tp[c]["cpu_us_per_call"], 1)))
    A(row("Ledger rows/s (one per call), rows per commit",
          lambda c: "%s, %s" % (
        fmt(tp[c]["ledger_rows_per_s"]), fmt(tp[c]["ledger_rows_per_commit"],
                                              1))))
    A(row("Ledger writer busy (wrk run), mean commit (µs)",
          lambda c: "%s %%, %s" % (fmt(100 * tp[c]["ledger_writer_busy"]),
                                   fmt(tp[c]["ledger_commit_mean_us"]))))
    A(row("Ledger checkpoints off the commit path (wrk run): count, mean / "
          "max (ms)", lambda c: "%s, %s / %s" % (
              fmt(tp[c]["ledger_checkpoints"]),
              fmt(tp[c]["ledger_checkpoint_mean_ms"], 1),
              fmt(tp[c]["ledger_checkpoint_max_ms"], 1))))
    A(row("Ledger rows lost, graceful stop (all cells)", lambda c: str(
        sum(v["ledger_lost_rows"] for v in fr[c].values()) +
        tp[c]["ledger_lost_rows"])))
    cr = R.get("crash", {})
    A(row("Answered calls without a row after kill -9", lambda c: (
        "%d of %d" % (cr[c]["lost_acked"], cr[c]["client_2xx"]))))
    A(row("Token sums exact (all fixed-rate cells)", lambda c: (
        "yes" if all(v["tokens_exact"] for v in fr[c].values())
        else "no")))
    A("")
    A("Notes:")
    A("")
    A("- c=1: %s interleaved rounds per system, the median of the rounds' "
      "p50 and p99; added = system − direct. Zero-delay nginx `return 200` "
      "upstream." % R.get("c1_rounds", "?"))
    A("- Fixed rates: open loop, 64 connections, latency from each request's "
      "scheduled time (no coordinated omission); a sweep stops after a cell "
      "with > 0.1 % errors or p99 > 1 s.")
    A("- SSE: fakeprov upstream, OpenAI chat stream with `include_usage`. "
      "Event delivery = read time − fakeprov's CLOCK_MONOTONIC stamp of the "
      "event's write, the per-event cost of the path. Streams sustained: the "
      "highest concurrency with no lost or short stream, no gap over 10× the "
      "pace and every stream complete.")
    A("- Ledger rows lost: 2xx answers the client saw minus `status = ok` "
      "rows with the cell's intent, after a graceful stop. kill -9: tollgate "
      "killed at 70 %% of a %s open-loop run; 2xx answers minus rows of any "
      "status after SQLite recovered the WAL." % "1,000 req/s")
    A("- CPU µs per call: the system's utime + stime over the wrk run "
      "divided by the calls answered; 10⁶ / that is the most one core can "
      "answer, so it shows whether a throughput gap is CPU or waiting.")
    A("- tollgate logs one line per call to stderr (here a file), as it does "
      "in production; that write is part of its cost.")
    A("")
    A("Run it with `make bench` (installs wrk, HAProxy and the pinned "
      "Portkey gateway, builds `build-bench/` RelWithDebInfo, about 10 "
      "minutes). `make bench-smoke` is the half-minute check with generous "
      "bounds that CI runs (see the end of this page). `python3 "
      "bench/run.py --quick --out DIR --doc DIR/b.md` "
      "checks the tools in two minutes; its numbers mean nothing.")
    if R.get("verdict"):
        A("")
        A("## Targets")
        A("")
        for v in R["verdict"]:
            A("- " + v)
    if R.get("sections"):
        A("- Section wall times (s): %s." % ", ".join(
            "%s %s" % (k, fmt(v)) for k, v in R["sections"].items()))
    if "T1u" in c1:
        A("- tollgate T1 unpinned (its loop and ledger writer threads free "
          "on both cores, everything else as above) at c=1: p50 / p99 %s / "
          "%s µs, added %s / %s µs%s." % (
              fmt(c1["T1u"]["p50"]), fmt(c1["T1u"]["p99"]),
              fmt(c1["T1u"]["added_p50"]), fmt(c1["T1u"]["added_p99"]),
              "; the nginx proxy unpinned: %s / %s µs, added %s / %s µs" % (
                  fmt(c1["nginxu"]["p50"]), fmt(c1["nginxu"]["p99"]),
                  fmt(c1["nginxu"]["added_p50"]),
                  fmt(c1["nginxu"]["added_p99"])) if "nginxu" in c1
              else ""))
    un = R.get("throughput_unpinned")
    if un:
        A("")
        A("Unpinned (the realistic sidecar: the proxy and wrk free on both "
          "cores, the mock on CPU 0): nginx proxy %s req/s, tollgate T1 %s req/s "
          "(%s× nginx)." % (fmt(un.get("nginx")), fmt(un.get("T1")),
                            fmt(un["T1"] / un["nginx"], 2)
                            if un.get("nginx") else "–"))
    if R.get("notes"):
        A("")
        for n in R["notes"]:
            A("- " + n)
    # The profile and what was done about it: written by hand, kept beside
    # the generator so a new run does not lose it.
    analysis = os.path.join(HERE, "analysis.md")
    if os.path.exists(analysis):
        A("")
        with open(analysis) as f:
            A(f.read().rstrip("\n"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def cpu_why(tp, m):
    t, n = tp.get(m, {}), tp.get("nginx", {})
    if not t.get("cpu_us_per_call"):
        return ""
    return ("; it spends %.0f µs of CPU per call (nginx %.0f), so one core "
            "answers at most %.0f calls/s%s" % (
                t["cpu_us_per_call"], n.get("cpu_us_per_call", 0),
                1e6 / t["cpu_us_per_call"],
                ", and the ledger writer was busy %.0f %% of the run" %
                (100 * t["ledger_writer_busy"])
                if "ledger_writer_busy" in t else ""))


def verdict(b):
    R = b.results
    out = []
    c1 = R.get("c1", {})
    tp = R.get("throughput", {})
    s1 = R.get("sse_c1", {})
    ss = R.get("sse_streams", {})

    def say(ok, text):
        out.append(("**holds**: " if ok else "**not met**: ") + text)

    # The targets of the reservation journal: what tollgate adds within
    # 1.5x of what nginx adds in the same run, pinned (T1 against nginx)
    # and unpinned (T1u against nginxu).
    for m, ng in (("T1", "nginx"), ("T2", "nginx"), ("T3", "nginx"),
                  ("T1u", "nginxu")):
        if m in c1 and ng in c1:
            a50, a99 = c1[m]["added_p50"], c1[m]["added_p99"]
            n50, n99 = c1[ng]["added_p50"], c1[ng]["added_p99"]
            say(a50 <= 1.5 * n50 and a99 <= 1.5 * n99,
                "%s added p50 %.0f µs, p99 %.0f µs (target ≤ 1.5× %s's "
                "%.0f / %.0f: %.1f× / %.1f×)" % (
                    m, a50, a99, ng, n50, n99,
                    a50 / n50 if n50 > 0 else 0,
                    a99 / n99 if n99 > 0 else 0))
    for m in ("T1", "T2", "T3"):
        if m in tp:
            r = tp[m]["rps"]
            pk = tp.get("portkey", {}).get("rps", 0)
            say(tp[m]["ratio_nginx"] >= 0.6, "%s %.0f req/s at c=64, "
                "%.2f× nginx's (target ≥ 0.6)%s" % (
                    m, r, tp[m]["ratio_nginx"], cpu_why(tp, m)))
            if tp[m].get("cpu_us_per_call"):
                say(tp[m]["cpu_us_per_call"] <= 40,
                    "%s %.0f µs of CPU per call (target ≤ 40; nginx %.0f)" %
                    (m, tp[m]["cpu_us_per_call"],
                     tp.get("nginx", {}).get("cpu_us_per_call", 0)))
            if pk:
                say(r >= 5 * pk, "%s %.1f× Portkey's req/s (target ≥ 5)" %
                    (m, r / pk))
    un = R.get("throughput_unpinned", {})
    if un.get("T1") and un.get("nginx"):
        say(un["T1"] >= 0.6 * un["nginx"],
            "T1 unpinned %.0f req/s at c=64, %.2f× unpinned nginx's "
            "(target ≥ 0.6)" % (un["T1"], un["T1"] / un["nginx"]))
    if "T1" in tp:
        say(tp["T1"]["rss_peak_mb"] <= 20,
            "T1 peak RSS under c=64 load %.1f MB (target ≤ 20)" %
            tp["T1"]["rss_peak_mb"])
    if "T1" in s1 and "added_ttfe_p99" in s1["T1"]:
        say(s1["T1"]["added_ttfe_p99"] <= 200,
            "T1 added first-event p99 %.0f µs (target ≤ 200)" %
            s1["T1"]["added_ttfe_p99"])
        # Busbar's definition: the p99 inter-frame gap, minus direct's.
        say(s1["T1"].get("added_gap_p99", 1e9) <= 10,
            "T1 added per-event p99 %.0f µs (target ≤ 10; inter-event gap "
            "p99 minus direct's; nginx %s); added delivery delay p99 %.0f "
            "µs (nginx %s)" % (
                s1["T1"].get("added_gap_p99", float("nan")),
                fmt(s1.get("nginx", {}).get("added_gap_p99")),
                s1["T1"]["added_delay_p99"],
                fmt(s1.get("nginx", {}).get("added_delay_p99"))))
    if "T1" in ss:
        peak = max([v.get("rss_peak_mb", 0)
                    for v in ss["T1"]["levels"].values()] or [0])
        top = ss["T1"]["levels"].get(ss["T1"]["sustained"], {})
        say(ss["T1"]["sustained"] >= 512,
            "T1 %d concurrent streams with none lost (target 512; direct "
            "sustained %d on the same rig)%s" % (
                ss["T1"]["sustained"], ss.get("direct", {}).get(
                    "sustained", 0),
                ", %.1f MB RSS per 1,000 streams" % top["rss_mb_per_1000"]
                if "rss_mb_per_1000" in top else ""))
        # The target is stated at 512 streams; say so when that level ran.
        at512 = ss["T1"]["levels"].get(512, ss["T1"]["levels"].get("512"))
        nl = ss.get("nginx", {}).get("levels", {})
        ng512 = nl.get(512, nl.get("512", {})).get("rss_peak_mb")
        if at512 and "rss_peak_mb" in at512:
            say(at512["rss_peak_mb"] <= 20, "T1 peak RSS with 512 streams "
                "open %.1f MB (target ≤ 20, %+.1f; the nginx proxy %s MB "
                "with the same streams); %.1f MB at the most streams" % (
                    at512["rss_peak_mb"], at512["rss_peak_mb"] - 20,
                    fmt(ng512, 1), peak))
        else:
            say(peak <= 20, "T1 peak RSS with streams open %.1f MB "
                "(target ≤ 20)" % peak)
    fr = R.get("fixed_rate", {})
    for m in ("T1", "T2", "T3"):
        if m in fr and m in tp:
            lost = sum(v.get("ledger_lost_rows", 0) for v in fr[m].values())
            lost += tp[m].get("ledger_lost_rows", 0)
            exact = all(v.get("tokens_exact") for v in fr[m].values())
            say(lost == 0 and exact, "%s %d answered calls without their "
                "row after a graceful stop (target 0); token sums %s" % (
                    m, lost, "exact" if exact else "WRONG"))
    for m, c in sorted(R.get("crash", {}).items()):
        say(c["lost_acked"] == 0, "%s kill -9: %d of %d answered calls "
            "without a row (target 0; %d rows left in flight, charged at "
            "their reservation on restart)" % (
                m, c["lost_acked"], c["client_2xx"], c["in_flight"]))
    for m in ("T1", "T2"):
        if m in tp and "ledger_capacity_rows_per_s" in tp[m]:
            t = tp[m]
            say(t["ledger_writer_busy"] < 0.9,
                "%s ledger not the bottleneck: writer busy %.0f %% of the "
                "wrk run, %.0f rows/s (one per call, written final), "
                "%.1f per commit, capacity %.0f rows/s" % (
                    m, 100 * t["ledger_writer_busy"], t["ledger_rows_per_s"],
                    t["ledger_rows_per_commit"],
                    t["ledger_capacity_rows_per_s"]))
    return out


def sec_inflight(b, up, rates, secs, systems, conns=512):
    """Busbar's "sustained RPS @20 ms": the upstream takes 20 ms per call,
    so calls pile up in flight; the highest open-loop rate served with
    under 0.1 % errors, p99 under 1 s and at least 95 % of the rate."""
    log("in flight @20 ms: %s req/s, %d s each, systems %s" %
        (rates, secs, ",".join(systems)))
    out = {}
    for s in systems:
        if s == "portkey" and not os.path.exists(b.portkey_js()):
            continue
        p, port = b.start_sut(s, up)
        out[s] = {"levels": {}, "sustained": 0}
        for rate in rates:
            res = b.loadgen_run(port, "inflight%d-%s" % (rate, s), [
                "-c", str(conns), "-r", str(rate), "-d", str(secs), "-w",
                str(rate // 4), "--grace-ms", "5000", "-b", REQUEST],
                b.headers(up, b.intent("inflight")) +
                ["x-fake-delay-ms: 20"] + FAKE_USAGE)
            bad = res["errors"] + res["non2xx"] + res["unsent"]
            good = (bad <= 0.001 * max(1, res["requests"]) and
                    res["lat_us"]["p99"] < 1e6 and
                    res["achieved_rps"] >= 0.95 * rate)
            out[s]["levels"][rate] = {"p50": res["lat_us"]["p50"],
                                      "p99": res["lat_us"]["p99"],
                                      "achieved": res["achieved_rps"],
                                      "errors": bad, "good": good}
            if not good:
                break
            out[s]["sustained"] = rate
        if p is not None:
            p.stop()
        log("  %s: %d req/s sustained" % (s, out[s]["sustained"]))
    b.results["inflight"] = out
    return out


def sec_crash(b, up, modes, rate=1000, secs=3.0):
    """kill -9 tollgate under open-loop load: every 2xx the client saw must
    have its row (reserved before forwarding), whatever its status, once
    tollgate has started again on the ledger and written what its journal
    held. bench/crashloop.py (make crashloop) checks it call by call."""
    log("kill -9 at %d req/s: %s" % (rate, ",".join(modes)))
    out = {}
    for m in modes:
        p, port = b.start_tollgate(m, up)
        intent = b.intent("crash-" + m)
        killer = threading.Timer(secs * 0.7, lambda: os.kill(p.pid,
                                                             signal.SIGKILL))
        killer.start()
        res = b.loadgen_run(port, "crash-" + m, [
            "-c", "16", "-r", str(rate), "-d", str(secs), "--grace-ms",
            "1000", "-b", REQUEST],
            b.headers(up, intent))
        killer.join()
        p.stop()
        # The next start writes the calls the journal holds and SQLite
        # lacks (settled, or interrupted at their reservation).
        conf = os.path.join(os.path.dirname(p.ledger), "tollgate.yaml")
        again = Proc("tollgate-" + m + "-restart",
                     [b.tollgate, "-d", "-c", conf], b.work, cpu=1)
        wait_port(port, again, 20)
        if again.stop() != 0:
            raise RuntimeError("tollgate did not stop cleanly after the "
                               "restart: see " + again.log)
        db = sqlite3.connect("file:%s?mode=ro" % p.ledger, uri=True)
        try:
            n, inflight = db.execute(
                "SELECT count(*), sum(status = 'in_flight') FROM calls "
                "WHERE intent = ?", (intent,)).fetchone()
        finally:
            db.close()
        ok = res["ok"] + res["warm_ok"]
        out[m] = {"client_2xx": ok, "rows": n, "in_flight": inflight or 0,
                  "lost_acked": max(0, ok - n)}
        log("  %s: %d answered, %d rows (%d left in flight), %d lost" % (
            m, ok, n, inflight or 0, max(0, ok - n)))
    b.results["crash"] = out
    return out


def sec_body2m(b, up, rounds, n):
    log("2 MiB body: %d rounds x %d" % (rounds, n))
    out = sec_added_latency(b, up, ["-z", str(2 * 1024 * 1024)], rounds, n,
                            20, ["direct", "nginx", "haproxy", "portkey",
                                 "T1"], "body2m", "2 MiB body")
    return out


def full(args):
    b = Bench(args)
    R = b.results
    R["machine"] = machine()
    R["c1_rounds"] = args.rounds
    if os.getloadavg()[0] > 0.5:
        R.setdefault("notes", []).append(
            "The load average was %.2f when this run started: the machine "
            "was not quiet, so treat the absolute numbers with suspicion." %
            os.getloadavg()[0])
    q = args.quick
    R["sections"] = {}
    complete = False
    try:
        R["fsync"] = fsync_probe(b.work, 200 if q else 1000)
        b.record("fsync", R["fsync"])
        mock, mport = b.start_nginx_mock()
        fake, fport = b.start_fakeprov()
        if q:
            plan = [
                ("c1", lambda: sec_added_latency(b, mport, rounds=2, n=300,
                                                 warm=100)),
                ("throughput", lambda: sec_throughput(b, mport, 2)),
                ("fixed_rate", lambda: sec_fixed_rate(b, mport, 2, [1000])),
                ("body2m", lambda: sec_body2m(b, mport, 1, 10)),
                ("sse_c1", lambda: sec_sse_c1(b, fport, 1, 1, [
                    "direct", "nginx", "haproxy", "portkey", "T1"])),
                ("sse_streams", lambda: sec_sse_streams(
                    b, fport, [16, 32], ["direct", "T1"], 2)),
                ("crash", lambda: sec_crash(b, mport, ["T1", "T2"], 500,
                                            2.0)),
                ("inflight", lambda: sec_inflight(b, fport, [500, 1000], 2,
                                                  ["direct", "T1"])),
            ]
        else:
            plan = [
                ("c1", lambda: sec_added_latency(
                    b, mport, rounds=args.rounds,
                    systems=SYSTEMS + ["nginxu", "T1u"] + (
                        ["T1m"] if args.memory_limit else []))),
                ("throughput", lambda: sec_throughput(b, mport, 10,
                                                      unpinned=True)),
                ("fixed_rate", lambda: sec_fixed_rate(
                    b, mport, 4, [1000, 2000, 5000, 10000])),
                ("body2m", lambda: sec_body2m(b, mport, 3, 100)),
                ("sse_c1", lambda: sec_sse_c1(b, fport, 3, 2, [
                    "direct", "nginx", "haproxy", "portkey", "T1"])),
                ("sse_streams", lambda: sec_sse_streams(
                    b, fport, [64, 128, 256, 512, 1024],
                    ["direct", "nginx", "T1"], 3)),
                ("crash", lambda: sec_crash(b, mport, ["T1", "T2"])),
                ("inflight", lambda: sec_inflight(
                    b, fport, [1000, 2000, 4000, 8000], 3,
                    ["direct", "nginx", "portkey", "T1"])),
            ]
        if args.sections:
            plan = [(n, f) for n, f in plan
                    if n in args.sections.split(",")]
        for name, fn in plan:
            t = time.monotonic()
            try:
                fn()
            except Exception as e:  # one broken section spoils no other
                R.setdefault("notes", []).append(
                    "Section %s failed: %s: %s" % (name, type(e).__name__,
                                                   str(e)[:300]))
                log("section %s failed: %s" % (name, e))
                stop_all()
                mock, mport = b.start_nginx_mock()
                fake, fport = b.start_fakeprov()
            R["sections"][name] = round(time.monotonic() - t, 1)
            log("section %s: %.0f s" % (name, R["sections"][name]))
        mock.stop()
        fake.stop()
        complete = True
    finally:
        stop_all()
        if not complete:
            R.setdefault("notes", []).append(
                "The run was interrupted; the sections it did not reach are "
                "shown as –.")
        R["machine"]["loadavg_end"] = os.getloadavg()
        R["verdict"] = verdict(b)
        with open(os.path.join(b.out, "results.json"), "w") as f:
            json.dump(R, f, indent=1, sort_keys=True, default=str)
        # Keep the process logs with the raw output.
        logs = os.path.join(b.out, "logs")
        os.makedirs(logs, exist_ok=True)
        for root, _, files in os.walk(b.work):
            for fn in files:
                if fn.endswith(".log"):
                    rel = os.path.relpath(os.path.join(root, fn), b.work)
                    keep_log(os.path.join(root, fn),
                             os.path.join(logs, rel.replace("/", "_")))
        shutil.rmtree(b.work, ignore_errors=True)
        write_doc(b, args.doc)
        log("wrote %s and %s" % (args.doc, b.out))
    for v in R["verdict"]:
        log(v.replace("**", ""))
    return 0 if complete and not any(
        n.startswith("Section ") for n in R.get("notes", [])) else 1


# --------------------------------------------------------------------------
# The smoke test: about 30 s, generous bounds; CI runs it (.ci/run).

SMOKE_NICE = -10
SMOKE_ATTEMPTS = 5


def smoke(args):
    # The smoke bounds the latency tollgate adds, on machines that run
    # other jobs. Two things there add milliseconds that are not
    # tollgate's: a waking thread waiting out a neighbour's time slice, and
    # (on a VM) waking an idle virtual CPU. So every process of the smoke
    # inherits a raised priority, and all of them share CPU 0: each
    # hand-off then wakes a thread on the CPU that is already running.
    try:
        os.setpriority(os.PRIO_PROCESS, 0, SMOKE_NICE)
        log("smoke: running at niceness %d" % SMOKE_NICE)
    except OSError as e:
        log("smoke: cannot raise priority (%s); neighbours may add latency" %
            e.strerror)
    b = Bench(args)
    fails = []
    try:
        fake, fport = b.start_fakeprov()
        tg, tport = b.start_tollgate("T1", fport, cpu=0)
        samp = Sampler(tg)
        hdr = b.headers(fport, "smoke") + FAKE_USAGE
        intents = {}
        # Added p99 at c=1 < 2 ms. A loaded machine can push one attempt's
        # p99 up; the bound holds if any of the attempts meets it.
        best = None
        for attempt in range(SMOKE_ATTEMPTS):
            d99, t99 = [], []
            for r in range(5):
                res = b.loadgen_run(fport, "smoke-direct", [
                    "-c", "1", "-r", "0", "-n", "1000", "-w", "100", "-b",
                    REQUEST], hdr)
                d99.append(res["lat_us"]["p99"])
                it = b.intent("c1")
                res = b.loadgen_run(tport, "smoke-tollgate", [
                    "-c", "1", "-r", "0", "-n", "1000", "-w", "100", "-b",
                    REQUEST], b.headers(fport, it) + FAKE_USAGE)
                t99.append(res["lat_us"]["p99"])
                intents[it] = res["ok"] + res["warm_ok"]
                if res["errors"] or res["non2xx"]:
                    fails.append("c=1: %d errors, %d non-2xx" %
                                 (res["errors"], res["non2xx"]))
            added = median(t99) - median(d99)
            best = added if best is None else min(best, added)
            log("smoke: c=1 added p99 %.0f us (direct p99 %.0f us)" %
                (added, median(d99)))
            if best < 2000:
                break
        if best >= 2000:
            fails.append("c=1 added p99 %.0f us >= 2000 us in %d attempts" %
                         (best, SMOKE_ATTEMPTS))
        # Open loop, 500 req/s for 5 s on 16 connections.
        it = b.intent("rate")
        res = b.loadgen_run(tport, "smoke-rate500", [
            "-c", "16", "-r", "500", "-d", "5", "-b", REQUEST],
            b.headers(fport, it) + FAKE_USAGE)
        intents[it] = res["ok"]
        log("smoke: 500 req/s p99 %.0f us, %d errors" %
            (res["lat_us"]["p99"], res["errors"] + res["non2xx"]))
        if res["errors"] or res["non2xx"] or res["unsent"]:
            fails.append("500 req/s: %d errors, %d non-2xx, %d never sent" %
                         (res["errors"], res["non2xx"], res["unsent"]))
        # 32 streams of 16 events at 5 ms: none lost.
        a, h = sse_args(16, 5, 32, 3)
        res = b.loadgen_run(tport, "smoke-sse", a,
                            b.headers(fport, b.intent("sse")) + h)
        log("smoke: %d streams, %d short, %d events lost" %
            (res["streams_ok"], res["streams_short"], res["events_lost"]))
        if res["streams_short"] or res["events_lost"] or \
                res["streams_ok"] == 0:
            fails.append("sse: %d short streams, %d events lost" %
                         (res["streams_short"], res["events_lost"]))
        peak = max(samp.peak(), tg.hwm_kb()) / 1024
        samp.stop()
        rc = tg.stop()
        if rc != 0:
            fails.append("tollgate exited %s on SIGTERM" % rc)
        log("smoke: peak RSS %.1f MB" % peak)
        if peak >= 64:
            fails.append("peak RSS %.1f MB >= 64 MB" % peak)
        counts = ledger_counts(tg.ledger, b.run_id)
        for it, okn in intents.items():
            c = counts.get(it, (0, 0, 0, 0))
            if c[0] < okn:
                fails.append("ledger: %s: %d rows for %d answered calls" %
                             (it, c[0], okn))
            if c[2] != PROMPT_TOKENS * c[0] or \
                    c[3] != COMPLETION_TOKENS * c[0]:
                fails.append("ledger: %s: token sums %d/%d for %d rows" %
                             (it, c[2], c[3], c[0]))
        log("smoke: ledger rows checked for %d cells" % len(intents))
        fake.stop()
    except Exception as e:  # a crash is a failure, never a pass
        fails.append("%s: %s" % (type(e).__name__, e))
    finally:
        stop_all()
        shutil.rmtree(b.work, ignore_errors=True)
    for f in fails:
        log("FAIL:", f)
    log("smoke: %s" % ("FAIL" if fails else "ok"))
    return 1 if fails else 0


INSN_BASE = 300
INSN_CALLS = 3000


def instructions(args):
    """Instructions per call on every thread of tollgate T1 (callgrind).

    Two runs of the same closed loop at c=8 against the nginx mock, one of
    INSN_BASE calls and one of INSN_BASE + INSN_CALLS; the difference of
    their totals, divided by INSN_CALLS, leaves out start-up, warm-up and
    shutdown. Counts are exact and do not depend on the machine's load, so
    two commits can be compared on a busy machine."""
    b = Bench(args)
    totals = {}
    try:
        mock, mport = b.start_nginx_mock()
        for n in (INSN_BASE, INSN_BASE + INSN_CALLS):
            out = os.path.join(b.out, "callgrind.%d" % n)
            tg, tport = b.start_tollgate("T1", mport, cpu=None, wrap=(
                "valgrind", "--tool=callgrind", "--quiet",
                "--callgrind-out-file=" + out))
            res = b.loadgen_run(tport, "insn-%d" % n, [
                "-c", "8", "-r", "0", "-n", str(n), "-b", REQUEST],
                b.headers(mport, "insn"), timeout=1800)
            if res["ok"] != n:
                raise RuntimeError("%d of %d calls answered" % (res["ok"], n))
            if tg.stop(timeout=120) != 0:
                raise RuntimeError("tollgate under valgrind: see " + tg.log)
            with open(out) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        totals[n] = int(line.split()[1])
                        break
        mock.stop()
    finally:
        stop_all()
        shutil.rmtree(b.work, ignore_errors=True)
    per = (totals[INSN_BASE + INSN_CALLS] - totals[INSN_BASE]) / INSN_CALLS
    b.record("instructions", {"per_call": per, "totals": totals})
    print("instructions per call (callgrind, every thread, c=8, nginx "
          "mock): %.1fk" % (per / 1000))
    return 0


def _intkeys(pairs):
    """JSON turned the rate and stream-count keys into strings."""
    return {int(k) if k.isdigit() else k: v for k, v in pairs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get(
        "BENCH_BUILD", os.path.join(SOURCE, "build-bench")))
    ap.add_argument("--out")
    ap.add_argument("--doc", default=os.path.join(SOURCE, "docs",
                                                  "benchmarks.md"))
    ap.add_argument("--tmpdir", default=None,
                    help="where ledgers go (default: $TMPDIR); keep it on "
                    "a real disk, not tmpfs")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--memory-limit", type=int, metavar="MB",
                    help="also run T1m: T1 in a memory cgroup of MB MiB, "
                    "the page cache dropped at its start (with "
                    "--seed-ledger: a ledger that outgrows memory)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="seconds per section: checks the tools, not the "
                    "numbers")
    ap.add_argument("--instructions", action="store_true",
                    help="only count instructions per call under callgrind "
                    "(about 2 minutes; needs valgrind)")
    ap.add_argument("--redoc", action="store_true",
                    help="only rewrite --doc from --out/results.json")
    ap.add_argument("--sections",
                    help="only these sections, comma-separated (c1, "
                    "throughput, fixed_rate, ...)")
    ap.add_argument("--seed-ledger",
                    help="start every tollgate from a copy of this ledger "
                    "(a large one from bench/ledger_1m.py --keep)")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    if args.redoc:
        class Done:
            pass
        b = Done()
        b.out = os.path.abspath(args.out)
        with open(os.path.join(b.out, "results.json")) as f:
            b.results = json.load(f, object_pairs_hook=_intkeys)
        b.results["verdict"] = verdict(b)
        write_doc(b, args.doc)
        return 0
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    except (ValueError, OSError):
        pass
    signal.signal(signal.SIGTERM, lambda *a: (stop_all(), sys.exit(143)))
    if args.instructions:
        if args.out is None:
            args.out = tempfile.mkdtemp(prefix="tg-insn-")
        return instructions(args)
    if args.smoke:
        if args.out is None:
            args.out = tempfile.mkdtemp(prefix="tg-smoke-")
        return smoke(args)
    if args.out is None:
        args.out = os.path.join(HERE, "results", datetime.datetime.utcnow()
                                .strftime("%Y-%m-%d"))
    return full(args)


if __name__ == "__main__":
    sys.exit(main())
