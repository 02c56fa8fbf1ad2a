from docktor.loop.activities import LoopActivities

__all__ = ["LoopActivities"]
