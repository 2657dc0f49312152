"""Reference check of the fake Vertex AI's Claude side (tests/common/fake_vertex.rs) with the
official Anthropic SDK's Vertex client, so the fake speaks Vertex's wire format and not only
what the gateway sends.

Run by tests/credentials_vertex.rs through tests/reference/run.rs; reads one JSON object on
stdin and prints one JSON line.

Input: {"service_account": path of the key file, "base_url": the fake's URL, "region",
"project", "model": a Claude model id as Vertex names it ("claude-sonnet-4@20250514")}.

The access token comes from the fake Google token endpoint named by the key file's
token_uri, obtained as google-auth's service-account credentials do (an RS256 JWT-bearer
assertion signed with pyjwt, RFC 7523), so nothing here is the gateway's code. The SDK is
given that token (`access_token=`) and `base_url` with the `/v1` suffix, the form of its
default `https://{region}-aiplatform.googleapis.com/v1`; it builds the
`/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:rawPredict` (or
`:streamRawPredict`) paths itself.

The SDK puts its own API version in the body's `anthropic_version` unless the request sets
one; Google documents `vertex-2023-10-16` for Claude on Vertex, which the fake requires, so
the calls set it with `extra_body`. What the SDK sends without it is reported too
("default_version").

Output: {"plain": {text, stop_reason, input_tokens, output_tokens}, "stream": {the same,
"events": event types in order}, "wrong_token": {status, error}, "default_version":
{status, error}}.
"""

import json
import sys
import time
import urllib.parse
import urllib.request

import anthropic
import jwt

VERTEX_VERSION = "vertex-2023-10-16"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def access_token(key_file):
    """Trades a signed assertion for an access token at the key file's token_uri."""
    with open(key_file, encoding="utf-8") as f:
        account = json.load(f)
    now = int(time.time())
    claims = {
        "iss": account["client_email"],
        "scope": CLOUD_PLATFORM,
        "aud": account["token_uri"],
        "iat": now,
        "exp": now + 3600,
    }
    assertion = jwt.encode(
        claims,
        account["private_key"],
        algorithm="RS256",
        headers={"kid": account["private_key_id"]},
    )
    body = urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": assertion}).encode()
    request = urllib.request.Request(
        account["token_uri"],
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)["access_token"]


def client(settings, token):
    return anthropic.AnthropicVertex(
        region=settings["region"],
        project_id=settings["project"],
        access_token=token,
        base_url=settings["base_url"].rstrip("/") + "/v1",
        max_retries=0,
        timeout=30,
    )


def request_args(settings):
    return {
        "model": settings["model"],
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello."}],
    }


def plain(vertex, settings):
    message = vertex.messages.create(
        **request_args(settings), extra_body={"anthropic_version": VERTEX_VERSION}
    )
    return {
        "text": "".join(block.text for block in message.content if block.type == "text"),
        "stop_reason": message.stop_reason,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
    }


def streamed(vertex, settings):
    events = []
    with vertex.messages.stream(
        **request_args(settings), extra_body={"anthropic_version": VERTEX_VERSION}
    ) as stream:
        for event in stream:
            if event.type in ("message_start", "content_block_start", "content_block_delta",
                              "content_block_stop", "message_delta", "message_stop"):
                events.append(event.type)
        message = stream.get_final_message()
    return {
        "text": "".join(block.text for block in message.content if block.type == "text"),
        "stop_reason": message.stop_reason,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
        "events": events,
    }


def refusal(call):
    """The status and SDK exception name of a call expected to fail."""
    try:
        call()
    except anthropic.APIStatusError as e:
        return {"status": e.status_code, "error": type(e).__name__}
    return {"status": 200, "error": None}


def main():
    settings = json.load(sys.stdin)
    token = access_token(settings["service_account"])
    vertex = client(settings, token)
    wrong = client(settings, "ya29.not-a-token-the-endpoint-issued")
    out = {
        "plain": plain(vertex, settings),
        "stream": streamed(vertex, settings),
        "wrong_token": refusal(lambda: plain(wrong, settings)),
        "default_version": refusal(
            lambda: vertex.messages.create(**request_args(settings))
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
