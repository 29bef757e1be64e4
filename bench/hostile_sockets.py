#!/usr/bin/env python3
"""Lockout check: N sockets that never finish their headers, then a fresh
GET /api/v1/health and an authenticated PUT …/data, timed.  Also reports how
long the server keeps a silent half-request open (its connection timeout).

Starts its own daemon (BV_DAEMON, default build-release/service/blockvault)
on a free port with a temporary data directory and a token.

    bench/hostile_sockets.py [N]          # default 500
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "bench-token"


def start(daemon, data):
    tok = os.path.join(data, "token")
    with open(tok, "w") as f:
        f.write(TOKEN + "\n")
    p = subprocess.Popen([daemon, "serve", "--listen", "127.0.0.1:0", "--data", data,
                          "--token-file", tok], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    port = int(re.search(r":(\d+)$", line.strip()).group(1))
    return p, port


def call(port, method, path, body=None, ctype="application/json", timeout=30):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": ctype})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception as e:                     # timeout, reset: the lockout itself
        status = type(e).__name__
    return status, time.monotonic() - t0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    daemon = os.environ.get("BV_DAEMON", "build-release/service/blockvault")
    with tempfile.TemporaryDirectory() as data:
        p, port = start(daemon, data)
        try:
            call(port, "POST", "/api/v1/drives",
                 b'{"id":"d0","format":"raw","size":"1M"}')
            socks = []
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            st, t = call(port, "GET", "/api/v1/health")
            print(f"{n} hostile sockets open: GET /health -> {st} in {t * 1000:.1f} ms")
            st, t = call(port, "PUT", "/api/v1/drives/d0/data?offset=0", b"\x42" * 65536,
                         "application/octet-stream")
            print(f"  authenticated 64 KiB PUT /data -> {st} in {t * 1000:.1f} ms")
            t0 = time.monotonic()
            s = socks[0]
            s.settimeout(60)
            try:
                s.recv(1)
            except OSError:
                pass
            print(f"  a silent half-request is closed by the server after "
                  f"{time.monotonic() - t0:.1f} s")
            for s in socks:
                s.close()
        finally:
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
