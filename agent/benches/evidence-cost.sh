#!/usr/bin/env bash
# What keeping evidence costs a replay: this tree's agent against another build (the commit
# before evidence), on the 2M-packet capture of replay-vs-suricata.sh, without delivery (the
# pipeline's per-frame hook alone) and delivering to a collector on loopback with evidence off
# and on (every frame of every flow copied into the evidence buffer), with Suricata 7 on the
# same file as the peer in each round when it is installed (../shared/README.md).
#
#   agent/benches/evidence-cost.sh BEFORE_BINARY [RUNS]
#   # e.g. git worktree add /tmp/before HEAD~1 && cargo build --release -p otwatch-agent \
#   #   --manifest-path /tmp/before/Cargo.toml --target-dir /tmp/before-target
#
# Each command runs RUNS times (default 10), one of each in turn. Every delivering run starts
# from an empty outbox and ends when the outbox is empty (the replay drains it), so each
# delivers the same records; the collector already holds them after the first round, as a
# collector that an agent retries to does. Prints median and minimum wall and CPU time.
set -euo pipefail
before=${1:?usage: $0 BEFORE_BINARY [RUNS]}
runs=${2:-10}
cd "$(dirname "$0")/../.."
out=target/bench
pcap="$out/bench-2000000-seed2.pcap"
[ -s "$pcap" ] || agent/benches/replay-vs-suricata.sh 1 >/dev/null
cargo build --quiet --release --bins
after=target/release/otwatch-agent
collector=target/release/otwatch-collector
work=$(mktemp -d)
trap 'kill $serve 2>/dev/null || true; rm -rf "$work"' EXIT
"$collector" init --data "$work/collector" >/dev/null
token=$("$collector" enroll --data "$work/collector" --agent bench | grep -o 'otw_[A-Za-z0-9_-]*' | head -n1)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$collector" serve --data "$work/collector" --listen "127.0.0.1:$port" >/dev/null 2>"$work/serve.log" &
serve=$!
for _ in $(seq 100); do
  curl -skf "https://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
suricata=$(command -v suricata || true)
mkdir -p "$out/suricata-evidence"
OTWATCH_COLLECTOR_TOKEN=$token python3 - "$runs" "$before" "$after" "$pcap" "$port" "$work" "$suricata" "$out/suricata-evidence" <<'PY'
import os, shutil, statistics, subprocess, sys, time
runs, before, after, pcap, port, work, suricata, logs = int(sys.argv[1]), *sys.argv[2:]
replay = ["replay", "--no-progress", "--pcap", pcap]
deliver = ["--agent-name", "bench", "--collector", f"https://127.0.0.1:{port}",
           "--ca", f"{work}/collector/ca.pem", "--outbox", f"{work}/outbox"]
commands = [
    ("before, no delivery", [before, *replay], {}),
    ("after, no delivery", [after, *replay], {}),
    ("before, delivering", [before, *replay, *deliver], {}),
    ("after, delivering, evidence off", [after, *replay, *deliver], {"OTWATCH_EVIDENCE": "off"}),
    ("after, delivering, evidence on (high)", [after, *replay, *deliver], {"OTWATCH_EVIDENCE": "high"}),
]
if suricata:
    commands.append(("Suricata 7 (peer)", [suricata, "-r", pcap, "-S", "../shared/tools/suricata-peer.rules",
        "--set", "app-layer.protocols.modbus.enabled=yes",
        "--set", "vars.address-groups.WRITERS=[10.10.0.5]",
        "--runmode", "single", "-k", "none", "-l", logs], {}))
def run(cmd, env):
    shutil.rmtree(f"{work}/outbox", ignore_errors=True)
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, **env})
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{cmd} failed")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
for _, cmd, env in commands:  # warm-up: page cache, binaries, the collector's first copy
    run(cmd, env)
times = {name: [] for name, _, _ in commands}
cpu = {name: [] for name, _, _ in commands}
rss = {name: [] for name, _, _ in commands}
for _ in range(runs):
    for name, cmd, env in commands:
        wall, used, peak = run(cmd, env)
        times[name].append(wall)
        cpu[name].append(used)
        rss[name].append(peak)
print(f"median of {runs} runs each, interleaved\n")
print("| command | wall median (ms) | wall min (ms) | CPU median (ms) | CPU min (ms) | peak RSS median (MB) |")
print("|---|---|---|---|---|---|")
for name, _, _ in commands:
    m, c = statistics.median(times[name]), statistics.median(cpu[name])
    print(f"| {name} | {m * 1000:.1f} | {min(times[name]) * 1000:.1f} | {c * 1000:.1f} | {min(cpu[name]) * 1000:.1f} | {statistics.median(rss[name]):.1f} |")
PY
