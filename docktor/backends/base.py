"""The contract every scaling backend keeps (docs/plugins.md).

A backend is a class registered in the entry-point group `docktor.scalers` under the name a
service's `backend:` gives. A worker builds one instance (with no arguments) and keeps it for
its whole life, like the metric sources: the service's plan (docktor.plan.ServicePlan, the
spec's settings under the same names) comes with every call, and what the backend must remember
(the processes it started, a lock per service) is its instance state.
"""

from __future__ import annotations

from typing import Protocol

from docktor.plan import ServicePlan


class ScalerConfigError(Exception):
    """The backend cannot scale this service as configured; retrying cannot help."""


class ScalerUnavailable(Exception):
    """The backend could not be reached this time; worth retrying."""


class Backend(Protocol):
    """Optionally also `check(spec)` (a staticmethod): offline, while a config file is read,
    raise ValueError('field: problem') for what this backend requires of a service (it gets
    the user's docktor.spec.ServiceSpec; every other call gets the plan)."""

    async def replicas(self, spec: ServicePlan, project: str) -> int:
        """Replicas running now."""
        ...

    async def scale_to(self, spec: ServicePlan, project: str, n: int) -> int:
        """Make exactly n replicas run; idempotent (asking twice for 4 gives 4, a retry after a
        crash finds what the first attempt started). 0 stops everything, whatever
        min_replicas says (bounds are the policy's). Returns the count running afterwards."""
        ...

    async def validate(self, spec: ServicePlan, project: str) -> None:
        """Raise ScalerConfigError when this service cannot be scaled as configured."""
        ...

    async def close(self) -> None: ...


class Scaler(Protocol):
    """One service's replicas, as the built-in backends hand them out (`service(spec, project)`)
    and as tools and tests use them directly."""

    async def replicas(self) -> int: ...

    async def scale_to(self, n: int) -> int: ...

    async def validate(self) -> None: ...


class PerServiceBackend:
    """A Backend whose work is done by a per-service view (`service(spec, project)` returns a
    Scaler built on the backend's shared state); the built-in backends are written this way."""

    def service(self, spec: ServicePlan, project: str) -> Scaler:
        raise NotImplementedError

    async def replicas(self, spec: ServicePlan, project: str) -> int:
        return await self.service(spec, project).replicas()

    async def scale_to(self, spec: ServicePlan, project: str, n: int) -> int:
        return await self.service(spec, project).scale_to(n)

    async def validate(self, spec: ServicePlan, project: str) -> None:
        await self.service(spec, project).validate()

    async def close(self) -> None:
        return None
