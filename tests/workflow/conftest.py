"""Workflow tests on the time-skipping test server: durable timers pass in milliseconds.

The workflow is what these tests are about, so it runs for real; observe/apply/record are
served by scripted activities with the same names, standing in for the outside world the way a
test double stands in for a load the test cannot produce. The evaluate step is the real policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import sysconfig
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities import LoopActivities
from docktor.loop.activities import look
from docktor.loop.messages import (
    ApplyInput,
    ApplyResult,
    AutoscalerInput,
    EvaluateInput,
    LookInput,
    LookResult,
    LoopStatus,
    ObserveInput,
    RecordInput,
)
from docktor.plan import ServicePlan
from docktor.spec import Condition, Cooldown, Rules, ServiceSpec
from docktor.values import Decision, Observation, Proposal
from workflows import ServiceAutoscaler

TASK_QUEUE = "docktor-test"


class ScriptedWorld:
    """The outside world as the workflow sees it: a replica count and a queue backlog."""

    def __init__(self) -> None:
        self.replicas = 1
        self.backlog: float | None = 0.0
        self.observe_error: ApplicationError | None = None
        self.apply_error: ApplicationError | None = None
        self.apply_failures_left = 0
        self.observe_attempts = 0
        self.apply_calls: list[int] = []
        # Set to hold every apply until the test sets the event: a scale in flight.
        self.apply_gate: asyncio.Event | None = None
        self.applying = 0
        # The same for observe: an iteration caught while it looks.
        self.observe_gate: asyncio.Event | None = None
        self.observing = 0
        self.recorded: list[Decision] = []
        # Set to fail every record as an unwritable decision log does.
        self.record_error: ApplicationError | None = None
        # Optional arrival rate (msg/s) as a function of the server's clock in seconds since
        # the first observation: the queue counters then advance as a real stream's would, all
        # served at once (rate_out = rate_in), so rates can be derived.
        self.arrivals: Callable[[float], float] | None = None
        self._arrived = 0.0
        self._clock: tuple[datetime, datetime] | None = None  # (first, last) observation
        # The server's clock, which the time-skipping server moves on with the workflow's
        # timers (the worker's own clock does not). Set by the `worker` fixture: observe runs
        # as a local activity, whose info carries the worker's clock, not the server's.
        self.server_time: Callable[[], Awaitable[datetime]] | None = None
        # The policy the one-look activity runs: the real one unless a test holds it.
        self.evaluate: Callable[[EvaluateInput], Awaitable[Proposal]] = LoopActivities().evaluate

    def activities(self) -> list[Callable[..., Awaitable[Any]]]:
        """The scripted activities and the real policy, under the names a worker serves."""
        return [self.observe, self.apply, self.record, self.evaluate, self.observe_evaluate]

    @activity.defn(name="observe_evaluate")
    async def observe_evaluate(self, request: LookInput) -> LookResult:
        # The loop's own composition of the steps, over the scripted observe and record.
        return await look(request, self.observe, self.evaluate, self.record)

    @activity.defn(name="observe")
    async def observe(self, request: ObserveInput) -> Observation:
        self.observe_attempts += 1
        if self.observe_gate is not None:
            self.observing += 1
            try:
                await self.observe_gate.wait()
            finally:
                self.observing -= 1
        if self.observe_error is not None:
            raise self.observe_error
        metrics = {} if self.backlog is None else {"queue.backlog": self.backlog}
        if self.arrivals is None:
            return Observation(taken_at=datetime.now(UTC), replicas=self.replicas, metrics=metrics)
        if self.server_time is not None:
            now = await self.server_time()
        else:
            now = activity.info().current_attempt_scheduled_time
        first, last = self._clock or (now, now)
        step = 0.5
        moment = (last - first).total_seconds()
        while moment < (now - first).total_seconds():
            self._arrived += self.arrivals(moment) * step
            moment += step
        self._clock = (first, now)
        counters = {"queue.stream_last_seq": self._arrived, "queue.ack_floor": self._arrived}
        return Observation(taken_at=now, replicas=self.replicas, metrics=metrics, counters=counters)

    @activity.defn(name="apply")
    async def apply(self, request: ApplyInput) -> ApplyResult:
        self.apply_calls.append(request.target_replicas)
        if self.apply_gate is not None:
            self.applying += 1
            try:
                await self.apply_gate.wait()
            finally:
                self.applying -= 1
        if self.apply_error is not None:
            raise self.apply_error
        if self.apply_failures_left > 0:
            self.apply_failures_left -= 1
            raise ApplicationError("engine busy", type="Unavailable")
        self.replicas = request.target_replicas
        return ApplyResult(replicas=self.replicas)

    @activity.defn(name="record")
    async def record(self, request: RecordInput) -> bool:
        if self.record_error is not None:
            raise self.record_error
        # As the log reads: what the loop missed first, each decision once; another decision
        # under a key already written supersedes that line (docktor.journal).
        for decision in [*request.missed, request.decision]:
            key = (decision.workflow_id, decision.first_run_id, decision.sequence)
            same = [d for d in self.recorded if (d.workflow_id, d.first_run_id, d.sequence) == key]
            if decision in same:
                continue
            self.recorded = [d for d in self.recorded if d not in same] + [decision]
        return True


def service_spec(**overrides: object) -> ServiceSpec:
    base: dict[str, object] = {
        "name": "consumer",
        "backend": "processes",
        "command": ["python", "consumer.py"],
        "min_replicas": 1,
        "max_replicas": 5,
        "check_interval": 10,
        "scale_up_by": 2,
        "scale_down_by": 1,
        "cooldown": Cooldown(up=30, down=60),
        "rules": Rules(
            scale_up_when=[Condition(metric="queue.backlog", op=">", value=500)],
            scale_down_when=[Condition(metric="queue.backlog", op="<", value=50)],
        ),
    }
    base.update(overrides)
    return ServiceSpec.model_validate(base)


# One time-skipping server per test module, not per session: a query that the server never
# answers (one that rode on a task that continued as new) leaves its time skipping locked for
# good, and every later `env.sleep` of the session would then run in real time. query_loop
# avoids that; a server per module keeps one that slips through inside its module. A server
# starts in about a second.
@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    server = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(server)
    ) as environment:
        yield environment


async def start(
    client: Client, spec: ServiceSpec, **input_overrides: object
) -> WorkflowHandle[ServiceAutoscaler, LoopStatus]:
    fields: dict[str, object] = {
        "project": "test",
        # Built as the starter builds it: once, from the spec.
        "service": ServicePlan.from_spec(spec),
        # The scripted `record` activity keeps decisions in memory; the path is never opened.
        "journal_path": "/unused/decisions.jsonl",
        "search_attributes": False,
    }
    request = AutoscalerInput.model_validate({**fields, **input_overrides})
    return await client.start_workflow(
        ServiceAutoscaler.run,
        request,
        id=f"docktor-test-{spec.name}-{uuid.uuid4().hex[:8]}",
        task_queue=TASK_QUEUE,
    )


# A cancel is sent only when the loop's tick timer is at least this far from firing; a query,
# which is answered in milliseconds, when it is this far (in real time: skipping is locked).
TIMER_GUARD = timedelta(seconds=0.5)
# How far past a tick the clock is moved to leave it behind.
TICK_PASSED = timedelta(seconds=0.05)
QUERY_GUARD = timedelta(seconds=0.25)


class RunLook:
    """What the latest run of a loop is doing, read from its history."""

    def __init__(self, task_in_flight: bool, tick_due: timedelta | None) -> None:
        self.task_in_flight = task_in_flight
        self.tick_due = tick_due  # until the pending timer fires, by the server's clock

    def tick_within(self, guard: timedelta) -> bool:
        return self.tick_due is not None and self.tick_due <= guard


async def _look(env: WorkflowEnvironment, handle: WorkflowHandle) -> RunLook:
    due: dict[str, datetime] = {}
    task_in_flight = False
    latest = env.client.get_workflow_handle(handle.id)
    async for event in latest.fetch_history_events():
        if event.HasField("workflow_task_scheduled_event_attributes"):
            task_in_flight = True
        elif (
            event.HasField("workflow_task_completed_event_attributes")
            or event.HasField("workflow_task_failed_event_attributes")
            or event.HasField("workflow_task_timed_out_event_attributes")
        ):
            task_in_flight = False
        elif event.HasField("timer_started_event_attributes"):
            started = event.timer_started_event_attributes
            fires = event.event_time.ToDatetime(tzinfo=UTC)
            due[started.timer_id] = fires + started.start_to_fire_timeout.ToTimedelta()
        elif event.HasField("timer_fired_event_attributes"):
            due.pop(event.timer_fired_event_attributes.timer_id, None)
        elif event.HasField("timer_canceled_event_attributes"):
            due.pop(event.timer_canceled_event_attributes.timer_id, None)
    tick_due = min(due.values()) - await env.get_current_time() if due else None
    return RunLook(task_in_flight, tick_due)


async def cancel_and_wait(env: WorkflowEnvironment, handle: WorkflowHandle) -> LoopStatus:
    """Cancel the loop and wait for its final status, away from its tick timer.

    On the time-skipping server a cancel whose workflow task meets a timer that fired while
    the task was with the worker strands the run: the task cancels a timer the server no longer
    holds, the server refuses the completion ("invalid history builder state for action") and
    never sends the run another task (temporalio/sdk-java#3088). Each skip of `env.sleep`
    lands a few milliseconds before the next tick is due, which made that race common. So the
    clock is first moved past a tick that is about to fire, and the end is awaited with
    skipping locked, so no tick fires under the cancel's task. (The real server drops the fired
    timer instead: running loops are not affected.)
    """
    for _ in range(10):
        look = await _look(env, handle)
        if look.tick_due is None or not look.tick_within(TIMER_GUARD):
            break
        # Just past the tick, not a guard past it: with a 1 s interval that is the next tick.
        await env.sleep((look.tick_due + TICK_PASSED).total_seconds())
    await handle.cancel()
    with env.auto_time_skipping_disabled():
        return await _final_status(env, handle)


# How long a cancelled loop may take to close, in real seconds, and how often to look.
CLOSE_DEADLINE = 60.0
LOOK_EVERY = 0.05
RECANCEL_AFTER = 10.0


async def _final_status(env: WorkflowEnvironment, handle: WorkflowHandle) -> LoopStatus:
    """The closed loop's result, found by describing its latest run until that run closes.

    `handle.result()` long-polls for the close event of the run it follows; on a loaded machine
    the time-skipping server can miss waking that poll when a run closes just after a
    continue-as-new, and the wait outlives the run by minutes. Describing needs no wake-up.
    A cancel that met a continue-as-new can be left with the run that closed, so a run still
    open after a while is cancelled again (a loop treats a second cancel as the first).
    """
    latest = env.client.get_workflow_handle(handle.id, result_type=LoopStatus)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_DEADLINE
    recancel_at = loop.time() + RECANCEL_AFTER
    while True:
        description = await latest.describe()
        if description.status not in (
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
        ):
            closed = env.client.get_workflow_handle(
                handle.id, run_id=description.run_id, result_type=LoopStatus
            )
            return await closed.result(follow_runs=False)
        if loop.time() > deadline:
            raise AssertionError(
                f"loop {handle.id} still {description.status.name} "
                f"{CLOSE_DEADLINE:.0f}s after its cancel (run {description.run_id})"
            )
        if loop.time() > recancel_at:
            recancel_at = loop.time() + RECANCEL_AFTER
            # Refused when the run closed meanwhile: the next look finds its result.
            with contextlib.suppress(RPCError):
                await latest.cancel()
        await asyncio.sleep(LOOK_EVERY)


# A query is sent when the loop's latest run is between tasks, or after this long (real
# seconds) if it never is (a task held by a test's gate).
QUIET_DEADLINE = 3.0
QUERY_TIMEOUT = timedelta(seconds=5)
QUERY_ATTEMPTS = 6


async def _until_quiet(env: WorkflowEnvironment, handle: WorkflowHandle) -> None:
    """Wait, in real time with skipping locked, until no workflow task is due or in flight.

    A query that reaches the time-skipping server while a workflow task is in flight rides on
    that task; when the task continues as new, the query is never answered and the lock on
    time skipping it took is never released, so every later `env.sleep` runs in real time
    (a 3 s test took 5 minutes). Between tasks the query is answered on its own.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + QUIET_DEADLINE
    while loop.time() < deadline:
        look = await _look(env, handle)
        if not look.task_in_flight and not look.tick_within(QUERY_GUARD):
            return
        await asyncio.sleep(LOOK_EVERY)


async def query_loop(
    env: WorkflowEnvironment,
    handle: WorkflowHandle,
    query: Any,
    *args: Any,
    result_type: type | None = None,
) -> Any:
    """Ask the loop's latest run, between its tasks; ask again if a run that ended took it."""
    for attempt in range(1, QUERY_ATTEMPTS + 1):
        await _until_quiet(env, handle)
        try:
            return await handle.query(
                query, *args, rpc_timeout=QUERY_TIMEOUT, result_type=result_type
            )
        except RPCError as err:
            unanswered = err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)
            if not unanswered or attempt == QUERY_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def decisions_after(
    env: WorkflowEnvironment,
    handle: WorkflowHandle,
    count: int,
    step_seconds: float,
    max_steps: int = 200,
) -> list[Decision]:
    """Let workflow time pass (skipped, not slept) until the loop has made `count` decisions."""
    for _ in range(max_steps):
        decisions = await query_loop(env, handle, ServiceAutoscaler.decisions, 1000)
        if len(decisions) >= count:
            return decisions
        await env.sleep(step_seconds)
    raise AssertionError(f"fewer than {count} decisions after {max_steps} steps: {decisions}")


async def until(
    env: WorkflowEnvironment,
    predicate: Callable[[], Awaitable[bool]],
    step_seconds: float,
    max_steps: int = 200,
) -> None:
    """Let workflow time pass (skipped, not slept) until `predicate` holds."""
    for _ in range(max_steps):
        if await predicate():
            return
        await env.sleep(step_seconds)
    raise AssertionError(f"condition not met after {max_steps} steps of {step_seconds}s")
