from activities.loop import LoopActivities

__all__ = ["LoopActivities"]
