"""A loop stopped and started again (`python -m starter --stop`, then `python -m starter`) is a
new run whose decision sequence starts at 1 again. Every decision of both runs must reach the
JSONL log: the log's idempotency key must not take the second run's decisions for retries of the
first run's."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import async_wait_for, serving_loops, write_idle_config
from temporalio.client import Client

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedTemporal
from docktor.spec import DocktorConfig, load_config
from docktor.values import Decision

# Decisions each run makes before it is stopped: the first (0 -> 1, min_replicas) and holds.
PER_RUN = 3
STOP_WAIT = 30.0


@pytest.fixture
async def stack(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> AsyncIterator[tuple[DocktorConfig, Client]]:
    path = write_idle_config(tmp_path, temporal_dev.address, "restart", uuid.uuid4().hex[:6])
    config = load_config(path)
    try:
        async with serving_loops(config) as client:
            yield config, client
    finally:
        await ProcessScaler(config.services[0], project=config.project or "").stop_all()


async def run_once(client: Client, config: DocktorConfig) -> str:
    """Start the loop, let it make PER_RUN decisions, stop it; the id of the run that stopped
    (a loop's first run may already have continued as new: the last run's ring carries every
    decision since the start)."""
    service = config.services[0]
    started = await LoopClient(client, config).start(service)
    assert started.started and started.run_id is not None

    async def decided() -> bool:
        return len(await LoopClient(client, config).decisions(service.name, tail=50)) >= PER_RUN

    await async_wait_for(decided, 30, f"{PER_RUN} decisions")
    final = await asyncio.wait_for(LoopClient(client, config).stop(service.name), STOP_WAIT)
    assert final.last_decision is not None and final.last_decision.action == "stopped"
    assert final.last_decision.first_run_id == started.run_id
    return final.last_decision.run_id


async def test_every_decision_of_a_restarted_loop_reaches_the_log(
    stack: tuple[DocktorConfig, Client],
) -> None:
    config, client = stack
    workflow_id = config.workflow_id(config.services[0].name)
    runs = [await run_once(client, config), await run_once(client, config)]

    made: list[Decision] = []
    for run_id in runs:
        # A closed run still answers queries (its worker replays it).
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        made += await handle.query("decisions", 100, result_type=list[Decision])
    assert [d.sequence for d in made[:PER_RUN]] == [1, 2, 3]
    assert made[-1].action == "stopped" and made[-1].run_id == runs[1]

    lines = [json.loads(raw) for raw in Path(config.journal_path).read_text().splitlines()]
    written = [(line["run_id"], line["sequence"], line["action"]) for line in lines]
    expected = [(d.run_id, d.sequence, d.action) for d in made]
    assert written == expected
    assert len({line["decision_id"] for line in lines}) == len(lines)
