"""The whole loop on a Redis stream: a Temporal dev server, redis-server, the real activities,
and the redis-streams example's consumer.py replicas started and stopped as OS processes. The
same rules as the NATS loop test (helpers.burst_service): a burst of entries must scale the
consumer up; the quiet after must scale it back down."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml
from helpers import (
    assert_burst_scaled_up_and_down,
    async_wait_for,
    burst_service,
    serving_loops,
)
from temporalio.client import Client

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedRedis, EmbeddedTemporal
from docktor.journal import read_decisions
from docktor.sources import queue_block
from docktor.sources.redis import RedisQueueSpec
from docktor.spec import DocktorConfig, load_config

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "redis-streams"
BURST = 1500


def write_config(tmp_path: Path, redis_url: str, temporal_address: str, tag: str) -> Path:
    stream = f"e2e-{tag}"
    queue = {"kind": "redis", "url": redis_url, "stream": stream, "group": "workers"}
    config = {
        "project": f"e2e-redis-{tag}",
        "temporal": {"address": temporal_address, "task_queue": f"docktor-e2e-redis-{tag}"},
        "journal": str(tmp_path / "decisions.jsonl"),
        "services": [
            {
                **burst_service("processes", queue=queue),
                "command": [sys.executable, str(EXAMPLE / "consumer.py")],
                "env": {
                    "REDIS_URL": redis_url,
                    "JOBS_STREAM": stream,
                    "JOBS_GROUP": "workers",
                    "WORK_MS": "20",
                },
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def stack(
    tmp_path: Path, redis_server: EmbeddedRedis, temporal_dev: EmbeddedTemporal
) -> AsyncIterator[tuple[DocktorConfig, Client, aioredis.Redis]]:
    tag = uuid.uuid4().hex[:6]
    config = load_config(write_config(tmp_path, redis_server.url, temporal_dev.address, tag))
    service = config.services[0]
    stream = queue_block(service, RedisQueueSpec).stream
    producer = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    # The group exists before the loop's first look (the consumer would create it too).
    await producer.xgroup_create(stream, "workers", id="0", mkstream=True)
    try:
        async with serving_loops(config) as client:
            yield config, client, producer
    finally:
        await ProcessScaler(service, project=config.project or "").stop_all()
        await producer.delete(stream)
        await producer.aclose()


async def test_burst_scales_the_example_consumer_up_and_quiet_scales_it_down(
    stack: tuple[DocktorConfig, Client, aioredis.Redis],
) -> None:
    config, client, producer = stack
    service = config.services[0]
    stream = queue_block(service, RedisQueueSpec).stream
    scaler = ProcessScaler(service, project=config.project or "")

    assert (await LoopClient(client, config).start(service)).started

    async def consumers(count: int) -> bool:
        return await scaler.replicas() >= count

    await async_wait_for(lambda: consumers(1), 30, "first replica")

    pipe = producer.pipeline(transaction=False)
    for index in range(BURST):
        pipe.xadd(stream, {"job": str(index)})
    await pipe.execute()

    await assert_burst_scaled_up_and_down(client, config, service)
    assert await scaler.replicas() == service.min_replicas

    # Every entry was worked off and acknowledged through the group.
    group = next(g for g in await producer.xinfo_groups(stream))
    assert group["lag"] == 0 and group["pending"] == 0

    decisions = await LoopClient(client, config).decisions(service.name, tail=50)
    # The rates came from the Redis counters: entries were seen arriving and acknowledged.
    assert any(d.observations.get("queue.rate_in", 0) > 0 for d in decisions)
    assert any(d.observations.get("queue.rate_out", 0) > 0 for d in decisions)

    final = await LoopClient(client, config).stop(service.name)
    assert final.last_decision is not None and final.last_decision.action == "stopped"
    journal = read_decisions(config.journal_path)
    assert {d.action for d in journal} >= {"scale_up", "scale_down", "stopped"}
