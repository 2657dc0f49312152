"""OpenAI SDK: gateway and provider errors raised as the SDK's typed exceptions.

Runs the `CF_CASES` in order; a case that answers reports `"exception": null`.
"""

import openai

from sdk_env import GATEWAY, TIMEOUT, cases, emit, error_seen

observed = {}
for name, key, model in cases():
    client = openai.OpenAI(
        base_url=GATEWAY + "/v1", api_key=key, timeout=TIMEOUT, max_retries=0
    )
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=10
        )
        observed[name] = {"exception": None}
    except openai.APIStatusError as exc:
        observed[name] = error_seen(exc)
        observed[name]["is_api_status_error"] = True
emit(observed)
