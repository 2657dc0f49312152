// The dashboard's shell: sign-in, navigation between views, sign-out when the API refuses
// the token. Each view is a module exporting `render(root)`, which may return a cleanup
// function called when the view is left.

import { api, session, onUnauthorized } from './api.js';
import * as overview from './overview.js';
import * as keys from './keys.js';
import * as access from './access.js';
import * as providers from './providers.js';
import * as live from './live.js';

const views = { overview, keys, access, providers, live };
const $ = (id) => document.getElementById(id);
let leave = null;

/** Shows `message` under the header (or clears it). */
export function showError(message) {
  const banner = $('app-error');
  banner.textContent = message ?? '';
  banner.hidden = !message;
}

async function show(name) {
  if (leave) { leave(); leave = null; }
  showError(null);
  for (const button of document.querySelectorAll('nav button')) {
    button.classList.toggle('active', button.dataset.view === name);
  }
  const root = $('view');
  root.replaceChildren();
  try {
    leave = (await views[name].render(root, showError)) ?? null;
  } catch (e) {
    showError(e.message);
  }
  history.replaceState(null, '', `#${name}`);
}

function signedIn() {
  $('login').hidden = true;
  $('app').hidden = false;
  const wanted = location.hash.slice(1);
  show(views[wanted] ? wanted : 'overview');
}

function signOut(message) {
  if (leave) { leave(); leave = null; }
  session.clear();
  $('view').replaceChildren();
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message ?? '';
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('login-token');
  const token = input.value.trim();
  $('login-error').textContent = '';
  try {
    // Any admin call proves the token; the smallest page of keys is cheap.
    await api('GET', '/admin/keys?limit=1', undefined, token);
    input.value = '';
    session.set(token);
    signedIn();
  } catch (e) {
    $('login-error').textContent =
      e.status === 401 ? 'That admin token was refused.' : `Sign-in failed: ${e.message}`;
  }
});

for (const button of document.querySelectorAll('nav button')) {
  button.addEventListener('click', () => show(button.dataset.view));
}
$('sign-out').addEventListener('click', () => signOut());
onUnauthorized.add((message) => signOut(`Signed out: ${message}`));

if (session.token) signedIn();
