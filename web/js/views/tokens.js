// Tokens: the scoped API tokens (GET /api/v1/tokens, admin only; never their secrets), a form
// that makes one (role, optional expiry) and shows its secret this once with a copy button,
// and deletion with a confirmation.  The secret lives only in this view's memory: it is gone
// when the panel is closed or the page is left, as it is from the service.

import { get, post, del, enc } from '../api.js';
import { h, replace, time, badge } from '../util.js';
import { table, loadingError } from './common.js';

const ROLES = ['reader', 'operator', 'admin'];
const ROLE_TONE = { reader: 'neutral', operator: 'info', admin: 'warn' };

// RFC 3339 in UTC, whole seconds, from a datetime-local value (the browser's zone)
function rfc3339(local) {
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? null : d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

async function copyText(input) {
  try {
    await navigator.clipboard.writeText(input.value);
    return true;
  } catch {
    // no clipboard API (plain HTTP off loopback): the old way, from the selected field
    input.focus();
    input.select();
    try { return document.execCommand('copy'); } catch { return false; }
  }
}

export default {
  async mount(root, _params, ctx) {
    const secretBox = h('div', {});
    const list = h('section', { class: 'card', 'aria-labelledby': 'tk-list' });
    const form = h('form', { class: 'card form-grid', 'aria-labelledby': 'tk-new' },
      h('h2', { id: 'tk-new' }, 'New token'),
      h('div', { class: 'field' }, h('label', { for: 'tk-name' }, 'Token name'),
        h('input', { id: 'tk-name', name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]{1,64}', maxlength: 64,
          autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'tk-name-help' }),
        h('span', { id: 'tk-name-help', class: 'small muted' }, 'Up to 64 letters, digits, - . _')),
      h('div', { class: 'field' }, h('label', { for: 'tk-role' }, 'Role'),
        h('select', { id: 'tk-role', name: 'role', 'aria-describedby': 'tk-role-help' }, ROLES.map((r) => h('option', { value: r }, r))),
        h('span', { id: 'tk-role-help', class: 'small muted' }, 'reader: every GET; operator: also backups, restores, jobs, policy runs; admin: everything')),
      h('div', { class: 'field' }, h('label', { for: 'tk-expires' }, 'Expires (optional)'),
        h('input', { id: 'tk-expires', name: 'expires', type: 'datetime-local', 'aria-describedby': 'tk-expires-help' }),
        h('span', { id: 'tk-expires-help', class: 'small muted' }, 'Your local time; empty: never expires')),
      h('div', { class: 'field actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create token')));
    root.append(h('h1', {}, 'Tokens'),
      h('p', { class: 'muted' }, 'Scoped tokens for the API and this dashboard. The service keeps only a hash of each secret.'),
      secretBox, list, form);

    function showSecret(t) {
      const input = h('input', { id: 'tk-secret', class: 'mono secret', readonly: true, value: t.secret,
        spellcheck: 'false', autocomplete: 'off', 'data-test': 'secret', 'aria-describedby': 'tk-secret-help' });
      const copied = h('span', { class: 'small', role: 'status' });
      const panel = h('section', { class: 'card secret-panel', 'aria-labelledby': 'tk-secret-h' },
        h('h2', { id: 'tk-secret-h', tabindex: '-1' }, `Secret of token ${t.name}`),
        h('p', { id: 'tk-secret-help' }, h('strong', {}, 'Copy it now: it is shown only this once.'),
          ` Use it as Authorization: Bearer <secret>. Role ${t.role}`,
          t.expires_at ? ', expires ' : ', never expires', t.expires_at ? time(t.expires_at) : null, '.'),
        h('label', { for: 'tk-secret' }, 'Secret'),
        h('div', { class: 'secret-row' }, input,
          h('button', { type: 'button', class: 'primary', onclick: async () => {
            const ok = await copyText(input);
            copied.textContent = ok ? 'Copied to the clipboard.' : 'Copying failed: select the field and copy it by hand.';
          } }, 'Copy secret')),
        copied,
        h('div', { class: 'btns' }, h('button', { type: 'button', onclick: () => {
          replace(secretBox);
          form.querySelector('input').focus();
        } }, 'Done: hide the secret')));
      replace(secretBox, panel);
      panel.querySelector('h2').focus();
    }

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const fd = new FormData(form);
      const req = { name: String(fd.get('name')).trim(), role: fd.get('role') };
      const exp = String(fd.get('expires') || '').trim();
      if (exp) {
        req.expires_at = rfc3339(exp);
        if (!req.expires_at) { ctx.error(new Error(`The expiry '${exp}' is not a date and time.`)); return; }
      }
      const t = await ctx.act(form.querySelector('button[type=submit]'), () => post('/api/v1/tokens', req),
        (r) => `Token ${r.name} created; its secret is shown once above the list`);
      if (t) {
        form.reset();
        showSecret(t);
        await load().catch(ctx.error);
      }
    });

    function remove(ev, t) {
      if (!window.confirm(`Delete token ${t.name}? Anything using it is refused from now on.`)) return;
      ctx.act(ev.currentTarget, () => del(`/api/v1/tokens/${enc(t.name)}`), `Token ${t.name} deleted`)
        .then(async (r) => {
          await load().catch(ctx.error);
          // the button is gone with its row: the focus goes to the list, not to the page's top
          if (r !== undefined) list.querySelector('h2').focus();
        });
    }

    function render(tokens) {
      const now = Date.now();
      replace(list, h('h2', { id: 'tk-list', tabindex: '-1' }, 'Tokens'),
        table('API tokens by name', [
          { label: 'Name', cell: (t) => h('span', { class: 'mono' }, t.name) },
          { label: 'Role', cell: (t) => badge(t.role, ROLE_TONE[t.role]) },
          { label: 'Created', cell: (t) => time(t.created_at) },
          { label: 'Expires', cell: (t) => (t.expires_at
            ? h('span', {}, time(t.expires_at), Date.parse(t.expires_at) <= now ? [' ', badge('expired', 'bad')] : null)
            : h('span', { class: 'muted' }, 'never')) },
          { label: 'Actions', cell: (t) => h('button', { type: 'button', class: 'small-btn', 'data-key': `del:${t.name}`,
            'aria-label': `Delete token ${t.name}`, onclick: (ev) => remove(ev, t) }, 'Delete') },
        ], tokens, { empty: 'No scoped tokens. The configured admin token is not listed.', rowKey: (t) => t.name }));
    }

    async function load() { render((await get('/api/v1/tokens')).tokens); }
    try {
      await load();
    } catch (e) {
      // a reader or operator token may not list tokens (403): say so where the list would be
      replace(list, h('h2', { id: 'tk-list', tabindex: '-1' }, 'Tokens'));
      loadingError(list, e);
    }
    return {};
  },
};
