#!/usr/bin/env bash
# Fleet limits on Redis (issue 15's figures), measured on one node:
#
# 1. Throughput with `[cluster]` on vs off: two gateways of the release binary on the same
#    private PostgreSQL store, identical but for `[cluster]` (the other one's limits are per
#    node), each with one worker pinned to core 0, loaded in turn by `credentialflow bench` on
#    core 1 through a virtual key whose rps limit is far too high to trip (so the fleet rate
#    share is taken and synced on every request, but never refuses). Rounds alternate which
#    gateway goes first; the script prints the per-round on/off ratios and their median
#    (target >= 0.95x).
# 2. Redis traffic vs load: the `[cluster]` gateway under an open-loop load (`bench --rate`)
#    spread over K keys (`bench --keys`), for (K, req/s) = (1000, 10000), (100, 10000) and
#    (1000, 2000). For each it prints the node's pipelined round trips per second (from
#    `credentialflow_cluster_round_trips_total`) and the script calls Redis ran per second
#    (`INFO commandstats`): round trips stay at one per sync interval, and calls follow the
#    keys active per interval, not the requests.
#
# Usage: scripts/cluster-bench.sh [ROUNDS] [CONNECTIONS] [DURATION]     (defaults: 3 32 5s)
# Environment: CF_BIN (default: $CARGO_TARGET_DIR or target, /release/credentialflow; build it
# first with `cargo build --release`), PG_BIN, CF_FLEET_BENCH_KEEP=1 (scripts/bench/fleet_env.sh).
set -euo pipefail

ROUNDS=${1:-3}
CONNS=${2:-32}
DURATION=${3:-5s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CF_BIN=${CF_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/credentialflow}
# shellcheck source=bench/fleet_env.sh
source "$ROOT/scripts/bench/fleet_env.sh"
start_postgres
start_redis

start_bench_upstream

# --- gateways ---------------------------------------------------------------------------------
# config MODE PORT ADMIN_PORT: the same gateway either way; only [cluster] differs.
config() {
    local mode=$1 port=$2 admin_port=$3 file=$WORK/$1.toml
    cat >"$file" <<EOF
[server]
listen = ["127.0.0.1:$port"]
workers = 1
admin_listen = "127.0.0.1:$admin_port"
admin_token = "env:CF_ADMIN_TOKEN"
data_dir = "$WORK/data-$mode"
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

[store]
backend = "postgres"
url = "env:CF_STORE_URL"
pepper = "env:CF_PEPPER"
node = "bench-$mode"
EOF
    if [[ $mode == on ]]; then
        cat >>"$file" <<EOF

[cluster]
redis = "env:CF_REDIS_URL"
sync_interval_ms = 100
EOF
    fi
    echo "$file"
}

declare -A PORT ADMIN GATEWAY
for mode in off on; do
    PORT[$mode]=$(free_port)
    ADMIN[$mode]=$(free_port)
    cfg=$(config "$mode" "${PORT[$mode]}" "${ADMIN[$mode]}")
    taskset -c 0 "$CF_BIN" serve --config "$cfg" >"$WORK/gateway-$mode.log" 2>&1 &
    PIDS+=($!)
    GATEWAY[$mode]=$!
    wait_port "${PORT[$mode]}"
    wait_port "${ADMIN[$mode]}"
done

# make_keys PREFIX COUNT FILE: COUNT keys named PREFIX-0, PREFIX-1, ... (rps far above the
# load) made through the admin API of the cluster gateway, their secrets one per line in FILE. The store is shared, so both gateways
# know them within a second.
make_keys() {
    python3 - "${ADMIN[on]}" "$1" "$2" "$3" <<'EOF'
import http.client, json, os, sys
port, prefix, count, path = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": "Bearer " + os.environ["CF_ADMIN_TOKEN"],
           "Content-Type": "application/json"}
with open(path, "w") as out:
    for i in range(count):
        conn.request("POST", "/admin/keys",
                     json.dumps({"name": "%s-%d" % (prefix, i), "rps": 1000000}), headers)
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 201:
            sys.exit("creating a key answered %d: %s" % (reply.status, body[:200]))
        out.write(json.loads(body)["key"] + "\n")
EOF
}

make_keys main 1 "$WORK/one.keys"
make_keys spread 999 "$WORK/more.keys"
cat "$WORK/one.keys" "$WORK/more.keys" >"$WORK/1000.keys"
head -n 100 "$WORK/1000.keys" >"$WORK/100.keys"
sleep 1.5

# Both must answer the key with the upstream's 200 before anything is measured.
KEY=$(cat "$WORK/one.keys")
for mode in off on; do
    status=$(curl -s -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer $KEY" "http://127.0.0.1:${PORT[$mode]}/")
    if [[ $status != 200 ]]; then
        echo "the cluster-$mode gateway answered $status to its key; log:" >&2
        cat "$WORK/gateway-$mode.log" >&2
        exit 1
    fi
done

echo "$("$CF_BIN" --version 2>/dev/null | head -n 1) (commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
echo "gateway: 1 worker on core 0; load and upstream on core 1"

# --- 1. throughput, [cluster] on vs off -------------------------------------------------------
echo
echo "1. throughput: bench -c $CONNS -d $DURATION -t 1 --warmup 1s, one key (rps limit never reached)"
# One unrecorded run of each first: the first load a fresh process sees measures faster or
# slower than the rest (caches, pools, the allocator growing), whichever gateway it is.
for mode in off on; do
    bench_run "${GATEWAY[$mode]}" "http://127.0.0.1:${PORT[$mode]}/" "$CONNS" 2s \
        -H "Authorization: Bearer $KEY" >/dev/null
done
printf '%-6s %-8s %10s %8s %12s\n' round cluster 'req/s' 'failed' 'CPU us/req'
declare -A RESULTS CPU
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(off on); else order=(on off); fi
    for mode in "${order[@]}"; do
        read -r rps bad cpu < <(bench_run "${GATEWAY[$mode]}" "http://127.0.0.1:${PORT[$mode]}/" \
            "$CONNS" "$DURATION" -H "Authorization: Bearer $KEY")
        printf '%-6s %-8s %10s %8s %12s\n' "$round" "$mode" "$rps" "$bad" "$cpu"
        if ((bad != 0)); then
            echo "the cluster-$mode gateway failed $bad requests; see $WORK (CF_FLEET_BENCH_KEEP=1)" >&2
            exit 1
        fi
        RESULTS[$mode]+="$rps "
        CPU[$mode]+="$cpu "
    done
done
python3 - "${RESULTS[off]}" "${RESULTS[on]}" "${CPU[off]}" "${CPU[on]}" <<'EOF'
import statistics, sys
off, on, cpu_off, cpu_on = ([float(x) for x in arg.split()] for arg in sys.argv[1:5])
# Each round's two runs are back to back, so their ratio is the least disturbed by load that
# comes and goes on a shared machine.
paired = [a / b for a, b in zip(on, off)]
print("per-round on/off req/s: " + ", ".join("%.3f" % r for r in paired))
print("median req/s: off %.0f, on %.0f" % (statistics.median(off), statistics.median(on)))
print("on/off req/s: %.3fx (median of the per-round ratios); target >= 0.95x" % statistics.median(paired))
print("gateway CPU per request, median: off %.1f us, on %.1f us (on/off %.3fx)"
      % (statistics.median(cpu_off), statistics.median(cpu_on),
         statistics.median(cpu_on) / statistics.median(cpu_off)))
EOF

# --- 2. Redis traffic vs load -----------------------------------------------------------------
# metric NAME: the cluster gateway's value of a /metrics series without labels.
metric() {
    curl -s "http://127.0.0.1:${ADMIN[on]}/metrics" | awk -v name="$1" '$1 == name {print $2}'
}

# script_calls: EVALSHA + EVAL calls Redis has run since it started.
script_calls() {
    redis-cli -s "$REDIS_SOCK" INFO commandstats \
        | awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ {sum += $3} END {print sum + 0}'
}

echo
echo "2. Redis traffic of the cluster node (sync_interval_ms = 100) under open-loop load, 10 s each"
printf '%-6s %-14s %12s %16s %18s\n' keys 'offered req/s' 'served req/s' 'round trips/s' 'script calls/s'
for case in "1000 10000" "100 10000" "1000 2000"; do
    read -r keys rate <<<"$case"
    trips_before=$(metric credentialflow_cluster_round_trips_total)
    calls_before=$(script_calls)
    start=$(date +%s.%N)
    taskset -c 1 "$CF_BIN" bench "http://127.0.0.1:${PORT[on]}/" -c 64 -d 10s -t 1 \
        --rate "$rate" --keys "$WORK/$keys.keys" --json >"$WORK/traffic.json"
    end=$(date +%s.%N)
    trips_after=$(metric credentialflow_cluster_round_trips_total)
    calls_after=$(script_calls)
    python3 - "$WORK/traffic.json" "$keys" "$rate" "$start" "$end" "$trips_before" "$trips_after" \
        "$calls_before" "$calls_after" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
keys, rate = sys.argv[2], sys.argv[3]
start, end = float(sys.argv[4]), float(sys.argv[5])
trips = float(sys.argv[7]) - float(sys.argv[6])
calls = float(sys.argv[9]) - float(sys.argv[8])
# The counters cover the whole run (bench's warm-up included): divide by its wall time.
span = end - start
print("%-6s %-14s %12.0f %16.1f %18.0f" % (keys, rate, j["rps"], trips / span, calls / span))
EOF
done
