#!/bin/bash
# convert must copy every byte whatever the image size: sizes that are not a
# multiple of 4 KiB (the raw granule), 64 KiB (the default cluster) or 2 MiB
# (the largest cluster) leave a partial last granule, which convert once
# dropped with exit 0 (issue 9, defect 1).  Every output format (raw, qcow2
# with clusters of 512 to 2M, compressed qcow2) is made from raw, qcow2 and
# backing-chain sources, then checked by qemu-img check, qemu-img compare
# and a byte-exact cmp of the result read back as raw.
. "$(dirname "$0")/lib.sh"

# Not 4k-aligned, 4k- but not 64k-aligned, 64k- but not 2M-aligned, 512- but not 4k-aligned.
sizes=(1000448 2166784 3342336 5245440)
outputs=("raw" "qcow2 512" "qcow2 4k" "qcow2 64k" "qcow2 2M" "qcow2-c 512" "qcow2-c 64k"
         "qcow2-c 2M")

# make_ref SIZE KIND RAW: a reference image; "full" is random data everywhere,
# "tail" is zeros but for the last 1000 bytes (a run that starts in the last
# granule), "sparse" has data at the start and just before the end.
make_ref() {
    local size=$1 kind=$2 raw=$3
    case $kind in
    full) head -c "$size" /dev/urandom >"$raw" ;;
    tail) qemu-img create -q -f raw "$raw" "$size"
          qio_ref "$raw" "write -P 0x5a $((size - 1000)) 1000" ;;
    sparse) qemu-img create -q -f raw "$raw" "$size"
            qio_ref "$raw" "write -P 0x11 0 4k" "write -P 0x22 $((size - 70000)) 69999" ;;
    esac
}

# make_source REF SRCFMT OUT: the source image convert reads.
make_source() {
    local ref=$1 fmt=$2 out=$3 size
    size=$(stat -c %s "$ref")
    case $fmt in
    raw) cp "$ref" "$out" ;;
    qcow2) qemu-img convert -f raw -O qcow2 "$ref" "$out" || fail "qemu-img convert $ref" ;;
    chain)   # the top overlay holds the second half over a base whose second half differs
        local half=$(( size / 2 / 512 * 512 ))
        cp "$ref" "$T/.base.raw"
        qemu-io -f raw -c "write -P 0xee $half $((size - half))" "$T/.base.raw" >/dev/null
        qemu-img convert -f raw -O qcow2 "$T/.base.raw" "$out.base" || fail "make base"
        qemu-img create -q -f qcow2 -o cluster_size=4k -b "$(basename "$out.base")" -F qcow2 \
            "$out" || fail "qemu-img create overlay"
        tail -c +$((half + 1)) "$ref" >"$T/.top-data"
        qemu-io -f qcow2 -c "write -s $T/.top-data $half $((size - half))" "$out" >/dev/null \
            || fail "qemu-io write to the overlay"
        ;;
    esac
}

# check_out OUT FMT REF: the converted image must equal the reference.
check_out() {
    local out=$1 fmt=$2 ref=$3 back=$T/.back.raw
    if [ "$fmt" = raw ]; then
        [ "$(stat -c %s "$out")" = "$(stat -c %s "$ref")" ] || fail "$out: size $(stat -c %s "$out")"
    else
        qcheck "$out"
    fi
    qsame "$out" "$fmt" "$ref"
    rm -f "$back"
    qemu-img convert -f "$fmt" -O raw "$out" "$back" || fail "qemu-img convert $out"
    cmp -s "$back" "$ref" || fail "$out read back by qemu-img differs: $(cmp "$back" "$ref" 2>&1 | head -1)"
    bsame "$out" "$ref"
}

for size in "${sizes[@]}"; do
    for kind in full tail sparse; do
        ref=$T/ref-$size-$kind.raw
        make_ref "$size" "$kind" "$ref"
        for sfmt in raw qcow2 chain; do
            [ "$kind" != full ] && [ "$sfmt" = chain ] && continue
            src=$T/src-$size-$kind.$sfmt
            make_source "$ref" "$sfmt" "$src"
            in_fmt=$sfmt; [ "$sfmt" = chain ] && in_fmt=qcow2
            qsame "$src" "$in_fmt" "$ref"
            for o in "${outputs[@]}"; do
                read -r ofmt cs <<<"$o"
                args=(-f "$in_fmt")
                [ "$ofmt" = qcow2-c ] && args+=(-c)
                [ -n "${cs:-}" ] && args+=(-o "cluster_size=$cs")
                real=${ofmt%-c}
                out=$T/out.$real
                rm -f "$out"
                note "size $size ($kind) from $sfmt to $o"
                if bv convert "${args[@]}" -O "$real" "$src" "$out"; then
                    check_out "$out" "$real" "$ref"
                else
                    fail "bvimg convert ${args[*]} -O $real $src"
                fi
            done
        done
        rm -f "$T"/src-* "$ref"
    done
done
finish
