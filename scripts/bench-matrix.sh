#!/usr/bin/env bash
# The side-by-side benchmark matrix (issue 7): credentialflow (io_uring and epoll) next to nginx,
# HAProxy and LiteLLM on this machine; writes benches/RESULTS.md.
#
# Usage: scripts/bench-matrix.sh [--quick] [--no-install] [--no-build] [matrix.py options]
#   --quick        1 run per figure, 3 s runs (default: the median of 3 runs of 8 s each)
#   --no-install   do not install missing peers (default: install them when run as root)
#   --no-build     use the release build ($CARGO_TARGET_DIR or target/) as it is
#   matrix.py options, passed through: --runs N --duration S --scenarios 1,2,..,7,gen,tuning
#     --modes pinned,unpinned --systems nginx,haproxy,ours-uring,ours-epoll --idle N --keep --out F
#     --plain-sizes 128,4096 --plain-conns 64,1000 (scenario 1's cases) --bin PATH
#
# Installs, when missing and run as root: nginx, libnginx-mod-http-lua, haproxy, wrk (Debian) and
# LiteLLM's proxy (pip, into a venv at /opt/cf-bench/litellm). Anything it cannot install is
# skipped with the reason printed and written to RESULTS.md. Raises `ulimit -n` as far as the
# hard limit allows (10,000 idle connections need it).
set -euo pipefail
cd "$(dirname "$0")/.."

INSTALL=1
BUILD=1
PASS=()
for arg in "$@"; do
  case "$arg" in
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) PASS+=("$arg") ;;
  esac
done

LITELLM_VENV=/opt/cf-bench/litellm
APT_PEERS=(nginx libnginx-mod-http-lua haproxy wrk)

missing_apt() {
  local pkg
  for pkg in "${APT_PEERS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}

MISSING=$(missing_apt | tr '\n' ' ')
if [ -n "$MISSING" ]; then
  if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ]; then
    echo "installing from Debian: $MISSING"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $MISSING >/dev/null
    # the package starts a default nginx on :80 where an init system exists; it is not ours
  else
    echo "not installing (not root or --no-install): $MISSING; those peers are skipped"
  fi
fi

if [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
  if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ]; then
    echo "installing LiteLLM's proxy into $LITELLM_VENV (pip install 'litellm[proxy]')"
    if ! { python3 -m venv "$LITELLM_VENV" &&
      "$LITELLM_VENV/bin/pip" install -q 'litellm[proxy]'; }; then
      echo "LiteLLM did not install; scenario 7 runs without it"
    fi
  else
    echo "LiteLLM not installed (not root or --no-install); scenario 7 runs without it"
  fi
fi

command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }

# 10,000 idle connections need descriptors on both sides; the hard limit caps what we can set.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "ulimit -n $(ulimit -n), net.core.somaxconn $(cat /proc/sys/net/core/somaxconn)"

if [ "$BUILD" = 1 ]; then
  cargo build --release --quiet
fi
# The binary under test: --bin when given, else the release build (in CARGO_TARGET_DIR if set).
BIN="${CARGO_TARGET_DIR:-target}/release/credentialflow"
for ((i = 0; i < ${#PASS[@]}; i++)); do
  case "${PASS[$i]}" in
    --bin) BIN="${PASS[$((i + 1))]:-}" ;;
    --bin=*) BIN="${PASS[$i]#--bin=}" ;;
  esac
done
[ -x "$BIN" ] || { echo "$BIN is missing" >&2; exit 1; }

CF_MATRIX_INVOCATION="scripts/bench-matrix.sh $*" exec python3 scripts/bench/matrix.py --bin "$BIN" "${PASS[@]}"
