// SPDX-License-Identifier: Apache-2.0
// The official `openai` npm SDK through tollgate: only baseURL and
// defaultHeaders change (docs/clients.md), and the SDK sees what the
// provider sent while the ledger holds the usage, priced.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  AGENT_CLASS, KEYS, costNusd, countingFetch, expectRow, marker, recHeader,
  sharedStack,
} from './lib/harness.mjs';

const SDK_VERSION = JSON.parse(await import('node:fs').then((fs) =>
  fs.readFileSync(new URL('./node_modules/openai/package.json', import.meta.url),
                  'utf8'))).version;

// The client exactly as docs/clients.md shows it, plus a per-test intent.
function client(stack, intent, extra = {}) {
  return new OpenAI({
    apiKey: KEYS.openai,
    baseURL: `${stack.base}/v1`,
    defaultHeaders: {
      'X-Tollgate-Agent-Class': AGENT_CLASS,
      'X-Tollgate-Team': 'openai-node',
      'X-Tollgate-Intent': intent,
    },
    ...extra,
  });
}

// Usage fakeprov reports for these knobs (fakeprov.c "Deterministic usage").
const KNOBS = {
  'x-fake-input-tokens': '1200',
  'x-fake-cached-tokens': '200',
  'x-fake-reasoning-tokens': '30',
  'x-fake-events': '4',
  'x-fake-event-tokens': '5',
};
const USAGE = { input: 1200, cached: 200, output: 4 * 5 + 30, reasoning: 30 };

function expectMetered(row, { model, stream, endpoint, usage = USAGE, intent }) {
  expectRow(row, {
    provider: 'openai',
    endpoint,
    model,
    stream: stream ? 1 : 0,
    status: 'ok',
    http_status: 200,
    usage_source: 'reported',
    input_tokens: usage.input,
    cached_input_tokens: usage.cached || 0,
    cache_write_tokens: 0,
    output_tokens: usage.output,
    reasoning_tokens: usage.reasoning || 0,
    cost_nusd: costNusd(model, usage),
    intent,
    team: 'openai-node',
    agent_class: AGENT_CLASS,
    environment: 'sdk-ci',
  });
}

describe('openai SDK', () => {
  const stack = sharedStack();

  stack.it('chat, not streamed: the completion and its usage as sent', async () => {
    const m = marker('oa-chat');
    const r = await client(stack, m).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, 'gpt-4o-mini');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.choices[0].message.content, 'tok tok '.repeat(4));
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.deepEqual(
        [r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens,
          r.usage.completion_tokens,
          r.usage.completion_tokens_details.reasoning_tokens],
        [1200, 200, 50, 30]);
    await stack.requestWith(m);
    expectMetered(await stack.row(m), {
      model: 'gpt-4o-mini', stream: false, endpoint: 'chat.completions', intent: m,
    });
  });

  stack.it('chat, streamed with include_usage: every chunk, then the usage chunk', async () => {
    const m = marker('oa-stream');
    const stream = await client(stack, m).chat.completions.create({
      model: 'gpt-4o-mini',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    // role chunk, 4 content chunks, finish chunk, usage chunk
    assert.equal(chunks.length, 7);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    assert.equal(chunks.slice(0, 6).map((c) => c.choices[0].delta.content || '')
        .join(''), 'tok tok '.repeat(4));
    assert.equal(chunks[5].choices[0].finish_reason, 'stop');
    const last = chunks[6];
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.prompt_tokens, 1200);
    assert.equal(last.usage.completion_tokens, 50);
    for (const c of chunks.slice(0, 6)) assert.equal(c.usage, null);
    expectMetered(await stack.row(m), {
      model: 'gpt-4o-mini', stream: true, endpoint: 'chat.completions', intent: m,
    });
  });

  stack.it('chat, streamed without include_usage: no usage chunk reaches the SDK, the ledger has the usage', async () => {
    const m = marker('oa-nousage');
    const stream = await client(stack, m).chat.completions.create({
      model: 'gpt-4o-mini',
      stream: true,
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(chunks.length, 6, 'role, 4 content and finish chunks only');
    for (const c of chunks) {
      assert.equal(c.choices.length, 1, `a chunk without choices reached the SDK: ${JSON.stringify(c)}`);
      assert.ok(!('usage' in c), `a chunk with a usage key reached the SDK: ${JSON.stringify(c)}`);
    }
    assert.equal(chunks.map((c) => c.choices[0].delta.content || '').join(''),
                 'tok tok '.repeat(4));
    // tollgate asked the provider for the usage on the client's behalf.
    const rec = await stack.requestWith(m);
    assert.equal(JSON.parse(rec.body).stream_options?.include_usage, true);
    expectMetered(await stack.row(m), {
      model: 'gpt-4o-mini', stream: true, endpoint: 'chat.completions', intent: m,
    });
  });

  stack.it('chat, streamed tool call: argument fragments assemble into the call', async () => {
    const m = marker('oa-tools');
    const tools = [{
      type: 'function',
      function: {
        name: 'lookup', description: 'look something up',
        parameters: { type: 'object', properties: { q: { type: 'string' } } },
      },
    }];
    const stream = client(stack, m).chat.completions.stream({
      model: 'gpt-4.1-mini',
      stream_options: { include_usage: true },
      tools,
      messages: [{ role: 'user', content: `look up ${m}` }],
    }, { headers: { ...KNOBS, 'x-fake-tool': 'lookup' } });
    const fragments = [];
    stream.on('tool_calls.function.arguments.delta', (e) => fragments.push(e.arguments_delta));
    const done = await stream.finalChatCompletion();
    // The call opens with empty arguments, then one fragment per chunk.
    assert.deepEqual(fragments, ['', '{"q":"tok tok ', 'tok tok ', 'tok tok ',
      'tok tok "}']);
    const msg = done.choices[0].message;
    assert.equal(done.choices[0].finish_reason, 'tool_calls');
    assert.equal(msg.tool_calls.length, 1);
    assert.equal(msg.tool_calls[0].type, 'function');
    assert.equal(msg.tool_calls[0].function.name, 'lookup');
    assert.match(msg.tool_calls[0].id, /^call_fake\d+_0$/);
    assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments),
                     { q: 'tok tok '.repeat(4) });
    assert.equal(done.usage.completion_tokens, 50);
    const rec = await stack.requestWith(m);
    assert.equal(JSON.parse(rec.body).tools[0].function.name, 'lookup');
    expectMetered(await stack.row(m), {
      model: 'gpt-4.1-mini', stream: true, endpoint: 'chat.completions', intent: m,
    });
  });

  stack.it('chat, not streamed, tool call: the call and its parsed arguments', async () => {
    const m = marker('oa-tool1');
    const r = await client(stack, m).chat.completions.create({
      model: 'gpt-4o-mini',
      tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }],
      messages: [{ role: 'user', content: `look up ${m}` }],
    }, { headers: { ...KNOBS, 'x-fake-tool': 'lookup' } });
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    const msg = r.choices[0].message;
    assert.equal(msg.content, null);
    assert.equal(msg.tool_calls[0].function.name, 'lookup');
    assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), { q: 'tok tok '.repeat(4) });
    expectMetered(await stack.row(m), {
      model: 'gpt-4o-mini', stream: false, endpoint: 'chat.completions', intent: m,
    });
  });

  stack.it('Responses API, streamed: events in order, usage in response.completed', async () => {
    const m = marker('oa-resp');
    const stream = await client(stack, m).responses.create({
      model: 'gpt-4o-mini',
      input: `hello ${m}`,
      stream: true,
    }, { headers: KNOBS });
    const types = [];
    let text = '';
    let completed;
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') completed = ev.response;
    }
    assert.deepEqual(types, [
      'response.created', 'response.in_progress', 'response.output_item.added',
      'response.content_part.added', 'response.output_text.delta',
      'response.output_text.delta', 'response.output_text.delta',
      'response.output_text.delta', 'response.output_text.done',
      'response.content_part.done', 'response.output_item.done',
      'response.completed']);
    assert.equal(text, 'tok tok '.repeat(4));
    assert.equal(completed.status, 'completed');
    assert.equal(completed.output[0].content[0].text, 'tok tok '.repeat(4));
    assert.deepEqual([completed.usage.input_tokens, completed.usage.output_tokens],
                     [1200, 50]);
    expectMetered(await stack.row(m), {
      model: 'gpt-4o-mini', stream: true, endpoint: 'responses', intent: m,
    });
  });

  stack.it('embeddings: vectors as sent, input tokens metered', async () => {
    const m = marker('oa-embed');
    const r = await client(stack, m).embeddings.create({
      model: 'text-embedding-3-small',
      input: [`first ${m}`, `second ${m}`],
      encoding_format: 'float',
    }, { headers: { 'x-fake-input-tokens': '640' } });
    assert.equal(r.data.length, 2);
    assert.deepEqual(r.data.map((d) => d.index), [0, 1]);
    assert.equal(r.data[0].embedding.length, 8);
    assert.equal(r.data[0].embedding[0], 0.0011);
    assert.equal(r.data[1].embedding[1], -0.0022);
    assert.deepEqual(r.usage, { prompt_tokens: 640, total_tokens: 640 });
    expectMetered(await stack.row(m), {
      model: 'text-embedding-3-small', stream: false, endpoint: 'embeddings',
      intent: m, usage: { input: 640, output: 0 },
    });
  });

  stack.it('headers: x-stainless-* and the key reach the provider, X-Tollgate-* tags land in the ledger only', async () => {
    const m = marker('oa-hdrs');
    const c = new OpenAI({
      apiKey: KEYS.openai,
      baseURL: `${stack.base}/v1`,
      organization: 'org-sdktest',
      defaultHeaders: {
        'X-Tollgate-Agent-Class': 'tagged-agent',
        'X-Tollgate-Team': 'search',
        'X-Tollgate-Tenant': 'acme',
        'X-Tollgate-Environment': 'staging',
      },
    });
    // A tag of one call goes in that call's request options.
    const r = await c.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: { 'X-Tollgate-Intent': m } });
    assert.equal(r.choices[0].message.content, 'tok tok '.repeat(3));
    const rec = await stack.requestWith(m);
    assert.equal(rec.path, '/v1/chat/completions');
    assert.deepEqual(recHeader(rec, 'authorization'), [`Bearer ${KEYS.openai}`]);
    assert.deepEqual(recHeader(rec, 'openai-organization'), ['org-sdktest']);
    assert.deepEqual(recHeader(rec, 'x-stainless-lang'), ['js']);
    assert.deepEqual(recHeader(rec, 'x-stainless-package-version'), [SDK_VERSION]);
    assert.deepEqual(recHeader(rec, 'x-stainless-runtime'), ['node']);
    assert.deepEqual(recHeader(rec, 'x-stainless-runtime-version'), [process.version]);
    assert.deepEqual(recHeader(rec, 'x-stainless-retry-count'), ['0']);
    assert.equal(recHeader(rec, 'x-stainless-os').length, 1);
    assert.equal(recHeader(rec, 'x-stainless-arch').length, 1);
    assert.match(recHeader(rec, 'user-agent')[0] || '', /^OpenAI\/JS /);
    const leaked = rec.headers.filter(([k]) => /^x-tollgate-/i.test(k));
    assert.deepEqual(leaked, [], 'X-Tollgate-* headers must not reach the provider');
    expectRow(await stack.row(m), {
      status: 'ok', intent: m, team: 'search', tenant: 'acme',
      agent_class: 'tagged-agent', environment: 'staging',
    });
  });

  stack.it('a provider error mid-stream: the SDK\'s iterator raises it, the call is still charged', async () => {
    const m = marker('oa-midstream');
    const stream = await client(stack, m).chat.completions.create({
      model: 'gpt-4o-mini',
      stream: true,
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: { 'x-fake-input-tokens': '800', 'x-fake-error-after': '3' } });
    const chunks = [];
    await assert.rejects(async () => {
      for await (const c of stream) chunks.push(c);
    }, (e) => e instanceof OpenAI.APIError && e.message === 'fakeprov: injected mid-stream error');
    assert.equal(chunks.length, 3, 'the chunks before the error reach the SDK');
    assert.equal(chunks.map((c) => c.choices[0].delta.content || '').join(''), 'tok tok '.repeat(2));
    // No usage chunk came: the row is estimated, never free. The call was
    // answered 200; the error came inside the stream, so the row is an error.
    const row = await stack.row(m);
    expectRow(row, { stream: 1, status: 'error', http_status: 200, usage_source: 'estimated',
      model: 'gpt-4o-mini', intent: m, refusal_reason: 'stream_error:server_error' });
    assert.ok(row.input_tokens > 0 && row.output_tokens > 0, JSON.stringify(row));
    assert.equal(row.cost_nusd, costNusd('gpt-4o-mini',
        { input: row.input_tokens, output: row.output_tokens }));
  });

  stack.it('OPENAI_BASE_URL alone points the SDK at tollgate', async () => {
    const m = marker('oa-env');
    const saved = process.env.OPENAI_BASE_URL;
    process.env.OPENAI_BASE_URL = `${stack.base}/v1`;
    try {
      const c = new OpenAI({
        apiKey: KEYS.openai,
        defaultHeaders: { 'X-Tollgate-Agent-Class': AGENT_CLASS, 'X-Tollgate-Intent': m },
      });
      const r = await c.chat.completions.create({
        model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hello ${m}` }],
      });
      assert.equal(r.choices[0].message.content, 'tok tok '.repeat(3));
    } finally {
      if (saved === undefined) delete process.env.OPENAI_BASE_URL;
      else process.env.OPENAI_BASE_URL = saved;
    }
    await stack.requestWith(m);
    expectRow(await stack.row(m), { status: 'ok', intent: m, agent_class: AGENT_CLASS });
  });

  stack.it('models list passes through unmetered', async () => {
    const f = countingFetch();
    const c = client(stack, marker('oa-models'), { fetch: f });
    const page = await c.models.list();
    assert.deepEqual(page.data.map((d) => d.id), ['gpt-4o']);
    assert.equal(f.calls, 1);
  });
});
