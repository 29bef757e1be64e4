#!/bin/bash
# NBD export throughput against qemu-nbd on the same image, in one run:
#   - nbdcopy read (export -> null:) and write (raw file -> export) of the whole image;
#   - 4 KiB I/O at queue depth 1 and 16 with `qemu-img bench` (reads and writes; the
#     offsets step by 1 MiB + 4 KiB, wrapping, so consecutive requests land far apart).
# Both servers get a copy of one filled qcow2 image (1 GiB, half data, half unallocated),
# over a Unix socket.  Prints a table with ratios (ours / qemu-nbd; > 1 is faster).
#
#   BV_DAEMON=build-release/service/blockvault bench/bench_nbd.sh [SIZE_MIB]
set -eu
: "${BV_DAEMON:?set BV_DAEMON to a release build of blockvault}"
for t in qemu-img qemu-nbd nbdcopy curl python3; do
    command -v "$t" >/dev/null || { echo "$t is missing" >&2; exit 77; }
done
MIB=${1:-1024}
N1=${BV_BENCH_N1:-20000}        # requests at depth 1
N16=${BV_BENCH_N16:-100000}     # requests at depth 16
T=$(mktemp -d "${TMPDIR:-/tmp}/bv-bench-nbd.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"' EXIT

mkdir -p "$T/d/images"
python3 - "$T/fill.raw" "$MIB" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        f.write(os.urandom(1 << 20) if i % 2 == 0 else bytes(1 << 20))
PY
qemu-img convert -q -f raw -O qcow2 "$T/fill.raw" "$T/d/images/ours.qcow2"
cp "$T/d/images/ours.qcow2" "$T/theirs.qcow2"

"$BV_DAEMON" serve --listen 127.0.0.1:0 --data "$T/d" >"$T/bv.out" 2>"$T/bv.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^listening' "$T/bv.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$T/bv.out")
curl -sf -X POST "$URL/api/v1/drives" \
    -d '{"id":"bench","format":"qcow2","file":"ours.qcow2","existing":true}' >/dev/null
OURS="nbd+unix:///bench?socket=$T/d/nbd.sock"
qemu-nbd -f qcow2 -t -x bench --cache=writeback --aio=threads -k "$T/qnbd.sock" "$T/theirs.qcow2" &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$T/qnbd.sock" ] && break; sleep 0.1; done
THEIRS="nbd+unix:///bench?socket=$T/qnbd.sock"

secs() {   # CMD...: wall seconds
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s.%N)
    python3 -c "print(f'{$e - $s:.3f}')"
}
bench_rate() {   # URI DEPTH COUNT [-w]: requests per second
    local out
    out=$(qemu-img bench -f raw -c "$3" -d "$2" -s 4096 -S $(( (1 << 20) + 4096 )) ${4:-} "$1" 2>&1)
    python3 -c "import re,sys; t=float(re.search(r'completed in ([0-9.]+)', sys.argv[1]).group(1)); print(f'{$3 / t:.0f}')" "$out"
}
row() {   # NAME UNIT OURS THEIRS
    python3 -c "import sys; n,u,a,b=sys.argv[1:]; a=float(a); b=float(b); print(f'| {n} | {a:.0f} {u} | {b:.0f} {u} | {a / b:.2f} |')" "$@"
}
mbps() { python3 -c "print($MIB / $1)"; }

echo "| test | ours | qemu-nbd | ratio |"
echo "|---|---|---|---|"
r_o=$(secs nbdcopy "$OURS" null:); r_t=$(secs nbdcopy "$THEIRS" null:)
row "nbdcopy read ${MIB} MiB" MiB/s "$(mbps "$r_o")" "$(mbps "$r_t")"
w_o=$(secs nbdcopy "$T/fill.raw" "$OURS"); w_t=$(secs nbdcopy "$T/fill.raw" "$THEIRS")
row "nbdcopy write ${MIB} MiB" MiB/s "$(mbps "$w_o")" "$(mbps "$w_t")"
for d in 1 16; do
    n=$N1; [ "$d" = 16 ] && n=$N16
    row "4 KiB read, depth $d" req/s "$(bench_rate "$OURS" "$d" "$n")" "$(bench_rate "$THEIRS" "$d" "$n")"
    row "4 KiB write, depth $d" req/s "$(bench_rate "$OURS" "$d" "$n" -w)" "$(bench_rate "$THEIRS" "$d" "$n" -w)"
done
