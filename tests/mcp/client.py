#!/usr/bin/env python3
"""Drive an MCP server with the official Python SDK's own client (2.x), for interop tests.

    client.py URL [--transport streamable-http|sse] [--ca FILE] [--timeout SECONDS]
              [--bearer TOKEN] [--denied-tool NAME]

Uses the explicit ClientSession + initialize path (protocol 2025-11-25 handshake, so
Streamable HTTP exercises Mcp-Session-Id and SSE-streamed responses), then: tools/list,
echo("hello through pq tls"), countdown(3, 300) with a progress callback, tls_info().
Prints ONE JSON object (one line) to stdout:

    {"server_name", "protocol_version", "tools": [sorted], "echo", "countdown",
     "progress": [{"progress", "total", "message", "t"}], "tls_info": {...}}

where "t" is seconds since the countdown call started. Exit 0 on success; exit 1 with
`client.py: error: ...` on stderr on any failure (connection refused, HTTP error status, TLS
verification failure, tool error, timeout). --ca FILE trusts exactly that CA (PEM) for https
URLs instead of the system store. --bearer TOKEN sends `Authorization: Bearer TOKEN` on every
HTTP request. --denied-tool NAME calls that tool last and expects a JSON-RPC error: the report
gets "denied": {"code", "message", "data"} (exit 1 if the call succeeds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import threading
import time
from typing import Any

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

ECHO_TEXT = "hello through pq tls"


class Failure(Exception):
    pass


def tool_text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def check(name: str, result: Any) -> Any:
    if result.is_error:
        raise Failure(f"tool {name} returned an error: {tool_text(result)}")
    return result


async def exercise(session: ClientSession, denied_tool: str | None = None) -> dict[str, Any]:
    init = await session.initialize()
    tools = await session.list_tools()
    echo = check("echo", await session.call_tool("echo", {"text": ECHO_TEXT}))

    progress: list[dict[str, Any]] = []
    start = time.monotonic()

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(
            {"progress": p, "total": total, "message": message, "t": round(time.monotonic() - start, 3)}
        )

    countdown = check(
        "countdown",
        await session.call_tool("countdown", {"n": 3, "delay_ms": 300}, progress_callback=on_progress),
    )
    info = check("tls_info", await session.call_tool("tls_info", {}))
    tls_info = info.structured_content
    if isinstance(tls_info, dict) and set(tls_info) == {"result"}:
        tls_info = tls_info["result"]  # wrapped output of a non-object return type
    if tls_info is None:
        tls_info = json.loads(tool_text(info))

    denied = None
    if denied_tool:
        try:
            await session.call_tool(denied_tool, {})
        except MCPError as e:
            denied = {"code": e.error.code, "message": e.error.message, "data": e.error.data}
        else:
            raise Failure(f"tool {denied_tool} was expected to be refused, and was not")

    report = {
        "server_name": init.server_info.name,
        "protocol_version": init.protocol_version,
        "tools": sorted(t.name for t in tools.tools),
        "echo": tool_text(echo),
        "countdown": tool_text(countdown),
        "progress": progress,
        "tls_info": tls_info,
    }
    if denied_tool:
        report["denied"] = denied
    return report


# HTTP error statuses seen (the SDK turns most of them into generic JSON-RPC errors).
http_errors: list[str] = []


async def record_http_error(response: httpx2.Response) -> None:
    if response.status_code >= 400:
        req = response.request
        http_errors.append(f"HTTP {response.status_code} {response.reason_phrase} from {req.method} {req.url}")


async def run(
    url: str, transport: str, ca: str | None, timeout: float, bearer: str | None, denied_tool: str | None
) -> dict[str, Any]:
    # verify=True: httpx2's default store (honours SSL_CERT_FILE / SSL_CERT_DIR).
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    http_timeout = httpx2.Timeout(timeout, read=timeout)
    hooks = {"response": [record_http_error]}
    auth_headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    with anyio.fail_after(timeout):
        if transport == "streamable-http":
            async with httpx2.AsyncClient(
                verify=verify, timeout=http_timeout, event_hooks=hooks, headers=auth_headers
            ) as http:
                async with streamable_http_client(url, http_client=http) as (read, write):
                    async with ClientSession(read, write, read_timeout_seconds=timeout) as session:
                        return await exercise(session, denied_tool)
        else:

            def factory(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
            ) -> httpx2.AsyncClient:
                return httpx2.AsyncClient(
                    headers={**(headers or {}), **auth_headers},
                    timeout=timeout,
                    auth=auth,
                    verify=verify,
                    event_hooks=hooks,
                )

            async with sse_client(
                url, timeout=timeout, sse_read_timeout=timeout, httpx_client_factory=factory
            ) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=timeout) as session:
                    return await exercise(session, denied_tool)
    raise AssertionError("unreachable")


def leaves(exc: BaseException) -> list[BaseException]:
    """The leaf exceptions of (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def describe(exc: BaseException) -> str:
    if isinstance(exc, httpx2.HTTPStatusError):
        r = exc.response
        return f"HTTP {r.status_code} {r.reason_phrase} from {r.request.method} {r.request.url}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or repr(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError) and str(cause) not in text:
        text += f" ({cause})"
    return f"{type(exc).__name__}: {text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:PORT/mcp or https://.../sse")
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--ca", metavar="FILE", help="PEM CA certificate(s) to trust for https")
    parser.add_argument("--timeout", type=float, default=20.0, help="overall deadline (seconds)")
    parser.add_argument("--bearer", metavar="TOKEN", help="send Authorization: Bearer TOKEN")
    parser.add_argument("--denied-tool", metavar="NAME", help="call NAME last and expect a JSON-RPC error")
    args = parser.parse_args()
    if args.ca and not os.path.isfile(args.ca):
        parser.error(f"--ca {args.ca}: no such file")

    # Last resort if cancellation gets stuck in the SDK's cleanup: never outlive the deadline much.
    def watchdog() -> None:
        print(f"client.py: error: no result within {args.timeout + 5:g}s, aborting", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(args.timeout + 5, watchdog)
    timer.daemon = True
    timer.start()

    try:
        result = anyio.run(run, args.url, args.transport, args.ca, args.timeout, args.bearer, args.denied_tool)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - report everything, exit 1
        errors = leaves(exc)
        # TimeoutError from fail_after hides the real cause when one is recorded next to it.
        real = [e for e in errors if not isinstance(e, (TimeoutError, asyncio.CancelledError))]
        if real:
            messages = [describe(e) for e in real]
        elif any(isinstance(e, TimeoutError) for e in errors):
            messages = [f"no result within {args.timeout:g}s"]
        else:
            messages = [describe(e) for e in errors]
        messages += [m for m in dict.fromkeys(http_errors) if m not in messages]
        for m in messages:
            print(f"client.py: error: {m}", file=sys.stderr)
        return 1
    finally:
        timer.cancel()

    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
