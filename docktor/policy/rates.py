"""Rates from counters: two consecutive samples, never a sleep inside an activity."""

from __future__ import annotations

from docktor.model import Observation

# The mapping of observations made before each metric source declared its own
# (Observation.counter_rates): the NATS counters, the only ones there were.
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
    for counter, rate_name in (current.counter_rates or RATE_COUNTERS).items():
        now_value = current.counters.get(counter)
        before = previous.counters.get(counter)
        if now_value is None or before is None or now_value < before:
            continue
        rates[rate_name] = round((now_value - before) / seconds, 3)
    return rates
