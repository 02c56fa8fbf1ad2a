"""The NATS source logs in without the secret travelling or printing: against a real nats-server
that wants a user and password, it connects with `user` + `password_env` (read from the
worker's environment), and no error, observation or `config validate` line shows a password."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from helpers import wait_for
from nats.js.api import AckPolicy, ConsumerConfig

from docktor.client.checks import run_checks
from docktor.dev.embedded import LOCALHOST, ManagedProcess, find_binary, free_port, spawn
from docktor.plan import ServicePlan
from docktor.sources import MetricConfigError
from docktor.sources.nats import NatsMetricSource, NatsQueueSpec
from docktor.sources.sampling import Sampler
from docktor.spec import parse_config

pytestmark = pytest.mark.integration

USER = "scaler"
PASSWORD = "s3cret-Pa55word"
VARIABLE = "JOBS_NATS_PASSWORD"


@dataclass
class GuardedNats:
    server: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    def url_with(self, password: str) -> str:
        return f"nats://{USER}:{password}@{LOCALHOST}:{self.port}"


@pytest.fixture(scope="module")
def guarded_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedNats]:
    """nats-server with JetStream that lets in only USER with PASSWORD."""
    folder = tmp_path_factory.mktemp("guarded-nats")
    port = free_port()
    config = folder / "nats.conf"
    config.write_text(
        f'listen: "{LOCALHOST}:{port}"\n'
        f'jetstream {{ store_dir: "{folder / "store"}" }}\n'
        f'authorization {{ user: "{USER}", password: "{PASSWORD}" }}\n'
    )
    server = spawn("nats-server", [find_binary("nats-server"), "-c", str(config)], folder / "log")
    try:
        wait_for(lambda: _accepts(port), 20, "nats-server accepting connections")
        yield GuardedNats(server=server, port=port)
    finally:
        server.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
async def stream(guarded_nats: GuardedNats) -> AsyncIterator[str]:
    """A stream with a durable consumer `workers` and three messages waiting."""
    name = f"JOBS_{uuid.uuid4().hex[:6].upper()}"
    connection = await nats.connect(guarded_nats.url, user=USER, password=PASSWORD)
    js = connection.jetstream()
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    await js.add_consumer(
        name, ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT)
    )
    for index in range(3):
        await js.publish(f"{name.lower()}.new", f"job {index}".encode())
    try:
        yield name
    finally:
        await js.delete_stream(name)
        await connection.close()


def plan(queue: NatsQueueSpec) -> ServicePlan:
    return ServicePlan(name="consumer", backend="compose", queue=queue)


async def test_user_and_password_env_log_in_with_the_workers_variable(
    guarded_nats: GuardedNats, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, PASSWORD)
    queue = NatsQueueSpec(
        url=guarded_nats.url, stream=stream, consumer="workers", user=USER, password_env=VARIABLE
    )
    # What travels in the plan names the variable, never the password.
    assert PASSWORD not in plan(queue).model_dump_json()
    source = NatsMetricSource()
    try:
        gauges, _ = await source.sample(plan(queue))
    finally:
        await source.close()
    assert gauges["queue.backlog"] == 3


async def test_a_wrong_password_is_a_config_error_that_shows_no_password(
    guarded_nats: GuardedNats, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, "wrong-" + PASSWORD)
    by_variable = NatsQueueSpec(
        url=guarded_nats.url, stream=stream, consumer="workers", user=USER, password_env=VARIABLE
    )
    in_url = NatsQueueSpec(
        url=guarded_nats.url_with("wrong-" + PASSWORD), stream=stream, consumer="workers"
    )
    for queue in (by_variable, in_url):
        source = NatsMetricSource()
        try:
            with pytest.raises(MetricConfigError) as error:
                await source.sample(plan(queue))
        finally:
            await source.close()
        message = str(error.value)
        assert PASSWORD not in message
        assert message.startswith(f"nats://{USER}:***@{LOCALHOST}:" if queue is in_url else "nats")
        assert "authorization failed" in message


async def test_a_password_in_the_url_still_works_and_never_prints(
    guarded_nats: GuardedNats, stream: str, tmp_path: Path
) -> None:
    url = guarded_nats.url_with(PASSWORD)
    redacted = f"nats://{USER}:***@{LOCALHOST}:{guarded_nats.port}"
    source = NatsMetricSource()
    try:
        gauges, _ = await source.sample(
            plan(NatsQueueSpec(url=url, stream=stream, consumer="workers"))
        )
        assert gauges["queue.backlog"] == 3

        # A stream that is not there: the error names the server, without the password.
        missing = NatsQueueSpec(url=url, stream="NO_SUCH_STREAM", consumer="workers")
        with pytest.raises(MetricConfigError) as error:
            await source.sample(plan(missing))
        assert str(error.value) == f"stream 'NO_SUCH_STREAM' not found on {redacted}"
    finally:
        await source.close()

    # The observation's errors (the decision's reason, the LLM prompt) say the same.
    sampler = Sampler()
    try:
        observation, _ = await sampler.observe(
            ServicePlan(
                name="consumer",
                backend="processes",
                command=["/bin/true"],
                state_dir=str(tmp_path / "state"),
                min_replicas=0,
                queue=missing,
            ),
            "creds",
        )
    finally:
        await sampler.close()
    assert observation.errors == [f"nats: stream 'NO_SUCH_STREAM' not found on {redacted}"]

    # `docktor config validate` names the server on its line, without the password.
    document = (
        "services:\n"
        "  - name: consumer\n"
        "    backend: processes\n"
        "    command: [python, w.py]\n"
        f"    queue: {{url: '{url}', stream: NO_SUCH_STREAM, consumer: workers}}\n"
    )
    config = parse_config(document, base_dir=tmp_path)
    lines = [result.line() for result in await run_checks(config)]
    nats_line = next(line for line in lines if "NO_SUCH_STREAM" in line)
    assert PASSWORD not in "\n".join(lines)
    assert nats_line.startswith(
        f"FAIL consumer: stream NO_SUCH_STREAM, consumer workers on {redacted}"
    )
