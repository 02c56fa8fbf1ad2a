"""The parts a chaos run breaks, as real processes: the embedded Temporal dev server, nats-server
and redis-server (docktor.dev.embedded, each restarted on its own state and ports), two
`python -m worker` on one config, and the example producers. Every start and stop blocks: the
runner calls them in a thread."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import yaml

from docktor.backends.processes import ProcessScaler
from docktor.dev.bench.chaos.plan import (
    EXAMPLES,
    IDLE_MAX,
    IDLE_MIN,
    ChaosOptions,
    Controlled,
    controlled_services,
    idle_names,
)
from docktor.dev.embedded import (
    EmbeddedNats,
    EmbeddedRedis,
    EmbeddedTemporal,
    ManagedProcess,
    spawn,
    start_nats,
    start_redis,
    start_temporal,
)
from docktor.spec import DocktorConfig, load_config

# Each run its own project (and so its own replicas' markers, found in /proc).
PROJECT_PREFIX = "chaos"
# An idle replica: nothing to do, nearly nothing to keep (no interpreter per replica).
IDLE_COMMAND = ["sleep", "86400"]
NATS_STREAM, NATS_SUBJECT, DURABLE = "JOBS", "jobs.work", "workers"
REDIS_STREAM, REDIS_GROUP = "jobs", "workers"
# The decision log's own small disk, so that it can be filled (a disk-full window) without
# touching anyone else's; far more than a 30-minute run writes.
JOURNAL_DISK = "256m"


@dataclass
class Stack:
    folder: Path
    options: ChaosOptions
    temporal: EmbeddedTemporal
    nats: EmbeddedNats
    redis: EmbeddedRedis
    config_path: Path
    config: DocktorConfig
    journal: Path
    # The tmpfs the decision log lives on, when one could be mounted (root, Linux).
    journal_disk: Path | None
    controlled: list[Controlled]
    workers: list[ManagedProcess | None] = field(default_factory=list)
    producers: dict[str, ManagedProcess] = field(default_factory=dict)
    # Epoch time each producer's schedule began: where its bursts are.
    producer_started: dict[str, float] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return self.config.project or ""

    # ---- workers ---------------------------------------------------------------------------

    def start_worker(self, index: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.options.code)}
        env.pop("OPENAI_API_KEY", None)
        args = [self.options.python, "-m", "worker", "--config", str(self.config_path)]
        worker = spawn(
            f"worker-{index}", args, self.folder / f"worker-{index}.log", self.options.code, env
        )
        while len(self.workers) <= index:
            self.workers.append(None)
        self.workers[index] = worker

    def kill_worker(self, index: int) -> None:
        """SIGKILL, as a crash or an OOM kill: no goodbye to the server. The worker leads its
        own process group, which holds nothing else (replicas have sessions of their own)."""
        worker = self.workers[index]
        if worker is None:
            return
        if worker.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.process.wait(timeout=10)
        worker.stop()  # forgets it (nothing is left to signal)
        self.workers[index] = None

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers if w is not None and w.running]

    # ---- servers ---------------------------------------------------------------------------

    def stop_temporal(self) -> None:
        self.temporal.stop()

    def start_temporal(self) -> None:
        self.temporal = start_temporal(
            self.folder / "temporal", port=self.temporal.port, ui_port=self.temporal.ui_port
        )

    def stop_nats(self) -> None:
        self.nats.stop()

    def start_nats(self) -> None:
        self.nats = start_nats(
            self.folder / "nats", port=self.nats.port, monitor_port=self.nats.monitor_port
        )

    def stop_redis(self) -> None:
        self.redis.stop()

    def start_redis(self) -> None:
        """Back on its port, empty (the embedded Redis keeps nothing): the consumers create
        their group again."""
        self.redis = start_redis(self.folder / "redis", port=self.redis.port)

    # ---- producers -------------------------------------------------------------------------

    def start_producer(self, service: Controlled, started: float) -> None:
        if service.queue == "nats":
            script = EXAMPLES / "nats-multi" / "producer.py"
            where = ["--url", self.nats.url, "--stream", NATS_STREAM, "--subject", NATS_SUBJECT]
        else:
            script = EXAMPLES / "redis-streams" / "producer.py"
            where = ["--url", self.redis.url, "--stream", REDIS_STREAM]
        args = [self.options.python, str(script), *where, *self.options.load.args()]
        log = self.folder / f"producer-{service.name}.log"
        self.producers[service.name] = spawn(f"producer-{service.name}", args, log)
        self.producer_started[service.name] = started

    def kill_producer(self, name: str) -> None:
        producer = self.producers.pop(name, None)
        if producer is not None:
            producer.stop(timeout=5)

    # ---- the end ---------------------------------------------------------------------------

    async def stop_replicas(self) -> None:
        for service in self.config.services:
            with contextlib.suppress(Exception):
                await ProcessScaler(service, project=self.config.project or "").stop_all()

    def close(self) -> None:
        """Everything this run started, by pid, then the decision log's disk."""
        for name in list(self.producers):
            self.kill_producer(name)
        for worker in self.workers:
            if worker is not None:
                worker.stop(timeout=20)
        for server in (self.temporal, self.nats, self.redis):
            server.stop()
        if self.journal_disk is not None:
            subprocess.run(["umount", "-l", str(self.journal_disk)], check=False)


def start_stack(folder: Path, options: ChaosOptions) -> Stack:
    """Servers, the config, the queues, the decision log's disk and the workers; not the loops
    nor the producers (the runner starts those when it is ready to watch them)."""
    temporal = start_temporal(folder / "temporal")
    nats = redis = None
    try:
        nats = start_nats(folder / "nats")
        redis = start_redis(folder / "redis")
        journal_dir = folder / "journal"
        journal_disk = _mount_small_disk(journal_dir)
        journal = journal_dir / "decisions.jsonl"
        controlled = controlled_services(options)
        path = write_config(folder, options, temporal, nats, redis, journal, controlled)
        stack = Stack(
            folder=folder,
            options=options,
            temporal=temporal,
            nats=nats,
            redis=redis,
            config_path=path,
            config=load_config(path),
            journal=journal,
            journal_disk=journal_disk,
            controlled=controlled,
        )
    except BaseException:
        for server in (temporal, nats, redis):
            if server is not None:
                server.stop()
        raise
    for index in range(options.workers):
        stack.start_worker(index)
    return stack


def _mount_small_disk(folder: Path) -> Path | None:
    """A tmpfs of its own for the decision log, when this process may mount one: a disk-full
    window is then a real ENOSPC. Elsewhere the fault falls back to a file where the log's
    folder should be."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={JOURNAL_DISK},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return folder if mounted.returncode == 0 else None


def write_config(
    folder: Path,
    options: ChaosOptions,
    temporal: EmbeddedTemporal,
    nats: EmbeddedNats,
    redis: EmbeddedRedis,
    journal: Path,
    controlled: list[Controlled],
) -> Path:
    services: list[dict[str, object]] = []
    for service in controlled:
        services.append(_controlled_service(service, nats, redis))
    for name in idle_names(options):
        services.append(
            {
                "name": name,
                "backend": "processes",
                "command": IDLE_COMMAND,
                "min_replicas": IDLE_MIN,
                "max_replicas": IDLE_MAX,
                "check_interval": options.idle_interval,
                "stop_grace_period": 1,
            }
        )
    document = {
        "project": f"{PROJECT_PREFIX}-{uuid.uuid4().hex[:6]}",
        "state_dir": str(folder / "state"),
        "journal": str(journal),
        "temporal": {"address": temporal.address, "task_queue": "docktor-chaos"},
        "services": services,
        "llm": {"provider": "none"},
    }
    path = folder / "docktor.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _controlled_service(
    service: Controlled, nats: EmbeddedNats, redis: EmbeddedRedis
) -> dict[str, object]:
    """The example's service (examples/*/docktor.yaml: the target policy, rates learned from the
    consumers), with a shorter scale-down window and a fallback, so a short run sees both."""
    if service.queue == "nats":
        command = ["python", str(EXAMPLES / "nats-multi" / "consumer.py")]
        env = {"NATS_URL": nats.url}
        queue: dict[str, object] = {
            "kind": "nats",
            "url": nats.url,
            "stream": NATS_STREAM,
            "consumer": DURABLE,
        }
    else:
        command = ["python", str(EXAMPLES / "redis-streams" / "consumer.py")]
        env = {"REDIS_URL": redis.url}
        queue = {"kind": "redis", "url": redis.url, "stream": REDIS_STREAM, "group": REDIS_GROUP}
    return {
        "name": service.name,
        "backend": "processes",
        "command": command,
        "env": {**env, "WORK_MS": str(service.work_ms)},
        "min_replicas": service.min_replicas,
        "max_replicas": service.max_replicas,
        "stop_grace_period": "5s",
        "policy": "target",
        "check_interval": service.check_interval,
        "target": {"queue.backlog_per_replica": 100},
        "rate": {"drain_within": "10s", "headroom": 0},
        "behavior": {"down": {"window": service.down_window}},
        "fallback": {"after": 3, "replicas": 3},
        "queue": queue,
    }


# ---- the queues, made before any consumer or loop looks at them -------------------------------


def _example(name: str, path: Path) -> ModuleType:
    """An example script as a module, so its own stream and consumer settings are used."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def make_queues(stack: Stack) -> None:
    """The NATS stream and its durable consumer as the example consumer makes them, and the
    Redis group: so the loops' first look finds the queue, not a missing one."""
    import nats

    consumer = _example("chaos_nats_consumer", EXAMPLES / "nats-multi" / "consumer.py")
    connection = await nats.connect(stack.nats.url)
    try:
        js = connection.jetstream()
        await consumer.ensure_stream(js, NATS_STREAM, NATS_SUBJECT, "[chaos]")
        await consumer.ensure_consumer(js, NATS_STREAM, DURABLE, NATS_SUBJECT)
    finally:
        await connection.close()
    await make_redis_group(stack.redis.url)


async def make_redis_group(url: str) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError

    client = aioredis.Redis.from_url(url)
    try:
        await client.xgroup_create(REDIS_STREAM, REDIS_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    finally:
        await client.aclose()


def fill(folder: Path) -> Path:
    """A file that takes every free byte of the disk `folder` is on; removing it frees them."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * (1 << 20)
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 512:
                    break
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
    return filler
