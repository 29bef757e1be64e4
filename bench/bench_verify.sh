#!/usr/bin/env bash
# bench_verify.sh [WORKDIR]: verify jobs against plain reads and qemu-img compare.
#
# Data: a 1 GiB qcow2 drive filled with random data (qemu-img convert from /dev/urandom, opened
# with "existing") and a full chain backup of it: a 1 GiB link, 16384 checksummed blocks.
#
# Cases (page cache warm: every file involved is read once before each run):
#   checksum   POST /api/v1/jobs {"type":"verify","mode":"checksum","backup":<the full>}, timed
#              from the POST to the job's BLOCK_JOB_COMPLETED (long poll on /events): the
#              link's qcow2 check, its 16384 blocks re-read through the point and CRC32-checked,
#              the report filed.  Against `cat <link> > /dev/null` of the same file (plain read
#              bandwidth).  Ratio = cat time / verify time = the fraction of the plain read
#              bandwidth the verify reaches (target: >= 0.67).
#   compare    {"mode":"compare","test":{"drive":"d0"},"reference":{"backup":<the full>}} (the
#              drive read through its node, the backup through its point; a full scan: extents
#              and byte counts, not stopping at the first difference) against
#              `qemu-img compare -U d0.qcow2 <link>`, on identical data and with the drive's
#              last 4 KiB changed.  Ratio = ours / qemu-img (target: <= 0.8).
# Each runs RUNS times (default 3), best time kept.  The job times include the HTTP round
# trips and the catalog commits (a few ms).  For the compare rows the CPU time (user+sys) is
# shown too: the daemon's over the job (from /proc/PID/stat, 10 ms ticks) and qemu-img's, as
# on a busy machine wall time mostly measures the other load.
#
# BV_DAEMON defaults to build-release/service/blockvault, a Release build without sanitizers:
#   cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBV_SANITIZE=OFF -DBV_WERROR=OFF
#   cmake --build build-release --target blockvault
# The work directory (default: a new one under /var/tmp) is removed at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
BV_DAEMON=${BV_DAEMON:-$top/build-release/service/blockvault}
RUNS=${BENCH_RUNS:-3}
for p in qemu-img curl jq bc; do
    command -v "$p" >/dev/null || { echo "$p not installed" >&2; exit 1; }
done
[ -x "$BV_DAEMON" ] || { echo "no daemon at $BV_DAEMON (build it first)" >&2; exit 1; }

parent=${1:-/var/tmp}
W=$(mktemp -d "$parent/bv-bench-verify.XXXXXX")
DPID=""
cleanup() {
    if [ -n "$DPID" ]; then kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
    rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }

mkdir -p "$W/data/images"
"$BV_DAEMON" serve --listen 127.0.0.1:0 --data "$W/data" >"$W/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 100); do
    grep -q 'listening on' "$W/daemon.log" 2>/dev/null && break
    sleep 0.1
done
PORT=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$W/daemon.log" | sed 's/.*://')
API="http://127.0.0.1:$PORT/api/v1"
IMG="$W/data/images"

post() { curl -sf -X POST "$API$1" -d "$2"; }
head_seq() { curl -sf "$API/events?after=latest" | jq -r .next; }
# wait_done JOB AFTER: until BLOCK_JOB_COMPLETED of JOB; prints its error ("null" if none)
wait_done() {
    local after=$2 r
    while :; do
        r=$(curl -sf "$API/events?after=$after&wait=30&name=BLOCK_JOB_COMPLETED")
        if jq -e --arg j "$1" 'any(.events[]; .data.device == $j)' <<<"$r" >/dev/null; then
            jq -r --arg j "$1" '[.events[] | select(.data.device == $j)][0].data.error // "null"
                               | tostring' <<<"$r"
            return
        fi
        after=$(jq -r .next <<<"$r")
    done
}
# run_verify BODY: seconds from the POST to the job's end; checks the report's status ($2)
run_verify() {
    local after t0 t1 job rep err
    after=$(head_seq)
    t0=$(now)
    rep=$(post /jobs "{\"type\":\"verify\",$1}")
    job=$(jq -r .id <<<"$rep")
    err=$(wait_done "$job" "$after")
    t1=$(now)
    [ "$err" = null ] || { echo "verify failed: $err" >&2; exit 1; }
    st=$(curl -sf "$API/reports/$(jq -r .report_id <<<"$rep")" | jq -r .status)
    [ "$st" = "$2" ] || { echo "verify report is $st, expected $2" >&2; exit 1; }
    echo "$t1 - $t0" | bc -l
}
best() { printf '%s\n' "$@" | sort -g | head -1; }
TCK=$(getconf CLK_TCK)
dcpu() { awk -v t="$TCK" '{printf "%.3f\n", ($14 + $15) / t}' "/proc/$DPID/stat"; }
# qcpu CMD...: runs CMD, prints "WALL CPU" (seconds; CPU = user+sys of it and its threads)
qcpu() {
    python3 -c '
import os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, _, ru = os.wait4(p.pid, 0)
print(f"{time.perf_counter() - t0:.3f} {ru.ru_utime + ru.ru_stime:.3f}")' "$@"
}
# cmp_run BODY STATUS: "WALL CPU" of one compare verify job
cmp_run() {
    local c0 w
    c0=$(dcpu)
    w=$(run_verify "$1" "$2")
    echo "$w $(echo "$(dcpu) - $c0" | bc -l)"
}

echo "preparing data in $W ..."
head -c 1G /dev/urandom >"$W/rand.raw"
qemu-img convert -f raw -O qcow2 "$W/rand.raw" "$IMG/d0.qcow2"
rm -f "$W/rand.raw"
post /drives '{"id":"d0","format":"qcow2","existing":true}' >/dev/null
after=$(head_seq)
bid=$(post /drives/d0/backups '{"kind":"full"}' | jq -r .backup.id)
[ "$(wait_done d0 "$after")" = null ] || { echo "backup failed" >&2; exit 1; }
link=$IMG/$(curl -sf "$API/backups/$bid" | jq -r .file)
echo "backup $bid: $(du -h "$link" | cut -f1) in $link"
warm() { cat "$IMG/d0.qcow2" "$link" >/dev/null; }

ck=() cat_t=() cmp=() qcmp=() cmp4=() qcmp4=() cc=() qc=() cc4=() qc4=()
CMPBODY="\"mode\":\"compare\",\"test\":{\"drive\":\"d0\"},\"reference\":{\"backup\":\"$bid\"}"
for ((i = 0; i < RUNS; i++)); do
    warm
    ck+=("$(run_verify "\"mode\":\"checksum\",\"backup\":\"$bid\"" clean)")
    warm
    t0=$(now); cat "$link" >/dev/null; t1=$(now)
    cat_t+=("$(echo "$t1 - $t0" | bc -l)")
    warm
    read -r w c < <(cmp_run "$CMPBODY" clean); cmp+=("$w"); cc+=("$c")
    warm
    read -r w c < <(qcpu qemu-img compare -U "$IMG/d0.qcow2" "$link"); qcmp+=("$w"); qc+=("$c")
done
# the drive's last 4 KiB changed (flushed: qemu-img reads the file)
post /drives/d0/io '{"commands":["write -P 0x5c 1073737728 4096","flush"]}' >/dev/null
for ((i = 0; i < RUNS; i++)); do
    warm
    read -r w c < <(cmp_run "$CMPBODY" corrupt); cmp4+=("$w"); cc4+=("$c")
    warm
    read -r w c < <(qcpu qemu-img compare -U "$IMG/d0.qcow2" "$link"); qcmp4+=("$w"); qc4+=("$c")
done
k=$(best "${ck[@]}"); c=$(best "${cat_t[@]}"); m=$(best "${cmp[@]}"); q=$(best "${qcmp[@]}")
m4=$(best "${cmp4[@]}"); q4=$(best "${qcmp4[@]}")
printf '\n%-52s %8s\n' "1 GiB random data, page cache warm" "best s"
printf '%-52s %8.3f   (runs: %s)\n' "checksum verify of the full backup (job)" "$k" "${ck[*]}"
printf '%-52s %8.3f   (runs: %s)\n' "cat <link> > /dev/null" "$c" "${cat_t[*]}"
printf '%-52s %8.2f   (target >= 0.67)\n' "checksum bandwidth / plain read bandwidth" \
    "$(echo "$c / $k" | bc -l)"
printf '%-52s %8.3f   (runs: %s)\n' "compare verify drive vs backup, identical (job)" "$m" "${cmp[*]}"
printf '%-52s %8.3f   (runs: %s)\n' "qemu-img compare, identical" "$q" "${qcmp[*]}"
printf '%-52s %8.2f   (target <= 0.8)\n' "ratio ours / qemu-img, identical" "$(echo "$m / $q" | bc -l)"
printf '%-52s %8.3f   (runs: %s)\n' "compare verify, last 4 KiB differ (job)" "$m4" "${cmp4[*]}"
printf '%-52s %8.3f   (runs: %s)\n' "qemu-img compare, last 4 KiB differ" "$q4" "${qcmp4[*]}"
printf '%-52s %8.2f   (target <= 0.8)\n' "ratio ours / qemu-img, last 4 KiB differ" \
    "$(echo "$m4 / $q4" | bc -l)"
k=$(best "${cc[@]}"); c=$(best "${qc[@]}"); k4=$(best "${cc4[@]}"); c4=$(best "${qc4[@]}")
printf '%-52s %8.3f   (runs: %s)\n' "CPU s, compare verify identical (daemon)" "$k" "${cc[*]}"
printf '%-52s %8.3f   (runs: %s)\n' "CPU s, qemu-img compare identical" "$c" "${qc[*]}"
printf '%-52s %8.2f\n' "CPU ratio, identical" "$(echo "$k / $c" | bc -l)"
printf '%-52s %8.3f   (runs: %s)\n' "CPU s, compare verify last 4 KiB differ" "$k4" "${cc4[*]}"
printf '%-52s %8.3f   (runs: %s)\n' "CPU s, qemu-img compare last 4 KiB differ" "$c4" "${qc4[*]}"
printf '%-52s %8.2f\n' "CPU ratio, last 4 KiB differ" "$(echo "$k4 / $c4" | bc -l)"
