// SPDX-License-Identifier: Apache-2.0
//
// Harness of the SDK suite: the official OpenAI, Anthropic and Google SDKs
// talk to a real tollgate, whose upstream is fakeprov, all on 127.0.0.1
// ephemeral ports. Node standard library only (node >= 18).
//
//   const stack = sharedStack(opts)        inside describe(): one stack
//                                          for the block's tests
//   const stack = await ownStack(t, opts)  inside a test: its own stack
//       fakeprov + tollgate in a temp dir, stopped (tollgate by SIGTERM,
//       which must exit 0) at the end. opts.extraYaml is appended to the
//       generated config at top level (a policies: block, ...);
//       opts.attribution = false drops the default attribution block.
//       opts.adminYaml is added under admin: (indented lines, e.g.
//       "  token_env: NAME\n").
//       opts.upstreamsYaml adds lines under upstreams: (FPBASE stands for
//       fakeprov's base URL); opts.fakeprovArgs are fakeprov's own
//       (--fail-status, --fail-key, ...).
//   stack.base            http://127.0.0.1:PORT of the proxy
//   stack.admin           http://127.0.0.1:PORT of the admin API
//   stack.requestsWith(m) fakeprov's record of every request whose body
//                         contains marker m (method, path, headers, body);
//                         await stack.requestWith(m): the one such request;
//                         stack.records(): the whole record
//   recHeader(rec, name)  a header's values in such a request record
//   stack.calls()         tollgate's per-call log lines, parsed
//   stack.row(intent)     the settled ledger row of the one call tagged
//                         with intent (waits for it); stack.rows(where)
//   expectRow(row, want)  assert a subset of a row's columns
//   costNusd(model, u)    the cost of usage u, from config/prices.yaml,
//                         computed here independently of tollgate
//   marker()              a unique marker, also usable as a tag value
//   countingFetch()       a fetch that counts the SDK's attempts
//   waitFor(pred, ms, what), sleep(ms)
//
// Environment (set by ctest): TOLLGATE_BIN, FAKEPROV_BIN, TG_SOURCE_DIR.
// TG_KEEP_TMP=1 keeps the temp dirs; logs are printed when a test fails.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR =
    process.env.TG_SOURCE_DIR || path.resolve(here, '..', '..', '..');

function findBin(env, name) {
  if (process.env[env]) return process.env[env];
  for (const d of [process.env.TG_BUILD_DIR, path.join(SOURCE_DIR, 'build')]) {
    for (const sub of ['', 'tests']) {
      const p = d && path.join(d, sub, name);
      if (p && fs.existsSync(p)) return p;
    }
  }
  throw new Error(`${env} is not set and no build/${name} was found`);
}

// Keys the SDKs send. tollgate must never log them: every tollgate log is
// searched for "CANARY" when its stack stops.
export const KEYS = {
  openai: 'sk-CANARY-sdk-openai-5e1f',
  anthropic: 'sk-ant-CANARY-sdk-77c0',
  gemini: 'AIzaCANARYsdkgemini31',
};

// Tags every well-behaved client of the default config sends.
export const AGENT_CLASS = 'sdk-test';

let seq = 0;
export function marker(prefix = 'm') {
  seq += 1;
  return `${prefix}-${process.pid}-${Date.now() % 1e8}-${seq}z`;
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor(pred, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

class Proc {
  constructor(name, argv, dir) {
    this.name = name;
    this.argv = argv;
    this.outPath = path.join(dir, `${name}.stdout`);
    this.errPath = path.join(dir, `${name}.stderr`);
    const out = fs.openSync(this.outPath, 'w');
    const err = fs.openSync(this.errPath, 'w');
    this.child = spawn(argv[0], argv.slice(1), {
      cwd: dir, stdio: ['ignore', out, err],
    });
    fs.closeSync(out);
    fs.closeSync(err);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, sig) => {
        this.code = code;
        this.sig = sig;
        resolve();
      });
      this.child.on('error', (e) => {
        this.code = -1;
        this.spawnError = e;
        resolve();
      });
    });
  }

  alive() {
    return this.code === undefined;
  }

  stdout() {
    return fs.readFileSync(this.outPath, 'utf8');
  }

  stderr() {
    return fs.readFileSync(this.errPath, 'utf8');
  }

  async waitLine(re, stream, timeoutMs = 15000) {
    return waitFor(() => {
      const m = re.exec(stream === 'out' ? this.stdout() : this.stderr());
      if (m) return m;
      if (!this.alive()) {
        throw new Error(`${this.name} exited (code ${this.code}, signal ` +
                        `${this.sig}) before logging ${re}\n${this.describe()}`);
      }
      return null;
    }, timeoutMs, `${this.name} to log ${re}`);
  }

  // SIGTERM and wait; returns the exit code (null if it had to be killed).
  async stop(timeoutMs = 30000) {
    if (!this.alive()) return this.code;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(t);
    return this.sig ? null : this.code;
  }

  describe() {
    let s = `----- ${this.name}: ${this.argv.join(' ')}\n`;
    for (const [label, p] of [['stdout', this.outPath], ['stderr', this.errPath]]) {
      let text = '';
      try {
        text = fs.readFileSync(p, 'utf8');
      } catch {
        continue;
      }
      if (text.length > 100000) text = `[...]\n${text.slice(-100000)}`;
      if (text) s += `--- ${label}:\n${text}\n`;
    }
    return s;
  }
}

// Every process still running when node exits (a crashed test) is killed.
const live = new Set();
process.on('exit', () => {
  for (const p of live) if (p.alive()) p.child.kill('SIGKILL');
});

function yamlConfig(fpBase, extraYaml, adminYaml = '', upstreamsYaml = '') {
  const prices = path.join(SOURCE_DIR, 'config', 'prices.yaml');
  return `listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
${adminYaml}ledger:
  path: data/ledger.db
prices: ${JSON.stringify(prices)}
upstreams:
  openai: { type: openai, base_url: "${fpBase}" }
  anthropic: { type: anthropic, base_url: "${fpBase}" }
  gemini: { type: gemini, base_url: "${fpBase}" }
${upstreamsYaml.replaceAll('FPBASE', fpBase)}${extraYaml}
`;
}

// The attribution block of the default config: agent_class is required,
// environment has a default. Replace it with extraYaml's own by passing
// { attribution: false }.
export const DEFAULT_ATTRIBUTION = `attribution:
  defaults: { environment: sdk-ci }
  require: [agent_class]
`;

// Start fakeprov and tollgate. stack.cleanup() stops them (tollgate by
// SIGTERM, which must exit 0), checks tollgate logged no key, prints the
// logs if stack.failed, and removes the temp dir.
export async function startStack(opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-sdk-'));
  const recordPath = path.join(dir, 'fakeprov.record.jsonl');
  const procs = [];
  const stack = { dir, procs };

  stack.cleanup = async () => {
    const problems = [];
    const tg = stack.tollgate;
    if (tg) {
      if (tg.stderr().includes('CANARY')) {
        problems.push('tollgate logged a key (CANARY found in its stderr)');
      }
      const rc = await tg.stop();
      if (rc !== 0) {
        problems.push(`tollgate: SIGTERM gave exit code ${rc} (expected 0)`);
      }
    }
    for (const p of procs) {
      await p.stop(5000);
      live.delete(p);
    }
    if (problems.length || stack.failed || process.env.TG_TEST_VERBOSE) {
      process.stderr.write(stack.describe() + '\n');
    }
    if (!process.env.TG_KEEP_TMP && !problems.length && !stack.failed) {
      fs.rmSync(dir, { recursive: true, force: true });
    } else {
      process.stderr.write(`kept temp dir ${dir}\n`);
    }
    if (problems.length) throw new Error(problems.join('; '));
  };

  stack.describe = () => {
    let s = `====== SDK stack in ${dir}\n`;
    for (const p of procs) s += p.describe();
    try {
      s += `--- tollgate.yaml:\n${fs.readFileSync(path.join(dir, 'tollgate.yaml'), 'utf8')}`;
      const rec = fs.readFileSync(recordPath, 'utf8').split('\n').slice(-30);
      s += `--- fakeprov record (last lines):\n${rec.map((l) => l.slice(0, 600)).join('\n')}\n`;
    } catch {
      // nothing recorded yet
    }
    return s;
  };

  try {
    await launch(stack, recordPath, opts);
  } catch (e) {
    stack.failed = true;
    await stack.cleanup().catch(() => {});
    throw e;
  }
  return stack;
}

async function launch(stack, recordPath, opts) {
  const { dir, procs } = stack;
  const fp = new Proc('fakeprov', [findBin('FAKEPROV_BIN', 'fakeprov'),
    '--listen', '127.0.0.1:0', '--record', recordPath,
    ...(opts.fakeprovArgs || [])], dir);
  procs.push(fp);
  live.add(fp);
  const fm = await fp.waitLine(/fakeprov listening on 127\.0\.0\.1:(\d+) http/, 'out');
  stack.fakeprov = fp;
  stack.fakeprovBase = `http://127.0.0.1:${fm[1]}`;

  const extra = (opts.attribution === false ? '' : DEFAULT_ATTRIBUTION) +
      (opts.extraYaml || '');
  const cfgPath = path.join(dir, 'tollgate.yaml');
  fs.writeFileSync(cfgPath, yamlConfig(stack.fakeprovBase, extra,
      opts.adminYaml || '', opts.upstreamsYaml || ''));
  const tg = new Proc('tollgate', [findBin('TOLLGATE_BIN', 'tollgate'), '-d',
    '-c', cfgPath], dir);
  procs.push(tg);
  live.add(tg);
  stack.tollgate = tg;
  const pm = await tg.waitLine(/proxy listening on 127\.0\.0\.1:(\d+)/, 'err');
  const am = await tg.waitLine(/admin listening on 127\.0\.0\.1:(\d+)/, 'err');
  stack.base = `http://127.0.0.1:${pm[1]}`;
  stack.admin = `http://127.0.0.1:${am[1]}`;
  stack.ledgerPath = path.join(dir, 'data', 'ledger.db');

  // fakeprov's record: one JSON object per line.
  stack.records = () => {
    let text = '';
    try {
      text = fs.readFileSync(recordPath, 'utf8');
    } catch {
      return [];
    }
    const out = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // a line being written
      }
    }
    return out;
  };
  stack.requestsWith = (m) => stack.records().filter(
      (r) => r.event === 'request' && (r.body || '').includes(m));
  stack.requestWith = async (m) => {
    const found = await waitFor(() => {
      const rs = stack.requestsWith(m);
      return rs.length ? rs : null;
    }, 10000, `fakeprov to record a request carrying ${m}`);
    assert.equal(found.length, 1,
                 `exactly one request carrying ${m} should reach fakeprov`);
    return found[0];
  };

  // tollgate's per-call log lines: every call that reached the proxy,
  // forwarded or refused, in order.
  stack.calls = () => [...stack.tollgate.stderr().matchAll(
      /session (\d+): (\S+) (\S+) upstream=(\S+) status=(\d+) .*? id=(\S+) reason=(\S+)/g)]
      .map((m) => ({ method: m[2], path: m[3], upstream: m[4], status: Number(m[5]),
        id: m[6], reason: m[7] }));

  stack.rows = (where) => ledgerQuery(stack.ledgerPath,
      `SELECT * FROM calls WHERE ${where} ORDER BY started_at, id`);
  // The settled row of the one call tagged intent=m.
  stack.row = async (m) => {
    assert.match(m, /^[A-Za-z0-9._:-]+$/);
    let last = [];
    try {
      return await waitFor(() => {
        if (!fs.existsSync(stack.ledgerPath)) return null;
        last = stack.rows(`intent = '${m}'`);
        return last.length === 1 && last[0].status !== 'in_flight' ? last[0] : null;
      }, 10000, `the ledger row of intent ${m}`);
    } catch (e) {
      throw new Error(`${e.message}; rows with that intent: ${JSON.stringify(last)}`);
    }
  };
}

// A stack shared by the tests of one describe() block: started before the
// first, stopped after the last. Call it synchronously inside describe();
// the returned object is filled in by then. Its it() marks the stack failed
// when a test fails, so the logs are printed.
export function sharedStack(opts = {}) {
  const holder = {};
  before(async () => {
    Object.assign(holder, await startStack(opts));
  });
  after(async () => {
    if (holder.cleanup) await holder.cleanup();
  });
  holder.it = (name, fn) => it(name, async (t) => {
    try {
      return await fn(t);
    } catch (e) {
      holder.failed = true;
      throw e;
    }
  });
  return holder;
}

// A stack of one test's own, e.g. with a policy in extraYaml:
//   const s = await ownStack(t, { extraYaml: 'policies:\n  - ...' });
export async function ownStack(t, opts = {}) {
  const s = await startStack(opts);
  t.after(s.cleanup);
  return s;
}

// The ledger, read with the sqlite3 command-line shell (read-only).
export function ledgerQuery(dbPath, sql) {
  const out = execFileSync('sqlite3', ['-readonly', '-json', dbPath, sql], {
    encoding: 'utf8', timeout: 10000,
  });
  return out.trim() ? JSON.parse(out) : [];
}

export function expectRow(row, want, what = 'ledger row') {
  const got = {};
  for (const k of Object.keys(want)) got[k] = row[k];
  assert.deepEqual(got, want, `${what}: ${JSON.stringify(row)}`);
}

// Prices, read from config/prices.yaml independently of tollgate: USD per
// 1M tokens as exact decimals -> integer pico-USD per token.
function picoPerToken(s) {
  const m = /^(\d+)(?:\.(\d{1,6}))?$/.exec(s);
  if (!m) throw new Error(`bad price ${s}`);
  return BigInt(m[1]) * 1000000n + BigInt((m[2] || '').padEnd(6, '0'));
}

let priceTable;
function prices() {
  if (priceTable) return priceTable;
  priceTable = {};
  const text = fs.readFileSync(path.join(SOURCE_DIR, 'config', 'prices.yaml'), 'utf8');
  let inModels = false;
  let cur = null;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\s+#.*$/, '').replace(/^#.*$/, '');
    if (!line.trim()) continue;
    if (/^\S/.test(line)) {
      inModels = /^models:\s*$/.test(line);
      cur = null;
      continue;
    }
    if (!inModels) continue;
    let m = /^ {2}([^\s:]+):\s*$/.exec(line);
    if (m) {
      cur = priceTable[m[1]] = {};
      continue;
    }
    m = /^ {4}(\w+):\s*(\S+)\s*$/.exec(line);
    if (m && cur) cur[m[1]] = m[2];
  }
  return priceTable;
}

// Nano-USD of usage u = { input, cached, cacheWrite, output } (input
// includes cached and cache-write tokens, as in the ledger), rounded up.
export function costNusd(model, u) {
  const p = prices()[model];
  assert.ok(p, `model ${model} is not in config/prices.yaml`);
  const rin = picoPerToken(p.input);
  const rcached = p.cached_input ? picoPerToken(p.cached_input) : rin;
  const rwrite = p.cache_write ? picoPerToken(p.cache_write) : rin;
  const rout = picoPerToken(p.output);
  const cached = BigInt(u.cached || 0);
  const write = BigInt(u.cacheWrite || 0);
  const pico = (BigInt(u.input) - cached - write) * rin + cached * rcached +
      write * rwrite + BigInt(u.output) * rout;
  return Number((pico + 999n) / 1000n);
}

// A fetch for an SDK's `fetch` option that counts the attempts it makes.
export function countingFetch() {
  const f = (...args) => {
    f.calls += 1;
    return fetch(...args);
  };
  f.calls = 0;
  return f;
}

// Header values of a fakeprov request record (case-insensitive name).
export function recHeader(rec, name) {
  const n = name.toLowerCase();
  return rec.headers.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
}

// Run call(fetch); it must throw. Then: the SDK made one attempt (its own
// fetch, unless counted is false, and tollgate's call log agree), tollgate answered
// `status`, and fakeprov received nothing at all meanwhile. Returns the
// error for SDK-specific checks.
export async function expectRefused(s, call, { status, name, message, counted = true }) {
  const f = countingFetch();
  const callsBefore = s.calls().length;
  const recsBefore = s.records().length;
  let err;
  try {
    await call(f);
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'the SDK call should have thrown');
  assert.equal(err.constructor.name, name, `error: ${err.stack}`);
  if (message) assert.match(err.message, message);
  // The SDK has thrown: every attempt it made has been answered. Wait for
  // tollgate to log the first, then a moment for any other.
  await waitFor(() => s.calls().length > callsBefore, 10000, 'tollgate to log the call');
  await sleep(150);
  const calls = s.calls().slice(callsBefore);
  assert.deepEqual(calls.map((c) => c.status), [status],
                   `tollgate should see exactly one attempt: ${JSON.stringify(calls)}`);
  if (counted) assert.equal(f.calls, 1, 'the SDK made one attempt (its fetch counts them)');
  assert.deepEqual(s.records().slice(recsBefore), [],
                   'nothing may reach the provider');
  return { err, call: calls[0] };
}
