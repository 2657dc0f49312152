// Keys: a server-side paged, filtered list (fast at 10,000 keys) with each key's last use,
// create with the secret shown once, rotate with a grace period and revoke after a
// confirmation (both in in-page dialogs), edit limits and budgets. A secret is only ever in
// the page's DOM until dismissed: never in storage.

import { api } from './api.js';
import { ago, ask, el, replace, table, time, usd } from './dom.js';

const PAGE = 50;
let root = null;
let parts = null;
let offset = 0;
let filter = '';
let typing = null;

export async function render(into, showError) {
  root = into;
  offset = 0;
  const name = el('input', { 'data-testid': 'key-create-name', placeholder: 'name', required: true });
  const team = el('input', { 'data-testid': 'key-create-team', placeholder: 'team (optional)' });
  const budget = el('input', { 'data-testid': 'key-create-budget', placeholder: 'budget USD', type: 'number', min: '0', step: 'any' });
  const create = el('form', { class: 'card form-row', onsubmit: async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim() };
    if (team.value.trim()) body.team = team.value.trim();
    if (budget.value) body.budget_usd = Number(budget.value);
    try {
      const { data } = await api('POST', '/admin/keys', body);
      name.value = ''; team.value = ''; budget.value = '';
      showSecret(`Key ${data.name} created`, data.key);
      await load();
    } catch (err) { showError(err.message); }
  } },
  el('label', {}, 'Name', name), el('label', {}, 'Team', team), el('label', {}, 'Budget', budget),
  el('button', { type: 'submit', 'data-testid': 'key-create-submit' }, 'Create key'));
  const search = el('input', { type: 'search', placeholder: 'Filter by name, id, team or prefix',
    'data-testid': 'keys-filter', value: filter, oninput: (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => { filter = e.target.value; offset = 0; load(); }, 200);
    } });
  parts = { secret: el('div'), list: el('div', { class: 'card' }), pager: el('div', { class: 'pager' }), showError };
  root.append(el('div', { class: 'toolbar' }, el('h2', { class: 'grow' }, 'Keys'), search),
    create, parts.secret, parts.list, parts.pager);
  await load();
  return () => { clearTimeout(typing); root = null; };
}

/** Shows a new secret once, with a copy button; it is dropped from the page on dismiss. */
function showSecret(title, secret) {
  const code = el('code', { class: 'mono', 'data-testid': 'key-secret' }, secret);
  const copy = el('button', { type: 'button', class: 'quiet', onclick: async () => {
    try { await navigator.clipboard.writeText(secret); copy.textContent = 'Copied'; }
    catch { copy.textContent = 'Select and copy'; }
  } }, 'Copy');
  replace(parts.secret, el('div', { class: 'secret' },
    el('strong', {}, title, ':'), code, copy,
    el('button', { type: 'button', 'data-testid': 'key-secret-dismiss',
      onclick: () => parts.secret.replaceChildren() }, 'Done')),
    el('p', { class: 'muted' }, 'This is the only time the secret is shown.'));
}

async function load() {
  if (!root) return;
  const query = new URLSearchParams({ limit: PAGE, offset });
  if (filter) query.set('q', filter);
  const { data, headers } = await api('GET', `/admin/keys?${query}`);
  if (!root) return;
  const total = Number(headers.get('x-total-count') ?? data.length);
  replace(parts.list, table('keys-table',
    ['Name', 'Id', 'Team', 'Prefix', 'Limits', 'Created', 'Last used', 'Status', ''],
    data.map(row)));
  replace(parts.pager,
    el('span', { class: 'muted' }, total === 0 ? 'No keys' :
      `${offset + 1}–${offset + data.length} of ${total}`),
    el('button', { type: 'button', class: 'quiet', disabled: offset === 0,
      onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, 'Previous'),
    el('button', { type: 'button', class: 'quiet', disabled: offset + PAGE >= total,
      'data-testid': 'keys-next', onclick: () => { offset += PAGE; load(); } }, 'Next'));
}

function limits(k) {
  const parts = [];
  if (k.rpm) parts.push(`${k.rpm} rpm`);
  if (k.tpm) parts.push(`${k.tpm} tpm`);
  if (k.budget_usd != null) parts.push(`${usd(k.budget_usd)}/${k.budget_period ?? 'total'}`);
  return parts.join(', ') || '—';
}

function status(k) {
  if (k.revoked_at) return el('span', { class: 'pill bad' }, 'revoked');
  if (k.expires_at && k.expires_at * 1000 < Date.now()) return el('span', { class: 'pill warn' }, 'expired');
  return el('span', { class: 'pill ok' }, 'active');
}

function row(k) {
  const active = !k.revoked_at;
  const actions = el('td', { class: 'actions' });
  if (active) {
    actions.append(
      el('button', { type: 'button', class: 'quiet', 'data-testid': `key-edit-${k.id}`,
        onclick: () => edit(k, tr) }, 'Edit'),
      el('button', { type: 'button', class: 'quiet', 'data-testid': `key-rotate-${k.id}`,
        onclick: () => rotate(k) }, 'Rotate'),
      el('button', { type: 'button', class: 'danger', 'data-testid': `key-revoke-${k.id}`,
        onclick: () => revoke(k) }, 'Revoke'));
  }
  const tr = el('tr', { 'data-key-id': k.id },
    el('td', {}, k.name), el('td', { class: 'mono' }, k.id), el('td', {}, k.team || '—'),
    el('td', { class: 'mono' }, k.prefix), el('td', {}, limits(k)),
    el('td', {}, time(k.created_at * 1000)),
    el('td', { 'data-testid': `key-last-used-${k.id}`, title: k.last_used_at ? time(k.last_used_at * 1000) : undefined },
      ago(k.last_used_at)),
    el('td', {}, status(k)), actions);
  return tr;
}

async function revoke(k) {
  const confirmed = await ask({
    title: `Revoke ${k.name}?`, testid: 'key-revoke', confirm: 'Revoke', danger: true,
    content: [el('p', {}, 'Requests with key ', el('span', { class: 'mono' }, k.id),
      ' fail within a second. This cannot be undone.')],
  });
  if (!confirmed) return;
  try { await api('DELETE', `/admin/keys/${encodeURIComponent(k.id)}`); await load(); }
  catch (e) { parts.showError(e.message); }
}

async function rotate(k) {
  const grace = el('input', { 'data-testid': 'key-rotate-grace', value: '1h', required: true,
    title: 'a duration such as 1h, 30m or 0s' });
  const confirmed = await ask({
    title: `Rotate ${k.name}`, testid: 'key-rotate', confirm: 'Rotate',
    content: [el('p', {}, 'A new secret is issued for the same key and shown once.'),
      el('label', { class: 'field' }, 'How long may the old secret keep working? (0s: stop it now)', grace)],
  });
  if (!confirmed) return;
  try {
    const { data } = await api('POST', `/admin/keys/${encodeURIComponent(k.id)}/rotate`, { grace: grace.value.trim() || '0s' });
    showSecret(`New secret for ${k.name}`, data.key);
  } catch (e) { parts.showError(e.message); }
}

/** Replaces the row with a small form for limits and budget. */
function edit(k, tr) {
  const field = (name, value, label) => el('label', {}, label,
    el('input', { name, value: value ?? '', type: name === 'budget_period' ? 'text' : 'number', min: '0', step: 'any' }));
  const form = el('form', { class: 'form-row', onsubmit: async (e) => {
    e.preventDefault();
    const patch = {};
    for (const input of form.querySelectorAll('input')) {
      const v = input.value.trim();
      patch[input.name] = v === '' ? null : input.type === 'number' ? Number(v) : v;
    }
    try { await api('PATCH', `/admin/keys/${encodeURIComponent(k.id)}`, patch); await load(); }
    catch (err) { parts.showError(err.message); }
  } },
  field('rps', k.rps, 'rps'), field('rpm', k.rpm, 'rpm'), field('tpm', k.tpm, 'tpm'),
  field('max_concurrency', k.max_concurrency, 'concurrency'),
  field('budget_usd', k.budget_usd, 'budget USD'), field('budget_tokens', k.budget_tokens, 'budget tokens'),
  field('budget_period', k.budget_period, 'period (1d, 30d)'),
  el('button', { type: 'submit' }, 'Save'),
  el('button', { type: 'button', class: 'quiet', onclick: () => load() }, 'Cancel'));
  replace(tr, el('td', { colspan: 9 }, el('strong', {}, k.name), form));
}
