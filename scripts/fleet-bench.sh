#!/usr/bin/env bash
# The hot path on PostgreSQL vs SQLite: one node's request throughput on a keyed route with
# each store backend, measured in one run (issue 14's "≥ 0.97×" check).
#
# It starts a private PostgreSQL (initdb in a temporary directory, Unix socket only, run as
# `nobody` when started as root, like tests/common/postgres.rs), one fixed-response upstream
# (`credentialflow bench-upstream`), and two gateways of the release binary with the same
# config but for `[store]`: one on SQLite in its own data_dir, one on the PostgreSQL store.
# Each store gets one virtual key (created by `credentialflow keys create`, rps limit too high
# to trip, so the limit check runs but never refuses). Then `credentialflow bench` loads each
# gateway in turn, alternating which goes first from round to round so that drift in the
# machine's load does not favour one, and the script prints req/s per run, the medians and
# the PostgreSQL/SQLite ratio.
#
# Pinned like scripts/bench/matrix.py's pinned mode: each gateway has 1 worker on core 0, the
# load generator and the upstream share core 1.
#
# Usage: scripts/fleet-bench.sh [ROUNDS] [CONNECTIONS] [DURATION]     (defaults: 3 32 5s)
# Environment: CF_BIN (default: $CARGO_TARGET_DIR or target, /release/credentialflow; build
# it first with `cargo build --release`), PG_BIN (default: the newest
# /usr/lib/postgresql/*/bin), CF_FLEET_BENCH_KEEP=1 keeps the work directory for its logs.
set -euo pipefail

ROUNDS=${1:-3}
CONNS=${2:-32}
DURATION=${3:-5s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CF_BIN=${CF_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/credentialflow}
# shellcheck source=bench/fleet_env.sh
source "$ROOT/scripts/bench/fleet_env.sh"
start_postgres

start_bench_upstream

# --- gateways ---------------------------------------------------------------------------------
# config BACKEND PORT: the same gateway either way; only [store] and data_dir differ.
config() {
    local backend=$1 port=$2 file=$WORK/$1.toml
    cat >"$file" <<EOF
[server]
listen = ["127.0.0.1:$port"]
workers = 1
admin_listen = "127.0.0.1:$(free_port)"
admin_token = "env:CF_ADMIN_TOKEN"
data_dir = "$WORK/data-$backend"
access_log = ""
connections_per_worker = 20000

[limits]
idle_timeout_ms = 300000

[[upstream]]
name = "backend"
targets = ["127.0.0.1:$UP_PORT"]

[[route]]
name = "all"
path_prefix = "/"
upstream = "backend"
auth = "api_key"
EOF
    if [[ $backend == postgres ]]; then
        cat >>"$file" <<EOF

[store]
backend = "postgres"
url = "env:CF_STORE_URL"
pepper = "env:CF_PEPPER"
node = "bench-pg"
EOF
    fi
    echo "$file"
}

declare -A PORT KEY GATEWAY
for backend in sqlite postgres; do
    PORT[$backend]=$(free_port)
    cfg=$(config "$backend" "${PORT[$backend]}")
    KEY[$backend]=$("$CF_BIN" keys create --config "$cfg" --name bench --rps 1000000 --json \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
    taskset -c 0 "$CF_BIN" serve --config "$cfg" >"$WORK/gateway-$backend.log" 2>&1 &
    PIDS+=($!)
    GATEWAY[$backend]=$!
    wait_port "${PORT[$backend]}"
done

# Both must answer the key with the upstream's 200 before anything is measured.
for backend in sqlite postgres; do
    status=$(curl -s -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer ${KEY[$backend]}" "http://127.0.0.1:${PORT[$backend]}/")
    if [[ $status != 200 ]]; then
        echo "the $backend gateway answered $status to its key; log:" >&2
        cat "$WORK/gateway-$backend.log" >&2
        exit 1
    fi
done

# --- load -------------------------------------------------------------------------------------
run() {
    bench_run "${GATEWAY[$1]}" "http://127.0.0.1:${PORT[$1]}/" "$CONNS" "$DURATION" \
        -H "Authorization: Bearer ${KEY[$1]}"
}

# What each gateway's background threads cost with no traffic (the store watcher, heartbeat,
# ledger): the keyed route's hot path is the same code on both stores, so a difference under
# load that this does not explain is the machine's, not the store's.
declare -A IDLE_BEFORE
for backend in sqlite postgres; do IDLE_BEFORE[$backend]=$(cpu_ticks "${GATEWAY[$backend]}"); done
sleep 5
for backend in sqlite postgres; do
    echo "idle 5 s: $backend gateway used $(( $(cpu_ticks "${GATEWAY[$backend]}") - IDLE_BEFORE[$backend] )) ticks of $(getconf CLK_TCK)/s"
done

echo "$("$CF_BIN" --version 2>/dev/null | head -n 1) (commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); bench -c $CONNS -d $DURATION -t 1 --warmup 1s, keyed route (Bearer virtual key), 128 B upstream body"
echo "gateway: 1 worker on core 0; load and upstream on core 1"
printf '%-6s %-9s %10s %8s %12s\n' round backend 'req/s' 'failed' 'CPU us/req'
declare -A RESULTS CPU
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(sqlite postgres); else order=(postgres sqlite); fi
    for backend in "${order[@]}"; do
        read -r rps bad cpu < <(run "$backend")
        printf '%-6s %-9s %10s %8s %12s\n' "$round" "$backend" "$rps" "$bad" "$cpu"
        if ((bad != 0)); then
            echo "the $backend gateway failed $bad requests; see $WORK (CF_FLEET_BENCH_KEEP=1)" >&2
            exit 1
        fi
        RESULTS[$backend]+="$rps "
        CPU[$backend]+="$cpu "
    done
done

python3 - "${RESULTS[sqlite]}" "${RESULTS[postgres]}" "${CPU[sqlite]}" "${CPU[postgres]}" <<'EOF'
import statistics, sys
sqlite, pg, cpu_sqlite, cpu_pg = ([float(x) for x in arg.split()] for arg in sys.argv[1:5])
# Each round's two runs are back to back, so their ratio is the least disturbed by load
# that comes and goes on a shared machine.
paired = [p / s for p, s in zip(pg, sqlite)]
print("per-round postgres/sqlite req/s: " + ", ".join("%.3f" % r for r in paired))
print("median req/s: sqlite %.0f, postgres %.0f" % (statistics.median(sqlite), statistics.median(pg)))
print("postgres/sqlite req/s: %.3fx (median of the per-round ratios), %.3fx (ratio of medians); "
      "target >= 0.97x" % (statistics.median(paired), statistics.median(pg) / statistics.median(sqlite)))
print("gateway CPU per request, median: sqlite %.1f us, postgres %.1f us (postgres/sqlite %.3fx)"
      % (statistics.median(cpu_sqlite), statistics.median(cpu_pg),
         statistics.median(cpu_pg) / statistics.median(cpu_sqlite)))
EOF
