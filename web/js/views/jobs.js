// Jobs: the live ones (refreshed on the event stream, progress polled while they run) with
// their verbs, and the history of ended ones.

import { get } from '../api.js';
import { h, replace, time, bytes, duration } from '../util.js';
import { debounce, table, progress, speedEta, jobStatus, jobVerbs } from './common.js';

const HISTORY_SHOWN = 50;

export default {
  async mount(root, _params, ctx) {
    const live = h('section', { class: 'card', 'aria-labelledby': 'jobs-live' });
    const hist = h('section', { class: 'card', 'aria-labelledby': 'jobs-hist' });
    root.append(h('h1', {}, 'Jobs'), live, hist);

    const what = (j) => {
      const detail = j.type === 'backup' ? `${j.sync} → ${j.target}`
        : j.type === 'verify' ? `${j.mode} ${j.backup ? `backup ${j.backup}` : j.drive ? `drive ${j.drive}` : ''}`
          : j.type === 'restore' ? `${j.backup} → ${j.drive ? `drive ${j.drive}` : j.target}`
            : j.type === 'prune' ? `backup ${j.backup}` : '';
      return h('span', {}, h('strong', {}, j.id), h('br'), h('span', { class: 'small' }, `${j.type} of ${j.device}`),
        detail ? h('div', { class: 'small muted wrap' }, detail) : null);
    };

    function renderLive(list) {
      const rows = list.filter((j) => j.status !== 'null');
      replace(live, h('h2', { id: 'jobs-live' }, 'Live jobs'),
        table('Live jobs', [
          { label: 'Job', cell: what },
          { label: 'Status', cell: jobStatus },
          { label: 'Progress', cell: progress, class: 'wide' },
          { label: 'Speed / ETA', cell: speedEta },
          { label: 'Started', cell: (j) => time(j.started_at, { rel: true }) },
          { label: 'Actions', cell: (j) => jobVerbs(j, ctx) },
        ], rows, { empty: 'No live jobs.', rowKey: (j) => j.id }));
    }

    async function loadHistory() {
      const r = await get('/api/v1/jobs?history=true');
      const rows = r.jobs.filter((j) => j.status === 'null').slice(0, HISTORY_SHOWN);
      replace(hist, h('h2', { id: 'jobs-hist' }, 'History'),
        table('Ended jobs, newest first', [
          { label: 'Job', cell: what },
          { label: 'Outcome', cell: (j) => jobStatus({ ...j, status: j.error ? 'failed' : 'complete' }) },
          { label: 'Moved', cell: (j) => `${bytes(j.offset)} of ${bytes(j.len)}` },
          { label: 'Took', cell: (j) => (j.started_at && j.finished_at ? duration((Date.parse(j.finished_at) - Date.parse(j.started_at)) / 1000) : '—') },
          { label: 'Finished', cell: (j) => time(j.finished_at) },
        ], rows, { empty: 'No ended jobs yet.' }));
    }

    const unsub = ctx.jobs.subscribe(renderLive);
    ctx.jobs.refresh();
    await loadHistory();
    const reload = debounce(() => loadHistory().catch(ctx.error), 400);
    return {
      onEvent(ev) { if (ev.event === 'JOB_STATUS_CHANGE' || ev.event === 'RECONNECTED') reload(); },
      unmount() { unsub(); },
    };
  },
};
