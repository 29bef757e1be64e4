// Every view at 390 px (a phone): nothing wider than the screen, the navigation reachable; a
// screenshot of each.  Also a keyboard check: Tab from the top reaches the skip link first.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, assert, shot } from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

await run('phone', async ({ daemon, newPage }) => {
  // something in every view: drives, a chain, a report with samples, a policy
  await daemon.api('POST', '/api/v1/drives', { id: 'phone-drive-with-a-long-name', format: 'qcow2', size: '64M' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives/phone-drive-with-a-long-name/bitmaps', { name: 'bitmap0' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives/phone-drive-with-a-long-name/io', { commands: ['write -P 0x42 0 1M'] });
  await daemon.api('POST', '/api/v1/drives/phone-drive-with-a-long-name/backups', { kind: 'full' }, { status: 201 });
  for (let i = 0; i < 100; i++) {
    const j = await daemon.api('GET', '/api/v1/jobs');
    if (!j.jobs.length) break;
    await sleep(50);
  }
  await daemon.api('POST', '/api/v1/drives/phone-drive-with-a-long-name/backups', { kind: 'incremental' }, { status: 201 });
  writeFileSync(join(daemon.images, 'ref.raw'), Buffer.alloc(1 << 20, 0xcd));
  await daemon.api('POST', '/api/v1/images', { file: 't.qcow2', format: 'qcow2', size: '1M' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives', { id: 'bv0', format: 'blkverify', test: { file: 't.qcow2', format: 'qcow2' }, raw: { file: 'ref.raw' } }, { status: 201 });
  const bad = await daemon.api('GET', '/api/v1/drives/bv0/data?offset=0&length=512');
  await daemon.api('POST', '/api/v1/policies', { name: 'weekdays', drives: ['phone-drive-with-a-long-name'], schedule: '30 1 * * 1-5',
    retention: { keep_last: 5, keep_weekly: 4 } }, { status: 201 });

  const page = await newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
  const views = ['overview', 'drives', 'drives/phone-drive-with-a-long-name', 'jobs', 'reports', `reports/${bad.error.report_id}`, 'policies'];
  for (const v of views) {
    await page.goto(`${daemon.url}/#/${v}`);
    await page.getByRole('heading', { level: 1 }).first().waitFor();
    await page.locator('#conn[data-state=live]').waitFor();
    if (v === 'policies') await page.getByRole('button', { name: 'Retention preview' }).click();
    if (v.startsWith('drives/')) await page.getByRole('button', { name: 'Restore b1' }).click();
    await sleep(300);
    const m = await page.evaluate(() => {
      const over = [];
      for (const el of document.querySelectorAll('body *')) {
        const r = el.getBoundingClientRect();
        if (r.width && r.right > window.innerWidth + 1 && !el.closest('.table-wrap, .timeline')) over.push(`${el.tagName}.${el.className} right=${Math.round(r.right)}`);
      }
      return { sw: document.documentElement.scrollWidth, iw: window.innerWidth, over: over.slice(0, 5) };
    });
    assert(m.sw <= m.iw, `${v}: page is ${m.sw} px wide at ${m.iw} px (${m.over.join('; ')})`);
    assert(m.over.length === 0, `${v}: elements past the right edge: ${m.over.join('; ')}`);
    await shot(page, `phone-${v.startsWith('reports/') ? 'report' : v.startsWith('drives/') ? 'chain' : v}`);
  }

  // keyboard: the first Tab reaches the skip link, which moves the focus to the content
  await page.goto('about:blank');
  await page.goto(`${daemon.url}/#/overview`);
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.id) === 'skip', 'skip link first');
  await page.keyboard.press('Enter');
  assert(await page.evaluate(() => document.activeElement.id) === 'main', 'focus moved to the content');
});
