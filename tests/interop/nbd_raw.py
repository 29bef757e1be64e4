#!/usr/bin/env python3
"""A raw NBD client for tests/interop/test_nbd.sh: speaks the protocol byte
by byte so that a test can send what real clients never do (bad magic,
oversized or out-of-range requests, writes to a read-only export) and hold
a connection open.  Usage: nbd_raw.py SOCKET CASE [EXPORT]; prints one
result line per check and exits non-zero when a check fails."""
import socket, struct, sys, time

NBD_MAGIC, IHAVEOPT, REP_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
REQ, SIMPLE, STRUCT = 0x25609513, 0x67446698, 0x668E33EF
OPT_GO, OPT_STRUCTURED = 7, 8
CMD_READ, CMD_WRITE, CMD_DISC, CMD_BLOCK_STATUS = 0, 1, 2, 7
fails = 0

def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1

def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    return s

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b

def hello(s):
    magic, opt, flags = struct.unpack(">QQH", recvn(s, 18))
    assert magic == NBD_MAGIC and opt == IHAVEOPT, "bad hello"
    s.sendall(struct.pack(">I", 3))

def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
    replies = []
    while True:
        magic, o, typ, ln = struct.unpack(">QIII", recvn(s, 20))
        assert magic == REP_MAGIC
        replies.append((typ, recvn(s, ln)))
        if typ == 1 or typ & 0x80000000:
            return replies

def go(s, name, structured=False):
    hello(s)
    if structured:
        option(s, OPT_STRUCTURED)
    n = name.encode()
    r = option(s, OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    assert r[-1][0] == 1, "GO refused: %r" % (r[-1],)
    for typ, data in r:
        if typ == 3 and struct.unpack(">H", data[:2])[0] == 0:
            return struct.unpack(">QH", data[2:12])
    raise AssertionError("no NBD_INFO_EXPORT")

def request(s, cmd, off, ln, cookie, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, cmd, cookie, off, ln) + payload)

def simple_reply(s):
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE, "magic %x" % magic
    return err, cookie

def main():
    path, case = sys.argv[1], sys.argv[2]
    export = sys.argv[3] if len(sys.argv) > 3 else "drive0"
    if case == "garbage":            # not even the client flags: the server closes
        s = connect(path)
        recvn(s, 18)
        s.sendall(b"\xff" * 64)
        try:
            closed = s.recv(1) == b""
        except (ConnectionResetError, socket.timeout):
            closed = True
        check(closed, "garbage after hello closes the connection")
    elif case == "bad-options":      # malformed options get errors, negotiation goes on
        s = connect(path)
        hello(s)
        r = option(s, OPT_GO, b"\x00\x00\x10\x00abc")
        check(r[-1][0] == 0x80000003, "truncated GO: ERR_INVALID (%x)" % r[-1][0])
        r = option(s, 99)
        check(r[-1][0] == 0x80000001, "unknown option: ERR_UNSUP")
        r = option(s, OPT_GO, struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0))
        check(r[-1][0] == 0x80000006, "unknown export: ERR_UNKNOWN")
        r = option(s, 10, struct.pack(">I", 6) + b"drive0" + struct.pack(">I", 0))
        check(r[-1][0] == 0x80000003, "SET_META_CONTEXT before structured: ERR_INVALID")
        s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 1 << 20) + b"\0" * (1 << 20))
        magic, o, typ, ln = struct.unpack(">QIII", recvn(s, 20))
        recvn(s, ln)
        check(typ == 0x80000009, "1 MiB option: ERR_TOO_BIG")
        size, flags = go_after_hello(s, export)
        check(size > 0, "GO still works after the errors")
    elif case == "requests":         # bad requests get errnos, the connection goes on
        s = connect(path)
        size, flags = go(s, export)
        request(s, CMD_READ, 0, 64 << 20, 1)
        check(simple_reply(s) == (22, 1), "64 MiB read: EINVAL")
        request(s, CMD_READ, size - 512, 1024, 2)
        check(simple_reply(s) == (22, 2), "read past the end: EINVAL")
        request(s, CMD_READ, (1 << 64) - 512, 1024, 3)
        check(simple_reply(s) == (22, 3), "read at 2^64-512: EINVAL")
        big = (32 << 20) + 4096
        request(s, CMD_WRITE, 0, big, 4, payload=b"\x5a" * big)
        check(simple_reply(s) == (22, 4), "32 MiB + 4 KiB write: EINVAL, payload skipped")
        request(s, CMD_WRITE, size, 512, 5, payload=b"\x5a" * 512)
        check(simple_reply(s) == (22, 5), "write past the end: EINVAL")
        request(s, CMD_BLOCK_STATUS, 0, 4096, 6)
        check(simple_reply(s) == (22, 6), "BLOCK_STATUS without contexts: EINVAL")
        request(s, 42, 0, 0, 7)
        check(simple_reply(s) == (22, 7), "unknown command: EINVAL")
        request(s, CMD_READ, 0, 4096, 8, flags=0x100)
        check(simple_reply(s) == (22, 8), "unknown flag: EINVAL")
        # several in flight, replies matched by cookie
        for i in range(16):
            request(s, CMD_READ, i * 4096, 4096, 100 + i)
        seen = set()
        for i in range(16):
            err, cookie = simple_reply(s)
            recvn(s, 4096)
            seen.add((err, cookie))
        check(seen == {(0, 100 + i) for i in range(16)}, "16 reads in flight all answered")
        request(s, CMD_DISC, 0, 0, 9)
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        check(closed, "DISC closes")
        s = connect(path)
        go(s, export)
        s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 1, 0, 512))
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        check(closed, "bad request magic closes")
    elif case == "readonly":         # a backup point: writes are EPERM
        s = connect(path)
        size, flags = go(s, export)
        check(flags & 2 != 0, "NBD_FLAG_READ_ONLY set")
        request(s, CMD_WRITE, 0, 512, 1, payload=b"\x11" * 512)
        check(simple_reply(s) == (1, 1), "write: EPERM")
        request(s, 6, 0, 512, 2)
        check(simple_reply(s) == (1, 2), "write zeroes: EPERM")
        request(s, 4, 0, 512, 3)
        check(simple_reply(s) == (1, 3), "trim: EPERM")
        request(s, CMD_READ, 0, 512, 4)
        err, cookie = simple_reply(s)
        recvn(s, 512)
        check(err == 0, "read still works")
    elif case == "hold":             # attach and stay until the server drops us
        s = connect(path)
        go(s, export)
        print("attached", flush=True)
        s.settimeout(None)
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        print("disconnected" if closed else "data?", flush=True)
    elif case == "silent":           # connect and say nothing
        s = connect(path)
        time.sleep(float(export))
    else:
        raise SystemExit("unknown case " + case)
    sys.exit(1 if fails else 0)

def go_after_hello(s, name):
    n = name.encode()
    r = option(s, OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    assert r[-1][0] == 1, "GO refused"
    for typ, data in r:
        if typ == 3 and struct.unpack(">H", data[:2])[0] == 0:
            return struct.unpack(">QH", data[2:12])

if __name__ == "__main__":
    main()
