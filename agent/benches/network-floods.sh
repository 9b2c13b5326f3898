#!/usr/bin/env bash
# What the floods of issue 19 cost a replay and what they raise: 1,000,000 SYNs to one PLC's
# port 502 from 1,000,000 source addresses in 5 s, and 2,000,000 read requests to one PLC in
# 20 s, each from another source address, none answered. Prints wall and CPU time, peak RSS
# and the network-level alerts of each.
#
#   agent/benches/network-floods.sh [AGENT_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
agent=${1:-target/release/otwatch-agent}
[ "$agent" != target/release/otwatch-agent ] || cargo build --quiet --release -p otwatch-agent --bin otwatch-agent
out=target/bench
mkdir -p "$out"
python3 - "$out" <<'PY'
import os, struct, sys
out = sys.argv[1]
def write(path, frames):
    if os.path.exists(path):
        return
    with open(path + ".partial", "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames:
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)) + frame)
    os.rename(path + ".partial", path)
plc_mac, src_mac = bytes.fromhex("001d9c000009"), bytes.fromhex("026666666666")
plc = bytes([10, 0, 0, 9])
def tcp(src, sport, flags, payload=b""):
    tcph = struct.pack("!HHIIBBHHH", sport, 502, 1, 0, 5 << 4, flags, 64240, 0, 0)
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, plc)
    return plc_mac + src_mac + b"\x08\x00" + iph + tcph + payload
def syns():
    for n in range(1_000_000):
        yield 1_700_000_000 + n * 5 / 1_000_000, tcp(struct.pack("!I", 0xAC100000 + n), 1024 + n % 60000, 0x02)
def requests():
    for n in range(2_000_000):
        adu = struct.pack("!HHHBBHH", n & 0xFFFF, 0, 6, 1, 3, 0, 1)
        yield 1_700_000_000 + n * 20 / 2_000_000, tcp(struct.pack("!I", 0x0A400000 + n), 30000, 0x18, adu)
write(f"{out}/syn-flood-1m.pcap", syns())
write(f"{out}/request-flood-2m.pcap", requests())
PY
for pcap in "$out/syn-flood-1m.pcap" "$out/request-flood-2m.pcap"; do
  alerts=$(mktemp)
  /usr/bin/time -f "$(basename "$pcap"): wall %e s, CPU %U+%S s, peak RSS %M KB" \
    "$agent" replay --no-progress --pcap "$pcap" --alerts "$alerts" >/dev/null
  python3 - "$alerts" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    a = json.loads(line)
    if a["rule"].startswith(("dos.", "spoof.")):
        print(f"  {a['rule']} {a['src_ip']} -> {a['dst_ip']}:{a['dst_port']} x{a['count']}: {a['message'][:160]}")
PY
  rm -f "$alerts"
done
