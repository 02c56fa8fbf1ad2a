"""The renewal model alone (docktor/policy/forecast/renewal.py), and what the pre-scale stage
does with it: bursts timed from the last one's start and the spread of the recent gaps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from docktor.policy.forecast import model as forecast
from docktor.policy.forecast import renewal
from docktor.policy.forecast.stage import view
from docktor.values import Ring
from tests.unit.test_forecast import (
    RELEASED,
    T0,
    drifting_bursts,
    drive,
    feed,
    interval_mean,
    spec,
)

BASE, PEAK, LENGTH = 100.0, 500.0, 10.0


def at_starts(starts: list[float]) -> Callable[[float], float]:
    """10 s bursts of 500 over 100 msg/s, beginning at `starts` (seconds)."""
    return lambda t: PEAK if any(s <= t < s + LENGTH for s in starts) else BASE


def fine_ring(rate: Callable[[float], float], seconds: float) -> Ring:
    """The fine ring a loop checking every STEP fills, from each interval's mean rate (a
    burst that starts inside an interval reads part calm, part burst)."""
    return feed(rate, seconds, means=True).rings[0]


def since_t0(epoch_seconds: float) -> float:
    return epoch_seconds - T0.timestamp()


def test_a_burst_is_found_where_it_starts_and_as_long_as_it_lasts() -> None:
    # Starts off the 4 s grid: the bucket a burst starts in reads part burst, and that part
    # says how far into the bucket it began.
    starts = [61.3, 137.9, 206.0, 283.5]
    ring = fine_ring(at_starts(starts), 300)
    seen = renewal.bursts(ring, len(ring.values))
    assert seen is not None
    found, calm = seen
    assert calm == BASE
    assert [round(since_t0(b.start), 1) for b in found] == pytest.approx(starts, abs=0.6)
    assert all(b.length == pytest.approx(LENGTH, abs=0.6) and b.peak == PEAK for b in found)


def test_the_next_burst_is_timed_from_the_last_start_and_the_spread_of_the_gaps() -> None:
    gaps = [70.0, 80.0, 75.0, 72.0, 78.0]
    starts = [20.0]
    for gap in gaps:
        starts.append(starts[-1] + gap)
    ring = fine_ring(at_starts(starts), starts[-1] + 30)
    timed = renewal.timing(ring, period=76.0, cycles=3)
    assert timed is not None and timed.varies
    last = since_t0(timed.last.start)
    assert last == pytest.approx(starts[-1], abs=0.6)
    # Shortest gap less range / (n - 1) (10 / 4); longest plus a tenth of the mean gap
    # (7.5 s, more than 2.5): a burst later than any seen still finds its capacity.
    assert since_t0(timed.earliest) == pytest.approx(last + 70 - 2.5, abs=0.6)
    assert since_t0(timed.latest) == pytest.approx(last + 80 + 7.5, abs=0.6)
    assert timed.length == pytest.approx(LENGTH, abs=0.6) and timed.rate == PEAK


@pytest.mark.parametrize(
    ("starts", "period"),
    [
        ([20.0, 95.0], 75.0),  # one gap: no spread to time by
        ([20.0, 50.0, 140.0, 200.0], 60.0),  # gaps 30, 90, 60: spread wider than half the mean
        ([20.0, 95.0, 170.0, 245.0], 40.0),  # 75 s gaps are not the fold's 40 s rhythm
    ],
)
def test_no_timing_without_a_rhythm_of_bursts(starts: list[float], period: float) -> None:
    ring = fine_ring(at_starts(starts), starts[-1] + 30)
    assert renewal.timing(ring, period=period, cycles=3) is None


def test_foreseen_counts_the_latest_bursts_that_came_inside_their_window() -> None:
    steady = [20.0, 95.0, 168.0, 246.0, 320.0, 397.0]
    ring = fine_ring(at_starts(steady), 420)
    timed = renewal.timing(ring, period=75.0, cycles=3)
    assert timed is not None and timed.foreseen == 3
    # The last burst came 30 s after the latest the gaps before it allowed: not foreseen.
    late = [*steady[:-1], steady[-1] + 30]
    ring = fine_ring(at_starts(late), 450)
    timed = renewal.timing(ring, period=75.0, cycles=3)
    assert timed is not None and timed.foreseen == 0


def test_capacity_is_expected_from_the_earliest_start_until_the_latest() -> None:
    last = renewal.Burst(start=1000.0, length=10.0, peak=PEAK)
    timed = renewal.Timing(
        last=last,
        earliest=1070.0,
        latest=1090.0,
        length=10.0,
        rate=PEAK,
        calm=BASE,
        gaps=5,
        varies=True,
        foreseen=2,
        ends=1012.0,
    )
    assert renewal.expected(timed, 1008.0, 7.0) == (PEAK, 1008.0)  # the last one still on
    assert renewal.expected(timed, 1040.0, 7.0) == (BASE, 1040.0)
    assert renewal.expected(timed, 1062.0, 7.0) == (BASE, 1062.0)  # the next check is in time
    assert renewal.expected(timed, 1064.0, 7.0) == (PEAK, 1070.0)
    assert renewal.expected(timed, 1088.0, 7.0) == (PEAK, 1088.0)
    assert renewal.expected(timed, 1092.0, 7.0) == (BASE, 1092.0)  # not waited for any more


def test_a_drifting_rhythm_is_timed_by_the_renewal_model() -> None:
    rate, now = drifting_bursts(2), 940
    memory = feed(rate, now, means=True)
    prediction = forecast.predict(memory, T0 + timedelta(seconds=now), lead=7.0, cycles=3)
    assert prediction is not None and prediction.timed and prediction.drift > 0


def test_timed_bursts_are_pre_scaled_for_while_the_fold_is_not_trusted() -> None:
    # Bursts that drift never fold well enough for a min_confidence of 0.99; once the renewal
    # model has foreseen a burst, its timing is trusted on its own.
    rate = drifting_bursts(2)
    proposals = drive(spec(min_confidence=0.99), 900, rate=rate, means=True)
    ahead = [t for t, p in proposals if p.predicted]
    assert ahead
    # Each pre-scale is for a burst that comes within the window's reach (the longest gap
    # plus a tenth of the mean, past the lead), never in the middle of a calm stretch.
    for t in ahead:
        assert any(rate(t + s) > BASE for s in range(0, 7 + 14)), t


def test_a_timed_burst_gives_its_capacity_back_once_it_has_lasted_as_long_as_bursts_do() -> None:
    # rate_in, the last interval's mean, still reads the burst at the check after it ended;
    # the timing knows it is over and nothing waits: back to what the calm rate needs.
    rate = drifting_bursts(2)
    proposals = drive(spec(), 1100, rate=rate, means=True)
    released = [(t, p) for t, p in proposals if RELEASED in p.reason]
    assert released
    for t, p in released:
        assert rate(t) == BASE and rate(t + 0.1) == BASE, (t, p.reason)
        assert interval_mean(rate, t) > BASE and p.target_replicas == 2


def test_the_view_says_a_timed_rhythm_is_trusted() -> None:
    # `docktor forecast` reports what the stage acts on: bursts timed from the last one are
    # trusted though the fold never reaches a min_confidence of 0.99.
    service = spec(min_confidence=0.99)
    proposals = drive(service, 900, rate=drifting_bursts(2), means=True)
    memory = proposals[-1][1].memory
    assert memory is not None
    learnt = view(service, memory, T0 + timedelta(seconds=900))
    assert learnt.trusted and learnt.confidence is not None and learnt.confidence < 0.99
    assert learnt.next_peak_rate == PEAK
