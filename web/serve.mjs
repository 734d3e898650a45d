#!/usr/bin/env node
// web/serve.mjs — serves the notiflow web console (index.html, style.css and
// js/ of this directory) on 127.0.0.1:8080 with Node's http module only.
// Nothing else is served (not node_modules, not this file). The page calls
// the REST API from the browser; PostgREST's CORS settings allow this origin
// (api/postgrest.conf).
//
//   node web/serve.mjs [--port 8080] [--host 127.0.0.1]   (--port 0 picks a free port)
//
// Prints "listening on http://HOST:PORT" once it listens; stops on SIGTERM/SIGINT.

import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const { values: opts } = parseArgs({
  options: { port: { type: 'string', default: '8080' }, host: { type: 'string', default: '127.0.0.1' } },
});
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
                '.svg': 'image/svg+xml', '.ico': 'image/x-icon' };
// the page may call any API address the user enters; everything else comes from here
const CSP = "default-src 'self'; connect-src 'self' http: https:; img-src 'self' data:; style-src 'self'; script-src 'self'; " +
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

// The file a URL path names, or null when it is not part of the console.
function resolve(urlPath) {
  let p;
  try { p = decodeURIComponent(urlPath.split('?')[0]); } catch { return null; }
  if (p === '/' || p === '') p = '/index.html';
  const ok = p === '/index.html' || p === '/style.css' || /^\/js\/[A-Za-z0-9_/-]+\.js$/.test(p);
  if (!ok || p.includes('..')) return null;
  const file = path.join(ROOT, p);
  return file.startsWith(ROOT + path.sep) ? file : null;
}

const server = http.createServer(async (req, res) => {
  const headers = { 'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer',
                    'Content-Security-Policy': CSP };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { ...headers, Allow: 'GET, HEAD', 'Content-Type': 'text/plain' });
    res.end('method not allowed\n');
    return;
  }
  const file = resolve(req.url || '/');
  let body;
  try {
    if (!file) throw new Error('not served');
    body = await fs.readFile(file);
  } catch {
    res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' });
    res.end('not found\n');
    return;
  }
  res.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Content-Length': body.length });
  res.end(req.method === 'HEAD' ? undefined : body);
});

server.on('error', (e) => {
  console.error(`serve.mjs: ${e.message}`);
  process.exit(1);
});
server.listen(Number(opts.port), opts.host, () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { server.close(() => process.exit(0)); server.closeAllConnections(); });
}
