"""redis-server goes away and comes back on the same port (empty: the demo's and the tests'
servers keep nothing). The metric source says so as MetricUnavailable, a retry-worthy failure,
and reads again through the same pooled client once it is back; the example's consumers ride
it out, create their group again, and stop promptly when asked, even mid-outage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from helpers import async_wait_for, require_redis_server, wait_for

from docktor.dev.embedded import EmbeddedRedis, start_redis
from docktor.plan import ServicePlan
from docktor.sources import MetricUnavailable
from docktor.sources.redis import RedisQueueSpec, RedisStreamSource

EXAMPLE = Path(__file__).parents[2] / "examples" / "redis-streams"
STREAM, GROUP = "jobs", "workers"
# SIGTERM to exit: a batch of 1 ms entries, a read that blocks at most 1 s, the group goodbye.
PROMPT_EXIT = 5.0


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[EmbeddedRedis]]:
    """The servers a test starts (the first, then its restarts), all stopped at the end."""
    require_redis_server()
    started = [start_redis(tmp_path / "redis")]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


async def wait_all_acknowledged(url: str, added: int) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        for index in range(added):
            await client.xadd(STREAM, {"job": str(index)})

        async def drained() -> bool:
            groups = await client.xinfo_groups(STREAM)
            return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0

        await async_wait_for(drained, 30, f"{added} entries read and acknowledged")
    finally:
        await client.aclose()


async def test_source_is_unavailable_while_redis_is_down_and_reads_again_after(
    servers: list[EmbeddedRedis],
) -> None:
    url, port = servers[0].url, servers[0].port
    await wait_group(url)
    source = RedisStreamSource()
    spec = ServicePlan(
        name="consumer",
        backend="compose",
        queue=RedisQueueSpec(url=url, stream=STREAM, group=GROUP),
    )
    try:
        gauges, _ = await source.sample(spec)
        assert gauges["queue.backlog"] == 0
        client = source.clients[url]

        servers[0].stop()
        for _ in range(2):  # the broken pooled connection, then a refused new one
            with pytest.raises(MetricUnavailable, match=f"^{url}: cannot connect"):
                await source.sample(spec)

        servers.append(start_redis(servers[0].log_path.parent, port=port))
        await wait_group(url)
        gauges, _ = await source.sample(spec)
        assert gauges["queue.backlog"] == 0
        assert source.clients[url] is client  # the same pool, reconnected: nothing restarted
    finally:
        await source.close()


async def wait_group(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    finally:
        await client.aclose()


def start_consumer(url: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "consumer.log"
    env = {**os.environ, "REDIS_URL": url, "WORK_MS": "1", "DOCKTOR_REPLICA": "1"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "consumer.py")],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, log


async def test_example_consumer_rides_out_an_outage_and_stops_promptly(
    tmp_path: Path, servers: list[EmbeddedRedis]
) -> None:
    url, port = servers[0].url, servers[0].port
    process, log = start_consumer(url, tmp_path)

    def lines() -> list[str]:
        return log.read_text(errors="replace").splitlines()

    try:
        wait_for(lambda: any("reading jobs/workers" in x for x in lines()), 30, "consumer up")
        await wait_all_acknowledged(url, 20)

        seen = len(lines())
        servers[0].stop()
        wait_for(lambda: len(lines()) >= seen + 2, 30, "the consumer to report the outage")
        assert process.poll() is None, "\n".join(lines())
        assert all("Traceback" not in x for x in lines())

        # Back, empty: the consumer creates its group again and work flows, no restart.
        servers.append(start_redis(tmp_path / "redis", port=port))
        await wait_all_acknowledged(url, 20)

        # Stopped while Redis is away again: it leaves promptly and cleanly.
        seen = len(lines())
        servers[-1].stop()
        wait_for(lambda: len(lines()) >= seen + 1, 30, "the consumer to notice the outage")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert time.monotonic() - started < PROMPT_EXIT
        assert process.returncode == 0, "\n".join(lines())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
