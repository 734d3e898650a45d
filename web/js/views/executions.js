// web/js/views/executions.js — the execution screens: a list filtered by
// workflow, status and time, paginated with PostgREST's exact counts; and one
// execution as a graph of the steps it ran and a timeline of its steps and
// deliveries with every attempt, provider event and error, refreshed while
// the execution still runs or waits.

import { ApiError, get, page, rpc } from '../api.js';
import { graph } from '../graph.js';
import { act, badge, confirmDialog, empty, errorBox, field, h, href, json, load, ms, pager, poll, table, time, put } from '../ui.js';

const STATUSES = ['running', 'waiting', 'completed', 'failed', 'cancelled'];
const SIZES = [10, 20, 50, 100];

function recipientText(e) {
  if (e.subscriber_id) return e.subscriber_id;
  if (e.recipient === null || e.recipient === undefined) return '';
  const r = e.recipient;
  return typeof r === 'string' ? r : r.email || r.phone || r.name || JSON.stringify(r);
}

export function list(ctx) {
  const q = ctx.query;
  const offset = Math.max(0, Number(q.get('offset')) || 0);
  const limit = Math.min(100, Math.max(1, Number(q.get('limit')) || 20));
  const wfSelect = h('select', { name: 'workflow' }, h('option', { value: '' }, 'Any workflow'));
  if (q.get('workflow')) wfSelect.append(h('option', { value: q.get('workflow'), selected: true }, q.get('workflow')));
  const stSelect = h('select', { name: 'status' }, h('option', { value: '' }, 'Any status'),
    STATUSES.map((st) => h('option', { value: st, selected: q.get('status') === st }, st)));
  const from = h('input', { type: 'datetime-local', name: 'from', value: q.get('from') || '', step: 1 });
  const to = h('input', { type: 'datetime-local', name: 'to', value: q.get('to') || '', step: 1 });
  const size = h('select', { name: 'limit' }, [...new Set([...SIZES, limit])].sort((a, b) => a - b)
    .map((n) => h('option', { value: n, selected: n === limit }, String(n))));
  const fWf = field('Workflow', wfSelect, { id: 'ex-workflow' });
  const fTo = field('Created before', to, { id: 'ex-to' });
  const form = h('form.filters', { 'aria-label': 'Filter executions' },
    fWf, field('Status', stSelect, { id: 'ex-status' }), field('Created from', from, { id: 'ex-from' }), fTo,
    field('Per page', size, { id: 'ex-limit' }),
    h('div.actions', h('button', { type: 'submit' }, 'Apply'), h('a.button.secondary', { href: '#/executions' }, 'Clear')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (from.value && to.value && new Date(from.value) >= new Date(to.value)) {
      fTo.error('Must be after "Created from".');
      to.focus();
      return;
    }
    ctx.go('/executions', { workflow: wfSelect.value, status: stSelect.value, from: from.value, to: to.value,
                            limit: Number(size.value) === 20 ? '' : size.value });
  });
  // the workflow choices; the list works without them
  get('workflows', { select: 'key', order: 'key' }).then((rows) => {
    for (const w of rows) if (w.key !== q.get('workflow')) wfSelect.append(h('option', { value: w.key }, w.key));
  }, () => { fWf.error('Could not load the workflows; type none, filter by status or time.'); });

  const region = h('div');
  const refresh = () => load(region, 'Loading executions…', () => {
    const query = [['select', 'id,workflow_key,workflow_version,status,subscriber_id,recipient,error,created_at,finished_at'],
                   ['order', 'id.desc']];
    if (q.get('workflow')) query.push(['workflow_key', `eq.${q.get('workflow')}`]);
    if (q.get('status')) query.push(['status', `eq.${q.get('status')}`]);
    if (q.get('from')) query.push(['created_at', `gte.${new Date(q.get('from')).toISOString()}`]);
    if (q.get('to')) query.push(['created_at', `lt.${new Date(q.get('to')).toISOString()}`]);
    return page('executions', query, { offset, limit });
  }, ({ rows, total }, r) => {
    if (!rows.length) {
      put(r, total > 0 && offset > 0
        ? empty('No executions on this page', h('a', { href: href('/executions', { ...Object.fromEntries(q), offset: 0 }) }, 'Go to the first page.'))
        : empty('No executions match', [...q.keys()].length ? 'Change or clear the filters.' : 'Trigger a workflow to see its executions here.'));
      return;
    }
    put(r, table('Executions', [
      { label: 'Id', class: 'num', cell: (e) => h('a', { href: href(`/executions/${e.id}`) }, `#${e.id}`) },
      { label: 'Workflow', cell: (e) => h('a', { href: href(`/workflows/${encodeURIComponent(e.workflow_key)}`) }, e.workflow_key) },
      { label: 'Version', class: 'num', cell: (e) => String(e.workflow_version) },
      { label: 'Status', cell: (e) => badge(e.status) },
      { label: 'Recipient', cell: recipientText },
      { label: 'Created', cell: (e) => time(e.created_at) },
      { label: 'Finished', cell: (e) => time(e.finished_at) },
      { label: 'Error', cell: (e) => e.error || '' },
    ], rows, { rowAttrs: (e) => ({ 'data-id': String(e.id), 'data-status': e.status }) }),
    pager(offset, limit, total, (o) => ctx.go('/executions', { ...Object.fromEntries(q), offset: o })));
  });
  put(ctx.main, h('div.page-head', h('h1', 'Executions'),
    h('div.actions', h('button.secondary', { type: 'button', onclick: () => refresh() }, 'Refresh'))), form, region);
  refresh();
}

const LIVE = ['running', 'waiting'];
const PENDING = ['queued', 'sending'];

export function show(ctx, id) {
  const region = h('div');
  const live = h('p.muted.small', { role: 'status' });
  put(ctx.main, region);
  let definition;     // of the pinned version, fetched once
  let last = '';

  const fetch = async () => {
    const rows = await get('executions', { id: `eq.${id}`, select: '*,steps(*),deliveries(*,attempts(*),events(*))' });
    if (!rows.length) {
      throw new ApiError({ kind: 'http', status: 404, code: '42704', message: `no execution has id ${id}` });
    }
    const ex = rows[0];
    if (definition === undefined) {
      const v = await get('workflow_versions', { workflow_key: `eq.${ex.workflow_key}`, version: `eq.${ex.workflow_version}`, select: 'definition' });
      definition = v.length ? v[0].definition : null;
    }
    return ex;
  };
  const busy = (ex) => ex.status === 'running' || (ex.deliveries || []).some((d) => PENDING.includes(d.status));
  const running = (ex) => LIVE.includes(ex.status) || busy(ex);
  let current = null;    // the last execution read, for the polling period

  const render = (ex, r) => {
    last = JSON.stringify(ex);
    const out = h('div.out');
    const actions = h('div.actions',
      h('a.button.secondary', { href: href(`/workflows/${encodeURIComponent(ex.workflow_key)}`) }, 'Workflow'),
      h('a.button.secondary', { href: href('/executions', { workflow: ex.workflow_key }) }, 'Its executions'));
    if (LIVE.includes(ex.status)) {
      const cancel = h('button.danger', { type: 'button' }, 'Cancel execution');
      cancel.addEventListener('click', async () => {
        if (!await confirmDialog(`Cancel execution #${id}?`, 'It stops where it is and its queued deliveries are cancelled. This cannot be undone.', 'Cancel execution')) return;
        const done = await act(cancel, 'Cancelling…', () => rpc('cancel_execution', { execution_id: id }), {
          out, success: (ok) => (ok ? 'Cancelled.' : 'It had already ended.') });
        if (done !== undefined) refreshNow();
      });
      actions.prepend(cancel);
    }
    const steps = Object.fromEntries((ex.steps || []).map((st) => [st.node_id, st.status]));
    current = ex;
    live.textContent = busy(ex) ? 'Updating every second while it runs or waits for deliveries.'
      : running(ex) ? 'Waiting; updating every 5 seconds.' : '';
    put(r, 
      h('div.page-head', h('h1', `Execution #${ex.id}`), h('span', { id: 'execution-status', 'data-status': ex.status }, badge(ex.status)), actions),
      live, out,
      h('div.panel', h('dl.facts',
        h('dt', 'Workflow'), h('dd', `${ex.workflow_key} (version ${ex.workflow_version})`),
        h('dt', 'Recipient'), h('dd', recipientText(ex) || h('span.muted', 'none')),
        ex.idempotency_key ? [h('dt', 'Idempotency key'), h('dd', ex.idempotency_key)] : null,
        h('dt', 'Created'), h('dd', time(ex.created_at)),
        h('dt', 'Finished'), h('dd', time(ex.finished_at)),
        ex.wake_at ? [h('dt', 'Wakes at'), h('dd', time(ex.wake_at))] : null,
        ex.error ? [h('dt', 'Error'), h('dd.field-error', ex.error)] : null),
        h('details', h('summary', 'Payload'), json(ex.payload))),
      definition ? [h('h2', 'Graph'), graph(definition, { title: `Execution #${ex.id}`, steps })] : null,
      h('h2', 'Timeline'),
      timeline(ex));
  };

  // a failed look shows its error and throws: poll doubles its period after each, up to a minute
  let failing = false;
  const refreshNow = async () => {
    try {
      const ex = await fetch();
      const recovered = failing;          // the error box in the status line goes with a render
      failing = false;
      if ((recovered || JSON.stringify(ex) !== last) && ctx.alive()) { region.replaceChildren(); render(ex, region); }
      return running(ex);
    } catch (e) {
      failing = true;
      if (ctx.alive()) live.replaceChildren(errorBox(e, { retry: () => refreshNow().catch(() => {}) }));
      throw e;
    }
  };
  const period = () => (current && !busy(current) ? 5000 : 1000);
  load(region, `Loading execution #${id}…`, fetch, render).then((ex) => {
    if (ex && running(ex)) poll(ctx, period, refreshNow, { maxBackoff: 60000 });
  });
}

// The steps in the order they ran, each followed by the deliveries its node created (with their
// attempts and provider events); deliveries without a step (none yet) at the end.
export function timeline(ex) {
  const deliveries = [...(ex.deliveries || [])].sort((a, b) => a.id - b.id);
  const items = [];
  for (const st of [...(ex.steps || [])].sort((a, b) => a.seq - b.seq)) {
    items.push({ kind: 'step', st });
    for (const d of deliveries) if (d.node_id === st.node_id) items.push({ kind: 'delivery', d });
  }
  const placed = new Set(items.filter((it) => it.kind === 'delivery').map((it) => it.d.id));
  for (const d of deliveries) if (!placed.has(d.id)) items.push({ kind: 'delivery', d });
  if (!items.length) return empty('Nothing ran yet');
  const tone = (status) => (['completed', 'sent', 'delivered'].includes(status) ? 'ok' : ['failed', 'cancelled'].includes(status) ? 'bad' : 'warn');
  return h('ol.timeline', items.map((it) => {
    if (it.kind === 'step') {
      const st = it.st;
      return h('li', { class: tone(st.status), 'data-kind': 'step', 'data-node': st.node_id },
        h('div', h('strong', `Step ${st.node_id}`), ` (${st.node_type}) `, badge(st.status), st.outcome ? [' outcome ', h('code', st.outcome)] : null),
        h('div.when', time(st.started_at), st.finished_at ? [' → ', time(st.finished_at)] : null),
        st.error ? h('p.field-error', st.error) : null,
        st.output && Object.keys(st.output).length ? h('details.small', h('summary', 'Output'), json(st.output)) : null);
    }
    return deliveryItem(it.d, tone);
  }));
}

export function deliveryItem(d, tone) {
  return h('li', { class: tone(d.status), 'data-kind': 'delivery', 'data-delivery': String(d.id), 'data-status': d.status },
    h('div', h('strong', h('a', { href: href(`/deliveries/${d.id}`) }, `Delivery #${d.id}`)), ` ${d.channel}`,
      d.provider ? ` via ${d.provider}` : '', d.recipient ? ` to ${d.recipient}` : '', ' ', badge(d.status)),
    h('div.when', time(d.created_at), d.sent_at ? [' · sent ', time(d.sent_at)] : null,
      d.left_providers && d.left_providers.length ? ` · left ${d.left_providers.join(', ')}` : ''),
    d.last_error ? h('p.field-error', d.last_error) : null,
    attemptsTable(d.attempts || []),
    (d.events || []).length ? h('div', h('h3', 'Provider events'), table('Provider events', [
      { label: 'Event', cell: (ev) => badge(ev.event, 'info') },
      { label: 'Reason', cell: (ev) => ev.reason || '' },
      { label: 'At', cell: (ev) => time(ev.occurred_at || ev.received_at) },
    ], d.events)) : null,
    h('details.small', h('summary', 'Content'), json(d.content)));
}

export function attemptsTable(attempts) {
  if (!attempts.length) return h('p.muted.small', 'No attempt yet.');
  return table('Attempts', [
    { label: 'Attempt', class: 'num', cell: (a) => String(a.attempt) },
    { label: 'Provider', cell: (a) => a.provider },
    { label: 'Result', cell: (a) => badge(a.error_class) },
    { label: 'Code', class: 'num', cell: (a) => (a.status_code ? String(a.status_code) : a.curl_code ? `curl ${a.curl_code}` : '—') },
    { label: 'Latency', class: 'num', cell: (a) => ms(a.latency_ms) },
    { label: 'Error', cell: (a) => a.error || '' },
    { label: 'At', cell: (a) => time(a.created_at) },
  ], attempts, { rowAttrs: (a) => ({ 'data-attempt': String(a.attempt), 'data-result': a.error_class }) });
}
