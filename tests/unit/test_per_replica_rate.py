"""What one replica handles, as the target policy learns it (recommend.estimate_per_replica):
an ack floor that catches up after a replica died is not a rate the replicas ever had."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docktor.loop.messages import LoopState
from docktor.plan import ServicePlan
from docktor.policy import decide
from docktor.policy.forecast.stage import learn_from_log
from docktor.policy.recommend import estimate_per_replica
from docktor.spec import ServiceSpec
from docktor.values import Observation, PolicyMemory

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
QUEUE = {"stream": "JOBS", "consumer": "workers"}
TRUE_RATE = 50.6  # msg/s one replica handles
INTERVAL = 4.0


def spec(**overrides: Any) -> ServicePlan:
    data: dict[str, Any] = {"name": "consumer", "max_replicas": 12, "queue": QUEUE}
    data.update(overrides)
    return ServicePlan.from_spec(ServiceSpec.model_validate(data))


def sample(
    at: float,
    replicas: int,
    arrived: float,
    acked: float,
    backlog: float | None = 0.0,
    in_flight: float | None = 0.0,
) -> Observation:
    """One observation as the NATS source gives it: num_pending, num_ack_pending, and the
    stream's last sequence and the consumer's ack floor as counters."""
    metrics = {}
    if backlog is not None:
        metrics["queue.backlog"] = backlog
    if in_flight is not None:
        metrics["queue.ack_pending"] = in_flight
    return Observation(
        taken_at=T0 + timedelta(seconds=at),
        replicas=replicas,
        metrics=metrics,
        counters={"queue.stream_last_seq": arrived, "queue.ack_floor": acked},
    )


def learn(
    previous: Observation,
    current: Observation,
    known: float | None,
    service: ServicePlan | None = None,
    with_rate_in: bool = True,
) -> float | None:
    """The estimate after one interval, with the interval's rates as decide derives them."""
    seconds = (current.taken_at - previous.taken_at).total_seconds()
    rates = {
        "queue.rate_out": (
            current.counters["queue.ack_floor"] - previous.counters["queue.ack_floor"]
        )
        / seconds
    }
    if with_rate_in:
        arrived = (
            current.counters["queue.stream_last_seq"] - previous.counters["queue.stream_last_seq"]
        )
        rates["queue.rate_in"] = arrived / seconds
    memory = PolicyMemory(per_replica_rate=known)
    estimate_per_replica(service or spec(), memory, current, previous, rates)
    return memory.per_replica_rate


# ---- one interval ------------------------------------------------------------------------------


def test_an_ack_floor_catching_up_is_not_a_faster_replica() -> None:
    # 11 replicas keep up with 500 msg/s (nothing waits). A killed replica's 10 messages held
    # the ack floor back; redelivered and acked, they let it jump past everything acked
    # meanwhile: 1,755/s over the interval, 160 msg/s per replica.
    previous = sample(0, 11, arrived=100_000, acked=92_980, in_flight=120)
    current = sample(4, 11, arrived=102_000, acked=100_000, in_flight=110)
    estimate = learn(previous, current, known=TRUE_RATE)
    assert estimate == pytest.approx(TRUE_RATE, rel=0.2)


def test_a_catch_up_while_work_waits_is_not_learnt_either() -> None:
    # The same jump with work waiting at both samples (every replica busy): smoothing alone
    # would still move the estimate halfway to 160.
    previous = sample(0, 11, arrived=100_000, acked=92_980, backlog=300, in_flight=120)
    current = sample(4, 11, arrived=102_000, acked=100_000, backlog=80, in_flight=110)
    # What the queue could supply: 500/s arrived + (420 - 190) / 4 s = 557.5/s, 50.7 each.
    estimate = learn(previous, current, known=TRUE_RATE)
    assert estimate == pytest.approx(TRUE_RATE, rel=0.2)


def test_the_first_saturated_interval_teaches_the_rate_at_once() -> None:
    # 4 replicas, work waiting at both samples: 200 msg/s served, 50 each, learnt in one go.
    previous = sample(0, 4, arrived=10_000, acked=10_000, backlog=400, in_flight=40)
    current = sample(4, 4, arrived=11_600, acked=10_800, backlog=1_200, in_flight=40)
    assert learn(previous, current, known=None) == pytest.approx(50.0)


def test_a_real_speed_up_is_followed() -> None:
    # The replicas got twice as fast (100 msg/s each) while the estimate says 50.
    known: float | None = 50.0
    backlog, arrived, acked = 2_000.0, 10_000.0, 10_000.0
    for i in range(4):  # saturated: 4 x 100/s served, 300/s arriving, the backlog shrinks
        previous = sample(4 * i, 4, arrived, acked, backlog=backlog, in_flight=40)
        arrived, acked, backlog = arrived + 1_200, acked + 1_600, backlog - 400
        current = sample(4 * i + 4, 4, arrived, acked, backlog=backlog, in_flight=40)
        known = learn(previous, current, known)
    assert known == pytest.approx(100.0, rel=0.1)
    # Nothing waiting: replicas that served 80/s each, all of it arrivals, prove 50 too low.
    previous = sample(0, 4, arrived=0, acked=0)
    current = sample(4, 4, arrived=1_280, acked=1_280)
    assert learn(previous, current, known=50.0) == pytest.approx(80.0)


def test_a_rise_that_cannot_be_checked_is_smoothed() -> None:
    # No arrival rate to bound rate_out by (a queue.metrics list without it): the rise is
    # taken part of the way (rate.smoothing, 0.5), not at once.
    previous = sample(0, 11, arrived=100_000, acked=92_980, in_flight=120)
    current = sample(4, 11, arrived=102_000, acked=100_000, in_flight=110)
    estimate = learn(previous, current, known=TRUE_RATE, with_rate_in=False)
    assert estimate == pytest.approx(TRUE_RATE + 0.5 * (1_755 / 11 - TRUE_RATE))
    # The same without a backlog at one of the samples.
    no_backlog = sample(4, 11, arrived=102_000, acked=100_000, backlog=None, in_flight=110)
    estimate = learn(previous, no_backlog, known=TRUE_RATE)
    assert estimate == pytest.approx(TRUE_RATE + 0.5 * (1_755 / 11 - TRUE_RATE))


def test_a_warm_start_does_not_learn_a_catch_up_from_the_log() -> None:
    # The log of a loop that lived through the kill: saturated samples with the true rate,
    # then the interval where the floor caught up.
    logged = []
    for i in range(6):
        rate_out = 1_755.0 if i == 4 else 11 * TRUE_RATE
        logged.append(
            Observation(
                taken_at=T0 + timedelta(seconds=INTERVAL * i),
                replicas=11,
                metrics={
                    "queue.backlog": 300.0,
                    "queue.rate_in": 11 * TRUE_RATE,
                    "queue.rate_out": rate_out,
                },
            )
        )
    seed = learn_from_log(spec(), logged)
    assert seed.per_replica_rate == pytest.approx(TRUE_RATE, rel=0.2)


# ---- a loop through a replica's death ----------------------------------------------------------


@dataclass
class Queue:
    """A JetStream work queue served by replicas at TRUE_RATE, in steps of DT seconds, as
    docktor/dev/bench/simulate.py models it, plus what a killed replica leaves behind: its
    batch stays unacknowledged (in ack_pending) until `ack_wait`, and the ack floor cannot
    pass it until then, though the other replicas go on acknowledging what comes after."""

    replicas: int
    startup: float = 3.0
    ack_wait: float = 30.0
    batch: int = 10
    dt: float = 0.1
    t: float = 0.0
    ready: int = 0
    starting: list[float] = field(default_factory=list)
    waiting: float = 0.0
    arrived: float = 0.0
    acked: float = 0.0
    stuck: float = 0.0  # a killed replica's batch, not acknowledged yet
    floor_held_at: float | None = None
    redeliver_at: float | None = None

    def __post_init__(self) -> None:
        self.ready = self.replicas

    def scale(self, target: int) -> None:
        if target > self.replicas:
            self.starting += [self.t + self.startup] * (target - self.replicas)
        else:
            for _ in range(self.replicas - target):
                if self.starting:
                    self.starting.pop()
                else:
                    self.ready -= 1
        self.replicas = target

    def kill_one(self) -> None:
        """A ready replica is SIGKILLed with its batch in hand."""
        self.ready -= 1
        self.replicas -= 1
        self.stuck = min(self.waiting, self.batch)
        self.waiting -= self.stuck
        self.floor_held_at = self.acked
        self.redeliver_at = self.t + self.ack_wait

    def run(self, seconds: float, rate: float) -> None:
        for _ in range(round(seconds / self.dt)):
            while self.starting and self.starting[0] <= self.t + 1e-9:
                self.starting.pop(0)
                self.ready += 1
            if self.redeliver_at is not None and self.t >= self.redeliver_at:
                # Redelivered to a live replica and acknowledged: the floor is free again.
                self.acked += self.stuck
                self.stuck, self.floor_held_at, self.redeliver_at = 0.0, None, None
            self.waiting += rate * self.dt
            self.arrived += rate * self.dt
            served = min(self.waiting, self.ready * TRUE_RATE * self.dt)
            self.waiting -= served
            self.acked += served
            self.t += self.dt

    def observe(self) -> Observation:
        in_flight = min(self.waiting, self.ready * self.batch)
        floor = self.acked if self.floor_held_at is None else self.floor_held_at
        return Observation(
            taken_at=T0 + timedelta(seconds=self.t),
            replicas=self.replicas,
            metrics={
                "queue.backlog": self.waiting - in_flight,
                "queue.ack_pending": in_flight + self.stuck,
            },
            counters={"queue.stream_last_seq": self.arrived, "queue.ack_floor": floor},
        )


def test_a_killed_replica_leaves_the_estimate_and_the_count_alone() -> None:
    # 11 replicas under 500 msg/s, the rate learnt as 50.6; one replica is killed 40 s in.
    # Its batch holds the ack floor back for ack_wait (30 s); then the floor jumps past ~15,000
    # messages in one interval. Driven as the workflow drives decide (LoopState).
    service = spec()
    queue = Queue(replicas=11)
    state = LoopState(memory=PolicyMemory(per_replica_rate=TRUE_RATE), replicas=11)
    estimates, targets, rates_out, backlogs = [], [], [], []
    for check in range(60):
        if check == 10:
            queue.kill_one()
        observation = queue.observe()
        now = observation.taken_at
        proposal = decide(service, observation, state.policy_state(), now)
        assert proposal.memory is not None
        state.memory = proposal.memory
        state.note_scale(now, observation.replicas, proposal.target_replicas)
        state.last_sample = observation
        queue.scale(proposal.target_replicas)
        estimates.append(proposal.memory.per_replica_rate)
        targets.append(proposal.target_replicas)
        rates_out.append(proposal.observations.get("queue.rate_out", 0.0))
        backlogs.append(observation.metrics["queue.backlog"])
        queue.run(INTERVAL, rate=500.0)
    # The catch-up happened as in the soak: a rate_out far above what 11 replicas can do.
    assert max(rates_out) > 3 * 11 * TRUE_RATE
    # What one replica handles stays within 20% of the truth throughout ...
    for estimate in estimates:
        assert estimate == pytest.approx(TRUE_RATE, rel=0.2)
    # ... so 500 msg/s keeps the 10 replicas it needs (the dead one restored at once), and no
    # backlog builds up.
    assert min(targets[11:]) >= 10
    assert max(backlogs) < 500
