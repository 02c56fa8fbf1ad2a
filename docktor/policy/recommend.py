"""The recommend stage: the raw desired replica count and why, before any window or limit.

Two recommenders, chosen by `policy`:

- `step`: the rules (threshold -> fixed step), with the semantics they always had.
- `target`: target tracking, as the HPA's replica calculator does it (desired =
  ceil(current x observed / target), nothing when within the tolerance), plus for a queue a rate
  feed-forward: enough replicas for what arrives now and to drain what waits within
  `drain_within`. Several targets: the largest count wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from docktor.plan import PER_REPLICA_SUFFIX, ServicePlan, format_number
from docktor.values import Observation, PolicyMemory


class Condition(Protocol):
    """One of a plan's step rules: what the step recommender reads of it."""

    @property
    def metric(self) -> str: ...
    def holds(self, observed: float) -> bool: ...
    def describe(self, observed: float | None = None) -> str: ...


BACKLOG = "queue.backlog"
ACK_PENDING = "queue.ack_pending"
RATE_IN = "queue.rate_in"
RATE_OUT = "queue.rate_out"


@dataclass
class Raw:
    """A recommendation: the count, the reason, and the rules that matched (step only)."""

    replicas: int
    reason: str
    matched: list[str] = field(default_factory=list)


# ---- step --------------------------------------------------------------------------------------


def step(spec: ServicePlan, current: int, metrics: dict[str, float], missing: list[str]) -> Raw:
    """ANY up rule: +scale_up_by (to max_replicas). ALL down rules: -scale_down_by (to
    min_replicas); a condition on a metric that was not observed is false. Else hold."""
    missing_note = f" (not observed: {', '.join(missing)})" if missing else ""
    up = _matching(spec.rules.scale_up_when, metrics)
    if up:
        target = min(current + spec.scale_up_by, spec.max_replicas)
        because = ", ".join(up)
        if target == current:
            return Raw(current, f"at max_replicas ({spec.max_replicas}): {because}", up)
        return Raw(target, f"{because}{missing_note}", up)

    down_rules = spec.rules.scale_down_when
    down = _matching(down_rules, metrics)
    if down_rules and len(down) == len(down_rules):
        target = max(current - spec.scale_down_by, spec.min_replicas)
        because = " and ".join(down)
        if target == current:
            return Raw(current, f"at min_replicas ({spec.min_replicas}): {because}", down)
        return Raw(target, f"{because}{missing_note}", down)

    wanted = sorted(spec.metric_names())
    return Raw(current, f"no rule matched: {summary(metrics, wanted)}{missing_note}")


def _matching(conditions: Sequence[Condition], metrics: dict[str, float]) -> list[str]:
    return [
        c.describe(metrics[c.metric])
        for c in conditions
        if c.metric in metrics and c.holds(metrics[c.metric])
    ]


def summary(metrics: dict[str, float], wanted: list[str]) -> str:
    names = [n for n in wanted if n in metrics] or sorted(metrics)
    return ", ".join(f"{n} {format_number(metrics[n])}" for n in names[:4])


# ---- target tracking -----------------------------------------------------------------------------


def estimate_per_replica(
    spec: ServicePlan,
    memory: PolicyMemory,
    observation: Observation,
    previous: Observation | None,
    metrics: dict[str, float],
) -> None:
    """Learn what one replica handles from what the pool served per replica, in
    `memory.per_replica_rate`.

    Only while the pool is saturated (messages waiting at both samples, so every replica was
    busy the whole interval) and the replica count did not change between the samples (a
    replica starting or stopping served only part of it, and a low estimate would stick: it is
    corrected only by the next saturation). Outside saturation a replica that served more than
    the estimate proves the estimate too low, so it is raised.

    What was served is rate_out, but never more than the queue could have supplied
    (`_served`): an ack floor held back by a killed replica's messages jumps when they are
    redelivered and acknowledged, and reads as a rate the replicas never had.
    """
    if previous is None or RATE_OUT not in metrics:
        return
    replicas = observation.replicas
    if replicas <= 0 or previous.replicas != replicas:
        return
    served, bounded = _served(observation, previous, metrics)
    sample = served / replicas
    saturated = observation.metrics.get(BACKLOG, 0) > 0 and previous.metrics.get(BACKLOG, 0) > 0
    known = memory.per_replica_rate
    alpha = spec.rate.smoothing
    if saturated and sample > 0:
        memory.per_replica_rate = sample if known is None else known + alpha * (sample - known)
    elif known is not None and sample > known:
        # A rise the queue's figures bear out is taken at once; one they cannot check (no
        # arrival rate or backlog observed) only moves the estimate part of the way.
        memory.per_replica_rate = sample if bounded else known + alpha * (sample - known)


def _served(
    observation: Observation, previous: Observation, metrics: dict[str, float]
) -> tuple[float, bool]:
    """Messages per second the pool acknowledged over the interval, and whether that figure
    is bounded by what the queue could supply.

    Every message that arrived is waiting, in flight or acknowledged, so over an interval
    acknowledged = arrived + (waiting and in flight before - waiting and in flight now). A
    rate_out above that is a counter catching up (a JetStream ack floor stuck behind a dead
    replica's unacknowledged messages until ack_wait, then advanced past everything acked
    meanwhile), not work done in this interval. Without rate_in or the backlog at both samples
    there is nothing to bound it by.
    """
    rate_out = metrics[RATE_OUT]
    rate_in = metrics.get(RATE_IN)
    seconds = (observation.taken_at - previous.taken_at).total_seconds()
    before, now = _outstanding(previous, observation)
    if rate_in is None or seconds <= 0 or before is None or now is None:
        return rate_out, False
    return min(rate_out, max(0.0, rate_in + (before - now) / seconds)), True


def _outstanding(
    previous: Observation, observation: Observation
) -> tuple[float | None, float | None]:
    """Messages waiting or in flight at each sample: the backlog, plus ack_pending when both
    samples have it (None when a sample has no backlog)."""
    gauges = [BACKLOG]
    if ACK_PENDING in previous.metrics and ACK_PENDING in observation.metrics:
        gauges.append(ACK_PENDING)

    def total(sample: Observation) -> float | None:
        if BACKLOG not in sample.metrics:
            return None
        return sum(sample.metrics[g] for g in gauges)

    return total(previous), total(observation)


def backlog_growth(observation: Observation, previous: Observation | None) -> float | None:
    """How fast a backlog that has just appeared grew since the previous sample, in msg/s.

    None unless nothing waited at the previous sample: a backlog that was already there has
    had capacity asked for it, perhaps still starting, so its growth says nothing new (and
    projecting it made a backlog-only loop, which cycles, overshoot on the way up). None too
    when either sample has no backlog."""
    if previous is None or BACKLOG not in observation.metrics or BACKLOG not in previous.metrics:
        return None
    seconds = (observation.taken_at - previous.taken_at).total_seconds()
    before = previous.metrics[BACKLOG]
    grown = observation.metrics[BACKLOG] - before
    if seconds <= 0 or grown <= 0 or before > 0:
        return None
    return grown / seconds


def target(
    spec: ServicePlan,
    current: int,
    metrics: dict[str, float],
    memory: PolicyMemory,
    now: datetime,
    growth: float | None = None,
) -> tuple[Raw, list[str]]:
    """The largest count any target asks for, and the inputs it could not read.

    `growth`: how fast the backlog grew over the last interval (backlog_growth). A backlog
    target then sizes for the backlog as it will be at the next check if it keeps growing,
    since the count chosen now is the one that runs until then: a burst seen a moment after
    it started reads as a small backlog, and sized on that alone it takes a second check to
    reach the capacity it needs, while it piles up."""
    candidates: list[tuple[int, str]] = []
    unread: list[str] = []
    for metric, wanted in spec.target.items():
        if metric.endswith(PER_REPLICA_SUFFIX):
            base = metric.removesuffix(PER_REPLICA_SUFFIX)
            total = metrics.get(base)
            if total is None:
                unread.append(base)
                continue
            why = f"{base} {_n(total)}"
            if base == BACKLOG and growth:
                total += growth * spec.check_interval
                why += f", {_n(total)} at the next check at +{_n(growth)}/s,"
            needed = total / wanted
            why += f" ÷ {_n(wanted)} per replica"
        else:
            average = metrics.get(metric)
            if average is None:
                unread.append(metric)
                continue
            needed = current * average / wanted
            why = f"{metric} {_n(average)} vs target {_n(wanted)} at {current} replicas"
        candidates.append(_tracked(needed, current, spec.tolerance, why))

    if spec.queue is not None and spec.rate.enabled:
        feed = _feed_forward(spec, current, metrics, memory)
        if feed is None and RATE_IN not in metrics:
            unread.append(RATE_IN)
        elif feed is not None:
            candidates.append(feed)

    if not candidates:
        return Raw(current, f"target: nothing to track yet (not observed: {', '.join(unread)})"), [
            *unread
        ]
    replicas, why = max(candidates, key=lambda c: c[0])
    raw = Raw(replicas, f"target: {why}")
    unlearned = spec.queue is not None and spec.rate.enabled and not _per_replica(spec, memory)
    if unlearned and raw.replicas < current - 1:
        # What one replica handles is not known yet (the pool has not been saturated), so the
        # backlog alone cannot tell how many the arrivals need: step down one at a time, and
        # learn the rate if the pool saturates on the way.
        raw.replicas = current - 1
        raw.reason += f"; per-replica rate not learned yet: one step down to {raw.replicas}"
    if spec.queue is not None and not spec.rate.enabled:
        _step_down_from_above(current, raw)
    _activation(spec, current, metrics, memory, now, raw)
    return raw, unread


def _step_down_from_above(current: int, raw: Raw) -> None:
    """A loop without rate tracking (an SQS queue: only the backlog to go on) cannot tell
    what arrives: a count that kept the backlog at zero was enough, not how much of it is
    needed. So it gives back at most a quarter of its replicas per check (one at least) and
    finds the level from above, where the backlog shows small when it goes under. Dropping
    to the backlog's target at once (12 -> 1 under 400 msg/s that needs 8) piles up what the
    next check must size, and the loop cycles between the two under a flat load."""
    lowest = min(current - 1, math.ceil(current * 3 / 4))
    if raw.replicas < lowest:
        raw.replicas = lowest
        raw.reason += f"; no arrival rate to size by: a quarter down at most, to {raw.replicas}"


def _feed_forward(
    spec: ServicePlan, current: int, metrics: dict[str, float], memory: PolicyMemory
) -> tuple[int, str] | None:
    """Capacity for the arrival rate (plus headroom) and for draining the backlog in time."""
    rate_in = metrics.get(RATE_IN)
    per_replica = _per_replica(spec, memory)
    if rate_in is None or not per_replica:
        return None
    backlog = metrics.get(BACKLOG, 0.0)
    headroom = spec.rate.headroom
    drain = backlog / spec.rate.drain_within
    needed = (rate_in * (1 + headroom) + drain) / per_replica
    source = "" if spec.rate.per_replica else " (estimated)"
    parts = f"queue.rate_in {_n(rate_in)}/s"
    if headroom:
        parts += f" +{headroom:.0%}"
    if drain >= 0.5:
        parts += f" + backlog {_n(backlog)} in {_n(spec.rate.drain_within)}s"
    why = f"{parts} ÷ {_n(per_replica)}/s per replica{source}"
    # The tolerance only holds back a scale-down here: capacity even slightly below the arrival
    # rate grows the backlog without end, so a shortfall is never tolerated.
    tolerance = spec.tolerance if needed < current else 0.0
    return _tracked(needed, current, tolerance, why)


def _per_replica(spec: ServicePlan, memory: PolicyMemory) -> float | None:
    return spec.rate.per_replica or memory.per_replica_rate


def _tracked(needed: float, current: int, tolerance: float, why: str) -> tuple[int, str]:
    """ceil(needed), unless within the tolerance of what runs now (then nothing changes)."""
    if current > 0 and abs(needed / current - 1) <= tolerance:
        return current, f"{why} = {needed:.1f}, within {tolerance:.0%} of {current}"
    count = max(0, math.ceil(needed - 1e-9))
    return count, f"{why} → {count}"


def _activation(
    spec: ServicePlan,
    current: int,
    metrics: dict[str, float],
    memory: PolicyMemory,
    now: datetime,
    raw: Raw,
) -> None:
    """Scale to zero, as KEDA does: wake on waiting work, sleep only after a long idle."""
    if spec.min_replicas > 0:
        memory.idle_since = None
        return
    waiting = metrics.get(BACKLOG, 0.0)
    busy = waiting + metrics.get(ACK_PENDING, 0.0) + metrics.get(RATE_IN, 0.0)
    if busy > 0 or RATE_IN not in metrics:
        memory.idle_since = None
    elif memory.idle_since is None:
        memory.idle_since = now
    if current == 0:
        if waiting > spec.activation.threshold:
            raw.replicas = max(1, raw.replicas)
            raw.reason += f"; activated: {_n(waiting)} waiting > {_n(spec.activation.threshold)}"
        else:
            raw.replicas = 0
        return
    if raw.replicas > 0:
        return
    idle_for = spec.activation.idle_for
    if memory.idle_since is not None and memory.idle_since <= now - timedelta(seconds=idle_for):
        raw.reason += f"; queue idle for {_n(idle_for)}s: scale to zero"
        return
    raw.replicas = 1
    raw.reason += f"; keeps 1 until the queue has been idle for {_n(idle_for)}s"


def _n(value: float) -> str:
    if abs(value) >= 100 or float(value).is_integer():
        return str(round(value))
    return f"{value:.1f}"
