"""The whole loop on real parts: a Temporal dev server, nats-server with JetStream, the real
activities, and consumer.py replicas started and stopped as OS processes. A burst of messages
must scale the consumer up; the quiet after must scale it back down."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
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
from docktor.dev.embedded import EmbeddedNats, EmbeddedTemporal
from docktor.journal import read_decisions
from docktor.spec import DocktorConfig, load_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "nats-multi"
BURST = 1500


def write_config(tmp_path: Path, nats_url: str, temporal_address: str, tag: str) -> Path:
    stream, subject = f"E2E_{tag}", f"e2e.{tag}"
    config = {
        "project": f"e2e-{tag}",
        "temporal": {"address": temporal_address, "task_queue": f"docktor-e2e-{tag}"},
        "services": [
            {
                **burst_service("processes", nats_url, stream, subject),
                "command": [sys.executable, str(EXAMPLE / "consumer.py")],
                "env": {
                    "NATS_URL": nats_url,
                    "JOBS_STREAM": stream,
                    "JOBS_SUBJECT": subject,
                    "JOBS_DURABLE": "workers",
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
    tmp_path: Path, nats_server: EmbeddedNats, temporal_dev: EmbeddedTemporal
) -> AsyncIterator[tuple[DocktorConfig, Client]]:
    tag = uuid.uuid4().hex[:6]
    config = load_config(write_config(tmp_path, nats_server.url, temporal_dev.address, tag))
    service = config.services[0]
    assert service.queue is not None
    connection = await nats.connect(nats_server.url)
    await connection.jetstream().add_stream(
        name=service.queue.stream, subjects=[service.queue.subject]
    )
    try:
        async with serving_loops(config) as client:
            yield config, client
    finally:
        await ProcessScaler(service, project=config.project or "").stop_all()
        await connection.close()


async def test_burst_scales_up_and_quiet_scales_down(
    stack: tuple[DocktorConfig, Client], nats_server: EmbeddedNats
) -> None:
    config, client = stack
    service = config.services[0]
    assert service.queue is not None and service.queue.subject is not None
    scaler = ProcessScaler(service, project=config.project or "")

    first = await LoopClient(client, config).start(service)
    again = await LoopClient(client, config).start(service)
    assert first.started and not again.started  # starting twice is harmless

    # min_replicas brings up the first consumer, which creates the durable consumer.
    await async_wait_for(lambda: _replicas_at_least(scaler, 1), 30, "first replica")

    publisher = await nats.connect(nats_server.url)
    js = publisher.jetstream()
    for index in range(BURST):
        await js.publish(service.queue.subject, f"job {index}".encode())
    await publisher.close()

    await assert_burst_scaled_up_and_down(client, config, service)
    assert await scaler.replicas() == service.min_replicas

    final = await LoopClient(client, config).stop(service.name)
    assert final.last_decision is not None and final.last_decision.action == "stopped"
    journal = read_decisions(config.journal_path)
    assert journal[-1].action == "stopped"
    assert {d.action for d in journal} >= {"scale_up", "scale_down", "stopped"}
    keys = [(d.workflow_id, d.iteration, d.action) for d in journal]
    assert len(keys) == len(set(keys))


async def _replicas_at_least(scaler: ProcessScaler, count: int) -> bool:
    return await scaler.replicas() >= count
