#!/bin/bash
# Malformed images must give an error exit, never a crash: truncated files,
# corrupted table offsets, absurd sizes and geometry, backing loops, a
# compressed descriptor past the end of the file, unknown feature bits, and
# a batch of seeded random byte flips in the metadata.  Every bvimg command
# run here must exit below 128 with no sanitizer report (bv() checks that);
# the clearly invalid ones must also exit non-zero.
. "$(dirname "$0")/lib.sh"

PY=$T/craft.py
cat >"$PY" <<'PYEOF'
# craft.py IMAGE ACTION [ARG]: damage a qcow2 image in place.
import random, struct, sys
path, action = sys.argv[1], sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else None
f = open(path, "r+b")
h = f.read(112)
cluster_bits = struct.unpack(">I", h[20:24])[0]
l1_off = struct.unpack(">Q", h[40:48])[0]

def put(off, fmt, val):
    f.seek(off); f.write(struct.pack(fmt, val))

def get(off, fmt):
    f.seek(off); return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

def first_l2_entry(want_compressed=False):
    l2 = get(l1_off, ">Q") & 0x00fffffffffffe00
    for i in range(1 << (cluster_bits - 3)):
        e = get(l2 + 8 * i, ">Q")
        if e and (bool(e & (1 << 62)) == want_compressed):
            return l2 + 8 * i, e
    sys.exit("no such L2 entry")

if action == "size":            put(24, ">Q", int(arg, 0))
elif action == "cluster_bits":  put(20, ">I", int(arg, 0))
elif action == "l1_size":       put(36, ">I", int(arg, 0))
elif action == "l1_offset":     put(40, ">Q", int(arg, 0))
elif action == "reftable":      put(48, ">Q", int(arg, 0))
elif action == "reftable_clusters": put(56, ">I", int(arg, 0))
elif action == "incompat":      put(72, ">Q", int(arg, 0))
elif action == "refcount_order": put(96, ">I", int(arg, 0))
elif action == "header_length": put(100, ">I", int(arg, 0))
elif action == "version":       put(4, ">I", int(arg, 0))
elif action == "backing_size":  put(8, ">Q", 0x200); put(16, ">I", int(arg, 0))
elif action == "l1_entry":      put(l1_off, ">Q", int(arg, 0))
elif action == "l2_data":
    off, e = first_l2_entry()
    put(off, ">Q", (e & ~0x00fffffffffffe00) | int(arg, 0))
elif action == "l2_compressed":
    off, e = first_l2_entry(True)
    x = 62 - (cluster_bits - 8)
    put(off, ">Q", (e & ~((1 << x) - 1)) | int(arg, 0))
elif action == "flip":
    rnd = random.Random(int(arg))
    f.seek(0, 2); end = f.tell()
    l2 = get(l1_off, ">Q") & 0x00fffffffffffe00
    regions = [(0, 112), (l1_off, 64)] + ([(l2, 256)] if 0 < l2 < end else [])
    for _ in range(4):
        start, length = rnd.choice(regions)
        pos = start + rnd.randrange(length)
        f.seek(pos); b = f.read(1) or b"\0"
        f.seek(pos); f.write(bytes([b[0] ^ (1 << rnd.randrange(8))]))
PYEOF

good=$T/good.qcow2
qemu-img create -q -f qcow2 "$good" 8M
qemu-io -c "write -P 0x41 0 512" -c "write -P 0xd5 1M 32k" -c "write -P 0xdc 6M 124k" "$good" >/dev/null
comp=$T/comp.qcow2
qemu-img convert -c -O qcow2 "$good" "$comp"

# poke IMG: every read path of bvimg on IMG, crash-checked; returns convert's status
poke() {
    local rc=0
    bv info "$1" >/dev/null 2>&1
    bv info --output=json "$1" >/dev/null 2>&1
    bv check "$1" >/dev/null 2>&1
    bv map --output=json "$1" >/dev/null 2>&1
    bv compare "$1" "$1" >/dev/null 2>&1
    bv io -r -c "read 0 1M" -c "read 1M 64k" "$1" >/dev/null 2>&1
    rm -f "$T/out.raw"
    bv convert -O raw "$1" "$T/out.raw" >/dev/null 2>&1 || rc=$?
    return $rc
}

# must_fail NAME SRC ACTION ARG: the damaged image must not convert
must_fail() {
    local img=$T/$1.qcow2
    cp "$2" "$img"
    python3 "$PY" "$img" "$3" "${4:-}" || { fail "craft $1"; return; }
    if poke "$img"; then fail "$1: damaged image converted without error"; fi
    bv io -c "write -P 1 0 64k" "$img" >/dev/null 2>&1 && [ "$1" != l2_past_eof ] &&
        fail "$1: write to a damaged image succeeded"
    rm -f "$img"
}

# no_crash NAME SRC ACTION ARG: anything but a crash is acceptable
no_crash() {
    local img=$T/$1.qcow2
    cp "$2" "$img"
    python3 "$PY" "$img" "$3" "${4:-}" || { fail "craft $1"; return; }
    poke "$img" || true
    bv io -c "write -P 1 0 64k" -c "write -z 1M 1M" -c "discard 6M 1M" "$img" >/dev/null 2>&1
    rm -f "$img"
}

note "truncated"
for len in 0 50 104 65536 131072; do
    cp "$good" "$T/trunc.qcow2"
    truncate -s $len "$T/trunc.qcow2"
    if [ $len -gt 0 ] && [ $len -lt 65536 ]; then   # an empty file probes as raw
        poke "$T/trunc.qcow2" && fail "image truncated to $len bytes converted"
    else
        poke "$T/trunc.qcow2" || true
    fi
done

note "header fields"
must_fail size_absurd "$good" size 0x4000000000000000
must_fail size_huge "$good" size 0xfffffffffffffe00
must_fail cluster_bits_30 "$good" cluster_bits 30
must_fail cluster_bits_8 "$good" cluster_bits 8
must_fail l1_size_huge "$good" l1_size 0x7fffffff
must_fail l1_size_small "$good" l1_size 0
must_fail l1_unaligned "$good" l1_offset 0x30001
must_fail reftable_unaligned "$good" reftable 0x10003
must_fail reftable_huge "$good" reftable_clusters 0x7fffffff
must_fail incompat_unknown "$good" incompat 0x20
# extended L2 is a feature now: the bit on a plain image reinterprets its L2 tables,
# which qemu-img also reads without error
no_crash incompat_extl2 "$good" incompat 0x10
must_fail refcount_order_7 "$good" refcount_order 7
must_fail header_length_small "$good" header_length 64
must_fail version_4 "$good" version 4
must_fail backing_name_long "$good" backing_size 5000
no_crash l1_past_eof "$good" l1_offset 0x100000000
no_crash size_unaligned "$good" size 8388609

note "table entries"
# reserved L1 bits: QEMU reads through them, but check must report a corruption
cp "$good" "$T/l1res.qcow2"
python3 "$PY" "$T/l1res.qcow2" l1_entry 0x8000000000040100
expect_status 2 qemu-img check "$T/l1res.qcow2"
expect_status 2 bv check "$T/l1res.qcow2"
no_crash l1_reserved "$good" l1_entry 0x8000000000040100
must_fail l1_l2_unaligned "$good" l1_entry 0x8000000000040200
must_fail l2_unaligned "$good" l2_data 0x50200
no_crash l2_past_eof "$good" l2_data 0x10000000000
no_crash l2_points_at_header "$good" l2_data 0
must_fail compressed_past_eof "$comp" l2_compressed 0x100000000
no_crash compressed_at_0 "$comp" l2_compressed 0

note "backing loops"
d=$T/loop; mkdir "$d"
qemu-img create -q -f qcow2 "$d/a.qcow2" 1M
qemu-img create -q -f qcow2 -u -b a.qcow2 -F qcow2 "$d/b.qcow2" 1M
qemu-img rebase -u -b b.qcow2 -F qcow2 "$d/a.qcow2"
poke "$d/b.qcow2" && fail "backing loop a<->b converted"
qemu-img create -q -f qcow2 -u -b self.qcow2 -F qcow2 "$d/self.qcow2" 1M
poke "$d/self.qcow2" && fail "self-backing image converted"
qemu-img create -q -f qcow2 -u -b missing.qcow2 -F qcow2 "$d/orphan.qcow2" 1M
poke "$d/orphan.qcow2" && fail "image with a missing backing file converted"

note "random metadata flips"
for seed in $(seq 1 40); do
    no_crash "flip$seed" "$good" flip "$seed"
done
for seed in $(seq 41 55); do
    no_crash "cflip$seed" "$comp" flip "$seed"
done
finish
