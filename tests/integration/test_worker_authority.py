"""A worker runs only what its own docktor.yaml says, whatever a workflow input or an update
carries (SECURITY.md). Each case sends, through the real Temporal dev server to a real worker,
what anyone with write access to the namespace could send, and checks that nothing ran and
nothing left the worker:

- a new workflow whose plan runs another program: refused, the program never runs;
- a workflow for a service or project the worker's config does not have: refused;
- an `update_spec` that points the model at another server: refused, the API key stays;
- an `update_spec` that points a Redis queue at another server with the API key's variable
  as its password: refused, nothing connects there.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import async_wait_for, serving_loops, write_idle_config
from openai_stub import OpenAIStub, Reply, running_stub
from temporalio.client import Client, WorkflowHandle

from docktor import names
from docktor.client.loops import LoopClient
from docktor.client.temporal import autoscaler_input
from docktor.dev.embedded import EmbeddedTemporal
from docktor.loop.messages import SpecUpdate
from docktor.plan import LLMPlan, QueueBlock, ServicePlan
from docktor.spec import load_config
from docktor.values import Decision

pytestmark = pytest.mark.integration

API_KEY = "sk-worker-secret-4c1d"


async def decisions(handle: WorkflowHandle) -> list[Decision]:
    return await handle.query(names.DECISIONS, 50, result_type=list[Decision])


async def a_decision(handle: WorkflowHandle, wanted: str, after: int = 0) -> Decision:
    """The first decision after the first `after` whose reason or fallback mentions `wanted`."""

    async def found() -> Decision | None:
        for decision in (await decisions(handle))[after:]:
            if wanted in decision.reason or wanted in (decision.metadata.fallback or ""):
                return decision
        return None

    return await async_wait_for(found, 30, f"a decision mentioning {wanted!r}")  # type: ignore[return-value]


async def start_raw(client: Client, task_queue: str, request: object, tag: str) -> WorkflowHandle:
    """A workflow started as anyone with namespace access could: no docktor client involved."""
    return await client.start_workflow(
        names.WORKFLOW, request, id=f"hostile-{tag}-{uuid.uuid4().hex[:6]}", task_queue=task_queue
    )


async def test_a_workflow_input_that_differs_from_the_workers_config_runs_nothing(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    tag = uuid.uuid4().hex[:6]
    path = write_idle_config(tmp_path, temporal_dev.address, "authority", tag)
    config = load_config(path)
    spec = config.service("consumer")
    pwned = tmp_path / "PWNED"
    ours = autoscaler_input(config, spec, search_attributes=False)
    hostile_plan = ours.service.model_copy(
        update={"command": [sys.executable, "-c", f"open({str(pwned)!r}, 'w')"]}
    )
    queue = config.temporal.task_queue
    async with serving_loops(config, path) as client:
        hostile = await start_raw(
            client, queue, ours.model_copy(update={"service": hostile_plan}), tag
        )
        stranger = await start_raw(
            client,
            queue,
            ours.model_copy(update={"service": hostile_plan.model_copy(update={"name": "x"})}),
            tag,
        )
        elsewhere = await start_raw(client, queue, ours.model_copy(update={"project": "x"}), tag)

        refused = await a_decision(hostile, "refused")
        assert "plan.command" in refused.reason and "nothing run" in refused.reason
        assert refused.action == "hold" and refused.target_replicas == 0
        assert "not in this worker's config" in (await a_decision(stranger, "refused")).reason
        assert "serves project" in (await a_decision(elsewhere, "refused")).reason

        # The worker's own loop, on the same worker, runs: the refusals were about the inputs.
        loops = LoopClient(client, config)
        await loops.start(spec)
        await async_wait_for(
            lambda: _scaled_up(loops), 30, "the configured loop scaling its service to 1"
        )
        for handle in (hostile, stranger, elsewhere):
            assert all(d.action == "hold" for d in await decisions(handle))
            await handle.terminate("test over")
        await loops.stop("consumer")
    assert not pwned.exists()
    # Only the configured loop's replica ever had a pid file.
    pid_files = {p.name for p in (tmp_path / "state").rglob("*.pid")}
    assert pid_files <= {"replica-1.pid"}


async def _scaled_up(loops: LoopClient) -> bool:
    status = await loops.status("consumer")
    return status.replicas == 1


@pytest.fixture
def stubs() -> Iterator[tuple[OpenAIStub, OpenAIStub]]:
    with running_stub() as ours, running_stub() as theirs:
        yield ours, theirs


class Listener:
    """A TCP server that only notes who connects and what they send (a stand-in for an
    attacker's Redis: whatever reaches it has left the worker)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    while chunk := conn.recv(65536):
                        self.received += chunk
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


async def test_an_update_cannot_send_the_key_to_another_server(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    stubs: tuple[OpenAIStub, OpenAIStub],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, theirs = stubs
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    tag = uuid.uuid4().hex[:6]
    path = write_idle_config(tmp_path, temporal_dev.address, "authority", tag)
    text = path.read_text() + (
        f"llm:\n  provider: openai\n  base_url: {ours.base_url}\n  model: ai/granite-4.0-h-micro\n"
    )
    path.write_text(text)
    config = load_config(path)
    spec = config.service("consumer")
    ours.script(*[Reply.json({"action": "hold", "target_replicas": 1, "reason": "ok"})] * 200)
    listener = Listener()
    try:
        async with serving_loops(config, path) as client:
            loops = LoopClient(client, config)
            await loops.start(spec)
            handle = await loops.handle("consumer")
            await async_wait_for(lambda: _asked(ours), 30, "the configured model asked")

            plan = ServicePlan.from_spec(spec)
            elsewhere = LLMPlan.from_spec(config.llm).model_copy(
                update={"base_url": theirs.base_url}
            )
            seen = len(await decisions(handle))
            await handle.execute_update(names.UPDATE_SPEC, SpecUpdate(service=plan, llm=elsewhere))
            fallback = await a_decision(handle, "refused", after=seen)
            assert "llm.base_url" in (fallback.metadata.fallback or "")

            redis = QueueBlock.model_validate(
                {
                    "kind": "redis",
                    "url": f"redis://127.0.0.1:{listener.port}",
                    "stream": "jobs",
                    "group": "workers",
                    "password_env": "OPENAI_API_KEY",
                }
            )
            seen = len(await decisions(handle))
            await handle.execute_update(
                names.UPDATE_SPEC,
                SpecUpdate(service=plan.model_copy(update={"queue": redis}), llm=elsewhere),
            )
            held = await a_decision(handle, "refused", after=seen)
            assert "plan.queue" in held.reason and held.action == "hold"
            await loops.stop("consumer")
    finally:
        listener.close()
    assert theirs.requests == []
    assert listener.connections == 0 and API_KEY.encode() not in listener.received
    # The configured server was asked, with the key: the refusals were about the updates.
    assert all(r.headers.get("authorization") == f"Bearer {API_KEY}" for r in ours.requests)


async def _asked(stub: OpenAIStub) -> bool:
    await asyncio.sleep(0)
    return bool(stub.chat_requests())
