// Measures the dashboard against a large store (tests/dashboard_browser.rs's ignored scale
// test fills it): time from sign-in to the overview's chart, to a month of usage by key, to
// the first page of keys and to a filtered page. Prints one JSON line of milliseconds.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const ADMIN = process.env.ADMIN_URL;
const TOKEN = process.env.ADMIN_TOKEN;
assert.ok(ADMIN && TOKEN, 'ADMIN_URL and ADMIN_TOKEN are set');
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const testid = (id) => `[data-testid="${id}"]`;
const drawn = `${testid('usage-chart')}[data-drawn="true"] canvas`;

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: FLAGS });
const figures = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(`${ADMIN}/ui/`);
  let t = Date.now();
  await page.fill(testid('login-token'), TOKEN);
  await page.click(testid('login-submit'));
  await page.waitForSelector(drawn, { timeout: 60000 });
  figures.overview_first_render_ms = Date.now() - t;

  await page.evaluate(() => { document.querySelector('[data-testid="usage-chart"]').dataset.drawn = 'stale'; });
  t = Date.now();
  await page.selectOption(testid('overview-range'), 'month');
  await page.waitForSelector(drawn, { timeout: 60000 });
  figures.overview_month_by_model_ms = Date.now() - t;

  await page.evaluate(() => { document.querySelector('[data-testid="usage-chart"]').dataset.drawn = 'stale'; });
  t = Date.now();
  await page.selectOption(testid('overview-group'), 'key');
  await page.waitForSelector(drawn, { timeout: 60000 });
  figures.overview_month_by_key_ms = Date.now() - t;

  t = Date.now();
  await page.click(testid('nav-keys'));
  await page.waitForSelector(`${testid('keys-table')} tbody tr:nth-child(50)`);
  figures.keys_first_page_ms = Date.now() - t;
  figures.keys_total = await page.textContent('.pager span');

  t = Date.now();
  await page.fill(testid('keys-filter'), 'scale-09999');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="keys-table"] tbody tr').length === 1);
  figures.keys_filter_ms = Date.now() - t; // includes the 200 ms typing debounce
  assert.deepEqual(errors, []);
} finally {
  await browser.close();
}
console.log(JSON.stringify(figures));
