#!/usr/bin/env bash
# bench_vm.sh [WORKDIR]: backups pulled from a running QEMU (issue 15, VM drives), ours against
# the tool a user would script, in one run on one VM.
#
# Setup: qemu-system-x86_64 -machine none -nodefaults -display none with a SIZE (default 1 GiB)
# qcow2 disk of random data (node disk0, device drive0) and two QMP monitors: one in the
# daemon's --qmp-dir, one for this script (guest writes through HMP `qemu-io drive0 "…"`, and
# the user's own export); a Release daemon with the disk as VM drive "vm". Page cache warm
# (the disk is read first), `sync` before every timed step.
#
# Cases:
#   full  POST /api/v1/drives/vm/backups {"kind":"full"}, timed from the POST to the job's
#         BLOCK_JOB_COMPLETED (scratch image, QMP set-up, the pull, the link's fdatasync,
#         teardown, catalog), against `qemu-img convert -f raw -O qcow2` of an export set up as
#         the pull sets it up (scratch qcow2, blockdev-add overlay, one transaction with a
#         bitmap-add and blockdev-backup sync=none, nbd-server-start, block-export-add): its
#         default (-t unsafe: never flushed, not durable) and -t writeback (flushed on close,
#         durable as ours); the user's QMP set-up and teardown are timed apart. RUNS rounds,
#         the order alternating; medians. Target: ours <= qemu-img convert.
#   inc   incrementals after 0 %, 1 % and 10 % of the disk was rewritten (random distinct
#         64 KiB granules, HMP qemu-io writes; then the next incremental), RUNS rounds:
#         data_bytes and time against the full. Target: cost proportional to the dirty data.
#   lat   guest write latency: HMP `qemu-io drive0 "write -P N OFF 64k"` round trips through
#         QMP human-monitor-command, one every 5 ms at random 64 KiB-aligned offsets: idle,
#         while our full pull reads (between the fleece job's start and its export's deletion,
#         from QEMU's events) and, for reference, while qemu-img convert reads the user's export.
#         Median and p90. Target: median during our pull <= 2.5x idle.
#
# BV_DAEMON defaults to build-release/service/blockvault:
#   cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBV_SANITIZE=OFF -DBV_WERROR=OFF
#   cmake --build build-release --target blockvault
# Knobs: BENCH_SIZE_MIB (1024), BENCH_RUNS (3), BENCH_PARTS (full,inc,lat).
# The work directory (default: a new one under /var/tmp) is removed at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
BV_DAEMON=${BV_DAEMON:-$top/build-release/service/blockvault}
for p in qemu-system-x86_64 qemu-img python3; do
    command -v "$p" >/dev/null || { echo "$p not installed (apt-get install qemu-system-x86 qemu-utils)" >&2; exit 77; }
done
[ -x "$BV_DAEMON" ] || { echo "no daemon at $BV_DAEMON (build it first)" >&2; exit 1; }
parent=${1:-/var/tmp}
W=$(mktemp -d "$parent/bv-bench-vm.XXXXXX")
trap 'rm -rf "$W"' EXIT
python3 - "$BV_DAEMON" "$W" <<'PY'
import json, os, random, signal, socket, statistics, subprocess, sys, time, urllib.request

DAEMON, W = sys.argv[1], sys.argv[2]
MIB = int(os.environ.get('BENCH_SIZE_MIB', '1024'))
SIZE = MIB << 20
RUNS = int(os.environ.get('BENCH_RUNS', '3'))
PARTS = os.environ.get('BENCH_PARTS', 'full,inc,lat').split(',')
GRAN = 64 << 10
procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


class QMP:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile('rb')
        self.events = []
        self.f.readline()                                  # greeting
        self.cmd('qmp_capabilities')

    def _read(self):
        line = self.f.readline()
        if not line:
            raise RuntimeError('QEMU closed the monitor')
        return json.loads(line)

    def cmd(self, execute, **args):
        msg = {'execute': execute}
        if args:
            msg['arguments'] = args
        self.s.sendall(json.dumps(msg).encode() + b'\n')
        while True:
            m = self._read()
            if 'event' in m:
                self.events.append(m)
                continue
            if 'error' in m:
                raise RuntimeError(f'{execute}: {m["error"]["desc"]}')
            return m['return']

    def hmp(self, line):
        return self.cmd('human-monitor-command', **{'command-line': line})

    def wait_event(self, name, key, value, timeout=30):
        end = time.time() + timeout
        while True:
            for e in self.events:
                if e['event'] == name and e.get('data', {}).get(key) == value:
                    self.events.remove(e)
                    return e
            if time.time() > end:
                raise RuntimeError(f'no {name} for {value}')
            self.s.settimeout(max(0.01, end - time.time()))
            try:
                m = self._read()
            finally:
                self.s.settimeout(None)
            if 'event' in m:
                self.events.append(m)


def wait_accepts(path, pid):
    for _ in range(1000):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.close()
            return
        except OSError:
            if pid.poll() is not None:
                raise RuntimeError('QEMU exited')
            time.sleep(0.01)
    raise RuntimeError(f'{path} does not accept')


# ---- the daemon's API ------------------------------------------------------------------------
URL = None


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    rq = urllib.request.Request(URL + '/api/v1' + path, data=data, method=method)
    with urllib.request.urlopen(rq, timeout=120) as r:
        txt = r.read()
    return json.loads(txt) if txt else None


def head_seq():
    return api('GET', '/events?after=latest')['next']


def wait_completed(job, after):
    while True:
        r = api('GET', f'/events?after={after}&wait=30&name=BLOCK_JOB_COMPLETED')
        for e in r['events']:
            if e['data']['device'] == job:
                return e['data'].get('error')
        after = r['next']


def our_backup(kind):
    """POST a chain backup of vm, wait for its job: (seconds, backup object)."""
    after = head_seq()
    t0 = time.perf_counter()
    r = api('POST', '/drives/vm/backups', {'kind': kind})
    err = wait_completed(r['job']['id'], after)
    t = time.perf_counter() - t0
    b = api('GET', f'/backups/{r["backup"]["id"]}')
    if err or b['status'] != 'complete' or b['kind'] != kind:
        raise RuntimeError(f'backup {b["id"]}: {err} {b["status"]} {b["kind"]} {b.get("reason")}')
    return t, b


# ---- the user's export (as the pull sets it up) ------------------------------------------------

class UserExport:
    def __init__(self, mon):
        self.mon = mon
        self.scratch = f'{W}/user-scratch.qcow2'
        self.sock = f'{W}/user-nbd.sock'
        self.uri = f'nbd+unix:///disk0?socket={self.sock}'

    def up(self):
        t0 = time.perf_counter()
        sh(f'qemu-img create -q -f qcow2 {self.scratch} {SIZE}')
        m = self.mon
        m.cmd('blockdev-add', driver='qcow2', **{'node-name': 'user-fleece'},
              file={'driver': 'file', 'filename': self.scratch}, backing='disk0')
        m.cmd('transaction', actions=[
            {'type': 'block-dirty-bitmap-add',
             'data': {'node': 'disk0', 'name': 'user-bm', 'persistent': False}},
            {'type': 'blockdev-backup',
             'data': {'device': 'disk0', 'target': 'user-fleece', 'sync': 'none',
                      'job-id': 'user-fleece'}}])
        m.cmd('nbd-server-start', addr={'type': 'unix', 'data': {'path': self.sock}})
        m.cmd('block-export-add', type='nbd', id='user-fleece', **{'node-name': 'user-fleece'},
              name='disk0', writable=False)
        return time.perf_counter() - t0

    def down(self):
        t0 = time.perf_counter()
        m = self.mon
        m.cmd('block-export-del', id='user-fleece', mode='hard')
        m.wait_event('BLOCK_EXPORT_DELETED', 'id', 'user-fleece')
        m.cmd('nbd-server-stop')
        m.cmd('block-job-cancel', device='user-fleece', force=True)
        m.wait_event('BLOCK_JOB_CANCELLED', 'device', 'user-fleece')
        m.cmd('blockdev-del', **{'node-name': 'user-fleece'})
        os.unlink(self.scratch)
        m.cmd('block-dirty-bitmap-remove', node='disk0', name='user-bm')
        return time.perf_counter() - t0


def convert(ux, cache):
    out = f'{W}/user-out.qcow2'
    c = ['-t', cache] if cache else []
    t0 = time.perf_counter()
    subprocess.run(['qemu-img', 'convert', *c, '-f', 'raw', '-O', 'qcow2', ux.uri, out], check=True)
    t = time.perf_counter() - t0
    return t, out


def med(xs):
    return statistics.median(xs)


def p90(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def mibs(t):
    return MIB / t


# ---- guest writes ------------------------------------------------------------------------------
pattern = [0]


def guest_write(mon, off):
    pattern[0] = pattern[0] % 250 + 1
    t0 = time.perf_counter()
    mon.hmp(f'qemu-io drive0 "write -P {pattern[0]} {off} 64k"')
    return time.perf_counter() - t0


def dirty(mon, fraction):
    n = int(round(SIZE // GRAN * fraction))
    for g in random.sample(range(SIZE // GRAN), n):
        guest_write(mon, g * GRAN)
    mon.hmp('qemu-io drive0 "flush"')
    return n * GRAN


def latencies(mon, active, done, limit=2000, gap=0.005):
    """Write latencies, kept when active() held before and after the write."""
    lat = []
    while not done() and len(lat) < limit:
        a = active()
        t = guest_write(mon, random.randrange(SIZE // GRAN) * GRAN)
        if a and active():
            lat.append(t)
        time.sleep(gap)
    return lat


def main():
    global URL
    os.makedirs(f'{W}/qmp')
    os.makedirs(f'{W}/data')
    disk = f'{W}/disk.qcow2'
    log(f'preparing {MIB} MiB of random data ...')
    sh(f'head -c {SIZE} /dev/urandom > {W}/rand.raw && '
       f'qemu-img convert -f raw -O qcow2 {W}/rand.raw {disk} && rm {W}/rand.raw')
    qemu = subprocess.Popen([
        'qemu-system-x86_64', '-machine', 'none', '-nodefaults', '-display', 'none',
        '-drive', f'if=none,id=drive0,driver=qcow2,node-name=disk0,file.driver=file,'
                  f'file.filename={disk}',
        '-qmp', f'unix:{W}/qmp/vm.sock,server=on,wait=off',
        '-qmp', f'unix:{W}/mon.sock,server=on,wait=off'],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    procs.append(qemu)
    wait_accepts(f'{W}/qmp/vm.sock', qemu)
    wait_accepts(f'{W}/mon.sock', qemu)
    mon = QMP(f'{W}/mon.sock')
    d = subprocess.Popen([DAEMON, 'serve', '--listen', '127.0.0.1:0', '--data', f'{W}/data',
                          '--qmp-dir', f'{W}/qmp'], stdout=subprocess.PIPE,
                         stderr=open(f'{W}/daemon.log', 'w'), text=True)
    procs.append(d)
    for line in d.stdout:
        if line.startswith('listening on '):
            URL = line.split()[2]
            break
    api('POST', '/drives', {'id': 'vm', 'format': 'qemu', 'qmp': 'vm.sock', 'node': 'drive0'})
    sh(f'cat {disk} > /dev/null')
    ux = UserExport(mon)
    rows = []

    full_b = None
    if 'full' in PARTS:
        ours, unsafe, wb, setup, down = [], [], [], [], []
        for i in range(RUNS):
            for who in (('ours', 'user') if i % 2 == 0 else ('user', 'ours')):
                os.sync()
                if who == 'ours':
                    t, full_b = our_backup('full')
                    ours.append(t)
                    log(f'  full ours {t:.3f} s')
                    continue
                for cache, acc in ((None, unsafe), ('writeback', wb)):
                    os.sync()
                    setup.append(ux.up())
                    t, out = convert(ux, cache)
                    acc.append(t)
                    down.append(ux.down())
                    os.unlink(out)
                    log(f'  qemu-img convert -t {cache or "unsafe (default)"} {t:.3f} s')
        o, u, w = med(ours), med(unsafe), med(wb)
        s, dn = med(setup), med(down)
        rows += [
            ('full: ours (POST to BLOCK_JOB_COMPLETED, durable)', f'{o:.3f} s', f'{mibs(o):.0f} MiB/s', ''),
            ('full: qemu-img convert (default -t unsafe, not flushed)', f'{u:.3f} s', f'{mibs(u):.0f} MiB/s', f'ours/it {o / u:.2f}'),
            ('full: qemu-img convert -t writeback (flushed)', f'{w:.3f} s', f'{mibs(w):.0f} MiB/s', f'ours/it {o / w:.2f}'),
            ('full: qemu-img convert incl. the user\'s set-up + teardown', f'{u + s + dn:.3f} s', f'set-up {s * 1000:.0f} ms, teardown {dn * 1000:.0f} ms', f'ours/it {o / (u + s + dn):.2f}'),
        ]
        log('full runs:', 'ours', [f'{x:.3f}' for x in ours], 'unsafe', [f'{x:.3f}' for x in unsafe],
            'writeback', [f'{x:.3f}' for x in wb])

    if 'inc' in PARTS:
        if full_b is None:
            _, full_b = our_backup('full')
        t_full = med(ours) if 'full' in PARTS else None
        res = {}
        for i in range(RUNS):
            for frac in (0, 0.01, 0.10):
                written = dirty(mon, frac) if frac else 0
                os.sync()
                t, b = our_backup('incremental')
                res.setdefault(frac, []).append((t, b['data_bytes'], written))
                log(f'  incremental {frac * 100:.0f} %: {t:.3f} s, {b["data_bytes"]} bytes '
                    f'(written {written})')
        t0 = med([x[0] for x in res[0]])
        for frac in (0, 0.01, 0.10):
            t = med([x[0] for x in res[frac]])
            nb = med([x[1] for x in res[frac]])
            extra = ''
            if t_full:
                extra = f'time {t / t_full * 100:.1f} % of the full, marginal {(t - t0) / (t_full - t0) * 100:.1f} %'
            rows.append((f'incremental {frac * 100:.0f} % dirty', f'{t:.3f} s',
                         f'{nb / 1048576:.1f} MiB ({nb / SIZE * 100:.2f} % of the disk)', extra))

    if 'lat' in PARTS:
        idle = latencies(mon, lambda: True, lambda: False, limit=400)
        # during our pull: between the fleece job's start and its export's deletion
        mon.events.clear()
        state = {'on': False, 'off': False}

        def scan():
            for e in mon.events:
                dd = e.get('data', {})
                if (e['event'] == 'JOB_STATUS_CHANGE' and dd.get('status') == 'running'
                        and dd.get('id', '').startswith('blockvault-tmp-')):
                    state['on'] = True
                if (e['event'] == 'BLOCK_EXPORT_DELETED'
                        and dd.get('id', '').startswith('blockvault-tmp-')):
                    state['off'] = True
            return state
        os.sync()
        after = head_seq()
        r = api('POST', '/drives/vm/backups', {'kind': 'full'})
        during = latencies(mon, lambda: scan()['on'] and not scan()['off'],
                           lambda: scan()['off'])
        wait_completed(r['job']['id'], after)
        os.sync()
        ux.up()
        out = f'{W}/user-out.qcow2'
        cp = subprocess.Popen(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', ux.uri, out])
        theirs = latencies(mon, lambda: cp.poll() is None, lambda: cp.poll() is not None)
        cp.wait()
        ux.down()
        os.unlink(out)
        im, dm, tm = med(idle), med(during), med(theirs)
        rows += [
            ('guest 64 KiB write, idle', f'median {im * 1e3:.2f} ms', f'p90 {p90(idle) * 1e3:.2f} ms', f'{len(idle)} writes'),
            ('… during our full pull', f'median {dm * 1e3:.2f} ms', f'p90 {p90(during) * 1e3:.2f} ms', f'{len(during)} writes, median {dm / im:.2f}x idle'),
            ('… during qemu-img convert of the export', f'median {tm * 1e3:.2f} ms', f'p90 {p90(theirs) * 1e3:.2f} ms', f'{len(theirs)} writes, median {tm / im:.2f}x idle'),
        ]

    print(f'\n{MIB} MiB random qcow2 disk, QEMU {subprocess.check_output(["qemu-system-x86_64", "--version"], text=True).split()[3]}, '
          f'{RUNS} rounds, medians, load average at the end {os.getloadavg()[0]:.1f}\n')
    print('| case | time | rate / size | ratio |')
    print('|---|---|---|---|')
    for r in rows:
        print('| ' + ' | '.join(r) + ' |')


try:
    main()
finally:
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
PY
