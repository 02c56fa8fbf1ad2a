"""Resources a client can attach as context: a loop's status and its recent decisions, as the
JSON of `docktor status --json` and `docktor explain --json`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from docktor import views
from docktor.client import operate
from docktor.mcp.context import Docktor, view
from docktor.spec import ConfigError

STATUS = "docktor://services/{name}/status"
DECISIONS = "docktor://services/{name}/decisions"
# As many as a loop keeps (model.DECISION_RING): the whole of its recent memory.
RECENT = 50


def register(server: MCPServer, app: Docktor) -> None:
    async def status(name: str) -> str:
        """The loop's status now, as `docktor status --json` gives it for one service."""
        with _resource_errors():
            status = await operate.service_status(app.config(), name, app.address)
            return view(status).model_dump_json(indent=2)

    async def decisions(name: str) -> str:
        """The loop's recent decisions (up to 50), oldest first, as `docktor explain --json`."""
        with _resource_errors():
            config = app.config()
            found = await operate.collect_decisions(config, RECENT, name, app.address)
            return json.dumps(views.explain_json(found.decisions, config), indent=2)

    server.resource(STATUS, name="service-status", mime_type="application/json")(status)
    server.resource(DECISIONS, name="service-decisions", mime_type="application/json")(decisions)
    # The same two for each configured service, so clients that list resources (rather than
    # templates) can offer them to attach.
    try:
        names = app.config().service_names()
    except ConfigError:
        names = []
    for service in names:
        for template, handler, label in (
            (STATUS, status, "status"),
            (DECISIONS, decisions, "decisions"),
        ):
            server.resource(
                template.format(name=service),
                name=f"{service}-{label}",
                description=f"{service}: {handler.__doc__}",
                mime_type="application/json",
            )(_bound(handler, service))


def _bound(handler: Callable[[str], Awaitable[str]], service: str) -> Callable[[], Awaitable[str]]:
    async def read() -> str:
        return await handler(service)

    return read


@contextmanager
def _resource_errors() -> Iterator[None]:
    """The CLI's one-line failures as resource errors; an unknown service is 'not found'."""
    try:
        yield
    except operate.UnknownService as exc:
        raise ResourceNotFoundError(str(exc)) from None
    except operate.OperateError as exc:
        raise ResourceError(str(exc)) from None
    except ConfigError as exc:
        raise ResourceError("invalid config: " + "; ".join(exc.problems)) from None
