// NBD exports: what the NBD server serves (GET /api/v1/exports: each drive read-write, each
// complete backup point read-only under backup/<bid>), the clients attached to each and the URI
// to give qemu-img, qemu-io or nbdcopy.  Clients come and go without an event, so the list is
// polled every 5 s; it is redrawn (and the summary announced) only when something changed.

import { get, enc } from '../api.js';
import { h, replace, badge } from '../util.js';
import { debounce, table } from './common.js';

export default {
  async mount(root, _params, ctx) {
    const summary = h('p', { 'aria-live': 'polite', 'data-test': 'exports-summary' });
    const list = h('section', { class: 'card', 'aria-labelledby': 'ex-list' });
    root.append(h('h1', {}, 'NBD exports'),
      h('p', { class: 'muted' }, 'Drives are exported read-write under their id; complete backup points read-only under backup/<id>. ',
        'Connect with, for example, ', h('code', {}, 'qemu-img info --image-opts driver=nbd,…'), ' or ', h('code', {}, 'nbdinfo URI'), '.'),
      summary, list);
    let last = '';

    function render(exports) {
      const clients = exports.reduce((a, e) => a + e.clients, 0);
      summary.textContent = `${exports.length} export${exports.length === 1 ? '' : 's'}, ${clients} client${clients === 1 ? '' : 's'} attached.`;
      replace(list, h('h2', { id: 'ex-list' }, 'Exports'),
        table('NBD exports, drives first', [
          { label: 'Export', cell: (e) => h('span', { class: 'mono' }, e.name) },
          { label: 'Of', cell: (e) => (e.drive !== undefined
            ? h('span', {}, 'drive ', h('a', { href: `#/drives/${enc(e.drive)}` }, e.drive))
            : `backup ${e.backup}`) },
          { label: 'Access', cell: (e) => (e.read_only ? badge('read-only', 'neutral') : badge('read-write', 'info')) },
          { label: 'Clients', cell: (e) => h('span', { 'data-test': 'clients' }, String(e.clients)) },
          { label: 'URI', class: 'wide', cell: (e) => (e.uri ? h('code', { class: 'wrap small' }, e.uri) : h('span', { class: 'muted' }, 'not served')) },
        ], exports, { empty: 'Nothing is exported: create a drive first.', rowKey: (e) => e.name }));
    }

    async function load() {
      const r = await get('/api/v1/exports');
      const key = JSON.stringify(r.exports);
      if (key === last) return;
      last = key;
      render(r.exports);
    }
    await load();
    const reload = debounce(() => load().catch(ctx.error), 300);
    const tick = setInterval(reload, 5000);
    return {
      onEvent(ev) { if (/COMPLETED|RECONNECTED/.test(ev.event)) reload(); },
      unmount() { clearInterval(tick); },
    };
  },
};
