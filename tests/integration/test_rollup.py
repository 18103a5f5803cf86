# SPDX-License-Identifier: Apache-2.0
"""The calls_daily rollup through the real binary. The writer adds the
rows it inserts to calls_daily itself, one upsert per key a transaction,
with the schema's triggers turned off on its connection and copied as
TEMP triggers: the rollup must still equal the sums over the final rows
(calls made with several keys, a refusal, a restart after kill -9), a
trigger an operator added to calls must still run for tollgate's own
rows, and a row inserted by hand through another connection must still
reach the rollup through the schema's trigger."""

import sqlite3

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402

# calls_daily's key and sums, over the final rows of calls.
GROUP_SUMS = (
    "SELECT substr(started_at, 1, 10), coalesce(provider, ''),"
    " coalesce(model, ''), coalesce(team, ''), coalesce(tenant, ''),"
    " coalesce(agent_class, ''), coalesce(environment, ''), count(*),"
    " sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),"
    " sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_nusd)"
    " FROM calls WHERE status <> 'in_flight' GROUP BY 1, 2, 3, 4, 5, 6, 7")

AUDIT = (
    "CREATE TABLE audit (id TEXT NOT NULL);"
    "CREATE TRIGGER audit_calls AFTER INSERT ON calls"
    " BEGIN INSERT INTO audit VALUES (NEW.id); END;")


class RollupTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()

    def assertRollupExact(self, msg):
        rows = self.ledger.query("SELECT * FROM calls_daily")
        got = sorted(tuple(r.values()) for r in rows)
        want = sorted(tuple(r.values()) for r in self.ledger.query(
            GROUP_SUMS))
        self.assertTrue(want, msg + ": no final rows")
        self.assertEqual(got, want, msg)

    def calls(self, tg, plan):
        ids = []
        for i, (team, ac, model) in enumerate(plan):
            hdrs = [JSON_CT, ("X-Tollgate-Agent-Class", ac)]
            if team:
                hdrs.append(("X-Tollgate-Team", team))
            r = self.call(tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(ledgerlib.marker("ru%d" % i),
                                            model=model), hdrs)
            self.assertEqual(r.status, 200, r)
            ids.append(self.settled_row(r)["id"])
        return ids

    def test_rollup_equals_rows(self):
        tg = self.start(self.fp)
        self.assertEqual(tg.stop(), 0)
        # An operator's trigger, added while tollgate is stopped.
        c = sqlite3.connect(self.ledger.path, isolation_level=None)
        c.executescript(AUDIT)
        c.close()

        tg = self.start(self.fp, name="t2")
        plan = [("alpha", "researcher", "gpt-4o-mini"),
                ("alpha", "researcher", "gpt-4o-mini"),
                ("alpha", "researcher", "gpt-4o"),
                ("beta", "ticket-agent", "gpt-4o-mini"),
                (None, "ticket-agent", "gpt-4o"),
                (None, "ticket-agent", "gpt-4o")]
        ids = self.calls(tg, plan)
        # A refusal is a final row too (no cost, but it counts).
        r = self.call(tg.port, "POST", "/v1/chat/completions",
                      b"{not json", [JSON_CT])
        self.assertEqual(r.status, 400, r)
        self.ledger.wait_count(len(plan) + 1)
        self.assertRollupExact("after calls")
        self.assertEqual(
            sorted(x["id"] for x in self.ledger.query(
                "SELECT id FROM audit")),
            sorted(x["id"] for x in self.ledger.query(
                "SELECT id FROM calls")),
            "the operator's trigger did not run for tollgate's rows")
        for i in ids:
            self.assertEqual(self.ledger.scalar(
                "SELECT count(*) FROM audit WHERE id = ?", (i,)), 1)

        # A row inserted by hand while tollgate runs: the schema's
        # trigger adds it on that connection.
        c = sqlite3.connect(self.ledger.path, isolation_level=None,
                            timeout=10)
        c.execute("INSERT INTO calls (id, started_at, finished_at,"
                  " provider, model, team, status, input_tokens,"
                  " cost_nusd) VALUES ('byhand', '2026-11-28T10:00:00.000Z',"
                  " '2026-11-28T10:00:01.000Z', 'openai', 'gpt-4o',"
                  " 'gamma', 'ok', 7, 1234)")
        c.close()
        self.assertEqual(self.ledger.scalar(
            "SELECT cost_nusd FROM calls_daily WHERE team = 'gamma'"), 1234)
        # And taken out by hand: the delete trigger, as before.
        more = self.calls(tg, [("gamma", "researcher", "gpt-4o-mini")])
        self.assertRollupExact("after a hand insert and another call")
        self.assertEqual(self.ledger.scalar(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'"
            " AND name LIKE 'calls_daily_%'"), 4)

        # kill -9, then a new start: its connection copies the triggers
        # again, and the rows it writes reach the rollup and the audit.
        tg.expected_exit = True
        tg.kill()
        tg = self.start(self.fp, name="t3")
        more += self.calls(tg, [("delta", "researcher", "gpt-4o")])
        self.assertRollupExact("after kill -9 and a restart")
        self.assertEqual(
            self.ledger.scalar("SELECT count(*) FROM audit"),
            self.ledger.scalar("SELECT count(*) FROM calls"),
            "the operator's trigger missed rows after the restart")
        self.assertEqual(len(set(ids + more)), len(plan) + 2)
        self.assertEqual(self.ledger.integrity(), "ok")
        self.assertEqual(tg.stop(), 0)


if __name__ == "__main__":
    tglib.main()
