#!/usr/bin/env bash
# The load generator against wrk (issue 21): one private nginx answering `return 200` on one
# core, then `wrk -t1` and `credentialflow bench -t 1` taking turns on the other core, the same
# connections and duration, for a few alternating rounds. Prints each run's req/s and the
# generator's own CPU time per request (user+system), which stays comparable when other work
# shares the machine, and the bench/wrk ratio of both.
#
# Usage: scripts/bench/generator.sh [BIN] [ROUNDS] [SECONDS] [CONNECTIONS]
#   BIN defaults to target/release/credentialflow; 3 rounds of 5 s at 16 connections.
#   GEN_CPU / NGINX_CPU choose the cores (default 0 and 1). OTHER_BIN, when set, is a second
#   credentialflow binary (say, a build from before a change) run in the same rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${1:-target/release/credentialflow}
ROUNDS=${2:-3}
RUN_SECONDS=${3:-5}
CONNS=${4:-16}
GEN_CPU=${GEN_CPU:-0}
NGINX_CPU=${NGINX_CPU:-1}

command -v wrk >/dev/null || { echo "wrk is required" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is required" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN is missing" >&2; exit 1; }

DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$DIR/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $DIR/body;
    proxy_temp_path $DIR/proxy;
    fastcgi_temp_path $DIR/fastcgi;
    uwsgi_temp_path $DIR/uwsgi;
    scgi_temp_path $DIR/scgi;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        location / { return 200; }
    }
}
CONF
taskset -c "$NGINX_CPU" nginx -c "$DIR/nginx.conf" -p "$DIR" -e "$DIR/error.log" &
NGINX=$!
trap 'kill $NGINX 2>/dev/null; wait $NGINX 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.1
done
URL="http://127.0.0.1:$PORT/"

# Each run prints "req/s requests cpu_seconds".
wrk_run() {
  local out
  out=$(/usr/bin/time -f "%U %S" -o "$DIR/time" taskset -c "$GEN_CPU" \
    wrk -t1 -c"$CONNS" -d"${RUN_SECONDS}s" "$URL")
  echo "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" \
    "$(awk '/requests in/ {print $1}' <<<"$out")" "$(awk '{print $1 + $2}' "$DIR/time")"
}
bench_run() {
  /usr/bin/time -f "%U %S" -o "$DIR/time" taskset -c "$GEN_CPU" \
    "${1:-$BIN}" bench "$URL" -t 1 -c "$CONNS" -d "${RUN_SECONDS}s" --json >"$DIR/bench.json"
  python3 - "$DIR/bench.json" "$DIR/time" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
cpu = sum(float(x) for x in open(sys.argv[2]).read().split())
if s["errors_total"] or set(s["status"]) != {"200"}:
    print("bench errors", s["errors"], "status", s["status"], file=sys.stderr)
print(round(s["rps"]), s["requests"], cpu)
PY
}
per_request() {
  python3 -c 'import sys; r, n, c = map(float, sys.argv[1:]); print(f"{r:.0f} req/s {c * 1e6 / n:.2f} CPU-us/req")' "$@"
}
ratio() {
  python3 -c 'import sys; b, w = (s.split() for s in sys.argv[1:]); print(f"req/s {float(b[0]) / float(w[0]):.2f}x, CPU/req {(float(b[2]) / float(b[1])) / (float(w[2]) / float(w[1])):.2f}x")' "$@"
}

echo "nginx return 200 on core $NGINX_CPU; generators on core $GEN_CPU; -c $CONNS, ${RUN_SECONDS}s"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  w=$(wrk_run)
  b=$(bench_run)
  # shellcheck disable=SC2086
  echo "round $round: wrk $(per_request $w) | bench $(per_request $b) | bench/wrk $(ratio "$b" "$w")"
  if [ -n "${OTHER_BIN:-}" ]; then
    o=$(bench_run "$OTHER_BIN")
    echo "         $OTHER_BIN: $(per_request $o) | vs wrk $(ratio "$o" "$w")"
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
