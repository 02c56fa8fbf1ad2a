"""Workers die: one SIGKILLed in the middle of a scale, and one of two workers serving the same
task queue. Real `python -m worker` processes on the session's Temporal dev server, real replica
processes counted in /proc. No decision may be lost or made twice, no replica started twice."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from helpers import (
    IDLE_COMMAND,
    WorkerProcess,
    assert_gapless,
    async_wait_for,
    replica_pids,
    start_worker,
    wait_for,
)
from temporalio.client import Client

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.spec import DocktorConfig, load_config
from docktor.values import Decision

# The apply activity's heartbeat timeout (docktor/loop/workflow.py): a dead worker's activity is
# retried elsewhere after this long.
HEARTBEAT_TIMEOUT = 30.0


def write_config(tmp_path: Path, temporal: EmbeddedTemporal, services: dict[str, int]) -> Path:
    tag = uuid.uuid4().hex[:6]
    document = {
        "project": f"crash-{tag}",
        "state_dir": str(tmp_path / "state"),
        "journal": str(tmp_path / "decisions.jsonl"),
        "temporal": {"address": temporal.address, "task_queue": f"docktor-crash-{tag}"},
        "services": [
            {
                "name": name,
                "backend": "processes",
                "command": IDLE_COMMAND,
                "min_replicas": replicas,
                "max_replicas": replicas + 2,
                "check_interval": "1s",
                "stop_grace_period": "2s",
            }
            for name, replicas in services.items()
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Every worker a test starts; each stopped by its pid at the end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
async def cleanup() -> AsyncIterator[list[DocktorConfig]]:
    """Configs whose replicas are stopped at the end (the loops leave them running)."""
    configs: list[DocktorConfig] = []
    yield configs
    for config in configs:
        for service in config.services:
            await ProcessScaler(service, project=config.project or "").stop_all()


def journal_lines(config: DocktorConfig) -> list[dict[str, object]]:
    path = Path(config.journal_path)
    return [json.loads(raw) for raw in path.read_text().splitlines() if raw.strip()]


async def all_decisions(client: Client, config: DocktorConfig, service: str) -> list[Decision]:
    """Every decision of the loop, running or closed (a closed run still answers queries)."""
    handle = client.get_workflow_handle(config.workflow_id(service))
    return await handle.query("decisions", 1000, result_type=list[Decision])


async def test_worker_killed_mid_scale_a_new_worker_finishes_it_once(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    workers: list[WorkerProcess],
    cleanup: list[DocktorConfig],
) -> None:
    target = 4
    path = write_config(tmp_path, temporal_dev, {"consumer": target})
    config = load_config(path)
    cleanup.append(config)
    project, service = config.project or "", config.services[0]
    client = await connect(config)

    # Each start takes 1.5 s in this worker: the first decision (0 -> 4, min_replicas) is
    # a scale of several seconds, and the kill lands inside it.
    slow = start_worker(
        path,
        tmp_path / "slow.log",
        module="tests.faults.slow_worker",
        DOCKTOR_TEST_START_DELAY="1.5",
    )
    workers.append(slow)
    await LoopClient(client, config).start(service)
    wait_for(lambda: len(replica_pids(project, service.name)) >= 2, 60, "2 replicas started")
    slow.kill()
    started_before_kill = len(replica_pids(project, service.name))
    assert 1 <= started_before_kill < target, "the kill did not land mid-scale"

    workers.append(start_worker(path, tmp_path / "second.log"))
    most_seen = started_before_kill

    async def converged() -> bool:
        nonlocal most_seen
        most_seen = max(most_seen, len(replica_pids(project, service.name)))
        status = await LoopClient(client, config).status(service.name)
        return status.replicas == target and status.iteration >= 3

    # The dead worker's apply is retried on the new one after the heartbeat timeout.
    await async_wait_for(converged, HEARTBEAT_TIMEOUT + 30, f"{target} replicas, 3 iterations")
    assert most_seen == target, f"{most_seen} replicas ran at some point for a target of {target}"
    assert len(replica_pids(project, service.name)) == target
    await LoopClient(client, config).stop(service.name, timeout=30)

    decisions = await all_decisions(client, config, service.name)
    assert_gapless([d.sequence for d in decisions], "sequences in the decisions query")
    scales = [(d.action, d.current_replicas, d.target_replicas) for d in decisions]
    assert scales.count(("scale_up", 0, target)) == 1, scales
    assert [s for s in scales if s[0] != "hold"] == [("scale_up", 0, target), ("stopped", 4, 4)]
    lines = journal_lines(config)
    assert_gapless([int(str(line["sequence"])) for line in lines], "sequences in the JSONL")
    assert [line["action"] for line in lines] == [d.action for d in decisions]


async def test_one_of_two_workers_killed_its_loops_continue_on_the_other(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    workers: list[WorkerProcess],
    cleanup: list[DocktorConfig],
) -> None:
    names = ["alpha", "beta", "gamma", "delta"]
    path = write_config(tmp_path, temporal_dev, dict.fromkeys(names, 1))
    config = load_config(path)
    cleanup.append(config)
    project = config.project or ""
    client = await connect(config)
    workers.append(start_worker(path, tmp_path / "a.log"))
    workers.append(start_worker(path, tmp_path / "b.log"))
    for name in names:
        await LoopClient(client, config).start(config.service(name))

    async def decided(name: str, count: int) -> bool:
        return len(await LoopClient(client, config).decisions(name, tail=1000)) >= count

    for name in names:
        await async_wait_for(lambda n=name: decided(n, 3), 30, f"{name}: 3 decisions")

    async def served_by(name: str) -> set[str]:
        """Identities of the workers that completed the loop's workflow tasks."""
        handle = client.get_workflow_handle(config.workflow_id(name))
        return {
            event.workflow_task_completed_event_attributes.identity
            async for event in handle.fetch_history_events()
            if event.HasField("workflow_task_completed_event_attributes")
        }

    # Kill the worker that served the first loop last: it certainly holds loops (sticky).
    handle = client.get_workflow_handle(config.workflow_id(names[0]))
    last_identity = ""
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_task_completed_event_attributes"):
            last_identity = event.workflow_task_completed_event_attributes.identity
    victim = next(w for w in workers if w.identity == last_identity)
    survivor = next(w for w in workers if w is not victim)
    before = {n: len(await LoopClient(client, config).decisions(n, tail=1000)) for n in names}
    victim.kill()
    killed_at = time.monotonic()

    await asyncio.gather(
        *(
            async_wait_for(lambda n=n: decided(n, before[n] + 3), HEARTBEAT_TIMEOUT + 10, n)
            for n in names
        )
    )
    assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT + 10
    assert survivor.process.poll() is None
    for name in names:
        assert survivor.identity in await served_by(name)
    for name in names:
        await LoopClient(client, config).stop(name, timeout=30)

    lines = journal_lines(config)
    ids = [line["decision_id"] for line in lines]
    assert len(ids) == len(set(ids)), "a decision written twice"
    for name in names:
        decisions = await all_decisions(client, config, name)
        assert_gapless([d.sequence for d in decisions], f"{name}: sequences")
        assert [line["sequence"] for line in lines if line["service"] == name] == [
            d.sequence for d in decisions
        ]
        # One replica each, started once: a loop run twice would have started a second.
        assert len(replica_pids(project, name)) == 1
        assert [d.action for d in decisions].count("scale_up") == 1
