"""What `docktor status | explain | pause | resume | scale | nudge | approve | reject | down` do,
apart from printing: find the service, reach its loop through Temporal, and turn every way that can
fail into one exception whose message is the line the operator reads.

The Temporal calls themselves are docktor/client/loops.py's LoopClient; this module only
orchestrates them and words the failures. Rendering is docktor/views.py.
"""

from __future__ import annotations

import asyncio
import getpass
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from docktor import policy
from docktor.backends import ScalerConfigError, ScalerUnavailable, one_backend
from docktor.client.loops import (
    ANSWER_TIMEOUT,
    UPDATE_TIMEOUT,
    ControlRefused,
    LoopClient,
    LoopNotAnswering,
    NoRunningLoop,
)
from docktor.client.temporal import TemporalUnreachable, connect
from docktor.exit_codes import EXIT_FAILED, EXIT_USAGE
from docktor.journal import decision_order, latest_decisions
from docktor.loop.messages import LoopState, LoopStatus, ManualScaleResult, PendingApproval
from docktor.plan import ServicePlan
from docktor.sources.sampling import METRIC_LIMIT, Sampler
from docktor.spec import DocktorConfig, parse_duration
from docktor.values import Decision, ForecastView, Observation, Proposal

T = TypeVar("T")


class OperateError(Exception):
    """A command that could not do what was asked; `exit_code` says how the CLI leaves."""

    exit_code = EXIT_FAILED


class UnknownService(OperateError):
    exit_code = EXIT_USAGE


class NoLoop(OperateError):
    """The service is configured, but no loop runs for it; `state` is how its workflow ended
    (None: there is none)."""

    def __init__(self, message: str, state: str | None = None) -> None:
        super().__init__(message)
        self.state = state


class NotAnswering(OperateError):
    """The loop runs but did not answer in time (no worker took the call)."""


class BadArgument(OperateError):
    exit_code = EXIT_USAGE


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
    # A problem that is a failure (a loop that did not answer, a server that went away), not
    # just a loop that is not running: `docktor status` exits 1.
    failed: bool = False


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


async def _connect(
    config: DocktorConfig,
    address: str | None,
    identity: str | None = None,
    answer_timeout: float = ANSWER_TIMEOUT,
) -> LoopClient:
    try:
        client = await connect(config, address, identity)
    except TemporalUnreachable as exc:
        raise OperateError(str(exc)) from None
    return LoopClient(client, config, answer_timeout)


async def _call(config: DocktorConfig, address: str | None, service: str, call: Awaitable[T]) -> T:
    """Await one Temporal call about `service`, wording the failures every command shares."""
    try:
        return await call
    except NoRunningLoop as exc:
        raise NoLoop(_no_loop(config, service, exc), exc.state) from None
    except LoopNotAnswering as exc:
        raise NotAnswering(str(exc)) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.UNAVAILABLE:
            # Connected, then lost: the server went away between calls.
            raise OperateError(
                f"cannot reach Temporal at {_address(config, address)} ({exc.message})"
            ) from None
        raise OperateError(f"Temporal refused the call: {exc.message}") from None


# ---- status ----------------------------------------------------------------------------------


async def collect_status(
    config: DocktorConfig, address: str | None = None, timeout: float = ANSWER_TIMEOUT
) -> list[ServiceState]:
    """Every configured service, in config order; a missing loop is a row, not an error, and a
    loop that does not answer within `timeout` is a row marked `failed`."""
    loops = await _connect(config, address, answer_timeout=timeout)

    async def row(name: str) -> ServiceState:
        state = ServiceState(service=name, workflow_id=config.workflow_id(name))
        try:
            state.status = await _call(config, address, name, loops.status(name))
            # The loop's own id: one started by an older release still runs under its old one.
            state.workflow_id = state.status.workflow_id
        except NoLoop:
            state.problem = "not running"
        except OperateError as exc:
            state.problem, state.failed = str(exc), True
        return state

    # All at once: loops that do not answer cost one timeout together, not one each.
    return list(await asyncio.gather(*(row(name) for name in config.service_names())))


async def service_status(
    config: DocktorConfig, service: str, address: str | None = None
) -> LoopStatus:
    """One service's loop, where a missing loop is an error (NoLoop) rather than a row."""
    check_service(config, service)
    loops = await _connect(config, address)
    return await _call(config, address, service, loops.status(service))


def _no_loop(config: DocktorConfig, service: str, exc: NoRunningLoop) -> str:
    workflow_id = config.workflow_id(service)
    state = f"workflow {workflow_id} is {exc.state}" if exc.state else f"no workflow {workflow_id}"
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
    since: datetime | None = None,
) -> Explained:
    """The last `tail` decisions across the services (or one), merged by time; with `since`,
    only those at or after it.

    Read from the loops through the `decisions` query. When Temporal cannot be reached at all,
    from the JSONL log instead, with a note saying so; a service whose loop is not running has
    its decisions from the log too (a stopped loop's last words are worth seeing).
    """
    names = [check_service(config, service)] if service else config.service_names()
    journal = config.journal_path
    notes: list[str] = []
    try:
        loops = LoopClient(await connect(config, address), config)
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
        return Explained(_from_journal(journal, names, tail, since, notes), notes)

    found: list[Decision] = []
    from_log: list[str] = []
    for name in names:
        try:
            found += await _call(config, address, name, loops.decisions(name, tail))
        except OperateError as exc:
            if not Path(journal).exists():
                if service:
                    raise
                notes.append(str(exc))
                continue
            from_log.append(name)
            notes.append(f"{exc}; its decisions come from the decision log {journal}")
    if from_log:
        found += _from_journal(journal, from_log, tail, since, notes)
    return Explained(_latest(found, tail, since), notes)


def parse_since(text: str, now: datetime) -> datetime:
    """`explain --since`: a duration back from now (`10m`, `2h`) or an ISO 8601 time (UTC
    unless it names its offset)."""
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadArgument(
            f"since: expected a duration such as 10m or a time such as 2025-06-01T10:30:00Z, "
            f"not {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _from_journal(
    journal: str, names: list[str], tail: int, since: datetime | None, notes: list[str]
) -> list[Decision]:
    # Read across the log's rotated files, holding only the `tail` wanted; the log may be
    # shared by several configs: only this config's services.
    try:
        decisions, unreadable = latest_decisions(journal, names, tail, since)
    except OSError as exc:
        raise OperateError(
            f"cannot read the decision log {journal}: {exc.strerror or exc}"
        ) from None
    if unreadable:
        notes.append(
            f"{unreadable} line(s) of {journal} could not be read (torn or edited): skipped"
        )
    return decisions


def _latest(decisions: list[Decision], tail: int, since: datetime | None = None) -> list[Decision]:
    # Filtering after each loop's own tail is exact: a loop's decisions are in time order, so
    # those since a moment are a suffix of them.
    if since is not None:
        decisions = [d for d in decisions if d.timestamp >= since]
    ordered = sorted(decisions, key=decision_order)
    return ordered[-tail:] if tail > 0 else []


# ---- controls --------------------------------------------------------------------------------
# Each waits at most `timeout` seconds for the loop's answer, and the loop refuses the control
# once that time has passed (see docktor/client/loops.py): "not answered" means "not done".
# `by` is who acted, recorded with the change; the CLI leaves it to operator() ($USER). A
# caller that names itself (docktor mcp) is named in the history of the update too.


async def _control(
    config: DocktorConfig,
    address: str | None,
    service: str,
    verb: str,
    run: Callable[[LoopClient], Awaitable[T]],
    by: str | None = None,
) -> T:
    check_service(config, service)
    loops = await _connect(config, address, identity=by)
    try:
        return await _call(config, address, service, run(loops))
    except ControlRefused as exc:
        raise UpdateRefused(f"{verb} refused: {exc}") from None


async def pause(
    config: DocktorConfig,
    service: str,
    reason: str = "",
    address: str | None = None,
    timeout: float = UPDATE_TIMEOUT,
    by: str | None = None,
) -> LoopStatus:
    who = by or operator()
    return await _control(
        config,
        address,
        service,
        "pause",
        lambda loops: loops.pause(service, reason, who, timeout),
        by,
    )


async def resume(
    config: DocktorConfig,
    service: str,
    address: str | None = None,
    timeout: float = UPDATE_TIMEOUT,
    by: str | None = None,
) -> LoopStatus:
    return await _control(
        config, address, service, "resume", lambda loops: loops.resume(service, timeout), by
    )


async def scale(
    config: DocktorConfig,
    service: str,
    replicas: int,
    reason: str = "",
    address: str | None = None,
    timeout: float = UPDATE_TIMEOUT,
    by: str | None = None,
    hold_s: float | None = None,
) -> ManualScaleResult:
    """Scale now; the loop then holds the count for `hold_s` seconds (None: the service's
    default, 0: no hold). The answer is the manual decision with the hold the loop keeps."""
    who = by or operator()
    return await _control(
        config,
        address,
        service,
        "scale",
        lambda loops: loops.scale_to(service, replicas, reason, who, hold_s, timeout),
        by,
    )


async def forecast(config: DocktorConfig, service: str, address: str | None = None) -> ForecastView:
    """What the running loop has learnt of its load's rhythm (a query: it changes nothing)."""
    check_service(config, service)
    loops = await _connect(config, address)
    return await _call(config, address, service, loops.forecast(service))


async def nudge(
    config: DocktorConfig, service: str, address: str | None = None, by: str | None = None
) -> None:
    check_service(config, service)
    loops = await _connect(config, address, identity=by)
    await _call(config, address, service, loops.nudge(service))


async def verdict(
    config: DocktorConfig,
    service: str,
    approve: bool,
    reason: str = "",
    address: str | None = None,
    timeout: float = UPDATE_TIMEOUT,
    by: str | None = None,
) -> PendingApproval:
    verb = "approve" if approve else "reject"
    who = by or operator()

    def run(loops: LoopClient) -> Awaitable[PendingApproval]:
        send = loops.approve if approve else loops.reject
        return send(service, reason, who, timeout)

    return await _control(config, address, service, verb, run, by)


# ---- down: stop the loops, and with them (when asked) the replicas ---------------------------


@dataclass
class Down:
    """What `docktor down` did for one service, as lines for the operator."""

    service: str
    done: list[str] = field(default_factory=list)
    # What could not be done; the command exits 1 when any service has one.
    failures: list[str] = field(default_factory=list)


@dataclass
class DownReport:
    services: list[Down]
    # Temporal could not be reached: no loop was cancelled (replicas are still stopped).
    unreachable: str | None = None

    @property
    def failed(self) -> bool:
        return self.unreachable is not None or any(s.failures for s in self.services)


async def down(
    config: DocktorConfig,
    services: list[str],
    replicas: bool = False,
    address: str | None = None,
    timeout: float = UPDATE_TIMEOUT,
) -> DownReport:
    """Cancel each service's loop (it records `stopped`) and, with `replicas`, scale what the
    backend runs to 0, min_replicas notwithstanding: stopping the service is the point. A loop
    that is already gone is said so, and its replicas are stopped all the same."""
    names = [check_service(config, name) for name in services] or config.service_names()
    report = DownReport([Down(name) for name in names])
    try:
        loops: LoopClient | None = LoopClient(await connect(config, address), config)
    except TemporalUnreachable as exc:
        # No loop can act while Temporal is away, so the replicas can still be stopped.
        loops, report.unreachable = None, f"{exc}; no loop was cancelled"

    async def one(result: Down) -> None:
        if loops is not None:
            await _stop_loop(loops, config, address, result, timeout)
        # After the loop has stopped, so that it does not start them again.
        if replicas:
            await _stop_replicas(config, result)

    await asyncio.gather(*(one(result) for result in report.services))
    return report


async def _stop_loop(
    loops: LoopClient, config: DocktorConfig, address: str | None, result: Down, timeout: float
) -> None:
    name = result.service
    workflow_id = config.workflow_id(name)
    try:
        status = await _call(config, address, name, loops.stop(name, timeout=timeout))
    except NoLoop as exc:
        state = f"{workflow_id} is {exc.state}" if exc.state else f"no workflow {workflow_id}"
        result.done.append(f"no loop was running ({state})")
        return
    except OperateError as exc:
        result.failures.append(str(exc))
        return
    count = "?" if status.replicas is None else status.replicas
    result.done.append(f"loop stopped: {status.workflow_id} recorded `stopped` at {count} replicas")


async def _stop_replicas(config: DocktorConfig, result: Down) -> None:
    spec = ServicePlan.from_spec(config.service(result.service))
    what = f"{spec.backend} backend"
    project = config.project or ""
    try:
        async with one_backend(spec) as backend:
            running = await backend.replicas(spec, project)
            if running == 0:
                result.done.append(f"no replicas running ({what})")
                return
            # 0 whatever min_replicas says: bounds are the policy's, not the backend's.
            left = await backend.scale_to(spec, project, 0)
    except (ScalerConfigError, ScalerUnavailable) as exc:
        result.failures.append(f"cannot stop the replicas ({what}): {exc}")
        return
    if left:
        result.failures.append(f"{left} of {running} replicas still running ({what})")
    else:
        result.done.append(f"stopped {running} replica{'s' if running != 1 else ''} ({what})")


# ---- dry runs: observe and decide, apply nothing ---------------------------------------------


class Observed(BaseModel):
    """A fresh sample of a service, as the loop's observe activity takes it."""

    service: str
    observation: Observation
    # Rates need two samples: these are against the loop's own (over its metrics_window), when
    # a loop runs.
    rates: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class DryRun(BaseModel):
    """What the service's policy would decide for an observation; nothing is applied."""

    service: str
    observation: Observation
    proposal: Proposal
    # True: decided from the loop's own memory, previous sample and last scale times, so it
    # is what the loop's next iteration decides for the same observation.
    from_loop: bool
    notes: list[str] = Field(default_factory=list)


async def observe_now(
    config: DocktorConfig, service: str, sampler: Sampler, address: str | None = None
) -> Observed:
    check_service(config, service)
    observation = await _observe(config, service, sampler)
    state, why = await _loop_state(config, service, address)
    notes = [f"{e} (this metric source could not be read)" for e in observation.errors]
    previous = state.last_sample if state else None
    if previous is None:
        notes.append(f"no rates: they need the loop's previous sample ({why or 'none yet'})")
    spec = ServicePlan.from_spec(config.service(service))
    samples = state.memory.rate_samples if state else []
    rates = policy.window_rates(observation, previous, samples, spec.window)
    return Observed(service=service, observation=observation, rates=rates, notes=notes)


async def what_if(
    config: DocktorConfig,
    service: str,
    sampler: Sampler,
    metrics: dict[str, float] | None = None,
    replicas: int | None = None,
    address: str | None = None,
    now: datetime | None = None,
) -> DryRun:
    """Run the real policy (docktor.policy.decide) on the given metrics, or on a fresh
    observation, from the loop's own state when its loop runs."""
    check_service(config, service)
    if metrics is not None:
        metrics = given_metrics(metrics)
    now = now or datetime.now(UTC)
    state, why = await _loop_state(config, service, address)
    if metrics is None:
        observation = await _observe(config, service, sampler)
        if replicas is not None:
            observation.replicas = replicas
    else:
        if replicas is None and state is not None:
            replicas = state.replicas
        if replicas is None:
            replicas = await _count_replicas(config, service)
        observation = Observation(taken_at=now, replicas=replicas, metrics=metrics)
    return dry_run(config, service, observation, state, why, now)


def given_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics handed to a dry run, as the loop's sampler keeps what a source reports: a value
    that is not a finite number (NaN, ±infinity) is refused, naming the metric (the policy
    cannot decide on it, and a question that asks it is a mistake); a finite one beyond the
    sampler's limit is capped as the loop caps it, so the dry run decides what the loop would."""
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise BadArgument(f"metrics: {name[:80]!r} must be a finite number, not {value}")
    return {name: max(-METRIC_LIMIT, min(METRIC_LIMIT, value)) for name, value in metrics.items()}


def dry_run(
    config: DocktorConfig,
    service: str,
    observation: Observation,
    state: LoopState | None,
    why: str | None,
    now: datetime,
) -> DryRun:
    """The decision `what_if` reports, once it has the observation and the loop's state (None,
    and `why` not, when no loop answered). Pure."""
    spec = ServicePlan.from_spec(config.service(service))
    loop = state or LoopState()
    # The loop's whole policy state (its hold and the count it expects included), so this is
    # what its next iteration decides for the same observation.
    proposal = policy.decide(spec, observation, loop.policy_state(), now)
    # The memory is the policy's bookkeeping for the next call, not part of the answer.
    proposal.memory = None
    notes = []
    if state is None:
        notes.append(
            f"decided from a fresh policy memory (no windows, learned rate, cooldowns or "
            f"previous sample): {why}"
        )
    if loop.paused:
        notes.append(
            f"the loop is paused ({loop.pause_reason or 'no reason given'}): "
            "it would record this and apply nothing"
        )
    if spec.approval == "manual" and proposal.target_replicas != proposal.current_replicas:
        notes.append("approval is manual: this scale would wait for `docktor approve`")
    if config.llm.provider != "none":
        notes.append(
            f"the loop also asks {config.llm.provider} {config.llm.model}; "
            "its advice is not part of this dry run"
        )
    return DryRun(
        service=service,
        observation=observation,
        proposal=proposal,
        from_loop=state is not None,
        notes=notes,
    )


async def _observe(config: DocktorConfig, service: str, sampler: Sampler) -> Observation:
    try:
        plan = ServicePlan.from_spec(config.service(service))
        observation, _ = await sampler.observe(plan, config.project or "")
    except (ScalerConfigError, ScalerUnavailable) as exc:
        raise OperateError(f"cannot count the replicas of '{service}': {exc}") from None
    return observation


async def _count_replicas(config: DocktorConfig, service: str) -> int:
    spec = ServicePlan.from_spec(config.service(service))
    try:
        async with one_backend(spec) as backend:
            return await backend.replicas(spec, config.project or "")
    except (ScalerConfigError, ScalerUnavailable) as exc:
        raise OperateError(f"cannot count the replicas of '{service}': {exc}") from None


async def _loop_state(
    config: DocktorConfig, service: str, address: str | None
) -> tuple[LoopState | None, str | None]:
    """The loop's state, or None and why not: a dry run without a loop still runs the policy,
    and says what it could not know."""
    try:
        loops = await _connect(config, address)
        state = await _call(config, address, service, loops.loop_state(service))
    except OperateError as exc:
        return None, str(exc)
    except WorkflowQueryFailedError as exc:
        # A worker of a release before the loop_state query.
        return None, f"the loop does not answer the loop_state query ({exc})"
    return state, None
