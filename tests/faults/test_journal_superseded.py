"""A worker dies between writing a hold's line and completing the workflow task that decided
it; the retried task, on another worker and in a changed world, decides a scale-up under the
same sequence. The decision log must say what the loop's history says: the scale-up, once.
Real `python -m worker` processes on the session's Temporal dev server, real replicas."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers import (
    WorkerProcess,
    assert_gapless,
    async_wait_for,
    replica_pids,
    run_docktor,
    start_worker,
    wait_for,
    write_idle_config,
)

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.journal import read_decisions
from docktor.spec import DocktorConfig, load_config
from docktor.values import Decision

# The dead worker's workflow task times out (10 s by default) before another worker retries it.
RETRIED_WITHIN = 60.0


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
async def cleanup() -> AsyncIterator[list[DocktorConfig]]:
    configs: list[DocktorConfig] = []
    yield configs
    for config in configs:
        for service in config.services:
            await ProcessScaler(service, project=config.project or "").stop_all()


async def test_a_hold_lost_with_its_worker_is_superseded_by_the_decision_history_keeps(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    workers: list[WorkerProcess],
    cleanup: list[DocktorConfig],
) -> None:
    path = write_idle_config(
        tmp_path,
        temporal_dev.address,
        "superseded",
        uuid.uuid4().hex[:6],
        min_replicas=2,
        max_replicas=3,
    )
    config = load_config(path)
    cleanup.append(config)
    project, service = config.project or "", config.services[0]
    journal = Path(config.journal_path)
    client = await connect(config)

    # Iteration 1 scales 0 -> 2 (min_replicas); iteration 2 holds at 2, and its worker dies
    # as soon as the hold's line is in the log.
    dying = start_worker(path, tmp_path / "dying.log", module="tests.faults.dies_after_hold_worker")
    workers.append(dying)
    await LoopClient(client, config).start(service)
    wait_for(lambda: dying.process.poll() is not None, 60, "the worker killed after a hold")
    assert dying.process.returncode == -signal.SIGKILL, dying.log()
    lost = read_decisions(journal)[-1]
    assert (lost.action, lost.current_replicas, lost.target_replicas) == ("hold", 2, 2)

    # The world changes before the task is retried: a replica dies, so the loop must scale up.
    pids = replica_pids(project, service.name)
    assert len(pids) == 2
    os.kill(pids[-1], signal.SIGKILL)
    wait_for(lambda: len(replica_pids(project, service.name)) == 1, 10, "one replica left")
    workers.append(start_worker(path, tmp_path / "second.log"))

    def logged(sequence: int) -> Decision | None:
        return next((d for d in read_decisions(journal) if d.sequence == sequence), None)

    async def went_on() -> bool:
        return logged(lost.sequence + 1) is not None

    # The decision after it is in the log: the retried task has recorded its own.
    await async_wait_for(went_on, RETRIED_WITHIN, f"sequence {lost.sequence + 1} in the log")
    kept = await LoopClient(client, config).decisions(service.name, tail=1000)
    await LoopClient(client, config).stop(service.name, timeout=30)
    workers[-1].stop()

    # History's decision for that sequence is the scale-up, and so is the log's.
    in_history = next(d for d in kept if d.sequence == lost.sequence)
    assert (in_history.action, in_history.current_replicas, in_history.target_replicas) == (
        "scale_up",
        1,
        2,
    )
    assert logged(lost.sequence) == in_history
    # Both lines are in the file (the log is appended, never edited); readers keep the last.
    raw = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert [line["action"] for line in raw if line["sequence"] == lost.sequence] == [
        "hold",
        "scale_up",
    ]
    logged_all = read_decisions(journal)
    assert_gapless([d.sequence for d in logged_all], "sequences in the log")

    # `docktor explain` of a stopped loop reads the log: the scale-up, once, no lost hold.
    shown = await run_docktor(path, "explain", "--json", "--service", service.name, "--tail", "50")
    assert shown.returncode == 0, shown.stderr
    explained = json.loads(shown.stdout)
    assert "decision log" in shown.stderr
    at_sequence = [e for e in explained if e["sequence"] == lost.sequence]
    assert [e["action"] for e in at_sequence] == ["scale_up"], explained
    assert_gapless([e["sequence"] for e in explained], "sequences explain shows")
