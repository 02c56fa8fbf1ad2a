"""A deterministic fluid simulation of a JetStream work queue under one controller.

Time advances in steps of DT seconds. In each step, in this order:

1. replicas whose start-up has run its course become ready;
2. when the controller's check is due, it observes the queue as it is at that moment and may
   ask for a new replica count: more replicas become ready `startup` seconds later (at once for
   a controller that is `instant`, the oracle); fewer take effect at once, and replicas that
   are still starting are the first to go (as a Kubernetes ReplicaSet deletes not-ready pods
   first, and as stopping a process that does no work yet costs nothing);
3. the step's arrivals (rate x DT) join the waiting messages;
4. the ready replicas serve min(waiting, ready x per_replica_rate x DT).

Messages are a fluid: counts are real numbers, not integers.

In flight (`queue.ack_pending`): each ready replica pulls a batch of up to BATCH messages and
holds it while it works (as examples/nats-multi/consumer.py fetches 10 at a time), so
in flight = min(waiting, ready x BATCH) and undelivered (`queue.backlog`, JetStream's
num_pending) = waiting - in flight. A scale-down hands the stopped replicas' batches back,
which this model gets for free because in flight is derived, not stored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

DT = 0.1
BATCH = 10
# Floating-point slack when comparing step times with ready times.
EPS = 1e-9


@dataclass(frozen=True)
class QueueView:
    """What a controller sees at a check. `arrival_rate` is the true current arrival rate:
    only the oracle may use it; the others see the counters, as they would live."""

    t: float
    replicas: int  # asked for, including the ones still starting, as the backends count them
    ready: int
    undelivered: float
    in_flight: float
    arrived_total: float  # the stream's last sequence
    acked_total: float  # the consumer's ack floor
    arrival_rate: float
    per_replica_rate: float


class Controller(Protocol):
    """A policy under test: asked every `interval` seconds from t = 0 for a replica count."""

    name: str
    interval: float
    instant: bool

    def check(self, view: QueueView) -> int | None:
        """The replica count wanted now, or None to leave it as it is."""
        ...


@dataclass
class Run:
    """One controller's run through one scenario, sampled every step (after the step)."""

    policy: str
    dt: float
    per_replica_rate: float
    t: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # this step's arrivals
    waiting: list[float] = field(default_factory=list)  # arrived, not yet acknowledged
    undelivered: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)  # asked for
    ready: list[int] = field(default_factory=list)
    arrived_total: list[float] = field(default_factory=list)
    served_total: list[float] = field(default_factory=list)
    # (t, from, to) for every change of the replica count the controller made
    actions: list[tuple[float, int, int]] = field(default_factory=list)


def simulate(
    controller: Controller,
    rates: list[float],
    per_replica_rate: float,
    startup: float,
    initial_replicas: int,
    dt: float = DT,
) -> Run:
    run = Run(policy=controller.name, dt=dt, per_replica_rate=per_replica_rate)
    every = max(1, round(controller.interval / dt))
    asked = ready = initial_replicas
    starting: deque[float] = deque()  # ready times of replicas still starting, oldest first
    waiting = arrived_total = served_total = 0.0

    for k, rate in enumerate(rates):
        t = k * dt
        while starting and starting[0] <= t + EPS:
            starting.popleft()
            ready += 1

        if k % every == 0:
            in_flight = min(waiting, ready * BATCH)
            view = QueueView(
                t=t,
                replicas=asked,
                ready=ready,
                undelivered=waiting - in_flight,
                in_flight=in_flight,
                arrived_total=arrived_total,
                acked_total=served_total,
                arrival_rate=rate,
                per_replica_rate=per_replica_rate,
            )
            target = controller.check(view)
            if target is not None and target != asked:
                run.actions.append((t, asked, target))
                if target > asked:
                    if controller.instant or startup <= 0:
                        ready += target - asked
                    else:
                        starting.extend([t + startup] * (target - asked))
                else:
                    for _ in range(asked - target):
                        if starting:
                            starting.pop()  # the newest starting replica goes first
                        else:
                            ready -= 1
                asked = target

        arrivals = rate * dt
        waiting += arrivals
        arrived_total += arrivals
        served = min(waiting, ready * per_replica_rate * dt)
        waiting -= served
        served_total += served

        run.t.append(t)
        run.rate.append(rate)
        run.arrived.append(arrivals)
        run.waiting.append(waiting)
        run.undelivered.append(waiting - min(waiting, ready * BATCH))
        run.replicas.append(asked)
        run.ready.append(ready)
        run.arrived_total.append(arrived_total)
        run.served_total.append(served_total)
    return run
