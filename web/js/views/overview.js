// Overview: is every drive protected, what runs, where anything is corrupt, what happened.

import { get, enc } from '../api.js';
import { h, replace, time, badge, statusTone, duration } from '../util.js';
import { debounce, progress, speedEta, jobStatus, protection, ICON } from './common.js';
import { undelivered } from './notifications.js';

const MAX_EVENTS = 12;
// the steps every job goes through are left out: the list says what happened
const QUIET = new Set(['waiting', 'pending', 'concluded', 'null']);
const worth = (ev) => !(ev.event === 'JOB_STATUS_CHANGE' && QUIET.has(ev.data && ev.data.status));

function eventText(ev) {
  const d = ev.data || {};
  switch (ev.event) {
    case 'JOB_STATUS_CHANGE': return `job ${d.id} is ${d.status === 'null' ? 'gone (ended)' : d.status}`;
    case 'BLOCK_JOB_COMPLETED': return `job ${d.device} (${d.type}) completed${d.error ? `: ${d.error}` : ''}`;
    case 'BLOCK_JOB_CANCELLED': return `job ${d.device} (${d.type}) cancelled`;
    case 'BLOCK_JOB_ERROR': return `job ${d.device}: ${d.operation} error, ${d.action}`;
    case 'BLOCK_JOB_PENDING': return `job ${d.id} pending`;
    case 'CORRUPTION_DETECTED': return `corruption on ${d.drive} at byte ${d.first_mismatch_offset} (report ${d.report_id})`;
    case 'POLICY_RUN': return `policy ${d.policy}: ${d.status}`;
    default: return Object.entries(d).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
  }
}

function eventTone(ev) {
  const d = ev.data || {};
  if (ev.event === 'CORRUPTION_DETECTED' || ev.event === 'BLOCK_JOB_ERROR' || d.error) return 'bad';
  if (ev.event === 'POLICY_RUN') return statusTone(d.status);
  return '';
}

export default {
  async mount(root, _params, ctx) {
    const health = h('section', { class: 'card', 'aria-busy': 'true', 'aria-labelledby': 'ov-health' });
    const prot = h('section', { class: 'card', 'aria-busy': 'true', 'aria-labelledby': 'ov-prot' });
    const running = h('section', { class: 'card', 'aria-busy': 'true', 'aria-labelledby': 'ov-jobs' });
    const alerts = h('section', { class: 'card', 'aria-busy': 'true', 'aria-labelledby': 'ov-alerts' });
    const events = h('section', { class: 'card', 'aria-busy': 'true', 'aria-labelledby': 'ov-events' });
    const titles = [[health, 'ov-health', 'Service'], [prot, 'ov-prot', 'Protection'], [running, 'ov-jobs', 'Running jobs'],
      [alerts, 'ov-alerts', 'Corruption alerts'], [events, 'ov-events', 'Recent events']];
    for (const [sec, id, t] of titles) sec.append(h('h2', { id }, t), h('p', { class: 'muted' }, 'Loading…'));
    root.append(h('h1', {}, 'Overview'),
      h('div', { class: 'grid' }, health, alerts, prot, running, events));
    let evList = [];

    async function load() {
      const [hl, dr, pol, rep, head] = await Promise.all([
        get('/api/v1/health'), get('/api/v1/drives'), get('/api/v1/policies'),
        get('/api/v1/reports'), get('/api/v1/events?after=latest')]);
      const chains = await Promise.all(dr.drives.map((d) =>
        get(`/api/v1/drives/${enc(d.id)}/backups`).then((r) => r.chains).catch(() => [])));
      const after = Math.max(0, head.next - 80);
      const ev = await get(`/api/v1/events?after=${after}&limit=80`);
      evList = ev.events.filter(worth).reverse().slice(0, MAX_EVENTS);
      renderHealth(hl, dr.drives, rep.reports);
      renderProt(dr.drives, chains, pol.policies);
      renderAlerts(rep.reports, chains);
      // undelivered webhook alerts (admin only: a 403 shows nothing)
      get('/api/v1/notifications').then((r) => undelivered(r.notifications)).then((u) => {
        if (u.length) alerts.append(h('p', { class: 'error-text', 'data-test': 'undelivered' },
          `${u.length} notification${u.length === 1 ? '' : 's'} not delivered (${u[0].event}, ${u[0].state}). `,
          h('a', { href: '#/notifications' }, 'See notifications')));
      }).catch(() => {});
      renderEvents();
    }

    function renderHealth(hl, drives, reps) {
      const corrupt = reps.filter((r) => r.status === 'corrupt').length;
      replace(health, h('h2', { id: 'ov-health' }, 'Service'),
        h('dl', { class: 'stats' },
          h('div', {}, h('dt', {}, 'Health'), h('dd', {}, badge(hl.status, hl.status === 'ok' ? 'ok' : 'bad', { 'data-test': 'health' }))),
          h('div', {}, h('dt', {}, 'Version'), h('dd', {}, hl.version)),
          h('div', {}, h('dt', {}, 'Up for'), h('dd', {}, duration(hl.uptime_s))),
          h('div', {}, h('dt', {}, 'Drives'), h('dd', {}, String(drives.length))),
          h('div', {}, h('dt', {}, 'Corruption reports'), h('dd', {}, String(corrupt)))));
    }

    function renderProt(drives, chains, policies) {
      const items = drives.map((d, i) => {
        const p = protection(d, chains[i], policies);
        return h('li', { class: `prot ${p.tone}` },
          h('span', { class: 'prot-icon', 'aria-hidden': 'true' }, ICON[p.tone]),
          h('div', {},
            h('a', { href: `#/drives/${enc(d.id)}` }, d.id), ' ',
            h('strong', {}, p.label),
            h('div', { class: 'small' }, p.detail, p.sched ? ` · ${p.sched}` : '')));
      });
      replace(prot, h('h2', { id: 'ov-prot' }, 'Protection'),
        items.length ? h('ul', { class: 'plain' }, items)
          : h('p', { class: 'muted' }, 'No drives yet. ', h('a', { href: '#/drives' }, 'Create one')));
    }

    function renderAlerts(reps, chains) {
      const corrupt = reps.filter((r) => r.status === 'corrupt').slice(0, 6);
      const damaged = [];
      for (const cs of chains) for (const c of cs) for (const b of c.backups) if (b.damaged) damaged.push(b);
      replace(alerts, h('h2', { id: 'ov-alerts' }, 'Corruption alerts'),
        corrupt.length ? h('ul', { class: 'plain alerts' }, corrupt.map((r) => h('li', { class: 'alert-item' },
          badge('corrupt', 'bad'), ' ',
          h('a', { href: `#/reports/${enc(r.id)}` }, `${r.kind} report on ${r.drive || '?'}`),
          h('div', { class: 'small' }, `first bad sector ${r.first_mismatch_sector}, ${r.mismatched_bytes} bytes differ · `, time(r.created_at, { rel: true })))))
          : h('p', { class: 'ok-text' }, `${ICON.ok} No corruption found.`),
        damaged.length ? h('p', { class: 'small' }, `Damaged restore points: ${damaged.map((b) => `${b.id} (${b.drive})`).join(', ')}`) : null);
    }

    function renderEvents() {
      replace(events, h('h2', { id: 'ov-events' }, 'Recent events'),
        evList.length ? h('ol', { class: 'plain events', reversed: true }, evList.map((e) => h('li', { class: eventTone(e) },
          h('span', { class: 'ev-text' }, h('span', { class: 'ev-name' }, e.event), ' ', eventText(e)),
          h('span', { class: 'small muted ev-time' }, time(e.timestamp, { rel: true })))))
          : h('p', { class: 'muted' }, 'No events yet.'));
    }

    function renderJobs(list) {
      const live = list.filter((j) => j.status !== 'null');
      replace(running, h('h2', { id: 'ov-jobs' }, 'Running jobs'),
        live.length ? h('ul', { class: 'plain jobs-mini' }, live.map((j) => h('li', {},
          h('div', { class: 'row' }, h('strong', {}, j.id), ` ${j.type} of ${j.device} `, jobStatus(j)),
          progress(j), speedEta(j))))
          : h('p', { class: 'muted' }, 'Nothing is running.'),
        h('p', { class: 'small' }, h('a', { href: '#/jobs' }, 'All jobs and history')));
    }

    const reload = debounce(() => load().catch(ctx.error), 300);
    const unsub = ctx.jobs.subscribe(renderJobs);
    ctx.jobs.refresh();
    await load();
    // what has no event (a drive made by another client, ages) is refreshed now and then
    const tick = setInterval(reload, 15000);
    return {
      onEvent(ev) {
        if (ev.seq && worth(ev)) { evList.unshift(ev); evList = evList.slice(0, MAX_EVENTS); renderEvents(); }
        if (/COMPLETED|CANCELLED|CORRUPTION|POLICY_RUN|RECONNECTED/.test(ev.event)) reload();
      },
      unmount() { unsub(); clearInterval(tick); },
    };
  },
};
