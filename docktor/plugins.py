"""What is installed: metric sources and backends, found through entry points and nothing else.

A metric source registers in the entry-point group `docktor.metrics` (name = its kind, value =
its class), a backend in `docktor.scalers` (name = the `backend:` a service names). docktor's
own built-ins register in its pyproject.toml exactly like a third-party package does, so a
plugin installed from its own package is reachable without touching docktor (docs/plugins.md).

The scan of the installed distributions runs once per process (a worker serves many services
for a long time; reading every dist-info on each lookup would cost milliseconds per call), and
each class is loaded on first use only: a broken plugin fails the services that name it, not
every service. This module imports nothing of docktor's but docktor.text (a leaf too), so the
config loader (docktor.spec) can ask it what is installed without an import cycle.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from docktor.text import printable_line

SOURCES = "docktor.metrics"
BACKENDS = "docktor.scalers"


class NotInstalled(LookupError):
    """No installed package provides this name (or its class cannot be loaded)."""


@dataclass(frozen=True)
class Registered:
    """One entry point: the name it registers, the package that provides it."""

    group: str
    name: str
    value: str
    package: str
    version: str

    def load(self) -> Any:
        return _load(self.group, self.name)


@functools.cache
def registered(group: str) -> dict[str, Registered]:
    """Every entry point of the group by name. Two packages claiming one name: the first found
    wins (as pip lists them), and `docktor plugins` shows the one in use."""
    found: dict[str, Registered] = {}
    for ep in entry_points(group=group):
        if ep.name in found:
            continue
        dist = ep.dist
        found[ep.name] = Registered(
            group=group,
            name=ep.name,
            value=ep.value,
            package=dist.metadata["Name"] if dist is not None else "?",
            version=dist.version if dist is not None else "?",
        )
    return dict(sorted(found.items()))


def names(group: str) -> list[str]:
    return list(registered(group))


@functools.cache
def _load(group: str, name: str) -> Any:
    entry = registered(group).get(name)
    what = "metric source kind" if group == SOURCES else "backend"
    if entry is None:
        installed = ", ".join(names(group)) or "none"
        raise NotInstalled(f"no {what} '{name}' is installed (installed: {installed})")
    try:
        return EntryPoint(name=name, value=entry.value, group=group).load()
    except Exception as exc:  # a plugin's import error is that plugin's problem, said in one line
        # The plugin's own text, printed by `docktor plugins` and quoted in config errors.
        problem = printable_line(str(exc)) or type(exc).__name__
        raise NotInstalled(
            f"the {what} '{name}' from {entry.package} {entry.version} cannot be loaded "
            f"({entry.value}: {problem})"
        ) from None


def load(group: str, name: str, error: type[Exception] = NotInstalled) -> Any:
    """The class registered under name; else `error` with one line naming what is installed
    (each caller raises its own kind of config error)."""
    try:
        return _load(group, name)
    except NotInstalled as exc:
        if error is NotInstalled:
            raise
        raise error(str(exc)) from None


def forget() -> None:
    """Rescan on the next lookup (after a test installs or removes a package in-process)."""
    registered.cache_clear()
    _load.cache_clear()
