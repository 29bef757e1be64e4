#!/bin/bash
# Images QEMU makes must read back byte-identical through bvimg: qcow2 from
# `qemu-img create` with cluster-size, compat=0.10 and refcount_bits
# variations and from `qemu-img convert -c`, written with qemu-io.  bvimg
# convert -O raw must equal the qemu-io reference, bvimg compare must agree
# with qemu-img compare (identical and one-byte-different cases, same
# offset), and after writes through `bvimg io` qemu-img check stays clean
# and qemu-img compare still matches a reference given the same writes.
. "$(dirname "$0")/lib.sh"

SIZE=$((48 << 20))
mapfile -t rand_cmds < <(random_writes 777 16 "$SIZE")
cmds=("write -P 0x41 0 512" "write -P 0xd5 1M 32k" "write -P 0xdc 32M 124k"
      "${rand_cmds[@]}" "write -z 2M 1M" "write -P 0x5a 47M 1M")
ours=("write -P 0x61 1M 4096" "write -P 0x62 12345 54321" "write -z 32M 64k"
      "discard 40M 4M" "write -P 0x63 47M 512" "flush")

ref=$T/ref.raw
qemu-img create -q -f raw "$ref" "$SIZE"
qio_ref "$ref" "${cmds[@]}"
qio_args=()
for c in "${cmds[@]}"; do qio_args+=(-c "$c"); done

# compare_agrees A B: bvimg compare and qemu-img compare give the same status and line.
compare_agrees() {
    local q b qs=0 bs=0
    q=$(qemu-img compare "$1" "$2" 2>&1) || qs=$?
    b=$(bv compare "$1" "$2" 2>&1) || bs=$?
    [ "$qs" = "$bs" ] && [ "$q" = "$b" ] || fail "compare $1 $2: qemu ($qs) '$q' vs bvimg ($bs) '$b'"
}

variant() {   # NAME CREATE-OPTIONS
    local name=$1 img=$T/$1.qcow2 r2=$T/$1.ref
    note "$name"
    qemu-img create -q -f qcow2 -o "$2" "$img" "$SIZE" || { fail "qemu-img create $2"; return; }
    qemu-io "${qio_args[@]}" "$img" >/dev/null || fail "qemu-io on $img"
    bsame "$img" "$ref"
    compare_agrees "$img" "$ref"
    cp "$ref" "$r2"
    printf '\x99' | dd of="$r2" bs=1 seek=$((33 << 20)) conv=notrunc status=none
    compare_agrees "$img" "$r2"
    bv info "$img" >/dev/null || fail "bvimg info $img"
    # our writes on their image
    cp "$ref" "$r2"
    qio_ref "$r2" "${ours[@]}"
    bio "$img" "${ours[@]}"
    qcheck "$img"
    qsame "$img" qcow2 "$r2"
    rm -f "$img" "$r2"
}

variant c512 cluster_size=512
variant c4k cluster_size=4k
variant c64k cluster_size=64k
variant c128k cluster_size=128k
variant c2M cluster_size=2M
variant v2 compat=0.10
variant v2c4k compat=0.10,cluster_size=4k
variant rc1 refcount_bits=1
variant rc64 refcount_bits=64
variant rc8c512 refcount_bits=8,cluster_size=512

note "qemu-img convert -c"
for cs in 4k 64k 2M; do
    comp=$T/comp-$cs.qcow2
    qemu-img convert -c -f raw -O qcow2 -o cluster_size=$cs "$ref" "$comp"
    bsame "$comp" "$ref"
    compare_agrees "$comp" "$ref"
    qemu-img map --output=json "$comp" | grep -q '"data": true' || fail "no data in $comp"
    bio "$comp" "${ours[@]}"
    qcheck "$comp"
    rm -f "$comp"
done

note "size mismatch: zero tail is identical, data tail is not"
qemu-img create -q -f qcow2 "$T/big.qcow2" $((SIZE + (1 << 20)))
qemu-io "${qio_args[@]}" "$T/big.qcow2" >/dev/null
compare_agrees "$T/big.qcow2" "$ref"
qemu-io -c "write -P 1 $((SIZE + 4096)) 512" "$T/big.qcow2" >/dev/null
compare_agrees "$T/big.qcow2" "$ref"
compare_agrees "$ref" "$T/big.qcow2"
expect_status 1 bv compare -s "$T/big.qcow2" "$ref"
finish
