// web/js/jsonpos.js — reads JSON text the way the workflow editor needs: the
// value, where each value sits in the text by its validation path
// ("nodes[1].type", "edges[0]"), and for a syntax error its line and column.
// The paths are those notiflow.validate_workflow() reports.

export class JsonSyntaxError extends Error {
  constructor(message, pos, text) {
    const { line, column } = lineColumn(text, pos);
    super(`${message} at line ${line}, column ${column}`);
    this.pos = pos;
    this.line = line;
    this.column = column;
  }
}

export function lineColumn(text, pos) {
  const before = text.slice(0, pos).split('\n');
  return { line: before.length, column: before[before.length - 1].length + 1 };
}

// parse(text) → {value, positions: Map(path → {start, end})}; throws JsonSyntaxError.
export function parse(text) {
  let i = 0;
  const positions = new Map();
  const fail = (msg) => { throw new JsonSyntaxError(msg, i, text); };
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const join = (path, key) => (typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${key}` : key);

  function value(path) {
    ws();
    const start = i;
    let v;
    const c = text[i];
    if (c === '{') v = object(path);
    else if (c === '[') v = array(path);
    else if (c === '"') v = string();
    else if (c === '-' || (c >= '0' && c <= '9')) v = number();
    else if (text.startsWith('true', i)) { i += 4; v = true; }
    else if (text.startsWith('false', i)) { i += 5; v = false; }
    else if (text.startsWith('null', i)) { i += 4; v = null; }
    else fail(i >= text.length ? 'Unexpected end of the text' : `Unexpected ${JSON.stringify(c)}`);
    positions.set(path, { start, end: i });
    return v;
  }

  function object(path) {
    const o = {};
    i++;
    ws();
    if (text[i] === '}') { i++; return o; }
    for (;;) {
      ws();
      if (text[i] !== '"') fail('Expected a property name in double quotes');
      const k = string();
      ws();
      if (text[i] !== ':') fail('Expected ":" after a property name');
      i++;
      o[k] = value(join(path, k));
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === '}') { i++; return o; }
      fail('Expected "," or "}" after a property value');
    }
  }

  function array(path) {
    const a = [];
    i++;
    ws();
    if (text[i] === ']') { i++; return a; }
    for (;;) {
      a.push(value(join(path, a.length)));
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === ']') { i++; return a; }
      fail('Expected "," or "]" after an array element');
    }
  }

  function string() {
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++;
      else if (text[i] < ' ') fail('Unescaped control character in a string');
      i++;
    }
    if (i >= text.length) { i = start; fail('Unterminated string'); }
    i++;
    try { return JSON.parse(text.slice(start, i)); } catch { i = start; return fail('Invalid escape in a string'); }
  }

  function number() {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) fail('Invalid number');
    i += m[0].length;
    return Number(m[0]);
  }

  const v = value('');
  ws();
  if (i < text.length) fail('Unexpected text after the JSON value');
  return { value: v, positions };
}

// Where a validation path is in the text: the closest enclosing path that was found.
export function locate(positions, path) {
  let p = path || '';
  for (;;) {
    if (positions.has(p)) return positions.get(p);
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    if (cut <= 0) return positions.get('') || null;
    p = p.slice(0, cut);
  }
}
