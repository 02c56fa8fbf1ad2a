"""`docktor mcp` driven through the official `mcp` client, as an agent's host drives it: a
subprocess over stdio (what desktop clients launch) or over streamable HTTP, against loops on
the real stack (the session's Temporal dev server and nats-server, an in-process worker with
the real activities, the `processes` backend).

The `consumer` service reads a NATS consumer that nothing drains, so its backlog stays where
the test put it; with an hour between ticks, only the first iteration (up to min_replicas) and
the nudges the test sends make decisions. Every step is therefore deterministic.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import nats
import pytest
import yaml
from helpers import IDLE_COMMAND, async_wait_for, serving_loops, stop_loop_within, wait_for
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Implementation
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import (
    EmbeddedNats,
    EmbeddedTemporal,
    free_port,
    port_in_use,
    start_temporal,
)
from docktor.spec import DocktorConfig, load_config

pytestmark = pytest.mark.integration

BACKLOG = 500
READ_ONLY = {
    "list_services",
    "service_status",
    "explain_decisions",
    "observe_now",
    "what_if",
    "validate_config",
}
CONTROL = {"pause", "resume", "scale_to", "nudge", "approve", "reject"}
TOKEN_ENV = "DOCKTOR_TEST_MCP_TOKEN"


def service(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "backend": "processes",
        "command": IDLE_COMMAND,
        "min_replicas": 1,
        "max_replicas": 4,
        # Only the first iteration and the test's nudges decide anything.
        "check_interval": "1h",
        "stop_grace_period": "1s",
        "cooldown": {"up": "0s", "down": "0s"},
    }
    spec.update(overrides)
    return spec


def queue_service(nats_url: str, stream: str, subject: str) -> dict[str, Any]:
    return service(
        "consumer",
        rules={"scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 100}]},
        queue={
            "kind": "nats",
            "url": nats_url,
            "stream": stream,
            "consumer": "workers",
            "subject": subject,
        },
    )


@dataclass
class Stack:
    config: DocktorConfig
    path: Path
    client: Client
    logs: Path

    def environment(self) -> dict[str, str]:
        # The config names the Temporal to use; an inherited TEMPORAL_ADDRESS would override it.
        environment = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
        environment["DOCKTOR_CONFIG"] = str(self.path)
        return environment

    @asynccontextmanager
    async def stdio(self, *flags: str, client: str = "pytest") -> AsyncIterator[ClientSession]:
        """`docktor mcp --config FILE FLAGS` launched and spoken to as a desktop client does;
        the SDK's client stops the process on the way out."""
        parameters = StdioServerParameters(
            command=sys.executable,
            args=["-m", "docktor", "mcp", "--config", str(self.path), *flags],
            env=self.environment(),
        )
        with (self.logs / f"mcp-{uuid.uuid4().hex[:6]}.log").open("w") as errlog:
            async with (
                stdio_client(parameters, errlog=errlog) as (read, write),
                ClientSession(read, write, client_info=_client(client)) as session,
            ):
                await session.initialize()
                yield session

    @asynccontextmanager
    async def http(
        self, *flags: str, client: str = "pytest", token: str | None = None
    ) -> AsyncIterator[ClientSession]:
        """`docktor mcp --transport http` on a free loopback port, stopped by its pid; with a
        token, the server reads it from $MCP_TOKEN and the client sends it."""
        async with self.http_server(*flags, token=token) as url:
            headers = {"Authorization": f"Bearer {token}"} if token else None
            async with (
                # The SDK's own timeouts: the event stream it keeps open may wait long.
                httpx2.AsyncClient(
                    headers=headers, timeout=httpx2.Timeout(30, read=300)
                ) as http_client,
                streamable_http_client(url, http_client=http_client) as (read, write),
                ClientSession(read, write, client_info=_client(client)) as session,
            ):
                await session.initialize()
                yield session

    @asynccontextmanager
    async def http_server(
        self, *flags: str, token: str | None = None, host: str = "127.0.0.1"
    ) -> AsyncIterator[str]:
        """The HTTP server alone, listening on `host`; yields its /mcp URL (on loopback)."""
        port = free_port()
        environment = self.environment()
        if token is not None:
            environment[TOKEN_ENV] = token
            flags = (*flags, "--token-env", TOKEN_ENV)
        log_path = self.logs / f"mcp-http-{port}.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "docktor", "mcp", "--config", str(self.path)]
            + ["--transport", "http", "--host", host, "--port", str(port), *flags],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: port_in_use(port) or process.poll() is not None, 30, "the HTTP server")
            assert process.poll() is None, log_path.read_text()
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
            log.close()

    async def cli(self, *args: str) -> str:
        """`docktor ARGS`, in a thread: the worker answering it runs on this event loop."""
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "docktor", *args],
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    async def recorded(self, name: str) -> int:
        """How many decisions the loop has recorded (its iteration counter moves before the
        iteration's decision is made, so it would race)."""
        last = (await LoopClient(self.client, self.config).status(name)).last_decision
        return last.sequence if last else 0


def _client(name: str) -> Implementation:
    return Implementation(name=name, version="1.0")


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured output; the call must succeed."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, f"{tool}: {_text(result)}"
    assert result.structured_content is not None
    return result.structured_content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """A tool's error message; the call must fail as a tool error, not a protocol error."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    return _text(result)


def _text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


@asynccontextmanager
async def running_stack(
    tmp_path: Path, temporal_address: str, services: list[dict[str, Any]], start: list[str]
) -> AsyncIterator[Stack]:
    """Write the config, serve its task queue with the real workflow and activities, start the
    named loops; at the end stop every loop and every replica."""
    tag = uuid.uuid4().hex[:8]
    document = {
        "project": f"mcp-{tag}",
        "journal": "decisions.jsonl",
        "temporal": {"address": temporal_address, "task_queue": f"docktor-mcp-{tag}"},
        "services": services,
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    async with serving_loops(config) as client:
        stack = Stack(config, path, client, tmp_path)
        try:
            for name in start:
                await LoopClient(client, config).start(config.service(name))
            yield stack
        finally:
            for name in config.service_names():
                await stop_loop_within(client, config, name)
                await ProcessScaler(config.service(name), project=config.project or "").stop_all()


@pytest.fixture
async def stack(
    tmp_path: Path, temporal_dev: EmbeddedTemporal, nats_server: EmbeddedNats
) -> AsyncIterator[Stack]:
    """`consumer` (a backlog of 500 on its NATS consumer, running) and `idle` (never started)."""
    tag = uuid.uuid4().hex[:8]
    stream, subject = f"MCP_{tag}", f"mcp.{tag}"
    connection = await nats.connect(nats_server.url)
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(name=stream, subjects=[subject])
        await jetstream.add_consumer(stream, durable_name="workers")
        for index in range(BACKLOG):
            await jetstream.publish(subject, f"job {index}".encode())
        services = [queue_service(nats_server.url, stream, subject), service("idle")]
        async with running_stack(tmp_path, temporal_dev.address, services, ["consumer"]) as s:
            # The first iteration brings consumer up to min_replicas and records it.
            async def first() -> bool:
                return (await s.recorded("consumer")) >= 1 and _journal_lines(s) >= 1

            await async_wait_for(first, 30, "consumer's first decision")
            yield s
    finally:
        await connection.close()


def _journal_lines(stack: Stack) -> int:
    path = Path(stack.config.journal_path)
    return len(path.read_text().splitlines()) if path.exists() else 0


# ---- what is offered ------------------------------------------------------------------------


async def test_control_tools_only_with_the_flag(stack: Stack) -> None:
    async with stack.stdio() as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == READ_ONLY
        for tool in tools.values():
            assert tool.description and "\n" not in tool.description
            assert tool.output_schema is not None  # structured output
            assert tool.annotations is not None and tool.annotations.read_only_hint
        assert tools["service_status"].input_schema["required"] == ["service"]
        assert set(tools["explain_decisions"].input_schema["properties"]) == {
            "service",
            "tail",
            "since",
        }
        templates = (await session.list_resource_templates()).resource_templates
        assert {t.uri_template for t in templates} == {
            "docktor://services/{name}/status",
            "docktor://services/{name}/decisions",
        }
        listed = {str(r.uri) for r in (await session.list_resources()).resources}
        assert "docktor://services/consumer/status" in listed
        prompts = (await session.list_prompts()).prompts
        assert [p.name for p in prompts] == ["investigate-scaling"]
        # Not offered is not callable either.
        assert "pause" in await refused(session, "pause", service="consumer", reason="x")

    async with stack.stdio("--allow-control") as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == READ_ONLY | CONTROL
        for name in CONTROL:
            assert "reason" in tools[name].input_schema["required"], name
        assert tools["scale_to"].input_schema["required"] == ["service", "replicas", "reason"]


# ---- reading a running loop -----------------------------------------------------------------


async def test_status_and_decisions_of_a_running_loop(stack: Stack) -> None:
    workflow_id = stack.config.workflow_id("consumer")
    async with stack.stdio() as session:
        listed = await call(session, "list_services")
        by_name = {s["name"]: s for s in listed["services"]}
        assert by_name["consumer"]["status"]["running"] is True
        assert by_name["idle"]["status"]["running"] is False
        assert by_name["idle"]["status"]["problem"] == "not running"
        assert (by_name["consumer"]["min_replicas"], by_name["consumer"]["max_replicas"]) == (1, 4)
        assert by_name["consumer"]["backend"] == "processes"

        # The config's `queue.subject` loads and changes nothing: the agent is told, as a
        # warning, not a problem.
        checked = await call(session, "validate_config")
        assert checked["ok"] is True and checked["problems"] == []
        assert checked["warnings"] == [
            "services[0].queue.subject: ignored (the consumer's own filter decides what it reads)"
        ]

        status = await call(session, "service_status", service="consumer")
        assert status["workflow_id"] == workflow_id and status["running"] is True
        assert (status["replicas"], status["min_replicas"], status["max_replicas"]) == (1, 1, 4)
        assert status["paused"] is False
        assert status["last_decision"]["action"] == "scale_up"
        # The same view as `docktor status --json` and list_services, apart from the ages that
        # tick.
        cli_row = json.loads(await stack.cli("status", "--json"))[0]
        assert set(status) == set(cli_row) == set(by_name["consumer"]["status"])
        for key in ("service", "workflow_id", "replicas", "iteration", "last_decision"):
            assert status[key] == cli_row[key] == by_name["consumer"]["status"][key], key

        explained = await call(session, "explain_decisions", service="consumer", tail=5)
        first = explained["decisions"][0]
        assert (first["action"], first["current_replicas"], first["target_replicas"]) == (
            "scale_up",
            0,
            1,
        )
        assert "below min_replicas" in first["reason"] and first["model"] == "rules"
        recent = await call(session, "explain_decisions", since="1h")
        assert [d["sequence"] for d in recent["decisions"]] == [
            d["sequence"] for d in explained["decisions"]
        ]
        later = await call(session, "explain_decisions", since="2999-01-01T00:00:00Z")
        assert later["decisions"] == []
        assert "since" in await refused(session, "explain_decisions", since="yesterday-ish")

        observed = await call(session, "observe_now", service="consumer")
        assert observed["observation"]["replicas"] == 1
        assert observed["observation"]["metrics"]["queue.backlog"] == BACKLOG
        # Against the loop's previous sample: nothing arrived or was acknowledged since.
        assert observed["rates"] == {"queue.rate_in": 0.0, "queue.rate_out": 0.0}

        resource = await session.read_resource("docktor://services/consumer/status")
        assert json.loads(resource.contents[0].text)["workflow_id"] == workflow_id
        resource = await session.read_resource("docktor://services/consumer/decisions")
        assert json.loads(resource.contents[0].text)[0]["action"] == "scale_up"

        prompt = await session.get_prompt("investigate-scaling", {"service": "consumer"})
        text = prompt.messages[0].content.text
        assert text.index("service_status") < text.index("explain_decisions")
        assert text.index("explain_decisions") < text.index("observe_now")

        # Failures are tool errors with the CLI's words, and the server carries on.
        assert await refused(session, "service_status", service="nosuch") == (
            "Error executing tool service_status: "
            "unknown service 'nosuch'; the config has: consumer, idle"
        )
        idle = await refused(session, "service_status", service="idle")
        assert "no running loop for service 'idle'" in idle
        assert "python -m starter --service idle" in idle
        assert (await call(session, "service_status", service="consumer"))["running"]


# ---- a dry run matches the loop -------------------------------------------------------------


async def test_what_if_is_what_the_loop_then_decides(stack: Stack) -> None:
    async with stack.stdio("--allow-control") as session:
        dry = await call(session, "what_if", service="consumer")
        assert dry["from_loop"] is True
        proposal = dry["proposal"]
        assert (proposal["action"], proposal["current_replicas"], proposal["target_replicas"]) == (
            "scale_up",
            1,
            2,
        )
        before = await stack.recorded("consumer")
        await call(session, "nudge", service="consumer", reason="compare with the dry run")

        async def decided() -> bool:
            return await stack.recorded("consumer") > before

        await async_wait_for(decided, 30, "the nudged decision")
        latest = (await call(session, "explain_decisions", service="consumer", tail=1))[
            "decisions"
        ][0]
        for key in ("action", "current_replicas", "target_replicas", "reason", "matched_rules"):
            assert latest[key] == proposal[key], key
        assert latest["observations"] == proposal["observations"]

        # Given metrics instead of a fresh observation: a quiet queue holds.
        calm = await call(
            session, "what_if", service="consumer", metrics={"queue.backlog": 5}, replicas=2
        )
        assert calm["proposal"]["action"] == "hold"
        assert calm["observation"]["replicas"] == 2

        # The nudge names its sender in the loop's history, as Temporal records signals.
        handle = stack.client.get_workflow_handle(stack.config.workflow_id("consumer"))
        signals = [
            event.workflow_execution_signaled_event_attributes.identity
            async for event in handle.fetch_history_events()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]
        assert signals == ["mcp:pytest"]


async def test_what_if_during_a_hold_is_what_the_loop_then_records(stack: Stack) -> None:
    """An operator's hold is part of the loop's policy state: the dry run keeps the held count
    as the loop does, instead of answering what the policy would do without the hold."""
    async with stack.stdio("--allow-control") as session:
        await call(
            session, "scale_to", service="consumer", replicas=2, reason="hold it", hold="10m"
        )
        dry = await call(session, "what_if", service="consumer")
        assert dry["from_loop"] is True
        proposal = dry["proposal"]
        # The backlog asks for more (scale_up to 3); the hold keeps 2 and says what was wanted.
        assert (proposal["action"], proposal["current_replicas"], proposal["target_replicas"]) == (
            "hold",
            2,
            2,
        ), proposal["reason"]
        assert proposal["reason"].startswith("held by manual scale until ")
        assert "the policy wanted scale_up to 3: queue.backlog 500 > 100" in proposal["reason"]

        before = await stack.recorded("consumer")
        await call(session, "nudge", service="consumer", reason="compare with the dry run")

        async def decided() -> bool:
            return await stack.recorded("consumer") > before

        await async_wait_for(decided, 30, "the nudged decision")
        latest = (await call(session, "explain_decisions", service="consumer", tail=1))[
            "decisions"
        ][0]
        for key in ("action", "current_replicas", "target_replicas", "reason", "matched_rules"):
            assert latest[key] == proposal[key], key
        assert latest["observations"] == proposal["observations"]


# ---- control over HTTP ----------------------------------------------------------------------


async def test_control_over_http_is_validated_and_recorded(stack: Stack) -> None:
    async with stack.http("--allow-control", client="ops-agent") as session:
        refusal = await refused(session, "scale_to", service="consumer", replicas=99, reason="x")
        assert refusal.endswith("scale refused: 99 is outside [1, 4] for consumer")
        blank = await refused(session, "scale_to", service="consumer", replicas=2, reason="  ")
        assert "needs a reason" in blank

        never = await refused(
            session, "scale_to", service="consumer", replicas=2, reason="x", hold="soon"
        )
        assert "hold: must be a duration" in never

        scaled = await call(
            session, "scale_to", service="consumer", replicas=3, reason="load test", hold="10m"
        )
        assert scaled["by"] == "mcp:ops-agent"
        decision = scaled["decision"]
        assert (decision["action"], decision["target_replicas"]) == ("manual", 3)
        assert "by mcp:ops-agent: load test; held by manual scale until" in decision["reason"]
        scaler = ProcessScaler(stack.config.service("consumer"), project=stack.config.project or "")
        assert await scaler.replicas() == 3

        paused = await call(session, "pause", service="consumer", reason="hold for the sale")
        assert paused["status"]["paused"] is True
        # The loop, asked by the CLI, shows the pause with who asked for it.
        row = next(
            line for line in (await stack.cli("status")).splitlines() if line.startswith("consumer")
        )
        assert "yes: hold for the sale (by mcp:ops-agent)" in row
        again = await refused(session, "pause", service="consumer", reason="twice")
        assert again.endswith("pause refused: already paused (hold for the sale)")
        await call(session, "resume", service="consumer", reason="sale over")
        assert (await call(session, "service_status", service="consumer"))["paused"] is False

        nothing = await refused(session, "approve", service="consumer", reason="ok")
        assert "approve refused: no decision of consumer is awaiting approval" in nothing
        idle = await refused(session, "nudge", service="idle", reason="wake up")
        assert "no running loop for service 'idle'" in idle


# ---- the HTTP transport's bearer token ------------------------------------------------------

# Spoken by hand below, so each request's answer (a 401 above all) is seen as it is.
PROTOCOL_VERSION = "2025-06-18"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "raw-client", "version": "1.0"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: \S")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tool_call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }


async def post(
    http: httpx2.AsyncClient, url: str, message: dict[str, Any], headers: dict[str, str]
) -> httpx2.Response:
    return await http.post(
        url,
        json=message,
        headers={"Accept": "application/json, text/event-stream", **headers},
    )


def answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a 200 response (sent as one server-sent event)."""
    assert response.status_code == 200, response.text
    data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1])


async def test_http_with_a_token_answers_nothing_without_it(stack: Stack) -> None:
    token, wrong = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    loops = LoopClient(stack.client, stack.config)
    async with (
        stack.http_server("--allow-control", token=token) as url,
        httpx2.AsyncClient(timeout=30) as http,
    ):
        for headers in (
            {},
            bearer(wrong),
            bearer(token[:-1]),
            bearer(token + "x"),
            {"Authorization": f"Basic {token}"},
            {"Authorization": "Bearer"},
        ):
            response = await post(http, url, INITIALIZE, headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer ")
            assert token not in response.text

        # A session opened with the token: a call in it that lacks the token is refused before
        # any tool runs (the loop is not paused, and no control is on record).
        opened = await post(http, url, INITIALIZE, bearer(token))
        assert answer(opened)["result"]["serverInfo"]["name"] == "docktor"
        session = {
            "Mcp-Session-Id": opened.headers["mcp-session-id"],
            "MCP-Protocol-Version": PROTOCOL_VERSION,
        }
        ready = await post(http, url, INITIALIZED, {**session, **bearer(token)})
        assert ready.status_code == 202, ready.text
        pause = tool_call("pause", service="consumer", reason="without the token")
        for headers in ({}, bearer(wrong)):
            assert (await post(http, url, pause, {**session, **headers})).status_code == 401
        assert (await loops.status("consumer")).paused is False

        # The same call with the token runs.
        done = answer(await post(http, url, pause, {**session, **bearer(token)}))
        assert done["result"]["structuredContent"]["status"]["paused"] is True
        resume = tool_call("resume", service="consumer", reason="with the token")
        answer(await post(http, url, resume, {**session, **bearer(token)}))
        assert (await loops.status("consumer")).paused is False

        # The token does not lift the Host and Origin checks of a loopback server.
        foreign_origin = {**bearer(token), "Origin": "http://evil.example"}
        assert (await post(http, url, INITIALIZE, foreign_origin)).status_code == 403
        foreign_host = {**bearer(token), "Host": "evil.example:80"}
        assert (await post(http, url, INITIALIZE, foreign_host)).status_code == 421

    # The SDK's own client, configured with the token as an agent's host would be.
    async with stack.http(token=token, client="ops-agent") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools == READ_ONLY
        status = await call(client, "service_status", service="consumer")
        assert status["running"] is True

    (first, second) = sorted(stack.logs.glob("mcp-http-*.log"), key=lambda p: p.stat().st_mtime)
    for log in (first, second):
        text = log.read_text()
        assert token not in text and wrong not in text, log
        # One record per line, in the worker's format: uvicorn's lines (the access line of
        # each request with its status) included. Before them, the config's warnings, in the
        # CLI's words.
        for line in text.splitlines():
            assert LOG_LINE.match(line) or line.startswith("warning: services[0]."), line
    text = first.read_text()
    assert text.count('"POST /mcp HTTP/1.1" 401') == 8 and 'HTTP/1.1" 403' in text
    audit = [line for line in text.splitlines() if "docktor.mcp: mcp:raw-client" in line]
    assert [line.split("docktor.mcp: ")[1] for line in audit] == [
        "mcp:raw-client: pause consumer (without the token)",
        "mcp:raw-client: resume consumer (with the token)",
    ]


async def test_http_beyond_loopback_serves_with_a_token(stack: Stack) -> None:
    token = secrets.token_urlsafe(32)
    async with (
        stack.http_server(token=token, host="0.0.0.0") as url,
        httpx2.AsyncClient(timeout=30) as http,
    ):
        assert (await post(http, url, INITIALIZE, {})).status_code == 401
        assert (await post(http, url, INITIALIZE, bearer(token))).status_code == 200


def test_http_beyond_loopback_does_not_start_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump({"project": "mcp-token", "services": [service("idle")]}))
    environment = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}

    def mcp(*flags: str) -> subprocess.CompletedProcess[str]:
        port = str(free_port())
        command = [sys.executable, "-m", "docktor", "mcp", "--config", str(path)]
        return subprocess.run(
            [*command, "--transport", "http", "--port", port, *flags],
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
        )

    for host in ("0.0.0.0", "::", "192.0.2.1", "mcp.example"):
        refused = mcp("--host", host)
        assert refused.returncode == 2
        assert refused.stderr.splitlines() == [
            f"error: docktor mcp: --host {host} is beyond loopback: give a bearer token with "
            "--token-env NAME (an environment variable holding it), or listen on 127.0.0.1"
        ]
        assert refused.stdout == ""
    # Named but not set is no token either, on loopback too.
    for host in ("0.0.0.0", "127.0.0.1"):
        unset = mcp("--host", host, "--token-env", TOKEN_ENV)
        assert unset.returncode == 2
        assert unset.stderr.splitlines() == [
            f"error: docktor mcp: --token-env {TOKEN_ENV}: the variable is not set or is empty"
        ]


# ---- the audit line -------------------------------------------------------------------------


async def test_the_audit_line_is_one_escaped_line_after_validation(stack: Stack) -> None:
    """A control is logged on stderr once it is known to be well formed and before the loop is
    asked, as one line: what the client wrote (its name, the reason) cannot forge another line
    or reach the terminal raw."""
    forged = "sale\nmcp:admin: scale_to consumer 4 (approved)\x1b[2J\u202e"
    async with stack.stdio("--allow-control", client="night\nshift") as session:
        unknown = await refused(
            session, "pause", service="nosuch\nmcp:admin: pause consumer (x)", reason="x"
        )
        assert "unknown service" in unknown
        assert "needs a reason" in await refused(session, "pause", service="consumer", reason=" ")
        # Well formed, so on record; the loop's own validator then refuses the reason.
        assert "one line of text only" in await refused(
            session, "pause", service="consumer", reason=forged
        )
        paused = await call(session, "pause", service="consumer", reason="sale")
        assert paused["by"] == "mcp:night\\nshift"
        await call(session, "resume", service="consumer", reason="x" * 2000)

    (log,) = stack.logs.glob("mcp-*.log")
    text = log.read_text()
    assert "\x1b" not in text and "\u202e" not in text
    assert not any(line.startswith("mcp:admin") for line in text.splitlines()), text
    audit = [line for line in text.splitlines() if "docktor.mcp: mcp:night" in line]
    assert len(audit) == 3, text  # the malformed calls are not on record as asked for
    who = "docktor.mcp: mcp:night\\nshift"
    assert audit[0].endswith(
        f"{who}: pause consumer (sale\\nmcp:admin: scale_to consumer 4 (approved)\\x1b[2J\\u202e)"
    ), audit[0]
    assert audit[1].endswith(f"{who}: pause consumer (sale)"), audit[1]
    assert audit[2].endswith(f"{who}: resume consumer ({'x' * 500}... (2000 characters))")


# ---- who paused is said once -----------------------------------------------------------------


async def test_a_pause_by_mcp_names_its_author_once(stack: Stack) -> None:
    """The loop keeps who paused apart from why (PauseRequest.by), and every view of its status
    (the CLI's columns and JSON, the tools, the resource) says who once."""
    by, reason = "mcp:night-shift", "investigating backlog"
    async with stack.stdio("--allow-control", client="night-shift") as session:
        paused = await call(session, "pause", service="consumer", reason=reason)
        assert paused["by"] == by

        loop = await LoopClient(stack.client, stack.config).status("consumer")
        assert (loop.paused, loop.pause_reason, loop.paused_by) == (True, reason, by)

        resource = await session.read_resource("docktor://services/consumer/status")
        listed = (await call(session, "list_services"))["services"]
        shown = {
            "pause's result": paused["status"],
            "service_status": await call(session, "service_status", service="consumer"),
            "status resource": json.loads(resource.contents[0].text),
            "list_services": next(s["status"] for s in listed if s["name"] == "consumer"),
            "status --json": next(
                row
                for row in json.loads(await stack.cli("status", "--json"))
                if row["service"] == "consumer"
            ),
        }
        for where, view in shown.items():
            assert (view["paused"], view["pause_reason"], view["paused_by"]) == (
                True,
                reason,
                by,
            ), where

        row = next(
            line for line in (await stack.cli("status")).splitlines() if line.startswith("consumer")
        )
        assert f"yes: {reason} (by {by})" in row
        assert row.count(by) == 1, row


# ---- Temporal goes away and comes back -------------------------------------------------------


async def test_the_server_survives_a_temporal_restart(tmp_path: Path) -> None:
    # A Temporal of this test's own: the session's must stay up for the other tests.
    temporal = start_temporal(tmp_path / "temporal")
    try:
        async with running_stack(
            tmp_path, temporal.address, [service("consumer")], ["consumer"]
        ) as stack:
            await async_wait_for(lambda: _has_journal(stack), 30, "the first decision")
            async with stack.stdio() as session:
                before = await call(session, "service_status", service="consumer")
                assert before["running"] is True

                temporal.stop()
                down = await refused(session, "service_status", service="consumer")
                assert f"cannot reach Temporal at {temporal.address}" in down
                listed = await call(session, "list_services")
                unknown = listed["services"][0]["status"]
                assert unknown["running"] is None
                assert f"cannot reach Temporal at {temporal.address}" in unknown["problem"]
                # explain falls back to the decision log, as the CLI does, and says so.
                logged = await call(session, "explain_decisions", service="consumer")
                assert logged["decisions"][0]["action"] == "scale_up"
                assert stack.config.journal_path in " ".join(logged["notes"])

                temporal = start_temporal(
                    tmp_path / "temporal", port=temporal.port, ui_port=temporal.ui_port
                )

                async def answering() -> dict[str, Any] | None:
                    result = await session.call_tool("service_status", {"service": "consumer"})
                    return None if result.is_error else result.structured_content

                after = await async_wait_for(answering, 60, "the loop answering again")
                assert isinstance(after, dict)
                assert after["workflow_id"] == before["workflow_id"]
                assert after["iteration"] >= before["iteration"]
    finally:
        temporal.stop()


async def _has_journal(stack: Stack) -> bool:
    return _journal_lines(stack) >= 1
