"""The pre-scale stage: after the reactive recommendation, before the windows and limits.

When the forecast (model.py) trusts a rhythm in queue.rate_in, the recommendation becomes the
larger of the reactive one and the capacity the predicted rate needs `lead` seconds from now. It
is lowered in one case only: a burst the rhythm foresaw is over and nothing waits, while rate_in,
the last interval's mean, still reads the burst (`_release`). Either way it still passes
stabilise, limit and bounds like any recommendation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from docktor.plan import ServicePlan
from docktor.policy import recommend
from docktor.policy.forecast import model as forecast
from docktor.policy.recommend import BACKLOG, RATE_IN, RATE_OUT, _n
from docktor.values import ForecastMemory, ForecastView, Observation, PolicyMemory, WarmStart


@dataclass
class Ahead:
    """What the stage did: the recommendation after it and why it changed (None: it did not),
    whether it raised it, and the scale-down window to use while the rhythm is trusted (None:
    the configured one)."""

    replicas: int
    note: str | None = None
    raised: bool = False
    down_window: float | None = None


def pre_scale(
    spec: ServicePlan,
    recommended: int,
    metrics: dict[str, float],
    memory: PolicyMemory,
    now: datetime,
) -> Ahead:
    """Learn from this sample's rate_in, then raise `recommended` if a trusted forecast needs
    more (or lower it when a burst it foresaw is over: `_release`)."""
    settings = spec.predict
    if not settings.enabled:
        return Ahead(recommended)
    if memory.forecast is None:
        memory.forecast = ForecastMemory()
    rate_in = metrics.get(RATE_IN)
    if rate_in is not None:
        forecast.observe(memory.forecast, now, rate_in, spec.check_interval)
    lead = settings.lead_for(spec.check_interval)
    prediction = forecast.predict(memory.forecast, now, lead, settings.min_cycles)
    if prediction is None:
        return Ahead(recommended)
    # Bursts timed by a renewal model that foresaw the last one are trusted even while the
    # fold's confidence dips (a burst that lands off the fold lowers it for a cycle).
    folded = _still_trusted(spec, memory.forecast, prediction.period, now)
    if not (folded or prediction.timed):
        return Ahead(recommended)
    period = prediction.period
    surprised = rate_in is not None and _surprised(memory.forecast, now, rate_in, settings.headroom)
    if surprised or forecast.missed(memory.forecast, settings.min_cycles, SURPRISE):
        memory.forecast.surprised_at = now
    recently = memory.forecast.surprised_at
    if recently is not None and (now - recently).total_seconds() <= period.seconds:
        # Pre-scaling only adds capacity; giving it back early needs trust.
        ahead = Ahead(recommended)
    else:
        ahead = Ahead(recommended, down_window=settings.down_window)
    per_replica = spec.rate.per_replica or memory.per_replica_rate
    if not per_replica:
        return ahead  # the rate is known, what one replica handles not yet
    if ahead.down_window is not None:
        released = _release(
            spec, recommended, metrics, prediction, per_replica, memory.forecast, now
        )
        if released is not None:
            ahead.replicas, ahead.note = released
            return ahead
    # Headroom only for a rise: on the rate that already arrives it would just cost replicas,
    # while inside a burst the forecast still keeps its capacity through the dips of the noise.
    rising = rate_in is None or prediction.rate > rate_in * (1 + settings.headroom)
    factor = 1 + settings.headroom if rising else 1.0
    needed = math.ceil(prediction.rate * factor / per_replica - 1e-9)
    if needed <= recommended:
        return ahead
    ahead.note = (
        f"pre-scaling for the burst expected at {prediction.at:%H:%M:%S} "
        f"(period {describe_seconds(period.seconds)}, seen {period.cycles} times, "
        f"confidence {period.confidence:.2f}): {_n(prediction.rate)}/s needs {needed}"
    )
    ahead.replicas = needed
    ahead.raised = True
    return ahead


def _release(
    spec: ServicePlan,
    recommended: int,
    metrics: dict[str, float],
    prediction: forecast.Prediction,
    per_replica: float,
    memory: ForecastMemory,
    now: datetime,
) -> tuple[int, str] | None:
    """Give a burst's capacity back as soon as the trusted rhythm says it is over: the lower
    count and why, or None.

    rate_in is the mean over the last interval: the check after a burst ends still reads its
    full rate, and the reactive target keeps the burst's capacity one more interval for
    messages that no longer come. The recommendation becomes what the expected rate needs
    (with the rate tracking's own headroom, as the reactive target would ask for it) when:

    - the rhythm is trusted (not surprised, no burst missed: the caller's `down_window`) and
      keeps time (bursts that drift end off time too);
    - the rate just measured is what the rhythm expected around now (a burst it foresaw),
      and it expects clearly less (RISE) from now to the lead;
    - nothing waits (the backlog is drained), the burst does not end inside the next bucket
      (forecast.ending), and the service tracks targets on queue metrics only (not step
      rules; a CPU target lags as rate_in does, but what it needs is not known here).

    A burst that goes on after all is seen at the next check: as a surprise for a rhythm
    that keeps time, and by the reactive target."""
    rate_in, backlog = metrics.get(RATE_IN), metrics.get(BACKLOG)
    if rate_in is None or backlog is None or backlog > per_replica:
        return None
    if spec.policy != "target" or any(not m.startswith("queue.") for m in spec.target):
        return None  # step rules, or a target whose need is not known here
    headroom = 1 + spec.predict.headroom
    if prediction.rate * headroom * forecast.RISE >= rate_in:
        return None
    # A burst timed from its own start has lasted as long as bursts do: none of these apply.
    if not prediction.timed:
        if prediction.drift > 0:
            return None  # bursts that drift end off time too
        # A rhythm trusted by chance (random bursts can fold for a while) did not foresee it.
        expected_now = forecast.predict(memory, now, 0.0, cycles=_CYCLES_NOW, whole=True)
        if expected_now is None or rate_in > expected_now.rate * headroom:
            return None
        if forecast.ending(memory, now, spec.predict.min_cycles):
            return None  # the burst's last moments are in the next bucket: one check more
    needed = math.ceil(prediction.rate * (1 + spec.rate.headroom) / per_replica - 1e-9)
    if needed >= recommended:
        return None
    return needed, (
        f"the burst is over as the rhythm expected (period "
        f"{describe_seconds(prediction.period.seconds)}, confidence "
        f"{prediction.period.confidence:.2f}): {_n(prediction.rate)}/s expected "
        f"needs {needed}"
    )


def warm_start(spec: ServicePlan, memory: PolicyMemory, seed: WarmStart | None) -> None:
    """Take the history rebuilt from the decision log (ObserveInput.forecast_seed_from) when
    the loop has none yet: a restarted loop need not wait `min_cycles` cycles, nor a burst to
    learn what one replica handles, to pre-scale."""
    if not spec.predict.enabled or memory.forecast is not None or seed is None:
        return
    memory.forecast = seed.forecast.model_copy(deep=True)
    if memory.per_replica_rate is None:
        memory.per_replica_rate = seed.per_replica_rate


def learn_from_log(spec: ServicePlan, samples: list[Observation]) -> WarmStart:
    """What a loop's earlier samples (oldest first, each with the rates its decision recorded)
    teach a loop that starts without history: the forecast's rate history, and what one
    replica handles, estimated from them as the policy estimates it live."""
    rates = [(s.taken_at, s.metrics[RATE_IN]) for s in samples if RATE_IN in s.metrics]
    memory = PolicyMemory()
    for previous, sample in zip(samples, samples[1:], strict=False):
        # rate_in too: what arrived bounds what the log's rate_out can have been.
        rates_now = {k: v for k, v in sample.metrics.items() if k in (RATE_IN, RATE_OUT)}
        recommend.estimate_per_replica(spec, memory, sample, previous, rates_now)
    return WarmStart(
        forecast=forecast.seed(rates, spec.check_interval),
        per_replica_rate=memory.per_replica_rate,
    )


def _surprised(memory: ForecastMemory, now: datetime, rate_in: float, headroom: float) -> bool:
    """The rate now is well above anything the rhythm expected around now (a burst it did not
    foresee: the period changed, or another rhythm is on top). Not for a rhythm whose bursts
    drift: one coming early or late is what its margin is for, and a changed or vanished
    rhythm still shows as bursts missed (forecast.missed)."""
    expected = forecast.predict(memory, now, 0.0, cycles=_CYCLES_NOW, whole=True)
    if expected is None or expected.drift > 0:
        return False
    return rate_in > expected.rate * (1 + headroom) * SURPRISE


# Surprise: above 1.5x the expected rate (plus headroom), judged on the last cycles' maximum.
SURPRISE = 1.5
_CYCLES_NOW = 3


def trusted(spec: ServicePlan, period: forecast.Period) -> bool:
    settings = spec.predict
    return period.confidence >= settings.min_confidence and period.cycles >= settings.min_cycles


# How far below min_confidence a rhythm trusted for a whole period may dip and stay trusted.
TRUST_SLACK = 0.1


def _still_trusted(
    spec: ServicePlan, memory: ForecastMemory, period: forecast.Period, now: datetime
) -> bool:
    """Trusted now (noted in `memory`); or trusted without a break for at least a period until
    less than a period ago, and now only a little below min_confidence. Bursts that drift
    fold less cleanly in some cycles than in others, and each lapse costs the configured
    scale-down window's capacity; a rhythm trusted only for a moment (random bursts can
    fold for a while) gets no such slack, nor one that has just surprised or missed a burst
    (it changed or stopped)."""
    if trusted(spec, period):
        if memory.trusted_at is None or (now - memory.trusted_at).total_seconds() > period.seconds:
            memory.trusted_from = now
        memory.trusted_at = now
        return True
    since, last, surprised = memory.trusted_from, memory.trusted_at, memory.surprised_at
    return (
        since is not None
        and last is not None
        and (surprised is None or (now - surprised).total_seconds() > period.seconds)
        and (last - since).total_seconds() >= period.seconds
        and (now - last).total_seconds() <= period.seconds
        and period.cycles >= spec.predict.min_cycles
        and period.confidence >= spec.predict.min_confidence - TRUST_SLACK
    )


def describe_seconds(seconds: float) -> str:
    """60s, 15m, 24h: the period as an operator would say it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def view(spec: ServicePlan, memory: PolicyMemory, now: datetime) -> ForecastView:
    """What the loop has learnt, for `docktor forecast`. Pure, like the rest of the policy.
    Works on a copy: detection caches its result in the rings, and a query changes nothing."""
    settings = spec.predict
    answer = ForecastView(
        service=spec.name,
        enabled=settings.enabled,
        lead_s=settings.lead_for(spec.check_interval),
        min_confidence=settings.min_confidence,
        min_cycles=settings.min_cycles,
    )
    if memory.forecast is None:
        return answer
    learnt = memory.forecast.model_copy(deep=True)
    answer.state_bytes = len(learnt.model_dump_json())
    answer.history_s = max((len(ring.values) * ring.step for ring in learnt.rings), default=0.0)
    peak = forecast.next_peak(learnt, now, settings.min_cycles)
    if peak is None:
        return answer
    period = peak.period
    answer.period_s = period.seconds
    answer.confidence = round(period.confidence, 3)
    answer.cycles = period.cycles
    answer.trusted = peak.timed or _still_trusted(spec, learnt, period, now)
    answer.next_peak_at = peak.at
    answer.next_peak_rate = round(peak.rate, 1)
    return answer
