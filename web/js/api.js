// The REST client.  Errors carry the API's own sentence (error.desc).  A 401 asks for the
// token once (one dialog however many calls are waiting), keeps it in sessionStorage for the
// tab and retries.

const KEY = 'blockvault.token';

export class ApiError extends Error {
  constructor(status, cls, desc, body) {
    super(desc);
    this.status = status;
    this.cls = cls;
    this.desc = desc;
    this.body = body;
  }
}

export function token() {
  try { return sessionStorage.getItem(KEY); } catch { return null; }
}

let asking = null;

// Shows the token dialog; resolves when the user has given a token.  `rejected` is the
// API's sentence for the token that was refused (null the first time).
export function askToken(rejected) {
  if (asking) return asking;
  const dialog = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const err = document.getElementById('token-error');
  err.hidden = !rejected;
  err.textContent = rejected ? `The token was refused: ${rejected}` : '';
  input.value = '';
  asking = new Promise((resolve) => {
    const done = (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) { input.focus(); return; }
      try { sessionStorage.setItem(KEY, t); } catch { /* private mode: kept for this page */ }
      memo = t;
      form.removeEventListener('submit', done);
      dialog.close();
      asking = null;
      resolve(t);
    };
    form.addEventListener('submit', done);
    // Escape would leave the page without a way to continue: keep the dialog open
    dialog.addEventListener('cancel', (ev) => ev.preventDefault(), { once: true });
    dialog.showModal();
    input.focus();
  });
  return asking;
}

let memo = null;
export function authHeaders() {
  const t = token() || memo;
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function readError(res) {
  const text = await res.text().catch(() => '');
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  const e = json && json.error;
  return new ApiError(res.status, (e && e.class) || 'HTTPError',
    (e && e.desc) || `${res.status} ${res.statusText || 'error'}`.trim(), json);
}

export async function api(method, path, body) {
  for (;;) {
    const headers = authHeaders();
    const init = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'NetworkError', `The service cannot be reached (${e.message}).`);
    }
    if (res.status === 401) {
      const err = await readError(res);
      await askToken(headers.Authorization ? err.desc : null);
      continue;
    }
    if (!res.ok) throw await readError(res);
    if (res.status === 204) return null;
    const text = await res.text();
    if (!text) return null;
    const type = res.headers.get('Content-Type') || '';
    return type.includes('json') ? JSON.parse(text) : text;
  }
}

export const get = (p) => api('GET', p);
export const post = (p, b) => api('POST', p, b === undefined ? {} : b);
export const del = (p) => api('DELETE', p);
export const enc = encodeURIComponent;
