#!/usr/bin/env python3
"""Routing rules (docs/spend-less.md), through the real binary and
fakeprov: a rule rewrites the model (in the body for OpenAI and Anthropic,
in the path for Gemini) for the calls it matches and for no other, lowers
or sets the output bound, switches on once a budget runs low, and the
client gets the served model's answer with X-Tollgate-Route naming the
rule. The ledger row says what was asked (routed_from, routed_rule) and
what the rule saved (saved_nusd, computed here from config/prices.yaml);
the budget is charged at the model sent; /v1/spend, the CSV export and
/metrics carry the savings; tollgate check names a bad rule's file:line;
and a ledger made before the routing columns gains them."""

import calendar
import csv
import io
import json
import os
import re
import sqlite3
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
import redislib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
from ledgerlib import ANTHROPIC_VERSION, describe_row  # noqa: E402
from ledgerlib import marker as new_marker  # noqa: E402

CLASSIFIER = ("X-Tollgate-Agent-Class", "classifier")
RESEARCHER = ("X-Tollgate-Agent-Class", "researcher")
KNOBS = [("x-fake-input-tokens", "3000"), ("x-fake-events", "4"),
         ("x-fake-event-tokens", "50")]

SMALL_STEPS = {"name": "small-steps",
               "match": {"agent_class": "classifier", "model": "gpt-4o*",
                         "provider": "openai"},
               "model": "gpt-4o-mini"}

# Credentials: the client's own provider key, the upstreams' keys
# (api_key_env) and a tollgate key. Canaries: none may reach a host or a
# log line it is not meant for.
KEY_CLIENT = "sk-CANARY-routing-client-5e1a"
KEY_OPENAI_UP = "sk-CANARY-routing-openai-upstream-31c4"
KEY_LOCAL_UP = "sk-CANARY-routing-local-upstream-77b2"
KEY_TOLLGATE = "tg-CANARY-routing-agent-9f0d"
ENV_OPENAI = "TG_ROUTING_TEST_OPENAI_KEY"
ENV_LOCAL = "TG_ROUTING_TEST_LOCAL_KEY"
# Every place a client puts a provider secret: the headers and ?key=.
CLIENT_SECRETS = [("Authorization", "Bearer " + KEY_CLIENT),
                  ("x-api-key", KEY_CLIENT), ("api-key", KEY_CLIENT),
                  ("x-goog-api-key", KEY_CLIENT),
                  ("Cookie", "session=" + KEY_CLIENT)]
TO_LOCAL = {"name": "to-local", "match": {"agent_class": "classifier",
                                          "upstream": "openai"},
            "upstream": "local"}


class RoutingTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def start_tg(self, routing, policies=None, name="tollgate", ups=None):
        ex = ledgerlib.metering_extra()
        ex["routing"] = routing
        if policies:
            ex["policies"] = policies
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port, **(ups or {})), extra=ex, name=name)
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        return tg

    def chat(self, tg, model, hdrs, stream=False, extra=None, status=200):
        m = new_marker()
        body = tglib.openai_chat(m, stream, model, extra)
        r = self.call(tg.port, "POST", "/v1/chat/completions", body,
                      [JSON_CT] + list(hdrs) + KNOBS)
        self.assertEqual(r.status, status, r)
        rec = self.fp.wait_request(m)
        return r, body, rec

    def row(self, r):
        return self.settled_row(r)

    def assertSaved(self, row, asked, sent, u):
        cost = self.prices.cost_nusd(sent, u)
        want = self.prices.cost_nusd(asked, u) - cost
        self.assertEqual(row["cost_nusd"], cost, describe_row(row))
        self.assertEqual(row["saved_nusd"], want, describe_row(row))
        return want

    # ------------------------------------------------------------------

    def test_rewrites_the_model_for_one_agent_class_only(self):
        tg = self.start_tg([SMALL_STEPS], policies=[{
            "name": "classifier-daily", "match": {"agent_class": "classifier"},
            "window": "day", "hard_cap_usd": 100}])
        r, body, rec = self.chat(tg, "gpt-4o", [CLASSIFIER])
        # The provider got the model the rule names, every other byte as
        # sent; the client gets its answer as it came.
        self.assertEqual(rec["body"].encode(),
                         body.replace(b'"gpt-4o"', b'"gpt-4o-mini"', 1))
        self.assertEqual(r.header("x-tollgate-route"), "small-steps")
        self.assertEqual(json.loads(r.body)["model"], "gpt-4o-mini")
        u = ledgerlib.usage_of("chat", r.body, False)
        row = self.row(r)
        self.assertEqual(row["model"], "gpt-4o-mini")
        self.assertEqual(row["routed_from"], "gpt-4o")
        self.assertEqual(row["routed_rule"], "small-steps")
        saved = self.assertSaved(row, "gpt-4o", "gpt-4o-mini", u)
        self.assertGreater(saved, 0)
        # The budget is charged what was sent.
        st, budgets = tg.admin_get("/v1/budgets")
        self.assertEqual(st, 200, budgets)
        b = [x for x in budgets["budgets"]
             if x["policy"] == "classifier-daily"]
        self.assertEqual(len(b), 1, budgets)
        self.assertEqual(b[0]["spent_nusd"], row["cost_nusd"], b)

        # Another agent class is untouched: byte for byte, no header.
        r2, body2, rec2 = self.chat(tg, "gpt-4o", [RESEARCHER])
        self.assertEqual(rec2["body"].encode(), body2)
        self.assertIsNone(r2.header("x-tollgate-route"))
        row2 = self.row(r2)
        self.assertEqual(row2["model"], "gpt-4o")
        self.assertIsNone(row2["routed_from"])
        self.assertIsNone(row2["routed_rule"])
        self.assertEqual(row2["saved_nusd"], 0)

        # Savings in the answers: JSON, CSV, /v1/calls and /metrics.
        tg.wait_written()
        st, sp = tg.admin_get("/v1/spend?group_by=agent_class")
        self.assertEqual(st, 200, sp)
        by = {x["agent_class"]: x for x in sp["rows"]}
        self.assertEqual(by["classifier"]["saved_nusd"], saved, sp)
        self.assertEqual(by["classifier"]["routed_calls"], 1, sp)
        self.assertEqual(by["researcher"]["saved_nusd"], 0, sp)
        self.assertEqual(sp["total_saved_nusd"], saved, sp)
        self.assertEqual(sp["routed_calls"], 1, sp)
        self.assertEqual(by["classifier"]["saved_usd"],
                         float("%d.%09d" % divmod(saved, 10 ** 9)))
        csv_text = self.admin_text(tg, "/v1/spend?group_by=agent_class"
                                   "&format=csv")
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        got = {x["agent_class"]: x["saved_usd"] for x in rows}
        self.assertEqual(got["classifier"], "%d.%09d" % divmod(saved, 10 ** 9))
        self.assertEqual(got["researcher"], "0.000000000")
        st, calls = tg.admin_get("/v1/calls?agent_class=classifier")
        self.assertEqual(st, 200, calls)
        self.assertEqual(calls["calls"][0]["routed_from"], "gpt-4o")
        self.assertEqual(calls["calls"][0]["saved_nusd"], saved)
        metrics = self.admin_text(tg, "/metrics")
        self.assertRegex(metrics,
                         r'(?m)^tollgate_routed_total\{rule="small-steps"\} 1$')
        self.assertRegex(metrics, r'(?m)^tollgate_routed_saved_nusd\{rule='
                         r'"small-steps"\} %d$' % saved)

    def admin_text(self, tg, path):
        m = tglib.wait_until(lambda: tg.ADMIN_RE.search(tg.stderr()), 10)
        port = int(m.group(1))
        raw = tglib.build_request("GET", path, b"",
                                  [("Host", "127.0.0.1:%d" % port)],
                                  host=None)
        r = self.call(port, "GET", path, raw=raw)
        self.assertEqual(r.status, 200, r)
        return r.body.decode()

    def test_max_tokens_lowered_set_and_left(self):
        tg = self.start_tg([
            {"name": "short", "match": {"agent_class": "classifier"},
             "max_tokens": 100}], policies=[{
                 "name": "day", "window": "day", "hard_cap_usd": 100}])
        # Asked for more: lowered in the body and in the reservation.
        r, body, rec = self.chat(tg, "gpt-4o", [CLASSIFIER],
                                 extra={"max_tokens": 4000})
        self.assertEqual(r.header("x-tollgate-route"), "short")
        self.assertEqual(json.loads(rec["body"])["max_tokens"], 100)
        self.assertEqual(rec["body"].encode(),
                         body.replace(b'"max_tokens": 4000',
                                      b'"max_tokens": 100'))
        lowered = self.row(r)
        self.assertIsNone(lowered["routed_from"])
        self.assertEqual(lowered["routed_rule"], "short")
        self.assertEqual(lowered["saved_nusd"], 0)
        # The same call unrouted reserves for 4000 output tokens.
        r2, body2, rec2 = self.chat(tg, "gpt-4o", [RESEARCHER],
                                    extra={"max_tokens": 4000})
        self.assertEqual(rec2["body"].encode(), body2)
        full = self.row(r2)
        self.assertEqual(full["reserved_nusd"] - lowered["reserved_nusd"],
                         ledgerlib.ceil_div(
                             3900 * self.prices.rates("gpt-4o").output,
                             1000), (describe_row(full),
                                     describe_row(lowered)))
        # None asked: the rule's bound is added (max_completion_tokens
        # for OpenAI's chat).
        r3, body3, rec3 = self.chat(tg, "gpt-4o", [CLASSIFIER])
        self.assertEqual(json.loads(rec3["body"])["max_completion_tokens"],
                         100)
        # Asked for less: the body is left as it was.
        r4, body4, rec4 = self.chat(tg, "gpt-4o", [CLASSIFIER],
                                    extra={"max_tokens": 50})
        self.assertEqual(rec4["body"].encode(), body4)
        self.assertEqual(r4.header("x-tollgate-route"), "short")

    def test_when_budget_below_percent_switches_on(self):
        tg = self.start_tg([
            {"name": "low-budget", "when_budget_below_percent": 50,
             "match": {"provider": "openai"},
             "model": "gpt-4o-mini"}], policies=[{
                 "name": "team-day", "match": {"team": "t1"},
                 "window": "day", "hard_cap_usd": 4}, {
                 "name": "closed", "match": {"team": "t0"},
                 "window": "day", "hard_cap_usd": 0}])
        team = ("X-Tollgate-Team", "t1")
        big = [("x-fake-input-tokens", "1000000")]
        # Full budget: as asked. It costs $2.50 of the $4 cap.
        r, body, rec = self.chat(tg, "gpt-4o", [team] + big,
                                 extra={"max_tokens": 10})
        self.assertEqual(rec["body"].encode(), body)
        self.assertIsNone(r.header("x-tollgate-route"))
        first = self.row(r)
        self.assertIsNone(first["routed_rule"])
        self.assertGreater(first["cost_nusd"], 2 * 10 ** 9)
        # 37.5 % left, under 50 %: routed.
        r2, body2, rec2 = self.chat(tg, "gpt-4o", [team],
                                    extra={"max_tokens": 10})
        self.assertEqual(json.loads(rec2["body"])["model"], "gpt-4o-mini")
        self.assertEqual(r2.header("x-tollgate-route"), "low-budget")
        self.assertEqual(self.row(r2)["routed_from"], "gpt-4o")
        # A cap of 0 has no room at all: routed (then refused by it).
        r0 = self.call(tg.port, "POST", "/v1/chat/completions",
                       tglib.openai_chat(new_marker(), False, "gpt-4o"),
                       [JSON_CT, ("X-Tollgate-Team", "t0")])
        self.assertEqual(r0.status, 429, r0)
        row0 = self.settled_row(r0)
        self.assertEqual((row0["status"], row0["routed_rule"],
                          row0["model"]), ("refused", "low-budget",
                                           "gpt-4o-mini"))
        # A call no hard cap covers is never routed by such a rule.
        r3, body3, rec3 = self.chat(tg, "gpt-4o", [("X-Tollgate-Team", "t2")],
                                    extra={"max_tokens": 10})
        self.assertEqual(rec3["body"].encode(), body3)

    def test_anthropic_and_gemini(self):
        tg = self.start_tg([
            {"name": "haiku", "match": {"provider": "anthropic",
                                        "model": "claude-sonnet-4-5"},
             "model": "claude-haiku-4-5"},
            {"name": "flash", "match": {"upstream": "gemini"},
             "model": "gemini-2.5-flash"}])
        m = new_marker()
        body = tglib.anthropic_messages(m, model="claude-sonnet-4-5")
        r = self.call(tg.port, "POST", "/v1/messages", body,
                      [JSON_CT, ANTHROPIC_VERSION] + KNOBS)
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(m)
        self.assertEqual(rec["body"].encode(), body.replace(
            b'"claude-sonnet-4-5"', b'"claude-haiku-4-5"', 1))
        self.assertEqual(r.header("x-tollgate-route"), "haiku")
        u = ledgerlib.usage_of("anthropic", r.body, False)
        row = self.row(r)
        self.assertEqual(row["routed_from"], "claude-sonnet-4-5")
        self.assertGreater(
            self.assertSaved(row, "claude-sonnet-4-5", "claude-haiku-4-5",
                             u), 0)

        # Gemini: the model is in the path; the body is not touched.
        m = new_marker()
        body = tglib.gemini_generate(m)
        r = self.call(tg.port, "POST",
                      "/v1beta/models/gemini-2.5-pro:generateContent", body,
                      [JSON_CT] + KNOBS)
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(m)
        self.assertEqual(rec["path"],
                         "/v1beta/models/gemini-2.5-flash:generateContent")
        self.assertEqual(rec["body"].encode(), body)
        self.assertEqual(r.header("x-tollgate-route"), "flash")
        u = ledgerlib.usage_of("gemini", r.body, False)
        row = self.row(r)
        self.assertEqual(row["model"], "gemini-2.5-flash")
        self.assertEqual(row["routed_from"], "gemini-2.5-pro")
        self.assertGreater(self.assertSaved(row, "gemini-2.5-pro",
                                            "gemini-2.5-flash", u), 0)

    def test_streamed_call_routed(self):
        tg = self.start_tg([SMALL_STEPS])
        r, body, rec = self.chat(tg, "gpt-4o", [CLASSIFIER], stream=True)
        self.assertEqual(json.loads(rec["body"])["model"], "gpt-4o-mini")
        self.assertEqual(r.header("x-tollgate-route"), "small-steps")
        u = ledgerlib.usage_of("chat", r.body, True)
        self.assertIsNotNone(u, r.body)
        row = self.row(r)
        self.assertEqual(row["stream"], 1)
        self.assertEqual(row["routed_from"], "gpt-4o")
        self.assertRowTokens(row, u, "routed stream")
        self.assertGreater(self.assertSaved(row, "gpt-4o", "gpt-4o-mini",
                                            u), 0)

    def test_cut_call_saves_nothing(self):
        """A routed call whose answer stops halfway is charged from an
        estimate: pricing the asked model at that estimate would record a
        saving no one made."""
        tg = self.start_tg([SMALL_STEPS],
                           ups={"openai": {"idle_timeout": "1s"}})
        body = tglib.openai_chat(new_marker(), model="gpt-4o")
        c = self.raw(tg.port, timeout=10)
        c.send(tglib.build_request("POST", "/v1/chat/completions", body,
                                   [JSON_CT, CLASSIFIER,
                                    ("x-fake-hang", "body")]))
        resp = tglib.Response()
        c.read_head(resp, time.monotonic() + 10)
        row = self.settled_row(resp.header("x-tollgate-request-id"))
        d = describe_row(row)
        self.assertEqual(row["status"], "upstream_error", d)
        self.assertEqual(row["usage_source"], "estimated", d)
        self.assertEqual(row["routed_from"], "gpt-4o", d)
        self.assertGreater(row["cost_nusd"], 0, d)
        self.assertEqual(row["saved_nusd"], 0, d)

    def test_embeddings_keep_their_model(self):
        """A rule that rewrites the model or the bound is for calls that
        generate text: an embeddings call it would match goes as asked."""
        tg = self.start_tg([{"name": "mini", "match": {"provider": "openai"},
                             "model": "gpt-4o-mini", "max_tokens": 50}])
        m = new_marker()
        body = json.dumps({"model": "text-embedding-3-small",
                           "input": m}).encode()
        r = self.call(tg.port, "POST", "/v1/embeddings", body, [JSON_CT])
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(m)
        self.assertEqual(rec["body"].encode(), body)
        self.assertIsNone(r.header("x-tollgate-route"))
        row = self.row(r)
        self.assertEqual(row["model"], "text-embedding-3-small")
        self.assertIsNone(row["routed_rule"])

    def test_upstream_switch(self):
        tg = self.start_tg([
            {"name": "to-local", "match": {"agent_class": "classifier",
                                           "upstream": "openai"},
             "upstream": "local"}])
        r, body, rec = self.chat(tg, "gpt-4o", [CLASSIFIER])
        self.assertEqual(rec["body"].encode(), body)
        self.assertEqual(r.header("x-tollgate-route"), "to-local")
        row = self.row(r)
        self.assertEqual(row["upstream"], "local")
        self.assertEqual(row["provider"], "openai_compatible")
        self.assertEqual(row["routed_rule"], "to-local")
        self.assertIsNone(row["routed_from"])

    def keyed_tg(self, local_key, name):
        """tollgate whose openai upstream is fakeprov and whose local one
        is a second fakeprov (self.fp2), openai with its own key, local
        with one only if local_key; calls with KEY_TOLLGATE are bound."""
        env = {ENV_OPENAI: KEY_OPENAI_UP, ENV_LOCAL: KEY_LOCAL_UP}
        local = {"type": "openai_compatible",
                 "base_url": "http://127.0.0.1:%d" % self.fp2.port}
        if local_key:
            local["api_key_env"] = ENV_LOCAL
        ex = ledgerlib.metering_extra(attribution={"keys": [
            {"tollgate_key_sha256": ledgerlib.key_sha256(KEY_TOLLGATE),
             "tags": {"agent_class": "classifier"}}]})
        ex["routing"] = [TO_LOCAL]
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port, openai={"api_key_env": ENV_OPENAI}, local=local),
            extra=ex, name=name, env=env)
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)
        return tg

    def keyed_call(self, tg, fp, hdrs, query=""):
        """A chat call with hdrs; the request fp received."""
        m = new_marker()
        r = self.call(tg.port, "POST", "/v1/chat/completions" + query,
                      tglib.openai_chat(m, False, "gpt-4o"),
                      [JSON_CT] + hdrs)
        self.assertEqual(r.status, 200, r)
        return r, fp.wait_request(m)

    def assertNoSecret(self, rec, secrets, what):
        text = json.dumps([rec["path"], rec["headers"]])
        for k in secrets:
            self.assertNotIn(k, text, "%s: %s reached the upstream: %s" %
                             (what, k, text))

    def test_upstream_switch_never_forwards_the_clients_key(self):
        self.fp2 = self.fakeprov(name="fakeprov-local")
        allkeys = [KEY_CLIENT, KEY_OPENAI_UP, KEY_LOCAL_UP, KEY_TOLLGATE]
        # The target upstream has no key (a local server): the call goes
        # with no credential at all, none of the client's secrets, and
        # the rest of the query.
        tg = self.keyed_tg(False, "tollgate")
        r, rec = self.keyed_call(tg, self.fp2, [CLASSIFIER] + CLIENT_SECRETS,
                                 "?key=%s&keep=1" % KEY_CLIENT)
        self.assertEqual(r.header("x-tollgate-route"), "to-local")
        self.assertNoSecret(rec, allkeys, "switched, keyless target")
        for h, _ in CLIENT_SECRETS:
            self.assertEqual(tglib.rec_header(rec, h), [], h)
        self.assertEqual(rec["path"], "/v1/chat/completions?keep=1")
        self.assertEqual(self.row(r)["upstream"], "local")
        # Not switched: the client's credentials go where it sent them.
        r, rec = self.keyed_call(tg, self.fp, [RESEARCHER] + CLIENT_SECRETS,
                                 "?key=%s&keep=1" % KEY_CLIENT)
        self.assertIsNone(r.header("x-tollgate-route"))
        self.assertEqual(tglib.rec_header(rec, "authorization"),
                         ["Bearer " + KEY_CLIENT])
        self.assertEqual(tglib.rec_header(rec, "x-api-key"), [KEY_CLIENT])
        self.assertIn("key=" + KEY_CLIENT, rec["path"])
        self.assertEqual(tg.stop(), 0)
        for k in allkeys:
            self.assertNotIn(k, tg.log())

        # The target has its own key: that one goes, and only it.
        tg = self.keyed_tg(True, "tollgate2")
        r, rec = self.keyed_call(tg, self.fp2, [CLASSIFIER] + CLIENT_SECRETS,
                                 "?key=%s" % KEY_CLIENT)
        self.assertNoSecret(rec, [KEY_CLIENT, KEY_OPENAI_UP, KEY_TOLLGATE],
                            "switched, keyed target")
        self.assertEqual(tglib.rec_header(rec, "authorization"),
                         ["Bearer " + KEY_LOCAL_UP])
        self.assertEqual(rec["path"], "/v1/chat/completions")
        # A tollgate key gets the target's key, never the first one's.
        r, rec = self.keyed_call(
            tg, self.fp2, [("Authorization", "Bearer " + KEY_TOLLGATE)])
        self.assertEqual(r.header("x-tollgate-route"), "to-local")
        self.assertNoSecret(rec, [KEY_CLIENT, KEY_OPENAI_UP, KEY_TOLLGATE],
                            "tollgate key, switched")
        self.assertEqual(tglib.rec_header(rec, "authorization"),
                         ["Bearer " + KEY_LOCAL_UP])
        # Not switched: the client's key goes to the first upstream.
        r, rec = self.keyed_call(tg, self.fp, [RESEARCHER,
                                               ("Authorization",
                                                "Bearer " + KEY_CLIENT)])
        self.assertEqual(tglib.rec_header(rec, "authorization"),
                         ["Bearer " + KEY_CLIENT])
        self.assertEqual(tg.stop(), 0)
        for k in allkeys:
            self.assertNotIn(k, tg.log())

    def test_switched_upstream_reserves_at_its_own_tier(self):
        # openai's account runs at flex (gpt-4o has no flex rates: base),
        # local's at priority: a call routed to local that named no tier
        # runs at priority and must be reserved so, as one sent there.
        ex = ledgerlib.metering_extra()
        ex["routing"] = [TO_LOCAL]
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port, openai={"service_tier_default": "flex"},
            local={"service_tier_default": "priority"}), extra=ex)
        self.ledger = ledgerlib.Ledger(os.path.join(self.tmp,
                                                    "data/ledger.db"), tg)

        def reserved(path, hdrs, tier=None):
            m = new_marker()
            extra = {"max_tokens": 1000}
            if tier is not None:
                extra["service_tier"] = tier
            r = self.call(tg.port, "POST", path,
                          tglib.openai_chat(m, False, "gpt-4o", extra),
                          [JSON_CT] + hdrs)
            self.assertEqual(r.status, 200, r)
            row = self.row(r)
            self.assertEqual(row["upstream"], "local", describe_row(row))
            return row["reserved_nusd"]

        routed = reserved("/v1/chat/completions", [CLASSIFIER])
        direct = reserved("/local/v1/chat/completions", [RESEARCHER])
        self.assertEqual(routed, direct)
        # The priority worst case, not the base one.
        base = reserved("/local/v1/chat/completions", [RESEARCHER],
                        "default")
        self.assertGreater(routed, base)
        # A tier the request named is kept: "default" stays base, "auto"
        # is the account's, the target's. (Same bodies, same estimate.)
        self.assertEqual(reserved("/v1/chat/completions", [CLASSIFIER],
                                  "default"), base)
        self.assertEqual(reserved("/v1/chat/completions", [CLASSIFIER],
                                  "auto"),
                         reserved("/local/v1/chat/completions",
                                  [RESEARCHER], "auto"))

    def test_allowed_models_checked_against_the_rewrite(self):
        # The policy allows only gpt-4o; the rule sends gpt-4o-mini for
        # one agent class: refused as the call will be sent. (Not
        # decidable at load: the policy matches on team, the rule does not.)
        tg = self.start_tg([SMALL_STEPS], policies=[{
            "name": "only-4o", "match": {"team": "t1"},
            "models": {"allow": ["gpt-4o"]}}])
        since = self.fp.mark()
        m = new_marker()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(m, False, "gpt-4o"),
                      [JSON_CT, CLASSIFIER, ("X-Tollgate-Team", "t1")])
        self.assertEqual(r.status, 400, r)
        self.assertIn("gpt-4o-mini", r.body.decode())
        self.assertEqual(self.fp.mark(), since)
        row = self.settled_row(r.header("x-tollgate-request-id"))
        self.assertEqual(row["status"], "refused")
        self.assertEqual(row["routed_from"], "gpt-4o")

    def check_errors(self, routing, want):
        """tollgate check on a config with these rules: every (text in
        the line, message part) of want is an error at that line."""
        doc = tglib.to_yaml({
            "listen": "127.0.0.1:0",
            "upstreams": ledgerlib.metering_upstreams(1),
            "prices": ledgerlib.PRICES_PATH,
            "policies": [{"name": "only-4o",
                          "match": {"agent_class": "classifier"},
                          "models": {"allow": ["gpt-4o"]}}],
            "routing": routing})
        rc, out, err, path = tglib.run_check(doc, self.tmp)
        self.assertEqual(rc, 1, out + err)
        lines = doc.splitlines()
        found = {}
        for m in re.finditer(re.escape(path) + r":(\d+):\d+: (.*)", err):
            found.setdefault(int(m.group(1)), []).append(m.group(2))
        for text, msg in want:
            at = [i for i, ln in enumerate(lines, 1) if text in ln]
            self.assertEqual(len(at), 1, "%r: %r" % (text, at))
            self.assertTrue(any(msg in e for e in found.get(at[0], [])),
                            "no error with %r at %s:%d in:\n%s" %
                            (msg, path, at[0], err))
        self.assertEqual(sum(len(v) for v in found.values()), len(want),
                         err)

    def test_check_reports_bad_rules_with_file_and_line(self):
        # Against the rest of the file: the policy, the prices, the
        # upstreams.
        self.check_errors([
            {"name": "nope", "match": {"agent_class": "classifier",
                                       "provider": "openai"},
             "model": "gpt-4o-mini"},
            {"name": "unpriced", "match": {"provider": "openai"},
             "model": "gpt-nonesuch"},
            {"name": "every-api", "model": "gpt-4.1-nano"},
            {"name": "typo", "match": {"endpoint": "chat"},
             "max_tokens": 100},
            {"name": "ghost", "upstream": "nowhere"},
            {"name": "cross", "match": {"upstream": "anthropic"},
             "upstream": "local"},
            {"name": "to-azure", "upstream": "azure"},
            {"name": "fine", "match": {"agent_class": "other",
                                       "upstream": "openai"},
             "model": "gpt-4.1-mini"},
        ], [("model: gpt-4o-mini", "policy 'only-4o' (line"),
            ("model: gpt-nonesuch", "'gpt-nonesuch' has no price"),
            ("model: gpt-4.1-nano", "a model name belongs to one API"),
            ("endpoint: chat", "'chat' matches no endpoint"),
            ("upstream: nowhere", "no upstream named 'nowhere'"),
            ("upstream: local", "does not speak the same API"),
            ("upstream: azure", "is an azure_openai upstream")])
        # Within the rules.
        self.check_errors([
            {"name": "twice", "match": {"provider": "openai"},
             "model": "gpt-4o"},
            {"max_tokens": 10, "name": "twice"},
            {"name": "pct", "when_budget_below_percent": 150,
             "match": {"provider": "openai"}, "model": "gpt-4o"},
            {"name": "idle", "match": {"team": "a"}},
            {"name": "odd", "match": {"colour": "red"}, "max_tokens": 1},
            {"name": "bad model", "model": "gpt 4o"},
        ], [("max_tokens: 10", "duplicate rule name"),
            ("when_budget_below_percent", "between 1 and 100"),
            ("name: idle", "does nothing"),
            ("colour", "unknown attribute 'colour'"),
            ("name: bad model", "routing[5].name: expected"),
            ("model: gpt 4o", "expected a model name")])

    def test_ledger_before_routing_gains_the_columns(self):
        tg = self.start_tg([])
        r, _, _ = self.chat(tg, "gpt-4o", [CLASSIFIER])
        old = self.row(r)["id"]
        self.assertEqual(tg.stop(), 0)
        # The schema as tollgate wrote it before routing.
        db = sqlite3.connect(os.path.join(self.tmp, "data/ledger.db"))
        db.execute("DROP INDEX calls_routed")
        for col in ("routed_from", "routed_rule", "saved_nusd", "attempts",
                    "attempt_log", "cache_hit"):
            db.execute("ALTER TABLE calls DROP COLUMN %s" % col)
        db.commit()
        db.close()
        tg = self.start_tg([SMALL_STEPS], name="tollgate2", policies=[{
            "name": "t9-mini", "match": {"team": "t9"},
            "models": {"allow": ["gpt-4o-mini"]}}])
        r, _, _ = self.chat(tg, "gpt-4o", [CLASSIFIER])
        row = self.row(r)
        self.assertEqual(row["routed_from"], "gpt-4o")
        before = self.ledger.row(old)
        self.assertIsNone(before["routed_from"])
        self.assertIsNone(before["routed_rule"])
        self.assertEqual(before["saved_nusd"], 0)
        # Not recorded before: attempts NULL; never cached.
        self.assertIsNone(before["attempts"])
        self.assertIsNone(before["attempt_log"])
        self.assertEqual(before["cache_hit"], 0)
        self.assertEqual(row["attempts"], 1)
        self.assertIsNone(row["attempt_log"])
        self.assertEqual(row["cache_hit"], 0)
        cols = [c["name"] for c in self.ledger.query(
            "SELECT * FROM pragma_table_info('calls')")]
        self.assertEqual(cols[-6:], ["routed_from", "routed_rule",
                                     "saved_nusd", "attempts",
                                     "attempt_log", "cache_hit"])
        # A refused call made no attempt; /v1/calls shows the columns.
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker(), False, "gpt-4o"),
                      [JSON_CT, ("X-Tollgate-Team", "t9")])
        self.assertEqual(r.status, 400, r)
        refused = self.settled_row(r)
        self.assertEqual(refused["status"], "refused")
        self.assertEqual(refused["attempts"], 0)
        st, doc = tg.admin_get("/v1/calls?agent_class=classifier")
        self.assertEqual(st, 200, doc)
        shown = {c["id"]: c for c in doc["calls"]}
        self.assertEqual(shown[row["id"]]["attempts"], 1, doc)
        self.assertEqual(shown[row["id"]]["cache_hit"], 0, doc)
        self.assertIsNone(shown[old]["attempts"], doc)


LOW_BUDGET = {"name": "low-budget", "when_budget_below_percent": 50,
              "match": {"provider": "openai"}, "model": "gpt-4o-mini"}
BIG = ("x-fake-input-tokens", "1000000")  # $2.50 of gpt-4o input


class FleetRoutingTest(ledgerlib.MeterTestCase):
    """when_budget_below_percent on instances that share their caps: the
    rule reads the fleet's spend, not this instance's alone."""

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.redis = redislib.RedisServer(self.tmp, procs=self._procs)

    def tearDown(self):
        try:
            self.redis.stop()
        except Exception:  # noqa: BLE001 - teardown goes on
            pass
        super().tearDown()

    def start_tg(self, name):
        ex = ledgerlib.metering_extra(ledger={"path": "data/%s.db" % name})
        ex["routing"] = [LOW_BUDGET]
        ex["policies"] = [
            {"name": "team-day", "match": {"team": "t1"}, "window": "day",
             "hard_cap_usd": 10},
            {"name": "team-hour", "match": {"team": "t2"}, "window": "1h",
             "hard_cap_usd": 4}]
        # wait: a loaded machine can take more than 1 s to answer.
        ex["fleet"] = {"redis": self.redis.url, "instance": name,
                       "lease_usd": "20.00", "lease_ttl": "30s",
                       "wait": "5s", "connect_timeout": "300ms",
                       "command_timeout": "300ms"}
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=ex, name=name)
        tg.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/%s.db" % name), tg)
        self.assertTrue(tg.wait_log(r"fleet: command connection to .* ready",
                                    timeout=10), tg.log())
        return tg

    def chat(self, tg, team, hdrs=()):
        """A gpt-4o call of team on tg: (response, model sent, row)."""
        m = new_marker()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(m, False, "gpt-4o",
                                        {"max_tokens": 10}),
                      [JSON_CT, ("X-Tollgate-Team", team)] + list(hdrs),
                      timeout=30)
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(m)
        self.ledger = tg.ledger
        return r, json.loads(rec["body"])["model"], self.settled_row(r)

    def fleet_of(self, tg, policy):
        st, doc = tg.admin_get("/v1/budgets")
        self.assertEqual(st, 200, doc)
        b = [x for x in doc["budgets"] if x["policy"] == policy]
        self.assertEqual(len(b), 1, doc)
        self.assertIn("fleet", b[0], b[0])
        return b[0]["fleet"]

    def reported(self, tg, policy, spent):
        """Wait until tg has told Redis what it spent on policy."""
        tglib.wait_until(lambda: self.fleet_of(tg, policy)
                         ["unreported_nusd"] == 0 and
                         self.fleet_of(tg, policy)["spent_nusd"] >= spent,
                         15, what="%s reported to the fleet" % tg.name)

    def test_budget_low_on_the_fleet_routes_on_every_instance(self):
        a = self.start_tg("tg-a")
        b = self.start_tg("tg-b")
        # b knows the budget (a call, the fleet's spend 0): as asked.
        r, model, _ = self.chat(b, "t1")
        self.assertEqual(model, "gpt-4o")
        self.assertIsNone(r.header("x-tollgate-route"))
        # b goes idle: its lease back, its figure older than any call's.
        tglib.wait_until(lambda: self.fleet_of(b, "team-day")
                         ["lease_nusd"] == 0, 20, what="b idle")
        time.sleep(2.5)
        # a spends more than half the $10 cap.
        spent = 0
        for _ in range(2):
            r, model, row = self.chat(a, "t1", [BIG])
            self.assertEqual(model, "gpt-4o")
            spent += row["cost_nusd"]
        self.assertGreater(spent, 5 * 10 ** 9)
        self.reported(a, "team-day", spent)
        # On b, whose own spend is a few cents: the rule applies.
        r, model, row = self.chat(b, "t1")
        self.assertEqual(model, "gpt-4o-mini", b.log())
        self.assertEqual(r.header("x-tollgate-route"), "low-budget")
        self.assertEqual(row["routed_rule"], "low-budget")
        self.assertGreaterEqual(self.fleet_of(b, "team-day")["spent_nusd"],
                                spent)

    def test_first_call_and_rolling_window_read_the_fleet(self):
        a = self.start_tg("tg-a")
        spent = {"t1": 0, "t2": 0}
        for team in ("t1", "t1", "t2"):
            r, model, row = self.chat(a, team, [BIG])
            self.assertEqual(model, "gpt-4o")
            spent[team] += row["cost_nusd"]
        self.reported(a, "team-day", spent["t1"])
        self.reported(a, "team-hour", spent["t2"])
        # b has never seen either budget (no figure at all), and its
        # rolling count is its own: the fleet's spend routes its first
        # call of each.
        b = self.start_tg("tg-b")
        for team in ("t1", "t2"):
            r, model, _ = self.chat(b, team)
            self.assertEqual(model, "gpt-4o-mini", team)
            self.assertEqual(r.header("x-tollgate-route"), "low-budget")


if __name__ == "__main__":
    tglib.main()
