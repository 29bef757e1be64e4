#!/usr/bin/env bash
# bench_images.sh [WORKDIR]: bvimg against qemu-img on the same data, one run.
#
# Cases (each tool runs twice, alternating, best time kept; page cache warm):
#   convert  1 GiB random raw -> qcow2, default cache
#   convert  1 GiB random raw -> qcow2, durable (qemu-img -t none; bvimg -t none = flush)
#   convert  4 GiB sparse raw with 64 MiB scattered data -> qcow2
#   convert  256 MiB of real data (tar of /usr/lib, truncated) -> compressed qcow2 (-c)
#   compare  two identical 1 GiB images (qcow2 made by qemu-img, and raw)
#   compare  two 1 GiB images differing in the last 4 KiB (qcow2, and raw)
# Prints a table of seconds and the ratio ours/theirs (≤ 1.0 is the target).
# BVIMG defaults to build-bench/core/bvimg (a Release build without sanitizers:
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBV_SANITIZE=OFF
#   cmake --build build-bench --target bvimg).
# The work directory (default: a new one under /tmp) is removed at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
BVIMG=${BVIMG:-$top/build-bench/core/bvimg}
RUNS=${BENCH_RUNS:-2}
command -v qemu-img >/dev/null || { echo "qemu-img not installed" >&2; exit 1; }
[ -x "$BVIMG" ] || { echo "no bvimg at $BVIMG (build build-bench first)" >&2; exit 1; }

parent=${1:-${TMPDIR:-/tmp}}
W=$(mktemp -d "$parent/bv-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT

now() { date +%s.%N; }

# best_time CMD...: the best wall time of RUNS runs (output files removed before each run)
best_time() {
    local best="" t0 t1 d i
    for ((i = 0; i < RUNS; i++)); do
        rm -f "$W/out.qcow2"
        sync
        t0=$(now)
        "$@" >/dev/null || true      # compare exits 1 on a difference
        t1=$(now)
        d=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$d < $best" | bc -l)" = 1 ]; then best=$d; fi
    done
    echo "$best"
}

ROWS=()
row() {   # NAME OURS THEIRS
    local ratio
    ratio=$(echo "scale=3; $2 / $3" | bc -l)
    ROWS+=("$(printf '%-44s %9.3f %9.3f %7.2f' "$1" "$2" "$3" "$ratio")")
    printf '%s\n' "${ROWS[-1]}"
}

# bench_pair NAME "OURS-ARGS" "THEIRS-ARGS": alternate the tools, best of RUNS each
bench_pair() {
    local name=$1 ours theirs
    # shellcheck disable=SC2086
    theirs=$(best_time qemu-img $3)
    # shellcheck disable=SC2086
    ours=$(best_time "$BVIMG" $2)
    row "$name" "$ours" "$theirs"
}

echo "preparing data in $W ..."
head -c 1G /dev/urandom >"$W/rand.raw"
cp "$W/rand.raw" "$W/rand2.raw"
cp "$W/rand.raw" "$W/rand3.raw"
printf 'x%.0s' $(seq 4096) | dd of="$W/rand3.raw" bs=4096 seek=$(( (1 << 30) / 4096 - 1 )) conv=notrunc status=none
truncate -s 4G "$W/sparse.raw"
for i in $(seq 0 1023); do       # 1024 x 64 KiB at pseudo-random 64 KiB-aligned offsets
    off=$(( (i * 2654435761) % 65536 ))
    dd if="$W/rand.raw" of="$W/sparse.raw" bs=64k skip="$i" seek="$off" count=1 conv=notrunc status=none
done
tar cf - /usr/lib 2>/dev/null | head -c 256M >"$W/mixed.raw" || true
truncate -s 256M "$W/mixed.raw"
cat "$W"/*.raw >/dev/null    # warm the page cache for both tools

printf '%-44s %9s %9s %7s\n' "case" "bvimg s" "qemu s" "ratio"
bench_pair "convert 1G random raw->qcow2" \
    "convert -f raw -O qcow2 $W/rand.raw $W/out.qcow2" \
    "convert -f raw -O qcow2 $W/rand.raw $W/out.qcow2"
bench_pair "convert 1G random raw->qcow2 durable" \
    "convert -t none -f raw -O qcow2 $W/rand.raw $W/out.qcow2" \
    "convert -t none -f raw -O qcow2 $W/rand.raw $W/out.qcow2"
bench_pair "convert 4G sparse (64M data) raw->qcow2" \
    "convert -f raw -O qcow2 $W/sparse.raw $W/out.qcow2" \
    "convert -f raw -O qcow2 $W/sparse.raw $W/out.qcow2"
bench_pair "convert -c 256M mixed raw->qcow2" \
    "convert -c -f raw -O qcow2 $W/mixed.raw $W/out.qcow2" \
    "convert -c -f raw -O qcow2 $W/mixed.raw $W/out.qcow2"
qemu-img convert -f raw -O qcow2 "$W/rand.raw" "$W/a.qcow2"
cp "$W/a.qcow2" "$W/b.qcow2"
qemu-img convert -f raw -O qcow2 "$W/rand3.raw" "$W/c.qcow2"
cat "$W"/*.qcow2 >/dev/null
bench_pair "compare 1G qcow2 identical" \
    "compare $W/a.qcow2 $W/b.qcow2" "compare $W/a.qcow2 $W/b.qcow2"
bench_pair "compare 1G qcow2 differing in last 4K" \
    "compare $W/a.qcow2 $W/c.qcow2" "compare $W/a.qcow2 $W/c.qcow2"
bench_pair "compare 1G raw identical" \
    "compare -f raw -F raw $W/rand.raw $W/rand2.raw" \
    "compare -f raw -F raw $W/rand.raw $W/rand2.raw"
bench_pair "compare 1G raw differing in last 4K" \
    "compare -f raw -F raw $W/rand.raw $W/rand3.raw" \
    "compare -f raw -F raw $W/rand.raw $W/rand3.raw"

echo
echo "summary (ratio = bvimg / qemu-img; lower is better):"
printf '%-44s %9s %9s %7s\n' "case" "bvimg s" "qemu s" "ratio"
printf '%s\n' "${ROWS[@]}"
