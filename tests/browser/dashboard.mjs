// Drives the dashboard in headless Chromium (Debian's, through playwright-core) against a
// running gateway that tests/dashboard_browser.rs started and filled. Every check throws on
// failure (non-zero exit); the last line of stdout is a JSON summary the Rust test reads.
//
// Environment: ADMIN_URL, DATA_URL (http://127.0.0.1:port), ADMIN_TOKEN, API_KEY_NAME (a key
// the test created through the API), ACCESS_REQUEST_ID (a pending request), SCREENSHOTS (a
// directory for one PNG per view).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
};
const ADMIN = env('ADMIN_URL');
const DATA = env('DATA_URL');
const TOKEN = env('ADMIN_TOKEN');
const API_KEY_NAME = env('API_KEY_NAME');
const ACCESS_ID = env('ACCESS_REQUEST_ID');
const SHOTS = env('SCREENSHOTS');
mkdirSync(SHOTS, { recursive: true });

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const testid = (id) => `[data-testid="${id}"]`;
const summary = {};

/** A chat completion on the data plane with `secret`: the status. */
async function chat(secret) {
  const response = await fetch(`${DATA}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mock-gpt', messages: [{ role: 'user', content: 'from the browser test' }] }),
  });
  await response.arrayBuffer();
  return response.status;
}

/** A page that records every request URL and every console error. */
async function watchedPage(context) {
  const page = await context.newPage();
  const seen = { urls: [], errors: [] };
  page.on('request', (request) => seen.urls.push(request.url()));
  page.on('console', (message) => {
    if (message.type() === 'error') seen.errors.push(`${message.text()} @ ${message.location().url}`);
  });
  page.on('pageerror', (error) => seen.errors.push(`uncaught: ${error.message}`));
  return { page, seen };
}

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: FLAGS });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });

  // A wrong token: an error, no data, nothing stored.
  {
    const { page, seen } = await watchedPage(context);
    await page.goto(`${ADMIN}/ui/`);
    await page.fill(testid('login-token'), 'not-the-admin-token');
    await page.click(testid('login-submit'));
    await page.waitForFunction(() => document.getElementById('login-error').textContent.length > 0);
    assert.match(await page.textContent('#login-error'), /refused/);
    assert.equal(await page.isVisible('#app'), false);
    assert.equal(await page.locator(testid('keys-table')).count(), 0);
    assert.equal(await page.evaluate(() => sessionStorage.length + localStorage.length), 0);
    await page.screenshot({ path: join(SHOTS, 'login-refused.png') });
    // The browser reports the refused call itself as a failed resource load; nothing else.
    const others = seen.errors.filter((e) => !/status of 401/.test(e));
    assert.deepEqual(others, [], 'console errors on the sign-in page');
    summary.wrong_token_requests = seen.urls.length;
    assert.ok(seen.urls.every((u) => u.startsWith(ADMIN + '/')), `left the gateway: ${seen.urls}`);
    await page.close();
  }

  const { page, seen } = await watchedPage(context);
  // The dashboard asks in its own dialogs; a browser prompt or confirm is a failure.
  const nativeDialogs = [];
  page.on('dialog', (dialog) => { nativeDialogs.push(dialog.message()); dialog.dismiss(); });
  await page.goto(`${ADMIN}/ui/`);

  // Sign in; the overview draws the usage chart from the AI traffic the test sent.
  const signIn = Date.now();
  await page.fill(testid('login-token'), TOKEN);
  await page.click(testid('login-submit'));
  await page.waitForSelector(`${testid('usage-chart')}[data-drawn="true"] canvas`);
  summary.overview_render_ms = Date.now() - signIn;
  const groups = Number(await page.getAttribute(testid('usage-chart'), 'data-groups'));
  assert.ok(groups >= 2, `the chart has a series per model (${groups})`);
  assert.ok(await page.locator('.u-legend').count() > 0, 'uPlot drew its legend');
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  // Top keys by spend are named, the id kept beside the name.
  const topKey = page.locator(`${testid('top-keys')} td[title^="key_"]`, { hasText: API_KEY_NAME });
  await topKey.first().waitFor();
  assert.match(await topKey.first().getAttribute('title'), /^key_/);
  await page.screenshot({ path: join(SHOTS, 'overview.png'), fullPage: true });

  // Grouped by key, the chart's series are labelled with key names.
  await page.selectOption(testid('overview-group'), 'key');
  await page.waitForSelector(`.u-legend >> text=${API_KEY_NAME}`);
  await page.screenshot({ path: join(SHOTS, 'overview-by-key.png'), fullPage: true });

  // Keys: the API-made key is listed, with its last use (the test's traffic, moments ago).
  await page.click(testid('nav-keys'));
  await page.waitForSelector(`${testid('keys-table')} >> text=${API_KEY_NAME}`);
  const apiRow = page.locator(`${testid('keys-table')} tr`, { hasText: API_KEY_NAME });
  const apiId = await apiRow.getAttribute('data-key-id');
  assert.match(await page.textContent(testid(`key-last-used-${apiId}`)), /s ago|min ago/);

  // Create in the UI; the secret is shown once and works on the data plane.
  await page.fill(testid('key-create-name'), 'made-in-the-browser');
  await page.click(testid('key-create-submit'));
  const secret = (await page.textContent(testid('key-secret'))).trim();
  assert.ok(secret.length > 20, 'a secret is shown');
  const stored = await page.evaluate(() => JSON.stringify([{ ...sessionStorage }, { ...localStorage }]));
  assert.ok(!stored.includes(secret), 'the secret reached browser storage');
  assert.equal(await chat(secret), 200, 'the new secret is accepted by the data plane');
  await page.click(testid('key-secret-dismiss'));
  assert.equal(await page.locator(testid('key-secret')).count(), 0, 'the secret is gone once dismissed');
  const row = page.locator(`${testid('keys-table')} tr`, { hasText: 'made-in-the-browser' });
  const id = await row.getAttribute('data-key-id');
  await page.screenshot({ path: join(SHOTS, 'keys.png'), fullPage: true });

  // Rotate in the page's dialog with no grace: the new secret works, the old one stops.
  await page.click(testid(`key-rotate-${id}`));
  await page.waitForSelector(testid('key-rotate-dialog'));
  await page.fill(testid('key-rotate-grace'), '0s');
  await page.screenshot({ path: join(SHOTS, 'rotate-dialog.png') });
  await page.click(testid('key-rotate-confirm'));
  await page.waitForSelector(testid('key-secret'));
  const rotated = (await page.textContent(testid('key-secret'))).trim();
  assert.notEqual(rotated, secret, 'rotation shows a new secret');
  assert.equal(await page.locator(testid('key-rotate-dialog')).count(), 0, 'the dialog closed');
  assert.equal(await chat(rotated), 200, 'the rotated secret is accepted');
  const rotatedAt = Date.now();
  while ((await chat(secret)) !== 401) {
    assert.ok(Date.now() - rotatedAt < 1000, 'the old secret still works a second after a rotation without grace');
    await new Promise((r) => setTimeout(r, 25));
  }
  await page.click(testid('key-secret-dismiss'));

  // Revoke: cancelling the dialog changes nothing.
  let deletes = 0;
  page.on('request', (r) => { if (r.method() === 'DELETE') deletes += 1; });
  await page.click(testid(`key-revoke-${id}`));
  await page.waitForSelector(testid('key-revoke-dialog'));
  await page.screenshot({ path: join(SHOTS, 'revoke-dialog.png') });
  await page.click(testid('key-revoke-cancel'));
  assert.equal(await page.locator(testid('key-revoke-dialog')).count(), 0, 'the dialog closed');
  assert.equal(deletes, 0, 'a cancelled revoke sent a DELETE');
  assert.equal(await chat(rotated), 200, 'a cancelled revoke stopped the key');

  // Revoke, confirmed; the data plane refuses the secret within a second.
  const revoked = page.waitForResponse((r) => r.request().method() === 'DELETE' && r.url().endsWith(`/admin/keys/${id}`));
  await page.click(testid(`key-revoke-${id}`));
  await page.click(testid('key-revoke-confirm'));
  assert.equal((await revoked).status(), 204);
  const since = Date.now();
  while ((await chat(rotated)) !== 401) {
    assert.ok(Date.now() - since < 1000, 'still accepted a second after the revoke');
    await new Promise((r) => setTimeout(r, 25));
  }
  summary.revoke_to_401_ms = Date.now() - since;
  await page.waitForSelector(`tr[data-key-id="${id}"] >> text=revoked`);

  // Access requests: pending first; approve with a note.
  await page.click(testid('nav-access'));
  await page.waitForSelector(testid(`access-approve-${ACCESS_ID}`));
  const first = await page.getAttribute(`${testid('access-table')} tbody tr`, 'data-request-id');
  assert.equal(first, ACCESS_ID, 'the pending request is listed first');
  await page.fill(testid(`access-note-${ACCESS_ID}`), 'approved from the dashboard');
  await page.click(testid(`access-approve-${ACCESS_ID}`));
  await page.waitForSelector(`tr[data-request-id="${ACCESS_ID}"] >> text=approved from the dashboard`);
  await page.screenshot({ path: join(SHOTS, 'access.png'), fullPage: true });

  // Providers.
  await page.click(testid('nav-providers'));
  await page.waitForSelector(`${testid('providers-table')} >> text=mock`);
  await page.screenshot({ path: join(SHOTS, 'providers.png'), fullPage: true });

  // Live: a request made now shows up.
  await page.click(testid('nav-live'));
  await page.waitForSelector(`${testid('live-state')} >> text=streaming`);
  await fetch(`${DATA}/v1/models/live-probe`).then((r) => r.arrayBuffer());
  await page.waitForSelector(`${testid('live-table')} >> text="/v1/models/live-probe"`);
  await page.screenshot({ path: join(SHOTS, 'live.png'), fullPage: true });

  // Back to the overview last, with everything the run added.
  await page.click(testid('nav-usage'));
  await page.waitForSelector(`${testid('usage-chart')}[data-drawn="true"] canvas`);

  assert.deepEqual(nativeDialogs, [], 'the browser\'s own prompt/confirm was used');
  assert.deepEqual(seen.errors, [], 'console errors');
  const outside = seen.urls.filter((u) => !u.startsWith(ADMIN + '/'));
  assert.deepEqual(outside, [], 'requests that left the gateway');
  summary.requests = seen.urls.length;
  summary.distinct_urls = new Set(seen.urls.map((u) => u.split('?')[0])).size;
  await context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
