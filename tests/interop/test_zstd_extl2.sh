#!/bin/bash
# The two qcow2 variants qemu-img makes that we used to refuse, both ways:
# compression_type=zstd (zstd frames in compressed clusters) and
# extended_l2=on (128-bit L2 entries, 32 subclusters per cluster).
#   qemu -> ours: images qemu-img/qemu-io made (patterns, partial-subcluster
#     writes, zero writes, discards, a backing file, compressed converts) read
#     byte-exact by bvimg, pass `bvimg check`, and map (block status, one run
#     per subcluster run) as `qemu-img map` maps them; bvimg writes into them
#     leave them valid for `qemu-img check` and equal to the reference.
#   ours -> qemu: images bvimg creates and writes (create -o, io, convert -c)
#     pass `qemu-img check` and `qemu-img compare` with the raw reference,
#     and qemu-img info reports the variant.
. "$(dirname "$0")/lib.sh"

SIZE=$((8 << 20))
base=$T/base.qcow2
qemu-img create -q -f qcow2 "$base" "$SIZE"
qemu-io -c "write -P 0x11 0 8M" -c "write -P 0x12 3M 1M" "$base" >/dev/null

# Sub-cluster sized and aligned (2k subclusters at 64k, 512 at 16k) and not.
cmds=(
    "write -P 0x22 4k 2k"
    "write -P 0x23 5k 1k"
    "write -P 0x33 100k 70k"
    "write -P 0x34 131071 3"
    "write -z 512k 64k"
    "write -z 640k 4k"
    "write -z 700k 1000"
    "discard 1M 64k"
    "write -P 0x44 2M 1M"
    "write -P 0x45 2100k 3k"
    "write -P 0x46 3M 512"
    "write -P 0x47 5M 129k"
    "write -P 0x48 8388096 512"
)

# ref RAW [BACKING]: the raw reference (backing content, then cmds via qemu-io).
ref() {
    if [ -n "${2:-}" ]; then
        qemu-img convert -O raw "$2" "$1"
    else
        qemu-img create -q -f raw "$1" "$SIZE"
    fi
    qio_ref "$1" "${cmds[@]}"
}

# qmap IMG: qemu-img map, file column reduced to its base name.
qmap() { qemu-img map "$1" | awk 'NR > 1 { n = split($4, p, "/"); print $1, $2, $3, p[n] }'; }
bmap() { "$BVIMG" map "$1" | awk 'NR > 1 { n = split($4, p, "/"); print $1, $2, $3, p[n] }'; }

# ours_read IMG RAW [nomap]: bvimg reads, checks and (unless compressed: qemu-img
# map has no human form for those) maps a qemu-made image as qemu does.
ours_read() {
    bsame "$1" "$2"
    local out
    out=$(bv check "$1" 2>&1) || fail "bvimg check $1: $out"
    [ -n "${3:-}" ] || [ "$(bmap "$1")" = "$(qmap "$1")" ] || fail "bvimg map $1 differs from qemu-img map:
$(diff <(bmap "$1") <(qmap "$1") | head -10)"
}

# qio IMG CMD...: qemu-io commands on a qcow2.
qio() {
    local img=$1 args=() c
    shift
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io "${args[@]}" "$img" >"$T/.qio2-out" 2>&1 || fail "qemu-io on $img: $(tail -3 "$T/.qio2-out")"
}

note "qemu -> ours: extended_l2 with a backing file"
for cs in 16k 64k 2M; do
    img=$T/q-ext-$cs.qcow2
    qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$cs -b "$base" -F qcow2 "$img"
    qio "$img" "${cmds[@]}"
    qemu-img convert -O raw "$img" "$T/q-ext.raw"
    ours_read "$img" "$T/q-ext.raw"
    # qemu ignores a discard of part of a cluster (2M), our reference zeroes it:
    # what qemu reads is the reference for the writes below
    cp "$T/q-ext.raw" "$T/r.raw"
    # bvimg writes into qemu's image: partial subclusters, owned and fresh clusters
    more=("write -P 0x55 4608 100" "write -P 0x56 110k 40k" "write -P 0x57 6M 1M" "write -z 2M 128k")
    bio "$img" "${more[@]}"
    qio_ref "$T/r.raw" "${more[@]}"
    qcheck "$img"
    qsame "$img" qcow2 "$T/r.raw"
    rm -f "$img"
done

note "qemu -> ours: extended_l2 without backing"
img=$T/q-ext-nb.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on "$img" "$SIZE"
qio "$img" "${cmds[@]}"
ref "$T/r.raw"
ours_read "$img" "$T/r.raw"

note "qemu -> ours: compressed (zstd, zstd + extended_l2, zlib + extended_l2)"
head -c 3000000 /dev/urandom >"$T/mix.raw"
yes blockvault | head -c 2000000 >>"$T/mix.raw"
truncate -s "$SIZE" "$T/mix.raw"
for o in compression_type=zstd compression_type=zstd,extended_l2=on extended_l2=on; do
    img=$T/q-c.qcow2
    qemu-img convert -c -f raw -O qcow2 -o "$o" "$T/mix.raw" "$img"
    ours_read "$img" "$T/mix.raw" nomap
    # overwrite parts of compressed clusters through bvimg
    cp "$T/mix.raw" "$T/mixw.raw"
    bio "$img" "write -P 0x9 70k 3k" "write -P 0xa 4M 100k" "write -z 6M 64k"
    qio_ref "$T/mixw.raw" "write -P 0x9 70k 3k" "write -P 0xa 4M 100k" "write -z 6M 64k"
    qcheck "$img"
    qsame "$img" qcow2 "$T/mixw.raw"
    rm -f "$img"
done

note "ours -> qemu: create -o extended_l2=on, written by bvimg io"
for cs in 16k 64k 2M; do
    for b in "" "$base"; do
        img=$T/o-ext.qcow2
        rm -f "$img"
        if [ -n "$b" ]; then
            bv create -q -f qcow2 -o extended_l2=on,cluster_size=$cs -b "$b" -F qcow2 "$img" ||
                { fail "create ext $cs backing"; continue; }
        else
            bv create -q -f qcow2 -o extended_l2=on,cluster_size=$cs "$img" "$SIZE" ||
                { fail "create ext $cs"; continue; }
        fi
        qemu-img info "$img" | grep -q 'extended l2: true' || fail "$cs: qemu-img sees no extended L2"
        bio "$img" "${cmds[@]}"
        ref "$T/r.raw" "$b"
        qcheck "$img"
        qsame "$img" qcow2 "$T/r.raw"
        bsame "$img" "$T/r.raw"
        # the same commands by qemu-io on qemu's own image read the same
        q=$T/o-theirs.qcow2
        rm -f "$q"
        if [ -n "$b" ]; then
            qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$cs -b "$b" -F qcow2 "$q"
        else
            qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$cs "$q" "$SIZE"
        fi
        qio "$q" "${cmds[@]/#discard/write -z}"
        out=$(qemu-img compare "$img" "$q" 2>&1) || fail "$cs ${b:+backing}: ours and qemu's differ: $out"
    done
done

note "ours -> qemu: convert -c -o compression_type=zstd[,extended_l2=on]"
for o in compression_type=zstd compression_type=zstd,extended_l2=on extended_l2=on; do
    img=$T/o-c.qcow2
    rm -f "$img"
    bv convert -c -f raw -O qcow2 -o "$o" "$T/mix.raw" "$img" || { fail "convert -c -o $o"; continue; }
    qcheck "$img"
    qsame "$img" qcow2 "$T/mix.raw"
    info=$(qemu-img info "$img")
    case $o in *zstd*) grep -q 'compression type: zstd' <<<"$info" || fail "$o: not zstd";; esac
    case $o in *extended_l2*) grep -q 'extended l2: true' <<<"$info" || fail "$o: not extended L2";; esac
    comp=$(qemu-img check "$img" 2>&1 | grep -o '[0-9.]*% compressed' | head -1)
    [ "${comp%%%*}" != "0.00" ] && [ -n "$comp" ] || fail "$o: no compressed clusters ($comp)"
done

note "refusals keep their words"
expect_status 1 bv create -q -f qcow2 -o extended_l2=on,cluster_size=8k "$T/x.qcow2" 1M
msg=$("$BVIMG" create -q -f qcow2 -o extended_l2=on,cluster_size=8k "$T/x.qcow2" 1M 2>&1)
grep -q "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes" <<<"$msg" ||
    fail "extended_l2 with 8k clusters: '$msg'"
msg=$("$BVIMG" create -q -f qcow2 -o compat=0.10,compression_type=zstd "$T/x.qcow2" 1M 2>&1)
grep -q "Non-zlib compression type is only supported with compatibility level 1.1" <<<"$msg" ||
    fail "zstd with compat=0.10: '$msg'"
finish
