// The dashboard shell: hash routes, the live event stream, the live-jobs poller, error and
// announcement regions.  Each view is a module with mount(root, params, ctx).

import { get } from './api.js';
import { startEvents } from './events.js';
import { h, LIVE_DONE } from './util.js';
import overview from './views/overview.js';
import drives from './views/drives.js';
import chain from './views/chain.js';
import jobs from './views/jobs.js';
import reports from './views/reports.js';
import report from './views/report.js';
import policies from './views/policies.js';
import notifications from './views/notifications.js';

const routes = [
  [/^#\/overview$/, overview, 'overview'],
  [/^#\/drives$/, drives, 'drives'],
  [/^#\/drives\/([^/]+)$/, chain, 'drives'],
  [/^#\/jobs$/, jobs, 'jobs'],
  [/^#\/reports$/, reports, 'reports'],
  [/^#\/reports\/([^/]+)$/, report, 'reports'],
  // operations views (storage, images, NBD exports, remotes, tokens): each module is loaded
  // the first time it is shown; [route, module file, nav entry]
  ...[[/^#\/storage$/, 'storage', 'storage'], [/^#\/images$/, 'images', 'images'],
    [/^#\/images\/(.+)$/, 'image', 'images'], [/^#\/exports$/, 'exports', 'exports'],
    [/^#\/remotes$/, 'remotes', 'remotes'], [/^#\/tokens$/, 'tokens', 'tokens'],
  ].map(([re, file, nav]) => [re, { mount: (...a) => import(`./views/${file}.js`).then((m) => m.default.mount(...a)) }, nav]),
  [/^#\/policies$/, policies, 'policies'],
  [/^#\/notifications$/, notifications, 'notifications'],
];

const main = document.getElementById('main');
const errors = document.getElementById('errors');
const announcer = document.getElementById('announce');
const conn = document.getElementById('conn');

// ---- messages ----

function showError(e) {
  const text = e && (e.desc || e.message) ? (e.desc || e.message) : String(e);
  const box = h('div', { class: 'error-box', role: 'alert' },
    h('span', { class: 'error-text' }, text),
    h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss this message',
      onclick: () => box.remove() }, 'Dismiss'));
  errors.append(box);
  while (errors.children.length > 3) errors.firstChild.remove();
}

function announce(text) {
  announcer.textContent = '';
  setTimeout(() => { announcer.textContent = text; }, 30);
}

// Runs an action from a button: disabled while it runs, the API's sentence on failure.
async function act(button, fn, done) {
  if (button) button.disabled = true;
  try {
    const r = await fn();
    if (done) announce(typeof done === 'function' ? done(r) : done);
    return r;
  } catch (e) {
    showError(e);
    return undefined;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

// ---- live jobs: refreshed on job events, polled each second while one runs (progress is
// not an event) ----

const jobStore = {
  list: [],
  subs: new Set(),
  timer: null,
  busy: false,
  subscribe(fn) { this.subs.add(fn); fn(this.list); return () => this.subs.delete(fn); },
  async refresh() {
    if (this.busy) { this.again = true; return; }
    this.busy = true;
    try {
      const r = await get('/api/v1/jobs');
      this.list = r.jobs;
      for (const fn of this.subs) fn(this.list);
    } catch (e) {
      /* shown by the views' own calls; the poller stays quiet */
    } finally {
      this.busy = false;
    }
    clearTimeout(this.timer);
    const active = this.list.some((j) => !LIVE_DONE.has(j.status));
    if (this.again || active) {
      const delay = this.again ? 100 : 1000;
      this.again = false;
      this.timer = setTimeout(() => this.refresh(), delay);
    }
  },
};

// ---- routing ----

let current = null;
let seq = 0;

async function route() {
  let hash = location.hash;
  if (!hash.startsWith('#/')) {
    if (hash === '#main') return;
    hash = '#/overview';
    history.replaceState(null, '', hash);
  }
  let match = null;
  for (const [re, view, nav] of routes) {
    const m = hash.match(re);
    if (m) { match = { view, nav, params: m.slice(1).map(decodeURIComponent) }; break; }
  }
  if (current && current.unmount) current.unmount();
  current = null;
  const my = ++seq;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (match && a.dataset.nav === match.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!match) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/overview' }, 'Back to the overview')));
    return;
  }
  const root = h('div', { class: 'view' });
  main.append(root);
  const ctx = { error: showError, announce, act, jobs: jobStore };
  try {
    const inst = await match.view.mount(root, match.params, ctx);
    if (my !== seq) { if (inst && inst.unmount) inst.unmount(); return; }
    current = inst || {};
  } catch (e) {
    showError(e);
  }
  document.title = `${root.querySelector('h1')?.textContent || 'Dashboard'} · Blockvault`;
  if (routed) main.focus({ preventScroll: false });
  routed = true;
}
let routed = false;

window.addEventListener('hashchange', route);
document.getElementById('skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});

// ---- events ----

const JOB_EVENTS = /^(JOB_STATUS_CHANGE|BLOCK_JOB_)/;

startEvents({
  onEvent(ev) {
    if (JOB_EVENTS.test(ev.event)) jobStore.refresh();
    if (current && current.onEvent) current.onEvent(ev);
  },
  onState(state) {
    conn.dataset.state = state;
    conn.textContent = state === 'live' ? 'Live' : state === 'auth' ? 'Waiting for token' : 'Reconnecting…';
    if (state === 'live') { jobStore.refresh(); if (current && current.onEvent) current.onEvent({ event: 'RECONNECTED' }); }
  },
});

route();
