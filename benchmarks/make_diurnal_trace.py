"""Writes benchmarks/scenarios/diurnal.csv: one compressed day, one row per second.

Run once; the CSV is committed, so the diurnal scenario's load never changes under the
benchmark. The shape: a night floor of 30 msg/s, a midday peak near 480 and an evening one near
330 (two Gaussian bumps over 24 h mapped onto 1200 s), with +-5% seeded jitter.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

SECONDS = 1200
FLOOR = 30.0
# (hour of the peak, height in msg/s above the floor, width in hours)
PEAKS = [(12.5, 450.0, 2.5), (19.5, 300.0, 1.8)]


def rate(second: int, draw: random.Random) -> float:
    hour = second * 24 / SECONDS
    value = FLOOR + sum(h * math.exp(-(((hour - at) / w) ** 2) / 2) for at, h, w in PEAKS)
    return round(value * (1 + draw.uniform(-0.05, 0.05)), 1)


def main() -> None:
    draw = random.Random(24)
    path = Path(__file__).parent / "scenarios" / "diurnal.csv"
    rows = ["t,rate"] + [f"{s},{rate(s, draw)}" for s in range(SECONDS)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
