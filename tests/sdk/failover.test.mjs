// SPDX-License-Identifier: Apache-2.0
// Failover as the OpenAI SDK sees it (docs/spend-less.md, Failover and
// retries): the upstream its call goes to answers 503, tollgate sends the
// call to the rule's fallback, and the SDK gets an ordinary answer, with
// one request of its own (its retries are off, so what is seen is
// tollgate's failover, not the SDK's), streamed or not. The fallback got
// its own key, never the client's; the row says two attempts and names
// the 503.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  AGENT_CLASS, KEYS, countingFetch, expectRow, marker, recHeader,
  sharedStack,
} from './lib/harness.mjs';

const BACKUP_KEY = 'sk-CANARY-sdk-backup-6d13';
process.env.TG_SDK_BACKUP_KEY = BACKUP_KEY;

const KNOBS = { 'x-fake-input-tokens': '100', 'x-fake-events': '2',
  'x-fake-event-tokens': '5' };

describe('failover', () => {
  // fakeprov fails every request that carries the client's key, the
  // primary's; the backup's requests carry the backup's own. The backup
  // is of the primary's type, as a fallback must be.
  const stack = sharedStack({
    fakeprovArgs: ['--fail-status', '503', '--fail-key', KEYS.openai],
    upstreamsYaml: '  backup: { type: openai, base_url: '
      + '"FPBASE", api_key_env: TG_SDK_BACKUP_KEY }\n',
    extraYaml: `routing:
  - name: to-backup
    match: { upstream: openai }
    fallback: [backup]
`,
  });

  function client(m, f) {
    return new OpenAI({
      apiKey: KEYS.openai, baseURL: `${stack.base}/v1`, maxRetries: 0,
      fetch: f,
      defaultHeaders: { 'X-Tollgate-Agent-Class': AGENT_CLASS,
        'X-Tollgate-Intent': m },
    });
  }

  function expectFailedOver(reqs, row) {
    assert.equal(reqs.length, 2, 'the primary, then the backup');
    assert.deepEqual(recHeader(reqs[0], 'authorization'),
      [`Bearer ${KEYS.openai}`]);
    assert.deepEqual(recHeader(reqs[1], 'authorization'),
      [`Bearer ${BACKUP_KEY}`]);
    expectRow(row, { status: 'ok', upstream: 'backup', attempts: 2,
      http_status: 200 });
    const log = JSON.parse(row.attempt_log);
    assert.equal(log.length, 1);
    assert.equal(log[0].upstream, 'openai');
    assert.equal(log[0].status, 503);
  }

  stack.it('a failed-over completion is an ordinary answer', async () => {
    const m = marker('fo');
    const f = countingFetch();
    const { data: r, response } = await client(m, f).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS }).withResponse();
    assert.equal(f.calls, 1, 'the SDK sent one request');
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.content, 'tok tok '.repeat(2));
    assert.equal(response.headers.get('x-tollgate-attempts'), '2');
    expectFailedOver(stack.requestsWith(m), await stack.row(m));
  });

  stack.it('a failed-over stream reads to its end', async () => {
    const m = marker('fos');
    const f = countingFetch();
    const stream = await client(m, f).chat.completions.create({
      model: 'gpt-4o-mini', stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: `hello ${m}` }],
    }, { headers: KNOBS });
    let text = '';
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(f.calls, 1);
    assert.equal(text, 'tok tok '.repeat(2));
    assert.equal(usage.completion_tokens, 10);
    expectFailedOver(stack.requestsWith(m), await stack.row(m));
  });
});
