# SPDX-License-Identifier: Apache-2.0
"""Integration test harness for tollgate (Python 3 standard library only).

Every test gets its own temp dir, starts the processes it needs (fakeprov,
tollgate) on 127.0.0.1 ephemeral ports and stops them again, even when it
fails: processes are stopped by the test's cleanups, by an atexit hook, and,
if this interpreter is killed outright (ctest timeout), by PR_SET_PDEATHSIG.
Process logs are kept in the temp dir and printed only when a test fails.

The pieces:
  TGTestCase       unittest.TestCase with fakeprov()/tollgate()/raw() helpers
  Fakeprov         the fake provider process and its --record file
  Tollgate         the daemon: port from stderr, log helpers, RSS, signals
  RawConn          a raw-socket HTTP/1.1 client that shows framing and close
  make_config      YAML config text from plain Python values
  test_pki         a test CA + server cert for 127.0.0.1, and an unrelated CA

Environment: TOLLGATE_BIN, FAKEPROV_BIN, TG_SOURCE_DIR (set by ctest).
TG_KEEP_TMP=1 keeps every temp dir; TG_TEST_VERBOSE=1 prints logs always.
"""

import atexit
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# --------------------------------------------------------------------------
# Locating the binaries.

SOURCE_DIR = os.environ.get("TG_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))


def _find_bin(env, name):
    path = os.environ.get(env)
    if path:
        return path
    for d in (os.environ.get("TG_BUILD_DIR"), os.path.join(SOURCE_DIR, "build"),
              "/tmp/it-build"):
        for sub in ("", "tests"):
            if d and os.access(os.path.join(d, sub, name), os.X_OK):
                return os.path.join(d, sub, name)
    return None


TOLLGATE_BIN = _find_bin("TOLLGATE_BIN", "tollgate")
FAKEPROV_BIN = _find_bin("FAKEPROV_BIN", "fakeprov")


def _faultfs_lib():
    lib = os.environ.get("FAULTFS_LIB")
    if lib:
        return lib
    if FAKEPROV_BIN:
        return os.path.join(os.path.dirname(FAKEPROV_BIN), "libfaultfs.so")
    return None


# The fault shim (tests/faults/faultfs.c), LD_PRELOADed by faultfs_env.
FAULTFS_LIB = _faultfs_lib()


def _asan_runtime(binary):
    """The ASan runtime binary links, if any: it must come first in
    LD_PRELOAD, before the shim."""
    try:
        out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(rb"libasan\S*\s+=>\s+(\S+)", out)
    return m.group(1).decode() if m else None


def faultfs_env(**variables):
    """An env for Tollgate with the fault shim preloaded (after the ASan
    runtime, when tollgate has one) and its FAULTFS_* variables."""
    if not (FAULTFS_LIB and os.path.exists(FAULTFS_LIB)):
        raise AssertionError("the fault shim is not built (FAULTFS_LIB=%r)"
                             % FAULTFS_LIB)
    preload = FAULTFS_LIB
    asan = _asan_runtime(TOLLGATE_BIN)
    if asan:
        preload = asan + ":" + FAULTFS_LIB
    env = {"LD_PRELOAD": preload}
    env.update(variables)
    return env

KiB = 1024
MiB = 1024 * 1024

# --------------------------------------------------------------------------
# Child processes: always reaped.

_live = set()
_live_lock = threading.Lock()

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None


def _child_setup():
    # Die with the test runner even if it is SIGKILLed (ctest timeout).
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgid(0, 0)


def _kill_all_live():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


atexit.register(_kill_all_live)


def _sigterm(signum, frame):
    _kill_all_live()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _sigterm)


class Proc:
    """A child process with its stdout/stderr captured to files."""

    def __init__(self, name, argv, tmpdir, env=None):
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(tmpdir, name + ".stdout")
        self.err_path = os.path.join(tmpdir, name + ".stderr")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        try:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._out,
                stderr=self._err, preexec_fn=_child_setup, env=env,
                cwd=tmpdir)
        except OSError as e:
            self._out.close()
            self._err.close()
            raise AssertionError("cannot start %s: %s" % (name, e))
        with _live_lock:
            _live.add(self.popen)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    @property
    def returncode(self):
        return self.popen.poll()

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout):
        """Wait for exit; return the exit code, or None on timeout."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.alive():
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass
        self.popen.wait(10)
        self._close_files()

    def _close_files(self):
        with _live_lock:
            _live.discard(self.popen)
        for f in (self._out, self._err):
            try:
                f.close()
            except Exception:
                pass

    def rss(self):
        return rss_of(self.pid)

    def describe(self, limit=200 * KiB):
        parts = ["----- %s (pid %d, rc %s): %s" %
                 (self.name, self.pid, self.returncode, " ".join(self.argv))]
        for label, text in (("stdout", self.stdout()), ("stderr", self.stderr())):
            if not text:
                continue
            if len(text) > limit:
                text = "[... %d bytes cut ...]\n" % (len(text) - limit) + \
                    text[-limit:]
            parts.append("--- %s %s:\n%s" % (self.name, label, text.rstrip()))
        return "\n".join(parts)


def rss_of(pid):
    """Resident set size of pid in bytes, from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Poll pred() until it returns a true value; return it, or None."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def free_port():
    """A loopback port with nothing listening on it (connect is refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# Test PKI, made once per process with the openssl CLI.

_pki = None
_pki_dir = None


def _openssl(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" %
                           (" ".join(args), r.stdout.decode("utf-8", "replace")))


def _make_ca(d, name):
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", name + ".key",
              "-out", name + ".pem", "-days", "3", "-subj",
              "/CN=tollgate test " + name,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)


def test_pki():
    """Return dict: ca, ca_key, cert, key (signed by ca, for 127.0.0.1 and
    localhost), other_ca (an unrelated CA). Paths to PEM files."""
    global _pki, _pki_dir
    if _pki:
        return _pki
    _pki_dir = tempfile.mkdtemp(prefix="tg-pki-")
    atexit.register(shutil.rmtree, _pki_dir, True)
    d = _pki_dir
    _make_ca(d, "ca")
    _make_ca(d, "otherca")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    _openssl(["req", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key",
              "-out", "server.csr", "-subj", "/CN=127.0.0.1"], d)
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey",
              "ca.key", "-set_serial", "4242", "-days", "3", "-out",
              "server.pem", "-extfile", "server.ext"], d)
    _pki = {k: os.path.join(d, v) for k, v in (
        ("ca", "ca.pem"), ("ca_key", "ca.key"), ("cert", "server.pem"),
        ("key", "server.key"), ("other_ca", "otherca.pem"))}
    return _pki


# --------------------------------------------------------------------------
# Config generation.

_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+-][A-Za-z0-9_./:@+ -]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "~", ""}


def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _RESERVED and \
            not s.endswith(" ") and ": " not in s and " #" not in s:
        return s
    return json.dumps(s)


def _emit(value, indent, out):
    pad = "  " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, k))
                _emit(v, indent + 1, out)
            elif isinstance(v, dict):
                out.append("%s%s: {}" % (pad, k))
            elif isinstance(v, list):
                out.append("%s%s: []" % (pad, k))
            else:
                out.append("%s%s: %s" % (pad, k, _scalar(v)))
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)):
                sub = []
                _emit(v, indent + 1, sub)
                first = sub[0].lstrip()
                out.append("%s- %s" % (pad, first))
                out.extend(sub[1:])
            else:
                out.append("%s- %s" % (pad, _scalar(v)))
    else:
        out.append(pad + _scalar(value))


def to_yaml(doc):
    out = []
    _emit(doc, 0, out)
    return "\n".join(out) + "\n"


def std_upstreams(port, scheme="http", **extra):
    """The usual upstream set, every family pointing at one fakeprov."""
    base = "%s://127.0.0.1:%d" % (scheme, port)
    ups = {
        "openai": {"type": "openai", "base_url": base},
        "anthropic": {"type": "anthropic", "base_url": base},
        "gemini": {"type": "gemini", "base_url": base},
        "azure": {"type": "azure_openai", "base_url": base},
        "local": {"type": "openai_compatible", "base_url": base},
    }
    ups.update(extra)
    return ups


def make_config(upstreams, limits=None, listen="127.0.0.1:0", extra=None):
    """Config text: listen, optional limits, upstreams, then extra keys."""
    doc = {"listen": listen}
    if limits:
        doc["limits"] = limits
    doc["upstreams"] = upstreams
    if extra:
        doc.update(extra)
    return to_yaml(doc)


# --------------------------------------------------------------------------
# fakeprov.

class Fakeprov(Proc):
    """fakeprov on 127.0.0.1:0, recording to a JSON-lines file."""

    LISTEN_RE = re.compile(r"fakeprov listening on 127\.0\.0\.1:(\d+) (https?)")

    def __init__(self, tmpdir, name="fakeprov", tls=None, args=()):
        if not FAKEPROV_BIN:
            raise AssertionError("FAKEPROV_BIN is not set and no build found")
        self.record_path = os.path.join(tmpdir, name + ".record.jsonl")
        argv = [FAKEPROV_BIN, "--listen", "127.0.0.1:0",
                "--record", self.record_path]
        if tls:
            argv += ["--tls-cert", tls["cert"], "--tls-key", tls["key"]]
        argv += list(args)
        Proc.__init__(self, name, argv, tmpdir)
        m = wait_until(lambda: self.LISTEN_RE.search(self.stdout()) or
                       (not self.alive() and "dead"), 10)
        if not m or m == "dead":
            desc = self.describe()
            self.kill()
            raise AssertionError("fakeprov did not start (no 'fakeprov "
                                 "listening on' line within 10 s)\n" + desc)
        self.port = int(m.group(1))
        self.scheme = m.group(2)
        self.base = "%s://127.0.0.1:%d" % (self.scheme, self.port)

    # -- the record file --------------------------------------------------

    def records(self):
        """Every complete JSON line in the record file, in file order."""
        try:
            with open(self.record_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in data.split(b"\n")[:-1] if not data.endswith(b"\n") \
                else data.split(b"\n"):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def requests(self):
        return [r for r in self.records() if r.get("event") == "request"]

    def find_requests(self, marker):
        """Request records whose body contains marker."""
        return [r for r in self.requests() if marker in (r.get("body") or "")]

    def wait_request(self, marker, timeout=10):
        """The one request record whose body contains marker, or None."""
        found = wait_until(lambda: self.find_requests(marker), timeout)
        return found[0] if found else None

    def mark(self):
        """How many requests are recorded so far (for 'nothing since')."""
        return len(self.requests())

    def end_event(self, seq):
        for r in self.records():
            if r.get("seq") == seq and r.get("event") != "request":
                return r.get("event")
        return None

    def wait_end(self, seq, timeout=10):
        """The end event ('done', 'client_closed', ...) of request seq."""
        return wait_until(lambda: self.end_event(seq), timeout)


def rec_header(rec, name):
    """All values of header name (case-insensitive) in a request record."""
    n = name.lower()
    return [v for k, v in rec.get("headers", []) if k.lower() == n]


# --------------------------------------------------------------------------
# tollgate.

class Tollgate(Proc):
    """tollgate -d -c FILE, its proxy port parsed from its stderr."""

    LISTEN_RE = re.compile(r"proxy listening on 127\.0\.0\.1:(\d+)")
    CALL_RE = re.compile(r"session (\d+): (\S+) (\S+) upstream=(\S+) "
                         r"status=(\d+)")

    def __init__(self, tmpdir, config_text, name="tollgate", verbose=False,
                 args=(), wait=True, env=None):
        if not TOLLGATE_BIN:
            raise AssertionError("TOLLGATE_BIN is not set and no build found")
        self.config_path = os.path.join(tmpdir, name + ".yaml")
        self.ledger_name = name
        self.write_config(config_text)
        argv = [TOLLGATE_BIN, "-d"] + (["-v"] if verbose else []) + \
            ["-c", self.config_path] + list(args)
        # env: variables to add to (or, with None values, drop from) ours.
        child_env = None
        if env:
            child_env = dict(os.environ)
            for k, v in env.items():
                if v is None:
                    child_env.pop(k, None)
                else:
                    child_env[k] = v
        Proc.__init__(self, name, argv, tmpdir, env=child_env)
        self.port = None
        if wait:
            self.wait_listening()

    def write_config(self, text):
        # Each tollgate owns its ledger (a second one on the same file is
        # refused), so one not named in the config gets its own file.
        if not re.search(r"^ledger:", text, re.M):
            text += "\nledger:\n  path: data/%s.db\n" % self.ledger_name
        # The admin API's default port is fixed (8788): tests running side
        # by side each take an ephemeral one unless the config says.
        if not re.search(r"^admin:", text, re.M):
            text += "\nadmin:\n  listen: 127.0.0.1:0\n"
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def wait_listening(self, timeout=15):
        m = wait_until(lambda: self.LISTEN_RE.search(self.stderr()) or
                       (not self.alive() and "dead"), timeout)
        if not m or m == "dead":
            desc = self.describe()
            with open(self.config_path) as f:
                cfg = f.read()
            self.kill()
            raise AssertionError(
                "tollgate did not log 'proxy listening on 127.0.0.1:PORT' "
                "within %d s (%s)\n--- config:\n%s\n%s" %
                (timeout, "it exited" if m == "dead" else "still running",
                 cfg, desc))
        self.port = int(m.group(1))
        return self.port

    def log(self):
        return self.stderr()

    def wait_log(self, pattern, timeout=10, start=0):
        """First match of regex pattern in stderr after offset start."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.stderr(), start), timeout)

    ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")

    def admin_get(self, path, token=None, timeout=10):
        """GET path on the admin listener: (status, parsed JSON or None)."""
        m = wait_until(lambda: self.ADMIN_RE.search(self.stderr()), 10)
        if not m:
            raise AssertionError("no 'admin listening on' line:\n" +
                                 self.describe())
        c = http.client.HTTPConnection("127.0.0.1", int(m.group(1)),
                                       timeout=timeout)
        try:
            hdrs = {"Authorization": "Bearer " + token} if token else {}
            c.request("GET", path, headers=hdrs)
            r = c.getresponse()
            body = r.read()
            try:
                return r.status, json.loads(body)
            except ValueError:
                return r.status, None
        finally:
            c.close()

    def wait_written(self, timeout=10, token=None, quiet=False):
        """Until the ledger's writer has nothing queued: every call
        answered before this has its row in the SQLite file (a call's row
        is written a moment after its answer). quiet: return on a
        timeout, or when this tollgate no longer answers, instead of
        failing."""
        m = self.ADMIN_RE.search(self.stderr()) if quiet else wait_until(
            lambda: self.ADMIN_RE.search(self.stderr()), 10)
        if not m or (quiet and not self.alive()):
            if quiet:
                return
            raise AssertionError("no 'admin listening on' line")
        port = int(m.group(1))

        def idle():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                c.request("GET", "/metrics", headers={
                    "Authorization": "Bearer " + token} if token else {})
                r = c.getresponse()
                body = r.read().decode()
            except (OSError, http.client.HTTPException):
                return quiet  # gone: nothing to wait for
            finally:
                c.close()
            if r.status != 200:
                return quiet
            return re.search(r"^tollgate_ledger_queue_depth 0$", body, re.M)
        if not wait_until(idle, timeout, 0.01) and not quiet:
            raise AssertionError("the ledger's writer still had rows "
                                 "queued after %d s" % timeout)

    def in_flight(self, token=None):
        """The calls in flight as /v1/calls shows them (rows in memory
        and in the journal, not yet in the SQLite file)."""
        status, body = self.admin_get(
            "/v1/calls?status=in_flight&limit=1000", token)
        if status != 200:
            raise AssertionError("/v1/calls?status=in_flight: %d %r" %
                                 (status, body))
        return body["calls"]

    def calls(self):
        """Per-call summary lines: list of dicts."""
        out = []
        for m in self.CALL_RE.finditer(self.stderr()):
            out.append({"session": int(m.group(1)), "method": m.group(2),
                        "path": m.group(3), "upstream": m.group(4),
                        "status": int(m.group(5)), "line": m.group(0)})
        return out

    def hup(self):
        self.signal(signal.SIGHUP)

    def stop(self, timeout=30):
        """SIGTERM and wait; return the exit code (None if it hung)."""
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            return None
        self._close_files()
        return rc


def run_check(config_text, tmpdir, name="check.yaml", timeout=20):
    """tollgate check -c FILE: (exit code, stdout, stderr, path)."""
    if not TOLLGATE_BIN:
        raise AssertionError("TOLLGATE_BIN is not set and no build found")
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write(config_text)
    r = subprocess.run([TOLLGATE_BIN, "check", "-c", path], cwd=tmpdir,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout,
                       preexec_fn=_child_setup)
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"), path)


# --------------------------------------------------------------------------
# Raw-socket HTTP/1.1 client.

def dechunk(raw):
    """The body of a whole raw HTTP/1.1 response framed by chunks: its
    chunks joined (a line such as "data: [DONE]" may span two)."""
    _head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("no end of head in %r" % raw[:200])
    body = b""
    while True:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            raise AssertionError("a chunk size line is cut: %r" % line[:80])
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            return body
        if len(rest) < size + 2:
            raise AssertionError("a chunk is cut")
        body += rest[:size]
        rest = rest[size + 2:]


def build_request(method, path, body=b"", headers=(), host="127.0.0.1",
                  content_length=True):
    """Exact request bytes. headers: list of (name, value) or raw lines."""
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path)]
    names = set()
    for h in headers:
        if isinstance(h, (tuple, list)):
            lines.append("%s: %s" % (h[0], h[1]))
            names.add(h[0].lower())
        else:
            lines.append(h)
            names.add(h.split(":", 1)[0].lower())
    if "host" not in names and host is not None:
        lines.insert(1, "Host: %s" % host)
    if content_length and "content-length" not in names and \
            (body or method in ("POST", "PUT")):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HTTPTimeout(AssertionError):
    """A read ran past its deadline; .partial holds what had arrived."""

    def __init__(self, msg, partial=None):
        AssertionError.__init__(self, msg)
        self.partial = partial


class Response:
    def __init__(self):
        self.status = None
        self.reason = ""
        self.headers = []          # [(name, value)] in order
        self.head_raw = b""
        self.body = b""            # decoded (de-chunked) body
        self.chunked = False
        self.complete = False      # terminating chunk / full CL / EOF-framed
        self.closed = False        # peer closed (EOF or reset) during read
        self.reset = False
        self.pieces = []           # [(monotonic time, decoded bytes)]
        self.t_head = None
        self.t_sent = None
        self._gen = None

    def header(self, name, default=None):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        b = self.body[:300]
        return "<Response %s chunked=%s complete=%s closed=%s body[%d]=%r>" % (
            self.status, self.chunked, self.complete, self.closed,
            len(self.body), b)


class RawConn:
    """One TCP connection; send exact bytes, read responses with framing."""

    def __init__(self, port, host="127.0.0.1", timeout=10, rcvbuf=None,
                 tls_ca=None, source=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            # Another loopback address (127.0.0.2, ...): another client.
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        if tls_ca:
            import ssl
            ctx = ssl.create_default_context(cafile=tls_ca)
            self.sock = ctx.wrap_socket(self.sock, server_hostname=host)
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.timeout = timeout

    def close(self, rst=False):
        if self.sock is None:
            return
        if rst:
            import struct
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
        try:
            self.sock.close()
        finally:
            self.sock = None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def try_send(self, data):
        """sendall that returns False instead of raising on a closed peer."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False
        except socket.timeout:
            return False

    def _fill(self, deadline, maxbytes=65536):
        """Read more bytes into buf. False on EOF/reset; raises on deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(maxbytes)
        except socket.timeout:
            raise
        except OSError:
            # ECONNRESET, or an abrupt end of a TLS session.
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _line(self, deadline):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if not self._fill(deadline):
                return None

    def _take(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                return None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_head(self, resp, deadline):
        raw = b""
        while True:
            line = self._line(deadline)
            if line is None:
                resp.closed = True
                resp.reset = self.reset
                resp.head_raw = raw
                return False
            raw += line
            if line in (b"\r\n", b"\n"):
                if resp.status is None:
                    continue
                # Skip interim 1xx responses.
                if 100 <= resp.status < 200:
                    resp.status, resp.headers, raw = None, [], b""
                    continue
                resp.head_raw = raw
                resp.t_head = time.monotonic()
                return True
            text = line.decode("latin-1").rstrip("\r\n")
            if resp.status is None:
                m = re.match(r"HTTP/1\.[01] (\d{3})(?: (.*))?$", text)
                if not m:
                    raise AssertionError("bad status line %r" % text)
                resp.status = int(m.group(1))
                resp.reason = m.group(2) or ""
            else:
                k, _, v = text.partition(":")
                resp.headers.append((k.strip(), v.strip()))

    def iter_body(self, resp, deadline, method="POST", read_size=65536):
        """Yield decoded body pieces as they arrive; sets resp fields.
        Resumable: after a break, calling it again continues the body."""
        self._deadline = deadline
        if resp._gen is None:
            resp._gen = self._body_gen(resp, method, read_size)
        while True:
            try:
                data = next(resp._gen)
            except StopIteration:
                return
            yield data

    def _body_gen(self, resp, method, read_size):
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")

        def piece(data):
            resp.body += data
            resp.pieces.append((time.monotonic(), data))
            return data

        if method == "HEAD" or resp.status in (204, 304):
            resp.complete = True
            return
        if "chunked" in te:
            resp.chunked = True
            while True:
                line = self._line(self._deadline)
                if line is None:
                    break
                size_s = line.split(b";")[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise AssertionError("bad chunk size line %r" % line)
                if size == 0:
                    # Trailers, then the empty line.
                    while True:
                        t = self._line(self._deadline)
                        if t is None or t in (b"\r\n", b"\n"):
                            break
                    resp.complete = t is not None
                    return
                got = 0
                while got < size:
                    if not self.buf and not self._fill(self._deadline, read_size):
                        break
                    n = min(size - got, len(self.buf))
                    data = bytes(self.buf[:n])
                    del self.buf[:n]
                    got += n
                    yield piece(data)
                if got < size:
                    break
                if self._take(2, self._deadline) is None:
                    break
            resp.closed = True
            resp.reset = self.reset
            return
        if cl is not None:
            left = int(cl)
            while left > 0:
                if not self.buf and not self._fill(self._deadline, read_size):
                    resp.closed = True
                    resp.reset = self.reset
                    return
                n = min(left, len(self.buf))
                data = bytes(self.buf[:n])
                del self.buf[:n]
                left -= n
                yield piece(data)
            resp.complete = True
            return
        # Framed by close.
        while True:
            if not self.buf and not self._fill(self._deadline, read_size):
                resp.closed = True
                resp.reset = self.reset
                resp.complete = not self.reset
                return
            data = bytes(self.buf)
            self.buf.clear()
            yield piece(data)

    def read_response(self, timeout=None, method="POST"):
        """Read one whole response. Raises HTTPTimeout with the partial
        response when the deadline passes first."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        resp = Response()
        try:
            if not self.read_head(resp, deadline):
                return resp
            for _ in self.iter_body(resp, deadline, method):
                pass
        except socket.timeout:
            raise HTTPTimeout("no complete response within %.1f s: %r" %
                              (timeout, resp), resp)
        return resp

    def wait_closed(self, timeout=5):
        """True if the peer closes (EOF/RST) within timeout; bytes that
        arrive meanwhile are kept in buf."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True


def http_call(port, method, path, body=b"", headers=(), timeout=15,
              raw=None, tls_ca=None):
    """One request on a fresh connection; returns the Response."""
    c = RawConn(port, timeout=timeout, tls_ca=tls_ca)
    try:
        c.send(raw if raw is not None else
               build_request(method, path, body, headers))
        return c.read_response(timeout, method)
    finally:
        c.close()


def json_body(**kw):
    return json.dumps(kw, separators=(",", ":")).encode()


def new_marker(prefix="tgmark"):
    new_marker.n += 1
    return "%s-%d-%d-%d" % (prefix, os.getpid(), int(time.time() * 1000) %
                            10 ** 8, new_marker.n)


new_marker.n = 0

# --------------------------------------------------------------------------
# Typical request bodies, each carrying a marker to find it in the record.


def openai_chat(marker, stream=False, model="gpt-4o-mini", extra=None):
    b = {"model": model, "user": marker,
         "messages": [{"role": "user", "content": "hello " + marker}]}
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    if extra:
        b.update(extra)
    return json.dumps(b).encode()


def anthropic_messages(marker, stream=False, model="claude-3-5-haiku-latest"):
    b = {"model": model, "max_tokens": 64, "metadata": {"user_id": marker},
         "messages": [{"role": "user", "content": "hello " + marker}]}
    if stream:
        b["stream"] = True
    return json.dumps(b).encode()


def gemini_generate(marker):
    return json.dumps({"contents": [{"role": "user", "parts": [
        {"text": "hello " + marker}]}]}).encode()


JSON_CT = ("Content-Type", "application/json")

# Secrets that must never appear in tollgate's output: every tollgate log is
# searched for "CANARY" at teardown (docs/reliability.md).
CANARY_AUTH = [("Authorization", "Bearer sk-CANARY-harness-0b7e"),
               ("x-api-key", "sk-ant-CANARY-harness-91c2"),
               ("x-goog-api-key", "AIzaCANARYharness55")]

# --------------------------------------------------------------------------
# A webhook receiver.

class WebhookReceiver:
    """An HTTP server on 127.0.0.1:0 recording every POST as (path,
    headers, body); it answers the statuses in `replies` in turn, then
    200."""

    def __init__(self, replies=()):
        import http.server
        self.got = []
        self.replies = list(replies)
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.got.append((self.path, dict(self.headers), body))
                    status = outer.replies.pop(0) if outer.replies else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, fmt, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def bodies(self):
        """Every body received so far, parsed as JSON where it is."""
        out = []
        with self.lock:
            got = list(self.got)
        for _, _, body in got:
            try:
                out.append(json.loads(body))
            except ValueError:
                out.append({"unparsed": body.decode("latin-1")})
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# The TestCase base.


class TGTestCase(unittest.TestCase):
    """Per-test temp dir, process and connection bookkeeping, and logs
    printed only on failure."""

    def setUp(self):
        name = self.id().split(".")[-1]
        self.tmp = tempfile.mkdtemp(prefix="tg-%s-" % name[:40])
        self._procs = []
        self._conns = []
        self.addCleanup(self._teardown_all)

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        self.tmp = None
        self._procs = []
        try:
            return unittest.TestCase.run(self, result)
        finally:
            failed = len(result.failures) + len(result.errors) > before
            if failed or os.environ.get("TG_TEST_VERBOSE"):
                self._dump_logs()
            if self.tmp and not os.environ.get("TG_KEEP_TMP"):
                shutil.rmtree(self.tmp, True)
            elif self.tmp:
                sys.stderr.write("kept temp dir %s\n" % self.tmp)

    def _dump_logs(self):
        out = ["", "====== logs of %s (temp dir %s)" % (self.id(), self.tmp)]
        for p in self._procs:
            try:
                out.append(p.describe())
            except Exception as e:  # pragma: no cover
                out.append("(cannot read logs of %s: %s)" % (p.name, e))
            if isinstance(p, Fakeprov):
                try:
                    with open(p.record_path, "rb") as f:
                        lines = f.read().decode("utf-8", "replace")
                    lines = lines.splitlines()
                    cut = len(lines) - 40 if len(lines) > 40 else 0
                    out.append("--- %s record (%d lines%s):\n%s" % (
                        p.name, len(lines),
                        ", first %d cut" % cut if cut else "",
                        "\n".join(l if len(l) <= 400 else
                                  l[:400] + "...[%d chars]" % len(l)
                                  for l in lines[cut:])))
                except OSError:
                    pass
            if isinstance(p, Tollgate):
                try:
                    with open(p.config_path) as f:
                        out.append("--- %s config:\n%s" % (p.name, f.read()))
                except OSError:
                    pass
        out.append("====== end of logs")
        sys.stderr.write("\n".join(out) + "\n")
        sys.stderr.flush()

    def _teardown_all(self):
        for c in self._conns:
            try:
                c.close()
            except Exception:
                pass
        problems = []
        # Stop tollgates first (a clean SIGTERM exit is part of every test),
        # then the fake providers.
        for p in [p for p in self._procs if isinstance(p, Tollgate)]:
            try:
                if "CANARY" in p.stderr():
                    problems.append("%s logged a secret (CANARY found in "
                                    "its stderr)" % p.name)
            except OSError:
                pass
            if not p.alive():
                if p.returncode not in (0, None) and not getattr(
                        p, "expected_exit", False):
                    problems.append("%s died during the test with exit code "
                                    "%s" % (p.name, p.returncode))
                p.kill()
                continue
            rc = p.stop(timeout=40)
            if rc != 0:
                problems.append("%s: SIGTERM at teardown gave exit code %s "
                                "(expected 0)" % (p.name, rc))
        for p in self._procs:
            if p.alive():
                p.signal(signal.SIGTERM)
                if p.wait(5) is None:
                    p.kill()
            p.kill()
        if problems:
            raise AssertionError("; ".join(problems))

    # -- process helpers --------------------------------------------------

    def fakeprov(self, name="fakeprov", tls=None, args=()):
        fp = Fakeprov(self.tmp, name=name, tls=tls, args=args)
        self._procs.append(fp)
        return fp

    def tollgate(self, config_text=None, upstreams=None, limits=None,
                 extra=None, name="tollgate", verbose=False, args=(),
                 env=None):
        if config_text is None:
            config_text = make_config(upstreams or {}, limits=limits,
                                      extra=extra)
        tg = Tollgate(self.tmp, config_text, name=name, verbose=verbose,
                      args=args, wait=False, env=env)
        self._procs.append(tg)
        tg.wait_listening()
        return tg

    def raw(self, port, timeout=10, rcvbuf=None):
        c = RawConn(port, timeout=timeout, rcvbuf=rcvbuf)
        self._conns.append(c)
        return c

    def call(self, port, method, path, body=b"", headers=(), timeout=15,
             raw=None):
        c = self.raw(port, timeout)
        t_sent = time.monotonic()
        c.send(raw if raw is not None else
               build_request(method, path, body, headers))
        try:
            r = c.read_response(timeout, method)
            r.t_sent = t_sent
            return r
        finally:
            c.close()

    # -- assertions -------------------------------------------------------

    def assertNothingForwarded(self, fp, tg, since=0,
                               sentinel_path="/v1/chat/completions"):
        """Prove that no request reached fp after fp.mark() returned since,
        other than a sentinel: send the sentinel through tollgate, wait
        until fakeprov records it (anything sent earlier on a refused
        connection would have arrived by then), then check."""
        sm = new_marker("sentinel")
        r = self.call(tg.port, "POST", sentinel_path, openai_chat(sm),
                      [JSON_CT] + CANARY_AUTH)
        self.assertEqual(r.status, 200, "sentinel request failed: %r" % r)
        self.assertIsNotNone(fp.wait_request(sm, 10),
                             "sentinel never reached fakeprov")
        time.sleep(0.1)
        others = [r for r in fp.requests()[since:]
                  if "sentinel-" not in (r.get("body") or "")]
        if others:
            self.fail("fakeprov received %d request(s) that tollgate should "
                      "have refused: %s" % (len(others), [
                          (r.get("method"), (r.get("path") or "")[:120],
                           r.get("body_len"),
                           len(r.get("headers", []))) for r in others]))

    def direct_and_proxied_seqs(self, fp, marker, direct_first=True):
        """(direct seq, proxied seq) of the two requests carrying marker."""
        recs = wait_until(lambda: len(fp.find_requests(marker)) >= 2 and
                          fp.find_requests(marker), 10) or \
            fp.find_requests(marker)
        self.assertEqual(len(recs), 2, "expected a direct and a proxied "
                         "request with marker %s in fakeprov's record, got %d"
                         % (marker, len(recs)))
        a, b = sorted(r["seq"] for r in recs)
        return (a, b) if direct_first else (b, a)

    def assertSameBody(self, proxied, direct, dseq, pseq, msg="",
                       strip_timestamps=False):
        """Proxied body == direct body, byte for byte, apart from
        fakeprov's per-request seq (and ': t=' stamps if asked)."""
        p, d = proxied.body, direct.body
        if strip_timestamps:
            p, d = strip_sse_timestamps(p), strip_sse_timestamps(d)
        p, d = seq_normalised(p, pseq), seq_normalised(d, dseq)
        if p != d:
            i = next((i for i in range(min(len(p), len(d)))
                      if p[i] != d[i]), min(len(p), len(d)))
            self.fail("%s: body differs from a direct call at byte %d "
                      "(proxied %d bytes, direct %d bytes):\n proxied: %r\n"
                      " direct:  %r" % (msg or "relay", i, len(p), len(d),
                                        p[max(0, i - 60):i + 60],
                                        d[max(0, i - 60):i + 60]))

    def assertErrorShape(self, resp, family, status=None):
        """Body is JSON in the provider family's error shape."""
        if status is not None:
            self.assertEqual(resp.status, status, repr(resp))
        try:
            doc = json.loads(resp.body)
        except ValueError:
            self.fail("error body is not JSON: %r" % resp)
        self.assertIsInstance(doc, dict, repr(resp))
        if family == "openai":
            self.assertIsInstance(doc.get("error"), dict,
                                  "not the OpenAI error shape: %r" % doc)
            self.assertIn("message", doc["error"], doc)
        elif family == "anthropic":
            self.assertEqual(doc.get("type"), "error",
                             "not the Anthropic error shape: %r" % doc)
            self.assertIsInstance(doc.get("error"), dict, doc)
            self.assertIn("type", doc["error"], doc)
            self.assertIn("message", doc["error"], doc)
        elif family == "gemini":
            err = doc.get("error")
            self.assertIsInstance(err, dict,
                                  "not the Gemini error shape: %r" % doc)
            for k in ("code", "message", "status"):
                self.assertIn(k, err, "Gemini error lacks %r: %r" % (k, doc))
            if status is not None:
                self.assertEqual(err["code"], status, doc)
        else:
            raise ValueError(family)
        return doc


def seq_normalised(body, seq):
    """fakeprov puts its request seq in ids ("chatcmpl-fake12", "msg_fake12",
    "responseId":"fake12"); blank exactly that number so two replies to the
    same request can be compared byte for byte."""
    return re.sub(rb"fake%d(?!\d)" % seq, b"fake<seq>", body)


def strip_sse_timestamps(data):
    """Drop fakeprov's ': t=<µs>' comment lines (LF or CRLF)."""
    return re.sub(rb"(?m)^: t=\d+\r?\n", b"", data)


def main():
    missing = [n for n, v in (("TOLLGATE_BIN", TOLLGATE_BIN),
                              ("FAKEPROV_BIN", FAKEPROV_BIN)) if not v]
    if missing:
        sys.stderr.write("warning: %s not set and no build found; tests "
                         "that need them will fail\n" % ", ".join(missing))
    unittest.main(verbosity=2)
