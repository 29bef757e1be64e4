#!/usr/bin/env bash
# bench_compare.sh [WORKDIR]: bvimg compare against qemu-img compare on the same
# two 1 GiB images of random data (issue 11, items 7 and 9).
#
# Cases, each for qcow2 (made by qemu-img convert) and raw:
#   identical            two copies of the same data
#   last 4 KiB differ    the second image's last 4 KiB inverted
# Page cache warm (every file is read once first).  The tools run in turns,
# RUNS rounds (default 3); best and median wall time and CPU time (user+sys,
# all threads) are shown, because on a busy 2-core machine wall time mostly
# measures the other load.  Ratios = best ours / best qemu-img (target ≤ 0.8).
# BVIMG_OLD (optional): a second bvimg measured in the same rounds (an A/B).
#
# BVIMG defaults to build-h9-rel/core/bvimg, else build-release/core/bvimg: a
# Release build without sanitizers, e.g.
#   cmake -S . -B build-h9-rel -DCMAKE_BUILD_TYPE=Release -DBV_SANITIZE=OFF
#   cmake --build build-h9-rel --target bvimg
# The work directory (default: a new one under /tmp, 6 GiB) is removed at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BVIMG:-}" ]; then
    for b in "$top/build-h9-rel/core/bvimg" "$top/build-release/core/bvimg"; do
        [ -x "$b" ] && { BVIMG=$b; break; }
    done
fi
RUNS=${BENCH_RUNS:-3}
command -v qemu-img >/dev/null || { echo "qemu-img not installed" >&2; exit 1; }
[ -x "${BVIMG:-}" ] || { echo "no bvimg (set BVIMG to a Release build)" >&2; exit 1; }

parent=${1:-${TMPDIR:-/tmp}}
W=$(mktemp -d "$parent/bv-bench-compare.XXXXXX")
trap 'rm -rf "$W"' EXIT

echo "making the images in $W (1 GiB of random data, 6 files)..." >&2
head -c 1G /dev/urandom >"$W/a.raw"
cp "$W/a.raw" "$W/b.raw"
cp "$W/a.raw" "$W/c.raw"
python3 - "$W/c.raw" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(-4096, 2); d = f.read(4096); f.seek(-4096, 2); f.write(bytes(x ^ 0xff for x in d))
EOF
for x in a b c; do qemu-img convert -O qcow2 "$W/$x.raw" "$W/$x.qcow2"; done
cat "$W"/* >/dev/null                      # warm the page cache

# times RUNS: runs the commands given on stdin (one per line, words split on
# spaces) in turns, RUNS rounds, and prints per command "BESTWALL MEDWALL
# BESTCPU MEDCPU" (seconds; CPU = user+sys of the process and its threads)
times() {
    python3 -c '
import os, subprocess, sys, time
runs = int(sys.argv[1]); cmds = [l.split() for l in sys.stdin.read().splitlines() if l.strip()]
res = [[] for _ in cmds]
for _ in range(runs):
    for i, c in enumerate(cmds):
        t0 = time.perf_counter()
        p = subprocess.Popen(c, stdout=subprocess.DEVNULL)
        _, _, ru = os.wait4(p.pid, 0)
        res[i].append((time.perf_counter() - t0, ru.ru_utime + ru.ru_stime))
for r in res:
    w = sorted(x[0] for x in r); c = sorted(x[1] for x in r)
    print(f"{w[0]:.3f} {w[len(w)//2]:.3f} {c[0]:.3f} {c[len(c)//2]:.3f}")
' "$RUNS"
}

ratio() { echo "$1 / $2" | bc -l; }
printf '%-26s %-9s %13s %13s %6s %6s\n' case tool "wall best/med" "cpu best/med" "wall" "cpu"
row() {   # NAME FILE1 FILE2 EXPECTED-STATUS
    local b rc
    for b in "$BVIMG" ${BVIMG_OLD:+"$BVIMG_OLD"}; do
        rc=0
        "$b" compare "$2" "$3" >/dev/null || rc=$?
        [ "$rc" = "$4" ] || { echo "$b compare $2 $3 exited $rc, expected $4" >&2; exit 1; }
    done
    local -a out
    mapfile -t out < <(printf '%s\n' "qemu-img compare $2 $3" "$BVIMG compare $2 $3" \
                           ${BVIMG_OLD:+"$BVIMG_OLD compare $2 $3"} | times)
    local qw qmw qc qmc w mw c mc i name
    read -r qw qmw qc qmc <<<"${out[0]}"
    printf '%-26s %-9s %6.3f/%6.3f %6.3f/%6.3f\n' "$1" qemu-img "$qw" "$qmw" "$qc" "$qmc"
    for ((i = 1; i < ${#out[@]}; i++)); do
        read -r w mw c mc <<<"${out[$i]}"
        name=bvimg; [ "$i" = 2 ] && name="bvimg old"
        printf '%-26s %-9s %6.3f/%6.3f %6.3f/%6.3f %6.2f %6.2f\n' "" "$name" "$w" "$mw" "$c" "$mc" \
            "$(ratio "$w" "$qw")" "$(ratio "$c" "$qc")"
    done
}
row "qcow2 identical"          "$W/a.qcow2" "$W/b.qcow2" 0
row "qcow2 last 4 KiB differ"  "$W/a.qcow2" "$W/c.qcow2" 1
row "raw identical"            "$W/a.raw"   "$W/b.raw"   0
row "raw last 4 KiB differ"    "$W/a.raw"   "$W/c.raw"   1
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
