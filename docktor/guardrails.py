"""The limits a model's advice is held to before it may move a service: pure, no I/O, no clock.

The advisor trusts a model only as far as these rules let it. They are applied in this order,
and the order matters:

1. step:     at most `max_step` away from the current count, so one bad answer moves little;
2. cooldown: no scale-up while the up cooldown runs, no scale-down while the down cooldown
             runs (the target holds at the current count instead);
3. bounds:   clamped to [min_replicas, max_replicas] last, so bounds always win - the same as
             the rules, which correct an out-of-bounds count at once, cooldown or not.

When the current count is within bounds, the result is within bounds and within `max_step` of
it (tests/unit/test_guardrails.py checks this as a property).
"""

from __future__ import annotations

import math

from docktor.config import ServiceSpec
from docktor.model import Proposal


def guard(
    proposal: Proposal,
    model_target: int,
    spec: ServiceSpec,
    max_step: int,
    cooldown_up_left: float,
    cooldown_down_left: float,
) -> tuple[int, list[str]]:
    """The target the model may have, and one note per adjustment made to what it asked for."""
    current = proposal.current_replicas
    target = model_target
    notes: list[str] = []

    step_low, step_high = current - max_step, current + max_step
    if not step_low <= target <= step_high:
        stepped = min(max(target, step_low), step_high)
        notes.append(f"limited to max_step {max_step} from {current}: {target} -> {stepped}")
        target = stepped

    if target > current and cooldown_up_left > 0:
        notes.append(
            f"scale-up cooldown, {math.ceil(cooldown_up_left)}s left: holding at {current}"
        )
        target = current
    elif target < current and cooldown_down_left > 0:
        notes.append(
            f"scale-down cooldown, {math.ceil(cooldown_down_left)}s left: holding at {current}"
        )
        target = current

    low, high = spec.min_replicas, spec.max_replicas
    if target < low:
        notes.append(f"clamped to min_replicas {low}: {target} -> {low}")
        target = low
    elif target > high:
        notes.append(f"clamped to max_replicas {high}: {target} -> {high}")
        target = high

    return target, notes


def action_for(current: int, target: int) -> str:
    """The action that moves `current` to `target` (the model's own word is only checked
    against this, never trusted instead of it)."""
    if target > current:
        return "scale_up"
    if target < current:
        return "scale_down"
    return "hold"
