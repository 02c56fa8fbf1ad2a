"""`python -m worker` as users run it: the LLM start-up check, bad configs, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO

import yaml
from helpers import async_wait_for, wait_for

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal, free_port, start_temporal
from docktor.spec import load_config

REPO = Path(__file__).parents[2]


def write_config(tmp_path: Path, temporal: EmbeddedTemporal, llm: dict[str, object]) -> Path:
    config = {
        "project": "startup",
        "temporal": {"address": temporal.address, "task_queue": "docktor-startup"},
        "llm": llm,
        "services": [{"name": "web", "backend": "processes", "command": ["sleep", "60"]}],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_worker(config: Path, output: IO[str] | None = None, **env: str) -> subprocess.Popen[str]:
    """`python -m worker`; its output (stdout and stderr) to a pipe, or to `output` when the
    test lets it run long enough to fill a pipe nobody reads."""
    environment = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    environment.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "--config", str(config)],
        cwd=REPO,
        env=environment,
        stdout=output if output is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def unreachable_llm(**extra: object) -> dict[str, object]:
    return {"provider": "dmr", "base_url": f"http://127.0.0.1:{free_port()}/v1", **extra}


def test_required_llm_that_is_down_refuses_to_start(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    worker = run_worker(write_config(tmp_path, temporal_dev, unreachable_llm(required=True)))
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 2
    assert "llm.required" in output
    assert "Traceback" not in output


def test_openai_without_a_key_is_a_configuration_error(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    worker = run_worker(write_config(tmp_path, temporal_dev, {"provider": "openai"}))
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 2
    assert "OPENAI_API_KEY" in output and "Traceback" not in output


def test_optional_llm_that_is_down_warns_then_serves_and_stops_on_sigterm(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    worker = run_worker(write_config(tmp_path, temporal_dev, unreachable_llm()))
    assert worker.stdout is not None
    lines: list[str] = []

    def serving() -> bool:
        line = worker.stdout.readline()  # type: ignore[union-attr]
        lines.append(line)
        return "worker serving" in line or line == ""

    try:
        wait_for(serving, timeout=60, message="worker start")
        assert any("LLM not available" in line for line in lines), lines
        worker.send_signal(signal.SIGTERM)
        rest, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0
    assert "worker stopped" in rest


def test_invalid_config_exits_2_with_the_field(tmp_path: Path) -> None:
    path = tmp_path / "docktor.yaml"
    path.write_text("services:\n  - name: web\n    max_replicas: 0\n")
    worker = run_worker(path)
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 2
    assert "services[0].max_replicas" in output and "Traceback" not in output


async def test_retried_observe_failures_are_one_line_each_with_the_traceback_at_debug(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    # NATS is down (nothing listens at the queue's URL): every observe attempt fails and is
    # retried. An outage is expected: one line per failure, no traceback, unless asked for.
    nats_url = f"nats://127.0.0.1:{free_port()}"
    document = {
        "project": f"outage-{uuid.uuid4().hex[:6]}",
        "state_dir": str(tmp_path / "state"),
        "journal": str(tmp_path / "decisions.jsonl"),
        "temporal": {"address": temporal_dev.address, "task_queue": "docktor-outage"},
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": ["sleep", "600"],
                "check_interval": "1s",
                "queue": {"kind": "nats", "url": nats_url, "stream": "JOBS", "consumer": "w"},
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    client = await connect(config)

    async def decisions() -> int:
        return len(await LoopClient(client, config).decisions("consumer", tail=50))

    async def serve(level: str, iterations: int) -> str:
        """Run the worker at this log level for a few more decisions; what it logged."""
        log = tmp_path / f"worker-{level}.log"
        with log.open("w") as output:
            worker = run_worker(path, output, DOCKTOR_LOG_LEVEL=level)
            try:
                before = await decisions()

                async def more() -> bool:
                    # Each iteration fails twice before it goes on without the metrics.
                    return await decisions() >= before + iterations

                await async_wait_for(more, 60, f"{iterations} decisions at log level {level}")
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=60) == 0
            finally:
                if worker.poll() is None:
                    worker.kill()
        return log.read_text()

    await LoopClient(client, config).start(config.services[0])
    try:
        info = await serve("INFO", iterations=2)
        failures = [line for line in info.splitlines() if nats_url in line]
        assert len(failures) >= 4, info
        assert "Traceback" not in info
        # One line each: nothing in the log continues a line (as a traceback's lines do).
        assert not [line for line in info.splitlines() if line[:1].isspace()], info
        assert "Traceback" in await serve("DEBUG", iterations=1)
    finally:
        handle = client.get_workflow_handle(config.workflow_id("consumer"))
        await handle.terminate(reason="test teardown")
        await ProcessScaler(config.services[0], project=config.project or "").stop_all()


def test_the_sdk_cores_warnings_join_the_log_without_terminal_colours(tmp_path: Path) -> None:
    """The worker's output written to a file, as a service manager keeps it: the SDK core's own
    warnings (here, polls failing once the server is gone) are log lines like any other."""
    temporal = start_temporal(tmp_path / "temporal")
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = run_worker(write_config(tmp_path, temporal, {"provider": "none"}), log)
    try:
        wait_for(lambda: "worker serving" in log_path.read_text(), 60, "worker start")
        temporal.stop()
        wait_for(lambda: "temporalio.core" in log_path.read_text(), 60, "a core warning")
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
        temporal.stop()
    text = log_path.read_text()
    assert "\x1b[" not in text
    core = [line for line in text.splitlines() if "temporalio.core" in line]
    assert all(" WARNING temporalio.core" in line for line in core), core[:3]
