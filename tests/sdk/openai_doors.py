"""OpenAI SDK: models.retrieve, legacy completions.create (plain and streamed), and the model
name chat answers carry."""

import os

import openai

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit, error_seen


#: A model the key may not use (retrieving it must look like a model that does not exist).
OTHER = os.environ.get("CF_OTHER_MODEL", "")
#: Whether the model is on a provider with the legacy completions API.
COMPLETIONS = os.environ.get("CF_COMPLETIONS", "") == "1"

client = openai.OpenAI(
    base_url=GATEWAY + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0
)

seen = {}
model = client.models.retrieve(MODEL)
seen["retrieve"] = {"id": model.id, "object": model.object, "owned_by": model.owned_by,
                    "created": model.created}
try:
    client.models.retrieve(OTHER)
    seen["retrieve_other"] = "found"
except openai.APIStatusError as exc:
    seen["retrieve_other"] = error_seen(exc)
    seen["retrieve_other"]["code"] = (exc.body or {}).get("code")

chat = client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "Name yourself."}]
)
seen["chat_model"] = chat.model
chunks = client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "Name yourself."}], stream=True,
    stream_options={"include_usage": True},
)
seen["chat_stream_models"] = sorted({c.model for c in chunks})

if COMPLETIONS:
    whole = client.completions.create(model=MODEL, prompt="Say this is a test", max_tokens=20)
    seen["completion"] = {
        "object": whole.object, "model": whole.model, "text": whole.choices[0].text,
        "finish_reason": whole.choices[0].finish_reason,
        "usage": [whole.usage.prompt_tokens, whole.usage.completion_tokens],
    }
    text, models, finish, usage = "", set(), None, None
    for chunk in client.completions.create(
        model=MODEL, prompt=["Say this is a test"], max_tokens=20, stream=True,
        stream_options={"include_usage": True},
    ):
        models.add(chunk.model)
        for choice in chunk.choices:
            text += choice.text
            finish = choice.finish_reason or finish
        if chunk.usage:
            usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
    seen["completion_stream"] = {"text": text, "models": sorted(models),
                                 "finish_reason": finish, "usage": usage}
else:
    try:
        client.completions.create(model=MODEL, prompt="Say this is a test")
        seen["completion"] = "answered"
    except openai.APIStatusError as exc:
        seen["completion"] = error_seen(exc)
        seen["completion"]["message"] = (exc.body or {}).get("message")

emit(seen)
