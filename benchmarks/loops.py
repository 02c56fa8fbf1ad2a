"""What N scaling loops cost on one worker and the embedded dev server.

For each N: a fresh embedded Temporal (SQLite), `--workers` `python -m worker` processes (one
by default) on the same task queue, N services of
the processes backend that hold at 0 replicas (no metrics: observe only counts pid files), and
`python -m starter --all`. Then, over a measurement window:

- lateness: how much later than `--interval` after its previous decision each decision came
  (from the decision log), p50 and p99 over every loop; and where the time went, from a
  sample of loops' histories: the timer firing late (the server), the task waiting for a
  worker, the worker running it (p99 of each);
- history events and bytes per hold iteration (a sample of loops), and per scale iteration (one
  loop is given min_replicas 1, so it scales 0 -> 1 once);
- worker CPU (% of one core) and memory per loop, Temporal server CPU;
- the workers are then killed (SIGKILL) and new ones started: the time until every loop has
  recorded a decision again.

    .venv/bin/python benchmarks/loops.py --loops 10 100 300 --interval 5 --measure 60

A benchmark, not a test: it reports and asserts nothing. `--code DIR [DIR ...]` runs the worker
and starter of each checkout (e.g. the release before, then this one) against the same harness,
one after the other for each N, in one table: before and after side by side. `--sqlite-default`
starts the dev server without docktor's SQLite pragmas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from docktor.backends.processes import ProcessScaler
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal, start_temporal
from docktor.journal import journal_files
from docktor.loop.messages import LoopStatus, SpecUpdate
from docktor.plan import LLMPlan, ServicePlan
from docktor.spec import DocktorConfig, load_config

REPO = Path(__file__).resolve().parents[1]
IDLE = [sys.executable, "-c", "import time; time.sleep(600)"]
TICKS = os.sysconf("SC_CLK_TCK")
HISTORY_SAMPLE = 10  # loops whose histories are read for the events per iteration
PARTS_SAMPLE = 50  # loops whose iterations in the window are split into where the time went


@dataclass
class Result:
    loops: int
    interval: float
    workers: int = 1
    code: str = ""
    start_seconds: float = 0.0
    lateness_p50: float | None = None
    lateness_p99: float | None = None
    decisions: int = 0
    # Where a late iteration's time went, p99 over a sample of loops' iterations in the window
    # (their histories): the timer firing after its due time (the server), the task waiting to
    # be picked up by a worker, and the worker running it (the look's local activity included).
    timer_lag_p99: float | None = None
    task_wait_p99: float | None = None
    task_run_p99: float | None = None
    hold_events: float | None = None
    hold_bytes: float | None = None
    scale_events: float | None = None
    scale_bytes: float | None = None
    worker_cpu: float = 0.0  # % of one core over the window, all workers together
    worker_rss_mb: float = 0.0
    server_cpu: float = 0.0
    # CPU per loop iteration (every decision made in the window), in ms of one core.
    iterations: int = 0
    worker_ms: float | None = None
    server_ms: float | None = None
    resumed: int = 0
    resume_seconds: float | None = None  # until every loop decided again; None: not all did
    resume_p50: float | None = None
    notes: list[str] = field(default_factory=list)


# ---- processes -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def spawn(code: Path, module: str, config: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(code), "DOCKTOR_LOG_LEVEL": "WARNING"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, "--config", str(config), *extra],
            cwd=code,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# ---- the decision log ----------------------------------------------------------------------


@dataclass
class DecisionLog:
    """The decision log's lines, read as they come: each file by its inode from where the last
    read stopped, so a rotation (a rename) is followed and no byte is parsed twice. At 200
    decisions a second the log is cut every ~50 s; reading only the current file would see
    only what came after the last cut, and reading every part whole at each poll cost the
    benchmark a core of its own beside what it measures."""

    journal: Path
    offsets: dict[int, int] = field(default_factory=dict)
    found: dict[object, tuple[str, datetime, str]] = field(default_factory=dict)

    def read(self) -> list[tuple[str, datetime, str]]:
        for part in journal_files(self.journal):
            try:
                with part.open("rb") as handle:
                    inode = os.fstat(handle.fileno()).st_ino
                    start = self.offsets.get(inode, 0)
                    handle.seek(start)
                    chunk = handle.read()
            except FileNotFoundError:
                continue  # rotated away between the listing and the open: read next time
            whole = chunk.rfind(b"\n") + 1  # a line being written is read next time
            self.offsets[inode] = start + whole
            for number, raw in enumerate(chunk[:whole].splitlines()):
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                stamp = datetime.fromisoformat(line["timestamp"])
                key = line.get("decision_id") or (inode, start, number)
                self.found[key] = (line["workflow_id"], stamp, line["action"])
        return list(self.found.values())


_logs: dict[Path, DecisionLog] = {}


def decisions(journal: Path) -> list[tuple[str, datetime, str]]:
    """(workflow id, timestamp, action) of every decision in every part of the log: of a
    decision written again under its id (decided again after a crash), the last line."""
    return _logs.setdefault(journal, DecisionLog(journal)).read()


def by_loop(lines: list[tuple[str, datetime, str]]) -> dict[str, list[tuple[datetime, str]]]:
    loops: dict[str, list[tuple[datetime, str]]] = {}
    for workflow_id, stamp, action in lines:
        loops.setdefault(workflow_id, []).append((stamp, action))
    for entries in loops.values():
        entries.sort()
    return loops


async def wait_until(condition, deadline: float, poll: float = 0.5) -> bool:
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(poll)
    return bool(condition())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# ---- history costs -------------------------------------------------------------------------

UPDATE_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
}


def iteration_costs(
    history: WorkflowHistory,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(events, bytes) of each whole iteration, split into holds and scales: an iteration runs
    from one TimerFired to the next. Iterations with an operator's message in them are left
    out (their events are the message's, not the loop's)."""
    holds: list[tuple[int, int]] = []
    scales: list[tuple[int, int]] = []
    segment: list = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            if segment and segment[0].event_type == EventType.EVENT_TYPE_TIMER_FIRED:
                _classify(segment, holds, scales)
            segment = []
        segment.append(event)
    return holds, scales


def _classify(segment: list, holds: list, scales: list) -> None:
    if any(e.event_type in UPDATE_EVENTS for e in segment):
        return
    cost = (len(segment), sum(e.ByteSize() for e in segment))
    applies = [
        e
        for e in segment
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "apply"
    ]
    (scales if applies else holds).append(cost)


def mean(pairs: list[tuple[int, int]], index: int) -> float | None:
    return statistics.fmean(p[index] for p in pairs) if pairs else None


# ---- one run -------------------------------------------------------------------------------


def write_config(folder: Path, temporal: EmbeddedTemporal, loops: int, interval: float) -> Path:
    services = [
        {
            "name": f"s{index:04d}",
            "backend": "processes",
            "command": IDLE,
            "min_replicas": 0,
            "max_replicas": 1,
            "check_interval": interval,
            "stop_grace_period": 1,
        }
        for index in range(loops)
    ]
    document = {
        "project": "bench",
        "state_dir": str(folder / "state"),
        "journal": str(folder / "decisions.jsonl"),
        "temporal": {"address": temporal.address, "task_queue": "docktor-bench"},
        "services": services,
    }
    path = folder / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class WorkerPool:
    """The workers of a run, all on the loops' task queue; every one is replaced by a new
    process when the resume is measured."""

    code: Path
    config: Path
    folder: Path
    count: int = 1
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> None:
        self.processes = [
            spawn(self.code, "worker", self.config, self.folder / f"worker-{n}.log")
            for n in range(self.count)
        ]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self.processes)

    def rss_mb(self) -> float:
        return sum(rss_mb(process.pid) for process in self.processes)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for process in self.processes:
            stop(process, sig)


async def run_one(args: argparse.Namespace, code: Path, loops: int, console: Console) -> Result:
    result = Result(loops=loops, interval=args.interval, workers=args.workers, code=code.name)
    folder = Path(tempfile.mkdtemp(prefix=f"docktor-loops-{loops}-"))
    options = {"sqlite_pragmas": ()} if args.sqlite_default else {}
    temporal = start_temporal(folder / "temporal", **options)
    path = write_config(folder, temporal, loops, args.interval)
    config = load_config(path)
    journal = Path(config.journal_path or "")
    worker = WorkerPool(code, path, folder, args.workers)
    worker.start()
    try:
        client = await connect(config)
        began = time.monotonic()
        starter = spawn(code, "starter", path, folder / "starter.log", "--all")
        await asyncio.to_thread(starter.wait)
        result.start_seconds = time.monotonic() - began
        console.log(f"{loops} loops started in {result.start_seconds:.1f} s")

        def warm() -> bool:  # every loop has decided twice
            counts = by_loop(decisions(journal))
            return sum(1 for e in counts.values() if len(e) >= 2) >= loops

        if not await wait_until(warm, time.monotonic() + args.warmup):
            result.notes.append(f"not every loop decided twice within {args.warmup:g} s")
        window = await measure_window(args, worker, temporal, journal, result)
        await measure_parts(client, config, result, window)
        console.log(
            f"{loops} loops: lateness p50 {result.lateness_p50} p99 {result.lateness_p99}, "
            f"worker {result.worker_cpu:.0f}% server {result.server_cpu:.0f}%"
        )
        await measure_history(client, config, path, journal, result, args)
        await measure_resume(args, worker, config, journal, result)
        console.log(
            f"{result.resumed} of {loops} loops decided again after the worker was replaced"
        )
    finally:
        worker.stop()
        temporal.stop()
        for service in config.services[:1]:  # only the probe loop ever started a replica
            await ProcessScaler(service, project=config.project or "").stop_all()
        if args.keep:
            console.log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return result


async def measure_window(
    args: argparse.Namespace,
    worker: WorkerPool,
    temporal: EmbeddedTemporal,
    journal: Path,
    result: Result,
) -> tuple[datetime, datetime]:
    window_start = datetime.now().astimezone()
    cpu_worker, cpu_server = worker.cpu_seconds(), cpu_seconds(temporal.pid)
    t0 = time.monotonic()
    await asyncio.sleep(args.measure)  # the window itself: what is measured runs meanwhile
    elapsed = time.monotonic() - t0
    result.worker_cpu = 100 * (worker.cpu_seconds() - cpu_worker) / elapsed
    result.server_cpu = 100 * (cpu_seconds(temporal.pid) - cpu_server) / elapsed
    result.worker_rss_mb = worker.rss_mb()
    window_end = datetime.now().astimezone()
    lateness = []
    made = by_loop(decisions(journal)).values()
    result.iterations = sum(
        1 for entries in made for stamp, _ in entries if window_start <= stamp <= window_end
    )
    if result.iterations:
        ms = 1000 * elapsed / 100 / result.iterations  # % of a core over the window -> ms each
        result.worker_ms = result.worker_cpu * ms
        result.server_ms = result.server_cpu * ms
    for entries in made:
        for (before, _), (stamp, action) in zip(entries, entries[1:], strict=False):
            if window_start <= stamp <= window_end and action == "hold":
                lateness.append((stamp - before).total_seconds() - args.interval)
    result.decisions = len(lateness)
    result.lateness_p50 = percentile(lateness, 50)
    result.lateness_p99 = percentile(lateness, 99)
    return window_start, window_end


async def measure_parts(
    client: Client,
    config: DocktorConfig,
    result: Result,
    window: tuple[datetime, datetime],
) -> None:
    """Split the sampled loops' iterations in the window into timer lag, task wait and task
    run, from their histories (every run: a loop continues as new within the window)."""
    start, end = window
    timer, wait, run = [], [], []
    for service in config.service_names()[1 : 1 + PARTS_SAMPLE]:
        workflow_id = config.workflow_id(service)
        async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
            handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
            history = await handle.fetch_history()
            for part, seconds in iteration_parts(history, start, end):
                {"timer": timer, "wait": wait, "run": run}[part].append(seconds)
    result.timer_lag_p99 = percentile(timer, 99)
    result.task_wait_p99 = percentile(wait, 99)
    result.task_run_p99 = percentile(run, 99)


def iteration_parts(
    history: WorkflowHistory, start: datetime, end: datetime
) -> list[tuple[str, float]]:
    """("timer", how late each timer fired), ("wait", scheduled -> started) and ("run",
    started -> completed) of each workflow task, for events between start and end."""
    parts: list[tuple[str, float]] = []
    timers: dict[str, datetime] = {}
    scheduled = started = None
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=UTC)
        inside = start <= at <= end
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_TIMER_STARTED:
            attributes = event.timer_started_event_attributes
            timers[attributes.timer_id] = at + attributes.start_to_fire_timeout.ToTimedelta()
        elif kind == EventType.EVENT_TYPE_TIMER_FIRED:
            due = timers.pop(event.timer_fired_event_attributes.timer_id, None)
            if due is not None and inside:
                parts.append(("timer", (at - due).total_seconds()))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            scheduled = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            if scheduled is not None and inside:
                parts.append(("wait", (at - scheduled).total_seconds()))
            started = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and started and inside:
            parts.append(("run", (at - started).total_seconds()))
    return parts


async def measure_history(
    client: Client,
    config: DocktorConfig,
    path: Path,
    journal: Path,
    result: Result,
    args: argparse.Namespace,
) -> None:
    holds: list[tuple[int, int]] = []
    for service in config.service_names()[1 : 1 + HISTORY_SAMPLE]:
        history = await client.get_workflow_handle(config.workflow_id(service)).fetch_history()
        holds += iteration_costs(history)[0]
    result.hold_events, result.hold_bytes = mean(holds, 0), mean(holds, 1)

    # One loop scales once: min_replicas 1 makes its next iteration scale 0 -> 1. The workers
    # act only on their own config, so the file says it first (they read it again on change).
    probe = config.services[0]
    handle = client.get_workflow_handle(config.workflow_id(probe.name))
    document = yaml.safe_load(path.read_text())
    document["services"][0]["min_replicas"] = 1
    path.write_text(yaml.safe_dump(document))
    raised = ServicePlan.from_spec(load_config(path).services[0])
    update = SpecUpdate(service=raised, llm=LLMPlan.from_spec(config.llm))
    await handle.execute_update("update_spec", update, result_type=LoopStatus)

    def scaled_and_held() -> bool:
        actions = [a for _, a in by_loop(decisions(journal)).get(handle.id, [])]
        if "scale_up" not in actions:
            return False
        return actions[actions.index("scale_up") + 1 :].count("hold") >= 2

    if not await wait_until(scaled_and_held, time.monotonic() + 10 * args.interval + 30):
        result.notes.append("the probe loop did not scale")
    scales = iteration_costs(await handle.fetch_history())[1]
    result.scale_events, result.scale_bytes = mean(scales, 0), mean(scales, 1)


async def measure_resume(
    args: argparse.Namespace,
    worker: WorkerPool,
    config: DocktorConfig,
    journal: Path,
    result: Result,
) -> None:
    worker.stop(signal.SIGKILL)  # a crash: the server learns of it only from its timeouts
    began = datetime.now().astimezone()
    deadline = time.monotonic() + args.resume_deadline
    worker.start()
    wanted = {config.workflow_id(s) for s in config.service_names()}
    first: dict[str, float] = {}

    def all_back() -> bool:
        for workflow_id, stamp, _ in decisions(journal):
            if workflow_id in wanted and stamp > began and workflow_id not in first:
                first[workflow_id] = (stamp - began).total_seconds()
        return len(first) >= len(wanted)

    done = await wait_until(all_back, deadline)
    result.resumed = len(first)
    result.resume_seconds = max(first.values()) if done else None
    result.resume_p50 = percentile(sorted(first.values()), 50)


# ---- report --------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def table(results: list[Result], title: str) -> Table:
    grid = Table(title=title)
    for column in (
        "code",
        "loops",
        "workers",
        "start",
        "lateness p50 / p99",
        "p99 timer lag / task wait / task run",
        "hold: events / bytes",
        "scale: events / bytes",
        "worker CPU",
        "worker ms / iteration",
        "worker MB",
        "server CPU",
        "server ms / iteration",
        "replaced worker: all deciding again",
    ):
        grid.add_column(column, justify="right")
    for r in results:
        resumed = (
            f"{r.resume_seconds:.1f} s (p50 {fmt(r.resume_p50, '.1f')} s)"
            if r.resume_seconds is not None
            else f"{r.resumed} of {r.loops} within the deadline"
        )
        grid.add_row(
            r.code,
            str(r.loops),
            str(r.workers),
            f"{r.start_seconds:.1f} s",
            f"{fmt(r.lateness_p50)} s / {fmt(r.lateness_p99)} s",
            f"{fmt(r.timer_lag_p99)} / {fmt(r.task_wait_p99)} / {fmt(r.task_run_p99)} s",
            f"{fmt(r.hold_events, '.1f')} / {fmt(r.hold_bytes, '.0f')}",
            f"{fmt(r.scale_events, '.1f')} / {fmt(r.scale_bytes, '.0f')}",
            f"{r.worker_cpu:.0f}%",
            fmt(r.worker_ms),
            f"{r.worker_rss_mb:.0f}",
            f"{r.server_cpu:.0f}%",
            fmt(r.server_ms),
            resumed,
        )
    return grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/loops.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--loops", type=int, nargs="+", default=[10, 100, 300])
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes on the loops' task queue"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="check_interval (s)")
    parser.add_argument("--measure", type=float, default=60.0, help="window (s) per N")
    parser.add_argument("--warmup", type=float, default=180.0, help="most to wait (s) for warm-up")
    parser.add_argument(
        "--resume-deadline", type=float, default=120.0, help="most to wait (s) after the restart"
    )
    parser.add_argument(
        "--code",
        type=Path,
        nargs="+",
        default=[REPO],
        help="checkouts whose worker and starter run, each in turn (before, after)",
    )
    parser.add_argument(
        "--sqlite-default",
        action="store_true",
        help="dev server without docktor's SQLite pragmas (WAL, synchronous=normal)",
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "loops-results.json", help="write here"
    )
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (logs)")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    codes = [code.resolve() for code in args.code]
    console = Console(stderr=True)
    results = []
    for loops in args.loops:
        for code in codes:
            results.append(await run_one(args, code, loops, console))
    workers = "one worker" if args.workers == 1 else f"{args.workers} workers"
    title = f"loops at a {args.interval:g} s interval, {workers}"
    # Wide enough for every column when the output goes to a file or a pipe.
    Console(width=None if sys.stdout.isatty() else 200).print(table(results, title))
    for r in results:
        for note in r.notes:
            print(f"{r.loops} loops: {note}")
    args.json.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "code": [str(code) for code in codes],
                "sqlite_pragmas": not args.sqlite_default,
                "cpus": os.cpu_count(),
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    asyncio.run(main())
