"""The reference policies' arithmetic against hand-computed cases: KEDA's lag, the HPA's
replica calculator, its older normalisation and the v2 default behavior."""

from __future__ import annotations

from docktor.dev.bench.reference import KedaHpa, hpa_behavior, keda_hpa, keda_hpa_cached
from docktor.dev.bench.simulate import QueueView


def view(t: float, replicas: int, lag: float) -> QueueView:
    """A queue whose KEDA lag (num_pending + num_ack_pending) is `lag`."""
    in_flight = min(lag, 10.0 * replicas)
    return QueueView(
        t=t,
        replicas=replicas,
        ready=replicas,
        undelivered=lag - in_flight,
        in_flight=in_flight,
        arrived_total=0.0,
        acked_total=0.0,
        arrival_rate=0.0,
        per_replica_rate=50.0,
    )


def test_the_three_references_are_named_and_configured_as_they_run() -> None:
    fresh, cached, behavior = keda_hpa(1, 12), keda_hpa_cached(1, 12), hpa_behavior(1, 12)
    assert (fresh.name, fresh.poll_interval, fresh.behavior) == ("keda-hpa", None, False)
    assert (cached.name, cached.poll_interval, cached.behavior) == ("keda-hpa-cached", 30.0, False)
    assert (behavior.name, behavior.poll_interval, behavior.behavior) == (
        "hpa-behavior",
        None,
        True,
    )
    assert fresh.interval == cached.interval == behavior.interval == 15.0


def test_desired_is_the_lag_over_the_threshold_rounded_up_outside_the_tolerance() -> None:
    hpa = keda_hpa(1, 20)
    # 250 / 100 = 2.5 -> 3; the older path allows max(2 x 1, 4) = 4.
    assert hpa.check(view(0.0, 1, 250.0)) == 3
    # 1,050 over 10 replicas: usage ratio 1.05 is within 10% of 1, so the count stays.
    assert keda_hpa(1, 20).check(view(0.0, 10, 1_050.0)) == 10
    # 1,150: ratio 1.15 is outside it: ceil(11.5) = 12.
    assert keda_hpa(1, 20).check(view(0.0, 10, 1_150.0)) == 12


def test_fresh_reads_see_the_lag_at_every_sync_cached_reads_every_30_s() -> None:
    fresh, cached = keda_hpa(1, 20), keda_hpa_cached(1, 20)
    for hpa in (fresh, cached):
        assert hpa.check(view(0.0, 1, 250.0)) == 3
    # At 15 s the lag is 1,000: read fresh, 10 wanted, at most max(2 x 3, 4) = 6 now. The
    # cache still holds 250 (ratio 250 / 300 = 0.83, outside the tolerance): ceil(2.5) = 3.
    assert fresh.check(view(15.0, 3, 1_000.0)) == 6
    assert cached.check(view(15.0, 3, 1_000.0)) == 3
    # At 30 s the cache is refreshed.
    assert cached.check(view(30.0, 3, 1_000.0)) == 6


def test_the_older_path_keeps_the_highest_recommendation_of_300_s() -> None:
    hpa = keda_hpa(1, 20)
    assert hpa.check(view(0.0, 8, 800.0)) == 8
    # The lag falls to 100 (raw 1): the 8 recommended at 0 s holds while it is in the window.
    assert hpa.check(view(15.0, 8, 100.0)) == 8
    assert hpa.check(view(300.0, 8, 100.0)) == 8
    # At 315 s the recommendation of 0 s has left the window; 15 s's (raw 1) is still in it.
    assert hpa.check(view(315.0, 8, 100.0)) == 1


def test_behavior_scale_up_is_max_of_4_pods_and_100_percent_per_15_s() -> None:
    hpa = hpa_behavior(1, 30)
    # raw 20 from 1: max(1 + 4, ceil(1 x 2)) = 5 (the older path would allow 4).
    assert hpa.check(view(0.0, 1, 2_000.0)) == 5
    assert keda_hpa(1, 30).check(view(0.0, 1, 2_000.0)) == 4
    # A sync 15 s later: the scale of 0 s is out of the period, so it starts from 5:
    # max(5 + 4, 10) = 10; then max(10 + 4, 20) = 20.
    assert hpa.check(view(15.0, 5, 2_000.0)) == 10
    assert hpa.check(view(30.0, 10, 2_000.0)) == 20


def test_behavior_counts_the_scale_events_inside_the_period() -> None:
    hpa = hpa_behavior(1, 30)
    assert hpa.check(view(0.0, 1, 2_000.0)) == 5
    # 10 s later the +4 of 0 s is inside the 15 s period: the period started at 1 replica,
    # so the limit is still max(1 + 4, 2) = 5, and the count stays.
    assert hpa.check(view(10.0, 5, 2_000.0)) == 5


def test_behavior_scales_down_to_the_highest_recent_recommendation_but_not_up_to_it() -> None:
    hpa = hpa_behavior(1, 30)
    assert hpa.check(view(0.0, 12, 1_200.0)) == 12
    # The lag falls: raw 3, but 12 was recommended within 300 s: min(current, 12) stays.
    assert hpa.check(view(15.0, 12, 300.0)) == 12
    assert hpa.check(view(315.0, 12, 300.0)) == 3
    # With 12 in the window and the count at 8 (changed from outside), a raw 10 is taken as it
    # is: scale-up has no stabilisation. The older path scales to the window's highest, 12.
    behavior, legacy = hpa_behavior(1, 30), keda_hpa(1, 30)
    for hpa in (behavior, legacy):
        hpa.check(view(0.0, 12, 1_200.0))
    assert behavior.check(view(15.0, 8, 1_000.0)) == 10
    assert legacy.check(view(15.0, 8, 1_000.0)) == 12


def test_counts_outside_the_bounds_are_brought_back_first() -> None:
    assert KedaHpa(2, 12).check(view(0.0, 1, 0.0)) == 2
    assert hpa_behavior(2, 12).check(view(0.0, 14, 5_000.0)) == 12
