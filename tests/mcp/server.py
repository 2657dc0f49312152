"""A real MCP server for tests/mcp_gateway.rs, built with the official Python SDK (MCPServer,
Streamable HTTP) on 127.0.0.1.

    python3 server.py --name NAME --port PORT [--token TOKEN] [--seen FILE]

Tools: `echo(text)` answers "<name>:<text>"; `add(a, b)`; `slow(steps, delay_ms)` reports
progress once per step before answering; `big(bytes)` answers a text of that many bytes;
`secret_tool()` exists so tool globs can hide it; `--extra-tools N` adds `t0`..`t<N-1>`;
`--slow-list-ms N` answers `tools/list` N ms late. A prompt `greet(who)` and a resource
`note://<name>/hello`. With `--token`, every request must carry `Authorization: Bearer TOKEN`
(else 401), as a hosted MCP server requires its credential. With `--seen`, the credential
headers of every request (`authorization`, `x-api-key`) are appended to FILE, one JSON
object a line, so a test can see what the gateway sent; a cancelled `slow` call is recorded
in `<FILE>.cancelled`.
"""

import argparse
import asyncio
import json

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.responses import PlainTextResponse

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--token")
parser.add_argument("--seen")
parser.add_argument("--extra-tools", type=int, default=0)
parser.add_argument("--slow-list-ms", type=int, default=0)
args = parser.parse_args()

server = MCPServer(args.name, log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Answers the text, prefixed with the server's name."""
    return f"{args.name}:{text}"


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@server.tool()
async def slow(steps: int, delay_ms: int, ctx: Context) -> str:
    """Reports progress once per step, then answers. With `--seen`, a cancellation of the
    call (the SDK cancels the handler on `notifications/cancelled`) is recorded in
    `<seen>.cancelled`, one JSON line per cancelled call."""
    try:
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            await asyncio.sleep(delay_ms / 1000)
    except asyncio.CancelledError:
        if args.seen:
            with open(args.seen + ".cancelled", "a") as f:
                f.write(json.dumps({"cancelled": "slow", "after_steps": i}) + "\n")
        raise
    return f"{args.name}:done after {steps}"


@server.tool()
def big(size: int) -> str:
    """A text of `size` bytes."""
    return "x" * size


@server.tool()
def secret_tool() -> str:
    """A tool the gateway's globs hide."""
    return "should never be reached through the gateway"


@server.prompt()
def greet(who: str) -> str:
    """A greeting prompt."""
    return f"Hello {who}, from {args.name}"


@server.resource(f"note://{args.name}/hello")
def hello_note() -> str:
    """A static note."""
    return f"note of {args.name}"


def numbered(i):
    def tool() -> str:
        return f"tool {i}"

    tool.__name__ = f"t{i}"
    return tool


# `--extra-tools N`: tools t0..t(N-1), for listings larger than the gateway takes.
for i in range(args.extra_tools):
    server.tool(name=f"t{i}")(numbered(i))

app = server.streamable_http_app()


async def guarded(scope, receive, send):
    """Checks the bearer token and records the credential headers, then serves MCP."""
    if scope["type"] == "http":
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if args.seen:
            seen = {k: headers[k] for k in ("authorization", "x-api-key") if k in headers}
            with open(args.seen, "a") as f:
                f.write(json.dumps(seen) + "\n")
        if args.token and headers.get("authorization") != f"Bearer {args.token}":
            await PlainTextResponse("missing or wrong token", status_code=401)(scope, receive, send)
            return
        if args.slow_list_ms and scope["method"] == "POST":
            # Reads the whole body to see the method, then replays it to the app.
            body, more = b"", True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            if b'"tools/list"' in body:
                await asyncio.sleep(args.slow_list_ms / 1000)
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await app(scope, replay, send)
            return
    await app(scope, receive, send)


uvicorn.run(guarded, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")
