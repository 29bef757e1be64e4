#!/bin/bash
# Backing chains three deep, both ways: a chain built and written by bvimg
# is checked and compared by qemu-img, and a chain built by qemu-img/qemu-io
# is read back by bvimg.  Also: convert flattens a chain (plain and
# compressed), map agrees with qemu-img map, rebase -u rewrites the link.
. "$(dirname "$0")/lib.sh"

SIZE=$((32 << 20))
base_cmds=("write -P 0x41 0 512" "write -P 0xd5 1M 32k" "write -P 0x10 4M 8M" "write -P 0x12 20M 2M")
mid_cmds=("write -P 0xdc 30M 124k" "write -P 0x20 5M 64k" "write -z 21M 64k" "discard 6M 1M")
top_cmds=("write -P 0x30 4M 4k" "write -z 8M 128k" "discard 20M 64k" "write -P 0x31 0 1"
          "write -P 0x32 31M 1M")
ref=$T/ref.raw
qemu-img create -q -f raw "$ref" "$SIZE"
qio_ref "$ref" "${base_cmds[@]}" "${mid_cmds[@]}" "${top_cmds[@]}"

# map_equal A B: same extents; a zero run's host offset (kept space) is not compared.
map_equal() {
    python3 - "$1" "$2" <<'PY'
import json, sys
def norm(path):
    out = []
    for e in json.load(open(path)):
        if e["zero"] and not e["data"]:
            e.pop("offset", None)
        out.append(e)
    return out
a, b = norm(sys.argv[1]), norm(sys.argv[2])
if a != b:
    for x, y in zip(a, b):
        if x != y:
            print("qemu:", x, "\nbvimg:", y, file=sys.stderr)
            break
    print(len(a), "vs", len(b), "entries", file=sys.stderr)
    sys.exit(1)
PY
}

check_chain() {   # DIR: base/mid/top in DIR must equal ref through every tool
    local d=$1 f
    for f in base mid top; do qcheck "$d/$f.qcow2"; done
    qsame "$d/top.qcow2" qcow2 "$ref"
    bsame "$d/top.qcow2" "$ref"
    qemu-img map --output=json "$d/top.qcow2" >"$T/qmap.json"
    bv map --output=json "$d/top.qcow2" >"$T/bmap.json" || fail "bvimg map $d"
    map_equal "$T/qmap.json" "$T/bmap.json" || fail "map of $d/top differs from qemu-img map"
    for c in "" "-c"; do
        rm -f "$T/flat.qcow2"
        bv convert $c -O qcow2 "$d/top.qcow2" "$T/flat.qcow2" || { fail "convert $c $d"; continue; }
        qcheck "$T/flat.qcow2"
        qsame "$T/flat.qcow2" qcow2 "$ref"
        qemu-img info "$T/flat.qcow2" | grep -q '^backing file' && fail "flattened image has a backing file"
    done
}

note "chain made by bvimg"
d=$T/ours; mkdir "$d"
bv create -q -f qcow2 "$d/base.qcow2" "$SIZE" || fail "create base"
bv create -q -f qcow2 -b base.qcow2 -F qcow2 "$d/mid.qcow2" || fail "create mid"
bv create -q -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 "$d/top.qcow2" || fail "create top"
[ "$(qemu-img info --output=json "$d/top.qcow2" | grep -c '"virtual-size": '$SIZE)" = 1 ] ||
    fail "overlay without size did not take the backing size"
bio "$d/base.qcow2" "${base_cmds[@]}"
bio "$d/mid.qcow2" "${mid_cmds[@]}"
bio "$d/top.qcow2" "${top_cmds[@]}"
check_chain "$d"

note "chain made by qemu-img"
d=$T/theirs; mkdir "$d"
qemu-img create -q -f qcow2 "$d/base.qcow2" "$SIZE"
qemu-img create -q -f qcow2 -o cluster_size=128k -b base.qcow2 -F qcow2 "$d/mid.qcow2"
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$d/top.qcow2"
qemu-io -c "${base_cmds[0]}" -c "${base_cmds[1]}" -c "${base_cmds[2]}" -c "${base_cmds[3]}" \
    "$d/base.qcow2" >/dev/null
for c in "${mid_cmds[@]}"; do qemu-io -c "$c" "$d/mid.qcow2" >/dev/null; done
for c in "${top_cmds[@]}"; do qemu-io -c "$c" "$d/top.qcow2" >/dev/null; done
# qemu discards only whole clusters; the reference zeroes, so zero the rest the same way
qemu-io -c "write -z 6M 1M" "$d/mid.qcow2" >/dev/null
qemu-io -c "write -z 20M 64k" "$d/top.qcow2" >/dev/null
check_chain "$d"

note "writes through bvimg into the qemu-made top keep the chain valid"
bio "$d/top.qcow2" "write -P 0x44 4M 12k" "write -z 1M 4k"
qio_ref "$ref" "write -P 0x44 4M 12k" "write -z 1M 4k"
qcheck "$d/top.qcow2"
qsame "$d/top.qcow2" qcow2 "$ref"

note "rebase -u"
mv "$d/base.qcow2" "$d/renamed.qcow2"
bv rebase -u -b renamed.qcow2 -F qcow2 "$d/mid.qcow2" || fail "rebase -u"
qemu-img info "$d/mid.qcow2" | grep -q '^backing file: renamed.qcow2' || fail "rebase did not rewrite the name"
qcheck "$d/mid.qcow2"
qsame "$d/top.qcow2" qcow2 "$ref"
finish
