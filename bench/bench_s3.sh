#!/usr/bin/env bash
# bench_s3.sh [WORKDIR]: uploading and downloading a backup link to/from a RADOS Gateway, ours
# against s3cmd, and restoring a point straight from the bucket against a local restore.
#
# Setup: a throw-away single-node Ceph (tests/support/ceph-rgw.sh: mon + bluestore OSD + beast
# radosgw on loopback) and our daemon; a qcow2 drive of SIZE (default 1G) of random data
# (qemu-img convert from /dev/urandom, opened with "existing") and a full chain backup of it.
#
# Cases, each RUNS times (default 3), best kept, page cache warm (the link is read first):
#   replicate  POST /api/v1/backups/<full>/replicate to a new remote (a new bucket each run, so
#              the link is uploaded every time), timed from the POST to the job's
#              BLOCK_JOB_COMPLETED: multipart, 16 MiB parts, 4 in flight, Content-MD5 on each,
#              a HEAD check and the manifest.
#   s3cmd put  the same file to another bucket (s3cmd's defaults: 15 MiB parts, one at a
#              time, MD5 computed).
#   s3cmd get  the object back to a file (s3cmd's defaults: one GET stream).
#   bvs3 get   our client's download of the replicated link (service/s3/s3get.c: 16 MiB
#              ranged GETs, 4 in flight), checked with cmp.
#   restore local   POST /api/v1/backups/<full>/restore into a new qcow2 file, the link on
#              local disk (page cache warm), timed to BLOCK_JOB_COMPLETED (digest checked).
#   restore bucket  the same with the link's file moved aside: the point is read straight
#              from the bucket (r0's object) through the remote block driver (1 MiB ranged
#              GETs, 8 blocks of readahead, 4 fetch threads).
# Ratios: upload ours / s3cmd put (target <= 1.0), download bvs3 / s3cmd get (<= 1.0),
# restore bucket / local (<= 2.0).
#
# BV_DAEMON defaults to build-release/service/blockvault (Release, no sanitizers), BVS3 to
# build-release/service/bvs3:
#   cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBV_SANITIZE=OFF -DBV_WERROR=OFF
#   cmake --build build-release --target blockvault bvs3
# The work directory (default: a new one under /var/tmp) is removed at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
BV_DAEMON=${BV_DAEMON:-$top/build-release/service/blockvault}
BVS3=${BVS3:-$top/build-release/service/bvs3}
RUNS=${BENCH_RUNS:-3}
SIZE=${BENCH_SIZE:-1G}
for p in qemu-img curl jq bc s3cmd; do
    command -v "$p" >/dev/null || { echo "$p not installed" >&2; exit 1; }
done
[ -x "$BV_DAEMON" ] || { echo "no daemon at $BV_DAEMON (build it first)" >&2; exit 1; }
[ -x "$BVS3" ] || { echo "no bvs3 at $BVS3 (build it first)" >&2; exit 1; }

parent=${1:-/var/tmp}
W=$(mktemp -d "$parent/bv-bench-s3.XXXXXX")
DPID=""
cleanup() {
    if [ -n "$DPID" ]; then kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
    bash "$top/tests/support/ceph-rgw.sh" stop "$W/ceph" || true
    rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }
best() { printf '%s\n' "$@" | sort -g | head -1; }

echo "starting a RADOS Gateway in $W/ceph ..."
eval "$(bash "$top/tests/support/ceph-rgw.sh" start "$W/ceph")"
cat >"$W/s3cfg" <<EOF
[default]
access_key = $BV_S3_ACCESS_KEY
secret_key = $BV_S3_SECRET_KEY
host_base = ${BV_S3_ENDPOINT#http://}
host_bucket = ${BV_S3_ENDPOINT#http://}
use_https = False
bucket_location = us-east-1
EOF
s3() { s3cmd -c "$W/s3cfg" --no-progress "$@"; }

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

echo "preparing $SIZE of random data ..."
head -c "$SIZE" /dev/urandom >"$W/rand.raw"
qemu-img convert -f raw -O qcow2 "$W/rand.raw" "$IMG/d0.qcow2"
rm -f "$W/rand.raw"
post /drives '{"id":"d0","format":"qcow2","existing":true}' >/dev/null
after=$(head_seq)
bid=$(post /drives/d0/backups '{"kind":"full"}' | jq -r .backup.id)
[ "$(wait_done d0 "$after")" = null ] || { echo "backup failed" >&2; exit 1; }
link=$IMG/$(curl -sf "$API/backups/$bid" | jq -r .file)
bytes=$(stat -c %s "$link")
echo "backup $bid: $bytes bytes in $link"
rel=$(curl -sf "$API/backups/$bid" | jq -r .file)
key="d0/$(curl -sf "$API/backups/$bid" | jq -r .chain)/$(basename "$rel")"

# restore_time FILE: seconds from the POST to BLOCK_JOB_COMPLETED (the image is removed)
restore_time() {
    local after t0 t1 job err
    after=$(head_seq)
    t0=$(now)
    job=$(post "/backups/$bid/restore" "{\"file\":\"$1\"}" | jq -r .id)
    err=$(wait_done "$job" "$after")
    t1=$(now)
    [ "$err" = null ] || { echo "restore failed: $err" >&2; exit 1; }
    rm -f "$IMG/$1"
    echo "$t1 - $t0" | bc -l
}

ours=() put=() get=() dl=() rloc=() rrem=()
for ((i = 0; i < RUNS; i++)); do
    post /remotes "{\"name\":\"r$i\",\"endpoint\":\"$BV_S3_ENDPOINT\",\"bucket\":\"ours-$i\",
        \"access_key\":\"$BV_S3_ACCESS_KEY\",\"secret_key\":\"$BV_S3_SECRET_KEY\",
        \"create_bucket\":true}" >/dev/null
    cat "$link" >/dev/null
    after=$(head_seq)
    t0=$(now)
    job=$(post "/backups/$bid/replicate" "{\"remote\":\"r$i\"}" | jq -r .id)
    err=$(wait_done "$job" "$after")
    t1=$(now)
    [ "$err" = null ] || { echo "replicate failed: $err" >&2; exit 1; }
    ours+=("$(echo "$t1 - $t0" | bc -l)")

    s3 mb "s3://theirs-$i" >/dev/null
    cat "$link" >/dev/null
    t0=$(now); s3 put "$link" "s3://theirs-$i/link.qcow2" >/dev/null; t1=$(now)
    put+=("$(echo "$t1 - $t0" | bc -l)")
    t0=$(now); s3 get --force "s3://theirs-$i/link.qcow2" "$W/back.qcow2" >/dev/null; t1=$(now)
    get+=("$(echo "$t1 - $t0" | bc -l)")
    cmp -s "$link" "$W/back.qcow2" || { echo "s3cmd get returned other bytes" >&2; exit 1; }
    rm -f "$W/back.qcow2"
    t0=$(now)
    BV_S3_ACCESS_KEY=$BV_S3_ACCESS_KEY BV_S3_SECRET_KEY=$BV_S3_SECRET_KEY \
        "$BVS3" get "$BV_S3_ENDPOINT" "ours-$i" "$key" "$W/back.qcow2" >/dev/null
    t1=$(now)
    dl+=("$(echo "$t1 - $t0" | bc -l)")
    cmp -s "$link" "$W/back.qcow2" || { echo "bvs3 get returned other bytes" >&2; exit 1; }
    rm -f "$W/back.qcow2"

    cat "$link" >/dev/null
    rloc+=("$(restore_time "local-$i.qcow2")")
    mv "$link" "$link.aside"
    rrem+=("$(restore_time "bucket-$i.qcow2")")
    mv "$link.aside" "$link"
done
o=$(best "${ours[@]}"); p=$(best "${put[@]}"); g=$(best "${get[@]}")
mib=$(echo "$bytes / 1048576" | bc -l)
printf '\n%-46s %8s %10s\n' "$SIZE random link ($bytes bytes), one RGW" "best s" "MiB/s"
printf '%-46s %8.3f %10.1f   (runs: %s)\n' "replicate job (ours)" "$o" "$(echo "$mib / $o" | bc -l)" "${ours[*]}"
printf '%-46s %8.3f %10.1f   (runs: %s)\n' "s3cmd put" "$p" "$(echo "$mib / $p" | bc -l)" "${put[*]}"
printf '%-46s %8.3f %10.1f   (runs: %s)\n' "s3cmd get (reference)" "$g" "$(echo "$mib / $g" | bc -l)" "${get[*]}"
d=$(best "${dl[@]}"); rl=$(best "${rloc[@]}"); rr=$(best "${rrem[@]}")
printf '%-46s %8.3f %10.1f   (runs: %s)\n' "bvs3 get (ours)" "$d" "$(echo "$mib / $d" | bc -l)" "${dl[*]}"
printf '%-46s %8.3f %10.1f   (runs: %s)\n' "restore, link on local disk" "$rl" "$(echo "$mib / $rl" | bc -l)" "${rloc[*]}"
printf '%-46s %8.3f %10.1f   (runs: %s)\n' "restore, link only in the bucket" "$rr" "$(echo "$mib / $rr" | bc -l)" "${rrem[*]}"
printf '%-46s %8.2f   (target <= 1.0)\n' "upload ratio ours / s3cmd" "$(echo "$o / $p" | bc -l)"
printf '%-46s %8.2f   (target <= 1.0)\n' "download ratio bvs3 / s3cmd get" "$(echo "$d / $g" | bc -l)"
printf '%-46s %8.2f   (target <= 2.0)\n' "restore ratio bucket / local" "$(echo "$rr / $rl" | bc -l)"
