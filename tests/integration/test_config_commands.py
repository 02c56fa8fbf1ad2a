"""`docktor config list-models | set-model | validate` as a user runs them: subprocesses, against
the OpenAI stub server (tests/openai_stub.py) and the session's real nats-server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from openai_stub import OpenAIStub, running_stub

from docktor.dev.embedded import EmbeddedNats, EmbeddedTemporal, free_port
from docktor.spec.edit import edit_llm

pytestmark = pytest.mark.integration

MODEL = "ai/granite-4.0-h-micro"
SECRET = "sk-test-abcdef0123456789-SECRET"


@pytest.fixture(scope="module")
def stub_server() -> Iterator[OpenAIStub]:
    with running_stub() as stub:
        yield stub


@pytest.fixture
def openai_stub(stub_server: OpenAIStub) -> Iterator[OpenAIStub]:
    stub_server.reset()
    yield stub_server
    stub_server.reset()


def docktor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "docktor", "config", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def write_config(
    tmp_path: Path, llm: str, services: str | None = None, temporal: str | None = None
) -> Path:
    services = services or textwrap.dedent(
        """\
        services:
          - name: worker
            backend: processes
            command: [python, worker.py]
        """
    )
    path = tmp_path / "docktor.yaml"
    # `validate` checks the connection to Temporal first: the online tests give it one.
    address = f"temporal: {{address: '{temporal}'}}\n" if temporal else ""
    path.write_text(f"{address}{llm}\n{services}")
    return path


# ---- list-models -----------------------------------------------------------------------------


def test_list_models_marks_the_configured_one(openai_stub: OpenAIStub, tmp_path: Path) -> None:
    config = write_config(tmp_path, f"llm: {{base_url: '{openai_stub.base_url}', model: {MODEL}}}")
    result = docktor("list-models", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"* {MODEL} (configured)", "  ai/smollm2"]
    assert [r.path for r in openai_stub.requests] == ["/v1/models"]


def test_list_models_notes_a_configured_model_that_is_not_offered(
    openai_stub: OpenAIStub, tmp_path: Path
) -> None:
    config = write_config(tmp_path, f"llm: {{base_url: '{openai_stub.base_url}', model: ai/x}}")
    result = docktor("list-models", "--config", str(config))
    assert result.returncode == 0
    assert result.stdout.splitlines() == [f"  {MODEL}", "  ai/smollm2"]
    assert "the configured model ai/x is not offered" in result.stderr


def test_list_models_from_an_unreachable_server_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = write_config(tmp_path, f"llm: {{base_url: '{url}'}}")
    result = docktor("list-models", "--config", str(config))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: cannot reach the LLM server at {url}: connection refused"
    ]


def test_list_models_http_error_fails(openai_stub: OpenAIStub, tmp_path: Path) -> None:
    openai_stub.models_status = 401
    config = write_config(tmp_path, f"llm: {{base_url: '{openai_stub.base_url}'}}")
    result = docktor("list-models", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: LLM server at {openai_stub.base_url} answered HTTP 401 to GET /models"
    ]


def test_list_models_with_openai_sends_the_key_and_never_prints_it(
    openai_stub: OpenAIStub, tmp_path: Path
) -> None:
    llm = f"llm: {{provider: openai, base_url: '{openai_stub.base_url}', model: {MODEL}}}"
    config = write_config(tmp_path, llm)

    missing = docktor("list-models", "--config", str(config))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "error: llm.provider openai needs OPENAI_API_KEY in the environment"
    )

    result = docktor("list-models", "--config", str(config), env={"OPENAI_API_KEY": SECRET})
    assert result.returncode == 0
    assert openai_stub.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in result.stdout + result.stderr


# ---- set-model -------------------------------------------------------------------------------

COMMENTED = """\
# docktor for the shop   (hand-written; keep my comments!)
project: shop            # the compose project

temporal: {address: "127.0.0.1:7233",   namespace: default}
# the model that advises
llm:
    provider: dmr        # Docker Model Runner
    model: ai/smollm2    # small and quick
    timeout_s: 5s
    # max_step: 3   (maybe later)

# ----- services -----
services:
  - name: worker     # the queue consumer
    backend: processes
    command: [python,  worker.py]
    rules:
      scale_up_when:   [{metric: queue.backlog, op: ">", value: 200}]
    cooldown: {up: 30s,   down: 2m}
"""


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines that differ, compared line by line around the llm block (same length)."""
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new), after
    return [o for o, n in zip(old, new, strict=True) if o != n], [
        n for o, n in zip(old, new, strict=True) if o != n
    ]


def test_set_model_changes_only_the_model_line(tmp_path: Path) -> None:
    config = tmp_path / "docktor.yaml"
    config.write_text(COMMENTED)
    result = docktor("set-model", MODEL, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"llm.model: ai/smollm2 -> {MODEL}" in result.stdout
    after = config.read_text()
    old, new = changed_lines(COMMENTED, after)
    assert old == ["    model: ai/smollm2    # small and quick"]
    # ruamel keeps the comment, one space after the (longer) value.
    assert new == [f"    model: {MODEL} # small and quick"]

    again = docktor("set-model", MODEL, "--config", str(config))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert config.read_text() == after


def test_set_model_with_provider_and_url_keeps_every_other_line(tmp_path: Path) -> None:
    config = tmp_path / "docktor.yaml"
    config.write_text(COMMENTED)
    url = "http://llm.internal:8080/v1"
    result = docktor(
        "set-model",
        "gpt-4o-mini",
        "--provider",
        "openai",
        "--base-url",
        url,
        "--config",
        str(config),
    )
    assert result.returncode == 0, result.stderr
    after = config.read_text().splitlines()
    before = COMMENTED.splitlines()
    start = before.index("llm:")
    end = before.index("    # max_step: 3   (maybe later)")
    # Everything outside the llm block's key lines is byte-for-byte the same.
    assert after[:start] == before[:start]
    assert after[-(len(before) - end) :] == before[end:]
    block = after[start : len(after) - (len(before) - end)]
    assert block == [
        "llm:",
        "    provider: openai     # Docker Model Runner",
        "    model: gpt-4o-mini   # small and quick",
        "    timeout_s: 5s",
        f"    base_url: {url}",
    ]


def test_set_model_adds_an_llm_block_where_there_was_none(tmp_path: Path) -> None:
    original = "# rules only so far\nservices:\n  - {name: w, backend: processes, command: [python, w.py]}  # one\n"  # noqa: E501
    config = tmp_path / "docktor.yaml"
    config.write_text(original)
    result = docktor("set-model", MODEL, "--config", str(config))
    assert result.returncode == 0, result.stderr
    after = config.read_text()
    assert after.startswith(original)
    assert after[len(original) :] == f"llm:\n  provider: dmr\n  model: {MODEL}\n"


def test_set_model_refuses_to_touch_an_invalid_file(tmp_path: Path) -> None:
    original = COMMENTED.replace("backend: processes", "backend: kubernetes")
    config = tmp_path / "docktor.yaml"
    config.write_text(original)
    result = docktor("set-model", MODEL, "--config", str(config))
    assert result.returncode == 2
    assert "services[0].backend" in result.stderr
    assert config.read_text() == original
    assert [p.name for p in tmp_path.iterdir()] == ["docktor.yaml"]  # no temporary file left


def test_set_model_missing_file(tmp_path: Path) -> None:
    result = docktor("set-model", MODEL, "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "no such file" in result.stderr


SERVICES = "services: [{name: w, backend: processes, command: [python, w.py]}]\n"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # A flow mapping stays a flow mapping, with its comment; the next comment is untouched.
        (
            "llm: {provider: none}   # rules only\n# services\n" + SERVICES,
            f"llm: {{provider: dmr, model: {MODEL}}} # rules only\n# services\n" + SERVICES,
        ),
        # `llm:` with no value becomes a block.
        ("llm:\n" + SERVICES, f"llm:\n  provider: dmr\n  model: {MODEL}\n" + SERVICES),
        # The last entry, and no newline at the end of the file: none is added.
        (
            SERVICES + "llm:\n  model: ai/smollm2",
            SERVICES + f"llm:\n  model: {MODEL}",
        ),
    ],
)
def test_edit_llm_shapes(before: str, after: str) -> None:
    assert edit_llm(before, MODEL)[0] == after


# ---- validate (online) -----------------------------------------------------------------------


@pytest.fixture
async def stream(nats_server: EmbeddedNats) -> AsyncIterator[str]:
    """A JetStream stream with a durable consumer `workers`; its name is yielded."""
    name = f"JOBS_{uuid.uuid4().hex[:8].upper()}"
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    await js.add_consumer(
        name, ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT)
    )
    yield name
    await js.delete_stream(name)
    await client.close()


def queue_services(url: str, stream: str, consumer: str = "workers") -> str:
    return textwrap.dedent(
        f"""\
        services:
          - name: worker
            backend: processes
            command: [python, worker.py]
            queue: {{url: "{url}", stream: {stream}, consumer: {consumer}}}
        """
    )


def test_validate_online_all_ok(
    openai_stub: OpenAIStub,
    nats_server: EmbeddedNats,
    stream: str,
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
) -> None:
    llm = f"llm: {{base_url: '{openai_stub.base_url}', model: {MODEL}}}"
    services = queue_services(nats_server.url, stream)
    config = write_config(tmp_path, llm, services, temporal=temporal_dev.address)
    result = docktor("validate", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"OK  {config}: project")
    assert lines[1:] == [
        f"OK   temporal: {temporal_dev.address} (plaintext)",
        f"OK   worker: stream {stream}, consumer workers on {nats_server.url}: exist",
        "OK   worker: backend processes: command can run",
        f"OK   llm: dmr {MODEL} at {openai_stub.base_url}: server answers and lists the model",
    ]


def test_validate_online_reports_every_failure(
    openai_stub: OpenAIStub,
    nats_server: EmbeddedNats,
    stream: str,
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
) -> None:
    llm = f"llm: {{base_url: '{openai_stub.base_url}', model: ai/absent}}"
    services = queue_services(nats_server.url, stream, consumer="nobody").replace(
        "[python, worker.py]", "[no-such-program-here]"
    )
    config = write_config(tmp_path, llm, services, temporal=temporal_dev.address)
    result = docktor("validate", "--config", str(config))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OK  ")  # the file itself is fine
    assert lines[1].startswith("OK   temporal: ")
    fails = lines[2:]
    assert len(fails) == 3 and all(line.startswith("FAIL ") for line in fails), fails
    assert "consumer" in fails[0] and "nobody" in fails[0]
    assert "no-such-program-here" in fails[1] and "not found" in fails[1]
    assert f"model 'ai/absent' is not offered by {openai_stub.base_url}" in fails[2]


def test_validate_online_with_servers_gone(tmp_path: Path) -> None:
    nats_url = f"nats://127.0.0.1:{free_port()}"
    llm_url = f"http://127.0.0.1:{free_port()}/v1"
    temporal = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path, f"llm: {{base_url: '{llm_url}'}}", queue_services(nats_url, "S"), temporal
    )
    result = docktor("validate", "--config", str(config))
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 3
    assert fails[0].startswith(f"FAIL temporal: {temporal}") and "cannot reach" in fails[0]
    assert nats_url in fails[1]
    assert fails[2].endswith(f"cannot reach the LLM server at {llm_url}: connection refused")


def test_validate_skips_the_llm_when_provider_is_none(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    config = write_config(tmp_path, "llm: {provider: none}", temporal=temporal_dev.address)
    result = docktor("validate", "--config", str(config))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[1:] == [
        f"OK   temporal: {temporal_dev.address} (plaintext)",
        "OK   worker: backend processes: command can run",
    ]


def test_validate_offline_does_not_go_online(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = write_config(tmp_path, f"llm: {{base_url: '{url}'}}")
    result = docktor("validate", "--offline", "--config", str(config))
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1
