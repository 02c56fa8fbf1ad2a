"""Rates from counters: samples the loop already took, never a sleep inside an activity.

A rate is measured over the stretch of time closest to the service's `metrics_window` (one
check interval unless set) that the kept samples allow: the previous sample, or an older one
from `PolicyMemory.rate_samples`. A window of a minute at a 4 s interval reads a burst of 10 s
as a sixth of its height; a window of one interval reads it as it is.
"""

from __future__ import annotations

from datetime import datetime

from docktor.values import CounterSample, Observation

# The mapping of observations made before each metric source declared its own
# (Observation.counter_rates): the NATS counters, the only ones there were.
RATE_COUNTERS = {
    "queue.stream_last_seq": "queue.rate_in",
    "queue.ack_floor": "queue.rate_out",
}
# The most samples a window keeps: they travel in every evaluation's input and output. A window
# of many intervals keeps one sample per window / MAX_RATE_SAMPLES seconds.
MAX_RATE_SAMPLES = 32


def derive_rates(current: Observation, previous: Observation | None) -> dict[str, float]:
    """Per-second rates from the counters of two consecutive samples (one interval)."""
    return window_rates(current, previous, [], 0.0)


def window_rates(
    current: Observation,
    previous: Observation | None,
    samples: list[CounterSample],
    window: float,
) -> dict[str, float]:
    """Per-second rates over the span, back from `current`, closest to `window` seconds.

    No earlier sample, no time between them, or a counter that went backwards (a stream that
    was purged or recreated) gives no rate rather than a wrong one; a counter that went
    backwards within the window is measured from the drop on.
    """
    earlier = [s for s in samples if s.at < current.taken_at]
    newest = earlier[-1].at if earlier else None
    if (
        previous is not None
        and previous.taken_at < current.taken_at
        and (newest is None or newest < previous.taken_at)
    ):
        earlier.append(CounterSample(at=previous.taken_at, counters=previous.counters))
    rates: dict[str, float] = {}
    for counter, rate_name in (current.counter_rates or RATE_COUNTERS).items():
        now_value = current.counters.get(counter)
        if now_value is None:
            continue
        reference = _reference(earlier, counter, now_value, current.taken_at, window)
        if reference is not None:
            at, before = reference
            rates[rate_name] = round(
                (now_value - before) / (current.taken_at - at).total_seconds(), 3
            )
    return rates


def _reference(
    earlier: list[CounterSample], counter: str, now_value: float, now: datetime, window: float
) -> tuple[datetime, float] | None:
    """(time, value) of the sample to measure from: of the newest unbroken run of values that
    never go down towards `now_value`, the one whose age is closest to `window`."""
    best: tuple[datetime, float] | None = None
    later = now_value
    for sample in reversed(earlier):
        value = sample.counters.get(counter)
        if value is None or value > later:
            break
        later = value
        age = (now - sample.at).total_seconds()
        if best is None or abs(age - window) < abs((now - best[0]).total_seconds() - window):
            best = (sample.at, value)
    return best


def remember(
    samples: list[CounterSample], current: Observation, window: float, interval: float
) -> list[CounterSample]:
    """The samples to keep after `current`: none while the window is one interval or less (the
    previous sample serves), else those a later window may measure from, at most
    MAX_RATE_SAMPLES of them."""
    if window <= interval:
        return []
    kept = [s for s in samples if s.at < current.taken_at]
    rated = current.counter_rates or RATE_COUNTERS
    counters = {k: v for k, v in current.counters.items() if k in rated}
    if counters and (not kept or _age(kept[-1], current.taken_at) >= window / MAX_RATE_SAMPLES):
        kept.append(CounterSample(at=current.taken_at, counters=counters))
    # A sample older than the window is of use only while it is the youngest such: it stays
    # the closest to the window from above until a younger one passes the window's age.
    older = [i for i, s in enumerate(kept) if _age(s, current.taken_at) > window]
    if older:
        kept = kept[older[-1] :]
    return kept[-MAX_RATE_SAMPLES:]


def _age(sample: CounterSample, now: datetime) -> float:
    return (now - sample.at).total_seconds()
