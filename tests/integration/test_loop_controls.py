"""Operators step in: pause/resume, manual scale, spec updates, nudges and manual approval.

These run on the real Temporal dev server rather than the time-skipping one: the time-skipping
server answers a refused update only after a long internal timeout. Intervals are short, and
every wait polls a condition with a deadline. The scripted world and helpers are the workflow
tests' own (tests/workflow/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from docktor.dev.embedded import EmbeddedTemporal
from docktor.loop.messages import ManualScale, PauseRequest, ResumeRequest, SpecUpdate, Verdict
from docktor.plan import LLMPlan, ServicePlan
from docktor.values import Decision
from tests.workflow.conftest import (
    ScriptedWorld,
    decisions_after,
    service_spec,
    start,
    until,
)
from workflows import ServiceAutoscaler

TICK = 0.5  # check_interval of these loops, in real seconds
POLL = 0.1


@pytest.fixture(scope="module")
async def env(temporal_dev: EmbeddedTemporal) -> AsyncIterator[WorkflowEnvironment]:
    client = await Client.connect(temporal_dev.address, data_converter=pydantic_data_converter)
    yield WorkflowEnvironment.from_client(client)


async def refusal(update: Awaitable[object]) -> str:
    """Why the workflow refused an update (its validator's message)."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await update
    return str(refused.value.cause)


async def test_paused_loop_observes_and_records_but_applies_nothing(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900
    handle = await start(
        env.client, service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    )
    await decisions_after(env, handle, 1, step_seconds=POLL)
    status = await handle.execute_update(
        ServiceAutoscaler.pause, PauseRequest(reason="deploy", by="ana")
    )
    assert status.paused and status.pause_reason == "deploy" and status.paused_by == "ana"
    assert "already paused" in await refusal(
        handle.execute_update(ServiceAutoscaler.pause, PauseRequest())
    )

    applied = list(world.apply_calls)
    # Counted from the pause: with 0.5 s ticks, more than one iteration may come before it.
    assert status.last_decision is not None
    before = status.last_decision.sequence
    decisions = await decisions_after(env, handle, before + 5, step_seconds=POLL)
    paused = [d for d in decisions if d.sequence > before][:5]
    assert len(paused) == 5
    assert all(d.action == "hold" and "paused (deploy)" in d.reason for d in paused)
    assert world.apply_calls == applied

    # The operator still can scale a paused loop, and the paused loop keeps that count.
    manual = await handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=2))
    assert manual.action == "manual" and manual.target_replicas == 2
    await decisions_after(env, handle, manual.sequence + 4, step_seconds=POLL)
    assert world.replicas == 2

    await handle.execute_update(ServiceAutoscaler.resume)
    assert "not paused" in await refusal(handle.execute_update(ServiceAutoscaler.resume))
    await handle.cancel()
    await handle.result()  # stopped for good: no later test's worker serves it


async def test_manual_scale_is_validated_recorded_and_starts_the_cooldown(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    # Quiet from the start: at 1 replica (the minimum) nothing to do; at 4 after the manual
    # scale it would scale down, but the manual scale started the cooldown.
    world.backlog = 5
    handle = await start(
        env.client, service_spec(check_interval=TICK, cooldown={"up": 60, "down": 60})
    )
    await decisions_after(env, handle, 1, step_seconds=POLL)
    refused = await refusal(
        handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=9))
    )
    assert "outside [1, 5]" in refused

    decision = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=4, reason="sale", by="ana")
    )
    assert (decision.action, decision.current_replicas, decision.target_replicas) == (
        "manual",
        1,
        4,
    )
    assert "ana" in decision.reason and "sale" in decision.reason
    assert world.replicas == 4

    decisions = await decisions_after(env, handle, decision.sequence + 2, step_seconds=POLL)
    # An iteration that overlapped the manual scale records that the operator's count stands.
    after = [
        d for d in decisions if d.sequence > decision.sequence and "count stands" not in d.reason
    ]
    assert after and after[0].action == "hold" and "cooldown" in after[0].reason
    await handle.cancel()
    await handle.result()  # stopped for good: no later test's worker serves it


async def test_update_spec_takes_new_bounds_without_a_restart(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900
    handle = await start(
        env.client, service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    )
    await decisions_after(env, handle, 3, step_seconds=POLL)
    assert world.replicas == 5
    status = await handle.execute_update(
        ServiceAutoscaler.update_spec,
        SpecUpdate(
            service=ServicePlan.from_spec(
                service_spec(check_interval=TICK, max_replicas=8, cooldown={"up": 0, "down": 0})
            ),
            llm=LLMPlan.none(),
        ),
    )
    assert status.max_replicas == 8
    assert "scales 'consumer'" in await refusal(
        handle.execute_update(
            ServiceAutoscaler.update_spec,
            SpecUpdate(
                service=ServicePlan.from_spec(service_spec(name="other")), llm=LLMPlan.none()
            ),
        )
    )

    async def at_new_max() -> bool:
        return world.replicas == 8

    await until(env, at_new_max, step_seconds=POLL, max_steps=100)
    await handle.cancel()
    await handle.result()  # stopped for good: no later test's worker serves it


async def test_nudge_evaluates_before_the_next_tick(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    handle = await start(env.client, service_spec(check_interval=3600))
    first = await decisions_after(env, handle, 1, step_seconds=POLL)
    await handle.signal(ServiceAutoscaler.nudge)
    both = await decisions_after(env, handle, 2, step_seconds=POLL, max_steps=50)
    assert (both[1].timestamp - first[0].timestamp).total_seconds() < 3600
    await handle.cancel()
    await handle.result()  # stopped for good: no later test's worker serves it


async def test_manual_approval_waits_then_applies_rejects_or_expires(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 100  # nothing to approve yet: the loop holds
    spec = service_spec(
        check_interval=TICK, approval="manual", approval_timeout=4, cooldown={"up": 0, "down": 0}
    )
    handle = await start(env.client, spec)
    await decisions_after(env, handle, 1, step_seconds=POLL)
    assert "awaiting approval" in await refusal(
        handle.execute_update(ServiceAutoscaler.approve, Verdict())
    )
    world.backlog = 900

    async def pending() -> bool:
        # A decision awaiting a verdict (not the approved one, until the loop lets it go).
        status = await handle.query(ServiceAutoscaler.status)
        return status.pending_approval is not None and status.pending_approval.verdict is None

    await until(env, pending, step_seconds=POLL)
    status = await handle.query(ServiceAutoscaler.status)
    assert status.pending_approval is not None and status.pending_approval.target_replicas == 3
    assert world.apply_calls == []
    # The holds before; none is made while a decision waits for its verdict.
    held = len(await handle.query(ServiceAutoscaler.decisions, 100))

    await handle.execute_update(ServiceAutoscaler.approve, Verdict(by="ana", reason="go"))
    approved = await decisions_after(env, handle, held + 1, step_seconds=POLL)
    assert approved[held].action == "scale_up" and "approved by ana: go" in approved[held].reason
    assert world.replicas == 3

    await until(env, pending, step_seconds=POLL)
    await handle.execute_update(ServiceAutoscaler.reject, Verdict(by="bo", reason="no budget"))
    rejected = await decisions_after(env, handle, held + 2, step_seconds=POLL)
    assert rejected[held + 1].action == "hold"
    assert "rejected by bo: no budget" in rejected[held + 1].reason
    assert world.replicas == 3

    # Nobody answers: after approval_timeout of durable time the decision lapses.
    expired = await decisions_after(env, handle, held + 3, step_seconds=POLL)
    assert expired[held + 2].action == "expired"
    assert world.replicas == 3
    await handle.cancel()
    await handle.result()  # stopped for good: no later test's worker serves it


async def test_a_control_past_its_void_time_is_refused_and_changes_nothing(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    # What a loop sees when a worker returns to updates that waited in the server after their
    # sender gave up: a void_after in the past. Each is refused before anything else is checked.
    handle = await start(env.client, service_spec(check_interval=TICK))
    await decisions_after(env, handle, 1, step_seconds=POLL)
    gone = datetime.now(UTC) - timedelta(seconds=5)
    spec = SpecUpdate(
        service=ServicePlan.from_spec(service_spec(check_interval=TICK, max_replicas=8)),
        llm=LLMPlan.none(),
        void_after=gone,
    )
    stale: list[Awaitable[object]] = [
        handle.execute_update(ServiceAutoscaler.pause, PauseRequest(by="ana", void_after=gone)),
        handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=3, void_after=gone)),
        handle.execute_update(ServiceAutoscaler.approve, Verdict(void_after=gone)),
        handle.execute_update(ServiceAutoscaler.reject, Verdict(void_after=gone)),
        handle.execute_update(ServiceAutoscaler.resume, ResumeRequest(void_after=gone)),
        handle.execute_update(ServiceAutoscaler.update_spec, spec),
    ]
    for update in stale:
        why = await refusal(update)
        assert "expired at" in why and "nothing was done" in why, why
    status = await handle.query(ServiceAutoscaler.status)
    assert (status.paused, status.max_replicas, status.hold) == (False, 5, None)
    assert world.replicas == 1 and world.apply_calls == []

    # In time, each is taken; the manual scale answers with the hold it keeps, as data.
    soon = datetime.now(UTC) + timedelta(seconds=30)
    paused = await handle.execute_update(
        ServiceAutoscaler.pause, PauseRequest(by="ana", void_after=soon)
    )
    assert paused.paused
    resumed = await handle.execute_update(ServiceAutoscaler.resume, ResumeRequest(void_after=soon))
    assert not resumed.paused
    manual = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=3, hold_s=60, by="ana", void_after=soon)
    )
    assert manual.target_replicas == 3 and world.replicas == 3
    assert manual.hold is not None and (manual.hold.replicas, manual.hold.by) == (3, "ana")
    unheld = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=2, hold_s=0, void_after=soon)
    )
    assert unheld.hold is None and "hold" in unheld.model_fields_set
    await handle.cancel()
    await handle.result()  # stopped for good: no later test's worker serves it


# ---- cancellation while a scale is in flight -------------------------------------------------


async def cancel_taken(handle: WorkflowHandle) -> bool:
    """The worker has handled the cancel request: a workflow task completed after it."""
    events = [event.event_type async for event in handle.fetch_history_events()]
    requested = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
    if requested not in events:
        return False
    after = events[events.index(requested) :]
    return EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after


def recorded(world: ScriptedWorld, handle: WorkflowHandle) -> list[tuple[str, int, int]]:
    """The loop's decisions as its record activity got them: (action, from, to)."""
    mine: list[Decision] = [d for d in world.recorded if d.workflow_id == handle.id]
    return [(d.action, d.current_replicas, d.target_replicas) for d in mine]


async def test_cancel_during_a_manual_scale_waits_for_it_and_records_it(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    handle = await start(env.client, service_spec(check_interval=TICK))
    await decisions_after(env, handle, 1, step_seconds=POLL)
    world.apply_gate = asyncio.Event()
    update = await handle.start_update(
        ServiceAutoscaler.scale_to,
        ManualScale(replicas=4, reason="sale", by="ana"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )

    async def scaling() -> bool:
        return world.applying > 0

    await until(env, scaling, step_seconds=POLL)
    await handle.cancel()
    await until(env, lambda: cancel_taken(handle), step_seconds=POLL)
    # While it stops, a stopping loop takes no new scale.
    assert "is stopping" in await refusal(
        handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=2))
    )
    world.apply_gate.set()

    # The operator is told what happened: the scale went through.
    manual = await asyncio.wait_for(update.result(), 30)
    assert (manual.action, manual.current_replicas, manual.target_replicas) == ("manual", 1, 4)
    final = await asyncio.wait_for(handle.result(), 30)
    assert final.replicas == 4 == world.replicas
    assert recorded(world, handle)[-2:] == [("manual", 1, 4), ("stopped", 4, 4)]


async def test_cancel_during_the_loops_own_scale_records_the_scale_then_stopped(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900
    world.apply_gate = asyncio.Event()
    handle = await start(env.client, service_spec(check_interval=TICK))

    async def scaling() -> bool:
        return world.applying > 0

    await until(env, scaling, step_seconds=POLL)
    await handle.cancel()
    await until(env, lambda: cancel_taken(handle), step_seconds=POLL)
    world.apply_gate.set()

    final = await asyncio.wait_for(handle.result(), 30)
    assert final.replicas == 3 == world.replicas
    assert recorded(world, handle) == [("scale_up", 1, 3), ("stopped", 3, 3)]
    decisions = await handle.query(ServiceAutoscaler.decisions, 10)
    assert [d.sequence for d in decisions] == [1, 2]
