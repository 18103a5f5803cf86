# SPDX-License-Identifier: Apache-2.0
"""A real redis-server for the fleet's integration tests, and a small RESP
client to look at it with (Python 3 standard library only).

    r = redislib.RedisServer(self.tmp)      # free loopback port, PING ok
    self.addCleanup(r.kill)                 # or redislib.start(self, ...)
    r.cmd("SET", "k", "v"); r.cmd("GET", "k")  -> "v"
    r.pause(); ...; r.resume()              # SIGSTOP / SIGCONT
    r.kill(); r.restart()                   # SIGKILL, then the same port

The server keeps nothing on disk (--save "" --appendonly no), listens on
127.0.0.1 only, works in the test's temp dir and can also listen on a unix
socket (unix=True) and require a password (password="..."). The process is
a tglib.Proc, so it dies with the test runner (PR_SET_PDEATHSIG) and at exit
like every other child, and its log is in the temp dir.

Replies: simple strings and bulk strings come back as str (bytes with
decode=False), integers as int, null as None, arrays as lists; an error
reply raises RedisError with Redis's message.
"""

import os
import shutil
import signal
import socket
import time

import tglib

REDIS_SERVER = os.environ.get("REDIS_SERVER_BIN") or \
    shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisError(Exception):
    """An error reply (-ERR ..., -NOAUTH ...); str() is Redis's message."""


class RedisClient:
    """One connection, commands as lists of arguments, RESP2 replies."""

    def __init__(self, port=None, host="127.0.0.1", unix=None, timeout=5,
                 password=None, decode=True):
        if unix is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = unix
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = (host, port)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(addr)
        except OSError:
            self.sock.close()
            raise
        self.decode = decode
        self.buf = b""
        if password is not None:
            self.cmd("AUTH", password)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def encode(args):
        """A command as a RESP array of bulk strings."""
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, bytes):
                b = a
            elif isinstance(a, str):
                b = a.encode("utf-8")
            else:
                b = str(a).encode("ascii")
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def cmd(self, *args):
        """Send one command, return its parsed reply."""
        self.sock.sendall(self.encode(args))
        return self.reply()

    def pipeline(self, *cmds):
        """Several commands in one write; their replies, in order (an error
        reply is returned as a RedisError instance, not raised)."""
        self.sock.sendall(b"".join(self.encode(c) for c in cmds))
        out = []
        for _ in cmds:
            try:
                out.append(self.reply())
            except RedisError as e:
                out.append(e)
        return out

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("redis closed the connection")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _take(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _text(self, b):
        return b.decode("utf-8", "surrogateescape") if self.decode else b

    def reply(self):
        """Read and parse one reply."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._text(self._take(n))
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            items = []
            for _ in range(n):
                try:
                    items.append(self.reply())
                except RedisError as e:  # an error inside EXEC's array
                    items.append(e)
            return items
        raise ValueError("not a RESP reply: %r" % line[:80])


class RedisServer:
    """A redis-server child on a free loopback port in tmpdir."""

    def __init__(self, tmpdir, password=None, unix=False, name="redis",
                 port=None, args=(), timeout=10, procs=None):
        if not os.access(REDIS_SERVER, os.X_OK):
            raise AssertionError("redis-server not found (make deps "
                                 "installs it); set REDIS_SERVER_BIN")
        self.tmpdir = tmpdir
        self.name = name
        self.password = password
        self.extra = list(args)
        self.dir = os.path.join(tmpdir, name + ".d")
        os.makedirs(self.dir, exist_ok=True)
        # sun_path holds 107 bytes: a deep temp dir gets a short name.
        self.unix_path = None
        if unix:
            self.unix_path = os.path.join(self.dir, "redis.sock")
            if len(self.unix_path) > 100:
                self.unix_path = os.path.join(
                    "/tmp", "tg-redis-%d-%d.sock" % (os.getpid(), id(self)))
        self.proc = None
        self.client_ = None
        self.starts = 0
        self.procs = procs  # a test's process list, to show logs on failure
        # A port picked free can be taken before redis binds it: try again
        # with another, unless the caller chose it.
        for attempt in range(1 if port else 5):
            self.port = port or tglib.free_port()
            if self._start(timeout, quiet=attempt < 4 and not port):
                return
        raise AssertionError("redis-server did not start:\n" +
                             self.proc.describe())

    # -- the process ------------------------------------------------------

    def argv(self):
        a = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--daemonize", "no", "--logfile", "",
             "--databases", "16", "--loglevel", "notice"]
        if self.password is not None:
            a += ["--requirepass", self.password]
        if self.unix_path is not None:
            a += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        return a + self.extra

    def _start(self, timeout, quiet=False):
        self.starts += 1
        self.proc = tglib.Proc("%s.%d" % (self.name, self.starts),
                               self.argv(), self.tmpdir)
        if self.procs is not None:
            self.procs.append(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                if quiet:
                    self.proc.kill()
                    return False
                raise AssertionError("redis-server exited:\n" +
                                     self.proc.describe())
            try:
                c = RedisClient(self.port, timeout=2, password=self.password)
                try:
                    if c.cmd("PING") == "PONG":
                        return True
                finally:
                    c.close()
            except (OSError, RedisError):
                pass
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError("redis-server did not answer PING within %d s"
                             ":\n%s" % (timeout, self.proc.describe()))

    def alive(self):
        return self.proc is not None and self.proc.alive()

    @property
    def pid(self):
        return self.proc.pid

    @property
    def url(self):
        """The address as tollgate's fleet.redis writes it."""
        return "redis://127.0.0.1:%d" % self.port

    @property
    def unix_url(self):
        return "unix://%s" % self.unix_path

    def _drop_client(self):
        if self.client_ is not None:
            self.client_.close()
            self.client_ = None

    def stop(self, timeout=10):
        """SIGTERM (nothing is saved: --save ""), wait; the exit code."""
        self._drop_client()
        self.proc.signal(signal.SIGCONT)  # a paused server cannot exit
        self.proc.signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.proc.kill()
        return rc

    def kill(self):
        """SIGKILL: the server is gone at once, as if its host died."""
        self._drop_client()
        if self.proc is not None:
            self.proc.kill()
        if self.unix_path is not None and \
                self.unix_path.startswith("/tmp/tg-redis-"):
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass

    def pause(self):
        """SIGSTOP: connections stay open, nothing is answered."""
        self.proc.signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT after pause()."""
        self.proc.signal(signal.SIGCONT)

    def restart(self, timeout=10):
        """A new, empty server on the same port (and socket), after
        killing the old one if it still runs."""
        self.kill()
        self._start(timeout)

    def describe(self):
        return self.proc.describe()

    # -- talking to it ----------------------------------------------------

    def client(self, decode=True, timeout=5, unix=False):
        """A new connection (authenticated if the server has a password);
        the caller closes it."""
        if unix:
            return RedisClient(unix=self.unix_path, timeout=timeout,
                               password=self.password, decode=decode)
        return RedisClient(self.port, timeout=timeout,
                           password=self.password, decode=decode)

    def cmd(self, *args):
        """One command on a shared connection, made again after a
        restart or a dropped connection."""
        if self.client_ is None:
            self.client_ = self.client()
        try:
            return self.client_.cmd(*args)
        except (OSError, ConnectionError):
            self._drop_client()
            raise

    def hgetall(self, key):
        """HGETALL as a dict."""
        flat = self.cmd("HGETALL", key) or []
        return dict(zip(flat[0::2], flat[1::2]))


def start(testcase, **kw):
    """A RedisServer in testcase.tmp, killed when the test ends and its log
    printed if the test fails (it joins the test's processes)."""
    r = RedisServer(testcase.tmp, procs=getattr(testcase, "_procs", None),
                    **kw)
    testcase.addCleanup(r.kill)
    return r
