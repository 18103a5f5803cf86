// SPDX-License-Identifier: Apache-2.0
//
// The dashboard's script: asks for the admin token (kept in this tab's
// sessionStorage, never in the URL), reads the admin API every few seconds
// and draws budgets, charts, top spenders, kills, calls in flight,
// refusals and alerts; makes and lifts kills, extends budgets and revokes
// extensions, each after a confirmation.
//
// Tag values come from clients. Every value reaches the page through
// textContent or an attribute set by setAttribute, never as markup: the
// script never hands a string to the HTML parser. The Content-Security-Policy the page is served with
// (script-src 'self', connect-src 'self') is the second line of defence.
'use strict';

(function () {
  const REFRESH_MS = 5000;
  const TOKEN_KEY = 'tollgate.admin_token';
  const TAGS = ['team', 'tenant', 'agent_class', 'intent', 'environment',
    'model', 'provider'];
  const SVG = 'http://www.w3.org/2000/svg';
  let timer = null;
  let busy = false;

  function $(id) { return document.getElementById(id); }

  // An element with text, from trusted names only.
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }

  // Nano-dollars as exact dollars: at least two decimals, at most nine,
  // trailing zeros dropped ("$1.5" is "$1.50", 1234 nusd "$0.000001234").
  function usd(nusd) {
    if (nusd === null || nusd === undefined) return '–';
    let n = Number(nusd);
    const neg = n < 0;
    if (neg) n = -n;
    const whole = Math.floor(n / 1e9);
    let frac = String(n - whole * 1e9).padStart(9, '0').replace(/0+$/, '');
    while (frac.length < 2) frac += '0';
    return (neg ? '-$' : '$') + whole + '.' + frac;
  }

  function when(t) {
    if (!t) return '–';
    return String(t).replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function scopeText(scope) {
    if (!scope) return '';
    const parts = [];
    for (const k of Object.keys(scope))
      parts.push(k + '=' + (scope[k] === '' ? '(none)' : scope[k]));
    return parts.length ? parts.join(' ') : '(all calls)';
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  // One admin API call; throws with the API's error text.
  async function api(method, path, body) {
    const headers = {};
    const t = token();
    if (t) headers['Authorization'] = 'Bearer ' + t;
    const init = { method: method, headers: headers, cache: 'no-store',
      credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let doc = null;
    try { doc = await r.json(); } catch (e) { doc = null; }
    if (!r.ok) {
      const err = new Error((doc && doc.error) || ('HTTP ' + r.status));
      err.status = r.status;
      // A 400 names the field it refused: shown beside the message.
      err.parameter = doc && typeof doc.parameter === 'string'
        ? doc.parameter : null;
      throw err;
    }
    return doc;
  }

  function fill(tbodyParent, rows, empty) {
    const tb = tbodyParent.tBodies[0];
    tb.replaceChildren();
    if (rows.length === 0) {
      const tr = el('tr');
      const td = el('td', empty, 'muted');
      td.colSpan = tbodyParent.tHead.rows[0].cells.length;
      tr.appendChild(td);
      tb.appendChild(tr);
      return;
    }
    for (const r of rows) tb.appendChild(r);
  }

  function row(cells) {
    const tr = el('tr');
    for (const c of cells) {
      if (c instanceof Node) {
        const td = el('td');
        td.appendChild(c);
        tr.appendChild(td);
      } else if (c && typeof c === 'object') {
        tr.appendChild(el('td', c.text, c.cls));
      } else {
        tr.appendChild(el('td', c));
      }
    }
    return tr;
  }

  // An API error as shown under a form: the message, and the field a 400
  // named.
  function errorText(e) {
    return e.message + (e.parameter ? ' (parameter: ' + e.parameter + ')'
      : '');
  }

  // What a budget's cap was raised by: extended_nusd, 0 when none.
  function raise(b) {
    const x = Number(b.extended_nusd || 0);
    return Number.isFinite(x) && x > 0 ? x : 0;
  }

  // Spent, reserved and the rest of the cap as one bar; an extended cap
  // (the effective one, cap_nusd) shows where the configured cap ends.
  function bar(b) {
    const s = svg('svg', { class: 'bar', viewBox: '0 0 100 10',
      preserveAspectRatio: 'none', role: 'img' });
    const cap = b.cap_nusd;
    const spent = Number(b.spent_nusd), res = Number(b.reserved_nusd);
    const whole = cap ? Number(cap) : Math.max(spent + res, 1);
    const ws = Math.min(100, spent / whole * 100);
    const wr = Math.min(100 - ws, res / whole * 100);
    s.appendChild(svg('rect', { x: 0, y: 0, width: 100, height: 10,
      fill: '#eceff1' }));
    s.appendChild(svg('rect', { x: 0, y: 0, width: ws, height: 10,
      fill: b.state === 'ok' ? '#1565c0' : '#c62828' }));
    s.appendChild(svg('rect', { x: ws, y: 0, width: wr, height: 10,
      fill: '#90caf9' }));
    const up = cap ? raise(b) : 0;
    if (up > 0 && up < whole) {
      const xc = (whole - up) / whole * 100;
      s.appendChild(svg('line', { x1: xc, y1: 0, x2: xc, y2: 10,
        class: 'capline' }));
    }
    const title = svg('title', {});
    title.textContent = usd(spent) + ' spent, ' + usd(res) + ' reserved' +
        (cap ? ', ' + capText(b) : ', no cap');
    s.appendChild(title);
    if (up === 0) return s;
    // The raise in words beside the bar, not only in its tooltip.
    const span = el('span', null, 'barcell');
    span.appendChild(s);
    span.appendChild(el('span', capText(b), 'capnote'));
    return span;
  }

  // "cap $0.05", or "cap $0.05 + $0.10 extended" when raised.
  function capText(b) {
    const up = raise(b);
    if (up === 0) return 'cap ' + usd(b.cap_nusd);
    const conf = b.hard_cap_nusd !== undefined && b.hard_cap_nusd !== null
      ? Number(b.hard_cap_nusd) : Number(b.cap_nusd) - up;
    return 'cap ' + usd(conf) + ' + ' + usd(up) + ' extended';
  }

  function button(text, onclick, cls) {
    const b = el('button', text, cls);
    b.type = 'button';
    b.addEventListener('click', onclick);
    return b;
  }

  // A kill's match from a budget's scope: its patterns and per values;
  // a value of "" (calls without the tag) cannot be a kill pattern and is
  // left out, which the confirmation shows.
  function scopeMatch(scope) {
    const m = {};
    for (const k of Object.keys(scope || {}))
      if (TAGS.includes(k) && scope[k] !== '') m[k] = scope[k];
    return m;
  }

  function drawBudgets(doc) {
    const rows = [];
    for (const b of doc.budgets) {
      const actions = el('span');
      actions.appendChild(button('Kill scope…', function () {
        prefillKill(scopeMatch(b.scope), 'budget ' + b.policy);
      }, 'act-kill'));
      // Only a policy with a hard cap can be extended; the configured cap
      // says so even when the effective one is raised.
      const conf = b.hard_cap_nusd !== undefined ? b.hard_cap_nusd
        : b.cap_nusd;
      if (conf !== null && conf !== undefined)
        actions.appendChild(button('Extend…', function () {
          openExtend(b);
        }, 'act-extend'));
      rows.push(row([b.policy, scopeText(b.scope),
        { text: b.state + (b.shadow ? ' (shadow)' : ''),
          cls: 'state state-' + b.state },
        b.window, bar(b),
        { text: usd(b.spent_nusd), cls: 'num' },
        { text: usd(b.reserved_nusd), cls: 'num' },
        { text: b.cap_nusd === null ? 'none' : usd(b.cap_nusd) +
            (raise(b) > 0 ? ' (+' + usd(raise(b)) + ')' : ''), cls: 'num' },
        when(b.reset_at), actions]));
    }
    fill($('budgets'), rows, 'no budgets');
  }

  // A bar chart of buckets (label, nusd) into the element with id.
  function chart(id, buckets, labelEvery) {
    const W = 600, H = 180, L = 60, B = 20, T = 8;
    const s = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img' });
    let max = 0;
    for (const k of buckets) max = Math.max(max, k.nusd);
    const top = max > 0 ? max : 1e9;
    const bw = (W - L - 4) / buckets.length;
    s.appendChild(svg('line', { x1: L, y1: H - B, x2: W, y2: H - B,
      class: 'axis' }));
    const ymax = svg('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' });
    ymax.textContent = usd(top);
    s.appendChild(ymax);
    const y0 = svg('text', { x: L - 4, y: H - B, 'text-anchor': 'end' });
    y0.textContent = '$0';
    s.appendChild(y0);
    buckets.forEach(function (k, i) {
      const h = (H - B - T) * k.nusd / top;
      const r = svg('rect', { x: L + 2 + i * bw, y: H - B - h,
        width: Math.max(bw - 2, 1), height: h, class: 'b' });
      r.setAttribute('data-key', k.key);
      r.setAttribute('data-nusd', String(k.nusd));
      const t = svg('title', {});
      t.textContent = k.key + ': ' + usd(k.nusd);
      r.appendChild(t);
      s.appendChild(r);
      if (i % labelEvery === 0) {
        const lx = svg('text', { x: L + 2 + i * bw, y: H - 6 });
        lx.textContent = k.label;
        s.appendChild(lx);
      }
    });
    $(id).replaceChildren(s);
  }

  function pad(n) { return String(n).padStart(2, '0'); }
  function isoHour(d) {
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' +
        pad(d.getUTCDate()) + 'T' + pad(d.getUTCHours()) + ':00:00Z';
  }
  function isoDay(d) { return isoHour(d).slice(0, 10); }

  function byKey(doc, dim) {
    const m = new Map();
    for (const r of doc.rows) m.set(r[dim], Number(r.cost_nusd));
    return m;
  }

  async function drawCharts(now) {
    const h0 = new Date(now);
    h0.setUTCMinutes(0, 0, 0);
    h0.setTime(h0.getTime() - 23 * 3600e3);
    const d0 = new Date(now);
    d0.setUTCHours(0, 0, 0, 0);
    d0.setTime(d0.getTime() - 29 * 86400e3);
    const [hours, days] = await Promise.all([
      api('GET', '/v1/spend?group_by=hour&from=' + isoHour(h0)),
      api('GET', '/v1/spend?group_by=day&from=' + isoDay(d0)),
    ]);
    const hm = byKey(hours, 'hour'), dm = byKey(days, 'day');
    const hb = [], db = [];
    for (let i = 0; i < 24; i++) {
      const k = isoHour(new Date(h0.getTime() + i * 3600e3));
      hb.push({ key: k, label: k.slice(11, 13) + 'h', nusd: hm.get(k) || 0 });
    }
    for (let i = 0; i < 30; i++) {
      const k = isoDay(new Date(d0.getTime() + i * 86400e3));
      db.push({ key: k, label: k.slice(5), nusd: dm.get(k) || 0 });
    }
    chart('chart-hours', hb, 3);
    chart('chart-days', db, 5);
  }

  async function drawTops(today, hourAgo) {
    const dims = ['team', 'tenant', 'agent_class', 'intent'];
    // An intent is one task: a busy day has one for each of its calls, so
    // the intents table reads the last hour, not the whole day. Each table
    // stands alone: one that cannot be answered does not blank the rest.
    const docs = await Promise.all(dims.map(function (d) {
      return api('GET', '/v1/spend?group_by=' + d + '&from=' +
          (d === 'intent' ? hourAgo : today)).catch(function (e) {
        if (e.status === 401) throw e;
        return { error: e.message };
      });
    }));
    dims.forEach(function (d, i) {
      if (docs[i].error !== undefined) {
        fill($('top-' + d), [], 'not shown: ' + docs[i].error);
        return;
      }
      const rows = docs[i].rows.slice(0, 10).map(function (r) {
        return row([r[d] === '' || r[d] === null || r[d] === undefined
            ? { text: '(none)', cls: 'muted' } : r[d],
          { text: r.calls, cls: 'num' },
          { text: usd(r.cost_nusd), cls: 'num' }]);
      });
      fill($('top-' + d), rows, 'no calls today');
    });
  }

  function drawKills(doc) {
    $('sum-kills').textContent = String(doc.kills.length);
    fill($('kills'), doc.kills.map(function (k) {
      return row([k.id, scopeText(k.match), k.reason, k.source,
        when(k.created_at), k.expires_at ? when(k.expires_at) : 'never',
        button('Lift…', function () {
          confirmThen('Lift kill ' + k.id + ' (' + scopeText(k.match) +
              ')? Matching calls will go through again.', async function () {
            await api('DELETE', '/v1/kills/' + encodeURIComponent(k.id));
          });
        })]);
    }), 'no live kills');
  }

  // The live extensions, each with its Revoke… button; an answer the API
  // could not give leaves the rest of the page as it is.
  function drawExtensions(doc) {
    if (doc.error !== undefined) {
      fill($('extensions'), [], 'not shown: ' + doc.error);
      return;
    }
    fill($('extensions'), doc.extensions.map(function (x) {
      return row([x.id, x.policy, scopeText(x.scope),
        { text: '+' + usd(x.nusd), cls: 'num' }, x.by, x.reason,
        when(x.created_at), x.ends_at ? when(x.ends_at) : 'when revoked',
        button('Revoke…', function () {
          confirmThen('Revoke extension ' + x.id + ' (+' + usd(x.nusd) +
              ' on ' + x.policy + ', ' + scopeText(x.scope) + ', by ' +
              x.by + ')? The cap goes back down at once.',
          async function () {
            await api('DELETE', '/v1/budgets/extensions/' +
                encodeURIComponent(x.id));
            $('extend-result').textContent = 'Revoked ' + x.id + '.';
          }, $('extensions-error'));
        }, 'act-revoke')]);
    }), 'no live extensions');
  }

  function drawCalls(inflight, refused) {
    $('sum-inflight').textContent = String(inflight.calls.length) +
        (inflight.next_cursor ? '+' : '');
    fill($('inflight'), inflight.calls.map(function (c) {
      return row([when(c.started_at), c.team, c.tenant, c.agent_class,
        c.intent, c.model, { text: usd(c.reserved_nusd), cls: 'num' }]);
    }), 'none');
    fill($('refusals'), refused.calls.map(function (c) {
      return row([when(c.started_at), c.team, c.tenant, c.agent_class,
        c.model, c.refusal_reason]);
    }), 'none');
  }

  function drawAlerts(doc) {
    fill($('alerts'), doc.alerts.map(function (a) {
      return row([when(a.fired_at), a.kind, a.policy, scopeText(a.scope),
        { text: a.spent_usd === null ? '–' : '$' + a.spent_usd, cls: 'num' },
        { text: a.cap_usd === null ? '–' : '$' + a.cap_usd, cls: 'num' },
        a.message]);
    }), 'no alerts');
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    const now = Date.now();
    const today = isoDay(new Date(now));
    const hourAgo = new Date(now - 3600e3).toISOString();
    // Bounded, so the query reads a day of the started_at index rather
    // than every row of a ledger that has no refusal.
    const dayAgo = new Date(now - 86400e3).toISOString();
    try {
      const [budgets, kills, exts, inflight, refused, alerts, day, hour] =
        await Promise.all([
          api('GET', '/v1/budgets'),
          api('GET', '/v1/kills'),
          api('GET', '/v1/budgets/extensions').catch(function (e) {
            if (e.status === 401) throw e;
            return { error: e.message };
          }),
          api('GET', '/v1/calls?status=in_flight&limit=50'),
          api('GET', '/v1/calls?status=refused&limit=20&from=' + dayAgo),
          api('GET', '/v1/alerts?limit=20'),
          api('GET', '/v1/spend?from=' + today),
          api('GET', '/v1/spend?from=' + hourAgo),
        ]);
      drawBudgets(budgets);
      drawKills(kills);
      drawExtensions(exts);
      drawCalls(inflight, refused);
      drawAlerts(alerts);
      $('sum-today').textContent = usd(day.total_cost_nusd);
      $('sum-burn').textContent = usd(hour.total_cost_nusd) + '/h';
      await drawCharts(now);
      await drawTops(today, hourAgo);
      $('status').textContent = 'updated ' + new Date(now).toISOString()
          .slice(11, 19) + 'Z';
      $('status').className = 'muted';
      document.body.setAttribute('data-refreshed', String(now));
    } catch (e) {
      if (e.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin('the admin API refused the token (401)');
      } else {
        $('status').textContent = 'admin API: ' + e.message;
        $('status').className = 'error';
      }
    } finally {
      busy = false;
    }
  }

  // The confirmation step of every action: run act after "Confirm"; what
  // it throws is shown in errEl (the kill form's line by default).
  let pending = null;
  function confirmThen(text, act, errEl) {
    pending = { act: act, errEl: errEl || $('kill-error') };
    $('confirm-text').textContent = text;
    $('confirm').hidden = false;
    $('confirm-yes').focus();
  }

  function prefillKill(match, why) {
    const f = $('kill-form');
    for (const t of TAGS) f.elements[t].value = match[t] || '';
    if (!f.elements.reason.value) f.elements.reason.value = 'stopped: ' + why;
    f.scrollIntoView();
    f.elements.reason.focus();
  }

  function killFromForm(ev) {
    ev.preventDefault();
    const f = $('kill-form');
    const match = {};
    for (const t of TAGS)
      if (f.elements[t].value !== '') match[t] = f.elements[t].value;
    const body = { match: match };
    if (f.elements.reason.value !== '') body.reason = f.elements.reason.value;
    if (f.elements.ttl.value !== '') body.ttl = f.elements.ttl.value;
    $('kill-error').textContent = '';
    if (Object.keys(match).length === 0) {
      $('kill-error').textContent =
          'give at least one field (team=* stops every call)';
      return;
    }
    confirmThen('Stop every call matching ' + scopeText(match) +
        (body.ttl ? ' for ' + body.ttl : ' until lifted') + '?',
    async function () {
      await api('POST', '/v1/kills', body);
      for (const t of TAGS) f.elements[t].value = '';
      f.elements.reason.value = '';
      f.elements.ttl.value = '';
    });
  }

  // The budget the extend form is for: its policy and scope exactly as
  // /v1/budgets gave them, since the API matches the scope field by field.
  let extendTarget = null;

  function openExtend(b) {
    const f = $('extend-form');
    extendTarget = { policy: b.policy, scope: b.scope || {},
      reset_at: b.reset_at, cap_nusd: b.cap_nusd };
    $('extend-what').textContent = b.policy + ' (' + scopeText(b.scope) + ')';
    $('extend-error').textContent = '';
    $('extend-result').textContent = '';
    f.hidden = false;
    f.scrollIntoView();
    f.elements.usd.focus();
  }

  function closeExtend() {
    const f = $('extend-form');
    extendTarget = null;
    f.hidden = true;
    for (const n of ['usd', 'reason', 'expires']) f.elements[n].value = '';
    $('extend-error').textContent = '';
  }

  function extendFromForm(ev) {
    ev.preventDefault();
    const f = $('extend-form');
    const target = extendTarget;
    if (!target) return;
    const amount = f.elements.usd.value.trim();
    const expires = f.elements.expires.value.trim();
    // The API checks every field and names the one it refuses; these
    // are only the blanks worth catching before a confirmation.
    const body = { policy: target.policy, scope: target.scope, usd: amount,
      reason: f.elements.reason.value, by: f.elements.by.value };
    if (expires !== '') body.expires = expires;
    $('extend-error').textContent = '';
    for (const k of ['usd', 'reason', 'by']) {
      if (body[k] === '') {
        $('extend-error').textContent = k + ': required';
        f.elements[k].focus();
        return;
      }
    }
    const until = body.expires
      ? 'for ' + body.expires + ' (at most until the window ends)'
      : (target.reset_at ? 'until the window ends (' + when(target.reset_at) +
          ')' : 'until revoked');
    confirmThen('Raise the cap of ' + target.policy + ' (' +
        scopeText(target.scope) + ') by $' + amount + ', now ' +
        usd(target.cap_nusd) + ', ' + until + ', granted by ' + body.by +
        '?', async function () {
      const x = await api('POST', '/v1/budgets/extend', body);
      closeExtend();
      $('extend-result').textContent = 'Extended ' + x.policy + ' (' +
          scopeText(x.scope) + ') by ' + usd(x.nusd) + ': ' + x.id +
          (x.ends_at ? ', ends ' + when(x.ends_at) : ', until revoked') +
          (x.recorded === false ? ' (in force; not yet in the ledger)' : '');
    }, $('extend-error'));
  }

  function showLogin(why) {
    if (timer) clearInterval(timer);
    timer = null;
    $('main').hidden = true;
    $('forget').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = why || '';
    $('status').textContent = 'not connected';
  }

  function start() {
    $('login').hidden = true;
    $('main').hidden = false;
    $('forget').hidden = false;
    refresh();
    // A tab nobody looks at costs the admin API nothing.
    timer = setInterval(function () {
      if (!document.hidden) refresh();
    }, REFRESH_MS);
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('login-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $('token').value);
      $('token').value = '';
      start();
    });
    $('forget').addEventListener('click', function () {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('');
    });
    $('kill-form').addEventListener('submit', killFromForm);
    $('extend-form').addEventListener('submit', extendFromForm);
    $('extend-cancel').addEventListener('click', closeExtend);
    $('confirm-no').addEventListener('click', function () {
      pending = null;
      $('confirm').hidden = true;
    });
    $('confirm-yes').addEventListener('click', async function () {
      const p = pending;
      pending = null;
      $('confirm').hidden = true;
      if (!p) return;
      try {
        await p.act();
        p.errEl.textContent = '';
      } catch (e) {
        p.errEl.textContent = errorText(e);
      }
      refresh();
    });
    // An empty token is kept too: the API may have none configured.
    if (token() !== null) start();
    else showLogin('');
  });
})();
