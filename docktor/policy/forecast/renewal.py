"""Bursts timed from the last one: a renewal model over the fine ring's history.

A fold (model.py) places the next burst a period after the last cycle's and needs a margin for
bursts that drift. When the gaps between bursts vary (each drawn anew), the next burst is best
timed from where the last one started and how much the recent gaps spread: it starts in
[last + shortest gap, last + longest gap], widened by what so few gaps leave unseen. Capacity is
wanted from just before the earliest start until the burst shows or the latest start passes,
not for a fixed tenth of a period either side of a folded time.

Pure: it reads the ring the forecast keeps (no state of its own), so a loop that knows it
already has everything this needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from docktor.values import Ring

# A burst is where the rate is above the midpoint of the calm level and the highest seen.
# The calm level is this quantile of the recent buckets (bursts are the rarer part).
CALM_QUANTILE = 0.25
# Bursts at least this much above the calm level (and 1 msg/s) are told apart from noise.
BURST_RISE = 1.5
# A bucket counts as part of a burst's edge when at least this share of it was burst.
EDGE = 0.05
# How many recent gaps the spread is taken from: enough to see it, few enough to follow a
# rhythm that changes.
GAPS = 8
# Gaps whose spread is more than this share of their mean are no rhythm to time.
MAX_SPREAD = 0.5
# The late side of the window is at least this share of the mean gap: a burst met without its
# capacity costs far more backlog than a few more seconds of that capacity cost replicas (a
# window as narrow as the gaps seen let periodic-jitter's longest gap through: +80% backlog·s).
LATE = 0.1


@dataclass(frozen=True)
class Burst:
    start: float  # epoch seconds
    length: float  # seconds
    peak: float  # the highest bucket mean in it, msg/s


@dataclass(frozen=True)
class Timing:
    """When the next burst is expected, from the last one's start and the recent gaps."""

    last: Burst
    earliest: float  # epoch seconds
    latest: float
    length: float  # a burst's typical length, seconds
    rate: float  # a burst's height: the largest of the recent bursts' peaks, msg/s
    calm: float  # the rate between bursts, msg/s
    gaps: int  # how many gaps the spread was measured on
    varies: bool  # the gaps differ by more than a bucket (a rhythm that does not keep time)
    foreseen: int  # the latest bursts in a row that started inside the window timed for them
    # When the last burst is over: as long as bursts last, and half a bucket more (its start
    # is known to within a part of a bucket, and one that ends a moment late is still on).
    ends: float


def bursts(ring: Ring, within: int) -> tuple[list[Burst], float] | None:
    """The bursts in the last `within` buckets (the bucket being filled included, as the rate
    just sampled), oldest first, and the calm level; None when nothing stands out."""
    if ring.index is None:
        return None
    values = list(ring.values[-within:])
    if ring.open_count:
        values.append(ring.open_sum / ring.open_count)
    else:
        values.append(-1.0)
    first = ring.index - len(values) + 1  # the bucket index of values[0]
    known = sorted(v for v in values if v >= 0)
    if len(known) < 4:
        return None
    calm = known[int(CALM_QUANTILE * (len(known) - 1))]
    high = known[-1]
    if high < BURST_RISE * calm or high - calm < 1.0:
        return None
    middle = (calm + high) / 2

    def share(p: int) -> float:
        """How much of bucket p was burst, from its mean."""
        if p < 0 or p >= len(values) or values[p] < 0:
            return 0.0
        return min(1.0, max(0.0, (values[p] - calm) / (high - calm)))

    found: list[Burst] = []
    p = 0
    while p < len(values):
        if values[p] < middle:
            p += 1
            continue
        a = p
        while p < len(values) and values[p] >= middle:
            p += 1
        b = p - 1  # values[a..b] are above the middle
        peak = max(values[a : b + 1])
        before, inside = share(a - 1), share(a)
        # A burst that began in the bucket before (it reads part burst) started that share
        # of a bucket before this one; else it began inside this one, as late as it reads low.
        if before > EDGE:
            start = (first + a - before) * ring.step
        else:
            start = (first + a + 1 - inside) * ring.step
        edges = [share(q) for q in (a - 1, b + 1) if share(q) > EDGE]
        length = (sum(share(q) for q in range(a, b + 1)) + sum(edges)) * ring.step
        found.append(Burst(start=start, length=length, peak=peak))
    return found, calm


def timing(ring: Ring, period: float, cycles: int) -> Timing | None:
    """The next burst's window from the last burst's start and the spread of the last GAPS
    gaps between bursts (over the last `cycles` + GAPS periods), or None when there is no
    rhythm of bursts to time: fewer than two gaps, gaps far from `period` (the fold's), or
    spread wider than MAX_SPREAD of their mean."""
    within = math.ceil((cycles + GAPS) * period / ring.step)
    seen = bursts(ring, within)
    if seen is None:
        return None
    found, calm = seen
    # Bursts closer than half a period are one burst split by noise or another rhythm's:
    # not this rhythm's gaps.
    starts: list[Burst] = []
    for burst in found:
        if starts and burst.start - starts[-1].start < period / 2:
            continue
        starts.append(burst)
    timed = _window(starts[-(GAPS + 1) :], period, ring.step)
    if timed is None:
        return None
    earliest, latest, varies = timed
    # How many of the latest bursts, newest first, started inside the window the bursts
    # before each gave: a timing that has foreseen them.
    foreseen = 0
    for end in range(len(starts) - 1, 2, -1):
        before = _window(starts[max(0, end - GAPS - 1) : end], period, ring.step)
        if before is None or not before[0] <= starts[end].start <= before[1]:
            break
        foreseen += 1
    recent = starts[-(GAPS + 1) :]
    last = recent[-1]
    lengths = sorted(b.length for b in recent[:-1])  # the last one may still be going on
    length = lengths[len(lengths) // 2]
    return Timing(
        last=last,
        earliest=earliest,
        latest=latest,
        length=length,
        rate=max(b.peak for b in recent[-3:]),
        calm=calm,
        gaps=len(recent) - 1,
        varies=varies,
        foreseen=foreseen,
        ends=last.start + max(length, last.length) + ring.step / 2,
    )


def _window(recent: list[Burst], period: float, step: float) -> tuple[float, float, bool] | None:
    """[earliest, latest] start of the burst after `recent`, and whether their gaps vary by
    more than a bucket; None when they are too few or too spread to time a burst by.

    With n gaps from a spread the next one may fall outside, the window is widened either side
    by range / (n - 1), what the extremes of n draws leave on average beyond them (uniform
    gaps), and by half a bucket at least (a start is known to within a part of one). The late
    side is kept at least a tenth of the mean gap: a burst met without its capacity costs far
    more than a few more seconds of it."""
    gaps = [b.start - a.start for a, b in zip(recent, recent[1:], strict=False)]
    if len(gaps) < 2:
        return None
    mean = sum(gaps) / len(gaps)
    shortest, longest = min(gaps), max(gaps)
    if abs(mean - period) > period * MAX_SPREAD / 2 or longest - shortest > MAX_SPREAD * mean:
        return None
    widen = max(step / 2, (longest - shortest) / (len(gaps) - 1))
    late = max(widen, LATE * mean)
    last = recent[-1].start
    return last + shortest - widen, last + longest + late, longest - shortest > step


def expected(timed: Timing, now: float, lead: float) -> tuple[float, float]:
    """The highest rate the timing expects from `now` to `now + lead` (epoch seconds), and
    when: the burst's height while the last one lasts and from the earliest start of the
    next until its latest (a burst that has not shown by then is not waited for), else the
    calm rate."""
    if now < timed.ends:
        return timed.rate, now
    if now + lead >= timed.earliest and now <= timed.latest:
        return timed.rate, max(now, timed.earliest)
    return timed.calm, now
