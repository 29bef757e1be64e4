#!/usr/bin/env bash
# A throw-away single-node Ceph RADOS Gateway for the S3 tests and benchmarks.
#
#   ceph-rgw.sh start DIR   bring up mon + osd (bluestore over a sparse file) + radosgw (beast on
#                           a free loopback port) with everything inside DIR (created, must not
#                           exist), create an S3 user and print, on stdout, shell assignments:
#                             BV_S3_ENDPOINT=http://127.0.0.1:PORT
#                             BV_S3_ACCESS_KEY=…  BV_S3_SECRET_KEY=…  BV_S3_REGION=us-east-1
#                           (also written to DIR/env).  Exit 77 when the packages are missing or
#                           the cluster does not come up (the reason on stderr), 0 when ready.
#   ceph-rgw.sh stop DIR    stop what start started, by the PIDs it recorded (radosgw first, then
#                           the OSD, then the monitor), and remove DIR.
#   ceph-rgw.sh start-fixture DIR
#                           for ctest's fixture: stop what an earlier run may have left in DIR,
#                           then start; always exits 0, with DIR/env holding either the
#                           assignments above plus BV_S3_DIR=DIR, or BV_S3_UNAVAILABLE=<reason>.
#   ceph-rgw.sh stop-rgw DIR / start-rgw DIR
#                           stop only the gateway / start it again on the same port.
#
# Why each setting is there: ../shared/reference/ceph-rgw.md (measured bring-up, ~6 s).  No
# manager, no systemd, no realm/zone setup (the gateway's first start creates the defaults).
# Daemons are started with fds 3+ closed so that they do not keep a caller's pipe open.
set -u

die77() { echo "ceph-rgw: $*" >&2; exit 77; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# spawn NAME CMD...: start CMD in the background with fds 3+ closed, record its PID.
spawn() {
    local name=$1
    shift
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] && eval "exec $fd>&-"
        done
        exec "$@" </dev/null >>"$D/log/$name.out" 2>&1
    ) &
    echo "$!" >"$D/pids/$name"
}

# alive PID: running and not a zombie (our PID 1 may reap late)
alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

stop_one() {
    local f="$D/pids/$1" sig=$2 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    alive "$pid" && kill "-$sig" "$pid" 2>/dev/null
    for i in $(seq 1 100); do
        alive "$pid" || break
        sleep 0.1
    done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    rm -f "$f"
}

cmd_stop() {
    [ -d "$D" ] || return 0
    stop_one rgw TERM
    stop_one osd KILL
    stop_one mon TERM
    rm -rf "$D"
}

write_conf() {
    cat >"$D/ceph.conf" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MONPORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/keyring
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
log to stderr = false
err to stderr = true
mon data = $D/mon
osd data = $D/osd
paxos propose interval = 0.05
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
osd objectstore = bluestore
bluestore block path = $D/block.img
bluestore block create = true
bluestore block size = 34359738368
bluestore fsck on mount = false
osd crush chooseleaf type = 0
rgw gc obj min wait = 30
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGWPORT
rgw data = $D/rgw
EOF
}

make_keys() {
    local k="$D/keyring"
    ceph-authtool --create-keyring "$k" --gen-key -n mon. --cap mon 'allow *' >/dev/null &&
    ceph-authtool "$k" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
        --cap mgr 'allow *' --cap mds 'allow *' >/dev/null &&
    ceph-authtool "$k" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' \
        --cap mgr 'allow profile osd' >/dev/null &&
    ceph-authtool "$k" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' >/dev/null
}

fail_start() {
    echo "ceph-rgw: $*" >&2
    for f in "$D"/log/*; do [ -f "$f" ] && { echo "== $f" >&2; tail -5 "$f" >&2; }; done
    [ -n "${BV_CEPH_KEEP:-}" ] || cmd_stop
    exit 77
}

cmd_start() {
    local b
    for b in ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool ceph python3 curl; do
        command -v "$b" >/dev/null || die77 "$b is not installed (scripts/install-deps installs ceph-mon ceph-osd radosgw ceph-common): skipping"
    done
    [ -e "$D" ] && die77 "$D already exists"
    mkdir -p "$D"/{mon,osd,rgw,run,log,pids} || die77 "cannot create $D"
    export CEPH_CONF="$D/ceph.conf"
    FSID=$(python3 -c 'import uuid; print(uuid.uuid4())')
    MONPORT=$(free_port)
    RGWPORT=$(free_port)
    write_conf
    make_keys || fail_start "ceph-authtool failed"
    monmaptool --create --addv a "[v2:127.0.0.1:$MONPORT]" --fsid "$FSID" "$D/monmap" >/dev/null ||
        fail_start "monmaptool failed"
    ceph-mon --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" >>"$D/log/mkfs.out" 2>&1 ||
        fail_start "ceph-mon --mkfs failed"
    spawn mon ceph-mon -f -i a
    local osd_uuid
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" --no-mon-config >>"$D/log/mkfs.out" 2>&1 ||
        fail_start "ceph-osd --mkfs failed"
    timeout 30 ceph --connect-timeout 20 osd new "$osd_uuid" 0 >>"$D/log/mkfs.out" 2>&1 ||
        fail_start "ceph osd new failed (monitor not answering?)"
    spawn osd ceph-osd -f -i 0
    spawn rgw radosgw -f -n client.rgw.a
    local i ak sk
    ak=$(python3 -c 'import secrets; print("BV" + secrets.token_hex(9).upper())')
    sk=$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')
    wait_rgw_port || fail_start "radosgw did not listen on 127.0.0.1:$RGWPORT"
    timeout 60 radosgw-admin user create --uid bv --display-name blockvault \
        --access-key "$ak" --secret-key "$sk" >>"$D/log/user.out" 2>&1 ||
        fail_start "radosgw-admin user create failed"
    for i in $(seq 1 300); do
        curl -sf -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ak:$sk" \
            -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "http://127.0.0.1:$RGWPORT/" && break
        sleep 0.1
    done
    [ "$i" -lt 300 ] || fail_start "no authenticated answer from the gateway"
    {
        echo "BV_S3_ENDPOINT=http://127.0.0.1:$RGWPORT"
        echo "BV_S3_ACCESS_KEY=$ak"
        echo "BV_S3_SECRET_KEY=$sk"
        echo "BV_S3_REGION=us-east-1"
    } | tee "$D/env"
}

# wait_rgw_port: radosgw (our PID) owns the listening socket of $RGWPORT (not someone else).
wait_rgw_port() {
    local i owner=""
    for i in $(seq 1 150); do
        alive "$(cat "$D/pids/rgw")" || return 1
        owner=$(ss -Hltnp "sport = :$RGWPORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1)
        [ "$owner" = "pid=$(cat "$D/pids/rgw")" ] && return 0
        sleep 0.1
    done
    return 1
}

cmd_start_fixture() {
    cmd_stop
    local why rc=0
    why=$( (cmd_start >/dev/null) 2>&1 ) || rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "BV_S3_DIR=$D" >>"$D/env"
        cat "$D/env"
    else
        cmd_stop
        mkdir -p "$D"
        why=$(printf '%s' "$why" | head -1)
        echo "BV_S3_UNAVAILABLE=${why:-the gateway did not start (status $rc)}" >"$D/env"
        cat "$D/env"
    fi
    exit 0
}

# stop-rgw / start-rgw: take the gateway away and bring it back on the same port (tests of a
# remote that goes away); the monitor and the OSD keep running.
cmd_stop_rgw() {
    stop_one rgw TERM
}

cmd_start_rgw() {
    export CEPH_CONF="$D/ceph.conf"
    . "$D/env"
    RGWPORT=${BV_S3_ENDPOINT##*:}
    spawn rgw radosgw -f -n client.rgw.a
    wait_rgw_port || { echo "ceph-rgw: radosgw did not come back on $RGWPORT" >&2; exit 1; }
    local i
    for i in $(seq 1 300); do
        curl -sf -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" \
            --user "$BV_S3_ACCESS_KEY:$BV_S3_SECRET_KEY" \
            -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$BV_S3_ENDPOINT/" && return 0
        sleep 0.1
    done
    echo "ceph-rgw: no authenticated answer after restarting the gateway" >&2
    exit 1
}

[ $# -eq 2 ] || { echo "usage: $0 start|start-fixture|stop|stop-rgw|start-rgw DIR" >&2; exit 2; }
D=$2
case "$1" in
    start) cmd_start ;;
    start-fixture) cmd_start_fixture ;;
    stop) cmd_stop ;;
    stop-rgw) cmd_stop_rgw ;;
    start-rgw) cmd_start_rgw ;;
    *) echo "usage: $0 start|start-fixture|stop|stop-rgw|start-rgw DIR" >&2; exit 2 ;;
esac
