"""Metric sources: one module per kind, looked up by name.

Built-in kinds register here; third parties add theirs through the entry-point group
`docktor.metrics` (name -> a MetricSource class), and nothing else has to change.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from docktor.metrics.base import MetricConfigError, MetricSource, MetricUnavailable

BUILTIN = {
    "nats": "docktor.metrics.nats:NatsMetricSource",
    "docker": "docktor.metrics.docker:DockerMetricSource",
}

__all__ = ["MetricSource", "MetricUnavailable", "MetricConfigError", "source_class", "kinds"]


def kinds() -> list[str]:
    names = set(BUILTIN) | {ep.name for ep in entry_points(group="docktor.metrics")}
    return sorted(names)


def source_class(kind: str) -> type[MetricSource]:
    for ep in entry_points(group="docktor.metrics"):
        if ep.name == kind:
            return ep.load()
    if kind in BUILTIN:
        module_name, _, attr = BUILTIN[kind].partition(":")
        module = __import__(module_name, fromlist=[attr])
        return getattr(module, attr)
    raise MetricConfigError(f"unknown metric source kind '{kind}' (known: {', '.join(kinds())})")
