"""Scaler backends: one module per backend, looked up by name.

Built-in backends register here; third parties add theirs through the entry-point group
`docktor.scalers` (name -> a Scaler class taking the ServiceSpec).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from docktor.config import ServiceSpec
from docktor.scalers.base import Scaler, ScalerConfigError, ScalerUnavailable

BUILTIN = {
    "processes": "docktor.scalers.processes:ProcessScaler",
    "compose": "docktor.scalers.compose:ComposeScaler",
    "swarm": "docktor.scalers.swarm:SwarmScaler",
}

__all__ = ["Scaler", "ScalerConfigError", "ScalerUnavailable", "scaler_for", "backends"]


def backends() -> list[str]:
    return sorted(set(BUILTIN) | {ep.name for ep in entry_points(group="docktor.scalers")})


def scaler_for(spec: ServiceSpec, project: str = "default") -> Scaler:
    target = scaler_class(spec.backend)
    if target is None:
        raise ScalerConfigError(
            f"services.{spec.name}.backend: backend '{spec.backend}' is not available "
            f"(available: {', '.join(backends())})"
        )
    return target(spec, project=project)


@cache
def scaler_class(backend: str) -> type[Scaler] | None:
    """The class for a backend name, looked up once per process: scanning the installed
    entry points cost a worker 8% of its CPU when done at every observe (issue 10). A plugin
    installed later is seen by the next worker started."""
    target = None
    for ep in entry_points(group="docktor.scalers"):
        if ep.name == backend:
            target = ep.load()
    if target is None and backend in BUILTIN:
        module_name, _, attr = BUILTIN[backend].partition(":")
        target = getattr(__import__(module_name, fromlist=[attr]), attr)
    return target
