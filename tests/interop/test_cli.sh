#!/bin/bash
# bvimg's command line matches qemu-img where scripts depend on it: exit
# codes of compare (0/1/2) and check (0 clean, 2 corrupt, 3 leaks, 63 no
# check for raw), check -r leaks repairing what qemu-img then finds clean,
# info fields, "bvimg: " error prefixes, and strict refusal of bad options.
. "$(dirname "$0")/lib.sh"

img=$T/a.qcow2
bv create -q -f qcow2 "$img" 4M || fail create
qemu-img create -q -f raw "$T/a.raw" 4M

note "compare statuses"
expect_status 0 bv compare "$img" "$T/a.raw"
bio "$img" "write -P 7 3M 1"
expect_status 1 bv compare "$img" "$T/a.raw"
[ "$(bv compare "$img" "$T/a.raw")" = "Content mismatch at offset 3145728!" ] ||
    fail "compare mismatch line"
expect_status 2 bv compare "$img" "$T/missing"
expect_status 2 bv compare -f vmdk "$img" "$T/a.raw"

note "check statuses"
expect_status 0 bv check "$img"
expect_status 63 bv check -f raw "$T/a.raw"
bv check --output=json "$img" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["check-errors"]==0 and "leaks" not in d' ||
    fail "check --output=json"
# a leak: raise the refcount of cluster 0 from 1 to 2 (16-bit refcounts, block at 0x20000)
cp "$img" "$T/leak.qcow2"
rb=$(python3 -c 'import struct,sys;f=open(sys.argv[1],"rb");f.seek(48);t=struct.unpack(">Q",f.read(8))[0];f.seek(t);print(struct.unpack(">Q",f.read(8))[0])' "$T/leak.qcow2")
printf '\x00\x02' | dd of="$T/leak.qcow2" bs=1 seek="$rb" conv=notrunc status=none
expect_status 3 qemu-img check "$T/leak.qcow2"
expect_status 3 bv check "$T/leak.qcow2"
expect_status 0 bv check -r leaks "$T/leak.qcow2"
expect_status 0 qemu-img check "$T/leak.qcow2"
# a corruption: refcount of cluster 0 becomes 0
cp "$img" "$T/bad.qcow2"
printf '\x00\x00' | dd of="$T/bad.qcow2" bs=1 seek="$rb" conv=notrunc status=none
expect_status 2 qemu-img check "$T/bad.qcow2"
expect_status 2 bv check "$T/bad.qcow2"

note "info"
bv info --output=json "$img" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["format"] == "qcow2" and d["virtual-size"] == 4 << 20 and d["cluster-size"] == 65536, d
assert d["format-specific"]["data"]["compat"] == "1.1", d' || fail "info --output=json"
bv info "$img" | grep -q '^virtual size: 4 MiB (4194304 bytes)$' || fail "info human"
bv create -q -f qcow2 -b a.qcow2 -F qcow2 "$T/top.qcow2" || fail "create overlay"
bv info "$T/top.qcow2" | grep -qxF "backing file: a.qcow2 (actual path: $T/a.qcow2)" || fail "info backing"

note "errors"
err=$("$BVIMG" info "$T/missing" 2>&1 >/dev/null); st=$?
[ $st = 1 ] && [[ "$err" == "bvimg: "* ]] || fail "info of a missing file: $st '$err'"
expect_status 1 bv create -f qcow2 "$T/x.qcow2"
expect_status 1 bv create -f qcow2 -o cluster_size=3000 "$T/x.qcow2" 1M
expect_status 1 bv create -f qcow2 -o refcount_bits=1 "$T/x.qcow2" 1M
expect_status 1 bv create -f qcow2 -b a.qcow2 "$T/x.qcow2"
expect_status 1 bv create -f qcow2 "$T/x.qcow2" 1Q
expect_status 1 bv convert -c -O raw "$img" "$T/x.raw"
expect_status 1 bv convert -O qcow2 -t bogus "$img" "$T/x.qcow2"
expect_status 1 bv io -c "bogus 0 1" "$img"
expect_status 1 bv io -c "read -P 1 0 512" "$img"
[ "$(bv io -c 'read -P 1 0 512' "$img" | head -1)" = "Pattern verification failed at offset 0, 512 bytes" ] ||
    fail "pattern mismatch message"
expect_status 1 bv io -c "read 4M 1" "$img"
expect_status 1 bv nonsense
expect_status 1 bv info -z "$img"
expect_status 1 bv map --output=xml "$img"
finish
