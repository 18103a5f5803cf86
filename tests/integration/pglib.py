# SPDX-License-Identifier: Apache-2.0
"""A real PostgreSQL for the fleet ledger's integration tests, and psql to
look at it with (Python 3 standard library only).

    pg = pglib.start(self)                  # or PgServer(tmp); addCleanup
    pg.createdb("t1")
    pg.url("t1")          -> "postgresql://tollgate@127.0.0.1:PORT/t1"
    pg.psql("SELECT 1", db="t1")  -> "1"    (psql -At: rows, "|" between)
    pg.stop("fast"); pg.stop("immediate"); pg.kill(); pg.restart()

initdb and the server refuse to run as root, and tests run as root in CI:
then they run as an unprivileged system user (TG_PG_OSUSER, by default
"tgpgtest", made with useradd --system if missing) through setpriv, which
also makes the server die with the test runner (--pdeathsig). The data
directory and the socket directory are a fresh directory under /tmp owned
by that user (the test's own temp dir may not be reachable by it), removed
at cleanup. The server listens on 127.0.0.1 on a free port, with fsync off
for speed (commits still reach the WAL, so they survive a kill -9); the superuser is "tollgate", with password authentication over
TCP (md5) when a password is given, trust otherwise. The binaries are
found under /usr/lib/postgresql/*/bin (the newest), or PG_BINDIR.
"""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import tglib

SUPERUSER = "tollgate"
OSUSER = os.environ.get("TG_PG_OSUSER", "tgpgtest")


class PgError(Exception):
    """psql failed; str() is its stderr."""


def bindir():
    """The directory of initdb, postgres, pg_isready and psql."""
    env = os.environ.get("PG_BINDIR")
    if env:
        return env
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin")
             if os.access(os.path.join(d, "initdb"), os.X_OK)]
    if not found:
        raise AssertionError("PostgreSQL not found under /usr/lib/postgresql"
                             " (make deps installs it); set PG_BINDIR")
    return sorted(found, key=lambda d: int(d.split("/")[-2]))[-1]


def _os_user():
    """(uid, gid) to run the server as: ours unless we are root."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        pw = pwd.getpwnam(OSUSER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell",
                        "/usr/sbin/nologin", OSUSER], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        pw = pwd.getpwnam(OSUSER)
    return pw.pw_uid, pw.pw_gid


class PgServer:
    """A postgres child on a free loopback port, its cluster made here."""

    def __init__(self, tmpdir, password=None, name="pg", procs=None,
                 timeout=30):
        self.tmpdir = tmpdir
        self.name = name
        self.password = password
        self.procs = procs
        self.bin = bindir()
        self.uid, self.gid = _os_user()
        self.base = tempfile.mkdtemp(prefix="tg-pg-", dir="/tmp")
        os.chown(self.base, self.uid, self.gid)
        self.data = os.path.join(self.base, "data")
        self.proc = None
        self.starts = 0
        self._initdb()
        for attempt in range(5):
            self.port = tglib.free_port()
            if self._start(timeout, quiet=attempt < 4):
                return
        raise AssertionError("postgres did not start:\n" +
                             self.proc.describe())

    # -- the process ------------------------------------------------------

    def _as_user(self, argv):
        if os.geteuid() != 0:
            return argv
        return ["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.gid,
                "--clear-groups", "--pdeathsig", "KILL", "--"] + argv

    def _initdb(self):
        argv = [os.path.join(self.bin, "initdb"), "-D", self.data,
                "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync",
                "--auth-local=trust"]
        if self.password is not None:
            pwfile = os.path.join(self.base, "pwfile")
            with open(pwfile, "w") as f:
                f.write(self.password + "\n")
            os.chown(pwfile, self.uid, self.gid)
            argv += ["--auth-host=md5", "--pwfile=" + pwfile]
        else:
            argv += ["--auth-host=trust"]
        r = subprocess.run(self._as_user(argv), cwd=self.base,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120,
                           preexec_fn=tglib._child_setup)
        if r.returncode != 0:
            raise AssertionError("initdb failed:\n" +
                                 r.stdout.decode("utf-8", "replace"))

    def argv(self):
        return self._as_user([
            os.path.join(self.bin, "postgres"), "-D", self.data,
            "-p", str(self.port), "-k", self.base,
            # fsync off: the OS keeps what a killed server wrote, and
            # the tests never crash the machine. synchronous_commit stays
            # on, so a commit survives a kill -9 of the server.
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=30", "-c", "shared_buffers=16MB"])

    def ready(self):
        """pg_isready says it accepts connections."""
        r = subprocess.run([os.path.join(self.bin, "pg_isready"), "-q",
                            "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", SUPERUSER, "-d", "postgres", "-t", "2"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10)
        return r.returncode == 0

    def _start(self, timeout, quiet=False):
        """Start the server; wait until it is ready. A server that exits at
        once (the port taken, or the old one's memory still held after a
        kill -9) is started again until timeout, unless quiet, which
        reports it with False at once."""
        deadline = time.monotonic() + timeout
        while True:
            self.starts += 1
            self.proc = tglib.Proc("%s.%d" % (self.name, self.starts),
                                   self.argv(), self.tmpdir)
            if self.procs is not None:
                self.procs.append(self.proc)
            while time.monotonic() < deadline and self.proc.alive():
                if self.ready():
                    return True
                time.sleep(0.05)
            if self.proc.alive():
                self.proc.kill()
                raise AssertionError("postgres not ready within %d s:\n%s"
                                     % (timeout, self.proc.describe()))
            if quiet:
                return False
            if time.monotonic() >= deadline:
                raise AssertionError("postgres exited:\n" +
                                     self.proc.describe())
            time.sleep(0.2)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, mode="fast", timeout=30):
        """pg_ctl's modes as the postmaster's signals: smart (SIGTERM),
        fast (SIGINT), immediate (SIGQUIT: no shutdown checkpoint, crash
        recovery at the next start). The exit code."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT,
               "immediate": signal.SIGQUIT}[mode]
        self.proc.signal(sig)
        rc = self.proc.wait(timeout)
        self.proc.kill()
        return rc

    def kill(self):
        """SIGKILL to the postmaster, as if its host died."""
        if self.proc is not None:
            self.proc.kill()

    def restart(self, timeout=30):
        """The same cluster again on the same port, after killing the
        server if it still runs."""
        self.kill()
        self._start(timeout)

    def cleanup(self):
        """Kill the server and remove its directory."""
        self.kill()
        # Backends outlive a killed postmaster for a moment.
        tglib.wait_until(lambda: not os.path.exists(
            os.path.join(self.data, "postmaster.pid")) or not self.alive(),
            5)
        shutil.rmtree(self.base, ignore_errors=True)

    def describe(self):
        return self.proc.describe()

    # -- talking to it ----------------------------------------------------

    def url(self, db="postgres"):
        """The address as tollgate's ledger.ship.postgres writes it."""
        return "postgresql://%s@127.0.0.1:%d/%s" % (SUPERUSER, self.port, db)

    def psql(self, sql, db="postgres", timeout=30):
        """One psql -At -c: the rows as text, columns joined by "|"."""
        env = dict(os.environ)
        env.pop("PGPASSWORD", None)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        r = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-At",
                            "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", SUPERUSER,
                            "-d", db, "-c", sql],
                           env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, preexec_fn=tglib._child_setup)
        if r.returncode != 0:
            raise PgError(r.stderr.decode("utf-8", "replace").strip())
        return r.stdout.decode("utf-8", "replace").rstrip("\n")

    def createdb(self, db):
        """A new, empty database (dropped first if it exists)."""
        self.psql('DROP DATABASE IF EXISTS "%s"' % db)
        self.psql('CREATE DATABASE "%s"' % db)


def start(testcase, **kw):
    """A PgServer in testcase.tmp, removed when the test ends and its log
    printed if the test fails (it joins the test's processes)."""
    pg = PgServer(testcase.tmp, procs=getattr(testcase, "_procs", None),
                  **kw)
    testcase.addCleanup(pg.cleanup)
    return pg
