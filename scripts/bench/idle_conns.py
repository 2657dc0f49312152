#!/usr/bin/env python3
"""Opens N keep-alive connections to a proxy, sends one GET on each (so every connection has
been through a full request), then holds them idle until stdin closes or SIGTERM.

Prints `ready OK FAILED` on stdout once all are open and answered. Used by scenario 5
(RSS per idle connection). Needs `ulimit -n` above N.
"""
import argparse
import asyncio
import signal
import sys


async def open_one(host, port, path, sem, conns):
    async with sem:
        try:
            return await asyncio.wait_for(one_request(host, port, path, conns), 30)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            return False


async def one_request(host, port, path, conns):
    """Connects, sends one GET and reads its response; keeps the connection in conns."""
    reader, writer = await asyncio.open_connection(host, port)
    conns.append(writer)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--path", default="/")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=256, help="connections opened at once")
    args = ap.parse_args()
    sem = asyncio.Semaphore(args.parallel)
    conns = []
    results = await asyncio.gather(
        *(open_one(args.host, args.port, args.path, sem, conns) for _ in range(args.n))
    )
    ok = sum(1 for r in results if r)
    print(f"ready {ok} {args.n - ok}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()
    for w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
