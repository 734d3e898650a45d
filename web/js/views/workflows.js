// web/js/views/workflows.js — the workflow screens: the list; one workflow
// (its graph, definition, versions, activate/deactivate, a test run); and the
// JSON editor that validates while you type with /rpc/validate_workflow,
// shows each problem next to the definition (click one to go to it in the
// text) and marks the nodes concerned in the live graph.

import { get, request, rpc, ApiError } from '../api.js';
import { graph } from '../graph.js';
import { parse, locate, JsonSyntaxError } from '../jsonpos.js';
import { act, badge, debounce, empty, errorBox, field, h, href, json, load, table, time, put } from '../ui.js';

const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const drafts = new Map();        // unsaved editor texts, so a new key or a reload keeps them
let flash = null;                // a message for the next workflow screen ("Saved version 2")

const STARTER = `{
  "name": "My workflow",
  "nodes": [
    {"id": "start", "type": "trigger"},
    {"id": "hook", "type": "webhook"}
  ],
  "edges": [
    {"from": "start", "to": "hook"}
  ]
}`;

export function list(ctx) {
  const region = h('div');
  const refresh = () => load(region, 'Loading workflows…',
    () => get('workflows', { select: 'key,name,active,current_version,updated_at', order: 'key' }),
    (rows, r) => {
      if (!rows.length) {
        put(r, empty('No workflows yet', 'Create one with ', h('a', { href: '#/workflows/new' }, 'New workflow'),
          ', or with notiflow.put_workflow() in SQL.'));
        return;
      }
      put(r, table('Workflows', [
        { label: 'Key', cell: (w) => h('a', { href: href(`/workflows/${encodeURIComponent(w.key)}`) }, w.key) },
        { label: 'Name', cell: (w) => w.name || '' },
        { label: 'State', cell: (w) => badge(w.active ? 'active' : 'inactive') },
        { label: 'Version', class: 'num', cell: (w) => String(w.current_version) },
        { label: 'Changed', cell: (w) => time(w.updated_at) },
        { label: 'Runs', cell: (w) => h('a', { href: href('/executions', { workflow: w.key }), 'aria-label': `Executions of ${w.key}` }, 'Executions') },
      ], rows, { rowAttrs: (w) => ({ 'data-key': w.key }) }));
    });
  put(ctx.main, 
    h('div.page-head', h('h1', 'Workflows'),
      h('div.actions', h('a.button', { href: '#/workflows/new' }, 'New workflow'),
        h('button.secondary', { type: 'button', onclick: refresh }, 'Refresh'))),
    region);
  refresh();
}

export function show(ctx, key) {
  const region = h('div');
  put(ctx.main, region);
  const message = flash;
  flash = null;
  load(region, `Loading workflow ${key}…`,
    async () => (await request('rpc/get_workflow', { query: { key, select: '*,versions(version,created_at)' }, single: true })).data,
    (w, r) => {
      const state = h('span');
      const out = h('div.out');
      const toggle = h('button.secondary', { type: 'button' });
      const paint = () => {
        state.replaceChildren(badge(w.active ? 'active' : 'inactive'));
        toggle.textContent = w.active ? 'Deactivate' : 'Activate';
      };
      paint();
      toggle.addEventListener('click', async () => {
        const fn = w.active ? 'deactivate_workflow' : 'activate_workflow';
        const done = await act(toggle, w.active ? 'Deactivating…' : 'Activating…', () => rpc(fn, { key }), {
          out, success: () => (w.active ? `${key} is inactive: triggers are refused (409); running executions go on.` : `${key} is active again.`) });
        if (done !== undefined) { w.active = !w.active; paint(); }
      });
      put(r, 
        h('div.page-head', h('h1', key), state,
          h('div.actions',
            h('a.button', { href: href(`/workflows/${encodeURIComponent(key)}/edit`) }, 'Edit'),
            toggle,
            h('a.button.secondary', { href: href('/executions', { workflow: key }) }, 'Executions'))),
        w.name && w.name !== key ? h('p.muted', w.name) : null,
        message ? h('div.result', { role: 'status' }, message) : null,
        out,
        h('h2', `Graph (version ${w.current_version})`),
        graph(w.definition, { title: `Workflow ${key}` }),
        triggerForm(key, w.definition),
        h('details', h('summary', 'Definition (JSON)'), json(w.definition)),
        h('h2', 'Versions'),
        table('Versions', [
          { label: 'Version', class: 'num', cell: (v) => String(v.version) },
          { label: 'Created', cell: (v) => time(v.created_at) },
          { label: '', cell: (v) => (v.version === w.current_version ? badge('current', 'info') : '') },
        ], [...(w.versions || [])].reverse()));
    });
}

// A payload with every field the trigger node requires ("customer.email" → {"customer": {"email": ...}}).
function samplePayload(definition) {
  const trigger = (definition.nodes || []).find((n) => n && n.type === 'trigger');
  const payload = {};
  for (const path of (trigger && Array.isArray(trigger.required) ? trigger.required : [])) {
    const parts = String(path).split('.');
    let o = payload;
    parts.slice(0, -1).forEach((p) => { o = o[p] = typeof o[p] === 'object' && o[p] ? o[p] : {}; });
    o[parts[parts.length - 1]] = 'test';
  }
  return payload;
}

function triggerForm(key, definition) {
  const payload = h('textarea.code.small-code', { name: 'payload', spellcheck: 'false' });
  payload.value = JSON.stringify(samplePayload(definition), null, 2);
  const recipient = h('input', { type: 'text', name: 'recipient', spellcheck: 'false', autocomplete: 'off' });
  const idem = h('input', { type: 'text', name: 'idempotency_key', autocomplete: 'off' });
  const fPayload = field('Payload (JSON object)', payload, { id: 'trigger-payload' });
  const fRecipient = field('Recipient', recipient, { id: 'trigger-recipient',
    help: 'A subscriber id, or JSON such as {"email": "me@example.com"}; empty for none.' });
  const fIdem = field('Idempotency key (optional)', idem, { id: 'trigger-idempotency',
    help: 'The same key returns the first execution instead of starting another.' });
  const out = h('div.out');
  const submit = h('button', { type: 'submit' }, 'Trigger test run');
  const form = h('form.panel', { 'aria-labelledby': 'trigger-title', novalidate: true },
    h('h2', { id: 'trigger-title' }, 'Trigger a test run'), fPayload, fRecipient, fIdem,
    h('div.actions', submit), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    [fPayload, fRecipient, fIdem].forEach((f) => f.error(''));
    let p, rcpt = null;
    try {
      p = parse(payload.value || '{}').value;
      if (!p || typeof p !== 'object' || Array.isArray(p)) throw new Error('The payload must be a JSON object, e.g. {"order_id": 1}');
    } catch (e) {
      fPayload.error(e.message);
      payload.focus();
      return;
    }
    const rv = recipient.value.trim();
    if (rv) {
      if (/^[{["]/.test(rv)) {
        try { rcpt = parse(rv).value; } catch (e) { fRecipient.error(e.message); recipient.focus(); return; }
      } else {
        rcpt = rv;
      }
    }
    await act(submit, 'Triggering…',
      () => rpc('trigger', { workflow_key: key, payload: p, recipient: rcpt, idempotency_key: idem.value.trim() || null }), {
        out,
        success: (execId) => ['Started execution ', h('a', { href: href(`/executions/${execId}`), 'data-execution': String(execId) }, `#${execId}`), '.'],
        onError: (e) => {       // a 422 names the field: payload.*, recipient.*, idempotency_key
          for (const pr of e.problems ? e.problems() : []) {
            const f = pr.path.startsWith('payload') ? fPayload : pr.path.startsWith('recipient') ? fRecipient
              : pr.path.startsWith('idempotency') ? fIdem : null;
            if (f) f.error(`${pr.path}: ${pr.message}`);
          }
        },
      });
  });
  return form;
}

export function edit(ctx, key) {
  const isNew = key === null;
  const draftId = isNew ? '' : key;
  const region = h('div');
  put(ctx.main, region);
  if (isNew) {
    editor(ctx, region, null, drafts.get(draftId) || { key: '', text: STARTER });
    return;
  }
  load(region, `Loading workflow ${key}…`,
    async () => (await request('rpc/get_workflow', { query: { key, select: 'key,definition' }, single: true })).data,
    (w, r) => editor(ctx, r, key, drafts.get(draftId) || { key, text: JSON.stringify(w.definition, null, 2) }));
}

function editor(ctx, region, key, draft) {
  const isNew = key === null;
  const keyInput = h('input', { type: 'text', name: 'key', autocomplete: 'off', spellcheck: 'false', value: draft.key, readonly: !isNew });
  const fKey = field('Key', keyInput, { id: 'wf-key', help: isNew ? '1-128 letters, digits or _.:- starting with a letter or digit; cannot change later.' : 'The key of a stored workflow cannot change.' });
  const text = h('textarea.code', { name: 'definition', spellcheck: 'false', autocomplete: 'off', 'aria-describedby': 'wf-def-validity wf-def-problems' });
  text.id = 'wf-def';
  text.value = draft.text;
  const validity = h('p.validity', { id: 'wf-def-validity', role: 'status', 'aria-live': 'polite' });
  const problemsList = h('ul.problems', { id: 'wf-def-problems', 'aria-label': 'Problems of the definition' });
  const preview = h('div', { 'aria-live': 'off' });
  const out = h('div.out');
  const save = h('button', { type: 'submit' }, isNew ? 'Create workflow' : 'Save new version');
  let seq = 0;
  let parsed = null;

  const remember = () => drafts.set(isNew ? '' : key, { key: keyInput.value, text: text.value });

  // Shows problems [{path, message}] next to the definition; clicking one selects it in the text.
  function showProblems(problems, positions) {
    problemsList.replaceChildren(...problems.map((p) => {
      const where = positions && p.path !== undefined ? locate(positions, p.path) : null;
      const loc = where ? lineOf(where.start) : null;
      const label = [p.path ? h('span.path', p.path) : null, p.path ? ': ' : '', p.message, loc ? h('span.muted', ` (line ${loc})`) : ''];
      return h('li', { 'data-path': p.path || '' }, where
        ? h('button.link', { type: 'button', onclick: () => { text.focus(); text.setSelectionRange(where.start, where.end); } }, label)
        : h('span', label));
    }));
    text.setAttribute('aria-invalid', problems.length ? 'true' : 'false');
  }
  const lineOf = (pos) => text.value.slice(0, pos).split('\n').length;

  function drawPreview(definition, problems = []) {
    const bad = new Set();
    for (const p of problems) {
      const m = /^nodes\[(\d+)\]/.exec(p.path || '');
      if (m) bad.add(Number(m[1]));
    }
    preview.replaceChildren(graph(definition, { title: 'Preview', problems: bad }));
  }

  const validate = async () => {
    const mine = ++seq;
    let doc;
    try {
      doc = parse(text.value);
    } catch (e) {
      if (!(e instanceof JsonSyntaxError)) throw e;
      parsed = null;
      validity.className = 'validity bad';
      validity.textContent = 'The definition is not valid JSON.';
      showProblems([{ path: '', message: e.message }], null);
      problemsList.firstChild.replaceChildren(h('button.link', { type: 'button', onclick: () => { text.focus(); text.setSelectionRange(e.pos, e.pos + 1); } }, e.message));
      return;
    }
    parsed = doc.value;
    drawPreview(parsed);
    validity.className = 'validity';
    validity.replaceChildren(h('span.spinner', { 'aria-hidden': 'true' }), ' Checking…');
    try {
      const rows = await rpc('validate_workflow', { definition: parsed });
      if (mine !== seq) return;
      if (!rows.length) {
        const n = Array.isArray(parsed.nodes) ? parsed.nodes.length : 0;
        const e = Array.isArray(parsed.edges) ? parsed.edges.length : 0;
        validity.className = 'validity ok';
        validity.textContent = `Valid: ${n} node${n === 1 ? '' : 's'}, ${e} edge${e === 1 ? '' : 's'}.`;
        showProblems([], doc.positions);
      } else {
        validity.className = 'validity bad';
        validity.textContent = `${rows.length} problem${rows.length === 1 ? '' : 's'}:`;
        showProblems(rows, doc.positions);
        drawPreview(parsed, rows);
      }
    } catch (e) {
      if (mine !== seq) return;
      if (e instanceof ApiError && e.status === 422) {
        validity.className = 'validity bad';
        validity.textContent = 'Not a definition:';
        showProblems(e.problems(), doc.positions);
        return;
      }
      validity.className = 'validity';
      validity.replaceChildren(h('span.muted', 'Could not check the definition: '), errorBox(e, { retry: validate }));
    }
  };
  const later = debounce(validate, 300);
  text.addEventListener('input', () => { remember(); later(); });
  text.addEventListener('keydown', (ev) => {          // Tab indents; Escape then Tab leaves the field
    if (ev.key === 'Escape') { text.dataset.escaped = '1'; return; }
    if (ev.key === 'Tab' && !ev.shiftKey && !text.dataset.escaped) {
      ev.preventDefault();
      text.setRangeText('  ', text.selectionStart, text.selectionEnd, 'end');
      text.dispatchEvent(new Event('input'));
    }
    delete text.dataset.escaped;
  });
  const checkKey = () => {
    const v = keyInput.value.trim();
    fKey.error(v && !KEY_RE.test(v) ? 'Use 1-128 letters, digits or _.:- starting with a letter or digit.' : '');
  };
  keyInput.addEventListener('input', () => { remember(); checkKey(); });

  const form = h('form', { novalidate: true, 'aria-labelledby': 'wf-edit-title' },
    h('div.page-head', h('h1', { id: 'wf-edit-title' }, isNew ? 'New workflow' : `Edit ${key}`),
      h('div.actions', h('a.button.secondary', { href: isNew ? '#/workflows' : href(`/workflows/${encodeURIComponent(key)}`) }, 'Cancel'))),
    h('div.grid2',
      h('div',
        fKey,
        h('div.field',
          h('label', { for: 'wf-def' }, 'Definition (JSON)'),
          h('p.muted.small', 'Nodes and edges as in docs/workflows.md; checked as you type. Tab indents; press Escape first to leave with Tab.'),
          text, validity, problemsList),
        h('div.actions', save), out),
      h('div', h('h2', 'Preview'), preview)));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const k = keyInput.value.trim();
    if (!k) { fKey.error('Enter a key.'); keyInput.focus(); return; }
    checkKey();
    if (!KEY_RE.test(k)) { keyInput.focus(); return; }
    let definition;
    try { definition = parse(text.value).value; } catch (e) { await validate(); text.focus(); return; }
    const version = await act(save, 'Saving…', () => rpc('put_workflow', { key: k, definition }), {
      out,
      onError: (e) => {         // 422: the key's problem next to the key, the definition's next to the definition
        if (!(e instanceof ApiError) || e.status !== 422) return;
        const problems = e.problems();
        const keyProblems = problems.filter((pr) => pr.path === 'key');
        if (keyProblems.length) fKey.error(keyProblems.map((pr) => pr.message).join(' '));
        const rest = problems.filter((pr) => pr.path !== 'key');
        if (rest.length) {
          validity.className = 'validity bad';
          validity.textContent = `${rest.length} problem${rest.length === 1 ? '' : 's'}:`;
          showProblems(rest, parse(text.value).positions);
        }
      },
    });
    if (version === undefined) return;
    drafts.delete(isNew ? '' : key);
    flash = `Saved ${k} as version ${version}.`;
    ctx.go(`/workflows/${encodeURIComponent(k)}`);
  });
  region.append(form);
  if (isNew) checkKey();
  validate();
}
