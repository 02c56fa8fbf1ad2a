"""The example's consumer.py through a NATS outage: nats-server stopped under running consumers
and started again on the same port and store. The consumers must ride it out (no crash, one
line per reconnect problem, no tracebacks), pick up work again without a restart, and stop
promptly on SIGTERM, whether connected or still reconnecting."""

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
from helpers import async_wait_for, wait_for

from docktor.dev.embedded import EmbeddedNats, free_port, start_nats

EXAMPLE = Path(__file__).parents[2] / "examples" / "nats-multi"
STREAM, SUBJECT, DURABLE = "OUTAGE", "outage.work", "workers"
# A consumer that has been told to stop must be gone within this long: it pulls for 1 s, so
# this is a loaded machine's margin, far from a hang.
PROMPT_EXIT = 10.0


@dataclass
class Consumer:
    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def refused(self) -> int:
        """Reconnect attempts the server refused so far."""
        return sum("Connect call failed" in x for x in self.lines())

    def stop(self) -> float:
        """SIGTERM, then how long it took to exit (fails when it did not within PROMPT_EXIT)."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=PROMPT_EXIT)
        return time.monotonic() - began


@pytest.fixture
def server(tmp_path: Path) -> Iterator[list[EmbeddedNats]]:
    """A nats-server of this test's own (it is stopped and restarted); the current one last."""
    servers = [start_nats(tmp_path / "nats")]
    try:
        yield servers
    finally:
        for each in servers:
            each.stop()


@pytest.fixture
def consumers(tmp_path: Path) -> Iterator[list[Consumer]]:
    started: list[Consumer] = []
    try:
        yield started
    finally:
        for consumer in started:
            if consumer.process.poll() is None:
                consumer.process.kill()
                consumer.process.wait()


def start_consumer(url: str, replica: int, tmp_path: Path) -> Consumer:
    log = tmp_path / f"consumer-{replica}.log"
    env = {
        **os.environ,
        "NATS_URL": url,
        "JOBS_STREAM": STREAM,
        "JOBS_SUBJECT": SUBJECT,
        "JOBS_DURABLE": DURABLE,
        "WORK_MS": "1",
        "DOCKTOR_REPLICA": str(replica),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "consumer.py")],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return Consumer(process, log)


async def publish_and_wait_done(url: str, count: int) -> None:
    """Publish `count` jobs and wait until the consumers have acked every job in the stream."""
    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        for index in range(count):
            await js.publish(SUBJECT, f"job {index}".encode())
        last = (await js.stream_info(STREAM)).state.last_seq

        async def all_acked() -> bool:
            info = await js.consumer_info(STREAM, DURABLE)
            return info.ack_floor is not None and info.ack_floor.stream_seq >= last

        await async_wait_for(all_acked, 30, f"every job up to {last} acked")
    finally:
        await connection.close()


async def test_consumers_ride_out_a_nats_outage_and_stop_promptly(
    tmp_path: Path, server: list[EmbeddedNats], consumers: list[Consumer]
) -> None:
    url, port = server[0].url, server[0].port
    first = start_consumer(url, 1, tmp_path)
    consumers.append(first)
    wait_for(lambda: any("pulling from" in x for x in first.lines()), 30, "consumer 1 up")
    second = start_consumer(url, 2, tmp_path)
    consumers.append(second)
    wait_for(lambda: any("pulling from" in x for x in second.lines()), 30, "consumer 2 up")
    await publish_and_wait_done(url, 20)

    # The outage: long enough for a few reconnect attempts by each consumer.
    before = {id(c): len(c.lines()) for c in consumers}
    server[-1].stop()
    for consumer in consumers:
        wait_for(
            lambda c=consumer: len(c.lines()) >= before[id(c)] + 5,
            30,
            "the consumer to report its reconnect attempts",
        )
        assert consumer.process.poll() is None, "\n".join(consumer.lines())

    # Back on the same port and store: work flows again, without restarting anyone.
    server.append(start_nats(tmp_path / "nats", port=port))
    await publish_and_wait_done(url, 20)
    assert all(c.process.poll() is None for c in consumers)
    assert first.stop() < PROMPT_EXIT and first.process.returncode == 0

    # Stopped while reconnecting, after failed attempts: by then the client holds what it
    # buffered meanwhile (its pull requests), which closing cannot deliver. Exits promptly and
    # cleanly too.
    seen = second.refused()
    server[-1].stop()
    wait_for(lambda: second.refused() >= seen + 2, 30, "consumer 2 to fail to reconnect twice")
    assert second.stop() < PROMPT_EXIT and second.process.returncode == 0

    for consumer in consumers:
        output = consumer.lines()
        assert not [x for x in output if "Traceback" in x or x[:1].isspace()], "\n".join(output)
        # One line per problem: a handful per outage, not a screenful per attempt.
        assert len(output) < 60, "\n".join(output)


def test_a_consumer_started_while_nats_is_down_stops_promptly(
    tmp_path: Path, consumers: list[Consumer]
) -> None:
    """It waits for NATS as it would reconnect (a replica may be started mid-outage), and a
    SIGTERM ends the wait: it used to retry its first connect for ever, deaf to SIGTERM."""
    consumer = start_consumer(f"nats://127.0.0.1:{free_port()}", 1, tmp_path)
    consumers.append(consumer)
    wait_for(lambda: consumer.refused() >= 2, 30, "the consumer to fail to connect twice")
    assert consumer.process.poll() is None, "\n".join(consumer.lines())
    assert consumer.stop() < PROMPT_EXIT and consumer.process.returncode == 0
    output = consumer.lines()
    assert not [x for x in output if "Traceback" in x or x[:1].isspace()], "\n".join(output)
