"""The numbers that judge a run: what users waited, what replicas cost, how often it scaled.

Message wait comes from the fluid model: a message arriving in a step waits for the messages
ahead of it, waiting / (ready x per_replica_rate) seconds at that step's service rate. While
messages wait and no replica is ready, the service rate is taken as one replica's: the wait is
then a lower bound, since at least one replica has to start before anything moves. p95 and max
are over arriving messages (each step's wait weighted by its arrivals), so a calm minute does
not dilute the wait of a burst.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from docktor.dev.bench.simulate import Run

# A load rise: the scheduled rate is at least RISE_FACTOR times, and at least RISE_MIN msg/s
# above, what it was RISE_LOOKBACK seconds before. Each maximal stretch where that holds is one
# rise, starting where it first holds.
RISE_LOOKBACK = 10.0
RISE_FACTOR = 1.2
RISE_MIN = 10.0


@dataclass(frozen=True)
class Metrics:
    policy: str
    backlog_s: float  # integral of waiting messages (arrived, not yet acknowledged), msg x s
    peak_backlog: float
    wait_p95_s: float
    wait_max_s: float
    replica_s: float  # integral of replicas asked for, starting ones included
    actions: int
    # Mean seconds from each load rise to the first scale-up after it (before the next rise);
    # None when the policy never scaled up after a rise.
    rise_to_scale_up_s: float | None
    rises_answered: int
    rises: int

    def as_dict(self) -> dict[str, object]:
        return {key: _rounded(value) for key, value in asdict(self).items()}


def measure(run: Run, base_rates: list[float]) -> Metrics:
    """`base_rates` is the scheduled load per step before noise, for finding rises."""
    dt = run.dt
    waits = [
        waiting / (max(ready, 1) * run.per_replica_rate)
        for waiting, ready in zip(run.waiting, run.ready, strict=True)
    ]
    rises = find_rises(base_rates, dt)
    reactions = _reactions(rises, run, len(base_rates) * dt)
    return Metrics(
        policy=run.policy,
        backlog_s=sum(run.waiting) * dt,
        peak_backlog=max(run.waiting, default=0.0),
        wait_p95_s=weighted_percentile(waits, run.arrived, 0.95),
        wait_max_s=max((w for w, a in zip(waits, run.arrived, strict=True) if a > 0), default=0.0),
        replica_s=sum(run.replicas) * dt,
        actions=len(run.actions),
        rise_to_scale_up_s=sum(reactions) / len(reactions) if reactions else None,
        rises_answered=len(reactions),
        rises=len(rises),
    )


def find_rises(base_rates: list[float], dt: float) -> list[float]:
    back = round(RISE_LOOKBACK / dt)
    starts: list[float] = []
    rising_before = False
    for k, rate in enumerate(base_rates):
        before = base_rates[max(0, k - back)]
        rising = rate >= before * RISE_FACTOR and rate - before >= RISE_MIN
        if rising and not rising_before:
            starts.append(k * dt)
        rising_before = rising
    return starts


def _reactions(rises: list[float], run: Run, end: float) -> list[float]:
    ups = [t for t, before, after in run.actions if after > before]
    out = []
    for index, start in enumerate(rises):
        until = rises[index + 1] if index + 1 < len(rises) else end
        first = next((t for t in ups if start <= t < until), None)
        if first is not None:
            out.append(first - start)
    return out


def weighted_percentile(values: list[float], weights: list[float], q: float) -> float:
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return 0.0
    seen = 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= q * total:
            return value
    return pairs[-1][0]


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 3)
    return value
