// Notifications: a webhook whose URL nobody answers and a backup that fails (every read of its
// blkdebug drive fails).  The job_failed delivery stays undelivered: the Notifications view lists
// it first, prominently, with its error and next attempt; the overview points to it; the
// delivery log opens under the webhook's card.

import { run, assert, shot } from './lib.mjs';

await run('notifications', async ({ daemon, newPage }) => {
  await daemon.api('POST', '/api/v1/notifications', { name: 'pager', url: 'http://127.0.0.1:1/hook',
    events: ['job_failed', 'corruption'], secret: 'whsec-browser-test' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives', { id: 'bad0', format: 'qcow2', size: '1M',
    blkdebug: { inject_error: [{ event: 'read_aio', errno: 5 }] } }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives/bad0/io', { commands: ['write -P 0xab 0 64k'] });
  await daemon.api('POST', '/api/v1/drives/bad0/backups', { kind: 'full' }, { status: 201 });
  let d = null;
  for (let i = 0; i < 100 && !d; i++) {
    const r = await daemon.api('GET', '/api/v1/notifications/pager/deliveries');
    d = r.deliveries.find((x) => x.event === 'job_failed' && x.attempts >= 1) || null;
    if (!d) await new Promise((res) => setTimeout(res, 100));
  }
  assert(d && d.state === 'pending', `the delivery is pending after its first attempt: ${JSON.stringify(d)}`);

  const page = await newPage();
  await page.goto(daemon.url + '/#/notifications');
  await page.getByRole('heading', { name: 'Notifications', level: 1 }).waitFor();
  const alerts = page.getByRole('region', { name: 'Undelivered alerts' });
  await alerts.getByText('1 alert not delivered, still being retried.').waitFor();
  const row = alerts.locator(`tr[data-row="pager:${d.id}"]`);
  await row.waitFor();
  const text = await row.textContent();
  assert(text.includes('job_failed') && text.includes('pending') && text.includes("Couldn't connect"),
    `the alert row names the event, state and error: ${text}`);
  const card = page.getByRole('article', { name: 'pager' });
  assert((await card.textContent()).includes('yes (HMAC-SHA256)'), 'signed webhook shown');
  assert(!(await page.content()).includes('whsec-browser-test'), 'the secret is nowhere on the page');
  await card.getByRole('button', { name: 'Delivery log' }).click();
  await card.getByRole('region', { name: 'Delivery log of pager' }).locator('td', { hasText: 'job_failed' }).waitFor();
  await shot(page, 'notifications');

  await page.goto(daemon.url + '/#/overview');
  const note = page.locator('[data-test=undelivered]');
  await note.waitFor();
  assert((await note.textContent()).startsWith('1 notification not delivered (job_failed, pending)'),
    `overview note: ${await note.textContent()}`);
  await note.getByRole('link', { name: 'See notifications' }).click();
  await page.getByRole('heading', { name: 'Notifications', level: 1 }).waitFor();
});
