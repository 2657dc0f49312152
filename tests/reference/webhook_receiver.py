"""Runs the README's webhook receiver ("### Webhooks", its python block) on deliveries.

Reads {"secret", "cases": [{"body", "headers"}]} on stdin and prints one JSON line:
{"results": [{"ok": true, "type": ...} | {"ok": false, "error": ...}]}, one per case,
from the README's own `verify` (the block is read from README.md and run as it is).
"""

import json
import pathlib
import sys

readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
text = readme.read_text()
section = text[text.index("### Webhooks"):]
start = section.index("```python\n") + len("```python\n")
snippet = section[start:section.index("```", start)]
scope = {}
exec(compile(snippet, "README.md (### Webhooks)", "exec"), scope)
verify = scope["verify"]

request = json.load(sys.stdin)
results = []
for case in request["cases"]:
    try:
        event = verify(request["secret"].encode(), case["body"].encode(), case["headers"])
        results.append({"ok": True, "type": event["type"], "id": event["id"]})
    except ValueError as why:
        results.append({"ok": False, "error": str(why)})
print(json.dumps({"results": results}))
