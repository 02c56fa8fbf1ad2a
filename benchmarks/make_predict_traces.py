"""Writes the traces of the predictive scenarios into benchmarks/scenarios/, one row
per second. Run once; the CSVs are committed so the loads never change under the benchmark.

- periodic-jitter: 100 msg/s; a 10 s burst of 500 msg/s +-10% after each gap of 60 s +-10%
  (each gap and each size drawn anew, so the bursts drift off any fixed grid).
- two-periods: 100 msg/s, +300 for 10 s every 60 s and +200 for 20 s every 150 s (the load
  repeats every 300 s).
- period-change: the example's bursts every 60 s for 10 min, then every 90 s.
- rhythm-stops: the example's bursts every 60 s for 10 min, then a flat 100 msg/s.
- jitter-75: 100 msg/s; a 10 s burst of 500 msg/s every 75 s +-10% (each interval between
  burst starts drawn anew), over 900 s.
- aperiodic: 100 msg/s with 10 s bursts of 300-600 msg/s after exponential gaps (mean 60 s,
  at least 15 s): bursts as frequent as the periodic ones, without a rhythm.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

BASE = 100.0
BURST = 500.0
SECONDS = 1200
JITTER_75_SECONDS = 900


def bursts(starts: list[tuple[float, float, float]]) -> Callable[[int], float]:
    """(start, length, extra msg/s) bursts on top of the base rate."""

    def rate(second: int) -> float:
        extra = sum(size for start, length, size in starts if start <= second < start + length)
        return BASE + extra

    return rate


def periodic_jitter() -> Callable[[int], float]:
    draw = random.Random(11)
    starts, t = [], 0.0
    while t < SECONDS:
        t += 60 * (1 + draw.uniform(-0.1, 0.1))
        starts.append((t - 10, 10.0, (BURST - BASE) * (1 + draw.uniform(-0.1, 0.1))))
    return bursts(starts)


def jitter_75() -> Callable[[int], float]:
    draw = random.Random(75)
    starts, t = [], 0.0
    while t < JITTER_75_SECONDS:
        t += 75 * (1 + draw.uniform(-0.1, 0.1))
        starts.append((round(t, 1), 10.0, BURST - BASE))
    return bursts(starts)


def two_periods() -> Callable[[int], float]:
    short = [(k * 60 + 50.0, 10.0, 300.0) for k in range(SECONDS // 60)]
    long = [(k * 150 + 120.0, 20.0, 200.0) for k in range(SECONDS // 150)]
    return bursts(short + long)


def period_change() -> Callable[[int], float]:
    first = [(k * 60 + 50.0, 10.0, BURST - BASE) for k in range(10)]
    then = [(600 + k * 90 + 80.0, 10.0, BURST - BASE) for k in range(7)]
    return bursts(first + then)


def rhythm_stops() -> Callable[[int], float]:
    return bursts([(k * 60 + 50.0, 10.0, BURST - BASE) for k in range(10)])


def aperiodic() -> Callable[[int], float]:
    draw = random.Random(5)
    starts, t = [], 0.0
    while t < SECONDS:
        t += max(15.0, draw.expovariate(1 / 60))
        starts.append((t, 10.0, draw.uniform(200, 500)))
    return bursts(starts)


def main() -> None:
    folder = Path(__file__).parent / "scenarios"
    for name, make, seconds in [
        ("periodic-jitter", periodic_jitter, SECONDS),
        ("two-periods", two_periods, SECONDS),
        ("period-change", period_change, SECONDS),
        ("rhythm-stops", rhythm_stops, SECONDS),
        ("aperiodic", aperiodic, SECONDS),
        ("jitter-75", jitter_75, JITTER_75_SECONDS),
    ]:
        rate = make()
        rows = ["t,rate"] + [f"{s},{round(rate(s), 1)}" for s in range(seconds)]
        (folder / f"{name}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
