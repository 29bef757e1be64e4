// DOM building and formatting.  Everything the API returns is put in the page as text
// (never as HTML), so a drive or report id cannot inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' && tag !== 'input') el.value = v;
    else if (k === 'checked' || k === 'selected' || k === 'disabled') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

const SVG = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c);
  return el;
}

// Replaces a container's content and puts keyboard focus back on the element with the same
// data-key (live updates must not steal the focus from a keyboard user).
export function replace(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key : null;
  container.replaceChildren();
  container.removeAttribute('aria-busy');
  append(container, children);
  if (active && active !== document.body && container.contains(active)) {
    active.focus({ preventScroll: true });   // the same node was put back (a kept form)
  } else if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  const s = i === 0 ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${s.replace(/\.0+$/, '')} ${UNITS[i]}`;
}

export function rate(bps) {
  return bps > 0 ? `${bytes(bps)}/s` : '—';
}

export function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return '—';
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min${s % 60 && m < 10 ? ` ${s % 60} s` : ''}`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h${m % 60 ? ` ${m % 60} min` : ''}`;
  const d = Math.floor(hr / 24);
  return `${d} d${hr % 24 ? ` ${hr % 24} h` : ''}`;
}

export function ageSeconds(iso, now = Date.now()) {
  return iso ? (now - Date.parse(iso)) / 1000 : null;
}

export function relative(iso) {
  if (!iso) return '—';
  const s = ageSeconds(iso);
  return s >= 0 ? `${duration(s)} ago` : `in ${duration(-s)}`;
}

// <time> with the local time as text and the exact instant as title
export function time(iso, { rel = false } = {}) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const d = new Date(iso);
  const local = d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  return h('time', { datetime: iso, title: `${local} (${iso})` }, rel ? relative(iso) : local);
}

export function eta(job) {
  if (!job || !(job.rate > 0) || !(job.len > job.offset)) return null;
  return (job.len - job.offset) / job.rate;
}

export function percent(job) {
  if (!job || !job.len) return 0;
  return Math.min(100, Math.floor((job.offset / job.len) * 100));
}

export const LIVE_DONE = new Set(['concluded', 'null']);

export function hexBytes(hex) {
  if (!hex) return [];
  const out = [];
  for (let i = 0; i + 1 < hex.length; i += 2) out.push(hex.slice(i, i + 2).toLowerCase());
  return out;
}

export function badge(text, tone, extra) {
  return h('span', { class: `badge ${tone || ''}`, ...extra }, text);
}

export function statusTone(status) {
  switch (status) {
    case 'complete': case 'clean': case 'ok': case 'concluded': case 'null': return 'ok';
    case 'running': case 'created': case 'waiting': case 'pending': case 'started': return 'info';
    case 'paused': case 'standby': case 'aborting': case 'skipped': return 'warn';
    case 'failed': case 'corrupt': case 'damaged': return 'bad';
    default: return '';
  }
}

// ---- cron: words and a typical period (to judge a drive's protection against its policy) ----

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
const MONTHS = ['', 'January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
  'September', 'October', 'November', 'December'];
const NAMES = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6, jan: 1, feb: 2, mar: 3,
  apr: 4, may: 5, jun: 6, jul: 7, aug: 8, sep: 9, oct: 10, nov: 11, dec: 12 };
const MACROS = {
  '@hourly': '0 * * * *', '@daily': '0 0 * * *', '@midnight': '0 0 * * *',
  '@weekly': '0 0 * * 0', '@monthly': '0 0 1 * *', '@yearly': '0 0 1 1 *', '@annually': '0 0 1 1 *',
};

function num(t) {
  const l = t.toLowerCase();
  return l in NAMES ? NAMES[l] : Number(t);
}

function pad(n) { return String(n).padStart(2, '0'); }

function listWords(field, names) {
  return field.split(',').map((part) => {
    const [range, step] = part.split('/');
    let words;
    if (range === '*') words = names ? 'every one' : 'every value';
    else if (range.includes('-')) {
      const [a, b] = range.split('-').map(num);
      words = names ? `${names[a]} to ${names[b]}` : `${a} to ${b}`;
    } else words = names ? names[num(range)] : String(num(range));
    if (!step) return words;
    return range === '*' ? `every ${step}` : `every ${step} from ${words}`;
  }).join(', ');
}

const plain = (f) => /^\d+$/.test(f);

export function cronWords(expr) {
  const src = (expr || '').trim();
  const f = (MACROS[src.toLowerCase()] || src).split(/\s+/);
  if (f.length !== 5) return src;
  const [mi, hr, dom, mon, dow] = f;
  let when;
  if (mi === '*' && hr === '*') when = 'every minute';
  else if (/^\*\/\d+$/.test(mi) && hr === '*') when = `every ${mi.slice(2)} minutes`;
  else if (plain(mi) && hr === '*') when = mi === '0' ? 'every hour, on the hour' : `every hour at minute ${mi}`;
  else if (plain(mi) && /^\*\/\d+$/.test(hr)) when = `every ${hr.slice(2)} hours at minute ${mi}`;
  else if (plain(mi) && /^\d+(,\d+)*$/.test(hr)) when = 'at ' + hr.split(',').map((x) => `${pad(x)}:${pad(mi)}`).join(', ');
  else if (plain(mi) && /^\d+-\d+$/.test(hr)) {
    const [a, b] = hr.split('-');
    when = `every hour from ${pad(a)}:${pad(mi)} to ${pad(b)}:${pad(mi)}`;
  } else when = `at minute ${listWords(mi)} of hour ${listWords(hr)}`;
  const days = [];
  if (dom !== '*') days.push(`on day ${listWords(dom)} of the month`);
  if (dow !== '*') days.push(`on ${listWords(dow, DAYS)}`);
  let text = when;
  if (days.length) text += ' ' + days.join(' or ');
  else if (plain(mi) && /^\d+(,\d+)*$/.test(hr)) text = 'every day ' + text;
  if (mon !== '*') text += ` in ${listWords(mon, MONTHS)}`;
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function values(field, lo, hi) {
  const out = new Set();
  for (const part of field.split(',')) {
    const [range, step] = part.split('/');
    let a = lo, b = hi;
    if (range !== '*') {
      if (range.includes('-')) [a, b] = range.split('-').map(num);
      else { a = num(range); b = step ? hi : a; }
    }
    for (let v = a; v <= b; v += Number(step) || 1) out.add(v % (hi + 1));
  }
  return [...out].sort((x, y) => x - y);
}

// the longest wait between two values of a cyclic field (e.g. Friday to Monday: 3)
function maxGap(vals, cycle) {
  if (!vals.length) return cycle;
  let g = vals[0] + cycle - vals[vals.length - 1];
  for (let i = 1; i < vals.length; i++) g = Math.max(g, vals[i] - vals[i - 1]);
  return g;
}

// The longest time between two runs, in seconds (an estimate: enough to judge an age).
export function cronPeriod(expr) {
  const src = (expr || '').trim();
  const f = (MACROS[src.toLowerCase()] || src).split(/\s+/);
  if (f.length !== 5) return null;
  const [mi, hr, dom, mon, dow] = f;
  const day = 86400;
  try {
    if (mon !== '*') return maxGap(values(mon, 1, 12).map((m) => m - 1), 12) * 31 * day;
    if (dom !== '*' && dow === '*') return maxGap(values(dom, 1, 31).map((d) => d - 1), 31) * day;
    if (dow !== '*' && dom === '*') return maxGap(values(dow, 0, 6), 7) * day;
    if (hr !== '*') return maxGap(values(hr, 0, 23), 24) * 3600;
    return maxGap(values(mi, 0, 59), 60) * 60;
  } catch {
    return null;
  }
}
