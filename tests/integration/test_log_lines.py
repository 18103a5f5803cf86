# SPDX-License-Identifier: Apache-2.0
"""At info, a call costs one log line, whatever happened to it: refused by a
policy, judged by a shadow policy, clamped, cut by an upstream error, for a
model with no price. What used to be lines of their own is the call line's
note="..."; a model with no price is warned about once, not once a call."""

import re

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

AGENT = ("X-Tollgate-Agent-Class", "worker")
CALL_LINE = re.compile(r"(?m)^\S+ info: session (\d+): (POST|GET) .* "
                       r"id=(\w+) reason=(\S+)(?: note=\"(.*)\")?$")


class LogLinesTest(ledgerlib.MeterTestCase):

    def test_one_line_a_call(self):
        fp = self.fakeprov()
        policies = [
            # Refuses the team "capped" outright.
            {"name": "tiny", "match": {"team": "capped"}, "window": "day",
             "hard_cap_usd": "0.000000001"},
            # Would refuse "watched" calls, but only says so.
            {"name": "watch", "match": {"team": "watched"}, "shadow": True,
             "models": {"deny": ["gpt-4o-mini"]}},
            # Lowers the bound of "clamped" calls to what $0.001 pays for.
            {"name": "clamp", "match": {"team": "clamped"}, "window": "day",
             "hard_cap_usd": "0.001", "clamp": {"min_output_tokens": 16}},
        ]
        extra = ledgerlib.metering_extra(
            unknown_models={"action": "unpriced"})
        extra["policies"] = policies
        tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(fp.port),
                           extra=extra)
        kinds = []

        def call(team, model="gpt-4o-mini", extra_hdrs=(), body_extra=None):
            m = tglib.new_marker()
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(m, model=model,
                                            extra=body_extra),
                          [JSON_CT, AGENT, ("X-Tollgate-Team", team)] +
                          list(extra_hdrs))
            kinds.append((team, r.status, r.header("x-tollgate-request-id")))
            return r

        for _ in range(5):
            self.assertEqual(call("plain").status, 200)
        for _ in range(3):
            self.assertEqual(call("capped").status, 429)
        for _ in range(3):
            self.assertEqual(call("watched").status, 200)
        r = call("clamped", body_extra={"max_tokens": 100000})
        self.assertEqual(r.status, 200, r)
        for _ in range(4):
            self.assertEqual(call("plain", model="new-model-x").status, 200)
        self.assertEqual(call("plain", model="new-model-y").status, 200)
        self.assertEqual(call("plain", extra_hdrs=[("x-fake-status",
                                                    "500")]).status, 500)
        self.assertEqual(call("plain", body_extra={"n": 1.5}).status, 400)
        self.assertEqual(tg.stop(), 0)

        log = tg.log()
        lines = CALL_LINE.findall(log)
        by_id = {}
        for session, method, rid, reason, note in lines:
            by_id.setdefault(rid, []).append((reason, note))
        # One line for each call, and no other line about a call at info.
        self.assertEqual(len(lines), len(kinds), log)
        for team, status, rid in kinds:
            self.assertEqual(len(by_id.get(rid, [])), 1, (team, rid, log))
        others = [ln for ln in log.splitlines()
                  if re.search(r" info: session \d+: ", ln) and
                  not CALL_LINE.match(ln)]
        self.assertEqual(others, [])

        def note_of(team):
            return [by_id[rid][0] for t, _, rid in kinds if t == team]

        for reason, note in note_of("capped"):
            self.assertEqual(reason, "hard_cap")
            self.assertIn("refused by policy 'tiny'", note)
        for reason, note in note_of("watched"):
            self.assertEqual(reason, "ok")
            self.assertIn("shadow policy 'watch' would refuse: "
                          "model_not_allowed", note)
        # A provider's error status is said as such, not as "ok".
        errs = [by_id[rid][0] for t, st, rid in kinds if st == 500]
        self.assertEqual(errs, [("provider_error", "")])
        ((reason, note),) = note_of("clamped")
        self.assertRegex(note, r"output bound lowered to \d+ tokens")
        # The model with no price: a warning once for each model.
        self.assertEqual(len(re.findall(r"warn: .*'new-model-x' has no "
                                        r"price", log)), 1, log)
        self.assertEqual(len(re.findall(r"warn: .*'new-model-y' has no "
                                        r"price", log)), 1, log)
        self.assertEqual(len(re.findall(r"note=\"model unpriced\"", log)), 5)

    def test_client_bytes_cannot_forge_fields(self):
        # A name in a refused body and a model with spaces: each value
        # stays inside its own field, so a log reader sees one reason,
        # one cost and one id on the line, the real ones.
        fp = self.fakeprov()
        tg = self.start(fp)
        forged = ' reason=ok cost_nusd=0 id=forged '
        bodies = [
            b'{"model":"gpt-4o-mini","x\\"%s\\"":1,"messages":[]}'
            % forged.encode(),
            b'{"model":"gpt-4o-mini%s","messages":[]}' % forged.encode(),
        ]
        for body in bodies:
            r = self.call(tg.port, "POST", "/v1/chat/completions", body,
                          [JSON_CT, AGENT])
            self.assertIn(r.status, (200, 400), r)
        self.assertEqual(tg.stop(), 0)
        lines = [ln for ln in tg.log().splitlines()
                 if re.search(r" info: session \d+: POST ", ln)]
        self.assertEqual(len(lines), 2, tg.log())
        for ln in lines:
            # The note, if any, is last and holds no quote of its own.
            m = re.match(r'^(.*?)(?: note="([^"]*)")?$', ln)
            fields = m.group(1)
            self.assertNotIn('"', fields, ln)
            self.assertEqual(len(re.findall(r" reason=", fields)), 1, ln)
            self.assertEqual(len(re.findall(r" cost_nusd=", fields)), 1, ln)
            self.assertEqual(len(re.findall(r" id=", fields)), 1, ln)
            self.assertNotIn(" id=forged", fields)


if __name__ == "__main__":
    tglib.main()
