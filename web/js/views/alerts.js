// web/js/views/alerts.js — the alerts screen: the health summary
// (/rpc/health), the delivery queue (/queue_health), and the alerts raised by
// notiflow.check_alerts() (/alerts), open ones first or all of them.

import { get } from '../api.js';
import { badge, empty, field, h, json, load, table, time, put } from '../ui.js';

export function show(ctx) {
  const all = ctx.query.get('show') === 'all';
  const healthRegion = h('div');
  const queueRegion = h('div');
  const alertsRegion = h('div');
  const showSel = h('select', { name: 'show' }, h('option', { value: '', selected: !all }, 'Open'), h('option', { value: 'all', selected: all }, 'All'));
  showSel.addEventListener('change', () => ctx.go('/alerts', { show: showSel.value }));
  const refresh = () => {
    load(healthRegion, 'Loading health…', () => get('rpc/health'), (hl, r) => {
      put(r, h('div.panel', { 'data-health': hl.status },
        h('p', 'Status ', badge(hl.status)),
        h('dl.facts',
          h('dt', 'Database'), h('dd', `${hl.database.name}${hl.database.in_recovery ? ' (standby)' : ''}`),
          h('dt', 'Dispatchers'), h('dd', `${hl.workers.dispatchers} running of ${hl.workers.expected} expected${hl.workers.preloaded ? '' : ' (notiflow is not in shared_preload_libraries)'}`),
          // (no queue counts for a caller without the reader role)
          h('dt', 'Queue'), h('dd', hl.queue
            ? `${hl.queue.queued} queued, ${hl.queue.due} due${hl.queue.oldest_due_seconds ? `, oldest due for ${hl.queue.oldest_due_seconds} s` : ''}`
            : 'counted for the reader role and above'))));
    });
    load(queueRegion, 'Loading the queue…', () => get('queue_health', { order: 'channel,status' }), (rows, r) => {
      put(r, rows.length ? table('Queue', [
        { label: 'Channel', cell: (x) => x.channel },
        { label: 'Status', cell: (x) => badge(x.status) },
        { label: 'Deliveries', class: 'num', cell: (x) => String(x.deliveries) },
        { label: 'Due', class: 'num', cell: (x) => String(x.due) },
        { label: 'Oldest due since', cell: (x) => time(x.oldest_due_at) },
        { label: 'Expired leases', class: 'num', cell: (x) => String(x.expired_leases) },
      ], rows) : empty('The queue is empty', 'No delivery is queued or being sent.'));
    });
    load(alertsRegion, 'Loading alerts…',
      () => get('alerts', all ? { order: 'raised_at.desc', limit: 200 } : { resolved_at: 'is.null', order: 'raised_at.desc' }),
      (rows, r) => {
        put(r, rows.length ? table('Alerts', [
          { label: 'Severity', cell: (a) => badge(a.severity) },
          { label: 'Kind', cell: (a) => a.kind.replace(/_/g, ' ') },
          { label: 'Subject', cell: (a) => a.subject },
          { label: 'Raised', cell: (a) => time(a.raised_at) },
          { label: 'Last seen', cell: (a) => time(a.last_seen_at) },
          { label: 'Resolved', cell: (a) => (a.resolved_at ? time(a.resolved_at) : badge('open', 'bad')) },
          { label: 'Details', cell: (a) => (a.details && Object.keys(a.details).length ? h('details.small', h('summary', 'Show'), json(a.details)) : '') },
        ], rows, { rowAttrs: (a) => ({ 'data-kind': a.kind, 'data-subject': a.subject }) })
          : empty(all ? 'No alerts yet' : 'No open alerts', 'notiflow.check_alerts() raises them (open circuits, dead letters, workers down, Kafka lag); pg_cron runs it every minute.'));
      });
  };
  put(ctx.main, h('div.page-head', h('h1', 'Alerts and health'),
    h('div.actions', h('button.secondary', { type: 'button', onclick: refresh }, 'Refresh'))),
    h('h2', 'Health'), healthRegion,
    h('h2', 'Delivery queue'), queueRegion,
    h('h2', 'Alerts'), h('div.filters', field('Show', showSel, { id: 'al-show' })), alertsRegion);
  refresh();
}
