"""The `swarm` backend: a Docker Swarm service's replica count, through the engine's services API.

Which service (find_service): the one named exactly `spec.name`, else the stack service
`<project>_<name>`, which is how `docker stack deploy -c docker-compose.yaml <project>` names the
services of a stack. The plain name wins when both exist, so a service created by hand is never
shadowed by a stack's. A name alone does not say whose service it is: stack `a`'s service `b_c`
and stack `a_b`'s service `c` are both `a_b_c`. So a stack service must also carry the stack's
label `com.docker.stack.namespace` = project, and a service that carries another stack's is
never taken, whatever its name.

- `replicas()` counts the service's tasks that are running now and meant to be (desired state
  running): a task that is starting, or one being shut down after a scale-down, is not capacity.
- `scale_to(n)` sets the service's replica count, unless it is already n: an update bumps the
  service's version and makes the orchestrator reconcile again, so a repeated request (a retried
  activity, a loop holding at the same target) changes nothing. It then waits, up to
  CONVERGE_TIMEOUT, for n tasks to run, and returns what runs. The wait is bounded because a task
  that cannot start (image missing on a node, no resources) would otherwise hold the activity
  forever; the next observation sees the true count anyway.
- Global-mode services run one task per node: there is no count to set, so they are refused.

The engine comes from `docktor.docker_engine.docker_client()` (DOCKER_HOST and the usual Docker
environment); it must be a swarm manager. The SDK blocks, so every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.services import Service

from docktor import names
from docktor.backends.base import PerServiceBackend, ScalerConfigError, ScalerUnavailable
from docktor.docker_engine import EngineUnavailable, docker_client, engine_call
from docktor.plan import ServicePlan

# How long scale_to waits for the tasks to match the new count. A single-node scale of a few
# replicas converges in 1-3 s here; multi-node swarms pulling images need longer. The apply
# activity heartbeats while this runs and allows minutes, so a minute stays well inside it.
CONVERGE_TIMEOUT = 60.0
# Between looks at the task list while converging: each look is one API call listing tasks.
POLL_INTERVAL = 0.5
# What `docker stack deploy` labels every service (and task container) of a stack with.
STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"

T = TypeVar("T")


class SwarmBackend(PerServiceBackend):
    """The `swarm` backend as a worker holds it. The engine keeps the desired count and the
    engine client is shared (docktor.docker_engine), so there is no state of its own."""

    def service(self, spec: ServicePlan, project: str) -> SwarmScaler:
        return SwarmScaler(spec, project=project)


class SwarmScaler:
    """Scales a replicated Swarm service. See the module docstring."""

    def __init__(self, spec: ServicePlan, project: str | None = None) -> None:
        self.spec = spec
        self.project = names.project_name(project or spec.project)
        self.converge_timeout = CONVERGE_TIMEOUT

    # ---- one service's share of the Backend protocol -------------------------------------

    async def validate(self) -> None:
        service = await self._service()
        self._check_replicated(service)

    async def replicas(self) -> int:
        service = await self._service()
        return await self._call(self._running, service)

    async def scale_to(self, n: int) -> int:
        if n < 0:
            raise ValueError(f"replica count must be >= 0, not {n}")
        service = await self._service()
        self._check_replicated(service)
        if _desired(service) != n:
            await self._call(self._set_replicas, service, n)
        deadline = time.monotonic() + self.converge_timeout
        while True:
            running = await self._call(self._running, service)
            if running == n or time.monotonic() >= deadline:
                return running
            # Async sleep, not a blocking one: the activity's heartbeat task keeps beating.
            await asyncio.sleep(POLL_INTERVAL)

    # ---- helpers ----------------------------------------------------------------------------

    async def _service(self) -> Service:
        client = await self._client()
        found, problem = await self._call(find_service, client, self.spec.name, self.project)
        if found is None:
            raise self._error(problem)
        return found

    def _check_replicated(self, service: Service) -> None:
        mode = service.attrs.get("Spec", {}).get("Mode", {})
        if "Replicated" not in mode:
            kind = next(iter(mode), "unknown").lower()
            raise self._error(
                f"swarm service '{service.name}' runs in {kind} mode (one task per node), so "
                "it has no replica count to scale; use mode: replicated"
            )

    @staticmethod
    def _set_replicas(service: Service, n: int) -> None:
        # Re-read first: the service object may be a few seconds old, and an update must carry
        # the current version or the engine refuses it ("update out of sequence").
        service.reload()
        if _desired(service) == n:
            return
        # scale() sends the whole current spec back with only the replica count changed, so
        # image, env, networks and update config stay exactly as deployed. It answers with the
        # engine's warnings (a dict, often empty), not a success flag: failures raise APIError.
        service.scale(n)

    @staticmethod
    def _running(service: Service) -> int:
        tasks = service.tasks(filters={"desired-state": "running"})
        return sum(1 for task in tasks if task.get("Status", {}).get("State") == "running")

    def _error(self, problem: str) -> ScalerConfigError:
        return ScalerConfigError(f"services.{self.spec.name}: {problem}")

    async def _client(self) -> docker.DockerClient:
        return await self._call(docker_client)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking SDK call in a thread and translate the engine's failures: cannot
        reach it -> ScalerUnavailable (retried); not a swarm manager -> ScalerConfigError."""
        try:
            return await engine_call(fn, *args)
        except EngineUnavailable as exc:
            raise ScalerUnavailable(str(exc)) from exc
        except docker.errors.NotFound as exc:
            # Removed between the lookup and this call: as if it had never been there.
            raise self._error(
                f"swarm service '{self.spec.name}' went away ({_explain(exc)})"
            ) from exc
        except docker.errors.APIError as exc:
            text = _explain(exc)
            if "not a swarm manager" in text or "not part of a swarm" in text:
                # Only a manager can read or change services; retrying will not make it one.
                raise self._error(
                    "the Docker engine is not a swarm manager (run `docker swarm init`, or "
                    f"point DOCKER_HOST at a manager): {text}"
                ) from exc
            if exc.is_server_error():
                raise ScalerUnavailable(f"Docker engine: {text}") from exc
            raise self._error(f"Docker engine refused the request: {text}") from exc


def find_service(
    client: docker.DockerClient, name: str, project: str
) -> tuple[Service | None, str]:
    """The swarm service that docktor service `name` of `project` is (see the module
    docstring), or None and why none is. Blocking: call it in a thread."""
    stacked = f"{project}_{name}"
    refused: list[str] = []
    for candidate in dict.fromkeys((name, stacked)):
        service = _named(client, candidate)
        if service is None:
            continue
        stack = _namespace(service)
        # The plain name may be a service made by hand (no stack) or one of this project's
        # stack; the stack name must be this project's stack.
        if stack == project or (stack is None and candidate == name):
            return service, ""
        owner = f"stack '{stack}'" if stack is not None else "no stack"
        refused.append(f"'{candidate}' belongs to {owner}, not to project '{project}'")
    if refused:
        return None, f"no swarm service of this project: {'; '.join(refused)}"
    return None, f"no swarm service '{name}' or '{stacked}' (docker service ls)"


def _named(client: docker.DockerClient, name: str) -> Service | None:
    # The API's name filter matches prefixes ('web' also finds 'web-admin'), and
    # services.get() also accepts an id prefix, so compare the names exactly.
    for service in client.services.list(filters={"name": name}):
        if service.attrs.get("Spec", {}).get("Name") == name:
            return service
    return None


def _namespace(service: Service) -> str | None:
    labels = service.attrs.get("Spec", {}).get("Labels") or {}
    stack = labels.get(STACK_NAMESPACE_LABEL)
    return stack if isinstance(stack, str) else None


def _desired(service: Service) -> int | None:
    replicated = service.attrs.get("Spec", {}).get("Mode", {}).get("Replicated")
    if replicated is None:
        return None
    return int(replicated.get("Replicas", 0))


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)
