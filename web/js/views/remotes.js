// Remotes: the S3 buckets chains are replicated to (GET /api/v1/remotes; never their secret
// keys), a form that adds one (POST /api/v1/remotes: the service lists the bucket before it
// answers, so a wrong key or bucket is refused with its reason) and deletion with a
// confirmation (the objects stay in the bucket).

import { get, post, del, enc } from '../api.js';
import { h, replace, time, badge } from '../util.js';
import { table } from './common.js';

const field = (id, label, attrs, help) => h('div', { class: 'field' },
  h('label', { for: id }, label),
  h('input', { id, autocomplete: 'off', spellcheck: 'false', 'aria-describedby': help ? `${id}-help` : null, ...attrs }),
  help ? h('span', { id: `${id}-help`, class: 'small muted' }, help) : null);

export default {
  async mount(root, _params, ctx) {
    const list = h('section', { class: 'card', 'aria-labelledby': 'rm-list' });
    const form = h('form', { class: 'card form-grid', 'aria-labelledby': 'rm-new' },
      h('h2', { id: 'rm-new' }, 'New remote'),
      field('rm-name', 'Remote name', { name: 'name', required: true, maxlength: 64, pattern: '[A-Za-z0-9_\\-][A-Za-z0-9._\\-]{0,63}' },
        'Up to 64 letters, digits, - . _'),
      field('rm-endpoint', 'Endpoint', { name: 'endpoint', type: 'url', required: true, placeholder: 'https://s3.example.net' },
        'http(s)://host[:port], no path'),
      field('rm-bucket', 'Bucket', { name: 'bucket', required: true }),
      field('rm-region', 'Region', { name: 'region', placeholder: 'us-east-1' }, 'Empty: us-east-1'),
      field('rm-access', 'Access key', { name: 'access_key', required: true }),
      field('rm-secret', 'Secret key', { name: 'secret_key', type: 'password', required: true, autocomplete: 'new-password' },
        'Kept in a file only the service reads; never shown again'),
      h('fieldset', { class: 'field' }, h('legend', {}, 'Options'),
        h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'create_bucket' }), ' Create it if it is missing'),
        h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'object_lock' }), ' With object lock')),
      h('div', { class: 'field actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add remote')));
    root.append(h('h1', {}, 'Remotes'),
      h('p', { class: 'muted' }, 'S3 buckets that backup chains are copied to (replicate a point from the API).'), list, form);

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const fd = new FormData(form);
      const req = {
        name: String(fd.get('name')).trim(), endpoint: String(fd.get('endpoint')).trim().replace(/\/+$/, ''),
        bucket: String(fd.get('bucket')).trim(), access_key: String(fd.get('access_key')).trim(),
        secret_key: String(fd.get('secret_key')),
      };
      const region = String(fd.get('region')).trim();
      if (region) req.region = region;
      if (fd.get('create_bucket')) req.create_bucket = true;
      if (fd.get('object_lock')) req.object_lock = true;
      const r = await ctx.act(form.querySelector('button[type=submit]'), () => post('/api/v1/remotes', req),
        (x) => `Remote ${x.name} added`);
      if (r) { form.reset(); await load().catch(ctx.error); }
    });

    function remove(ev, r) {
      if (!window.confirm(`Delete remote ${r.name}? Its objects stay in bucket ${r.bucket}; the service forgets them.`)) return;
      ctx.act(ev.currentTarget, () => del(`/api/v1/remotes/${enc(r.name)}`), `Remote ${r.name} deleted`)
        .then(async (r) => {
          await load().catch(ctx.error);
          // the button is gone with its row: the focus goes to the list, not to the page's top
          if (r !== undefined) list.querySelector('h2').focus();
        });
    }

    function render(remotes) {
      replace(list, h('h2', { id: 'rm-list', tabindex: '-1' }, 'Remotes'),
        table('S3 remotes by name', [
          { label: 'Name', cell: (r) => h('strong', {}, r.name) },
          { label: 'Endpoint', class: 'wide', cell: (r) => h('span', { class: 'mono small wrap' }, r.endpoint) },
          { label: 'Bucket', cell: (r) => h('span', { class: 'mono' }, r.bucket) },
          { label: 'Region', cell: (r) => r.region },
          { label: 'Access key', cell: (r) => h('span', { class: 'mono small wrap' }, r.access_key) },
          { label: 'Object lock', cell: (r) => (r.object_lock ? badge('on', 'info') : badge('off', 'neutral')) },
          { label: 'Added', cell: (r) => time(r.created_at) },
          { label: 'Actions', cell: (r) => h('button', { type: 'button', class: 'small-btn', 'data-key': `del:${r.name}`,
            'aria-label': `Delete remote ${r.name}`, onclick: (ev) => remove(ev, r) }, 'Delete') },
        ], remotes, { empty: 'No remotes yet: add one below.', rowKey: (r) => r.name }));
    }

    async function load() { render((await get('/api/v1/remotes')).remotes); }
    await load();
    return {};
  },
};
