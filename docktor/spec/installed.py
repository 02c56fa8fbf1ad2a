"""What the installed plugins say about a file: a `queue:` block read by its kind's own model, the
metrics that kind provides, a `backend:` that is installed, and what that backend needs of a
service. The schema knows none of this; the loader runs these checks with its own, on the data
as the file wrote it, so every problem of a file is reported at once.

Only docktor.plugins is imported (it imports nothing of docktor's): the classes are loaded
through their entry points, so the spec never imports a source or a backend module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from docktor import plugins
from docktor.spec.errors import at, describe
from docktor.spec.primitives import short
from docktor.spec.schema import QueueSpec, ServiceSpec, Strict

log = logging.getLogger(__name__)

# A short name (`backlog`) of the Go tool's `queue.metrics` is the metric `queue.<name>`.
QUEUE_PREFIX = "queue."
# What the target policy's rate tracking reads (policy/recommend.py).
RATE_IN = "queue.rate_in"


@dataclass
class QueueCheck:
    """What the kind's model made of one `queue:` block."""

    problems: list[str] = field(default_factory=list)
    # The block as its kind's model wrote it (defaults filled in, old metric names read as the
    # current ones), when it is valid.
    block: dict[str, Any] | None = None
    # IGNORED_FIELDS the block set, as warning lines.
    ignored: list[str] = field(default_factory=list)
    # old short metric name -> the metric it names
    renamed: dict[str, str] = field(default_factory=dict)
    # Whether the kind derives queue.rate_in (from counters it reads): False for a queue that
    # keeps no counters (SQS), whose services track their target without the rate.
    rate_in: bool = True


def queue_kinds() -> list[str]:
    """The kinds a `queue:` block can name: installed sources that declare a config model."""
    kinds = []
    for kind in plugins.names(plugins.SOURCES):
        try:
            source = plugins.load(plugins.SOURCES, kind)
        except plugins.NotInstalled as exc:
            # A plugin that cannot load is left out here; naming its kind says why.
            log.warning("%s", exc)
            continue
        if getattr(source, "config_model", None) is not None:
            kinds.append(kind)
    return kinds


def check_queue(raw: Any, loc: tuple[Any, ...]) -> QueueCheck:
    """The `queue:` block at `loc`, by its kind's model. Anything but a mapping with a text
    `kind` is left to the schema, which reports it."""
    check = QueueCheck()
    if not isinstance(raw, dict):
        return check
    kind = raw.get("kind", "nats")
    if not isinstance(kind, str):
        return check
    source, problem = _queue_source(kind)
    if source is None:
        check.problems.append(at((*loc, "kind"), problem))
        return check
    model: type[QueueSpec] = source.config_model
    known = {*source.provides, *source.rates}
    check.rate_in = RATE_IN in known
    data = dict(raw)
    metrics = data.get("metrics")
    if isinstance(metrics, list):
        check.renamed = {
            name: QUEUE_PREFIX + name
            for name in metrics
            if isinstance(name, str) and name not in known and QUEUE_PREFIX + name in known
        }
        data["metrics"] = [check.renamed.get(name, name) for name in metrics]
    try:
        queue = model.model_validate(data)
    except ValidationError as exc:
        check.problems += [describe(error, model, loc) for error in exc.errors()]
        return check
    unknown = [name for name in queue.metrics if name not in known]
    if unknown:
        check.problems.append(
            at(
                (*loc, "metrics"),
                f"unknown {kind} metric {', '.join(map(short, unknown))} "
                f"(known: {', '.join(source.provides)})",
            )
        )
        return check
    check.block = queue.model_dump()
    check.ignored = ignored_settings(queue, loc)
    return check


def rate_default(raw: dict[str, Any], kind: str, loc: tuple[Any, ...]) -> tuple[Any, list[str]]:
    """The `rate:` block of a service whose queue kind has no queue.rate_in: rate tracking
    off unless the file turned it on (a problem then). With it on, the target policy would wait
    for a rate that never comes and, as missing data never scales down, never scale down; off,
    it sizes the pool from its targets (queue.backlog_per_replica) alone. Returns the block to
    use and the problems."""
    rate = raw.get("rate")
    if rate is None:
        return {"enabled": False}, []
    if not isinstance(rate, dict):
        return rate, []  # the schema says what is wrong with it
    if rate.get("enabled") is True:
        return rate, [
            at(
                (*loc, "rate", "enabled"),
                f"a {short(kind)} queue gives no queue.rate_in to track (its server keeps no "
                "counters); leave rate tracking off, the target policy then sizes from "
                "queue.backlog_per_replica",
            )
        ]
    return {**rate, "enabled": False}, []


def _queue_source(kind: str) -> tuple[Any, str]:
    """The source class of a queue kind, or None and why not."""
    kinds = queue_kinds()
    installed = f"(installed: {', '.join(kinds) or 'none'})"
    if kind in kinds:
        return plugins.load(plugins.SOURCES, kind), ""
    if kind in plugins.names(plugins.SOURCES):
        # Installed, but its class cannot be loaded (that says why), or it is a source picked
        # by the metrics the rules name, with no block of its own (docker).
        try:
            plugins.load(plugins.SOURCES, kind)
        except plugins.NotInstalled as exc:
            return None, str(exc)
        return None, f"the {kind} source is not configured by a queue: block {installed}"
    return None, f"unknown queue kind {short(kind)} {installed}"


def check_backend(raw: Any, loc: tuple[Any, ...]) -> list[str]:
    """A `backend:` must name an installed backend (an entry point of docktor.scalers). Not a
    non-empty text: left to the schema."""
    if not isinstance(raw, str) or not raw:
        return []
    known = plugins.names(plugins.BACKENDS)
    if raw not in known:
        return [
            at(
                loc,
                f"must be one of the installed backends ({', '.join(known) or 'none'}), "
                f"not {short(raw)}",
            )
        ]
    try:
        plugins.load(plugins.BACKENDS, raw)
    except plugins.NotInstalled as exc:  # installed, but its class cannot be loaded: say why
        return [at(loc, str(exc))]
    return []


def backend_needs(spec: ServiceSpec, loc: tuple[Any, ...]) -> list[str]:
    """What the backend itself requires of a service (the processes backend: a command), asked
    of the backend class: `check(spec)` raises ValueError('field: problem'). A backend that is
    not installed says nothing here (check_backend reports it)."""
    try:
        backend = plugins.load(plugins.BACKENDS, spec.backend)
    except plugins.NotInstalled:
        return []
    check = getattr(backend, "check", None)
    if check is None:
        return []
    try:
        check(spec)
    except ValueError as exc:
        return [at(loc, str(exc))]
    return []


def ignored_settings(model: BaseModel, loc: tuple[Any, ...] = ()) -> list[str]:
    """`path: ignored (why)` for each IGNORED_FIELDS setting the file made, anywhere in it."""
    ignored = model.ignored_here() if isinstance(model, Strict) else {}
    lines = [at((*loc, name), f"ignored ({why})") for name, why in ignored.items()]
    for name in type(model).model_fields:
        if name not in model.model_fields_set or name in ignored:
            continue
        value = getattr(model, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, BaseModel):
                where = (*loc, name) if index is None else (*loc, name, index)
                lines.extend(ignored_settings(item, where))
    return lines
