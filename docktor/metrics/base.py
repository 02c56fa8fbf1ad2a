"""The contract every metric source keeps (after KEDA's three-method scaler interface)."""

from __future__ import annotations

from typing import Protocol

from docktor.config import ServiceSpec


class MetricConfigError(Exception):
    """The source is misconfigured (a stream or consumer that does not exist): retrying the same
    call cannot help, so the loop records it instead of retrying."""


class MetricUnavailable(Exception):
    """The source could not be read this time (server down, timeout): worth retrying."""


class MetricSource(Protocol):
    """One kind of metric (NATS JetStream, Docker, ...). A worker holds one instance per kind and
    shares its connections between all the services it serves."""

    async def sample(self, spec: ServiceSpec) -> tuple[dict[str, float], dict[str, float]]:
        """(gauges, counters) for this service now. Counters are monotonic values that the
        policy turns into rates by comparing consecutive samples."""
        ...

    async def validate(self, spec: ServiceSpec) -> None:
        """Raise MetricConfigError naming what is missing (stream, consumer...)."""
        ...

    async def close(self) -> None: ...
