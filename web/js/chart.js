// web/js/chart.js — the analytics screen's charts, drawn as SVG without a
// library: stacked bars per day (sends, failures) and lines per day
// (latency), with axes, a legend, a tooltip per mark, and the same figures as
// a table for screen readers and copying.

import { h, s } from './ui.js';

export const COLORS = ['#2454c5', '#d1495b', '#1c7c3c', '#e09f3e', '#7b4ab8', '#00838f', '#8d6e63', '#546e7a'];
const WIDTH = 960, HEIGHT = 250, M = { top: 14, right: 16, bottom: 34, left: 54 };

// Round numbers for an axis from 0 to max (whole numbers only for counts).
function ticks(max, integer) {
  if (!(max > 0)) return [0, 1];
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((x) => x >= raw);
  if (integer) step = Math.max(1, Math.ceil(step));
  const out = [];
  for (let v = 0; v < max + step * 0.999; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function frame(days, top, format, integer = false) {
  const iw = WIDTH - M.left - M.right, ih = HEIGHT - M.top - M.bottom;
  const yt = ticks(top, integer);
  const ymax = yt[yt.length - 1];
  const y = (v) => M.top + ih - (v / ymax) * ih;
  const band = iw / Math.max(days.length, 1);
  const x = (i) => M.left + band * i + band / 2;
  const every = Math.ceil(days.length / 12);
  const g = s('g', {},
    s('g', { class: 'grid' }, yt.map((v) => s('line', { x1: M.left, x2: WIDTH - M.right, y1: y(v), y2: y(v) }))),
    s('g', { class: 'axis' },
      s('line', { x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih }),
      s('line', { x1: M.left, x2: WIDTH - M.right, y1: M.top + ih, y2: M.top + ih }),
      yt.map((v) => s('text', { x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end', text: format(v) })),
      days.map((d, i) => (i % every === 0 ? s('text', { x: x(i), y: HEIGHT - M.bottom + 16, 'text-anchor': 'middle', text: d.slice(5) }) : null))));
  return { g, x, y, band, ih };
}

function figure(kind, caption, days, series, svg, format) {
  return h('figure.chart', { 'data-chart': kind },
    h('figcaption', caption),
    svg,
    h('ul.legend', series.map((se, i) => {
      const sw = h('span.swatch', { 'aria-hidden': 'true' });
      sw.style.background = COLORS[i % COLORS.length];
      return h('li', sw, se.name);
    })),
    h('details.small', h('summary', 'The figures as a table'),
      h('div.table-wrap', h('table',
        h('caption.visually-hidden', caption),
        h('thead', h('tr', h('th', { scope: 'col' }, 'day'), series.map((se) => h('th.num', { scope: 'col' }, se.name)))),
        h('tbody', days.map((d, i) => h('tr', h('th', { scope: 'row' }, d),
          series.map((se) => h('td.num', se.values[i] === null || se.values[i] === undefined ? '—' : format(se.values[i]))))))))));
}

// Stacked bars: days ["YYYY-MM-DD"], series [{name, values: [number per day]}].
export function barChart(caption, days, series, { format = (v) => String(v), integer = true } = {}) {
  const totals = days.map((_, i) => series.reduce((a, se) => a + (se.values[i] || 0), 0));
  const { g, x, y, band } = frame(days, Math.max(...totals, 0), format, integer);
  const bw = Math.max(2, Math.min(48, band * 0.7));
  const bars = s('g', { class: 'marks' });
  days.forEach((d, i) => {
    let base = 0;
    series.forEach((se, k) => {
      const v = se.values[i] || 0;
      if (v <= 0) return;
      bars.append(s('rect', { x: x(i) - bw / 2, y: y(base + v), width: bw, height: Math.max(1, y(base) - y(base + v)),
                              fill: COLORS[k % COLORS.length], 'data-series': se.name, 'data-day': d },
        s('title', { text: `${d} · ${se.name}: ${format(v)}` })));
      base += v;
    });
  });
  const svg = s('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': `${caption}, ${days.length} days` }, g, bars);
  return figure('bar', caption, days, series, svg, format);
}

// Lines with a dot per value (a day without a value breaks the line).
export function lineChart(caption, days, series, { format = (v) => String(v) } = {}) {
  const top = Math.max(0, ...series.flatMap((se) => se.values.filter((v) => v !== null && v !== undefined)));
  const { g, x, y } = frame(days, top, format);
  const marks = s('g', { class: 'marks' });
  series.forEach((se, k) => {
    const color = COLORS[k % COLORS.length];
    let d = '';
    let pen = false;
    se.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? 'L' : 'M'} ${x(i)} ${y(v)} `;
      pen = true;
    });
    if (d) marks.append(s('path', { d, fill: 'none', stroke: color, 'stroke-width': 2 }));
    se.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      marks.append(s('circle', { cx: x(i), cy: y(v), r: 3.5, fill: color, 'data-series': se.name, 'data-day': days[i] },
        s('title', { text: `${days[i]} · ${se.name}: ${format(v)}` })));
    });
  });
  const svg = s('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': `${caption}, ${days.length} days` }, g, marks);
  return figure('line', caption, days, series, svg, format);
}
