"""Drives the gateway's MCP endpoint with the official Python SDK's own client
(`mcp.client.streamable_http` + `ClientSession`), for tests/mcp_gateway.rs.

    CF_URL=http://127.0.0.1:PORT/mcp CF_KEY=<virtual key> python3 client.py

The session is opened first (one JSON line: the negotiated revision and the session id),
with `initialize` (offering `CF_PIN` instead of the SDK's newest handshake revision when
set), or with `CF_MODE=auto` as the SDK's `Client` does by default: a `server/discover`
probe at the stateless revision (2026-07-28), adopted when the server answers it, else
`initialize`.
Then each line read from stdin is one operation, answered by one JSON line on stdout, so a
test can act between operations (stop a server, reload the gateway):

    {"op": "list_tools"} | {"op": "list_prompts"} | {"op": "list_resources"}
    {"op": "call", "name": "...", "args": {...}}   (progress notifications are collected)
    {"op": "prompt", "name": "...", "args": {...}} | {"op": "read", "uri": "..."}
    {"op": "calls", "name": "...", "args": {...}, "n": N}   (N sequential calls, timed)

An operation that raises answers {"error": <exception class>, "message": ...}.
"""

import asyncio
import json
import os
import sys
import time

import httpx2
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


def out(value):
    print(json.dumps(value), flush=True)


async def run(session, op):
    kind = op["op"]
    if kind == "list_tools":
        # Every page, following the cursor.
        names, pages, cursor = [], 0, None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            result = await session.list_tools(params=params)
            pages += 1
            names.extend(t.name for t in result.tools)
            cursor = result.next_cursor
            if not cursor or pages > 50:
                return {"tools": names, "pages": pages}
    if kind == "list_prompts":
        result = await session.list_prompts()
        return {"prompts": [p.name for p in result.prompts]}
    if kind == "list_resources":
        result = await session.list_resources()
        return {"resources": [str(r.uri) for r in result.resources]}
    if kind == "call":
        progress = []

        async def on_progress(done, total, message):
            progress.append({"progress": done, "total": total, "message": message, "at": time.monotonic()})

        started = time.monotonic()
        result = await session.call_tool(op["name"], op.get("args", {}), progress_callback=on_progress)
        ended = time.monotonic()
        texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
        # When each progress arrived relative to the answer: relayed live, not at the end.
        for p in progress:
            p["before_end_s"] = ended - p.pop("at")
        return {"is_error": result.is_error, "texts": texts, "progress": progress, "took_s": ended - started}
    if kind == "prompt":
        result = await session.get_prompt(op["name"], op.get("args", {}))
        return {"messages": [m.content.text for m in result.messages]}
    if kind == "read":
        result = await session.read_resource(op["uri"])
        return {"texts": [c.text for c in result.contents]}
    if kind == "calls":
        times = []
        for _ in range(op["n"]):
            started = time.perf_counter()
            await session.call_tool(op["name"], op.get("args", {}))
            times.append(time.perf_counter() - started)
        return {"times_s": times}
    return {"error": "UnknownOp", "message": kind}


async def main():
    headers = {}
    if os.environ.get("CF_KEY"):
        headers["authorization"] = f"Bearer {os.environ['CF_KEY']}"
    session_ids = []

    async def note_session(response):
        sid = response.headers.get("mcp-session-id")
        if sid and sid not in session_ids:
            session_ids.append(sid)

    async with httpx2.AsyncClient(headers=headers, timeout=60, event_hooks={"response": [note_session]}) as http:
        async with streamable_http_client(os.environ["CF_URL"], http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                if os.environ.get("CF_PIN"):
                    # Pins the handshake to an older revision: `initialize` offers the
                    # module's newest handshake revision, read when it is sent.
                    import mcp.client.session as client_session

                    client_session.LATEST_HANDSHAKE_VERSION = os.environ["CF_PIN"]
                if os.environ.get("CF_MODE") == "auto":
                    # The SDK's default policy: probe server/discover at the stateless
                    # revision and adopt it, or fall back to initialize.
                    from mcp.client._probe import negotiate_auto

                    await negotiate_auto(session)
                if session.discover_result is not None:
                    capabilities = session.discover_result.capabilities
                else:
                    # After a fallback the handshake's result is kept: this sends nothing more.
                    capabilities = (await session.initialize()).capabilities
                out({"protocol_version": session.protocol_version, "sessions": session_ids,
                     "capabilities": capabilities.model_dump(exclude_none=True)})
                loop = asyncio.get_running_loop()
                while True:
                    line = await loop.run_in_executor(None, sys.stdin.readline)
                    if not line.strip():
                        break
                    op = json.loads(line)
                    try:
                        answer = await run(session, op)
                    except Exception as e:  # noqa: BLE001 - every failure is the test's data
                        answer = {"error": type(e).__name__, "message": str(e)}
                    answer["sessions"] = session_ids
                    out(answer)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        out({"error": type(e).__name__, "message": str(e)})
        sys.exit(1)
