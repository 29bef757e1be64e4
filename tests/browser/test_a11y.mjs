// Accessibility: axe-core (pinned in package-lock.json) over every view of the dashboard
// (views.mjs: VIEWS), with data in each, folded parts opened, and over the token dialog, an API
// error and a shown token secret; no violation of impact serious or critical is allowed.  Each one is
// printed with the elements it concerns.

import { run, assert, shot, checkA11y } from './lib.mjs';
import { VIEWS, seed } from './views.mjs';

const TOKEN = 'a11y-admin-token-for-the-browser-test';

await run('a11y', async ({ daemon, newPage }) => {
  const ids = await seed(daemon);
  const page = await newPage();
  await page.goto(`${daemon.url}/#/overview`);

  // the token dialog first (the service has a token)
  await page.getByRole('dialog', { name: 'Access token' }).waitFor();
  const failures = [];
  const check = async (label) => {
    const bad = await checkA11y(page, label);
    if (bad.length) failures.push(`${label}: ${bad.map((v) => `${v.impact} ${v.id} (${v.nodes.length})`).join(', ')}`);
  };
  await check('token dialog');
  await page.getByLabel('Token', { exact: true }).fill(TOKEN);
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.locator('#conn[data-state=live]').waitFor();

  for (const v of VIEWS) {
    await page.goto(`${daemon.url}/#/${v.path(ids)}`);
    await page.getByRole('heading', { level: 1 }).first().waitFor();
    await page.locator(v.ready).first().waitFor();
    if (v.open) await v.open(page);
    await page.waitForTimeout(200);
    await check(v.name);
    await shot(page, `a11y-${v.name}`);
  }

  // an API error shown in the page (a drive id that is taken)
  await page.goto(`${daemon.url}/#/drives`);
  await page.locator('#dr-id').fill(ids.drive);   // by id: a missing label is axe's to report
  await page.getByRole('button', { name: 'Create drive' }).click();
  await page.locator('.error-box').waitFor();
  await check('error message');

  // a token's secret, shown once after it is made
  await page.goto(`${daemon.url}/#/tokens`);
  await page.locator('#tk-name').fill('a11y-reader');
  await page.getByRole('button', { name: 'Create token' }).click();
  await page.locator('[data-test=secret]').waitFor();
  await check('token secret');

  assert(failures.length === 0, `serious or critical accessibility violations (details above):\n  ${failures.join('\n  ')}`);
  console.log(`axe-core: no serious or critical violations in ${VIEWS.length} views, the token dialog, an error and a token secret`);
}, { token: TOKEN });
