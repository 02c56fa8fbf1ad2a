"""A hold that changes nothing costs one workflow task and one local activity: the timer
fires, one local activity observes, evaluates and writes the hold's line, the next timer starts.
No activity task, no memo or search-attribute upsert. On the dev server: the time-skipping
server adds workflow tasks of its own while it skips time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from docktor.dev.embedded import EmbeddedTemporal
from tests.workflow.conftest import ScriptedWorld, service_spec, start, until

HOLD = [
    EventType.EVENT_TYPE_TIMER_FIRED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_MARKER_RECORDED,  # observe, evaluate and the JSONL line
    EventType.EVENT_TYPE_TIMER_STARTED,
]


@pytest.fixture(scope="module")
async def env(temporal_dev: EmbeddedTemporal) -> AsyncIterator[WorkflowEnvironment]:
    client = await Client.connect(temporal_dev.address, data_converter=pydantic_data_converter)
    yield WorkflowEnvironment.from_client(client)


async def test_a_hold_is_one_workflow_task_and_six_events(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 100  # between the thresholds: hold every time
    handle = await start(env.client, service_spec(check_interval=0.5))

    async def five_recorded() -> bool:
        return len(world.recorded) >= 5

    await until(env, five_recorded, step_seconds=0.1)
    history = await handle.fetch_history()
    await handle.cancel()
    await handle.result()

    iterations: list[list[int]] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            iterations.append([])
        if iterations:
            iterations[-1].append(event.event_type)
    # The last one may be cut short by the fetch; the ones before are whole holds.
    whole = iterations[:-1]
    assert len(whole) >= 3
    assert all(events == HOLD for events in whole), [
        [EventType.Name(e) for e in events] for events in whole
    ]
    assert [d.action for d in world.recorded[:5]] == ["hold"] * 5  # each line written
