// Corruption reports: a blkverify mismatch (test and reference differ at sector 8) and a checksum
// verify of a backup whose link file was damaged.  The report page shows the first bad sector
// and offset, the extent map, the affected restore points and the differing bytes marked.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, assert, shot, nav } from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

await run('report', async ({ daemon, newPage }) => {
  // blkverify: reference all 0xcd, test zeros except where written with 0xcd; the first 4 KiB
  // agree, so the first differing sector is 8
  writeFileSync(join(daemon.images, 'ref.raw'), Buffer.alloc(1 << 20, 0xcd));
  await daemon.api('POST', '/api/v1/images', { file: 't.qcow2', format: 'qcow2', size: '1M' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives', { id: 'bv0', format: 'blkverify',
    test: { file: 't.qcow2', format: 'qcow2' }, raw: { file: 'ref.raw' } }, { status: 201 });

  const page = await newPage();
  await page.goto(daemon.url + '/#/overview');
  await page.locator('#conn[data-state=live]').waitFor();
  await page.getByText('No corruption found.').waitFor();

  // the mismatch happens while the page is open: the alert appears without a reload
  await daemon.api('POST', '/api/v1/drives/bv0/io', { commands: ['write -P 0xcd 0 4k'] });
  const bad = await daemon.api('GET', '/api/v1/drives/bv0/data?offset=0&length=65536');
  assert(bad.error && bad.error.report_id, `a mismatch files a report: ${JSON.stringify(bad)}`);
  const rid = bad.error.report_id;
  const alert = page.locator('.alerts a', { hasText: 'blkverify report on bv0' });
  await alert.waitFor();
  await shot(page, 'overview-corrupt');
  await alert.click();
  await page.getByRole('heading', { name: `Report ${rid}` }).waitFor();
  const api = await daemon.api('GET', `/api/v1/reports/${rid}`);
  const sector = (await page.locator('[data-test=first-sector]').textContent()).trim();
  assert(sector === String(api.first_mismatch_sector) && sector === '8', `first bad sector shown: ${sector}`);
  const off = await page.locator('[data-test=first-offset]').textContent();
  assert(off.startsWith('4096 '), `offset shown: ${off}`);
  assert(await page.locator('svg.extent-map rect.map-bad').count() === api.extents.length, 'one mark per extent');
  // side by side: 16 test bytes (00) and 16 reference bytes (cd), every one marked as differing
  const first = page.locator('.sample.first');
  assert(await first.locator('.hex-side.test mark').count() === 16, 'test bytes marked');
  assert(await first.locator('.hex-side.ref mark').count() === 16, 'reference bytes marked');
  assert((await first.locator('.hex-side.ref mark').first().textContent()) === 'cd', 'reference byte cd');
  await shot(page, 'report-blkverify');

  // a checksum verify of a damaged backup: the affected restore points are listed
  await daemon.api('POST', '/api/v1/drives', { id: 'd1', format: 'qcow2', size: '32M' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives/d1/io', { commands: ['write -P 0xfe 8M 256k', 'flush'] });
  await daemon.api('POST', '/api/v1/drives/d1/backups', { kind: 'full' }, { status: 201 });
  const waitIdle = async () => {
    for (let i = 0; i < 200; i++) {
      const j = await daemon.api('GET', '/api/v1/jobs');
      if (j.jobs.every((x) => x.status === 'null' || x.status === 'concluded')) return;
      await sleep(50);
    }
    throw new Error('jobs did not end');
  };
  await waitIdle();
  await daemon.api('POST', '/api/v1/drives/d1/io', { commands: ['write -P 0x11 1M 64k'] });
  await daemon.api('POST', '/api/v1/drives/d1/backups', { kind: 'incremental' }, { status: 201 });
  await waitIdle();
  const link = join(daemon.images, 'chains/d1/c1/b1.qcow2');
  const img = readFileSync(link);
  const at = img.indexOf(Buffer.alloc(4096, 0xfe));
  assert(at > 0, 'found the data cluster');
  img.fill(0, at + 100, at + 116);
  writeFileSync(link, img);

  await page.goto(daemon.url + '/#/drives');
  await page.locator('article', { hasText: 'd1' }).getByRole('button', { name: 'Verify backups' }).click();
  await nav(page, 'Reports');
  const row = page.locator('#main tbody tr').filter({ hasText: 'checksum' }).filter({ hasText: 'corrupt' });
  await row.first().waitFor();
  await shot(page, 'reports-list');
  await row.first().getByRole('link').click();
  await page.getByRole('heading', { name: 'Restore points affected' }).waitFor();
  const aff = await page.locator('section[aria-labelledby=rp-aff] li').allTextContents();
  assert(aff.join(',') === 'b1,b2', `affected points: ${aff}`);
  assert((await page.locator('[data-test=first-sector]').textContent()) === String(8 * 2048), 'sector of the bad block');
  await shot(page, 'report-checksum');

  // the chain timeline marks the damaged points
  await page.goto(daemon.url + '/#/drives/d1');
  await page.locator('.point.damaged[data-backup=b1]').waitFor();
  assert(await page.locator('.point.damaged').count() === 2, 'two damaged points');
  await shot(page, 'chain-damaged');
});
