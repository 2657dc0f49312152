"""OpenAI SDK: embeddings.create and models.list."""

import openai

from sdk_env import API_KEY, GATEWAY, MODEL, TIMEOUT, emit

client = openai.OpenAI(
    base_url=GATEWAY + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0
)

embeddings = client.embeddings.create(
    model=MODEL, input=["the quick brown fox", "jumps over the lazy dog"]
)
models = client.models.list()

emit(
    {
        "embeddings": {
            "count": len(embeddings.data),
            "indexes": [e.index for e in embeddings.data],
            "dimensions": [len(e.embedding) for e in embeddings.data],
            "prompt_tokens": embeddings.usage.prompt_tokens,
            "total_tokens": embeddings.usage.total_tokens,
        },
        "models": sorted(m.id for m in models),
    }
)
