"""What a chaos run sees as it goes, about once a second: the replicas that really run (found in
/proc, not asked of docktor), each controlled queue's backlog and how much its producer has
added, and the decision log's new lines. The invariants that hold at every moment are checked
on each sample: never more replicas than max_replicas, never one replica number twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from docktor.dev.bench.chaos.plan import Controlled
from docktor.dev.bench.chaos.stack import (
    DURABLE,
    NATS_STREAM,
    REDIS_GROUP,
    REDIS_STREAM,
    Stack,
)

SAMPLE_EVERY = 1.0
# A query to a queue that does not answer within this is "unknown" for this sample.
QUEUE_TIMEOUT = 1.0


@dataclass
class Violation:
    invariant: str
    at: float  # epoch seconds
    service: str
    detail: str

    def line(self) -> str:
        when = datetime.fromtimestamp(self.at).astimezone().strftime("%H:%M:%S")
        return f"{when} {self.invariant} {self.service}: {self.detail}"


@dataclass
class QueueSample:
    backlog: int | None  # waiting + handed out, not acknowledged; None: the queue did not answer
    produced: int | None  # messages the producer has added so far (per server life)


@dataclass
class Sample:
    at: float
    replicas: dict[str, int]
    queues: dict[str, QueueSample]


def running_replicas(project: str) -> dict[str, list[tuple[int, int]]]:
    """(pid, replica number) of every live replica process of the project, by service: each
    process whose environment names the project and that leads its own process group (its
    children share the group). What runs, whatever pid files say."""
    marker = f"DOCKTOR_PROJECT={project}".encode()
    found: dict[str, list[tuple[int, int]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
            if marker not in environ:
                continue
            with open(f"/proc/{pid}/stat") as handle:
                stat = handle.read()
            if stat[stat.rfind(")") + 2 :].split()[0] == "Z" or os.getpgid(pid) != pid:
                continue
        except OSError:
            continue
        variables = dict(v.split(b"=", 1) for v in environ if b"=" in v)
        service = variables.get(b"DOCKTOR_SERVICE", b"").decode()
        number = int(variables.get(b"DOCKTOR_REPLICA", b"0") or 0)
        found.setdefault(service, []).append((pid, number))
    return found


class JournalTail:
    """New lines of the decision log since the last look, for the live view: a count and each
    loop's last decision time. Follows the file across a rotation; exact figures come from
    verify.py at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: tuple[int, int] | None = None
        self.offset = 0
        self.lines = 0
        self.last: dict[str, float] = {}
        self.partial = b""

    def read(self) -> None:
        try:
            with self.path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                identity = (stat.st_dev, stat.st_ino)
                if identity != self.file or stat.st_size < self.offset:
                    self.file, self.offset, self.partial = identity, 0, b""
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return
        self.offset += len(chunk)
        *whole, self.partial = (self.partial + chunk).split(b"\n")
        for raw in whole:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                line = json.loads(raw)
                self.last[line["service"]] = datetime.fromisoformat(line["timestamp"]).timestamp()
                self.lines += 1


@dataclass
class Watcher:
    stack: Stack
    limits: dict[str, int]  # max_replicas by service
    samples: list[Sample] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    # (invariant, service) of a breach under way: one violation per episode, not per sample.
    ongoing: set[tuple[str, str]] = field(default_factory=set)
    journal: JournalTail | None = None
    on_sample: Callable[[Sample], None] | None = None
    _nats: Any = None
    _redis: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        self.journal = JournalTail(self.stack.journal)
        try:
            while not stop.is_set():
                began = time.monotonic()
                await self.sample()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), max(0.05, SAMPLE_EVERY - (time.monotonic() - began))
                    )
        finally:
            await self.close()

    async def sample(self) -> Sample:
        replicas = await asyncio.to_thread(running_replicas, self.stack.project)
        now = time.time()
        self.check_replicas(now, replicas)
        queues = {}
        for service in self.stack.controlled:
            queues[service.name] = await self.queue(service)
        assert self.journal is not None
        await asyncio.to_thread(self.journal.read)
        sample = Sample(now, {s: len(replicas.get(s, [])) for s in self.limits}, queues)
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)
        return sample

    def check_replicas(self, now: float, replicas: dict[str, list[tuple[int, int]]]) -> None:
        for service, found in replicas.items():
            limit = self.limits.get(service)
            numbers = sorted(number for _, number in found)
            checks = {
                "replicas_within_max": (
                    limit is not None and len(found) > limit,
                    f"{len(found)} replicas running, max_replicas {limit}: numbers {numbers}",
                ),
                "replica_numbers_unique": (
                    len(set(numbers)) != len(numbers),
                    f"replica numbers {numbers} (pids {sorted(pid for pid, _ in found)})",
                ),
            }
            for invariant, (broken, detail) in checks.items():
                key = (invariant, service)
                if broken and key not in self.ongoing:
                    self.violations.append(Violation(invariant, now, service, detail))
                    self.ongoing.add(key)
                elif not broken:
                    self.ongoing.discard(key)

    # ---- the queues ------------------------------------------------------------------------

    async def queue(self, service: Controlled) -> QueueSample:
        try:
            if service.queue == "nats":
                return await asyncio.wait_for(self._nats_queue(), QUEUE_TIMEOUT * 2)
            return await asyncio.wait_for(self._redis_queue(), QUEUE_TIMEOUT * 2)
        except Exception:  # noqa: BLE001 - a queue that does not answer is an unknown sample
            return QueueSample(None, None)

    async def _nats_queue(self) -> QueueSample:
        if self._nats is None:
            import nats

            async def quiet(_: Exception) -> None:
                return None

            self._nats = await nats.connect(
                self.stack.nats.url,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=QUEUE_TIMEOUT,
                error_cb=quiet,
                disconnected_cb=None,
            )
        js = self._nats.jetstream(timeout=QUEUE_TIMEOUT)
        consumer = await js.consumer_info(NATS_STREAM, DURABLE)
        stream = await js.stream_info(NATS_STREAM)
        backlog = int(consumer.num_pending or 0) + int(consumer.num_ack_pending or 0)
        return QueueSample(backlog, int(stream.state.last_seq))

    async def _redis_queue(self) -> QueueSample:
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(
                self.stack.redis.url,
                socket_timeout=QUEUE_TIMEOUT,
                socket_connect_timeout=QUEUE_TIMEOUT,
            )
        groups = await self._redis.xinfo_groups(REDIS_STREAM)
        group = next(g for g in groups if g["name"] in (REDIS_GROUP, REDIS_GROUP.encode()))
        stream = await self._redis.xinfo_stream(REDIS_STREAM)
        backlog = int(group.get("lag") or 0) + int(group.get("pending") or 0)
        return QueueSample(backlog, int(stream.get("entries-added") or 0))

    async def close(self) -> None:
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await self._nats.close()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
