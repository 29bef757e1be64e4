// One report: first bad sector and offset, a map of the corrupt extents over the drive's
// length, the restore points affected, test and reference bytes side by side in hex.

import { get, enc } from '../api.js';
import { h, svg, time, bytes, badge, statusTone, hexBytes } from '../util.js';

const W = 1000;

function extentMap(extents, total, length) {
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const desc = `${total} corrupt extent${total === 1 ? '' : 's'} over ${bytes(length)}` +
    (extents.length ? `; the first at byte ${extents[0].offset}` : '');
  const map = svg('svg', { viewBox: `0 0 ${W} 46`, class: 'extent-map', role: 'img', 'aria-label': desc, preserveAspectRatio: 'none' },
    svg('rect', { x: 0, y: 4, width: W, height: 26, class: 'map-bg' }));
  for (const e of extents) {
    const x = (e.offset / length) * W;
    const w = Math.max(12, (e.length / length) * W);   // a sector must still be seen
    const r = svg('rect', { x: Math.min(x, W - w), y: 4, width: w, height: 26, class: 'map-bad' });
    r.append(svg('title', {}, document.createTextNode(`bytes ${e.offset} – ${e.offset + e.length - 1} (${bytes(e.length)})`)));
    map.append(r);
  }
  return h('figure', { class: 'map-fig' }, map,
    h('div', { class: 'map-axis', 'aria-hidden': 'true' }, ticks.map((t) => h('span', {}, bytes(Math.round(length * t))))),
    h('figcaption', { class: 'small' }, desc));
}

function hexSide(label, bytesA, bytesB, offset, cls) {
  if (!bytesA.length) {
    return h('div', { class: `hex-side ${cls}` }, h('h4', {}, label),
      h('p', { class: 'muted small' }, 'No bytes: a checksum verify compares each 64 KiB block with its recorded CRC32, not with a copy.'));
  }
  const cells = bytesA.map((b, i) => {
    const diff = bytesB.length && bytesB[i] !== b;
    return diff ? h('mark', { title: `byte ${offset + i} differs` }, b) : h('span', {}, b);
  });
  return h('div', { class: `hex-side ${cls}` }, h('h4', {}, label),
    h('div', { class: 'hex mono' }, h('span', { class: 'hex-addr' }, offset.toString(16).padStart(8, '0')), ' ', cells));
}

function sample(s, r, first) {
  const a = hexBytes(s.test_hex);
  const b = hexBytes(s.reference_hex);
  const differing = b.length ? a.map((x, i) => (x !== b[i] ? i : -1)).filter((i) => i >= 0) : [];
  return h('section', { class: `sample${first ? ' first' : ''}`, 'aria-label': `Bytes at offset ${s.offset}` },
    h('h3', {}, first ? `At the first mismatch, byte ${s.offset}` : `At byte ${s.offset}`,
      h('span', { class: 'small muted' }, ` (sector ${Math.floor(s.offset / 512)}, 0x${s.offset.toString(16)})`)),
    h('div', { class: 'hex-pair' },
      hexSide(`Test: ${r.test}`, a, b, s.offset, 'test'),
      hexSide(`Reference: ${r.reference}`, b, a, s.offset, 'ref')),
    differing.length ? h('p', { class: 'small' }, `${differing.length} of ${a.length} bytes differ (marked), first at +${differing[0]}.`) : null);
}

export default {
  async mount(root, [rid], ctx) {
    const r = await get(`/api/v1/reports/${enc(rid)}`);
    let length = null;
    if (r.drive) {
      try { length = (await get(`/api/v1/drives/${enc(r.drive)}`)).size; } catch { /* drive gone */ }
    }
    if (!length) length = Math.max(1, ...r.extents.map((e) => e.offset + e.length));
    const firstS = r.samples.find((s) => s.offset === r.first_mismatch_offset) || r.samples[0];
    root.append(
      h('p', { class: 'crumbs' }, h('a', { href: '#/reports' }, 'Reports'), ' › ', r.id),
      h('h1', {}, `Report ${r.id}`),
      h('section', { class: 'card', 'aria-labelledby': 'rp-sum' },
        h('h2', { id: 'rp-sum' }, 'Summary ', badge(r.status, statusTone(r.status))),
        h('dl', { class: 'stats' },
          h('div', { class: 'big' }, h('dt', {}, 'First bad sector'),
            h('dd', { 'data-test': 'first-sector' }, r.first_mismatch_sector === null ? 'none' : String(r.first_mismatch_sector))),
          h('div', { class: 'big' }, h('dt', {}, 'First bad byte offset'),
            h('dd', { 'data-test': 'first-offset' }, r.first_mismatch_offset === null ? 'none'
              : `${r.first_mismatch_offset} (0x${r.first_mismatch_offset.toString(16)})`)),
          h('div', {}, h('dt', {}, 'Differing'), h('dd', {}, `${bytes(r.mismatched_bytes)} in ${r.extents_total} extent${r.extents_total === 1 ? '' : 's'}`)),
          h('div', {}, h('dt', {}, 'Kind'), h('dd', {}, r.kind)),
          h('div', {}, h('dt', {}, 'Drive'), h('dd', {}, r.drive ? h('a', { href: `#/drives/${enc(r.drive)}` }, r.drive) : '—')),
          h('div', {}, h('dt', {}, 'Test'), h('dd', {}, r.test)),
          h('div', {}, h('dt', {}, 'Reference'), h('dd', {}, r.reference)),
          h('div', {}, h('dt', {}, 'Job'), h('dd', {}, r.job_id || '—')),
          h('div', {}, h('dt', {}, 'Filed'), h('dd', {}, time(r.created_at))))),
      r.extents_total ? h('section', { class: 'card', 'aria-labelledby': 'rp-map' },
        h('h2', { id: 'rp-map' }, 'Corrupt extents'),
        extentMap(r.extents, r.extents_total, length),
        h('details', {}, h('summary', {}, `List of ${r.extents.length === r.extents_total ? 'all' : `the first ${r.extents.length} of ${r.extents_total}`} extents`),
          h('ul', { class: 'mono small' }, r.extents.map((e) => h('li', {}, `offset ${e.offset} (sector ${Math.floor(e.offset / 512)}), ${bytes(e.length)}`))))) : null,
      h('section', { class: 'card', 'aria-labelledby': 'rp-aff' },
        h('h2', { id: 'rp-aff' }, 'Restore points affected'),
        r.affected_backups.length ? h('ul', { class: 'plain inline-list' }, r.affected_backups.map((b) =>
          h('li', {}, h('a', { href: r.drive ? `#/drives/${enc(r.drive)}` : '#/drives', class: 'badge bad' }, b))))
          : h('p', { class: 'muted' }, r.kind === 'blkverify' || r.status === 'clean' ? 'None: no backup is involved.' : 'None.')),
      r.samples.length ? h('section', { class: 'card', 'aria-labelledby': 'rp-hex' },
        h('h2', { id: 'rp-hex' }, 'Bytes: test versus reference'),
        [firstS, ...r.samples.filter((s) => s !== firstS)].map((s, i) => sample(s, r, i === 0))) : null);
    void ctx;
    return {};
  },
};
