"""The Docker engine stops and starts again under a compose-backed loop (a private dockerd of
this test's own, so the session's engine serves the other tests undisturbed). While it is down:
one clear line per failed observation, retried with growing waits, and a `hold` whose reason
names the engine. Once it is back the loop finds its containers stopped and starts them again,
with no restart of the worker or the loop."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest
import yaml
from docker_engine import DockerEngine, dockerd_available, import_busybox, start_dockerd
from helpers import assert_gapless, async_wait_for, serving_loops

from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedTemporal
from docktor.docker_engine import reset_clients
from docktor.spec import load_config
from docktor.values import Decision

REPLICAS = 2


@pytest.fixture
def private_engine(
    docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DockerEngine]:
    """A dockerd for this test alone (asking for the session's one first skips the test where
    there is no dockerd at all). The test replaces `.process` when it restarts it."""
    assert dockerd_available()
    root = Path(tempfile.mkdtemp(prefix="dkr-", dir="/tmp"))
    engine = start_dockerd(root)
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    reset_clients()
    try:
        yield engine
    finally:
        reset_clients()
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_dockerd_stopped_and_started_clear_errors_backoff_and_recovery(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    private_engine: DockerEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    image = import_busybox(private_engine)
    engine = docker.DockerClient(base_url=private_engine.host)
    tag = uuid.uuid4().hex[:6]
    project = f"dk{tag}"
    document = {
        "project": project,
        "state_dir": str(tmp_path / "state"),
        "journal": str(tmp_path / "decisions.jsonl"),
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-dockerd-{tag}"},
        "services": [
            {
                "name": "consumer",
                "backend": "compose",
                "min_replicas": REPLICAS,
                "max_replicas": 3,
                "check_interval": "1s",
                "stop_grace_period": "1s",
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    # The first replica, as `docker compose up -d consumer` makes it.
    engine.containers.run(
        image,
        ["sleep", "3600"],
        name=f"{project}-consumer-1",
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": "consumer",
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.container-number": "1",
        },
        network_mode="none",
        stop_signal="SIGKILL",
        detach=True,
    )
    running = {"label": [f"com.docker.compose.project={project}"], "status": "running"}
    caplog.set_level(logging.INFO)

    async with serving_loops(config) as client:

        async def decisions() -> list[Decision]:
            return await LoopClient(client, config).decisions("consumer", tail=1000)

        async def since(moment: datetime) -> list[Decision]:
            return [d for d in await decisions() if d.timestamp > moment]

        async def count_running() -> bool:
            return len(engine.containers.list(filters=running)) == REPLICAS

        async def scaled() -> bool:
            # The loop's scale recorded, not only its containers started: an engine stopped
            # while the apply is still reporting back is a different story (a failed scale).
            return (await LoopClient(client, config).status("consumer")).replicas == REPLICAS

        await LoopClient(client, config).start(config.services[0])
        await async_wait_for(scaled, 30, f"the loop's scale to {REPLICAS}")
        assert await count_running()

        private_engine.stop()
        down_at = datetime.now(UTC)

        async def held_twice() -> bool:
            return len([d for d in await since(down_at) if d.action == "hold"]) >= 2

        await async_wait_for(held_twice, 60, "two holds while the engine is down")
        during = await since(down_at)

        private_engine.process = start_dockerd(private_engine.root).process
        up_at = datetime.now(UTC)

        async def recovered() -> bool:
            return any(d.action == "scale_up" for d in await since(up_at)) and (
                await count_running()
            )

        await async_wait_for(recovered, 60, "containers started again after the restart")
        await LoopClient(client, config).stop("consumer", timeout=30)
        handle = client.get_workflow_handle(config.workflow_id("consumer"))
        made = await handle.query("decisions", 1000, result_type=list[Decision])
        recovery = next(d for d in made if d.timestamp > up_at and d.action == "scale_up")

    for container in engine.containers.list(all=True, filters={"label": running["label"]}):
        container.remove(force=True, v=True)

    # Clear errors: a hold naming the engine, and one line per failed attempt, no traceback.
    for hold in [d for d in during if d.action == "hold"]:
        assert hold.reason.startswith("metrics unavailable:"), hold.reason
        assert private_engine.host.removeprefix("unix://") in hold.reason or "engine" in hold.reason
        assert hold.target_replicas == hold.current_replicas == REPLICAS
    failures = [r for r in caplog.records if r.message.startswith("observe consumer failed")]
    assert failures and all("\n" not in r.getMessage() for r in failures)
    assert "Traceback" not in caplog.text
    # Retried with backoff: within one observation, attempts 1, 2, 3 with growing waits.
    attempts = [int(re.search(r"attempt (\d+)", r.message).group(1)) for r in failures]  # type: ignore[union-attr]
    first = attempts.index(1)
    assert attempts[first : first + 3] == [1, 2, 3]
    times = [r.created for r in failures[first : first + 3]]
    # The waits of OBSERVE_RETRY (1 s, then 2 s) as lower bounds: a busy event loop may log
    # an attempt late, never early.
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 1.8, times
    # Recovery: the stopped containers are started again, and the decision says why.
    assert (recovery.current_replicas, recovery.target_replicas) == (0, REPLICAS)
    assert "found missing" in recovery.reason
    assert not [d for d in made if d.action == "scale_down"]
    assert_gapless([d.sequence for d in made], "decision sequences")
