"""The same rules and targets on every queue kind: one config with a service per kind (NATS
JetStream, Redis Streams, RabbitMQ, SQS on moto's server), each queue holding the same backlog
on its own real server, sampled by the kind's source through the worker's Sampler and decided by
the same policy. Each decision must be the same, for the same reason."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx2
import pytest
import redis.asyncio as aioredis
import yaml
from helpers import async_wait_for, burst_service, queue_with_backlog
from sqs_server import REGION, MotoServer, sqs_client

from docktor.dev.embedded import EmbeddedNats, EmbeddedRabbitMQ, EmbeddedRedis
from docktor.plan import ServicePlan
from docktor.policy import decide
from docktor.sources.sampling import Sampler
from docktor.spec import DocktorConfig, load_config
from docktor.values import PolicyState

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("aws_environment")]

BACKLOG = 300
RUNNING = 2


async def rabbitmq_queue_with_backlog(server: EmbeddedRabbitMQ, name: str, count: int) -> None:
    """A durable queue holding `count` ready messages, once the broker's management figures,
    which the source reads, say so (they refresh every second here)."""
    connection = await aio_pika.connect_robust(server.url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)
        for index in range(count):
            await channel.default_exchange.publish(
                aio_pika.Message(str(index).encode()), routing_key=name
            )
    finally:
        await connection.close()

    async def counted() -> bool:
        async with httpx2.AsyncClient(auth=("guest", "guest")) as client:
            reply = await client.get(f"{server.management_url}/api/queues/%2F/{name}")
        return reply.status_code == 200 and reply.json().get("messages_ready") == count

    await async_wait_for(counted, 30, f"the broker counting {count} ready messages")


@pytest.fixture
async def queues(
    nats_server: EmbeddedNats,
    redis_server: EmbeddedRedis,
    rabbitmq_server: EmbeddedRabbitMQ,
    sqs_server: MotoServer,
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    """A `queue:` block per kind, each queue with BACKLOG messages no one has received."""
    tag = uuid.uuid4().hex[:8]
    stream = f"KINDS{tag}"
    await queue_with_backlog(nats_server.url, stream, f"kinds.{tag}", BACKLOG)

    redis = aioredis.Redis.from_url(redis_server.url)
    await redis.xgroup_create(f"kinds-{tag}", "workers", id="0", mkstream=True)
    pipe = redis.pipeline(transaction=False)
    for index in range(BACKLOG):
        pipe.xadd(f"kinds-{tag}", {"job": str(index)})
    await pipe.execute()

    await rabbitmq_queue_with_backlog(rabbitmq_server, f"kinds-{tag}", BACKLOG)

    sqs = sqs_client(sqs_server)
    queue_url = sqs.create_queue(QueueName=f"kinds-{tag}")["QueueUrl"]
    for start in range(0, BACKLOG, 10):
        entries = [{"Id": str(n), "MessageBody": str(n)} for n in range(start, start + 10)]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    try:
        yield {
            "nats": {
                "kind": "nats",
                "url": nats_server.url,
                "stream": stream,
                "consumer": "workers",
            },
            "redis": {
                "kind": "redis",
                "url": redis_server.url,
                "stream": f"kinds-{tag}",
                "group": "workers",
            },
            "rabbitmq": {
                "kind": "rabbitmq",
                "url": rabbitmq_server.url,
                "management_url": rabbitmq_server.management_url,
                "queue": f"kinds-{tag}",
            },
            "sqs": {"kind": "sqs", "queue_url": queue_url, "region": REGION},
        }
    finally:
        await redis.delete(f"kinds-{tag}")
        await redis.aclose()
        sqs.delete_queue(QueueUrl=queue_url)
        sqs.close()


def one_config(tmp_path: Path, queues: dict[str, dict[str, Any]]) -> DocktorConfig:
    """Per kind, burst_service's step rules and a target service; nothing else differs."""
    services = []
    for kind, queue in queues.items():
        step = {**burst_service("processes", queue=queue), "command": ["/bin/true"]}
        target = {key: value for key, value in step.items() if key not in ("rules", "cooldown")}
        target |= {"policy": "target", "target": {"queue.backlog_per_replica": 100}}
        services += [{**step, "name": f"step-{kind}"}, {**target, "name": f"target-{kind}"}]
    path = tmp_path / "docktor.yaml"
    path.write_text(
        yaml.safe_dump(
            {"project": "kinds", "state_dir": str(tmp_path / "state"), "services": services}
        )
    )
    return load_config(path)


async def test_one_config_per_queue_kind_decides_alike(
    tmp_path: Path, queues: dict[str, dict[str, Any]]
) -> None:
    config = one_config(tmp_path, queues)
    sampler = Sampler()
    decided: dict[str, tuple[int, str, list[str]]] = {}
    try:
        for service in config.services:
            plan = ServicePlan.from_spec(service)
            observation, failures = await sampler.observe(plan, "kinds")
            assert failures == [], (service.name, observation.errors)
            # Each kind's own source read the same backlog off its own server.
            assert observation.metrics["queue.backlog"] == BACKLOG, service.name
            assert observation.metrics["queue.ack_pending"] == 0, service.name
            observation = observation.model_copy(update={"replicas": RUNNING})
            proposal = decide(plan, observation, PolicyState(), datetime.now(UTC))
            decided[service.name] = (
                proposal.target_replicas,
                proposal.reason,
                proposal.matched_rules,
            )
    finally:
        await sampler.close()

    for kind in queues:
        assert decided[f"step-{kind}"] == (
            RUNNING + 1,
            f"queue.backlog {BACKLOG} > 100",
            [f"queue.backlog {BACKLOG} > 100"],
        ), kind
        replicas, reason, _ = decided[f"target-{kind}"]
        assert replicas == BACKLOG // 100, (kind, reason)
        assert reason.startswith(f"target: queue.backlog {BACKLOG} ÷ 100 per replica → 3"), reason
