# SPDX-License-Identifier: Apache-2.0
"""Every TEXT value of the ledger is valid UTF-8, whatever the provider
answers (docs/operations.md, "The ledger's columns"), through the real
binary and fakeprov:

  - a response "model" with bytes that are not UTF-8 (OpenAI, Anthropic,
    Gemini; whole bodies and streams) is recorded as served_model with
    each stray byte as U+FFFD;
  - a response "model" of multi-byte characters longer than the column
    keeps (127 bytes) is cut between two characters, never inside one;
  - a name cut to fit never prices the call, even when what is left of
    it is a model the price table knows;
  - a stream that ends in an error frame whose name is not UTF-8 leaves a
    readable refusal_reason;
  - such a row reaches the fleet ledger in PostgreSQL (a UTF8 database,
    which refuses anything else), with the same text.

Each check reads the row with sqlite3's text_factory=bytes and decodes
every TEXT value strictly, and requires that the ledger's own last-resort
repair (its "not UTF-8 was recorded with U+FFFD" warning) never had to act:
the value was made valid where it entered."""

import os
import sqlite3
import sys
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
import ledgerlib  # noqa: E402
import pglib  # noqa: E402
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker  # noqa: E402

AGENT = ("X-Tollgate-Team", "utf8")
FFFD = "\ufffd"
BACKSTOP = "was recorded with U+FFFD"
# Two ASCII bytes then two-byte characters: the 127th byte is the first
# half of an "é", where a byte count alone would cut.
LONG_MODEL = "mm" + "\u00e9" * 100
LONG_KEPT = "mm" + "\u00e9" * 62


def hexknob(name, raw):
    return (name, raw.hex())


class LedgerUtf8Test(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def raw_row(self, rid, path=None, must=True):
        """The calls row rid with its TEXT values as bytes."""
        if not os.path.exists(path or self.ledger.path):
            raise sqlite3.OperationalError("no ledger yet")
        db = sqlite3.connect("file:%s?mode=ro" % (path or self.ledger.path),
                             uri=True)
        db.row_factory = sqlite3.Row
        db.text_factory = bytes
        try:
            r = db.execute("SELECT * FROM calls WHERE id = ?",
                           (rid,)).fetchone()
            if must:
                self.assertIsNotNone(r, "no row %s" % rid)
            return dict(r) if r is not None else None
        finally:
            db.close()

    def assertRowUtf8(self, rid, path=None):
        """Every TEXT value of row rid decodes as UTF-8; the row decoded."""
        out = {}
        for k, v in self.raw_row(rid, path).items():
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError as e:
                    self.fail("row %s: %s is not UTF-8 (%s): %r" %
                              (rid, k, e, v))
            out[k] = v
        return out

    def post(self, tg, path, body, hdrs):
        r = tglib.http_call(tg.port, "POST", path, body,
                            [JSON_CT, AGENT] + list(hdrs))
        self.assertEqual(r.status, 200, r)
        return r

    def settled(self, r):
        """The id of response r's row once it is final. Read as bytes:
        the ledgerlib helpers decode text and would see a row that is not
        UTF-8 as no row at all."""
        rid = r.header("x-tollgate-request-id")
        self.assertTrue(rid, r)

        def final():
            try:
                row = self.raw_row(rid, must=False)
            except sqlite3.OperationalError:
                return None
            return row is not None and row["status"] != b"in_flight"
        self.assertTrue(tglib.wait_until(final, 10, 0.05),
                        "row %s not final within 10 s" % rid)
        return rid

    def assertNoBackstop(self, tg):
        self.assertNotIn(BACKSTOP, tg.log(),
                         "the ledger had to repair a value: a source "
                         "still lets text that is not UTF-8 through")

    # ------------------------------------------------------------------

    def test_served_model_not_utf8_is_repaired(self):
        tg = self.start(self.fp)
        knob = hexknob("x-fake-model-hex", b"gpt-4o-mini\xff\xc3(\xed\xa0\x80")
        want = "gpt-4o-mini" + FFFD * 2 + "(" + FFFD * 3
        cases = [
            ("chat", "/v1/chat/completions",
             tglib.openai_chat(new_marker())),
            ("chat stream", "/v1/chat/completions",
             tglib.openai_chat(new_marker(), stream=True)),
            ("messages", "/v1/messages",
             tglib.anthropic_messages(new_marker())),
            ("messages stream", "/v1/messages",
             tglib.anthropic_messages(new_marker(), stream=True)),
            ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent",
             tglib.gemini_generate(new_marker())),
        ]
        for name, path, body in cases:
            with self.subTest(name):
                rid = self.settled(self.post(tg, path, body, [knob]))
                row = self.assertRowUtf8(rid)
                self.assertEqual(row["status"], "ok", row)
                self.assertEqual(row["served_model"], want, row)
                self.assertGreater(row["cost_nusd"], 0, row)
        self.assertNoBackstop(tg)

    def test_long_served_model_cut_between_characters(self):
        tg = self.start(self.fp)
        knob = hexknob("x-fake-model-hex", LONG_MODEL.encode())
        for stream in (False, True):
            with self.subTest(stream=stream):
                rid = self.settled(self.post(
                    tg, "/v1/chat/completions",
                    tglib.openai_chat(new_marker(), stream=stream), [knob]))
                row = self.assertRowUtf8(rid)
                self.assertEqual(row["served_model"], LONG_KEPT, row)
                self.assertEqual(len(row["served_model"].encode()), 126)
        self.assertNoBackstop(tg)

    def test_cut_name_never_prices_the_call(self):
        # A price table with a model whose name fills the column (127
        # bytes, the longest a price file may name). The asked model is
        # unknown and left unpriced; the provider answers with that name
        # and more. Cut to fit, what is left is the long name: a name the
        # provider never gave, which must not price the call.
        longname = "acme-" + "l" * 122
        self.assertEqual(len(longname), 127)
        with open(ledgerlib.PRICES_PATH) as f:
            text = f.read()
        prices = os.path.join(self.tmp, "prices.yaml")
        with open(prices, "w") as f:
            f.write(text.replace("\nmodels:\n", "\nmodels:\n  %s:\n    "
                                 "input: 1.00\n    output: 2.00\n    "
                                 "max_output_tokens: 4096\n" %
                                 longname, 1))
        tg = self.start(self.fp, prices=prices,
                        unknown_models={"action": "unpriced"})
        rid = self.settled(self.post(
            tg, "/v1/chat/completions",
            tglib.openai_chat(new_marker(), model="acme-unknown-7"),
            [("x-fake-model", longname + "-v2")]))
        row = self.assertRowUtf8(rid)
        self.assertEqual(row["model"], "acme-unknown-7")
        self.assertEqual(row["served_model"], longname, row)
        self.assertEqual(row["price_version"], "unpriced", row)
        self.assertEqual(row["cost_nusd"], 0, row)
        # The same name given whole does price it: what the check above
        # sees is the cut, not the unknown model.
        rid = self.settled(self.post(
            tg, "/v1/chat/completions",
            tglib.openai_chat(new_marker(), model="acme-unknown-7"),
            [("x-fake-model", longname)]))
        row = self.assertRowUtf8(rid)
        self.assertEqual(row["served_model"], longname)
        self.assertNotEqual(row["price_version"], "unpriced", row)
        self.assertGreater(row["cost_nusd"], 0, row)

    def test_stream_error_name_not_utf8(self):
        tg = self.start(self.fp)
        name = b"\xff\xfe" + "\u00e9".encode() * 40 + b"_overloaded"
        cases = [
            ("chat", "/v1/chat/completions",
             tglib.openai_chat(new_marker(), stream=True)),
            ("messages", "/v1/messages",
             tglib.anthropic_messages(new_marker(), stream=True)),
        ]
        for label, path, body in cases:
            with self.subTest(label):
                rid = self.settled(self.post(
                    tg, path, body,
                    [("x-fake-error-after", "2"),
                     hexknob("x-fake-error-name-hex", name)]))
                row = self.assertRowUtf8(rid)
                self.assertEqual(row["status"], "error", row)
                self.assertTrue(
                    row["refusal_reason"].startswith("stream_error:"), row)
        self.assertNoBackstop(tg)

    def test_repaired_row_ships_to_postgresql(self):
        pg = pglib.start(self)
        pg.createdb("fleet")
        ship = {"postgres": pg.url("fleet"), "interval": "20ms",
                "instance": "pod-u"}
        tg = self.start(self.fp, ledger={"path": "data/ledger.db",
                                         "ship": ship})
        want = {}
        for raw, text in ((b"gpt-4o-mini\xff\xfe", "gpt-4o-mini" + FFFD * 2),
                          (LONG_MODEL.encode(), LONG_KEPT)):
            rid = self.settled(self.post(
                tg, "/v1/chat/completions", tglib.openai_chat(new_marker()),
                [hexknob("x-fake-model-hex", raw)]))
            self.assertEqual(self.assertRowUtf8(rid)["served_model"], text)
            want[rid] = text

        def shipped():
            try:
                out = pg.psql("SELECT id, encode(convert_to(served_model, "
                              "'UTF8'), 'hex') FROM calls WHERE instance = "
                              "'pod-u'", db="fleet")
            except pglib.PgError:
                return None  # the shipper has not made the tables yet
            got = dict(line.split("|") for line in out.splitlines() if line)
            return got if len(got) == len(want) else None
        got = tglib.wait_until(shipped, 60, 0.1)
        self.assertTrue(got, "rows not shipped; log:\n%s" % tg.log()[-3000:])
        self.assertEqual({k: bytes.fromhex(v).decode() for k, v in
                          got.items()}, want)
        self.assertNotIn("invalid byte sequence", tg.log())
        self.assertNoBackstop(tg)


if __name__ == "__main__":
    unittest.main()
