# shellcheck shell=bash
# Shared helpers for the bvimg/qemu-img interop tests (sourced, not run).
# Skips (77) when the oracle is missing; gives each test a private temporary
# directory removed on exit; counts failures instead of stopping at the first
# so one run shows everything that is wrong.
set -u

: "${BVIMG:?BVIMG must point to the bvimg binary}"
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
    echo "qemu-img/qemu-io not installed: skipping"
    exit 77
fi
[ -x "$BVIMG" ] || { echo "BVIMG=$BVIMG is not executable"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/bv-interop.XXXXXX")
trap 'rm -rf "$T"' EXIT
FAILS=0

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
note() { echo "-- $*"; }

# bv ARGS...: run bvimg; a crash (status >= 128) or a sanitizer report is a failure.
bv() {
    local rc=0
    "$BVIMG" "$@" 2>"$T/.bv-stderr" || rc=$?
    cat "$T/.bv-stderr" >&2
    if [ "$rc" -ge 128 ] || grep -qE 'Sanitizer|runtime error:' "$T/.bv-stderr"; then
        fail "bvimg $* crashed (status $rc)"
    fi
    return "$rc"
}

# expect_status WANT CMD...: CMD (stdout discarded) must exit with WANT.
expect_status() {
    local want=$1 rc=0
    shift
    "$@" >/dev/null || rc=$?
    [ "$rc" -eq "$want" ] || fail "'$*' exited $rc, expected $want"
}

# qcheck IMG: qemu-img check must find no error and no leak.
qcheck() {
    local out
    out=$(qemu-img check -f qcow2 "$1" 2>&1) || fail "qemu-img check $1 ($?): $out"
}

# qsame IMG FMT RAW: qemu-img compare IMG against the raw reference.
qsame() {
    local out
    out=$(qemu-img compare -f "$2" -F raw "$1" "$3" 2>&1) || fail "qemu-img compare $1 $3: $out"
}

# bsame IMG RAW: bvimg compare, and bvimg convert -O raw + cmp.
bsame() {
    bv compare "$1" "$2" >/dev/null || fail "bvimg compare $1 $2"
    rm -f "$T/.out.raw"
    if bv convert -O raw "$1" "$T/.out.raw"; then
        cmp -s "$T/.out.raw" "$2" || fail "bvimg convert -O raw $1 differs from $2"
    else
        fail "bvimg convert -O raw $1"
    fi
}

# qio_ref RAW CMD...: apply io commands to a raw reference with qemu-io.
# discard becomes write -z: Blockvault's contract is that discarded ranges read zeros.
qio_ref() {
    local raw=$1 args=() c
    shift
    for c in "$@"; do
        args+=(-c "${c/#discard/write -z}")
    done
    qemu-io -f raw "${args[@]}" "$raw" >"$T/.qio-out" 2>&1 || fail "qemu-io on $raw: $(tail -3 "$T/.qio-out")"
}

# bio IMG CMD...: apply io commands with bvimg io.
bio() {
    local img=$1 args=() c
    shift
    for c in "$@"; do
        args+=(-c "$c")
    done
    bv io "${args[@]}" "$img" >"$T/.bio-out" || fail "bvimg io on $img: $(tail -3 "$T/.bio-out")"
}

# random_writes SEED N MAXOFF: N "write -P" commands with random offsets/lengths.
random_writes() {
    local i off len
    RANDOM=$1
    for ((i = 0; i < $2; i++)); do
        off=$(( (RANDOM * 32768 + RANDOM) % $3 ))
        len=$(( RANDOM * 4 % 262144 + 1 ))
        [ $((off + len)) -le "$3" ] || len=$(( $3 - off ))
        echo "write -P $((RANDOM % 255 + 1)) $off $len"
    done
}

finish() {
    if [ "$FAILS" -gt 0 ]; then
        echo "$FAILS failure(s)"
        exit 1
    fi
    echo PASS
    exit 0
}
