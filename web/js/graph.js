// web/js/graph.js — draws a workflow definition as an SVG graph: nodes in
// columns by their distance from the trigger (longest path), edges as curves
// labelled with their "on" outcome. Nodes with validation problems, or the
// status each step of an execution reached, are marked. Copes with the broken
// definitions the editor previews (unknown targets, cycles, missing ids).

import { h, s } from './ui.js';

const KIND = {
  trigger: 'trigger',
  email: 'action', sms: 'action', push: 'action', chat: 'action', webhook: 'action',
  condition: 'logic', switch: 'logic', delay: 'logic', wait: 'logic',
  transform: 'data',
};
const W = 150, H = 50, GAP_X = 70, GAP_Y = 28, PAD = 16;

// graph(definition, {title, problems: Set of node indexes, steps: {node_id: status}}) → element.
export function graph(definition, { title = 'Workflow graph', problems = new Set(), steps = null } = {}) {
  const nodes = (Array.isArray(definition && definition.nodes) ? definition.nodes : [])
    .map((n, index) => ({ index, id: n && typeof n.id === 'string' ? n.id : `#${index}`, type: n && typeof n.type === 'string' ? n.type : '?' }));
  const byId = new Map();
  for (const n of nodes) if (!byId.has(n.id)) byId.set(n.id, n);
  const edges = (Array.isArray(definition && definition.edges) ? definition.edges : [])
    .filter((e) => e && byId.has(e.from) && byId.has(e.to))
    .map((e) => ({ from: byId.get(e.from), to: byId.get(e.to), on: e.on === undefined ? null : String(e.on) }));

  if (!nodes.length) {
    return h('div.graph.empty-graph', { role: 'note' }, h('p.muted', 'No nodes to draw yet.'));
  }

  // layers: longest path from the sources (Kahn); nodes left in cycles go after the rest
  const indeg = new Map(nodes.map((n) => [n, 0]));
  for (const e of edges) indeg.set(e.to, indeg.get(e.to) + 1);
  const layer = new Map();
  const queue = nodes.filter((n) => indeg.get(n) === 0);
  queue.forEach((n) => layer.set(n, 0));
  while (queue.length) {
    const n = queue.shift();
    for (const e of edges.filter((x) => x.from === n)) {
      layer.set(e.to, Math.max(layer.get(e.to) || 0, layer.get(n) + 1));
      indeg.set(e.to, indeg.get(e.to) - 1);
      if (indeg.get(e.to) === 0) queue.push(e.to);
    }
  }
  let maxLayer = Math.max(0, ...layer.values());
  for (const n of nodes) if (!layer.has(n)) layer.set(n, ++maxLayer);

  const columns = [];
  for (const n of nodes) (columns[layer.get(n)] ||= []).push(n);
  const pos = new Map();
  const tallest = Math.max(...columns.filter(Boolean).map((c) => c.length));
  columns.forEach((col, x) => {
    if (!col) return;
    const offset = ((tallest - col.length) * (H + GAP_Y)) / 2;
    col.forEach((n, y) => pos.set(n, { x: PAD + x * (W + GAP_X), y: PAD + offset + y * (H + GAP_Y) }));
  });
  const width = PAD * 2 + columns.length * W + (columns.length - 1) * GAP_X;
  const height = PAD * 2 + tallest * H + (tallest - 1) * GAP_Y;

  const label = `${title}: ${nodes.length} node${nodes.length === 1 ? '' : 's'}, ${edges.length} edge${edges.length === 1 ? '' : 's'}`;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': label },
    s('title', { text: label }),
    s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#5a6473' }))));

  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    let d;
    if (b.x > a.x) {
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
    } else {        // a back edge (a cycle): loop over the top
      const x1 = a.x + W / 2, y1 = a.y, x2 = b.x + W / 2, y2 = b.y, top = Math.min(y1, y2) - GAP_Y;
      d = `M ${x1} ${y1} C ${x1} ${top}, ${x2} ${top}, ${x2} ${y2}`;
    }
    const g = s('g', { class: 'edge', 'data-from': e.from.id, 'data-to': e.to.id },
      s('title', { text: `${e.from.id} → ${e.to.id}${e.on !== null ? ` on ${e.on}` : ''}` }),
      s('path', { d, 'marker-end': 'url(#arrow)' }));
    if (e.on !== null) {
      const lx = (a.x + W + b.x) / 2, ly = (a.y + b.y + H) / 2 - 4;
      const tw = e.on.length * 6.5 + 8;
      g.append(s('rect', { x: lx - tw / 2, y: ly - 11, width: tw, height: 15, rx: 3 }),
        s('text', { x: lx, y: ly, 'text-anchor': 'middle', text: e.on }));
    }
    svg.append(g);
  }

  for (const n of nodes) {
    const p = pos.get(n);
    const status = steps ? steps[n.id] : null;
    const classes = ['node', KIND[n.type] || 'unknown', problems.has(n.index) ? 'problem' : '', status ? `st-${status}` : ''].filter(Boolean).join(' ');
    const desc = `${n.id}: ${n.type}${status ? `, ${status}` : ''}${problems.has(n.index) ? ', has problems' : ''}`;
    svg.append(s('g', { class: classes, 'data-node': n.id, transform: `translate(${p.x} ${p.y})` },
      s('title', { text: desc }),
      s('rect', { width: W, height: H, rx: 6 }),
      s('text', { class: 'id', x: 10, y: 20, text: clip(n.id, 20) }),
      s('text', { x: 10, y: 38, text: clip(status ? `${n.type} · ${status}` : n.type, 22) })));
  }

  return h('div.graph', svg,
    h('details.small', h('summary', 'The graph as text'),
      h('ul', edges.length ? edges.map((e) => h('li', `${e.from.id} (${e.from.type}) → ${e.to.id} (${e.to.type})${e.on !== null ? ` on ${e.on}` : ''}`))
        : nodes.map((n) => h('li', `${n.id} (${n.type})`)))));
}

function clip(t, n) { return t.length > n ? t.slice(0, n - 1) + '…' : t; }
