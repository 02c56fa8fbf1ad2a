"""The private engine the Docker tests run on: it answers, and runs a container on the host
network from the locally imported busybox image."""

from __future__ import annotations

import docker
from docker_engine import DockerEngine


def test_engine_runs_a_container(docker_engine: DockerEngine, busybox_image: str) -> None:
    client = docker.DockerClient(base_url=docker_engine.host)
    output = client.containers.run(
        busybox_image, ["sh", "-c", "echo hello"], network_mode="none", remove=True
    )
    assert output.strip() == b"hello"
