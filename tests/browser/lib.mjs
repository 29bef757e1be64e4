// Shared by the browser tests: start a daemon on a free port with a temporary data directory,
// launch Debian's chromium through playwright-core (never a downloaded browser), call the API
// directly, save screenshots, fail loudly.  A missing chromium or node module is a skip (77).

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, writeFileSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SKIP = 77;
const here = dirname(fileURLToPath(import.meta.url));

export function skip(why) {
  console.log(`SKIP: ${why}`);
  process.exit(SKIP);
}

export function findChromium() {
  for (const p of [process.env.BV_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser']) {
    if (p && existsSync(p)) return p;
  }
  return null;
}

export async function loadPlaywright() {
  const mod = join(here, 'node_modules', 'playwright-core', 'index.mjs');
  if (!existsSync(mod)) skip(`playwright-core is not installed (run scripts/install-deps: npm ci in ${here})`);
  return import(mod);
}

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

export function shotsDir() {
  const d = process.env.BV_SHOTS_DIR || join(process.cwd(), 'browser-shots');
  mkdirSync(d, { recursive: true });
  return d;
}

export async function shot(page, name) {
  const path = join(shotsDir(), `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot ${path}`);
  return path;
}

// Starts `blockvault serve` on 127.0.0.1:0 and waits for its "listening on" line; extra
// arguments go after the defaults.  With tls, over --tls-self-signed: d.api then trusts exactly
// that certificate (pinned: its PEM as the only CA) and d.fingerprint is the one it printed.
export async function startDaemon({ token, tls, args: extra = [] } = {}) {
  const bin = process.env.BV_DAEMON;
  if (!bin || !existsSync(bin)) skip('BV_DAEMON is not set to the blockvault binary');
  const data = mkdtempSync(join(tmpdir(), 'bv-browser-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--data', data];
  if (tls) args.push('--tls-self-signed');
  if (process.env.BV_SOURCE_DIR) args.push('--web', join(process.env.BV_SOURCE_DIR, 'web'));
  args.push(...extra);
  if (token) {
    const tf = join(data, 'token');
    writeFileSync(tf, `${token}\n`);
    args.push('--token-file', tf);
  }
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`daemon did not start:\n${log}`)), 20000);
    const on = (buf) => {
      log += buf.toString();
      const m = log.match(/listening on (https?:\/\/[0-9.:]+)/);
      if (m) { clearTimeout(t); resolve(m[1]); }
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.on('exit', (code) => { clearTimeout(t); reject(new Error(`daemon exited ${code}:\n${log}`)); });
  });
  child.stdout.on('data', (b) => { log += b.toString(); });
  child.stderr.on('data', (b) => { log += b.toString(); });
  let ca = null, fingerprint = null;
  if (tls) {
    ca = readFileSync(join(data, 'tls', 'cert.pem'), 'utf8');
    fingerprint = (log.match(/tls fingerprint sha256 (\S+)/) || [])[1] || null;
  }
  const request = (method, path, headers, body) => new Promise((resolve, reject) => {
    const req = httpsRequest(url + path, { method, headers, ca }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
  const d = {
    url, data, images: join(data, 'images'), child, fingerprint,
    get log() { return log; },
    async api(method, path, body, { status } = {}) {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const res = tls ? await request(method, path, headers, payload)
        : await fetch(url + path, { method, headers, body: payload });
      const text = tls ? res.text : await res.text();
      if (status !== undefined && res.status !== status) throw new Error(`${method} ${path}: want ${status}, got ${res.status}: ${text}`);
      return text ? JSON.parse(text) : null;
    },
    // Stops the daemon; its exit must be clean (a sanitizer report makes it fail).
    async stop() {
      let status = { code: child.exitCode, signal: child.signalCode };
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        status = await new Promise((r) => {
          const t = setTimeout(() => { child.kill('SIGKILL'); r({ code: null, signal: 'SIGKILL (hung)' }); }, 15000);
          child.on('exit', (code, signal) => { clearTimeout(t); r({ code, signal }); });
        });
      }
      rmSync(data, { recursive: true, force: true });
      if (status.code !== 0) throw new Error(`daemon exit: ${status.code ?? status.signal}\n${log.slice(-4000)}`);
    },
  };
  return d;
}

export async function launch() {
  const exe = findChromium();
  if (!exe) skip('chromium is not installed (apt-get install chromium)');
  const { chromium } = await loadPlaywright();
  return chromium.launch({ executablePath: exe, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

// Runs a test body with a daemon and a browser; collects page errors; always cleans up.
export async function run(name, body, { token, tls, args } = {}) {
  let daemon = null, browser = null;
  const pageErrors = [];
  try {
    browser = await launch();              // first: a skip (no chromium) leaves no daemon behind
    daemon = await startDaemon({ token, tls, args });
    const newPage = async (opts = {}) => {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, ...opts });
      const page = await ctx.newPage();
      page.on('pageerror', (e) => pageErrors.push(String(e)));
      page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
      page.setDefaultTimeout(20000);
      return page;
    };
    await body({ daemon, browser, newPage });
    const real = pageErrors.filter((e) => !/status of 40[0-9]|status of 500/.test(e));
    assert(real.length === 0, `page errors: ${real.join('\n')}`);
    console.log(`PASS ${name}`);
  } catch (e) {
    console.error(`FAIL ${name}: ${e.stack || e}`);
    if (daemon) console.error(`daemon log:\n${daemon.log.slice(-4000)}`);
    process.exitCode = 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
    if (daemon) {
      await daemon.stop().catch((e) => {
        console.error(`FAIL ${name}: ${e.message}`);
        process.exitCode = 1;
      });
    }
  }
}

// Runs axe-core (tests/browser/node_modules, pinned by package-lock.json) over the page as it
// is now; returns the violations of impact serious or critical, each printed with the elements
// it concerns (less severe ones are printed as notes).
export async function checkA11y(page, label) {
  const axe = join(here, 'node_modules', 'axe-core', 'axe.min.js');
  if (!existsSync(axe)) skip(`axe-core is not installed (run scripts/install-deps: npm ci in ${here})`);
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: axe });
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
      nodes: v.nodes.map((n) => ({ target: n.target.join(' '), why: n.failureSummary, html: n.html.slice(0, 160) })) }));
  });
  const bad = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of found) {
    const head = `${bad.includes(v) ? 'A11Y VIOLATION' : 'a11y note'} [${label}] ${v.impact} ${v.id}: ${v.help} (${v.url})`;
    console.log([head, ...v.nodes.slice(0, 8).map((n) => `    at ${n.target}: ${n.html}\n      ${(n.why || '').replace(/\n/g, '\n      ')}`)].join('\n'));
  }
  return bad;
}

// Follows a link of the main navigation (a hash route: the page is not reloaded).
export async function nav(page, name) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true }).click();
  await page.getByRole('heading', { level: 1 }).first().waitFor();
}
