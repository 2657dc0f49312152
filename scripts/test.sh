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

# Style first: a formatting or lint failure is reported in seconds, not after the suite.
cargo fmt --check
cargo clippy --all-targets -- -D warnings

cargo test --profile test-release
