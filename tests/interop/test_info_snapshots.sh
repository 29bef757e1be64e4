#!/bin/bash
# bvimg info lists a qcow2 image's internal snapshots as qemu-img info does:
# the human "Snapshot list:" table (ID, TAG, VM SIZE, DATE in local time,
# VM CLOCK, ICOUNT) and the "snapshots" array of --output=json, compared
# byte for byte with qemu-img's output on the same files.
#   - snapshots made with `qemu-img snapshot -c` (gaps in the ids after -d,
#     a name longer than the TAG column, quotes and a backslash in a name);
#   - entries whose VM state size, VM clock and icount are set (a VM's savevm
#     writes them; qemu-img cannot, so the table is patched here), and an
#     icount of -1 (not recorded: blank column, no "icount" key);
#   - two time zones (the DATE column is local time);
#   - an image without snapshots shows neither the table nor the key, and an
#     overlay lists its own snapshots, not its backing file's;
#   - an overlay's backing file: "full-backing-filename" and the human
#     "(actual path: ...)" for a relative name seen from three directories.
. "$(dirname "$0")/lib.sh"

# same IMG...: bvimg info must print what qemu-img info prints, human and json.
same() {
    local img out_q out_b
    for img in "$@"; do
        for o in human json; do
            out_q=$(qemu-img info --output=$o "$img") ||
                { fail "qemu-img info $img"; continue; }
            out_b=$(bv info --output=$o "$img") || { fail "bvimg info --output=$o $img"; continue; }
            [ "$out_q" = "$out_b" ] ||
                fail "info --output=$o $img differs:$(diff <(echo "$out_q") <(echo "$out_b"))"
        done
    done
}

img=$T/s.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-io -c "write -P 0x11 0 1M" "$img" >/dev/null
note "no snapshots"
same "$img"
bv info "$img" | grep -q '^Snapshot list:' && fail "a table without snapshots"
bv info --output=json "$img" | grep -q '"snapshots"' && fail "a snapshots key without snapshots"

note "qemu-img snapshot -c"
qemu-img snapshot -c first "$img"
qemu-io -c "write -P 0x22 64k 64k" "$img" >/dev/null
qemu-img snapshot -c 'a tag much longer than sixteen columns' "$img"
qemu-img snapshot -c 'q"uo\te' "$img"
qemu-img snapshot -c fourth "$img"
qemu-img snapshot -d first "$img"
same "$img"
[ "$(bv info "$img" | sed -n '/^Snapshot list:/,/^Format/p' | grep -c '^[0-9]')" = 3 ] ||
    fail "three snapshot rows expected"
bv info --output=json "$img" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert [s["id"] for s in d["snapshots"]] == ["2", "3", "4"], d["snapshots"]
assert d["snapshots"][1]["name"] == "q\"uo\\te", d["snapshots"][1]' || fail "json snapshots"

note "VM state size, VM clock, icount (patched as a VM would write them)"
# Entry 0: 1.5 GiB of VM state (the 32-bit field and the 64-bit extra field),
# VM clock 1:02:03.456 (+789 ns), icount 123456789, taken 2023-11-14 22:13:20 UTC.
# Entry 1: icount -1, i.e. not recorded.
python3 - "$img" <<'EOF'
import struct, sys
f = open(sys.argv[1], "r+b")
hdr = f.read(72)
count, = struct.unpack(">I", hdr[60:64])
pos, = struct.unpack(">Q", hdr[64:72])
for i in range(count):
    f.seek(pos)
    e = f.read(40)
    idlen, nlen = struct.unpack(">HH", e[12:16])
    xlen, = struct.unpack(">I", e[36:40])
    assert xlen >= 24, xlen
    if i == 0:
        f.seek(pos + 16); f.write(struct.pack(">II", 1700000000, 5))
        f.seek(pos + 24); f.write(struct.pack(">QI", 3723456000789, 1610612736))
        f.seek(pos + 40); f.write(struct.pack(">Q", 1610612736))
        f.seek(pos + 56); f.write(struct.pack(">Q", 123456789))
    if i == 1:
        f.seek(pos + 56); f.write(struct.pack(">Q", 2**64 - 1))
    pos += (40 + xlen + idlen + nlen + 7) & ~7
f.close()
EOF
same "$img"
TZ=UTC same "$img"
TZ='XYZ-5:30' same "$img"
want="2         a tag much longer than sixteen columns  1.5 GiB 2023-11-14 22:13:20 01:02:03.456  123456789"
row=$(TZ=UTC qemu-img info "$img" | grep '^2 ')
[ "$row" = "$want" ] || fail "patched row, qemu-img: '$row'"
row=$(TZ=UTC bv info "$img" | grep '^2 ')
[ "$row" = "$want" ] || fail "patched row: '$row'"
bv info --output=json "$img" | python3 -c '
import json, sys
s = json.load(sys.stdin)["snapshots"]
assert s[0]["vm-state-size"] == 1610612736 and s[0]["icount"] == 123456789, s[0]
assert s[0]["vm-clock-sec"] == 3723 and s[0]["vm-clock-nsec"] == 456000789, s[0]
assert s[0]["date-sec"] == 1700000000 and s[0]["date-nsec"] == 5, s[0]
assert "icount" not in s[1], s[1]' || fail "patched json"

note "an overlay lists its own snapshots only"
top=$T/top.qcow2
qemu-img create -q -f qcow2 -b "$img" -F qcow2 "$top"
same "$top"
qemu-img snapshot -c on-top "$top"
same "$top"
[ "$(bv info --output=json "$top" | grep -c '"id"')" = 1 ] || fail "overlay: one snapshot expected"

note "relative backing names: full-backing-filename and (actual path: ...) as qemu-img"
mkdir -p "$T/sub"
cp "$img" "$T/base.qcow2"
(cd "$T/sub" && qemu-img create -q -f qcow2 -b ../base.qcow2 -F qcow2 rel.qcow2)
same "$T/sub/rel.qcow2"
(cd "$T" && same sub/rel.qcow2)
(cd "$T/sub" && same rel.qcow2)
bv info --output=json "$T/sub/rel.qcow2" | grep -q "\"full-backing-filename\": \"$T/sub/../base.qcow2\"" ||
    fail "full-backing-filename of a relative name"

note "bvimg check stays clean"
bv check "$img" >/dev/null || fail "bvimg check $img"
finish
