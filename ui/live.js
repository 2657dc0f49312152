// Live: the last requests as they happen, from the server-sent events of /admin/live. Read
// with fetch (EventSource cannot send the Authorization header); every field is text.

import { session } from './api.js';
import { el, table, time } from './dom.js';

const KEEP = 100;

export async function render(root, showError) {
  const body = el('tbody');
  const state = el('span', { class: 'muted', 'data-testid': 'live-state' }, 'connecting…');
  const list = table('live-table', ['Time', 'Method', 'Path', { label: 'Status', num: true },
    { label: 'ms', num: true }, 'Key', 'Model', 'Route'], []);
  list.querySelector('tbody').replaceWith(body);
  root.append(el('div', { class: 'toolbar' }, el('h2', { class: 'grow' }, 'Live requests'), state),
    el('div', { class: 'card' }, list));
  const stop = new AbortController();
  stream(stop.signal, body, state, showError);
  return () => stop.abort();
}

async function stream(signal, body, state, showError) {
  while (!signal.aborted) {
    try {
      const response = await fetch('/admin/live', {
        headers: { authorization: `Bearer ${session.token ?? ''}` },
        cache: 'no-store', credentials: 'omit', signal,
      });
      if (!response.ok) { showError(`live feed: ${response.status}`); return; }
      state.textContent = 'streaming';
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          handle(buffer.slice(0, end), body, state);
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    state.textContent = 'reconnecting…';
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function handle(event, body, state) {
  const lines = event.split('\n');
  const kind = lines.find((l) => l.startsWith('event: '))?.slice(7) ?? 'message';
  const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
  if (!data) return;
  const entry = JSON.parse(data);
  if (kind === 'missed') { state.textContent = `streaming (skipped ${entry.missed})`; return; }
  const bad = entry.status >= 400;
  body.prepend(el('tr', {},
    el('td', {}, time(entry.ts_ms)), el('td', {}, entry.method ?? ''),
    el('td', { class: 'mono' }, entry.path ?? ''),
    el('td', { class: 'num' }, el('span', { class: `pill ${bad ? 'bad' : 'ok'}` }, String(entry.status ?? ''))),
    el('td', { class: 'num' }, entry.duration_us != null ? (entry.duration_us / 1000).toFixed(1) : ''),
    el('td', { class: 'mono' }, entry.key_id ?? ''), el('td', {}, entry.model ?? ''),
    el('td', {}, entry.route ?? '')));
  while (body.children.length > KEEP) body.lastChild.remove();
}
