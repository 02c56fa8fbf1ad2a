"""The forecast alone (docktor/policy/forecast/model.py) and the pre-scale stage via decide()."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from docktor.plan import ServicePlan
from docktor.policy import decide
from docktor.policy.forecast import model as forecast
from docktor.policy.forecast.stage import view
from docktor.spec import ConfigError, ServiceSpec, parse_config
from docktor.values import ForecastMemory, Observation, PolicyMemory, PolicyState, Proposal

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
STEP = 4.0


def feed(
    rate: Callable[[float], float],
    seconds: float,
    memory: ForecastMemory | None = None,
    means: bool = False,
):
    """Samples every STEP up to `seconds`: the rate at the sample's time, or (`means`) its mean
    over the interval the sample ends, as a loop's rate_in is (a burst that starts or ends
    inside an interval reads part calm, part burst)."""
    memory = memory or ForecastMemory()
    t = STEP
    while t <= seconds:
        sample = interval_mean(rate, t) if means else rate(t)
        forecast.observe(memory, T0 + timedelta(seconds=t), sample, STEP)
        t += STEP
    return memory


def interval_mean(rate: Callable[[float], float], t: float, parts: int = 8) -> float:
    """The mean of `rate` over (t - STEP, t]."""
    return sum(rate(t - STEP + STEP * (i + 0.5) / parts) for i in range(parts)) / parts


def bursts(period: float = 60, length: float = 12, base: float = 100, peak: float = 500):
    return lambda t: peak if (t % period) >= period - length else base


def found(memory: ForecastMemory, cycles: int = 3) -> forecast.Period | None:
    chosen = forecast.best_period(memory, cycles)
    return chosen[1] if chosen else None


def test_periodic_bursts_give_their_period_with_high_confidence() -> None:
    period = found(feed(bursts(), 600))
    assert period is not None
    assert period.seconds == 60
    assert period.confidence > 0.9
    assert period.cycles >= 5


def test_a_long_period_is_found_in_the_coarser_ring() -> None:
    # 20-minute rhythm over 2 hours: beyond the fine ring, seen in the 60 s buckets.
    period = found(feed(bursts(period=1200, length=240), 7200))
    assert period is not None
    assert period.seconds == 1200
    assert period.confidence > 0.8


@pytest.mark.parametrize(
    "rate",
    [
        lambda t: 100.0,  # flat
        lambda t: 100.0 if t < 200 else 400.0,  # step
        lambda t: t / 2,  # ramp
    ],
    ids=["flat", "step", "ramp"],
)
def test_no_rhythm_in_flat_step_or_ramp(rate: Callable[[float], float]) -> None:
    period = found(feed(rate, 900))
    assert period is None or period.confidence < 0.6


def test_noise_has_low_confidence() -> None:
    draw = random.Random(3)
    noise = {t: 100 * (1 + draw.uniform(-0.5, 0.5)) for t in range(0, 901, 4)}
    period = found(feed(lambda t: noise[int(t)], 900))
    assert period is None or period.confidence < 0.6


def test_predicts_the_burst_within_the_lead() -> None:
    memory = feed(bursts(), 600)  # last sample at 600 s: a burst just ended (588-600)
    now = T0 + timedelta(seconds=640)
    soon = forecast.predict(memory, now, lead=12.0, cycles=3)
    assert soon is not None and soon.rate == 500
    # The next burst starts at 648 s: expected within a tenth of a period of it.
    assert abs((soon.at - (T0 + timedelta(seconds=648))).total_seconds()) <= 6
    calm = forecast.predict(memory, T0 + timedelta(seconds=604), lead=8.0, cycles=3)
    assert calm is not None and calm.rate == 100


def test_state_stays_small_whatever_the_history() -> None:
    draw = random.Random(1)
    memory = ForecastMemory()
    # Three days of 4 s samples with large, irregular rates: every ring full.
    t = 0.0
    while t < 3 * 86400:
        t += STEP * 30  # sampled coarsely to keep the test quick; buckets fill the same way
        forecast.observe(memory, T0 + timedelta(seconds=t), draw.uniform(0, 99999), STEP)
    for ring, (_, capacity) in zip(memory.rings, forecast.RINGS, strict=True):
        assert len(ring.values) <= capacity
    assert len(memory.model_dump_json()) < 8 * 1024


def test_each_sample_adds_a_bounded_number_of_values() -> None:
    memory = feed(bursts(), 300)
    before = sum(len(r.values) for r in memory.rings)
    forecast.observe(memory, T0 + timedelta(seconds=304), 100, STEP)
    assert sum(len(r.values) for r in memory.rings) - before <= len(forecast.RINGS)
    # A long gap (worker down) is bounded by the rings' capacity, not by its length.
    forecast.observe(memory, T0 + timedelta(days=30), 100, STEP)
    assert all(
        len(r.values) <= cap for r, (_, cap) in zip(memory.rings, forecast.RINGS, strict=True)
    )


def test_a_changed_period_is_taken_within_three_cycles() -> None:
    memory = feed(bursts(period=60), 600)
    t = 600.0
    while t < 600 + 3 * 96:
        t += STEP
        forecast.observe(memory, T0 + timedelta(seconds=t), bursts(period=96)(t - 600), STEP)
    period = found(memory)
    assert period is not None and period.seconds == 96
    assert period.confidence > 0.8


def test_a_vanished_rhythm_loses_its_confidence_within_two_cycles() -> None:
    memory = feed(bursts(), 600)
    t = 600.0
    while t < 600 + 2 * 60:
        t += STEP
        forecast.observe(memory, T0 + timedelta(seconds=t), 100, STEP)
    period = found(memory)
    assert period is None or period.confidence < 0.6 or period.cycles < 3


def test_a_burst_seen_once_beside_a_missed_check_is_not_a_rhythm() -> None:
    # Ten calm checks after 60 s bursts, one of them missed (a slow iteration): folded at
    # 14 buckets, the last burst's phases each hold one value beside the gap, which "fitted"
    # perfectly and took over from the real period.
    memory = feed(bursts(base=0, peak=500), 600)
    for k in range(1, 11):
        if k != 6:
            forecast.observe(memory, T0 + timedelta(seconds=600 + k * STEP), 0, STEP)
    period = found(memory)
    assert period is not None
    assert period.seconds == 60 and period.cycles >= 5


def test_a_period_between_two_check_intervals_is_found() -> None:
    # 90 s in 4 s checks is 22.5 buckets: folded at half-bucket lags, it does not drift.
    period = found(feed(bursts(period=90, length=10), 900))
    assert period is not None
    assert period.seconds == 90
    assert period.confidence > 0.9


def test_a_short_period_is_not_taken_from_a_coarser_ring() -> None:
    # Four hours of 90 s bursts: the 60 s ring sees them as a 3-minute rhythm of means, which
    # would ask for a third of the burst's rate; the fine ring, which can fold it, decides.
    memory = feed(bursts(period=90, length=10), 4 * 3600)
    chosen = forecast.best_period(memory, 3)
    assert chosen is not None
    ring, period = chosen
    assert ring.step == STEP and period.seconds == 90


def drifting_bursts(seed: int = 11) -> Callable[[float], float]:
    """10 s bursts of 500 after gaps of 60 s +-10%, each drawn anew (periodic-jitter's load)."""
    draw = random.Random(seed)
    starts, t = [], 0.0
    while t < 1200:
        t += 60 * (1 + draw.uniform(-0.1, 0.1))
        starts.append(t)
    return lambda s: 500.0 if any(start - 10 <= s < start for start in starts) else 100.0


def test_a_rhythm_that_keeps_time_is_pre_scaled_for_without_a_jitter_margin() -> None:
    steady = feed(bursts(), 600)
    ring, period = forecast.best_period(steady, 3) or (None, None)
    assert ring is not None and period is not None
    assert forecast.drift(ring.values, period.buckets) == 0
    drifting = feed(drifting_bursts(), 900)
    ring, period = forecast.best_period(drifting, 3) or (None, None)
    assert ring is not None and period is not None
    # A tenth of the period either side (60 s in 4 s buckets: 2 buckets).
    assert forecast.drift(ring.values, period.buckets) == round(period.buckets * 0.1)


def test_capacity_is_asked_for_no_earlier_than_the_lead_needs() -> None:
    # 10 s bursts at 50-60 s of each minute; 4 s samples of the interval's mean, so the bucket
    # 648-652 s reads 300 (part calm, part burst) and 652-656 s reads 500.
    memory = feed(bursts(length=10), 600, means=True)
    # At 640 s a lead of 7 s ends in a calm bucket: a replica asked for at the next check
    # (644 s) is ready at 647 s, before the burst. Asking now would only cost.
    early = forecast.predict(memory, T0 + timedelta(seconds=640), lead=7.0, cycles=3)
    assert early is not None and early.rate == 100
    # At 644 s the lead ends in the rising bucket: the burst is met at its full height.
    ready = forecast.predict(memory, T0 + timedelta(seconds=644), lead=7.0, cycles=3)
    assert ready is not None and ready.rate == 500


def test_a_burst_ending_inside_the_next_bucket_is_seen() -> None:
    # 10 s bursts at 48-58 s: the bucket 56-60 s reads 300, though its first half is burst.
    memory = feed(lambda t: 500 if 48 <= t % 60 < 58 else 100, 600, means=True)
    assert forecast.ending(memory, T0 + timedelta(seconds=656), cycles=3)
    assert not forecast.ending(memory, T0 + timedelta(seconds=660), cycles=3)
    assert not forecast.ending(memory, T0 + timedelta(seconds=640), cycles=3)


def test_a_drifting_rhythm_is_timed_by_its_last_burst() -> None:
    # Bursts whose gaps vary by 10%: where the last cycle's burst was, plus the drift margin,
    # says when the next one may come. An older cycle's burst in the same phase is no more
    # likely there: the gaps since have moved the rhythm on.
    rate, now = drifting_bursts(2), 940
    memory = feed(rate, now)
    soon = forecast.predict(memory, T0 + timedelta(seconds=now), lead=7.0, cycles=3)
    assert soon is not None and soon.drift > 0 and soon.period.confidence >= 0.8
    assert soon.rate == 100
    assert all(rate(t) == 100 for t in range(now, now + 7 + 4 * soon.drift + 1))
    # Each phase's largest of the last three cycles would have asked for a burst.
    ring, period = forecast.best_period(memory, 3) or (None, None)
    assert ring is not None and period is not None
    start = math.floor((T0.timestamp() + now) / STEP)
    ahead = range(start, math.floor((T0.timestamp() + now + 7) / STEP) + soon.drift + 1)
    assert max(forecast._expected(ring, b, period.buckets, 3) or 0 for b in ahead) == 500


def test_a_burst_that_does_not_come_is_missed() -> None:
    memory = feed(bursts(), 600)
    assert not forecast.missed(memory, 3, 1.5)
    # The next burst (648-660) does not come: once its jitter window has passed, it is missed.
    t, missed_at = 600.0, None
    while t < 680 and missed_at is None:
        t += STEP
        forecast.observe(memory, T0 + timedelta(seconds=t), 100, STEP)
        if forecast.missed(memory, 3, 1.5):
            missed_at = t
    assert missed_at is not None and 648 < missed_at <= 680


def test_bursts_that_drift_are_not_missed() -> None:
    rate = drifting_bursts()
    memory, t, misses = ForecastMemory(), STEP, 0
    while t <= 1200:
        forecast.observe(memory, T0 + timedelta(seconds=t), rate(t), STEP)
        misses += forecast.missed(memory, 3, 1.5)
        t += STEP
    assert misses == 0


def test_an_unforeseen_burst_is_a_surprise_only_for_a_rhythm_that_keeps_time() -> None:
    from docktor.policy.forecast.stage import _surprised

    # Mid-gap (t = 620 s, bursts at 648-660) a rate of 500: nothing like it was expected.
    steady = feed(bursts(), 600)
    assert _surprised(steady, T0 + timedelta(seconds=620), 500.0, 0.1)
    assert not _surprised(steady, T0 + timedelta(seconds=620), 100.0, 0.1)
    # Bursts that drift come early or late: that is what their margin is for.
    drifting = feed(drifting_bursts(), 900)
    assert not any(
        _surprised(drifting, T0 + timedelta(seconds=t), 500.0, 0.1) for t in range(904, 964, 4)
    )


def test_a_rhythm_trusted_for_a_period_may_dip_a_little_below_min_confidence() -> None:
    from docktor.policy.forecast.stage import _still_trusted

    service = spec()  # min_confidence 0.8
    sure, dip, low = (
        forecast.Period(60.0, 15.0, STEP, confidence, cycles=4) for confidence in (0.9, 0.75, 0.6)
    )

    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    # Trusted at every check for 64 s, then a fold that explains a little less: still trusted
    # for a period after the last trusted check, not after that, and never far below.
    memory = ForecastMemory()
    assert all(_still_trusted(service, memory, sure, at(t)) for t in range(0, 68, 4))
    assert _still_trusted(service, memory, dip, at(100))
    assert not _still_trusted(service, memory, low, at(100))
    assert not _still_trusted(service, memory, dip, at(128))
    # Trusted for a moment only (random bursts fold for a while): no slack.
    brief = ForecastMemory()
    assert _still_trusted(service, brief, sure, at(0))
    assert not _still_trusted(service, brief, dip, at(8))
    # Nor just after a surprise or a missed burst: the rhythm may have changed or stopped.
    surprised = ForecastMemory()
    assert all(_still_trusted(service, surprised, sure, at(t)) for t in range(0, 68, 4))
    surprised.surprised_at = at(70)
    assert not _still_trusted(service, surprised, dip, at(100))


# ---- the stage, through decide() -----------------------------------------------------------


def spec(**predict: object) -> ServicePlan:
    """The plan a loop runs for the example consumer with predictive pre-scaling on."""
    return ServicePlan.from_spec(
        ServiceSpec.model_validate(
            {
                "name": "consumer",
                "backend": "compose",
                "queue": {"stream": "JOBS", "consumer": "workers"},
                "min_replicas": 1,
                "max_replicas": 12,
                "rate": {"per_replica": 50},
                "predict": {"enabled": True, "startup": 3, **predict},
            }
        )
    )


def run(service: ServicePlan, until: float, replicas: int = 2):
    """Drive decide() as the workflow does over bursts every 60 s; the last proposal."""
    proposals = drive(service, until, replicas=replicas)
    return proposals[-1][1] if proposals else None


def drive(
    service: ServicePlan,
    until: float,
    rate: Callable[[float], float] | None = None,
    means: bool = False,
    replicas: int = 2,
) -> list[tuple[float, Proposal]]:
    """decide() at every check up to `until`, as the workflow calls it, over `rate` (bursts
    every 60 s unless given), nothing left waiting; each check's time and proposal. `means`:
    what arrives in an interval is the rate's mean over it (a loop's rate_in reads a burst
    that has just ended for one more check), else the rate at the check times STEP."""
    rate = rate or bursts()
    memory, previous, arrived = PolicyMemory(), None, 0.0
    proposals = []
    t = 0.0
    while t <= until:
        arrived += (interval_mean(rate, t) if means else rate(t)) * STEP
        sample = Observation(
            taken_at=T0 + timedelta(seconds=t),
            replicas=replicas,
            metrics={"queue.backlog": 0.0, "queue.ack_pending": 0.0},
            counters={"queue.stream_last_seq": arrived, "queue.ack_floor": arrived},
        )
        proposal = decide(
            service, sample, PolicyState(previous=previous, memory=memory), sample.taken_at
        )
        proposals.append((t, proposal))
        memory, previous = proposal.memory, sample
        replicas = proposal.target_replicas
        t += STEP
    return proposals


RELEASED = "the burst is over as the rhythm expected"


def test_capacity_goes_back_as_soon_as_the_expected_burst_is_over() -> None:
    # Bursts at 48-60 s of each minute. At 660 s rate_in (the last interval's mean) still
    # reads 500; the rhythm, which keeps time, says the burst is over and nothing waits.
    proposals = dict(drive(spec(), 664, means=True))
    assert proposals[656].target_replicas >= 10
    after = proposals[660]
    assert after.action == "scale_down" and after.target_replicas == 2
    assert f"{RELEASED} (period 1m, confidence 1.00): 100/s expected needs 2" in after.reason
    # Without the forecast the last interval's rate keeps the burst's capacity a check longer.
    reactive = dict(drive(spec(enabled=False), 660, means=True))
    assert reactive[660].target_replicas >= 10


def test_no_early_release_for_bursts_that_drift_or_end_inside_a_bucket() -> None:
    # Bursts that drift may end late; 90 s bursts in 4 s checks end mid-bucket every other
    # cycle, and the bucket's mean understates its first half: capacity stays a check more.
    # (Seeds whose bursts a rhythm taken as keeping time would release early.)
    drifting = [drifting_bursts(seed) for seed in (2, 4, 8, 10, 14)]
    for rate in [*drifting, bursts(period=90, length=10)]:
        proposals = drive(spec(), 1100, rate=rate, means=True)
        released = [(t, p) for t, p in proposals if RELEASED in p.reason]
        for t, p in released:
            assert rate(t) == 100 and rate(t + 0.1) == 100, (t, p.reason)


def test_pre_scales_before_the_burst_and_says_why() -> None:
    # Bursts at 648-660 s: the scale-up comes before it, the first burst the forecast may act
    # on once it has seen three cycles.
    proposals = [(t, run(spec(), t)) for t in range(600, 652, 4)]
    ahead = [(t, p) for t, p in proposals if p is not None and p.predicted]
    assert ahead, [p.reason for _, p in proposals if p]
    t, first = ahead[0]
    assert 610 < t < 648
    assert first.action == "scale_up"
    assert first.target_replicas == math.ceil(500 * 1.1 / 50) == first.recommended
    assert "pre-scaling for the burst expected at 10:10:4" in first.reason
    assert "(period 1m, seen 10 times, confidence 1.00): 500/s needs 11" in first.reason
    # The capacity is kept until the burst: no scale-down in between.
    assert all(p.target_replicas >= 11 for t2, p in proposals if p and t < t2 < 648)


def test_never_above_max_replicas() -> None:
    limited = run(spec().model_copy(update={"max_replicas": 6}), 640)
    assert limited is not None
    assert limited.target_replicas == 6
    assert "needs 11; clamped to max_replicas 6: 11 -> 6" in limited.reason


def test_never_below_reactive_and_off_by_default() -> None:
    off = spec(enabled=False)
    proposal = run(off, 644)
    assert proposal is not None and not proposal.predicted
    assert proposal.memory is not None and proposal.memory.forecast is None
    # In the middle of a calm stretch the forecast adds nothing: the reactive count stands.
    calm = run(spec(), 620)
    assert calm is not None and not calm.predicted and calm.target_replicas == 2


def test_memory_stays_small_in_the_loop() -> None:
    proposal = run(spec(), 900)
    assert proposal is not None and proposal.memory is not None
    assert len(json.dumps(proposal.memory.model_dump(mode="json"))) < 8 * 1024


def test_view_reports_what_was_learnt() -> None:
    proposal = run(spec(), 640)
    assert proposal is not None and proposal.memory is not None
    learnt = view(spec(), proposal.memory, T0 + timedelta(seconds=640))
    assert learnt.period_s == 60 and learnt.trusted and learnt.cycles >= 3
    assert learnt.next_peak_rate == 500
    assert learnt.next_peak_at is not None
    assert (
        timedelta(0) <= learnt.next_peak_at - (T0 + timedelta(seconds=640)) <= timedelta(seconds=60)
    )


# ---- config ------------------------------------------------------------------------------------


def load(predict: str, queue: bool = True) -> None:
    text = (
        "services:\n  - name: consumer\n    backend: compose\n"
        + ("    queue: {stream: JOBS, consumer: workers}\n" if queue else "")
        + f"    predict: {predict}\n"
    )
    parse_config(text, base_dir=__import__("pathlib").Path("."))


def test_predict_defaults() -> None:
    service = spec(enabled=False)
    assert service.predict.min_cycles == 3
    assert service.predict.lead_for(4) == 4 + 3
    assert ServiceSpec.model_validate({"name": "x"}).predict.enabled is False


@pytest.mark.parametrize(
    ("predict", "message"),
    [
        ("{enabled: true, min_confidence: 2}", "services[0].predict.min_confidence"),
        ("{enabled: true, min_cycles: 1}", "services[0].predict.min_cycles"),
        ("{enabled: true, lead: -3}", "services[0].predict.lead"),
        ("{enabled: true, headroom: -1}", "services[0].predict.headroom"),
        ("{enabeld: true}", "services[0].predict.enabeld: unknown field"),
    ],
)
def test_predict_config_errors_name_the_field(predict: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(predict)
    assert message in str(caught.value), str(caught.value)


def test_predict_needs_a_queue() -> None:
    with pytest.raises(ConfigError) as caught:
        load("{enabled: true}", queue=False)
    assert "predict: needs a queue" in str(caught.value), str(caught.value)
