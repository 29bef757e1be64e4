// Reports: every blkverify and verify report, newest first.

import { get, enc } from '../api.js';
import { h, replace, time, bytes, badge, statusTone } from '../util.js';
import { debounce, table } from './common.js';

export default {
  async mount(root, _params, ctx) {
    const list = h('section', { class: 'card', 'aria-labelledby': 'rep-list' });
    const filter = h('input', { type: 'checkbox', id: 'rep-only-corrupt', 'data-key': 'only-corrupt' });
    root.append(h('h1', {}, 'Reports'),
      h('p', {}, h('label', { class: 'inline', for: 'rep-only-corrupt' }, filter, ' Only corrupt reports')), list);
    let reps = [];
    function render() {
      const rows = filter.checked ? reps.filter((r) => r.status === 'corrupt') : reps;
      replace(list, h('h2', { id: 'rep-list', class: 'sr-only' }, 'Report list'),
        table('Reports, newest first', [
          { label: 'Report', cell: (r) => h('a', { href: `#/reports/${enc(r.id)}`, class: 'mono' }, r.id) },
          { label: 'Status', cell: (r) => badge(r.status, statusTone(r.status)) },
          { label: 'Kind', cell: (r) => r.kind },
          { label: 'Drive', cell: (r) => r.drive || '—' },
          { label: 'Compared', cell: (r) => h('span', { class: 'small' }, `${r.test} vs ${r.reference}`) },
          { label: 'First bad sector', cell: (r) => (r.first_mismatch_sector === null ? '—' : String(r.first_mismatch_sector)) },
          { label: 'Differing', cell: (r) => bytes(r.mismatched_bytes) },
          { label: 'Filed', cell: (r) => time(r.created_at, { rel: true }) },
        ], rows, { empty: 'No reports.', rowKey: (r) => r.id }));
    }
    filter.addEventListener('change', render);
    async function load() { reps = (await get('/api/v1/reports')).reports; render(); }
    await load();
    const reload = debounce(() => load().catch(ctx.error), 400);
    return { onEvent(ev) { if (/CORRUPTION|COMPLETED|RECONNECTED/.test(ev.event)) reload(); } };
  },
};
