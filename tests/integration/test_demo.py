"""`docktor demo` for real: the whole stack in a subprocess, with small numbers so a burst, a
scale-up and a scale-down all happen within well under a minute, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import require_redis_server

from docktor import names
from docktor.dev.demo import EXAMPLES as EXAMPLES_RUN
from docktor.dev.demo.stack import resolve_config_path
from docktor.dev.embedded import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
# The URL variable each example's scripts read, by queue kind.
URL_VARIABLES = {"nats": "NATS_URL", "redis": "REDIS_URL"}

# Seconds the demo runs. The producer below bursts at 24-30 s (the last 6 s of a 30 s period):
# the loop (2 s checks) scales up within a check or two, the burst's backlog drains in a few
# seconds at 4 replicas, and with a 4 s down-cooldown the pool shrinks well before the next
# burst (54 s) and the end (55 s), even on a loaded machine.
DURATION = 55
# Startup of both servers and the worker plus an orderly stop take ~20 s here; the rest is slack.
RUN_TIMEOUT = DURATION + 120
PRODUCER_ARGS = "--rate 20 --burst-rate 300 --burst-every 30 --burst-seconds 6"


def fast_config(tmp_path: Path, project: str, example: str = "nats-multi") -> Path:
    """The example's config with the numbers shrunk; the consumer is the example's own."""
    folder = EXAMPLES / example
    data: dict[str, Any] = yaml.safe_load((folder / "docktor.yaml").read_text())
    data["project"] = project
    service = data["services"][0]
    kind = service["queue"]["kind"]
    # Not the default port: the demo overrides the URL anyway, and this keeps a developer's own
    # server alone.
    url = f"{kind}://127.0.0.1:{free_port()}"
    # Rules keep this short run's scale-down visible (the example's 90 s window would not).
    for key in ("policy", "target", "rate", "behavior"):
        service.pop(key, None)
    service.update(
        {
            "command": ["python", str(folder / "consumer.py")],
            "min_replicas": 1,
            "max_replicas": 4,
            "check_interval": "2s",
            "scale_up_by": 2,
            "scale_down_by": 1,
            "stop_grace_period": "3s",
            "cooldown": {"up": "2s", "down": "4s"},
            "rules": {
                "scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 100}],
                "scale_down_when": [
                    {"metric": "queue.backlog", "op": "<", "value": 20},
                    {"metric": "queue.ack_pending", "op": "<", "value": 20},
                ],
            },
        }
    )
    service["queue"]["url"] = url
    service.setdefault("env", {})[URL_VARIABLES[kind]] = url
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def processes_of(tmp_path: Path, project: str) -> list[str]:
    """Every live process that belongs to this test's demo: its command line or working
    directory is under tmp_path (servers, worker, producer) or it carries the test's project in
    its environment (replicas, which run the example's consumer.py from the repo)."""
    found: list[str] = []
    marker = str(tmp_path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "stat").read_text()
            if status[status.rfind(")") + 2 :].startswith("Z"):
                continue  # exited, waiting for its parent to reap it
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if (
            marker in cmdline
            or cwd.startswith(marker)
            or f"DOCKTOR_PROJECT={project}".encode() in environ.split(b"\0")
        ):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


@pytest.mark.parametrize("example", ["nats-multi", "redis-streams"])
def test_demo_scales_up_and_down_then_leaves_nothing_running(tmp_path: Path, example: str) -> None:
    if example == "redis-streams":
        require_redis_server()
    project = f"demotest{uuid.uuid4().hex[:8]}"
    config = fast_config(tmp_path, project, example)
    state = tmp_path / "state"
    command = [sys.executable, "-m", "docktor", "demo", "--config", str(config)]
    command += ["--duration", str(DURATION), "--no-live", "--state-dir", str(state)]
    command += [f"--producer-args={PRODUCER_ARGS}"]
    try:
        result = subprocess.run(
            command,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        leftovers = processes_of(tmp_path, project)
    output = result.stdout + result.stderr
    worker_log = state / "worker.log"
    context = f"\n--- output:\n{output}\n--- worker.log:\n" + (
        worker_log.read_text()[-3000:] if worker_log.exists() else "(none)"
    )

    assert result.returncode == 0, context
    assert "Traceback" not in output, context
    workflow_id = names.workflow_id(project, "consumer")
    assert f"/namespaces/default/workflows/{workflow_id}" in output, context

    lines = (state / "decisions.jsonl").read_text().splitlines()
    decisions = [json.loads(line) for line in lines if line.strip()]
    actions = [d["action"] for d in decisions]
    # The first scale_up (0 -> min_replicas) is the bounds check; one driven by a rule is what
    # shows the burst was seen.
    assert any(
        d["action"] == "scale_up" and d["matched_rules"] and d["target_replicas"] > 1
        for d in decisions
    ), f"no rule-driven scale_up in {actions}{context}"
    assert "scale_down" in actions, f"no scale_down in {actions}{context}"
    assert actions[-1] == "stopped", f"last decision is not stopped: {actions}{context}"
    assert "final stopped: yes" in output, context

    assert leftovers == [], f"still running after the demo: {leftovers}{context}"
    assert not list((state / "consumer").glob("replica-*.pid")), context


def test_demo_with_a_missing_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "docktor", "demo", "--config", str(missing), "--no-live"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {missing}: no such file"


def test_demo_names_the_worker_log_when_the_worker_cannot_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = fast_config(tmp_path, f"demotest{uuid.uuid4().hex[:8]}")
    result = subprocess.run(
        [sys.executable, "-m", "docktor", "demo", "--config", str(config), "--no-live"]
        + ["--duration", "30", "--state-dir", str(state)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        # An invalid log level makes the worker's logging setup fail at once.
        env={**os.environ, "DOCKTOR_LOG_LEVEL": "NO-SUCH-LEVEL"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: the worker exited during startup (exit code 1); log: {state / 'worker.log'}"
    ]
    assert "Traceback" not in result.stdout
    assert processes_of(tmp_path, "unused") == []


def test_example_names_a_config_from_examples() -> None:
    assert resolve_config_path(None, "redis-streams") == EXAMPLES / "redis-streams" / "docktor.yaml"
    assert resolve_config_path("mine.yaml", None) == Path("mine.yaml")


def test_example_and_config_together_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "docktor", "demo", "--example", "redis-streams"]
        + ["--config", str(tmp_path / "x.yaml"), "--no-live"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --example and --config: give one or the other"


def test_demo_help_says_the_duration_the_readme_and_makefile_say() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "docktor", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    makefile = (REPO / "Makefile").read_text()
    assert "DURATION ?= 150" in makefile
    assert "(default 150)" in " ".join(result.stdout.split())
    # Every example the demo knows is a choice (each has its folder under examples/).
    assert f"--example {{{','.join(EXAMPLES_RUN)}}}" in result.stdout
    assert all((EXAMPLES / name / "docktor.yaml").is_file() for name in EXAMPLES_RUN)
