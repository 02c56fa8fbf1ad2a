"""The decision log cannot be written for longer than the loop's ring of recent decisions
reaches back: when it can again, the decisions the ring still holds are written before the next
one, in order, and one warning line says how many are missing for good."""

from __future__ import annotations

import logging
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from docktor.loop.messages import DECISION_RING
from tests.workflow.conftest import (
    ScriptedWorld,
    cancel_and_wait,
    query_loop,
    service_spec,
    start,
    until,
)
from workflows import ServiceAutoscaler

# More decisions than the ring holds, across continue-as-new (25 iterations a run).
BROKEN_FOR = DECISION_RING + 12


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this test's own: it skips through some sixty iterations, and
    a query left unanswered by an earlier test in the shared one can hold its skipping locked
    (every later sleep then runs in real time)."""
    server = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(server)
    ) as environment:
        yield environment


async def test_a_gap_longer_than_the_ring_is_written_back_as_far_as_it_reaches(
    env: WorkflowEnvironment,
    world: ScriptedWorld,
    worker: Worker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    world.backlog = 100  # between the rules: every iteration holds
    world.record_error = ApplicationError(
        "cannot write /unused/decisions.jsonl: No space left on device",
        type="JournalUnwritable",
        non_retryable=True,
    )
    handle = await start(env.client, service_spec(check_interval=10))

    async def decided(count: int) -> bool:
        status = await query_loop(env, handle, ServiceAutoscaler.status)
        return status.last_decision is not None and status.last_decision.sequence >= count

    await until(env, lambda: decided(BROKEN_FOR), step_seconds=10)
    status = await query_loop(env, handle, ServiceAutoscaler.status)
    assert status.journal_error is not None and status.journal_error.startswith(
        "decisions from 1 on not written"
    )
    assert world.recorded == []

    world.record_error = None

    async def written() -> bool:
        return bool(world.recorded)

    await until(env, written, step_seconds=10)
    await cancel_and_wait(env, handle)

    sequences = [d.sequence for d in world.recorded]
    first = sequences[DECISION_RING - 1]  # the decision whose record found the log writable
    lost = first - DECISION_RING
    assert lost >= BROKEN_FOR - DECISION_RING
    # The ring's 49 before it, then it, then every later one: in order, once each.
    assert sequences == list(range(lost + 1, sequences[-1] + 1))
    reopened = [r.getMessage() for r in caplog.records if "writable again;" in r.getMessage()]
    assert len(reopened) == 1, reopened
    assert reopened[0].startswith(
        f"decision log /unused/decisions.jsonl writable again; decisions {lost + 1} to "
        f"{first - 1} written to it now; {lost} decisions (1 to {lost}) are missing from it "
        f"for good: the loop keeps only its last {DECISION_RING}"
    )
    assert (await query_loop(env, handle, ServiceAutoscaler.status)).journal_error is None

    # Every run replays from its history, the write-back's marker and inputs included.
    replayer = Replayer(workflows=[ServiceAutoscaler], data_converter=pydantic_data_converter)
    runs = {d.run_id for d in world.recorded}
    assert len(runs) >= 2
    for run_id in runs:
        history = await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure
