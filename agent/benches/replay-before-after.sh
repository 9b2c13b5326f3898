#!/usr/bin/env bash
# Replay time of this tree's agent against another build of it (the commit before a change),
# on the 2M-packet capture and the 200-rule policy of replay-vs-suricata.sh, without a policy
# (built-in detectors) and with it. Used to hold a refactoring to "within 5% of before".
#
#   agent/benches/replay-before-after.sh BEFORE_BINARY [RUNS]
#   # e.g. the commit before: git worktree add /tmp/before HEAD~1 &&
#   #   cargo build --release -p otwatch-agent --manifest-path /tmp/before/Cargo.toml
#
# Runs each of the four commands RUNS times (default 20), one of each in turn, so all see the
# same machine state, with Suricata 7 on the same file as the peer in each round when it is
# installed (../shared/README.md). Prints median and minimum wall and CPU time (user + system)
# and the after/before ratios of the medians.
set -euo pipefail
before=${1:?usage: $0 BEFORE_BINARY [RUNS]}
runs=${2:-20}
cd "$(dirname "$0")/../.."
out=target/bench
pcap="$out/bench-2000000-seed2.pcap"
policy="$out/policy-200.toml"
if [ ! -s "$pcap" ] || [ ! -s "$policy" ]; then
  agent/benches/replay-vs-suricata.sh 1 >/dev/null
fi
cargo build --quiet --release -p otwatch-agent --bin otwatch-agent
after=target/release/otwatch-agent
suricata=$(command -v suricata || true)
mkdir -p "$out/suricata-before-after"
python3 - "$runs" "$before" "$after" "$pcap" "$policy" "$suricata" "$out/suricata-before-after" <<'PY'
import os, statistics, subprocess, sys, time
runs, before, after, pcap, policy, suricata, logs = int(sys.argv[1]), *sys.argv[2:]
replay = ["replay", "--no-progress", "--pcap", pcap]
commands = [
    ("before, built-in detectors", [before, *replay]),
    ("after, built-in detectors", [after, *replay]),
    ("before, 200-rule policy", [before, *replay, "--policy", policy]),
    ("after, 200-rule policy", [after, *replay, "--policy", policy]),
]
if suricata:
    commands.append(("Suricata 7 (peer)", [suricata, "-r", pcap, "-S", "../shared/tools/suricata-peer.rules",
        "--set", "app-layer.protocols.modbus.enabled=yes",
        "--set", "vars.address-groups.WRITERS=[10.10.0.5]",
        "--runmode", "single", "-k", "none", "-l", logs]))
def run(cmd):
    # Wall time, and the CPU time (user + system) of the process: on a shared machine the
    # wall time takes every other process's bursts, the CPU time far fewer.
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{cmd[0]} failed")
    return wall, usage.ru_utime + usage.ru_stime
for _, cmd in commands:  # warm-up: page cache, binaries
    run(cmd)
times = {name: [] for name, _ in commands}
cpu = {name: [] for name, _ in commands}
for _ in range(runs):
    for name, cmd in commands:
        wall, used = run(cmd)
        times[name].append(wall)
        cpu[name].append(used)
print(f"median of {runs} runs each, interleaved\n")
print("| binary | wall median (ms) | wall min (ms) | CPU median (ms) | CPU min (ms) | after / before (wall, CPU medians) |")
print("|---|---|---|---|---|---|")
for i, (name, _) in enumerate(commands):
    m, c = statistics.median(times[name]), statistics.median(cpu[name])
    ratio = ""
    if i % 2 == 1 and i < 4:
        before = commands[i - 1][0]
        ratio = f"{m / statistics.median(times[before]):.3f}, {c / statistics.median(cpu[before]):.3f}"
    print(f"| {name} | {m * 1000:.1f} | {min(times[name]) * 1000:.1f} | {c * 1000:.1f} | {min(cpu[name]) * 1000:.1f} | {ratio} |")
PY
