"""The tools: each one calls the code behind a CLI command and returns its models as
structured output. Arguments use the CLI's words: service, replicas, reason, tail, since."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from docktor import views
from docktor.client import operate
from docktor.loop.messages import PendingApproval
from docktor.mcp.context import Docktor, actor, escaped_line, tool_errors, view
from docktor.policy.hold import problem
from docktor.spec import ConfigError, load_config, parse_duration
from docktor.values import Decision

log = logging.getLogger("docktor.mcp")

Service = Annotated[str, Field(description="a service name from the config (see list_services)")]
Reason = Annotated[
    str,
    Field(min_length=1, description="why, in a sentence; recorded with who acted"),
]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


# ---- outputs that have no model of their own elsewhere --------------------------------------


class ServiceSummary(BaseModel):
    """A configured service: what the config says of it, and its loop's status."""

    name: str
    backend: str
    policy: str
    # The config's bounds; status.min_replicas/max_replicas are the loop's, which differ until
    # an edited config reaches the loop (python -m starter).
    min_replicas: int
    max_replicas: int
    check_interval_s: float
    status: views.StatusView


class ServiceList(BaseModel):
    project: str
    services: list[ServiceSummary]


class Explanation(BaseModel):
    """Decisions oldest first, and where they came from when not from the loops."""

    decisions: list[views.ExplainedDecision]
    notes: list[str] = Field(default_factory=list)


class CheckLine(BaseModel):
    ok: bool
    subject: str
    detail: str = ""


class ConfigReport(BaseModel):
    file: str
    ok: bool
    project: str | None = None
    services: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    # Settings the file makes that load but change nothing (`version`, `queue.subject`, ...).
    warnings: list[str] = Field(default_factory=list)
    checks: list[CheckLine] = Field(default_factory=list)


class ControlResult(BaseModel):
    service: str
    action: str
    by: str
    reason: str
    message: str
    status: views.StatusView | None = None
    decision: Decision | None = None
    pending: PendingApproval | None = None


# ---- read-only -------------------------------------------------------------------------------


def register_read_only(server: MCPServer, app: Docktor) -> None:
    async def list_services() -> ServiceList:
        """List the configured services: backend, bounds, and each loop's status."""
        with tool_errors():
            config = app.config()
            try:
                states = await operate.collect_status(config, app.address)
            except operate.OperateError as exc:
                # Temporal cannot be asked: the services are listed all the same, each saying why
                # its loop's status is unknown.
                states = [
                    operate.ServiceState(name, config.workflow_id(name), problem=str(exc))
                    for name in config.service_names()
                ]
            now = datetime.now(UTC)
            shown = {state.service: views.status_view(state, now) for state in states}
            summaries = [
                ServiceSummary(
                    name=spec.name,
                    backend=spec.backend,
                    policy=spec.policy,
                    min_replicas=spec.min_replicas,
                    max_replicas=spec.max_replicas,
                    check_interval_s=spec.check_interval,
                    status=shown[spec.name],
                )
                for spec in config.services
            ]
            return ServiceList(project=config.project or "", services=summaries)

    async def service_status(service: Service) -> views.StatusView:
        """A service's loop now: replicas, bounds, paused, last decision, cooldowns, approval."""
        with tool_errors():
            return view(await operate.service_status(app.config(), service, app.address))

    async def explain_decisions(
        service: Annotated[
            str | None, Field(description="only this service (default: every service)")
        ] = None,
        tail: Annotated[int, Field(ge=1, le=500, description="how many decisions")] = 10,
        since: Annotated[
            str | None,
            Field(description="only decisions since: a duration back (10m, 2h) or an ISO time"),
        ] = None,
    ) -> Explanation:
        """Recent scaling decisions, oldest first, each with its reason, observations and model."""
        with tool_errors():
            config = app.config()
            moment = operate.parse_since(since, datetime.now(UTC)) if since else None
            found = await operate.collect_decisions(config, tail, service, app.address, moment)
            return Explanation(
                decisions=[views.explained(d, config) for d in found.decisions],
                notes=found.notes,
            )

    async def observe_now(service: Service) -> operate.Observed:
        """Take a fresh observation of a service's metrics and replicas; decides nothing."""
        with tool_errors():
            return await operate.observe_now(app.config(), service, app.sampler, app.address)

    async def what_if(
        service: Service,
        metrics: Annotated[
            dict[str, float] | None,
            Field(
                description='metrics to decide on, e.g. {"queue.backlog": 800}; '
                "default: observe them now"
            ),
        ] = None,
        replicas: Annotated[
            int | None, Field(ge=0, description="the current replica count to assume")
        ] = None,
    ) -> operate.DryRun:
        """Dry-run the service's real policy on given or current metrics; nothing is applied."""
        with tool_errors():
            config = app.config()
            return await operate.what_if(
                config, service, app.sampler, metrics, replicas, app.address
            )

    async def validate_config(
        online: Annotated[
            bool, Field(description="also check that streams, backends and the LLM answer")
        ] = False,
    ) -> ConfigReport:
        """Validate the server's docktor.yaml as it is on disk now (docktor config validate)."""
        report = ConfigReport(file=str(app.config_path), ok=True)
        try:
            config = load_config(app.config_path)
        except ConfigError as exc:
            report.ok, report.problems = False, list(exc.problems)
            return report
        report.project, report.services = config.project, config.service_names()
        report.warnings = config.warnings
        if online:
            from docktor.client.checks import run_checks

            results = await run_checks(config)
            report.checks = [
                CheckLine(ok=r.ok, subject=r.subject, detail=r.detail) for r in results
            ]
            report.ok = all(r.ok for r in results)
        return report

    for tool in (list_services, service_status, explain_decisions, observe_now, what_if):
        server.add_tool(tool, annotations=READ_ONLY)
    # Online checks open connections to what the file names: read-only, but not closed-world.
    server.add_tool(validate_config, annotations=ToolAnnotations(read_only_hint=True))


# ---- control (only with --allow-control) -----------------------------------------------------


def register_control(server: MCPServer, app: Docktor) -> None:
    async def pause(service: Service, reason: Reason, ctx: Context) -> ControlResult:
        """Stop applying automatic decisions for a service; it keeps observing and recording."""
        by = _audit(ctx, app, "pause", service, reason)
        with tool_errors():
            # The loop keeps who paused apart from why (PauseRequest.by): the reason is only
            # the agent's words.
            status = await operate.pause(app.config(), service, reason, app.address, by=by)
        return ControlResult(
            service=service,
            action="pause",
            by=by,
            reason=reason,
            message=f"paused {service}: it observes and records, but applies nothing until resumed",
            status=view(status),
        )

    async def resume(service: Service, reason: Reason, ctx: Context) -> ControlResult:
        """Apply automatic decisions again: ends a pause and a manual scale's hold."""
        by = _audit(ctx, app, "resume", service, reason)
        with tool_errors():
            status = await operate.resume(app.config(), service, app.address, by=by)
        return ControlResult(
            service=service,
            action="resume",
            by=by,
            reason=reason,
            message=f"resumed {service}: automatic decisions apply again",
            status=view(status),
        )

    async def scale_to(
        service: Service,
        replicas: Annotated[int, Field(ge=0, description="the replica count, within the bounds")],
        reason: Reason,
        ctx: Context,
        hold: Annotated[
            str | None,
            Field(
                description="how long the loop keeps this count, up and down: '10m', '2h'; "
                "'0' for no hold; default: the service's longer cooldown (or scale window)"
            ),
        ] = None,
    ) -> ControlResult:
        """Set a service's replica count now (within its bounds); recorded as a manual decision,
        and held for a while (see `hold`); resume ends a hold early."""
        hold_s = _hold_seconds(hold)
        by = _audit(ctx, app, "scale_to", service, reason, replicas)
        with tool_errors():
            decision = await operate.scale(
                app.config(), service, replicas, reason, app.address, by=by, hold_s=hold_s
            )
        return ControlResult(
            service=service,
            action="scale_to",
            by=by,
            reason=reason,
            message=(
                f"scaled {service} {decision.current_replicas} -> {decision.target_replicas} "
                f"(a manual decision: {decision.reason})"
            ),
            decision=decision,
        )

    async def nudge(service: Service, reason: Reason, ctx: Context) -> ControlResult:
        """Make a service's loop evaluate now instead of at its next tick."""
        by = _audit(ctx, app, "nudge", service, reason)
        with tool_errors():
            await operate.nudge(app.config(), service, app.address, by=by)
        return ControlResult(
            service=service,
            action="nudge",
            by=by,
            reason=reason,
            message=f"nudged {service}: it evaluates now; see explain_decisions for the result",
        )

    async def approve(service: Service, reason: Reason, ctx: Context) -> ControlResult:
        """Approve the scale decision of a service that awaits approval (approval: manual)."""
        return await _verdict(ctx, service, reason, approve=True)

    async def reject(service: Service, reason: Reason, ctx: Context) -> ControlResult:
        """Reject the scale decision of a service that awaits approval (approval: manual)."""
        return await _verdict(ctx, service, reason, approve=False)

    async def _verdict(ctx: Context, service: str, reason: str, approve: bool) -> ControlResult:
        verb = "approve" if approve else "reject"
        by = _audit(ctx, app, verb, service, reason)
        with tool_errors():
            pending = await operate.verdict(
                app.config(), service, approve, reason, app.address, by=by
            )
        change = f"{service} {pending.current_replicas} -> {pending.target_replicas}"
        return ControlResult(
            service=service,
            action=verb,
            by=by,
            reason=reason,
            message=(
                f"approved {change}; the loop applies it now"
                if approve
                else f"rejected {change}; it stays at {pending.current_replicas}"
            ),
            pending=pending,
        )

    changes = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    for tool in (pause, resume, scale_to, nudge, approve, reject):
        server.add_tool(tool, annotations=changes)


def _hold_seconds(hold: str | None) -> float | None:
    """scale_to's `hold` as seconds (None: the service's default); a bad one is refused."""
    if hold is None:
        return None
    try:
        seconds = parse_duration(hold)
    except ValueError as exc:
        raise ToolError(f"hold: {exc}") from None
    if why := problem(seconds):
        raise ToolError(why)
    return seconds


# How much of a client's reason the audit line shows; the loop records it whole.
AUDIT_REASON_LIMIT = 500


def _audit(ctx: Context, app: Docktor, tool: str, service: str, reason: str, *args: object) -> str:
    """Who asks for what and why, on the server's log (stderr), as one line. Written once the
    request is known to be well formed (a reason that is not blank, a service of the config:
    the schema's min_length lets spaces through) and before it is sent, so a control the loop
    then refuses, or does not answer, is on record too. What the client wrote is escaped: a
    newline in a reason cannot forge a second line, nor an escape sequence repaint a
    terminal."""
    if not reason.strip():
        raise ToolError(f"{tool} needs a reason: say why; it is recorded with who acted")
    with tool_errors():
        operate.check_service(app.config(), service)
    by = actor(ctx)
    extra = " ".join(str(a) for a in args)
    log.info(
        "%s: %s %s%s (%s)",
        by,
        tool,
        service,
        f" {extra}" if extra else "",
        escaped_line(reason, AUDIT_REASON_LIMIT),
    )
    return by
