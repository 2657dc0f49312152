#!/usr/bin/env bash
# The MCP gateway's closing figures (issue 20), with the product's own load generator
# (`credentialflow bench`) against a real MCP server (tests/mcp/server.py, the Python SDK):
#
#   1. added latency per tool call: `tools/call add` at a fixed rate over one session,
#      through the gateway and straight to the server, p50/p99 of each;
#   2. tool calls per second per core: the gateway (one worker) pinned to CPU 0, the load
#      on CPU 1, closed loop; and the gateway's CPU time per call during the fixed-rate run
#      (what one core could serve when the server is not the bottleneck).
#
#   tests/mcp/measure.sh [release binary] [rate] [seconds]
#
# Both paths use the handshake revision with a session (the gateway speaks it to the
# server), so the server does the same work either way. Timings depend on the machine:
# this prints them, it asserts nothing.
set -euo pipefail
[ -n "${MEASURE_TRACE:-}" ] && set -x
BIN=${1:-target/release/credentialflow}
RATE=${2:-200}
SECONDS_RUN=${3:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

SERVER_PORT=$(free_port)
GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)
python3 "$HERE/server.py" --name beta --port "$SERVER_PORT" >/dev/null 2>&1 &
PIDS+=($!)
cat >"$WORK/cf.toml" <<TOML
[server]
listen = ["127.0.0.1:$GW_PORT"]
admin_listen = "127.0.0.1:$ADMIN_PORT"
admin_token = "env:CF_ADMIN_TOKEN"
data_dir = "$WORK/data"
workers = 1

[[mcp_server]]
name = "beta"
url = "http://127.0.0.1:$SERVER_PORT/mcp"

[mcp]
auth = "none"
TOML
CF_ADMIN_TOKEN=measure-admin-token-0123456789abcdef taskset -c 0 "$BIN" serve --config "$WORK/cf.toml" >"$WORK/gw.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_port "$SERVER_PORT"
wait_port "$GW_PORT"

ACCEPT='accept: application/json, text/event-stream'
JSON='content-type: application/json'
INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"measure","version":"1"}}}'
INITIALIZED='{"jsonrpc":"2.0","method":"notifications/initialized"}'
# A session with the endpoint at $1: initialize, then notifications/initialized.
session() {
    local sid
    sid=$(curl -s -D - -o /dev/null -H "$JSON" -H "$ACCEPT" -d "$INIT" "$1" |
        awk 'tolower($1) == "mcp-session-id:" { print $2 }' | tr -d '\r')
    curl -s -o /dev/null -H "$JSON" -H "$ACCEPT" -H "mcp-session-id: $sid" \
        -H 'mcp-protocol-version: 2025-11-25' -d "$INITIALIZED" "$1"
    echo "$sid"
}
call() { echo "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":{\"a\":1,\"b\":2}}}"; }
GW_URL="http://127.0.0.1:$GW_PORT/mcp"
DIRECT_URL="http://127.0.0.1:$SERVER_PORT/mcp"
GW_SID=$(session "$GW_URL")
DIRECT_SID=$(session "$DIRECT_URL")

# bench URL SESSION BODY [extra bench options]: the summary as JSON.
load() {
    local url=$1 sid=$2 body=$3
    shift 3
    taskset -c 1 "$BIN" bench "$url" -m POST -b "$body" -H "$JSON" -H "$ACCEPT" \
        -H "mcp-session-id: $sid" -H 'mcp-protocol-version: 2025-11-25' -t 1 --json "$@"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$GW_PID/stat"; }
cat >"$WORK/summary.py" <<'PY'
import json, sys
s = json.load(sys.stdin)
l = s["latency_ms"]
print("%s: %d answers, %.1f/s, status %s, errors %s, p50 %.0f us, p99 %.0f us"
      % (sys.argv[1], s["responses"], s["rps"], s["status"], s["errors_total"], l["p50"] * 1000, l["p99"] * 1000))
print(json.dumps({"p50_us": l["p50"] * 1000, "p99_us": l["p99"] * 1000, "rps": s["rps"], "n": s["responses"]}), file=sys.stderr)
PY
summary() { python3 "$WORK/summary.py" "$1"; }

echo "== fixed rate: $RATE tools/call per second for ${SECONDS_RUN}s over one session"
load "$DIRECT_URL" "$DIRECT_SID" "$(call add)" --rate "$RATE" -c 4 -d "${SECONDS_RUN}s" --warmup 2s 2>/dev/null |
    summary direct 2>"$WORK/direct.json"
before=$(cpu_ticks)
load "$GW_URL" "$GW_SID" "$(call beta__add)" --rate "$RATE" -c 4 -d "${SECONDS_RUN}s" --warmup 2s 2>/dev/null |
    summary gateway 2>"$WORK/gateway.json"
after=$(cpu_ticks)
python3 - "$WORK/direct.json" "$WORK/gateway.json" "$before" "$after" "$(getconf CLK_TCK)" "$RATE" "$SECONDS_RUN" <<'PY'
import json, sys
d, g = (json.load(open(p)) for p in sys.argv[1:3])
before, after, hz, rate, secs = map(float, sys.argv[3:8])
print(f"added by the gateway: p50 {g['p50_us'] - d['p50_us']:.0f} us, p99 {g['p99_us'] - d['p99_us']:.0f} us")
calls = rate * (secs + 2)  # the warm-up's calls used CPU too
cpu_us = (after - before) / hz * 1e6 / calls
print(f"gateway CPU per tool call: {cpu_us:.0f} us (so about {1e6 / cpu_us:.0f} calls/s per core when the server keeps up)")
PY

echo "== closed loop: gateway pinned to CPU 0, load on CPU 1, 32 connections, ${SECONDS_RUN}s"
load "$GW_URL" "$GW_SID" "$(call beta__add)" -c 32 -d "${SECONDS_RUN}s" --warmup 2s 2>/dev/null |
    summary "gateway, closed loop" 2>/dev/null
load "$DIRECT_URL" "$DIRECT_SID" "$(call add)" -c 32 -d "${SECONDS_RUN}s" --warmup 2s 2>/dev/null |
    summary "direct, closed loop (the server alone)" 2>/dev/null
