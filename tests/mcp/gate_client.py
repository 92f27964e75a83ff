#!/usr/bin/env python3
"""Call tools through an MCP gate with the official Python SDK's clients (2.x), for the gate tests.

    gate_client.py URL --protocol 2026-07-28|2025-11-25|sse [--list N] [--call NAME JSON]...
                   [--bearer TOKEN] [--leave-after SECONDS] [--timeout SECONDS]

`2026-07-28`: `mcp.Client(url)`, which speaks MCP 2026-07-28 first (server/discover, stateless
POSTs, `_meta`); `2025-11-25`: the ClientSession + initialize path (Mcp-Session-Id); `sse`:
the same over the deprecated HTTP+SSE transport (URL .../sse). Lists the
tools N times (default 1), then makes each call in order, then calls `executions` (when the
server lists it) for what the upstream ran. Prints ONE JSON object to stdout:

    {"protocol_version", "lists": [[names...], ...], "calls": [{"tool", "result"|"error"}],
     "executions": {...} | null}

"result" is the tool's text (with "is_error"); "error" is the JSON-RPC error the SDK raised
({"code", "message", "data"}). `--bearer` sends `Authorization: Bearer TOKEN` on every request;
`--leave-after S` gives up on each call after S seconds (`{"tool", "left": true}`: the client
closes the request, as a user cancelling would). Exit 1 with `gate_client.py: error: ...` on stderr on anything
else (the connection failed, the client fell back to another protocol than asked...).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import httpx2
import mcp
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def calls(
    session: Any, lists: int, todo: list[tuple[str, dict]], leave_after: float | None = None
) -> dict[str, Any]:
    listed = []
    for _ in range(lists):
        tools = await session.list_tools()
        listed.append([t.name for t in tools.tools])
    made = []
    for name, arguments in todo:
        try:
            if leave_after is not None:
                with anyio.move_on_after(leave_after):
                    r = await session.call_tool(name, arguments)
                    made.append({"tool": name, "result": text(r), "is_error": bool(r.is_error)})
                    continue
                made.append({"tool": name, "left": True})
                continue
            r = await session.call_tool(name, arguments)
            made.append({"tool": name, "result": text(r), "is_error": bool(r.is_error)})
        except MCPError as e:
            made.append(
                {"tool": name, "error": {"code": e.error.code, "message": e.error.message, "data": e.error.data}}
            )
    executions = None
    if listed and "executions" in listed[-1]:
        r = await session.call_tool("executions", {})
        executions = r.structured_content
        if isinstance(executions, dict) and set(executions) == {"result"}:
            executions = executions["result"]
        if executions is None:
            executions = json.loads(text(r))
    return {"lists": listed, "calls": made, "executions": executions}


async def run(
    url: str,
    protocol: str,
    lists: int,
    todo: list[tuple[str, dict]],
    bearer: str | None,
    leave_after: float | None,
    timeout: float,
) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    http_timeout = httpx2.Timeout(timeout, read=timeout)
    with anyio.fail_after(timeout):
        if protocol == "sse":
            transport = sse_client(url, headers=headers)
        else:
            http = httpx2.AsyncClient(headers=headers, timeout=http_timeout)
            transport = streamable_http_client(url, http_client=http)
        if protocol == "2026-07-28":
            async with mcp.Client(transport) as client:
                report = await calls(client, lists, todo, leave_after)
                report["protocol_version"] = getattr(client, "protocol_version", None)
                return report
        async with transport as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                report = await calls(session, lists, todo, leave_after)
                report["protocol_version"] = init.protocol_version
                return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--protocol", choices=["2026-07-28", "2025-11-25", "sse"], required=True)
    parser.add_argument("--list", type=int, default=1, help="tools/list this many times first")
    parser.add_argument("--call", nargs=2, action="append", default=[], metavar=("NAME", "JSON"))
    parser.add_argument("--bearer", metavar="TOKEN", help="send Authorization: Bearer TOKEN")
    parser.add_argument("--leave-after", type=float, metavar="SECONDS", help="give up on each call after this")
    parser.add_argument("--timeout", type=float, default=30.0, help="the whole run's deadline")
    args = parser.parse_args()
    todo = [(name, json.loads(arguments)) for name, arguments in args.call]
    try:
        report = anyio.run(
            run, args.url, args.protocol, args.list, todo, args.bearer, args.leave_after, args.timeout
        )
    except BaseException as exc:  # noqa: BLE001 - report everything, exit 1
        print(f"gate_client.py: error: {type(exc).__name__}: {exc!r}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
