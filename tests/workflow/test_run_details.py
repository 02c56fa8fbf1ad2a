"""What the Web UI shows of a loop on its latest run's page, without a query of docktor's: the
current details (the SDK's workflow metadata query, which the UI calls) hold a table of the
loop's recent decisions, also on a run that continued as new and has decided nothing yet."""

from __future__ import annotations

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.workflow.conftest import (
    ScriptedWorld,
    cancel_and_wait,
    decisions_after,
    query_loop,
    service_spec,
    start,
)

METADATA_QUERY = "__temporal_workflow_metadata"


async def test_the_latest_runs_details_list_the_decisions_before_continue_as_new(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900  # up at every iteration: 1 -> 3 -> 5, then held at max
    handle = await start(
        env.client, service_spec(check_interval=10, cooldown={"up": 0}), iterations_per_run=2
    )
    decisions = await decisions_after(env, handle, 5, step_seconds=10)
    assert len({d.run_id for d in decisions}) >= 3  # it continued as new, twice or more
    metadata = await query_loop(env, handle, METADATA_QUERY, result_type=WorkflowMetadata)
    details = metadata.current_details
    assert details.startswith("**Recent decisions**")
    first = decisions[0]
    # The first decision, made two runs ago, is a row of the latest run's table.
    assert f"| {first.timestamp:%H:%M:%S} | scale_up | 1 → 3 | queue.backlog 900 > 500 |" in details
    assert "| hold | 5 → 5 |" in details
    await cancel_and_wait(env, handle)
