// web/js/views/providers.js — the providers screen: each provider's
// configuration as the API shows it (secrets as ********), its circuit
// breaker state and its health over the recent window (success rate,
// latencies, last error) from /provider_health, and a test message through it
// (/rpc/send_test, admin) followed until it is sent or fails.

import { get, rpc } from '../api.js';
import { act, badge, empty, field, h, href, json, load, ms, poll, time, put, truncatedNote } from '../ui.js';

const ADDRESS = { email: 'Email address', sms: 'Phone number (E.164)', push: 'Device token' };

export function list(ctx) {
  const region = h('div');
  const refresh = () => load(region, 'Loading providers…', async () => {
    const [providers, health] = await Promise.all([
      get('providers', { order: 'channel,priority,name' }),
      // /provider_health comes with the operations SQL; without it the screen shows the circuits only
      get('provider_health').catch((e) => (e.status === 404 ? null : Promise.reject(e))),
    ]);
    return { providers, health };
  }, ({ providers, health }, r) => {
    if (!providers.length) {
      put(r, empty('No providers configured', 'An admin adds them with /rpc/put_provider or notiflow.put_provider() in SQL.'));
      return;
    }
    const byName = new Map((health || []).map((x) => [x.provider, x]));
    put(r, h('div.cards', providers.map((p) => card(ctx, p, byName.get(p.name), health !== null))), truncatedNote(providers));
  });
  put(ctx.main, h('div.page-head', h('h1', 'Providers'),
    h('div.actions', h('button.secondary', { type: 'button', onclick: () => refresh() }, 'Refresh'))), region);
  refresh();
}

function card(ctx, p, hl, hasHealth) {
  const circuit = hl ? hl.circuit_state : p.circuit_state;
  const rate = hl && hl.success_rate !== null ? `${(Number(hl.success_rate) * 100).toFixed(1)} %` : '—';
  const slug = p.name.replace(/[^A-Za-z0-9_-]/g, '-');
  return h('section.panel.card', { 'aria-labelledby': `prov-${slug}`, 'data-provider': p.name },
    h('h2', { id: `prov-${slug}` }, p.name, ' ', h('span.muted.small', `${p.channel} · ${p.kind}`)),
    h('p', p.enabled ? badge('enabled', 'ok') : badge('disabled', 'bad'), ' ',
      h('span', { 'data-circuit': circuit }, 'circuit ', badge(circuit)), ' ',
      h('span.muted.small', `priority ${p.priority}`)),
    h('dl.facts',
      hasHealth ? [
        h('dt', 'Window'), h('dd', hl ? String(hl.window) : '—'),
        h('dt', 'Attempts'), h('dd', { 'data-attempts': hl ? String(hl.attempts) : '0' }, hl ? `${hl.attempts} (${hl.sent} sent, ${hl.failed} failed${hl.refused ? `, ${hl.refused} refused for the recipient` : ''})` : '0'),
        h('dt', 'Success rate'), h('dd', { 'data-success-rate': rate }, rate),
        h('dt', 'Latency p50 / p95'), h('dd', hl ? `${ms(hl.latency_p50_ms)} / ${ms(hl.latency_p95_ms)}` : '—'),
        h('dt', 'Last success'), h('dd', time(hl && hl.last_success_at)),
      ] : [h('dt', 'Health'), h('dd.muted', 'not available (the API has no /provider_health)')],
      p.consecutive_failures ? [h('dt', 'Failures in a row'), h('dd', String(p.consecutive_failures))] : null,
      p.circuit_opened_at ? [h('dt', 'Circuit opened'), h('dd', time(p.circuit_opened_at))] : null,
      (hl && hl.last_error) || p.last_error ? [h('dt', 'Last error'), h('dd.field-error', (hl && hl.last_error) || p.last_error)] : null),
    h('details', h('summary', 'Configuration (secrets hidden)'), json(p.config)),
    testForm(ctx, p, slug));
}

function testForm(ctx, p, slug) {
  const needs = ADDRESS[p.channel];
  const recipient = h('input', { type: 'text', name: 'recipient', autocomplete: 'off', spellcheck: 'false', required: !!needs });
  const f = field(needs ? `Send a test to (${needs.toLowerCase()})` : 'Send a test to (optional)', recipient, { id: `test-${slug}` });
  const out = h('div.out');
  const send = h('button.secondary', { type: 'submit' }, 'Send test');
  const form = h('form', { novalidate: true, 'aria-label': `Send a test message through ${p.name}` }, f, h('div.actions', send), out);
  let following = 0;  // the newest test's number: an older follow stops at its next look
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    f.error('');
    if (needs && !recipient.value.trim()) { f.error(`${needs} needed for a ${p.channel} test.`); recipient.focus(); return; }
    const id = await act(send, 'Sending…', () => rpc('send_test', { provider: p.name, recipient: recipient.value.trim() || null }), {
      out,
      success: (deliveryId) => h('span', { 'data-test-delivery': String(deliveryId) }, 'Queued test ',
        h('a', { href: href(`/deliveries/${deliveryId}`) }, `delivery #${deliveryId}`), '; waiting for the provider…'),
      onError: (e) => { for (const pr of e.problems ? e.problems() : []) if (pr.path === 'recipient') f.error(pr.message); },
    });
    if (id === undefined) return;
    // follow the delivery until it ends, for two minutes at most; a new test stops following the last
    const mine = ++following;
    const deadline = Date.now() + 120000;
    poll(ctx, 700, async () => {
      if (mine !== following) return false;
      if (Date.now() > deadline) {
        out.replaceChildren(h('div.result', { role: 'status', 'data-test-result': 'waiting' },
          'Test ', h('a', { href: href(`/deliveries/${id}`) }, `delivery #${id}`),
          ' has not ended after two minutes; follow it there.'));
        return false;
      }
      const [d] = await get('deliveries', { id: `eq.${id}`, select: 'status,last_error,attempts(status_code,latency_ms,error_class,error)' });
      if (mine !== following) return false;  // a newer test: its own follow writes the result
      if (!d || ['queued', 'sending'].includes(d.status)) return true;
      const a = (d.attempts || [])[d.attempts.length - 1];
      out.replaceChildren(h(d.status === 'failed' ? 'div.error-box' : 'div.result', { role: d.status === 'failed' ? 'alert' : 'status', 'data-test-result': d.status },
        'Test ', h('a', { href: href(`/deliveries/${id}`) }, `delivery #${id}`), ': ', badge(d.status),
        a ? ` (${a.status_code ? `HTTP ${a.status_code}, ` : ''}${ms(a.latency_ms)})` : '',
        d.last_error ? ` — ${d.last_error}` : ''));
      return false;
    });
  });
  return form;
}
