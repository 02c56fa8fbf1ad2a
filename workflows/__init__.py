from workflows.autoscaler import ServiceAutoscaler

__all__ = ["ServiceAutoscaler"]
