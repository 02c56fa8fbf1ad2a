"""A manual scale that stays: the loop holds the operator's count, up and down, until the hold
ends, across continue-as-new; `resume` or another scale ends it early."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from docktor.loop.messages import LoopStatus, ManualScale
from docktor.values import Decision
from tests.workflow.conftest import (
    ScriptedWorld,
    cancel_and_wait,
    decisions_after,
    query_loop,
    service_spec,
    start,
    until,
)
from workflows import ServiceAutoscaler

TICK = 10  # check_interval, in (skipped) seconds


async def after(
    env: WorkflowEnvironment, handle: WorkflowHandle, decision: Decision
) -> list[Decision]:
    decisions = await query_loop(env, handle, ServiceAutoscaler.decisions, 1000)
    return [d for d in decisions if d.sequence > decision.sequence]


async def test_a_manual_scale_holds_both_ways_across_continue_as_new_until_it_ends(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 100  # between the thresholds
    # Cooldowns of 30 s and 60 s: without a hold, the loop would move again a minute after.
    spec = service_spec(check_interval=TICK, cooldown={"up": 30, "down": 60})
    handle = await start(env.client, spec, iterations_per_run=3)
    await decisions_after(env, handle, 1, step_seconds=TICK)

    manual = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=3, reason="sale", by="ana", hold_s=300)
    )
    assert (manual.action, manual.target_replicas) == ("manual", 3)
    assert "held by manual scale until" in manual.reason
    status: LoopStatus = await query_loop(env, handle, ServiceAutoscaler.status)
    assert status.hold is not None and status.hold.replicas == 3 and status.hold.by == "ana"
    assert status.hold.until == manual.timestamp + timedelta(seconds=300)

    # A burst: the rules want more, the hold keeps 3.
    world.backlog = 900
    await until(env, lambda: _count_after(env, handle, manual, 6), step_seconds=TICK)
    # Quiet: the rules want fewer, the hold keeps 3.
    world.backlog = 5
    await until(env, lambda: _count_after(env, handle, manual, 12), step_seconds=TICK)
    held = await after(env, handle, manual)
    assert world.replicas == 3
    assert all(d.action == "hold" and d.target_replicas == 3 for d in held), held
    assert all(
        f"held by manual scale until {status.hold.until:%H:%M:%S} UTC" in d.reason for d in held
    )
    assert any("the policy wanted scale_up to 5" in d.reason for d in held)
    assert any("the policy wanted scale_down to 2" in d.reason for d in held)
    # Continue-as-new (every 3 iterations) carried the hold.
    assert len({d.run_id for d in held}) >= 3

    # The hold ends: the loop decides again, and the quiet queue takes a replica away.
    async def scaled_down() -> bool:
        return any(d.action == "scale_down" for d in await after(env, handle, manual))

    await until(env, scaled_down, step_seconds=TICK, max_steps=60)
    first = next(d for d in await after(env, handle, manual) if d.action == "scale_down")
    assert first.timestamp >= status.hold.until
    assert "held" not in first.reason
    assert (await query_loop(env, handle, ServiceAutoscaler.status)).hold is None

    # Every run replays from its recorded history, as after a worker restart: the hold is
    # loop state rebuilt from history, not memory of the worker that took it.
    runs = {manual.run_id} | {d.run_id for d in await after(env, handle, manual)}
    await cancel_and_wait(env, handle)
    replayer = Replayer(workflows=[ServiceAutoscaler], data_converter=pydantic_data_converter)
    for run_id in runs:
        history = await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure


async def _count_after(
    env: WorkflowEnvironment, handle: WorkflowHandle, decision: Decision, count: int
) -> bool:
    return len(await after(env, handle, decision)) >= count


async def test_resume_or_a_new_scale_ends_the_hold_early(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    handle = await start(env.client, spec)
    await decisions_after(env, handle, 1, step_seconds=TICK)

    # No cooldowns, so the default hold is 0: the loop is free again at once.
    free = await handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=1))
    assert free.reason.endswith("; not held")
    assert (await query_loop(env, handle, ServiceAutoscaler.status)).hold is None

    manual = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=2, hold_s=3600)
    )
    await until(env, lambda: _count_after(env, handle, manual, 2), step_seconds=TICK)
    assert world.replicas == 2
    # Another scale replaces the hold; `resume` ends it (the loop is not paused).
    again = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=3, hold_s=3600)
    )
    assert (await query_loop(env, handle, ServiceAutoscaler.status)).hold.replicas == 3  # type: ignore[union-attr]
    resumed = await handle.execute_update(ServiceAutoscaler.resume)
    assert resumed.hold is None and not resumed.paused

    async def scaled_up() -> bool:
        return any(d.action == "scale_up" for d in await after(env, handle, again))

    await until(env, scaled_up, step_seconds=TICK)
    assert world.replicas == 5
    await cancel_and_wait(env, handle)
