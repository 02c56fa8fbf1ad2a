"""Running loops outlive releases: a loop started with another release's payloads (a field this
release does not know, optional fields it added missing) decodes and goes on, across
continue-as-new."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from docktor.loop.messages import AutoscalerInput
from docktor.plan import ServicePlan
from tests.workflow.conftest import TASK_QUEUE, ScriptedWorld, decisions_after, service_spec
from workflows import ServiceAutoscaler


def other_release_payload() -> dict[str, Any]:
    """The workflow input as JSON, as a release before or after this one might have written it."""
    request = AutoscalerInput(
        project="test",
        service=ServicePlan.from_spec(
            service_spec(check_interval=5, cooldown={"up": 0, "down": 60})
        ),
        journal_path=None,
        search_attributes=False,
        iterations_per_run=2,
    )
    payload = request.model_dump(mode="json")
    # Fields a later release added, at every level ...
    payload["priority_class"] = "gold"
    payload["service"]["warmup"] = "30s"
    payload["service"]["cooldown"]["jitter"] = 0.2
    payload["service"]["rules"]["scale_up_when"][0]["for"] = "10s"
    payload["state"]["forecast"] = {"period": 60}
    # ... and optional fields an earlier release did not have yet.
    for field in ("policy", "target", "tolerance", "rate", "behavior", "activation", "fallback"):
        del payload["service"][field]
    del payload["state"]["memory"]
    return payload


async def test_a_loop_started_by_another_release_decodes_and_continues(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900  # above the scale-up rule: every tick scales up by 2 (no up cooldown)
    handle = await env.client.start_workflow(
        "ServiceAutoscaler",
        other_release_payload(),
        id=f"docktor-test-versions-{uuid.uuid4().hex[:8]}",
        task_queue=TASK_QUEUE,
        result_type=dict,
    )
    decisions = await decisions_after(
        env, env.client.get_workflow_handle(handle.id), count=3, step_seconds=5
    )
    assert [d.action for d in decisions[:2]] == ["scale_up", "scale_up"]
    assert [d.target_replicas for d in decisions[:2]] == [3, 5]
    # Two iterations per run: the third decision was made by a continued run, which decoded
    # the state the first run handed over.
    assert len({d.run_id for d in decisions[:3]}) == 2
    status = await env.client.get_workflow_handle(handle.id).query(ServiceAutoscaler.status)
    assert status.replicas == 5
    await handle.cancel()
