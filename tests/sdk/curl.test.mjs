// SPDX-License-Identifier: Apache-2.0
// The curl lines of docs/clients.md, run as written there (base URL and
// keys substituted), against tollgate.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { KEYS, expectRow, marker, recHeader, sharedStack } from './lib/harness.mjs';

function curl(args) {
  const out = execFileSync('curl', ['-sS', '--fail-with-body', ...args], {
    encoding: 'utf8', timeout: 20000,
  });
  return JSON.parse(out);
}

describe('curl', () => {
  const stack = sharedStack();

  stack.it('OpenAI chat with tags in headers', async () => {
    const m = marker('cu-oa');
    const r = curl([`${stack.base}/v1/chat/completions`,
      '-H', `Authorization: Bearer ${KEYS.openai}`, '-H', 'Content-Type: application/json',
      '-H', 'X-Tollgate-Agent-Class: researcher', '-H', `X-Tollgate-Intent: ${m}`,
      '-d', JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hi ${m}` }] })]);
    assert.equal(r.choices[0].message.content, 'tok tok '.repeat(3));
    const rec = await stack.requestWith(m);
    assert.deepEqual(recHeader(rec, 'authorization'), [`Bearer ${KEYS.openai}`]);
    expectRow(await stack.row(m), { status: 'ok', provider: 'openai', model: 'gpt-4o-mini',
      agent_class: 'researcher', intent: m, output_tokens: 3 });
  });

  stack.it('Anthropic messages with tags in headers', async () => {
    const m = marker('cu-an');
    const r = curl([`${stack.base}/v1/messages`,
      '-H', `x-api-key: ${KEYS.anthropic}`, '-H', 'anthropic-version: 2023-06-01',
      '-H', 'content-type: application/json',
      '-H', 'X-Tollgate-Agent-Class: researcher', '-H', `X-Tollgate-Intent: ${m}`,
      '-d', JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 256,
        messages: [{ role: 'user', content: `hi ${m}` }] })]);
    assert.equal(r.content[0].text, 'tok tok '.repeat(3));
    const rec = await stack.requestWith(m);
    assert.deepEqual(recHeader(rec, 'x-api-key'), [KEYS.anthropic]);
    assert.deepEqual(recHeader(rec, 'anthropic-version'), ['2023-06-01']);
    expectRow(await stack.row(m), { status: 'ok', provider: 'anthropic',
      model: 'claude-sonnet-4-6', agent_class: 'researcher', intent: m });
  });

  stack.it('Gemini generateContent with tags in headers', async () => {
    const m = marker('cu-gm');
    const r = curl([`${stack.base}/v1beta/models/gemini-2.5-flash:generateContent`,
      '-H', `x-goog-api-key: ${KEYS.gemini}`, '-H', 'Content-Type: application/json',
      '-H', 'X-Tollgate-Agent-Class: researcher', '-H', `X-Tollgate-Intent: ${m}`,
      '-d', JSON.stringify({ contents: [{ parts: [{ text: `hi ${m}` }] }] })]);
    assert.equal(r.candidates[0].content.parts[0].text, 'tok tok '.repeat(3));
    const rec = await stack.requestWith(m);
    assert.deepEqual(recHeader(rec, 'x-goog-api-key'), [KEYS.gemini]);
    expectRow(await stack.row(m), { status: 'ok', provider: 'gemini',
      model: 'gemini-2.5-flash', agent_class: 'researcher', intent: m });
  });
});
