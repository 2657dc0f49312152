#!/usr/bin/env python3
"""Time to first event for SSE streams: C concurrent keep-alive connections, each sending the
same request in a loop for D seconds, timing from the write of the request to the first
`data:` line and to the end of the stream. Prints one JSON object on stdout:
  {"streams", "events", "events_per_stream", "ttfe_p50_ms", "ttfe_p99_ms", "last_p50_ms",
   "last_p99_ms", "errors"}
Python is slow: keep C small; this measures latency, not throughput (wrk does that).
"""
import argparse
import asyncio
import json
import time


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def read_chunked_stream(reader, on_data):
    """Reads a chunked body, calling on_data(bytes) per chunk, until the last chunk."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        on_data(await reader.readexactly(size))
        await reader.readexactly(2)


async def worker(args, request, deadline, stats):
    reader = writer = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(args.host, args.port)
            start = time.monotonic()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise ValueError(head.split(b"\r\n")[0])
            headers = head.lower()
            state = {"first": None, "events": 0, "buf": b""}

            def on_data(data):
                state["buf"] += data
                while b"\n\n" in state["buf"]:
                    event, state["buf"] = state["buf"].split(b"\n\n", 1)
                    if b"data:" in event and b"[DONE]" not in event:
                        if state["first"] is None:
                            state["first"] = time.monotonic()
                        state["events"] += 1

            if b"transfer-encoding: chunked" in headers:
                await read_chunked_stream(reader, on_data)
            elif b"content-length:" in headers:
                length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
                on_data(await reader.readexactly(length))
            else:
                while chunk := await reader.read(65536):
                    on_data(chunk)
                writer.close()
                writer = None
            end = time.monotonic()
            if state["first"] is None:
                raise ValueError("no event")
            stats["ttfe"].append((state["first"] - start) * 1000)
            stats["last"].append((end - start) * 1000)
            stats["events"] += state["events"]
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            stats["errors"] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--path", default="/")
    ap.add_argument("--method", default="GET")
    ap.add_argument("--body", default="")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("-c", type=int, default=4)
    ap.add_argument("-d", type=float, default=5.0)
    args = ap.parse_args()
    body = args.body.encode()
    head = f"{args.method} {args.path} HTTP/1.1\r\nHost: bench\r\naccept: text/event-stream\r\n"
    for h in args.header:
        head += h + "\r\n"
    if body:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    request = head.encode() + b"\r\n" + body
    stats = {"ttfe": [], "last": [], "events": 0, "errors": 0}
    deadline = time.monotonic() + args.d
    await asyncio.gather(*(worker(args, request, deadline, stats) for _ in range(args.c)))
    streams = len(stats["ttfe"])
    print(json.dumps({
        "streams": streams,
        "events": stats["events"],
        "events_per_stream": stats["events"] / streams if streams else 0,
        "ttfe_p50_ms": percentile(stats["ttfe"], 50),
        "ttfe_p99_ms": percentile(stats["ttfe"], 99),
        "last_p50_ms": percentile(stats["last"], 50),
        "last_p99_ms": percentile(stats["last"], 99),
        "errors": stats["errors"],
    }))


if __name__ == "__main__":
    asyncio.run(main())
