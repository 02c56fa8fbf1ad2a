"""The values docktor's domain hands around: an observation of a service, the policy's memory
and what it proposes, the decision that was made and why.

They are pydantic models because they also travel in the loop's payloads and its decision log:
a field can be added (with a default) without breaking a running loop or an old log line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from docktor.plan import LLMPlan, ServicePlan

RuleAction = Literal["scale_up", "scale_down", "hold"]


# `stopped` ends a loop at cancellation; `manual` is an operator's scale_to; `expired` is an
# approval that lapsed.
Action = Literal["scale_up", "scale_down", "hold", "stopped", "manual", "expired"]


class Ring(BaseModel):
    """Per-bucket mean rates at one resolution (docktor/policy/forecast/model.py)."""

    step: float
    # Index (epoch seconds // step) of the bucket being filled, and its running sum and count.
    index: int | None = None
    open_sum: float = 0.0
    open_count: int = 0
    # Closed buckets, oldest first, ending with bucket index - 1; -1 marks one without a sample.
    # Rounded, because this list travels in workflow history twice per iteration.
    values: list[float] = Field(default_factory=list)
    # Cache of the last detection [lag in buckets, confidence, cycles seen] ([0, 0, 0]: none),
    # for `period_cycles`; cleared when a bucket closes.
    period: list[float] | None = None
    period_cycles: int = 0


class ForecastMemory(BaseModel):
    """The rate history the forecast learns from; a few KB whatever the period."""

    rings: list[Ring] = Field(default_factory=list)
    # When the rate last rose well above what the rhythm expected, or a burst it expected did
    # not come: the forecast is not relied on to give capacity back (its short scale-down
    # window) for a period after that.
    surprised_at: datetime | None = None
    # The stretch over which the rhythm last met predict.min_confidence, from its first to
    # its latest check: a rhythm trusted for a whole period may dip a little below for a
    # period after (bursts that drift fold less cleanly in some cycles than in others).
    trusted_from: datetime | None = None
    trusted_at: datetime | None = None


class CounterSample(BaseModel):
    """The rate counters of one past observation, kept for rates over `metrics_window`."""

    at: datetime
    counters: dict[str, float] = Field(default_factory=dict)


class WarmStart(BaseModel):
    """What a loop without history takes from its decision log (docktor/journal.py)."""

    forecast: ForecastMemory = Field(default_factory=ForecastMemory)
    # msg/s one replica handles, estimated from the log's saturated samples as the policy does.
    per_replica_rate: float | None = None


class Observation(BaseModel):
    """One sample of a service, stamped with the time it was taken."""

    taken_at: datetime
    replicas: int
    metrics: dict[str, float] = Field(default_factory=dict)
    # Monotonic counters (stream last_seq, consumer ack floor) that rates are derived from by
    # comparing two consecutive samples; kept apart so they are not mistaken for gauges.
    counters: dict[str, float] = Field(default_factory=dict)
    # counter -> the rate metric derived from it, as the source that reported it declares
    # (MetricSource.rates). Empty in observations recorded before sources declared theirs.
    counter_rates: dict[str, str] = Field(default_factory=dict)
    # One line per metric source that could not be read this time.
    errors: list[str] = Field(default_factory=list)
    # Warm start: what the decision log tells, when the loop asked for it
    # (ObserveInput.forecast_seed_from); None otherwise and from older releases.
    warm_start: WarmStart | None = None


class Recommendation(BaseModel):
    """A raw desired count, remembered for the stabilisation windows."""

    at: datetime
    replicas: int


class ScaleEvent(BaseModel):
    """An applied scale, remembered for the rate limits."""

    at: datetime
    from_replicas: int
    to_replicas: int


class PolicyMemory(BaseModel):
    """What the policy remembers between iterations. Returned by each evaluation and handed to
    the next one, so the policy stays a pure function; carried across continue-as-new."""

    recommendations: list[Recommendation] = Field(default_factory=list)
    scale_events: list[ScaleEvent] = Field(default_factory=list)
    # msg/s one replica handles, estimated from rate_out while the pool is saturated.
    per_replica_rate: float | None = None
    # Consecutive observations that had no metric at all (for `fallback`).
    failed_observations: int = 0
    # Since when the queue has been idle (for scale to zero).
    idle_since: datetime | None = None
    # queue.rate_in history for predictive pre-scaling (None unless `predict.enabled`).
    forecast: ForecastMemory | None = None
    # Counters of past samples, oldest first, for rates over a metrics_window longer than one
    # check interval (empty otherwise: the previous sample is enough).
    rate_samples: list[CounterSample] = Field(default_factory=list)

    def forget_before(self, moment: datetime) -> None:
        self.recommendations = [r for r in self.recommendations if r.at >= moment]
        self.scale_events = [e for e in self.scale_events if e.at >= moment]


class Proposal(BaseModel):
    """What the rules want, before any advice and before it is applied."""

    action: RuleAction
    current_replicas: int
    target_replicas: int
    reason: str
    matched_rules: list[str] = Field(default_factory=list)
    missing_metrics: list[str] = Field(default_factory=list)
    observations: dict[str, float] = Field(default_factory=dict)
    cooldown_blocked: bool = False
    # The raw recommendation before stabilise/limit/bounds, and the policy's memory after
    # this evaluation (None from a release that had none).
    recommended: int | None = None
    memory: PolicyMemory | None = None
    # The forecast raised the recommendation: capacity for load expected, not yet seen.
    predicted: bool = False


class Provenance(BaseModel):
    """Which model, if any, shaped a decision."""

    provider: str = "none"
    model: str | None = None
    llm_used: bool = False
    fallback: str | None = None
    latency_ms: float | None = None
    # A scale-up taken ahead of load, for the burst the forecast expects.
    predicted: bool = False


class Decision(BaseModel):
    timestamp: datetime
    service: str
    action: Action
    current_replicas: int
    target_replicas: int
    reason: str
    observations: dict[str, float] = Field(default_factory=dict)
    matched_rules: list[str] = Field(default_factory=list)
    metadata: Provenance = Field(default_factory=Provenance)
    iteration: int = 0
    # Position among all decisions of this loop (across runs): unique even when an operator's
    # `manual` decision lands in the same iteration as the loop's own.
    sequence: int = 0
    workflow_id: str = ""
    run_id: str = ""
    # The first run of this loop's chain of runs (it survives continue-as-new; a stop and a new
    # start begin a new chain, whose sequence starts again at 1). With `sequence` it names a
    # decision uniquely for the decision log. Empty in decisions made before it existed.
    first_run_id: str = ""


class ManualHold(BaseModel):
    """An operator's count that the loop keeps, in both directions, until `until` (workflow
    time): set by `docktor scale`, ended early by `docktor resume` or the next scale."""

    replicas: int
    until: datetime
    by: str = ""


class PolicyState(BaseModel):
    """Everything the policy reads from the loop, besides the plan, the observation and the
    clock: one value (LoopState.policy_state), so no caller of `policy.decide` can leave an
    input out, and a new one reaches every caller at once."""

    # The sample before this one: rates are measured against it.
    previous: Observation | None = None
    # The last applied scales: the cooldowns count from them.
    last_scale_up_at: datetime | None = None
    last_scale_down_at: datetime | None = None
    # The windows, rate limits, learnt rate and forecast; decide works on a copy.
    memory: PolicyMemory = Field(default_factory=PolicyMemory)
    # The count the loop last set or saw confirmed: fewer running means replicas died on their
    # own, and the decision says so.
    expected_replicas: int | None = None
    # An operator's hold: while it is in force, the policy's target is the held count.
    hold: ManualHold | None = None


class Advice(BaseModel):
    """The decision after advice: the model's target within guardrails, or the rules' proposal
    when the model was not used or failed (metadata.fallback says why)."""

    action: RuleAction
    target_replicas: int
    reason: str
    metadata: Provenance = Field(default_factory=Provenance)
    # The policy's memory when the model's target replaced the rules' (None: the proposal's).
    memory: PolicyMemory | None = None


class ForecastView(BaseModel):
    """The answer to the `forecast` query: what the loop has learnt of its load's rhythm."""

    service: str
    enabled: bool = False
    # The period found (None: no rhythm yet), how well it explains the rate (0..1) and how
    # many cycles in a row it has fitted.
    period_s: float | None = None
    confidence: float = 0.0
    cycles: int = 0
    trusted: bool = False
    # The highest rate the rhythm expects within the next period, and when it comes.
    next_peak_at: datetime | None = None
    next_peak_rate: float | None = None
    lead_s: float = 0.0
    min_confidence: float = 0.0
    min_cycles: int = 0
    # Seconds of rate history the forecast holds, and its size in the loop's state.
    history_s: float = 0.0
    state_bytes: int = 0


class AdviseInput(BaseModel):
    """What the model is shown. Never carries a secret: the API key is read by the activity
    from the worker's environment."""

    service: ServicePlan
    llm: LLMPlan
    proposal: Proposal
    cooldown_up_left: float = 0.0
    cooldown_down_left: float = 0.0
    recent: list[Decision] = Field(default_factory=list)
    # The model's target goes through the same stabilise/limit stages as the rules' one: they
    # need the policy's memory as it was before this evaluation, the clock and the last scales.
    memory: PolicyMemory = Field(default_factory=PolicyMemory)
    now: datetime | None = None
    last_scale_up_at: datetime | None = None
    last_scale_down_at: datetime | None = None
