"""The whole policy: recommend -> stabilise -> limit -> bounds, one path for every proposal.

`decide` runs it on an observation (the rules' or the target's recommendation); `settle` runs
the same stages on a recommendation from elsewhere (a model's advice), so no source of a
proposal can skip a window, a rate limit, a cooldown or the bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from docktor.loop.messages import ManualHold, Observation, PolicyMemory, Proposal
from docktor.policy import hold as manual_hold
from docktor.policy import predict as forecast_stage
from docktor.policy import rates, recommend, stages
from docktor.spec import ServiceSpec


def decide(
    spec: ServiceSpec,
    observation: Observation,
    previous: Observation | None,
    now: datetime,
    last_scale_up_at: datetime | None = None,
    last_scale_down_at: datetime | None = None,
    memory: PolicyMemory | None = None,
    expected: int | None = None,
    hold: ManualHold | None = None,
) -> Proposal:
    """What to do now and why. Pure: the memory handed in is not changed; the one to hand to
    the next call comes back in `Proposal.memory`.

    `expected` is the count the loop last set: fewer running means replicas died on their own
    (a crash, an OOM kill), which the decision names and, unless the policy wants fewer
    anyway, puts right. `hold` is an operator's manual scale: while in force, its count is
    the target (docktor/policy/hold.py)."""
    proposal = _decide(
        spec, observation, previous, now, last_scale_up_at, last_scale_down_at, memory
    )
    if expected is not None and observation.replicas < expected:
        proposal = _restore_missing(spec, proposal, expected)
    return manual_hold.apply(spec, proposal, hold, now)


def _restore_missing(spec: ServiceSpec, proposal: Proposal, expected: int) -> Proposal:
    """Replicas the loop started and that are gone come back at once, cooldown or not: losing
    them was no decision, so putting them back is none either (as a count below min_replicas
    is corrected at once). A policy that asks for fewer than run now is followed."""
    current = proposal.current_replicas
    note = f"{expected - current} of {expected} replicas found missing ({current} running)"
    restored, _ = stages.bounds(spec, expected)
    if proposal.action == "scale_down" or proposal.target_replicas >= restored:
        return proposal.model_copy(update={"reason": f"{note}; {proposal.reason}"})
    return proposal.model_copy(
        update={
            "action": stages.action_for(current, restored),
            "target_replicas": restored,
            "reason": f"{note}: restoring {restored}; {proposal.reason}",
        }
    )


def _decide(
    spec: ServiceSpec,
    observation: Observation,
    previous: Observation | None,
    now: datetime,
    last_scale_up_at: datetime | None,
    last_scale_down_at: datetime | None,
    memory: PolicyMemory | None,
) -> Proposal:
    memory = memory.model_copy(deep=True) if memory is not None else PolicyMemory()
    # Before anything can return early: a seed that arrives in the first iteration is kept.
    forecast_stage.warm_start(spec, memory, observation.warm_start)
    current = observation.replicas
    # The load is read over metrics_window; what one replica handles is learnt over the last
    # interval alone, the span over which saturation and the replica count are known.
    windowed = rates.window_rates(observation, previous, memory.rate_samples, spec.window)
    memory.rate_samples = rates.remember(
        memory.rate_samples, observation, spec.window, spec.check_interval
    )
    metrics = {**observation.metrics, **windowed}
    wanted = sorted(spec.metric_names())
    missing = [name for name in wanted if name not in metrics]

    def proposal(
        target: int,
        reason: str,
        matched: list[str] | None = None,
        blocked: bool = False,
        recommended: int | None = None,
    ) -> Proposal:
        stages.forget(spec, memory, now)
        return Proposal(
            action=stages.action_for(current, target),  # type: ignore[arg-type]
            current_replicas=current,
            target_replicas=target,
            reason=reason,
            matched_rules=matched or [],
            missing_metrics=missing,
            observations=metrics,
            cooldown_blocked=blocked,
            recommended=recommended,
            memory=memory,
        )

    # Out of bounds is corrected at once, cooldown or not.
    if current < spec.min_replicas:
        why = f"{current} replicas is below min_replicas ({spec.min_replicas})"
        return proposal(spec.min_replicas, why)
    if current > spec.max_replicas:
        why = f"{current} replicas is above max_replicas ({spec.max_replicas})"
        return proposal(spec.max_replicas, why)

    if not metrics:
        return _without_metrics(spec, observation, memory, proposal)
    memory.failed_observations = 0

    if spec.policy == "target":
        last_interval = {**metrics, **rates.derive_rates(observation, previous)}
        recommend.estimate_per_replica(spec, memory, observation, previous, last_interval)
        raw, unread = recommend.target(spec, current, metrics, memory, now)
        missing = sorted(set(missing) | set(unread))
        if unread and raw.replicas < current:
            # Missing data never scales anything down.
            raw.reason += f"; not scaling down without {', '.join(unread)}"
            raw.replicas = current
    else:
        raw = recommend.step(spec, current, metrics, missing)

    ahead = forecast_stage.pre_scale(spec, raw, metrics, memory, now)
    settled = settle(
        spec,
        current,
        raw.replicas,
        memory,
        now,
        last_scale_up_at,
        last_scale_down_at,
        down_window=ahead.down_window,
    )
    reason = "; ".join([raw.reason, *settled.notes])
    result = proposal(settled.replicas, reason, raw.matched, settled.cooldown_blocked, raw.replicas)
    # Only a scale-up the forecast asked for counts as predicted: one the load already wanted
    # would have happened anyway.
    result.predicted = ahead.raised and result.action == "scale_up"
    return result


def settle(
    spec: ServiceSpec,
    current: int,
    raw: int,
    memory: PolicyMemory,
    now: datetime,
    last_scale_up_at: datetime | None = None,
    last_scale_down_at: datetime | None = None,
    max_step: int | None = None,
    down_window: float | None = None,
) -> stages.Settled:
    """Stabilise, limit, bounds: the stages after a recommendation, whatever made it.
    Updates `memory` (the recommendation joins the windows)."""
    stabilised, window_note = stages.stabilise(spec, current, raw, memory, now, down_window)
    settled = stages.limit(
        spec, current, stabilised, memory, now, last_scale_up_at, last_scale_down_at, max_step
    )
    if window_note:
        settled.notes.insert(0, window_note)
    bounded, bounds_note = stages.bounds(spec, settled.replicas)
    if bounds_note:
        settled.notes.append(bounds_note)
    settled.replicas = bounded
    return settled


def _without_metrics(
    spec: ServiceSpec,
    observation: Observation,
    memory: PolicyMemory,
    proposal: Callable[..., Proposal],
) -> Proposal:
    """Hold; after `fallback.after` such observations in a row, go up to the fallback count.
    Never down: missing data is no evidence of less load."""
    current = observation.replicas
    memory.failed_observations += 1
    why = "; ".join(observation.errors) or "no metric source returned a value"
    fallback = spec.fallback
    if fallback is not None and memory.failed_observations >= fallback.after:
        target, _ = stages.bounds(spec, max(current, fallback.replicas))
        return proposal(
            target,
            f"no metrics for {memory.failed_observations} observations ({why}); "
            f"fallback to {fallback.replicas}"
            + (f", never below the current {current}" if current > fallback.replicas else ""),
        )
    return proposal(current, f"no metrics could be observed ({why}); holding")
