"""Container CPU and memory from the Docker engine (`kind: docker`, used for `cpu.*`/`mem.*`).

A service's replicas are its running containers: the Compose labels (project + service, not
one-off) for `backend: compose`, the swarm task label `com.docker.swarm.service.name` for
`backend: swarm`. Each replica gives one `stats(stream=False)`, which the engine answers after
taking two readings about a second apart (it fills `precpu_stats`), so one sample costs about a
second. All replicas are read at once in threads: twenty replicas cost about one sample.

The figures are the ones `docker stats` prints:
- CPU % = (cpu delta / system delta) x online CPUs x 100, so one busy core reads 100;
- memory % = (usage - inactive file cache) / limit x 100, the cache being reclaimable.

A service with no running replica gives no cpu/mem metrics at all, not zeros: "nothing runs" is
not "idle", and a scale-down rule must not fire on it.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors

from docktor.config import ServiceSpec
from docktor.docker_engine import EngineUnavailable, docker_client, engine_call
from docktor.metrics.base import MetricConfigError, MetricUnavailable

GAUGES = ("cpu.avg_pct", "cpu.max_pct", "cpu.min_pct", "mem.avg_pct")
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"
# Threads for the blocking stats calls, shared by every service a worker samples. Each call
# mostly waits (about a second, on the engine), so many threads cost little; the default
# executor's min(32, cpus + 4) would read twenty replicas in several rounds on a small machine.
MAX_THREADS = 64


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

    async def sample(self, spec: ServiceSpec) -> tuple[dict[str, float], dict[str, float]]:
        filters = replica_filters(spec)
        client = await self._run(docker_client)
        rows = await self._run(client.api.containers, filters=filters)
        stats = await asyncio.gather(*(self._run(_stats, client, row["Id"]) for row in rows))
        cpu = [c for c, _ in (s for s in stats if s is not None) if c is not None]
        mem = [m for _, m in (s for s in stats if s is not None) if m is not None]
        gauges: dict[str, float] = {}
        if cpu:
            gauges["cpu.avg_pct"] = sum(cpu) / len(cpu)
            gauges["cpu.max_pct"] = max(cpu)
            gauges["cpu.min_pct"] = min(cpu)
        if mem:
            gauges["mem.avg_pct"] = sum(mem) / len(mem)
        return gauges, {}

    async def validate(self, spec: ServiceSpec) -> None:
        replica_filters(spec)

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
            raise MetricUnavailable(str(exc)) from None

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._max_threads, thread_name_prefix="docktor-stats"
                )
            return self._executor


def replica_filters(spec: ServiceSpec) -> dict[str, Any]:
    """The engine's container filter for this service's running replicas."""
    if spec.backend == "swarm":
        labels = [f"{SWARM_SERVICE_LABEL}={spec.name}"]
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


def _stats(client: docker.DockerClient, container_id: str) -> tuple[float | None, float | None]:
    """(cpu %, mem %) of one container; (None, None) if it stopped or vanished meanwhile."""
    try:
        stats: dict[str, Any] = client.api.stats(container_id, stream=False)
    except docker.errors.APIError as exc:
        # Gone (404) or no longer running (409) since the list call: not a replica any more.
        if exc.status_code in (404, 409):
            return None, None
        raise
    return cpu_percent(stats), mem_percent(stats)


def cpu_percent(stats: dict[str, Any]) -> float | None:
    """Docker CLI's calculateCPUPercentUnix; None when the engine had no two readings (the
    container stopped, or has just started)."""
    cpu = stats.get("cpu_stats") or {}
    pre = stats.get("precpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage")
    system = cpu.get("system_cpu_usage")
    pre_system = pre.get("system_cpu_usage")
    if total is None or pre_total is None or not system or not pre_system:
        return None
    cpu_delta = total - pre_total
    system_delta = system - pre_system
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    if system_delta <= 0 or online <= 0:
        return None
    return max(0.0, cpu_delta / system_delta * online * 100.0)


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
