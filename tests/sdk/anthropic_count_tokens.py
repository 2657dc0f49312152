"""Anthropic SDK: messages.count_tokens, as Claude Code calls it before a request."""

import anthropic

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit

client = anthropic.Anthropic(
    base_url=GATEWAY, api_key=API_KEY, timeout=TIMEOUT, max_retries=0
)
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]

counted = client.messages.count_tokens(
    model=MODEL,
    system="You are terse.",
    tools=TOOLS,
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
)
emit({"input_tokens": counted.input_tokens})
