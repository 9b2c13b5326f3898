#!/usr/bin/env bash
# Replay time of today's agent against the Foundation's own binary (commit abd6998, decoding
# only, before any detection existed), on the capture and 200-rule policy that
# replay-vs-suricata.sh makes: the Detection issue allows at most a 20% slowdown with that
# policy.
#
#   agent/benches/replay-vs-foundation.sh [RUNS]
#
# Builds the Foundation's binary once (in a temporary worktree, kept under
# target/bench/foundation/), builds today's agent, then times the Foundation, today's agent
# with its built-in detectors and today's agent with the policy, RUNS times each (default 40),
# one run of each in turn so all three see the same machine state (timings on a shared
# machine drift by several percent within a minute). Prints median and minimum wall time and
# each median's ratio to the Foundation's. Needs git, python3 and the files of
# replay-vs-suricata.sh (made by running it first if they are missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-40}
foundation_rev=abd6998
out=target/bench
pcap="$out/bench-2000000-seed2.pcap"
policy="$out/policy-200.toml"
if [ ! -s "$pcap" ] || [ ! -s "$policy" ]; then
  agent/benches/replay-vs-suricata.sh 1 >/dev/null
fi
foundation="$out/foundation/target/release/otwatch-agent"
if [ ! -x "$foundation" ]; then
  tree="$out/foundation/src"
  rm -rf "$tree"
  git worktree add --detach "$tree" "$foundation_rev" >/dev/null
  CARGO_TARGET_DIR="$PWD/$out/foundation/target" \
    cargo build --quiet --release -p otwatch-agent --manifest-path "$tree/Cargo.toml"
  git worktree remove --force "$tree"
fi
cargo build --quiet --release -p otwatch-agent --bin otwatch-agent
agent=target/release/otwatch-agent
python3 - "$runs" "$foundation" "$agent" "$pcap" "$policy" <<'PY'
import statistics, subprocess, sys, time
runs, foundation, agent, pcap, policy = int(sys.argv[1]), *sys.argv[2:]
replay = ["replay", "--no-progress", "--pcap", pcap]
commands = [
    ("Foundation (decoding only)", [foundation, *replay]),
    ("now, built-in detectors", [agent, *replay]),
    ("now, 200-rule policy", [agent, *replay, "--policy", policy]),
]
def run(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start
for _, cmd in commands:  # warm-up: page cache, binaries
    run(cmd)
times = {name: [] for name, _ in commands}
for _ in range(runs):
    for name, cmd in commands:
        times[name].append(run(cmd))
base = statistics.median(times[commands[0][0]])
print(f"median of {runs} runs each, interleaved\n")
print("| binary | median (ms) | min (ms) | ratio to the Foundation |")
print("|---|---|---|---|")
for name, _ in commands:
    m = statistics.median(times[name])
    print(f"| {name} | {m * 1000:.1f} | {min(times[name]) * 1000:.1f} | {m / base:.2f}x |")
PY
