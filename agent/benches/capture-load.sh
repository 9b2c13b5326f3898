#!/usr/bin/env bash
# Live capture under load: each capture backend of otwatch-agent (ring, ring with two workers
# in a fanout group, pnet) and Suricata 7 in
# af-packet mode (tpacket-v3), each with detection running, receive the same Modbus traffic
# replayed onto a veth pair at rising rates. For each rate: frames sent, frames the capture
# received, loss, and the capture process's CPU (user+system, % of one core).
#
#   agent/benches/capture-load.sh [SECONDS_PER_STEP] [RATES...]
#
# Needs root (it makes a network namespace; every frame stays inside it), python3, and the
# benchmark capture (generated under target/bench/ if missing). SECONDS_PER_STEP defaults to 5,
# RATES (frames/s, 0 = as fast as the sender can) to "100000 200000 300000 400000 500000 0".
# Each step is bounded: SECONDS x RATE frames (3,000,000 at most for the unpaced step), and
# each capture is stopped after the sender finishes. Suricata is skipped with a note when it
# is not installed (see ../shared/README.md).
# LATENCY_WITH_OUTBOX=1 runs the latency step with an outbox (a collector it cannot reach), so
# each alert is durable before its line is written, as on a deployed agent; WITH_OUTBOX=1 runs
# every step so, the evidence buffer on (every frame kept; OTWATCH_EVIDENCE=off turns it off).
# OTWATCH_AGENT_BIN=PATH measures that agent binary instead of this tree's (another build, for
# a before/after comparison).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-5}
shift || true
rates=${*:-100000 200000 300000 400000 500000 0}
[ "$(id -u)" = 0 ] || { echo "capture-load.sh: needs root (network namespace, raw sockets)"; exit 2; }
out=target/bench/capture-load
mkdir -p "$out"
pcap=target/bench/bench-200000-seed1.pcap
[ -s "$pcap" ] || python3 ../shared/tools/gen-modbus-pcap.py --packets 200000 --seed 1 --out "$pcap"
[ -n "${OTWATCH_AGENT_BIN:-}" ] || cargo build --release -p otwatch-agent --bin otwatch-agent >/dev/null
cargo build --release -p otwatch-tests --bin otwatch-sim >/dev/null
agent=${OTWATCH_AGENT_BIN:-$PWD/target/release/otwatch-agent}
sim=$PWD/target/release/otwatch-sim
have_suricata=$(command -v suricata >/dev/null && echo yes || echo no)

ns=otwload-$$
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link add cap0 type veth peer name send0
ip -n "$ns" link set cap0 up
ip -n "$ns" link set send0 up
ip -n "$ns" link set lo up

# CPU seconds (user + system) a process has used.
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }

# Waits until FILE contains TEXT (10 s at most).
wait_for() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "capture-load.sh: $1 never said '$2'" >&2; cat "$1" >&2; return 1
}

results="$out/results.txt"
: > "$results"
# Delivery to a collector the agent cannot reach (port 9 on the namespace's loopback): an
# outbox, evidence on, every alert durable before its line is written. Sets the array `delivery`.
outbox_args() { # kind
  rm -rf "$out/outbox-$1"
  [ -s "$out/ca.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -keyout "$out/ca.key" -out "$out/ca.pem" -days 1 -subj /CN=bench 2>/dev/null
  echo otw_bench > "$out/token"
  delivery=(--collector https://127.0.0.1:9 --ca "$out/ca.pem"
    --collector-token-file "$out/token" --outbox "$out/outbox-$1")
}
run() { # kind rate
  local kind=$1 rate=$2 count log pid c0 c1 sent received
  count=$(( rate > 0 ? rate * seconds : 3000000 ))
  log="$out/$kind-$rate.log"
  rm -f "$log"
  case $kind in
    ring|pnet|ring-2)
      local backend=${kind%-2} workers=1 delivery=()
      [ "$kind" = ring-2 ] && workers=2
      [ "${WITH_OUTBOX:-0}" = 1 ] && outbox_args "$kind"
      ip netns exec "$ns" "$agent" run --iface cap0 --capture-backend "$backend" \
        --workers "$workers" --agent-name load "${delivery[@]}" 2>"$log" >/dev/null &
      pid=$!
      wait_for "$log" "capturing with"
      ;;
    suricata)
      rm -rf "$out/suricata" && mkdir -p "$out/suricata"
      ip netns exec "$ns" suricata -S ../shared/tools/suricata-peer.rules -k none \
        --set app-layer.protocols.modbus.enabled=yes \
        --set vars.address-groups.WRITERS="[10.10.0.5]" \
        --af-packet=cap0 --runmode workers \
        --set af-packet.0.interface=cap0 --set af-packet.0.threads=1 \
        --set af-packet.0.tpacket-v3=yes --set af-packet.0.use-mmap=yes \
        --set af-packet.0.ring-size=65536 --set af-packet.0.block-size=1048576 \
        -l "$out/suricata" >"$log" 2>&1 &
      pid=$!
      wait_for "$out/suricata/suricata.log" "Engine started" || wait_for "$log" "Engine started"
      ;;
  esac
  sleep 0.5
  c0=$(cpu "$pid")
  sent=$(ip netns exec "$ns" "$sim" wire --iface send0 --pcap "$pcap" --count "$count" --pps "$rate")
  sleep 1
  c1=$(cpu "$pid")
  kill -TERM "$pid"
  wait "$pid" || true
  case $kind in
    # The agent's summary at exit: "packets N ... kernel drops K queue drops Q": N is what the
    # pipeline decoded (drops excluded).
    ring|pnet|ring-2) received=$(grep -o 'packets [0-9]*' "$log" | tail -1 | cut -d' ' -f2) ;;
    # "device: cap0: packets: N, drops: D (...)" at exit: N counts what reached the socket,
    # drops included, so the received count is N - D.
    suricata) received=$(grep -h 'device: cap0: packets:' "$out/suricata/suricata.log" | tail -1 \
      | sed -E 's/.*packets: ([0-9]+), drops: ([0-9]+).*/\1 \2/' | awk '{print $1 - $2}') ;;
  esac
  echo "$kind $rate $sent received ${received:-0} cpu $c0 $c1" | tee -a "$results"
}

for rate in $rates; do
  run ring "$rate"
  run ring-2 "$rate"
  run pnet "$rate"
  [ "$have_suricata" = yes ] && run suricata "$rate"
done
[ "$have_suricata" = yes ] || echo "(Suricata is not installed: see ../shared/README.md)"

# Latency from the wire to the alert log: 200 force-listen-only requests (each from its own
# source address, so none folds into another's alert) sent one at a time while the traffic
# above runs at 200,000 frames/s; for each, the time from handing the frame to the kernel to
# seeing its alert line in the agent's --alerts file.
latency_step() { # kind
  local kind=$1 log="$out/latency-$1.log" alerts="$out/latency-$1.jsonl" pid bg
  rm -f "$alerts" "$log"
  # With LATENCY_WITH_OUTBOX=1 the agent also has a collector (unreachable: port 9 on the
  # namespace's loopback), so every alert is made durable in its outbox (one sled flush per
  # batch) before its line is written: the path a deployed agent takes.
  local delivery=()
  if [ "${LATENCY_WITH_OUTBOX:-0}" = 1 ] || [ "${WITH_OUTBOX:-0}" = 1 ]; then
    outbox_args "$kind"
  fi
  ip netns exec "$ns" "$agent" run --iface cap0 --capture-backend "$kind" --agent-name load \
    --alerts "$alerts" "${delivery[@]}" 2>"$log" >/dev/null &
  pid=$!
  wait_for "$log" "capturing with"
  ip netns exec "$ns" "$sim" wire --iface send0 --pcap "$pcap" --count 3000000 --pps 200000 >/dev/null &
  bg=$!
  sleep 1
  ip netns exec "$ns" python3 - "$alerts" "$kind" <<'LAT' | tee -a "$out/latency.txt"
import os, socket, struct, sys, time
path, kind = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("send0", 0))
log = open(path, "rb")
log.seek(0, os.SEEK_END)
lat = []
for i in range(200):
    src = bytes([10, 77, i // 200, i % 200 + 1])
    mbap = struct.pack(">HHHB", i, 0, 6, 1) + bytes([8, 0, 4, 0, 0])
    tcp = struct.pack(">HHIIBBHHH", 40000 + i, 502, 1000, 0, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(mbap), i, 0, 64, 6, 0,
                     src, bytes([10, 10, 1, 10]))
    frame = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip + tcp + mbap
    sent = time.monotonic()
    s.send(frame)
    seen = None
    buf = b""
    while time.monotonic() - sent < 1.0:
        buf += log.read()
        if b"diag.force_listen_only" in buf:
            seen = time.monotonic()
            break
        time.sleep(0.0002)
    lat.append((seen - sent) * 1000 if seen else float("inf"))
    time.sleep(0.02)
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))]
print(f"{kind} latency (ms, 200 alerts, 200,000 frames/s of background): "
      f"p50 {p(0.5):.2f} p99 {p(0.99):.2f} max {lat[-1]:.2f}")
LAT
  kill "$bg" 2>/dev/null || true
  wait "$bg" 2>/dev/null || true
  kill -TERM "$pid"
  wait "$pid" || true
}
: > "$out/latency.txt"
latency_step ring
latency_step pnet

python3 - "$results" "$seconds" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    kind, rate = f[0], int(f[1])
    sent = int(f[f.index("sent") + 1]); secs = float(f[f.index("seconds") + 1])
    pps = float(f[f.index("pps") + 1]); received = int(f[f.index("received") + 1])
    c0, c1 = float(f[-2]), float(f[-1])
    loss = max(0, sent - received) / sent * 100
    cpu = (c1 - c0) / (secs + 1) * 100
    rows.append((kind, rate, pps, sent, received, loss, cpu))
print("| capture | asked (pps) | sent (pps) | frames sent | received | loss | capture CPU (% of a core) |")
print("|---|---|---|---|---|---|---|")
for kind, rate, pps, sent, received, loss, cpu in rows:
    print(f"| {kind} | {rate or 'max'} | {pps:,.0f} | {sent:,} | {received:,} | {loss:.3f}% | {cpu:.0f} |")
print()
for kind in sorted({r[0] for r in rows}):
    ok = [r for r in rows if r[0] == kind and r[5] < 0.1]
    best = max(ok, key=lambda r: r[2], default=None)
    print(f"{kind}: highest rate under 0.1% loss: " + (f"{best[2]:,.0f} pps" if best else "none"))
PY
