// Overview: requests, tokens and cost over time by model, team or key (uPlot), totals, the
// error rate and the keys that spend the most. Keys are shown by name (the API sends each
// key row's `name` beside its id), the id kept as secondary text.

import { get } from './api.js';
import { el, replace, table, usd, int, pct } from './dom.js';

const RANGES = {
  hour: { since: '1h', bucket: '5m' },
  day: { since: '24h', bucket: '1h' },
  week: { since: '7d', bucket: '1h' },
  month: { since: '30d', bucket: '1d' },
};
const METRICS = {
  requests: (r) => r.requests,
  tokens: (r) => r.prompt_tokens + r.completion_tokens,
  cost: (r) => r.cost_usd,
};
const COLORS = ['#2f6fed', '#e8590c', '#0ca678', '#ae3ec9', '#f59f00', '#1098ad',
  '#d6336c', '#74b816', '#5c7cfa', '#868e96', '#495057'];
const BUCKET_MS = { '5m': 300000, '1h': 3600000, '1d': 86400000 };

const state = { range: 'day', group: 'model', metric: 'requests' };

function select(name, options) {
  return el('select', {
    'data-testid': `overview-${name}`,
    onchange: (e) => { state[name] = e.target.value; refresh(); },
  }, options.map((o) => el('option', { value: o, selected: state[name] === o }, o)));
}

let root = null;
let chart = null;
let parts = null;

export async function render(into) {
  root = into;
  parts = {
    stats: el('div', { class: 'stats' }),
    chart: el('div', { class: 'card chart', 'data-testid': 'usage-chart' }),
    top: el('div', { class: 'card' }),
  };
  root.append(
    el('div', { class: 'toolbar' },
      el('h2', { class: 'grow' }, 'Usage'),
      'Range', select('range', Object.keys(RANGES)),
      'By', select('group', ['model', 'team', 'key']),
      'Show', select('metric', Object.keys(METRICS))),
    parts.stats, parts.chart, parts.top);
  await refresh();
  return () => { chart?.destroy(); chart = null; root = null; };
}

async function refresh() {
  if (!root) return;
  const { since, bucket } = RANGES[state.range];
  const [series, byKey] = await Promise.all([
    get(`/admin/usage?group_by=${state.group}&since=${since}&bucket=${bucket}`),
    get(`/admin/usage?group_by=key&since=${since}&limit=10`),
  ]);
  if (!root) return;
  drawStats(series);
  drawChart(series, bucket, since);
  drawTop(byKey);
}

function drawStats(rows) {
  const sum = (f) => rows.reduce((t, r) => t + f(r), 0);
  const requests = sum((r) => r.requests);
  const errors = sum((r) => r.errors);
  const stat = (label, value) => el('div', { class: 'card stat' },
    el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));
  replace(parts.stats,
    stat('Requests', int(requests)),
    stat('Tokens', int(sum(METRICS.tokens))),
    stat('Cost', usd(sum((r) => r.cost_usd))),
    stat('Error rate', requests ? pct(errors / requests) : '—'));
}

/** The series is sparse: every bucket of the range gets a point, zero where none came. */
function drawChart(rows, bucket, since) {
  chart?.destroy();
  chart = null;
  const width = BUCKET_MS[bucket];
  const now = Date.now();
  const sinceMs = { '1h': 3600000, '24h': 86400000, '7d': 604800000, '30d': 2592000000 }[since];
  const first = Math.floor((now - sinceMs) / width) * width;
  const xs = [];
  for (let t = first; t <= now; t += width) xs.push(t);
  const index = new Map(xs.map((t, i) => [t, i]));
  const groups = [...new Set(rows.map((r) => r.group ?? 'other'))];
  const labels = new Map(rows.map((r) => [r.group ?? 'other', r.name ?? r.group ?? 'other']));
  const ys = groups.map(() => xs.map(() => 0));
  const value = METRICS[state.metric];
  for (const r of rows) {
    const i = index.get(r.ts_ms);
    if (i !== undefined) ys[groups.indexOf(r.group ?? 'other')][i] += value(r);
  }
  parts.chart.replaceChildren();
  parts.chart.dataset.groups = String(groups.length);
  parts.chart.dataset.points = String(rows.length);
  if (groups.length === 0) {
    parts.chart.append(el('p', { class: 'muted' }, 'No usage in this range yet.'));
    return;
  }
  const opts = {
    width: Math.max(parts.chart.clientWidth - 32, 300),
    height: 280,
    scales: { x: { time: true } },
    series: [{}, ...groups.map((g, i) => ({
      label: labels.get(g), stroke: COLORS[i % COLORS.length], width: 2, points: { show: false },
    }))],
    axes: [{}, { size: 60 }],
  };
  chart = new window.uPlot(opts, [xs.map((t) => t / 1000), ...ys], parts.chart);
  parts.chart.dataset.drawn = 'true';
}

function drawTop(rows) {
  const top = rows.slice(0, 10);
  replace(parts.top,
    el('h2', {}, 'Top keys by spend'),
    top.length === 0 ? el('p', { class: 'muted' }, 'No spend in this range.') :
      table('top-keys', ['Key', { label: 'Requests', num: true }, { label: 'Tokens', num: true },
        { label: 'Cost', num: true }], top.map((r) => el('tr', {},
        el('td', { title: r.group, 'data-testid': `top-key-${r.group}` },
          r.name ?? r.group, r.name ? el('div', { class: 'mono muted' }, r.group) : null),
        el('td', { class: 'num' }, int(r.requests)),
        el('td', { class: 'num' }, int(r.prompt_tokens + r.completion_tokens)),
        el('td', { class: 'num' }, usd(r.cost_usd))))));
}
