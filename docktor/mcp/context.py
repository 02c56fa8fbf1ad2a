"""What every MCP tool, resource and prompt is handed: the app, who acts, a loop's status as
views.StatusView, and how a failure reaches the agent."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from docktor.client.operate import OperateError, ServiceState
from docktor.loop.messages import LoopStatus
from docktor.sources.sampling import Sampler
from docktor.spec import ConfigError, DocktorConfig, load_config
from docktor.views import StatusView, status_view


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


# The longest client name an actor keeps: names are short; a longer one is the client's noise.
ACTOR_NAME_LIMIT = 64


def actor(ctx: Context) -> str:
    """Who acts, as the loops record it: `mcp:<the client's name from its initialize>`, as one
    printable line (escaped_line), since it is shown in status rows and log lines."""
    params = ctx.session.client_params
    name = params.client_info.name if params is not None else ""
    return f"mcp:{escaped_line(name, ACTOR_NAME_LIMIT) or 'unknown'}"


# Unicode categories written as escapes: controls (newline, ESC, DEL, C1), format characters
# (bidi overrides, zero-width), line and paragraph separators, lone surrogates.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def escaped_line(text: str, limit: int) -> str:
    """A client's text as one printable line for a log: what could end the line or move the
    terminal is written as a Python escape (`\\n`, `\\x1b`, `\\u202e`; a backslash as `\\\\`,
    so an escape cannot be forged either), and past `limit` characters it is cut with a note of
    its length."""
    shown = "".join(
        char.encode("unicode_escape", "backslashreplace").decode("ascii")
        if char == "\\" or unicodedata.category(char) in _ESCAPED_CATEGORIES
        else char
        for char in text[:limit]
    )
    return shown if len(text) <= limit else f"{shown}... ({len(text)} characters)"


def view(status: LoopStatus) -> StatusView:
    """A loop's answer as `docktor status --json` shows it, at this instant."""
    return status_view(ServiceState(status.service, status.workflow_id, status), datetime.now(UTC))


@contextmanager
def tool_errors() -> Iterator[None]:
    """The CLI's one-line failures, as tool errors the agent reads; the server goes on."""
    try:
        yield
    except OperateError as exc:
        raise ToolError(str(exc)) from None
    except ConfigError as exc:
        raise ToolError("invalid config: " + "; ".join(exc.problems)) from None
