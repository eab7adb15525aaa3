"""An independent MCP client (the official Python SDK) driving heyvm's MCP
server. Usage: mcp_client.py stdio HEYVM_BIN [heyvm mcp args...]
          or: mcp_client.py http URL
Runs one session: lists the tools, writes and reads a file, runs commands,
calls a failing tool, and prints one JSON line with what it saw."""

import asyncio
import base64
import json
import os
import sys
import time

from mcp import Client, StdioServerParameters


def text_of(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def session(target):
    out = {}
    async with Client(target, mode="legacy") as client:
        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        run = next(t for t in tools.tools if t.name == "computer_run")
        out["run_schema_has_command"] = "command" in run.input_schema["properties"]
        out["size_enum"] = json.dumps(next(t for t in tools.tools if t.name == "sandbox_create").input_schema)
        w = await client.call_tool("computer_write_file", {"path": "/tmp/mcp/hello.txt", "content": "hi from mcp\n"})
        out["write_error"] = bool(w.is_error)
        r = await client.call_tool("computer_read_file", {"path": "/tmp/mcp/hello.txt"})
        out["read"] = r.structured_content
        b = await client.call_tool(
            "computer_write_file",
            {"path": "bin.dat", "content": base64.b64encode(bytes([0, 1, 2, 255])).decode(), "encoding": "base64"},
        )
        out["bin_write_error"] = bool(b.is_error)
        rb = await client.call_tool("computer_read_file", {"path": "/workspace/bin.dat", "offset": 1, "limit": 2})
        out["bin_read"] = rb.structured_content
        t0 = time.monotonic()
        c = await client.call_tool("computer_run", {"command": "cat /tmp/mcp/hello.txt; echo oops >&2; exit 3"})
        out["run_ms"] = (time.monotonic() - t0) * 1000
        out["run"] = c.structured_content
        out["run_text"] = text_of(c)
        # A warm round trip, measured alone.
        t0 = time.monotonic()
        await client.call_tool("computer_run", {"command": "true"})
        out["warm_run_ms"] = (time.monotonic() - t0) * 1000
        s = await client.call_tool("computer_run", {"command": "cat", "stdin": "piped"})
        out["stdin"] = s.structured_content["stdout"]
        # Files anywhere in the sandbox, through its agent.
        h = await client.call_tool("computer_read_file", {"path": "/etc/hosts"})
        out["hosts"] = {"error": bool(h.is_error), "size": (h.structured_content or {}).get("size")}
        o = await client.call_tool("computer_write_file", {"path": "/opt/heyvm-mcp/deep/x.txt", "content": "anywhere"})
        out["opt_write_error"] = bool(o.is_error)
        oc = await client.call_tool("computer_run", {"command": "cat /opt/heyvm-mcp/deep/x.txt"})
        out["opt_seen"] = oc.structured_content["stdout"]
        dr = await client.call_tool("computer_read_file", {"path": "/tmp"})
        out["dir_read"] = {"error": bool(dr.is_error), "text": text_of(dr)}
        e = await client.call_tool("computer_read_file", {"path": "/no/such/file"})
        out["missing_is_error"] = bool(e.is_error)
        out["missing_text"] = text_of(e)
        g = await client.call_tool("sandbox_get", {"id": "no-such-sandbox"})
        out["get_missing_is_error"] = bool(g.is_error)
        host = await client.call_tool("computer_run", {"command": "hostname"})
        out["hostname"] = host.structured_content["stdout"].strip()
        lst = await client.call_tool("sandbox_list", {})
        out["sandboxes"] = [s["id"] for s in lst.structured_content["sandboxes"]]
    print(json.dumps(out))


def main():
    kind = sys.argv[1]
    if kind == "stdio":
        # The SDK passes a minimal environment by default; heyvm mcp needs
        # HEYVM_API_URL / MVM_DATA_DIR to reach the test's daemon.
        target = StdioServerParameters(command=sys.argv[2], args=["mcp", *sys.argv[3:]], env=dict(os.environ))
    else:
        target = sys.argv[2]
    asyncio.run(session(target))


main()
