# SPDX-License-Identifier: Apache-2.0
"""The fleet: section of tollgate.yaml, through the real binary.

`tollgate check` accepts the full example and the minimal one, and prints
the settings in force, defaults included (the default instance is this
host's name and the listen port); every URL form is read into the right
host, port, socket and database. Each bad input is refused alone, at its
file:line:col, with a message naming the problem; a password written in the
URL is refused and never echoed. An unset password_env stops `tollgate
serve` and is only a warning for `tollgate check`, and the password never
reaches the output. fleet: is read at start only: a reload that changes it
keeps the running settings and warns, naming the key. The last test drives
the redis-server fixture (redislib) itself."""

import os
import re
import signal
import socket
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
import redislib  # noqa: E402
import tglib  # noqa: E402

SECRET = "CANARY-redis-pw-7f3a"

FULL = """\
listen: 127.0.0.1:0
fleet:
  redis: redis://10.0.0.5:6379/0
  password_env: TG_TEST_REDIS_PASSWORD
  instance: pod-7
  key_prefix: "tollgate:"
  lease_usd: 1.00
  lease_ttl: 30s
  wait: 1s
  connect_timeout: 1s
  command_timeout: 500ms
  when_down: local
"""

MINIMAL = "fleet: { redis: redis://127.0.0.1:6379 }\n"

FLEET_RE = re.compile(r"^fleet: (.*)$", re.M)


def run(argv, tmp, env=None, timeout=20):
    """tollgate argv with env added to (None: dropped from) ours."""
    child = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            child.pop(k, None)
        else:
            child[k] = v
    r = subprocess.run([tglib.TOLLGATE_BIN] + argv, cwd=tmp, env=child,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout,
                       preexec_fn=tglib._child_setup)
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"))


class FleetConfigTest(tglib.TGTestCase):

    def check(self, text, env=None, name="check.yaml"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        rc, out, err = run(["check", "-c", path], self.tmp, env)
        return rc, out, err, path

    def fleet_line(self, text, env=None):
        """The settings check prints for a good file, as a dict."""
        rc, out, err, _ = self.check(text, env)
        self.assertEqual(rc, 0, "check refused:\n%s%s" % (out, err))
        self.assertIn("configuration OK", out)
        m = FLEET_RE.search(out)
        self.assertIsNotNone(m, "no fleet: line in:\n" + out)
        fields = {}
        for part in m.group(1).split(", "):
            k, _, v = part.partition(" ")
            fields[k] = v
        return fields

    def test_full_example(self):
        f = self.fleet_line(FULL, {"TG_TEST_REDIS_PASSWORD": SECRET})
        self.assertEqual(f["redis"], "10.0.0.5:6379 db 0")
        self.assertEqual(f["password"], "from TG_TEST_REDIS_PASSWORD")
        self.assertEqual(f["instance"], "pod-7")
        self.assertEqual(f["key_prefix"], "tollgate:")
        self.assertEqual(f["lease_usd"], "1.000000000")
        self.assertEqual(f["lease_ttl"], "30s")
        self.assertEqual(f["wait"], "1s")
        self.assertEqual(f["connect_timeout"], "1s")
        self.assertEqual(f["command_timeout"], "500ms")
        self.assertEqual(f["when_down"], "local")

    def test_minimal_gets_the_defaults(self):
        f = self.fleet_line(MINIMAL)
        host = socket.gethostname()
        self.assertEqual(f["redis"], "127.0.0.1:6379 db 0")
        self.assertEqual(f["no"], "password")
        # Default listen port 8787; the name is the host's.
        self.assertEqual(f["instance"], "%s:8787" % host)
        self.assertEqual(f["key_prefix"], "tollgate:")
        self.assertEqual(f["lease_usd"], "1.000000000")
        self.assertEqual(f["lease_ttl"], "30s")
        self.assertEqual(f["wait"], "1s")
        self.assertEqual(f["connect_timeout"], "1s")
        self.assertEqual(f["command_timeout"], "500ms")
        self.assertEqual(f["when_down"], "local")
        # The listen port comes after fleet: in the file: still used.
        f = self.fleet_line(MINIMAL + "listen: 127.0.0.1:9123\n")
        self.assertEqual(f["instance"], "%s:9123" % host)

    def test_values_in_range(self):
        f = self.fleet_line("""\
fleet:
  redis: redis://redis.internal
  lease_usd: 0.000000001
  lease_ttl: 3s
  wait: 0
  connect_timeout: 10ms
  command_timeout: 1m
  when_down: refuse
  key_prefix: "tg{eu}:"
  instance: a
""")
        self.assertEqual(f["redis"], "redis.internal:6379 db 0")
        self.assertEqual(f["lease_usd"], "0.000000001")
        self.assertEqual(f["lease_ttl"], "3s")
        self.assertEqual(f["wait"], "0s")
        self.assertEqual(f["connect_timeout"], "10ms")
        self.assertEqual(f["command_timeout"], "1m")
        self.assertEqual(f["when_down"], "refuse")
        self.assertEqual(f["key_prefix"], "tg{eu}:")
        self.assertEqual(f["instance"], "a")
        f = self.fleet_line("fleet:\n  redis: redis://h\n  lease_ttl: 10m\n"
                            "  wait: 30s\n  instance: %s\n" % ("x" * 64))
        self.assertEqual(f["lease_ttl"], "10m")
        self.assertEqual(f["wait"], "30s")
        self.assertEqual(f["instance"], "x" * 64)

    def test_url_forms(self):
        forms = [
            ("redis://cache", "cache:6379 db 0"),
            ("redis://10.1.2.3:6380", "10.1.2.3:6380 db 0"),
            ("redis://10.1.2.3:6380/", "10.1.2.3:6380 db 0"),
            ("redis://10.1.2.3:6380/7", "10.1.2.3:6380 db 7"),
            ("redis://cache/9999", "cache:6379 db 9999"),
            ("redis://[::1]:7000/3", "[::1]:7000 db 3"),
            ("redis://[::1]", "[::1]:6379 db 0"),
            ("REDIS://cache:1", "cache:1 db 0"),
            ("unix:///run/redis/redis.sock",
             "unix socket /run/redis/redis.sock db 0"),
            ("unix:///run/redis.sock?db=12",
             "unix socket /run/redis.sock db 12"),
        ]
        for url, want in forms:
            with self.subTest(url):
                f = self.fleet_line('fleet:\n  redis: "%s"\n' % url)
                self.assertEqual(f["redis"], want)

    # (value of fleet.redis or a whole fleet: body, line, col, words that
    # must all be in the message)
    BAD = [
        ("rediss", 'redis: "rediss://cache:6380"', 2, 10,
         ["fleet.redis", "rediss://", "TLS", "not supported"]),
        ("http scheme", 'redis: "http://cache:6379"', 2, 10,
         ["fleet.redis", "scheme 'http' is not supported"]),
        ("no scheme", 'redis: "cache:6379"', 2, 10,
         ["fleet.redis", "expected redis://HOST:PORT/DB"]),
        ("user in URL", 'redis: "redis://admin@cache:6379"', 2, 10,
         ["fleet.redis", "user or password", "password_env"]),
        ("port 0", 'redis: "redis://cache:0"', 2, 10,
         ["fleet.redis", "bad port '0'", "1-65535"]),
        ("port too big", 'redis: "redis://cache:65536"', 2, 10,
         ["bad port '65536'"]),
        ("port not a number", 'redis: "redis://cache:six"', 2, 10,
         ["bad port 'six'"]),
        ("port empty", 'redis: "redis://cache:"', 2, 10,
         ["bad port ''"]),
        ("db too big", 'redis: "redis://cache:6379/10000"', 2, 10,
         ["bad database '10000'", "0-9999"]),
        ("db not a number", 'redis: "redis://cache:6379/one"', 2, 10,
         ["bad database 'one'"]),
        ("db path", 'redis: "redis://cache:6379/1/2"', 2, 10,
         ["bad database '1/2'"]),
        ("empty host", 'redis: "redis://:6379/0"', 2, 10,
         ["the host is missing"]),
        ("three slashes on redis", 'redis: "redis:///0"', 2, 10,
         ["the host is missing"]),
        ("bad host", 'redis: "redis://ca*che"', 2, 10,
         ["'ca*che' is not a host name"]),
        ("IPv6 without brackets", 'redis: "redis://::1:6379"', 2, 10,
         ["IPv6 address goes in brackets"]),
        ("bad IPv6", 'redis: "redis://[::zz]:6379"', 2, 10,
         ["'::zz' is not an IPv6 address"]),
        ("query on redis", 'redis: "redis://cache:6379?db=2"', 2, 10,
         ["takes no query", "redis://HOST:PORT/DB"]),
        ("fragment", 'redis: "redis://cache:6379#x"', 2, 10,
         ["fragment"]),
        ("relative unix path", 'redis: "unix://run/redis.sock"', 2, 10,
         ["must be absolute", "unix:///run/redis.sock"]),
        ("unix directory", 'redis: "unix:///run/"', 2, 10,
         ["names a directory"]),
        ("unix path too long", 'redis: "unix:///%s.sock"' % ("d" * 110),
         2, 10, ["longer than 107 bytes"]),
        ("unix query other than db", 'redis: "unix:///r.sock?timeout=1"',
         2, 10, ["only query parameter allowed is db=N"]),
        ("unix db twice", 'redis: "unix:///r.sock?db=1&db=2"', 2, 10,
         ["db= is given twice"]),
        ("unix bad db", 'redis: "unix:///r.sock?db=x"', 2, 10,
         ["bad database 'x'"]),
        ("redis not a string", "redis: [a, b]", 2, 10,
         ["fleet.redis: expected a redis:// or unix:// URL"]),
        ("lease_ttl too short", "redis: redis://h\n  lease_ttl: 2s", 3, 14,
         ["fleet.lease_ttl", "between 3s and 10m"]),
        ("lease_ttl too long", "redis: redis://h\n  lease_ttl: 601s", 3, 14,
         ["between 3s and 10m"]),
        ("wait too long", "redis: redis://h\n  wait: 31s", 3, 9,
         ["fleet.wait", "between 0s and 30s"]),
        ("wait not a duration", "redis: redis://h\n  wait: soon", 3, 9,
         ["fleet.wait", "expected a duration"]),
        ("connect_timeout 0", "redis: redis://h\n  connect_timeout: 0", 3,
         20, ["fleet.connect_timeout", "between 10ms and 1m"]),
        ("command_timeout too long",
         "redis: redis://h\n  command_timeout: 2m", 3, 20,
         ["fleet.command_timeout", "between 10ms and 1m"]),
        ("lease_usd 0", "redis: redis://h\n  lease_usd: 0", 3, 14,
         ["fleet.lease_usd", "greater than 0"]),
        ("lease_usd below a nano-dollar",
         "redis: redis://h\n  lease_usd: 0.0000000001", 3, 14,
         ["fleet.lease_usd"]),
        ("lease_usd negative", "redis: redis://h\n  lease_usd: -1", 3, 14,
         ["fleet.lease_usd"]),
        ("lease_usd with a dollar sign",
         "redis: redis://h\n  lease_usd: $1", 3, 14, ["fleet.lease_usd"]),
        ("instance with a space", "redis: redis://h\n  instance: pod 7",
         3, 13, ["fleet.instance", "bad instance name 'pod 7'",
                 "A-Z a-z 0-9 . _ : -"]),
        ("instance with a slash", "redis: redis://h\n  instance: a/b",
         3, 13, ["bad instance name 'a/b'"]),
        ("instance too long",
         "redis: redis://h\n  instance: %s" % ("x" * 65), 3, 13,
         ["bad instance name", "1-64 characters"]),
        ("instance empty", 'redis: redis://h\n  instance: ""', 3, 13,
         ["bad instance name"]),
        ("key_prefix with a space",
         'redis: redis://h\n  key_prefix: "tg: "', 3, 15,
         ["fleet.key_prefix", "bad key prefix", "no spaces"]),
        ("key_prefix empty", 'redis: redis://h\n  key_prefix: ""', 3, 15,
         ["bad key prefix"]),
        ("key_prefix too long",
         "redis: redis://h\n  key_prefix: %s" % ("p" * 65), 3, 15,
         ["bad key prefix"]),
        ("when_down unknown", "redis: redis://h\n  when_down: wait", 3, 14,
         ["fleet.when_down", "expected local or refuse"]),
        ("redis missing", "lease_usd: 2", 2, 3,
         ["missing required key 'redis'"]),
        ("unknown key", "redis: redis://h\n  leases: 2", 3, 3,
         ["unknown key 'leases' in fleet"]),
    ]

    def test_bad_inputs(self):
        for what, body, line, col, words in self.BAD:
            with self.subTest(what):
                text = "fleet:\n  %s\n" % body
                rc, out, err, path = self.check(text)
                self.assertEqual(rc, 1, "%s: accepted:\n%s%s" %
                                 (what, out, err))
                lines = err.strip().splitlines()
                self.assertEqual(len(lines), 1, "%s: expected one error:\n"
                                 "%s" % (what, err))
                self.assertTrue(lines[0].startswith("%s:%d:%d: " %
                                                    (path, line, col)),
                                "%s: want %s:%d:%d:, got:\n%s" %
                                (what, path, line, col, err))
                for w in words:
                    self.assertIn(w, lines[0], what)

    def test_password_in_url_refused_not_echoed(self):
        for url in ("redis://:%s@cache:6379/0" % SECRET,
                    "redis://default:%s@cache" % SECRET,
                    # Not a valid URL at all: still not echoed.
                    "redis://:%s/x@cache:bad" % SECRET,
                    "unix:///r.sock?password=%s" % SECRET,
                    "foo:%s@x://cache" % SECRET):
            with self.subTest(url):
                rc, out, err, path = self.check(
                    'fleet:\n  redis: "%s"\n' % url)
                self.assertEqual(rc, 1, out + err)
                self.assertRegex(err, r"^%s:2:10: fleet\.redis: " %
                                 re.escape(path))
                self.assertNotIn(SECRET, out + err)
                self.assertNotIn("CANARY", out + err)
        # The daemon refuses it the same way, and says nothing of it.
        rc, out, err, path = self.check(
            'listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n'
            'fleet:\n  redis: "redis://:%s@cache"\n' % SECRET)
        rc, out, err = run(["-d", "-c", path], self.tmp)
        self.assertNotEqual(rc, 0)
        self.assertIn("user or password in the URL is not allowed", err)
        self.assertNotIn(SECRET, out + err)

    def test_password_env_unset(self):
        text = ("listen: 127.0.0.1:0\nadmin: { listen: \"127.0.0.1:0\" }\n"
                "ledger: { path: data/l.db }\n"
                "fleet:\n  redis: redis://127.0.0.1:1\n"
                "  password_env: TG_TEST_REDIS_PASSWORD\n")
        unset = {"TG_TEST_REDIS_PASSWORD": None}
        # check: a warning at the key, and the file is good.
        rc, out, err, path = self.check(text, unset)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("configuration OK", out)
        self.assertRegex(err, r"%s:6:17: warning: fleet\.password_env: the "
                         r"environment variable TG_TEST_REDIS_PASSWORD is "
                         r"not set here" % re.escape(path))
        self.assertIn("password from TG_TEST_REDIS_PASSWORD (not set here)",
                      out)
        # An empty value is no password either.
        rc, out, err, _ = self.check(text, {"TG_TEST_REDIS_PASSWORD": ""})
        self.assertEqual(rc, 0, out + err)
        self.assertIn("warning: fleet.password_env", err)
        # serve: an error naming the variable, and no start.
        try:
            rc, out, err = run(["-d", "-c", path], self.tmp, unset)
        except subprocess.TimeoutExpired:
            self.fail("tollgate started without its Redis password")
        self.assertNotEqual(rc, 0)
        self.assertRegex(err, r"%s:6:17: fleet\.password_env: the "
                         r"environment variable TG_TEST_REDIS_PASSWORD is "
                         r"not set" % re.escape(path))
        self.assertNotIn("listening", err)
        # Set: check is quiet about it and never prints the value.
        rc, out, err, _ = self.check(text, {"TG_TEST_REDIS_PASSWORD": SECRET})
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(err, "")
        self.assertIn("password from TG_TEST_REDIS_PASSWORD,", out)
        self.assertNotIn(SECRET, out)

    def test_empty_section_is_off(self):
        rc, out, err, _ = self.check("listen: 127.0.0.1:0\nfleet:\n")
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("fleet:", out)

    def test_reload_keeps_fleet_and_warns(self):
        """fleet: is read at start: a reload that changes it goes through
        for everything else and warns, naming the key; the secret stays
        out of the log."""
        r = redislib.start(self)
        fp = self.fakeprov()
        ups = tglib.std_upstreams(fp.port)
        base = tglib.make_config(ups)
        fleet = ("fleet:\n  redis: %s\n  password_env: TG_TEST_REDIS_PW\n"
                 "  lease_usd: 1.00\n" % r.url)
        tg = self.tollgate(base + fleet, env={"TG_TEST_REDIS_PW": SECRET,
                                              "TG_TEST_REDIS_PW2": SECRET})
        for what, old, new in (
                ("fleet.lease_usd", "lease_usd: 1.00", "lease_usd: 2.50"),
                ("fleet.redis", "redis: %s" % r.url, "redis: %s/3" % r.url),
                ("fleet.password_env", "password_env: TG_TEST_REDIS_PW",
                 "password_env: TG_TEST_REDIS_PW2")):
            start = len(tg.log())
            tg.write_config(base + fleet.replace(old, new))
            tg.hup()
            self.assertIsNotNone(
                tg.wait_log(r"reload: %s changed: fleet changes need a "
                            r"restart; the fleet keeps the settings it "
                            r"started with" % re.escape(what), 10, start),
                tg.log()[start:])
            self.assertIsNotNone(tg.wait_log(r"generation \d+", 10, start))
        # Back to what it started with: nothing to say.
        start = len(tg.log())
        tg.write_config(base + fleet)
        tg.hup()
        self.assertIsNotNone(tg.wait_log(r"generation \d+", 10, start))
        self.assertNotRegex(tg.log()[start:], r"reload: (a )?fleet")
        self.assertNotIn(SECRET, tg.log())
        # The fixture's server is the one in the file, and still up.
        self.assertEqual(r.cmd("PING"), "PONG")

    def test_reload_adding_fleet_warns(self):
        fp = self.fakeprov()
        base = tglib.make_config(tglib.std_upstreams(fp.port))
        tg = self.tollgate(base)
        start = len(tg.log())
        tg.write_config(base + MINIMAL)
        tg.hup()
        self.assertIsNotNone(
            tg.wait_log(r"reload: a fleet: section needs a restart; this "
                        r"instance stays on its own until then", 10, start),
            tg.log()[start:])


class RedisFixtureTest(tglib.TGTestCase):
    """redislib starts a real redis-server and talks RESP to it."""

    def test_server_and_client(self):
        r = redislib.start(self)
        self.assertEqual(r.cmd("PING"), "PONG")
        self.assertEqual(r.cmd("SET", "tg:k", "v1"), "OK")
        self.assertEqual(r.cmd("GET", "tg:k"), "v1")
        self.assertIsNone(r.cmd("GET", "tg:none"))
        self.assertEqual(r.cmd("INCRBY", "tg:n", 5), 5)
        self.assertEqual(r.cmd("HSET", "tg:h", "a", 1, "b", "x y"), 2)
        self.assertEqual(r.hgetall("tg:h"), {"a": "1", "b": "x y"})
        self.assertEqual(r.cmd("ZADD", "tg:z", 1500, "pod-7"), 1)
        self.assertEqual(r.cmd("ZRANGE", "tg:z", 0, -1, "WITHSCORES"),
                         ["pod-7", "1500"])
        self.assertEqual(r.cmd("SET", "tg:a", "x", "NX", "PX", 60000), "OK")
        self.assertIsNone(r.cmd("SET", "tg:a", "y", "NX", "PX", 60000))
        with self.assertRaises(redislib.RedisError) as e:
            r.cmd("NOSUCHCOMMAND")
        self.assertIn("unknown command", str(e.exception))
        c = r.client(decode=False)
        self.assertEqual(c.pipeline(("SET", "tg:b", b"\x00\xff"),
                                    ("GET", "tg:b")), ["OK", b"\x00\xff"])
        c.close()
        # Nothing on disk, loopback only.
        self.assertEqual(r.cmd("CONFIG", "GET", "save"), ["save", ""])
        self.assertEqual(r.cmd("CONFIG", "GET", "appendonly"),
                         ["appendonly", "no"])
        self.assertEqual(r.cmd("CONFIG", "GET", "bind"),
                         ["bind", "127.0.0.1"])

    def test_password_socket_and_faults(self):
        r = redislib.start(self, password=SECRET, unix=True)
        self.assertEqual(r.cmd("SET", "k", "v"), "OK")
        c = redislib.RedisClient(r.port)
        with self.assertRaises(redislib.RedisError) as e:
            c.cmd("GET", "k")
        self.assertIn("NOAUTH", str(e.exception))
        c.close()
        c = r.client(unix=True)
        self.assertEqual(c.cmd("GET", "k"), "v")
        c.close()
        self.assertTrue(r.unix_url.startswith("unix:///"))
        # Paused: connected, but nothing is answered.
        r.pause()
        c = redislib.RedisClient(r.port, timeout=0.3)
        with self.assertRaises(socket.timeout):
            c.cmd("PING")
        c.close()
        r.resume()
        self.assertEqual(r.cmd("PING"), "PONG")
        # Killed: refused; restarted: the same port, empty.
        port, pid = r.port, r.pid
        r.kill()
        self.assertFalse(r.alive())
        with self.assertRaises(OSError):
            redislib.RedisClient(port, timeout=1)
        r.restart()
        self.assertEqual((r.port, r.alive()), (port, True))
        self.assertNotEqual(r.pid, pid)
        self.assertIsNone(r.cmd("GET", "k"))
        # Stopped cleanly even while paused.
        r.pause()
        self.assertEqual(r.stop(), 0)
        self.assertFalse(r.alive())


if __name__ == "__main__":
    tglib.main()
