"""One observation of a service: its replica count plus every metric its rules can use.

The worker keeps one Sampler, so metric sources (and their pooled connections) are shared by
every service it serves instead of being opened per call; the replica count comes from the
worker's backend instances (docktor.backends.Backends), which the Sampler is given.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

from docktor.backends import Backends
from docktor.plan import ServicePlan
from docktor.sources import MetricConfigError, MetricSource, providers, source_class
from docktor.text import source_error
from docktor.values import Observation


def source_kinds(spec: ServicePlan) -> list[str]:
    """The metric source kinds this service needs: its queue's kind, and the source that
    provides each other metric its rules and targets name (as each source declares)."""
    kinds: list[str] = []
    if spec.queue is not None:
        kinds.append(spec.queue.kind)
    provided_by = providers()
    for metric in sorted(spec.metric_names()):
        kind = provided_by.get(metric)
        if kind is not None and kind not in kinds:
            kinds.append(kind)
    return kinds


def wanted(
    source: MetricSource, names: list[str], gauges: dict[str, float], counters: dict[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """Only the metrics a `queue.metrics` list names (empty: all), with the counters that the
    rates it names are derived from."""
    if not names:
        return gauges, counters
    keep = set(names)
    return (
        {k: v for k, v in gauges.items() if k in keep},
        {k: v for k, v in counters.items() if k in keep or source.rates.get(k) in keep},
    )


class Sampler:
    def __init__(self, backends: Backends | None = None) -> None:
        self._sources: dict[str, MetricSource] = {}
        # Given: the owner (LoopActivities) closes them; made here: closed with the sampler.
        self._own_backends = backends is None
        self.backends = backends or Backends()

    def source(self, kind: str) -> MetricSource:
        if kind not in self._sources:
            self._sources[kind] = source_class(kind)()
        return self._sources[kind]

    async def observe(
        self, spec: ServicePlan, project: str
    ) -> tuple[Observation, list[BaseException]]:
        """Count replicas and sample every source concurrently.

        A source that fails does not fail the observation: its error is listed in
        `observation.errors` and returned, so the caller can retry what is worth retrying while
        the replica count (and with it the min_replicas floor) stays usable. A scaler that
        cannot count replicas raises.

        Each error is listed as one short printable line without credentials (text.source_error):
        a source's message is not trusted, and the list travels in the decision's reason, the
        LLM prompt and every later workflow task. The returned exceptions are for telling
        what to retry, not for printing.
        """
        kinds = source_kinds(spec)
        backend = self.backends.of(spec)
        failures: list[BaseException] = []
        sources: list[MetricSource | None] = []
        for kind in kinds:
            try:
                sources.append(self.source(kind))
            except MetricConfigError as exc:
                failures.append(exc)
                sources.append(None)
        results = await asyncio.gather(
            backend.replicas(spec, project),
            *(s.sample(spec) for s in sources if s is not None),
            return_exceptions=True,
        )
        replicas, *samples = results
        if isinstance(replicas, BaseException):
            raise replicas
        observation = Observation(taken_at=datetime.now(UTC), replicas=replicas)
        observation.errors.extend(source_error(f"{exc}") for exc in failures)
        live_kinds = [k for k, s in zip(kinds, sources, strict=True) if s is not None]
        for kind, sample in zip(live_kinds, samples, strict=True):
            if isinstance(sample, BaseException):
                failures.append(sample)
                observation.errors.append(source_error(f"{kind}: {_message(sample)}"))
                continue
            gauges, counters = sample
            source = self.source(kind)
            if spec.queue is not None and kind == spec.queue.kind:
                gauges, counters = wanted(source, spec.queue.metrics, gauges, counters)
            observation.metrics.update(
                finite_values(kind, gauges, observation.errors, METRIC_LIMIT)
            )
            observation.counters.update(
                finite_values(kind, counters, observation.errors, COUNTER_LIMIT)
            )
            # Which rate each counter makes, as its source declares: the policy knows no names.
            observation.counter_rates.update(
                {c: source.rates[c] for c in counters if c in source.rates}
            )
        return observation, failures

    async def close(self) -> None:
        for source in self._sources.values():
            await source.close()
        self._sources.clear()
        if self._own_backends:
            await self.backends.close()


# Metric values are not trusted (SECURITY.md). A non-finite one travels in the observation's
# JSON payload as null, which the workflow cannot decode, and the target policy cannot round
# it to a replica count: it is left out as not observed, and the decision says why. A finite
# one beyond these limits is no real backlog, rate or percentage: it is capped, so that the
# policy's arithmetic stays finite (and the bounds then decide).
METRIC_LIMIT = 1e15
COUNTER_LIMIT = 1e30


def finite_values(
    kind: str, values: dict[str, float], errors: list[str], limit: float
) -> dict[str, float]:
    kept: dict[str, float] = {}
    for name, value in values.items():
        if not math.isfinite(value):
            errors.append(
                source_error(f"{kind}: {name} is not a finite number ({value}); not used")
            )
            continue
        kept[name] = max(-limit, min(limit, value))
    return kept


def _message(exc: BaseException) -> str:
    """What an exception says, or its type when it says nothing (a bare TimeoutError)."""
    return str(exc) or type(exc).__name__
