"""The loop scaling real containers: a Compose-labelled consumer service on the private dockerd,
fed by a real NATS burst, scaled up by the workflow and back down after.

No image can be pulled here, so the consumer containers run the host's Python (read-only bind
mounts of the interpreter, the venv and the example) from the local busybox image, on the host
network so they reach nats-server on 127.0.0.1.
"""

from __future__ import annotations

import sys
import sysconfig
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import nats
import pytest
import yaml
from docker_engine import DockerEngine
from helpers import async_wait_for, burst_service, serving_loops
from temporalio.client import Client

from docktor.backends.compose import ComposeScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedNats, EmbeddedTemporal
from docktor.spec import DocktorConfig, load_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "nats-multi"
BURST = 1500


def host_python_mounts() -> dict[str, dict[str, str]]:
    """Read-only binds that let a container run this interpreter with this venv."""
    paths = {
        "/usr",
        "/lib",
        "/lib64",
        sys.base_prefix,  # the Python install the venv points at
        sys.prefix,  # the venv with nats-py
        str(Path(sysconfig.get_path("stdlib")).parent.parent),
        str(EXAMPLE),
    }
    return {p: {"bind": p, "mode": "ro"} for p in sorted(paths) if Path(p).exists()}


def first_replica(
    client: docker.DockerClient, image: str, project: str, nats_url: str, stream: str
) -> None:
    """What `docker compose up -d consumer` would have made: replica 1, labelled as Compose does."""
    client.containers.run(
        image,
        [sys.executable, str(EXAMPLE / "consumer.py")],
        name=f"{project}-consumer-1",
        detach=True,
        network_mode="host",
        volumes=host_python_mounts(),
        environment={
            "NATS_URL": nats_url,
            "JOBS_STREAM": stream,
            "JOBS_SUBJECT": f"{stream.lower()}.work",
            "JOBS_DURABLE": "workers",
            "WORK_MS": "20",
            "PYTHONUNBUFFERED": "1",
        },
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": "consumer",
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.container-number": "1",
            "com.docker.compose.config-hash": "e2e" * 8,
        },
        stop_signal="SIGTERM",
    )


def write_config(tmp_path: Path, project: str, nats_url: str, temporal: str, stream: str) -> Path:
    config = {
        "project": project,
        "temporal": {"address": temporal, "task_queue": f"docktor-{project}"},
        "services": [burst_service("compose", nats_url, stream, f"{stream.lower()}.work")],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def stack(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_engine: DockerEngine,
    busybox_image: str,
    nats_server: EmbeddedNats,
    temporal_dev: EmbeddedTemporal,
) -> AsyncIterator[tuple[DocktorConfig, Client]]:
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    tag = uuid.uuid4().hex[:6]
    project, stream = f"dke2e{tag}", f"DK{tag.upper()}"
    docker_client = docker.DockerClient(base_url=docker_engine.host)
    connection = await nats.connect(nats_server.url)
    await connection.jetstream().add_stream(name=stream, subjects=[f"{stream.lower()}.work"])
    first_replica(docker_client, busybox_image, project, nats_server.url, stream)
    config = load_config(
        write_config(tmp_path, project, nats_server.url, temporal_dev.address, stream)
    )
    try:
        async with serving_loops(config) as client:
            yield config, client
    finally:
        await connection.close()
        for container in docker_client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        ):
            container.remove(force=True)


async def test_burst_scales_consumer_containers_up_and_down(
    stack: tuple[DocktorConfig, Client], nats_server: EmbeddedNats
) -> None:
    config, client = stack
    service = config.services[0]
    assert service.queue is not None and service.queue.subject is not None
    scaler = ComposeScaler(service, project=config.project)
    assert await scaler.replicas() == 1
    await LoopClient(client, config).start(service)

    publisher = await nats.connect(nats_server.url)
    js = publisher.jetstream()
    for index in range(BURST):
        await js.publish(service.queue.subject, f"job {index}".encode())
    await publisher.close()

    async def containers_at_least_3() -> bool:
        return await scaler.replicas() >= 3

    await async_wait_for(containers_at_least_3, 90, "consumer containers scaled up to 3")

    async def back_to_one() -> bool:
        status = await LoopClient(client, config).status(service.name)
        return status.replicas == 1 and await scaler.replicas() == 1

    await async_wait_for(back_to_one, 120, "consumer containers scaled back down to 1")
    decisions = await LoopClient(client, config).decisions(service.name, tail=50)
    actions = {d.action for d in decisions}
    assert {"scale_up", "scale_down"} <= actions
    assert all(1 <= d.target_replicas <= 4 for d in decisions)
    final = await LoopClient(client, config).stop(service.name)
    assert final.last_decision is not None and final.last_decision.action == "stopped"
