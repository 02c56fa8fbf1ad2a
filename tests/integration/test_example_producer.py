"""The examples' producer.py (nats-multi and redis-streams) through a server crash and an outage.

The crash is the one that stalls a publisher for good: the server stops reading with a batch of
ours unanswered in its socket (frozen with SIGSTOP until the kernel holds unread bytes from us),
then dies (SIGKILL) and comes back on the same port. That batch's confirmations never come. The
producer must give up on it, reconnect, add to the queue again without a restart, and stop
promptly on SIGTERM (exit code 0, no traceback), whether the server is back or still away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import redis
from helpers import async_wait_for, require_redis_server, wait_for

from docktor.dev.embedded import (
    EmbeddedNats,
    EmbeddedRedis,
    ManagedProcess,
    free_port,
    start_nats,
    start_redis,
)

EXAMPLES = Path(__file__).parents[2] / "examples"
STREAM, SUBJECT = "PRODUCE", "produce.work"
# SIGTERM to exit: a pacing tick is 50 ms and nothing at the end waits on the server, so this
# is a loaded machine's margin, far from a hang.
PROMPT_EXIT = 5.0
# From a restart to entries arriving again: an unanswered batch is given up after 5 s and NATS
# is retried every 2 s; the rest is margin for a machine shared with other suites.
RESUMES_WITHIN = 30.0
# Messages that must arrive after the restart: a few pacing ticks at 100 msg/s.
MORE = 50


@dataclass
class Producer:
    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def stop(self) -> float:
        """SIGTERM, then how long it took to exit (fails when it did not within PROMPT_EXIT)."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=PROMPT_EXIT)
        return time.monotonic() - began

    def assert_clean(self) -> None:
        output = self.lines()
        assert self.process.returncode == 0, "\n".join(output)
        assert not [x for x in output if "Traceback" in x or x[:1].isspace()], "\n".join(output)


@pytest.fixture
def producers() -> Iterator[list[Producer]]:
    started: list[Producer] = []
    try:
        yield started
    finally:
        for producer in started:
            if producer.process.poll() is None:
                producer.process.kill()
                producer.process.wait()


def start_producer(example: str, tmp_path: Path, producers: list[Producer], **env: str) -> Producer:
    log = tmp_path / f"{example}-producer.log"
    settings = {"PRODUCER_RATE": "100", "PRODUCER_BURST_EVERY": "0", **env}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / example / "producer.py")],
            env={**os.environ, **settings},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    producer = Producer(process, log)
    producers.append(producer)
    return producer


def unread_bytes(port: int) -> int:
    """Bytes clients have sent to 127.0.0.1:`port` that the server has not read yet."""
    local = f"0100007F:{port:04X}"
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01":  # ESTABLISHED
            total += int(fields[4].split(":")[1], 16)  # rx_queue
    return total


def crash_with_a_batch_unanswered(server: ManagedProcess, port: int) -> None:
    """Freeze the server until a batch of the producer's waits unread, then kill it."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: unread_bytes(port) > 0, 10, "a batch sent to the frozen server")
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.stop()  # reaps it


# ---- NATS JetStream ------------------------------------------------------------------------


@pytest.fixture
def nats_servers(tmp_path: Path) -> Iterator[list[EmbeddedNats]]:
    """This test's own nats-server (it is crashed and restarted); the current one last."""
    started = [start_nats(tmp_path / "nats")]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def start_nats_producer(url: str, tmp_path: Path, producers: list[Producer]) -> Producer:
    env = {"NATS_URL": url, "JOBS_STREAM": STREAM, "JOBS_SUBJECT": SUBJECT}
    return start_producer("nats-multi", tmp_path, producers, **env)


async def stored(url: str) -> int:
    """Messages in the stream (0 while it does not exist yet)."""
    connection = await nats.connect(url, allow_reconnect=False)
    try:
        info = await connection.jetstream().stream_info(STREAM)
        return info.state.messages
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await connection.close()


async def wait_stored(url: str, at_least: int, what: str) -> int:
    async def enough() -> int:
        count = await stored(url)
        return count if count >= at_least else 0

    return int(await async_wait_for(enough, RESUMES_WITHIN, what))


async def test_nats_producer_publishes_again_after_a_crash_and_stops_on_sigterm(
    tmp_path: Path, nats_servers: list[EmbeddedNats], producers: list[Producer]
) -> None:
    url, port = nats_servers[0].url, nats_servers[0].port
    producer = start_nats_producer(url, tmp_path, producers)
    await wait_stored(url, MORE, "the producer publishing")

    crash_with_a_batch_unanswered(nats_servers[0], port)
    nats_servers.append(start_nats(tmp_path / "nats", port=port))
    after_restart = await stored(url)
    await wait_stored(url, after_restart + MORE, "the producer publishing again")

    assert producer.process.poll() is None, "\n".join(producer.lines())
    assert producer.stop() < PROMPT_EXIT
    producer.assert_clean()


async def test_nats_producer_stops_promptly_while_nats_is_down(
    tmp_path: Path, nats_servers: list[EmbeddedNats], producers: list[Producer]
) -> None:
    url = nats_servers[0].url
    producer = start_nats_producer(url, tmp_path, producers)
    await wait_stored(url, MORE, "the producer publishing")

    nats_servers[0].stop()
    wait_for(
        lambda: any("Connect call failed" in x for x in producer.lines()),
        30,
        "the producer to fail to reconnect",
    )
    assert producer.stop() < PROMPT_EXIT
    producer.assert_clean()


async def test_nats_producer_started_before_nats_waits_for_it(
    tmp_path: Path, producers: list[Producer]
) -> None:
    """Started first, it retries as it would reconnect (it used to die on a traceback), and
    publishes once NATS is there."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    producer = start_nats_producer(url, tmp_path, producers)
    wait_for(
        lambda: sum("Connect call failed" in x for x in producer.lines()) >= 2,
        30,
        "the producer to fail to connect twice",
    )
    with start_nats(tmp_path / "nats", port=port):
        await wait_stored(url, MORE, "the producer publishing")
        assert producer.stop() < PROMPT_EXIT
    producer.assert_clean()


# ---- Redis Streams -------------------------------------------------------------------------


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[list[EmbeddedRedis]]:
    require_redis_server()
    started = [start_redis(tmp_path / "redis")]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def wait_added(url: str, at_least: int, what: str) -> int:
    """Wait until the stream `jobs` holds `at_least` entries (servers keep nothing across a
    restart, so after one this counts what was added since)."""

    def enough() -> int:
        with redis.Redis.from_url(url, socket_timeout=2) as client:
            count = int(client.xlen("jobs"))
        return count if count >= at_least else 0

    return int(wait_for(enough, RESUMES_WITHIN, what))


def test_redis_producer_adds_again_after_a_crash_and_stops_on_sigterm(
    tmp_path: Path, redis_servers: list[EmbeddedRedis], producers: list[Producer]
) -> None:
    url, port = redis_servers[0].url, redis_servers[0].port
    producer = start_producer("redis-streams", tmp_path, producers, REDIS_URL=url)
    wait_added(url, MORE, "the producer adding entries")

    crash_with_a_batch_unanswered(redis_servers[0], port)
    redis_servers.append(start_redis(tmp_path / "redis", port=port))
    wait_added(url, MORE, "the producer adding entries again")

    assert producer.process.poll() is None, "\n".join(producer.lines())
    assert producer.stop() < PROMPT_EXIT
    producer.assert_clean()


def test_redis_producer_stops_promptly_while_redis_is_down(
    tmp_path: Path, redis_servers: list[EmbeddedRedis], producers: list[Producer]
) -> None:
    url = redis_servers[0].url
    producer = start_producer("redis-streams", tmp_path, producers, REDIS_URL=url)
    wait_added(url, MORE, "the producer adding entries")

    seen = len(producer.lines())
    redis_servers[0].stop()
    wait_for(lambda: len(producer.lines()) > seen, 30, "the producer to report the outage")
    assert producer.stop() < PROMPT_EXIT
    producer.assert_clean()
