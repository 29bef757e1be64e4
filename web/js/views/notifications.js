// Notifications: the webhooks, and first of all the alerts that have not reached anyone
// (deliveries still pending or failed), then each webhook with its delivery log.

import { get, del, enc } from '../api.js';
import { h, replace, time, badge } from '../util.js';
import { debounce, table } from './common.js';

const STATE_TONE = { delivered: 'ok', pending: 'warn', failed: 'bad' };

// The undelivered deliveries of every notification, newest first.
export async function undelivered(list) {
  const logs = await Promise.all(list.map((n) =>
    (n.deliveries.pending || n.deliveries.failed
      ? get(`/api/v1/notifications/${enc(n.name)}/deliveries?limit=100`).then((r) => r.deliveries)
      : Promise.resolve([]))
      .then((ds) => ds.filter((d) => d.state !== 'delivered').map((d) => ({ ...d, notification: n.name })))));
  return logs.flat().sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
}

function stateCell(d) {
  return h('span', {}, badge(d.state, STATE_TONE[d.state]),
    d.last_error ? h('div', { class: 'error-text small' }, d.last_error) : null);
}

function nextCell(d) {
  return d.next_attempt_at ? time(d.next_attempt_at, { rel: true }) : h('span', { class: 'muted' }, '—');
}

export default {
  async mount(root, _params, ctx) {
    const alerts = h('section', { class: 'card', 'aria-labelledby': 'nt-alerts' });
    const list = h('div', { class: 'policy-list' });
    root.append(h('h1', {}, 'Notifications'), alerts, list);
    const logs = new Map();   // name -> deliveries shown under its card
    let items = [];
    let pendingOrFailed = [];

    function renderAlerts() {
      const failed = pendingOrFailed.filter((d) => d.state === 'failed').length;
      replace(alerts, h('h2', { id: 'nt-alerts' }, 'Undelivered alerts'),
        pendingOrFailed.length
          ? [h('p', { class: failed ? 'error-text' : '', role: 'status' },
            `${pendingOrFailed.length} alert${pendingOrFailed.length === 1 ? '' : 's'} not delivered`
            + (failed ? `, ${failed} given up after every attempt` : ', still being retried') + '.'),
          table('Undelivered alerts', [
            { label: 'Event', cell: (d) => h('strong', {}, d.event) },
            { label: 'Webhook', cell: (d) => d.notification },
            { label: 'Raised', cell: (d) => time(d.created_at, { rel: true }) },
            { label: 'State', cell: stateCell },
            { label: 'Attempts', cell: (d) => String(d.attempts) },
            { label: 'Next attempt', cell: nextCell },
          ], pendingOrFailed.slice(0, 50), { rowKey: (d) => `${d.notification}:${d.id}` })]
          : h('p', { class: 'ok-text' }, 'Every alert was delivered.'));
    }

    function logTable(n, ds) {
      return h('section', { class: 'sub', 'aria-label': `Delivery log of ${n.name}` },
        h('h3', {}, 'Delivery log'),
        table(`Delivery log of ${n.name}`, [
          { label: 'Id', cell: (d) => String(d.id) },
          { label: 'Event', cell: (d) => d.event },
          { label: 'Raised', cell: (d) => time(d.created_at) },
          { label: 'State', cell: stateCell },
          { label: 'Attempts', cell: (d) => String(d.attempts) },
          { label: 'Last status', cell: (d) => (d.last_status === null ? '—' : String(d.last_status)) },
          { label: 'Delivered', cell: (d) => (d.delivered_at ? time(d.delivered_at) : '—') },
          { label: 'Next attempt', cell: nextCell },
        ], ds, { empty: 'Nothing sent yet.' }));
    }

    function card(n) {
      const log = logs.get(n.name);
      const c = n.deliveries;
      return h('article', { class: 'card policy', 'aria-labelledby': `nt-${n.name}` },
        h('header', { class: 'row spread' }, h('h2', { id: `nt-${n.name}` }, n.name),
          c.failed ? badge(`${c.failed} failed`, 'bad') : c.pending ? badge(`${c.pending} pending`, 'warn') : badge('all delivered', 'ok')),
        h('dl', { class: 'stats' },
          h('div', {}, h('dt', {}, 'URL'), h('dd', { class: 'mono small' }, n.url)),
          h('div', {}, h('dt', {}, 'Events'), h('dd', {}, n.events.join(', '))),
          h('div', {}, h('dt', {}, 'Signed'), h('dd', {}, n.has_secret ? 'yes (HMAC-SHA256)' : 'no')),
          h('div', {}, h('dt', {}, 'Deliveries'), h('dd', {}, `${c.delivered} delivered, ${c.pending} pending, ${c.failed} failed`)),
          h('div', {}, h('dt', {}, 'Created'), h('dd', {}, time(n.created_at)))),
        h('div', { class: 'btns' },
          h('button', { type: 'button', 'data-key': `log:${n.name}`, 'aria-expanded': String(!!log),
            onclick: async (ev) => {
              if (log) { logs.delete(n.name); render(); return; }
              const r = await ctx.act(ev.currentTarget, () => get(`/api/v1/notifications/${enc(n.name)}/deliveries`));
              if (r) { logs.set(n.name, r.deliveries); render(); }
            } }, log ? 'Hide delivery log' : 'Delivery log'),
          h('button', { type: 'button', 'data-key': `del:${n.name}`,
            onclick: async (ev) => {
              if (!window.confirm(`Delete notification ${n.name}? Its delivery log goes with it.`)) return;
              const r = await ctx.act(ev.currentTarget, () => del(`/api/v1/notifications/${enc(n.name)}`).then(() => true),
                `Notification ${n.name} deleted`);
              if (r) { logs.delete(n.name); load().catch(ctx.error); }
            } }, 'Delete')),
        log ? logTable(n, log) : null);
    }

    function render() {
      renderAlerts();
      replace(list, items.length ? items.map(card)
        : h('p', { class: 'muted' }, 'No notifications. Create one with POST /api/v1/notifications (see docs/api.md).'));
    }

    async function load() {
      try {
        items = (await get('/api/v1/notifications')).notifications;
      } catch (e) {
        if (e.status !== 403) throw e;
        replace(alerts, h('h2', { id: 'nt-alerts' }, 'Undelivered alerts'),
          h('p', { class: 'muted' }, 'Notifications need the admin role (webhook URLs are often secrets).'));
        replace(list);
        return;
      }
      pendingOrFailed = await undelivered(items);
      await Promise.all([...logs.keys()].map(async (name) => {
        if (!items.some((n) => n.name === name)) { logs.delete(name); return; }
        logs.set(name, (await get(`/api/v1/notifications/${enc(name)}/deliveries`).catch(() => ({ deliveries: logs.get(name) }))).deliveries);
      }));
      render();
    }
    await load();
    const reload = debounce(() => load().catch(ctx.error), 500);
    // deliveries are not events: follow the failures that cause them, and look again every 10 s
    const timer = setInterval(reload, 10000);
    return {
      onEvent(ev) { if (/COMPLETED|CORRUPTION|RECONNECTED/.test(ev.event)) reload(); },
      unmount() { clearInterval(timer); },
    };
  },
};
