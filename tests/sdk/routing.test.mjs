// SPDX-License-Identifier: Apache-2.0
// Routing rules as the SDKs see them (docs/spend-less.md): a call a rule
// sends as a cheaper model is an ordinary answer to the SDK, streamed or
// not: no error, no retry, the served model's own `model`, the rule named
// in x-tollgate-route; the provider got the rewritten model, and the
// ledger row says what was asked and what the rule saved.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import {
  AGENT_CLASS, KEYS, costNusd, countingFetch, expectRow, marker, sharedStack,
} from './lib/harness.mjs';

const RULES = `routing:
  - name: small-steps
    match: { agent_class: ${AGENT_CLASS}, model: "gpt-4o", provider: openai }
    model: gpt-4o-mini
  - name: haiku
    match: { model: claude-sonnet-4-6, provider: anthropic }
    model: claude-haiku-4-5
`;

const KNOBS = { 'x-fake-input-tokens': '1000', 'x-fake-events': '4',
  'x-fake-event-tokens': '5' };
const USAGE = { input: 1000, output: 20 };

function expectRouted(row, asked, sent, rule) {
  const cost = costNusd(sent, USAGE);
  expectRow(row, { model: sent, routed_from: asked, routed_rule: rule,
    status: 'ok', cost_nusd: cost,
    saved_nusd: costNusd(asked, USAGE) - cost });
  assert.ok(row.saved_nusd > 0, JSON.stringify(row));
}

describe('routing', () => {
  const stack = sharedStack({ extraYaml: RULES });

  stack.it('openai: a routed call is an ordinary completion', async () => {
    const m = marker('rt-oa');
    const f = countingFetch();
    const client = new OpenAI({
      apiKey: KEYS.openai, baseURL: `${stack.base}/v1`, fetch: f,
      defaultHeaders: { 'X-Tollgate-Agent-Class': AGENT_CLASS,
        'X-Tollgate-Intent': m },
    });
    const { data: r, response } = await client.chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS }).withResponse();
    assert.equal(f.calls, 1);
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, 'gpt-4o-mini', 'the served model, as it answered');
    assert.equal(r.choices[0].message.content, 'tok tok '.repeat(4));
    assert.equal(r.usage.prompt_tokens, 1000);
    assert.equal(response.headers.get('x-tollgate-route'), 'small-steps');
    const rec = await stack.requestWith(m);
    assert.equal(JSON.parse(rec.body).model, 'gpt-4o-mini');
    expectRouted(await stack.row(m), 'gpt-4o', 'gpt-4o-mini', 'small-steps');
  });

  stack.it('openai: a routed stream reads to its end', async () => {
    const m = marker('rt-oas');
    const client = new OpenAI({
      apiKey: KEYS.openai, baseURL: `${stack.base}/v1`,
      defaultHeaders: { 'X-Tollgate-Agent-Class': AGENT_CLASS,
        'X-Tollgate-Intent': m },
    });
    const stream = await client.chat.completions.create({
      model: 'gpt-4o', stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS });
    let text = '';
    let usage = null;
    const models = new Set();
    for await (const chunk of stream) {
      models.add(chunk.model);
      if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'tok tok '.repeat(4));
    assert.deepEqual([...models], ['gpt-4o-mini']);
    assert.equal(usage.completion_tokens, 20);
    expectRouted(await stack.row(m), 'gpt-4o', 'gpt-4o-mini', 'small-steps');
  });

  stack.it('anthropic: a routed message is an ordinary message', async () => {
    const m = marker('rt-an');
    const client = new Anthropic({
      apiKey: KEYS.anthropic, baseURL: stack.base,
      defaultHeaders: { 'X-Tollgate-Agent-Class': AGENT_CLASS,
        'X-Tollgate-Intent': m },
    });
    const r = await client.messages.create({
      model: 'claude-sonnet-4-6', max_tokens: 64,
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS });
    assert.equal(r.type, 'message');
    assert.equal(r.model, 'claude-haiku-4-5');
    assert.equal(r.usage.output_tokens, 20);
    expectRouted(await stack.row(m), 'claude-sonnet-4-6', 'claude-haiku-4-5',
                 'haiku');
  });
});
