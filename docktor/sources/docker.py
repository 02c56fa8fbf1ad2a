"""Container CPU and memory from the Docker engine (`kind: docker`, used for `cpu.*`/`mem.*`).

A service's replicas are its running containers: the Compose labels (project + service, not
one-off) for `backend: compose`; for `backend: swarm` the task containers of the very swarm
service the backend scales (found as it finds it, then by the service's id: a name alone may
be another stack's). Each replica gives one `stats(stream=False)`, which the engine answers after
taking two readings about a second apart (it fills `precpu_stats`), so one sample costs about a
second. All replicas are read at once in threads: twenty replicas cost about one sample.

The figures are the ones `docker stats` prints:
- CPU % = (cpu delta / system delta) x online CPUs x 100, so one busy core reads 100;
- memory % = (usage - inactive file cache) / limit x 100, the cache being reclaimable.

CPU is averaged over the service's `metrics_window` (one check interval unless set): the engine's
counters are cumulative, so the delta from the reading of each container that this source took
closest to `window` seconds ago is that average, exactly, however busy the container was in
between. Until there is such a reading (the first sample, a new worker, a new container) it is
the engine's own one-second delta. Memory is the figure of the moment.

A service with no running replica gives no cpu/mem metrics at all, not zeros: "nothing runs" is
not "idle", and a scale-down rule must not fire on it.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from docktor import names
from docktor.backends.swarm import find_service
from docktor.docker_engine import EngineUnavailable, docker_client, engine_call
from docktor.plan import ServicePlan
from docktor.sources.base import MetricConfigError, MetricUnavailable
from docktor.text import source_error

GAUGES = ("cpu.avg_pct", "cpu.max_pct", "cpu.min_pct", "mem.avg_pct")
# What the engine labels each task container of a swarm service with.
SWARM_SERVICE_ID_LABEL = "com.docker.swarm.service.id"
# Threads for the blocking stats calls, shared by every service a worker samples. Each call
# mostly waits (about a second, on the engine), so many threads cost little; the default
# executor's min(32, cpus + 4) would read twenty replicas in several rounds on a small machine.
MAX_THREADS = 64
# Readings kept per container for the CPU window: a window of many check intervals keeps one
# reading per window / MAX_READINGS seconds.
MAX_READINGS = 32
NANOSECONDS = 1e9


class DockerMetricSource:
    """MetricSource for the containers of a compose or swarm service."""

    # Configured by the service itself (its backend and name), not by a `queue:` block.
    config_model = None
    provides = GAUGES
    rates: dict[str, str] = {}

    def __init__(self, max_threads: int = MAX_THREADS) -> None:
        self._max_threads = max_threads
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._cpu = CpuWindows()

    async def sample(self, spec: ServicePlan) -> tuple[dict[str, float], dict[str, float]]:
        client = await self._run(docker_client)
        swarm_service = None
        if spec.backend == "swarm":
            swarm_service = await self._swarm_service(client, spec)
            if swarm_service is None:
                return {}, {}  # no such service: nothing runs
        filters = replica_filters(spec, swarm_service)
        rows = await self._run(client.api.containers, filters=filters)
        stats = await asyncio.gather(*(self._run(_stats, client, row["Id"]) for row in rows))
        found = {row["Id"]: one for row, one in zip(rows, stats, strict=True) if one is not None}
        key = (spec.project, spec.backend, spec.name)
        cpu = self._cpu.average(key, found, spec.window)
        mem = [m for m in (mem_percent(one) for one in found.values()) if m is not None]
        gauges: dict[str, float] = {}
        if cpu:
            gauges["cpu.avg_pct"] = sum(cpu) / len(cpu)
            gauges["cpu.max_pct"] = max(cpu)
            gauges["cpu.min_pct"] = min(cpu)
        if mem:
            gauges["mem.avg_pct"] = sum(mem) / len(mem)
        return gauges, {}

    async def validate(self, spec: ServicePlan) -> None:
        replica_filters(spec, "")

    async def _swarm_service(self, client: docker.DockerClient, spec: ServicePlan) -> str | None:
        """The id of the swarm service the backend scales for spec, or None when none is."""
        try:
            found, _ = await self._run(
                find_service, client, spec.name, names.project_name(spec.project)
            )
        except docker.errors.APIError as exc:
            # Not a swarm manager, or the engine failing: the backend says which.
            raise MetricUnavailable(f"Docker engine: {exc.explanation or exc}") from None
        return None if found is None else str(found.id)

    async def close(self) -> None:
        # The engine client is shared (docktor.docker_engine); only the threads are ours.
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking SDK call in the pool; an unreachable engine -> MetricUnavailable."""
        try:
            return await engine_call(fn, *args, executor=self._pool(), **kwargs)
        except EngineUnavailable as exc:
            # One short line without credentials: a DOCKER_HOST URL may carry them.
            raise MetricUnavailable(source_error(str(exc))) from None

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._max_threads, thread_name_prefix="docktor-stats"
                )
            return self._executor


def replica_filters(spec: ServicePlan, swarm_service: str | None = None) -> dict[str, Any]:
    """The engine's container filter for this service's running replicas; for a swarm service,
    those of the service with the id `swarm_service`."""
    if spec.backend == "swarm":
        labels = [f"{SWARM_SERVICE_ID_LABEL}={swarm_service}"]
    elif spec.backend == "compose":
        labels = [
            f"com.docker.compose.service={spec.name}",
            "com.docker.compose.oneoff=False",
        ]
        # The loader always fills the project in; a spec built by hand without one matches the
        # service in every project rather than none.
        if spec.project:
            labels.append(f"com.docker.compose.project={spec.project}")
    else:
        raise MetricConfigError(
            f"services.{spec.name}.rules: cpu.* and mem.* metrics come from the Docker engine "
            f"and need backend 'compose' or 'swarm', not '{spec.backend}'"
        )
    return {"label": labels, "status": "running"}


def _stats(client: docker.DockerClient, container_id: str) -> dict[str, Any] | None:
    """One container's stats; None if it stopped or vanished since the list call."""
    try:
        return client.api.stats(container_id, stream=False)
    except docker.errors.APIError as exc:
        # Gone (404) or no longer running (409) since the list call: not a replica any more.
        if exc.status_code in (404, 409):
            return None
        raise


@dataclass(frozen=True)
class CpuReading:
    """The engine's cumulative counters at one moment: the container's CPU time and the host's
    (both in ns, the host's summed over its `online` CPUs, so it is also a clock)."""

    total: float
    system: float
    online: int

    def seconds_after(self, earlier: CpuReading) -> float:
        return (self.system - earlier.system) / (self.online * NANOSECONDS)

    def percent_since(self, earlier: CpuReading) -> float | None:
        """Docker CLI's calculateCPUPercentUnix between two readings; None when there is no
        host time between them or the container's counter went back (it restarted)."""
        system_delta = self.system - earlier.system
        cpu_delta = self.total - earlier.total
        if system_delta <= 0 or cpu_delta < 0:
            return None
        return cpu_delta / system_delta * self.online * 100.0


def cpu_reading(block: dict[str, Any] | None) -> CpuReading | None:
    """A reading from `cpu_stats` or `precpu_stats`; None when the engine left it empty (a
    container that stopped, or has only just started)."""
    block = block or {}
    usage = block.get("cpu_usage") or {}
    total = usage.get("total_usage")
    system = block.get("system_cpu_usage")
    online = block.get("online_cpus") or len(usage.get("percpu_usage") or [])
    if total is None or not system or online <= 0:
        return None
    return CpuReading(total=float(total), system=float(system), online=int(online))


def cpu_percent(stats: dict[str, Any]) -> float | None:
    """The engine's one-second figure, as `docker stats` prints it."""
    now = cpu_reading(stats.get("cpu_stats"))
    before = cpu_reading(stats.get("precpu_stats"))
    if now is None or before is None:
        return None
    return now.percent_since(before)


class CpuWindows:
    """Per service, the CPU readings this source took of each of its containers, for CPU %
    averaged over a window. Used from the event loop only (the stats calls run in threads)."""

    def __init__(self) -> None:
        self._readings: dict[tuple[Any, ...], dict[str, list[CpuReading]]] = {}

    def average(
        self, key: tuple[Any, ...], stats: dict[str, dict[str, Any]], window: float
    ) -> list[float]:
        """CPU % of each container in `stats` (container id -> its stats) over the span closest
        to `window` seconds; containers no longer listed are forgotten."""
        before = self._readings.get(key, {})
        kept: dict[str, list[CpuReading]] = {}
        figures: list[float] = []
        for container, one in stats.items():
            now = cpu_reading(one.get("cpu_stats"))
            if now is None:
                continue
            history = before.get(container, [])
            if any(r.total > now.total or r.system >= now.system for r in history):
                # The container's counter went back (it restarted), or the host's did: the
                # readings before it measure nothing now.
                history = []
            engine = cpu_reading(one.get("precpu_stats"))
            candidates = [*history, *([engine] if engine is not None else [])]
            usable = [c for c in candidates if now.percent_since(c) is not None]
            if usable:
                closest = min(usable, key=lambda r: abs(now.seconds_after(r) - window))
                percent = now.percent_since(closest)
                if percent is not None:
                    figures.append(percent)
            kept[container] = _keep(history, now, window)
        self._readings[key] = kept
        return figures


def _keep(history: list[CpuReading], now: CpuReading, window: float) -> list[CpuReading]:
    """The readings a later window may measure from: those within the window and the youngest
    one beyond it, at most MAX_READINGS, one per window / MAX_READINGS seconds."""
    if not history or now.seconds_after(history[-1]) >= window / MAX_READINGS:
        history = [*history, now]
    older = [i for i, r in enumerate(history) if now.seconds_after(r) > window]
    if older:
        history = history[older[-1] :]
    return history[-MAX_READINGS:]


def mem_percent(stats: dict[str, Any]) -> float | None:
    """Docker CLI's memory %: usage minus the inactive file cache, over the limit."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    limit = memory.get("limit")
    if usage is None or not limit:
        return None
    detail = memory.get("stats") or {}
    # cgroup v1 names it total_inactive_file, v2 inactive_file; old engines only had "cache".
    for key in ("total_inactive_file", "inactive_file", "cache"):
        cache = detail.get(key)
        if cache is not None and cache < usage:
            usage -= cache
            break
    return usage / limit * 100.0
