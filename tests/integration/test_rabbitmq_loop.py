"""The whole loop on a RabbitMQ queue: a Temporal dev server, rabbitmq-server, the real
activities, and the rabbitmq example's consumer.py replicas started and stopped as OS processes.
The same rules as the NATS and Redis loop tests (helpers.burst_service): a burst of messages
must scale the consumer from 1 up; the quiet after must scale it back down to 1."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
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
from docktor.dev.embedded import EmbeddedRabbitMQ, EmbeddedTemporal
from docktor.journal import read_decisions
from docktor.sources import queue_block
from docktor.sources.rabbitmq import RabbitMQQueueSpec
from docktor.spec import DocktorConfig, load_config

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "rabbitmq"
BURST = 1500
# As the example's producer and consumer declare it (a declaration that differs is refused).
QUEUE_ARGUMENTS = {"x-max-length": 100_000}


def write_config(tmp_path: Path, rabbit: EmbeddedRabbitMQ, temporal_address: str, tag: str) -> Path:
    name = f"e2e-{tag}"
    queue = {
        "kind": "rabbitmq",
        "url": rabbit.url,
        "queue": name,
        "management_url": rabbit.management_url,
    }
    config = {
        "project": f"e2e-rabbitmq-{tag}",
        "temporal": {"address": temporal_address, "task_queue": f"docktor-e2e-rabbitmq-{tag}"},
        "journal": str(tmp_path / "decisions.jsonl"),
        "services": [
            {
                **burst_service("processes", queue=queue),
                "command": [sys.executable, str(EXAMPLE / "consumer.py")],
                "env": {"RABBITMQ_URL": rabbit.url, "JOBS_QUEUE": name, "WORK_MS": "20"},
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def stack(
    tmp_path: Path, rabbitmq_server: EmbeddedRabbitMQ, temporal_dev: EmbeddedTemporal
) -> AsyncIterator[tuple[DocktorConfig, Client, aio_pika.abc.AbstractChannel]]:
    tag = uuid.uuid4().hex[:6]
    config = load_config(write_config(tmp_path, rabbitmq_server, temporal_dev.address, tag))
    service = config.services[0]
    name = queue_block(service, RabbitMQQueueSpec).queue
    connection = await aio_pika.connect_robust(rabbitmq_server.url)
    channel = await connection.channel(publisher_confirms=True)
    # The queue exists before the loop's first look (the consumer would declare it too).
    await channel.declare_queue(name, durable=True, arguments=QUEUE_ARGUMENTS)
    try:
        async with serving_loops(config) as client:
            yield config, client, channel
    finally:
        await ProcessScaler(service, project=config.project or "").stop_all()
        await channel.queue_delete(name)
        await connection.close()


async def test_burst_scales_the_example_consumer_up_and_quiet_scales_it_down(
    stack: tuple[DocktorConfig, Client, aio_pika.abc.AbstractChannel],
    rabbitmq_server: EmbeddedRabbitMQ,
) -> None:
    config, client, channel = stack
    service = config.services[0]
    name = queue_block(service, RabbitMQQueueSpec).queue
    scaler = ProcessScaler(service, project=config.project or "")

    assert (await LoopClient(client, config).start(service)).started

    async def consumers(count: int) -> bool:
        return await scaler.replicas() >= count

    await async_wait_for(lambda: consumers(1), 30, "first replica")

    for index in range(BURST):
        await channel.default_exchange.publish(
            aio_pika.Message(f"job {index}".encode()), routing_key=name
        )

    await assert_burst_scaled_up_and_down(client, config, service)
    assert await scaler.replicas() == service.min_replicas == 1

    # Every message was worked off and acknowledged, as the broker itself says.
    out = rabbitmq_server.ctl(
        "list_queues", "name", "messages_ready", "messages_unacknowledged", "-q"
    )
    assert f"{name}\t0\t0" in out.splitlines(), out

    decisions = await LoopClient(client, config).decisions(service.name, tail=50)
    # The rates came from the broker's counters: messages were seen arriving and acknowledged.
    assert any(d.observations.get("queue.rate_in", 0) > 0 for d in decisions)
    assert any(d.observations.get("queue.rate_out", 0) > 0 for d in decisions)
    assert any(d.observations.get("queue.consumers", 0) >= 3 for d in decisions)

    final = await LoopClient(client, config).stop(service.name)
    assert final.last_decision is not None and final.last_decision.action == "stopped"
    journal = read_decisions(config.journal_path)
    assert {d.action for d in journal} >= {"scale_up", "scale_down", "stopped"}
