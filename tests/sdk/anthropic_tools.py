"""Anthropic SDK: tool use, whole and streamed, then the conversation with its result."""

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
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def tool_uses(message):
    return [
        {"id": b.id, "name": b.name, "input": b.input}
        for b in message.content
        if b.type == "tool_use"
    ]


first = client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=MESSAGES)
# The stream helper assembles the input from `input_json_delta` pieces.
with client.messages.stream(model=MODEL, max_tokens=100, tools=TOOLS, messages=MESSAGES) as s:
    streamed = s.get_final_message()

followup = MESSAGES + [
    {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": u["id"], "content": "Sunny, 21 C"}
            for u in tool_uses(first)
        ],
    },
]
answer = client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=followup)

emit(
    {
        "whole": {"stop_reason": first.stop_reason, "tool_uses": tool_uses(first),
                  "usage": [first.usage.input_tokens, first.usage.output_tokens]},
        "stream": {"stop_reason": streamed.stop_reason, "tool_uses": tool_uses(streamed)},
        "followup": {"stop_reason": answer.stop_reason,
                     "text": "".join(b.text for b in answer.content if b.type == "text")},
    }
)
