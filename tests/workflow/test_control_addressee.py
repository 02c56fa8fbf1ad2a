"""A control names the loop it is meant for (its client's project and service); the loop
refuses one that names another, and accepts one that names none (an older client)."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from docktor.loop.messages import (
    LoopStatus,
    ManualScale,
    PauseRequest,
    ResumeRequest,
    SpecUpdate,
    Verdict,
)
from docktor.plan import LLMPlan, ServicePlan
from tests.workflow.conftest import (
    ScriptedWorld,
    cancel_and_wait,
    query_loop,
    service_spec,
    start,
)
from workflows import ServiceAutoscaler

# The loop the fixtures start: project "test", service "consumer".
OTHER_SERVICE = {"project": "test", "service": "b-consumer"}
OTHER_PROJECT = {"project": "test-b", "service": "consumer"}


def controls(names: dict[str, Any]) -> list[tuple[Any, object]]:
    """Every update an operator sends, addressed to `names`."""
    return [
        (ServiceAutoscaler.pause, PauseRequest(reason="deploy", **names)),
        (ServiceAutoscaler.resume, ResumeRequest(**names)),
        (ServiceAutoscaler.scale_to, ManualScale(replicas=3, **names)),
        (ServiceAutoscaler.approve, Verdict(**names)),
        (ServiceAutoscaler.reject, Verdict(**names)),
    ]


async def refusal(handle: WorkflowHandle[Any, Any], update: Any, request: object) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(update, request)
    cause = refused.value.cause
    return getattr(cause, "message", str(cause))


@pytest.mark.parametrize(
    ("names", "why"),
    [
        (OTHER_SERVICE, "this loop scales 'consumer', not 'b-consumer'"),
        (OTHER_PROJECT, "this loop belongs to project 'test', not 'test-b'"),
    ],
)
async def test_a_control_for_another_loop_is_refused_and_changes_nothing(
    env: WorkflowEnvironment,
    world: ScriptedWorld,
    worker: Worker,
    names: dict[str, str],
    why: str,
) -> None:
    handle = await start(env.client, service_spec())
    try:
        # Queries between the loop's tasks (query_loop): on the time-skipping server one that
        # rides on a task that continues as new is never answered and leaves skipping locked.
        before = await query_loop(env, handle, ServiceAutoscaler.status)
        for update, request in controls(names):
            assert await refusal(handle, update, request) == why
        plan = ServicePlan.from_spec(service_spec(name=names["service"], max_replicas=9))
        change = SpecUpdate(service=plan, llm=LLMPlan.none(), project=names["project"])
        assert "not" in await refusal(handle, ServiceAutoscaler.update_spec, change)
        after: LoopStatus = await query_loop(env, handle, ServiceAutoscaler.status)
        assert not after.paused
        assert after.max_replicas == before.max_replicas == 5
        assert 3 not in world.apply_calls
    finally:
        await cancel_and_wait(env, handle)


async def test_a_control_naming_this_loop_or_none_is_carried_out(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    handle = await start(env.client, service_spec())
    try:
        mine = {"project": "test", "service": "consumer"}
        for names in (mine, {}):
            paused = await handle.execute_update(
                ServiceAutoscaler.pause, PauseRequest(reason="deploy", **names)
            )
            assert paused.paused
            resumed = await handle.execute_update(ServiceAutoscaler.resume, ResumeRequest(**names))
            assert not resumed.paused
        scaled = await handle.execute_update(
            ServiceAutoscaler.scale_to, ManualScale(replicas=3, **mine)
        )
        assert scaled.target_replicas == 3
        plan = ServicePlan.from_spec(service_spec(max_replicas=9))
        for project in ("test", None):
            status = await handle.execute_update(
                ServiceAutoscaler.update_spec,
                SpecUpdate(service=plan, llm=LLMPlan.none(), project=project),
            )
            assert status.max_replicas == 9
    finally:
        await cancel_and_wait(env, handle)
