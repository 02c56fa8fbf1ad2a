"""SqsMetricSource against moto's standalone server (the session's sqs_server): every metric
checked against the known number of messages sent, received and deleted, and against what the
server's own GetQueueAttributes reports; the credential chain; what a missing queue, an
endpoint that is down and missing credentials become."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqs_server import REGION, MotoServer, sqs_client

from docktor.dev.embedded import free_port
from docktor.plan import ServicePlan
from docktor.sources import MetricConfigError, MetricUnavailable, source_class
from docktor.sources.sampling import Sampler
from docktor.sources.sqs import ATTRIBUTES, SqsMetricSource, SqsQueueSpec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("aws_environment")]


@dataclass
class Queue:
    """A queue made fresh for each test on the moto server."""

    client: Any
    url: str

    def spec(self, name: str = "consumer", **fields: Any) -> ServicePlan:
        queue = SqsQueueSpec(queue_url=self.url, region=REGION, **fields)
        return ServicePlan(name=name, backend="compose", queue=queue)

    def local_plan(self, state_dir: Path, **fields: Any) -> ServicePlan:
        """A service of the processes backend (no replica runs) for a whole observation."""
        queue = SqsQueueSpec(queue_url=self.url, region=REGION, **fields)
        return ServicePlan(
            name="consumer",
            backend="processes",
            command=["/bin/true"],
            state_dir=str(state_dir),
            min_replicas=0,
            queue=queue,
        )

    def send(self, count: int, delay: int = 0) -> None:
        for index in range(count):
            self.client.send_message(QueueUrl=self.url, MessageBody=str(index), DelaySeconds=delay)

    def receive(self, count: int) -> list[str]:
        """Receive `count` messages as a replica would: in flight until deleted or their
        visibility timeout (an hour here) ends."""
        handles: list[str] = []
        while len(handles) < count:
            reply = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=min(10, count - len(handles)),
                VisibilityTimeout=3600,
            )
            handles += [m["ReceiptHandle"] for m in reply.get("Messages", [])]
        assert len(handles) == count
        return handles

    def server_figures(self) -> dict[str, float]:
        """The server's own numbers, by metric name."""
        reply = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])
        return {metric: float(reply["Attributes"][name]) for metric, name in ATTRIBUTES.items()}


@pytest.fixture
def queue(sqs_server: MotoServer) -> Iterator[Queue]:
    client = sqs_client(sqs_server)
    url = client.create_queue(QueueName=f"jobs-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    yield Queue(client=client, url=url)
    client.delete_queue(QueueUrl=url)
    client.close()


@pytest.fixture
async def source() -> AsyncIterator[SqsMetricSource]:
    metric_source = SqsMetricSource()
    yield metric_source
    await metric_source.close()


def test_the_sqs_kind_is_installed_through_its_entry_point() -> None:
    assert source_class("sqs") is SqsMetricSource


async def test_each_metric_is_the_servers_own_figure(queue: Queue, source: SqsMetricSource) -> None:
    queue.send(7)
    queue.send(2, delay=600)
    queue.receive(3)

    gauges, counters = await source.sample(queue.spec())

    # 9 sent: 2 still delayed, 3 received and not deleted, 4 waiting.
    assert gauges == {"queue.backlog": 4.0, "queue.ack_pending": 3.0, "queue.delayed": 2.0}
    assert gauges == queue.server_figures()
    # SQS keeps no counters: no rate can be derived, and none is pretended.
    assert counters == {}


async def test_deleting_and_releasing_messages_move_the_figures(
    queue: Queue, source: SqsMetricSource
) -> None:
    queue.send(5)
    handles = queue.receive(4)
    queue.client.delete_message(QueueUrl=queue.url, ReceiptHandle=handles[0])
    # A replica that gives a message back (or dies: its visibility timeout ends) makes it
    # visible again.
    queue.client.change_message_visibility(
        QueueUrl=queue.url, ReceiptHandle=handles[1], VisibilityTimeout=0
    )

    gauges, _ = await source.sample(queue.spec())

    assert gauges == {"queue.backlog": 2.0, "queue.ack_pending": 2.0, "queue.delayed": 0.0}
    assert gauges == queue.server_figures()


async def test_an_observation_carries_the_gauges_and_no_rate(queue: Queue, tmp_path: Path) -> None:
    queue.send(3)
    queue.receive(1)
    sampler = Sampler()
    try:
        observation, failures = await sampler.observe(
            queue.local_plan(tmp_path / "state", metrics=["queue.backlog"]), project="p"
        )
    finally:
        await sampler.close()
    assert failures == [] and observation.errors == []
    # The block's `metrics` list keeps what it names, as for the other kinds.
    assert observation.metrics == {"queue.backlog": 2.0}
    assert observation.counters == {} and observation.counter_rates == {}


async def test_one_client_per_endpoint_region_and_profile(
    queue: Queue, sqs_server: MotoServer, source: SqsMetricSource
) -> None:
    for name in ("a", "b", "c"):
        await source.sample(queue.spec(name=name))
    assert len(source.clients) == 1
    key = (sqs_server.endpoint, REGION, None)
    assert set(source.clients) == {key}

    # Another region signs differently: a client of its own (moto keeps queues per region, so
    # this one is not found there).
    other = SqsQueueSpec(queue_url=queue.url, region="eu-west-1")
    with pytest.raises(MetricConfigError):
        await source.sample(ServicePlan(name="d", backend="compose", queue=other))
    assert len(source.clients) == 2

    await source.close()
    assert source.clients == {}


async def test_a_missing_queue_is_a_config_error_naming_it(
    sqs_server: MotoServer, source: SqsMetricSource
) -> None:
    missing = SqsQueueSpec(queue_url=sqs_server.queue_url("no-such-queue"), region=REGION)
    spec = ServicePlan(name="consumer", backend="compose", queue=missing)
    with pytest.raises(MetricConfigError) as caught:
        await source.sample(spec)
    assert str(caught.value) == (
        f"queue 'no-such-queue' not found at {sqs_server.queue_url('no-such-queue')}"
    )
    with pytest.raises(MetricConfigError, match="no-such-queue"):
        await source.validate(spec)


async def test_an_endpoint_that_is_down_is_unavailable_and_worth_a_retry(
    source: SqsMetricSource,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/123456789012/jobs"
    spec = ServicePlan(
        name="consumer", backend="compose", queue=SqsQueueSpec(queue_url=url, region=REGION)
    )
    with pytest.raises(MetricUnavailable) as caught:
        await source.sample(spec)
    assert str(caught.value) == f"{url}: cannot connect (connection refused)"


async def test_without_credentials_the_worker_is_told_where_they_come_from(
    queue: Queue, source: SqsMetricSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(MetricConfigError, match="the worker has no AWS credentials"):
        await source.sample(queue.spec())


async def test_a_profile_of_the_workers_aws_files_signs(
    queue: Queue, source: SqsMetricSource, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[scaler]\naws_access_key_id = profilekey\naws_secret_access_key = profilesecret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    queue.send(2)

    gauges, _ = await source.sample(queue.spec(profile="scaler"))
    assert gauges["queue.backlog"] == 2.0

    with pytest.raises(MetricConfigError, match="no profile 'nobody'"):
        await source.sample(queue.spec(profile="nobody"))


async def test_the_region_comes_from_the_workers_aws_configuration_when_unset(
    queue: Queue, source: SqsMetricSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    unset = ServicePlan(name="c", backend="compose", queue=SqsQueueSpec(queue_url=queue.url))
    with pytest.raises(MetricConfigError, match="queue.region: .* names no region"):
        await source.sample(unset)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    assert (await source.sample(unset))[0]["queue.backlog"] == 0.0
