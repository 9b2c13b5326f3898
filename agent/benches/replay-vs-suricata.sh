#!/usr/bin/env bash
# Replay throughput and peak memory of `otwatch-agent replay` against Suricata 7 on the same
# capture, in the same run, interleaved so both see the same machine state.
#
#   agent/benches/replay-vs-suricata.sh [RUNS] [PACKETS]
#
# Generates ../shared/tools/gen-modbus-pcap.py --packets PACKETS --seed 2 (default 2,000,000)
# under target/bench/, builds the agent in release mode, and makes a 200-rule policy: the
# policy `otwatch-agent learn` writes for a 200,000-packet capture of the same plant from seed
# 1 (24 rules), plus 176 rules for other masters and PLCs. Then it runs `cat` (streaming the
# file), otwatch with its built-in detectors, otwatch with the 200-rule policy, and Suricata
# (single runmode, Modbus parser on, the peer rule file) RUNS times each (default 5),
# interleaved. Prints a Markdown table of median wall time, packets/s and peak RSS, and the
# ratios. Needs python3 and GNU time; Suricata is skipped with a note if it is not installed
# (see ../shared/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
packets=${2:-2000000}
shared=../shared
out=target/bench
mkdir -p "$out"
pcap="$out/bench-${packets}-seed2.pcap"
if [ ! -s "$pcap" ]; then
  python3 "$shared/tools/gen-modbus-pcap.py" --packets "$packets" --seed 2 --out "$pcap"
fi
cargo build --release -p otwatch-agent --bin otwatch-agent >/dev/null
agent=target/release/otwatch-agent
count=$(python3 - "$pcap" <<'PY'
import struct, sys
f = open(sys.argv[1], 'rb'); f.seek(24); n = 0
while True:
    h = f.read(16)
    if len(h) < 16: break
    f.seek(struct.unpack('<IIII', h)[2], 1); n += 1
print(n)
PY
)
learn_pcap="$out/bench-200000-seed1.pcap"
[ -s "$learn_pcap" ] || python3 "$shared/tools/gen-modbus-pcap.py" --packets 200000 --seed 1 --out "$learn_pcap"
policy="$out/policy-200.toml"
"$agent" learn --no-progress --pcap "$learn_pcap" --out "$out/learned.toml" >/dev/null
python3 - "$out/learned.toml" "$policy" <<'PY'
import sys
learned = open(sys.argv[1]).read()
extra = []
for i in range(176):
    a, b = divmod(i, 16)
    extra.append(f'''
[[asset]]
name = "extra-master-{i}"
address = "10.20.{a}.{b + 1}"
role = "master"

[[asset]]
name = "extra-plc-{i}"
address = "10.30.{a}.{b + 1}"
units = [{1 + i % 3}]
role = "slave"

[[allow]]
name = "extra rule {i}"
from = "extra-master-{i}"
to = "extra-plc-{i}"
functions = ["read", "write_single_register"]
holding_registers = ["0-99", "{400 + i}-{410 + i}"]
write_values = {{ min = 0, max = {1000 + i} }}
rate = "20/s"
''')
open(sys.argv[2], "w").write(learned + "".join(extra))
PY
rules=$(grep -c '^\[\[allow\]\]' "$policy")
agent_args=(replay --no-progress --pcap "$pcap")
have_suricata=$(command -v suricata >/dev/null && echo yes || echo no)
results="$out/results.txt"
: >"$results"
measure() { # name command...
  local name=$1; shift
  /usr/bin/time -f "$name %e %M" -a -o "$results" "$@" >/dev/null 2>&1 || {
    echo "$name failed: $*" >&2; exit 1; }
}
cat "$pcap" >/dev/null  # warm the page cache
for _ in $(seq "$runs"); do
  measure cat cat "$pcap"
  measure otwatch "$agent" "${agent_args[@]}"
  measure otwatch-policy "$agent" "${agent_args[@]}" --policy "$policy"
  if [ "$have_suricata" = yes ]; then
    rm -rf "$out/suricata" && mkdir -p "$out/suricata"
    measure suricata suricata -r "$pcap" -S "$shared/tools/suricata-peer.rules" \
      --set app-layer.protocols.modbus.enabled=yes \
      --set vars.address-groups.WRITERS="[10.10.0.5]" \
      --runmode single -k none -l "$out/suricata"
  fi
done
python3 - "$results" "$count" "$runs" "$have_suricata" "$(nproc)" "$rules" <<'PY'
import statistics, sys
path, count, runs, have_suricata, cores, rules = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
rows = {}
for line in open(path):
    name, wall, rss = line.split()
    rows.setdefault(name, []).append((float(wall), int(rss)))
print(f"{count} packets, median of {runs} runs, {cores} cores\n")
print("| what | median wall (s) | packets/s | peak RSS (MB) | runs (s) |")
print("|---|---|---|---|---|")
med = {}
labels = {"otwatch-policy": f"otwatch, {rules}-rule policy", "otwatch": "otwatch, built-in detectors"}
for name in ("cat", "otwatch", "otwatch-policy", "suricata"):
    if name not in rows: continue
    walls = [w for w, _ in rows[name]]
    m = statistics.median(walls); med[name] = m
    rss = max(r for _, r in rows[name]) / 1024
    print(f"| {labels.get(name, name)} | {m:.3f} | {count / m:,.0f} | {rss:.1f} | {' '.join(f'{w:.2f}' for w in walls)} |")
if "suricata" in med:
    print(f"\notwatch is {med['suricata'] / med['otwatch']:.1f}x Suricata's speed")
    print(f"otwatch with the {rules}-rule policy is {med['suricata'] / med['otwatch-policy']:.1f}x Suricata's speed")
else:
    print("\nSuricata not installed: no ratio (see ../shared/README.md)")
print(f"the {rules}-rule policy costs {100 * (med['otwatch-policy'] / med['otwatch'] - 1):.0f}% over the built-in detectors alone")
print(f"otwatch takes {med['otwatch'] / med['cat']:.1f}x the time of streaming the file (cat)")
PY
