"""Anthropic SDK: messages.create, messages.stream and create(stream=True)."""

import anthropic

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit

client = anthropic.Anthropic(
    base_url=GATEWAY, api_key=API_KEY, timeout=TIMEOUT, max_retries=0
)
ARGS = dict(
    model=MODEL,
    max_tokens=50,
    system="You are terse.",
    messages=[{"role": "user", "content": "Say hello to the gateway."}],
)


def usage_of(usage):
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
    }


def message_of(message):
    return {
        "id": message.id,
        "model": message.model,
        "role": message.role,
        "text": "".join(b.text for b in message.content if b.type == "text"),
        "stop_reason": message.stop_reason,
        "usage": usage_of(message.usage),
    }


raw = client.messages.with_raw_response.create(**ARGS)
whole = dict(message_of(raw.parse()), request_id=raw.headers.get("x-request-id"))

with client.messages.stream(**ARGS) as stream:
    pieces = list(stream.text_stream)
    final = stream.get_final_message()
helper = dict(message_of(final), pieces=len(pieces), text_stream="".join(pieces))

# The raw events, as a client without the helper sees them.
events, text, usage = [], "", {}
for event in client.messages.create(stream=True, **ARGS):
    events.append(event.type)
    if event.type == "message_start":
        usage["input_tokens"] = event.message.usage.input_tokens
    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
        text += event.delta.text
    elif event.type == "message_delta":
        usage["output_tokens"] = event.usage.output_tokens
        usage["stop_reason"] = event.delta.stop_reason
raw_events = {"events": events, "text": text, "usage": usage}

emit({"whole": whole, "stream": helper, "raw_stream": raw_events})
