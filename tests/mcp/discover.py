"""Authorization discovery as the official Python SDK's client does it (mcp.client.auth),
for tests/mcp_gateway.rs: a request without a credential, the `resource_metadata` of the
401's `WWW-Authenticate`, then the discovery URLs in the SDK's order until one yields
metadata its `ProtectedResourceMetadata` model accepts.

    CF_URL=http://127.0.0.1:PORT/mcp python3 discover.py

Prints one JSON line: the 401's status, the URL the metadata came from and the metadata.
"""

import asyncio
import json
import os

import httpx2
from mcp.client.auth.utils import (
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    handle_protected_resource_response,
)


async def main():
    url = os.environ["CF_URL"]
    async with httpx2.AsyncClient(timeout=30) as http:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        refused = await http.post(url, json=init, headers={"accept": "application/json, text/event-stream"})
        www_auth_url = extract_resource_metadata_from_www_auth(refused)
        for candidate in build_protected_resource_metadata_discovery_urls(www_auth_url, url):
            metadata = await handle_protected_resource_response(await http.get(candidate))
            if metadata is not None:
                print(json.dumps({"status": refused.status_code, "from": candidate,
                                  "metadata": metadata.model_dump(mode="json", exclude_none=True)}))
                return
        print(json.dumps({"status": refused.status_code, "from": None, "metadata": None}))


asyncio.run(main())
