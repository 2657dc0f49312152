"""OpenAI SDK: chat.completions.create, whole and streamed (with and without usage)."""

import openai

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit

client = openai.OpenAI(
    base_url=GATEWAY + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway."},
]


def usage_of(usage):
    if usage is None:
        return None
    details = usage.prompt_tokens_details
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": details.cached_tokens if details else None,
    }


def whole():
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=50
    )
    completion = raw.parse()
    choice = completion.choices[0]
    return {
        "request_id": raw.headers.get("x-request-id"),
        "model": completion.model,
        "text": choice.message.content,
        "finish_reason": choice.finish_reason,
        "usage": usage_of(completion.usage),
    }


def streamed(**extra):
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=50, stream=True, **extra
    )
    chunks = list(stream)
    return {
        "chunks": len(chunks),
        "text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
        "finish_reasons": [
            c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
        ],
        "usage_chunks": [usage_of(c.usage) for c in chunks if c.usage is not None],
        "empty_choice_chunks": sum(1 for c in chunks if not c.choices),
    }


emit(
    {
        "whole": whole(),
        "stream": streamed(),
        "stream_usage": streamed(stream_options={"include_usage": True}),
    }
)
