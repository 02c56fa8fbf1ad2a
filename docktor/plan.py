"""What a running loop acts on: a plan built once from a service's spec.

Placeholder while the wire types are written: the names exist so the code that takes a plan
can already say so.
"""

from docktor.spec import MAX_DURATION_S, PER_REPLICA_SUFFIX, format_number
from docktor.spec import LLMSpec as LLMPlan
from docktor.spec import ServiceSpec as ServicePlan

# Besides the plans: the names the policy reads a plan with (a target metric's per-replica
# suffix, the longest duration, numbers as reasons word them), so it needs nothing of the
# user's schema.
__all__ = ["MAX_DURATION_S", "PER_REPLICA_SUFFIX", "LLMPlan", "ServicePlan", "format_number"]
