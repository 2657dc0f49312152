#!/usr/bin/env bash
# The project's test command (the README's second line; .ci/run runs exactly this): installs
# what the tests need on a fresh machine, checks style, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# The SDK tests (tests/sdk_clients.rs) drive the gateway with the official Python clients.
python3 -m pip install --quiet --disable-pip-version-check "openai==3.57.0" "anthropic==2.14.0"

# The store tests (tests/store_postgres.rs) start private PostgreSQL servers from Debian's
# package; no system-wide service is used or started.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "PostgreSQL is missing: install Debian's postgresql package (apt-get install postgresql)" >&2
        exit 1
    fi
fi

# The cluster tests (tests/cluster_redis.rs) start private redis-server processes on Unix
# sockets. Debian's package starts a system service on install (on systemd, or through
# invoke-rc.d): policy-rc.d forbids that for the install, and any instance left running is
# stopped, since no test uses or may rely on it.
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        # A policy file already there (container images ship one) is the machine's: keep it.
        made_policy=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            made_policy=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
        if command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now redis-server >/dev/null 2>&1 || true
        fi
        service redis-server stop >/dev/null 2>&1 || true
    else
        echo "Redis is missing: install Debian's redis-server package (apt-get install redis-server)" >&2
        exit 1
    fi
fi

# Style first: a formatting or lint failure is reported in seconds, not after the suite.
cargo fmt --check
cargo clippy --all-targets -- -D warnings

cargo test --profile test-release
