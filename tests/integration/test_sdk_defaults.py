# SPDX-License-Identifier: Apache-2.0
"""The shipped price table knows the model each official SDK uses when the
caller names none (or the model its own examples use), so an agent built
with defaults is priced, and admitted under a hard cap, from its first
call. Each call goes through the real binary with the shipped
config/prices.yaml, unknown models refused and a cap over everything."""

import os
import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

# One place for the defaults: (model, family, where the default comes from).
# Update this list when an SDK changes its default, then the price table.
SDK_DEFAULTS = [
    ("gpt-5.6-luna", "openai",
     "openai-agents-python src/agents/models/default_models.py "
     "get_default_model(), 2026-08-22"),
    ("gpt-5.6-luna", "responses",
     "openai-agents-js packages/agents-core/src/defaultModel.ts "
     "getDefaultModel(), 2026-08-22 (the Agents SDK calls Responses)"),
    ("gpt-5.5", "openai",
     "openai-node README.md examples, 2026-08-21"),
    ("claude-opus-4-6", "anthropic",
     "anthropic-sdk-typescript README.md usage example, 2026-08-19"),
    ("claude-sonnet-5", "anthropic",
     "anthropic-sdk-typescript examples/agents.ts, 2026-08-19"),
    ("claude-sonnet-4-5", "anthropic",
     "claude-agent-sdk-python: model defaults to the Claude Code CLI's; "
     "set_model() docstring example, 2026-08-22"),
    ("gemini-2.5-flash", "gemini",
     "js-genai README.md examples, 2026-08-21"),
]

GEM = "/v1beta/models/%s:generateContent"


def request(family, model, marker):
    if family == "openai":
        return "/v1/chat/completions", tglib.openai_chat(marker, model=model)
    if family == "responses":
        return "/v1/responses", tglib.json_body(model=model, input=marker)
    if family == "anthropic":
        return "/v1/messages", tglib.anthropic_messages(marker, model=model)
    return GEM % model, tglib.gemini_generate(marker)


class SdkDefaultsTest(ledgerlib.MeterTestCase):

    def test_shipped_table_prices_every_sdk_default(self):
        fp = self.fakeprov()
        extra = ledgerlib.metering_extra(
            unknown_models={"action": "refuse"})
        extra["policies"] = [{"name": "all", "window": "day",
                              "hard_cap_usd": "1000"}]
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(fp.port),
                           extra=extra)
        self.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/ledger.db"), tg)
        for model, family, source in SDK_DEFAULTS:
            with self.subTest(model=model, source=source):
                path, body = request(family, model, tglib.new_marker())
                r = self.call(tg.port, "POST", path, body,
                              [JSON_CT, ("anthropic-version", "2023-06-01")])
                self.assertEqual(
                    r.status, 200, "%s (the default of %s) was not "
                    "admitted: %r" % (model, source, r.body[:300]))
                row = self.settled_row(r)
                d = ledgerlib.describe_row(row)
                self.assertEqual(row["status"], "ok", d)
                self.assertNotEqual(row["price_version"], "unpriced", d)
                self.assertGreater(row["cost_nusd"], 0, d)


if __name__ == "__main__":
    tglib.main()
