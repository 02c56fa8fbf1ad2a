"""The contract every metric source keeps (after KEDA's three-method scaler interface).

A source is a class registered in the entry-point group `docktor.metrics` under its kind. It
declares, as class attributes, everything the core needs to know about it without asking it:

- `config_model`: the model of the service's `queue:` block (a subclass of spec.QueueSpec),
  for a source configured by that block (`kind: nats`); None for one that reads only the
  service itself (`docker`: the containers of its backend). A config file is validated against
  it, so its errors name the source's own fields (`services[0].queue.stream`).
- `provides`: the metric names a service's rules and targets can use from it, including the
  rates it derives. A source without `config_model` is picked by these names (a rule on
  `cpu.avg_pct` samples the source that provides `cpu.avg_pct`).
- `rates`: counter -> rate metric. The source returns monotonic counters; the policy turns two
  consecutive samples of each into a per-second rate under this name.

See docs/plugins.md for a worked example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol, TypeVar

from pydantic import ValidationError

from docktor.plan import ServicePlan
from docktor.spec import QueueSpec


class MetricConfigError(Exception):
    """The source is misconfigured (a stream or consumer that does not exist): retrying the same
    call cannot help, so the loop records it instead of retrying."""


class MetricUnavailable(Exception):
    """The source could not be read this time (server down, timeout): worth retrying."""


class MetricSource(Protocol):
    """One kind of metric (NATS JetStream, Docker, ...). A worker holds one instance per kind for
    its whole life (built with no arguments) and shares its connections between all the services
    it serves; the service's plan (docktor.plan.ServicePlan) comes with each call, and the source
    reads its own fields from the plan's queue block with `queue_block`."""

    config_model: ClassVar[type[QueueSpec] | None]
    provides: ClassVar[tuple[str, ...]]
    rates: ClassVar[Mapping[str, str]]

    async def sample(self, spec: ServicePlan) -> tuple[dict[str, float], dict[str, float]]:
        """(gauges, counters) for this service now. Counters are monotonic values that the
        policy turns into rates (`rates`) by comparing consecutive samples."""
        ...

    async def validate(self, spec: ServicePlan) -> None:
        """Raise MetricConfigError naming what is missing (stream, consumer...)."""
        ...

    async def close(self) -> None: ...


Q = TypeVar("Q", bound=QueueSpec)


def queue_block(spec: ServicePlan, model: type[Q]) -> Q:
    """The service's `queue:` block as the source's own model.

    The plan carries the block with every field it had in the user's file (the workflow never
    loads plugins); the source reads it as its own model here. Fields the model does not know
    (from a release of the source that had them) are left out, as every payload is read
    tolerantly."""
    if spec.queue is None:
        raise MetricConfigError(f"services.{spec.name}: no queue: section")
    if isinstance(spec.queue, model):
        return spec.queue
    block = spec.queue.model_dump()
    try:
        return model.model_validate({k: v for k, v in block.items() if k in model.model_fields})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise MetricConfigError(f"services.{spec.name}.queue: {problems}") from None
