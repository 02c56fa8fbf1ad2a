"""The policies docktor is measured against, each a Controller for simulate().

- Seed: the step rules docktor started from (+2 / -1, 10 s checks, no cooldown).
- KedaHpa: KEDA's NATS JetStream scaler feeding a Kubernetes HPA with its defaults.
- Oracle: knows the arrival rate and starts replicas instantly; the lower bound to aim at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from docktor.dev.bench.simulate import DT, QueueView

# Step times are multiples of DT computed in floating point; compare with this much slack.
EPS = 1e-6


def _bounded(target: int, low: int, high: int) -> int:
    return max(low, min(high, target))


@dataclass
class Seed:
    """Up by 2 when backlog > 500 or rate_in > 200 msg/s; down by 1 when backlog <= 100.

    backlog is `queue.backlog` (undelivered); rate_in comes from the stream counter of two
    consecutive checks, as docktor derives it. No cooldown in either direction.
    """

    min_replicas: int
    max_replicas: int
    name: str = "seed"
    interval: float = 10.0
    instant: bool = False
    up_by: int = 2
    down_by: int = 1
    backlog_up: float = 500.0
    rate_in_up: float = 200.0
    backlog_down: float = 100.0
    _previous: QueueView | None = None

    def check(self, view: QueueView) -> int | None:
        previous, self._previous = self._previous, view
        current = view.replicas
        if not self.min_replicas <= current <= self.max_replicas:
            return _bounded(current, self.min_replicas, self.max_replicas)
        rate_in = None
        if previous is not None and view.t > previous.t:
            rate_in = (view.arrived_total - previous.arrived_total) / (view.t - previous.t)
        if view.undelivered > self.backlog_up or (
            rate_in is not None and rate_in > self.rate_in_up
        ):
            return min(current + self.up_by, self.max_replicas)
        if view.undelivered <= self.backlog_down:
            return max(current - self.down_by, self.min_replicas)
        return None


@dataclass
class KedaHpa:
    """KEDA's `nats-jetstream` scaler (lagThreshold 100) behind a Kubernetes HPA, defaults.

    KEDA (pkg/scalers/nats_jetstream_scaler.go, getMaxMsgLag) reports the consumer's
    num_pending + num_ack_pending: every message not yet acknowledged, in flight included. The
    metric is an external AverageValue target, so the HPA (replica_calculator.go,
    GetExternalPerPodMetricReplicas) wants ceil(lag / 100) unless lag / (100 x replicas) is
    within 10% of 1, in which case it keeps the count. The metric is read every
    `poll_interval` and the HPA acts on the latest reading every `interval` (its sync period).

    A ScaledObject without `advanced.horizontalPodAutoscalerConfig.behavior` creates an HPA with
    no behaviour, so horizontal.go takes its older path (normalizeDesiredReplicas):
    - stabilise: the highest raw recommendation of the last `window` seconds (the newest one
      included; one entry older than the window is replaced rather than a new one appended,
      and the list starts with the replica count at the first sync);
    - limit: at most max(2 x current, 4) per sync, within [min, max] replicas.
    Current is the count asked for (scale.spec.replicas), starting pods included, as is the
    status count the replica calculator divides by.
    """

    min_replicas: int
    max_replicas: int
    name: str = "keda-hpa"
    interval: float = 15.0
    instant: bool = False
    poll_interval: float = 30.0
    lag_threshold: float = 100.0
    tolerance: float = 0.1
    window: float = 300.0
    up_factor: float = 2.0
    up_minimum: int = 4
    _lag: float = 0.0
    _polled_at: float | None = None
    _recommendations: list[tuple[float, int]] = field(default_factory=list)

    def check(self, view: QueueView) -> int | None:
        if self._polled_at is None or view.t - self._polled_at >= self.poll_interval - EPS:
            self._lag = view.undelivered + view.in_flight
            self._polled_at = view.t
        current = view.replicas
        if not self._recommendations:
            self._recommendations.append((view.t, current))
        if current > self.max_replicas:
            return self.max_replicas
        if current < self.min_replicas:
            return self.min_replicas
        raw = self._raw(current)
        stabilised = self._stabilise(view.t, raw)
        limit = min(self.max_replicas, max(int(self.up_factor * current), self.up_minimum))
        return _bounded(stabilised, self.min_replicas, limit)

    def _raw(self, current: int) -> int:
        ratio = self._lag / (self.lag_threshold * current) if current else math.inf
        if abs(1.0 - ratio) <= self.tolerance:
            return current
        return math.ceil(self._lag / self.lag_threshold - EPS)

    def _stabilise(self, now: float, raw: int) -> int:
        cutoff = now - self.window
        highest = raw
        old = None
        for index, (at, recommendation) in enumerate(self._recommendations):
            if at < cutoff - EPS:
                old = index
            else:
                highest = max(highest, recommendation)
        if old is None:
            self._recommendations.append((now, raw))
        else:
            self._recommendations[old] = (now, raw)
        return highest


@dataclass
class Oracle:
    """Knows the arrival rate of this very step and starts replicas at once: enough replicas
    for the rate, plus enough to drain whatever waits within `drain_within` seconds."""

    min_replicas: int
    max_replicas: int
    name: str = "oracle"
    interval: float = DT
    instant: bool = True
    drain_within: float = 1.0

    def check(self, view: QueueView) -> int | None:
        waiting = view.undelivered + view.in_flight
        need = (view.arrival_rate + waiting / self.drain_within) / view.per_replica_rate
        return _bounded(math.ceil(need - EPS), self.min_replicas, self.max_replicas)
