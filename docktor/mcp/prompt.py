"""The one prompt: how to find out what a service's loop is doing and why, in the order that
answers it fastest (status, then decisions, then a fresh observation)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS
from pydantic import Field

from docktor.client.operate import OperateError, check_service
from docktor.mcp.context import Docktor


def register(server: MCPServer, app: Docktor) -> None:
    def investigate_scaling(
        service: Annotated[str, Field(description="the service to investigate")],
        question: Annotated[
            str, Field(description="what the operator wants to know")
        ] = "What is it doing, and why?",
    ) -> str:
        """Walk through a service's scaling: status, then decisions, then a fresh observation."""
        try:
            check_service(app.config(), service)
        except OperateError as exc:
            # A prompt has no error result of its own: an invalid-params error with the
            # CLI's line (which names the configured services) is what the client shows.
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        return f"""The operator asks about the service `{service}`: {question}

Answer from docktor's own data, in this order, and quote what you read:

1. Call `service_status` with service="{service}" (or read the resource
   docktor://services/{service}/status): replicas, bounds, paused (and why), the last
   decision and its age, cooldowns left, a decision awaiting approval.
2. Call `explain_decisions` with service="{service}" and tail=20 (add since="30m" to narrow
   it to a time): each decision's action, from -> to, the observations that mattered and the
   reason, oldest first. Look for the decision that answers the question and for a pattern
   (scaling up and down in turn, holding while the backlog grows, cooldowns blocking).
3. Call `observe_now` with service="{service}" for the metrics at this instant, and compare
   them with the last decision's observations.
4. If the question is what would happen next, call `what_if` with service="{service}"
   (optionally with metrics) to see what the policy decides now; it applies nothing.

Then answer in a few sentences: what the loop is doing, the decision and reason that explain
it (with its time in UTC), and what the metrics show now. If the loop is not running or
Temporal cannot be reached, say so as the tools word it. Do not pause, scale or otherwise
change the service unless the operator asked for it."""

    server.prompt(name="investigate-scaling", title="Investigate a service's scaling")(
        investigate_scaling
    )
