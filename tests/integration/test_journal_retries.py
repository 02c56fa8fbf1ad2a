"""The JSONL decision log stays free of duplicates when the record activity is retried after it
has already written its line, the case an activity retry really produces (a worker that wrote,
then failed or died before reporting back)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import async_wait_for, write_idle_config
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities import LoopActivities
from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.loop.activities import observe_evaluate_of
from docktor.loop.authority import WorkerConfig
from docktor.loop.messages import RecordInput
from docktor.loop.worker import build_worker
from docktor.spec import DocktorConfig, load_config
from docktor.telemetry import DocktorMetrics
from docktor.values import Decision

DECISIONS = 4


class FlakyRecord:
    """The real `record` activity, then a failure on every first attempt: Temporal retries a
    call whose line is already in the file."""

    def __init__(self, real: LoopActivities) -> None:
        self.real = real
        self.forced_failures = 0

    @activity.defn(name="record")
    async def record(self, request: RecordInput) -> bool:
        written = await self.real.record(request)
        if activity.info().attempt == 1:
            self.forced_failures += 1
            raise ApplicationError("forced failure after the line was written")
        return written


@pytest.fixture
async def stack(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> AsyncIterator[tuple[DocktorConfig, Client, FlakyRecord, DocktorMetrics]]:
    config = load_config(
        write_idle_config(tmp_path, temporal_dev.address, "retries", uuid.uuid4().hex[:6])
    )
    client = await connect(config)
    metrics = DocktorMetrics()
    real = LoopActivities(WorkerConfig(config), metrics=metrics)
    flaky = FlakyRecord(real)
    worker = build_worker(
        client,
        config.temporal.task_queue,
        [
            real.observe,
            real.evaluate,
            real.advise,
            real.apply,
            flaky.record,
            # A hold's line, written ahead by the look, goes through the flaky record too.
            observe_evaluate_of(real.observe, real.evaluate, flaky.record),
        ],
    )
    try:
        async with worker:
            yield config, client, flaky, metrics
    finally:
        await real.close()
        await ProcessScaler(config.services[0], project=config.project or "").stop_all()


async def test_retried_record_writes_each_decision_once(
    stack: tuple[DocktorConfig, Client, FlakyRecord, DocktorMetrics],
) -> None:
    config, client, flaky, metrics = stack
    service = config.services[0]
    journal = Path(config.journal_path)
    await LoopClient(client, config).start(service)

    async def enough_attempts_made() -> bool:
        # Every decision's record failed once and then succeeded on its retry.
        decisions = await LoopClient(client, config).decisions(service.name, tail=50)
        return len(decisions) >= DECISIONS and flaky.forced_failures >= DECISIONS

    await async_wait_for(enough_attempts_made, 60, f"{DECISIONS} decisions, each retried")
    # Bounded: a loop that missed its cancellation would otherwise hang the test.
    final = await asyncio.wait_for(LoopClient(client, config).stop(service.name), 30)
    assert final.last_decision is not None and final.last_decision.action == "stopped"

    lines = [json.loads(raw) for raw in journal.read_text().splitlines() if raw.strip()]
    ids = [line["decision_id"] for line in lines]
    duplicates = [key for key, count in Counter(ids).items() if count > 1]
    assert not duplicates, f"decisions written more than once: {duplicates}"
    # One loop, so the log is its decisions in the order they were made.
    sequences = [line["sequence"] for line in lines]
    assert sequences == sorted(sequences) and len(lines) >= DECISIONS
    assert lines[0]["action"] == "scale_up" and lines[-1]["action"] == "stopped"
    # Each line is the workflow's own decision of that sequence. (The loop is closed now, so it
    # is queried directly. A decision whose record the cancellation caught before its first
    # attempt may be missing from the file: that is a lost line, never a duplicate.)
    handle = client.get_workflow_handle(config.workflow_id(service.name))
    history = await handle.query("decisions", 100, result_type=list[Decision])
    by_sequence = {d.sequence: d for d in history}
    for line in lines:
        made = by_sequence[line["sequence"]]
        assert (line["action"], line["target_replicas"]) == (made.action, made.target_replicas)
    assert len(lines) >= len(history) - 1
    # Every record was retried after writing, and the counter still saw each decision once.
    assert flaky.forced_failures >= len(lines)
    counted = sum(
        metrics.registry.get_sample_value(
            "docktor_decisions_total", {"service": service.name, "action": action}
        )
        or 0
        for action in {line["action"] for line in lines}
    )
    assert counted == len(lines)
