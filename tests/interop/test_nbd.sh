#!/bin/bash
# The NBD export against real clients (contract: "NBD export"): qemu-io writes
# and reads patterns, qemu-img compare of the export against the image file,
# nbdcopy 256 MiB out and back, nbdinfo --map for base:allocation and a dirty
# bitmap (extents exactly the REST extents), a backup under NBD writes equal
# to the drive at job start, a backup point exported read-only (EPERM, reads
# as at the backup), TLS-PSK with nbdinfo, malformed and oversized requests
# (tests/interop/nbd_raw.py) leaving other clients working, 409 on deleting
# an attached drive.  Skips (77) without qemu-io/qemu-img/nbdinfo/nbdcopy.
set -u
: "${BV_DAEMON:?BV_DAEMON must point to the blockvault binary}"
for t in qemu-io qemu-img nbdinfo nbdcopy curl python3; do
    command -v "$t" >/dev/null || { echo "$t not installed: skipping"; exit 77; }
done
HERE=$(cd "$(dirname "$0")" && pwd)
RAW="python3 $HERE/nbd_raw.py"
T=$(mktemp -d "${TMPDIR:-/tmp}/bv-nbd.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
note() { echo "-- $*"; }

# start NAME ARGS...: a daemon with data in $T/NAME; sets URL and DPID.
start() {
    local name=$1 i
    shift
    "$BV_DAEMON" serve --listen 127.0.0.1:0 --data "$T/$name" "$@" >"$T/$name.out" 2>"$T/$name.err" &
    DPID=$!
    PIDS+=("$DPID")
    for i in $(seq 100); do
        grep -q '^listening on' "$T/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    URL=$(sed -n 's/^listening on //p' "$T/$name.out")
    [ -n "$URL" ] || { cat "$T/$name.err"; fail "daemon $name did not start"; exit 1; }
}
# stop PID NAME: SIGTERM, wait, no sanitizer report.
stop() {
    kill "$1"; wait "$1" 2>/dev/null
    if grep -qE 'Sanitizer|runtime error:' "$T/$2.err"; then
        cat "$T/$2.err" >&2; fail "daemon $2 reported a sanitizer error"
    fi
}
# api METHOD PATH [BODY]: prints the body; STATUS gets the HTTP status.
api() {
    local out
    out=$(curl -s -X "$1" -w '\n%{http_code}' "$URL$2" ${3:+-d "$3"})
    STATUS=${out##*$'\n'}
    printf '%s' "${out%$'\n'*}"
}
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
# qio URI CMD...: qemu-io on the export; a pattern mismatch or error fails.
qio() {
    local uri=$1 args=() c
    shift
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -f raw "${args[@]}" "$uri" >"$T/qio.out" 2>&1 || fail "qemu-io $*: $(tail -3 "$T/qio.out")"
    if grep -qiE 'verification failed|error|failed' "$T/qio.out"; then
        fail "qemu-io $*: $(grep -iE 'verification failed|error|failed' "$T/qio.out" | head -3)"
    fi
}
wait_job() {   # JOB_ID: until it is no longer running; prints its final status
    local i st
    for i in $(seq 600); do
        st=$(api GET "/api/v1/jobs/$1" | jget '["status"]' 2>/dev/null)
        case "$st" in concluded|null|"") echo "$st"; return;; esac
        sleep 0.1
    done
    echo "timeout"
}
wait_backup() {   # BID: until complete or failed
    local i st
    for i in $(seq 600); do
        st=$(api GET "/api/v1/backups/$1" | jget '["status"]')
        [ "$st" != running ] && { echo "$st"; return; }
        sleep 0.1
    done
    echo timeout
}

start main
MAIN=$DPID
IMG=$T/main/images
SOCK=$T/main/nbd.sock
[ "$(stat -c %a "$SOCK")" = 600 ] || fail "nbd.sock mode is $(stat -c %a "$SOCK"), want 600"

api POST /api/v1/drives '{"id":"drive0","format":"qcow2","size":"256M"}' >/dev/null
[ "$STATUS" = 201 ] || fail "create drive0: $STATUS"
api POST /api/v1/drives/drive0/bitmaps '{"name":"bitmap0"}' >/dev/null
U=$(api GET /api/v1/drives/drive0 | jget '["nbd_uri"]')
[ "$U" = "nbd+unix:///drive0?socket=$SOCK" ] || fail "nbd_uri is '$U'"

note "qemu-io writes and reads back patterns"
qio "$U" "write -P 0xab 0 512" "write -P 0xfe 16M 256k" "aio_write -P 0x11 1M 64k" \
    "aio_write -P 0x22 2M 64k" "aio_flush" "write -z 4M 1M" "discard 8M 64k" \
    "write -P 0x64 32736k 64k" "flush"
qio "$U" "read -P 0xab 0 512" "read -P 0xfe 16M 256k" "read -P 0x11 1M 64k" \
    "read -P 0x22 2M 64k" "read -P 0 4M 1M" "read -P 0x64 32736k 64k" "read -P 0 100M 1M"
got=$(curl -s "$URL/api/v1/drives/drive0/data?offset=16777216&length=4" | od -An -tx1 | tr -d ' \n')
[ "$got" = fefefefe ] || fail "REST read of an NBD write: $got"

note "bitmap0 over NBD: exactly the REST extents"
nbdinfo --map=qemu:dirty-bitmap:bitmap0 "$U" >"$T/bmap.txt" || fail "nbdinfo --map bitmap"
api GET /api/v1/drives/drive0/bitmaps/bitmap0/extents >"$T/bext.json"
python3 - "$T/bmap.txt" "$T/bext.json" <<'PY' || fail "dirty-bitmap map differs from REST extents"
import json, sys
nbd = [(int(l.split()[0]), int(l.split()[1])) for l in open(sys.argv[1]) if l.split()[2] == "1"]
rest = [(e["offset"], e["length"]) for e in json.load(open(sys.argv[2]))["extents"]]
if nbd != rest or not rest:
    print("nbd:", nbd, "\nrest:", rest, file=sys.stderr); sys.exit(1)
PY

note "base:allocation after known writes"
api POST /api/v1/drives '{"id":"alloc","format":"qcow2","size":"8M"}' >/dev/null
UA=$(api GET /api/v1/drives/alloc | jget '["nbd_uri"]')
qio "$UA" "write -P 1 64k 128k" "write -z 1M 64k" "write -P 2 7M 1M"
nbdinfo --map "$UA" | awk '{print $1, $2, $3}' >"$T/amap.txt"
printf '%s\n' "0 65536 3" "65536 131072 0" "196608 7143424 3" "7340032 1048576 0" >"$T/amap.want"
diff -u "$T/amap.want" "$T/amap.txt" || fail "base:allocation map"

note "qemu-img compare of the export against the image file"
qio "$U" "flush"
out=$(qemu-img compare -U -f raw -F qcow2 "$U" "$IMG/drive0.qcow2" 2>&1) || fail "qemu-img compare: $out"

note "nbdcopy 256 MiB out and back, byte-identical"
python3 - "$T/src.raw" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(256):                 # 1 MiB blocks: random, zero, repeated byte
        f.write(os.urandom(1 << 20) if i % 3 == 0 else bytes(1 << 20) if i % 3 == 1
                else bytes([i]) * (1 << 20))
PY
nbdcopy "$T/src.raw" "$U" || fail "nbdcopy file -> export"
nbdcopy "$U" "$T/back.raw" || fail "nbdcopy export -> file"
cmp "$T/src.raw" "$T/back.raw" || fail "nbdcopy round trip differs"
qio "$U" "flush"
qemu-img compare -U -f raw -F qcow2 "$T/src.raw" "$IMG/drive0.qcow2" >/dev/null 2>&1 ||
    fail "image file differs from what nbdcopy wrote"
rm -f "$T/src.raw" "$T/back.raw"

note "a backup under NBD writes equals the drive at job start"
nbdcopy "$U" "$T/pit.raw"
job=$(api POST /api/v1/jobs '{"type":"backup","device":"drive0","sync":"full","target":"pit.qcow2","format":"qcow2","speed":67108864}')
[ "$STATUS" = 200 ] || [ "$STATUS" = 201 ] || fail "start backup: $STATUS $job"
jid=$(echo "$job" | jget '["id"]')
# writers: qemu-io processes of 10 random 64 KiB writes each, until the job ends
(
    n=0
    while [ ! -e "$T/stop" ]; do
        args=()
        for k in $(seq 10); do
            args+=(-c "write -P $(( (n + k) % 250 + 1 )) $(( (RANDOM * 32768 + RANDOM) % 4000 * 65536 )) 64k")
        done
        qemu-io -f raw "${args[@]}" "$U" >/dev/null 2>&1 || { echo fail >>"$T/writes"; break; }
        echo 10 >>"$T/writes"
        n=$((n + 10))
    done
) & WRITER=$!
st=$(wait_job "$jid")
touch "$T/stop"
wait "$WRITER"
grep -q fail "$T/writes" && fail "qemu-io write during the backup failed"
n=$(grep -c 10 "$T/writes")
[ "$n" -gt 2 ] || fail "only $n write batches happened during the backup (too fast to test)"
echo "   $n batches of 10 NBD writes during the job (final status $st)"
out=$(qemu-img compare -U -f qcow2 -F raw "$IMG/pit.qcow2" "$T/pit.raw" 2>&1) ||
    fail "backup differs from the drive at job start: $out"
rm -f "$T/pit.raw" "$IMG/pit.qcow2"

note "a backup point: read-only, reads as at the backup"
nbdcopy "$U" "$T/atbackup.raw"
b=$(api POST /api/v1/drives/drive0/backups '{"kind":"full"}')
bid=$(echo "$b" | jget '["backup"]["id"]')
st=$(wait_backup "$bid")
[ "$st" = complete ] || fail "backup $bid: $st"
qio "$U" "write -P 0x77 0 1M"
$RAW "$SOCK" readonly "backup/$bid" || fail "backup export accepted a write"
nbdcopy "nbd+unix:///backup/$bid?socket=$SOCK" "$T/bp.raw" || fail "nbdcopy of backup/$bid"
cmp "$T/atbackup.raw" "$T/bp.raw" || fail "backup/$bid does not read as the drive at the backup"
nbdinfo --list "nbd+unix:///?socket=$SOCK" | grep -q "export=\"backup/$bid\"" || fail "LIST lacks backup/$bid"

note "malformed negotiation and bad requests; other clients keep working"
$RAW "$SOCK" silent 30 & SILENT=$!
$RAW "$SOCK" garbage || fail "garbage"
$RAW "$SOCK" bad-options drive0 || fail "bad options"
$RAW "$SOCK" requests drive0 || fail "bad requests"
qio "$U" "read -P 0x77 0 1M"
kill "$SILENT" 2>/dev/null; wait "$SILENT" 2>/dev/null

note "exports and deleting an attached drive"
$RAW "$SOCK" hold alloc >"$T/hold.out" & HOLD=$!
for i in $(seq 50); do grep -q attached "$T/hold.out" && break; sleep 0.1; done
api GET /api/v1/exports >"$T/exports.json"
python3 - "$T/exports.json" "$bid" <<'PY' || fail "GET /api/v1/exports: $(cat "$T/exports.json")"
import json, sys
x = {e["name"]: e for e in json.load(open(sys.argv[1]))["exports"]}
a, d, b = x["alloc"], x["drive0"], x["backup/" + sys.argv[2]]
assert a["drive"] == "alloc" and a["read_only"] is False and a["clients"] == 1, a
assert d["clients"] == 0, d
assert b["backup"] == sys.argv[2] and b["read_only"] is True, b
PY
api DELETE /api/v1/drives/alloc >/dev/null
[ "$STATUS" = 409 ] || fail "DELETE of an attached drive: $STATUS, want 409"
api DELETE '/api/v1/drives/alloc?force=true' >/dev/null
[ "$STATUS" = 204 ] || fail "forced DELETE: $STATUS"
wait "$HOLD"
grep -q disconnected "$T/hold.out" || fail "client not disconnected by the forced delete"
stop "$MAIN" main

note "TCP: start-up refused without TLS where it is needed"
"$BV_DAEMON" serve --listen 127.0.0.1:0 --data "$T/x" --nbd-listen 0.0.0.0:0 >/dev/null 2>"$T/x.err" &&
    fail "non-loopback NBD without TLS started"
grep -q 'nbd-tls-psk' "$T/x.err" || fail "no reason given: $(cat "$T/x.err")"
echo secret >"$T/token"
"$BV_DAEMON" serve --listen 127.0.0.1:0 --data "$T/x" --token-file "$T/token" \
    --nbd-listen 127.0.0.1:0 >/dev/null 2>"$T/x.err" && fail "token + NBD TCP without TLS started"

if command -v psktool >/dev/null; then
    note "TLS-PSK with nbdinfo"
    psktool -u alice -p "$T/keys.psk" >/dev/null 2>&1
    psktool -u alice -p "$T/wrong.psk" >/dev/null 2>&1
    start tls --nbd-listen 127.0.0.1:0 --nbd-tls-psk "$T/keys.psk" --token-file "$T/token"
    TPID=$DPID
    curl -s -H "Authorization: Bearer secret" -X POST "$URL/api/v1/drives" \
        -d '{"id":"d","format":"raw","size":"1M"}' >/dev/null
    TU=$(curl -s -H "Authorization: Bearer secret" "$URL/api/v1/drives/d" | jget '["nbd_uri"]')
    case "$TU" in nbds://127.0.0.1:*/d) ;; *) fail "TLS nbd_uri '$TU'";; esac
    nbdinfo "${TU/nbds:\/\//nbds://alice@}?tls-psk-file=$T/keys.psk" >/dev/null 2>&1 ||
        fail "good key refused"
    nbdinfo "${TU/nbds:\/\//nbds://alice@}?tls-psk-file=$T/wrong.psk" >/dev/null 2>&1 &&
        fail "wrong key accepted"
    nbdinfo "${TU/nbds:/nbd:}" >/dev/null 2>&1 && fail "plain client accepted on a TLS port"
    nbdcopy "${TU/nbds:\/\//nbds://alice@}?tls-psk-file=$T/keys.psk" "$T/tls.raw" || fail "nbdcopy over TLS"
    [ "$(stat -c %s "$T/tls.raw")" = 1048576 ] || fail "TLS copy size"
    stop "$TPID" tls
else
    echo "psktool missing: TLS part skipped"
fi

[ "$FAILS" -eq 0 ] || { echo "$FAILS failure(s)"; exit 1; }
echo "all NBD checks passed"
