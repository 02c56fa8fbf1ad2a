"""`docktor demo`: the nats-multi example end to end on this machine, for a bounded time.

One command starts everything the example needs (embedded Temporal + Web UI, nats-server, the
worker, the producer), starts one scaling loop per service, shows what the loops decide, and
then stops all of it again, replicas included. All state (servers' data, replica pid files and
logs, the JSONL decision log) goes to one directory, which is kept afterwards for inspection.

The config file is loaded here and then overridden in memory (Temporal address, NATS URL,
state paths): the service spec travels inside the workflow input, so the worker acts on these
overrides without re-reading them from the file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

import docktor
from docktor.config import (
    ConfigError,
    DocktorConfig,
    default_config_path,
    format_number,
)
from docktor.devstack import local_nats_port, temporal_port
from docktor.embedded import (
    EmbeddedError,
    EmbeddedNats,
    EmbeddedTemporal,
    ManagedProcess,
    port_in_use,
    start_nats,
    start_temporal,
)
from docktor.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, error, read_config
from docktor.model import Decision, LoopStatus

if TYPE_CHECKING:
    from temporalio.client import Client

REPO_ROOT = Path(docktor.__file__).resolve().parents[1]
EXAMPLE_DIR = REPO_ROOT / "examples" / "nats-multi"
EXAMPLE_CONFIG = EXAMPLE_DIR / "docktor.yaml"

# The ports the docs and the example use; taken ports fall back to free ones.
PREFERRED_TEMPORAL_PORT = 7233
PREFERRED_UI_PORT = 8233
PREFERRED_NATS_MONITOR_PORT = 8222

# The producer's own default period is 60 s with the burst at its end, so the first burst would
# come only after ~50 s. A 40 s period with a 10 s burst shows a burst at 30-40 s and again at
# 70-80 s, 110-120 s: visible within the first minute of a short demo. Anything given with
# --producer-args is appended, and argparse lets the later flag win.
DEMO_PRODUCER_ARGS = ["--burst-every", "40", "--burst-seconds", "10"]

# How often the view (or the plain log) is brought up to date; rich redraws at the same pace.
REFRESH_SECONDS = 0.5
# A query answered by a busy worker can take a moment; past this the view shows the old value.
QUERY_TIMEOUT = 2.0
# Startup deadline for the worker to poll the task queue.
WORKER_READY_TIMEOUT = 30.0
# How long to wait for a cancelled loop's final `stopped` decision.
STOP_LOOP_TIMEOUT = 30.0
# Producer: SIGTERM makes it drain its connection and leave within a second.
PRODUCER_STOP_TIMEOUT = 10.0
# Replica history kept for the live view's bar (one sample per refresh).
HISTORY = 60
BARS = " ▁▂▃▄▅▆▇█"


class DemoFailed(Exception):
    """Something the demo needs did not start: one line, naming the log to look at."""


# ---- setup -----------------------------------------------------------------------------------


def resolve_config_path(given: str | None) -> Path:
    """--config, else $DOCKTOR_CONFIG, else ./docktor.yaml when present, else the repo example."""
    if given:
        return Path(given)
    if os.environ.get("DOCKTOR_CONFIG"):
        return default_config_path()
    here = Path("docktor.yaml")
    if here.is_file():
        return here
    if EXAMPLE_CONFIG.is_file():
        return EXAMPLE_CONFIG
    raise ConfigError(
        [f"no docktor.yaml here and no example at {EXAMPLE_CONFIG}; pass --config FILE"]
    )


def producer_script(config_path: Path) -> Path:
    """The producer next to the config (a copy of the example), else the repo's example one."""
    beside = config_path.resolve().parent / "producer.py"
    return beside if beside.is_file() else EXAMPLE_DIR / "producer.py"


def override_config(
    config: DocktorConfig, state_dir: Path, temporal_address: str, nats_url: str
) -> None:
    """Point the loaded config at the demo's own servers and state directory."""
    config.temporal.address = temporal_address
    config.state_dir = str(state_dir)
    config.journal = str(state_dir / "decisions.jsonl")
    for service in config.services:
        service.state_dir = str(state_dir / service.name)
        if service.queue is not None and service.queue.kind == "nats":
            service.queue.url = nats_url
        # Replicas inherit the worker's environment plus `env`; the example consumer reads
        # NATS_URL, and the file's value names the default port, not the one chosen here.
        service.env["NATS_URL"] = nats_url


def _preferred(port: int, what: str, notes: list[str]) -> int | None:
    """`port` when it is free; None (a free port is chosen) with a note when it is taken."""
    if port_in_use(port):
        notes.append(f"port {port} is in use, so {what} gets a free port instead")
        return None
    return port


def spawn(
    name: str, args: list[str], log_path: Path, cwd: Path, env: dict[str, str]
) -> ManagedProcess:
    """A child in its own session (so a terminal Ctrl-C reaches only the demo, which then stops
    it in order), output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return ManagedProcess(name=name, process=process, log_path=log_path, log_offset=offset)


# ---- what the view shows ---------------------------------------------------------------------


@dataclass
class ServiceView:
    name: str
    workflow_id: str
    ui_url: str
    status: LoopStatus | None = None
    history: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY))


@dataclass
class Journal:
    """Reads the JSONL decision log from where this demo started, one whole line at a time."""

    path: Path
    offset: int = 0
    partial: str = ""
    decisions: list[Decision] = field(default_factory=list)

    def mark_start(self) -> None:
        # A reused state dir holds decisions of earlier demos; this run reports only its own.
        with contextlib.suppress(OSError):
            self.offset = self.path.stat().st_size

    def read_new(self) -> list[Decision]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        self.offset += len(chunk)
        text = self.partial + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        # The record activity writes a line in one write(), but a read may still catch a file
        # mid-append: keep an unterminated tail for the next read.
        self.partial = lines.pop()
        new: list[Decision] = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                new.append(Decision.model_validate_json(raw))
            except ValueError:
                continue
        self.decisions.extend(new)
        return new


def _metric(decision: Decision | None, name: str, rate: bool = False) -> str:
    if decision is None or name not in decision.observations:
        return "-"
    value = decision.observations[name]
    return f"{value:.1f}/s" if rate else format_number(value)


def _age(moment: datetime) -> str:
    seconds = max(0.0, (datetime.now(UTC) - moment).total_seconds())
    return f"{seconds:.0f}s ago"


def decision_line(decision: Decision) -> str:
    """One plain line per decision, for CI logs and --no-live."""
    stamp = decision.timestamp.astimezone().strftime("%H:%M:%S")
    return (
        f"{stamp} {decision.service:<12} {decision.action:<10} "
        f"{decision.current_replicas:>2} -> {decision.target_replicas:<2} "
        f"backlog={_metric(decision, 'queue.backlog')} "
        f"in={_metric(decision, 'queue.rate_in', rate=True)} "
        f"out={_metric(decision, 'queue.rate_out', rate=True)}  {decision.reason}"
    )


def _bar(history: Sequence[int], top: int) -> str:
    top = max(top, 1)
    return "".join(BARS[min(len(BARS) - 1, round(n * (len(BARS) - 1) / top))] for n in history)


def _producer_phase(log: Path) -> str:
    """The producer's latest report line ("t=.. phase=burst target=500 msg/s ..."), if any."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 2048))
            lines = handle.read().decode("utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "phase=" in line:
            return " ".join(line.removeprefix("producer: ").split())
    return ""


def render(
    views: list[ServiceView], time_left: float, journal: Path, state_dir: Path, load: str
) -> RenderableType:
    parts: list[RenderableType] = []
    for view in views:
        status = view.status
        last = status.last_decision if status else None
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        if status is None:
            grid.add_row("replicas", "waiting for the loop's first answer...")
        else:
            replicas = "?" if status.replicas is None else str(status.replicas)
            grid.add_row(
                "replicas",
                Text.assemble(
                    (f"{replicas:>2}", "bold green"),
                    f"  (min {status.min_replicas}, max {status.max_replicas})  ",
                    (_bar(view.history, status.max_replicas), "green"),
                ),
            )
        grid.add_row("backlog", _metric(last, "queue.backlog"))
        grid.add_row(
            "rate in / out",
            f"{_metric(last, 'queue.rate_in', True)} / {_metric(last, 'queue.rate_out', True)}",
        )
        if last is None:
            grid.add_row("last decision", "-")
        else:
            style = {"scale_up": "bold yellow", "scale_down": "bold cyan"}.get(last.action, "")
            grid.add_row(
                "last decision",
                Text.assemble(
                    (last.action, style),
                    f" {last.current_replicas} -> {last.target_replicas}, {_age(last.timestamp)}",
                ),
            )
            grid.add_row("why", last.reason)
        grid.add_row("Web UI", view.ui_url)
        parts.append(Panel(grid, title=f"[bold]{view.name}[/bold]", title_align="left"))
    footer = Table.grid(padding=(0, 2))
    footer.add_column(style="bold")
    footer.add_column()
    footer.add_row("time left", f"{max(0.0, time_left):.0f}s  (Ctrl-C stops everything now)")
    if load:
        footer.add_row("load", load)
    footer.add_row("decisions", str(journal))
    footer.add_row("logs", f"{state_dir}/*.log, {state_dir}/<service>/replica-*.log")
    parts.append(footer)
    return Group(*parts)


# ---- the demo --------------------------------------------------------------------------------


class Demo:
    title = "docktor demo"

    def __init__(self, args: argparse.Namespace, config_path: Path, config: DocktorConfig) -> None:
        self.args = args
        self.config_path = config_path
        self.config = config
        self.duration = float(args.duration)
        if args.state_dir:
            self.state_dir = Path(args.state_dir).resolve()
            self.state_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.state_dir = Path(tempfile.mkdtemp(prefix="docktor-demo-"))
        self.live = not args.no_live and sys.stdout.isatty()
        self.console = Console()
        self.temporal: EmbeddedTemporal | None = None
        self.nats: EmbeddedNats | None = None
        self.worker: ManagedProcess | None = None
        self.producer: ManagedProcess | None = None
        self.journal = Journal(self.state_dir / "decisions.jsonl")
        self.views: list[ServiceView] = []
        self.stop = asyncio.Event()
        self.failure: str | None = None

    def say(self, line: str) -> None:
        print(line, flush=True)

    def complain(self, line: str) -> None:
        """Errors and warnings go to stderr, so a CI log or a pipe keeps them apart."""
        print(line, file=sys.stderr, flush=True)

    # -- the whole run: start, watch, always clean up --

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupted)
        client = None
        ran = False
        try:
            try:
                client = await self.start()
            except DemoFailed as exc:
                self.complain(f"error: {exc}")
                return EXIT_FAILED
            if client is not None and not self.stop.is_set():
                ran = True
                await self.watch(client)
        finally:
            await self.cleanup(client)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if ran:
            self.summary()
        if self.failure:
            self.complain(f"error: {self.failure}")
            return EXIT_FAILED
        return EXIT_OK

    def _interrupted(self) -> None:
        if self.stop.is_set():
            self.say("still stopping everything; please wait...")
        self.stop.set()

    async def start(self) -> Client | None:
        from docktor.client import TemporalUnreachable, connect, ui_url
        from docktor.control import start_loop, stop_loop

        self.say(f"{self.title}: {self.config_path} (project '{self.config.project}')")
        self.say(f"state in {self.state_dir}")
        notes: list[str] = []
        wanted_api = temporal_port(self.config) or PREFERRED_TEMPORAL_PORT
        api_port = _preferred(wanted_api, "the Temporal API", notes)
        ui_port = _preferred(PREFERRED_UI_PORT, "the Temporal Web UI", notes)
        nats_port = local_nats_port(self.config) or 4222
        nats_port_choice = _preferred(nats_port, "nats-server", notes)
        monitor_port = _preferred(PREFERRED_NATS_MONITOR_PORT, "the NATS monitor", [])
        for note in notes:
            self.say(f"note: {note}")

        # The servers start in threads: their readiness checks block, and the event loop must
        # stay free to notice a Ctrl-C (which is acted on once the start in progress returns).
        try:
            self.temporal = await asyncio.to_thread(
                start_temporal, self.state_dir, api_port, ui_port
            )
            self.say(f"Temporal  {self.temporal.address}   Web UI {self.temporal.ui_url}")
            if self.stop.is_set():
                return None
            self.nats = await asyncio.to_thread(
                start_nats, self.state_dir, nats_port_choice, monitor_port
            )
            self.say(f"NATS      {self.nats.url}   (JetStream, monitor {self.nats.monitor_url})")
        except EmbeddedError as exc:
            raise DemoFailed(str(exc).splitlines()[0]) from None
        if self.stop.is_set():
            return None

        override_config(self.config, self.state_dir, self.temporal.address, self.nats.url)
        self.journal = Journal(Path(self.config.journal_path))
        self.journal.mark_start()

        try:
            client = await connect(self.config)
        except TemporalUnreachable as exc:
            raise DemoFailed(f"{exc}; log: {self.temporal.log_path}") from None

        self.start_worker()
        await self.wait_worker_ready(client)
        if self.stop.is_set():
            return client
        self.start_producer()

        for service in self.config.services:
            workflow_id = self.config.workflow_id(service.name)
            try:
                result = await start_loop(client, self.config, service)
                if not result.started:
                    # Left running by an earlier demo on this state dir, with that demo's
                    # ports in its input: replace it so it uses the servers started now.
                    await asyncio.wait_for(
                        stop_loop(client, self.config, service.name), STOP_LOOP_TIMEOUT
                    )
                    await start_loop(client, self.config, service)
            except Exception as exc:  # an RPC failure: one line, then the cleanup runs
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise DemoFailed(
                    f"could not start the loop for '{service.name}': {first}; "
                    f"log: {self.worker.log_path if self.worker else self.temporal.log_path}"
                ) from None
            link = ui_url(self.config, workflow_id, base=self.temporal.ui_url)
            self.views.append(ServiceView(service.name, workflow_id, link))
            self.say(f"loop      {service.name}: {workflow_id}")
            self.say(f"Web UI    {link}")
        self.say(f"decisions {self.journal.path}")
        return client

    def start_worker(self) -> None:
        assert self.temporal is not None
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.temporal.address,
            # Unbuffered, so worker.log is current while the demo runs.
            "PYTHONUNBUFFERED": "1",
        }
        args = [sys.executable, "-m", "worker", "--config", str(self.config_path.resolve())]
        args += ["--address", self.temporal.address]
        # cwd = the repo root, so `-m worker` imports even where the package is not installed.
        self.worker = spawn("worker", args, self.state_dir / "worker.log", REPO_ROOT, env)
        self.say(f"worker    pid {self.worker.pid}   log {self.worker.log_path}")

    async def wait_worker_ready(self, client: Client) -> None:
        """Until the worker polls the task queue; it failing or timing out is a failed start."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        assert self.worker is not None
        request = DescribeTaskQueueRequest(
            namespace=self.config.temporal.namespace,
            task_queue=TaskQueue(name=self.config.temporal.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while not self.stop.is_set():
            if not self.worker.running:
                raise DemoFailed(
                    f"the worker exited during startup (exit code "
                    f"{self.worker.process.returncode}); log: {self.worker.log_path}"
                )
            with contextlib.suppress(Exception):
                answer = await client.workflow_service.describe_task_queue(request)
                if answer.pollers:
                    return
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"the worker did not start polling within {WORKER_READY_TIMEOUT:g}s; "
                    f"log: {self.worker.log_path}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=0.2)

    def start_producer(self) -> None:
        assert self.nats is not None
        script = producer_script(self.config_path)
        extra = shlex.split(getattr(self.args, "producer_args", None) or "")
        args = [sys.executable, str(script), "--url", self.nats.url, *DEMO_PRODUCER_ARGS, *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # cwd = the state dir: nothing of the producer's is left outside it.
        self.producer = spawn(
            "producer", args, self.state_dir / "producer.log", self.state_dir, env
        )
        self.say(f"producer  pid {self.producer.pid}   {shlex.join(args[1:])}")

    # -- while it runs --

    async def watch(self, client: Client) -> None:
        started = time.monotonic()
        end = started + self.duration

        if self.live:
            with Live(
                self._render(end), console=self.console, refresh_per_second=2, transient=False
            ) as live:
                while await self._tick(client, end):
                    live.update(self._render(end))
                live.update(self._render(end))
        else:
            self.say(f"running for {self.duration:g}s; one line per decision (Ctrl-C stops)")
            while await self._tick(client, end):
                pass
        if not self.stop.is_set() and self.failure is None:
            self.say(f"{self.duration:g}s are up; stopping...")
        else:
            self.say("stopping...")

    async def _tick(self, client: Client, end: float) -> bool:
        """Refresh statuses and decisions once; False when the demo should end."""
        await self._refresh(client)
        if self.worker is not None and not self.worker.running:
            self.failure = (
                f"the worker exited (code {self.worker.process.returncode}) while the demo ran; "
                f"log: {self.worker.log_path}"
            )
            return False
        if self.stop.is_set() or time.monotonic() >= end:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self.stop.wait(), timeout=min(REFRESH_SECONDS, max(0.0, end - time.monotonic()))
            )
        return not self.stop.is_set() and time.monotonic() < end

    async def _refresh(self, client: Client) -> None:
        from docktor.control import loop_status

        async def one(view: ServiceView) -> None:
            try:
                view.status = await asyncio.wait_for(
                    loop_status(client, self.config, view.name), QUERY_TIMEOUT
                )
            except Exception:
                # A query the worker could not answer in time: keep showing the last answer.
                return
            if view.status.replicas is not None:
                view.history.append(view.status.replicas)

        if self.live:
            await asyncio.gather(*(one(view) for view in self.views))
        for decision in self.journal.read_new():
            if not self.live:
                self.say(decision_line(decision))

    def _render(self, end: float) -> RenderableType:
        load = _producer_phase(self.producer.log_path) if self.producer else ""
        return render(self.views, end - time.monotonic(), self.journal.path, self.state_dir, load)

    # -- the end --

    async def cleanup(self, client: Client | None) -> None:
        """Everything started is stopped, in dependency order, whatever happened before."""
        if client is not None and self.views:
            await self.stop_loops(client)
            # The final `stopped` decisions were written before the loops returned.
            for decision in self.journal.read_new():
                if not self.live:
                    self.say(decision_line(decision))
        if self.producer is not None:
            await asyncio.to_thread(self.producer.stop, PRODUCER_STOP_TIMEOUT)
        if self.worker is not None:
            # The worker lets running activities finish for up to the longest grace period +5 s
            # (see worker/__main__.py). Its exit code is not looked at: the SDK can abort at
            # interpreter exit after a clean shutdown (ENVIRONMENT.md, sdk-python#300).
            grace = max((s.stop_grace_period for s in self.config.services), default=10.0)
            await asyncio.to_thread(self.worker.stop, grace + 15.0)
        await self.stop_replicas()
        for server in (self.nats, self.temporal):
            if server is not None:
                await asyncio.to_thread(server.stop)

    async def stop_loops(self, client: Client) -> None:
        from docktor.control import NoRunningLoop, stop_loop

        worker_alive = self.worker is not None and self.worker.running

        async def one(view: ServiceView) -> None:
            try:
                if worker_alive:
                    await asyncio.wait_for(
                        stop_loop(client, self.config, view.name), STOP_LOOP_TIMEOUT
                    )
                else:
                    # Nobody would run the cancellation: end the workflow outright so a later
                    # demo on this state dir does not find it still running.
                    await client.get_workflow_handle(view.workflow_id).terminate(
                        reason="docktor demo ended without a worker"
                    )
            except NoRunningLoop:
                pass
            except Exception as exc:
                self.complain(f"warning: could not stop the loop for '{view.name}' cleanly ({exc})")

        await asyncio.gather(*(one(view) for view in self.views))

    async def stop_replicas(self) -> None:
        """No replica outlives the demo, whatever the worker managed before it stopped."""
        from docktor.scalers.processes import ProcessScaler

        for service in self.config.services:
            if service.backend != "processes" or service.state_dir is None:
                continue
            if not str(service.state_dir).startswith(str(self.state_dir)):
                # Not overridden (the start failed early): these pid files are not the demo's.
                continue
            try:
                stopped = await ProcessScaler(service, self.config.project or "default").stop_all()
            except Exception as exc:
                self.complain(f"warning: could not stop replicas of '{service.name}' ({exc})")
                continue
            if stopped:
                # Cancelling a loop leaves its replicas as they were (a production loop must
                # not take a service down when it stops); the demo owns them, so they go.
                self.say(f"stopped {stopped} replica(s) of '{service.name}'")

    def summary(self) -> None:
        self.journal.read_new()
        decisions = self.journal.decisions
        self.say("")
        self.say("summary")
        for service in self.config.services:
            mine = [d for d in decisions if d.service == service.name]
            peak = max((max(d.current_replicas, d.target_replicas) for d in mine), default=0)
            ups = sum(d.action == "scale_up" for d in mine)
            downs = sum(d.action == "scale_down" for d in mine)
            stopped = "yes" if any(d.action == "stopped" for d in mine) else "no"
            self.say(
                f"  {service.name}: peak {peak} replicas, {ups} scale_up, {downs} scale_down, "
                f"{len(mine)} decisions, final stopped: {stopped}"
            )
        self.say(f"  decisions: {self.journal.path}")
        self.say(f"  logs:      {self.state_dir}/{{worker,producer,temporal,nats}}.log")
        for service in self.config.services:
            if service.backend == "processes":
                self.say(f"             {self.state_dir / service.name}/replica-*.log")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when it ran, 1 when something it needs did not start or failed.

    A bad config raises ConfigError, which the CLI prints and turns into exit code 2.
    """
    config_path = resolve_config_path(args.config)
    config = read_config(config_path)
    if args.duration is not None and float(args.duration) <= 0:
        return error("--duration must be greater than 0", EXIT_USAGE)
    demo = Demo(args, config_path, config)
    return asyncio.run(demo.run())
