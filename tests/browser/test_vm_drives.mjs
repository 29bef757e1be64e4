// VM drives in the drives view: a disk of a running QEMU (qemu-system-x86_64 -machine none)
// shows as a VM drive with its VM's status, QMP socket and node; a full backup started from its
// card is pulled and completes; once QEMU is gone the card says so.  Skips (77) without QEMU.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, assert, shot, skip, findChromium, loadPlaywright } from './lib.mjs';

if (!findChromium()) skip('chromium is not installed (apt-get install chromium)');
await loadPlaywright();                   // skips when the module is missing: before QEMU starts

if (spawnSync('sh', ['-c', 'command -v qemu-system-x86_64 && command -v qemu-img']).status !== 0) {
  skip('qemu-system-x86_64 or qemu-img is not installed (scripts/install-deps installs qemu-system-x86)');
}
const dir = mkdtempSync(join(tmpdir(), 'bv-browser-vm-'));
const qmpDir = join(dir, 'qmp');
mkdirSync(qmpDir);
const disk = join(dir, 'vm0.qcow2');
if (spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']).status !== 0) skip('qemu-img create failed');
const sock = join(qmpDir, 'vm0.sock');
const qemu = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none',
  '-drive', `if=none,id=drive0,driver=qcow2,node-name=disk0,file.driver=file,file.filename=${disk}`,
  '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
let qemuGone = false;
qemu.on('exit', () => { qemuGone = true; });
process.on('exit', () => { if (!qemuGone) qemu.kill('SIGKILL'); });   // whatever ends the test

const accepts = () => new Promise((resolve) => {
  const c = connect(sock);
  c.on('connect', () => { c.destroy(); resolve(true); });
  c.on('error', () => resolve(false));
});
let up = false;
for (let i = 0; i < 500 && !up && !qemuGone; i++) {                 // bounded at 10 s
  up = await accepts();
  if (!up) await new Promise((r) => setTimeout(r, 20));
}
if (!up) {
  qemu.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
  skip('qemu-system-x86_64 -machine none did not start here');
}

try {
  await run('vm_drives', async ({ daemon, newPage }) => {
    await daemon.api('POST', '/api/v1/drives', { id: 'vm0', format: 'qemu', qmp: 'vm0.sock', node: 'drive0' },
      { status: 201 });
    const page = await newPage();
    await page.goto(daemon.url + '/#/drives');
    const card = page.locator('article.drive', { has: page.getByRole('heading', { name: 'vm0', exact: true }) });
    await card.waitFor();
    await card.locator('.badge', { hasText: 'VM drive' }).waitFor();
    await card.locator('.badge.ok', { hasText: 'VM running' }).waitFor();
    await card.locator('dd', { hasText: 'vm0.sock' }).waitFor();
    await card.locator('dd', { hasText: 'drive0' }).waitFor();
    await card.locator('dd', { hasText: '16 MiB' }).waitFor();
    assert(await card.locator('.meter').count() === 0, 'no allocation meter for a VM drive');

    // a full backup from the card: pulled from QEMU, complete
    await card.getByRole('button', { name: 'Full backup' }).click();
    let b = null;
    for (let i = 0; i < 300 && !(b && b.status === 'complete'); i++) {   // bounded at 30 s
      const list = await daemon.api('GET', '/api/v1/drives/vm0/backups');
      const c = list.chains;
      assert(Array.isArray(c), `GET backups: ${JSON.stringify(list)}`);
      b = c.length ? c[0].backups[0] : null;
      assert(!b || b.status !== 'failed', `the backup failed: ${JSON.stringify(b)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert(b && b.status === 'complete' && b.kind === 'full', `backup complete: ${JSON.stringify(b)}`);
    await shot(page, 'vm-drive');

    // its chain timeline lists the pulled backup
    await page.goto(daemon.url + `/#/drives/vm0`);
    await page.getByText(b.id, { exact: true }).first().waitFor();
    await shot(page, 'vm-drive-chain');
    await page.goto(daemon.url + '/#/drives');
    await card.waitFor();

    // QEMU goes away: the card says so after a reload
    qemu.kill('SIGKILL');
    for (let i = 0; i < 100 && !qemuGone; i++) await new Promise((r) => setTimeout(r, 50));
    await page.reload();
    await card.locator('.badge.bad', { hasText: 'VM gone' }).waitFor();
    await card.locator('dd', { hasText: 'unknown (VM gone)' }).waitFor();
    await shot(page, 'vm-drive-gone');
  }, { args: ['--qmp-dir', qmpDir] });
} finally {
  if (!qemuGone) qemu.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
