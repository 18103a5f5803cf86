# SPDX-License-Identifier: Apache-2.0
"""Metering end to end: for every provider family the ledger row's tokens
by class and its cost equal what fakeprov sent, normalised and priced here
in Python from the bytes the client received (docs/internals/wire.md, the
cost formula of config/prices.yaml); include_usage injected upstream but
invisible to the client; streams cut mid-way; attribution tags and key
fingerprints; request ids; unknown and re-reported models; provider and
upstream failures; free endpoints."""

import datetime
import json
import os
import re
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, rec_header  # noqa: E402
from ledgerlib import AGENT, ANTHROPIC_VERSION, describe_row  # noqa: E402
from ledgerlib import marker as new_marker  # noqa: E402

# Usage knobs: numbers unlike the body length, so a tollgate that only
# estimated (bytes / 4) could not pass.
P, C, W, R, N, T = 1234, 300, 200, 57, 4, 11
KNOBS = [("x-fake-input-tokens", str(P)), ("x-fake-cached-tokens", str(C)),
         ("x-fake-cache-write-tokens", str(W)),
         ("x-fake-reasoning-tokens", str(R)), ("x-fake-events", str(N)),
         ("x-fake-event-tokens", str(T))]

KEY_OPENAI = "sk-CANARY-meter-openai-41d9"
KEY_ANTHROPIC = "sk-ant-CANARY-meter-77ab"
KEY_GEMINI = "AIzaCANARYmeterGemini0c1"
KEY_AZURE = "CANARY-meter-azure-6f02"
KEY_QUERY = "CANARYmeterQueryKey93"
KEY_BOUND = "sk-CANARY-meter-bound-5ea1"
KEY_TOLLGATE = "tg-CANARY-meter-agent-key-2b7c"
KEY_UPSTREAM_OPENAI = "sk-CANARY-meter-upstream-openai-9d3e"
KEY_UPSTREAM_ANTHROPIC = "sk-ant-CANARY-meter-upstream-c4f1"
ENV_OPENAI = "TG_METER_TEST_OPENAI_KEY"
ENV_ANTHROPIC = "TG_METER_TEST_ANTHROPIC_KEY"


def bearer(k):
    return ("Authorization", "Bearer " + k)


def chat_body(model, stream=False, usage=True, so=None):
    def body(m):
        b = {"model": model, "user": m,
             "messages": [{"role": "user", "content": "hello " + m}]}
        if stream:
            b["stream"] = True
            if usage:
                b["stream_options"] = {"include_usage": True}
            elif so is not None:
                b["stream_options"] = so
        return json.dumps(b).encode()
    return body


def completions_body(model, stream=False, usage=True, so=None):
    def body(m):
        b = {"model": model, "prompt": "hi " + m, "max_tokens": 64}
        if stream:
            b["stream"] = True
            if usage:
                b["stream_options"] = {"include_usage": True}
            elif so is not None:
                b["stream_options"] = so
        return json.dumps(b).encode()
    return body


def responses_body(model, stream=False):
    def body(m):
        b = {"model": model, "input": "hi " + m, "max_output_tokens": 256}
        if stream:
            b["stream"] = True
        return json.dumps(b).encode()
    return body


def embeddings_body(model):
    return lambda m: json.dumps({"model": model, "input": "hi " + m}).encode()


def anthropic_body(model, stream=False):
    return lambda m: tglib.anthropic_messages(m, stream=stream, model=model)


GEM = "/v1beta/models/%s:generateContent"
GEM_STREAM = "/v1beta/models/%s:streamGenerateContent?alt=sse"
AZURE = "/openai/deployments/%s/chat/completions?api-version=2024-10-21"


def case(name, path, body, kind, stream, provider, endpoint, upstream, model,
         hdrs=(), usage_body=None, knobs=None):
    return dict(name=name, path=path, body=body, kind=kind, stream=stream,
                provider=provider, endpoint=endpoint, upstream=upstream,
                model=model, hdrs=list(hdrs), usage_body=usage_body,
                knobs=knobs)


OA = [bearer(KEY_OPENAI)]
AN = [("x-api-key", KEY_ANTHROPIC), ANTHROPIC_VERSION]
GE = [("x-goog-api-key", KEY_GEMINI)]

FAMILIES = [
    case("chat", "/v1/chat/completions", chat_body("gpt-4o-mini"), "chat",
         False, "openai", "chat.completions", "openai", "gpt-4o-mini", OA),
    case("chat stream include_usage", "/v1/chat/completions",
         chat_body("gpt-4.1", stream=True), "chat", True, "openai",
         "chat.completions", "openai", "gpt-4.1", OA),
    case("chat stream without include_usage", "/v1/chat/completions",
         chat_body("o4-mini", stream=True, usage=False), "chat", True,
         "openai", "chat.completions", "openai", "o4-mini", OA,
         usage_body=chat_body("o4-mini", stream=True)),
    case("legacy completions", "/v1/completions",
         completions_body("gpt-4.1-nano"), "chat", False, "openai",
         "completions", "openai", "gpt-4.1-nano", OA),
    case("legacy completions stream", "/v1/completions",
         completions_body("gpt-4.1-nano", stream=True), "chat", True,
         "openai", "completions", "openai", "gpt-4.1-nano", OA),
    case("responses (dated snapshot)", "/v1/responses",
         responses_body("gpt-5-2025-08-07"), "responses", False, "openai",
         "responses", "openai", "gpt-5-2025-08-07", OA),
    case("responses stream", "/v1/responses",
         responses_body("gpt-5-mini", stream=True), "responses", True,
         "openai", "responses", "openai", "gpt-5-mini", OA),
    case("embeddings", "/v1/embeddings",
         embeddings_body("text-embedding-3-large"), "embeddings", False,
         "openai", "embeddings", "openai", "text-embedding-3-large", OA),
    case("anthropic (dated snapshot)", "/v1/messages",
         anthropic_body("claude-sonnet-4-5-20250929"), "anthropic", False,
         "anthropic", "messages", "anthropic", "claude-sonnet-4-5-20250929",
         AN),
    case("anthropic stream (alias)", "/v1/messages",
         anthropic_body("claude-3-5-haiku-latest", stream=True), "anthropic",
         True, "anthropic", "messages", "anthropic",
         "claude-3-5-haiku-latest", AN),
    case("gemini", GEM % "gemini-2.5-flash", tglib.gemini_generate,
         "gemini", False, "gemini", "generateContent", "gemini",
         "gemini-2.5-flash", GE),
    case("gemini stream", GEM_STREAM % "gemini-2.5-pro",
         tglib.gemini_generate, "gemini", True, "gemini",
         "streamGenerateContent", "gemini", "gemini-2.5-pro", GE),
    case("azure deployment", AZURE % "my-gpt4o",
         chat_body("ignored-by-azure"), "chat", False, "azure_openai",
         "chat.completions", "azure", "gpt-4o", [("api-key", KEY_AZURE)]),
    case("azure deployment stream", AZURE % "my-gpt4o",
         chat_body("ignored-by-azure", stream=True), "chat", True,
         "azure_openai", "chat.completions", "azure", "gpt-4o",
         [("api-key", KEY_AZURE)]),
    case("named openai_compatible upstream", "/local/v1/chat/completions",
         chat_body("gpt-4.1-mini"), "chat", False, "openai_compatible",
         "chat.completions", "local", "gpt-4.1-mini", OA),
    case("named openai_compatible upstream stream",
         "/local/v1/chat/completions", chat_body("gpt-4.1-mini", stream=True),
         "chat", True, "openai_compatible", "chat.completions", "local",
         "gpt-4.1-mini", OA),
    # A snapshot priced apart from its base model.
    case("own-priced snapshot", "/v1/chat/completions",
         chat_body("gpt-4o-2024-05-13"), "chat", False, "openai",
         "chat.completions", "openai", "gpt-4o-2024-05-13", OA),
    # Above 272k input tokens the whole call is at the long-context rates.
    case("long context", "/v1/chat/completions", chat_body("gpt-5.4"),
         "chat", False, "openai", "chat.completions", "openai", "gpt-5.4", OA,
         knobs=[("x-fake-input-tokens", "300001")]),
    case("long context anthropic stream", "/v1/messages",
         anthropic_body("claude-sonnet-4-5", stream=True), "anthropic", True,
         "anthropic", "messages", "anthropic", "claude-sonnet-4-5", AN,
         knobs=[("x-fake-input-tokens", "250000"),
                ("x-fake-cached-tokens", "100000"),
                ("x-fake-cache-write-tokens", "50000")]),
]

HEX32 = re.compile(r"^[0-9a-f]{32}$")
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def presented_key(hdrs):
    for k, v in hdrs:
        if k == "Authorization":
            return v[len("Bearer "):]
        if k in ("x-api-key", "x-goog-api-key", "api-key"):
            return v
    return None


def knobs_with(over):
    d = dict(KNOBS)
    for k, v in over or ():
        d[k] = v
    return list(d.items())


class MeteringTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def tearDown(self):
        for tg in [p for p in self._procs if isinstance(p, tglib.Tollgate)]:
            log = tg.log()
            self.assertNotIn("CANARY", log, "a key reached tollgate's log")

    # -- helpers ------------------------------------------------------------

    def send(self, tg, c, marker, extra_hdrs=()):
        body = c["body"](marker)
        hdrs = [JSON_CT, AGENT] + knobs_with(c.get("knobs")) + \
            list(c["hdrs"]) + list(extra_hdrs)
        return self.call(tg.port, "POST", c["path"], body, hdrs, timeout=30)

    def direct_usage(self, c, marker):
        """Usage of a direct call to fakeprov with include_usage, for a
        stream whose client never sees any."""
        hdrs = [JSON_CT] + knobs_with(c.get("knobs"))
        d = self.call(self.fp.port, "POST", c["path"],
                      c["usage_body"](marker + "-direct"), hdrs, timeout=30)
        self.assertEqual(d.status, 200, d)
        return ledgerlib.usage_of(c["kind"], d.body, c["stream"])

    def check_row(self, tg, c, r, u, msg):
        row = self.settled_row(r)
        ctx = "%s\n row: %s" % (msg, describe_row(row))
        self.assertEqual(row["status"], "ok", ctx)
        self.assertEqual(row["http_status"], 200, ctx)
        self.assertEqual(row["usage_source"], "reported", ctx)
        for col in ("provider", "endpoint", "upstream", "model"):
            self.assertEqual(row[col], c[col], "%s: column %s\n%s" %
                             (msg, col, ctx))
        self.assertEqual(row["stream"], 1 if c["stream"] else 0, ctx)
        self.assertRowTokens(row, u, msg)
        want = self.prices.expected_cost(c["model"], u)
        self.assertIsNotNone(want, "test bug: %s is unpriced" % c["model"])
        self.assertEqual(row["cost_nusd"], want, "%s: cost_nusd (usage %s)"
                         "\n%s" % (msg, u, ctx))
        self.assertGreater(want, 0)
        self.assertEqual(row["price_version"], self.prices.version, ctx)
        self.assertGreater(row["reserved_nusd"], 0, ctx)
        self.assertIsNone(row["refusal_reason"], ctx)
        self.assertTrue(RFC3339_MS.match(row["started_at"] or ""), ctx)
        self.assertTrue(RFC3339_MS.match(row["finished_at"] or ""), ctx)
        self.assertGreaterEqual(row["finished_at"], row["started_at"], ctx)
        self.assertIsNotNone(row["latency_ms"], ctx)
        line = ledgerlib.call_line(tg, row["id"])
        self.assertIsNotNone(line, "%s: no per-call log line with id=%s" %
                             (msg, row["id"]))
        self.assertEqual((line["upstream"], line["status"], line["model"],
                          line["input"], line["output"], line["usage"],
                          line["cost_nusd"]),
                         (row["upstream"], 200, row["model"],
                          row["input_tokens"], row["output_tokens"],
                          "reported", row["cost_nusd"]),
                         "%s: log line disagrees with the row: %s" %
                         (msg, line["line"]))
        return row

    # -- 1. every family ------------------------------------------------------

    def test_every_family_metered_exactly(self):
        tg = self.start(self.fp)
        for c in FAMILIES:
            with self.subTest(case=c["name"]):
                marker = new_marker()
                r = self.send(tg, c, marker)
                self.assertEqual(r.status, 200, r)
                self.assertTrue(r.complete, r)
                rid = r.header("x-tollgate-request-id")
                self.assertTrue(rid and HEX32.match(rid),
                                "generated request id is not 32 hex: %r" %
                                rid)
                if c["usage_body"]:
                    self.assertNotIn(b'"usage"', r.body)
                    u = self.direct_usage(c, marker)
                else:
                    u = ledgerlib.usage_of(c["kind"], r.body, c["stream"])
                self.assertIsNotNone(u, "test bug: no usage in %r" %
                                     r.body[-400:])
                # What fakeprov sent, by its documented formulas: a check
                # of this test's own normaliser.
                if c["kind"] != "embeddings" and not c.get("knobs"):
                    self.assertEqual((u["input"], u["output"]),
                                     (P, N * T + R), u)
                row = self.check_row(tg, c, r, u, c["name"])
                # Generated ids lead with the call's start in ms, so the
                # ledger's key grows at one end.
                started = datetime.datetime.strptime(
                    row["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                        tzinfo=datetime.timezone.utc)
                self.assertEqual(int(rid[:12], 16),
                                 int(started.timestamp() * 1000 + 0.5),
                                 "id %s vs started_at %s" %
                                 (rid, row["started_at"]))
                self.assertEqual(row["key_fingerprint"],
                                 ledgerlib.key_fp(presented_key(c["hdrs"])),
                                 describe_row(row))

    def test_family_token_classes(self):
        """The classes that differ between providers land in the right
        columns (a check of the normaliser on fixed numbers)."""
        tg = self.start(self.fp)
        by = {c["name"]: c for c in FAMILIES}
        want = {
            # input, output, cached, cache_write, reasoning
            "chat": (P, N * T + R, C, W, R),
            "responses (dated snapshot)": (P, N * T + R, C, 0, R),
            "anthropic (dated snapshot)": (P, N * T + R, C, W, R),
            "gemini": (P, N * T + R, C, 0, R),
            "embeddings": (P, 0, 0, 0, 0),
        }
        for name, w in want.items():
            with self.subTest(case=name):
                r = self.send(tg, by[name], new_marker())
                self.assertEqual(r.status, 200, r)
                row = self.settled_row(r)
                self.assertEqual(
                    (row["input_tokens"], row["output_tokens"],
                     row["cached_input_tokens"], row["cache_write_tokens"],
                     row["reasoning_tokens"]), w, describe_row(row))

    # -- 2. injected include_usage ------------------------------------------

    def test_injected_include_usage_invisible(self):
        tg = self.start(self.fp)
        cases = []
        for label, so in (("no stream_options", None),
                          ("empty stream_options", {}),
                          ("include_usage false", {"include_usage": False})):
            cases.append(("chat, " + label, "/v1/chat/completions",
                          chat_body("gpt-4o", stream=True, usage=False,
                                    so=so),
                          chat_body("gpt-4o", stream=True)))
            cases.append(("legacy completions, " + label, "/v1/completions",
                          completions_body("gpt-4o-mini", stream=True,
                                           usage=False, so=so),
                          completions_body("gpt-4o-mini", stream=True)))
        for name, path, body, ubody in cases:
            with self.subTest(case=name):
                marker = new_marker()
                b = body(marker)
                hdrs = [JSON_CT, AGENT] + KNOBS
                d = self.call(self.fp.port, "POST", path, b, hdrs)
                p = self.call(tg.port, "POST", path, b, hdrs)
                dseq, pseq = self.direct_and_proxied_seqs(self.fp, marker)
                self.assertEqual(d.status, 200, d)
                self.assertEqual(p.status, 200, p)
                self.assertTrue(p.complete, p)
                self.assertSameBody(p, d, dseq, pseq, name)
                self.assertNotIn(b'"usage"', p.body,
                                 "the client got usage it did not ask for")
                self.assertNotIn(b'"choices":[]', p.body)
                self.assertTrue(p.body.rstrip().endswith(b"data: [DONE]"))
                rec = [q for q in self.fp.find_requests(marker)
                       if q["seq"] == pseq][0]
                up = json.loads(rec["body"])
                self.assertIs((up.get("stream_options") or {}).get(
                    "include_usage"), True,
                    "include_usage was not injected upstream: %r" % up)
                # The usage the client never saw, from a direct call.
                dd = self.call(self.fp.port, "POST", path,
                               ubody(marker + "-u"), hdrs)
                u = ledgerlib.usage_of("chat", dd.body, True)
                self.assertIsNotNone(u)
                row = self.settled_row(p)
                self.assertEqual(row["status"], "ok", describe_row(row))
                self.assertEqual(row["usage_source"], "reported",
                                 describe_row(row))
                self.assertRowTokens(row, u, name)
                self.assertEqual(row["cost_nusd"],
                                 self.prices.expected_cost(
                                     json.loads(b)["model"], u),
                                 describe_row(row))

    # -- 3. streams cut mid-way ---------------------------------------------

    def assertEstimatedCut(self, row, status, ctx):
        d = describe_row(row)
        self.assertEqual(row["status"], status, "%s: %s" % (ctx, d))
        self.assertEqual(row["stream"], 1, d)
        self.assertGreater(row["output_tokens"], 0,
                           "%s: output was produced: %s" % (ctx, d))
        self.assertGreater(row["input_tokens"], 0, d)
        self.assertGreater(row["cost_nusd"], 0,
                           "%s: a cut stream with output cost nothing: %s"
                           % (ctx, d))
        self.assertEqual(row["price_version"], self.prices.version, d)
        # The cost is the price of the row's own tokens.
        u = {"input": row["input_tokens"], "output": row["output_tokens"],
             "cached": row["cached_input_tokens"],
             "cache_write": row["cache_write_tokens"]}
        self.assertEqual(row["cost_nusd"],
                         self.prices.cost_nusd(row["model"], u),
                         "%s: cost is not the price of the row's tokens: %s"
                         % (ctx, d))

    def test_stream_cut_by_upstream(self):
        tg = self.start(self.fp)
        cases = [
            # name, path, body, knobs, status, estimated?
            ("chat reset", "/v1/chat/completions",
             chat_body("gpt-4o", stream=True),
             [("x-fake-events", "6"), ("x-fake-reset-after", "4")],
             "upstream_error", True),
            ("chat close", "/v1/chat/completions",
             chat_body("gpt-4o", stream=True, usage=False),
             [("x-fake-events", "6"), ("x-fake-close-after", "4")],
             "upstream_error", True),
            ("anthropic reset", "/v1/messages",
             anthropic_body("claude-sonnet-4-5", stream=True),
             [("x-fake-events", "6"), ("x-fake-reset-after", "5")],
             "upstream_error", True),
            ("responses close", "/v1/responses",
             responses_body("gpt-4.1", stream=True),
             [("x-fake-events", "6"), ("x-fake-close-after", "7")],
             "upstream_error", True),
            ("gemini close", GEM_STREAM % "gemini-2.5-flash",
             tglib.gemini_generate,
             [("x-fake-events", "6"), ("x-fake-close-after", "3")],
             "upstream_error", False),
        ]
        for name, path, body, knobs, status, estimated in cases:
            with self.subTest(case=name):
                marker = new_marker()
                hdrs = [JSON_CT, AGENT, ANTHROPIC_VERSION,
                        ("x-fake-event-tokens", "5")] + knobs
                r = self.call(tg.port, "POST", path, body(marker), hdrs)
                self.assertEqual(r.status, 200, r)
                self.assertFalse(r.complete, "a cut stream reached the "
                                 "client as complete: %r" % r)
                row = self.settled_row(r)
                if estimated:
                    self.assertEqual(row["usage_source"], "estimated",
                                     "%s: %s" % (name, describe_row(row)))
                else:
                    self.assertIn(row["usage_source"],
                                  ("estimated", "reported"),
                                  describe_row(row))
                self.assertEstimatedCut(row, status, name)

    def test_stream_cut_by_client(self):
        tg = self.start(self.fp)
        cases = [
            ("chat", "/v1/chat/completions", chat_body("gpt-4o", stream=True),
             b'"content":"tok', 3),
            ("anthropic", "/v1/messages",
             anthropic_body("claude-haiku-4-5", stream=True),
             b"event: content_block_delta", 3),
            ("responses", "/v1/responses",
             responses_body("gpt-4.1", stream=True),
             b"response.output_text.delta", 3),
        ]
        for name, path, body, needle, want in cases:
            with self.subTest(case=name):
                marker = new_marker()
                hdrs = [JSON_CT, AGENT, ANTHROPIC_VERSION,
                        ("x-fake-events", "200"), ("x-fake-pace-ms", "20"),
                        ("x-fake-event-tokens", "3")]
                c = self.raw(tg.port, timeout=20)
                c.send(tglib.build_request("POST", path, body(marker), hdrs))
                resp = tglib.Response()
                deadline = time.monotonic() + 20
                self.assertTrue(c.read_head(resp, deadline), resp)
                self.assertEqual(resp.status, 200, resp)
                rid = resp.header("x-tollgate-request-id")
                for _ in c.iter_body(resp, deadline):
                    if resp.body.count(needle) >= want:
                        break
                self.assertGreaterEqual(resp.body.count(needle), want,
                                        resp)
                c.close(rst=True)
                row = self.settled_row(rid, timeout=15)
                self.assertEqual(row["usage_source"], "estimated",
                                 "%s: %s" % (name, describe_row(row)))
                self.assertEstimatedCut(row, "client_closed", name)

    def test_client_hangs_up_after_the_last_event(self):
        """The official SDKs stop reading at the stream's last event
        ([DONE], message_stop, response.completed, Gemini's finishing
        chunk) and hang up, before a provider that trails its end of body
        has ended it: the call is complete, settled ok with the provider's
        usage. A client that hangs up one event earlier stays
        client_closed."""
        tg = self.start(self.fp)
        cases = [
            ("chat", "/v1/chat/completions", chat_body("gpt-4o", stream=True),
             b"data: [DONE]", OA),
            ("chat, usage injected", "/v1/chat/completions",
             chat_body("gpt-4o", stream=True, usage=False), b"data: [DONE]",
             OA),
            ("anthropic", "/v1/messages",
             anthropic_body("claude-haiku-4-5", stream=True),
             b"event: message_stop", AN),
            ("responses", "/v1/responses",
             responses_body("gpt-4.1", stream=True),
             b"event: response.completed", OA),
            ("gemini", GEM_STREAM % "gemini-2.5-pro",
             lambda m: tglib.gemini_generate(m), b'"finishReason"', GE),
        ]
        for name, path, body, last, keys in cases:
            for early in (False, True):
                with self.subTest(case=name, early=early):
                    marker = new_marker()
                    hdrs = [JSON_CT, AGENT, ("x-fake-events", "4"),
                            ("x-fake-end-delay-ms", "400")] + list(keys)
                    if early:
                        hdrs.append(("x-fake-pace-ms", "300"))
                    c = self.raw(tg.port, timeout=20)
                    c.send(tglib.build_request("POST", path, body(marker),
                                               hdrs))
                    resp = tglib.Response()
                    deadline = time.monotonic() + 20
                    self.assertTrue(c.read_head(resp, deadline), resp)
                    self.assertEqual(resp.status, 200, resp)
                    rid = resp.header("x-tollgate-request-id")
                    for _ in c.iter_body(resp, deadline):
                        if early and resp.body.count(b"data:") >= 2:
                            break
                        # The last event, whole (up to its blank line).
                        if last in resp.body and resp.body.endswith(
                                (b"\n\n", b"\r\n\r\n")):
                            break
                    self.assertEqual(last in resp.body, not early, resp)
                    c.close()
                    row = self.settled_row(rid, timeout=15)
                    if early:
                        self.assertEqual(row["status"], "client_closed",
                                         describe_row(row))
                        continue
                    self.assertEqual(row["status"], "ok", describe_row(row))
                    self.assertEqual(row["usage_source"], "reported",
                                     describe_row(row))
                    self.assertGreater(row["cost_nusd"], 0)
                    rec = self.fp.wait_request(marker)
                    self.assertEqual(self.fp.wait_end(rec["seq"]),
                                     "client_closed",
                                     "the provider had not ended its body")

    def test_stream_error_frame(self):
        """A 200 stream that ends in the provider's error frame never got
        its final usage: the row says so (status error, usage estimated,
        the provider's error type in the reason) and is charged the
        estimate: the input reported so far and the output relayed."""
        tg = self.start(self.fp)
        cases = [
            ("chat", "/v1/chat/completions", chat_body("gpt-4o", stream=True),
             5, b'"error"', OA, "server_error"),
            ("chat without include_usage", "/v1/chat/completions",
             chat_body("gpt-4o", stream=True, usage=False), 5, b'"error"',
             OA, "server_error"),
            ("anthropic", "/v1/messages",
             anthropic_body("claude-sonnet-4-5", stream=True), 5,
             b"event: error", AN, "overloaded_error"),
            ("responses", "/v1/responses",
             responses_body("gpt-4.1", stream=True), 7, b"event: error", OA,
             "fake_error"),
            ("gemini", GEM_STREAM % "gemini-2.5-pro",
             lambda m: tglib.gemini_generate(m), 3, b'"UNAVAILABLE"', GE,
             "UNAVAILABLE"),
        ]
        for name, path, body, k, frame, keys, etype in cases:
            with self.subTest(case=name):
                marker = new_marker()
                hdrs = [JSON_CT, AGENT, ("x-fake-events", "8"),
                        ("x-fake-event-tokens", "4"),
                        ("x-fake-error-after", str(k))] + list(keys)
                r = self.call(tg.port, "POST", path, body(marker), hdrs)
                self.assertEqual(r.status, 200, r)
                self.assertIn(frame, r.body,
                              "the error frame did not reach the client")
                row = self.settled_row(r)
                d = describe_row(row)
                self.assertEqual(row["status"], "error", d)
                self.assertEqual(row["usage_source"], "estimated", d)
                self.assertEqual(row["refusal_reason"],
                                 "stream_error:" + etype, d)
                self.assertGreater(row["input_tokens"], 0, d)
                self.assertGreater(row["output_tokens"], 0, d)
                self.assertLess(row["cost_nusd"], row["reserved_nusd"], d)
                self.assertGreater(row["cost_nusd"], 0,
                                   "%s: output was produced but the row "
                                   "costs nothing: %s" % (name, d))
                # The row can be read before the line is written.
                self.assertTrue(tg.wait_log(
                    r"id=%s reason=stream_error note=\"the provider ended "
                    r"the stream with an error: %s\"" % (row["id"], etype)),
                    tg.log())

    # -- 4. attribution -------------------------------------------------------

    def attribution_tollgate(self):
        os.environ[ENV_OPENAI] = KEY_UPSTREAM_OPENAI
        os.environ[ENV_ANTHROPIC] = KEY_UPSTREAM_ANTHROPIC
        ups = ledgerlib.metering_upstreams(
            self.fp.port, openai={"api_key_env": ENV_OPENAI},
            anthropic={"api_key_env": ENV_ANTHROPIC})
        attribution = {
            "defaults": {"team": "unassigned", "environment": "dev"},
            "require": ["agent_class"],
            "headers": ["intent", "team", "tenant", "agent_class"],
            "keys": [
                {"key_sha256": ledgerlib.key_sha256(KEY_BOUND),
                 "tags": {"team": "support", "agent_class": "ticket-agent"}},
                {"tollgate_key_sha256": ledgerlib.key_sha256(KEY_TOLLGATE),
                 "tags": {"team": "research", "agent_class": "researcher"}},
            ]}
        return self.start(self.fp, upstreams=ups, attribution=attribution,
                          verbose=True)

    def tags(self, row):
        return {k: row[k] or None for k in ("intent", "team", "tenant",
                                            "agent_class", "environment")}

    def test_attribution_tags(self):
        tg = self.attribution_tollgate()
        full = [("X-Tollgate-Intent", "summarise-ticket"),
                ("X-Tollgate-Team", "search"), ("X-Tollgate-Tenant", "acme"),
                ("X-Tollgate-Agent-Class", "researcher"),
                ("X-Tollgate-Environment", "prod")]   # not header-settable
        cases = [
            ("headers set tags", [bearer(KEY_OPENAI)] + full,
             {"intent": "summarise-ticket", "team": "search",
              "tenant": "acme", "agent_class": "researcher",
              "environment": "dev"}, KEY_OPENAI),
            ("defaults fill", [bearer(KEY_OPENAI),
                               ("X-Tollgate-Agent-Class", "crawler")],
             {"intent": None, "team": "unassigned", "tenant": None,
              "agent_class": "crawler", "environment": "dev"}, KEY_OPENAI),
            ("bound key beats headers", [bearer(KEY_BOUND)] + full,
             {"intent": "summarise-ticket", "team": "support",
              "tenant": "acme", "agent_class": "ticket-agent",
              "environment": "dev"}, KEY_BOUND),
            ("bound key satisfies require", [bearer(KEY_BOUND)],
             {"intent": None, "team": "support", "tenant": None,
              "agent_class": "ticket-agent", "environment": "dev"},
             KEY_BOUND),
        ]
        for name, hdrs, want, key in cases:
            with self.subTest(case=name):
                marker = new_marker()
                r = self.call(tg.port, "POST", "/v1/chat/completions",
                              tglib.openai_chat(marker), [JSON_CT] + hdrs)
                self.assertEqual(r.status, 200, r)
                row = self.settled_row(r)
                self.assertEqual(self.tags(row), want, describe_row(row))
                self.assertEqual(row["key_fingerprint"],
                                 ledgerlib.key_fp(key))
                rec = self.fp.wait_request(marker)
                self.assertEqual(rec_header(rec, "authorization"),
                                 ["Bearer " + key],
                                 "a provider key must pass untouched")

    def test_required_tag_missing_refused(self):
        tg = self.attribution_tollgate()
        cases = [
            ("openai", "/v1/chat/completions", tglib.openai_chat,
             [bearer(KEY_OPENAI)]),
            ("anthropic", "/v1/messages", tglib.anthropic_messages,
             [("x-api-key", KEY_ANTHROPIC), ANTHROPIC_VERSION]),
            ("gemini", GEM % "gemini-2.5-flash", tglib.gemini_generate,
             [("x-goog-api-key", KEY_GEMINI)]),
        ]
        for family, path, body, hdrs in cases:
            with self.subTest(family=family):
                since = self.fp.mark()
                marker = new_marker()
                r = self.call(tg.port, "POST", path, body(marker),
                              [JSON_CT, ("X-Tollgate-Team", "search")] +
                              hdrs)
                self.assertErrorShape(r, family, 400)
                self.assertIn(b"agent_class", r.body,
                              "the 400 does not name the missing tag")
                row = self.settled_row(r)
                d = describe_row(row)
                self.assertEqual(row["status"], "refused", d)
                self.assertEqual(row["refusal_reason"], "missing_tag", d)
                self.assertEqual(row["http_status"], 400, d)
                self.assertEqual(row["cost_nusd"], 0, d)
                line = ledgerlib.call_line(tg, row["id"])
                self.assertIsNotNone(line, "no log line for the refusal")
                self.assertEqual(line["status"], 400, line["line"])
                self.assertIn(line["reason"], ("missing_tag", "refused"),
                              line["line"])
                self.assertNothingForwardedSince(
                    self.fp, tg, since, [AGENT, bearer(KEY_OPENAI)])

    def test_key_fingerprints_never_the_key(self):
        tg = self.attribution_tollgate()
        cases = [
            ("bearer", "/v1/chat/completions", tglib.openai_chat,
             [bearer(KEY_OPENAI)], KEY_OPENAI),
            ("x-api-key", "/v1/messages", tglib.anthropic_messages,
             [("x-api-key", KEY_ANTHROPIC), ANTHROPIC_VERSION],
             KEY_ANTHROPIC),
            ("x-goog-api-key", GEM % "gemini-2.5-flash",
             tglib.gemini_generate, [("x-goog-api-key", KEY_GEMINI)],
             KEY_GEMINI),
            ("?key=", GEM % "gemini-2.5-flash" + "?key=" + KEY_QUERY,
             tglib.gemini_generate, [], KEY_QUERY),
            ("api-key", AZURE % "my-gpt4o", tglib.openai_chat,
             [("api-key", KEY_AZURE)], KEY_AZURE),
        ]
        for name, path, body, hdrs, key in cases:
            with self.subTest(header=name):
                r = self.call(tg.port, "POST", path, body(new_marker()),
                              [JSON_CT, AGENT] + hdrs)
                self.assertEqual(r.status, 200, r)
                row = self.settled_row(r)
                self.assertTrue(re.match(r"^[0-9a-f]{16}$",
                                         row["key_fingerprint"] or ""),
                                describe_row(row))
                self.assertEqual(row["key_fingerprint"],
                                 ledgerlib.key_fp(key), describe_row(row))
        # Refused calls carry keys too.
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker()),
                      [JSON_CT, bearer(KEY_OPENAI)])
        self.assertEqual(r.status, 400, r)
        self.settled_row(r)
        dump = self.ledger.dump()
        raw = self.ledger.raw_bytes()
        for key in (KEY_OPENAI, KEY_ANTHROPIC, KEY_GEMINI, KEY_QUERY,
                    KEY_AZURE):
            self.assertNotIn(key, dump, "a key is stored in the ledger")
        self.assertNotIn("CANARY", dump, "a key is stored in the ledger")
        self.assertNotIn(b"CANARY", raw,
                         "a key is in the ledger's files (db, wal, shm)")
        self.assertNotIn("CANARY", tg.log(), "a key reached the log")

    def test_tollgate_key_replaced_by_upstream_key(self):
        tg = self.attribution_tollgate()
        cases = [
            ("openai", "/v1/chat/completions", tglib.openai_chat,
             [bearer(KEY_TOLLGATE)], "authorization",
             "Bearer " + KEY_UPSTREAM_OPENAI),
            ("anthropic", "/v1/messages", tglib.anthropic_messages,
             [("x-api-key", KEY_TOLLGATE), ANTHROPIC_VERSION], "x-api-key",
             KEY_UPSTREAM_ANTHROPIC),
        ]
        for name, path, body, hdrs, hname, want in cases:
            with self.subTest(family=name):
                marker = new_marker()
                r = self.call(tg.port, "POST", path, body(marker),
                              [JSON_CT, ("X-Tollgate-Team", "search"),
                               ("X-Tollgate-Agent-Class", "crawler")] + hdrs)
                self.assertEqual(r.status, 200, r)
                rec = self.fp.wait_request(marker)
                self.assertIsNotNone(rec)
                self.assertEqual(rec_header(rec, hname), [want],
                                 "the upstream's key was not sent")
                self.assertNotIn(KEY_TOLLGATE, json.dumps(rec),
                                 "the tollgate key reached the provider")
                row = self.settled_row(r)
                d = describe_row(row)
                self.assertEqual((row["team"], row["agent_class"]),
                                 ("research", "researcher"), d)
                self.assertEqual(row["key_fingerprint"],
                                 ledgerlib.key_fp(KEY_TOLLGATE), d)
        self.assertNotIn("CANARY", self.ledger.dump())

    # -- 5. request ids -------------------------------------------------------

    def test_request_id(self):
        tg = self.start(self.fp)
        rid = "meter-rid-" + new_marker()
        m1, m2 = new_marker(), new_marker()
        hdrs = [JSON_CT, AGENT, ("X-Tollgate-Request-Id", rid)]
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(m1), hdrs)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-tollgate-request-id"), rid)
        first = self.settled_row(rid)
        self.assertEqual(first["status"], "ok", describe_row(first))
        r2 = self.call(tg.port, "POST", "/v1/chat/completions",
                       tglib.openai_chat(m2), hdrs)
        self.assertErrorShape(r2, "openai", 409)
        self.assertIn(b"duplicate_request_id", r2.body)
        self.assertEqual(r2.header("x-tollgate-request-id"), rid)
        self.assertEqual(r2.header("x-should-retry"), "false")
        time.sleep(0.3)
        self.assertEqual(self.ledger.row(rid), first,
                         "a repeated request id changed the first row")
        self.assertEqual(self.ledger.count("id = ?", (rid,)), 1)
        self.assertEqual(len(self.fp.find_requests(m1)), 1)
        self.assertEqual(self.fp.find_requests(m2), [],
                         "a duplicate request id was forwarded")
        # A repeat while the first call is still streaming.
        rid2 = "meter-rid-" + new_marker()
        m3, m4 = new_marker(), new_marker()
        h2 = [JSON_CT, AGENT, ("X-Tollgate-Request-Id", rid2)]
        c = self.raw(tg.port, timeout=30)
        c.send(tglib.build_request(
            "POST", "/v1/chat/completions",
            tglib.openai_chat(m3, stream=True),
            h2 + [("x-fake-events", "20"), ("x-fake-pace-ms", "50")]))
        self.assertIsNotNone(self.fp.wait_request(m3))
        r4 = self.call(tg.port, "POST", "/v1/chat/completions",
                       tglib.openai_chat(m4), h2)
        self.assertErrorShape(r4, "openai", 409)
        r3 = c.read_response(30)
        self.assertEqual(r3.status, 200, r3)
        self.assertTrue(r3.complete, r3)
        row = self.settled_row(rid2)
        self.assertEqual(row["status"], "ok", describe_row(row))
        self.assertEqual(row["output_tokens"], 20, describe_row(row))
        self.assertEqual(self.fp.find_requests(m4), [])

    # -- 6. unknown and re-reported models ------------------------------------

    def unknown_call(self, tg, model="mystery-model-9000"):
        marker = new_marker()
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(marker, model=model),
                      [JSON_CT, AGENT] + KNOBS)
        return marker, r

    def test_unknown_model_priced_at_its_family_max_by_default(self):
        # "mystery-model-9000" shares no leading token with a priced model:
        # its family is the whole table (test_unknown_models.py has more).
        tg = self.start(self.fp)
        marker, r = self.unknown_call(tg)
        self.assertEqual(r.status, 200, r)
        self.assertIsNotNone(self.fp.wait_request(marker),
                             "an unknown model must be forwarded")
        row = self.settled_row(r)
        d = describe_row(row)
        u = ledgerlib.usage_of("chat", r.body, False)
        self.assertEqual(row["status"], "ok", d)
        self.assertEqual(row["price_version"],
                         self.prices.version + "+fallback:*", d)
        for m in self.prices.models:
            self.assertGreaterEqual(row["cost_nusd"],
                                    self.prices.cost_nusd(m, u), m)
        self.assertGreater(row["cost_nusd"], 0, d)
        self.assertEqual(row["model"], "mystery-model-9000", d)
        self.assertEqual(row["usage_source"], "reported", d)
        self.assertRowTokens(row, u)

    def test_unknown_model_unpriced_when_chosen(self):
        tg = self.start(self.fp, unknown_models={"action": "unpriced"})
        marker, r = self.unknown_call(tg)
        self.assertEqual(r.status, 200, r)
        row = self.settled_row(r)
        d = describe_row(row)
        self.assertEqual(row["status"], "ok", d)
        self.assertEqual(row["price_version"], "unpriced", d)
        self.assertEqual(row["cost_nusd"], 0, d)
        self.assertRowTokens(row, ledgerlib.usage_of("chat", r.body, False))

    def test_unknown_model_refused(self):
        tg = self.start(self.fp, unknown_models={"action": "refuse"})
        for family, path, body in (
                ("openai", "/v1/chat/completions",
                 lambda m: tglib.openai_chat(m, model="mystery-model-9000")),
                ("anthropic", "/v1/messages",
                 lambda m: tglib.anthropic_messages(
                     m, model="claude-mystery-1")),
                ("gemini", GEM % "gemini-mystery", tglib.gemini_generate)):
            with self.subTest(family=family):
                since = self.fp.mark()
                r = self.call(tg.port, "POST", path, body(new_marker()),
                              [JSON_CT, AGENT, ANTHROPIC_VERSION])
                self.assertErrorShape(r, family, 400)
                row = self.settled_row(r)
                d = describe_row(row)
                self.assertEqual(row["status"], "refused", d)
                self.assertEqual(row["refusal_reason"], "unknown_model", d)
                self.assertEqual(row["cost_nusd"], 0, d)
                line = ledgerlib.call_line(tg, row["id"])
                self.assertIsNotNone(line, "no log line for the refusal")
                self.assertEqual(line["status"], 400, line["line"])
                self.assertIn(line["reason"], ("unknown_model", "refused"),
                              line["line"])
                self.assertNothingForwardedSince(self.fp, tg, since, [AGENT])
        # A priced model still goes through.
        marker, r = self.unknown_call(tg, "gpt-4o-mini")
        self.assertEqual(r.status, 200, r)

    def test_unknown_model_price_as(self):
        tg = self.start(self.fp, unknown_models={"action": "price_as",
                                                 "price_as": "gpt-4o"})
        marker, r = self.unknown_call(tg)
        self.assertEqual(r.status, 200, r)
        u = ledgerlib.usage_of("chat", r.body, False)
        row = self.settled_row(r)
        d = describe_row(row)
        self.assertEqual(row["status"], "ok", d)
        self.assertEqual(row["price_version"], self.prices.version, d)
        self.assertEqual(row["cost_nusd"], self.prices.cost_nusd("gpt-4o", u),
                         d)
        self.assertGreater(row["cost_nusd"], 0)

    def test_reported_model_dearer_is_charged(self):
        tg = self.start(self.fp)
        cases = [
            # requested, reported, charged as
            ("gpt-4o-mini", "gpt-4o", "gpt-4o"),
            ("gpt-4o", "gpt-4o-mini", "gpt-4o"),
            ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            ("gpt-4o-mini", "some-unpriced-model", "gpt-4o-mini"),
            ("claude-haiku-4-5", "claude-opus-4-1-20250805",
             "claude-opus-4-1"),
        ]
        for req, rep, charged in cases:
            for stream in (False, True):
                with self.subTest(requested=req, reported=rep, stream=stream):
                    marker = new_marker()
                    if req.startswith("claude"):
                        path, kind = "/v1/messages", "anthropic"
                        body = tglib.anthropic_messages(marker, stream, req)
                    else:
                        path, kind = "/v1/chat/completions", "chat"
                        body = tglib.openai_chat(marker, stream, req)
                    r = self.call(tg.port, "POST", path, body,
                                  [JSON_CT, AGENT, ANTHROPIC_VERSION,
                                   ("x-fake-model", rep)] + KNOBS)
                    self.assertEqual(r.status, 200, r)
                    u = ledgerlib.usage_of(kind, r.body, stream)
                    self.assertEqual(u["model"], rep)
                    row = self.settled_row(r)
                    d = describe_row(row)
                    self.assertEqual(row["model"], req, d)
                    self.assertEqual(row["cost_nusd"],
                                     self.prices.cost_nusd(charged, u),
                                     "requested %s, reported %s: not "
                                     "charged as %s: %s" %
                                     (req, rep, charged, d))

    # -- 7. failures ----------------------------------------------------------

    def test_provider_error_status(self):
        tg = self.start(self.fp)
        cases = [
            ("openai", "/v1/chat/completions", tglib.openai_chat),
            ("openai stream", "/v1/chat/completions",
             lambda m: tglib.openai_chat(m, stream=True)),
            ("anthropic", "/v1/messages", tglib.anthropic_messages),
            ("gemini", GEM % "gemini-2.5-flash", tglib.gemini_generate),
        ]
        for code in (429, 500):
            for name, path, body in cases:
                with self.subTest(family=name, status=code):
                    r = self.call(tg.port, "POST", path,
                                  body(new_marker()),
                                  [JSON_CT, AGENT, ANTHROPIC_VERSION,
                                   ("x-fake-status", str(code))])
                    self.assertEqual(r.status, code, r)
                    row = self.settled_row(r)
                    d = describe_row(row)
                    self.assertEqual(row["status"], "error", d)
                    self.assertEqual(row["http_status"], code, d)
                    self.assertEqual(row["cost_nusd"], 0, d)
                    self.assertEqual(row["usage_source"], "none", d)
                    self.assertEqual(row["output_tokens"], 0, d)

    def test_upstream_connect_failure(self):
        port = tglib.free_port()
        ups = ledgerlib.metering_upstreams(
            self.fp.port, openai={"base_url": "http://127.0.0.1:%d" % port})
        tg = self.start(self.fp, upstreams=ups)
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      tglib.openai_chat(new_marker(), model="gpt-4o"),
                      [JSON_CT, AGENT], timeout=30)
        self.assertGreaterEqual(r.status, 500, r)
        row = self.settled_row(r, timeout=20)
        d = describe_row(row)
        self.assertEqual(row["status"], "upstream_error", d)
        self.assertEqual(row["cost_nusd"], 0, d)
        self.assertEqual((row["provider"], row["upstream"], row["model"]),
                         ("openai", "openai", "gpt-4o"), d)

    # -- free endpoints -------------------------------------------------------

    def test_free_endpoints_cost_nothing(self):
        tg = self.start(self.fp)
        cases = [
            ("GET", "/v1/models", b"", "openai", "models"),
            ("POST", "/v1/messages/count_tokens",
             tglib.anthropic_messages(new_marker(), model="claude-opus-4-1"),
             "anthropic", "messages.count_tokens"),
            ("POST", "/v1beta/models/gemini-2.5-pro:countTokens",
             tglib.gemini_generate(new_marker()), "gemini", "countTokens"),
        ]
        for method, path, body, provider, endpoint in cases:
            with self.subTest(path=path):
                hdrs = [AGENT, ANTHROPIC_VERSION,
                        ("x-fake-input-tokens", "5000")]
                if body:
                    hdrs.append(JSON_CT)
                r = self.call(tg.port, method, path, body, hdrs)
                self.assertEqual(r.status, 200, r)
                row = self.settled_row(r)
                d = describe_row(row)
                self.assertEqual(row["status"], "ok", d)
                self.assertEqual(row["cost_nusd"], 0, d)
                self.assertEqual((row["provider"], row["endpoint"]),
                                 (provider, endpoint), d)


if __name__ == "__main__":
    tglib.main()
