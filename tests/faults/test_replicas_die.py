"""Replicas die on their own, behind docktor's back: a consumer process SIGKILLed, a container
killed through the engine. The next iteration finds the count short of the one the loop set,
says so in its decision, and puts the lost replicas back (no metrics involved: the hold that
the policy would otherwise make keeps the count the loop decided, not what is left of it)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from docker_engine import DockerEngine
from helpers import IDLE_COMMAND, assert_gapless, async_wait_for, replica_pids, serving_loops
from temporalio.client import Client

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedTemporal
from docktor.docker_engine import reset_clients
from docktor.spec import DocktorConfig, load_config
from docktor.values import Decision

SET = 3  # the count the operator sets, before one replica dies


def write_config(tmp_path: Path, temporal: EmbeddedTemporal, **service: Any) -> DocktorConfig:
    tag = uuid.uuid4().hex[:6]
    document = {
        "project": f"die{tag}",
        "state_dir": str(tmp_path / "state"),
        "journal": str(tmp_path / "decisions.jsonl"),
        "temporal": {"address": temporal.address, "task_queue": f"docktor-die-{tag}"},
        "services": [
            {
                "name": "consumer",
                "min_replicas": 1,
                "max_replicas": 4,
                "check_interval": "1s",
                "stop_grace_period": "1s",
                **service,
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path)


async def lose_one_and_see_it_restored(
    client: Client, config: DocktorConfig, kill_one: Any, running: Any
) -> Decision:
    """Scale to SET, kill one replica, and return the decision that restored it."""
    await LoopClient(client, config).start(config.services[0])
    manual = await LoopClient(client, config).scale_to("consumer", SET, by="test")
    assert manual.target_replicas == SET
    await async_wait_for(lambda: _equals(running, SET), 30, f"{SET} replicas running")
    killed_at = datetime.now(UTC)
    kill_one()
    await async_wait_for(lambda: _equals(running, SET - 1), 10, "one replica gone")

    async def restored() -> Decision | None:
        decisions = await LoopClient(client, config).decisions("consumer", tail=100)
        return next((d for d in decisions if "found missing" in d.reason), None)

    decision = await async_wait_for(restored, 20, "a decision that names the missing replica")
    assert isinstance(decision, Decision)
    decisions = await LoopClient(client, config).decisions("consumer", tail=100)
    after_kill = [d for d in decisions if d.timestamp > killed_at]
    # The next iteration, or the one after when one was observing just as the replica died.
    assert decision in after_kill[:2], [(d.action, d.reason) for d in after_kill]
    await async_wait_for(lambda: _equals(running, SET), 20, f"{SET} replicas again")
    await LoopClient(client, config).stop("consumer", timeout=30)
    assert_gapless([d.sequence for d in decisions], "decision sequences")
    return decision


async def _equals(count: Any, wanted: int) -> bool:
    return bool(await count() == wanted)


def check_restore(decision: Decision) -> None:
    assert (decision.action, decision.current_replicas, decision.target_replicas) == (
        "scale_up",
        SET - 1,
        SET,
    )
    assert f"1 of {SET} replicas found missing ({SET - 1} running): restoring {SET}" in (
        decision.reason
    )


async def test_a_killed_consumer_process_is_replaced_and_the_decision_says_so(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    config = write_config(tmp_path, temporal_dev, backend="processes", command=IDLE_COMMAND)
    project = config.project or ""

    async def running() -> int:
        return len(replica_pids(project, "consumer"))

    def kill_one() -> None:
        os.kill(replica_pids(project, "consumer")[-1], signal.SIGKILL)

    try:
        async with serving_loops(config) as client:
            decision = await lose_one_and_see_it_restored(client, config, kill_one, running)
    finally:
        await ProcessScaler(config.services[0], project=project).stop_all()
    check_restore(decision)


@pytest.fixture
def engine_client(
    docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[docker.DockerClient]:
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    reset_clients()
    yield docker.DockerClient(base_url=docker_engine.host)
    reset_clients()


async def test_a_killed_container_is_started_again_and_the_decision_says_so(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    engine_client: docker.DockerClient,
    busybox_image: str,
) -> None:
    config = write_config(tmp_path, temporal_dev, backend="compose")
    project = config.project or ""
    labels = {
        "com.docker.compose.project": project,
        "com.docker.compose.service": "consumer",
        "com.docker.compose.oneoff": "False",
        "com.docker.compose.container-number": "1",
    }
    # The first replica as `docker compose up -d consumer` would have made it.
    engine_client.containers.run(
        busybox_image,
        ["sleep", "3600"],
        name=f"{project}-consumer-1",
        labels=labels,
        network_mode="none",
        stop_signal="SIGKILL",
        detach=True,
    )
    filters = {"label": [f"com.docker.compose.project={project}"], "status": "running"}

    async def running() -> int:
        return len(engine_client.containers.list(filters=filters))

    def kill_one() -> None:
        engine_client.containers.list(filters=filters)[0].kill()

    try:
        async with serving_loops(config) as client:
            decision = await lose_one_and_see_it_restored(client, config, kill_one, running)
    finally:
        for container in engine_client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        ):
            container.remove(force=True, v=True)
    check_restore(decision)
