"""The swarm backend on a real single-node swarm of the session's private dockerd.

Services run busybox `sleep` on the host network with no published ports, so no task needs the
overlay/ingress network. Swarm mode itself still wants a gateway bridge (`docker_gwbridge`) for
its ingress sandbox and creates one at `swarm init`; the fixture creates it first instead, with a
link name of its own (a host-wide name, so two test engines on one machine cannot collide), no
masquerading and no containers on it, and removes it after leaving the swarm.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Callable, Iterator

import docker
import docker.errors
import pytest
from docker.models.services import Service
from docker.types import ServiceMode
from docker_engine import DockerEngine
from helpers import async_wait_for, wait_for

from docktor.backends import Backends, ScalerConfigError, ScalerUnavailable
from docktor.backends.swarm import STACK_NAMESPACE_LABEL, SwarmScaler
from docktor.docker_engine import reset_clients
from docktor.plan import ServicePlan
from docktor.sources.docker import DockerMetricSource

PROJECT = "dkswarm"
# `sleep` as PID 1 ignores SIGTERM, which would make each stopped task wait out the grace period.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
GATEWAY_NETWORK = "docker_gwbridge"  # the name swarm mode looks for; the link name is ours


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_udp_port() -> int:
    # Swarm's data path (VXLAN) port must lie in 1024-49151, below the kernel's ephemeral range,
    # so ask for one there rather than port 0. Not taking the default 4789 keeps this engine
    # clear of any other swarm on the machine.
    for _ in range(100):
        port = random.randint(20000, 40000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port in 20000-40000")


@pytest.fixture(scope="module")
def swarm(docker_engine: DockerEngine) -> Iterator[docker.DockerClient]:
    """A single-node swarm on the session engine for this module, left again at the end."""
    client = docker.DockerClient(base_url=docker_engine.host)
    with pytest.MonkeyPatch.context() as mp:
        # docktor finds the engine through DOCKER_HOST, as a worker would.
        mp.setenv("DOCKER_HOST", docker_engine.host)
        reset_clients()
        gateway = client.networks.create(
            GATEWAY_NETWORK,
            driver="bridge",
            internal=True,
            options={
                "com.docker.network.bridge.name": f"dkgw{os.getpid() % 100000}",
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "false",
            },
        )
        client.swarm.init(
            advertise_addr="127.0.0.1",
            listen_addr=f"127.0.0.1:{_free_tcp_port()}",
            data_path_port=_free_udp_port(),
        )
        try:
            yield client
        finally:
            for service in client.services.list():
                service.remove()
            client.swarm.leave(force=True)
            # The ingress sandbox lets go of the gateway network shortly after the leave.
            wait_for(lambda: _removed(client, gateway.id), timeout=30, message="gwbridge removal")
            reset_clients()
            client.close()


def _removed(client: docker.DockerClient, network_id: str) -> bool:
    try:
        client.networks.get(network_id).remove()
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError:
        return False  # still has endpoints: try again
    return True


MakeService = Callable[..., Service]


@pytest.fixture
def make_service(swarm: docker.DockerClient, busybox_image: str) -> Iterator[MakeService]:
    created: list[Service] = []

    def make(name: str, mode: ServiceMode, stack: str | None = None) -> Service:
        # `docker stack deploy` labels the service and its task containers with the stack.
        labels = {STACK_NAMESPACE_LABEL: stack} if stack is not None else None
        service = swarm.services.create(
            busybox_image,
            SLEEPER,
            name=name,
            mode=mode,
            labels=labels,
            container_labels=labels,
            # Host network, no published ports: no overlay or ingress network is involved.
            networks=["host"],
        )
        created.append(service)
        return service

    yield make
    for service in created:
        with contextlib.suppress(docker.errors.NotFound):
            service.remove()


def _spec(name: str, project: str = PROJECT) -> ServicePlan:
    return ServicePlan(name=name, backend="swarm", project=project)


def _version(swarm: docker.DockerClient, name: str) -> int:
    return int(swarm.services.get(name).attrs["Version"]["Index"])


async def test_engine_outside_a_swarm_is_refused(
    docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # First in the module, before the `swarm` fixture makes the engine a manager.
    client = docker.DockerClient(base_url=docker_engine.host)
    if client.info()["Swarm"]["LocalNodeState"] != "inactive":
        pytest.skip("the session engine is already in a swarm")
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    scaler = SwarmScaler(_spec("sw-workers"), project=PROJECT)
    with pytest.raises(ScalerConfigError, match="not a swarm manager"):
        await scaler.replicas()


async def test_scales_2_to_4_to_1(make_service: MakeService) -> None:
    make_service("sw-workers", ServiceMode("replicated", replicas=2))
    spec = _spec("sw-workers")
    scaler = Backends().of(spec).service(spec, PROJECT)  # type: ignore[attr-defined]
    assert isinstance(scaler, SwarmScaler)
    await scaler.validate()

    async def two_running() -> bool:
        return await scaler.replicas() == 2

    await async_wait_for(two_running, timeout=60, message="2 tasks running")

    assert await scaler.scale_to(4) == 4
    assert await scaler.replicas() == 4
    assert await scaler.scale_to(1) == 1
    assert await scaler.replicas() == 1


async def test_scale_to_is_idempotent(
    swarm: docker.DockerClient,
    make_service: MakeService,
) -> None:
    make_service("sw-idem", ServiceMode("replicated", replicas=1))
    scaler = SwarmScaler(_spec("sw-idem"), project=PROJECT)
    assert await scaler.scale_to(3) == 3
    version = _version(swarm, "sw-idem")

    # Asking again for what is already set must not update the service: an update bumps its
    # version and makes the orchestrator reconcile (and possibly restart tasks) for nothing.
    assert await scaler.scale_to(3) == 3
    assert await scaler.scale_to(3) == 3
    assert _version(swarm, "sw-idem") == version


async def test_finds_a_stack_service_by_project_prefix(make_service: MakeService) -> None:
    # `docker stack deploy -c docker-compose.yaml dkswarm` names service `web` `dkswarm_web`.
    make_service(f"{PROJECT}_web", ServiceMode("replicated", replicas=1), stack=PROJECT)
    scaler = SwarmScaler(_spec("web"), project=PROJECT)
    assert await scaler.scale_to(2) == 2


async def test_another_stacks_service_of_the_same_name_is_never_scaled(
    swarm: docker.DockerClient, make_service: MakeService
) -> None:
    """Stack `dkswarm`'s service `b_c` and project `dkswarm_b`'s service `c` are both
    `dkswarm_b_c`: only the stack's own project scales it. A service of that name made by hand,
    in no stack, is not taken for a stack's either."""
    make_service(f"{PROJECT}_b_c", ServiceMode("replicated", replicas=1), stack=PROJECT)
    make_service(f"{PROJECT}_b_d", ServiceMode("replicated", replicas=1))
    versions = {name: _version(swarm, name) for name in (f"{PROJECT}_b_c", f"{PROJECT}_b_d")}
    for name in ("c", "d"):
        stranger = SwarmScaler(_spec(name, f"{PROJECT}_b"), project=f"{PROJECT}_b")
        with pytest.raises(ScalerConfigError, match="not to project 'dkswarm_b'"):
            await stranger.scale_to(3)
        with pytest.raises(ScalerConfigError, match="not to project 'dkswarm_b'"):
            await stranger.replicas()
    assert {name: _version(swarm, name) for name in versions} == versions
    owner = SwarmScaler(_spec("b_c"), project=PROJECT)
    assert await owner.scale_to(2) == 2


async def test_cpu_is_sampled_from_the_scaled_stack_service_only(make_service: MakeService) -> None:
    """The docker source reads the task containers of the service the backend scales: a stack's
    `dkswarm_api` for service `api`, and nothing for a project whose `<project>_<name>` is
    another stack's service."""
    make_service(f"{PROJECT}_api", ServiceMode("replicated", replicas=1), stack=PROJECT)
    source = DockerMetricSource()
    try:

        async def sampled() -> dict[str, float]:
            gauges, _ = await source.sample(_spec("api"))
            return gauges

        gauges = await async_wait_for(sampled, timeout=60, message="the task's CPU is read")
        assert isinstance(gauges, dict) and "cpu.avg_pct" in gauges
        # Project `dkswarm_a`'s service `pi` would be `dkswarm_api` too.
        assert await source.sample(_spec("pi", f"{PROJECT}_a")) == ({}, {})
    finally:
        await source.close()


async def test_global_service_is_refused(
    swarm: docker.DockerClient,
    make_service: MakeService,
) -> None:
    make_service("sw-everywhere", ServiceMode("global"))
    scaler = SwarmScaler(_spec("sw-everywhere"), project=PROJECT)
    version = _version(swarm, "sw-everywhere")
    with pytest.raises(ScalerConfigError, match="'sw-everywhere'.*global mode"):
        await scaler.validate()
    with pytest.raises(ScalerConfigError, match="'sw-everywhere'.*global mode"):
        await scaler.scale_to(3)
    assert _version(swarm, "sw-everywhere") == version


async def test_missing_service_is_refused(swarm: docker.DockerClient) -> None:
    scaler = SwarmScaler(_spec("nosuch"), project=PROJECT)
    with pytest.raises(ScalerConfigError, match=r"no swarm service 'nosuch'.*docker service ls"):
        await scaler.replicas()
    with pytest.raises(ScalerConfigError, match="no swarm service 'nosuch'"):
        await scaler.scale_to(1)


async def test_unreachable_engine_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    scaler = SwarmScaler(_spec("sw-workers"), project=PROJECT)
    with pytest.raises(ScalerUnavailable, match="cannot reach the Docker engine"):
        await scaler.replicas()
    with pytest.raises(ScalerUnavailable):
        await scaler.scale_to(2)
