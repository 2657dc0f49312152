// Providers: attempts, error rate, latency, time to first token and circuit state per
// provider, refreshed every five seconds.

import { get } from './api.js';
import { el, replace, table, int, pct } from './dom.js';

const ms = (v) => (v == null ? '—' : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`);

export async function render(root) {
  const list = el('div', { class: 'card' });
  root.append(el('h2', {}, 'Providers'), list,
    el('p', { class: 'muted' }, 'Counts since the gateway started; latency is the provider\'s answer time of each request\'s final attempt.'));
  const load = async () => {
    const providers = await get('/admin/providers');
    replace(list, providers.length === 0 ? el('p', { class: 'muted' }, 'No AI providers configured.') :
      table('providers-table', ['Provider', { label: 'Requests', num: true }, { label: 'Error rate', num: true },
        { label: 'p50', num: true }, { label: 'p99', num: true }, { label: 'TTFT p50', num: true },
        { label: 'TTFT p99', num: true }, 'Circuit'],
      providers.map((p) => el('tr', {},
        el('td', {}, p.provider), el('td', { class: 'num' }, int(p.requests)),
        el('td', { class: 'num' }, pct(p.error_rate)),
        el('td', { class: 'num' }, ms(p.latency_ms.p50)), el('td', { class: 'num' }, ms(p.latency_ms.p99)),
        el('td', { class: 'num' }, ms(p.first_token_ms.p50)), el('td', { class: 'num' }, ms(p.first_token_ms.p99)),
        el('td', {}, el('span', { class: `pill ${p.circuit === 'open' ? 'bad' : 'ok'}` }, p.circuit))))));
  };
  await load();
  const timer = setInterval(() => load().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
