# SPDX-License-Identifier: Apache-2.0
"""Parts of a request outside its body that tollgate and another reader
could read differently, through the real binary. Gemini's ?key= is read as
Google reads it, percent-escapes decoded (?k%65y=, an encoded key value):
a bound key is bound however it is written, a tollgate key never reaches
the provider, and a bound key next to another one is refused. An
X-Tollgate-* header given twice is refused: a proxy in front may have set
one while the client sent another, and tollgate would only be guessing
which one counts."""

import json
import os

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT, rec_header  # noqa: E402
from ledgerlib import describe_row  # noqa: E402
from ledgerlib import marker as new_marker  # noqa: E402

GEM = "/v1beta/models/gemini-2.5-flash:generateContent"
KEY_BOUND = "AIzaCANARYrepeatsBound7d1e"
KEY_OTHER = "AIzaCANARYrepeatsOther0b4a"
KEY_TOLLGATE = "tg-CANARY-repeats-agent-5c2f"
KEY_UPSTREAM = "AIzaCANARYrepeatsUpstream88e3"
ENV_GEMINI = "TG_REPEATS_TEST_GEMINI_KEY"


def encoded(s):
    """Every byte of s as a percent-escape."""
    return "".join("%%%02X" % b for b in s.encode())


class RepeatsTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        os.environ[ENV_GEMINI] = KEY_UPSTREAM
        ups = ledgerlib.metering_upstreams(
            self.fp.port, gemini={"api_key_env": ENV_GEMINI})
        attribution = {
            "defaults": {"team": "unassigned"},
            "headers": ["intent", "team", "agent_class"],
            "keys": [
                {"key_sha256": ledgerlib.key_sha256(KEY_BOUND),
                 "tags": {"team": "support"}},
                {"tollgate_key_sha256": ledgerlib.key_sha256(KEY_TOLLGATE),
                 "tags": {"team": "research"}},
            ]}
        self.tg = self.start(self.fp, upstreams=ups, attribution=attribution)

    def gemini(self, query, hdrs=()):
        m = new_marker()
        r = self.call(self.tg.port, "POST", GEM + "?" + query,
                      tglib.gemini_generate(m),
                      [JSON_CT, ("X-Tollgate-Team", "elsewhere")] +
                      list(hdrs))
        return m, r

    def test_query_key_read_as_the_provider_decodes_it(self):
        for query in ("key=" + KEY_BOUND, "k%65y=" + KEY_BOUND,
                      "%6B%65%79=" + KEY_BOUND,
                      "alt=json&key=" + encoded(KEY_BOUND)):
            with self.subTest(query=query):
                m, r = self.gemini(query)
                self.assertEqual(r.status, 200, r)
                row = self.settled_row(r)
                # The binding's team, not the header's.
                self.assertEqual(row["team"], "support", describe_row(row))
                self.assertEqual(row["key_fingerprint"],
                                 ledgerlib.key_fp(KEY_BOUND))

    def test_tollgate_key_in_an_encoded_query_never_reaches_provider(self):
        for query in ("k%65y=" + KEY_TOLLGATE,
                      "alt=json&key=" + encoded(KEY_TOLLGATE) + "&x=1"):
            with self.subTest(query=query):
                m, r = self.gemini(query)
                self.assertEqual(r.status, 200, r)
                rec = self.fp.wait_request(m)
                self.assertIsNotNone(rec)
                self.assertNotIn("CANARYrepeats-agent", json.dumps(rec))
                self.assertNotIn(encoded(KEY_TOLLGATE)[:30],
                                 json.dumps(rec))
                self.assertEqual(rec_header(rec, "x-goog-api-key"),
                                 [KEY_UPSTREAM])
                row = self.settled_row(r)
                self.assertEqual(row["team"], "research", describe_row(row))

    def test_bound_key_next_to_an_encoded_other_key(self):
        since = self.fp.mark()
        for query in ("key=" + KEY_BOUND + "&k%65y=" + KEY_OTHER,
                      "k%65y=" + KEY_OTHER + "&key=" + KEY_BOUND):
            with self.subTest(query=query):
                m, r = self.gemini(query)
                doc = self.assertErrorShape(r, "gemini", 400)
                self.assertIn("bound key", doc["error"]["message"])
        self.assertNothingForwardedSince(self.fp, self.tg, since)

    def test_tollgate_header_given_twice(self):
        since = self.fp.mark()
        cases = [
            ([("X-Tollgate-Team", "a"), ("X-Tollgate-Team", "b")],
             "X-Tollgate-Team", "bad_tag"),
            ([("X-Tollgate-Agent-Class", "a"),
              ("x-tollgate-agent-class", "a")],
             "X-Tollgate-Agent-Class", "bad_tag"),
            ([("X-Tollgate-Request-Id", "r-1"),
              ("X-Tollgate-Request-Id", "r-2")],
             "X-Tollgate-Request-Id", "bad_request_id"),
        ]
        for hdrs, name, code in cases:
            with self.subTest(header=name):
                m = new_marker()
                r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                              tglib.openai_chat(m), [JSON_CT] + hdrs)
                doc = self.assertErrorShape(r, "openai", 400)
                self.assertEqual(doc["error"]["code"], code, doc)
                self.assertIn(name + " is given more than once",
                              doc["error"]["message"])
        self.assertNothingForwardedSince(self.fp, self.tg, since)


if __name__ == "__main__":
    tglib.main()
