"""The replica arithmetic: pure functions, no I/O and no clock of their own.

The workflow hands in the observation, the previous sample and the durable `now`; what comes
back is a Proposal that says what to do and why, in words an operator can read.

Rules, in order:
1. Bounds first: below min_replicas or above max_replicas is corrected at once, cooldown or not.
2. No metric observed at all: hold. Missing data never scales anything down.
3. Scale up when ANY scale_up_when condition holds, by scale_up_by, up to max_replicas,
   unless the last scale-up was less than cooldown.up ago.
4. Scale down only when ALL scale_down_when conditions hold (a condition on a metric that was
   not observed is false), by scale_down_by, down to min_replicas, unless the last scale action
   in either direction was less than cooldown.down ago: capacity added for a burst is kept for a
   while before it is given back.
5. Otherwise hold.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from docktor.config import Condition, ServiceSpec, format_number
from docktor.model import Observation, Proposal

# counter name -> the rate metric derived from two consecutive samples of it
RATE_COUNTERS = {
    "queue.stream_last_seq": "queue.rate_in",
    "queue.ack_floor": "queue.rate_out",
}


def derive_rates(current: Observation, previous: Observation | None) -> dict[str, float]:
    """Per-second rates from the counters of two consecutive samples.

    No previous sample, no time between them, or a counter that went backwards (a stream that
    was purged or recreated) gives no rate rather than a wrong one.
    """
    if previous is None:
        return {}
    seconds = (current.taken_at - previous.taken_at).total_seconds()
    if seconds <= 0:
        return {}
    rates: dict[str, float] = {}
    for counter, rate_name in RATE_COUNTERS.items():
        now_value = current.counters.get(counter)
        before = previous.counters.get(counter)
        if now_value is None or before is None or now_value < before:
            continue
        rates[rate_name] = round((now_value - before) / seconds, 3)
    return rates


def cooldown_left(last_action_at: datetime | None, seconds: float, now: datetime) -> float:
    """Seconds of cooldown still to run (0 when none is active)."""
    if last_action_at is None:
        return 0.0
    left = (last_action_at + timedelta(seconds=seconds) - now).total_seconds()
    return max(0.0, left)


def latest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def decide(
    spec: ServiceSpec,
    observation: Observation,
    previous: Observation | None,
    now: datetime,
    last_scale_up_at: datetime | None = None,
    last_scale_down_at: datetime | None = None,
) -> Proposal:
    current = observation.replicas
    metrics = {**observation.metrics, **derive_rates(observation, previous)}
    wanted = sorted(spec.metric_names())
    missing = [name for name in wanted if name not in metrics]

    def proposal(
        action: str,
        target: int,
        reason: str,
        matched: list[str] | None = None,
        blocked: bool = False,
    ) -> Proposal:
        return Proposal(
            action=action,  # type: ignore[arg-type]
            current_replicas=current,
            target_replicas=target,
            reason=reason,
            matched_rules=matched or [],
            missing_metrics=missing,
            observations=metrics,
            cooldown_blocked=blocked,
        )

    if current < spec.min_replicas:
        return proposal(
            "scale_up",
            spec.min_replicas,
            f"{current} replicas is below min_replicas ({spec.min_replicas})",
        )
    if current > spec.max_replicas:
        return proposal(
            "scale_down",
            spec.max_replicas,
            f"{current} replicas is above max_replicas ({spec.max_replicas})",
        )

    if not metrics:
        why = "; ".join(observation.errors) or "no metric source returned a value"
        return proposal("hold", current, f"no metrics could be observed ({why}); holding")

    missing_note = f" (not observed: {', '.join(missing)})" if missing else ""

    up = _matching(spec.rules.scale_up_when, metrics)
    if up:
        target = min(current + spec.scale_up_by, spec.max_replicas)
        because = ", ".join(up)
        if target == current:
            return proposal(
                "hold", current, f"at max_replicas ({spec.max_replicas}): {because}", up
            )
        wait = cooldown_left(last_scale_up_at, spec.cooldown.up, now)
        if wait > 0:
            return proposal(
                "hold", current, f"scale-up cooldown, {wait:.0f}s left: {because}", up, blocked=True
            )
        return proposal("scale_up", target, f"{because}{missing_note}", up)

    down_rules = spec.rules.scale_down_when
    down = _matching(down_rules, metrics)
    if down_rules and len(down) == len(down_rules):
        target = max(current - spec.scale_down_by, spec.min_replicas)
        because = " and ".join(down)
        if target == current:
            return proposal(
                "hold", current, f"at min_replicas ({spec.min_replicas}): {because}", down
            )
        wait = cooldown_left(latest(last_scale_up_at, last_scale_down_at), spec.cooldown.down, now)
        if wait > 0:
            return proposal(
                "hold",
                current,
                f"scale-down cooldown, {wait:.0f}s left: {because}",
                down,
                blocked=True,
            )
        return proposal("scale_down", target, f"{because}{missing_note}", down)

    return proposal("hold", current, f"no rule matched: {_summary(metrics, wanted)}{missing_note}")


def _matching(conditions: list[Condition], metrics: dict[str, float]) -> list[str]:
    return [
        c.describe(metrics[c.metric])
        for c in conditions
        if c.metric in metrics and c.holds(metrics[c.metric])
    ]


def _summary(metrics: dict[str, float], wanted: list[str]) -> str:
    names = [n for n in wanted if n in metrics] or sorted(metrics)
    return ", ".join(f"{n} {format_number(metrics[n])}" for n in names[:4])
