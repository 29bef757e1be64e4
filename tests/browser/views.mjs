// Every route of the dashboard, in one list, and the data that fills them.  test_a11y runs
// axe-core over each view and test_phone lays each out at phone width: a new view is added to
// VIEWS here and both check it.
//   name   short name (screenshots, messages)
//   path   the hash route, from the ids seed() returned
//   ready  a CSS selector that is there once the view shows its data
//   open   optional: shows what the view keeps folded (forms, previews), so it is checked too

import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const VIEWS = [
  { name: 'overview', path: () => 'overview', ready: '[data-test=health]' },
  { name: 'drives', path: () => 'drives', ready: 'article.drive' },
  { name: 'chain', path: (s) => `drives/${s.drive}`, ready: '.point[data-backup=b1]',
    open: (page) => page.getByRole('button', { name: 'Restore b1' }).click() },
  { name: 'jobs', path: () => 'jobs', ready: 'section[aria-labelledby=jobs-hist] tbody tr' },
  { name: 'reports', path: () => 'reports', ready: '#main tbody tr' },
  { name: 'report', path: (s) => `reports/${s.report}`, ready: '[data-test=first-sector]' },
  { name: 'policies', path: () => 'policies', ready: '.policy',
    open: (page) => page.getByRole('button', { name: 'Retention preview' }).click() },
  { name: 'storage', path: () => 'storage', ready: '[data-test=total]' },
  { name: 'images', path: () => 'images', ready: '#main tbody tr' },
  { name: 'image', path: (s) => `images/${encodeURIComponent(s.image)}`, ready: '[data-test=format]' },
  { name: 'exports', path: () => 'exports', ready: '#main tbody tr' },
  { name: 'remotes', path: () => 'remotes', ready: '#main tbody tr' },
  { name: 'tokens', path: () => 'tokens', ready: '#main tbody tr' },
  { name: 'notifications', path: () => 'notifications', ready: 'article.card[aria-labelledby^=nt-]' },
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function idle(daemon) {
  for (let i = 0; i < 200; i++) {
    const j = await daemon.api('GET', '/api/v1/jobs');
    if (!j.jobs.length) return;
    await sleep(50);
  }
  throw new Error('jobs did not end');
}

// An S3 endpoint that answers every request 200 with an empty listing: enough for
// POST /remotes, which lists the bucket before it records the remote.
export async function fakeS3() {
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'Content-Type': 'application/xml' });
    res.end(req.method === 'GET' ? '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name>' +
      '<KeyCount>0</KeyCount><MaxKeys>0</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>' : '');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

// Something in every view: a drive (a long name) with a bitmap and a chain of two points, a
// blkverify drive with a corruption report, a policy, a scoped token, a webhook, a remote.
export async function seed(daemon, { drive = 'phone-drive-with-a-long-name' } = {}) {
  const D = `/api/v1/drives/${drive}`;
  await daemon.api('POST', '/api/v1/drives', { id: drive, format: 'qcow2', size: '64M' }, { status: 201 });
  await daemon.api('POST', `${D}/bitmaps`, { name: 'bitmap0' }, { status: 201 });
  await daemon.api('POST', `${D}/io`, { commands: ['write -P 0x42 0 1M'] });
  await daemon.api('POST', `${D}/backups`, { kind: 'full' }, { status: 201 });
  await idle(daemon);
  await daemon.api('POST', `${D}/io`, { commands: ['write -P 0x43 4M 64k'] });
  await daemon.api('POST', `${D}/backups`, { kind: 'incremental' }, { status: 201 });
  await idle(daemon);
  const chain = (await daemon.api('GET', `${D}/backups`)).chains[0];
  writeFileSync(join(daemon.images, 'ref.raw'), Buffer.alloc(1 << 20, 0xcd));
  await daemon.api('POST', '/api/v1/images', { file: 't.qcow2', format: 'qcow2', size: '1M' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives', { id: 'bv0', format: 'blkverify', test: { file: 't.qcow2', format: 'qcow2' }, raw: { file: 'ref.raw' } }, { status: 201 });
  const bad = await daemon.api('GET', '/api/v1/drives/bv0/data?offset=0&length=512');
  await daemon.api('POST', '/api/v1/policies', { name: 'weekdays', drives: [drive], schedule: '30 1 * * 1-5',
    retention: { keep_last: 5, keep_weekly: 4 } }, { status: 201 });
  await daemon.api('POST', '/api/v1/tokens', { name: 'monitoring', role: 'reader', expires_at: '2031-01-31T12:00:00Z' }, { status: 201 });
  await daemon.api('POST', '/api/v1/notifications', { name: 'ops-webhook', url: 'http://127.0.0.1:9/hook',
    events: ['job_failed', 'corruption'], secret: 'a-webhook-secret' }, { status: 201 });
  const s3 = await fakeS3();
  try {
    await daemon.api('POST', '/api/v1/remotes', { name: 'offsite', endpoint: s3.url, bucket: 'backups',
      access_key: 'AKIDEXAMPLE', secret_key: 'not-a-real-secret' }, { status: 201 });
  } finally {
    await s3.close();
  }
  return { drive, report: bad.error.report_id, image: chain.backups[1].file, chain: chain.id };
}
