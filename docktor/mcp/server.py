"""The MCP server: one MCPServer from the official SDK, over stdio (what desktop clients
launch) or streamable HTTP (loopback unless told otherwise)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from docktor.config import ConfigError, DocktorConfig, load_config
from docktor.operate import OperateError
from docktor.sampling import Sampler

log = logging.getLogger("docktor.mcp")

INSTRUCTIONS = (
    "docktor keeps each service's replica count right for its load; every service has one "
    "scaling loop. Start with list_services, then service_status and explain_decisions for "
    "what a loop is doing and why; observe_now for the metrics this instant; what_if to see "
    "what the policy would decide, without applying anything. Control tools (pause, resume, "
    "scale_to, nudge, approve, reject) exist only when the server allows them, and each needs "
    "a reason, recorded with the client's name."
)


@dataclass
class Docktor:
    """What every tool needs: the config (read again on each call, as each CLI command reads
    it, so an edited docktor.yaml counts at once), the Temporal address override, and one
    Sampler whose metric connections are pooled for the server's lifetime."""

    config_path: Path
    address: str | None = None
    allow_control: bool = False
    sampler: Sampler = field(default_factory=Sampler)

    def config(self) -> DocktorConfig:
        return load_config(self.config_path)

    async def close(self) -> None:
        await self.sampler.close()


def actor(ctx: Context) -> str:
    """Who acts, as the loops record it: `mcp:<the client's name from its initialize>`."""
    params = ctx.session.client_params
    name = params.client_info.name if params is not None else ""
    return f"mcp:{name or 'unknown'}"


@contextmanager
def tool_errors() -> Iterator[None]:
    """The CLI's one-line failures, as tool errors the agent reads; the server goes on."""
    try:
        yield
    except OperateError as exc:
        raise ToolError(str(exc)) from None
    except ConfigError as exc:
        raise ToolError("invalid config: " + "; ".join(exc.problems)) from None


def build_server(app: Docktor) -> MCPServer:
    from docktor.mcp import prompt, resources, tools

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
