"""The AWS event-stream framing checked against botocore's decoder (EventStreamBuffer), so
tests/eventstream_reference.rs does not merely agree with the gateway's own code.

botocore has a decoder only, no encoder. Two modes, chosen by the first argument:

- `decode`: reads {"chunks": [hex, ...]} on stdin, feeds the chunks to EventStreamBuffer one
  at a time (taking every whole message after each) and prints
  {"messages": [...]} or, when botocore refuses the stream, {"messages": [...], "error":
  the exception's class name}.
- `build`: builds frames with the small encoder below (written from the format's
  description with struct and zlib.crc32, independent of the gateway's), has botocore decode
  them (a frame it cannot decode fails this script) and prints {"stream": hex, "messages":
  botocore's decoding}.

A message is {"headers": {name: value}, "payload_hex"}; a value is JSON true/false, a
number (byte, short, integer, long, timestamp in ms), a string, or {"hex": ...} for a byte
array or a UUID.
"""

import json
import struct
import sys
import uuid
import zlib

from botocore.eventstream import EventStreamBuffer, ParserError


def value_json(value):
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, uuid.UUID):
        return {"hex": value.bytes.hex()}
    return value


def message_json(message):
    return {
        "headers": {name: value_json(v) for name, v in message.headers.items()},
        "payload_hex": bytes(message.payload).hex(),
    }


def decode(chunks):
    buffer = EventStreamBuffer()
    messages = []
    try:
        for chunk in chunks:
            buffer.add_data(chunk)
            for message in buffer:
                messages.append(message_json(message))
    except ParserError as error:
        return {"messages": messages, "error": type(error).__name__}
    return {"messages": messages}


def encode_header(name, kind, value):
    raw = name.encode("utf-8")
    out = struct.pack("!B", len(raw)) + raw + struct.pack("!B", kind)
    if kind in (0, 1):
        return out
    if kind == 2:
        return out + struct.pack("!b", value)
    if kind == 3:
        return out + struct.pack("!h", value)
    if kind == 4:
        return out + struct.pack("!i", value)
    if kind in (5, 8):
        return out + struct.pack("!q", value)
    if kind in (6, 7):
        data = value.encode("utf-8") if kind == 7 else value
        return out + struct.pack("!H", len(data)) + data
    if kind == 9:
        return out + value
    raise ValueError(kind)


def encode_message(headers, payload):
    raw_headers = b"".join(encode_header(*h) for h in headers)
    total = 16 + len(raw_headers) + len(payload)
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    body = prelude + raw_headers + payload
    return body + struct.pack("!I", zlib.crc32(body))


def build():
    event = [(":message-type", 7, "event"), (":content-type", 7, "application/json")]
    frames = [
        encode_message(
            event + [(":event-type", 7, "messageStart")], b'{"role":"assistant"}'
        ),
        encode_message(
            event + [(":event-type", 7, "contentBlockDelta")],
            '{"contentBlockIndex":0,"delta":{"text":"Bonjour, ça va ?"}}'.encode("utf-8"),
        ),
        encode_message(
            [
                ("yes", 0, None),
                ("no", 1, None),
                ("byte", 2, -128),
                ("short", 3, 32767),
                ("int", 4, -2147483648),
                ("long", 5, 9007199254740993),
                ("bytes", 6, bytes(range(256))),
                ("string", 7, "é\u2603"),
                ("time", 8, 1700000000123),
                ("uuid", 9, bytes.fromhex("00112233445566778899aabbccddeeff")),
            ],
            b"",
        ),
        encode_message([], b""),
        encode_message(
            [(":message-type", 7, "exception"), (":exception-type", 7, "throttlingException")],
            b'{"message":"slow down"}',
        ),
    ]
    stream = b"".join(frames)
    decoded = decode([stream])
    if "error" in decoded or len(decoded["messages"]) != len(frames):
        raise SystemExit(f"botocore cannot decode the built frames: {decoded}")
    return {"stream": stream.hex(), "messages": decoded["messages"]}


def main():
    mode = sys.argv[1]
    if mode == "decode":
        request = json.load(sys.stdin)
        print(json.dumps(decode([bytes.fromhex(c) for c in request["chunks"]])))
    elif mode == "build":
        print(json.dumps(build()))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
