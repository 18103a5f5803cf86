// SPDX-License-Identifier: Apache-2.0
// The official `@google/genai` npm SDK through tollgate: only
// httpOptions.baseUrl and httpOptions.headers change (docs/clients.md).

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import { GoogleGenAI } from '@google/genai';
import {
  AGENT_CLASS, KEYS, costNusd, expectRow, marker, recHeader, sharedStack,
} from './lib/harness.mjs';

const MODEL = 'gemini-2.5-flash';

// fakeprov knobs go in the client's headers too: @google/genai sends
// httpOptions.headers on every request.
function client(stack, intent, headers = {}) {
  return new GoogleGenAI({
    apiKey: KEYS.gemini,
    httpOptions: {
      baseUrl: stack.base,
      headers: {
        'X-Tollgate-Agent-Class': AGENT_CLASS,
        'X-Tollgate-Team': 'gemini-node',
        'X-Tollgate-Intent': intent,
        ...headers,
      },
    },
  });
}

// 900 prompt tokens (100 cached), 4 chunks of 6 tokens, 25 thoughts:
// billed output 24 + 25.
const KNOBS = {
  'x-fake-input-tokens': '900',
  'x-fake-cached-tokens': '100',
  'x-fake-reasoning-tokens': '25',
  'x-fake-events': '4',
  'x-fake-event-tokens': '6',
};
const USAGE = { input: 900, cached: 100, output: 49, reasoning: 25 };

function expectMetered(row, { stream, intent }) {
  expectRow(row, {
    provider: 'gemini',
    endpoint: stream ? 'streamGenerateContent' : 'generateContent',
    model: MODEL,
    stream: stream ? 1 : 0,
    status: 'ok',
    http_status: 200,
    usage_source: 'reported',
    input_tokens: 900,
    cached_input_tokens: 100,
    cache_write_tokens: 0,
    output_tokens: 49,
    reasoning_tokens: 25,
    cost_nusd: costNusd(MODEL, USAGE),
    intent,
    team: 'gemini-node',
    agent_class: AGENT_CLASS,
    environment: 'sdk-ci',
  });
}

describe('@google/genai', () => {
  const stack = sharedStack();

  stack.it('generateContent: text and usageMetadata as sent', async () => {
    const m = marker('gm-gen');
    const r = await client(stack, m, KNOBS).models.generateContent({
      model: MODEL,
      contents: `hello ${m}`,
    });
    assert.equal(r.text, 'tok tok '.repeat(4));
    assert.equal(r.candidates[0].finishReason, 'STOP');
    assert.equal(r.modelVersion, MODEL);
    assert.equal(r.usageMetadata.promptTokenCount, 900);
    assert.equal(r.usageMetadata.cachedContentTokenCount, 100);
    assert.equal(r.usageMetadata.candidatesTokenCount, 24);
    assert.equal(r.usageMetadata.thoughtsTokenCount, 25);
    const rec = await stack.requestWith(m);
    assert.equal(rec.path, `/v1beta/models/${MODEL}:generateContent`);
    expectMetered(await stack.row(m), { stream: false, intent: m });
  });

  stack.it('generateContentStream: every chunk, cumulative usage metered once', async () => {
    const m = marker('gm-stream');
    const stream = await client(stack, m, KNOBS).models.generateContentStream({
      model: MODEL,
      contents: `hello ${m}`,
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(chunks.length, 4);
    assert.equal(chunks.map((c) => c.text).join(''), 'tok tok '.repeat(4));
    assert.deepEqual(chunks.map((c) => c.usageMetadata.candidatesTokenCount),
                     [6, 12, 18, 24]);
    assert.equal(chunks[3].candidates[0].finishReason, 'STOP');
    const rec = await stack.requestWith(m);
    assert.equal(rec.path, `/v1beta/models/${MODEL}:streamGenerateContent?alt=sse`);
    expectMetered(await stack.row(m), { stream: true, intent: m });
  });

  stack.it('headers: x-goog-api-key and x-goog-api-client reach the provider; tags land in the ledger', async () => {
    const m = marker('gm-hdrs');
    const c = new GoogleGenAI({
      apiKey: KEYS.gemini,
      httpOptions: {
        baseUrl: stack.base,
        headers: {
          'X-Tollgate-Agent-Class': 'tagged-agent',
          'X-Tollgate-Team': 'research',
          'X-Tollgate-Tenant': 'initech',
          'X-Tollgate-Environment': 'staging',
        },
      },
    });
    // A tag of one call goes in that call's config.httpOptions.headers.
    const r = await c.models.generateContent({
      model: MODEL,
      contents: `hello ${m}`,
      config: { httpOptions: { headers: { 'X-Tollgate-Intent': m } } },
    });
    assert.equal(r.text, 'tok tok '.repeat(3));
    const rec = await stack.requestWith(m);
    assert.deepEqual(recHeader(rec, 'x-goog-api-key'), [KEYS.gemini]);
    assert.match(recHeader(rec, 'x-goog-api-client')[0] || '', /^google-genai-sdk\/\S+ gl-node\//);
    assert.equal(recHeader(rec, 'authorization').length, 0);
    const leaked = rec.headers.filter(([k]) => /^x-tollgate-/i.test(k));
    assert.deepEqual(leaked, [], 'X-Tollgate-* headers must not reach the provider');
    expectRow(await stack.row(m), {
      status: 'ok', provider: 'gemini', model: MODEL, intent: m,
      team: 'research', tenant: 'initech', agent_class: 'tagged-agent',
      environment: 'staging',
    });
  });
});
