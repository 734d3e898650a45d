#!/usr/bin/env node
// test/web/console.test.mjs — drives the web console in Debian's Chromium with
// playwright-core (web/node_modules) and prints TAP. test/t/web.sh starts
// what it needs and passes it in the environment:
//   CONSOLE_URL  the console (web/serve.mjs)      API_URL     PostgREST
//   DOUBLE_URL   the provider double               DB          the database (psql with PGHOST/PGPORT/PGUSER)
//   READER_KEY, ADMIN_KEY  API keys                 ARTIFACTS   where screenshots go
//   CHROMIUM     the browser binary
// The flow: no key (401), a reader key, a workflow with an error then fixed (403 for the reader, 422, live
// validation), a test run followed to completion through the double, a dead letter replayed after a
// confirmation, providers with their health and a test message, a chart, alerts, keyboard use, labels.
// Every wait is a poll with a deadline (Playwright's waits or until()), never a fixed sleep.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(path.join(ROOT, 'web', 'package.json'));
const { chromium } = require('playwright-core');

const env = (k) => {
  if (!process.env[k]) { console.log(`Bail out! ${k} is not set (run test/t/web.sh)`); process.exit(1); }
  return process.env[k];
};
const CONSOLE = env('CONSOLE_URL'), API = env('API_URL'), DOUBLE = env('DOUBLE_URL'), DB = env('DB');
const READER = env('READER_KEY'), ADMIN = env('ADMIN_KEY'), ARTIFACTS = env('ARTIFACTS');
const CHROMIUM = env('CHROMIUM');
const WAIT = 15000;         // the longest any single UI wait may take
const DELIVERY_WAIT = 30000;

// --- TAP ---------------------------------------------------------------------------------------
let count = 0;
let failed = 0;
let page;
const pageErrors = [];

function diag(text) { for (const line of String(text).split('\n')) console.log(`# ${line}`); }

// One TAP test; the first failure stops the run (later steps depend on earlier ones).
async function test(desc, fn) {
  if (failed) return;
  const started = Date.now();
  try {
    await fn();
    console.log(`ok ${++count} - ${desc}`);
  } catch (e) {
    failed++;
    console.log(`not ok ${++count} - ${desc}`);
    diag(e.stack || e.message);
    if (page) {
      await shot(`failure-${count}`).catch(() => {});
      diag(`url: ${page.url()}`);
      const main = await page.locator('main').innerText().catch(() => '');
      diag(`main: ${main.slice(0, 1500)}`);
    }
  }
  if (Date.now() - started > 10000) diag(`(${((Date.now() - started) / 1000).toFixed(1)} s)`);
}
function check(cond, what) { if (!cond) throw new Error(what); }

async function shot(name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

// Polls f until it returns a truthy value or the deadline passes.
async function until(f, what, ms = WAIT) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// --- the database and the double -----------------------------------------------------------------
function sql(q) {
  return execFileSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', DB, '-c', q], { encoding: 'utf8' }).trim();
}
async function double(method, p, body) {
  const r = await fetch(`${DOUBLE}/_double/${p}`, { method, body: body ? JSON.stringify(body) : undefined });
  return r.json();
}
function closedPort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// --- helpers for the console -----------------------------------------------------------------------
const main = () => page.locator('main');
const text = (sel, has) => page.locator(sel, { hasText: has });
async function go(hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
}
async function saveConnection(url, key) {
  const dlg = page.locator('#connection-dialog');
  if (!(await dlg.evaluate((d) => d.open))) await page.click('#connection-button');
  await page.fill('#conn-url', url);
  await page.fill('#conn-key', key);
  await page.click('#conn-save');
}
// Every visible form control has a label (a <label for>, a wrapping label or aria-label).
async function unlabelled() {
  return page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
    .map((el) => `${location.hash} ${el.tagName.toLowerCase()}[name=${el.name}]`));
}
const missingLabels = [];
async function audit() { missingLabels.push(...await unlabelled()); }

// --- the console's poll() in Node, before the browser starts (its timers are faked here) ----------
await test('poll() doubles its period after each failure in a row, up to maxBackoff, and is itself again after a success', async () => {
  const { poll } = await import(new URL('file://' + path.join(ROOT, 'web', 'js', 'ui.js')).href);
  const script = ['fail', 'fail', 'fail', 'fail', 'ok', 'fail', 'stop'];
  const delays = [];
  const realSetTimeout = globalThis.setTimeout;
  let step = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  globalThis.setTimeout = (fn, ms) => { delays.push(ms); return realSetTimeout(fn, 0); };
  try {
    poll({ alive: () => true }, 1000, async () => {
      const what = script[step++];
      if (what === 'fail') throw new Error('unreachable');
      if (what === 'stop') { finish(); return false; }
      return true;
    }, { maxBackoff: 5000 });
    await finished;
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
  check(JSON.stringify(delays) === JSON.stringify([1000, 2000, 4000, 5000, 5000, 1000, 2000]),
        `waits between calls: ${JSON.stringify(delays)}`);
});

// --- the run ---------------------------------------------------------------------------------------
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'notiflow-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
} catch (e) {
  console.log(`Bail out! cannot start Chromium: ${e.message.split('\n')[0]}`);
  process.exit(1);
}
context.setDefaultTimeout(WAIT);
page = context.pages()[0] || await context.newPage();
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text()); });

try {
  await test('api/postgrest.conf lets a console on 127.0.0.1:8080 and localhost:8080 call the API (CORS)', async () => {
    const conf = fs.readFileSync(path.join(ROOT, 'api', 'postgrest.conf'), 'utf8');
    const line = /^server-cors-allowed-origins\s*=\s*"([^"]*)"/m.exec(conf);
    check(line, 'no server-cors-allowed-origins line');
    const origins = line[1].split(',').map((o) => o.trim());
    check(origins.includes('http://127.0.0.1:8080') && origins.includes('http://localhost:8080'), `origins: ${line[1]}`);
    const pre = await fetch(`${API}/workflows`, { method: 'OPTIONS', headers: { Origin: CONSOLE, 'Access-Control-Request-Method': 'GET',
      'Access-Control-Request-Headers': 'x-api-key, prefer' } });
    check(pre.headers.get('access-control-allow-origin') === CONSOLE, `preflight: allow-origin ${pre.headers.get('access-control-allow-origin')}`);
    check(/x-api-key/i.test(pre.headers.get('access-control-allow-headers') || ''), 'preflight does not allow X-API-Key');
  });

  await test('the console opens the Connection dialog on a first visit, nothing is built in', async () => {
    await page.goto(CONSOLE);
    await page.locator('#connection-dialog[open]').waitFor();
    check(await page.inputValue('#conn-url') === '', 'the API address is not empty');
    check(await page.inputValue('#conn-key') === '', 'the API key is not empty');
    check(await page.evaluate(() => document.activeElement.id) === 'conn-url', 'the address field has no focus');
    await audit();
  });

  await test('an address where nothing listens: "Cannot reach the API" with Retry', async () => {
    await saveConnection(`http://127.0.0.1:${await closedPort()}`, '');
    await text('#conn-status .error-box', 'Cannot reach the API').waitFor();
    await page.locator('#conn-status .error-box button', { hasText: 'Retry' }).waitFor();
    await shot('01-network-error');
  });

  await test('the API without a key: the workflows screen asks for a key (401)', async () => {
    await saveConnection(API, '');
    await page.locator('#connection-dialog:not([open])').waitFor({ state: 'attached' });
    const box = page.locator('main .error-box[data-status="401"]');
    await box.waitFor();
    check(/An API key is needed/.test(await box.innerText()), 'no "An API key is needed"');
    await shot('02-needs-key');
  });

  await test('"Open Connection" from the message; a reader key shows the empty workflow list', async () => {
    await page.locator('main .error-box button', { hasText: 'Open Connection' }).click();
    await page.locator('#connection-dialog[open]').waitFor();
    check(await page.evaluate(() => document.activeElement.id) === 'conn-key', 'the key field has no focus');
    await page.fill('#conn-key', READER);
    await page.click('#conn-save');
    await text('main .empty', 'No workflows yet').waitFor();
    await until(async () => /Key: reader/.test(await page.textContent('#connection-button')), 'the header to show the reader key');
    const stored = await page.evaluate(() => localStorage.getItem('notiflow.console.connection'));
    check(JSON.parse(stored).key === READER, 'the key is not kept in localStorage');
  });

  await test('changing the address to another origin empties the saved key, so it is not sent there', async () => {
    await page.click('#connection-button');
    await page.locator('#connection-dialog[open]').waitFor();
    check(await page.inputValue('#conn-key') === READER, 'the saved key is not filled in');
    const saved = await page.inputValue('#conn-url');
    await page.fill('#conn-url', 'http://notiflow.example.net:3000');
    await page.press('#conn-url', 'Tab');
    check(await page.inputValue('#conn-key') === '', 'the key stays for another origin');
    await page.fill('#conn-url', saved);
    await page.press('#conn-url', 'Tab');
    check(await page.inputValue('#conn-key') === READER, 'back at the saved origin, the saved key does not come back');
    await page.click('#conn-save');
    await until(async () => /Key: reader/.test(await page.textContent('#connection-button')), 'the header to show the reader key again');
  });

  await test('a slow answer shows a loading indicator; a failed one offers Retry, which works', async () => {
    let release;
    const gate = new Promise((r) => { release = r; });
    await page.route(/\/workflows\?/, async (route) => { await gate; await route.continue(); });
    await page.click('main button:has-text("Refresh")');
    await text('main [role="status"]', 'Loading workflows').waitFor();
    release();
    await text('main .empty', 'No workflows yet').waitFor();
    await page.unroute(/\/workflows\?/);
    await page.route(/\/workflows\?/, (route) => route.abort('connectionrefused'), { times: 1 });
    await page.click('main button:has-text("Refresh")');
    await text('main .error-box', 'Cannot reach the API').waitFor();
    await page.click('main .error-box button:has-text("Retry")');
    await text('main .empty', 'No workflows yet').waitFor();
  });

  const DEF_BAD = `{
  "name": "Console demo",
  "nodes": [
    {"id": "start", "type": "trigger", "required": ["order_id"]},
    {"id": "hook", "type": "fax"}
  ],
  "edges": [{"from": "start", "to": "hook"}]
}`;

  await test('new workflow with an error: the problem is shown next to the definition while typing', async () => {
    await page.click('main a:has-text("New workflow")');
    await page.locator('#wf-def').waitFor();
    await page.fill('#wf-key', 'console_demo');
    await page.fill('#wf-def', DEF_BAD);
    const problem = page.locator('#wf-def-problems li[data-path="nodes[1].type"]');
    await problem.waitFor();
    check(/unknown node type "fax"/.test(await problem.innerText()), `problem text: ${await problem.innerText()}`);
    check(/line 5/.test(await problem.innerText()), 'the problem does not give its line');
    check(await page.getAttribute('#wf-def', 'aria-invalid') === 'true', 'the definition is not marked invalid');
    await page.locator('.graph g.node.problem[data-node="hook"]').waitFor();
    // clicking the problem selects it in the text
    await problem.locator('button').click();
    const selected = await page.evaluate(() => { const t = document.getElementById('wf-def'); return t.value.slice(t.selectionStart, t.selectionEnd); });
    check(selected === '"fax"', `selected: ${selected}`);
    await page.fill('#wf-def', DEF_BAD.replace('"edges"', '"edges":'));
    await text('#wf-def-validity', 'not valid JSON').waitFor();
    await text('#wf-def-problems li', 'line 7').waitFor();
    await page.fill('#wf-def', DEF_BAD);
    await problem.waitFor();
    await audit();
    await shot('03-workflow-invalid');
  });

  await test('saving with a reader key: 403 explains which role may', async () => {
    await page.click('main button:has-text("Create workflow")');
    const box = page.locator('main .error-box[data-status="403"]');
    await box.waitFor();
    const t = await box.innerText();
    check(/Your key acts as reader/.test(t) && /needs a writer key/.test(t), `403 text: ${t}`);
    await shot('04-forbidden');
  });

  await test('with an admin key the draft stays; saving the invalid definition lists each problem (422)', async () => {
    await saveConnection(API, ADMIN);
    await page.locator('#connection-dialog:not([open])').waitFor({ state: 'attached' });
    await until(async () => /Key: admin/.test(await page.textContent('#connection-button')), 'the header to show the admin key');
    await page.locator('#wf-def').waitFor();
    check((await page.inputValue('#wf-def')).includes('"fax"'), 'the draft was lost');
    check(await page.inputValue('#wf-key') === 'console_demo', 'the key was lost');
    await page.click('main button:has-text("Create workflow")');
    const box = page.locator('main .error-box[data-status="422"]');
    await box.waitFor();
    check(/nodes\[1\]\.type/.test(await box.innerText()), `422 text: ${await box.innerText()}`);
  });

  let execId;
  await test('fixing the error makes it valid; it is saved and shown as a graph', async () => {
    await page.fill('#wf-def', DEF_BAD.replace('"fax"', '"webhook"'));
    await text('#wf-def-validity', 'Valid: 2 nodes, 1 edge').waitFor();
    check(await page.locator('#wf-def-problems li').count() === 0, 'problems are still listed');
    await page.click('main button:has-text("Create workflow")');
    await text('main .result', 'Saved console_demo as version 1').waitFor();
    check(await page.locator('main .graph svg g.node').count() === 2, 'the graph does not have 2 nodes');
    check(await page.locator('main .graph svg g.edge').count() === 1, 'the graph does not have 1 edge');
    check(sql("SELECT current_version FROM notiflow.workflows WHERE key = 'console_demo'") === '1', 'not stored');
    await shot('05-workflow-saved');
  });

  await test('deactivate: a trigger is refused (409) with a message; activate again', async () => {
    await page.click('main button:has-text("Deactivate")');
    await text('main .result', 'is inactive').waitFor();
    await page.click('main button:has-text("Trigger test run")');
    const box = page.locator('main .error-box[data-status="409"]');
    await box.waitFor();
    check(/is not active/.test(await box.innerText()), `409 text: ${await box.innerText()}`);
    await page.click('main button:has-text("Activate")');
    await text('main .result', 'is active again').waitFor();
  });

  await test('a payload missing a required field: 422 next to the payload', async () => {
    await page.fill('#trigger-payload', '{"other": 1}');
    await page.click('main button:has-text("Trigger test run")');
    await text('#trigger-payload-error', 'payload.order_id').waitFor();
    await page.fill('#trigger-payload', '{"order_id": "A-1"}');
  });

  await test('trigger a test run; the execution completes through the provider double', async () => {
    const before = (await double('GET', 'requests?provider=webhook')).length;
    await page.click('main button:has-text("Trigger test run")');
    const link = page.locator('main .result a[data-execution]');
    await link.waitFor();
    execId = Number(await link.getAttribute('data-execution'));
    await link.click();
    await page.locator(`main h1:has-text("Execution #${execId}")`).waitFor();
    await page.locator('#execution-status[data-status="completed"]').waitFor({ timeout: DELIVERY_WAIT });
    const delivery = page.locator('main li[data-kind="delivery"][data-status="sent"]');
    await delivery.waitFor();
    const attempt = delivery.locator('tr[data-result="sent"]');
    check(/200/.test(await attempt.innerText()), `attempt: ${await attempt.innerText()}`);
    check(await page.locator('main .graph g.node.st-completed').count() === 2, 'the graph does not show 2 completed steps');
    const got = await double('GET', 'requests?provider=webhook');
    check(got.length === before + 1, `the double got ${got.length - before} requests`);
    await audit();
    await shot('06-execution-completed');
  });

  await test('executions filter by workflow, status and time, with a page count', async () => {
    await page.click('nav a:has-text("Executions")');
    await page.locator('#ex-workflow option[value="console_demo"]').waitFor({ state: 'attached' });
    await page.selectOption('#ex-workflow', 'console_demo');
    await page.selectOption('#ex-status', 'completed');
    await page.click('main button:has-text("Apply")');
    await page.locator(`main tr[data-id="${execId}"][data-status="completed"]`).waitFor();
    await text('main .pager', '1–1 of 1').waitFor();
    await page.selectOption('#ex-status', 'failed');
    await page.click('main button:has-text("Apply")');
    await text('main .empty', 'No executions match').waitFor();
    await page.selectOption('#ex-status', 'completed');
    await page.fill('#ex-to', '2000-01-01T00:00:00');
    await page.click('main button:has-text("Apply")');
    await until(() => page.evaluate(() => location.hash.includes('to=2000')), 'the time filter in the address');
    await text('main .empty', 'No executions match').waitFor();
    await page.fill('#ex-to', '');
    await page.fill('#ex-from', '2000-01-01T00:00:00');
    await page.click('main button:has-text("Apply")');
    await page.locator(`main tr[data-id="${execId}"]`).waitFor();
    await audit();
  });

  let deadId;
  await test('a delivery the provider refuses for good is listed under Dead letters', async () => {
    await double('POST', 'script', { provider: 'webhook', responses: [{ status: 401 }] });
    sql(`SELECT notiflow.trigger('console_demo', '{"order_id": "A-2"}')`);
    deadId = Number(await until(() => sql('SELECT max(id) FROM notiflow.dead_letters') || null, 'a dead letter', DELIVERY_WAIT));
    await page.click('nav a:has-text("Dead letters")');
    await page.locator(`main tr[data-id="${deadId}"] button:has-text("Replay")`).waitFor();
    await audit();
    await shot('07-dead-letter');
  });

  await test('replay asks first: Cancel does nothing, Confirm queues it again and it is sent', async () => {
    const replay = page.locator(`main tr[data-id="${deadId}"] button:has-text("Replay")`);
    await replay.click();
    await page.locator('#confirm-dialog[open]').waitFor();
    check(/Replay dead letter #\d+\?/.test(await page.textContent('#confirm-title')), 'no confirmation title');
    await page.keyboard.press('Escape');
    await page.locator('#confirm-dialog:not([open])').waitFor({ state: 'attached' });
    check(sql(`SELECT replayed_at IS NULL FROM notiflow.dead_letters WHERE id = ${deadId}`) === 't', 'replayed without confirmation');
    await replay.click();
    await page.locator('#confirm-dialog[open]').waitFor();
    await shot('08-replay-confirm');
    await page.click('#confirm-yes');
    const link = page.locator('#dead-letter-result a[data-delivery]');
    await link.waitFor();
    const deliveryId = await link.getAttribute('data-delivery');
    await link.click();
    await page.locator(`main h1:has-text("Delivery #${deliveryId}")`).waitFor();
    await page.locator('#delivery-status[data-status="sent"]').waitFor({ timeout: DELIVERY_WAIT });
    await shot('09-replayed-delivery');
  });

  await test('executions paginate with the exact count from the API', async () => {
    await go('#/executions?workflow=console_demo&limit=1');
    await text('main .pager', '1–1 of 2').waitFor();
    await page.click('main .pager button:has-text("Next")');
    await text('main .pager', '2–2 of 2').waitFor();
    await page.locator(`main tr[data-id="${execId}"]`).waitFor();
    check(await page.locator('main .pager button:has-text("Next")').isDisabled(), 'Next is not disabled on the last page');
    check(await page.inputValue('#ex-limit') === '1', 'the page size is not kept');
  });

  await test('providers: redacted config, circuit state and health; a test message is sent', async () => {
    await page.click('nav a:has-text("Providers")');
    const card = page.locator('main [data-provider="hooks"]');
    await card.waitFor();
    await card.locator('[data-circuit="closed"]').waitFor();
    const attempts = Number(await card.locator('[data-attempts]').getAttribute('data-attempts'));
    check(attempts >= 3, `health counts ${attempts} attempts`);
    check(/%/.test(await card.locator('[data-success-rate]').innerText()), 'no success rate');
    await card.locator('summary').click();
    check(/"secret": "\*\*\*\*\*\*\*\*"/.test(await card.locator('pre').innerText()), 'the secret is not redacted');
    await card.locator('button:has-text("Send test")').click();
    await card.locator('[data-test-result="sent"]').waitFor({ timeout: DELIVERY_WAIT });
    await audit();
    await shot('10-providers');
  });

  await test('analytics: after aggregate_daily the daily charts show the sends', async () => {
    sql("SELECT notiflow.aggregate_daily((now() AT TIME ZONE 'UTC')::date)");
    await page.click('nav a:has-text("Analytics")');
    await page.locator('main figure[data-chart="bar"] rect[data-series="webhook"]').first().waitFor();
    const sent = Number(await page.locator('main [data-total="sent"]').innerText());
    check(sent >= 3, `sent total ${sent}`);
    check(await page.locator('main figure[data-chart="line"] circle[data-series="webhook"]').count() >= 1, 'no latency point');
    await page.selectOption('#an-by', 'provider');
    await page.locator('main figure[data-chart="bar"] rect[data-series="hooks"]').first().waitFor();
    await audit();
    await shot('11-analytics');
  });

  await test('alerts: an open alert and the health summary are shown', async () => {
    sql("INSERT INTO notiflow.alerts (kind, subject, severity, details) VALUES ('circuit_open', 'hooks', 'critical', '{\"failures\": 5}')");
    await page.click('nav a:has-text("Alerts")');
    const row = page.locator('main tr[data-kind="circuit_open"][data-subject="hooks"]');
    await row.waitFor();
    check(/critical/.test(await row.innerText()), 'no severity');
    await page.locator('main [data-health]').waitFor();
    await audit();
    await shot('12-alerts');
  });

  await test('a waiting execution is cancelled after a confirmation', async () => {
    sql(`SELECT notiflow.put_workflow('later', '{"nodes": [{"id": "t", "type": "trigger"}, {"id": "d", "type": "delay", "for": "1 hour"},
         {"id": "h", "type": "webhook"}], "edges": [{"from": "t", "to": "d"}, {"from": "d", "to": "h"}]}')`);
    const id = sql("SELECT notiflow.trigger('later', '{}')");
    await go(`#/executions/${id}`);
    await page.locator('#execution-status[data-status="waiting"]').waitFor();
    await page.locator('main .graph g.node.st-waiting[data-node="d"]').waitFor();
    await page.click('main button:has-text("Cancel execution")');
    await page.locator('#confirm-dialog[open]').waitFor();
    await page.click('#confirm-yes');
    await page.locator('#execution-status[data-status="cancelled"]').waitFor();
    check(sql(`SELECT status FROM notiflow.executions WHERE id = ${id}`) === 'cancelled', 'not cancelled in the database');
  });

  await test('the other views: editing a stored workflow, filters, "all" lists, unknown things', async () => {
    await go('#/workflows/console_demo/edit');
    await text('#wf-def-validity', 'Valid: 2 nodes, 1 edge').waitFor();
    check(await page.getAttribute('#wf-key', 'readonly') !== null, 'the key of a stored workflow is editable');
    await go('#/deliveries?status=sent&channel=webhook');
    await page.locator('main tr[data-status="sent"]').first().waitFor();
    check(await page.locator('main tr[data-status]:not([data-status="sent"])').count() === 0, 'the status filter lets others through');
    await go('#/dead-letters?show=all');
    await page.locator(`main tr[data-id="${deadId}"]`).waitFor();
    check(await page.locator(`main tr[data-id="${deadId}"] button`).count() === 0, 'a replayed dead letter can be replayed again');
    await go('#/alerts?show=all');
    await page.locator('main tr[data-kind="circuit_open"]').waitFor();
    await go('#/executions/999999');
    await text('main .error-box[data-status="404"]', 'Not found').waitFor();
    await go('#/workflows/nope');
    await text('main .error-box[data-status="404"]', 'unknown workflow').waitFor();
    await go('#/nowhere');
    await page.locator('main h1:has-text("Not found")').waitFor();
    await audit();
  });

  await test('a list longer than one API answer says so; an older, slower answer never replaces a newer one', async () => {
    sql(`SELECT count(notiflow.put_workflow('bulk_' || lpad(g::text, 4, '0'), '{"nodes": [{"id": "t", "type": "trigger"}], "edges": []}'))
           FROM generate_series(1, 1001) g`);
    await go('#/workflows');
    await text('main .truncated', 'these are the first 1000, there may be more').waitFor();
    sql(`DELETE FROM notiflow.workflows WHERE key LIKE 'bulk\\_%'`);
    // the first Refresh is held back, the second answers at once (without the bulk workflows)
    let release;
    const gate = new Promise((r) => { release = r; });
    await page.route(/\/workflows\?/, async (route) => { await gate; await route.continue(); }, { times: 1 });
    await page.click('main button:has-text("Refresh")');
    await text('main [role="status"]', 'Loading workflows').waitFor();
    await page.click('main button:has-text("Refresh")');
    await page.locator('main tr[data-key="console_demo"]').waitFor();
    check(await page.locator('main tr[data-key^="bulk_"]').count() === 0, 'the newer answer still lists the deleted workflows');
    release();
    await page.locator('main [data-dropped="1"]').waitFor();
    check(await page.locator('main tr[data-key^="bulk_"]').count() === 0, 'the older answer replaced the newer one');
    check(await page.locator('main .truncated').count() === 0, 'the older answer\'s note is shown');
    await page.unroute(/\/workflows\?/);
  });

  await test('keyboard: Tab reaches the navigation, Enter opens a screen and moves focus to its heading', async () => {
    await page.click('nav a:has-text("Workflows")');
    await page.locator('main h1:has-text("Workflows")').waitFor();
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    await page.evaluate(() => document.body.focus());
    let found = false;
    for (let i = 0; i < 20 && !found; i++) {
      await page.keyboard.press('Tab');
      found = await page.evaluate(() => document.activeElement && document.activeElement.textContent === 'Deliveries');
    }
    check(found, 'Tab never reached the Deliveries link');
    await page.keyboard.press('Enter');
    await page.locator('main h1:has-text("Deliveries")').waitFor();
    await until(() => page.evaluate(() => document.activeElement && document.activeElement.tagName === 'H1'), 'focus on the heading');
    await page.locator('main tr[data-status="sent"]').first().waitFor();
    await audit();
  });

  await test('every form control on every screen has a label', async () => {
    check(missingLabels.length === 0, `unlabelled: ${[...new Set(missingLabels)].join(', ')}`);
  });

  await test('no uncaught errors in the page', async () => {
    check(pageErrors.length === 0, pageErrors.join('\n'));
  });
} finally {
  await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}

console.log(`1..${count}`);
process.exit(failed ? 1 : 0);
