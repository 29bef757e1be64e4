// The dashboard over HTTPS (--tls-self-signed, with a token): the page, the API calls and the
// live event stream all go over TLS.  The API client here trusts only the daemon's own
// certificate (pinned); the browser is told to accept it (it is self-signed by design).
// The fingerprint printed at start is the certificate's (test_tls checks it byte for byte).

import { run, assert, shot } from './lib.mjs';

const TOKEN = 'https-browser-test-token';

await run('https', async ({ daemon, newPage }) => {
  assert(daemon.url.startsWith('https://'), `served over https: ${daemon.url}`);
  assert(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/i.test(daemon.fingerprint || ''), `fingerprint printed: ${daemon.fingerprint}`);
  const health = await daemon.api('GET', '/api/v1/health', undefined, { status: 200 });
  assert(health.status === 'ok', 'health over the pinned certificate');

  const page = await newPage({ ignoreHTTPSErrors: true });
  await page.goto(daemon.url + '/');
  assert(await page.evaluate(() => location.protocol) === 'https:', 'page over https');
  const dialog = page.getByRole('dialog', { name: 'Access token' });
  await dialog.waitFor();
  await page.getByLabel('Token', { exact: true }).fill(TOKEN);
  await page.getByRole('button', { name: 'Continue' }).click();
  await dialog.waitFor({ state: 'hidden' });
  await page.locator('[data-test=health]', { hasText: 'ok' }).waitFor();
  await page.locator('#conn[data-state=live]').waitFor();      // the event stream over TLS

  // something made through the API shows up live through the stream
  await daemon.api('POST', '/api/v1/drives', { id: 'tls0', format: 'qcow2', size: '1M' }, { status: 201 });
  await daemon.api('POST', '/api/v1/drives/tls0/backups', { kind: 'full' }, { status: 201 });
  await page.locator('.prot', { hasText: 'newest good backup b1' }).waitFor();
  await page.goto(daemon.url + '/#/drives/tls0');
  await page.getByText('tls0').first().waitFor();
  await shot(page, 'https-drive');
}, { token: TOKEN, tls: true });
