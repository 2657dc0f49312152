"""What every SDK script shares: the settings the Rust test (tests/sdk_clients.rs) passes in
the environment, and the one JSON line a script prints.

Only `base_url` and `api_key` differ from a stock SDK client; retries are off so that each
error reaches the script as the SDK's typed exception, and every call has a timeout.
"""

import json
import os
import sys

#: The gateway's root URL, `http://127.0.0.1:PORT` (no `/v1`).
GATEWAY = os.environ["CF_BASE_URL"]
#: The virtual key the gateway issued.
API_KEY = os.environ["CF_API_KEY"]
#: The client-facing model name.
MODEL = os.environ.get("CF_MODEL", "")
#: Seconds any single SDK call may take.
TIMEOUT = float(os.environ.get("CF_TIMEOUT", "20"))


def cases():
    """`CF_CASES`: a JSON list of `[name, key, model]`, run in order by the error scripts."""
    return json.loads(os.environ.get("CF_CASES", "[]"))


def error_seen(exc):
    """What an SDK exception says: its class, status, error type and `retry-after`."""
    # The OpenAI SDK hands over the inner `error` object, the Anthropic SDK the whole body.
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    if not isinstance(error, dict):
        error = {}
    return {
        "exception": type(exc).__name__,
        "status": exc.status_code,
        "type": error.get("type"),
        "retry_after": exc.response.headers.get("retry-after"),
        "request_id": exc.response.headers.get("x-request-id"),
    }


def emit(observed):
    """Prints what the script observed as one JSON line: the Rust test parses it."""
    sys.stdout.write(json.dumps(observed, sort_keys=True) + "\n")
    sys.stdout.flush()
