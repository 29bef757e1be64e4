#!/usr/bin/env python3
"""Write throughput through PUT /api/v1/drives/{id}/data against plain pwrite of the same
data to a file on the same disk, in one run.  Prints MB/s and the ratio (ours/plain time).

Usage: bench/bench_data_path.py [BLOCKVAULT_BINARY] [--mib N] [--chunk-mib C] [--runs R]
Each path runs R times (default 3), alternating, and the best time is kept.
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
        runs = int(opts.get('runs', 3))

        def plain_once():
            path = os.path.join(work, 'plain.raw')
            if os.path.exists(path):
                os.unlink(path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            t = time.time()
            for off in range(0, total, chunk):
                os.pwrite(fd, data, off)
            os.fdatasync(fd)
            dt = time.time() - t
            os.close(fd)
            return dt

        p = subprocess.Popen([binary, 'serve', '--listen', '127.0.0.1:0', '--data', work + '/var'],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = int(p.stdout.readline().strip().rsplit(':', 1)[1])
        try:
            c = http.client.HTTPConnection('127.0.0.1', port)

            def call(method, path, body=None, ctype='application/json'):
                c.request(method, path, body=body, headers={'Content-Type': ctype})
                r = c.getresponse(); r.read()
                return r.status

            def put_once(fmt, i):
                # a fresh drive each run, so every run allocates as the first did
                drive = 'b%s%d' % (fmt, i)
                assert call('POST', '/api/v1/drives', '{"id":"%s","format":"%s","size":%d}'
                            % (drive, fmt, total)) == 201
                t = time.time()
                for off in range(0, total, chunk):
                    last = off + chunk >= total
                    assert call('PUT', '/api/v1/drives/%s/data?offset=%d%s' % (drive, off, '&flush=true' if last else ''),
                                data, 'application/octet-stream') == 204
                dt = time.time() - t
                assert call('DELETE', '/api/v1/drives/%s?delete_file=true' % drive) == 204
                return dt

            best = {'plain': 1e9, 'raw': 1e9, 'qcow2': 1e9}
            for i in range(runs):
                best['plain'] = min(best['plain'], plain_once())
                for fmt in ('raw', 'qcow2'):
                    best[fmt] = min(best[fmt], put_once(fmt, i))
            t_plain = best['plain']
            rows = [('plain pwrite + fdatasync', t_plain)]
            for fmt in ('raw', 'qcow2'):
                rows.append(('PUT /data, %s drive (flush at end)' % fmt, best[fmt]))
        finally:
            p.terminate(); p.wait()
        print('%d MiB in %d MiB requests, best of %d' % (mib, chunk >> 20, runs))
        print('%-38s %8s %9s %7s' % ('path', 'seconds', 'MB/s', 'ratio'))
        for name, secs in rows:
            print('%-38s %8.3f %9.1f %7.2f' % (name, secs, total / secs / 1e6, secs / t_plain))
    finally:
        shutil.rmtree(work)

main()
