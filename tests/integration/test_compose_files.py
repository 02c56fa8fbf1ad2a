"""The shipped compose files parse with a real Compose CLI, and the example's Docker config loads.

Images cannot be pulled on the test machines, so `config -q` (parse, interpolate, validate
against the schema) is the check; it needs no engine. Debian's docker-compose 1.29 is the CLI
the issue names; `docker compose` (v2) is used where that is what is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from docktor.spec import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "nats-multi"
COMPOSE_FILES = [ROOT / "docker-compose.temporal.yaml", EXAMPLE / "docker-compose.yaml"]


def _compose_cli() -> list[str]:
    if found := shutil.which("docker-compose"):
        return [found]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    if os.environ.get("CI"):
        pytest.fail("no Compose CLI on this CI machine: scripts/install-test-deps.sh should add it")
    pytest.skip("no Compose CLI here (install Debian's docker-compose to run this test)")


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_file_is_valid(path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [*_compose_cli(), "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        # No engine is contacted by `config`; a stray DOCKER_HOST or COMPOSE_FILE must not matter.
        env={**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_example_consumer_is_scalable_by_compose() -> None:
    """The consumer is what docktor clones: no fixed name, no host port."""
    services = yaml.safe_load((EXAMPLE / "docker-compose.yaml").read_text())["services"]
    consumer = services["consumer"]
    assert "container_name" not in consumer
    assert "ports" not in consumer
    assert consumer["environment"]["NATS_URL"] == "nats://nats:4222"
    assert "127.0.0.1:4222:4222" in services["nats"]["ports"]


def test_docker_variant_of_the_example_config_loads() -> None:
    config = load_config(EXAMPLE / "docktor.compose.yaml")
    assert config.project == "nats-multi"
    consumer = config.service("consumer")
    assert consumer.backend == "compose"
    assert consumer.queue is not None
    assert consumer.queue.url == "nats://127.0.0.1:4222"

    # Same scaling behaviour as the processes variant, only the backend differs.
    plain = load_config(EXAMPLE / "docktor.yaml").service("consumer")
    for field in (
        "min_replicas",
        "max_replicas",
        "check_interval",
        "scale_up_by",
        "scale_down_by",
        "cooldown",
        "policy",
        "rules",
        "target",
        "rate",
        "behavior",
    ):
        assert getattr(consumer, field) == getattr(plain, field), field
    assert consumer.queue.model_dump(exclude={"url"}) == plain.queue.model_dump(exclude={"url"})
