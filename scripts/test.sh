#!/usr/bin/env bash
# The project's test command (the README's second line; .ci/run runs exactly this): installs
# what the tests need on a fresh machine, checks style, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run besides cargo, from Debian packages when missing:
# - python3 and pip: the SDK tests (tests/sdk_clients.rs) drive the gateway with the official
#   Python clients;
# - postgresql: the store tests (tests/store_postgres*.rs, fleet*.rs) start private servers;
# - redis-server: the cluster tests (tests/cluster_redis.rs) start private servers;
# - curl: the README quickstart test (tests/quickstart.rs) runs the README's curl commands;
# - systemd (for systemd-analyze): tests/systemd_unit.rs verifies the shipped unit;
# - chromium, nodejs and npm: the dashboard's browser tests (tests/dashboard_browser.rs) drive
#   Debian's headless Chromium with Playwright from Node.
# No test uses a system-wide service. The packages start one on install (through systemd or
# invoke-rc.d), so policy-rc.d forbids that for the install and anything started anyway is
# stopped afterwards.
missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}; install them (apt-get install ${missing[*]}) or run this as root" >&2
        exit 1
    fi
    apt-get update -qq
    # A policy file already there (container images ship one) is the machine's: keep it.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    for service in postgresql redis-server; do
        if command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now "$service" >/dev/null 2>&1 || true
        fi
        service "$service" stop >/dev/null 2>&1 || true
    done
fi

# The SDK versions the tests are written against (tests/sdk_clients.rs, PIP_INSTALL), and the
# reference clients the fakes of outside services are checked against (tests/reference/):
# pyjwt with its RSA backend (tests/identity_google.rs), botocore (the SigV4 and event-stream
# tests) and requests-oauthlib with its oauthlib (the fake OAuth2 token endpoint,
# tests/credentials_oauth2.rs); mcp, whose servers and client tests/mcp_gateway.rs runs on
# both sides of the gateway. Debian's own python3 refuses to install into the system
# (PEP 668, "externally managed"): there the install is retried with
# --break-system-packages, which pip offers for exactly this case.
sdks=("openai==3.57.0" "anthropic==2.14.0" "pyjwt[crypto]==2.15.1" "cryptography==48.0.0"
    "botocore==1.43.11" "requests-oauthlib==2.0.0" "oauthlib==3.2.2" "mcp==2.3.0")
if ! python3 -m pip install --quiet --disable-pip-version-check "${sdks[@]}" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${sdks[@]}"
fi

# The browser tests' driver: playwright-core at the version tests/browser/package-lock.json
# pins (it drives the system's Chromium; it downloads no browser).
(cd tests/browser && npm ci --no-audit --no-fund --silent)

# Style first: a formatting or lint failure is reported in seconds, not after the suite.
cargo fmt --check
cargo clippy --all-targets -- -D warnings

cargo test --profile test-release
