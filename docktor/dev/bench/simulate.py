"""A deterministic fluid simulation of a JetStream work queue under one controller.

Time advances in steps of DT seconds. In each step, in this order:

1. replicas whose start-up has run its course become ready;
2. when the controller's check is due, it observes the queue as it is at that moment and may
   ask for a new replica count: more replicas become ready `startup` seconds later (at once for
   a controller that is `instant`, the oracle); fewer take effect at once, and replicas that
   are still starting are the first to go (as a Kubernetes ReplicaSet deletes not-ready pods
   first, and as stopping a process that does no work yet costs nothing);
3. the step's arrivals (rate x DT) join the excess;
4. the ready replicas serve min(excess, ready x per_replica_rate x DT);
5. the messages a busy pool holds are added to the excess to give what waits (arrived, not
   yet acknowledged), below.

Messages are a fluid: counts are real numbers, not integers. The fluid alone (steps 3-4) would
serve a message the instant capacity is there, so a calm queue would hold nothing; a real one
holds, even when it keeps up:
- the messages in service: by Little's law, the rate served x the time one replica takes per
  message (served / per_replica_rate, i.e. the busy replicas' worth);
- messages fetched in replicas' batches behind the one in service, or waiting a moment for a
  replica to free up: the queue of a pool of `ready` servers at that utilisation (Erlang C,
  M/M/c), which is ~0 while most replicas idle and grows as the pool nears full use; at most
  what the pool's batches hold on average when every replica is busy, half a batch beyond the
  message in service ((BATCH - 1) / 2 each). Beyond that the fluid excess is the queue.
  Measured with the example's consumers (~48 msg/s each; benchmarks/README.md): 2.1 / 2.4
  held at 100 msg/s with 10 / 12 replicas, 3.1 with 3, 10.0 at 130 msg/s with 3, 19.2 at
  200 msg/s with 5; this model gives 2.1, 2.1, 3.2, 10.3 and 7.3.
So waiting = in service + max(excess, queued). Acknowledgements never run backwards: when the
pool's share jumps (a burst, more replicas busy), the ack floor waits instead.

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
    # What has piled up beyond what a busy pool always holds (the fluid's queue): oracle only.
    excess: float = 0.0


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
    excess: list[float] = field(default_factory=list)  # the fluid's queue (see the module doc)
    undelivered: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)  # asked for
    ready: list[int] = field(default_factory=list)
    arrived_total: list[float] = field(default_factory=list)
    served_total: list[float] = field(default_factory=list)  # acknowledged
    # (t, from, to) for every change of the replica count the controller made
    actions: list[tuple[float, int, int]] = field(default_factory=list)


def queued_in_pool(ready: int, busy: float) -> float:
    """Messages waiting behind the ones in service in a pool of `ready` replicas of which
    `busy` (a real number) are working: Erlang C's mean queue (M/M/c), at most half a batch
    beyond the message in service per replica, which is what a saturated pool's batches hold
    on average."""
    if ready <= 0:
        return 0.0
    cap = ready * (BATCH - 1) / 2
    if busy >= ready - EPS:
        return cap
    if busy <= 0:
        return 0.0
    # Erlang B by its recurrence (stable for any pool size), then Erlang C from it.
    blocked = 1.0
    for k in range(1, ready + 1):
        blocked = busy * blocked / (k + busy * blocked)
    waits = ready * blocked / (ready - busy * (1 - blocked))
    return min(cap, waits * busy / (ready - busy))


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
    excess = arrived_total = acked_total = 0.0

    for k, rate in enumerate(rates):
        t = k * dt
        while starting and starting[0] <= t + EPS:
            starting.popleft()
            ready += 1

        if k % every == 0:
            waiting = arrived_total - acked_total
            in_flight = min(waiting, ready * BATCH)
            view = QueueView(
                t=t,
                replicas=asked,
                ready=ready,
                undelivered=waiting - in_flight,
                in_flight=in_flight,
                arrived_total=arrived_total,
                acked_total=acked_total,
                arrival_rate=rate,
                per_replica_rate=per_replica_rate,
                excess=excess,
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
        excess += arrivals
        arrived_total += arrivals
        served = min(excess, ready * per_replica_rate * dt)
        excess -= served
        busy = served / (per_replica_rate * dt)
        held = busy + max(excess, queued_in_pool(ready, busy))
        acked_total = max(acked_total, arrived_total - held)
        waiting = arrived_total - acked_total

        run.t.append(t)
        run.rate.append(rate)
        run.arrived.append(arrivals)
        run.waiting.append(waiting)
        run.excess.append(excess)
        run.undelivered.append(waiting - min(waiting, ready * BATCH))
        run.replicas.append(asked)
        run.ready.append(ready)
        run.arrived_total.append(arrived_total)
        run.served_total.append(acked_total)
    return run
