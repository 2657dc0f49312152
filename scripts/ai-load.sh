#!/usr/bin/env bash
# Load figures for the AI path next to the plain-proxy path, on one machine, with wrk:
#   1. plain proxy to `credentialflow bench-upstream` (128 B responses)
#   2. POST /v1/chat/completions to the in-process mock provider, not streamed
#   3. the same, streamed (SSE)
#   4. 2. again with a virtual key that has rpm/tpm limits and a budget (limits + meters + ledger)
# Usage: scripts/ai-load.sh [DURATION_S] [CONNECTIONS] [GATEWAY_WORKERS]
# Needs wrk (apt-get install wrk). Builds the release binary if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-64}
WORKERS=${3:-1}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/credentialflow
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); GW=$(free_port); ADMIN=$(free_port)
cat >"$WORK/gw.toml" <<EOF
[server]
listen = ["127.0.0.1:$GW"]
admin_listen = "127.0.0.1:$ADMIN"
admin_token = "env:CF_ADMIN_TOKEN"
workers = $WORKERS
data_dir = "$WORK/data"
access_log = ""
[[upstream]]
name = "bench"
targets = ["127.0.0.1:$UP"]
[[route]]
name = "plain"
path_prefix = "/plain/"
upstream = "bench"
[[provider]]
name = "mock"
kind = "mock"
[[model]]
name = "mock-gpt"
provider = "mock"
input_price_per_mtok = 0.1
output_price_per_mtok = 0.4
[ai]
auth = "api_key"
EOF
export CF_ADMIN_TOKEN=load-test-admin
"$BIN" bench-upstream --listen "127.0.0.1:$UP" --workers 1 >/dev/null 2>&1 &
"$BIN" serve --config "$WORK/gw.toml" 2>"$WORK/gw.err" &
for _ in $(seq 100); do grep -q "credentialflow ready" "$WORK/gw.err" 2>/dev/null && break; sleep 0.1; done
grep "credentialflow ready" "$WORK/gw.err"

new_key() {
  curl -s -XPOST -H "authorization: Bearer $CF_ADMIN_TOKEN" "http://127.0.0.1:$ADMIN/admin/keys" -d "$1" |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["key"])'
}
KEY=$(new_key '{"name":"load"}')
LIMITED=$(new_key '{"name":"load-limited","rpm":100000000,"tpm":100000000000,"budget_usd":1000000}')
sleep 1.2

lua() { # body key
  cat <<EOF
wrk.method = "POST"
wrk.body = '$1'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $2"
EOF
}
CHAT='{"model":"mock-gpt","max_tokens":32,"messages":[{"role":"user","content":"lorem 24"}]}'
STREAM='{"model":"mock-gpt","max_tokens":32,"stream":true,"messages":[{"role":"user","content":"lorem 24"}]}'
lua "$CHAT" "$KEY" >"$WORK/chat.lua"
lua "$STREAM" "$KEY" >"$WORK/stream.lua"
lua "$CHAT" "$LIMITED" >"$WORK/limited.lua"

run() { # name, wrk args...
  local name=$1; shift
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@")
  local rps p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  printf '| %-44s | %10s | %8s | %6s |\n' "$name" "$rps" "$p99" "${errs:-0}"
}
echo
echo "wrk -t1 -c$CONNS -d${DURATION}s, gateway workers=$WORKERS, $(nproc) cores ($(uname -r)), commit $(git rev-parse --short HEAD)"
echo
printf '| %-44s | %10s | %8s | %6s |\n' "path" "req/s" "p99" "non-2xx"
printf '|%s|%s|%s|%s|\n' "----------------------------------------------" "------------" "----------" "--------"
run "plain proxy, 128 B" "http://127.0.0.1:$GW/plain/x"
run "/v1/chat/completions, mock, not streamed" -s "$WORK/chat.lua" "http://127.0.0.1:$GW/v1/chat/completions"
run "/v1/chat/completions, mock, streamed" -s "$WORK/stream.lua" "http://127.0.0.1:$GW/v1/chat/completions"
run "/v1/chat/completions, mock, key with limits" -s "$WORK/limited.lua" "http://127.0.0.1:$GW/v1/chat/completions"
