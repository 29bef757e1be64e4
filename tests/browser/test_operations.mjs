// The operations views, against a service with a token: tokens (a secret shown once, with a
// copy button, and that works with its role; never in the list; deletion after a
// confirmation), storage (the page shows what GET /storage answered, to the byte), images (the
// list holds exactly the files GET /images lists; a detail), NBD exports, remotes (added from
// the form against a stand-in S3 endpoint; deleted) and a VM drive's state on the drives page.

import { run, assert, shot, nav, checkA11y } from './lib.mjs';
import { seed, fakeS3 } from './views.mjs';

const TOKEN = 'ops-admin-token-for-the-browser-test';

async function textOf(page) {
  // everything a user or a script could read off the page: text, field values, attributes
  return page.evaluate(() => document.documentElement.outerHTML + [...document.querySelectorAll('input')].map((i) => i.value).join(' '));
}

await run('operations', async ({ daemon, newPage }) => {
  const ids = await seed(daemon, { drive: 'ops0' });
  const page = await newPage({ permissions: ['clipboard-read', 'clipboard-write'] });
  await page.goto(`${daemon.url}/#/tokens`);
  await page.getByLabel('Token', { exact: true }).fill(TOKEN);
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.locator('#main tr[data-row=monitoring]').waitFor();

  // ---- tokens: make an operator token from the form; its secret is shown once ----
  await page.getByLabel('Token name').fill('ci-operator');
  await page.getByLabel('Role').selectOption('operator');
  await page.getByLabel('Expires (optional)').fill('2031-06-30T12:00');
  const [made] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/v1/tokens') && r.request().method() === 'POST'),
    page.getByRole('button', { name: 'Create token' }).click()]);
  assert(made.status() === 201, `token made: ${made.status()}`);
  const secretField = page.getByLabel('Secret', { exact: true });
  await secretField.waitFor();
  const secret = await secretField.inputValue();
  assert(/^bvt_[0-9a-f]{64}$/.test(secret), `a secret is shown: '${secret}'`);
  assert(secret === (await made.json()).secret, 'the secret shown is the one the service made');
  assert(await page.evaluate(() => document.activeElement.id) === 'tk-secret-h', 'focus moved to the secret panel');
  await page.locator('#announce', { hasText: 'Token ci-operator created' }).waitFor({ state: 'attached' });
  // the secret works, with its role: an operator reads, but may not create a drive
  const as = (method, path, body) => fetch(daemon.url + path, { method, headers: { Authorization: `Bearer ${secret}` },
    body: body && JSON.stringify(body) });
  assert((await as('GET', '/api/v1/drives')).status === 200, 'the operator token reads');
  assert((await as('POST', '/api/v1/drives', { id: 'x', format: 'raw', size: 512 })).status === 403, 'the operator token may not create a drive');
  // copy button
  await page.getByRole('button', { name: 'Copy secret' }).click();
  await page.getByText('Copied to the clipboard.').waitFor();
  assert(await page.evaluate(() => navigator.clipboard.readText()) === secret, 'the clipboard holds the secret');
  // the list shows the token, never the secret; its expiry is the one given (local time)
  const row = page.locator('#main tr[data-row=ci-operator]');
  await row.waitFor();
  assert(!(await page.locator('section[aria-labelledby=tk-list]').innerHTML()).includes(secret), 'the list does not hold the secret');
  const listed = (await daemon.api('GET', '/api/v1/tokens')).tokens.find((t) => t.name === 'ci-operator');
  assert(listed && listed.role === 'operator' && Date.parse(listed.expires_at) === new Date('2031-06-30T12:00').getTime(),
    `token as made: ${JSON.stringify(listed)}`);
  assert(await row.locator('time').nth(1).getAttribute('datetime') === listed.expires_at, 'the expiry is shown');
  await shot(page, 'tokens-secret');
  // hidden: gone from the page; after leaving and coming back, still gone
  await page.getByRole('button', { name: 'Done: hide the secret' }).click();
  assert(!(await textOf(page)).includes(secret), 'the secret is gone once hidden');
  await nav(page, 'Storage');
  await nav(page, 'Tokens');
  await row.waitFor();
  assert(!(await textOf(page)).includes(secret), 'the secret is not shown again');
  // delete: a refused confirmation keeps the token, an accepted one deletes it
  page.once('dialog', (d) => d.dismiss());
  await row.getByRole('button', { name: 'Delete token ci-operator' }).click();
  await page.waitForTimeout(300);
  assert((await daemon.api('GET', '/api/v1/tokens')).tokens.some((t) => t.name === 'ci-operator'), 'kept when not confirmed');
  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  // by keyboard this time; the focus then goes to the list (its button is gone)
  await row.getByRole('button', { name: 'Delete token ci-operator' }).focus();
  await page.keyboard.press('Enter');
  await row.waitFor({ state: 'detached' });
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'tk-list');
  assert(asked.startsWith('Delete token ci-operator?'), `confirmation asked: '${asked}'`);
  assert(!(await daemon.api('GET', '/api/v1/tokens')).tokens.some((t) => t.name === 'ci-operator'), 'deleted');
  assert((await as('GET', '/api/v1/drives')).status === 401, 'a deleted token is refused');

  // ---- storage: the numbers of the answer the page got, to the byte ----
  const [st] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/v1/storage')),
    nav(page, 'Storage')]);
  const s = await st.json();
  await page.locator('[data-test=total]').waitFor();
  for (const k of ['total', 'used', 'free']) {
    const shown = await page.locator(`[data-test=${k}]`).getAttribute('data-bytes');
    const text = await page.locator(`[data-test=${k}]`).textContent();
    assert(shown === String(s[k]) && text.includes(Number(s[k]).toLocaleString('en-US')), `${k}: shown ${shown} '${text}', API ${s[k]}`);
  }
  const again = await daemon.api('GET', '/api/v1/storage');
  assert(again.total === s.total && JSON.stringify(again.chains) === JSON.stringify(s.chains), 'a second GET agrees on total and chains');
  assert(s.chains.length === 1 && s.chains[0].drive === 'ops0' && s.chains[0].bytes > 0, `one chain: ${JSON.stringify(s.chains)}`);
  for (const c of s.chains) {
    const cell = page.locator(`[data-test="chain-${c.drive}-${c.chain}"]`);
    assert(await cell.getAttribute('data-bytes') === String(c.bytes), `chain ${c.chain} bytes shown`);
  }
  assert(Number(await page.locator('meter#st-meter').getAttribute('value')) === s.used, 'the meter shows used');
  await shot(page, 'storage');

  // ---- images: exactly the files GET /images lists; a chain link's detail ----
  await nav(page, 'Images');
  await page.locator('#main tbody tr').first().waitFor();
  const api = (await daemon.api('GET', '/api/v1/images')).images;
  const shown = await page.locator('#main tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.row));
  assert(JSON.stringify(shown.slice().sort()) === JSON.stringify(api.map((i) => i.file).sort()),
    `images listed: ${shown.join(', ')} vs ${api.map((i) => i.file).join(', ')}`);
  assert(shown.includes(ids.image) && shown.includes('ops0.qcow2') && shown.includes('ref.raw'), 'drive, link and raw files');
  const link = api.find((i) => i.file === ids.image);
  await page.locator(`#main tr[data-row="${ids.image}"]`).getByRole('link', { name: ids.image }).click();
  await page.getByRole('heading', { name: `Image ${ids.image}` }).waitFor();
  assert((await page.locator('[data-test=virtual-size]').textContent()).includes(`(${link.virtual_size} bytes)`), 'virtual size');
  assert((await page.locator('[data-test=allocated]').textContent()).includes(`(${link.actual_size} bytes)`), 'allocated');
  assert((await page.locator('[data-test=backing]').textContent()) === link.backing, 'backing file');
  await page.getByRole('button', { name: 'Check metadata' }).click();
  await page.getByText('0 errors, 0 leaked clusters').waitFor();
  await shot(page, 'image');
  // the backing link leads to the parent link's page
  await page.locator('[data-test=backing] a').click();
  await page.getByRole('heading', { name: `Image ${ids.image.replace(/b2\.qcow2$/, 'b1.qcow2')}` }).waitFor();

  // ---- NBD exports: each drive and each complete point ----
  await nav(page, 'Exports');
  await page.locator('#main tbody tr').first().waitFor();
  const ex = (await daemon.api('GET', '/api/v1/exports')).exports;
  const rows = await page.locator('#main tbody tr').evaluateAll((r) => r.map((x) => x.dataset.row));
  assert(JSON.stringify(rows) === JSON.stringify(ex.map((e) => e.name)), `exports: ${rows.join(', ')}`);
  assert(rows.includes('backup/b1') && rows.includes('ops0'), 'a drive and a point are exported');
  await page.locator('[data-test=exports-summary]', { hasText: `${ex.length} exports, 0 clients attached.` }).waitFor();

  // ---- remotes: add one from the form (a stand-in S3 endpoint answers the bucket check) ----
  const s3 = await fakeS3();
  try {
    await nav(page, 'Remotes');
    await page.locator('#main tr[data-row=offsite]').waitFor();
    await page.getByLabel('Remote name').fill('second');
    await page.getByLabel('Endpoint').fill(s3.url);
    await page.getByLabel('Bucket', { exact: true }).fill('vault');
    await page.getByLabel('Access key').fill('AKIDSECOND');
    await page.getByLabel('Secret key').fill('the-secret-key');
    await page.getByRole('button', { name: 'Add remote' }).click();
    await page.locator('#main tr[data-row=second]').waitFor();
  } finally {
    await s3.close();
  }
  const rem = (await daemon.api('GET', '/api/v1/remotes')).remotes.find((r) => r.name === 'second');
  assert(rem && rem.bucket === 'vault' && rem.endpoint === s3.url && rem.region === 'us-east-1', `remote: ${JSON.stringify(rem)}`);
  assert(!(await textOf(page)).includes('the-secret-key'), 'the secret key is not on the page');
  await shot(page, 'remotes');
  page.once('dialog', (d) => d.accept());
  await page.getByRole('button', { name: 'Delete remote second' }).click();
  await page.locator('#main tr[data-row=second]').waitFor({ state: 'detached' });
  assert(!(await daemon.api('GET', '/api/v1/remotes')).remotes.some((r) => r.name === 'second'), 'remote deleted');

  // ---- a VM drive on the drives page: its VM's state.  Running a QEMU is test_vm_drives'
  // business; here the drive object of docs/api.md ("VM drives") is added to the answer. ----
  await page.route('**/api/v1/drives', async (route) => {
    if (route.request().method() !== 'GET') return route.continue();
    const res = await route.fetch();
    const json = await res.json();
    json.drives.push({ id: 'vm1', format: 'qemu', file: null, size: 1 << 30, allocated: null, cluster_size: null,
      backing: null, filters: [], busy: false, bitmaps: [], nbd_uri: null,
      source: { qmp: 'vm1.sock', node: 'disk0', vm_status: 'paused' } });
    return route.fulfill({ response: res, json });
  });
  await nav(page, 'Drives');
  const vm = page.locator('article', { has: page.getByRole('heading', { name: 'vm1', exact: true }) });
  await vm.locator('[data-test=vm-status]', { hasText: 'VM paused' }).waitFor();
  await vm.locator('dd', { hasText: 'vm1.sock' }).waitFor();
  await vm.locator('dd', { hasText: 'disk0' }).waitFor();
  assert(await vm.locator('.meter').count() === 0, 'no allocation meter for a VM drive');
  const bad = await checkA11y(page, 'drives with a VM drive');
  assert(bad.length === 0, 'no serious or critical accessibility violations with a VM drive');
  await shot(page, 'drives-vm');
  await page.unroute('**/api/v1/drives');
}, { token: TOKEN });
