"""The loop's own payloads: the workflow's input and carried state, each activity's input and
result, the controls an operator sends and the loop's answers.

Every one is a pydantic model, so the workflow history shows readable JSON; fields are only
ever added, with defaults, so a payload written by one release decodes in the next.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from docktor.plan import LLMPlan, ServicePlan
from docktor.text import printable_line
from docktor.values import (
    Action,
    Decision,
    ManualHold,
    Observation,
    PolicyMemory,
    PolicyState,
    Proposal,
    Provenance,
    RuleAction,
    ScaleEvent,
)

# How many decisions the loop keeps in its state (and hands to continue-as-new).
DECISION_RING = 50
# Characters of a decision's reason: it travels in each later workflow task (in the carried
# state), the memo, the log and the model's prompt.
REASON_LIMIT = 1000


class PendingApproval(BaseModel):
    """A scale decision waiting for an operator (`approval: manual`)."""

    action: RuleAction
    current_replicas: int
    target_replicas: int
    reason: str
    requested_at: datetime
    expires_at: datetime
    # Set by approve/reject: True approved, False rejected.
    verdict: bool | None = None
    by: str | None = None
    why: str | None = None


class LoopState(BaseModel):
    """Everything the loop remembers; continue-as-new hands exactly this to the next run."""

    iteration: int = 0
    decision_count: int = 0
    pending: PendingApproval | None = None
    decisions: list[Decision] = Field(default_factory=list)
    last_sample: Observation | None = None
    replicas: int | None = None
    last_scale_up_at: datetime | None = None
    last_scale_down_at: datetime | None = None
    paused: bool = False
    pause_reason: str | None = None
    # Who paused (PauseRequest.by: a user, or mcp:<client>); None from releases before it.
    paused_by: str | None = None
    memory: PolicyMemory = Field(default_factory=PolicyMemory)
    # The JSONL log cannot be written (disk full, folder gone): why, and the first decision
    # missing from it. Kept so the gap is reported once, not at every iteration.
    journal_error: str | None = None
    journal_gap_from: int | None = None
    # The last manual scale's hold; None when there is none (or from a release without holds).
    # Kept after it ends: whether it is in force is a question of workflow time.
    hold: ManualHold | None = None

    def remember(self, decision: Decision) -> None:
        self.decisions.append(decision)
        del self.decisions[:-DECISION_RING]

    def policy_state(self) -> PolicyState:
        """What the policy reads from this state. The loop's evaluation, `what_if` and the
        control benchmark all decide from this, so none can forget the hold or a scale time."""
        return PolicyState(
            previous=self.last_sample,
            last_scale_up_at=self.last_scale_up_at,
            last_scale_down_at=self.last_scale_down_at,
            memory=self.memory,
            expected_replicas=self.replicas,
            hold=self.hold,
        )

    def forecast_seed_from(self, spec: ServicePlan, journal_path: str | None) -> str | None:
        """The decision log the next observation should seed the forecast from: only while
        predictive pre-scaling is on and the forecast has no history yet."""
        if not spec.predict.enabled or self.memory.forecast is not None:
            return None
        return journal_path

    def note_scale(self, at: datetime, from_replicas: int, to_replicas: int) -> None:
        """Book an applied scale: the cooldowns and the rate limits count from it. The workflow
        and the control benchmark both call this, so they keep the same books."""
        self.replicas = to_replicas
        if to_replicas > from_replicas:
            self.last_scale_up_at = at
        elif to_replicas < from_replicas:
            self.last_scale_down_at = at
        if to_replicas != from_replicas:
            self.memory.scale_events.append(
                ScaleEvent(at=at, from_replicas=from_replicas, to_replicas=to_replicas)
            )


class AutoscalerInput(BaseModel):
    """The workflow's argument: the service's plan, where to record, and the carried state."""

    project: str
    service: ServicePlan
    llm: LLMPlan = Field(default_factory=LLMPlan.none)
    journal_path: str | None = None
    state: LoopState = Field(default_factory=LoopState)
    # Continue-as-new after this many iterations even if the server has not suggested it, so
    # that one run's history stays small.
    iterations_per_run: int = Field(default=500, ge=1)
    # Upsert the Docktor* search attributes; off where the server has them not registered
    # (the time-skipping test server), since an unknown attribute fails the workflow task.
    search_attributes: bool = True


class ObserveInput(BaseModel):
    project: str
    service: ServicePlan
    # The decision log to rebuild the forecast's history from, set while the loop has none yet
    # (a loop started beside an existing log need not wait several cycles to learn its rhythm).
    forecast_seed_from: str | None = None


class EvaluateInput(BaseModel):
    service: ServicePlan
    observation: Observation
    now: datetime
    state: PolicyState = Field(default_factory=PolicyState)

    @model_validator(mode="before")
    @classmethod
    def nest_flat_state(cls, data: Any) -> Any:
        """Releases before PolicyState sent its fields flat, under the same names: the one
        place an evaluation of theirs is read as one of now."""
        if not isinstance(data, dict) or "state" in data:
            return data
        flat = {name: data[name] for name in PolicyState.model_fields if name in data}
        rest = {key: value for key, value in data.items() if key not in flat}
        return {**rest, "state": flat}


class DecisionPlace(BaseModel):
    """Where a decision stands in its loop, as the workflow numbers it: with what it decided,
    all a decision holds (`make_decision`)."""

    at: datetime
    service: str
    iteration: int
    sequence: int
    workflow_id: str
    run_id: str
    first_run_id: str


def make_decision(
    place: DecisionPlace,
    action: Action,
    current: int,
    target: int,
    reason: str,
    observations: dict[str, float] | None = None,
    matched_rules: list[str] | None = None,
    metadata: Provenance | None = None,
) -> Decision:
    """The one way a decision is made, in the workflow and in the activity that writes a
    hold's line ahead of it: the same inputs give the same line."""
    return Decision(
        timestamp=place.at,
        service=place.service,
        action=action,
        current_replicas=current,
        target_replicas=target,
        reason=printable_line(reason, REASON_LIMIT),
        observations=observations or {},
        matched_rules=matched_rules or [],
        metadata=metadata or Provenance(),
        iteration=place.iteration,
        sequence=place.sequence,
        workflow_id=place.workflow_id,
        run_id=place.run_id,
        first_run_id=place.first_run_id,
    )


def is_hold(proposal: Proposal) -> bool:
    """A proposal that changes nothing: recorded as it stands when no model is asked."""
    return proposal.action == "hold" and proposal.target_replicas == proposal.current_replicas


def hold_decision(place: DecisionPlace, proposal: Proposal) -> Decision:
    """The decision a hold proposal becomes when no model is asked and nothing overtakes it."""
    return make_decision(
        place,
        proposal.action,
        proposal.current_replicas,
        proposal.target_replicas,
        proposal.reason,
        proposal.observations,
        proposal.matched_rules,
        Provenance(predicted=proposal.predicted),
    )


class LookInput(BaseModel):
    """One local activity for what an idle iteration does: observe, evaluate, and, when
    `hold_at` is set and the proposal is a hold, write that hold's line to `journal_path`."""

    project: str
    service: ServicePlan
    forecast_seed_from: str | None = None
    now: datetime
    state: PolicyState = Field(default_factory=PolicyState)
    journal_path: str | None = None
    # Set only when nothing after evaluate can change a hold: no model to ask, the log writable.
    hold_at: DecisionPlace | None = None


class LookResult(BaseModel):
    observation: Observation
    proposal: Proposal
    # The hold's line is in the log (the decision hold_decision makes of the proposal, at
    # `decided_at`).
    hold_written: bool = False
    # When the look decided the hold it wrote: the worker's clock as it wrote the line, which
    # the workflow keeps (a marker's result replays as it was).
    decided_at: datetime | None = None


class ApplyInput(BaseModel):
    project: str
    service: ServicePlan
    target_replicas: int
    summary: str = ""


class ApplyResult(BaseModel):
    replicas: int


class RecordInput(BaseModel):
    path: str
    decision: Decision
    # Decisions the log missed while it could not be written, oldest first, from the loop's
    # ring: written before `decision` (each unless its line is there already), so the log
    # stays in order. Empty while the log is written, and from older releases.
    missed: list[Decision] = Field(default_factory=list)


# Every control (pause, resume, scale_to, approve, reject, update_spec) carries the time after
# which it is void: the client that sends it stops waiting then and tells its operator that
# nothing was done, so the loop must not do it later. An update that no worker validated in
# time (the worker was down) waits in the server and reaches the loop when a worker returns;
# its validator compares `void_after` with workflow time and refuses it. None: never void (what
# a client of an older release sends, and what every recorded history holds).


# `project` and `service` name the loop a control is meant for, as its client's config knows it;
# the loop refuses one that names another loop (a request sent under a workflow id that another
# project's service once shared). None: not said (clients of older releases), accepted.


class ManualScale(BaseModel):
    # Strict: `"3"`, `3.0` or `true` from a client other than docktor's is refused, not read as
    # a count (an update whose payload does not decode is rejected before it is accepted).
    replicas: int = Field(strict=True)
    reason: str = ""
    by: str = ""
    # Seconds the loop keeps this count (both directions) before deciding again; None: the
    # service's default (docktor/policy/hold.py), 0: no hold. A loop of a release before holds
    # ignores it.
    hold_s: float | None = Field(default=None, strict=True)
    void_after: datetime | None = None
    project: str | None = None
    service: str | None = None


class ManualScaleResult(Decision):
    """The `scale_to` update's answer: the `manual` decision it recorded, and the hold the loop
    keeps from it (None: not held). A Decision with one field more, so that a client which reads
    the answer as a Decision (older releases) still can."""

    hold: ManualHold | None = None


class PauseRequest(BaseModel):
    reason: str = ""
    by: str = ""
    void_after: datetime | None = None
    project: str | None = None
    service: str | None = None


class ResumeRequest(BaseModel):
    """The `resume` update's argument. Optional: clients of older releases send none."""

    void_after: datetime | None = None
    project: str | None = None
    service: str | None = None


class Verdict(BaseModel):
    """approve / reject of a pending scale decision."""

    by: str = ""
    reason: str = ""
    void_after: datetime | None = None
    project: str | None = None
    service: str | None = None


def void_problem(void_after: datetime | None, now: datetime) -> str | None:
    """Why a control can no longer be carried out (its sender gave up waiting), or None."""
    if void_after is None:
        return None
    if void_after.tzinfo is None:  # a client that forgot the zone meant UTC, as docktor does
        void_after = void_after.replace(tzinfo=UTC)
    if now <= void_after:
        return None
    late = (now - void_after).total_seconds()
    return (
        f"the request expired at {void_after.astimezone(UTC):%H:%M:%S} UTC and reached the "
        f"loop {late:.0f}s later (its sender had stopped waiting); nothing was done"
    )


# What an operator's `by` and `reason` may be: they are recorded in a decision, kept in the
# loop's state (50 decisions, handed to every continue-as-new, where one payload may not exceed
# 2 MB) and printed in terminals by `docktor status|explain`.
OPERATOR_TEXT_MAX = 500


def operator_text_problems(**fields: str) -> list[str]:
    """Why the operator's texts cannot be recorded, one line per field; empty when they can."""
    problems = []
    for name, value in fields.items():
        if len(value) > OPERATOR_TEXT_MAX:
            problems.append(f"{name} is {len(value)} characters long (at most {OPERATOR_TEXT_MAX})")
        elif not value.isprintable():
            bad = next(ch for ch in value if not ch.isprintable())
            problems.append(f"{name} holds the control character {bad!r}: one line of text only")
    return problems


class SpecUpdate(BaseModel):
    """The `update_spec` update: a service's new plan (built from its new spec) and the model
    to consult. The names are the update's, kept so that a client of any release is read."""

    service: ServicePlan
    llm: LLMPlan
    void_after: datetime | None = None
    # The service is the plan's name; the project, as for the other controls.
    project: str | None = None


class LoopStatus(BaseModel):
    """The answer to the `status` query."""

    workflow_id: str
    service: str
    replicas: int | None
    min_replicas: int
    max_replicas: int
    paused: bool
    pause_reason: str | None
    iteration: int
    last_decision: Decision | None
    # Who paused (None when unknown, and from older releases).
    paused_by: str | None = None
    cooldown_up_until: datetime | None
    cooldown_down_until: datetime | None
    pending_approval: PendingApproval | None = None
    # Set while the JSONL decision log cannot be written: why, and since which decision.
    journal_error: str | None = None
    # A manual scale's hold while it is in force (None otherwise, and from older releases).
    hold: ManualHold | None = None
