#!/usr/bin/env bash
# bench_restore.sh [WORKDIR]: our restore job against qemu-img convert of the same chain.
#
# Data: a 1 GiB qcow2 drive filled with random data (made by qemu-img convert from /dev/urandom
# and opened with "existing"), a full chain backup, then two incrementals, each after 64 MiB of
# writes (64 x 1 MiB at scattered offsets, through /io).  The point restored is the newest: the
# full link with two incrementals on top, 1 GiB of guest data.
#
# Cases (page cache warm: the chain's files are read once before each run; output removed):
#   ours      POST /api/v1/backups/{bid}/restore {"file"}, timed from the POST to the job's
#             BLOCK_JOB_COMPLETED (long poll on /events).  The job flushes (fdatasync) the new
#             image before it completes and checks the digest of everything it wrote against
#             the backup's checksum: it is durable and verified.  The job's own time (its created_at
#             to finished_at, without the client's HTTP and process start-ups) is shown too.
#   convert   qemu-img convert -O qcow2 <newest link> out.qcow2 (follows the backing chain).
#             Its default output cache mode is "unsafe": nothing is flushed, the data may
#             still be in the page cache when it exits (not durable).
#   convert -t writeback   the same, flushed (fdatasync) when qemu-img closes the image:
#             durable the way ours is (page cache, one flush at the end): the like-for-like case
#   convert -t none        the same with O_DIRECT on the output (durable)
# Each runs RUNS times (default 3), best time kept; ratio = ours / theirs (target: <= 1.0).
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
W=$(mktemp -d "$parent/bv-bench-restore.XXXXXX")
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
        local hit
        hit=$(jq -r --arg j "$1" '[.events[] | select(.data.device == $j)][0].data.error // "null"
                                 | tostring' <<<"$r")
        if jq -e --arg j "$1" 'any(.events[]; .data.device == $j)' <<<"$r" >/dev/null; then
            echo "$hit"
            return
        fi
        after=$(jq -r .next <<<"$r")
    done
}
chain_backup() {   # KIND: prints the backup id once complete
    local after r bid
    after=$(head_seq)
    r=$(post /drives/d0/backups "{\"kind\":\"$1\"}")
    bid=$(jq -r .backup.id <<<"$r")
    [ "$(wait_done d0 "$after")" = null ] || { echo "backup failed" >&2; exit 1; }
    echo "$bid"
}
scatter_writes() {  # PATTERN SEED: 64 x 1 MiB at pseudo-random 1 MiB-aligned offsets
    local cmds="" i off
    for i in $(seq 0 63); do
        off=$(( (i * 2654435761 + $2 * 40503) % 1024 ))
        cmds+="\"write -P $1 ${off}M 1M\","
    done
    post /drives/d0/io "{\"commands\":[${cmds}\"flush\"]}" >/dev/null
}

echo "preparing data in $W ..."
head -c 1G /dev/urandom >"$W/rand.raw"
qemu-img convert -f raw -O qcow2 "$W/rand.raw" "$IMG/d0.qcow2"
rm -f "$W/rand.raw"
post /drives '{"id":"d0","format":"qcow2","existing":true}' >/dev/null
b1=$(chain_backup full)
scatter_writes 0x5a 1
b2=$(chain_backup incremental)
scatter_writes 0xa5 2
b3=$(chain_backup incremental)
link=$(curl -sf "$API/backups/$b3" | jq -r .file)
chain_dir=$(dirname "$IMG/$link")
echo "chain: $b1 $b2 $b3 ($(du -sh "$chain_dir" | cut -f1) in $chain_dir)"

warm() { cat "$chain_dir"/*.qcow2 >/dev/null; sync; }

best() { # prints the minimum of its arguments
    printf '%s\n' "$@" | sort -g | head -1
}

ours=() srv=() conv=() wb=() none=()
for ((i = 0; i < RUNS; i++)); do
    rm -f "$IMG/out.qcow2"; warm
    after=$(head_seq)
    t0=$(now)
    job=$(post "/backups/$b3/restore" '{"file":"out.qcow2"}' | jq -r .id)
    err=$(wait_done "$job" "$after")
    t1=$(now)
    [ "$err" = null ] || { echo "restore failed: $err" >&2; exit 1; }
    ours+=("$(echo "$t1 - $t0" | bc -l)")
    js=$(curl -sf "$API/jobs/$job")
    c0=$(date -d "$(jq -r .created_at <<<"$js")" +%s.%N)
    c1=$(date -d "$(jq -r .finished_at <<<"$js")" +%s.%N)
    srv+=("$(echo "$c1 - $c0" | bc -l)")
    if [ "$i" = 0 ]; then
        qemu-img compare -U "$IMG/out.qcow2" "$IMG/$link" >/dev/null ||
            { echo "restored image differs from the chain" >&2; exit 1; }
    fi
    rm -f "$IMG/out.qcow2"; warm
    t0=$(now); qemu-img convert -O qcow2 "$IMG/$link" "$IMG/out.qcow2"; t1=$(now)
    conv+=("$(echo "$t1 - $t0" | bc -l)")
    rm -f "$IMG/out.qcow2"; warm
    t0=$(now); qemu-img convert -t writeback -O qcow2 "$IMG/$link" "$IMG/out.qcow2"; t1=$(now)
    wb+=("$(echo "$t1 - $t0" | bc -l)")
    rm -f "$IMG/out.qcow2"; warm
    t0=$(now); qemu-img convert -t none -O qcow2 "$IMG/$link" "$IMG/out.qcow2"; t1=$(now)
    none+=("$(echo "$t1 - $t0" | bc -l)")
done
o=$(best "${ours[@]}"); sv=$(best "${srv[@]}"); c=$(best "${conv[@]}"); b=$(best "${wb[@]}"); n=$(best "${none[@]}")
printf '\n%-46s %8s\n' "restore of a 1 GiB point (full + 2 incr.)" "best s"
printf '%-46s %8.3f   (runs: %s)\n' "ours (POST restore -> COMPLETED, durable)" "$o" "${ours[*]}"
printf '%-46s %8.3f   (runs: %s)\n' "  of which the job (created_at -> finished_at)" "$sv" "${srv[*]}"
printf '%-46s %8.3f   (runs: %s)\n' "qemu-img convert -O qcow2" "$c" "${conv[*]}"
printf '%-46s %8.3f   (runs: %s)\n' "qemu-img convert -t writeback -O qcow2" "$b" "${wb[*]}"
printf '%-46s %8.3f   (runs: %s)\n' "qemu-img convert -t none -O qcow2" "$n" "${none[*]}"
printf '%-46s %8.2f\n' "ratio ours / convert (not durable)" "$(echo "$o / $c" | bc -l)"
printf '%-46s %8.2f\n' "ratio ours / convert -t writeback" "$(echo "$o / $b" | bc -l)"
printf '%-46s %8.2f\n' "ratio ours / convert -t none" "$(echo "$o / $n" | bc -l)"
