// Policies: schedule in words, next run, last outcome, run now, the retention preview (which
// backups the rules keep and why) and recent runs.

import { get, post, enc } from '../api.js';
import { h, replace, time, badge, statusTone, cronWords } from '../util.js';
import { debounce, table } from './common.js';

const RULES = ['keep_last', 'keep_hourly', 'keep_daily', 'keep_weekly', 'keep_monthly', 'keep_yearly'];

export default {
  async mount(root, _params, ctx) {
    const list = h('div', { class: 'policy-list' });
    root.append(h('h1', {}, 'Policies'), list);
    const extra = new Map();   // policy name -> { retention, runs } shown under its card
    let policies = [];

    function retentionTable(p, r) {
      return h('section', { class: 'sub', 'aria-label': `Retention preview of ${p.name}` },
        h('h3', {}, 'Retention preview'),
        h('p', { class: 'small muted' }, 'What the rules keep now, without pruning anything.'),
        table(`Retention preview of ${p.name}`, [
          { label: 'Backup', cell: (b) => h('a', { href: `#/drives/${enc(b.drive)}`, class: 'mono' }, b.id) },
          { label: 'Drive', cell: (b) => b.drive },
          { label: 'Taken', cell: (b) => time(b.created_at) },
          { label: 'Kept', cell: (b) => (b.keep ? badge('kept', 'ok') : badge('would be pruned', 'warn')) },
          { label: 'By rule', cell: (b) => (b.rules.length ? b.rules.join(', ') : '—') },
        ], r.backups, { empty: 'This policy has no complete backups yet.' }));
    }

    function runsTable(p, runs) {
      return h('section', { class: 'sub', 'aria-label': `Runs of ${p.name}` },
        h('h3', {}, 'Recent runs'),
        table(`Runs of ${p.name}`, [
          { label: 'Run', cell: (r) => `${r.id} (${r.kind})` },
          { label: 'Started', cell: (r) => time(r.started_at) },
          { label: 'Outcome', cell: (r) => h('span', {}, badge(r.outcome || 'running', statusTone(r.outcome || 'running')),
            r.reason ? h('div', { class: 'small' }, r.reason) : null,
            r.errors.length ? h('div', { class: 'error-text small' }, r.errors.join('; ')) : null) },
          { label: 'Made', cell: (r) => r.backups_made.join(', ') || '—' },
          { label: 'Pruned', cell: (r) => r.backups_pruned.join(', ') || '—' },
        ], runs.slice(0, 10), { empty: 'Not run yet.' }));
    }

    function card(p) {
      const ex = extra.get(p.name) || {};
      const rules = RULES.filter((k) => p.retention[k]).map((k) => `${k.replace('keep_', '')} ${p.retention[k]}`);
      const toggle = (what, label, url) => h('button', { type: 'button', 'data-key': `${what}:${p.name}`,
        'aria-expanded': String(!!ex[what]),
        onclick: async (ev) => {
          if (ex[what]) { delete ex[what]; extra.set(p.name, ex); render(); return; }
          const r = await ctx.act(ev.currentTarget, () => get(url));
          if (r) { ex[what] = r; extra.set(p.name, ex); render(); }
        } }, ex[what] ? `Hide ${label.toLowerCase()}` : label);
      return h('article', { class: 'card policy', 'aria-labelledby': `pol-${p.name}` },
        h('header', { class: 'row spread' }, h('h2', { id: `pol-${p.name}` }, p.name),
          p.enabled ? badge('enabled', 'ok') : badge('disabled', 'neutral')),
        h('dl', { class: 'stats' },
          h('div', {}, h('dt', {}, 'Schedule'), h('dd', {}, cronWords(p.schedule), h('br'), h('code', { class: 'small cron' }, p.schedule))),
          h('div', {}, h('dt', {}, 'Next run'), h('dd', {}, p.next_run ? h('span', {}, time(p.next_run, { rel: true }), h('br'), h('span', { class: 'small' }, time(p.next_run))) : 'not scheduled')),
          h('div', {}, h('dt', {}, 'Last outcome'), h('dd', {}, p.last_run
            ? h('span', {}, badge(p.last_run.outcome || 'running', statusTone(p.last_run.outcome || 'running')), ' ', time(p.last_run.finished_at || p.last_run.started_at, { rel: true }))
            : h('span', { class: 'muted' }, 'never run'))),
          h('div', {}, h('dt', {}, 'Drives'), h('dd', {}, p.drives.map((d, i) => [i ? ', ' : '', h('a', { href: `#/drives/${enc(d)}` }, d)]))),
          h('div', {}, h('dt', {}, 'Chain'), h('dd', {}, p.full_every ? `a new full every ${p.full_every} backups` : 'one chain')),
          h('div', {}, h('dt', {}, 'Retention'), h('dd', {}, rules.join(', ') || '—')),
          h('div', {}, h('dt', {}, 'Verify'), h('dd', {}, p.verify === 'none' ? 'never' : p.verify === 'after' ? 'after each backup' : cronWords(p.verify)))),
        h('div', { class: 'btns' },
          h('button', { type: 'button', class: 'primary', 'data-key': `run:${p.name}`,
            onclick: (ev) => ctx.act(ev.currentTarget, () => post(`/api/v1/policies/${enc(p.name)}/run`), `Policy ${p.name} queued to run now`) }, 'Run now'),
          toggle('retention', 'Retention preview', `/api/v1/policies/${enc(p.name)}/retention`),
          toggle('runs', 'Recent runs', `/api/v1/policies/${enc(p.name)}/runs`)),
        ex.retention ? retentionTable(p, ex.retention) : null,
        ex.runs ? runsTable(p, ex.runs.runs) : null);
    }

    function render() {
      replace(list, policies.length ? policies.map(card)
        : h('p', { class: 'muted' }, 'No policies. Create one with POST /api/v1/policies (see docs/api.md).'));
    }

    async function load() {
      policies = (await get('/api/v1/policies')).policies;
      // keep open previews current
      await Promise.all([...extra.entries()].map(async ([name, ex]) => {
        if (!policies.some((p) => p.name === name)) { extra.delete(name); return; }
        if (ex.retention) ex.retention = await get(`/api/v1/policies/${enc(name)}/retention`).catch(() => ex.retention);
        if (ex.runs) ex.runs = await get(`/api/v1/policies/${enc(name)}/runs`).catch(() => ex.runs);
      }));
      render();
    }
    await load();
    const reload = debounce(() => load().catch(ctx.error), 400);
    const tick = setInterval(render, 30000);   // relative times
    return {
      onEvent(ev) { if (/POLICY_RUN|COMPLETED|RECONNECTED/.test(ev.event)) reload(); },
      unmount() { clearInterval(tick); },
    };
  },
};
