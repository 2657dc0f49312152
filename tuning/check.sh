#!/usr/bin/env bash
# Reports where this host differs from the credentialflow profile in tuning/:
# the sysctls of sysctl.conf, the limits of limits.conf (for this shell, or for a running
# gateway with --pid PID) and whether io_uring is usable.
# Usage: tuning/check.sh [--pid PID] [--strict]   (--strict: exit 1 when anything differs)
set -uo pipefail
cd "$(dirname "$0")"

PID=""
STRICT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pid) PID=$2; shift 2 ;;
    --strict) STRICT=1; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 1 ;;
  esac
done

DIFFS=0
report() { # status name have want why
  printf '%-6s %-34s have %-22s want %-22s %s\n' "$1" "$2" "$3" "$4" "$5"
  [ "$1" = ok ] || DIFFS=$((DIFFS + 1))
}

# Settings where more is fine; the others must match exactly.
AT_LEAST=" net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.core.netdev_max_backlog fs.file-max fs.nr_open "

echo "== sysctls (tuning/sysctl.conf)"
while IFS= read -r line; do
  line=${line%%#*}
  [[ "$line" =~ ^[[:space:]]*([a-z0-9_.]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] || continue
  name=${BASH_REMATCH[1]}
  want=$(echo "${BASH_REMATCH[2]}" | tr -s ' \t' ' ')
  file=/proc/sys/${name//.//}
  if [ ! -r "$file" ]; then
    report absent "$name" "-" "$want" "not settable here (namespace or kernel)"
    continue
  fi
  have=$(tr -s ' \t' ' ' <"$file")
  if [ "$have" = "$want" ]; then
    report ok "$name" "$have" "$want" ""
  elif [[ "$AT_LEAST" == *" $name "* ]] && [ "$have" -ge "$want" ] 2>/dev/null; then
    report ok "$name" "$have" "$want" "(at least)"
  else
    report DIFF "$name" "$have" "$want" ""
  fi
done <sysctl.conf

echo "== limits (tuning/limits.conf, credentialflow.service)"
if [ -n "$PID" ]; then
  nofile=$(awk '/Max open files/ {print $4}' "/proc/$PID/limits")
  memlock=$(awk '/Max locked memory/ {print $4}' "/proc/$PID/limits")
  who="pid $PID"
else
  nofile=$(ulimit -n)
  memlock=$(ulimit -l)
  who="this shell"
fi
if [ "$nofile" = unlimited ] || [ "$nofile" -ge 1048576 ] 2>/dev/null; then
  report ok "nofile ($who)" "$nofile" ">= 1048576" ""
else
  report DIFF "nofile ($who)" "$nofile" ">= 1048576" "caps connections per process"
fi
if [ "$memlock" = unlimited ]; then
  report ok "memlock ($who)" "$memlock" "unlimited" ""
else
  report DIFF "memlock ($who)" "$memlock" "unlimited" "matters for io_uring before Linux 5.12"
fi

echo "== io_uring"
kernel=$(uname -r)
major=${kernel%%.*}
minor=${kernel#*.}
minor=${minor%%.*}
if [ "$major" -gt 5 ] || { [ "$major" -eq 5 ] && [ "$minor" -ge 11 ]; }; then
  report ok "kernel" "$kernel" ">= 5.11" ""
else
  report DIFF "kernel" "$kernel" ">= 5.11" "older kernels: --driver auto uses epoll"
fi
if [ -r /proc/sys/kernel/io_uring_disabled ]; then
  v=$(cat /proc/sys/kernel/io_uring_disabled)
  if [ "$v" = 0 ]; then
    report ok "kernel.io_uring_disabled" "$v" "0" ""
  else
    report DIFF "kernel.io_uring_disabled" "$v" "0" "1 = root/group only, 2 = off: epoll is used"
  fi
fi

echo "== cores: $(nproc) online; the gateway runs one worker per core it may use"
echo
if [ "$DIFFS" = 0 ]; then
  echo "host matches the profile"
else
  echo "$DIFFS setting(s) differ; tuning/README.md says what each buys"
fi
[ "$STRICT" = 1 ] && [ "$DIFFS" != 0 ] && exit 1
exit 0
