"""Updates with invalid payloads are refused by the loop's validators, and the loop goes on.

A real loop on the Temporal dev server (the scripted world and helpers of
tests/workflow/conftest.py, as tests/integration/test_loop_controls.py drives them) is sent every
kind of bad update: out-of-bounds and wrongly typed `scale_to`s (also as raw JSON sent by the
handler's name, as another client or `temporal workflow update` could), a second `pause`, an
`approve`/`reject` with nothing pending, an `update_spec` for another service or one the config
would refuse, over-long or control-character reasons. Each must be refused with a reason, none
may reach the scaler, the workflow must never fail a task over them, and it must keep deciding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from docktor import names
from docktor.dev.embedded import EmbeddedTemporal
from docktor.loop.messages import ManualScale, PauseRequest, SpecUpdate, Verdict
from docktor.plan import LLMPlan, ServicePlan
from tests.workflow.conftest import ScriptedWorld, decisions_after, service_spec, start
from workflows import ServiceAutoscaler

pytestmark = pytest.mark.integration

TICK = 0.5
POLL = 0.1
NONE = LLMPlan.none()


@pytest.fixture(scope="module")
async def env(temporal_dev: EmbeddedTemporal) -> AsyncIterator[WorkflowEnvironment]:
    client = await Client.connect(temporal_dev.address, data_converter=pydantic_data_converter)
    yield WorkflowEnvironment.from_client(client)


def plan(**overrides: object) -> ServicePlan:
    """A plan as `update_spec` carries it; built without the spec's checks, as another client
    (or an older release) could send it."""
    return ServicePlan.model_validate(
        {**ServicePlan.from_spec(service_spec()).model_dump(), **overrides}
    )


async def refusal(update: Awaitable[object]) -> str:
    """Why the update was refused; fails the test if it was accepted."""
    try:
        accepted = await update
    except WorkflowUpdateFailedError as refused:
        return str(refused.cause)
    except RPCError as refused:  # e.g. no handler of that name: the server says so
        return str(refused)
    raise AssertionError(f"accepted: {accepted!r}")


def raw(handle: WorkflowHandle, name: str, *args: Any) -> Awaitable[object]:
    """An update sent by name with whatever JSON the caller likes, not docktor's models."""
    return handle.execute_update(name, args=list(args), result_type=dict)


async def task_failures(handle: WorkflowHandle) -> list[str]:
    return [
        str(event.workflow_task_failed_event_attributes.failure.message)
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def test_invalid_updates_are_refused_and_the_loop_keeps_deciding(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 100  # between the rules' thresholds: the loop holds at 1
    handle = await start(
        env.client, service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    )
    before = await decisions_after(env, handle, 1, step_seconds=POLL)
    scale = names.SCALE_TO

    refused = {
        # Out of bounds [1, 5], with the models...
        "too many": await refusal(
            handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=6))
        ),
        "negative": await refusal(
            handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=-1))
        ),
        "enormous": await refusal(raw(handle, scale, {"replicas": 10**30})),
        # ...and wrongly typed, as raw JSON by the handler's name.
        "string": await refusal(raw(handle, scale, {"replicas": "3"})),
        "boolean": await refusal(raw(handle, scale, {"replicas": True})),
        "fraction": await refusal(raw(handle, scale, {"replicas": 2.5})),
        "float": await refusal(raw(handle, scale, {"replicas": 3.0})),
        "null": await refusal(raw(handle, scale, {"replicas": None})),
        "missing": await refusal(raw(handle, scale, {})),
        "not an object": await refusal(raw(handle, scale, [3])),
        "bare number": await refusal(raw(handle, scale, 3)),
        "reason of a wrong type": await refusal(raw(handle, scale, {"replicas": 2, "reason": 7})),
        "reason too long": await refusal(
            handle.execute_update(
                ServiceAutoscaler.scale_to, ManualScale(replicas=2, reason="x" * 10_000)
            )
        ),
        "terminal escapes": await refusal(
            handle.execute_update(
                ServiceAutoscaler.scale_to, ManualScale(replicas=2, by="\x1b]0;pwned\x07")
            )
        ),
        # A hold no clock can keep, or of a wrong type.
        "negative hold": await refusal(
            handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=2, hold_s=-1))
        ),
        "endless hold": await refusal(raw(handle, scale, {"replicas": 2, "hold_s": 1e300})),
        "hold as text": await refusal(raw(handle, scale, {"replicas": 2, "hold_s": "10m"})),
        # Nothing awaits approval; not paused.
        "approve": await refusal(handle.execute_update(ServiceAutoscaler.approve, Verdict())),
        "reject": await refusal(handle.execute_update(ServiceAutoscaler.reject, Verdict())),
        "resume": await refusal(handle.execute_update(ServiceAutoscaler.resume)),
        "approve raw": await refusal(raw(handle, names.APPROVE, {"by": ["ana"]})),
        # A spec for another service, a spec the config would refuse, a malformed spec.
        "other service": await refusal(
            handle.execute_update(
                ServiceAutoscaler.update_spec,
                SpecUpdate(service=plan(name="other"), llm=NONE),
            )
        ),
        "timer overflow": await refusal(
            handle.execute_update(
                ServiceAutoscaler.update_spec,
                SpecUpdate(service=plan(check_interval=1e12), llm=NONE),
            )
        ),
        "malformed spec": await refusal(
            raw(
                handle,
                names.UPDATE_SPEC,
                {"service": {"name": "consumer", "max_replicas": "many"}, "llm": {}},
            )
        ),
        "min above max": await refusal(
            raw(
                handle,
                names.UPDATE_SPEC,
                {"service": {"name": "consumer", "min_replicas": 9, "max_replicas": 2}},
            )
        ),
        "no such update": await refusal(raw(handle, "scale", {"replicas": 2})),
    }
    # A pause is taken once; the second is refused, and so is a pause with a bad reason.
    await handle.execute_update(ServiceAutoscaler.pause, PauseRequest(reason="deploy"))
    refused["pause twice"] = await refusal(
        handle.execute_update(ServiceAutoscaler.pause, PauseRequest())
    )
    await handle.execute_update(ServiceAutoscaler.resume)
    refused["pause reason\\n"] = await refusal(
        handle.execute_update(ServiceAutoscaler.pause, PauseRequest(reason="a\nb"))
    )
    # A signal with arguments nudge does not take is dropped, not fatal.
    await handle.signal(names.NUDGE, args=["junk", {"x": 1}])

    for case, why in refused.items():
        assert why.strip(), f"{case}: refused without a reason"
    assert "outside [1, 5]" in refused["too many"] and "outside [1, 5]" in refused["negative"]
    assert "already paused" in refused["pause twice"]
    assert "awaiting approval" in refused["approve"] and "not paused" in refused["resume"]
    assert "scales 'consumer', not 'other'" in refused["other service"]
    assert "check_interval" in refused["timer overflow"]
    assert "reason" in refused["reason too long"] and "by" in refused["terminal escapes"]
    assert "hold must be a duration of 0 or more" in refused["negative hold"]
    assert "hold must be at most 366 days" in refused["endless hold"]

    # None of it reached the scaler; the loop is running, has never failed a workflow task,
    # and goes on deciding (holds at 1) after all of it.
    assert world.apply_calls == [] and world.replicas == 1
    after = await decisions_after(env, handle, len(before) + 3, step_seconds=POLL)
    assert all(d.action == "hold" for d in after), [(d.action, d.reason) for d in after]
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert await task_failures(handle) == []

    # And a valid update still works.
    manual = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=2, reason="ok", by="ana")
    )
    assert (manual.action, manual.target_replicas, world.replicas) == ("manual", 2, 2)
    await handle.cancel()
    await handle.result()
