"""The stack `docktor demo` runs: an example end to end on this machine, for a bounded time.

One command starts everything the example needs (embedded Temporal + Web UI, the broker its
queue names: nats-server, redis-server or rabbitmq-server, the worker, the producer), starts one
scaling loop per service, hands what the loops decide to the view (docktor/dev/demo/view.py), and
then stops all of it again, replicas included. All state (servers' data, replica pid files and
logs, the JSONL decision log) goes to one directory, which is kept afterwards for inspection.

The config file is loaded here and pointed at the demo's own servers and state folder (Temporal
address, queue URLs, state paths); the result is written to the state folder as the file the
demo's worker reads, since a worker runs only what its own file says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from rich.console import Console

import docktor
from docktor import names
from docktor.dev.demo import DEFAULT_EXAMPLE
from docktor.dev.demo.view import (
    Journal,
    LiveView,
    ServiceView,
    decision_line,
    producer_phase,
    summary_lines,
)
from docktor.dev.embedded import (
    EmbeddedError,
    EmbeddedNats,
    EmbeddedRabbitMQ,
    EmbeddedRedis,
    EmbeddedTemporal,
    ManagedProcess,
    port_in_use,
    spawn,
    start_nats,
    start_rabbitmq,
    start_redis,
    start_temporal,
)
from docktor.dev.stack import local_queue_port, temporal_port
from docktor.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, error, read_config
from docktor.plan import ServicePlan
from docktor.spec import ConfigError, DocktorConfig, default_config_path, load_config

if TYPE_CHECKING:
    from temporalio.client import Client

REPO_ROOT = Path(docktor.__file__).resolve().parents[1]
EXAMPLES_DIR = REPO_ROOT / "examples"
EXAMPLE_CONFIG = EXAMPLES_DIR / DEFAULT_EXAMPLE / "docktor.yaml"

# The ports the docs and the examples use; taken ports fall back to free ones.
PREFERRED_TEMPORAL_PORT = 7233
PREFERRED_UI_PORT = 8233
PREFERRED_NATS_MONITOR_PORT = 8222
PREFERRED_RABBITMQ_MANAGEMENT_PORT = 15672


@dataclass(frozen=True)
class Broker:
    """A queue kind the demo can start a server for: its default port, the environment
    variable the examples' scripts read its URL from, and the example whose producer feeds it."""

    kind: str
    default_port: int
    url_variable: str
    example: str


BROKERS = {
    "nats": Broker("nats", 4222, "NATS_URL", "nats-multi"),
    "redis": Broker("redis", 6379, "REDIS_URL", "redis-streams"),
    "rabbitmq": Broker("rabbitmq", 5672, "RABBITMQ_URL", "rabbitmq"),
}

# The producer's own default period is 60 s with the burst at its end, so the first burst would
# come only after ~50 s. A 40 s period with a 10 s burst shows a burst at 30-40 s and again at
# 70-80 s, 110-120 s: visible within the first minute of a short demo. Anything given with
# --producer-args is appended, and argparse lets the later flag win.
DEMO_PRODUCER_ARGS = ["--burst-every", "40", "--burst-seconds", "10"]

# Startup deadline for the worker to poll the task queue.
WORKER_READY_TIMEOUT = 30.0
# How long to wait for a cancelled loop's final `stopped` decision.
STOP_LOOP_TIMEOUT = 30.0
# Producer: SIGTERM makes it drain its connection and leave within a second.
PRODUCER_STOP_TIMEOUT = 10.0


class DemoFailed(Exception):
    """Something the demo needs did not start: one line, naming the log to look at."""


# ---- setup -----------------------------------------------------------------------------------


def resolve_config_path(given: str | None, example: str | None = None) -> Path:
    """--config, else --example's, else $DOCKTOR_CONFIG, else ./docktor.yaml when present,
    else the repo's nats-multi example."""
    if given:
        return Path(given)
    if example:
        path = EXAMPLES_DIR / example / "docktor.yaml"
        if not path.is_file():
            raise ConfigError([f"--example: no {path} (is this a source checkout?)"])
        return path
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


def producer_script(config_path: Path, kind: str = "nats") -> Path:
    """The producer next to the config (a copy of the example), else the one of the example
    for this queue kind."""
    beside = config_path.resolve().parent / "producer.py"
    return beside if beside.is_file() else EXAMPLES_DIR / BROKERS[kind].example / "producer.py"


def queue_kinds(config: DocktorConfig) -> list[str]:
    """The brokers the config's queues need, in the order services name them."""
    kinds: list[str] = []
    for service in config.services:
        if service.queue is not None and service.queue.kind not in kinds:
            kinds.append(service.queue.kind)
    return kinds


def override_config(
    config: DocktorConfig,
    state_dir: Path,
    temporal_address: str,
    urls: dict[str, str],
    queue_fields: dict[str, dict[str, str]] | None = None,
) -> None:
    """Point the loaded config at the demo's own servers (`urls`: queue kind -> URL, and
    `queue_fields`: kind -> other fields of its queue block that name the server) and state
    directory."""
    config.temporal.address = temporal_address
    config.state_dir = str(state_dir)
    config.journal = str(state_dir / "decisions.jsonl")
    for service in config.services:
        service.state_dir = str(state_dir / service.name)
        if service.queue is not None and service.queue.kind in urls:
            service.queue.url = urls[service.queue.kind]  # type: ignore[attr-defined]
            for name, value in (queue_fields or {}).get(service.queue.kind, {}).items():
                setattr(service.queue, name, value)
        # Replicas get little of the worker's environment besides `env`; the examples'
        # consumers read NATS_URL / REDIS_URL there, and the file's value names the default
        # port, not this one.
        for kind, url in urls.items():
            service.env[BROKERS[kind].url_variable] = url


def write_demo_config(config: DocktorConfig, state_dir: Path) -> tuple[Path, DocktorConfig]:
    """The overridden config as a file in the demo's state folder, and that file loaded back.

    A worker runs only what its own file says, so the demo's worker reads this file and the
    demo starts its loops from the same one. Every path in it is already absolute; only the
    replicas' working folder becomes the state folder (the file's folder, as for any config)."""
    path = state_dir / "docktor.yaml"
    data = config.model_dump(mode="json", exclude_unset=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path, load_config(path)


def _preferred(port: int, what: str, notes: list[str]) -> int | None:
    """`port` when it is free; None (a free port is chosen) with a note when it is taken."""
    if port_in_use(port):
        notes.append(f"port {port} is in use, so {what} gets a free port instead")
        return None
    return port


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
        self.redis: EmbeddedRedis | None = None
        self.rabbitmq: EmbeddedRabbitMQ | None = None
        # queue kind -> the URL of the server started for it (and other fields naming it)
        self.brokers: dict[str, str] = {}
        self.queue_fields: dict[str, dict[str, str]] = {}
        self.worker: ManagedProcess | None = None
        # The file the worker reads: the user's config pointed at the demo's servers.
        self.worker_config = config_path
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
        from docktor.client.loops import LoopClient
        from docktor.client.temporal import TemporalUnreachable, connect, ui_url

        self.say(f"{self.title}: {self.config_path} (project '{self.config.project}')")
        self.say(f"state in {self.state_dir}")
        notes: list[str] = []
        wanted_api = temporal_port(self.config) or PREFERRED_TEMPORAL_PORT
        api_port = _preferred(wanted_api, "the Temporal API", notes)
        ui_port = _preferred(PREFERRED_UI_PORT, "the Temporal Web UI", notes)
        kinds = queue_kinds(self.config)
        unknown = [kind for kind in kinds if kind not in BROKERS]
        if unknown:
            raise DemoFailed(
                f"the demo can start a server for {' and '.join(BROKERS)} queues, "
                f"not for kind {', '.join(unknown)}"
            )
        ports = {
            kind: _preferred(
                local_queue_port(self.config, kind) or BROKERS[kind].default_port,
                f"{kind}-server",
                notes,
            )
            for kind in kinds
        }
        monitor_port = _preferred(PREFERRED_NATS_MONITOR_PORT, "the NATS monitor", [])
        management_port = _preferred(PREFERRED_RABBITMQ_MANAGEMENT_PORT, "RabbitMQ management", [])
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
            if "nats" in kinds and not self.stop.is_set():
                self.nats = await asyncio.to_thread(
                    start_nats, self.state_dir, ports["nats"], monitor_port
                )
                self.brokers["nats"] = self.nats.url
                self.say(
                    f"NATS      {self.nats.url}   (JetStream, monitor {self.nats.monitor_url})"
                )
            if "redis" in kinds and not self.stop.is_set():
                self.redis = await asyncio.to_thread(start_redis, self.state_dir, ports["redis"])
                self.brokers["redis"] = self.redis.url
                self.say(f"Redis     {self.redis.url}   (no persistence)")
            if "rabbitmq" in kinds and not self.stop.is_set():
                self.rabbitmq = await asyncio.to_thread(
                    start_rabbitmq, self.state_dir, ports["rabbitmq"], management_port
                )
                self.brokers["rabbitmq"] = self.rabbitmq.url
                self.queue_fields["rabbitmq"] = {"management_url": self.rabbitmq.management_url}
                self.say(
                    f"RabbitMQ  {self.rabbitmq.url}   (management {self.rabbitmq.management_url})"
                )
        except EmbeddedError as exc:
            raise DemoFailed(str(exc).splitlines()[0]) from None
        if self.stop.is_set():
            return None

        override_config(
            self.config, self.state_dir, self.temporal.address, self.brokers, self.queue_fields
        )
        self.worker_config, self.config = write_demo_config(self.config, self.state_dir)
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

        loops = LoopClient(client, self.config)
        for service in self.config.services:
            workflow_id = self.config.workflow_id(service.name)
            try:
                result = await loops.start(service)
                if not result.started:
                    # Left running by an earlier demo on this state dir, with that demo's
                    # ports in its input: replace it so it uses the servers started now.
                    await asyncio.wait_for(loops.stop(service.name), STOP_LOOP_TIMEOUT)
                    await loops.start(service)
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
        args = [sys.executable, "-m", "worker", "--config", str(self.worker_config)]
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
        if not self.brokers:
            self.say("producer  none (no service has a queue)")
            return
        # The example's producer feeds the queue of the first service that has one.
        kind, url = next(iter(self.brokers.items()))
        script = producer_script(self.config_path, kind)
        extra = shlex.split(getattr(self.args, "producer_args", None) or "")
        args = [sys.executable, str(script), "--url", url, *DEMO_PRODUCER_ARGS, *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # cwd = the state dir: nothing of the producer's is left outside it.
        self.producer = spawn(
            "producer", args, self.state_dir / "producer.log", self.state_dir, env
        )
        self.say(f"producer  pid {self.producer.pid}   {shlex.join(args[1:])}")

    # -- while it runs --

    async def watch(self, client: Client) -> None:
        from docktor.client.loops import LoopClient

        if not self.live:
            self.say(f"running for {self.duration:g}s; one line per decision (Ctrl-C stops)")
        view = LiveView(self.views, self.journal, self.state_dir, self.live, self.say, self.console)
        await view.show(
            LoopClient(client, self.config).status,
            end=time.monotonic() + self.duration,
            stop=self.stop,
            failed=self._worker_failed,
            load=lambda: producer_phase(self.producer.log_path) if self.producer else "",
        )
        if not self.stop.is_set() and self.failure is None:
            self.say(f"{self.duration:g}s are up; stopping...")
        else:
            self.say("stopping...")

    def _worker_failed(self) -> bool:
        """The worker died under the demo: nothing would decide any more, so it ends."""
        if self.worker is None or self.worker.running:
            return False
        self.failure = (
            f"the worker exited (code {self.worker.process.returncode}) while the demo ran; "
            f"log: {self.worker.log_path}"
        )
        return True

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
        for server in (self.rabbitmq, self.redis, self.nats, self.temporal):
            if server is not None:
                await asyncio.to_thread(server.stop)

    async def stop_loops(self, client: Client) -> None:
        from docktor.client.loops import LoopClient, NoRunningLoop

        worker_alive = self.worker is not None and self.worker.running

        async def one(view: ServiceView) -> None:
            try:
                if worker_alive:
                    await asyncio.wait_for(
                        LoopClient(client, self.config).stop(view.name), STOP_LOOP_TIMEOUT
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
        from docktor.backends.processes import ProcessScaler

        for service in self.config.services:
            if service.backend != "processes" or service.state_dir is None:
                continue
            if not str(service.state_dir).startswith(str(self.state_dir)):
                # Not overridden (the start failed early): these pid files are not the demo's.
                continue
            try:
                plan = ServicePlan.from_spec(service)
                stopped = await ProcessScaler(
                    plan, names.project_name(self.config.project)
                ).stop_all()
            except Exception as exc:
                self.complain(f"warning: could not stop replicas of '{service.name}' ({exc})")
                continue
            if stopped:
                # Cancelling a loop leaves its replicas as they were (a production loop must
                # not take a service down when it stops); the demo owns them, so they go.
                self.say(f"stopped {stopped} replica(s) of '{service.name}'")

    def summary(self) -> None:
        self.journal.read_new()
        servers = [
            m for m in (self.temporal, self.nats, self.redis, self.rabbitmq) if m is not None
        ]
        logs = [str(m.log_path) for m in (self.worker, self.producer, *servers) if m is not None]
        replica_logs = [
            self.state_dir / service.name
            for service in self.config.services
            if service.backend == "processes"
        ]
        names = [service.name for service in self.config.services]
        for line in summary_lines(
            names, self.journal.decisions, self.journal.path, logs, replica_logs
        ):
            self.say(line)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when it ran, 1 when something it needs did not start or failed.

    A bad config raises ConfigError, which the CLI prints and turns into exit code 2.
    """
    example = getattr(args, "example", None)
    if example and args.config:
        return error("--example and --config: give one or the other", EXIT_USAGE)
    config_path = resolve_config_path(args.config, example)
    config = read_config(config_path)
    if args.duration is not None and float(args.duration) <= 0:
        return error("--duration must be greater than 0", EXIT_USAGE)
    demo = Demo(args, config_path, config)
    return asyncio.run(demo.run())
