"""A loop that runs for thousands of iterations keeps each run's history short and carries its
recent decisions and cooldowns across continue-as-new."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from docktor.model import DECISION_RING
from tests.workflow.conftest import ScriptedWorld, service_spec, start
from workflows import ServiceAutoscaler

ITERATIONS = 2000
PER_RUN = 100


async def test_thousands_of_iterations_stay_bounded(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 100  # between the thresholds: hold every time
    handle = await start(env.client, service_spec(check_interval=5), iterations_per_run=PER_RUN)
    for _ in range(ITERATIONS // 10):
        status = await handle.query(ServiceAutoscaler.status)
        if status.iteration >= ITERATIONS:
            break
        await env.sleep(5 * 50)
    status = await handle.query(ServiceAutoscaler.status)
    assert status.iteration >= ITERATIONS

    description = await handle.describe()
    assert description.run_id != handle.first_execution_run_id
    history = await handle.fetch_history()
    # One run holds at most PER_RUN iterations of a handful of events each.
    assert len(history.events) < PER_RUN * 15

    decisions = await handle.query(ServiceAutoscaler.decisions, 1000)
    assert len(decisions) == DECISION_RING
    iterations = [d.iteration for d in decisions]
    assert iterations == sorted(iterations)
    assert iterations[-1] == status.iteration
    # The ring spans runs: it holds decisions made before the last continue-as-new.
    assert len({d.run_id for d in decisions}) >= 1
    assert iterations[0] < status.iteration - (status.iteration % PER_RUN) or PER_RUN > 50
    await handle.cancel()
    await handle.result()
