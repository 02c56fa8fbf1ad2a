"""RabbitMQSource against a real rabbitmq-server (the session's rabbitmq_server): every metric
checked against what rabbitmqctl reports for the queue (the broker's own figures, read without
the management plugin) and against the known number of messages published, acknowledged and
redelivered; a missing queue, vhost or a refused login is one config error naming it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from helpers import async_wait_for

from docktor.dev.embedded import EmbeddedRabbitMQ, free_port
from docktor.plan import ServicePlan
from docktor.policy import derive_rates
from docktor.sources import MetricConfigError, MetricUnavailable, source_class
from docktor.sources.rabbitmq import RabbitMQQueueSpec, RabbitMQSource
from docktor.sources.sampling import wanted
from docktor.values import Observation

pytestmark = pytest.mark.integration

# The broker refreshes its management figures every second (start_rabbitmq): a sample matches
# the broker's own state within a few seconds.
SETTLE = 20.0


@dataclass
class Queue:
    """A fresh durable queue, a channel to publish on and a consumer (prefetch 10, manual
    acks) that keeps what it was handed."""

    server: EmbeddedRabbitMQ
    connection: aio_pika.abc.AbstractRobustConnection
    name: str
    held: list[AbstractIncomingMessage] = field(default_factory=list)
    acked: int = 0

    def spec(self, **queue: Any) -> ServicePlan:
        block = {"url": self.server.url, "queue": self.name, **queue}
        if "management_url" not in block:
            block["management_url"] = self.server.management_url
        return ServicePlan(name="consumer", backend="compose", queue=RabbitMQQueueSpec(**block))

    async def publish(self, count: int) -> None:
        channel = await self.connection.channel()
        for index in range(count):
            await channel.default_exchange.publish(
                aio_pika.Message(f"job {index}".encode()), routing_key=self.name
            )
        await channel.close()

    async def consume(self, prefetch: int) -> None:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(self.name)

        async def keep(message: AbstractIncomingMessage) -> None:
            self.held.append(message)

        await queue.consume(keep)

    async def wait_held(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.held) >= count

        await async_wait_for(enough, SETTLE, f"{count} messages delivered")

    async def ack(self, messages: list[AbstractIncomingMessage]) -> None:
        for message in messages:
            await message.ack()
        self.acked += len(messages)

    async def ack_until(self, total: int) -> None:
        """Acknowledge what is held and what arrives, until `total` were acknowledged."""

        async def done() -> bool:
            await self.ack([m for m in self.held if not m.processed])
            return self.acked >= total

        await async_wait_for(done, SETTLE, f"{total} acknowledged")

    def broker(self) -> dict[str, int]:
        """rabbitmqctl's figures for the queue."""
        out = self.server.ctl(
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "--no-table-headers",
            "--quiet",
        )
        for line in out.splitlines():
            name, ready, unacked, consumers = line.split("\t")
            if name == self.name:
                return {"ready": int(ready), "unacked": int(unacked), "consumers": int(consumers)}
        raise AssertionError(f"{self.name} not listed by rabbitmqctl: {out!r}")


@pytest.fixture
async def queue(rabbitmq_server: EmbeddedRabbitMQ) -> AsyncIterator[Queue]:
    connection = await aio_pika.connect_robust(rabbitmq_server.url)
    channel = await connection.channel()
    name = f"orders-{uuid.uuid4().hex[:8]}"
    await channel.declare_queue(name, durable=True)
    yield Queue(rabbitmq_server, connection, name)
    await channel.queue_delete(name)
    await connection.close()


@pytest.fixture
async def source() -> AsyncIterator[RabbitMQSource]:
    metric_source = RabbitMQSource()
    yield metric_source
    await metric_source.close()


async def sample_when(
    source: RabbitMQSource, spec: ServicePlan, expected: dict[str, float], message: str
) -> tuple[dict[str, float], dict[str, float]]:
    """The first sample whose figures include `expected` (the broker refreshes them each
    second, so a change shows within a couple of samples)."""
    found: list[tuple[dict[str, float], dict[str, float]]] = []

    async def matches() -> bool:
        try:
            gauges, counters = await source.sample(spec)
        except MetricUnavailable:  # a queue this new has no figures yet
            return False
        found[:] = [(gauges, counters)]
        merged = {**gauges, **counters}
        return all(merged.get(k) == v for k, v in expected.items())

    try:
        await async_wait_for(matches, SETTLE, message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last sample {found}") from None
    return found[0]


def test_registered_as_the_rabbitmq_kind() -> None:
    assert source_class("rabbitmq") is RabbitMQSource


async def test_every_metric_matches_the_brokers_own_figures(
    queue: Queue, source: RabbitMQSource
) -> None:
    await queue.publish(50)
    gauges, counters = await sample_when(
        source, queue.spec(), {"queue.backlog": 50, "queue.published": 50}, "50 published"
    )
    assert gauges == {"queue.backlog": 50, "queue.ack_pending": 0, "queue.consumers": 0}
    assert counters == {"queue.published": 50, "queue.acked": 0, "queue.redeliveries": 0}

    # One consumer with prefetch 10 holds 10; it acknowledges 4 and hands 1 back (requeued,
    # so delivered again: a redelivery). The broker then refills its prefetch: the redelivered
    # one and 4 new, so 14 of the 50 have left the ready list.
    await queue.consume(prefetch=10)
    await queue.wait_held(10)
    await queue.ack(queue.held[:4])
    await queue.held[4].nack(requeue=True)
    await queue.wait_held(15)
    assert sum(bool(m.redelivered) for m in queue.held) == 1

    expected = {"queue.backlog": 36, "queue.ack_pending": 10, "queue.consumers": 1}
    expected |= {"queue.published": 50, "queue.acked": 4, "queue.redeliveries": 1}
    gauges, counters = await sample_when(source, queue.spec(), expected, "after the acks")
    broker = queue.broker()
    assert gauges == {
        "queue.backlog": broker["ready"],
        "queue.ack_pending": broker["unacked"],
        "queue.consumers": broker["consumers"],
    }
    assert counters == {"queue.published": 50, "queue.acked": 4, "queue.redeliveries": 1}

    # Everything acknowledged: nothing waits, nothing is in flight.
    await queue.ack_until(50)
    gauges, counters = await sample_when(
        source, queue.spec(), {"queue.backlog": 0, "queue.acked": 50}, "all acknowledged"
    )
    assert queue.broker() == {"ready": 0, "unacked": 0, "consumers": 1}
    assert gauges == {"queue.backlog": 0, "queue.ack_pending": 0, "queue.consumers": 1}
    assert counters == {"queue.published": 50, "queue.acked": 50, "queue.redeliveries": 1}


async def test_two_samples_give_rates(queue: Queue, source: RabbitMQSource) -> None:
    await queue.publish(5)
    gauges, counters = await sample_when(source, queue.spec(), {"queue.published": 5}, "5 in")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    before = Observation(
        taken_at=start, replicas=1, metrics=gauges, counters=counters, counter_rates=source.rates
    )
    await queue.publish(30)
    await queue.consume(prefetch=100)
    await queue.wait_held(35)
    await queue.ack(queue.held[:25])  # the other 10 stay unacknowledged: not part of rate_out
    gauges, counters = await sample_when(
        source, queue.spec(), {"queue.published": 35, "queue.acked": 25}, "30 more in, 25 out"
    )
    # The sample times are chosen rather than slept: 30 published and 25 acknowledged in 10 s.
    after = Observation(
        taken_at=start + timedelta(seconds=10),
        replicas=1,
        metrics=gauges,
        counters=counters,
        counter_rates=source.rates,
    )
    assert derive_rates(after, before) == {
        "queue.rate_in": 3.0,
        "queue.rate_out": 2.5,
        "queue.rate_redelivered": 0.0,
    }


async def test_a_missing_queue_vhost_or_login_is_one_config_error_naming_it(
    queue: Queue, source: RabbitMQSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = queue.server.management_url
    with pytest.raises(MetricConfigError) as error:
        await source.sample(queue.spec(queue="no-such-queue"))
    assert str(error.value) == f"queue 'no-such-queue' not found on {where}"
    with pytest.raises(MetricConfigError, match="'no-such-queue'"):
        await source.validate(queue.spec(queue="no-such-queue"))

    url = queue.server.url.rstrip("/") + "/no-such-vhost"
    with pytest.raises(MetricConfigError) as error:
        await source.sample(queue.spec(url=url))
    assert str(error.value) == f"vhost 'no-such-vhost' not found on {where}"

    monkeypatch.setenv("RABBIT_PASSWORD", "wrong")
    with pytest.raises(MetricConfigError) as error:
        await source.sample(queue.spec(password_env="RABBIT_PASSWORD"))
    assert str(error.value).startswith(f"{where}: user 'guest' refused (Login failed;")

    await source.validate(queue.spec())


async def test_a_user_of_its_own_reads_its_vhost_with_the_password_from_the_environment(
    queue: Queue, source: RabbitMQSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A monitoring user with its password in the worker's environment reads a queue in its own
    vhost; without the monitoring tag, or without a permission on the vhost, it is refused,
    and the message says what the user needs."""
    server = queue.server
    vhost, user = f"v-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}"
    server.ctl("add_vhost", vhost)
    server.ctl("add_user", user, "s3cret")
    server.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")  # the test's own
    try:
        connection = await aio_pika.connect(server.url.rstrip("/") + f"/{vhost}")
        channel = await connection.channel()
        await channel.declare_queue("jobs", durable=True)
        await connection.close()
        host = server.url.split("@", 1)[-1]
        spec = queue.spec(url=f"amqp://{user}@{host}{vhost}", queue="jobs", password_env="MQ_PW")

        with pytest.raises(MetricConfigError) as error:
            await source.sample(spec)
        assert (
            str(error.value) == "queue.password_env: MQ_PW is not set in the worker's environment"
        )

        monkeypatch.setenv("MQ_PW", "s3cret")
        with pytest.raises(MetricConfigError, match=f"user '{user}' refused .*monitoring tag"):
            await source.sample(spec)  # no tag: no management API

        server.ctl("set_user_tags", user, "monitoring")
        server.ctl("set_permissions", "-p", vhost, user, "", "", ".*")
        gauges, _ = await sample_when(source, spec, {"queue.consumers": 0}, "the user reads")
        assert gauges["queue.backlog"] == 0
        assert "s3cret" not in spec.model_dump_json()
    finally:
        server.ctl("delete_user", user)
        server.ctl("delete_vhost", vhost)


async def test_an_unreachable_broker_is_unavailable(source: RabbitMQSource) -> None:
    port = free_port()  # nothing listens there
    spec = ServicePlan(
        name="lost",
        backend="compose",
        queue=RabbitMQQueueSpec(
            url="amqp://127.0.0.1:5672/", queue="jobs", management_url=f"http://127.0.0.1:{port}"
        ),
    )
    with pytest.raises(MetricUnavailable) as error:
        await source.sample(spec)
    assert str(error.value) == f"http://127.0.0.1:{port}: cannot connect (connection refused)"


async def test_services_on_one_broker_share_one_client(
    queue: Queue, source: RabbitMQSource
) -> None:
    channel = await queue.connection.channel()
    other = f"invoices-{uuid.uuid4().hex[:8]}"
    await channel.declare_queue(other, durable=True)
    try:
        await sample_when(source, queue.spec(), {"queue.consumers": 0}, "figures")
        await sample_when(source, queue.spec(queue=other), {"queue.consumers": 0}, "figures")
        assert len(source.clients) == 1
    finally:
        await channel.queue_delete(other)


async def test_metrics_filter_keeps_named_gauges_and_needed_counters(
    queue: Queue, source: RabbitMQSource
) -> None:
    sample = await sample_when(source, queue.spec(), {"queue.backlog": 0}, "figures")
    gauges, counters = wanted(source, ["queue.backlog", "queue.rate_out"], *sample)
    assert gauges == {"queue.backlog": 0}
    assert counters == {"queue.acked": 0}
