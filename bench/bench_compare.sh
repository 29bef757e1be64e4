#!/usr/bin/env bash
# bench_compare.sh [WORKDIR]: bvimg compare against qemu-img compare on the same
# two 1 GiB images of random data (issue 11, items 7 and 9).
#
# Cases, each for qcow2 (made by qemu-img convert) and raw:
#   identical            two copies of the same data
#   last 4 KiB differ    the second image's last 4 KiB inverted
# Page cache warm (every file is read once first).  Each tool runs RUNS times
# (default 3), alternating, and the best wall time is kept; the CPU time
# (user+sys) of the best-CPU run is shown too, because on a busy 2-core
# machine wall time mostly measures the other load.  Ratio = ours / qemu-img
# (target ≤ 0.8).
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

# best CMD...: "WALL CPU" in seconds, the best of RUNS runs each
best() {
    python3 - "$RUNS" "$@" <<'EOF'
import os, subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2:]
wall = cpu = None
for _ in range(runs):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, _, ru = os.wait4(p.pid, 0)
    w, c = time.perf_counter() - t0, ru.ru_utime + ru.ru_stime
    wall = w if wall is None else min(wall, w)
    cpu = c if cpu is None else min(cpu, c)
print(f"{wall:.3f} {cpu:.3f}")
EOF
}

printf '%-34s %9s %9s %6s   %9s %9s %6s\n' case "ours s" "qemu s" ratio "ours cpu" "qemu cpu" ratio
row() {   # NAME FILE1 FILE2 EXPECTED-STATUS
    local ours theirs rc=0
    "$BVIMG" compare "$2" "$3" >/dev/null || rc=$?
    [ "$rc" = "$4" ] || { echo "bvimg compare $2 $3 exited $rc, expected $4" >&2; exit 1; }
    local ow oc tw tc
    read -r tw tc < <(best qemu-img compare "$2" "$3")
    read -r ow oc < <(best "$BVIMG" compare "$2" "$3")
    printf '%-34s %9.3f %9.3f %6.2f   %9.3f %9.3f %6.2f\n' "$1" "$ow" "$tw" \
        "$(echo "$ow / $tw" | bc -l)" "$oc" "$tc" "$(echo "$oc / $tc" | bc -l)"
}
row "qcow2 identical"          "$W/a.qcow2" "$W/b.qcow2" 0
row "qcow2 last 4 KiB differ"  "$W/a.qcow2" "$W/c.qcow2" 1
row "raw identical"            "$W/a.raw"   "$W/b.raw"   0
row "raw last 4 KiB differ"    "$W/a.raw"   "$W/c.raw"   1
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
