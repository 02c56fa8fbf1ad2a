"""`docktor bench live`: the simulator checked against the real thing.

The example's bursts run for real on the embedded stack (Temporal, NATS JetStream, the worker
and the processes backend, everything `docktor demo` starts) for a while, and the same
figures the simulation reports are measured from NATS twice a second: backlog·s (messages
arrived and not yet acknowledged, integrated), peak backlog, replica·s (replica processes,
integrated) and scaling actions (from the decision log). Then the simulation runs the same
service, the same load and the per-replica rate measured live, and both are printed side by
side. A large disagreement is a bug in one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from docktor import names
from docktor.dev.bench.driver import DocktorController
from docktor.dev.bench.metrics import measure
from docktor.dev.bench.scenario import Scenario
from docktor.dev.bench.simulate import DT, simulate
from docktor.dev.demo.stack import Demo, producer_script
from docktor.dev.embedded import spawn
from docktor.plan import ServicePlan
from docktor.spec import ConfigError, DocktorConfig, ServiceSpec
from docktor.values import Decision

if TYPE_CHECKING:
    from temporalio.client import Client

SAMPLE_EVERY = 0.5
# Live and simulated backlog·s, replica·s and actions should agree within this fraction.
AGREEMENT = 0.25
# The figures the verdict judges (peak backlog is shown, not judged: one sample decides it).
JUDGED = {"backlog_s": "backlog·s", "replica_s": "replica·s", "actions": "actions"}
# A window of consecutive samples over which the per-replica rate is measured: long enough
# for the ack floor's steps to average out.
RATE_WINDOW = 4.0
# What one example replica does, when the run never saturated the pool to measure it.
FALLBACK_PER_REPLICA = 48.0
FALLBACK_STARTUP = 1.0
REPORT_EVERY = 15.0
# What a replica's log shows when it is started (docktor's processes backend) and when it
# starts fetching (the example's consumer.py).
START_MARK = "--- docktor: starting replica"
READY_MARK = "pulling from"


@dataclass
class Sample:
    t: float  # seconds since the producer started
    waiting: float  # arrived, not yet acknowledged (num_pending + num_ack_pending)
    acked: float  # the consumer's ack floor (stream sequence)
    replicas: int


@dataclass
class Figures:
    backlog_s: float
    peak_backlog: float
    replica_s: float
    actions: int


@dataclass
class LiveResult:
    service: str
    duration: float
    per_replica_rate: float
    startup: float
    check_phase: float
    load: dict[str, float]
    live: Figures
    simulated: Figures
    differences: dict[str, float | None] = field(default_factory=dict)
    agree: bool = False


def live_figures(samples: list[Sample], actions: int) -> Figures:
    """Integrals over the samples (each held until the next: the same rectangle rule as the
    simulation's steps)."""
    backlog_s = replica_s = 0.0
    for now, after in zip(samples, samples[1:], strict=False):
        span = after.t - now.t
        backlog_s += now.waiting * span
        replica_s += now.replicas * span
    peak = max((s.waiting for s in samples), default=0.0)
    return Figures(backlog_s, peak, replica_s, actions)


def measured_per_replica(samples: list[Sample]) -> float | None:
    """Median acknowledged msg/s per replica over windows where every replica was busy (work
    waiting throughout) and the count did not change: what one replica really does."""
    rates: list[float] = []
    start = 0
    for end in range(1, len(samples)):
        window = samples[start : end + 1]
        if samples[end].t - samples[start].t < RATE_WINDOW:
            continue
        busy = all(s.waiting > 2 * s.replicas * 10 for s in window)  # beyond fetched batches
        steady = len({s.replicas for s in window}) == 1 and window[0].replicas > 0
        span = window[-1].t - window[0].t
        if busy and steady and span > 0:
            rates.append((window[-1].acked - window[0].acked) / span / window[0].replicas)
        start = end
    return statistics.median(rates) if rates else None


def check_phase(stamps: list[float], interval: float) -> float:
    """Where in each check interval the loop decided, in seconds after the producer started
    (the median over its decisions, whose timestamps drift by the iteration's own time)."""
    phases = [stamp % interval for stamp in stamps if stamp >= 0]
    if not phases:
        return 0.0
    # Circular data: measure from the first phase so a median near 0/interval does not split.
    first = phases[0]
    offsets = sorted((p - first) % interval for p in phases)
    offsets = [o if o <= interval / 2 else o - interval for o in offsets]
    return (first + statistics.median(offsets)) % interval


def difference(live: float, simulated: float) -> float | None:
    """Relative difference of the simulation from the live figure."""
    if live == 0:
        return None if simulated == 0 else float("inf")
    return (simulated - live) / live


def control_actions(decisions: list[Decision], min_replicas: int) -> int:
    """Scaling actions the loop took on the load: not the first decisions that bring a
    service started with fewer than min_replicas up to them, which the simulation begins
    with (its initial count is at least min_replicas)."""
    return sum(
        d.action in ("scale_up", "scale_down") and d.current_replicas >= min_replicas
        for d in decisions
    )


def disagreements(differences: dict[str, float | None]) -> list[str]:
    """The judged figures whose simulation is off by more than AGREEMENT (or cannot be
    compared: one side 0, the other not); none means the two agree."""
    off = []
    for name, label in JUDGED.items():
        if name not in differences:
            off.append(label)
            continue
        diff = differences[name]
        # None: both 0 (a run with no scaling action, simulated as none), which agrees.
        if diff is not None and abs(diff) > AGREEMENT:
            off.append(label)
    return off


def simulated_figures(
    spec: ServiceSpec,
    load: dict[str, float],
    duration: float,
    per_replica: float,
    startup: float,
    initial: int,
    phase: float = 0.0,
) -> Figures:
    """The simulation checks at t = 0, interval, ...; the live loop at phase + k x interval.
    Shifting the load by -phase puts the bursts where the live loop met them."""
    every, seconds = load["burst_every"], load["burst_seconds"]
    burst_start = (every - seconds - phase) % every

    def rate_at(t: float) -> float:
        in_burst = (t - burst_start) % every < seconds
        return load["burst_rate"] if in_burst else load["rate"]

    points: list[tuple[float, float]] = []
    for moment in sorted({0.0, burst_start, (burst_start + seconds) % every}):
        if not points or points[-1][1] != rate_at(moment):
            points.append((moment, rate_at(moment)))
    scenario = Scenario(
        name="live-check",
        duration=duration,
        per_replica_rate=per_replica,
        startup=startup,
        initial_replicas=min(max(initial, spec.min_replicas), spec.max_replicas),
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        points=points,
        shape="step",
        repeat_every=every,
    )
    controller = DocktorController(f"config:{spec.name}", ServicePlan.from_spec(spec))
    run = simulate(
        controller,
        scenario.rates(DT),
        per_replica_rate=per_replica,
        startup=startup,
        initial_replicas=scenario.initial_replicas,
    )
    metrics = measure(run, scenario.base_rates(DT))
    return Figures(metrics.backlog_s, metrics.peak_backlog, metrics.replica_s, metrics.actions)


class LiveBench(Demo):
    """The demo's stack and clean-up, with the producer at the example's own schedule, one
    service, and a measurement instead of the live view."""

    title = "docktor bench live"

    def __init__(self, args: argparse.Namespace, config_path: Path, config: DocktorConfig) -> None:
        super().__init__(args, config_path, config)
        self.spec = pick_service(config, args.service)
        config.services = [self.spec]
        self.load = {
            "rate": args.rate,
            "burst_rate": args.burst_rate,
            "burst_seconds": args.burst_seconds,
            "burst_every": args.burst_every,
        }
        self.samples: list[Sample] = []
        self.producer_started: float | None = None
        self.producer_started_wall = 0.0
        self.log_offsets: dict[Path, int] = {}
        self.starting: dict[Path, float] = {}
        self.startups: list[float] = []
        self.result: LiveResult | None = None

    def start_producer(self) -> None:
        assert self.nats is not None  # cmd_bench_live accepts only a NATS queue
        args = [sys.executable, str(producer_script(self.config_path)), "--url", self.nats.url]
        args += ["--rate", str(self.load["rate"]), "--burst-rate", str(self.load["burst_rate"])]
        args += ["--burst-seconds", str(self.load["burst_seconds"])]
        args += ["--burst-every", str(self.load["burst_every"])]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.producer = spawn(
            "producer", args, self.state_dir / "producer.log", self.state_dir, env
        )
        # The producer's schedule starts when it has connected, a moment after this; the
        # samples are timed from here.
        self.producer_started = time.monotonic()
        self.producer_started_wall = time.time()
        self.say(f"producer  pid {self.producer.pid}   load {self.load}")

    def measured_plan(self) -> ServicePlan:
        """The service as the worker runs it: from the demo's config file, which points it at
        the stack's own servers and state folder (read once the stack has started). The file
        the bench was given names the example's defaults: counting replicas there found none,
        and its NATS URL only worked when the default port happened to be free."""
        return ServicePlan.from_spec(self.config.service(self.spec.name))

    async def watch(self, client: Client) -> None:
        from docktor.backends.processes import ProcessScaler
        from docktor.sources.nats import NatsMetricSource

        assert self.producer_started is not None
        source = NatsMetricSource()
        plan = self.measured_plan()
        scaler = ProcessScaler(plan, names.project_name(self.config.project))
        end = self.producer_started + self.duration
        next_report = self.producer_started + REPORT_EVERY
        self.say(f"measuring for {self.duration:g}s (Ctrl-C stops early)")
        try:
            while not self.stop.is_set() and time.monotonic() < end:
                await self._sample(source, scaler, plan)
                if time.monotonic() >= next_report and self.samples:
                    last = self.samples[-1]
                    self.say(
                        f"  {last.t:5.0f}s  replicas {last.replicas:2d}  "
                        f"backlog {last.waiting:6.0f}"
                    )
                    next_report += REPORT_EVERY
                if self.worker is not None and not self.worker.running:
                    self.failure = f"the worker exited; log: {self.worker.log_path}"
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=SAMPLE_EVERY)
        finally:
            await source.close()

    def _watch_startups(self) -> None:
        """Time each replica from its start (docktor's `--- docktor: starting replica` line in
        its log) to its first fetch (the example consumer's `pulling from` line), to the
        sampling period: the simulation's `startup`, measured instead of assumed."""
        folder = Path(self.spec.state_dir or "")
        now = time.monotonic()
        for log in folder.glob("replica-*.log"):
            offset = self.log_offsets.get(log, 0)
            try:
                with log.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self.log_offsets[log] = offset + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                if line.startswith(START_MARK):
                    self.starting[log] = now
                elif READY_MARK in line and log in self.starting:
                    self.startups.append(now - self.starting.pop(log))

    async def _sample(self, source: object, scaler: object, plan: ServicePlan) -> None:
        assert self.producer_started is not None
        self._watch_startups()
        try:
            gauges, counters = await source.sample(plan)  # type: ignore[attr-defined]
            replicas = await scaler.replicas()  # type: ignore[attr-defined]
        except Exception:  # the stream is created by the first consumer; not there yet
            return
        self.samples.append(
            Sample(
                t=time.monotonic() - self.producer_started,
                waiting=gauges.get("queue.backlog", 0.0) + gauges.get("queue.ack_pending", 0.0),
                acked=counters.get("queue.ack_floor", 0.0),
                replicas=replicas,
            )
        )

    def summary(self) -> None:
        self.journal.read_new()
        if len(self.samples) < 2:
            self.complain("error: no measurements were taken")
            self.failure = self.failure or "no measurements were taken"
            return
        decisions = [d for d in self.journal.decisions if d.service == self.spec.name]
        actions = control_actions(decisions, self.spec.min_replicas)
        duration = self.samples[-1].t
        live = live_figures(self.samples, actions)
        per_replica = self.args.per_replica_rate or measured_per_replica(self.samples)
        per_replica = per_replica or FALLBACK_PER_REPLICA
        initial = self.samples[0].replicas
        # Where the loop's checks fall relative to the bursts decides much of the backlog (a
        # burst seen 1 s or 4 s after it starts): the simulation checks at the same phase.
        stamps = [d.timestamp.timestamp() - self.producer_started_wall for d in decisions]
        phase = check_phase(stamps, self.spec.check_interval)
        startup = self.args.startup
        if startup is None:
            startup = statistics.median(self.startups) if self.startups else FALLBACK_STARTUP
        simulated = simulated_figures(
            self.spec, self.load, duration, per_replica, startup, initial, phase
        )
        diffs = {
            "backlog_s": difference(live.backlog_s, simulated.backlog_s),
            "peak_backlog": difference(live.peak_backlog, simulated.peak_backlog),
            "replica_s": difference(live.replica_s, simulated.replica_s),
            "actions": difference(live.actions, simulated.actions),
        }
        agree = not disagreements(diffs)
        self.result = LiveResult(
            service=self.spec.name,
            duration=round(duration, 1),
            per_replica_rate=round(per_replica, 2),
            startup=round(startup, 2),
            check_phase=round(phase, 2),
            load=self.load,
            live=live,
            simulated=simulated,
            differences=diffs,
            agree=agree,
        )
        print_result(self.result, Console())
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(asdict(self.result), indent=2) + "\n")
            self.say(f"JSON: {self.args.json}")
        self.say(f"decisions {self.journal.path}; logs in {self.state_dir}")


def print_result(result: LiveResult, console: Console) -> None:
    table = Table(
        title=f"{result.service}: live vs simulated, {result.duration:.0f} s, "
        f"{result.per_replica_rate:g} msg/s per replica, startup {result.startup:g} s, "
        f"checks at {result.check_phase:g} s + k x interval"
    )
    for column in ("figure", "live", "simulated", "difference"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name, label in (
        ("backlog_s", "backlog·s"),
        ("peak_backlog", "peak backlog"),
        ("replica_s", "replica·s"),
        ("actions", "scaling actions"),
    ):
        diff = result.differences[name]
        shown = "-" if diff is None else ("∞" if diff == float("inf") else f"{diff:+.0%}")
        table.add_row(
            label,
            f"{getattr(result.live, name):,.0f}",
            f"{getattr(result.simulated, name):,.0f}",
            shown,
        )
    console.print(table)
    off = disagreements(result.differences)
    console.print(
        f"DISAGREE: {', '.join(off)} differ by more than {AGREEMENT:.0%}"
        if off
        else f"agree: {', '.join(JUDGED.values())} within ±{AGREEMENT:.0%}"
    )


def pick_service(config: DocktorConfig, name: str | None) -> ServiceSpec:
    if name is None:
        return config.services[0]
    try:
        return config.service(name)
    except KeyError:
        known = ", ".join(config.service_names())
        raise ConfigError(
            [f"--service: no service '{name}' in the config (it has: {known})"]
        ) from None
