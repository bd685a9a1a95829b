#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time (default 60 s each), one job
# per target, at the lowest CPU priority, starting from the committed seeds in
# fuzz/seeds/<target>/ and the local corpus in fuzz/corpus/<target>/ (not committed).
# Crashing inputs land in fuzz/artifacts/<target>/; copy the ones that found a bug into
# the regression folders (protocol/tests/fuzz_regressions/, harness/tests/fuzz_regressions/)
# so that `cargo test` replays them.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Env: FUZZ_RSS_MB (default 2048), FUZZ_TARGET_DIR (default $CARGO_TARGET_DIR/fuzz or
# fuzz/target), FUZZ_LOG (summary lines appended here, default fuzz/artifacts/runs.log).
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame message safetensors config)
rss=${FUZZ_RSS_MB:-2048}
tdir=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}}
tdir=${tdir:-$PWD/fuzz/target}
log=${FUZZ_LOG:-fuzz/artifacts/runs.log}

declare -A max_len=([frame]=4096 [message]=4096 [safetensors]=65536 [config]=4096)

# No sanitizer: the code is safe Rust (the bugs sought are panics, overflows and
# oversized allocations); debug assertions on, so integer overflow panics.
nice -n 19 cargo +nightly fuzz build --sanitizer none --debug-assertions --target-dir "$tdir"
bin_dir=$(find "$tdir" -maxdepth 3 -type d -path '*/release' | head -n 1)

status=0
printf '%-12s %8s %12s %10s %s\n' target seconds executions exec/s result
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    [ -x "$bin_dir/$t" ] || { echo "no fuzz target $t in $bin_dir" >&2; exit 2; }
    out=$(mktemp)
    start=$(date +%s)
    set +e
    nice -n 19 "$bin_dir/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
        -max_total_time="$secs" -rss_limit_mb="$rss" -malloc_limit_mb="$rss" \
        -max_len="${max_len[$t]:-4096}" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$out" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' || echo 0)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$out" | grep -o '[0-9]*$' || echo 0)
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="CRASH (rc $rc): $(grep -o 'Test unit written to .*' "$out" | tail -n 1)"
        grep -m 5 -E "panicked|ERROR: libFuzzer|out-of-memory|malloc\(" "$out" || true
        status=1
    fi
    line=$(printf '%-12s %8s %12s %10s %s' "$t" "$took" "$execs" "$rate" "$result")
    echo "$line"
    echo "$(date -u +%FT%TZ) $line" >>"$log"
    rm -f "$out"
done
exit $status
