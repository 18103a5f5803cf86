// SPDX-License-Identifier: Apache-2.0
// tollgate's refusals as the SDKs see them: a typed error carrying
// tollgate's message, raised after exactly one attempt (no SDK retry), with
// nothing forwarded to the provider.
//
// Policy refusals go in this file the same way: a stack of their own with
// the policy in extraYaml, then expectRefused(). A hard cap, for example:
//
//   it('openai: a hard cap is a RateLimitError, not retried', async (t) => {
//     const s = await ownStack(t, { extraYaml: `policies:
//     - { name: cap, match: { agent_class: ${AGENT_CLASS} }, window: day, hard_cap_usd: 0.001 }
//   ` });
//     const tags = { 'X-Tollgate-Agent-Class': AGENT_CLASS };
//     // ... calls that spend the cap, then:
//     const { err } = await expectRefused(s, (f) => openai(s, tags, f).chat.completions
//         .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }),
//     { status: 429, name: 'RateLimitError', message: /tollgate: / });
//     assert.equal(err.code, 'insufficient_quota');
//   });
//
// A kill is the same with status 403 and PermissionDeniedError. A rate limit
// is the opposite: countingFetch() shows the SDK's second attempt, after
// retry-after, succeeding.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import {
  AGENT_CLASS, KEYS, expectRefused, expectRow, marker, sharedStack,
} from './lib/harness.mjs';

// Clients as in docs/clients.md, with the default retry settings; `tags`
// replaces the tag headers (so a test can leave out a required one), `f` is
// the fetch that counts the SDK's attempts.
function openai(s, tags, f) {
  return new OpenAI({
    apiKey: KEYS.openai, baseURL: `${s.base}/v1`, defaultHeaders: tags, fetch: f,
  });
}

function anthropic(s, tags, f) {
  return new Anthropic({
    apiKey: KEYS.anthropic, baseURL: s.base, defaultHeaders: tags, fetch: f,
  });
}

// @google/genai has no fetch option; its attempts are counted at tollgate.
function gemini(s, tags) {
  return new GoogleGenAI({
    apiKey: KEYS.gemini, httpOptions: { baseUrl: s.base, headers: tags },
  });
}

const NO_AGENT_CLASS = /tollgate: the tag agent_class is required: send X-Tollgate-Agent-Class/;

describe('refusals', () => {
  const s = sharedStack();

  s.it('openai: a missing required tag is a BadRequestError with tollgate\'s message', async () => {
    const m = marker('rf-oa');
    const { err, call } = await expectRefused(s, (f) => openai(s, { 'X-Tollgate-Intent': m }, f)
        .chat.completions.create({
          model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hello ${m}` }],
        }), { status: 400, name: 'BadRequestError', message: NO_AGENT_CLASS });
    assert.equal(err.status, 400);
    assert.equal(err.code, 'missing_tag');
    assert.equal(err.type, 'invalid_request_error');
    assert.equal(err.headers.get('x-tollgate-request-id'), call.id);
    // The SDK's own request id is tollgate's, not null.
    assert.equal(err.requestID, call.id);
    expectRow(await s.row(m), { status: 'refused', refusal_reason: 'missing_tag',
      http_status: 400, cost_nusd: 0, input_tokens: 0, output_tokens: 0 });
  });

  s.it('openai: a stream refused before it starts raises from create()', async () => {
    const m = marker('rf-oa-stream');
    await expectRefused(s, async (f) => {
      const stream = await openai(s, { 'X-Tollgate-Intent': m }, f).chat.completions.create({
        model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: `hello ${m}` }],
      });
      for await (const c of stream) assert.fail(`got a chunk: ${JSON.stringify(c)}`);
    }, { status: 400, name: 'BadRequestError', message: NO_AGENT_CLASS });
  });

  s.it('openai: an unknown path is a NotFoundError and never forwarded', async () => {
    const tags = { 'X-Tollgate-Agent-Class': AGENT_CLASS };
    const { err, call } = await expectRefused(s, (f) => openai(s, tags, f).files.list(),
                                              { status: 404, name: 'NotFoundError' });
    assert.equal(err.status, 404);
    assert.match(err.message, /^404 tollgate: /);
    assert.equal(call.path, '/v1/files');
  });

  s.it('anthropic: a missing required tag is a BadRequestError with tollgate\'s message', async () => {
    const m = marker('rf-an');
    const { err, call } = await expectRefused(s, (f) => anthropic(s, { 'X-Tollgate-Intent': m }, f)
        .messages.create({
          model: 'claude-sonnet-4-6', max_tokens: 64,
          messages: [{ role: 'user', content: `hello ${m}` }],
        }), { status: 400, name: 'BadRequestError', message: NO_AGENT_CLASS });
    assert.equal(err.requestID, call.id);
    assert.equal(err.status, 400);
    assert.equal(err.error.type, 'error');
    assert.equal(err.error.error.type, 'invalid_request_error');
    expectRow(await s.row(m), { status: 'refused', refusal_reason: 'missing_tag',
      provider: 'anthropic', cost_nusd: 0 });
  });

  s.it('anthropic: a streamed call refused before it starts raises from the stream', async () => {
    const m = marker('rf-an-stream');
    await expectRefused(s, (f) => anthropic(s, { 'X-Tollgate-Intent': m }, f)
        .messages.stream({
          model: 'claude-sonnet-4-6', max_tokens: 64,
          messages: [{ role: 'user', content: `hello ${m}` }],
        }).finalMessage(), { status: 400, name: 'BadRequestError', message: NO_AGENT_CLASS });
  });

  s.it('anthropic: an unknown path is a NotFoundError and never forwarded', async () => {
    const tags = { 'X-Tollgate-Agent-Class': AGENT_CLASS };
    const { err, call } = await expectRefused(
        s, (f) => anthropic(s, tags, f).messages.batches.list(),
        { status: 404, name: 'NotFoundError' });
    assert.equal(err.error.error.type, 'not_found_error');
    assert.equal(call.path.split('?')[0], '/v1/messages/batches');
  });

  s.it('gemini: a missing required tag is a ClientError with tollgate\'s message', async () => {
    const m = marker('rf-gm');
    const { err } = await expectRefused(s, () => gemini(s, { 'X-Tollgate-Intent': m })
        .models.generateContent({ model: 'gemini-2.5-flash', contents: `hello ${m}` }),
    { status: 400, name: 'ClientError', message: NO_AGENT_CLASS, counted: false });
    // @google/genai puts the status and the whole error body in the message.
    assert.match(err.message, /^got status: 400 /);
    const body = JSON.parse(err.message.slice(err.message.indexOf('{')));
    assert.equal(body.error.code, 400);
    assert.equal(body.error.status, 'INVALID_ARGUMENT');
    expectRow(await s.row(m), { status: 'refused', refusal_reason: 'missing_tag',
      provider: 'gemini', cost_nusd: 0 });
  });

  s.it('gemini: a refused stream raises from generateContentStream', async () => {
    const m = marker('rf-gm-stream');
    await expectRefused(s, async () => {
      const stream = await gemini(s, { 'X-Tollgate-Intent': m }).models
          .generateContentStream({ model: 'gemini-2.5-flash', contents: `hello ${m}` });
      for await (const c of stream) assert.fail(`got a chunk: ${JSON.stringify(c)}`);
    }, { status: 400, name: 'ClientError', message: NO_AGENT_CLASS, counted: false });
  });

  s.it('gemini: an unknown path is a ClientError 404 and never forwarded', async () => {
    const tags = { 'X-Tollgate-Agent-Class': AGENT_CLASS };
    const { err, call } = await expectRefused(
        s, () => gemini(s, tags).models.get({ model: 'gemini-2.5-flash' }),
        { status: 404, name: 'ClientError', message: /^got status: 404 /, counted: false });
    assert.match(err.message, /"status":"NOT_FOUND"/);
    assert.equal(call.path.split('?')[0], '/v1beta/models/gemini-2.5-flash');
  });
});
