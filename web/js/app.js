// web/js/app.js — the console's entry point: the hash router (#/workflows,
// #/executions/42, ...), the navigation, the activity bar, and the
// Connection dialog where the API address and key are entered (kept in
// localStorage by api.js; nothing is built in).

import { getConnection, setConnection, onActivity, onConnectionChange, whoami } from './api.js';
import { h, errorBox, hooks, href, session, spinner } from './ui.js';
import * as workflows from './views/workflows.js';
import * as executions from './views/executions.js';
import * as deliveries from './views/deliveries.js';
import * as providers from './views/providers.js';
import * as analytics from './views/analytics.js';
import * as alerts from './views/alerts.js';

const routes = [
  [/^\/workflows$/, 'workflows', (c) => workflows.list(c)],
  [/^\/workflows\/new$/, 'workflows', (c) => workflows.edit(c, null)],
  [/^\/workflows\/([^/]+)\/edit$/, 'workflows', (c, key) => workflows.edit(c, decodeURIComponent(key))],
  [/^\/workflows\/([^/]+)$/, 'workflows', (c, key) => workflows.show(c, decodeURIComponent(key))],
  [/^\/executions$/, 'executions', (c) => executions.list(c)],
  [/^\/executions\/(\d+)$/, 'executions', (c, id) => executions.show(c, Number(id))],
  [/^\/deliveries$/, 'deliveries', (c) => deliveries.list(c)],
  [/^\/deliveries\/(\d+)$/, 'deliveries', (c, id) => deliveries.show(c, Number(id))],
  [/^\/dead-letters$/, 'dead-letters', (c) => deliveries.deadLetters(c)],
  [/^\/providers$/, 'providers', (c) => providers.list(c)],
  [/^\/analytics$/, 'analytics', (c) => analytics.show(c)],
  [/^\/alerts$/, 'alerts', (c) => alerts.show(c)],
];

const main = document.getElementById('main');
let generation = 0;

// Parses location.hash into a path and its query: "#/executions?status=failed".
function current() {
  const raw = location.hash.replace(/^#/, '') || '/workflows';
  const [path, qs] = raw.split('?');
  return { path, query: new URLSearchParams(qs || '') };
}

function render({ focus = false } = {}) {
  const gen = ++generation;
  const { path, query } = current();
  const ctx = {
    main, query, path,
    alive: () => gen === generation,
    go: (p, q) => { location.hash = href(p, q); },
    rerender: () => render(),
  };
  document.querySelectorAll('nav a[data-section]').forEach((a) => a.removeAttribute('aria-current'));
  main.replaceChildren();
  for (const [re, section, view] of routes) {
    const m = re.exec(path);
    if (!m) continue;
    const link = document.querySelector(`nav a[data-section="${section}"]`);
    if (link) link.setAttribute('aria-current', 'page');
    try {
      view(ctx, ...m.slice(1));
    } catch (e) {
      console.error(e);
      main.append(errorBox(e));
    }
    if (focus) {
      const h1 = main.querySelector('h1');
      if (h1) { h1.tabIndex = -1; h1.focus(); }
    }
    return;
  }
  main.append(h('h1', 'Not found'), h('p', 'There is no such page. ', h('a', { href: '#/workflows' }, 'Go to the workflows.')));
}

// --- the activity bar -----------------------------------------------------------------------

const bar = document.getElementById('activity');
onActivity((n) => { bar.hidden = n === 0; });

// --- the Connection dialog ------------------------------------------------------------------

const dialog = document.getElementById('connection-dialog');
const form = document.getElementById('connection-form');
const urlInput = document.getElementById('conn-url');
const keyInput = document.getElementById('conn-key');
const urlError = document.getElementById('conn-url-error');
const status = document.getElementById('conn-status');
const button = document.getElementById('connection-button');

function showStatus() {
  const { url, key } = getConnection();
  let host = '';
  try { host = url ? new URL(url).host : ''; } catch { host = url; }
  button.classList.toggle('bad', !url);
  button.textContent = !url ? 'Connection: not set'
    : `${session.role ? (session.role === 'anonymous' ? 'No key' : `Key: ${session.role}`) : key ? 'Key set' : 'No key'} · ${host}`;
  button.setAttribute('aria-label', `Connection settings (${button.textContent})`);
}

function openConnection(focusKey = false) {
  const { url, key } = getConnection();
  urlInput.value = url;
  keyInput.value = key;
  urlError.textContent = '';
  urlInput.removeAttribute('aria-invalid');
  status.replaceChildren();
  if (!dialog.open) dialog.showModal();
  (focusKey && url ? keyInput : urlInput).focus();
}
hooks.openConnection = openConnection;

// A key belongs to the API it was made for: once the address is changed (not while it is typed) to
// another origin, the key field is emptied when it still holds the saved key, so that key is not
// sent to a host it was not for; changed back to the saved origin, an emptied field gets it again.
function originOf(u) { try { return new URL(u).origin; } catch { return null; } }
urlInput.addEventListener('change', () => {
  const saved = getConnection();
  if (!saved.key) return;
  const same = originOf(urlInput.value.trim()) === originOf(saved.url);
  if (!same && keyInput.value === saved.key) keyInput.value = '';
  else if (same && keyInput.value === '') keyInput.value = saved.key;
});

// Asks the API what the key may do; the status line says so (or shows the error).
async function checkConnection() {
  status.replaceChildren(spinner('Connecting…'));
  try {
    const { role } = await whoami();
    session.role = role;
    status.replaceChildren(h('p.result', role === 'anonymous'
      ? 'Connected without a key: only public endpoints answer.'
      : `Connected with a ${role} key.`));
    return true;
  } catch (e) {
    session.role = null;
    status.replaceChildren(errorBox(e, { retry: checkConnection }));
    return false;
  } finally {
    showStatus();
  }
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const url = urlInput.value.trim();
  let ok = false;
  try { ok = /^https?:$/.test(new URL(url).protocol); } catch { ok = false; }
  if (!ok) {
    urlError.textContent = 'Enter an address starting with http:// or https://, e.g. http://127.0.0.1:3000';
    urlInput.setAttribute('aria-invalid', 'true');
    urlInput.focus();
    return;
  }
  urlError.textContent = '';
  urlInput.removeAttribute('aria-invalid');
  session.role = null;
  setConnection({ url, key: keyInput.value });
  if (await checkConnection()) {
    dialog.close();
    render();
  }
});
document.getElementById('conn-key-show').addEventListener('click', (ev) => {
  const shown = keyInput.type === 'text';
  keyInput.type = shown ? 'password' : 'text';
  ev.currentTarget.textContent = shown ? 'Show' : 'Hide';
  ev.currentTarget.setAttribute('aria-pressed', String(!shown));
});
document.getElementById('conn-forget').addEventListener('click', () => {
  keyInput.value = '';
  setConnection({ url: getConnection().url, key: '' });
  session.role = null;
  showStatus();
  status.replaceChildren(h('p.result', 'The key is forgotten.'));
  keyInput.focus();
});
document.getElementById('conn-cancel').addEventListener('click', () => dialog.close());
dialog.addEventListener('close', () => button.focus());
button.addEventListener('click', () => openConnection(false));
onConnectionChange(showStatus);

// --- start ------------------------------------------------------------------------------------

window.addEventListener('hashchange', () => render({ focus: true }));
showStatus();
render();
if (!getConnection().url) {
  openConnection(false);
} else {
  whoami().then(({ role }) => { session.role = role; showStatus(); }, () => { session.role = null; showStatus(); });
}
