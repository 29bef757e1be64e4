// Drives: size, allocation, bitmaps with their dirty bytes; create a drive; back up; verify.
// VM drives (format "qemu": a disk a running QEMU owns) show their VM's status, socket and node.

import { get, post, enc } from '../api.js';
import { h, replace, bytes, badge, statusTone } from '../util.js';
import { debounce, progress, jobStatus } from './common.js';

const VM_TONE = { running: 'ok', paused: 'warn', gone: 'bad' };

export default {
  async mount(root, _params, ctx) {
    const list = h('div', { class: 'drive-list', 'aria-live': 'off' });
    const form = h('form', { class: 'card form-grid', 'aria-labelledby': 'dr-new' },
      h('h2', { id: 'dr-new' }, 'New drive'),
      h('div', { class: 'field' }, h('label', { for: 'dr-id' }, 'Drive id'),
        h('input', { id: 'dr-id', name: 'id', required: true, pattern: '[A-Za-z][A-Za-z0-9._\\-]*', maxlength: 128,
          autocomplete: 'off', 'aria-describedby': 'dr-id-help' }),
        h('span', { id: 'dr-id-help', class: 'small muted' }, 'A letter, then letters, digits, - . _')),
      h('div', { class: 'field' }, h('label', { for: 'dr-format' }, 'Format'),
        h('select', { id: 'dr-format', name: 'format' },
          h('option', { value: 'qcow2' }, 'qcow2'), h('option', { value: 'raw' }, 'raw'))),
      h('div', { class: 'field' }, h('label', { for: 'dr-size' }, 'Size'),
        h('input', { id: 'dr-size', name: 'size', required: true, value: '64M', autocomplete: 'off',
          'aria-describedby': 'dr-size-help' }),
        h('span', { id: 'dr-size-help', class: 'small muted' }, 'Bytes, or with K, M, G, T')),
      h('div', { class: 'field actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create drive')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const fd = new FormData(form);
      const size = String(fd.get('size')).trim();
      const r = await ctx.act(form.querySelector('button[type=submit]'),
        () => post('/api/v1/drives', { id: String(fd.get('id')).trim(), format: fd.get('format'),
          size: /^\d+$/.test(size) ? Number(size) : size }),
        (d) => `Drive ${d.id} created`);
      if (r) { form.reset(); await load(); }
    });
    root.append(h('h1', {}, 'Drives'), list, form);
    let jobs = [];
    let drives = [];

    function driveCard(d) {
      const myJobs = jobs.filter((j) => j.device === d.id && j.status !== 'null');
      const backup = (kind) => h('button', { type: 'button', 'data-key': `${kind}:${d.id}`, class: kind === 'full' ? 'primary' : '',
        onclick: (ev) => ctx.act(ev.currentTarget, () => post(`/api/v1/drives/${enc(d.id)}/backups`, { kind }),
          (r) => `Backup ${r.backup.id} of ${d.id} started (${r.backup.kind}${r.reason ? `: ${r.reason}` : ''})`)
          .then(() => ctx.jobs.refresh()) }, kind === 'full' ? 'Full backup' : 'Incremental backup');
      const used = d.size ? Math.min(100, (d.allocated / d.size) * 100) : 0;
      const filt = (d.filters || []).map((f) => f.driver).join(', ');
      const vm = d.source && d.source.vm_status ? d.source : null;
      return h('article', { class: 'card drive', 'aria-labelledby': `drive-${d.id}` },
        h('header', { class: 'row spread' },
          h('h2', { id: `drive-${d.id}` }, d.id),
          h('span', {}, badge(vm ? 'VM drive' : d.format), vm ? badge(`VM ${vm.vm_status}`, VM_TONE[vm.vm_status], { 'data-test': 'vm-status' }) : null,
            d.busy ? badge('busy', 'info') : null, filt ? badge(filt, 'neutral') : null)),
        vm ? h('dl', { class: 'stats' },
          h('div', {}, h('dt', {}, 'Size'), h('dd', {}, vm.vm_status === 'gone' ? 'unknown (VM gone)' : bytes(d.size))),
          h('div', {}, h('dt', {}, 'QMP socket'), h('dd', { class: 'mono wrap' }, vm.qmp)),
          h('div', {}, h('dt', {}, 'Node'), h('dd', { class: 'mono wrap' }, vm.node)))
          : h('dl', { class: 'stats' },
            h('div', {}, h('dt', {}, 'Size'), h('dd', {}, bytes(d.size))),
            h('div', {}, h('dt', {}, 'Allocated'), h('dd', {}, `${bytes(d.allocated)} (${used.toFixed(used < 1 ? 2 : 0)}%)`)),
            h('div', {}, h('dt', {}, 'File'), h('dd', { class: 'mono wrap' }, d.file))),
        vm ? null : h('div', { class: 'meter', role: 'img', 'aria-label': `${used.toFixed(1)}% of the drive allocated` },
          h('span', { style: `width:${used}%` })),
        h('h3', {}, 'Dirty bitmaps'),
        d.bitmaps.length ? h('ul', { class: 'plain bitmaps' }, d.bitmaps.map((b) => h('li', {},
          h('span', { class: 'mono' }, b.name), ' ',
          h('strong', {}, `${bytes(b.count)} dirty`), ' ',
          badge(b.status, statusTone(b.status) || (b.status === 'active' ? 'ok' : '')),
          b.persistent ? badge('persistent', 'neutral') : null,
          h('span', { class: 'small muted' }, ` granularity ${bytes(b.granularity)}`))))
          : h('p', { class: 'muted small' }, 'No bitmaps.'),
        myJobs.length ? h('div', { class: 'drive-jobs' }, myJobs.map((j) => h('div', {},
          h('span', {}, `${j.type} job ${j.id} `), jobStatus(j), progress(j)))) : null,
        h('div', { class: 'btns' },
          d.format === 'detached' ? null : backup('full'),      /* no image: only its backups */
          d.format === 'detached' ? null : backup('incremental'),
          h('button', { type: 'button', 'data-key': `verify:${d.id}`,
            onclick: (ev) => ctx.act(ev.currentTarget, () => post('/api/v1/jobs', { type: 'verify', mode: 'checksum', drive: d.id }),
              (j) => `Verify job ${j.id} started`).then(() => ctx.jobs.refresh()) }, 'Verify backups'),
          h('a', { class: 'button', href: `#/drives/${enc(d.id)}` }, 'Chain timeline')));
    }

    function render() {
      replace(list, drives.length ? drives.map(driveCard) : h('p', { class: 'muted' }, 'No drives yet: create one below.'));
    }

    async function load() {
      drives = (await get('/api/v1/drives')).drives;
      render();
    }
    const reload = debounce(() => load().catch(ctx.error), 300);
    await load();
    const unsub = ctx.jobs.subscribe((l) => { jobs = l; render(); });
    ctx.jobs.refresh();
    // what has no event (a drive made by another client, ages) is refreshed now and then
    const tick = setInterval(reload, 15000);
    return {
      onEvent(ev) { if (/BLOCK_JOB_COMPLETED|BLOCK_JOB_CANCELLED|CORRUPTION|RECONNECTED|JOB_STATUS/.test(ev.event)) reload(); },
      unmount() { unsub(); clearInterval(tick); },
    };
  },
};
