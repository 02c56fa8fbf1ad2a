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

import re
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


# `password_env` is read by the worker, whose environment holds other secrets too. A name that
# docktor or the software around it uses for something else is refused, so a config (or a spec
# that reached the worker another way) cannot send the worker's OpenAI key, AWS credentials or
# Temporal TLS key to a queue server as a password.
RESERVED_VARIABLES = frozenset(
    {
        "OPENAI_API_KEY",
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "OLDPWD",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "TMPDIR",
        "HOSTNAME",
        "MAIL",
    }
)
RESERVED_PREFIXES = (
    "DOCKTOR_",  # docktor's own settings, and what each replica is told
    "TEMPORAL_",  # the Temporal address, namespace, API key, TLS files
    "DOCKER_",  # the engine the compose/swarm backends and the docker source use
    "COMPOSE_",
    "OPENAI_",  # the OpenAI client's key, organisation, base URL
    "AWS_",
    "LC_",
    "LD_",
    "PYTHON",
    "SSH_",
    "XDG_",
)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def password_variable(name: str) -> str:
    """`name` if a `password_env` may name it; ValueError saying why not otherwise. For the
    field validators of the queue kinds that read a password from the worker's environment."""
    if not _VARIABLE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an environment variable name")
    upper = name.upper()
    if upper in RESERVED_VARIABLES or upper.startswith(RESERVED_PREFIXES):
        raise ValueError(
            f"{name} is used for something else in the worker's environment; name a variable "
            "that holds only this password (e.g. QUEUE_PASSWORD)"
        )
    return name
