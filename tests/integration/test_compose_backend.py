"""The compose backend on a real engine: replicas made by hand with the labels Compose sets,
then scaled through the SDK. Containers use the `none` network only (no bridge on this engine).
Each test gets its own project name, and every container of it is removed at the end."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from docker.models.containers import Container
from docker_engine import DockerEngine

from docktor.backends import Backends, ScalerConfigError, ScalerUnavailable
from docktor.backends.compose import ComposeScaler
from docktor.dev.embedded import EmbeddedTemporal
from docktor.plan import ServicePlan
from docktor.spec import ServiceSpec

CONFIG_HASH = "3f1c0ffee0ddba11" * 4
MakeReplica = Callable[..., Container]


@pytest.fixture
def client(docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> docker.DockerClient:
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    return docker.DockerClient(base_url=docker_engine.host)


@pytest.fixture
def project() -> str:
    return f"dk{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_replica(
    client: docker.DockerClient, busybox_image: str, project: str
) -> Iterator[MakeReplica]:
    """Create a container as `docker compose up` would for (project, service, number)."""
    projects = {project}

    def make(
        service: str,
        number: int = 1,
        *,
        in_project: str | None = None,
        name: str | None = None,
        start: bool = True,
        **overrides: Any,
    ) -> Container:
        proj = in_project or project
        projects.add(proj)
        options: dict[str, Any] = {
            "command": ["sleep", "3600"],
            "environment": {"FOO": "bar", "REPLICA_OF": service},
            "network_mode": "none",
            # busybox's sleep as pid 1 ignores SIGTERM; SIGKILL keeps scale-downs instant and
            # shows the stop signal being cloned.
            "stop_signal": "SIGKILL",
            "labels": {
                "com.docker.compose.project": proj,
                "com.docker.compose.service": service,
                "com.docker.compose.oneoff": "False",
                "com.docker.compose.container-number": str(number),
                "com.docker.compose.config-hash": CONFIG_HASH,
                "com.docker.compose.version": "1.29.2",
                "com.example.team": "payments",
            },
            **overrides,
        }
        container = client.containers.create(
            busybox_image, name=name or f"{proj}-{service}-{number}", **options
        )
        if start:
            container.start()
            container.reload()
        return container

    yield make
    for proj in projects:
        for container in client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={proj}"}
        ):
            container.remove(force=True, v=True)


def service_containers(
    client: docker.DockerClient, project: str, service: str
) -> dict[str, Container]:
    found = client.containers.list(
        all=True,
        filters={
            "label": [
                f"com.docker.compose.project={project}",
                f"com.docker.compose.service={service}",
            ]
        },
    )
    return {c.name: c for c in found}


def scaler(project: str, name: str = "worker", **spec: Any) -> ComposeScaler:
    service = ServicePlan.from_spec(ServiceSpec(name=name, backend="compose", **spec))
    built = Backends().of(service).service(service, project)  # type: ignore[attr-defined]
    assert isinstance(built, ComposeScaler)
    return built


async def test_scales_1_to_5_to_2_cloning_the_replica(
    client: docker.DockerClient, make_replica: MakeReplica, project: str, tmp_path: Path
) -> None:
    (tmp_path / "config.txt").write_text("shared\n")
    first = make_replica(
        "worker",
        volumes={str(tmp_path): {"bind": "/config", "mode": "ro"}},
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        working_dir="/config",
        user="1000:1000",
        healthcheck={"test": ["CMD", "true"], "interval": 5_000_000_000},
    )
    neighbour = make_replica("other")
    same_service_elsewhere = make_replica("worker", in_project=f"{project}x")
    workers = scaler(project)

    assert await workers.replicas() == 1
    await workers.validate()

    assert await workers.scale_to(5) == 5
    containers = service_containers(client, project, "worker")
    assert sorted(containers) == [f"{project}-worker-{i}" for i in range(1, 6)]
    template = first.attrs
    for name, container in containers.items():
        attrs = container.attrs
        labels = attrs["Config"]["Labels"]
        assert container.status == "running", name
        assert labels["com.docker.compose.container-number"] == name.rsplit("-", 1)[1]
        assert labels["com.docker.compose.config-hash"] == CONFIG_HASH
        assert labels["com.docker.compose.oneoff"] == "False"
        assert labels["com.example.team"] == "payments"
        assert attrs["Config"]["Cmd"] == ["sleep", "3600"]
        assert "FOO=bar" in attrs["Config"]["Env"]
        assert attrs["Config"]["User"] == "1000:1000"
        assert attrs["Config"]["WorkingDir"] == "/config"
        assert attrs["Config"]["StopSignal"] == "SIGKILL"
        assert attrs["Config"]["Healthcheck"] == template["Config"]["Healthcheck"]
        assert attrs["HostConfig"]["Binds"] == [f"{tmp_path}:/config:ro"]
        assert attrs["HostConfig"]["RestartPolicy"] == template["HostConfig"]["RestartPolicy"]
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        # A hostname of its own, not the template's id.
        assert attrs["Config"]["Hostname"] == attrs["Id"][:12]

    # Idempotent: asking again changes nothing.
    ids = {name: c.id for name, c in containers.items()}
    assert await workers.scale_to(5) == 5
    assert {n: c.id for n, c in service_containers(client, project, "worker").items()} == ids

    assert await workers.scale_to(2) == 2
    remaining = service_containers(client, project, "worker")
    # The highest numbers went, and they were removed, not merely stopped.
    assert sorted(remaining) == [f"{project}-worker-1", f"{project}-worker-2"]
    assert remaining[f"{project}-worker-1"].id == first.id
    assert all(c.status == "running" for c in remaining.values())
    assert await workers.replicas() == 2

    # Neighbours (another service, the same service in another project) were never touched.
    for other in (neighbour, same_service_elsewhere):
        before = other.attrs["State"]["StartedAt"]
        other.reload()
        assert other.status == "running"
        assert other.attrs["State"]["StartedAt"] == before
    assert len(service_containers(client, project, "other")) == 1


async def test_stopped_replicas_are_restarted_and_zero_keeps_a_template(
    client: docker.DockerClient, make_replica: MakeReplica, project: str
) -> None:
    make_replica("worker", 1)
    second = make_replica("worker", 2)
    second.stop(timeout=0)
    workers = scaler(project)
    # An exited replica is not counted...
    assert await workers.replicas() == 1

    # ...and a scale-up starts it again rather than making a third container.
    assert await workers.scale_to(2) == 2
    containers = service_containers(client, project, "worker")
    assert sorted(containers) == [f"{project}-worker-1", f"{project}-worker-2"]
    assert containers[f"{project}-worker-2"].id == second.id

    # Scaling to zero stops everything but keeps replica 1 as the template...
    assert await workers.scale_to(0) == 0
    containers = service_containers(client, project, "worker")
    assert sorted(containers) == [f"{project}-worker-1"]
    assert containers[f"{project}-worker-1"].status == "exited"
    assert await workers.scale_to(0) == 0

    # ...from which the service comes back.
    assert await workers.scale_to(3) == 3
    assert sorted(service_containers(client, project, "worker")) == [
        f"{project}-worker-{i}" for i in (1, 2, 3)
    ]


def test_docktor_down_replicas_stops_a_compose_service_whose_loop_is_gone(
    client: docker.DockerClient,
    make_replica: MakeReplica,
    project: str,
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
) -> None:
    make_replica("worker", 1)
    make_replica("worker", 2)
    document = {
        "project": project,
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-{project}"},
        "services": [{"name": "worker", "backend": "compose"}],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    # DOCKER_HOST (set by the client fixture) reaches the command through the environment.
    down = subprocess.run(
        [sys.executable, "-m", "docktor", "down", "--replicas", "--yes", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert down.returncode == 0, down.stderr
    assert f"worker: no loop was running (no workflow docktor:{project}:worker)" in down.stdout
    assert "worker: stopped 2 replicas (compose backend)" in down.stdout
    # Below min_replicas (1), to 0: one stopped container stays as the template.
    containers = service_containers(client, project, "worker")
    assert [c.status for c in containers.values()] == ["exited"]


async def test_compose_v1_names_keep_their_underscores(
    client: docker.DockerClient, make_replica: MakeReplica, project: str
) -> None:
    make_replica("worker", name=f"{project}_worker_1")
    assert await scaler(project).scale_to(2) == 2
    assert sorted(service_containers(client, project, "worker")) == [
        f"{project}_worker_1",
        f"{project}_worker_2",
    ]


async def test_scale_down_uses_the_configured_grace_period(
    client: docker.DockerClient, make_replica: MakeReplica, project: str
) -> None:
    # A replica that ignores SIGTERM (sleep as pid 1): with a grace period of 0 the stop kills
    # it at once instead of waiting the default 10 s.
    make_replica("worker", 1, stop_signal="SIGTERM")
    make_replica("worker", 2, stop_signal="SIGTERM")
    workers = scaler(project, stop_grace_period=0)
    assert workers._stop_timeout(client.api.inspect_container(f"{project}-worker-1")) == 0
    assert await workers.scale_to(1) == 1
    assert sorted(service_containers(client, project, "worker")) == [f"{project}-worker-1"]


def test_stop_timeout_comes_from_the_container_unless_configured() -> None:
    # Compose writes stop_grace_period into Config.StopTimeout (docker-py's high-level create
    # cannot set it, hence an inspect-shaped dict rather than a container).
    template: dict[str, Any] = {"Config": {"StopTimeout": 42}}
    assert scaler("proj")._stop_timeout(template) == 42
    assert scaler("proj", stop_grace_period="3s")._stop_timeout(template) == 3
    assert scaler("proj")._stop_timeout({"Config": {}}) == 10


async def test_refuses_container_name(make_replica: MakeReplica, project: str) -> None:
    make_replica("worker", name=f"{project}-fixed-worker")
    workers = scaler(project)
    with pytest.raises(ScalerConfigError) as err:
        await workers.validate()
    message = str(err.value)
    assert message.startswith("services.worker:")
    assert "container_name" in message and f"{project}-fixed-worker" in message
    assert "\n" not in message
    with pytest.raises(ScalerConfigError):
        await workers.scale_to(2)


async def test_refuses_a_fixed_host_port(
    client: docker.DockerClient, make_replica: MakeReplica, project: str
) -> None:
    # Created, not started: the check reads the configuration, and nothing binds the port.
    make_replica("web", ports={"8080/tcp": 18080}, start=False)
    web = scaler(project, name="web")
    with pytest.raises(ScalerConfigError) as err:
        await web.scale_to(2)
    message = str(err.value)
    assert message.startswith("services.web:") and "18080" in message and "\n" not in message
    assert len(service_containers(client, project, "web")) == 1


async def test_an_ephemeral_host_port_is_fine(make_replica: MakeReplica, project: str) -> None:
    make_replica("web", ports={"8080/tcp": None}, start=False)
    await scaler(project, name="web").validate()


async def test_refuses_a_service_without_a_container(
    make_replica: MakeReplica, project: str
) -> None:
    make_replica("other")
    workers = scaler(project)
    assert await workers.replicas() == 0
    for attempt in (workers.validate(), workers.scale_to(2)):
        with pytest.raises(ScalerConfigError) as err:
            await attempt
        assert "run `docker compose up -d worker` first" in str(err.value)


async def test_unreachable_engine_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    workers = scaler("proj")
    for attempt in (workers.replicas(), workers.scale_to(2), workers.validate()):
        with pytest.raises(ScalerUnavailable) as err:
            await attempt
        message = str(err.value)
        assert "cannot reach the Docker engine at unix:///nonexistent.sock" in message
        assert "\n" not in message


def test_clones_join_user_networks_with_the_service_alias() -> None:
    # Bridge networks cannot be made on the test engine (no bridge, no iptables), so this reads
    # an inspect-shaped template instead: aliases as Compose sets them, minus the template's own
    # id and name, and no endpoint settings for the built-in modes.
    template: dict[str, Any] = {
        "Id": "0123456789abcdef0123",
        "Name": "/proj-worker-1",
        "NetworkSettings": {
            "Networks": {
                "proj_default": {
                    "Aliases": ["proj-worker-1", "worker", "0123456789ab", "jobs"],
                    "Links": None,
                },
                "host": {"Aliases": None},
            }
        },
    }
    assert scaler("proj")._networks(template) == {"proj_default": {"Aliases": ["worker", "jobs"]}}


def test_refuses_a_fixed_network_address() -> None:
    template: dict[str, Any] = {
        "HostConfig": {"PortBindings": {}},
        "NetworkSettings": {
            "Networks": {"proj_default": {"IPAMConfig": {"IPv4Address": "172.30.0.5"}}}
        },
    }
    with pytest.raises(ScalerConfigError, match="172.30.0.5"):
        scaler("proj")._check_template(template)
