"""Session-wide real servers: one nats-server, one redis-server, one rabbitmq-server and one
Temporal dev server for the whole run, each on free ports in its own temporary directory and
stopped by pid at the end."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests judge results, not speed: a loaded 2-core CI machine must not fail one on
# hypothesis's per-example deadline.
settings.register_profile("docktor", deadline=None)
settings.load_profile("docktor")

# `import helpers` from any test folder, whether or not tests/ becomes a package later.
sys.path.insert(0, str(Path(__file__).parent))

from docker_engine import (  # noqa: E402
    DockerEngine,
    dockerd_available,
    import_busybox,
    start_dockerd,
)
from helpers import require_rabbitmq_server, require_redis_server  # noqa: E402
from sqs_server import (  # noqa: E402
    AWS_CLEARED,
    AWS_ENVIRONMENT,
    MotoServer,
    require_moto,
    start_moto,
)
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from docktor.dev.embedded import (  # noqa: E402
    EmbeddedNats,
    EmbeddedRabbitMQ,
    EmbeddedRedis,
    EmbeddedTemporal,
    start_nats,
    start_rabbitmq,
    start_redis,
    start_temporal,
)
from docktor.loop.worker import build_worker  # noqa: E402
from tests.workflow.conftest import TASK_QUEUE, ScriptedWorld  # noqa: E402


def no_servers_in_a_fast_run(what: str) -> None:
    """`make test-fast` promises no servers: a test there that asks for one is in the wrong
    folder (tests/integration is where they belong)."""
    if os.environ.get("DOCKTOR_TEST_FAST"):
        pytest.fail(f"{what} asked for in `make test-fast`: move the test to tests/integration")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    no_servers_in_a_fast_run("nats-server")
    server = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """Debian's redis-server on a free port (skipped where it is not installed)."""
    no_servers_in_a_fast_run("redis-server")
    require_redis_server()
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's standalone server as an SQS endpoint on a free port (tests/sqs_server.py)."""
    no_servers_in_a_fast_run("moto_server")
    require_moto()
    server = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRabbitMQ]:
    """Debian's rabbitmq-server with its management plugin on free ports (skipped where it is
    not installed)."""
    no_servers_in_a_fast_run("rabbitmq-server")
    require_rabbitmq_server()
    server = start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The worker's AWS credential chain as the SQS tests need it: placeholder keys in the
    environment, no profile, no files of the developer's, no instance metadata."""
    for name in AWS_CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def temporal_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTemporal]:
    no_servers_in_a_fast_run("the Temporal dev server")
    server = start_temporal(tmp_path_factory.mktemp("temporal"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd for the session. Skips on a laptop without one; fails under CI, where
    `make test` installs Debian's docker.io first."""
    no_servers_in_a_fast_run("dockerd")
    if not dockerd_available():
        if os.environ.get("CI"):
            pytest.fail("no dockerd on this CI machine: scripts/install-test-deps.sh should add it")
        pytest.skip("no Docker engine here (install Debian's docker.io to run these tests)")
    # A short root: unix socket paths inside it must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp"))
    engine = start_dockerd(root)
    try:
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_image(docker_engine: DockerEngine) -> str:
    return import_busybox(docker_engine)


# ---- the scripted world of the loop tests ------------------------------------------------------
# Used by tests/workflow (time-skipping server) and tests/integration/test_loop_controls.py (dev
# server); each of those defines the `env` these fixtures run on.


@pytest.fixture
def world() -> ScriptedWorld:
    return ScriptedWorld()


@pytest.fixture
async def worker(env: WorkflowEnvironment, world: ScriptedWorld) -> AsyncIterator[Worker]:
    world.server_time = env.get_current_time
    async with build_worker(env.client, TASK_QUEUE, world.activities()) as running:
        yield running
