#!/usr/bin/env python3
"""Models the price table does not know. By default (unknown_models.action
family_max) a call to one is priced at the highest rates of its family,
never at $0: the row's cost equals that price computed here from
config/prices.yaml, price_version says it is a fallback, one unknown_model
alert fires per model and day, and /metrics and /v1/spend show the share of
spend that is such an estimate. When the provider says a priced model
served the call, the row is priced by that model, whatever the action, and
its served_model and price_version say so. unpriced and refuse still work
when chosen."""

import csv
import io
import os
import re

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
from ledgerlib import AGENT, ANTHROPIC_VERSION, describe_row  # noqa: E402
from ledgerlib import marker as new_marker  # noqa: E402

ADMIN_RE = re.compile(r"admin listening on 127\.0\.0\.1:(\d+)")
KNOBS = [("x-fake-input-tokens", "2000"), ("x-fake-cached-tokens", "500"),
         ("x-fake-events", "3"), ("x-fake-event-tokens", "7")]
RATE_KEYS = ("input", "cached", "cache_write", "cache_write_1h", "output")


def tokens(name):
    return re.split(r"[-.]", name)


def common(a, b):
    """Leading whole tokens a and b share (separators included)."""
    n = 0
    ta, tb = re.split(r"([-.])", a), re.split(r"([-.])", b)
    for i in range(0, min(len(ta), len(tb)), 2):
        if ta[i] != tb[i] or ta[i] == "":
            break
        n += 1
        if i + 1 >= len(ta) or i + 1 >= len(tb) or ta[i + 1] != tb[i + 1]:
            break
    return n


def family_of(prices, name):
    """(family name, member models) as docs/pricing.md defines them."""
    best = max(common(name, m) for m in prices.models)
    if best == 0:
        return "*", list(prices.models)
    fam = "".join(re.split(r"([-.])", name)[:2 * best - 1])
    return fam, [m for m in prices.models if common(name, m) >= best]


def family_rates(prices, members):
    """Per-class maxima over every member's base, long and tier rates."""
    top = dict.fromkeys(RATE_KEYS, 0)
    for m in members:
        entry = prices.models[m]
        blocks = [entry] + list((entry.get("tiers") or {}).values())
        if entry.get("long_context"):
            blocks.append(entry["long_context"])
        for b in blocks:
            r = ledgerlib.Rates(b)
            for k in RATE_KEYS:
                top[k] = max(top[k], getattr(r, k))
    return top


def per_million(pusd_per_token):
    """A rate as the alert writes it: USD per million, at least cents."""
    whole, frac = divmod(pusd_per_token, 10 ** 6)
    return "%d.%s" % (whole, ("%06d" % frac).rstrip("0").ljust(2, "0"))


def cost_at(rates, u):
    cw, cw1h = u.get("cache_write", 0), u.get("cache_write_1h", 0)
    cached = u.get("cached", 0)
    pusd = ((u["input"] - cached - cw) * rates["input"] +
            cached * rates["cached"] + (cw - cw1h) * rates["cache_write"] +
            cw1h * rates["cache_write_1h"] + u["output"] * rates["output"])
    return ledgerlib.ceil_div(pusd, 1000)


class UnknownModelsTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.rcv = tglib.WebhookReceiver()
        self.addCleanup(self.rcv.close)

    def start_tg(self, unknown_models=None, policies=None):
        ex = ledgerlib.metering_extra(unknown_models=unknown_models)
        ex["alerts"] = {"webhooks": [{
            "url": "http://127.0.0.1:%d/hook" % self.rcv.port,
            "format": "json"}]}
        if policies:
            ex["policies"] = policies
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex)
        m = tglib.wait_until(lambda: ADMIN_RE.search(tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        tg.admin_port = int(m.group(1))
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"))
        return tg

    def get(self, tg, path):
        raw = tglib.build_request(
            "GET", path, b"", [("Host", "127.0.0.1:%d" % tg.admin_port)],
            host=None)
        return self.call(tg.admin_port, "GET", path, raw=raw)

    def chat(self, tg, model, served=None, stream=False):
        hdrs = [JSON_CT, AGENT] + KNOBS
        if served:
            hdrs.append(("x-fake-model", served))
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker(), stream, model), hdrs)
        self.assertEqual(r.status, 200, r)
        return r, ledgerlib.usage_of("chat", r.body, stream)

    def unknown_alerts(self):
        return [b for b in self.rcv.bodies()
                if b.get("kind") == "unknown_model"]

    # ------------------------------------------------------------------

    def test_default_prices_an_unknown_model_at_its_family_max(self):
        tg = self.start_tg()
        fam, members = family_of(self.prices, "gpt-9-preview")
        self.assertEqual(fam, "gpt")
        self.assertIn("gpt-5", members)
        self.assertNotIn("o3", members)
        rates = family_rates(self.prices, members)
        rows = []
        for stream in (False, True):
            r, u = self.chat(tg, "gpt-9-preview", stream=stream)
            row = self.settled_row(r)
            d = describe_row(row)
            want = cost_at(rates, u)
            self.assertGreater(want, 0)
            self.assertEqual(row["status"], "ok", d)
            self.assertEqual(row["cost_nusd"], want, d)
            self.assertEqual(row["price_version"],
                             self.prices.version + "+fallback:gpt", d)
            self.assertEqual(row["model"], "gpt-9-preview", d)
            self.assertEqual(row["served_model"], "gpt-9-preview", d)
            self.assertGreater(row["reserved_nusd"], 0, d)
            # Never cheaper than the dearest member of the family.
            for m in members:
                self.assertGreaterEqual(
                    row["cost_nusd"], self.prices.cost_nusd(m, u), m)
            self.assertIsNotNone(ledgerlib.call_line(tg, row["id"]))
            self.assertRegex(tg.stderr(), r"id=%s reason=ok note=\"[^\"]*"
                             r"highest rates of family 'gpt'" % row["id"])
            rows.append(row)

        # One alert for the two calls of the same day.
        self.assertTrue(tglib.wait_until(
            lambda: len(self.unknown_alerts()) >= 1, 10), self.rcv.got)
        self.assertTrue(tglib.wait_until(
            lambda: self.get(tg, "/v1/alerts").json()["alerts"], 10))
        al = self.unknown_alerts()
        self.assertEqual(len(al), 1, al)
        self.assertIn("'gpt-9-preview'", al[0]["message"])
        self.assertIn("family 'gpt' ($%s/M input, $%s/M output)" %
                      (per_million(rates["input"]),
                       per_million(rates["output"])), al[0]["message"])
        self.assertTrue(al[0]["id"].startswith("unk-"), al[0])
        kinds = [a["kind"] for a in self.get(tg, "/v1/alerts").json()
                 ["alerts"]]
        self.assertEqual(kinds, ["unknown_model"])

        total = sum(r["cost_nusd"] for r in rows)
        text = self.get(tg, "/metrics").body.decode()
        self.assertIn('tollgate_fallback_priced_calls_total{provider='
                      '"openai",model="gpt-9-preview"} 2', text)
        self.assertIn('tollgate_fallback_priced_cost_nusd_total{provider='
                      '"openai",model="gpt-9-preview"} %d' % total, text)
        self.assertIn('tollgate_alerts_fired_total{kind="unknown_model"} 1',
                      text)
        self.assertNotIn('tollgate_unpriced_calls_total{', text)

        # A priced call beside them: the spend says which part is estimated.
        r, u = self.chat(tg, "gpt-4o-mini")
        priced = self.settled_row(r)["cost_nusd"]
        sp = self.get(tg, "/v1/spend").json()
        self.assertEqual(sp["total_calls"], 3, sp)
        self.assertEqual(sp["total_cost_nusd"], total + priced, sp)
        self.assertEqual(sp["fallback_calls"], 2, sp)
        self.assertEqual(sp["fallback_cost_nusd"], total, sp)
        sp = self.get(tg, "/v1/spend?group_by=model&format=table")
        self.assertIn("of which 2 calls to models without a price",
                      sp.body.decode())
        # Per group too, in JSON and in the CSV export, whichever path
        # (rollup, or the calls of a partial day) answers.
        for q in ("group_by=model", "group_by=model&from=2000-01-01T00:00:"
                  "00.001Z"):
            with self.subTest(query=q):
                doc = self.get(tg, "/v1/spend?" + q).json()
                by = {r["model"]: r for r in doc["rows"]}
                self.assertEqual(
                    (by["gpt-9-preview"]["fallback_calls"],
                     by["gpt-9-preview"]["fallback_cost_nusd"],
                     by["gpt-4o-mini"]["fallback_calls"],
                     by["gpt-4o-mini"]["fallback_cost_nusd"]),
                    (2, total, 0, 0), doc)
                text = self.get(tg, "/v1/spend?format=csv&" + q).body
                rows = list(csv.DictReader(io.StringIO(text.decode(),
                                                       newline="")))
                by = {r["model"]: r for r in rows}
                self.assertEqual(by["gpt-9-preview"]["fallback_calls"], "2")
                self.assertEqual(by["gpt-4o-mini"]["fallback_calls"], "0")
                self.assertEqual(
                    by["gpt-9-preview"]["fallback_cost_usd"],
                    "%d.%09d" % divmod(total, 10 ** 9))

    def test_family_is_the_longest_shared_prefix(self):
        tg = self.start_tg()
        for model, fam in (("gpt-5.7-nova", "gpt-5"),
                           ("claude-opus-9", "claude-opus"),
                           ("o9-mini", "*")):
            with self.subTest(model=model):
                got, members = family_of(self.prices, model)
                self.assertEqual(got, fam)
                if model.startswith("claude"):
                    path, kind = "/v1/messages", "anthropic"
                    body = tglib.anthropic_messages(new_marker(), False,
                                                    model)
                else:
                    path, kind = "/v1/chat/completions", "chat"
                    body = tglib.openai_chat(new_marker(), False, model)
                r = self.call(tg.port, "POST", path, body,
                              [JSON_CT, AGENT, ANTHROPIC_VERSION] + KNOBS)
                self.assertEqual(r.status, 200, r)
                u = ledgerlib.usage_of(kind, r.body, False)
                row = self.settled_row(r)
                d = describe_row(row)
                self.assertEqual(row["price_version"],
                                 self.prices.version + "+fallback:" + fam, d)
                self.assertEqual(
                    row["cost_nusd"],
                    cost_at(family_rates(self.prices, members), u), d)

    def test_served_priced_model_prices_the_row(self):
        # Asked for a model the table does not know; the provider says a
        # priced one served it: priced by that one, under every action,
        # and the row is never marked unpriced or fallback with it.
        served = "gpt-5-mini-2025-08-07"
        for action in ("unpriced", "price_as", "family_max"):
            um = {"action": action}
            if action == "price_as":
                um["price_as"] = "gpt-4o"
            tg = self.start_tg(unknown_models=um)
            for stream in (False, True):
                with self.subTest(action=action, stream=stream):
                    r, u = self.chat(tg, "gpt-5.7-nova", served, stream)
                    self.assertEqual(u["model"], served)
                    row = self.settled_row(r)
                    d = describe_row(row)
                    self.assertEqual(row["cost_nusd"],
                                     self.prices.cost_nusd("gpt-5-mini", u),
                                     d)
                    self.assertGreater(row["cost_nusd"], 0, d)
                    self.assertEqual(row["price_version"],
                                     self.prices.version, d)
                    self.assertEqual(row["model"], "gpt-5.7-nova", d)
                    self.assertEqual(row["served_model"], served, d)
            self.assertEqual(tg.stop(), 0)

    def test_unpriced_when_chosen(self):
        tg = self.start_tg(unknown_models={"action": "unpriced"})
        r, u = self.chat(tg, "gpt-9-preview")
        row = self.settled_row(r)
        d = describe_row(row)
        self.assertEqual(row["price_version"], "unpriced", d)
        self.assertEqual(row["cost_nusd"], 0, d)
        self.assertEqual(row["usage_source"], "reported", d)
        text = self.get(tg, "/metrics").body.decode()
        self.assertIn('tollgate_unpriced_calls_total{provider="openai",'
                      'model="gpt-9-preview"} 1', text)
        self.assertNotIn('tollgate_fallback_priced_calls_total{', text)
        sp = self.get(tg, "/v1/spend").json()
        self.assertEqual(sp["fallback_calls"], 0, sp)
        self.assertEqual(self.unknown_alerts(), [])

    def test_refuse_unchanged(self):
        tg = self.start_tg(unknown_models={"action": "refuse"})
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker(), False,
                                        "gpt-9-preview"),
                      [JSON_CT, AGENT] + KNOBS)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["code"], "unknown_model")
        row = self.settled_row(r)
        self.assertEqual(row["status"], "refused", describe_row(row))
        self.assertEqual(self.unknown_alerts(), [])

    def test_hard_cap_holds_an_unknown_model_at_its_family_worst_case(self):
        # The reservation uses the family's rates, so a hard cap can hold
        # the call (an unpriced model is refused as unpriced_model): what
        # fits is admitted and counted, what does not is refused hard_cap.
        tg = self.start_tg(policies=[
            {"name": "big", "match": {"team": "big"}, "window": "day",
             "hard_cap_usd": "100"},
            {"name": "tiny", "match": {"team": "tiny"}, "window": "day",
             "hard_cap_usd": "0.000001"}])
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker(), False,
                                        "gpt-9-preview"),
                      [JSON_CT, AGENT, ("X-Tollgate-Team", "big")] + KNOBS)
        self.assertEqual(r.status, 200, r)
        row = self.settled_row(r)
        self.assertGreater(row["reserved_nusd"], row["cost_nusd"],
                           describe_row(row))
        doc = self.get(tg, "/v1/budgets").json()
        big = [b for b in doc["budgets"] if b["policy"] == "big"]
        self.assertEqual([b["spent_nusd"] for b in big], [row["cost_nusd"]],
                         doc)
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker(), False,
                                        "gpt-9-preview"),
                      [JSON_CT, AGENT, ("X-Tollgate-Team", "tiny")] + KNOBS)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(self.settled_row(r)["refusal_reason"], "hard_cap")

if __name__ == "__main__":
    tglib.main()
