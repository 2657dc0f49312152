"""OpenAI SDK, Responses API: a function tool called, whole and streamed, then the tool's
result sent back as a `function_call_output` item with the call's items.

`CF_INPUT` replaces the user's question (the mock provider calls a tool only when the
question names it)."""

import json
import os

import openai

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit

client = openai.OpenAI(
    base_url=GATEWAY + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0
)
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
INPUT = [
    {
        "role": "user",
        "content": os.environ.get("CF_INPUT", "What is the weather in Paris?"),
    }
]


def calls_of(response):
    return [
        {"call_id": item.call_id, "name": item.name, "arguments": json.loads(item.arguments)}
        for item in response.output
        if item.type == "function_call"
    ]


first = client.responses.create(model=MODEL, input=INPUT, tools=TOOLS)

types = []
argument_deltas = ""
arguments_done = None
with client.responses.stream(model=MODEL, input=INPUT, tools=TOOLS) as stream:
    for event in stream:
        types.append(event.type)
        if event.type == "response.function_call_arguments.delta":
            argument_deltas += event.delta
        elif event.type == "response.function_call_arguments.done":
            arguments_done = event.arguments
    streamed = stream.get_final_response()

followup_input = INPUT + [item.model_dump(exclude_none=True) for item in first.output] + [
    {"type": "function_call_output", "call_id": c["call_id"], "output": "Sunny, 21 C"}
    for c in calls_of(first)
]
answer = client.responses.create(model=MODEL, input=followup_input, tools=TOOLS)

emit(
    {
        "whole": {"calls": calls_of(first), "status": first.status,
                  "tools": [t.name for t in first.tools]},
        "stream": {
            "calls": calls_of(streamed),
            "types": types,
            "argument_deltas": argument_deltas,
            "arguments_done": arguments_done,
        },
        "followup": {"text": answer.output_text, "status": answer.status},
    }
)
