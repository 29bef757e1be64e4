// Pieces several views share: responsive tables, job progress and verbs, drive protection.

import { post, enc } from '../api.js';
import { h, bytes, rate, duration, eta, percent, badge, statusTone, ageSeconds, cronPeriod, cronWords, relative, LIVE_DONE } from '../util.js';

export function debounce(fn, ms = 250) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

// A table that becomes labelled blocks on narrow screens (each cell carries its column name).
export function table(caption, columns, rows, { empty = 'Nothing yet.', rowKey } = {}) {
  if (!rows.length) return h('p', { class: 'muted empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'rtable' },
      caption ? h('caption', { class: 'sr-only' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', { 'data-row': rowKey ? rowKey(r) : null },
        columns.map((c) => h('td', { 'data-label': c.label, class: c.class }, c.cell(r))))))));
}

export function progress(job) {
  const p = percent(job);
  const done = LIVE_DONE.has(job.status);
  return h('div', { class: 'progress-cell' },
    h('progress', { max: 100, value: done && !job.error ? 100 : p,
      'aria-label': `${job.id} progress`, 'aria-valuetext': `${p} percent, ${bytes(job.offset)} of ${bytes(job.len)}` }),
    h('span', { class: 'small' }, `${p}% · ${bytes(job.offset)} of ${bytes(job.len)}`));
}

export function speedEta(job) {
  if (job.status !== 'running') return h('span', { class: 'muted' }, '—');
  const e = eta(job);
  return h('span', {}, rate(job.rate), h('br'), h('span', { class: 'small' }, e === null ? 'ETA —' : `ETA ${duration(e)}`));
}

export function jobStatus(job) {
  const s = job.paused && job.status !== 'paused' ? 'paused' : job.status;
  return h('span', {}, badge(s === 'null' ? 'ended' : s, job.error ? 'bad' : statusTone(s)),
    job.error ? h('div', { class: 'error-text small' }, job.error) : null);
}

export function jobVerbs(job, ctx) {
  const verb = (v, label) => h('button', { type: 'button', class: 'small-btn', 'data-key': `${v}:${job.id}`,
    'aria-label': `${label} job ${job.id}`,
    onclick: (ev) => ctx.act(ev.currentTarget, () => post(`/api/v1/jobs/${enc(job.id)}/${v}`),
      `Job ${job.id}: ${v} requested`).then(() => ctx.jobs.refresh()) }, label);
  const out = [];
  const live = ['created', 'running', 'paused', 'ready', 'standby', 'waiting'].includes(job.status);
  if (job.status === 'running' && !job.paused && job.type !== 'verify' && job.type !== 'prune') out.push(verb('pause', 'Pause'));
  if (job.status === 'paused' || job.paused) out.push(verb('resume', 'Resume'));
  if (live) out.push(verb('cancel', 'Cancel'));
  if (job.status === 'pending') out.push(verb('finalize', 'Finalize'));
  if (job.status === 'concluded') out.push(verb('dismiss', 'Dismiss'));
  return out.length ? h('div', { class: 'btns' }, out) : h('span', { class: 'muted' }, '—');
}

// The newest backup a drive can be restored from without damage, and how it stands against the
// schedules of the policies covering the drive.
export function protection(drive, chains, policies) {
  const good = [];
  for (const c of chains || []) for (const b of c.backups) if (b.status === 'complete' && !b.damaged) good.push(b);
  good.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
  const newest = good[0] || null;
  const pols = (policies || []).filter((p) => p.drives.includes(drive.id) && p.enabled);
  const periods = pols.map((p) => cronPeriod(p.schedule)).filter((x) => x);
  const period = periods.length ? Math.min(...periods) : null;
  const age = newest ? ageSeconds(newest.completed_at || newest.created_at) : null;
  let tone, label;
  if (!newest) { tone = 'bad'; label = 'Not protected'; }
  else if (period === null) { tone = 'neutral'; label = 'No schedule'; }
  else if (age <= period * 1.5 + 600) { tone = 'ok'; label = 'Protected'; }
  else if (age <= period * 3 + 600) { tone = 'warn'; label = 'Overdue'; }
  else { tone = 'bad'; label = 'At risk'; }
  const detail = newest
    ? `newest good backup ${newest.id}, ${relative(newest.completed_at || newest.created_at)}`
    : 'no good backup';
  const sched = pols.length ? `policy ${pols.map((p) => `${p.name} (${cronWords(p.schedule).toLowerCase()})`).join(', ')}` : 'no policy';
  return { tone, label, detail, sched, newest, age, period };
}

export const ICON = { ok: '✓', warn: '!', bad: '✕', neutral: '–', info: '…' };

export function loadingError(root, e) {
  root.append(h('p', { class: 'error-text', role: 'alert' }, e.desc || e.message));
}
