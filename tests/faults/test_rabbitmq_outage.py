"""rabbitmq-server goes down for several iterations and comes back on the same ports and
database (its durable queue and persistent messages with it). The source says so as
MetricUnavailable, a retry-worthy failure, and reads again through the same pooled client; the
loop records holds that say why and never scales down on the missing figures, then reads the
backlog again without a restart of anything."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
import yaml
from helpers import (
    IDLE_COMMAND,
    assert_gapless,
    async_wait_for,
    replica_pids,
    require_rabbitmq_server,
    serving_loops,
)

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedRabbitMQ, EmbeddedTemporal, start_rabbitmq
from docktor.plan import ServicePlan
from docktor.sources import MetricUnavailable
from docktor.sources.rabbitmq import RabbitMQQueueSpec, RabbitMQSource
from docktor.spec import load_config
from docktor.values import Decision

BACKLOG = 50  # between the rules' thresholds: with data, the loop holds
QUEUE = "jobs"


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[EmbeddedRabbitMQ]]:
    """The brokers a test starts (the first, then its restarts), all stopped at the end."""
    require_rabbitmq_server()
    started = [start_rabbitmq(tmp_path / "rabbitmq")]
    try:
        yield started
    finally:
        for broker in started:
            broker.stop()


def restart(brokers: list[EmbeddedRabbitMQ], tmp_path: Path) -> EmbeddedRabbitMQ:
    first = brokers[0]
    broker = start_rabbitmq(
        tmp_path / "rabbitmq", port=first.port, management_port=first.management_port
    )
    brokers.append(broker)
    return broker


async def queue_with_backlog(url: str, messages: int) -> None:
    """A durable queue holding `messages` persistent messages that nobody consumes: a backlog
    that stays put, across a broker restart too."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(QUEUE, durable=True)
        for index in range(messages):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    f"job {index}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=QUEUE,
            )
    finally:
        await connection.close()


async def test_source_is_unavailable_while_the_broker_is_down_and_reads_again_after(
    tmp_path: Path, brokers: list[EmbeddedRabbitMQ]
) -> None:
    broker = brokers[0]
    await queue_with_backlog(broker.url, BACKLOG)
    source = RabbitMQSource()
    queue = RabbitMQQueueSpec(url=broker.url, queue=QUEUE, management_url=broker.management_url)
    spec = ServicePlan(name="consumer", backend="compose", queue=queue)

    async def backlog() -> bool:
        try:
            gauges, _ = await source.sample(spec)
        except MetricUnavailable:  # figures not refreshed yet after a start
            return False
        return gauges["queue.backlog"] == BACKLOG

    try:
        await async_wait_for(backlog, 20, "the backlog")
        client = next(iter(source.clients.values()))

        broker.stop()
        for _ in range(2):  # the pooled connection the broker closed, then a refused new one
            with pytest.raises(MetricUnavailable) as error:
                await source.sample(spec)
            assert str(error.value) == (
                f"{broker.management_url}: cannot connect (connection refused)"
            )

        restart(brokers, tmp_path)
        await async_wait_for(backlog, 30, "the same backlog after the restart")
        assert list(source.clients.values()) == [client]  # reconnected: nothing restarted
    finally:
        await source.close()


async def test_broker_down_records_holds_never_scales_down_and_recovers(
    tmp_path: Path, brokers: list[EmbeddedRabbitMQ], temporal_dev: EmbeddedTemporal
) -> None:
    broker = brokers[0]
    tag = uuid.uuid4().hex[:6]
    document = {
        "project": f"rabbit-outage-{tag}",
        "state_dir": str(tmp_path / "state"),
        "journal": str(tmp_path / "decisions.jsonl"),
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-rabbit-{tag}"},
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": IDLE_COMMAND,
                "min_replicas": 1,
                "max_replicas": 4,
                "check_interval": "1s",
                "stop_grace_period": "1s",
                "cooldown": {"up": 0, "down": 0},
                "rules": {
                    "scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 100}],
                    # Holds on missing data are the point: without the backlog, a rule that
                    # scaled down on "not above" would take replicas away here.
                    "scale_down_when": [{"metric": "queue.backlog", "op": "<", "value": 10}],
                },
                "queue": {
                    "kind": "rabbitmq",
                    "url": broker.url,
                    "queue": QUEUE,
                    "management_url": broker.management_url,
                },
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    project = config.project or ""
    await queue_with_backlog(broker.url, BACKLOG)
    try:
        async with serving_loops(config) as client:

            async def decisions() -> list[Decision]:
                return await LoopClient(client, config).decisions("consumer", tail=1000)

            async def observed_backlog_since(moment: datetime) -> bool:
                return any(
                    d.observations.get("queue.backlog") == BACKLOG
                    for d in await decisions()
                    if d.timestamp > moment
                )

            await LoopClient(client, config).start(config.services[0])
            await LoopClient(client, config).scale_to("consumer", 2)
            scaled_at = datetime.now(UTC)
            await async_wait_for(
                lambda: observed_backlog_since(scaled_at), 30, "a backlog read at 2"
            )

            broker.stop()

            def outage(made: list[Decision]) -> list[Decision]:
                # The decisions after the last backlog read: by content, not by clock, since
                # an iteration may start while the blocking stop() runs.
                last_read = max(
                    d.sequence for d in made if d.observations.get("queue.backlog") == BACKLOG
                )
                return [d for d in made if d.sequence > last_read]

            async def held_a_while() -> bool:
                return len([d for d in outage(await decisions()) if d.action == "hold"]) >= 3

            await async_wait_for(held_a_while, 60, "holds while the broker is down")
            during = outage(await decisions())

            restart(brokers, tmp_path)
            up_at = datetime.now(UTC)
            await async_wait_for(lambda: observed_backlog_since(up_at), 60, "the backlog again")
            await LoopClient(client, config).stop("consumer", timeout=30)
            handle = client.get_workflow_handle(config.workflow_id("consumer"))
            made = await handle.query("decisions", 1000, result_type=list[Decision])
            replicas_at_end = len(replica_pids(project, "consumer"))
    finally:
        await ProcessScaler(config.services[0], project=project).stop_all()

    holds = [d for d in during if d.action == "hold"]
    assert holds and during[0].action == "hold"
    for hold in holds:
        assert "no metrics could be observed" in hold.reason and "rabbitmq" in hold.reason, hold
        assert hold.target_replicas == hold.current_replicas == 2
    # Never down on missing data, nor after: the backlog read again holds the count.
    assert not [d for d in made if d.action == "scale_down"]
    assert made[-1].action == "stopped" and made[-1].target_replicas == 2 == replicas_at_end
    assert_gapless([d.sequence for d in made], "decision sequences")
