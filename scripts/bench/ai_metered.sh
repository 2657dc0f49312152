#!/usr/bin/env bash
# CPU per request of the AI path (issue 21's AI row): a 1 KB POST /v1/chat/completions,
# max_tokens 32, virtual key, priced OpenAI-family model (`gpt-4o-mini`, whose prompt is
# counted with o200k_base when a tokens-per-minute limit or budget needs it), through one
# gateway worker pinned to core 0, to an OpenAI-compatible upstream (`credentialflow serve`
# with the mock provider) on core 1, loaded by `credentialflow bench -c 32` on core 1 too.
#
# Two keys: `metered` has a tpm limit and a budget (the prompt is estimated before sending);
# `plain` has neither (nothing is reserved; settlement charges the reported usage).
# CPU per request is the gateway's utime+stime (/proc/PID/stat) over the run ÷ requests.
#
# Usage: scripts/bench/ai_metered.sh [-r ROUNDS] [-d SECONDS] BIN [BIN...]
#   Each round runs every binary and key in turn (alternating, so a noisy neighbour on this
#   shared machine weighs on all of them alike). Prints one line per run, then the medians.
set -euo pipefail
ROUNDS=3
DURATION=8
while getopts "r:d:" opt; do
  case "$opt" in
    r) ROUNDS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { sed -n '2,15p' "$0"; exit 2; }
BINS=("$@")
GEN_BIN=${BINS[0]}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
CLK_TCK=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { # log file
  for _ in $(seq 300); do grep -q "credentialflow ready" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not ready: $(tail -5 "$1")" >&2; return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The upstream: the mock provider behind an OpenAI-compatible front door, on core 1.
UP=$(free_port)
cat >"$WORK/up.toml" <<TOML
[server]
listen = ["127.0.0.1:$UP"]
admin_listen = "127.0.0.1:$(free_port)"
workers = 1
data_dir = "$WORK/up-data"
access_log = ""
[[provider]]
name = "mock"
kind = "mock"
[[model]]
name = "gpt-4o-mini"
provider = "mock"
[ai]
auth = "none"
TOML
taskset -c 1 "$GEN_BIN" serve --config "$WORK/up.toml" 2>"$WORK/up.err" &
PIDS+=($!)
wait_ready "$WORK/up.err"

# A 1 KB body: a ~900-byte system prompt and a user turn asking the mock for 24 words.
SYSTEM="You are a concise assistant for an internal engineering team. Answer in plain English, cite the handbook section you rely on, and say so when you are unsure. Prefer short paragraphs over lists. The gateway limits tokens per minute per key: it estimates the prompt size before the provider reports usage, reserves the requested completion cap on top, and corrects the reservation with the reported usage afterwards, refunding unused tokens and charging overruns. Budgets are kept in tokens and in US dollars per day, per month or in total, for keys and for teams; a request that would cross one is refused before it is sent. Streams cut short are charged at least their completion reservation, so leaving early does not escape the cost. Keep answers under a hundred words unless asked for more, and never repeat secrets."
printf '{"model":"gpt-4o-mini","max_tokens":32,"messages":[{"role":"system","content":"%s"},{"role":"user","content":"lorem 24"}]}' "$SYSTEM" >"$WORK/body.json"
echo "body: $(wc -c <"$WORK/body.json") bytes; $ROUNDS rounds of ${DURATION}s; gateway on core 0, upstream and bench on core 1"

run_one() { # bin label round
  local bin=$1 label=$2 round=$3
  local gw admin data
  gw=$(free_port); admin=$(free_port); data="$WORK/gw-data-$label-$round"
  cat >"$WORK/gw.toml" <<TOML
[server]
listen = ["127.0.0.1:$gw"]
admin_listen = "127.0.0.1:$admin"
admin_token = "env:CF_ADMIN_TOKEN"
workers = 1
data_dir = "$data"
access_log = ""
[[provider]]
name = "upstream"
kind = "openai"
base_url = "http://127.0.0.1:$UP"
api_key = "env:CF_BENCH_UPSTREAM_KEY"
[[model]]
name = "gpt-4o-mini"
provider = "upstream"
upstream_model = "gpt-4o-mini"
input_price_per_mtok = 0.15
output_price_per_mtok = 0.6
[ai]
auth = "api_key"
TOML
  CF_ADMIN_TOKEN=bench-admin CF_BENCH_UPSTREAM_KEY=sk-bench taskset -c 0 "$bin" serve \
    --config "$WORK/gw.toml" 2>"$WORK/gw.err" &
  local pid=$!
  wait_ready "$WORK/gw.err"
  local new_key='import sys, json; print(json.load(sys.stdin)["key"])'
  local plain metered
  plain=$(curl -s -XPOST -H "authorization: Bearer bench-admin" "http://127.0.0.1:$admin/admin/keys" \
    -d '{"name":"plain"}' | python3 -c "$new_key")
  metered=$(curl -s -XPOST -H "authorization: Bearer bench-admin" "http://127.0.0.1:$admin/admin/keys" \
    -d '{"name":"metered","tpm":100000000000,"budget_usd":1000000}' | python3 -c "$new_key")
  sleep 1.2 # the workers' key cache picks the new keys up
  for kind in metered plain; do
    local key=$plain
    [ "$kind" = metered ] && key=$metered
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $key" \
      -H 'content-type: application/json' --data-binary @"$WORK/body.json" \
      "http://127.0.0.1:$gw/v1/chat/completions")
    [ "$status" = 200 ] || { echo "probe $label $kind: $status" >&2; kill "$pid"; return 1; }
    local c0 c1 out reqs rps
    c0=$(cpu_ticks "$pid")
    out=$(taskset -c 1 "$GEN_BIN" bench "http://127.0.0.1:$gw/v1/chat/completions" -c 32 -t 1 \
      -d "${DURATION}s" -m POST -H 'content-type: application/json' -H "authorization: Bearer $key" \
      --body-file "$WORK/body.json" --json)
    c1=$(cpu_ticks "$pid")
    reqs=$(python3 -c 'import sys, json; j=json.loads(sys.argv[1]); print(j["requests"])' "$out")
    rps=$(python3 -c 'import sys, json; j=json.loads(sys.argv[1]); print(round(j["rps"]))' "$out")
    errs=$(python3 -c 'import sys, json; j=json.loads(sys.argv[1]); ok=sum(n for c,n in j["status"].items() if c.startswith("2")); print(j["errors_total"] + j["responses"] - ok)' "$out")
    local us
    us=$(python3 -c "print(round(($c1 - $c0) / $CLK_TCK * 1e6 / max(1, $reqs), 1))")
    echo "round $round  $label  $kind  req/s $rps  cpu-us/req $us  errors $errs"
    echo "$label $kind $us $rps" >>"$WORK/results"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  i=0
  for bin in "${BINS[@]}"; do
    run_one "$bin" "bin$i" "$round"
    i=$((i + 1))
  done
done
echo "medians (cpu-us/req, req/s); bin0..binN = ${BINS[*]}"
python3 - "$WORK/results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, kind, us, rps = line.split()
    rows[(label, kind)].append((float(us), float(rps)))
for (label, kind), runs in sorted(rows.items()):
    us = [u for u, _ in runs]; rps = [r for _, r in runs]
    print(f"{label} {kind:8} cpu-us/req median {statistics.median(us):.1f} (min {min(us):.1f}, max {max(us):.1f})"
          f"  req/s median {statistics.median(rps):.0f}")
PY
