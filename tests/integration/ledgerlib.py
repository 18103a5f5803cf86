# SPDX-License-Identifier: Apache-2.0
"""Helpers for the metering and ledger tests (Python 3 standard library only).

  Prices / load_prices   config/prices.yaml read by a tiny parser of its
                         simple YAML subset; cost of a call in integer
                         nano-USD, computed here independently of tollgate
  usage_of               the usage a provider reported in a response body
                         (JSON or SSE), normalised to tollgate's conventions
                         (docs/internals/wire.md) in Python
  Ledger                 the SQLite ledger opened read-only: rows by id,
                         waits for a row to settle, integrity check, dump
  MeterTestCase          tglib.TGTestCase plus a metering config, the ledger
                         and row assertions

Money is never a float here: rates become integer pico-USD per token
(2.50 USD per 1M tokens -> 2500000), costs integer nano-USD rounded up.
"""

import hashlib
import json
import os
import re
import sqlite3
import time
import urllib.parse

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

PRICES_PATH = os.path.join(tglib.SOURCE_DIR, "config", "prices.yaml")

# --------------------------------------------------------------------------
# A parser for the YAML subset prices.yaml uses: block mappings by
# indentation, "key: value" scalars (plain or double-quoted), one-line flow
# mappings "{ a: 1, b: 2 }", full-line and trailing "#" comments.


def _strip_comment(line):
    out, q = [], False
    for i, ch in enumerate(line):
        if ch == '"':
            q = not q
        elif ch == "#" and not q and (i == 0 or line[i - 1] in " \t"):
            break
        out.append(ch)
    return "".join(out).rstrip()


def _scalar(s):
    s = s.strip()
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return json.loads(s)
    return s


def _flow_map(s):
    s = s.strip()
    if not (s.startswith("{") and s.endswith("}")):
        raise ValueError("not a flow mapping: %r" % s)
    out = {}
    inner = s[1:-1].strip()
    if not inner:
        return out
    for part in inner.split(","):
        k, sep, v = part.partition(":")
        if not sep:
            raise ValueError("bad flow entry %r" % part)
        out[_scalar(k)] = _scalar(v)
    return out


def parse_simple_yaml(text):
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise ValueError("line %d: no 'key:' in %r" % (n, raw))
        lines.append((indent, _scalar(key), value.strip(), n))

    def block(i, indent):
        doc = {}
        while i < len(lines) and lines[i][0] == indent:
            _, key, value, n = lines[i]
            i += 1
            if value == "":
                if i < len(lines) and lines[i][0] > indent:
                    doc[key], i = block(i, lines[i][0])
                else:
                    doc[key] = {}
            elif value.startswith("{"):
                doc[key] = _flow_map(value)
            else:
                doc[key] = _scalar(value)
        if i < len(lines) and lines[i][0] > indent:
            raise ValueError("line %d: unexpected indentation" % lines[i][3])
        return doc, i

    doc, i = block(0, lines[0][0] if lines else 0)
    if i != len(lines):
        raise ValueError("line %d: unexpected indentation" % lines[i][3])
    return doc


def pico_per_token(s):
    """'2.50' USD per 1M tokens -> 2500000 pico-USD per token, exactly."""
    s = str(s).strip()
    m = re.match(r"^(\d+)(?:\.(\d{1,6}))?$", s)
    if not m:
        raise ValueError("bad price %r" % s)
    return int(m.group(1)) * 10 ** 6 + int((m.group(2) or "").ljust(6, "0"))


def ceil_div(a, b):
    return -(-a // b)


_DATED = re.compile(r"^(.*?)(-\d{4}-\d{2}-\d{2}|-\d{8})$")


class Rates:
    def __init__(self, block):
        self.input = pico_per_token(block["input"])
        self.output = pico_per_token(block["output"])
        self.cached = pico_per_token(block["cached_input"]) \
            if "cached_input" in block else self.input
        self.cache_write = pico_per_token(block["cache_write"]) \
            if "cache_write" in block else self.input
        self.cache_write_1h = pico_per_token(block["cache_write_1h"]) \
            if "cache_write_1h" in block else self.cache_write


class Prices:
    """The price table, read independently of tollgate."""

    def __init__(self, path=PRICES_PATH):
        with open(path) as f:
            doc = parse_simple_yaml(f.read())
        self.version = doc["version"]
        self.models = doc.get("models") or {}
        self.aliases = doc.get("aliases") or {}

    def resolve(self, name):
        """The models: key a name prices as, or None (unpriced)."""
        if not name:
            return None
        cands = [name]
        if name.startswith("models/"):
            cands.append(name[len("models/"):])
        m = _DATED.match(cands[-1])
        if m:
            cands.append(m.group(1))
        for c in cands:
            if c in self.models:
                return c
            if c in self.aliases:
                return self.aliases[c]
        return None

    def rates(self, model, input_tokens=0, tier=None):
        entry = self.models[self.resolve(model)]
        tiers = entry.get("tiers") or {}
        if tier and tier in tiers:
            return Rates(tiers[tier])
        lc = entry.get("long_context")
        if lc and input_tokens > int(lc["above_input_tokens"]):
            return Rates(lc)
        return Rates(entry)

    def max_output(self, model):
        return int(self.models[self.resolve(model)]["max_output_tokens"])

    def cost_pusd(self, model, u):
        """Pico-USD of usage u (a dict from usage_of) priced as model."""
        r = self.rates(model, u["input"], u.get("tier"))
        cw, cw1h = u.get("cache_write", 0), u.get("cache_write_1h", 0)
        cached = u.get("cached", 0)
        return ((u["input"] - cached - cw) * r.input + cached * r.cached +
                (cw - cw1h) * r.cache_write + cw1h * r.cache_write_1h +
                u["output"] * r.output)

    def cost_nusd(self, model, u):
        return ceil_div(self.cost_pusd(model, u), 1000)

    def expected_cost(self, requested, u):
        """What the contract charges: the requested model's price, or the
        reported model's when it is also priced and dearer. None when the
        requested model is unpriced."""
        if self.resolve(requested) is None:
            return None
        c = self.cost_nusd(requested, u)
        rep = u.get("model")
        if rep and rep != requested and self.resolve(rep) is not None:
            c = max(c, self.cost_nusd(rep, u))
        return c


_prices = None


def load_prices():
    global _prices
    if _prices is None:
        _prices = Prices()
    return _prices


# --------------------------------------------------------------------------
# Usage out of a response body, normalised per docs/internals/wire.md.


def sse_events(body):
    """[(event name or None, parsed JSON)] of an SSE body; [DONE] and
    non-JSON payloads are skipped. Accepts LF, CRLF and CR."""
    text = body.decode("utf-8", "replace").replace("\r\n", "\n") \
        .replace("\r", "\n")
    out = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value.strip()
            elif field == "data":
                data.append(value)
        if not data:
            continue
        payload = "\n".join(data).strip()
        if payload == "[DONE]":
            continue
        try:
            out.append((name, json.loads(payload)))
        except ValueError:
            continue
    return out


def _n(d, *path):
    for p in path:
        if not isinstance(d, dict):
            return 0
        d = d.get(p)
    return d if isinstance(d, int) else 0


def _openai_chat(usage):
    ptd = usage.get("prompt_tokens_details") or {}
    ctd = usage.get("completion_tokens_details") or {}
    return {"input": _n(usage, "prompt_tokens"),
            "cached": _n(ptd, "cached_tokens"),
            "cache_write": _n(ptd, "cache_write_tokens"),
            "output": _n(usage, "completion_tokens"),
            "reasoning": _n(ctd, "reasoning_tokens")}


def _responses(usage):
    itd = usage.get("input_tokens_details") or {}
    otd = usage.get("output_tokens_details") or {}
    return {"input": _n(usage, "input_tokens"),
            "cached": _n(itd, "cached_tokens"),
            "cache_write": _n(itd, "cache_write_tokens"),
            "output": _n(usage, "output_tokens"),
            "reasoning": _n(otd, "reasoning_tokens")}


def _anthropic(usage):
    cr = _n(usage, "cache_read_input_tokens")
    cc = _n(usage, "cache_creation_input_tokens")
    return {"input": _n(usage, "input_tokens") + cr + cc,
            "cached": cr, "cache_write": cc,
            "cache_write_1h": _n(usage, "cache_creation",
                                 "ephemeral_1h_input_tokens"),
            "output": _n(usage, "output_tokens"),
            "reasoning": _n(usage, "output_tokens_details", "thinking_tokens")}


def _gemini(um):
    thoughts = _n(um, "thoughtsTokenCount")
    return {"input": _n(um, "promptTokenCount") +
            _n(um, "toolUsePromptTokenCount"),
            "cached": _n(um, "cachedContentTokenCount"), "cache_write": 0,
            "output": _n(um, "candidatesTokenCount") + thoughts,
            "reasoning": thoughts}


def usage_of(kind, body, stream):
    """Normalised usage of a response body, or None if it has none.
    kind: chat (chat/legacy completions, Azure, compatible), responses,
    embeddings, anthropic, gemini. Keys: input, output, cached,
    cache_write, cache_write_1h, reasoning, model (reported), tier."""
    u = None
    model = tier = None
    if not stream:
        doc = json.loads(body)
        if kind in ("chat", "embeddings"):
            if isinstance(doc.get("usage"), dict):
                u = _openai_chat(doc["usage"])
            model, tier = doc.get("model"), doc.get("service_tier")
        elif kind == "responses":
            if isinstance(doc.get("usage"), dict):
                u = _responses(doc["usage"])
            model, tier = doc.get("model"), doc.get("service_tier")
        elif kind == "anthropic":
            if isinstance(doc.get("usage"), dict):
                u = _anthropic(doc["usage"])
                tier = doc["usage"].get("service_tier")
            model = doc.get("model")
        elif kind == "gemini":
            if isinstance(doc.get("usageMetadata"), dict):
                u = _gemini(doc["usageMetadata"])
            model, tier = doc.get("modelVersion"), doc.get("serviceTier")
        else:
            raise ValueError(kind)
    else:
        events = sse_events(body)
        if kind == "chat":
            for _, ev in events:
                model = ev.get("model", model)
                if isinstance(ev.get("usage"), dict):
                    u = _openai_chat(ev["usage"])
                    tier = ev.get("service_tier", tier)
        elif kind == "responses":
            for name, ev in events:
                r = ev.get("response")
                if isinstance(r, dict):
                    model = r.get("model", model)
                    if isinstance(r.get("usage"), dict):
                        u = _responses(r["usage"])
                        tier = r.get("service_tier")
        elif kind == "anthropic":
            raw = None
            for name, ev in events:
                if ev.get("type") == "message_start":
                    msg = ev.get("message") or {}
                    model = msg.get("model", model)
                    raw = dict(msg.get("usage") or {})
                elif ev.get("type") == "message_delta" and raw is not None:
                    raw.update(ev.get("usage") or {})
            if raw is not None:
                u = _anthropic(raw)
                tier = raw.get("service_tier")
        elif kind == "gemini":
            for _, ev in events:
                model = ev.get("modelVersion", model)
                if isinstance(ev.get("usageMetadata"), dict):
                    u = _gemini(ev["usageMetadata"])
                    tier = ev.get("serviceTier", tier)
        else:
            raise ValueError(kind)
    if u is None:
        return None
    u.setdefault("cache_write_1h", 0)
    u["model"] = model
    u["tier"] = tier
    return u


def marker(prefix="tgmark"):
    """A new marker that no other marker contains (tglib's "...-1" is a
    prefix of "...-12"), for exact substring matches in fakeprov's record."""
    return new_marker(prefix) + "z"


def key_fp(key):
    """tollgate's key fingerprint: 16 hex of the key's SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def key_sha256(key):
    return hashlib.sha256(key.encode()).hexdigest()


# --------------------------------------------------------------------------
# The ledger, read-only.

COLUMNS = ("id", "started_at", "finished_at", "provider", "endpoint",
           "upstream", "model", "intent", "team", "tenant", "agent_class",
           "environment", "key_fingerprint", "stream", "status",
           "http_status", "input_tokens", "output_tokens",
           "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
           "usage_source", "cost_nusd", "reserved_nusd", "price_version",
           "refusal_reason", "latency_ms", "ttfb_ms")
FINAL = ("ok", "error", "refused", "client_closed", "upstream_error", "killed",
         "interrupted")


class Ledger:
    """The SQLite ledger at path, opened read-only for each query so every
    read sees the latest commits. With tg, each read first waits (a few
    seconds at most) until that tollgate's writer has nothing queued: a
    call's row reaches the file a moment after its answer."""

    def __init__(self, path, tg=None):
        self.path = path
        self.tg = tg

    def connect(self):
        if self.tg is not None:
            self.tg.wait_written(timeout=3, quiet=True)
        if not os.path.exists(self.path):
            raise AssertionError("no ledger at %s" % self.path)
        uri = "file:%s?mode=ro" % urllib.parse.quote(self.path)
        try:
            c = sqlite3.connect(uri, uri=True, timeout=10)
            c.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # A WAL database without its -shm cannot always be opened with
            # mode=ro; fall back to a connection that refuses writes.
            c = sqlite3.connect(self.path, timeout=10)
            c.execute("PRAGMA query_only = 1")
        c.row_factory = sqlite3.Row
        return c

    def query(self, sql, args=()):
        c = self.connect()
        try:
            return [dict(r) for r in c.execute(sql, args).fetchall()]
        finally:
            c.close()

    def scalar(self, sql, args=()):
        c = self.connect()
        try:
            return c.execute(sql, args).fetchone()[0]
        finally:
            c.close()

    def row(self, rid):
        rows = self.query("SELECT * FROM calls WHERE id = ?", (rid,))
        return rows[0] if rows else None

    def rows(self, where="1", args=()):
        return self.query("SELECT * FROM calls WHERE %s ORDER BY started_at, "
                          "id" % where, args)

    def count(self, where="1", args=()):
        return self.scalar("SELECT count(*) FROM calls WHERE %s" % where,
                           args)

    def wait_row(self, rid, timeout=10, settled=True):
        """The row with id rid once it exists (and, if settled, is no
        longer in_flight); the last row seen (or None) on timeout."""
        last = [None]

        def probe():
            if not os.path.exists(self.path):
                return None
            try:
                r = self.row(rid)
            except sqlite3.OperationalError:
                return None
            last[0] = r
            if r is None or (settled and r["status"] == "in_flight"):
                return None
            return r
        got = tglib.wait_until(probe, timeout, interval=0.05)
        return got or last[0]

    def wait_count(self, n, where="1", args=(), timeout=30):
        def probe():
            try:
                return self.count(where, args) >= n
            except sqlite3.OperationalError:
                return False
        tglib.wait_until(probe, timeout, interval=0.05)
        return self.count(where, args)

    def integrity(self):
        return self.scalar("PRAGMA integrity_check")

    def dump(self):
        """The whole database as SQL text (what sqlite3's .dump prints)."""
        c = self.connect()
        try:
            return "\n".join(c.iterdump())
        finally:
            c.close()

    def text_values(self):
        """Every TEXT or BLOB value of every table, as bytes: what a row
        says, without the file's own page bytes (checksums, integers) that
        may hold any byte pattern by chance."""
        c = self.connect()
        c.row_factory = None
        c.text_factory = bytes
        out = []
        try:
            tables = [r[0] for r in c.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            for t in tables:
                for r in c.execute('SELECT * FROM "%s"' % t.decode()):
                    out.extend(v for v in r if isinstance(v, bytes))
        finally:
            c.close()
        return out

    def wal_salt(self):
        """The WAL header's first salt (None without a WAL): it changes
        each time the WAL starts over."""
        try:
            with open(self.path + "-wal", "rb") as f:
                head = f.read(20)
        except FileNotFoundError:
            return None
        return head[16:20] if len(head) == 20 else None

    def raw_bytes(self):
        """The bytes of the database file, its WAL and its -shm."""
        out = b""
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                with open(self.path + suffix, "rb") as f:
                    out += f.read()
            except FileNotFoundError:
                pass
        return out


def describe_row(r):
    if r is None:
        return "no row"
    return ", ".join("%s=%r" % (k, r.get(k)) for k in COLUMNS if k in r)


# The per-call log line.
CALL_LINE_RE = re.compile(
    r"session (\d+): (\S+) (\S+) upstream=(\S+) status=(\d+) .*?"
    r"model=(\S+) tokens=(-?\d+)/(-?\d+) usage=(\S+) cost_nusd=(-?\d+) "
    r"id=(\S+) reason=(\S+)")


def call_line(tg, rid, timeout=5):
    """The parsed per-call log line of request id rid, or None."""
    def find():
        for m in CALL_LINE_RE.finditer(tg.stderr()):
            if m.group(11) == rid:
                return m
        return None
    m = tglib.wait_until(find, timeout)
    if not m:
        return None
    return {"session": int(m.group(1)), "method": m.group(2),
            "path": m.group(3), "upstream": m.group(4),
            "status": int(m.group(5)), "model": m.group(6),
            "input": int(m.group(7)), "output": int(m.group(8)),
            "usage": m.group(9), "cost_nusd": int(m.group(10)),
            "id": m.group(11), "reason": m.group(12), "line": m.group(0)}


# --------------------------------------------------------------------------
# The TestCase base.

ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")
AGENT = ("X-Tollgate-Agent-Class", "metering-test")


def metering_upstreams(port, deployments=None, **extra):
    ups = tglib.std_upstreams(port)
    ups["azure"]["deployments"] = deployments or {"my-gpt4o": "gpt-4o"}
    for name, changes in extra.items():
        if changes is None:
            ups.pop(name, None)
        elif name in ups:
            ups[name].update(changes)
        else:
            ups[name] = changes
    return ups


def metering_extra(ledger=None, prices=PRICES_PATH, unknown_models=None,
                   attribution=None):
    extra = {}
    if ledger is not False:
        extra["ledger"] = ledger or {"path": "data/ledger.db"}
    if prices:
        extra["prices"] = prices
    if unknown_models:
        extra["unknown_models"] = unknown_models
    if attribution:
        extra["attribution"] = attribution
    return extra


class MeterTestCase(tglib.TGTestCase):
    """TGTestCase with a metering config, the ledger and row checks."""

    def setUp(self):
        super().setUp()
        self.prices = load_prices()

    def start(self, fp, upstreams=None, name="tollgate", verbose=False,
              ledger=None, **kw):
        """tollgate with every family on fp, prices, and a ledger at
        <tmp>/data/ledger.db (or ledger={...})."""
        ups = upstreams if upstreams is not None else \
            metering_upstreams(fp.port)
        tg = self.tollgate(upstreams=ups, extra=metering_extra(
            ledger=ledger, **kw), name=name, verbose=verbose)
        if ledger is False:
            # tglib gives a tollgate without a ledger section its own file.
            path = "data/%s.db" % name
        else:
            path = (ledger or {}).get("path", "data/ledger.db")
        self.ledger = Ledger(os.path.join(self.tmp, path), tg)
        return tg

    def settled_row(self, resp_or_id, timeout=10):
        rid = resp_or_id if isinstance(resp_or_id, str) else \
            resp_or_id.header("x-tollgate-request-id")
        self.assertTrue(rid, "response has no x-tollgate-request-id: %r" %
                        (resp_or_id,))
        r = self.ledger.wait_row(rid, timeout)
        self.assertIsNotNone(r, "no ledger row with id %r" % rid)
        self.assertNotEqual(r["status"], "in_flight",
                            "row %s still in_flight after %d s: %s" %
                            (rid, timeout, describe_row(r)))
        return r

    def assertRowTokens(self, r, u, msg=""):
        got = {"input": r["input_tokens"], "output": r["output_tokens"],
               "cached": r["cached_input_tokens"],
               "cache_write": r["cache_write_tokens"],
               "reasoning": r["reasoning_tokens"]}
        want = {k: u[k] for k in got}
        self.assertEqual(got, want, "%s: ledger tokens differ from the "
                         "usage the provider sent (%s)\n row: %s" %
                         (msg, u, describe_row(r)))

    def assertClean503(self, resp, family="openai"):
        self.assertEqual(resp.status, 503, resp)
        ra = resp.header("retry-after")
        self.assertTrue(ra and ra.isdigit(),
                        "503 without a retry-after in seconds: %r" %
                        resp.headers)
        self.assertErrorShape(resp, family)

    def assertNothingForwardedSince(self, fp, tg, since, hdrs=(),
                                    marker_prefix="sentinel"):
        """No request reached fp after fp.mark() returned since, other than
        a sentinel chat call (sent with hdrs) that must get through."""
        sm = marker(marker_prefix)
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(sm), [JSON_CT] + list(hdrs))
        self.assertEqual(r.status, 200, "sentinel request failed: %r" % r)
        self.assertIsNotNone(fp.wait_request(sm, 10),
                             "sentinel never reached fakeprov")
        time.sleep(0.1)
        others = [q for q in fp.requests()[since:]
                  if sm not in (q.get("body") or "")]
        if others:
            self.fail("fakeprov received %d request(s) that tollgate should "
                      "have refused: %s" % (len(others), [
                          (q.get("method"), (q.get("path") or "")[:120],
                           (q.get("body") or "")[:120]) for q in others]))
