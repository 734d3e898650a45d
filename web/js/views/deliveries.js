// web/js/views/deliveries.js — the delivery screens: deliveries filtered by
// status, channel and provider; one delivery with its attempts and provider
// events (refreshed until it ends); and the dead letters, each replayable
// after a confirmation.

import { ApiError, get, page, rpc } from '../api.js';
import { act, badge, confirmDialog, empty, field, h, href, json, load, pager, poll, table, time, put } from '../ui.js';
import { attemptsTable } from './executions.js';

const LIMIT = 20;
const STATUSES = ['queued', 'sending', 'sent', 'delivered', 'failed', 'cancelled'];
const CHANNELS = ['email', 'sms', 'push', 'chat', 'webhook'];

function executionLink(d) {
  return d.execution_id === 0 ? h('span.muted', 'test message')
    : h('a', { href: href(`/executions/${d.execution_id}`) }, `#${d.execution_id}`);
}

export function list(ctx) {
  const q = ctx.query;
  const offset = Math.max(0, Number(q.get('offset')) || 0);
  const status = h('select', { name: 'status' }, h('option', { value: '' }, 'Any status'),
    STATUSES.map((v) => h('option', { value: v, selected: q.get('status') === v }, v)));
  const channel = h('select', { name: 'channel' }, h('option', { value: '' }, 'Any channel'),
    CHANNELS.map((v) => h('option', { value: v, selected: q.get('channel') === v }, v)));
  const provider = h('input', { type: 'text', name: 'provider', value: q.get('provider') || '', autocomplete: 'off' });
  const form = h('form.filters', { 'aria-label': 'Filter deliveries' },
    field('Status', status, { id: 'dl-status' }), field('Channel', channel, { id: 'dl-channel' }),
    field('Provider', provider, { id: 'dl-provider' }),
    h('div.actions', h('button', { type: 'submit' }, 'Apply'), h('a.button.secondary', { href: '#/deliveries' }, 'Clear')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.go('/deliveries', { status: status.value, channel: channel.value, provider: provider.value.trim() });
  });
  const region = h('div');
  const refresh = () => load(region, 'Loading deliveries…', () => {
    const query = [['select', 'id,execution_id,node_id,channel,provider,recipient,status,attempt_count,last_error,created_at'], ['order', 'id.desc']];
    if (q.get('status')) query.push(['status', `eq.${q.get('status')}`]);
    if (q.get('channel')) query.push(['channel', `eq.${q.get('channel')}`]);
    if (q.get('provider')) query.push(['provider', `eq.${q.get('provider')}`]);
    return page('deliveries', query, { offset, limit: LIMIT });
  }, ({ rows, total }, r) => {
    if (!rows.length) {
      put(r, empty('No deliveries match', [...q.keys()].length ? 'Change or clear the filters.' : 'Deliveries appear when workflows send messages.'));
      return;
    }
    put(r, table('Deliveries', [
      { label: 'Id', class: 'num', cell: (d) => h('a', { href: href(`/deliveries/${d.id}`) }, `#${d.id}`) },
      { label: 'Execution', cell: executionLink },
      { label: 'Channel', cell: (d) => d.channel },
      { label: 'Provider', cell: (d) => d.provider || '—' },
      { label: 'Recipient', cell: (d) => d.recipient || '' },
      { label: 'Status', cell: (d) => badge(d.status) },
      { label: 'Attempts', class: 'num', cell: (d) => String(d.attempt_count) },
      { label: 'Last error', cell: (d) => d.last_error || '' },
      { label: 'Created', cell: (d) => time(d.created_at) },
    ], rows, { rowAttrs: (d) => ({ 'data-id': String(d.id), 'data-status': d.status }) }),
    pager(offset, LIMIT, total, (o) => ctx.go('/deliveries', { ...Object.fromEntries(q), offset: o })));
  });
  put(ctx.main, h('div.page-head', h('h1', 'Deliveries'),
    h('div.actions', h('a.button.secondary', { href: '#/dead-letters' }, 'Dead letters'),
      h('button.secondary', { type: 'button', onclick: () => refresh() }, 'Refresh'))), form, region);
  refresh();
}

const PENDING = ['queued', 'sending'];

export function show(ctx, id) {
  const region = h('div');
  put(ctx.main, region);
  let last = '';
  const fetch = async () => {
    const rows = await get('deliveries', { id: `eq.${id}`, select: '*,attempts(*),events(*)' });
    if (!rows.length) throw new ApiError({ kind: 'http', status: 404, code: '42704', message: `no delivery has id ${id}` });
    return rows[0];
  };
  const render = (d, r) => {
    last = JSON.stringify(d);
    put(r, 
      h('div.page-head', h('h1', `Delivery #${d.id}`), h('span', { id: 'delivery-status', 'data-status': d.status }, badge(d.status))),
      PENDING.includes(d.status) ? h('p.muted.small', { role: 'status' }, 'Updating until it is sent or fails (every second; a retry due later, when it is due).') : null,
      h('div.panel', h('dl.facts',
        h('dt', 'Execution'), h('dd', executionLink(d), d.execution_id ? ` (node ${d.node_id})` : ''),
        h('dt', 'Channel'), h('dd', d.channel),
        h('dt', 'Provider'), h('dd', d.provider || '—'),
        h('dt', 'Recipient'), h('dd', d.recipient || '—'),
        h('dt', 'Created'), h('dd', time(d.created_at)),
        h('dt', 'Sent'), h('dd', time(d.sent_at)),
        h('dt', 'Next attempt'), h('dd', PENDING.includes(d.status) ? time(d.next_attempt_at) : '—'),
        d.provider_message_id ? [h('dt', 'Provider message id'), h('dd', h('code', d.provider_message_id))] : null,
        d.left_providers && d.left_providers.length ? [h('dt', 'Providers left'), h('dd', d.left_providers.join(', '))] : null,
        d.last_error ? [h('dt', 'Last error'), h('dd.field-error', d.last_error)] : null)),
      h('h2', 'Attempts'), attemptsTable(d.attempts || []),
      h('h2', 'Provider events'),
      (d.events || []).length ? table('Provider events', [
        { label: 'Event', cell: (ev) => badge(ev.event, 'info') },
        { label: 'Reason', cell: (ev) => ev.reason || '' },
        { label: 'Occurred', cell: (ev) => time(ev.occurred_at) },
        { label: 'Received', cell: (ev) => time(ev.received_at) },
      ], d.events) : empty('No provider events', 'Providers report delivered, bounced, opened… through their callbacks.'),
      h('h2', 'Content'), json(d.content));
  };
  load(region, `Loading delivery #${id}…`, fetch, render).then((d) => {
    if (!d || !PENDING.includes(d.status)) return;
    // every second while it may change any moment; a retry due later is looked at when it is due
    // (at most every 30 s); after failed requests less and less often (poll's back-off, up to 30 s)
    let cur = d;
    const period = () => {
      const until = cur.status === 'queued' && cur.next_attempt_at ? Date.parse(cur.next_attempt_at) - Date.now() : 0;
      return until > 1000 ? Math.min(until, 30000) : 1000;
    };
    poll(ctx, period, async () => {
      const n = await fetch();
      cur = n;
      if (JSON.stringify(n) !== last && ctx.alive()) { region.replaceChildren(); render(n, region); }
      return PENDING.includes(n.status);
    }, { maxBackoff: 30000 });
  });
}

function decodePayload(b64) {
  if (!b64) return null;
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
  } catch {
    return `(${bytes.length} bytes of binary data)`;
  }
}

export function deadLetters(ctx) {
  const q = ctx.query;
  const all = q.get('show') === 'all';
  const offset = Math.max(0, Number(q.get('offset')) || 0);
  const out = h('div.out', { id: 'dead-letter-result' });
  const region = h('div');
  const refresh = () => load(region, 'Loading dead letters…', () => {
    const query = [['order', 'id.desc']];
    if (!all) query.push(['replayed_at', 'is.null']);
    return page('dead_letters', query, { offset, limit: LIMIT });
  }, ({ rows, total }, r) => {
    if (!rows.length) {
      put(r, empty(all ? 'No dead letters' : 'No dead letters waiting',
        'A delivery that fails for good (after its retries and every provider of its channel) ends up here, kept whole for replay.'));
      return;
    }
    put(r, table('Dead letters', [
      { label: 'Id', class: 'num', cell: (l) => `#${l.id}` },
      { label: 'Source', cell: (l) => l.source },
      { label: 'Delivery', cell: (l) => (l.delivery_id ? h('a', { href: href(`/deliveries/${l.delivery_id}`) }, `#${l.delivery_id}`) : l.reference || '') },
      { label: 'Error', cell: (l) => h('div', l.error, h('details.small', h('summary', 'Details and payload'),
        json(l.details), l.payload_base64 ? h('pre', decodePayload(l.payload_base64)) : null)) },
      { label: 'Created', cell: (l) => time(l.created_at) },
      { label: 'Replayed', cell: (l) => time(l.replayed_at) },
      { label: 'Action', cell: (l) => (l.source === 'delivery' && !l.replayed_at ? replayButton(l) : '') },
    ], rows, { rowAttrs: (l) => ({ 'data-id': String(l.id) }) }),
    pager(offset, LIMIT, total, (o) => ctx.go('/dead-letters', { show: all ? 'all' : '', offset: o })));
  });

  function replayButton(l) {
    const b = h('button', { type: 'button', 'aria-label': `Replay dead letter #${l.id}` }, 'Replay');
    b.addEventListener('click', async () => {
      const channel = l.details && l.details.channel ? `the ${l.details.channel} channel's` : 'its channel\'s';
      if (!await confirmDialog(`Replay dead letter #${l.id}?`,
        `Delivery #${l.delivery_id} is queued again through ${channel} first enabled provider. ` +
        'If the provider did receive it before, the recipient may get the message twice.', 'Replay')) return;
      const id = await act(b, 'Replaying…', () => rpc('replay_dead_letter', { id: l.id }), {
        out,
        success: (deliveryId) => [`Dead letter #${l.id} is queued again as `,
          h('a', { href: href(`/deliveries/${deliveryId}`), 'data-delivery': String(deliveryId) }, `delivery #${deliveryId}`), '.'],
      });
      if (id !== undefined) refresh();
    });
    return b;
  }

  const show = h('select', { name: 'show' }, h('option', { value: '', selected: !all }, 'Waiting for replay'),
    h('option', { value: 'all', selected: all }, 'All'));
  show.addEventListener('change', () => ctx.go('/dead-letters', { show: show.value }));
  put(ctx.main, h('div.page-head', h('h1', 'Dead letters'),
    h('div.actions', h('button.secondary', { type: 'button', onclick: () => refresh() }, 'Refresh'))),
    h('div.filters', field('Show', show, { id: 'dlq-show' })), out, region);
  refresh();
}
