#!/usr/bin/env bash
# Runs the cargo-fuzz targets in tests/fuzz for a while each and prints libFuzzer's final stats.
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]      (default: all, 600 s each)
#
# Logs go to $FUZZ_LOG_DIR/fuzz-<target>.log (default tests/fuzz/target).
# Needs the nightly toolchain (cargo-fuzz is installed if missing). Runs at nice 10: fuzzing
# is a background job on a shared machine. New inputs go to tests/fuzz/target/corpus/<target>
# (not committed); the committed seeds in tests/fuzz/corpus/<target> are read only. To keep a
# new finding, minimize it into the committed corpus:
#   cargo +nightly fuzz cmin --fuzz-dir tests/fuzz -s none TARGET tests/fuzz/corpus/TARGET
# Crashes land in tests/fuzz/artifacts/<target>/; reproduce one with
#   cargo +nightly fuzz run --fuzz-dir tests/fuzz -s none TARGET tests/fuzz/artifacts/TARGET/crash-...
# The stable replay test, tests/fuzz_corpora.rs, runs every committed corpus file.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_DIR=tests/fuzz
# Nightly fuzz builds stay in tests/fuzz/target, whatever target dir the stable builds use.
unset CARGO_TARGET_DIR
TARGETS=(http1_head http1_chunked sse ai_json config http1_path lua_caps)
target=${1:-all}
seconds=${2:-600}

# Per target: longest input (libFuzzer -max_len) and the dictionary, if any.
max_len() {
    case $1 in
        http1_head) echo 8192 ;;     # twice fuzzing::FUZZ_MAX_HEAD, so TooLarge is reachable
        ai_json | config) echo 16384 ;;
        *) echo 4096 ;;
    esac
}
dict() {
    case $1 in
        http1_head | http1_chunked) echo "-dict=$FUZZ_DIR/http1.dict" ;;
        ai_json) echo "-dict=$FUZZ_DIR/ai_json.dict" ;;
    esac
}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz || cargo install cargo-fuzz
fi

case $target in
    all) run=("${TARGETS[@]}") ;;
    *)
        [[ -f $FUZZ_DIR/fuzz_targets/$target.rs ]] || {
            echo "unknown target '$target'; targets: ${TARGETS[*]}" >&2
            exit 2
        }
        run=("$target")
        ;;
esac

# Fuzz the dependency versions the gateway ships with: start from the main lock file (cargo
# then adds libfuzzer-sys to it).
[[ -f $FUZZ_DIR/Cargo.lock ]] || cp Cargo.lock "$FUZZ_DIR/Cargo.lock"

# The fuzzed modules hold no unsafe code: panics and debug assertions are the oracle, so
# AddressSanitizer (-s address) would only halve the executions per second.
nice -n 10 cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" -s none

log_dir=${FUZZ_LOG_DIR:-$FUZZ_DIR/target}
mkdir -p "$log_dir"
status=0
for t in "${run[@]}"; do
    work=$FUZZ_DIR/target/corpus/$t
    mkdir -p "$work" "$FUZZ_DIR/artifacts/$t"
    log=$log_dir/fuzz-$t.log
    echo "== $t: ${seconds}s, log $log"
    # shellcheck disable=SC2046
    if ! nice -n 10 cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" -s none "$t" "$work" \
        "$FUZZ_DIR/corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len="$(max_len "$t")" -timeout=10 -print_final_stats=1 $(dict "$t") >"$log" 2>&1; then
        echo "   $t FAILED (crash or error): see $log and $FUZZ_DIR/artifacts/$t/"
        status=1
    fi
    # The last status line (execs, cov, ft, corpus) and the final statistics.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
done
exit $status
