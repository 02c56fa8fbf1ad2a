"""Metric sources: one module per kind, found through the entry-point group `docktor.metrics`.

The built-ins (nats, docker) register in docktor's pyproject.toml like any third-party
package; adding a source touches nothing here (docs/plugins.md).
"""

from __future__ import annotations

import logging

from docktor import plugins
from docktor.sources.base import MetricConfigError, MetricSource, MetricUnavailable, queue_block

# The loader checks `queue:` blocks against the same list, so it lives with the loader.
from docktor.spec.installed import queue_kinds

__all__ = [
    "MetricSource",
    "MetricUnavailable",
    "MetricConfigError",
    "queue_block",
    "source_class",
    "kinds",
    "queue_kinds",
    "providers",
]

log = logging.getLogger(__name__)


def kinds() -> list[str]:
    """Every installed metric source kind."""
    return plugins.names(plugins.SOURCES)


def source_class(kind: str) -> type[MetricSource]:
    return plugins.load(plugins.SOURCES, kind, MetricConfigError)


def providers() -> dict[str, str]:
    """Metric name -> the kind that provides it, among sources not configured by `queue:`
    (those are picked by the block's kind)."""
    found: dict[str, str] = {}
    for kind, cls in _loadable().items():
        if cls.config_model is None:
            for metric in cls.provides:
                found.setdefault(metric, kind)
    return found


def _loadable() -> dict[str, type[MetricSource]]:
    classes: dict[str, type[MetricSource]] = {}
    for kind in kinds():
        try:
            classes[kind] = source_class(kind)
        except MetricConfigError as exc:
            # A plugin that cannot load is left out here; naming its kind says why.
            log.warning("%s", exc)
    return classes
