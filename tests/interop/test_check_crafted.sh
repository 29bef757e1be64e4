#!/bin/bash
# bvimg check against qemu-img check on images qemu-img makes or we craft
# (issue 9, defect 9): a refcount table whose entries point far outside the
# file is one error per bad block (and bounded work: the old comparison
# walked every cluster such an entry covers), images with internal
# snapshots check clean (the snapshot table and L1 trees are counted, so
# refcounts of 2 are no leak), and cluster_size=0 is refused.
. "$(dirname "$0")/lib.sh"

# counts IMG: the "N errors"/"N leaked clusters" summary lines of a check.
counts() { grep -E 'errors were found|leaked clusters were found|No errors' || true; }

note "reftable entries pointing outside the file"
img=$T/crafted.qcow2
qemu-img create -q -f qcow2 "$img" 1M
qemu-io -f qcow2 -c "write -P 1 0 64k" "$img" >/dev/null
python3 - "$img" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(112)
rt = struct.unpack(">Q", h[48:56])[0]
f.seek(rt + 8)   # entries 1..8191: huge, cluster-aligned offsets; entry 0 stays valid
for i in range(1, 8192):
    f.write(struct.pack(">Q", 0x100000000000 + i * 0x10000))
PY
rc=0; qemu-img check "$img" >"$T/q.out" 2>"$T/q.err" || rc=$?
[ "$rc" -eq 2 ] || fail "qemu-img check of the crafted image exited $rc"
rc=0; bv check "$img" >"$T/b.out" 2>"$T/b.err" || rc=$?
[ "$rc" -eq 2 ] || fail "bvimg check of the crafted image exited $rc, expected 2"
[ "$(counts <"$T/b.out")" = "8191 errors were found on the image." ] ||
    fail "bvimg check summary: $(counts <"$T/b.out")"
[ "$(counts <"$T/b.out")" = "$(counts <"$T/q.out")" ] || fail "summaries differ from qemu-img"
[ "$(head -1 "$T/b.err")" = "ERROR refcount block 1 is outside image" ] ||
    fail "first message: $(head -1 "$T/b.err")"
n=$(grep -c 'is outside image' "$T/b.err")
[ "$n" -eq 64 ] || fail "$n 'outside image' messages (want the first 64, one per bad block)"
grep -v 'is outside image' "$T/b.err" | grep -q ERROR && fail "other errors: $(grep -v 'outside' "$T/b.err" | head -2)"
# the same image with one bad entry only: one corruption, one message
python3 - "$img" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
rt = struct.unpack(">Q", f.read(112)[48:56])[0]
f.seek(rt + 16)
f.write(b"\0" * 8 * 8190)   # entries 2..8191 cleared, entry 1 still bad
PY
rc=0; bv check "$img" >"$T/b.out" 2>"$T/b.err" || rc=$?
[ "$rc" -eq 2 ] || fail "one bad entry: exit $rc"
[ "$(counts <"$T/b.out")" = "1 errors were found on the image." ] || fail "one bad entry: $(counts <"$T/b.out")"
[ "$(cat "$T/b.err")" = "ERROR refcount block 1 is outside image" ] || fail "one bad entry: $(cat "$T/b.err")"

note "internal snapshots"
img=$T/snap.qcow2
qemu-img create -q -f qcow2 "$img" 4M
qemu-io -f qcow2 -c "write -P 1 0 1M" "$img" >/dev/null
qemu-img snapshot -c s1 "$img"
qemu-io -f qcow2 -c "write -P 2 512k 1M" -c "write -c -P 3 2M 64k" "$img" >/dev/null
qemu-img snapshot -c second "$img"
qemu-io -f qcow2 -c "write -P 4 3M 64k" -c "write -P 5 0 4k" "$img" >/dev/null
qcheck "$img"
rc=0; bv check "$img" >"$T/b.out" 2>"$T/b.err" || rc=$?
[ "$rc" -eq 0 ] || fail "bvimg check of a snapshot image exited $rc: $(head -3 "$T/b.err")"
[ "$(counts <"$T/b.out")" = "No errors were found on the image." ] || fail "snapshots: $(counts <"$T/b.out")"
[ -s "$T/b.err" ] && fail "snapshots: messages: $(head -3 "$T/b.err")"
# deleting a snapshot drops its references again: still clean for both tools
qemu-img snapshot -d second "$img"
qcheck "$img"
expect_status 0 bv check "$img"

note "cluster_size=0"
rc=0; bv create -q -f qcow2 -o cluster_size=0 "$T/cs0.qcow2" 1M 2>"$T/e" || rc=$?
[ "$rc" -eq 1 ] || fail "create cluster_size=0 exited $rc"
grep -qx "bvimg: $T/cs0.qcow2: Cluster size must be a power of two between 512 and 2048k" "$T/e" ||
    fail "create cluster_size=0 said: $(cat "$T/e")"
qemu-img create -q -f raw "$T/s.raw" 1M
rc=0; bv convert -O qcow2 -o cluster_size=0 "$T/s.raw" "$T/cs0.qcow2" 2>"$T/e" || rc=$?
[ "$rc" -eq 1 ] || fail "convert cluster_size=0 exited $rc"
grep -q "Cluster size must be a power of two between 512 and 2048k" "$T/e" ||
    fail "convert cluster_size=0 said: $(cat "$T/e")"
finish
