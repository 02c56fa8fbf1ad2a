"""What a running loop acts on: a plan built once from a service's spec.

Placeholder while the wire types are written: the names exist so the code that takes a plan
can already say so.
"""

from docktor.spec import LLMSpec as LLMPlan
from docktor.spec import ServiceSpec as ServicePlan

__all__ = ["LLMPlan", "ServicePlan"]
