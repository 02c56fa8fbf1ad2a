"""The MCP server: one MCPServer from the official SDK, over stdio (what desktop clients
launch) or streamable HTTP (loopback unless told otherwise; behind a bearer token when given
one)."""

from __future__ import annotations

import logging
from typing import Literal

import anyio
from mcp.server.mcpserver import MCPServer

from docktor.mcp import prompt, resources, tools
from docktor.mcp.auth import RequireBearerToken
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
    token: str | None = None,
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
                await _serve_http(server, host, port, token)
        finally:
            await app.close()

    anyio.run(run)


async def _serve_http(server: MCPServer, host: str, port: int, token: str | None) -> None:
    """The SDK's streamable HTTP app (with its Host and Origin checks on loopback), behind the
    token when there is one, under uvicorn. log_config=None: uvicorn's records (its access line
    per request included) go through the root handler above, one line each in the same format,
    instead of uvicorn's own handlers."""
    import uvicorn
    from starlette.types import ASGIApp

    app: ASGIApp = server.streamable_http_app(host=host)
    if token:
        app = RequireBearerToken(app, token)
        log.info("every request needs the bearer token (401 without it)")
    config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level="info")
    await uvicorn.Server(config).serve()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("docktor")
    except PackageNotFoundError:
        return "0"
