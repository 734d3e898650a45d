// web/js/views/analytics.js — the analytics screen: daily charts from
// /daily_stats (written by notiflow.aggregate_daily, docs/operations.md) of
// messages sent, failed deliveries and attempt latency by channel or by
// provider, and executions by outcome, over a chosen number of days.

import { page } from '../api.js';
import { barChart, lineChart } from '../chart.js';
import { empty, field, h, load, ms, put } from '../ui.js';

const RANGES = [7, 14, 30, 90];

function isoDay(d) { return d.toISOString().slice(0, 10); }

export function show(ctx) {
  const q = ctx.query;
  const days = RANGES.includes(Number(q.get('days'))) ? Number(q.get('days')) : 14;
  const by = q.get('by') === 'provider' ? 'provider' : 'channel';
  const rangeSel = h('select', { name: 'days' }, RANGES.map((n) => h('option', { value: n, selected: n === days }, `Last ${n} days`)));
  const bySel = h('select', { name: 'by' }, h('option', { value: 'channel', selected: by === 'channel' }, 'Channel'),
    h('option', { value: 'provider', selected: by === 'provider' }, 'Provider'));
  const form = h('form.filters', { 'aria-label': 'Chart options' },
    field('Period', rangeSel, { id: 'an-days' }), field('Split by', bySel, { id: 'an-by' }));
  const apply = () => ctx.go('/analytics', { days: rangeSel.value, by: bySel.value });
  rangeSel.addEventListener('change', apply);
  bySel.addEventListener('change', apply);
  form.addEventListener('submit', (ev) => { ev.preventDefault(); apply(); });

  const today = new Date();
  const start = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - (days - 1)));
  const dayList = Array.from({ length: days }, (_, i) => isoDay(new Date(start.getTime() + i * 86400000)));

  const region = h('div');
  put(ctx.main, h('div.page-head', h('h1', 'Analytics')), form, region);
  load(region, 'Loading daily statistics…',
    // one row per day, workflow, channel and provider: more than one page of the API in a long
    // period, so pages are read until the exact count is reached (in a total order, so that pages
    // neither skip nor repeat), whatever page size the API keeps to; not after leaving the screen
    async () => {
      const all = [];
      while (ctx.alive()) {
        const { rows, total } = await page('daily_stats', { day: `gte.${dayList[0]}`, order: 'day,workflow_key,channel,provider' },
          { offset: all.length, limit: 1000 });
        all.push(...rows);
        if (!rows.length || all.length >= total) break;
      }
      return all;
    },
    (rows, r) => {
      if (!rows.length) {
        put(r, empty('No daily statistics in this period',
          'They are written per UTC day by notiflow.aggregate_daily(day), which pg_cron runs at 00:15 UTC for the two previous days ',
          '(SELECT notiflow.schedule_maintenance()); run it by hand for today: SELECT notiflow.aggregate_daily(current_date).'));
        return;
      }
      const idx = new Map(dayList.map((d, i) => [d, i]));
      const delivery = rows.filter((x) => x.channel !== '');
      const groups = [...new Set(delivery.map((x) => x[by]))].sort();
      const series = (value) => groups.map((g) => {
        const values = dayList.map(() => 0);
        for (const x of delivery) if (x[by] === g && idx.has(x.day)) values[idx.get(x.day)] += value(x);
        return { name: g || '(none)', values };
      });
      const latency = groups.map((g) => {
        const sum = dayList.map(() => 0), n = dayList.map(() => 0);
        for (const x of delivery) {
          if (x[by] !== g || !idx.has(x.day)) continue;
          sum[idx.get(x.day)] += Number(x.attempt_latency_sum_ms);
          n[idx.get(x.day)] += Number(x.timed_attempts);
        }
        return { name: g || '(none)', values: sum.map((v, i) => (n[i] ? v / n[i] : null)) };
      });
      const exec = rows.filter((x) => x.channel === '' && x.provider === '');
      const execSeries = [['completed', 'executions_completed'], ['failed', 'executions_failed'],
                          ['cancelled', 'executions_cancelled'], ['running or waiting', 'executions_active']]
        .map(([name, col]) => {
          const values = dayList.map(() => 0);
          for (const x of exec) if (idx.has(x.day)) values[idx.get(x.day)] += Number(x[col]);
          return { name, values };
        });
      const total = (col, set = delivery) => set.reduce((a, x) => a + Number(x[col] || 0), 0);
      const int = (v) => String(Math.round(v));
      put(r, 
        h('div.panel', h('dl.facts',
          h('dt', 'Messages sent'), h('dd', { 'data-total': 'sent' }, String(total('deliveries_sent') + total('deliveries_delivered'))),
          h('dt', 'Failed deliveries'), h('dd', { 'data-total': 'failed' }, String(total('deliveries_failed'))),
          h('dt', 'Dead letters'), h('dd', String(total('dead_letters', rows))),
          h('dt', 'Executions'), h('dd', String(total('executions', exec))),
          h('dt', 'Last aggregated'), h('dd', new Date(Math.max(...rows.map((x) => Date.parse(x.aggregated_at)))).toLocaleString()))),
        groups.length ? [
          barChart(`Messages sent per day by ${by}`, dayList, series((x) => Number(x.deliveries_sent) + Number(x.deliveries_delivered)), { format: int }),
          barChart(`Failed deliveries per day by ${by}`, dayList, series((x) => Number(x.deliveries_failed)), { format: int }),
          lineChart(`Mean attempt latency per day by ${by}`, dayList, latency, { format: (v) => ms(v) }),
        ] : empty('No deliveries in this period'),
        barChart('Executions per day by outcome', dayList, execSeries, { format: int }));
    });
}
