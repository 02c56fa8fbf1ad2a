"""The last stage: an operator's manual scale holds its count for a while.

`docktor scale consumer 3` means "3, for now": without a hold the next iteration's policy
would undo it (a scale-down window or a cooldown of 0 lets it at once). While a hold is in
force the target is the held count, in both directions, whatever the stages before wanted;
the decision says what they wanted, so the loop still explains itself. Bounds still win (a
spec update may narrow them during a hold).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from docktor.plan import MAX_DURATION_S, ServicePlan
from docktor.policy import stages
from docktor.values import ManualHold

# How a manual decision's reason ends when the scale was not held (`--hold 0`).
NOT_HELD = "not held"
HELD_PREFIX = "held by manual scale until"


def default_seconds(spec: ServicePlan) -> float:
    """How long a manual scale holds unless the operator says: the longer of the cooldowns,
    or, for a service without cooldowns (the target policy's default), the longer of its
    stabilisation windows, which do the cooldowns' job there. 0 (no hold) when it has neither."""
    return max(
        spec.cooldown.up,
        spec.cooldown.down,
        spec.behavior.up.window,
        spec.behavior.down.window,
    )


def problem(seconds: float | None) -> str | None:
    """Why a requested hold cannot be taken, None when it can (None means the default)."""
    if seconds is None:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return f"hold must be a duration of 0 or more, not {seconds}"
    if seconds > MAX_DURATION_S:
        return f"hold must be at most {MAX_DURATION_S / 86400:.0f} days, not {seconds:.0f}s"
    return None


def start(
    spec: ServicePlan, replicas: int, seconds: float | None, now: datetime, by: str = ""
) -> ManualHold | None:
    """The hold a manual scale to `replicas` starts now; None for a hold of 0."""
    length = default_seconds(spec) if seconds is None else seconds
    if length <= 0:
        return None
    return ManualHold(replicas=replicas, until=now + timedelta(seconds=length), by=by)


def in_force(hold: ManualHold | None, now: datetime) -> bool:
    return hold is not None and now < hold.until


def describe(hold: ManualHold, now: datetime) -> str:
    """`held by manual scale until 14:03:12 UTC`, as decisions say it (with the date when the
    hold ends on another day than `now`)."""
    when = "%H:%M:%S" if hold.until.date() == now.date() else "%Y-%m-%d %H:%M:%S"
    return f"{HELD_PREFIX} {hold.until.strftime(when)} UTC"


def overrule(
    plan: ServicePlan,
    current: int,
    target: int,
    reason: str,
    hold: ManualHold | None,
    now: datetime,
) -> tuple[int, str] | None:
    """The held count and the reason for it while the hold is in force, None otherwise:
    `target` and `reason` are what the stages before wanted, and the reason still says it."""
    if hold is None or not in_force(hold, now):
        return None
    held, _ = stages.bounds(plan, hold.replicas)
    note = describe(hold, now)
    if target == held:
        return held, f"{reason}; {note}"
    wanted = f"{stages.action_for(current, target)} to {target}: {reason}"
    restore = f" (restoring {held}, {current} running)" if current != held else ""
    return held, f"{note}{restore}; the policy wanted {wanted}"
