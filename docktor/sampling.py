"""One observation of a service: its replica count plus every metric its rules can use.

The worker keeps one Sampler, so metric sources (and their pooled connections) are shared by
every service it serves instead of being opened per call.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from docktor.config import ServiceSpec
from docktor.metrics import MetricConfigError, MetricSource, MetricUnavailable, source_class
from docktor.model import Observation
from docktor.scalers import scaler_for

# Metric name prefix -> the source kind that provides it (queue.* comes from spec.queue.kind).
PREFIX_SOURCES = {"cpu.": "docker", "mem.": "docker"}


def source_kinds(spec: ServiceSpec) -> list[str]:
    """The metric source kinds this service needs."""
    kinds: list[str] = []
    if spec.queue is not None:
        kinds.append(spec.queue.kind)
    for metric in sorted(spec.metric_names()):
        for prefix, kind in PREFIX_SOURCES.items():
            if metric.startswith(prefix) and kind not in kinds:
                kinds.append(kind)
    return kinds


class Sampler:
    def __init__(self) -> None:
        self._sources: dict[str, MetricSource] = {}

    def source(self, kind: str) -> MetricSource:
        if kind not in self._sources:
            self._sources[kind] = source_class(kind)()
        return self._sources[kind]

    async def observe(self, spec: ServiceSpec, project: str) -> Observation:
        """Sample every source concurrently. A source that is misconfigured raises
        MetricConfigError; one that cannot be reached raises MetricUnavailable."""
        kinds = source_kinds(spec)
        scaler = scaler_for(spec, project=project)
        results = await asyncio.gather(
            scaler.replicas(),
            *(self.source(kind).sample(spec) for kind in kinds),
            return_exceptions=True,
        )
        replicas, *samples = results
        if isinstance(replicas, BaseException):
            raise replicas
        observation = Observation(taken_at=datetime.now(UTC), replicas=replicas)
        failures: list[BaseException] = []
        for kind, sample in zip(kinds, samples, strict=True):
            if isinstance(sample, BaseException):
                failures.append(sample)
                observation.errors.append(f"{kind}: {sample}")
                continue
            gauges, counters = sample
            observation.metrics.update(gauges)
            observation.counters.update(counters)
        if failures and not observation.metrics:
            # Nothing usable: let the activity's retry policy try again; configuration errors
            # first, since retrying them cannot help.
            config_errors = [f for f in failures if isinstance(f, MetricConfigError)]
            if config_errors:
                raise MetricConfigError("; ".join(observation.errors))
            raise MetricUnavailable("; ".join(observation.errors))
        return observation

    async def close(self) -> None:
        for source in self._sources.values():
            await source.close()
        self._sources.clear()
