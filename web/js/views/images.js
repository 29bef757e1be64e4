// Images: every image file in the storage directory (GET /api/v1/images: drives' files, chain
// links, hand-made targets) with format, virtual size and allocated bytes; each links to its
// detail.  Refreshed when a job ends (backups, restores and prunes add and remove files).

import { get } from '../api.js';
import { h, replace, bytes, badge } from '../util.js';
import { debounce, table } from './common.js';

export const imageHref = (file) => `#/images/${encodeURIComponent(file)}`;

export default {
  async mount(root, _params, ctx) {
    const list = h('section', { class: 'card', 'aria-labelledby': 'im-list' });
    root.append(h('h1', {}, 'Images'),
      h('p', { class: 'muted' }, 'Image files in the storage directory, by path.'), list);

    function render(images) {
      const rows = images.slice().sort((a, b) => a.file.localeCompare(b.file));
      const alloc = rows.reduce((a, i) => a + i.actual_size, 0);
      replace(list, h('h2', { id: 'im-list' }, `${rows.length} image${rows.length === 1 ? '' : 's'}, ${bytes(alloc)} allocated`),
        table('Image files', [
          { label: 'File', class: 'wide', cell: (i) => h('a', { href: imageHref(i.file), class: 'mono' }, i.file) },
          { label: 'Format', cell: (i) => badge(i.format) },
          { label: 'Virtual size', cell: (i) => bytes(i.virtual_size) },
          { label: 'Allocated', cell: (i) => bytes(i.actual_size) },
          { label: 'Backing file', cell: (i) => (i.backing ? h('span', { class: 'mono small' }, i.backing) : h('span', { class: 'muted' }, 'none')) },
          { label: 'State', cell: (i) => [i.dirty ? badge('dirty', 'warn') : badge('clean', 'ok'),
            i.snapshots ? [' ', badge(`${i.snapshots.length} snapshot${i.snapshots.length === 1 ? '' : 's'}`, 'info')] : null] },
        ], rows, { empty: 'No image files.', rowKey: (i) => i.file }));
    }

    async function load() { render((await get('/api/v1/images')).images); }
    await load();
    const reload = debounce(() => load().catch(ctx.error), 500);
    return { onEvent(ev) { if (/COMPLETED|CANCELLED|RECONNECTED/.test(ev.event)) reload(); } };
  },
};
