// SPDX-License-Identifier: Apache-2.0
// The admin dashboard (GET / on the admin port) in a real headless
// Chromium, driven by puppeteer-core, against a real tollgate whose
// upstream is fakeprov (the SDK suite's harness): the page shows the
// seeded budgets and figures exactly as the ledger has them, a kill made by
// clicking (and confirming) stops the next call, a capped budget extended
// through the page lets the next call through and revoking the extension
// through the page closes it again, a hostile tag or reason renders as
// text, the page logs no console error and requests nothing but the admin
// origin. Screenshots are kept in TG_ARTIFACT_DIR (build/test-artifacts).
//
// Without Debian's chromium (or CHROMIUM_BIN) the test is skipped, except
// in CI (CI=true), where it fails.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import {
  AGENT_CLASS, KEYS, ledgerQuery, ownStack, waitFor,
} from '../sdk/lib/harness.mjs';

// Debian's chromium, or the browser CHROMIUM_BIN names.
const CHROMIUM = [process.env.CHROMIUM_BIN, '/usr/bin/chromium',
  '/usr/bin/chromium-browser'].find((p) => p && fs.existsSync(p));
const TOKEN = 'dash-token-7f3a9c01e5b24d68';
const HOSTILE = '<img/src=x/onerror=window.__pwned=1>';
const POLICIES = `policies:
  - name: team-daily
    match: { agent_class: ${AGENT_CLASS} }
    per: [team]
    window: day
    hard_cap_usd: 5
  - name: ext-tiny
    match: { agent_class: ${AGENT_CLASS}, team: "ext-*" }
    per: [tenant]
    window: day
    hard_cap_usd: 0.02
`;
// A reason typed into the extend form: the extensions table shows it as
// these characters.
const HOSTILE_REASON = '<img/src=x/onerror=window.__pwned=2> quarter close';

// Nano-dollars as the page writes them (dashboard.js usd()), computed
// here with BigInt, independently.
function usd(nusd) {
  const n = BigInt(nusd);
  const whole = n / 1000000000n;
  let frac = (n % 1000000000n).toString().padStart(9, '0').replace(/0+$/, '');
  while (frac.length < 2) frac += '0';
  return `$${whole}.${frac}`;
}

// One chat call through the proxy with tags; returns status and body.
async function call(s, team, extra = {}, signal = undefined) {
  const r = await fetch(`${s.base}/v1/chat/completions`, {
    method: 'POST', signal,
    headers: {
      authorization: `Bearer ${KEYS.openai}`, 'content-type': 'application/json',
      'x-tollgate-agent-class': AGENT_CLASS, 'x-tollgate-team': team,
      'x-tollgate-intent': `dash-${team.length}`, 'x-fake-input-tokens': '200000',
      'x-fake-event-tokens': '1000', ...extra,
    },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  });
  return { status: r.status, body: await r.text() };
}

// The admin API, with the token.
async function admin(s, method, p) {
  const r = await fetch(`${s.admin}${p}`, {
    method, headers: { authorization: `Bearer ${TOKEN}` } });
  return r.json();
}

// Replace an input's value by typing, as a user would.
async function retype(page, sel, text) {
  await page.$eval(sel, (e) => { e.value = ''; });
  await page.type(sel, text);
}

// The rows of a table as arrays of cell texts.
async function tableRows(page, id) {
  return page.$$eval(`#${id} tbody tr`, (trs) => trs.map(
      (tr) => [...tr.cells].map((td) => td.textContent)));
}

describe('dashboard', () => {
  it('shows the ledger, kills through the page, escapes tags', async (t) => {
    if (!CHROMIUM) {
      if (process.env.CI) assert.fail('chromium is not installed (make deps installs it)');
      t.skip('chromium is not installed: apt-get install chromium (make deps)');
      return;
    }
    process.env.TG_DASH_TOKEN = TOKEN;
    const s = await ownStack(t, {
      adminYaml: '  token_env: TG_DASH_TOKEN\n', extraYaml: POLICIES,
    });
    const origin = new URL(s.admin).origin;

    // Seed: alpha twice, beta once, the hostile team once.
    for (const team of ['alpha', 'alpha', 'beta', HOSTILE]) {
      const r = await call(s, team);
      assert.equal(r.status, 200, r.body);
    }
    await waitFor(() => ledgerQuery(s.ledgerPath,
        "SELECT count(*) AS n FROM calls WHERE status = 'ok'")[0].n === 4,
    10000, 'four settled rows');
    const byTeam = new Map(ledgerQuery(s.ledgerPath,
        'SELECT team, count(*) AS n, sum(cost_nusd) AS c FROM calls GROUP BY team')
        .map((r) => [r.team, r]));
    const total = ledgerQuery(s.ledgerPath,
        'SELECT sum(cost_nusd) AS c FROM calls')[0].c;
    assert.ok(byTeam.get('alpha').c > 0);
    // One call fakeprov never answers: in flight until the end.
    const hold = new AbortController();
    const slow = call(s, 'gamma', { 'x-fake-hang': 'headers' }, hold.signal)
        .catch((e) => e);
    // Let go of it on any way out, so a failed assertion ends the test.
    t.after(() => hold.abort());

    const browser = await puppeteer.launch({
      executablePath: CHROMIUM, headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--disable-default-apps'],
    });
    t.after(() => browser.close());
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 1600 });
    const problems = [];
    const requests = [];
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => requests.push(r.url()));
    page.on('dialog', (d) => {
      problems.push(`dialog: ${d.message()}`);
      d.dismiss();
    });

    // The page is served without the token, with its security headers.
    const resp = await page.goto(`${s.admin}/`, { waitUntil: 'load' });
    assert.equal(resp.status(), 200);
    const h = resp.headers();
    assert.match(h['content-security-policy'], /default-src 'none'/);
    assert.match(h['content-security-policy'], /connect-src 'self'/);
    assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
    assert.equal(h['x-frame-options'], 'DENY');
    assert.equal(h['cache-control'], 'no-store');

    // The token goes in the form, and into sessionStorage, not the URL.
    await page.type('#token', TOKEN);
    await page.click('#login-form button[type=submit]');
    await page.waitForFunction(() => document.body.dataset.refreshed, { timeout: 15000 });
    assert.ok(!page.url().includes(TOKEN));

    // Budgets: one per team, with the ledger's exact spend.
    await page.waitForFunction(
        () => document.querySelectorAll('#budgets tbody tr').length >= 3,
        { timeout: 15000 });
    const budgets = await tableRows(page, 'budgets');
    for (const team of ['alpha', 'beta', HOSTILE]) {
      const r = budgets.find((b) => b[1] === `team=${team} agent_class=${AGENT_CLASS}`);
      assert.ok(r, `a budget row for ${team}: ${JSON.stringify(budgets)}`);
      assert.equal(r[0], 'team-daily');
      assert.equal(r[2], 'ok');
      assert.equal(r[3], 'day');
      assert.equal(r[5], usd(byTeam.get(team).c), `spent of ${team}`);
      assert.equal(r[7], '$5.00');
    }

    // Top teams today: calls and cost per team, dearest first.
    const tops = await tableRows(page, 'top-team');
    for (const team of ['alpha', 'beta', HOSTILE]) {
      const r = tops.find((x) => x[0] === team);
      assert.ok(r, `top-team row for ${team}: ${JSON.stringify(tops)}`);
      assert.deepEqual(r.slice(1), [String(byTeam.get(team).n), usd(byTeam.get(team).c)]);
    }
    assert.equal(tops[0][0], 'alpha');
    assert.equal(await page.$eval('#sum-today', (e) => e.textContent), usd(total));
    assert.equal(await page.$eval('#sum-burn', (e) => e.textContent), `${usd(total)}/h`);

    // The charts: each hour's and day's bar holds what the ledger has for
    // it (the seeded calls may straddle an hour).
    const buckets = ledgerQuery(s.ledgerPath,
        "SELECT substr(started_at, 1, 13) || ':00:00Z' AS h,"
        + ' substr(started_at, 1, 10) AS d, sum(cost_nusd) AS c FROM calls'
        + " WHERE status <> 'in_flight' GROUP BY 1, 2");
    const perDay = new Map();
    for (const b of buckets) {
      assert.equal(await page.$eval(`#chart-hours rect[data-key="${b.h}"]`,
          (e) => e.getAttribute('data-nusd')), String(b.c), `hour ${b.h}`);
      perDay.set(b.d, (perDay.get(b.d) || 0) + b.c);
    }
    for (const [d, c] of perDay) {
      assert.equal(await page.$eval(`#chart-days rect[data-key="${d}"]`,
          (e) => e.getAttribute('data-nusd')), String(c), `day ${d}`);
    }
    assert.equal(await page.$$eval('#chart-hours rect.b', (r) => r.length), 24);
    assert.equal(await page.$$eval('#chart-days rect.b', (r) => r.length), 30);

    // The call held at fakeprov shows in flight.
    await page.waitForFunction(
        () => [...document.querySelectorAll('#inflight tbody td')]
            .some((td) => td.textContent === 'gamma'), { timeout: 15000 });

    // The hostile tag is text: no element made from it, nothing ran.
    assert.equal(await page.$$eval('img', (i) => i.length), 0);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);

    fs.mkdirSync(process.env.TG_ARTIFACT_DIR || 'test-artifacts', { recursive: true });
    await page.screenshot({ fullPage: true,
      path: path.join(process.env.TG_ARTIFACT_DIR || 'test-artifacts', 'dashboard.png') });

    // Kill alpha's budget scope: the button fills the form, the form asks
    // for a confirmation, and only "Confirm" posts the kill.
    const idx = budgets.findIndex((b) => b[0] === 'team-daily'
        && b[1] === `team=alpha agent_class=${AGENT_CLASS}`);
    const buttons = await page.$$('#budgets tbody tr td:last-child button.act-kill');
    await buttons[idx].click();
    assert.equal(await page.$eval('#kill-form input[name=team]', (e) => e.value), 'alpha');
    await page.click('#kill-submit');
    await page.waitForSelector('#confirm:not([hidden])');
    assert.match(await page.$eval('#confirm-text', (e) => e.textContent), /team=alpha/);
    await page.click('#confirm-no');
    await new Promise((r) => setTimeout(r, 300));
    let kills = await (await fetch(`${s.admin}/v1/kills`, {
      headers: { authorization: `Bearer ${TOKEN}` } })).json();
    assert.deepEqual(kills.kills, [], 'Cancel made no kill');
    await page.click('#kill-submit');
    await page.waitForSelector('#confirm:not([hidden])');
    await page.click('#confirm-yes');
    await page.waitForFunction(
        () => [...document.querySelectorAll('#kills tbody td')]
            .some((td) => td.textContent.startsWith('k_')), { timeout: 15000 });
    kills = await (await fetch(`${s.admin}/v1/kills`, {
      headers: { authorization: `Bearer ${TOKEN}` } })).json();
    assert.equal(kills.kills.length, 1);
    assert.deepEqual(kills.kills[0].match, { team: 'alpha', agent_class: AGENT_CLASS });

    // The next call of team alpha is refused by the kill; beta still runs.
    const refused = await call(s, 'alpha');
    assert.equal(refused.status, 403, refused.body);
    assert.match(refused.body, /killed/);
    assert.equal((await call(s, 'beta')).status, 200);
    // The refusal shows under Recent refusals at the next refresh.
    await page.waitForFunction(
        () => [...document.querySelectorAll('#refusals tbody tr')].some(
            (tr) => tr.cells.length > 5 && tr.cells[1].textContent === 'alpha'
                && tr.cells[5].textContent === 'killed'), { timeout: 15000 });

    // Lift it through the page, again with a confirmation.
    await page.click('#kills tbody tr td:last-child button');
    await page.waitForSelector('#confirm:not([hidden])');
    await page.click('#confirm-yes');
    await waitFor(async () => (await (await fetch(`${s.admin}/v1/kills`, {
      headers: { authorization: `Bearer ${TOKEN}` } })).json()).kills.length === 0,
    10000, 'the kill to be lifted');
    assert.equal((await call(s, 'alpha')).status, 200);

    // Extensions. ext-tiny's $0.02 cap is spent by one call (about
    // $0.03): the next is refused with hard_cap.
    const tenant = { 'x-tollgate-tenant': 'acme' };
    assert.equal((await call(s, 'ext-a', tenant)).status, 200);
    const capped = await call(s, 'ext-a', tenant);
    assert.equal(capped.status, 429, capped.body);
    assert.match(capped.body, /hard_cap/);
    const budgetsApi = (await admin(s, 'GET', '/v1/budgets')).budgets;
    const apiRow = budgetsApi.find((b) => b.policy === 'ext-tiny');
    assert.ok(apiRow, JSON.stringify(budgetsApi));
    assert.equal(apiRow.extended_nusd, 0);
    assert.equal(apiRow.hard_cap_nusd, 20000000);
    assert.deepEqual(apiRow.extensions, []);
    assert.deepEqual(Object.keys(apiRow.scope).sort(),
        ['agent_class', 'team', 'tenant']);
    const extScope = Object.entries(apiRow.scope)
        .map(([k, v]) => `${k}=${v}`).join(' ');
    const extRow = async () => (await tableRows(page, 'budgets')).findIndex(
        (b) => b[0] === 'ext-tiny' && b[1] === extScope && b[2] === 'capped');
    await waitFor(async () => (await extRow()) >= 0, 15000,
        'the ext-tiny row, capped');

    // Extend through the page: the row's button opens the form for that
    // budget; a bad amount shows the API's 400 with the parameter it names.
    let i = await extRow();
    await (await page.$$('#budgets tbody tr'))[i].$eval(
        'button.act-extend', (b) => b.click());
    await page.waitForSelector('#extend-form:not([hidden])');
    assert.equal(await page.$eval('#extend-what', (e) => e.textContent),
        `ext-tiny (${extScope})`);
    await page.type('#extend-form input[name=usd]', '0.1.2');
    await page.type('#extend-form input[name=reason]', HOSTILE_REASON);
    await page.type('#extend-form input[name=by]', 'alice');
    await page.click('#extend-submit');
    await page.waitForSelector('#confirm:not([hidden])');
    const before = problems.length;
    await page.click('#confirm-yes');
    await page.waitForFunction(() => /^usd .*\(parameter: usd\)$/.test(
        document.getElementById('extend-error').textContent), { timeout: 15000 });
    // The browser logs the refused request itself; nothing else is logged.
    await waitFor(() => problems.length > before, 5000, 'the 400 logged');
    assert.deepEqual(problems.splice(before), ['console: Failed to load '
        + 'resource: the server responded with a status of 400 (Bad Request)']);
    assert.deepEqual((await admin(s, 'GET', '/v1/budgets/extensions')).extensions, []);

    // The right amount, confirmed: the cap is raised by $0.10.
    await retype(page, '#extend-form input[name=usd]', '0.10');
    await page.click('#extend-submit');
    await page.waitForSelector('#confirm:not([hidden])');
    const question = await page.$eval('#confirm-text', (e) => e.textContent);
    assert.match(question, /ext-tiny/);
    assert.match(question, /by \$0\.10/);
    assert.match(question, /granted by alice/);
    await page.click('#confirm-yes');
    await waitFor(async () => (await admin(s, 'GET', '/v1/budgets/extensions'))
        .extensions.length === 1, 10000, 'the extension to be made');
    const ext = (await admin(s, 'GET', '/v1/budgets/extensions')).extensions[0];
    assert.equal(ext.policy, 'ext-tiny');
    assert.deepEqual(ext.scope, apiRow.scope, 'the scope as /v1/budgets gave it');
    assert.equal(ext.nusd, 100000000);
    assert.equal(ext.by, 'alice');
    assert.equal(ext.reason, HOSTILE_REASON);
    assert.equal(await page.$eval('#extend-form', (e) => e.hidden), true);

    // The next call fits under the raised cap.
    const through = await call(s, 'ext-a', tenant);
    assert.equal(through.status, 200, through.body);

    // The page shows the raise on the budget and lists the extension.
    await page.waitForFunction((id) => [...document.querySelectorAll(
        '#extensions tbody tr')].some((tr) => tr.cells[0].textContent === id),
    { timeout: 15000 }, ext.id);
    const xrow = (await tableRows(page, 'extensions')).find((r) => r[0] === ext.id);
    assert.deepEqual(xrow.slice(0, 6), [ext.id, 'ext-tiny', extScope, '+$0.10',
      'alice', HOSTILE_REASON]);
    // The bar says the configured cap and the raise; the cap column
    // holds the effective cap.
    await page.waitForFunction((scope) => [...document.querySelectorAll(
        '#budgets tbody tr')].some((tr) => tr.cells[1].textContent === scope
        && tr.cells[4].querySelector('.capnote')),
    { timeout: 15000 }, extScope);
    i = (await tableRows(page, 'budgets')).findIndex(
        (b) => b[0] === 'ext-tiny' && b[1] === extScope);
    const trs = await page.$$('#budgets tbody tr');
    assert.equal(await trs[i].$eval('.capnote', (e) => e.textContent),
        'cap $0.02 + $0.10 extended');
    assert.equal(await trs[i].$eval('td:nth-child(8)', (e) => e.textContent),
        '$0.12 (+$0.10)');
    await page.screenshot({ fullPage: true,
      path: path.join(process.env.TG_ARTIFACT_DIR || 'test-artifacts',
          'dashboard-extended.png') });

    // Revoke through the page, after a confirmation: the cap is back at
    // $0.02, and the next call is refused again.
    await page.click('#extensions tbody tr td:last-child button.act-revoke');
    await page.waitForSelector('#confirm:not([hidden])');
    assert.match(await page.$eval('#confirm-text', (e) => e.textContent),
        new RegExp(`Revoke extension ${ext.id}`));
    await page.click('#confirm-yes');
    await waitFor(async () => (await admin(s, 'GET', '/v1/budgets/extensions'))
        .extensions.length === 0, 10000, 'the extension to be revoked');
    const again = await call(s, 'ext-a', tenant);
    assert.equal(again.status, 429, again.body);
    assert.match(again.body, /hard_cap/);
    await page.waitForFunction(() => [...document.querySelectorAll(
        '#extensions tbody td')].some((td) => td.textContent === 'no live extensions'),
    { timeout: 15000 });
    assert.equal(await page.$$eval('img', (im) => im.length), 0);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    hold.abort();
    await slow;

    assert.deepEqual(problems, []);
    const foreign = requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('data:'));
    assert.deepEqual(foreign, [], 'requests to anything but the admin origin');
  });
});
