"""Anthropic SDK: gateway and provider errors raised as the SDK's typed exceptions.

Runs the `CF_CASES` in order; a case that answers reports `"exception": null`.
"""

import anthropic

from sdk_env import GATEWAY, TIMEOUT, cases, emit, error_seen

observed = {}
for name, key, model in cases():
    client = anthropic.Anthropic(
        base_url=GATEWAY, api_key=key, timeout=TIMEOUT, max_retries=0
    )
    try:
        client.messages.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        observed[name] = {"exception": None}
    except anthropic.APIStatusError as exc:
        observed[name] = error_seen(exc)
        observed[name]["is_api_status_error"] = True
emit(observed)
