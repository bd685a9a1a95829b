#!/usr/bin/env bash
# The issue's benchmark figures: bert-base, seq 128, w1a4, under lan and wan, random
# weights, three parties in one process. Writes results/bert-base-w1a4-seq128-{lan,wan}.{json,txt}
# and appends to results/runs.csv. Needs ~14 GB of memory and a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p harness
for net in lan wan; do
    out="results/bert-base-w1a4-seq128-$net"
    echo "== bert-base w1a4 seq 128 $net"
    ./target/release/harness bert --seq 128 --quant w1a4 --net "$net" --seed 5 --quiet \
        --json "$out.json" --csv results/runs.csv | tee "$out.txt"
done
{
    echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > results/machine.txt
