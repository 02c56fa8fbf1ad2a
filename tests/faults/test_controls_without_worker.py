"""Controls sent to a loop whose worker is gone: the command says so within its --timeout, and
what it sent is never carried out afterwards, when a worker returns.

Before, `docktor scale` said "has not answered within 5s" and exited 1, and the update, which
waited in the server, was applied as soon as a worker came back; `python -m starter` on a
running loop waited for ever, and Ctrl-C gave a traceback and exit 1. Real processes throughout:
`python -m worker`, `docktor`, `python -m starter`, replicas counted in /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from helpers import (
    REPO,
    WorkerProcess,
    async_wait_for,
    replica_pids,
    run_docktor,
    start_worker,
    write_idle_config,
)
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.journal import read_decisions
from docktor.spec import DocktorConfig, load_config
from docktor.values import Decision

pytestmark = pytest.mark.integration

TIMEOUT = 3  # the --timeout the commands are given, in seconds
# A command's own start (interpreter, imports, connecting) on a loaded 2-core machine, on top
# of its --timeout. Before the fix the starter never ended at all.
STARTUP = 10.0


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
async def loops(tmp_path: Path) -> AsyncIterator[list[tuple[Client, DocktorConfig]]]:
    """Loops to terminate and replicas to stop at the end, whatever the test left running."""
    started: list[tuple[Client, DocktorConfig]] = []
    yield started
    for client, config in started:
        for name in config.service_names():
            handle = client.get_workflow_handle(config.workflow_id(name))
            with contextlib.suppress(RPCError):  # already ended
                await handle.terminate(reason="test over")
            await ProcessScaler(config.service(name), project=config.project or "").stop_all()


def run_starter(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "starter", "--config", str(config), *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


async def timed(
    run: Awaitable[subprocess.CompletedProcess[str]],
) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    result = await run
    return result, time.monotonic() - began


async def accepted_updates(handle: WorkflowHandle) -> int:
    accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    return sum([event.event_type == accepted async for event in handle.fetch_history_events()])


async def idle(handle: WorkflowHandle) -> bool:
    """The loop waits in its timer: no workflow task and no activity pending."""
    raw = (await handle.describe()).raw_description
    return not raw.pending_workflow_task.ByteSize() and not raw.pending_activities


async def loop_without_worker(
    tmp_path: Path,
    temporal: EmbeddedTemporal,
    workers: list[WorkerProcess],
    loops: list[tuple[Client, DocktorConfig]],
) -> tuple[Path, LoopClient]:
    """A `consumer` loop (1 s checks, 1..4 replicas) that ran on a `python -m worker` which has
    stopped since: the loop runs on, with nobody to serve it."""
    tag = uuid.uuid4().hex[:6]
    path = write_idle_config(tmp_path, temporal.address, "void", tag, max_replicas=4)
    config = load_config(path)
    client = await connect(config)
    loops.append((client, config))
    loop = LoopClient(client, config)
    workers.append(start_worker(path, tmp_path / "worker-1.log"))
    await loop.start(config.service("consumer"))

    async def one_replica() -> bool:
        status = await loop.status("consumer")
        return status.replicas == 1 and len(replica_pids(config.project or "", "consumer")) == 1

    await async_wait_for(one_replica, 30, "the loop's first replica")
    workers[-1].stop()
    return path, loop


async def after_a_worker_returns(
    tmp_path: Path, path: Path, loop: LoopClient, workers: list[WorkerProcess]
) -> list[Decision]:
    """Start a worker again and wait until the loop has decided three times since: whatever
    waited in the server for a worker has reached the loop by then. Returns its decisions."""
    returned_at = datetime.now(UTC)
    workers.append(start_worker(path, tmp_path / "worker-2.log"))

    async def decided_since_return() -> bool:
        decisions = await loop.decisions("consumer", 50)
        return sum(d.timestamp > returned_at for d in decisions) >= 3

    await async_wait_for(decided_since_return, 60, "three decisions after the worker's return")
    decisions = await loop.decisions("consumer", 50)
    after = [d for d in decisions if d.timestamp > returned_at]
    assert after and all(d.target_replicas == 1 for d in after), after
    return decisions


async def test_scale_and_pause_without_a_worker_fail_in_time_and_are_never_applied_later(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    workers: list[WorkerProcess],
    loops: list[tuple[Client, DocktorConfig]],
) -> None:
    path, loop = await loop_without_worker(tmp_path, temporal_dev, workers, loops)
    config = loop.config
    project = config.project or ""
    handle = loop.client.get_workflow_handle(config.workflow_id("consumer"))
    accepted_before = await accepted_updates(handle)

    not_answered = (
        f"error: the loop for service 'consumer' has not answered within {TIMEOUT}s "
        f"(is a worker running on task queue '{config.temporal.task_queue}'?)\n"
    )
    for args in (("scale", "consumer", "4"), ("pause", "consumer")):
        result, took = await timed(run_docktor(path, *args, "--timeout", f"{TIMEOUT}"))
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr == not_answered, args
        assert took < TIMEOUT + STARTUP, f"docktor {' '.join(args)} took {took:.1f}s"

    # A worker comes back. The updates that waited in the server reach the loop now, after
    # the time their sender gave up: the loop refuses them.
    decisions = await after_a_worker_returns(tmp_path, path, loop, workers)
    assert [d for d in decisions if d.action == "manual"] == []
    status = await loop.status("consumer")
    assert status.paused is False and status.replicas == 1
    assert await ProcessScaler(config.service("consumer"), project).replicas() == 1
    assert len(replica_pids(project, "consumer")) == 1
    assert await accepted_updates(handle) == accepted_before
    assert [d for d in read_decisions(config.journal_path) if d.action == "manual"] == []


async def test_starter_without_a_worker_fails_in_time_and_its_config_is_never_applied_later(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    workers: list[WorkerProcess],
    loops: list[tuple[Client, DocktorConfig]],
) -> None:
    path, loop = await loop_without_worker(tmp_path, temporal_dev, workers, loops)
    config = loop.config
    handle = loop.client.get_workflow_handle(config.workflow_id("consumer"))
    accepted_before = await accepted_updates(handle)

    # The starter finds the loop running and hands it the config as it is now: 3 replicas at
    # most instead of 4. Nobody takes it.
    document = yaml.safe_load(path.read_text())
    document["services"][0]["max_replicas"] = 3
    path.write_text(yaml.safe_dump(document))
    began = time.monotonic()
    started = await asyncio.to_thread(
        run_starter, path, "--service", "consumer", "--timeout", f"{TIMEOUT}"
    )
    took = time.monotonic() - began
    assert started.returncode == 1, started.stderr
    assert started.stdout == ""
    assert started.stderr == (
        f"error: consumer: {config.workflow_id('consumer')} is running but has not taken the "
        f"config within {TIMEOUT}s (is a worker running on task queue "
        f"'{config.temporal.task_queue}'?); nothing was changed\n"
    )
    assert took < TIMEOUT + STARTUP, f"the starter took {took:.1f}s"

    await after_a_worker_returns(tmp_path, path, loop, workers)
    assert (await loop.status("consumer")).max_replicas == 4
    assert await accepted_updates(handle) == accepted_before


async def test_status_exits_1_when_a_loop_does_not_answer(
    tmp_path: Path, temporal_dev: EmbeddedTemporal, loops: list[tuple[Client, DocktorConfig]]
) -> None:
    # Started on a task queue no worker ever polls: the loop runs, and answers nothing.
    tag = uuid.uuid4().hex[:6]
    path = write_idle_config(tmp_path, temporal_dev.address, "mute", tag)
    config = load_config(path)
    client = await connect(config)
    loops.append((client, config))
    await LoopClient(client, config).start(config.service("consumer"))

    result, took = await timed(run_docktor(path, "status"))
    assert result.returncode == 1, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("consumer"))
    assert "no answer" in row and "has not answered within 10s" in row
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: consumer: the loop for service")
    assert took < 10 + STARTUP

    as_json, _ = await timed(run_docktor(path, "status", "--json", "--timeout", "2"))
    assert as_json.returncode == 1, as_json.stderr


async def test_ctrl_c_of_a_waiting_command_is_exit_130_and_one_line(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    workers: list[WorkerProcess],
    loops: list[tuple[Client, DocktorConfig]],
) -> None:
    tag = uuid.uuid4().hex[:6]
    # An hour between checks: once settled, nothing but a client's update makes work for it.
    path = write_idle_config(tmp_path, temporal_dev.address, "sigint", tag, check_interval="1h")
    document = yaml.safe_load(path.read_text())
    document["services"].append({**document["services"][0], "name": "api"})
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    client = await connect(config)
    loops.append((client, config))
    loop = LoopClient(client, config)
    handles = {
        name: client.get_workflow_handle(config.workflow_id(name)) for name in ("consumer", "api")
    }

    worker = start_worker(path, tmp_path / "worker.log")
    workers.append(worker)
    for name in handles:
        await loop.start(config.service(name))

    async def settled() -> bool:
        written = {d.service for d in read_decisions(config.journal_path)}
        return written == set(handles) and all([await idle(h) for h in handles.values()])

    await async_wait_for(settled, 30, "both loops waiting in their timers")
    # Ctrl-C stops the worker too (checked at the end), as every entry point: 130.
    worker.process.send_signal(signal.SIGINT)
    worker_code = worker.process.wait(timeout=30)

    environment = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    commands = {
        "consumer": [
            sys.executable,
            "-m",
            "starter",
            "--config",
            str(path),
            "--service",
            "consumer",
        ],
        "api": [sys.executable, "-m", "docktor", "scale", "api", "2", "--config", str(path)],
    }
    for name, command in commands.items():
        process = subprocess.Popen(
            [*command, "--timeout", "60"],
            cwd=REPO,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Its update reached the loop, which has no worker to take it: the command waits.
            async def waiting() -> bool:
                return not await idle(handles[name])  # noqa: B023

            await async_wait_for(waiting, 30, f"{command[2]}'s update waiting in the server")
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 130, (command, err)
        assert err == "interrupted\n", command
        assert out == ""
    assert worker_code == 130, worker.log()
