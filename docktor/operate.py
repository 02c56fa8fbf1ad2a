"""What `docktor status | explain | pause | resume | scale | nudge | approve | reject` do, apart
from printing: find the service, reach its loop through Temporal, and turn every way that can
fail into one exception whose message is the line the operator reads.

The Temporal calls themselves live in docktor/control.py; this module only orchestrates them and
words the failures. Rendering is docktor/views.py.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from docktor import control
from docktor.client import TemporalUnreachable, connect
from docktor.config import DocktorConfig
from docktor.journal import read_decisions
from docktor.model import (
    Decision,
    ForecastView,
    LoopStatus,
    ManualScale,
    PauseRequest,
    PendingApproval,
    Verdict,
)

T = TypeVar("T")


class OperateError(Exception):
    """A command that could not do what was asked; `exit_code` says how the CLI leaves."""

    exit_code = 1


class UnknownService(OperateError):
    exit_code = 2


class NoLoop(OperateError):
    """The service is configured, but no loop runs for it."""


class UpdateRefused(OperateError):
    """The workflow's validator said no; the message carries its reason."""


@dataclass
class ServiceState:
    """One row of `docktor status`: the loop's own answer, or why there is none."""

    service: str
    workflow_id: str
    status: LoopStatus | None = None
    # "not running" / "not answering ..." when status is None.
    problem: str | None = None


@dataclass
class Explained:
    """The decisions `docktor explain` shows, oldest first, and where they came from."""

    decisions: list[Decision]
    # Lines for stderr: a fallback to the JSONL log, services whose loop is not running.
    notes: list[str] = field(default_factory=list)


def operator() -> str:
    """Who is at the keyboard, for the `by` of pauses, scales and verdicts."""
    if user := os.environ.get("USER"):
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (some containers)
        return ""


def check_service(config: DocktorConfig, name: str) -> str:
    if name not in config.service_names():
        known = ", ".join(config.service_names())
        raise UnknownService(f"unknown service '{name}'; the config has: {known}")
    return name


def _address(config: DocktorConfig, address: str | None) -> str:
    return address or config.temporal.address


async def _connect(config: DocktorConfig, address: str | None) -> Client:
    try:
        return await connect(config, address)
    except TemporalUnreachable as exc:
        raise OperateError(str(exc)) from None


async def _call(config: DocktorConfig, address: str | None, service: str, call: Awaitable[T]) -> T:
    """Await one Temporal call about `service`, wording the failures every command shares."""
    try:
        return await call
    except control.NoRunningLoop as exc:
        raise NoLoop(_no_loop(config, service, exc)) from None
    except control.LoopNotAnswering as exc:
        raise OperateError(str(exc)) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.UNAVAILABLE:
            # Connected, then lost: the server went away between calls.
            raise OperateError(
                f"cannot reach Temporal at {_address(config, address)} ({exc.message})"
            ) from None
        raise OperateError(f"Temporal refused the call: {exc.message}") from None


# ---- status ----------------------------------------------------------------------------------


async def collect_status(config: DocktorConfig, address: str | None = None) -> list[ServiceState]:
    """Every configured service, in config order; a missing loop is a row, not an error."""
    client = await _connect(config, address)
    rows = []
    for name in config.service_names():
        row = ServiceState(service=name, workflow_id=config.workflow_id(name))
        try:
            row.status = await _call(
                config, address, name, control.query_status(client, config, name)
            )
        except NoLoop:
            row.problem = "not running"
        except OperateError as exc:
            row.problem = str(exc)
        rows.append(row)
    return rows


def _no_loop(config: DocktorConfig, service: str, exc: control.NoRunningLoop) -> str:
    workflow_id = config.workflow_id(service)
    # control words "not running" with the workflow's final state in parentheses.
    ended = re.search(r"is not running \((\w+)\)", str(exc))
    state = f"workflow {workflow_id} is {ended.group(1)}" if ended else f"no workflow {workflow_id}"
    return (
        f"no running loop for service '{service}' ({state}; "
        f"start it: python -m starter --service {service})"
    )


# ---- explain ---------------------------------------------------------------------------------


async def collect_decisions(
    config: DocktorConfig,
    tail: int = 10,
    service: str | None = None,
    address: str | None = None,
) -> Explained:
    """The last `tail` decisions across the services (or one), merged by time.

    Read from the loops through the `decisions` query. When Temporal cannot be reached at all,
    from the JSONL log instead, with a note saying so; a service whose loop is not running has
    its decisions from the log too (a stopped loop's last words are worth seeing).
    """
    names = [check_service(config, service)] if service else config.service_names()
    journal = config.journal_path
    notes: list[str] = []
    try:
        client = await connect(config, address)
    except TemporalUnreachable:
        notes.append(
            f"Temporal not reachable at {_address(config, address)}; "
            f"showing the decision log {journal}"
        )
        if not Path(journal).exists():
            raise OperateError(
                f"Temporal not reachable at {_address(config, address)}, and there is no "
                f"decision log at {journal}"
            ) from None
        return Explained(_from_journal(journal, names, tail), notes)

    found: list[Decision] = []
    from_log: list[str] = []
    for name in names:
        try:
            found += await _call(
                config, address, name, control.query_decisions(client, config, name, tail)
            )
        except OperateError as exc:
            if not Path(journal).exists():
                if service:
                    raise
                notes.append(str(exc))
                continue
            from_log.append(name)
            notes.append(f"{exc}; its decisions come from the decision log {journal}")
    if from_log:
        found += _from_journal(journal, from_log, tail)
    return Explained(_latest(found, tail), notes)


def _from_journal(journal: str, names: list[str], tail: int) -> list[Decision]:
    # The log may be shared by several configs: keep only this config's services.
    wanted = set(names)
    return _latest([d for d in read_decisions(journal) if d.service in wanted], tail)


def _latest(decisions: list[Decision], tail: int) -> list[Decision]:
    ordered = sorted(decisions, key=lambda d: (d.timestamp, d.service, d.sequence))
    return ordered[-tail:] if tail > 0 else []


# ---- controls --------------------------------------------------------------------------------


async def _update(
    config: DocktorConfig,
    address: str | None,
    service: str,
    verb: str,
    run: Callable[[Client], Awaitable[T]],
) -> T:
    check_service(config, service)
    client = await _connect(config, address)
    try:
        return await _call(config, address, service, run(client))
    except WorkflowUpdateFailedError as exc:
        raise UpdateRefused(f"{verb} refused: {_refusal(exc)}") from None


def _refusal(exc: WorkflowUpdateFailedError) -> str:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or exc)


async def pause(
    config: DocktorConfig,
    service: str,
    reason: str = "",
    address: str | None = None,
    timeout: float = control.UPDATE_TIMEOUT,
) -> LoopStatus:
    request = PauseRequest(reason=reason, by=operator())
    return await _update(
        config,
        address,
        service,
        "pause",
        lambda c: control.send_update(c, config, service, "pause", request, LoopStatus, timeout),
    )


async def resume(
    config: DocktorConfig,
    service: str,
    address: str | None = None,
    timeout: float = control.UPDATE_TIMEOUT,
) -> LoopStatus:
    return await _update(
        config,
        address,
        service,
        "resume",
        lambda c: control.send_update(c, config, service, "resume", None, LoopStatus, timeout),
    )


async def scale(
    config: DocktorConfig,
    service: str,
    replicas: int,
    reason: str = "",
    address: str | None = None,
    timeout: float = control.UPDATE_TIMEOUT,
) -> Decision:
    request = ManualScale(replicas=replicas, reason=reason, by=operator())
    return await _update(
        config,
        address,
        service,
        "scale",
        lambda c: control.send_update(c, config, service, "scale_to", request, Decision, timeout),
    )


async def forecast(config: DocktorConfig, service: str, address: str | None = None) -> ForecastView:
    """What the running loop has learnt of its load's rhythm (a query: it changes nothing)."""
    check_service(config, service)
    client = await _connect(config, address)
    return await _call(config, address, service, control.query_forecast(client, config, service))


async def nudge(config: DocktorConfig, service: str, address: str | None = None) -> None:
    check_service(config, service)
    client = await _connect(config, address)
    await _call(config, address, service, control.send_nudge(client, config, service))


async def verdict(
    config: DocktorConfig,
    service: str,
    approve: bool,
    reason: str = "",
    address: str | None = None,
    timeout: float = control.UPDATE_TIMEOUT,
) -> PendingApproval:
    verb = "approve" if approve else "reject"
    request = Verdict(by=operator(), reason=reason)
    return await _update(
        config,
        address,
        service,
        verb,
        lambda c: control.send_update(c, config, service, verb, request, PendingApproval, timeout),
    )
