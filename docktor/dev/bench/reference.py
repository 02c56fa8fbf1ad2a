"""The policies docktor is measured against, each a Controller for simulate().

- Seed: the step rules docktor started from (+2 / -1, 10 s checks, no cooldown).
- KedaHpa: KEDA's NATS JetStream scaler feeding a Kubernetes HPA, in the three forms a
  ScaledObject gets: keda_hpa (the defaults), keda_hpa_cached (`useCachedMetrics: true`) and
  hpa_behavior (the HPA's v2 default `behavior`).
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
    """KEDA's `nats-jetstream` scaler (lagThreshold 100) behind a Kubernetes HPA.

    The metric. KEDA (pkg/scalers/nats_jetstream_scaler.go, getMaxMsgLag) reports the
    consumer's num_pending + num_ack_pending: every message not yet acknowledged, in flight
    included. It is an external AverageValue target, so the HPA (replica_calculator.go,
    GetExternalPerPodMetricReplicas) wants ceil(lag / 100) unless lag / (100 x replicas) is
    within 10% of 1, in which case it keeps the count. The HPA syncs every `interval` (15 s,
    --horizontal-pod-autoscaler-sync-period). How fresh the lag it sees is depends on KEDA:
    - `poll_interval` None (KEDA's default, `useCachedMetrics: false`): the metrics server asks
      the scaler at every HPA request, so each sync reads the lag as it is then;
    - `poll_interval` a number (`useCachedMetrics: true`): the metrics server answers from the
      value the operator polled every `pollingInterval` (30 s by default).

    The normalisation (horizontal.go). Current is the count asked for (scale.spec.replicas),
    starting pods included, as is the status count the replica calculator divides by.
    - `behavior` False: a ScaledObject without `advanced.horizontalPodAutoscalerConfig` makes
      an HPA without `behavior`, and normalizeDesiredReplicas takes its older path:
      stabilise to the highest raw recommendation of the last `window` seconds (the newest
      included; one entry older than the window is replaced rather than a new one appended,
      and the list starts with the replica count at the first sync), then at most
      max(2 x current, 4) per sync, within [min, max].
    - `behavior` True: an HPA with the v2 default behavior (pkg/apis/autoscaling/v2/
      defaults.go), which a ScaledObject that sets `advanced.horizontalPodAutoscalerConfig`
      gets: normalizeDesiredReplicasWithBehaviors. Up: no stabilisation, at most
      max(start + 4, ceil(start x 2)) where start is the count `scale_up_period` (15 s) ago
      (current less what was added plus what was removed since: the scale events of the last
      period). Down: min(current, the highest raw recommendation of the last `window`
      seconds); the default 100% per 15 s scale-down policy allows going to min at once.
    """

    min_replicas: int
    max_replicas: int
    name: str = "keda-hpa"
    interval: float = 15.0
    instant: bool = False
    poll_interval: float | None = None
    behavior: bool = False
    lag_threshold: float = 100.0
    tolerance: float = 0.1
    window: float = 300.0
    up_factor: float = 2.0
    up_minimum: int = 4
    up_pods: int = 4
    up_percent: float = 100.0
    up_period: float = 15.0
    _lag: float = 0.0
    _polled_at: float | None = None
    _recommendations: list[tuple[float, int]] = field(default_factory=list)
    # (t, replicas added (> 0) or removed (< 0)) for every scale this HPA made.
    _events: list[tuple[float, int]] = field(default_factory=list)

    def check(self, view: QueueView) -> int | None:
        fresh = self.poll_interval is None
        if fresh or self._polled_at is None or view.t - self._polled_at >= self.poll_interval - EPS:
            self._lag = view.undelivered + view.in_flight
            self._polled_at = view.t
        current = view.replicas
        if not self._recommendations:
            self._recommendations.append((view.t, current))
        if current > self.max_replicas:
            target = self.max_replicas
        elif current < self.min_replicas:
            target = self.min_replicas
        else:
            raw = self._raw(current)
            highest = self._stabilise(view.t, raw)
            if self.behavior:
                target = self._with_behavior(view.t, current, raw, highest)
            else:
                limit = min(self.max_replicas, max(int(self.up_factor * current), self.up_minimum))
                target = _bounded(highest, self.min_replicas, limit)
        if target != current:
            self._events.append((view.t, target - current))
        return target

    def _raw(self, current: int) -> int:
        ratio = self._lag / (self.lag_threshold * current) if current else math.inf
        if abs(1.0 - ratio) <= self.tolerance:
            return current
        return math.ceil(self._lag / self.lag_threshold - EPS)

    def _stabilise(self, now: float, raw: int) -> int:
        """The highest recommendation of the last `window` seconds, this one included; records
        this one (replacing one that has left the window, as horizontal.go does)."""
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

    def _with_behavior(self, now: float, current: int, raw: int, highest: int) -> int:
        if raw >= current:
            # Scale-up stabilisation window 0: the raw recommendation, at the policies' pace.
            start = current - self._changed_since(now - self.up_period)
            limit = max(start + self.up_pods, math.ceil(start * (1 + self.up_percent / 100) - EPS))
            limit = max(limit, current)  # the events of the period may not take it below current
            return _bounded(raw, self.min_replicas, min(self.max_replicas, limit))
        return _bounded(min(current, highest), self.min_replicas, self.max_replicas)

    def _changed_since(self, cutoff: float) -> int:
        """Net replicas added by this HPA's scale events after `cutoff`: a scale made exactly
        one period ago is out of the period, as the next sync's clock is a moment later."""
        return sum(change for at, change in self._events if at > cutoff + EPS)


def keda_hpa(low: int, high: int) -> KedaHpa:
    """KEDA and the HPA as they run by default: fresh lag at every sync, no `behavior`."""
    return KedaHpa(low, high)


def keda_hpa_cached(low: int, high: int) -> KedaHpa:
    """The same with `useCachedMetrics: true`: the lag as the operator polled it every 30 s."""
    return KedaHpa(low, high, name="keda-hpa-cached", poll_interval=30.0)


def hpa_behavior(low: int, high: int) -> KedaHpa:
    """Fresh lag behind an HPA with the v2 default `behavior` (a ScaledObject with
    `advanced.horizontalPodAutoscalerConfig`)."""
    return KedaHpa(low, high, name="hpa-behavior", behavior=True)


@dataclass
class Oracle:
    """Knows the arrival rate of this very step and starts replicas at once: enough replicas
    for the rate, plus enough to drain within `drain_within` seconds what has piled up beyond
    what a busy pool always holds (`excess`: the messages in service and in fetched batches
    are not a queue more replicas would shorten)."""

    min_replicas: int
    max_replicas: int
    name: str = "oracle"
    interval: float = DT
    instant: bool = True
    drain_within: float = 1.0

    def check(self, view: QueueView) -> int | None:
        need = (view.arrival_rate + view.excess / self.drain_within) / view.per_replica_rate
        return _bounded(math.ceil(need - EPS), self.min_replicas, self.max_replicas)
