// SPDX-License-Identifier: Apache-2.0
// The response cache as the SDKs see it (docs/spend-less.md): a call the
// cache answers is an ordinary answer to the SDK, streamed or not: no
// error, no retry, the same completion as the first time, which reached
// the provider alone; the hit's ledger row costs nothing and says what it
// saved.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  AGENT_CLASS, KEYS, countingFetch, expectRow, marker, sharedStack, waitFor,
} from './lib/harness.mjs';

const CACHE = `cache:
  ttl: 1h
  match: { agent_class: ${AGENT_CLASS} }
`;

const KNOBS = { 'x-fake-input-tokens': '1000', 'x-fake-events': '4',
  'x-fake-event-tokens': '5' };

// The store's thread has written n answers (inserts are off the loop).
async function entries(stack, n) {
  await waitFor(async () => {
    const text = await (await fetch(`${stack.admin}/metrics`)).text();
    const m = text.match(/^tollgate_cache_entries (\d+)$/m);
    return m && Number(m[1]) >= n;
  }, 10000, `${n} cache entries`);
}

// The two settled rows of intent m: the miss, then the hit.
async function twoRows(stack, m) {
  return waitFor(() => {
    const rows = stack.rows(`intent = '${m}' AND status <> 'in_flight'`);
    return rows.length === 2 ? rows : null;
  }, 10000, `two ledger rows of intent ${m}`);
}

function expectHit(miss, hit) {
  expectRow(miss, { status: 'ok', cache_hit: 0, attempts: 1 });
  assert.ok(miss.cost_nusd > 0, JSON.stringify(miss));
  expectRow(hit, { status: 'ok', cache_hit: 1, attempts: 0, cost_nusd: 0,
    saved_nusd: miss.cost_nusd, input_tokens: miss.input_tokens,
    output_tokens: miss.output_tokens });
}

describe('cache', () => {
  const stack = sharedStack({ extraYaml: CACHE });

  function client(m, f) {
    return new OpenAI({
      apiKey: KEYS.openai, baseURL: `${stack.base}/v1`, fetch: f,
      defaultHeaders: { 'X-Tollgate-Agent-Class': AGENT_CLASS,
        'X-Tollgate-Intent': m },
    });
  }

  stack.it('openai: a cached completion is an ordinary completion', async () => {
    const m = marker('ca-oa');
    const f = countingFetch();
    const c = client(m, f);
    const ask = () => c.chat.completions.create({
      model: 'gpt-4o-mini', temperature: 0,
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS }).withResponse();
    const first = await ask();
    assert.equal(first.response.headers.get('x-tollgate-cache'), 'miss');
    await entries(stack, 1);
    const second = await ask();
    assert.equal(f.calls, 2, 'one attempt each: no retry');
    assert.equal(second.response.headers.get('x-tollgate-cache'), 'hit');
    assert.equal(second.data.object, 'chat.completion');
    assert.deepEqual(second.data, first.data);
    assert.equal(second.data.choices[0].message.content, 'tok tok '.repeat(4));
    assert.equal(stack.requestsWith(m).length, 1, 'the provider saw one call');
    const [miss, hit] = await twoRows(stack, m);
    expectHit(miss, hit);
  });

  stack.it('openai: a cached stream reads to its end', async () => {
    const m = marker('ca-oas');
    const c = client(m);
    const read = async () => {
      const stream = await c.chat.completions.create({
        model: 'gpt-4o-mini', stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: `hello ${m}` }],
      }, { headers: KNOBS });
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      return chunks;
    };
    const first = await read();
    await entries(stack, 2);
    const second = await read();
    assert.deepEqual(second, first);
    const text = second.map((ch) => ch.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, 'tok tok '.repeat(4));
    assert.equal(second.at(-1).usage.completion_tokens, 20);
    assert.equal(stack.requestsWith(m).length, 1, 'the provider saw one call');
    const [miss, hit] = await twoRows(stack, m);
    expectHit(miss, hit);
    assert.equal(hit.stream, 1);
  });
});
