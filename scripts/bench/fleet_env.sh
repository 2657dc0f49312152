# Shared plumbing of the fleet benchmarks (scripts/fleet-bench.sh, scripts/cluster-bench.sh):
# a work directory cleaned on exit, free ports, a private PostgreSQL and Redis run as an
# unprivileged user on Unix sockets only, and a pinned `credentialflow bench` run that reports
# the gateway's CPU time per request. Source it from a script running under `set -euo pipefail`
# after setting CF_BIN; it sets WORK and PIDS.
#
# Environment: PG_BIN (default: the newest /usr/lib/postgresql/*/bin), CF_FLEET_BENCH_KEEP=1 keeps
# the work directory for its logs.

if [[ -z ${PG_BIN:-} ]]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[[ -x $CF_BIN ]] || { echo "no release binary at $CF_BIN: run cargo build --release" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
if (($(nproc) < 2)); then
    echo "needs 2 cores: gateway on core 0, load on core 1" >&2
    exit 1
fi

# Short: the socket path <dir>/.s.PGSQL.5432 must fit in 108 bytes.
WORK=$(mktemp -d /tmp/cf-fleet-XXXXXX)
# The servers' user must be able to reach its directory inside (but not list this one).
chmod 711 "$WORK"
PGDIR=$WORK/pg
REDIS_DIR=$WORK/redis
PIDS=()

as_server_user() {
    if ((EUID == 0)); then runuser -u nobody -- "$@"; else "$@"; fi
}

fleet_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -f $PGDIR/data/postmaster.pid ]]; then
        (cd "$PGDIR" && HOME=$PGDIR as_server_user "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1) || true
    fi
    if [[ -f $REDIS_DIR/redis.pid ]]; then
        kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null || true
    fi
    if [[ ${CF_FLEET_BENCH_KEEP:-0} == 1 ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap fleet_cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1 tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        tries=$((tries + 1))
        if ((tries > 200)); then
            echo "nothing listening on port $port after 20 s" >&2
            return 1
        fi
        sleep 0.1
    done
}

# start_postgres: a private PostgreSQL; exports CF_STORE_URL (trust auth on its socket).
start_postgres() {
    [[ -x ${PG_BIN:-}/initdb ]] || { echo "PostgreSQL not found (install Debian's postgresql)" >&2; exit 1; }
    mkdir -p "$PGDIR"
    chmod 700 "$PGDIR"
    ((EUID == 0)) && chown nobody: "$PGDIR"
    (cd "$PGDIR" && HOME=$PGDIR as_server_user "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C >"$WORK/initdb.log" 2>&1) \
        || { cat "$WORK/initdb.log" >&2; exit 1; }
    # Durable as a real store would be (fsync stays on); PostgreSQL's packaged memory default.
    cat >>"$PGDIR/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$PGDIR'
shared_buffers = 128MB
EOF
    (cd "$PGDIR" && HOME=$PGDIR as_server_user "$PG_BIN/pg_ctl" -D "$PGDIR/data" \
        -l "$PGDIR/server.log" -w -t 60 start >/dev/null) \
        || { cat "$PGDIR/server.log" >&2; exit 1; }
    export CF_STORE_URL="postgres://postgres@/postgres?host=$PGDIR"
}

# start_redis: a private redis-server, persistence off, on a Unix socket only; exports
# CF_REDIS_URL and REDIS_SOCK.
start_redis() {
    command -v redis-server >/dev/null || { echo "redis-server not found (install Debian's redis-server)" >&2; exit 1; }
    mkdir -p "$REDIS_DIR"
    ((EUID == 0)) && chown nobody: "$REDIS_DIR"
    REDIS_SOCK=$REDIS_DIR/redis.sock
    as_server_user redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 777 \
        --save '' --appendonly no --dir "$REDIS_DIR" --daemonize yes \
        --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" >/dev/null
    local tries=0
    until redis-cli -s "$REDIS_SOCK" ping >/dev/null 2>&1; do
        tries=$((tries + 1))
        ((tries > 100)) && { echo "redis-server did not start" >&2; cat "$REDIS_DIR/redis.log" >&2; exit 1; }
        sleep 0.1
    done
    export REDIS_SOCK
    export CF_REDIS_URL="redis+unix://$REDIS_SOCK"
}

# start_bench_upstream: fresh random secrets for the gateways (CF_PEPPER, CF_ADMIN_TOKEN, exported),
# quiet gateway logs, and a fixed-response upstream (`bench-upstream --size 128`) on core 1 at
# 127.0.0.1:$UP_PORT.
start_bench_upstream() {
    CF_PEPPER=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    CF_ADMIN_TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    export CF_PEPPER CF_ADMIN_TOKEN
    export CF_LOG=warn
    UP_PORT=$(free_port)
    taskset -c 1 "$CF_BIN" bench-upstream --listen "127.0.0.1:$UP_PORT" --size 128 --workers 1 \
        >"$WORK/upstream.log" 2>&1 &
    PIDS+=($!)
    wait_port "$UP_PORT"
}

# cpu_ticks PID: utime + stime of a process (fields 14 and 15 of /proc/PID/stat), in ticks.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat")
    stat=${stat##*) }
    awk '{print $12 + $13}' <<<"$stat"
}

# bench_run PID URL CONNS DURATION [bench options...]: one measured run of `credentialflow
# bench` on core 1 against the gateway process PID; prints "req/s failed cpu-us-per-request",
# failed being transport errors plus non-2xx answers. The gateway's CPU time per request is
# less swayed than req/s by other work on the machine, which takes cores away from either
# gateway.
bench_run() {
    local pid=$1 url=$2 conns=$3 duration=$4 before after
    shift 4
    before=$(cpu_ticks "$pid")
    taskset -c 1 "$CF_BIN" bench "$url" -c "$conns" -d "$duration" -t 1 --warmup 1s --json "$@" \
        >"$WORK/run.json"
    after=$(cpu_ticks "$pid")
    python3 - "$WORK/run.json" "$((after - before))" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
failed = j["errors_total"] + sum(n for code, n in j["status"].items() if not code.startswith("2"))
# The ticks cover the warm-up too: divide by every request sent, not only the recorded ones.
sent = j["responses"] + round(j["rps"] * j["warmup_s"])
print("%.0f %d %.1f" % (j["rps"], failed, ticks / hz * 1e6 / max(1, sent)))
EOF
}
