#!/usr/bin/env bash
# Reproduce the comparison: ours (--protocol qbert, w1a4) and the CrypTen-style baseline
# (--protocol crypten) on bert-base at seq 128 under lan and wan (and ours under SIGMA's
# network, sigma-lan), then a sequence-length sweep (32, 64, 128, 256, 512 where memory
# allows), then `harness plot`. Random weights, three parties in one process, fixed seeds.
#
#   scripts/reproduce.sh [--quick] [--no-crypten] [--crypten-max-seq N] [--seqs "32 64 ..."]
#                        [--out DIR] [--spill DIR] [--no-sweep]
#
#   --quick              bert-tiny at small lengths into target/reproduce-quick (checks the script)
#   --no-crypten         ours only
#   --crypten-max-seq N  longest sweep length for the baseline (default 128: its runs are
#                        long and its material large)
#   --seqs LIST          sweep lengths (default "32 64 128 256 512"; quick: "16 32 64")
#   --out DIR            result folder (default results; quick: target/reproduce-quick):
#                        DIR/reproduce.csv (started afresh), DIR/reproduce/*.json,
#                        DIR/machine.txt, DIR/charts/, DIR/summary.md
#   --spill DIR          where runs that would not fit in memory keep their offline
#                        material (default target/spill); needs that much free disk
#
# Memory: before each sweep run the peak memory is extrapolated from the previous runs
# (GNU time's maximum RSS, growth fitted on the last two lengths); a run predicted not to
# fit in 85 % of the available memory is run with --spill (ours) or skipped with a message.
# REPRODUCE_AVAIL_KB=N pretends N kB are available (to check those paths). The full
# bert-base run takes tens of minutes to hours on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 crypten=1 crypten_max=128 seqs="" out="" spill="target/spill" sweep=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --no-crypten) crypten=0 ;;
        --crypten-max-seq) crypten_max="$2"; shift ;;
        --seqs) seqs="$2"; shift ;;
        --out) out="$2"; shift ;;
        --spill) spill="$2"; shift ;;
        --no-sweep) sweep=0 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    model=bert-tiny main_seq=32 out="${out:-target/reproduce-quick}" seqs="${seqs:-16 32 64}"
else
    model=bert-base main_seq=128 out="${out:-results}" seqs="${seqs:-32 64 128 256 512}"
fi

t0=$SECONDS
step() { echo; echo "== [$(( SECONDS - t0 )) s] $*"; }

step "build (release)"
cargo build --release -q -p harness
bin="${CARGO_TARGET_DIR:-target}/release/harness"

proto_flag=1
help_text=$("$bin" bert --help)
if ! grep -q -- '--protocol' <<<"$help_text"; then
    proto_flag=0
    if [ "$crypten" = 1 ]; then
        echo "note: this harness has no --protocol flag (the CrypTen-style baseline is not in this build): running ours only"
        crypten=0
    fi
fi

mkdir -p "$out/reproduce" "$out/charts"
csv="$out/reproduce.csv"
[ -f "$csv" ] && mv "$csv" "$csv.old"
if [ "$(realpath "$out")" != "$(realpath results)" ]; then
    cp results/published.csv "$out/" 2>/dev/null || true
    cp results/kernels.csv "$out/" 2>/dev/null || true
fi
{
    echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$out/machine.txt"

have_time=0
[ -x /usr/bin/time ] && have_time=1
declare -A rss_kb=()   # "proto seq" -> peak RSS of the last run, kB

# run PROTO NET SEQ [extra harness flags...]: one secure inference, its JSON and CSV row;
# returns the harness's exit status (a refused or failed run writes no row)
run() {
    local proto=$1 net=$2 seq=$3
    shift 3
    local json="$out/reproduce/$model-$proto-seq$seq-$net.json" s=$SECONDS status=0
    local pflag=()
    [ "$proto_flag" = 1 ] && pflag=(--protocol "$proto")
    step "$proto $model seq $seq $net $*"
    local cmd=("$bin" bert "${pflag[@]}" --model "$model" --seq "$seq" --quant w1a4 --net "$net"
        --seed 5 --quiet --json "$json" --csv "$csv" "$@")
    local tf
    tf=$(mktemp)
    if [ "$have_time" = 1 ]; then
        /usr/bin/time -f %M -o "$tf" "${cmd[@]}" > "$tf.out" || status=$?
    else
        "${cmd[@]}" > "$tf.out" || status=$?
    fi
    grep -E '^(online|offline) ' "$tf.out" || true
    if [ "$status" = 0 ] && [ "$have_time" = 1 ]; then
        rss_kb["$proto $seq"]=$(tail -1 "$tf")
        echo "   peak memory $(( ${rss_kb["$proto $seq"]} / 1024 )) MiB"
    fi
    rm -f "$tf" "$tf.out"
    [ "$status" = 0 ] && echo "   took $(( SECONDS - s )) s"
    return "$status"
}

# predict_kb PROTO SEQ: peak memory extrapolated from the two longest earlier lengths
# (power law, exponent clamped to [1, 2]; 1.5 with one point); empty when unknown
predict_kb() {
    local proto=$1 seq=$2 pts=()
    for k in "${!rss_kb[@]}"; do
        [ "${k%% *}" = "$proto" ] && [ "${k#* }" -lt "$seq" ] && pts+=("${k#* } ${rss_kb[$k]}")
    done
    [ ${#pts[@]} -eq 0 ] && return 0
    printf '%s\n' "${pts[@]}" | sort -n | tail -2 | awk -v s="$seq" '
        { x[NR] = $1; y[NR] = $2 }
        END {
            p = 1.5
            if (NR == 2 && x[2] > x[1] && y[1] > 0) p = log(y[2] / y[1]) / log(x[2] / x[1])
            if (p < 1) p = 1; if (p > 2) p = 2
            printf "%d\n", y[NR] * (s / x[NR]) ^ p
        }'
}

# REPRODUCE_AVAIL_KB overrides the available memory (to check the spill/skip paths)
avail_kb() { echo "${REPRODUCE_AVAIL_KB:-$(awk '/MemAvailable/ {print $2}' /proc/meminfo)}"; }

# sweep_one PROTO SEQ: run, with --spill or not at all when predicted not to fit
sweep_one() {
    local proto=$1 seq=$2 pred avail
    pred=$(predict_kb "$proto" "$seq")
    avail=$(avail_kb)
    if [ -n "$pred" ] && [ "$pred" -gt $(( avail * 85 / 100 )) ]; then
        if [ "$proto" = qbert ]; then
            echo "   seq $seq: predicted $(( pred / 1024 )) MiB > 85 % of the $(( avail / 1024 )) MiB available: --spill $spill (needs the offline material's size on disk: $(df -h --output=avail "$(dirname "$spill")" | tail -1 | xargs) free)"
            mkdir -p "$spill"
            # in one process spilling saves only ~5 % (results/reliability.md): the
            # harness's preflight may still refuse the run, which then is skipped
            run "$proto" lan "$seq" --spill "$spill" \
                || echo "   skipped $proto seq $seq: does not fit this machine even with --spill (see the estimate above)"
            rm -rf "${spill:?}"/*
        else
            echo "   skipped $proto seq $seq: predicted $(( pred / 1024 )) MiB, $(( avail / 1024 )) MiB available"
        fi
    elif [ -z "$pred" ] && [ "$have_time" = 0 ] && [ "$seq" -ge 512 ] && [ "$proto" = qbert ]; then
        echo "   no memory figures (GNU time missing): seq $seq with --spill $spill"
        mkdir -p "$spill"
        run "$proto" lan "$seq" --spill "$spill" \
            || echo "   skipped $proto seq $seq: does not fit this machine even with --spill (see the estimate above)"
        rm -rf "${spill:?}"/*
    else
        run "$proto" lan "$seq" || echo "   skipped $proto seq $seq: refused or failed (see above)"
    fi
}

protos=(qbert)
[ "$crypten" = 1 ] && protos+=(crypten)

for proto in "${protos[@]}"; do
    for net in lan wan; do
        run "$proto" "$net" "$main_seq"
    done
done
run qbert sigma-lan "$main_seq"

if [ "$sweep" = 1 ]; then
    for proto in "${protos[@]}"; do
        for seq in $seqs; do
            [ "$seq" = "$main_seq" ] && continue
            if [ "$proto" = crypten ] && [ "$seq" -gt "$crypten_max" ]; then
                echo "   crypten seq $seq skipped (--crypten-max-seq $crypten_max)"
                continue
            fi
            sweep_one "$proto" "$seq"
        done
    done
fi

step "plot"
"$bin" plot --results "$out" --out "$out/charts" --model "$model" --seq "$main_seq"
rm -f "$csv.old"
step "done: $csv, $out/reproduce/, $out/charts/, $out/summary.md"
