"""The loop's activities: thin async wrappers that call into docktor/ and translate its errors
into Temporal's terms (retryable or not).

Each one that executes, connects, reads a secret or writes a file acts on the worker's own
config (docktor.loop.authority), never on what its payload carries: a payload that asks for
anything the config does not say is refused (a non-retryable `Refused` error) and nothing runs.
Only `evaluate`, pure arithmetic on the payload, takes it as it comes."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from docktor import names, policy
from docktor.backends import Backends, ScalerConfigError, ScalerUnavailable
from docktor.journal import append_decision, warm_start
from docktor.loop.authority import Refused, WorkerConfig
from docktor.loop.messages import (
    ApplyInput,
    ApplyResult,
    EvaluateInput,
    LookInput,
    LookResult,
    ObserveInput,
    RecordInput,
    hold_decision,
    is_hold,
)
from docktor.sources import MetricUnavailable
from docktor.sources.sampling import Sampler, source_kinds
from docktor.telemetry import METRICS, DocktorMetrics
from docktor.text import source_error
from docktor.values import Advice, AdviseInput, Decision, Observation, Proposal

if TYPE_CHECKING:  # the openai client is loaded only by workers whose config uses a model
    from docktor.advisor import Clients

HEARTBEAT_EVERY = 5.0
# Attempts at reading metrics that are unavailable before the observation goes ahead without
# them (and the policy holds). The workflow's observe retry policy allows exactly this many.
OBSERVE_ATTEMPTS = 3

# Errors writing the decision log that a retry within seconds will not cure.
LASTING_WRITE_ERRORS = {
    errno.ENOSPC,  # disk full
    errno.EDQUOT,  # quota exceeded
    errno.EROFS,  # read-only file system
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,  # a file where a folder of the path should be
    errno.EEXIST,  # ... the same, seen by mkdir
    errno.EISDIR,  # a folder where the file should be
}

log = logging.getLogger("docktor.activities")
T = TypeVar("T")


class LoopActivities:
    """One instance per worker: it owns the metric sources (and their pooled connections) and
    the backend instances, for the worker's life, and acts on the worker's own config."""

    def __init__(
        self, own: WorkerConfig | None = None, metrics: DocktorMetrics | None = None
    ) -> None:
        # Without a config the worker runs nothing (a test's scripted loop uses only evaluate).
        self.own = own or WorkerConfig(None)
        self.backends = Backends()
        self.sampler = Sampler(self.backends)
        # Prometheus figures: the worker's shared set unless a test brings its own.
        self.metrics = metrics or METRICS
        # The model servers' clients, kept for the worker's life; made at the first advice.
        self.model_clients: Clients | None = None

    @activity.defn(name=names.OBSERVE)
    async def observe(self, request: ObserveInput) -> Observation:
        allowed = _obey(lambda: self.own.check_plan(request.project, request.service))
        plan = allowed.plan
        self.metrics.planned(plan.name, plan.max_replicas, plan.check_interval)
        try:
            observation, failures = await self.sampler.observe(plan, allowed.project)
        except ScalerConfigError as exc:
            raise _config_error(exc) from exc
        except ScalerUnavailable as exc:
            self.metrics.replicas_unavailable(plan.name)
            raise _unavailable(f"observe {plan.name}", str(exc)) from exc
        self.metrics.observed(plan.name, observation, source_kinds(plan))
        transient = [f for f in failures if isinstance(f, MetricUnavailable)]
        if transient and activity.info().attempt < OBSERVE_ATTEMPTS:
            # Worth another try; on the last attempt the observation goes ahead without these
            # metrics, so the replica count (and the min_replicas floor) still counts.
            raise _unavailable(f"observe {plan.name}", "; ".join(observation.errors))
        if request.forecast_seed_from:
            # Warm start: once, for a loop whose forecast has no history yet, from the worker's
            # own decision log only.
            observation.warm_start = await asyncio.to_thread(
                warm_start,
                _obey(lambda: self.own.journal_path(request.forecast_seed_from or "")),
                plan,
                activity.info().workflow_id,
                observation.taken_at,
            )
        return observation

    @activity.defn(name=names.EVALUATE)
    async def evaluate(self, request: EvaluateInput) -> Proposal:
        return policy.decide(request.service, request.observation, request.state, request.now)

    @activity.defn(name=names.OBSERVE_EVALUATE)
    async def observe_evaluate(self, request: LookInput) -> LookResult:
        return await look(request, self.observe, self.evaluate, self.record)

    @activity.defn(name=names.ADVISE)
    async def advise(self, request: AdviseInput) -> Advice:
        # Imported here: the openai client is only loaded by workers whose config uses a model.
        from docktor import advisor

        # The model server, like everything the key is sent to, is the worker's config's.
        allowed = _obey(lambda: self.own.check_plan(self._project(), request.service))
        llm = _obey(lambda: self.own.check_llm(allowed, request.llm))
        try:
            # The key comes from the worker's environment, never from workflow input.
            api_key = advisor.api_key_for(llm)
        except advisor.LLMConfigError as exc:
            raise _config_error(exc) from None
        if self.model_clients is None:
            self.model_clients = advisor.Clients()
        return await advisor.advise(
            request.model_copy(update={"service": allowed.plan, "llm": llm}),
            api_key,
            self.model_clients,
        )

    @activity.defn(name=names.APPLY)
    async def apply(self, request: ApplyInput) -> ApplyResult:
        allowed = _obey(lambda: self.own.check_plan(request.project, request.service))
        plan = allowed.plan
        self.metrics.applying(plan.name, request.target_replicas)
        try:
            backend = self.backends.of(plan)
            async with _heartbeating():
                replicas = await backend.scale_to(plan, allowed.project, request.target_replicas)
        except ScalerConfigError as exc:
            raise _config_error(exc) from exc
        except ScalerUnavailable as exc:
            what = f"apply {plan.name} -> {request.target_replicas}"
            raise _unavailable(what, str(exc)) from exc
        self.metrics.applied(plan.name, replicas)
        return ApplyResult(replicas=replicas)

    @activity.defn(name=names.RECORD)
    async def record(self, request: RecordInput) -> bool:
        path = _obey(lambda: self.own.journal_path(request.path))
        decisions = [*request.missed, request.decision]
        try:
            written = await asyncio.to_thread(_append_in_order, path, decisions)
        except OSError as exc:
            if exc.errno not in LASTING_WRITE_ERRORS:
                raise
            # A full disk or a folder that is a file does not heal in the seconds a retry
            # waits: fail at once (the decision is safe in the workflow) instead of holding
            # the loop up for every decision. BENIGN: the SDK logs no traceback; the workflow
            # reports the gap once.
            raise ApplicationError(
                f"cannot write {request.path}: {exc.strerror or exc}",
                type="JournalUnwritable",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        # Counted only when this call wrote the line: a retry finds it written and counts nothing.
        for decision, wrote in zip(decisions, written, strict=True):
            self.metrics.recorded(decision, wrote)
        return written[-1]

    def _project(self) -> str:
        """The project of the loop this activity serves, as its workflow id names it."""
        config = self.own.config
        return names.project_name(config.project if config else None)

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        """Every activity a worker registers, so no entry point forgets one."""
        return [
            self.observe,
            self.evaluate,
            self.observe_evaluate,
            self.advise,
            self.apply,
            self.record,
        ]

    async def close(self) -> None:
        await self.sampler.close()
        await self.backends.close()
        if self.model_clients is not None:
            await self.model_clients.close()


def observe_evaluate_of(
    observe: Callable[[ObserveInput], Awaitable[Observation]],
    evaluate: Callable[[EvaluateInput], Awaitable[Proposal]],
    record: Callable[[RecordInput], Awaitable[bool]],
) -> Callable[[LookInput], Awaitable[LookResult]]:
    """The `observe_evaluate` activity over these steps: a worker whose tests replace one of
    them (a record that fails once, a policy held at a gate) composes it here."""

    @activity.defn(name=names.OBSERVE_EVALUATE)
    async def observe_evaluate(request: LookInput) -> LookResult:
        return await look(request, observe, evaluate, record)

    return observe_evaluate


async def look(
    request: LookInput,
    observe: Callable[[ObserveInput], Awaitable[Observation]],
    evaluate: Callable[[EvaluateInput], Awaitable[Proposal]],
    record: Callable[[RecordInput], Awaitable[bool]],
) -> LookResult:
    """An idle iteration's work in one local activity (one marker in history, one round trip
    through the worker instead of three): the `observe` and `evaluate` activities' own code, and
    for a hold the workflow allowed, the `record` activity's. A failure to write is no failure
    of the look: the workflow then records the hold through `record`, which retries and reports
    a log that cannot be written."""
    observation = await observe(
        ObserveInput(
            project=request.project,
            service=request.service,
            forecast_seed_from=request.forecast_seed_from,
        )
    )
    proposal = await evaluate(
        EvaluateInput(
            service=request.service, observation=observation, now=request.now, state=request.state
        )
    )
    written = False
    decided_at: datetime | None = None
    if request.hold_at is not None and request.journal_path and is_hold(proposal):
        # Stamped as it is decided, after the sample and its retries: the task's time (when the
        # look began) can lie seconds before, which reads as a silence in the log.
        decided_at = datetime.now(UTC)
        decision = hold_decision(request.hold_at.model_copy(update={"at": decided_at}), proposal)
        # Shielded: a cancel that arrives mid-write waits for the line, so the loop's `stopped`
        # decision, made under the same number once this returns, is the line that stays.
        write = asyncio.ensure_future(
            record(RecordInput(path=request.journal_path, decision=decision))
        )
        try:
            await asyncio.shield(write)
            written = True
        except asyncio.CancelledError:
            with suppress(ApplicationError, OSError):
                await write
            raise
        except (ApplicationError, OSError) as exc:
            log.debug("the hold's line was not written here (%s); the loop records it", exc)
    return LookResult(
        observation=observation, proposal=proposal, hold_written=written, decided_at=decided_at
    )


def _append_in_order(path: str, decisions: list[Decision]) -> list[bool]:
    """Append each decision in turn (whether each was written): a failure stops the rest, so
    no decision is written after one that is missing."""
    return [append_decision(path, decision) for decision in decisions]


def _config_error(exc: Exception) -> ApplicationError:
    """A configuration problem (retrying cures nothing), as one short line: its text may come
    from a server or a library, and it ends up in a decision's reason."""
    return ApplicationError(source_error(str(exc)), type="ConfigError", non_retryable=True)


def _obey(check: Callable[[], T]) -> T:
    """The worker config's answer, or the refusal as a non-retryable error: asking again
    changes nothing until the config or the loop changes."""
    try:
        return check()
    except Refused as exc:
        log.warning("refused: %s", exc)
        # BENIGN: one warning line above, no traceback (the SDK's is for the unexpected).
        raise ApplicationError(
            str(exc),
            type="Refused",
            non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        ) from None


def _unavailable(what: str, problem: str) -> ApplicationError:
    """The error for an expected, retried failure (a server down for a while).

    One line in the worker's log per failure. The error is BENIGN, which makes the SDK log its
    own "Completing activity as failed" with the traceback at debug level instead of warning:
    an outage of a minute would otherwise fill the log with tracebacks of nothing unexpected."""
    # Text from a server or a library: one short printable line without credentials, or a
    # hostile server's megabyte of error would travel in every workflow task and log line.
    message = source_error(problem)
    log.warning("%s failed (attempt %d): %s", what, activity.info().attempt, message)
    return ApplicationError(message, type="Unavailable", category=ApplicationErrorCategory.BENIGN)


@asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while a scale runs, so a dead worker is noticed within the heartbeat timeout
    instead of the whole start-to-close timeout."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
