// With a token configured, the dashboard asks for it once (a wrong one is refused with the
// API's sentence), keeps it for the tab (sessionStorage) and works with it, the event stream too.

import { run, assert, shot } from './lib.mjs';

const TOKEN = 's3cret-token-for-the-browser-test';

await run('token', async ({ daemon, newPage }) => {
  const page = await newPage();
  await page.goto(daemon.url + '/');
  const dialog = page.getByRole('dialog', { name: 'Access token' });
  await dialog.waitFor();
  await shot(page, 'token-prompt');
  await page.getByLabel('Token', { exact: true }).fill('wrong');
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.locator('#token-error', { hasText: 'The token was refused' }).waitFor();
  await page.getByLabel('Token', { exact: true }).fill(TOKEN);
  await page.getByRole('button', { name: 'Continue' }).click();
  await dialog.waitFor({ state: 'hidden' });
  await page.locator('[data-test=health]', { hasText: 'ok' }).waitFor();
  await page.locator('#conn[data-state=live]').waitFor();
  assert(await page.evaluate(() => sessionStorage.getItem('blockvault.token')) === TOKEN, 'kept for the tab');

  // a reload in the same tab does not ask again; live events arrive through the stream
  await page.reload();
  await page.locator('[data-test=health]', { hasText: 'ok' }).waitFor();
  await page.locator('#conn[data-state=live]').waitFor();
  assert(!(await dialog.isVisible()), 'not asked twice');
  await daemon.api('POST', '/api/v1/drives', { id: 'tok0', format: 'qcow2', size: '1M' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives/tok0/backups', { kind: 'full' }, { status: 201 });
  await page.locator('.prot', { hasText: 'newest good backup b1' }).waitFor();
  await page.locator('.events li', { hasText: /./ }).first().waitFor({ state: 'attached' });

  // a new tab (a new context) asks again
  const other = await newPage();
  await other.goto(daemon.url + '/');
  await other.getByRole('dialog', { name: 'Access token' }).waitFor();
}, { token: TOKEN });
