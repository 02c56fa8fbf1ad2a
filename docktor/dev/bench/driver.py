"""Drives docktor's real policy (docktor.policy.decide) the way the workflow does.

docktor/loop/workflow.py keeps what the policy reads in its LoopState, calls decide with
LoopState.policy_state(), keeps the memory that comes back, scales, books the scale with
LoopState.note_scale, and only then stores the sample; this adapter does the same against the
simulated queue, so a change to the policy shows up in the benchmark without touching it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from docktor.dev.bench.simulate import QueueView
from docktor.loop.messages import LoopState
from docktor.plan import ServicePlan
from docktor.policy import decide
from docktor.sources import MetricConfigError, source_class
from docktor.values import Observation, PolicyMemory

# Simulated time 0; any fixed moment works, a fixed one keeps runs identical.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def observation(view: QueueView, epoch: datetime = EPOCH, counters: bool = True) -> Observation:
    """The sample a live `observe` activity would return for this queue state. `counters`
    False: as from a queue that keeps none (SQS), whose loop sees the gauges alone and no
    rate; its backlog is the visible messages and ack_pending those in flight, as here."""
    return Observation(
        taken_at=epoch + timedelta(seconds=view.t),
        replicas=view.replicas,
        metrics={"queue.backlog": view.undelivered, "queue.ack_pending": view.in_flight},
        counters=(
            {"queue.stream_last_seq": view.arrived_total, "queue.ack_floor": view.acked_total}
            if counters
            else {}
        ),
    )


def has_counters(spec: ServicePlan) -> bool:
    """Whether the plan's queue kind derives rates (a kind that is not installed: as NATS)."""
    if spec.queue is None:
        return True
    try:
        return bool(source_class(spec.queue.kind).rates)
    except MetricConfigError:
        return True


class DocktorController:
    """One docktor service's loop: observe -> decide -> apply, every check_interval."""

    instant = False

    def __init__(
        self,
        name: str,
        spec: ServicePlan,
        memory: PolicyMemory | None = None,
        epoch: datetime = EPOCH,
    ) -> None:
        self.name = name
        self.spec = spec
        self.interval = spec.check_interval
        self.state = LoopState(memory=memory or PolicyMemory())
        self.epoch = epoch
        self.counters = has_counters(spec)
        # What the decision log would hold: each sample with the rates its decision recorded.
        self.log: list[Observation] = []

    def check(self, view: QueueView) -> int | None:
        sample = observation(view, self.epoch, self.counters)
        now = sample.taken_at
        state = self.state
        proposal = decide(self.spec, sample, state.policy_state(), now)
        # As the workflow does: keep the memory the evaluation returned, apply (in the
        # simulation a scale always succeeds, at once), book the scale, then keep the sample.
        if proposal.memory is not None:
            state.memory = proposal.memory
        self.log.append(sample.model_copy(update={"metrics": proposal.observations}))
        target = proposal.target_replicas
        state.note_scale(now, view.replicas, target)
        state.last_sample = sample
        return target
