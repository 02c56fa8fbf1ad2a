"""The `compose` backend: a Compose service's replicas are its containers, scaled through the
Docker engine API (the `docker` SDK), never through the compose CLI.

A replica is a container labelled `com.docker.compose.project=<project>`,
`com.docker.compose.service=<name>` and `com.docker.compose.oneoff=False`, exactly as Compose
labels the containers it makes, so `docker compose ps` and docktor see the same set.

- Scale up clones an existing replica (the template: the lowest-numbered running one) the way
  `docker compose up --scale` creates one more: the same image, command, entrypoint, environment,
  labels (`container-number` = the lowest free number, `config-hash` kept so Compose does not
  see the clone as out of date), mounts, restart policy, network mode and networks (with the
  service name as alias), user, working dir, stop signal, healthcheck... Name
  `<project>-<service>-<n>` (or `<project>_<service>_<n>` when the template has Compose v1's
  underscores). New replicas are created and started concurrently.
- Scale down stops (with the service's stop grace period) and removes the highest-numbered
  running replicas, with their anonymous volumes (an autoscaler cycling all day would otherwise
  leak one per cycle); named volumes and binds are never removed.
- Stopped replicas (exited, created) are not counted. A scale-up starts them again before it
  makes new ones, lowest number first, as `docker compose up --scale` does: the container keeps
  its logs and anonymous volumes. A `dead` container cannot start and is removed.
- Scaling to 0 stops the last replica but keeps it: without a compose file at run time, a
  stopped container is the only template the next scale-up has.
- Refused (ScalerConfigError, not retried): a service with `container_name` or a fixed host port
  (two replicas cannot share either), a fixed `ipv4_address`/`ipv6_address`, and a service with
  no container at all yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors

from docktor.backends.base import PerServiceBackend, ScalerConfigError, ScalerUnavailable
from docktor.docker_engine import EngineUnavailable, docker_client, engine_call, engine_host
from docktor.plan import ServicePlan

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
NUMBER_LABEL = "com.docker.compose.container-number"
# Network modes with no per-container endpoint settings: aliases only exist on user networks.
BUILTIN_NETWORKS = ("host", "none", "bridge", "default")
# Compose's own default, used when neither docktor's config nor the container names one.
DEFAULT_STOP_TIMEOUT_S = 10
# States a stopped replica can be started again from.
STARTABLE = ("exited", "created")

T = TypeVar("T")


@dataclass(frozen=True)
class Replica:
    """One container of the service, from the engine's container list (no inspect needed)."""

    id: str
    name: str
    number: int
    state: str  # running, exited, created, restarting, paused, dead...

    @property
    def running(self) -> bool:
        return self.state == "running"


class ComposeBackend(PerServiceBackend):
    """The `compose` backend as a worker holds it: one lock per service, because observe and
    apply may run at once in one worker, and two concurrent scale-ups would pick the same free
    number and collide on the container name."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    def service(self, spec: ServicePlan, project: str) -> ComposeScaler:
        return ComposeScaler(spec, project=project, backend=self)

    def lock_for(self, key: tuple[str, ...]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def close(self) -> None:
        # The engine client is shared (docktor.docker_engine); only the locks are ours.
        self._locks.clear()


class ComposeScaler:
    """One Compose service's replicas. See the module docstring. Built by ComposeBackend for
    each call; built alone (tools, tests), it has a backend of its own."""

    def __init__(
        self,
        spec: ServicePlan,
        project: str | None = None,
        backend: ComposeBackend | None = None,
    ) -> None:
        self.spec = spec
        self.project = project or spec.project or "default"
        self.backend = backend or ComposeBackend()
        self._name_re = re.compile(
            rf"^{re.escape(self.project)}(?P<sep>[-_]){re.escape(spec.name)}(?P=sep)\d+$"
        )

    # ---- one service's share of the Backend protocol -------------------------------------

    async def replicas(self) -> int:
        return sum(r.running for r in await self._list())

    async def validate(self) -> None:
        replicas = await self._list()
        self._check_names(replicas)
        template = await self._inspect(self._template(replicas).id)
        self._check_template(template)

    async def scale_to(self, n: int) -> int:
        if n < 0:
            raise ValueError(f"replica count must be >= 0, not {n}")
        async with self.backend.lock_for((engine_host(), self.project, self.spec.name)):
            replicas = await self._list()
            self._check_names(replicas)
            template = await self._inspect(self._template(replicas).id)
            self._check_template(template)
            running = sorted((r for r in replicas if r.running), key=lambda r: r.number)
            if n > len(running):
                await self._scale_up(n - len(running), replicas, template)
            elif n < len(running):
                # Scaling to 0 keeps the last replica (stopped) as the next scale-up's template,
                # unless a stopped replica is already there to serve as one.
                keep_template = n == 0 and all(r.running for r in replicas)
                await self._scale_down(running[n:], keep_template, template)
            return await self.replicas()

    # ---- scaling ----------------------------------------------------------------------------

    async def _scale_up(
        self, missing: int, replicas: list[Replica], template: dict[str, Any]
    ) -> None:
        client = await self._client()
        stopped = sorted((r for r in replicas if not r.running), key=lambda r: r.number)
        dead = [r for r in stopped if r.state == "dead"]
        restartable = [r for r in stopped if r.state in STARTABLE][:missing]
        # Dead containers cannot start; their numbers become free for the clones.
        await asyncio.gather(*(self._call(self._remove, client, r.id) for r in dead))
        taken = {r.number for r in replicas if r not in dead}
        free = (i for i in range(1, len(replicas) + missing + 2) if i not in taken)
        numbers = [next(free) for _ in range(missing - len(restartable))]
        separator = self._name_re.match(template["Name"].lstrip("/"))
        sep = separator.group("sep") if separator else "-"
        results = await asyncio.gather(
            *(self._call(client.api.start, r.id) for r in restartable),
            *(self._call(self._clone, client, template, i, sep) for i in numbers),
            return_exceptions=True,
        )
        # Every start was attempted; report the first failure (the others most likely share
        # its cause) after the successful ones have been left running.
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _scale_down(
        self, doomed: list[Replica], keep_template: bool, template: dict[str, Any]
    ) -> None:
        client = await self._client()
        timeout = self._stop_timeout(template)
        kept = doomed[0].id if keep_template else None
        await asyncio.gather(
            *(self._call(self._stop, client, r.id, timeout, r.id != kept) for r in doomed)
        )

    def _clone(
        self, client: docker.DockerClient, template: dict[str, Any], number: int, sep: str
    ) -> str:
        """Create and start replica `number` like `template`; returns its id. Runs in a thread."""
        api = client.api
        config = dict(template["Config"])
        host_config = dict(template["HostConfig"])
        name = f"{self.project}{sep}{self.spec.name}{sep}{number}"

        config["Labels"] = {**(config.get("Labels") or {}), NUMBER_LABEL: str(number)}
        config["Image"] = self._image(client, template)
        # The engine sets the hostname to the container's short id when none was asked for;
        # copying it would give every clone the template's id as hostname.
        if config.get("Hostname") == template["Id"][:12]:
            config.pop("Hostname", None)
        # A MAC address is per container; two equal ones on one network break both.
        config.pop("MacAddress", None)
        # Fields of the inspect output that are not create parameters, or that belong to the
        # template alone.
        host_config.pop("ContainerIDFile", None)

        networks = self._networks(template)
        mode = host_config.get("NetworkMode") or "default"
        primary = mode if mode in networks else None
        body: dict[str, Any] = {**config, "HostConfig": host_config}
        if primary:
            body["NetworkingConfig"] = {"EndpointsConfig": {primary: networks[primary]}}
        container_id: str = api.create_container_from_config(body, name=name)["Id"]
        try:
            # Engines before API 1.44 take one network at create; the others join before start
            # so the replica never runs half-connected.
            for network, endpoint in networks.items():
                if network == primary:
                    continue
                api.connect_container_to_network(
                    container_id,
                    network,
                    aliases=endpoint.get("Aliases"),
                    links=endpoint.get("Links"),
                    driver_opt=endpoint.get("DriverOpts"),
                )
            api.start(container_id)
        except BaseException:
            # A created-but-never-started clone would later be taken for a stopped replica and
            # restarted: remove it so a failed scale-up leaves nothing behind.
            # The original error is the one to report, not a failure of this cleanup.
            with contextlib.suppress(Exception):
                api.remove_container(container_id, v=True, force=True)
            raise
        return container_id

    def _networks(self, template: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Endpoint settings for each user network of the template, with the service name (and
        the template's own extra aliases, minus its id and name) as aliases, as Compose sets."""
        out: dict[str, dict[str, Any]] = {}
        own = {template["Id"], template["Id"][:12], template["Name"].lstrip("/")}
        attached = (template.get("NetworkSettings") or {}).get("Networks") or {}
        for network, endpoint in attached.items():
            if network in BUILTIN_NETWORKS:
                continue
            aliases = [self.spec.name] + [
                a for a in endpoint.get("Aliases") or [] if a not in own and a != self.spec.name
            ]
            settings: dict[str, Any] = {"Aliases": aliases}
            if endpoint.get("Links"):
                settings["Links"] = endpoint["Links"]
            if endpoint.get("DriverOpts"):
                settings["DriverOpts"] = endpoint["DriverOpts"]
            out[network] = settings
        return out

    @staticmethod
    def _image(client: docker.DockerClient, template: dict[str, Any]) -> str:
        """The template's image by name while the name still means the same image, else by id:
        a tag moved since (a rebuild without `up`) must not put a new version among the old."""
        name = template["Config"]["Image"]
        try:
            if client.api.inspect_image(name)["Id"] == template["Image"]:
                return name
        except docker.errors.ImageNotFound:
            pass
        return template["Image"]

    @staticmethod
    def _stop(client: docker.DockerClient, container_id: str, timeout: int, remove: bool) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.stop(container_id, timeout=timeout)
        if remove:
            ComposeScaler._remove(client, container_id)

    @staticmethod
    def _remove(client: docker.DockerClient, container_id: str) -> None:
        # Someone else removing it meanwhile is fine: the goal is reached anyway. v=True removes
        # anonymous volumes only; named volumes survive, as with `docker compose rm -v`.
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(container_id, v=True, force=True)

    def _stop_timeout(self, template: dict[str, Any]) -> int:
        """docktor's stop_grace_period when the config sets one, else the container's own
        (Compose writes `stop_grace_period` into StopTimeout), else Compose's 10 s."""
        if self.spec.stop_grace_period_set:
            return max(0, round(self.spec.stop_grace_period))
        own = template["Config"].get("StopTimeout")
        return int(own) if own is not None else DEFAULT_STOP_TIMEOUT_S

    # ---- what the engine knows --------------------------------------------------------------

    async def _list(self) -> list[Replica]:
        """Every container of this service, whatever its state, from one list call."""
        client = await self._client()
        filters = {
            "label": [
                f"{PROJECT_LABEL}={self.project}",
                f"{SERVICE_LABEL}={self.spec.name}",
                f"{ONEOFF_LABEL}=False",
            ]
        }
        rows = await self._call(client.api.containers, all=True, filters=filters)
        replicas = []
        for row in rows:
            label = (row.get("Labels") or {}).get(NUMBER_LABEL, "")
            replicas.append(
                Replica(
                    id=row["Id"],
                    name=(row.get("Names") or ["/"])[0].lstrip("/"),
                    number=int(label) if label.isdigit() else 0,
                    state=row.get("State", ""),
                )
            )
        return replicas

    async def _inspect(self, container_id: str) -> dict[str, Any]:
        client = await self._client()
        return await self._call(client.api.inspect_container, container_id)

    def _template(self, replicas: list[Replica]) -> Replica:
        if not replicas:
            raise self._error(
                f"no container of service '{self.spec.name}' in project '{self.project}' "
                f"(run `docker compose up -d {self.spec.name}` first)"
            )
        # A running replica is known to start; among equals the oldest number.
        return min(replicas, key=lambda r: (not r.running, r.number))

    def _check_names(self, replicas: list[Replica]) -> None:
        for replica in replicas:
            if not self._name_re.match(replica.name):
                raise self._error(
                    f"container '{replica.name}' has a fixed name (container_name), so the "
                    "service cannot have more than one replica: remove container_name"
                )

    def _check_template(self, template: dict[str, Any]) -> None:
        for port, bindings in (template["HostConfig"].get("PortBindings") or {}).items():
            for binding in bindings or []:
                host_port = (binding or {}).get("HostPort") or ""
                # A range ("8000-8010") lets the engine pick a free port per replica.
                if host_port and "-" not in host_port:
                    raise self._error(
                        f"port {port} is published on fixed host port {host_port}, which only "
                        "one replica can hold: publish the container port alone (e.g. "
                        f"'{port.split('/')[0]}') or a host port range"
                    )
        attached = (template.get("NetworkSettings") or {}).get("Networks") or {}
        for network, endpoint in attached.items():
            fixed = (endpoint or {}).get("IPAMConfig") or {}
            address = fixed.get("IPv4Address") or fixed.get("IPv6Address")
            if address:
                raise self._error(
                    f"network '{network}' gives the service the fixed address {address}, "
                    "which only one replica can hold: remove ipv4_address/ipv6_address"
                )

    def _error(self, problem: str) -> ScalerConfigError:
        return ScalerConfigError(f"services.{self.spec.name}: {problem}")

    # ---- calling the engine -----------------------------------------------------------------

    async def _client(self) -> docker.DockerClient:
        return await self._call(docker_client)

    @staticmethod
    async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call in a thread; a lost engine becomes ScalerUnavailable."""
        try:
            return await engine_call(fn, *args, **kwargs)
        except EngineUnavailable as exc:
            raise ScalerUnavailable(str(exc)) from None
