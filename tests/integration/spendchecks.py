# SPDX-License-Identifier: Apache-2.0
"""One set of checks for spend and calls answers, whoever gives them: the
admin API or the command line, from the local ledger or from the fleet
ledger in PostgreSQL (Python 3 standard library only).

    src = Source(testcase, "fleet API", ask)   # ask(kind, params) -> Answer
    check_all(testcase, src, truth)            # truth: the calls rows

An ask function takes the kind ("spend" or "calls") and the query's
parameters as a list of (name, value) pairs, the API's names (group_by,
team, from, format, limit, cursor, status, ...), and returns an Answer
(status, content type, body text). The truth is the list of ledger rows
(dicts of the calls table's columns; fleet rows with "instance") the answer
must add up to: every sum is checked against them to the nano-dollar, and
every calls page against their order (newest first: started_at, id, then
instance).
"""

import csv
import io
import json
from decimal import Decimal

DIMS = ("team", "tenant", "agent_class", "environment", "intent", "model",
        "provider", "day", "month", "hour")
FILTERS = DIMS[:7]
STATUSES = ("ok", "error", "refused", "in_flight")


class Answer:
    def __init__(self, status, ctype, body):
        self.status = status
        self.ctype = ctype or ""
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Answer(%d, %r, %r)" % (self.status, self.ctype,
                                       self.body[:400])


class Source:
    """A named way to ask: name for messages, ask(kind, params)."""

    def __init__(self, name, ask):
        self.name = name
        self.ask = ask

    def ok(self, tc, kind, params):
        a = self.ask(kind, list(params))
        tc.assertEqual(a.status, 200, "%s %s %r: %r" % (self.name, kind,
                                                         params, a))
        return a


def usd(nusd):
    return "%s%d.%09d" % ("-" if nusd < 0 else "", abs(nusd) // 10**9,
                          abs(nusd) % 10**9)


def key_of(row, dim):
    """A row's value of a dimension as the answer shows it (None: unset)."""
    if dim == "day":
        return row["started_at"][:10]
    if dim == "month":
        return row["started_at"][:7]
    if dim == "hour":
        return row["started_at"][:13] + ":00:00Z"
    return row[dim] or None


def final(rows):
    return [r for r in rows if r["status"] != "in_flight"]


def groups(rows, dims):
    """{keys: [calls, input, output, cost, fallback calls, fallback cost,
    routed calls, saved, cache hits]} of the final rows."""
    out = {}
    for r in final(rows):
        g = out.setdefault(tuple(key_of(r, d) for d in dims),
                           [0, 0, 0, 0, 0, 0, 0, 0, 0])
        g[0] += 1
        g[1] += r["input_tokens"]
        g[2] += r["output_tokens"]
        g[3] += r["cost_nusd"]
        if "+fallback:" in (r["price_version"] or ""):
            g[4] += 1
            g[5] += r["cost_nusd"]
        if r["routed_rule"] is not None:
            g[6] += 1
        if cached(r):
            g[8] += 1
        if r["routed_rule"] is not None or cached(r):
            g[7] += r["saved_nusd"]
    return out


def cached(r):
    """Was the row answered from the response cache?"""
    return "cache_hit" in r.keys() and r["cache_hit"] == 1


def check_spend_doc(tc, src, doc, rows, dims, what):
    """A JSON spend answer against rows, grouped by dims."""
    want = groups(rows, dims)
    got = {}
    for g in doc["rows"]:
        key = tuple(g[d] for d in dims)
        tc.assertNotIn(key, got, "%s %s: group twice" % (src.name, what))
        got[key] = [g["calls"], g["input_tokens"], g["output_tokens"],
                    g["cost_nusd"], g["fallback_calls"],
                    g["fallback_cost_nusd"], g["routed_calls"],
                    g["saved_nusd"], g["cache_hits"]]
        tc.assertEqual(Decimal(str(g["cost_usd"])),
                       Decimal(g["cost_nusd"]) / 10**9)
        tc.assertEqual(Decimal(str(g["saved_usd"])),
                       Decimal(g["saved_nusd"]) / 10**9)
    if not want and not dims:
        want = {(): [0, 0, 0, 0, 0, 0, 0, 0, 0]}
    tc.assertEqual(got, want, "%s %s" % (src.name, what))
    total = sum(v[3] for v in want.values())
    tc.assertEqual(doc["total_cost_nusd"], total, "%s %s" % (src.name, what))
    tc.assertEqual(doc["total_calls"], sum(v[0] for v in want.values()))
    tc.assertEqual(doc["fallback_cost_nusd"], sum(v[5] for v in want.values()))
    tc.assertEqual(doc["routed_calls"], sum(v[6] for v in want.values()))
    tc.assertEqual(doc["total_saved_nusd"], sum(v[7] for v in want.values()))
    tc.assertEqual(doc["cache_hits"], sum(v[8] for v in want.values()))
    costs = [g["cost_nusd"] for g in doc["rows"]]
    tc.assertEqual(costs, sorted(costs, reverse=True), src.name)


def check_group_by(tc, src, rows):
    """Every dimension alone, none, and some together."""
    for dims in [()] + [(d,) for d in DIMS] + [
            ("team", "agent_class"), ("month", "team"), ("hour", "team"),
            ("provider", "model", "day"), DIMS]:
        params = [("group_by", ",".join(dims))] if dims else []
        doc = src.ok(tc, "spend", params).json()
        check_spend_doc(tc, src, doc, rows, dims, "group_by=%s" % (dims,))


def check_filters(tc, src, rows):
    """Each filter with a value that matches and with the empty value
    (unset tags), and two together."""
    for f in FILTERS:
        values = sorted({r[f] or "" for r in final(rows)})
        for v in values[:2] + ([""] if "" not in values else []):
            sub = [r for r in rows if (r[f] or "") == v]
            doc = src.ok(tc, "spend", [("group_by", "team"),
                                       (f, v)]).json()
            check_spend_doc(tc, src, doc, sub, ("team",), "%s=%r" % (f, v))
    sub = [r for r in rows if r["team"] == "search" and
           r["agent_class"] == "researcher"]
    tc.assertTrue(sub)
    doc = src.ok(tc, "spend", [("group_by", "model"), ("team", "search"),
                               ("agent_class", "researcher")]).json()
    check_spend_doc(tc, src, doc, sub, ("model",), "two filters")
    # A quote in a value is data, never SQL.
    doc = src.ok(tc, "spend", [("team", "x' OR 1=1 --")]).json()
    tc.assertEqual(doc["total_calls"], 0, src.name)


def check_periods(tc, src, rows):
    """from/to as days and as RFC 3339 instants, and month."""
    times = sorted(r["started_at"] for r in final(rows))
    day = times[0][:10]
    mid = times[len(times) // 2]
    for params, keep in (
            ([("from", day), ("to", day)], lambda t: t[:10] == day),
            ([("month", day[:7])], lambda t: t[:7] == day[:7]),
            ([("from", mid)], lambda t: t >= mid),
            ([("to", mid)], lambda t: t < mid),
            ([("from", times[0]), ("to", mid)],
             lambda t: times[0] <= t < mid),
            ([("from", "2000-01-01"), ("to", "2000-01-31")],
             lambda t: False)):
        sub = [r for r in rows if keep(r["started_at"])]
        doc = src.ok(tc, "spend", [("group_by", "team")] + params).json()
        check_spend_doc(tc, src, doc, sub, ("team",), repr(params))


def check_csv_table(tc, src, rows):
    """The CSV export and the table hold the same numbers."""
    a = src.ok(tc, "spend", [("group_by", "team,model"), ("format", "csv")])
    if a.ctype:
        tc.assertTrue(a.ctype.startswith("text/csv"), a)
    tc.assertTrue(a.body.startswith(
        "team,model,calls,input_tokens,output_tokens,cost_usd,"
        "fallback_calls,fallback_cost_usd,saved_usd,routed_calls,"
        "cache_hits\r\n"), a)
    want = groups(rows, ("team", "model"))
    got = {}
    for rec in csv.DictReader(io.StringIO(a.body, newline="")):
        whole, frac = rec["cost_usd"].split(".")
        tc.assertEqual(len(frac), 9)
        got[(rec["team"] or None, rec["model"] or None)] = [
            int(rec["calls"]), int(rec["input_tokens"]),
            int(rec["output_tokens"]), int(whole) * 10**9 + int(frac),
            int(rec["fallback_calls"]),
            int(Decimal(rec["fallback_cost_usd"]) * 10**9),
            int(rec["routed_calls"]),
            int(Decimal(rec["saved_usd"]) * 10**9),
            int(rec["cache_hits"])]
    tc.assertEqual(got, want, src.name + " csv")
    a = src.ok(tc, "spend", [("group_by", "team"), ("format", "table")])
    lines = a.body.splitlines()
    tc.assertTrue(lines[0].startswith("team "), a.body)
    routed = [r for r in final(rows) if r["routed_rule"] is not None]
    hits = [r for r in final(rows) if cached(r)]
    if routed or hits:
        parts = []
        if routed:
            parts.append("%d call%s sent elsewhere by routing rules"
                         % (len(routed), "" if len(routed) == 1 else "s"))
        if hits:
            parts.append("%d call%s answered from the cache"
                         % (len(hits), "" if len(hits) == 1 else "s"))
        saved = sum(r["saved_nusd"] for r in final(rows)
                    if r["routed_rule"] is not None or cached(r))
        tc.assertEqual(lines.pop(), "of which %s, saving $%s"
                       % (" and ".join(parts), usd(saved)), a.body)
    fb = [r for r in final(rows) if "+fallback:" in (r["price_version"] or "")]
    if fb:
        # An estimate never passes for a price: a line says how much.
        tc.assertEqual(lines.pop(), "of which %d call%s to models without "
                       "a price, priced at their family's highest rates: $%s"
                       % (len(fb), "" if len(fb) == 1 else "s",
                          usd(sum(r["cost_nusd"] for r in fb))), a.body)
    tc.assertTrue(lines[-1].startswith("total "), a.body)
    total = sum(r["cost_nusd"] for r in final(rows))
    tc.assertTrue(lines[-1].endswith(" " + usd(total)), a.body)


def newest_first(rows):
    return sorted(rows, key=lambda r: (r["started_at"], r["id"],
                                       r.get("instance", "")),
                  reverse=True)


def ident(c):
    return (c["id"], c.get("instance"))


def check_calls_pages(tc, src, rows, params=(), limit=3):
    """Paging through with the cursor: every matching row once, newest
    first, each as the ledger holds it."""
    want = newest_first(rows)
    by_ident = {ident(r): r for r in rows}
    seen, cursor = [], None
    for _ in range(len(rows) + 2):
        p = list(params) + [("limit", str(limit)), ("format", "json")]
        if cursor:
            p.append(("cursor", cursor))
        doc = src.ok(tc, "calls", p).json()
        tc.assertLessEqual(len(doc["calls"]), limit)
        for c in doc["calls"]:
            row = by_ident[ident(c)]
            for k, v in row.items():
                tc.assertEqual(c[k], v, "%s: %s of %s" % (src.name, k,
                                                          c["id"]))
            tc.assertNotIn("ship_seq", c)
            tc.assertEqual(Decimal(str(c["cost_usd"])),
                           Decimal(row["cost_nusd"]) / 10**9)
        seen += [ident(c) for c in doc["calls"]]
        cursor = doc["next_cursor"]
        if not cursor:
            break
    tc.assertEqual(seen, [ident(r) for r in want],
                   "%s calls %r: not each row once, newest first" %
                   (src.name, params))


def check_calls(tc, src, rows):
    """Paging, filters, the status filter, the table."""
    check_calls_pages(tc, src, rows)
    check_calls_pages(tc, src, [r for r in rows if r["team"] == "search"],
                      [("team", "search")], limit=2)
    check_calls_pages(tc, src, [r for r in rows if not r["team"]],
                      [("team", "")])
    for st in STATUSES:
        check_calls_pages(tc, src, [r for r in rows if r["status"] == st],
                          [("status", st)], limit=1000)
    times = sorted(r["started_at"] for r in rows)
    mid = times[len(times) // 2]
    check_calls_pages(tc, src, [r for r in rows if r["started_at"] >= mid],
                      [("from", mid)])
    a = src.ok(tc, "calls", [("format", "table"), ("limit", "1000")])
    lines = a.body.splitlines()
    tc.assertEqual(lines[0].split(), [
        "started_at", "id", "status", "reason", "provider", "model", "team",
        "tenant", "input_tokens", "output_tokens", "cost_usd"])
    tc.assertEqual(len(lines) - 1, len(rows), a.body)
    for line, row in zip(lines[1:], newest_first(rows)):
        cells = line.split()
        tc.assertEqual(cells[:2], [row["started_at"], row["id"]])
        tc.assertEqual(cells[-1], usd(row["cost_nusd"]))


def check_all(tc, src, rows):
    """Every check, each in a subTest named by the source."""
    for check in (check_group_by, check_filters, check_periods,
                  check_csv_table, check_calls):
        with tc.subTest(source=src.name, check=check.__name__):
            check(tc, src, rows)
