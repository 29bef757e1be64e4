#!/bin/bash
# Images bvimg creates and writes must be valid for QEMU: for each cluster
# size, a qcow2 written through `bvimg io` (patterns, random extents, zero
# writes, discards) passes `qemu-img check` with no error and no leak and is
# `qemu-img compare`-identical to a raw reference that qemu-io built with the
# same commands.  bvimg's own compare/convert agree, and a compressed convert
# of the result is valid and identical too.
. "$(dirname "$0")/lib.sh"

SIZE=$((64 << 20))
base_cmds=(
    "write -P 0x41 0 512"
    "write -P 0xd5 1M 32k"
    "write -P 0xdc 32M 124k"
)
mapfile -t rand_cmds < <(random_writes 4242 24 "$SIZE")
tail_cmds=(
    "write -z 1056k 8k"
    "write -z 40M 3M"
    "discard 32M 64k"
    "discard 10M 1M"
    "write -P 0x11 10M 4097"
    "write -z 0 1"
    "write -P 0x7f 63M 1M"
    "flush"
)
cmds=("${base_cmds[@]}" "${rand_cmds[@]}" "${tail_cmds[@]}")

ref=$T/ref.raw
qemu-img create -q -f raw "$ref" "$SIZE"
qio_ref "$ref" "${cmds[@]}"

for cs in 512 4k 64k 128k 2M; do
    note "cluster_size=$cs"
    img=$T/img-$cs.qcow2
    bv create -q -f qcow2 -o cluster_size=$cs "$img" "$SIZE" || { fail "create $cs"; continue; }
    bio "$img" "${cmds[@]}"
    qcheck "$img"
    qsame "$img" qcow2 "$ref"
    bsame "$img" "$ref"
    # pattern checks through bvimg io pass or fail exactly as qemu-io's on the reference
    for rc in "read -P 0x41 1 511" "read -P 0xdc 33M 60k" "read -P 0x7f 63M 1M" "read -P 0 40M 3M"; do
        qs=0; bs=0
        qemu-io -r -f raw -c "$rc" "$ref" >/dev/null 2>&1 || qs=$?
        bv io -r -c "$rc" "$img" >/dev/null || bs=$?
        [ "$qs" = "$bs" ] || fail "'$rc' on $img: bvimg $bs, qemu-io $qs"
    done

    comp=$T/comp-$cs.qcow2
    if bv convert -c -O qcow2 -o cluster_size=$cs "$img" "$comp"; then
        qcheck "$comp"
        qsame "$comp" qcow2 "$ref"
    else
        fail "convert -c $cs"
    fi
    rm -f "$img" "$comp"
done

note "raw target"
raw=$T/img.raw
bv create -q -f raw "$raw" "$SIZE" && bio "$raw" "${cmds[@]}"
cmp -s "$raw" "$ref" || fail "raw written by bvimg io differs from the qemu-io reference"

note "v2 (compat=0.10) written by bvimg"
v2=$T/v2.qcow2
bv create -q -f qcow2 -o compat=0.10 "$v2" "$SIZE" && bio "$v2" "${cmds[@]}"
qcheck "$v2"
qsame "$v2" qcow2 "$ref"
qemu-img info "$v2" | grep -q 'compat: 0.10' || fail "v2 image is not compat 0.10"

note "durable convert to qcow2 and raw"
bv create -q -f qcow2 "$T/d.qcow2" "$SIZE" && bio "$T/d.qcow2" "${cmds[@]}"
bv convert -t none -O qcow2 "$T/d.qcow2" "$T/d2.qcow2" || fail "convert -t none"
qcheck "$T/d2.qcow2"
qsame "$T/d2.qcow2" qcow2 "$ref"
bv convert -O raw -f qcow2 "$T/d.qcow2" "$T/d.raw" && cmp -s "$T/d.raw" "$ref" ||
    fail "convert to raw"
finish
