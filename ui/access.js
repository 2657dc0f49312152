// Access requests: pending ones first, each approved or denied with an optional note.

import { api, get } from './api.js';
import { el, replace, table, time } from './dom.js';

const ORDER = { pending: 0, approved: 1, claimed: 2, denied: 3, expired: 4 };
let root = null;
let list = null;

export async function render(into, showError) {
  root = into;
  list = el('div', { class: 'card' });
  root.append(el('h2', {}, 'Access requests'), list);
  await load(showError);
  return () => { root = null; };
}

async function load(showError) {
  const requests = await get('/admin/access-requests');
  if (!root) return;
  requests.sort((a, b) => (ORDER[a.status] ?? 9) - (ORDER[b.status] ?? 9) || b.created_at - a.created_at);
  if (requests.length === 0) {
    replace(list, el('p', { class: 'muted' }, 'No access requests.'));
    return;
  }
  replace(list, table('access-table',
    ['Requested', 'Name', 'Team', 'Requester', 'Reason', 'TTL', 'Status', 'Decision'],
    requests.map((r) => row(r, showError))));
}

function row(r, showError) {
  const decision = el('td', { class: 'actions' });
  if (r.status === 'pending') {
    const note = el('input', { placeholder: 'note', 'data-testid': `access-note-${r.id}` });
    const decide = (verb) => async () => {
      try {
        const body = note.value.trim() ? { note: note.value.trim() } : {};
        await api('POST', `/admin/access-requests/${encodeURIComponent(r.id)}/${verb}`, body);
        await load(showError);
      } catch (e) { showError(e.message); }
    };
    decision.append(note,
      el('button', { type: 'button', 'data-testid': `access-approve-${r.id}`, onclick: decide('approve') }, 'Approve'),
      el('button', { type: 'button', class: 'danger', 'data-testid': `access-deny-${r.id}`, onclick: decide('deny') }, 'Deny'));
  } else {
    decision.append(el('span', { class: 'muted' },
      [r.decided_by, r.note].filter(Boolean).join(': ') || '—'));
  }
  const pill = { pending: 'warn', approved: 'ok', claimed: 'ok', denied: 'bad' }[r.status] ?? '';
  return el('tr', { 'data-request-id': r.id },
    el('td', {}, time(r.created_at * 1000)), el('td', {}, r.name), el('td', {}, r.team || '—'),
    el('td', { class: 'mono' }, r.requester), el('td', {}, r.reason || '—'), el('td', {}, r.ttl || '—'),
    el('td', {}, el('span', { class: `pill ${pill}` }, r.status)), decision);
}
