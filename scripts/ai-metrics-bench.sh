#!/usr/bin/env bash
# The cost of the per-request AI metrics: the same AI load on two binaries, one after the other.
#   POST /v1/chat/completions to the in-process mock provider with a virtual key, plain (32
#   connections) and streamed (8 connections), `credentialflow bench` closed loop.
# Pinned as scripts/bench-matrix.sh pins: the gateway (1 worker) on core 0, the load generator
# on core 1. Prints one line per binary and case: req/s, p50/p99 ms, gateway CPU µs/req.
# Usage: scripts/ai-metrics-bench.sh BEFORE_BINARY AFTER_BINARY [DURATION_S]
set -euo pipefail
BEFORE=$1
AFTER=$2
DURATION=${3:-6}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TICKS=$(getconf CLK_TCK)
export CF_ADMIN_TOKEN=ai-metrics-bench-admin

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

measure() { # label binary
  local label=$1 bin=$2 gw admin dir
  gw=$(free_port); admin=$(free_port); dir="$WORK/$label"
  mkdir -p "$dir"
  cat >"$dir/gw.toml" <<EOF
[server]
listen = ["127.0.0.1:$gw"]
admin_listen = "127.0.0.1:$admin"
admin_token = "env:CF_ADMIN_TOKEN"
workers = 1
data_dir = "$dir/data"
access_log = ""
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
  nice -n -10 taskset -c 0 "$bin" serve --config "$dir/gw.toml" 2>"$dir/gw.err" &
  local pid=$!
  for _ in $(seq 100); do grep -q "credentialflow ready" "$dir/gw.err" 2>/dev/null && break; sleep 0.1; done
  curl -s -XPOST -H "authorization: Bearer $CF_ADMIN_TOKEN" "http://127.0.0.1:$admin/admin/keys" \
    -d '{"name":"bench"}' | python3 -c 'import sys, json; print(json.load(sys.stdin)["key"])' >"$dir/keys"
  sleep 0.5
  for case in plain stream; do
    local body conns extra
    if [ "$case" = plain ]; then
      body='{"model":"mock-gpt","max_tokens":32,"messages":[{"role":"user","content":"lorem 24"}]}'
      conns=32; extra=()
    else
      body='{"model":"mock-gpt","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"lorem 32"}]}'
      conns=8; extra=(--stream)
    fi
    local before after out
    before=$(cpu_ticks "$pid")
    out=$(nice -n -10 taskset -c 1 "$bin" bench "http://127.0.0.1:$gw/v1/chat/completions" \
      -c "$conns" -t 1 -d "${DURATION}s" --warmup 1s --json -m POST -b "$body" \
      -H 'content-type: application/json' --keys "$dir/keys" "${extra[@]}")
    after=$(cpu_ticks "$pid")
    echo "$out" >"$dir/$case.json"
    python3 - "$label" "$case" "$TICKS" "$before" "$after" "$dir/$case.json" <<'PY'
import json, sys
label, case, ticks, before, after, path = sys.argv[1:]
r = json.load(open(path))
def find(d, *names):
    for n in names:
        if n in d:
            return d[n]
    for v in d.values():
        if isinstance(v, dict):
            got = find(v, *names)
            if got is not None:
                return got
    return None
ok = find(r, "requests", "completed", "count") or 0
rps = find(r, "rps", "requests_per_second", "throughput")
p50 = find(r, "p50_ms", "p50")
p99 = find(r, "p99_ms", "p99")
errors = sum((r.get("errors") or {}).values())
statuses = r.get("status")
# CPU over the warm-up and the run, per request of the run (the warm-up's share is small and
# the same for both binaries).
cpu_us = (int(after) - int(before)) / int(ticks) * 1e6
print(f"{label} {case}: {rps} req/s, p50 {p50} ms, p99 {p99} ms, statuses {statuses}, errors {errors}, "
      f"gateway CPU {cpu_us / max(ok, 1):.1f} µs/req over {ok} requests")
PY
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

measure before "$BEFORE"
measure after "$AFTER"
