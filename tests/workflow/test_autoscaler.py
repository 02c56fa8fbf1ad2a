"""The loop's behaviour over durable time: scaling, cooldowns, failures, cancellation."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

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


async def test_burst_scales_up_then_quiet_scales_down(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 812
    handle = await start(env.client, service_spec(cooldown={"up": 0, "down": 0}))
    first = await decisions_after(env, handle, 1, step_seconds=1)
    assert first[0].action == "scale_up"
    assert (first[0].current_replicas, first[0].target_replicas) == (1, 3)
    assert first[0].matched_rules == ["queue.backlog 812 > 500"]
    assert first[0].observations["queue.backlog"] == 812

    upward = await decisions_after(env, handle, 3, step_seconds=10)
    assert [d.target_replicas for d in upward[:3]] == [3, 5, 5]  # clamped at max_replicas
    assert upward[2].action == "hold" and "max_replicas" in upward[2].reason

    world.backlog = 10
    seen = len(upward)
    downward = await decisions_after(env, handle, seen + 4, step_seconds=10)
    tail = downward[seen:]
    assert [d.action for d in tail[:4]] == ["scale_down"] * 4
    assert world.replicas == 1
    status = await cancel_and_wait(env, handle)
    assert status.replicas == 1


async def test_cooldown_holds_second_scale_up_in_durable_time(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900
    spec = service_spec(max_replicas=9, check_interval=10, cooldown={"up": 30, "down": 60})
    handle = await start(env.client, spec)
    decisions = await decisions_after(env, handle, 5, step_seconds=10)
    actions = [d.action for d in decisions[:5]]
    # t=0 scale up; t=10, t=20 inside the 30 s cooldown; t=30 scale up again.
    assert actions[:4] == ["scale_up", "hold", "hold", "scale_up"]
    assert "scale-up cooldown" in decisions[1].reason
    gap = decisions[3].timestamp - decisions[0].timestamp
    assert gap.total_seconds() >= 30
    await cancel_and_wait(env, handle)


async def test_unavailable_metrics_give_a_recorded_hold_and_the_loop_goes_on(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.observe_error = ApplicationError("nats://127.0.0.1:1: cannot connect", type="Unavailable")
    handle = await start(env.client, service_spec())
    decisions = await decisions_after(env, handle, 1, step_seconds=5)
    assert decisions[0].action == "hold"
    assert "cannot connect" in decisions[0].reason
    assert world.observe_attempts == 3  # retried per the observe retry policy, then recorded

    world.observe_error = None
    world.backlog = 900
    later = await decisions_after(env, handle, 2, step_seconds=10)
    assert later[1].action == "scale_up"
    await cancel_and_wait(env, handle)


async def test_config_errors_are_not_retried(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.observe_error = ApplicationError(
        "stream 'JOBS' not found", type="ConfigError", non_retryable=True
    )
    handle = await start(env.client, service_spec())
    decisions = await decisions_after(env, handle, 1, step_seconds=5)
    assert world.observe_attempts == 1
    assert "stream 'JOBS' not found" in decisions[0].reason
    await cancel_and_wait(env, handle)


async def test_a_huge_hostile_failure_text_gives_short_reasons_and_the_loop_goes_on(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    # Whatever an activity's failure carries (a worker of another release, a library's own
    # text) is quoted in the reason as one short printable line: 50 kept decisions of 900 KB
    # each would exceed Temporal's payload limit and stop the loop.
    hostile = "\x1b[2J\x1b]0;pwned\x07line one\nline two\u202e " + "x" * 900_000
    world.observe_error = ApplicationError(hostile, type="ConfigError", non_retryable=True)
    handle = await start(env.client, service_spec())
    decisions = await decisions_after(env, handle, 4, step_seconds=10)
    for decision in decisions:
        assert decision.action == "hold" and len(decision.reason) <= 1000
        assert decision.reason.isprintable() and "line one line two" in decision.reason
    await cancel_and_wait(env, handle)


async def test_apply_is_retried_and_a_final_failure_is_recorded(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900
    world.apply_failures_left = 2
    handle = await start(env.client, service_spec())
    decisions = await decisions_after(env, handle, 1, step_seconds=5)
    assert decisions[0].action == "scale_up" and world.replicas == 3
    assert world.apply_calls == [3, 3, 3]

    world.apply_error = ApplicationError("no such service", type="ConfigError", non_retryable=True)
    decisions = await decisions_after(env, handle, 5, step_seconds=10)
    failed = [d for d in decisions if "failed" in d.reason]
    assert failed and failed[0].action == "hold"
    assert failed[0].target_replicas == failed[0].current_replicas == 3
    await cancel_and_wait(env, handle)


async def test_no_metrics_holds_and_never_scales_down(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.replicas = 4
    world.backlog = None
    handle = await start(env.client, service_spec())
    decisions = await decisions_after(env, handle, 3, step_seconds=10)
    assert {d.action for d in decisions} == {"hold"}
    assert world.replicas == 4 and world.apply_calls == []
    assert "no metrics" in decisions[0].reason
    await cancel_and_wait(env, handle)


async def test_cancellation_records_a_final_stopped_decision(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    handle = await start(env.client, service_spec())
    await decisions_after(env, handle, 2, step_seconds=10)
    status = await cancel_and_wait(env, handle)
    assert status.last_decision is not None
    assert status.last_decision.action == "stopped"
    assert world.recorded[-1].action == "stopped"
    description = await handle.describe()
    assert description.status is not None and description.status.name == "COMPLETED"


async def test_status_query_reports_bounds_and_cooldown(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900
    handle = await start(env.client, service_spec(cooldown={"up": 300, "down": 600}))
    await decisions_after(env, handle, 1, step_seconds=1)
    status = await query_loop(env, handle, ServiceAutoscaler.status)
    assert (status.min_replicas, status.max_replicas, status.replicas) == (1, 5, 3)
    assert status.cooldown_up_until is not None and status.cooldown_down_until is not None
    assert status.last_decision is not None and status.last_decision.action == "scale_up"
    await cancel_and_wait(env, handle)


async def test_journal_gets_every_decision(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    handle = await start(env.client, service_spec())
    decisions = await decisions_after(env, handle, 3, step_seconds=10)
    await cancel_and_wait(env, handle)
    recorded = [d.iteration for d in world.recorded if d.workflow_id == handle.id]
    assert recorded[: len(decisions)] == [d.iteration for d in decisions]


async def test_the_policy_memory_carries_from_iteration_to_iteration(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    # The target policy: a burst's backlog sizes the pool; the scale-down window (kept in the
    # loop's state between iterations) keeps that size after the backlog is gone.
    spec = service_spec(
        rules={},
        target={"queue.backlog_per_replica": 100},
        policy="target",
        queue={"stream": "JOBS", "consumer": "workers"},
        rate={"enabled": False},  # the scripted queue has no counters to derive rates from
        behavior={"down": {"window": 60}},
        cooldown={"up": 0, "down": 0},
        check_interval=10,
    )
    world.backlog = 450
    handle = await start(env.client, spec)
    first = await decisions_after(env, handle, 1, step_seconds=1)
    assert (first[0].action, first[0].target_replicas) == ("scale_up", 5)
    world.backlog = 0
    decisions = await decisions_after(env, handle, 8, step_seconds=10)
    # Held at 5 for the 60 s window, then down to the floor in one step.
    held = [d for d in decisions[1:] if d.target_replicas == 5]
    assert len(held) >= 4, [(d.action, d.target_replicas, d.reason) for d in decisions]
    assert all("scale-down window keeps 5" in d.reason for d in held), [d.reason for d in held]
    assert decisions[-1].target_replicas < 5
    await cancel_and_wait(env, handle)


async def test_a_learnt_rhythm_pre_scales_before_the_burst_and_says_so(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    # 100 msg/s with 500 msg/s for the last 10 s of every 60 s, 50 msg/s per replica: after a
    # few bursts the loop scales up *before* a burst, and that decision is marked predicted.
    world.backlog = 0.0
    world.arrivals = lambda t: 500.0 if t % 60 >= 50 else 100.0
    spec = service_spec(
        rules={},
        policy="target",
        queue={"stream": "JOBS", "consumer": "workers"},
        rate={"per_replica": 50},
        predict={"enabled": True},
        min_replicas=1,
        max_replicas=12,
        check_interval=5,
        cooldown={"up": 0, "down": 0},
    )
    handle = await start(env.client, spec)

    def ahead_of_the_burst(decision: Decision) -> bool:
        # Marked predicted, and taken while the load was still at the baseline.
        return decision.metadata.predicted and decision.observations["queue.rate_in"] < 200

    async def pre_scaled() -> bool:
        recent = await query_loop(env, handle, ServiceAutoscaler.decisions, 50)
        return any(ahead_of_the_burst(d) for d in recent)

    # Within a few bursts; the loop keeps its last 50 decisions, so it is looked for as it comes.
    await until(env, pre_scaled, step_seconds=5, max_steps=120)
    decisions = await query_loop(env, handle, ServiceAutoscaler.decisions, 50)
    first = next(d for d in decisions if ahead_of_the_burst(d))
    assert first.action == "scale_up"
    assert "pre-scaling for the burst expected at" in first.reason
    # Nothing the loop learnt moves a decision outside the bounds.
    assert all(1 <= d.target_replicas <= 12 for d in decisions)
    await cancel_and_wait(env, handle)
