// web/js/api.js — the console's client of notiflow's REST API (PostgREST 12 in
// front of schema notiflow_api, docs/api.md): plain fetch, the API key in the
// X-API-Key header, PostgREST's {code, message, details, hint} errors turned
// into ApiError, pagination with Prefer: count=exact. The API address and key
// live in this browser's localStorage, nowhere else.

const STORE = 'notiflow.console.connection';

// The stored connection: {url, key}; empty strings when not set.
export function getConnection() {
  try {
    const c = JSON.parse(localStorage.getItem(STORE) || '{}');
    return { url: typeof c.url === 'string' ? c.url : '', key: typeof c.key === 'string' ? c.key : '' };
  } catch {
    return { url: '', key: '' };
  }
}

export function setConnection({ url, key }) {
  localStorage.setItem(STORE, JSON.stringify({ url: (url || '').trim(), key: (key || '').trim() }));
  connectionListeners.forEach((f) => f(getConnection()));
}

const connectionListeners = new Set();
export function onConnectionChange(f) { connectionListeners.add(f); }

// An API call that failed. kind: 'config' (no address set), 'network' (no answer),
// 'http' (an error status; status, code, message, details, hint from PostgREST).
export class ApiError extends Error {
  constructor({ kind, status = 0, code = '', message = '', details = null, hint = null, url = '' }) {
    super(message || `HTTP ${status}`);
    this.kind = kind;
    this.status = status;
    this.code = code || '';
    this.details = details;
    this.hint = hint;
    this.url = url;
  }

  // The problems of a 422 (or any error): details holds one "path: message" per line.
  problems() {
    if (!this.details) return [];
    return String(this.details).split('\n').filter(Boolean).map((line) => {
      const m = /^([A-Za-z0-9_.[\]$-]+): (.*)$/s.exec(line);
      return m ? { path: m[1], message: m[2] } : { path: '', message: line };
    });
  }
}

// Calls in flight, for the page's activity bar.
let inflight = 0;
const activityListeners = new Set();
export function onActivity(f) { activityListeners.add(f); }
function activity(delta) {
  inflight += delta;
  activityListeners.forEach((f) => f(inflight));
}

function baseUrl() {
  const { url } = getConnection();
  if (!url) throw new ApiError({ kind: 'config', message: 'The API address is not set' });
  return url.endsWith('/') ? url : url + '/';
}

// One request. path is relative to the API address ("executions", "rpc/trigger").
// Options: method, query (object or [name, value] pairs; values that are null/undefined/'' are left out),
// body (sent as JSON), count (adds Prefer: count=exact and returns total), single (one object, 404/406 when none).
// Returns {data, status, total, headers}.
export async function request(path, { method = 'GET', query, body, count = false, single = false, signal } = {}) {
  const base = baseUrl();
  let url;
  try {
    url = new URL(path.replace(/^\//, ''), base);
  } catch {
    throw new ApiError({ kind: 'config', message: `"${getConnection().url}" is not a valid address` });
  }
  const pairs = Array.isArray(query) ? query : Object.entries(query || {});
  for (const [k, v] of pairs) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.append(k, String(v));
  }
  const headers = { Accept: single ? 'application/vnd.pgrst.object+json' : 'application/json' };
  const { key } = getConnection();
  if (key) headers['X-API-Key'] = key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (count) headers.Prefer = 'count=exact';

  activity(+1);
  let res, text;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: 'no-store' });
    text = await res.text();
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError({ kind: 'network', message: `No answer from ${url.origin}`, url: url.origin });
  } finally {
    activity(-1);
  }
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!res.ok) {
    const e = data && typeof data === 'object' ? data : { message: typeof data === 'string' ? data : '' };
    throw new ApiError({ kind: 'http', status: res.status, code: e.code, message: e.message || `HTTP ${res.status}`,
                         details: e.details, hint: e.hint, url: url.origin });
  }
  let total = null;
  const range = res.headers.get('Content-Range');
  if (range) {
    const m = /\/(\d+)$/.exec(range);
    if (m) total = Number(m[1]);
  }
  return { data, status: res.status, total, headers: res.headers };
}

// PostgREST answers at most this many rows per request (db-max-rows in api/postgrest.conf).
export const MAX_ROWS = 1000;

// GET a resource: rows.  A list of MAX_ROWS rows may have been cut there: it is marked
// truncated (table() says so under it).
export async function get(path, query) {
  const data = (await request(path, { query })).data;
  if (Array.isArray(data) && data.length >= MAX_ROWS) data.truncated = true;
  return data;
}

// GET one page of a resource with its total: {rows, total}.
export async function page(path, query, { offset = 0, limit = 20 } = {}) {
  const pairs = [...(Array.isArray(query) ? query : Object.entries(query || {})), ['limit', limit], ['offset', offset]];
  const r = await request(path, { query: pairs, count: true });
  return { rows: r.data || [], total: r.total ?? (r.data || []).length };
}

// POST to a function (/rpc/<name>) with its arguments as a JSON object: its result.
export async function rpc(name, args = {}) {
  return (await request(`rpc/${name}`, { method: 'POST', body: args })).data;
}

// What the current key may do, from the OpenAPI description (it follows privileges):
// {role: 'admin' | 'writer' | 'reader' | 'anonymous'}.
export async function whoami() {
  const doc = (await request('')).data || {};
  const paths = doc.paths || {};
  const role = paths['/api_keys'] ? 'admin' : paths['/rpc/trigger'] ? 'writer' : paths['/workflows'] ? 'reader' : 'anonymous';
  return { role };
}
