"""The whole loop on an SQS queue: a Temporal dev server, moto's standalone server, the real
activities, and the sqs example's consumer.py replicas started and stopped as OS processes. The
same rules as the NATS and Redis loop tests (helpers.burst_service): a burst of messages must
scale the consumer up; the quiet after must scale it back down. A queue that does not exist is
a recorded hold, never a scale-down."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    assert_burst_scaled_up_and_down,
    async_wait_for,
    burst_service,
    serving_loops,
    stop_loop_within,
)
from sqs_server import REGION, MotoServer, sqs_client
from temporalio.client import Client

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedTemporal
from docktor.journal import read_decisions
from docktor.spec import DocktorConfig, load_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("aws_environment")]

EXAMPLE = Path(__file__).parents[2] / "examples" / "sqs"
BURST = 1500


def write_config(tmp_path: Path, queue_url: str, temporal_address: str, tag: str) -> Path:
    queue = {"kind": "sqs", "queue_url": queue_url, "region": REGION}
    config = {
        "project": f"e2e-sqs-{tag}",
        "state_dir": str(tmp_path / "state"),
        "temporal": {"address": temporal_address, "task_queue": f"docktor-e2e-sqs-{tag}"},
        "journal": str(tmp_path / "decisions.jsonl"),
        "services": [
            {
                **burst_service("processes", queue=queue),
                "command": [sys.executable, str(EXAMPLE / "consumer.py")],
                # What a replica needs; no key: the example signs for a local endpoint itself.
                "env": {"QUEUE_URL": queue_url, "AWS_DEFAULT_REGION": REGION, "WORK_MS": "20"},
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def sqs(sqs_server: MotoServer) -> AsyncIterator[Any]:
    client = sqs_client(sqs_server)
    yield client
    client.close()


@pytest.fixture
async def stack(
    tmp_path: Path, sqs_server: MotoServer, sqs: Any, temporal_dev: EmbeddedTemporal
) -> AsyncIterator[tuple[DocktorConfig, Client, str]]:
    tag = uuid.uuid4().hex[:6]
    queue_url = sqs.create_queue(QueueName=f"e2e-{tag}")["QueueUrl"]
    config = load_config(write_config(tmp_path, queue_url, temporal_dev.address, tag))
    service = config.services[0]
    try:
        async with serving_loops(config) as client:
            try:
                yield config, client, queue_url
            finally:
                await stop_loop_within(client, config, service.name)
    finally:
        await ProcessScaler(service, project=config.project or "").stop_all()
        sqs.delete_queue(QueueUrl=queue_url)


def send(sqs: Any, queue_url: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [{"Id": str(n), "MessageBody": str(n)} for n in range(start, start + 10)]
        assert not sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")


async def test_burst_scales_the_example_consumer_up_and_quiet_scales_it_down(
    stack: tuple[DocktorConfig, Client, str], sqs: Any
) -> None:
    config, client, queue_url = stack
    service = config.services[0]
    scaler = ProcessScaler(service, project=config.project or "")

    assert (await LoopClient(client, config).start(service)).started

    async def consumers(count: int) -> bool:
        return await scaler.replicas() >= count

    await async_wait_for(lambda: consumers(1), 30, "first replica")

    send(sqs, queue_url, BURST)

    await assert_burst_scaled_up_and_down(client, config, service)
    assert await scaler.replicas() == service.min_replicas

    # Every message was worked off and deleted.
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"

    decisions = await LoopClient(client, config).decisions(service.name, tail=50)
    # SQS's gauges, and no rate: the queue keeps no counters.
    assert any(d.observations.get("queue.backlog", 0) > 100 for d in decisions)
    assert all("queue.delayed" in d.observations for d in decisions if d.observations)
    assert not any("queue.rate_in" in d.observations for d in decisions)

    final = await LoopClient(client, config).stop(service.name)
    assert final.last_decision is not None and final.last_decision.action == "stopped"
    journal = read_decisions(config.journal_path)
    assert {d.action for d in journal} >= {"scale_up", "scale_down", "stopped"}


async def test_a_missing_queue_is_a_recorded_hold_naming_it(
    tmp_path: Path, sqs_server: MotoServer, temporal_dev: EmbeddedTemporal
) -> None:
    tag = uuid.uuid4().hex[:6]
    missing = sqs_server.queue_url(f"missing-{tag}")
    config = load_config(write_config(tmp_path, missing, temporal_dev.address, tag))
    service = config.services[0].model_copy(update={"min_replicas": 0})
    config.services[0] = service
    async with serving_loops(config) as client:
        try:
            assert (await LoopClient(client, config).start(service)).started

            async def held() -> list[Any]:
                decisions = await LoopClient(client, config).decisions(service.name, tail=10)
                return [d for d in decisions if d.action == "hold" and "not found" in d.reason]

            [first, *_] = await async_wait_for(held, 30, "a hold naming the missing queue")
            assert f"queue 'missing-{tag}' not found at {missing}" in first.reason
            decisions = await LoopClient(client, config).decisions(service.name, tail=50)
            assert not [d for d in decisions if d.action in ("scale_up", "scale_down")]
        finally:
            await stop_loop_within(client, config, service.name)
            await ProcessScaler(service, project=config.project or "").stop_all()
