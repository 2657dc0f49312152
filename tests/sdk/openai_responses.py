"""OpenAI SDK, Responses API: a plain response, the raw event stream, and the SDK's stream
helper (which rebuilds the Response from the events and fails on any it cannot place)."""

import openai

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit

client = openai.OpenAI(
    base_url=GATEWAY + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0
)
INSTRUCTIONS = "You are terse."
INPUT = "Say hello to the gateway."


def usage_of(usage):
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.input_tokens_details.cached_tokens,
    }


def summary(response):
    return {
        "id": response.id,
        "object": response.object,
        "model": response.model,
        "status": response.status,
        "output_text": response.output_text,
        "output_types": [item.type for item in response.output],
        "instructions": response.instructions,
        "metadata": response.metadata,
        "usage": usage_of(response.usage),
    }


raw = client.responses.with_raw_response.create(
    model=MODEL, instructions=INSTRUCTIONS, input=INPUT, metadata={"run": "sdk"}
)
whole = raw.parse()

# The same conversation as items, streamed: every event typed by the SDK.
events = []
text = ""
completed = None
stream = client.responses.create(
    model=MODEL,
    instructions=INSTRUCTIONS,
    input=[{"role": "user", "content": [{"type": "input_text", "text": INPUT}]}],
    stream=True,
)
for event in stream:
    events.append({"type": event.type, "sequence_number": event.sequence_number})
    if event.type == "response.output_text.delta":
        text += event.delta
    elif event.type == "response.completed":
        completed = event.response

# The SDK's helper accumulates the events into the final Response itself.
with client.responses.stream(model=MODEL, instructions=INSTRUCTIONS, input=INPUT) as helper:
    helper_text = "".join(
        e.delta for e in helper if e.type == "response.output_text.delta"
    )
    final = helper.get_final_response()

emit(
    {
        "whole": dict(summary(whole), request_id=raw.headers.get("x-request-id")),
        "stream": {
            "types": [e["type"] for e in events],
            "sequence_numbers": [e["sequence_number"] for e in events],
            "text": text,
            "completed": summary(completed) if completed else None,
        },
        "helper": {"text": helper_text, "final": summary(final)},
    }
)
