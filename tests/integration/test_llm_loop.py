"""The advisor inside the running loop: the model's reason and provenance reach the decisions,
a broken model leaves the rules deciding, and the API key appears nowhere in the exported
workflow history, the memo or the decision log."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from helpers import IDLE_COMMAND, async_wait_for, serving_loops
from openai_stub import OpenAIStub, Reply, running_stub
from temporalio.client import Client

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedTemporal
from docktor.spec import DocktorConfig, load_config
from docktor.values import Decision

API_KEY = "sk-docktor-test-" + uuid.uuid4().hex
MODEL = "gpt-test-mini"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with running_stub() as server:
        server.models = [MODEL]
        yield server


@pytest.fixture
async def loop(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stub: OpenAIStub,
    temporal_dev: EmbeddedTemporal,
) -> AsyncIterator[tuple[DocktorConfig, Client]]:
    # The key lives in the worker's environment only, as in production.
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    tag = uuid.uuid4().hex[:6]
    config_data = {
        "project": f"llm-{tag}",
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-llm-{tag}"},
        "llm": {
            "provider": "openai",
            "base_url": stub.base_url,
            "model": MODEL,
            "timeout_s": 5,
            "max_step": 2,
        },
        "services": [
            {
                "name": "api",
                "backend": "processes",
                "command": IDLE_COMMAND,
                "min_replicas": 1,
                "max_replicas": 3,
                "check_interval": "1h",  # one decision per nudge: the test sets the pace
                "cooldown": {"up": 0, "down": 0},
                "stop_grace_period": 0,
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config_data))
    config = load_config(path)
    try:
        async with serving_loops(config) as client:
            yield config, client
    finally:
        await ProcessScaler(config.services[0], project=config.project or "").stop_all()


async def decisions_reaching(client: Client, config: DocktorConfig, count: int) -> list[Decision]:
    async def enough() -> list[Decision] | None:
        found = await LoopClient(client, config).decisions("api", tail=50)
        return found if len(found) >= count else None

    return await async_wait_for(enough, 30, f"{count} decisions")  # type: ignore[return-value]


async def test_model_advice_provenance_and_no_key_in_history(
    loop: tuple[DocktorConfig, Client], stub: OpenAIStub
) -> None:
    config, client = loop
    stub.script(
        Reply.json({"action": "scale_up", "target_replicas": 2, "reason": "burst expected"}),
        Reply.json({"action": "scale_up", "target_replicas": 9, "reason": "panic"}),
        Reply.http_error(500),
    )
    await LoopClient(client, config).start(config.services[0])
    handle = await LoopClient(client, config).handle("api")

    first = (await decisions_reaching(client, config, 1))[0]
    # The rules wanted 0 -> 1 (below min_replicas); the model's 2 is within bounds and max_step.
    assert (first.action, first.current_replicas, first.target_replicas) == ("scale_up", 0, 2)
    assert "burst expected" in first.reason
    assert first.metadata.provider == "openai" and first.metadata.model == MODEL
    assert first.metadata.llm_used and first.metadata.fallback is None
    assert first.metadata.latency_ms is not None

    await handle.signal("nudge")
    second = (await decisions_reaching(client, config, 2))[1]
    # 9 is outside [1, 3]: the rules' proposal stands and the decision says why.
    assert second.action == "hold" and second.target_replicas == 2
    assert not second.metadata.llm_used and "outside" in (second.metadata.fallback or "")

    await handle.signal("nudge")
    third = (await decisions_reaching(client, config, 3))[2]
    assert third.action == "hold" and "500" in (third.metadata.fallback or "")

    await LoopClient(client, config).stop("api")
    # The key was really used...
    assert any(API_KEY in r.headers.get("authorization", "") for r in stub.chat_requests())
    # ...and is nowhere in what Temporal or the log keep.
    history = await handle.fetch_history()
    # Protobuf text shows payload bytes as text (to_json would show them base64-encoded), so
    # every input, result, memo and search attribute of the run is searched as written.
    exported = "\n".join(str(event) for event in history.events)
    assert "burst expected" in exported  # the search does see payload contents
    assert API_KEY not in exported and API_KEY not in history.to_json()
    description = await handle.describe()
    assert API_KEY not in str(await description.memo())
    assert API_KEY not in Path(config.journal_path).read_text()
