// Building the page without ever parsing data as HTML: every text goes in as a text node
// (textContent), every attribute through setAttribute. Nothing here uses innerHTML.

/** Makes an element. `attrs`: attribute name to value (`class`, `data-testid`, ...), with
 *  `on<event>` keys taking listener functions; `children`: nodes or strings (as text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2), value);
    } else if (name === 'value') {
      node.value = value;
    } else {
      node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

/** Appends nodes and strings (as text) to `node`. */
export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces everything in `node` with `children`. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** A table: `columns` are header labels (or `{label, num}`), `rows` arrays of cells. */
export function table(testid, columns, rows) {
  const head = el('tr', {}, columns.map((c) =>
    el('th', { class: c.num ? 'num' : undefined }, c.label ?? c)));
  return el('table', { 'data-testid': testid }, el('thead', {}, head), el('tbody', {}, rows));
}

// Sub-cent amounts (a few tokens' worth) keep three significant digits instead of rounding to 0.
export const usd = (n) => '$' + (n === 0 ? '0.00' : n >= 1 ? n.toFixed(2) : n >= 0.01 ? n.toFixed(4) : n.toPrecision(3));
export const int = (n) => Number(n).toLocaleString('en-US');
export const time = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '');
export const pct = (n) => (n * 100).toFixed(1) + '%';

/** How long ago unix-seconds `seconds` was, in words ('never' without one). */
export function ago(seconds, nowMs = Date.now()) {
  if (!seconds) return 'never';
  const s = Math.max(0, Math.round(nowMs / 1000 - seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return time(seconds * 1000).slice(0, 10);
}

/** An in-page modal dialog (the page's own, never the browser's confirm/prompt): a title,
 *  `content` nodes (inputs are read by the caller), Cancel and a confirm button whose
 *  test ids are `<testid>-cancel` and `<testid>-confirm`. Resolves true on confirm, false on
 *  Cancel or Escape; the dialog leaves the page either way. */
export function ask({ title, content = [], confirm, testid, danger = false }) {
  return new Promise((resolve) => {
    const box = el('dialog', { class: 'dialog', 'data-testid': `${testid}-dialog` });
    let done = false;
    // Leaves the page at once, whichever way it ends (a button, Escape).
    const finish = (answer) => {
      if (done) return;
      done = true;
      if (box.open) box.close();
      box.remove();
      resolve(answer);
    };
    const form = el('form', { onsubmit: (e) => { e.preventDefault(); finish(true); } },
      el('h2', {}, title), content,
      el('div', { class: 'dialog-actions' },
        el('button', { type: 'button', class: 'quiet', 'data-testid': `${testid}-cancel`,
          onclick: () => finish(false) }, 'Cancel'),
        el('button', { type: 'submit', class: danger ? 'danger' : undefined,
          'data-testid': `${testid}-confirm` }, confirm)));
    box.append(form);
    box.addEventListener('close', () => finish(false));
    document.body.append(box);
    box.showModal();
  });
}
