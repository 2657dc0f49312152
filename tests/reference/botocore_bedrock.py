"""Calls a Bedrock endpoint with botocore's own `bedrock-runtime` client (the AWS SDK for
Python's request serializer, SigV4 signer and event-stream parser), so that
tests/bedrock_reference.rs can check the fake Bedrock against the real client: it must
accept botocore's signatures, refuse a wrong secret, and answer what botocore parses.

Reads one JSON object on stdin:
  {"endpoint_url", "region", "model_id", "access_key", "secret_key", "token" (or null),
   "wrong_secret"}
and prints one JSON line:
  {"converse": {"text", "stop_reason", "usage"},
   "stream": {"text", "stop_reason", "usage", "events": [event names]},
   "tool": {"name", "input", "stop_reason"},
   "wrong_secret": {"status", "code"}}
"""

import json
import sys

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError


def client(cfg, secret):
    session = botocore.session.get_session()
    return session.create_client(
        "bedrock-runtime",
        region_name=cfg["region"],
        endpoint_url=cfg["endpoint_url"],
        aws_access_key_id=cfg["access_key"],
        aws_secret_access_key=secret,
        aws_session_token=cfg["token"],
        config=Config(retries={"max_attempts": 1}),
    )


def main():
    cfg = json.load(sys.stdin)
    runtime = client(cfg, cfg["secret_key"])
    messages = [{"role": "user", "content": [{"text": "hi"}]}]
    out = {}

    answer = runtime.converse(modelId=cfg["model_id"], messages=messages)
    out["converse"] = {
        "text": "".join(b.get("text", "") for b in answer["output"]["message"]["content"]),
        "stop_reason": answer["stopReason"],
        "usage": answer["usage"],
    }

    streamed = runtime.converse_stream(modelId=cfg["model_id"], messages=messages)
    text, stop, usage, events = "", None, None, []
    for event in streamed["stream"]:
        (name, body), = event.items()
        events.append(name)
        if name == "contentBlockDelta":
            text += body["delta"].get("text", "")
        elif name == "messageStop":
            stop = body["stopReason"]
        elif name == "metadata":
            usage = body["usage"]
    out["stream"] = {"text": text, "stop_reason": stop, "usage": usage, "events": events}

    tools = {"tools": [{"toolSpec": {"name": "get_weather",
                                     "inputSchema": {"json": {"type": "object"}}}}]}
    answer = runtime.converse(modelId=cfg["model_id"], messages=messages, toolConfig=tools)
    (block,) = answer["output"]["message"]["content"]
    out["tool"] = {"name": block["toolUse"]["name"], "input": block["toolUse"]["input"],
                   "stop_reason": answer["stopReason"]}

    try:
        client(cfg, cfg["wrong_secret"]).converse(modelId=cfg["model_id"], messages=messages)
        out["wrong_secret"] = {"status": 200, "code": None}
    except ClientError as e:
        out["wrong_secret"] = {"status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                               "code": e.response["Error"]["Code"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
