"""NatsMetricSource against a real nats-server with JetStream (the session's nats_server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from docktor.dev.embedded import EmbeddedNats, free_port
from docktor.plan import ServicePlan
from docktor.policy import derive_rates
from docktor.sources import MetricConfigError, MetricUnavailable, source_class
from docktor.sources.nats import NatsMetricSource, NatsQueueSpec
from docktor.sources.sampling import wanted
from docktor.values import Observation

pytestmark = pytest.mark.integration

CONSUMER = "workers"


@dataclass
class Queue:
    """A stream with one durable pull consumer, made fresh for each test."""

    js: JetStreamContext
    stream: str
    subject: str
    url: str

    def spec(self, metrics: list[str] | None = None, name: str = "consumer") -> ServicePlan:
        queue = NatsQueueSpec(
            url=self.url, stream=self.stream, consumer=CONSUMER, metrics=metrics or []
        )
        return ServicePlan(name=name, backend="compose", queue=queue)

    async def publish(self, count: int) -> None:
        for i in range(count):
            await self.js.publish(self.subject, f"job {i}".encode())

    async def take(self, count: int, ack: bool = True) -> None:
        """Fetch `count` messages as a worker would; ack them (and wait for the server to record
        the ack) or leave them pending."""
        subscription = await self.js.pull_subscribe_bind(CONSUMER, stream=self.stream)
        taken = 0
        while taken < count:
            for message in await subscription.fetch(count - taken, timeout=5):
                if ack:
                    await message.ack_sync()
                taken += 1
        await subscription.unsubscribe()


@pytest.fixture
async def connection(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def queue(connection: NatsClient, nats_server: EmbeddedNats) -> AsyncIterator[Queue]:
    name = f"ORDERS_{uuid.uuid4().hex[:8].upper()}"
    subject = f"{name.lower()}.new"
    js = connection.jetstream()
    await js.add_stream(name=name, subjects=[subject])
    await js.add_consumer(
        name, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT)
    )
    yield Queue(js=js, stream=name, subject=subject, url=nats_server.url)
    await js.delete_stream(name)


@pytest.fixture
async def source() -> AsyncIterator[NatsMetricSource]:
    metric_source = NatsMetricSource()
    yield metric_source
    await metric_source.close()


def test_registered_as_the_nats_kind() -> None:
    assert source_class("nats") is NatsMetricSource


async def test_backlog_lag_and_ack_floor_follow_the_queue(
    queue: Queue, source: NatsMetricSource
) -> None:
    await queue.publish(10)
    gauges, counters = await source.sample(queue.spec())
    assert gauges == {
        "queue.backlog": 10,
        "queue.ack_pending": 0,
        "queue.redelivered": 0,
        "queue.waiting": 0,
        "queue.lag": 10,
    }
    assert counters == {"queue.stream_last_seq": 10, "queue.ack_floor": 0}

    await queue.take(4)
    await queue.take(2, ack=False)
    gauges, counters = await source.sample(queue.spec())
    assert gauges["queue.backlog"] == 4
    assert gauges["queue.ack_pending"] == 2
    assert gauges["queue.lag"] == 4
    assert counters == {"queue.stream_last_seq": 10, "queue.ack_floor": 4}


async def test_two_samples_give_rates(queue: Queue, source: NatsMetricSource) -> None:
    await queue.publish(5)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    gauges, counters = await source.sample(queue.spec())
    before = Observation(taken_at=start, replicas=1, metrics=gauges, counters=counters)

    await queue.publish(30)
    await queue.take(20)
    gauges, counters = await source.sample(queue.spec())
    # The sample times are chosen rather than slept: 30 published and 20 acked in 10 s.
    after = Observation(
        taken_at=start + timedelta(seconds=10), replicas=1, metrics=gauges, counters=counters
    )
    assert derive_rates(after, before) == {"queue.rate_in": 3.0, "queue.rate_out": 2.0}


async def test_missing_stream_and_consumer_name_what_is_missing(
    queue: Queue, source: NatsMetricSource
) -> None:
    no_stream = queue.spec()
    assert no_stream.queue is not None
    no_stream.queue.stream = "NO_SUCH_STREAM"
    expected = f"stream 'NO_SUCH_STREAM' not found on {queue.url}"
    with pytest.raises(MetricConfigError) as error:
        await source.sample(no_stream)
    assert str(error.value) == expected
    with pytest.raises(MetricConfigError, match="NO_SUCH_STREAM"):
        await source.validate(no_stream)

    no_consumer = queue.spec()
    assert no_consumer.queue is not None
    no_consumer.queue.consumer = "nobody"
    expected = f"consumer 'nobody' not found on stream '{queue.stream}' ({queue.url})"
    with pytest.raises(MetricConfigError) as error:
        await source.sample(no_consumer)
    assert str(error.value) == expected
    with pytest.raises(MetricConfigError, match="'nobody'"):
        await source.validate(no_consumer)

    await source.validate(queue.spec())


async def test_unreachable_server_is_unavailable(source: NatsMetricSource) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    spec = ServicePlan(
        name="lost", backend="compose", queue=NatsQueueSpec(url=url, stream="S", consumer="c")
    )
    with pytest.raises(MetricUnavailable) as error:
        await source.sample(spec)
    assert str(error.value).startswith(f"{url}: cannot connect (")
    assert url not in source.connections


async def test_services_on_one_url_share_one_connection(
    queue: Queue, connection: NatsClient, source: NatsMetricSource
) -> None:
    other = f"INVOICES_{uuid.uuid4().hex[:8].upper()}"
    js = connection.jetstream()
    await js.add_stream(name=other, subjects=[f"{other.lower()}.new"])
    await js.add_consumer(other, ConsumerConfig(durable_name=CONSUMER))
    try:
        second = queue.spec(name="billing")
        assert second.queue is not None
        second.queue.stream = other
        # Sampled at the same moment: the lock must still give one connection, not two.
        results = await asyncio.gather(
            source.sample(queue.spec()), source.sample(second), source.sample(queue.spec())
        )
        assert len(results) == 3
        assert list(source.connections) == [queue.url]
    finally:
        await js.delete_stream(other)


async def test_closed_connection_is_replaced_on_next_sample(
    queue: Queue, source: NatsMetricSource
) -> None:
    await queue.publish(3)
    await source.sample(queue.spec())
    first = source.connections[queue.url]
    await first.close()
    gauges, _ = await source.sample(queue.spec())
    assert gauges["queue.backlog"] == 3
    assert source.connections[queue.url] is not first
    assert source.connections[queue.url].is_connected


async def test_metrics_filter_keeps_named_gauges_and_needed_counters(
    queue: Queue, source: NatsMetricSource
) -> None:
    await queue.publish(2)
    sample = await source.sample(queue.spec())
    gauges, counters = wanted(source, ["queue.backlog", "queue.rate_in"], *sample)
    assert gauges == {"queue.backlog": 2}
    assert counters == {"queue.stream_last_seq": 2}

    gauges, counters = wanted(source, ["queue.lag"], *sample)
    assert gauges == {"queue.lag": 2}
    assert counters == {}


async def test_close_empties_the_pool(queue: Queue) -> None:
    metric_source = NatsMetricSource()
    await metric_source.sample(queue.spec())
    pooled = metric_source.connections[queue.url]
    await metric_source.close()
    assert metric_source.connections == {}
    assert pooled.is_closed


async def test_invalid_stream_name_is_a_config_error(
    queue: Queue, source: NatsMetricSource
) -> None:
    spec = queue.spec()
    assert spec.queue is not None
    spec.queue.stream = "orders.new"
    with pytest.raises(MetricConfigError, match="invalid stream name 'orders.new'"):
        await source.sample(spec)
