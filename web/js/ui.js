// web/js/ui.js — building blocks of the console's screens: element builders,
// loading indicators, empty states, the messages shown for API errors (401,
// 403, 422, network failures with a retry, ...), the confirmation dialog,
// badges and formatting. Every API call of a screen goes through load() or
// act(), so each one shows that it is running and how it ended.

export const session = { role: null };     // the current key's role once known (app.js)
export const hooks = { openConnection: () => {} };

// A link target: the hash for a path and query object (empty values left out).
export function href(path, query = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const qs = q.toString();
  return `#${path}${qs ? `?${qs}` : ''}`;
}

// h('tag.class', {attr: value, onclick: f}, ...children): an HTML element.
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = [el.className, v].filter(Boolean).join(' ');
    else if (k === 'text') el.textContent = v;
    else if (k === 'value') el.value = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

// s('tag', {attr: value}, ...children): an SVG element.
export function s(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

// Appends children to el: arrays flattened, null/undefined/false left out, strings as text.
export function put(el, ...children) { append(el, children); return el; }

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function spinner(label) {
  return h('p.loading', { role: 'status' }, h('span.spinner', { 'aria-hidden': 'true' }), label || 'Loading…');
}

// An empty state: a title and what to do about it.
export function empty(title, ...text) {
  return h('div.empty', { role: 'note' }, h('strong', title), ...text);
}

const ROLE_CAN = {
  reader: 'read everything except API keys',
  writer: 'also change workflows and subscribers, trigger, cancel and replay',
  admin: 'also configure providers, send test messages and manage API keys',
};

// {title, lines, hint, retry, key}: what to tell the user about an error.
export function describeError(err) {
  if (!err || !err.kind) {
    return { title: 'Something went wrong in the console', lines: [String(err && err.message || err)] };
  }
  if (err.kind === 'config') {
    return { title: 'Set the API address first', lines: [err.message + '. Open Connection and enter the address of notiflow\'s REST API.'], key: true };
  }
  if (err.kind === 'network') {
    return {
      title: 'Cannot reach the API',
      lines: [`${err.message}. Check that PostgREST is running, that the address in Connection is right, and that it allows this page's origin (CORS).`],
      retry: true, key: true,
    };
  }
  const d = err.details ? String(err.details) : '';
  switch (err.status) {
    case 401:
      if (err.code === '28P01') {
        return { title: 'The API key was not accepted', lines: ['It is unknown or has been revoked. Enter a valid key in Connection.'], key: true };
      }
      if (err.code === 'PGRST301' || err.code === 'PGRST302') {
        return { title: 'The token was not accepted', lines: [err.message], key: true };
      }
      return {
        title: 'An API key is needed',
        lines: ['This needs an API key. Enter one in Connection (a reader key can look, a writer key can change things).',
                d ? `(${d})` : ''],
        key: true,
      };
    case 403: {
      const role = session.role ? `Your key acts as ${session.role}` : 'Your key\'s role';
      const needs = /needs the role notiflow_(\w+)/.exec(d);
      return {
        title: 'Your key may not do this',
        lines: [`${role}${session.role && ROLE_CAN[session.role] ? ` (it may ${ROLE_CAN[session.role]})` : ''}; ` +
                (needs ? `this needs a ${needs[1]} key (a ${needs[1]} may ${ROLE_CAN[needs[1]] || 'do it'}).` : `${err.message}.`),
                'Use a key with that role in Connection.'],
        key: true,
      };
    }
    case 422:
      return { title: err.message ? capital(err.message) : 'Some input is not valid', problems: err.problems(), hint: err.hint };
    case 404:
      return { title: 'Not found', lines: [capital(err.message), d], hint: err.hint };
    case 409:
      return { title: 'Not possible now', lines: [capital(err.message), d], hint: err.hint };
    case 413:
      return { title: 'Too large', lines: [capital(err.message), d], hint: err.hint };
    case 405:
      return { title: 'Not allowed', lines: [capital(err.message), d], hint: err.hint };
    case 400:
      return { title: 'The API could not read the request', lines: [capital(err.message), d], hint: err.hint };
    default:
      return {
        title: err.status >= 500 ? `The API failed (HTTP ${err.status})` : `HTTP ${err.status}`,
        lines: [capital(err.message), d, err.code ? `code ${err.code}` : ''], hint: err.hint, retry: err.status >= 500,
      };
  }
}

function capital(t) { return t ? t[0].toUpperCase() + t.slice(1) : ''; }

// The message for an error, with Retry when the call may succeed again and a way to the key.
export function errorBox(err, { retry } = {}) {
  const d = describeError(err);
  const box = h('div.error-box', { role: 'alert', 'data-status': err && err.status !== undefined ? String(err.status) : '' },
    h('h3', d.title),
    (d.lines || []).filter(Boolean).map((l) => h('p', l)),
    d.problems && d.problems.length ? h('ul.problem-list', d.problems.map((p) => h('li', p.path ? [h('code', p.path), ': '] : null, p.message))) : null,
    d.hint ? h('p.muted.small', d.hint) : null);
  const actions = h('div.actions');
  if (d.retry && retry) actions.append(h('button', { type: 'button', onclick: () => retry() }, 'Retry'));
  if (d.key) actions.append(h('button.secondary', { type: 'button', onclick: () => hooks.openConnection(err.kind !== 'network' && err.kind !== 'config') }, 'Open Connection'));
  if (actions.childElementCount) box.append(actions);
  return box;
}

// Loads into region: a loading indicator while fetch() runs, then render(data, region),
// or the error with Retry. Returns the data (undefined after an error).
// When the region is loaded again before an answer comes, only the newest answer is shown (an
// older, slower one is dropped: it returns undefined and counts in the region's data-dropped).
const loads = new WeakMap();
export async function load(region, label, fetch, render) {
  const seq = (loads.get(region) || 0) + 1;
  loads.set(region, seq);
  const newest = () => loads.get(region) === seq;
  region.setAttribute('aria-busy', 'true');
  region.replaceChildren(spinner(label));
  const dropped = () => { region.dataset.dropped = String(Number(region.dataset.dropped || 0) + 1); return undefined; };
  try {
    const data = await fetch();
    if (!newest()) return dropped();
    region.replaceChildren();
    render(data, region);
    return data;
  } catch (e) {
    if (!newest()) return dropped();
    region.replaceChildren(errorBox(e, { retry: () => load(region, label, fetch, render) }));
    if (!e.kind) console.error(e);
    return undefined;
  } finally {
    if (newest()) region.removeAttribute('aria-busy');
  }
}

// Runs an action from a button: the button shows it is busy; out (an element) gets the
// message success(result) returns, or the error (onError(err) sees it first).
// Returns the action's result, or undefined when it failed.
export async function act(button, busyLabel, action, { out, success, onError } = {}) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  button.replaceChildren(h('span.spinner', { 'aria-hidden': 'true' }), ' ', busyLabel);
  if (out) out.replaceChildren();
  try {
    const r = await action();
    if (out && success) {
      const msg = success(r);
      if (msg) out.replaceChildren(h('div.result', { role: 'status' }, msg));
    }
    return r;
  } catch (e) {
    if (onError) onError(e);
    if (out) out.replaceChildren(errorBox(e, { retry: () => button.click() }));
    if (!e.kind) console.error(e);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = label;
  }
}

// Asks before something that cannot be undone; resolves true when confirmed.
export function confirmDialog(title, text, confirmLabel = 'Confirm') {
  const dialog = document.getElementById('confirm-dialog');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-yes').textContent = confirmLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'confirm');
      if (opener && opener.focus) opener.focus();
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    document.getElementById('confirm-no').focus();
  });
}

const GOOD = ['completed', 'sent', 'delivered', 'closed', 'ok', 'active', 'valid'];
const BAD = ['failed', 'open', 'critical', 'degraded', 'inactive', 'permanent', 'invalid_recipient', 'rejected'];
const WARN = ['waiting', 'queued', 'sending', 'half_open', 'warning', 'retry', 'running', 'again', 'circuit_open'];

export function badge(text, kind) {
  const k = kind || (GOOD.includes(text) ? 'ok' : BAD.includes(text) ? 'bad' : WARN.includes(text) ? 'warn' : 'neutral');
  return h(`span.badge.${k}`, { 'data-value': text }, String(text).replace(/_/g, ' '));
}

const pad = (n) => String(n).padStart(2, '0');
// A timestamp as local "YYYY-MM-DD HH:MM:SS" in a <time> element with the ISO value.
export function time(ts) {
  if (!ts) return h('span.muted', '—');
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return h('time', { datetime: d.toISOString(), title: d.toISOString() }, text);
}

export function ms(v) {
  if (v === null || v === undefined) return '—';
  const n = Number(v);
  return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${n.toFixed(n < 10 ? 1 : 0)} ms`;
}

export function json(v) {
  return h('pre', JSON.stringify(v, null, 2));
}

// A table: columns [{label, cell: row => content, class}], rows; caption for screen readers.
// A list that get() marked truncated says so under the table.
export function table(caption, columns, rows, { rowAttrs } = {}) {
  return h('div.table-wrap', h('table',
    h('caption.visually-hidden', caption),
    h('thead', h('tr', columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
    h('tbody', rows.map((r) => h('tr', rowAttrs ? rowAttrs(r) : null, columns.map((c) => h('td', { class: c.class }, c.cell(r))))))),
    truncatedNote(rows));
}

// Under a list that get() marked truncated: the API answers at most so many rows at a time.
export function truncatedNote(rows) {
  return rows.truncated ? h('p.muted.small.truncated', { role: 'status' },
    `The API answers at most ${rows.length} rows at a time: these are the first ${rows.length}, there may be more. Query the rest in SQL.`) : null;
}

// A labelled form field: label, the control, and an error line tied to it with aria-describedby.
let fieldSeq = 0;
export function field(label, control, { help, id } = {}) {
  const cid = id || control.id || `f${++fieldSeq}`;
  control.id = cid;
  const err = h('p.field-error', { id: `${cid}-error`, 'aria-live': 'polite' });
  const described = [help ? `${cid}-help` : null, `${cid}-error`].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', described);
  const el = h('div.field', h('label', { for: cid }, label), control,
    help ? h('p.muted.small', { id: `${cid}-help` }, help) : null, err);
  el.error = (msg) => {
    err.textContent = msg || '';
    if (msg) control.setAttribute('aria-invalid', 'true'); else control.removeAttribute('aria-invalid');
  };
  return el;
}

// The pager under a paginated table: "21–40 of 57" with Previous/Next.
export function pager(offset, limit, total, go) {
  const from = total === 0 ? 0 : offset + 1;
  const to = Math.min(offset + limit, total);
  return h('nav.pager', { 'aria-label': 'Pages' },
    h('button.secondary', { type: 'button', disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit)) }, 'Previous'),
    h('span', { role: 'status' }, `${from}–${to} of ${total}`),
    h('button.secondary', { type: 'button', disabled: offset + limit >= total, onclick: () => go(offset + limit) }, 'Next'));
}

// Calls f once per period (ms, or a function giving it) while the screen is shown (ctx.alive()),
// never overlapping, until f returns false.  After f throws (the screen shows its own errors) the
// period doubles with each failure in a row, up to maxBackoff ms, and is itself again once f succeeds.
export function poll(ctx, period, f, { maxBackoff = 60000 } = {}) {
  let failures = 0;
  const wait = () => {
    const base = typeof period === 'function' ? period() : period;
    return failures ? Math.min(maxBackoff, base * 2 ** failures) : base;
  };
  let stopped = false;
  const tick = async () => {
    if (stopped || !ctx.alive()) return;
    let again = true;
    try { again = (await f()) !== false; failures = 0; } catch { failures += 1; }
    if (again && !stopped && ctx.alive()) setTimeout(tick, wait());
  };
  setTimeout(tick, wait());
  return () => { stopped = true; };
}

export function debounce(f, wait) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => f(...args), wait); };
}
