// SPDX-License-Identifier: Apache-2.0
// Cost policies as the SDKs see them: a hard cap raises each SDK's typed
// rate-limit error with tollgate's reason, after exactly one attempt (the
// SDKs obey x-should-retry: false); a concurrency limit is retried by the
// SDK itself after retry-after and then succeeds; a killed policy is a
// permission error; a kill that lands while a stream runs makes the SDK's
// stream iterator raise.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import {
  AGENT_CLASS, KEYS, countingFetch, expectRefused, expectRow, marker, ownStack, sleep,
  waitFor,
} from './lib/harness.mjs';

const TAGS = { 'X-Tollgate-Agent-Class': AGENT_CLASS };

function openai(s, f, extra = {}) {
  return new OpenAI({
    apiKey: KEYS.openai, baseURL: `${s.base}/v1`, fetch: f,
    defaultHeaders: { ...TAGS, ...extra },
  });
}

function anthropic(s, f, extra = {}) {
  return new Anthropic({
    apiKey: KEYS.anthropic, baseURL: s.base, fetch: f,
    defaultHeaders: { ...TAGS, ...extra },
  });
}

function gemini(s, extra = {}) {
  return new GoogleGenAI({
    apiKey: KEYS.gemini, httpOptions: { baseUrl: s.base, headers: { ...TAGS, ...extra } },
  });
}

// A budget no call fits in: every call's worst case is above it.
const TINY_CAP = `policies:
  - name: tiny
    match: { agent_class: ${AGENT_CLASS} }
    window: day
    hard_cap_usd: 0.000000001
`;

// Rewrite the stack's config with `policies` and reload it over the admin
// API, as an operator would.
async function reloadWith(s, policies) {
  const cfg = path.join(s.dir, 'tollgate.yaml');
  const text = fs.readFileSync(cfg, 'utf8').replace(/\npolicies:\n[\s\S]*$/, '\n');
  fs.writeFileSync(cfg, `${text}${policies}`);
  const r = await fetch(`${s.admin}/v1/reload`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
  });
  assert.equal(r.status, 200, await r.text());
}

describe('policies', () => {
  it('openai: a hard cap is a RateLimitError with the reason, not retried', async (t) => {
    const s = await ownStack(t, { extraYaml: TINY_CAP });
    const m = marker('pol-oa');
    const { err } = await expectRefused(s, (f) => openai(s, f, { 'X-Tollgate-Intent': m })
        .chat.completions.create({
          model: 'gpt-4o-mini', max_tokens: 64, messages: [{ role: 'user', content: m }],
        }), { status: 429, name: 'RateLimitError', message: /tollgate: this call's worst case \$[0-9.]+ exceeds the \$0\.000000001 left of the \$0\.000000001 daily cap of policy 'tiny'; set a lower max_tokens or enable clamp/ });
    assert.equal(err.code, 'insufficient_quota');
    assert.equal(err.type, 'insufficient_quota');
    assert.equal(err.headers.get('x-should-retry'), 'false');
    expectRow(await s.row(m), { status: 'refused', refusal_reason: 'hard_cap',
      http_status: 429, cost_nusd: 0 });
  });

  it('anthropic: a hard cap is a RateLimitError with the reason, not retried', async (t) => {
    const s = await ownStack(t, { extraYaml: TINY_CAP });
    const m = marker('pol-an');
    const { err } = await expectRefused(s, (f) => anthropic(s, f, { 'X-Tollgate-Intent': m })
        .messages.create({
          model: 'claude-sonnet-4-6', max_tokens: 64, messages: [{ role: 'user', content: m }],
        }), { status: 429, name: 'RateLimitError', message: /this call's worst case \$[0-9.]+ exceeds the \$0\.000000001 left of the \$0\.000000001 daily cap of policy 'tiny'; set a lower max_tokens/ });
    assert.equal(err.error.error.type, 'rate_limit_error');
    assert.equal(err.error.tollgate.reason, 'hard_cap');
    assert.equal(err.error.tollgate.policy, 'tiny');
    expectRow(await s.row(m), { status: 'refused', refusal_reason: 'hard_cap',
      provider: 'anthropic' });
  });

  it('gemini: a hard cap is a ClientError RESOURCE_EXHAUSTED, not retried', async (t) => {
    const s = await ownStack(t, { extraYaml: TINY_CAP });
    const m = marker('pol-gm');
    const { err } = await expectRefused(s, () => gemini(s, { 'X-Tollgate-Intent': m })
        .models.generateContent({ model: 'gemini-2.5-flash', contents: m }),
    { status: 429, name: 'ClientError',
      message: /this call's worst case \$[0-9.]+ exceeds the \$0\.000000001 left of the \$0\.000000001 daily cap of policy 'tiny'; set generationConfig\.maxOutputTokens or enable clamp/,
      counted: false });
    const body = JSON.parse(err.message.slice(err.message.indexOf('{')));
    assert.equal(body.error.status, 'RESOURCE_EXHAUSTED');
    assert.equal(body.error.details[0]['@type'],
                 'type.googleapis.com/google.rpc.QuotaFailure');
    expectRow(await s.row(m), { status: 'refused', refusal_reason: 'hard_cap',
      provider: 'gemini' });
  });

  for (const sdk of ['openai', 'anthropic']) {
    it(`${sdk}: the SDK's own retry honours retry-after and then succeeds`, async (t) => {
      const s = await ownStack(t, { extraYaml: `policies:
  - name: one-at-a-time
    match: { agent_class: ${AGENT_CLASS} }
    rate_limit: { concurrent: 1 }
` });
      const busy = marker('pol-busy');
      const m = marker('pol-rl');
      // One call holds the only slot for 0.8 s.
      const hold = openai(s, fetch, { 'X-Tollgate-Intent': busy, 'x-fake-delay-ms': '800' })
          .chat.completions.create({
            model: 'gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content: busy }],
          });
      await s.requestWith(busy);
      const f = countingFetch();
      const t0 = Date.now();
      let text;
      if (sdk === 'openai') {
        const r = await openai(s, f, { 'X-Tollgate-Intent': m }).chat.completions.create({
          model: 'gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content: m }],
        });
        text = r.choices[0].message.content;
      } else {
        const r = await anthropic(s, f, { 'X-Tollgate-Intent': m }).messages.create({
          model: 'claude-sonnet-4-6', max_tokens: 16, messages: [{ role: 'user', content: m }],
        });
        text = r.content[0].text;
      }
      await hold;
      assert.ok(text.length > 0);
      assert.equal(f.calls, 2, 'one refusal, then one retry that succeeded');
      assert.ok(Date.now() - t0 >= 900, 'the SDK waited for retry-after (1 s)');
      const rows = s.rows(`intent = '${m}'`);
      await waitFor(() => s.rows(`intent = '${m}' AND status = 'ok'`).length === 1,
                    10000, 'the retried call to settle');
      assert.deepEqual(s.rows(`intent = '${m}'`).map((r) => r.status).sort(),
                       ['ok', 'refused'], JSON.stringify(rows));
      assert.equal(s.rows(`intent = '${m}' AND status = 'refused'`)[0].refusal_reason,
                   'concurrency');
    });
  }

  it('openai and anthropic: a killed policy is a PermissionDeniedError', async (t) => {
    const s = await ownStack(t, { extraYaml: `policies:
  - { name: frozen, match: { agent_class: ${AGENT_CLASS} }, killed: true, kill_reason: "runaway loop" }
` });
    const m1 = marker('pol-k1');
    const { err } = await expectRefused(s, (f) => openai(s, f, { 'X-Tollgate-Intent': m1 })
        .chat.completions.create({
          model: 'gpt-4o-mini', messages: [{ role: 'user', content: m1 }],
        }), { status: 403, name: 'PermissionDeniedError', message: /runaway loop/ });
    assert.equal(err.code, 'killed');
    const m2 = marker('pol-k2');
    await expectRefused(s, (f) => anthropic(s, f, { 'X-Tollgate-Intent': m2 })
        .messages.create({
          model: 'claude-sonnet-4-6', max_tokens: 64, messages: [{ role: 'user', content: m2 }],
        }), { status: 403, name: 'PermissionDeniedError', message: /runaway loop/ });
    expectRow(await s.row(m2), { status: 'refused', refusal_reason: 'killed' });
  });

  for (const sdk of ['openai', 'anthropic']) {
    it(`${sdk}: a kill during a stream makes the stream iterator raise`, async (t) => {
      const open = `policies:
  - { name: streams, match: { agent_class: ${AGENT_CLASS} }, window: day, hard_cap_usd: 5 }
`;
      const s = await ownStack(t, { extraYaml: open });
      const m = marker('pol-ks');
      const slow = { 'X-Tollgate-Intent': m, 'x-fake-events': '60', 'x-fake-pace-ms': '100' };
      let stream;
      if (sdk === 'openai') {
        stream = await openai(s, fetch, slow).chat.completions.create({
          model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: m }],
        });
      } else {
        stream = anthropic(s, fetch, slow).messages.stream({
          model: 'claude-sonnet-4-6', max_tokens: 1024, messages: [{ role: 'user', content: m }],
        });
      }
      let events = 0;
      let err;
      const t0 = Date.now();
      try {
        for await (const ev of stream) {
          events += 1;
          if (events === 3) {
            await reloadWith(s, open.replace('hard_cap_usd: 5 }',
                                             'hard_cap_usd: 5, killed: true, kill_reason: "stop now" }'));
          }
          assert.ok(ev);
        }
      } catch (e) {
        err = e;
      }
      // @anthropic-ai/sdk's MessageStream iterator drops an error event
      // that arrives while the loop body is awaiting something else (here
      // the reload, whose answer may come after tollgate has sent the
      // error): the iterator just ends. done() still rejects with it, and
      // docs/clients.md tells users to await it.
      if (!err && sdk === 'anthropic') {
        try {
          await stream.done();
        } catch (e) {
          err = e;
        }
      }
      assert.ok(err, `the stream ended without an error after ${events} events`);
      assert.match(err.message, /stop now/);
      assert.ok(events < 40, `the stream ran on: ${events} events`);
      assert.ok(Date.now() - t0 < 5000);
      const row = await s.row(m);
      expectRow(row, { status: 'killed', refusal_reason: 'killed', usage_source: 'estimated' });
      assert.ok(row.cost_nusd > 0, 'what the stream used is charged');
      await sleep(100);
    });
  }
});
