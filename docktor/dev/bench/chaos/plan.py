"""What a chaos run does, decided before it starts: the services and their load, the faults and
their times. Pure: one seed gives the same plan, so a run that found something can be repeated."""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[4]
EXAMPLES = REPO / "examples"

FaultKind = Literal[
    "worker_kill",
    "workers_down",
    "temporal_restart",
    "nats_restart",
    "redis_restart",
    "replica_kill",
    "journal_unwritable",
    "controls",
]
KINDS: tuple[FaultKind, ...] = (
    "worker_kill",
    "workers_down",
    "temporal_restart",
    "nats_restart",
    "redis_restart",
    "replica_kill",
    "journal_unwritable",
    "controls",
)
# How long each fault keeps its part down (seconds, before `fault_scale`). Long enough to span
# several iterations; NATS long enough that a loop reaches its fallback.
DOWN_FOR: dict[FaultKind, tuple[float, float]] = {
    "worker_kill": (2.0, 8.0),
    "workers_down": (5.0, 20.0),
    "temporal_restart": (0.0, 5.0),
    "nats_restart": (10.0, 30.0),
    "redis_restart": (5.0, 20.0),
    "replica_kill": (0.0, 0.0),
    "journal_unwritable": (10.0, 40.0),
    "controls": (0.0, 0.0),  # as long as the fault it lands in
}
# The part each fault breaks: two faults of one part never overlap (the later one waits).
RESOURCE: dict[FaultKind, str] = {
    "worker_kill": "workers",
    "workers_down": "workers",
    "temporal_restart": "temporal",
    "nats_restart": "nats",
    "redis_restart": "redis",
    "replica_kill": "replicas",
    "journal_unwritable": "journal",
    "controls": "operator",
}
# The faults an operator's scale/pause/resume arrives in the middle of.
CONTROL_COMPANIONS: tuple[FaultKind, ...] = (
    "worker_kill",
    "workers_down",
    "temporal_restart",
    "nats_restart",
)


# The idle services' bounds: one replica each, two at most (an operator may scale to 2).
IDLE_MIN, IDLE_MAX = 1, 2


@dataclass(frozen=True)
class Load:
    """One example producer's schedule (examples/nats-multi/producer.py): `rate` msg/s, `burst`
    msg/s for the last `burst_seconds` of every `burst_every`."""

    rate: float
    burst: float
    burst_seconds: float
    burst_every: float

    def rate_at(self, elapsed: float) -> float:
        if self.burst_every <= 0 or elapsed < 0:
            return self.rate
        in_burst = elapsed % self.burst_every >= self.burst_every - self.burst_seconds
        return self.burst if in_burst else self.rate

    def args(self) -> list[str]:
        return [
            "--rate",
            f"{self.rate:g}",
            "--burst-rate",
            f"{self.burst:g}",
            "--burst-seconds",
            f"{self.burst_seconds:g}",
            "--burst-every",
            f"{self.burst_every:g}",
        ]


@dataclass(frozen=True)
class Controlled:
    """A service with real example consumers fed by an example producer."""

    name: str
    queue: Literal["nats", "redis"]
    min_replicas: int
    max_replicas: int
    check_interval: float
    down_window: float
    # Messages one replica handles per second (consumer.py at WORK_MS 20 does ~48).
    per_replica: float
    work_ms: int = 20

    def need(self, rate: float) -> int:
        """The replicas `rate` needs, within the bounds."""
        wanted = math.ceil(rate / self.per_replica) if rate > 0 else 0
        return max(self.min_replicas, min(self.max_replicas, wanted))


@dataclass(frozen=True)
class PlannedFault:
    at: float  # seconds after the chaos phase begins
    kind: FaultKind
    down_for: float
    # replica_kill: which service; controls: which service the operator addresses.
    target: str = ""
    # controls: the fault it arrives in the middle of, and the count the operator sets.
    companion: FaultKind | None = None
    companion_down_for: float = 0.0
    replicas: int = 0


@dataclass
class ChaosOptions:
    loops: int = 50
    duration: float = 1800.0  # the chaos phase, seconds
    seed: int = 1
    # Mean time between two fault starts; each kind comes once first, in a seeded order.
    fault_every: float = 60.0
    fault_scale: float = 1.0  # multiplies every DOWN_FOR
    idle_interval: float = 5.0
    controlled_interval: float = 2.0
    down_window: float = 20.0
    load: Load = field(default_factory=lambda: Load(60.0, 200.0, 10.0, 60.0))
    # A loop that has not decided this long after a fault ended is stuck.
    stuck_after: float = 60.0
    # A controlled service not back to what its load needs this long after a fault is a
    # violation (it gets the scale-down window and a burst on top: settle_bound()).
    settle_after: float = 60.0
    # Faults end this long before the run does, so the last one can be recovered from.
    calm_tail: float | None = None
    workers: int = 2
    python: str = sys.executable
    code: Path = REPO

    def settle_bound(self) -> float:
        return self.settle_after + self.down_window + self.load.burst_seconds

    def tail(self) -> float:
        if self.calm_tail is not None:
            return self.calm_tail
        return max(self.stuck_after, self.settle_bound())


def controlled_services(options: ChaosOptions) -> list[Controlled]:
    """One NATS and one Redis service when there are loops enough for them (two at least)."""
    services = []
    kinds: list[Literal["nats", "redis"]] = ["nats", "redis"]
    for queue in kinds[: min(2, options.loops)]:
        services.append(
            Controlled(
                name=f"{queue}-consumer",
                queue=queue,
                min_replicas=1,
                max_replicas=6,
                check_interval=options.controlled_interval,
                down_window=options.down_window,
                per_replica=45.0,
            )
        )
    return services


def idle_names(options: ChaosOptions) -> list[str]:
    return [f"idle-{n:03d}" for n in range(max(0, options.loops - 2))]


def schedule(options: ChaosOptions) -> list[PlannedFault]:
    """Fault times over the chaos phase: every kind once first (in a seeded order), then kinds
    at random; evenly spaced with a seeded jitter, so gaps vary and faults overlap at times."""
    rng = random.Random(options.seed)
    count = max(len(KINDS), round(options.duration / options.fault_every))
    gap = options.duration / count
    kinds: list[FaultKind] = list(KINDS)
    rng.shuffle(kinds)
    kinds += [rng.choice(KINDS) for _ in range(count - len(KINDS))]
    bounds = {c.name: c.max_replicas for c in controlled_services(options)}
    bounds |= dict.fromkeys(idle_names(options)[:3], IDLE_MAX)
    targets = sorted(bounds)
    faults = []
    for index, kind in enumerate(kinds):
        at = max(0.0, (index + rng.uniform(0.1, 0.9)) * gap)
        low, high = DOWN_FOR[kind]
        down_for = rng.uniform(low, high) * options.fault_scale
        fault = PlannedFault(at=at, kind=kind, down_for=down_for)
        if kind == "replica_kill":
            fault = PlannedFault(at, kind, 0.0, target=rng.choice(targets))
        elif kind == "controls":
            companion = rng.choice(CONTROL_COMPANIONS)
            low, high = DOWN_FOR[companion]
            target = rng.choice(targets)
            fault = PlannedFault(
                at,
                kind,
                0.0,
                target=target,
                companion=companion,
                companion_down_for=max(3.0, rng.uniform(low, high) * options.fault_scale),
                replicas=min(bounds[target], rng.choice([2, 3, 4])),
            )
        faults.append(fault)
    return faults
