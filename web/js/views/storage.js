// Storage: the storage directory's file system (total, used, free, as a meter) and the bytes
// each backup chain's link files take (GET /api/v1/storage).  Refreshed when a job ends (a
// backup, restore or prune changes the numbers) and every 30 s (other writers share the disk).

import { get, enc } from '../api.js';
import { h, replace, bytes } from '../util.js';
import { debounce, table } from './common.js';

// "12.3 GiB" with the exact count beside it: the page must agree with the API to the byte
function exact(n, key) {
  return h('span', { 'data-test': key, 'data-bytes': String(n) }, bytes(n),
    h('span', { class: 'exact small muted' }, ` (${Number(n).toLocaleString('en-US')} bytes)`));
}

const share = (part, whole) => (!whole ? '—' : part && part / whole < 0.001 ? 'under 0.1%' : `${((part / whole) * 100).toFixed(1)}%`);

export default {
  async mount(root, _params, ctx) {
    const fs = h('section', { class: 'card', 'aria-labelledby': 'st-fs' });
    const chains = h('section', { class: 'card', 'aria-labelledby': 'st-chains' });
    // one sentence for screen readers when the numbers change, not the whole card
    const said = h('p', { class: 'sr-only', 'aria-live': 'polite', 'data-test': 'storage-live' });
    root.append(h('h1', {}, 'Storage'), said, fs, chains);
    let last = '';

    function render(s, changed) {
      const pct = s.total ? (s.used / s.total) * 100 : 0;
      const chainSum = s.chains.reduce((a, c) => a + c.bytes, 0);
      const tone = s.total && s.free / s.total < 0.1 ? 'bad' : s.total && s.free / s.total < 0.2 ? 'warn' : 'ok';
      replace(fs, h('h2', { id: 'st-fs' }, 'Storage directory'),
        h('dl', { class: 'stats' },
          h('div', { class: 'big' }, h('dt', {}, 'Total'), h('dd', {}, exact(s.total, 'total'))),
          h('div', { class: 'big' }, h('dt', {}, 'Used'), h('dd', {}, exact(s.used, 'used'))),
          h('div', { class: 'big' }, h('dt', {}, 'Free'), h('dd', {}, exact(s.free, 'free')))),
        h('label', { for: 'st-meter', class: 'small' }, `Used: ${pct.toFixed(1)}% of the file system`),
        h('meter', { id: 'st-meter', class: `space ${tone}`, min: 0, max: s.total || 1, value: s.used,
          low: Math.round((s.total || 1) * 0.8), high: Math.round((s.total || 1) * 0.9), optimum: 0,
          'aria-valuetext': `${bytes(s.used)} of ${bytes(s.total)} used, ${bytes(s.free)} free` }),
        h('p', { class: `small ${tone === 'ok' ? 'muted' : `${tone}-text`}` },
          tone === 'ok' ? '' : tone === 'bad' ? 'Less than 10% free: backups that do not fit are refused (507). ' : 'Less than 20% free. ',
          `Backup chains take ${bytes(chainSum)}; free is what the service may still write.`));
      replace(chains, h('h2', { id: 'st-chains' }, 'Backup chains'),
        table('Bytes taken by each backup chain, oldest chain first', [
          { label: 'Drive', cell: (c) => h('a', { href: `#/drives/${enc(c.drive)}` }, c.drive) },
          { label: 'Chain', cell: (c) => h('span', { class: 'mono' }, c.chain) },
          { label: 'Bytes', cell: (c) => exact(c.bytes, `chain-${c.drive}-${c.chain}`) },
          { label: 'Share of used', cell: (c) => share(c.bytes, s.used) },
        ], s.chains, { empty: 'No backup chains yet.', rowKey: (c) => `${c.drive}/${c.chain}` }));
      if (changed) said.textContent = `Storage changed: ${bytes(s.free)} free of ${bytes(s.total)}.`;
    }

    async function load() {
      const s = await get('/api/v1/storage');
      const key = JSON.stringify(s);
      if (key === last) return;      // unchanged: nothing re-rendered, nothing announced
      render(s, last !== '');
      last = key;
    }
    await load();
    const reload = debounce(() => load().catch(ctx.error), 400);
    const tick = setInterval(reload, 30000);
    return {
      onEvent(ev) { if (/COMPLETED|CANCELLED|RECONNECTED/.test(ev.event)) reload(); },
      unmount() { clearInterval(tick); },
    };
  },
};
