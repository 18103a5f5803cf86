// SPDX-License-Identifier: Apache-2.0
// Key bindings with the keys as each SDK sends them: a bound provider key
// fixes tags that the SDK's default headers cannot override, wherever the
// SDK puts the key (OpenAI and this Anthropic release: Authorization
// Bearer; Gemini: x-goog-api-key).

import { it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { KEYS, expectRow, marker, ownStack } from './lib/harness.mjs';

const sha256 = (s) => crypto.createHash('sha256').update(s).digest('hex');

it('a bound key fixes team and agent class for every SDK; headers set the rest', async (t) => {
  const s = await ownStack(t, {
    attribution: false,
    extraYaml: `attribution:
  require: [agent_class]
  keys:
    - { key_sha256: "${sha256(KEYS.openai)}", tags: { team: bound-oa, agent_class: bound } }
    - { key_sha256: "${sha256(KEYS.anthropic)}", tags: { team: bound-an, agent_class: bound } }
    - { key_sha256: "${sha256(KEYS.gemini)}", tags: { team: bound-gm, agent_class: bound } }
`,
  });
  try {
    // The headers try to set the bound tags too; the binding wins.
    const tags = (m) => ({
      'X-Tollgate-Team': 'spoofed', 'X-Tollgate-Agent-Class': 'spoofed',
      'X-Tollgate-Tenant': 'acme', 'X-Tollgate-Intent': m,
    });
    const mo = marker('key-oa');
    const ma = marker('key-an');
    const mg = marker('key-gm');
    await new OpenAI({ apiKey: KEYS.openai, baseURL: `${s.base}/v1`, defaultHeaders: tags(mo) })
        .chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: mo }] });
    await new Anthropic({ apiKey: KEYS.anthropic, baseURL: s.base, defaultHeaders: tags(ma) })
        .messages.create({ model: 'claude-sonnet-4-6', max_tokens: 64,
          messages: [{ role: 'user', content: ma }] });
    await new GoogleGenAI({ apiKey: KEYS.gemini, httpOptions: { baseUrl: s.base, headers: tags(mg) } })
        .models.generateContent({ model: 'gemini-2.5-flash', contents: mg });
    for (const [m, team, key] of [[mo, 'bound-oa', KEYS.openai], [ma, 'bound-an', KEYS.anthropic],
      [mg, 'bound-gm', KEYS.gemini]]) {
      expectRow(await s.row(m), { status: 'ok', team, agent_class: 'bound', tenant: 'acme',
        intent: m, key_fingerprint: sha256(key).slice(0, 16) });
    }
    // Without a bound key, the required agent_class must come from a header.
    await assert.rejects(new OpenAI({ apiKey: 'sk-unbound', baseURL: `${s.base}/v1`,
      defaultHeaders: { 'X-Tollgate-Intent': marker('key-none') } })
        .chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.BadRequestError && /agent_class is required/.test(e.message));
  } catch (e) {
    s.failed = true;
    throw e;
  }
});
