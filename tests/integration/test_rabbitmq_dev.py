"""`docktor dev` and `docktor demo --example rabbitmq` with a RabbitMQ queue: dev starts a
rabbitmq-server (and its management API) where a service's queue is local and Ctrl-C stops it;
the demo runs the rabbitmq example end to end (a burst scales the consumer up, the quiet after
scales it down) and leaves nothing running."""

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
from helpers import require_rabbitmq_server

from docktor.dev.demo import EXAMPLES
from docktor.dev.embedded import free_port, port_in_use
from tests.integration.test_demo import DURATION, PRODUCER_ARGS, RUN_TIMEOUT, processes_of
from tests.integration.test_dev_command import running_dev, write_config

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rabbitmq"


def test_dev_starts_rabbitmq_for_a_local_rabbitmq_queue(tmp_path: Path) -> None:
    require_rabbitmq_server()
    temporal_port, amqp_port, management_port = free_port(), free_port(), free_port()
    queue = {
        "kind": "rabbitmq",
        "url": f"amqp://127.0.0.1:{amqp_port}/",
        "queue": "jobs",
        "management_url": f"http://127.0.0.1:{management_port}",
    }
    config = write_config(tmp_path, temporal_port, 0, queue)
    extra = ("--state-dir", str(tmp_path / "state"), "--temporal-ui-port", str(free_port()))
    with running_dev(config, *extra) as (process, text):
        assert f"RabbitMQ  amqp://guest@127.0.0.1:{amqp_port}/" in text, text
        assert f"management http://127.0.0.1:{management_port}" in text, text
        assert "nats" not in text.lower()
        assert port_in_use(amqp_port) and port_in_use(management_port)
    assert process.returncode == 0
    assert not port_in_use(amqp_port) and not port_in_use(management_port)
    assert processes_of(tmp_path, "unused") == []  # broker and its epmd gone


def fast_config(tmp_path: Path, project: str) -> Path:
    """The example's config with test_demo's small numbers: rules that scale up on a burst and
    down soon after, 1..4 replicas, 2 s checks; the consumer is the example's own."""
    data: dict[str, Any] = yaml.safe_load((EXAMPLE / "docktor.yaml").read_text())
    data["project"] = project
    service = data["services"][0]
    for key in ("policy", "target", "rate", "behavior"):
        service.pop(key, None)
    service.update(
        {
            "command": ["python", str(EXAMPLE / "consumer.py")],
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
    # Not the default ports: the demo overrides them anyway, and this keeps a developer's own
    # broker alone.
    service["queue"]["url"] = f"amqp://127.0.0.1:{free_port()}/"
    service["queue"]["management_url"] = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_rabbitmq_example_is_a_demo_example() -> None:
    assert "rabbitmq" in EXAMPLES


def test_demo_of_the_rabbitmq_example_scales_up_and_down_then_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    require_rabbitmq_server()
    project = f"demotest{uuid.uuid4().hex[:8]}"
    config = fast_config(tmp_path, project)
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
    assert "RabbitMQ  amqp://" in output, context

    lines = (state / "decisions.jsonl").read_text().splitlines()
    decisions = [json.loads(line) for line in lines if line.strip()]
    actions = [d["action"] for d in decisions]
    assert any(
        d["action"] == "scale_up" and d["matched_rules"] and d["target_replicas"] > 1
        for d in decisions
    ), f"no rule-driven scale_up in {actions}{context}"
    assert "scale_down" in actions, f"no scale_down in {actions}{context}"
    assert actions[-1] == "stopped", f"last decision is not stopped: {actions}{context}"
    # The rates came from the broker's counters.
    assert any(d["observations"].get("queue.rate_in", 0) > 0 for d in decisions), context
    assert leftovers == [], f"still running after the demo: {leftovers}{context}"
