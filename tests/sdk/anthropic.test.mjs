// SPDX-License-Identifier: Apache-2.0
// The official `@anthropic-ai/sdk` npm SDK through tollgate: only baseURL
// and defaultHeaders change (docs/clients.md).

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import Anthropic from '@anthropic-ai/sdk';
import {
  AGENT_CLASS, KEYS, costNusd, expectRow, marker, recHeader, sharedStack,
} from './lib/harness.mjs';

const SDK_VERSION = JSON.parse(fs.readFileSync(new URL(
    './node_modules/@anthropic-ai/sdk/package.json', import.meta.url), 'utf8')).version;

function client(stack, intent, extra = {}) {
  return new Anthropic({
    apiKey: KEYS.anthropic,
    baseURL: stack.base,
    defaultHeaders: {
      'X-Tollgate-Agent-Class': AGENT_CLASS,
      'X-Tollgate-Team': 'anthropic-node',
      'X-Tollgate-Intent': intent,
    },
    ...extra,
  });
}

// fakeprov: 2000 prompt tokens of which 500 cache reads and 300 cache
// writes (so input_tokens 1200 on the wire), 3 events of 10 tokens plus 40
// thinking tokens: output 70.
const KNOBS = {
  'x-fake-input-tokens': '2000',
  'x-fake-cached-tokens': '500',
  'x-fake-cache-write-tokens': '300',
  'x-fake-reasoning-tokens': '40',
  'x-fake-events': '3',
  'x-fake-event-tokens': '10',
};
const MODEL = 'claude-sonnet-4-6';
const TEXT = 'tok tok '.repeat(3);

function expectMetered(row, { stream, intent, reasoning }) {
  const usage = { input: 2000, cached: 500, cacheWrite: 300, output: 70 };
  expectRow(row, {
    provider: 'anthropic',
    endpoint: 'messages',
    model: MODEL,
    stream: stream ? 1 : 0,
    status: 'ok',
    http_status: 200,
    usage_source: 'reported',
    input_tokens: 2000,
    cached_input_tokens: 500,
    cache_write_tokens: 300,
    output_tokens: 70,
    reasoning_tokens: reasoning,
    cost_nusd: costNusd(MODEL, usage),
    intent,
    team: 'anthropic-node',
    agent_class: AGENT_CLASS,
    environment: 'sdk-ci',
  });
}

function expectUsage(u) {
  assert.equal(u.input_tokens, 1200);
  assert.equal(u.cache_read_input_tokens, 500);
  assert.equal(u.cache_creation_input_tokens, 300);
  assert.equal(u.output_tokens, 70);
}

describe('@anthropic-ai/sdk', () => {
  const stack = sharedStack();

  stack.it('messages, not streamed: content, stop reason and usage as sent', async () => {
    const m = marker('an-msg');
    const r = await client(stack, m).messages.create({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS });
    assert.equal(r.type, 'message');
    assert.equal(r.role, 'assistant');
    assert.equal(r.model, MODEL);
    assert.match(r.id, /^msg_fake\d+$/);
    assert.deepEqual(r.content, [{ type: 'text', text: TEXT }]);
    assert.equal(r.stop_reason, 'end_turn');
    expectUsage(r.usage);
    assert.equal(r.usage.output_tokens_details.thinking_tokens, 40);
    await stack.requestWith(m);
    expectMetered(await stack.row(m), { stream: false, intent: m, reasoning: 40 });
  });

  stack.it('messages, streamed: text events and the final message', async () => {
    const m = marker('an-stream');
    const stream = client(stack, m).messages.stream({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS });
    const texts = [];
    const types = [];
    stream.on('text', (t) => texts.push(t));
    stream.on('streamEvent', (e) => types.push(e.type));
    const msg = await stream.finalMessage();
    assert.deepEqual(texts, ['tok tok ', 'tok tok ', 'tok tok ']);
    // (the SDK drops the ping event fakeprov sends after content_block_start)
    assert.deepEqual(types, ['message_start', 'content_block_start',
      'content_block_delta', 'content_block_delta', 'content_block_delta',
      'content_block_stop', 'message_delta', 'message_stop']);
    assert.deepEqual(msg.content, [{ type: 'text', text: TEXT }]);
    assert.equal(msg.stop_reason, 'end_turn');
    expectUsage(msg.usage);
    // The stream reports no thinking breakdown, so none is recorded.
    expectMetered(await stack.row(m), { stream: true, intent: m, reasoning: 0 });
  });

  stack.it('messages, streamed with thinking and a tool call: blocks assemble, input JSON from fragments', async () => {
    const m = marker('an-tools');
    const stream = client(stack, m).messages.stream({
      model: MODEL,
      max_tokens: 4096,
      thinking: { type: 'enabled', budget_tokens: 2048 },
      tools: [{
        name: 'lookup', description: 'look something up',
        input_schema: { type: 'object', properties: { q: { type: 'string' } } },
      }],
      messages: [{ role: 'user', content: `look up ${m}` }],
    }, { headers: { ...KNOBS, 'x-fake-tool': 'lookup' } });
    const thinking = [];
    const json = [];
    stream.on('thinking', (delta) => thinking.push(delta));
    stream.on('inputJson', (partial) => json.push(partial));
    const msg = await stream.finalMessage();
    assert.deepEqual(thinking, ['fake thinking']);
    assert.deepEqual(json, ['{"q":"tok tok ', 'tok tok ', 'tok tok "}']);
    assert.equal(msg.stop_reason, 'tool_use');
    assert.equal(msg.content.length, 3);
    assert.equal(msg.content[0].type, 'thinking');
    assert.equal(msg.content[0].thinking, 'fake thinking');
    assert.match(msg.content[0].signature, /^sig_fake\d+$/);
    assert.deepEqual(msg.content[1], { type: 'text', text: TEXT });
    assert.equal(msg.content[2].type, 'tool_use');
    assert.equal(msg.content[2].name, 'lookup');
    assert.match(msg.content[2].id, /^toolu_fake\d+$/);
    assert.deepEqual(msg.content[2].input, { q: TEXT });
    expectUsage(msg.usage);
    const rec = await stack.requestWith(m);
    const body = JSON.parse(rec.body);
    assert.deepEqual(body.thinking, { type: 'enabled', budget_tokens: 2048 });
    assert.equal(body.tools[0].name, 'lookup');
    expectMetered(await stack.row(m), { stream: true, intent: m, reasoning: 0 });
  });

  stack.it('messages, not streamed, with thinking and a tool call: every block', async () => {
    const m = marker('an-tool1');
    const r = await client(stack, m).messages.create({
      model: MODEL,
      max_tokens: 4096,
      thinking: { type: 'enabled', budget_tokens: 2048 },
      tools: [{ name: 'lookup', input_schema: { type: 'object' } }],
      messages: [{ role: 'user', content: `look up ${m}` }],
    }, { headers: { ...KNOBS, 'x-fake-tool': 'lookup' } });
    assert.equal(r.stop_reason, 'tool_use');
    assert.deepEqual(r.content.map((b) => b.type), ['thinking', 'text', 'tool_use']);
    assert.equal(r.content[0].thinking, 'fake thinking');
    assert.deepEqual(r.content[2].input, { q: TEXT });
    expectMetered(await stack.row(m), { stream: false, intent: m, reasoning: 40 });
  });

  stack.it('headers: anthropic-version, anthropic-beta, the key and x-stainless-* reach the provider; tags land in the ledger', async () => {
    const m = marker('an-hdrs');
    const c = new Anthropic({
      apiKey: KEYS.anthropic,
      baseURL: stack.base,
      defaultHeaders: {
        'X-Tollgate-Agent-Class': 'tagged-agent',
        'X-Tollgate-Team': 'support',
        'X-Tollgate-Tenant': 'globex',
        'X-Tollgate-Environment': 'staging',
      },
    });
    // The beta namespace: the betas travel in the anthropic-beta header. A
    // tag of one call goes in that call's request options.
    const r = await c.beta.messages.create({
      model: MODEL,
      max_tokens: 256,
      betas: ['interleaved-thinking-2025-05-14', 'context-1m-2025-08-07'],
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: { 'X-Tollgate-Intent': m } });
    assert.deepEqual(r.content, [{ type: 'text', text: TEXT }]);
    const rec = await stack.requestWith(m);
    assert.equal(rec.path, '/v1/messages');
    // The API version this SDK release pins (its client.js; older
    // releases sent 2023-06-01).
    assert.deepEqual(recHeader(rec, 'anthropic-version'), ['2026-10-21']);
    assert.deepEqual(recHeader(rec, 'anthropic-beta'),
                     ['interleaved-thinking-2025-05-14,context-1m-2025-08-07']);
    // This SDK release sends its API key as a bearer token, not x-api-key.
    assert.deepEqual(recHeader(rec, 'authorization'), [`Bearer ${KEYS.anthropic}`]);
    assert.deepEqual(recHeader(rec, 'x-stainless-lang'), ['js']);
    assert.deepEqual(recHeader(rec, 'x-stainless-package-version'), [SDK_VERSION]);
    assert.deepEqual(recHeader(rec, 'x-stainless-retry-count'), ['0']);
    assert.deepEqual(recHeader(rec, 'x-stainless-runtime'), ['node']);
    assert.match(recHeader(rec, 'user-agent')[0] || '', /^Anthropic\/JS /);
    const leaked = rec.headers.filter(([k]) => /^x-tollgate-/i.test(k));
    assert.deepEqual(leaked, [], 'X-Tollgate-* headers must not reach the provider');
    expectRow(await stack.row(m), {
      status: 'ok', provider: 'anthropic', model: MODEL, intent: m,
      team: 'support', tenant: 'globex', agent_class: 'tagged-agent',
      environment: 'staging',
    });
  });

  stack.it('a provider error mid-stream: the SDK\'s stream raises it, the call is still charged', async () => {
    const m = marker('an-midstream');
    const stream = client(stack, m).messages.stream({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: { 'x-fake-input-tokens': '500', 'x-fake-error-after': '4' } });
    const texts = [];
    stream.on('text', (t) => texts.push(t));
    await assert.rejects(stream.finalMessage(), (e) => e instanceof Anthropic.APIError &&
        e.error?.error?.type === 'overloaded_error' && /Overloaded/.test(e.message));
    assert.deepEqual(texts, ['tok tok '], 'the text before the error reaches the SDK');
    // message_start reported the input; the row keeps it and is charged,
    // marked an error whose output is estimated (the final usage never came).
    const row = await stack.row(m);
    expectRow(row, { stream: 1, status: 'error', http_status: 200, model: MODEL,
      input_tokens: 500, intent: m, usage_source: 'estimated',
      refusal_reason: 'stream_error:overloaded_error' });
    assert.ok(row.output_tokens >= 1, JSON.stringify(row));
    assert.equal(row.cost_nusd, costNusd(MODEL, { input: 500, output: row.output_tokens }));
  });

  stack.it('ANTHROPIC_BASE_URL alone points the SDK at tollgate', async () => {
    const m = marker('an-env');
    const saved = process.env.ANTHROPIC_BASE_URL;
    process.env.ANTHROPIC_BASE_URL = stack.base;
    try {
      const c = new Anthropic({
        apiKey: KEYS.anthropic,
        defaultHeaders: { 'X-Tollgate-Agent-Class': AGENT_CLASS, 'X-Tollgate-Intent': m },
      });
      const r = await c.messages.create({
        model: MODEL, max_tokens: 64, messages: [{ role: 'user', content: `hello ${m}` }],
      });
      assert.deepEqual(r.content, [{ type: 'text', text: TEXT }]);
    } finally {
      if (saved === undefined) delete process.env.ANTHROPIC_BASE_URL;
      else process.env.ANTHROPIC_BASE_URL = saved;
    }
    await stack.requestWith(m);
    expectRow(await stack.row(m), { status: 'ok', intent: m, agent_class: AGENT_CLASS });
  });
});
