"""The MCP server: one MCPServer from the official SDK, over stdio (what desktop clients
launch) or streamable HTTP (loopback unless told otherwise)."""

from __future__ import annotations

import logging
from typing import Literal

import anyio
from mcp.server.mcpserver import MCPServer

from docktor.mcp import prompt, resources, tools
from docktor.mcp.context import Docktor

log = logging.getLogger("docktor.mcp")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

INSTRUCTIONS = (
    "docktor keeps each service's replica count right for its load; every service has one "
    "scaling loop. Start with list_services, then service_status and explain_decisions for "
    "what a loop is doing and why; observe_now for the metrics this instant; what_if to see "
    "what the policy would decide, without applying anything. Control tools (pause, resume, "
    "scale_to, nudge, approve, reject) exist only when the server allows them, and each needs "
    "a reason, recorded with the client's name."
)


def build_server(app: Docktor) -> MCPServer:

    server = MCPServer(
        name="docktor",
        title="docktor autoscaler",
        instructions=INSTRUCTIONS,
        version=_version(),
        log_level="INFO",
    )
    tools.register_read_only(server, app)
    if app.allow_control:
        tools.register_control(server, app)
    resources.register(server, app)
    prompt.register(server, app)
    return server


def serve(
    app: Docktor,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    # One record per line, as the worker logs, on stderr (stdout carries the stdio transport).
    # Set first, so the SDK's own setup (rich's handler, which wraps long lines: an audit line
    # would become several) is left out.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    server = build_server(app)

    async def run() -> None:
        try:
            if transport == "stdio":
                await server.run_stdio_async()
            else:
                await server.run_streamable_http_async(host=host, port=port)
        finally:
            await app.close()

    anyio.run(run)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("docktor")
    except PackageNotFoundError:
        return "0"
