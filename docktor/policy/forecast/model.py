"""Forecast: learn the rhythm of queue.rate_in from the loop's own samples, and predict it.

Pure: no I/O, no clock. The history lives in `ForecastMemory` (inside the policy's memory), which
is an input *and* an output of the `evaluate` local activity on every iteration, so its size lands
in workflow history twice per iteration: it is kept to a few KB whatever the period.

History: three rings of per-bucket mean rates (rounded), at three resolutions, so that periods
from seconds to a day are seen with a bounded number of values:

    fine    one bucket per check interval, 240 buckets  (4 s checks: 16 min, periods <= 5 min)
    medium  60 s buckets,                   240 buckets  (4 h, periods <= 80 min)
    coarse  15 min buckets,                 288 buckets  (3 days, periods <= 1 day)

Periods: seasonal averaging. For a lag of L buckets, the last `cycles` x L buckets are folded
into an average profile; how much of the variance that profile explains (R²), corrected for what
L free means explain in pure noise ((L - 1) / (m - 1) of it), is the confidence. Noise, a step
and a ramp explain little beyond chance when folded; a rhythm explains nearly all. Only the
last `cycles` cycles are looked at, so a changed period takes over after that many cycles and a
rhythm that stopped loses its confidence within one or two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from docktor.policy.forecast import renewal
from docktor.values import ForecastMemory, Ring

# (bucket seconds, capacity); the fine ring's bucket is the check interval (None here).
FINE_CAPACITY = 240
RINGS: list[tuple[float | None, int]] = [(None, FINE_CAPACITY), (60.0, 240), (900.0, 288)]
MISSING = -1.0
# A lag shorter than this many buckets is not a period (a rhythm needs a shape to fold).
MIN_LAG = 3
# Buckets without a sample that a window may have before it is not judged at all.
MAX_MISSING = 0.2
# Among lags whose confidence is within this of the best, the shortest wins (its multiples fit
# as well, and the shortest is the period).
HARMONIC_SLACK = 0.05
# A cycle "was seen" when the average profile explains at least this much of it.
CYCLE_FIT = 0.5
# How far off its time a burst may come, as a fraction of the period.
JITTER = 0.1
# A cycle counts as drifted when a shift lines it up with the one before with at most this
# share of the unshifted error (noise alone moves the best shift by chance, not by this much).
DRIFT_GAIN = 0.5
# How many recent cycles are looked at for drift.
DRIFT_CYCLES = 5
# A bucket "rises" when the rhythm expects more than this times the bucket before it.
RISE = 1.2


@dataclass(frozen=True)
class Period:
    """A rhythm found in one ring."""

    seconds: float
    buckets: float  # the period in buckets: a whole or a half number (90 s in 4 s buckets: 22.5)
    step: float
    confidence: float
    cycles: int  # complete cycles, counted back from now, that the profile fits


@dataclass(frozen=True)
class Prediction:
    """The rate expected over the next `lead` seconds, and when it peaks."""

    period: Period
    rate: float
    at: datetime
    drift: int = 0  # buckets either side a burst may come off time (0: the rhythm keeps time)
    # Timed from the last burst by gaps that foresaw the latest burst (renewal.py): trusted
    # whatever the fold's confidence, which dips whenever a burst lands off its fold.
    timed: bool = False


def fine_step(check_interval: float) -> float:
    """The fine ring's bucket: one check interval, in whole seconds (at least 1)."""
    return float(max(1, round(check_interval)))


def _store(rate: float) -> float:
    # Small values keep a decimal; the rest are whole numbers: what the JSON costs matters.
    return round(rate, 1) if rate < 10 else float(round(rate))


def observe(memory: ForecastMemory, at: datetime, rate: float, check_interval: float) -> None:
    """Add one rate sample (the mean over the interval ending at `at`). Mutates `memory`.

    Each ring gets it in the bucket of the interval's middle. A ring whose bucket no longer
    matches (the check interval changed) starts again; the others keep their history.
    """
    if not math.isfinite(rate) or rate < 0:
        return
    middle = at - timedelta(seconds=check_interval / 2)
    moment = middle.timestamp()
    steps = [fine_step(check_interval) if step is None else step for step, _ in RINGS]
    if len(memory.rings) != len(RINGS) or any(
        ring.step != step for ring, step in zip(memory.rings, steps, strict=False)
    ):
        old = {ring.step: ring for ring in memory.rings}
        memory.rings = [old.get(step) or Ring(step=step) for step in steps]
    for ring, (_, capacity) in zip(memory.rings, RINGS, strict=True):
        _add(ring, math.floor(moment / ring.step), rate, capacity)


def seed(samples: list[tuple[datetime, float]], check_interval: float) -> ForecastMemory:
    """A history rebuilt from earlier rate samples (a loop's decision log), oldest first: the
    rings as the loop that took them would have filled them."""
    memory = ForecastMemory()
    for at, rate in samples:
        observe(memory, at, rate, check_interval)
    return memory


def _add(ring: Ring, bucket: int, rate: float, capacity: int) -> None:
    if ring.index is None or bucket > ring.index:
        if ring.index is not None:
            closed = _store(ring.open_sum / ring.open_count) if ring.open_count else MISSING
            gap = min(bucket - ring.index - 1, capacity)
            ring.values.append(closed)
            ring.values.extend([MISSING] * gap)
            del ring.values[:-capacity]
            # A new closed bucket: the period this ring found is stale.
            ring.period = None
        ring.index, ring.open_sum, ring.open_count = bucket, 0.0, 0
    elif bucket < ring.index:
        return  # a clock that went back: the sample belongs to a bucket already closed
    ring.open_sum = round(ring.open_sum + rate, 3)
    ring.open_count += 1


def detect(ring: Ring, cycles: int) -> Period | None:
    """The ring's period over its last `cycles` cycles, or None (too little history, no
    variation). Cached in the ring until the next bucket closes."""
    if ring.period is not None and ring.period_cycles == cycles:
        return _cached(ring)
    found = _detect(ring.values, ring.step, cycles)
    ring.period_cycles = cycles
    if found is None:
        ring.period = [0.0, 0.0, 0.0]
        return None
    ring.period = [float(found.buckets), round(found.confidence, 3), float(found.cycles)]
    return found


def _cached(ring: Ring) -> Period | None:
    assert ring.period is not None
    buckets, confidence, seen = ring.period
    if buckets <= 0:
        return None
    return Period(buckets * ring.step, buckets, ring.step, confidence, int(seen))


def _detect(values: list[float], step: float, cycles: int) -> Period | None:
    cycles = max(2, cycles)
    best: list[tuple[float, float]] = []
    # Lags in half buckets: a period that is not a whole number of check intervals (90 s in
    # 4 s checks) would drift a bucket every other cycle at the nearest whole lag.
    for half in range(2 * MIN_LAG, 2 * len(values) // cycles + 1):
        lag = half / 2
        score = _fit(values, len(values) - math.ceil(lag * cycles), lag)
        if score is not None:
            best.append((lag, score))
    if not best:
        return None
    top = max(score for _, score in best)
    if top <= 0:
        return None
    shortest = next(lag for lag, s in best if s >= top - HARMONIC_SLACK)
    # ... and of that lag and its neighbours, the best fit: 14.5 and 15 buckets are the same
    # rhythm, not a harmonic.
    lag, confidence = max(((lag, s) for lag, s in best if abs(lag - shortest) <= 1), key=_score)
    seen = _cycles_seen(values, lag, cycles)
    return Period(lag * step, lag, step, confidence, seen)


def _score(candidate: tuple[float, float]) -> float:
    return candidate[1]


def _phase(position: int, size: int, lag: float) -> int:
    """The profile bin of values[position]: phases are counted back from the newest value, so
    every function here folds the same way whatever the ring's length."""
    return math.floor((position - size) % lag)


def _profile(values: list[float], start: int, lag: float) -> list[float | None]:
    bins = math.ceil(lag)
    sums, counts = [0.0] * bins, [0] * bins
    for position in range(max(0, start), len(values)):
        value = values[position]
        if value >= 0:
            phase = _phase(position, len(values), lag)
            sums[phase] += value
            counts[phase] += 1
    return [s / c if c else None for s, c in zip(sums, counts, strict=True)]


def _fit(values: list[float], start: int, lag: float) -> float | None:
    """Chance-corrected R² of the profile folded from values[start:]; None when that window
    cannot be judged. One pass: the profile's error is the sum of squares less what each
    phase's mean explains (Σv² − Σ sum²/count), which keeps the detection of every lag of a
    full ring to milliseconds.

    A phase with a single value in the window (the others missing) is left out: its mean
    "explains" that value whatever it is, so one burst beside a gap would fold perfectly at
    a short lag that never repeated."""
    if start < 0:
        return None
    size = len(values)
    bins = math.ceil(lag)
    sums, squares, counts = [0.0] * bins, [0.0] * bins, [0] * bins
    for position in range(start, size):
        value = values[position]
        if value >= 0:
            phase = math.floor((position - size) % lag)
            sums[phase] += value
            squares[phase] += value * value
            counts[phase] += 1
    judged = [(s, q, c) for s, q, c in zip(sums, squares, counts, strict=True) if c >= 2]
    valid = sum(c for _, _, c in judged)
    if valid < (size - start) * (1 - MAX_MISSING) or valid <= len(judged) + 1:
        return None
    total_sum = sum(s for s, _, _ in judged)
    total_squares = sum(q for _, q, _ in judged)
    mean = total_sum / valid
    total = total_squares - valid * mean * mean
    # A flat load has no rhythm to learn: at least 1 msg/s or 5% of the mean of spread.
    if total / valid < max(1.0, 0.05 * mean) ** 2:
        return None
    explained = sum(s * s / c for s, _, c in judged)
    error = max(0.0, total_squares - explained)
    r2 = 1 - error / total
    chance = (len(judged) - 1) / (valid - 1)
    return (r2 - chance) / (1 - chance)


def _cycles_seen(values: list[float], lag: float, cycles: int) -> int:
    """Complete cycles, newest first, that the profile of the last `cycles` fits."""
    size = len(values)
    profile = _profile(values, size - math.ceil(lag * cycles), lag)
    seen = 0
    k = 0
    while size - math.ceil(lag * (k + 1)) >= 0:
        start, end = size - math.ceil(lag * (k + 1)), size - math.ceil(lag * k)
        pairs = [
            (values[p], profile[_phase(p, size, lag)])
            for p in range(start, end)
            if values[p] >= 0 and profile[_phase(p, size, lag)] is not None
        ]
        if len(pairs) < (end - start) * (1 - MAX_MISSING) or _r2(pairs) < CYCLE_FIT:
            break
        seen += 1
        k += 1
    return seen


def _r2(pairs: list[tuple[float, float | None]]) -> float:
    values = [v for v, _ in pairs]
    mean = sum(values) / len(values)
    total = sum((v - mean) ** 2 for v in values)
    if total == 0:
        return 0.0
    error = sum((v - (p or 0.0)) ** 2 for v, p in pairs)
    return 1 - error / total


def best_period(memory: ForecastMemory, cycles: int) -> tuple[Ring, Period] | None:
    """The most confident period over all rings; a finer ring wins a near tie (it times the
    burst better)."""
    found: list[tuple[Ring, Period]] = []
    reach = 0.0  # the longest period a finer ring folds over `cycles` cycles
    for ring, (_, capacity) in zip(memory.rings, RINGS, strict=False):
        period = detect(ring, cycles)
        # A period a finer ring can fold is that ring's to judge: a coarser bucket averages a
        # short burst away (90 s bursts seen in 60 s buckets ask for a third of their rate).
        if period is not None and period.seconds > reach:
            found.append((ring, period))
        reach = max(reach, capacity * ring.step / max(2, cycles))
    if not found:
        return None
    top = max(p.confidence for _, p in found)
    return next((r, p) for r, p in found if p.confidence >= top - HARMONIC_SLACK)


def predict(
    memory: ForecastMemory, now: datetime, lead: float, cycles: int, whole: bool = False
) -> Prediction | None:
    """The highest rate the rhythm expects from now to `lead` seconds from now: each future
    bucket is the largest of the same phase in the last `cycles` cycles. `whole`: the whole
    jitter window, even the part before now that this cycle has already had."""
    chosen = best_period(memory, cycles)
    if chosen is None:
        return None
    ring, period = chosen
    if ring.index is None:
        return None
    step, lag = ring.step, period.buckets
    # Bursts that do not keep perfect time: look as far either side as recent cycles drifted
    # against each other (up to a tenth of a period), so a burst a little early or late still
    # finds its capacity there; a rhythm that keeps time costs nothing extra.
    spread = drift(ring.values, lag)
    if spread > 0 and not whole:
        # A rhythm that drifts, whose bursts a renewal model has foreseen: timed from the last
        # burst's start and the spread of the recent gaps rather than a margin of a tenth of
        # a period around a folded time.
        timed = renewal.timing(ring, period.seconds, cycles)
        if timed is not None and timed.varies and timed.foreseen >= 1:
            rate, at = renewal.expected(timed, now.timestamp(), lead)
            moment = datetime.fromtimestamp(at, tz=UTC)
            return Prediction(period=period, rate=rate, at=moment, drift=spread, timed=True)
    # The sample just taken is in the bucket before now: a surprise is judged against it
    # (`whole`).
    first = math.floor(now.timestamp() / step) - (max(1, spread) if whole else spread)
    last = math.floor((now.timestamp() + lead) / step) + spread
    # A bucket holds a mean: one that a burst starts in reads low (part calm, part burst), so
    # when the lead ends in a rising bucket the burst may be at full height within it: the
    # bucket after counts too. Not otherwise: capacity asked a check too early is only cost.
    # (A drifting rhythm's margin already reaches past it.)
    if spread == 0 and _rising(ring, last, lag, cycles):
        last += 1
    newest_closed = ring.index - 1  # values[-1] is this bucket
    # A rhythm that keeps time: each phase's largest of the last cycles (bursts as big as the
    # recent ones). One that drifts: the last cycle's, whose burst times the next one best
    # (the margin covers the drift; older cycles' bursts, each off by its own gaps since,
    # would widen the window again).
    recent = cycles if spread == 0 else 1
    expected: list[tuple[int, float]] = []
    for bucket in range(first, last + 1):
        rate = _expected(ring, bucket, lag, recent)
        if rate is not None:
            expected.append((bucket, rate))
    # The window reaches back for a burst that is late; one this cycle already had is over.
    past = [rate for bucket, rate in expected if bucket <= newest_closed]
    if past and not whole and _seen_since(ring, first) >= 0.9 * max(past):
        expected = [(bucket, rate) for bucket, rate in expected if bucket > newest_closed]
    if not expected:
        return None
    peak = max(rate for _, rate in expected)
    # The burst is expected where the rate first comes near its peak: that is what must be met.
    when = next(b for b, rate in expected if rate >= 0.9 * peak)
    at = datetime.fromtimestamp(max(when * step, now.timestamp()), tz=UTC)
    return Prediction(period=period, rate=peak, at=at, drift=spread)


def drift(values: list[float], lag: float) -> int:
    """How far either side (in buckets) a burst may come off the rhythm's time: a tenth of a
    period (at least a bucket) when any of the last DRIFT_CYCLES cycles lines up clearly better
    with the one before it shifted than not (the gaps between bursts vary: one drift seen says
    the next can drift as far), else 0 (a rhythm that keeps time)."""
    most = max(1, round(lag * JITTER))
    size = len(values)
    for k in range(1, DRIFT_CYCLES + 1):
        start, end = size - math.ceil(lag * k), size - math.ceil(lag * (k - 1))
        if start - math.ceil(lag) - most < 0:
            break
        errors = [
            _shifted_error(values, range(start, end), lag, shift)
            for shift in range(-most, most + 1)
        ]
        if min(errors) < DRIFT_GAIN * errors[most]:  # errors[most] is the unshifted one
            return most
    return 0


def _shifted_error(values: list[float], positions: range, lag: float, shift: int) -> float:
    """Mean squared difference between these buckets and the ones a period (+ shift) before."""
    error, pairs = 0.0, 0
    for p in positions:
        q = math.floor(p - lag + 0.5) + shift
        if values[p] >= 0 and values[q] >= 0:
            error += (values[p] - values[q]) ** 2
            pairs += 1
    return error / pairs if pairs else math.inf


def _expected(
    ring: Ring, bucket: int, lag: float, cycles: int, pick: Callable[[list[float]], float] = max
) -> float | None:
    """The largest (`pick`) rate of `bucket`'s phase in the last `cycles` closed cycles
    (capacity for a burst as big as the recent ones), or None when none of them was sampled."""
    assert ring.index is not None
    newest_closed = ring.index - 1  # values[-1] is this bucket
    k = 1
    while _back(bucket, k, lag) > newest_closed:
        k += 1
    seen = []
    for _ in range(cycles):
        back = _back(bucket, k, lag)
        position = len(ring.values) - 1 - (newest_closed - back)
        if position < 0:
            break
        if ring.values[position] >= 0:
            seen.append(ring.values[position])
        k += 1
    return pick(seen) if seen else None


def _rising(ring: Ring, bucket: int, lag: float, cycles: int) -> bool:
    """The rhythm rises into `bucket`: it expects more there than in the bucket before, by
    more than noise (RISE). Unknown counts as rising: look one further, as for a rise."""
    here = _expected(ring, bucket, lag, cycles)
    before = _expected(ring, bucket - 1, lag, cycles)
    return here is None or before is None or here > RISE * before


def _back(bucket: int, k: int, lag: float) -> int:
    """The bucket `k` periods before `bucket`: the nearest one for a half lag."""
    return math.floor(bucket - k * lag + 0.5)


def _seen_since(ring: Ring, bucket: int) -> float:
    """The highest rate observed from `bucket` on (the bucket being filled included)."""
    assert ring.index is not None
    since = ring.index - bucket  # closed buckets from `bucket` on
    values = ring.values[-since:] if since > 0 else []
    highest = max((v for v in values if v >= 0), default=0.0)
    if ring.open_count:
        highest = max(highest, ring.open_sum / ring.open_count)
    return highest


def missed(memory: ForecastMemory, cycles: int, factor: float) -> bool:
    """A burst the rhythm expected did not come: the bucket that has just left the jitter
    window (a tenth of a period) had, in each of the last `cycles` cycles, more than `factor`
    times anything seen around it now. The rhythm changed or stopped, and is not to be relied
    on to give capacity back. (Each cycle, not the largest of them: bursts that drift in time
    overlap in only a few phases, and only those say for sure that one is missing.)"""
    chosen = best_period(memory, cycles)
    if chosen is None or chosen[0].index is None:
        return False
    ring, period = chosen
    spread = max(1, drift(ring.values, period.buckets))
    bucket = ring.index - 1 - spread
    expected = _expected(ring, bucket, period.buckets, cycles, pick=min)
    if expected is None:
        return False
    return expected > factor * max(_seen_since(ring, bucket - spread), 1.0)


def ending(memory: ForecastMemory, now: datetime, cycles: int) -> bool:
    """The rhythm expects a burst to end inside the bucket that starts now: it reads between
    the bucket before and the one after (part burst, part calm), so its mean understates the
    rate at its start. (90 s in 4 s buckets: every other cycle's burst ends mid-bucket.)"""
    chosen = best_period(memory, cycles)
    if chosen is None or chosen[0].index is None:
        return False
    ring, period = chosen
    bucket = math.floor(now.timestamp() / ring.step)
    before, here, after = (
        _expected(ring, b, period.buckets, cycles) for b in (bucket - 1, bucket, bucket + 1)
    )
    if before is None or here is None or after is None:
        return True  # not known: as if it did
    return before > RISE * here and here > RISE * after


def next_peak(memory: ForecastMemory, now: datetime, cycles: int) -> Prediction | None:
    """The next time within one period the rhythm peaks (for `docktor forecast`)."""
    chosen = best_period(memory, cycles)
    if chosen is None:
        return None
    return predict(memory, now, chosen[1].seconds, cycles)
