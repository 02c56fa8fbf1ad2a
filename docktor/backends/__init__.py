"""Scaling backends: one module per backend, found through the entry-point group
`docktor.scalers` (the built-ins register in docktor's pyproject.toml like any plugin).

A worker holds one instance of each backend it uses for its whole life (`Backends`), as it does
with the metric sources; a one-off command (`docktor status`, `config validate`) opens one for
the command's length (`one_backend`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from docktor import plugins
from docktor.backends.base import (
    Backend,
    PerServiceBackend,
    Scaler,
    ScalerConfigError,
    ScalerUnavailable,
)
from docktor.plan import ServicePlan

__all__ = [
    "Backend",
    "Backends",
    "PerServiceBackend",
    "Scaler",
    "ScalerConfigError",
    "ScalerUnavailable",
    "backend_class",
    "backends",
    "one_backend",
]


def backends() -> list[str]:
    """Every installed backend name."""
    return plugins.names(plugins.BACKENDS)


def backend_class(name: str) -> type[Backend]:
    return plugins.load(plugins.BACKENDS, name, ScalerConfigError)


class Backends:
    """The backend instances of one worker, by name, each built on first use."""

    def __init__(self) -> None:
        self._instances: dict[str, Backend] = {}

    def get(self, name: str) -> Backend:
        if name not in self._instances:
            self._instances[name] = backend_class(name)()
        return self._instances[name]

    def of(self, spec: ServicePlan) -> Backend:
        """The backend a service names; ScalerConfigError naming the field if none is."""
        try:
            return self.get(spec.backend)
        except ScalerConfigError as exc:
            raise ScalerConfigError(f"services.{spec.name}.backend: {exc}") from None

    async def close(self) -> None:
        instances = list(self._instances.values())
        self._instances.clear()
        for instance in instances:
            await instance.close()


@asynccontextmanager
async def one_backend(spec: ServicePlan) -> AsyncIterator[Backend]:
    """The service's backend for one command's length, closed after it."""
    owned = Backends()
    try:
        yield owned.of(spec)
    finally:
        await owned.close()
