"""Polling with a deadline: tests wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from temporalio.client import Client

    from docktor.spec import DocktorConfig, ServiceSpec

# Between polls: short enough that a test never waits long after the condition holds.
POLL_INTERVAL = 0.02
REPO = Path(__file__).parents[1]


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, message: str = "") -> object:
    """Call `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message or predicate!r}")
        time.sleep(POLL_INTERVAL)


async def async_wait_for(
    predicate: Callable[[], Awaitable[object]], timeout: float = 10.0, message: str = ""
) -> object:
    """Await `predicate()` until it gives something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message or predicate!r}")
        await asyncio.sleep(POLL_INTERVAL)


@asynccontextmanager
async def serving_loops(config: DocktorConfig, path: Path | None = None) -> AsyncIterator[Client]:
    """A client and an in-process worker with the real workflow and activities on the config's
    task queue, as `python -m worker` would run them: the worker runs what `config` says (read
    again from `path` when that file changes). Closed (pooled connections too) at the end."""
    from activities import LoopActivities
    from docktor.client.temporal import connect
    from docktor.loop.authority import WorkerConfig
    from docktor.loop.worker import build_worker

    client = await connect(config)
    loop_activities = LoopActivities(WorkerConfig(config, path))
    try:
        async with build_worker(client, config.temporal.task_queue, loop_activities.all()):
            yield client
    finally:
        await loop_activities.close()


async def run_docktor(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`docktor ARGS` as an operator runs it, with `config` as DOCKTOR_CONFIG (and not the
    TEMPORAL_ADDRESS of the test's own environment). In a thread, because a worker that answers
    the command's queries and updates may run on the caller's event loop."""
    environment = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    environment.update({"DOCKTOR_CONFIG": str(config), **env})
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "docktor", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        # No terminal, whatever pytest runs in: a command that would ask must not wait.
        stdin=subprocess.DEVNULL,
    )


async def stop_loop_within(
    client: Client, config: DocktorConfig, service: str, timeout: float = 20.0
) -> None:
    """Cancel a service's loop (if it runs) and wait for its end. A cancel that lands while an
    activity is in flight can be swallowed by the workflow (it catches the resulting
    ActivityError), so a loop that has not ended within `timeout` is terminated instead of
    hanging the teardown."""
    from docktor.client.loops import LoopClient, NoRunningLoop

    try:
        handle = await LoopClient(client, config).handle(service)
    except NoRunningLoop:
        return
    await handle.cancel()
    try:
        await asyncio.wait_for(handle.result(), timeout)
    except TimeoutError:
        await handle.terminate(reason="test teardown: the cancel was not honoured")


def burst_service(
    backend: str,
    nats_url: str = "",
    stream: str = "",
    subject: str = "",
    queue: dict[str, object] | None = None,
) -> dict[str, object]:
    """A `consumer` service that reacts within seconds: up on a backlog over 100, down when the
    queue is drained, 1..4 replicas. The end-to-end tests add what their backend needs. Its
    queue is a NATS stream unless another `queue:` block is given: the same rules work on any
    queue kind."""
    if queue is None:
        queue = {
            "kind": "nats",
            "url": nats_url,
            "stream": stream,
            "consumer": "workers",
            "subject": subject,
        }
    return {
        "name": "consumer",
        "backend": backend,
        "min_replicas": 1,
        "max_replicas": 4,
        "check_interval": "1s",
        "scale_up_by": 1,
        "scale_down_by": 1,
        "stop_grace_period": "3s",
        "cooldown": {"up": "1s", "down": "2s"},
        "rules": {
            "scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 100}],
            "scale_down_when": [
                {"metric": "queue.backlog", "op": "<", "value": 10},
                {"metric": "queue.ack_pending", "op": "<", "value": 20},
            ],
        },
        "queue": queue,
    }


def require_redis_server() -> None:
    """Skip where Debian's redis-server is not installed; fail under CI, where `make test`
    installs it first (scripts/install-test-deps.sh)."""
    import pytest

    from docktor.dev.embedded import EmbeddedError, find_binary

    try:
        find_binary("redis-server")
    except EmbeddedError:
        if os.environ.get("CI"):
            pytest.fail("no redis-server on this CI machine: scripts/install-test-deps.sh adds it")
        pytest.skip("no redis-server here (install Debian's redis-server to run these tests)")


def require_rabbitmq_server() -> None:
    """Skip where Debian's rabbitmq-server is not installed; fail under CI, where `make test`
    installs it first (scripts/install-test-deps.sh)."""
    import pytest

    from docktor.dev.embedded import EmbeddedError, find_binary, rabbitmq_scripts

    try:
        rabbitmq_scripts()
        find_binary("epmd")
    except EmbeddedError:
        if os.environ.get("CI"):
            pytest.fail("no rabbitmq-server on this CI machine: install-test-deps.sh adds it")
        pytest.skip("no rabbitmq-server here (install Debian's rabbitmq-server to run these tests)")


async def wait_for_replicas(
    client: Client,
    config: DocktorConfig,
    service: str,
    done: Callable[[int], bool],
    timeout: float,
    message: str,
) -> None:
    """Until the loop's status reports a replica count that `done` accepts."""
    from docktor.client.loops import LoopClient

    async def reached() -> bool:
        status = await LoopClient(client, config).status(service)
        return status.replicas is not None and done(status.replicas)

    await async_wait_for(reached, timeout, message)


async def assert_burst_scaled_up_and_down(
    client: Client, config: DocktorConfig, service: ServiceSpec
) -> None:
    """A burst_service loop fed one burst: it scales up past 2 replicas while the burst waits,
    back to min_replicas once it is drained (the queue's rules and nothing else deciding), and
    the decisions say so."""
    from docktor.client.loops import LoopClient

    await wait_for_replicas(
        client, config, service.name, lambda n: n >= 3, 60, "scale-up to 3 during the burst"
    )
    await wait_for_replicas(
        client,
        config,
        service.name,
        lambda n: n == service.min_replicas,
        90,
        "scale-down to min_replicas after the burst",
    )
    decisions = await LoopClient(client, config).decisions(service.name, tail=50)
    ups = [d for d in decisions if d.action == "scale_up"]
    downs = [d for d in decisions if d.action == "scale_down"]
    assert any("queue.backlog" in rule for d in ups for rule in d.matched_rules)
    assert downs and all(d.target_replicas < d.current_replicas for d in downs)
    assert all(service.min_replicas <= d.target_replicas <= 4 for d in decisions)


# ---- real processes for the fault tests (tests/faults) ------------------------------------------


@dataclass
class WorkerProcess:
    """`python -m worker` as a child process, its output in a log file; stopped by its pid."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def identity(self) -> str:
        """The identity Temporal records for its tasks (the SDK's default, pid@host)."""
        return f"{self.pid}@{socket.gethostname()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the server, as a crash or an OOM kill."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_worker(config: Path, log_path: Path, module: str = "worker", **env: str) -> WorkerProcess:
    """Run a worker module (`worker`, or a test's wrapper of it) on `config`."""
    environment = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    environment.update(env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--config", str(config)],
            cwd=REPO,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(process, log_path)


def replica_pids(project: str, service: str) -> list[int]:
    """The live replica processes of a `processes` service, found the hard way: every process
    whose environment names the project and service and that leads its own process group (a
    replica's children share its group). Counts what really runs, whatever pid files say."""
    markers = {f"DOCKTOR_PROJECT={project}".encode(), f"DOCKTOR_SERVICE={service}".encode()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state = stat[stat.rfind(")") + 2 :].split()[0]
        pid = int(entry.name)
        if markers <= environ and state != "Z":
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:
                    found.append(pid)
    return sorted(found)


def process_alive(pid: int) -> bool:
    """True while pid runs; a zombie has exited (only its parent has yet to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def assert_gapless(sequences: list[int], what: str) -> None:
    """Decision sequence numbers 1..n, each once, in order."""
    assert sequences == list(range(1, len(sequences) + 1)), f"{what}: {sequences}"


async def queue_with_backlog(nats_url: str, stream: str, subject: str, messages: int) -> None:
    """A JetStream stream, its durable pull consumer `workers` and `messages` waiting in it,
    which nobody consumes: a backlog that stays put for as long as a test needs it."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT)
        )
        for index in range(messages):
            await js.publish(subject, f"job {index}".encode())
    finally:
        await connection.close()


# A replica that does nothing for long enough; the tests stop it.
IDLE_COMMAND = [sys.executable, "-c", "import time; time.sleep(600)"]


def write_idle_config(
    tmp_path: Path,
    temporal_address: str,
    prefix: str,
    tag: str,
    journal: bool = True,
    **service: object,
) -> Path:
    """A docktor.yaml with one `consumer` of idle processes, 1..2 replicas, 1 s checks, on its
    own project and task queue, plus the `service` fields given. No replicas yet and min 1:
    the first iteration scales 0 -> 1."""
    consumer: dict[str, object] = {
        "name": "consumer",
        "backend": "processes",
        "command": IDLE_COMMAND,
        "min_replicas": 1,
        "max_replicas": 2,
        "check_interval": "1s",
        "stop_grace_period": "2s",
    }
    consumer.update(service)
    document: dict[str, object] = {
        "project": f"{prefix}-{tag}",
        "state_dir": str(tmp_path / "state"),
        "temporal": {"address": temporal_address, "task_queue": f"docktor-{prefix}-{tag}"},
        "services": [consumer],
    }
    if journal:
        document["journal"] = str(tmp_path / "decisions.jsonl")
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def write_rate_log(
    path: Path,
    workflow_id: str,
    rate: Callable[[float], float],
    seconds: float,
    step: float,
    end: datetime,
    service: str = "consumer",
    also: dict[str, float] | None = None,
) -> None:
    """`seconds` of an earlier run's decisions, one every `step` up to `end`, as the record
    activity writes them: each with the mean queue.rate_in of the interval ending at its time
    (`rate` of the interval's middle, in epoch seconds), a backlog of 0 and 2 replicas, unless
    `also` says otherwise. For warm-start tests."""
    from docktor.journal import append_decision
    from docktor.values import Decision

    t, sequence = -seconds, 0
    while t < 0:
        sequence += 1
        at = end + timedelta(seconds=t)
        observations = {"queue.rate_in": rate(at.timestamp() - step / 2), "queue.backlog": 0.0}
        observations.update(also or {})
        decision = Decision(
            timestamp=at,
            service=service,
            action="hold",
            current_replicas=2,
            target_replicas=2,
            reason="an earlier run",
            observations=observations,
            sequence=sequence,
            workflow_id=workflow_id,
            first_run_id="an-earlier-run",
        )
        append_decision(path, decision)
        t += step
