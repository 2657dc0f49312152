"""OpenAI SDK: a tool call, whole and streamed, then the conversation with its result."""

import json

import openai

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit

client = openai.OpenAI(
    base_url=GATEWAY + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]

first = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS)
message = first.choices[0].message
calls = [
    {"id": c.id, "type": c.type, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
    for c in message.tool_calls or []
]

# A streamed call arrives as deltas: the id and name first, the arguments in pieces.
streamed = {}
finish = None
stream = client.chat.completions.create(
    model=MODEL, messages=MESSAGES, tools=TOOLS, stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    for choice in chunk.choices:
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = streamed.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function:
                call["name"] = delta.function.name or call["name"]
                call["arguments"] += delta.function.arguments or ""

followup = MESSAGES + [
    message.model_dump(exclude_none=True),
    *({"role": "tool", "tool_call_id": c["id"], "content": "Sunny, 21 C"} for c in calls),
]
answer = client.chat.completions.create(model=MODEL, messages=followup, tools=TOOLS)

emit(
    {
        "whole": {"finish_reason": first.choices[0].finish_reason, "tool_calls": calls,
                  "usage": [first.usage.prompt_tokens, first.usage.completion_tokens]},
        "stream": {"finish_reason": finish, "tool_calls": [
            dict(c, arguments=json.loads(c["arguments"])) for _, c in sorted(streamed.items())]},
        "followup": {"finish_reason": answer.choices[0].finish_reason,
                     "text": answer.choices[0].message.content},
    }
)
