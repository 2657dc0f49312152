"""Both SDKs against the mock provider's tools: a message naming a tool gets a call of it,
whole and streamed, and the conversation with its result gets text."""

import json

import anthropic
import openai

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit

ASK = "Please call get_weather for Paris."
RESULT = "Sunny, 21 C"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}


def openai_side():
    client = openai.OpenAI(
        base_url=GATEWAY + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
    messages = [{"role": "user", "content": ASK}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    message = first.choices[0].message
    calls = [{"id": c.id, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
             for c in message.tool_calls or []]
    streamed, finish = {}, None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=messages, tools=tools, stream=True
    ):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = streamed.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] = delta.function.name or call["name"]
                    call["arguments"] += delta.function.arguments or ""
    followup = messages + [
        message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c["id"], "content": RESULT} for c in calls),
    ]
    answer = client.chat.completions.create(model=MODEL, messages=followup, tools=tools)
    return {
        "whole": {"finish_reason": first.choices[0].finish_reason, "tool_calls": calls,
                  "model": first.model},
        "stream": {"finish_reason": finish, "tool_calls": [
            dict(c, arguments=json.loads(c["arguments"])) for _, c in sorted(streamed.items())]},
        "followup": {"finish_reason": answer.choices[0].finish_reason,
                     "text": answer.choices[0].message.content},
    }


def anthropic_side():
    client = anthropic.Anthropic(
        base_url=GATEWAY, api_key=API_KEY, timeout=TIMEOUT, max_retries=0
    )
    tools = [{"name": "get_weather", "input_schema": SCHEMA}]
    messages = [{"role": "user", "content": ASK}]

    def uses(message):
        return [{"id": b.id, "name": b.name, "input": b.input}
                for b in message.content if b.type == "tool_use"]

    first = client.messages.create(model=MODEL, max_tokens=100, tools=tools, messages=messages)
    with client.messages.stream(model=MODEL, max_tokens=100, tools=tools, messages=messages) as s:
        streamed = s.get_final_message()
    followup = messages + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": u["id"], "content": RESULT}
            for u in uses(first)]},
    ]
    answer = client.messages.create(model=MODEL, max_tokens=100, tools=tools, messages=followup)
    return {
        "whole": {"stop_reason": first.stop_reason, "tool_uses": uses(first),
                  "model": first.model},
        "stream": {"stop_reason": streamed.stop_reason, "tool_uses": uses(streamed)},
        "followup": {"stop_reason": answer.stop_reason,
                     "text": "".join(b.text for b in answer.content if b.type == "text")},
    }


emit({"openai": openai_side(), "anthropic": anthropic_side()})
