"""The workflow a worker registers (`python -m worker`); its code lives in docktor.loop."""

from docktor.loop.workflow import ServiceAutoscaler

__all__ = ["ServiceAutoscaler"]
