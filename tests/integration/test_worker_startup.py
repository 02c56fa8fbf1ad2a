"""`python -m worker` as users run it: the LLM start-up check, bad configs, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import wait_for

from docktor.embedded import EmbeddedTemporal, free_port

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


def run_worker(config: Path, **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    environment.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "--config", str(config)],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
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
