"""`python -m starter --stop` when no worker serves the loop: it used to wait for the loop's
result with no deadline. Now it gives up after --timeout with one line saying why, and the
cancel request stays for the next worker to carry out."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml
from helpers import REPO
from temporalio.client import WorkflowExecutionStatus

from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.spec import load_config


async def test_stop_with_no_worker_gives_up_after_the_timeout_in_one_line(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"docktor-nobody-{tag}"  # no worker ever polls it
    document = {
        "project": f"nobody-{tag}",
        "temporal": {"address": temporal_dev.address, "task_queue": queue},
        "services": [{"name": "consumer", "backend": "processes", "command": ["sleep", "60"]}],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    client = await connect(config)
    await LoopClient(client, config).start(config.services[0])
    handle = client.get_workflow_handle(config.workflow_id("consumer"))
    try:
        began = time.monotonic()
        stopped = subprocess.run(
            [sys.executable, "-m", "starter", "--stop", "--service", "consumer"]
            + ["--config", str(path), "--timeout", "2"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - began
        assert stopped.returncode == 1, stopped.stderr
        lines = stopped.stderr.strip().splitlines()
        assert len(lines) == 1, stopped.stderr
        assert "has not stopped within 2s" in lines[0] and queue in lines[0]
        assert took < 30
        # Still running, with the cancel requested: a worker that comes stops it.
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
    finally:
        await handle.terminate("test over")
