# SPDX-License-Identifier: Apache-2.0
"""Request bodies that tollgate and a provider could read differently,
through the real binary: a key given twice or in another spelling (the
duplicate-model kill and cap bypass), an escaped name, bounds that are not
plain whole numbers, a NUL or invalid UTF-8 in the model, a body that is
not a JSON object, a compressed body. Each is answered 400 bad_body in the
provider's own error shape, naming the key, with and without policies,
before anything reaches the provider, and recorded as a refused row that
names no model read from the body. Bodies that every reader reads alike
(nulls, bounds of 0, both chat bounds) are forwarded and reserved on the
safe side."""

import gzip
import json

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
from ledgerlib import ANTHROPIC_VERSION  # noqa: E402
from ledgerlib import marker as new_marker  # noqa: E402

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"

POLICIES = [
    {"name": "no-o3", "match": {"model": "o3*"}, "killed": True,
     "kill_reason": "o3 is off"},
    {"name": "gpt5-cap", "match": {"model": "gpt-5*"}, "window": "day",
     "hard_cap_usd": "0.000001"},
]

# (what, path, body with %s for the marker, words the message must have).
# Every body is one a provider reads otherwise than tollgate would.
REFUSED = [
    ("model twice", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","messages":[],"model":"o3"}',
     '"model" twice'),
    ("model twice, the second a gpt-5", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","max_tokens":5,"messages":[],'
     b'"model":"gpt-5"}', '"model" twice'),
    ("max_tokens twice", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","max_tokens":10,"messages":[],'
     b'"max_tokens":100000}', '"max_tokens" twice'),
    ("stream twice", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","stream":false,"messages":[],'
     b'"stream":true}', '"stream" twice'),
    ("include_usage twice", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","stream":true,"stream_options":'
     b'{"include_usage":false,"include_usage":true},"messages":[]}',
     '"stream_options.include_usage" twice'),
    ("model in capitals", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","messages":[],"MODEL":"o3"}',
     '"model" and "MODEL"'),
    ("model with an escaped name", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","messages":[],'
     b'"mod\\u0065l":"o3"}', '"mod\\u0065l" with an escape'),
    ("max_tokens 1e999", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","max_tokens":1e999,'
     b'"messages":[]}', '"max_tokens" must be a whole number'),
    ("max_tokens 1.5", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","max_tokens":1.5,"messages":[]}',
     '(it is 1.5)'),
    ("max_tokens -1", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","max_tokens":-1,"messages":[]}',
     '(it is -1)'),
    ("max_tokens as a string", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","max_tokens":"10","messages":[]}',
     '(it is "10")'),
    ("raw NUL in the model", CHAT,
     b'{"model":"gpt-4o\x00-mini","user":"%s","messages":[]}',
     '"model" has a control character'),
    ("escaped NUL in the model", CHAT,
     b'{"model":"gpt-4o\\u0000-mini","user":"%s","messages":[]}',
     '"model" has a control character'),
    ("model not UTF-8", CHAT,
     b'{"model":"gpt-4o\xff\xfe","user":"%s","messages":[]}',
     '"model" is not valid UTF-8'),
    ("not JSON", CHAT,
     b'{"model":"gpt-4o-mini","user":"%s","messages":[]',
     "is not valid JSON"),
    ("an array", CHAT, b'[{"model":"gpt-4o-mini","user":"%s"}]',
     "is not a JSON object"),
    ("anthropic max_tokens twice", MESSAGES,
     b'{"model":"claude-3-5-haiku-latest","max_tokens":10,'
     b'"metadata":{"user_id":"%s"},"messages":[],"max_tokens":100000}',
     '"max_tokens" twice'),
    ("anthropic stream as a string", MESSAGES,
     b'{"model":"claude-3-5-haiku-latest","max_tokens":10,"stream":"true",'
     b'"metadata":{"user_id":"%s"},"messages":[]}',
     '"stream" must be true or false'),
    ("gemini snake_case config", GEMINI,
     b'{"contents":[{"parts":[{"text":"%s"}]}],"generation_config":'
     b'{"max_output_tokens":100000}}', '"generation_config"'),
    ("gemini candidateCount twice", GEMINI,
     b'{"contents":[{"parts":[{"text":"%s"}]}],"generationConfig":'
     b'{"candidateCount":1,"candidateCount":8}}',
     '"generationConfig.candidateCount" twice'),
    ("gemini maxOutputTokens a fraction", GEMINI,
     b'{"contents":[{"parts":[{"text":"%s"}]}],"generationConfig":'
     b'{"maxOutputTokens":8.5}}', '"generationConfig.maxOutputTokens'),
]


class BodiesTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def start_tg(self, policies):
        extra = ledgerlib.metering_extra()
        if policies:
            extra["policies"] = policies
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=extra)
        self.ledger = ledgerlib.Ledger(self.tmp + "/data/ledger.db", tg)
        return tg

    def post(self, tg, path, body, hdrs=()):
        return self.call(tg.port, "POST", path, body,
                         [JSON_CT, ANTHROPIC_VERSION] + list(hdrs))

    def family(self, path):
        return {CHAT: "openai", MESSAGES: "anthropic",
                GEMINI: "gemini"}[path]

    def check_refused(self, tg, path, body, words, what):
        """400 bad_body in the family's shape naming words; a refused row
        with no model from the body."""
        r = self.post(tg, path, body)
        doc = self.assertErrorShape(r, self.family(path), 400)
        msg = doc["error"]["message"]
        self.assertIn(words, msg, "%s: %s" % (what, msg))
        if path == CHAT:
            self.assertEqual(doc["error"]["code"], "bad_body", doc)
        row = self.settled_row(r)
        self.assertEqual((row["status"], row["http_status"],
                          row["refusal_reason"], row["reserved_nusd"]),
                         ("refused", 400, "bad_body", 0), what)
        self.assertEqual(row["model"], "gemini-2.5-flash"
                         if path == GEMINI else None, what)

    def run_refusals(self, policies):
        tg = self.start_tg(policies)
        since = self.fp.mark()
        for what, path, body, words in REFUSED:
            with self.subTest(what):
                self.check_refused(tg, path, body % new_marker().encode(),
                                   words, what)
        # The same bodies compressed: tollgate would check the gzip bytes
        # while the provider reads what they inflate to.
        plain = b'{"model":"o3","user":"%s","messages":[]}' % \
            new_marker().encode()
        r = self.call(tg.port, "POST", CHAT, gzip.compress(plain),
                      [JSON_CT, ("Content-Encoding", "gzip")])
        self.assertErrorShape(r, "openai", 400)
        self.assertIn("Content-Encoding", r.body.decode())
        self.assertNothingForwardedSince(self.fp, tg, since)
        self.assertEqual(self.ledger.count(
            "status = 'refused' AND refusal_reason = 'bad_body'"),
            len(REFUSED) + 1)
        self.assertIn("bad body: the request body gives \\x22model\\x22 "
                      "twice", tg.log())
        return tg

    def test_refused_without_policies(self):
        self.run_refusals(None)

    def test_refused_with_policies(self):
        tg = self.run_refusals(POLICIES)
        # The policies hold for the plain bodies: the refusals above are
        # the body check's, not theirs.
        m = new_marker()
        r = self.post(tg, CHAT, b'{"model":"o3","user":"%s","messages":[]}'
                      % m.encode())
        self.assertEqual(r.status, 403, r)
        r = self.post(tg, CHAT, b'{"model":"gpt-5","user":"%s","max_tokens":'
                      b'5,"messages":[]}' % m.encode())
        self.assertEqual(r.status, 429, r)
        self.assertEqual(self.fp.find_requests(m), [])

    def test_count_tokens_duplicate_model(self):
        """A free endpoint is not metered, but its row names the model:
        a body that names two is refused there too."""
        tg = self.start_tg(None)
        m = new_marker()
        r = self.post(tg, "/v1/messages/count_tokens",
                      b'{"model":"claude-3-5-haiku-latest","metadata":'
                      b'{"user_id":"%s"},"messages":[],"model":"x"}'
                      % m.encode())
        self.assertErrorShape(r, "anthropic", 400)
        self.assertEqual(self.fp.find_requests(m), [])

    def test_bodies_every_reader_reads_alike(self):
        """null is absent, Content-Encoding: identity is no encoding, and
        escapes, lone surrogates and repeats below the levels tollgate
        reads are the provider's business: all forwarded as sent, and
        metered under the model they name."""
        tg = self.start_tg(POLICIES)
        bodies = [
            (CHAT, b'{"model":"gpt-4o-mini","user":"%s","max_tokens":null,'
             b'"n":null,"stream":null,"stream_options":null,'
             b'"messages":[{"role":"user","content":"a\\u0000b",'
             b'"r\\u006fle":"user"}],"metadata":{"k":"1","k":"2"}}'),
            (MESSAGES, b'{"model":"claude-3-5-haiku-latest",'
             b'"max_tokens":64,"metadata":{"user_id":"%s"},'
             b'"messages":[{"role":"user","content":"hi"}]}'),
            # JavaScript's JSON.stringify of a string cut inside an emoji:
            # a lone surrogate, which the providers' parsers read.
            (CHAT, b'{"model":"gpt-4o-mini","user":"%s","max_tokens":16,'
             b'"messages":[{"role":"user","content":"cut \\ud83d"}]}'),
            (GEMINI, b'{"contents":[{"parts":[{"text":"%s"}]}],'
             b'"generationConfig":{"maxOutputTokens":64,'
             b'"candidateCount":null}}'),
        ]
        for path, body in bodies:
            m = new_marker()
            sent = body % m.encode()
            r = self.post(tg, path, sent, [("Content-Encoding", "identity")])
            self.assertEqual(r.status, 200, (path, r))
            rec = self.fp.wait_request(m)
            self.assertEqual(rec["body"].encode(), sent, path)
            row = self.settled_row(r)
            self.assertEqual(row["status"], "ok", (path, row))
            self.assertIsNotNone(row["model"], (path, row))
            self.assertGreater(row["cost_nusd"], 0, (path, row))

    def test_zero_and_both_bounds_reserve_the_larger(self):
        """A bound of 0 is no bound a reservation can trust (Ollama reads
        it as "no limit"), and a chat body with both bounds is reserved at
        the larger one (Ollama reads only max_tokens). Bodies of equal
        length, so only the bound differs."""
        tg = self.start_tg(None)

        def reserved(fields):
            m = new_marker()
            body = b'{"model":"gpt-4o-mini","user":"%s",%s,"messages":[]}' \
                % (m.encode(), fields)
            r = self.post(tg, CHAT, body)
            self.assertEqual(r.status, 200, (fields, r))
            return self.settled_row(r)["reserved_nusd"]

        ceiling = reserved(b'"max_tokenx":0')
        self.assertEqual(reserved(b'"max_tokens":0'), ceiling)
        self.assertLess(reserved(b'"max_tokens":1'), ceiling)
        small_first = reserved(b'"max_completion_tokens":10,'
                               b'"max_tokens":16000')
        large_first = reserved(b'"max_completion_tokens":16000,'
                               b'"max_tokens":10')
        self.assertEqual(small_first, large_first)
        self.assertGreater(small_first, reserved(
            b'"max_completion_tokens":10,"max_tokens":10000'))


if __name__ == "__main__":
    tglib.main()
