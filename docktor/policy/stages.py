"""The arithmetic of stabilise, limit and bounds, as the HPA's controller runs them after its
replica calculator: stabilise the raw recommendation over a window, limit the rate of change
(and the cooldowns), then bounds, which always win. Each that changes the count says so in one
note; docktor/policy/decide.py runs them in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from docktor.plan import ServicePlan, format_number
from docktor.values import PolicyMemory, Recommendation


class RateLimit(Protocol):
    """A plan's `behavior.<direction>.limit`: what the limit stage reads of it."""

    @property
    def replicas(self) -> int | None: ...
    @property
    def percent(self) -> float | None: ...
    @property
    def period(self) -> float: ...


@dataclass
class Settled:
    replicas: int
    notes: list[str] = field(default_factory=list)
    cooldown_blocked: bool = False


def cooldown_left(last_action_at: datetime | None, seconds: float, now: datetime) -> float:
    """Seconds of cooldown still to run (0 when none is active)."""
    if last_action_at is None:
        return 0.0
    left = (last_action_at + timedelta(seconds=seconds) - now).total_seconds()
    return max(0.0, left)


def latest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def action_for(current: int, target: int) -> str:
    """The action that moves `current` to `target`."""
    if target > current:
        return "scale_up"
    if target < current:
        return "scale_down"
    return "hold"


def stabilise(
    spec: ServicePlan,
    current: int,
    raw: int,
    memory: PolicyMemory,
    now: datetime,
    down_window: float | None = None,
) -> tuple[int, str | None]:
    """The HPA's windows: up to the lowest recommendation of the up window, down to the highest
    of the down window, else stay. `raw` joins the memory first. `down_window` shortens the
    configured one (a trusted forecast brings capacity back before the next burst)."""
    memory.recommendations.append(Recommendation(at=now, replicas=raw))
    up_window, down_window = (
        spec.behavior.up.window,
        min(
            spec.behavior.down.window,
            spec.behavior.down.window if down_window is None else down_window,
        ),
    )
    up_floor = min(_within(memory, now, up_window), default=raw)
    down_ceiling = max(_within(memory, now, down_window), default=raw)
    if up_floor > current:
        result = up_floor
    elif down_ceiling < current:
        result = down_ceiling
    else:
        result = current
    if result == raw:
        return result, None
    if raw > current:
        return result, f"scale-up window holds at {result} (lowest in {_s(up_window)})"
    return result, f"scale-down window keeps {result} (highest in {_s(down_window)})"


def _within(memory: PolicyMemory, now: datetime, seconds: float) -> list[int]:
    if seconds <= 0:
        return [memory.recommendations[-1].replicas]
    start = now - timedelta(seconds=seconds)
    return [r.replicas for r in memory.recommendations if r.at > start or r.at == now]


def limit(
    spec: ServicePlan,
    current: int,
    wanted: int,
    memory: PolicyMemory,
    now: datetime,
    last_scale_up_at: datetime | None,
    last_scale_down_at: datetime | None,
    max_step: int | None = None,
) -> Settled:
    """Rate limits per direction, a step limit (a model's `max_step`), then the cooldowns:
    no scale-up while the up cooldown runs, no scale-down within the down cooldown of the last
    action in either direction."""
    settled = Settled(wanted)
    if wanted > current:
        allowed = _up_allowance(spec.behavior.up.limit, current, memory, now)
        if allowed is not None and wanted > allowed:
            settled.replicas = max(current, allowed)
            settled.notes.append(
                f"limited to {settled.replicas} by the scale-up rate "
                f"({_describe(spec.behavior.up.limit)})"
            )
    elif wanted < current:
        allowed = _down_allowance(spec.behavior.down.limit, current, memory, now)
        if allowed is not None and wanted < allowed:
            settled.replicas = min(current, allowed)
            settled.notes.append(
                f"limited to {settled.replicas} by the scale-down rate "
                f"({_describe(spec.behavior.down.limit)})"
            )

    if max_step is not None:
        low, high = current - max_step, current + max_step
        if not low <= settled.replicas <= high:
            stepped = min(max(settled.replicas, low), high)
            settled.notes.append(
                f"limited to max_step {max_step} from {current}: {settled.replicas} -> {stepped}"
            )
            settled.replicas = stepped

    if settled.replicas > current:
        wait = cooldown_left(last_scale_up_at, spec.cooldown.up, now)
        if wait > 0:
            settled.notes.append(
                f"scale-up cooldown, {math.ceil(wait)}s left: holding at {current}"
            )
            settled.replicas, settled.cooldown_blocked = current, True
    elif settled.replicas < current:
        since = latest(last_scale_up_at, last_scale_down_at)
        wait = cooldown_left(since, spec.cooldown.down, now)
        if wait > 0:
            settled.notes.append(
                f"scale-down cooldown, {math.ceil(wait)}s left: holding at {current}"
            )
            settled.replicas, settled.cooldown_blocked = current, True
    return settled


def _up_allowance(rule: RateLimit, current: int, memory: PolicyMemory, now: datetime) -> int | None:
    """The most replicas the up limit allows now: counted from the count at the start of the
    period (the HPA's way), so several small steps cannot add up to more than one big one."""
    if rule.replicas is None and rule.percent is None:
        return None
    start = now - timedelta(seconds=rule.period)
    added = sum(
        max(0, e.to_replicas - e.from_replicas) for e in memory.scale_events if e.at > start
    )
    base = max(0, current - added)
    options = []
    if rule.replicas is not None:
        options.append(base + rule.replicas)
    if rule.percent is not None:
        options.append(math.ceil(base * (1 + rule.percent / 100)))
    return max(options)


def _down_allowance(
    rule: RateLimit, current: int, memory: PolicyMemory, now: datetime
) -> int | None:
    if rule.replicas is None and rule.percent is None:
        return None
    start = now - timedelta(seconds=rule.period)
    removed = sum(
        max(0, e.from_replicas - e.to_replicas) for e in memory.scale_events if e.at > start
    )
    base = current + removed
    options = []
    if rule.replicas is not None:
        options.append(base - rule.replicas)
    if rule.percent is not None:
        options.append(math.floor(base * (1 - rule.percent / 100)))
    return max(0, min(options))


def _describe(rule: RateLimit) -> str:
    parts = []
    if rule.replicas is not None:
        parts.append(f"{rule.replicas} replicas")
    if rule.percent is not None:
        parts.append(f"{format_number(rule.percent)}%")
    return f"{' or '.join(parts)} per {_s(rule.period)}"


def bounds(spec: ServicePlan, replicas: int) -> tuple[int, str | None]:
    """min_replicas and max_replicas always win."""
    low, high = spec.min_replicas, spec.max_replicas
    if replicas < low:
        return low, f"clamped to min_replicas {low}: {replicas} -> {low}"
    if replicas > high:
        return high, f"clamped to max_replicas {high}: {replicas} -> {high}"
    return replicas, None


def forget(spec: ServicePlan, memory: PolicyMemory, now: datetime) -> None:
    """Drop what no window or period can look at any more, so the memory stays small."""
    horizon = max(
        spec.behavior.up.window,
        spec.behavior.down.window,
        spec.behavior.up.limit.period,
        spec.behavior.down.limit.period,
    )
    memory.forget_before(now - timedelta(seconds=horizon))


def _s(seconds: float) -> str:
    return f"{format_number(seconds)}s"
