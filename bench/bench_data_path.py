#!/usr/bin/env python3
"""Write throughput through PUT /api/v1/drives/{id}/data against plain pwrite of the same
data to a file on the same disk, in one run.  Prints MB/s and the ratio (ours/plain time).

Usage: bench/bench_data_path.py [BLOCKVAULT_BINARY] [--mib N] [--chunk-mib C]
The daemon is started on a free port with a temporary data directory and stopped after.
"""
import http.client, os, shutil, subprocess, sys, tempfile, time

def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    opts = dict(a[2:].split('=') for a in sys.argv[1:] if a.startswith('--'))
    binary = args[0] if args else 'build-release/service/blockvault'
    mib = int(opts.get('mib', 512))
    chunk = int(opts.get('chunk-mib', 8)) << 20
    total = mib << 20
    data = os.urandom(chunk)
    work = tempfile.mkdtemp(prefix='bv-bench-')
    try:
        plain = os.path.join(work, 'plain.raw')
        fd = os.open(plain, os.O_RDWR | os.O_CREAT, 0o644)
        t = time.time()
        for off in range(0, total, chunk):
            os.pwrite(fd, data, off)
        os.fdatasync(fd)
        t_plain = time.time() - t
        os.close(fd)

        p = subprocess.Popen([binary, 'serve', '--listen', '127.0.0.1:0', '--data', work + '/var'],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = int(p.stdout.readline().strip().rsplit(':', 1)[1])
        try:
            c = http.client.HTTPConnection('127.0.0.1', port)
            rows = [('plain pwrite + fdatasync', t_plain)]
            for fmt in ('raw', 'qcow2'):
                c.request('POST', '/api/v1/drives', body='{"id":"b%s","format":"%s","size":%d}' % (fmt, fmt, total))
                r = c.getresponse(); r.read(); assert r.status == 201, r.status
                t = time.time()
                for off in range(0, total, chunk):
                    last = off + chunk >= total
                    c.request('PUT', '/api/v1/drives/b%s/data?offset=%d%s' % (fmt, off, '&flush=true' if last else ''),
                              body=data, headers={'Content-Type': 'application/octet-stream'})
                    r = c.getresponse(); r.read(); assert r.status == 204, r.status
                rows.append(('PUT /data, %s drive (flush at end)' % fmt, time.time() - t))
        finally:
            p.terminate(); p.wait()
        print('%d MiB in %d MiB requests' % (mib, chunk >> 20))
        print('%-38s %8s %9s %7s' % ('path', 'seconds', 'MB/s', 'ratio'))
        for name, secs in rows:
            print('%-38s %8.3f %9.1f %7.2f' % (name, secs, total / secs / 1e6, secs / t_plain))
    finally:
        shutil.rmtree(work)

main()
