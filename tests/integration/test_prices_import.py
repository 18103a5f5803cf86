# SPDX-License-Identifier: Apache-2.0
"""tollgate prices import: a price list in LiteLLM's
model_prices_and_context_window.json format becomes a prices.yaml that
tollgate check accepts, with the changes against the running table shown
model by model; bad input is refused with a message naming the model and
the key, exit 1, and nothing written; the live table is never overwritten
unless asked."""

import os
import re
import shutil
import subprocess
import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402

SRC = os.environ.get("TG_SOURCE_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIX = os.path.join(SRC, "tests", "fixtures", "prices")
SHIPPED_CONFIG = os.path.join(SRC, "config", "tollgate.yaml")
SHIPPED_PRICES = os.path.join(SRC, "config", "prices.yaml")

# A kept entry that cannot be imported, and what the error must say.
BAD = [
    ("not_json", '{"gpt-x": {', "not JSON"),
    ("array", '[{"model": "gpt-x"}]', "expected a JSON object"),
    ("string_price", '{"gpt-x": {"litellm_provider": "openai", "mode": '
     '"chat", "input_cost_per_token": "2.5e-06", "output_cost_per_token":'
     ' 1e-05, "max_output_tokens": 100}}',
     "model 'gpt-x': input_cost_per_token: expected a number"),
    ("negative", '{"gpt-x": {"litellm_provider": "openai", "mode": '
     '"chat", "input_cost_per_token": 2.5e-06, "output_cost_per_token":'
     ' -1e-05, "max_output_tokens": 100}}',
     "model 'gpt-x': output_cost_per_token: -1e-05 is negative"),
    ("infinite", '{"gpt-x": {"litellm_provider": "openai", "mode": '
     '"chat", "input_cost_per_token": 1e999, "output_cost_per_token":'
     ' 1e-05, "max_output_tokens": 100}}',
     "model 'gpt-x': input_cost_per_token: inf is not a finite number"),
    ("too_dear", '{"gpt-x": {"litellm_provider": "anthropic", "mode": '
     '"chat", "input_cost_per_token": 2.5, "output_cost_per_token":'
     ' 1e-05, "max_output_tokens": 100}}',
     "is above 1 USD per token"),
    ("bad_tier", '{"gpt-x": {"litellm_provider": "openai", "mode": '
     '"chat", "input_cost_per_token": 2.5e-06, "output_cost_per_token":'
     ' 1e-05, "output_cost_per_token_priority": [1], '
     '"max_output_tokens": 100}}',
     "model 'gpt-x': output_cost_per_token_priority: expected a number"),
    ("bad_tokens", '{"gpt-x": {"litellm_provider": "openai", "mode": '
     '"chat", "input_cost_per_token": 2.5e-06, "output_cost_per_token":'
     ' 1e-05, "max_output_tokens": -5}}',
     "model 'gpt-x': max_output_tokens: expected a whole number"),
    ("no_output", '{"gpt-x": {"litellm_provider": "openai", "mode": '
     '"chat", "input_cost_per_token": 2.5e-06, "max_output_tokens": 100}}',
     "model 'gpt-x': no output_cost_per_token"),
    ("not_object", '{"gpt-x": 5}', "'gpt-x': expected an object"),
    ("nothing_kept", '{"m": {"litellm_provider": "mistral", "mode": '
     '"chat", "input_cost_per_token": 1e-06}}', "no chat, responses"),
]


class PricesImportTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        # A copy of the shipped configuration and table: the live table
        # of these tests, which they must never change by accident.
        shutil.copy(SHIPPED_CONFIG, os.path.join(self.tmp, "tollgate.yaml"))
        shutil.copy(SHIPPED_PRICES, os.path.join(self.tmp, "prices.yaml"))
        self.config = os.path.join(self.tmp, "tollgate.yaml")

    def run_import(self, *args, cwd=None):
        p = subprocess.run([tglib.TOLLGATE_BIN, "prices", "import"] +
                           list(args), cwd=cwd or self.tmp,
                           capture_output=True, text=True, timeout=60)
        return p

    def check_with(self, prices):
        with open(self.config) as f:
            text = f.read()
        text = re.sub(r"(?m)^prices: .*$", "prices: %s" % prices, text)
        path = os.path.join(self.tmp, "check.yaml")
        with open(path, "w") as f:
            f.write(text)
        return subprocess.run([tglib.TOLLGATE_BIN, "check", "-c", path],
                              capture_output=True, text=True, timeout=60)

    def test_fixture_converts_exactly_and_checks(self):
        out = os.path.join(self.tmp, "new-prices.yaml")
        p = self.run_import("litellm-sample.json", "-c", self.config,
                            "-o", out, "--price-version", "sample-1",
                            cwd=FIX)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(FIX, "litellm-sample.expect.yaml")) as f:
            want = f.read()
        with open(out) as f:
            got = f.read()
        self.assertEqual(got, want)
        c = self.check_with(out)
        self.assertEqual(c.returncode, 0, c.stderr)
        self.assertIn("configuration OK", c.stdout)
        # The changes, model by model.
        d = p.stdout
        self.assertRegex(d, r"(?m)^  changed  gpt-4o +output 10\.00 -> "
                            r"12\.00$")
        self.assertRegex(d, r"(?m)^  added    gpt-test-long +input 3\.00, "
                            r"output 15\.625, max_output_tokens 128000, "
                            r"long context, tiers$")
        self.assertRegex(d, r"(?m)^  removed  o3 ")
        self.assertRegex(d, r"(?m)^  alias    claude-3-5-haiku-latest +"
                            r"dropped: claude-3-5-haiku-20241022 is removed")
        self.assertNotRegex(d, r"(?m)^  \w+ +claude-opus-4-1 ")  # unchanged
        self.assertNotIn("mistral-test", d)
        self.assertNotIn("gpt-4o-2024-11-20", d)  # twin of gpt-4o
        self.assertRegex(d, r"(?m)^5 added, 1 changed, \d+ removed, "
                            r"1 unchanged$")

    def test_keep_missing_keeps_the_current_models(self):
        out = os.path.join(self.tmp, "kept.yaml")
        p = self.run_import(os.path.join(FIX, "litellm-sample.json"), "-c",
                            self.config, "-o", out, "--keep-missing")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"(?m)^  kept     o3 ")
        with open(out) as f:
            got = f.read()
        self.assertIn("\n  o3:", got)
        self.assertIn("claude-3-5-haiku-latest: claude-3-5-haiku-20241022",
                      got)
        self.assertRegex(got, r'(?m)^version: "import-\d{4}-\d\d-\d\d"$')
        c = self.check_with(out)
        self.assertEqual(c.returncode, 0, c.stderr)

    def test_without_output_nothing_is_written(self):
        before = sorted(os.listdir(self.tmp))
        p = self.run_import(os.path.join(FIX, "litellm-sample.json"), "-c",
                            self.config)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("nothing written", p.stdout)
        self.assertEqual(sorted(os.listdir(self.tmp)), before)

    def test_live_table_is_not_overwritten_unless_forced(self):
        live = os.path.join(self.tmp, "prices.yaml")
        with open(live) as f:
            orig = f.read()
        p = self.run_import(os.path.join(FIX, "litellm-sample.json"), "-c",
                            self.config, "-o", live)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is the live price table", p.stderr)
        with open(live) as f:
            self.assertEqual(f.read(), orig)
        p = self.run_import(os.path.join(FIX, "litellm-sample.json"), "-c",
                            self.config, "-o", live, "--force",
                            "--keep-missing")
        self.assertEqual(p.returncode, 0, p.stderr)
        c = self.check_with(live)
        self.assertEqual(c.returncode, 0, c.stderr)

    def test_bad_input_is_refused(self):
        for name, text, want in BAD:
            with self.subTest(case=name):
                src = os.path.join(self.tmp, name + ".json")
                out = os.path.join(self.tmp, name + ".yaml")
                with open(src, "w") as f:
                    f.write(text)
                p = self.run_import(src, "-c", self.config, "-o", out)
                self.assertEqual(p.returncode, 1, (p.stdout, p.stderr))
                self.assertIn(want, p.stderr)
                self.assertIn("nothing imported", p.stderr)
                self.assertFalse(os.path.exists(out))
                self.assertNotIn("Traceback", p.stderr)

    def test_flags(self):
        p = self.run_import()
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage: tollgate prices import", p.stderr)
        p = self.run_import("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("LiteLLM", p.stdout)
        p = subprocess.run([tglib.TOLLGATE_BIN, "prices", "export"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        p = self.run_import(os.path.join(self.tmp, "missing.json"), "-c",
                            self.config)
        self.assertEqual(p.returncode, 1)
        self.assertIn("No such file", p.stderr)
        p = self.run_import(os.path.join(FIX, "litellm-sample.json"), "-c",
                            os.path.join(self.tmp, "nope.yaml"))
        self.assertEqual(p.returncode, 1)


if __name__ == "__main__":
    tglib.main()
