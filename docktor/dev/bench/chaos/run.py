"""One chaos run, start to end: the stack, the loops and their load, a warm-up, the faults at
their planned times while the watcher samples, a calm tail, the loops stopped, and the checks.
Returns the report as a dict (report.py renders it)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.bench.chaos import verify
from docktor.dev.bench.chaos.faults import FaultRecord, Injector
from docktor.dev.bench.chaos.plan import KINDS, ChaosOptions, schedule
from docktor.dev.bench.chaos.stack import Stack, make_queues, start_stack
from docktor.dev.bench.chaos.watch import Sample, Violation, Watcher
from docktor.journal import read_journal

# Every loop decides twice before the faults begin; at most this long (plus a second a loop).
WARMUP_DEADLINE = 120.0
# A producer that added nothing for this long while its queue answered is stuck: it is
# replaced (and the report says so), so the load the checks assume is the load that runs.
PRODUCER_STALL = 15.0
STOP_TIMEOUT = 60.0


@dataclass
class Progress:
    """What the live view shows, updated at every sample."""

    phase: str = "starting"
    began: float = field(default_factory=time.time)
    chaos_began: float | None = None
    ends: float | None = None
    faults: dict[str, int] = field(default_factory=dict)
    active: list[str] = field(default_factory=list)
    violations: int = 0
    decisions: int = 0
    silent: list[str] = field(default_factory=list)  # loops past their bound right now
    last: Sample | None = None
    next_fault: str = ""


async def run_chaos(
    options: ChaosOptions,
    folder: Path,
    on_progress: Callable[[Progress], None] | None = None,
) -> dict[str, object]:
    plan = schedule(options)
    progress = Progress()

    def show(phase: str | None = None) -> None:
        if phase is not None:
            progress.phase = phase
        if on_progress is not None:
            on_progress(progress)

    show("starting the stack")
    stack = await asyncio.to_thread(start_stack, folder, options)
    watcher = Watcher(stack, {s.name: s.max_replicas for s in stack.config.services})
    injector = Injector(stack, options.seed)
    stop_watching = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    notes: list[str] = []
    intervals = {s.name: float(s.check_interval) for s in stack.config.services}
    try:
        await make_queues(stack)

        def sampled(sample: Sample) -> None:
            progress.last = sample
            progress.violations = len(watcher.violations) + len(injector.violations)
            progress.active = sorted(injector.active)
            progress.faults = _count(injector.records)
            assert watcher.journal is not None
            progress.decisions = watcher.journal.lines
            progress.silent = [
                name
                for name, at in watcher.journal.last.items()
                if sample.at - at > intervals.get(name, 5.0) + options.stuck_after
            ]
            show()

        watcher.on_sample = sampled
        tasks.append(asyncio.create_task(watcher.run(stop_watching)))
        show("starting the loops")
        await _start_loops(stack)
        for service in stack.controlled:
            stack.start_producer(service, time.time())
        await _warm_up(watcher, stack, notes)

        chaos_began = time.time()
        progress.chaos_began = chaos_began
        progress.ends = chaos_began + options.duration + options.tail()
        show("chaos")
        tasks.append(asyncio.create_task(_producer_watchdog(watcher, stack, notes)))
        faults = [
            asyncio.create_task(_at(chaos_began + f.at, injector.run(f, chaos_began + f.at)))
            for f in plan
        ]
        for index, fault in enumerate(plan):
            remaining = [f for f in plan[index:] if chaos_began + f.at > time.time()]
            progress.next_fault = remaining[0].kind if remaining else ""
            await asyncio.sleep(max(0.0, chaos_began + fault.at - time.time()))
        progress.next_fault = ""
        await asyncio.gather(*faults)
        # The calm tail counts from the last part back: faults that waited for their part
        # may end after the planned phase.
        last_back = max((r.ended for r in injector.records), default=chaos_began)
        progress.ends = max(chaos_began + options.duration, last_back) + options.tail()
        show("calm tail")
        await asyncio.sleep(max(0.0, progress.ends - time.time()))
        run_until = time.time()

        show("stopping the loops")
        client = await connect(stack.config)
        await _stop_loops(client, stack, notes)
        stop_watching.set()
        show("reading every loop's history")
        workflow_ids = {s: stack.config.workflow_id(s) for s in stack.config.service_names()}
        history = await verify.read_history(client, workflow_ids)
        lines, unreadable = await asyncio.to_thread(read_journal, stack.journal)
        show("checking")
        journal = verify.check_journal(history, lines, injector.records)
        liveness = verify.check_liveness(history, injector.records, intervals, options, run_until)
        missing = verify.check_missing_data(history, stack.controlled)
        settling = verify.check_settling(
            watcher.samples,
            injector.records,
            stack.controlled,
            stack.producer_started,
            options,
        )
        violations = (
            watcher.violations
            + injector.violations
            + journal.violations
            + liveness.violations
            + missing
            + settling.violations
        )
        return _report(
            options,
            stack,
            plan_kinds=[f.kind for f in plan],
            chaos_began=chaos_began,
            run_until=run_until,
            records=injector.records,
            violations=violations,
            history=history,
            journal=journal,
            unreadable=unreadable,
            liveness=liveness,
            settling=settling,
            samples=watcher.samples,
            notes=notes + history.notes,
        )
    finally:
        stop_watching.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await stack.stop_replicas()
        await asyncio.to_thread(stack.close)


async def _at(when: float, action: object) -> None:
    await asyncio.sleep(max(0.0, when - time.time()))
    await action  # type: ignore[misc]


def _count(records: list[FaultRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.kind] = counts.get(record.kind, 0) + 1
    return counts


async def _start_loops(stack: Stack) -> None:
    """`python -m starter --all`, as an operator starts them."""
    env = {"PYTHONPATH": str(stack.options.code)}
    process = await asyncio.create_subprocess_exec(
        stack.options.python,
        "-m",
        "starter",
        "--config",
        str(stack.config_path),
        "--all",
        cwd=stack.options.code,
        env={**_environ(), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"starter failed ({process.returncode}): {output.decode()[-2000:]}")


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}


async def _warm_up(watcher: Watcher, stack: Stack, notes: list[str]) -> None:
    """Until every loop has decided twice (counted in the log)."""
    names = set(stack.config.service_names())
    deadline = time.monotonic() + WARMUP_DEADLINE + len(names)
    counts: dict[str, int] = {}
    seen = 0
    while time.monotonic() < deadline:
        journal = watcher.journal
        if journal is not None and journal.lines != seen:
            seen = journal.lines
            counts = await asyncio.to_thread(_per_service, stack)
            if all(counts.get(name, 0) >= 2 for name in names):
                return
        await asyncio.sleep(1.0)
    short = sorted(n for n in names if counts.get(n, 0) < 2)
    notes.append(f"warm-up: {len(short)} loops had not decided twice: {short[:10]}")


def _per_service(stack: Stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for decision in read_journal(stack.journal)[0]:
        counts[decision.service] = counts.get(decision.service, 0) + 1
    return counts


async def _producer_watchdog(watcher: Watcher, stack: Stack, notes: list[str]) -> None:
    """Replace a producer that exited or stopped adding while its queue answered, and say so:
    the checks assume its load is there."""
    last_growth: dict[str, tuple[int, float]] = {}
    while True:
        await asyncio.sleep(2.0)
        if not watcher.samples:
            continue
        sample = watcher.samples[-1]
        for service in stack.controlled:
            producer = stack.producers.get(service.name)
            queue = sample.queues.get(service.name)
            now = time.time()
            reason = ""
            if producer is None or not producer.running:
                code = producer.process.returncode if producer is not None else None
                reason = f"exited ({code}): {producer.log_tail(2) if producer else ''}"
            elif queue is not None and queue.produced is not None:
                produced, since = last_growth.get(service.name, (-1, now))
                if queue.produced != produced:
                    last_growth[service.name] = (queue.produced, now)
                elif now - since > PRODUCER_STALL:
                    reason = f"added nothing for {now - since:.0f}s while its queue answered"
            if reason and queue is not None and queue.backlog is None:
                continue  # its server is away: replaced once it is back
            if reason:
                notes.append(f"{verify.when(now)} producer for {service.name} {reason}; replaced")
                await asyncio.to_thread(stack.kill_producer, service.name)
                began = stack.producer_started.get(service.name, now)
                stack.start_producer(service, began)  # the same schedule: bursts stay in place
                last_growth.pop(service.name, None)


async def _stop_loops(client: object, stack: Stack, notes: list[str]) -> None:
    loops = LoopClient(client, stack.config)  # type: ignore[arg-type]
    gate = asyncio.Semaphore(8)

    async def stop(name: str) -> None:
        async with gate:
            try:
                await loops.stop(name, timeout=STOP_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - reported, the checks still run
                notes.append(f"stopping {name}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(stop(name) for name in stack.config.service_names()))


def _worker_log_counts(folder: Path) -> dict[str, int]:
    patterns = {
        "tracebacks": "Traceback",
        "slow_workflow_tasks": "took longer than",
        "journal_gaps_reported": "not written from decision",
        "journal_reopened": "writable again; decisions",
    }
    counts = dict.fromkeys(patterns, 0)
    for log in folder.glob("worker-*.log"):
        text = log.read_text(errors="replace")
        for name, pattern in patterns.items():
            counts[name] += text.count(pattern)
    return counts


def _report(
    options: ChaosOptions,
    stack: Stack,
    *,
    plan_kinds: list[str],
    chaos_began: float,
    run_until: float,
    records: list[FaultRecord],
    violations: list[Violation],
    history: verify.History,
    journal: verify.JournalCheck,
    unreadable: int,
    liveness: verify.Liveness,
    settling: verify.Settling,
    samples: list[Sample],
    notes: list[str],
) -> dict[str, object]:
    by_invariant: dict[str, int] = {}
    for violation in violations:
        by_invariant[violation.invariant] = by_invariant.get(violation.invariant, 0) + 1
    faults_by_kind = {kind: 0 for kind in KINDS} | _count(records)
    git = subprocess.run(
        ["git", "-C", str(options.code), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "code": git.stdout.strip(),
        "options": {
            "loops": options.loops,
            "duration": options.duration,
            "seed": options.seed,
            "fault_every": options.fault_every,
            "fault_scale": options.fault_scale,
            "idle_interval": options.idle_interval,
            "controlled_interval": options.controlled_interval,
            "stuck_after": options.stuck_after,
            "settle_bound": options.settle_bound(),
            "load": vars(options.load),
            "workers": options.workers,
            "journal_on_its_own_disk": stack.journal_disk is not None,
        },
        "chaos_began": round(chaos_began, 3),
        "ran_until": round(run_until, 3),
        "faults_planned": len(plan_kinds),
        "faults_by_kind": faults_by_kind,
        "violations_total": len(violations),
        "violations_by_invariant": by_invariant,
        "violations": [
            {
                "invariant": v.invariant,
                "at": round(v.at, 3),
                "service": v.service,
                "detail": v.detail,
            }
            for v in sorted(violations, key=lambda v: v.at)
        ],
        "decisions": {
            "in_history": history.count(),
            "log_lines": journal.lines,
            "log_lines_unreadable": unreadable,
            "log_lines_matching_history": journal.matched,
            "log_mismatches": journal.mismatches,
        },
        "longest_silence_across_fault": liveness.longest_silence,
        "first_decision_after_restore": liveness.first_after_restore,
        "back_to_needed_count_after_fault": settling.seconds,
        "worker_logs": _worker_log_counts(stack.folder),
        "notes": notes,
        "faults": [r.as_dict() for r in sorted(records, key=lambda r: r.started)],
        "samples": [
            {
                "at": round(s.at, 2),
                "replicas": {c.name: s.replicas.get(c.name, 0) for c in stack.controlled},
                "backlog": {name: q.backlog for name, q in s.queues.items()},
            }
            for s in samples
        ],
        "decision_times": {
            service: [round(d.timestamp.timestamp(), 2) for d in decisions]
            for service, decisions in history.decisions.items()
            if service in {c.name for c in stack.controlled}
        },
        "all_decision_times": sorted(
            round(d.timestamp.timestamp(), 1)
            for decisions in history.decisions.values()
            for d in decisions
        ),
    }
