// One image file (GET /api/v1/images/{file}): its info as qemu-img info shows it, internal
// snapshots, and a metadata check (POST /api/v1/images/check) for qcow2 files.

import { get, post, enc } from '../api.js';
import { h, replace, bytes, badge, time } from '../util.js';
import { table } from './common.js';
import { imageHref } from './images.js';

// a path beneath the storage directory, each segment encoded (the route takes the slashes)
const apiPath = (file) => `/api/v1/images/${file.split('/').map(enc).join('/')}`;

// a backing file name is relative to the image's folder (as qemu-img reads it); absolute: no link
function backingLink(file, backing) {
  if (backing.startsWith('/')) return h('span', { class: 'mono' }, backing);
  const dir = file.includes('/') ? file.slice(0, file.lastIndexOf('/') + 1) : '';
  return h('a', { href: imageHref(dir + backing), class: 'mono' }, backing);
}

export default {
  async mount(root, [file], ctx) {
    const i = await get(apiPath(file));
    const result = h('div', { 'aria-live': 'polite' });
    const kv = (label, value, test) => h('div', {}, h('dt', {}, label), h('dd', { 'data-test': test }, value));
    root.append(...[
      h('p', { class: 'crumbs' }, h('a', { href: '#/images' }, 'Images'), ' › ', i.file),
      h('h1', {}, `Image ${i.file}`),
      h('section', { class: 'card', 'aria-labelledby': 'img-info' },
        h('h2', { id: 'img-info' }, 'Info'),
        h('dl', { class: 'stats' },
          kv('Format', badge(i.format), 'format'),
          kv('Virtual size', `${bytes(i.virtual_size)} (${i.virtual_size} bytes)`, 'virtual-size'),
          kv('Allocated', `${bytes(i.actual_size)} (${i.actual_size} bytes)`, 'allocated'),
          kv('Cluster size', i.cluster_size ? bytes(i.cluster_size) : '—', 'cluster-size'),
          kv('Backing file', i.backing ? backingLink(i.file, i.backing) : 'none', 'backing'),
          kv('Backing format', i.backing_format || '—', 'backing-format'),
          kv('Dirty', i.dirty ? badge('dirty: not closed cleanly', 'warn') : badge('clean', 'ok'), 'dirty'))),
      i.snapshots ? h('section', { class: 'card', 'aria-labelledby': 'img-snap' },
        h('h2', { id: 'img-snap' }, 'Internal snapshots'),
        table('Internal snapshots, in the image\'s order', [
          { label: 'Id', cell: (s) => s.id },
          { label: 'Name', cell: (s) => s.name },
          { label: 'VM state', cell: (s) => bytes(s.vm_state_size) },
          { label: 'Taken', cell: (s) => time(s.date) },
        ], i.snapshots)) : null,
      i.format === 'qcow2' ? h('section', { class: 'card', 'aria-labelledby': 'img-check' },
        h('h2', { id: 'img-check' }, 'Metadata check'),
        h('p', { class: 'small muted' }, 'Checks the qcow2 metadata as qemu-img check does; nothing is changed.'),
        h('button', { type: 'button', onclick: async (ev) => {
          const r = await ctx.act(ev.currentTarget, () => post('/api/v1/images/check', { file: i.file }),
            (c) => `Check of ${i.file}: ${c.errors} errors, ${c.leaks} leaks`);
          if (!r) return;
          replace(result, h('p', {}, r.errors || r.corruptions.length ? badge('errors found', 'bad') : badge('no errors', 'ok'),
            ` ${r.errors} error${r.errors === 1 ? '' : 's'}, ${r.leaks} leaked cluster${r.leaks === 1 ? '' : 's'}`),
          r.corruptions.length ? h('ul', { class: 'mono small' }, r.corruptions.map((c) => h('li', {}, c))) : null);
        } }, 'Check metadata'), result) : null].filter(Boolean));
    return {};
  },
};
