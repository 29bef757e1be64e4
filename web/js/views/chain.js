// A drive's backup chains as a timeline: full → incrementals, each point with its size,
// status, verification and damage; restore a point (new drive or file), verify it, prune it.

import { get, post, del, enc } from '../api.js';
import { h, replace, bytes, time, badge, statusTone } from '../util.js';
import { debounce, protection, ICON } from './common.js';

let formSeq = 0;

export default {
  async mount(root, [id], ctx) {
    const head = h('div', {});
    const body = h('div', { class: 'chains' });
    root.append(h('p', { class: 'crumbs' }, h('a', { href: '#/drives' }, 'Drives'), ' › ', id),
      h('h1', {}, `Chain timeline: ${id}`), head, body);
    const open = new Set();            // points whose restore form is open
    const forms = new Map();           // and the forms, kept across live re-renders
    const formFor = (b) => {
      if (!forms.has(b.id)) forms.set(b.id, restoreForm(b));
      return forms.get(b.id);
    };

    function restoreForm(b) {
      const n = ++formSeq;
      const form = h('form', { class: 'restore-form', 'aria-label': `Restore ${b.id}` },
        h('fieldset', {}, h('legend', {}, `Restore ${b.id} to`),
          h('label', { class: 'inline' }, h('input', { type: 'radio', name: 'to', value: 'drive', checked: true }), ' a new drive'),
          h('label', { class: 'inline' }, h('input', { type: 'radio', name: 'to', value: 'file' }), ' a file')),
        h('div', { class: 'field' }, h('label', { for: `rs-name-${n}` }, 'New drive id or file name'),
          h('input', { id: `rs-name-${n}`, name: 'name', required: true, autocomplete: 'off',
            value: `${id}-${b.id}`, 'data-key': `rs-name:${b.id}` })),
        h('div', { class: 'field' }, h('label', { for: `rs-fmt-${n}` }, 'Format'),
          h('select', { id: `rs-fmt-${n}`, name: 'format' }, h('option', { value: 'qcow2' }, 'qcow2'), h('option', { value: 'raw' }, 'raw'))),
        b.damaged ? h('label', { class: 'inline warn-text' }, h('input', { type: 'checkbox', name: 'force' }),
          ' Restore although the point is damaged (the data is still checked)') : null,
        h('div', { class: 'btns' },
          h('button', { type: 'submit', class: 'primary', 'data-key': `rs-go:${b.id}` }, 'Start restore'),
          h('button', { type: 'button', onclick: () => { open.delete(b.id); forms.delete(b.id); render(); } }, 'Close')));
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const fd = new FormData(form);
        const name = String(fd.get('name')).trim();
        const req = { format: fd.get('format') };
        if (fd.get('to') === 'drive') req.drive = name;
        else req.file = name.includes('.') ? name : `${name}.${req.format}`;
        if (fd.get('force')) req.force = true;
        const r = await ctx.act(form.querySelector('[type=submit]'),
          () => post(`/api/v1/backups/${enc(b.id)}/restore`, req), (j) => `Restore job ${j.id} started`);
        if (r) { open.delete(b.id); forms.delete(b.id); ctx.jobs.refresh(); render(); }
      });
      return form;
    }

    function point(b) {
      const tone = b.damaged ? 'bad' : statusTone(b.status);
      const btn = (label, key, fn, done) => h('button', { type: 'button', class: 'small-btn', 'data-key': `${key}:${b.id}`,
        'aria-label': `${label} ${b.id}`, onclick: (ev) => ctx.act(ev.currentTarget, fn, done).then(() => { ctx.jobs.refresh(); reload(); }) }, label);
      return h('li', { class: `point ${tone}${b.damaged ? ' damaged' : ''}`, 'data-backup': b.id },
        h('div', { class: 'row spread' },
          h('strong', { class: 'pid' }, b.id),
          h('span', {}, badge(b.kind, b.kind === 'full' ? 'info' : 'neutral'), ' ', badge(b.status, statusTone(b.status)))),
        b.damaged ? h('p', { class: 'damage' }, h('span', { 'aria-hidden': 'true' }, `${ICON.bad} `), 'Damaged: reads a corrupt block') : null,
        h('dl', { class: 'kv small' },
          h('dt', {}, 'Taken'), h('dd', {}, time(b.created_at)),
          h('dt', {}, 'Data'), h('dd', {}, bytes(b.data_bytes)),
          h('dt', {}, 'Verified'), h('dd', {}, b.verified_at ? time(b.verified_at) : h('span', { class: 'muted' }, 'never'))),
        h('div', { class: 'btns' },
          ['complete', 'corrupt'].includes(b.status)
            ? h('button', { type: 'button', class: 'small-btn', 'data-key': `restore:${b.id}`, 'aria-expanded': String(open.has(b.id)),
              'aria-label': `Restore ${b.id}`, onclick: () => { if (open.has(b.id)) open.delete(b.id); else open.add(b.id); render(); } }, 'Restore…') : null,
          ['complete', 'corrupt'].includes(b.status)
            ? btn('Verify', 'verify', () => post('/api/v1/jobs', { type: 'verify', mode: 'checksum', backup: b.id }), (j) => `Verify job ${j.id} started`) : null,
          b.status !== 'running'
            ? btn('Prune', 'prune', () => {
              if (!window.confirm(`Prune backup ${b.id}? Its data is merged into the next point and it can no longer be restored.`)) return Promise.resolve(null);
              return del(`/api/v1/backups/${enc(b.id)}`);
            }, (j) => (j ? `Prune job ${j.id} started` : 'Prune not started')) : null),
        open.has(b.id) ? formFor(b) : null);
    }

    let data = null;
    function render() {
      if (!data) return;
      const { drive, chains, policies } = data;
      const p = protection(drive, chains, policies);
      replace(head, h('div', { class: `card prot-head ${p.tone}` },
        h('span', { class: 'prot-icon', 'aria-hidden': 'true' }, ICON[p.tone]),
        h('div', {}, h('strong', {}, p.label), h('div', { class: 'small' }, p.detail, p.sched ? ` · ${p.sched}` : '')),
        h('div', { class: 'small' }, `${bytes(drive.size)} ${drive.format}, ${bytes(drive.allocated)} allocated`)));
      const last = chains.length - 1;
      replace(body, chains.length ? chains.slice().reverse().map((c, i) => h('section', { class: 'card chain', 'aria-labelledby': `chain-${c.id}` },
        h('h2', { id: `chain-${c.id}` }, `Chain ${c.id} `, badge(last - i === last ? 'current' : 'closed', last - i === last ? 'ok' : 'neutral'),
          h('span', { class: 'small muted' }, ` ${c.backups.length} point${c.backups.length === 1 ? '' : 's'}`)),
        h('ol', { class: 'timeline', 'aria-label': `Points of chain ${c.id}, oldest first` }, c.backups.map((b) => point(b)))))
        : h('p', { class: 'muted' }, 'No backups yet. Start one from the Drives page.'));
    }

    async function load() {
      const [drive, bk, pol] = await Promise.all([get(`/api/v1/drives/${enc(id)}`),
        get(`/api/v1/drives/${enc(id)}/backups`), get('/api/v1/policies')]);
      data = { drive, chains: bk.chains, policies: pol.policies };
      render();
    }
    const reload = debounce(() => load().catch(ctx.error), 300);
    await load();
    return {
      onEvent(ev) { if (/COMPLETED|CANCELLED|CORRUPTION|POLICY_RUN|RECONNECTED/.test(ev.event) || (ev.event === 'JOB_STATUS_CHANGE')) reload(); },
    };
  },
};
