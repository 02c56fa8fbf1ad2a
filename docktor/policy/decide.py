"""The policy's one entry point, and its stages in the order they run.

`decide(plan, observation, state, now)` is how the loop's evaluation, `what_if` and the control
benchmark ask what to do: `state` is the loop's PolicyState (LoopState.policy_state), so each
caller hands in every input at once. `settle` runs the stages after a recommendation on a
count from elsewhere (a model's advice), so no source of a proposal can skip the missing-data
guard, a window, a rate limit, a cooldown or the bounds.

A decision is worked out on a Draft that each stage of STAGES reads and adds to, with its
reason, as the Kubernetes HPA does (raw recommendation -> stabilisation -> rate limits). A
pre-check that answers on its own (a count out of bounds, no metrics at all) ends the policy's
own stages; the last two, the replicas found missing and an operator's hold, overrule whatever
came before and so always run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from docktor.plan import ServicePlan
from docktor.policy import hold as manual_hold
from docktor.policy import rates, recommend, stages
from docktor.policy.forecast import stage as forecast_stage
from docktor.values import Observation, PolicyMemory, PolicyState, Proposal


@dataclass
class Draft:
    """A decision in the making: what the stages read, and what they have said so far."""

    plan: ServicePlan
    current: int
    now: datetime
    memory: PolicyMemory
    state: PolicyState = field(default_factory=PolicyState)
    observation: Observation | None = None
    # The metrics the stages read (the observation's, with the rates over the metrics window),
    # and those the plan reads that were not observed.
    metrics: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    # The count so far, and each stage's reason for it, in order.
    replicas: int = 0
    reasons: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    # The recommendation the windows remember (None when a pre-check answered).
    recommended: int | None = None
    # Pre-scale: whether the forecast raised the recommendation, and the scale-down window to
    # use while its rhythm is trusted (None: the configured one).
    raised: bool = False
    down_window: float | None = None
    # A model's max_step (settle only).
    max_step: int | None = None
    cooldown_blocked: bool = False
    predicted: bool = False
    # A pre-check answered: the stages up to bounds have nothing to add.
    answered: bool = False

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def say(self, note: str | None) -> None:
        if note:
            self.reasons.append(note)

    def answer(self, replicas: int, reason: str) -> None:
        self.replicas, self.answered = replicas, True
        self.reasons.append(reason)


# ---- the stages ---------------------------------------------------------------------------------


def pre_checks(d: Draft) -> None:
    """A count out of bounds is corrected at once, cooldown or not; an observation without any
    metric holds (or goes up to the fallback): missing data never scales down."""
    plan, current = d.plan, d.current
    low, high = plan.min_replicas, plan.max_replicas
    if current < low:
        d.answer(low, f"{current} replicas is below min_replicas ({low})")
    elif current > high:
        d.answer(high, f"{current} replicas is above max_replicas ({high})")
    elif not d.metrics:
        _without_metrics(d)
    else:
        d.memory.failed_observations = 0


def _without_metrics(d: Draft) -> None:
    """Hold; after `fallback.after` such observations in a row, go up to the fallback count.
    Never down: missing data is no evidence of less load."""
    assert d.observation is not None
    current, memory = d.current, d.memory
    memory.failed_observations += 1
    why = "; ".join(d.observation.errors) or "no metric source returned a value"
    fallback = d.plan.fallback
    if fallback is not None and memory.failed_observations >= fallback.after:
        target, _ = stages.bounds(d.plan, max(current, fallback.replicas))
        d.answer(
            target,
            f"no metrics for {memory.failed_observations} observations ({why}); "
            f"fallback to {fallback.replicas}"
            + (f", never below the current {current}" if current > fallback.replicas else ""),
        )
    else:
        d.answer(current, f"no metrics could be observed ({why}); holding")


def recommend_stage(d: Draft) -> None:
    """The raw desired count: the step rules, or target tracking (recommend.py)."""
    assert d.observation is not None
    plan, current, previous = d.plan, d.current, d.state.previous
    if plan.policy == "target":
        last_interval = {**d.metrics, **rates.derive_rates(d.observation, previous)}
        recommend.estimate_per_replica(plan, d.memory, d.observation, previous, last_interval)
        growth = recommend.backlog_growth(d.observation, previous)
        raw, unread = recommend.target(plan, current, d.metrics, d.memory, d.now, growth)
        d.missing = sorted(set(d.missing) | set(unread))
        if unread and raw.replicas < current:
            # Missing data never scales anything down.
            raw.reason += f"; not scaling down without {', '.join(unread)}"
            raw.replicas = current
    else:
        raw = recommend.step(plan, current, d.metrics, d.missing)
    d.replicas, d.matched = raw.replicas, raw.matched
    d.say(raw.reason)


def pre_scale(d: Draft) -> None:
    """Raise the recommendation for the load a trusted forecast expects (forecast/stage.py)."""
    ahead = forecast_stage.pre_scale(d.plan, d.replicas, d.metrics, d.memory, d.now)
    d.replicas, d.raised, d.down_window = ahead.replicas, ahead.raised, ahead.down_window
    d.say(ahead.note)


def missing_data(d: Draft) -> None:
    """A recommendation from elsewhere (a model's) never scales down while a metric the plan
    reads was not observed: the model saw the same gap, and a guess is no evidence of less
    load. Up is allowed, as the rules allow it. The rules' own recommendation has this guard
    built in where it applies (pre-checks, recommend), so decide does not run this stage."""
    if d.missing and d.replicas < d.current:
        d.say(f"not scaling down without {', '.join(d.missing)}: holding at {d.current}")
        d.replicas = d.current


def stabilise(d: Draft) -> None:
    """The recommendation joins the windows; the HPA's windows choose from them."""
    d.recommended = d.replicas
    d.replicas, note = stages.stabilise(
        d.plan, d.current, d.replicas, d.memory, d.now, d.down_window
    )
    d.say(note)


def limit(d: Draft) -> None:
    """Rate limits per direction, a model's max_step, the cooldowns."""
    settled = stages.limit(
        d.plan,
        d.current,
        d.replicas,
        d.memory,
        d.now,
        d.state.last_scale_up_at,
        d.state.last_scale_down_at,
        d.max_step,
    )
    d.replicas, d.cooldown_blocked = settled.replicas, settled.cooldown_blocked
    d.reasons += settled.notes


def bounds(d: Draft) -> None:
    """min_replicas and max_replicas always win."""
    d.replicas, note = stages.bounds(d.plan, d.replicas)
    d.say(note)
    # Only a scale-up the forecast asked for counts as predicted: one the load already wanted
    # would have happened anyway.
    d.predicted = d.raised and d.replicas > d.current


def restore_missing(d: Draft) -> None:
    """Replicas the loop started and that are gone come back at once, cooldown or not: losing
    them was no decision, so putting them back is none either (as a count below min_replicas
    is corrected at once). A policy that asks for fewer than run now is followed."""
    expected, current = d.state.expected_replicas, d.current
    if expected is None or current >= expected:
        return
    note = f"{expected - current} of {expected} replicas found missing ({current} running)"
    restored, _ = stages.bounds(d.plan, expected)
    if d.replicas < current or d.replicas >= restored:
        d.reasons.insert(0, note)
    else:
        d.replicas = restored
        d.reasons.insert(0, f"{note}: restoring {restored}")


def hold(d: Draft) -> None:
    """An operator's manual scale: while its hold is in force, the held count (hold.py)."""
    held = manual_hold.overrule(d.plan, d.current, d.replicas, d.reason, d.state.hold, d.now)
    if held is None:
        return
    target, reason = held
    # A held count is the operator's, not capacity the forecast asked for.
    d.predicted = d.predicted and target == d.replicas
    d.replicas, d.reasons = target, [reason]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Draft], None]
    # Runs even after a pre-check answered.
    always: bool = False
    # Runs only on a recommendation from elsewhere (settle), never in decide.
    settle_only: bool = False


# The policy, in the order it runs. Every proposal passes here: none re-implements a stage.
STAGES: tuple[Stage, ...] = (
    Stage("pre-checks", pre_checks),
    Stage("recommend", recommend_stage),
    Stage("pre-scale", pre_scale),
    Stage("missing-data", missing_data, settle_only=True),
    Stage("stabilise", stabilise),
    Stage("limit", limit),
    Stage("bounds", bounds),
    Stage("restore", restore_missing, always=True),
    Stage("hold", hold, always=True),
)
# What a recommendation from elsewhere (a model's) goes through.
SETTLE = ("missing-data", "stabilise", "limit", "bounds")


def _run(d: Draft, names: tuple[str, ...] | None = None) -> None:
    for stage in STAGES:
        if names is not None and stage.name not in names:
            continue
        if names is None and stage.settle_only:
            continue
        if d.answered and not stage.always:
            continue
        stage.run(d)


# ---- entry points ------------------------------------------------------------------------------


def decide(
    plan: ServicePlan, observation: Observation, state: PolicyState, now: datetime
) -> Proposal:
    """What to do now and why. Pure: `state` is not changed; the memory for the next call
    comes back in `Proposal.memory` (the only part of the state the policy writes: the rest
    is the loop's record of what it applied)."""
    memory = state.memory.model_copy(deep=True)
    # Before anything can answer early: a seed that arrives in the first iteration is kept.
    forecast_stage.warm_start(plan, memory, observation.warm_start)
    # The load is read over metrics_window; what one replica handles is learnt over the last
    # interval alone, the span over which saturation and the replica count are known.
    windowed = rates.window_rates(observation, state.previous, memory.rate_samples, plan.window)
    memory.rate_samples = rates.remember(
        memory.rate_samples, observation, plan.window, plan.check_interval
    )
    metrics = {**observation.metrics, **windowed}
    d = Draft(
        plan=plan,
        current=observation.replicas,
        now=now,
        memory=memory,
        state=state,
        observation=observation,
        metrics=metrics,
        missing=[name for name in sorted(plan.metric_names()) if name not in metrics],
        replicas=observation.replicas,
    )
    _run(d)
    stages.forget(plan, memory, now)
    return Proposal(
        action=stages.action_for(d.current, d.replicas),  # type: ignore[arg-type]
        current_replicas=d.current,
        target_replicas=d.replicas,
        reason=d.reason,
        matched_rules=d.matched,
        missing_metrics=d.missing,
        observations=metrics,
        cooldown_blocked=d.cooldown_blocked,
        recommended=d.recommended,
        memory=memory,
        predicted=d.predicted,
    )


def settle(
    plan: ServicePlan,
    current: int,
    raw: int,
    memory: PolicyMemory,
    now: datetime,
    last_scale_up_at: datetime | None = None,
    last_scale_down_at: datetime | None = None,
    max_step: int | None = None,
    down_window: float | None = None,
    missing: Sequence[str] = (),
) -> stages.Settled:
    """The missing-data guard, stabilise, limit, bounds (SETTLE): the stages after a
    recommendation, whatever made it. `missing`: the metrics the plan reads that were not
    observed (Proposal.missing_metrics); while there are any, nothing scales down. Updates
    `memory` (the guarded recommendation joins the windows)."""
    d = Draft(
        plan=plan,
        current=current,
        now=now,
        memory=memory,
        state=PolicyState(last_scale_up_at=last_scale_up_at, last_scale_down_at=last_scale_down_at),
        replicas=raw,
        max_step=max_step,
        down_window=down_window,
        missing=list(missing),
    )
    _run(d, SETTLE)
    return stages.Settled(d.replicas, d.reasons, d.cooldown_blocked)
