"""RedisStreamSource against a real redis-server (the session's redis_server): every metric
checked against the known number of entries added, delivered and acknowledged, and against
what XINFO / XPENDING report themselves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from helpers import async_wait_for, require_redis_server

import docktor.sources.redis as redis_source
from docktor.dev.embedded import EmbeddedRedis, free_port, start_redis
from docktor.plan import ServicePlan
from docktor.policy import derive_rates
from docktor.sources import MetricConfigError, MetricUnavailable, source_class
from docktor.sources.redis import RedisQueueSpec, RedisStreamSource
from docktor.sources.sampling import wanted
from docktor.values import Observation

pytestmark = pytest.mark.integration

GROUP = "workers"


@dataclass
class Stream:
    """A stream with one consumer group reading from its start, made fresh for each test."""

    client: aioredis.Redis
    name: str
    url: str

    def spec(self, metrics: list[str] | None = None, name: str = "consumer") -> ServicePlan:
        queue = RedisQueueSpec(url=self.url, stream=self.name, group=GROUP, metrics=metrics or [])
        return ServicePlan(name=name, backend="compose", queue=queue)

    async def add(self, count: int) -> list[str]:
        return [await self.client.xadd(self.name, {"job": str(i)}) for i in range(count)]

    async def deliver(self, count: int, consumer: str = "c1") -> list[str]:
        """XREADGROUP `count` new entries as a replica would (they become pending)."""
        reply = await self.client.xreadgroup(GROUP, consumer, {self.name: ">"}, count=count)
        ids = [entry_id for entry_id, _ in reply[0][1]] if reply else []
        assert len(ids) == count
        return ids

    async def ack(self, ids: list[str]) -> None:
        assert await self.client.xack(self.name, GROUP, *ids) == len(ids)

    async def xinfo_group(self) -> dict[str, object]:
        groups = await self.client.xinfo_groups(self.name)
        return next(g for g in groups if g["name"] == GROUP)


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    await connection.aclose()


@pytest.fixture
async def stream(client: aioredis.Redis, redis_server: EmbeddedRedis) -> AsyncIterator[Stream]:
    name = f"orders-{uuid.uuid4().hex[:8]}"
    await client.xgroup_create(name, GROUP, id="0", mkstream=True)
    yield Stream(client=client, name=name, url=redis_server.url)
    await client.delete(name)


@pytest.fixture
async def source() -> AsyncIterator[RedisStreamSource]:
    metric_source = RedisStreamSource()
    yield metric_source
    await metric_source.close()


def test_registered_as_the_redis_kind() -> None:
    assert source_class("redis") is RedisStreamSource


async def test_every_metric_follows_entries_added_delivered_and_acknowledged(
    stream: Stream, source: RedisStreamSource
) -> None:
    await stream.add(10)
    gauges, counters = await source.sample(stream.spec())
    assert gauges == {
        "queue.backlog": 10,
        "queue.ack_pending": 0,
        "queue.redelivered": 0,
        "queue.consumers": 0,
    }
    assert counters == {"queue.entries_added": 10, "queue.entries_acked": 0}

    # 6 delivered to c1, 4 of them acknowledged; then one of the 2 still pending is claimed by
    # c2 (as the example's consumer takes over from a replica that died): delivered twice.
    delivered = await stream.deliver(6)
    await stream.ack(delivered[:4])
    await stream.client.xclaim(stream.name, GROUP, "c2", 0, [delivered[4]])
    gauges, counters = await source.sample(stream.spec())
    assert gauges == {
        "queue.backlog": 4,
        "queue.ack_pending": 2,
        "queue.redelivered": 1,
        "queue.consumers": 2,
    }
    assert counters == {"queue.entries_added": 10, "queue.entries_acked": 4}

    # The same figures as Redis reports them itself.
    group = await stream.xinfo_group()
    info = await stream.client.xinfo_stream(stream.name)
    pending = await stream.client.xpending_range(stream.name, GROUP, "-", "+", 100)
    assert gauges["queue.backlog"] == group["lag"]
    assert gauges["queue.ack_pending"] == group["pending"] == len(pending)
    assert gauges["queue.consumers"] == group["consumers"]
    assert gauges["queue.redelivered"] == sum(p["times_delivered"] > 1 for p in pending)
    assert counters["queue.entries_added"] == info["entries-added"]
    assert counters["queue.entries_acked"] == group["entries-read"] - group["pending"]

    # Everything delivered and acknowledged: nothing waits, nothing is in flight.
    await stream.ack(delivered[4:])
    await stream.ack(await stream.deliver(4))
    gauges, counters = await source.sample(stream.spec())
    assert gauges["queue.backlog"] == gauges["queue.ack_pending"] == 0
    assert gauges["queue.redelivered"] == 0
    assert counters == {"queue.entries_added": 10, "queue.entries_acked": 10}


async def test_two_samples_give_rates(stream: Stream, source: RedisStreamSource) -> None:
    await stream.add(5)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    gauges, counters = await source.sample(stream.spec())
    before = Observation(
        taken_at=start, replicas=1, metrics=gauges, counters=counters, counter_rates=source.rates
    )
    await stream.add(30)
    await stream.ack(await stream.deliver(25))
    await stream.deliver(3)  # delivered, not acknowledged: not part of rate_out
    gauges, counters = await source.sample(stream.spec())
    # The sample times are chosen rather than slept: 30 added and 25 acknowledged in 10 s.
    after = Observation(
        taken_at=start + timedelta(seconds=10),
        replicas=1,
        metrics=gauges,
        counters=counters,
        counter_rates=source.rates,
    )
    assert derive_rates(after, before) == {"queue.rate_in": 3.0, "queue.rate_out": 2.5}


async def test_backlog_is_counted_where_redis_reports_no_lag(
    stream: Stream, source: RedisStreamSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry deleted after the group's position leaves Redis unable to say the lag (as an
    older server never can): the entries after last-delivered-id are counted instead, a page
    at a time (pages of 3 here, so several are read)."""
    monkeypatch.setattr(redis_source, "PAGE", 3)
    ids = await stream.add(12)
    await stream.ack(await stream.deliver(2))
    await stream.client.xdel(stream.name, ids[7])
    assert (await stream.xinfo_group())["lag"] is None
    gauges, _ = await source.sample(stream.spec())
    assert gauges["queue.backlog"] == 9  # 12 added, 2 delivered, 1 deleted

    await stream.ack(await stream.deliver(9))
    gauges, _ = await source.sample(stream.spec())
    assert gauges["queue.backlog"] == 0


async def test_redelivered_counts_every_page_of_pending_entries(
    stream: Stream, source: RedisStreamSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_source, "PAGE", 4)
    await stream.add(11)
    delivered = await stream.deliver(11)
    # Every other entry claimed by a second consumer: delivered twice.
    claimed = delivered[::2]
    await stream.client.xclaim(stream.name, GROUP, "c2", 0, claimed)
    gauges, _ = await source.sample(stream.spec())
    assert gauges["queue.ack_pending"] == 11
    assert gauges["queue.redelivered"] == len(claimed) == 6


async def test_missing_stream_and_group_name_what_is_missing(
    stream: Stream, source: RedisStreamSource
) -> None:
    no_stream = stream.spec()
    assert no_stream.queue is not None
    no_stream.queue.stream = "no-such-stream"
    with pytest.raises(MetricConfigError) as error:
        await source.sample(no_stream)
    assert str(error.value) == f"stream 'no-such-stream' not found on {stream.url}"
    with pytest.raises(MetricConfigError, match="no-such-stream"):
        await source.validate(no_stream)

    no_group = stream.spec()
    assert no_group.queue is not None
    no_group.queue.group = "nobody"
    expected = f"consumer group 'nobody' not found on stream '{stream.name}' ({stream.url})"
    with pytest.raises(MetricConfigError) as error:
        await source.sample(no_group)
    assert str(error.value) == expected
    with pytest.raises(MetricConfigError, match="'nobody'"):
        await source.validate(no_group)

    await source.validate(stream.spec())


async def test_a_key_that_is_not_a_stream_is_a_config_error(
    stream: Stream, source: RedisStreamSource
) -> None:
    key = f"plain-{uuid.uuid4().hex[:8]}"
    await stream.client.set(key, "x")
    try:
        spec = stream.spec()
        assert spec.queue is not None
        spec.queue.stream = key
        with pytest.raises(MetricConfigError) as error:
            await source.sample(spec)
        assert str(error.value) == f"key '{key}' on {stream.url} is not a stream"
    finally:
        await stream.client.delete(key)


async def test_unreachable_server_is_unavailable_and_hides_the_password(
    source: RedisStreamSource,
) -> None:
    port = free_port()  # nothing listens there
    spec = ServicePlan(
        name="lost",
        backend="compose",
        queue=RedisQueueSpec(url=f"redis://:s3cret@127.0.0.1:{port}/0", stream="s", group="g"),
    )
    with pytest.raises(MetricUnavailable) as error:
        await source.sample(spec)
    assert str(error.value) == (
        f"redis://:***@127.0.0.1:{port}/0: cannot connect (connection refused)"
    )


async def test_services_on_one_url_share_one_connection(
    stream: Stream, client: aioredis.Redis, source: RedisStreamSource
) -> None:
    other = f"invoices-{uuid.uuid4().hex[:8]}"
    await client.xgroup_create(other, GROUP, id="0", mkstream=True)
    try:
        second = stream.spec(name="billing")
        assert second.queue is not None
        second.queue.stream = other
        # Sampled at the same moment: they take turns on the one pooled connection.
        results = await asyncio.gather(
            source.sample(stream.spec()), source.sample(second), source.sample(stream.spec())
        )
        assert len(results) == 3
        assert list(source.clients) == [stream.url]
        connected = [c for c in await client.client_list() if c["name"] == "docktor"]
        assert len(connected) == 1
    finally:
        await client.delete(other)


async def test_close_empties_the_pool_and_disconnects(
    stream: Stream, client: aioredis.Redis
) -> None:
    metric_source = RedisStreamSource()
    await metric_source.sample(stream.spec())
    assert [c for c in await client.client_list() if c["name"] == "docktor"]
    await metric_source.close()
    assert metric_source.clients == {}

    async def gone() -> bool:
        return not [c for c in await client.client_list() if c["name"] == "docktor"]

    await async_wait_for(gone, 10, "the source's connection closed on the server")


async def test_metrics_filter_keeps_named_gauges_and_needed_counters(
    stream: Stream, source: RedisStreamSource
) -> None:
    await stream.add(2)
    sample = await source.sample(stream.spec())
    gauges, counters = wanted(source, ["queue.backlog", "queue.rate_out"], *sample)
    assert gauges == {"queue.backlog": 2}
    assert counters == {"queue.entries_acked": 0}


@pytest.fixture
async def password_server(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A redis-server of this test's own that requires a password (CONFIG SET requirepass)."""
    require_redis_server()
    server = start_redis(tmp_path)
    try:
        client = aioredis.Redis.from_url(server.url)
        await client.xgroup_create("jobs", GROUP, id="0", mkstream=True)
        await client.config_set("requirepass", "s3cret")
        await client.aclose()
        yield server
    finally:
        server.stop()


async def test_password_comes_from_the_workers_environment_never_the_spec(
    password_server: EmbeddedRedis, source: RedisStreamSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = RedisQueueSpec(
        url=password_server.url, stream="jobs", group=GROUP, password_env="JOBS_REDIS_PASSWORD"
    )
    spec = ServicePlan(name="consumer", backend="compose", queue=queue)

    with pytest.raises(MetricConfigError) as error:
        await source.sample(spec)
    assert str(error.value) == (
        "queue.password_env: JOBS_REDIS_PASSWORD is not set in the worker's environment"
    )

    monkeypatch.setenv("JOBS_REDIS_PASSWORD", "s3cret")
    gauges, _ = await source.sample(spec)
    assert gauges["queue.backlog"] == 0
    assert "s3cret" not in spec.model_dump_json()


async def test_a_wrong_or_missing_password_is_a_config_error(
    password_server: EmbeddedRedis, source: RedisStreamSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBS_REDIS_PASSWORD", "wrong")
    url = password_server.url
    for password_env in ("JOBS_REDIS_PASSWORD", None):
        queue = RedisQueueSpec(url=url, stream="jobs", group=GROUP, password_env=password_env)
        spec = ServicePlan(name="consumer", backend="compose", queue=queue)
        with pytest.raises(MetricConfigError, match=f"^{url}: authentication failed"):
            await source.sample(spec)
