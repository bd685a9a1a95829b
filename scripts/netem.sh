#!/usr/bin/env bash
# Run the three parties over real TCP in separate network namespaces with a kernel-
# emulated network (tc netem delay + rate).
#
# usage: scripts/netem.sh [--ci] PROFILE [--] [extra harness args...]
#
#   PROFILE   lan | wan | sigma-lan | none | BW,RTT
#             lan = 1 Gbit/s, 0.5 ms RTT; wan = 400 Mbit/s, 4 ms; sigma-lan = 9.4 Gbit/s,
#             0.05 ms; BW like 1gbps, 400mbps, 1e9 (bits/s); RTT like 0.5ms, 4ms, 0.004s.
#   --ci      if namespaces or netem cannot be set up (not root, no netem in the
#             kernel, ...), print "skipping: <reason>" and exit 0 (without --ci: exit 1).
#
# Topology: namespaces qbert-p0, qbert-p1 and qbert-d, one veth pair per pair of parties
# (so each of the three links is separate, like the in-process emulation). Each party has
# an address on its loopback (P0 10.77.0.1, P1 10.77.0.2, D 10.77.0.3) routed over the
# veth to the other party. Every veth end gets `netem delay RTT/2 rate BW` on egress, so
# each direction of each link has bandwidth BW and one-way latency RTT/2.
#
# In each namespace it runs
#   ${HARNESS:-target/release/harness} party --role ROLE --session $SESSION --p0 10.77.0.1:$P0_PORT \
#       --p1 10.77.0.2:$P1_PORT [--tls-dir TMP/keys] [extra args]
# Unless the extra args contain --insecure or --tls-dir, it first makes a key pair and
# certificate for each role with `harness keygen` in a temporary directory, so the links
# are TLS 1.3 with pinned certificates.
# with ROLE = p0, p1, dealer; waits for all three, prints their outputs, and exits
# non-zero if any failed. Namespaces are removed on exit (also on error or Ctrl-C).
#
# Environment:
#   HARNESS               harness binary (default target/release/harness)
#   P0_PORT, P1_PORT      listening ports of P0 and P1 (default 7000, 7001)
#   NETEM_TIMEOUT         kill the parties after this many seconds (default: no limit)
#   HARNESS_CMD_OVERRIDE  run `bash -c "$HARNESS_CMD_OVERRIDE"` in each namespace instead
#                         of the harness (for testing this script); it sees ROLE, P0_ADDR,
#                         P1_ADDR, P0_IP, P1_IP, D_IP and the extra args as "$@".
#   NETEM_FALLBACK_TBF=1  if the kernel lacks netem, shape bandwidth with tbf and emulate
#                         NO latency (loudly warned), instead of skipping.
set -euo pipefail

CI=0
PROFILE=""
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --ci) CI=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *)
            if [[ -z "$PROFILE" ]]; then PROFILE="$1"; shift; else break; fi ;;
    esac
done
if [[ -z "$PROFILE" ]]; then
    if [[ $# -gt 0 ]]; then PROFILE="$1"; shift; else usage >&2; exit 2; fi
fi
[[ "${1:-}" == "--" ]] && shift

skip() {
    echo "skipping: $*"
    if [[ $CI -eq 1 ]]; then exit 0; else exit 1; fi
}

# ---- profile -> RATE_BIT (integer bit/s, empty = unlimited), DELAY_US (one way) ----
RATE_BIT=""
RTT_US=0
p="$(echo "$PROFILE" | tr 'A-Z' 'a-z' | tr -d ' ')"
case "$p" in
    none) ;;
    lan) RATE_BIT=1000000000; RTT_US=500 ;;
    wan) RATE_BIT=400000000; RTT_US=4000 ;;
    sigma-lan|sigma_lan) RATE_BIT=9400000000; RTT_US=50 ;;
    *,*)
        bw="${p%%,*}"; rtt="${p#*,}"
        num='([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?'
        if [[ "$bw" == inf || "$bw" == unlimited ]]; then
            RATE_BIT=""
        elif [[ "$bw" =~ ^${num}(bps|bit|kbps|kbit|k|mbps|mbit|m|gbps|gbit|g)?$ ]]; then
            unit="${BASH_REMATCH[3]}"
            case "$unit" in
                ""|bps|bit) mult=1 ;; k|kbps|kbit) mult=1e3 ;;
                m|mbps|mbit) mult=1e6 ;; g|gbps|gbit) mult=1e9 ;;
            esac
            RATE_BIT="$(awk -v v="${bw%"$unit"}" -v m="$mult" 'BEGIN { printf "%.0f", v * m }')"
            if [[ "$RATE_BIT" == 0 ]]; then echo "bad profile $PROFILE: zero bandwidth" >&2; exit 2; fi
        else
            echo "bad profile $PROFILE: bandwidth '$bw' (use e.g. 1gbps, 400mbps, 1e9)" >&2; exit 2
        fi
        if [[ "$rtt" =~ ^${num}(s|ms|us|ns)$ ]]; then
            unit="${BASH_REMATCH[3]}"
            case "$unit" in s) mult=1e6 ;; ms) mult=1e3 ;; us) mult=1 ;; ns) mult=1e-3 ;; esac
            RTT_US="$(awk -v v="${rtt%"$unit"}" -v m="$mult" 'BEGIN { printf "%.3f", v * m }')"
        else
            echo "bad profile $PROFILE: RTT '$rtt' (use e.g. 0.5ms, 4ms, 0.004s)" >&2; exit 2
        fi
        ;;
    *) echo "bad profile '$PROFILE': use lan, wan, sigma-lan, none or BW,RTT" >&2; exit 2 ;;
esac
DELAY_US="$(awk -v r="$RTT_US" 'BEGIN { printf "%.3f", r / 2 }')"
EMULATE=1
if [[ -z "$RATE_BIT" ]] && awk -v d="$DELAY_US" 'BEGIN { exit !(d == 0) }'; then EMULATE=0; fi

# ---- the command each party runs ----
P0_IP=10.77.0.1; P1_IP=10.77.0.2; D_IP=10.77.0.3
P0_PORT="${P0_PORT:-7000}"; P1_PORT="${P1_PORT:-7001}"
P0_ADDR="$P0_IP:$P0_PORT"; P1_ADDR="$P1_IP:$P1_PORT"
HARNESS="${HARNESS:-target/release/harness}"
if [[ -z "${HARNESS_CMD_OVERRIDE:-}" ]]; then
    if [[ "$HARNESS" == */* ]]; then
        [[ -x "$HARNESS" ]] || { echo "harness binary not found or not executable: $HARNESS (build it: cargo build --release -p harness, or set HARNESS)" >&2; exit 1; }
        HARNESS="$(cd "$(dirname "$HARNESS")" && pwd)/$(basename "$HARNESS")"
    else
        command -v "$HARNESS" >/dev/null || { echo "harness not found in PATH: $HARNESS" >&2; exit 1; }
    fi
fi

# ---- preflight ----
[[ "$(id -u)" -eq 0 ]] || skip "network namespaces need root (run with sudo)"
command -v ip >/dev/null || skip "the 'ip' command (iproute2) is not installed"
if [[ $EMULATE -eq 1 ]]; then command -v tc >/dev/null || skip "the 'tc' command (iproute2) is not installed"; fi

NS_P0=qbert-p0; NS_P1=qbert-p1; NS_D=qbert-d
ALL_NS=("$NS_P0" "$NS_P1" "$NS_D")
WORK=""
PIDS=()

ns_exists() { ip netns list 2>/dev/null | awk -v n="$1" '$1 == n { f = 1 } END { exit !f }'; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            # Anything still running inside a namespace this script created.
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    [[ -n "$WORK" ]] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Stale namespaces from an interrupted run.
for ns in "${ALL_NS[@]}"; do
    if ns_exists "$ns"; then
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    fi
done

for ns in "${ALL_NS[@]}"; do
    if ! err="$(ip netns add "$ns" 2>&1)"; then skip "cannot create network namespace $ns: $err"; fi
    ip -n "$ns" link set lo up
done
ip -n "$NS_P0" addr add "$P0_IP/32" dev lo
ip -n "$NS_P1" addr add "$P1_IP/32" dev lo
ip -n "$NS_D" addr add "$D_IP/32" dev lo

# link NS_A DEV_A IP_A NS_B DEV_B IP_B: a veth pair between two parties.
link() {
    local na=$1 da=$2 ia=$3 nb=$4 db=$5 ib=$6 err
    if ! err="$(ip link add "$da" netns "$na" type veth peer name "$db" netns "$nb" 2>&1)"; then
        skip "cannot create veth pair $da/$db: $err"
    fi
    ip -n "$na" link set "$da" up
    ip -n "$nb" link set "$db" up
    ip -n "$na" route add "$ib/32" dev "$da" src "$ia"
    ip -n "$nb" route add "$ia/32" dev "$db" src "$ib"
}
link "$NS_P0" qb-p0p1 "$P0_IP" "$NS_P1" qb-p1p0 "$P1_IP"
link "$NS_P0" qb-p0d "$P0_IP" "$NS_D" qb-dp0 "$D_IP"
link "$NS_P1" qb-p1d "$P1_IP" "$NS_D" qb-dp1 "$D_IP"
DEVS=("$NS_P0 qb-p0p1" "$NS_P1 qb-p1p0" "$NS_P0 qb-p0d" "$NS_D qb-dp0" "$NS_P1 qb-p1d" "$NS_D qb-dp1")

# ---- shaping ----
SHAPING="none"
if [[ $EMULATE -eq 1 ]]; then
    netem_args=(netem limit 1000000 delay "${DELAY_US}us")
    [[ -n "$RATE_BIT" ]] && netem_args+=(rate "${RATE_BIT}bit")
    read -r ns0 dev0 <<<"${DEVS[0]}"
    if err="$(ip netns exec "$ns0" tc qdisc add dev "$dev0" root "${netem_args[@]}" 2>&1)"; then
        for d in "${DEVS[@]:1}"; do
            read -r ns dev <<<"$d"
            ip netns exec "$ns" tc qdisc add dev "$dev" root "${netem_args[@]}"
        done
        SHAPING="netem delay ${DELAY_US}us${RATE_BIT:+ rate ${RATE_BIT}bit} on every veth (egress)"
    elif [[ "${NETEM_FALLBACK_TBF:-0}" == 1 ]]; then
        echo "WARNING: tc netem unavailable ($err); NETEM_FALLBACK_TBF=1: shaping bandwidth with tbf only, NO latency is emulated" >&2
        if [[ -n "$RATE_BIT" ]]; then
            # Burst: 10 ms worth of bytes, at least 256 KiB (GSO packets reach 64 KiB).
            burst="$(awk -v r="$RATE_BIT" 'BEGIN { b = r / 8 / 100; if (b < 262144) b = 262144; printf "%.0f", b }')"
            for d in "${DEVS[@]}"; do
                read -r ns dev <<<"$d"
                ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "${RATE_BIT}bit" burst "$burst" latency 1s
            done
            SHAPING="tbf rate ${RATE_BIT}bit burst $burst (NO latency: netem unavailable)"
        else
            SHAPING="nothing (netem unavailable; profile has no bandwidth limit)"
        fi
    else
        skip "tc netem is not available (${err//$'\n'/ }); the kernel needs sch_netem (or set NETEM_FALLBACK_TBF=1 for bandwidth-only shaping)"
    fi
fi

# ---- run the parties ----
WORK="$(mktemp -d "${TMPDIR:-/tmp}/qbert-netem.XXXXXX")"
echo "netem: profile $PROFILE: ${RATE_BIT:-unlimited} bit/s, RTT ${RTT_US} us; shaping: $SHAPING"
echo "netem: P0 $P0_ADDR (ns $NS_P0), P1 $P1_ADDR (ns $NS_P1), D $D_IP (ns $NS_D)"

TLS_ARGS=()
if [[ -z "${HARNESS_CMD_OVERRIDE:-}" ]] && ! printf '%s\n' "$@" | grep -qE -- '^--(insecure|tls-dir)(=.*)?$'; then
    for r in p0 p1 dealer; do "$HARNESS" keygen --role "$r" --out "$WORK/keys" >/dev/null; done
    TLS_ARGS=(--tls-dir "$WORK/keys")
    echo "netem: TLS 1.3, certificates made for this run in $WORK/keys (--insecure for plain TCP)"
fi

SESSION=${NETEM_SESSION:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}

run_party() {
    local ns=$1 role=$2
    shift 2
    local cmd=()
    if [[ -n "${NETEM_TIMEOUT:-}" ]]; then cmd+=(timeout --kill-after=5 "$NETEM_TIMEOUT"); fi
    if [[ -n "${HARNESS_CMD_OVERRIDE:-}" ]]; then
        cmd+=(env ROLE="$role" P0_ADDR="$P0_ADDR" P1_ADDR="$P1_ADDR" P0_IP="$P0_IP" P1_IP="$P1_IP" D_IP="$D_IP"
              bash -c "$HARNESS_CMD_OVERRIDE" "netem-$role")
    else
        # the kernel shapes the link: no software emulation on top (a later --net overrides)
        cmd+=("$HARNESS" party --role "$role" --p0 "$P0_ADDR" --p1 "$P1_ADDR" --net none --session "$SESSION" "${TLS_ARGS[@]}")
    fi
    ip netns exec "$ns" "${cmd[@]}" "$@" >"$WORK/$role.log" 2>&1 &
    PIDS+=($!)
}
ROLES=(p0 p1 dealer)
run_party "$NS_P0" p0 "$@"
run_party "$NS_P1" p1 "$@"
run_party "$NS_D" dealer "$@"

RCS=()
for i in 0 1 2; do
    rc=0
    wait "${PIDS[$i]}" || rc=$?
    RCS+=("$rc")
done
PIDS=()

FAIL=0
for i in 0 1 2; do
    note=""
    [[ -n "${NETEM_TIMEOUT:-}" && "${RCS[$i]}" -eq 124 ]] && note=", killed after NETEM_TIMEOUT=${NETEM_TIMEOUT}s"
    echo "===== ${ROLES[$i]} (exit ${RCS[$i]}$note) ====="
    cat "$WORK/${ROLES[$i]}.log"
    [[ "${RCS[$i]}" -ne 0 ]] && FAIL=1
done
if [[ $FAIL -ne 0 ]]; then
    echo "netem: a party failed" >&2
    exit 1
fi
exit 0
