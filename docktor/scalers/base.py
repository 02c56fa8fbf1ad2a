"""The contract every scaling backend keeps."""

from __future__ import annotations

from typing import Protocol


class ScalerConfigError(Exception):
    """The backend cannot scale this service as configured; retrying cannot help."""


class ScalerUnavailable(Exception):
    """The backend could not be reached this time; worth retrying."""


class Scaler(Protocol):
    """Constructed as `Backend(spec: ServiceSpec, project: str)`."""

    async def replicas(self) -> int:
        """Replicas running now."""
        ...

    async def scale_to(self, n: int) -> int:
        """Make exactly n replicas run; idempotent (asking twice for 4 gives 4). Returns the
        count running afterwards."""
        ...

    async def validate(self) -> None:
        """Raise ScalerConfigError when this service cannot be scaled as configured."""
        ...
